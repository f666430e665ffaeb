//! The backup layout and its manifest, the commit point of a backup.
//!
//!     backups/<backup-id>/<table>.csv.zst   one object per table, written first
//!     backups/<backup-id>/manifest.json     written last: a backup without it does not exist
//!
//! Next to it: `environments/` (saved MWAA definitions, [`super::environments`]) and `runs/`
//! (reports of DR DAG runs, [`super::runs`]).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{BackupStore, ObjectInfo};
use crate::airflow::catalog::Catalog;
use crate::error::{Error, Result};

/// The manifest format this build writes: 2 adds `absent_tables` and `manifest_sha256`.
pub const FORMAT_VERSION: u32 = 2;

/// The format of a backup whose Fernet secrets are under a backup key (`fernet.kind`
/// `backup_key` or `kms`): a reader that does not know `fernet` would copy ciphertext no
/// target can read, so such a reader must refuse the backup instead.
pub const BACKUP_KEY_FORMAT_VERSION: u32 = 3;

/// Format 1 manifests (written before the checksum and the absent-table reasons) stay
/// readable: backups taken by earlier builds must still restore.
const LEGACY_FORMAT_VERSION: u32 = 1;

/// The field holding the manifest's own checksum.
const CHECKSUM_FIELD: &str = "manifest_sha256";

pub const BACKUPS_PREFIX: &str = "backups/";
const MANIFEST: &str = "manifest.json";

/// Key of an object of a backup.
pub fn object_key(backup_id: &str, name: &str) -> String {
    format!("{BACKUPS_PREFIX}{backup_id}/{name}")
}

pub fn manifest_key(backup_id: &str) -> String {
    object_key(backup_id, MANIFEST)
}

/// A new backup id: UTC time to the millisecond (so ids sort by time, even for backups taken
/// within one second) and a random suffix, e.g. `20261126T183255.123Z-3f9a`.
pub fn new_backup_id(now: DateTime<Utc>) -> String {
    let nanos = now.timestamp_subsec_nanos() as u64;
    let mix = nanos ^ (u64::from(std::process::id()) << 17) ^ 0x9e37_79b9_7f4a_7c15;
    format!(
        "{}-{:04x}",
        now.format("%Y%m%dT%H%M%S%.3fZ"),
        (mix.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 48) as u16
    )
}

/// Whether `id` has the shape of a backup id (guards keys built from user input).
pub fn is_valid_backup_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !id.starts_with('.')
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub tool_version: String,
    pub backup_id: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub source: SourceInfo,
    pub airflow_version: String,
    pub alembic_revision: String,
    /// What was left out, and why.
    pub filters: FilterInfo,
    pub tables: Vec<TableEntry>,
    /// DAGs that were active (not paused) in the source.
    pub active_dags: Vec<String>,
    /// Tables of the catalog the backup does not hold, each with the reason (format 2).
    #[serde(default)]
    pub absent_tables: Vec<AbsentTable>,
    /// The key the Fernet ciphertext of the backup is under; `None` in backups taken before
    /// it was recorded (or without any known key), which restore as they always did.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fernet: Option<FernetKeyInfo>,
    /// SHA-256 of the manifest's canonical form (format 2), see [`canonical_sha256`]. Set by
    /// [`commit`]; `None` in a format 1 manifest.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub manifest_sha256: Option<String>,
}

/// Which key the backup's Fernet ciphertext is under: named by its fingerprint, never
/// stored; for `kms`, the data key wrapped by KMS, which only a `kms:Decrypt` unwraps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FernetKeyInfo {
    pub kind: FernetKeyKind,
    /// See `FernetKeys::fingerprint`.
    pub fingerprint: String,
    /// The KMS key that wrapped the data key (as DR_KMS_KEY_ID gave it), for `kms`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub kms_key_id: Option<String>,
    /// The data key's `CiphertextBlob`, base64, for `kms`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub wrapped_key: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FernetKeyKind {
    /// The source environment's own key: the ciphertext as Airflow wrote it.
    Source,
    /// DR_BACKUP_FERNET_KEY, shared by both sides.
    BackupKey,
    /// A per-backup data key from KMS GenerateDataKey under DR_KMS_KEY_ID.
    Kms,
}

