//! Restoring a backup of the original Python library (`restore --from-legacy`) in ONE
//! transaction: each file streamed into a typed staging table, the rows the target cannot hold
//! consistently dropped and counted, new ids with the references rebuilt, sealed secrets
//! merged by strategy, sequences moved and the active DAGs unpaused.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::postgres::PgDatabaseError;
use sqlx::{Connection, PgConnection};
use tokio::io::BufReader;
use tracing::{info, instrument, warn};

use super::cleanup::{TableCount, cleanup};
use super::import::{PROTECTED_VARIABLES, finish};
use super::{column_list, db_error};
use crate::airflow::catalog::{Catalog, TableSpec, quote_ident, quote_literal};
use crate::error::{Error, Result};
use crate::legacy::csv::RecordReader;
use crate::legacy::secrets::{Connection as LegacyConnection, Variable};
use crate::legacy::{LegacyFormat, LegacyTable, file_key, pyrepr};
use crate::model::RestoreStrategy;
use crate::progress::Progress;
use crate::store::BackupStore;

/// Tables of the format that are read and checked but not restored (see `NOT_RESTORED`).
const TRIGGER: &str = "trigger";
const NOT_RESTORED: &str = "trigger rows carry no id, so no task instance can point at them; the deferred task instances that used them are in flight and not restored";

/// Bytes of COPY data sent at a time.
const CHUNK: usize = 1 << 20;

/// A legacy backup ready to load: where its files are, their format, and the variables and
/// connections already read and sealed for the target.
pub struct LegacySource<'a> {
    pub store: &'a dyn BackupStore,
    pub prefix: String,
    pub format: LegacyFormat,
    pub variables: Vec<Variable>,
    pub connections: Vec<LegacyConnection>,
    pub active_dags: Vec<String>,
}

impl LegacySource<'_> {
    /// A file as messages name it: `<store>/<prefix>/<table>.csv`.
    pub fn resource(&self, name: &str) -> String {
        format!(
            "{}/{}",
            self.store.describe().trim_end_matches('/'),
            file_key(&self.prefix, name)
        )
    }
}

#[derive(Debug, Clone)]
pub struct LegacyOptions {
    pub clean: bool,
    pub variable_strategy: RestoreStrategy,
    pub connection_strategy: RestoreStrategy,
    /// METADATA_EXPORT_DAG_NAME: the original's own backup DAG.
    pub export_dag: String,
}

/// Rows of a file left out, and why.
#[derive(Debug, Clone, Serialize)]
pub struct DroppedRows {
    pub table: String,
    pub rows: u64,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct LegacyReport {
    pub cleaned: Vec<TableCount>,
    pub loaded: Vec<TableCount>,
    /// Not restored: the variable/connection tables under DO_NOTHING.
    pub skipped: Vec<String>,
    pub dropped: Vec<DroppedRows>,
    /// JSON values (`table.column`) that were not a Python literal of JSON: set to NULL.
    pub cleared_json: BTreeMap<String, u64>,
    /// Secrets written encrypted with the target's key, per `table.column`.
    pub encrypted: BTreeMap<String, u64>,
    pub unpaused: Vec<String>,
    /// Active in the source but without a `dag` row in the target (not parsed yet).
    pub missing_dags: Vec<String>,
}

/// A column of the target table.
#[derive(Debug, Clone)]
struct TargetColumn {
    name: String,
    kind: String,
    not_null: bool,
    has_default: bool,
}

impl TargetColumn {
    fn is_text(&self) -> bool {
        self.kind == "text" || self.kind.starts_with("character")
    }

    fn is_json(&self) -> bool {
        self.kind == "json" || self.kind == "jsonb"
    }
}

/// What an empty field becomes in a column.
#[derive(Debug, Clone, PartialEq, Eq)]
enum EmptyField {
    Null,
    EmptyText,
    Value(String),
    Refuse,
}

#[derive(Debug, Clone)]
struct ColumnPlan {
    name: String,
    json: bool,
    empty: EmptyField,
}

/// A table checked against the target, ready to load.
struct TablePlan<'a> {
    table: &'a LegacyTable,
    columns: Vec<ColumnPlan>,
    /// Target columns the files lack but the target requires, with their values.
    fills: Vec<(String, String)>,
}

