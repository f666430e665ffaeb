//! Configuration: precedence, the original's `.env` files, bad input, secrets.

use std::path::Path;

use serde_json::Value;

use crate::common::{Run, mwaa_dr, run};
use crate::pg::Bench;

/// The Backup-Restore tutorial `.env` of the original README, verbatim.
const TUTORIAL_BACKUP_RESTORE: &str = r#"STACK_NAME_PREFIX=mwaa-2-5-1
AWS_ACCOUNT_ID=123456789101
DR_TYPE=BACKUP_RESTORE

MWAA_VERSION=2.5.1
MWAA_UPDATE_EXECUTION_ROLE=YES

PRIMARY_REGION=us-east-1
PRIMARY_MWAA_ENVIRONMENT_NAME=mwaa-2-5-1-primary
PRIMARY_MWAA_ROLE_ARN=arn:aws:iam::123456789101:role/service-role/mwaa-2-5-1-primary-role
PRIMARY_DAGS_BUCKET_NAME=mwaa-2-5-1-primary-source
PRIMARY_VPC_ID=vpc-012ab34c56d789101
PRIMARY_SUBNET_IDS='["subnet-1234567", "subnet-987654321"]'
PRIMARY_SECURITY_GROUP_IDS='["sg-0123456789"]'

SECONDARY_REGION=us-east-2
SECONDARY_MWAA_ENVIRONMENT_NAME=mwaa-2-5-1-secondary
SECONDARY_MWAA_ROLE_ARN=arn:aws:iam::123456789101:role/service-role/mwaa-2-5-1-secondary-role
SECONDARY_DAGS_BUCKET_NAME=mwaa-2-5-1-secondary-source
SECONDARY_VPC_ID=vpc-1111222233334444
SECONDARY_SUBNET_IDS='["subnet-2222222", "subnet-3333333"]'
SECONDARY_SECURITY_GROUP_IDS='["sg-111222333444"]'
SECONDARY_CREATE_SFN_VPCE=YES
"#;

fn write_env(dir: &Path, text: &str) {
    std::fs::write(dir.join(".env"), text).expect("write .env");
}

fn config_json(out: &Run) -> Value {
    assert_eq!(out.code, 0, "config failed: {}", out.stderr);
    serde_json::from_str(&out.stdout).expect("config --output json prints JSON")
}

fn var<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["variables"]
        .as_array()
        .expect("variables array")
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("{name} missing from config output"))
}

fn assert_resolves(doc: &Value, name: &str, value: Value, source: &str) {
    let entry = var(doc, name);
    assert_eq!(entry["value"], value, "{name}: {entry}");
    assert_eq!(entry["source"], source, "{name}: {entry}");
}

#[test]
fn flag_beats_env_and_env_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_env(dir.path(), "DR_BACKUP_STORE=/from/file\n");
    let out = run(mwaa_dr(dir.path())
        .env("DR_BACKUP_STORE", "/from/env")
        .args(["--store", "/from/flag", "--output", "json", "config"]));
    assert_resolves(
        &config_json(&out),
        "DR_BACKUP_STORE",
        "/from/flag".into(),
        "flag",
    );
}

#[test]
fn env_beats_env_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_env(dir.path(), "HEALTH_CHECK_MAX_RETRY=7\n");
    let out = run(mwaa_dr(dir.path())
        .env("HEALTH_CHECK_MAX_RETRY", "4")
        .args(["--output", "json", "config"]));
    assert_resolves(
        &config_json(&out),
        "HEALTH_CHECK_MAX_RETRY",
        4.into(),
        "env",
    );
}

#[test]
fn env_file_beats_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_env(dir.path(), "HEALTH_CHECK_MAX_RETRY=7\n");
    let out = run(mwaa_dr(dir.path()).args(["--output", "json", "config"]));
    assert_resolves(
        &config_json(&out),
        "HEALTH_CHECK_MAX_RETRY",
        7.into(),
        "env_file",
    );
}

#[test]
fn defaults_apply_last() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(mwaa_dr(dir.path()).args(["--output", "json", "config"]));
    let doc = config_json(&out);
    assert_eq!(
        doc["env_file"],
        Value::Null,
        "no ./.env in an empty directory"
    );
    assert_resolves(&doc, "HEALTH_CHECK_MAX_RETRY", 2.into(), "default");
    assert_resolves(
        &doc,
        "DR_VARIABLE_RESTORE_STRATEGY",
        "APPEND".into(),
        "default",
    );
    assert_resolves(
        &doc,
        "METADATA_EXPORT_DAG_NAME",
        "backup_metadata".into(),
        "default",
    );
    assert_resolves(
        &doc,
        "MWAA_CREATE_ENV_POLLING_INTERVAL_SECS",
        60.into(),
        "default",
    );
    assert_resolves(&doc, "DR_TYPE", Value::Null, "unset");
}

