//! The table catalog: which tables a backup holds, how each is filtered, restored and
//! cleaned up. Built in: `config/tables.json` for Airflow 2 and `config/tables-3.json` for
//! Airflow 3 (a different schema), chosen by the major version of the database's Airflow.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::model::DagRunRef;

/// The built-in catalogs by the first Airflow major version each one serves, highest first.
const BUILTIN: &[(u64, &str, &str)] = &[
    (
        3,
        "config/tables-3.json",
        include_str!("../../config/tables-3.json"),
    ),
    (
        2,
        "config/tables.json",
        include_str!("../../config/tables.json"),
    ),
];

/// Copied tables (ids kept) whose rows a restore may keep in the target (the DR DAGs' own
/// runs, which Airflow saves by id while it executes them): a restored row whose id a kept
/// row holds gets a new id instead, so `references` to them may follow.
pub const RENUMBERED_COPY_TABLES: &[&str] = &["dag_run"];

/// How `restore` loads a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RestoreMode {
    /// Plain load with ids kept; the target table must be empty (apart from kept rows).
    #[default]
    Copy,
    /// Add the rows whose key the target lacks; keep the target's rows.
    MissingRows,
    /// Upsert by key; ids are the target's.
    Merge,
    /// The variable / connection restore strategy, by key.
    Strategy,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TableSpec {
    pub name: String,
    #[serde(default)]
    pub filter: Option<String>,
    #[serde(default)]
    pub restore: RestoreMode,
    #[serde(default)]
    pub key: Vec<String>,
    /// Rows cleanup keeps (a WHERE clause); absent: cleanup empties the table.
    #[serde(default)]
    pub keep: Option<String>,
    #[serde(default)]
    pub exclude_columns: Vec<String>,
    /// Columns holding ids of an earlier table restored by key (`missing_rows` / `merge`),
    /// column -> table: where that table's rows got the target's ids, these follow.
    #[serde(default)]
    pub references: BTreeMap<String, String>,
    /// Columns a later Airflow added, with the value its migration gave the rows already
    /// there: a backup of an older Airflow lacks them, and its rows get that value.
    #[serde(default)]
    pub added_columns: BTreeMap<String, AddedColumn>,
}

/// A column an Airflow migration added to a restored table, and what it gave existing rows.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddedColumn {
    /// The value in PostgreSQL's input form for the column's type (`false`, `0`).
    pub value: String,
    /// The first Airflow version with the column.
    pub since: String,
    /// The migration the value comes from (alembic revision and name).
    #[serde(default)]
    pub source: Option<String>,
}

impl TableSpec {
    /// (column, migration value) of the `added_columns` the target has and the backup lacks,
    /// in the target's column order.
    pub fn added_values<'a>(
        &'a self,
        target: &[String],
        backup: &[String],
    ) -> Vec<(&'a str, &'a str)> {
        target
            .iter()
            .filter(|c| !backup.contains(c))
            .filter_map(|c| {
                self.added_columns
                    .get_key_value(c)
                    .map(|(name, added)| (name.as_str(), added.value.as_str()))
            })
            .collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Catalog {
    pub inflight_states: Vec<String>,
    pub tables: Vec<TableSpec>,
    /// The DR DAGs whose own rows a clean restore or cleanup keeps; not part of the file.
    #[serde(skip)]
    pub dr_dags: DrDags,
}

/// The DR DAGs (backup, restore, cleanup) and the DAG run executing this process
/// (`MWAA_DR_DAG_RUN`): a clean restore or cleanup run by a DR DAG must not delete the rows
/// Airflow is using to run it, and a backup never records a DR DAG as one to unpause.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrDags {
    /// METADATA_EXPORT_DAG_NAME, METADATA_IMPORT_DAG_NAME, METADATA_CLEANUP_DAG_NAME.
    pub names: Vec<String>,
    /// The executing run.
    pub run: Option<DagRunRef>,
}

