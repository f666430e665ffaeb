//! `mwaa-dr restore`: verify a backup, then load it into the target in one transaction.

use tokio_util::sync::CancellationToken;

use super::Need;
use crate::airflow::fernet::FernetMode;
use crate::cli::RestoreArgs;
use crate::config::Config;
use crate::error::Result;
use crate::ops::restore::{RestoreOptions, RestoreSummary, restore};

pub async fn run(config: &Config, args: &RestoreArgs, cancel: &CancellationToken) -> Result<()> {
    super::recorded(
        config,
        "restore",
        args.task.token.as_deref(),
        restore_command(config, args, cancel),
    )
    .await
}

async fn restore_command(
    config: &Config,
    args: &RestoreArgs,
    cancel: &CancellationToken,
) -> Result<Option<serde_json::Value>> {
    if let Some(location) = &args.from_legacy {
        return super::restore_legacy::run(config, args, location, cancel)
            .await
            .map(|()| None);
    }
    if let Some(environment) = super::remote::remote_environment(config, args.environment.as_ref())
    {
        return super::remote::run_remote(
            config,
            "restore",
            &environment,
            super::remote::region_of(config, &environment),
            &config.deployment.import_dag_name,
            super::remote::restore_conf(config, args.backup_id.as_deref(), args.clean),
            cancel,
        )
        .await;
    }
    let mut services = super::services(config, "restore", &[Need::Store, Need::Target]).await?;
    services.kms = Some(super::kms(config, config.secondary.region.as_deref()));
    let confirm = |question: &str| super::confirm(config, question);
    let options = RestoreOptions {
        backup_id: args.backup_id.clone(),
        clean: args.clean,
        dry_run: config.dry_run,
        variable_strategy: config.variable_strategy,
        connection_strategy: config.connection_strategy,
        fernet: super::fernet_keyring(config)?,
        catalogs: config.catalogs(),
        confirm: Some(&confirm),
        jobs: usize::from(config.backup_jobs),
    };
    let progress = super::BarOnFirstUse::new("restore", config.quiet);
    let summary = restore(&options, &services, &progress, cancel).await?;
    Ok(if summary.dry_run {
        super::emitted(config, &summary, || render_plan(&summary, &options))
    } else {
        super::emitted(config, &summary, || render(&summary))
    })
}

fn render_plan(summary: &RestoreSummary, options: &RestoreOptions<'_>) -> String {
    let fernet = summary.fernet.unwrap_or(FernetMode::CopiedNoKeys);
    let manifest = &summary.manifest;
    let tables = manifest
        .tables
        .iter()
        .map(|t| format!("  {:<32} {:>10} rows", t.name, t.rows))
        .collect::<Vec<_>>()
        .join("\n");
    format!(
        "dry run: would restore backup {} (Airflow {}) into {}{}; variables {:?}, connections {:?}; {}:\n{tables}",
        manifest.backup_id,
        manifest.airflow_version,
        summary.target,
        if options.clean {
            " after cleaning it"
        } else {
            ""
        },
        options.variable_strategy,
        options.connection_strategy,
        fernet.planned()
    )
}

fn render(summary: &RestoreSummary) -> String {
    let Some(report) = &summary.report else {
        return String::new();
    };
    let seconds = summary.seconds;
    let rows: u64 = report.loaded.iter().map(|t| t.rows).sum();
    let mut text = format!(
        "restored backup {} into {}: {} tables, {rows} rows in {seconds:.1} s; {} DAGs unpaused",
        summary.backup_id,
        summary.target,
        report.loaded.len(),
        report.unpaused.len()
    );
    text.push_str(&format!(
        "\nthe target's tables were locked for {:.2} s (the transaction)",
        report.lock_window_seconds
    ));
    if !report.switched.is_empty() {
        text.push_str(&format!(
            "; before it, {} tables were loaded into shadow tables over {} connections in {:.1} s and then switched in: {}",
            report.switched.len(),
            report.jobs,
            report.shadow_load_seconds,
            report.switched.join(", ")
        ));
        text.push_str(&format!(
            "; their foreign keys were validated after the commit in {:.1} s",
            report.validate_seconds
        ));
    }
    if !report.foreign_keys_not_validated.is_empty() {
        text.push_str(&format!(
            "\nwarning: foreign keys left NOT VALID (enforced for new rows; the restored rows do not satisfy them): {}",
            report.foreign_keys_not_validated.join("; ")
        ));
    }
    if !report.missing_dags.is_empty() {
        text.push_str(&format!(
            "\nactive in the source but not yet known to the target (unpause them once parsed): {}",
            report.missing_dags.join(", ")
        ));
    }
    text.push('\n');
    text.push_str(&report.fernet.summary());
    if report.fernet == FernetMode::Reencrypted {
        let counts = report
            .rekeyed
            .iter()
            .map(|(column, n)| format!("{column} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        text.push_str(&format!(": {counts}"));
    }
    if let Some(key) = &summary.fernet_key {
        text.push_str(&format!(
            "\nthe backup's secrets are under the key of fingerprint {} ({}), obtained from {}",
            key.fingerprint,
            key.kind.as_str(),
            key.obtained_from
        ));
    }
    if !report.renumbered_jobs.is_empty() {
        text.push_str(&format!(
            "\n{} restored job ids collided with the target's running jobs and were renumbered",
            report.renumbered_jobs.len()
        ));
    }
    if !report.renumbered_dag_runs.is_empty() {
        text.push_str(&format!(
            "\n{} restored dag_run ids collided with the DR DAGs' kept runs and were renumbered",
            report.renumbered_dag_runs.len()
        ));
    }
    text
}
