//! Restore side: checked objects loaded into the target in ONE transaction, by column name,
//! ids kept, sequences moved, variable/connection strategies applied, Fernet secrets
//! re-encrypted for the target's key, active DAGs unpaused.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use sqlx::{Connection, PgConnection};
use tracing::{info, instrument};

use super::cleanup::{TableCount, cleanup};
use super::{column_list, db_error, serial_columns, table_columns};
use crate::airflow::catalog::{Catalog, RestoreMode, TableSpec, quote_ident, quote_literal};
use crate::airflow::fernet::{
    ENCRYPTED_COLUMNS, EncryptedColumn, FernetMode, FernetPlan, Rekey, encrypted_columns,
};
use crate::error::{Error, Result};
use crate::model::RestoreStrategy;
use crate::store::BackupStore;
use crate::store::manifest::{Manifest, TableEntry};
use crate::store::verify::{check_stored, open_table_object};

/// Variables that steer restores; a restore never overwrites them.
pub const PROTECTED_VARIABLES: &[&str] = &[
    "DR_VARIABLE_RESTORE_STRATEGY",
    "DR_CONNECTION_RESTORE_STRATEGY",
];

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub clean: bool,
    pub variable_strategy: RestoreStrategy,
    pub connection_strategy: RestoreStrategy,
    /// Re-encrypt Fernet secrets for the target's key, or copy the ciphertext as it is.
    pub fernet: FernetPlan,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub cleaned: Vec<TableCount>,
    pub loaded: Vec<TableCount>,
    pub skipped: Vec<String>,
    /// Restored job ids that collided with the target's kept jobs, and their new ids.
    pub renumbered_jobs: BTreeMap<i64, i64>,
    /// Rows of tables restored by key (`references` of the catalog) whose id in the target
    /// differs from the backup's, per table; the references to them follow.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub remapped_ids: BTreeMap<String, u64>,
    pub unpaused: Vec<String>,
    /// Active in the source but without a `dag` row in the target (not parsed yet).
    pub missing_dags: Vec<String>,
    /// How Fernet ciphertext was treated.
    pub fernet: FernetMode,
    /// Values re-encrypted for the target's key, per `table.column`; empty when copied.
    pub rekeyed: BTreeMap<String, u64>,
    /// Columns the target has and the backup lacks (`table.column`) given the value of
    /// Airflow's migration (the catalog's `added_columns`) on every restored row.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub added_columns: BTreeMap<String, String>,
}