#[test]
fn db_flag_sets_the_commands_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    // `config` has no --db; the flag belongs to backup / restore / cleanup, which are checked
    // in their own tests. Here: SQLAlchemy URL from Airflow's variable is accepted.
    let out = run(mwaa_dr(dir.path())
        .env(
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
            "postgresql+psycopg2://airflow:pw-in-url@db:5432/airflow",
        )
        .args(["--output", "json", "config"]));
    let doc = config_json(&out);
    assert_resolves(
        &doc,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "postgres://airflow:***@db:5432/airflow".into(),
        "env",
    );
}

#[test]
fn backup_restore_tutorial_env_works_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_env(dir.path(), TUTORIAL_BACKUP_RESTORE);
    let doc = config_json(&run(
        mwaa_dr(dir.path()).args(["--output", "json", "config"])
    ));
    assert_resolves(&doc, "DR_TYPE", "BACKUP_RESTORE".into(), "env_file");
    assert_resolves(&doc, "MWAA_VERSION", "2.5.1".into(), "env_file");
    assert_resolves(&doc, "MWAA_UPDATE_EXECUTION_ROLE", "YES".into(), "env_file");
    assert_resolves(
        &doc,
        "PRIMARY_SUBNET_IDS",
        serde_json::json!(["subnet-1234567", "subnet-987654321"]),
        "env_file",
    );
    assert_resolves(
        &doc,
        "SECONDARY_SECURITY_GROUP_IDS",
        serde_json::json!(["sg-111222333444"]),
        "env_file",
    );
    assert_resolves(&doc, "SECONDARY_REGION", "us-east-2".into(), "env_file");
    assert_resolves(&doc, "SECONDARY_CREATE_SFN_VPCE", "YES".into(), "env_file");
    // Backup-Restore turns the APPEND default into REPLACE, as the original.
    assert_resolves(
        &doc,
        "DR_VARIABLE_RESTORE_STRATEGY",
        "REPLACE".into(),
        "default",
    );
    assert_resolves(
        &doc,
        "DR_CONNECTION_RESTORE_STRATEGY",
        "REPLACE".into(),
        "default",
    );
    // ...but DO_NOTHING stays DO_NOTHING.
    let doc = config_json(&run(mwaa_dr(dir.path())
        .env("DR_VARIABLE_RESTORE_STRATEGY", "DO_NOTHING")
        .args(["--output", "json", "config"])));
    assert_resolves(
        &doc,
        "DR_VARIABLE_RESTORE_STRATEGY",
        "DO_NOTHING".into(),
        "env",
    );

    let text = run(mwaa_dr(dir.path()).arg("config"));
    assert_eq!(text.code, 0, "{}", text.stderr);
    for expected in [
        "DR_TYPE",
        "BACKUP_RESTORE",
        "mwaa-2-5-1-secondary",
        r#"["subnet-2222222","subnet-3333333"]"#,
        ".env file",
    ] {
        assert!(
            text.stdout.contains(expected),
            "{expected} missing:\n{}",
            text.stdout
        );
    }
}

