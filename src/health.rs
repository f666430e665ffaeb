//! The primary's health: scheduler heartbeat and environment status, with the original's
//! retries and exponential backoff.

use std::time::Duration;

use chrono::Utc;
use serde::Serialize;

use crate::aws::cloudwatch::Heartbeat;
use crate::aws::mwaa::Mwaa;
use crate::error::Result;
use crate::model::HealthCheckSettings;
use crate::model::{Clock, EnvironmentStatus};

/// One look at the primary.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub attempt: u32,
    pub at: chrono::DateTime<Utc>,
    /// The environment's status (AVAILABLE, UNAVAILABLE, ...), `None` when it does not exist.
    pub status: Option<EnvironmentStatus>,
    /// Newest 5-minute Average of SchedulerHeartbeat, `None` when there is no datapoint.
    pub heartbeat: Option<f64>,
    pub healthy: bool,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    pub environment: String,
    pub healthy: bool,
    pub simulated: bool,
    pub attempts: Vec<Attempt>,
}

impl HealthReport {
    pub fn evidence(&self) -> String {
        self.attempts
            .last()
            .map(|a| format!("{} after {} attempt(s)", a.reason, self.attempts.len()))
            .unwrap_or_else(|| "no attempt".into())
    }
}

/// Looks at the primary up to `1 + max_retry` times, waiting `retry_interval * rate^n`
/// (at most `max_retry_wait`) between looks, and stops at the first healthy answer.
pub async fn check(
    environment: &str,
    settings: &HealthCheckSettings,
    mwaa: &dyn Mwaa,
    heartbeat: &dyn Heartbeat,
    clock: &Clock,
) -> Result<HealthReport> {
    let mut report = HealthReport {
        environment: environment.to_string(),
        healthy: false,
        simulated: settings.simulate_dr,
        attempts: Vec::new(),
    };
    if settings.simulate_dr {
        report.attempts.push(Attempt {
            attempt: 1,
            at: clock.now(),
            status: None,
            heartbeat: None,
            healthy: false,
            reason: "simulated disaster (MWAA_SIMULATE_DR=YES / --simulate-dr)".into(),
        });
        return Ok(report);
    }
    let cap = settings.max_retry_wait;
    let mut wait = settings.retry_interval.min(cap);
    for attempt in 1..=settings.max_retry.saturating_add(1) {
        if attempt > 1 {
            tokio::time::sleep(wait).await;
            wait = next_wait(wait, settings.backoff_rate, cap);
        }
        let look = look(environment, attempt, mwaa, heartbeat, clock).await;
        let healthy = look.healthy;
        report.attempts.push(look);
        if healthy {
            report.healthy = true;
            break;
        }
    }
    Ok(report)
}

/// The wait after `wait`: `rate` times longer, saturating at `cap`. A large rate reaches
/// infinity within a few retries, which no Duration holds.
fn next_wait(wait: Duration, rate: f64, cap: Duration) -> Duration {
    Duration::try_from_secs_f64(wait.as_secs_f64() * rate).map_or(cap, |next| next.min(cap))
}

/// One look at the primary: its status and its newest heartbeat.
async fn look(
    environment: &str,
    attempt: u32,
    mwaa: &dyn Mwaa,
    heartbeat: &dyn Heartbeat,
    clock: &Clock,
) -> Attempt {
    let now = clock.now();
    // An API that does not answer is evidence too: in a regional outage it is the
    // primary's region that fails.
    let (status, beat) = match (
        mwaa.get_environment(environment).await,
        heartbeat.scheduler_heartbeat(environment, now).await,
    ) {
        (Ok(env), Ok(beat)) => (env.and_then(|e| e.status), beat),
        (Err(e), _) | (_, Err(e)) => {
            return Attempt {
                attempt,
                at: now,
                status: None,
                heartbeat: None,
                healthy: false,
                reason: format!("the AWS APIs did not answer: {e}"),
            };
        }
    };
    let (healthy, reason) = judge(status.as_ref(), beat);
    Attempt {
        attempt,
        at: now,
        status,
        heartbeat: beat,
        healthy,
        reason,
    }
}

/// Healthy when the environment serves DAGs and its scheduler beats.
fn judge(status: Option<&EnvironmentStatus>, beat: Option<f64>) -> (bool, String) {
    match (status, beat) {
        (None, _) => (false, "the environment does not exist".to_string()),
        (Some(s), _) if !s.is_healthy() => (false, format!("status {s}")),
        (_, None) => (
            false,
            "no SchedulerHeartbeat datapoint in the last 10 minutes".to_string(),
        ),
        (_, Some(v)) if v <= 0.0 => (false, format!("SchedulerHeartbeat average {v}")),
        (Some(s), Some(v)) => (true, format!("status {s}, SchedulerHeartbeat average {v}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_saturates_instead_of_overflowing() {
        let cap = Duration::from_secs(3600);
        let five = Duration::from_secs(5);
        assert_eq!(next_wait(five, 2.0, cap), Duration::from_secs(10));
        assert_eq!(next_wait(five, 1e308, cap), cap);
        assert_eq!(next_wait(next_wait(five, 1e308, cap), 1e308, cap), cap);
        assert_eq!(next_wait(five, f64::INFINITY, cap), cap);
        assert_eq!(next_wait(five, f64::NAN, cap), cap);
        assert_eq!(next_wait(Duration::MAX, 2.0, cap), cap);
    }

    #[test]
    fn judge_reads_the_status_and_the_heartbeat() {
        let updating = EnvironmentStatus::Updating;
        assert_eq!(
            judge(Some(&updating), Some(1.0)),
            (
                true,
                "status UPDATING, SchedulerHeartbeat average 1".to_string()
            )
        );
        // A status this build does not know is not taken for healthy, and is named as MWAA
        // spelled it.
        let newer = EnvironmentStatus::parse("HIBERNATING");
        assert_eq!(
            judge(Some(&newer), Some(1.0)),
            (false, "status HIBERNATING".to_string())
        );
        let available = EnvironmentStatus::Available;
        assert!(!judge(Some(&available), Some(0.0)).0);
        assert!(!judge(Some(&available), None).0);
        assert!(!judge(None, Some(1.0)).0);
    }
}
