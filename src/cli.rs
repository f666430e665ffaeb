//! The command line: clap derive structs only. Validation happens in `config`.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

const GLOBAL: &str = "Global options";
const STORE: &str = "Backup store";
const DATABASE: &str = "Database";
const LEGACY: &str = "Backups of the original Python mwaa-dr library";

/// Disaster recovery for Apache Airflow and Amazon MWAA.
///
/// Backs up the Airflow metadata database into a backup store (S3 or a local directory),
/// restores it into another environment, watches the primary's health and runs the failover.
/// Configuration comes from flags, then environment variables, then the `.env` file, then
/// defaults; `mwaa-dr config` shows the resolved values and where each came from.
#[derive(Debug, Parser)]
#[command(
    name = "mwaa-dr",
    version,
    long_version = crate::airflow::versions::long_version(),
    propagate_version = true,
    term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Read variables from this file [default: ./.env, ignored when missing]
    #[arg(long, global = true, value_name = "PATH", env = "MWAA_DR_ENV_FILE", hide_env_values = true, help_heading = GLOBAL)]
    pub env_file: Option<PathBuf>,

    /// Do not read any .env file
    #[arg(long, global = true, env = "MWAA_DR_NO_DOTENV", hide_env_values = true, help_heading = GLOBAL)]
    pub no_dotenv: bool,

    /// Format of results on stdout (and of errors on stderr)
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text, env = "MWAA_DR_OUTPUT", hide_env_values = true, help_heading = GLOBAL)]
    pub output: OutputFormat,

    /// More log output on stderr (-v info, -vv debug, -vvv trace)
    #[arg(short, long, global = true, action = ArgAction::Count, conflicts_with = "quiet", help_heading = GLOBAL)]
    pub verbose: u8,

    /// Only errors on stderr
    #[arg(short, long, global = true, help_heading = GLOBAL)]
    pub quiet: bool,

    /// Print what would be done and change nothing
    #[arg(long, global = true, env = "MWAA_DR_DRY_RUN", hide_env_values = true, help_heading = GLOBAL)]
    pub dry_run: bool,

    /// Do not ask for confirmation before destructive steps
    #[arg(long, short = 'y', global = true, env = "MWAA_DR_YES", hide_env_values = true, help_heading = GLOBAL)]
    pub yes: bool,

    /// Backup store: s3://bucket/prefix, file:///path or a plain directory path
    #[arg(long, global = true, value_name = "URL", env = "DR_BACKUP_STORE", hide_env_values = true, help_heading = STORE)]
    pub store: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Back up the Airflow metadata database into a new backup in the store
    ///
    /// Reads every catalogued table from one consistent snapshot of the source database
    /// (PRIMARY_DB_URL, or AIRFLOW__DATABASE__SQL_ALCHEMY_CONN) and writes compressed CSV
    /// objects and a manifest to the backup store.
    Backup(BackupArgs),

    /// Restore a backup into an Airflow metadata database
    ///
    /// Verifies every object's checksum first, loads the copied tables into shadow tables over
    /// --jobs connections while the target stays readable, then switches them in and loads the
    /// rest in one short transaction into the target (SECONDARY_DB_URL, or
    /// AIRFLOW__DATABASE__SQL_ALCHEMY_CONN).
    Restore(RestoreArgs),

    /// Empty the restorable tables of a (standby) metadata database
    ///
    /// Keeps what the running environment needs: its own scheduler job, default_pool,
    /// log_template and the DAG definitions.
    Cleanup(CleanupArgs),

    /// Check the primary environment's health (scheduler heartbeat and status)
    ///
    /// Exits 0 when healthy and 3 when unhealthy.
    HealthCheck(HealthCheckArgs),

    /// Run the whole recovery for the configured DR_TYPE, step by step and resumable
    Failover(FailoverArgs),

    /// List the complete backups in the store, newest first
    List,

    /// Re-read a backup and check every object's size, SHA-256 and row count
    Verify(VerifyArgs),

    /// Delete old backups according to a retention policy
    Prune(PruneArgs),

    /// Print the resolved configuration and where each value came from (secrets redacted)
    Config,

    /// Render what runs mwaa-dr inside MWAA: the DR DAGs and the startup script
    #[command(subcommand)]
    Dags(DagsCommand),

    /// Deploy the unattended recovery: one CloudFormation stack per Region, and the DR DAGs
    ///
    /// Creates or updates the stacks STACK_NAME_PREFIX-primary and STACK_NAME_PREFIX-secondary
    /// through change sets (an empty change set changes nothing), then uploads the DR DAGs and
    /// the startup script to each DAGs bucket where they differ. With --dry-run, prints each
    /// change set and the files that would be uploaded, and changes nothing.
    Deploy(DeployArgs),

    /// Delete what `deploy` created: both stacks and the uploaded DAGs and startup script
    ///
    /// Refuses while a backup bucket holds objects, unless --delete-backups.
    Undeploy(UndeployArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RegionChoice {
    Primary,
    Secondary,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Print the Step Functions state machine definition (Amazon States Language JSON) the
    /// secondary's stack carries, and change nothing
    #[arg(long, conflicts_with_all = ["template_out", "region_only", "binary_uri"])]
    pub print_definition: bool,

    /// Write the two templates (JSON) into this folder and change nothing, for your own
    /// pipeline
    #[arg(long, value_name = "DIR")]
    pub template_out: Option<PathBuf>,

    /// Deploy only this Region's stack and DAGs [default: both]
    #[arg(long, value_enum, value_name = "REGION")]
    pub region_only: Option<RegionChoice>,

    /// S3 URI of the mwaa-dr binary the startup script installs (needed unless
    /// --template-out)
    #[arg(long, value_name = "s3://BUCKET/KEY")]
    pub binary_uri: Option<String>,

    /// S3 object version of the binary to install [default: the latest]
    #[arg(long, value_name = "VERSION")]
    pub binary_version: Option<String>,

    /// SHA-256 the binary must have (hex); the startup script refuses any other
    #[arg(long, value_name = "HEX", conflicts_with = "binary_file")]
    pub binary_sha256: Option<String>,

    /// Take the SHA-256 from this local copy of the binary instead
    #[arg(long, value_name = "PATH")]
    pub binary_file: Option<PathBuf>,

    /// Where the startup script installs the binary
    #[arg(long, value_name = "PATH", default_value = crate::deploy::DEFAULT_INSTALL_PATH)]
    pub install_path: String,
}

#[derive(Debug, Args)]
pub struct UndeployArgs {
    /// Also delete the backups: empty the versioned backup buckets (every version) so that
    /// their stacks can delete them
    #[arg(long)]
    pub delete_backups: bool,

    /// Remove only this Region's stack and DAGs [default: both]
    #[arg(long, value_enum, value_name = "REGION")]
    pub region_only: Option<RegionChoice>,
}

#[derive(Debug, Subcommand)]
pub enum DagsCommand {
    /// Write the backup, restore and cleanup DAGs and the MWAA startup script into a folder
    ///
    /// The DAG files take their settings from the configuration now (no password nor key is
    /// written: the worker's environment gives those); upload them to the DAGs folder, and the
    /// startup script as the environment's startup script.
    Render(DagsRenderArgs),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("checksum").required(true).args(["binary_sha256", "binary_file"])))]
