//! Command line + environment + `.env` + defaults -> one validated `Config`.

mod layers;
pub mod vars;

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

pub use self::layers::{Layers, Source};
use self::vars::{Kind, VARS, Value, VarSpec};
pub use crate::airflow::fernet::BackupKeySetting;
use crate::airflow::versions::VersionTable;
use crate::cli::{Cli, Command, OutputFormat};
use crate::error::{Error, Result};
use crate::model::{AwsTimeouts, DbTimeouts, StoreLocation};
// The value types kept their old paths here, so callers of `config::X` keep compiling.
pub use crate::model::{
    DbUrl, DrType, HealthCheckSettings, RestoreStrategy, S3Encryption, Secret, redact_url,
    stored_location,
};

/// The settings of one region's environment.
#[derive(Debug, Clone, Default)]
pub struct Side {
    pub region: Option<String>,
    pub environment_name: Option<String>,
    pub role_arn: Option<String>,
    pub dags_bucket: Option<String>,
    pub vpc_id: Option<String>,
    pub subnet_ids: Vec<String>,
    pub security_group_ids: Vec<String>,
    pub db_url: Option<DbUrl>,
    pub fernet_key: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct FailoverSettings {
    pub create_env_polling_interval: Duration,
    pub timeout: Duration,
    /// How long the remote restore step waits for unparsed DAGs to unpause.
    pub unpause_wait: Duration,
    pub cleanup_cool_off: Duration,
    pub sns_topic_arn: Option<String>,
    pub notification_emails: Vec<String>,
    pub backup_file_name: String,
}

#[derive(Debug, Clone)]
pub struct DeploymentSettings {
    pub aws_account_id: Option<String>,
    pub stack_name_prefix: Option<String>,
    pub update_execution_role: bool,
    pub create_sfn_vpce: bool,
    pub export_dag_name: String,
    pub import_dag_name: String,
    pub cleanup_dag_name: String,
    pub dags_s3_path: String,
    pub backup_schedule: String,
    pub replication_polling_interval: Duration,
    /// MWAA_DR_DAG_RUN: the DR DAG run executing this process.
    pub dr_dag_run: Option<crate::model::DagRunRef>,
}

/// One variable as `config` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct Resolved {
    pub name: &'static str,
    /// Display form, secrets redacted; `null` when unset.
    pub value: serde_json::Value,
    pub source: Source,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Set by the user but changing nothing in this build: why, and what will use it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_effect: Option<&'static str>,
}

/// The validated configuration of one run.
#[derive(Debug, Clone)]
pub struct Config {
    pub output: OutputFormat,
    /// Only errors on stderr (no progress).
    pub quiet: bool,
    pub dry_run: bool,
    pub assume_yes: bool,
    pub env_file: Option<PathBuf>,
    pub dr_type: Option<DrType>,
    pub mwaa_version: Option<String>,
    pub primary: Side,
    pub secondary: Side,
    pub store: Option<StoreLocation>,
    pub s3_encryption: Option<S3Encryption>,
    pub variable_strategy: RestoreStrategy,
    pub connection_strategy: RestoreStrategy,
    pub health_check: HealthCheckSettings,
    pub failover: FailoverSettings,
    pub deployment: DeploymentSettings,
    pub log_filter: Option<String>,
    pub db_timeouts: DbTimeouts,
    pub aws_timeouts: AwsTimeouts,
    /// The key backups put Fernet secrets under (DR_KMS_KEY_ID / DR_BACKUP_FERNET_KEY).
    pub backup_key: BackupKeySetting,
    /// Parallel connections of `backup` and `restore` (DR_BACKUP_JOBS or --jobs).
    pub backup_jobs: u16,
    /// A user's table catalog replacing the built-in one.
    pub table_catalog: Option<PathBuf>,
    pub versions: VersionTable,
    /// Airflow's own database URL variables, in fallback order, checked only when used.
    fallback_db: Vec<Fallback<DbUrl>>,
    /// `AIRFLOW__CORE__FERNET_KEY`, checked only when used.
    fallback_fernet_key: Option<Fallback<Secret>>,
    entries: Vec<Resolved>,
}

