//! Faults the runs must survive: a database or an S3 endpoint that accepts connections and
//! never answers, a table another session holds, SIGTERM and SIGINT in the middle of a
//! backup or a restore. Each ends with a clear error and its documented exit code, within a
//! bounded time, leaving no lock, no partial object and no server session behind.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use sqlx::Connection;

use crate::common::{FreezingProxy, files_under, mwaa_dr, run, silent_server};
use crate::pg::{Bench, connect, whole_db_digest};

#[test]
fn a_database_that_never_answers_fails_the_backup_within_the_connect_timeout() {
    let (_server, addr) = silent_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let out = run(mwaa_dr(dir.path())
        .env("MWAA_DR_DB_CONNECT_TIMEOUT_SECS", "2")
        .args(["--output", "json", "--store"])
        .arg(dir.path().join("store"))
        .args(["backup", "--db", &format!("postgres://u:pw@{addr}/airflow")]));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    let doc: serde_json::Value = serde_json::from_str(&out.stderr).expect("JSON error");
    assert_eq!(doc["error"]["class"], "transient", "{doc}");
    assert_eq!(doc["error"]["retryable"], true);
    assert!(
        out.stderr.contains("MWAA_DR_DB_CONNECT_TIMEOUT_SECS"),
        "{}",
        out.stderr
    );
}

#[test]
fn an_s3_endpoint_that_never_answers_fails_within_the_aws_timeout() {
    let (_server, addr) = silent_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let out = run(mwaa_dr(dir.path())
        .env("AWS_ENDPOINT_URL", format!("http://{addr}"))
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("MWAA_DR_AWS_TIMEOUT_SECS", "2")
        .env("MWAA_DR_AWS_MAX_ATTEMPTS", "2")
        .args(["--store", "s3://frozen-bucket/dr", "list"]));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("MWAA_DR_AWS_TIMEOUT_SECS"),
        "{}",
        out.stderr
    );
}

/// A session holding `table` exclusively, in an open transaction, until dropped.
pub async fn hold_table(url: &str, table: &str) -> sqlx::PgConnection {
    let mut conn = connect(url).await;
    sqlx::query("BEGIN")
        .execute(&mut conn)
        .await
        .expect("begin");
    sqlx::query(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
        .execute(&mut conn)
        .await
        .expect("lock");
    conn
}

fn backup(dir: &Path, store: &Path, db: &str) {
    let out = run(mwaa_dr(dir)
        .arg("--store")
        .arg(store)
        .args(["backup", "--db", db]));
    assert_eq!(out.code, 0, "backup failed: {}", out.stderr);
}

async fn mwaa_dr_sessions(url: &str) -> i64 {
    let mut conn = connect(url).await;
    let n = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'mwaa-dr' AND datname = current_database()",
    )
    .fetch_one(&mut conn)
    .await
    .expect("count");
    let _ = conn.close().await;
    n
}

#[tokio::test]
async fn a_restore_waiting_on_a_held_table_names_the_holder_and_changes_nothing() {
    let Some(bench) = Bench::get() else { return };
    let src = bench.airflow_db("lockw_src", "2.10.3", true);
    let dst = bench.airflow_db("lockw_dst", "2.10.3", false);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    backup(dir.path(), &store, &src);
    let before = whole_db_digest(&dst).await;
    let holder = hold_table(&dst, "task_instance").await;
    let out = run(mwaa_dr(dir.path())
        .env("MWAA_DR_DB_LOCK_TIMEOUT_SECS", "2")
        .arg("--store")
        .arg(&store)
        .args(["--yes", "restore", "--clean", "--db", &dst]));
    drop(holder);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("task_instance is held by pid"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("55P03"), "{}", out.stderr);
    assert_eq!(whole_db_digest(&dst).await, before, "target unchanged");
    assert!(files_under(&store.join("locks")).is_empty(), "lock left");
}

