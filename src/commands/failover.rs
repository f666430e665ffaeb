//! `mwaa-dr failover`: the whole recovery for DR_TYPE, resumable, with a timeline.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use serde::Serialize;

use crate::aws::cloudwatch::CloudWatchHeartbeat;
use crate::aws::mwaa::SdkMwaa;
use crate::aws::schedule::AwsSchedules;
use crate::aws::sns::SnsNotifier;
use crate::cli::FailoverArgs;
use tokio_util::sync::CancellationToken;

use super::open_store;
use crate::config::Config;
use crate::db::PgConnector;
use crate::error::{Error, Result};
use crate::failover::{
    self, NewEnvironment, PlannedStep, RestoreStep, Services, Targets, Timeline, state,
};
use crate::model::DrType;
use crate::ops::{
    self,
    restore::{RestoreOptions, restore},
};
use crate::output;
use crate::store::BackupStore;
use crate::store::lock::{self, LockScope};

#[derive(Serialize)]
struct PlanDoc<'a> {
    dry_run: bool,
    dr_type: crate::config::DrType,
    resumes_run: Option<&'a str>,
    steps: &'a [PlannedStep],
}

pub async fn run(config: &Config, args: &FailoverArgs, cancel: &CancellationToken) -> Result<()> {
    let targets = targets(config, args.force)?;
    // Without a database URL the restore DAG does the restore inside the secondary.
    let db = if config.has_target_db() {
        Some(config.target_db("failover")?)
    } else {
        None
    };
    let store: Arc<dyn BackupStore> =
        Arc::from(open_store(config.store("failover")?, config).await?);
    let existing = state::unfinished(store.as_ref()).await?;
    let plan = plan_of(&targets, existing.as_ref());
    if config.dry_run {
        let doc = PlanDoc {
            dry_run: true,
            dr_type: targets.dr_type,
            resumes_run: existing.as_ref().map(|r| r.started.run_id.as_str()),
            steps: &plan,
        };
        output::emit(config.output, &doc, || {
            render_plan(&targets, &plan, existing.as_ref())
        });
        return Ok(());
    }
    super::confirm(
        config,
        &format!(
            "Fail over from {} to {} ({:?}): this empties and overwrites the metadata of {}. Continue?",
            targets.primary,
            targets.secondary,
            targets.dr_type,
            db.as_ref().map_or_else(
                || format!(
                    "MWAA environment {} (through its restore DAG)",
                    targets.secondary
                ),
                |db| db.redacted().to_string()
            )
        ),
    )?;
    let services = aws_services(config, store.clone()).await;
    let restore: Box<dyn RestoreStep + '_> = match db {
        Some(db) => Box::new(LatestBackup {
            config,
            store: store.clone(),
            db: super::connector(config, db),
            cancel,
        }),
        None => Box::new(RemoteRestore {
            config,
            store: store.clone(),
            secondary: targets.secondary.clone(),
            cancel,
        }),
    };
    // One failover at a time: two runs resuming the same failover would both act on it.
    let outcome = lock::with_lock(
        store.as_ref(),
        LockScope::Failover,
        true,
        "failover",
        async {
            // Read again under the lock: another run may have finished or started one.
            let mut run = match state::unfinished(store.as_ref()).await? {
                Some(run) => run,
                None => state::start(store.as_ref(), targets.dr_type, Utc::now()).await?,
            };
            Ok(failover::execute(&targets, &services, restore.as_ref(), &mut run, cancel).await)
        },
    )
    .await?;
    match outcome {
        Ok(timeline) => {
            output::emit(config.output, &timeline, || render_timeline(&timeline));
            Ok(())
        }
        Err((error, timeline)) => {
            output::emit(config.output, &timeline, || render_timeline(&timeline));
            Err(error)
        }
    }
}

/// The steps for `targets`, each marked done when the unfinished run `existing` finished it.
fn plan_of(targets: &Targets, existing: Option<&state::FailoverRun>) -> Vec<PlannedStep> {
    targets
        .steps()
        .into_iter()
        .map(|(step, action)| PlannedStep {
            step,
            action,
            done: existing.is_some_and(|run| run.is_done(step)),
        })
        .collect()
}

