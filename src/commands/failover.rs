//! `mwaa-dr failover`: the whole recovery for DR_TYPE, resumable, with a timeline.

use std::sync::Arc;

use chrono::Utc;
use serde::Serialize;

use crate::aws::cloudwatch::CloudWatchHeartbeat;
use crate::aws::mwaa::SdkMwaa;
use crate::aws::schedule::AwsSchedules;
use crate::aws::sfn::{ExecutionState, SfnExecutions, StateEvent};
use crate::aws::sns::SnsNotifier;
use crate::cli::{ExecutionChoice, FailoverArgs};
use tokio_util::sync::CancellationToken;

use super::failover_plan::targets;
use super::open_store;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::failover::restore::{DirectRestore, RemoteRestore};
use crate::failover::{self, PlannedStep, RestoreStep, Services, Targets, Timeline, state};
use crate::ops::{self, restore::RestoreOptions};
use crate::output;
use crate::store::lock::{self, LockScope};
use crate::store::{BackupStore, StoreLocation};

#[derive(Serialize)]
struct PlanDoc<'a> {
    dry_run: bool,
    dr_type: crate::config::DrType,
    resumes_run: Option<&'a str>,
    steps: &'a [PlannedStep],
}

pub async fn run(config: &Config, args: &FailoverArgs, cancel: &CancellationToken) -> Result<()> {
    if args.via_step_functions {
        return via_step_functions(config, args, cancel).await;
    }
    let targets = targets(config, "failover", args.force)?;
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
    let services = aws_services(config, store.clone()).await?;
    let restore = restore_step(config, &targets, store.clone(), db, cancel).await?;
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
async fn aws_services(config: &Config, store: Arc<dyn BackupStore>) -> Result<Services> {
    let primary_region = config.primary.region.as_deref();
    let secondary_region = config.secondary.region.as_deref();
    let timeouts = &config.aws_timeouts;
    // The original solution saved the primary's definition at its backup bucket's root.
    let original_root: Arc<dyn BackupStore> = match config.store("failover")? {
        StoreLocation::S3 { bucket, prefix } if !prefix.is_empty() => {
            Arc::from(open_store(&StoreLocation::s3(bucket, ""), config).await?)
        }
        _ => store.clone(),
    };
    Ok(Services {
        primary_mwaa: Box::new(SdkMwaa::new(primary_region, timeouts).await),
        secondary_mwaa: Box::new(SdkMwaa::new(secondary_region, timeouts).await),
        heartbeat: Box::new(CloudWatchHeartbeat::new(primary_region, timeouts).await),
        schedules: Box::new(AwsSchedules::new(secondary_region, timeouts).await),
        notifier: Box::new(SnsNotifier::new(secondary_region, timeouts).await),
        store,
        original_root,
        clock: Default::default(),
    })
}

/// The restore step: straight into the secondary's database when its URL is known, else
/// through the restore DAG in the secondary.
async fn restore_step<'a>(
    config: &'a Config,
    targets: &Targets,
    store: Arc<dyn BackupStore>,
    db: Option<crate::model::DbUrl>,
    cancel: &'a CancellationToken,
) -> Result<Box<dyn RestoreStep + 'a>> {
    let region = config.secondary.region.as_deref();
    Ok(match db {
        Some(db) => Box::new(DirectRestore {
            options: RestoreOptions {
                backup_id: None,
                clean: true,
                dry_run: false,
                variable_strategy: config.variable_strategy,
                connection_strategy: config.connection_strategy,
                fernet: super::fernet_keyring(config)?,
                catalogs: config.catalogs(),
                confirm: None,
                jobs: usize::from(config.backup_jobs),
            },
            services: ops::Services {
                store: Some(store),
                target: Some(super::connector(config, db)),
                kms: Some(super::kms(config, region)),
                ..ops::Services::default()
            },
            cancel,
        }),
        None => Box::new(RemoteRestore {
            store,
            mwaa: Box::new(SdkMwaa::new(region, &config.aws_timeouts).await),
            secondary: targets.secondary.clone(),
            dag_id: config.deployment.import_dag_name.clone(),
            conf: super::remote::restore_conf(config, None, true),
            timeout: config.failover.timeout,
            unpause_wait: config.failover.unpause_wait,
            cancel,
        }),
    })
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

