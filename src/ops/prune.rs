//! Prune: apply retention (manifests go first, then their objects), and collect the objects
//! of backups that never got a manifest once they are old enough.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::Services;
use crate::error::{Error, Result};
use crate::failpoint;
use crate::model::Clock;
use crate::progress::Progress;
use crate::store::BackupStore;
use crate::store::manifest::{self, Incomplete, Unreadable};
use crate::store::runs;

#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// The newest backups kept whatever their age.
    pub keep_last: usize,
    /// Backups younger than this are kept.
    pub keep_within: Option<Duration>,
    /// Backups without a manifest are collected once both their start and their last write
    /// are older than this.
    pub incomplete_after: Duration,
    /// Report, delete nothing (and take no lock).
    pub dry_run: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub kept: Vec<String>,
    pub removed: Vec<String>,
    /// Folders without a manifest deleted (or, in a dry run, to be deleted).
    pub incomplete_removed: Vec<IncompleteReport>,
    /// Folders without a manifest left alone, and why.
    pub incomplete_kept: Vec<IncompleteReport>,
    /// Backups whose manifest cannot be read: never deleted.
    pub unreadable: Vec<Unreadable>,
    /// What killed writers left and `incomplete_after` has passed over: temporary files of
    /// a directory store, incomplete S3 multipart uploads (not looked for in a dry run).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub abandoned_writes: Vec<String>,
    /// Reports of DR DAG runs (`runs/`) removed (or to be removed): those written before the
    /// oldest backup kept.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub run_reports_removed: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct IncompleteReport {
    pub backup_id: String,
    pub objects: usize,
    pub stored_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept_because: Option<String>,
}