/// Runs the whole restore in one transaction on `conn`. Objects must have been verified.
pub async fn restore(
    conn: &mut PgConnection,
    catalog: &Catalog,
    manifest: &Manifest,
    store: Arc<dyn BackupStore>,
    options: &RestoreOptions,
    progress: &dyn crate::progress::Progress,
) -> Result<RestoreReport> {
    let mut tx = conn
        .begin()
        .await
        .map_err(|e| db_error("begin", "restore", e))?;
    // Index builds after the loads sort in memory when they can (this transaction only).
    sqlx::query("SET LOCAL maintenance_work_mem = '256MB'")
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error("configure", "restore", e))?;
    let mut report = RestoreReport {
        cleaned: Vec::new(),
        loaded: Vec::new(),
        skipped: Vec::new(),
        renumbered_jobs: BTreeMap::new(),
        remapped_ids: BTreeMap::new(),
        unpaused: Vec::new(),
        missing_dags: Vec::new(),
        fernet: options.fernet.mode(),
        rekeyed: match options.fernet {
            FernetPlan::Reencrypt(_) => ENCRYPTED_COLUMNS.iter().map(|c| (c.name(), 0)).collect(),
            FernetPlan::Copy(_) => BTreeMap::new(),
        },
        added_columns: BTreeMap::new(),
    };
    if options.clean {
        report.cleaned = cleanup(&mut tx, catalog, false).await?;
        crate::failpoint::reach_raced("restore.cleaned").await?;
    }
    // Plan: the manifest's tables in catalog order; check they fit the target first.
    let mut plan: Vec<(&TableSpec, &TableEntry, Vec<String>)> = Vec::new();
    for spec in &catalog.tables {
        let Some(entry) = manifest.table(&spec.name) else {
            continue;
        };
        let Some(target_cols) = table_columns(&mut tx, &spec.name).await? else {
            return Err(Error::failed(
                "restore",
                &spec.name,
                "the backup has this table but the target database does not",
            ));
        };
        if let Some(missing) = entry.columns.iter().find(|c| !target_cols.contains(c)) {
            return Err(Error::failed(
                "restore",
                &spec.name,
                format!(
                    "column {missing} of the backup does not exist in the target (is the target an older Airflow version?)"
                ),
            ));
        }
        if spec.restore == RestoreMode::Copy {
            let keep = spec
                .keep
                .as_deref()
                .map(|k| format!(" WHERE ({k}) IS NOT TRUE"))
                .unwrap_or_default();
            let busy: bool = sqlx::query_scalar(&format!(
                "SELECT EXISTS (SELECT 1 FROM {}{keep})",
                quote_ident(&spec.name)
            ))
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| db_error("inspect", &spec.name, e))?;
            if busy {
                return Err(Error::failed(
                    "restore",
                    &spec.name,
                    "the target table is not empty; restore with --clean (or run `mwaa-dr cleanup` first)",
                ));
            }
        }
        plan.push((spec, entry, target_cols));
    }
    if let Some(extra) = manifest
        .tables
        .iter()
        .find(|t| catalog.table(&t.name).is_none())
    {
        report.skipped.push(extra.name.clone());
    }

    let referenced = catalog.referenced_tables();
    let total = plan.len();
    for (index, (spec, entry, target_cols)) in plan.into_iter().enumerate() {
        progress.start(&spec.name, index, total);
        progress.advance(&spec.name, entry.csv_bytes);
        if strategy_of(spec, options) == Some(RestoreStrategy::DoNothing) {
            progress.finish(&spec.name, 0);
            report.skipped.push(spec.name.clone());
            continue;
        }
        let added = spec.added_values(&target_cols, &entry.columns);
        let rows = load_table(
            &mut tx,
            spec,
            entry,
            &added,
            manifest,
            store.as_ref(),
            options,
            referenced.contains(spec.name.as_str()),
            &mut report,
        )
        .await?;
        report.loaded.push(TableCount {
            table: spec.name.clone(),
            rows,
        });
        if report.loaded.len() == 1 {
            crate::failpoint::reach_raced("restore.table_loaded").await?;
        }
    }
    if !report.renumbered_jobs.is_empty() {
        let loaded: Vec<&str> = report.loaded.iter().map(|t| t.table.as_str()).collect();
        rewrite_job_references(&mut tx, &report.renumbered_jobs, &loaded).await?;
    }
    let loaded: Vec<String> = report.loaded.iter().map(|t| t.table.clone()).collect();
    (report.unpaused, report.missing_dags) = finish(tx, &loaded, &manifest.active_dags).await?;
    Ok(report)
}

/// The end of every restore: sequences moved past the restored ids of the `loaded` tables,
/// the `active` DAGs unpaused, commit. Returns (unpaused, not in the target).
pub(crate) async fn finish(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    loaded: &[String],
    active: &[String],
) -> Result<(Vec<String>, Vec<String>)> {
    for table in loaded {
        advance_sequences(&mut tx, table).await?;
    }
    let outcome = unpause(&mut tx, active).await?;
    crate::failpoint::reach_raced("restore.before_commit").await?;
    tx.commit()
        .await
        .map_err(|e| db_error("commit", "restore", e))?;
    Ok(outcome)
}

/// The variable or connection strategy when `spec` is one of those tables.
fn strategy_of(spec: &TableSpec, options: &RestoreOptions) -> Option<RestoreStrategy> {
    match spec.name.as_str() {
        "variable" => Some(options.variable_strategy),
        "connection" => Some(options.connection_strategy),
        _ => None,
    }
}

/// The temporary table mapping a table's restored ids (backup's -> target's).
fn id_map(table: &str) -> String {
    quote_ident(&format!("mwaa_dr_ids_{table}"))
}

