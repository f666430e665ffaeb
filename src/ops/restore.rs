//! Restore: load a backup into the target, every object checked as it is read, and make it
//! the target's in one short transaction.

use std::cmp::Ordering;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{Catalogs, Confirm, Services};
use crate::airflow::catalog::major_version;
use crate::airflow::fernet::{FernetKeyring, FernetKeys, FernetMode, FernetPlan};
use crate::airflow::versions::compare_versions;
use crate::db::import::{self, RestoreReport};
use crate::db::shadow;
use crate::db::{
    PgConnector, airflow_version, backend_pid, lock_holders, sqlstate, terminate_backend,
};
use crate::error::{Error, Result};
use crate::failpoint;
use crate::model::RestoreStrategy;
use crate::progress::Progress;
use crate::store::BackupStore;
use crate::store::manifest::{self, FernetKeyInfo, FernetKeyKind, Manifest};
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
    /// The Fernet keys known here; the backup's manifest says which one its ciphertext needs.
    pub fernet: FernetKeyring,
    pub catalogs: Catalogs,
    /// Asked before a clean restore deletes rows, once the backup's manifest is checked.
    pub confirm: Option<Confirm<'a>>,
    /// Connections that load the copied tables into shadow tables before the transaction.
    pub jobs: usize,
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
    /// Which key the backup's secrets were read with; `None` for a backup that does not
    /// record its key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fernet_key: Option<FernetKeyUsed>,
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
    fernet: FernetPlan,
    fernet_key: Option<FernetKeyUsed>,
    conn: sqlx::PgConnection,
    /// The server process of `conn`, ended if the run is interrupted mid-transaction.
    backend_pid: i32,
}

/// Restores the backup into the target. The store's shared lock is held from before the
/// backup is read until the transaction ends, so `prune` cannot remove it meanwhile.
pub async fn restore(
    options: &RestoreOptions<'_>,
    services: &Services,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<RestoreSummary> {
    let started = Instant::now();
    let store = services.store()?;
    let db = services.target()?;
    let (manifest, plan, fernet_key, report) =
        super::with_store_lock(store.as_ref(), false, "restore", async {
            failpoint::reach("restore.locked", cancel).await?;
            let mut prepared = prepare(options, services, store.clone(), db, cancel).await?;
            if options.dry_run {
                return Ok((
                    prepared.manifest,
                    prepared.fernet,
                    prepared.fernet_key,
                    None,
                ));
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
            Ok((
                prepared.manifest,
                prepared.fernet,
                prepared.fernet_key,
                Some(report),
            ))
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
        fernet: dry_run.then(|| plan.mode()),
        fernet_key,
        report,
        manifest,
    })
}

/// Resolves the backup and checks its manifest, verifies every object for a dry run, connects
/// to the target and refuses an older Airflow version there. A restore checks the objects as
/// it reads them (`import::restore`): those it loads into shadow tables as they stream, the
/// others whole before its transaction.
async fn prepare(
    options: &RestoreOptions<'_>,
    services: &Services,
    store: Arc<dyn BackupStore>,
    db: &PgConnector,
    cancel: &CancellationToken,
) -> Result<Prepared> {
    let manifest = manifest::resolve(store.as_ref(), options.backup_id.as_deref()).await?;
    manifest.validate(&options.catalogs.for_version(&manifest.airflow_version)?)?;
    if options.dry_run {
        // Reading every object takes long for a large backup; stopped, it leaves nothing.
        tokio::select! {
            verified = verify_backup(store.clone(), &manifest) => verified?,
            () = cancel.cancelled() => return Err(Error::Interrupted),
        };
    }
    let (fernet, fernet_key) = fernet_plan(&options.fernet, services, &manifest).await?;
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
        fernet,
        fernet_key,
        conn,
        backend_pid,
    })
}

/// The key a restore read the backup's secrets with, as its report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct FernetKeyUsed {
    /// What the manifest says the ciphertext is under.
    pub kind: FernetKeyKind,
    pub fingerprint: String,
    /// Where the key came from: `kms:Decrypt`, or the variable that held it.
    pub obtained_from: String,
}

/// The key of the backup's ciphertext, obtained from what the manifest records: the KMS
/// data key unwrapped, else the first known key list holding the recorded fingerprint. No
/// key that matches refuses the restore here, before the target is touched; a backup that
/// records no key restores as backups always did.
async fn fernet_plan(
    ring: &FernetKeyring,
    services: &Services,
    manifest: &Manifest,
) -> Result<(FernetPlan, Option<FernetKeyUsed>)> {
    let Some(info) = &manifest.fernet else {
        return Ok((
            FernetPlan::new(ring.source.clone(), ring.target.clone()),
            None,
        ));
    };
    // A source-key backup restored where no target key is known is copied as it is, as
    // before fingerprints were recorded; the other kinds would leave unreadable secrets.
    if info.kind == FernetKeyKind::Source && ring.target.is_none() {
        return Ok((FernetPlan::new(ring.source.clone(), None), None));
    }
    let (keys, from) = obtain_backup_key(ring, services, info)
        .await
        .map_err(|tried| no_backup_key(manifest, info, &tried))?;
    let Some(target) = ring.target.clone() else {
        return Err(Error::MissingValue {
            variable: "SECONDARY_FERNET_KEY".into(),
            command: "restore".into(),
            purpose: "the target's Fernet key, to re-encrypt the backup's secrets for it (or set AIRFLOW__CORE__FERNET_KEY)".into(),
        });
    };
    Ok((
        FernetPlan::new(Some(keys), Some(target)),
        Some(FernetKeyUsed {
            kind: info.kind,
            fingerprint: info.fingerprint.clone(),
            obtained_from: from,
        }),
    ))
}

