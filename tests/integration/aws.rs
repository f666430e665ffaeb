//! The AWS side of the bench: moto (CloudWatch, Scheduler, SNS, SQS, S3) and the project's
//! MWAA stand-in, driven through the real SDK clients and the stand-in's control API.

use std::process::Command;

use aws_sdk_cloudwatch::primitives::DateTime as AwsTime;
use serde_json::Value;

use crate::common::bench_server;

pub const PRIMARY_REGION: &str = "us-east-1";
pub const SECONDARY_REGION: &str = "us-east-2";

pub struct Aws {
    pub moto: String,
    pub mwaa: String,
    /// Unique per test process: names of environments, topics, schedules.
    pub tag: String,
}

fn creds() -> aws_sdk_sns::config::Credentials {
    aws_sdk_sns::config::Credentials::new("testing", "testing", None, None, "bench")
}

impl Aws {
    pub fn get(test: &str) -> Option<Aws> {
        let moto = bench_server("MWAA_DR_TEST_MOTO_URL")?;
        let mwaa = bench_server("MWAA_DR_TEST_MWAA_URL")?;
        Some(Aws {
            moto,
            mwaa,
            tag: format!("{}-{}", test.replace('_', "-"), std::process::id()),
        })
    }

    /// Sets the standard AWS variables the binary reads: moto for everything, the stand-in
    /// for MWAA.
    pub fn env(&self, cmd: &mut assert_cmd::Command) {
        for (name, value) in self.vars() {
            cmd.env(name, value);
        }
    }