/// The original's variables that this build accepts but that change nothing say so, in
/// JSON and in text, when set; those that act (or are only defaults) do not.
#[test]
fn config_marks_the_set_variables_that_have_no_effect() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_env(
        dir.path(),
        &format!(
            "{TUTORIAL_BACKUP_RESTORE}HEALTH_CHECK_ENABLED=YES\nHEALTH_CHECK_INTERVAL_MINS=5\nMWAA_NOTIFICATION_EMAILS='[\"ops@example.com\"]'\nMWAA_DAGS_S3_PATH=dags\nSECONDARY_CLEANUP_COOL_OFF_SECS=30\nPRIMARY_REPLICATION_POLLING_INTERVAL_SECS=30\nMWAA_BACKUP_FILE_NAME=environment.json\n"
        ),
    );
    let doc = config_json(&run(
        mwaa_dr(dir.path()).args(["--output", "json", "config"])
    ));
    let marked: serde_json::Map<String, Value> = doc["variables"]
        .as_array()
        .expect("variables")
        .iter()
        .filter(|v| !v["no_effect"].is_null())
        .map(|v| {
            (
                v["name"].as_str().expect("name").to_string(),
                v["no_effect"].clone(),
            )
        })
        .collect();
    insta::assert_json_snapshot!("config-no-effect", marked);
    for acting in [
        "AWS_ACCOUNT_ID",
        "MWAA_NOTIFICATION_EMAILS",
        "MWAA_UPDATE_EXECUTION_ROLE",
        "HEALTH_CHECK_ENABLED",
        "MWAA_DAGS_S3_PATH",
        "SECONDARY_CREATE_SFN_VPCE",
        "DR_TYPE",
        "STACK_NAME_PREFIX",
        "MWAA_BACKUP_FILE_NAME",
        "SECONDARY_MWAA_ROLE_ARN",
        "SECONDARY_SUBNET_IDS",
        "PRIMARY_MWAA_ENVIRONMENT_NAME",
    ] {
        assert!(!marked.contains_key(acting), "{acting} acts: {marked:?}");
    }
    // A default is no user's choice: not marked.
    let bare = config_json(&run(mwaa_dr(dir.path()).args([
        "--no-dotenv",
        "--output",
        "json",
        "config",
    ])));
    assert!(var(&bare, "SECONDARY_CLEANUP_COOL_OFF_SECS")["no_effect"].is_null());

    let text = run(mwaa_dr(dir.path()).arg("config"));
    assert_eq!(text.code, 0, "{}", text.stderr);
    let line = |name: &str| {
        text.stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing:\n{}", text.stdout))
            .to_string()
    };
    assert!(
        line("PRIMARY_VPC_ID").contains("no effect: the original's primary stack"),
        "{}",
        text.stdout
    );
    assert!(line("SECONDARY_CLEANUP_COOL_OFF_SECS").contains("no effect: "));
    assert!(!line("MWAA_UPDATE_EXECUTION_ROLE").contains("no effect"));
    assert!(!line("DR_TYPE").contains("no effect"));
    // STACK_NAME_PREFIX names the health-check schedule when HEALTH_CHECK_SCHEDULE_NAME is unset.
    assert!(
        line("HEALTH_CHECK_SCHEDULE_NAME").contains("mwaa-2-5-1-scheduler")
            && line("HEALTH_CHECK_SCHEDULE_NAME").contains("from STACK_NAME_PREFIX"),
        "{}",
        text.stdout
    );
}

#[test]
fn warm_standby_tutorial_env_keeps_append() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_env(
        dir.path(),
        &TUTORIAL_BACKUP_RESTORE.replace("DR_TYPE=BACKUP_RESTORE", "DR_TYPE=WARM_STANDBY"),
    );
    let doc = config_json(&run(
        mwaa_dr(dir.path()).args(["--output", "json", "config"])
    ));
    assert_resolves(&doc, "DR_TYPE", "WARM_STANDBY".into(), "env_file");
    assert_resolves(
        &doc,
        "DR_VARIABLE_RESTORE_STRATEGY",
        "APPEND".into(),
        "default",
    );
}

