//! Restore: verify a backup, then load it into the target in one transaction.

use std::cmp::Ordering;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{Catalogs, Confirm, Services};
use crate::airflow::catalog::major_version;
use crate::airflow::fernet::{FernetMode, FernetPlan};
use crate::airflow::versions::compare_versions;
use crate::db::import::{self, RestoreReport};
use crate::db::{
    PgConnector, airflow_version, backend_pid, lock_holders, sqlstate, terminate_backend,
};
use crate::error::{Error, Result};
use crate::failpoint;
use crate::model::RestoreStrategy;
use crate::progress::Progress;
use crate::store::BackupStore;
use crate::store::manifest::{self, Manifest};
use crate::store::verify::verify_backup;

pub struct RestoreOptions<'a> {
    /// The backup; `None` for the latest.
    pub backup_id: Option<String>,
    /// Empty the restorable tables first, in the same transaction.
    pub clean: bool,
    /// Resolve and verify the backup and check the target, change nothing.
    pub dry_run: bool,
    pub variable_strategy: RestoreStrategy,
    pub connection_strategy: RestoreStrategy,
    /// Re-encrypt Fernet secrets for the target's key, or copy the ciphertext as it is.
    pub fernet: FernetPlan,
    pub catalogs: Catalogs,
    /// Asked before a clean restore deletes rows, once the backup is verified.
    pub confirm: Option<Confirm<'a>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreSummary {
    pub backup_id: String,
    pub target: String,
    pub airflow_version: String,
    pub dry_run: bool,
    pub seconds: f64,
    /// A dry run's plan for Fernet ciphertext (a restore's report carries its own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fernet: Option<FernetMode>,
    /// What the transaction did; `None` for a dry run.
    #[serde(flatten)]
    pub report: Option<RestoreReport>,
    /// The backup restored (or that would be).
    #[serde(skip)]
    pub manifest: Manifest,
}

/// A backup checked and a target connected and checked: everything before the transaction.
struct Prepared {
    manifest: Manifest,
    conn: sqlx::PgConnection,
    /// The server process of `conn`, ended if the run is interrupted mid-transaction.
    backend_pid: i32,
}

/// Restores the backup into the target. The store's shared lock is held from before the
/// backup is verified until the transaction ends, so `prune` cannot remove it meanwhile.
pub async fn restore(
    options: &RestoreOptions<'_>,
    services: &Services,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<RestoreSummary> {
    let started = Instant::now();
    let store = services.store()?;
    let db = services.target()?;
    let (manifest, report) = super::with_store_lock(store.as_ref(), false, "restore", async {
        failpoint::reach("restore.locked", cancel).await?;
        let mut prepared = prepare(options, store.clone(), db).await?;
        if options.dry_run {
            return Ok((prepared.manifest, None));
        }
        failpoint::reach("restore.verified", cancel).await?;
        if options.clean
            && let Some(confirm) = options.confirm
        {
            confirm(&format!(
                "Delete the restorable rows of {} and restore backup {}?",
                db.describe(),
                prepared.manifest.backup_id
            ))?;
        }
        let result = apply(options, store.clone(), db, &mut prepared, progress, cancel).await;
        progress.clear();
        let report = result?;
        failpoint::reach("restore.committed", cancel).await?;
        Ok((prepared.manifest, Some(report)))
    })
    .await?;
    let dry_run = report.is_none();
    Ok(RestoreSummary {
        backup_id: manifest.backup_id.clone(),
        target: db.describe().to_string(),
        airflow_version: manifest.airflow_version.clone(),
        dry_run,
        seconds: if dry_run {
            0.0
        } else {
            started.elapsed().as_secs_f64()
        },
        fernet: dry_run.then(|| options.fernet.mode()),
        report,
        manifest,
    })
}

/// Resolves the backup, verifies every object (before the database is touched), connects to
/// the target and refuses an older Airflow version there.
async fn prepare(
    options: &RestoreOptions<'_>,
    store: Arc<dyn BackupStore>,
    db: &PgConnector,
) -> Result<Prepared> {
    let manifest = manifest::resolve(store.as_ref(), options.backup_id.as_deref()).await?;
    manifest.validate(&options.catalogs.for_version(&manifest.airflow_version)?)?;
    verify_backup(store.clone(), &manifest).await?;
    let mut conn = db.connect().await?;
    let backend_pid = backend_pid(&mut conn, db.describe()).await?;
    let (target_version, _) = airflow_version(
        &mut conn,
        db.describe(),
        &options.catalogs.versions,
        None,
        None,
    )
    .await?;
    check_versions(options, db.describe(), &target_version, &manifest)?;
    Ok(Prepared {
        manifest,
        conn,
        backend_pid,
    })
}

/// A backup restores into the same major version, and never into an older Airflow.
fn check_versions(
    options: &RestoreOptions<'_>,
    db: &str,
    target_version: &str,
    manifest: &Manifest,
) -> Result<()> {
    if compare_versions(target_version, &manifest.airflow_version) == Ordering::Less
        && !options
            .catalogs
            .versions
            .same_schema(target_version, &manifest.airflow_version)
    {
        return Err(Error::failed(
            "restore",
            db,
            format!(
                "the target runs Airflow {target_version}, older than the backup's {}; restore into the same or a newer version",
                manifest.airflow_version
            ),
        ));
    }
    if major_version(target_version) != major_version(&manifest.airflow_version) {
        return Err(Error::failed(
            "restore",
            db,
            format!(
                "the target runs Airflow {target_version} and the backup is of Airflow {}: a backup restores into the same major version (restore it into an Airflow {} database, then let `airflow db migrate` upgrade that one)",
                manifest.airflow_version, manifest.airflow_version
            ),
        ));
    }
    Ok(())
}

/// The restore transaction. Interrupted, it is abandoned and its server session ended, so
/// that PostgreSQL rolls it back and frees its locks at once; a lock-wait timeout names the
/// sessions that held the tables.
async fn apply(
    options: &RestoreOptions<'_>,
    store: Arc<dyn BackupStore>,
    db: &PgConnector,
    prepared: &mut Prepared,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<RestoreReport> {
    let catalog = options
        .catalogs
        .for_version(&prepared.manifest.airflow_version)?;
    let import_options = import::RestoreOptions {
        clean: options.clean,
        variable_strategy: options.variable_strategy,
        connection_strategy: options.connection_strategy,
        fernet: options.fernet.clone(),
    };
    let result = tokio::select! {
        result = import::restore(
            &mut prepared.conn,
            &catalog,
            &prepared.manifest,
            store.clone(),
            &import_options,
            progress,
        ) => result,
        () = cancel.cancelled() => Err(Error::Interrupted),
    };
    match result {
        Err(Error::Interrupted) => {
            terminate_backend(db, prepared.backend_pid).await;
            Err(Error::Interrupted)
        }
        Err(e) if sqlstate(&e).as_deref() == Some("55P03") => {
            let tables: Vec<String> = catalog.tables.iter().map(|t| t.name.clone()).collect();
            Err(match lock_holders(db, &tables).await {
                Some(holders) => Error::transient(
                    "restore",
                    db.describe(),
                    format!(
                        "{e}; waited MWAA_DR_DB_LOCK_TIMEOUT_SECS={} s for a table lock: {holders}",
                        db.timeouts().lock.as_secs()
                    ),
                ),
                None => e,
            })
        }
        other => other,
    }
}
