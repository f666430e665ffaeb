//! Secrets across Fernet keys: backups keep ciphertext, restores re-encrypt it from the source
//! environment's keys to the target's, and Airflow's own CLI reads it under the target key.

use std::path::Path;

use mwaa_dr::airflow::fernet::FernetKeys;
use serde_json::Value;

use crate::airflow_cli::{airflow, airflow_venv};
use crate::common::{Run, mwaa_dr, run};
use crate::pg::{Bench, connect, whole_db_digest};

pub(crate) const VAR_SECRET: &str = "variable-plaintext-7f3a91";
pub(crate) const OLD_KEY_SECRET: &str = "old-key-plaintext-c04e";
pub(crate) const KEPT_SECRET: &str = "source-kept-plaintext-61bd";
pub(crate) const LOOKALIKE: &str = "lookalike-plaintext-33ad";
pub(crate) const CONN_PASSWORD: &str = "conn-password-plaintext-5d2b";
pub(crate) const CONN_EXTRA: &str = r#"{"api_token": "extra-plaintext-e81c"}"#;
pub(crate) const TRIGGER_KWARGS: &str =
    r#"{"__var": {"secret": "trigger-plaintext-9a40", "poke": 5}, "__type": "dict"}"#;
pub(crate) const PLAIN_KWARGS: &str = r#"{"__var": {"delta": 60.0}, "__type": "dict"}"#;

pub(crate) fn new_key() -> String {
    fernet::Fernet::generate_key()
}

pub(crate) fn encrypt(keys: &str, plaintext: &str) -> String {
    FernetKeys::parse(keys)
        .expect("key list")
        .encrypt(plaintext.as_bytes())
}

/// The plaintext when `keys` decrypt `token`.
pub(crate) fn decrypt(keys: &str, token: &str) -> Option<String> {
    FernetKeys::parse(keys)
        .expect("key list")
        .decrypt(token)
        .ok()
        .map(|bytes| String::from_utf8(bytes).expect("utf-8 plaintext"))
}

/// Keys of the test: the source encrypts with `a` (and once with its older key `x`), the
/// target's list is `b,c`.
pub(crate) struct Keys {
    pub(crate) a: String,
    pub(crate) x: String,
    pub(crate) b: String,
    pub(crate) c: String,
}

impl Keys {
    pub(crate) fn new() -> Keys {
        Keys {
            a: new_key(),
            x: new_key(),
            b: new_key(),
            c: new_key(),
        }
    }

    pub(crate) fn source(&self) -> String {
        format!("{},{}", self.x, self.a)
    }

    pub(crate) fn target(&self) -> String {
        format!("{},{}", self.b, self.c)
    }
}

/// A 2.10.3 source with the sample metadata whose secrets are real ciphertext of `keys.a`
/// (one of `keys.x`), a plain value that looks like a token, and two triggers (encrypted and
/// plain JSON kwargs).
pub(crate) fn source_db(bench: &Bench, name: &str, keys: &Keys) -> String {
    let src = bench.airflow_db(name, "2.10.3", true);
    let a = &keys.a;
    bench.sql(
        &src,
        &format!(
            "UPDATE variable SET val = '{var}' WHERE key = 'secret';
             INSERT INTO variable (key, val, description, is_encrypted) VALUES
               ('old_secret', '{old}', 'encrypted with the older key', true),
               ('kept_secret', '{kept}', NULL, true),
               ('token_lookalike', '{lookalike}', 'not encrypted, looks like it', false);
             UPDATE connection SET password = '{password}', extra = '{extra}', is_extra_encrypted = true
               WHERE conn_id = 'warehouse';
             INSERT INTO trigger (id, classpath, kwargs, created_date) VALUES
               (41, 'airflow.sensors.base.PokeTrigger', '{kwargs}', now()),
               (42, 'airflow.triggers.temporal.TimeDeltaTrigger', '{PLAIN_KWARGS}', now());",
            var = encrypt(a, VAR_SECRET),
            old = encrypt(&keys.x, OLD_KEY_SECRET),
            kept = encrypt(a, KEPT_SECRET),
            lookalike = encrypt(a, LOOKALIKE),
            password = encrypt(a, CONN_PASSWORD),
            extra = encrypt(a, CONN_EXTRA),
            kwargs = encrypt(a, TRIGGER_KWARGS),
        ),
    );
    src
}