    /// The variables of [`Aws::env`], as pairs.
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.moto.clone()),
            ("AWS_ENDPOINT_URL_MWAA", self.mwaa.clone()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", PRIMARY_REGION.into()),
            ("PRIMARY_REGION", PRIMARY_REGION.into()),
            ("SECONDARY_REGION", SECONDARY_REGION.into()),
        ]
    }

    /// A call to the stand-in's control API.
    pub fn standin(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sS",
            "-X",
            method,
            &format!("{}/_standin/{path}", self.mwaa),
        ]);
        if let Some(body) = body {
            cmd.args([
                "-H",
                "content-type: application/json",
                "--data-binary",
                &body.to_string(),
            ]);
        }
        let out = cmd.output().expect("curl runs");
        assert!(
            out.status.success(),
            "stand-in {method} {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// Seeds an environment in the stand-in.
    pub fn seed_environment(&self, region: &str, env: Value) {
        self.standin("POST", &format!("environments?region={region}"), Some(env));
    }

    /// MWAA requests the stand-in received for `operation` naming `name`.
    pub fn requests(&self, operation: &str, name: &str) -> Vec<Value> {
        let all = self.standin("GET", &format!("requests?operation={operation}"), None);
        all.as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| {
                r["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with(&format!("/{name}")))
            })
            .collect()
    }

    fn shared(&self, region: &str) -> aws_config::SdkConfig {
        aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(region.to_string()))
            .endpoint_url(&self.moto)
            .credentials_provider(aws_sdk_sns::config::SharedCredentialsProvider::new(creds()))
            .build()
    }

    fn s3(&self) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::config::Builder::from(&self.shared(PRIMARY_REGION))
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// A new, empty bucket on moto named after the test.
    pub async fn bucket(&self, purpose: &str) -> String {
        let name = format!("{purpose}-{}", self.tag).to_lowercase();
        self.s3()
            .create_bucket()
            .bucket(&name)
            .send()
            .await
            .expect("create bucket");
        name
    }

    pub async fn put_object(&self, bucket: &str, key: &str, body: Vec<u8>) {
        self.s3()
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(body.into())
            .send()
            .await
            .expect("put object");
    }

    /// Every key in `bucket`.
    pub async fn keys(&self, bucket: &str) -> Vec<String> {
        let out = self
            .s3()
            .list_objects_v2()
            .bucket(bucket)
            .send()
            .await
            .expect("list objects");
        out.contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect()
    }

    /// One SchedulerHeartbeat datapoint, now, in the primary's region.
    pub async fn put_heartbeat(&self, environment: &str, value: f64) {
        self.put_heartbeat_in(PRIMARY_REGION, environment, value)
            .await;
    }

    /// One SchedulerHeartbeat datapoint, now, in `region`.
    pub async fn put_heartbeat_in(&self, region: &str, environment: &str, value: f64) {
        let cw = aws_sdk_cloudwatch::Client::new(&self.shared(region));
        let dim = |n: &str, v: &str| {
            aws_sdk_cloudwatch::types::Dimension::builder()
                .name(n)
                .value(v)
                .build()
        };
        cw.put_metric_data()
            .namespace("AmazonMWAA")
            .metric_data(
                aws_sdk_cloudwatch::types::MetricDatum::builder()
                    .metric_name("SchedulerHeartbeat")
                    .dimensions(dim("Environment", environment))
                    .dimensions(dim("Function", "Scheduler"))
                    .timestamp(AwsTime::from_secs(chrono::Utc::now().timestamp()))
                    .value(value)
                    .build(),
            )
            .send()
            .await
            .expect("put metric");
    }

    /// An enabled EventBridge Scheduler schedule in the secondary region.
    pub async fn create_schedule(&self, name: &str) {
        let client = aws_sdk_scheduler::Client::new(&self.shared(SECONDARY_REGION));
        client
            .create_schedule()
            .name(name)
            .schedule_expression("rate(5 minutes)")
            .flexible_time_window(
                aws_sdk_scheduler::types::FlexibleTimeWindow::builder()
                    .mode(aws_sdk_scheduler::types::FlexibleTimeWindowMode::Off)
                    .build()
                    .expect("window"),
            )
            .target(
                aws_sdk_scheduler::types::Target::builder()
                    .arn("arn:aws:states:us-east-2:123456789012:stateMachine:health")
                    .role_arn("arn:aws:iam::123456789012:role/scheduler")
                    .build()
                    .expect("target"),
            )
            .state(aws_sdk_scheduler::types::ScheduleState::Enabled)
            .send()
            .await
            .expect("create schedule");
    }

    pub async fn schedule_state(&self, name: &str) -> String {
        let client = aws_sdk_scheduler::Client::new(&self.shared(SECONDARY_REGION));
        let out = client
            .get_schedule()
            .name(name)
            .send()
            .await
            .expect("get schedule");
        out.state()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default()
    }

    /// An SNS topic in the secondary region with an SQS queue subscribed; returns (topic
    /// ARN, queue URL).
    pub async fn topic_with_queue(&self, name: &str) -> (String, String) {
        let shared = self.shared(SECONDARY_REGION);
        let sns = aws_sdk_sns::Client::new(&shared);
        let sqs = aws_sdk_sqs::Client::new(&shared);
        let topic = sns
            .create_topic()
            .name(name)
            .send()
            .await
            .expect("topic")
            .topic_arn()
            .unwrap_or_default()
            .to_string();
        let queue = sqs
            .create_queue()
            .queue_name(name)
            .send()
            .await
            .expect("queue")
            .queue_url()
            .unwrap_or_default()
            .to_string();
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(&queue)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("queue attributes");
        let queue_arn = attrs
            .attributes()
            .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
            .cloned()
            .unwrap_or_default();
        sns.subscribe()
            .topic_arn(&topic)
            .protocol("sqs")
            .endpoint(queue_arn)
            .send()
            .await
            .expect("subscribe");
        (topic, queue)
    }

    /// The (subject, message) of every notification that reached the queue.
    pub async fn notifications(&self, queue: &str) -> Vec<(String, String)> {
        let sqs = aws_sdk_sqs::Client::new(&self.shared(SECONDARY_REGION));
        let mut out = Vec::new();
        for _ in 0..3 {
            let got = sqs
                .receive_message()
                .queue_url(queue)
                .max_number_of_messages(10)
                .send()
                .await
                .expect("receive");
            for m in got.messages() {
                let envelope: Value =
                    serde_json::from_str(m.body().unwrap_or("{}")).unwrap_or(Value::Null);
                out.push((
                    envelope["Subject"].as_str().unwrap_or_default().to_string(),
                    envelope["Message"].as_str().unwrap_or_default().to_string(),
                ));
            }
            if !out.is_empty() {
                break;
            }
        }
        out
    }
}