#[allow(clippy::too_many_arguments)]
#[instrument(skip_all, fields(table = %spec.name))]
async fn load_table(
    conn: &mut PgConnection,
    spec: &TableSpec,
    entry: &TableEntry,
    added: &[(&str, &str)],
    manifest: &Manifest,
    store: &dyn BackupStore,
    options: &RestoreOptions,
    referenced: bool,
    report: &mut RestoreReport,
) -> Result<u64> {
    let strategy = strategy_of(spec, options);
    let table = quote_ident(&spec.name);
    // The backup's columns, then the added ones the COPY leaves to their load defaults.
    let written: Vec<String> = entry
        .columns
        .iter()
        .cloned()
        .chain(added.iter().map(|(c, _)| c.to_string()))
        .collect();
    let cols = column_list(&written);
    let copied = column_list(&entry.columns);
    // Secrets are re-encrypted in a staging table, before they reach the real one.
    let rekey = options
        .fernet
        .rekey()
        .filter(|_| encrypted_columns(&spec.name).next().is_some());
    let direct = spec.restore == RestoreMode::Copy
        && spec.name != "job"
        && rekey.is_none()
        && spec.references.is_empty();
    let stage = format!("mwaa_dr_stage_{}", spec.name);
    let dest = if direct {
        table.clone()
    } else {
        sqlx::query(&format!(
            "CREATE TEMP TABLE {} (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DROP",
            quote_ident(&stage)
        ))
        .execute(&mut *conn)
        .await
        .map_err(|e| db_error("stage", &spec.name, e))?;
        quote_ident(&stage)
    };
    // A plain load goes into a table that is empty (checked above): dropping its secondary
    // indexes and building them once after the COPY is much faster than updating them row by
    // row. Inside the transaction, so a failure brings them back untouched.
    let dropped = if direct {
        drop_secondary_indexes(conn, &spec.name).await?
    } else {
        Vec::new()
    };
    // The COPY fills the added columns from their defaults: for the load they are the
    // migration's values (a NOT NULL column without a default would refuse every row). DDL
    // inside the transaction, so a failure puts the target's defaults back with the rest.
    let reset = if added.is_empty() {
        Vec::new()
    } else {
        let mut previous = Vec::new();
        if direct {
            for (column, _) in added {
                previous.push(column_default(conn, &spec.name, column).await?);
            }
        }
        let (set, reset) = load_defaults(&dest, added, &previous);
        for sql in set {
            sqlx::query(&sql)
                .execute(&mut *conn)
                .await
                .map_err(|e| db_error("set load default", &spec.name, e))?;
        }
        for (column, value) in added {
            report
                .added_columns
                .insert(format!("{}.{column}", spec.name), value.to_string());
        }
        info!(columns = ?added, "added columns get the migration's values");
        // A staging table is dropped at commit with its defaults.
        if direct { reset } else { Vec::new() }
    };
    let rows = copy_in(conn, &dest, &copied, entry, manifest, store).await?;
    for sql in reset {
        sqlx::query(&sql)
            .execute(&mut *conn)
            .await
            .map_err(|e| db_error("restore column default", &spec.name, e))?;
    }
    if direct {
        for (name, definition) in &dropped {
            sqlx::query(definition)
                .execute(&mut *conn)
                .await
                .map_err(|e| db_error("rebuild index", name, e))?;
        }
        info!(rows, indexes = dropped.len(), "loaded");
        return Ok(rows);
    }
    let stage = quote_ident(&stage);
    for (column, referenced_table) in &spec.references {
        remap_staged(
            conn,
            &stage,
            &spec.name,
            column,
            referenced_table,
            &entry.columns,
        )
        .await?;
    }
    let key_match = spec
        .key
        .iter()
        .map(|k| format!("d.{0} = s.{0}", quote_ident(k)))
        .collect::<Vec<_>>()
        .join(" AND ");
    // Columns whose values the target owns (ids not kept outside Copy mode).
    let without_id: Vec<String> = written
        .iter()
        .filter(|c| *c != "id" || spec.key.iter().any(|k| k == "id"))
        .cloned()
        .collect();
    let insert_cols = column_list(&without_id);
    let select_cols = without_id
        .iter()
        .map(|c| format!("s.{}", quote_ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    let protected = if spec.name == "variable" {
        format!(
            " AND s.{} NOT IN ({})",
            quote_ident("key"),
            PROTECTED_VARIABLES
                .iter()
                .map(|v| quote_literal(v))
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        String::new()
    };
    if let Some(rekey) = rekey {
        // Only the rows the statements below write: APPEND skips the target's keys.
        let written = match (spec.restore, strategy) {
            (RestoreMode::MissingRows, _)
            | (RestoreMode::Strategy, Some(RestoreStrategy::Append)) => {
                format!("NOT EXISTS (SELECT 1 FROM {table} d WHERE {key_match}){protected}")
            }
            _ => format!("TRUE{protected}"),
        };
        for column in encrypted_columns(&spec.name) {
            let count = rekey_staged(conn, &stage, &written, column, &entry.columns, rekey).await?;
            *report.rekeyed.entry(column.name()).or_default() += count;
        }
    }
    let renumbered = &mut report.renumbered_jobs;
    let statements: Vec<String> = match (spec.restore, strategy) {
        (RestoreMode::Copy, _) => {
            // job: restored ids that collide with the target's kept (live) jobs get new ids.
            let collisions: Vec<i64> = if spec.name == "job" {
                sqlx::query_scalar(&format!(
                    "SELECT s.id::bigint FROM {stage} s JOIN {table} d ON d.id = s.id ORDER BY s.id"
                ))
                .fetch_all(&mut *conn)
                .await
                .map_err(|e| db_error("inspect", &spec.name, e))?
            } else {
                Vec::new()
            };
            if !collisions.is_empty() {
                let top: i64 = sqlx::query_scalar(&format!(
                    "SELECT GREATEST((SELECT COALESCE(max(id), 0) FROM {stage}), (SELECT COALESCE(max(id), 0) FROM {table}))::bigint"
                ))
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| db_error("inspect", &spec.name, e))?;
                for (i, old) in collisions.iter().enumerate() {
                    let new = top + 1 + i as i64;
                    renumbered.insert(*old, new);
                    sqlx::query(&format!(
                        "UPDATE {stage} SET id = $1::int WHERE id = $2::int"
                    ))
                    .bind(new)
                    .bind(*old)
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| db_error("renumber", &spec.name, e))?;
                }
            }
            vec![format!(
                "INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage}"
            )]
        }
        (RestoreMode::MissingRows, _) | (RestoreMode::Strategy, Some(RestoreStrategy::Append)) => {
            vec![format!(
                "INSERT INTO {table} ({insert_cols}) SELECT {select_cols} FROM {stage} s WHERE NOT EXISTS (SELECT 1 FROM {table} d WHERE {key_match}){protected}"
            )]
        }
        (RestoreMode::Strategy, _) => vec![
            format!("DELETE FROM {table} d USING {stage} s WHERE {key_match}{protected}"),
            format!(
                "INSERT INTO {table} ({insert_cols}) SELECT {select_cols} FROM {stage} s WHERE TRUE{protected}"
            ),
        ],
        (RestoreMode::Merge, _) => {
            let keys = column_list(&spec.key);
            let updates = without_id
                .iter()
                .filter(|c| !spec.key.contains(c))
                .map(|c| format!("{0} = EXCLUDED.{0}", quote_ident(c)))
                .collect::<Vec<_>>()
                .join(", ");
            let action = if updates.is_empty() {
                "NOTHING".to_string()
            } else {
                format!("UPDATE SET {updates}")
            };
            vec![format!(
                "INSERT INTO {table} ({insert_cols}) SELECT {select_cols} FROM {stage} s ON CONFLICT ({keys}) DO {action}"
            )]
        }
    };
    let mut affected = 0;
    for sql in statements {
        affected = sqlx::query(&sql)
            .execute(&mut *conn)
            .await
            .map_err(|e| db_error("restore", &spec.name, e))?
            .rows_affected();
    }
    // Later tables refer to these rows by id: map the backup's ids to the target's (a row
    // the target already had by key keeps the target's id; an added one got a new id).
    if referenced
        && spec.restore != RestoreMode::Copy
        && entry.columns.iter().any(|c| c == "id")
        && !key_match.is_empty()
    {
        sqlx::query(&format!(
            "CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT s.id AS old_id, d.id AS new_id FROM {stage} s JOIN {table} d ON {key_match}",
            id_map(&spec.name)
        ))
        .execute(&mut *conn)
        .await
        .map_err(|e| db_error("map ids", &spec.name, e))?;
        let moved: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {} WHERE old_id IS DISTINCT FROM new_id",
            id_map(&spec.name)
        ))
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| db_error("map ids", &spec.name, e))?;
        if moved > 0 {
            report
                .remapped_ids
                .insert(spec.name.clone(), u64::try_from(moved).unwrap_or(0));
        }
    }
    info!(rows, affected, "loaded");
    Ok(affected)
}

