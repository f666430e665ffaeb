//! Every configuration variable: name, accepted values, default and meaning, as one table.
//!
//! The names and defaults of the original MWAA disaster-recovery solution are kept, so an
//! existing `.env` works unchanged. `docs/CONFIGURATION.md` and `.env.example` list the same
//! variables; a test keeps them in step with this table.

use base64::Engine;
use serde_json::Value as Json;

use crate::airflow::versions::VersionTable;
use crate::model::DbUrl;
use crate::model::Secret;
use crate::store::StoreLocation;

/// What values a variable accepts.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Text,
    /// `YES` or `NO` (case-insensitive), as in the original.
    YesNo,
    /// A whole number from `min` to `max`. The bound keeps durations computed from it
    /// (minutes * 60, ...) far from overflowing.
    Count {
        min: i64,
        max: i64,
    },
    /// A finite decimal number from `min` to `max`.
    Number {
        min: f64,
        max: f64,
    },
    /// A JSON list of strings; the brackets are required even for one element.
    List,
    OneOf(&'static [&'static str]),
    /// An Airflow version from `config/airflow-versions.json`.
    AirflowVersion,
    /// A cron expression (5 fields) or an Airflow preset such as `@hourly`.
    Schedule,
    Region,
    AccountId,
    BucketName,
    /// An ARN of the given service.
    Arn(&'static str),
    /// A PostgreSQL (or SQLAlchemy PostgreSQL) URL; the password is a secret.
    DatabaseUrl,
    /// One Fernet key or a comma-separated MultiFernet list; a secret.
    FernetKey,
    /// Any non-empty text that must never be shown (a password, a credentials document).
    Password,
    /// `s3://bucket/prefix`, `file:///path` or a plain path.
    Store,
    /// A tracing filter directive such as `info` or `mwaa_dr=debug`.
    LogFilter,
}

/// Where a variable belongs, for documentation and `config` output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Strategy,
    Primary,
    Secondary,
    Store,
    Database,
    Restore,
    HealthCheck,
    Failover,
    Deployment,
    Logging,
}

impl Group {
    pub fn title(self) -> &'static str {
        match self {
            Group::Strategy => "Strategy",
            Group::Primary => "Primary region",
            Group::Secondary => "Secondary region",
            Group::Store => "Backup store",
            Group::Database => "Metadata databases and Fernet keys",
            Group::Restore => "Restore",
            Group::HealthCheck => "Health check",
            Group::Failover => "Failover",
            Group::Deployment => "Deployment (Airflow DAGs, Step Functions, schedules)",
            Group::Logging => "Logging",
        }
    }
}

#[derive(Debug)]
pub struct VarSpec {
    pub name: &'static str,
    pub kind: Kind,
    pub default: Option<&'static str>,
    pub group: Group,
    pub help: &'static str,
    /// Checked only when a command uses it (a fallback that may hold anything otherwise).
    pub lazy: bool,
    /// Why the variable changes nothing in this build, and what will use it: accepted so
    /// that the original's `.env` works unchanged, and marked by `config` when set.
    pub no_effect: Option<&'static str>,
}

impl VarSpec {
    /// Marks a variable that is accepted but changes nothing in this build.
    const fn no_effect(self, why: &'static str) -> VarSpec {
        VarSpec {
            no_effect: Some(why),
            ..self
        }
    }
}

const fn var(
    name: &'static str,
    kind: Kind,
    default: Option<&'static str>,
    group: Group,
    help: &'static str,
) -> VarSpec {
    VarSpec {
        name,
        kind,
        default,
        group,
        help,
        lazy: false,
        no_effect: None,
    }
}

