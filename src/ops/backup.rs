//! Backup: one snapshot of the metadata database into a new backup in the store.

use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{Catalogs, Services};
use crate::airflow::catalog::Catalog;
use crate::airflow::fernet::BackupKeySetting;
use crate::airflow::fernet::{FernetKeys, Rekey};
use crate::db::export::{TableExport, begin_snapshot, export_tables, row_estimate};
use crate::db::{airflow_version, db_error, table_columns};
use crate::error::{Error, Result};
use crate::failpoint;
use crate::progress::Progress;
use crate::store::manifest::{
    self, AbsentTable, FORMAT_VERSION, FernetKeyInfo, FernetKeyKind, FilterInfo, Manifest,
    SourceInfo,
};
use crate::store::{BackupStore, environments};

/// What a backup needs to know.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// `--airflow-version`: the version when the database's revision is not known.
    pub airflow_version: Option<String>,
    /// MWAA_VERSION, the version the user states.
    pub mwaa_version: Option<String>,
    pub catalogs: Catalogs,
    /// The DAG that runs exports, whose own runs are left out.
    pub export_dag: String,
    /// Parallel connections.
    pub jobs: usize,
    /// Plan only: read the source's schema, write nothing.
    pub dry_run: bool,
    /// The store as the report names it (a dry run does not open it).
    pub store_location: String,
    /// The primary environment: recorded in the manifest, and its definition saved.
    pub environment: Option<String>,
    /// The source's Fernet keys (PRIMARY_FERNET_KEY, else AIRFLOW__CORE__FERNET_KEY).
    pub source_keys: Option<FernetKeys>,
    /// The key the backup puts Fernet secrets under.
    pub backup_key: BackupKeySetting,
}

impl BackupOptions {
    /// Refuses what can be refused before anything is opened.
    pub fn validate(&self) -> Result<()> {
        let versions = &self.catalogs.versions;
        if let Some(v) = &self.airflow_version
            && !versions.is_known(v)
        {
            return Err(Error::Usage {
                message: format!(
                    "--airflow-version {v} is not a known Airflow version; accepted: {}",
                    versions.known_versions().join(", ")
                ),
            });
        }
        Ok(())
    }
}

/// The environment definition saved along a backup, or why it was not.
#[derive(Debug, Clone, Serialize)]
pub struct EnvironmentReport {
    pub environment: String,
    /// The store key of the saved definition, when saved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saved: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One table a dry run would back up.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedTable {
    pub name: String,
    pub columns: usize,
    pub filter: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    pub backup_id: String,
    pub store: String,
    pub airflow_version: String,
    pub tables: usize,
    pub rows: u64,
    pub stored_bytes: u64,
    pub seconds: f64,
    pub dry_run: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<EnvironmentReport>,
    /// A dry run's tables (the text output lists them).
    #[serde(skip)]
    pub planned: Vec<PlannedTable>,
}

/// Saves the primary's GetEnvironment answer under `environments/` for Backup-Restore.
pub async fn save_environment(services: &Services, name: &str) -> Result<String> {
    let definition = services
        .primary_mwaa()?
        .get_environment(name)
        .await?
        .ok_or_else(|| {
            Error::failed(
                "GetEnvironment",
                name,
                "no such environment in the primary region",
            )
        })?;
    environments::save(services.store()?.as_ref(), &definition).await
}

/// The source read inside its snapshot: what is to be exported.
struct Plan {
    snapshot: String,
    version: String,
    revision: String,
    catalog: Catalog,
    tables: Vec<TableExport>,
    absent_tables: Vec<AbsentTable>,
    active_dags: Vec<String>,
}

