//! The recovery: a plan of idempotent steps for the configured DR_TYPE, executed one by one,
//! each recorded in the store so a rerun resumes at the failed step and never repeats a
//! finished one.

pub mod state;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use self::state::{FailoverRun, StepRecord};
use crate::aws::cloudwatch::Heartbeat;
use crate::aws::mwaa::{EnvironmentDefinition, Mwaa, Network};
use crate::aws::schedule::{Disabled, Schedules};
use crate::aws::sns::Notifier;
use crate::config::{Config, DrType};
use crate::error::{Error, Result};
use crate::health;
use crate::store::{BackupStore, environments};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    ConfirmPrimaryUnhealthy,
    DisableHealthCheck,
    CreateSecondaryEnvironment,
    WaitSecondaryAvailable,
    ConfirmSecondaryAvailable,
    RestoreLatestBackup,
    Notify,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::ConfirmPrimaryUnhealthy => "confirm_primary_unhealthy",
            StepKind::DisableHealthCheck => "disable_health_check",
            StepKind::CreateSecondaryEnvironment => "create_secondary_environment",
            StepKind::WaitSecondaryAvailable => "wait_secondary_available",
            StepKind::ConfirmSecondaryAvailable => "confirm_secondary_available",
            StepKind::RestoreLatestBackup => "restore_latest_backup",
            StepKind::Notify => "notify",
        }
    }
}

/// One planned step and what it will do, for `--dry-run` and the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedStep {
    pub step: StepKind,
    pub action: String,
    /// Finished in an earlier run of this failover: will be skipped.
    pub done: bool,
}

/// What the steps act on.
pub struct Targets {
    pub dr_type: DrType,
    pub primary: String,
    pub secondary: String,
    pub secondary_region: Option<String>,
    pub schedule: Option<String>,
    pub sns_topic: Option<String>,
    pub force: bool,
}

impl Targets {
    pub fn from_config(config: &Config, force: bool) -> Result<Targets> {
        let command = "failover";
        let dr_type = config.dr_type.ok_or_else(|| Error::MissingValue {
            variable: "DR_TYPE".into(),
            command: command.into(),
            purpose: "the recovery strategy, BACKUP_RESTORE or WARM_STANDBY".into(),
        })?;
        let secondary = config
            .require(
                &config.secondary.environment_name,
                "SECONDARY_MWAA_ENVIRONMENT_NAME",
                command,
                "the environment that takes over",
            )?
            .to_string();
        let primary = config
            .require(
                &config.primary.environment_name,
                "PRIMARY_MWAA_ENVIRONMENT_NAME",
                command,
                "the environment that failed",
            )?
            .to_string();
        if dr_type == DrType::BackupRestore {
            config.require(
                &config.secondary.role_arn,
                "SECONDARY_MWAA_ROLE_ARN",
                command,
                "the execution role of the new environment",
            )?;
            config.require(
                &config.secondary.dags_bucket,
                "SECONDARY_DAGS_BUCKET_NAME",
                command,
                "the DAGs bucket of the new environment",
            )?;
            for (variable, list) in [
                ("SECONDARY_SUBNET_IDS", &config.secondary.subnet_ids),
                (
                    "SECONDARY_SECURITY_GROUP_IDS",
                    &config.secondary.security_group_ids,
                ),
            ] {
                if list.is_empty() {
                    return Err(Error::MissingValue {
                        variable: variable.into(),
                        command: command.into(),
                        purpose: "the network of the new environment".into(),
                    });
                }
            }
        }
        Ok(Targets {
            dr_type,
            primary,
            secondary,
            secondary_region: config.secondary.region.clone(),
            schedule: config.health_check.schedule_name.clone(),
            sns_topic: config.failover.sns_topic_arn.clone(),
            force,
        })
    }

    pub fn steps(&self) -> Vec<(StepKind, String)> {
        let mut steps = vec![(
            StepKind::ConfirmPrimaryUnhealthy,
            if self.force {
                format!(
                    "check {} (failing over whatever it says: --force)",
                    self.primary
                )
            } else {
                format!(
                    "confirm that {} is unhealthy (heartbeat and status, with retries)",
                    self.primary
                )
            },
        )];
        steps.push((
            StepKind::DisableHealthCheck,
            match &self.schedule {
                Some(s) => format!("disable the health-check schedule {s}"),
                None => "no health-check schedule configured (HEALTH_CHECK_SCHEDULE_NAME): nothing to disable".into(),
            },
        ));
        match self.dr_type {
            DrType::BackupRestore => {
                steps.push((
                    StepKind::CreateSecondaryEnvironment,
                    format!(
                        "create {} from the saved definition of {}",
                        self.secondary, self.primary
                    ),
                ));
                steps.push((
                    StepKind::WaitSecondaryAvailable,
                    format!("wait until {} is AVAILABLE", self.secondary),
                ));
            }
            DrType::WarmStandby => {
                steps.push((
                    StepKind::ConfirmSecondaryAvailable,
                    format!("confirm that {} is AVAILABLE", self.secondary),
                ));
            }
        }
        steps.push((
            StepKind::RestoreLatestBackup,
            "clean the secondary's metadata and restore the latest backup in one transaction, then unpause the DAGs active in the primary".into(),
        ));
        steps.push((
            StepKind::Notify,
            match &self.sns_topic {
                Some(t) => format!("publish the outcome to {t}"),
                None => "no SNS topic configured (DR_SNS_TOPIC_ARN): nothing to publish".into(),
            },
        ));
        steps
    }
}