pub const DR_TYPES: &[&str] = &["BACKUP_RESTORE", "WARM_STANDBY"];
pub const RESTORE_STRATEGIES: &[&str] = &["DO_NOTHING", "APPEND", "REPLACE"];
pub const SSE_MODES: &[&str] = &["AES256", "aws:kms"];
/// libpq's sslmode values (sqlx accepts the same).
pub const SSL_MODES: &[&str] = &[
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

use Group as G;
use Kind as K;

/// The variables, in the order `config` prints them.
pub const VARS: &[VarSpec] = &[
    var(
        "DR_TYPE",
        K::OneOf(DR_TYPES),
        None,
        G::Strategy,
        "The disaster recovery strategy. Needed by `failover`.",
    ),
    var(
        "MWAA_VERSION",
        K::AirflowVersion,
        None,
        G::Strategy,
        "The deployed MWAA (Airflow) version. Backups detect the version from the database; this value is checked against it.",
    ),
    var(
        "AWS_ACCOUNT_ID",
        K::AccountId,
        None,
        G::Strategy,
        "Your AWS account id (12 digits).",
    ),
    var(
        "STACK_NAME_PREFIX",
        K::Text,
        None,
        G::Strategy,
        "Name prefix of everything `deploy` creates: the stacks <prefix>-primary and <prefix>-secondary, the backup buckets, roles, topics, state machine and schedule (lowercase letters, digits and hyphens; see docs/DEPLOY.md). `failover` disables the schedule `<prefix>-scheduler` (the original's name for it) unless HEALTH_CHECK_SCHEDULE_NAME names another.",
    ),
    var(
        "PRIMARY_REGION",
        K::Region,
        None,
        G::Primary,
        "The primary AWS region.",
    ),
    var(
        "PRIMARY_MWAA_ENVIRONMENT_NAME",
        K::Text,
        None,
        G::Primary,
        "The primary MWAA environment. Needed by `health-check` and `failover`; `backup` saves its definition when set.",
    ),
    var(
        "PRIMARY_MWAA_ROLE_ARN",
        K::Arn("iam"),
        None,
        G::Primary,
        "Execution role ARN of the primary environment.",
    ),
    var(
        "PRIMARY_DAGS_BUCKET_NAME",
        K::BucketName,
        None,
        G::Primary,
        "DAGs S3 bucket of the primary environment.",
    ),
    var(
        "PRIMARY_VPC_ID",
        K::Text,
        None,
        G::Primary,
        "VPC of the primary environment.",
    )
    .no_effect(
        "the original's primary stack places its Lambda functions there; `deploy` needs no network in the primary Region",
    ),
    var(
        "PRIMARY_SUBNET_IDS",
        K::List,
        None,
        G::Primary,
        "Subnets of the primary environment, as a JSON list: '[\"subnet-1\", \"subnet-2\"]'.",
    )
    .no_effect(
        "the original's primary stack places its Lambda functions there; `deploy` needs no network in the primary Region",
    ),
    var(
        "PRIMARY_SECURITY_GROUP_IDS",
        K::List,
        None,
        G::Primary,
        "Security groups of the primary environment, as a JSON list: '[\"sg-1\"]'.",
    )
    .no_effect(
        "the original's primary stack places its Lambda functions there; `deploy` needs no network in the primary Region",
    ),
    var(
        "SECONDARY_REGION",
        K::Region,
        None,
        G::Secondary,
        "The secondary AWS region for disaster recovery.",
    ),
    var(
        "SECONDARY_MWAA_ENVIRONMENT_NAME",
        K::Text,
        None,
        G::Secondary,
        "The secondary MWAA environment (existing for WARM_STANDBY, created for BACKUP_RESTORE). Needed by `failover`.",
    ),
    var(
        "SECONDARY_MWAA_ROLE_ARN",
        K::Arn("iam"),
        None,
        G::Secondary,
        "Execution role ARN for the secondary environment. Needed by BACKUP_RESTORE `failover`.",
    ),
    var(
        "SECONDARY_DAGS_BUCKET_NAME",
        K::BucketName,
        None,
        G::Secondary,
        "DAGs S3 bucket of the secondary environment. Needed by BACKUP_RESTORE `failover`.",
    ),
    var(
        "SECONDARY_VPC_ID",
        K::Text,
        None,
        G::Secondary,
        "VPC of the secondary environment.",
    ),
    var(
        "SECONDARY_SUBNET_IDS",
        K::List,
        None,
        G::Secondary,
        "Subnets for the secondary environment, as a JSON list. Needed by BACKUP_RESTORE `failover`.",
    ),
    var(
        "SECONDARY_SECURITY_GROUP_IDS",
        K::List,
        None,
        G::Secondary,
        "Security groups for the secondary environment, as a JSON list. Needed by BACKUP_RESTORE `failover`.",
    ),
    var(
        "SECONDARY_CREATE_SFN_VPCE",
        K::YesNo,
        Some("NO"),
        G::Secondary,
        "Whether `deploy` creates the Step Functions interface VPC endpoint in SECONDARY_VPC_ID (in SECONDARY_SUBNET_IDS, with SECONDARY_SECURITY_GROUP_IDS), for private environments whose workers answer the workflow's task token.",
    ),
    var(
        "DR_BACKUP_STORE",
        K::Store,
        None,
        G::Store,
        "Where backups live: s3://bucket/prefix, file:///path or a plain directory path. Default: s3://$DR_BACKUP_BUCKET/$DR_BACKUP_PREFIX.",
    ),
    var(
        "DR_BACKUP_BUCKET",
        K::BucketName,
        None,
        G::Store,
        "Backup S3 bucket (name, not ARN), used when DR_BACKUP_STORE is not set.",
    ),
    var(
        "DR_BACKUP_PREFIX",
        K::Text,
        Some("mwaa-dr"),
        G::Store,
        "Key prefix inside DR_BACKUP_BUCKET.",
    ),
    var(
        "DR_S3_SSE",
        K::OneOf(SSE_MODES),
        None,
        G::Store,
        "S3 server-side encryption of backup objects: AES256 (SSE-S3) or aws:kms (SSE-KMS). Unset: the bucket's default.",
    ),
    var(
        "DR_S3_KMS_KEY_ID",
        K::Text,
        None,
        G::Store,
        "KMS key id or ARN for DR_S3_SSE=aws:kms (unset: the account's aws/s3 key).",
    ),
    var(
        "DR_BACKUP_JOBS",
        K::Count { min: 1, max: 64 },
        Some("2"),
        G::Store,
        "Parallel database connections that `backup` streams tables over and `restore` (and a failover's restore) loads them into shadow tables over (flag: backup --jobs, restore --jobs).",
    ),
    var(
        "DR_TABLE_CATALOG",
        K::Text,
        None,
        G::Store,
        "A table catalog file replacing the built-in one, config/tables.json on Airflow 2 and config/tables-3.json on Airflow 3 (which tables a backup holds, their filters, restore modes and cleanup).",
    ),
    var(
        "PRIMARY_DB_URL",
        K::DatabaseUrl,
        None,
        G::Database,
        "Metadata database that `backup` reads (flag: backup --db).",
    ),
    var(
        "SECONDARY_DB_URL",
        K::DatabaseUrl,
        None,
        G::Database,
        "Metadata database that `restore`, `cleanup` and `failover` write (flag: restore/cleanup --db).",
    ),
    VarSpec {
        lazy: true,
        ..var(
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
            K::DatabaseUrl,
            None,
            G::Database,
            "Airflow's own database URL; the fallback for PRIMARY_DB_URL and SECONDARY_DB_URL (set inside Airflow workers; Airflow 3's `airflow-db-not-allowed:///` in a task counts as unset). Checked only when used.",
        )
    },
    VarSpec {
        lazy: true,
        ..var(
            "AIRFLOW__CORE__SQL_ALCHEMY_CONN",
            K::DatabaseUrl,
            None,
            G::Database,
            "Airflow 2.4's name for the database URL; the last fallback. Checked only when used.",
        )
    },
    VarSpec {
        lazy: true,
        ..var(
            "MWAA__DB__POSTGRES_HOST",
            K::Text,
            None,
            G::Database,
            "MWAA's own metadata database host, set inside MWAA containers. With MWAA__DB__POSTGRES_PORT, MWAA__DB__POSTGRES_DB, MWAA__DB__POSTGRES_SSLMODE and MWAA__DB__CREDENTIALS (or MWAA__DB__POSTGRES_USER and MWAA__DB__POSTGRES_PASSWORD) it is the fallback after AIRFLOW__CORE__SQL_ALCHEMY_CONN. Checked only when used.",
        )
    },
    VarSpec {
        lazy: true,
        ..var(
            "MWAA__DB__POSTGRES_PORT",
            K::Count {
                min: 1,
                max: 65_535,
            },
            None,
            G::Database,
            "MWAA's metadata database port (see MWAA__DB__POSTGRES_HOST). Checked only when used.",
        )
    },
    VarSpec {
        lazy: true,
        ..var(
            "MWAA__DB__POSTGRES_DB",
            K::Text,
            None,
            G::Database,
            "MWAA's metadata database name (see MWAA__DB__POSTGRES_HOST). Checked only when used.",
        )
    },
    VarSpec {
        lazy: true,
        ..var(
            "MWAA__DB__POSTGRES_SSLMODE",
            K::OneOf(SSL_MODES),
            None,
            G::Database,
            "TLS mode of MWAA's metadata database, as libpq spells it (see MWAA__DB__POSTGRES_HOST); unset: prefer. Checked only when used.",
        )
    },
    VarSpec {
        lazy: true,
        ..var(
            "MWAA__DB__CREDENTIALS",
            K::Password,
            None,
            G::Database,
            "MWAA's metadata database user and password, as JSON {\"username\": …, \"password\": …} (see MWAA__DB__POSTGRES_HOST). Checked only when used.",
        )
    },
    VarSpec {
        lazy: true,
        ..var(
            "MWAA__DB__POSTGRES_USER",
            K::Text,
            None,
            G::Database,
            "MWAA's metadata database user, used when MWAA__DB__CREDENTIALS is unset (older MWAA images). Checked only when used.",
        )
    },
    VarSpec {
        lazy: true,
        ..var(
            "MWAA__DB__POSTGRES_PASSWORD",
            K::Password,
            None,
            G::Database,
            "MWAA's metadata database password, used with MWAA__DB__POSTGRES_USER. Checked only when used.",
        )
    },
    var(
        "MWAA_DR_DB_CONNECT_TIMEOUT_SECS",
        K::Count { min: 1, max: 3600 },
        Some("30"),
        G::Database,
        "Seconds to connect and authenticate to a metadata database before the run fails (transient).",
    ),
    var(
        "MWAA_DR_DB_STATEMENT_TIMEOUT_SECS",
        K::Count {
            min: 0,
            max: 604800,
        },
        Some("21600"),
        G::Database,
        "Seconds one statement may run on the server (statement_timeout; 0: no limit).",
    ),
    var(
        "MWAA_DR_DB_LOCK_TIMEOUT_SECS",
        K::Count { min: 1, max: 86400 },
        Some("60"),
        G::Database,
        "Seconds a restore or cleanup waits for a table another session holds; the error names that session.",
    ),
    var(
        "MWAA_DR_DB_IDLE_TIMEOUT_SECS",
        K::Count { min: 1, max: 86400 },
        Some("600"),
        G::Database,
        "Seconds the server lets a transaction of ours sit idle (e.g. the store not answering) before it ends it and frees its locks; also the longest wait for the next byte of a COPY.",
    ),
    var(
        "MWAA_DR_AWS_TIMEOUT_SECS",
        K::Count { min: 1, max: 3600 },
        Some("120"),
        G::Store,
        "Seconds one attempt of one AWS call (S3, MWAA, CloudWatch, Scheduler, SNS) may take; throttling and timeouts are retried up to MWAA_DR_AWS_MAX_ATTEMPTS.",
    ),
    var(
        "MWAA_DR_AWS_MAX_ATTEMPTS",
        K::Count { min: 1, max: 10 },
        Some("3"),
        G::Store,
        "Attempts per AWS call, the first included.",
    ),
    var(
        "PRIMARY_FERNET_KEY",
        K::FernetKey,
        None,
        G::Database,
        "Fernet key (or comma-separated key list, as Airflow's: the first key encrypts, every key decrypts) of the primary environment. `restore` decrypts the backup's secrets with it when they must be re-encrypted for the secondary.",
    ),
    var(
        "SECONDARY_FERNET_KEY",
        K::FernetKey,
        None,
        G::Database,
        "Fernet key (or comma-separated key list) of the secondary environment. When it differs from the primary's, `restore` re-encrypts variables, connection passwords and extras and trigger kwargs with its first key; when either key is unknown, ciphertext is copied as it is.",
    ),
    VarSpec {
        lazy: true,
        ..var(
            "AIRFLOW__CORE__FERNET_KEY",
            K::FernetKey,
            None,
            G::Database,
            "Airflow's own Fernet key; the fallback for PRIMARY_FERNET_KEY and SECONDARY_FERNET_KEY. Checked only when used.",
        )
    },
    VarSpec {
        lazy: true,
        ..var(
            "MWAA__CORE__FERNET_KEY",
            K::FernetKey,
            None,
            G::Database,
            "MWAA's own Fernet key, set inside MWAA containers; the fallback after AIRFLOW__CORE__FERNET_KEY. Checked only when used.",
        )
    },
    var(
        "DR_KMS_KEY_ID",
        K::Text,
        None,
        G::Database,
        "KMS key (id, alias or ARN; a multi-Region key whose replica is in the secondary Region) that wraps a per-backup data key: `backup` re-encrypts every Fernet secret under that data key (kms:GenerateDataKey) and stores only the wrapped key; `restore` unwraps it (kms:Decrypt) and re-encrypts for the target's key. Not with DR_BACKUP_FERNET_KEY.",
    ),
    var(
        "DR_BACKUP_FERNET_KEY",
        K::FernetKey,
        None,
        G::Database,
        "A Fernet key both sides know (e.g. from Secrets Manager): `backup` re-encrypts every Fernet secret under it, `restore` decrypts with it and re-encrypts for the target's key. Not with DR_KMS_KEY_ID.",
    ),
    var(
        "DR_VARIABLE_RESTORE_STRATEGY",
        K::OneOf(RESTORE_STRATEGIES),
        Some("APPEND"),
        G::Restore,
        "How `restore` treats the variable table: DO_NOTHING, APPEND (keep existing keys) or REPLACE. BACKUP_RESTORE turns APPEND into REPLACE.",
    ),
    var(
        "DR_CONNECTION_RESTORE_STRATEGY",
        K::OneOf(RESTORE_STRATEGIES),
        Some("APPEND"),
        G::Restore,
        "How `restore` treats the connection table: DO_NOTHING, APPEND (keep existing ids) or REPLACE. BACKUP_RESTORE turns APPEND into REPLACE.",
    ),
    var(
        "SECONDARY_CLEANUP_COOL_OFF_SECS",
        K::Count {
            min: 0,
            max: 86_400,
        },
        Some("30"),
        G::Restore,
        "The original's wait between cleanup and restore. Accepted and shown; mwaa-dr cleans and restores in one transaction, so it does not wait.",
    )
    .no_effect(
        "`failover` and `restore --clean` empty the tables and restore in one transaction, so there is no pause between cleanup and restore to configure",
    ),
    var(
        "HEALTH_CHECK_ENABLED",
        K::YesNo,
        Some("YES"),
        G::HealthCheck,
        "Whether the deployed schedule runs the health check (and the recovery when it fails). Across Regions: whether the heartbeat alarm's rule starts the recovery (the heartbeat itself always runs).",
    ),
    var(
        "HEALTH_CHECK_INTERVAL_MINS",
        K::Count { min: 1, max: 1_440 },
        Some("5"),
        G::HealthCheck,
        "Minutes between scheduled health checks (across Regions: between heartbeat events, the heartbeat alarm's period).",
    ),
    var(
        "HEALTH_CHECK_MAX_RETRY",
        K::Count { min: 0, max: 100 },
        Some("2"),
        G::HealthCheck,
        "Retries after a failed health check before the primary is declared unhealthy (across Regions: the heartbeat alarm fires after this many + 1 missed intervals, at least 2).",
    ),
    var(
        "HEALTH_CHECK_RETRY_INTERVAL_SECS",
        K::Count {
            min: 1,
            max: 86_400,
        },
        Some("5"),
        G::HealthCheck,
        "Seconds before the first retry (the exponential backoff coefficient).",
    ),
    var(
        "HEALTH_CHECK_RETRY_BACKOFF_RATE",
        K::Number {
            min: 1.0,
            max: 100.0,
        },
        Some("2"),
        G::HealthCheck,
        "Factor by which the retry interval grows (the exponential backoff ratio).",
    ),
    var(
        "HEALTH_CHECK_SCHEDULE_NAME",
        K::Text,
        None,
        G::HealthCheck,
        "EventBridge Scheduler schedule (or EventBridge rule) that runs the health check; `failover` disables it. Across Regions `deploy` gives this name to the EventBridge rule the heartbeat alarm fires. Default: `<STACK_NAME_PREFIX>-scheduler` (the original's name for it) when STACK_NAME_PREFIX is set.",
    ),
    var(
        "MWAA_SIMULATE_DR",
        K::YesNo,
        Some("NO"),
        G::HealthCheck,
        "Force the health check to report the primary unhealthy, for drills (flag: --simulate-dr).",
    ),
    var(
        "MWAA_CREATE_ENV_POLLING_INTERVAL_SECS",
        K::Count { min: 1, max: 3_600 },
        Some("60"),
        G::Failover,
        "Seconds between status checks while the secondary environment is being created.",
    ),
    var(
        "STATE_MACHINE_TIMEOUT_MINS",
        K::Count {
            min: 1,
            max: 10_080,
        },
        Some("60"),
        G::Failover,
        "Minutes the recovery may take before it is failed.",
    ),
    var(
        "SECONDARY_UNPAUSE_WAIT_SECS",
        K::Count {
            min: 0,
            max: 86_400,
        },
        Some("600"),
        G::Failover,
        "Seconds a failover without SECONDARY_DB_URL waits for the secondary's scheduler to parse the DAGs it unpauses (0: unpause those parsed, wait for none).",
    ),
    var(
        "MWAA_BACKUP_FILE_NAME",
        K::Text,
        Some("environment.json"),
        G::Failover,
        "Key, at the root of the backup bucket (the store's bucket; a directory store's root), of the primary's definition that the original solution's Step Functions workflow saved. A Backup-Restore `failover` recreates the environment from it when the store holds no definition saved by `mwaa-dr` (`environments/<name>/`). `mwaa-dr` reads it and never writes it.",
    ),
    var(
        "MWAA_NOTIFICATION_EMAILS",
        K::List,
        Some("[]"),
        G::Failover,
        "Emails `deploy` subscribes to the SNS topics of both Regions (failed, timed-out or aborted workflow executions, failover outcomes), as a JSON list: '[\"ops@example.com\"]'.",
    ),
    var(
        "DR_SNS_TOPIC_ARN",
        K::Arn("sns"),
        None,
        G::Failover,
        "SNS topic notified when a failover succeeds or fails, and when a `backup` fails (a successful backup notifies nobody, as in the original). Published in the topic's own region.",
    ),
    var(
        "MWAA_UPDATE_EXECUTION_ROLE",
        K::YesNo,
        Some("NO"),
        G::Deployment,
        "Whether `deploy` adds a policy to the execution roles: on the secondary's, the Step Functions task-token calls (states:SendTaskSuccess/Failure/Heartbeat) and the backup bucket; on the primary's, the backup bucket and the notification topic.",
    ),
    var(
        "METADATA_EXPORT_DAG_NAME",
        K::Text,
        Some("backup_metadata"),
        G::Deployment,
        "Name of the DAG that runs `mwaa-dr backup` inside Airflow; its own in-flight rows are left out of backups.",
    ),
    var(
        "METADATA_IMPORT_DAG_NAME",
        K::Text,
        Some("restore_metadata"),
        G::Deployment,
        "Name of the DAG that runs `mwaa-dr restore` inside Airflow.",
    ),
    var(
        "METADATA_CLEANUP_DAG_NAME",
        K::Text,
        Some("cleanup_metadata"),
        G::Deployment,
        "Name of the DAG that runs `mwaa-dr cleanup` inside Airflow.",
    ),
    var(
        "MWAA_DR_DAG_RUN",
        K::Text,
        None,
        G::Deployment,
        "DAG_ID/RUN_ID of the DR DAG run executing this process, set by the rendered DAGs: a clean restore or cleanup keeps that run's rows (and the DR DAGs' in-flight runs) where they are.",
    ),
    var(
        "MWAA_DAGS_S3_PATH",
        K::Text,
        Some("dags"),
        G::Deployment,
        "Folder of the DAGs bucket where DAGs are deployed.",
    ),
    var(
        "PRIMARY_BACKUP_SCHEDULE",
        K::Schedule,
        Some("0 * * * *"),
        G::Deployment,
        "Cron schedule (or @hourly, @daily, ...) of the backups.",
    ),
    var(
        "PRIMARY_REPLICATION_POLLING_INTERVAL_SECS",
        K::Count { min: 1, max: 3_600 },
        Some("30"),
        G::Deployment,
        "The original's polling interval of its one-time DAGs-bucket replication job.",
    )
    .no_effect(
        "`deploy` uploads the DR DAGs to both DAGs buckets instead of replicating them once (see docs/DEPLOY.md)",
    ),
    var(
        "MWAA_DR_LOG",
        K::LogFilter,
        None,
        G::Logging,
        "Log filter for stderr, e.g. info or mwaa_dr=debug (overrides -v/-q).",
    ),
];

pub fn spec(name: &str) -> Option<&'static VarSpec> {
    VARS.iter().find(|v| v.name == name)
}

