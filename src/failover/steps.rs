//! What each step of the failover does: one function per [`StepKind`], each idempotent, each
//! returning a one-line account of what it did.

use std::time::{Duration, Instant};

use tracing::warn;

use super::{RestoreStep, Services, StepKind, Targets, secondary_definition};
use crate::aws::mwaa::EnvironmentDefinition;
use crate::aws::schedule::Disabled;
use crate::error::{Error, Result};
use crate::health;
use crate::model::EnvironmentStatus;
use crate::store::environments;

/// Runs `step` once.
pub async fn run(
    step: StepKind,
    targets: &Targets,
    services: &Services,
    restore: &dyn RestoreStep,
) -> Result<String> {
    match step {
        StepKind::ConfirmPrimaryUnhealthy => confirm_primary_unhealthy(targets, services).await,
        StepKind::DisableHealthCheck => disable_health_check(targets, services).await,
        StepKind::CreateSecondaryEnvironment => create_secondary(targets, services).await,
        StepKind::WaitSecondaryAvailable => wait_available(targets, services).await,
        StepKind::ConfirmSecondaryAvailable => confirm_secondary_available(targets, services).await,
        StepKind::RestoreLatestBackup => restore.restore_latest().await,
        StepKind::Notify => notify_success(targets, services).await,
    }
}

async fn confirm_primary_unhealthy(targets: &Targets, services: &Services) -> Result<String> {
    let report = health::check(
        &targets.primary,
        &targets.health,
        services.primary_mwaa.as_ref(),
        services.heartbeat.as_ref(),
        &services.clock,
    )
    .await?;
    match (report.healthy, targets.force) {
        (false, _) => Ok(format!("unhealthy: {}", report.evidence())),
        (true, true) => Ok(format!(
            "healthy ({}), failing over anyway: --force",
            report.evidence()
        )),
        (true, false) => Err(Error::refused(
            "fail over",
            &targets.primary,
            format!(
                "the primary is healthy ({}); nothing was changed",
                report.evidence()
            ),
            "pass --force to fail over anyway, or --simulate-dr (MWAA_SIMULATE_DR=YES) for a drill",
        )),
    }
}

async fn disable_health_check(targets: &Targets, services: &Services) -> Result<String> {
    match &targets.schedule {
        None => Ok("no schedule configured".into()),
        Some(name) => match services.schedules.disable(name).await? {
            Disabled::Now => Ok(format!("{name} disabled")),
            Disabled::Already => Ok(format!("{name} was already disabled")),
        },
    }
}

async fn create_secondary(targets: &Targets, services: &Services) -> Result<String> {
    // Idempotent: an environment that exists already (a previous attempt's) is not created again.
    if let Some(existing) = services
        .secondary_mwaa
        .get_environment(&targets.secondary)
        .await?
    {
        return match existing.status {
            Some(EnvironmentStatus::CreateFailed) => Err(Error::failed(
                "create the secondary",
                &targets.secondary,
                "an environment of this name exists in CREATE_FAILED; delete it, then run failover again",
            )),
            status => Ok(format!(
                "{} exists already ({}); not created again",
                targets.secondary,
                status.as_ref().map_or("", EnvironmentStatus::as_str)
            )),
        };
    }
    let original = environments::OriginalFile {
        root: services.original_root.as_ref(),
        file: &targets.original_file,
    };
    let saved =
        environments::latest_or_original(services.store.as_ref(), &original, &targets.primary)
            .await?;
    let source = if saved.original {
        format!(
            "{} (saved by the original solution's workflow; MWAA_BACKUP_FILE_NAME)",
            saved.source
        )
    } else {
        saved.source
    };
    let definition = secondary_definition(
        &saved.definition,
        &targets.new_environment,
        &targets.secondary,
    );
    let notes = kms_region_note(&definition, targets.secondary_region.as_deref());
    let arn = services
        .secondary_mwaa
        .create_environment(&definition)
        .await?;
    // Sent, not yet recorded: a run stopped here finds the environment on its rerun.
    crate::failpoint::reach_raced("failover.create_sent").await?;
    Ok(format!(
        "CreateEnvironment accepted from {source}: {arn}{notes}"
    ))
}

