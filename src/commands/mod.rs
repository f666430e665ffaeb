//! One module per subcommand: thin orchestration over the library.

pub mod backup;
pub mod cleanup;
pub mod config;
pub mod dag_files;
pub mod dags;
pub mod deploy;
pub mod failover;
pub mod health_check;
pub mod list;
pub mod prune;
pub mod remote;
pub mod restore;
pub mod restore_legacy;
pub mod verify;

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;

use crate::airflow::fernet::{FernetKeyring, FernetKeys, side_keys};
use crate::aws::cloudwatch::CloudWatchHeartbeat;
use crate::aws::mwaa::SdkMwaa;
use crate::aws::sfn::{SfnTaskCallback, TaskCallback};
use crate::config::{Config, DbUrl, Side};
use crate::db::PgConnector;
use crate::error::{Error, Result};
use crate::ops::Services;
use crate::progress::Progress;
use crate::store::{BackupStore, StoreLocation};

/// Runs `work`, the whole of `backup`, `restore` or `cleanup` (it returns the JSON document
/// it printed, if any), then delivers its final document — the report, or the JSON error —
/// where the caller waits for it:
/// - when the run is the task of a DR DAG (`MWAA_DR_DAG_RUN`), to the store as
///   `runs/<dag_id>/<run_id>.json` for callers outside MWAA, whose InvokeRestApi cannot read
///   the task's XCom or log (best effort: a failure is a warning and the outcome stands);
/// - with `--task-token`, to the Step Functions execution waiting on that token
///   (SendTaskSuccess with the report, or SendTaskFailure with `mwaa-dr.<class>` as the error
///   a Retry or Catch matches and the JSON error as the cause). A token that cannot be
///   answered fails the command: the execution would otherwise wait until its timeout.
pub async fn recorded(
    config: &Config,
    command: &str,
    task_token: Option<&str>,
    work: impl std::future::Future<Output = Result<Option<serde_json::Value>>>,
) -> Result<()> {
    let outcome = work.await;
    if config.dry_run {
        return outcome.map(|_| ());
    }
    let doc = match &outcome {
        Ok(Some(doc)) => doc.clone(),
        Ok(None) => serde_json::json!({}),
        Err(e) => e.to_json(),
    };
    if let Some(run) = &config.deployment.dr_dag_run {
        match record(config, command, run, &doc).await {
            Ok(key) => tracing::info!(key = %key, "wrote the DAG run's report to the store"),
            Err(e) => tracing::warn!(
                "the report of run {} of DAG {} was not written to the store (a caller outside MWAA will not see it): {e}",
                run.run_id,
                run.dag_id
            ),
        }
    }
    let Some(token) = task_token else {
        return outcome.map(|_| ());
    };
    let callback = SfnTaskCallback::new(None, &config.aws_timeouts).await;
    let answered = answer_task(&callback, token, &outcome, &doc).await;
    match (outcome, answered) {
        (Ok(_), Ok(())) => Ok(()),
        (Ok(_), Err(e)) => Err(e),
        (Err(e), Ok(())) => Err(e),
        (Err(e), Err(callback_error)) => {
            tracing::warn!(
                "the waiting Step Functions execution was not told of this failure: {callback_error}"
            );
            Err(e)
        }
    }
}

/// Answers the Step Functions task token with the command's outcome.
pub async fn answer_task(
    callback: &dyn TaskCallback,
    token: &str,
    outcome: &Result<Option<serde_json::Value>>,
    doc: &serde_json::Value,
) -> Result<()> {
    match outcome {
        Ok(_) => callback.succeed(token, &doc.to_string()).await,
        Err(e) => {
            let class = serde_json::to_value(e.kind())
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| "permanent".into());
            callback
                .fail(token, &format!("mwaa-dr.{class}"), &doc.to_string())
                .await
        }
    }
}

async fn record(
    config: &Config,
    command: &str,
    run: &crate::model::DagRunRef,
    doc: &serde_json::Value,
) -> Result<String> {
    let location = config.store(command)?;
    let store = open_store(location, config).await?;
    crate::store::runs::save(store.as_ref(), run, doc).await
}

/// Prints a result (see [`crate::output::emit`]) and returns its JSON document for
/// [`recorded`].
pub fn emitted<T: serde::Serialize>(
    config: &Config,
    doc: &T,
    text: impl FnOnce() -> String,
) -> Option<serde_json::Value> {
    crate::output::emit(config.output, doc, text);
    serde_json::to_value(doc).ok()
}

/// A service an operation uses, for [`services`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Store,
    Source,
    Target,
    PrimaryMwaa,
    Heartbeat,
}

/// The services `needs` names, from the configuration. Every setting is checked (in the
/// order of `needs`) before anything is opened, so a missing one changes nothing.
pub async fn services(config: &Config, command: &str, needs: &[Need]) -> Result<Services> {
    let mut location = None;
    let mut source = None;
    let mut target = None;
    for need in needs {
        match need {
            Need::Store => location = Some(config.store(command)?),
            Need::Source => source = Some(connector(config, config.source_db(command)?)),
            Need::Target => target = Some(connector(config, config.target_db(command)?)),
            Need::PrimaryMwaa | Need::Heartbeat => {}
        }
    }
    let region = config.primary.region.as_deref();
    let mut services = Services {
        source,
        target,
        ..Services::default()
    };
    if let Some(location) = location {
        services.store = Some(Arc::from(open_store(location, config).await?));
    }
    if needs.contains(&Need::PrimaryMwaa) {
        services.primary_mwaa = Some(Box::new(SdkMwaa::new(region, &config.aws_timeouts).await));
    }
    if needs.contains(&Need::Heartbeat) {
        services.heartbeat = Some(Box::new(
            CloudWatchHeartbeat::new(region, &config.aws_timeouts).await,
        ));
    }
    Ok(services)
}

