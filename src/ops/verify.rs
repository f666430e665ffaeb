//! Verify: re-read a backup and check every object against its manifest.

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{Catalogs, Services};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::store::manifest;
use crate::store::verify::{ObjectCheck, verify_backup};

#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The backup; `None` for the latest.
    pub backup_id: Option<String>,
    pub catalogs: Catalogs,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub backup_id: String,
    pub ok: bool,
    pub objects: Vec<ObjectCheck>,
}

pub async fn verify(
    options: &VerifyOptions,
    services: &Services,
    _progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<VerifyReport> {
    let store = services.store()?;
    // Only reads: stopped anywhere, nothing is left to undo.
    let work = async {
        let manifest = manifest::resolve(store.as_ref(), options.backup_id.as_deref()).await?;
        // What a restore would refuse, verify reports: a table of the catalog left unaccounted.
        manifest.validate(&options.catalogs.for_version(&manifest.airflow_version)?)?;
        let objects = verify_backup(store.clone(), &manifest).await?;
        Ok(VerifyReport {
            backup_id: manifest.backup_id,
            ok: true,
            objects,
        })
    };
    tokio::select! {
        report = work => report,
        () = cancel.cancelled() => Err(Error::Interrupted),
    }
}