/// A KmsKey ARN of another region than the secondary's is likely refused by CreateEnvironment;
/// say so up front, since its refusal comes only after a long wait.
fn kms_region_note(definition: &EnvironmentDefinition, region: Option<&str>) -> String {
    if let (Some(kms), Some(region)) = (&definition.kms_key, region)
        && kms.starts_with("arn:")
        && !kms.contains(&format!(":{region}:"))
    {
        warn!(kms_key = %kms, region = %region, "the saved KmsKey belongs to another region; CreateEnvironment may refuse it (use a multi-Region key or a key of the secondary region)");
        return format!("; warning: KmsKey {kms} is not in {region}");
    }
    String::new()
}

async fn wait_available(targets: &Targets, services: &Services) -> Result<String> {
    let started = Instant::now();
    let timeout = targets.timeout;
    let interval = targets
        .create_env_polling_interval
        .max(Duration::from_millis(100));
    loop {
        let env = services
            .secondary_mwaa
            .get_environment(&targets.secondary)
            .await?;
        let status = env.as_ref().and_then(|e| e.status.clone());
        // An environment that vanished will not become AVAILABLE either.
        let shown = status
            .as_ref()
            .map_or("missing", EnvironmentStatus::as_str)
            .to_string();
        match &status {
            Some(EnvironmentStatus::Available) => {
                return Ok(format!(
                    "{} AVAILABLE after {:.0} s",
                    targets.secondary,
                    started.elapsed().as_secs_f64()
                ));
            }
            Some(s) if !s.is_terminal_failure() => {}
            _ => {
                let detail = env
                    .and_then(|e| e.last_error)
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default();
                return Err(Error::failed(
                    "wait for the secondary",
                    &targets.secondary,
                    format!("status {shown}{detail}"),
                ));
            }
        }
        if started.elapsed() + interval > timeout {
            return Err(Error::failed(
                "wait for the secondary",
                &targets.secondary,
                format!(
                    "still {shown} after {:.0} s (STATE_MACHINE_TIMEOUT_MINS); run failover again to keep waiting",
                    started.elapsed().as_secs_f64()
                ),
            ));
        }
        tokio::time::sleep(interval).await;
    }
}

async fn confirm_secondary_available(targets: &Targets, services: &Services) -> Result<String> {
    match services
        .secondary_mwaa
        .get_environment(&targets.secondary)
        .await?
    {
        Some(env) if env.status == Some(EnvironmentStatus::Available) => {
            Ok(format!("{} is AVAILABLE", targets.secondary))
        }
        Some(env) => Err(Error::failed(
            "confirm the secondary",
            &targets.secondary,
            format!(
                "its status is {}, not AVAILABLE",
                env.status.as_ref().map_or("", EnvironmentStatus::as_str)
            ),
        )),
        None => Err(Error::failed(
            "confirm the secondary",
            &targets.secondary,
            "no such environment in the secondary region",
        )),
    }
}

async fn notify_success(targets: &Targets, services: &Services) -> Result<String> {
    let Some(topic) = &targets.sns_topic else {
        return Ok("no topic configured".into());
    };
    let message = format!(
        "mwaa-dr failover of {} to {} ({:?}) succeeded: the secondary holds the latest backup and the DAGs active in the primary are unpaused.",
        targets.primary, targets.secondary, targets.dr_type
    );
    services
        .notifier
        .publish(
            topic,
            &format!("mwaa-dr failover to {} succeeded", targets.secondary),
            &message,
        )
        .await?;
    Ok(format!("published to {topic}"))
}

/// Tells the SNS topic that the failover stopped at `step`; a failure to publish is only
/// logged, the step's own error is what the caller reports.
pub async fn notify_failure(
    targets: &Targets,
    services: &Services,
    run_id: &str,
    step: StepKind,
    error: &Error,
) {
    let Some(topic) = &targets.sns_topic else {
        return;
    };
    let message = format!(
        "mwaa-dr failover {run_id} of {} to {} FAILED at step {}: {error}\nRun `mwaa-dr failover` again to resume at this step.",
        targets.primary,
        targets.secondary,
        step.as_str()
    );
    if let Err(e) = services
        .notifier
        .publish(
            topic,
            &format!("mwaa-dr failover to {} FAILED", targets.secondary),
            &message,
        )
        .await
    {
        warn!(error = %e, "could not publish the failure");
    }
}
