//! The table catalog (`config/tables.json`): which tables a backup holds, how each is
//! filtered, restored and cleaned up.

use serde::Deserialize;

use crate::error::{Error, Result};

const BUILTIN: &str = include_str!("../../config/tables.json");

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
}

#[derive(Debug, Clone, Deserialize)]
pub struct Catalog {
    pub inflight_states: Vec<String>,
    pub tables: Vec<TableSpec>,
}

impl Catalog {
    pub fn builtin() -> Result<Catalog> {
        Self::parse(BUILTIN, "config/tables.json (built in)")
    }

    pub fn parse(text: &str, origin: &str) -> Result<Catalog> {
        let catalog: Catalog = serde_json::from_str(text)
            .map_err(|e| Error::failed("read table catalog", origin, e))?;
        for t in &catalog.tables {
            if !is_identifier(&t.name)
                || t.key
                    .iter()
                    .chain(&t.exclude_columns)
                    .any(|c| !is_identifier(c))
            {
                return Err(Error::failed(
                    "read table catalog",
                    origin,
                    format!(
                        "table {} has a name that is not a plain SQL identifier",
                        t.name
                    ),
                ));
            }
            if matches!(
                t.restore,
                RestoreMode::MissingRows | RestoreMode::Merge | RestoreMode::Strategy
            ) && t.key.is_empty()
            {
                return Err(Error::failed(
                    "read table catalog",
                    origin,
                    format!("table {} needs a key for its restore mode", t.name),
                ));
            }
        }
        Ok(catalog)
    }

    pub fn table(&self, name: &str) -> Option<&TableSpec> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// The table's filter with its placeholders filled in.
    pub fn render_filter(&self, spec: &TableSpec, export_dag: &str) -> Option<String> {
        let states = self
            .inflight_states
            .iter()
            .map(|s| quote_literal(s))
            .collect::<Vec<_>>()
            .join(", ");
        let settled = "t.dag_id <> {export_dag} AND NOT EXISTS (SELECT 1 FROM task_instance ti WHERE ti.dag_id = t.dag_id AND ti.task_id = t.task_id AND ti.run_id = t.run_id AND ti.map_index = t.map_index AND ti.state IN ({inflight_states}))";
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
        let filter = catalog.render_filter(ti, "o'brien").expect("filter");
        assert!(filter.contains("'o''brien'"), "{filter}");
        assert!(filter.contains("'up_for_reschedule'"), "{filter}");
        let xcom = catalog.table("xcom").expect("xcom");
        let filter = catalog
            .render_filter(xcom, "backup_metadata")
            .expect("filter");
        assert!(filter.contains("NOT EXISTS"), "{filter}");
        assert!(!filter.contains('{'), "{filter}");
    }
}