/// Each class of bad input exits 2 and names the variable and what is accepted.
#[test]
fn bad_input_exits_2_naming_the_variable() {
    let cases: &[(&str, &str, &str)] = &[
        ("DR_TYPE", "HOT_STANDBY", "BACKUP_RESTORE, WARM_STANDBY"),
        ("PRIMARY_SUBNET_IDS", "subnet-1,subnet-2", "brackets"),
        ("HEALTH_CHECK_MAX_RETRY", "-1", "a whole number, 0 or more"),
        ("MWAA_VERSION", "9.9.9", "2.10.3"),
        (
            "PRIMARY_DB_URL",
            "postgres://user:hunter2@db:notaport/airflow",
            "PostgreSQL URL",
        ),
        ("MWAA_SIMULATE_DR", "maybe", "YES or NO"),
        ("DR_S3_SSE", "aws:kms:dsse", "AES256, aws:kms"),
        (
            "HEALTH_CHECK_RETRY_BACKOFF_RATE",
            "0.5",
            "a number, 1 or more",
        ),
        ("PRIMARY_BACKUP_SCHEDULE", "every hour", "cron"),
        ("PRIMARY_BACKUP_SCHEDULE", "61 * * * *", "minute 0-59"),
        (
            "PRIMARY_BACKUP_SCHEDULE",
            "0 0 * 13 *",
            "month 1-12 or JAN-DEC",
        ),
        (
            "DR_BACKUP_JOBS",
            "0",
            "a whole number, 1 or more, at most 64",
        ),
        (
            "HEALTH_CHECK_RETRY_BACKOFF_RATE",
            "1e308",
            "a number, 1 or more, at most 100",
        ),
        (
            "STATE_MACHINE_TIMEOUT_MINS",
            "99999999999999999999",
            "at most",
        ),
    ];
    for (name, value, accepted) in cases {
        for via_file in [false, true] {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = dir.path().join("store");
            let mut cmd = mwaa_dr(dir.path());
            if via_file {
                write_env(dir.path(), &format!("{name}='{value}'\n"));
            } else {
                cmd.env(name, value);
            }
            let out = run(cmd.args(["backup", "--store"]).arg(&store));
            assert_eq!(out.code, 2, "{name}={value}: {}", out.stderr);
            assert!(
                out.stderr.contains(name),
                "{name} not named: {}",
                out.stderr
            );
            assert!(
                out.stderr.contains(accepted),
                "{name}: accepted values not named: {}",
                out.stderr
            );
            assert!(
                !out.stderr.contains("hunter2"),
                "password leaked: {}",
                out.stderr
            );
            if *name != "PRIMARY_DB_URL" {
                assert!(
                    out.stderr.contains(value),
                    "{name}: value not named: {}",
                    out.stderr
                );
            }
            assert!(!store.exists(), "bad input must change nothing");
        }
    }
}

#[test]
fn malformed_env_line_exits_2_naming_the_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_env(
        dir.path(),
        "DR_TYPE=WARM_STANDBY\nPRIMARY_FERNET_KEY='unterminated-secret\n",
    );
    let out = run(mwaa_dr(dir.path()).arg("config"));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains(".env"), "{}", out.stderr);
    assert!(out.stderr.contains("line 2"), "{}", out.stderr);
    assert!(
        !out.stderr.contains("unterminated-secret"),
        "{}",
        out.stderr
    );
}

#[test]
fn env_file_missing_is_silent_by_default_and_an_error_when_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let silent = run(mwaa_dr(dir.path()).arg("config"));
    assert_eq!(silent.code, 0, "{}", silent.stderr);
    let named = run(mwaa_dr(dir.path()).args(["--env-file", "missing.env", "config"]));
    assert_eq!(named.code, 2);
    assert!(named.stderr.contains("missing.env"), "{}", named.stderr);
}

#[test]
fn no_dotenv_ignores_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_env(dir.path(), "DR_TYPE=NOT_A_TYPE\n");
    let out = run(mwaa_dr(dir.path()).args(["--no-dotenv", "--output", "json", "config"]));
    assert_resolves(&config_json(&out), "DR_TYPE", Value::Null, "unset");
}

#[test]
fn errors_are_json_on_stderr_with_json_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(mwaa_dr(dir.path())
        .env("DR_TYPE", "nope")
        .args(["--output", "json", "config"]));
    assert_eq!(out.code, 2);
    assert!(out.stdout.is_empty());
    let doc: Value = serde_json::from_str(&out.stderr).expect("JSON error document");
    assert_eq!(doc["error"]["variable"], "DR_TYPE");
    assert_eq!(doc["error"]["exit_code"], 2);
}

const FERNET_PRIMARY: &str = "cHJpbWFyeS1mZXJuZXQta2V5LTMyLWJ5dGVzLWxvbmc=";
const FERNET_SECONDARY: &str = "c2Vjb25kYXJ5LWZlcm5ldC1rZXktMzItYnl0ZXMtbG8=";

