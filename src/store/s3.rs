//! The S3 backend: objects under `s3://bucket/prefix/`, written by streamed multipart upload.
//!
//! A writer buffers one part in memory while earlier parts upload beside it; the writers of
//! one store upload at most `PARTS_IN_FLIGHT` parts at a time between them, so that a
//! backup's memory does not grow with `--jobs` by more than one part per worker. An object smaller than one part goes up with a single PutObject; a larger one
//! with a multipart upload that becomes visible only at CompleteMultipartUpload. Both carry `If-None-Match: *`, so an object is never overwritten,
//! even by a writer racing another one. A failed, aborted or dropped writer aborts its
//! multipart upload, so no upload lingers (and costs storage) in the bucket.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ServerSideEncryption,
};
use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::{BackupStore, ObjectInfo, ObjectReader, ObjectWriter};
use crate::error::{Error, Result};
use crate::model::AwsTimeouts;
use crate::model::S3Encryption;

const MIB: usize = 1024 * 1024;

/// The part size used unless another is asked for.
pub const DEFAULT_PART_SIZE: usize = 5 * MIB;
/// S3's smallest part (every part but the last).
pub const MIN_PART_SIZE: usize = 5 * MIB;
/// S3's largest part.
pub const MAX_PART_SIZE: usize = 5 * 1024 * MIB;
/// S3's highest part number.
const MAX_PARTS: i32 = 10_000;
/// Parts uploading at the same time, all the store's writers together, while each writer
/// fills its next one: `N` writers hold at most `N + PARTS_IN_FLIGHT` parts.
pub const PARTS_IN_FLIGHT: usize = 2;
/// The part size doubles after this many parts, so that an object can outgrow
/// `MAX_PARTS * part_size` while memory stays bounded by the current part size.
const PARTS_PER_SIZE_STEP: i32 = 1_000;

/// The service-specific endpoint variable. The SDK's S3 client honours it, but the shared
/// configuration's `endpoint_url()` does not report it.
const S3_ENDPOINT_VAR: &str = "AWS_ENDPOINT_URL_S3";

const EXISTS_MESSAGE: &str = "object exists already; objects are never overwritten";

pub struct S3Store {
    client: Client,
    bucket: String,
    /// Without leading or trailing `/`; empty for the bucket's root.
    prefix: String,
    encryption: Option<S3Encryption>,
    part_size: usize,
    page_size: Option<i32>,
    parts: Arc<SharedParts>,
}

/// What the writers of one store share: the permits for parts in flight
/// (`PARTS_IN_FLIGHT`), and the buffers of uploaded parts, to be filled again. Buffers of
/// megabytes freed and allocated anew scatter over the allocator's per-thread arenas, which
/// keep them: a `--jobs 2` backup to S3 grew by some 12 MB that way.
struct SharedParts {
    uploads: Arc<Semaphore>,
    idle: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl SharedParts {
    fn new() -> Self {
        SharedParts {
            uploads: Arc::new(Semaphore::new(PARTS_IN_FLIGHT)),
            idle: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// An empty buffer of an uploaded part, if one is there.
    fn take(&self) -> Option<Vec<u8>> {
        self.idle.lock().ok()?.pop()
    }

    /// Takes back the buffer of an uploaded part when nothing else holds it. Only buffers
    /// that had no taker are freed, so the buffers alive are at most the parts that were
    /// filling or uploading at once.
    fn give(&self, part: Bytes) {
        let Ok(part) = part.try_into_mut() else {
            return;
        };
        let mut buffer = Vec::from(part);
        buffer.clear();
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < PARTS_IN_FLIGHT
        {
            idle.push(buffer);
        }
    }
}

impl S3Store {
    /// A store on `s3://bucket/prefix`. `part_size` is clamped to S3's limits
    /// (5 MiB to 5 GiB); objects up to that size go up in one PutObject.
    pub fn new(
        client: Client,
        bucket: impl Into<String>,
        prefix: &str,
        encryption: Option<S3Encryption>,
        part_size: usize,
    ) -> Self {
        S3Store {
            client,
            bucket: bucket.into(),
            prefix: prefix.trim_matches('/').to_string(),
            encryption,
            part_size: part_size.clamp(MIN_PART_SIZE, MAX_PART_SIZE),
            page_size: None,
            parts: Arc::new(SharedParts::new()),
        }
    }

    /// A store whose client comes from the standard AWS configuration chain (environment,
    /// profile, instance or task role), with the default part size.
    pub async fn from_env(
        bucket: &str,
        prefix: &str,
        encryption: Option<S3Encryption>,
        timeouts: &AwsTimeouts,
    ) -> Self {
        S3Store::new(
            client_from_sdk_config(&crate::aws::sdk_config(None, timeouts).await),
            bucket,
            prefix,
            encryption,
            DEFAULT_PART_SIZE,
        )
    }

    /// A store whose client is bound to `region` (a bucket of another Region than the
    /// chain's), otherwise as [`S3Store::from_env`].
    pub async fn in_region(
        bucket: &str,
        prefix: &str,
        region: &str,
        timeouts: &AwsTimeouts,
    ) -> Self {
        S3Store::new(
            client_from_sdk_config(&crate::aws::sdk_config(Some(region), timeouts).await),
            bucket,
            prefix,
            None,
            DEFAULT_PART_SIZE,
        )
    }

    /// Asks ListObjectsV2 for at most `keys` keys per page (the service's default is 1000).
    pub fn with_page_size(mut self, keys: i32) -> Self {
        self.page_size = Some(keys.max(1));
        self
    }

    pub fn part_size(&self) -> usize {
        self.part_size
    }

    /// The object key of a store key.
    fn full_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    fn resource(&self, full_key: &str) -> String {
        format!("s3://{}/{full_key}", self.bucket)
    }

    /// The object key of a store key, refusing keys that a directory store could not hold,
    /// so that both backends accept the same keys.
    fn checked_key(&self, key: &str) -> Result<String> {
        if key.is_empty()
            || key
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == "..")
        {
            return Err(Error::failed(
                "resolve",
                self.resource(&self.full_key(key)),
                "not a valid object key",
            ));
        }
        Ok(self.full_key(key))
    }

    async fn head(&self, full_key: &str, operation: &str) -> Result<bool> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(full_key)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(err) if err.as_service_error().is_some_and(|e| e.is_not_found()) => Ok(false),
            Err(err) => Err(sdk_failed(operation, self.resource(full_key), err)),
        }
    }
}

