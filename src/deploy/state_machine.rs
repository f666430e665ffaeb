//! The unattended recovery as an AWS Step Functions state machine (Amazon States Language),
//! generated from the same failover plan the CLI runs ([`Targets::steps`]): one group of
//! states per planned step, in the plan's order, with native service integrations only.
//!
//! State names: the states of a step are named after it (`disable_health_check`,
//! `disable_health_check.update`, ...), so the execution history maps back onto the plan
//! ([`step_of_state`]) and `failover --via-step-functions` prints the CLI's timeline. Other
//! states: `healthy*` (the primary passed the check: the run ends there), `recovered` (the
//! end of a failover), `failed*` and `notify_failure` (the failure path), `input.invalid`.
//!
//! Choices made here, each for a documented reason:
//! - **The heartbeat window.** `GetMetricData` needs absolute start and end times, which
//!   JSONPath cannot compute; one JSONata `Pass` state per look (`.clock<N>`) computes them
//!   (`$millis()`), and the time stamp of a saved definition, in the CLI's key format.
//! - **The restore.** AWS SDK integrations support the callback pattern
//!   (`.waitForTaskToken`, Standard workflows); `.sync` they do not. The restore state calls
//!   `arn:aws:states:::aws-sdk:mwaa:invokeRestApi.waitForTaskToken` with `POST
//!   /dags/<restore DAG>/dagRuns` (logical date: the state's entry time, which Airflow 3
//!   requires and Airflow 2 accepts) whose conf carries `task_token` (`$$.Task.Token`): the
//!   DAG's task runs `mwaa-dr restore --task-token` and answers SendTaskSuccess with its report
//!   (which becomes the state's output) or SendTaskFailure with `mwaa-dr.<class>`.
//! - **Retries** match the binary's `mwaa-dr.transient` and the AWS error codes it treats
//!   as transient (`TRANSIENT_CODES`), as `<Service>.<Code>` the way Step Functions names
//!   the errors of SDK integrations.
//! - **Failures.** Every task catches all errors into `failed.<step>` → `notify_failure`
//!   (SNS) → `failed` (Fail). The machine's own `TimeoutSeconds` and a StopExecution cannot
//!   be caught inside the machine: the restore task has its own timeout (catchable), and the
//!   execution-status rule that `deploy` sets up reports TIMED_OUT and ABORTED executions.
//! - **Regions.** SDK integrations call the services of the state machine's own Region, and
//!   cross-Region calls would need compute (a Lambda function), which this design avoids.
//!   When the primary is in another Region, a second, small machine runs there
//!   ([`heartbeat_definition`]): it looks at the heartbeat as the failover machine does and
//!   puts an event when the primary is healthy; EventBridge carries the events to the
//!   secondary's Region, where an alarm on their count starts the failover machine with
//!   `primary_unhealthy` in its input, and the failover machine reads nothing of the primary.
//!   See docs/FAILOVER.md ("Regions").

use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::aws::TRANSIENT_CODES;
use crate::aws::cloudwatch::{METRIC, NAMESPACE, PERIOD_SECS};
use crate::aws::sfn::{ExecutionState, StateEvent};
use crate::failover::state::StepRecord;
use crate::failover::{StepKind, Targets, Timeline};
use crate::health;
use crate::model::{DrType, StepOutcome};

/// The state names that are not a step's.
pub const HEALTHY: &str = "healthy";
pub const RECOVERED: &str = "recovered";
pub const FAILED: &str = "failed";
pub const NOTIFY_FAILURE: &str = "notify_failure";
const INVALID_INPUT: &str = "input.invalid";
const FAILED_WITH_ERROR: &str = "failed.with_error";
const FAILED_RESERVED: &str = "failed.reserved_error";

/// How the health-check schedule is disabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleKind {
    /// An EventBridge Scheduler schedule (what `deploy` creates), in this group
    /// (`None`: the default group).
    Scheduler { group: Option<String> },
    /// An EventBridge rule.
    Rule,
}

/// What the state machine needs beyond the failover plan, as plain values.
#[derive(Debug, Clone)]
pub struct WorkflowSettings {
    /// The backup store in the state machine's Region: its bucket and key prefix ("" for
    /// none). Saved environment definitions are kept under `<prefix>/environments/`.
    pub bucket: String,
    pub prefix: String,
    /// What the schedule named in the plan (HEALTH_CHECK_SCHEDULE_NAME) is.
    pub schedule_kind: ScheduleKind,
    /// The restore DAG in the secondary (METADATA_IMPORT_DAG_NAME).
    pub restore_dag: String,
    /// The restore DAG run's conf besides `task_token` and `clean` (the variable and
    /// connection strategies, as `mwaa-dr restore` sends them).
    pub restore_conf: Map<String, Value>,
    /// The primary is in another Region than the state machine: the machine cannot read its
    /// heartbeat or its definition (SDK integrations reach only their own Region), so it
    /// reads neither and fails over only when its input says the primary was confirmed
    /// unhealthy (`primary_unhealthy`: the heartbeat alarm, or `failover
    /// --via-step-functions` after its own check) or asks for a drill (`simulate_dr`).
    pub primary_elsewhere: bool,
}

/// The execution input that says the primary was confirmed unhealthy before the start (its
/// value says by what): the machine then reads no heartbeat.
pub const PRIMARY_UNHEALTHY: &str = "primary_unhealthy";

/// The event the heartbeat machine puts on the primary Region's default bus when the
/// primary is healthy (`detail.environment` names it); the secondary Region counts them.
pub const HEARTBEAT_SOURCE: &str = "mwaa-dr";
pub const HEARTBEAT_DETAIL_TYPE: &str = "primary healthy";

/// The step a state of the generated machine belongs to; `None` for the states outside the
/// plan (`healthy*`, `recovered`, `failed*`, `notify_failure`, `input.invalid`).
pub fn step_of_state(name: &str) -> Option<StepKind> {
    let head = name.split('.').next().unwrap_or(name);
    ALL_STEPS.iter().copied().find(|s| s.as_str() == head)
}

const ALL_STEPS: [StepKind; 7] = [
    StepKind::ConfirmPrimaryUnhealthy,
    StepKind::DisableHealthCheck,
    StepKind::CreateSecondaryEnvironment,
    StepKind::WaitSecondaryAvailable,
    StepKind::ConfirmSecondaryAvailable,
    StepKind::RestoreLatestBackup,
    StepKind::Notify,
];

/// The Amazon States Language definition of the failover `targets` plans, for the Standard
/// workflow `deploy` creates in the secondary Region.
///
/// Inputs, all plain values: `targets` is the CLI's failover plan input (DR type, names,
/// schedule, SNS topic, health-check retries, the new environment's role / network / DAGs
/// bucket, MWAA_CREATE_ENV_POLLING_INTERVAL_SECS and STATE_MACHINE_TIMEOUT_MINS);
/// `settings` says where the store is, what kind of schedule it is and how the restore DAG is
/// run. `targets.force` and `targets.restore_dag` are not used: the execution input
/// `{"simulate_dr": true}` is the drill, and the restore always runs through the DAG.
///
/// An execution takes `{}` (check, and fail over when unhealthy) or `{"simulate_dr": true}`
/// (fail over whatever the heartbeat says, as `--simulate-dr`); `"YES"` / `"NO"`, as the
/// schedule passes MWAA_SIMULATE_DR, are read the same way.
pub fn definition(targets: &Targets, settings: &WorkflowSettings) -> Value {
    let plan = targets.steps();
    let mut m = Machine {
        states: Map::new(),
        targets,
        settings,
    };
    for (i, (step, action)) in plan.iter().enumerate() {
        let next = plan
            .get(i + 1)
            .map_or(RECOVERED.to_string(), |(s, _)| entry(*s));
        match step {
            StepKind::ConfirmPrimaryUnhealthy => m.confirm_unhealthy(action, &next),
            StepKind::DisableHealthCheck => m.disable_health_check(action, &next),
            StepKind::CreateSecondaryEnvironment => m.create_secondary(action, &next),
            StepKind::WaitSecondaryAvailable => m.wait_available(action, &next),
            StepKind::ConfirmSecondaryAvailable => m.confirm_available(action, &next),
            StepKind::RestoreLatestBackup => m.restore(action, &next),
            StepKind::Notify => m.notify(action, &next),
        }
    }
    // Each step's failure state, for the steps that have one (a Pass step cannot fail).
    for (step, _) in &plan {
        let name = format!("failed.{}", step.as_str());
        let referenced = m.states.values().any(|st| successors(st).contains(&name));
        if !referenced {
            continue;
        }
        m.add(
            &name,
            json!({
                "Type": "Pass",
                "Comment": format!("the failover stopped at {}", step.as_str()),
                "Parameters": {
                    "step": step.as_str(),
                    "error.$": "$.failure.Error",
                    "cause.$": "States.JsonToString($.failure)",
                },
                "ResultPath": "$.failure",
                "Next": NOTIFY_FAILURE,
            }),
        );
    }
    m.add(
        RECOVERED,
        json!({"Type": "Succeed", "Comment": "the failover finished"}),
    );
    m.failure_path();
    let start = plan
        .first()
        .map_or(RECOVERED.to_string(), |(s, _)| entry(*s));
    json!({
        "Comment": format!(
            "mwaa-dr failover ({}) from {} to {}: generated by `mwaa-dr deploy --print-definition`",
            dr_type_name(targets.dr_type), targets.primary, targets.secondary
        ),
        "StartAt": start,
        "TimeoutSeconds": targets.timeout.as_secs().max(1) + MACHINE_MARGIN_SECS,
        "States": Value::Object(m.states),
    })
}

