//! Backup, restore, cleanup, list, verify and prune against the bench PostgreSQL holding real
//! Airflow 2.10.3 and 2.4.3 schemas.

use std::path::Path;

use serde_json::Value;

use crate::common::{mwaa_dr, run};
use crate::pg::{Bench, connect, digest, whole_db_digest};

fn backup(dir: &Path, store: &Path, db: &str) -> Value {
    let out = run(mwaa_dr(dir)
        .arg("--store")
        .arg(store)
        .args(["--output", "json", "backup", "--db", db]));
    assert_eq!(out.code, 0, "backup failed: {}", out.stderr);
    serde_json::from_str(&out.stdout).expect("backup JSON")
}

fn restore(dir: &Path, store: &Path, db: &str, extra: &[&str]) -> crate::common::Run {
    run(mwaa_dr(dir)
        .arg("--store")
        .arg(store)
        .args(["--yes", "--output", "json", "restore", "--db", db])
        .args(extra))
}

fn manifest(store: &Path, id: &str) -> Value {
    let text = std::fs::read_to_string(store.join("backups").join(id).join("manifest.json"))
        .expect("manifest");
    serde_json::from_str(&text).expect("manifest JSON")
}

/// Every table of the manifest holds in `dst` what the backup read from `src`: the same rows
/// byte for byte (the manifest's filter applied to the source); tables restored by key into
/// the target's own rows compare the backed-up content. Tables in `by_key` (restored by a
/// natural key, ids the target's) are left to the caller.
async fn assert_tables_restored(src: &str, dst: &str, m: &Value, by_key: &[&str]) {
    for table in m["tables"].as_array().expect("tables") {
        let name = table["name"].as_str().expect("name");
        if by_key.contains(&name) {
            continue;
        }
        let columns: Vec<String> =
            serde_json::from_value(table["columns"].clone()).expect("columns");
        let filter = table["filter"].as_str();
        let (src_rows, src_digest) = digest(src, name, &columns, filter).await;
        assert_eq!(
            src_rows as u64,
            table["rows"].as_u64().expect("rows"),
            "{name}: manifest row count"
        );
        match name {
            // Restored by key into the target's own rows: compare the backed-up content.
            "variable" => {
                let (n, _) = digest(
                    dst,
                    name,
                    &["key".into()],
                    Some("t.key <> 'DR_VARIABLE_RESTORE_STRATEGY'"),
                )
                .await;
                assert_eq!(n, src_rows - 1, "variables except the protected one");
            }
            "connection" | "slot_pool" | "log_template" => {
                let key = if name == "connection" {
                    "conn_id"
                } else if name == "slot_pool" {
                    "pool"
                } else {
                    "id"
                };
                let cols: Vec<String> = columns
                    .iter()
                    .filter(|c| *c != "id" || key == "id")
                    .cloned()
                    .collect();
                assert_eq!(
                    digest(dst, name, &cols, None).await,
                    digest(src, name, &cols, filter).await,
                    "{name}"
                );
                let _ = key;
            }
            _ => {
                let (dst_rows, dst_digest) = digest(dst, name, &columns, None).await;
                assert_eq!(
                    (dst_rows, &dst_digest),
                    (src_rows, &src_digest),
                    "{name} differs after restore"
                );
            }
        }
    }
}

/// Every restored table equals the source row for row, byte for byte, except what the
/// manifest says was filtered; sequences continue; references without FKs hold.
async fn round_trip(version: &str) {
    let Some(bench) = Bench::get() else { return };
    let tag = version.replace('.', "");
    let src = bench.airflow_db(&format!("rt_src_{tag}"), version, true);
    let dst = bench.airflow_db(&format!("rt_dst_{tag}"), version, false);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let doc = backup(dir.path(), &store, &src);
    let id = doc["backup_id"].as_str().expect("id");
    // 2.11.0 and 2.11.2 have 2.10.3's schema (same alembic head): detected as 2.10.3 without MWAA_VERSION.
    let detected = if version == "2.11.0" || version == "2.11.2" {
        "2.10.3"
    } else {
        version
    };
    assert_eq!(doc["airflow_version"], detected);
    let out = restore(dir.path(), &store, &dst, &[]);
    assert_eq!(out.code, 0, "restore failed: {}", out.stderr);
    let m = manifest(&store, id);
    assert_tables_restored(&src, &dst, &m, &[]).await;
    // The in-flight filter: the running TI, the up_for_retry TI and the export DAG are out.
    let mut conn = connect(&dst).await;
    let inflight: i64 = sqlx::query_scalar("SELECT count(*) FROM task_instance WHERE state IN ('running', 'up_for_retry') OR dag_id = 'backup_metadata'")
        .fetch_one(&mut conn)
        .await
        .expect("count");
    assert_eq!(inflight, 0);
    // Sequences continue: Airflow inserts without ids.
    sqlx::query("INSERT INTO variable (key, val) VALUES ('after_restore', 'x')")
        .execute(&mut conn)
        .await
        .expect("insert variable");
    sqlx::query("INSERT INTO log (dttm, event) VALUES (now(), 'after_restore')")
        .execute(&mut conn)
        .await
        .expect("insert log");
    sqlx::query("INSERT INTO job (state, job_type) VALUES ('running', 'SchedulerJob')")
        .execute(&mut conn)
        .await
        .expect("insert job");
    // References without foreign keys still join.
    let orphans: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM xcom x WHERE NOT EXISTS (SELECT 1 FROM dag_run d WHERE d.id = x.dag_run_id AND d.run_id = x.run_id)",
    )
    .fetch_one(&mut conn)
    .await
    .expect("xcom join");
    assert_eq!(orphans, 0, "xcom rows lost their dag_run");
    let lost_jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM task_instance t WHERE job_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM job j WHERE j.id = t.job_id)")
        .fetch_one(&mut conn)
        .await
        .expect("job join");
    assert_eq!(lost_jobs, 0, "task_instance.job_id points nowhere");
    // Active DAGs unpaused, the paused one left paused.
    let paused: Vec<(String, bool)> =
        sqlx::query_as("SELECT dag_id, is_paused FROM dag ORDER BY dag_id")
            .fetch_all(&mut conn)
            .await
            .expect("dags");
    assert!(
        paused.is_empty() || paused.iter().all(|(d, p)| *p == (d == "reports")),
        "{paused:?}"
    );
}

#[tokio::test]
async fn round_trip_airflow_2_10_3() {
    round_trip("2.10.3").await;
}

#[tokio::test]
async fn round_trip_airflow_2_4_3() {
    round_trip("2.4.3").await;
}

macro_rules! round_trips {
    ($($name:ident => $version:literal),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                round_trip($version).await;
            }
        )*
    };
}

round_trips! {
    round_trip_airflow_2_5_1 => "2.5.1",
    round_trip_airflow_2_6_3 => "2.6.3",
    round_trip_airflow_2_7_2 => "2.7.2",
    round_trip_airflow_2_8_1 => "2.8.1",
    round_trip_airflow_2_9_2 => "2.9.2",
    round_trip_airflow_2_10_1 => "2.10.1",
    round_trip_airflow_2_11_0 => "2.11.0",
    round_trip_airflow_2_11_2 => "2.11.2",
}

/// What a standby's own DAG processor wrote from the same DAG files before the restore: the
/// bundle, the DAGs (paused, as a standby's are), their first versions, and the assets, aliases
/// and an asset watcher's trigger with ids of its own (clean_orders is 1 here, 2 in the source).
const STANDBY_DEFINITIONS_3: &str = "\
INSERT INTO dag_bundle (name, active, last_refreshed) VALUES ('dags-folder', true, now());
DO $$ BEGIN
  IF EXISTS (SELECT 1 FROM information_schema.columns WHERE table_name = 'dag' AND column_name = 'timetable_type') THEN
    ALTER TABLE dag ALTER COLUMN timetable_type SET DEFAULT 'airflow.timetables.simple.NullTimetable';
  END IF;
  IF EXISTS (SELECT 1 FROM information_schema.columns WHERE table_name = 'dag' AND column_name = 'partition_mapper_info') THEN
    ALTER TABLE dag ALTER COLUMN partition_mapper_info SET DEFAULT '{}';
  END IF;