/// `--via-step-functions`: starts an execution of the deployed state machine (or, with
/// `--execution`, takes one already started), shows each state it enters on stderr, and
/// prints the timeline from its history. The outcome decides the exit code: 0 recovered, 6
/// the primary was healthy, 1 failed, timed out or aborted.
async fn via_step_functions(
    config: &Config,
    args: &FailoverArgs,
    cancel: &CancellationToken,
) -> Result<()> {
    use crate::deploy::state_machine;
    let targets = targets(config, "failover", false)?;
    // An execution ARN names its Region; anything else is in the secondary's, where deploy
    // puts the workflow.
    let region = match args.execution.as_ref().and_then(|e| e.region()) {
        Some(region) => Some(region),
        None => config.secondary.region.as_deref(),
    };
    let sfn = SfnExecutions::new(region, &config.aws_timeouts).await;
    if let Some(choice) = &args.execution {
        return follow_started(config, args, &targets, &sfn, choice, cancel).await;
    }
    let name = state_machine_to_start(config, args)?;
    let machine = sfn.find(&name).await?;
    let simulate = args.simulate_dr || config.health_check.simulate_dr;
    let mut input = serde_json::json!({ "simulate_dr": simulate });
    // Across Regions the workflow reads nothing of the primary: it fails over when its input
    // says the primary was confirmed unhealthy, here or by --force.
    let check_here = !simulate && config.primary.region != config.secondary.region;
    if config.dry_run {
        let input = input.to_string();
        let doc = serde_json::json!({"dry_run": true, "state_machine": machine, "input": input});
        output::emit(config.output, &doc, || {
            format!(
                "dry run: would start an execution of {machine} with input {input}{}; nothing is changed",
                if check_here {
                    format!(
                        " and \"{}\" once the primary is found unhealthy from here (or --force)",
                        state_machine::PRIMARY_UNHEALTHY
                    )
                } else {
                    String::new()
                }
            )
        });
        return Ok(());
    }
    if check_here {
        let confirmed = if args.force {
            "failover --via-step-functions --force: not checked".to_string()
        } else {
            primary_unhealthy_from_here(config, &targets, cancel).await?
        };
        input[state_machine::PRIMARY_UNHEALTHY] = confirmed.into();
    }
    let input = input.to_string();
    super::confirm(
        config,
        &format!(
            "Start the failover state machine {machine} ({:?}, {} to {}{})? The recovery overwrites the metadata of {}.",
            targets.dr_type,
            targets.primary,
            targets.secondary,
            if simulate { ", simulated disaster" } else { "" },
            targets.secondary
        ),
    )?;
    let execution_name =
        format!("mwaa-dr-{}", Utc::now().format("%Y%m%dT%H%M%S%.3fZ")).replace('.', "-");
    let execution = sfn.start(&machine, &execution_name, &input).await?;
    progress_line(config, &format!("started {execution}"));
    let (state, events) = follow_execution(config, &sfn, &execution, cancel).await?;
    report_execution(config, &targets, &execution, &state, &events)
}

/// `--execution`: follows an execution something else started (the schedule, an alarm, an
/// operator) as a started one is followed, and reports it the same way. Starts nothing.
async fn follow_started(
    config: &Config,
    args: &FailoverArgs,
    targets: &Targets,
    sfn: &SfnExecutions,
    choice: &ExecutionChoice,
    cancel: &CancellationToken,
) -> Result<()> {
    let execution = match choice {
        ExecutionChoice::Arn(arn) => {
            if args.state_machine.is_some() {
                return Err(Error::Usage {
                    message: "--state-machine picks the machine of `--execution latest`; an execution ARN names its machine itself: pass one or the other".into(),
                });
            }
            arn.clone()
        }
        ExecutionChoice::Latest => {
            let machine = sfn.find(&state_machine_to_start(config, args)?).await?;
            sfn.latest(&machine).await?.ok_or_else(|| {
                Error::failed(
                    "follow the latest execution",
                    &machine,
                    "the state machine has no execution yet (start one with `mwaa-dr failover --via-step-functions`)",
                )
            })?
        }
    };
    if config.dry_run {
        let state = sfn.describe(&execution).await?;
        let doc =
            serde_json::json!({"dry_run": true, "execution": execution, "status": state.status});
        output::emit(config.output, &doc, || {
            format!(
                "dry run: would follow execution {execution} ({}); nothing is changed",
                state.status
            )
        });
        return Ok(());
    }
    progress_line(config, &format!("following {execution}"));
    let (state, events) = follow_execution(config, sfn, &execution, cancel).await?;
    report_execution(config, targets, &execution, &state, &events)
}

/// Prints the timeline of an ended execution (named by the last part of its ARN) and turns
/// its outcome into the command's result.
fn report_execution(
    config: &Config,
    targets: &Targets,
    execution: &str,
    state: &ExecutionState,
    events: &[StateEvent],
) -> Result<()> {
    let name = execution.rsplit(':').next().unwrap_or(execution);
    let timeline = crate::deploy::state_machine::timeline(targets.dr_type, name, state, events);
    output::emit(config.output, &timeline, || render_timeline(&timeline));
    execution_outcome(targets, execution, state, events)
}

