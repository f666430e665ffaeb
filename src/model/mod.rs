//! Value types shared by every layer, with no behaviour beyond validation. This module
//! depends on nothing else in the crate.

mod clock;
mod dag_run;
mod db_url;
mod location;
mod secret;
mod text;

use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

pub use self::clock::Clock;
pub use self::dag_run::{ACCEPTED_DAG_RUN, DAG_RUN_VARIABLE, DagRunRef};
pub use self::db_url::{ACCEPTED as ACCEPTED_DB_URLS, DbUrl, mwaa_credentials, stored_location};
pub use self::location::{ACCEPTED_LOCATIONS, StoreLocation};
pub use self::secret::{Secret, redact_url};
pub use self::text::{escape_control, needs_escape};

/// Bounds on every wait for PostgreSQL, so that a server that stops answering, or a table
/// another session holds, ends a run with a clear error instead of a hang.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbTimeouts {
    /// Connecting, TLS and authentication together.
    pub connect: Duration,
    /// One statement on the server (`statement_timeout`); zero means no limit.
    pub statement: Duration,
    /// Waiting for a table lock held by another session (`lock_timeout`).
    pub lock: Duration,
    /// A transaction of ours left idle, e.g. while the store does not answer
    /// (`idle_in_transaction_session_timeout`): the server ends it and frees its locks.
    pub idle_in_transaction: Duration,
    /// No byte from the server while a COPY streams out.
    pub read: Duration,
}

impl Default for DbTimeouts {
    fn default() -> Self {
        DbTimeouts {
            connect: Duration::from_secs(30),
            statement: Duration::from_secs(6 * 3600),
            lock: Duration::from_secs(60),
            idle_in_transaction: Duration::from_secs(600),
            read: Duration::from_secs(600),
        }
    }
}

/// Bounds on AWS calls (S3, MWAA, CloudWatch, Scheduler, SNS): an endpoint that accepts
/// connections and never answers fails the call after these, and the SDK retries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AwsTimeouts {
    pub connect: Duration,
    /// One attempt of one call, from sending the request to the last byte of the answer
    /// (an upload part of 16 MiB included).
    pub attempt: Duration,
    /// Attempts per call, the first included (throttling and timeouts are retried).
    pub max_attempts: u32,
}

impl Default for AwsTimeouts {
    fn default() -> Self {
        AwsTimeouts {
            connect: Duration::from_secs(10),
            attempt: Duration::from_secs(120),
            max_attempts: 3,
        }
    }
}

/// An MWAA environment's status, spelled as MWAA's API spells it (`AVAILABLE`,
/// `CREATE_FAILED`, ...). A status this build does not know is kept as it came, so a newer
/// API never fails a health check or a failover by itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EnvironmentStatus {
    Creating,
    CreateFailed,
    Available,
    Updating,
    Deleting,
    Deleted,
    Unavailable,
    UpdateFailed,
    RollingBack,
    CreatingSnapshot,
    Pending,
    Maintenance,
    Unknown(String),
}

impl EnvironmentStatus {
    const KNOWN: [(EnvironmentStatus, &'static str); 12] = [
        (EnvironmentStatus::Creating, "CREATING"),
        (EnvironmentStatus::CreateFailed, "CREATE_FAILED"),
        (EnvironmentStatus::Available, "AVAILABLE"),
        (EnvironmentStatus::Updating, "UPDATING"),
        (EnvironmentStatus::Deleting, "DELETING"),
        (EnvironmentStatus::Deleted, "DELETED"),
        (EnvironmentStatus::Unavailable, "UNAVAILABLE"),
        (EnvironmentStatus::UpdateFailed, "UPDATE_FAILED"),
        (EnvironmentStatus::RollingBack, "ROLLING_BACK"),
        (EnvironmentStatus::CreatingSnapshot, "CREATING_SNAPSHOT"),
        (EnvironmentStatus::Pending, "PENDING"),
        (EnvironmentStatus::Maintenance, "MAINTENANCE"),
    ];

    /// Reads MWAA's spelling; anything else becomes [`EnvironmentStatus::Unknown`].
    pub fn parse(s: &str) -> EnvironmentStatus {
        Self::KNOWN
            .iter()
            .find(|(_, name)| *name == s)
            .map(|(status, _)| status.clone())
            .unwrap_or_else(|| EnvironmentStatus::Unknown(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        match self {
            EnvironmentStatus::Creating => "CREATING",
            EnvironmentStatus::CreateFailed => "CREATE_FAILED",
            EnvironmentStatus::Available => "AVAILABLE",
            EnvironmentStatus::Updating => "UPDATING",
            EnvironmentStatus::Deleting => "DELETING",
            EnvironmentStatus::Deleted => "DELETED",
            EnvironmentStatus::Unavailable => "UNAVAILABLE",
            EnvironmentStatus::UpdateFailed => "UPDATE_FAILED",
            EnvironmentStatus::RollingBack => "ROLLING_BACK",
            EnvironmentStatus::CreatingSnapshot => "CREATING_SNAPSHOT",
            EnvironmentStatus::Pending => "PENDING",
            EnvironmentStatus::Maintenance => "MAINTENANCE",
            EnvironmentStatus::Unknown(s) => s,
        }
    }

    /// Serves DAGs: an update in progress keeps the environment running.
    pub fn is_healthy(&self) -> bool {
        matches!(
            self,
            EnvironmentStatus::Available | EnvironmentStatus::Updating
        )
    }

    /// Will not become AVAILABLE without someone acting on it: waiting longer is pointless.
    pub fn is_terminal_failure(&self) -> bool {
        matches!(
            self,
            EnvironmentStatus::CreateFailed
                | EnvironmentStatus::UpdateFailed
                | EnvironmentStatus::Deleting
                | EnvironmentStatus::Deleted
        )
    }
}

impl std::fmt::Display for EnvironmentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EnvironmentStatus {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(EnvironmentStatus::parse(s))
    }
}

impl serde::Serialize for EnvironmentStatus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for EnvironmentStatus {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Ok(EnvironmentStatus::parse(&s))
    }
}

/// How one failover step ended. The lower-case names are what the step records in the store
/// and the `--output json` timeline have always held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    Ok,
    Failed,
    /// Finished in an earlier run of the same failover; not run again.
    Skipped,
}