impl FernetKeyKind {
    /// As the manifest spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            FernetKeyKind::Source => "source",
            FernetKeyKind::BackupKey => "backup_key",
            FernetKeyKind::Kms => "kms",
        }
    }
}

/// A table of the catalog that the backup does not hold, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbsentTable {
    pub name: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceInfo {
    /// `HOST:PORT/DATABASE` of the source (never a user, password or parameter).
    pub database: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub environment: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FilterInfo {
    /// Task instances in these states, and the rows that depend on them, are not backed up.
    pub inflight_states: Vec<String>,
    /// Rows of this DAG (the one running `mwaa-dr backup` inside Airflow) are not backed up.
    pub export_dag: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableEntry {
    pub name: String,
    /// Object name inside the backup.
    pub object: String,
    /// Columns in file order (the CSV header).
    pub columns: Vec<String>,
    /// The WHERE clause applied, if any.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub filter: Option<String>,
    pub rows: u64,
    /// Size of the CSV before compression.
    pub csv_bytes: u64,
    /// Size of the stored (compressed) object.
    pub stored_bytes: u64,
    /// SHA-256 of the stored object, hex.
    pub sha256: String,
}

impl Manifest {
    pub fn total_rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }

    pub fn stored_bytes(&self) -> u64 {
        self.tables.iter().map(|t| t.stored_bytes).sum()
    }

    pub fn table(&self, name: &str) -> Option<&TableEntry> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// Refuses a backup that does not account for every table of `catalog` (the catalog a
    /// restore applies): a table neither held nor recorded as absent with a reason would be
    /// restored as nothing and, with `--clean`, emptied in the target. Format 1 manifests do
    /// not record absent tables (their writer skipped tables the source lacked), so for them
    /// the tables they lack are a warning, not an error.
    pub fn validate(&self, catalog: &Catalog) -> Result<()> {
        let absent: BTreeSet<&str> = self.absent_tables.iter().map(|a| a.name.as_str()).collect();
        let unaccounted: Vec<&str> = catalog
            .tables
            .iter()
            .map(|t| t.name.as_str())
            .filter(|name| self.table(name).is_none() && !absent.contains(name))
            .collect();
        if unaccounted.is_empty() {
            return Ok(());
        }
        let names = unaccounted.join(", ");
        if self.format_version == LEGACY_FORMAT_VERSION {
            tracing::warn!(
                backup = %crate::model::escape_control(&self.backup_id),
                tables = %names,
                "this format 1 backup holds no data for these tables of the catalog and does not say why (format 1 did not record absent tables): they are restored empty"
            );
            return Ok(());
        }
        Err(Error::failed(
            "check manifest",
            manifest_key(&self.backup_id),
            format!(
                "the backup does not account for table(s) {names} of the table catalog: the manifest neither holds them nor records why they are absent, so a restore would leave them empty; nothing was changed (restore another backup, or use the table catalog the backup was taken with)"
            ),
        ))
    }

    /// What the manifest says about itself must hold together: table names unique, held or
    /// absent but not both, object names inside the backup's folder.
    fn check_consistency(&self, resource: &str) -> Result<()> {
        let bad = |message: String| Error::failed("read manifest", resource, message);
        if !is_valid_backup_id(&self.backup_id) {
            return Err(bad(format!(
                "backup_id {:?} is not a backup id",
                self.backup_id
            )));
        }
        let mut seen = BTreeSet::new();
        for name in self
            .tables
            .iter()
            .map(|t| &t.name)
            .chain(self.absent_tables.iter().map(|a| &a.name))
        {
            if !seen.insert(name.as_str()) {
                return Err(bad(format!(
                    "table {name:?} is listed twice (in tables or absent_tables)"
                )));
            }
        }
        if let Some(t) = self
            .tables
            .iter()
            .find(|t| t.object.is_empty() || t.object.contains('/') || t.object.starts_with('.'))
        {
            return Err(bad(format!(
                "table {:?} names object {:?}, which is not a plain object name inside the backup",
                t.name, t.object
            )));
        }
        if let Some(a) = self
            .absent_tables
            .iter()
            .find(|a| a.reason.trim().is_empty())
        {
            return Err(bad(format!("absent table {:?} has no reason", a.name)));
        }
        Ok(())
    }
}

/// SHA-256 (hex) of a manifest's canonical form: its JSON object without the
/// `manifest_sha256` member, object keys sorted, no whitespace, UTF-8 — what
/// `jq -cS 'del(.manifest_sha256)' manifest.json | tr -d '\n' | sha256sum` prints. Computed
/// from the parsed document, so fields a reader does not know are covered too.
pub fn canonical_sha256(document: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let ordered: BTreeMap<&String, Value> =
                    map.iter().map(|(k, v)| (k, sorted(v))).collect();
                let mut out = serde_json::Map::new();
                for (k, v) in ordered {
                    out.insert(k.clone(), v);
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    /// Compact JSON as `jq -c` writes it: serde_json's escapes, plus DEL as `\u007f`.
    struct JqCompact;
    impl serde_json::ser::Formatter for JqCompact {
        fn write_string_fragment<W: ?Sized + std::io::Write>(
            &mut self,
            writer: &mut W,
            fragment: &str,
        ) -> std::io::Result<()> {
            let mut parts = fragment.split('\u{7f}');
            if let Some(first) = parts.next() {
                writer.write_all(first.as_bytes())?;
            }
            for part in parts {
                writer.write_all(b"\\u007f")?;
                writer.write_all(part.as_bytes())?;
            }
            Ok(())
        }
    }
    let mut document = sorted(document);
    if let Value::Object(map) = &mut document {
        map.remove(CHECKSUM_FIELD);
    }
    let mut bytes = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(&mut bytes, JqCompact);
    // Serialising a Value into memory cannot fail (its keys are strings).
    let _ = document.serialize(&mut serializer);
    hex::encode(Sha256::digest(&bytes))
}

/// Reads one backup's manifest; a missing manifest means the backup does not exist.
pub async fn load(store: &dyn BackupStore, backup_id: &str) -> Result<Manifest> {
    let not_found = || Error::BackupNotFound {
        backup: backup_id.to_string(),
        store: store.describe(),
    };
    if !is_valid_backup_id(backup_id) {
        return Err(not_found());
    }
    let key = manifest_key(backup_id);
    if !store.exists(&key).await? {
        return Err(not_found());
    }
    let resource = format!("{}/{key}", store.describe());
    let manifest = parse(&store.get_bytes(&key).await?, &resource)?;
    if manifest.backup_id != backup_id {
        // A manifest copied or moved into another folder would otherwise be listed (and
        // restored) twice, its objects read from a folder it does not describe.
        return Err(Error::failed(
            "read manifest",
            resource,
            format!(
                "the manifest names backup {:?} but sits in the folder of backup {backup_id:?}: it was copied or moved from another backup, so it is not used",
                manifest.backup_id
            ),
        ));
    }
    Ok(manifest)
}

fn parse(bytes: &[u8], resource: &str) -> Result<Manifest> {
    let failed = |message: String| Error::failed("read manifest", resource, message);
    let document: Value =
        serde_json::from_slice(bytes).map_err(|e| failed(format!("not a JSON manifest: {e}")))?;
    let version = document.get("format_version").and_then(Value::as_u64);
    match version {
        Some(v) if v == u64::from(FORMAT_VERSION) || v == u64::from(BACKUP_KEY_FORMAT_VERSION) => {
            let stated = document.get(CHECKSUM_FIELD).and_then(Value::as_str);
            let actual = canonical_sha256(&document);
            match stated {
                None => {
                    return Err(failed(format!(
                        "format_version {v} manifest without {CHECKSUM_FIELD}: it was damaged or edited, so it is not used"
                    )));
                }
                Some(stated) if stated != actual => {
                    return Err(failed(format!(
                        "checksum mismatch: the manifest's canonical SHA-256 is {actual}, its {CHECKSUM_FIELD} says {stated}: it was damaged or edited, so it is not used"
                    )));
                }
                Some(_) => {}
            }
        }
        Some(v) if v == u64::from(LEGACY_FORMAT_VERSION) => {}
        Some(v) => {
            return Err(failed(format!(
                "format_version {v} is not supported by this mwaa-dr (it reads {LEGACY_FORMAT_VERSION} to {BACKUP_KEY_FORMAT_VERSION}); use a matching mwaa-dr version"
            )));
        }
        None => return Err(failed("it has no numeric format_version".into())),
    }
    let manifest: Manifest = serde_json::from_value(document)
        .map_err(|e| failed(format!("not a valid manifest: {e}")))?;
    manifest.check_consistency(resource)?;
    Ok(manifest)
}

/// The ids of every complete backup (those with a manifest), oldest first.
pub async fn backup_ids(store: &dyn BackupStore) -> Result<Vec<String>> {
    let mut ids: Vec<String> = store
        .list(BACKUPS_PREFIX)
        .await?
        .into_iter()
        .filter_map(|o| {
            let rest = o.key.strip_prefix(BACKUPS_PREFIX)?;
            let (id, name) = rest.split_once('/')?;
            (name == MANIFEST).then(|| id.to_string())
        })
        .collect();
    ids.sort();
    Ok(ids)
}

/// A backup folder whose manifest cannot be used, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Unreadable {
    pub backup_id: String,
    pub problem: String,
}

/// A backup folder without a manifest: an interrupted or running backup.
#[derive(Debug, Clone)]
pub struct Incomplete {
    pub backup_id: String,
    pub objects: Vec<ObjectInfo>,
}

/// Everything under `backups/`, sorted out.
#[derive(Debug, Default)]
pub struct StoreScan {
    /// Complete backups, oldest first.
    pub backups: Vec<Manifest>,
    /// Folders whose manifest cannot be read (damaged, edited, copied from another folder,
    /// a newer format): reported, never used, never deleted.
    pub unreadable: Vec<Unreadable>,
    /// Folders without a manifest, oldest first.
    pub incomplete: Vec<Incomplete>,
}

/// Reads the whole store: one bad manifest is reported in `unreadable` and the rest is still
/// read, so one damaged backup never hides the others from `list` and `prune`.
pub async fn scan(store: &dyn BackupStore) -> Result<StoreScan> {
    let mut folders: BTreeMap<String, (bool, Vec<ObjectInfo>)> = BTreeMap::new();
    for object in store.list(BACKUPS_PREFIX).await? {
        let Some((id, name)) = object
            .key
            .strip_prefix(BACKUPS_PREFIX)
            .and_then(|rest| rest.split_once('/'))
        else {
            continue;
        };
        let folder = folders.entry(id.to_string()).or_default();
        if name == MANIFEST {
            folder.0 = true;
        } else {
            folder.1.push(object);
        }
    }
    let mut out = StoreScan::default();
    for (id, (has_manifest, objects)) in folders {
        if !has_manifest {
            out.incomplete.push(Incomplete {
                backup_id: id,
                objects,
            });
            continue;
        }
        match load(store, &id).await {
            Ok(manifest) => out.backups.push(manifest),
            Err(Error::BackupNotFound { .. }) => out.unreadable.push(Unreadable {
                problem: "the folder name is not a backup id".into(),
                backup_id: id,
            }),
            Err(e) => out.unreadable.push(Unreadable {
                backup_id: id,
                problem: e.to_string(),
            }),
        }
    }
    Ok(out)
}

/// The start time a backup id records (`20261126T183255.123Z-3f9a`, or without the
/// milliseconds), or `None` when `id` does not start with one.
pub fn backup_id_time(id: &str) -> Option<DateTime<Utc>> {
    let (stamp, _) = id.split_once('Z')?;
    ["%Y%m%dT%H%M%S%.f", "%Y%m%dT%H%M%S"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(stamp, format).ok())
        .map(|t| t.and_utc())
}

/// Names the newest complete backup wherever a backup id is accepted.
pub const LATEST: &str = "latest";

/// The manifest of `backup_id`, or of the newest complete backup when it is `None` or
/// `latest`.
pub async fn resolve(store: &dyn BackupStore, backup_id: Option<&str>) -> Result<Manifest> {
    match backup_id.filter(|id| *id != LATEST) {
        Some(id) => load(store, id).await,
        None => match backup_ids(store).await?.pop() {
            Some(id) => load(store, &id).await,
            None => Err(Error::BackupNotFound {
                backup: LATEST.into(),
                store: store.describe(),
            }),
        },
    }
}

/// Writes the manifest, with its checksum: the commit point of the backup.
pub async fn commit(store: &dyn BackupStore, manifest: &Manifest) -> Result<()> {
    let bytes = seal(manifest)?;
    store
        .put_bytes(&manifest_key(&manifest.backup_id), &bytes)
        .await?;
    Ok(())
}

/// The manifest's bytes as written: current format, checked, with its checksum.
fn seal(manifest: &Manifest) -> Result<Vec<u8>> {
    let key = manifest_key(&manifest.backup_id);
    let mut manifest = manifest.clone();
    manifest.format_version = match manifest.fernet.as_ref().map(|f| f.kind) {
        Some(FernetKeyKind::BackupKey | FernetKeyKind::Kms) => BACKUP_KEY_FORMAT_VERSION,
        _ => FORMAT_VERSION,
    };
    manifest.manifest_sha256 = None;
    manifest.check_consistency(&key)?;
    let document =
        serde_json::to_value(&manifest).map_err(|e| Error::failed("write manifest", &key, e))?;
    manifest.manifest_sha256 = Some(canonical_sha256(&document));
    serde_json::to_vec_pretty(&manifest).map_err(|e| Error::failed("write manifest", &key, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_are_valid() {
        let a = new_backup_id("2026-11-26T18:32:55Z".parse().expect("time"));
        let b = new_backup_id("2026-11-26T18:32:56Z".parse().expect("time"));
        assert!(a.starts_with("20261126T183255.000Z-"), "{a}");
        assert!(a < b);
        assert!(is_valid_backup_id(&a));
        assert!(!is_valid_backup_id("../etc"));
        assert!(!is_valid_backup_id("a/b"));
    }

    use crate::store::local::LocalStore;

    fn sample(id: &str) -> Manifest {
        let time: DateTime<Utc> = "2026-11-26T18:32:55Z".parse().expect("time");
        Manifest {
            format_version: FORMAT_VERSION,
            tool_version: "0.0.0".into(),
            backup_id: id.into(),
            started_at: time,
            finished_at: time,
            source: SourceInfo {
                database: "db:5432/airflow".into(),
                environment: Some("prod".into()),
            },
            airflow_version: "2.10.3".into(),
            alembic_revision: "5f2621c13b39".into(),
            filters: FilterInfo {
                inflight_states: vec!["running".into()],
                export_dag: "mwaa_dr_backup".into(),
            },
            tables: ["variable", "dag_run"]
                .iter()
                .map(|name| TableEntry {
                    name: (*name).into(),
                    object: format!("{name}.csv.zst"),
                    columns: vec!["id".into()],
                    filter: None,
                    rows: 1,
                    csv_bytes: 5,
                    stored_bytes: 14,
                    sha256: "00".repeat(32),
                })
                .collect(),
            active_dags: vec!["etl".into()],
            absent_tables: vec![AbsentTable {
                name: "task_instance_history".into(),
                reason: "the source database (Airflow 2.8.1) has no such table".into(),
            }],
            fernet: None,
            manifest_sha256: None,
        }
    }

    fn catalog(tables: &[&str]) -> Catalog {
        let tables: Vec<String> = tables
            .iter()
            .map(|t| format!(r#"{{"name": "{t}"}}"#))
            .collect();
        Catalog::parse(
            &format!(
                r#"{{"inflight_states": ["running"], "tables": [{}]}}"#,
                tables.join(", ")
            ),
            "test catalog",
        )
        .expect("catalog")
    }

    const A: &str = "20261126T183255.000Z-000a";
    const B: &str = "20261126T183256.000Z-000b";

    async fn raw(store: &LocalStore, id: &str) -> Value {
        serde_json::from_slice(&store.get_bytes(&manifest_key(id)).await.expect("get"))
            .expect("JSON")
    }

    async fn put_raw(store: &LocalStore, id: &str, doc: &Value) {
        store
            .put_bytes(&manifest_key(id), &serde_json::to_vec(doc).expect("JSON"))
            .await
            .expect("put");
    }

    #[tokio::test]
    async fn committed_manifest_carries_its_checksum_and_reads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path());
        commit(&store, &sample(A)).await.expect("commit");
        let doc = raw(&store, A).await;
        assert_eq!(doc["format_version"], 2);
        assert_eq!(doc[CHECKSUM_FIELD], canonical_sha256(&doc).as_str());
        let back = load(&store, A).await.expect("load");
        assert_eq!(back.absent_tables, sample(A).absent_tables);
        assert_eq!(back.table("dag_run").map(|t| t.rows), Some(1));
    }

    #[tokio::test]
    async fn a_manifest_that_lost_a_table_entry_fails_its_checksum() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path());
        commit(&store, &sample(A)).await.expect("commit");
        let mut doc = raw(&store, A).await;
        doc["tables"].as_array_mut().expect("tables").remove(1);
        store.delete(&manifest_key(A)).await.expect("delete");
        put_raw(&store, A, &doc).await;
        let err = load(&store, A).await.expect_err("refused").to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
        // A format 2 manifest whose checksum was stripped is refused too.
        doc.as_object_mut().expect("object").remove(CHECKSUM_FIELD);
        store.delete(&manifest_key(A)).await.expect("delete");
        put_raw(&store, A, &doc).await;
        let err = load(&store, A).await.expect_err("refused").to_string();
        assert!(err.contains(CHECKSUM_FIELD), "{err}");
    }

    /// The documented recipe: sorted keys, no whitespace, the checksum member left out.
    #[test]
    fn canonical_form_is_sorted_compact_json_without_the_checksum() {
        let doc: Value = serde_json::from_str(
            r#"{"b": [{"d": 2, "c": "x\u001b\u007f"}], "manifest_sha256": "ignored", "a": 1}"#,
        )
        .expect("JSON");
        let expected = hex::encode(Sha256::digest(
            br#"{"a":1,"b":[{"c":"x\u001b\u007f","d":2}]}"#,
        ));
        assert_eq!(canonical_sha256(&doc), expected);
        // What `jq -cS 'del(.manifest_sha256)' | tr -d '\n' | sha256sum` prints for it.
        assert_eq!(
            expected,
            "de32cd81f6cc4692463c310bcbb4a3e6f4379ba3be74ddf48f54243e142c024c"
        );
    }

    #[tokio::test]
    async fn format_1_manifests_still_read_and_restore_with_a_warning() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path());
        let mut doc = serde_json::to_value(sample(A)).expect("JSON");
        let map = doc.as_object_mut().expect("object");
        map.insert("format_version".into(), 1.into());
        map.remove("absent_tables");
        map.remove(CHECKSUM_FIELD);
        put_raw(&store, A, &doc).await;
        let m = load(&store, A).await.expect("format 1 reads");
        assert_eq!(m.format_version, 1);
        assert!(m.absent_tables.is_empty());
        // Format 1 never recorded absent tables: a table it lacks is not an error.
        m.validate(&catalog(&["variable", "dag_run", "xcom"]))
            .expect("format 1 accepted");
    }

    #[test]
    fn a_table_of_the_catalog_neither_held_nor_absent_is_refused() {
        let m = sample(A);
        m.validate(&catalog(&["variable", "dag_run", "task_instance_history"]))
            .expect("every table accounted for");
        let err = m
            .validate(&catalog(&["variable", "xcom", "dag_run", "log"]))
            .expect_err("xcom and log unaccounted")
            .to_string();
        assert!(err.contains("xcom, log"), "{err}");
        assert!(err.contains("nothing was changed"), "{err}");
    }

    #[tokio::test]
    async fn inconsistent_manifests_are_refused_at_commit_and_at_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path());
        let mut m = sample(A);
        m.tables[1].object = "../other/dag_run.csv.zst".into();
        let err = commit(&store, &m).await.expect_err("refused").to_string();
        assert!(err.contains("not a plain object name"), "{err}");
        let mut m = sample(A);
        m.absent_tables.push(AbsentTable {
            name: "variable".into(),
            reason: "x".into(),
        });
        let err = commit(&store, &m).await.expect_err("refused").to_string();
        assert!(err.contains("listed twice"), "{err}");
        assert!(!store.exists(&manifest_key(A)).await.expect("exists"));
    }

    #[tokio::test]
    async fn a_manifest_copied_into_another_folder_is_reported_not_listed_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path());
        commit(&store, &sample(A)).await.expect("commit");
        let bytes = store.get_bytes(&manifest_key(A)).await.expect("get");
        store
            .put_bytes(&manifest_key(B), &bytes)
            .await
            .expect("copy");
        let err = load(&store, B).await.expect_err("refused").to_string();
        assert!(err.contains("copied or moved"), "{err}");
        let err = resolve(&store, None).await.expect_err("latest is the copy");
        assert!(err.to_string().contains(B), "{err}");
        let scan = scan(&store).await.expect("scan");
        let ids: Vec<&str> = scan.backups.iter().map(|m| m.backup_id.as_str()).collect();
        assert_eq!(ids, vec![A]);
        assert_eq!(scan.unreadable.len(), 1);
        assert_eq!(scan.unreadable[0].backup_id, B);
    }

    #[tokio::test]
    async fn scan_reports_bad_manifests_and_reads_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path());
        commit(&store, &sample(A)).await.expect("commit");
        let newer = "20261126T183257.000Z-000c";
        let damaged = "20261126T183258.000Z-000d";
        let mut doc = serde_json::to_value(sample(newer)).expect("JSON");
        doc["format_version"] = 4.into();
        put_raw(&store, newer, &doc).await;
        store
            .put_bytes(&manifest_key(damaged), b"{\"format_version\": 2, \"tab")
            .await
            .expect("put");
        store
            .put_bytes(&object_key(B, "job.csv.zst"), b"partial")
            .await
            .expect("put");
        let scan = scan(&store)
            .await
            .expect("one bad manifest does not fail the scan");
        assert_eq!(scan.backups.len(), 1);
        assert_eq!(scan.backups[0].backup_id, A);
        let problems: Vec<(&str, &str)> = scan
            .unreadable
            .iter()
            .map(|u| (u.backup_id.as_str(), u.problem.as_str()))
            .collect();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0].0, newer);
        assert!(problems[0].1.contains("format_version 4"), "{problems:?}");
        assert_eq!(problems[1].0, damaged);
        assert!(
            problems[1].1.contains("not a JSON manifest"),
            "{problems:?}"
        );
        assert_eq!(scan.incomplete.len(), 1);
        assert_eq!(scan.incomplete[0].backup_id, B);
        assert_eq!(scan.incomplete[0].objects.len(), 1);
    }

    #[test]
    fn backup_ids_carry_their_start_time() {
        let expected: DateTime<Utc> = "2026-11-26T18:32:55.123Z".parse().expect("time");
        assert_eq!(backup_id_time("20261126T183255.123Z-3f9a"), Some(expected));
        assert_eq!(
            backup_id_time("20261126T183255Z-3f9a"),
            "2026-11-26T18:32:55Z".parse().ok()
        );
        assert_eq!(backup_id_time("garbage"), None);
    }

    #[test]
    fn a_backup_key_manifest_is_format_3_so_older_readers_refuse_it() {
        let mut m = sample("20261126T183255.000Z-0001");
        let sealed: Value = serde_json::from_slice(&seal(&m).expect("seals")).expect("JSON");
        assert_eq!(sealed["format_version"], 2);
        assert!(sealed.get("fernet").is_none(), "no key recorded, no field");
        for (kind, expected) in [
            (FernetKeyKind::Source, 2),
            (FernetKeyKind::BackupKey, 3),
            (FernetKeyKind::Kms, 3),
        ] {
            m.fernet = Some(FernetKeyInfo {
                kind,
                fingerprint: "0123456789abcdef".into(),
                kms_key_id: (kind == FernetKeyKind::Kms).then(|| "alias/dr".into()),
                wrapped_key: (kind == FernetKeyKind::Kms).then(|| "AQID".into()),
            });
            let bytes = seal(&m).expect("seals");
            let doc: Value = serde_json::from_slice(&bytes).expect("JSON");
            assert_eq!(doc["format_version"], expected, "{kind:?}");
            assert_eq!(doc["fernet"]["kind"], kind.as_str());
            let read = parse(&bytes, "m.json").expect("reads back");
            assert_eq!(read.fernet, m.fernet);
            // The checksum covers the record: a changed fingerprint is refused.
            let edited = String::from_utf8(bytes)
                .expect("utf-8")
                .replace("0123456789abcdef", "fedcba9876543210");
            let err = parse(edited.as_bytes(), "m.json").expect_err("edited");
            assert!(err.to_string().contains("checksum mismatch"), "{err}");
        }
    }

    #[test]
    fn unknown_format_version_is_refused() {
        let err = parse(br#"{"format_version": 99}"#, "m.json").expect_err("refused");
        assert!(err.to_string().contains("format_version 99"), "{err}");
    }
}
