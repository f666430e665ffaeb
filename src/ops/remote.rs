//! Running a DR DAG (backup, restore, cleanup) in an MWAA environment from outside, through
//! InvokeRestApi: wait until the DAG is parsed, unpause it, trigger it with its conf, follow
//! the run to its end and bring back the report the task wrote to the backup store
//! (`runs/<dag_id>/<run_id>.json`): InvokeRestApi's 64-character Path cannot reach the task's
//! XCom or log, so the store the DAG was rendered with must be the one this caller reads.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::aws::airflow_api::{AirflowApi, DagRun};
use crate::aws::mwaa::Mwaa;
use crate::error::{Error, Result};
use crate::store::BackupStore;
use crate::store::runs::{self, DagRunRef};

/// Runs of one DR DAG that a resumed caller tries before it gives up (each a failed one).
const MAX_ATTEMPTS: u32 = 20;

/// What to run where, and how long to wait.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    pub environment: String,
    pub dag_id: String,
    pub conf: Map<String, Value>,
    /// Seeds the run ids: the same seed finds the same runs again (a resumed failover),
    /// never triggering a second run while one is queued, running or succeeded.
    pub seed: String,
    pub started_at: DateTime<Utc>,
    /// The whole wait: for the DAG to be parsed, then for the run to end.
    pub timeout: Duration,
    pub poll: Duration,
    /// How long one REST call retries throttling and server errors.
    pub retry_for: Duration,
}

/// How the run ended.
#[derive(Debug, Clone, Serialize)]
pub struct RemoteReport {
    pub environment: String,
    pub dag_id: String,
    pub dag_run_id: String,
    pub state: String,
    /// Triggered now (false: an earlier attempt's run was found and followed).
    pub triggered: bool,
    pub seconds: f64,
    /// The DR task's JSON report, read from the store, when it was there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<Value>,
    /// Why the report is missing, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_note: Option<String>,
}

/// Whether a DAG run was triggered by `mwaa-dr` from outside (see [`run_id`]): the caller
/// follows it and reports its outcome itself.
pub fn triggered_by_mwaa_dr(run_id: &str) -> bool {
    run_id.starts_with(RUN_ID_PREFIX)
}

const RUN_ID_PREFIX: &str = "mwaa-dr__";