/// Rewrites `column` of the staging table `stage` (quoted) from the backup's ids of
/// `referenced` to the ids those rows have in the target (the map its restore left).
async fn remap_staged(
    conn: &mut PgConnection,
    stage: &str,
    table: &str,
    column: &str,
    referenced: &str,
    backup_columns: &[String],
) -> Result<()> {
    if !backup_columns.iter().any(|c| c == column) {
        return Ok(());
    }
    let mapped: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(format!("pg_temp.{}", id_map(referenced)))
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| db_error("inspect", table, e))?;
    if !mapped {
        // The referenced table was not restored: its ids in the target are what they are.
        return Ok(());
    }
    let column = quote_ident(column);
    let updated = sqlx::query(&format!(
        "UPDATE {stage} s SET {column} = m.new_id FROM {} m WHERE s.{column} = m.old_id AND m.old_id IS DISTINCT FROM m.new_id",
        id_map(referenced)
    ))
    .execute(&mut *conn)
    .await
    .map_err(|e| db_error("map ids", table, e))?
    .rows_affected();
    info!(column = %column, referenced, updated, "references follow the target's ids");
    Ok(())
}

/// Re-encrypts `column` in the staging table `stage` (quoted, aliased `s` in `written`) from
/// the source key to the target key, in the rows `written` selects that hold ciphertext.
/// A value the source keys cannot decrypt fails the restore, naming its row.
#[instrument(skip_all, fields(table = column.table, column = column.column))]
async fn rekey_staged(
    conn: &mut PgConnection,
    stage: &str,
    written: &str,
    column: &EncryptedColumn,
    backup_columns: &[String],
    rekey: &Rekey,
) -> Result<u64> {
    let has = |name: &str| backup_columns.iter().any(|c| c == name);
    if !has(column.column) || !has(column.key) || column.flag.is_some_and(|f| !has(f)) {
        return Ok(0);
    }
    let value = quote_ident(column.column);
    let key = quote_ident(column.key);
    if column.json_is_plain {
        // Before Airflow 2.9 trigger.kwargs is json and never encrypted.
        let kind: Option<String> = sqlx::query_scalar(
            "SELECT atttypid::regtype::text FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = $2 AND NOT attisdropped",
        )
        .bind(stage)
        .bind(column.column)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| db_error("inspect", column.table, e))?;
        if kind.as_deref() != Some("text") {
            return Ok(0);
        }
    }
    let flag = column
        .flag
        .map(|f| format!(" AND s.{} IS TRUE", quote_ident(f)))
        .unwrap_or_default();
    let rows: Vec<(String, String)> = sqlx::query_as(&format!(
        "SELECT s.{key}::text, s.{value}::text FROM {stage} s WHERE ({written}) AND s.{value} IS NOT NULL AND s.{value}::text <> ''{flag}"
    ))
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| db_error("read secrets", column.table, e))?;
    let mut keys = Vec::new();
    let mut values = Vec::new();
    for (row, ciphertext) in rows {
        if column.json_is_plain && ciphertext.starts_with('{') {
            continue;
        }
        let reencrypted = rekey.reencrypt(&ciphertext).map_err(|e| {
            Error::failed(
                "re-encrypt",
                format!("{} {}={row}", column.table, column.key),
                format!(
                    "{} cannot be decrypted with the source Fernet keys (PRIMARY_FERNET_KEY, else AIRFLOW__CORE__FERNET_KEY): {e}; nothing was restored (add the key it was encrypted with to the source's key list)",
                    column.column
                ),
            )
        })?;
        keys.push(row);
        values.push(reencrypted);
    }
    if !keys.is_empty() {
        sqlx::query(&format!(
            "UPDATE {stage} s SET {value} = u.v FROM unnest($1::text[], $2::text[]) AS u(k, v) WHERE s.{key}::text = u.k"
        ))
        .bind(&keys)
        .bind(&values)
        .execute(&mut *conn)
        .await
        .map_err(|e| db_error("re-encrypt", column.table, e))?;
    }
    info!(values = keys.len(), "re-encrypted");
    Ok(keys.len() as u64)
}

