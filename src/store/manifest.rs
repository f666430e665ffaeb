//! The backup layout and its manifest, the commit point of a backup.
//!
//!     backups/<backup-id>/<table>.csv.zst   one object per table, written first
//!     backups/<backup-id>/manifest.json     written last: a backup without it does not exist

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::BackupStore;
use crate::error::{Error, Result};

/// The manifest format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

pub const BACKUPS_PREFIX: &str = "backups/";
const MANIFEST: &str = "manifest.json";

/// Key of an object of a backup.
pub fn object_key(backup_id: &str, name: &str) -> String {
    format!("{BACKUPS_PREFIX}{backup_id}/{name}")
}

pub fn manifest_key(backup_id: &str) -> String {
    object_key(backup_id, MANIFEST)
}

/// A new backup id: UTC time to the millisecond (so ids sort by time, even for backups taken
/// within one second) and a random suffix, e.g. `20261126T183255.123Z-3f9a`.
pub fn new_backup_id(now: DateTime<Utc>) -> String {
    let nanos = now.timestamp_subsec_nanos() as u64;
    let mix = nanos ^ (u64::from(std::process::id()) << 17) ^ 0x9e37_79b9_7f4a_7c15;
    format!(
        "{}-{:04x}",
        now.format("%Y%m%dT%H%M%S%.3fZ"),
        (mix.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 48) as u16
    )
}

/// Whether `id` has the shape of a backup id (guards keys built from user input).
pub fn is_valid_backup_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !id.starts_with('.')
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub tool_version: String,
    pub backup_id: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub source: SourceInfo,
    pub airflow_version: String,
    pub alembic_revision: String,
    /// What was left out, and why.
    pub filters: FilterInfo,
    pub tables: Vec<TableEntry>,
    /// DAGs that were active (not paused) in the source.
    pub active_dags: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceInfo {
    /// `HOST:PORT/DATABASE` of the source (never a user, password or parameter).
    pub database: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub environment: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FilterInfo {
    /// Task instances in these states, and the rows that depend on them, are not backed up.
    pub inflight_states: Vec<String>,
    /// Rows of this DAG (the one running `mwaa-dr backup` inside Airflow) are not backed up.
    pub export_dag: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableEntry {
    pub name: String,
    /// Object name inside the backup.
    pub object: String,
    /// Columns in file order (the CSV header).
    pub columns: Vec<String>,
    /// The WHERE clause applied, if any.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub filter: Option<String>,
    pub rows: u64,
    /// Size of the CSV before compression.
    pub csv_bytes: u64,
    /// Size of the stored (compressed) object.
    pub stored_bytes: u64,
    /// SHA-256 of the stored object, hex.
    pub sha256: String,
}

impl Manifest {
    pub fn total_rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }

    pub fn stored_bytes(&self) -> u64 {
        self.tables.iter().map(|t| t.stored_bytes).sum()
    }

    pub fn table(&self, name: &str) -> Option<&TableEntry> {
        self.tables.iter().find(|t| t.name == name)
    }
}

/// Reads one backup's manifest; a missing manifest means the backup does not exist.
pub async fn load(store: &dyn BackupStore, backup_id: &str) -> Result<Manifest> {
    let not_found = || Error::BackupNotFound {
        backup: backup_id.to_string(),
        store: store.describe(),
    };
    if !is_valid_backup_id(backup_id) {
        return Err(not_found());
    }
    let key = manifest_key(backup_id);
    if !store.exists(&key).await? {
        return Err(not_found());
    }
    parse(
        &store.get_bytes(&key).await?,
        &format!("{}/{key}", store.describe()),
    )
}

fn parse(bytes: &[u8], resource: &str) -> Result<Manifest> {
    #[derive(Deserialize)]
    struct Version {
        format_version: u32,
    }
    let version: Version =
        serde_json::from_slice(bytes).map_err(|e| Error::failed("read manifest", resource, e))?;
    if version.format_version != FORMAT_VERSION {
        return Err(Error::failed(
            "read manifest",
            resource,
            format!(
                "format_version {} is not supported by this mwaa-dr (it reads {FORMAT_VERSION}); use a matching mwaa-dr version",
                version.format_version
            ),
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| Error::failed("read manifest", resource, e))
}

/// The ids of every complete backup (those with a manifest), oldest first.
pub async fn backup_ids(store: &dyn BackupStore) -> Result<Vec<String>> {
    let mut ids: Vec<String> = store
        .list(BACKUPS_PREFIX)
        .await?
        .into_iter()
        .filter_map(|o| {
            let rest = o.key.strip_prefix(BACKUPS_PREFIX)?;
            let (id, name) = rest.split_once('/')?;
            (name == MANIFEST).then(|| id.to_string())
        })
        .collect();
    ids.sort();
    Ok(ids)
}

/// Every complete backup's manifest, oldest first.
pub async fn list(store: &dyn BackupStore) -> Result<Vec<Manifest>> {
    let mut out = Vec::new();
    for id in backup_ids(store).await? {
        out.push(load(store, &id).await?);
    }
    Ok(out)
}

/// Names the newest complete backup wherever a backup id is accepted.
pub const LATEST: &str = "latest";

/// The manifest of `backup_id`, or of the newest complete backup when it is `None` or
/// `latest`.
pub async fn resolve(store: &dyn BackupStore, backup_id: Option<&str>) -> Result<Manifest> {
    match backup_id.filter(|id| *id != LATEST) {
        Some(id) => load(store, id).await,
        None => match backup_ids(store).await?.pop() {
            Some(id) => load(store, &id).await,
            None => Err(Error::BackupNotFound {
                backup: LATEST.into(),
                store: store.describe(),
            }),
        },
    }
}

/// Writes the manifest: the commit point of the backup.
pub async fn commit(store: &dyn BackupStore, manifest: &Manifest) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(manifest)
        .map_err(|e| Error::failed("write manifest", &manifest.backup_id, e))?;
    store
        .put_bytes(&manifest_key(&manifest.backup_id), &bytes)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_are_valid() {
        let a = new_backup_id("2026-11-26T18:32:55Z".parse().expect("time"));
        let b = new_backup_id("2026-11-26T18:32:56Z".parse().expect("time"));
        assert!(a.starts_with("20261126T183255.000Z-"), "{a}");
        assert!(a < b);
        assert!(is_valid_backup_id(&a));
        assert!(!is_valid_backup_id("../etc"));
        assert!(!is_valid_backup_id("a/b"));
    }

    #[test]
    fn unknown_format_version_is_refused() {
        let err = parse(br#"{"format_version": 99}"#, "m.json").expect_err("refused");
        assert!(err.to_string().contains("format_version 99"), "{err}");
    }
}
