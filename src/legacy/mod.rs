//! Backups written by the original Python mwaa-dr library, which `restore --from-legacy` reads:
//! its per-version table formats (`config/legacy-format.json`), its CSV dialect, its Python
//! literals and its plaintext variables and connections.

pub mod csv;
pub mod pyrepr;
pub mod secrets;

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::airflow::versions::compare_versions;
use crate::error::{Error, Result};

const BUILTIN: &str = include_str!("../../config/legacy-format.json");

/// The file of the DAGs active at backup time: one dag_id per line.
pub const ACTIVE_DAGS: &str = "active_dag";
/// The plaintext variables: comma CSV `key,val,description`.
pub const VARIABLES: &str = "variable";
/// The plaintext connections: comma CSV, the columns of `connection` in the format file.
pub const CONNECTIONS: &str = "connection";

#[derive(Debug, Deserialize)]
struct FormatFile {
    default_prefix: String,
    restore_order: Vec<String>,
    variable: Vec<String>,
    connection: Vec<String>,
    fill: BTreeMap<String, BTreeMap<String, String>>,
    unique: BTreeMap<String, Vec<Vec<String>>>,
    versions: Vec<FactoryEntry>,
}

#[derive(Debug, Deserialize)]
struct FactoryEntry {
    version: String,
    tables: BTreeMap<String, TableEntry>,
}

#[derive(Debug, Clone, Deserialize)]
struct TableEntry {
    columns: Vec<String>,
}

/// One pipe-delimited table of a legacy backup, as one Airflow version's files hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyTable {
    pub name: String,
    /// The fields of each record, in order.
    pub columns: Vec<String>,
    /// Values for columns the target requires (NOT NULL, no default) when the files lack the
    /// column or leave the field empty: Airflow's model defaults.
    pub fill: BTreeMap<String, String>,
    /// Column sets unique in the target: a duplicate in a file fails naming both lines.
    pub unique: Vec<Vec<String>>,
}

/// The legacy format written by one Airflow version.
#[derive(Debug, Clone)]
pub struct LegacyFormat {
    /// The Airflow version that wrote the files, as given.
    pub airflow_version: String,
    /// The original's factory that wrote them (`2.10` for 2.10.3 and 2.11.0).
    pub factory: String,
    /// The pipe-delimited tables, in restore order.
    pub tables: Vec<LegacyTable>,
    pub variable_columns: Vec<String>,
    pub connection_columns: Vec<String>,
    /// The original's default `path_prefix`.
    pub default_prefix: String,
}