/// The run id of attempt `attempt` for `seed`: `mwaa-dr__<UTC yyyymmddThhmmssZ>__<4 hex>`,
/// the same for the same inputs.
pub fn run_id(started_at: DateTime<Utc>, seed: &str, attempt: u32) -> String {
    // FNV-1a: stable across builds and platforms, unlike the std hasher.
    let mut hash: u32 = 0x811c_9dc5;
    for byte in seed.bytes().chain(attempt.to_le_bytes()) {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!(
        "{RUN_ID_PREFIX}{}__{:04x}",
        started_at.format("%Y%m%dT%H%M%SZ"),
        hash & 0xffff
    )
}

/// Triggers (or finds again) the run and follows it to its end, then reads the task's report
/// from `store`. A failed run is an error carrying the task's own error from its report; a
/// cancelled follow says the run keeps going.
pub async fn run_dag(
    options: &RemoteOptions,
    mwaa: &dyn Mwaa,
    store: &dyn BackupStore,
    cancel: &CancellationToken,
) -> Result<RemoteReport> {
    let started = Instant::now();
    let api = AirflowApi::connect(mwaa, &options.environment, options.retry_for).await?;
    api.check_triggerable(&options.dag_id)?;
    wait_parsed_and_unpaused(&api, options, started, cancel).await?;
    let (run, triggered) = trigger_or_find(&api, options).await?;
    let run_id = run.dag_run_id.clone();
    info!(environment = %options.environment, dag = %options.dag_id, run = %run_id, triggered, "following the DR DAG run");
    let run = follow(&api, options, run, started, cancel).await?;
    let state = run.state.clone().unwrap_or_default();
    let seconds = started.elapsed().as_secs_f64();
    let run_ref = DagRunRef {
        dag_id: options.dag_id.clone(),
        run_id: run_id.clone(),
    };
    let stored = runs::load(store, &run_ref).await;
    if state != "success" {
        return Err(failed_run(options, store, &run_ref, &state, stored));
    }
    let (report, report_note) = match stored {
        Ok(Some(report)) => (Some(report), None),
        Ok(None) => (
            None,
            Some(format!(
                "no report at {}/{}: is the DAG rendered with this store (DR_BACKUP_STORE)?",
                store.describe(),
                runs::key(&run_ref).unwrap_or_default()
            )),
        ),
        Err(e) => {
            warn!(error = %e, "the run succeeded but its report could not be read");
            (None, Some(e.to_string()))
        }
    };
    Ok(RemoteReport {
        environment: options.environment.clone(),
        dag_id: options.dag_id.clone(),
        dag_run_id: run_id,
        state,
        triggered,
        seconds,
        report,
        report_note,
    })
}

async fn sleep_or_cancel(
    poll: Duration,
    cancel: &CancellationToken,
    on_cancel: impl FnOnce() -> Error,
) -> Result<()> {
    tokio::select! {
        () = tokio::time::sleep(poll) => Ok(()),
        () = cancel.cancelled() => Err(on_cancel()),
    }
}

async fn wait_parsed_and_unpaused(
    api: &AirflowApi<'_>,
    options: &RemoteOptions,
    started: Instant,
    cancel: &CancellationToken,
) -> Result<()> {
    let mut logged = false;
    loop {
        match api.get_dag(&options.dag_id).await? {
            Some(dag) => {
                if dag.is_paused != Some(false)
                    && api.set_paused(&options.dag_id, false).await?.is_none()
                {
                    // Gone between the two calls: wait for it again.
                } else {
                    return Ok(());
                }
            }
            None if !logged => {
                info!(environment = %options.environment, dag = %options.dag_id, "waiting for the scheduler to parse the DAG");
                logged = true;
            }
            None => {}
        }
        if started.elapsed() + options.poll > options.timeout {
            return Err(Error::failed(
                format!("wait for the DAG {}", options.dag_id),
                format!("MWAA environment {}", options.environment),
                format!(
                    "not parsed after {:.0} s (STATE_MACHINE_TIMEOUT_MINS): is its file in the environment's DAGs folder (`mwaa-dr dags render`), and does it import cleanly?",
                    started.elapsed().as_secs_f64()
                ),
            ));
        }
        sleep_or_cancel(options.poll, cancel, || Error::Interrupted).await?;
    }
}

/// The first attempt whose run is not a failed one: followed when it exists, triggered
/// when it does not.
async fn trigger_or_find(api: &AirflowApi<'_>, options: &RemoteOptions) -> Result<(DagRun, bool)> {
    for attempt in 0..MAX_ATTEMPTS {
        let id = run_id(options.started_at, &options.seed, attempt);
        match api.get_run(&options.dag_id, &id).await? {
            Some(run) if run.state.as_deref() == Some("failed") => continue,
            Some(run) => return Ok((run, false)),
            None => {}
        }
        let run = api
            .trigger(&options.dag_id, &id, &options.conf)
            .await?
            .ok_or_else(|| {
                Error::failed(
                    format!("trigger the DAG {}", options.dag_id),
                    format!("MWAA environment {}", options.environment),
                    "the DAG disappeared before it could be triggered",
                )
            })?;
        return Ok((run, true));
    }
    Err(Error::failed(
        format!("trigger the DAG {}", options.dag_id),
        format!("MWAA environment {}", options.environment),
        format!("{MAX_ATTEMPTS} runs of it failed already; see their task logs in Airflow"),
    ))
}

async fn follow(
    api: &AirflowApi<'_>,
    options: &RemoteOptions,
    mut run: DagRun,
    started: Instant,
    cancel: &CancellationToken,
) -> Result<DagRun> {
    let mut last_state = run.state.clone();
    let keeps_going = |run_id: &str| {
        Error::failed(
            format!("follow the DAG {}", options.dag_id),
            format!("MWAA environment {}", options.environment),
            format!(
                "stopped following; run {run_id} keeps going in Airflow (run the same command again to follow it, or see it in the Airflow UI)"
            ),
        )
    };
    while !run.finished() {
        if started.elapsed() + options.poll > options.timeout {
            return Err(Error::failed(
                format!("follow the DAG {}", options.dag_id),
                format!("MWAA environment {}", options.environment),
                format!(
                    "run {} still {} after {:.0} s (STATE_MACHINE_TIMEOUT_MINS); it keeps going in Airflow: run the same command again to keep following it",
                    run.dag_run_id,
                    run.state.as_deref().unwrap_or("unknown"),
                    started.elapsed().as_secs_f64()
                ),
            ));
        }
        let id = run.dag_run_id.clone();
        sleep_or_cancel(options.poll, cancel, || keeps_going(&id)).await?;
        run = api.get_run(&options.dag_id, &id).await?.ok_or_else(|| {
            Error::failed(
                format!("follow the DAG {}", options.dag_id),
                format!("MWAA environment {}", options.environment),
                format!("run {id} disappeared"),
            )
        })?;
        if run.state != last_state {
            info!(run = %run.dag_run_id, state = run.state.as_deref().unwrap_or(""), "DR DAG run");
            last_state = run.state.clone();
        }
    }
    Ok(run)
}

/// The error of a run that did not succeed: the task's own error from its report, or, with
/// no report, where to read the task log.
fn failed_run(
    options: &RemoteOptions,
    store: &dyn BackupStore,
    run: &DagRunRef,
    state: &str,
    stored: Result<Option<Value>>,
) -> Error {
    let log = format!(
        "read the log of its task mwaa_dr in the Airflow UI or in the CloudWatch log group airflow-{}-Task",
        options.environment
    );
    let detail = match stored {
        Ok(Some(doc)) => match doc
            .get("error")
            .and_then(|e| e.get("message"))
            .and_then(Value::as_str)
        {
            Some(message) => message.to_string(),
            None => format!("its report holds no error ({doc}); {log}"),
        },
        Ok(None) => format!(
            "the task failed before writing its report to {}/{} (is mwaa-dr installed on the workers, and the DAG rendered with this store?); {log}",
            store.describe(),
            runs::key(run).unwrap_or_default()
        ),
        Err(e) => format!("its report could not be read ({e}); {log}"),
    };
    Error::failed(
        format!("run the DAG {}", options.dag_id),
        format!(
            "run {} in MWAA environment {}",
            run.run_id, options.environment
        ),
        format!("the run ended {state}: {detail}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_follow_the_contract_and_repeat_for_the_same_seed() {
        let at = DateTime::parse_from_rfc3339("2024-05-06T07:08:09Z")
            .map(|t| t.with_timezone(&Utc))
            .expect("time");
        let a = run_id(at, "failover-1", 0);
        assert!(a.starts_with("mwaa-dr__20240506T070809Z__"), "{a}");
        assert_eq!(a.len(), "mwaa-dr__20240506T070809Z__".len() + 4);
        assert_eq!(a, run_id(at, "failover-1", 0));
        assert_ne!(a, run_id(at, "failover-1", 1));
        assert_ne!(a, run_id(at, "failover-2", 0));
    }
}
