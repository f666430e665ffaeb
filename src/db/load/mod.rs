//! The restore engine both backup kinds go through: one transaction, cleanup, the emptiness
//! checks, COPY from a row source (a manifest's objects or the original library's files),
//! the shared statements, sequences moved past the restored ids, active DAGs unpaused, commit.

pub mod statements;

use std::collections::BTreeSet;

use async_trait::async_trait;
use serde::Serialize;
use sqlx::postgres::PgCopyIn;
use sqlx::{Connection, PgConnection, Postgres, Transaction};

use super::cleanup::{TableCount, cleanup};
use super::{column_list, db_error, serial_columns, table_columns};
use crate::airflow::catalog::{Catalog, quote_ident, quote_literal};
use crate::error::{Error, Result};

pub use statements::{JOB_REFERENCES, PROTECTED_VARIABLES};

/// What every restore reports; each backup kind's report extends it (and derefs to it).
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadReport {
    pub cleaned: Vec<TableCount>,
    pub loaded: Vec<TableCount>,
    /// Not restored: the variable/connection tables under DO_NOTHING, tables the catalog
    /// does not know.
    pub skipped: Vec<String>,
    pub unpaused: Vec<String>,
    /// Active in the source but without a `dag` row in the target (not parsed yet).
    pub missing_dags: Vec<String>,
}

impl LoadReport {
    /// Counts `rows` written to `table`.
    pub fn loaded(&mut self, table: &str, rows: u64) {
        self.loaded.push(TableCount {
            table: table.to_string(),
            rows,
        });
    }

    fn loaded_tables(&self) -> Vec<String> {
        self.loaded.iter().map(|t| t.table.clone()).collect()
    }
}

/// Implements `Deref`/`DerefMut` to the `LoadReport` in field `$field` of a report.
macro_rules! extends_load_report {
    ($report:ty, $field:ident) => {
        impl std::ops::Deref for $report {
            type Target = $crate::db::load::LoadReport;
            fn deref(&self) -> &Self::Target {
                &self.$field
            }
        }
        impl std::ops::DerefMut for $report {
            fn deref_mut(&mut self) -> &mut Self::Target {
                &mut self.$field
            }
        }
    };
}
pub(crate) use extends_load_report;

/// Where the rows of a table come from: the bytes of a COPY into the target (or its staging
/// table) and the checks around it. The loader owns the COPY; a source only fills it.
#[async_trait]
pub trait RowSource: Send + Sync {
    /// What the source needs to know of one table.
    type Table: Sync;
    /// What sending learned, for the check after the COPY.
    type Sent: Send;

    /// The table, as messages name it.
    fn name<'t>(&self, table: &'t Self::Table) -> &'t str;
    /// The COPY's columns, in the order of the bytes.
    fn columns(&self, table: &Self::Table) -> Vec<String>;
    /// The COPY's options for those bytes.
    fn options(&self) -> &'static str;
    /// Sends every row of `table` into `copy`.
    async fn send(
        &mut self,
        table: &Self::Table,
        copy: &mut PgCopyIn<&mut PgConnection>,
    ) -> Result<Self::Sent>;
    /// After PostgreSQL took `rows` rows: that they are what the source holds.
    fn check(&self, table: &Self::Table, sent: Self::Sent, rows: u64) -> Result<()>;
    /// A COPY PostgreSQL refused, named as precisely as the source can.
    async fn refused(&self, table: &Self::Table, err: sqlx::Error) -> Error;
}

