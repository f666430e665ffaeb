//! PostgreSQL: connections, schema introspection, snapshot export, transactional import, cleanup.

pub mod cleanup;
pub mod export;
pub mod import;
pub mod legacy;
pub mod load;
pub mod shadow;
pub use crate::store::stream;

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgDatabaseError};
use sqlx::{ConnectOptions, PgConnection};

use crate::airflow::catalog::quote_ident;
use crate::airflow::versions::VersionTable;
use crate::error::{Error, Result};
use crate::model::DbTimeouts;
use crate::model::DbUrl;

/// How mwaa-dr reaches one metadata database: its URL and the bounds on every wait.
#[derive(Debug, Clone)]
pub struct PgConnector {
    url: DbUrl,
    timeouts: DbTimeouts,
}

impl PgConnector {
    pub fn new(url: DbUrl, timeouts: DbTimeouts) -> Self {
        PgConnector { url, timeouts }
    }

    pub fn url(&self) -> &DbUrl {
        &self.url
    }

    pub fn timeouts(&self) -> DbTimeouts {
        self.timeouts
    }

    /// The database as messages name it (password masked).
    pub fn describe(&self) -> &str {
        self.url.redacted()
    }

    /// Opens one connection within the connect timeout. The session carries the statement,
    /// lock and idle-in-transaction timeouts, and names itself `mwaa-dr` so that an operator
    /// (and a lock-wait error) can tell its sessions apart.
    pub async fn connect(&self) -> Result<PgConnection> {
        let db = self.describe();
        let options: PgConnectOptions = self.url.expose().parse().map_err(|e: sqlx::Error| {
            Error::failed("connect", db, redact_error(&e.to_string(), &self.url))
        })?;
        let t = self.timeouts;
        let options = options
            .application_name("mwaa-dr")
            .options([
                ("statement_timeout", millis(t.statement)),
                ("lock_timeout", millis(t.lock)),
                (
                    "idle_in_transaction_session_timeout",
                    millis(t.idle_in_transaction),
                ),
            ])
            // COPY of a large table is slow by nature; it is not worth a warning.
            .log_slow_statements(log::LevelFilter::Debug, Duration::from_secs(10));
        match tokio::time::timeout(t.connect, options.connect()).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(classify("connect", db, e, Some(&self.url))),
            Err(_) => Err(Error::transient(
                "connect",
                db,
                format!(
                    "the server did not complete the connection within {} s (MWAA_DR_DB_CONNECT_TIMEOUT_SECS)",
                    t.connect.as_secs()
                ),
            )),
        }
    }
}

fn millis(d: Duration) -> u128 {
    d.as_millis()
}

/// Opens one connection with the default timeouts.
pub async fn connect(url: &DbUrl) -> Result<PgConnection> {
    PgConnector::new(url.clone(), DbTimeouts::default())
        .connect()
        .await
}

/// Driver messages sometimes echo connection details; never let a password through.
fn redact_error(message: &str, url: &DbUrl) -> String {
    url.scrub(message)
}

/// A database error on `resource` (a table, a statement's purpose), classified as transient
/// or not, with PostgreSQL's SQLSTATE, detail and hint in the message and the driver's
/// error kept as the cause.
pub fn db_error(operation: &str, resource: &str, err: sqlx::Error) -> Error {
    classify(operation, resource, err, None)
}

fn classify(operation: &str, resource: &str, err: sqlx::Error, url: Option<&DbUrl>) -> Error {
    let (message, transient) = match &err {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let mut message = format!("{} (SQLSTATE {code})", db.message());
            if let Some(pg) = db.try_downcast_ref::<PgDatabaseError>() {
                if let Some(detail) = pg.detail() {
                    message.push_str(&format!("; detail: {detail}"));
                }
                if let Some(hint) = pg.hint() {
                    message.push_str(&format!("; hint: {hint}"));
                }
            }
            (message, is_transient_sqlstate(&code))
        }
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed => {
            (err.to_string(), true)
        }
        _ => (err.to_string(), false),
    };
    let message = match url {
        Some(url) => redact_error(&message, url),
        None => message,
    };
    Error::caused(operation, resource, message, transient, err)
}

/// SQLSTATEs worth a retry: connection exceptions (class 08), serialization failures and
/// deadlocks, lock and statement timeouts, a server shutting down or out of connections.
pub fn is_transient_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || matches!(
            code,
            "40001" | "40P01" | "55P03" | "57014" | "57P01" | "57P02" | "57P03" | "53300"
        )
}

