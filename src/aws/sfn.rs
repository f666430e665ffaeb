//! Step Functions task tokens: a DR DAG's task, started by a workflow's
//! `.waitForTaskToken` state, reports its outcome back to the waiting execution itself.

use async_trait::async_trait;
use aws_sdk_sfn::Client;

use super::{endpoint_override, sdk_config, sdk_error};
use crate::error::Result;
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