/// mwaa-dr sessions once a stopped run has exited: the server may take a moment to end a
/// terminated backend, never longer than a few seconds.
async fn sessions_after_exit(url: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = mwaa_dr_sessions(url).await;
        if n == 0 || Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The binary started in the background, in a clean environment like [`mwaa_dr`].
fn spawn(dir: &Path, store: &Path, args: &[&str]) -> Child {
    let mut all = vec!["--store", store.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    start(dir, &[], &all)
}

/// [`spawn`] with variables and without an implied store.
fn start(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Child {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("mwaa-dr"));
    cmd.env_clear().current_dir(dir);
    for keep in ["PATH", "HOME"] {
        if let Ok(value) = std::env::var(keep) {
            cmd.env(keep, value);
        }
    }
    for (name, value) in env {
        cmd.env(name, value);
    }
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn")
}

/// Starts the binary, waits until it is blocked on the held table, then signals it.
async fn signal_while_blocked(child: Child, url: &str, signal: &str) -> (i32, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut conn = connect(url).await;
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'mwaa-dr' AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut conn)
        .await
        .expect("activity");
        let _ = conn.close().await;
        if waiting > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "mwaa-dr never waited on the lock"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pid = child.id().to_string();
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        let out = child.wait_with_output().expect("wait");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .expect("join");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the run took {:?} to stop",
        started.elapsed()
    );
    out
}

#[tokio::test]
async fn sigterm_and_sigint_during_a_restore_roll_back_and_leave_nothing() {
    let Some(bench) = Bench::get() else { return };
    let src = bench.airflow_db("sigr_src", "2.10.3", true);
    let dst = bench.airflow_db("sigr_dst", "2.10.3", false);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    backup(dir.path(), &store, &src);
    let before = whole_db_digest(&dst).await;
    for signal in ["TERM", "INT"] {
        let holder = hold_table(&dst, "task_instance").await;
        let child = spawn(
            dir.path(),
            &store,
            &["--yes", "restore", "--clean", "--db", &dst],
        );
        let (code, stderr) = signal_while_blocked(child, &dst, signal).await;
        // While the table is still held: a statement left waiting on the server would
        // still be there.
        assert_eq!(
            sessions_after_exit(&dst).await,
            0,
            "SIG{signal}: server session left"
        );
        drop(holder);
        assert_eq!(code, 130, "SIG{signal}: {stderr}");
        assert!(stderr.contains("interrupted"), "{stderr}");
        assert_eq!(mwaa_dr_sessions(&dst).await, 0, "server session left");
        assert!(files_under(&store.join("locks")).is_empty(), "lock left");
        assert_eq!(whole_db_digest(&dst).await, before, "target unchanged");
    }
    // And the same restore then runs to the end.
    let out = run(mwaa_dr(dir.path())
        .arg("--store")
        .arg(&store)
        .args(["--yes", "restore", "--clean", "--db", &dst]));
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[tokio::test]
async fn sigterm_during_a_backup_removes_its_partial_objects_and_lock() {
    let Some(bench) = Bench::get() else { return };
    let src = bench.airflow_db("sigb_src", "2.10.3", true);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    // `log` is exported after the bigger tables have been written, so objects exist when
    // the signal comes; with one job the tables go one after the other.
    let holder = hold_table(&src, "log").await;
    let child = spawn(dir.path(), &store, &["backup", "--jobs", "1", "--db", &src]);
    let (code, stderr) = signal_while_blocked(child, &src, "TERM").await;
    assert_eq!(
        sessions_after_exit(&src).await,
        0,
        "server session left while the table is held"
    );
    drop(holder);
    assert_eq!(code, 130, "{stderr}");
    assert_eq!(mwaa_dr_sessions(&src).await, 0, "server session left");
    assert!(
        files_under(&store).is_empty(),
        "left behind: {:?}",
        files_under(&store)
    );
    let out = run(mwaa_dr(dir.path())
        .arg("--store")
        .arg(&store)
        .args(["backup", "--db", &src]));
    assert_eq!(out.code, 0, "rerun: {}", out.stderr);
}

/// A backup worker that fails stops the others at once: while one worker waits for a table
/// another session holds (it would wait the whole lock timeout), the other worker fails at
/// its first written table; the backup ends with that worker's error within seconds,
/// leaving no object, no temporary file, no lock and no server session.
#[tokio::test]
async fn a_failing_backup_worker_stops_the_others_at_once() {
    let Some(bench) = Bench::get() else { return };
    let src = bench.airflow_db("stopw_src", "2.10.3", true);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let holder = hold_table(&src, "log").await;
    let started = Instant::now();
    let out = run(mwaa_dr(dir.path())
        .env("MWAA_DR_TEST_FAILPOINT", "backup.table_written=error")
        .env("MWAA_DR_DB_LOCK_TIMEOUT_SECS", "300")
        .arg("--store")
        .arg(&store)
        .args(["backup", "--jobs", "2", "--db", &src]));
    let took = started.elapsed();
    assert_eq!(
        sessions_after_exit(&src).await,
        0,
        "server session left while the table is held"
    );
    drop(holder);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("injected failure"),
        "not the failing worker's error: {}",
        out.stderr
    );
    assert!(
        took < Duration::from_secs(30),
        "the backup waited {took:?} for the held table after a worker failed"
    );
    assert!(
        files_under(&store).is_empty(),
        "left behind: {:?}",
        files_under(&store)
    );
}

