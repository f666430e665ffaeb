//! Step Functions task tokens: a DR DAG's task, started by a workflow's
//! `.waitForTaskToken` state, reports its outcome back to the waiting execution itself.

use async_trait::async_trait;
use aws_sdk_sfn::Client;
use chrono::{DateTime, Utc};

use super::{endpoint_override, sdk_config, sdk_error};
use crate::error::{Error, Result};
use crate::model::AwsTimeouts;

/// SendTaskFailure's limits (characters): `error` 256, `cause` 32768.
const MAX_ERROR: usize = 256;
const MAX_CAUSE: usize = 32_768;

#[async_trait]
pub trait TaskCallback: Send + Sync {
    /// The task succeeded; `output` (JSON) becomes the state's result.
    async fn succeed(&self, token: &str, output: &str) -> Result<()>;
    /// The task failed: `error` is what a `Catch`/`Retry` matches on, `cause` the message.
    async fn fail(&self, token: &str, error: &str, cause: &str) -> Result<()>;
}

pub struct SfnTaskCallback {
    client: Client,
}

impl SfnTaskCallback {
    pub async fn new(region: Option<&str>, timeouts: &AwsTimeouts) -> Self {
        let shared = sdk_config(region, timeouts).await;
        let mut builder = aws_sdk_sfn::config::Builder::from(&shared);
        if let Some(endpoint) = endpoint_override(&shared, "SFN") {
            builder = builder.endpoint_url(endpoint);
        }
        SfnTaskCallback {
            client: Client::from_conf(builder.build()),
        }
    }
}

#[async_trait]
impl TaskCallback for SfnTaskCallback {
    async fn succeed(&self, token: &str, output: &str) -> Result<()> {
        self.client
            .send_task_success()
            .task_token(token)
            .output(output)
            .send()
            .await
            .map_err(|e| sdk_error("SendTaskSuccess", "the task token", e))?;
        Ok(())
    }

    async fn fail(&self, token: &str, error: &str, cause: &str) -> Result<()> {
        self.client
            .send_task_failure()
            .task_token(token)
            .error(truncate(error, MAX_ERROR))
            .cause(truncate(cause, MAX_CAUSE))
            .send()
            .await
            .map_err(|e| sdk_error("SendTaskFailure", "the task token", e))?;
        Ok(())
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_are_cut_to_the_service_limits_on_a_char_boundary() {
        let long = "é".repeat(300);
        assert_eq!(truncate(&long, MAX_ERROR).chars().count(), 256);
        assert_eq!(truncate("short", MAX_ERROR), "short");
    }
}

/// How an execution stands.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionState {
    /// RUNNING, SUCCEEDED, FAILED, TIMED_OUT, ABORTED, PENDING_REDRIVE.
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub stopped_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    pub cause: Option<String>,
    pub output: Option<String>,
}

/// One state entered or left, from an execution's history.
#[derive(Debug, Clone, PartialEq)]
pub struct StateEvent {
    pub at: DateTime<Utc>,
    pub state: String,
    /// Entered (`true`) or exited.
    pub entered: bool,
}

/// Starting and following executions of a state machine.
pub struct SfnExecutions {
    client: Client,
}

fn time_of(t: &aws_sdk_sfn::primitives::DateTime) -> DateTime<Utc> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos()).unwrap_or_default()
}

impl SfnExecutions {
    pub async fn new(region: Option<&str>, timeouts: &AwsTimeouts) -> Self {
        let shared = sdk_config(region, timeouts).await;
        let mut builder = aws_sdk_sfn::config::Builder::from(&shared);
        if let Some(endpoint) = endpoint_override(&shared, "SFN") {
            builder = builder.endpoint_url(endpoint);
        }
        SfnExecutions {
            client: Client::from_conf(builder.build()),
        }
    }

    /// The ARN of the state machine `name_or_arn` (an ARN is taken as it is).
    pub async fn find(&self, name_or_arn: &str) -> Result<String> {
        if name_or_arn.starts_with("arn:") {
            return Ok(name_or_arn.to_string());
        }
        let mut token = None;
        loop {
            let page = self
                .client
                .list_state_machines()
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| sdk_error("ListStateMachines", name_or_arn, e))?;
            if let Some(m) = page
                .state_machines()
                .iter()
                .find(|m| m.name() == name_or_arn)
            {
                return Ok(m.state_machine_arn().to_string());
            }
            match page.next_token() {
                Some(t) => token = Some(t.to_string()),
                None => {
                    return Err(Error::failed(
                        "find the state machine",
                        name_or_arn,
                        "no state machine of this name in the secondary region (deploy it with `mwaa-dr deploy`, or name it with --state-machine)",
                    ));
                }
            }
        }
    }

    /// Starts an execution named `name` with `input`; returns its ARN.
    pub async fn start(&self, machine: &str, name: &str, input: &str) -> Result<String> {
        let out = self
            .client
            .start_execution()
            .state_machine_arn(machine)
            .name(name)
            .input(input)
            .send()
            .await
            .map_err(|e| sdk_error("StartExecution", machine, e))?;
        Ok(out.execution_arn().to_string())
    }

    /// The ARN of `machine`'s newest running execution, else of its newest one; `None`
    /// when it has none.
    pub async fn latest(&self, machine: &str) -> Result<Option<String>> {
        for status in [Some(aws_sdk_sfn::types::ExecutionStatus::Running), None] {
            let page = self
                .client
                .list_executions()
                .state_machine_arn(machine)
                .set_status_filter(status)
                .send()
                .await
                .map_err(|e| sdk_error("ListExecutions", machine, e))?;
            // Newest first on AWS; sorted here all the same.
            if let Some(newest) = page
                .executions()
                .iter()
                .max_by_key(|e| time_of(e.start_date()))
            {
                return Ok(Some(newest.execution_arn().to_string()));
            }
        }
        Ok(None)
    }

    pub async fn describe(&self, execution: &str) -> Result<ExecutionState> {
        let d = self
            .client
            .describe_execution()
            .execution_arn(execution)
            .send()
            .await
            .map_err(|e| sdk_error("DescribeExecution", execution, e))?;
        Ok(ExecutionState {
            status: d.status().as_str().to_string(),
            started_at: time_of(d.start_date()),
            stopped_at: d.stop_date().map(time_of),
            error: d.error().map(str::to_string),
            cause: d.cause().map(str::to_string),
            output: d.output().map(str::to_string),
        })
    }

    /// The states the execution entered and left so far, oldest first.
    pub async fn state_events(&self, execution: &str) -> Result<Vec<StateEvent>> {
        let mut events = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .get_execution_history()
                .execution_arn(execution)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| sdk_error("GetExecutionHistory", execution, e))?;
            for e in page.events() {
                let at = time_of(e.timestamp());
                if let Some(d) = e.state_entered_event_details() {
                    events.push(StateEvent {
                        at,
                        state: d.name().to_string(),
                        entered: true,
                    });
                } else if let Some(d) = e.state_exited_event_details() {
                    events.push(StateEvent {
                        at,
                        state: d.name().to_string(),
                        entered: false,
                    });
                }
            }
            match page.next_token() {
                Some(t) => token = Some(t.to_string()),
                None => return Ok(events),
            }
        }
    }
}
