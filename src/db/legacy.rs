//! Restoring a backup of the original Python library (`restore --from-legacy`) in ONE
//! transaction: each file streamed into a typed staging table, the rows the target cannot hold
//! consistently dropped and counted, new ids with the references rebuilt, sealed secrets
//! merged by strategy, sequences moved and the active DAGs unpaused.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::Serialize;
use sqlx::PgConnection;
use sqlx::postgres::{PgCopyIn, PgDatabaseError};
use tokio::io::BufReader;
use tracing::{info, instrument, warn};

use super::load::statements::{
    JOB_REFERENCES, MergeLoad, StrategyLoad, merge_statement, strategy_statements,
};
use super::load::{LoadReport, RowSource, begin, copy_rows, ensure_empty, extends_load_report};
use super::{column_list, db_error};
use crate::airflow::catalog::{Catalog, TableSpec, quote_ident, quote_literal};
use crate::error::{Error, Result};
use crate::legacy::csv::{Record, RecordReader};
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

#[derive(Debug, Clone, Default, Serialize)]
pub struct LegacyReport {
    #[serde(flatten)]
    pub load: LoadReport,
    pub dropped: Vec<DroppedRows>,
    /// JSON values (`table.column`) that were not a Python literal of JSON: set to NULL.
    pub cleared_json: BTreeMap<String, u64>,
    /// Secrets written encrypted with the target's key, per `table.column`.
    pub encrypted: BTreeMap<String, u64>,
}

extends_load_report!(LegacyReport, load);

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
    let (mut tx, cleaned) = begin(conn, catalog, options.clean).await?;
    let mut report = LegacyReport {
        load: LoadReport {
            cleaned,
            ..LoadReport::default()
        },
        ..LegacyReport::default()
    };
    // Every table checked before any file is read.
    let mut plans = Vec::new();
    for table in source.format.tables.iter().filter(|t| t.name != TRIGGER) {
        plans.push(plan_table(&mut tx, catalog, table, &source.format).await?);
    }
    let total = plans.len() + 3;
    load_secrets(&mut tx, source, options, &mut report, progress, total).await?;
    let mut rows_source = LegacyRows {
        source,
        progress,
        cleared_json: BTreeMap::new(),
    };
    for (index, plan) in plans.iter().enumerate() {
        progress.start(&plan.table.name, index + 2, total);
        let rows = load_table(
            &mut tx,
            plan,
            &mut rows_source,
            options,
            catalog,
            &mut report,
        )
        .await?;
        progress.finish(&plan.table.name, rows);
        report.loaded(&plan.table.name, rows);
    }
    report.cleared_json = rows_source.cleared_json;
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
    super::load::finish(tx, &mut report.load, &source.active_dags).await?;
    Ok(report)
}