fn backup(dir: &Path, store: &Path, db: &str) -> String {
    let out = run(mwaa_dr(dir)
        .arg("--store")
        .arg(store)
        .args(["--output", "json", "backup", "--db", db]));
    assert_eq!(out.code, 0, "backup failed: {}", out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).expect("backup JSON");
    doc["backup_id"].as_str().expect("backup id").to_string()
}

fn restore(dir: &Path, store: &Path, db: &str, env: &[(&str, &str)], extra: &[&str]) -> Run {
    let mut cmd = mwaa_dr(dir);
    cmd.arg("--store")
        .arg(store)
        .args(["--yes", "restore", "--db", db])
        .args(extra);
    for (name, value) in env {
        cmd.env(name, value);
    }
    run(&mut cmd)
}

fn restore_json(dir: &Path, store: &Path, db: &str, env: &[(&str, &str)], extra: &[&str]) -> Value {
    let mut cmd = mwaa_dr(dir);
    cmd.arg("--store")
        .arg(store)
        .args(["--output", "json", "--yes", "restore", "--db", db])
        .args(extra);
    for (name, value) in env {
        cmd.env(name, value);
    }
    let out = run(&mut cmd);
    assert_eq!(out.code, 0, "restore failed: {}", out.stderr);
    serde_json::from_str(&out.stdout).expect("restore JSON")
}

pub(crate) async fn variable(url: &str, key: &str) -> (String, bool) {
    let mut conn = connect(url).await;
    sqlx::query_as("SELECT val, is_encrypted FROM variable WHERE key = $1")
        .bind(key)
        .fetch_one(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("variable {key}: {e}"))
}

/// (password, extra, is_encrypted, is_extra_encrypted, host, login)
pub(crate) type ConnectionRow = (
    Option<String>,
    Option<String>,
    bool,
    bool,
    Option<String>,
    Option<String>,
);

pub(crate) async fn connection(url: &str, conn_id: &str) -> ConnectionRow {
    let mut conn = connect(url).await;
    sqlx::query_as(
        "SELECT password, extra, is_encrypted, is_extra_encrypted, host, login FROM connection WHERE conn_id = $1",
    )
    .bind(conn_id)
    .fetch_one(&mut conn)
    .await
    .unwrap_or_else(|e| panic!("connection {conn_id}: {e}"))
}

pub(crate) async fn trigger_kwargs(url: &str, id: i32) -> String {
    let mut conn = connect(url).await;
    sqlx::query_scalar("SELECT kwargs FROM trigger WHERE id = $1")
        .bind(id)
        .fetch_one(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("trigger {id}: {e}"))
}

/// Every object of a backup, decompressed, holds the ciphertext and none of the plaintexts.
#[tokio::test]
async fn rekey_backup_holds_ciphertext_and_no_plaintext() {
    let Some(bench) = Bench::get() else { return };
    let keys = Keys::new();
    let src = source_db(&bench, "rekey_plain_src", &keys);
    let (token, _) = variable(&src, "secret").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let id = backup(dir.path(), &store, &src);
    let mut everything = Vec::new();
    let mut objects = 0;
    for file in std::fs::read_dir(store.join("backups").join(&id)).expect("backup directory") {
        let path = file.expect("entry").path();
        let bytes = std::fs::read(&path).expect("object");
        if path.extension().is_some_and(|e| e == "zst") {
            objects += 1;
            everything.extend(zstd::decode_all(bytes.as_slice()).expect("zstd object"));
        } else {
            everything.extend(bytes);
        }
        everything.push(b'\n');
    }
    assert!(objects > 10, "only {objects} table objects");
    let text = String::from_utf8_lossy(&everything);
    for plaintext in [
        VAR_SECRET,
        OLD_KEY_SECRET,
        KEPT_SECRET,
        LOOKALIKE,
        CONN_PASSWORD,
        "extra-plaintext-e81c",
        "trigger-plaintext-9a40",
    ] {
        assert!(
            !text.contains(plaintext),
            "the backup holds the plaintext {plaintext}"
        );
    }
    assert!(text.contains(&token), "the ciphertext itself is backed up");
    assert!(text.contains("delta"), "plain trigger kwargs are backed up");
}

