//! backup, restore and cleanup with no database URL: the DR DAGs run in MWAA environments of
//! the stand-in, reached through the real SDK's InvokeRestApi.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::aws::{Aws, PRIMARY_REGION, SECONDARY_REGION};
use crate::common::{Run, mwaa_dr, run};

struct Remote {
    aws: Aws,
    primary: String,
    secondary: String,
    dir: tempfile::TempDir,
}

impl Remote {
    fn new(test: &str, version: &str, dags: Value) -> Option<Remote> {
        let aws = Aws::get(test)?;
        let r = Remote {
            primary: format!("primary-{}", aws.tag),
            secondary: format!("secondary-{}", aws.tag),
            dir: tempfile::tempdir().expect("tempdir"),
            aws,
        };
        for (region, name) in [
            (PRIMARY_REGION, &r.primary),
            (SECONDARY_REGION, &r.secondary),
        ] {
            r.aws.seed_environment(
                region,
                json!({"Name": name, "AirflowVersion": version, "Dags": dags}),
            );
            r.airflow(name, json!({"DagRunDuration": 1}));
        }
        Some(r)
    }

    fn airflow(&self, env: &str, body: Value) -> Value {
        self.aws
            .standin("POST", &format!("environments/{env}/airflow"), Some(body))
    }

    fn cmd(&self) -> assert_cmd::Command {
        let mut cmd = mwaa_dr(self.dir.path());
        self.aws.env(&mut cmd);
        cmd.arg("--store")
            .arg(self.dir.path().join("store"))
            .env("PRIMARY_MWAA_ENVIRONMENT_NAME", &self.primary)
            .env("SECONDARY_MWAA_ENVIRONMENT_NAME", &self.secondary)
            .env("STATE_MACHINE_TIMEOUT_MINS", "1");
        cmd
    }

    fn json(&self, args: &[&str]) -> (Run, Value) {
        let out = run(self.cmd().args(["--yes", "--output", "json"]).args(args));
        let doc = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
        (out, doc)
    }

    /// The InvokeRestApi calls `env` received, as (method, path, body).
    fn calls(&self, env: &str) -> Vec<(String, String, Value)> {
        self.aws
            .requests("InvokeRestApi", env)
            .into_iter()
            .map(|r| {
                (
                    r["body"]["Method"].as_str().unwrap_or("").to_string(),
                    r["body"]["Path"].as_str().unwrap_or("").to_string(),
                    r["body"]["Body"].clone(),
                )
            })
            .collect()
    }
}

fn dag(snapshot: &Value, dag_id: &str) -> Value {
    snapshot["Dags"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["dag_id"] == dag_id).cloned())
        .unwrap_or(Value::Null)
}