/// No secret reaches `config` output (text or JSON), logs at any verbosity, or errors.
#[test]
fn secrets_never_appear() {
    let secrets = [
        "primary-db-password",
        "secondary-db-password",
        "airflow-db-password",
        "query-password",
        "sslkey-password",
        "kv-password",
        "kv-flag-password",
        FERNET_PRIMARY,
        FERNET_SECONDARY,
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    write_env(
        dir.path(),
        &format!(
            "SECONDARY_DB_URL=postgres://airflow:secondary-db-password@standby:5432/airflow\nSECONDARY_FERNET_KEY={FERNET_SECONDARY}\n"
        ),
    );
    let base = |extra: &[&str]| {
        let mut cmd = mwaa_dr(dir.path());
        cmd.env(
            "PRIMARY_DB_URL",
            "postgresql+psycopg2://airflow:primary-db-password@primary:5432/airflow?sslpassword=sslkey-password&application_name=x",
        )
        .env(
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
            "postgresql://airflow:airflow-db-password@local/airflow",
        )
        .env(
            "AIRFLOW__CORE__SQL_ALCHEMY_CONN",
            "host=local password='kv-password with spaces' dbname=airflow",
        )
        .env("PRIMARY_FERNET_KEY", FERNET_PRIMARY)
        .env(
            "AIRFLOW__CORE__FERNET_KEY",
            format!("{FERNET_PRIMARY},{FERNET_SECONDARY}"),
        )
        .args(extra);
        run(&mut cmd)
    };
    let runs = [
        base(&["config"]),
        base(&["--output", "json", "config"]),
        base(&["-vvv", "config"]),
        base(&["-vvv", "backup", "--store", "s3://"]),
        base(&[
            "--output",
            "json",
            "restore",
            "--db",
            "postgres://u:secondary-db-password@h/db:bad",
        ]),
        base(&[
            "restore",
            "--db",
            "host=h user=u password=kv-flag-password dbname=db",
        ]),
        base(&[
            "cleanup",
            "--db",
            "postgres://h:1/db?user=u&password=query-password",
        ]),
    ];
    for (i, out) in runs.iter().enumerate() {
        for secret in secrets {
            assert!(
                !out.stdout.contains(secret),
                "run {i}: stdout leaks {secret}:\n{}",
                out.stdout
            );
            assert!(
                !out.stderr.contains(secret),
                "run {i}: stderr leaks {secret}:\n{}",
                out.stderr
            );
        }
    }
    // The redacted forms are there, so the test is looking at the right output.
    assert!(
        runs[0]
            .stdout
            .contains("postgres://airflow:***@primary:5432/airflow"),
        "{}",
        runs[0].stdout
    );
    assert!(runs[0].stdout.contains("***"), "{}", runs[0].stdout);
    assert!(
        runs[0]
            .stdout
            .contains("sslpassword=***&application_name=x"),
        "{}",
        runs[0].stdout
    );
    assert!(
        runs[1].stdout.contains("password=***"),
        "{}",
        runs[1].stdout
    );
    assert_eq!(runs[5].code, 2, "key=value is refused: {}", runs[5].stderr);
    assert!(runs[5].stderr.contains("key=value"), "{}", runs[5].stderr);
}

/// A variable only a command needs is required by that command alone, with exit 2 naming it.
#[test]
fn command_specific_variables_are_required_by_their_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(mwaa_dr(dir.path()).arg("failover"));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("DR_TYPE") && out.stderr.contains("failover"),
        "{}",
        out.stderr
    );
    let out = run(mwaa_dr(dir.path()).arg("health-check"));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("PRIMARY_MWAA_ENVIRONMENT_NAME"),
        "{}",
        out.stderr
    );
    let out = run(mwaa_dr(dir.path())
        .env("DR_TYPE", "BACKUP_RESTORE")
        .env("PRIMARY_MWAA_ENVIRONMENT_NAME", "p")
        .env("SECONDARY_MWAA_ENVIRONMENT_NAME", "s")
        .env("SECONDARY_DB_URL", "postgres://u@h/db")
        .arg("failover"));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("SECONDARY_MWAA_ROLE_ARN"),
        "Backup-Restore needs the new environment's role: {}",
        out.stderr
    );
}

#[test]
fn env_example_is_a_valid_env_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.env.example"))
        .expect(".env.example");
    write_env(dir.path(), &example);
    let doc = config_json(&run(
        mwaa_dr(dir.path()).args(["--output", "json", "config"])
    ));
    assert_resolves(&doc, "DR_TYPE", "WARM_STANDBY".into(), "env_file");
    assert_resolves(&doc, "DR_BACKUP_STORE", "./backups".into(), "env_file");
}

