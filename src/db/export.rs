//! Backup side: every table from ONE snapshot, streamed over parallel connections as
//! zstd-compressed CSV into the store.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, instrument};

use super::{PgConnector, db_error};
use crate::airflow::catalog::quote_ident;
use crate::airflow::fernet::{EncryptedColumn, Rekey, encrypted_columns};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::store::manifest::{TableEntry, object_key};
use crate::store::pipeline::{self, Bounds, Rewrite, Written};
use crate::store::{BackupStore, ObjectWriter};

/// Bytes of a table between two progress reports.
const PROGRESS_STEP: u64 = 256 * 1024;

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
    rekey: Option<Rekey>,
    cancel: &CancellationToken,
) -> Result<Vec<TableEntry>> {
    let order: Vec<String> = tables.iter().map(|t| t.name.clone()).collect();
    let jobs = jobs.max(1).min(order.len().max(1));
    let mut queue: Vec<TableExport> = tables;
    queue.sort_by(|a, b| b.estimate.total_cmp(&a.estimate));
    let shared = Arc::new(ExportRun {
        db: db.clone(),
        snapshot: snapshot.to_string(),
        backup_id: backup_id.to_string(),
        store,
        progress,
        rekey,
        total: order.len(),
        queue: Mutex::new(VecDeque::from(queue)),
        started: std::sync::atomic::AtomicUsize::new(0),
        written: std::sync::atomic::AtomicUsize::new(0),
        stop: cancel.child_token(),
    });
    let workers = (0..jobs)
        .map(|worker| tokio::spawn(export_worker(shared.clone(), worker)))
        .collect();
    let mut entries = join_workers(workers, &shared, cancel).await?;
    entries.sort_by_key(|e| order.iter().position(|n| *n == e.name));
    Ok(entries)
}

/// What the export workers share: the snapshot they join, the queue of tables (largest
/// first) and the token that stops them all when one fails.
struct ExportRun {
    db: PgConnector,
    snapshot: String,
    backup_id: String,
    store: Arc<dyn BackupStore>,
    progress: Arc<dyn Progress>,
    rekey: Option<Rekey>,
    total: usize,
    queue: Mutex<VecDeque<TableExport>>,
    started: std::sync::atomic::AtomicUsize,
    /// Tables written so far, by all workers.
    written: std::sync::atomic::AtomicUsize,
    stop: CancellationToken,
}

impl ExportRun {
    fn next_table(&self) -> Option<TableExport> {
        self.queue.lock().ok().and_then(|mut q| q.pop_front())
    }

    /// Stops every worker: no new table starts, and the tables in progress end at once.
    fn fail(&self) {
        if let Ok(mut q) = self.queue.lock() {
            q.clear();
        }
        self.stop.cancel();
    }
}

/// One connection in the shared snapshot, exporting tables from the queue until it is empty.
/// On an error it stops the others and ends its server-side statement before returning.
async fn export_worker(run: Arc<ExportRun>, worker: usize) -> Result<Vec<TableEntry>> {
    let connector = &run.db;
    let read_timeout = connector.timeouts().read;
    let mut conn = connector.connect().await?;
    let db = connector.describe().to_string();
    let pid = super::backend_pid(&mut conn, &db).await?;
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut conn)
        .await
        .map_err(|e| db_error("begin", &db, e))?;
    sqlx::query(&format!(
        "SET TRANSACTION SNAPSHOT {}",
        crate::airflow::catalog::quote_literal(&run.snapshot)
    ))
    .execute(&mut conn)
    .await
    .map_err(|e| db_error("join snapshot", &db, e))?;
    debug!(worker, "joined snapshot");
    let mut done = Vec::new();
    while let Some(table) = run.next_table() {
        let index = run
            .started
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        run.progress.start(&table.name, index, run.total);
        let limits = Limits {
            stop: &run.stop,
            read_timeout,
        };
        let written = export_table(
            &mut conn,
            &table,
            run.store.as_ref(),
            &run.backup_id,
            run.progress.as_ref(),
            limits,
            run.rekey.as_ref(),
        )
        .await;
        let entry = match written {
            Ok(entry) => entry,
            Err(e) => {
                run.fail();
                drop(conn);
                super::terminate_backend(connector, pid).await;
                return Err(e);
            }
        };
        run.progress.finish(&table.name, entry.rows);
        done.push(entry);
        let first_written = run
            .written
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            == 0;
        if first_written
            && let Err(e) = crate::failpoint::reach("backup.table_written", &run.stop).await
        {
            if !matches!(e, Error::Interrupted) {
                run.fail();
            }
            drop(conn);
            super::terminate_backend(connector, pid).await;
            return Err(e);
        }
    }
    let _ = sqlx::query("COMMIT").execute(&mut conn).await;
    Ok(done)
}

