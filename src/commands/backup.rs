//! `mwaa-dr backup`: one snapshot of the metadata database into a new backup in the store.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::open_store;
use crate::aws::mwaa::{Mwaa, SdkMwaa};
use crate::cli::BackupArgs;
use crate::config::Config;
use crate::db::export::{TableExport, begin_snapshot, export_tables, row_estimate};
use crate::db::{airflow_version, db_error, table_columns};
use crate::error::{Error, Result};
use crate::failpoint;
use crate::output;
use crate::store::manifest::{self, AbsentTable, FORMAT_VERSION, FilterInfo, Manifest, SourceInfo};
use crate::store::{BackupStore, environments};

#[derive(Serialize)]
struct EnvironmentDoc {
    environment: String,
    /// The store key of the saved definition, when saved.
    #[serde(skip_serializing_if = "Option::is_none")]
    saved: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Saves the primary's GetEnvironment answer under `environments/` for Backup-Restore.
async fn save_environment(config: &Config, store: &dyn BackupStore, name: &str) -> Result<String> {
    let mwaa = SdkMwaa::new(config.primary.region.as_deref(), &config.aws_timeouts).await;
    let definition = mwaa.get_environment(name).await?.ok_or_else(|| {
        Error::failed(
            "GetEnvironment",
            name,
            "no such environment in the primary region",
        )
    })?;
    environments::save(store, &definition).await
}

async fn environment_only(config: &Config) -> Result<()> {
    let name = config.require(
        &config.primary.environment_name,
        "PRIMARY_MWAA_ENVIRONMENT_NAME",
        "backup --environment-only",
        "the environment whose definition is saved",
    )?;
    let location = config.store("backup")?;
    if config.dry_run {
        output::emit(
            config.output,
            &serde_json::json!({"dry_run": true, "environment": name}),
            || format!("dry run: would save the definition of {name} into {location}"),
        );
        return Ok(());
    }
    let store = open_store(location, config).await?;
    let key = save_environment(config, store.as_ref(), name).await?;
    let doc = EnvironmentDoc {
        environment: name.to_string(),
        saved: Some(key.clone()),
        error: None,
    };
    output::emit(config.output, &doc, || {
        format!(
            "saved the definition of {name} as {}/{key}",
            store.describe()
        )
    });
    Ok(())
}

#[derive(Serialize)]
struct BackupDoc<'a> {
    backup_id: &'a str,
    store: String,
    airflow_version: &'a str,
    tables: usize,
    rows: u64,
    stored_bytes: u64,
    seconds: f64,
    dry_run: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    environment: Option<EnvironmentDoc>,
}

