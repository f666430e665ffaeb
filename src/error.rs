//! The one error type of mwaa-dr: what went wrong, on which resource, what to do, and the exit code.

use std::path::PathBuf;

use serde::Serialize;

/// Exit codes, stable and documented in `docs/EXIT-CODES.md`.
pub mod exit {
    pub const OK: i32 = 0;
    pub const FAILURE: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const UNHEALTHY: i32 = 3;
    pub const BACKUP_NOT_FOUND: i32 = 4;
    pub const LOCKED: i32 = 5;
    pub const REFUSED: i32 = 6;
    pub const INTERRUPTED: i32 = 130;
}

/// The problem of an explicitly named `.env` file that does not exist.
pub const ENV_FILE_NOT_FOUND: &str = "file not found";

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The cause of a failure, kept so that its details (a PostgreSQL SQLSTATE, an SDK error
/// code) stay reachable through `std::error::Error::source`.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What class of problem an error is, for callers that decide what to do next: a scheduler
/// retries `transient` and `locked`, a person fixes `usage` and `config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The command line is wrong.
    Usage,
    /// A configuration value is missing or invalid, or the `.env` file is unreadable.
    Config,
    /// The named backup (or object) does not exist.
    NotFound,
    /// Another run holds the lock.
    Locked,
    /// The operation declined to act on purpose (a healthy primary, an older target).
    Refused,
    /// The primary failed its health check.
    Unhealthy,
    /// A failure that may pass: a dropped connection, a timeout, throttling, a deadlock.
    Transient,
    /// A failure that a retry will not fix.
    Permanent,
    /// SIGINT or SIGTERM stopped the run.
    Interrupted,
}

