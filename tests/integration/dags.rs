//! `mwaa-dr dags render`: the DAG files hold no secret and import on every Airflow version the
//! suite installs; the startup script installs the binary from S3 (moto) only when its
//! checksum matches.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::airflow_cli::airflow_venv;
use crate::aws::Aws;
use crate::common::{mwaa_dr, run};

const PASSWORD: &str = "s3cr3t-pw-in-url";
const FERNET: &str = "dGhpcy1pcy1hLXRlc3Qta2V5LW9mLTMyLWJ5dGVzISE=";
const OTHER_FERNET: &str = "YW5vdGhlci10ZXN0LWtleS1vZi0zMi1ieXRlcyEhISE=";

/// Renders into `dir/out` with every kind of secret set, and returns the folder.
fn render(dir: &Path, binary_uri: &str, sha: &str) -> PathBuf {
    let out = dir.join("out");
    let r = run(mwaa_dr(dir)
        .args(["dags", "render", "--out"])
        .arg(&out)
        .args(["--binary-uri", binary_uri, "--binary-sha256", sha])
        .env("DR_BACKUP_STORE", "s3://dr-bucket/backups")
        .env("PRIMARY_REGION", "us-east-1")
        .env("METADATA_EXPORT_DAG_NAME", "dr_backup")
        .env("PRIMARY_BACKUP_SCHEDULE", "@daily")
        .env("DR_SNS_TOPIC_ARN", TOPIC)
        .env(
            "PRIMARY_DB_URL",
            format!("postgresql://airflow:{PASSWORD}@primary/db"),
        )
        .env(
            "SECONDARY_DB_URL",
            format!("postgresql://airflow:{PASSWORD}@standby/db"),
        )
        .env(
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
            format!("postgresql+psycopg2://airflow:{PASSWORD}@worker/db?sslmode=require"),
        )
        .env("AIRFLOW__CORE__FERNET_KEY", FERNET)
        .env("PRIMARY_FERNET_KEY", FERNET)
        .env("SECONDARY_FERNET_KEY", OTHER_FERNET));
    assert_eq!(r.code, 0, "render failed: {}", r.stderr);
    out
}

#[test]
fn rendered_dags_carry_the_settings_and_no_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = render(dir.path(), "s3://tools/mwaa-dr", &"ab".repeat(32));
    let mut names: Vec<_> = std::fs::read_dir(&out)
        .expect("out")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "cleanup_metadata.py",
            "dr_backup.py",
            "restore_metadata.py",
            "startup.sh"
        ]
    );
    for name in &names {
        let text = std::fs::read_to_string(out.join(name)).expect("read");
        for secret in [PASSWORD, FERNET, OTHER_FERNET] {
            assert!(!text.contains(secret), "{name} holds a secret");
        }
    }
    let backup = std::fs::read_to_string(out.join("dr_backup.py")).expect("read");
    assert!(backup.contains("s3://dr-bucket/backups"), "{backup}");
    assert!(backup.contains("schedule=\"@daily\""), "{backup}");
    // A failed scheduled backup notifies the topic from the worker.
    assert!(backup.contains(TOPIC), "{backup}");
}

const TOPIC: &str = "arn:aws:sns:us-east-2:123456789012:mwaa-dr";

