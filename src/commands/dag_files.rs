//! The DR DAGs and the startup script rendered from the configuration, for `dags render`
//! (into a folder) and `deploy` (into each DAGs bucket).

use std::collections::BTreeMap;

use crate::config::Config;
use crate::config::vars::spec;
use crate::deploy::RenderedFile;
use crate::deploy::dags::{DagSettings, render_dags};
use crate::deploy::startup::{self, StartupSettings, render_startup, sha256_hex};
use crate::error::{Error, Result};

/// The variables written into the DAGs when set: what the binary in the worker needs beyond
/// the worker's own environment. Database URLs and keys never are (the DAGs bucket is not a
/// secret store); the worker has its own.
const WRITTEN_IN: &[&str] = &[
    "DR_TYPE",
    "MWAA_VERSION",
    "PRIMARY_REGION",
    "PRIMARY_MWAA_ENVIRONMENT_NAME",
    "SECONDARY_REGION",
    "SECONDARY_MWAA_ENVIRONMENT_NAME",
    "DR_S3_SSE",
    "DR_S3_KMS_KEY_ID",
    "DR_KMS_KEY_ID",
    "DR_BACKUP_JOBS",
    "DR_VARIABLE_RESTORE_STRATEGY",
    "DR_CONNECTION_RESTORE_STRATEGY",
];

/// The binary the startup script installs.
pub struct Binary<'a> {
    pub uri: &'a str,
    pub version: Option<&'a str>,
    /// The SHA-256 (hex), or the local copy to take it from.
    pub sha256: Option<&'a str>,
    pub file: Option<&'a std::path::Path>,
    pub install_path: &'a str,
}

/// The three DR DAGs and the startup script, with the DAGs reading and writing backups at
/// `store`; also returns the binary's SHA-256.
pub fn render_files(
    config: &Config,
    store: &str,
    binary: &Binary<'_>,
) -> Result<(Vec<RenderedFile>, String)> {
    let binary_sha256 = match (binary.sha256, binary.file) {
        (Some(hex), _) => hex.to_string(),
        (None, Some(path)) => {
            let bytes = std::fs::read(path)
                .map_err(|e| Error::failed("read", path.display().to_string(), e))?;
            sha256_hex(&bytes)
        }
        (None, None) => {
            return Err(Error::Usage {
                message: "pass --binary-sha256 HEX or --binary-file PATH".into(),
            });
        }
    };
    let deployment = &config.deployment;
    let mut settings = written_in(config);
    settings.insert("DR_BACKUP_STORE".into(), store.to_string());
    for (name, value) in [
        ("METADATA_EXPORT_DAG_NAME", &deployment.export_dag_name),
        ("METADATA_IMPORT_DAG_NAME", &deployment.import_dag_name),
        ("METADATA_CLEANUP_DAG_NAME", &deployment.cleanup_dag_name),
    ] {
        settings.insert(name.into(), value.clone());
    }
    let mut files = render_dags(&DagSettings {
        export_dag: deployment.export_dag_name.clone(),
        import_dag: deployment.import_dag_name.clone(),
        cleanup_dag: deployment.cleanup_dag_name.clone(),
        backup_schedule: deployment.backup_schedule.clone(),
        settings,
        install_path: binary.install_path.to_string(),
    })?;
    files.push(RenderedFile {
        name: startup::FILE_NAME.into(),
        contents: render_startup(&StartupSettings {
            binary_uri: binary.uri.to_string(),
            binary_version: binary.version.map(str::to_string),
            binary_sha256: binary_sha256.clone(),
            install_path: binary.install_path.to_string(),
        })?,
    });
    Ok((files, binary_sha256))
}

/// The [`WRITTEN_IN`] variables that are set (not defaults: the binary has those too).
fn written_in(config: &Config) -> BTreeMap<String, String> {
    config
        .entries()
        .iter()
        .filter(|e| WRITTEN_IN.contains(&e.name))
        .filter(|e| {
            !matches!(
                e.source,
                crate::config::Source::Default | crate::config::Source::Unset
            )
        })
        .filter(|e| !spec(e.name).is_some_and(|s| s.kind.is_secret()))
        .filter_map(|e| {
            let value = match &e.value {
                serde_json::Value::Null => return None,
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Some((e.name.to_string(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variable_written_in_is_a_known_variable() {
        for name in WRITTEN_IN {
            assert!(
                spec(name).is_some(),
                "{name} is not a variable mwaa-dr reads"
            );
            assert!(
                !spec(name).is_some_and(|s| s.kind.is_secret()),
                "{name} is a secret and must not be written into a DAG file"
            );
        }
    }
}
