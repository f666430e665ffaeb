//! Emptying the restorable tables of a metadata database, keeping what the live environment
//! needs (the catalog's `keep` clauses: its running jobs, default_pool, log_template,
//! variables and connections; and the rows of the DR DAG run executing the cleanup).

use std::collections::BTreeSet;

use serde::Serialize;
use sqlx::PgConnection;

use super::{db_error, table_columns};
use crate::airflow::catalog::{Catalog, quote_ident};
use crate::error::Result;

#[derive(Debug, Clone, Serialize)]
pub struct TableCount {
    pub table: String,
    pub rows: u64,
}

/// Deletes (or, with `dry_run`, counts) the rows cleanup removes, children before parents.
/// A table of `replaced` (a restore's shadow table replaces it whole at its switch) is
/// locked and its kept rows copied into its shadow instead: deleting the others row by row
/// would be wasted work. Runs on `conn` as it is: the caller owns the transaction.
pub async fn cleanup(
    conn: &mut PgConnection,
    catalog: &Catalog,
    dry_run: bool,
    replaced: &BTreeSet<String>,
) -> Result<Vec<TableCount>> {
    let mut counts = Vec::new();
    for spec in catalog.tables.iter().rev() {
        if spec.keep.as_deref() == Some("true") {
            continue;
        }
        let Some(columns) = table_columns(conn, &spec.name).await? else {
            continue;
        };
        let condition = catalog
            .keep_condition(spec, &columns)
            .map(|keep| format!(" WHERE ({keep}) IS NOT TRUE"))
            .unwrap_or_default();
        let table = quote_ident(&spec.name);
        let rows = if !dry_run && replaced.contains(&spec.name) {
            let keep = catalog.keep_condition(spec, &columns);
            super::shadow::carry_kept(conn, &spec.name, &columns, keep.as_deref()).await?
        } else if dry_run {
            let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}{condition}"))
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| db_error("count", &spec.name, e))?;
            u64::try_from(n).unwrap_or(0)
        } else {
            sqlx::query(&format!("DELETE FROM {table}{condition}"))
                .execute(&mut *conn)
                .await
                .map_err(|e| db_error("clean up", &spec.name, e))?
                .rows_affected()
        };
        counts.push(TableCount {
            table: spec.name.clone(),
            rows,
        });
        if counts.len() == 1 && !dry_run {
            crate::failpoint::reach_raced("cleanup.table_deleted").await?;
        }
    }
    Ok(counts)
}