/// Imports the rendered DAGs with Airflow's own DagBag; no import error, no warning raised
/// from the DAG files themselves.
fn dags_import(version: &str) {
    let venv = airflow_venv(version).expect("venv");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = render(dir.path(), "s3://tools/mwaa-dr", &"ab".repeat(32));
    let script = r#"
import json, sys, warnings
folder = sys.argv[1]
caught = []
warnings.simplefilter("always")
def show(message, category, filename, lineno, file=None, line=None):
    if filename.startswith(folder):
        caught.append(f"{filename}:{lineno}: {category.__name__}: {message}")
warnings.showwarning = show
from airflow.models.dagbag import DagBag
bag = DagBag(folder, include_examples=False)
print(json.dumps({
    "dags": {d.dag_id: [t.task_id for t in d.tasks] for d in bag.dags.values()},
    "errors": bag.import_errors,
    "warnings": caught,
}))
"#;
    let home = dir.path().join("airflow");
    let output = Command::new(venv.join("bin/python"))
        .arg("-c")
        .arg(script)
        .arg(&out)
        .env("AIRFLOW_HOME", &home)
        .env("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let doc: serde_json::Value = serde_json::from_str(last).unwrap_or_else(|e| {
        panic!(
            "no DagBag report ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert_eq!(
        doc["errors"],
        serde_json::json!({}),
        "import errors on {version}"
    );
    assert_eq!(
        doc["warnings"],
        serde_json::json!([]),
        "warnings on {version}"
    );
    for dag in ["dr_backup", "restore_metadata", "cleanup_metadata"] {
        assert_eq!(
            doc["dags"][dag],
            serde_json::json!(["mwaa_dr"]),
            "{dag} on {version}"
        );
    }
}

#[test]
fn rendered_dags_import_on_airflow_2_4_3() {
    dags_import("2.4.3");
}

#[test]
fn rendered_dags_import_on_airflow_2_10_3() {
    dags_import("2.10.3");
}

#[test]
fn rendered_dags_import_on_airflow_3_0_6() {
    dags_import("3.0.6");
}

/// The moto venv's bin folder: its python3 has boto3, as every MWAA image's has.
fn python_with_boto3() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .expect("HOME or XDG_CACHE_HOME");
    let bin = cache.join("mwaa-dr/venvs/moto-5.2.5/bin");
    assert!(
        bin.join("python3").is_file(),
        "{} is needed (scripts/testbench.sh makes it)",
        bin.display()
    );
    bin
}

/// Runs `bash -c 'source startup.sh && echo "$MWAA_DR_BIN"'` as MWAA does, with moto as S3.
fn source_startup(aws: &Aws, script: &Path) -> std::process::Output {
    let path = format!(
        "{}:{}",
        python_with_boto3().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(r#"source "$1" && echo "MWAA_DR_BIN=$MWAA_DR_BIN" && command -v mwaa-dr"#)
        .arg("startup")
        .arg(script)
        .env("PATH", path);
    for (name, value) in aws.vars() {
        cmd.env(name, value);
    }
    cmd.output().expect("bash runs")
}

#[test]
fn startup_script_installs_a_matching_binary_and_refuses_another() {
    let Some(aws) = Aws::get("startup_script") else {
        return;
    };
    let binary = std::fs::read(env!("CARGO_BIN_EXE_mwaa-dr")).expect("binary");
    let bucket = format!("tools-{}", aws.tag).to_lowercase();
    let upload = Command::new(python_with_boto3().join("python3"))
        .arg("-c")
        .arg(
            "import boto3, sys; s3 = boto3.client('s3'); s3.create_bucket(Bucket=sys.argv[1]); \
             s3.upload_file(sys.argv[2], sys.argv[1], 'bin/mwaa-dr')",
        )
        .arg(&bucket)
        .arg(env!("CARGO_BIN_EXE_mwaa-dr"))
        .envs(aws.vars())
        .output()
        .expect("python runs");
    assert!(
        upload.status.success(),
        "{}",
        String::from_utf8_lossy(&upload.stderr)
    );
    let uri = format!("s3://{bucket}/bin/mwaa-dr");
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&binary))
    };

    // A checksum that is not the binary's: refused, both named, nothing installed.
    let dir = tempfile::tempdir().expect("tempdir");
    let install = dir.path().join("mwaa-dr/bin/mwaa-dr");
    let wrong = "0".repeat(64);
    let out = dir.path().join("out");
    let r = run(mwaa_dr(dir.path())
        .args(["dags", "render", "--store", "s3://dr/backups", "--out"])
        .arg(&out)
        .args([
            "--binary-uri",
            &uri,
            "--binary-sha256",
            &wrong,
            "--install-path",
        ])
        .arg(&install));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let refused = source_startup(&aws, &out.join("startup.sh"));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "a mismatched binary was accepted"
    );
    assert!(stderr.contains(&sha) && stderr.contains(&wrong), "{stderr}");
    assert!(!install.exists(), "a refused binary was installed");
    assert!(crate::common::files_under(&dir.path().join("mwaa-dr")).is_empty());

    // The binary's own checksum (from --binary-file): installed, on PATH, MWAA_DR_BIN set.
    let r = run(mwaa_dr(dir.path())
        .args(["dags", "render", "--store", "s3://dr/backups", "--out"])
        .arg(&out)
        .args([
            "--binary-uri",
            &uri,
            "--binary-file",
            env!("CARGO_BIN_EXE_mwaa-dr"),
        ])
        .arg("--install-path")
        .arg(&install));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let installed = source_startup(&aws, &out.join("startup.sh"));
    let stdout = String::from_utf8_lossy(&installed.stdout);
    assert!(
        installed.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&installed.stderr)
    );
    assert!(
        stdout.contains(&format!("MWAA_DR_BIN={}", install.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&install.display().to_string()),
        "not on PATH: {stdout}"
    );
    assert_eq!(std::fs::read(&install).expect("installed"), binary);
    let version = Command::new(&install)
        .arg("--version")
        .output()
        .expect("runs");
    assert!(version.status.success());
}

