//! Applying a template to a stack through a change set, and deleting a stack, waiting for
//! CloudFormation to finish either.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::aws::cloudformation::{ResourceChange, StackState, Stacks};
use crate::error::{Error, Result};

/// How often CloudFormation is asked, and how long deploy waits at most.
#[derive(Debug, Clone, Copy)]
pub struct Waiting {
    pub poll: Duration,
    pub timeout: Duration,
}

impl Default for Waiting {
    fn default() -> Self {
        Waiting {
            poll: Duration::from_secs(5),
            timeout: Duration::from_secs(3600),
        }
    }
}

/// What applying a template did (or, in a dry run, would do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Created,
    Updated,
    /// The change set was empty: the stack already matches the template.
    Unchanged,
    /// Dry run: the change set was described and deleted.
    WouldCreate,
    WouldUpdate,
}

#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    pub outcome: Outcome,
    pub changes: Vec<ResourceChange>,
}

/// CloudFormation's reasons for a change set that changes nothing.
fn is_empty_change_set(reason: Option<&str>) -> bool {
    reason.is_some_and(|r| {
        r.contains("didn't contain changes") || r.contains("No updates are to be performed")
    })
}

/// Creates or updates `stack` from `template` through a change set named `change_set`.
/// An empty change set is deleted and reported as [`Outcome::Unchanged`]; with `dry_run`
/// the change set is described and deleted (and a stack that only it had created, too).
pub async fn apply(
    stacks: &dyn Stacks,
    stack: &str,
    change_set: &str,
    template: &str,
    dry_run: bool,
    waiting: Waiting,
) -> Result<Applied> {
    let existing = stacks.describe(stack).await?;
    let new_stack = match &existing {
        None => true,
        // Left by an earlier change set that was never executed.
        Some(s) if s.status == "REVIEW_IN_PROGRESS" => true,
        Some(s)
            if s.status == "ROLLBACK_COMPLETE"
                || s.status.ends_with("_FAILED") && s.status.starts_with("CREATE") =>
        {
            return Err(Error::refused(
                "deploy",
                format!("stack {stack}"),
                format!("its creation failed ({})", s.status),
                "run `mwaa-dr undeploy` (or delete the stack), then deploy again",
            ));
        }
        Some(s) if s.status.ends_with("_IN_PROGRESS") => {
            return Err(Error::transient(
                "deploy",
                format!("stack {stack}"),
                format!("CloudFormation is still working on it ({})", s.status),
            ));
        }
        Some(_) => false,
    };
    stacks
        .create_change_set(stack, change_set, template, new_stack)
        .await?;
    let state = wait_for_change_set(stacks, stack, change_set, waiting).await?;
    let discard = || async {
        stacks.delete_change_set(stack, change_set).await?;
        if new_stack {
            // The stack exists only as the change set's holder (REVIEW_IN_PROGRESS).
            stacks.delete_stack(stack).await?;
        }
        Ok::<(), Error>(())
    };
    if state.status == "FAILED" {
        if !new_stack && is_empty_change_set(state.reason.as_deref()) {
            stacks.delete_change_set(stack, change_set).await?;
            return Ok(Applied {
                outcome: Outcome::Unchanged,
                changes: Vec::new(),
            });
        }
        discard().await?;
        return Err(Error::failed(
            "CreateChangeSet",
            format!("stack {stack}"),
            state
                .reason
                .unwrap_or_else(|| "the change set failed".into()),
        ));
    }
    if dry_run {
        discard().await?;
        return Ok(Applied {
            outcome: if new_stack {
                Outcome::WouldCreate
            } else {
                Outcome::WouldUpdate
            },
            changes: state.changes,
        });
    }
    stacks.execute_change_set(stack, change_set).await?;
    let done = wait_for_stack(stacks, stack, waiting).await?;
    match done {
        Some(s) if s.status == "CREATE_COMPLETE" || s.status == "UPDATE_COMPLETE" => Ok(Applied {
            outcome: if new_stack {
                Outcome::Created
            } else {
                Outcome::Updated
            },
            changes: state.changes,
        }),
        Some(s) => Err(Error::failed(
            "ExecuteChangeSet",
            format!("stack {stack}"),
            format!(
                "the stack ended in {}{}",
                s.status,
                s.reason.map(|r| format!(": {r}")).unwrap_or_default()
            ),
        )),
        None => Err(Error::failed(
            "ExecuteChangeSet",
            format!("stack {stack}"),
            "the stack disappeared (rolled back and deleted)",
        )),
    }
}

/// Deletes `stack` and waits until it is gone; `false` when there was none.
pub async fn delete(stacks: &dyn Stacks, stack: &str, waiting: Waiting) -> Result<bool> {
    if stacks.describe(stack).await?.is_none() {
        return Ok(false);
    }
    stacks.delete_stack(stack).await?;
    match wait_for_stack(stacks, stack, waiting).await? {
        None => Ok(true),
        Some(s) => Err(Error::failed(
            "DeleteStack",
            format!("stack {stack}"),
            format!(
                "the stack ended in {}{}",
                s.status,
                s.reason.map(|r| format!(": {r}")).unwrap_or_default()
            ),
        )),
    }
}

async fn wait_for_change_set(
    stacks: &dyn Stacks,
    stack: &str,
    change_set: &str,
    waiting: Waiting,
) -> Result<crate::aws::cloudformation::ChangeSetState> {
    let start = Instant::now();
    loop {
        let state = stacks.describe_change_set(stack, change_set).await?;
        if !state.status.ends_with("_PENDING") && !state.status.ends_with("_IN_PROGRESS") {
            return Ok(state);
        }
        if start.elapsed() > waiting.timeout {
            return Err(Error::transient(
                "CreateChangeSet",
                format!("stack {stack}"),
                format!("change set {change_set} still {}", state.status),
            ));
        }
        tokio::time::sleep(waiting.poll).await;
    }
}

/// Waits until the stack is in no *_IN_PROGRESS state; `None` once it is gone.
async fn wait_for_stack(
    stacks: &dyn Stacks,
    stack: &str,
    waiting: Waiting,
) -> Result<Option<StackState>> {
    let start = Instant::now();
    loop {
        let state = stacks.describe(stack).await?;
        match &state {
            Some(s) if s.status.ends_with("_IN_PROGRESS") => {
                if start.elapsed() > waiting.timeout {
                    return Err(Error::transient(
                        "wait",
                        format!("stack {stack}"),
                        format!("still {} after {:?}", s.status, waiting.timeout),
                    ));
                }
            }
            _ => return Ok(state),
        }
        tokio::time::sleep(waiting.poll).await;
    }
}
