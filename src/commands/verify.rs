//! `mwaa-dr verify`: re-read a backup and check every object against its manifest.

use serde::Serialize;

use super::open_store;
use crate::cli::VerifyArgs;
use crate::config::Config;
use crate::error::Result;
use crate::output;
use crate::store::manifest;
use crate::store::verify::{ObjectCheck, verify_backup};

#[derive(Serialize)]
struct VerifyDoc<'a> {
    backup_id: &'a str,
    ok: bool,
    objects: &'a [ObjectCheck],
}

pub async fn run(config: &Config, args: &VerifyArgs) -> Result<()> {
    let store: std::sync::Arc<dyn crate::store::BackupStore> =
        std::sync::Arc::from(open_store(config.store("verify")?, config).await?);
    let manifest = manifest::resolve(store.as_ref(), args.backup_id.as_deref()).await?;
    // What a restore would refuse, verify reports: a table of the catalog left unaccounted.
    manifest.validate(&config.catalog_for(&manifest.airflow_version)?)?;
    let checks = verify_backup(store.clone(), &manifest).await?;
    let doc = VerifyDoc {
        backup_id: &manifest.backup_id,
        ok: true,
        objects: &checks,
    };
    output::emit(config.output, &doc, || {
        format!(
            "backup {} is intact: {} objects, {} rows, sizes and SHA-256 match the manifest",
            output::escape_control(&manifest.backup_id),
            checks.len(),
            checks.iter().map(|c| c.rows).sum::<u64>()
        )
    });
    Ok(())
}
