//! Secrets that travel: backups under a KMS data key (moto's KMS through the real SDK) or a
//! shared key, restored where only the target's own key is known; a backup under a key the
//! restore cannot obtain is refused before anything is written.

use std::path::Path;

use base64::Engine;
use mwaa_dr::airflow::fernet::FernetKeys;
use serde_json::Value;

use crate::airflow_cli::{airflow, airflow_venv};
use crate::aws::{Aws, PRIMARY_REGION, SECONDARY_REGION};
use crate::common::{Run, mwaa_dr, run};
use crate::pg::{Bench, whole_db_digest};
use crate::rekey::{
    CONN_EXTRA, CONN_PASSWORD, KEPT_SECRET, Keys, LOOKALIKE, OLD_KEY_SECRET, TRIGGER_KWARGS,
    VAR_SECRET, connection, decrypt, new_key, source_db, trigger_kwargs, variable,
};

const PLAINTEXTS: &[&str] = &[
    VAR_SECRET,
    OLD_KEY_SECRET,
    KEPT_SECRET,
    LOOKALIKE,
    CONN_PASSWORD,
    "extra-plaintext-e81c",
    "trigger-plaintext-9a40",
];

fn kms_client(aws: &Aws, region: &str) -> aws_sdk_kms::Client {
    let config = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_string()))
        .endpoint_url(&aws.moto)
        .credentials_provider(aws_sdk_kms::config::SharedCredentialsProvider::new(
            aws_sdk_kms::config::Credentials::new("testing", "testing", None, None, "bench"),
        ))
        .build();
    aws_sdk_kms::Client::new(&config)
}

/// A key in the primary Region; with `replica`, replicated to the secondary, as a
/// multi-Region key's replica is in AWS.
///
/// moto 5.2.5 quirk: its ciphertext blobs hold a 36-byte key id, so a data key wrapped by
/// a multi-Region key (`mrk-` + 36 characters) never decrypts there (AccessDenied). moto
/// replicates a single-Region key too (see below), and that stands in for the multi-Region key:
/// the binary does the same calls either way.
async fn replicated_key(aws: &Aws, replica: bool) -> String {
    let primary = kms_client(aws, PRIMARY_REGION);
    let key = primary
        .create_key()
        .multi_region(false)
        .description(format!("mwaa-dr backups {}", aws.tag))
        .send()
        .await
        .expect("CreateKey");
    let id = key
        .key_metadata()
        .map(|m| m.key_id().to_string())
        .expect("key id");
    if replica {
        // moto replicates the single-Region key, then fails to describe the replica in its
        // answer (HTTP 500); the replica is there, as DescribeKey in its Region shows.
        let _ = primary
            .replicate_key()
            .key_id(&id)
            .replica_region(SECONDARY_REGION)
            .send()
            .await;
        kms_client(aws, SECONDARY_REGION)
            .describe_key()
            .key_id(&id)
            .send()
            .await
            .expect("the replica in the secondary Region");
    }
    id
}

/// Runs the binary with the AWS variables of the bench and `env`.
fn mwaa(dir: &Path, store: &Path, aws: &Aws, env: &[(&str, &str)], args: &[&str]) -> Run {
    let mut cmd = mwaa_dr(dir);
    aws.env(&mut cmd);
    for (name, value) in env {
        cmd.env(name, value);
    }
    cmd.arg("--store").arg(store).args(args);
    run(&mut cmd)
}

fn backup(dir: &Path, store: &Path, aws: &Aws, db: &str, env: &[(&str, &str)]) -> String {
    let out = mwaa(
        dir,
        store,
        aws,
        env,
        &["--output", "json", "backup", "--db", db],
    );
    assert_eq!(out.code, 0, "backup failed: {}", out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).expect("backup JSON");
    doc["backup_id"].as_str().expect("backup id").to_string()
}

fn restore(dir: &Path, store: &Path, aws: &Aws, db: &str, env: &[(&str, &str)]) -> Run {
    mwaa(
        dir,
        store,
        aws,
        env,
        &[
            "--output", "json", "--yes", "restore", "--clean", "--db", db,
        ],
    )
}

