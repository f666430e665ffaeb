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
            // The stand-in writes the task's report where the binary would: the store.
            r.airflow(
                name,
                json!({"DagRunDuration": 1, "ReportStore": r.dir.path().join("store")}),
            );
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
        self.json_with(args, &[])
    }

    fn json_with(&self, args: &[&str], env: &[(&str, &str)]) -> (Run, Value) {
        let mut cmd = self.cmd();
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = run(cmd.args(["--yes", "--output", "json"]).args(args));
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
    r.airflow(
        &r.primary,
        json!({"Reports": {"backup_metadata": {"backup_id": "20240101T000000Z", "rows": 7}}}),
    );
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
    // Every path InvokeRestApi was given fits its 64-character limit; the report comes from
    // the store, where the task wrote it.
    assert!(r.calls(&r.primary).iter().all(|(_, p, _)| p.len() <= 64));
    assert_eq!(
        doc["report"],
        json!({"backup_id": "20240101T000000Z", "rows": 7}),
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
    r.airflow(
        &r.primary,
        json!({"DagRunOutcome": "failed", "TaskErrors": {"backup_metadata": "backup failed on db:5432/airflow: the disk is full"}}),
    );
    let (out, _) = r.json(&["backup"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("ended failed"), "{}", out.stderr);
    assert!(out.stderr.contains("mwaa-dr__"), "{}", out.stderr);
    // The task's own error, from the report it wrote to the store.
    assert!(out.stderr.contains("the disk is full"), "{}", out.stderr);
}

#[test]
fn a_run_that_failed_before_writing_its_report_says_where_its_log_is() {
    let Some(r) = Remote::new("remote_no_report", "2.10.3", json!(["cleanup_metadata"])) else {
        return;
    };
    // The binary never ran (not installed): no report reaches the store.
    r.airflow(
        &r.secondary,
        json!({"DagRunOutcome": "failed", "ReportStore": null}),
    );
    let (out, _) = r.json(&["cleanup"]);
    assert_ne!(out.code, 0);
    for needle in [
        "ended failed",
        "mwaa-dr__",
        "before writing its report",
        "runs/cleanup_metadata/mwaa-dr__",
        &format!("airflow-{}-Task", r.secondary),
        "Airflow UI",
    ] {
        assert!(out.stderr.contains(needle), "{needle}: {}", out.stderr);
    }
}

#[test]
fn a_long_dag_id_is_followed_through_the_run_list() {
    // /dags/<this id>/dagRuns/<run id> is longer than InvokeRestApi's 64-character Path;
    // /dags/<this id>/dagRuns is not.
    let dag = "restore_metadata_of_the_analytics_team";
    let Some(r) = Remote::new("remote_long_id", "3.0.6", json!([dag])) else {
        return;
    };
    let (out, doc) = r.json_with(
        &["restore", "--environment", &r.secondary],
        &[("METADATA_IMPORT_DAG_NAME", dag)],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(doc["state"], "success", "{doc}");
    let calls = r.calls(&r.secondary);
    assert!(calls.iter().all(|(_, p, _)| p.len() <= 64), "{calls:?}");
    assert!(
        calls.iter().any(|(m, p, b)| m == "POST"
            && p == "/dags/~/dagRuns/list"
            && b["dag_ids"] == json!([dag])),
        "{calls:?}"
    );
    // A DAG id too long even to trigger is refused before anything is changed.
    let too_long = "restore_metadata_of_the_analytics_and_finance_teams";
    let (out, _) = r.json_with(
        &["restore", "--environment", &r.secondary],
        &[("METADATA_IMPORT_DAG_NAME", too_long)],
    );
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("at most 64") && out.stderr.contains("METADATA_IMPORT_DAG_NAME"),
        "{}",
        out.stderr
    );
    assert_eq!(
        r.calls(&r.secondary).len(),
        calls.len(),
        "no call for the refused DAG"
    );
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

/// What the DR DAG's task leaves for callers outside MWAA: with MWAA_DR_DAG_RUN set, the
/// binary writes its final document to the store as runs/<dag_id>/<run_id>.json, on success
/// and on failure, and a report it cannot write changes nothing about its exit code.
#[test]
fn a_dr_task_writes_its_report_or_its_error_to_the_store() {
    let Some(pg) = crate::pg::Bench::get() else {
        return;
    };
    let db = pg.airflow_db("task_report", "2.10.3", true);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let task = |dag_run: &str, args: &[&str], store: &std::path::Path| {
        run(mwaa_dr(dir.path())
            .env("MWAA_DR_DAG_RUN", dag_run)
            .arg("--store")
            .arg(store)
            .args(["--output", "json", "--yes"])
            .args(args))
    };
    let read = |key: &str| -> Value {
        serde_json::from_slice(&std::fs::read(store.join(key)).expect("report written"))
            .expect("JSON")
    };
    // Success: the report is the document printed on stdout.
    let out = task(
        "cleanup_metadata/manual__2024-01-01T00:00:00+00:00",
        &["cleanup", "--db", &db],
        &store,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let printed: Value = serde_json::from_str(&out.stdout).expect("stdout JSON");
    let report = read("runs/cleanup_metadata/manual__2024-01-01T00%3A00%3A00%2B00%3A00.json");
    assert_eq!(report, printed);
    assert!(report["tables"].is_array(), "{report}");
    // Failure: the JSON error, kind, class, retryable and message.
    let out = task(
        "restore_metadata/mwaa-dr__20240101T000000Z__abcd",
        &[
            "restore",
            "--db",
            &db,
            "--backup-id",
            "20200101T000000Z-0000",
        ],
        &store,
    );
    assert_ne!(out.code, 0);
    let error = read("runs/restore_metadata/mwaa-dr__20240101T000000Z__abcd.json");
    for field in ["kind", "class", "retryable", "message"] {
        assert!(error["error"].get(field).is_some(), "{field}: {error}");
    }
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("20200101T000000Z-0000"),
        "{error}"
    );
    // A report that cannot be written is a warning; the command's outcome stands.
    let blocked = dir.path().join("file-not-dir");
    std::fs::write(&blocked, b"x").expect("write");
    let out = task("cleanup_metadata/r2", &["cleanup", "--db", &db], &blocked);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("was not written to the store"),
        "{}",
        out.stderr
    );
    // A value that names no run is refused before anything runs: a cleanup that cannot tell
    // its own run's rows would delete them.
    let out = task("no-slash", &["cleanup", "--db", &db], &store);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("MWAA_DR_DAG_RUN") && out.stderr.contains("<dag_id>/<run_id>"),
        "{}",
        out.stderr
    );
}

/// A real Airflow REST server (2.x webserver or 3.x api-server) on SQLite, with the cleanup
/// DAG parsed; stopped with its process group when dropped.
struct RealAirflow {
    child: std::process::Child,
    base: String,
    _home: tempfile::TempDir,
}

impl Drop for RealAirflow {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = std::process::Command::new("kill")
            .args(["-TERM", "--", &group])
            .status();
        // Airflow 2's webserver can outwait a TERM behind gunicorn's graceful shutdown.
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if self.child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &group])
            .status();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl RealAirflow {
    fn start(version: &str) -> Option<RealAirflow> {
        use std::os::unix::process::CommandExt;
        let venv = crate::airflow_cli::airflow_venv(version)?;
        let home = tempfile::tempdir().expect("tempdir");
        let dags = home.path().join("dags");
        std::fs::create_dir_all(&dags).expect("dags folder");
        let v3 = version.starts_with("3.");
        let imports = if v3 {
            "from airflow.sdk import DAG\nfrom airflow.providers.standard.operators.empty import EmptyOperator\n"
        } else {
            "from airflow import DAG\nfrom airflow.operators.empty import EmptyOperator\n"
        };
        std::fs::write(
            dags.join("cleanup_metadata.py"),
            format!("{imports}with DAG(\"cleanup_metadata\", schedule=None, catchup=False):\n    EmptyOperator(task_id=\"mwaa_dr\")\n"),
        )
        .expect("DAG file");
        let port = free_port();
        let airflow = |args: &[&str]| {
            let mut cmd = std::process::Command::new(venv.join("bin/airflow"));
            cmd.env_clear()
                .args(args)
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("HOME", home.path())
                .env("AIRFLOW_HOME", home.path())
                .env("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
                .env("AIRFLOW__CORE__DAGS_FOLDER", &dags)
                .env(
                    "AIRFLOW__API__AUTH_BACKENDS",
                    "airflow.api.auth.backend.basic_auth",
                )
                .env("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin")
                .env(
                    "AIRFLOW__API_AUTH__JWT_SECRET",
                    "mwaa-dr-test-jwt-secret-0123456789",
                )
                // Airflow 3.0.6 cannot sign a login token without an issuer.
                .env("AIRFLOW__API_AUTH__JWT_ISSUER", "mwaa-dr-test")
                .env("PYTHONWARNINGS", "ignore");
            cmd
        };
        let ok = |mut cmd: std::process::Command, what: &str| {
            let out = cmd.output().expect("airflow runs");
            assert!(
                out.status.success(),
                "airflow {what}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ok(airflow(&["db", "migrate"]), "db migrate");
        ok(airflow(&["dags", "reserialize"]), "dags reserialize");
        let port_text = port.to_string();
        let mut server = if v3 {
            airflow(&[
                "api-server",
                "--host",
                "127.0.0.1",
                "--port",
                &port_text,
                "--workers",
                "1",
            ])
        } else {
            ok(
                airflow(&[
                    "users",
                    "create",
                    "--username",
                    "admin",
                    "--password",
                    "admin",
                    "--role",
                    "Admin",
                    "--email",
                    "admin@example.com",
                    "--firstname",
                    "a",
                    "--lastname",
                    "b",
                ]),
                "users create",
            );
            airflow(&[
                "webserver",
                "--hostname",
                "127.0.0.1",
                "--port",
                &port_text,
                "--workers",
                "1",
            ])
        };
        let log = std::fs::File::create(home.path().join("server.log")).expect("log");
        let child = server
            .process_group(0)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("server starts");
        let api = if v3 { "api/v2" } else { "api/v1" };
        let mut real = RealAirflow {
            child,
            base: String::new(),
            _home: home,
        };
        let started = Instant::now();
        let url = format!("http://127.0.0.1:{port}/{api}/version");
        while started.elapsed() < Duration::from_secs(180) {
            let code = std::process::Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &url])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            if code != "000" && !code.is_empty() {
                break;
            }
            assert!(
                real.child.try_wait().ok().flatten().is_none(),
                "the Airflow {version} server exited: {}",
                std::fs::read_to_string(real._home.path().join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        // Airflow 3's simple auth manager writes the generated password of each user.
        let password = if v3 {
            let file = real
                ._home
                .path()
                .join("simple_auth_manager_passwords.json.generated");
            let doc: Value =
                serde_json::from_slice(&std::fs::read(file).expect("passwords")).expect("JSON");
            doc["admin"].as_str().expect("admin's password").to_string()
        } else {
            "admin".into()
        };
        real.base = format!("http://admin:{password}@127.0.0.1:{port}/{api}");
        Some(real)
    }
}

/// The stand-in's proxy to a REAL Airflow: mwaa-dr's client reads the DAG, unpauses it and
/// triggers a run through InvokeRestApi, against the 2.10.3 webserver (basic auth) and the
/// 3.0.6 api-server (a JWT from /auth/token). No scheduler runs: the run stays queued, and
/// Ctrl-C leaves it to Airflow.
#[test]
fn the_standin_proxies_to_real_airflow_2_and_3() {
    for version in ["2.10.3", "3.0.6"] {
        let Some(r) = Remote::new(
            &format!("remote_real_{}", &version[..1]),
            version,
            json!([]),
        ) else {
            return;
        };
        let Some(real) = RealAirflow::start(version) else {
            return;
        };
        r.airflow(&r.secondary, json!({"AirflowApi": real.base}));
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("mwaa-dr"));
        cmd.env_clear()
            .current_dir(r.dir.path())
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        for (name, value) in r.aws.vars() {
            cmd.env(name, value);
        }
        let child = cmd
            .arg("--store")
            .arg(r.dir.path().join("store"))
            .args(["-v", "--yes", "cleanup", "--environment", &r.secondary])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("mwaa-dr starts");
        // Stop following once the run exists in Airflow.
        let started = Instant::now();
        let triggered = loop {
            let calls = r.calls(&r.secondary);
            if calls
                .iter()
                .any(|(m, p, _)| m == "GET" && p.starts_with("/dags/cleanup_metadata/dagRuns/"))
                && calls.iter().filter(|(m, _, _)| m == "POST").count() == 1
            {
                break true;
            }
            if started.elapsed() > Duration::from_secs(60) {
                break false;
            }
            std::thread::sleep(Duration::from_millis(300));
        };
        let _ = std::process::Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let out = child.wait_with_output().expect("mwaa-dr ends");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(triggered, "Airflow {version}: {stderr}");
        assert!(
            stderr.contains("keeps going in Airflow"),
            "Airflow {version}: {stderr}"
        );
        let calls = r.calls(&r.secondary);
        let patched = calls.iter().any(|(m, p, b)| {
            m == "PATCH" && p == "/dags/cleanup_metadata" && b["is_paused"] == false
        });
        assert!(patched, "Airflow {version}: {calls:?}");
        let run_id = stderr
            .split("run=")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or_default()
            .to_string();
        // The run id came back from the real server's answers to the trigger and the follow.
        assert!(
            run_id.starts_with("mwaa-dr__"),
            "Airflow {version}: {stderr}"
        );
        drop(real);
    }
}