/// A statement timeout shorter than the lock timeout ends a restore waiting on a held
/// table: SQLSTATE 57014 named, retryable, the target unchanged, and stderr free of sqlx's
/// "slow statement" warnings and of colour codes (it is a pipe here, as in cron).
#[tokio::test]
async fn a_statement_timeout_ends_a_restore_waiting_on_a_held_table() {
    let Some(bench) = Bench::get() else { return };
    let src = bench.airflow_db("stmt_src", "2.10.3", true);
    let dst = bench.airflow_db("stmt_dst", "2.10.3", false);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    backup(dir.path(), &store, &src);
    let before = whole_db_digest(&dst).await;
    let holder = hold_table(&dst, "task_instance").await;
    let restore = |format: &str| {
        let started = Instant::now();
        let out = run(mwaa_dr(dir.path())
            .env("MWAA_DR_DB_LOCK_TIMEOUT_SECS", "600")
            .env("MWAA_DR_DB_STATEMENT_TIMEOUT_SECS", "2")
            .args(["--output", format, "--store"])
            .arg(&store)
            .args(["--yes", "restore", "--clean", "--db", &dst]));
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "took {:?}: {}",
            started.elapsed(),
            out.stderr
        );
        out
    };
    let text = restore("text");
    let json = restore("json");
    assert_eq!(
        sessions_after_exit(&dst).await,
        0,
        "server session left while the table is held"
    );
    drop(holder);
    assert_eq!(text.code, 1, "{}", text.stderr);
    assert!(text.stderr.contains("57014"), "{}", text.stderr);
    assert!(text.stderr.contains("may pass"), "{}", text.stderr);
    assert!(!text.stderr.contains("slow statement"), "{}", text.stderr);
    assert!(!text.stderr.contains('\u{1b}'), "{:?}", text.stderr);
    assert_eq!(json.code, 1, "{}", json.stderr);
    let doc: serde_json::Value = serde_json::from_str(&json.stderr).expect("JSON error");
    assert_eq!(doc["error"]["class"], "transient", "{doc}");
    assert_eq!(doc["error"]["retryable"], true, "{doc}");
    assert_eq!(whole_db_digest(&dst).await, before, "target unchanged");
    assert!(files_under(&store.join("locks")).is_empty(), "lock left");
}

/// The variables that point the binary at moto (or at a proxy in front of it).
fn aws_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint.to_string()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("PRIMARY_REGION", "us-east-1".into()),
        ("MWAA_DR_AWS_TIMEOUT_SECS", "2".into()),
        ("MWAA_DR_AWS_MAX_ATTEMPTS", "2".into()),
    ]
}

