//! Restore of a backup written by the original Python mwaa-dr library (one CSV file per
//! table, no manifest) into a target, in one transaction.

use std::cmp::Ordering;
use std::time::Instant;

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{Catalogs, Confirm, Services};
use crate::airflow::fernet::FernetKeys;
use crate::airflow::versions::compare_versions;
use crate::db::legacy::{LegacyOptions, LegacyReport, LegacySource, restore_legacy as load};
use crate::db::{PgConnector, airflow_version, backend_pid, terminate_backend};
use crate::error::{Error, Result};
use crate::failpoint;
use crate::legacy::secrets::{Connection, Variable, read_connections, read_variables};
use crate::legacy::{
    ACTIVE_DAGS, CONNECTIONS, LegacyFormat, VARIABLES, file_key, parse_active_dags,
};
use crate::model::RestoreStrategy;
use crate::progress::Progress;
use crate::store::BackupStore;

pub const COMMAND: &str = "restore --from-legacy";

/// What becomes of the plaintext variables and connection secrets of the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretsMode {
    /// Encrypted with the target's Fernet key, as Airflow writes them.
    EncryptedForTarget,
    /// Written as they are (`--allow-unencrypted-secrets`, no target key).
    Unencrypted,
    /// Nothing to write (no rows, or DO_NOTHING).
    NoSecrets,
}

impl SecretsMode {
    pub fn summary(self) -> &'static str {
        match self {
            SecretsMode::EncryptedForTarget => {
                "variables and connection secrets encrypted with the target's Fernet key (SECONDARY_FERNET_KEY, else AIRFLOW__CORE__FERNET_KEY)"
            }
            SecretsMode::Unencrypted => {
                "variables and connection secrets written UNENCRYPTED (--allow-unencrypted-secrets, no target Fernet key)"
            }
            SecretsMode::NoSecrets => "no variables or connections to write",
        }
    }
}

/// The target's Fernet key list, resolved only when there are secrets to seal (so a key
/// that is not needed is not checked either).
pub type TargetKeys<'a> = &'a (dyn Fn() -> Result<Option<FernetKeys>> + Send + Sync);

pub struct LegacyRestoreOptions<'a> {
    /// The Airflow version that wrote the files, which they do not record.
    pub format: LegacyFormat,
    /// Where the files are in the store (no leading or trailing `/`).
    pub prefix: String,
    pub clean: bool,
    pub dry_run: bool,
    pub variable_strategy: RestoreStrategy,
    pub connection_strategy: RestoreStrategy,
    pub target_keys: TargetKeys<'a>,
    /// Without a target key, write the secrets unencrypted instead of refusing.
    pub allow_unencrypted_secrets: bool,
    pub export_dag: String,
    pub catalogs: Catalogs,
    pub confirm: Option<Confirm<'a>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    pub file: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LegacyRestoreSummary {
    pub format: &'static str,
    pub source: String,
    pub airflow_version: String,
    pub target: String,
    pub dry_run: bool,
    pub seconds: f64,
    pub secrets: SecretsMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<FileReport>>,
    #[serde(flatten)]
    pub report: Option<LegacyReport>,
    /// The active DAGs the files list (a dry run counts them).
    #[serde(skip)]
    pub active_dags: usize,
}

/// What was read from the files before the database is touched.
struct Read {
    files: Vec<FileReport>,
    variables: Vec<Variable>,
    connections: Vec<Connection>,
    active_dags: Vec<String>,
    secrets: SecretsMode,
}