/// A validated value.
#[derive(Debug, Clone)]
pub enum Value {
    Text(String),
    Bool(bool),
    Int(i64),
    Number(f64),
    List(Vec<String>),
    DbUrl(DbUrl),
    Secret(Secret),
    Store(StoreLocation),
}

impl Value {
    /// The value as `config` shows it: secrets redacted.
    pub fn to_display_json(&self) -> Json {
        match self {
            Value::Text(s) => Json::String(s.clone()),
            Value::Bool(b) => Json::String(if *b { "YES" } else { "NO" }.into()),
            Value::Int(i) => Json::from(*i),
            Value::Number(n) => Json::from(*n),
            Value::List(items) => Json::from(items.clone()),
            Value::DbUrl(url) => Json::String(url.redacted().to_string()),
            Value::Secret(s) => Json::String(s.to_string()),
            Value::Store(store) => Json::String(store.to_string()),
        }
    }
}

impl Kind {
    /// A description of the accepted values, for error messages and docs.
    pub fn accepted(&self, versions: &VersionTable) -> String {
        match self {
            K::Text => "any text".into(),
            K::YesNo => "YES or NO".into(),
            K::Count { min, max } => format!("a whole number, {min} or more, at most {max}"),
            K::Number { min, max } => format!("a number, {min} or more, at most {max}"),
            K::List => "a JSON list of strings with brackets, e.g. '[\"a\", \"b\"]' or '[\"a\"]'".into(),
            K::OneOf(values) => values.join(", "),
            K::AirflowVersion => versions.known_versions().join(", "),
            K::Schedule => "a 5-field cron expression such as '0 * * * *' (minute 0-59, hour 0-23, day-of-month 1-31, month 1-12 or JAN-DEC, day-of-week 0-7 or SUN-SAT; each a value, *, a range a-b, a list a,b, with /step), or @once, @hourly, @daily, @midnight, @weekly, @monthly, @quarterly, @yearly, @annually".into(),
            K::Region => "an AWS region name such as us-east-1".into(),
            K::AccountId => "12 digits".into(),
            K::BucketName => "an S3 bucket name (3-63 lowercase letters, digits, dots, hyphens), not an ARN".into(),
            K::Arn(service) => format!("an ARN of the form arn:aws:{service}:…"),
            K::DatabaseUrl => crate::model::ACCEPTED_DB_URLS.into(),
            K::FernetKey => "a Fernet key (32 bytes, url-safe base64, 44 characters) or a comma-separated list of them".into(),
            K::Password => "any text (a secret)".into(),
            K::Store => crate::model::ACCEPTED_LOCATIONS.into(),
            K::LogFilter => "a log filter such as error, warn, info, debug or mwaa_dr=debug,sqlx=warn".into(),
        }
    }