fn manifest(store: &Path, id: &str) -> Value {
    let path = store.join("backups").join(id).join("manifest.json");
    serde_json::from_slice(&std::fs::read(path).expect("manifest")).expect("manifest JSON")
}

/// Every object of the store, `.zst` ones decompressed, as one text.
fn store_text(dir: &Path) -> String {
    let mut all = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).expect("directory") {
                stack.push(entry.expect("entry").path());
            }
            continue;
        }
        let bytes = std::fs::read(&path).expect("object");
        if path.extension().is_some_and(|e| e == "zst") {
            all.extend(zstd::decode_all(bytes.as_slice()).expect("zstd object"));
        } else {
            all.extend(bytes);
        }
        all.push(b'\n');
    }
    String::from_utf8_lossy(&all).into_owned()
}

/// Every encoding of `key` (a Fernet key's text) that could leak it: its text with and
/// without padding, standard base64 and hex of its bytes.
fn key_forms(key: &str) -> Vec<String> {
    let bytes = base64::engine::general_purpose::URL_SAFE
        .decode(key)
        .expect("Fernet key text");
    vec![
        key.to_string(),
        key.trim_end_matches('=').to_string(),
        base64::engine::general_purpose::STANDARD.encode(&bytes),
        hex::encode(&bytes),
    ]
}

fn assert_no_secret_in_store(store: &Path, keys: &[&str]) {
    let text = store_text(store);
    assert!(text.contains("variable"), "the store was read");
    for plaintext in PLAINTEXTS {
        assert!(!text.contains(plaintext), "the store holds {plaintext}");
    }
    for key in keys {
        for form in key_forms(key) {
            assert!(!text.contains(&form), "the store holds a key ({form})");
        }
    }
}

/// The restored secrets decrypt under the target key `b` alone.
async fn assert_readable_under(dst: &str, b: &str, source: &str) {
    for (key, plaintext) in [
        ("secret", VAR_SECRET),
        ("old_secret", OLD_KEY_SECRET),
        ("kept_secret", KEPT_SECRET),
    ] {
        let (val, encrypted) = variable(dst, key).await;
        assert!(encrypted, "{key}: is_encrypted kept");
        assert_eq!(decrypt(b, &val).as_deref(), Some(plaintext), "{key}");
        assert_eq!(
            decrypt(source, &val),
            None,
            "{key}: the source key no longer"
        );
    }
    let (password, extra, ..) = connection(dst, "warehouse").await;
    assert_eq!(
        decrypt(b, password.as_deref().expect("password")).as_deref(),
        Some(CONN_PASSWORD)
    );
    assert_eq!(
        decrypt(b, extra.as_deref().expect("extra")).as_deref(),
        Some(CONN_EXTRA)
    );
    assert_eq!(
        decrypt(b, &trigger_kwargs(dst, 41).await).as_deref(),
        Some(TRIGGER_KWARGS)
    );
    // A value not flagged encrypted is neither decrypted nor re-encrypted.
    let (lookalike, flagged) = variable(dst, "token_lookalike").await;
    assert!(!flagged);
    assert_eq!(decrypt(b, &lookalike), None);
}

