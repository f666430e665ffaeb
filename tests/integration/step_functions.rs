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

/// What the drills share: the restore swapped for a publication of its REST call on a topic
/// read back through SQS (moto has no MWAA), the drill started and followed by `failover
/// --via-step-functions --simulate-dr`, the request read back, and its token answered as the
/// restore DAG's task would (`cleanup --task-token` on a bench database).
struct Drill {
    requests: String,
    following: Option<std::thread::JoinHandle<Run>>,
}

impl Drill {
    /// Swaps `restore_latest_backup` for `sns:publish.waitForTaskToken` publishing the very
    /// parameters InvokeRestApi would send (the DAG run and its conf with the task token).
    async fn relay_restore(aws: &Aws, def: &mut Value, name: &str) -> Drill {
        let (topic, requests) = aws
            .topic_with_queue(&format!("{name}-token-{}", aws.tag))
            .await;
        let restore = def["States"]["restore_latest_backup"].clone();
        let mut waiting = restore.clone();
        waiting["Resource"] = json!("arn:aws:states:::sns:publish.waitForTaskToken");
        waiting["Parameters"] = json!({"TopicArn": topic, "Message": restore["Parameters"]});
        stand_in(
            def,
            "restore_latest_backup",
            "arn:aws:states:::aws-sdk:mwaa:invokeRestApi.waitForTaskToken",
            waiting,
        );
        Drill {
            requests,
            following: None,
        }
    }

    /// Starts the drill on `machine`, followed in a thread while the test answers the token.
    fn start(&mut self, setup: &Setup, dir: &Path, machine: &str) {
        let mut failover = setup.cmd(
            dir,
            &[
                "--output",
                "json",
                "--yes",
                "failover",
                "--via-step-functions",
                "--simulate-dr",
                "--state-machine",
                machine,
            ],
        );
        self.following = Some(std::thread::spawn(move || run(&mut failover)));
    }