/// Runs the whole legacy restore in one transaction on `conn`.
pub async fn restore_legacy(
    conn: &mut PgConnection,
    catalog: &Catalog,
    source: &LegacySource<'_>,
    options: &LegacyOptions,
    progress: &dyn Progress,
) -> Result<LegacyReport> {
    let mut tx = conn
        .begin()
        .await
        .map_err(|e| db_error("begin", "restore", e))?;
    let mut report = LegacyReport {
        cleaned: Vec::new(),
        loaded: Vec::new(),
        skipped: Vec::new(),
        dropped: Vec::new(),
        cleared_json: BTreeMap::new(),
        encrypted: BTreeMap::new(),
        unpaused: Vec::new(),
        missing_dags: Vec::new(),
    };
    if options.clean {
        report.cleaned = cleanup(&mut tx, catalog, false).await?;
    }
    // Every table checked before any file is read.
    let mut plans = Vec::new();
    for table in source.format.tables.iter().filter(|t| t.name != TRIGGER) {
        plans.push(plan_table(&mut tx, catalog, table, &source.format).await?);
    }
    let total = plans.len() + 3;
    progress.start("variable", 0, total);
    if options.variable_strategy == RestoreStrategy::DoNothing {
        report.skipped.push("variable".into());
        progress.finish("variable", 0);
    } else {
        let rows = load_variables(
            &mut tx,
            &source.variables,
            options.variable_strategy,
            &mut report,
        )
        .await?;
        progress.finish("variable", rows);
        report.loaded.push(TableCount {
            table: "variable".into(),
            rows,
        });
    }
    progress.start("connection", 1, total);
    if options.connection_strategy == RestoreStrategy::DoNothing {
        report.skipped.push("connection".into());
        progress.finish("connection", 0);
    } else {
        let rows = load_connections(
            &mut tx,
            &source.connections,
            options.connection_strategy,
            &mut report,
        )
        .await?;
        progress.finish("connection", rows);
        report.loaded.push(TableCount {
            table: "connection".into(),
            rows,
        });
    }
    for (index, plan) in plans.iter().enumerate() {
        progress.start(&plan.table.name, index + 2, total);
        let rows = load_table(
            &mut tx,
            plan,
            source,
            options,
            catalog,
            &mut report,
            progress,
        )
        .await?;
        progress.finish(&plan.table.name, rows);
        report.loaded.push(TableCount {
            table: plan.table.name.clone(),
            rows,
        });
    }
    if source.format.table(TRIGGER).is_some() {
        progress.start(TRIGGER, total - 1, total);
        let rows = count_records(source, TRIGGER).await?;
        progress.finish(TRIGGER, 0);
        if rows > 0 {
            report.dropped.push(DroppedRows {
                table: TRIGGER.into(),
                rows,
                reason: NOT_RESTORED.into(),
            });
        }
    }
    let loaded: Vec<String> = report.loaded.iter().map(|t| t.table.clone()).collect();
    (report.unpaused, report.missing_dags) = finish(tx, &loaded, &source.active_dags).await?;
    Ok(report)
}

async fn target_columns(conn: &mut PgConnection, table: &str) -> Result<Option<Vec<TargetColumn>>> {
    let rows: Vec<(String, String, bool, bool)> = sqlx::query_as(
        "SELECT attname::text, format_type(atttypid, atttypmod), attnotnull, atthasdef FROM pg_attribute \
         WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
    )
    .bind(quote_ident(table))
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| db_error("inspect columns", table, e))?;
    Ok((!rows.is_empty()).then(|| {
        rows.into_iter()
            .map(|(name, kind, not_null, has_default)| TargetColumn {
                name,
                kind,
                not_null,
                has_default,
            })
            .collect()
    }))
}

