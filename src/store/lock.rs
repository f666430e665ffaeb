//! Store locks: `locks/<id>.json`. Backups and restores hold a shared lock, prune an exclusive
//! one, so prune never deletes a backup being written or read; a failover holds an exclusive
//! lock of its own scope (`failover-locks/`), so two runs never drive the same recovery.
//!
//! A holder refreshes its lock every [`REFRESH_EVERY`] (a new object, then the old one
//! deleted: objects are never overwritten). A lock not refreshed for [`STALE_AFTER`], or held
//! by a dead process on this host, is stale and ignored. A lock that exists but cannot be
//! read counts as held: a run never proceeds on a lock it could not see.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use super::BackupStore;
use crate::error::{Error, Result};

/// What a lock protects. Locks of different scopes never conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockScope {
    /// The backups of the store.
    Store,
    /// The failover runs recorded in the store.
    Failover,
}

impl LockScope {
    fn prefix(self) -> &'static str {
        match self {
            LockScope::Store => "locks/",
            LockScope::Failover => "failover-locks/",
        }
    }
}

/// How often a holder refreshes its lock.
pub const REFRESH_EVERY: Duration = Duration::from_secs(60);

/// A lock not refreshed for this long is stale: its holder died without removing it.
pub const STALE_AFTER: Duration = Duration::from_secs(10 * 60);

/// Locks written by builds that did not refresh them are stale after this long.
const LEGACY_STALE_AFTER: Duration = Duration::from_secs(6 * 3600);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LockFile {
    exclusive: bool,
    command: String,
    hostname: String,
    pid: u32,
    time: DateTime<Utc>,
    /// Last refresh; absent in locks of builds that never refreshed them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refreshed: Option<DateTime<Utc>>,
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
        let (seen, stale_after) = match self.refreshed {
            Some(refreshed) => (refreshed, STALE_AFTER),
            None => (self.time, LEGACY_STALE_AFTER),
        };
        let age = now.signed_duration_since(seen).to_std().unwrap_or_default();
        if age > stale_after {
            return false;
        }
        // On this host a dead process's lock is stale at once.
        self.hostname != host || process_alive(self.pid)
    }

    fn key(&self, scope: LockScope, seq: u32) -> String {
        format!(
            "{}{}-{}-{}-{seq}.json",
            scope.prefix(),
            self.time.format("%Y%m%dT%H%M%S%.6fZ"),
            sanitize(&self.hostname),
            self.pid
        )
    }
}

fn sanitize(host: &str) -> String {
    host.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

/// A held lock; `release` removes it, `refresh` renews it.
pub struct StoreLock {
    scope: LockScope,
    key: String,
    file: LockFile,
    seq: u32,
}

impl StoreLock {
    pub async fn release(self, store: &dyn BackupStore) -> Result<()> {
        store.delete(&self.key).await
    }

    /// Writes the lock anew with the current time, then removes the previous object. A
    /// failed refresh is logged and retried at the next tick: the lock stays live until
    /// [`STALE_AFTER`] anyway.
    pub async fn refresh(&mut self, store: &dyn BackupStore) {
        let mut file = self.file.clone();
        file.refreshed = Some(Utc::now());
        let seq = self.seq + 1;
        let key = file.key(self.scope, seq);
        let written = match serde_json::to_vec(&file) {
            Ok(body) => store.put_bytes(&key, &body).await.map(|_| ()),
            Err(e) => Err(Error::failed("write lock", &key, e)),
        };
        match written {
            Ok(()) => {
                let old = std::mem::replace(&mut self.key, key);
                self.file = file;
                self.seq = seq;
                if let Err(e) = store.delete(&old).await {
                    warn!(key = %old, error = %e, "could not remove the previous lock object");
                }
                debug!(key = %self.key, "lock refreshed");
            }
            Err(e) => warn!(error = %e, "could not refresh the store lock; retrying later"),
        }
    }
}

/// Runs `work` holding a lock of `scope` (shared, or exclusive for deletions and failovers),
/// refreshing it while `work` runs; the lock goes away whatever `work` returns. A run killed
/// with its lock held leaves a lock that goes stale after [`STALE_AFTER`], at once for the
/// next run on the same host.
pub async fn with_lock<T>(
    store: &dyn BackupStore,
    scope: LockScope,
    exclusive: bool,
    command: &str,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    let mut held = acquire_scoped(store, scope, exclusive, command).await?;
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + REFRESH_EVERY, REFRESH_EVERY);
    let work = std::pin::pin!(work);
    let mut work = work;
    let result = loop {
        tokio::select! {
            result = &mut work => break result,
            _ = tick.tick() => held.refresh(store).await,
        }
    };
    let released = held.release(store).await;
    let value = result?;
    released?;
    Ok(value)
}

