//! Saved environment definitions: `environments/<name>/<time>.json`, one immutable object per
//! save (the Step Functions state machine saves at the start of each day's time, overwritten
//! through the day); the newest is the one a Backup-Restore failover recreates. When none is
//! saved, the definition the original solution's Step Functions workflow saved
//! (MWAA_BACKUP_FILE_NAME at the backup bucket's root) stands in.

use chrono::Utc;
use serde_json::{Map, Value};

use super::BackupStore;
use crate::aws::mwaa::EnvironmentDefinition;
use crate::error::{Error, Result};

const PREFIX: &str = "environments/";

/// Saves a definition; returns its key.
pub async fn save(store: &dyn BackupStore, definition: &EnvironmentDefinition) -> Result<String> {
    let now = Utc::now();
    let key = format!(
        "{PREFIX}{}/{}.json",
        definition.name,
        now.format("%Y%m%dT%H%M%S%.6fZ")
    );
    let body = serde_json::to_vec_pretty(definition)
        .map_err(|e| Error::failed("save environment", &key, e))?;
    store.put_bytes(&key, &body).await?;
    Ok(key)
}

const READ: &str = "read the saved environment";

/// Where the original solution saved the primary's definition: `file` (MWAA_BACKUP_FILE_NAME)
/// at the root of `root`, the backup bucket.
pub struct OriginalFile<'a> {
    pub root: &'a dyn BackupStore,
    pub file: &'a str,
}

/// A definition to recreate, and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub definition: EnvironmentDefinition,
    /// The object it was read from, as users name it.
    pub source: String,
    /// Whether it is the original solution's file rather than one `mwaa-dr` saved.
    pub original: bool,
}

/// The newest definition of `name` that `mwaa-dr` saved, else the one the original
/// solution's workflow saved in `original` (which must describe `name`).
pub async fn latest_or_original(
    store: &dyn BackupStore,
    original: &OriginalFile<'_>,
    name: &str,
) -> Result<Found> {
    if let Some((key, definition)) = newest(store, name).await? {
        return Ok(Found {
            definition,
            source: format!("{}/{key}", store.describe()),
            original: false,
        });
    }
    let file = original.file.trim_matches('/');
    if file.is_empty() || !original.root.exists(file).await? {
        return Err(none_saved(store, name, original));
    }
    let source = format!("{}/{file}", original.root.describe());
    let bytes = original.root.get_bytes(file).await?;
    let definition = parse_original(&bytes, &source)?;
    if definition.name != name {
        return Err(Error::failed(
            READ,
            &source,
            format!(
                "it describes the environment {}, not {name} (PRIMARY_MWAA_ENVIRONMENT_NAME); save {name}'s definition with `mwaa-dr backup --environment-only` or point MWAA_BACKUP_FILE_NAME at its file",
                definition.name
            ),
        ));
    }
    Ok(Found {
        definition,
        source,
        original: true,
    })
}

async fn newest(
    store: &dyn BackupStore,
    name: &str,
) -> Result<Option<(String, EnvironmentDefinition)>> {
    let prefix = format!("{PREFIX}{name}/");
    let Some(newest) = store
        .list(&prefix)
        .await?
        .into_iter()
        .filter(|o| o.key.ends_with(".json"))
        .max_by(|a, b| a.key.cmp(&b.key))
    else {
        return Ok(None);
    };
    let bytes = store.get_bytes(&newest.key).await?;
    let definition =
        serde_json::from_slice(&bytes).map_err(|e| Error::failed(READ, &newest.key, e))?;
    Ok(Some((newest.key, definition)))
}

fn none_saved(store: &dyn BackupStore, name: &str, original: &OriginalFile<'_>) -> Error {
    let also = format!(
        ", and there is no {} (MWAA_BACKUP_FILE_NAME) of the original solution at {}",
        original.file,
        original.root.describe()
    );
    Error::failed(
        READ,
        format!("{}/{PREFIX}{name}/", store.describe()),
        format!(
            "no definition of {name} was saved{also}; run `mwaa-dr backup` (or `backup --environment-only`) with PRIMARY_MWAA_ENVIRONMENT_NAME set while the primary is up"
        ),
    )
}

/// What the original's file is expected to hold, for errors.
const ORIGINAL_SHAPE: &str = "the GetEnvironment answer as JSON, `{\"Environment\": {\"Name\": …}}`, optionally as the string `Payload` of a Lambda invocation's result (what the original's Step Functions workflow stores)";