/// Checks `table` against the target: it exists, holds every column of the files, gets a
/// value for every column it requires, and is empty (apart from the rows cleanup keeps).
async fn plan_table<'a>(
    conn: &mut PgConnection,
    catalog: &Catalog,
    table: &'a LegacyTable,
    format: &LegacyFormat,
) -> Result<TablePlan<'a>> {
    let name = &table.name;
    let Some(target) = target_columns(conn, name).await? else {
        return Err(Error::failed(
            "restore",
            name,
            "the legacy backup has this table but the target database does not",
        ));
    };
    let find = |c: &str| target.iter().find(|t| t.name == c);
    let spec = catalog.table(name);
    let mut columns = Vec::new();
    for column in &table.columns {
        let Some(t) = find(column) else {
            return Err(Error::failed(
                "restore",
                name,
                format!(
                    "column {column} of the Airflow {} legacy format does not exist in the target (is the target an older Airflow version?)",
                    format.airflow_version
                ),
            ));
        };
        let empty = if !t.not_null {
            EmptyField::Null
        } else if t.is_text() {
            EmptyField::EmptyText
        } else if let Some(value) = fill_value(spec, &table.fill, column) {
            EmptyField::Value(value.to_string())
        } else {
            EmptyField::Refuse
        };
        columns.push(ColumnPlan {
            name: column.clone(),
            json: t.is_json(),
            empty,
        });
    }
    let fills = missing_values(&target, table, spec).map_err(|column| {
        Error::failed(
            "restore",
            name,
            format!(
                "the target requires column {column} (NOT NULL, no default), which the Airflow {} legacy format does not carry",
                format.airflow_version
            ),
        )
    })?;
    if name != "slot_pool" {
        let keep = catalog
            .table(name)
            .and_then(|spec| spec.keep.as_deref())
            .map(|k| format!(" WHERE ({k}) IS NOT TRUE"))
            .unwrap_or_default();
        let busy: bool = sqlx::query_scalar(&format!(
            "SELECT EXISTS (SELECT 1 FROM {}{keep})",
            quote_ident(name)
        ))
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| db_error("inspect", name, e))?;
        if busy {
            return Err(Error::failed(
                "restore",
                name,
                "the target table is not empty; restore with --clean (or run `mwaa-dr cleanup` first)",
            ));
        }
    }
    Ok(TablePlan {
        table,
        columns,
        fills,
    })
}

/// The value of a column the target requires, for a file that lacks it or leaves it empty: the
/// migration's value from the catalog (`added_columns`, as a manifest restore gives it), else
/// the format's `fill`.
fn fill_value<'a>(
    spec: Option<&'a TableSpec>,
    fill: &'a BTreeMap<String, String>,
    column: &str,
) -> Option<&'a str> {
    spec.and_then(|s| s.added_columns.get(column))
        .map(|added| added.value.as_str())
        .or_else(|| fill.get(column).map(String::as_str))
}

/// (column, value) for the target columns the files lack: every added column of the catalog
/// gets its migration's value; another the target requires (NOT NULL, no default) gets
/// `fill_value`, or is the `Err`. The rest take the target's default, or NULL.
fn missing_values(
    target: &[TargetColumn],
    table: &LegacyTable,
    spec: Option<&TableSpec>,
) -> std::result::Result<Vec<(String, String)>, String> {
    let mut values = Vec::new();
    for t in target.iter().filter(|t| !table.columns.contains(&t.name)) {
        let added = spec.is_some_and(|s| s.added_columns.contains_key(&t.name));
        // Rebuilt from the restored dag_run after the load.
        let rebuilt = table.name == "xcom" && t.name == "dag_run_id";
        if !added && (rebuilt || !t.not_null || t.has_default) {
            continue;
        }
        match fill_value(spec, &table.fill, &t.name) {
            Some(value) => values.push((t.name.clone(), value.to_string())),
            None => return Err(t.name.clone()),
        }
    }
    Ok(values)
}

