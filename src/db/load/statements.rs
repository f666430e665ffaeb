//! The SQL both row sources share, built from inputs only so each form is tested without a
//! database: the emptiness check, the protected-variable clause and the variable/connection
//! strategies (DO_NOTHING / APPEND / REPLACE).

use crate::airflow::catalog::{quote_ident, quote_literal};
use crate::model::RestoreStrategy;

/// Variables that steer restores; a restore never overwrites them.
pub const PROTECTED_VARIABLES: &[&str] = &[
    "DR_VARIABLE_RESTORE_STRATEGY",
    "DR_CONNECTION_RESTORE_STRATEGY",
];

/// Columns that hold job ids without a foreign key: a restore that gives jobs other ids than
/// the source's must rewrite (or clear) them.
pub const JOB_REFERENCES: &[(&str, &str)] = &[
    ("task_instance", "job_id"),
    ("task_instance", "queued_by_job_id"),
    ("task_instance_history", "job_id"),
    ("task_instance_history", "queued_by_job_id"),
    ("dag_run", "creating_job_id"),
    ("dag_run", "scheduled_by_job_id"),
    ("trigger", "triggerer_id"),
];

/// `SELECT EXISTS` of a row of `table` that cleanup would remove (outside the catalog's `keep`
/// clause): a load into a table holding one would mix two environments.
pub fn emptiness_check(table: &str, keep: Option<&str>) -> String {
    let keep = keep
        .map(|k| format!(" WHERE ({k}) IS NOT TRUE"))
        .unwrap_or_default();
    format!("SELECT EXISTS (SELECT 1 FROM {}{keep})", quote_ident(table))
}