impl Config {
    /// Resolves and validates every variable. `layers` holds the environment and `.env`; the
    /// flags of `cli` are added on top of them.
    pub fn from_cli(cli: &Cli, mut layers: Layers) -> Result<Config> {
        add_flags(cli, &mut layers);
        let versions = VersionTable::builtin();
        let Resolution {
            values,
            lazy,
            mut entries,
        } = resolve(&layers, &versions)?;
        let dr_type = values
            .text("DR_TYPE")
            .and_then(|s| s.parse::<DrType>().ok());
        let (variable_strategy, connection_strategy) = values.strategies(dr_type, &mut entries);
        let store = values.store(&mut entries);
        let s3_encryption = values.s3_encryption()?;
        if let Some(run) = values.text(crate::model::DAG_RUN_VARIABLE)
            && let Err(problem) = crate::model::DagRunRef::parse(&run)
        {
            return Err(Error::InvalidValue {
                variable: crate::model::DAG_RUN_VARIABLE.into(),
                value: run,
                problem,
                accepted: crate::model::ACCEPTED_DAG_RUN.into(),
            });
        }
        let config = Config {
            output: cli.global.output,
            quiet: cli.global.quiet,
            dry_run: cli.global.dry_run,
            assume_yes: cli.global.yes,
            env_file: layers.env_file_path.clone(),
            dr_type,
            mwaa_version: values.text("MWAA_VERSION"),
            primary: values.side("PRIMARY"),
            secondary: values.side("SECONDARY"),
            store,
            s3_encryption,
            variable_strategy,
            connection_strategy,
            health_check: values.health_check(&mut entries),
            failover: values.failover(),
            deployment: values.deployment(),
            log_filter: values.text("MWAA_DR_LOG"),
            db_timeouts: values.db_timeouts(),
            aws_timeouts: values.aws_timeouts(),
            backup_key: values.backup_key()?,
            backup_jobs: u16::try_from(values.count("DR_BACKUP_JOBS"))
                .unwrap_or(u16::MAX)
                .max(1),
            table_catalog: values.text("DR_TABLE_CATALOG").map(PathBuf::from),
            versions,
            fallback_db: [
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
                "AIRFLOW__CORE__SQL_ALCHEMY_CONN",
            ]
            .into_iter()
            .filter_map(|name| fallback(name, values.db(name), &lazy))
            .filter(|f| !matches!(f, Fallback::Invalid(bad) if is_blocked_in_task(&bad.shown)))
            .chain(values.mwaa_db(&lazy))
            .collect(),
            fallback_fernet_key: ["AIRFLOW__CORE__FERNET_KEY", "MWAA__CORE__FERNET_KEY"]
                .into_iter()
                .find_map(|name| fallback(name, values.secret(name), &lazy)),
            entries,
        };
        Ok(config)
    }

    /// Every variable with its display value and source, in documentation order.
    pub fn entries(&self) -> &[Resolved] {
        &self.entries
    }

    /// The database `backup` reads: PRIMARY_DB_URL (or `--db`), else Airflow's own URL.
    pub fn source_db(&self, command: &str) -> Result<DbUrl> {
        self.db_or_fallback(self.primary.db_url.as_ref(), "PRIMARY_DB_URL", command)
    }

    /// The database `restore` and `cleanup` write: SECONDARY_DB_URL (or `--db`), else
    /// Airflow's own URL.
    pub fn target_db(&self, command: &str) -> Result<DbUrl> {
        self.db_or_fallback(self.secondary.db_url.as_ref(), "SECONDARY_DB_URL", command)
    }

    /// Whether `backup` has a database to read (PRIMARY_DB_URL, `--db` or Airflow's own URL);
    /// without one it runs the backup DAG through the REST API.
    pub fn has_source_db(&self) -> bool {
        self.primary.db_url.is_some() || !self.fallback_db.is_empty()
    }

    /// Whether `restore`/`cleanup` have a database to write (SECONDARY_DB_URL, `--db` or
    /// Airflow's own URL).
    pub fn has_target_db(&self) -> bool {
        self.secondary.db_url.is_some() || !self.fallback_db.is_empty()
    }

    fn db_or_fallback(&self, own: Option<&DbUrl>, variable: &str, command: &str) -> Result<DbUrl> {
        if let Some(url) = own {
            return Ok(url.clone());
        }
        match self.fallback_db.first() {
            Some(fallback) => fallback.get(),
            None => Err(Error::MissingValue {
                variable: variable.into(),
                command: command.into(),
                purpose: "the metadata database URL (or pass --db, or set AIRFLOW__DATABASE__SQL_ALCHEMY_CONN, or MWAA's MWAA__DB__* variables)".into(),
            }),
        }
    }

    /// The Fernet key of a side, falling back to AIRFLOW__CORE__FERNET_KEY; `None` when
    /// neither is set.
    pub fn fernet_key(&self, side: &Side) -> Result<Option<Secret>> {
        match (&side.fernet_key, &self.fallback_fernet_key) {
            (Some(key), _) => Ok(Some(key.clone())),
            (None, Some(fallback)) => fallback.get().map(Some),
            (None, None) => Ok(None),
        }
    }

    /// The table catalog for Airflow 2: DR_TABLE_CATALOG's file, or the built-in one.
    pub fn catalog(&self) -> Result<crate::airflow::catalog::Catalog> {
        self.catalog_for("2")
    }

    /// Where the table catalogs come from, for the operations.
    pub fn catalogs(&self) -> crate::ops::Catalogs {
        let deployment = &self.deployment;
        crate::ops::Catalogs {
            table_catalog: self.table_catalog.clone(),
            versions: self.versions.clone(),
            dr_dags: crate::airflow::catalog::DrDags {
                names: vec![
                    deployment.export_dag_name.clone(),
                    deployment.import_dag_name.clone(),
                    deployment.cleanup_dag_name.clone(),
                ],
                run: deployment.dr_dag_run.clone(),
            },
        }
    }

