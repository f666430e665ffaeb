//! One module per subcommand: thin orchestration over the library.

pub mod backup;
pub mod cleanup;
pub mod config;
pub mod failover;
pub mod health_check;
pub mod list;
pub mod prune;
pub mod restore;
pub mod restore_legacy;
pub mod verify;

use std::future::Future;
use std::io::{BufRead, IsTerminal, Write};

use crate::config::{Config, DbUrl};
use crate::db::PgConnector;
use crate::error::{Error, Result};
use crate::store::{BackupStore, StoreLocation, lock};

/// Runs `work` holding a store lock (shared, or exclusive for deletions); see
/// [`lock::with_lock`].
pub async fn with_store_lock<T>(
    store: &dyn BackupStore,
    exclusive: bool,
    command: &str,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    lock::with_lock(store, lock::LockScope::Store, exclusive, command, work).await
}

/// Opens the configured kind of store at `location` (S3 encryption and timeouts from
/// `config`).
pub async fn open_store(location: &StoreLocation, config: &Config) -> Result<Box<dyn BackupStore>> {
    crate::store::open_store(
        location,
        config.s3_encryption.as_ref(),
        &config.aws_timeouts,
    )
    .await
}

/// How to reach `url`, with the configured timeouts.
pub fn connector(config: &Config, url: DbUrl) -> PgConnector {
    PgConnector::new(url, config.db_timeouts)
}

/// Asks before a destructive step, unless `--yes`. Without a terminal to ask on, refuses.
pub fn confirm(config: &Config, question: &str) -> Result<()> {
    if config.assume_yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Error::Usage {
            message: format!("{question}: no terminal to confirm on; pass --yes to proceed"),
        });
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES") {
        Ok(())
    } else {
        Err(Error::Usage {
            message: "not confirmed; nothing was changed".into(),
        })
    }
}