impl DrDags {
    /// The condition, on unqualified columns of a table with `columns`, true for the rows
    /// to keep: the executing run's own (its dag_run, task instances and what hangs off
    /// them) and the DR DAGs' in-flight runs and task instances.
    pub fn keep(&self, columns: &[String], inflight_states: &[String]) -> Option<String> {
        let has = |c: &str| columns.iter().any(|x| x == c);
        let mut keep = Vec::new();
        if let Some(run) = &self.run {
            let (dag, run) = (quote_literal(&run.dag_id), quote_literal(&run.run_id));
            if has("dag_id") && has("run_id") {
                keep.push(format!("(dag_id = {dag} AND run_id = {run})"));
            } else if has("ti_id") {
                keep.push(format!(
                    "ti_id IN (SELECT id FROM task_instance WHERE dag_id = {dag} AND run_id = {run})"
                ));
            } else if has("dag_run_id") {
                keep.push(format!(
                    "dag_run_id IN (SELECT id FROM dag_run WHERE dag_id = {dag} AND run_id = {run})"
                ));
            }
        }
        if !self.names.is_empty() && !inflight_states.is_empty() && has("dag_id") && has("state") {
            let names = self
                .names
                .iter()
                .map(|n| quote_literal(n))
                .collect::<Vec<_>>();
            let states = inflight_states
                .iter()
                .map(|s| quote_literal(s))
                .collect::<Vec<_>>();
            keep.push(format!(
                "(dag_id IN ({}) AND state IN ({}))",
                names.join(", "),
                states.join(", ")
            ));
        }
        (!keep.is_empty()).then(|| keep.join(" OR "))
    }
}

impl Catalog {
    /// The built-in catalog for Airflow 2.
    pub fn builtin() -> Result<Catalog> {
        Self::builtin_for("2")
    }

    /// The built-in catalog for an Airflow version: that of the highest major version not
    /// above the version's own (a later major falls back to the newest catalog).
    pub fn builtin_for(version: &str) -> Result<Catalog> {
        let major = major_version(version);
        let (_, origin, text) = BUILTIN
            .iter()
            .find(|(first, _, _)| major >= *first)
            .unwrap_or(&BUILTIN[BUILTIN.len() - 1]);
        Self::parse(text, &format!("{origin} (built in)"))
    }

    pub fn parse(text: &str, origin: &str) -> Result<Catalog> {
        let catalog: Catalog = serde_json::from_str(text)
            .map_err(|e| Error::failed("read table catalog", origin, e))?;
        let invalid = |problem: String| Error::failed("read table catalog", origin, problem);
        for (index, t) in catalog.tables.iter().enumerate() {
            table_problem(t).map_err(invalid)?;
            for (column, referenced) in &t.references {
                reference_problem(&catalog.tables[..index], column, referenced)
                    .map_err(|p| invalid(format!("table {}: reference {column} {p}", t.name)))?;
            }
        }
        Ok(catalog)
    }

    /// Tables whose restored ids other tables refer to (`references`).
    pub fn referenced_tables(&self) -> std::collections::BTreeSet<&str> {
        self.tables
            .iter()
            .flat_map(|t| t.references.values().map(String::as_str))
            .collect()
    }

    pub fn table(&self, name: &str) -> Option<&TableSpec> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// The rows of `spec`'s table (with `columns`) that cleanup keeps and a restore's
    /// emptiness check allows: the catalog's `keep` clause, and the DR DAGs' own rows.
    pub fn keep_condition(&self, spec: &TableSpec, columns: &[String]) -> Option<String> {
        let dr = self.dr_dags.keep(columns, &self.inflight_states);
        match (spec.keep.as_deref(), dr) {
            (Some(keep), Some(dr)) => Some(format!("({keep}) OR {dr}")),
            (Some(keep), None) => Some(keep.to_string()),
            (None, dr) => dr,
        }
    }