/// Source keys "X,A", target keys "B,C": every encrypted value reaches the target readable by
/// B alone, flags kept; plain values, the target's own rows and plain JSON kwargs untouched.
#[tokio::test]
async fn rekey_restore_reencrypts_for_the_target_key() {
    let Some(bench) = Bench::get() else { return };
    let keys = Keys::new();
    let src = source_db(&bench, "rekey_src", &keys);
    let dst = bench.airflow_db("rekey_dst", "2.10.3", false);
    let target_own = encrypt(&keys.b, "target-own-value");
    bench.sql(
        &dst,
        &format!(
            "INSERT INTO variable (key, val, is_encrypted) VALUES ('kept_secret', '{target_own}', true)"
        ),
    );
    let (lookalike_before, _) = variable(&src, "token_lookalike").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    backup(dir.path(), &store, &src);
    let (source, target) = (keys.source(), keys.target());
    let doc = restore_json(
        dir.path(),
        &store,
        &dst,
        &[
            ("PRIMARY_FERNET_KEY", &source),
            ("SECONDARY_FERNET_KEY", &target),
        ],
        &[],
    );
    assert_eq!(doc["fernet"], "reencrypted", "{doc}");
    // APPEND keeps the target's own kept_secret: it is not counted.
    assert_eq!(
        doc["rekeyed"],
        serde_json::json!({
            "variable.val": 2,
            "connection.password": 1,
            "connection.extra": 1,
            "trigger.kwargs": 1,
        }),
        "{doc}"
    );

    let b = &keys.b;
    for (key, plaintext) in [("secret", VAR_SECRET), ("old_secret", OLD_KEY_SECRET)] {
        let (val, encrypted) = variable(&dst, key).await;
        assert!(encrypted, "{key}: is_encrypted kept");
        assert_eq!(decrypt(b, &val).as_deref(), Some(plaintext), "{key}");
        assert_eq!(
            decrypt(&keys.source(), &val),
            None,
            "{key}: no source key reads it"
        );
    }
    assert_eq!(variable(&dst, "kept_secret").await, (target_own, true));
    assert_eq!(
        variable(&dst, "token_lookalike").await,
        (lookalike_before, false),
        "a value not flagged encrypted is copied as it is"
    );
    assert_eq!(variable(&dst, "plain").await, ("hello".into(), false));

    let (password, extra, encrypted, extra_encrypted, host, login) =
        connection(&dst, "warehouse").await;
    assert!(encrypted && extra_encrypted, "flags kept");
    assert_eq!(
        decrypt(b, password.as_deref().expect("password")).as_deref(),
        Some(CONN_PASSWORD)
    );
    assert_eq!(
        decrypt(b, extra.as_deref().expect("extra")).as_deref(),
        Some(CONN_EXTRA)
    );
    assert_eq!(
        (host.as_deref(), login.as_deref()),
        (Some("wh.example"), Some("etl"))
    );
    assert_eq!(
        connection(&dst, "shared_conn").await,
        connection(&src, "shared_conn").await,
        "an unencrypted connection is untouched"
    );

    assert_eq!(
        decrypt(b, &trigger_kwargs(&dst, 41).await).as_deref(),
        Some(TRIGGER_KWARGS)
    );
    assert_eq!(trigger_kwargs(&dst, 42).await, PLAIN_KWARGS);
}