/// Source keys "X,A", target "B,C": the backup puts every secret under a KMS data key of a
/// multi-Region key; the restore, in the secondary Region with only the target's key (no
/// PRIMARY_FERNET_KEY), unwraps it there and re-encrypts for B. Neither a plaintext nor the
/// data key is anywhere in the store; Airflow 2.10.3's CLI reads the secrets under B.
#[tokio::test]
async fn kms_backup_restores_across_fernet_keys_with_only_the_targets_key() {
    let Some(bench) = Bench::get() else { return };
    let Some(aws) = Aws::get("kms_backup_restores") else {
        return;
    };
    let key_id = replicated_key(&aws, true).await;
    let keys = Keys::new();
    let src = source_db(&bench, "kms_src", &keys);
    let dst = bench.airflow_db("kms_dst", "2.10.3", false);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let source = keys.source();
    let id = backup(
        dir.path(),
        &store,
        &aws,
        &src,
        &[("PRIMARY_FERNET_KEY", &source), ("DR_KMS_KEY_ID", &key_id)],
    );

    let recorded = &manifest(&store, &id)["fernet"];
    assert_eq!(recorded["kind"], "kms", "{recorded}");
    assert_eq!(recorded["kms_key_id"], key_id.as_str(), "{recorded}");
    // The data key, as only a kms:Decrypt gets it: the fingerprint names it, the store
    // holds it nowhere, and the stored ciphertext is under it (not under the source key).
    let bytes = data_key_bytes(&aws, recorded).await;
    let data_key = FernetKeys::from_data_key(&bytes).expect("32 bytes");
    assert_eq!(recorded["fingerprint"], data_key.fingerprint().as_str());
    let data_key_text = base64::engine::general_purpose::URL_SAFE.encode(&bytes);
    assert_no_secret_in_store(&store, &[&data_key_text, &keys.a, &keys.x]);
    let text = store_text(&store);
    let stored_token = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || "-_=".contains(c)))
        .any(|t| {
            t.starts_with("gAAAAA")
                && data_key
                    .decrypt(t)
                    .is_ok_and(|p| p == VAR_SECRET.as_bytes())
        });
    assert!(stored_token, "the variable is stored under the data key");

    let target = keys.target();
    let out = restore(
        dir.path(),
        &store,
        &aws,
        &dst,
        &[
            ("SECONDARY_FERNET_KEY", &target),
            ("AWS_REGION", SECONDARY_REGION),
        ],
    );
    assert_eq!(out.code, 0, "restore failed: {}", out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).expect("restore JSON");
    assert_eq!(doc["fernet"], "reencrypted", "{doc}");
    assert_eq!(doc["fernet_key"]["kind"], "kms", "{doc}");
    assert_eq!(doc["fernet_key"]["obtained_from"], "kms:Decrypt", "{doc}");
    assert_eq!(doc["rekeyed"]["variable.val"], 3, "{doc}");
    assert_readable_under(&dst, &keys.b, &source).await;

    let Some(venv) = airflow_venv("2.10.3") else {
        return;
    };
    let home = dir.path().join("airflow-home");
    std::fs::create_dir_all(&home).expect("AIRFLOW_HOME");
    let got = airflow(&venv, &home, &dst, &target, &["variables", "get", "secret"]);
    assert!(
        got.lines().any(|l| l == VAR_SECRET),
        "variables get:\n{got}"
    );
    let got = airflow(
        &venv,
        &home,
        &dst,
        &target,
        &["connections", "get", "warehouse", "-o", "json"],
    );
    let json = got
        .lines()
        .find(|l| l.starts_with('['))
        .unwrap_or_else(|| panic!("no JSON in connections get:\n{got}"));
    let conn: Value = serde_json::from_str(json).expect("connections get JSON");
    assert_eq!(conn[0]["password"], CONN_PASSWORD, "{conn}");
    assert_eq!(
        conn[0]["extra_dejson"]["api_token"], "extra-plaintext-e81c",
        "{conn}"
    );
}

/// The raw data key behind a manifest's wrapped key (the test's own kms:Decrypt).
async fn data_key_bytes(aws: &Aws, recorded: &Value) -> Vec<u8> {
    let wrapped = base64::engine::general_purpose::STANDARD
        .decode(recorded["wrapped_key"].as_str().expect("wrapped key"))
        .expect("base64 wrapped key");
    let out = kms_client(aws, PRIMARY_REGION)
        .decrypt()
        .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(wrapped))
        .send()
        .await
        .expect("Decrypt");
    out.plaintext().expect("plaintext").as_ref().to_vec()
}

