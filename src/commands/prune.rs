//! `mwaa-dr prune`: apply retention (manifests go first, then their objects), and collect
//! the objects of backups that never got a manifest once they are old enough.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use tokio_util::sync::CancellationToken;

use super::open_store;
use crate::cli::PruneArgs;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::failpoint;
use crate::output::{self, escape_control};
use crate::store::BackupStore;
use crate::store::manifest::{self, Incomplete, Unreadable};

/// Below this, `--incomplete-after` could collect a backup still being written.
const MIN_INCOMPLETE_AFTER: Duration = Duration::from_secs(3600);

#[derive(Serialize)]
struct PruneDoc {
    dry_run: bool,
    kept: Vec<String>,
    removed: Vec<String>,
    /// Folders without a manifest deleted (or, in a dry run, to be deleted).
    incomplete_removed: Vec<IncompleteDoc>,
    /// Folders without a manifest left alone, and why.
    incomplete_kept: Vec<IncompleteDoc>,
    /// Backups whose manifest cannot be read: never deleted.
    unreadable: Vec<Unreadable>,
}

#[derive(Serialize)]
struct IncompleteDoc {
    backup_id: String,
    objects: usize,
    stored_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    kept_because: Option<String>,
}

pub async fn run(config: &Config, args: &PruneArgs, cancel: &CancellationToken) -> Result<()> {
    let keep_within = args
        .keep_within
        .as_deref()
        .map(|raw| parse_duration(raw, "--keep-within"))
        .transpose()?;
    let incomplete_after = incomplete_after(&args.incomplete_after)?;
    let store = open_store(config.store("prune")?, config).await?;
    let store = store.as_ref();
    let work = async {
        failpoint::reach("prune.locked", cancel).await?;
        // Read under the lock: a backup that commits meanwhile is not taken for incomplete.
        let scan = manifest::scan(store).await?;
        let mut manifests = scan.backups;
        manifests.reverse(); // newest first
        let now = Utc::now();
        let (mut kept, mut removed) = (Vec::new(), Vec::new());
        for (i, m) in manifests.iter().enumerate() {
            let recent = keep_within.is_some_and(|d| {
                now.signed_duration_since(m.finished_at)
                    .to_std()
                    .map(|age| age <= d)
                    .unwrap_or(true)
            });
            if i < args.keep_last || recent {
                kept.push(m.backup_id.clone());
            } else {
                removed.push(m.backup_id.clone());
            }
        }
        let (mut incomplete_removed, mut incomplete_kept) = (Vec::new(), Vec::new());
        for folder in &scan.incomplete {
            let newest = newest_write(store, folder).await?;
            let kept_because = too_young(&folder.backup_id, newest, now, incomplete_after);
            let doc = IncompleteDoc {
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
        if !config.dry_run {
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
            for (_, folder) in &incomplete_removed {
                for object in &folder.objects {
                    store.delete(&object.key).await?;
                }
            }
        }
        failpoint::reach("prune.done", cancel).await?;
        Ok(PruneDoc {
            dry_run: config.dry_run,
            kept,
            removed,
            incomplete_removed: incomplete_removed.into_iter().map(|(d, _)| d).collect(),
            incomplete_kept,
            unreadable: scan.unreadable,
        })
    };
    let doc = if config.dry_run {
        work.await?
    } else {
        super::with_store_lock(store, true, "prune", work).await?
    };
    super::list::warn_unreadable(&doc.unreadable, "kept (prune never deletes it)");
    output::emit(config.output, &doc, || render(&doc, config.dry_run));
    Ok(())
}

fn render(doc: &PruneDoc, dry_run: bool) -> String {
    let verb = if dry_run { "would remove" } else { "removed" };
    let mut text = format!(
        "{verb} {} backups, kept {}",
        doc.removed.len(),
        doc.kept.len()
    );
    for id in &doc.removed {
        text.push_str(&format!("\n  {verb}: {}", escape_control(id)));
    }
    for d in &doc.incomplete_removed {
        text.push_str(&format!(
            "\n  {verb} incomplete backup (no manifest): {}, {} objects, {}",
            escape_control(&d.backup_id),
            d.objects,
            output::bytes(d.stored_bytes)
        ));
    }
    for d in &doc.incomplete_kept {
        text.push_str(&format!(
            "\n  kept incomplete backup (no manifest): {}: {}",
            escape_control(&d.backup_id),
            d.kept_because.as_deref().unwrap_or_default()
        ));
    }
    for u in &doc.unreadable {
        text.push_str(&format!(
            "\n  kept unreadable backup: {}",
            escape_control(&u.backup_id)
        ));
    }
    text
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
    let after_text = humantime(after);
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

fn humantime(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// `--incomplete-after` / `DR_PRUNE_INCOMPLETE_AFTER`: a duration of at least an hour.
fn incomplete_after(raw: &str) -> Result<Duration> {
    let invalid = |problem: String| Error::InvalidValue {
        variable: "--incomplete-after (DR_PRUNE_INCOMPLETE_AFTER)".into(),
        value: raw.to_string(),
        problem,
        accepted:
            "a duration of at least 1h: a number with a unit s, m, h, d or w, e.g. 24h, 2d, 1d12h"
                .into(),
    };
    let d = parse_duration(raw, "--incomplete-after").map_err(|e| invalid(e.to_string()))?;
    if d < MIN_INCOMPLETE_AFTER {
        return Err(invalid(
            "shorter than 1h, it could delete a backup that is still being written".into(),
        ));
    }
    Ok(d)
}

/// `36h`, `7d`, `2w`, `1d12h`, `90m`, `30s`.
pub fn parse_duration(raw: &str, flag: &str) -> Result<Duration> {
    let bad = || Error::Usage {
        message: format!(
            "{flag} {raw:?} is not a duration; accepted: a number with a unit s, m, h, d or w, e.g. 36h, 7d, 2w, 1d12h"
        ),
    };
    let mut total = 0u64;
    let mut number = String::new();
    for c in raw.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().map_err(|_| bad())?;
        number.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(bad()),
        };
        total = total
            .checked_add(n.checked_mul(unit).ok_or_else(bad)?)
            .ok_or_else(bad)?;
    }
    if !number.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("36h", "--keep-within").ok(),
            Some(Duration::from_secs(36 * 3600))
        );
        assert_eq!(
            parse_duration("1d12h", "--keep-within").ok(),
            Some(Duration::from_secs(36 * 3600))
        );
        assert_eq!(
            parse_duration("2w", "--keep-within").ok(),
            Some(Duration::from_secs(14 * 86_400))
        );
        for bad in ["", "7", "h", "7y", "-1d"] {
            assert!(parse_duration(bad, "--keep-within").is_err(), "{bad}");
        }
    }

    #[test]
    fn incomplete_after_is_validated() {
        assert_eq!(
            incomplete_after("24h").ok(),
            Some(Duration::from_secs(86_400))
        );
        let err = incomplete_after("30m").expect_err("too short").to_string();
        assert!(err.contains("DR_PRUNE_INCOMPLETE_AFTER"), "{err}");
        assert!(err.contains("at least 1h"), "{err}");
        let err = incomplete_after("soon")
            .expect_err("not a duration")
            .to_string();
        assert!(err.contains("--incomplete-after"), "{err}");
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