/// The SQLSTATE of a database error, when the error came from PostgreSQL.
pub fn sqlstate(err: &Error) -> Option<String> {
    let Error::Failed {
        source: Some(cause),
        ..
    } = err
    else {
        return None;
    };
    match cause.downcast_ref::<sqlx::Error>()? {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// The sessions other than ours that hold a lock on one of `tables`, described for an
/// error message (pid, application, client, state, since when).
pub async fn lock_holders(connector: &PgConnector, tables: &[String]) -> Option<String> {
    let mut conn = connector.connect().await.ok()?;
    let rows: Vec<(String, i32, String, String, String)> = sqlx::query_as(
        "SELECT DISTINCT l.relation::regclass::text, a.pid, coalesce(a.application_name, ''), \
         coalesce(a.client_addr::text, 'local'), coalesce(a.state, '') \
         FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.granted AND l.relation IS NOT NULL AND a.pid <> pg_backend_pid() \
         AND l.relation::regclass::text = ANY($1) ORDER BY 1, 2",
    )
    .bind(tables)
    .fetch_all(&mut conn)
    .await
    .ok()?;
    if rows.is_empty() {
        return None;
    }
    Some(
        rows.iter()
            .map(|(table, pid, app, client, state)| {
                format!("{table} is held by pid {pid} ({app:?} from {client}, {state})")
            })
            .collect::<Vec<_>>()
            .join("; "),
    )
}

/// Ends the server side of a session (its statement and transaction, and so its locks), for
/// a run interrupted while the session was busy: dropping the client connection alone lets
/// the statement run on until the server next writes to the socket.
pub async fn terminate_backend(connector: &PgConnector, pid: i32) {
    let Ok(mut conn) = connector.connect().await else {
        return;
    };
    let _ = sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(&mut conn)
        .await;
}

/// The server process id of a session.
pub async fn backend_pid(conn: &mut PgConnection, db: &str) -> Result<i32> {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| db_error("inspect session", db, e))
}

/// The schema's alembic revision, if the database has Airflow's schema.
pub async fn alembic_revision(conn: &mut PgConnection, db: &str) -> Result<String> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('alembic_version') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| db_error("inspect", db, e))?;
    if !exists {
        return Err(Error::failed(
            "detect Airflow version",
            db,
            "the database has no alembic_version table: it does not hold an Airflow metadata schema (run `airflow db migrate` first)",
        ));
    }
    sqlx::query_scalar::<_, String>("SELECT version_num FROM alembic_version LIMIT 1")
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| db_error("read alembic_version", db, e))?
        .ok_or_else(|| Error::failed("detect Airflow version", db, "alembic_version is empty"))
}

/// The Airflow version of a database: from its alembic revision, or `assumed` when given.
pub async fn airflow_version(
    conn: &mut PgConnection,
    db: &str,
    versions: &VersionTable,
    assumed: Option<&str>,
    stated: Option<&str>,
) -> Result<(String, String)> {
    let revision = alembic_revision(conn, db).await?;
    if let Some(version) = assumed {
        return Ok((version.to_string(), revision));
    }
    match versions.version_of_revision(&revision, stated) {
        Some(v) => Ok((v.to_string(), revision)),
        None => Err(Error::failed(
            "detect Airflow version",
            db,
            versions.unknown_revision(&revision),
        )),
    }
}

/// The columns of `table` in ordinal order; `None` when the table does not exist.
pub async fn table_columns(conn: &mut PgConnection, table: &str) -> Result<Option<Vec<String>>> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(quote_ident(table))
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| db_error("inspect", table, e))?;
    if !exists {
        return Ok(None);
    }
    let cols: Vec<String> = sqlx::query_scalar(
        "SELECT attname::text FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
    )
    .bind(quote_ident(table))
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| db_error("inspect columns", table, e))?;
    Ok(Some(cols))
}

/// Columns of `table` fed by a sequence, with the sequence's name.
pub async fn serial_columns(conn: &mut PgConnection, table: &str) -> Result<Vec<(String, String)>> {
    sqlx::query_as(
        "SELECT attname::text, pg_get_serial_sequence($1, attname) FROM pg_attribute \
         WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped \
         AND pg_get_serial_sequence($1, attname) IS NOT NULL",
    )
    .bind(quote_ident(table))
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| db_error("inspect sequences", table, e))
}

/// A comma-separated, quoted column list.
pub fn column_list(columns: &[String]) -> String {
    columns
        .iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_serialization_deadlock_and_timeouts_are_transient() {
        for code in [
            "08006", "08001", "40001", "40P01", "55P03", "57014", "57P01", "53300",
        ] {
            assert!(is_transient_sqlstate(code), "{code}");
        }
        for code in ["23505", "42P01", "22P02", "42501", ""] {
            assert!(!is_transient_sqlstate(code), "{code}");
        }
    }

    #[test]
    fn a_lost_connection_keeps_its_cause_and_may_be_retried() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let err = db_error("copy", "task_instance", sqlx::Error::Io(io));
        assert!(err.retryable());
        assert!(err.to_string().contains("reset by peer"), "{err}");
        let source = std::error::Error::source(&err).expect("the cause is kept");
        assert!(source.downcast_ref::<sqlx::Error>().is_some());
    }
}