/// An S3 client from a loaded AWS configuration. Path-style addressing is forced when an
/// endpoint override is configured (an S3-compatible server, a local emulator, a VPC
/// endpoint by URL), where `bucket.host` names usually do not resolve.
pub fn client_from_sdk_config(sdk_config: &aws_config::SdkConfig) -> Client {
    let s3_endpoint = std::env::var(S3_ENDPOINT_VAR).ok();
    let mut builder = aws_sdk_s3::config::Builder::from(sdk_config);
    if has_endpoint_override(sdk_config.endpoint_url(), s3_endpoint.as_deref()) {
        tracing::debug!("S3 endpoint override configured: using path-style addressing");
        builder = builder.force_path_style(true);
    }
    Client::from_conf(builder.build())
}

/// Whether an endpoint override reaches the S3 client: the shared one (`AWS_ENDPOINT_URL`,
/// a profile's `endpoint_url`, or set in code) or the S3-specific variable.
fn has_endpoint_override(shared: Option<&str>, s3_variable: Option<&str>) -> bool {
    let set = |v: Option<&str>| v.is_some_and(|v| !v.trim().is_empty());
    set(shared) || set(s3_variable)
}

/// An SDK error as `Error::Failed`, with the full chain of causes.
fn sdk_failed<E, R>(operation: &str, resource: String, err: SdkError<E, R>) -> Error
where
    E: std::error::Error
        + aws_smithy_types::error::metadata::ProvideErrorMetadata
        + Send
        + Sync
        + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    crate::aws::sdk_error(operation, resource, err)
}

/// Whether the service refused a conditional write because the object exists.
fn is_precondition_failed<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    matches!(
        err.as_service_error().and_then(|e| e.code()),
        Some("PreconditionFailed")
    )
}

