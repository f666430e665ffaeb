//! SNS: failover notifications.

use async_trait::async_trait;
use aws_sdk_sns::Client;

use super::{endpoint_override, sdk_config, sdk_error};
use crate::error::Result;
use crate::model::AwsTimeouts;

#[async_trait]
pub trait Notifier: Send + Sync {
    async fn publish(&self, topic_arn: &str, subject: &str, message: &str) -> Result<()>;
}

pub struct SnsNotifier {
    client: Client,
}

impl SnsNotifier {
    pub async fn new(region: Option<&str>, timeouts: &AwsTimeouts) -> Self {
        let shared = sdk_config(region, timeouts).await;
        let mut builder = aws_sdk_sns::config::Builder::from(&shared);
        if let Some(endpoint) = endpoint_override(&shared, "SNS") {
            builder = builder.endpoint_url(endpoint);
        }
        SnsNotifier {
            client: Client::from_conf(builder.build()),
        }
    }
}

#[async_trait]
impl Notifier for SnsNotifier {
    async fn publish(&self, topic_arn: &str, subject: &str, message: &str) -> Result<()> {
        // SNS subjects are limited to 100 characters.
        let subject: String = subject.chars().take(100).collect();
        self.client
            .publish()
            .topic_arn(topic_arn)
            .subject(subject)
            .message(message)
            .send()
            .await
            .map_err(|e| sdk_error("Publish", topic_arn, e))?;
        Ok(())
    }
}
