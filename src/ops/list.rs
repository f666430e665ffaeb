//! List: the complete backups in the store, newest first, and those whose manifest cannot be
//! read (reported, so one damaged backup never hides the others).

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::Services;
use crate::error::Result;
use crate::model::{escape_control, stored_location};
use crate::progress::Progress;
use crate::store::manifest::{self, Unreadable};

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub backup_id: String,
    pub finished_at: String,
    pub source: String,
    pub environment: Option<String>,
    pub airflow_version: String,
    pub tables: usize,
    pub rows: u64,
    pub stored_bytes: u64,
}

/// One element of the JSON array: a backup, or a folder whose manifest cannot be used
/// (`"unreadable": true` and the problem).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Entry {
    Backup(Row),
    Unreadable {
        backup_id: String,
        unreadable: bool,
        problem: String,
    },
}

impl Entry {
    pub fn backup_id(&self) -> &str {
        match self {
            Entry::Backup(row) => &row.backup_id,
            Entry::Unreadable { backup_id, .. } => backup_id,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ListReport {
    /// The store as users name it.
    pub store: String,
    /// Newest first.
    pub entries: Vec<Entry>,
    pub unreadable: Vec<Unreadable>,
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

pub async fn list(
    services: &Services,
    _progress: &dyn Progress,
    _cancel: &CancellationToken,
) -> Result<ListReport> {
    let store = services.store()?;
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
    Ok(ListReport {
        store: store.describe(),
        entries,
        unreadable: scan.unreadable,
    })
}