/// Ciphertext is copied byte for byte when the target key is unknown or both keys are the
/// same; AIRFLOW__CORE__FERNET_KEY stands in for either side; REPLACE re-encrypts too.
#[tokio::test]
async fn rekey_copies_ciphertext_when_keys_match_or_one_is_unknown() {
    let Some(bench) = Bench::get() else { return };
    let keys = Keys::new();
    let src = source_db(&bench, "rekey_copy_src", &keys);
    let dst = bench.airflow_db("rekey_copy_dst", "2.10.3", false);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    backup(dir.path(), &store, &src);
    let source = keys.source();
    let (secret_src, _) = variable(&src, "secret").await;
    let (password_src, ..) = connection(&src, "warehouse").await;
    let kwargs_src = trigger_kwargs(&src, 41).await;

    let doc = restore_json(
        dir.path(),
        &store,
        &dst,
        &[("PRIMARY_FERNET_KEY", &source)],
        &[],
    );
    assert_eq!(doc["fernet"], "copied_no_target_key", "{doc}");
    assert_eq!(doc["rekeyed"], serde_json::json!({}), "{doc}");
    assert_eq!(variable(&dst, "secret").await.0, secret_src);
    assert_eq!(connection(&dst, "warehouse").await.0, password_src);
    assert_eq!(trigger_kwargs(&dst, 41).await, kwargs_src);

    let replace = [
        ("DR_VARIABLE_RESTORE_STRATEGY", "REPLACE"),
        ("DR_CONNECTION_RESTORE_STRATEGY", "REPLACE"),
    ];
    let out = restore(
        dir.path(),
        &store,
        &dst,
        &[
            replace[0],
            replace[1],
            ("AIRFLOW__CORE__FERNET_KEY", &source),
        ],
        &["--clean"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("Fernet ciphertext copied as it is: the source and target keys are the same"),
        "{}",
        out.stdout
    );
    assert_eq!(variable(&dst, "secret").await.0, secret_src);

    let b = keys.b.clone();
    let doc = restore_json(
        dir.path(),
        &store,
        &dst,
        &[
            replace[0],
            replace[1],
            ("AIRFLOW__CORE__FERNET_KEY", &source),
            ("SECONDARY_FERNET_KEY", &b),
        ],
        &["--clean"],
    );
    assert_eq!(doc["fernet"], "reencrypted", "{doc}");
    assert_eq!(doc["rekeyed"]["variable.val"], 3, "{doc}");
    assert_eq!(
        decrypt(&b, &variable(&dst, "kept_secret").await.0).as_deref(),
        Some(KEPT_SECRET)
    );
    assert_eq!(
        decrypt(&b, &trigger_kwargs(&dst, 41).await).as_deref(),
        Some(TRIGGER_KWARGS)
    );
}

/// A value no source key decrypts fails the restore naming its table and row; the target is
/// left exactly as it was — for a variable, a connection and a trigger.
#[tokio::test]
async fn rekey_undecryptable_value_fails_naming_the_row() {
    let Some(bench) = Bench::get() else { return };
    let keys = Keys::new();
    let src = source_db(&bench, "rekey_bad_src", &keys);
    let dst = bench.airflow_db("rekey_bad_dst", "2.10.3", false);
    bench.sql(
        &dst,
        "INSERT INTO variable (key, val) VALUES ('target_only', 'stays'); INSERT INTO connection (conn_id, conn_type, host) VALUES ('target_conn', 'http', 'standby.example')",
    );
    let before = whole_db_digest(&dst).await;
    let unknown = new_key();
    let foreign = encrypt(&unknown, "encrypted with a key nobody has");
    let good_password = connection(&src, "warehouse").await.0.expect("password");
    let good_kwargs = trigger_kwargs(&src, 41).await;
    let cases = [
        (
            format!("UPDATE variable SET val = '{foreign}' WHERE key = 'old_secret'"),
            "variable key=old_secret",
            "UPDATE variable SET is_encrypted = false WHERE key = 'old_secret'".to_string(),
        ),
        (
            format!("UPDATE connection SET password = '{foreign}' WHERE conn_id = 'warehouse'"),
            "connection conn_id=warehouse",
            format!(
                "UPDATE connection SET password = '{good_password}' WHERE conn_id = 'warehouse'"
            ),
        ),
        (
            format!("UPDATE trigger SET kwargs = '{foreign}' WHERE id = 41"),
            "trigger id=41",
            format!("UPDATE trigger SET kwargs = '{good_kwargs}' WHERE id = 41"),
        ),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let (source, target) = (keys.source(), keys.target());
    for (break_it, row, repair) in cases {
        bench.sql(&src, &break_it);
        // Backups made within one second need not sort in order: name the one to restore.
        let id = backup(dir.path(), &store, &src);
        let out = restore(
            dir.path(),
            &store,
            &dst,
            &[
                ("PRIMARY_FERNET_KEY", &source),
                ("SECONDARY_FERNET_KEY", &target),
            ],
            &["--clean", "--backup-id", &id],
        );
        assert_eq!(out.code, 1, "{row}: {}", out.stderr);
        assert!(
            out.stderr.contains(row) && out.stderr.contains("cannot be decrypted"),
            "the row is named ({row}): {}",
            out.stderr
        );
        assert!(!out.stderr.contains(&source) && !out.stderr.contains(&target));
        assert_eq!(
            whole_db_digest(&dst).await,
            before,
            "{row}: the target changed"
        );
        bench.sql(&src, &repair);
    }
}

/// Airflow 2.10.3 itself writes the secrets under key A into the source, and after a restore
/// with PRIMARY_FERNET_KEY=A, SECONDARY_FERNET_KEY=B reads them under key B on the target.
#[tokio::test]
async fn rekey_airflow_cli_reads_restored_secrets_with_the_target_key() {
    let Some(bench) = Bench::get() else { return };
    let Some(venv) = airflow_venv("2.10.3") else {
        return;
    };
    let keys = Keys::new();
    let src = bench.airflow_db("rekey_cli_src", "2.10.3", false);
    let dst = bench.airflow_db("rekey_cli_dst", "2.10.3", false);
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("airflow-home");
    std::fs::create_dir_all(&home).expect("AIRFLOW_HOME");
    let password = "p@ss wörd, from the CLI";
    let value = "variable value from the CLI";
    airflow(
        &venv,
        &home,
        &src,
        &keys.a,
        &["variables", "set", "cli_secret", value],
    );
    airflow(
        &venv,
        &home,
        &src,
        &keys.a,
        &[
            "connections",
            "add",
            "cli_conn",
            "--conn-type",
            "http",
            "--conn-host",
            "api.example",
            "--conn-login",
            "robot",
            "--conn-password",
            password,
            "--conn-extra",
            r#"{"token": "extra from the CLI"}"#,
        ],
    );
    let (stored, encrypted) = variable(&src, "cli_secret").await;
    assert!(encrypted && stored.starts_with("gAAAAA"), "{stored}");

    let store = dir.path().join("store");
    backup(dir.path(), &store, &src);
    let out = restore(
        dir.path(),
        &store,
        &dst,
        &[
            ("PRIMARY_FERNET_KEY", &keys.a),
            ("SECONDARY_FERNET_KEY", &keys.b),
        ],
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("Fernet secrets re-encrypted")
            && out.stdout.contains("variable.val 1")
            && out.stdout.contains("connection.password 1")
            && out.stdout.contains("connection.extra 1"),
        "{}",
        out.stdout
    );

    let got = airflow(
        &venv,
        &home,
        &dst,
        &keys.b,
        &["variables", "get", "cli_secret"],
    );
    assert!(got.lines().any(|l| l == value), "variables get:\n{got}");
    let got = airflow(
        &venv,
        &home,
        &dst,
        &keys.b,
        &["connections", "get", "cli_conn", "-o", "json"],
    );
    let json = got
        .lines()
        .find(|l| l.starts_with('['))
        .unwrap_or_else(|| panic!("no JSON in connections get:\n{got}"));
    let doc: Value = serde_json::from_str(json).expect("connections get JSON");
    assert_eq!(doc[0]["password"], password, "{doc}");
    assert_eq!(
        doc[0]["extra_dejson"]["token"], "extra from the CLI",
        "{doc}"
    );
    assert_eq!(doc[0]["is_encrypted"], "True", "{doc}");
}
