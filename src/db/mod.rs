//! PostgreSQL: connections, schema introspection, snapshot export, transactional import, cleanup.

pub mod cleanup;
pub mod export;
pub mod import;
pub mod legacy;
pub mod stream;

use sqlx::{Connection, PgConnection};

use crate::airflow::catalog::quote_ident;
use crate::airflow::versions::VersionTable;
use crate::config::DbUrl;
use crate::error::{Error, Result};

/// Opens one connection; the error names the database without its password.
pub async fn connect(url: &DbUrl) -> Result<PgConnection> {
    PgConnection::connect(url.expose())
        .await
        .map_err(|e| Error::failed("connect", url.redacted(), redact_error(&e.to_string(), url)))
}

/// Driver messages sometimes echo connection details; never let a password through.
fn redact_error(message: &str, url: &DbUrl) -> String {
    url.scrub(message)
}

/// A database error on `resource` (a table, a statement's purpose).
pub fn db_error(operation: &str, resource: &str, err: sqlx::Error) -> Error {
    Error::failed(operation, resource, err)
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
            format!(
                "alembic revision {revision} is not a known Airflow schema head (known: {}); pass --airflow-version to say which version it is",
                versions.known_versions().join(", ")
            ),
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
