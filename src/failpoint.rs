//! Named points in the operations where a fault-injection run can stop or fail a command:
//! `MWAA_DR_TEST_FAILPOINT=<name>[=pause|=error]`. Unset (always, outside the project's
//! fault matrix), a point costs one environment lookup and does nothing.
//!
//! `pause` (the default) prints `failpoint <name> reached` on stderr and waits there until
//! the run is cancelled (SIGINT / SIGTERM), which it then reports as "interrupted", or killed.
//! `error` fails the operation there with a transient error, as a lost connection would.

use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// The variable that arms one failpoint.
pub const VARIABLE: &str = "MWAA_DR_TEST_FAILPOINT";

/// Passes `name`, unless the fault-injection variable arms it; a paused point ends when
/// `cancel` is cancelled.
pub async fn reach(name: &str, cancel: &CancellationToken) -> Result<()> {
    match armed(name) {
        None => Ok(()),
        Some(Action::Error) => Err(injected(name)),
        Some(Action::Pause) => {
            cancel.cancelled().await;
            Err(Error::Interrupted)
        }
    }
}

/// [`reach`] for a step that must finish once started: a paused point waits for the
/// cancellation and then lets the step go on (the caller stops after it).
pub async fn reach_then_finish(name: &str, cancel: &CancellationToken) -> Result<()> {
    match armed(name) {
        None => Ok(()),
        Some(Action::Error) => Err(injected(name)),
        Some(Action::Pause) => {
            cancel.cancelled().await;
            Ok(())
        }
    }
}

/// [`reach`] for code that its caller races against the run's cancellation (a database
/// transaction): a paused point waits until the caller drops it.
pub async fn reach_raced(name: &str) -> Result<()> {
    match armed(name) {
        None => Ok(()),
        Some(Action::Error) => Err(injected(name)),
        Some(Action::Pause) => std::future::pending().await,
    }
}

enum Action {
    Pause,
    Error,
}

fn armed(name: &str) -> Option<Action> {
    let armed = std::env::var(VARIABLE).ok()?;
    let (point, action) = armed.split_once('=').unwrap_or((armed.as_str(), "pause"));
    if point != name {
        return None;
    }
    eprintln!("failpoint {name} reached");
    Some(match action {
        "error" => Action::Error,
        _ => Action::Pause,
    })
}

fn injected(name: &str) -> Error {
    Error::transient(
        "failpoint",
        name,
        "injected failure (MWAA_DR_TEST_FAILPOINT)",
    )
}
