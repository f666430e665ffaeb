//! Health: is the primary environment serving (MWAA status and the scheduler heartbeat)?

use tokio_util::sync::CancellationToken;

use super::Services;
use crate::error::{Error, Result};
use crate::health::{HealthReport, check};
use crate::model::HealthCheckSettings;
use crate::progress::Progress;

#[derive(Debug, Clone)]
pub struct HealthOptions {
    pub environment: String,
    pub settings: HealthCheckSettings,
}

/// The report, healthy or not: the caller decides what an unhealthy one means.
pub async fn health(
    options: &HealthOptions,
    services: &Services,
    _progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<HealthReport> {
    let (mwaa, heartbeat) = (services.primary_mwaa()?, services.heartbeat()?);
    let looks = check(
        &options.environment,
        &options.settings,
        mwaa,
        heartbeat,
        &services.clock,
    );
    // Only looks and waits between looks: stopped anywhere, nothing is left to undo.
    tokio::select! {
        report = looks => report,
        () = cancel.cancelled() => Err(Error::Interrupted),
    }
}