    /// Whether values of this kind must never be shown.
    pub fn is_secret(&self) -> bool {
        matches!(self, K::DatabaseUrl | K::FernetKey | K::Password)
    }

    /// Checks `raw`; on failure returns the problem, never the secret.
    pub fn parse(&self, raw: &str, versions: &VersionTable) -> Result<Value, String> {
        let value = raw.trim();
        match self {
            K::Text => {
                if value.is_empty() {
                    Err("it is empty".into())
                } else {
                    Ok(Value::Text(value.into()))
                }
            }
            K::YesNo => match value.to_ascii_uppercase().as_str() {
                "YES" => Ok(Value::Bool(true)),
                "NO" => Ok(Value::Bool(false)),
                _ => Err("not YES or NO".into()),
            },
            K::Count { min, max } => parse_count(value, *min, *max).map(Value::Int),
            K::Number { min, max } => parse_number(value, *min, *max).map(Value::Number),
            K::List => parse_list(value).map(Value::List),
            K::OneOf(values) => values
                .iter()
                .find(|v| **v == value)
                .map(|v| Value::Text((*v).to_string()))
                .ok_or_else(|| "unknown value".to_string()),
            K::AirflowVersion => text_if(
                versions.is_known(value),
                value,
                "not a known Airflow version",
            ),
            K::Schedule => parse_schedule(value).map(|()| Value::Text(value.into())),
            K::Region => text_if(is_region(value), value, "not an AWS region name"),
            K::AccountId => text_if(
                value.len() == 12 && value.bytes().all(|b| b.is_ascii_digit()),
                value,
                "not 12 digits",
            ),
            K::BucketName => text_if(is_bucket_name(value), value, "not a valid S3 bucket name"),
            K::Arn(service) => {
                let parts: Vec<&str> = value.splitn(6, ':').collect();
                let is_arn = parts.len() == 6
                    && parts[0] == "arn"
                    && parts[2] == *service
                    && !parts[5].is_empty();
                text_if(is_arn, value, &format!("not an {service} ARN"))
            }
            K::DatabaseUrl => DbUrl::parse(value).map(Value::DbUrl),
            K::FernetKey => parse_fernet_keys(value).map(|()| Value::Secret(Secret::new(value))),
            K::Password if value.is_empty() => Err("it is empty".into()),
            K::Password => Ok(Value::Secret(Secret::new(value))),
            K::Store => value.parse::<StoreLocation>().map(Value::Store),
            K::LogFilter => tracing_subscriber::EnvFilter::try_new(value)
                .map(|_| Value::Text(value.into()))
                .map_err(|e| format!("not a log filter ({e})")),
        }
    }
}