/// Backs up the source into a new backup. `progress` is shared with the export's tasks.
pub async fn backup(
    options: &BackupOptions,
    services: &Services,
    progress: &Arc<dyn Progress>,
    cancel: &CancellationToken,
) -> Result<BackupReport> {
    options.validate()?;
    if !options.dry_run
        && options.backup_key != BackupKeySetting::SourceKey
        && options.source_keys.is_none()
    {
        return Err(missing_source_key(&options.backup_key));
    }
    let started = Instant::now();
    let started_at = services.clock.now();
    let connector = services.source()?;
    let mut conn = connector.connect().await?;
    let plan = plan(options, &mut conn, connector.describe(), cancel).await?;
    let backup_id = manifest::new_backup_id(started_at);
    if options.dry_run {
        return Ok(dry_run_report(options, &plan, backup_id));
    }
    let store = services.store()?;
    let secrets = backup_key(options, services).await?;
    let manifest = with_lock_export(
        options, services, &store, plan, secrets, &backup_id, started_at, progress, cancel,
    )
    .await;
    drop(conn);
    let manifest = manifest?;
    // With the primary environment named, its definition goes along (Backup-Restore recreates
    // it from there). A failure here does not undo the table backup: it is reported.
    let environment = match &options.environment {
        None => None,
        Some(name) => Some(environment_report(services, name).await),
    };
    Ok(BackupReport {
        backup_id,
        store: store.describe(),
        airflow_version: manifest.airflow_version.clone(),
        tables: manifest.tables.len(),
        rows: manifest.total_rows(),
        stored_bytes: manifest.stored_bytes(),
        seconds: started.elapsed().as_secs_f64(),
        dry_run: false,
        environment,
        planned: Vec::new(),
    })
}

async fn environment_report(services: &Services, name: &str) -> EnvironmentReport {
    match save_environment(services, name).await {
        Ok(key) => EnvironmentReport {
            environment: name.to_string(),
            saved: Some(key),
            error: None,
        },
        Err(e) => {
            warn!(environment = %name, error = %e, "the environment definition was not saved");
            EnvironmentReport {
                environment: name.to_string(),
                saved: None,
                error: Some(e.to_string()),
            }
        }
    }
}

fn dry_run_report(options: &BackupOptions, plan: &Plan, backup_id: String) -> BackupReport {
    BackupReport {
        backup_id,
        store: options.store_location.clone(),
        airflow_version: plan.version.clone(),
        tables: plan.tables.len(),
        rows: 0,
        stored_bytes: 0,
        seconds: 0.0,
        dry_run: true,
        environment: None,
        planned: plan
            .tables
            .iter()
            .map(|t| PlannedTable {
                name: t.name.clone(),
                columns: t.columns.len(),
                filter: t.filter.clone(),
            })
            .collect(),
    }
}

/// Opens the snapshot and reads, inside it, the version, the tables and the active DAGs.
async fn plan(
    options: &BackupOptions,
    conn: &mut sqlx::PgConnection,
    db: &str,
    cancel: &CancellationToken,
) -> Result<Plan> {
    let snapshot = begin_snapshot(conn, db).await?;
    failpoint::reach("backup.snapshot", cancel).await?;
    let (version, revision) = airflow_version(
        conn,
        db,
        &options.catalogs.versions,
        options.airflow_version.as_deref(),
        options.mwaa_version.as_deref(),
    )
    .await?;
    if let Some(stated) = &options.mwaa_version
        && *stated != version
    {
        warn!(stated = %stated, detected = %version, "MWAA_VERSION differs from the database's Airflow version; the database's is used");
    }
    let catalog = options.catalogs.for_version(&version)?;
    let (tables, absent_tables) = tables(conn, &catalog, &options.export_dag, &version).await?;
    let active_dags = active_dags(conn, db, &catalog.dr_dags.names).await?;
    Ok(Plan {
        snapshot,
        version,
        revision,
        catalog,
        tables,
        absent_tables,
        active_dags,
    })
}

