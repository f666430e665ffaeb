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

/// Passes `name`, unless the fault-injection variable arms it.
pub async fn reach(name: &str, cancel: &CancellationToken) -> Result<()> {
    let Ok(armed) = std::env::var(VARIABLE) else {
        return Ok(());
    };
    let (point, action) = armed.split_once('=').unwrap_or((armed.as_str(), "pause"));
    if point != name {
        return Ok(());
    }
    eprintln!("failpoint {name} reached");
    match action {
        "error" => Err(Error::transient(
            "failpoint",
            name,
            "injected failure (MWAA_DR_TEST_FAILPOINT)",
        )),
        _ => {
            cancel.cancelled().await;
            Err(Error::Interrupted)
        }
    }
}