/// Streams a file into the staging table, applies the rules for its table and inserts what
/// is left. Returns the rows written.
#[instrument(skip_all, fields(table = %plan.table.name))]
async fn load_table(
    conn: &mut PgConnection,
    plan: &TablePlan<'_>,
    source: &LegacySource<'_>,
    options: &LegacyOptions,
    catalog: &Catalog,
    report: &mut LegacyReport,
    progress: &dyn Progress,
) -> Result<u64> {
    let name = plan.table.name.as_str();
    let table = quote_ident(name);
    let stage = quote_ident(&format!("mwaa_dr_legacy_{name}"));
    let cols = column_list(&plan.table.columns);
    sqlx::query(&format!(
        "CREATE TEMP TABLE {stage} ON COMMIT DROP AS SELECT {cols} FROM {table} WITH NO DATA"
    ))
    .execute(&mut *conn)
    .await
    .map_err(|e| db_error("stage", name, e))?;
    sqlx::query(&format!(
        "ALTER TABLE {stage} ADD COLUMN mwaa_dr_line bigint"
    ))
    .execute(&mut *conn)
    .await
    .map_err(|e| db_error("stage", name, e))?;
    let staged = copy_file(conn, &stage, plan, source, report, progress).await?;
    info!(rows = staged, "staged");

    let has = |c: &str| plan.table.columns.iter().any(|x| x == c);
    let mut drops: Vec<(String, String)> = Vec::new();
    if has("dag_id")
        && matches!(
            name,
            "job" | "dag_run" | "task_instance" | "task_fail" | "xcom"
        )
    {
        drops.push((
            format!("s.dag_id = {}", quote_literal(&options.export_dag)),
            format!(
                "rows of the backup DAG itself (METADATA_EXPORT_DAG_NAME={})",
                options.export_dag
            ),
        ));
    }
    if name == "task_instance" {
        if has("state") {
            let states = catalog
                .inflight_states
                .iter()
                .map(|s| quote_literal(s))
                .collect::<Vec<_>>()
                .join(", ");
            drops.push((
                format!("s.state IN ({states})"),
                format!(
                    "in flight at backup time ({}): the scheduler runs them again",
                    catalog.inflight_states.join(", ")
                ),
            ));
        }
        drops.push((
            "NOT EXISTS (SELECT 1 FROM dag_run d WHERE d.dag_id = s.dag_id AND d.run_id = s.run_id)".into(),
            "their dag_run is not in the backup".into(),
        ));
    }
    if matches!(name, "task_fail" | "xcom") {
        drops.push((
            "NOT EXISTS (SELECT 1 FROM task_instance ti WHERE ti.dag_id = s.dag_id AND ti.task_id = s.task_id AND ti.run_id = s.run_id AND ti.map_index = s.map_index)".into(),
            "their task instance is not restored (in flight, of the backup DAG, or not in the backup)".into(),
        ));
    }
    for (condition, reason) in drops {
        let rows = sqlx::query(&format!("DELETE FROM {stage} s WHERE {condition}"))
            .execute(&mut *conn)
            .await
            .map_err(|e| db_error("filter", name, e))?
            .rows_affected();
        if rows > 0 {
            info!(rows, reason = %reason, "dropped");
            report.dropped.push(DroppedRows {
                table: name.into(),
                rows,
                reason,
            });
        }
    }

    // References to the source's ids: rebuilt where the format allows, cleared where not.
    let mut rewrites: Vec<String> = Vec::new();
    for (t, column) in [
        ("dag_run", "creating_job_id"),
        ("task_instance", "job_id"),
        ("task_instance", "queued_by_job_id"),
        ("task_instance", "trigger_id"),
    ] {
        if name == t && has(column) {
            rewrites.push(format!("UPDATE {stage} SET {} = NULL", quote_ident(column)));
        }
    }
    if name == "dag_run" && has("log_template_id") {
        rewrites.push(format!(
            "UPDATE {stage} s SET log_template_id = (SELECT max(id) FROM log_template) WHERE s.log_template_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM log_template l WHERE l.id = s.log_template_id)"
        ));
    }
    if name == "xcom" {
        rewrites.push(format!(
            "UPDATE {stage} s SET dag_run_id = d.id FROM dag_run d WHERE d.dag_id = s.dag_id AND d.run_id = s.run_id"
        ));
    }
    for sql in rewrites {
        sqlx::query(&sql)
            .execute(&mut *conn)
            .await
            .map_err(|e| db_error("rebuild references", name, e))?;
    }

    for key in &plan.table.unique {
        check_unique(conn, &stage, name, key, source).await?;
    }

    let mut insert_cols: Vec<String> = plan.table.columns.clone();
    let mut select: Vec<String> = plan
        .table
        .columns
        .iter()
        .map(|c| format!("s.{}", quote_ident(c)))
        .collect();
    for (column, value) in &plan.fills {
        insert_cols.push(column.clone());
        select.push(quote_literal(value));
    }
    let conflict = if name == "slot_pool" {
        let updates = plan
            .table
            .columns
            .iter()
            .filter(|c| *c != "pool")
            .map(|c| format!("{0} = EXCLUDED.{0}", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(", ");
        format!(" ON CONFLICT (pool) DO UPDATE SET {updates}")
    } else {
        String::new()
    };
    let rows = sqlx::query(&format!(
        "INSERT INTO {table} ({}) SELECT {} FROM {stage} s ORDER BY s.mwaa_dr_line{conflict}",
        column_list(&insert_cols),
        select.join(", ")
    ))
    .execute(&mut *conn)
    .await
    .map_err(|e| db_error("restore", name, e))?
    .rows_affected();
    info!(rows, "loaded");
    Ok(rows)
}

/// Fails naming two lines of the file that hold the same `key`.
async fn check_unique(
    conn: &mut PgConnection,
    stage: &str,
    table: &str,
    key: &[String],
    source: &LegacySource<'_>,
) -> Result<()> {
    let cols = column_list(key);
    let pair: Option<(i64, i64)> = sqlx::query_as(&format!(
        "SELECT min(mwaa_dr_line), max(mwaa_dr_line) FROM {stage} GROUP BY {cols} HAVING count(*) > 1 ORDER BY 1 LIMIT 1"
    ))
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| db_error("check duplicates", table, e))?;
    match pair {
        None => Ok(()),
        Some((first, again)) => Err(Error::failed(
            "restore",
            format!("{} line {again}", source.resource(table)),
            format!(
                "the same ({}) as line {first}; the target allows it once",
                key.join(", ")
            ),
        )),
    }
}

/// `COPY` of one file into `stage`, converting each record; errors name the file and line.
async fn copy_file(
    conn: &mut PgConnection,
    stage: &str,
    plan: &TablePlan<'_>,
    source: &LegacySource<'_>,
    report: &mut LegacyReport,
    progress: &dyn Progress,
) -> Result<u64> {
    let name = plan.table.name.as_str();
    let resource = source.resource(name);
    let reader = source.store.open(&file_key(&source.prefix, name)).await?;
    let mut records = RecordReader::new(BufReader::with_capacity(1 << 16, reader), b'|');
    let mut copy = conn
        .copy_in_raw(&format!(
            "COPY {stage} ({}, mwaa_dr_line) FROM STDIN WITH (FORMAT text)",
            column_list(&plan.table.columns)
        ))
        .await
        .map_err(|e| db_error("load", name, e))?;
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK + (1 << 16));
    let mut counted = 0;
    let streamed: Result<()> = async {
        loop {
            let record = records.next_record().await.map_err(|e| {
                Error::failed("read", format!("{resource} line {}", e.line), e.problem)
            })?;
            let Some(record) = record else {
                break;
            };
            let at = || format!("{resource} line {}", record.line);
            if record.fields.len() != plan.columns.len() {
                return Err(Error::failed(
                    "read",
                    at(),
                    format!(
                        "{} fields, the Airflow {} legacy format of {name} has {}: {}",
                        record.fields.len(),
                        source.format.factory,
                        plan.columns.len(),
                        plan.table.columns.join("|")
                    ),
                ));
            }
            for (i, (field, column)) in record.fields.iter().zip(&plan.columns).enumerate() {
                if i > 0 {
                    buf.push(b'\t');
                }
                if field.is_empty() {
                    match &column.empty {
                        EmptyField::Null => buf.extend_from_slice(NULL),
                        EmptyField::EmptyText => {}
                        EmptyField::Value(value) => text_field(&mut buf, value),
                        EmptyField::Refuse => {
                            return Err(Error::failed(
                                "read",
                                at(),
                                format!(
                                    "column {} is empty, and the target requires a value",
                                    column.name
                                ),
                            ));
                        }
                    }
                } else if column.json {
                    // The original wrote json values with Python's str().
                    match pyrepr::to_json(field) {
                        Ok(json) if json == "null" => buf.extend_from_slice(NULL),
                        Ok(json) => text_field(&mut buf, &json),
                        Err(problem) if column.empty == EmptyField::Null => {
                            let cleared = report
                                .cleared_json
                                .entry(format!("{name}.{}", column.name))
                                .or_default();
                            if *cleared == 0 {
                                warn!(line = record.line, column = %column.name, %problem, "set to NULL");
                            }
                            *cleared += 1;
                            buf.extend_from_slice(NULL);
                        }
                        Err(problem) => {
                            return Err(Error::failed(
                                "read",
                                at(),
                                format!("column {}: {problem}", column.name),
                            ));
                        }
                    }
                } else {
                    text_field(&mut buf, field);
                }
            }
            buf.push(b'\t');
            buf.extend_from_slice(record.line.to_string().as_bytes());
            buf.push(b'\n');
            if buf.len() >= CHUNK {
                copy.send(std::mem::take(&mut buf))
                    .await
                    .map_err(|e| db_error("load", name, e))?;
                buf.reserve(CHUNK + (1 << 16));
                progress.advance(name, records.bytes_read() - counted);
                counted = records.bytes_read();
            }
        }
        if !buf.is_empty() {
            copy.send(std::mem::take(&mut buf))
                .await
                .map_err(|e| db_error("load", name, e))?;
        }
        progress.advance(name, records.bytes_read() - counted);
        Ok(())
    }
    .await;
    if let Err(err) = streamed {
        let _ = copy.abort("mwaa-dr: the legacy file is not valid").await;
        return Err(err);
    }
    match copy.finish().await {
        Ok(rows) => Ok(rows),
        Err(err) => Err(copy_error(err, source, name).await),
    }
}

