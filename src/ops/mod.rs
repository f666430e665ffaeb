//! The operations of mwaa-dr as library functions: explicit options, the services they
//! use, a progress sink and a cancellation token in; a typed, serialisable report out. The
//! CLI, a DAG task or a Step Functions task each resolve their own settings into these.

pub mod backup;
pub mod cleanup;
pub mod health;
pub mod list;
pub mod prune;
pub mod remote;
pub mod restore;
pub mod restore_legacy;
pub mod verify;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use crate::airflow::catalog::Catalog;
use crate::airflow::versions::VersionTable;
use crate::aws::cloudwatch::Heartbeat;
use crate::aws::kms::Kms;
use crate::aws::mwaa::Mwaa;
use crate::db::PgConnector;
use crate::error::{Error, Result};
use crate::store::{BackupStore, lock};

/// What an operation reaches outside the process. Each operation uses some of them; the
/// caller provides those (a missing one is a caller's mistake, reported as such).
#[derive(Default)]
pub struct Services {
    pub store: Option<Arc<dyn BackupStore>>,
    /// The primary's metadata database (backup reads it).
    pub source: Option<PgConnector>,
    /// The database restored into or cleaned.
    pub target: Option<PgConnector>,
    /// MWAA in the primary's region (health, the environment definition of a backup).
    pub primary_mwaa: Option<Box<dyn Mwaa>>,
    /// CloudWatch in the primary's region (health).
    pub heartbeat: Option<Box<dyn Heartbeat>>,
    /// KMS in the region of the run (the backup key of DR_KMS_KEY_ID).
    pub kms: Option<Arc<dyn Kms>>,
    /// Where "now" comes from (backup ids and times, retention ages, health attempts).
    pub clock: crate::model::Clock,
}

fn missing(what: &str) -> Error {
    Error::failed(
        "run",
        what,
        "the operation was started without it (a caller's mistake)",
    )
}

impl Services {
    pub fn store(&self) -> Result<Arc<dyn BackupStore>> {
        self.store
            .clone()
            .ok_or_else(|| missing("the backup store"))
    }

    pub fn source(&self) -> Result<&PgConnector> {
        self.source
            .as_ref()
            .ok_or_else(|| missing("the source database"))
    }

    pub fn target(&self) -> Result<&PgConnector> {
        self.target
            .as_ref()
            .ok_or_else(|| missing("the target database"))
    }

    pub fn primary_mwaa(&self) -> Result<&dyn Mwaa> {
        self.primary_mwaa
            .as_deref()
            .ok_or_else(|| missing("MWAA in the primary region"))
    }

    pub fn kms(&self) -> Result<&dyn Kms> {
        self.kms.as_deref().ok_or_else(|| missing("KMS"))
    }

    pub fn heartbeat(&self) -> Result<&dyn Heartbeat> {
        self.heartbeat
            .as_deref()
            .ok_or_else(|| missing("CloudWatch in the primary region"))
    }
}

/// Where table catalogs come from: a user's file for every version, or the built-in
/// catalog of each major version; and the Airflow versions this build knows.
#[derive(Debug, Clone)]
pub struct Catalogs {
    /// DR_TABLE_CATALOG.
    pub table_catalog: Option<PathBuf>,
    pub versions: VersionTable,
    /// The DR DAGs' own rows, which every catalog keeps.
    pub dr_dags: crate::airflow::catalog::DrDags,
}

impl Catalogs {
    /// The table catalog for a database of Airflow `version`.
    pub fn for_version(&self, version: &str) -> Result<Catalog> {
        let mut catalog = self.file_for_version(version)?;
        catalog.dr_dags = self.dr_dags.clone();
        Ok(catalog)
    }

    fn file_for_version(&self, version: &str) -> Result<Catalog> {
        match &self.table_catalog {
            None => Catalog::builtin_for(version),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| Error::InvalidValue {
                    variable: "DR_TABLE_CATALOG".into(),
                    value: path.display().to_string(),
                    problem: format!("cannot read the file ({e})"),
                    accepted: "the path of a JSON table catalog shaped like config/tables.json"
                        .into(),
                })?;
                Catalog::parse(&text, &path.display().to_string())
            }
        }
    }
}

/// Runs `work` holding a store lock (shared, or exclusive for deletions); see
/// [`lock::with_lock`].
pub async fn with_store_lock<T>(
    store: &dyn BackupStore,
    exclusive: bool,
    command: &str,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    lock::with_lock(store, lock::LockScope::Store, exclusive, command, work).await
}

/// Asked before a destructive step with the question; an error refuses it. The CLI prompts
/// (or takes `--yes`); a caller that decided beforehand passes `None`.
pub type Confirm<'a> = &'a (dyn Fn(&str) -> Result<()> + Send + Sync);