/// The key the backup's secrets are under, and where it came from: KMS for a KMS backup,
/// then the keys this side knows, matched by fingerprint. Otherwise what was tried.
async fn obtain_backup_key(
    ring: &FernetKeyring,
    services: &Services,
    info: &FernetKeyInfo,
) -> std::result::Result<(FernetKeys, String), Vec<String>> {
    let mut tried: Vec<String> = Vec::new();
    if info.kind == FernetKeyKind::Kms {
        match unwrap_kms(services, info).await {
            Ok(keys) if keys.has_fingerprint(&info.fingerprint) => {
                return Ok((keys, "kms:Decrypt".into()));
            }
            Ok(_) => tried.push(
                "KMS Decrypt of the backup's wrapped key (it unwrapped a key of another fingerprint)"
                    .into(),
            ),
            Err(e) => tried.push(format!(
                "KMS Decrypt of the backup's wrapped key, which failed: {e}"
            )),
        }
    }
    let candidates = [
        ("DR_BACKUP_FERNET_KEY", &ring.backup_key),
        (
            "PRIMARY_FERNET_KEY (else AIRFLOW__CORE__FERNET_KEY)",
            &ring.source,
        ),
        (
            "SECONDARY_FERNET_KEY (else AIRFLOW__CORE__FERNET_KEY)",
            &ring.target,
        ),
    ];
    for (variable, keys) in candidates {
        let Some(keys) = keys else { continue };
        if keys.has_fingerprint(&info.fingerprint) {
            return Ok((keys.clone(), variable.to_string()));
        }
        tried.push(format!("{variable} (fingerprint {})", keys.fingerprint()));
    }
    Err(tried)
}

/// The refusal of a backup whose key no source here gives, before anything is written.
fn no_backup_key(manifest: &Manifest, info: &FernetKeyInfo, tried: &[String]) -> Error {
    Error::refused(
        "restore",
        &manifest.backup_id,
        format!(
            "its Fernet secrets are under the key of fingerprint {} ({}), and no key available here has it; tried: {}; nothing was restored",
            info.fingerprint,
            kind_name(info),
            if tried.is_empty() {
                "no key is set".to_string()
            } else {
                tried.join("; ")
            },
        ),
        match info.kind {
            FernetKeyKind::Kms => {
                "allow kms:Decrypt on the backup's KMS key in this Region (a replica of the multi-Region key), or set DR_BACKUP_FERNET_KEY"
            }
            FernetKeyKind::BackupKey => {
                "set DR_BACKUP_FERNET_KEY to the key the backup was taken with"
            }
            FernetKeyKind::Source => {
                "set PRIMARY_FERNET_KEY to the source environment's Fernet key"
            }
        },
    )
}

fn kind_name(info: &FernetKeyInfo) -> String {
    match info.kind {
        FernetKeyKind::Source => "the source environment's key".into(),
        FernetKeyKind::BackupKey => "DR_BACKUP_FERNET_KEY".into(),
        FernetKeyKind::Kms => format!(
            "a data key wrapped by KMS key {}",
            info.kms_key_id.as_deref().unwrap_or("(not recorded)")
        ),
    }
}

/// The backup's data key, unwrapped by KMS in this run's Region.
async fn unwrap_kms(services: &Services, info: &FernetKeyInfo) -> Result<FernetKeys> {
    use base64::Engine;
    let (Some(key_id), Some(wrapped)) = (&info.kms_key_id, &info.wrapped_key) else {
        return Err(Error::failed(
            "restore",
            "manifest",
            "a kms backup key without its key id or wrapped key",
        ));
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let wrapped = b64
        .decode(wrapped)
        .map_err(|e| Error::failed("Decrypt", key_id, format!("the wrapped key: {e}")))?;
    let plaintext = services.kms()?.decrypt(key_id, &wrapped).await?;
    let bytes = b64
        .decode(plaintext.expose())
        .map_err(|e| Error::failed("Decrypt", key_id, e))?;
    FernetKeys::from_data_key(&bytes).map_err(|e| Error::failed("Decrypt", key_id, e))
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
        fernet: prepared.fernet.clone(),
        jobs: options.jobs,
    };
    let sessions = import::Sessions::default();
    let result = tokio::select! {
        result = import::restore(
            &mut prepared.conn,
            db,
            &catalog,
            &prepared.manifest,
            store.clone(),
            &import_options,
            progress,
            &sessions,
        ) => result,
        () = cancel.cancelled() => Err(Error::Interrupted),
    };
    match result {
        Err(Error::Interrupted) => {
            terminate_backend(db, prepared.backend_pid).await;
            let loading: Vec<i32> = sessions.lock().map(|p| p.clone()).unwrap_or_default();
            for pid in loading {
                terminate_backend(db, pid).await;
            }
            // The shadow tables of the interrupted load (the next restore would remove them).
            if let Ok(mut conn) = db.connect().await {
                let _ = shadow::drop_all(&mut conn).await;
            }
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