/// `value` as text when `valid`, else `problem`.
fn text_if(valid: bool, value: &str, problem: &str) -> Result<Value, String> {
    if valid {
        Ok(Value::Text(value.into()))
    } else {
        Err(problem.into())
    }
}

/// A whole number within `min..=max`.
fn parse_count(value: &str, min: i64, max: i64) -> Result<i64, String> {
    let n: i64 = value.parse().map_err(|_| {
        // Digits beyond i64 are a number too, just far out of range.
        let digits = value.strip_prefix(['-', '+']).unwrap_or(value);
        match (
            value.starts_with('-'),
            !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()),
        ) {
            (true, true) => format!("it is below the minimum {min}"),
            (false, true) => format!("it is above the maximum {max}"),
            _ => "not a whole number".to_string(),
        }
    })?;
    if n < min {
        Err(format!("{n} is below the minimum {min}"))
    } else if n > max {
        Err(format!("{n} is above the maximum {max}"))
    } else {
        Ok(n)
    }
}

/// A finite number within `min..=max`.
fn parse_number(value: &str, min: f64, max: f64) -> Result<f64, String> {
    let n: f64 = value.parse().map_err(|_| "not a number".to_string())?;
    if !n.is_finite() {
        Err("not a finite number".into())
    } else if n < min {
        Err(format!("{n} is below the minimum {min}"))
    } else if n > max {
        Err(format!("{n} is above the maximum {max}"))
    } else {
        Ok(n)
    }
}

