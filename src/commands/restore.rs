//! `mwaa-dr restore`: verify a backup, then load it into the target in one transaction.

use std::cmp::Ordering;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::airflow::catalog::major_version;
use crate::airflow::fernet::{FernetMode, FernetPlan, side_keys};
use crate::airflow::versions::compare_versions;
use crate::cli::RestoreArgs;
use tokio_util::sync::CancellationToken;

use super::open_store;
use crate::config::{Config, Side};
use crate::db::import::{RestoreOptions, RestoreReport, restore};
use crate::db::{
    PgConnector, airflow_version, backend_pid, lock_holders, sqlstate, terminate_backend,
};
use crate::error::{Error, Result};
use crate::failpoint;
use crate::output;
use crate::store::verify::verify_backup;
use crate::store::{BackupStore, manifest};

#[derive(Serialize)]
struct RestoreDoc<'a> {
    backup_id: &'a str,
    target: &'a str,
    airflow_version: &'a str,
    dry_run: bool,
    seconds: f64,
    /// A dry run's plan for Fernet ciphertext (a restore's report carries its own).
    #[serde(skip_serializing_if = "Option::is_none")]
    fernet: Option<FernetMode>,
    #[serde(flatten)]
    report: Option<&'a RestoreReport>,
}

/// Re-encrypt when the source (primary) and target (secondary) keys are both known and differ.
fn fernet_plan(config: &Config) -> Result<FernetPlan> {
    let keys = |side: &Side, variable: &str| side_keys(config.fernet_key(side)?.as_ref(), variable);
    Ok(FernetPlan::new(
        keys(&config.primary, "PRIMARY_FERNET_KEY")?,
        keys(&config.secondary, "SECONDARY_FERNET_KEY")?,
    ))
}

/// A backup checked and a target connected and checked: everything before the transaction.
struct Prepared {
    manifest: manifest::Manifest,
    conn: sqlx::PgConnection,
    /// The server process of `conn`, ended if the run is interrupted mid-transaction.
    backend_pid: i32,
    options: RestoreOptions,
}

/// Resolves the backup, verifies every object (before the database is touched), connects to
/// the target and refuses an older Airflow version there.
async fn prepare(
    config: &Config,
    store: Arc<dyn BackupStore>,
    db: &PgConnector,
    backup_id: Option<&str>,
    clean: bool,
) -> Result<Prepared> {
    let fernet = fernet_plan(config)?;
    let manifest = manifest::resolve(store.as_ref(), backup_id).await?;
    manifest.validate(&config.catalog_for(&manifest.airflow_version)?)?;
    verify_backup(store.clone(), &manifest).await?;
    let mut conn = db.connect().await?;
    let backend_pid = backend_pid(&mut conn, db.describe()).await?;
    let db = db.url();
    let (target_version, _) =
        airflow_version(&mut conn, db.redacted(), &config.versions, None, None).await?;
    if compare_versions(&target_version, &manifest.airflow_version) == Ordering::Less
        && !config
            .versions
            .same_schema(&target_version, &manifest.airflow_version)
    {
        return Err(Error::failed(
            "restore",
            db.redacted(),
            format!(
                "the target runs Airflow {target_version}, older than the backup's {}; restore into the same or a newer version",
                manifest.airflow_version
            ),
        ));
    }
    if major_version(&target_version) != major_version(&manifest.airflow_version) {
        return Err(Error::failed(
            "restore",
            db.redacted(),
            format!(
                "the target runs Airflow {target_version} and the backup is of Airflow {}: a backup restores into the same major version (restore it into an Airflow {} database, then let `airflow db migrate` upgrade that one)",
                manifest.airflow_version, manifest.airflow_version
            ),
        ));
    }
    let options = RestoreOptions {
        clean,
        variable_strategy: config.variable_strategy,
        connection_strategy: config.connection_strategy,
        fernet,
    };
    Ok(Prepared {
        manifest,
        conn,
        backend_pid,
        options,
    })
}

