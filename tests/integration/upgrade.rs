//! The upgrade path: a backup of an older Airflow restores into a newer minor version (new
//! columns take their defaults), proven with that newer Airflow's own CLI; never downwards.

use std::path::Path;

use crate::airflow_cli::{airflow, airflow_venv};
use crate::common::{mwaa_dr, run};
use crate::pg::{Bench, connect, digest, whole_db_digest};

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

/// The newest Airflow 2 schema, and the older ones whose backups must restore into it.
const NEWEST_2: &str = "2.11.2";
const OLDER_2: &[&str] = &[
    "2.4.3", "2.5.1", "2.6.3", "2.7.2", "2.8.1", "2.9.2", "2.10.1", "2.10.3", "2.11.0",
];

/// The value of `sql` (one row, one text column) in `url`.
async fn text_of(url: &str, sql: &str) -> Option<String> {
    let mut conn = connect(url).await;
    sqlx::query_scalar(sql)
        .fetch_one(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// A backup of `from` restored into a fresh `to` database: every backed-up table equals the
/// source byte for byte under the backup's columns (tables restored by key compared by key),
/// and the columns `to` added get the value of Airflow's own migration on every row.
async fn upgrade(bench: &Bench, dir: &Path, from: &str, to: &str) -> String {
    let tag = format!("{}_{}", from.replace('.', ""), to.replace('.', ""));
    let src = bench.airflow_db(&format!("upg_src_{tag}"), from, true);
    let dst = bench.airflow_db(&format!("upg_dst_{tag}"), to, false);
    let store = dir.join(format!("store_{tag}"));
    backup(dir, &store, &src);
    let out = run(mwaa_dr(dir)
        .arg("--store")
        .arg(&store)
        .args(["--yes", "restore", "--db", &dst]));
    assert_eq!(out.code, 0, "{from} -> {to}: {}", out.stderr);

    let ids = std::fs::read_dir(store.join("backups"))
        .expect("backups")
        .map(|e| e.expect("entry").path())
        .collect::<Vec<_>>();
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(ids[0].join("manifest.json")).expect("manifest"),
    )
    .expect("manifest JSON");
    for table in manifest["tables"].as_array().expect("tables") {
        let name = table["name"].as_str().expect("name");
        let columns: Vec<String> =
            serde_json::from_value(table["columns"].clone()).expect("columns");
        let filter = table["filter"].as_str();
        let (src_filter, dst_filter, columns) = match name {
            // The target's own templates stay; the backup's are added by id.
            "log_template" => continue,
            // Merged by name: the target's ids, the backup's content.
            "slot_pool" => (
                filter,
                None,
                columns.into_iter().filter(|c| c != "id").collect(),
            ),
            "variable" => (
                Some("t.key <> 'DR_VARIABLE_RESTORE_STRATEGY'"),
                Some("t.key <> 'DR_VARIABLE_RESTORE_STRATEGY'"),
                columns.into_iter().filter(|c| c != "id").collect(),
            ),
            "connection" => (
                filter,
                None,
                columns.into_iter().filter(|c| c != "id").collect(),
            ),
            // Added by key (Airflow 3): the ids are the target's; the rows that refer to
            // them are compared by name in the round trips.
            "team"
            | "asset"
            | "asset_alias"
            | "asset_alias_asset"
            | "asset_event"
            | "asset_alias_asset_event"
            | "asset_state_store" => (
                filter,
                None,
                columns
                    .into_iter()
                    .filter(|c| !["id", "asset_id", "alias_id"].contains(&c.as_str()))
                    .collect(),
            ),
            _ => (filter, None, columns),
        };
        let source = digest(&src, name, &columns, src_filter).await;
        assert!(source.0 > 0 || name != "dag_run", "{from}: no sample runs");
        assert_eq!(
            digest(&dst, name, &columns, dst_filter).await,
            source,
            "{name} differs after restoring {from} into {to}"
        );
    }
    dst
}

/// Backups of every supported Airflow 2 version restore into the newest Airflow 2 schema
/// (and a backup lacking dag_run.clear_number into 2.8.1, whose schema has it NOT NULL
/// without a default): columns the target has and the backup lacks get the value Airflow's
/// own migration gives existing rows (slot_pool.include_deferred false since 2.7.0,
/// dag_run.clear_number 0 since 2.8.0), and the target's column defaults are left as they were.
#[tokio::test]
async fn backups_of_every_2_x_version_restore_into_the_newest_2_x() {
    let Some(bench) = Bench::get() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let pairs = OLDER_2
        .iter()
        .map(|from| (*from, NEWEST_2))
        .chain([("2.6.3", "2.8.1")]);
    for (from, to) in pairs {
        let dst = upgrade(&bench, dir.path(), from, to).await;
        let mut conn = connect(&dst).await;
        let (pools, deferred_false, runs, cleared_zero): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM slot_pool), (SELECT count(*) FROM slot_pool WHERE include_deferred IS FALSE), \
             (SELECT count(*) FROM dag_run), (SELECT count(*) FROM dag_run WHERE clear_number = 0)",
        )
        .fetch_one(&mut conn)
        .await
        .expect("added columns");
        assert_eq!((pools, runs), (2, 10), "{from} -> {to}");
        assert_eq!(
            (deferred_false, cleared_zero),
            (pools, runs),
            "{from} -> {to}: the migration's values"
        );
        // The defaults the restore gave the columns for its load are gone with it.
        let fresh = bench.airflow_db(&format!("upg_fresh_{}", to.replace('.', "")), to, false);
        for (table, column) in [
            ("slot_pool", "include_deferred"),
            ("dag_run", "clear_number"),
        ] {
            let sql = format!(
                "SELECT column_default::text FROM information_schema.columns WHERE table_name = '{table}' AND column_name = '{column}'"
            );
            assert_eq!(
                text_of(&dst, &sql).await,
                text_of(&fresh, &sql).await,
                "{from} -> {to}: the default of {table}.{column}"
            );
        }
    }
}

