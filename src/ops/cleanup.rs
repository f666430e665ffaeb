//! Cleanup: empty the restorable tables of a (standby) database in one transaction.

use serde::Serialize;
use sqlx::Connection;
use tokio_util::sync::CancellationToken;

use super::{Catalogs, Confirm, Services};
use crate::airflow::catalog::Catalog;
use crate::db::cleanup::{TableCount, cleanup as delete_rows};
use crate::db::{airflow_version, backend_pid, db_error, terminate_backend};
use crate::error::{Error, Result};
use crate::failpoint;
use crate::progress::Progress;

pub struct CleanupOptions<'a> {
    pub catalogs: Catalogs,
    /// MWAA_VERSION: the catalog's version when the database's revision is not known.
    pub mwaa_version: Option<String>,
    /// Count, delete nothing (the transaction is rolled back).
    pub dry_run: bool,
    pub confirm: Option<Confirm<'a>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CleanupReport {
    pub target: String,
    pub dry_run: bool,
    pub tables: Vec<TableCount>,
}

pub async fn cleanup(
    options: &CleanupOptions<'_>,
    services: &Services,
    _progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<CleanupReport> {
    let connector = services.target()?;
    let db = connector.describe();
    let mut conn = connector.connect().await?;
    let pid = backend_pid(&mut conn, db).await?;
    failpoint::reach("cleanup.connected", cancel).await?;
    let catalog = catalog_of(options, &mut conn, db).await?;
    if !options.dry_run
        && let Some(confirm) = options.confirm
    {
        confirm(&format!("Delete the restorable rows of {db}?"))?;
    }
    // Interrupted, the transaction is abandoned and its server session ended, so the
    // server rolls it back and frees its locks at once.
    let tables = tokio::select! {
        counts = in_transaction(&mut conn, db, &catalog, options.dry_run) => counts?,
        () = cancel.cancelled() => {
            terminate_backend(connector, pid).await;
            return Err(Error::Interrupted);
        }
    };
    failpoint::reach("cleanup.committed", cancel).await?;
    Ok(CleanupReport {
        target: db.to_string(),
        dry_run: options.dry_run,
        tables,
    })
}

/// The catalog of the database's Airflow version; for a revision mwaa-dr does not know,
/// that of MWAA_VERSION, or the user's DR_TABLE_CATALOG (which serves every version).
async fn catalog_of(
    options: &CleanupOptions<'_>,
    conn: &mut sqlx::PgConnection,
    db: &str,
) -> Result<Catalog> {
    let detected = airflow_version(conn, db, &options.catalogs.versions, None, None).await;
    let version = match (detected, &options.mwaa_version) {
        (Ok((version, _)), _) => version,
        (Err(_), Some(stated)) => stated.clone(),
        (Err(_), None) if options.catalogs.table_catalog.is_some() => String::new(),
        (Err(e), None) => return Err(e),
    };
    options.catalogs.for_version(&version)
}

/// Deletes (or, in a dry run, counts and rolls back) in one transaction.
async fn in_transaction(
    conn: &mut sqlx::PgConnection,
    db: &str,
    catalog: &Catalog,
    dry_run: bool,
) -> Result<Vec<TableCount>> {
    let mut tx = conn.begin().await.map_err(|e| db_error("begin", db, e))?;
    failpoint::reach_raced("cleanup.begun").await?;
    let counts = delete_rows(&mut tx, catalog, dry_run, &Default::default()).await?;
    if dry_run {
        tx.rollback()
            .await
            .map_err(|e| db_error("rollback", db, e))?;
    } else {
        failpoint::reach_raced("cleanup.before_commit").await?;
        tx.commit().await.map_err(|e| db_error("commit", db, e))?;
    }
    Ok(counts)
}
