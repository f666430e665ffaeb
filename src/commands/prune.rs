//! `mwaa-dr prune`: apply retention; manifests go first, then their objects.

use std::time::Duration;

use chrono::Utc;
use serde::Serialize;

use crate::cli::PruneArgs;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::output;
use crate::store::{manifest, open_store};

#[derive(Serialize)]
struct PruneDoc {
    dry_run: bool,
    kept: Vec<String>,
    removed: Vec<String>,
}

pub async fn run(config: &Config, args: &PruneArgs) -> Result<()> {
    let keep_within = args
        .keep_within
        .as_deref()
        .map(parse_duration)
        .transpose()?;
    let store = open_store(config.store("prune")?, config).await?;
    let mut manifests = manifest::list(store.as_ref()).await?;
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
    if !config.dry_run {
        super::with_store_lock(store.as_ref(), true, "prune", async {
            for id in &removed {
                // The manifest first: from then on the backup does not exist, whatever happens next.
                store.delete(&manifest::manifest_key(id)).await?;
                for object in store.list(&manifest::object_key(id, "")).await? {
                    store.delete(&object.key).await?;
                }
            }
            Ok(())
        })
        .await?;
    }
    let doc = PruneDoc {
        dry_run: config.dry_run,
        kept,
        removed,
    };
    output::emit(config.output, &doc, || {
        let verb = if config.dry_run {
            "would remove"
        } else {
            "removed"
        };
        let mut text = format!(
            "{verb} {} backups, kept {}",
            doc.removed.len(),
            doc.kept.len()
        );
        for id in &doc.removed {
            text.push_str(&format!("\n  {verb}: {id}"));
        }
        text
    });
    Ok(())
}

/// `36h`, `7d`, `2w`, `1d12h`, `90m`, `30s`.
pub fn parse_duration(raw: &str) -> Result<Duration> {
    let bad = || Error::Usage {
        message: format!(
            "--keep-within {raw:?} is not a duration; accepted: a number with a unit s, m, h, d or w, e.g. 36h, 7d, 2w, 1d12h"
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
            parse_duration("36h").ok(),
            Some(Duration::from_secs(36 * 3600))
        );
        assert_eq!(
            parse_duration("1d12h").ok(),
            Some(Duration::from_secs(36 * 3600))
        );
        assert_eq!(
            parse_duration("2w").ok(),
            Some(Duration::from_secs(14 * 86_400))
        );
        for bad in ["", "7", "h", "7y", "-1d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