/// Takes a store lock for `command`, or fails with the "locked" error naming the holder.
pub async fn acquire(store: &dyn BackupStore, exclusive: bool, command: &str) -> Result<StoreLock> {
    acquire_scoped(store, LockScope::Store, exclusive, command).await
}

/// Takes a lock of `scope` for `command`, or fails with the "locked" error naming the holder.
pub async fn acquire_scoped(
    store: &dyn BackupStore,
    scope: LockScope,
    exclusive: bool,
    command: &str,
) -> Result<StoreLock> {
    let host = hostname();
    let conflict = |locks: Vec<(String, Holder)>, mine: Option<&str>| {
        locks.into_iter().find_map(|(key, holder)| {
            let conflicts = Some(key.as_str()) != mine
                && match &holder {
                    Holder::Known(lock) => exclusive || lock.exclusive,
                    Holder::Unreadable(_) => true,
                };
            conflicts.then_some(holder)
        })
    };
    if let Some(holder) = conflict(live_locks(store, scope, Utc::now(), &host).await?, None) {
        return Err(locked(store, &holder));
    }
    let mine = LockFile {
        exclusive,
        command: command.to_string(),
        hostname: host.clone(),
        pid: std::process::id(),
        time: Utc::now(),
        refreshed: Some(Utc::now()),
    };
    let key = mine.key(scope, 0);
    let body = serde_json::to_vec(&mine).map_err(|e| Error::failed("write lock", &key, e))?;
    store.put_bytes(&key, &body).await?;
    // Two runs may have written at the same moment: look again, and back off if another
    // lock now conflicts (both may back off; neither proceeds wrongly).
    let again = match live_locks(store, scope, Utc::now(), &host).await {
        Ok(locks) => locks,
        Err(e) => {
            let _ = store.delete(&key).await;
            return Err(e);
        }
    };
    if let Some(holder) = conflict(again, Some(&key)) {
        let _ = store.delete(&key).await;
        return Err(locked(store, &holder));
    }
    Ok(StoreLock {
        scope,
        key,
        file: mine,
        seq: 0,
    })
}

/// A live lock's holder, or the key of a lock that exists but could not be read.
enum Holder {
    Known(LockFile),
    Unreadable(String),
}

async fn live_locks(
    store: &dyn BackupStore,
    scope: LockScope,
    now: DateTime<Utc>,
    host: &str,
) -> Result<Vec<(String, Holder)>> {
    let mut out = Vec::new();
    for object in store.list(scope.prefix()).await? {
        let bytes = match store.get_bytes(&object.key).await {
            Ok(bytes) => bytes,
            // Removed between list and read (a holder refreshing or releasing): gone.
            Err(_) if !store.exists(&object.key).await? => continue,
            Err(e) => {
                return Err(Error::failed(
                    "read lock",
                    format!("{}/{}", store.describe(), object.key),
                    format!("{e}; a lock that cannot be read counts as held, so nothing proceeds"),
                ));
            }
        };
        match serde_json::from_slice::<LockFile>(&bytes) {
            Ok(lock) if lock.is_live(now, host) => out.push((object.key, Holder::Known(lock))),
            // Its holder died (kill -9, a lost host): nothing will remove it but us.
            Ok(lock) => {
                debug!(key = %object.key, holder = %lock.describe(), "removing a stale lock");
                if let Err(e) = store.delete(&object.key).await {
                    warn!(key = %object.key, error = %e, "could not remove a stale lock");
                }
            }
            Err(e) => {
                warn!(key = %object.key, error = %e, "a lock file that is not a mwaa-dr lock");
                out.push((object.key.clone(), Holder::Unreadable(object.key)));
            }
        }
    }
    Ok(out)
}