/// DR_BACKUP_FERNET_KEY: the backup puts every secret under the shared key, the restore
/// (given that key and the target's, not the source's) re-encrypts for B; the shared key
/// is nowhere in the store, and its fingerprint is.
#[tokio::test]
async fn shared_key_backup_restores_across_fernet_keys() {
    let Some(bench) = Bench::get() else { return };
    let Some(aws) = Aws::get("shared_key_backup") else {
        return;
    };
    let keys = Keys::new();
    let shared = new_key();
    let src = source_db(&bench, "shared_src", &keys);
    let dst = bench.airflow_db("shared_dst", "2.10.3", false);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let source = keys.source();
    let id = backup(
        dir.path(),
        &store,
        &aws,
        &src,
        &[
            ("AIRFLOW__CORE__FERNET_KEY", &source),
            ("DR_BACKUP_FERNET_KEY", &shared),
        ],
    );
    let whole = manifest(&store, &id);
    assert_eq!(whole["format_version"], 3, "older builds refuse it");
    let recorded = &whole["fernet"];
    let fingerprint = FernetKeys::parse(&shared).expect("key").fingerprint();
    assert_eq!(
        recorded,
        &serde_json::json!({"kind": "backup_key", "fingerprint": fingerprint}),
    );
    assert_no_secret_in_store(&store, &[&shared, &keys.a, &keys.x]);

    let target = keys.target();
    let out = restore(
        dir.path(),
        &store,
        &aws,
        &dst,
        &[
            ("DR_BACKUP_FERNET_KEY", &shared),
            ("SECONDARY_FERNET_KEY", &target),
        ],
    );
    assert_eq!(out.code, 0, "restore failed: {}", out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).expect("restore JSON");
    assert_eq!(doc["fernet"], "reencrypted", "{doc}");
    assert_eq!(doc["fernet_key"]["obtained_from"], "DR_BACKUP_FERNET_KEY");
    assert_readable_under(&dst, &keys.b, &source).await;

    // A target whose own key is the backup key takes the ciphertext as it is.
    let out = restore(
        dir.path(),
        &store,
        &aws,
        &dst,
        &[
            ("AIRFLOW__CORE__FERNET_KEY", &shared),
            ("DR_VARIABLE_RESTORE_STRATEGY", "REPLACE"),
        ],
    );
    assert_eq!(out.code, 0, "restore failed: {}", out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).expect("restore JSON");
    assert_eq!(doc["fernet"], "copied_same_keys", "{doc}");
    let (val, _) = variable(&dst, "secret").await;
    assert_eq!(decrypt(&shared, &val).as_deref(), Some(VAR_SECRET));
}