/// The default expression of `column` of `table`, if it has one.
async fn column_default(
    conn: &mut PgConnection,
    table: &str,
    column: &str,
) -> Result<Option<String>> {
    sqlx::query_scalar(
        "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a \
         LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
         WHERE a.attrelid = to_regclass($1) AND a.attname = $2 AND NOT a.attisdropped",
    )
    .bind(quote_ident(table))
    .bind(column)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| db_error("inspect defaults", table, e))
    .map(Option::flatten)
}

/// The statements that make each (column, migration value) of `added` the default of
/// `dest` (quoted) for the load, and those that put back the `previous` defaults (by
/// position; a missing or `None` one is dropped).
fn load_defaults(
    dest: &str,
    added: &[(&str, &str)],
    previous: &[Option<String>],
) -> (Vec<String>, Vec<String>) {
    let mut set = Vec::new();
    let mut reset = Vec::new();
    for (i, (column, value)) in added.iter().enumerate() {
        let alter = format!("ALTER TABLE {dest} ALTER COLUMN {}", quote_ident(column));
        // A quoted literal takes the column's type, so the catalog holds values, never SQL.
        set.push(format!("{alter} SET DEFAULT {}", quote_literal(value)));
        reset.push(match previous.get(i).cloned().flatten() {
            Some(expression) => format!("{alter} SET DEFAULT {expression}"),
            None => format!("{alter} DROP DEFAULT"),
        });
    }
    (set, reset)
}