pub struct DagsRenderArgs {
    /// Folder to write the files into (created when missing)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// S3 URI of the mwaa-dr binary the startup script installs
    #[arg(long, value_name = "s3://BUCKET/KEY", required = true)]
    pub binary_uri: String,

    /// S3 object version of the binary to install [default: the latest]
    #[arg(long, value_name = "VERSION")]
    pub binary_version: Option<String>,

    /// SHA-256 the binary must have (hex); the startup script refuses any other
    #[arg(long, value_name = "HEX")]
    pub binary_sha256: Option<String>,

    /// Take the SHA-256 from this local copy of the binary instead
    #[arg(long, value_name = "PATH")]
    pub binary_file: Option<PathBuf>,

    /// Where the startup script installs the binary (and where the DAGs look for it when
    /// MWAA_DR_BIN is unset)
    #[arg(long, value_name = "PATH", default_value = crate::deploy::DEFAULT_INSTALL_PATH)]
    pub install_path: String,
}

#[derive(Debug, Args)]
pub struct DbArg {
    /// PostgreSQL URL of the metadata database (postgresql+psycopg2:// accepted)
    #[arg(long, value_name = "URL", help_heading = DATABASE)]
    pub db: Option<String>,
}

#[derive(Debug, Args)]
pub struct TaskTokenArg {
    /// Report the outcome to the Step Functions execution waiting on this task token
    /// (SendTaskSuccess with the report, SendTaskFailure with `mwaa-dr.<class>` and the error)
    #[arg(long = "task-token", value_name = "TOKEN")]
    pub token: Option<String>,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub db: DbArg,

