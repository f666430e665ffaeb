//! `mwaa-dr verify`: re-read a backup and check every object against its manifest.

use tokio_util::sync::CancellationToken;

use super::Need;
use crate::cli::VerifyArgs;
use crate::config::Config;
use crate::error::Result;
use crate::ops::verify::{VerifyOptions, verify};
use crate::output;

pub async fn run(config: &Config, args: &VerifyArgs, cancel: &CancellationToken) -> Result<()> {
    let options = VerifyOptions {
        backup_id: args.backup_id.clone(),
        catalogs: config.catalogs(),
    };
    let services = super::services(config, "verify", &[Need::Store]).await?;
    let progress = crate::progress::Silent;
    let report = verify(&options, &services, &progress, cancel).await?;
    output::emit(config.output, &report, || {
        format!(
            "backup {} is intact: {} objects, {} rows, sizes and SHA-256 match the manifest",
            output::escape_control(&report.backup_id),
            report.objects.len(),
            report.objects.iter().map(|c| c.rows).sum::<u64>()
        )
    });
    Ok(())
}
