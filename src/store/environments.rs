//! Saved environment definitions: `environments/<name>/<time>.json`, one immutable object per
//! save (the Step Functions state machine saves at the start of each day's time, overwritten
//! through the day); the newest is the one a Backup-Restore failover recreates.

use chrono::Utc;

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

/// The newest saved definition of `name`, with its key.
pub async fn latest(
    store: &dyn BackupStore,
    name: &str,
) -> Result<(String, EnvironmentDefinition)> {
    let prefix = format!("{PREFIX}{name}/");
    let newest = store
        .list(&prefix)
        .await?
        .into_iter()
        .filter(|o| o.key.ends_with(".json"))
        .max_by(|a, b| a.key.cmp(&b.key))
        .ok_or_else(|| {
            Error::failed(
                "read the saved environment",
                format!("{}/{prefix}", store.describe()),
                format!(
                    "no definition of {name} was saved; run `mwaa-dr backup` (or `backup --environment-only`) with PRIMARY_MWAA_ENVIRONMENT_NAME set while the primary is up"
                ),
            )
        })?;
    let bytes = store.get_bytes(&newest.key).await?;
    let definition = serde_json::from_slice(&bytes)
        .map_err(|e| Error::failed("read the saved environment", &newest.key, e))?;
    Ok((newest.key, definition))
}