/// The original's list syntax: a JSON array of strings, brackets required.
fn parse_list(value: &str) -> Result<Vec<String>, String> {
    if !(value.starts_with('[') && value.ends_with(']')) {
        return Err("a list needs its brackets, even with one element".into());
    }
    let items: Vec<Json> =
        serde_json::from_str(value).map_err(|e| format!("not a JSON list ({e})"))?;
    items
        .into_iter()
        .map(|item| match item {
            Json::String(s) => Ok(s),
            other => Err(format!("element {other} is not a string")),
        })
        .collect()
}

fn parse_schedule(value: &str) -> Result<(), String> {
    const PRESETS: &[&str] = &[
        "@once",
        "@hourly",
        "@daily",
        "@midnight",
        "@weekly",
        "@monthly",
        "@quarterly",
        "@yearly",
        "@annually",
    ];
    if value.starts_with('@') {
        return if PRESETS.contains(&value) {
            Ok(())
        } else {
            Err("unknown preset".into())
        };
    }
    let fields: Vec<&str> = value.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!("{} fields, a cron expression has 5", fields.len()));
    }
    for (field, spec) in fields.iter().zip(&CRON_FIELDS) {
        for item in field.split(',') {
            cron_item(item, spec)
                .map_err(|problem| format!("{} field {field:?}: {problem}", spec.name))?;
        }
    }
    Ok(())
}

/// One field of a cron expression: its name, range and the names it accepts for numbers.
struct CronField {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// The first name stands for this number (JAN is 1, SUN is 0).
    first_named: u32,
}