/// The heartbeat machine `deploy` creates in the primary's Region when the failover machine
/// runs in another one (docs/FAILOVER.md, "Regions"): every HEALTH_CHECK_INTERVAL_MINS it
/// looks at the primary's heartbeat once, as the failover machine looks (`look.*`), and when
/// it is healthy saves the Backup-Restore definition in the primary's backup bucket (which
/// replicates it to the secondary's; a failure to save does not hold the event back) and
/// puts the [`HEARTBEAT_DETAIL_TYPE`] event on the Region's default bus. An unhealthy look,
/// an API that does not answer, a Region that is down: no event, which the secondary's
/// alarm counts as a missed look. `settings.bucket` is the primary's backup bucket.
pub fn heartbeat_definition(targets: &Targets, settings: &WorkflowSettings) -> Value {
    let mut m = Machine {
        states: Map::new(),
        targets,
        settings,
    };
    let announce = format!("{HEALTHY}.announce");
    let healthy_next = match targets.dr_type {
        DrType::BackupRestore => format!("{HEALTHY}.get_environment"),
        DrType::WarmStandby => announce.clone(),
    };
    m.heartbeat_look(HEARTBEAT_LOOK, 1, 1, HEARTBEAT_MISSED, &healthy_next);
    if targets.dr_type == DrType::BackupRestore {
        m.save_definition(&announce, Some("$.save_error"));
    }
    m.add(
        &announce,
        json!({
            "Type": "Task",
            "Comment": "the primary is healthy: the event the secondary Region counts",
            "Resource": "arn:aws:states:::events:putEvents",
            "Parameters": {
                "Entries": [{
                    "Source": HEARTBEAT_SOURCE,
                    "DetailType": HEARTBEAT_DETAIL_TYPE,
                    "Detail": {
                        "environment": targets.primary,
                        "heartbeat.$": "$.heartbeat.values[0]",
                    },
                }],
            },
            "Retry": retry(Some("EventBridge")),
            "ResultPath": null,
            "Next": HEALTHY,
        }),
    );
    m.add(
        HEALTHY,
        json!({"Type": "Succeed", "Comment": "the primary is healthy and the event is put"}),
    );
    m.add(
        HEARTBEAT_MISSED,
        json!({"Type": "Succeed", "Comment": "no heartbeat: no event (the secondary's alarm counts the missed look)"}),
    );
    json!({
        "Comment": format!(
            "mwaa-dr heartbeat of {}: generated by `mwaa-dr deploy`; the secondary Region's alarm counts the events it puts",
            targets.primary
        ),
        "StartAt": format!("{HEARTBEAT_LOOK}.clock1"),
        "TimeoutSeconds": HEARTBEAT_TIMEOUT_SECS,
        "States": Value::Object(m.states),
    })
}

/// The heartbeat machine's states: its look, and its end without an event.
const HEARTBEAT_LOOK: &str = "look";
const HEARTBEAT_MISSED: &str = "no_heartbeat";
/// A look takes seconds; a run that takes longer than this has failed.
const HEARTBEAT_TIMEOUT_SECS: u64 = 120;

/// The machine's own timeout exceeds the restore task's by this much, so that a restore
/// that runs out of time is caught and notified by the machine itself.
const MACHINE_MARGIN_SECS: u64 = 300;

fn dr_type_name(t: DrType) -> &'static str {
    match t {
        DrType::BackupRestore => "BACKUP_RESTORE",
        DrType::WarmStandby => "WARM_STANDBY",
    }
}

/// The first state of `step`.
fn entry(step: StepKind) -> String {
    step.as_str().to_string()
}

/// `Retry` on the errors the binary treats as transient, for an SDK integration of
/// `service` (as Step Functions names its errors: `S3.SlowDown`, ...).
fn retry(service: Option<&str>) -> Value {
    let mut names = vec!["mwaa-dr.transient".to_string()];
    if let Some(service) = service {
        for code in TRANSIENT_CODES {
            for code in [code.to_string(), format!("{code}Exception")] {
                if code.ends_with("ExceptionException") {
                    continue;
                }
                names.push(format!("{service}.{code}"));
                // The interpreter of moto (and LocalStack) names the service in lower case.
                let lower = format!("{}.{code}", service.to_lowercase());
                if !names.contains(&lower) {
                    names.push(lower);
                }
            }
        }
    }
    json!([{
        "ErrorEquals": names,
        "IntervalSeconds": 5,
        "MaxAttempts": 3,
        "BackoffRate": 2.0,
    }])
}

fn catch(step: StepKind) -> Value {
    json!([{
        "ErrorEquals": ["States.ALL"],
        "ResultPath": "$.failure",
        "Next": format!("failed.{}", step.as_str()),
    }])
}

fn sdk(service: &str, action: &str) -> String {
    format!("arn:aws:states:::aws-sdk:{service}:{action}")
}

struct Machine<'a> {
    states: Map<String, Value>,
    targets: &'a Targets,
    settings: &'a WorkflowSettings,
}

