//! The failover's restore step, two ways: straight into the secondary's database, or through
//! the restore DAG in the secondary when only its REST API is reachable.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use super::{RestoreStep, state};
use crate::aws::airflow_api::AirflowApi;
use crate::aws::mwaa::Mwaa;
use crate::error::{Error, Result};
use crate::ops::{self, remote::RemoteOptions, restore::RestoreOptions};
use crate::store::BackupStore;

/// The latest backup, with cleanup, into the secondary's database.
pub struct DirectRestore<'a> {
    /// A clean restore of the latest backup (`backup_id` unset, `clean` set).
    pub options: RestoreOptions<'a>,
    /// The store, the target database and KMS in the secondary's region.
    pub services: ops::Services,
    pub cancel: &'a CancellationToken,
}

#[async_trait]
impl RestoreStep for DirectRestore<'_> {
    async fn restore_latest(&self) -> Result<String> {
        let progress = crate::progress::Silent;
        let summary =
            ops::restore::restore(&self.options, &self.services, &progress, self.cancel).await?;
        // Only a dry run comes back without a report, and this is none.
        let Some(report) = &summary.report else {
            return Ok(String::new());
        };
        let rows: u64 = report.loaded.iter().map(|t| t.rows).sum();
        let target = self
            .services
            .target
            .as_ref()
            .map(|db| db.describe().to_string())
            .unwrap_or_default();
        let mut line = format!(
            "backup {} ({} rows) restored into {}; {} DAGs unpaused",
            summary.manifest.backup_id,
            rows,
            target,
            report.unpaused.len()
        );
        if !report.missing_dags.is_empty() {
            line.push_str(&format!(
                "; not yet parsed by the secondary (unpause later): {}",
                report.missing_dags.join(", ")
            ));
        }
        Ok(line)
    }
}

/// The restore DAG run in the secondary through its REST API, then the DAGs active in the
/// primary unpaused there the same way.
pub struct RemoteRestore<'a> {
    pub store: Arc<dyn BackupStore>,
    /// MWAA in the secondary's region.
    pub mwaa: Box<dyn Mwaa>,
    pub secondary: String,
    /// The restore DAG (METADATA_IMPORT_DAG_NAME).
    pub dag_id: String,
    /// The run's conf without `backup_id`, which is the latest backup's, read at run time.
    pub conf: Map<String, Value>,
    /// The whole wait for the DAG run.
    pub timeout: Duration,
    /// How long to wait for DAGs the secondary has not parsed yet before unpausing them.
    pub unpause_wait: Duration,
    pub cancel: &'a CancellationToken,
}

#[async_trait]
impl RestoreStep for RemoteRestore<'_> {
    async fn restore_latest(&self) -> Result<String> {
        let manifest = crate::store::manifest::resolve(self.store.as_ref(), None).await?;
        // The failover's own run seeds the DAG run ids: a rerun finds the run it started.
        let run = state::unfinished(self.store.as_ref())
            .await?
            .ok_or_else(|| {
                Error::failed("restore", &self.secondary, "no failover run is recorded")
            })?;
        let mut conf = self.conf.clone();
        conf.insert("backup_id".into(), manifest.backup_id.clone().into());
        let options = RemoteOptions {
            environment: self.secondary.clone(),
            dag_id: self.dag_id.clone(),
            conf,
            seed: run.started.run_id.clone(),
            started_at: run.started.started_at,
            timeout: self.timeout,
            poll: Duration::from_secs(2),
            retry_for: Duration::from_secs(60),
        };
        let mwaa = self.mwaa.as_ref();
        let report = ops::remote::run_dag(&options, mwaa, self.store.as_ref(), self.cancel).await?;
        let (unpaused, missing) = unpause_remote(
            mwaa,
            &self.secondary,
            &manifest.active_dags,
            self.unpause_wait,
            self.cancel,
        )
        .await?;
        let mut line = format!(
            "backup {} restored by run {} of {} in {} ({:.0} s); {} DAGs unpaused",
            manifest.backup_id,
            report.dag_run_id,
            report.dag_id,
            self.secondary,
            report.seconds,
            unpaused
        );
        if let Some(task) = &report.report {
            line.push_str(&format!("; task report: {task}"));
        }
        if !missing.is_empty() {
            line.push_str(&format!(
                "; not parsed by the secondary within SECONDARY_UNPAUSE_WAIT_SECS (unpause later): {}",
                missing.join(", ")
            ));
        }
        Ok(line)
    }
}

/// Unpauses `dags` in `environment` through the REST API, waiting up to `timeout` for those
/// the scheduler has not parsed yet; returns how many were unpaused and those still missing.
async fn unpause_remote(
    mwaa: &dyn Mwaa,
    environment: &str,
    dags: &[String],
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<(usize, Vec<String>)> {
    let api = AirflowApi::connect(mwaa, environment, Duration::from_secs(60)).await?;
    let started = Instant::now();
    let mut missing: Vec<String> = dags.to_vec();
    let mut unpaused = 0;
    loop {
        let mut still = Vec::new();
        for dag in &missing {
            match api.set_paused(dag, false).await? {
                Some(_) => unpaused += 1,
                None => still.push(dag.clone()),
            }
        }
        missing = still;
        if missing.is_empty() || started.elapsed() >= timeout {
            return Ok((unpaused, missing));
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
            () = cancel.cancelled() => return Err(Error::Interrupted),
        }
    }
}