/// Restores the legacy backup of the store in `services` into the target. Its files are
/// read under a shared lock of their store, like a backup's.
pub async fn restore_legacy(
    options: &LegacyRestoreOptions<'_>,
    services: &Services,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<LegacyRestoreSummary> {
    let store = services.store()?;
    super::with_store_lock(
        store.as_ref(),
        false,
        COMMAND,
        restore_locked(options, services, store.as_ref(), progress, cancel),
    )
    .await
}

async fn restore_locked(
    options: &LegacyRestoreOptions<'_>,
    services: &Services,
    store: &dyn BackupStore,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<LegacyRestoreSummary> {
    failpoint::reach("restore_legacy.locked", cancel).await?;
    let started = Instant::now();
    let version = options.format.airflow_version.clone();
    let source = source_name(store, &options.prefix);
    let files = check_files(options, store, &source).await?;
    let read = read_files(options, store, files).await?;
    let connector = services.target()?;
    let db = connector.describe();
    let mut conn = connector.connect().await?;
    let pid = backend_pid(&mut conn, db).await?;
    check_target(options, &mut conn, db).await?;
    let mut summary = LegacyRestoreSummary {
        format: "legacy",
        source: source.clone(),
        airflow_version: version,
        target: db.to_string(),
        dry_run: options.dry_run,
        seconds: 0.0,
        secrets: read.secrets,
        files: None,
        report: None,
        active_dags: read.active_dags.len(),
    };
    if options.dry_run {
        summary.files = Some(read.files);
        return Ok(summary);
    }
    if options.clean
        && let Some(confirm) = options.confirm
    {
        confirm(&format!(
            "Delete the restorable rows of {db} and restore the legacy backup at {source}?"
        ))?;
    }
    let report = load_files(
        options, store, read, connector, &mut conn, pid, progress, cancel,
    )
    .await?;
    summary.seconds = started.elapsed().as_secs_f64();
    summary.report = Some(report);
    Ok(summary)
}

/// The files as messages name them: `<store>/<prefix>`.
fn source_name(store: &dyn BackupStore, prefix: &str) -> String {
    format!(
        "{}/{}",
        store.describe().trim_end_matches('/'),
        prefix.trim_matches('/')
    )
    .trim_end_matches('/')
    .to_string()
}

/// Every file the restore reads exists, before the database is touched.
async fn check_files(
    options: &LegacyRestoreOptions<'_>,
    store: &dyn BackupStore,
    source: &str,
) -> Result<Vec<FileReport>> {
    let prefix = &options.prefix;
    let mut needed: Vec<&str> = options
        .format
        .tables
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    if options.variable_strategy != RestoreStrategy::DoNothing {
        needed.push(VARIABLES);
    }
    if options.connection_strategy != RestoreStrategy::DoNothing {
        needed.push(CONNECTIONS);
    }
    needed.push(ACTIVE_DAGS);
    let listing = store
        .list(&if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        })
        .await?;
    let mut files = Vec::new();
    let mut missing = Vec::new();
    for name in &needed {
        let key = file_key(prefix, name);
        match listing.iter().find(|o| o.key == key) {
            Some(object) => files.push(FileReport {
                file: format!("{name}.csv"),
                bytes: object.size,
            }),
            None => missing.push(format!("{name}.csv")),
        }
    }
    if !missing.is_empty() {
        return Err(Error::failed(
            COMMAND,
            source,
            format!(
                "the legacy backup lacks {}: the original writes every file on each run, so this is not a complete backup (check --from-legacy and --legacy-prefix; a DO_NOTHING variable or connection strategy needs no file)",
                missing.join(", ")
            ),
        ));
    }
    Ok(files)
}

/// Reads the variables, connections and active DAGs, and seals the secrets for the target.
async fn read_files(
    options: &LegacyRestoreOptions<'_>,
    store: &dyn BackupStore,
    files: Vec<FileReport>,
) -> Result<Read> {
    let prefix = &options.prefix;
    let format = &options.format;
    let resource = |name: &str| {
        format!(
            "{}/{}",
            store.describe().trim_end_matches('/'),
            file_key(prefix, name)
        )
    };
    let mut variables = Vec::new();
    if options.variable_strategy != RestoreStrategy::DoNothing {
        let bytes = store.get_bytes(&file_key(prefix, VARIABLES)).await?;
        variables = read_variables(&bytes, &resource(VARIABLES), &format.variable_columns).await?;
    }
    let mut connections = Vec::new();
    if options.connection_strategy != RestoreStrategy::DoNothing {
        let bytes = store.get_bytes(&file_key(prefix, CONNECTIONS)).await?;
        connections =
            read_connections(&bytes, &resource(CONNECTIONS), &format.connection_columns).await?;
    }
    let active_dags = parse_active_dags(
        &store.get_bytes(&file_key(prefix, ACTIVE_DAGS)).await?,
        &resource(ACTIVE_DAGS),
    )?;
    let secrets = seal(options, &mut variables, &mut connections)?;
    Ok(Read {
        files,
        variables,
        connections,
        active_dags,
        secrets,
    })
}

/// Plaintext secrets are sealed with the target's key; without one, only on request.
fn seal(
    options: &LegacyRestoreOptions<'_>,
    variables: &mut [Variable],
    connections: &mut [Connection],
) -> Result<SecretsMode> {
    if variables.is_empty() && connections.is_empty() {
        return Ok(SecretsMode::NoSecrets);
    }
    match (options.target_keys)()? {
        Some(keys) => {
            variables.iter_mut().for_each(|v| v.seal(&keys));
            connections.iter_mut().for_each(|c| c.seal(&keys));
            Ok(SecretsMode::EncryptedForTarget)
        }
        None if options.allow_unencrypted_secrets => {
            warn!(
                "no target Fernet key: the legacy backup's variables and connection secrets are written unencrypted"
            );
            Ok(SecretsMode::Unencrypted)
        }
        None => Err(Error::MissingValue {
            variable: "SECONDARY_FERNET_KEY".into(),
            command: COMMAND.into(),
            purpose: format!(
                "the target's Fernet key (or AIRFLOW__CORE__FERNET_KEY): the legacy backup holds {} variables and {} connections in plaintext, which Airflow keeps encrypted (or pass --allow-unencrypted-secrets to write them unencrypted)",
                variables.len(),
                connections.len()
            ),
        }),
    }
}

/// The target runs Airflow 2, not older than the files' version.
async fn check_target(
    options: &LegacyRestoreOptions<'_>,
    conn: &mut sqlx::PgConnection,
    db: &str,
) -> Result<()> {
    let version = &options.format.airflow_version;
    let versions = &options.catalogs.versions;
    let (target_version, _) = airflow_version(conn, db, versions, None, None).await?;
    if !target_version.starts_with("2.") {
        return Err(Error::failed(
            COMMAND,
            db,
            format!(
                "the target runs Airflow {target_version}; a legacy backup of Airflow {version} restores into Airflow 2 (restore it into an Airflow {version} database, then let `airflow db migrate` upgrade that one)"
            ),
        ));
    }
    if compare_versions(&target_version, version) == Ordering::Less
        && !versions.same_schema(&target_version, version)
    {
        return Err(Error::failed(
            COMMAND,
            db,
            format!(
                "the target runs Airflow {target_version}, older than the legacy backup's {version}; restore into the same or a newer version"
            ),
        ));
    }
    Ok(())
}

/// The transaction. Interrupted, its server session is ended, so PostgreSQL rolls it back.
#[allow(clippy::too_many_arguments)]
async fn load_files(
    options: &LegacyRestoreOptions<'_>,
    store: &dyn BackupStore,
    read: Read,
    connector: &PgConnector,
    conn: &mut sqlx::PgConnection,
    pid: i32,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<LegacyReport> {
    let catalog = options.catalogs.for_version("2")?;
    let source = LegacySource {
        store,
        prefix: options.prefix.clone(),
        format: options.format.clone(),
        variables: read.variables,
        connections: read.connections,
        active_dags: read.active_dags,
    };
    let load_options = LegacyOptions {
        clean: options.clean,
        variable_strategy: options.variable_strategy,
        connection_strategy: options.connection_strategy,
        export_dag: options.export_dag.clone(),
    };
    let result = tokio::select! {
        result = load(conn, &catalog, &source, &load_options, progress) => result,
        () = cancel.cancelled() => {
            terminate_backend(connector, pid).await;
            Err(Error::Interrupted)
        }
    };
    progress.clear();
    result
}
