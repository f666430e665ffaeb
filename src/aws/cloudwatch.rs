//! CloudWatch: the scheduler heartbeat of an MWAA environment.

use async_trait::async_trait;
use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::primitives::DateTime as AwsTime;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};
use chrono::{DateTime, Utc};

use super::{endpoint_override, sdk_config, sdk_error};
use crate::error::Result;
use crate::model::AwsTimeouts;

pub const NAMESPACE: &str = "AmazonMWAA";
pub const METRIC: &str = "SchedulerHeartbeat";
/// The period of one datapoint, as in the original: 5 minutes.
pub const PERIOD_SECS: i32 = 300;

/// Reads the `SchedulerHeartbeat` metric.
#[async_trait]
pub trait Heartbeat: Send + Sync {
    /// The newest 5-minute Average of the environment's scheduler heartbeat in the two
    /// periods before `now`; `None` when there is no datapoint.
    async fn scheduler_heartbeat(
        &self,
        environment: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<f64>>;
}

pub struct CloudWatchHeartbeat {
    client: Client,
}

impl CloudWatchHeartbeat {
    pub async fn new(region: Option<&str>, timeouts: &AwsTimeouts) -> Self {
        let shared = sdk_config(region, timeouts).await;
        let mut builder = aws_sdk_cloudwatch::config::Builder::from(&shared);
        if let Some(endpoint) = endpoint_override(&shared, "CLOUDWATCH") {
            builder = builder.endpoint_url(endpoint);
        }
        CloudWatchHeartbeat {
            client: Client::from_conf(builder.build()),
        }
    }
}

#[async_trait]
impl Heartbeat for CloudWatchHeartbeat {
    async fn scheduler_heartbeat(
        &self,
        environment: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<f64>> {
        let dimension =
            |name: &str, value: &str| Dimension::builder().name(name).value(value).build();
        let query = MetricDataQuery::builder()
            .id("heartbeat")
            .metric_stat(
                MetricStat::builder()
                    .metric(
                        Metric::builder()
                            .namespace(NAMESPACE)
                            .metric_name(METRIC)
                            .dimensions(dimension("Environment", environment))
                            .dimensions(dimension("Function", "Scheduler"))
                            .build(),
                    )
                    .period(PERIOD_SECS)
                    .stat("Average")
                    .build(),
            )
            .return_data(true)
            .build();
        let start = now - chrono::Duration::seconds(2 * i64::from(PERIOD_SECS));
        let out = self
            .client
            .get_metric_data()
            .metric_data_queries(query)
            .start_time(AwsTime::from_secs(start.timestamp()))
            .end_time(AwsTime::from_secs(now.timestamp() + 60))
            .send()
            .await
            .map_err(|e| {
                sdk_error(
                    "GetMetricData",
                    format!("{NAMESPACE}/{METRIC} of {environment}"),
                    e,
                )
            })?;
        let newest = out
            .metric_data_results()
            .iter()
            .flat_map(|r| r.timestamps().iter().zip(r.values().iter()))
            .max_by_key(|(t, _)| (t.secs(), t.subsec_nanos()))
            .map(|(_, v)| *v);
        Ok(newest)
    }
}