/// The catalog's tables the source has, with their columns and filters, and those it lacks.
async fn tables(
    conn: &mut sqlx::PgConnection,
    catalog: &Catalog,
    export_dag: &str,
    version: &str,
) -> Result<(Vec<TableExport>, Vec<AbsentTable>)> {
    let mut tables = Vec::new();
    let mut absent_tables = Vec::new();
    for spec in &catalog.tables {
        let Some(all_columns) = table_columns(conn, &spec.name).await? else {
            // Recorded, so a restore can tell a table this Airflow version lacks from an
            // entry lost from the manifest.
            absent_tables.push(AbsentTable {
                name: spec.name.clone(),
                reason: format!("the source database (Airflow {version}) has no such table"),
            });
            continue;
        };
        let filter = catalog.render_filter(spec, export_dag, &all_columns);
        let columns: Vec<String> = all_columns
            .into_iter()
            .filter(|c| !spec.exclude_columns.contains(c))
            .collect();
        tables.push(TableExport {
            name: spec.name.clone(),
            columns,
            filter,
            estimate: row_estimate(conn, &spec.name).await?,
        });
    }
    Ok((tables, absent_tables))
}

/// Under the store's shared lock: export every table, then commit the manifest. Whatever
/// fails or is interrupted before the commit leaves no object behind.
#[allow(clippy::too_many_arguments)]
async fn with_lock_export(
    options: &BackupOptions,
    services: &Services,
    store: &Arc<dyn BackupStore>,
    plan: Plan,
    secrets: BackupSecrets,
    backup_id: &str,
    started_at: DateTime<Utc>,
    progress: &Arc<dyn Progress>,
    cancel: &CancellationToken,
) -> Result<Manifest> {
    let connector = services.source()?;
    super::with_store_lock(store.as_ref(), false, "backup", async {
        failpoint::reach("backup.locked", cancel).await?;
        let result = export_tables(
            connector,
            &plan.snapshot,
            options.jobs,
            plan.tables,
            store.clone(),
            backup_id,
            progress.clone(),
            secrets.rekey,
            cancel,
        )
        .await;
        progress.clear();
        let entries = match result {
            Ok(entries) => entries,
            Err(e) => {
                discard_partial(store.as_ref(), backup_id).await;
                return Err(e);
            }
        };
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            backup_id: backup_id.to_string(),
            started_at,
            finished_at: services.clock.now(),
            source: SourceInfo {
                database: connector.url().location(),
                environment: options.environment.clone(),
            },
            airflow_version: plan.version,
            alembic_revision: plan.revision,
            filters: FilterInfo {
                inflight_states: plan.catalog.inflight_states.clone(),
                export_dag: options.export_dag.clone(),
            },
            tables: entries,
            active_dags: plan.active_dags,
            absent_tables: plan.absent_tables,
            fernet: secrets.info,
            manifest_sha256: None,
        };
        commit(store.as_ref(), manifest, cancel).await
    })
    .await
}

/// The key a backup's Fernet secrets go under, and how the manifest names it.
struct BackupSecrets {
    /// From the source's keys to the backup key; `None` keeps the source's ciphertext.
    rekey: Option<Rekey>,
    info: Option<FernetKeyInfo>,
}

