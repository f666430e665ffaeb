//! The recovery: a plan of idempotent steps for the configured DR_TYPE, executed one by one,
//! each recorded in the store so a rerun resumes at the failed step and never repeats a
//! finished one.

pub mod restore;
pub mod result;
pub mod state;
mod steps;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use self::result::{StepError, StepResult};
use self::state::{FailoverRun, StepRecord};
use crate::aws::cloudwatch::Heartbeat;
use crate::aws::mwaa::{EnvironmentDefinition, Mwaa, Network};
use crate::aws::schedule::Schedules;
use crate::aws::sns::Notifier;
use crate::error::{Error, Result};
use crate::failpoint;
use crate::model::StepOutcome;
use crate::model::{DrType, HealthCheckSettings};
use crate::store::BackupStore;

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

/// What the steps act on and how: the failover's options, resolved by the caller.
#[derive(Debug, Clone)]
pub struct Targets {
    pub dr_type: DrType,
    pub primary: String,
    pub secondary: String,
    pub secondary_region: Option<String>,
    pub schedule: Option<String>,
    pub sns_topic: Option<String>,
    pub force: bool,
    /// How the primary's health is confirmed.
    pub health: HealthCheckSettings,
    /// Backup-Restore: what the new environment gets instead of the primary's.
    pub new_environment: NewEnvironment,
    /// Backup-Restore: how often, and how long, to wait for the new environment.
    pub create_env_polling_interval: Duration,
    pub timeout: Duration,
    /// The restore DAG that restores inside the secondary through its REST API, when no
    /// database URL of the secondary is given (`None`: the restore writes the database).
    pub restore_dag: Option<String>,
}

/// The secondary's own role, network and DAGs bucket, for a Backup-Restore failover.
#[derive(Debug, Clone, Default)]
pub struct NewEnvironment {
    pub role_arn: Option<String>,
    pub dags_bucket: Option<String>,
    pub subnet_ids: Vec<String>,
    pub security_group_ids: Vec<String>,
}

impl Targets {
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
            match &self.restore_dag {
                None => "clean the secondary's metadata and restore the latest backup in one transaction, then unpause the DAGs active in the primary".into(),
                Some(dag) => format!(
                    "run the restore DAG {dag} in {} through its REST API (clean, then restore the latest backup) and follow it, then unpause there the DAGs active in the primary",
                    self.secondary
                ),
            },
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
    /// Where "now" comes from: step times and the timeline.
    pub clock: crate::model::Clock,
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
            .find(|r| r.step == StepKind::RestoreLatestBackup && r.outcome == StepOutcome::Ok)
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
    targets: &Targets,
    services: &Services,
    restore: &dyn RestoreStep,
    run: &mut FailoverRun,
    cancel: &CancellationToken,
) -> std::result::Result<Timeline, (Error, Timeline)> {
    for (step, action) in targets.steps() {
        if let Err(failure) = run_one(step, &action, targets, services, restore, run, cancel).await
        {
            if failure.result.outcome == StepOutcome::Failed {
                steps::notify_failure(targets, services, &run.started.run_id, step, &failure.error)
                    .await;
            }
            return Err((failure.error, Timeline::of(run, None)));
        }
    }
    let finished_at = services.clock.now();
    if let Err(e) = run.finish(services.store.as_ref(), finished_at).await {
        return Err((e, Timeline::of(run, None)));
    }
    Ok(Timeline::of(run, Some(finished_at)))
}

/// A step that failed, or whose success could not be recorded (then `result` says `ok` and
/// `error` is the store's).
#[derive(Debug)]
pub struct StepFailure {
    pub error: Error,
    pub result: StepResult,
}

/// Runs `step` of `run` unless an earlier run finished it, and records how it ended in the
/// store. A Step Functions task running one step returns the [`StepResult`]. Cancelled, the
/// step is abandoned and recorded as failed ("interrupted"): every step is idempotent, so
/// the next run repeats it.
#[allow(clippy::too_many_arguments)]
pub async fn run_one(
    step: StepKind,
    action: &str,
    targets: &Targets,
    services: &Services,
    restore: &dyn RestoreStep,
    run: &mut FailoverRun,
    cancel: &CancellationToken,
) -> std::result::Result<StepResult, StepFailure> {
    if counts_as_done(run, step) {
        info!(step = step.as_str(), "finished in an earlier run; skipped");
        return Ok(StepResult::skipped(step, services.clock.now()));
    }
    let started_at = services.clock.now();
    info!(step = step.as_str(), "{action}");
    let outcome = tokio::select! {
        outcome = async {
            failpoint::reach(&format!("failover.{}", step.as_str()), cancel).await?;
            steps::run(step, targets, services, restore).await
        } => outcome,
        () = cancel.cancelled() => Err(Error::Interrupted),
    };
    let result = StepResult::of(step, started_at, services.clock.now(), &outcome);
    let recorded = run.record(services.store.as_ref(), result.record()).await;
    match (outcome, recorded) {
        (Ok(_), Ok(())) => Ok(result),
        (Ok(_), Err(error)) => Err(StepFailure { error, result }),
        (Err(error), recorded) => {
            if let Err(e) = recorded {
                warn!(error = %e, "could not record the failed step");
            }
            Err(StepFailure { error, result })
        }
    }
}

/// The create step counts as done only once the environment became AVAILABLE: after a
/// CREATE_FAILED (and its deletion) it must run again. It asks GetEnvironment first, so it
/// never sends a second CreateEnvironment for an environment that exists.
fn counts_as_done(run: &FailoverRun, step: StepKind) -> bool {
    run.is_done(step)
        && (step != StepKind::CreateSecondaryEnvironment
            || run.is_done(StepKind::WaitSecondaryAvailable))
}

/// The CreateEnvironment request: the primary's saved definition with the secondary's name,
/// role, network and DAGs bucket.
pub fn secondary_definition(
    saved: &EnvironmentDefinition,
    new: &NewEnvironment,
    name: &str,
) -> EnvironmentDefinition {
    let mut d = saved.clone();
    d.name = name.to_string();
    d.arn = None;
    d.status = None;
    d.webserver_url = None;
    d.last_error = None;
    d.execution_role_arn = new.role_arn.clone();
    d.network_configuration = Some(Network {
        subnet_ids: new.subnet_ids.clone(),
        security_group_ids: new.security_group_ids.clone(),
    });
    d.source_bucket_arn = new
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