#[async_trait]
impl BackupStore for S3Store {
    fn describe(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    async fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>> {
        let full_key = self.checked_key(key)?;
        if self.head(&full_key, "create").await? {
            return Err(Error::failed(
                "create",
                self.resource(&full_key),
                EXISTS_MESSAGE,
            ));
        }
        Ok(Box::new(S3Writer {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            resource: self.resource(&full_key),
            key: full_key,
            encryption: self.encryption.clone(),
            part_size: self.part_size,
            buf: Vec::new(),
            parts: self.parts.clone(),
            upload: None,
            in_flight: JoinSet::new(),
            size: 0,
            closed: false,
        }))
    }

    async fn open(&self, key: &str) -> Result<ObjectReader> {
        let full_key = self.checked_key(key)?;
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&full_key)
            .send()
            .await
        {
            Ok(out) => Ok(Box::pin(out.body.into_async_read())),
            Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => Err(
                Error::failed("open", self.resource(&full_key), "not found (no such key)"),
            ),
            Err(err) => Err(sdk_failed("open", self.resource(&full_key), err)),
        }
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        let full_key = self.checked_key(key)?;
        self.head(&full_key, "stat").await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let root = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let wanted = format!("{root}{prefix}");
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .set_prefix((!wanted.is_empty()).then(|| wanted.clone()))
            .set_max_keys(self.page_size)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| sdk_failed("list", self.resource(&wanted), err))?;
            for object in page.contents() {
                let Some(key) = object.key().and_then(|k| k.strip_prefix(&root)) else {
                    continue;
                };
                // Zero-byte "folder" markers (as the S3 console creates) are not objects here.
                if key.is_empty() || key.ends_with('/') {
                    continue;
                }
                out.push(ObjectInfo {
                    key: key.to_string(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn modified(&self, key: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        let full_key = self.checked_key(key)?;
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&full_key)
            .send()
            .await
            .map_err(|err| sdk_failed("stat", self.resource(&full_key), err))?;
        Ok(head
            .last_modified()
            .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())))
    }

    async fn collect_abandoned_writes(
        &self,
        prefix: &str,
        older_than: std::time::Duration,
    ) -> Result<Vec<String>> {
        let full_prefix = self.full_key(prefix);
        let cutoff = chrono::Utc::now()
            - chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::MAX);
        let mut removed = Vec::new();
        let (mut key_marker, mut upload_marker) = (None::<String>, None::<String>);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(&full_prefix)
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(upload_marker.clone())
                .send()
                .await
                .map_err(|err| {
                    sdk_failed("list multipart uploads", self.resource(&full_prefix), err)
                })?;
            for upload in page.uploads() {
                let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) else {
                    continue;
                };
                let initiated = upload
                    .initiated()
                    .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos()));
                if initiated.is_none_or(|t| t > cutoff) {
                    continue;
                }
                self.client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(id)
                    .send()
                    .await
                    .map_err(|err| sdk_failed("abort multipart upload", self.resource(key), err))?;
                removed.push(format!("{} (multipart upload {id})", self.resource(key)));
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_string);
            upload_marker = page.next_upload_id_marker().map(str::to_string);
            if key_marker.is_none() && upload_marker.is_none() {
                break;
            }
        }
        Ok(removed)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let full_key = self.checked_key(key)?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(&full_key)
            .send()
            .await
            .map_err(|err| sdk_failed("delete", self.resource(&full_key), err))?;
        Ok(())
    }
}

/// A multipart upload in progress.
struct Upload {
    id: String,
    /// The parts uploaded so far (in the order they finished).
    parts: Vec<CompletedPart>,
    /// The number of the next part.
    next: i32,
}

struct S3Writer {
    client: Client,
    bucket: String,
    key: String,
    resource: String,
    encryption: Option<S3Encryption>,
    /// The size of the next part; grows as parts add up (see `PARTS_PER_SIZE_STEP`).
    part_size: usize,
    /// The part being filled; its capacity grows to the part size and no further.
    buf: Vec<u8>,
    parts: Arc<SharedParts>,
    upload: Option<Upload>,
    /// Parts uploading; dropped (the writer dropped), they are cancelled.
    in_flight: JoinSet<Result<CompletedPart>>,
    size: u64,
    /// Finished, aborted, or failed: nothing more may be written.
    closed: bool,
}

/// The server-side encryption headers for `encryption`.
fn sse_headers(
    encryption: Option<&S3Encryption>,
) -> (Option<ServerSideEncryption>, Option<String>) {
    match encryption {
        None => (None, None),
        Some(S3Encryption::SseS3) => (Some(ServerSideEncryption::Aes256), None),
        Some(S3Encryption::SseKms { key_id }) => {
            (Some(ServerSideEncryption::AwsKms), key_id.clone())
        }
    }
}

impl S3Writer {
    fn ensure_open(&self, operation: &str) -> Result<()> {
        if self.closed {
            return Err(Error::failed(operation, &self.resource, "writer is closed"));
        }
        Ok(())
    }

    /// Buffers `chunk`, uploading each part once it is full and more follows. The last part
    /// (which may be smaller than S3's minimum) stays buffered until `finish`.
    async fn buffer(&mut self, mut chunk: &[u8]) -> Result<()> {
        while !chunk.is_empty() {
            if self.buf.len() >= self.part_size {
                let part = Bytes::from(std::mem::take(&mut self.buf));
                self.upload_part(part).await?;
            }
            if self.buf.capacity() == 0
                && let Some(buffer) = self.parts.take()
            {
                self.buf = buffer;
            }
            let (now, later) = chunk.split_at((self.part_size - self.buf.len()).min(chunk.len()));
            let needed = self.buf.len() + now.len();
            if needed > self.buf.capacity() {
                // Doubling, as a vector grows, but never beyond one part.
                let capacity = needed.max(2 * self.buf.capacity()).min(self.part_size);
                self.buf.reserve_exact(capacity - self.buf.len());
            }
            self.buf.extend_from_slice(now);
            chunk = later;
        }
        Ok(())
    }

