//! Failover progress in the store, append-only: `failover/<run>/started.json`, one object per
//! finished step, one per failed attempt, and `done.json`. A run without `done.json` is
//! resumed by the next `mwaa-dr failover`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::StepKind;
use crate::error::{Error, Result};
use crate::model::DrType;
use crate::model::StepOutcome;
use crate::store::BackupStore;

const PREFIX: &str = "failover/";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Started {
    pub run_id: String,
    pub dr_type: DrType,
    pub started_at: DateTime<Utc>,
}

/// One step's outcome, as the timeline shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: StepKind,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// `ok` or `failed`: a skipped step is not recorded again.
    pub outcome: StepOutcome,
    pub details: String,
}

pub struct FailoverRun {
    pub started: Started,
    /// Finished steps, in order, and failed attempts.
    pub records: Vec<StepRecord>,
    pub resumed: bool,
}

impl FailoverRun {
    pub fn is_done(&self, step: StepKind) -> bool {
        self.records
            .iter()
            .any(|r| r.step == step && r.outcome != StepOutcome::Failed)
    }

    fn key(&self, name: &str) -> String {
        format!("{PREFIX}{}/{name}", self.started.run_id)
    }

    pub async fn record(&mut self, store: &dyn BackupStore, record: StepRecord) -> Result<()> {
        let name = format!(
            "{}-{}-{}.json",
            record.finished_at.format("%Y%m%dT%H%M%S%.6fZ"),
            record.step.as_str(),
            record.outcome
        );
        let body = serde_json::to_vec_pretty(&record)
            .map_err(|e| Error::failed("record failover step", &name, e))?;
        store
            .put_bytes(&self.key(&format!("steps/{name}")), &body)
            .await?;
        self.records.push(record);
        Ok(())
    }

    pub async fn finish(&self, store: &dyn BackupStore, at: DateTime<Utc>) -> Result<()> {
        let body = serde_json::to_vec(&serde_json::json!({ "finished_at": at }))
            .map_err(|e| Error::failed("record failover end", &self.started.run_id, e))?;
        store.put_bytes(&self.key("done.json"), &body).await?;
        Ok(())
    }
}

/// The unfinished run to resume, if any.
pub async fn unfinished(store: &dyn BackupStore) -> Result<Option<FailoverRun>> {
    let objects = store.list(PREFIX).await?;
    let mut runs: Vec<String> = objects
        .iter()
        .filter_map(|o| {
            o.key
                .strip_prefix(PREFIX)?
                .split_once('/')
                .map(|(id, _)| id.to_string())
        })
        .collect();
    runs.sort();
    runs.dedup();
    let Some(run_id) = runs.pop() else {
        return Ok(None);
    };
    let has = |name: &str| {
        objects
            .iter()
            .any(|o| o.key == format!("{PREFIX}{run_id}/{name}"))
    };
    if has("done.json") || !has("started.json") {
        return Ok(None);
    }
    let started: Started = serde_json::from_slice(
        &store
            .get_bytes(&format!("{PREFIX}{run_id}/started.json"))
            .await?,
    )
    .map_err(|e| Error::failed("read failover state", &run_id, e))?;
    let mut records = Vec::new();
    for object in objects
        .iter()
        .filter(|o| o.key.starts_with(&format!("{PREFIX}{run_id}/steps/")))
    {
        let record: StepRecord = serde_json::from_slice(&store.get_bytes(&object.key).await?)
            .map_err(|e| Error::failed("read failover state", &object.key, e))?;
        records.push(record);
    }
    records.sort_by_key(|r| r.finished_at);
    Ok(Some(FailoverRun {
        started,
        records,
        resumed: true,
    }))
}

/// A run's id: its start time to the millisecond, sortable as text.
fn run_id_at(at: DateTime<Utc>) -> String {
    at.format("%Y%m%dT%H%M%S%3fZ").to_string()
}

/// Starts a new run.
pub async fn start(
    store: &dyn BackupStore,
    dr_type: DrType,
    now: DateTime<Utc>,
) -> Result<FailoverRun> {
    // Milliseconds, and the next free one: a failover started in the same second (or
    // millisecond) as the one before it must not collide with that run's record.
    let mut at = now;
    let mut run_id = run_id_at(at);
    while !store.list(&format!("{PREFIX}{run_id}/")).await?.is_empty() {
        at += chrono::Duration::milliseconds(1);
        run_id = run_id_at(at);
    }
    let started = Started {
        run_id,
        dr_type,
        started_at: now,
    };
    let body = serde_json::to_vec_pretty(&started)
        .map_err(|e| Error::failed("record failover start", &started.run_id, e))?;
    store
        .put_bytes(&format!("{PREFIX}{}/started.json", started.run_id), &body)
        .await?;
    Ok(FailoverRun {
        started,
        records: Vec::new(),
        resumed: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Step records as the store holds them from earlier versions must keep reading back,
    /// and be written the same way, or a resumed failover would repeat finished steps.
    #[test]
    fn step_records_written_before_the_outcome_enum_read_back_unchanged() {
        let written = [
            r#"{
  "step": "create_secondary_environment",
  "started_at": "2024-05-01T10:00:00.123456789Z",
  "finished_at": "2024-05-01T10:00:02.500Z",
  "outcome": "ok",
  "details": "CreateEnvironment accepted from environments/prim/x.json: arn:aws:airflow:sec"
}"#,
            r#"{
  "step": "wait_secondary_available",
  "started_at": "2024-05-01T10:00:03Z",
  "finished_at": "2024-05-01T10:30:03Z",
  "outcome": "failed",
  "details": "status CREATE_FAILED"
}"#,
        ];
        let records: Vec<StepRecord> = written
            .iter()
            .map(|json| serde_json::from_str(json).expect("an older step record"))
            .collect();
        assert_eq!(records[0].outcome, StepOutcome::Ok);
        assert_eq!(records[1].outcome, StepOutcome::Failed);
        for (record, json) in records.iter().zip(written) {
            let again: serde_json::Value = serde_json::to_value(record).expect("serialise");
            let before: serde_json::Value = serde_json::from_str(json).expect("json");
            assert_eq!(again, before);
        }
        let run = FailoverRun {
            started: Started {
                run_id: "20240501T100000Z".into(),
                dr_type: DrType::BackupRestore,
                started_at: records[0].started_at,
            },
            records,
            resumed: true,
        };
        assert!(run.is_done(StepKind::CreateSecondaryEnvironment));
        assert!(!run.is_done(StepKind::WaitSecondaryAvailable));
    }

    #[tokio::test]
    async fn failovers_started_in_the_same_millisecond_get_their_own_runs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::local::LocalStore::new(dir.path().to_path_buf());
        let at = DateTime::parse_from_rfc3339("2024-05-01T10:00:00.250Z")
            .expect("a time")
            .with_timezone(&Utc);
        let first = start(&store, DrType::WarmStandby, at).await.expect("first");
        first.finish(&store, at).await.expect("finish");
        let second = start(&store, DrType::WarmStandby, at)
            .await
            .expect("second");
        assert_eq!(first.started.run_id, "20240501T100000250Z");
        assert_eq!(second.started.run_id, "20240501T100000251Z");
        let resumed = unfinished(&store)
            .await
            .expect("read")
            .expect("the second run");
        assert_eq!(resumed.started.run_id, second.started.run_id);
    }
}