/// A value PostgreSQL refused during COPY, named by the file line its row came from.
async fn copy_error(err: sqlx::Error, source: &LegacySource<'_>, table: &str) -> Error {
    let resource = source.resource(table);
    let context = match &err {
        sqlx::Error::Database(db) => db.try_downcast_ref::<PgDatabaseError>().and_then(|pg| {
            pg.r#where()
                .map(|w| (pg.message().to_string(), w.to_string()))
        }),
        _ => None,
    };
    let Some((message, context)) = context else {
        return db_error("load", table, err);
    };
    // "COPY <stage>, line N, column C: \"value\"": line N is the Nth record (text format).
    let row = context
        .split(", line ")
        .nth(1)
        .and_then(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse::<usize>().ok())
        })
        .filter(|n| *n > 0);
    let column = context
        .split(", column ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .map(|c| format!("column {c}: "))
        .unwrap_or_default();
    // Found again by reading the file up to that record: only on this error path.
    let line = match row {
        Some(n) => record_line(source, table, n).await,
        None => None,
    };
    match line {
        Some(line) => Error::failed(
            "load",
            format!("{resource} line {line}"),
            format!("{column}{message}"),
        ),
        None => Error::failed("load", resource, format!("{message} ({context})")),
    }
}

/// The line the `n`th record (1-based) of a file starts on.
async fn record_line(source: &LegacySource<'_>, name: &str, n: usize) -> Option<u64> {
    let reader = source
        .store
        .open(&file_key(&source.prefix, name))
        .await
        .ok()?;
    let mut records = RecordReader::new(BufReader::new(reader), b'|');
    for _ in 1..n {
        records.next_record().await.ok()??;
    }
    records.next_record().await.ok()?.map(|r| r.line)
}