    async fn upload_part(&mut self, part: Bytes) -> Result<()> {
        if self.upload.is_none() {
            let (sse, kms_key) = sse_headers(self.encryption.as_ref());
            let out = self
                .client
                .create_multipart_upload()
                .bucket(&self.bucket)
                .key(&self.key)
                .checksum_algorithm(ChecksumAlgorithm::Crc32)
                .set_server_side_encryption(sse)
                .set_ssekms_key_id(kms_key)
                .send()
                .await
                .map_err(|err| sdk_failed("start upload", self.resource.clone(), err))?;
            let id = out.upload_id().unwrap_or_default().to_string();
            if id.is_empty() {
                return Err(Error::failed(
                    "start upload",
                    &self.resource,
                    "CreateMultipartUpload returned no upload id",
                ));
            }
            tracing::debug!(resource = %self.resource, upload_id = %id, "multipart upload started");
            self.upload = Some(Upload {
                id,
                parts: Vec::new(),
                next: 1,
            });
        }
        let permit = self.upload_permit().await?;
        let Some(upload) = self.upload.as_mut() else {
            return Err(Error::failed(
                "upload",
                &self.resource,
                "no upload in progress",
            ));
        };
        let number = upload.next;
        if number > MAX_PARTS {
            return Err(Error::failed(
                "upload",
                &self.resource,
                format!("the object needs more than {MAX_PARTS} parts"),
            ));
        }
        upload.next += 1;
        let len = part.len();
        let request = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&upload.id)
            .part_number(number)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .content_length(len as i64)
            .body(ByteStream::from(part.clone()));
        let resource = format!("{} (part {number})", self.resource);
        let parts = self.parts.clone();
        self.in_flight.spawn(async move {
            let sent = request.send().await;
            drop(permit);
            parts.give(part);
            let out = sent.map_err(|err| sdk_failed("upload", resource, err))?;
            Ok(CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag().map(str::to_string))
                .set_checksum_crc32(out.checksum_crc32().map(str::to_string))
                .build())
        });
        if number % PARTS_PER_SIZE_STEP == 0 {
            self.part_size = (self.part_size * 2).min(MAX_PART_SIZE);
        }
        Ok(())
    }

    /// Waits for the store to have room for one more part in flight; meanwhile this
    /// writer's own parts that finish are collected, so that a failed one stops it at once.
    async fn upload_permit(&mut self) -> Result<OwnedSemaphorePermit> {
        loop {
            tokio::select! {
                permit = self.parts.uploads.clone().acquire_owned() => {
                    return permit.map_err(|e| Error::failed("upload", &self.resource, e));
                }
                Some(joined) = self.in_flight.join_next() => self.collect(joined)?,
            }
        }
    }

    /// Waits for the next part in flight to finish; its error is the writer's.
    async fn join_part(&mut self) -> Result<()> {
        match self.in_flight.join_next().await {
            None => Ok(()),
            Some(joined) => self.collect(joined),
        }
    }

    fn collect(
        &mut self,
        joined: std::result::Result<Result<CompletedPart>, tokio::task::JoinError>,
    ) -> Result<()> {
        let part = match joined {
            Ok(part) => part?,
            Err(e) => return Err(Error::failed("upload", &self.resource, e)),
        };
        if let Some(upload) = self.upload.as_mut() {
            upload.parts.push(part);
        }
        Ok(())
    }

    /// Aborts the multipart upload, if one was started.
    async fn abort_upload(&mut self) -> Result<()> {
        self.closed = true;
        self.buf = Vec::new();
        self.in_flight.abort_all();
        while self.in_flight.join_next().await.is_some() {}
        let Some(upload) = self.upload.take() else {
            return Ok(());
        };
        abort_multipart(&self.client, &self.bucket, &self.key, &upload.id)
            .await
            .map_err(|message| Error::failed("abort upload", &self.resource, message))
    }

    /// Passes `result` through; an error first aborts the upload (best effort).
    async fn or_abort<T>(&mut self, result: Result<T>) -> Result<T> {
        match result {
            Ok(value) => Ok(value),
            Err(err) => {
                if let Err(abort_err) = self.abort_upload().await {
                    tracing::warn!("{abort_err}");
                }
                Err(err)
            }
        }
    }

    async fn put_whole(&mut self) -> Result<u64> {
        let body = Bytes::from(std::mem::take(&mut self.buf));
        let (sse, kms_key) = sse_headers(self.encryption.as_ref());
        self.closed = true;
        let sent = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .if_none_match("*")
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms_key)
            .content_length(body.len() as i64)
            .body(ByteStream::from(body.clone()))
            .send()
            .await;
        self.parts.give(body);
        match sent {
            Ok(_) => Ok(self.size),
            Err(err) if is_precondition_failed(&err) => {
                Err(Error::failed("finish", &self.resource, EXISTS_MESSAGE))
            }
            Err(err) => Err(sdk_failed("finish", self.resource.clone(), err)),
        }
    }

    async fn complete(&mut self) -> Result<u64> {
        let last = Bytes::from(std::mem::take(&mut self.buf));
        if !last.is_empty() {
            self.upload_part(last).await?;
        }
        while !self.in_flight.is_empty() {
            self.join_part().await?;
        }
        let Some(upload) = self.upload.as_mut() else {
            return Err(Error::failed(
                "finish",
                &self.resource,
                "no upload in progress",
            ));
        };
        upload.parts.sort_by_key(|p| p.part_number());
        let parts = CompletedMultipartUpload::builder()
            .set_parts(Some(upload.parts.clone()))
            .build();
        let result = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&upload.id)
            .if_none_match("*")
            .multipart_upload(parts)
            .send()
            .await;
        match result {
            Ok(_) => {
                self.upload = None;
                self.closed = true;
                Ok(self.size)
            }
            Err(err) if is_precondition_failed(&err) => {
                Err(Error::failed("finish", &self.resource, EXISTS_MESSAGE))
            }
            Err(err) => Err(sdk_failed("finish", self.resource.clone(), err)),
        }
    }
}

