//! A store decorator that fails on purpose: the k-th call of chosen operations, or every
//! call on keys under a prefix. For fault-injection tests of everything above the store.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;

use super::{BackupStore, ObjectInfo, ObjectReader, ObjectWriter};
use crate::error::{Error, Result};

/// A store operation, as the decorator counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Create,
    Open,
    Exists,
    List,
    Delete,
}

/// When the decorator fails a call.
#[derive(Debug, Clone)]
pub enum Fault {
    /// The k-th call (1-based, counting only `op`) fails; the others pass through.
    Nth { op: Op, k: usize },
    /// Every call of `op` on a key starting with `prefix` fails.
    Under { op: Op, prefix: String },
}

/// The variable that makes the binary's store fail its k-th call of one operation, for the
/// fault matrix: `MWAA_DR_TEST_STORE_FAULT=<create|open|exists|list|delete>#<k>`.
pub const VARIABLE: &str = "MWAA_DR_TEST_STORE_FAULT";

/// The fault the variable arms, if it is set and well-formed.
pub fn armed_fault() -> Option<Fault> {
    let raw = std::env::var(VARIABLE).ok()?;
    let (op, k) = raw.split_once('#')?;
    let op = match op {
        "create" => Op::Create,
        "open" => Op::Open,
        "exists" => Op::Exists,
        "list" => Op::List,
        "delete" => Op::Delete,
        _ => return None,
    };
    Some(Fault::Nth {
        op,
        k: k.parse().ok()?,
    })
}

pub struct FailingStore<S> {
    inner: S,
    faults: Mutex<Vec<Fault>>,
    calls: [AtomicUsize; 5],
}

impl<S: BackupStore> FailingStore<S> {
    pub fn new(inner: S, faults: Vec<Fault>) -> Self {
        FailingStore {
            inner,
            faults: Mutex::new(faults),
            calls: Default::default(),
        }
    }

    fn check(&self, op: Op, key: &str) -> Result<()> {
        let n = self.calls[op as usize].fetch_add(1, Ordering::SeqCst) + 1;
        let faults = self.faults.lock().map(|f| f.clone()).unwrap_or_default();
        let hit = faults.iter().any(|fault| match fault {
            Fault::Nth { op: o, k } => *o == op && *k == n,
            Fault::Under { op: o, prefix } => *o == op && key.starts_with(prefix.as_str()),
        });
        if hit {
            return Err(Error::transient(
                format!("{op:?}").to_lowercase(),
                key,
                "injected fault (AccessDenied)",
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl<S: BackupStore> BackupStore for FailingStore<S> {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>> {
        self.check(Op::Create, key)?;
        self.inner.create(key).await
    }

    async fn open(&self, key: &str) -> Result<ObjectReader> {
        self.check(Op::Open, key)?;
        self.inner.open(key).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.check(Op::Exists, key)?;
        self.inner.exists(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.check(Op::List, prefix)?;
        self.inner.list(prefix).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.check(Op::Delete, key)?;
        self.inner.delete(key).await
    }

    async fn modified(&self, key: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        self.inner.modified(key).await
    }

    async fn collect_abandoned_writes(
        &self,
        prefix: &str,
        older_than: std::time::Duration,
    ) -> Result<Vec<String>> {
        self.check(Op::Delete, prefix)?;
        self.inner
            .collect_abandoned_writes(prefix, older_than)
            .await
    }
}

/// A boxed store is a store, so the decorator can wrap whatever `open_store` opened.
#[async_trait]
impl BackupStore for Box<dyn BackupStore> {
    fn describe(&self) -> String {
        self.as_ref().describe()
    }

    async fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>> {
        self.as_ref().create(key).await
    }

    async fn open(&self, key: &str) -> Result<ObjectReader> {
        self.as_ref().open(key).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.as_ref().exists(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.as_ref().list(prefix).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.as_ref().delete(key).await
    }

    async fn modified(&self, key: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        self.as_ref().modified(key).await
    }

    async fn collect_abandoned_writes(
        &self,
        prefix: &str,
        older_than: std::time::Duration,
    ) -> Result<Vec<String>> {
        self.as_ref()
            .collect_abandoned_writes(prefix, older_than)
            .await
    }
}
