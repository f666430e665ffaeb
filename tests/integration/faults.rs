//! Faults the runs must survive: a database or an S3 endpoint that accepts connections and
//! never answers, a table another session holds, SIGTERM and SIGINT in the middle of a
//! backup or a restore. Each ends with a clear error and its documented exit code, within a
//! bounded time, leaving no lock, no partial object and no server session behind.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use sqlx::Connection;

use crate::common::{files_under, mwaa_dr, run, silent_server};
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

/// The binary started in the background, in a clean environment like [`mwaa_dr`].
fn spawn(dir: &Path, store: &Path, args: &[&str]) -> Child {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("mwaa-dr"));
    cmd.env_clear().current_dir(dir);
    for keep in ["PATH", "HOME"] {
        if let Ok(value) = std::env::var(keep) {
            cmd.env(keep, value);
        }
    }
    cmd.arg("--store")
        .arg(store)
        .args(args)
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