/// Inside an MWAA container with only MWAA's raw variables, `backup` reaches the database
/// they describe; `sslmode` is honoured: `require` against a server without TLS connects to
/// nothing.
#[test]
fn a_worker_reaches_the_database_through_mwaas_raw_variables() {
    let Some(bench) = crate::pg::Bench::get() else {
        return;
    };
    let db = bench.airflow_db("mwaa_raw", "2.10.3", true);
    let parsed = url::Url::parse(&db).expect("bench URL");
    let credentials = serde_json::json!({
        "username": parsed.username(),
        "password": parsed.password().unwrap_or_default(),
    })
    .to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let backup = |sslmode: &str| {
        run(mwaa_dr(dir.path())
            .arg("--store")
            .arg(dir.path().join("store"))
            .args(["--output", "json", "backup"])
            .env("MWAA__DB__POSTGRES_HOST", parsed.host_str().expect("host"))
            .env(
                "MWAA__DB__POSTGRES_PORT",
                parsed.port().unwrap_or(5432).to_string(),
            )
            .env(
                "MWAA__DB__POSTGRES_DB",
                parsed.path().trim_start_matches('/'),
            )
            .env("MWAA__DB__POSTGRES_SSLMODE", sslmode)
            .env("MWAA__DB__CREDENTIALS", &credentials))
    };
    let r = backup("prefer");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let report: serde_json::Value = serde_json::from_str(&r.stdout).expect("report");
    assert!(report["backup_id"].is_string(), "{report}");
    let r = backup("require");
    assert_ne!(r.code, 0, "sslmode=require connected without TLS");
    let lower = r.stderr.to_lowercase();
    assert!(
        lower.contains("tls") || lower.contains("ssl"),
        "{}",
        r.stderr
    );
}

const OWN_RUN: &str = "mwaa-dr__20260101T000000Z__abcd";

/// A DR DAG's run in flight in `db`, as Airflow writes it while the task runs: its dag_run
/// (id 1, which the backup's runs use too) and its running task instance.
fn start_own_run(bench: &crate::pg::Bench, db: &str) {
    bench.sql(
        db,
        &format!(
            "INSERT INTO dag_run (id, dag_id, execution_date, state, run_id, external_trigger, run_type, log_template_id)
             VALUES (1, 'restore_metadata', now(), 'running', '{OWN_RUN}', true, 'manual', (SELECT min(id) FROM log_template));
             INSERT INTO task_instance (task_id, dag_id, run_id, map_index, state, try_number, max_tries, hostname, unixname, pool, pool_slots, queue, priority_weight, executor_config)
             VALUES ('mwaa_dr', 'restore_metadata', '{OWN_RUN}', -1, 'running', 1, 0, 'h', 'airflow', 'default_pool', 1, 'default', 1, '\\x80057d942e'::bytea);
             INSERT INTO log (id, dttm, dag_id, task_id, run_id, event, owner)
             VALUES (1, now(), 'restore_metadata', 'mwaa_dr', '{OWN_RUN}', 'running', 'airflow');"
        ),
    );
}

async fn own_rows(db: &str) -> (i64, i64) {
    let mut conn = crate::pg::connect(db).await;
    let runs: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM dag_run WHERE dag_id = 'restore_metadata' AND run_id = '{OWN_RUN}'"
    ))
    .fetch_one(&mut conn)
    .await
    .expect("count runs");
    let tis: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM task_instance WHERE dag_id = 'restore_metadata' AND run_id = '{OWN_RUN}' AND state = 'running'"
    ))
    .fetch_one(&mut conn)
    .await
    .expect("count task instances");
    (runs, tis)
}

