//! `mwaa-dr cleanup`: empty the restorable tables of a (standby) database in one transaction.

use serde::Serialize;
use sqlx::Connection;

use crate::config::Config;
use crate::db::cleanup::{TableCount, cleanup};
use tokio_util::sync::CancellationToken;

use crate::db::{airflow_version, backend_pid, db_error, terminate_backend};
use crate::error::{Error, Result};
use crate::failpoint;
use crate::output;

#[derive(Serialize)]
struct CleanupDoc<'a> {
    target: &'a str,
    dry_run: bool,
    tables: &'a [TableCount],
}

pub async fn run(config: &Config, cancel: &CancellationToken) -> Result<()> {
    let db = config.target_db("cleanup")?;
    let connector = super::connector(config, db.clone());
    let mut conn = connector.connect().await?;
    let pid = backend_pid(&mut conn, db.redacted()).await?;
    failpoint::reach("cleanup.connected", cancel).await?;
    // The catalog of the database's Airflow version; for a revision mwaa-dr does not know,
    // that of MWAA_VERSION, or the user's DR_TABLE_CATALOG (which serves every version).
    let detected = airflow_version(&mut conn, db.redacted(), &config.versions, None, None).await;
    let version = match (detected, &config.mwaa_version) {
        (Ok((version, _)), _) => version,
        (Err(_), Some(stated)) => stated.clone(),
        (Err(_), None) if config.table_catalog.is_some() => String::new(),
        (Err(e), None) => return Err(e),
    };
    let catalog = config.catalog_for(&version)?;
    if !config.dry_run {
        super::confirm(
            config,
            &format!("Delete the restorable rows of {}?", db.redacted()),
        )?;
    }
    let work = async {
        let mut tx = conn
            .begin()
            .await
            .map_err(|e| db_error("begin", db.redacted(), e))?;
        failpoint::reach_raced("cleanup.begun").await?;
        let counts = cleanup(&mut tx, &catalog, config.dry_run).await?;
        if config.dry_run {
            tx.rollback()
                .await
                .map_err(|e| db_error("rollback", db.redacted(), e))?;
        } else {
            failpoint::reach_raced("cleanup.before_commit").await?;
            tx.commit()
                .await
                .map_err(|e| db_error("commit", db.redacted(), e))?;
        }
        Ok(counts)
    };
    // Interrupted, the transaction is abandoned and its server session ended, so the
    // server rolls it back and frees its locks at once.
    let counts = tokio::select! {
        counts = work => counts?,
        () = cancel.cancelled() => {
            terminate_backend(&connector, pid).await;
            return Err(Error::Interrupted);
        }
    };
    failpoint::reach("cleanup.committed", cancel).await?;
    let doc = CleanupDoc {
        target: db.redacted(),
        dry_run: config.dry_run,
        tables: &counts,
    };
    output::emit(config.output, &doc, || {
        let verb = if config.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        let rows: Vec<Vec<String>> = counts
            .iter()
            .map(|c| vec![c.table.clone(), c.rows.to_string()])
            .collect();
        format!(
            "{} {verb}:\n{}",
            db.redacted(),
            output::table(&["TABLE", "ROWS"], &rows)
        )
    });
    Ok(())
}