/// The AWS side of the failover: the primary's MWAA and heartbeat in its region, everything
/// else in the secondary's (the primary's region may be the one that is down).
async fn aws_services(config: &Config, store: Arc<dyn BackupStore>) -> Services {
    let primary_region = config.primary.region.as_deref();
    let secondary_region = config.secondary.region.as_deref();
    let timeouts = &config.aws_timeouts;
    Services {
        primary_mwaa: Box::new(SdkMwaa::new(primary_region, timeouts).await),
        secondary_mwaa: Box::new(SdkMwaa::new(secondary_region, timeouts).await),
        heartbeat: Box::new(CloudWatchHeartbeat::new(primary_region, timeouts).await),
        schedules: Box::new(AwsSchedules::new(secondary_region, timeouts).await),
        notifier: Box::new(SnsNotifier::new(secondary_region, timeouts).await),
        store,
    }
}

/// The restore step: the latest backup, with cleanup, into the secondary database.
struct LatestBackup<'a> {
    config: &'a Config,
    store: Arc<dyn BackupStore>,
    db: PgConnector,
    cancel: &'a CancellationToken,
}

#[async_trait]
impl RestoreStep for LatestBackup<'_> {
    async fn restore_latest(&self) -> Result<String> {
        let progress = crate::progress::Silent;
        let options = RestoreOptions {
            backup_id: None,
            clean: true,
            dry_run: false,
            variable_strategy: self.config.variable_strategy,
            connection_strategy: self.config.connection_strategy,
            fernet: super::fernet_keyring(self.config)?,
            catalogs: self.config.catalogs(),
            confirm: None,
            jobs: usize::from(self.config.backup_jobs),
        };
        let services = ops::Services {
            store: Some(self.store.clone()),
            target: Some(self.db.clone()),
            kms: Some(super::kms(
                self.config,
                self.config.secondary.region.as_deref(),
            )),
            ..ops::Services::default()
        };
        let summary = restore(&options, &services, &progress, self.cancel).await?;
        // Only a dry run comes back without a report, and this is none.
        let Some(report) = &summary.report else {
            return Ok(String::new());
        };
        let manifest = &summary.manifest;
        let rows: u64 = report.loaded.iter().map(|t| t.rows).sum();
        let mut line = format!(
            "backup {} ({} rows) restored into {}; {} DAGs unpaused",
            manifest.backup_id,
            rows,
            self.db.describe(),
            report.unpaused.len()
        );
        if !report.missing_dags.is_empty() {
            line.push_str(&format!(
                "; not yet parsed by the secondary (unpause later): {}",
                report.missing_dags.join(", ")
            ));
        }
        Ok(line)
    }
}

/// The restore step without a database URL: the restore DAG runs in the secondary through
/// its REST API, then the DAGs active in the primary are unpaused there the same way.
struct RemoteRestore<'a> {
    config: &'a Config,
    store: Arc<dyn BackupStore>,
    secondary: String,
    cancel: &'a CancellationToken,
}

#[async_trait]
impl RestoreStep for RemoteRestore<'_> {
    async fn restore_latest(&self) -> Result<String> {
        let manifest = crate::store::manifest::resolve(self.store.as_ref(), None).await?;
        // The failover's own run seeds the DAG run ids: a rerun finds the run it started.
        let run = state::unfinished(self.store.as_ref())
            .await?
            .ok_or_else(|| {
                Error::failed("restore", &self.secondary, "no failover run is recorded")
            })?;
        let options = ops::remote::RemoteOptions {
            environment: self.secondary.clone(),
            dag_id: self.config.deployment.import_dag_name.clone(),
            conf: super::restore::restore_conf(self.config, Some(&manifest.backup_id), true),
            seed: run.started.run_id.clone(),
            started_at: run.started.started_at,
            timeout: self.config.failover.timeout,
            poll: std::time::Duration::from_secs(2),
            retry_for: std::time::Duration::from_secs(60),
        };
        let mwaa = SdkMwaa::new(
            self.config.secondary.region.as_deref(),
            &self.config.aws_timeouts,
        )
        .await;
        let report =
            ops::remote::run_dag(&options, &mwaa, self.store.as_ref(), self.cancel).await?;
        let (unpaused, missing) = unpause_remote(
            &mwaa,
            &self.secondary,
            &manifest.active_dags,
            self.config.failover.unpause_wait,
            self.cancel,
        )
        .await?;
        let mut line = format!(
            "backup {} restored by run {} of {} in {} ({:.0} s); {} DAGs unpaused",
            manifest.backup_id,
            report.dag_run_id,
            report.dag_id,
            self.secondary,
            report.seconds,
            unpaused
        );
        if let Some(task) = &report.report {
            line.push_str(&format!("; task report: {task}"));
        }
        if !missing.is_empty() {
            line.push_str(&format!(
                "; not parsed by the secondary within SECONDARY_UNPAUSE_WAIT_SECS (unpause later): {}",
                missing.join(", ")
            ));
        }
        Ok(line)
    }
}

