//! The backup store: where backups live and how they are laid out.

pub mod environments;
pub mod failing;
pub mod local;
pub mod lock;
pub mod manifest;
pub mod s3;
pub mod verify;

use std::fmt;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;

use async_trait::async_trait;
use tokio::io::AsyncRead;

use crate::error::Result;

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
/// standard AWS configuration chain.
pub async fn open_store(
    location: &StoreLocation,
    config: &crate::config::Config,
) -> Result<Box<dyn BackupStore>> {
    let store: Box<dyn BackupStore> = match location {
        StoreLocation::Local { path } => Box::new(local::LocalStore::new(path.clone())),
        StoreLocation::S3 { bucket, prefix } => Box::new(
            s3::S3Store::from_env(
                bucket,
                prefix,
                config.s3_encryption.clone(),
                &config.aws_timeouts,
            )
            .await,
        ),
    };
    Ok(match failing::armed_fault() {
        Some(fault) => Box::new(failing::FailingStore::new(store, vec![fault])),
        None => store,
    })
}

pub const ACCEPTED_LOCATIONS: &str =
    "s3://BUCKET[/PREFIX], file:///ABSOLUTE/PATH or a plain directory path";

/// A parsed backup store location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    S3 { bucket: String, prefix: String },
    Local { path: PathBuf },
}

impl StoreLocation {
    pub fn s3(bucket: &str, prefix: &str) -> Self {
        StoreLocation::S3 {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        }
    }
}

impl FromStr for StoreLocation {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        let value = raw.trim();
        if value.is_empty() {
            return Err("it is empty".into());
        }
        if let Some(rest) = value.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err("the s3:// URL names no bucket".into());
            }
            return Ok(StoreLocation::s3(bucket, prefix));
        }
        if let Some(rest) = value.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err("a file:// URL needs an absolute path (file:///…)".into());
            }
            return Ok(StoreLocation::Local { path: rest.into() });
        }
        if let Some((scheme, _)) = value.split_once("://") {
            return Err(format!("scheme {scheme}:// is not supported"));
        }
        Ok(StoreLocation::Local { path: value.into() })
    }
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            StoreLocation::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            StoreLocation::Local { path } => write!(f, "{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_accepted_form() {
        assert_eq!(
            "s3://bucket/some/prefix/".parse(),
            Ok(StoreLocation::s3("bucket", "some/prefix"))
        );
        assert_eq!("s3://bucket".parse(), Ok(StoreLocation::s3("bucket", "")));
        assert_eq!(
            "file:///var/backups".parse(),
            Ok(StoreLocation::Local {
                path: "/var/backups".into()
            })
        );
        assert_eq!(
            "./backups".parse(),
            Ok(StoreLocation::Local {
                path: "./backups".into()
            })
        );
        assert!("gs://bucket".parse::<StoreLocation>().is_err());
        assert!("file://relative".parse::<StoreLocation>().is_err());
        assert!("s3:///prefix".parse::<StoreLocation>().is_err());
    }
}
