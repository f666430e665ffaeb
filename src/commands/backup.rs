//! `mwaa-dr backup`: one snapshot of the metadata database into a new backup in the store.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::cli::BackupArgs;
use crate::config::Config;
use crate::error::Result;
use crate::ops::backup::{self, BackupOptions, BackupReport, EnvironmentReport};
use crate::output;

/// The options, but the store's name (filled in once the options are known to be valid).
fn options(config: &Config, args: &BackupArgs) -> BackupOptions {
    BackupOptions {
        airflow_version: args.airflow_version.clone(),
        mwaa_version: config.mwaa_version.clone(),
        catalogs: config.catalogs(),
        export_dag: config.deployment.export_dag_name.clone(),
        jobs: usize::from(config.backup_jobs),
        dry_run: config.dry_run,
        store_location: String::new(),
        environment: config.primary.environment_name.clone(),
        source_keys: None,
        backup_key: config.backup_key.clone(),
    }
}

async fn environment_only(config: &Config) -> Result<Option<serde_json::Value>> {
    let name = config.require(
        &config.primary.environment_name,
        "PRIMARY_MWAA_ENVIRONMENT_NAME",
        "backup --environment-only",
        "the environment whose definition is saved",
    )?;
    let location = config.store("backup")?;
    if config.dry_run {
        return Ok(super::emitted(
            config,
            &serde_json::json!({"dry_run": true, "environment": name}),
            || format!("dry run: would save the definition of {name} into {location}"),
        ));
    }
    let services = super::services(
        config,
        "backup",
        &[super::Need::Store, super::Need::PrimaryMwaa],
    )
    .await?;
    let key = backup::save_environment(&services, name).await?;
    let doc = EnvironmentReport {
        environment: name.to_string(),
        saved: Some(key.clone()),
        error: None,
    };
    let store = services.store()?;
    Ok(super::emitted(config, &doc, || {
        format!(
            "saved the definition of {name} as {}/{key}",
            store.describe()
        )
    }))
}

pub async fn run(config: &Config, args: &BackupArgs, cancel: &CancellationToken) -> Result<()> {
    super::recorded(
        config,
        "backup",
        args.task.token.as_deref(),
        backup_command(config, args, cancel),
    )
    .await
}

async fn backup_command(
    config: &Config,
    args: &BackupArgs,
    cancel: &CancellationToken,
) -> Result<Option<serde_json::Value>> {
    if args.environment_only {
        return environment_only(config).await;
    }
    if !config.has_source_db()
        && let Some(environment) = &config.primary.environment_name
    {
        return super::remote::run_remote(
            config,
            "backup",
            environment,
            config.primary.region.as_deref(),
            &config.deployment.export_dag_name,
            serde_json::Map::new(),
            cancel,
        )
        .await;
    }
    let mut options = options(config, args);
    // A bad --airflow-version is named before a missing store or database.
    options.validate()?;
    options.store_location = config.store("backup")?.to_string();
    let mut needs = vec![super::Need::Store, super::Need::Source];
    if config.dry_run {
        // A dry run writes nothing: the store is named, not opened.
        needs.remove(0);
    } else if options.environment.is_some() {
        needs.push(super::Need::PrimaryMwaa);
    }
    let mut services = super::services(config, "backup", &needs).await?;
    if !config.dry_run {
        options.source_keys = super::source_keys(config)?;
        services.kms = Some(super::kms(config, config.primary.region.as_deref()));
    }
    let progress: Arc<dyn crate::progress::Progress> = if config.dry_run {
        Arc::new(crate::progress::Silent)
    } else {
        Arc::from(crate::progress::for_terminal("backup", config.quiet))
    };
    let report = backup::backup(&options, &services, &progress, cancel).await?;
    Ok(super::emitted(config, &report, || render(&report)))
}

fn render(report: &BackupReport) -> String {
    let BackupReport {
        backup_id,
        airflow_version: version,
        store,
        ..
    } = report;
    if report.dry_run {
        let text = report
            .planned
            .iter()
            .map(|t| {
                format!(
                    "{}  ({} columns){}",
                    t.name,
                    t.columns,
                    t.filter
                        .as_ref()
                        .map(|f| format!("  WHERE {f}"))
                        .unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        return format!(
            "dry run: would back up Airflow {version} ({} tables) into {store} as {backup_id}:\n{text}",
            report.tables
        );
    }
    let mut text = format!(
        "backup {backup_id}: Airflow {version}, {} tables, {} rows, {} stored in {store} ({:.1} s)",
        report.tables,
        report.rows,
        output::bytes(report.stored_bytes),
        report.seconds
    );
    match &report.environment {
        Some(EnvironmentReport {
            environment,
            saved: Some(key),
            ..
        }) => {
            text.push_str(&format!("\nsaved the definition of {environment} as {key}"));
        }
        Some(EnvironmentReport {
            environment,
            error: Some(e),
            ..
        }) => {
            text.push_str(&format!(
                "\nWARNING: the definition of {environment} was not saved: {e}"
            ));
        }
        _ => {}
    }
    text
}