impl LegacyFormat {
    /// The format of the files Airflow `version` wrote: the original's factories inherit, so a
    /// table takes the newest definition at or below the version's minor.
    pub fn for_version(version: &str) -> Result<LegacyFormat> {
        let file: FormatFile = serde_json::from_str(BUILTIN).map_err(|e| {
            Error::failed(
                "read legacy format",
                "config/legacy-format.json (built in)",
                e,
            )
        })?;
        let mut parts = version.trim().split('.');
        let (major, minor) = match (
            parts.next().and_then(|p| p.parse::<u64>().ok()),
            parts.next().and_then(|p| p.parse::<u64>().ok()),
        ) {
            (Some(major), Some(minor)) => (major, minor),
            _ => {
                return Err(Error::Usage {
                    message: format!(
                        "Airflow version {version:?} of the legacy backup is not a version number (e.g. 2.10.3)"
                    ),
                });
            }
        };
        let line = format!("{major}.{minor}");
        let oldest = file
            .versions
            .first()
            .map(|v| v.version.clone())
            .unwrap_or_default();
        if major != 2 || compare_versions(&line, &oldest) == std::cmp::Ordering::Less {
            return Err(Error::Usage {
                message: format!(
                    "the original mwaa-dr library wrote its format for Airflow {oldest} to 2.x; Airflow {version} is not one of them (an Airflow 3 environment is backed up with `mwaa-dr backup`)"
                ),
            });
        }
        let mut tables: BTreeMap<String, TableEntry> = BTreeMap::new();
        let mut factory = oldest;
        for entry in &file.versions {
            if compare_versions(&entry.version, &line) == std::cmp::Ordering::Greater {
                break;
            }
            factory = entry.version.clone();
            for (name, table) in &entry.tables {
                tables.insert(name.clone(), table.clone());
            }
        }
        let tables = file
            .restore_order
            .iter()
            .map(|name| {
                let entry = tables.get(name).ok_or_else(|| {
                    Error::failed(
                        "read legacy format",
                        "config/legacy-format.json (built in)",
                        format!("table {name} has no column list for Airflow {factory}"),
                    )
                })?;
                Ok(LegacyTable {
                    name: name.clone(),
                    columns: entry.columns.clone(),
                    fill: file.fill.get(name).cloned().unwrap_or_default(),
                    unique: file.unique.get(name).cloned().unwrap_or_default(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(LegacyFormat {
            airflow_version: version.trim().to_string(),
            factory,
            tables,
            variable_columns: file.variable,
            connection_columns: file.connection,
            default_prefix: file.default_prefix,
        })
    }

    pub fn table(&self, name: &str) -> Option<&LegacyTable> {
        self.tables.iter().find(|t| t.name == name)
    }
}

/// The object key of a legacy file: `<prefix>/<name>.csv` (`<name>.csv` without a prefix).
pub fn file_key(prefix: &str, name: &str) -> String {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        format!("{name}.csv")
    } else {
        format!("{prefix}/{name}.csv")
    }
}

/// The dag_ids of `active_dag.csv`: one per line, LF or CRLF, blank lines skipped.
pub fn parse_active_dags(bytes: &[u8], resource: &str) -> Result<Vec<String>> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| Error::failed("read", resource, "the file is not UTF-8 text"))?;
    let mut dags: Vec<String> = text
        .lines()
        .map(|l| l.trim_end_matches('\r').trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    dags.sort();
    dags.dedup();
    Ok(dags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(version: &str, table: &str) -> Vec<String> {
        LegacyFormat::for_version(version)
            .expect("format")
            .table(table)
            .expect("table")
            .columns
            .clone()
    }

    #[test]
    fn factories_inherit_from_the_previous_version() {
        let f = LegacyFormat::for_version("2.10.3").expect("2.10.3");
        assert_eq!(f.factory, "2.10");
        assert_eq!(
            f.tables.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            [
                "slot_pool",
                "job",
                "dag_run",
                "task_instance",
                "task_fail",
                "xcom",
                "log",
                "trigger"
            ]
        );
        assert!(columns("2.10.3", "task_instance").contains(&"executor".to_string()));
        assert_eq!(
            columns("2.10.3", "log").last().map(String::as_str),
            Some("try_number")
        );
        // 2.6 lists nothing: 2.5's task_instance, 2.4's dag_run.
        assert_eq!(
            columns("2.6.3", "task_instance"),
            columns("2.5.1", "task_instance")
        );
        assert!(columns("2.5.1", "task_instance").contains(&"updated_at".to_string()));
        assert!(!columns("2.4.3", "task_instance").contains(&"updated_at".to_string()));
        assert_eq!(columns("2.7.2", "dag_run"), columns("2.4.3", "dag_run"));
        assert_eq!(columns("2.8.1", "dag_run")[0], "clear_number");
        assert_eq!(
            columns("2.11.0", "task_instance"),
            columns("2.10.1", "task_instance")
        );
        assert_eq!(
            columns("2.4.3", "slot_pool"),
            ["description", "pool", "slots"]
        );
        assert_eq!(
            f.connection_columns,
            [
                "conn_id",
                "conn_type",
                "description",
                "extra",
                "host",
                "login",
                "password",
                "port",
                "schema"
            ]
        );
        let dag_run = f.table("dag_run").expect("dag_run");
        assert_eq!(
            dag_run.fill.get("clear_number").map(String::as_str),
            Some("0")
        );
        assert_eq!(dag_run.unique.len(), 2);
    }

    #[test]
    fn refuses_versions_the_original_never_wrote() {
        for version in ["3.0.6", "2.3.4", "1.10.12", "latest", "2"] {
            assert!(
                matches!(LegacyFormat::for_version(version), Err(Error::Usage { .. })),
                "{version}"
            );
        }
    }

    #[test]
    fn keys_and_active_dags() {
        assert_eq!(file_key("data", "dag_run"), "data/dag_run.csv");
        assert_eq!(file_key("/a/b/", "log"), "a/b/log.csv");
        assert_eq!(file_key("", "log"), "log.csv");
        assert_eq!(
            parse_active_dags(b"etl\nreports\r\n\netl\n", "f").expect("parses"),
            ["etl", "reports"]
        );
        assert!(parse_active_dags(b"\xff\n", "f").is_err());
    }
}