fn run_with(dir: &Path, env: &[(&'static str, String)], args: &[&str]) -> crate::common::Run {
    let mut cmd = mwaa_dr(dir);
    for (name, value) in env {
        cmd.env(name, value);
    }
    run(cmd.args(args))
}

/// An S3 store that freezes in the middle of a restore, once the backup is verified and the
/// transaction is open (the first object read of the load): the restore fails within the
/// AWS timeout as transient, the target is unchanged, its session is gone, and the same
/// restore succeeds once S3 answers again.
#[tokio::test]
async fn a_restore_from_s3_that_freezes_mid_load_fails_within_the_aws_timeout() {
    let Some(bench) = Bench::get() else { return };
    let Some((_s3, bucket)) = crate::store::moto_bucket("faults_frozen").await else {
        return;
    };
    let moto = std::env::var("MWAA_DR_TEST_MOTO_URL").expect("moto url");
    let proxy = FreezingProxy::start(&moto, ".csv.zst");
    let src = bench.airflow_db("frz_src", "2.10.3", true);
    let dst = bench.airflow_db("frz_dst", "2.10.3", false);
    let reference = bench.airflow_db("frz_ref", "2.10.3", false);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = format!("s3://{bucket}/dr");
    let env = aws_env(&proxy.url);
    let out = run_with(
        dir.path(),
        &env,
        &["--store", &store, "backup", "--db", &src],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    // How many object reads the verification makes (the restore's first phase).
    proxy.freeze_at(usize::MAX);
    let out = run_with(dir.path(), &env, &["--store", &store, "verify"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let verified = proxy.seen();
    assert!(verified > 0, "no object read through the proxy");
    let restore = |db: &str| -> Vec<String> {
        ["--store", &store, "--yes", "restore", "--clean", "--db", db]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    let before = whole_db_digest(&dst).await;
    proxy.freeze_at(verified + 1);
    let args = restore(&dst);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let out = run_with(dir.path(), &env, &args);
    let took = started.elapsed();
    assert!(proxy.seen() > verified, "frozen after the verification");
    assert!(took < Duration::from_secs(40), "took {took:?}");
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("may pass"), "{}", out.stderr);
    assert_eq!(whole_db_digest(&dst).await, before, "target unchanged");
    assert_eq!(sessions_after_exit(&dst).await, 0, "server session left");
    // S3 answers again: the same restore goes through (its lock from the frozen run was
    // removed, or it would be refused as locked).
    let env = aws_env(&moto);
    let out = run_with(dir.path(), &env, &args);
    assert_eq!(out.code, 0, "rerun: {}", out.stderr);
    let out = run_with(
        dir.path(),
        &env,
        &[
            "--store", &store, "--yes", "restore", "--clean", "--db", &reference,
        ],
    );
    assert_eq!(out.code, 0, "reference: {}", out.stderr);
    assert_eq!(
        whole_db_digest(&dst).await,
        whole_db_digest(&reference).await
    );
}

/// `health-check` against MWAA and CloudWatch endpoints that never answer ends within the
/// AWS timeout, reporting the primary unhealthy (an API that does not answer is evidence of
/// a regional outage), exit 3.
#[test]
fn a_health_check_against_aws_that_never_answers_ends_unhealthy_within_its_timeout() {
    let (_server, addr) = silent_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = aws_env(&format!("http://{addr}"));
    env.extend([
        ("PRIMARY_MWAA_ENVIRONMENT_NAME", "primary".to_string()),
        ("HEALTH_CHECK_MAX_RETRY", "0".to_string()),
    ]);
    let started = Instant::now();
    let out = run_with(dir.path(), &env, &["health-check"]);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("did not answer") || out.stderr.contains("did not answer"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
}

/// Waits for `marker` on the child's stderr (up to a minute); returns whether it came and
/// the lines read so far.
fn wait_for_marker(child: &mut Child, marker: &str) -> (bool, String) {
    use std::io::{BufRead, BufReader};
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = String::new();
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains(marker) {
                return (true, seen);
            }
        }
    }
    (false, seen)
}

/// SIGTERM to a child; its exit code and how long it took to exit.
fn terminate(mut child: Child) -> (i32, Duration) {
    let started = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let code = child.wait().map(|s| s.code().unwrap_or(-1)).unwrap_or(-1);
    (code, started.elapsed())
}

/// SIGTERM while `verify` reads the objects, and while a restore verifies its backup: both
/// stop at once (well within the grace period) with the interrupted code, and the restore
/// leaves its target and the store as they were.
#[tokio::test]
async fn sigterm_stops_verify_and_the_verification_of_a_restore_at_once() {
    let Some(bench) = Bench::get() else { return };
    let src = bench.airflow_db("sigv_src", "2.10.3", true);
    let dst = bench.airflow_db("sigv_dst", "2.10.3", false);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    backup(dir.path(), &store, &src);
    let before = whole_db_digest(&dst).await;
    let point = "verify.object_opened";
    let armed = [("MWAA_DR_TEST_FAILPOINT", point)];
    let store_arg = store.to_str().expect("utf-8 path");
    for args in [
        vec!["--store", store_arg, "verify"],
        vec![
            "--store", store_arg, "--yes", "restore", "--clean", "--db", &dst,
        ],
    ] {
        let mut child = start(dir.path(), &armed, &args);
        let (reached, seen) = wait_for_marker(&mut child, &format!("failpoint {point} reached"));
        assert!(reached, "{args:?}: {seen}");
        let (code, took) = terminate(child);
        assert_eq!(code, 130, "{args:?}");
        assert!(
            took < Duration::from_secs(10),
            "{args:?} took {took:?} to stop"
        );
    }
    assert_eq!(whole_db_digest(&dst).await, before, "target unchanged");
    assert!(files_under(&store.join("locks")).is_empty(), "lock left");
}

/// SIGTERM while `health-check` waits between its looks at an unhealthy primary: it stops
/// at once with the interrupted code instead of sleeping out its retries.
#[test]
fn sigterm_stops_a_health_check_between_its_looks() {
    let Some(aws) = crate::aws::Aws::get("faults_health_sigterm") else {
        return;
    };
    let primary = format!("primary-{}", aws.tag);
    aws.seed_environment(
        crate::aws::PRIMARY_REGION,
        serde_json::json!({"Name": primary, "Status": "UNAVAILABLE"}),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env: Vec<(&str, String)> = aws.vars();
    env.extend([
        ("PRIMARY_MWAA_ENVIRONMENT_NAME", primary.clone()),
        ("HEALTH_CHECK_MAX_RETRY", "5".to_string()),
        ("HEALTH_CHECK_RETRY_INTERVAL_SECS", "120".to_string()),
        ("MWAA_DR_LOG", "info".to_string()),
    ]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let child = start(dir.path(), &env, &["health-check"]);
    // The first look is quick against the stand-in and moto; then it waits 120 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    while aws.requests("GetEnvironment", &primary).is_empty() {
        assert!(Instant::now() < deadline, "health-check never looked");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    let (code, took) = terminate(child);
    assert_eq!(code, 130);
    assert!(took < Duration::from_secs(10), "took {took:?} to stop");
}

/// SIGTERM during a backup to S3, once a table is written: no object of that backup and no
/// multipart upload is left in the bucket, and the next backup succeeds.
#[tokio::test]
async fn sigterm_during_a_backup_to_s3_leaves_no_object_and_no_upload() {
    let Some(bench) = Bench::get() else { return };
    let Some((s3, bucket)) = crate::store::moto_bucket("faults_s3_sigterm").await else {
        return;
    };
    let moto = std::env::var("MWAA_DR_TEST_MOTO_URL").expect("moto url");
    let src = bench.airflow_db("sigs3_src", "2.10.3", true);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = format!("s3://{bucket}/dr");
    let mut env = aws_env(&moto);
    env.push(("MWAA_DR_TEST_FAILPOINT", "backup.table_written".to_string()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut child = start(
        dir.path(),
        &env,
        &["--store", &store, "backup", "--jobs", "1", "--db", &src],
    );
    let (reached, seen) = wait_for_marker(&mut child, "failpoint backup.table_written reached");
    assert!(reached, "{seen}");
    let (code, _) = terminate(child);
    assert_eq!(code, 130);
    let objects = s3
        .list_objects_v2()
        .bucket(&bucket)
        .prefix("dr/")
        .send()
        .await
        .expect("list objects");
    let keys: Vec<&str> = objects.contents().iter().filter_map(|o| o.key()).collect();
    assert!(keys.is_empty(), "left behind: {keys:?}");
    let uploads = s3
        .list_multipart_uploads()
        .bucket(&bucket)
        .send()
        .await
        .expect("list multipart uploads");
    assert!(
        uploads.uploads().is_empty(),
        "uploads left: {:?}",
        uploads.uploads()
    );
    let out = run_with(
        dir.path(),
        &aws_env(&moto),
        &["--store", &store, "backup", "--db", &src],
    );
    assert_eq!(out.code, 0, "rerun: {}", out.stderr);
}
