//! Re-reading a backup: every object's size, SHA-256 and row count against its manifest.

use async_compression::tokio::bufread::ZstdDecoder;
use serde::Serialize;
use tokio::io::BufReader;

use super::BackupStore;
use super::manifest::{Manifest, TableEntry, object_key};
use crate::db::stream::{CountingReader, HashingReader};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize)]
pub struct ObjectCheck {
    pub table: String,
    pub object: String,
    pub rows: u64,
    pub stored_bytes: u64,
}

/// Checks every object of the backup; the first mismatch is an error naming the object.
pub async fn verify_backup(
    store: &dyn BackupStore,
    manifest: &Manifest,
) -> Result<Vec<ObjectCheck>> {
    let mut checks = Vec::new();
    for entry in &manifest.tables {
        checks.push(verify_object(store, manifest, entry).await?);
    }
    Ok(checks)
}

async fn verify_object(
    store: &dyn BackupStore,
    manifest: &Manifest,
    entry: &TableEntry,
) -> Result<ObjectCheck> {
    let key = object_key(&manifest.backup_id, &entry.object);
    let resource = format!("{}/{key}", store.describe());
    let reader = store.open(&key).await?;
    let (hashing, digest) = HashingReader::new(reader);
    let decoder = ZstdDecoder::new(BufReader::with_capacity(1 << 20, hashing));
    let (mut counting, counts) = CountingReader::new(decoder);
    let decoded = tokio::io::copy(&mut counting, &mut tokio::io::sink()).await;
    let (bytes, sha) = digest
        .lock()
        .map(|d| (d.bytes, d.hex()))
        .unwrap_or_default();
    if sha != entry.sha256 || bytes != entry.stored_bytes {
        return Err(Error::failed(
            "verify",
            &resource,
            format!(
                "checksum mismatch: {bytes} bytes with SHA-256 {sha}, the manifest says {} bytes with SHA-256 {}",
                entry.stored_bytes, entry.sha256
            ),
        ));
    }
    decoded.map_err(|e| Error::failed("verify", &resource, format!("cannot decompress: {e}")))?;
    let (rows, csv_bytes) = counts
        .lock()
        .map(|c| (c.0.data_rows(), c.1))
        .unwrap_or_default();
    if rows != entry.rows || csv_bytes != entry.csv_bytes {
        return Err(Error::failed(
            "verify",
            &resource,
            format!(
                "{rows} rows in {csv_bytes} CSV bytes, the manifest says {} rows in {}",
                entry.rows, entry.csv_bytes
            ),
        ));
    }
    Ok(ObjectCheck {
        table: entry.name.clone(),
        object: entry.object.clone(),
        rows,
        stored_bytes: bytes,
    })
}
