//! Backup side: every table from ONE snapshot, streamed over parallel connections as
//! zstd-compressed CSV into the store.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, instrument};

use super::stream::CsvRecordCounter;
use super::{PgConnector, db_error};
use crate::airflow::catalog::quote_ident;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::store::manifest::{TableEntry, object_key};
use crate::store::{BackupStore, ObjectWriter};

/// zstd level: fast enough to keep up with COPY on one core.
const ZSTD_LEVEL: i32 = 3;

/// One table to export.
#[derive(Debug, Clone)]
pub struct TableExport {
    pub name: String,
    pub columns: Vec<String>,
    pub filter: Option<String>,
    /// Planner's row estimate, to start big tables first.
    pub estimate: f64,
}

impl TableExport {
    pub fn object_name(&self) -> String {
        format!("{}.csv.zst", self.name)
    }

    fn copy_sql(&self) -> String {
        let cols = self
            .columns
            .iter()
            .map(|c| format!("t.{}", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(", ");
        let filter = self
            .filter
            .as_deref()
            .map(|f| format!(" WHERE {f}"))
            .unwrap_or_default();
        format!(
            "COPY (SELECT {cols} FROM {} AS t{filter}) TO STDOUT WITH (FORMAT csv, HEADER true)",
            quote_ident(&self.name)
        )
    }
}

/// Starts a read-only repeatable-read transaction and exports its snapshot.
pub async fn begin_snapshot(conn: &mut PgConnection, db: &str) -> Result<String> {
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *conn)
        .await
        .map_err(|e| db_error("begin snapshot", db, e))?;
    // This session only keeps the snapshot alive while the workers export; it sits idle in
    // its transaction by design, which the session's idle timeout must not end.
    sqlx::query("SET LOCAL idle_in_transaction_session_timeout = 0")
        .execute(&mut *conn)
        .await
        .map_err(|e| db_error("begin snapshot", db, e))?;
    sqlx::query_scalar("SELECT pg_export_snapshot()")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| db_error("export snapshot", db, e))
}

/// The planner's row estimate of a table (0 when unknown).
pub async fn row_estimate(conn: &mut PgConnection, table: &str) -> Result<f64> {
    let estimate: Option<f32> =
        sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE oid = to_regclass($1)")
            .bind(quote_ident(table))
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| db_error("inspect", table, e))?;
    Ok(f64::from(estimate.unwrap_or(0.0).max(0.0)))
}