/// A bad value names what the user wrote: the flag when it came from the command line, the
/// variable when it came from the environment or the .env file. DR_BACKUP_JOBS is checked
/// by every command, before anything is touched.
#[test]
fn errors_name_the_flag_or_the_variable_that_gave_the_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let flag = run(mwaa_dr(dir.path()).arg("--store").arg(&store).args([
        "backup",
        "--jobs",
        "0",
        "--db",
        "postgres://u@h/db",
    ]));
    assert_eq!(flag.code, 2, "{}", flag.stderr);
    assert!(flag.stderr.contains("--jobs \"0\""), "{}", flag.stderr);
    assert!(
        flag.stderr.contains("1 or more, at most 64"),
        "{}",
        flag.stderr
    );
    assert!(!store.exists(), "bad input must change nothing");

    for command in [&["config"][..], &["list"], &["verify"], &["health-check"]] {
        let out = run(mwaa_dr(dir.path())
            .env("DR_BACKUP_JOBS", "0")
            .arg("--store")
            .arg(&store)
            .args(command));
        assert_eq!(out.code, 2, "{command:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("DR_BACKUP_JOBS=\"0\""),
            "{command:?}: {}",
            out.stderr
        );
        assert!(
            !out.stderr.contains("--jobs"),
            "{command:?}: {}",
            out.stderr
        );
    }
    write_env(dir.path(), "DR_BACKUP_JOBS=many\n");
    let file = run(mwaa_dr(dir.path()).args(["backup", "--db", "postgres://u@h/db"]));
    assert_eq!(file.code, 2, "{}", file.stderr);
    assert!(file.stderr.contains("DR_BACKUP_JOBS"), "{}", file.stderr);
    assert!(file.stderr.contains(".env"), "{}", file.stderr);
    assert!(!file.stderr.contains("--jobs"), "{}", file.stderr);
    std::fs::remove_file(dir.path().join(".env")).expect("remove .env");

    let store_flag = run(mwaa_dr(dir.path()).args(["--store", "ftp://x/y", "list"]));
    assert_eq!(store_flag.code, 2, "{}", store_flag.stderr);
    assert!(
        store_flag.stderr.contains("--store \"ftp://x/y\""),
        "{}",
        store_flag.stderr
    );
    let store_env = run(mwaa_dr(dir.path())
        .env("DR_BACKUP_STORE", "ftp://x/y")
        .arg("list"));
    assert_eq!(store_env.code, 2, "{}", store_env.stderr);
    assert!(
        store_env.stderr.contains("DR_BACKUP_STORE=\"ftp://x/y\""),
        "{}",
        store_env.stderr
    );
    assert!(
        !store_env.stderr.contains("--store"),
        "{}",
        store_env.stderr
    );

    let db_flag = run(mwaa_dr(dir.path()).args(["restore", "--db", "mysql://u:dbpw@h/db"]));
    assert_eq!(db_flag.code, 2, "{}", db_flag.stderr);
    assert!(db_flag.stderr.contains("--db"), "{}", db_flag.stderr);
    assert!(!db_flag.stderr.contains("dbpw"), "{}", db_flag.stderr);
    let db_env = run(mwaa_dr(dir.path())
        .env("SECONDARY_DB_URL", "mysql://u:dbpw@h/db")
        .arg("restore"));
    assert_eq!(db_env.code, 2, "{}", db_env.stderr);
    assert!(
        db_env.stderr.contains("SECONDARY_DB_URL"),
        "{}",
        db_env.stderr
    );
    assert!(!db_env.stderr.contains("--db"), "{}", db_env.stderr);
}