/// A backup under a key the restore cannot obtain — a shared key it was not given, a KMS
/// key with no replica in its Region — is refused with the fingerprint and what was tried
/// named, and the target (cleaned by `--clean` otherwise) is exactly as it was.
#[tokio::test]
async fn backup_under_an_unobtainable_key_is_refused_and_nothing_written() {
    let Some(bench) = Bench::get() else { return };
    let Some(aws) = Aws::get("unobtainable_key") else {
        return;
    };
    let keys = Keys::new();
    let src = source_db(&bench, "unobtainable_src", &keys);
    let dst = bench.airflow_db("unobtainable_dst", "2.10.3", true);
    let before = whole_db_digest(&dst).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let source = keys.source();
    let target = keys.target();

    let shared = new_key();
    // Without the source's key there is nothing to re-encrypt from: no backup is made.
    let out = mwaa(
        dir.path(),
        &store,
        &aws,
        &[("DR_BACKUP_FERNET_KEY", &shared)],
        &["backup", "--db", &src],
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("PRIMARY_FERNET_KEY") && out.stderr.contains("DR_BACKUP_FERNET_KEY"),
        "{}",
        out.stderr
    );
    assert!(!store.join("backups").exists(), "no backup was written");
    let id = backup(
        dir.path(),
        &store,
        &aws,
        &src,
        &[
            ("PRIMARY_FERNET_KEY", &source),
            ("DR_BACKUP_FERNET_KEY", &shared),
        ],
    );
    let fingerprint = FernetKeys::parse(&shared).expect("key").fingerprint();
    let other = new_key();
    let out = mwaa(
        dir.path(),
        &store,
        &aws,
        &[
            ("PRIMARY_FERNET_KEY", &source),
            ("SECONDARY_FERNET_KEY", &target),
            ("DR_BACKUP_FERNET_KEY", &other),
        ],
        &[
            "--yes",
            "restore",
            "--clean",
            "--backup-id",
            &id,
            "--db",
            &dst,
        ],
    );
    assert_eq!(out.code, 6, "refused: {}", out.stderr);
    for named in [
        fingerprint.as_str(),
        "DR_BACKUP_FERNET_KEY",
        "PRIMARY_FERNET_KEY",
        "SECONDARY_FERNET_KEY",
        "nothing was restored",
    ] {
        assert!(out.stderr.contains(named), "{named}: {}", out.stderr);
    }
    for key in [&shared, &other, &source, &target] {
        assert!(!out.stderr.contains(key.as_str()), "a key in the error");
    }
    assert_eq!(whole_db_digest(&dst).await, before, "the target changed");

    // The source's own key, which a standby's worker does not have: what used to be copied
    // silently, unreadable there.
    let id = backup(
        dir.path(),
        &store,
        &aws,
        &src,
        &[("AIRFLOW__CORE__FERNET_KEY", &source)],
    );
    let recorded = &manifest(&store, &id)["fernet"];
    assert_eq!(recorded["kind"], "source", "{recorded}");
    let fingerprint = FernetKeys::parse(&source).expect("keys").fingerprint();
    assert_eq!(recorded["fingerprint"], fingerprint.as_str());
    let out = mwaa(
        dir.path(),
        &store,
        &aws,
        &[("AIRFLOW__CORE__FERNET_KEY", &target)],
        &[
            "--yes",
            "restore",
            "--clean",
            "--backup-id",
            &id,
            "--db",
            &dst,
        ],
    );
    assert_eq!(out.code, 6, "refused: {}", out.stderr);
    assert!(
        out.stderr.contains(&fingerprint) && out.stderr.contains("PRIMARY_FERNET_KEY"),
        "{}",
        out.stderr
    );
    assert_eq!(whole_db_digest(&dst).await, before, "the target changed");

    // No replica of the KMS key in the secondary Region: the unwrap fails there.
    let key_id = replicated_key(&aws, false).await;
    let id = backup(
        dir.path(),
        &store,
        &aws,
        &src,
        &[("PRIMARY_FERNET_KEY", &source), ("DR_KMS_KEY_ID", &key_id)],
    );
    let fingerprint = manifest(&store, &id)["fernet"]["fingerprint"]
        .as_str()
        .expect("fingerprint")
        .to_string();
    let out = mwaa(
        dir.path(),
        &store,
        &aws,
        &[
            ("SECONDARY_FERNET_KEY", &target),
            ("AWS_REGION", SECONDARY_REGION),
        ],
        &[
            "--yes",
            "restore",
            "--clean",
            "--backup-id",
            &id,
            "--db",
            &dst,
        ],
    );
    assert_eq!(out.code, 6, "refused: {}", out.stderr);
    for named in [
        fingerprint.as_str(),
        "KMS Decrypt of the backup's wrapped key, which failed: Decrypt failed on",
        "NotFoundException",
        "SECONDARY_FERNET_KEY",
    ] {
        assert!(out.stderr.contains(named), "{named}: {}", out.stderr);
    }
    assert_eq!(whole_db_digest(&dst).await, before, "the target changed");
}

/// Both backup-key variables at once is a configuration error naming both, before anything
/// runs; `config` lists the variables, the shared key redacted.
#[test]
fn both_backup_key_variables_are_an_error_and_config_redacts_the_shared_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = new_key();
    let mut cmd = mwaa_dr(dir.path());
    cmd.env("DR_KMS_KEY_ID", "alias/mwaa-dr")
        .env("DR_BACKUP_FERNET_KEY", &key)
        .args(["backup", "--db", "postgres://nobody@127.0.0.1:1/none"]);
    let out = run(&mut cmd);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("DR_KMS_KEY_ID") && out.stderr.contains("DR_BACKUP_FERNET_KEY"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains(&key), "{}", out.stderr);

    let mut cmd = mwaa_dr(dir.path());
    cmd.env("DR_BACKUP_FERNET_KEY", &key)
        .args(["--output", "json", "config"]);
    let out = run(&mut cmd);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stdout.contains(&key), "{}", out.stdout);
    let doc: Value = serde_json::from_str(&out.stdout).expect("config JSON");
    let entry = |name: &str| {
        doc["variables"]
            .as_array()
            .expect("variables")
            .iter()
            .find(|v| v["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not listed"))
    };
    assert_eq!(entry("DR_BACKUP_FERNET_KEY")["value"], "***");
    assert_eq!(entry("DR_KMS_KEY_ID")["value"], Value::Null);
}