/// Streams `tables` into `backups/<backup_id>/` over `jobs` connections that all share
/// `snapshot`. Returns one manifest entry per table, in the order of `tables`.
///
/// Cancelling `cancel` stops every worker at its next chunk with "interrupted"; a worker
/// that fails stops the others the same way, and its error is the one returned.
#[allow(clippy::too_many_arguments)]
pub async fn export_tables(
    db: &PgConnector,
    snapshot: &str,
    jobs: usize,
    tables: Vec<TableExport>,
    store: Arc<dyn BackupStore>,
    backup_id: &str,
    progress: Arc<dyn Progress>,
    cancel: &CancellationToken,
) -> Result<Vec<TableEntry>> {
    let stop = cancel.child_token();
    let total = tables.len();
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let order: Vec<String> = tables.iter().map(|t| t.name.clone()).collect();
    let mut queue: Vec<TableExport> = tables;
    queue.sort_by(|a, b| b.estimate.total_cmp(&a.estimate));
    let queue = Arc::new(Mutex::new(VecDeque::from(queue)));
    let jobs = jobs.max(1).min(order.len().max(1));
    let mut workers = Vec::new();
    for worker in 0..jobs {
        let queue = queue.clone();
        let store = store.clone();
        let db = db.clone();
        let stop = stop.clone();
        let snapshot = snapshot.to_string();
        let backup_id = backup_id.to_string();
        let progress = progress.clone();
        let started = started.clone();
        workers.push(tokio::spawn(async move {
            let read_timeout = db.timeouts().read;
            let connector = db;
            let mut conn = connector.connect().await?;
            let db = connector.describe().to_string();
            let pid = super::backend_pid(&mut conn, &db).await?;
            sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut conn)
                .await
                .map_err(|e| db_error("begin", &db, e))?;
            sqlx::query(&format!(
                "SET TRANSACTION SNAPSHOT {}",
                crate::airflow::catalog::quote_literal(&snapshot)
            ))
            .execute(&mut conn)
            .await
            .map_err(|e| db_error("join snapshot", &db, e))?;
            debug!(worker, "joined snapshot");
            let mut done = Vec::new();
            loop {
                let next = queue.lock().ok().and_then(|mut q| q.pop_front());
                let Some(table) = next else { break };
                let index = started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                progress.start(&table.name, index, total);
                let entry = match export_table(
                    &mut conn,
                    &table,
                    store.as_ref(),
                    &backup_id,
                    progress.as_ref(),
                    Limits {
                        stop: &stop,
                        read_timeout,
                    },
                )
                .await
                {
                    Ok(entry) => entry,
                    Err(e) => {
                        stop.cancel();
                        drop(conn);
                        super::terminate_backend(&connector, pid).await;
                        return Err(e);
                    }
                };
                progress.finish(&table.name, entry.rows);
                done.push(entry);
                if index == 0
                    && let Err(e) = crate::failpoint::reach("backup.table_written", &stop).await
                {
                    drop(conn);
                    super::terminate_backend(&connector, pid).await;
                    return Err(e);
                }
            }
            let _ = sqlx::query("COMMIT").execute(&mut conn).await;
            Ok::<_, Error>(done)
        }));
    }
    let mut entries = Vec::new();
    let mut first_error = None;
    for worker in workers {
        match worker.await {
            Ok(Ok(done)) => entries.extend(done),
            // The error of the worker that failed first, not the "interrupted" of the
            // workers it stopped (unless the run itself was interrupted).
            Ok(Err(e)) if matches!(e, Error::Interrupted) && !cancel.is_cancelled() => {}
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
                // Stop the other workers from starting new tables.
                if let Ok(mut q) = queue.lock() {
                    q.clear();
                }
            }
            Err(join) => {
                first_error.get_or_insert(Error::failed("export", "worker", join));
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    if stop.is_cancelled() {
        return Err(Error::Interrupted);
    }
    entries.sort_by_key(|e| order.iter().position(|n| *n == e.name));
    Ok(entries)
}

#[instrument(skip_all, fields(table = %table.name))]
async fn export_table(
    conn: &mut PgConnection,
    table: &TableExport,
    store: &dyn BackupStore,
    backup_id: &str,
    progress: &dyn Progress,
    limits: Limits<'_>,
) -> Result<TableEntry> {
    let object = table.object_name();
    let key = object_key(backup_id, &object);
    let mut writer = store.create(&key).await?;
    // Stopped, the COPY is abandoned wherever it waits (a table lock included); the caller
    // ends the session's server side.
    let streamed = tokio::select! {
        streamed = stream_table(conn, table, writer.as_mut(), progress, limits) => streamed,
        () = limits.stop.cancelled() => Err(Error::Interrupted),
    };
    match streamed {
        Ok((rows, csv_bytes, sha256)) => {
            let stored_bytes = writer.finish().await?;
            info!(rows, csv_bytes, stored_bytes, "exported");
            Ok(TableEntry {
                name: table.name.clone(),
                object,
                columns: table.columns.clone(),
                filter: table.filter.clone(),
                rows,
                csv_bytes,
                stored_bytes,
                sha256,
            })
        }
        Err(e) => {
            let _ = writer.abort().await;
            Err(e)
        }
    }
}

/// When a worker stops: the run's (or a failed sibling's) cancellation, or a server that
/// sends nothing for `read_timeout`.
#[derive(Clone, Copy)]
struct Limits<'a> {
    stop: &'a CancellationToken,
    read_timeout: Duration,
}

/// COPY → count → zstd → hash → writer. Returns (rows, csv bytes, sha256 of stored bytes).
async fn stream_table(
    conn: &mut PgConnection,
    table: &TableExport,
    writer: &mut dyn ObjectWriter,
    progress: &dyn Progress,
    limits: Limits<'_>,
) -> Result<(u64, u64, String)> {
    let compress_err = |e: std::io::Error| Error::failed("compress", &table.name, e);
    let mut counter = CsvRecordCounter::default();
    let mut hasher = Sha256::new();
    let mut csv_bytes = 0u64;
    let mut encoder = zstd::stream::Encoder::new(Vec::with_capacity(1 << 20), ZSTD_LEVEL)
        .map_err(compress_err)?;
    let mut stream = conn
        .copy_out_raw(&table.copy_sql())
        .await
        .map_err(|e| db_error("export", &table.name, e))?;
    loop {
        let chunk = match tokio::time::timeout(limits.read_timeout, stream.next()).await {
            Ok(Some(chunk)) => chunk.map_err(|e| db_error("export", &table.name, e))?,
            Ok(None) => break,
            Err(_) => {
                return Err(Error::transient(
                    "export",
                    &table.name,
                    format!(
                        "the server sent nothing for {} s (MWAA_DR_DB_IDLE_TIMEOUT_SECS)",
                        limits.read_timeout.as_secs()
                    ),
                ));
            }
        };
        counter.feed(&chunk);
        csv_bytes += chunk.len() as u64;
        progress.advance(&table.name, chunk.len() as u64);
        encoder.write_all(&chunk).map_err(compress_err)?;
        if encoder.get_ref().len() >= 1 << 20 {
            let out = std::mem::take(encoder.get_mut());
            hasher.update(&out);
            writer.write(&out).await?;
        }
    }
    drop(stream);
    let out = encoder.finish().map_err(compress_err)?;
    hasher.update(&out);
    writer.write(&out).await?;
    Ok((
        counter.data_rows(),
        csv_bytes,
        hex::encode(hasher.finalize()),
    ))
}
