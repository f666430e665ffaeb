//! health-check and failover against the MWAA stand-in, moto and the bench PostgreSQL.

use std::time::Instant;

use serde_json::{Value, json};

use crate::aws::{Aws, PRIMARY_REGION, SECONDARY_REGION};
use crate::common::{Run, mwaa_dr, run};
use crate::pg::{Bench, connect, whole_db_digest};

const SECONDARY_ROLE: &str = "arn:aws:iam::123456789012:role/secondary-role";

fn health_check(aws: &Aws, env: &str, extra: &[(&str, &str)]) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = mwaa_dr(dir.path());
    aws.env(&mut cmd);
    cmd.env("PRIMARY_MWAA_ENVIRONMENT_NAME", env)
        .env("HEALTH_CHECK_MAX_RETRY", "0")
        .env("HEALTH_CHECK_RETRY_INTERVAL_SECS", "1");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    run(cmd.args(["--output", "json", "health-check"]))
}

fn doc(out: &Run) -> Value {
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("JSON on stdout ({e}): {}\n{}", out.stdout, out.stderr))
}

#[tokio::test]
async fn health_check_healthy_primary() {
    let Some(aws) = Aws::get("hc_healthy") else {
        return;
    };
    let env = format!("primary-{}", aws.tag);
    aws.seed_environment(PRIMARY_REGION, json!({"Name": env, "Status": "AVAILABLE"}));
    aws.put_heartbeat(&env, 1.0).await;
    let out = health_check(&aws, &env, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let d = doc(&out);
    assert_eq!(d["healthy"], true);
    assert_eq!(d["attempts"][0]["status"], "AVAILABLE");
    assert_eq!(d["attempts"][0]["heartbeat"], 1.0);
}

#[tokio::test]
async fn health_check_unhealthy_cases() {
    let Some(aws) = Aws::get("hc_unhealthy") else {
        return;
    };
    // Missing metric.
    let missing = format!("missing-{}", aws.tag);
    aws.seed_environment(
        PRIMARY_REGION,
        json!({"Name": missing, "Status": "AVAILABLE"}),
    );
    let out = health_check(&aws, &missing, &[]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        doc(&out)["attempts"][0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("no SchedulerHeartbeat")
    );
    // Zero heartbeat.
    let zero = format!("zero-{}", aws.tag);
    aws.seed_environment(PRIMARY_REGION, json!({"Name": zero, "Status": "AVAILABLE"}));
    aws.put_heartbeat(&zero, 0.0).await;
    let out = health_check(&aws, &zero, &[]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert_eq!(doc(&out)["attempts"][0]["heartbeat"], 0.0);
    // Environment UNAVAILABLE with a heartbeat.
    let down = format!("down-{}", aws.tag);
    aws.seed_environment(
        PRIMARY_REGION,
        json!({"Name": down, "Status": "UNAVAILABLE"}),
    );
    aws.put_heartbeat(&down, 1.0).await;
    let out = health_check(&aws, &down, &[]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert_eq!(doc(&out)["attempts"][0]["status"], "UNAVAILABLE");
    assert!(out.stderr.contains("unhealthy"), "{}", out.stderr);
    // Simulated disaster on a healthy primary.
    let fine = format!("fine-{}", aws.tag);
    aws.seed_environment(PRIMARY_REGION, json!({"Name": fine, "Status": "AVAILABLE"}));
    aws.put_heartbeat(&fine, 1.0).await;
    let out = health_check(&aws, &fine, &[("MWAA_SIMULATE_DR", "YES")]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert_eq!(doc(&out)["simulated"], true);
}

/// HEALTH_CHECK_MAX_RETRY retries after the first look, waiting interval * rate^n between.
#[tokio::test]
async fn health_check_retries_with_exponential_backoff() {
    let Some(aws) = Aws::get("hc_retry") else {
        return;
    };
    let env = format!("flaky-{}", aws.tag);
    aws.seed_environment(PRIMARY_REGION, json!({"Name": env, "Status": "AVAILABLE"}));
    let started = Instant::now();
    let out = health_check(
        &aws,
        &env,
        &[
            ("HEALTH_CHECK_MAX_RETRY", "2"),
            ("HEALTH_CHECK_RETRY_INTERVAL_SECS", "1"),
            ("HEALTH_CHECK_RETRY_BACKOFF_RATE", "2"),
        ],
    );
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(out.code, 3, "{}", out.stderr);
    let d = doc(&out);
    let attempts = d["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 3, "1 look + 2 retries");
    let at = |i: usize| {
        chrono::DateTime::parse_from_rfc3339(attempts[i]["at"].as_str().expect("at")).expect("time")
    };
    let gap1 = (at(1) - at(0)).num_milliseconds();
    let gap2 = (at(2) - at(1)).num_milliseconds();
    assert!(gap1 >= 1000, "first wait 1 s, got {gap1} ms");
    assert!(gap2 >= 2000, "second wait 2 s, got {gap2} ms");
    assert!(elapsed >= 3.0, "{elapsed}");
}

/// What a failover test needs: AWS names, a store with a backup of the sample metadata, and
/// a standby database that a live environment would have (parsed DAGs paused, its running
/// scheduler).
struct Scenario {
    aws: Aws,
    dir: tempfile::TempDir,
    primary: String,
    secondary: String,
    schedule: String,
    topic: String,
    queue: String,
    standby_db: String,
    bench: Bench,
    /// The S3 bucket holding the store under `mwaa-dr/`, when the store is on moto rather
    /// than in `dir`.
    bucket: Option<String>,
    /// STACK_NAME_PREFIX, when the schedule is named as the original names it
    /// (`<prefix>-scheduler`) and HEALTH_CHECK_SCHEDULE_NAME is unset.
    stack_prefix: Option<String>,
}

impl Scenario {
    async fn new(test: &str) -> Option<Scenario> {
        Self::create(test, false).await
    }

    /// An operator's setup carried over from the original: the store is
    /// `s3://<bucket>/mwaa-dr` on moto (DR_BACKUP_BUCKET with the default DR_BACKUP_PREFIX)
    /// and the health-check schedule is named from STACK_NAME_PREFIX alone.
    async fn on_s3(test: &str) -> Option<Scenario> {
        Self::create(test, true).await
    }

    async fn create(test: &str, on_s3: bool) -> Option<Scenario> {
        let aws = Aws::get(test)?;
        let (bucket, stack_prefix) = if on_s3 {
            (
                Some(aws.bucket("dr").await),
                Some(format!("stack-{}", aws.tag)),
            )
        } else {
            (None, None)
        };
        let bench = Bench::get()?;
        let dir = tempfile::tempdir().expect("tempdir");
        let src = bench.airflow_db(&format!("{test}_src"), "2.10.3", true);
        let standby_db = bench.airflow_db(&format!("{test}_standby"), "2.10.3", false);
        bench.sql(&standby_db, "INSERT INTO dag (dag_id, is_paused, is_subdag, is_active, has_task_concurrency_limits, has_import_errors, max_active_tasks, max_active_runs, max_consecutive_failed_dag_runs) VALUES ('etl', true, false, true, false, false, 16, 16, 0), ('reports', true, false, true, false, false, 16, 16, 0); INSERT INTO job (id, state, job_type, hostname) VALUES (3, 'running', 'SchedulerJob', 'standby')");
        let s = Scenario {
            primary: format!("primary-{}", aws.tag),
            secondary: format!("secondary-{}", aws.tag),
            schedule: match &stack_prefix {
                Some(prefix) => format!("{prefix}-scheduler"),
                None => format!("health-{}", aws.tag),
            },
            topic: String::new(),
            queue: String::new(),
            standby_db,
            dir,
            bench,
            aws,
            bucket,
            stack_prefix,
        };
        let out = run(s.cmd().args(["backup", "--db", &src]));
        assert_eq!(out.code, 0, "{}", out.stderr);
        Some(s)
    }

    fn store(&self) -> std::path::PathBuf {
        self.dir.path().join("store")
    }

    fn cmd(&self) -> assert_cmd::Command {
        let mut cmd = mwaa_dr(self.dir.path());
        self.aws.env(&mut cmd);
        match &self.bucket {
            Some(bucket) => cmd.env("DR_BACKUP_BUCKET", bucket),
            None => cmd.arg("--store").arg(self.store()),
        };
        match &self.stack_prefix {
            Some(prefix) => cmd.env("STACK_NAME_PREFIX", prefix),
            None => cmd.env("HEALTH_CHECK_SCHEDULE_NAME", &self.schedule),
        };
        cmd.env("PRIMARY_MWAA_ENVIRONMENT_NAME", &self.primary)
            .env("SECONDARY_MWAA_ENVIRONMENT_NAME", &self.secondary)
            .env("SECONDARY_DB_URL", &self.standby_db)
            .env("HEALTH_CHECK_MAX_RETRY", "0")
            .env("MWAA_CREATE_ENV_POLLING_INTERVAL_SECS", "1");
        if !self.topic.is_empty() {
            cmd.env("DR_SNS_TOPIC_ARN", &self.topic);
        }
        cmd
    }

    async fn with_schedule_and_topic(mut self) -> Self {
        self.aws.create_schedule(&self.schedule).await;
        let (topic, queue) = self
            .aws
            .topic_with_queue(&format!("dr-{}", self.aws.tag))
            .await;
        self.topic = topic;
        self.queue = queue;
        self
    }

    fn failover(&self, dr_type: &str, extra: &[&str]) -> Run {
        run(self
            .cmd()
            .env("DR_TYPE", dr_type)
            .args(["--yes", "--output", "json", "failover"])
            .args(extra))
    }

    /// A Backup-Restore failover with the secondary's role, DAGs bucket and network, plus
    /// `extra` variables.
    fn backup_restore_failover(&self, extra: &[(&str, &str)]) -> Run {
        let mut cmd = self.cmd();
        cmd.env("DR_TYPE", "BACKUP_RESTORE")
            .env("SECONDARY_MWAA_ROLE_ARN", SECONDARY_ROLE)
            .env("SECONDARY_DAGS_BUCKET_NAME", "secondary-dags")
            .env("SECONDARY_SUBNET_IDS", r#"["subnet-s1", "subnet-s2"]"#)
            .env("SECONDARY_SECURITY_GROUP_IDS", r#"["sg-s"]"#);
        for (name, value) in extra {
            cmd.env(name, value);
        }
        run(cmd.args(["--yes", "--output", "json", "failover"]))
    }

    async fn dag_paused(&self, dag: &str) -> bool {
        let mut conn = connect(&self.standby_db).await;
        sqlx::query_scalar("SELECT is_paused FROM dag WHERE dag_id = $1")
            .bind(dag)
            .fetch_one(&mut conn)
            .await
            .expect("dag")
    }

    async fn restored_runs(&self) -> i64 {
        let mut conn = connect(&self.standby_db).await;
        sqlx::query_scalar("SELECT count(*) FROM dag_run")
            .fetch_one(&mut conn)
            .await
            .expect("count")
    }
}

#[tokio::test]
async fn warm_standby_failover_end_to_end() {
    let Some(s) = Scenario::new("ws_e2e").await else {
        return;
    };
    let s = s.with_schedule_and_topic().await;
    s.aws.seed_environment(
        PRIMARY_REGION,
        json!({"Name": s.primary, "Status": "UNAVAILABLE"}),
    );
    s.aws.seed_environment(
        SECONDARY_REGION,
        json!({"Name": s.secondary, "Status": "AVAILABLE"}),
    );
    let out = s.failover("WARM_STANDBY", &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let timeline = doc(&out);
    let steps: Vec<&str> = timeline["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|r| r["step"].as_str())
        .collect();
    assert_eq!(
        steps,
        [
            "confirm_primary_unhealthy",
            "disable_health_check",
            "confirm_secondary_available",
            "restore_latest_backup",
            "notify"
        ]
    );
    assert!(
        timeline["recovery_seconds"]
            .as_f64()
            .is_some_and(|s| s > 0.0),
        "{timeline}"
    );
    assert_eq!(s.aws.schedule_state(&s.schedule).await, "DISABLED");
    assert_eq!(
        s.restored_runs().await,
        10,
        "the etl runs; the export DAG's run is left out"
    );
    assert!(
        !s.dag_paused("etl").await,
        "active in the primary: unpaused"
    );
    assert!(
        s.dag_paused("reports").await,
        "paused in the primary: stays paused"
    );
    let notes = s.aws.notifications(&s.queue).await;
    assert!(
        notes
            .iter()
            .any(|(subject, _)| subject.contains("succeeded")),
        "{notes:?}"
    );
    // Text output has the timeline and the measured recovery time.
    let text = run(s
        .cmd()
        .env("DR_TYPE", "WARM_STANDBY")
        .args(["--dry-run", "failover"]));
    assert_eq!(text.code, 0, "{}", text.stderr);
}

#[tokio::test]
async fn backup_restore_failover_creates_the_environment_with_mapped_fields() {
    let Some(s) = Scenario::new("br_e2e").await else {
        return;
    };
    let s = s.with_schedule_and_topic().await;
    s.aws.seed_environment(
        PRIMARY_REGION,
        json!({
            "Name": s.primary, "Status": "AVAILABLE", "AirflowVersion": "2.10.3",
            "ExecutionRoleArn": "arn:aws:iam::123456789012:role/primary-role",
            "SourceBucketArn": "arn:aws:s3:::primary-dags", "DagS3Path": "dags",
            "NetworkConfiguration": {"SubnetIds": ["subnet-p1", "subnet-p2"], "SecurityGroupIds": ["sg-p"]},
            "EnvironmentClass": "mw1.medium", "MaxWorkers": 7, "MinWorkers": 2, "Schedulers": 3,
            "MaxWebservers": 4, "MinWebservers": 2,
            "AirflowConfigurationOptions": {"core.default_timezone": "utc", "celery.worker_autoscale": "5,5"},
            "WebserverAccessMode": "PUBLIC_ONLY", "WeeklyMaintenanceWindowStart": "TUE:03:30",
            "RequirementsS3Path": "requirements.txt", "RequirementsS3ObjectVersion": "v42",
            "PluginsS3Path": "plugins.zip", "PluginsS3ObjectVersion": "p7",
            "StartupScriptS3Path": "startup.sh", "StartupScriptS3ObjectVersion": "s3",
            "EndpointManagement": "SERVICE",
            "LoggingConfiguration": {"TaskLogs": {"Enabled": true, "LogLevel": "WARNING", "CloudWatchLogGroupArn": "arn:aws:logs:us-east-1:123456789012:log-group:x"}},
            "Tags": {"team": "data"}
        }),
    );
    // The definition is saved while the primary is up.
    let saved = run(s.cmd().args(["backup", "--environment-only"]));
    assert_eq!(saved.code, 0, "{}", saved.stderr);
    s.aws.standin(
        "PATCH",
        &format!("environments/{}?region={PRIMARY_REGION}", s.primary),
        Some(json!({"Status": "UNAVAILABLE"})),
    );
    s.aws.standin(
        "POST",
        "next-create",
        Some(json!({"Name": s.secondary, "Delay": 2})),
    );
    let out = s.backup_restore_failover(&[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let creates = s.aws.requests("CreateEnvironment", &s.secondary);
    assert_eq!(creates.len(), 1, "{creates:?}");
    let body = &creates[0]["body"];
    assert_eq!(creates[0]["region"], SECONDARY_REGION);
    assert_eq!(body["ExecutionRoleArn"], SECONDARY_ROLE);
    assert_eq!(body["SourceBucketArn"], "arn:aws:s3:::secondary-dags");
    assert_eq!(
        body["NetworkConfiguration"],
        json!({"SubnetIds": ["subnet-s1", "subnet-s2"], "SecurityGroupIds": ["sg-s"]})
    );
    for (field, value) in [
        ("AirflowVersion", json!("2.10.3")),
        ("DagS3Path", json!("dags")),
        ("EnvironmentClass", json!("mw1.medium")),
        ("MaxWorkers", json!(7)),
        ("MinWorkers", json!(2)),
        ("Schedulers", json!(3)),
        ("MaxWebservers", json!(4)),
        ("MinWebservers", json!(2)),
        (
            "AirflowConfigurationOptions",
            json!({"core.default_timezone": "utc", "celery.worker_autoscale": "5,5"}),
        ),
        ("WebserverAccessMode", json!("PUBLIC_ONLY")),
        ("WeeklyMaintenanceWindowStart", json!("TUE:03:30")),
        ("RequirementsS3Path", json!("requirements.txt")),
        ("RequirementsS3ObjectVersion", json!("v42")),
        ("PluginsS3ObjectVersion", json!("p7")),
        ("StartupScriptS3ObjectVersion", json!("s3")),
        ("EndpointManagement", json!("SERVICE")),
        (
            "LoggingConfiguration",
            json!({"TaskLogs": {"Enabled": true, "LogLevel": "WARNING"}}),
        ),
        ("Tags", json!({"team": "data"})),
    ] {
        assert_eq!(body[field], value, "{field} in {body}");
    }
    let timeline = doc(&out);
    let steps: Vec<&str> = timeline["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|r| r["step"].as_str())
        .collect();
    assert!(steps.contains(&"wait_secondary_available"), "{steps:?}");
    assert_eq!(s.restored_runs().await, 10);
    assert!(!s.dag_paused("etl").await);
}

/// What the original solution's workflow stores at its backup bucket's root, made by
/// tests/fixtures/original/make-environment-json.py, for the environment `name`.
fn originals_environment_file(name: &str) -> Vec<u8> {
    include_str!("../fixtures/original/environment.json")
        .replace("mwaa-2-10-3-primary", name)
        .into_bytes()
}

/// Migrating from the original: the store has no definition of the primary (and the primary's
/// region is gone), but the original's workflow left MWAA_BACKUP_FILE_NAME at the bucket's
/// root; the failover recreates the environment from it and says so.
#[tokio::test]
async fn backup_restore_failover_recreates_from_the_originals_environment_file() {
    let Some(s) = Scenario::on_s3("br_original").await else {
        return;
    };
    let s = s.with_schedule_and_topic().await;
    let bucket = s.bucket.clone().expect("bucket");
    // A malformed file under another name: refused with the key named, nothing created.
    let mut bad =
        serde_json::from_slice::<Value>(&originals_environment_file(&s.primary)).expect("fixture");
    let mut payload: Value =
        serde_json::from_str(bad["Payload"].as_str().expect("payload")).expect("payload");
    payload["Environment"]["MaxWorkers"] = json!("seven");
    bad["Payload"] = json!(payload.to_string());
    s.aws
        .put_object(&bucket, "saved/env.json", bad.to_string().into_bytes())
        .await;
    let out = s.backup_restore_failover(&[("MWAA_BACKUP_FILE_NAME", "saved/env.json")]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stderr
            .contains(&format!("s3://{bucket}/saved/env.json"))
            && out.stderr.contains("Environment.MaxWorkers"),
        "{}",
        out.stderr
    );
    assert!(s.aws.requests("CreateEnvironment", &s.secondary).is_empty());

    // The file as the original writes it, under the default name: the resumed run creates.
    s.aws
        .put_object(
            &bucket,
            "environment.json",
            originals_environment_file(&s.primary),
        )
        .await;
    s.aws.standin(
        "POST",
        "next-create",
        Some(json!({"Name": s.secondary, "Delay": 2})),
    );
    let out = s.backup_restore_failover(&[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let creates = s.aws.requests("CreateEnvironment", &s.secondary);
    assert_eq!(creates.len(), 1, "{creates:?}");
    assert_eq!(creates[0]["region"], SECONDARY_REGION);
    // The name travels in the request's path (CreateEnvironment is PUT /environments/{Name}).
    let body = &creates[0]["body"];
    let expected = json!({
        "ExecutionRoleArn": SECONDARY_ROLE,
        "SourceBucketArn": "arn:aws:s3:::secondary-dags",
        "NetworkConfiguration": {"SubnetIds": ["subnet-s1", "subnet-s2"], "SecurityGroupIds": ["sg-s"]},
        "AirflowVersion": "2.10.3",
        "DagS3Path": "dags",
        "EnvironmentClass": "mw1.medium",
        "MaxWorkers": 7,
        "MinWorkers": 2,
        "MaxWebservers": 4,
        "MinWebservers": 2,
        "Schedulers": 3,
        "KmsKey": "arn:aws:kms:us-east-1:123456789012:key/mrk-1234abcd12ab34cd56ef1234567890ab",
        "EndpointManagement": "SERVICE",
        "WebserverAccessMode": "PUBLIC_ONLY",
        "WeeklyMaintenanceWindowStart": "TUE:03:30",
        "AirflowConfigurationOptions": {"celery.worker_autoscale": "5,5", "core.default_timezone": "utc"},
        "PluginsS3Path": "plugins.zip",
        "PluginsS3ObjectVersion": "Xk7rQ3plugins",
        "RequirementsS3Path": "requirements.txt",
        "RequirementsS3ObjectVersion": "y1Hq8requirements",
        "StartupScriptS3Path": "startup.sh",
        "StartupScriptS3ObjectVersion": "Vb2startup",
        "LoggingConfiguration": {
            "DagProcessingLogs": {"Enabled": true, "LogLevel": "WARNING"},
            "SchedulerLogs": {"Enabled": true, "LogLevel": "INFO"},
            "TaskLogs": {"Enabled": true, "LogLevel": "INFO"},
            "WebserverLogs": {"Enabled": false, "LogLevel": "ERROR"},
            "WorkerLogs": {"Enabled": true, "LogLevel": "CRITICAL"}
        },
        "Tags": {"team": "data", "cost-center": "42"}
    });
    assert_eq!(body, &expected, "CreateEnvironment body");
    let timeline = doc(&out);
    let create = timeline["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|r| r["step"] == "create_secondary_environment" && r["outcome"] == "ok")
        .unwrap_or_else(|| panic!("create step in {timeline}"));
    let detail = create.to_string();
    assert!(
        detail.contains(&format!("s3://{bucket}/environment.json"))
            && detail.contains("original solution"),
        "{detail}"
    );
    assert_eq!(s.restored_runs().await, 10);
    // The schedule named only by STACK_NAME_PREFIX, as the original names it, is disabled.
    assert_eq!(s.aws.schedule_state(&s.schedule).await, "DISABLED");
    let disabled = timeline["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|r| r["step"] == "disable_health_check")
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(disabled.contains(&s.schedule), "{disabled}");
    // The original's file is read, never rewritten; the store keeps its own layout.
    let keys = s.aws.keys(&bucket).await;
    assert!(
        keys.iter()
            .all(|k| k.starts_with("mwaa-dr/") || k == "environment.json" || k == "saved/env.json"),
        "{keys:?}"
    );
}

#[tokio::test]
async fn refuses_a_healthy_primary_and_dry_run_changes_nothing() {
    let Some(s) = Scenario::new("refuse").await else {
        return;
    };
    let s = s.with_schedule_and_topic().await;
    s.aws.seed_environment(
        PRIMARY_REGION,
        json!({"Name": s.primary, "Status": "AVAILABLE"}),
    );
    s.aws.seed_environment(
        SECONDARY_REGION,
        json!({"Name": s.secondary, "Status": "AVAILABLE"}),
    );
    s.aws.put_heartbeat(&s.primary, 1.0).await;
    let before = whole_db_digest(&s.standby_db).await;
    let store_before = list_files(&s.store());

    let dry = run(s
        .cmd()
        .env("DR_TYPE", "WARM_STANDBY")
        .args(["--dry-run", "failover"]));
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(
        dry.stdout.contains("restore the latest backup"),
        "{}",
        dry.stdout
    );
    let refused = s.failover("WARM_STANDBY", &[]);
    assert_eq!(refused.code, 6, "{}", refused.stderr);
    assert!(refused.stderr.contains("--force"), "{}", refused.stderr);

    assert_eq!(s.aws.schedule_state(&s.schedule).await, "ENABLED");
    assert_eq!(whole_db_digest(&s.standby_db).await, before);
    let added: Vec<String> = list_files(&s.store())
        .into_iter()
        .filter(|f| !store_before.contains(f))
        .collect();
    assert!(
        added.iter().all(|f| f.contains("failover/")),
        "only failover records: {added:?}"
    );
    // With --force it goes ahead.
    let forced = s.failover("WARM_STANDBY", &["--force"]);
    assert_eq!(forced.code, 0, "{}", forced.stderr);
    assert_eq!(s.restored_runs().await, 10);
}

fn list_files(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(list_files(&path));
        } else {
            out.push(path.display().to_string());
        }
    }
    out
}

/// A restore failure: a clear error, an SNS failure message, the state kept; once the cause
/// is fixed a rerun resumes at the restore and never repeats the finished steps.
#[tokio::test]
async fn failed_restore_is_resumed_by_a_rerun() {
    let Some(s) = Scenario::new("resume").await else {
        return;
    };
    let s = s.with_schedule_and_topic().await;
    s.aws.seed_environment(
        PRIMARY_REGION,
        json!({"Name": s.primary, "Status": "UNAVAILABLE"}),
    );
    s.aws.seed_environment(
        SECONDARY_REGION,
        json!({"Name": s.secondary, "Status": "AVAILABLE"}),
    );
    s.bench.sql(
        &s.standby_db,
        "ALTER TABLE log ADD CONSTRAINT no_cli CHECK (event <> 'cli_task_run')",
    );
    let first = s.failover("WARM_STANDBY", &[]);
    assert_eq!(first.code, 1, "{}", first.stderr);
    assert!(first.stderr.contains("log"), "{}", first.stderr);
    let timeline = doc(&first);
    assert_eq!(
        timeline["steps"]
            .as_array()
            .expect("steps")
            .last()
            .expect("step")["outcome"],
        "failed"
    );
    let notes = s.aws.notifications(&s.queue).await;
    assert!(
        notes
            .iter()
            .any(|(subject, message)| subject.contains("FAILED")
                && message.contains("restore_latest_backup")),
        "{notes:?}"
    );
    assert_eq!(s.aws.schedule_state(&s.schedule).await, "DISABLED");

    s.bench
        .sql(&s.standby_db, "ALTER TABLE log DROP CONSTRAINT no_cli");
    // The health-check schedule is enabled again by someone: a resumed run must not touch it.
    let second = s.failover("WARM_STANDBY", &[]);
    assert_eq!(second.code, 0, "{}", second.stderr);
    let timeline = doc(&second);
    assert_eq!(timeline["resumed"], true);
    let oks: Vec<&str> = timeline["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter(|r| r["outcome"] == "ok")
        .filter_map(|r| r["step"].as_str())
        .collect();
    assert_eq!(
        oks.iter().filter(|s| **s == "disable_health_check").count(),
        1,
        "{oks:?}"
    );
    assert_eq!(
        oks.iter()
            .filter(|s| **s == "restore_latest_backup")
            .count(),
        1,
        "{oks:?}"
    );
    assert_eq!(s.restored_runs().await, 10);
}

/// CreateEnvironment refused (ValidationException), then CREATE_FAILED: each a clear error
/// and an SNS message; after the cause is gone a rerun completes with exactly one accepted
/// CreateEnvironment.
#[tokio::test]
async fn create_environment_faults_are_resumable() {
    let Some(s) = Scenario::new("br_faults").await else {
        return;
    };
    let s = s.with_schedule_and_topic().await;
    s.aws.seed_environment(
        PRIMARY_REGION,
        json!({"Name": s.primary, "Status": "AVAILABLE", "ExecutionRoleArn": "arn:aws:iam::123456789012:role/p",
               "SourceBucketArn": "arn:aws:s3:::p", "DagS3Path": "dags",
               "NetworkConfiguration": {"SubnetIds": ["a", "b"], "SecurityGroupIds": ["c"]}}),
    );
    assert_eq!(run(s.cmd().args(["backup", "--environment-only"])).code, 0);
    s.aws.standin(
        "PATCH",
        &format!("environments/{}?region={PRIMARY_REGION}", s.primary),
        Some(json!({"Status": "UNAVAILABLE"})),
    );
    let br = |s: &Scenario| s.backup_restore_failover(&[]);
    s.aws.standin("POST", "faults", Some(json!({"Operation": "CreateEnvironment", "Error": "ValidationException", "Message": "Unable to access version v1 of requirements.txt", "Name": s.secondary, "Count": 1})));
    let refused = br(&s);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("ValidationException")
            || refused.stderr.contains("requirements.txt"),
        "{}",
        refused.stderr
    );

    s.aws.standin("POST", "next-create", Some(json!({"Name": s.secondary, "Delay": 1, "Outcome": "CREATE_FAILED", "FailureMessage": "subnets have no route"})));
    let failed = br(&s);
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    assert!(failed.stderr.contains("CREATE_FAILED"), "{}", failed.stderr);
    // The operator deletes the failed environment; the rerun creates it and completes.
    s.aws.standin(
        "DELETE",
        &format!("environments/{}?region={SECONDARY_REGION}", s.secondary),
        None,
    );
    s.aws.standin(
        "POST",
        "next-create",
        Some(json!({"Name": s.secondary, "Delay": 1})),
    );
    let done = br(&s);
    assert_eq!(done.code, 0, "{}\n{}", done.stdout, done.stderr);
    let notes = s.aws.notifications(&s.queue).await;
    assert!(
        notes
            .iter()
            .filter(|(subject, _)| subject.contains("FAILED"))
            .count()
            >= 2,
        "{notes:?}"
    );
    assert_eq!(s.restored_runs().await, 10);
    let accepted = s
        .aws
        .requests("CreateEnvironment", &s.secondary)
        .into_iter()
        .filter(|r| r["status"] == 200)
        .count();
    assert_eq!(
        accepted, 2,
        "one CREATE_FAILED attempt and one good one, never a second for the same attempt"
    );
}

/// The secondary stays CREATING past STATE_MACHINE_TIMEOUT_MINS: a clear timeout; the rerun
/// (once it is AVAILABLE) waits again without a second CreateEnvironment.
#[tokio::test]
async fn polling_timeout_then_resume_without_a_second_create() {
    let Some(s) = Scenario::new("br_timeout").await else {
        return;
    };
    let s = s.with_schedule_and_topic().await;
    s.aws.seed_environment(
        PRIMARY_REGION,
        json!({"Name": s.primary, "Status": "AVAILABLE", "ExecutionRoleArn": "arn:aws:iam::123456789012:role/p",
               "SourceBucketArn": "arn:aws:s3:::p", "DagS3Path": "dags",
               "NetworkConfiguration": {"SubnetIds": ["a", "b"], "SecurityGroupIds": ["c"]}}),
    );
    assert_eq!(run(s.cmd().args(["backup", "--environment-only"])).code, 0);
    s.aws.standin(
        "PATCH",
        &format!("environments/{}?region={PRIMARY_REGION}", s.primary),
        Some(json!({"Status": "UNAVAILABLE"})),
    );
    s.aws.standin(
        "POST",
        "next-create",
        Some(json!({"Name": s.secondary, "Delay": 3600})),
    );
    let br = |s: &Scenario| {
        s.backup_restore_failover(&[
            ("STATE_MACHINE_TIMEOUT_MINS", "1"),
            ("MWAA_CREATE_ENV_POLLING_INTERVAL_SECS", "10"),
        ])
    };
    let started = Instant::now();
    let timed_out = br(&s);
    assert_eq!(timed_out.code, 1, "{}", timed_out.stderr);
    assert!(
        timed_out.stderr.contains("CREATING"),
        "{}",
        timed_out.stderr
    );
    assert!(started.elapsed().as_secs() >= 50, "waited for the timeout");
    s.aws.standin(
        "PATCH",
        &format!("environments/{}?region={SECONDARY_REGION}", s.secondary),
        Some(json!({"Status": "AVAILABLE"})),
    );
    let done = br(&s);
    assert_eq!(done.code, 0, "{}\n{}", done.stdout, done.stderr);
    assert_eq!(
        s.aws.requests("CreateEnvironment", &s.secondary).len(),
        1,
        "no second CreateEnvironment"
    );
    assert_eq!(s.restored_runs().await, 10);
}

/// Warm-Standby with no SECONDARY_DB_URL: the restore DAG runs in the secondary through
/// InvokeRestApi, the DAGs active in the primary are unpaused there through it, and a rerun
/// after the step failed finds the run it triggered instead of triggering another.
#[tokio::test]
async fn warm_standby_failover_through_the_rest_api() {
    let Some(s) = Scenario::new("ws_rest").await else {
        return;
    };
    let s = s.with_schedule_and_topic().await;
    // The latest backup has a DAG active in the primary that the secondary never parses
    // (the DR DAGs are never recorded active, so the sample's backup_metadata is not one).
    let src = s.bench.airflow_db("ws_rest_src2", "2.10.3", true);
    s.bench.sql(&src, "INSERT INTO dag (dag_id, is_paused, is_subdag, is_active, has_task_concurrency_limits, has_import_errors, max_active_tasks, max_active_runs, max_consecutive_failed_dag_runs) VALUES ('ingest', false, false, true, false, false, 16, 16, 0)");
    let out = run(s.cmd().args(["backup", "--db", &src]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    s.aws.seed_environment(
        PRIMARY_REGION,
        json!({"Name": s.primary, "Status": "UNAVAILABLE"}),
    );
    s.aws.seed_environment(
        SECONDARY_REGION,
        json!({"Name": s.secondary, "Status": "AVAILABLE", "AirflowVersion": "3.0.6",
               "Dags": ["restore_metadata", "etl", "reports"]}),
    );
    let airflow = |body: Value| {
        s.aws.standin(
            "POST",
            &format!(
                "environments/{}/airflow?region={SECONDARY_REGION}",
                s.secondary
            ),
            Some(body),
        )
    };
    // The first restore run fails: the step fails with the run named and the task's error.
    airflow(
        json!({"DagRunDuration": 1, "DagRunOutcome": "failed", "ReportStore": s.store(),
                   "TaskErrors": {"restore_metadata": "restore failed: the backup is damaged"}}),
    );
    let failover = |s: &Scenario, extra: &[&str]| {
        run(s
            .cmd()
            .env_remove("SECONDARY_DB_URL")
            .env("DR_TYPE", "WARM_STANDBY")
            .env("STATE_MACHINE_TIMEOUT_MINS", "1")
            .env("SECONDARY_UNPAUSE_WAIT_SECS", "2")
            .args(["--yes", "--output", "json", "failover"])
            .args(extra))
    };
    // The plan says the restore is the restore DAG's, in the secondary.
    let plan = failover(&s, &["--dry-run"]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    assert!(
        plan.stdout.contains(&format!(
            "run the restore DAG restore_metadata in {} through its REST API",
            s.secondary
        )),
        "{}",
        plan.stdout
    );
    let started = std::time::Instant::now();
    let out = failover(&s, &[]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(out.stderr.contains("ended failed"), "{}", out.stderr);
    assert!(
        out.stderr.contains("the backup is damaged"),
        "{}",
        out.stderr
    );
    // The rerun triggers a new run (the failed one stays), which succeeds.
    airflow(json!({"DagRunOutcome": "success"}));
    let out = failover(&s, &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    // DAGs active in the primary but never parsed by the secondary wait
    // SECONDARY_UNPAUSE_WAIT_SECS, not STATE_MACHINE_TIMEOUT_MINS.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert!(
        out.stdout.contains("SECONDARY_UNPAUSE_WAIT_SECS"),
        "{}",
        out.stdout
    );
    let snapshot = airflow(json!({}));
    let runs = snapshot["DagRuns"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        runs.len(),
        2,
        "one failed run, one that succeeded: {snapshot}"
    );
    assert_eq!(runs[0]["conf"]["clean"], true);
    assert!(runs[0]["conf"]["backup_id"].is_string());
    let paused = |dag: &str| {
        snapshot["Dags"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["dag_id"] == dag))
            .map(|d| d["is_paused"].clone())
    };
    assert_eq!(paused("etl"), Some(json!(false)), "active in the primary");
    assert_eq!(
        paused("reports"),
        Some(json!(true)),
        "paused in the primary"
    );
    // The standby database was not touched: the restore was the DAG's.
    assert_eq!(s.restored_runs().await, 0);
}

/// A Warm-Standby failover without SECONDARY_DB_URL whose first run fails after its restore
/// DAG run was triggered (InvokeRestApi starts to answer 403 mid-follow), while that run
/// lasts `duration` seconds; the rerun comes after `pause` seconds.
async fn interrupted_remote_restore(test: &str, duration: u64, pause: u64) -> Option<Scenario> {
    let s = Scenario::new(test).await?.with_schedule_and_topic().await;
    s.aws.seed_environment(
        PRIMARY_REGION,
        json!({"Name": s.primary, "Status": "UNAVAILABLE"}),
    );
    s.aws.seed_environment(
        SECONDARY_REGION,
        json!({"Name": s.secondary, "Status": "AVAILABLE", "AirflowVersion": "2.10.3",
               "Dags": ["restore_metadata", "etl"]}),
    );
    let control = format!(
        "environments/{}/airflow?region={SECONDARY_REGION}",
        s.secondary
    );
    s.aws.standin(
        "POST",
        &control,
        Some(json!({"DagRunDuration": duration, "ReportStore": s.store()})),
    );
    // Once the run exists, the follow loses its permission: the step fails, the run goes on.
    // (The GETs of the run after the first, which finds none, are refused: the trigger goes
    // through.)
    s.aws.standin(
        "POST",
        "faults",
        Some(
            json!({"Operation": "InvokeRestApi", "Error": "AccessDeniedException",
                    "Count": -1, "Name": s.secondary, "Method": "GET",
                    "PathPrefix": "/dags/restore_metadata/dagRuns/", "Skip": 1}),
        ),
    );
    let failover = |s: &Scenario| {
        run(s
            .cmd()
            .env_remove("SECONDARY_DB_URL")
            .env("DR_TYPE", "WARM_STANDBY")
            .env("STATE_MACHINE_TIMEOUT_MINS", "1")
            .env("SECONDARY_UNPAUSE_WAIT_SECS", "0")
            .args(["--yes", "--output", "json", "failover"]))
    };
    let out = failover(&s);
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stderr.contains("airflow:InvokeRestApi"),
        "{}",
        out.stderr
    );
    // Only this test's faults: the stand-in is shared by the tests running beside it.
    s.aws
        .standin("DELETE", &format!("faults?name={}", s.secondary), None);
    std::thread::sleep(std::time::Duration::from_secs(pause));
    let out = failover(&s);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let snapshot = s.aws.standin("POST", &control, Some(json!({})));
    let runs = snapshot["DagRuns"].as_array().cloned().unwrap_or_default();
    assert_eq!(runs.len(), 1, "one restore run, never a second: {snapshot}");
    assert_eq!(runs[0]["state"], "success", "{snapshot}");
    let triggers = s
        .aws
        .requests("InvokeRestApi", &s.secondary)
        .into_iter()
        .filter(|r| {
            r["body"]["Method"] == "POST" && r["body"]["Path"] == "/dags/restore_metadata/dagRuns"
        })
        .count();
    assert_eq!(triggers, 1);
    Some(s)
}

#[tokio::test]
async fn a_rerun_follows_the_restore_run_still_running_without_a_second_trigger() {
    // The run lasts 8 s and the rerun comes at once: it finds the run running.
    interrupted_remote_restore("ws_rest_running", 8, 0).await;
}

#[tokio::test]
async fn a_rerun_finds_the_restore_run_already_succeeded_without_a_second_trigger() {
    // The run lasts 2 s and the rerun comes after 4: it finds the run succeeded.
    interrupted_remote_restore("ws_rest_succeeded", 2, 4).await;
}

/// Backup-Restore with no SECONDARY_DB_URL anywhere: the failover creates the secondary,
/// then its restore DAG (parsed once the new environment's scheduler is up) restores inside
/// it through InvokeRestApi.
#[tokio::test]
async fn backup_restore_failover_through_the_rest_api() {
    let Some(s) = Scenario::new("br_rest").await else {
        return;
    };
    let s = s.with_schedule_and_topic().await;
    s.aws.seed_environment(
        PRIMARY_REGION,
        json!({
            "Name": s.primary, "Status": "AVAILABLE", "AirflowVersion": "3.0.6",
            "ExecutionRoleArn": "arn:aws:iam::123456789012:role/primary-role",
            "SourceBucketArn": "arn:aws:s3:::primary-dags", "DagS3Path": "dags",
            "NetworkConfiguration": {"SubnetIds": ["subnet-p1", "subnet-p2"], "SecurityGroupIds": ["sg-p"]},
        }),
    );
    let saved = run(s.cmd().args(["backup", "--environment-only"]));
    assert_eq!(saved.code, 0, "{}", saved.stderr);
    s.aws.standin(
        "PATCH",
        &format!("environments/{}?region={PRIMARY_REGION}", s.primary),
        Some(json!({"Status": "UNAVAILABLE"})),
    );
    s.aws.standin(
        "POST",
        "next-create",
        Some(json!({"Name": s.secondary, "Delay": 1})),
    );
    // The new environment's scheduler parses the DR DAGs and etl a while after it is up.
    let parser = std::thread::spawn({
        let aws = Aws::get("br_rest").expect("bench");
        let (secondary, store) = (s.secondary.clone(), s.store());
        move || {
            let control = format!("environments/{secondary}/airflow?region={SECONDARY_REGION}");
            for _ in 0..300 {
                let env = aws.standin(
                    "GET",
                    &format!("environments/{secondary}?region={SECONDARY_REGION}"),
                    None,
                );
                if env["Status"] == "AVAILABLE" || env["Environment"]["Status"] == "AVAILABLE" {
                    std::thread::sleep(std::time::Duration::from_secs(2));
                    aws.standin(
                        "POST",
                        &control,
                        Some(
                            json!({"Dags": ["restore_metadata", "etl"], "DagRunDuration": 1,
                                    "ReportStore": store}),
                        ),
                    );
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        }
    });
    let mut cmd = s.cmd();
    cmd.env_remove("SECONDARY_DB_URL")
        .env("DR_TYPE", "BACKUP_RESTORE")
        .env("SECONDARY_MWAA_ROLE_ARN", SECONDARY_ROLE)
        .env("SECONDARY_DAGS_BUCKET_NAME", "secondary-dags")
        .env("SECONDARY_SUBNET_IDS", r#"["subnet-s1", "subnet-s2"]"#)
        .env("SECONDARY_SECURITY_GROUP_IDS", r#"["sg-s"]"#)
        .env("STATE_MACHINE_TIMEOUT_MINS", "1")
        .env("SECONDARY_UNPAUSE_WAIT_SECS", "5");
    let out = run(cmd.args(["--yes", "--output", "json", "failover"]));
    parser.join().expect("parser");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(s.aws.requests("CreateEnvironment", &s.secondary).len(), 1);
    let snapshot = s.aws.standin(
        "POST",
        &format!(
            "environments/{}/airflow?region={SECONDARY_REGION}",
            s.secondary
        ),
        Some(json!({})),
    );
    let runs = snapshot["DagRuns"].as_array().cloned().unwrap_or_default();
    assert_eq!(runs.len(), 1, "{snapshot}");
    assert_eq!(runs[0]["dag_id"], "restore_metadata");
    assert_eq!(runs[0]["conf"]["clean"], true);
    let etl = snapshot["Dags"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["dag_id"] == "etl"))
        .map(|d| d["is_paused"].clone());
    assert_eq!(etl, Some(json!(false)), "active in the primary: {snapshot}");
    // The Airflow 3 trigger carried logical_date.
    assert!(
        s.aws
            .requests("InvokeRestApi", &s.secondary)
            .iter()
            .any(|r| r["body"]["Method"] == "POST"
                && r["body"]["Body"].get("logical_date").is_some())
    );
    // And the standby database was never involved.
    assert_eq!(s.restored_runs().await, 0);
}