const MONTHS: &[&str] = &[
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: &[&str] = &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

const CRON_FIELDS: [CronField; 5] = [
    CronField {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
        first_named: 0,
    },
    CronField {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
        first_named: 0,
    },
    CronField {
        name: "day-of-month",
        min: 1,
        max: 31,
        names: &[],
        first_named: 0,
    },
    CronField {
        name: "month",
        min: 1,
        max: 12,
        names: MONTHS,
        first_named: 1,
    },
    // 0 and 7 are both Sunday.
    CronField {
        name: "day-of-week",
        min: 0,
        max: 7,
        names: WEEKDAYS,
        first_named: 0,
    },
];

/// The accepted forms, as cron (croniter, which Airflow uses) reads them: `*`, a value, a
/// range `a-b`, any of them with a step `/n`; `?` and `L` (last day) in day-of-month, `?`,
/// `DAY#n` (the n-th DAY) and `DAYL` (the last DAY) in day-of-week.
fn cron_item(item: &str, field: &CronField) -> Result<(), String> {
    let range = || format!("accepted: {}", cron_range(field));
    let is_dom = field.name == "day-of-month";
    let is_dow = field.name == "day-of-week";
    if item.is_empty() {
        return Err("an empty list element".into());
    }
    if (is_dom || is_dow) && item == "?" || is_dom && item.eq_ignore_ascii_case("L") {
        return Ok(());
    }
    if is_dow {
        if let Some((day, nth)) = item.split_once('#') {
            cron_value(day, field).map_err(|e| format!("{e}; {}", range()))?;
            return match nth.parse::<u32>() {
                Ok(1..=5) => Ok(()),
                _ => Err(format!("{item:?}: the week after # must be 1 to 5")),
            };
        }
        if let Some(day) = item.strip_suffix(['L', 'l'])
            && !day.is_empty()
        {
            return cron_value(day, field)
                .map(|_| ())
                .map_err(|e| format!("{e}; {}", range()));
        }
    }
    let (base, step) = match item.split_once('/') {
        Some((base, step)) => (base, Some(step)),
        None => (item, None),
    };
    if let Some(step) = step {
        match step.parse::<u32>() {
            Ok(n) if n >= 1 && n <= field.max.max(1) => {}
            _ => {
                return Err(format!(
                    "step {step:?} is not a whole number from 1 to {}",
                    field.max.max(1)
                ));
            }
        }
    }
    if base == "*" {
        return Ok(());
    }
    let (low, high) = match base.split_once('-') {
        Some((low, high)) => (low, Some(high)),
        None => (base, None),
    };
    cron_value(low, field).map_err(|e| format!("{e}; {}", range()))?;
    if let Some(high) = high {
        cron_value(high, field).map_err(|e| format!("{e}; {}", range()))?;
    }
    Ok(())
}

fn cron_value(text: &str, field: &CronField) -> Result<u32, String> {
    if let Some(i) = field
        .names
        .iter()
        .position(|n| n.eq_ignore_ascii_case(text))
    {
        return Ok(field.first_named + u32::try_from(i).unwrap_or(0));
    }
    match text.parse::<u32>() {
        Ok(n) if (field.min..=field.max).contains(&n) => Ok(n),
        Ok(n) => Err(format!("{n} is outside {}-{}", field.min, field.max)),
        Err(_) => Err(format!("{text:?} is not a value")),
    }
}

fn cron_range(field: &CronField) -> String {
    match field.names {
        [] => format!("{}-{}", field.min, field.max),
        names => format!(
            "{}-{} or {}-{}",
            field.min,
            field.max,
            names.first().copied().unwrap_or_default(),
            names.last().copied().unwrap_or_default()
        ),
    }
}

fn is_region(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[0].bytes().all(|b| b.is_ascii_lowercase())
        && parts[1..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts
            .last()
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn is_bucket_name(value: &str) -> bool {
    (3..=63).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && value
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && value
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric())
}

/// Checks every key of a MultiFernet list decodes to 32 bytes.
fn parse_fernet_keys(value: &str) -> Result<(), String> {
    for (i, key) in value.split(',').map(str::trim).enumerate() {
        let decoded = base64::engine::general_purpose::URL_SAFE
            .decode(key)
            .map_err(|_| format!("key #{} is not url-safe base64", i + 1))?;
        if decoded.len() != 32 {
            return Err(format!(
                "key #{} decodes to {} bytes, a Fernet key has 32",
                i + 1,
                decoded.len()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(kind: Kind, raw: &str) -> Result<Value, String> {
        kind.parse(raw, &VersionTable::builtin())
    }

    #[test]
    fn names_are_unique_and_defaults_valid() {
        let versions = VersionTable::builtin();
        for (i, v) in VARS.iter().enumerate() {
            assert!(
                VARS[..i].iter().all(|w| w.name != v.name),
                "{} twice",
                v.name
            );
            if let Some(default) = v.default {
                v.kind
                    .parse(default, &versions)
                    .unwrap_or_else(|e| panic!("default of {}: {e}", v.name));
            }
        }
    }

    #[test]
    fn lists_need_brackets() {
        assert!(parse(K::List, "subnet-1").is_err());
        assert!(parse(K::List, "subnet-1,subnet-2").is_err());
        assert!(matches!(parse(K::List, r#"["a", "b"]"#), Ok(Value::List(v)) if v == ["a", "b"]));
        assert!(matches!(parse(K::List, "[]"), Ok(Value::List(v)) if v.is_empty()));
        assert!(parse(K::List, "[1]").is_err());
    }

    #[test]
    fn counts_reject_negatives_and_junk() {
        let count = K::Count { min: 0, max: 10 };
        assert!(parse(count, "-1").is_err());
        assert!(parse(count, "two").is_err());
        assert!(matches!(parse(count, "0"), Ok(Value::Int(0))));
        assert!(matches!(parse(count, "10"), Ok(Value::Int(10))));
        let err = parse(count, "11").expect_err("above max");
        assert!(err.contains("above the maximum 10"), "{err}");
        let err = parse(count, "99999999999999999999").expect_err("beyond i64");
        assert!(err.contains("above the maximum 10"), "{err}");
    }

    #[test]
    fn numbers_are_finite_and_bounded() {
        let rate = K::Number {
            min: 1.0,
            max: 100.0,
        };
        for bad in ["NaN", "nan", "inf", "-inf", "infinity"] {
            let err = parse(rate, bad).expect_err(bad);
            assert_eq!(err, "not a finite number", "{bad}");
        }
        let err = parse(rate, "1e308").expect_err("huge");
        assert!(err.contains("above the maximum 100"), "{err}");
        let err = parse(rate, "0.5").expect_err("small");
        assert!(err.contains("below the minimum 1"), "{err}");
        assert!(matches!(parse(rate, "2.5"), Ok(Value::Number(n)) if n == 2.5));
    }

    #[test]
    fn schedules() {
        for ok in [
            "0 * * * *",
            "@hourly",
            "@daily",
            "*/15 1-5 * * MON-FRI",
            "59 23 31 12 7",
            "0 0 1 1 0",
            "0,30 */2 1-15/3 jan-jun sun",
            "0 12 ? * MON#2",
            "0 12 L * 5L",
            "5/10 * * DEC *",
        ] {
            parse(K::Schedule, ok).expect(ok);
        }
        for bad in ["hourly", "0 * * *", "@sometimes", "0 * * * * * *"] {
            assert!(parse(K::Schedule, bad).is_err(), "{bad}");
        }
        for (bad, named) in [
            ("61 * * * *", "minute field \"61\": 61 is outside 0-59"),
            ("0 24 * * *", "hour field \"24\": 24 is outside 0-23"),
            ("0 0 0 * *", "day-of-month field \"0\": 0 is outside 1-31"),
            ("0 0 32 * *", "day-of-month"),
            ("0 0 * 13 *", "month field \"13\": 13 is outside 1-12"),
            ("0 0 * FOO *", "month field \"FOO\""),
            ("0 0 * * 8", "day-of-week field \"8\": 8 is outside 0-7"),
            ("*/0 * * * *", "minute field \"*/0\": step"),
            ("1,,2 * * * *", "an empty list element"),
            ("0 0 * * MON#6", "the week after # must be 1 to 5"),
            ("0-60 * * * *", "60 is outside 0-59"),
        ] {
            let err = parse(K::Schedule, bad).expect_err(bad);
            assert!(err.contains(named), "{bad}: {err}");
        }
    }

    #[test]
    fn regions_buckets_arns() {
        assert!(parse(K::Region, "us-east-1").is_ok());
        assert!(parse(K::Region, "us-gov-west-1").is_ok());
        assert!(parse(K::Region, "useast1").is_err());
        assert!(parse(K::BucketName, "mwaa-2-5-1-primary-source").is_ok());
        assert!(parse(K::BucketName, "arn:aws:s3:::bucket").is_err());
        assert!(parse(K::Arn("sns"), "arn:aws:sns:us-east-1:123456789012:topic").is_ok());
        assert!(parse(K::Arn("sns"), "arn:aws:sqs:us-east-1:123456789012:q").is_err());
    }

    #[test]
    fn fernet_keys() {
        let key = "Z2FsdGVydGVzdGtleWdhbHRlcnRlc3RrZXlnYWx0ZXI=";
        assert_eq!(key.len(), 44);
        assert!(parse(K::FernetKey, key).is_ok());
        assert!(parse(K::FernetKey, &format!("{key},{key}")).is_ok());
        let err = parse(K::FernetKey, "short").expect_err("short key");
        assert!(!err.contains("short"));
    }
}

/// The variable reference of `docs/CONFIGURATION.md`, one table per group.
pub fn markdown_reference() -> String {
    let versions = VersionTable::builtin();
    let mut out = String::new();
    let mut group = None;
    for v in VARS {
        if group != Some(v.group) {
            group = Some(v.group);
            out.push_str(&format!(
                "\n### {}\n\n| Variable | Default | Accepted | Meaning |\n|---|---|---|---|\n",
                v.group.title()
            ));
        }
        let default = v
            .default
            .map(|d| format!("`{d}`"))
            .unwrap_or_else(|| "—".into());
        let secret = if v.kind.is_secret() {
            " Secret: shown as `***`."
        } else {
            ""
        };
        let no_effect = v
            .no_effect
            .map(|why| format!(" **No effect in this build:** {why}."))
            .unwrap_or_default();
        out.push_str(&format!(
            "| `{}` | {} | {} | {}{}{} |\n",
            v.name,
            default,
            v.kind.accepted(&versions).replace('|', "\\|"),
            v.help.replace('|', "\\|"),
            secret,
            no_effect.replace('|', "\\|")
        ));
    }
    out
}

#[cfg(test)]
mod doc_tests {
    use super::*;

    const BEGIN: &str = "<!-- variables:begin (generated from src/config/vars.rs) -->";
    const END: &str = "<!-- variables:end -->";

    /// docs/CONFIGURATION.md carries the table generated from `VARS`; set
    /// MWAA_DR_UPDATE_DOCS=1 to rewrite it after changing a variable.
    #[test]
    fn configuration_doc_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/CONFIGURATION.md");
        let doc = std::fs::read_to_string(path).expect("docs/CONFIGURATION.md exists");
        let (start, end) = (
            doc.find(BEGIN).expect("begin marker") + BEGIN.len(),
            doc.find(END).expect("end marker"),
        );
        let expected = format!("\n{}\n", markdown_reference().trim());
        if doc[start..end] != expected {
            if std::env::var_os("MWAA_DR_UPDATE_DOCS").is_some() {
                let updated = format!("{}{}{}", &doc[..start], expected, &doc[end..]);
                std::fs::write(path, updated).expect("rewrite docs");
            } else {
                panic!(
                    "docs/CONFIGURATION.md is out of date: run MWAA_DR_UPDATE_DOCS=1 cargo test configuration_doc_is_current"
                );
            }
        }
    }

    /// Every variable appears in .env.example, commented or not.
    #[test]
    fn env_example_lists_every_variable() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/.env.example");
        let text = std::fs::read_to_string(path).expect(".env.example exists");
        for v in VARS {
            assert!(
                text.lines().any(|l| l
                    .trim_start_matches('#')
                    .trim_start()
                    .starts_with(&format!("{}=", v.name))),
                "{} missing from .env.example",
                v.name
            );
        }
    }
}