impl ErrorKind {
    /// Whether running the same operation again later may succeed without any change.
    pub fn retryable(self) -> bool {
        matches!(self, ErrorKind::Transient | ErrorKind::Locked)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line itself is wrong (unknown flag, missing argument, conflicting flags).
    #[error("{message}")]
    Usage { message: String },

    /// A configuration variable has a value outside what is accepted. `value` is already
    /// redacted when the variable holds a secret.
    #[error("{variable}={value:?} is not valid: {problem}; accepted: {accepted}")]
    InvalidValue {
        variable: String,
        value: String,
        problem: String,
        accepted: String,
    },

    /// A variable the command needs is not set anywhere.
    #[error("{variable} is not set, and `{command}` needs it: {purpose}")]
    MissingValue {
        variable: String,
        command: String,
        purpose: String,
    },

    /// The `.env` file cannot be read or has a line that is not `KEY=VALUE`.
    #[error("env file {}: {problem}", path.display())]
    EnvFile { path: PathBuf, problem: String },

    /// The command exists in the interface but is not available in this build.
    #[error("`{command}` is not available in this version of mwaa-dr yet")]
    NotAvailable { command: String },

    /// The primary environment failed its health check.
    #[error("primary environment {environment} is unhealthy: {evidence}")]
    Unhealthy {
        environment: String,
        evidence: String,
    },

    /// The requested backup (or any backup) does not exist in the store.
    #[error("backup {backup} not found in {store}")]
    BackupNotFound { backup: String, store: String },

    /// Another mutating mwaa-dr run holds the store's lock.
    #[error("store {store} is locked by {holder}")]
    Locked { store: String, holder: String },

    /// Ctrl-C (SIGINT) or SIGTERM arrived; whatever was in flight was rolled back.
    #[error("interrupted")]
    Interrupted,

    /// The operation declined to act, on purpose and with its reason (e.g. failing over
    /// from a primary that is healthy).
    #[error("{operation} refused on {resource}: {reason}")]
    Refused {
        operation: String,
        resource: String,
        reason: String,
        guidance: Option<String>,
    },

    /// Any other failure of an operation on a named resource. `transient` says whether the
    /// same call may succeed later (connection lost, timeout, throttling, deadlock).
    #[error("{operation} failed on {resource}: {message}")]
    Failed {
        operation: String,
        resource: String,
        message: String,
        transient: bool,
        #[source]
        source: Option<Cause>,
    },
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage { .. }
            | Error::InvalidValue { .. }
            | Error::MissingValue { .. }
            | Error::EnvFile { .. }
            | Error::NotAvailable { .. } => exit::USAGE,
            Error::Unhealthy { .. } => exit::UNHEALTHY,
            Error::BackupNotFound { .. } => exit::BACKUP_NOT_FOUND,
            Error::Locked { .. } => exit::LOCKED,
            Error::Interrupted => exit::INTERRUPTED,
            Error::Refused { .. } => exit::REFUSED,
            Error::Failed { .. } => exit::FAILURE,
        }
    }

    /// The class of the error; see [`ErrorKind`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Usage { .. } => ErrorKind::Usage,
            Error::InvalidValue { .. }
            | Error::MissingValue { .. }
            | Error::EnvFile { .. }
            | Error::NotAvailable { .. } => ErrorKind::Config,
            Error::Unhealthy { .. } => ErrorKind::Unhealthy,
            Error::BackupNotFound { .. } => ErrorKind::NotFound,
            Error::Locked { .. } => ErrorKind::Locked,
            Error::Interrupted => ErrorKind::Interrupted,
            Error::Refused { .. } => ErrorKind::Refused,
            Error::Failed {
                transient: true, ..
            } => ErrorKind::Transient,
            Error::Failed { .. } => ErrorKind::Permanent,
        }
    }

    /// Whether the same operation may succeed when run again later, unchanged.
    pub fn retryable(&self) -> bool {
        self.kind().retryable()
    }

    /// A short machine-readable name for the error, used as `kind` in JSON output.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Usage { .. } => "usage",
            Error::InvalidValue { .. } => "invalid_value",
            Error::MissingValue { .. } => "missing_value",
            Error::EnvFile { .. } => "env_file",
            Error::NotAvailable { .. } => "not_available",
            Error::Unhealthy { .. } => "unhealthy",
            Error::BackupNotFound { .. } => "backup_not_found",
            Error::Locked { .. } => "locked",
            Error::Interrupted => "interrupted",
            Error::Refused { .. } => "refused",
            Error::Failed { .. } => "failed",
        }
    }

    /// One line telling the user what to do next.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Usage { .. } => Some("run `mwaa-dr --help` for the accepted usage".into()),
            Error::InvalidValue { variable, .. } | Error::MissingValue { variable, .. } => Some(
                format!("set {variable} in the environment or the .env file; `mwaa-dr config` shows every value and its source"),
            ),
            Error::EnvFile { problem, .. } if problem == ENV_FILE_NOT_FOUND => Some(
                "check the path given to --env-file (or MWAA_DR_ENV_FILE); without it, ./.env is read when present".into(),
            ),
            Error::EnvFile { .. } => Some(
                "each line must be KEY=VALUE, a comment (#) or blank; quote values with spaces; pass --no-dotenv to ignore the file".into(),
            ),
            Error::NotAvailable { .. } => None,
            Error::Unhealthy { .. } => None,
            Error::BackupNotFound { .. } => {
                Some("`mwaa-dr list` shows the complete backups in the store".into())
            }
            Error::Locked { .. } => Some(
                "wait for the other run to finish; a lock older than its stale timeout is taken over automatically".into(),
            ),
            Error::Interrupted => Some(
                "nothing was committed halfway: run the same command again to finish the work".into(),
            ),
            Error::Refused { guidance, .. } => guidance.clone(),
            Error::Failed {
                transient: true, ..
            } => Some("this may pass: run the same command again (it is safe to repeat)".into()),
            Error::Failed { .. } => None,
        }
    }

    /// A permanent failure of `operation` on `resource`.
    pub fn failed(
        operation: impl Into<String>,
        resource: impl Into<String>,
        message: impl std::fmt::Display,
    ) -> Self {
        Self::of_class(operation, resource, message, false)
    }

    /// A failure that may pass when the same call is made again (timeouts, lost connections).
    pub fn transient(
        operation: impl Into<String>,
        resource: impl Into<String>,
        message: impl std::fmt::Display,
    ) -> Self {
        Self::of_class(operation, resource, message, true)
    }

    /// A failure without a kept cause, transient or not.
    pub fn of_class(
        operation: impl Into<String>,
        resource: impl Into<String>,
        message: impl std::fmt::Display,
        transient: bool,
    ) -> Self {
        Error::Failed {
            operation: operation.into(),
            resource: resource.into(),
            message: message.to_string(),
            transient,
            source: None,
        }
    }

    /// A failure with its cause kept; `transient` as classified by the caller.
    pub fn caused(
        operation: impl Into<String>,
        resource: impl Into<String>,
        message: impl std::fmt::Display,
        transient: bool,
        cause: impl Into<Cause>,
    ) -> Self {
        Error::Failed {
            operation: operation.into(),
            resource: resource.into(),
            message: message.to_string(),
            transient,
            source: Some(cause.into()),
        }
    }

    /// A deliberate refusal, with the reason and what the user can do instead.
    pub fn refused(
        operation: impl Into<String>,
        resource: impl Into<String>,
        reason: impl Into<String>,
        guidance: impl Into<String>,
    ) -> Self {
        Error::Refused {
            operation: operation.into(),
            resource: resource.into(),
            reason: reason.into(),
            guidance: Some(guidance.into()),
        }
    }

    /// The JSON document written to stderr with `--output json`.
    pub fn to_json(&self) -> serde_json::Value {
        #[derive(Serialize)]
        struct Doc<'a> {
            error: Body<'a>,
        }
        #[derive(Serialize)]
        struct Body<'a> {
            kind: &'a str,
            class: ErrorKind,
            retryable: bool,
            exit_code: i32,
            message: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            variable: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            hint: Option<String>,
        }
        let variable = match self {
            Error::InvalidValue { variable, .. } | Error::MissingValue { variable, .. } => {
                Some(variable.as_str())
            }
            _ => None,
        };
        serde_json::to_value(Doc {
            error: Body {
                kind: self.code(),
                class: self.kind(),
                retryable: self.retryable(),
                exit_code: self.exit_code(),
                message: self.to_string(),
                variable,
                hint: self.hint(),
            },
        })
        .unwrap_or_else(|_| serde_json::json!({ "error": { "message": self.to_string() } }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct_per_class() {
        let errors = [
            Error::Usage {
                message: "x".into(),
            },
            Error::Unhealthy {
                environment: "e".into(),
                evidence: "x".into(),
            },
            Error::BackupNotFound {
                backup: "b".into(),
                store: "s".into(),
            },
            Error::Locked {
                store: "s".into(),
                holder: "h".into(),
            },
            Error::Interrupted,
            Error::refused("failover", "env", "healthy", "pass --force"),
            Error::failed("op", "res", "boom"),
        ];
        let codes: Vec<i32> = errors.iter().map(Error::exit_code).collect();
        assert_eq!(codes, vec![2, 3, 4, 5, 130, 6, 1]);
    }

    #[test]
    fn only_transient_and_locked_errors_are_retryable() {
        assert!(Error::transient("connect", "db", "timed out").retryable());
        assert!(
            Error::Locked {
                store: "s".into(),
                holder: "h".into()
            }
            .retryable()
        );
        assert!(!Error::failed("restore", "db", "bad row").retryable());
        assert!(!Error::refused("failover", "env", "healthy", "x").retryable());
        assert!(!Error::Interrupted.retryable());
        let doc = Error::transient("connect", "db", "timed out").to_json();
        assert_eq!(doc["error"]["class"], "transient");
        assert_eq!(doc["error"]["retryable"], true);
        assert_eq!(doc["error"]["exit_code"], 1);
    }

    #[test]
    fn json_names_the_variable() {
        let err = Error::InvalidValue {
            variable: "DR_TYPE".into(),
            value: "HOT".into(),
            problem: "unknown value".into(),
            accepted: "BACKUP_RESTORE, WARM_STANDBY".into(),
        };
        let doc = err.to_json();
        assert_eq!(doc["error"]["variable"], "DR_TYPE");
        assert_eq!(doc["error"]["exit_code"], 2);
        assert_eq!(doc["error"]["kind"], "invalid_value");
    }
}