    #[command(flatten)]
    pub task: TaskTokenArg,

    /// Parallel database connections used to stream tables, 1 to 64 [default: DR_BACKUP_JOBS,
    /// else 2]
    // No `env` here: DR_BACKUP_JOBS is validated with the other variables, for every command,
    // and its errors name the variable rather than this flag.
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<String>,

    /// Airflow version to assume when the database's alembic revision is unknown
    #[arg(long, value_name = "VERSION")]
    pub airflow_version: Option<String>,

    /// Only save the primary environment's definition (GetEnvironment), no tables
    #[arg(long)]
    pub environment_only: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub db: DbArg,

    #[command(flatten)]
    pub task: TaskTokenArg,

    /// Backup to restore: an id (see `list`) or `latest` [default: the latest complete backup]
    #[arg(long, value_name = "ID")]
    pub backup_id: Option<String>,

    /// Empty the restorable tables first, in the same transaction
    #[arg(long)]
    pub clean: bool,

    /// Parallel database connections that load the copied tables into shadow tables before
    /// the transaction, 1 to 64 [default: DR_BACKUP_JOBS, else 2]
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<String>,

    /// Restore a backup written by the original Python mwaa-dr library instead: its CSV files
    /// at LOCATION (s3://bucket, or a directory such as the DAGs folder) [default: the store]
    #[arg(long, value_name = "LOCATION", num_args = 0..=1, default_missing_value = "", conflicts_with = "backup_id", help_heading = LEGACY)]
    pub from_legacy: Option<String>,

    /// Folder of the legacy files under LOCATION: the original's path_prefix [default: data]
    #[arg(long, value_name = "PREFIX", requires = "from_legacy", help_heading = LEGACY)]
    pub legacy_prefix: Option<String>,

    /// Airflow version that wrote the legacy files, which do not record it [default:
    /// MWAA_VERSION]
    #[arg(long, value_name = "VERSION", requires = "from_legacy", help_heading = LEGACY)]
    pub airflow_version: Option<String>,

    /// Write the legacy files' plaintext variables and connection secrets unencrypted when no
    /// target Fernet key is set, instead of refusing
    #[arg(long, requires = "from_legacy", help_heading = LEGACY)]
    pub allow_unencrypted_secrets: bool,

    /// Run the restore DAG in this MWAA environment through its REST API instead of writing a
    /// database [default without a database URL: SECONDARY_MWAA_ENVIRONMENT_NAME]
    #[arg(long, value_name = "NAME", conflicts_with_all = ["db", "from_legacy"])]
    pub environment: Option<String>,
}

#[derive(Debug, Args)]
pub struct CleanupArgs {
    #[command(flatten)]
    pub db: DbArg,

    #[command(flatten)]
    pub task: TaskTokenArg,

    /// Run the cleanup DAG in this MWAA environment through its REST API instead of writing a
    /// database [default without a database URL: SECONDARY_MWAA_ENVIRONMENT_NAME]
    #[arg(long, value_name = "NAME", conflicts_with = "db")]
    pub environment: Option<String>,
}

#[derive(Debug, Args)]
pub struct HealthCheckArgs {
    /// Report the primary as unhealthy whatever it says (for drills)
    #[arg(long)]
    pub simulate_dr: bool,
}

#[derive(Debug, Args)]
pub struct FailoverArgs {
    /// Fail over even when the primary reports healthy
    #[arg(long)]
    pub force: bool,

    /// Treat the primary as unhealthy (for drills)
    #[arg(long)]
    pub simulate_dr: bool,

    /// Run the recovery as an execution of the deployed Step Functions state machine,
    /// follow it, and print its timeline
    #[arg(long, conflicts_with = "force")]
    pub via_step_functions: bool,

    /// The state machine to start: a name or an ARN [default: <STACK_NAME_PREFIX>-state-machine,
    /// the one `deploy` creates]
    #[arg(long, value_name = "NAME|ARN", requires = "via_step_functions")]
    pub state_machine: Option<String>,