/// The migration values are data: a user's catalog (DR_TABLE_CATALOG) that says otherwise is
/// what the restore writes.
#[tokio::test]
async fn added_column_values_come_from_the_table_catalog() {
    let Some(bench) = Bench::get() else { return };
    let src = bench.airflow_db("upg_cat_src", "2.6.3", true);
    let dst = bench.airflow_db("upg_cat_dst", NEWEST_2, false);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    backup(dir.path(), &store, &src);
    let builtin = include_str!("../../config/tables.json");
    let edited = builtin.replace(
        r#""include_deferred": { "value": "false""#,
        r#""include_deferred": { "value": "true""#,
    );
    assert_ne!(
        edited, builtin,
        "the built-in catalog lists include_deferred"
    );
    let catalog = dir.path().join("tables.json");
    std::fs::write(&catalog, edited).expect("catalog");
    let out = run(mwaa_dr(dir.path())
        .env("DR_TABLE_CATALOG", &catalog)
        .arg("--store")
        .arg(&store)
        .args(["--yes", "--output", "json", "restore", "--db", &dst]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON result");
    assert_eq!(
        doc["added_columns"],
        serde_json::json!({"slot_pool.include_deferred": "true", "dag_run.clear_number": "0"}),
        "{doc}"
    );
    let mut conn = connect(&dst).await;
    let pools: Vec<(String, bool)> =
        sqlx::query_as("SELECT pool, include_deferred FROM slot_pool ORDER BY pool")
            .fetch_all(&mut conn)
            .await
            .expect("pools");
    assert_eq!(
        pools,
        [
            ("default_pool".to_string(), true),
            ("etl_pool".to_string(), true)
        ]
    );
}

/// Airflow 3 minors in order: each backup restores into the next one up (and 3.0.6 straight
/// into 3.3.1), proven by the newer Airflow's own CLI; a backup never restores downwards.
#[tokio::test]
async fn backups_of_airflow_3_restore_into_newer_3_x_and_not_back() {
    let Some(bench) = Bench::get() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    for (from, to) in [("3.0.6", "3.2.1"), ("3.2.1", "3.3.1"), ("3.0.6", "3.3.1")] {
        let dst = upgrade(&bench, dir.path(), from, to).await;
        if from == "3.0.6" {
            // Airflow's own migration (134de42d3cb0, 3.2.0) adds dag_run.created_at without
            // filling it: runs from before it have none, and Airflow reads
            // `created_at or run_after`. A restored run from before it is the same.
            let mut conn = connect(&dst).await;
            let (runs, without): (i64, i64) = sqlx::query_as(
                "SELECT count(*), count(*) FILTER (WHERE created_at IS NULL) FROM dag_run",
            )
            .fetch_one(&mut conn)
            .await
            .expect("dag_run.created_at");
            assert!(runs > 0, "{from} -> {to}: no runs");
            assert_eq!(without, runs, "{from} -> {to}: dag_run.created_at");
        }
        let Some(venv) = airflow_venv(to) else {
            return;
        };
        let home = dir.path().join(format!("home-{from}-{to}"));
        std::fs::create_dir_all(&home).expect("AIRFLOW_HOME");
        airflow(
            &venv,
            &home,
            &dst,
            FERNET,
            &["db", "check-migrations", "-t", "10"],
        );
        let value = airflow(&venv, &home, &dst, FERNET, &["variables", "get", "plain"]);
        assert_eq!(value.trim(), "hello", "{from} -> {to}");
        let pools = airflow(
            &venv,
            &home,
            &dst,
            FERNET,
            &["pools", "list", "-o", "plain"],
        );
        assert!(pools.contains("etl_pool"), "{from} -> {to}: {pools}");
    }
    for (newer, older) in [("3.3.1", "3.2.1"), ("3.2.1", "3.0.6")] {
        let tag = format!("{}_{}", newer.replace('.', ""), older.replace('.', ""));
        let src = bench.airflow_db(&format!("down_src_{tag}"), newer, true);
        let dst = bench.airflow_db(&format!("down_dst_{tag}"), older, false);
        let store = dir.path().join(format!("down_{tag}"));
        backup(dir.path(), &store, &src);
        let before = whole_db_digest(&dst).await;
        let refused = run(mwaa_dr(dir.path())
            .arg("--store")
            .arg(&store)
            .args(["--yes", "restore", "--db", &dst]));
        assert_eq!(refused.code, 1, "{}", refused.stderr);
        assert!(
            refused
                .stderr
                .contains(&format!("older than the backup's {newer}")),
            "{}",
            refused.stderr
        );
        assert_eq!(whole_db_digest(&dst).await, before);
    }
}