/// Waits for every worker, as each ends, and returns the error of the one that failed first,
/// not the "interrupted" of the workers it stopped (unless the run itself was interrupted).
/// The first failure stops the others at once.
async fn join_workers(
    workers: Vec<tokio::task::JoinHandle<Result<Vec<TableEntry>>>>,
    run: &ExportRun,
    cancel: &CancellationToken,
) -> Result<Vec<TableEntry>> {
    let mut pending: futures::stream::FuturesUnordered<_> = workers.into_iter().collect();
    let mut entries = Vec::new();
    let mut first_error = None;
    while let Some(joined) = pending.next().await {
        match joined {
            Ok(Ok(done)) => entries.extend(done),
            Ok(Err(Error::Interrupted)) if !cancel.is_cancelled() => {}
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
                run.fail();
            }
            Err(join) => {
                first_error.get_or_insert(Error::failed("export", "worker", join));
                run.fail();
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    if run.stop.is_cancelled() {
        return Err(Error::Interrupted);
    }
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
    rekey: Option<&Rekey>,
) -> Result<TableEntry> {
    let object = table.object_name();
    let key = object_key(backup_id, &object);
    let mut writer = store.create(&key).await?;
    // Stopped, the COPY is abandoned wherever it waits (a table lock included); the caller
    // ends the session's server side.
    let streamed = tokio::select! {
        streamed = stream_table(conn, table, writer.as_mut(), progress, limits, rekey) => streamed,
        () = limits.stop.cancelled() => Err(Error::Interrupted),
    };
    match streamed {
        Ok(written) => {
            let stored_bytes = writer.finish().await?;
            let Written {
                rows,
                csv_bytes,
                sha256,
                ..
            } = written;
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

/// COPY on this task; rewrite, count, zstd and hash on a blocking thread; the writer on this
/// task again, overlapping the COPY (see [`crate::store::pipeline`]).
async fn stream_table(
    conn: &mut PgConnection,
    table: &TableExport,
    writer: &mut dyn ObjectWriter,
    progress: &dyn Progress,
    limits: Limits<'_>,
    rekey: Option<&Rekey>,
) -> Result<Written> {
    let rewrite = rekey
        .and_then(|rekey| SecretRewriter::new(table, rekey))
        .map(|r| Box::new(r) as Box<dyn Rewrite>);
    let (mut input, output) = pipeline::start(&table.object_name(), rewrite, Bounds::default());
    let read = async move {
        let mut stream = conn
            .copy_out_raw(&table.copy_sql())
            .await
            .map_err(|e| db_error("export", &table.name, e))?;
        let mut unreported = 0u64;
        loop {
            // COPY sends a message per row, most of them buffered already: the idle timer
            // is armed only when the next one has yet to arrive.
            let next = match stream.next().now_or_never() {
                Some(next) => next,
                None => tokio::time::timeout(limits.read_timeout, stream.next())
                    .await
                    .map_err(|_| {
                        Error::transient(
                            "export",
                            &table.name,
                            format!(
                                "the server sent nothing for {} s (MWAA_DR_DB_IDLE_TIMEOUT_SECS)",
                                limits.read_timeout.as_secs()
                            ),
                        )
                    })?,
            };
            let Some(chunk) = next else {
                break;
            };
            let chunk = chunk.map_err(|e| db_error("export", &table.name, e))?;
            // Progress is told per batch, not per row.
            unreported += chunk.len() as u64;
            if unreported >= PROGRESS_STEP {
                progress.advance(&table.name, std::mem::take(&mut unreported));
            }
            input.push(&chunk).await;
        }
        progress.advance(&table.name, unreported);
        drop(stream);
        input.finish().await;
        Ok(())
    };
    let ((), written) = tokio::try_join!(read, output.write_to(writer))?;
    Ok(written)
}

/// One encrypted column of a table, by its position in the exported CSV.
struct SecretColumn {
    spec: &'static EncryptedColumn,
    index: usize,
    flag: Option<usize>,
}

/// Re-encrypts a table's Fernet columns while its CSV streams by, one whole record at a
/// time (a record's tail waits for the next chunk), so no table is held in memory. Values
/// are decided as the restore decides them: under their flag when the table has one, and
/// for trigger kwargs only a Fernet token (plain JSON stays).
struct SecretRewriter {
    rekey: Rekey,
    table: String,
    columns: Vec<SecretColumn>,
    key: Option<usize>,
    pending: Vec<u8>,
    /// Where the scan of `pending` for a record's end resumes, and whether it is in quotes.
    scanned: usize,
    quoted: bool,
    header_seen: bool,
}

impl SecretRewriter {
    /// `None` when the table has no encrypted column in the export.
    fn new(table: &TableExport, rekey: &Rekey) -> Option<Self> {
        let position = |name: &str| table.columns.iter().position(|c| c == name);
        let columns: Vec<SecretColumn> = encrypted_columns(&table.name)
            .filter_map(|spec| {
                Some(SecretColumn {
                    spec,
                    index: position(spec.column)?,
                    flag: match spec.flag {
                        Some(flag) => Some(position(flag)?),
                        None => None,
                    },
                })
            })
            .collect();
        let key = columns.first().and_then(|c| position(c.spec.key));
        (!columns.is_empty()).then(|| SecretRewriter {
            rekey: rekey.clone(),
            table: table.name.clone(),
            columns,
            key,
            pending: Vec::new(),
            scanned: 0,
            quoted: false,
            header_seen: false,
        })
    }

    /// The complete records of what has arrived, rewritten.
    fn rewrite(&mut self, chunk: &[u8]) -> Result<Vec<u8>> {
        self.pending.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(self.pending.len());
        let mut start = 0;
        let mut i = self.scanned;
        while i < self.pending.len() {
            match self.pending[i] {
                b'"' => self.quoted = !self.quoted,
                b'\n' if !self.quoted => {
                    let record = self.pending[start..i].to_vec();
                    self.record(&record, &mut out)?;
                    out.push(b'\n');
                    start = i + 1;
                }
                _ => {}
            }
            i += 1;
        }
        self.pending.drain(..start);
        self.scanned = self.pending.len();
        Ok(out)
    }

    /// A last record without its newline.
    fn last_record(&mut self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        if !self.pending.is_empty() {
            let record = std::mem::take(&mut self.pending);
            self.record(&record, &mut out)?;
        }
        Ok(out)
    }

    fn record(&mut self, record: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if !self.header_seen {
            self.header_seen = true;
            out.extend_from_slice(record);
            return Ok(());
        }
        let mut fields = split_fields(record);
        for column in &self.columns {
            let (Some(value), flag) = (
                fields.get(column.index).cloned().flatten(),
                column.flag.map(|f| fields.get(f).cloned().flatten()),
            ) else {
                continue;
            };
            let encrypted = match flag {
                Some(flag) => flag.as_deref() == Some("t"),
                None => !column.spec.json_is_plain || value.starts_with("gAAAAA"),
            };
            if !encrypted || value.is_empty() {
                continue;
            }
            let reencrypted = self.rekey.reencrypt(&value).map_err(|e| {
                let row = self
                    .key
                    .and_then(|k| fields.get(k).cloned().flatten())
                    .unwrap_or_default();
                Error::failed(
                    "re-encrypt",
                    format!("{} {}={row}", self.table, column.spec.key),
                    format!(
                        "{} cannot be decrypted with the source Fernet keys (PRIMARY_FERNET_KEY, else AIRFLOW__CORE__FERNET_KEY): {e}; no backup was made (add the key it was encrypted with to the source's key list)",
                        column.spec.column
                    ),
                )
            })?;
            if let Some(field) = fields.get_mut(column.index) {
                *field = Some(reencrypted);
            }
        }
        for (n, field) in fields.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            if let Some(value) = field {
                write_field(value, out);
            }
        }
        Ok(())
    }
}

impl Rewrite for SecretRewriter {
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<u8>> {
        self.rewrite(chunk)
    }

    fn finish(&mut self) -> Result<Vec<u8>> {
        self.last_record()
    }
}

/// The fields of one CSV record as PostgreSQL's COPY writes it: `None` for NULL (an
/// unquoted empty field), quotes removed.
fn split_fields(record: &[u8]) -> Vec<Option<String>> {
    let mut fields = Vec::new();
    let mut field = Vec::new();
    let mut quoted_field = false;
    let mut in_quotes = false;
    let mut i = 0;
    while i < record.len() {
        let b = record[i];
        if in_quotes {
            if b == b'"' {
                if record.get(i + 1) == Some(&b'"') {
                    field.push(b'"');
                    i += 1;
                } else {
                    in_quotes = false;
                }
            } else {
                field.push(b);
            }
        } else if b == b'"' {
            in_quotes = true;
            quoted_field = true;
        } else if b == b',' {
            fields.push(take_field(&mut field, &mut quoted_field));
        } else {
            field.push(b);
        }
        i += 1;
    }
    fields.push(take_field(&mut field, &mut quoted_field));
    fields
}

fn take_field(field: &mut Vec<u8>, quoted: &mut bool) -> Option<String> {
    let bytes = std::mem::take(field);
    let was_quoted = std::mem::replace(quoted, false);
    if bytes.is_empty() && !was_quoted {
        return None;
    }
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// A field as COPY reads it back: quoted when it holds what CSV must quote, or is empty
/// (an unquoted empty field is NULL).
fn write_field(value: &str, out: &mut Vec<u8>) {
    let needs_quotes = value.is_empty()
        || value
            .bytes()
            .any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r' | b'\\'))
        || value == "\\.";
    if needs_quotes {
        out.push(b'"');
        out.extend_from_slice(value.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(value.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::airflow::fernet::FernetKeys;

    fn keys() -> (FernetKeys, FernetKeys) {
        (
            FernetKeys::parse(&fernet::Fernet::generate_key()).expect("key"),
            FernetKeys::parse(&fernet::Fernet::generate_key()).expect("key"),
        )
    }

    #[test]
    fn rewrites_only_encrypted_values_across_chunk_boundaries() {
        let (a, b) = keys();
        let rekey = Rekey {
            source: a.clone(),
            target: b.clone(),
        };
        let table = TableExport {
            name: "variable".into(),
            columns: vec![
                "id".into(),
                "key".into(),
                "val".into(),
                "is_encrypted".into(),
            ],
            filter: None,
            estimate: 0.0,
        };
        let token = a.encrypt(b"s3cret");
        let csv = format!(
            "id,key,val,is_encrypted\n1,\"a,b\",{token},t\n2,plain,\"x\"\"y\nz\",f\n3,nul,,t\n4,empty,\"\",f"
        );
        let mut rewriter = SecretRewriter::new(&table, &rekey).expect("encrypted table");
        let mut out = Vec::new();
        for piece in csv.as_bytes().chunks(7) {
            out.extend(rewriter.feed(piece).expect("feeds"));
        }
        out.extend(rewriter.finish().expect("finishes"));
        let text = String::from_utf8(out).expect("utf-8");
        let lines: Vec<&str> = text.splitn(3, '\n').collect();
        assert_eq!(lines[0], "id,key,val,is_encrypted");
        let fields = split_fields(lines[1].as_bytes());
        assert_eq!(fields[1].as_deref(), Some("a,b"));
        let new_token = fields[2].clone().expect("value");
        assert_ne!(new_token, token);
        assert_eq!(b.decrypt(&new_token).expect("under the new key"), b"s3cret");
        assert_eq!(
            lines[2],
            "2,plain,\"x\"\"y\nz\",f\n3,nul,,t\n4,empty,\"\",f"
        );

        // A value the source keys cannot read stops the export, naming the row.
        let mut rewriter = SecretRewriter::new(&table, &rekey).expect("encrypted table");
        let foreign = b.encrypt(b"other");
        let err = rewriter
            .feed(format!("id,key,val,is_encrypted\n9,k9,{foreign},t\n").as_bytes())
            .expect_err("undecryptable");
        assert!(err.to_string().contains("variable key=k9"), "{err}");
    }

    #[test]
    fn trigger_kwargs_stay_when_plain_json() {
        let (a, b) = keys();
        let rekey = Rekey {
            source: a.clone(),
            target: b.clone(),
        };
        let table = TableExport {
            name: "trigger".into(),
            columns: vec!["id".into(), "classpath".into(), "kwargs".into()],
            filter: None,
            estimate: 0.0,
        };
        let token = a.encrypt(b"{}");
        let csv = format!("id,classpath,kwargs\n1,x,{token}\n2,y,\"{{\"\"a\"\": 1}}\"\n");
        let mut rewriter = SecretRewriter::new(&table, &rekey).expect("encrypted table");
        let text = String::from_utf8(rewriter.feed(csv.as_bytes()).expect("feeds")).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        let new_token = split_fields(lines[1].as_bytes())[2].clone().expect("value");
        assert_eq!(b.decrypt(&new_token).expect("re-encrypted"), b"{}");
        assert_eq!(lines[2], "2,y,\"{\"\"a\"\": 1}\"");
        assert!(
            SecretRewriter::new(
                &TableExport {
                    name: "dag_run".into(),
                    columns: vec!["id".into()],
                    filter: None,
                    estimate: 0.0
                },
                &rekey
            )
            .is_none()
        );
    }
}