/// Parses the original solution's saved definition. Its workflow stores the result of a
/// Lambda invocation whose `Payload` is the string `json.dumps(mwaa.get_environment(...),
/// default=str)`; the bare GetEnvironment answer is accepted too. Keys are MWAA's own
/// (PascalCase), datetimes are strings and keys this build does not use are ignored.
pub fn parse_original(bytes: &[u8], source: &str) -> Result<EnvironmentDefinition> {
    let bad = |problem: String| {
        Error::failed(
            READ,
            source,
            format!("{problem}; expected {ORIGINAL_SHAPE}"),
        )
    };
    let mut document: Value =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("it is not JSON ({e})")))?;
    if let Some(payload) = document.get("Payload").cloned() {
        document = match payload {
            Value::String(text) => serde_json::from_str(&text)
                .map_err(|e| bad(format!("its Payload is not JSON ({e})")))?,
            Value::Object(_) => payload,
            other => return Err(bad(format!("its Payload is {}", json_type(&other)))),
        };
    }
    let environment = match document.get("Environment") {
        Some(Value::Object(environment)) => environment.clone(),
        Some(other) => return Err(bad(format!("its Environment is {}", json_type(other)))),
        None => return Err(bad("it has no Environment key".into())),
    };
    serde_json::from_value(Value::Object(environment.clone())).map_err(|e| {
        match offending_key(&environment) {
            Some((key, problem)) => Error::failed(
                READ,
                source,
                format!("Environment.{key} is not what MWAA's GetEnvironment returns: {problem}"),
            ),
            None => bad(format!("its Environment cannot be read ({e})")),
        }
    })
}

/// The first key of `environment` that does not parse on its own, with why.
fn offending_key(environment: &Map<String, Value>) -> Option<(String, String)> {
    environment.iter().find_map(|(key, value)| {
        let mut alone = Map::new();
        alone.insert("Name".into(), Value::String(String::new()));
        alone.insert(key.clone(), value.clone());
        serde_json::from_value::<EnvironmentDefinition>(Value::Object(alone))
            .err()
            .map(|e| (key.clone(), e.to_string()))
    })
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EnvironmentStatus;

    /// What the original's workflow stores, made by tests/fixtures/original/make-environment-json.py.
    const ORIGINAL: &str = include_str!("../../tests/fixtures/original/environment.json");

    #[test]
    fn reads_the_originals_lambda_result_with_its_string_payload() {
        let d = parse_original(ORIGINAL.as_bytes(), "s3://b/environment.json").expect("parses");
        assert_eq!(d.name, "mwaa-2-10-3-primary");
        assert_eq!(d.status, Some(EnvironmentStatus::Available));
        assert_eq!(d.airflow_version.as_deref(), Some("2.10.3"));
        assert_eq!(d.max_workers, Some(7));
        assert_eq!(d.schedulers, Some(3));
        assert_eq!(
            d.requirements_s3_object_version.as_deref(),
            Some("y1Hq8requirements")
        );
        let logging = d.logging_configuration.expect("logging");
        assert_eq!(logging.len(), 5);
        assert_eq!(logging["WebserverLogs"].enabled, Some(false));
        assert_eq!(logging["WorkerLogs"].log_level.as_deref(), Some("CRITICAL"));
        assert_eq!(d.tags.expect("tags")["cost-center"], "42");
    }

    #[test]
    fn reads_a_bare_get_environment_answer_and_an_object_payload() {
        let bare = r#"{"Environment": {"Name": "p", "CreatedAt": "2026-11-30 08:15:42+00:00", "Status": "AVAILABLE", "NewKey": {"x": 1}}}"#;
        let d = parse_original(bare.as_bytes(), "k").expect("bare");
        assert_eq!(d.name, "p");
        let wrapped = format!(r#"{{"Payload": {bare}, "StatusCode": 200}}"#);
        assert_eq!(parse_original(wrapped.as_bytes(), "k").expect("object"), d);
    }

    #[test]
    fn malformed_files_name_what_is_wrong() {
        let err = |text: &str| {
            parse_original(text.as_bytes(), "s3://b/environment.json")
                .expect_err("refused")
                .to_string()
        };
        let e = err("not json");
        assert!(
            e.contains("s3://b/environment.json") && e.contains("not JSON"),
            "{e}"
        );
        let e = err(r#"{"Payload": "{\"ResponseMetadata\": {}}"}"#);
        assert!(
            e.contains("no Environment key") && e.contains("GetEnvironment"),
            "{e}"
        );
        let e = err(r#"{"Payload": "{truncated"}"#);
        assert!(e.contains("Payload is not JSON"), "{e}");
        let e = err(r#"{"Environment": {"Name": "p", "MaxWorkers": "seven"}}"#);
        assert!(e.contains("Environment.MaxWorkers"), "{e}");
        assert!(e.contains("expected i32"), "{e}");
        let e = err(r#"{"Environment": {"Name": "p", "Tags": ["a"]}}"#);
        assert!(e.contains("Environment.Tags"), "{e}");
        let e = err(r#"{"Environment": {"AirflowVersion": "2.10.3"}}"#);
        assert!(e.contains("Name"), "{e}");
        let e = err(r#"{"Environment": "p"}"#);
        assert!(e.contains("Environment is a string"), "{e}");
    }
}
