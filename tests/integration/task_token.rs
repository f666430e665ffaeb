//! `--task-token`: the binary answers the Step Functions execution waiting on a
//! `.waitForTaskToken` state itself, with its report or its error (moto's Step Functions
//! interpreter, the real aws-sdk-sfn, the bench PostgreSQL).

use std::time::Duration;

use serde_json::{Value, json};

use crate::aws::{Aws, SECONDARY_REGION};
use crate::common::{mwaa_dr, run};
use crate::pg::Bench;

/// A state machine whose one state publishes its task token to `topic` and waits for it.
async fn waiting_execution(
    aws: &Aws,
    sfn: &aws_sdk_sfn::Client,
    topic: &str,
    name: &str,
) -> String {
    let definition = json!({
        "StartAt": "RunTheDrTask",
        "States": {
            "RunTheDrTask": {
                "Type": "Task",
                "Resource": "arn:aws:states:::sns:publish.waitForTaskToken",
                "Parameters": {"TopicArn": topic, "Message": {"token.$": "$$.Task.Token"}},
                "End": true
            }
        }
    });
    let machine = sfn
        .create_state_machine()
        .name(format!("{name}-{}", aws.tag))
        .role_arn("arn:aws:iam::123456789012:role/mwaa-dr-test")
        .definition(definition.to_string())
        .send()
        .await
        .expect("state machine")
        .state_machine_arn()
        .to_string();
    sfn.start_execution()
        .state_machine_arn(machine)
        .name(format!("{name}-run"))
        .input("{}")
        .send()
        .await
        .expect("execution")
        .execution_arn()
        .to_string()
}

/// The task token the waiting state published.
async fn published_token(aws: &Aws, queue: &str) -> String {
    for _ in 0..40 {
        for (_, message) in aws.notifications(queue).await {
            let doc: Value = serde_json::from_str(&message).unwrap_or(Value::Null);
            if let Some(token) = doc["token"].as_str() {
                return token.to_string();
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("the waiting state published no task token");
}

/// The execution once it has left RUNNING: (status, output, error, cause).
async fn finished(sfn: &aws_sdk_sfn::Client, execution: &str) -> (String, Value, String, String) {
    for _ in 0..80 {
        let d = sfn
            .describe_execution()
            .execution_arn(execution)
            .send()
            .await
            .expect("describe");
        if d.status().as_str() != "RUNNING" {
            return (
                d.status().as_str().to_string(),
                d.output()
                    .and_then(|o| serde_json::from_str(o).ok())
                    .unwrap_or(Value::Null),
                d.error().unwrap_or_default().to_string(),
                d.cause().unwrap_or_default().to_string(),
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("the execution is still waiting: nobody answered its task token");
}

/// The cause of the execution's TaskFailed event.
async fn task_failed_cause(sfn: &aws_sdk_sfn::Client, execution: &str) -> String {
    let history = sfn
        .get_execution_history()
        .execution_arn(execution)
        .send()
        .await
        .expect("history");
    history
        .events()
        .iter()
        .find_map(|e| e.task_failed_event_details())
        .and_then(|d| d.cause())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn the_task_answers_its_token_with_the_report_or_the_error() {
    let Some(aws) = Aws::get("task_token") else {
        return;
    };
    let Some(bench) = Bench::get() else { return };
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(SECONDARY_REGION))
        .endpoint_url(&aws.moto)
        .credentials_provider(aws_sdk_sfn::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .load()
        .await;
    let sfn = aws_sdk_sfn::Client::new(&shared);
    let db = bench.airflow_db("task_token", "2.10.3", true);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let store = store.to_str().expect("utf-8 path");
    let binary = |token: &str, args: &[&str]| {
        let mut cmd = mwaa_dr(dir.path());
        aws.env(&mut cmd);
        cmd.env("AWS_REGION", SECONDARY_REGION);
        cmd.args(["--store", store, "--yes", "--output", "json"])
            .args(args)
            .args(["--task-token", token]);
        run(&mut cmd)
    };

    // Success: the report is the state's output.
    let (topic, queue) = aws.topic_with_queue(&format!("tt-ok-{}", aws.tag)).await;
    let execution = waiting_execution(&aws, &sfn, &topic, "tt-ok").await;
    let token = published_token(&aws, &queue).await;
    let out = binary(&token, &["cleanup", "--db", &db]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let printed: Value = serde_json::from_str(&out.stdout).expect("JSON report");
    let (status, output, _, _) = finished(&sfn, &execution).await;
    assert_eq!(status, "SUCCEEDED");
    assert_eq!(output, printed, "the state's output is the printed report");

    // Failure: the error class is what a Retry or Catch matches; the JSON error is the cause.
    let (topic, queue) = aws.topic_with_queue(&format!("tt-fail-{}", aws.tag)).await;
    let execution = waiting_execution(&aws, &sfn, &topic, "tt-fail").await;
    let token = published_token(&aws, &queue).await;
    let out = binary(
        &token,
        &[
            "restore",
            "--db",
            &db,
            "--backup-id",
            "20200101T000000.000Z-dead",
        ],
    );
    assert_ne!(out.code, 0);
    let (status, _, error, cause) = finished(&sfn, &execution).await;
    assert_eq!(status, "FAILED");
    assert_eq!(error, "mwaa-dr.not_found");
    // moto 5.2.5 keeps SendTaskFailure's error but drops its cause (DescribeExecution and the
    // history's TaskFailed event both leave it empty): the cause is checked by the unit test
    // `commands::tests::a_failure_answers_with_its_class_and_the_json_error`.
    let cause = if cause.is_empty() {
        task_failed_cause(&sfn, &execution).await
    } else {
        cause
    };
    if !cause.is_empty() {
        let cause: Value = serde_json::from_str(&cause).expect("the cause is the JSON error");
        assert_eq!(cause["error"]["class"], "not_found", "{cause}");
    }

    // A token nobody waits on fails the command, which would otherwise look delivered.
    let out = binary("not-a-task-token", &["cleanup", "--db", &db]);
    assert_ne!(out.code, 0, "an unanswerable token must fail the run");
    assert!(out.stderr.contains("SendTaskSuccess"), "{}", out.stderr);
}
