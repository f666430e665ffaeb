//! Versioned S3 buckets as a whole: how many object versions one holds, and emptying it
//! (every version and delete marker) so that its stack can delete it.

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};

use super::{endpoint_override, sdk_config, sdk_error};
use crate::error::{Error, Result};
use crate::model::AwsTimeouts;

#[async_trait]
pub trait VersionedBuckets: Send + Sync {
    /// Object versions plus delete markers in `bucket`; `None` when there is no such bucket.
    async fn count_versions(&self, bucket: &str) -> Result<Option<u64>>;
    /// Deletes every object version and delete marker; returns how many.
    async fn empty(&self, bucket: &str) -> Result<u64>;
}

pub struct S3Buckets {
    client: Client,
}

impl S3Buckets {
    pub async fn new(region: &str, timeouts: &AwsTimeouts) -> Self {
        let shared = sdk_config(Some(region), timeouts).await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared);
        if let Some(endpoint) = endpoint_override(&shared, "S3") {
            // An emulator or a VPC endpoint: no bucket-named host there.
            builder = builder.endpoint_url(endpoint).force_path_style(true);
        }
        S3Buckets {
            client: Client::from_conf(builder.build()),
        }
    }

    /// One page of (key, version id) pairs, and the markers of the next page.
    async fn page(
        &self,
        bucket: &str,
        marker: Option<(String, Option<String>)>,
    ) -> Result<Option<(Vec<ObjectIdentifier>, Option<(String, Option<String>)>)>> {
        let (key, version) = marker.unzip();
        let out = match self
            .client
            .list_object_versions()
            .bucket(bucket)
            .set_key_marker(key)
            .set_version_id_marker(version.flatten())
            .send()
            .await
        {
            Ok(out) => out,
            Err(e)
                if e.as_service_error().and_then(|s| {
                    aws_smithy_types::error::metadata::ProvideErrorMetadata::code(s)
                }) == Some("NoSuchBucket") =>
            {
                return Ok(None);
            }
            Err(e) => {
                return Err(sdk_error("ListObjectVersions", format!("s3://{bucket}"), e));
            }
        };
        let mut ids = Vec::new();
        let pairs = out
            .versions()
            .iter()
            .map(|v| (v.key(), v.version_id()))
            .chain(
                out.delete_markers()
                    .iter()
                    .map(|m| (m.key(), m.version_id())),
            );
        for (key, version) in pairs {
            let Some(key) = key else { continue };
            let id = ObjectIdentifier::builder()
                .key(key)
                .set_version_id(version.map(str::to_string))
                .build()
                .map_err(|e| Error::failed("ListObjectVersions", format!("s3://{bucket}"), e))?;
            ids.push(id);
        }
        let next = if out.is_truncated() == Some(true) {
            out.next_key_marker().map(|k| {
                (
                    k.to_string(),
                    out.next_version_id_marker().map(str::to_string),
                )
            })
        } else {
            None
        };
        Ok(Some((ids, next)))
    }
}

#[async_trait]
impl VersionedBuckets for S3Buckets {
    async fn count_versions(&self, bucket: &str) -> Result<Option<u64>> {
        let mut total = 0u64;
        let mut marker = None;
        loop {
            let Some((ids, next)) = self.page(bucket, marker).await? else {
                return Ok(None);
            };
            total += ids.len() as u64;
            match next {
                Some(next) => marker = Some(next),
                None => return Ok(Some(total)),
            }
        }
    }

    async fn empty(&self, bucket: &str) -> Result<u64> {
        let mut deleted = 0u64;
        // Deleting changes the listing: always start again from the top until it is empty.
        loop {
            let Some((ids, _)) = self.page(bucket, None).await? else {
                return Ok(deleted);
            };
            if ids.is_empty() {
                return Ok(deleted);
            }
            let count = ids.len() as u64;
            let delete = Delete::builder()
                .set_objects(Some(ids))
                .quiet(true)
                .build()
                .map_err(|e| Error::failed("DeleteObjects", format!("s3://{bucket}"), e))?;
            let out = self
                .client
                .delete_objects()
                .bucket(bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| sdk_error("DeleteObjects", format!("s3://{bucket}"), e))?;
            if let Some(error) = out.errors().first() {
                return Err(Error::failed(
                    "DeleteObjects",
                    format!("s3://{bucket}/{}", error.key().unwrap_or_default()),
                    error.message().unwrap_or("refused"),
                ));
            }
            deleted += count;
        }
    }
}
