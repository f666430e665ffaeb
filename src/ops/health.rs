//! Health: is the primary environment serving (MWAA status and the scheduler heartbeat)?

use tokio_util::sync::CancellationToken;

use super::Services;
use crate::error::Result;
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
    _cancel: &CancellationToken,
) -> Result<HealthReport> {
    check(
        &options.environment,
        &options.settings,
        services.primary_mwaa()?,
        services.heartbeat()?,
        &services.clock,
    )
    .await
}
