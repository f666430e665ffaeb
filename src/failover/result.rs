//! How one step ended, as a document a caller can act on: the CLI's timeline records it in the
//! store, and a Step Functions task running one step returns it as its JSON output.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::StepKind;
use super::state::StepRecord;
use crate::error::{Error, ErrorKind};
use crate::model::StepOutcome;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepResult {
    pub step: StepKind,
    pub outcome: StepOutcome,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// What the step did, or why it failed.
    pub details: String,
    /// Present when the outcome is `failed`: a state machine retries on `retryable` and
    /// routes on `class` without parsing `message`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<StepError>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepError {
    pub class: ErrorKind,
    pub retryable: bool,
    /// The error's machine name, as `kind` in the CLI's JSON errors.
    pub kind: &'static str,
    pub message: String,
}

impl StepError {
    pub fn of(error: &Error) -> StepError {
        StepError {
            class: error.kind(),
            retryable: error.retryable(),
            kind: error.code(),
            message: error.to_string(),
        }
    }
}

impl StepResult {
    /// The result of a step that ran from `started_at` to `finished_at`.
    pub fn of(
        step: StepKind,
        started_at: DateTime<Utc>,
        finished_at: DateTime<Utc>,
        outcome: &Result<String, Error>,
    ) -> StepResult {
        let (outcome, details, error) = match outcome {
            Ok(details) => (StepOutcome::Ok, details.clone(), None),
            Err(e) => (StepOutcome::Failed, e.to_string(), Some(StepError::of(e))),
        };
        StepResult {
            step,
            outcome,
            started_at,
            finished_at,
            details,
            error,
        }
    }

    /// A step an earlier run of the same failover finished.
    pub fn skipped(step: StepKind, at: DateTime<Utc>) -> StepResult {
        StepResult {
            step,
            outcome: StepOutcome::Skipped,
            started_at: at,
            finished_at: at,
            details: "finished in an earlier run".into(),
            error: None,
        }
    }

    /// What the store keeps of it: the error's class is not kept, a rerun classifies anew.
    pub fn record(&self) -> StepRecord {
        StepRecord {
            step: self.step,
            started_at: self.started_at,
            finished_at: self.finished_at,
            outcome: self.outcome,
            details: self.details.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("timestamp")
    }

    #[test]
    fn a_failed_step_carries_its_error_class_for_a_state_machine() {
        let error = Error::transient("GetEnvironment", "MWAA environment sec", "timeout");
        let result = StepResult::of(
            StepKind::WaitSecondaryAvailable,
            at("2024-05-01T10:00:00Z"),
            at("2024-05-01T10:00:05Z"),
            &Err(error),
        );
        let json = serde_json::to_value(&result).expect("serialise");
        assert_eq!(json["step"], "wait_secondary_available");
        assert_eq!(json["outcome"], "failed");
        assert_eq!(json["error"]["class"], "transient");
        assert_eq!(json["error"]["retryable"], true);
        assert_eq!(json["error"]["kind"], "failed");
        assert_eq!(json["error"]["message"], json["details"]);
        assert_eq!(json["started_at"], "2024-05-01T10:00:00Z");
    }

    #[test]
    fn a_refusal_is_not_retryable_and_an_ok_step_has_no_error() {
        let refused = Error::refused("fail over", "prim", "the primary is healthy", "--force");
        let failed = StepResult::of(
            StepKind::ConfirmPrimaryUnhealthy,
            at("2024-05-01T10:00:00Z"),
            at("2024-05-01T10:00:01Z"),
            &Err(refused),
        );
        let json = serde_json::to_value(&failed).expect("serialise");
        assert_eq!(json["error"]["class"], "refused");
        assert_eq!(json["error"]["retryable"], false);

        let ok = StepResult::of(
            StepKind::Notify,
            at("2024-05-01T10:00:00Z"),
            at("2024-05-01T10:00:01Z"),
            &Ok("published to arn:topic".into()),
        );
        let json = serde_json::to_value(&ok).expect("serialise");
        assert_eq!(json["outcome"], "ok");
        assert_eq!(json["details"], "published to arn:topic");
        assert!(json.get("error").is_none(), "{json}");
        let record = ok.record();
        assert_eq!(record.outcome, StepOutcome::Ok);
        assert_eq!(record.details, "published to arn:topic");

        let skipped = StepResult::skipped(StepKind::Notify, at("2024-05-01T10:00:00Z"));
        assert_eq!(
            serde_json::to_value(&skipped).expect("serialise")["outcome"],
            "skipped"
        );
    }
}
