//! SNS: failover and failed-backup notifications.

use async_trait::async_trait;
use aws_sdk_sns::Client;

use super::{endpoint_override, sdk_config, sdk_error};
use crate::error::Result;
use crate::model::AwsTimeouts;

#[async_trait]
pub trait Notifier: Send + Sync {
    async fn publish(&self, topic_arn: &str, subject: &str, message: &str) -> Result<()>;
}

/// The region of a topic ARN (`arn:aws:sns:<region>:<account>:<name>`), where it must be
/// published.
pub fn topic_region(topic_arn: &str) -> Option<&str> {
    let mut parts = topic_arn.split(':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("arn"), Some(_), Some("sns"), Some(region)) if !region.is_empty() => Some(region),
        _ => None,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_is_published_in_its_own_region() {
        assert_eq!(
            topic_region("arn:aws:sns:us-east-2:123456789012:dr"),
            Some("us-east-2")
        );
        assert_eq!(
            topic_region("arn:aws-cn:sns:cn-north-1:1:dr"),
            Some("cn-north-1")
        );
        assert_eq!(topic_region("dr-topic"), None);
        assert_eq!(topic_region("arn:aws:sns::1:dr"), None);
    }
}
