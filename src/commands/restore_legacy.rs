//! `mwaa-dr restore --from-legacy`: restore a backup written by the original Python mwaa-dr
//! library (one CSV file per table, no manifest) into a target, in one transaction.

use std::cmp::Ordering;
use std::time::Instant;

use serde::Serialize;
use tracing::warn;

use crate::airflow::fernet::{FernetKeys, side_keys};
use crate::airflow::versions::compare_versions;
use crate::cli::RestoreArgs;
use tokio_util::sync::CancellationToken;

use super::open_store;
use crate::config::{Config, DbUrl, RestoreStrategy};
use crate::db::legacy::{LegacyOptions, LegacyReport, LegacySource, restore_legacy};
use crate::db::{airflow_version, backend_pid, terminate_backend};
use crate::error::{Error, Result};
use crate::legacy::secrets::{read_connections, read_variables};
use crate::legacy::{
    ACTIVE_DAGS, CONNECTIONS, LegacyFormat, VARIABLES, file_key, parse_active_dags,
};
use crate::output;
use crate::store::{ACCEPTED_LOCATIONS, BackupStore, StoreLocation};

const COMMAND: &str = "restore --from-legacy";

/// What becomes of the plaintext variables and connection secrets of the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum SecretsMode {
    /// Encrypted with the target's Fernet key, as Airflow writes them.
    EncryptedForTarget,
    /// Written as they are (`--allow-unencrypted-secrets`, no target key).
    Unencrypted,
    /// Nothing to write (no rows, or DO_NOTHING).
    NoSecrets,
}

impl SecretsMode {
    fn summary(self) -> &'static str {
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

#[derive(Serialize)]
struct FileDoc {
    file: String,
    bytes: u64,
}

#[derive(Serialize)]
struct LegacyRestoreDoc<'a> {
    format: &'static str,
    source: &'a str,
    airflow_version: &'a str,
    target: &'a str,
    dry_run: bool,
    seconds: f64,
    secrets: SecretsMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    files: Option<Vec<FileDoc>>,
    #[serde(flatten)]
    report: Option<&'a LegacyReport>,
}

/// The target's Fernet key list, when one is set.
fn target_keys(config: &Config) -> Result<Option<FernetKeys>> {
    side_keys(
        config.fernet_key(&config.secondary)?.as_ref(),
        "SECONDARY_FERNET_KEY",
    )
}

/// `location` is the value of `--from-legacy`: empty for the configured store.
pub async fn run(
    config: &Config,
    args: &RestoreArgs,
    location: &str,
    cancel: &CancellationToken,
) -> Result<()> {
    let started = Instant::now();
    let version = args
        .airflow_version
        .clone()
        .or_else(|| config.mwaa_version.clone())
        .ok_or_else(|| Error::MissingValue {
            variable: "MWAA_VERSION".into(),
            command: COMMAND.into(),
            purpose: "the Airflow version of the environment that wrote the legacy backup, which its files do not record (or pass --airflow-version)".into(),
        })?;
    let format = LegacyFormat::for_version(&version)?;
    let location: StoreLocation = if location.trim().is_empty() {
        config.store(COMMAND)?.clone()
    } else {
        location.parse().map_err(|problem| Error::InvalidValue {
            variable: "--from-legacy".into(),
            value: location.into(),
            problem,
            accepted: ACCEPTED_LOCATIONS.into(),
        })?
    };
    let prefix = args
        .legacy_prefix
        .clone()
        .unwrap_or_else(|| format.default_prefix.clone())
        .trim_matches('/')
        .to_string();
    let db = config.target_db("restore")?;
    let store = open_store(&location, config).await?;
    // The legacy files are read under a shared lock of their store, like a backup's.
    super::with_store_lock(
        store.as_ref(),
        false,
        "restore --from-legacy",
        restore_locked(
            config,
            args,
            Legacy {
                version,
                format,
                prefix,
            },
            &db,
            store.as_ref(),
            started,
            cancel,
        ),
    )
    .await
}

/// What identifies a legacy backup: the Airflow version that wrote it, its format, its prefix.
struct Legacy {
    version: String,
    format: LegacyFormat,
    prefix: String,
}

