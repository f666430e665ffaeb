//! The backup store's integrity with the real binary: manifests that account for every table
//! and carry their own checksum, unreadable manifests reported without stopping `list` or
//! `prune`, incomplete backups collected, and store text escaped before it reaches a terminal.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use mwaa_dr::store::manifest::canonical_sha256;
use serde_json::Value;

use crate::common::{Run, mwaa_dr, run};
use crate::pg::{Bench, whole_db_digest};

fn backup(dir: &Path, store: &Path, db: &str) -> String {
    let out = run(mwaa_dr(dir)
        .arg("--store")
        .arg(store)
        .args(["--output", "json", "backup", "--db", db]));
    assert_eq!(out.code, 0, "backup failed: {}", out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).expect("backup JSON");
    doc["backup_id"].as_str().expect("id").to_string()
}

fn store_cmd(dir: &Path, store: &Path, args: &[&str]) -> Run {
    run(mwaa_dr(dir).arg("--store").arg(store).args(args))
}

fn manifest_path(store: &Path, id: &str) -> PathBuf {
    store.join("backups").join(id).join("manifest.json")
}

fn read_manifest(store: &Path, id: &str) -> Value {
    serde_json::from_slice(&std::fs::read(manifest_path(store, id)).expect("manifest"))
        .expect("manifest JSON")
}

/// Edits a manifest in place; with `reseal`, its checksum is recomputed (a consistent
/// manifest that says something else), without, the edit is damage the checksum must catch.
fn edit_manifest(store: &Path, id: &str, reseal: bool, edit: impl FnOnce(&mut Value)) {
    let mut doc = read_manifest(store, id);
    edit(&mut doc);
    if reseal {
        doc["manifest_sha256"] = canonical_sha256(&doc).into();
    }
    std::fs::write(
        manifest_path(store, id),
        serde_json::to_vec_pretty(&doc).expect("JSON"),
    )
    .expect("write manifest");
}

fn drop_table(doc: &mut Value, name: &str) {
    doc["tables"]
        .as_array_mut()
        .expect("tables")
        .retain(|t| t["name"] != name);
}

/// A manifest that lost a table's entry must not restore: with `--clean` it would empty that
/// table in the target and exit 0. Damaged, the checksum catches it; consistent but not
/// accounting for the table, the catalog check does. Either way nothing changes.
#[tokio::test]
async fn restore_refuses_a_manifest_that_does_not_account_for_a_table() {
    let Some(bench) = Bench::get() else { return };
    let src = bench.airflow_db("acct_src", "2.10.3", true);
    let dst = bench.airflow_db("acct_dst", "2.10.3", true);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let id = backup(dir.path(), &store, &src);
    let doc = read_manifest(&store, &id);
    assert_eq!(doc["format_version"], 2);
    assert_eq!(
        doc["manifest_sha256"].as_str(),
        Some(canonical_sha256(&doc).as_str())
    );
    let before = whole_db_digest(&dst).await;
    let restore =
        |dir: &Path| store_cmd(dir, &store, &["--yes", "restore", "--clean", "--db", &dst]);

    edit_manifest(&store, &id, false, |doc| drop_table(doc, "xcom"));
    let out = restore(dir.path());
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("checksum mismatch"), "{}", out.stderr);
    assert_eq!(whole_db_digest(&dst).await, before, "the target changed");

    edit_manifest(&store, &id, true, |_| {});
    let out = restore(dir.path());
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("xcom"), "{}", out.stderr);
    assert!(out.stderr.contains("does not account"), "{}", out.stderr);
    assert_eq!(whole_db_digest(&dst).await, before, "the target changed");
    let verify = store_cmd(dir.path(), &store, &["verify", &id]);
    assert_eq!(verify.code, 1, "{}", verify.stderr);
    assert!(verify.stderr.contains("xcom"), "{}", verify.stderr);
}