/// The DR DAGs never restore or clean away their own rows: a backup does not record them as
/// DAGs to unpause, and a clean restore or a cleanup run by the restore DAG keeps the rows of
/// the run executing it under its id (restored runs that collide with it move instead).
#[tokio::test]
async fn dr_dags_keep_their_own_run_and_are_never_recorded_active() {
    let Some(bench) = crate::pg::Bench::get() else {
        return;
    };
    let src = bench.airflow_db("dr_rows_src", "2.10.3", true);
    let dst = bench.airflow_db("dr_rows_dst", "2.10.3", false);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let r = run(mwaa_dr(dir.path())
        .arg("--store")
        .arg(&store)
        .args(["--output", "json", "backup", "--db", &src]));
    assert_eq!(r.code, 0, "backup: {}", r.stderr);
    let id = serde_json::from_str::<serde_json::Value>(&r.stdout).expect("report")["backup_id"]
        .as_str()
        .expect("id")
        .to_string();
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(store.join("backups").join(&id).join("manifest.json"))
            .expect("manifest"),
    )
    .expect("manifest JSON");
    // The sample's backup_metadata DAG is unpaused in the source.
    assert_eq!(manifest["active_dags"], serde_json::json!(["etl"]));

    start_own_run(&bench, &dst);
    let restore = |clean: bool| {
        let mut cmd = mwaa_dr(dir.path());
        cmd.arg("--store")
            .arg(&store)
            .args(["--yes", "--output", "json", "restore", "--db", &dst])
            .env("MWAA_DR_DAG_RUN", format!("restore_metadata/{OWN_RUN}"));
        if clean {
            cmd.arg("--clean");
        }
        run(&mut cmd)
    };
    let r = restore(false);
    assert_eq!(r.code, 0, "restore beside the own run: {}", r.stderr);
    assert_eq!(own_rows(&dst).await, (1, 1));
    let r = restore(true);
    assert_eq!(r.code, 0, "clean restore: {}", r.stderr);
    assert_eq!(own_rows(&dst).await, (1, 1));
    let report: serde_json::Value = serde_json::from_str(&r.stdout).expect("restore report");
    assert_eq!(
        report["renumbered_dag_runs"],
        serde_json::json!({"1": 11}),
        "the backup's run 1 moves past the backup's last run (10)"
    );
    let mut conn = crate::pg::connect(&dst).await;
    let holders: Vec<(i32, String)> =
        sqlx::query_as("SELECT id, dag_id FROM dag_run WHERE id IN (1, 11) ORDER BY id")
            .fetch_all(&mut conn)
            .await
            .expect("runs");
    assert_eq!(
        holders,
        vec![(1, "restore_metadata".to_string()), (11, "etl".to_string())],
        "the own run keeps id 1, the backup's run 1 is restored as 11"
    );

    let r = run(mwaa_dr(dir.path())
        .args(["--yes", "--output", "json", "cleanup", "--db", &dst])
        .env("MWAA_DR_DAG_RUN", format!("restore_metadata/{OWN_RUN}")));
    assert_eq!(r.code, 0, "cleanup: {}", r.stderr);
    assert_eq!(own_rows(&dst).await, (1, 1));
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM dag_run")
        .fetch_one(&mut conn)
        .await
        .expect("count");
    assert_eq!(left, 1, "cleanup kept only the own run");

    let r = run(mwaa_dr(dir.path())
        .args(["cleanup", "--db", &dst])
        .env("MWAA_DR_DAG_RUN", "no-slash"));
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("MWAA_DR_DAG_RUN"), "{}", r.stderr);
}

