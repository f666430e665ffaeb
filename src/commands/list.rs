//! `mwaa-dr list`: the complete backups in the store, newest first, and those whose manifest
//! cannot be read (reported, so one damaged backup never hides the others).

use serde::Serialize;
use tracing::warn;

use super::open_store;
use crate::config::{Config, stored_location};
use crate::error::Result;
use crate::output::{self, escape_control};
use crate::store::manifest::{self, Unreadable};

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

/// One element of the JSON array: a backup, or a folder whose manifest cannot be used
/// (`"unreadable": true` and the problem).
#[derive(Serialize)]
#[serde(untagged)]
enum Entry {
    Backup(Row),
    Unreadable {
        backup_id: String,
        unreadable: bool,
        problem: String,
    },
}

impl Entry {
    fn backup_id(&self) -> &str {
        match self {
            Entry::Backup(row) => &row.backup_id,
            Entry::Unreadable { backup_id, .. } => backup_id,
        }
    }
}

/// The stderr line for a backup whose manifest cannot be used.
pub fn warn_unreadable(unreadable: &[Unreadable], consequence: &str) {
    for u in unreadable {
        warn!(
            "backup {} is unreadable and {consequence}: {}",
            escape_control(&u.backup_id),
            escape_control(&u.problem)
        );
    }
}

pub async fn run(config: &Config) -> Result<()> {
    let store = open_store(config.store("list")?, config).await?;
    let scan = manifest::scan(store.as_ref()).await?;
    warn_unreadable(&scan.unreadable, "not listed");
    let mut entries: Vec<Entry> = scan
        .backups
        .iter()
        .map(|m| {
            Entry::Backup(Row {
                backup_id: m.backup_id.clone(),
                finished_at: m.finished_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                source: stored_location(&m.source.database),
                environment: m.source.environment.clone(),
                airflow_version: m.airflow_version.clone(),
                tables: m.tables.len(),
                rows: m.total_rows(),
                stored_bytes: m.stored_bytes(),
            })
        })
        .chain(scan.unreadable.iter().map(|u| Entry::Unreadable {
            backup_id: u.backup_id.clone(),
            unreadable: true,
            problem: u.problem.clone(),
        }))
        .collect();
    entries.sort_by(|a, b| b.backup_id().cmp(a.backup_id()));
    output::emit(config.output, &entries, || {
        let rows: Vec<&Row> = entries
            .iter()
            .filter_map(|e| match e {
                Entry::Backup(row) => Some(row),
                Entry::Unreadable { .. } => None,
            })
            .collect();
        let mut text = if rows.is_empty() {
            format!("no backups in {}", escape_control(&store.describe()))
        } else {
            // `output::table` escapes every cell.
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
        };
        if !scan.unreadable.is_empty() {
            text.push_str(&format!(
                "\n{} unreadable backup(s) not listed: {}",
                scan.unreadable.len(),
                scan.unreadable
                    .iter()
                    .map(|u| escape_control(&u.backup_id).into_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        text
    });
    Ok(())
}
