//! The upgrade path: a backup of an older Airflow restores into a newer minor version (new
//! columns take their defaults), proven with that newer Airflow's own CLI; never downwards.

use std::path::Path;

use crate::airflow_cli::{airflow, airflow_venv};
use crate::common::{mwaa_dr, run};
use crate::pg::{Bench, connect, whole_db_digest};

const FERNET: &str = "bXdhYS1kciBzY2hlbWEgZml4dHVyZSBmZXJuZXQgMDE=";

fn backup(dir: &Path, store: &Path, db: &str) {
    let out = run(mwaa_dr(dir)
        .arg("--store")
        .arg(store)
        .args(["backup", "--db", db]));
    assert_eq!(out.code, 0, "backup failed: {}", out.stderr);
}

#[tokio::test]
async fn backup_of_2_8_1_restores_into_2_10_3_and_not_back() {
    let Some(bench) = Bench::get() else { return };
    let src = bench.airflow_db("up_src", "2.8.1", true);
    let dst = bench.airflow_db("up_dst", "2.10.3", false);
    // The target's scheduler has parsed the DAG files.
    bench.sql(&dst, "INSERT INTO dag (dag_id, is_paused, is_subdag, is_active, has_task_concurrency_limits, has_import_errors, max_active_tasks, max_active_runs, max_consecutive_failed_dag_runs) VALUES ('etl', true, false, true, false, false, 16, 16, 0)");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    backup(dir.path(), &store, &src);
    let out = run(mwaa_dr(dir.path())
        .arg("--store")
        .arg(&store)
        .args(["--yes", "restore", "--db", &dst]));
    assert_eq!(out.code, 0, "{}", out.stderr);

    // Columns 2.10.3 added after 2.8.1 take their defaults on every restored row.
    let mut conn = connect(&dst).await;
    let (runs, executors, tries): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM dag_run), (SELECT count(*) FROM task_instance WHERE executor IS NOT NULL), (SELECT count(*) FROM log WHERE try_number IS NOT NULL)",
    )
    .fetch_one(&mut conn)
    .await
    .expect("counts");
    assert_eq!((runs, executors, tries), (10, 0, 0));

    // Airflow 2.10.3 itself accepts the database and reads the history.
    let Some(venv) = airflow_venv("2.10.3") else {
        return;
    };
    let home = dir.path().join("airflow-home");
    std::fs::create_dir_all(&home).expect("AIRFLOW_HOME");
    airflow(
        &venv,
        &home,
        &dst,
        FERNET,
        &["db", "check-migrations", "-t", "10"],
    );
    let listed = airflow(
        &venv,
        &home,
        &dst,
        FERNET,
        &["dags", "list-runs", "-d", "etl", "-o", "plain"],
    );
    assert_eq!(listed.matches("scheduled__2026-01").count(), 10, "{listed}");
    let value = airflow(&venv, &home, &dst, FERNET, &["variables", "get", "plain"]);
    assert_eq!(value.trim(), "hello");
    let pools = airflow(
        &venv,
        &home,
        &dst,
        FERNET,
        &["pools", "list", "-o", "plain"],
    );
    assert!(pools.contains("etl_pool"), "{pools}");

    // A 2.10.3 backup into a 2.8.1 target is refused and changes nothing.
    let older = bench.airflow_db("up_older", "2.8.1", false);
    let newer_store = dir.path().join("newer");
    backup(dir.path(), &newer_store, &dst);
    let before = whole_db_digest(&older).await;
    let refused = run(mwaa_dr(dir.path())
        .arg("--store")
        .arg(&newer_store)
        .args(["--yes", "restore", "--db", &older]));
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("older than the backup's 2.10.3"),
        "{}",
        refused.stderr
    );
    assert_eq!(whole_db_digest(&older).await, before);
}