async fn restore_locked(
    config: &Config,
    args: &RestoreArgs,
    legacy: Legacy,
    db: &DbUrl,
    store: &dyn BackupStore,
    started: Instant,
    cancel: &CancellationToken,
) -> Result<()> {
    let Legacy {
        version,
        format,
        prefix,
    } = legacy;

    // Every file the restore reads exists, before the database is touched.
    let mut needed: Vec<&str> = format.tables.iter().map(|t| t.name.as_str()).collect();
    if config.variable_strategy != RestoreStrategy::DoNothing {
        needed.push(VARIABLES);
    }
    if config.connection_strategy != RestoreStrategy::DoNothing {
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
        let key = file_key(&prefix, name);
        match listing.iter().find(|o| o.key == key) {
            Some(object) => files.push(FileDoc {
                file: format!("{name}.csv"),
                bytes: object.size,
            }),
            None => missing.push(format!("{name}.csv")),
        }
    }
    let source_name = format!(
        "{}/{}",
        store.describe().trim_end_matches('/'),
        prefix.trim_matches('/')
    )
    .trim_end_matches('/')
    .to_string();
    if !missing.is_empty() {
        return Err(Error::failed(
            COMMAND,
            &source_name,
            format!(
                "the legacy backup lacks {}: the original writes every file on each run, so this is not a complete backup (check --from-legacy and --legacy-prefix; a DO_NOTHING variable or connection strategy needs no file)",
                missing.join(", ")
            ),
        ));
    }

    let resource = |name: &str| {
        format!(
            "{}/{}",
            store.describe().trim_end_matches('/'),
            file_key(&prefix, name)
        )
    };
    let mut variables = Vec::new();
    if config.variable_strategy != RestoreStrategy::DoNothing {
        let bytes = store.get_bytes(&file_key(&prefix, VARIABLES)).await?;
        variables = read_variables(&bytes, &resource(VARIABLES), &format.variable_columns).await?;
    }
    let mut connections = Vec::new();
    if config.connection_strategy != RestoreStrategy::DoNothing {
        let bytes = store.get_bytes(&file_key(&prefix, CONNECTIONS)).await?;
        connections =
            read_connections(&bytes, &resource(CONNECTIONS), &format.connection_columns).await?;
    }
    let active_dags = parse_active_dags(
        &store.get_bytes(&file_key(&prefix, ACTIVE_DAGS)).await?,
        &resource(ACTIVE_DAGS),
    )?;

    // Plaintext secrets are sealed with the target's key; without one, only on request.
    let secrets = if variables.is_empty() && connections.is_empty() {
        SecretsMode::NoSecrets
    } else {
        match target_keys(config)? {
            Some(keys) => {
                variables.iter_mut().for_each(|v| v.seal(&keys));
                connections.iter_mut().for_each(|c| c.seal(&keys));
                SecretsMode::EncryptedForTarget
            }
            None if args.allow_unencrypted_secrets => {
                warn!(
                    "no target Fernet key: the legacy backup's variables and connection secrets are written unencrypted"
                );
                SecretsMode::Unencrypted
            }
            None => {
                return Err(Error::MissingValue {
                    variable: "SECONDARY_FERNET_KEY".into(),
                    command: COMMAND.into(),
                    purpose: format!(
                        "the target's Fernet key (or AIRFLOW__CORE__FERNET_KEY): the legacy backup holds {} variables and {} connections in plaintext, which Airflow keeps encrypted (or pass --allow-unencrypted-secrets to write them unencrypted)",
                        variables.len(),
                        connections.len()
                    ),
                });
            }
        }
    };

    let connector = super::connector(config, db.clone());
    let mut conn = connector.connect().await?;
    let pid = backend_pid(&mut conn, db.redacted()).await?;
    let (target_version, _) =
        airflow_version(&mut conn, db.redacted(), &config.versions, None, None).await?;
    if !target_version.starts_with("2.") {
        return Err(Error::failed(
            COMMAND,
            db.redacted(),
            format!(
                "the target runs Airflow {target_version}; a legacy backup of Airflow {version} restores into Airflow 2 (restore it into an Airflow {version} database, then let `airflow db migrate` upgrade that one)"
            ),
        ));
    }
    if compare_versions(&target_version, &version) == Ordering::Less
        && !config.versions.same_schema(&target_version, &version)
    {
        return Err(Error::failed(
            COMMAND,
            db.redacted(),
            format!(
                "the target runs Airflow {target_version}, older than the legacy backup's {version}; restore into the same or a newer version"
            ),
        ));
    }

    if config.dry_run {
        let doc = LegacyRestoreDoc {
            format: "legacy",
            source: &source_name,
            airflow_version: &version,
            target: db.redacted(),
            dry_run: true,
            seconds: 0.0,
            secrets,
            files: Some(files),
            report: None,
        };
        output::emit(config.output, &doc, || {
            let list = doc
                .files
                .iter()
                .flatten()
                .map(|f| format!("  {:<32} {:>12}", f.file, output::bytes(f.bytes)))
                .collect::<Vec<_>>()
                .join("\n");
            format!(
                "dry run: would restore the legacy backup at {source_name} (Airflow {version} files, the original's {} format) into {}{}; variables {:?}, connections {:?}; {}; {} active DAGs to unpause:\n{list}",
                format.factory,
                db.redacted(),
                if args.clean { " after cleaning it" } else { "" },
                config.variable_strategy,
                config.connection_strategy,
                secrets.summary(),
                active_dags.len()
            )
        });
        return Ok(());
    }
    if args.clean {
        super::confirm(
            config,
            &format!(
                "Delete the restorable rows of {} and restore the legacy backup at {source_name}?",
                db.redacted()
            ),
        )?;
    }
    let catalog = config.catalog()?;
    let source = LegacySource {
        store,
        prefix,
        format,
        variables,
        connections,
        active_dags,
    };
    let options = LegacyOptions {
        clean: args.clean,
        variable_strategy: config.variable_strategy,
        connection_strategy: config.connection_strategy,
        export_dag: config.deployment.export_dag_name.clone(),
    };
    let progress = crate::progress::for_terminal("restore", config.quiet);
    let result = tokio::select! {
        result = restore_legacy(&mut conn, &catalog, &source, &options, progress.as_ref()) => result,
        () = cancel.cancelled() => {
            terminate_backend(&connector, pid).await;
            Err(Error::Interrupted)
        }
    };
    progress.clear();
    let report = result?;
    let seconds = started.elapsed().as_secs_f64();
    let doc = LegacyRestoreDoc {
        format: "legacy",
        source: &source_name,
        airflow_version: &version,
        target: db.redacted(),
        dry_run: false,
        seconds,
        secrets,
        files: None,
        report: Some(&report),
    };
    output::emit(config.output, &doc, || {
        let rows: u64 = report.loaded.iter().map(|t| t.rows).sum();
        let mut text = format!(
            "restored the legacy backup at {source_name} (Airflow {version} files) into {}: {} tables, {rows} rows in {seconds:.1} s; {} DAGs unpaused",
            db.redacted(),
            report.loaded.len(),
            report.unpaused.len()
        );
        for dropped in &report.dropped {
            text.push_str(&format!(
                "\nleft out {} {} rows: {}",
                dropped.rows, dropped.table, dropped.reason
            ));
        }
        for (column, n) in &report.cleared_json {
            text.push_str(&format!(
                "\n{column}: set to NULL in {n} rows, where it was not a Python literal of JSON values"
            ));
        }
        if !report.missing_dags.is_empty() {
            text.push_str(&format!(
                "\nactive in the source but not yet known to the target (unpause them once parsed): {}",
                report.missing_dags.join(", ")
            ));
        }
        text.push('\n');
        text.push_str(secrets.summary());
        if !report.encrypted.is_empty() {
            let counts = report
                .encrypted
                .iter()
                .map(|(column, n)| format!("{column} {n}"))
                .collect::<Vec<_>>()
                .join(", ");
            text.push_str(&format!(": {counts}"));
        }
        text
    });
    Ok(())
}