/// A table the source's Airflow version does not have is recorded as absent with its
/// reason, and that backup restores.
#[tokio::test]
async fn tables_the_source_lacks_are_recorded_with_a_reason() {
    let Some(bench) = Bench::get() else { return };
    let src = bench.airflow_db("absent_src", "2.4.3", true);
    let dst = bench.airflow_db("absent_dst", "2.4.3", false);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let id = backup(dir.path(), &store, &src);
    let doc = read_manifest(&store, &id);
    let absent = doc["absent_tables"].as_array().expect("absent_tables");
    let history = absent
        .iter()
        .find(|a| a["name"] == "task_instance_history")
        .unwrap_or_else(|| panic!("task_instance_history is not in 2.4.3: {absent:?}"));
    assert!(
        history["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no such table")),
        "{history}"
    );
    let out = store_cmd(dir.path(), &store, &["restore", "--db", &dst]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// Backups written by earlier builds (format 1: no checksum, no absent tables) still list,
/// verify and restore.
#[tokio::test]
async fn format_1_backups_still_restore() {
    let Some(bench) = Bench::get() else { return };
    let src = bench.airflow_db("v1_src", "2.10.3", true);
    let dst = bench.airflow_db("v1_dst", "2.10.3", false);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let id = backup(dir.path(), &store, &src);
    edit_manifest(&store, &id, false, |doc| {
        let map = doc.as_object_mut().expect("object");
        map.insert("format_version".into(), 1.into());
        map.remove("manifest_sha256");
        map.remove("absent_tables");
    });
    let list = store_cmd(dir.path(), &store, &["--output", "json", "list"]);
    assert_eq!(list.code, 0, "{}", list.stderr);
    assert!(list.stdout.contains(&id), "{}", list.stdout);
    let verify = store_cmd(dir.path(), &store, &["verify"]);
    assert_eq!(verify.code, 0, "{}", verify.stderr);
    let out = store_cmd(dir.path(), &store, &["restore", "--db", &dst]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// One damaged, edited, copied or newer-format manifest does not make `list` and `prune`
/// fail for the whole store: each is reported (stderr and JSON) and never deleted.
#[tokio::test]
async fn list_and_prune_report_unreadable_manifests_and_go_on() {
    let Some(bench) = Bench::get() else { return };
    let db = bench.airflow_db("unreadable", "2.10.3", true);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let damaged = backup(dir.path(), &store, &db);
    let newer = backup(dir.path(), &store, &db);
    let good = backup(dir.path(), &store, &db);
    std::fs::write(
        manifest_path(&store, &damaged),
        b"{\"format_version\": 2, \"ta",
    )
    .expect("damage");
    edit_manifest(&store, &newer, true, |doc| {
        doc["format_version"] = 99.into()
    });
    // A manifest copied into another folder: it must not be listed twice.
    let copy = "29990101T000000.000Z-c0de";
    std::fs::create_dir_all(store.join("backups").join(copy)).expect("dir");
    std::fs::copy(manifest_path(&store, &good), manifest_path(&store, copy)).expect("copy");

    let list = store_cmd(dir.path(), &store, &["--output", "json", "list"]);
    assert_eq!(list.code, 0, "{}", list.stderr);
    let entries: Vec<Value> = serde_json::from_str(&list.stdout).expect("list JSON");
    let readable: Vec<&str> = entries
        .iter()
        .filter(|e| e.get("unreadable").is_none())
        .filter_map(|e| e["backup_id"].as_str())
        .collect();
    assert_eq!(readable, vec![good.as_str()]);
    let problem = |id: &str| -> String {
        let entry = entries
            .iter()
            .find(|e| e["backup_id"] == id && e["unreadable"] == true)
            .unwrap_or_else(|| panic!("{id} not reported: {entries:?}"));
        entry["problem"].as_str().unwrap_or_default().to_string()
    };
    assert!(problem(&damaged).contains("not a JSON manifest"));
    assert!(problem(&newer).contains("format_version 99"));
    assert!(problem(copy).contains("copied or moved"));
    for id in [&damaged, &newer, &copy.to_string()] {
        assert!(list.stderr.contains(id.as_str()), "{}", list.stderr);
    }
    let text = store_cmd(dir.path(), &store, &["list"]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(text.stdout.contains("3 unreadable"), "{}", text.stdout);

    let prune = store_cmd(
        dir.path(),
        &store,
        &["--output", "json", "prune", "--keep-last", "0"],
    );
    assert_eq!(prune.code, 0, "{}", prune.stderr);
    let doc: Value = serde_json::from_str(&prune.stdout).expect("prune JSON");
    assert_eq!(doc["removed"], serde_json::json!([good]));
    assert_eq!(doc["unreadable"].as_array().map(Vec::len), Some(3), "{doc}");
    for id in [&damaged, &newer, &copy.to_string()] {
        assert!(
            manifest_path(&store, id).exists(),
            "prune deleted unreadable {id}"
        );
    }
    assert!(!store.join("backups").join(&good).exists());
}

fn age(path: &Path, by: Duration) {
    let file = std::fs::File::options()
        .write(true)
        .open(path)
        .expect("open");
    file.set_modified(SystemTime::now() - by)
        .expect("set mtime");
}

fn incomplete(store: &Path, id: &str, written_ago: Duration) -> PathBuf {
    let folder = store.join("backups").join(id);
    std::fs::create_dir_all(&folder).expect("dir");
    for name in ["job.csv.zst", "dag_run.csv.zst"] {
        std::fs::write(folder.join(name), b"partial").expect("object");
        age(&folder.join(name), written_ago);
    }
    folder
}

/// Objects of backups that never got a manifest are collected once both their id and their
/// last write are older than `--incomplete-after` (default 24h); younger ones, which may
/// still be running, stay. `--dry-run` reports and deletes nothing.
#[test]
fn prune_collects_old_incomplete_backups() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let day = Duration::from_secs(86_400);
    let old = incomplete(&store, "20200101T000000.000Z-dead", 2 * day);
    let still_writing = incomplete(&store, "20200102T000000.000Z-busy", Duration::ZERO);
    let young_id = chrono::Utc::now()
        .format("%Y%m%dT%H%M%S%.3fZ-0001")
        .to_string();
    let young = incomplete(&store, &young_id, 2 * day);
    // What a killed writer leaves in a directory store: hidden temporary files, which no
    // listing shows; collected on the same age rule, per file.
    let abandoned = still_writing.join(".tmp-4242-1-log.csv.zst");
    let being_written = still_writing.join(".tmp-4243-1-xcom.csv.zst");
    for (temp, written_ago) in [(&abandoned, 2 * day), (&being_written, Duration::ZERO)] {
        std::fs::write(temp, b"half").expect("temp");
        age(temp, written_ago);
    }

    let dry = store_cmd(
        dir.path(),
        &store,
        &["--dry-run", "--output", "json", "prune", "--keep-last", "1"],
    );
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    let doc: Value = serde_json::from_str(&dry.stdout).expect("JSON");
    let ids = |key: &str| -> Vec<String> {
        doc[key]
            .as_array()
            .expect(key)
            .iter()
            .filter_map(|d| d["backup_id"].as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(ids("incomplete_removed"), vec!["20200101T000000.000Z-dead"]);
    assert_eq!(
        ids("incomplete_kept"),
        vec!["20200102T000000.000Z-busy".to_string(), young_id.clone()]
    );
    assert_eq!(doc["incomplete_removed"][0]["objects"], 2);
    assert!(old.join("job.csv.zst").exists(), "the dry run deleted");

    let out = store_cmd(dir.path(), &store, &["prune", "--keep-last", "1"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("removed incomplete backup (no manifest): 20200101T000000.000Z-dead"),
        "{}",
        out.stdout
    );
    assert!(!old.exists(), "the old incomplete backup stayed");
    assert!(
        out.stdout.contains("removed an abandoned partial write")
            && out.stdout.contains(".tmp-4242-1-log.csv.zst"),
        "{}",
        out.stdout
    );
    assert!(!abandoned.exists(), "the abandoned temporary file stayed");
    assert!(
        being_written.exists(),
        "a temporary file being written was removed"
    );
    assert!(still_writing.join("job.csv.zst").exists());
    assert!(young.join("job.csv.zst").exists());

    // A shorter age collects the young one too; below an hour is refused, changing nothing.
    let out = store_cmd(
        dir.path(),
        &store,
        &["prune", "--keep-last", "1", "--incomplete-after", "10m"],
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("DR_PRUNE_INCOMPLETE_AFTER"),
        "{}",
        out.stderr
    );
    assert!(young.join("job.csv.zst").exists());
}

/// Escape sequences in a manifest (environment name, DAG ids) reach the terminal as visible
/// escapes in text output; JSON keeps the value.
#[tokio::test]
async fn store_text_is_escaped_before_it_reaches_the_terminal() {
    let Some(bench) = Bench::get() else { return };
    let src = bench.airflow_db("esc_src", "2.10.3", true);
    let dst = bench.airflow_db("esc_dst", "2.10.3", false);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let id = backup(dir.path(), &store, &src);
    let evil = "prod\u{1b}]0;owned\u{7}\u{1b}[2J\u{9b}31m";
    edit_manifest(&store, &id, true, |doc| {
        doc["source"]["environment"] = evil.into();
        doc["active_dags"] = serde_json::json!([format!("dag\u{1b}[31m")]);
    });
    let raw = |s: &str| s.contains('\u{1b}') || s.contains('\u{9b}') || s.contains('\u{7}');

    let list = store_cmd(dir.path(), &store, &["list"]);
    assert_eq!(list.code, 0, "{}", list.stderr);
    assert!(!raw(&list.stdout), "{:?}", list.stdout);
    assert!(
        list.stdout
            .contains(r"prod\x1b]0;owned\x07\x1b[2J\u{9b}31m"),
        "{}",
        list.stdout
    );
    let json = store_cmd(dir.path(), &store, &["--output", "json", "list"]);
    let entries: Vec<Value> = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(entries[0]["environment"], evil);

    let out = store_cmd(dir.path(), &store, &["restore", "--db", &dst]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!raw(&out.stdout), "{:?}", out.stdout);
    assert!(out.stdout.contains(r"dag\x1b[31m"), "{}", out.stdout);
}