    /// Start nothing: follow an execution already started (by the schedule, an alarm or
    /// someone else) and print its timeline, with the same exit code as a started one. An
    /// execution ARN, or `latest`: the state machine's newest running execution, else its
    /// last one
    #[arg(
        long,
        value_name = "ARN|latest",
        requires = "via_step_functions",
        conflicts_with = "simulate_dr",
        value_parser = parse_execution
    )]
    pub execution: Option<ExecutionChoice>,
}

/// The execution `failover --via-step-functions --execution` follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecutionChoice {
    /// The state machine's newest running execution, else its last one.
    Latest,
    /// `arn:<partition>:states:<region>:<account>:execution:<machine>:<name>`.
    Arn(String),
}

impl ExecutionChoice {
    /// The Region an execution ARN names (the parser accepts only ARNs that name one).
    pub fn region(&self) -> Option<&str> {
        match self {
            ExecutionChoice::Latest => None,
            ExecutionChoice::Arn(arn) => arn.split(':').nth(3).filter(|r| !r.is_empty()),
        }
    }
}

fn parse_execution(value: &str) -> Result<ExecutionChoice, String> {
    if value == "latest" {
        return Ok(ExecutionChoice::Latest);
    }
    let parts: Vec<&str> = value.split(':').collect();
    if parts.len() >= 8
        && parts[0] == "arn"
        && parts[2] == "states"
        && !parts[3].is_empty()
        && parts[5] == "execution"
        && parts[6..].iter().all(|p| !p.is_empty())
    {
        return Ok(ExecutionChoice::Arn(value.to_string()));
    }
    Err(
        "expected an execution ARN (arn:aws:states:REGION:ACCOUNT:execution:MACHINE:NAME) or `latest`"
            .to_string(),
    )
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Backup to verify: an id (see `list`) or `latest` [default: the latest complete backup]
    #[arg(value_name = "ID")]
    pub backup_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Keep the N newest complete backups
    #[arg(long, value_name = "N", required = true)]
    pub keep_last: usize,

    /// Also keep every backup younger than this (e.g. 36h, 7d, 2w)
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,

    /// Also delete backup folders without a manifest (interrupted backups) whose id and
    /// objects are all older than this; at least 1h, since a running backup may take hours
    #[arg(
        long,
        value_name = "DURATION",
        env = "DR_PRUNE_INCOMPLETE_AFTER",
        hide_env_values = true,
        default_value = "24h"
    )]
    pub incomplete_after: String,
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Backup(_) => "backup",
            Command::Restore(_) => "restore",
            Command::Cleanup(_) => "cleanup",
            Command::HealthCheck(_) => "health-check",
            Command::Failover(_) => "failover",
            Command::List => "list",
            Command::Verify(_) => "verify",
            Command::Prune(_) => "prune",
            Command::Config => "config",
            Command::Dags(DagsCommand::Render(_)) => "dags render",
            Command::Deploy(_) => "deploy",
            Command::Undeploy(_) => "undeploy",
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn execution_is_latest_or_an_execution_arn() {
        let arn = "arn:aws:states:us-east-2:123456789012:execution:m-state-machine:run-1";
        assert_eq!(parse_execution("latest"), Ok(ExecutionChoice::Latest));
        assert_eq!(
            parse_execution(arn),
            Ok(ExecutionChoice::Arn(arn.to_string()))
        );
        assert_eq!(
            parse_execution(arn).map(|e| e.region().map(str::to_string)),
            Ok(Some("us-east-2".to_string()))
        );
        assert_eq!(ExecutionChoice::Latest.region(), None);
        for bad in [
            "",
            "Latest",
            "run-1",
            "arn:aws:states:us-east-2:123456789012:stateMachine:m-state-machine",
            "arn:aws:states:us-east-2:123456789012:execution:m-state-machine:",
            "arn:aws:sns:us-east-2:123456789012:execution:m:run-1",
            "arn:aws:states::123456789012:execution:m-state-machine:run-1",
        ] {
            let err = parse_execution(bad).expect_err(bad);
            assert!(
                err.contains("execution ARN") && err.contains("`latest`"),
                "{err}"
            );
        }
    }
}
