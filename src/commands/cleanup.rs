//! `mwaa-dr cleanup`: empty the restorable tables of a (standby) database in one transaction.

use tokio_util::sync::CancellationToken;

use super::Need;
use crate::cli::CleanupArgs;
use crate::config::Config;
use crate::error::Result;
use crate::ops::cleanup::{CleanupOptions, CleanupReport, cleanup};
use crate::output;

pub async fn run(config: &Config, args: &CleanupArgs, cancel: &CancellationToken) -> Result<()> {
    super::recorded(
        config,
        "cleanup",
        args.task.token.as_deref(),
        cleanup_command(config, args, cancel),
    )
    .await
}

async fn cleanup_command(
    config: &Config,
    args: &CleanupArgs,
    cancel: &CancellationToken,
) -> Result<Option<serde_json::Value>> {
    if let Some(environment) = super::remote::remote_environment(config, args.environment.as_ref())
    {
        return super::remote::run_remote(
            config,
            "cleanup",
            &environment,
            super::remote::region_of(config, &environment),
            &config.deployment.cleanup_dag_name,
            serde_json::Map::new(),
            cancel,
        )
        .await;
    }
    let services = super::services(config, "cleanup", &[Need::Target]).await?;
    let confirm = |question: &str| super::confirm(config, question);
    let options = CleanupOptions {
        catalogs: config.catalogs(),
        mwaa_version: config.mwaa_version.clone(),
        dry_run: config.dry_run,
        confirm: Some(&confirm),
    };
    let progress = crate::progress::Silent;
    let report = cleanup(&options, &services, &progress, cancel).await?;
    Ok(super::emitted(config, &report, || render(&report)))
}

fn render(report: &CleanupReport) -> String {
    let verb = if report.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    let rows: Vec<Vec<String>> = report
        .tables
        .iter()
        .map(|c| vec![c.table.clone(), c.rows.to_string()])
        .collect();
    format!(
        "{} {verb}:\n{}",
        report.target,
        output::table(&["TABLE", "ROWS"], &rows)
    )
}
