//! The three DR DAGs (backup, restore, cleanup): one Python file each, one task ("mwaa_dr")
//! that runs the binary with the settings written in at render time.

use std::collections::BTreeMap;

use serde_json::json;

use super::{RenderedFile, py_str};
use crate::error::{Error, Result};

const TEMPLATE: &str = include_str!("templates/dag.py");

/// The task id of every DR DAG (the REST API reads its XCom by it).
pub const TASK_ID: &str = "mwaa_dr";

/// What the DAGs are rendered from.
#[derive(Debug, Clone)]
pub struct DagSettings {
    /// METADATA_EXPORT_DAG_NAME, METADATA_IMPORT_DAG_NAME, METADATA_CLEANUP_DAG_NAME.
    pub export_dag: String,
    pub import_dag: String,
    pub cleanup_dag: String,
    /// PRIMARY_BACKUP_SCHEDULE: the backup DAG's schedule (the others are triggered only).
    pub backup_schedule: String,
    /// Variables handed to the binary on top of the worker's environment. The caller puts no
    /// secret here: the files are readable by anyone with the DAGs bucket.
    pub settings: BTreeMap<String, String>,
    /// Where the binary is when `MWAA_DR_BIN` is unset.
    pub install_path: String,
}

/// One DR DAG: its id, the command its task runs, and the conf keys a run may set.
struct DrDag<'a> {
    id: &'a str,
    variable: &'static str,
    command: &'static str,
    schedule: Option<&'a str>,
    /// Python for `is_paused_upon_creation`: `None` keeps the environment's own default.
    paused_upon_creation: &'static str,
    title: &'static str,
    conf: serde_json::Value,
}

/// Renders the three DAG files, named `<dag id>.py`.
pub fn render_dags(settings: &DagSettings) -> Result<Vec<RenderedFile>> {
    let dags = [
        DrDag {
            id: &settings.export_dag,
            variable: "METADATA_EXPORT_DAG_NAME",
            command: "backup",
            schedule: Some(&settings.backup_schedule),
            // Scheduled: a standby that parses it must not back itself up on its own.
            paused_upon_creation: "None",
            title: "Backs up this environment's metadata database into the backup store.",
            conf: json!({
                "task_token": {"type": "str", "flag": "--task-token"},
            }),
        },
        DrDag {
            id: &settings.import_dag,
            variable: "METADATA_IMPORT_DAG_NAME",
            command: "restore",
            schedule: None,
            // Triggered only: the Step Functions workflow triggers it in a standby whose new
            // DAGs are paused (MWAA's default), with nothing to unpause it first.
            paused_upon_creation: "False",
            title: "Restores a backup from the backup store into this environment's metadata database.",
            conf: json!({
                "backup_id": {"type": "str", "flag": "--backup-id"},
                "variable_strategy": {"type": "str", "env": "DR_VARIABLE_RESTORE_STRATEGY"},
                "connection_strategy": {"type": "str", "env": "DR_CONNECTION_RESTORE_STRATEGY"},
                "clean": {"type": "bool", "flag": "--clean"},
                "task_token": {"type": "str", "flag": "--task-token"},
            }),
        },
        DrDag {
            id: &settings.cleanup_dag,
            variable: "METADATA_CLEANUP_DAG_NAME",
            command: "cleanup",
            schedule: None,
            paused_upon_creation: "False",
            title: "Empties the restorable tables of this (standby) environment's metadata database.",
            conf: json!({
                "task_token": {"type": "str", "flag": "--task-token"},
            }),
        },
    ];
    for (i, dag) in dags.iter().enumerate() {
        check_dag_id(dag.variable, dag.id)?;
        if let Some(other) = dags[..i].iter().find(|o| o.id == dag.id) {
            return Err(Error::InvalidValue {
                variable: dag.variable.into(),
                value: dag.id.into(),
                problem: format!("{} has the same name", other.variable),
                accepted: "three different DAG ids".into(),
            });
        }
    }
    let settings_json = serde_json::to_string(&settings.settings)
        .map_err(|e| Error::failed("render", "DAG settings", e))?;
    dags.iter()
        .map(|dag| {
            let conf = dag.conf.to_string();
            let schedule = dag.schedule.map_or_else(|| "None".to_string(), py_str);
            let contents = TEMPLATE
                .replace("__TITLE__", &format!("{}: {}", dag.id, dag.title))
                .replace("__DAG_ID__", &py_str(dag.id))
                .replace("__COMMAND__", &py_str(dag.command))
                .replace("__SETTINGS__", &py_str(&settings_json))
                .replace("__CONF_KEYS__", &py_str(&conf))
                .replace("__INSTALL_PATH__", &py_str(&settings.install_path))
                .replace("__DESCRIPTION__", &py_str(dag.title))
                .replace("__SCHEDULE__", &schedule)
                .replace("__PAUSED_UPON_CREATION__", dag.paused_upon_creation);
            Ok(RenderedFile {
                name: format!("{}.py", dag.id),
                contents,
            })
        })
        .collect()
}

/// Airflow's rule for DAG ids (alphanumerics, dashes, dots and underscores, at most 250), so
/// that a bad name fails here rather than as an import error in the environment.
fn check_dag_id(variable: &str, id: &str) -> Result<()> {
    let valid = !id.is_empty()
        && id.len() <= 250
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidValue {
            variable: variable.into(),
            value: id.into(),
            problem: "not a valid Airflow DAG id".into(),
            accepted: "1 to 250 ASCII letters, digits, dashes, dots and underscores".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> DagSettings {
        DagSettings {
            export_dag: "backup_metadata".into(),
            import_dag: "restore_metadata".into(),
            cleanup_dag: "cleanup_metadata".into(),
            backup_schedule: "0 * * * *".into(),
            settings: BTreeMap::from([("DR_BACKUP_STORE".into(), "s3://b/it's \"q\"".into())]),
            install_path: super::super::DEFAULT_INSTALL_PATH.into(),
        }
    }

    #[test]
    fn renders_one_file_per_dag_with_its_command_and_schedule() {
        let files = render_dags(&settings()).expect("renders");
        let names: Vec<_> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "backup_metadata.py",
                "restore_metadata.py",
                "cleanup_metadata.py"
            ]
        );
        assert!(files[0].contents.contains("COMMAND = \"backup\""));
        assert!(files[0].contents.contains("schedule=\"0 * * * *\""));
        assert!(files[1].contents.contains("COMMAND = \"restore\""));
        assert!(files[1].contents.contains("schedule=None"));
        assert!(files[1].contents.contains("\\\"backup_id\\\""));
        assert!(files[0].contents.contains("is_paused_upon_creation=None"));
        assert!(files[1].contents.contains("is_paused_upon_creation=False"));
        assert!(files[2].contents.contains("is_paused_upon_creation=False"));
        assert!(files[2].contents.contains("COMMAND = \"cleanup\""));
        for file in &files {
            assert!(
                !file.contents.contains("__"),
                "placeholder left: {}",
                file.name
            );
        }
    }

    #[test]
    fn a_bad_or_repeated_dag_id_is_refused_naming_the_variable() {
        let mut bad = settings();
        bad.import_dag = "restore metadata".into();
        let err = render_dags(&bad).expect_err("refused").to_string();
        assert!(err.contains("METADATA_IMPORT_DAG_NAME"), "{err}");
        let mut same = settings();
        same.cleanup_dag = "backup_metadata".into();
        let err = render_dags(&same).expect_err("refused").to_string();
        assert!(err.contains("METADATA_CLEANUP_DAG_NAME"), "{err}");
    }
}
