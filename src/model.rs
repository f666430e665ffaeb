//! Value types shared by every layer, with no behaviour beyond validation. This module
//! depends on nothing else in the crate.

use std::time::Duration;

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