/// Unpauses `dags` in `environment` through the REST API, waiting up to `timeout` for those
/// the scheduler has not parsed yet; returns how many were unpaused and those still missing.
async fn unpause_remote(
    mwaa: &SdkMwaa,
    environment: &str,
    dags: &[String],
    timeout: std::time::Duration,
    cancel: &CancellationToken,
) -> Result<(usize, Vec<String>)> {
    use crate::aws::airflow_api::AirflowApi;
    let api = AirflowApi::connect(mwaa, environment, std::time::Duration::from_secs(60)).await?;
    let started = std::time::Instant::now();
    let mut missing: Vec<String> = dags.to_vec();
    let mut unpaused = 0;
    loop {
        let mut still = Vec::new();
        for dag in &missing {
            match api.set_paused(dag, false).await? {
                Some(_) => unpaused += 1,
                None => still.push(dag.clone()),
            }
        }
        missing = still;
        if missing.is_empty() || started.elapsed() >= timeout {
            return Ok((unpaused, missing));
        }
        tokio::select! {
            () = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
            () = cancel.cancelled() => return Err(Error::Interrupted),
        }
    }
}

fn render_plan(
    targets: &Targets,
    plan: &[PlannedStep],
    existing: Option<&state::FailoverRun>,
) -> String {
    let mut out = format!(
        "dry run: failover {:?} from {} to {}{}; nothing is changed\n",
        targets.dr_type,
        targets.primary,
        targets.secondary,
        existing
            .map(|r| format!(" (resuming run {})", r.started.run_id))
            .unwrap_or_default()
    );
    for (i, step) in plan.iter().enumerate() {
        out.push_str(&format!(
            "{:>2}. {}{}\n",
            i + 1,
            step.action,
            if step.done {
                "  [done in an earlier run: skipped]"
            } else {
                ""
            }
        ));
    }
    out
}

fn render_timeline(t: &Timeline) -> String {
    let rows: Vec<Vec<String>> = t
        .steps
        .iter()
        .map(|r| {
            vec![
                r.step.as_str().to_string(),
                r.started_at.format("%H:%M:%S%.3f").to_string(),
                format!(
                    "{:.1}",
                    (r.finished_at - r.started_at).num_milliseconds() as f64 / 1000.0
                ),
                r.outcome.to_string(),
                r.details.clone(),
            ]
        })
        .collect();
    let mut out = format!(
        "failover {} ({:?}){}\n{}",
        t.run_id,
        t.dr_type,
        if t.resumed { ", resumed" } else { "" },
        output::table(&["STEP", "START", "SECONDS", "OUTCOME", "DETAILS"], &rows)
    );
    match (t.finished_at, t.recovery_seconds) {
        (Some(_), Some(s)) => out.push_str(&format!(
            "\nrecovery time (failover start to DAGs unpaused): {s:.1} s"
        )),
        (None, _) => out
            .push_str("\nnot finished: run `mwaa-dr failover` again to resume at the failed step"),
        _ => {}
    }
    out
}

/// The failover's options from the configuration: what each DR type needs is required here,
/// before anything is touched.
fn targets(config: &Config, force: bool) -> Result<Targets> {
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
        require_new_environment(config, command)?;
    }
    Ok(Targets {
        dr_type,
        primary,
        secondary,
        secondary_region: config.secondary.region.clone(),
        schedule: config.health_check.schedule_name.clone(),
        sns_topic: config.failover.sns_topic_arn.clone(),
        force,
        health: config.health_check.clone(),
        new_environment: NewEnvironment {
            role_arn: config.secondary.role_arn.clone(),
            dags_bucket: config.secondary.dags_bucket.clone(),
            subnet_ids: config.secondary.subnet_ids.clone(),
            security_group_ids: config.secondary.security_group_ids.clone(),
        },
        create_env_polling_interval: config.failover.create_env_polling_interval,
        timeout: config.failover.timeout,
        restore_dag: (!config.has_target_db()).then(|| config.deployment.import_dag_name.clone()),
    })
}

/// Backup-Restore creates the secondary: its role, DAGs bucket and network must be set.
fn require_new_environment(config: &Config, command: &str) -> Result<()> {
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
    Ok(())
}
