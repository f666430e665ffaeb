//! Reports of DR DAG runs: `runs/<dag_id>/<run_id>.json`, the final JSON document (report or
//! error) that `backup`, `restore` and `cleanup` write when they run as the task of a DR DAG
//! (`MWAA_DR_DAG_RUN=<dag_id>/<run_id>`). A caller outside MWAA reads it here, because
//! InvokeRestApi's 64-character Path cannot reach the task's XCom or log.
//!
//! Ids are escaped into one key segment each: bytes other than ASCII letters, digits, `_`, `-`
//! and `.` become `%XX` (upper-case hex), and so does a leading `.`, so no id can climb out of
//! its folder. `manual__2024-01-01T00:00:00+00:00` becomes
//! `manual__2024-01-01T00%3A00%3A00%2B00%3A00`.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{BackupStore, ObjectInfo};
use crate::error::{Error, Result};

pub const RUNS_PREFIX: &str = "runs/";

/// The longest key written: S3 refuses keys over 1024 bytes.
const MAX_KEY: usize = 1024;

pub use crate::model::DagRunRef;

/// The key of `run`'s report.
pub fn key(run: &DagRunRef) -> Result<String> {
    let key = format!(
        "{RUNS_PREFIX}{}/{}.json",
        escape(&run.dag_id),
        escape(&run.run_id)
    );
    if key.len() > MAX_KEY {
        return Err(Error::failed(
            "name the run's report",
            format!("run {} of DAG {}", run.run_id, run.dag_id),
            format!(
                "its escaped key has {} bytes and a store key holds at most {MAX_KEY}",
                key.len()
            ),
        ));
    }
    Ok(key)
}

fn escape(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for (i, b) in id.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
        if plain {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Writes the run's report. A task retried by Airflow writes again under the same run: the
/// last try's document replaces the earlier one (the only key of the store ever replaced).
pub async fn save(store: &dyn BackupStore, run: &DagRunRef, doc: &Value) -> Result<String> {
    let key = key(run)?;
    let body =
        serde_json::to_vec_pretty(doc).map_err(|e| Error::failed("write the report", &key, e))?;
    if store.exists(&key).await? {
        store.delete(&key).await?;
    }
    store.put_bytes(&key, &body).await?;
    Ok(key)
}

/// The run's report; `None` when the task wrote none.
pub async fn load(store: &dyn BackupStore, run: &DagRunRef) -> Result<Option<Value>> {
    let key = key(run)?;
    if !store.exists(&key).await? {
        return Ok(None);
    }
    let bytes = store.get_bytes(&key).await?;
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        Error::failed(
            "read the report of a DR DAG run",
            format!("{}/{key}", store.describe()),
            format!("not JSON: {e}"),
        )
    })
}

/// Every report with its last write (`None` where the store cannot tell).
pub async fn reports(store: &dyn BackupStore) -> Result<Vec<(ObjectInfo, Option<DateTime<Utc>>)>> {
    let mut out = Vec::new();
    for object in store.list(RUNS_PREFIX).await? {
        if !object.key.ends_with(".json") {
            continue;
        }
        let modified = store.modified(&object.key).await?;
        out.push((object, modified));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::local::LocalStore;

    #[test]
    fn keys_escape_what_could_leave_the_folder() {
        let key_of = |dag: &str, run: &str| {
            key(&DagRunRef {
                dag_id: dag.into(),
                run_id: run.into(),
            })
            .expect("key")
        };
        assert_eq!(
            key_of("backup_metadata", "mwaa-dr__20240506T070809Z__ab12"),
            "runs/backup_metadata/mwaa-dr__20240506T070809Z__ab12.json"
        );
        assert_eq!(
            key_of("a.b", "manual__2024-01-01T00:00:00+00:00"),
            "runs/a.b/manual__2024-01-01T00%3A00%3A00%2B00%3A00.json"
        );
        assert_eq!(key_of("..", "../x"), "runs/%2E./%2E.%2Fx.json");
        let long = DagRunRef {
            dag_id: "d".into(),
            run_id: "/".repeat(400),
        };
        assert!(
            key(&long)
                .expect_err("too long")
                .to_string()
                .contains("1024")
        );
    }

    #[tokio::test]
    async fn a_retried_task_replaces_its_report() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path().to_path_buf());
        let run = DagRunRef::parse("cleanup_metadata/r1").expect("parse");
        assert_eq!(load(&store, &run).await.expect("load"), None);
        save(&store, &run, &serde_json::json!({"try": 1}))
            .await
            .expect("save");
        save(&store, &run, &serde_json::json!({"try": 2}))
            .await
            .expect("save again");
        assert_eq!(
            load(&store, &run).await.expect("load"),
            Some(serde_json::json!({"try": 2}))
        );
        assert_eq!(reports(&store).await.expect("reports").len(), 1);
    }
}