impl Machine<'_> {
    fn add(&mut self, name: &str, state: Value) {
        self.states.insert(name.to_string(), state);
    }

    /// A task of `step` calling `service` (`None`: not an SDK integration), with the
    /// project's retries and the failure path.
    fn task(&mut self, step: StepKind, name: &str, service: Option<&str>, mut state: Value) {
        if let Some(obj) = state.as_object_mut() {
            obj.insert("Type".into(), "Task".into());
            obj.insert("Retry".into(), retry(service));
            obj.insert("Catch".into(), catch(step));
        }
        self.add(name, state);
    }

    fn key(&self, rest: &str) -> String {
        let prefix = self.settings.prefix.trim_matches('/');
        if prefix.is_empty() {
            rest.to_string()
        } else {
            format!("{prefix}/{rest}")
        }
    }

    /// The saved definitions of the primary: the key prefix `backup --environment-only`
    /// writes under (store/environments.rs).
    fn environments_prefix(&self) -> String {
        self.key(&format!("environments/{}/", self.targets.primary))
    }

    fn confirm_unhealthy(&mut self, action: &str, next: &str) {
        let s = StepKind::ConfirmPrimaryUnhealthy.as_str();
        let unhealthy = format!("{s}.unhealthy");
        self.execution_input(action);
        if self.settings.primary_elsewhere {
            // Nothing to read here: without a confirmation or a drill the input is refused.
            self.add(
                &format!("{s}.unconfirmed"),
                json!({
                    "Type": "Pass",
                    "Comment": "the primary is in another Region: this machine cannot read its heartbeat",
                    "Parameters": {
                        "Error": "mwaa-dr.usage",
                        "Cause": format!("the primary is in another Region, whose heartbeat this workflow cannot read: it is started by the heartbeat alarm or by `mwaa-dr failover --via-step-functions`, which confirm the primary unhealthy first (input {{\"{PRIMARY_UNHEALTHY}\": \"...\"}}), or for a drill with {{\"simulate_dr\": true}}"),
                    },
                    "ResultPath": "$.failure",
                    "Next": format!("failed.{s}"),
                }),
            );
        } else {
            let waits = health::retry_waits(&self.targets.health);
            let looks = waits.len() + 1;
            let healthy_next = match self.targets.dr_type {
                DrType::BackupRestore => format!("{HEALTHY}.get_environment"),
                DrType::WarmStandby => HEALTHY.to_string(),
            };
            for n in 1..=looks {
                let after_unhealthy = if n < looks {
                    format!("{s}.wait{n}")
                } else {
                    unhealthy.clone()
                };
                self.heartbeat_look(s, n, looks, &after_unhealthy, &healthy_next);
                if let Some(wait) = waits.get(n - 1) {
                    self.add(
                        &format!("{s}.wait{n}"),
                        json!({
                            "Type": "Wait",
                            "Comment": "HEALTH_CHECK_RETRY_INTERVAL_SECS × HEALTH_CHECK_RETRY_BACKOFF_RATE^n",
                            "Seconds": wait.as_secs().max(1),
                            "Next": format!("{s}.clock{}", n + 1),
                        }),
                    );
                }
            }
            if self.targets.dr_type == DrType::BackupRestore {
                self.save_definition(HEALTHY, None);
            }
            self.add(
                HEALTHY,
                json!({"Type": "Succeed", "Comment": "the primary is healthy: nothing to recover"}),
            );
        }
        self.add(
            &unhealthy,
            json!({
                "Type": "Pass",
                "Comment": "the primary is unhealthy: fail over",
                "Next": next,
            }),
        );
    }

    /// The check's entry: the execution input's `primary_unhealthy` (confirmed before the
    /// start) leads to the failover, `simulate_dr` (absent, a flag, or YES / NO as the
    /// schedule spells it) to the first look (`unconfirmed` when the primary is in another
    /// Region), to a simulated disaster, or to `input.invalid`.
    fn execution_input(&mut self, action: &str) {
        let s = StepKind::ConfirmPrimaryUnhealthy.as_str();
        let read = if self.settings.primary_elsewhere {
            format!("{s}.unconfirmed")
        } else {
            format!("{s}.clock1")
        };
        self.add(
            s,
            json!({
                "Type": "Choice",
                "Comment": action,
                "Choices": [
                    {"Variable": format!("$.{PRIMARY_UNHEALTHY}"), "IsPresent": true, "Next": format!("{s}.confirmed")},
                    {"Not": {"Variable": "$.simulate_dr", "IsPresent": true}, "Next": read},
                    {"Variable": "$.simulate_dr", "IsBoolean": true, "Next": format!("{s}.simulate_flag")},
                    {"Variable": "$.simulate_dr", "IsString": true, "Next": format!("{s}.simulate_text")},
                ],
                "Default": INVALID_INPUT,
            }),
        );
        self.add(
            &format!("{s}.confirmed"),
            json!({
                "Type": "Pass",
                "Comment": "the primary was confirmed unhealthy before the start (the heartbeat alarm, or `failover --via-step-functions` after its own check): the heartbeat is not read",
                "Parameters": {"healthy": false, "reason.$": format!("$.{PRIMARY_UNHEALTHY}")},
                "ResultPath": "$.health",
                "Next": format!("{s}.unhealthy"),
            }),
        );
        self.simulate_choices(s, &read);
        self.add(
            INVALID_INPUT,
            json!({
                "Type": "Pass",
                "Comment": "the execution input is {} or {\"simulate_dr\": true|false|\"YES\"|\"NO\"}",
                "Parameters": {
                    "Error": "mwaa-dr.usage",
                    "Cause": "simulate_dr must be true, false, \"YES\" or \"NO\"",
                },
                "ResultPath": "$.failure",
                "Next": format!("failed.{s}"),
            }),
        );
        self.add(
            &format!("{s}.simulated"),
            json!({
                "Type": "Pass",
                "Comment": "simulated disaster (simulate_dr): the heartbeat is not read",
                "Result": {"healthy": false, "reason": "simulated disaster (simulate_dr)"},
                "ResultPath": "$.health",
                "Next": format!("{s}.unhealthy"),
            }),
        );
    }

    /// `simulate_dr` as a flag, or as text the way the schedule spells MWAA_SIMULATE_DR
    /// (YES / NO): to a simulated disaster, to `read` (the first look), or to
    /// `input.invalid`.
    fn simulate_choices(&mut self, s: &str, read: &str) {
        self.add(
            &format!("{s}.simulate_flag"),
            json!({
                "Type": "Choice",
                "Choices": [{"Variable": "$.simulate_dr", "BooleanEquals": true, "Next": format!("{s}.simulated")}],
                "Default": read,
            }),
        );
        // The schedule `deploy` creates passes MWAA_SIMULATE_DR as it is spelled: YES or NO.
        self.add(
            &format!("{s}.simulate_text"),
            json!({
                "Type": "Choice",
                "Choices": [
                    {"Or": [
                        {"Variable": "$.simulate_dr", "StringEquals": "YES"},
                        {"Variable": "$.simulate_dr", "StringEquals": "yes"},
                        {"Variable": "$.simulate_dr", "StringEquals": "true"},
                    ], "Next": format!("{s}.simulated")},
                    {"Or": [
                        {"Variable": "$.simulate_dr", "StringEquals": "NO"},
                        {"Variable": "$.simulate_dr", "StringEquals": "no"},
                        {"Variable": "$.simulate_dr", "StringEquals": "false"},
                    ], "Next": read},
                ],
                "Default": INVALID_INPUT,
            }),
        );
    }

    /// Look `n` of `looks` at the primary's heartbeat: the window (`<s>.clock<n>`), the
    /// metric (`<s>.heartbeat<n>`) and the verdict (`<s>.judge<n>`), which goes to
    /// `healthy_next` or `after_unhealthy`. The failover machine and the heartbeat machine
    /// both look this way.
    fn heartbeat_look(
        &mut self,
        s: &str,
        n: usize,
        looks: usize,
        after_unhealthy: &str,
        healthy_next: &str,
    ) {
        let step = StepKind::ConfirmPrimaryUnhealthy;
        self.add(
            &format!("{s}.clock{n}"),
            json!({
                "Type": "Pass",
                "QueryLanguage": "JSONata",
                "Comment": format!("look {n} of {looks}: the heartbeat window (two {PERIOD_SECS} s periods before now) and the day stamp of a saved definition"),
                "Output": CLOCK,
                "Next": format!("{s}.heartbeat{n}"),
            }),
        );
        self.task(
            step,
            &format!("{s}.heartbeat{n}"),
            Some("CloudWatch"),
            json!({
                "Comment": format!("the newest 5-minute Average of {NAMESPACE}/{METRIC}, as `mwaa-dr health-check` reads it"),
                "Resource": sdk("cloudwatch", "getMetricData"),
                "Parameters": {
                    "MetricDataQueries": [{
                        "Id": "heartbeat",
                        "MetricStat": {
                            "Metric": {
                                "Namespace": NAMESPACE,
                                "MetricName": METRIC,
                                "Dimensions": [
                                    {"Name": "Environment", "Value": self.targets.primary},
                                    {"Name": "Function", "Value": "Scheduler"},
                                ],
                            },
                            "Period": PERIOD_SECS,
                            "Stat": "Average",
                        },
                        "ReturnData": true,
                    }],
                    "StartTime.$": "$.clock.start",
                    "EndTime.$": "$.clock.end",
                    "ScanBy": "TimestampDescending",
                },
                // The values, newest first (ScanBy); the timestamps are dropped, an
                // indefinite path gives a flat array on every interpreter.
                "ResultSelector": {"values.$": "$.MetricDataResults[*].Values[*]"},
                "ResultPath": "$.heartbeat",
                "Next": format!("{s}.judge{n}"),
            }),
        );
        // An API that does not answer counts as a failed look, as in the CLI.
        self.replace_catch(
            &format!("{s}.heartbeat{n}"),
            json!([{
                "ErrorEquals": ["States.ALL"],
                "ResultPath": "$.heartbeat_error",
                "Next": after_unhealthy,
            }]),
        );
        self.add(
            &format!("{s}.judge{n}"),
            json!({
                "Type": "Choice",
                "Comment": "healthy when the newest heartbeat average is above 0 (no datapoint: unhealthy)",
                "Choices": [
                    {"Not": {"Variable": "$.heartbeat.values[0]", "IsPresent": true}, "Next": after_unhealthy},
                    {"Variable": "$.heartbeat.values[0]", "NumericGreaterThan": 0, "Next": healthy_next},
                ],
                "Default": after_unhealthy,
            }),
        );
    }

    /// Gives the task `name` its own `Catch` in place of the failure path.
    fn replace_catch(&mut self, name: &str, catch: Value) {
        if let Some(c) = self.states.get_mut(name).and_then(|t| t.get_mut("Catch")) {
            *c = catch;
        }
    }

    /// Backup-Restore, the primary passed: `healthy.get_environment` →
    /// `healthy.save_definition` (its definition, where `backup --environment-only` saves it)
    /// → `then`. A failure goes to the failure path, or to `then` when `on_error` is given
    /// (the error kept at that path).
    fn save_definition(&mut self, then: &str, on_error: Option<&str>) {
        let step = StepKind::ConfirmPrimaryUnhealthy;
        let get = format!("{HEALTHY}.get_environment");
        let save = format!("{HEALTHY}.save_definition");
        self.task(
            step,
            &get,
            Some("Mwaa"),
            json!({
                "Comment": "the primary's definition, for a Backup-Restore failover to recreate",
                "Resource": sdk("mwaa", "getEnvironment"),
                "Parameters": {"Name": self.targets.primary},
                "ResultSelector": {"definition.$": "$.Environment"},
                "ResultPath": "$.saved",
                "Next": save,
            }),
        );
        self.task(
            step,
            &save,
            Some("S3"),
            json!({
                "Comment": "saved where `mwaa-dr backup --environment-only` saves it",
                "Resource": sdk("s3", "putObject"),
                "Parameters": {
                    "Bucket": self.settings.bucket,
                    "Key.$": format!("States.Format('{}{{}}.json', $.clock.stamp)", self.environments_prefix()),
                    "Body.$": "States.JsonToString($.saved.definition)",
                    "ContentType": "application/json",
                },
                "ResultSelector": {"ETag.$": "$.ETag"},
                "ResultPath": "$.saved.put",
                "Next": then,
            }),
        );
        if let Some(path) = on_error {
            for name in [&get, &save] {
                self.replace_catch(
                    name,
                    json!([{"ErrorEquals": ["States.ALL"], "ResultPath": path, "Next": then}]),
                );
            }
        }
    }

    fn disable_health_check(&mut self, action: &str, next: &str) {
        let step = StepKind::DisableHealthCheck;
        let s = step.as_str();
        let Some(name) = self.targets.schedule.clone() else {
            self.add(s, json!({"Type": "Pass", "Comment": action, "Next": next}));
            return;
        };
        match &self.settings.schedule_kind {
            ScheduleKind::Scheduler { group } => {
                let mut get = json!({"Name": name});
                if let Some(g) = group {
                    get["GroupName"] = json!(g);
                }
                self.task(
                    step,
                    s,
                    Some("Scheduler"),
                    json!({
                        "Comment": action,
                        "Resource": sdk("scheduler", "getSchedule"),
                        "Parameters": get,
                        // What UpdateSchedule needs back; the dates are dropped.
                        "ResultSelector": {
                            "Name.$": "$.Name",
                            "GroupName.$": "$.GroupName",
                            "ScheduleExpression.$": "$.ScheduleExpression",
                            "FlexibleTimeWindow.$": "$.FlexibleTimeWindow",
                            "Target.$": "$.Target",
                        },
                        "ResultPath": "$.schedule",
                        "Next": format!("{s}.update"),
                    }),
                );
                self.task(
                    step,
                    &format!("{s}.update"),
                    Some("Scheduler"),
                    json!({
                        "Comment": "UpdateSchedule replaces the schedule: its expression, window and target are sent back with State DISABLED",
                        "Resource": sdk("scheduler", "updateSchedule"),
                        "Parameters": {
                            "Name.$": "$.schedule.Name",
                            "GroupName.$": "$.schedule.GroupName",
                            "ScheduleExpression.$": "$.schedule.ScheduleExpression",
                            "FlexibleTimeWindow.$": "$.schedule.FlexibleTimeWindow",
                            "Target.$": "$.schedule.Target",
                            "State": "DISABLED",
                        },
                        "ResultPath": null,
                        "Next": next,
                    }),
                );
            }
            ScheduleKind::Rule => self.task(
                step,
                s,
                Some("EventBridge"),
                json!({
                    "Comment": action,
                    "Resource": sdk("eventbridge", "disableRule"),
                    "Parameters": {"Name": name},
                    "ResultPath": null,
                    "Next": next,
                }),
            ),
        }
    }

    fn create_secondary(&mut self, action: &str, next: &str) {
        let step = StepKind::CreateSecondaryEnvironment;
        let s = step.as_str();
        self.task(
            step,
            s,
            Some("Mwaa"),
            json!({
                "Comment": format!("{action}: an environment of this name that exists already is not created again"),
                "Resource": sdk("mwaa", "getEnvironment"),
                "Parameters": {"Name": self.targets.secondary},
                "ResultSelector": {"status.$": "$.Environment.Status"},
                "ResultPath": "$.secondary",
                "Next": next,
            }),
        );
        // Only "does not exist" leads on to CreateEnvironment.
        self.replace_catch(
            s,
            json!([
                {"ErrorEquals": ["Mwaa.ResourceNotFoundException", "mwaa.ResourceNotFoundException"], "ResultPath": null, "Next": format!("{s}.list")},
                {"ErrorEquals": ["States.ALL"], "ResultPath": "$.failure", "Next": format!("failed.{s}")},
            ]),
        );
        self.newest_saved_definition();
        self.create_environment(next);
    }

    /// `list` → `read`: the newest definition of the primary saved in the store, into
    /// `$.saved.definition`, then on to `create`.
    fn newest_saved_definition(&mut self) {
        let step = StepKind::CreateSecondaryEnvironment;
        let s = step.as_str();
        self.task(
            step,
            &format!("{s}.list"),
            Some("S3"),
            json!({
                "Comment": "the saved definitions of the primary (keys sort by time)",
                "Resource": sdk("s3", "listObjectsV2"),
                "Parameters": {"Bucket": self.settings.bucket, "Prefix": self.environments_prefix()},
                "ResultSelector": {"keys.$": "$.Contents[*].Key"},
                "ResultPath": "$.saved",
                "Next": format!("{s}.read"),
            }),
        );
        self.task(
            step,
            &format!("{s}.read"),
            Some("S3"),
            json!({
                "Comment": "the newest saved definition",
                "Resource": sdk("s3", "getObject"),
                "Parameters": {
                    "Bucket": self.settings.bucket,
                    "Key.$": "States.ArrayGetItem($.saved.keys, States.MathAdd(States.ArrayLength($.saved.keys), -1))",
                },
                "ResultSelector": {"definition.$": "States.StringToJson($.Body)"},
                "ResultPath": "$.saved",
                "Next": format!("{s}.create"),
            }),
        );
    }

    /// `create`: CreateEnvironment of the secondary from the saved definition, then `next`.
    fn create_environment(&mut self, next: &str) {
        let step = StepKind::CreateSecondaryEnvironment;
        let s = step.as_str();
        let new = &self.targets.new_environment;
        let overrides = json!({
            "Name": self.targets.secondary,
            "ExecutionRoleArn": new.role_arn,
            "SourceBucketArn": new.dags_bucket.as_ref().map(|b| format!("arn:aws:s3:::{b}")),
            "NetworkConfiguration": {
                "SubnetIds": new.subnet_ids,
                "SecurityGroupIds": new.security_group_ids,
            },
        });
        self.task(
            step,
            &format!("{s}.create"),
            Some("Mwaa"),
            json!({
                "QueryLanguage": "JSONata",
                "Comment": "CreateEnvironment: the saved definition's settings with the secondary's name, role, network and DAGs bucket (as failover::secondary_definition)",
                "Resource": sdk("mwaa", "createEnvironment"),
                "Arguments": create_arguments(&overrides),
                "Output": "{% $states.input %}",
                "Next": next,
            }),
        );
        // JSONata states catch into `$states.errorOutput`, not a ResultPath.
        self.replace_catch(
            &format!("{s}.create"),
            json!([{
                "ErrorEquals": ["States.ALL"],
                "Output": "{% $merge([$states.input, {'failure': $states.errorOutput}]) %}",
                "Next": format!("failed.{s}"),
            }]),
        );
    }

    fn wait_available(&mut self, action: &str, next: &str) {
        let step = StepKind::WaitSecondaryAvailable;
        let s = step.as_str();
        self.add(
            s,
            json!({
                "Type": "Wait",
                "Comment": format!("{action}: every MWAA_CREATE_ENV_POLLING_INTERVAL_SECS"),
                "Seconds": self.targets.create_env_polling_interval.as_secs().max(1),
                "Next": format!("{s}.status"),
            }),
        );
        self.status_check(step, &format!("{s}.status"), s, next);
    }

    fn confirm_available(&mut self, action: &str, next: &str) {
        let step = StepKind::ConfirmSecondaryAvailable;
        let s = step.as_str();
        self.add(
            s,
            json!({"Type": "Pass", "Comment": action, "Next": format!("{s}.status")}),
        );
        self.status_check(
            step,
            &format!("{s}.status"),
            &format!("failed.{s}.status"),
            next,
        );
        self.add(
            &format!("failed.{s}.status"),
            json!({
                "Type": "Pass",
                "Parameters": {
                    "Error": "mwaa-dr.failed",
                    "Cause.$": format!("States.Format('{} is {{}}, not AVAILABLE', $.secondary.status)", self.targets.secondary),
                },
                "ResultPath": "$.failure",
                "Next": format!("failed.{s}"),
            }),
        );
    }

    /// GetEnvironment of the secondary: AVAILABLE goes on to `next`, a status that will not
    /// become AVAILABLE fails, any other goes to `otherwise`.
    fn status_check(&mut self, step: StepKind, name: &str, otherwise: &str, next: &str) {
        let s = step.as_str();
        self.task(
            step,
            name,
            Some("Mwaa"),
            json!({
                "Resource": sdk("mwaa", "getEnvironment"),
                "Parameters": {"Name": self.targets.secondary},
                "ResultSelector": {"status.$": "$.Environment.Status"},
                "ResultPath": "$.secondary",
                "Next": format!("{name}.judge"),
            }),
        );
        let failed: Vec<Value> = ["CREATE_FAILED", "UPDATE_FAILED", "DELETING", "DELETED"]
            .iter()
            .map(|st| json!({"Variable": "$.secondary.status", "StringEquals": st, "Next": format!("{name}.failed")}))
            .collect();
        let mut choices = vec![
            json!({"Variable": "$.secondary.status", "StringEquals": "AVAILABLE", "Next": next}),
        ];
        choices.extend(failed);
        self.add(
            &format!("{name}.judge"),
            json!({"Type": "Choice", "Choices": choices, "Default": otherwise}),
        );
        self.add(
            &format!("{name}.failed"),
            json!({
                "Type": "Pass",
                "Parameters": {
                    "Error": "mwaa-dr.failed",
                    "Cause.$": format!("States.Format('{} has status {{}}', $.secondary.status)", self.targets.secondary),
                },
                "ResultPath": "$.failure",
                "Next": format!("failed.{s}"),
            }),
        );
    }

    fn restore(&mut self, action: &str, next: &str) {
        let step = StepKind::RestoreLatestBackup;
        let s = step.as_str();
        let dag = &self.settings.restore_dag;
        let mut conf = Map::new();
        for (k, v) in &self.settings.restore_conf {
            conf.insert(k.clone(), v.clone());
        }
        conf.insert("clean".into(), true.into());
        conf.insert("task_token.$".into(), "$$.Task.Token".into());
        self.task(
            step,
            s,
            Some("Mwaa"),
            json!({
                "Comment": format!("{action}: the DAG's task answers the task token with its report"),
                "Resource": sdk("mwaa", "invokeRestApi.waitForTaskToken"),
                "Parameters": {
                    "Name": self.targets.secondary,
                    "Method": "POST",
                    "Path": format!("/dags/{dag}/dagRuns"),
                    "Body": {
                        "dag_run_id.$": "States.Format('mwaa-dr-sfn-{}', $$.Execution.Name)",
                        // Airflow 3's API requires the key (its schema has no default), and
                        // Airflow 2's refuses a null one: a time suits both. The state's
                        // entry time is the same on each retry of the call.
                        "logical_date.$": "$$.State.EnteredTime",
                        "conf": conf,
                    },
                },
                "TimeoutSeconds": self.targets.timeout.as_secs().max(1),
                "ResultPath": "$.restore",
                "Next": format!("{s}.check_unpaused"),
            }),
        );
        self.add(
            &format!("{s}.check_unpaused"),
            json!({
                "Type": "Choice",
                "Comment": "the restore unpaused the DAGs active in the primary; those the secondary had not parsed yet are unpaused now",
                "Choices": [{"Variable": "$.restore.missing_dags[0]", "IsPresent": true, "Next": format!("{s}.unpause")}],
                "Default": next,
            }),
        );
        self.add(
            &format!("{s}.unpause"),
            json!({
                "Type": "Map",
                "ItemsPath": "$.restore.missing_dags",
                "MaxConcurrency": 4,
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "INLINE"},
                    "StartAt": "unpause_dag",
                    "States": {
                        "unpause_dag": {
                            "Type": "Task",
                            "Resource": sdk("mwaa", "invokeRestApi"),
                            "Parameters": {
                                "Name": self.targets.secondary,
                                "Method": "PATCH",
                                "Path.$": "States.Format('/dags/{}', $)",
                                "QueryParameters": {"update_mask": "is_paused"},
                                "Body": {"is_paused": false},
                            },
                            "Retry": [{
                                "ErrorEquals": ["States.ALL"],
                                "IntervalSeconds": 30,
                                "MaxAttempts": 10,
                                "BackoffRate": 1.0,
                            }],
                            "End": true,
                        }
                    }
                },
                "ResultPath": null,
                "Catch": catch(step),
                "Next": next,
            }),
        );
    }

    fn notify(&mut self, action: &str, next: &str) {
        let step = StepKind::Notify;
        let s = step.as_str();
        let Some(topic) = self.targets.sns_topic.clone() else {
            self.add(s, json!({"Type": "Pass", "Comment": action, "Next": next}));
            return;
        };
        let t = self.targets;
        self.task(
            step,
            s,
            None,
            json!({
                "Comment": action,
                "Resource": "arn:aws:states:::sns:publish",
                "Parameters": {
                    "TopicArn": topic,
                    "Subject": truncate_subject(&format!("mwaa-dr failover to {} succeeded", t.secondary)),
                    "Message.$": format!(
                        "States.Format('mwaa-dr failover of {} to {} ({}) succeeded in execution {{}}: the secondary holds the latest backup and the DAGs active in the primary are unpaused.', $$.Execution.Id)",
                        asl_literal(&t.primary), asl_literal(&t.secondary), dr_type_name(t.dr_type)
                    ),
                },
                "ResultPath": null,
                "Next": next,
            }),
        );
    }

    /// `notify_failure` → `failed`: every failure ends here.
    fn failure_path(&mut self) {
        let t = self.targets;
        match &t.sns_topic {
            Some(topic) => self.add(
                NOTIFY_FAILURE,
                json!({
                    "Type": "Task",
                    "Resource": "arn:aws:states:::sns:publish",
                    "Parameters": {
                        "TopicArn": topic,
                        "Subject": truncate_subject(&format!("mwaa-dr failover to {} FAILED", t.secondary)),
                        "Message.$": format!(
                            "States.Format('mwaa-dr failover of {} to {} FAILED at step {{}} in execution {{}}: {{}}: {{}}. Start the execution again (or run `mwaa-dr failover`) to resume.', $.failure.step, $$.Execution.Id, $.failure.error, $.failure.cause)",
                            asl_literal(&t.primary), asl_literal(&t.secondary)
                        ),
                    },
                    "Retry": retry(None),
                    "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.notify_error", "Next": FAILED}],
                    "ResultPath": null,
                    "Next": FAILED,
                }),
            ),
            None => self.add(
                NOTIFY_FAILURE,
                json!({"Type": "Pass", "Comment": "no SNS topic configured (DR_SNS_TOPIC_ARN)", "Next": FAILED}),
            ),
        }
        // A Fail state may not raise the reserved `States.*` names (States.Runtime,
        // States.Timeout, ...): those end under the project's own name, the original in the
        // cause.
        self.add(
            FAILED,
            json!({
                "Type": "Choice",
                "Choices": [{"Variable": "$.failure.error", "StringMatches": "States.*", "Next": FAILED_RESERVED}],
                "Default": FAILED_WITH_ERROR,
            }),
        );
        self.add(
            FAILED_WITH_ERROR,
            json!({
                "Type": "Fail",
                "Comment": "the failover failed; the topic was told",
                "ErrorPath": "$.failure.error",
                "CausePath": "$.failure.cause",
            }),
        );
        self.add(
            FAILED_RESERVED,
            json!({
                "Type": "Fail",
                "Comment": "the failover failed on a Step Functions error; the topic was told",
                "Error": "mwaa-dr.failed",
                "CausePath": "$.failure.cause",
            }),
        );
    }
}