/// The services the steps call.
pub struct Services {
    pub primary_mwaa: Box<dyn Mwaa>,
    pub secondary_mwaa: Box<dyn Mwaa>,
    pub heartbeat: Box<dyn Heartbeat>,
    pub schedules: Box<dyn Schedules>,
    pub notifier: Box<dyn Notifier>,
    pub store: Arc<dyn BackupStore>,
}

/// The restore step's work, provided by the caller (it owns the database side).
#[async_trait::async_trait]
pub trait RestoreStep: Send + Sync {
    /// Restores the latest backup with cleanup; returns a one-line summary.
    async fn restore_latest(&self) -> Result<String>;
}

#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    pub run_id: String,
    pub dr_type: DrType,
    pub resumed: bool,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// From the failover's first start to the end of the restore (DAGs unpaused).
    pub recovery_seconds: Option<f64>,
    pub steps: Vec<StepRecord>,
}

impl Timeline {
    fn of(run: &FailoverRun, finished_at: Option<DateTime<Utc>>) -> Timeline {
        let restored = run
            .records
            .iter()
            .rev()
            .find(|r| r.step == StepKind::RestoreLatestBackup && r.outcome == "ok")
            .map(|r| r.finished_at);
        Timeline {
            run_id: run.started.run_id.clone(),
            dr_type: run.started.dr_type,
            resumed: run.resumed,
            started_at: run.started.started_at,
            finished_at,
            recovery_seconds: restored.map(|end| seconds_between(run.started.started_at, end)),
            steps: run.records.clone(),
        }
    }
}

fn seconds_between(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    (b - a).num_milliseconds() as f64 / 1000.0
}