/// A field of COPY's text format: one record per line (so PostgreSQL's line numbers count
/// records), backslash, newline, carriage return and the tab delimiter escaped.
fn text_field(buf: &mut Vec<u8>, value: &str) {
    for b in value.bytes() {
        match b {
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            _ => buf.push(b),
        }
    }
}

/// NULL in COPY's text format.
const NULL: &[u8] = b"\\N";

/// Reads a file the restore does not load, checking every record, and counts its records.
async fn count_records(source: &LegacySource<'_>, name: &str) -> Result<u64> {
    let resource = source.resource(name);
    let width = source.format.table(name).map_or(0, |t| t.columns.len());
    let reader = source.store.open(&file_key(&source.prefix, name)).await?;
    let mut records = RecordReader::new(BufReader::new(reader), b'|');
    let mut rows = 0;
    while let Some(record) = records
        .next_record()
        .await
        .map_err(|e| Error::failed("read", format!("{resource} line {}", e.line), e.problem))?
    {
        if record.fields.len() != width {
            return Err(Error::failed(
                "read",
                format!("{resource} line {}", record.line),
                format!(
                    "{} fields, the Airflow {} legacy format of {name} has {width}",
                    record.fields.len(),
                    source.format.factory
                ),
            ));
        }
        rows += 1;
    }
    Ok(rows)
}