    /// The restore's REST call, as published; none within 20 s fails with the follower's
    /// output.
    async fn request(&mut self, aws: &Aws) -> Value {
        for _ in 0..80 {
            if let Some((_, m)) = aws.notifications(&self.requests).await.into_iter().next() {
                return serde_json::from_str(&m).expect("the REST call's parameters");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let out = self.finish();
        panic!("no restore was started: {}\n{}", out.stdout, out.stderr);
    }

    /// Answers the request's token as the DAG's task in the secondary would (its Region is
    /// the state machine's), then waits for the follower, which must succeed.
    fn answer(&mut self, setup: &mut Setup, dir: &Path, db: &str, request: &Value) -> Run {
        let token = request["Body"]["conf"]["task_token"]
            .as_str()
            .unwrap_or_else(|| panic!("a task token in {request}"))
            .to_string();
        setup.set("AWS_REGION", SECONDARY_REGION);
        let store = dir.join("answer-store");
        let answer = run(&mut setup.cmd(
            dir,
            &[
                "--store",
                store.to_str().expect("utf-8"),
                "--yes",
                "--output",
                "json",
                "cleanup",
                "--db",
                db,
                "--task-token",
                &token,
            ],
        ));
        assert_eq!(answer.code, 0, "{}", answer.stderr);
        let out = self.finish();
        assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
        out
    }

    fn finish(&mut self) -> Run {
        self.following
            .take()
            .expect("a started drill")
            .join()
            .expect("the follower")
    }
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

/// A Warm-Standby workflow on moto as a drill runs it: the health-check schedule to disable
/// and the outcome topic (read back through `queue`) set, the secondary answered AVAILABLE,
/// the restore relayed (`drill`).
struct WarmStandby {
    setup: Setup,
    schedule: String,
    queue: String,
    drill: Drill,
    machine: String,
}

impl WarmStandby {
    async fn on_moto(aws: &Aws, dir: &Path, name: &str) -> WarmStandby {
        let mut setup = Setup::new(aws, "WARM_STANDBY");
        create_bucket(aws, &setup.bucket).await;
        let schedule = format!("health-{}", aws.tag);
        aws.create_schedule(&schedule).await;
        setup.set("HEALTH_CHECK_SCHEDULE_NAME", &schedule);
        let (topic, queue) = aws.topic_with_queue(&format!("{name}-{}", aws.tag)).await;
        setup.set("DR_SNS_TOPIC_ARN", &topic);
        let mut def = setup.definition(dir);
        stand_in(
            &mut def,
            "confirm_secondary_available.status",
            "arn:aws:states:::aws-sdk:mwaa:getEnvironment",
            json!({"Type": "Pass", "Result": {"status": "AVAILABLE"}}),
        );
        let drill = Drill::relay_restore(aws, &mut def, name).await;
        let machine = create_machine(aws, &def, name).await;
        WarmStandby {
            setup,
            schedule,
            queue,
            drill,
            machine,
        }
    }
}

#[tokio::test]
async fn a_drill_disables_the_schedule_and_waits_for_the_restore_task_token() {
    let Some(aws) = Aws::get("sfn_drill") else {
        return;
    };
    let Some(bench) = Bench::get() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let WarmStandby {
        mut setup,
        schedule,
        queue,
        mut drill,
        machine,
    } = WarmStandby::on_moto(&aws, dir.path(), "sfn-drill").await;
    let secondary = setup.get("SECONDARY_MWAA_ENVIRONMENT_NAME");
    drill.start(&setup, dir.path(), &machine);
    let request = drill.request(&aws).await;
    // What InvokeRestApi would send: a run of the restore DAG in the secondary, with cleanup
    // and the token in its conf.
    assert_eq!(request["Name"], secondary.as_str(), "{request}");
    assert_eq!(request["Method"], "POST");
    assert_eq!(request["Path"], "/dags/restore_metadata/dagRuns");
    assert_eq!(request["Body"]["conf"]["clean"], true, "{request}");
    assert!(
        request["Body"]["dag_run_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("mwaa-dr-sfn-mwaa-dr-")),
        "{request}"
    );
    // A time with its offset, as both Airflow REST APIs take a logical date.
    assert!(
        request["Body"]["logical_date"]
            .as_str()
            .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()),
        "{request}"
    );
    assert_eq!(
        aws.schedule_state(&schedule).await,
        "DISABLED",
        "the schedule is disabled before the restore"
    );

    let db = bench.airflow_db("sfn_drill", "2.10.3", true);
    let out = drill.answer(&mut setup, dir.path(), &db, &request);
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
    let mut drill = Drill::relay_restore(&aws, &mut def, "sfn-br").await;
    let machine = create_machine(&aws, &def, "sfn-br").await;
    drill.start(&setup, dir.path(), &machine);
    let request = drill.request(&aws).await;
    assert_eq!(request["Name"], secondary.as_str(), "{request}");
    let db = bench.airflow_db("sfn_br", "2.10.3", false);
    let out = drill.answer(&mut setup, dir.path(), &db, &request);
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

// Across Regions (docs/FAILOVER.md, "Regions"): the heartbeat machine of the primary's
// Region and the failover machine started by the heartbeat alarm.

fn shared_in(aws: &Aws, region: &str) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_string()))
        .endpoint_url(&aws.moto)
        .credentials_provider(aws_sdk_sns::config::SharedCredentialsProvider::new(
            aws_sdk_sns::config::Credentials::new("testing", "testing", None, None, "bench"),
        ))
        .build()
}

/// A setup with the primary in its own Region, as deploy sees it across Regions.
fn cross_region_setup(aws: &Aws, dr_type: &str) -> Setup {
    let mut setup = Setup::new(aws, dr_type);
    setup.set("PRIMARY_REGION", crate::aws::PRIMARY_REGION);
    setup
}

/// Both templates as `deploy --template-out` writes them: (primary, secondary).
fn templates(setup: &Setup, dir: &Path) -> (Value, Value) {
    let out_dir = dir.join(format!("templates-{}", std::process::id()));
    let out = run(&mut setup.cmd(
        dir,
        &["deploy", "--template-out", out_dir.to_str().expect("utf-8")],
    ));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let prefix = setup.get("STACK_NAME_PREFIX");
    let read = |side: &str| -> Value {
        let path = out_dir.join(format!("{prefix}-{side}.template.json"));
        serde_json::from_str(&std::fs::read_to_string(&path).expect("template")).expect("JSON")
    };
    (read("primary"), read("secondary"))
}

/// The definition a template embeds for the state machine `logical`, checked.
fn embedded(template: &Value, logical: &str) -> Value {
    let text = template["Resources"][logical]["Properties"]["DefinitionString"]
        .as_str()
        .expect("a definition");
    let def: Value = serde_json::from_str(text).expect("JSON");
    check_structure(&def).expect("a well-formed definition");
    def
}

/// What the JSONata clock of the state `name` computes, computed here (as `clock_now`).
fn clock_of(def: &mut Value, name: &str) {
    let now = Utc::now();
    stand_in(
        def,
        name,
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

/// A new execution name (moto needs one).
fn execution_name() -> String {
    format!("run-{}", Utc::now().format("%H%M%S%f"))
}

/// A queue in `region`: (URL, ARN).
async fn queue_in(aws: &Aws, region: &str, name: &str) -> (String, String) {
    let sqs = aws_sdk_sqs::Client::new(&shared_in(aws, region));
    let url = sqs
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .expect("queue")
        .queue_url()
        .unwrap_or_default()
        .to_string();
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("attributes")
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
        .cloned()
        .unwrap_or_default();
    (url, arn)
}

/// The bodies of the messages in the queue (a few receives, for what is on its way).
async fn messages_in(aws: &Aws, region: &str, url: &str) -> Vec<Value> {
    let sqs = aws_sdk_sqs::Client::new(&shared_in(aws, region));
    let mut out = Vec::new();
    for _ in 0..4 {
        let got = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .send()
            .await
            .expect("receive");
        for m in got.messages() {
            out.push(serde_json::from_str(m.body().unwrap_or("{}")).unwrap_or(Value::Null));
        }
        if !out.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    out
}

/// A rule `name` in `region` with the event pattern `pattern` and one target.
async fn rule_to(aws: &Aws, region: &str, name: &str, pattern: &Value, target: &str) {
    let events = aws_sdk_eventbridge::Client::new(&shared_in(aws, region));
    events
        .put_rule()
        .name(name)
        .event_pattern(pattern.to_string())
        .state(aws_sdk_eventbridge::types::RuleState::Enabled)
        .send()
        .await
        .expect("rule");
    events
        .put_targets()
        .rule(name)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("target")
                .arn(target)
                .role_arn("arn:aws:iam::123456789012:role/forward")
                .build()
                .expect("target"),
        )
        .send()
        .await
        .expect("targets");
}

/// Starts `machine` in `region` with `input` and waits for the end: (status, the states
/// entered, the execution's error).
async fn execute(
    aws: &Aws,
    region: &str,
    machine: &str,
    input: &str,
) -> (String, Vec<String>, String) {
    let sfn = aws_sdk_sfn::Client::new(&shared_in(aws, region));
    let execution = sfn
        .start_execution()
        .state_machine_arn(machine)
        .name(execution_name())
        .input(input)
        .send()
        .await
        .expect("start")
        .execution_arn()
        .to_string();
    wait_for_end(aws, region, &execution).await
}

async fn wait_for_end(aws: &Aws, region: &str, execution: &str) -> (String, Vec<String>, String) {
    let sfn = aws_sdk_sfn::Client::new(&shared_in(aws, region));
    for _ in 0..120 {
        let d = sfn
            .describe_execution()
            .execution_arn(execution)
            .send()
            .await
            .expect("describe");
        if d.status().as_str() != "RUNNING" {
            return (
                d.status().as_str().to_string(),
                entered(aws, region, execution).await,
                d.error().unwrap_or_default().to_string(),
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{execution} still running");
}

/// The states the execution entered, in order.
async fn entered(aws: &Aws, region: &str, execution: &str) -> Vec<String> {
    let sfn = aws_sdk_sfn::Client::new(&shared_in(aws, region));
    sfn.get_execution_history()
        .execution_arn(execution)
        .max_results(1000)
        .send()
        .await
        .expect("history")
        .events()
        .iter()
        .filter_map(|e| e.state_entered_event_details())
        .map(|d| d.name().to_string())
        .collect()
}

/// The heartbeat machine of the primary's Region, executed by moto there: a healthy primary's
/// definition is saved in the primary's backup bucket and its event reaches the secondary's
/// Region through a rule with the forwarding rule's pattern and target (the secondary's
/// default bus), where a rule with the arrivals rule's pattern hands it to an SQS queue (the
/// deployed arrivals rule has no target: the alarm counts its matches, which moto does not
/// publish). A primary without heartbeat puts nothing. Stand-ins: the JSONata clock and
/// `aws-sdk:mwaa:getEnvironment` (moto runs neither).
#[tokio::test]
async fn across_regions_the_heartbeat_machine_announces_a_healthy_primary_to_the_secondary() {
    use crate::aws::PRIMARY_REGION;
    let Some(aws) = Aws::get("sfn_heartbeat") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut setup = cross_region_setup(&aws, "BACKUP_RESTORE");
    let primary = setup.get("PRIMARY_MWAA_ENVIRONMENT_NAME");
    let prefix = setup.get("STACK_NAME_PREFIX");
    let (primary_template, secondary_template) = templates(&setup, dir.path());
    let forward = &primary_template["Resources"]["HeartbeatForwardRule"]["Properties"];
    let arrivals = &secondary_template["Resources"]["HeartbeatRule"]["Properties"];
    assert_eq!(forward["EventPattern"], arrivals["EventPattern"]);
    let bus = forward["Targets"][0]["Arn"]
        .as_str()
        .expect("bus")
        .to_string();
    assert_eq!(
        bus,
        format!("arn:aws:events:{SECONDARY_REGION}:123456789012:event-bus/default")
    );
    let (queue, queue_arn) =
        queue_in(&aws, SECONDARY_REGION, &format!("arrivals-{}", aws.tag)).await;
    rule_to(
        &aws,
        PRIMARY_REGION,
        &format!("forward-{}", aws.tag),
        &forward["EventPattern"],
        &bus,
    )
    .await;
    rule_to(
        &aws,
        SECONDARY_REGION,
        &format!("arrivals-{}", aws.tag),
        &arrivals["EventPattern"],
        &queue_arn,
    )
    .await;

    // The primary's backup bucket, as deploy names it.
    let bucket = format!("{prefix}-backup-123456789012-{PRIMARY_REGION}");
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&shared_in(&aws, PRIMARY_REGION))
            .force_path_style(true)
            .build(),
    );
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("bucket");

    let mut def = embedded(&primary_template, "HeartbeatStateMachine");
    clock_of(&mut def, "look.clock1");
    stand_in(
        &mut def,
        "healthy.get_environment",
        "arn:aws:states:::aws-sdk:mwaa:getEnvironment",
        json!({"Type": "Pass", "Result": {"definition": {"Name": primary, "AirflowVersion": "2.10.3", "MaxWorkers": 4}}}),
    );
    let sfn = aws_sdk_sfn::Client::new(&shared_in(&aws, PRIMARY_REGION));
    let machine = sfn
        .create_state_machine()
        .name(format!("heartbeat-{}", aws.tag))
        .role_arn("arn:aws:iam::123456789012:role/mwaa-dr-test")
        .definition(def.to_string())
        .send()
        .await
        .expect("machine")
        .state_machine_arn()
        .to_string();

    // No heartbeat yet: nothing saved, nothing put.
    let (status, states, _) = execute(&aws, PRIMARY_REGION, &machine, "{}").await;
    assert_eq!(status, "SUCCEEDED");
    assert_eq!(
        states.last().map(String::as_str),
        Some("no_heartbeat"),
        "{states:?}"
    );
    assert!(messages_in(&aws, SECONDARY_REGION, &queue).await.is_empty());

    // Healthy in its own Region: saved and announced.
    aws.put_heartbeat(&primary, 1.0).await;
    let (status, states, error) = execute(&aws, PRIMARY_REGION, &machine, "{}").await;
    assert_eq!(status, "SUCCEEDED", "{error} {states:?}");
    assert_eq!(
        states,
        [
            "look.clock1",
            "look.heartbeat1",
            "look.judge1",
            "healthy.get_environment",
            "healthy.save_definition",
            "healthy.announce",
            "healthy"
        ]
    );
    let events = messages_in(&aws, SECONDARY_REGION, &queue).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["source"], "mwaa-dr");
    assert_eq!(events[0]["detail-type"], "primary healthy");
    assert_eq!(events[0]["detail"]["environment"], primary.as_str());
    assert_eq!(events[0]["detail"]["heartbeat"], 1.0);
    let keys: Vec<String> = s3
        .list_objects_v2()
        .bucket(&bucket)
        .prefix(format!("dr/environments/{primary}/"))
        .send()
        .await
        .expect("list")
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].ends_with("T000000.000000Z.json"), "{keys:?}");

    // Another primary's events do not reach this one's arrivals.
    setup.set(
        "PRIMARY_MWAA_ENVIRONMENT_NAME",
        &format!("other-{}", aws.tag),
    );
    let (other, _) = templates(&setup, dir.path());
    assert_ne!(
        other["Resources"]["HeartbeatForwardRule"]["Properties"]["EventPattern"],
        forward["EventPattern"]
    );
}

/// The failover machine of the secondary's Region across Regions, started as the alarm's rule
/// starts it (the rule's own input, from the template): it reads no heartbeat, disables the
/// rule (the schedule's name), and goes on to the restore, whose token this test answers;
/// started without a confirmation it refuses and notifies. Stand-ins as in the drill above:
/// GetEnvironment of the secondary and the restore's REST call; and DisableRule under
/// boto3's name for EventBridge.
#[tokio::test]
async fn across_regions_the_alarm_input_fails_over_without_reading_the_heartbeat() {
    let Some(aws) = Aws::get("sfn_alarm") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut setup = cross_region_setup(&aws, "WARM_STANDBY");
    create_bucket(&aws, &setup.bucket).await;
    let rule = format!("trigger-{}", aws.tag);
    setup.set("HEALTH_CHECK_SCHEDULE_NAME", &rule);
    let (topic, queue) = aws
        .topic_with_queue(&format!("sfn-alarm-{}", aws.tag))
        .await;
    setup.set("DR_SNS_TOPIC_ARN", &topic);
    let (token_topic, token_queue) = aws
        .topic_with_queue(&format!("sfn-alarm-token-{}", aws.tag))
        .await;
    let (_, secondary_template) = templates(&setup, dir.path());
    let trigger = &secondary_template["Resources"]["FailoverTriggerRule"]["Properties"];
    assert_eq!(trigger["Name"], rule.as_str());
    let input = trigger["Targets"][0]["Input"]
        .as_str()
        .expect("input")
        .to_string();
    // The rule the alarm fires, as deploy makes it (its target does not matter here).
    let (_, any_queue) = queue_in(&aws, SECONDARY_REGION, &format!("unused-{}", aws.tag)).await;
    rule_to(
        &aws,
        SECONDARY_REGION,
        &rule,
        &trigger["EventPattern"],
        &any_queue,
    )
    .await;

    let mut def = setup.definition(dir.path());
    assert_eq!(def, embedded(&secondary_template, "StateMachine"));
    // moto's interpreter calls boto3's client of the SDK service's name, and boto3 names
    // EventBridge `events`: the same DisableRule under that name.
    let mut disable = def["States"]["disable_health_check"].clone();
    assert_eq!(disable["Parameters"], json!({"Name": rule}));
    disable["Resource"] = json!("arn:aws:states:::aws-sdk:events:disableRule");
    stand_in(
        &mut def,
        "disable_health_check",
        "arn:aws:states:::aws-sdk:eventbridge:disableRule",
        disable,
    );
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
    let machine = create_machine(&aws, &def, "sfn-alarm").await;
    let rule_state = || async {
        aws_sdk_eventbridge::Client::new(&shared_in(&aws, SECONDARY_REGION))
            .describe_rule()
            .name(&rule)
            .send()
            .await
            .expect("rule")
            .state()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default()
    };

    // Without a confirmation: refused, notified, nothing disabled.
    let (status, states, error) = execute(&aws, SECONDARY_REGION, &machine, "{}").await;
    assert_eq!(status, "FAILED", "{states:?}");
    assert_eq!(error, "mwaa-dr.usage");
    assert!(
        states.contains(&"confirm_primary_unhealthy.unconfirmed".to_string()),
        "{states:?}"
    );
    assert!(
        !states.iter().any(|s| s.starts_with("disable_health_check")),
        "{states:?}"
    );
    assert_eq!(rule_state().await, "ENABLED");
    let published = aws.notifications(&queue).await;
    assert!(
        published
            .iter()
            .any(|(subject, _)| subject.contains("FAILED")),
        "{published:?}"
    );

    // As the alarm's rule starts it.
    let sfn = aws_sdk_sfn::Client::new(&shared(&aws));
    let execution = sfn
        .start_execution()
        .state_machine_arn(&machine)
        .name(execution_name())
        .input(&input)
        .send()
        .await
        .expect("start")
        .execution_arn()
        .to_string();
    let mut request = Value::Null;
    for _ in 0..80 {
        if let Some((_, m)) = aws.notifications(&token_queue).await.into_iter().next() {
            request = serde_json::from_str(&m).expect("the REST call's parameters");
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if request.is_null() {
        let ended = wait_for_end(&aws, SECONDARY_REGION, &execution).await;
        panic!("the restore got no token: {ended:?}");
    }
    let token = request["Body"]["conf"]["task_token"]
        .as_str()
        .expect("the restore waits for its token")
        .to_string();
    assert_eq!(rule_state().await, "DISABLED", "no second failover");
    sfn.send_task_success()
        .task_token(&token)
        .output(r#"{"missing_dags": []}"#)
        .send()
        .await
        .expect("task success");
    let (status, states, error) = wait_for_end(&aws, SECONDARY_REGION, &execution).await;
    assert_eq!(status, "SUCCEEDED", "{error} {states:?}");
    assert_eq!(
        &states[..4],
        [
            "confirm_primary_unhealthy",
            "confirm_primary_unhealthy.confirmed",
            "confirm_primary_unhealthy.unhealthy",
            "disable_health_check"
        ]
    );
    assert!(
        !states
            .iter()
            .any(|s| s.contains(".clock") || s.contains(".heartbeat")),
        "no look: {states:?}"
    );
    assert_eq!(
        states.last().map(String::as_str),
        Some("recovered"),
        "{states:?}"
    );
    let published = aws.notifications(&queue).await;
    assert!(
        published
            .iter()
            .any(|(subject, _)| subject.contains("succeeded")),
        "{published:?}"
    );
}

/// `failover --via-step-functions` across Regions: the primary found unhealthy from here (no
/// heartbeat in its Region) is what the execution's input says, and the machine, reading
/// nothing itself, goes on (here to a rule that does not exist: the run fails there and the
/// timeline shows the confirmation).
#[tokio::test]
async fn across_regions_failover_via_step_functions_hands_over_what_it_found() {
    let Some(aws) = Aws::get("sfn_handover") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut setup = cross_region_setup(&aws, "WARM_STANDBY");
    create_bucket(&aws, &setup.bucket).await;
    setup.set(
        "HEALTH_CHECK_SCHEDULE_NAME",
        &format!("missing-{}", aws.tag),
    );
    let def = setup.definition(dir.path());
    let machine = create_machine(&aws, &def, "sfn-handover").await;
    let dry = run(&mut setup.cmd(
        dir.path(),
        &[
            "--dry-run",
            "failover",
            "--via-step-functions",
            "--state-machine",
            &machine,
        ],
    ));
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(
        dry.stdout
            .contains("\"primary_unhealthy\" once the primary is found unhealthy"),
        "{}",
        dry.stdout
    );
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
    assert_eq!(out.code, 1, "{}", out.stderr);
    let t = timeline(&out);
    assert_eq!(
        step_outcomes(&t),
        [
            ("confirm_primary_unhealthy".to_string(), "ok".to_string()),
            ("disable_health_check".to_string(), "failed".to_string())
        ]
    );
    assert!(
        t["steps"][0]["details"]
            .as_str()
            .unwrap_or_default()
            .contains("confirmed before the start"),
        "{t}"
    );
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
    let input: Value = serde_json::from_str(
        sfn.describe_execution()
            .execution_arn(&execution)
            .send()
            .await
            .expect("describe")
            .input()
            .unwrap_or("{}"),
    )
    .expect("JSON input");
    assert_eq!(input["simulate_dr"], false, "{input}");
    assert!(
        input["primary_unhealthy"]
            .as_str()
            .is_some_and(|r| r.contains("found it unhealthy from outside")),
        "{input}"
    );
}

/// Starts an execution of `machine` as the health-check schedule does (no CLI involved);
/// returns its ARN.
async fn start_unattended(aws: &Aws, machine: &str, input: &str) -> String {
    aws_sdk_sfn::Client::new(&shared(aws))
        .start_execution()
        .state_machine_arn(machine)
        .name(format!(
            "schedule-{}",
            Utc::now().format("%Y%m%dT%H%M%S%3f")
        ))
        .input(input)
        .send()
        .await
        .expect("StartExecution")
        .execution_arn()
        .to_string()
}

/// A drill the schedule started, followed by `--execution ARN` while it runs and by
/// `--execution latest` once it ended: the same timeline and exit code as a started drill,
/// and nothing else started. Bad `--execution` values are refused before any call.
#[tokio::test]
async fn an_execution_the_schedule_started_is_followed_by_its_arn_and_as_latest() {
    let Some(aws) = Aws::get("sfn_follow") else {
        return;
    };
    let Some(bench) = Bench::get() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let WarmStandby {
        mut setup,
        mut drill,
        machine,
        ..
    } = WarmStandby::on_moto(&aws, dir.path(), "sfn-follow").await;

    // Bad input: refused by the parser, nothing called.
    for (args, expect) in [
        (
            vec!["failover", "--via-step-functions", "--execution", "nope"],
            "or `latest`",
        ),
        (
            vec![
                "failover",
                "--via-step-functions",
                "--execution",
                "arn:aws:states:us-east-2:123456789012:stateMachine:m",
            ],
            "execution ARN",
        ),
        (
            vec![
                "failover",
                "--via-step-functions",
                "--simulate-dr",
                "--execution",
                "latest",
            ],
            "--simulate-dr",
        ),
        (
            vec!["failover", "--execution", "latest"],
            "--via-step-functions",
        ),
        (
            vec![
                "failover",
                "--via-step-functions",
                "--state-machine",
                &machine,
                "--execution",
                "arn:aws:states:us-east-2:123456789012:execution:m:e",
            ],
            "names its machine itself",
        ),
    ] {
        let out = run(&mut setup.cmd(dir.path(), &args));
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(expect), "{args:?}: {}", out.stderr);
    }
    let none = run(&mut setup.cmd(
        dir.path(),
        &[
            "failover",
            "--via-step-functions",
            "--execution",
            "latest",
            "--state-machine",
            &machine,
        ],
    ));
    assert_eq!(none.code, 1, "{}", none.stderr);
    assert!(none.stderr.contains("no execution yet"), "{}", none.stderr);

    let execution = start_unattended(&aws, &machine, r#"{"simulate_dr": "YES"}"#).await;
    let mut follow = setup.cmd(
        dir.path(),
        &[
            "--output",
            "json",
            "failover",
            "--via-step-functions",
            "--execution",
            &execution,
        ],
    );
    drill.following = Some(std::thread::spawn(move || run(&mut follow)));
    let request = drill.request(&aws).await;
    let db = bench.airflow_db("sfn_follow", "2.10.3", true);
    let out = drill.answer(&mut setup, dir.path(), &db, &request);
    let t = timeline(&out);
    let all_ok: Vec<(String, String)> = [
        "confirm_primary_unhealthy",
        "disable_health_check",
        "confirm_secondary_available",
        "restore_latest_backup",
        "notify",
    ]
    .iter()
    .map(|s| (s.to_string(), "ok".to_string()))
    .collect();
    assert_eq!(step_outcomes(&t), all_ok, "{t}");
    let name = execution.rsplit(':').next().expect("a name");
    assert_eq!(t["run_id"], name, "{t}");
    assert!(t["recovery_seconds"].as_f64().is_some(), "{t}");
    assert!(
        out.stderr.contains(&format!("following {execution}"))
            && out.stderr.contains("restore_latest_backup"),
        "{}",
        out.stderr
    );

    // Once it ended, `latest` is that execution: the same timeline, the same exit code.
    let latest = run(&mut setup.cmd(
        dir.path(),
        &[
            "--output",
            "json",
            "failover",
            "--via-step-functions",
            "--execution",
            "latest",
            "--state-machine",
            &machine,
        ],
    ));
    assert_eq!(latest.code, 0, "{}", latest.stderr);
    let again = timeline(&latest);
    assert_eq!(again["run_id"], name, "{again}");
    assert_eq!(step_outcomes(&again), all_ok, "{again}");
    assert_eq!(again["recovery_seconds"], t["recovery_seconds"]);
    // An execution ARN is looked up in the Region it names, not in SECONDARY_REGION.
    let secondary_region = setup.get("SECONDARY_REGION");
    setup.set("SECONDARY_REGION", "eu-west-1");
    let elsewhere = run(&mut setup.cmd(
        dir.path(),
        &[
            "--output",
            "json",
            "failover",
            "--via-step-functions",
            "--execution",
            &execution,
        ],
    ));
    assert_eq!(elsewhere.code, 0, "{}", elsewhere.stderr);
    assert_eq!(step_outcomes(&timeline(&elsewhere)), all_ok);
    setup.set("SECONDARY_REGION", &secondary_region);
    let dry = run(&mut setup.cmd(
        dir.path(),
        &[
            "--dry-run",
            "failover",
            "--via-step-functions",
            "--execution",
            "latest",
            "--state-machine",
            &machine,
        ],
    ));
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(
        dry.stdout.contains(&execution) && dry.stdout.contains("SUCCEEDED"),
        "{}",
        dry.stdout
    );
    let executions = aws_sdk_sfn::Client::new(&shared(&aws))
        .list_executions()
        .state_machine_arn(&machine)
        .send()
        .await
        .expect("executions");
    assert_eq!(executions.executions().len(), 1, "following starts nothing");
}

/// A failing execution the schedule started, followed as `latest` of the machine `deploy`
/// names, exits 1 with the timeline up to the failed step.
#[tokio::test]
async fn a_failing_execution_followed_as_latest_exits_1_with_its_timeline() {
    let Some(aws) = Aws::get("sfn_follow_failure") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut setup = Setup::new(&aws, "WARM_STANDBY");
    create_bucket(&aws, &setup.bucket).await;
    setup.set(
        "HEALTH_CHECK_SCHEDULE_NAME",
        &format!("missing-{}", aws.tag),
    );
    let (topic, _queue) = aws
        .topic_with_queue(&format!("sfn-follow-fail-{}", aws.tag))
        .await;
    setup.set("DR_SNS_TOPIC_ARN", &topic);
    let mut def = setup.definition(dir.path());
    clock_now(&mut def);
    let prefix = format!("sfnf-{}", aws.tag);
    setup.set("STACK_NAME_PREFIX", &prefix);
    let machine = create_named_machine(&aws, &def, &format!("{prefix}-state-machine")).await;
    let execution = start_unattended(&aws, &machine, "{}").await;

    let out = run(&mut setup.cmd(
        dir.path(),
        &[
            "--output",
            "json",
            "failover",
            "--via-step-functions",
            "--execution",
            "latest",
        ],
    ));
    assert_eq!(out.code, 1, "{}", out.stderr);
    let t = timeline(&out);
    assert_eq!(
        step_outcomes(&t),
        vec![
            ("confirm_primary_unhealthy".into(), "ok".into()),
            ("disable_health_check".into(), "failed".into()),
        ],
        "{t}"
    );
    assert!(t["finished_at"].is_null(), "{t}");
    assert!(
        out.stderr.contains(&format!("following {execution}"))
            && out.stderr.contains("ResourceNotFound"),
        "{}",
        out.stderr
    );
}

/// A scheduled execution that found the primary healthy, followed by its ARN: refused (6),
/// as a started one is, with the timeline of its health check.
#[tokio::test]
async fn a_healthy_execution_followed_by_its_arn_is_a_refusal() {
    let Some(aws) = Aws::get("sfn_follow_healthy") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let setup = Setup::new(&aws, "WARM_STANDBY");
    let primary = setup.get("PRIMARY_MWAA_ENVIRONMENT_NAME");
    create_bucket(&aws, &setup.bucket).await;
    let mut def = setup.definition(dir.path());
    clock_now(&mut def);
    let machine = create_machine(&aws, &def, "sfn-follow-healthy").await;
    aws.put_heartbeat_in(SECONDARY_REGION, &primary, 1.0).await;
    let execution = start_unattended(&aws, &machine, "{}").await;

    let out = run(&mut setup.cmd(
        dir.path(),
        &[
            "--output",
            "json",
            "failover",
            "--via-step-functions",
            "--execution",
            &execution,
        ],
    ));
    assert_eq!(out.code, 6, "{}", out.stderr);
    let t = timeline(&out);
    assert_eq!(
        step_outcomes(&t),
        vec![("confirm_primary_unhealthy".into(), "ok".into())],
        "{t}"
    );
    assert!(
        out.stderr.contains("the primary is healthy") && out.stderr.contains(&execution),
        "{}",
        out.stderr
    );
}