/// ` AND s."key" NOT IN (...)` for the `variable` table (its staged rows aliased `s`), so no
/// restore writes the variables that steer restores; empty for any other table.
pub fn protected_clause(table: &str) -> String {
    if table != "variable" {
        return String::new();
    }
    format!(
        " AND s.{} NOT IN ({})",
        quote_ident("key"),
        PROTECTED_VARIABLES
            .iter()
            .map(|v| quote_literal(v))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// `d.k = s.k AND ...` over `key`: a row of the target (`d`) and a staged row (`s`) are the
/// same row.
pub fn key_match(key: &[String]) -> String {
    key.iter()
        .map(|k| format!("d.{0} = s.{0}", quote_ident(k)))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// The staged rows (`s`) a strategy writes: under APPEND those whose key the target lacks,
/// otherwise all of them; never a protected variable.
pub fn written_rows(table: &str, key: &[String], append: bool) -> String {
    let protected = protected_clause(table);
    if append {
        format!(
            "NOT EXISTS (SELECT 1 FROM {} d WHERE {}){protected}",
            quote_ident(table),
            key_match(key)
        )
    } else {
        format!("TRUE{protected}")
    }
}

/// One strategy load: staged rows of `table` into the table, matched by `key`.
#[derive(Debug, Clone, Copy)]
pub struct StrategyLoad<'a> {
    pub table: &'a str,
    /// The staging table, quoted.
    pub stage: &'a str,
    pub key: &'a [String],
    /// The columns written, in the target and the staging table alike.
    pub columns: &'a [String],
    /// Appended to the INSERT (an ORDER BY, a RETURNING).
    pub tail: &'a str,
}

/// The statements of `strategy`: none for DO_NOTHING, an INSERT of the missing keys for
/// APPEND, a DELETE of the staged keys then an INSERT of every staged row for REPLACE.
pub fn strategy_statements(load: &StrategyLoad<'_>, strategy: RestoreStrategy) -> Vec<String> {
    let table = quote_ident(load.table);
    let stage = load.stage;
    let insert = load
        .columns
        .iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ");
    let select = load
        .columns
        .iter()
        .map(|c| format!("s.{}", quote_ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    let tail = load.tail;
    let insert_where = |append: bool| {
        format!(
            "INSERT INTO {table} ({insert}) SELECT {select} FROM {stage} s WHERE {}{tail}",
            written_rows(load.table, load.key, append)
        )
    };
    match strategy {
        RestoreStrategy::DoNothing => Vec::new(),
        RestoreStrategy::Append => vec![insert_where(true)],
        RestoreStrategy::Replace => vec![
            format!(
                "DELETE FROM {table} d USING {stage} s WHERE {}{}",
                key_match(load.key),
                protected_clause(load.table)
            ),
            insert_where(false),
        ],
    }
}

/// One upsert: staged rows (`s`) into `table` by its unique `key`.
#[derive(Debug, Clone, Copy)]
pub struct MergeLoad<'a> {
    pub table: &'a str,
    /// The staging table, quoted.
    pub stage: &'a str,
    pub key: &'a [String],
    /// The target's columns written, each from the expression at the same place of `select`.
    pub columns: &'a [String],
    pub select: &'a [String],
    /// The columns a row the target already has takes from the staged row.
    pub updated: &'a [String],
    /// Between the SELECT and the ON CONFLICT (an ORDER BY).
    pub order: &'a str,
}

/// `INSERT ... ON CONFLICT (key) DO UPDATE SET` the updated columns (`DO NOTHING` without).
pub fn merge_statement(load: &MergeLoad<'_>) -> String {
    let updates = load
        .updated
        .iter()
        .map(|c| format!("{0} = EXCLUDED.{0}", quote_ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    let action = if updates.is_empty() {
        "NOTHING".to_string()
    } else {
        format!("UPDATE SET {updates}")
    };
    let list = |columns: &[String]| {
        columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "INSERT INTO {} ({}) SELECT {} FROM {} s{} ON CONFLICT ({}) DO {action}",
        quote_ident(load.table),
        list(load.columns),
        load.select.join(", "),
        load.stage,
        load.order,
        list(load.key)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_emptiness_check_ignores_the_rows_cleanup_keeps() {
        assert_eq!(
            emptiness_check("dag_run", None),
            "SELECT EXISTS (SELECT 1 FROM \"dag_run\")"
        );
        assert_eq!(
            emptiness_check("job", Some("state = 'running'")),
            "SELECT EXISTS (SELECT 1 FROM \"job\" WHERE (state = 'running') IS NOT TRUE)"
        );
    }

    #[test]
    fn only_variables_have_protected_rows() {
        assert_eq!(
            protected_clause("variable"),
            " AND s.\"key\" NOT IN ('DR_VARIABLE_RESTORE_STRATEGY', 'DR_CONNECTION_RESTORE_STRATEGY')"
        );
        assert_eq!(protected_clause("connection"), "");
    }

    #[test]
    fn merges_update_what_the_target_takes_from_the_backup() {
        let key = strings(&["pool"]);
        let columns = strings(&["pool", "slots"]);
        let select = strings(&["s.\"pool\"", "s.\"slots\""]);
        let updated = strings(&["slots"]);
        let mut load = MergeLoad {
            table: "slot_pool",
            stage: "st",
            key: &key,
            columns: &columns,
            select: &select,
            updated: &updated,
            order: " ORDER BY s.line",
        };
        assert_eq!(
            merge_statement(&load),
            "INSERT INTO \"slot_pool\" (\"pool\", \"slots\") SELECT s.\"pool\", s.\"slots\" FROM st s ORDER BY s.line ON CONFLICT (\"pool\") DO UPDATE SET \"slots\" = EXCLUDED.\"slots\""
        );
        load.updated = &[];
        load.order = "";
        assert!(
            merge_statement(&load).ends_with("FROM st s ON CONFLICT (\"pool\") DO NOTHING"),
            "{}",
            merge_statement(&load)
        );
    }

    #[test]
    fn strategies_write_the_rows_they_promise() {
        let key = strings(&["key"]);
        let columns = strings(&["key", "val"]);
        let load = StrategyLoad {
            table: "variable",
            stage: "st",
            key: &key,
            columns: &columns,
            tail: " ORDER BY s.line",
        };
        assert!(strategy_statements(&load, RestoreStrategy::DoNothing).is_empty());
        let protected = protected_clause("variable");
        assert_eq!(
            strategy_statements(&load, RestoreStrategy::Append),
            vec![format!(
                "INSERT INTO \"variable\" (\"key\", \"val\") SELECT s.\"key\", s.\"val\" FROM st s WHERE NOT EXISTS (SELECT 1 FROM \"variable\" d WHERE d.\"key\" = s.\"key\"){protected} ORDER BY s.line"
            )]
        );
        assert_eq!(
            strategy_statements(&load, RestoreStrategy::Replace),
            vec![
                format!(
                    "DELETE FROM \"variable\" d USING st s WHERE d.\"key\" = s.\"key\"{protected}"
                ),
                format!(
                    "INSERT INTO \"variable\" (\"key\", \"val\") SELECT s.\"key\", s.\"val\" FROM st s WHERE TRUE{protected} ORDER BY s.line"
                ),
            ]
        );
        // Connections have no protected rows; a key of several columns matches on all.
        let key = strings(&["conn_id", "team"]);
        let columns = strings(&["conn_id"]);
        let replace = strategy_statements(
            &StrategyLoad {
                table: "connection",
                stage: "st",
                key: &key,
                columns: &columns,
                tail: "",
            },
            RestoreStrategy::Replace,
        );
        assert_eq!(
            replace[0],
            "DELETE FROM \"connection\" d USING st s WHERE d.\"conn_id\" = s.\"conn_id\" AND d.\"team\" = s.\"team\""
        );
        assert!(replace[1].ends_with("WHERE TRUE"), "{replace:?}");
    }
}
