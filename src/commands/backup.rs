//! `mwaa-dr backup`: one snapshot of the metadata database into a new backup in the store.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::aws::sns::{Notifier, SnsNotifier, topic_region};
use crate::cli::BackupArgs;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::ops::backup::{self, BackupOptions, BackupReport, EnvironmentReport};
use crate::output;
use crate::store::manifest::{BACKUPS_PREFIX, backup_id_time};

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
    let outcome = super::recorded(
        config,
        "backup",
        args.task.token.as_deref(),
        backup_command(config, args, cancel),
    )
    .await;
    if let Err(error) = &outcome
        && let Some(topic) = &config.failover.sns_topic_arn
        && notifies_failure(config)
    {
        let (subject, message) = failure_notice(config, args, error);
        let region = topic_region(topic).or(config.primary.region.as_deref());
        let notifier = SnsNotifier::new(region, &config.aws_timeouts).await;
        match notifier.publish(topic, &subject, &message).await {
            Ok(()) => tracing::info!(topic = %topic, "published the backup's failure"),
            Err(e) => tracing::warn!("could not publish the backup's failure: {e}"),
        }
    }
    outcome
}

/// A failed backup notifies DR_SNS_TOPIC_ARN, as the original's backup DAG does, unless it
/// is a dry run or runs in a DAG run that `mwaa-dr` triggered from outside (that caller
/// fails and notifies itself). A successful backup notifies nobody, as in the original.
fn notifies_failure(config: &Config) -> bool {
    !config.dry_run
        && !config
            .deployment
            .dr_dag_run
            .as_ref()
            .is_some_and(|run| crate::ops::remote::triggered_by_mwaa_dr(&run.run_id))
}

/// The subject and JSON message of a failed backup's notification: what failed, the backup
/// id when it had one, the error's class and message, the environment.
fn failure_notice(config: &Config, args: &BackupArgs, error: &Error) -> (String, String) {
    let environment = config.primary.environment_name.as_deref();
    let what = if args.environment_only {
        "saving the environment definition"
    } else if !config.has_source_db() && environment.is_some() {
        "backup through the backup DAG"
    } else {
        "backup of the metadata database"
    };
    let message = error.to_string();
    let doc = serde_json::json!({
        "command": "backup",
        "status": "failed",
        "what": what,
        "environment": environment,
        "region": config.primary.region,
        "store": config.store.as_ref().map(ToString::to_string),
        "backup_id": backup_id_in(&message),
        "dag_run": config.deployment.dr_dag_run.as_ref().map(|r| format!("{}/{}", r.dag_id, r.run_id)),
        "error": {
            "class": error.kind(),
            "kind": error.code(),
            "message": message,
            "hint": error.hint(),
        },
        "at": chrono::Utc::now().to_rfc3339(),
    });
    let subject = format!(
        "mwaa-dr backup of {} FAILED",
        environment.unwrap_or("the metadata database")
    );
    let text = serde_json::to_string_pretty(&doc).unwrap_or_else(|_| doc.to_string());
    (subject, text)
}

/// The id of the backup an error names (`.../backups/<id>/...`), if any.
fn backup_id_in(message: &str) -> Option<&str> {
    message
        .split(BACKUPS_PREFIX)
        .skip(1)
        .filter_map(|rest| rest.split('/').next())
        .find(|id| backup_id_time(id).is_some())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backup_id_is_read_from_the_error() {
        assert_eq!(
            backup_id_in(
                "create s3://b/mwaa-dr/backups/20261202T121314.567Z-3f9a/dag_run.csv.zst: injected"
            ),
            Some("20261202T121314.567Z-3f9a")
        );
        assert_eq!(
            backup_id_in("connect postgres://u:***@db/airflow: refused"),
            None
        );
        assert_eq!(backup_id_in("list backups/: denied"), None);
    }

    #[test]
    fn runs_triggered_from_outside_leave_the_notice_to_their_caller() {
        use crate::ops::remote::{run_id, triggered_by_mwaa_dr};
        assert!(triggered_by_mwaa_dr(&run_id(
            chrono::Utc::now(),
            "backup-1",
            0
        )));
        assert!(!triggered_by_mwaa_dr(
            "scheduled__2026-12-02T12:00:00+00:00"
        ));
        assert!(!triggered_by_mwaa_dr("manual__2026-12-02T12:00:00+00:00"));
    }
}
