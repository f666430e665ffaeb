//! `mwaa-dr restore --from-legacy`: restore a backup written by the original Python mwaa-dr
//! library (see [`crate::ops::restore_legacy`]).

use tokio_util::sync::CancellationToken;

use super::Need;
use crate::airflow::fernet::side_keys;
use crate::cli::RestoreArgs;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::legacy::LegacyFormat;
use crate::ops::restore_legacy::{
    COMMAND, LegacyRestoreOptions, LegacyRestoreSummary, restore_legacy,
};
use crate::output;
use crate::store::{ACCEPTED_LOCATIONS, StoreLocation};

/// `location` is the value of `--from-legacy`: empty for the configured store.
pub async fn run(
    config: &Config,
    args: &RestoreArgs,
    location: &str,
    cancel: &CancellationToken,
) -> Result<()> {
    let version = args
        .airflow_version
        .clone()
        .or_else(|| config.mwaa_version.clone())
        .ok_or_else(|| Error::MissingValue {
            variable: "MWAA_VERSION".into(),
            command: COMMAND.into(),
            purpose: "the Airflow version of the environment that wrote the legacy backup, which its files do not record (or pass --airflow-version)".into(),
        })?;
    let format = LegacyFormat::for_version(&version)?;
    let location = legacy_location(config, location)?;
    let prefix = args
        .legacy_prefix
        .clone()
        .unwrap_or_else(|| format.default_prefix.clone())
        .trim_matches('/')
        .to_string();
    let mut services = super::services(config, "restore", &[Need::Target]).await?;
    services.store = Some(std::sync::Arc::from(
        super::open_store(&location, config).await?,
    ));
    let confirm = |question: &str| super::confirm(config, question);
    let target_keys = || {
        side_keys(
            config.fernet_key(&config.secondary)?.as_ref(),
            "SECONDARY_FERNET_KEY",
        )
    };
    let options = LegacyRestoreOptions {
        format,
        prefix,
        clean: args.clean,
        dry_run: config.dry_run,
        variable_strategy: config.variable_strategy,
        connection_strategy: config.connection_strategy,
        target_keys: &target_keys,
        allow_unencrypted_secrets: args.allow_unencrypted_secrets,
        export_dag: config.deployment.export_dag_name.clone(),
        catalogs: config.catalogs(),
        confirm: Some(&confirm),
    };
    let progress = super::BarOnFirstUse::new("restore", config.quiet);
    let summary = restore_legacy(&options, &services, &progress, cancel).await?;
    if summary.dry_run {
        output::emit(config.output, &summary, || render_plan(&summary, &options));
    } else {
        output::emit(config.output, &summary, || render(&summary));
    }
    Ok(())
}

/// `--from-legacy`'s store: its value, else the configured store.
fn legacy_location(config: &Config, location: &str) -> Result<StoreLocation> {
    if location.trim().is_empty() {
        return Ok(config.store(COMMAND)?.clone());
    }
    location.parse().map_err(|problem| Error::InvalidValue {
        variable: "--from-legacy".into(),
        value: location.into(),
        problem,
        accepted: ACCEPTED_LOCATIONS.into(),
    })
}

fn render_plan(summary: &LegacyRestoreSummary, options: &LegacyRestoreOptions<'_>) -> String {
    let list = summary
        .files
        .iter()
        .flatten()
        .map(|f| format!("  {:<32} {:>12}", f.file, output::bytes(f.bytes)))
        .collect::<Vec<_>>()
        .join("\n");
    format!(
        "dry run: would restore the legacy backup at {} (Airflow {} files, the original's {} format) into {}{}; variables {:?}, connections {:?}; {}; {} active DAGs to unpause:\n{list}",
        summary.source,
        summary.airflow_version,
        options.format.factory,
        summary.target,
        if options.clean {
            " after cleaning it"
        } else {
            ""
        },
        options.variable_strategy,
        options.connection_strategy,
        summary.secrets.summary(),
        summary.active_dags
    )
}

fn render(summary: &LegacyRestoreSummary) -> String {
    let Some(report) = &summary.report else {
        return String::new();
    };
    let seconds = summary.seconds;
    let rows: u64 = report.loaded.iter().map(|t| t.rows).sum();
    let mut text = format!(
        "restored the legacy backup at {} (Airflow {} files) into {}: {} tables, {rows} rows in {seconds:.1} s; {} DAGs unpaused",
        summary.source,
        summary.airflow_version,
        summary.target,
        report.loaded.len(),
        report.unpaused.len()
    );
    for dropped in &report.dropped {
        text.push_str(&format!(
            "\nleft out {} {} rows: {}",
            dropped.rows, dropped.table, dropped.reason
        ));
    }
    for (column, n) in &report.cleared_json {
        text.push_str(&format!(
            "\n{column}: set to NULL in {n} rows, where it was not a Python literal of JSON values"
        ));
    }
    if !report.missing_dags.is_empty() {
        text.push_str(&format!(
            "\nactive in the source but not yet known to the target (unpause them once parsed): {}",
            report.missing_dags.join(", ")
        ));
    }
    text.push('\n');
    text.push_str(summary.secrets.summary());
    if !report.encrypted.is_empty() {
        let counts = report
            .encrypted
            .iter()
            .map(|(column, n)| format!("{column} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        text.push_str(&format!(": {counts}"));
    }
    text
}