/// A JSONata Pass state's output: the input plus `clock`: `start`/`end` of the heartbeat
/// window, and `stamp`, the start of the day in the key format of store/environments.rs: a
/// healthy primary's definition is saved once a day (overwritten through the day), so the
/// folder grows by one object a day and the newest still sorts last among the CLI's saves.
const CLOCK: &str = "{% $merge([$states.input, {'clock': {'start': $fromMillis($millis() - 600000), 'end': $fromMillis($millis() + 60000), 'stamp': $fromMillis($millis(), '[Y0001][M01][D01]T000000.000000Z')}}]) %}";

/// CreateEnvironment's arguments: each setting CreateEnvironment accepts, taken from the
/// saved definition by a JSONata expression (null when the definition has none: the SDK
/// leaves it unset), logging without the primary's log groups, and `overrides` (the
/// secondary's own name, role, network and DAGs bucket) as they are. An object, not one
/// expression, as the States Language schema of CloudFormation requires.
fn create_arguments(overrides: &Value) -> Value {
    const ACCEPTED: &[&str] = &[
        "AirflowConfigurationOptions",
        "AirflowVersion",
        "DagS3Path",
        "EndpointManagement",
        "EnvironmentClass",
        "KmsKey",
        "MaxWebservers",
        "MaxWorkers",
        "MinWebservers",
        "MinWorkers",
        "PluginsS3ObjectVersion",
        "PluginsS3Path",
        "RequirementsS3ObjectVersion",
        "RequirementsS3Path",
        "Schedulers",
        "StartupScriptS3ObjectVersion",
        "StartupScriptS3Path",
        "Tags",
        "WebserverAccessMode",
        "WeeklyMaintenanceWindowStart",
    ];
    const SAVED: &str = "$states.input.saved.definition";
    let mut args = Map::new();
    for key in ACCEPTED {
        args.insert(
            (*key).to_string(),
            format!("{{% $exists({SAVED}.{key}) ? {SAVED}.{key} : null %}}").into(),
        );
    }
    args.insert(
        "LoggingConfiguration".into(),
        format!(
            "{{% $exists({SAVED}.LoggingConfiguration) ? $merge($each({SAVED}.LoggingConfiguration, function($v, $k) {{ {{$k: {{'Enabled': $v.Enabled, 'LogLevel': $v.LogLevel}}}} }})) : null %}}"
        )
        .into(),
    );
    if let Some(o) = overrides.as_object() {
        for (k, v) in o {
            args.insert(k.clone(), v.clone());
        }
    }
    Value::Object(args)
}