fn locked(store: &dyn BackupStore, holder: &Holder) -> Error {
    Error::Locked {
        store: store.describe(),
        holder: match holder {
            Holder::Known(lock) => lock.describe(),
            Holder::Unreadable(key) => format!(
                "an unreadable lock object {key} (remove it once you are sure no mwaa-dr run uses the store)"
            ),
        },
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
            refreshed: Some(Utc::now()),
        };
        let old = LockFile {
            hostname: "elsewhere".into(),
            pid: 1,
            time: Utc::now() - chrono::Duration::hours(7),
            refreshed: None,
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
        assert!(
            store.list("locks/").await.expect("list").is_empty(),
            "stale locks are removed by the next run"
        );
    }

    #[tokio::test]
    async fn a_lock_of_another_host_blocks_until_it_stops_being_refreshed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path());
        let elsewhere = |refreshed_min_ago: i64| LockFile {
            exclusive: false,
            command: "backup".into(),
            hostname: "other-host".into(),
            pid: 1,
            time: Utc::now() - chrono::Duration::hours(2),
            refreshed: Some(Utc::now() - chrono::Duration::minutes(refreshed_min_ago)),
        };
        let put = |name: &'static str, lock: LockFile| {
            let store = &store;
            async move {
                store
                    .put_bytes(name, &serde_json::to_vec(&lock).expect("json"))
                    .await
                    .expect("put");
            }
        };
        put("locks/fresh.json", elsewhere(1)).await;
        let err = acquire(&store, true, "prune")
            .await
            .err()
            .expect("a recently refreshed lock of another host blocks prune");
        assert!(err.to_string().contains("other-host"), "{err}");
        store.delete("locks/fresh.json").await.expect("delete");
        put("locks/abandoned.json", elsewhere(11)).await;
        let lock = acquire(&store, true, "prune")
            .await
            .expect("a lock not refreshed for 10 minutes is stale");
        lock.release(&store).await.expect("release");
    }

    #[tokio::test]
    async fn refresh_replaces_the_lock_object() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path());
        let mut lock = acquire(&store, false, "restore").await.expect("lock");
        let before = store.list("locks/").await.expect("list");
        lock.refresh(&store).await;
        let after = store.list("locks/").await.expect("list");
        assert_eq!((before.len(), after.len()), (1, 1));
        assert_ne!(before[0].key, after[0].key);
        lock.release(&store).await.expect("release");
        assert!(store.list("locks/").await.expect("list").is_empty());
    }

    #[tokio::test]
    async fn a_lock_that_cannot_be_read_counts_as_held() {
        use crate::store::failing::{FailingStore, Fault, Op};
        let dir = tempfile::tempdir().expect("tempdir");
        let inner = LocalStore::new(dir.path());
        let other = acquire(&inner, false, "backup").await.expect("lock");
        let store = FailingStore::new(
            LocalStore::new(dir.path()),
            vec![Fault::Under {
                op: Op::Open,
                prefix: "locks/".into(),
            }],
        );
        let err = acquire(&store, true, "prune")
            .await
            .err()
            .expect("fail closed");
        assert!(err.to_string().contains("counts as held"), "{err}");
        assert_eq!(
            store.list("locks/").await.expect("list").len(),
            1,
            "nothing written"
        );
        other.release(&inner).await.expect("release");
    }

    #[tokio::test]
    async fn failover_locks_do_not_conflict_with_store_locks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path());
        let failover = acquire_scoped(&store, LockScope::Failover, true, "failover")
            .await
            .expect("failover lock");
        let restore = acquire(&store, false, "restore")
            .await
            .expect("the failover's own restore takes a store lock");
        assert!(
            acquire_scoped(&store, LockScope::Failover, true, "failover")
                .await
                .is_err(),
            "a second failover is refused"
        );
        restore.release(&store).await.expect("release");
        failover.release(&store).await.expect("release");
    }
}