/// Numbers at and beyond every edge are refused with exit 2 (never a crash, exit 101) by
/// `config` and by `health-check`, which computes its backoff from them; NaN and infinities
/// are reported as not finite.
#[test]
fn extreme_numbers_are_refused_never_a_crash() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "HEALTH_CHECK_RETRY_BACKOFF_RATE",
            "1e308",
            "above the maximum 100",
        ),
        (
            "HEALTH_CHECK_RETRY_BACKOFF_RATE",
            "1e400",
            "not a finite number",
        ),
        (
            "HEALTH_CHECK_RETRY_BACKOFF_RATE",
            "NaN",
            "not a finite number",
        ),
        (
            "HEALTH_CHECK_RETRY_BACKOFF_RATE",
            "inf",
            "not a finite number",
        ),
        (
            "HEALTH_CHECK_RETRY_BACKOFF_RATE",
            "-infinity",
            "not a finite number",
        ),
        (
            "HEALTH_CHECK_RETRY_BACKOFF_RATE",
            "1e-400",
            "below the minimum 1",
        ),
        (
            "HEALTH_CHECK_RETRY_INTERVAL_SECS",
            "18446744073709551616",
            "above the maximum",
        ),
        (
            "HEALTH_CHECK_MAX_RETRY",
            "4294967296",
            "above the maximum 100",
        ),
        (
            "HEALTH_CHECK_INTERVAL_MINS",
            "9223372036854775807",
            "above the maximum",
        ),
        (
            "STATE_MACHINE_TIMEOUT_MINS",
            "-9223372036854775809",
            "below the minimum 1",
        ),
        (
            "MWAA_CREATE_ENV_POLLING_INTERVAL_SECS",
            "0",
            "below the minimum 1",
        ),
    ];
    for (name, value, problem) in cases {
        for command in ["config", "health-check"] {
            let dir = tempfile::tempdir().expect("tempdir");
            // With the retries this would take, a valid rate of 1e308 used to overflow the
            // backoff's Duration; nothing answers at the AWS endpoint, so every look fails.
            let out = run(mwaa_dr(dir.path())
                .env("PRIMARY_MWAA_ENVIRONMENT_NAME", "primary")
                .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
                .env("AWS_ACCESS_KEY_ID", "testing")
                .env("AWS_SECRET_ACCESS_KEY", "testing")
                .env("AWS_REGION", "us-east-1")
                .env("HEALTH_CHECK_MAX_RETRY", "2")
                .env("HEALTH_CHECK_RETRY_INTERVAL_SECS", "1")
                .env(name, value)
                .arg(command));
            assert_eq!(out.code, 2, "{name}={value} {command}: {}", out.stderr);
            assert!(
                out.stderr.contains(name) && out.stderr.contains(problem),
                "{name}={value} {command}: {}",
                out.stderr
            );
        }
    }
}

/// Logs through a pipe (cron, CI, `2>file`) are plain text: no terminal colour codes.
#[test]
fn logs_are_not_coloured_through_a_pipe() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    std::fs::create_dir_all(store.join("locks")).expect("locks dir");
    // A lock file that is not a mwaa-dr lock makes `prune` log a warning (and, failing
    // closed, count it as held).
    std::fs::write(store.join("locks").join("junk.json"), "not json").expect("junk lock");
    let out =
        run(mwaa_dr(dir.path())
            .arg("--store")
            .arg(&store)
            .args(["prune", "--keep-last", "3"]));
    assert_eq!(out.code, 5, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("a lock file that is not a mwaa-dr lock"),
        "the warning is logged: {}",
        out.stderr
    );
    assert!(
        !out.stderr.contains('\x1b'),
        "colour codes: {:?}",
        out.stderr
    );
}

/// Every file under `dir`, as bytes, with its path.
fn files(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            let bytes = std::fs::read(&path).expect("read file");
            out.push((path, bytes));
        }
    }
    out
}

fn assert_absent(what: &str, text: &str, secret: &str) {
    assert!(!text.contains(secret), "{what} shows the password:\n{text}");
}

