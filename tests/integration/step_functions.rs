//! The generated state machine (`mwaa-dr deploy --print-definition`) executed by moto's Step
//! Functions interpreter, started and followed by `mwaa-dr failover --via-step-functions`:
//! the real aws-sdk-sfn, moto's CloudWatch, S3, Scheduler and SNS (read back through SQS),
//! the bench PostgreSQL for the task that answers the token.
//!
//! moto cannot run two kinds of state, which are replaced here, each replacement asserted to
//! hit exactly the state it names:
//! - JSONata states (`confirm_primary_unhealthy.clock1`): moto evaluates JSONata through a
//!   JVM bridge that its server does not ship; the replacement is a Pass with the window the
//!   JSONata computes (the last 10 minutes) and the day stamp in the CLI's key format;
//! - `aws-sdk:mwaa:*` (moto has no MWAA): `healthy.get_environment` and
//!   `confirm_secondary_available.status` become Pass states with GetEnvironment's answer,
//!   and the restore's `aws-sdk:mwaa:invokeRestApi.waitForTaskToken` becomes
//!   `sns:publish.waitForTaskToken` publishing the very parameters the REST call would send
//!   (the DAG run and its conf with the task token), so the waiting and the answer by
//!   `mwaa-dr ... --task-token` are the real ones;
//! - `aws-sdk:s3:getObject` (moto hands the interpreter an unread stream as `Body`):
//!   `create_secondary_environment.read` becomes `s3:headObject` of the same key, and the
//!   test checks the key it was given.

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use mwaa_dr::aws::mwaa::EnvironmentDefinition;
use mwaa_dr::deploy::state_machine::check_structure;
use serde_json::{Value, json};

use crate::aws::{Aws, SECONDARY_REGION};
use crate::common::{Run, mwaa_dr, run};
use crate::pg::Bench;

fn shared(aws: &Aws) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(SECONDARY_REGION))
        .endpoint_url(&aws.moto)
        .credentials_provider(aws_sdk_sns::config::SharedCredentialsProvider::new(
            aws_sdk_sns::config::Credentials::new("testing", "testing", None, None, "bench"),
        ))
        .build()
}

/// The configuration of one test: environment variables for the binary.
struct Setup {
    vars: Vec<(String, String)>,
    bucket: String,
}