/// The restore transaction. Interrupted, it is abandoned and its server session ended, so
/// that PostgreSQL rolls it back and frees its locks at once; a lock-wait timeout names the
/// sessions that held the tables.
async fn apply(
    config: &Config,
    store: Arc<dyn BackupStore>,
    db: &PgConnector,
    prepared: &mut Prepared,
    progress: &dyn crate::progress::Progress,
    cancel: &CancellationToken,
) -> Result<RestoreReport> {
    let catalog = config.catalog_for(&prepared.manifest.airflow_version)?;
    let result = tokio::select! {
        result = restore(
            &mut prepared.conn,
            &catalog,
            &prepared.manifest,
            store.clone(),
            &prepared.options,
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

/// Restores `backup_id` (default: the latest) into `db`: what `restore` does without its
/// prompt and output, for `failover`. The store's shared lock is held from before the
/// backup is verified until the transaction ends, so `prune` cannot remove it meanwhile.
pub async fn restore_into(
    config: &Config,
    store: Arc<dyn BackupStore>,
    db: &PgConnector,
    backup_id: Option<&str>,
    clean: bool,
    progress: &dyn crate::progress::Progress,
    cancel: &CancellationToken,
) -> Result<(manifest::Manifest, RestoreReport)> {
    super::with_store_lock(store.as_ref(), false, "restore", async {
        failpoint::reach("restore.locked", cancel).await?;
        let mut prepared = prepare(config, store.clone(), db, backup_id, clean).await?;
        failpoint::reach("restore.verified", cancel).await?;
        let report = apply(config, store.clone(), db, &mut prepared, progress, cancel).await?;
        failpoint::reach("restore.committed", cancel).await?;
        Ok((prepared.manifest, report))
    })
    .await
}

/// What the locked part of `restore` produced.
enum Restored {
    DryRun(manifest::Manifest, RestoreOptions),
    Done(manifest::Manifest, RestoreReport),
}

pub async fn run(config: &Config, args: &RestoreArgs, cancel: &CancellationToken) -> Result<()> {
    if let Some(location) = &args.from_legacy {
        return super::restore_legacy::run(config, args, location, cancel).await;
    }
    let location = config.store("restore")?;
    let db = config.target_db("restore")?;
    let started = Instant::now();
    let store: Arc<dyn BackupStore> = Arc::from(open_store(location, config).await?);
    let db = super::connector(config, db);
    let restored = super::with_store_lock(store.as_ref(), false, "restore", async {
        failpoint::reach("restore.locked", cancel).await?;
        let mut prepared = prepare(
            config,
            store.clone(),
            &db,
            args.backup_id.as_deref(),
            args.clean,
        )
        .await?;
        if config.dry_run {
            return Ok(Restored::DryRun(prepared.manifest, prepared.options));
        }
        failpoint::reach("restore.verified", cancel).await?;
        if args.clean {
            super::confirm(
                config,
                &format!(
                    "Delete the restorable rows of {} and restore backup {}?",
                    db.describe(),
                    prepared.manifest.backup_id
                ),
            )?;
        }
        let progress = crate::progress::for_terminal("restore", config.quiet);
        let result = apply(
            config,
            store.clone(),
            &db,
            &mut prepared,
            progress.as_ref(),
            cancel,
        )
        .await;
        progress.clear();
        let report = result?;
        failpoint::reach("restore.committed", cancel).await?;
        Ok(Restored::Done(prepared.manifest, report))
    })
    .await?;
    let (manifest, report) = match restored {
        Restored::Done(manifest, report) => (manifest, report),
        Restored::DryRun(manifest, options) => {
            let doc = RestoreDoc {
                backup_id: &manifest.backup_id,
                target: db.describe(),
                airflow_version: &manifest.airflow_version,
                dry_run: true,
                seconds: 0.0,
                fernet: Some(options.fernet.mode()),
                report: None,
            };
            output::emit(config.output, &doc, || {
                let tables = manifest
                    .tables
                    .iter()
                    .map(|t| format!("  {:<32} {:>10} rows", t.name, t.rows))
                    .collect::<Vec<_>>()
                    .join("\n");
                format!(
                    "dry run: would restore backup {} (Airflow {}) into {}{}; variables {:?}, connections {:?}; {}:\n{tables}",
                    manifest.backup_id,
                    manifest.airflow_version,
                    db.describe(),
                    if args.clean { " after cleaning it" } else { "" },
                    options.variable_strategy,
                    options.connection_strategy,
                    options.fernet.mode().planned()
                )
            });
            return Ok(());
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let doc = RestoreDoc {
        backup_id: &manifest.backup_id,
        target: db.describe(),
        airflow_version: &manifest.airflow_version,
        dry_run: false,
        seconds,
        fernet: None,
        report: Some(&report),
    };
    output::emit(config.output, &doc, || {
        let rows: u64 = report.loaded.iter().map(|t| t.rows).sum();
        let mut text = format!(
            "restored backup {} into {}: {} tables, {rows} rows in {seconds:.1} s; {} DAGs unpaused",
            manifest.backup_id,
            db.describe(),
            report.loaded.len(),
            report.unpaused.len()
        );
        if !report.missing_dags.is_empty() {
            text.push_str(&format!(
                "\nactive in the source but not yet known to the target (unpause them once parsed): {}",
                report.missing_dags.join(", ")
            ));
        }
        text.push('\n');
        text.push_str(&report.fernet.summary());
        if report.fernet == FernetMode::Reencrypted {
            let counts = report
                .rekeyed
                .iter()
                .map(|(column, n)| format!("{column} {n}"))
                .collect::<Vec<_>>()
                .join(", ");
            text.push_str(&format!(": {counts}"));
        }
        if !report.renumbered_jobs.is_empty() {
            text.push_str(&format!(
                "\n{} restored job ids collided with the target's running jobs and were renumbered",
                report.renumbered_jobs.len()
            ));
        }
        text
    });
    Ok(())
}
