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
    let new_stack = is_new_stack(stack, stacks.describe(stack).await?.as_ref())?;
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
    tracing::info!(stack, "change set executed; waiting for the stack");
    wait_for_execution(stacks, stack, change_set, waiting).await?;
    let done = wait_for_stack(stacks, stack, waiting).await?;
    executed(stack, done, new_stack, state.changes)
}

/// Whether applying creates `stack` (none, or only an unexecuted change set's holder) rather
/// than updating it; a stack whose creation failed, or that CloudFormation is still working
/// on, cannot be applied to.
fn is_new_stack(stack: &str, existing: Option<&StackState>) -> Result<bool> {
    Ok(match existing {
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
    })
}

/// What an executed change set did, from the stack's settled state (`None`: gone).
fn executed(
    stack: &str,
    done: Option<StackState>,
    new_stack: bool,
    changes: Vec<ResourceChange>,
) -> Result<Applied> {
    match done {
        Some(s) if s.status == "CREATE_COMPLETE" || s.status == "UPDATE_COMPLETE" => Ok(Applied {
            outcome: if new_stack {
                Outcome::Created
            } else {
                Outcome::Updated
            },
            changes,
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

/// Waits until CloudFormation has taken up the executed change set: right after
/// ExecuteChangeSet the stack may still show its previous, settled status. A change set that
/// can no longer be described leaves the wait to the stack's status.
async fn wait_for_execution(
    stacks: &dyn Stacks,
    stack: &str,
    change_set: &str,
    waiting: Waiting,
) -> Result<()> {
    let start = Instant::now();
    loop {
        let Ok(state) = stacks.describe_change_set(stack, change_set).await else {
            return Ok(());
        };
        match state.execution_status.as_deref() {
            Some("AVAILABLE" | "EXECUTE_IN_PROGRESS") if start.elapsed() <= waiting.timeout => {
                tokio::time::sleep(waiting.poll).await;
            }
            _ => return Ok(()),
        }
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::aws::cloudformation::ChangeSetState;

    /// CloudFormation as far as change sets go: stacks with a status and a template, change
    /// sets that are empty when the template is the stack's, and an execution that can be
    /// made to roll back.
    #[derive(Default)]
    struct FakeStacks {
        stacks: Mutex<HashMap<String, (String, String)>>,
        change_sets: Mutex<HashMap<(String, String), (String, bool)>>,
        executed: Mutex<Vec<(String, String)>>,
        roll_back: bool,
    }

    impl FakeStacks {
        fn status(&self, stack: &str) -> Option<String> {
            self.stacks
                .lock()
                .expect("lock")
                .get(stack)
                .map(|(s, _)| s.clone())
        }
        fn change_sets_left(&self) -> usize {
            self.change_sets.lock().expect("lock").len()
        }
    }

    #[async_trait]
    impl Stacks for FakeStacks {
        async fn describe(&self, stack: &str) -> Result<Option<StackState>> {
            Ok(self.status(stack).map(|status| StackState {
                status,
                reason: None,
            }))
        }
        async fn create_change_set(
            &self,
            stack: &str,
            name: &str,
            template: &str,
            new_stack: bool,
        ) -> Result<()> {
            let mut stacks = self.stacks.lock().expect("lock");
            match (new_stack, stacks.get(stack)) {
                (true, Some((s, _))) if s != "REVIEW_IN_PROGRESS" => {
                    return Err(Error::failed("CreateChangeSet", stack, "already exists"));
                }
                (false, None) => return Err(Error::failed("CreateChangeSet", stack, "missing")),
                (true, _) => {
                    stacks.insert(stack.into(), ("REVIEW_IN_PROGRESS".into(), String::new()));
                }
                _ => {}
            }
            self.change_sets
                .lock()
                .expect("lock")
                .insert((stack.into(), name.into()), (template.into(), new_stack));
            Ok(())
        }
        async fn describe_change_set(&self, stack: &str, name: &str) -> Result<ChangeSetState> {
            if self
                .executed
                .lock()
                .expect("lock")
                .contains(&(stack.to_string(), name.to_string()))
            {
                return Ok(ChangeSetState {
                    status: "CREATE_COMPLETE".into(),
                    reason: None,
                    execution_status: Some("EXECUTE_COMPLETE".into()),
                    changes: vec![],
                });
            }
            let sets = self.change_sets.lock().expect("lock");
            let (template, new) = sets
                .get(&(stack.to_string(), name.to_string()))
                .ok_or_else(|| Error::failed("DescribeChangeSet", name, "no such change set"))?;
            let current = self
                .stacks
                .lock()
                .expect("lock")
                .get(stack)
                .map(|(_, t)| t.clone())
                .unwrap_or_default();
            Ok(if !new && *template == current {
                ChangeSetState {
                    status: "FAILED".into(),
                    reason: Some("The submitted information didn't contain changes. Submit different information to create a change set.".into()),
                    execution_status: Some("UNAVAILABLE".into()),
                    changes: vec![],
                }
            } else {
                ChangeSetState {
                    status: "CREATE_COMPLETE".into(),
                    reason: None,
                    execution_status: Some("AVAILABLE".into()),
                    changes: vec![ResourceChange {
                        action: if *new { "Add" } else { "Modify" }.into(),
                        logical_id: "BackupBucket".into(),
                        resource_type: "AWS::S3::Bucket".into(),
                        replacement: (!new).then(|| "False".into()),
                    }],
                }
            })
        }
        async fn execute_change_set(&self, stack: &str, name: &str) -> Result<()> {
            let (template, new) = self
                .change_sets
                .lock()
                .expect("lock")
                .remove(&(stack.to_string(), name.to_string()))
                .ok_or_else(|| Error::failed("ExecuteChangeSet", name, "no such change set"))?;
            self.executed
                .lock()
                .expect("lock")
                .push((stack.to_string(), name.to_string()));
            let status = match (self.roll_back, new) {
                (true, true) => "ROLLBACK_COMPLETE",
                (true, false) => "UPDATE_ROLLBACK_COMPLETE",
                (false, true) => "CREATE_COMPLETE",
                (false, false) => "UPDATE_COMPLETE",
            };
            self.stacks
                .lock()
                .expect("lock")
                .insert(stack.into(), (status.into(), template));
            Ok(())
        }
        async fn delete_change_set(&self, stack: &str, name: &str) -> Result<()> {
            self.change_sets
                .lock()
                .expect("lock")
                .remove(&(stack.to_string(), name.to_string()));
            Ok(())
        }
        async fn delete_stack(&self, stack: &str) -> Result<()> {
            self.stacks.lock().expect("lock").remove(stack);
            Ok(())
        }
    }

    const NOW: Waiting = Waiting {
        poll: Duration::ZERO,
        timeout: Duration::from_secs(5),
    };

    #[tokio::test]
    async fn creates_then_an_identical_template_changes_nothing() {
        let cfn = FakeStacks::default();
        let first = apply(&cfn, "p-primary", "c1", "{\"a\":1}", false, NOW)
            .await
            .expect("created");
        assert_eq!(first.outcome, Outcome::Created);
        assert_eq!(first.changes[0].action, "Add");
        assert_eq!(cfn.status("p-primary").as_deref(), Some("CREATE_COMPLETE"));
        let second = apply(&cfn, "p-primary", "c2", "{\"a\":1}", false, NOW)
            .await
            .expect("unchanged");
        assert_eq!(second.outcome, Outcome::Unchanged);
        assert!(second.changes.is_empty());
        assert_eq!(cfn.change_sets_left(), 0, "the empty change set is deleted");
        let third = apply(&cfn, "p-primary", "c3", "{\"a\":2}", false, NOW)
            .await
            .expect("updated");
        assert_eq!(third.outcome, Outcome::Updated);
        assert_eq!(cfn.status("p-primary").as_deref(), Some("UPDATE_COMPLETE"));
    }

    #[tokio::test]
    async fn a_dry_run_describes_and_leaves_nothing_behind() {
        let cfn = FakeStacks::default();
        let plan = apply(&cfn, "p-secondary", "c1", "{}", true, NOW)
            .await
            .expect("described");
        assert_eq!(plan.outcome, Outcome::WouldCreate);
        assert_eq!(plan.changes.len(), 1);
        assert_eq!(
            cfn.status("p-secondary"),
            None,
            "the holder stack is deleted"
        );
        assert_eq!(cfn.change_sets_left(), 0);

        apply(&cfn, "p-secondary", "c2", "{}", false, NOW)
            .await
            .expect("created");
        let plan = apply(&cfn, "p-secondary", "c3", "{\"b\":1}", true, NOW)
            .await
            .expect("described");
        assert_eq!(plan.outcome, Outcome::WouldUpdate);
        assert_eq!(plan.changes[0].replacement.as_deref(), Some("False"));
        assert_eq!(
            cfn.stacks.lock().expect("lock")["p-secondary"].1,
            "{}",
            "the stack keeps its template"
        );
        assert_eq!(cfn.change_sets_left(), 0);
    }

    #[tokio::test]
    async fn a_rollback_fails_and_a_failed_stack_is_refused_with_advice() {
        let cfn = FakeStacks {
            roll_back: true,
            ..FakeStacks::default()
        };
        let err = apply(&cfn, "p-primary", "c1", "{}", false, NOW)
            .await
            .expect_err("rolled back")
            .to_string();
        assert!(err.contains("ROLLBACK_COMPLETE"), "{err}");
        let err = apply(&cfn, "p-primary", "c2", "{}", false, NOW)
            .await
            .expect_err("refused");
        assert!(err.to_string().contains("ROLLBACK_COMPLETE"), "{err}");
        let hint = err.hint().unwrap_or_default();
        assert!(hint.contains("mwaa-dr undeploy"), "{hint}");
    }

    #[tokio::test]
    async fn delete_says_whether_there_was_a_stack() {
        let cfn = FakeStacks::default();
        assert!(!delete(&cfn, "p-primary", NOW).await.expect("absent"));
        apply(&cfn, "p-primary", "c1", "{}", false, NOW)
            .await
            .expect("created");
        assert!(delete(&cfn, "p-primary", NOW).await.expect("deleted"));
        assert_eq!(cfn.status("p-primary"), None);
    }
}