/// Aborts a multipart upload; one that is gone already (aborted, or completed by a racing
/// writer) counts as aborted. The error is the SDK's, with its causes.
async fn abort_multipart(
    client: &Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> std::result::Result<(), String> {
    match client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_no_such_upload()) =>
        {
            Ok(())
        }
        Err(err) => Err(DisplayErrorContext(err).to_string()),
    }
}

#[async_trait]
impl ObjectWriter for S3Writer {
    async fn write(&mut self, chunk: &[u8]) -> Result<()> {
        self.ensure_open("write")?;
        self.size += chunk.len() as u64;
        let result = self.buffer(chunk).await;
        self.or_abort(result).await
    }

    async fn finish(mut self: Box<Self>) -> Result<u64> {
        self.ensure_open("finish")?;
        if self.upload.is_none() {
            return self.put_whole().await;
        }
        let result = self.complete().await;
        self.or_abort(result).await
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        self.abort_upload().await
    }
}

impl Drop for S3Writer {
    /// A writer dropped without `finish` or `abort` (a cancelled task, an early return)
    /// aborts its multipart upload in the background when a runtime is there to run it.
    fn drop(&mut self) {
        self.in_flight.abort_all();
        let Some(upload) = self.upload.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                "multipart upload {} of {} left in progress (no async runtime to abort it)",
                upload.id,
                self.resource
            );
            return;
        };
        let client = self.client.clone();
        let bucket = self.bucket.clone();
        let key = self.key.clone();
        let resource = self.resource.clone();
        runtime.spawn(async move {
            if let Err(err) = abort_multipart(&client, &bucket, &key, &upload.id).await {
                tracing::warn!(
                    "could not abort multipart upload {} of {resource}: {err}",
                    upload.id
                );
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_configured_endpoint_is_an_override() {
        assert!(!has_endpoint_override(None, None));
        assert!(!has_endpoint_override(Some(""), Some("  ")));
        assert!(has_endpoint_override(Some("http://127.0.0.1:5000"), None));
        assert!(has_endpoint_override(None, Some("http://127.0.0.1:5000")));
    }

    #[test]
    fn sse_headers_follow_the_setting() {
        assert_eq!(sse_headers(None), (None, None));
        assert_eq!(
            sse_headers(Some(&S3Encryption::SseS3)),
            (Some(ServerSideEncryption::Aes256), None)
        );
        assert_eq!(
            sse_headers(Some(&S3Encryption::SseKms {
                key_id: Some("alias/dr".into())
            })),
            (Some(ServerSideEncryption::AwsKms), Some("alias/dr".into()))
        );
        assert_eq!(
            sse_headers(Some(&S3Encryption::SseKms { key_id: None })),
            (Some(ServerSideEncryption::AwsKms), None)
        );
    }
}