END $$;
INSERT INTO dag (dag_id, is_paused, is_stale, fileloc, relative_fileloc, bundle_name, max_active_tasks, max_active_runs, max_consecutive_failed_dag_runs, has_task_concurrency_limits)
SELECT d, true, false, '/usr/local/airflow/dags/' || d || '.py', d || '.py', 'dags-folder', 16, 16, 0, false FROM unnest(ARRAY['etl', 'reports', 'consumer']) d;
INSERT INTO dag_version (id, version_number, dag_id, bundle_name, created_at, last_updated) SELECT gen_random_uuid(), 1, dag_id, 'dags-folder', now(), now() FROM dag;
INSERT INTO asset (id, name, uri, \"group\", extra, created_at, updated_at) VALUES
  (1, 'clean_orders', 's3://lake/clean/orders', 'asset', '{\"owner\": \"standby\"}', now(), now()),
  (2, 'raw_orders', 's3://lake/raw/orders', 'asset', '{}', now(), now()),
  (3, 'new_orders', 's3://lake/new/orders', 'asset', '{}', now(), now());
SELECT setval('asset_id_seq', 3);
INSERT INTO asset_active (name, uri) SELECT name, uri FROM asset;
INSERT INTO asset_alias (id, name, \"group\") VALUES (1, 'other_alias', 'asset'), (2, 'orders_alias', 'asset');
SELECT setval('asset_alias_id_seq', 2);
INSERT INTO dag_schedule_asset_reference (asset_id, dag_id, created_at, updated_at) VALUES (1, 'consumer', now(), now());
INSERT INTO trigger (id, classpath, kwargs, created_date) VALUES (1, 'airflow.providers.common.messaging.triggers.msg_queue.MessageQueueTrigger', 'gAAAAAB0YXJnZXQtd2F0Y2hlcg==', now());
SELECT setval('trigger_id_seq', 1);
DO $$ BEGIN
  IF to_regclass('asset_trigger') IS NOT NULL THEN INSERT INTO asset_trigger (asset_id, trigger_id) VALUES (2, 1);
  ELSE INSERT INTO asset_watcher (name, asset_id, trigger_id) VALUES ('standby_watcher', 2, 1); END IF;
END $$;";

/// The tables of a standby's own that a restore of Airflow 3 never touches.
const STANDBY_OWN_3: &[&str] = &[
    "dag_bundle",
    "dag_version",
    "asset_active",
    "dag_schedule_asset_reference",
    "trigger",
    "asset_trigger",
];

/// The rows of `sql` as text, sorted.
async fn rows(url: &str, sql: &str) -> Vec<String> {
    let mut conn = connect(url).await;
    sqlx::query_scalar(&format!("SELECT r::text FROM ({sql}) r ORDER BY 1"))
        .fetch_all(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

async fn count(conn: &mut sqlx::PgConnection, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Asset rows name their asset and alias by name: what must hold whatever ids the target gave.
const ASSET_EVENTS_BY_NAME: &str = "SELECT t.id, a.name, a.uri, t.extra::text, t.source_task_id, t.source_dag_id, t.source_run_id, t.source_map_index, t.timestamp FROM asset_event t JOIN asset a ON a.id = t.asset_id";
const ALIAS_EVENTS_BY_NAME: &str = "SELECT al.name, t.event_id FROM asset_alias_asset_event t JOIN asset_alias al ON al.id = t.alias_id";
const ALIAS_ASSETS_BY_NAME: &str = "SELECT al.name, a.name, a.uri FROM asset_alias_asset t JOIN asset_alias al ON al.id = t.alias_id JOIN asset a ON a.id = t.asset_id";

/// Airflow 3.0.6: the same guarantees as on 2.x on a different schema (uuid task instance ids,
/// ti_id references, jsonb, backfills, assets), into a standby whose DAG processor already
/// wrote its own DAG definitions and assets.
#[tokio::test]
async fn round_trip_airflow_3_0_6() {
    round_trip_3("3.0.6").await;
}

/// 3.2.1 adds teams, partition keys and human-in-the-loop answers, 3.3.1 retry reasons, DAG
/// result XComs and state stores (the last section of the sample metadata).
#[tokio::test]
async fn round_trip_airflow_3_2_1() {
    round_trip_3("3.2.1").await;
}

#[tokio::test]
async fn round_trip_airflow_3_3_1() {
    round_trip_3("3.3.1").await;
}

async fn round_trip_3(version: &str) {
    let Some(bench) = Bench::get() else { return };
    let tag = version.replace('.', "");
    let src = bench.airflow_db(&format!("rt_src_{tag}"), version, true);
    let dst = bench.airflow_db(&format!("rt_dst_{tag}"), version, false);
    bench.sql(&dst, STANDBY_DEFINITIONS_3);
    // 3.2 turned asset_trigger into asset_watcher.
    let own: Vec<&str> = STANDBY_OWN_3
        .iter()
        .map(|t| match *t {
            "asset_trigger" if version != "3.0.6" => "asset_watcher",
            t => t,
        })
        .collect();
    let mut own_before = Vec::new();
    for table in &own {
        own_before.push(rows(&dst, &format!("SELECT * FROM {table}")).await);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let doc = backup(dir.path(), &store, &src);
    assert_eq!(doc["airflow_version"], version);
    let id = doc["backup_id"].as_str().expect("id");
    let m = manifest(&store, id);
    let tables: Vec<&str> = m["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    for name in [
        "backfill",
        "backfill_dag_run",
        "task_instance_note",
        "task_reschedule",
        "task_instance_history",
        "asset",
        "asset_event",
        "dagrun_asset_event",
    ] {
        assert!(tables.contains(&name), "{name} not backed up: {tables:?}");
    }
    for name in [
        "dag",
        "dag_version",
        "serialized_dag",
        "dag_code",
        "trigger",
        "asset_active",
    ] {
        assert!(!tables.contains(&name), "{name} backed up: {tables:?}");
    }
    let columns_of = |table: &str| -> Vec<String> {
        let entry = m["tables"]
            .as_array()
            .expect("tables")
            .iter()
            .find(|t| t["name"] == table)
            .expect("table");
        serde_json::from_value(entry["columns"].clone()).expect("columns")
    };
    assert!(!columns_of("task_instance").contains(&"dag_version_id".to_string()));
    assert!(!columns_of("task_instance").contains(&"trigger_id".to_string()));
    assert!(columns_of("task_instance").contains(&"id".to_string()));
    assert!(!columns_of("dag_run").contains(&"created_dag_version_id".to_string()));
    assert!(columns_of("task_instance_note").contains(&"user_id".to_string()));

    let out = restore(dir.path(), &store, &dst, &[]);
    assert_eq!(out.code, 0, "restore failed: {}", out.stderr);
    let report: Value = serde_json::from_str(&out.stdout).expect("restore JSON");
    // Source ids: raw_orders 1, clean_orders 2, old_orders 3, orders_alias 1. The standby has
    // the first two as 2 and 1; old_orders is new to it (4); orders_alias is its 2.
    assert_eq!(
        report["remapped_ids"],
        serde_json::json!({"asset": 3, "asset_alias": 1})
    );
    assert_eq!(report["unpaused"], serde_json::json!(["consumer", "etl"]));
    // The source's backup_metadata DAG is unpaused, but a DR DAG is never one to unpause.
    assert_eq!(report["missing_dags"], serde_json::json!([]));

    let by_key = [
        "asset",
        "asset_alias",
        "asset_alias_asset",
        "asset_event",
        "asset_alias_asset_event",
        "asset_state_store",
    ];
    assert_tables_restored(&src, &dst, &m, &by_key).await;
    if version != "3.0.6" {
        for name in ["team", "hitl_detail", "hitl_detail_history"] {
            assert!(tables.contains(&name), "{name} not backed up: {tables:?}");
        }
        for name in ["asset_watcher", "dag_favorite", "revoked_token", "callback"] {
            assert!(!tables.contains(&name), "{name} backed up: {tables:?}");
        }
        assert_eq!(
            rows(&dst, "SELECT 'v', team_name FROM variable WHERE team_name IS NOT NULL UNION ALL SELECT 'c', team_name FROM connection WHERE team_name IS NOT NULL UNION ALL SELECT pool, team_name FROM slot_pool WHERE team_name IS NOT NULL").await,
            rows(&src, "SELECT 'v', team_name FROM variable WHERE team_name IS NOT NULL UNION ALL SELECT 'c', team_name FROM connection WHERE team_name IS NOT NULL UNION ALL SELECT pool, team_name FROM slot_pool WHERE team_name IS NOT NULL").await,
            "the team of a variable, a connection and a pool"
        );
        assert_eq!(
            rows(&dst, "SELECT ti.task_id, ti.state FROM hitl_detail h JOIN task_instance ti ON ti.id = h.ti_id").await,
            vec!["(report,failed)".to_string()],
            "the answer for the running task instance stays behind"
        );
    }
    // The state stores are 3.3's.
    if version == "3.3.1" {
        for name in ["task_state_store", "asset_state_store"] {
            assert!(tables.contains(&name), "{name} not backed up: {tables:?}");
        }
        assert_eq!(
            rows(&dst, "SELECT DISTINCT task_id FROM task_state_store").await,
            vec!["(load)".to_string()],
            "no state of the export DAG"
        );
        assert_eq!(
            rows(&dst, "SELECT a.name, s.key, s.value FROM asset_state_store s JOIN asset a ON a.id = s.asset_id").await,
            rows(&src, "SELECT a.name, s.key, s.value FROM asset_state_store s JOIN asset a ON a.id = s.asset_id").await,
            "asset state follows its asset by name"
        );
    }
    // Assets by their natural key: the standby's rows keep its values, the one it lacked
    // arrives whole; events, alias resolutions and alias events name the same assets.
    let asset_cols = "SELECT name, uri, \"group\", extra::text, created_at, updated_at FROM asset";
    let src_assets = rows(&src, asset_cols).await;
    let dst_assets = rows(&dst, asset_cols).await;
    assert_eq!(dst_assets.len(), 4, "{dst_assets:?}");
    assert!(
        src_assets
            .iter()
            .filter(|r| r.contains("old_orders"))
            .all(|r| dst_assets.contains(r))
    );
    assert!(
        dst_assets.iter().any(|r| r.contains("standby")),
        "the standby's own clean_orders is kept: {dst_assets:?}"
    );
    let old_orders: i32 = count_i32(&dst, "SELECT id FROM asset WHERE name = 'old_orders'").await;
    assert_eq!(old_orders, 4, "an added asset gets the standby's next id");
    let exported = "t.source_dag_id IS DISTINCT FROM 'backup_metadata'";
    assert_eq!(
        rows(&dst, ASSET_EVENTS_BY_NAME).await,
        rows(&src, &format!("{ASSET_EVENTS_BY_NAME} WHERE {exported}")).await,
        "asset_event"
    );
    assert_eq!(
        rows(&dst, ALIAS_EVENTS_BY_NAME).await,
        rows(
            &src,
            &format!(
                "{ALIAS_EVENTS_BY_NAME} WHERE t.event_id IN (SELECT id FROM asset_event t WHERE {exported})"
            )
        )
        .await,
        "asset_alias_asset_event"
    );
    assert_eq!(
        rows(&dst, ALIAS_ASSETS_BY_NAME).await,
        rows(&src, ALIAS_ASSETS_BY_NAME).await,
        "asset_alias_asset"
    );

    let mut conn = connect(&dst).await;
    // The in-flight filter, on every table that hangs off a task instance.
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) FROM task_instance WHERE state IN ('running', 'up_for_retry', 'up_for_reschedule', 'deferred') OR dag_id = 'backup_metadata'"
        )
        .await,
        0
    );
    assert_eq!(
        rows(&dst, "SELECT ti.task_id, ti.state, n.user_id, n.content FROM task_instance_note n JOIN task_instance ti ON ti.id = n.ti_id").await,
        vec!["(report,failed,admin,\"failed: upstream file was late\n\"\"fixed\"\" by hand\")".to_string()],
        "the note of the running task instance stays behind"
    );
    assert_eq!(
        rows(&dst, "SELECT ti.run_id, count(*) FROM task_reschedule r JOIN task_instance ti ON ti.id = r.ti_id GROUP BY 1").await,
        vec!["(scheduled__2026-01-10T00:00:00+00:00,2)".to_string()],
        "only the reschedules of the finished sensor"
    );
    assert_eq!(
        rows(&dst, "SELECT run_id FROM task_instance_history").await,
        vec!["(scheduled__2026-01-04T00:00:00+00:00)".to_string()],
        "only the history of the settled task instance"
    );
    assert_eq!(
        count(&mut conn, "SELECT count(*) FROM backfill WHERE dag_id = 'backup_metadata'").await
            + count(&mut conn, "SELECT count(*) FROM dag_run_note n JOIN dag_run d ON d.id = n.dag_run_id WHERE d.dag_id = 'backup_metadata'").await
            + count(&mut conn, "SELECT count(*) FROM asset_event WHERE source_dag_id = 'backup_metadata'").await,
        0,
        "the export DAG's rows stay behind"
    );
    // References: DAG versions are the standby's own, so the restored ones are NULL; the
    // rest join.
    assert_eq!(
        count(&mut conn, "SELECT (SELECT count(*) FROM dag_run WHERE created_dag_version_id IS NOT NULL) + (SELECT count(*) FROM task_instance WHERE dag_version_id IS NOT NULL OR trigger_id IS NOT NULL) + (SELECT count(*) FROM task_instance_history WHERE dag_version_id IS NOT NULL)").await,
        0
    );
    for (what, sql) in [
        (
            "xcom -> dag_run",
            "SELECT count(*) FROM xcom x WHERE NOT EXISTS (SELECT 1 FROM dag_run d WHERE d.id = x.dag_run_id AND d.run_id = x.run_id AND d.dag_id = x.dag_id)",
        ),
        (
            "job references",
            "SELECT (SELECT count(*) FROM task_instance t WHERE queued_by_job_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM job j WHERE j.id = t.queued_by_job_id)) + (SELECT count(*) FROM dag_run d WHERE (creating_job_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM job j WHERE j.id = d.creating_job_id)) OR (scheduled_by_job_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM job j WHERE j.id = d.scheduled_by_job_id)))",
        ),
        (
            "backfill_dag_run -> dag_run",
            "SELECT count(*) FROM backfill_dag_run b WHERE b.dag_run_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM dag_run d WHERE d.id = b.dag_run_id AND d.backfill_id = b.backfill_id)",
        ),
        (
            "dag_run -> log_template",
            "SELECT count(*) FROM dag_run d WHERE NOT EXISTS (SELECT 1 FROM log_template l WHERE l.id = d.log_template_id)",
        ),
    ] {
        assert_eq!(count(&mut conn, sql).await, 0, "{what}");
    }
    assert_eq!(
        rows(&dst, "SELECT a.name FROM dagrun_asset_event x JOIN asset_event e ON e.id = x.event_id JOIN asset a ON a.id = e.asset_id JOIN dag_run d ON d.id = x.dag_run_id WHERE d.dag_id = 'consumer'").await,
        vec!["(clean_orders)", "(clean_orders)", "(raw_orders)"],
        "the asset-triggered run keeps the events that triggered it"
    );
    // The standby's own definitions, assets' activity and asset watcher are untouched; its
    // paused DAGs active in the source are unpaused.
    for (table, before) in own.iter().zip(&own_before) {
        assert_eq!(
            &rows(&dst, &format!("SELECT * FROM {table}")).await,
            before,
            "{table}"
        );
    }
    assert_eq!(
        rows(&dst, "SELECT dag_id, is_paused FROM dag").await,
        vec!["(consumer,f)", "(etl,f)", "(reports,t)"]
    );
    // Sequences continue: Airflow inserts without ids.
    for sql in [
        "INSERT INTO variable (key, val, is_encrypted) VALUES ('after_restore', 'x', false)",
        "INSERT INTO log (dttm, event) VALUES (now(), 'after_restore')",
        "INSERT INTO job (state, job_type) VALUES ('running', 'SchedulerJob')",
        "INSERT INTO dag_run (dag_id, run_id, run_type, run_after) VALUES ('etl', 'manual__after', 'manual', now())",
        "INSERT INTO backfill (dag_id, from_date, to_date, dag_run_conf, reprocess_behavior, max_active_runs, created_at, updated_at) VALUES ('etl', now(), now(), '{}', 'none', 1, now(), now())",
        "INSERT INTO backfill_dag_run (backfill_id, logical_date, sort_ordinal) VALUES (1, now(), 9)",
        "INSERT INTO asset_event (asset_id, extra, timestamp) VALUES (1, '{}', now())",
        "INSERT INTO asset (name, uri, \"group\", extra, created_at, updated_at) VALUES ('after', 'x://after', 'asset', '{}', now(), now())",
        "INSERT INTO task_reschedule (ti_id, start_date, end_date, duration, reschedule_date) SELECT id, now(), now(), 1, now() FROM task_instance LIMIT 1",
    ] {
        sqlx::query(sql)
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

async fn count_i32(url: &str, sql: &str) -> i32 {
    let mut conn = connect(url).await;
    sqlx::query_scalar(sql)
        .fetch_one(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Airflow 3 into a live standby: its running scheduler keeps its id, the restored job that
/// collides with it is renumbered and every reference follows (scheduled_by_job_id too);
/// `--clean` empties what the last restore wrote but not the standby's definitions, assets or
/// asset watcher; a second restore over the first gives the same tables; cleanup sees 3.x.
#[tokio::test]
async fn restore_into_a_live_airflow_3_standby() {
    let Some(bench) = Bench::get() else { return };
    let src = bench.airflow_db("live3_src", "3.0.6", true);
    let dst = bench.airflow_db("live3_dst", "3.0.6", false);
    bench.sql(&dst, STANDBY_DEFINITIONS_3);
    bench.sql(&dst, "INSERT INTO job (id, state, job_type, hostname) VALUES (3, 'running', 'SchedulerJob', 'standby'); SELECT setval('job_id_seq', 500); INSERT INTO asset_event (asset_id, extra, timestamp) VALUES (1, '{\"standby\": true}', now()); INSERT INTO log (dttm, event) VALUES (now(), 'standby')");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    backup(dir.path(), &store, &src);
    let refused = restore(dir.path(), &store, &dst, &[]);
    assert_eq!(
        refused.code, 1,
        "a busy table needs --clean: {}",
        refused.stderr
    );
    assert!(refused.stderr.contains("--clean"), "{}", refused.stderr);
    let dry =
        run(mwaa_dr(dir.path()).args(["--dry-run", "--output", "json", "cleanup", "--db", &dst]));
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    let doc: Value = serde_json::from_str(&dry.stdout).expect("JSON");
    let cleaned: Vec<&str> = doc["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .filter_map(|t| t["table"].as_str())
        .collect();
    assert!(cleaned.contains(&"asset_event"), "{cleaned:?}");
    assert!(
        !cleaned.contains(&"trigger") && !cleaned.contains(&"asset"),
        "{cleaned:?}"
    );
    for _ in 0..2 {
        let out = restore(dir.path(), &store, &dst, &["--clean"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    let mut conn = connect(&dst).await;
    let standby: String = sqlx::query_scalar("SELECT hostname FROM job WHERE id = 3")
        .fetch_one(&mut conn)
        .await
        .expect("job 3");
    assert_eq!(standby, "standby", "the live scheduler row keeps its id");
    assert_eq!(
        rows(&dst, "SELECT DISTINCT j.hostname FROM dag_run d JOIN job j ON j.id = d.creating_job_id OR j.id = d.scheduled_by_job_id WHERE d.dag_id = 'etl' AND d.backfill_id IS NULL").await,
        vec!["(worker-3)"],
        "dag runs follow their renumbered scheduler"
    );
    assert_eq!(
        rows(&dst, "SELECT DISTINCT j.hostname FROM task_instance t JOIN job j ON j.id = t.queued_by_job_id WHERE t.run_id LIKE 'scheduled%'").await,
        vec!["(worker-3)"],
        "task instances follow their renumbered scheduler"
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) FROM asset_event WHERE extra::text LIKE '%standby%'"
        )
        .await
            + count(
                &mut conn,
                "SELECT count(*) FROM log WHERE event = 'standby'"
            )
            .await,
        0,
        "--clean emptied the restorable tables"
    );
    assert_eq!(
        rows(&dst, "SELECT a.name, t.classpath FROM asset_trigger x JOIN asset a ON a.id = x.asset_id JOIN trigger t ON t.id = x.trigger_id").await,
        vec!["(raw_orders,airflow.providers.common.messaging.triggers.msg_queue.MessageQueueTrigger)"],
        "the standby's asset watcher stays"
    );
    assert_eq!(
        rows(&dst, ASSET_EVENTS_BY_NAME).await,
        rows(
            &src,
            &format!(
                "{ASSET_EVENTS_BY_NAME} WHERE t.source_dag_id IS DISTINCT FROM 'backup_metadata'"
            )
        )
        .await,
        "asset events restored once, on the right assets"
    );
    assert_eq!(count(&mut conn, "SELECT count(*) FROM asset").await, 4);
}

/// A backup restores into the same major version only: Airflow 2 rows do not fit the Airflow 3
/// schema (pickled conf, integer task instance keys), and Airflow's own migration converts them.
#[tokio::test]
async fn restore_refuses_another_major_version() {
    let Some(bench) = Bench::get() else { return };
    let src = bench.airflow_db("major_src", "2.10.3", true);
    let dst = bench.airflow_db("major_dst", "3.0.6", false);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    backup(dir.path(), &store, &src);
    let before = whole_db_digest(&dst).await;
    let out = restore(dir.path(), &store, &dst, &["--clean"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("same major version"), "{}", out.stderr);
    assert_eq!(whole_db_digest(&dst).await, before);
}

/// The target's own running scheduler job keeps its id; restored jobs that collide with it are
/// renumbered and every reference follows; xcom still joins after the target's sequences moved.
#[tokio::test]
async fn restore_into_a_live_standby_keeps_its_scheduler_and_references() {
    let Some(bench) = Bench::get() else { return };
    let src = bench.airflow_db("live_src", "2.10.3", true);
    let dst = bench.airflow_db("live_dst", "2.10.3", false);
    bench.sql(&dst, "INSERT INTO job (id, state, job_type, hostname) VALUES (3, 'running', 'SchedulerJob', 'standby'); SELECT setval('job_id_seq', 500); SELECT setval('dag_run_id_seq', 900)");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    backup(dir.path(), &store, &src);
    let out = restore(dir.path(), &store, &dst, &["--clean"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut conn = connect(&dst).await;
    let standby: String = sqlx::query_scalar("SELECT hostname FROM job WHERE id = 3")
        .fetch_one(&mut conn)
        .await
        .expect("job 3");
    assert_eq!(standby, "standby", "the live scheduler row keeps its id");
    // Source job 3 (a SchedulerJob that created every dag_run) was renumbered; dag_runs follow it.
    let creators: Vec<(Option<String>,)> = sqlx::query_as("SELECT DISTINCT j.hostname FROM dag_run d JOIN job j ON j.id = d.creating_job_id WHERE d.dag_id = 'etl'")
        .fetch_all(&mut conn)
        .await
        .expect("creators");
    assert_eq!(creators, vec![(Some("worker-3".to_string()),)]);
    let next: i64 = sqlx::query_scalar("SELECT nextval('dag_run_id_seq')")
        .fetch_one(&mut conn)
        .await
        .expect("seq");
    assert!(next > 900, "a sequence never moves backwards");
}

/// Each restore strategy against a target that already has conflicting keys.
#[tokio::test]
async fn variable_and_connection_strategies() {
    let Some(bench) = Bench::get() else { return };
    let src = bench.airflow_db("strat_src", "2.10.3", true);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    backup(dir.path(), &store, &src);
    for (strategy, shared_val, shared_host, plain) in [
        ("DO_NOTHING", "from-target", "target.example", false),
        ("APPEND", "from-target", "target.example", true),
        ("REPLACE", "from-source", "source.example", true),
    ] {
        let dst = bench.airflow_db(
            &format!("strat_{}", strategy.to_lowercase()),
            "2.10.3",
            false,
        );
        bench.sql(&dst, "INSERT INTO variable (key, val, is_encrypted) VALUES ('shared', 'from-target', false), ('DR_VARIABLE_RESTORE_STRATEGY', 'KEEP-ME', false); INSERT INTO connection (conn_id, conn_type, host, is_encrypted, is_extra_encrypted) VALUES ('shared_conn', 'http', 'target.example', false, false)");
        let out = run(mwaa_dr(dir.path())
            .env("DR_VARIABLE_RESTORE_STRATEGY", strategy)
            .env("DR_CONNECTION_RESTORE_STRATEGY", strategy)
            .arg("--store")
            .arg(&store)
            .args(["--yes", "restore", "--db", &dst]));
        assert_eq!(out.code, 0, "{strategy}: {}", out.stderr);
        let mut conn = connect(&dst).await;
        let shared: String = sqlx::query_scalar("SELECT val FROM variable WHERE key = 'shared'")
            .fetch_one(&mut conn)
            .await
            .expect("shared");
        assert_eq!(shared, shared_val, "{strategy}: variable");
        let host: String =
            sqlx::query_scalar("SELECT host FROM connection WHERE conn_id = 'shared_conn'")
                .fetch_one(&mut conn)
                .await
                .expect("conn");
        assert_eq!(host, shared_host, "{strategy}: connection");
        let has_plain: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM variable WHERE key = 'plain')")
                .fetch_one(&mut conn)
                .await
                .expect("plain");
        assert_eq!(has_plain, plain, "{strategy}: new keys");
        let steer: String = sqlx::query_scalar(
            "SELECT val FROM variable WHERE key = 'DR_VARIABLE_RESTORE_STRATEGY'",
        )
        .fetch_one(&mut conn)
        .await
        .expect("steer");
        assert_eq!(
            steer, "KEEP-ME",
            "{strategy}: the strategy variable is never overwritten"
        );
    }
}

/// A load that fails in the middle (the last table violates a constraint of the target)
/// leaves the target exactly as it was.
#[tokio::test]
async fn failed_restore_changes_nothing() {
    let Some(bench) = Bench::get() else { return };
    let src = bench.airflow_db("fail_src", "2.10.3", true);
    let dst = bench.airflow_db("fail_dst", "2.10.3", false);
    bench.sql(&dst, "INSERT INTO job (id, state, job_type) VALUES (1, 'running', 'SchedulerJob'); INSERT INTO variable (key, val) VALUES ('shared', 'target'); ALTER TABLE log ADD CONSTRAINT no_cli CHECK (event <> 'cli_task_run')");
    let before = whole_db_digest(&dst).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    backup(dir.path(), &store, &src);
    let out = restore(dir.path(), &store, &dst, &["--clean"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("log"),
        "the failing table is named: {}",
        out.stderr
    );
    assert_eq!(whole_db_digest(&dst).await, before, "the target changed");
}

/// One flipped byte: verify and restore both fail naming the object; the database is untouched.
#[tokio::test]
async fn corrupted_object_is_refused_before_the_database_is_touched() {
    let Some(bench) = Bench::get() else { return };
    let src = bench.airflow_db("corrupt_src", "2.10.3", true);
    let dst = bench.airflow_db("corrupt_dst", "2.10.3", false);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let id = backup(dir.path(), &store, &src)["backup_id"]
        .as_str()
        .expect("id")
        .to_string();
    let object = store.join("backups").join(&id).join("xcom.csv.zst");
    let mut bytes = std::fs::read(&object).expect("object");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&object, bytes).expect("write");
    let before = whole_db_digest(&dst).await;
    let verify = run(mwaa_dr(dir.path()).arg("--store").arg(&store).arg("verify"));
    assert_eq!(verify.code, 1);
    assert!(verify.stderr.contains("xcom.csv.zst"), "{}", verify.stderr);
    let out = restore(dir.path(), &store, &dst, &["--clean"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("xcom.csv.zst"), "{}", out.stderr);
    assert_eq!(whole_db_digest(&dst).await, before);
}

/// A backup that dies mid-way is invisible; the previous latest stays the latest.
#[tokio::test]
async fn interrupted_backup_leaves_no_visible_backup() {
    let Some(bench) = Bench::get() else { return };
    let src = bench.airflow_db("partial_src", "2.10.3", true);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let first = backup(dir.path(), &store, &src)["backup_id"]
        .as_str()
        .expect("id")
        .to_string();
    // Objects without a manifest, as a killed backup leaves them.
    let partial = store.join("backups").join("29991231T235959Z-dead");
    std::fs::create_dir_all(&partial).expect("dir");
    std::fs::write(partial.join("job.csv.zst"), b"partial").expect("object");
    let list = run(mwaa_dr(dir.path())
        .arg("--store")
        .arg(&store)
        .args(["--output", "json", "list"]));
    let ids: Vec<String> = serde_json::from_str::<Vec<Value>>(&list.stdout)
        .expect("list JSON")
        .iter()
        .map(|b| b["backup_id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ids, vec![first.clone()]);
    let verify = run(mwaa_dr(dir.path())
        .arg("--store")
        .arg(&store)
        .args(["--output", "json", "verify"]));
    assert_eq!(verify.code, 0, "{}", verify.stderr);
    assert!(verify.stdout.contains(&first));
}

#[tokio::test]
async fn cleanup_dry_run_counts_and_cleanup_keeps_what_the_standby_needs() {
    let Some(bench) = Bench::get() else { return };
    let db = bench.airflow_db("cleanup", "2.10.3", true);
    let dir = tempfile::tempdir().expect("tempdir");
    let before = whole_db_digest(&db).await;
    let dry =
        run(mwaa_dr(dir.path()).args(["--dry-run", "--output", "json", "cleanup", "--db", &db]));
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    let doc: Value = serde_json::from_str(&dry.stdout).expect("JSON");
    let ti = doc["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .find(|t| t["table"] == "task_instance")
        .expect("ti");
    // Every task instance of the sample but the backup DAG's running one: a DR DAG's
    // in-flight rows stay.
    assert_eq!(ti["rows"], 31 - 1);
    assert_eq!(
        whole_db_digest(&db).await,
        before,
        "--dry-run changed the database"
    );
    let out = run(mwaa_dr(dir.path()).args(["--yes", "cleanup", "--db", &db]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut conn = connect(&db).await;
    let counts: (i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM task_instance), (SELECT count(*) FROM dag_run), (SELECT count(*) FROM job), (SELECT count(*) FROM slot_pool), (SELECT count(*) FROM variable)",
    )
    .fetch_one(&mut conn)
    .await
    .expect("counts");
    assert_eq!(
        counts,
        (1, 1, 2, 1, 5),
        "running jobs, default_pool, variables and the backup DAG's running run stay"
    );
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_exit_codes() {
    let Some(bench) = Bench::get() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let db = bench.airflow_db("badinput", "2.10.3", true);
    // Empty store.
    let out = restore(dir.path(), &store, &db, &[]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    // Unknown backup id.
    backup(dir.path(), &store, &db);
    let out = restore(
        dir.path(),
        &store,
        &db,
        &["--backup-id", "20000101T000000Z-0000"],
    );
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(out.stderr.contains("20000101T000000Z-0000"));
    // Unreachable database (a closed port on loopback), password not shown.
    let out = run(mwaa_dr(dir.path()).arg("--store").arg(&store).args([
        "backup",
        "--db",
        "postgres://u:sekret-pw@127.0.0.1:9/airflow",
    ]));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("127.0.0.1:9"), "{}", out.stderr);
    assert!(!out.stderr.contains("sekret-pw"));
    // Unknown alembic revision.
    bench.sql(
        &db,
        "UPDATE alembic_version SET version_num = 'abcdef123456'",
    );
    let out = run(mwaa_dr(dir.path())
        .arg("--store")
        .arg(&store)
        .args(["backup", "--db", &db]));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("abcdef123456"), "{}", out.stderr);
    // A revision newer than every known one: the newest supported version and what to do.
    assert!(out.stderr.contains("newest 3.3.1"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("use a release of mwaa-dr that supports it"),
        "{}",
        out.stderr
    );
    let out = run(mwaa_dr(dir.path()).arg("--store").arg(&store).args([
        "backup",
        "--airflow-version",
        "2.10.3",
        "--db",
        &db,
    ]));
    assert_eq!(out.code, 0, "--airflow-version overrides: {}", out.stderr);
}

#[tokio::test]
async fn restore_refuses_an_older_target() {
    let Some(bench) = Bench::get() else { return };
    let src = bench.airflow_db("older_src", "2.10.3", true);
    let dst = bench.airflow_db("older_dst", "2.4.3", false);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    backup(dir.path(), &store, &src);
    let before = whole_db_digest(&dst).await;
    let out = restore(dir.path(), &store, &dst, &[]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("older"), "{}", out.stderr);
    assert_eq!(whole_db_digest(&dst).await, before);
}

#[tokio::test]
async fn prune_keeps_the_newest_and_removes_manifests_first() {
    let Some(bench) = Bench::get() else { return };
    let db = bench.airflow_db("prune", "2.10.3", false);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            backup(dir.path(), &store, &db)["backup_id"]
                .as_str()
                .expect("id")
                .to_string(),
        );
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let dry = run(mwaa_dr(dir.path()).arg("--store").arg(&store).args([
        "--dry-run",
        "--output",
        "json",
        "prune",
        "--keep-last",
        "1",
    ]));
    let doc: Value = serde_json::from_str(&dry.stdout).expect("JSON");
    assert_eq!(doc["removed"], serde_json::json!([ids[1], ids[0]]));
    assert!(
        store
            .join("backups")
            .join(&ids[0])
            .join("manifest.json")
            .exists(),
        "dry run removed nothing"
    );
    let out =
        run(mwaa_dr(dir.path())
            .arg("--store")
            .arg(&store)
            .args(["prune", "--keep-last", "1"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!store.join("backups").join(&ids[0]).exists());
    assert!(
        store
            .join("backups")
            .join(&ids[2])
            .join("manifest.json")
            .exists()
    );
}

/// The same round trip through an S3 store on moto, with SSE-KMS: the binary finds the
/// endpoint through the standard AWS variables, every object carries the KMS headers, and the
/// restored tables equal the source.
#[tokio::test]
async fn round_trip_through_s3_with_sse_kms() {
    let Some(bench) = Bench::get() else { return };
    let Some((s3, bucket)) = crate::store::moto_bucket("backup_rt_kms").await else {
        return;
    };
    let endpoint = std::env::var("MWAA_DR_TEST_MOTO_URL").expect("moto url");
    let src = bench.airflow_db("s3rt_src", "2.10.3", true);
    let dst = bench.airflow_db("s3rt_dst", "2.10.3", false);
    let dir = tempfile::tempdir().expect("tempdir");
    let key_id = "arn:aws:kms:us-east-1:123456789012:key/mwaa-dr-test";
    let with_aws = |cmd: &mut assert_cmd::Command| {
        cmd.env("AWS_ENDPOINT_URL", &endpoint)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("DR_BACKUP_BUCKET", &bucket)
            .env("DR_BACKUP_PREFIX", "team/dr")
            .env("DR_S3_SSE", "aws:kms")
            .env("DR_S3_KMS_KEY_ID", key_id);
    };
    let mut cmd = mwaa_dr(dir.path());
    with_aws(&mut cmd);
    let out = run(cmd.args(["--output", "json", "backup", "--db", &src]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(doc["store"], format!("s3://{bucket}/team/dr"));
    let id = doc["backup_id"].as_str().expect("id");

    let objects = s3
        .list_objects_v2()
        .bucket(&bucket)
        .prefix(format!("team/dr/backups/{id}/"))
        .send()
        .await
        .expect("list");
    let keys: Vec<String> = objects
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect();
    assert!(
        keys.iter().any(|k| k.ends_with("/manifest.json")),
        "{keys:?}"
    );
    assert!(
        keys.iter().any(|k| k.ends_with("/xcom.csv.zst")),
        "{keys:?}"
    );
    for key in &keys {
        let head = s3
            .head_object()
            .bucket(&bucket)
            .key(key)
            .send()
            .await
            .expect("head");
        assert_eq!(
            head.server_side_encryption().map(|s| s.as_str()),
            Some("aws:kms"),
            "{key}"
        );
        assert_eq!(head.ssekms_key_id(), Some(key_id), "{key}");
    }

    let mut cmd = mwaa_dr(dir.path());
    with_aws(&mut cmd);
    let out = run(cmd.args(["--yes", "restore", "--db", &dst]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    for table in [
        "dag_run",
        "task_instance",
        "xcom",
        "log",
        "job",
        "task_fail",
    ] {
        let manifest_text = s3
            .get_object()
            .bucket(&bucket)
            .key(format!("team/dr/backups/{id}/manifest.json"))
            .send()
            .await
            .expect("manifest")
            .body
            .collect()
            .await
            .expect("body")
            .into_bytes();
        let m: Value = serde_json::from_slice(&manifest_text).expect("manifest JSON");
        let entry = m["tables"]
            .as_array()
            .expect("tables")
            .iter()
            .find(|t| t["name"] == table)
            .expect("table");
        let columns: Vec<String> =
            serde_json::from_value(entry["columns"].clone()).expect("columns");
        assert_eq!(
            digest(&dst, table, &columns, None).await,
            digest(&src, table, &columns, entry["filter"].as_str()).await,
            "{table} differs after an S3 round trip"
        );
    }
}

/// A live lock held by another run makes prune exit 5 naming the holder, and changes nothing.
#[tokio::test]
async fn prune_refuses_a_locked_store() {
    let Some(bench) = Bench::get() else { return };
    let db = bench.airflow_db("locked", "2.10.3", false);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    backup(dir.path(), &store, &db);
    backup(dir.path(), &store, &db);
    std::fs::create_dir_all(store.join("locks")).expect("locks dir");
    let holder = serde_json::json!({
        "exclusive": false, "command": "backup", "hostname": "other-host", "pid": 4242,
        "time": chrono::Utc::now().to_rfc3339(),
    });
    std::fs::write(store.join("locks/other.json"), holder.to_string()).expect("lock");
    let out =
        run(mwaa_dr(dir.path())
            .arg("--store")
            .arg(&store)
            .args(["prune", "--keep-last", "1"]));
    assert_eq!(out.code, 5, "{}", out.stderr);
    assert!(out.stderr.contains("other-host"), "{}", out.stderr);
    let list = run(mwaa_dr(dir.path())
        .arg("--store")
        .arg(&store)
        .args(["--output", "json", "list"]));
    assert_eq!(
        serde_json::from_str::<Vec<Value>>(&list.stdout)
            .expect("list")
            .len(),
        2
    );
    // A shared lock does not block another backup.
    backup(dir.path(), &store, &db);
}

/// DR_TABLE_CATALOG replaces the built-in catalog.
#[tokio::test]
async fn a_users_table_catalog_replaces_the_builtin_one() {
    let Some(bench) = Bench::get() else { return };
    let db = bench.airflow_db("catalog", "2.10.3", true);
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = dir.path().join("tables.json");
    std::fs::write(
        &catalog,
        r#"{"inflight_states": ["running"], "tables": [{"name": "variable", "restore": "strategy", "key": ["key"], "keep": "true"}, {"name": "log", "filter": "t.event <> 'cli_task_run'"}]}"#,
    )
    .expect("catalog");
    let store = dir.path().join("store");
    let out = run(mwaa_dr(dir.path())
        .env("DR_TABLE_CATALOG", &catalog)
        .arg("--store")
        .arg(&store)
        .args(["--output", "json", "backup", "--db", &db]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).expect("JSON");
    let m = manifest(&store, doc["backup_id"].as_str().expect("id"));
    let names: Vec<&str> = m["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, vec!["variable", "log"]);
    assert_eq!(m["tables"][1]["rows"], 0, "the catalog's filter applies");
    let bad = run(mwaa_dr(dir.path())
        .env("DR_TABLE_CATALOG", dir.path().join("missing.json"))
        .arg("--store")
        .arg(&store)
        .args(["backup", "--db", &db]));
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("DR_TABLE_CATALOG"), "{}", bad.stderr);
}

/// The schema of `url` as Airflow sees it: every column (type, NOT NULL, default), index,
/// constraint (with whether it is validated), sequence owner, table owner and grant of the
/// public schema; and the schemas of the database.
async fn schema_of(url: &str) -> Vec<String> {
    let mut conn = connect(url).await;
    let queries = [
        "SELECT format('column %s.%s %s %s %s', c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid)) \
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
         LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
         WHERE n.nspname = 'public' AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped",
        "SELECT format('index %s', indexdef) FROM pg_indexes WHERE schemaname = 'public'",
        "SELECT format('constraint %s %s %s %s', conrelid::regclass, conname, pg_get_constraintdef(oid), convalidated) \
         FROM pg_constraint WHERE connamespace = 'public'::regnamespace",
        "SELECT format('sequence %s %s', s.relname, pg_get_serial_sequence(d.refobjid::regclass::text, a.attname)) \
         FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' \
         JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid \
         WHERE d.deptype = 'a' AND s.relnamespace = 'public'::regnamespace",
        "SELECT format('table %s %s %s', relname, pg_get_userbyid(relowner), relacl) FROM pg_class \
         WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'S')",
        "SELECT format('schema %s', nspname) FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%'",
    ];
    let mut out = Vec::new();
    for sql in queries {
        let rows: Vec<String> = sqlx::query_scalar(sql)
            .fetch_all(&mut conn)
            .await
            .expect("schema");
        out.extend(rows);
    }
    out.sort();
    out
}

/// A restore switches the copied tables in from its shadow tables: the target ends with
/// exactly the schema it had (columns, defaults, indexes, constraints all validated,
/// sequences owned by their columns, owners and grants), the shadow schema gone, and the
/// report says which tables were switched and how long the transaction held them.
async fn restore_keeps_the_targets_schema(version: &str) {
    let Some(bench) = Bench::get() else { return };
    let tag = version.replace('.', "");
    let src = bench.airflow_db(&format!("idx_src_{tag}"), version, true);
    let dst = bench.airflow_db(&format!("idx_dst_{tag}"), version, false);
    {
        let mut conn = connect(&dst).await;
        sqlx::query("GRANT SELECT ON dag_run, task_instance TO PUBLIC")
            .execute(&mut conn)
            .await
            .expect("grant");
    }
    let before = schema_of(&dst).await;
    assert!(
        before
            .iter()
            .any(|l| l.starts_with("constraint") && l.contains("FOREIGN KEY")),
        "the fixture has foreign keys"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    backup(dir.path(), &store, &src);
    let out = restore(dir.path(), &store, &dst, &["--clean", "--jobs", "3"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).expect("restore JSON");
    let switched: Vec<&str> = doc["switched"]
        .as_array()
        .expect("switched")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for table in ["dag_run", "task_instance"] {
        assert!(switched.contains(&table), "{table} not switched: {doc}");
    }
    assert_eq!(doc["jobs"], 3, "{doc}");
    let window = doc["lock_window_seconds"].as_f64().expect("lock window");
    assert!(
        window > 0.0 && window < doc["seconds"].as_f64().expect("seconds"),
        "{doc}"
    );
    assert!(doc.get("foreign_keys_not_validated").is_none(), "{doc}");
    let after = schema_of(&dst).await;
    let lost: Vec<&String> = before.iter().filter(|l| !after.contains(l)).collect();
    let gained: Vec<&String> = after.iter().filter(|l| !before.contains(l)).collect();
    assert!(
        lost.is_empty() && gained.is_empty(),
        "schema changed:\nlost {lost:#?}\ngained {gained:#?}"
    );
    // The ids go on from the restored ones: the sequences follow the switched tables.
    let mut conn = connect(&dst).await;
    let (max, next): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT max(id) FROM dag_run)::bigint, nextval(pg_get_serial_sequence('dag_run', 'id'))",
    )
    .fetch_one(&mut conn)
    .await
    .expect("sequence");
    assert!(next > max, "next dag_run id {next} after {max}");
}

#[tokio::test]
async fn restore_keeps_the_targets_schema_2_10_3() {
    restore_keeps_the_targets_schema("2.10.3").await;
}

#[tokio::test]
async fn restore_keeps_the_targets_schema_2_4_3() {
    restore_keeps_the_targets_schema("2.4.3").await;
}

#[tokio::test]
async fn restore_keeps_the_targets_schema_3_0_6() {
    restore_keeps_the_targets_schema("3.0.6").await;
}

#[tokio::test]
async fn restore_keeps_the_targets_schema_3_3_1() {
    restore_keeps_the_targets_schema("3.3.1").await;
}

#[tokio::test]
async fn restore_keeps_the_targets_schema_2_7_2() {
    restore_keeps_the_targets_schema("2.7.2").await;
}

/// A clean restore over a populated target (restored into once, then given a running
/// scheduler job and rows of its own) replaces the copied tables whole from their shadow
/// tables, in a transaction that deletes nothing row by row: the target ends with exactly
/// the backup's rows plus the rows cleanup keeps, and the report counts each table's
/// cleaned rows as the DELETE did.
#[tokio::test]
async fn clean_restore_over_a_populated_target_replaces_its_tables() {
    let Some(bench) = Bench::get() else { return };
    let src = bench.airflow_db("repop_src", "2.10.3", true);
    let dst = bench.airflow_db("repop_dst", "2.10.3", false);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let doc = backup(dir.path(), &store, &src);
    let id = doc["backup_id"].as_str().expect("id");
    let first = restore(dir.path(), &store, &dst, &["--clean"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    bench.sql(&dst, "INSERT INTO job (id, state, job_type, hostname) VALUES (90001, 'running', 'SchedulerJob', 'standby'); INSERT INTO log (id, event) VALUES (90002, 'standby-only')");
    let mut conn = connect(&dst).await;
    let mut held = std::collections::BTreeMap::new();
    for table in ["task_instance", "dag_run", "log", "xcom"] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&mut conn)
            .await
            .expect("count");
        assert!(n > 0, "{table} is populated");
        held.insert(table, n);
    }
    let out = restore(dir.path(), &store, &dst, &["--clean", "--jobs", "2"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report: Value = serde_json::from_str(&out.stdout).expect("restore JSON");
    let switched: Vec<&str> = report["switched"]
        .as_array()
        .expect("switched")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for (table, n) in &held {
        assert!(switched.contains(table), "{table} not switched: {report}");
        let cleaned = report["cleaned"]
            .as_array()
            .expect("cleaned")
            .iter()
            .find(|c| c["table"] == *table)
            .unwrap_or_else(|| panic!("{table} not in cleaned: {report}"));
        assert_eq!(cleaned["rows"], *n, "{table}: {report}");
    }
    assert!(
        report.get("foreign_keys_not_validated").is_none(),
        "{report}"
    );
    assert_tables_restored(&src, &dst, &manifest(&store, id), &["job"]).await;
    let kept: String = sqlx::query_scalar("SELECT hostname FROM job WHERE id = 90001")
        .fetch_one(&mut conn)
        .await
        .expect("the running job is kept");
    assert_eq!(kept, "standby");
    let gone: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM log WHERE id = 90002)")
        .fetch_one(&mut conn)
        .await
        .expect("log");
    assert!(!gone, "the target's own log row was cleaned");
    let shadows: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'mwaa_dr_shadow')",
    )
    .fetch_one(&mut conn)
    .await
    .expect("schema");
    assert!(!shadows, "the shadow schema is gone");
}

/// A session of the target (as the standby's scheduler) holding a `dag` row the restore
/// unpauses, then reading a table the restore has switched in, deadlocks with the restore's
/// transaction; PostgreSQL rolls the restore's transaction back (the session's
/// deadlock_timeout is longer), and the restore runs its transaction again and succeeds.
#[tokio::test]
async fn a_restore_chosen_as_a_deadlock_victim_runs_its_transaction_again() {
    let Some(bench) = Bench::get() else { return };
    let src = bench.airflow_db("deadlock_src", "2.10.3", true);
    let dst = bench.airflow_db("deadlock_dst", "2.10.3", true);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let doc = backup(dir.path(), &store, &src);
    let id = doc["backup_id"].as_str().expect("id").to_string();
    let active: Vec<String> = manifest(&store, &id)["active_dags"]
        .as_array()
        .expect("active_dags")
        .iter()
        .filter_map(|d| d.as_str().map(str::to_string))
        .collect();
    assert!(!active.is_empty(), "the backup has active DAGs to unpause");

    let mut scheduler = connect(&dst).await;
    sqlx::query("BEGIN")
        .execute(&mut scheduler)
        .await
        .expect("begin");
    sqlx::query("SET LOCAL deadlock_timeout = '60s'")
        .execute(&mut scheduler)
        .await
        .expect("deadlock_timeout");
    let locked: Vec<String> =
        sqlx::query_scalar("SELECT dag_id FROM dag WHERE dag_id = ANY($1) FOR UPDATE")
            .bind(&active)
            .fetch_all(&mut scheduler)
            .await
            .expect("the dag rows");
    assert!(!locked.is_empty(), "the target has the active DAGs' rows");

    let (dir_path, store_path, dst_url) = (dir.path().to_path_buf(), store.clone(), dst.clone());
    let restoring = std::thread::spawn(move || {
        restore(
            &dir_path,
            &store_path,
            &dst_url,
            &["--clean", "--jobs", "2"],
        )
    });
    // The restore's transaction waits for the dag rows, holding the tables it switched in.
    let mut observer = connect(&dst).await;
    let mut waiting = false;
    for _ in 0..600 {
        waiting = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND query ILIKE 'UPDATE dag SET is_paused%')",
        )
        .fetch_one(&mut observer)
        .await
        .expect("pg_stat_activity");
        if waiting || restoring.is_finished() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(waiting, "the restore never waited for the dag rows");
    // The scheduler now reads a switched table: a deadlock the restore's side detects first.
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM task_instance")
        .fetch_one(&mut scheduler)
        .await
        .expect("the scheduler's read goes on once the restore's transaction is rolled back");
    assert!(n >= 0);
    sqlx::query("COMMIT")
        .execute(&mut scheduler)
        .await
        .expect("commit");

    let out = restoring.join().expect("the restore thread");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("running it again") && out.stderr.contains("40P01"),
        "{}",
        out.stderr
    );
    // The tables switched in hold the backup's rows (the restore's own count).
    let report: Value = serde_json::from_str(&out.stdout).expect("restore JSON");
    let m = manifest(&store, &id);
    let switched = report["switched"].as_array().expect("switched");
    assert!(!switched.is_empty(), "{report}");
    for name in switched.iter().filter_map(Value::as_str) {
        let table = m["tables"]
            .as_array()
            .expect("tables")
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in the manifest"));
        let loaded = report["loaded"]
            .as_array()
            .expect("loaded")
            .iter()
            .find(|l| l["table"] == name)
            .unwrap_or_else(|| panic!("{name} not loaded: {report}"));
        assert_eq!(loaded["rows"], table["rows"], "{name}: {report}");
    }
    let paused: Vec<String> =
        sqlx::query_scalar("SELECT dag_id FROM dag WHERE dag_id = ANY($1) AND is_paused")
            .bind(&active)
            .fetch_all(&mut observer)
            .await
            .expect("paused");
    assert!(paused.is_empty(), "active DAGs left paused: {paused:?}");
}

/// Shadow tables a killed restore left behind are removed by the next one, and a restore
/// refuses to run beside another restore into the same database (they share the shadow
/// schema), saying so, with nothing changed.
#[tokio::test]
async fn restore_removes_leftover_shadow_tables_and_runs_alone() {
    let Some(bench) = Bench::get() else { return };
    let src = bench.airflow_db("shadow_src", "2.10.3", true);
    let dst = bench.airflow_db("shadow_dst", "2.10.3", false);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    backup(dir.path(), &store, &src);
    let mut conn = connect(&dst).await;
    for sql in [
        "CREATE SCHEMA mwaa_dr_shadow",
        "CREATE TABLE mwaa_dr_shadow.dag_run AS SELECT 99999 AS id, 'stale'::text AS dag_id",
    ] {
        sqlx::query(sql).execute(&mut conn).await.expect(sql);
    }
    let before = whole_db_digest(&dst).await;
    let mut holder = connect(&dst).await;
    sqlx::query("SELECT pg_advisory_lock(7887880343287657075)")
        .execute(&mut holder)
        .await
        .expect("lock");
    let busy = restore(dir.path(), &store, &dst, &["--clean"]);
    assert_eq!(busy.code, 1, "{}", busy.stderr);
    assert!(
        busy.stderr
            .contains("another restore into this database is running"),
        "{}",
        busy.stderr
    );
    assert_eq!(whole_db_digest(&dst).await, before, "changed while refused");
    drop(holder);
    let out = restore(dir.path(), &store, &dst, &["--clean"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let stale: i64 = sqlx::query_scalar("SELECT count(*) FROM dag_run WHERE dag_id = 'stale'")
        .fetch_one(&mut conn)
        .await
        .expect("count");
    assert_eq!(stale, 0, "a leftover shadow row reached the target");
    let schema: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'mwaa_dr_shadow')",
    )
    .fetch_one(&mut conn)
    .await
    .expect("schema");
    assert!(!schema, "the shadow schema is left after a restore");
}

/// A clean restore run by the restore DAG keeps the DR DAGs' own runs with their ids (Airflow
/// saves the executing run by its id): restored runs whose ids collide with them move past
/// both maxima, and their xcom rows follow them.
#[tokio::test]
async fn clean_restore_keeps_the_dr_runs_ids_and_moves_colliding_restored_runs() {
    let Some(bench) = Bench::get() else { return };
    let src = bench.airflow_db("keptrun_src", "2.10.3", true);
    let dst = bench.airflow_db("keptrun_dst", "2.10.3", false);
    // The executing restore run holds id 2 and an in-flight cleanup run id 7: both ids are
    // also those of restored etl runs (1..10), each with one xcom row per task.
    bench.sql(
        &dst,
        "INSERT INTO dag_run (id, dag_id, execution_date, state, run_id, external_trigger, run_type, clear_number) VALUES \
         (2, 'restore_metadata', '2030-01-01', 'running', 'manual__dr', true, 'manual', 0), \
         (7, 'cleanup_metadata', '2030-01-02', 'queued', 'manual__queued', true, 'manual', 0); \
         SELECT setval('dag_run_id_seq', 7); \
         INSERT INTO job (id, dag_id, state, job_type, hostname) \
         VALUES (1, 'restore_metadata', 'running', 'LocalTaskJob', 'worker'); \
         INSERT INTO task_instance (task_id, dag_id, run_id, map_index, state, pool, pool_slots, job_id) \
         VALUES ('mwaa_dr', 'restore_metadata', 'manual__dr', -1, 'running', 'default_pool', 1, 1); \
         INSERT INTO xcom (dag_run_id, task_id, map_index, key, dag_id, run_id, value, timestamp) \
         VALUES (2, 'mwaa_dr', -1, 'kept', 'restore_metadata', 'manual__dr', '\\x01'::bytea, now())",
    );
    let src_runs = rows(
        &src,
        "SELECT id, run_id FROM dag_run WHERE dag_id = 'etl' AND id IN (2, 7)",
    )
    .await;
    assert_eq!(src_runs.len(), 2, "the sample has etl runs 2 and 7");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    backup(dir.path(), &store, &src);
    let out = run(mwaa_dr(dir.path())
        .arg("--store")
        .arg(&store)
        .args([
            "--yes", "--output", "json", "restore", "--db", &dst, "--clean",
        ])
        .env("MWAA_DR_DAG_RUN", "restore_metadata/manual__dr"));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report: Value = serde_json::from_str(&out.stdout).expect("restore JSON");
    assert_eq!(
        report["renumbered_dag_runs"],
        serde_json::json!({"2": 11, "7": 12}),
        "{report}"
    );
    // The kept runs: same ids, same rows, their task instance and xcom untouched.
    assert_eq!(
        rows(
            &dst,
            "SELECT id, dag_id, run_id, state FROM dag_run WHERE dag_id IN ('restore_metadata', 'cleanup_metadata')"
        )
        .await,
        vec![
            "(2,restore_metadata,manual__dr,running)",
            "(7,cleanup_metadata,manual__queued,queued)"
        ]
    );
    assert_eq!(
        rows(
            &dst,
            "SELECT dag_run_id, run_id FROM xcom WHERE dag_id = 'restore_metadata'"
        )
        .await,
        vec!["(2,manual__dr)"]
    );
    assert_eq!(
        rows(
            &dst,
            "SELECT state, job_id FROM task_instance WHERE dag_id = 'restore_metadata'"
        )
        .await,
        vec!["(running,1)"],
        "the kept task instance still points at the target's own job, not a renumbered restored one"
    );
    assert_eq!(
        rows(&dst, "SELECT job_type, hostname FROM job WHERE id = 1").await,
        vec!["(LocalTaskJob,worker)"]
    );
    // The colliding restored runs moved past both maxima; every xcom row follows its run.
    let moved: Vec<String> = src_runs
        .iter()
        .map(|r| r.replacen("(2,", "(11,", 1).replacen("(7,", "(12,", 1))
        .collect();
    assert_eq!(
        rows(
            &dst,
            "SELECT id, run_id FROM dag_run WHERE dag_id = 'etl' AND id IN (2, 7, 11, 12)"
        )
        .await,
        moved
    );
    assert_eq!(
        rows(
            &dst,
            "SELECT count(*) FROM xcom x JOIN dag_run d ON d.id = x.dag_run_id WHERE d.dag_id = x.dag_id AND d.run_id = x.run_id AND d.id IN (11, 12)"
        )
        .await,
        vec!["(6)"],
        "three xcom rows per moved run"
    );
    assert_eq!(
        rows(
            &dst,
            "SELECT count(*) FROM xcom x LEFT JOIN dag_run d ON d.id = x.dag_run_id WHERE d.id IS NULL OR d.dag_id <> x.dag_id OR d.run_id <> x.run_id"
        )
        .await,
        vec!["(0)"],
        "no xcom row points at another run"
    );
    let mut conn = connect(&dst).await;
    let next: i64 = sqlx::query_scalar("SELECT nextval('dag_run_id_seq')")
        .fetch_one(&mut conn)
        .await
        .expect("seq");
    assert_eq!(
        next, 13,
        "the sequence is past both the kept and the restored ids"
    );
}

/// A failed backup publishes what failed to DR_SNS_TOPIC_ARN (read back through an SQS
/// subscription on moto), as the original's backup DAG does; a successful one publishes
/// nothing.
#[tokio::test]
async fn a_failed_backup_notifies_the_topic_and_a_successful_one_does_not() {
    let Some(aws) = crate::aws::Aws::get("backup_sns") else {
        return;
    };
    let Some(bench) = Bench::get() else {
        return;
    };
    let src = bench.airflow_db("backup_sns_src", "2.10.3", true);
    let environment = format!("primary-{}", aws.tag);
    aws.seed_environment(
        crate::aws::PRIMARY_REGION,
        serde_json::json!({"Name": environment, "Status": "AVAILABLE", "AirflowVersion": "2.10.3"}),
    );
    let (topic, queue) = aws.topic_with_queue(&format!("backups-{}", aws.tag)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let backup = |fault: Option<&str>| {
        let mut cmd = mwaa_dr(dir.path());
        aws.env(&mut cmd);
        cmd.env("DR_SNS_TOPIC_ARN", &topic)
            .env("PRIMARY_MWAA_ENVIRONMENT_NAME", &environment)
            .arg("--store")
            .arg(&store);
        if let Some(fault) = fault {
            cmd.env("MWAA_DR_TEST_STORE_FAULT", fault);
        }
        run(cmd.args(["backup", "--jobs", "1", "--db", &src]))
    };

    let ok = backup(None);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert_eq!(aws.notifications(&queue).await, Vec::new());

    // The lock file is the first object created, then the backup's objects.
    let failed = backup(Some("create#3"));
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    let notes = aws.notifications(&queue).await;
    assert_eq!(notes.len(), 1, "{notes:?}");
    let (subject, message) = &notes[0];
    assert_eq!(subject, &format!("mwaa-dr backup of {environment} FAILED"));
    let doc: Value = serde_json::from_str(message).expect("JSON message");
    assert_eq!(doc["command"], "backup");
    assert_eq!(doc["status"], "failed");
    assert_eq!(doc["what"], "backup of the metadata database");
    assert_eq!(doc["environment"], environment.as_str());
    assert_eq!(doc["store"], store.display().to_string());
    assert_eq!(doc["error"]["class"], "transient");
    let error = doc["error"]["message"].as_str().expect("message");
    assert!(error.contains("injected fault"), "{doc}");
    let id = doc["backup_id"].as_str().expect("backup id");
    assert!(error.contains(&format!("backups/{id}/")), "{doc}");

    // A dry run that fails notifies nobody.
    let mut cmd = mwaa_dr(dir.path());
    aws.env(&mut cmd);
    let dry = run(cmd.env("DR_SNS_TOPIC_ARN", &topic).args([
        "--dry-run",
        "backup",
        "--airflow-version",
        "9.9.9",
        "--db",
        &src,
    ]));
    assert_ne!(dry.code, 0, "{}", dry.stdout);
    assert_eq!(aws.notifications(&queue).await, Vec::new());
}