impl StepOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            StepOutcome::Ok => "ok",
            StepOutcome::Failed => "failed",
            StepOutcome::Skipped => "skipped",
        }
    }
}

impl std::fmt::Display for StepOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The disaster recovery strategy (`DR_TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DrType {
    BackupRestore,
    WarmStandby,
}

impl FromStr for DrType {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "BACKUP_RESTORE" => Ok(DrType::BackupRestore),
            "WARM_STANDBY" => Ok(DrType::WarmStandby),
            other => Err(format!("unknown DR_TYPE {other}")),
        }
    }
}

/// How `restore` treats the variable and connection tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RestoreStrategy {
    /// Leave the target's rows as they are; restore none.
    DoNothing,
    /// Add the backup's rows whose key the target does not have.
    Append,
    /// The backup's rows win over the target's rows with the same key.
    Replace,
}

impl FromStr for RestoreStrategy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "DO_NOTHING" => Ok(RestoreStrategy::DoNothing),
            "APPEND" => Ok(RestoreStrategy::Append),
            "REPLACE" => Ok(RestoreStrategy::Replace),
            other => Err(format!("unknown restore strategy {other}")),
        }
    }
}

/// S3 server-side encryption of backup objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum S3Encryption {
    SseS3,
    SseKms { key_id: Option<String> },
}

#[derive(Debug, Clone)]
pub struct HealthCheckSettings {
    pub enabled: bool,
    pub interval: Duration,
    pub max_retry: u32,
    pub retry_interval: Duration,
    pub backoff_rate: f64,
    /// The longest wait between two looks: the backoff stops growing there.
    pub max_retry_wait: Duration,
    pub schedule_name: Option<String>,
    pub simulate_dr: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_status_round_trips_every_documented_status() {
        for (status, name) in EnvironmentStatus::KNOWN {
            let json = serde_json::to_string(&status).expect("serialise");
            assert_eq!(json, format!("\"{name}\""));
            let back: EnvironmentStatus = serde_json::from_str(&json).expect("deserialise");
            assert_eq!(back, status);
            assert!(!matches!(back, EnvironmentStatus::Unknown(_)), "{name}");
            assert_eq!(status.to_string(), name);
        }
    }

    #[test]
    fn environment_status_keeps_a_status_it_does_not_know() {
        let status: EnvironmentStatus =
            serde_json::from_str("\"HIBERNATING\"").expect("deserialise");
        assert_eq!(status, EnvironmentStatus::Unknown("HIBERNATING".into()));
        assert_eq!(status.to_string(), "HIBERNATING");
        assert_eq!(
            serde_json::to_string(&status).expect("serialise"),
            "\"HIBERNATING\""
        );
        assert!(!status.is_healthy());
        assert!(!status.is_terminal_failure());
        // Case matters: MWAA spells its statuses in capitals only.
        assert_eq!(
            EnvironmentStatus::parse("available"),
            EnvironmentStatus::Unknown("available".into())
        );
    }

    #[test]
    fn environment_status_classes() {
        let healthy: Vec<&str> = EnvironmentStatus::KNOWN
            .iter()
            .filter(|(s, _)| s.is_healthy())
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(healthy, ["AVAILABLE", "UPDATING"]);
        let terminal: Vec<&str> = EnvironmentStatus::KNOWN
            .iter()
            .filter(|(s, _)| s.is_terminal_failure())
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(
            terminal,
            ["CREATE_FAILED", "DELETING", "DELETED", "UPDATE_FAILED"]
        );
    }

    #[test]
    fn step_outcome_is_written_in_lower_case_and_read_back() {
        for (outcome, name) in [
            (StepOutcome::Ok, "ok"),
            (StepOutcome::Failed, "failed"),
            (StepOutcome::Skipped, "skipped"),
        ] {
            let json = serde_json::to_string(&outcome).expect("serialise");
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(outcome.to_string(), name);
            let back: StepOutcome = serde_json::from_str(&json).expect("deserialise");
            assert_eq!(back, outcome);
        }
        assert!(serde_json::from_str::<StepOutcome>("\"OK\"").is_err());
    }
}