#[test]
fn backup_without_a_database_url_runs_the_backup_dag() {
    let Some(r) = Remote::new("remote_backup", "2.10.3", json!(["backup_metadata", "etl"])) else {
        return;
    };
    let (out, doc) = r.json(&["backup"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(doc["state"], "success", "{doc}");
    assert_eq!(doc["dag_id"], "backup_metadata");
    assert_eq!(doc["triggered"], true);
    let run_id = doc["dag_run_id"].as_str().unwrap_or("");
    assert!(
        run_id.starts_with("mwaa-dr__") && run_id.len() == "mwaa-dr__20240101T000000Z__abcd".len(),
        "{run_id}"
    );
    let snapshot = r.airflow(&r.primary, json!({}));
    assert_eq!(
        dag(&snapshot, "backup_metadata")["is_paused"],
        false,
        "unpaused before the trigger"
    );
    assert_eq!(
        dag(&snapshot, "etl")["is_paused"],
        true,
        "other DAGs untouched"
    );
    let triggers: Vec<_> = r
        .calls(&r.primary)
        .into_iter()
        .filter(|(m, p, _)| m == "POST" && p == "/dags/backup_metadata/dagRuns")
        .collect();
    assert_eq!(triggers.len(), 1, "one trigger");
    assert_eq!(triggers[0].2["dag_run_id"], run_id);
    assert!(
        triggers[0].2.get("logical_date").is_none(),
        "/api/v1 takes no logical_date key"
    );
    // Every path InvokeRestApi was given fits its 64-character limit; the report's does not,
    // and the output says so instead of failing a backup that succeeded.
    assert!(r.calls(&r.primary).iter().all(|(_, p, _)| p.len() <= 64));
    assert!(
        doc["report_note"].as_str().unwrap_or("").contains("64"),
        "{doc}"
    );
}

#[test]
fn restore_on_airflow_3_passes_its_conf_and_waits_for_the_dag_to_be_parsed() {
    let Some(r) = Remote::new("remote_restore_v3", "3.0.6", json!(["etl"])) else {
        return;
    };
    // The scheduler parses the restore DAG only after a while.
    let late = std::thread::spawn({
        let env = r.secondary.clone();
        let aws = Aws::get("remote_restore_v3").expect("bench");
        move || {
            std::thread::sleep(Duration::from_secs(3));
            aws.standin(
                "POST",
                &format!("environments/{env}/airflow"),
                Some(json!({"Dags": ["restore_metadata"]})),
            );
        }
    });
    let started = Instant::now();
    let (out, doc) = r.json(&[
        "restore",
        "--environment",
        &r.secondary,
        "--backup-id",
        "20240101T000000Z",
        "--clean",
    ]);
    late.join().expect("seeded late");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert_eq!(doc["state"], "success", "{doc}");
    let snapshot = r.airflow(&r.secondary, json!({}));
    let runs = snapshot["DagRuns"].as_array().cloned().unwrap_or_default();
    assert_eq!(runs.len(), 1, "{snapshot}");
    assert_eq!(
        runs[0]["conf"],
        json!({"backup_id": "20240101T000000Z", "clean": true, "variable_strategy": "APPEND", "connection_strategy": "APPEND"})
    );
    // /api/v2 needs the key (the stand-in answers 422 without it, as Airflow 3 does).
    assert!(
        r.calls(&r.secondary)
            .iter()
            .any(|(m, _, b)| m == "POST" && b.get("logical_date") == Some(&Value::Null))
    );
}

#[test]
fn cleanup_retries_server_errors_and_throttling() {
    let Some(r) = Remote::new("remote_retry", "2.10.3", json!(["cleanup_metadata"])) else {
        return;
    };
    for error in ["RestApiServerException", "ThrottlingException"] {
        r.aws.standin(
            "POST",
            "faults",
            Some(json!({"Operation": "InvokeRestApi", "Error": error, "Count": 2, "Name": r.secondary})),
        );
    }
    let (out, doc) = r.json(&["cleanup"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(doc["state"], "success", "{doc}");
    assert_eq!(doc["dag_id"], "cleanup_metadata");
}

#[test]
fn a_failed_run_fails_the_command_naming_the_run() {
    let Some(r) = Remote::new("remote_failed", "2.10.3", json!(["backup_metadata"])) else {
        return;
    };
    r.airflow(&r.primary, json!({"DagRunOutcome": "failed"}));
    let (out, _) = r.json(&["backup"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("ended failed"), "{}", out.stderr);
    assert!(out.stderr.contains("mwaa-dr__"), "{}", out.stderr);
}

#[test]
fn a_permission_error_names_the_missing_permission() {
    let Some(r) = Remote::new("remote_denied", "2.10.3", json!(["backup_metadata"])) else {
        return;
    };
    r.aws.standin(
        "POST",
        "faults",
        Some(json!({"Operation": "InvokeRestApi", "Error": "AccessDeniedException", "Count": 5, "Name": r.primary})),
    );
    let (out, _) = r.json(&["backup"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("airflow:InvokeRestApi"),
        "{}",
        out.stderr
    );
}