/// The workflow in the secondary Region cannot see a primary in another Region (Step
/// Functions' SDK integrations reach only their own Region: it would find no heartbeat), so
/// the primary's health is checked from here first, in its own Region, and a healthy primary
/// is refused as `failover` refuses it. Returns what the check found, for the workflow's input.
async fn primary_unhealthy_from_here(
    config: &Config,
    targets: &Targets,
    cancel: &CancellationToken,
) -> Result<String> {
    let region = config.primary.region.as_deref();
    let timeouts = &config.aws_timeouts;
    let services = ops::Services {
        primary_mwaa: Some(Box::new(SdkMwaa::new(region, timeouts).await)),
        heartbeat: Some(Box::new(CloudWatchHeartbeat::new(region, timeouts).await)),
        ..ops::Services::default()
    };
    let options = ops::health::HealthOptions {
        environment: targets.primary.clone(),
        settings: targets.health.clone(),
    };
    let report = ops::health::health(&options, &services, &crate::progress::Silent, cancel).await?;
    if !report.healthy {
        let found = format!(
            "failover --via-step-functions found it unhealthy from outside its Region: {}",
            report.evidence()
        );
        progress_line(
            config,
            &format!("the primary is unhealthy: {}", report.evidence()),
        );
        return Ok(found);
    }
    Err(Error::refused(
        "fail over",
        &targets.primary,
        format!(
            "the primary is healthy ({}), checked from here because the workflow in {} cannot read {}; nothing was started",
            report.evidence(),
            config
                .secondary
                .region
                .as_deref()
                .unwrap_or("the secondary Region"),
            region.unwrap_or("the primary Region"),
        ),
        "pass --force to fail over anyway, or --simulate-dr (MWAA_SIMULATE_DR=YES) for a drill",
    ))
}

/// The state machine `--via-step-functions` starts: `--state-machine`, or the one `deploy`
/// named from STACK_NAME_PREFIX.
fn state_machine_to_start(config: &Config, args: &FailoverArgs) -> Result<String> {
    use crate::deploy::state_machine;
    Ok(match &args.state_machine {
        Some(name) => name.clone(),
        None => state_machine::state_machine_name(config.require(
            &config.deployment.stack_name_prefix,
            "STACK_NAME_PREFIX",
            "failover",
            "the state machine `deploy` created is <prefix>-state-machine (or name it with --state-machine)",
        )?),
    })
}

/// Follows an execution until it is no longer running, showing each state it enters;
/// returns its final state and its whole history. Cancelling stops following, not the
/// execution.
async fn follow_execution(
    config: &Config,
    sfn: &SfnExecutions,
    execution: &str,
    cancel: &CancellationToken,
) -> Result<(ExecutionState, Vec<StateEvent>)> {
    let mut shown = 0;
    loop {
        let events = sfn.state_events(execution).await?;
        for e in events.iter().skip(shown).filter(|e| e.entered) {
            progress_line(config, &format!("{} {}", e.at.format("%H:%M:%S"), e.state));
        }
        shown = events.len();
        let state = sfn.describe(execution).await?;
        if state.status != "RUNNING" {
            // The last states may land in the history after the status changed.
            let events = sfn.state_events(execution).await?;
            return Ok((state, events));
        }
        tokio::select! {
            () = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
            () = cancel.cancelled() => {
                tracing::warn!(execution = %execution, "stopped following; the execution keeps running (stop it with `aws stepfunctions stop-execution`)");
                return Err(Error::Interrupted);
            }
        }
    }
}

/// What an ended execution means for the exit code: recovered, refused because the primary
/// was healthy, or failed (transient when the workflow said so).
fn execution_outcome(
    targets: &Targets,
    execution: &str,
    state: &ExecutionState,
    events: &[StateEvent],
) -> Result<()> {
    if crate::deploy::state_machine::ended_healthy(state, events) {
        return Err(Error::refused(
            "fail over",
            &targets.primary,
            format!(
                "the primary is healthy; execution {execution} changed nothing but the saved definition"
            ),
            "start it with --simulate-dr for a drill",
        ));
    }
    if state.status == "SUCCEEDED" {
        return Ok(());
    }
    let detail = format!(
        "execution {execution} ended {}: {} {}",
        state.status,
        state.error.as_deref().unwrap_or(""),
        state.cause.as_deref().unwrap_or("")
    );
    if state.error.as_deref() == Some("mwaa-dr.transient") {
        return Err(Error::transient("fail over", &targets.secondary, detail));
    }
    Err(Error::failed(
        "fail over",
        &targets.secondary,
        detail.trim_end(),
    ))
}

/// One line of progress on stderr (not with --quiet).
fn progress_line(config: &Config, line: &str) {
    if !config.quiet {
        eprintln!("{line}");
    }
}
