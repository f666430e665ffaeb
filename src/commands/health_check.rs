//! `mwaa-dr health-check`: is the primary healthy? Exit 0 yes, 3 no.

use crate::aws::cloudwatch::CloudWatchHeartbeat;
use crate::aws::mwaa::SdkMwaa;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::health::{HealthReport, check};
use crate::output;

pub async fn run(config: &Config) -> Result<()> {
    let environment = config.require(
        &config.primary.environment_name,
        "PRIMARY_MWAA_ENVIRONMENT_NAME",
        "health-check",
        "the environment to check",
    )?;
    let region = config.primary.region.as_deref();
    let mwaa = SdkMwaa::new(region, &config.aws_timeouts).await;
    let heartbeat = CloudWatchHeartbeat::new(region, &config.aws_timeouts).await;
    let report = check(environment, &config.health_check, &mwaa, &heartbeat).await?;
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