/// A password given as a URL query parameter (percent-encoded, among other parameters)
/// connects, and reaches neither the store, nor `list`, nor `config`, nor a connection error;
/// `latest` names the backup it made.
#[tokio::test]
async fn query_passwords_reach_no_store_and_no_output() {
    let Some(bench) = Bench::get() else {
        return;
    };
    let src = bench.airflow_db("qpw_src", "2.10.3", true);
    let dst = bench.airflow_db("qpw_dst", "2.10.3", false);
    let role = format!("qpw_{}", std::process::id());
    // The marker is unique to this test; '/' goes percent-encoded into the URL.
    let secret = format!("Q-uniq/pw-{}", std::process::id());
    let marker = "Q-uniq";
    bench.sql(
        &src,
        &format!(
            "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{secret}'"
        ),
    );
    let with_query_password = |admin_url: &str| {
        let mut url = url::Url::parse(admin_url).expect("bench URL");
        url.set_username("").expect("no user");
        url.set_password(None).expect("no password");
        url.set_query(Some(&format!(
            "sslmode=disable&user={role}&password={}&application_name=mwaa-dr-test",
            secret.replace('/', "%2F")
        )));
        url.to_string()
    };
    let src_url = with_query_password(&src);
    let dst_url = with_query_password(&dst);
    assert!(src_url.contains("password=Q-uniq%2Fpw"), "{src_url}");

    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let cmd = || {
        let mut cmd = mwaa_dr(dir.path());
        cmd.env("PRIMARY_DB_URL", &src_url)
            .env("SECONDARY_DB_URL", &dst_url)
            .arg("--store")
            .arg(&store);
        cmd
    };
    let backup = run(cmd().args(["-v", "--output", "json", "backup"]));
    assert_eq!(backup.code, 0, "backup: {}", backup.stderr);
    assert_absent("backup stdout", &backup.stdout, marker);
    assert_absent("backup logs", &backup.stderr, marker);
    assert!(!backup.stderr.contains('\x1b'), "{:?}", backup.stderr);

    let stored = files(&store);
    assert!(stored.len() > 2, "the backup wrote its objects");
    for (path, bytes) in &stored {
        let text = String::from_utf8_lossy(bytes);
        assert_absent(&path.display().to_string(), &text, marker);
        assert_absent(&path.display().to_string(), &text, &role);
    }
    let port = url::Url::parse(&src)
        .expect("bench URL")
        .port()
        .expect("bench port");
    let src_db = src.rsplit('/').next().expect("database name");
    let backup_doc: Value = serde_json::from_str(&backup.stdout).expect("backup JSON");
    let id = backup_doc["backup_id"]
        .as_str()
        .expect("backup id")
        .to_string();
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(store.join("backups").join(&id).join("manifest.json")).expect("manifest"),
    )
    .expect("manifest JSON");
    assert_eq!(
        manifest["source"]["database"],
        format!("127.0.0.1:{port}/{src_db}")
    );

    for args in [
        &["list"][..],
        &["--output", "json", "list"],
        &["config"],
        &["--output", "json", "config"],
    ] {
        let out = run(cmd().args(args));
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        assert_absent(&format!("{args:?}"), &out.stdout, marker);
        assert_absent(&format!("{args:?} stderr"), &out.stderr, marker);
    }
    let config = run(cmd().arg("config"));
    assert!(config.stdout.contains("password=***"), "{}", config.stdout);

    // `latest` is the backup just made, for verify and restore alike.
    let verify = run(cmd().args(["--output", "json", "verify", "latest"]));
    assert_eq!(verify.code, 0, "verify latest: {}", verify.stderr);
    assert!(verify.stdout.contains(&id), "{}", verify.stdout);
    let restore = run(cmd().args([
        "--yes",
        "--output",
        "json",
        "restore",
        "--backup-id",
        "latest",
    ]));
    assert_eq!(restore.code, 0, "restore latest: {}", restore.stderr);
    assert!(restore.stdout.contains(&id), "{}", restore.stdout);
    assert_absent("restore", &restore.stdout, marker);

    // A manifest written before sources were reduced to HOST:PORT/DATABASE: list shows no
    // credential of it either.
    let manifest_path = store.join("backups").join(&id).join("manifest.json");
    let old = std::fs::read_to_string(&manifest_path)
        .expect("manifest")
        .replace(
            &format!("\"127.0.0.1:{port}/{src_db}\""),
            &format!("\"postgres://u:{marker}@127.0.0.1:{port}/{src_db}?password={marker}\""),
        );
    std::fs::write(&manifest_path, old).expect("rewrite manifest");
    for args in [&["list"][..], &["--output", "json", "list"]] {
        let out = run(cmd().args(args));
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        assert_absent(&format!("old manifest {args:?}"), &out.stdout, marker);
    }

    // A connection that fails (nothing listens on port 1) names the database, not the
    // password; so does a refused key=value string, from the environment or the flag.
    let wrong_port = src_url.replace(&format!(":{port}/"), ":1/");
    let failed = run(mwaa_dr(dir.path())
        .env("PRIMARY_DB_URL", &wrong_port)
        .arg("--store")
        .arg(&store)
        .arg("backup"));
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    assert!(failed.stderr.contains("connect"), "{}", failed.stderr);
    assert_absent("connection error", &failed.stderr, marker);
    let key_value =
        format!("host=127.0.0.1 port={port} user={role} password='{secret}' dbname={src_db}");
    let refused_env = run(mwaa_dr(dir.path())
        .env("PRIMARY_DB_URL", &key_value)
        .arg("--store")
        .arg(&store)
        .arg("backup"));
    let refused_flag = run(mwaa_dr(dir.path())
        .arg("--store")
        .arg(&store)
        .args(["backup", "--db", &key_value]));
    for refused in [refused_env, refused_flag] {
        assert_eq!(refused.code, 2, "{}", refused.stderr);
        assert!(refused.stderr.contains("key=value"), "{}", refused.stderr);
        assert_absent("key=value error", &refused.stderr, marker);
    }
    bench.sql(&src, &format!("DROP ROLE IF EXISTS {role}"));
}