/// Obtains the backup key (a KMS data key, or DR_BACKUP_FERNET_KEY) before anything is
/// written, so a backup that cannot protect its secrets writes nothing.
async fn backup_key(options: &BackupOptions, services: &Services) -> Result<BackupSecrets> {
    let source = options.source_keys.clone();
    let (kind, keys, kms_key_id, wrapped_key) = match &options.backup_key {
        BackupKeySetting::SourceKey => {
            return Ok(BackupSecrets {
                rekey: None,
                info: source.map(|keys| FernetKeyInfo {
                    kind: FernetKeyKind::Source,
                    fingerprint: keys.fingerprint(),
                    kms_key_id: None,
                    wrapped_key: None,
                }),
            });
        }
        BackupKeySetting::Shared(key) => (
            FernetKeyKind::BackupKey,
            crate::airflow::fernet::side_keys(Some(key), "DR_BACKUP_FERNET_KEY")?
                .ok_or_else(|| Error::failed("backup", "DR_BACKUP_FERNET_KEY", "no key"))?,
            None,
            None,
        ),
        BackupKeySetting::Kms(key_id) => {
            let data_key = services.kms()?.generate_data_key(key_id).await?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data_key.plaintext.expose())
                .map_err(|e| Error::failed("GenerateDataKey", key_id, e))?;
            let keys = FernetKeys::from_data_key(&bytes).map_err(|_| {
                Error::failed(
                    "GenerateDataKey",
                    key_id,
                    format!(
                        "KMS returned a data key of {} bytes, not the 32 of AES_256",
                        bytes.len()
                    ),
                )
            })?;
            (
                FernetKeyKind::Kms,
                keys,
                Some(key_id.clone()),
                Some(base64::engine::general_purpose::STANDARD.encode(&data_key.wrapped)),
            )
        }
    };
    let source = source.ok_or_else(|| missing_source_key(&options.backup_key))?;
    Ok(BackupSecrets {
        info: Some(FernetKeyInfo {
            kind,
            fingerprint: keys.fingerprint(),
            kms_key_id,
            wrapped_key,
        }),
        rekey: Some(Rekey {
            source,
            target: keys,
        }),
    })
}

/// Re-encrypting under a backup key needs the source's key to decrypt first.
fn missing_source_key(setting: &BackupKeySetting) -> Error {
    Error::MissingValue {
        variable: "PRIMARY_FERNET_KEY".into(),
        command: "backup".into(),
        purpose: format!(
            "the source's Fernet key, to re-encrypt its secrets under the backup key ({}) (or set AIRFLOW__CORE__FERNET_KEY)",
            match setting {
                BackupKeySetting::Kms(_) => "DR_KMS_KEY_ID",
                _ => "DR_BACKUP_FERNET_KEY",
            }
        ),
    }
}

/// The last steps before and after the manifest makes the backup exist.
async fn commit(
    store: &dyn BackupStore,
    manifest: Manifest,
    cancel: &CancellationToken,
) -> Result<Manifest> {
    let backup_id = manifest.backup_id.clone();
    if let Err(e) = failpoint::reach("backup.exported", cancel).await {
        discard_partial(store, &backup_id).await;
        return Err(e);
    }
    // Past this point the backup exists: a signal now no longer undoes it.
    if cancel.is_cancelled() {
        discard_partial(store, &backup_id).await;
        return Err(Error::Interrupted);
    }
    if let Err(e) = manifest::commit(store, &manifest).await {
        discard_partial(store, &backup_id).await;
        return Err(e);
    }
    failpoint::reach("backup.committed", cancel).await?;
    Ok(manifest)
}

/// DAGs not paused (and still present in their DAG files) in the source, but the DR DAGs:
/// a restore unpauses these on the standby, where a running backup DAG would overwrite the
/// store with the standby's own state.
async fn active_dags(
    conn: &mut sqlx::PgConnection,
    db: &str,
    dr_dags: &[String],
) -> Result<Vec<String>> {
    let Some(columns) = table_columns(conn, "dag").await? else {
        return Ok(Vec::new());
    };
    let present = if columns.iter().any(|c| c == "is_stale") {
        "NOT is_stale"
    } else if columns.iter().any(|c| c == "is_active") {
        "is_active"
    } else {
        "TRUE"
    };
    sqlx::query_scalar(&format!(
        "SELECT dag_id FROM dag WHERE NOT is_paused AND {present} AND dag_id <> ALL($1) ORDER BY dag_id"
    ))
    .bind(dr_dags)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| db_error("list active DAGs", db, e))
}

/// Best effort: remove the objects of a backup that never got its manifest.
async fn discard_partial(store: &dyn BackupStore, backup_id: &str) {
    let prefix = manifest::object_key(backup_id, "");
    if let Ok(objects) = store.list(&prefix).await {
        for object in objects {
            let _ = store.delete(&object.key).await;
        }
    }
}
