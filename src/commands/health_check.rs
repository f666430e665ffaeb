//! `mwaa-dr health-check`: is the primary healthy? Exit 0 yes, 3 no.

use tokio_util::sync::CancellationToken;

use super::Need;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::health::HealthReport;
use crate::ops::health::{HealthOptions, health};
use crate::output;

pub async fn run(config: &Config, cancel: &CancellationToken) -> Result<()> {
    let environment = config.require(
        &config.primary.environment_name,
        "PRIMARY_MWAA_ENVIRONMENT_NAME",
        "health-check",
        "the environment to check",
    )?;
    let options = HealthOptions {
        environment: environment.to_string(),
        settings: config.health_check.clone(),
    };
    let services = super::services(
        config,
        "health-check",
        &[Need::PrimaryMwaa, Need::Heartbeat],
    )
    .await?;
    let progress = crate::progress::Silent;
    let report = health(&options, &services, &progress, cancel).await?;
    output::emit(config.output, &report, || render(&report));
    if report.healthy {
        Ok(())
    } else {
        Err(Error::Unhealthy {
            environment: environment.to_string(),
            evidence: report.evidence(),
        })
    }
}

pub fn render(report: &HealthReport) -> String {
    let rows: Vec<Vec<String>> = report
        .attempts
        .iter()
        .map(|a| {
            vec![
                a.attempt.to_string(),
                a.at.format("%H:%M:%S").to_string(),
                a.status
                    .as_ref()
                    .map_or_else(|| "-".into(), ToString::to_string),
                a.heartbeat
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "-".into()),
                a.reason.clone(),
            ]
        })
        .collect();
    format!(
        "{}: {}\n{}",
        report.environment,
        if report.healthy {
            "healthy"
        } else {
            "UNHEALTHY"
        },
        output::table(&["ATTEMPT", "TIME", "STATUS", "HEARTBEAT", "REASON"], &rows)
    )
}