/// Runs (or resumes) the failover. On failure the SNS topic hears of it, the failed step is
/// recorded, and the error comes back together with the timeline so far.
pub async fn execute(
    config: &Config,
    targets: &Targets,
    services: &Services,
    restore: &dyn RestoreStep,
    run: &mut FailoverRun,
) -> std::result::Result<Timeline, (Error, Timeline)> {
    for (step, action) in targets.steps() {
        // The create step counts as done only once the environment became AVAILABLE: after a
        // CREATE_FAILED (and its deletion) it must run again. It asks GetEnvironment first,
        // so it never sends a second CreateEnvironment for an environment that exists.
        let done = run.is_done(step)
            && (step != StepKind::CreateSecondaryEnvironment
                || run.is_done(StepKind::WaitSecondaryAvailable));
        if done {
            info!(step = step.as_str(), "finished in an earlier run; skipped");
            continue;
        }
        let started_at = Utc::now();
        info!(step = step.as_str(), "{action}");
        let outcome = run_step(step, config, targets, services, restore).await;
        let finished_at = Utc::now();
        match outcome {
            Ok(details) => {
                let record = StepRecord {
                    step,
                    started_at,
                    finished_at,
                    outcome: "ok".into(),
                    details,
                };
                if let Err(e) = run.record(services.store.as_ref(), record).await {
                    return Err((e, Timeline::of(run, None)));
                }
            }
            Err(error) => {
                let record = StepRecord {
                    step,
                    started_at,
                    finished_at,
                    outcome: "failed".into(),
                    details: error.to_string(),
                };
                if let Err(e) = run.record(services.store.as_ref(), record).await {
                    warn!(error = %e, "could not record the failed step");
                }
                if let Some(topic) = &targets.sns_topic {
                    let message = format!(
                        "mwaa-dr failover {} of {} to {} FAILED at step {}: {error}\nRun `mwaa-dr failover` again to resume at this step.",
                        run.started.run_id,
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
                return Err((error, Timeline::of(run, None)));
            }
        }
    }
    let finished_at = Utc::now();
    if let Err(e) = run.finish(services.store.as_ref(), finished_at).await {
        return Err((e, Timeline::of(run, None)));
    }
    Ok(Timeline::of(run, Some(finished_at)))
}

async fn run_step(
    step: StepKind,
    config: &Config,
    targets: &Targets,
    services: &Services,
    restore: &dyn RestoreStep,
) -> Result<String> {
    match step {
        StepKind::ConfirmPrimaryUnhealthy => {
            let report = health::check(
                &targets.primary,
                &config.health_check,
                services.primary_mwaa.as_ref(),
                services.heartbeat.as_ref(),
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
        StepKind::DisableHealthCheck => match &targets.schedule {
            None => Ok("no schedule configured".into()),
            Some(name) => match services.schedules.disable(name).await? {
                Disabled::Now => Ok(format!("{name} disabled")),
                Disabled::Already => Ok(format!("{name} was already disabled")),
            },
        },
        StepKind::CreateSecondaryEnvironment => create_secondary(config, targets, services).await,
        StepKind::WaitSecondaryAvailable => wait_available(config, targets, services).await,
        StepKind::ConfirmSecondaryAvailable => {
            match services
                .secondary_mwaa
                .get_environment(&targets.secondary)
                .await?
            {
                Some(env) if env.status.as_deref() == Some("AVAILABLE") => {
                    Ok(format!("{} is AVAILABLE", targets.secondary))
                }
                Some(env) => Err(Error::failed(
                    "confirm the secondary",
                    &targets.secondary,
                    format!(
                        "its status is {}, not AVAILABLE",
                        env.status.unwrap_or_default()
                    ),
                )),
                None => Err(Error::failed(
                    "confirm the secondary",
                    &targets.secondary,
                    "no such environment in the secondary region",
                )),
            }
        }
        StepKind::RestoreLatestBackup => restore.restore_latest().await,
        StepKind::Notify => match &targets.sns_topic {
            None => Ok("no topic configured".into()),
            Some(topic) => {
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
        },
    }
}

/// The CreateEnvironment request: the primary's saved definition with the secondary's name,
/// role, network and DAGs bucket.
pub fn secondary_definition(
    saved: &EnvironmentDefinition,
    config: &Config,
    name: &str,
) -> EnvironmentDefinition {
    let mut d = saved.clone();
    d.name = name.to_string();
    d.arn = None;
    d.status = None;
    d.webserver_url = None;
    d.last_error = None;
    d.execution_role_arn = config.secondary.role_arn.clone();
    d.network_configuration = Some(Network {
        subnet_ids: config.secondary.subnet_ids.clone(),
        security_group_ids: config.secondary.security_group_ids.clone(),
    });
    d.source_bucket_arn = config
        .secondary
        .dags_bucket
        .as_ref()
        .map(|b| format!("arn:aws:s3:::{b}"));
    if let Some(logging) = d.logging_configuration.as_mut() {
        for module in logging.values_mut() {
            module.cloud_watch_log_group_arn = None;
        }
    }
    d
}

async fn create_secondary(
    config: &Config,
    targets: &Targets,
    services: &Services,
) -> Result<String> {
    // Idempotent: an environment that exists already (a previous attempt's) is not created again.
    if let Some(existing) = services
        .secondary_mwaa
        .get_environment(&targets.secondary)
        .await?
    {
        let status = existing.status.unwrap_or_default();
        return match status.as_str() {
            "CREATE_FAILED" => Err(Error::failed(
                "create the secondary",
                &targets.secondary,
                "an environment of this name exists in CREATE_FAILED; delete it, then run failover again",
            )),
            _ => Ok(format!(
                "{} exists already ({status}); not created again",
                targets.secondary
            )),
        };
    }
    let (key, saved) = environments::latest(services.store.as_ref(), &targets.primary).await?;
    let definition = secondary_definition(&saved, config, &targets.secondary);
    let mut notes = String::new();
    if let (Some(kms), Some(region)) = (&definition.kms_key, &targets.secondary_region)
        && kms.starts_with("arn:")
        && !kms.contains(&format!(":{region}:"))
    {
        warn!(kms_key = %kms, region = %region, "the saved KmsKey belongs to another region; CreateEnvironment may refuse it (use a multi-Region key or a key of the secondary region)");
        notes = format!("; warning: KmsKey {kms} is not in {region}");
    }
    let arn = services
        .secondary_mwaa
        .create_environment(&definition)
        .await?;
    Ok(format!(
        "CreateEnvironment accepted from {key}: {arn}{notes}"
    ))
}

async fn wait_available(config: &Config, targets: &Targets, services: &Services) -> Result<String> {
    let started = Instant::now();
    let timeout = config.failover.timeout;
    let interval = config
        .failover
        .create_env_polling_interval
        .max(Duration::from_millis(100));
    loop {
        let env = services
            .secondary_mwaa
            .get_environment(&targets.secondary)
            .await?;
        let status = env
            .as_ref()
            .and_then(|e| e.status.clone())
            .unwrap_or_else(|| "missing".into());
        match status.as_str() {
            "AVAILABLE" => {
                return Ok(format!(
                    "{} AVAILABLE after {:.0} s",
                    targets.secondary,
                    started.elapsed().as_secs_f64()
                ));
            }
            "CREATE_FAILED" | "UPDATE_FAILED" | "DELETED" | "DELETING" | "missing" => {
                let detail = env
                    .and_then(|e| e.last_error)
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default();
                return Err(Error::failed(
                    "wait for the secondary",
                    &targets.secondary,
                    format!("status {status}{detail}"),
                ));
            }
            _ => {}
        }
        if started.elapsed() + interval > timeout {
            return Err(Error::failed(
                "wait for the secondary",
                &targets.secondary,
                format!(
                    "still {status} after {:.0} s (STATE_MACHINE_TIMEOUT_MINS); run failover again to keep waiting",
                    started.elapsed().as_secs_f64()
                ),
            ));
        }
        tokio::time::sleep(interval).await;
    }
}