pub async fn prune(
    options: &PruneOptions,
    services: &Services,
    _progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<PruneReport> {
    let store = services.store()?;
    let store = store.as_ref();
    let report = if options.dry_run {
        prune_scanned(options, store, &services.clock, cancel).await?
    } else {
        super::with_store_lock(
            store,
            true,
            "prune",
            prune_scanned(options, store, &services.clock, cancel),
        )
        .await?
    };
    super::list::warn_unreadable(&report.unreadable, "kept (prune never deletes it)");
    Ok(report)
}

/// Scans, decides and (unless a dry run) deletes; run under the store's exclusive lock.
async fn prune_scanned(
    options: &PruneOptions,
    store: &dyn BackupStore,
    clock: &Clock,
    cancel: &CancellationToken,
) -> Result<PruneReport> {
    failpoint::reach("prune.locked", cancel).await?;
    // Read under the lock: a backup that commits meanwhile is not taken for incomplete.
    let scan = manifest::scan(store).await?;
    let now = clock.now();
    let (kept, removed) = retention(options, &scan.backups, now);
    let (mut incomplete_removed, mut incomplete_kept) = (Vec::new(), Vec::new());
    for folder in &scan.incomplete {
        let newest = newest_write(store, folder).await?;
        let kept_because = too_young(&folder.backup_id, newest, now, options.incomplete_after);
        let doc = IncompleteReport {
            backup_id: folder.backup_id.clone(),
            objects: folder.objects.len(),
            stored_bytes: folder.objects.iter().map(|o| o.size).sum(),
            kept_because,
        };
        if doc.kept_because.is_some() {
            incomplete_kept.push(doc);
        } else {
            incomplete_removed.push((doc, folder));
        }
    }
    let run_reports_removed = stale_run_reports(store, &scan.backups, &kept).await?;
    failpoint::reach("prune.scanned", cancel).await?;
    let mut abandoned_writes = Vec::new();
    if !options.dry_run {
        for key in &run_reports_removed {
            store.delete(key).await?;
        }
        delete_backups(store, &removed, cancel).await?;
        for (_, folder) in &incomplete_removed {
            for object in &folder.objects {
                store.delete(&object.key).await?;
            }
        }
        abandoned_writes = store
            .collect_abandoned_writes(manifest::BACKUPS_PREFIX, options.incomplete_after)
            .await?;
    }
    failpoint::reach("prune.done", cancel).await?;
    Ok(PruneReport {
        dry_run: options.dry_run,
        kept,
        removed,
        incomplete_removed: incomplete_removed.into_iter().map(|(d, _)| d).collect(),
        incomplete_kept,
        unreadable: scan.unreadable,
        abandoned_writes,
        run_reports_removed,
    })
}

/// The reports of DR DAG runs written before the oldest backup kept finished: they belong to
/// the era of the backups retention removes. With no backup kept, or where the store cannot
/// date a report, reports stay (a failover may still be reading a fresh one).
async fn stale_run_reports(
    store: &dyn BackupStore,
    backups: &[manifest::Manifest],
    kept: &[String],
) -> Result<Vec<String>> {
    let Some(oldest_kept) = backups
        .iter()
        .filter(|m| kept.contains(&m.backup_id))
        .map(|m| m.finished_at)
        .min()
    else {
        return Ok(Vec::new());
    };
    Ok(runs::reports(store)
        .await?
        .into_iter()
        .filter(|(_, modified)| modified.is_some_and(|t| t < oldest_kept))
        .map(|(o, _)| o.key)
        .collect())
}

/// The ids kept and those removed, newest first: the `keep_last` newest and those younger
/// than `keep_within` are kept.
fn retention(
    options: &PruneOptions,
    backups: &[manifest::Manifest],
    now: DateTime<Utc>,
) -> (Vec<String>, Vec<String>) {
    let (mut kept, mut removed) = (Vec::new(), Vec::new());
    for (i, m) in backups.iter().rev().enumerate() {
        let recent = options.keep_within.is_some_and(|d| {
            now.signed_duration_since(m.finished_at)
                .to_std()
                .map(|age| age <= d)
                .unwrap_or(true)
        });
        if i < options.keep_last || recent {
            kept.push(m.backup_id.clone());
        } else {
            removed.push(m.backup_id.clone());
        }
    }
    (kept, removed)
}

/// Deletes whole backups, each manifest first.
async fn delete_backups(
    store: &dyn BackupStore,
    removed: &[String],
    cancel: &CancellationToken,
) -> Result<()> {
    for (n, id) in removed.iter().enumerate() {
        // Interrupted, stop between backups, never inside one.
        if cancel.is_cancelled() {
            return Err(Error::Interrupted);
        }
        // The manifest first: from then on the backup does not exist, whatever happens next.
        store.delete(&manifest::manifest_key(id)).await?;
        if n == 0 {
            failpoint::reach_then_finish("prune.manifest_deleted", cancel).await?;
        }
        for object in store.list(&manifest::object_key(id, "")).await? {
            store.delete(&object.key).await?;
        }
        if n == 0 {
            failpoint::reach("prune.backup_deleted", cancel).await?;
        }
    }
    Ok(())
}

/// The last write among a folder's objects, or `None` when the store cannot tell for one.
async fn newest_write(
    store: &dyn BackupStore,
    folder: &Incomplete,
) -> Result<Option<DateTime<Utc>>> {
    let mut newest: Option<DateTime<Utc>> = None;
    for object in &folder.objects {
        match store.modified(&object.key).await? {
            Some(t) => newest = Some(newest.map_or(t, |n| n.max(t))),
            None => return Ok(None),
        }
    }
    Ok(newest)
}

/// Why an incomplete backup is not collected yet, or `None` when it may be: both its start
/// (the id's time) and its last write must be older than `after`. The id alone is not enough
/// (a backup started long ago may still be writing) and neither is the write time alone (a
/// store may not know it); a folder whose name is no backup id is never touched.
fn too_young(
    id: &str,
    last_write: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    after: Duration,
) -> Option<String> {
    let Some(started) = manifest::backup_id_time(id) else {
        return Some("its name is not a backup id, so its age is unknown".into());
    };
    let older = |t: DateTime<Utc>| {
        now.signed_duration_since(t)
            .to_std()
            .is_ok_and(|age| age >= after)
    };
    let after_text = humantime::format_duration(after);
    if !older(started) {
        return Some(format!(
            "started less than {after_text} ago (it may still be running)"
        ));
    }
    match last_write {
        Some(t) if !older(t) => Some(format!(
            "last written less than {after_text} ago (it may still be running)"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(id: &str, at: DateTime<Utc>) -> manifest::Manifest {
        manifest::Manifest {
            format_version: manifest::FORMAT_VERSION,
            tool_version: "0".into(),
            backup_id: id.into(),
            started_at: at,
            finished_at: at,
            source: manifest::SourceInfo {
                database: "db:5432/airflow".into(),
                environment: None,
            },
            airflow_version: "2.10.3".into(),
            alembic_revision: "x".into(),
            fernet: None,
            filters: manifest::FilterInfo {
                inflight_states: Vec::new(),
                export_dag: "backup_metadata".into(),
            },
            tables: Vec::new(),
            active_dags: Vec::new(),
            absent_tables: Vec::new(),
            manifest_sha256: None,
        }
    }

    #[tokio::test]
    async fn run_reports_older_than_the_oldest_backup_kept_go_the_rest_stay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::local::LocalStore::new(dir.path().to_path_buf());
        let now = Utc::now();
        let days_ago = |d: i64| now - chrono::Duration::days(d);
        for (run, age) in [("old", 10), ("mid", 4), ("new", 0)] {
            let r = runs::DagRunRef::parse(&format!("backup_metadata/{run}")).expect("run");
            runs::save(&store, &r, &serde_json::json!({}))
                .await
                .expect("save");
            let file = std::fs::File::options()
                .write(true)
                .open(dir.path().join(runs::key(&r).expect("key")))
                .expect("open");
            let when = std::time::SystemTime::from(days_ago(age));
            file.set_modified(when).expect("mtime");
        }
        let backups = [
            finished("a", days_ago(12)),
            finished("b", days_ago(5)),
            finished("c", days_ago(1)),
        ];
        let kept = vec!["c".to_string(), "b".to_string()];
        let stale = stale_run_reports(&store, &backups, &kept)
            .await
            .expect("stale");
        assert_eq!(stale, vec!["runs/backup_metadata/old.json".to_string()]);
        // With no backup kept there is nothing to date them against: all stay.
        assert!(
            stale_run_reports(&store, &backups, &[])
                .await
                .expect("none")
                .is_empty()
        );
    }

    #[test]
    fn incomplete_backups_are_collected_only_when_start_and_last_write_are_old() {
        let now: DateTime<Utc> = "2026-11-27T12:00:00Z".parse().expect("time");
        let day = Duration::from_secs(86_400);
        let hours_ago = |h: i64| now - chrono::Duration::hours(h);
        let old_id = "20261125T120000.000Z-0001";
        let young_id = "20261127T110000.000Z-0002";
        // Old start, last write unknown or old: collected.
        assert_eq!(too_young(old_id, None, now, day), None);
        assert_eq!(too_young(old_id, Some(hours_ago(30)), now, day), None);
        // Old start but written an hour ago: a long backup still running.
        let why = too_young(old_id, Some(hours_ago(1)), now, day).expect("kept");
        assert!(why.contains("last written"), "{why}");
        // Young start, whatever the objects' times say.
        let why = too_young(young_id, Some(hours_ago(48)), now, day).expect("kept");
        assert!(why.contains("started"), "{why}");
        // An id from the future (clock skew) and a name that is not an id are kept.
        assert!(too_young("29991231T235959Z-dead", None, now, day).is_some());
        assert!(too_young("not-a-backup", None, now, day).is_some());
        // Ids without milliseconds (earlier builds) are dated too.
        assert_eq!(too_young("20261120T000000Z-ab12", None, now, day), None);
    }
}