/// A string safe inside a single-quoted `States.Format` literal.
fn asl_literal(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if matches!(c, '\'' | '{' | '}' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// SNS subjects hold at most 100 characters.
fn truncate_subject(s: &str) -> String {
    s.chars().take(100).collect()
}

/// The timeout of the whole machine, as `definition` sets it.
pub fn machine_timeout(targets: &Targets) -> Duration {
    Duration::from_secs(targets.timeout.as_secs().max(1) + MACHINE_MARGIN_SECS)
}

/// The name `deploy` gives the state machine, and `failover --via-step-functions` looks for.
pub fn state_machine_name(stack_name_prefix: &str) -> String {
    crate::deploy::cloudformation::Names::new(stack_name_prefix, "").state_machine()
}

/// Checks a definition's graph: `StartAt` and every `Next` / `Default` / `Choices[].Next` /
/// `Catch[].Next` name an existing state, every state is reachable from `StartAt`, a
/// non-terminal state has a successor, and the graph has an end (`Succeed`, `Fail` or
/// `End`); `Map` item processors are checked the same way. Returns what is wrong.
pub fn check_structure(definition: &Value) -> Result<(), String> {
    check_graph(definition, "")
}

fn check_graph(graph: &Value, scope: &str) -> Result<(), String> {
    let states = graph
        .get("States")
        .and_then(Value::as_object)
        .ok_or_else(|| format!("{scope}no States object"))?;
    let start = graph
        .get("StartAt")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{scope}no StartAt"))?;
    if !states.contains_key(start) {
        return Err(format!("{scope}StartAt {start} is no state"));
    }
    let mut ends = 0;
    for (name, state) in states {
        let kind = state.get("Type").and_then(Value::as_str).unwrap_or("");
        let targets = successors(state);
        for t in &targets {
            if !states.contains_key(t) {
                return Err(format!("{scope}{name} goes to {t}, which is no state"));
            }
        }
        let terminal = matches!(kind, "Succeed" | "Fail")
            || state.get("End").and_then(Value::as_bool) == Some(true);
        if terminal {
            ends += 1;
        } else if kind == "Choice" {
            if state.get("Choices").and_then(Value::as_array).is_none() {
                return Err(format!("{scope}{name}: a Choice without Choices"));
            }
        } else if state.get("Next").and_then(Value::as_str).is_none() {
            return Err(format!("{scope}{name} ({kind}) has neither Next nor End"));
        }
        if let Some(inner) = state.get("ItemProcessor") {
            check_graph(inner, &format!("{scope}{name} > "))?;
        }
    }
    if ends == 0 {
        return Err(format!("{scope}no state ends the execution"));
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut todo = vec![start.to_string()];
    while let Some(n) = todo.pop() {
        if seen.insert(n.clone())
            && let Some(state) = states.get(&n)
        {
            todo.extend(successors(state));
        }
    }
    if let Some(lost) = states.keys().find(|k| !seen.contains(*k)) {
        return Err(format!("{scope}{lost} is not reachable from {start}"));
    }
    Ok(())
}

/// The states a state can go to.
fn successors(state: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut push = |v: Option<&Value>| {
        if let Some(s) = v.and_then(Value::as_str) {
            out.push(s.to_string());
        }
    };
    push(state.get("Next"));
    push(state.get("Default"));
    for key in ["Choices", "Catch"] {
        if let Some(list) = state.get(key).and_then(Value::as_array) {
            for item in list {
                push(item.get("Next"));
            }
        }
    }
    out
}

/// The failover timeline of an execution of the generated machine, from its history: one
/// record per planned step it reached, from the first state of the step entered to the last
/// one left; a step whose `failed.<step>` state was entered, or at which the execution
/// stopped, failed with the execution's error.
pub fn timeline(
    dr_type: DrType,
    execution_name: &str,
    execution: &ExecutionState,
    events: &[StateEvent],
) -> Timeline {
    let (mut steps, failed_at) = steps_reached(events);
    judge_steps(&mut steps, failed_at, execution, events);
    let recovered = execution.status == "SUCCEEDED" && visited(events, RECOVERED);
    let restored = steps
        .iter()
        .find(|r| r.step == StepKind::RestoreLatestBackup && r.outcome == StepOutcome::Ok)
        .map(|r| r.finished_at);
    Timeline {
        run_id: execution_name.to_string(),
        dr_type,
        resumed: false,
        started_at: execution.started_at,
        finished_at: if recovered {
            execution.stopped_at
        } else {
            None
        },
        recovery_seconds: restored
            .filter(|_| recovered)
            .map(|end| (end - execution.started_at).num_milliseconds() as f64 / 1000.0),
        steps,
    }
}

/// One record per planned step the history reached (its first state entered to its last one
/// left, outcome Ok for now), and the step whose `failed.<step>` state was entered.
fn steps_reached(events: &[StateEvent]) -> (Vec<StepRecord>, Option<StepKind>) {
    let mut steps: Vec<StepRecord> = Vec::new();
    let mut failed_at: Option<StepKind> = None;
    for e in events {
        if let Some(failed) = e.state.strip_prefix("failed.") {
            if e.entered
                && let Some(step) = step_of_state(failed)
            {
                failed_at = Some(step);
            }
            continue;
        }
        let Some(step) = step_of_state(&e.state) else {
            continue;
        };
        match steps.iter_mut().find(|r| r.step == step) {
            Some(r) => r.finished_at = e.at,
            None => steps.push(StepRecord {
                step,
                started_at: e.at,
                finished_at: e.at,
                outcome: StepOutcome::Ok,
                details: String::new(),
            }),
        }
    }
    (steps, failed_at)
}

/// Each step's outcome and details: the step that failed (or the last one, when the
/// execution stopped otherwise than by succeeding) carries the execution's error; the check
/// says what it found.
fn judge_steps(
    steps: &mut [StepRecord],
    failed_at: Option<StepKind>,
    execution: &ExecutionState,
    events: &[StateEvent],
) {
    let running = execution.status == "RUNNING";
    let last = steps.len().saturating_sub(1);
    for (i, r) in steps.iter_mut().enumerate() {
        let stopped_here =
            i == last && !running && execution.status != "SUCCEEDED" && failed_at.is_none();
        if failed_at == Some(r.step) || stopped_here {
            r.outcome = StepOutcome::Failed;
            r.details = execution_failure(execution);
        } else if r.step == StepKind::ConfirmPrimaryUnhealthy {
            r.details = if visited(events, &format!("{}.simulated", r.step.as_str())) {
                "unhealthy: simulated disaster (simulate_dr)".into()
            } else if visited(events, &format!("{}.confirmed", r.step.as_str())) {
                format!("unhealthy: confirmed before the start ({PRIMARY_UNHEALTHY} in the input)")
            } else if visited(events, HEALTHY) {
                "healthy: nothing to recover".into()
            } else {
                "unhealthy: no heartbeat above 0 in any look".into()
            };
        } else {
            r.details = "done in Step Functions".into();
        }
    }
}

/// Whether the history entered the state `name`.
fn visited(events: &[StateEvent], name: &str) -> bool {
    events.iter().any(|e| e.entered && e.state == name)
}

/// The execution's status and error, with the first 500 characters of its cause.
fn execution_failure(execution: &ExecutionState) -> String {
    let mut d = format!(
        "execution {}: {}",
        execution.status,
        execution.error.as_deref().unwrap_or("")
    );
    if let Some(c) = execution.cause.as_deref().filter(|c| !c.is_empty()) {
        d.push_str(&format!(": {}", c.chars().take(500).collect::<String>()));
    }
    d
}

/// Whether a finished execution stopped because the primary was healthy.
pub fn ended_healthy(execution: &ExecutionState, events: &[StateEvent]) -> bool {
    execution.status == "SUCCEEDED" && visited(events, HEALTHY)
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;

    use super::*;
    use crate::failover::NewEnvironment;
    use crate::model::HealthCheckSettings;

    fn targets(dr_type: DrType, max_retry: u32) -> Targets {
        Targets {
            dr_type,
            primary: "prim".into(),
            secondary: "sec".into(),
            secondary_region: Some("us-east-2".into()),
            schedule: Some("mwaa-dr-health".into()),
            sns_topic: Some("arn:aws:sns:us-east-2:123456789012:dr".into()),
            force: false,
            health: HealthCheckSettings {
                enabled: true,
                interval: Duration::from_secs(300),
                max_retry,
                retry_interval: Duration::from_secs(10),
                backoff_rate: 2.0,
                max_retry_wait: Duration::from_secs(25),
                schedule_name: Some("mwaa-dr-health".into()),
                simulate_dr: false,
            },
            original_file: "environment.json".into(),
            new_environment: NewEnvironment {
                role_arn: Some("arn:aws:iam::123456789012:role/sec".into()),
                dags_bucket: Some("sec-dags".into()),
                subnet_ids: vec!["subnet-1".into(), "subnet-2".into()],
                security_group_ids: vec!["sg-1".into()],
            },
            create_env_polling_interval: Duration::from_secs(60),
            timeout: Duration::from_secs(3600),
            restore_dag: None,
        }
    }

    fn settings() -> WorkflowSettings {
        let mut conf = Map::new();
        conf.insert("variable_strategy".into(), "APPEND".into());
        WorkflowSettings {
            bucket: "backups".into(),
            prefix: "dr/".into(),
            schedule_kind: ScheduleKind::Scheduler { group: None },
            restore_dag: "restore_metadata".into(),
            restore_conf: conf,
            primary_elsewhere: false,
        }
    }

    fn states(def: &Value) -> &Map<String, Value> {
        def["States"].as_object().expect("States")
    }

    #[test]
    fn every_variant_is_a_well_formed_graph_that_follows_the_plan() {
        for dr_type in [DrType::BackupRestore, DrType::WarmStandby] {
            for max_retry in [0, 3] {
                let t = targets(dr_type, max_retry);
                let def = definition(&t, &settings());
                check_structure(&def).unwrap_or_else(|e| panic!("{dr_type:?}/{max_retry}: {e}"));
                let s = states(&def);
                // Every planned step has its entry state, each failure state, in plan order
                // along the success path.
                let plan: Vec<StepKind> = t.steps().into_iter().map(|(k, _)| k).collect();
                assert_eq!(def["StartAt"], plan[0].as_str());
                for step in &plan {
                    assert!(s.contains_key(step.as_str()), "{step:?} has no state");
                }
                for step in [
                    StepKind::ConfirmPrimaryUnhealthy,
                    StepKind::RestoreLatestBackup,
                ] {
                    assert!(s.contains_key(&format!("failed.{}", step.as_str())));
                }
                for name in s.keys() {
                    let known = step_of_state(name).is_some()
                        || name.starts_with(HEALTHY)
                        || name.starts_with("failed")
                        || [RECOVERED, NOTIFY_FAILURE, INVALID_INPUT].contains(&name.as_str());
                    assert!(known, "{name} maps to no step");
                    if let Some(step) = step_of_state(name) {
                        assert!(plan.contains(&step), "{name}: {step:?} is not planned");
                    }
                }
                // One look, plus one per retry, each with its own Wait before it.
                let looks = s.keys().filter(|k| k.contains(".heartbeat")).count();
                assert_eq!(looks, max_retry as usize + 1);
                let waits = s
                    .keys()
                    .filter(|k| k.starts_with("confirm_primary_unhealthy.wait"))
                    .count();
                assert_eq!(waits, max_retry as usize);
                assert_eq!(
                    s.contains_key(&format!("{HEALTHY}.save_definition")),
                    dr_type == DrType::BackupRestore
                );
                assert_eq!(
                    s.contains_key("create_secondary_environment.create"),
                    dr_type == DrType::BackupRestore
                );
            }
        }
    }

    #[test]
    fn the_waits_are_the_cli_backoff_and_the_timeout_is_the_configured_one() {
        let t = targets(DrType::WarmStandby, 3);
        let def = definition(&t, &settings());
        let s = states(&def);
        let secs: Vec<u64> = (1..=3)
            .map(|n| {
                s[&format!("confirm_primary_unhealthy.wait{n}")]["Seconds"]
                    .as_u64()
                    .expect("seconds")
            })
            .collect();
        // 10 s, ×2, capped at 25 s: what `health-check` sleeps.
        assert_eq!(secs, vec![10, 20, 25]);
        assert_eq!(
            health::retry_waits(&t.health)
                .iter()
                .map(Duration::as_secs)
                .collect::<Vec<_>>(),
            secs
        );
        assert_eq!(s["restore_latest_backup"]["TimeoutSeconds"], 3600);
        assert_eq!(def["TimeoutSeconds"], machine_timeout(&t).as_secs());
        assert!(machine_timeout(&t) > t.timeout);
    }

    #[test]
    fn the_restore_waits_for_its_task_token_through_the_rest_api() {
        let def = definition(&targets(DrType::WarmStandby, 0), &settings());
        let r = &states(&def)["restore_latest_backup"];
        assert_eq!(
            r["Resource"],
            "arn:aws:states:::aws-sdk:mwaa:invokeRestApi.waitForTaskToken"
        );
        assert_eq!(r["Parameters"]["Path"], "/dags/restore_metadata/dagRuns");
        // A logical date both REST APIs accept: Airflow 3 requires the key.
        assert_eq!(
            r["Parameters"]["Body"]["logical_date.$"],
            "$$.State.EnteredTime"
        );
        let conf = &r["Parameters"]["Body"]["conf"];
        assert_eq!(conf["task_token.$"], "$$.Task.Token");
        assert_eq!(conf["clean"], true);
        assert_eq!(conf["variable_strategy"], "APPEND");
        let retry = r["Retry"][0]["ErrorEquals"].as_array().expect("retry");
        assert!(retry.contains(&json!("mwaa-dr.transient")));
        assert!(retry.contains(&json!("Mwaa.ThrottlingException")));
        assert!(
            !retry.contains(&json!("States.ALL")),
            "only transient errors retry"
        );
        assert_eq!(r["Catch"][0]["Next"], "failed.restore_latest_backup");
    }

    #[test]
    fn the_heartbeat_is_read_as_the_cli_reads_it_and_saved_where_the_cli_saves() {
        let def = definition(&targets(DrType::BackupRestore, 0), &settings());
        let s = states(&def);
        let h = &s["confirm_primary_unhealthy.heartbeat1"];
        assert_eq!(
            h["Resource"],
            "arn:aws:states:::aws-sdk:cloudwatch:getMetricData"
        );
        let stat = &h["Parameters"]["MetricDataQueries"][0]["MetricStat"];
        assert_eq!(stat["Metric"]["Namespace"], NAMESPACE);
        assert_eq!(stat["Metric"]["MetricName"], METRIC);
        assert_eq!(stat["Metric"]["Dimensions"][0]["Value"], "prim");
        assert_eq!(stat["Period"], PERIOD_SECS);
        let save = &s["healthy.save_definition"];
        assert_eq!(save["Parameters"]["Bucket"], "backups");
        assert_eq!(
            save["Parameters"]["Key.$"],
            "States.Format('dr/environments/prim/{}.json', $.clock.stamp)"
        );
        // The key sorts with the CLI's: environments/<name>/%Y%m%dT%H%M%S%.6fZ.json, one a day.
        assert!(CLOCK.contains("[Y0001][M01][D01]T000000.000000Z"));
    }

    #[test]
    fn without_schedule_or_topic_those_steps_pass_and_a_rule_is_disabled_as_a_rule() {
        let mut t = targets(DrType::WarmStandby, 0);
        t.schedule = None;
        t.sns_topic = None;
        let def = definition(&t, &settings());
        check_structure(&def).expect("well formed");
        let s = states(&def);
        assert_eq!(s["disable_health_check"]["Type"], "Pass");
        assert_eq!(s["notify"]["Type"], "Pass");
        assert_eq!(s[NOTIFY_FAILURE]["Type"], "Pass");

        let mut rule = settings();
        rule.schedule_kind = ScheduleKind::Rule;
        let def = definition(&targets(DrType::WarmStandby, 0), &rule);
        assert_eq!(
            states(&def)["disable_health_check"]["Resource"],
            "arn:aws:states:::aws-sdk:eventbridge:disableRule"
        );
    }

    #[test]
    fn the_check_finds_a_dangling_target_an_orphan_and_a_missing_end() {
        let good = definition(&targets(DrType::WarmStandby, 0), &settings());
        let mut dangling = good.clone();
        dangling["States"]["notify"]["Next"] = json!("nowhere");
        assert!(
            check_structure(&dangling)
                .expect_err("dangling")
                .contains("nowhere")
        );
        let mut orphan = good.clone();
        orphan["States"]["stray"] = json!({"Type": "Pass", "End": true});
        assert!(
            check_structure(&orphan)
                .expect_err("orphan")
                .contains("stray")
        );
        let endless = json!({"StartAt": "a", "States": {"a": {"Type": "Pass", "Next": "a"}}});
        assert!(check_structure(&endless).is_err());
        let no_next = json!({"StartAt": "a", "States": {"a": {"Type": "Pass"}}});
        assert!(check_structure(&no_next).is_err());
    }

    #[test]
    fn states_map_back_to_their_steps() {
        assert_eq!(
            step_of_state("confirm_primary_unhealthy.heartbeat2"),
            Some(StepKind::ConfirmPrimaryUnhealthy)
        );
        assert_eq!(step_of_state("notify"), Some(StepKind::Notify));
        assert_eq!(step_of_state("failed.notify"), None);
        assert_eq!(step_of_state(RECOVERED), None);
        assert_eq!(state_machine_name("acme"), "acme-state-machine");
    }

    fn event(secs: i64, state: &str, entered: bool) -> StateEvent {
        StateEvent {
            at: DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap_or_default(),
            state: state.into(),
            entered,
        }
    }

    fn execution(status: &str, error: Option<&str>) -> ExecutionState {
        ExecutionState {
            status: status.into(),
            started_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default(),
            stopped_at: DateTime::from_timestamp(1_700_000_100, 0),
            error: error.map(str::to_string),
            cause: error.map(|_| "the cause".to_string()),
            output: None,
        }
    }

    #[test]
    fn the_history_becomes_the_cli_timeline() {
        let events = [
            event(0, "confirm_primary_unhealthy", true),
            event(0, "confirm_primary_unhealthy", false),
            event(1, "confirm_primary_unhealthy.simulated", true),
            event(1, "confirm_primary_unhealthy.unhealthy", false),
            event(2, "disable_health_check", true),
            event(4, "disable_health_check.update", false),
            event(5, "restore_latest_backup", true),
            event(60, "restore_latest_backup.check_unpaused", false),
            event(61, "notify", true),
            event(62, "notify", false),
            event(62, RECOVERED, true),
        ];
        let t = timeline(
            DrType::WarmStandby,
            "run-1",
            &execution("SUCCEEDED", None),
            &events,
        );
        let steps: Vec<(StepKind, StepOutcome)> =
            t.steps.iter().map(|r| (r.step, r.outcome)).collect();
        assert_eq!(
            steps,
            vec![
                (StepKind::ConfirmPrimaryUnhealthy, StepOutcome::Ok),
                (StepKind::DisableHealthCheck, StepOutcome::Ok),
                (StepKind::RestoreLatestBackup, StepOutcome::Ok),
                (StepKind::Notify, StepOutcome::Ok),
            ]
        );
        assert!(t.steps[0].details.contains("simulated"));
        assert_eq!(
            (t.steps[1].finished_at - t.steps[1].started_at).num_seconds(),
            2
        );
        assert_eq!(t.recovery_seconds, Some(60.0));
        assert!(t.finished_at.is_some());
        assert!(!ended_healthy(&execution("SUCCEEDED", None), &events));

        // Failed at the schedule: that step carries the error, the run is not finished.
        let failed = [
            event(0, "confirm_primary_unhealthy", true),
            event(1, "confirm_primary_unhealthy.unhealthy", false),
            event(2, "disable_health_check", true),
            event(3, "disable_health_check", false),
            event(3, "failed.disable_health_check", true),
            event(4, NOTIFY_FAILURE, true),
            event(5, FAILED, true),
            event(5, FAILED_WITH_ERROR, true),
        ];
        let t = timeline(
            DrType::WarmStandby,
            "run-2",
            &execution("FAILED", Some("Scheduler.ResourceNotFoundException")),
            &failed,
        );
        assert_eq!(t.steps.len(), 2);
        assert_eq!(t.steps[1].outcome, StepOutcome::Failed);
        assert!(
            t.steps[1]
                .details
                .contains("ResourceNotFoundException: the cause")
        );
        assert_eq!(t.steps[0].outcome, StepOutcome::Ok);
        assert!(t.finished_at.is_none() && t.recovery_seconds.is_none());

        // Timed out while restoring: the step it stopped in failed.
        let t = timeline(
            DrType::WarmStandby,
            "run-3",
            &execution("TIMED_OUT", Some("States.Timeout")),
            &events[..7],
        );
        assert_eq!(t.steps[2].step, StepKind::RestoreLatestBackup);
        assert_eq!(t.steps[2].outcome, StepOutcome::Failed);

        // A healthy primary: the check passed and the run ended there.
        let healthy = [
            event(0, "confirm_primary_unhealthy", true),
            event(1, "confirm_primary_unhealthy.judge1", false),
            event(1, HEALTHY, true),
        ];
        let done = execution("SUCCEEDED", None);
        let t = timeline(DrType::WarmStandby, "run-4", &done, &healthy);
        assert!(t.steps[0].details.starts_with("healthy"));
        assert!(ended_healthy(&done, &healthy));
    }

    #[test]
    fn create_environment_takes_the_saved_settings_and_the_secondary_own_values() {
        let def = definition(&targets(DrType::BackupRestore, 0), &settings());
        let create = &states(&def)["create_secondary_environment.create"];
        assert_eq!(create["QueryLanguage"], "JSONata");
        let args = create["Arguments"]
            .as_object()
            .expect("an object, as cfn-lint requires");
        assert_eq!(args["Name"], "sec");
        assert_eq!(
            args["ExecutionRoleArn"],
            "arn:aws:iam::123456789012:role/sec"
        );
        assert_eq!(args["SourceBucketArn"], "arn:aws:s3:::sec-dags");
        assert_eq!(
            args["NetworkConfiguration"]["SubnetIds"],
            json!(["subnet-1", "subnet-2"])
        );
        assert_eq!(
            args["RequirementsS3Path"],
            "{% $exists($states.input.saved.definition.RequirementsS3Path) ? $states.input.saved.definition.RequirementsS3Path : null %}"
        );
        // Not copied: what names the primary, or only describes it.
        for key in [
            "Arn",
            "Status",
            "WebserverUrl",
            "ServiceRoleArn",
            "CreatedAt",
        ] {
            assert!(!args.contains_key(key), "{key}");
        }
        assert!(args["LoggingConfiguration"].as_str().is_some_and(|e| {
            e.contains("'LogLevel': $v.LogLevel") && !e.contains("CloudWatchLogGroupArn")
        }));
    }

    #[test]
    fn names_in_messages_cannot_break_the_format_string() {
        assert_eq!(asl_literal("a'b{c}"), "a\\'b\\{c\\}");
    }

    #[test]
    fn the_heartbeat_machine_looks_as_the_workflow_does_and_announces_a_healthy_primary() {
        for dr_type in [DrType::BackupRestore, DrType::WarmStandby] {
            let t = targets(dr_type, 3);
            let mut primary_store = settings();
            primary_store.bucket = "primary-backups".into();
            let def = heartbeat_definition(&t, &primary_store);
            check_structure(&def).unwrap_or_else(|e| panic!("{dr_type:?}: {e}"));
            let s = states(&def);
            assert_eq!(def["StartAt"], "look.clock1");
            // One look, no retries: the alarm counts the missed looks.
            assert_eq!(s.keys().filter(|k| k.contains(".heartbeat")).count(), 1);
            assert!(!s.keys().any(|k| k.contains(".wait")));
            // The same window and the same metric as the workflow's look (one source).
            let workflow = definition(&t, &settings());
            let w = states(&workflow);
            assert_eq!(
                s["look.clock1"]["Output"],
                w["confirm_primary_unhealthy.clock1"]["Output"]
            );
            assert_eq!(
                s["look.heartbeat1"]["Parameters"],
                w["confirm_primary_unhealthy.heartbeat1"]["Parameters"]
            );
            assert_eq!(s["look.heartbeat1"]["Catch"][0]["Next"], HEARTBEAT_MISSED);
            assert_eq!(s["look.judge1"]["Default"], HEARTBEAT_MISSED);
            assert_eq!(s[HEARTBEAT_MISSED]["Type"], "Succeed");
            let announce = &s["healthy.announce"];
            assert_eq!(announce["Resource"], "arn:aws:states:::events:putEvents");
            let entry = &announce["Parameters"]["Entries"][0];
            assert_eq!(entry["Source"], HEARTBEAT_SOURCE);
            assert_eq!(entry["DetailType"], HEARTBEAT_DETAIL_TYPE);
            assert_eq!(entry["Detail"]["environment"], "prim");
            assert!(
                entry.get("EventBusName").is_none(),
                "the Region's default bus"
            );
            assert_eq!(announce["Next"], HEALTHY);
            let healthy_next = s["look.judge1"]["Choices"][1]["Next"].clone();
            match dr_type {
                DrType::BackupRestore => {
                    assert_eq!(healthy_next, "healthy.get_environment");
                    let save = &s["healthy.save_definition"];
                    assert_eq!(save["Parameters"]["Bucket"], "primary-backups");
                    assert_eq!(
                        save["Parameters"]["Key.$"],
                        w["healthy.save_definition"]["Parameters"]["Key.$"]
                    );
                    // A definition not saved does not hold the heartbeat back.
                    for name in ["healthy.get_environment", "healthy.save_definition"] {
                        assert_eq!(s[name]["Catch"][0]["Next"], "healthy.announce", "{name}");
                    }
                    assert_eq!(save["Next"], "healthy.announce");
                }
                DrType::WarmStandby => {
                    assert_eq!(healthy_next, "healthy.announce");
                    assert!(!s.contains_key("healthy.get_environment"));
                }
            }
            // Nothing of the failover.
            assert!(
                s.keys().all(|k| step_of_state(k).is_none()),
                "{:?}",
                s.keys()
            );
        }
    }

    #[test]
    fn a_confirmed_primary_skips_the_look_and_across_regions_nothing_else_fails_over() {
        for primary_elsewhere in [false, true] {
            for dr_type in [DrType::BackupRestore, DrType::WarmStandby] {
                let mut settings = settings();
                settings.primary_elsewhere = primary_elsewhere;
                settings.schedule_kind = ScheduleKind::Rule;
                let def = definition(&targets(dr_type, 2), &settings);
                check_structure(&def).unwrap_or_else(|e| panic!("{dr_type:?}: {e}"));
                let s = states(&def);
                let entry = &s["confirm_primary_unhealthy"];
                assert_eq!(
                    entry["Choices"][0],
                    json!({"Variable": "$.primary_unhealthy", "IsPresent": true, "Next": "confirm_primary_unhealthy.confirmed"})
                );
                assert_eq!(
                    s["confirm_primary_unhealthy.confirmed"]["Next"],
                    "confirm_primary_unhealthy.unhealthy"
                );
                let reads = s.keys().any(|k| k.contains(".heartbeat"));
                assert_eq!(reads, !primary_elsewhere);
                assert_eq!(s.contains_key(HEALTHY), !primary_elsewhere);
                assert_eq!(
                    s.contains_key("healthy.save_definition"),
                    !primary_elsewhere && dr_type == DrType::BackupRestore
                );
                if primary_elsewhere {
                    // No input, or simulate_dr false / NO: refused, not failed over.
                    assert_eq!(
                        entry["Choices"][1]["Next"],
                        "confirm_primary_unhealthy.unconfirmed"
                    );
                    assert_eq!(
                        s["confirm_primary_unhealthy.simulate_flag"]["Default"],
                        "confirm_primary_unhealthy.unconfirmed"
                    );
                    let refused = &s["confirm_primary_unhealthy.unconfirmed"];
                    assert_eq!(refused["Parameters"]["Error"], "mwaa-dr.usage");
                    assert_eq!(refused["Next"], "failed.confirm_primary_unhealthy");
                    assert_eq!(
                        s["disable_health_check"]["Resource"],
                        "arn:aws:states:::aws-sdk:eventbridge:disableRule"
                    );
                } else {
                    assert_eq!(
                        entry["Choices"][1]["Next"],
                        "confirm_primary_unhealthy.clock1"
                    );
                }
            }
        }
    }

    #[test]
    fn a_confirmed_start_shows_in_the_timeline() {
        let events = vec![
            event(0, "confirm_primary_unhealthy", true),
            event(0, "confirm_primary_unhealthy.confirmed", true),
            event(1, "confirm_primary_unhealthy.unhealthy", false),
        ];
        let t = timeline(
            DrType::WarmStandby,
            "x",
            &execution("RUNNING", None),
            &events,
        );
        assert!(
            t.steps[0].details.contains("confirmed before the start"),
            "{}",
            t.steps[0].details
        );
    }
}
