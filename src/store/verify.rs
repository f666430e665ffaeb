//! Re-reading a backup: every object's size, SHA-256 and row count against its manifest.

use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::io::BufReader;

use super::manifest::{Manifest, TableEntry, object_key};
use super::stream::{CsvTally, Digested, TapReader, ZstdReader};
use super::{BackupStore, ObjectReader};
use crate::error::{Error, Result};

/// The CSV of a table's object, decompressed as it streams, with the tap that sees the stored
/// bytes (for [`check_stored`] once the stream is consumed).
pub struct TableObject {
    pub csv: ZstdReader<BufReader<TapReader<ObjectReader, Digested>>>,
    pub stored: Arc<Mutex<Digested>>,
    /// `store/key`, for messages.
    pub resource: String,
}

pub async fn open_table_object(
    store: &dyn BackupStore,
    manifest: &Manifest,
    entry: &TableEntry,
) -> Result<TableObject> {
    let key = object_key(&manifest.backup_id, &entry.object);
    let reader = store.open(&key).await?;
    let (tapped, stored) = TapReader::new(reader);
    let resource = format!("{}/{key}", store.describe());
    let csv = ZstdReader::new(BufReader::with_capacity(1 << 20, tapped))
        .map_err(|e| Error::failed("decompress", &resource, e))?;
    Ok(TableObject {
        csv,
        stored,
        resource,
    })
}

/// Compares what was read of the stored object with the manifest's size and SHA-256.
pub fn check_stored(object: &TableObject, entry: &TableEntry, operation: &str) -> Result<u64> {
    check_digest(&object.stored, &object.resource, entry, operation)
}

/// [`check_stored`] of the bytes `stored` saw of the object `resource`.
pub fn check_digest(
    stored: &Mutex<Digested>,
    resource: &str,
    entry: &TableEntry,
    operation: &str,
) -> Result<u64> {
    let (bytes, sha) = stored
        .lock()
        .map(|d| (d.bytes, d.hex()))
        .unwrap_or_default();
    if sha != entry.sha256 || bytes != entry.stored_bytes {
        return Err(Error::failed(
            operation,
            resource,
            format!(
                "checksum mismatch: {bytes} bytes with SHA-256 {sha}, the manifest says {} bytes with SHA-256 {}",
                entry.stored_bytes, entry.sha256
            ),
        ));
    }
    Ok(bytes)
}

/// Reads what the zstd reader of `object` left of the stored bytes (after the end of its
/// frames, or after a failure), so that [`check_stored`] sees the whole object.
/// False when the store could not give the rest (the object is not known to be damaged).
pub async fn read_rest(object: &mut TableObject) -> bool {
    tokio::io::copy(object.csv.get_mut(), &mut tokio::io::sink())
        .await
        .is_ok()
}

#[derive(Debug, Clone, Serialize)]
pub struct ObjectCheck {
    pub table: String,
    pub object: String,
    pub rows: u64,
    pub stored_bytes: u64,
}

/// Checks every object of the backup; the first mismatch is an error naming the object.
/// Objects are checked in parallel, one per core, biggest first (decompressing and hashing
/// is CPU work); the result is in manifest order.
pub async fn verify_backup(
    store: Arc<dyn BackupStore>,
    manifest: &Manifest,
) -> Result<Vec<ObjectCheck>> {
    verify_tables(store, manifest, |_| true).await
}

/// [`verify_backup`] of the objects of the tables `chosen` selects.
pub async fn verify_tables(
    store: Arc<dyn BackupStore>,
    manifest: &Manifest,
    chosen: impl Fn(&TableEntry) -> bool,
) -> Result<Vec<ObjectCheck>> {
    use futures::StreamExt;
    let shared = Arc::new(manifest.clone());
    let mut order: Vec<usize> = (0..manifest.tables.len())
        .filter(|&i| chosen(&manifest.tables[i]))
        .collect();
    order.sort_by_key(|&i| std::cmp::Reverse(manifest.tables[i].stored_bytes));
    let parallel = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let mut results: Vec<(usize, ObjectCheck)> = futures::stream::iter(order)
        .map(|i| {
            let store = store.clone();
            let manifest = shared.clone();
            async move {
                let task = tokio::spawn(async move {
                    verify_object(store.as_ref(), &manifest, &manifest.tables[i]).await
                });
                match task.await {
                    Ok(result) => result.map(|check| (i, check)),
                    Err(e) => Err(Error::failed("verify", "a backup object", e)),
                }
            }
        })
        .buffer_unordered(parallel)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    results.sort_by_key(|(i, _)| *i);
    Ok(results.into_iter().map(|(_, check)| check).collect())
}

async fn verify_object(
    store: &dyn BackupStore,
    manifest: &Manifest,
    entry: &TableEntry,
) -> Result<ObjectCheck> {
    let mut object = open_table_object(store, manifest, entry).await?;
    // The caller races the whole check against the run's cancellation.
    crate::failpoint::reach_raced("verify.object_opened").await?;
    let (mut counting, tally) = TapReader::<_, CsvTally>::new(&mut object.csv);
    let decoded = tokio::io::copy(&mut counting, &mut tokio::io::sink()).await;
    let stored_bytes = check_stored(&object, entry, "verify")?;
    decoded.map_err(|e| {
        Error::failed(
            "verify",
            &object.resource,
            format!("cannot decompress: {e}"),
        )
    })?;
    let (rows, csv_bytes) = tally
        .lock()
        .map(|t| (t.counter.data_rows(), t.bytes))
        .unwrap_or_default();
    if rows != entry.rows || csv_bytes != entry.csv_bytes {
        return Err(Error::failed(
            "verify",
            &object.resource,
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
        stored_bytes,
    })
}