/// The statements of a variable/connection strategy from `stage` into `table` by `key`.
fn strategy_statements(
    table: &str,
    stage: &str,
    key: &str,
    cols: &[&str],
    strategy: RestoreStrategy,
    returning: &str,
) -> Vec<String> {
    let key_q = quote_ident(key);
    let protected = if table == "variable" {
        format!(
            " AND s.{key_q} NOT IN ({})",
            PROTECTED_VARIABLES
                .iter()
                .map(|v| quote_literal(v))
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        String::new()
    };
    let list = cols.iter().map(|c| quote_ident(c)).collect::<Vec<_>>();
    let insert = list.join(", ");
    let select = list
        .iter()
        .map(|c| format!("s.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let table = quote_ident(table);
    match strategy {
        RestoreStrategy::DoNothing => Vec::new(),
        RestoreStrategy::Append => vec![format!(
            "INSERT INTO {table} ({insert}) SELECT {select} FROM {stage} s WHERE NOT EXISTS (SELECT 1 FROM {table} d WHERE d.{key_q} = s.{key_q}){protected} ORDER BY s.mwaa_dr_line RETURNING {returning}"
        )],
        RestoreStrategy::Replace => vec![
            format!("DELETE FROM {table} d USING {stage} s WHERE d.{key_q} = s.{key_q}{protected}"),
            format!(
                "INSERT INTO {table} ({insert}) SELECT {select} FROM {stage} s WHERE TRUE{protected} ORDER BY s.mwaa_dr_line RETURNING {returning}"
            ),
        ],
    }
}

/// Runs `statements`; the last returns one row of flags per written row. Returns the rows
/// written and, per flag, how many were true.
async fn run_strategy(
    conn: &mut PgConnection,
    table: &str,
    statements: Vec<String>,
) -> Result<(u64, Vec<u64>)> {
    let mut written = 0;
    let mut encrypted = Vec::new();
    let last = statements.len().saturating_sub(1);
    for (i, sql) in statements.into_iter().enumerate() {
        if i < last {
            sqlx::query(&sql)
                .execute(&mut *conn)
                .await
                .map_err(|e| db_error("restore", table, e))?;
            continue;
        }
        let rows: Vec<(bool, bool)> = sqlx::query_as(&sql)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| db_error("restore", table, e))?;
        written = rows.len() as u64;
        encrypted = vec![
            rows.iter().filter(|r| r.0).count() as u64,
            rows.iter().filter(|r| r.1).count() as u64,
        ];
    }
    Ok((written, encrypted))
}

async fn load_variables(
    conn: &mut PgConnection,
    variables: &[Variable],
    strategy: RestoreStrategy,
    report: &mut LegacyReport,
) -> Result<u64> {
    let stage = quote_ident("mwaa_dr_legacy_variable");
    sqlx::query(&format!(
        "CREATE TEMP TABLE {stage} ON COMMIT DROP AS SELECT key, val, description, is_encrypted, 0::bigint AS mwaa_dr_line FROM variable WITH NO DATA"
    ))
    .execute(&mut *conn)
    .await
    .map_err(|e| db_error("stage", "variable", e))?;
    sqlx::query(&format!(
        "INSERT INTO {stage} SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bool[], $5::bigint[])"
    ))
    .bind(variables.iter().map(|v| v.key.clone()).collect::<Vec<_>>())
    .bind(variables.iter().map(|v| v.val.clone()).collect::<Vec<_>>())
    .bind(
        variables
            .iter()
            .map(|v| v.description.clone())
            .collect::<Vec<_>>(),
    )
    .bind(variables.iter().map(|v| v.is_encrypted).collect::<Vec<_>>())
    .bind(variables.iter().map(|v| v.line as i64).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await
    .map_err(|e| db_error("stage", "variable", e))?;
    let statements = strategy_statements(
        "variable",
        &stage,
        "key",
        &["key", "val", "description", "is_encrypted"],
        strategy,
        "is_encrypted, false",
    );
    let (rows, encrypted) = run_strategy(conn, "variable", statements).await?;
    if let Some(n) = encrypted.first().filter(|n| **n > 0) {
        report.encrypted.insert("variable.val".into(), *n);
    }
    info!(rows, "loaded variables");
    Ok(rows)
}

async fn load_connections(
    conn: &mut PgConnection,
    connections: &[LegacyConnection],
    strategy: RestoreStrategy,
    report: &mut LegacyReport,
) -> Result<u64> {
    const COLUMNS: [&str; 11] = [
        "conn_id",
        "conn_type",
        "description",
        "extra",
        "host",
        "login",
        "password",
        "port",
        "schema",
        "is_encrypted",
        "is_extra_encrypted",
    ];
    let stage = quote_ident("mwaa_dr_legacy_connection");
    sqlx::query(&format!(
        "CREATE TEMP TABLE {stage} ON COMMIT DROP AS SELECT {}, 0::bigint AS mwaa_dr_line FROM connection WITH NO DATA",
        COLUMNS.map(quote_ident).join(", ")
    ))
    .execute(&mut *conn)
    .await
    .map_err(|e| db_error("stage", "connection", e))?;
    let text = |f: fn(&LegacyConnection) -> Option<String>| -> Vec<Option<String>> {
        connections.iter().map(f).collect()
    };
    sqlx::query(&format!(
        "INSERT INTO {stage} SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::int[], $9::text[], $10::bool[], $11::bool[], $12::bigint[])"
    ))
    .bind(text(|c| Some(c.conn_id.clone())))
    .bind(text(|c| Some(c.conn_type.clone())))
    .bind(text(|c| c.description.clone()))
    .bind(text(|c| c.extra.clone()))
    .bind(text(|c| c.host.clone()))
    .bind(text(|c| c.login.clone()))
    .bind(text(|c| c.password.clone()))
    .bind(connections.iter().map(|c| c.port).collect::<Vec<_>>())
    .bind(text(|c| c.schema.clone()))
    .bind(connections.iter().map(|c| c.is_encrypted).collect::<Vec<_>>())
    .bind(
        connections
            .iter()
            .map(|c| c.is_extra_encrypted)
            .collect::<Vec<_>>(),
    )
    .bind(connections.iter().map(|c| c.line as i64).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await
    .map_err(|e| db_error("stage", "connection", e))?;
    let statements = strategy_statements(
        "connection",
        &stage,
        "conn_id",
        &COLUMNS,
        strategy,
        "is_encrypted, is_extra_encrypted",
    );
    let (rows, encrypted) = run_strategy(conn, "connection", statements).await?;
    for (column, n) in ["connection.password", "connection.extra"]
        .iter()
        .zip(&encrypted)
    {
        if *n > 0 {
            report.encrypted.insert((*column).into(), *n);
        }
    }
    info!(rows, "loaded connections");
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_escaped_for_copy() {
        let mut buf = Vec::new();
        text_field(&mut buf, "say \"hi\"\r\n\\.\tx");
        assert_eq!(buf, b"say \"hi\"\\r\\n\\\\.\\tx");
        assert_eq!(NULL, b"\\N");
    }

    fn column(name: &str, not_null: bool, has_default: bool) -> TargetColumn {
        TargetColumn {
            name: name.into(),
            kind: "integer".into(),
            not_null,
            has_default,
        }
    }

    fn legacy_table(name: &str, columns: &[&str], fill: &[(&str, &str)]) -> LegacyTable {
        LegacyTable {
            name: name.into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            fill: fill
                .iter()
                .map(|(c, v)| (c.to_string(), v.to_string()))
                .collect(),
            unique: Vec::new(),
        }
    }

    #[test]
    fn missing_columns_get_the_catalogs_migration_values() {
        let catalog = Catalog::builtin().expect("catalog");
        let pool = catalog.table("slot_pool");
        let target = [
            column("id", true, true),
            column("pool", false, false),
            column("slots", false, false),
            column("description", false, false),
            column("include_deferred", true, false),
        ];
        let files = ["description", "pool", "slots"];
        // The catalog's value, as a manifest restore gives it, over the format's fill.
        for fill in [&[][..], &[("include_deferred", "true")][..]] {
            assert_eq!(
                missing_values(&target, &legacy_table("slot_pool", &files, fill), pool),
                Ok(vec![("include_deferred".to_string(), "false".to_string())])
            );
        }
        assert_eq!(
            fill_value(pool, &BTreeMap::new(), "include_deferred"),
            Some("false")
        );
        // An added column with a default in the target still gets the migration's value.
        let run = catalog.table("dag_run");
        assert_eq!(
            missing_values(
                &[
                    column("run_id", true, false),
                    column("clear_number", true, true)
                ],
                &legacy_table("dag_run", &["run_id"], &[]),
                run,
            ),
            Ok(vec![("clear_number".to_string(), "0".to_string())])
        );
        // Without a catalog entry: the format's fill, else refused; nullable or defaulted
        // columns and xcom.dag_run_id (rebuilt) are left alone.
        let required = [column("a", true, false), column("b", false, false)];
        assert_eq!(
            missing_values(&required, &legacy_table("t", &[], &[("a", "7")]), None),
            Ok(vec![("a".to_string(), "7".to_string())])
        );
        assert_eq!(
            missing_values(&required, &legacy_table("t", &[], &[]), None),
            Err("a".to_string())
        );
        assert_eq!(
            missing_values(
                &[column("dag_run_id", true, false)],
                &legacy_table("xcom", &[], &[]),
                catalog.table("xcom"),
            ),
            Ok(Vec::new())
        );
    }

    #[test]
    fn strategies_protect_the_steering_variables() {
        let append = strategy_statements(
            "variable",
            "st",
            "key",
            &["key", "val"],
            RestoreStrategy::Append,
            "is_encrypted, false",
        );
        assert_eq!(append.len(), 1);
        assert!(append[0].contains("NOT EXISTS"), "{append:?}");
        assert!(append[0].contains("'DR_VARIABLE_RESTORE_STRATEGY'"));
        let replace = strategy_statements(
            "connection",
            "st",
            "conn_id",
            &["conn_id"],
            RestoreStrategy::Replace,
            "is_encrypted, is_extra_encrypted",
        );
        assert_eq!(replace.len(), 2);
        assert!(replace[0].starts_with("DELETE"));
        assert!(!replace[1].contains("DR_VARIABLE"));
        assert!(
            strategy_statements("variable", "st", "key", &[], RestoreStrategy::DoNothing, "")
                .is_empty()
        );
    }
}