/// The rendered task's callable, run by Airflow 2.10.3's Python with a stand-in DAG run: the
/// backup DAG's task returns the binary's JSON report (a complete backup `verify` accepts);
/// the restore DAG's task fails with the binary's own error for a backup that does not
/// exist, and refuses a conf key it does not accept, naming the accepted ones.
#[test]
fn the_dag_task_runs_the_binary_and_returns_its_report() {
    let Some(bench) = crate::pg::Bench::get() else {
        return;
    };
    let venv = airflow_venv("2.10.3").expect("venv");
    let db = bench.airflow_db("dag_task", "2.10.3", true);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let out = dir.path().join("out");
    let r = run(mwaa_dr(dir.path())
        .arg("--store")
        .arg(&store)
        .args(["dags", "render", "--out"])
        .arg(&out)
        .args([
            "--binary-uri",
            "s3://tools/mwaa-dr",
            "--binary-sha256",
            &"ab".repeat(32),
        ]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let script = r#"
import importlib.util, json, sys
from airflow.exceptions import AirflowException

def task(path, conf):
    spec = importlib.util.spec_from_file_location("dr_dag", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    run = type("Run", (), {"dag_id": module.DAG_ID, "run_id": "manual__test", "conf": conf})()
    try:
        return {"ok": module.run_mwaa_dr(dag_run=run)}
    except AirflowException as e:
        return {"error": str(e)}

folder = sys.argv[1]
print(json.dumps({
    "backup": task(f"{folder}/backup_metadata.py", {}),
    "missing": task(f"{folder}/restore_metadata.py", {"backup_id": "20000101T000000Z-0000"}),
    "unknown": task(f"{folder}/restore_metadata.py", {"backup": "x"}),
}))
"#;
    let home = dir.path().join("airflow");
    let output = Command::new(venv.join("bin/python"))
        .arg("-c")
        .arg(script)
        .arg(&out)
        .env("AIRFLOW_HOME", &home)
        .env("MWAA_DR_BIN", env!("CARGO_BIN_EXE_mwaa-dr"))
        .env("MWAA_DR_NO_DOTENV", "true")
        .env(
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
            db.replacen("postgres://", "postgresql+psycopg2://", 1),
        )
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let doc: serde_json::Value = serde_json::from_str(last).unwrap_or_else(|e| {
        panic!(
            "no result ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let report: serde_json::Value =
        serde_json::from_str(doc["backup"]["ok"].as_str().expect("report text"))
            .expect("the return value is the JSON report");
    let id = report["backup_id"].as_str().expect("backup id");
    let verify = run(mwaa_dr(dir.path())
        .arg("--store")
        .arg(&store)
        .args(["verify", id]));
    assert_eq!(verify.code, 0, "{}", verify.stderr);
    let missing = doc["missing"]["error"]
        .as_str()
        .expect("the restore failed");
    assert!(
        missing.contains("20000101T000000Z-0000") && missing.contains("restore failed"),
        "{missing}"
    );
    let unknown = doc["unknown"]["error"].as_str().expect("refused");
    assert!(
        unknown.contains("key(s) backup ")
            && unknown
                .contains("backup_id, clean, connection_strategy, task_token, variable_strategy"),
        "{unknown}"
    );
}

/// A fresh, empty database on the bench.
fn empty_db(bench: &crate::pg::Bench, name: &str) -> String {
    bench.sql(
        &bench.url("postgres"),
        &format!("DROP DATABASE IF EXISTS {name}"),
    );
    bench.sql(&bench.url("postgres"), &format!("CREATE DATABASE {name}"));
    bench.url(name)
}

/// Real Airflow runs the rendered DAGs (`airflow dags test`, on databases made by its own
/// `airflow db migrate`): the backup DAG's task writes a complete backup with the binary; the
/// restore DAG restores it into another Airflow's database with its own Fernet key, where
/// Airflow's CLI reads the restored variable and connection secrets, and its `clean` run keeps
/// its own run; a restore of a backup that does not exist fails the task with the binary's
/// error in the log.
#[allow(clippy::too_many_lines)]
fn dags_run_in_airflow(version: &str) {
    let Some(bench) = crate::pg::Bench::get() else {
        return;
    };
    let venv = airflow_venv(version).expect("venv");
    let started = std::time::Instant::now();
    let tag = format!("{}_{}", version.replace('.', "_"), std::process::id());
    let src = empty_db(&bench, &format!("dagrun_src_{tag}"));
    let dst = empty_db(&bench, &format!("dagrun_dst_{tag}"));
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let dags = dir.path().join("dags");
    let r = run(mwaa_dr(dir.path())
        .arg("--store")
        .arg(&store)
        .args(["dags", "render", "--out"])
        .arg(&dags)
        .args([
            "--binary-uri",
            "s3://tools/mwaa-dr",
            "--binary-sha256",
            &"ab".repeat(32),
        ]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let airflow = |db: &str, key: &str, extra: &[(&str, &str)], args: &[&str], ok: bool| {
        let home = dir.path().join(format!("home-{}", key.len() + db.len()));
        let mut cmd = Command::new(venv.join("bin/airflow"));
        cmd.env_clear()
            .args(args)
            .current_dir(dir.path())
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("AIRFLOW_HOME", &home)
            .env("AIRFLOW__CORE__DAGS_FOLDER", &dags)
            .env("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
            .env("AIRFLOW__CORE__FERNET_KEY", key)
            .env(
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
                db.replacen("postgres://", "postgresql+psycopg2://", 1),
            )
            .env("MWAA_DR_BIN", env!("CARGO_BIN_EXE_mwaa-dr"));
        for (name, value) in extra {
            cmd.env(name, value);
        }
        let out = cmd.output().expect("airflow runs");
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if ok {
            assert!(out.status.success(), "airflow {args:?} failed:\n{text}");
        }
        text
    };
    airflow(&src, FERNET, &[], &["db", "migrate"], true);
    airflow(
        &src,
        FERNET,
        &[],
        &["variables", "set", "api_token", "var-s3cret"],
        true,
    );
    airflow(
        &src,
        FERNET,
        &[],
        &[
            "connections",
            "add",
            "warehouse",
            "--conn-uri",
            "postgres://etl:conn-s3cret@wh:5432/dw",
        ],
        true,
    );
    let log = airflow(
        &src,
        FERNET,
        &[],
        &["dags", "test", "backup_metadata"],
        true,
    );
    let verify = run(mwaa_dr(dir.path()).arg("--store").arg(&store).arg("verify"));
    assert_eq!(verify.code, 0, "{}\n{log}", verify.stderr);

    // The standby: its own Airflow database and its own key; the restore gets the source's
    // key as PRIMARY_FERNET_KEY.
    airflow(&dst, OTHER_FERNET, &[], &["db", "migrate"], true);
    let source_key = [("PRIMARY_FERNET_KEY", FERNET)];
    let missing = airflow(
        &dst,
        OTHER_FERNET,
        &source_key,
        &[
            "dags",
            "test",
            "restore_metadata",
            "-c",
            r#"{"backup_id": "20000101T000000Z-0000"}"#,
        ],
        false,
    );
    assert!(
        missing.contains("20000101T000000Z-0000") && missing.contains("mwaa-dr restore failed"),
        "the failed restore's log lacks the binary's error:\n{missing}"
    );
    // The whole `dags test` succeeds: Airflow saves the DagRun it holds in memory by its id
    // after the task, so the restore must have left the executing run's row under that id.
    let log = airflow(
        &dst,
        OTHER_FERNET,
        &source_key,
        &[
            "dags",
            "test",
            "restore_metadata",
            "-c",
            r#"{"clean": true}"#,
        ],
        true,
    );
    assert!(
        log.contains("\"cleaned\"") && log.contains("\"backup_id\""),
        "the clean restore task did not report: {log}"
    );
    let var = airflow(
        &dst,
        OTHER_FERNET,
        &[],
        &["variables", "get", "api_token"],
        true,
    );
    assert!(var.contains("var-s3cret"), "{var}\n{log}");
    let conn = airflow(
        &dst,
        OTHER_FERNET,
        &[],
        &["connections", "get", "warehouse", "-o", "json"],
        true,
    );
    assert!(conn.contains("conn-s3cret"), "{conn}");
    // The clean run cleaned away the failed (settled) restore run but kept its own, under
    // the id Airflow gave it (above the failed run's), saved by Airflow as a success.
    let runs = std::process::Command::new("psql")
        .args(["-X", "-At", "-d", &dst, "-c"])
        .arg("SELECT string_agg(id || ' ' || state, ',') FROM dag_run WHERE dag_id = 'restore_metadata'")
        .output()
        .expect("psql runs");
    let runs = String::from_utf8_lossy(&runs.stdout).trim().to_string();
    assert_eq!(
        runs, "2 success",
        "the restore DAG's own run did not survive its clean run as a success:\n{log}"
    );
    eprintln!(
        "Airflow {version}: two db migrate, backup DAG, two restore DAG runs, CLI checks in {:.0} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn dags_run_in_airflow_2_10_3() {
    dags_run_in_airflow("2.10.3");
}

#[test]
fn dags_run_in_airflow_3_0_6() {
    dags_run_in_airflow("3.0.6");
}