/// `COPY dest (cols) FROM STDIN` from the stored object, checking its checksum and row count.
async fn copy_in(
    conn: &mut PgConnection,
    dest: &str,
    cols: &str,
    entry: &TableEntry,
    manifest: &Manifest,
    store: &dyn BackupStore,
) -> Result<u64> {
    let mut object = open_table_object(store, manifest, entry).await?;
    let mut copy = conn
        .copy_in_raw(&format!(
            "COPY {dest} ({cols}) FROM STDIN WITH (FORMAT csv, HEADER MATCH)"
        ))
        .await
        .map_err(|e| db_error("load", &entry.name, e))?;
    if let Err(e) = copy.read_from(&mut object.csv).await {
        let _ = copy
            .abort("mwaa-dr: reading the backup object failed")
            .await;
        return Err(Error::failed("load", &object.resource, e));
    }
    let rows = copy
        .finish()
        .await
        .map_err(|e| db_error("load", &entry.name, e))?;
    // Verified before the transaction began; a change since then fails the whole restore.
    check_stored(&object, entry, "load")?;
    if rows != entry.rows {
        return Err(Error::failed(
            "load",
            &object.resource,
            format!("loaded {rows} rows, the manifest says {}", entry.rows),
        ));
    }
    Ok(rows)
}

/// References to job ids without foreign keys, in the restored tables (`loaded`: every row
/// of those is restored, apart from kept ones), follow renumbered jobs.
async fn rewrite_job_references(
    conn: &mut PgConnection,
    renumbered: &BTreeMap<i64, i64>,
    loaded: &[&str],
) -> Result<()> {
    const REFERENCES: &[(&str, &str)] = &[
        ("task_instance", "job_id"),
        ("task_instance", "queued_by_job_id"),
        ("task_instance_history", "job_id"),
        ("task_instance_history", "queued_by_job_id"),
        ("dag_run", "creating_job_id"),
        ("dag_run", "scheduled_by_job_id"),
        ("trigger", "triggerer_id"),
    ];
    for (table, column) in REFERENCES {
        if !loaded.contains(table) {
            continue;
        }
        let Some(cols) = table_columns(conn, table).await? else {
            continue;
        };
        if !cols.iter().any(|c| c == column) {
            continue;
        }
        for (old, new) in renumbered {
            sqlx::query(&format!(
                "UPDATE {} SET {1} = $1::int WHERE {1} = $2::int",
                quote_ident(table),
                quote_ident(column)
            ))
            .bind(new)
            .bind(old)
            .execute(&mut *conn)
            .await
            .map_err(|e| db_error("renumber job references", table, e))?;
        }
    }
    Ok(())
}