/// Variables and connections, already read and sealed, by their strategies.
async fn load_secrets(
    conn: &mut PgConnection,
    source: &LegacySource<'_>,
    options: &LegacyOptions,
    report: &mut LegacyReport,
    progress: &dyn Progress,
    total: usize,
) -> Result<()> {
    progress.start("variable", 0, total);
    if options.variable_strategy == RestoreStrategy::DoNothing {
        report.skipped.push("variable".into());
        progress.finish("variable", 0);
    } else {
        let rows =
            load_variables(conn, &source.variables, options.variable_strategy, report).await?;
        progress.finish("variable", rows);
        report.loaded("variable", rows);
    }
    progress.start("connection", 1, total);
    if options.connection_strategy == RestoreStrategy::DoNothing {
        report.skipped.push("connection".into());
        progress.finish("connection", 0);
    } else {
        let rows = load_connections(
            conn,
            &source.connections,
            options.connection_strategy,
            report,
        )
        .await?;
        progress.finish("connection", rows);
        report.loaded("connection", rows);
    }
    Ok(())
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
    // slot_pool is merged by pool name (the target's default_pool stays).
    if name != "slot_pool" {
        ensure_empty(conn, name, spec.and_then(|s| s.keep.as_deref())).await?;
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
async fn load_table<'a>(
    conn: &mut PgConnection,
    plan: &TablePlan<'a>,
    rows_source: &mut LegacyRows<'a, '_>,
    options: &LegacyOptions,
    catalog: &Catalog,
    report: &mut LegacyReport,
) -> Result<u64> {
    let name = plan.table.name.as_str();
    let stage = quote_ident(&format!("mwaa_dr_legacy_{name}"));
    let cols = column_list(&plan.table.columns);
    for sql in [
        format!(
            "CREATE TEMP TABLE {stage} ON COMMIT DROP AS SELECT {cols} FROM {} WITH NO DATA",
            quote_ident(name)
        ),
        format!("ALTER TABLE {stage} ADD COLUMN mwaa_dr_line bigint"),
    ] {
        sqlx::query(&sql)
            .execute(&mut *conn)
            .await
            .map_err(|e| db_error("stage", name, e))?;
    }
    let staged = copy_rows(conn, &stage, rows_source, plan).await?;
    info!(rows = staged, "staged");

    for (condition, reason) in drop_conditions(plan.table, options, catalog) {
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
    for sql in reference_rewrites(plan.table, &stage) {
        sqlx::query(&sql)
            .execute(&mut *conn)
            .await
            .map_err(|e| db_error("rebuild references", name, e))?;
    }
    for key in &plan.table.unique {
        check_unique(conn, &stage, name, key, rows_source.source).await?;
    }
    let rows = sqlx::query(&insert_statement(plan, &stage))
        .execute(&mut *conn)
        .await
        .map_err(|e| db_error("restore", name, e))?
        .rows_affected();
    info!(rows, "loaded");
    Ok(rows)
}

/// (condition on the staged row `s`, reason) of the rows of `table` the target cannot hold
/// consistently. Which tables lose the backup DAG's rows and the in-flight ones follows the
/// catalog's backup filters (`{export_dag}`, `{settled_ti}`, `{inflight_states}`), so both
/// kinds of backup leave out the same rows.
fn drop_conditions(
    table: &LegacyTable,
    options: &LegacyOptions,
    catalog: &Catalog,
) -> Vec<(String, String)> {
    let name = table.name.as_str();
    let has = |c: &str| table.columns.iter().any(|x| x == c);
    let filter = catalog
        .table(name)
        .and_then(|spec| spec.filter.as_deref())
        .unwrap_or_default();
    let mut drops: Vec<(String, String)> = Vec::new();
    if has("dag_id") && (filter.contains("{export_dag}") || filter.contains("{settled_ti}")) {
        drops.push((
            format!("s.dag_id = {}", quote_literal(&options.export_dag)),
            format!(
                "rows of the backup DAG itself (METADATA_EXPORT_DAG_NAME={})",
                options.export_dag
            ),
        ));
    }
    if has("state") && filter.contains("{inflight_states}") {
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
    if name == "task_instance" {
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
    drops
}

/// References to the source's ids in the staged rows of `table`: rebuilt where the format
/// allows, cleared where not (jobs and triggers get new ids, which the files do not link).
fn reference_rewrites(table: &LegacyTable, stage: &str) -> Vec<String> {
    let name = table.name.as_str();
    let has = |c: &str| table.columns.iter().any(|x| x == c);
    let mut rewrites: Vec<String> = JOB_REFERENCES
        .iter()
        .chain(&[("task_instance", "trigger_id")])
        .filter(|(t, column)| *t == name && has(column))
        .map(|(_, column)| format!("UPDATE {stage} SET {} = NULL", quote_ident(column)))
        .collect();
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
    rewrites
}

/// The INSERT of the staged rows left, in file order, with the values of the columns the
/// files lack; slot_pool merges by pool name into the target's pools.
fn insert_statement(plan: &TablePlan<'_>, stage: &str) -> String {
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
    let table = quote_ident(&plan.table.name);
    if plan.table.name != "slot_pool" {
        return format!(
            "INSERT INTO {table} ({}) SELECT {} FROM {stage} s ORDER BY s.mwaa_dr_line",
            column_list(&insert_cols),
            select.join(", ")
        );
    }
    // The target's other pools stay; a pool of the files takes the files' values.
    let key = ["pool".to_string()];
    let updated: Vec<String> = plan
        .table
        .columns
        .iter()
        .filter(|c| *c != "pool")
        .cloned()
        .collect();
    merge_statement(&MergeLoad {
        table: &plan.table.name,
        stage,
        key: &key,
        columns: &insert_cols,
        select: &select,
        updated: &updated,
        order: " ORDER BY s.mwaa_dr_line",
    })
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

/// The rows of the original library's files: each record of a table's file checked and
/// converted to COPY's text format, with the line it starts on (`mwaa_dr_line`) so that
/// later errors and the insert order follow the file.
struct LegacyRows<'a, 's> {
    source: &'a LegacySource<'s>,
    progress: &'a dyn Progress,
    /// JSON values that were not a Python literal, set to NULL (`table.column`).
    cleared_json: BTreeMap<String, u64>,
}

#[async_trait]
impl<'a> RowSource for LegacyRows<'a, '_> {
    type Table = TablePlan<'a>;
    type Sent = ();

    fn name<'t>(&self, plan: &'t TablePlan<'a>) -> &'t str {
        &plan.table.name
    }

    fn columns(&self, plan: &TablePlan<'a>) -> Vec<String> {
        let mut columns = plan.table.columns.clone();
        columns.push("mwaa_dr_line".into());
        columns
    }

    fn options(&self) -> &'static str {
        "FORMAT text"
    }

    async fn send(
        &mut self,
        plan: &TablePlan<'a>,
        copy: &mut PgCopyIn<&mut PgConnection>,
    ) -> Result<()> {
        let name = plan.table.name.as_str();
        let resource = self.source.resource(name);
        let reader = self
            .source
            .store
            .open(&file_key(&self.source.prefix, name))
            .await?;
        let mut records = RecordReader::new(BufReader::with_capacity(1 << 16, reader), b'|');
        let mut buf: Vec<u8> = Vec::with_capacity(CHUNK + (1 << 16));
        let mut counted = 0;
        while let Some(record) = records
            .next_record()
            .await
            .map_err(|e| Error::failed("read", format!("{resource} line {}", e.line), e.problem))?
        {
            self.encode(&mut buf, plan, &record)?;
            if buf.len() >= CHUNK {
                copy.send(std::mem::take(&mut buf))
                    .await
                    .map_err(|e| db_error("load", name, e))?;
                buf.reserve(CHUNK + (1 << 16));
                self.progress.advance(name, records.bytes_read() - counted);
                counted = records.bytes_read();
            }
        }
        if !buf.is_empty() {
            copy.send(buf)
                .await
                .map_err(|e| db_error("load", name, e))?;
        }
        self.progress.advance(name, records.bytes_read() - counted);
        Ok(())
    }

    fn check(&self, _: &TablePlan<'a>, _: (), _: u64) -> Result<()> {
        // Every record was checked as it was sent; the count is the file's.
        Ok(())
    }

    async fn refused(&self, plan: &TablePlan<'a>, err: sqlx::Error) -> Error {
        copy_error(err, self.source, &plan.table.name).await
    }
}

impl LegacyRows<'_, '_> {
    /// Appends `record` to `buf` as a line of COPY's text format.
    fn encode(&mut self, buf: &mut Vec<u8>, plan: &TablePlan<'_>, record: &Record) -> Result<()> {
        let name = plan.table.name.as_str();
        let at = || format!("{} line {}", self.source.resource(name), record.line);
        if record.fields.len() != plan.columns.len() {
            return Err(Error::failed(
                "read",
                at(),
                format!(
                    "{} fields, the Airflow {} legacy format of {name} has {}: {}",
                    record.fields.len(),
                    self.source.format.factory,
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
                    EmptyField::Value(value) => text_field(buf, value),
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
                    Ok(json) => text_field(buf, &json),
                    Err(problem) if column.empty == EmptyField::Null => {
                        let cleared = self
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
                text_field(buf, field);
            }
        }
        buf.push(b'\t');
        buf.extend_from_slice(record.line.to_string().as_bytes());
        buf.push(b'\n');
        Ok(())
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

/// The statements of a variable/connection strategy from `stage` into `table` by `key`, in
/// file order, returning the `returning` flags of each written row.
fn legacy_strategy(
    table: &str,
    stage: &str,
    key: &str,
    cols: &[&str],
    strategy: RestoreStrategy,
    returning: &str,
) -> Vec<String> {
    let key = [key.to_string()];
    let columns: Vec<String> = cols.iter().map(|c| c.to_string()).collect();
    strategy_statements(
        &StrategyLoad {
            table,
            stage,
            key: &key,
            columns: &columns,
            tail: &format!(" ORDER BY s.mwaa_dr_line RETURNING {returning}"),
        },
        strategy,
    )
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
    let statements = legacy_strategy(
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
    let statements = legacy_strategy(
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
    fn job_and_trigger_references_are_cleared_and_run_ids_rebuilt() {
        let ti = legacy_table(
            "task_instance",
            &[
                "dag_id",
                "job_id",
                "queued_by_job_id",
                "trigger_id",
                "state",
            ],
            &[],
        );
        assert_eq!(
            reference_rewrites(&ti, "st"),
            vec![
                "UPDATE st SET \"job_id\" = NULL",
                "UPDATE st SET \"queued_by_job_id\" = NULL",
                "UPDATE st SET \"trigger_id\" = NULL",
            ]
        );
        let run = legacy_table(
            "dag_run",
            &["run_id", "creating_job_id", "log_template_id"],
            &[],
        );
        let rewrites = reference_rewrites(&run, "st");
        assert_eq!(rewrites[0], "UPDATE st SET \"creating_job_id\" = NULL");
        assert!(rewrites[1].contains("log_template"), "{rewrites:?}");
        assert_eq!(rewrites.len(), 2);
        let xcom = reference_rewrites(&legacy_table("xcom", &["dag_id", "run_id"], &[]), "st");
        assert_eq!(xcom.len(), 1);
        assert!(xcom[0].contains("SET dag_run_id = d.id"), "{xcom:?}");
        assert!(reference_rewrites(&legacy_table("log", &["dttm"], &[]), "st").is_empty());
    }

    #[test]
    fn rows_left_are_inserted_in_file_order_with_the_missing_values() {
        let pools = legacy_table("slot_pool", &["pool", "slots"], &[]);
        let plan = TablePlan {
            table: &pools,
            columns: Vec::new(),
            fills: vec![("include_deferred".into(), "false".into())],
        };
        assert_eq!(
            insert_statement(&plan, "st"),
            "INSERT INTO \"slot_pool\" (\"pool\", \"slots\", \"include_deferred\") SELECT s.\"pool\", s.\"slots\", 'false' FROM st s ORDER BY s.mwaa_dr_line ON CONFLICT (\"pool\") DO UPDATE SET \"slots\" = EXCLUDED.\"slots\""
        );
        let logs = legacy_table("log", &["dttm"], &[]);
        let plan = TablePlan {
            table: &logs,
            columns: Vec::new(),
            fills: Vec::new(),
        };
        assert_eq!(
            insert_statement(&plan, "st"),
            "INSERT INTO \"log\" (\"dttm\") SELECT s.\"dttm\" FROM st s ORDER BY s.mwaa_dr_line"
        );
    }

    #[test]
    fn the_report_keeps_the_shared_fields_at_the_top_level() {
        let mut report = LegacyReport::default();
        report.loaded("dag_run", 3);
        let doc = serde_json::to_value(&report).expect("serializes");
        assert_eq!(doc["loaded"][0]["rows"], 3);
        for key in ["cleaned", "skipped", "unpaused", "missing_dags", "dropped"] {
            assert!(doc.get(key).is_some(), "{key} missing: {doc}");
        }
        assert!(doc.get("load").is_none(), "{doc}");
    }

    #[test]
    fn the_catalogs_filters_choose_the_rows_left_out() {
        let catalog = Catalog::builtin().expect("catalog");
        let options = LegacyOptions {
            clean: true,
            variable_strategy: RestoreStrategy::Append,
            connection_strategy: RestoreStrategy::Append,
            export_dag: "backup_metadata".into(),
        };
        let reasons = |name: &str, columns: &[&str]| -> Vec<String> {
            drop_conditions(&legacy_table(name, columns, &[]), &options, &catalog)
                .into_iter()
                .map(|(condition, _)| condition)
                .collect()
        };
        let export = "s.dag_id = 'backup_metadata'".to_string();
        for name in ["job", "dag_run"] {
            assert_eq!(
                reasons(name, &["dag_id", "state"]),
                vec![export.clone()],
                "{name}"
            );
        }
        let ti = reasons("task_instance", &["dag_id", "state"]);
        assert_eq!(ti.len(), 3, "{ti:?}");
        assert_eq!(ti[0], export);
        assert!(ti[1].starts_with("s.state IN ('running'"), "{ti:?}");
        assert!(ti[2].contains("FROM dag_run d"), "{ti:?}");
        for name in ["task_fail", "xcom"] {
            let rows = reasons(name, &["dag_id", "task_id"]);
            assert_eq!(rows[0], export, "{name}");
            assert!(
                rows[1].contains("FROM task_instance ti"),
                "{name}: {rows:?}"
            );
        }
        assert!(reasons("log", &["dag_id", "dttm"]).is_empty());
        assert!(reasons("slot_pool", &["pool"]).is_empty());
    }

    #[test]
    fn strategies_protect_the_steering_variables() {
        let append = legacy_strategy(
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
        let replace = legacy_strategy(
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
            legacy_strategy("variable", "st", "key", &[], RestoreStrategy::DoNothing, "")
                .is_empty()
        );
    }
}