pub async fn run(config: &Config, args: &BackupArgs, cancel: &CancellationToken) -> Result<()> {
    if args.environment_only {
        return environment_only(config).await;
    }
    if let Some(v) = &args.airflow_version
        && !config.versions.is_known(v)
    {
        return Err(Error::Usage {
            message: format!(
                "--airflow-version {v} is not a known Airflow version; accepted: {}",
                config.versions.known_versions().join(", ")
            ),
        });
    }
    let location = config.store("backup")?;
    let db = config.source_db("backup")?;
    let started = Instant::now();
    let started_at = Utc::now();
    let export_dag = &config.deployment.export_dag_name;

    let connector = super::connector(config, db.clone());
    let mut conn = connector.connect().await?;
    let snapshot = begin_snapshot(&mut conn, db.redacted()).await?;
    failpoint::reach("backup.snapshot", cancel).await?;
    let (version, revision) = airflow_version(
        &mut conn,
        db.redacted(),
        &config.versions,
        args.airflow_version.as_deref(),
        config.mwaa_version.as_deref(),
    )
    .await?;
    if let Some(stated) = &config.mwaa_version
        && *stated != version
    {
        warn!(stated = %stated, detected = %version, "MWAA_VERSION differs from the database's Airflow version; the database's is used");
    }
    let catalog = config.catalog_for(&version)?;
    let mut tables = Vec::new();
    let mut absent_tables = Vec::new();
    for spec in &catalog.tables {
        let Some(all_columns) = table_columns(&mut conn, &spec.name).await? else {
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
            estimate: row_estimate(&mut conn, &spec.name).await?,
        });
    }
    let active_dags = active_dags(&mut conn, db.redacted()).await?;
    let backup_id = manifest::new_backup_id(started_at);

    if config.dry_run {
        let text = tables
            .iter()
            .map(|t| {
                format!(
                    "{}  ({} columns){}",
                    t.name,
                    t.columns.len(),
                    t.filter
                        .as_ref()
                        .map(|f| format!("  WHERE {f}"))
                        .unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        let doc = BackupDoc {
            backup_id: &backup_id,
            store: location.to_string(),
            airflow_version: &version,
            tables: tables.len(),
            rows: 0,
            stored_bytes: 0,
            seconds: 0.0,
            dry_run: true,
            environment: None,
        };
        output::emit(config.output, &doc, || {
            format!(
                "dry run: would back up Airflow {version} ({} tables) into {location} as {backup_id}:\n{text}",
                tables.len()
            )
        });
        return Ok(());
    }

    let store: Arc<dyn BackupStore> = Arc::from(open_store(location, config).await?);
    let jobs = usize::from(config.backup_jobs);
    let progress: Arc<dyn crate::progress::Progress> =
        Arc::from(crate::progress::for_terminal("backup", config.quiet));
    let manifest = super::with_store_lock(store.as_ref(), false, "backup", async {
        failpoint::reach("backup.locked", cancel).await?;
        let result = export_tables(
            &connector,
            &snapshot,
            jobs,
            tables,
            store.clone(),
            &backup_id,
            progress.clone(),
            cancel,
        )
        .await;
        progress.clear();
        let entries = match result {
            Ok(entries) => entries,
            Err(e) => {
                discard_partial(store.as_ref(), &backup_id).await;
                return Err(e);
            }
        };
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            backup_id: backup_id.clone(),
            started_at,
            finished_at: Utc::now(),
            source: SourceInfo {
                database: db.location(),
                environment: config.primary.environment_name.clone(),
            },
            airflow_version: version.clone(),
            alembic_revision: revision,
            filters: FilterInfo {
                inflight_states: catalog.inflight_states.clone(),
                export_dag: export_dag.clone(),
            },
            tables: entries,
            active_dags,
            absent_tables,
            manifest_sha256: None,
        };
        if let Err(e) = failpoint::reach("backup.exported", cancel).await {
            discard_partial(store.as_ref(), &backup_id).await;
            return Err(e);
        }
        // Past this point the backup exists: a signal now no longer undoes it.
        if cancel.is_cancelled() {
            discard_partial(store.as_ref(), &backup_id).await;
            return Err(Error::Interrupted);
        }
        if let Err(e) = manifest::commit(store.as_ref(), &manifest).await {
            discard_partial(store.as_ref(), &backup_id).await;
            return Err(e);
        }
        failpoint::reach("backup.committed", cancel).await?;
        Ok(manifest)
    })
    .await;
    drop(conn);
    let manifest = manifest?;
    // With the primary environment named, its definition goes along (Backup-Restore recreates
    // it from there). A failure here does not undo the table backup: it is reported.
    let environment = match &config.primary.environment_name {
        None => None,
        Some(name) => Some(match save_environment(config, store.as_ref(), name).await {
            Ok(key) => EnvironmentDoc {
                environment: name.clone(),
                saved: Some(key),
                error: None,
            },
            Err(e) => {
                warn!(environment = %name, error = %e, "the environment definition was not saved");
                EnvironmentDoc {
                    environment: name.clone(),
                    saved: None,
                    error: Some(e.to_string()),
                }
            }
        }),
    };
    let seconds = started.elapsed().as_secs_f64();
    let doc = BackupDoc {
        backup_id: &backup_id,
        store: store.describe(),
        airflow_version: &version,
        tables: manifest.tables.len(),
        rows: manifest.total_rows(),
        stored_bytes: manifest.stored_bytes(),
        seconds,
        dry_run: false,
        environment,
    };
    output::emit(config.output, &doc, || {
        let mut text = format!(
            "backup {backup_id}: Airflow {version}, {} tables, {} rows, {} stored in {} ({seconds:.1} s)",
            manifest.tables.len(),
            manifest.total_rows(),
            output::bytes(manifest.stored_bytes()),
            store.describe()
        );
        match &doc.environment {
            Some(EnvironmentDoc {
                environment,
                saved: Some(key),
                ..
            }) => {
                text.push_str(&format!("\nsaved the definition of {environment} as {key}"));
            }
            Some(EnvironmentDoc {
                environment,
                error: Some(e),
                ..
            }) => {
                text.push_str(&format!(
                    "\nWARNING: the definition of {environment} was not saved: {e}"
                ));
            }
            _ => {}
        }
        text
    });
    Ok(())
}

/// DAGs not paused (and still present in their DAG files) in the source.
async fn active_dags(conn: &mut sqlx::PgConnection, db: &str) -> Result<Vec<String>> {
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
        "SELECT dag_id FROM dag WHERE NOT is_paused AND {present} ORDER BY dag_id"
    ))
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