    /// The table catalog for a database of Airflow `version`: DR_TABLE_CATALOG's file (for
    /// every version), or the built-in catalog of that major version.
    pub fn catalog_for(&self, version: &str) -> Result<crate::airflow::catalog::Catalog> {
        self.catalogs().for_version(version)
    }

    /// The backup store, or an error naming the variables that set it.
    pub fn store(&self, command: &str) -> Result<&StoreLocation> {
        self.store.as_ref().ok_or_else(|| Error::MissingValue {
            variable: "DR_BACKUP_STORE".into(),
            command: command.into(),
            purpose: "where backups live (or set DR_BACKUP_BUCKET, or pass --store)".into(),
        })
    }

    /// A text setting the command cannot do without.
    pub fn require<'a>(
        &self,
        value: &'a Option<String>,
        variable: &str,
        command: &str,
        purpose: &str,
    ) -> Result<&'a str> {
        value.as_deref().ok_or_else(|| Error::MissingValue {
            variable: variable.into(),
            command: command.into(),
            purpose: purpose.into(),
        })
    }
}

/// A fallback variable that is valid, or the description of why it is not.
#[derive(Debug, Clone)]
enum Fallback<T> {
    Valid(T),
    Invalid(InvalidFallback),
}

/// Every variable parsed: its value (`None` when unset, or invalid and only checked when
/// used), and where it came from.
struct Values(Vec<(&'static VarSpec, Option<Value>, Source)>);

/// What [`resolve`] found.
struct Resolution {
    values: Values,
    /// Invalid values of variables checked only when used.
    lazy: Vec<InvalidFallback>,
    /// What `config` reports.
    entries: Vec<Resolved>,
}

/// Why `spec` changes nothing, when the user set it (a default is not worth a remark).
fn set_without_effect(spec: &VarSpec, source: &Source) -> Option<&'static str> {
    match source {
        Source::Flag | Source::Env | Source::EnvFile => spec.no_effect,
        Source::Default | Source::Unset => None,
    }
}

/// Looks every variable up in the layers (or its default) and parses it; an invalid value
/// fails here, unless the variable is only checked when used.
fn resolve(layers: &Layers, versions: &VersionTable) -> Result<Resolution> {
    let mut values = Vec::new();
    let mut lazy = Vec::new();
    let mut entries = Vec::new();
    for spec in VARS {
        let found = layers
            .lookup(spec.name)
            .or_else(|| spec.default.map(|d| (d.to_string(), Source::Default)));
        let Some((raw, source)) = found else {
            values.push((spec, None, Source::Unset));
            entries.push(Resolved {
                name: spec.name,
                value: serde_json::Value::Null,
                source: Source::Unset,
                note: None,
                no_effect: None,
            });
            continue;
        };
        match spec.kind.parse(&raw, versions) {
            Ok(value) => {
                entries.push(Resolved {
                    name: spec.name,
                    value: value.to_display_json(),
                    source: source.clone(),
                    note: None,
                    no_effect: set_without_effect(spec, &source),
                });
                values.push((spec, Some(value), source));
            }
            Err(problem) if spec.lazy => {
                entries.push(Resolved {
                    name: spec.name,
                    value: serde_json::Value::String(shown_value(spec, &raw)),
                    source: source.clone(),
                    note: Some(format!("not usable: {problem}")),
                    no_effect: set_without_effect(spec, &source),
                });
                lazy.push(InvalidFallback {
                    variable: spec.name,
                    shown: shown_value(spec, &raw),
                    problem,
                    accepted: spec.kind.accepted(versions),
                });
                values.push((spec, None, source));
            }
            Err(problem) => {
                return Err(invalid_value(
                    spec, &raw, problem, &source, layers, versions,
                ));
            }
        }
    }
    Ok(Resolution {
        values: Values(values),
        lazy,
        entries,
    })
}

impl Values {
    fn get(&self, name: &str) -> Option<&Value> {
        self.0
            .iter()
            .find(|(spec, _, _)| spec.name == name)
            .and_then(|(_, value, _)| value.as_ref())
    }

    fn text(&self, name: &str) -> Option<String> {
        match self.get(name) {
            Some(Value::Text(s)) => Some(s.clone()),
            _ => None,
        }
    }

    fn text_or_default(&self, name: &str) -> String {
        self.text(name).unwrap_or_default()
    }

    fn flag(&self, name: &str) -> bool {
        matches!(self.get(name), Some(Value::Bool(true)))
    }

    fn count(&self, name: &str) -> u64 {
        match self.get(name) {
            Some(Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
            _ => 0,
        }
    }

    fn secs(&self, name: &str) -> Duration {
        Duration::from_secs(self.count(name))
    }

    fn minutes(&self, name: &str) -> Duration {
        Duration::from_secs(self.count(name) * 60)
    }

    fn list(&self, name: &str) -> Vec<String> {
        match self.get(name) {
            Some(Value::List(items)) => items.clone(),
            _ => Vec::new(),
        }
    }

    fn db(&self, name: &str) -> Option<DbUrl> {
        match self.get(name) {
            Some(Value::DbUrl(url)) => Some(url.clone()),
            _ => None,
        }
    }

    /// DR_KMS_KEY_ID or DR_BACKUP_FERNET_KEY; both at once is a mistake.
    fn backup_key(&self) -> Result<BackupKeySetting> {
        match (self.text("DR_KMS_KEY_ID"), self.secret("DR_BACKUP_FERNET_KEY")) {
            (Some(id), Some(_)) => Err(Error::InvalidValue {
                variable: "DR_KMS_KEY_ID".into(),
                value: id,
                problem: "DR_BACKUP_FERNET_KEY is set too: a backup's secrets go under one key".into(),
                accepted: "either DR_KMS_KEY_ID (a KMS data key per backup) or DR_BACKUP_FERNET_KEY (a shared Fernet key), not both".into(),
            }),
            (Some(id), None) => Ok(BackupKeySetting::Kms(id)),
            (None, Some(key)) => Ok(BackupKeySetting::Shared(key)),
            (None, None) => Ok(BackupKeySetting::SourceKey),
        }
    }

    fn secret(&self, name: &str) -> Option<Secret> {
        match self.get(name) {
            Some(Value::Secret(s)) => Some(s.clone()),
            _ => None,
        }
    }

    /// The database URL MWAA's raw `MWAA__DB__*` variables describe, when
    /// MWAA__DB__POSTGRES_HOST is set; an invalid or missing part makes it an invalid fallback
    /// that names the variable.
    fn mwaa_db(&self, lazy: &[InvalidFallback]) -> Option<Fallback<DbUrl>> {
        const HOST: &str = "MWAA__DB__POSTGRES_HOST";
        let bad = |variable: &'static str, problem: String, accepted: &str| {
            let shown = if variable == "MWAA__DB__CREDENTIALS" {
                "***"
            } else {
                ""
            };
            Fallback::Invalid(InvalidFallback {
                variable,
                shown: shown.into(),
                problem,
                accepted: accepted.into(),
            })
        };
        let invalid = |name: &str| lazy.iter().find(|b| b.variable == name).cloned();
        if self.text(HOST).is_none() && invalid(HOST).is_none() {
            return None;
        }
        let names = [
            HOST,
            "MWAA__DB__POSTGRES_PORT",
            "MWAA__DB__POSTGRES_DB",
            "MWAA__DB__POSTGRES_SSLMODE",
            "MWAA__DB__CREDENTIALS",
            "MWAA__DB__POSTGRES_USER",
            "MWAA__DB__POSTGRES_PASSWORD",
        ];
        if let Some(first) = names.iter().find_map(|name| invalid(name)) {
            return Some(Fallback::Invalid(first));
        }
        let host = self.text(HOST)?;
        let port = match self.get("MWAA__DB__POSTGRES_PORT") {
            Some(Value::Int(port)) => u16::try_from(*port).unwrap_or(5432),
            _ => 5432,
        };
        let Some(database) = self.text("MWAA__DB__POSTGRES_DB") else {
            return Some(bad(
                "MWAA__DB__POSTGRES_DB",
                format!("it is unset while {HOST} is set"),
                "the database name, as MWAA sets it",
            ));
        };
        let credentials = match (
            self.secret("MWAA__DB__CREDENTIALS"),
            self.text("MWAA__DB__POSTGRES_USER"),
            self.secret("MWAA__DB__POSTGRES_PASSWORD"),
        ) {
            (Some(json), _, _) => crate::model::mwaa_credentials(json.expose()).map_err(|p| {
                bad(
                    "MWAA__DB__CREDENTIALS",
                    p,
                    r#"JSON {"username": "…", "password": "…"}"#,
                )
            }),
            (None, Some(user), Some(password)) => Ok((user, password.expose().to_string())),
            _ => Err(bad(
                "MWAA__DB__CREDENTIALS",
                format!(
                    "it is unset (and so is MWAA__DB__POSTGRES_USER or MWAA__DB__POSTGRES_PASSWORD) while {HOST} is set"
                ),
                r#"JSON {"username": "…", "password": "…"}"#,
            )),
        };
        let (user, password) = match credentials {
            Ok(pair) => pair,
            Err(invalid) => return Some(invalid),
        };
        let sslmode = self.text("MWAA__DB__POSTGRES_SSLMODE");
        Some(
            match DbUrl::from_parts(&host, port, &database, &user, &password, sslmode.as_deref()) {
                Ok(url) => Fallback::Valid(url),
                Err(problem) => bad(HOST, problem, "a host name or IP address"),
            },
        )
    }

    fn strategy(&self, name: &str) -> RestoreStrategy {
        self.text(name)
            .and_then(|s| s.parse::<RestoreStrategy>().ok())
            .unwrap_or(RestoreStrategy::Append)
    }

    /// The variable and connection strategies. The original's Backup-Restore supports only
    /// DO_NOTHING and REPLACE: an APPEND (the general default) becomes REPLACE there.
    fn strategies(
        &self,
        dr_type: Option<DrType>,
        entries: &mut [Resolved],
    ) -> (RestoreStrategy, RestoreStrategy) {
        let mut variable_strategy = self.strategy("DR_VARIABLE_RESTORE_STRATEGY");
        let mut connection_strategy = self.strategy("DR_CONNECTION_RESTORE_STRATEGY");
        if dr_type == Some(DrType::BackupRestore) {
            for (name, strategy) in [
                ("DR_VARIABLE_RESTORE_STRATEGY", &mut variable_strategy),
                ("DR_CONNECTION_RESTORE_STRATEGY", &mut connection_strategy),
            ] {
                if *strategy == RestoreStrategy::Append {
                    *strategy = RestoreStrategy::Replace;
                    if let Some(entry) = entries.iter_mut().find(|e| e.name == name) {
                        entry.value = serde_json::Value::String("REPLACE".into());
                        entry.note =
                            Some("APPEND turned into REPLACE by DR_TYPE=BACKUP_RESTORE".into());
                    }
                }
            }
        }
        (variable_strategy, connection_strategy)
    }

    /// DR_BACKUP_STORE, else the original's DR_BACKUP_BUCKET and DR_BACKUP_PREFIX.
    fn store(&self, entries: &mut [Resolved]) -> Option<StoreLocation> {
        match (self.get("DR_BACKUP_STORE"), self.text("DR_BACKUP_BUCKET")) {
            (Some(Value::Store(store)), _) => Some(store.clone()),
            (_, Some(bucket)) => {
                let derived = StoreLocation::s3(&bucket, &self.text_or_default("DR_BACKUP_PREFIX"));
                if let Some(entry) = entries.iter_mut().find(|e| e.name == "DR_BACKUP_STORE") {
                    entry.value = serde_json::Value::String(derived.to_string());
                    entry.note = Some("from DR_BACKUP_BUCKET and DR_BACKUP_PREFIX".into());
                }
                Some(derived)
            }
            _ => None,
        }
    }

    fn s3_encryption(&self) -> Result<Option<S3Encryption>> {
        Ok(
            match (
                self.text("DR_S3_SSE").as_deref(),
                self.text("DR_S3_KMS_KEY_ID"),
            ) {
                (Some("AES256"), None) => Some(S3Encryption::SseS3),
                (Some("aws:kms"), key_id) => Some(S3Encryption::SseKms { key_id }),
                (None, None) => None,
                (sse, Some(_)) => {
                    return Err(Error::InvalidValue {
                        variable: "DR_S3_KMS_KEY_ID".into(),
                        value: self.text_or_default("DR_S3_KMS_KEY_ID"),
                        problem: format!(
                            "a KMS key needs DR_S3_SSE=aws:kms, but DR_S3_SSE is {}",
                            sse.unwrap_or("unset")
                        ),
                        accepted: "DR_S3_KMS_KEY_ID only together with DR_S3_SSE=aws:kms".into(),
                    });
                }
                (Some(_), None) => None,
            },
        )
    }

    /// The `PRIMARY_*` or `SECONDARY_*` settings.
    fn side(&self, prefix: &str) -> Side {
        Side {
            region: self.text(&format!("{prefix}_REGION")),
            environment_name: self.text(&format!("{prefix}_MWAA_ENVIRONMENT_NAME")),
            role_arn: self.text(&format!("{prefix}_MWAA_ROLE_ARN")),
            dags_bucket: self.text(&format!("{prefix}_DAGS_BUCKET_NAME")),
            vpc_id: self.text(&format!("{prefix}_VPC_ID")),
            subnet_ids: self.list(&format!("{prefix}_SUBNET_IDS")),
            security_group_ids: self.list(&format!("{prefix}_SECURITY_GROUP_IDS")),
            db_url: self.db(&format!("{prefix}_DB_URL")),
            fernet_key: self.secret(&format!("{prefix}_FERNET_KEY")),
        }
    }

    /// HEALTH_CHECK_SCHEDULE_NAME, else the name the original's stack gives the schedule:
    /// `<STACK_NAME_PREFIX>-scheduler`.
    fn schedule_name(&self, entries: &mut [Resolved]) -> Option<String> {
        if let Some(name) = self.text("HEALTH_CHECK_SCHEDULE_NAME") {
            return Some(name);
        }
        let derived =
            crate::deploy::cloudformation::default_schedule_name(&self.text("STACK_NAME_PREFIX")?);
        if let Some(entry) = entries
            .iter_mut()
            .find(|e| e.name == "HEALTH_CHECK_SCHEDULE_NAME")
        {
            entry.value = serde_json::Value::String(derived.clone());
            entry.note = Some("from STACK_NAME_PREFIX".into());
        }
        Some(derived)
    }

    fn health_check(&self, entries: &mut [Resolved]) -> HealthCheckSettings {
        HealthCheckSettings {
            enabled: self.flag("HEALTH_CHECK_ENABLED"),
            interval: self.minutes("HEALTH_CHECK_INTERVAL_MINS"),
            max_retry: u32::try_from(self.count("HEALTH_CHECK_MAX_RETRY")).unwrap_or(u32::MAX),
            retry_interval: self.secs("HEALTH_CHECK_RETRY_INTERVAL_SECS"),
            backoff_rate: match self.get("HEALTH_CHECK_RETRY_BACKOFF_RATE") {
                Some(Value::Number(n)) => *n,
                _ => 2.0,
            },
            // A wait longer than the whole recovery may take is never useful.
            max_retry_wait: self.minutes("STATE_MACHINE_TIMEOUT_MINS"),
            schedule_name: self.schedule_name(entries),
            simulate_dr: self.flag("MWAA_SIMULATE_DR"),
        }
    }

    fn failover(&self) -> FailoverSettings {
        FailoverSettings {
            create_env_polling_interval: self.secs("MWAA_CREATE_ENV_POLLING_INTERVAL_SECS"),
            timeout: self.minutes("STATE_MACHINE_TIMEOUT_MINS"),
            unpause_wait: self.secs("SECONDARY_UNPAUSE_WAIT_SECS"),
            cleanup_cool_off: self.secs("SECONDARY_CLEANUP_COOL_OFF_SECS"),
            sns_topic_arn: self.text("DR_SNS_TOPIC_ARN"),
            notification_emails: self.list("MWAA_NOTIFICATION_EMAILS"),
            backup_file_name: self.text_or_default("MWAA_BACKUP_FILE_NAME"),
        }
    }

    fn deployment(&self) -> DeploymentSettings {
        DeploymentSettings {
            aws_account_id: self.text("AWS_ACCOUNT_ID"),
            stack_name_prefix: self.text("STACK_NAME_PREFIX"),
            update_execution_role: self.flag("MWAA_UPDATE_EXECUTION_ROLE"),
            create_sfn_vpce: self.flag("SECONDARY_CREATE_SFN_VPCE"),
            export_dag_name: self.text_or_default("METADATA_EXPORT_DAG_NAME"),
            import_dag_name: self.text_or_default("METADATA_IMPORT_DAG_NAME"),
            cleanup_dag_name: self.text_or_default("METADATA_CLEANUP_DAG_NAME"),
            dags_s3_path: self.text_or_default("MWAA_DAGS_S3_PATH"),
            backup_schedule: self.text_or_default("PRIMARY_BACKUP_SCHEDULE"),
            replication_polling_interval: self.secs("PRIMARY_REPLICATION_POLLING_INTERVAL_SECS"),
            dr_dag_run: self
                .text(crate::model::DAG_RUN_VARIABLE)
                .and_then(|v| crate::model::DagRunRef::parse(&v).ok()),
        }
    }

    fn db_timeouts(&self) -> DbTimeouts {
        DbTimeouts {
            connect: self.secs("MWAA_DR_DB_CONNECT_TIMEOUT_SECS"),
            statement: self.secs("MWAA_DR_DB_STATEMENT_TIMEOUT_SECS"),
            lock: self.secs("MWAA_DR_DB_LOCK_TIMEOUT_SECS"),
            idle_in_transaction: self.secs("MWAA_DR_DB_IDLE_TIMEOUT_SECS"),
            read: self.secs("MWAA_DR_DB_IDLE_TIMEOUT_SECS"),
        }
    }

    fn aws_timeouts(&self) -> AwsTimeouts {
        AwsTimeouts {
            connect: AwsTimeouts::default().connect,
            attempt: self.secs("MWAA_DR_AWS_TIMEOUT_SECS"),
            max_attempts: u32::try_from(self.count("MWAA_DR_AWS_MAX_ATTEMPTS")).unwrap_or(3),
        }
    }
}

#[derive(Debug, Clone)]
struct InvalidFallback {
    variable: &'static str,
    shown: String,
    problem: String,
    accepted: String,
}

impl<T: Clone> Fallback<T> {
    fn get(&self) -> Result<T> {
        match self {
            Fallback::Valid(value) => Ok(value.clone()),
            Fallback::Invalid(bad) => Err(Error::InvalidValue {
                variable: bad.variable.into(),
                value: bad.shown.clone(),
                problem: bad.problem.clone(),
                accepted: bad.accepted.clone(),
            }),
        }
    }
}

/// Airflow 3 runs a task with its database URL replaced by this scheme, so that task code
/// cannot use the metadata database through Airflow; the URL is then not there at all, and
/// the next source (MWAA's own `MWAA__DB__*` variables, which Airflow leaves alone) applies.
const AIRFLOW3_TASK_DB_MARKER: &str = "airflow-db-not-allowed:";

fn is_blocked_in_task(value: &str) -> bool {
    value.trim().starts_with(AIRFLOW3_TASK_DB_MARKER)
}

fn fallback<T>(
    name: &'static str,
    valid: Option<T>,
    invalid: &[InvalidFallback],
) -> Option<Fallback<T>> {
    match valid {
        Some(value) => Some(Fallback::Valid(value)),
        None => invalid
            .iter()
            .find(|bad| bad.variable == name)
            .cloned()
            .map(Fallback::Invalid),
    }
}

/// The value as an error may show it.
fn shown_value(spec: &VarSpec, raw: &str) -> String {
    match spec.kind {
        Kind::DatabaseUrl => redact_url(raw),
        Kind::FernetKey | Kind::Password => "***".into(),
        _ => raw.to_string(),
    }
}

/// The error for a bad value, naming what the user wrote: the flag when the value came from
/// the command line, else the variable (and the `.env` file it was read from).
fn invalid_value(
    spec: &VarSpec,
    raw: &str,
    problem: String,
    source: &Source,
    layers: &Layers,
    versions: &VersionTable,
) -> Error {
    let value = shown_value(spec, raw);
    let accepted = spec.kind.accepted(versions);
    match (source, layers.flag_name(spec.name), &layers.env_file_path) {
        (Source::Flag, Some(flag), _) => Error::Usage {
            message: format!(
                "{flag} {value:?} is not valid: {problem}; accepted: {accepted} (the flag stands for {})",
                spec.name
            ),
        },
        (Source::EnvFile, _, Some(path)) => Error::InvalidValue {
            variable: spec.name.to_string(),
            value,
            problem: format!("{problem} (from {})", path.display()),
            accepted,
        },
        _ => Error::InvalidValue {
            variable: spec.name.to_string(),
            value,
            problem,
            accepted,
        },
    }
}

/// Command-line flags that stand for a configuration variable.
fn add_flags(cli: &Cli, layers: &mut Layers) {
    // clap also reads DR_BACKUP_STORE from the environment for `--store`; a value equal to
    // the environment's is that environment value, not a flag.
    if let Some(store) = &cli.global.store
        && layers.env.get("DR_BACKUP_STORE") != Some(store)
    {
        layers.set_flag("DR_BACKUP_STORE", "--store", store.clone());
    }
    let (db_var, db) = match &cli.command {
        Command::Backup(args) => ("PRIMARY_DB_URL", args.db.db.as_ref()),
        Command::Restore(args) => ("SECONDARY_DB_URL", args.db.db.as_ref()),
        Command::Cleanup(args) => ("SECONDARY_DB_URL", args.db.db.as_ref()),
        _ => ("", None),
    };
    if let Some(db) = db {
        layers.set_flag(db_var, "--db", db.clone());
    }
    let jobs = match &cli.command {
        Command::Backup(args) => args.jobs.as_ref(),
        Command::Restore(args) => args.jobs.as_ref(),
        _ => None,
    };
    if let Some(jobs) = jobs {
        layers.set_flag("DR_BACKUP_JOBS", "--jobs", jobs.clone());
    }
    let simulate = match &cli.command {
        Command::HealthCheck(args) => args.simulate_dr,
        Command::Failover(args) => args.simulate_dr,
        _ => false,
    };
    if simulate {
        layers.set_flag("MWAA_SIMULATE_DR", "--simulate-dr", "YES");
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    const KEY_A: &str = "dGhpcy1pcy1hLXRlc3Qta2V5LW9mLTMyLWJ5dGVzISE=";
    const KEY_B: &str = "YW5vdGhlci10ZXN0LWtleS1vZi0zMi1ieXRlcyEhISE=";

    fn config(env: &[(&str, &str)]) -> Result<Config> {
        let cli = Cli::try_parse_from(["mwaa-dr", "backup"]).expect("parses");
        let layers = Layers {
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Layers::default()
        };
        Config::from_cli(&cli, layers)
    }

    const MWAA_DB: &[(&str, &str)] = &[
        ("MWAA__DB__POSTGRES_HOST", "db.rds.example"),
        ("MWAA__DB__POSTGRES_PORT", "5433"),
        ("MWAA__DB__POSTGRES_DB", "AirflowMetadata"),
        ("MWAA__DB__POSTGRES_SSLMODE", "require"),
        (
            "MWAA__DB__CREDENTIALS",
            r#"{"username": "adminuser", "password": "hunter2"}"#,
        ),
    ];

    #[test]
    fn schedule_name_defaults_to_the_originals_name_from_the_stack_prefix() {
        let derived = config(&[("STACK_NAME_PREFIX", "mwaa-2-10-3")]).expect("config");
        assert_eq!(
            derived.health_check.schedule_name.as_deref(),
            Some("mwaa-2-10-3-scheduler")
        );
        let entry = derived
            .entries()
            .iter()
            .find(|e| e.name == "HEALTH_CHECK_SCHEDULE_NAME")
            .expect("entry");
        assert_eq!(entry.value, "mwaa-2-10-3-scheduler");
        assert_eq!(entry.note.as_deref(), Some("from STACK_NAME_PREFIX"));

        let explicit = config(&[
            ("STACK_NAME_PREFIX", "mwaa-2-10-3"),
            ("HEALTH_CHECK_SCHEDULE_NAME", "my-health-check"),
        ])
        .expect("config");
        assert_eq!(
            explicit.health_check.schedule_name.as_deref(),
            Some("my-health-check")
        );
        assert_eq!(
            config(&[]).expect("config").health_check.schedule_name,
            None
        );
    }

    #[test]
    fn mwaas_raw_variables_are_the_database_fallback_after_airflows_url() {
        let url = config(MWAA_DB)
            .expect("config")
            .source_db("backup")
            .expect("url");
        assert_eq!(
            url.redacted(),
            "postgres://adminuser:***@db.rds.example:5433/AirflowMetadata?sslmode=require"
        );
        let mut env = MWAA_DB.to_vec();
        env.push((
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
            "postgresql+psycopg2://u:p@worker/airflow?sslmode=require",
        ));
        let url = config(&env)
            .expect("config")
            .target_db("restore")
            .expect("url");
        assert_eq!(url.database(), "airflow");
        let old_image = [
            ("MWAA__DB__POSTGRES_HOST", "db"),
            ("MWAA__DB__POSTGRES_DB", "airflow"),
            ("MWAA__DB__POSTGRES_USER", "u"),
            ("MWAA__DB__POSTGRES_PASSWORD", "p w"),
        ];
        let url = config(&old_image)
            .expect("config")
            .source_db("backup")
            .expect("url");
        assert_eq!(url.redacted(), "postgres://u:***@db:5432/airflow");
    }

    #[test]
    fn airflow_3s_blocked_task_url_gives_way_to_mwaas_variables() {
        // What an Airflow 3 task process sees (measured with real 3.0.6 under its scheduler).
        let mut env = MWAA_DB.to_vec();
        env.push((
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
            "airflow-db-not-allowed:///",
        ));
        let url = config(&env)
            .expect("config")
            .source_db("backup")
            .expect("url");
        assert_eq!(url.database(), "AirflowMetadata");
        // Without MWAA's variables there is no database, as if the URL were not set.
        let config = config(&[(
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
            "airflow-db-not-allowed:///",
        )])
        .expect("config");
        assert!(!config.has_source_db());
        let err = config
            .source_db("backup")
            .expect_err("no database")
            .to_string();
        assert!(err.contains("MWAA__DB__"), "{err}");
    }

    #[test]
    fn incomplete_mwaa_variables_fail_when_used_naming_the_variable_not_the_password() {
        for (drop, variable) in [
            ("MWAA__DB__POSTGRES_DB", "MWAA__DB__POSTGRES_DB"),
            ("MWAA__DB__CREDENTIALS", "MWAA__DB__CREDENTIALS"),
        ] {
            let env: Vec<_> = MWAA_DB
                .iter()
                .copied()
                .filter(|(k, _)| *k != drop)
                .collect();
            let config = config(&env).expect("lazy: config resolves");
            let err = config.source_db("backup").expect_err("refused").to_string();
            assert!(err.contains(variable), "{err}");
        }
        let mut env = MWAA_DB.to_vec();
        env.retain(|(k, _)| *k != "MWAA__DB__CREDENTIALS");
        env.push((
            "MWAA__DB__CREDENTIALS",
            r#"{"user": "x", "pass": "hunter2"}"#,
        ));
        let err = config(&env)
            .expect("config")
            .source_db("backup")
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains("MWAA__DB__CREDENTIALS") && !err.contains("hunter2"),
            "{err}"
        );
    }

    #[test]
    fn mwaas_fernet_key_is_the_fallback_after_airflows() {
        let only_mwaa = config(&[("MWAA__CORE__FERNET_KEY", KEY_B)]).expect("config");
        let key = only_mwaa.fernet_key(&only_mwaa.primary).expect("valid");
        assert_eq!(key.map(|k| k.expose().to_string()).as_deref(), Some(KEY_B));
        let both = config(&[
            ("AIRFLOW__CORE__FERNET_KEY", KEY_A),
            ("MWAA__CORE__FERNET_KEY", KEY_B),
        ])
        .expect("config");
        let key = both.fernet_key(&both.secondary).expect("valid");
        assert_eq!(key.map(|k| k.expose().to_string()).as_deref(), Some(KEY_A));
    }
}