impl Setup {
    fn new(aws: &Aws, dr_type: &str) -> Setup {
        // The secondary's backup bucket as `deploy` names it: the state machine's store.
        let bucket = format!("t-{}-backup-123456789012-{SECONDARY_REGION}", aws.tag);
        let mut vars: Vec<(String, String)> = aws
            .vars()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        for (k, v) in [
            ("DR_TYPE", dr_type.to_string()),
            ("PRIMARY_MWAA_ENVIRONMENT_NAME", format!("prim-{}", aws.tag)),
            (
                "SECONDARY_MWAA_ENVIRONMENT_NAME",
                format!("sec-{}", aws.tag),
            ),
            ("DR_BACKUP_STORE", format!("s3://{bucket}/dr")),
            ("DR_BACKUP_PREFIX", "dr".into()),
            ("HEALTH_CHECK_MAX_RETRY", "0".into()),
            ("STACK_NAME_PREFIX", format!("t-{}", aws.tag)),
            ("AWS_ACCOUNT_ID", "123456789012".into()),
            ("STATE_MACHINE_TIMEOUT_MINS", "5".into()),
            (
                "SECONDARY_MWAA_ROLE_ARN",
                "arn:aws:iam::123456789012:role/sec".into(),
            ),
            ("SECONDARY_DAGS_BUCKET_NAME", "sec-dags".into()),
            ("SECONDARY_SUBNET_IDS", r#"["subnet-1","subnet-2"]"#.into()),
            ("SECONDARY_SECURITY_GROUP_IDS", r#"["sg-1"]"#.into()),
            // Both environments in the machine's Region: the workflow reads the heartbeat
            // itself (across Regions it does not: the tests at the end of this file).
            ("PRIMARY_REGION", SECONDARY_REGION.into()),
        ] {
            vars.push((k.to_string(), v));
        }
        Setup { vars, bucket }
    }

    fn set(&mut self, name: &str, value: &str) {
        self.vars.push((name.to_string(), value.to_string()));
    }

    fn get(&self, name: &str) -> String {
        self.vars
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    fn cmd(&self, dir: &Path, args: &[&str]) -> assert_cmd::Command {
        let mut cmd = mwaa_dr(dir);
        for (k, v) in &self.vars {
            cmd.env(k, v);
        }
        cmd.args(args);
        cmd
    }

    /// The definition as `deploy --print-definition` prints it, checked.
    fn definition(&self, dir: &Path) -> Value {
        let out = run(&mut self.cmd(dir, &["deploy", "--print-definition"]));
        assert_eq!(out.code, 0, "{}", out.stderr);
        let def: Value = serde_json::from_str(&out.stdout).expect("a JSON definition");
        check_structure(&def).expect("a well-formed definition");
        def
    }
}

/// Replaces the state `name`, which must be what `expect` says (a Resource, or a query
/// language), by `with`, keeping its Next and ResultPath; returns the original.
fn stand_in(def: &mut Value, name: &str, expect: &str, mut with: Value) -> Value {
    let original = def["States"][name].clone();
    assert!(
        original["Resource"] == expect || original["QueryLanguage"] == expect,
        "{name} is not the {expect} state moto cannot run: {original}"
    );
    for key in ["Next", "ResultPath"] {
        if with.get(key).is_none()
            && let Some(v) = original.get(key)
        {
            with[key] = v.clone();
        }
    }
    def["States"][name] = with;
    check_structure(def).expect("still well formed");
    original
}

/// What the JSONata clock computes, computed here.
fn clock_now(def: &mut Value) {
    let now = Utc::now();
    stand_in(
        def,
        "confirm_primary_unhealthy.clock1",
        "JSONata",
        json!({
            "Type": "Pass",
            "Result": {
                "start": (now - chrono::Duration::minutes(10)).to_rfc3339(),
                "end": (now + chrono::Duration::minutes(1)).to_rfc3339(),
                "stamp": now.format("%Y%m%dT000000.000000Z").to_string(),
            },
            "ResultPath": "$.clock",
        }),
    );
}

/// Creates the state machine in moto. moto's definition parser is not safe under concurrent
/// CreateStateMachine calls (tests in parallel processes): it then refuses a valid definition
/// with "Unsupported declaration ..." now and then, so a refusal is retried a few times.
async fn create_machine(aws: &Aws, def: &Value, name: &str) -> String {
    create_named_machine(aws, def, &format!("{name}-{}", aws.tag)).await
}

async fn create_named_machine(aws: &Aws, def: &Value, name: &str) -> String {
    let sfn = aws_sdk_sfn::Client::new(&shared(aws));
    let mut last = String::new();
    for _ in 0..5 {
        match sfn
            .create_state_machine()
            .name(name)
            .role_arn("arn:aws:iam::123456789012:role/mwaa-dr-test")
            .definition(def.to_string())
            .send()
            .await
        {
            Ok(out) => return out.state_machine_arn().to_string(),
            Err(e) => last = format!("{e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    panic!(
        "state machine: {}",
        last.chars().take(2000).collect::<String>()
    );
}

async fn create_bucket(aws: &Aws, bucket: &str) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::from(&shared(aws))
        .force_path_style(true)
        .build();
    let s3 = aws_sdk_s3::Client::from_conf(conf);
    s3.create_bucket()
        .bucket(bucket)
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::UsEast2)
                .build(),
        )
        .send()
        .await
        .expect("bucket");
    s3
}

fn timeline(out: &Run) -> Value {
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("a JSON timeline ({e}): {}\n{}", out.stdout, out.stderr))
}

fn step_outcomes(t: &Value) -> Vec<(String, String)> {
    t["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap_or_default().to_string(),
                s["outcome"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_healthy_path_saves_the_primary_definition_where_the_cli_reads_it() {
    let Some(aws) = Aws::get("sfn_healthy") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let setup = Setup::new(&aws, "BACKUP_RESTORE");
    let primary = setup.get("PRIMARY_MWAA_ENVIRONMENT_NAME");
    let s3 = create_bucket(&aws, &setup.bucket).await;
    let mut def = setup.definition(dir.path());
    clock_now(&mut def);
    let definition = json!({
        "Name": primary, "Arn": format!("arn:aws:airflow:us-east-1:123456789012:environment/{primary}"),
        "Status": "AVAILABLE", "AirflowVersion": "2.10.3", "EnvironmentClass": "mw1.small",
        "DagS3Path": "dags", "MaxWorkers": 10, "Schedulers": 2,
        "SourceBucketArn": "arn:aws:s3:::prim-dags",
    });
    stand_in(
        &mut def,
        "healthy.get_environment",
        "arn:aws:states:::aws-sdk:mwaa:getEnvironment",
        json!({"Type": "Pass", "Result": {"definition": definition}}),
    );
    let machine = create_machine(&aws, &def, "sfn-healthy").await;
    // The machine reads the heartbeat in its own Region (docs/FAILOVER.md, "Unattended").
    aws.put_heartbeat_in(SECONDARY_REGION, &primary, 1.0).await;

    let out = run(&mut setup.cmd(
        dir.path(),
        &[
            "--output",
            "json",
            "--yes",
            "failover",
            "--via-step-functions",
            "--state-machine",
            &machine,
        ],
    ));
    assert_eq!(
        out.code, 6,
        "a healthy primary is a refusal: {}",
        out.stderr
    );
    let t = timeline(&out);
    assert_eq!(
        step_outcomes(&t),
        vec![("confirm_primary_unhealthy".into(), "ok".into())]
    );
    assert!(
        t["steps"][0]["details"]
            .as_str()
            .unwrap_or_default()
            .starts_with("healthy"),
        "{t}"
    );
    assert!(
        out.stderr.contains("healthy.save_definition"),
        "progress: {}",
        out.stderr
    );

    // Saved at environments/<primary>/<stamp>.json under the store's prefix, as the CLI
    // saves it, and readable as the CLI's EnvironmentDefinition.
    let listed = s3
        .list_objects_v2()
        .bucket(&setup.bucket)
        .prefix(format!("dr/environments/{primary}/"))
        .send()
        .await
        .expect("list");
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].ends_with("Z.json"), "{keys:?}");
    let body = s3
        .get_object()
        .bucket(&setup.bucket)
        .key(keys[0])
        .send()
        .await
        .expect("get")
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes();
    let saved: EnvironmentDefinition = serde_json::from_slice(&body).expect("a definition");
    assert_eq!(saved.name, primary);
    assert_eq!(saved.airflow_version.as_deref(), Some("2.10.3"));
    assert_eq!(saved.max_workers, Some(10));
}

#[tokio::test]
async fn a_drill_disables_the_schedule_and_waits_for_the_restore_task_token() {
    let Some(aws) = Aws::get("sfn_drill") else {
        return;
    };
    let Some(bench) = Bench::get() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut setup = Setup::new(&aws, "WARM_STANDBY");
    let secondary = setup.get("SECONDARY_MWAA_ENVIRONMENT_NAME");
    create_bucket(&aws, &setup.bucket).await;
    let schedule = format!("health-{}", aws.tag);
    aws.create_schedule(&schedule).await;
    setup.set("HEALTH_CHECK_SCHEDULE_NAME", &schedule);
    let (topic, queue) = aws
        .topic_with_queue(&format!("sfn-drill-{}", aws.tag))
        .await;
    setup.set("DR_SNS_TOPIC_ARN", &topic);
    let (token_topic, token_queue) = aws
        .topic_with_queue(&format!("sfn-drill-token-{}", aws.tag))
        .await;

    let mut def = setup.definition(dir.path());
    stand_in(
        &mut def,
        "confirm_secondary_available.status",
        "arn:aws:states:::aws-sdk:mwaa:getEnvironment",
        json!({"Type": "Pass", "Result": {"status": "AVAILABLE"}}),
    );
    let restore = def["States"]["restore_latest_backup"].clone();
    let mut waiting = restore.clone();
    waiting["Resource"] = json!("arn:aws:states:::sns:publish.waitForTaskToken");
    waiting["Parameters"] = json!({"TopicArn": token_topic, "Message": restore["Parameters"]});
    stand_in(
        &mut def,
        "restore_latest_backup",
        "arn:aws:states:::aws-sdk:mwaa:invokeRestApi.waitForTaskToken",
        waiting,
    );
    let machine = create_machine(&aws, &def, "sfn-drill").await;

    // The drill runs while this test answers the restore's token, as the DAG's task would.
    let mut failover = setup.cmd(
        dir.path(),
        &[
            "--output",
            "json",
            "--yes",
            "failover",
            "--via-step-functions",
            "--simulate-dr",
            "--state-machine",
            &machine,
        ],
    );
    let following = std::thread::spawn(move || run(&mut failover));

    let mut request = Value::Null;
    for _ in 0..80 {
        if let Some((_, m)) = aws.notifications(&token_queue).await.into_iter().next() {
            request = serde_json::from_str(&m).expect("the REST call's parameters");
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // What InvokeRestApi would send: a run of the restore DAG in the secondary, with cleanup
    // and the token in its conf.
    assert_eq!(request["Name"], secondary.as_str(), "{request}");
    assert_eq!(request["Method"], "POST");
    assert_eq!(request["Path"], "/dags/restore_metadata/dagRuns");
    let conf = &request["Body"]["conf"];
    assert_eq!(conf["clean"], true, "{request}");
    assert!(
        request["Body"]["dag_run_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("mwaa-dr-sfn-mwaa-dr-")),
        "{request}"
    );
    let token = conf["task_token"]
        .as_str()
        .expect("a task token")
        .to_string();
    assert_eq!(
        aws.schedule_state(&schedule).await,
        "DISABLED",
        "the schedule is disabled before the restore"
    );

    let db = bench.airflow_db("sfn_drill", "2.10.3", true);
    let store = dir.path().join("store");
    // The DAG's task runs in the secondary: its region is the state machine's.
    setup.set("AWS_REGION", SECONDARY_REGION);
    let answer = run(&mut setup.cmd(
        dir.path(),
        &[
            "--store",
            store.to_str().expect("utf-8"),
            "--yes",
            "--output",
            "json",
            "cleanup",
            "--db",
            &db,
            "--task-token",
            &token,
        ],
    ));
    assert_eq!(answer.code, 0, "{}", answer.stderr);

    let out = following.join().expect("the follower");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let t = timeline(&out);
    assert_eq!(
        step_outcomes(&t),
        [
            "confirm_primary_unhealthy",
            "disable_health_check",
            "confirm_secondary_available",
            "restore_latest_backup",
            "notify"
        ]
        .iter()
        .map(|s| (s.to_string(), "ok".to_string()))
        .collect::<Vec<_>>()
    );
    assert!(
        t["steps"][0]["details"]
            .as_str()
            .unwrap_or_default()
            .contains("simulated"),
        "{t}"
    );
    assert!(t["recovery_seconds"].as_f64().is_some(), "{t}");
    for state in [
        "disable_health_check.update",
        "restore_latest_backup",
        "notify",
    ] {
        assert!(
            out.stderr.contains(state),
            "progress lacks {state}: {}",
            out.stderr
        );
    }
    let published = aws.notifications(&queue).await;
    assert!(
        published
            .iter()
            .any(|(subject, m)| subject.contains("succeeded") && m.contains(&secondary)),
        "{published:?}"
    );
}

#[tokio::test]
async fn a_failure_notifies_the_topic_and_fails_the_run() {
    let Some(aws) = Aws::get("sfn_failure") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut setup = Setup::new(&aws, "WARM_STANDBY");
    create_bucket(&aws, &setup.bucket).await;
    // No heartbeat at all: unhealthy; and a schedule that does not exist: the step fails.
    setup.set(
        "HEALTH_CHECK_SCHEDULE_NAME",
        &format!("missing-{}", aws.tag),
    );
    let (topic, queue) = aws.topic_with_queue(&format!("sfn-fail-{}", aws.tag)).await;
    setup.set("DR_SNS_TOPIC_ARN", &topic);
    let mut def = setup.definition(dir.path());
    clock_now(&mut def);
    // Found by the name `deploy` gives it: <STACK_NAME_PREFIX>-state-machine.
    let prefix = format!("sfn-{}", aws.tag);
    setup.set("STACK_NAME_PREFIX", &prefix);
    let machine = create_named_machine(&aws, &def, &format!("{prefix}-state-machine")).await;

    let missing = run(&mut setup.cmd(
        dir.path(),
        &[
            "--yes",
            "failover",
            "--via-step-functions",
            "--state-machine",
            "nope",
        ],
    ));
    assert_eq!(missing.code, 1, "{}", missing.stderr);
    assert!(
        missing.stderr.contains("no state machine"),
        "{}",
        missing.stderr
    );
    let dry = run(&mut setup.cmd(
        dir.path(),
        &["--dry-run", "failover", "--via-step-functions"],
    ));
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(dry.stdout.contains(&machine), "{}", dry.stdout);
    let sfn = aws_sdk_sfn::Client::new(&shared(&aws));
    let executions = sfn
        .list_executions()
        .state_machine_arn(&machine)
        .send()
        .await
        .expect("executions");
    assert!(
        executions.executions().is_empty(),
        "a dry run starts nothing"
    );

    let out = run(&mut setup.cmd(
        dir.path(),
        &[
            "--output",
            "json",
            "--yes",
            "failover",
            "--via-step-functions",
        ],
    ));
    assert_eq!(out.code, 1, "{}", out.stderr);
    let t = timeline(&out);
    assert_eq!(
        step_outcomes(&t),
        vec![
            ("confirm_primary_unhealthy".into(), "ok".into()),
            ("disable_health_check".into(), "failed".into()),
        ]
    );
    assert!(
        t["steps"][0]["details"]
            .as_str()
            .unwrap_or_default()
            .contains("no heartbeat"),
        "{t}"
    );
    assert!(t["finished_at"].is_null(), "{t}");
    assert!(out.stderr.contains("ResourceNotFound"), "{}", out.stderr);
    let published = aws.notifications(&queue).await;
    assert!(
        published
            .iter()
            .any(|(subject, m)| subject.contains("FAILED")
                && m.contains("FAILED at step disable_health_check")),
        "{published:?}"
    );
}

/// The Backup-Restore drill up to the restore: the definition `mwaa-dr backup
/// --environment-only` saved (the newest of two) is what the state machine reads back from
/// S3 and hands to CreateEnvironment.
#[tokio::test]
async fn a_backup_restore_drill_recreates_from_the_definition_the_cli_saved() {
    let Some(aws) = Aws::get("sfn_br") else {
        return;
    };
    let Some(bench) = Bench::get() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut setup = Setup::new(&aws, "BACKUP_RESTORE");
    setup.set("MWAA_CREATE_ENV_POLLING_INTERVAL_SECS", "1");
    let primary = setup.get("PRIMARY_MWAA_ENVIRONMENT_NAME");
    let secondary = setup.get("SECONDARY_MWAA_ENVIRONMENT_NAME");
    let s3 = create_bucket(&aws, &setup.bucket).await;
    // An older save, then the CLI's own save of the primary (from the MWAA stand-in).
    s3.put_object()
        .bucket(&setup.bucket)
        .key(format!(
            "dr/environments/{primary}/20200101T000000.000000Z.json"
        ))
        .body(
            json!({"Name": primary, "AirflowVersion": "2.5.1"})
                .to_string()
                .into_bytes()
                .into(),
        )
        .send()
        .await
        .expect("older definition");
    aws.seed_environment(
        SECONDARY_REGION,
        json!({"Name": primary, "Status": "AVAILABLE", "AirflowVersion": "2.10.3",
               "EnvironmentClass": "mw1.medium", "MaxWorkers": 7}),
    );
    let saved = run(&mut setup.cmd(dir.path(), &["backup", "--environment-only"]));
    assert_eq!(saved.code, 0, "{}", saved.stderr);
    let (token_topic, token_queue) = aws
        .topic_with_queue(&format!("sfn-br-token-{}", aws.tag))
        .await;
    let schedule = format!("health-{}", aws.tag);
    aws.create_schedule(&schedule).await;
    setup.set("HEALTH_CHECK_SCHEDULE_NAME", &schedule);
    let (topic, _queue) = aws.topic_with_queue(&format!("sfn-br-{}", aws.tag)).await;
    setup.set("DR_SNS_TOPIC_ARN", &topic);

    let mut def = setup.definition(dir.path());
    stand_in(
        &mut def,
        "create_secondary_environment",
        "arn:aws:states:::aws-sdk:mwaa:getEnvironment",
        // GetEnvironment's ResourceNotFoundException, caught: on to the saved definitions.
        json!({"Type": "Pass", "Result": null, "Next": "create_secondary_environment.list"}),
    );
    // moto's s3:getObject hands the interpreter an unread stream as Body; HeadObject of the
    // same key shows which definition the state reads.
    let read = def["States"]["create_secondary_environment.read"].clone();
    let mut head = read.clone();
    head["Resource"] = json!("arn:aws:states:::aws-sdk:s3:headObject");
    head["ResultSelector"] = json!({"ContentLength.$": "$.ContentLength"});
    stand_in(
        &mut def,
        "create_secondary_environment.read",
        "arn:aws:states:::aws-sdk:s3:getObject",
        head,
    );
    assert_eq!(
        read["ResultSelector"]["definition.$"],
        "States.StringToJson($.Body)"
    );
    let create = stand_in(
        &mut def,
        "create_secondary_environment.create",
        "JSONata",
        json!({"Type": "Pass"}),
    );
    assert_eq!(
        create["Resource"],
        "arn:aws:states:::aws-sdk:mwaa:createEnvironment"
    );
    stand_in(
        &mut def,
        "wait_secondary_available.status",
        "arn:aws:states:::aws-sdk:mwaa:getEnvironment",
        json!({"Type": "Pass", "Result": {"status": "AVAILABLE"}}),
    );
    let restore = def["States"]["restore_latest_backup"].clone();
    let mut waiting = restore.clone();
    waiting["Resource"] = json!("arn:aws:states:::sns:publish.waitForTaskToken");
    waiting["Parameters"] = json!({"TopicArn": token_topic, "Message": restore["Parameters"]});
    stand_in(
        &mut def,
        "restore_latest_backup",
        "arn:aws:states:::aws-sdk:mwaa:invokeRestApi.waitForTaskToken",
        waiting,
    );
    let machine = create_machine(&aws, &def, "sfn-br").await;
    let mut failover = setup.cmd(
        dir.path(),
        &[
            "--output",
            "json",
            "--yes",
            "failover",
            "--via-step-functions",
            "--simulate-dr",
            "--state-machine",
            &machine,
        ],
    );
    let following = std::thread::spawn(move || run(&mut failover));
    let mut request = Value::Null;
    for _ in 0..80 {
        if let Some((_, m)) = aws.notifications(&token_queue).await.into_iter().next() {
            request = serde_json::from_str(&m).expect("the REST call's parameters");
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if request.is_null() {
        let out = following.join().expect("the follower");
        panic!("no restore was started: {}\n{}", out.stdout, out.stderr);
    }
    assert_eq!(request["Name"], secondary.as_str(), "{request}");
    let token = request["Body"]["conf"]["task_token"]
        .as_str()
        .expect("a task token")
        .to_string();
    setup.set("AWS_REGION", SECONDARY_REGION);
    let db = bench.airflow_db("sfn_br", "2.10.3", false);
    let store = dir.path().join("answer-store");
    let answer = run(&mut setup.cmd(
        dir.path(),
        &[
            "--store",
            store.to_str().expect("utf-8"),
            "--yes",
            "cleanup",
            "--db",
            &db,
            "--task-token",
            &token,
        ],
    ));
    assert_eq!(answer.code, 0, "{}", answer.stderr);
    let out = following.join().expect("the follower");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let t = timeline(&out);
    assert_eq!(
        step_outcomes(&t)
            .into_iter()
            .map(|(s, _)| s)
            .collect::<Vec<_>>(),
        [
            "confirm_primary_unhealthy",
            "disable_health_check",
            "create_secondary_environment",
            "wait_secondary_available",
            "restore_latest_backup",
            "notify"
        ]
    );

    // The key the read state was given: the newest saved definition, the CLI's.
    let keys = s3
        .list_objects_v2()
        .bucket(&setup.bucket)
        .prefix(format!("dr/environments/{primary}/"))
        .send()
        .await
        .expect("list");
    let newest = keys
        .contents()
        .iter()
        .filter_map(|o| o.key())
        .max()
        .expect("saved definitions")
        .to_string();
    assert!(!newest.contains("20200101T"), "{newest}");
    let sfn = aws_sdk_sfn::Client::new(&shared(&aws));
    let execution = sfn
        .list_executions()
        .state_machine_arn(&machine)
        .send()
        .await
        .expect("executions")
        .executions()
        .first()
        .map(|e| e.execution_arn().to_string())
        .expect("one execution");
    let history = sfn
        .get_execution_history()
        .execution_arn(&execution)
        .send()
        .await
        .expect("history");
    let read: Vec<Value> = history
        .events()
        .iter()
        .filter_map(|e| e.task_scheduled_event_details())
        .filter(|d| d.resource() == "headObject")
        .filter_map(|d| serde_json::from_str(d.parameters()).ok())
        .collect();
    assert_eq!(read.len(), 1, "{read:?}");
    assert_eq!(read[0]["Key"], newest.as_str());
}

/// A machine in the secondary Region cannot read a primary in another Region, so
/// `--via-step-functions` checks the primary from outside first: healthy there, it is refused
/// (exit 6) and no execution starts.
#[tokio::test]
async fn across_regions_a_healthy_primary_is_refused_before_any_execution() {
    let Some(aws) = Aws::get("sfn_cross_region") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut setup = Setup::new(&aws, "WARM_STANDBY");
    setup.set("PRIMARY_REGION", crate::aws::PRIMARY_REGION);
    create_bucket(&aws, &setup.bucket).await;
    let primary = setup.get("PRIMARY_MWAA_ENVIRONMENT_NAME");
    assert_ne!(crate::aws::PRIMARY_REGION, SECONDARY_REGION);
    aws.seed_environment(
        crate::aws::PRIMARY_REGION,
        json!({"Name": primary, "Status": "AVAILABLE"}),
    );
    // Healthy in the primary's own Region, where only the CLI can look.
    aws.put_heartbeat(&primary, 1.0).await;
    // Across Regions the machine has no look of its own to stand in for.
    let def = setup.definition(dir.path());
    let machine = create_machine(&aws, &def, "sfn-cross-region").await;
    let sfn = aws_sdk_sfn::Client::new(&shared(&aws));
    let executions = || async {
        sfn.list_executions()
            .state_machine_arn(&machine)
            .send()
            .await
            .expect("list executions")
            .executions()
            .len()
    };

    let refused = run(&mut setup.cmd(
        dir.path(),
        &[
            "--yes",
            "failover",
            "--via-step-functions",
            "--state-machine",
            &machine,
        ],
    ));
    assert_eq!(refused.code, 6, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("checked from here") && refused.stderr.contains("--force"),
        "{}",
        refused.stderr
    );
    assert_eq!(executions().await, 0, "nothing may start");
}