/// `COPY dest (columns) FROM STDIN` filled by `source`; returns the rows PostgreSQL took.
pub async fn copy_rows<S: RowSource>(
    conn: &mut PgConnection,
    dest: &str,
    source: &mut S,
    table: &S::Table,
) -> Result<u64> {
    let name = source.name(table).to_string();
    let mut copy = conn
        .copy_in_raw(&format!(
            "COPY {dest} ({}) FROM STDIN WITH ({})",
            column_list(&source.columns(table)),
            source.options()
        ))
        .await
        .map_err(|e| db_error("load", &name, e))?;
    let sent = match source.send(table, &mut copy).await {
        Ok(sent) => sent,
        Err(err) => {
            let _ = copy.abort(format!("mwaa-dr: reading {name} failed")).await;
            return Err(err);
        }
    };
    let rows = match copy.finish().await {
        Ok(rows) => rows,
        Err(err) => return Err(source.refused(table, err).await),
    };
    source.check(table, sent, rows)?;
    Ok(rows)
}

/// Opens the restore's transaction and, with `clean`, empties the restorable tables in it.
pub async fn begin<'c>(
    conn: &'c mut PgConnection,
    catalog: &Catalog,
    clean: bool,
) -> Result<(Transaction<'c, Postgres>, Vec<TableCount>)> {
    let mut tx = open(conn).await?;
    let mut cleaned = Vec::new();
    if clean {
        cleaned = clean_up(&mut tx, catalog, &BTreeSet::new()).await?;
    }
    Ok((tx, cleaned))
}

/// Opens the restore's transaction.
pub async fn open(conn: &mut PgConnection) -> Result<Transaction<'_, Postgres>> {
    let mut tx = conn
        .begin()
        .await
        .map_err(|e| db_error("begin", "restore", e))?;
    // Index builds after the loads sort in memory when they can (this transaction only).
    sqlx::query("SET LOCAL maintenance_work_mem = '256MB'")
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error("configure", "restore", e))?;
    Ok(tx)
}

/// A clean restore's cleanup, in its transaction: empties the restorable tables, except
/// those `replaced` by their shadow tables, whose kept rows move into the shadow instead.
pub async fn clean_up(
    tx: &mut PgConnection,
    catalog: &Catalog,
    replaced: &BTreeSet<String>,
) -> Result<Vec<TableCount>> {
    let cleaned = cleanup(tx, catalog, false, replaced).await?;
    crate::failpoint::reach_raced("restore.cleaned").await?;
    Ok(cleaned)
}

/// Fails when `table` holds rows cleanup would remove (those outside `keep`).
pub async fn ensure_empty(conn: &mut PgConnection, table: &str, keep: Option<&str>) -> Result<()> {
    let busy: bool = sqlx::query_scalar(&statements::emptiness_check(table, keep))
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| db_error("inspect", table, e))?;
    if busy {
        return Err(Error::failed(
            "restore",
            table,
            "the target table is not empty; restore with --clean (or run `mwaa-dr cleanup` first)",
        ));
    }
    Ok(())
}

/// The end of every restore: sequences moved past the restored ids of the loaded tables, the
/// `active` DAGs unpaused (into `report`), commit.
pub async fn finish(
    mut tx: Transaction<'_, Postgres>,
    report: &mut LoadReport,
    active: &[String],
) -> Result<()> {
    for table in report.loaded_tables() {
        advance_sequences(&mut tx, &table).await?;
    }
    (report.unpaused, report.missing_dags) = unpause(&mut tx, active).await?;
    crate::failpoint::reach_raced("restore.before_commit").await?;
    tx.commit()
        .await
        .map_err(|e| db_error("commit", "restore", e))?;
    Ok(())
}

/// The job-id columns (`JOB_REFERENCES`) of `loaded` tables that `conn` has.
pub async fn job_references(
    conn: &mut PgConnection,
    loaded: &[&str],
) -> Result<Vec<(&'static str, &'static str)>> {
    let mut present = Vec::new();
    for (table, column) in JOB_REFERENCES {
        if !loaded.contains(table) {
            continue;
        }
        if let Some(cols) = table_columns(conn, table).await?
            && cols.iter().any(|c| c == column)
        {
            present.push((*table, *column));
        }
    }
    Ok(present)
}

/// Moves every serial sequence of `table` past the largest id now in it.
pub async fn advance_sequences(conn: &mut PgConnection, table: &str) -> Result<()> {
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
pub async fn unpause(
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
