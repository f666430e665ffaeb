//! CloudFormation: stacks applied through change sets, and deleted.

use async_trait::async_trait;
use aws_sdk_cloudformation::Client;
use aws_sdk_cloudformation::types::{Capability, ChangeSetType};
use serde::Serialize;

use super::{endpoint_override, sdk_config, sdk_error};
use crate::error::Result;
use crate::model::AwsTimeouts;

/// A stack as CloudFormation reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackState {
    pub status: String,
    pub reason: Option<String>,
}

/// One resource a change set would add, modify or remove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResourceChange {
    /// Add, Modify, Remove (or Import, Dynamic).
    pub action: String,
    pub logical_id: String,
    pub resource_type: String,
    /// For Modify: True, False or Conditional.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
}

/// A change set's state and its changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeSetState {
    /// CREATE_PENDING, CREATE_IN_PROGRESS, CREATE_COMPLETE, FAILED, ...
    pub status: String,
    pub reason: Option<String>,
    /// UNAVAILABLE, AVAILABLE, EXECUTE_IN_PROGRESS, EXECUTE_COMPLETE, EXECUTE_FAILED,
    /// OBSOLETE.
    pub execution_status: Option<String>,
    pub changes: Vec<ResourceChange>,
}

#[async_trait]
pub trait Stacks: Send + Sync {
    /// The stack named `stack`, or `None` when there is none.
    async fn describe(&self, stack: &str) -> Result<Option<StackState>>;
    /// A change set `name` applying `template` (JSON) to `stack`; `new_stack` when the stack
    /// does not exist yet (CloudFormation then holds it in REVIEW_IN_PROGRESS).
    async fn create_change_set(
        &self,
        stack: &str,
        name: &str,
        template: &str,
        new_stack: bool,
    ) -> Result<()>;
    async fn describe_change_set(&self, stack: &str, name: &str) -> Result<ChangeSetState>;
    async fn execute_change_set(&self, stack: &str, name: &str) -> Result<()>;
    async fn delete_change_set(&self, stack: &str, name: &str) -> Result<()>;
    async fn delete_stack(&self, stack: &str) -> Result<()>;
}

pub struct SdkStacks {
    client: Client,
    region: String,
}

impl SdkStacks {
    pub async fn new(region: &str, timeouts: &AwsTimeouts) -> Self {
        let shared = sdk_config(Some(region), timeouts).await;
        let mut builder = aws_sdk_cloudformation::config::Builder::from(&shared);
        if let Some(endpoint) = endpoint_override(&shared, "CLOUDFORMATION") {
            builder = builder.endpoint_url(endpoint);
        }
        SdkStacks {
            client: Client::from_conf(builder.build()),
            region: region.to_string(),
        }
    }

    fn resource(&self, stack: &str) -> String {
        format!("stack {stack} in {}", self.region)
    }
}

#[async_trait]
impl Stacks for SdkStacks {
    async fn describe(&self, stack: &str) -> Result<Option<StackState>> {
        let out = match self.client.describe_stacks().stack_name(stack).send().await {
            Ok(out) => out,
            // CloudFormation answers a missing stack with a ValidationError "does not exist".
            Err(e)
                if e.as_service_error()
                    .and_then(|s| {
                        aws_smithy_types::error::metadata::ProvideErrorMetadata::message(s)
                    })
                    .is_some_and(|m| m.contains("does not exist")) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(sdk_error("DescribeStacks", self.resource(stack), e)),
        };
        Ok(out
            .stacks()
            .iter()
            .find(|s| s.stack_name() == Some(stack))
            .and_then(|s| {
                let status = s.stack_status()?.as_str().to_string();
                (status != "DELETE_COMPLETE").then(|| StackState {
                    status,
                    reason: s.stack_status_reason().map(str::to_string),
                })
            }))
    }

    async fn create_change_set(
        &self,
        stack: &str,
        name: &str,
        template: &str,
        new_stack: bool,
    ) -> Result<()> {
        self.client
            .create_change_set()
            .stack_name(stack)
            .change_set_name(name)
            .template_body(template)
            .change_set_type(if new_stack {
                ChangeSetType::Create
            } else {
                ChangeSetType::Update
            })
            .capabilities(Capability::CapabilityNamedIam)
            .description("mwaa-dr deploy")
            .send()
            .await
            .map_err(|e| sdk_error("CreateChangeSet", self.resource(stack), e))?;
        Ok(())
    }

    async fn describe_change_set(&self, stack: &str, name: &str) -> Result<ChangeSetState> {
        let mut changes = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .client
                .describe_change_set()
                .stack_name(stack)
                .change_set_name(name)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| sdk_error("DescribeChangeSet", self.resource(stack), e))?;
            for change in out.changes() {
                if let Some(r) = change.resource_change() {
                    changes.push(ResourceChange {
                        action: r
                            .action()
                            .map(|a| a.as_str().to_string())
                            .unwrap_or_default(),
                        logical_id: r.logical_resource_id().unwrap_or_default().to_string(),
                        resource_type: r.resource_type().unwrap_or_default().to_string(),
                        replacement: r.replacement().map(|x| x.as_str().to_string()),
                    });
                }
            }
            match out.next_token() {
                Some(next) if !next.is_empty() => token = Some(next.to_string()),
                _ => {
                    return Ok(ChangeSetState {
                        status: out
                            .status()
                            .map(|s| s.as_str().to_string())
                            .unwrap_or_default(),
                        reason: out.status_reason().map(str::to_string),
                        execution_status: out.execution_status().map(|s| s.as_str().to_string()),
                        changes,
                    });
                }
            }
        }
    }

    async fn execute_change_set(&self, stack: &str, name: &str) -> Result<()> {
        self.client
            .execute_change_set()
            .stack_name(stack)
            .change_set_name(name)
            .send()
            .await
            .map_err(|e| sdk_error("ExecuteChangeSet", self.resource(stack), e))?;
        Ok(())
    }

    async fn delete_change_set(&self, stack: &str, name: &str) -> Result<()> {
        self.client
            .delete_change_set()
            .stack_name(stack)
            .change_set_name(name)
            .send()
            .await
            .map_err(|e| sdk_error("DeleteChangeSet", self.resource(stack), e))?;
        Ok(())
    }

    async fn delete_stack(&self, stack: &str) -> Result<()> {
        self.client
            .delete_stack()
            .stack_name(stack)
            .send()
            .await
            .map_err(|e| sdk_error("DeleteStack", self.resource(stack), e))?;
        Ok(())
    }
}