/// Opens the configured kind of store at `location` (S3 encryption and timeouts from
/// `config`).
pub async fn open_store(location: &StoreLocation, config: &Config) -> Result<Box<dyn BackupStore>> {
    crate::store::open_store(
        location,
        config.s3_encryption.as_ref(),
        &config.aws_timeouts,
    )
    .await
}

/// The source's (primary's) Fernet keys: PRIMARY_FERNET_KEY, else AIRFLOW__CORE__FERNET_KEY.
pub fn source_keys(config: &Config) -> Result<Option<FernetKeys>> {
    side_keys(
        config.fernet_key(&config.primary)?.as_ref(),
        "PRIMARY_FERNET_KEY",
    )
}

/// The Fernet keys a restore knows; the backup's manifest says which one reads it.
pub fn fernet_keyring(config: &Config) -> Result<FernetKeyring> {
    let keys = |side: &Side, variable: &str| side_keys(config.fernet_key(side)?.as_ref(), variable);
    let backup_key = match &config.backup_key {
        crate::config::BackupKeySetting::Shared(key) => {
            side_keys(Some(key), "DR_BACKUP_FERNET_KEY")?
        }
        _ => None,
    };
    Ok(FernetKeyring {
        backup_key,
        source: keys(&config.primary, "PRIMARY_FERNET_KEY")?,
        target: keys(&config.secondary, "SECONDARY_FERNET_KEY")?,
    })
}

/// KMS in `region`, for the backup key; it connects only when a backup or manifest needs it.
pub fn kms(config: &Config, region: Option<&str>) -> Arc<dyn crate::aws::kms::Kms> {
    Arc::new(crate::aws::kms::SdkKms::new(region, &config.aws_timeouts))
}

/// How to reach `url`, with the configured timeouts.
pub fn connector(config: &Config, url: DbUrl) -> PgConnector {
    PgConnector::new(url, config.db_timeouts)
}

/// Asks before a destructive step, unless `--yes`. Without a terminal to ask on, refuses.
pub fn confirm(config: &Config, question: &str) -> Result<()> {
    if config.assume_yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Error::Usage {
            message: format!("{question}: no terminal to confirm on; pass --yes to proceed"),
        });
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES") {
        Ok(())
    } else {
        Err(Error::Usage {
            message: "not confirmed; nothing was changed".into(),
        })
    }
}

/// A progress bar that appears when the first table starts, so that no spinner runs over a
/// confirmation prompt or a dry run's plan.
pub struct BarOnFirstUse {
    verb: &'static str,
    quiet: bool,
    bar: std::sync::OnceLock<Box<dyn Progress>>,
}

impl BarOnFirstUse {
    pub fn new(verb: &'static str, quiet: bool) -> Self {
        BarOnFirstUse {
            verb,
            quiet,
            bar: std::sync::OnceLock::new(),
        }
    }

    fn bar(&self) -> &dyn Progress {
        self.bar
            .get_or_init(|| crate::progress::for_terminal(self.verb, self.quiet))
            .as_ref()
    }
}

impl Progress for BarOnFirstUse {
    fn start(&self, table: &str, index: usize, total: usize) {
        self.bar().start(table, index, total);
    }

    fn advance(&self, table: &str, bytes: u64) {
        self.bar().advance(table, bytes);
    }

    fn finish(&self, table: &str, rows: u64) {
        self.bar().finish(table, rows);
    }

    fn clear(&self) {
        if let Some(bar) = self.bar.get() {
            bar.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(String, String, String)>>);

    #[async_trait::async_trait]
    impl TaskCallback for Recorder {
        async fn succeed(&self, token: &str, output: &str) -> Result<()> {
            self.0
                .lock()
                .expect("lock")
                .push(("success".into(), token.into(), output.into()));
            Ok(())
        }
        async fn fail(&self, token: &str, error: &str, cause: &str) -> Result<()> {
            self.0
                .lock()
                .expect("lock")
                .push((error.into(), token.into(), cause.into()));
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_failure_answers_with_its_class_and_the_json_error() {
        let recorder = Recorder::default();
        let error = Error::transient(
            "restore",
            "dag_run",
            "canceling statement due to lock timeout",
        );
        let outcome: Result<Option<serde_json::Value>> = Err(error);
        let doc = outcome
            .as_ref()
            .err()
            .map(Error::to_json)
            .expect("error doc");
        answer_task(&recorder, "T", &outcome, &doc)
            .await
            .expect("answered");
        let report = serde_json::json!({"backup_id": "b"});
        answer_task(&recorder, "U", &Ok(Some(report.clone())), &report)
            .await
            .expect("answered");
        let calls = recorder.0.lock().expect("lock").clone();
        assert_eq!(calls[0].0, "mwaa-dr.transient", "a Retry matches the class");
        assert_eq!(calls[0].1, "T");
        let cause: serde_json::Value = serde_json::from_str(&calls[0].2).expect("JSON cause");
        assert_eq!(cause["error"]["retryable"], true);
        assert!(
            cause["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("lock timeout")
        );
        assert_eq!(calls[1], ("success".into(), "U".into(), report.to_string()));
    }
}
