//! `mwaa-dr list`: the complete backups in the store, newest first.

use serde::Serialize;

use crate::config::{Config, stored_location};
use crate::error::Result;
use crate::output;
use crate::store::{manifest, open_store};

#[derive(Serialize)]
struct Row {
    backup_id: String,
    finished_at: String,
    source: String,
    environment: Option<String>,
    airflow_version: String,
    tables: usize,
    rows: u64,
    stored_bytes: u64,
}

pub async fn run(config: &Config) -> Result<()> {
    let store = open_store(config.store("list")?, config).await?;
    let mut manifests = manifest::list(store.as_ref()).await?;
    manifests.reverse();
    let rows: Vec<Row> = manifests
        .iter()
        .map(|m| Row {
            backup_id: m.backup_id.clone(),
            finished_at: m.finished_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            source: stored_location(&m.source.database),
            environment: m.source.environment.clone(),
            airflow_version: m.airflow_version.clone(),
            tables: m.tables.len(),
            rows: m.total_rows(),
            stored_bytes: m.stored_bytes(),
        })
        .collect();
    output::emit(config.output, &rows, || {
        if rows.is_empty() {
            return format!("no backups in {}", store.describe());
        }
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    r.backup_id.clone(),
                    r.finished_at.clone(),
                    r.environment.clone().unwrap_or_else(|| r.source.clone()),
                    r.airflow_version.clone(),
                    r.rows.to_string(),
                    output::bytes(r.stored_bytes),
                ]
            })
            .collect();
        output::table(&["ID", "TIME", "SOURCE", "AIRFLOW", "ROWS", "SIZE"], &cells)
    });
    Ok(())
}
