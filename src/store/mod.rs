//! The backup store: where backups live and how they are laid out.

pub mod environments;
pub mod failing;
pub mod local;
pub mod lock;
pub mod manifest;
pub mod pipeline;
pub mod runs;
pub mod s3;
pub mod stream;
pub mod verify;

use std::pin::Pin;

use async_trait::async_trait;
use tokio::io::AsyncRead;

use crate::error::Result;
pub use crate::model::{ACCEPTED_LOCATIONS, StoreLocation};

/// A stream of an object's bytes.
pub type ObjectReader = Pin<Box<dyn AsyncRead + Send>>;

/// One stored object: key relative to the store's root, and size in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
}

/// A key-value store of immutable objects: a local directory or an S3 prefix.
///
/// Keys are `/`-separated and relative to the store's root. An object is visible only once
/// its writer finished; an object is never overwritten.
#[async_trait]
pub trait BackupStore: Send + Sync {
    /// The store as users name it (`s3://bucket/prefix` or a path), for messages.
    fn describe(&self) -> String;

    /// Starts a new object. Fails when `key` exists already.
    async fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>>;

    /// Streams an object; an error names the key when it does not exist.
    async fn open(&self, key: &str) -> Result<ObjectReader>;

    /// Whether `key` exists.
    async fn exists(&self, key: &str) -> Result<bool>;

    /// Every object whose key starts with `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;

    /// Deletes an object; deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<()>;

    /// When the object was last written, where the backend can tell (`None` otherwise);
    /// prune's age rule for incomplete backups uses it.
    async fn modified(&self, _key: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        Ok(None)
    }

    /// Removes what killed writers left behind under `prefix` and that is older than
    /// `older_than`: temporary files of a directory store, incomplete multipart uploads of
    /// S3. None of it is visible as an object. Returns what it removed.
    async fn collect_abandoned_writes(
        &self,
        _prefix: &str,
        _older_than: std::time::Duration,
    ) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// Writes a small object in one go.
    async fn put_bytes(&self, key: &str, bytes: &[u8]) -> Result<u64> {
        let mut writer = self.create(key).await?;
        if let Err(err) = writer.write(bytes).await {
            let _ = writer.abort().await;
            return Err(err);
        }
        writer.finish().await
    }

    /// Reads a small object whole.
    async fn get_bytes(&self, key: &str) -> Result<Vec<u8>> {
        use tokio::io::AsyncReadExt;
        let mut reader = self.open(key).await?;
        let mut buf = Vec::new();
        reader.read_to_end(&mut buf).await.map_err(|e| {
            crate::error::Error::failed("read", format!("{}/{key}", self.describe()), e)
        })?;
        Ok(buf)
    }
}

/// A new object being written. Nothing is visible until `finish`; `abort` (or an error)
/// leaves nothing behind.
#[async_trait]
pub trait ObjectWriter: Send {
    async fn write(&mut self, chunk: &[u8]) -> Result<()>;
    /// Makes the object visible and returns its size.
    async fn finish(self: Box<Self>) -> Result<u64>;
    async fn abort(self: Box<Self>) -> Result<()>;
}

/// Opens the store at `location`; S3 takes its credentials, region and endpoint from the
/// standard AWS configuration chain, `encryption` and `timeouts` from the caller.
pub async fn open_store(
    location: &StoreLocation,
    encryption: Option<&crate::model::S3Encryption>,
    timeouts: &crate::model::AwsTimeouts,
) -> Result<Box<dyn BackupStore>> {
    let store: Box<dyn BackupStore> = match location {
        StoreLocation::Local { path } => Box::new(local::LocalStore::new(path.clone())),
        StoreLocation::S3 { bucket, prefix } => {
            Box::new(s3::S3Store::from_env(bucket, prefix, encryption.cloned(), timeouts).await)
        }
    };
    Ok(match failing::armed_fault() {
        Some(fault) => Box::new(failing::FailingStore::new(store, vec![fault])),
        None => store,
    })
}
