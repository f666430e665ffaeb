//! What gets deployed into an MWAA environment: the rendered DR DAGs and the startup script
//! that installs the binary.

pub mod apply;
pub mod cloudformation;
pub mod dags;
pub mod startup;

/// Where the startup script installs the binary, and where a DAG looks when `MWAA_DR_BIN`
/// is unset.
pub const DEFAULT_INSTALL_PATH: &str = "/usr/local/airflow/mwaa-dr/bin/mwaa-dr";

/// A file to write into the DAGs folder: its name there and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    pub name: String,
    pub contents: String,
}

/// A Python string literal (JSON's string syntax is a subset of Python's).
pub(crate) fn py_str(value: &str) -> String {
    serde_json::Value::String(value.to_string()).to_string()
}

/// A POSIX shell word that stands for `value` exactly.
pub(crate) fn sh_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}
