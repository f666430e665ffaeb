//! `mwaa-dr prune`: apply retention and collect incomplete backups (see [`crate::ops::prune`]).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Need;
use crate::cli::PruneArgs;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::ops::prune::{PruneOptions, PruneReport, prune};
use crate::output::{self, escape_control};

/// Below this, `--incomplete-after` could collect a backup still being written.
const MIN_INCOMPLETE_AFTER: Duration = Duration::from_secs(3600);

pub async fn run(config: &Config, args: &PruneArgs, cancel: &CancellationToken) -> Result<()> {
    let options = PruneOptions {
        keep_last: args.keep_last,
        keep_within: args
            .keep_within
            .as_deref()
            .map(|raw| parse_duration(raw, "--keep-within"))
            .transpose()?,
        incomplete_after: incomplete_after(&args.incomplete_after)?,
        dry_run: config.dry_run,
    };
    let services = super::services(config, "prune", &[Need::Store]).await?;
    let progress = crate::progress::Silent;
    let report = prune(&options, &services, &progress, cancel).await?;
    output::emit(config.output, &report, || render(&report, config.dry_run));
    Ok(())
}

fn render(doc: &PruneReport, dry_run: bool) -> String {
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
    for w in &doc.abandoned_writes {
        text.push_str(&format!(
            "\n  removed an abandoned partial write: {}",
            escape_control(w)
        ));
    }
    for key in &doc.run_reports_removed {
        text.push_str(&format!(
            "\n  {verb} the report of a DR DAG run older than the backups kept: {}",
            escape_control(key)
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

/// `36h`, `7d`, `2w`, `1d12h`, `1d 12h`, `90m`, `30s` (humantime's units).
pub fn parse_duration(raw: &str, flag: &str) -> Result<Duration> {
    match humantime::parse_duration(raw.trim()) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(Error::Usage {
            message: format!("{flag} {raw:?} is zero; give a positive duration, e.g. 36h, 7d, 2w"),
        }),
        Err(e) => Err(Error::Usage {
            message: format!(
                "{flag} {raw:?} is not a duration ({e}); accepted: numbers with a unit s, m, h, d, w, M (months) or y, e.g. 36h, 7d, 2w, 1d12h"
            ),
        }),
    }
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
        for bad in ["", "7", "h", "7x", "-1d", "0s"] {
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
}
