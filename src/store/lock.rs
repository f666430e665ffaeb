//! Store locks: `locks/<id>.json`. Backups and restores hold a shared lock, prune an exclusive
//! one, so prune never deletes a backup being written or read. A lock older than its stale
//! timeout, or held by a dead process on this host, is ignored.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::BackupStore;
use crate::error::{Error, Result};

const LOCKS_PREFIX: &str = "locks/";

/// Locks older than this are stale: their holder died without removing them.
pub const STALE_AFTER: Duration = Duration::from_secs(6 * 3600);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LockFile {
    exclusive: bool,
    command: String,
    hostname: String,
    pid: u32,
    time: DateTime<Utc>,
}

impl LockFile {
    fn describe(&self) -> String {
        format!(
            "`mwaa-dr {}` (pid {} on {}, since {})",
            self.command,
            self.pid,
            self.hostname,
            self.time.format("%Y-%m-%d %H:%M:%S UTC")
        )
    }

    fn is_live(&self, now: DateTime<Utc>, host: &str) -> bool {
        let age = now
            .signed_duration_since(self.time)
            .to_std()
            .unwrap_or_default();
        if age > STALE_AFTER {
            return false;
        }
        // On this host a dead process's lock is stale at once.
        self.hostname != host || process_alive(self.pid)
    }
}

/// A held lock; `release` removes it.
pub struct StoreLock {
    key: String,
}

impl StoreLock {
    pub async fn release(self, store: &dyn BackupStore) -> Result<()> {
        store.delete(&self.key).await
    }
}

/// Takes a lock on `store` for `command`, or fails with the "locked" error naming the holder.
pub async fn acquire(store: &dyn BackupStore, exclusive: bool, command: &str) -> Result<StoreLock> {
    let host = hostname();
    let conflict = || async {
        let now = Utc::now();
        for lock in live_locks(store, now, &host).await? {
            if exclusive || lock.1.exclusive {
                return Ok::<_, Error>(Some(lock));
            }
        }
        Ok(None)
    };
    if let Some((_, holder)) = conflict().await? {
        return Err(locked(store, &holder));
    }
    let mine = LockFile {
        exclusive,
        command: command.to_string(),
        hostname: host.clone(),
        pid: std::process::id(),
        time: Utc::now(),
    };
    let key = format!(
        "{LOCKS_PREFIX}{}-{}.json",
        mine.time.format("%Y%m%dT%H%M%S%.6fZ"),
        mine.pid
    );
    let body = serde_json::to_vec(&mine).map_err(|e| Error::failed("write lock", &key, e))?;
    store.put_bytes(&key, &body).await?;
    // Two runs may have written at the same moment: look again, and back off if another
    // lock now conflicts (both may back off; neither proceeds wrongly).
    let now = Utc::now();
    for (other_key, other) in live_locks(store, now, &host).await? {
        if other_key != key && (exclusive || other.exclusive) {
            let _ = store.delete(&key).await;
            return Err(locked(store, &other));
        }
    }
    Ok(StoreLock { key })
}

async fn live_locks(
    store: &dyn BackupStore,
    now: DateTime<Utc>,
    host: &str,
) -> Result<Vec<(String, LockFile)>> {
    let mut out = Vec::new();
    for object in store.list(LOCKS_PREFIX).await? {
        let bytes = match store.get_bytes(&object.key).await {
            Ok(bytes) => bytes,
            Err(_) => continue, // removed between list and read
        };
        match serde_json::from_slice::<LockFile>(&bytes) {
            Ok(lock) if lock.is_live(now, host) => out.push((object.key, lock)),
            Ok(_) => {}
            Err(e) => warn!(key = %object.key, error = %e, "ignoring an unreadable lock file"),
        }
    }
    Ok(out)
}

fn locked(store: &dyn BackupStore, holder: &LockFile) -> Error {
    Error::Locked {
        store: store.describe(),
        holder: holder.describe(),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into())
}

fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        std::path::Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::local::LocalStore;

    #[tokio::test]
    async fn shared_locks_coexist_and_exclusive_waits_for_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path());
        let a = acquire(&store, false, "backup").await.expect("shared");
        let b = acquire(&store, false, "restore")
            .await
            .expect("second shared");
        let err = acquire(&store, true, "prune")
            .await
            .err()
            .expect("exclusive refused");
        assert_eq!(err.exit_code(), crate::error::exit::LOCKED);
        assert!(
            err.to_string().contains("mwaa-dr backup")
                || err.to_string().contains("mwaa-dr restore"),
            "{err}"
        );
        a.release(&store).await.expect("release");
        b.release(&store).await.expect("release");
        let p = acquire(&store, true, "prune")
            .await
            .expect("exclusive once free");
        assert!(
            acquire(&store, false, "backup").await.is_err(),
            "shared refused under exclusive"
        );
        p.release(&store).await.expect("release");
    }

    #[tokio::test]
    async fn locks_of_dead_processes_and_old_locks_are_stale() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path());
        let dead = LockFile {
            exclusive: true,
            command: "prune".into(),
            hostname: hostname(),
            pid: u32::MAX - 1,
            time: Utc::now(),
        };
        let old = LockFile {
            hostname: "elsewhere".into(),
            pid: 1,
            time: Utc::now() - chrono::Duration::hours(7),
            ..dead.clone()
        };
        store
            .put_bytes("locks/dead.json", &serde_json::to_vec(&dead).expect("json"))
            .await
            .expect("put");
        store
            .put_bytes("locks/old.json", &serde_json::to_vec(&old).expect("json"))
            .await
            .expect("put");
        let lock = acquire(&store, false, "backup")
            .await
            .expect("stale locks ignored");
        lock.release(&store).await.expect("release");
    }
}