    /// The table's filter with its placeholders filled in; `columns` are the table's columns
    /// in the source (`{settled_ti}` follows how the table refers to its task instance).
    pub fn render_filter(
        &self,
        spec: &TableSpec,
        export_dag: &str,
        columns: &[String],
    ) -> Option<String> {
        let states = self
            .inflight_states
            .iter()
            .map(|s| quote_literal(s))
            .collect::<Vec<_>>()
            .join(", ");
        let has = |c: &str| columns.iter().any(|x| x == c);
        // Airflow 3 keys task_instance_note and task_reschedule by the task instance's uuid
        // (ti_id) alone: the row goes along exactly when its task instance does.
        let settled = if has("ti_id") && !has("dag_id") {
            "EXISTS (SELECT 1 FROM task_instance ti WHERE ti.id = t.ti_id AND ti.dag_id <> {export_dag} AND (ti.state IS NULL OR ti.state NOT IN ({inflight_states})))"
        } else {
            "t.dag_id <> {export_dag} AND NOT EXISTS (SELECT 1 FROM task_instance ti WHERE ti.dag_id = t.dag_id AND ti.task_id = t.task_id AND ti.run_id = t.run_id AND ti.map_index = t.map_index AND ti.state IN ({inflight_states}))"
        };
        spec.filter.as_ref().map(|f| {
            f.replace("{settled_ti}", settled)
                .replace("{inflight_states}", &states)
                .replace("{export_dag}", &quote_literal(export_dag))
        })
    }
}

/// A SQL string literal.
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A SQL identifier, quoted.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The major version of a dotted version string (`3.0.6` -> 3); 0 when it has none.
pub fn major_version(version: &str) -> u64 {
    version
        .split('.')
        .next()
        .and_then(|m| m.trim().parse().ok())
        .unwrap_or(0)
}

/// A dotted version of numbers (`2.7.0`).
fn is_version(text: &str) -> bool {
    text.split('.')
        .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
}

/// What is wrong with one table's entry on its own: names, added columns, a key its mode needs.
fn table_problem(t: &TableSpec) -> std::result::Result<(), String> {
    if !is_identifier(&t.name)
        || t.key
            .iter()
            .chain(&t.exclude_columns)
            .any(|c| !is_identifier(c))
    {
        return Err(format!(
            "table {} has a name that is not a plain SQL identifier",
            t.name
        ));
    }
    for (column, added) in &t.added_columns {
        if !is_identifier(column) {
            return Err(format!(
                "table {}: added column {column} is not a plain SQL identifier",
                t.name
            ));
        }
        if !is_version(&added.since) {
            return Err(format!(
                "table {}: added column {column} has since {:?}, not an Airflow version such as 2.7.0",
                t.name, added.since
            ));
        }
    }
    if matches!(
        t.restore,
        RestoreMode::MissingRows | RestoreMode::Merge | RestoreMode::Strategy
    ) && t.key.is_empty()
    {
        return Err(format!("table {} needs a key for its restore mode", t.name));
    }
    Ok(())
}

/// Why a reference to `referenced` cannot be followed from the tables listed before it: it
/// must be listed earlier and give its restored rows the target's ids.
fn reference_problem(
    earlier: &[TableSpec],
    column: &str,
    referenced: &str,
) -> std::result::Result<(), String> {
    if !is_identifier(column) || !is_identifier(referenced) {
        return Err("is not a plain SQL identifier".to_string());
    }
    let Some(e) = earlier.iter().find(|e| e.name == referenced) else {
        return Err(format!(
            "refers to {referenced}, which is not listed before it"
        ));
    };
    let renumbered = matches!(e.restore, RestoreMode::MissingRows | RestoreMode::Merge)
        || (e.restore == RestoreMode::Copy && RENUMBERED_COPY_TABLES.contains(&e.name.as_str()));
    if !renumbered {
        return Err(format!(
            "refers to {referenced}, whose restore mode keeps the backup's ids (only missing_rows and merge give rows the target's ids, and among copied tables {})",
            RENUMBERED_COPY_TABLES.join(", ")
        ));
    }
    Ok(())
}

fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_has_the_originals_tables() {
        let catalog = Catalog::builtin().expect("catalog parses");
        for name in [
            "variable",
            "connection",
            "slot_pool",
            "log",
            "job",
            "dag_run",
            "trigger",
            "task_instance",
            "task_fail",
            "xcom",
        ] {
            assert!(catalog.table(name).is_some(), "{name} missing");
        }
    }

    #[test]
    fn filters_render_with_quoted_values() {
        let catalog = Catalog::builtin().expect("catalog parses");
        let ti = catalog.table("task_instance").expect("task_instance");
        let filter = catalog.render_filter(ti, "o'brien", &[]).expect("filter");
        assert!(filter.contains("'o''brien'"), "{filter}");
        assert!(filter.contains("'up_for_reschedule'"), "{filter}");
        let xcom = catalog.table("xcom").expect("xcom");
        let filter = catalog
            .render_filter(xcom, "backup_metadata", &columns(&["dag_id", "task_id"]))
            .expect("filter");
        assert!(filter.contains("NOT EXISTS"), "{filter}");
        assert!(!filter.contains('{'), "{filter}");
    }

    fn columns(names: &[&str]) -> Vec<String> {
        names.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn the_catalog_follows_the_major_version() {
        let two = Catalog::builtin_for("2.10.3").expect("2.x catalog");
        assert!(two.table("task_fail").is_some());
        assert!(two.table("asset").is_none());
        let three = Catalog::builtin_for("3.0.6").expect("3.x catalog");
        for name in [
            "backfill",
            "backfill_dag_run",
            "asset",
            "asset_event",
            "dagrun_asset_event",
            "task_instance_note",
        ] {
            assert!(three.table(name).is_some(), "{name} missing");
        }
        // The target's own: DAG definitions, and triggers (deferred tasks are never backed up).
        for name in [
            "dag",
            "dag_version",
            "serialized_dag",
            "trigger",
            "task_fail",
        ] {
            assert!(three.table(name).is_none(), "{name} listed");
        }
        assert_eq!(
            three.table("task_instance").expect("ti").exclude_columns,
            vec!["dag_version_id", "trigger_id"]
        );
        // A later major uses the newest catalog.
        let four = Catalog::builtin_for("4.0.0").expect("4.x");
        assert!(four.table("asset").is_some());
        assert_eq!(major_version("3.0.6"), 3);
        assert_eq!(major_version("nonsense"), 0);
        assert_eq!(
            three.referenced_tables().into_iter().collect::<Vec<_>>(),
            vec!["asset", "asset_alias", "dag_run"]
        );
    }

    #[test]
    fn settled_ti_follows_a_ti_id_reference() {
        let catalog = Catalog::builtin_for("3.0.6").expect("catalog");
        let note = catalog.table("task_instance_note").expect("note");
        let filter = catalog
            .render_filter(
                note,
                "backup_metadata",
                &columns(&["ti_id", "user_id", "content"]),
            )
            .expect("filter");
        assert!(filter.contains("ti.id = t.ti_id"), "{filter}");
        assert!(filter.contains("'backup_metadata'"), "{filter}");
        assert!(filter.contains("'deferred'"), "{filter}");
        assert!(!filter.contains("t.dag_id"), "{filter}");
        let history = catalog.table("task_instance_history").expect("tih");
        let filter = catalog
            .render_filter(
                history,
                "backup_metadata",
                &columns(&[
                    "task_instance_id",
                    "dag_id",
                    "task_id",
                    "run_id",
                    "map_index",
                ]),
            )
            .expect("filter");
        assert!(filter.contains("ti.map_index = t.map_index"), "{filter}");
    }

    #[test]
    fn added_columns_carry_the_migrations_values() {
        let catalog = Catalog::builtin().expect("catalog parses");
        let pool = catalog.table("slot_pool").expect("slot_pool");
        let target = columns(&["id", "pool", "slots", "description", "include_deferred"]);
        assert_eq!(
            pool.added_values(&target, &columns(&["id", "pool", "slots", "description"])),
            vec![("include_deferred", "false")]
        );
        // A backup that has the column keeps its own values; a target without it gets none.
        assert!(pool.added_values(&target, &target).is_empty());
        assert!(
            pool.added_values(&target[..4], &columns(&["id", "pool"]))
                .is_empty()
        );
        let run = catalog.table("dag_run").expect("dag_run");
        assert_eq!(
            run.added_values(&columns(&["id", "clear_number"]), &columns(&["id"])),
            vec![("clear_number", "0")]
        );
        assert_eq!(run.added_columns["clear_number"].since, "2.8.0");
    }

    #[test]
    fn added_columns_are_checked() {
        let ok = r#"{"inflight_states": [], "tables": [{"name": "slot_pool",
            "added_columns": {"include_deferred": {"value": "false", "since": "2.7.0"}}}]}"#;
        assert!(Catalog::parse(ok, "test").is_ok());
        for (bad, says) in [
            (
                r#"{"Include": {"value": "false", "since": "2.7.0"}}"#,
                "not a plain SQL identifier",
            ),
            (
                r#"{"include_deferred": {"value": "false", "since": "2.7"}}"#,
                "",
            ),
            (
                r#"{"include_deferred": {"value": "false", "since": "latest"}}"#,
                "not an Airflow version",
            ),
            (r#"{"include_deferred": {"value": "false"}}"#, "since"),
            (
                r#"{"include_deferred": {"value": "false", "since": "2.7.0", "default": "x"}}"#,
                "unknown field",
            ),
        ] {
            let text = format!(
                r#"{{"inflight_states": [], "tables": [{{"name": "slot_pool", "added_columns": {bad}}}]}}"#
            );
            match Catalog::parse(&text, "test") {
                Ok(_) if says.is_empty() => {}
                Ok(_) => panic!("accepted {bad}"),
                Err(e) => assert!(e.to_string().contains(says), "{bad}: {e}"),
            }
        }
    }

    #[test]
    fn references_must_name_an_earlier_table_restored_by_key() {
        let ok = r#"{"inflight_states": [], "tables": [
            {"name": "asset", "restore": "missing_rows", "key": ["name", "uri"]},
            {"name": "asset_event", "references": {"asset_id": "asset"}}]}"#;
        assert!(Catalog::parse(ok, "test").is_ok());
        let later = r#"{"inflight_states": [], "tables": [
            {"name": "asset_event", "references": {"asset_id": "asset"}},
            {"name": "asset", "restore": "missing_rows", "key": ["name", "uri"]}]}"#;
        let e = Catalog::parse(later, "test")
            .expect_err("later")
            .to_string();
        assert!(e.contains("not listed before"), "{e}");
        let copied = r#"{"inflight_states": [], "tables": [
            {"name": "asset"},
            {"name": "asset_event", "references": {"asset_id": "asset"}}]}"#;
        let e = Catalog::parse(copied, "test")
            .expect_err("copy")
            .to_string();
        assert!(e.contains("keeps the backup's ids"), "{e}");
        let runs = r#"{"inflight_states": [], "tables": [
            {"name": "dag_run"},
            {"name": "xcom", "references": {"dag_run_id": "dag_run"}}]}"#;
        assert!(Catalog::parse(runs, "test").is_ok());
    }

    #[test]
    fn dr_dags_keep_their_running_rows_and_those_of_the_executing_run() {
        let cols = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let states = vec!["running".to_string()];
        let none = DrDags::default();
        assert_eq!(
            none.keep(&cols(&["dag_id", "run_id", "state"]), &states),
            None
        );
        let dr = DrDags {
            names: vec!["backup_metadata".into(), "restore_metadata".into()],
            run: Some(DagRunRef::parse("restore_metadata/manual__it's").expect("parses")),
        };
        assert_eq!(
            dr.keep(&cols(&["dag_id", "run_id", "state"]), &states)
                .as_deref(),
            Some(
                "(dag_id = 'restore_metadata' AND run_id = 'manual__it''s') OR (dag_id IN ('backup_metadata', 'restore_metadata') AND state IN ('running'))"
            )
        );
        let ti_note = dr
            .keep(&cols(&["ti_id", "content"]), &states)
            .expect("keeps");
        assert!(
            ti_note.starts_with("ti_id IN (SELECT id FROM task_instance"),
            "{ti_note}"
        );
        let note = dr
            .keep(&cols(&["dag_run_id", "content"]), &states)
            .expect("keeps");
        assert!(
            note.starts_with("dag_run_id IN (SELECT id FROM dag_run"),
            "{note}"
        );
        assert_eq!(dr.keep(&cols(&["key", "val"]), &states), None);
    }
}