/// Moves every serial sequence of `table` past the largest id now in it.
pub(crate) async fn advance_sequences(conn: &mut PgConnection, table: &str) -> Result<()> {
    for (column, sequence) in serial_columns(conn, table).await? {
        let seq = quote_literal(&sequence);
        sqlx::query(&format!(
            "SELECT setval({seq}, m) FROM (SELECT max({col}) AS m FROM {tbl}) x WHERE m IS NOT NULL AND m >= (SELECT last_value FROM {seq_ident})",
            col = quote_ident(&column),
            tbl = quote_ident(table),
            seq_ident = sequence,
        ))
        .execute(&mut *conn)
        .await
        .map_err(|e| db_error("advance sequence", &sequence, e))?;
    }
    Ok(())
}

/// Unpauses the DAGs active in the source that the target knows; returns (unpaused, missing).
pub(crate) async fn unpause(
    conn: &mut PgConnection,
    active: &[String],
) -> Result<(Vec<String>, Vec<String>)> {
    if active.is_empty() || table_columns(conn, "dag").await?.is_none() {
        return Ok((Vec::new(), active.to_vec()));
    }
    let mut unpaused: Vec<String> = sqlx::query_scalar(
        "UPDATE dag SET is_paused = false WHERE dag_id = ANY($1) RETURNING dag_id",
    )
    .bind(active)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| db_error("unpause", "dag", e))?;
    unpaused.sort();
    let missing = active
        .iter()
        .filter(|d| !unpaused.contains(d))
        .cloned()
        .collect();
    Ok((unpaused, missing))
}

/// Drops the indexes of `table` that no constraint owns (primary keys, unique constraints and
/// what foreign keys rely on stay); returns (name, CREATE INDEX statement) to rebuild them.
async fn drop_secondary_indexes(
    conn: &mut PgConnection,
    table: &str,
) -> Result<Vec<(String, String)>> {
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i \
         WHERE i.indrelid = to_regclass($1) \
         AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)",
    )
    .bind(quote_ident(table))
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| db_error("inspect indexes", table, e))?;
    for (name, _) in &indexes {
        sqlx::query(&format!("DROP INDEX {name}"))
            .execute(&mut *conn)
            .await
            .map_err(|e| db_error("drop index for the load", name, e))?;
    }
    Ok(indexes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_columns_default_to_the_migrations_value_for_the_load_only() {
        let (set, reset) = load_defaults(
            "\"slot_pool\"",
            &[("include_deferred", "false"), ("clear_number", "0")],
            &[None, Some("0".into())],
        );
        assert_eq!(
            set,
            vec![
                "ALTER TABLE \"slot_pool\" ALTER COLUMN \"include_deferred\" SET DEFAULT 'false'",
                "ALTER TABLE \"slot_pool\" ALTER COLUMN \"clear_number\" SET DEFAULT '0'",
            ]
        );
        assert_eq!(
            reset,
            vec![
                "ALTER TABLE \"slot_pool\" ALTER COLUMN \"include_deferred\" DROP DEFAULT",
                "ALTER TABLE \"slot_pool\" ALTER COLUMN \"clear_number\" SET DEFAULT 0",
            ]
        );
        // A value is a literal, whatever the catalog holds.
        let (set, _) = load_defaults("\"t\"", &[("c", "x'); DROP TABLE t; --")], &[]);
        assert_eq!(
            set,
            vec!["ALTER TABLE \"t\" ALTER COLUMN \"c\" SET DEFAULT 'x''); DROP TABLE t; --'"]
        );
    }
}
