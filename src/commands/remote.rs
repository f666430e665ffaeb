//! Running a DR DAG in an MWAA environment from outside, as `backup`, `restore`, `cleanup`
//! and `failover` do when no database URL is given: the settings each takes from the
//! configuration, and how a run is printed.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::aws::mwaa::SdkMwaa;
use crate::config::Config;
use crate::error::Result;
use crate::ops::remote::{self, RemoteOptions, RemoteReport};

/// Runs `dag_id` in `environment` (of `region`) through the REST API and prints how it ended
/// and the task's report; `what` names the operation in the text output.
pub async fn run_remote(
    config: &Config,
    what: &str,
    environment: &str,
    region: Option<&str>,
    dag_id: &str,
    conf: serde_json::Map<String, serde_json::Value>,
    cancel: &CancellationToken,
) -> Result<Option<serde_json::Value>> {
    let started_at = chrono::Utc::now();
    let options = RemoteOptions {
        environment: environment.to_string(),
        dag_id: dag_id.to_string(),
        conf,
        seed: format!("{what}-{}", std::process::id()),
        started_at,
        timeout: config.failover.timeout,
        poll: Duration::from_secs(2),
        retry_for: Duration::from_secs(60),
    };
    if config.dry_run {
        return Ok(super::emitted(
            config,
            &serde_json::json!({"dry_run": true, "environment": environment, "dag_id": dag_id, "conf": options.conf}),
            || {
                format!(
                    "dry run: would trigger the DAG {dag_id} in MWAA environment {environment} through its REST API"
                )
            },
        ));
    }
    // The task writes its report to the store the DAG was rendered with: this one, the same
    // store or a replica of it.
    let store = super::open_store(config.store(what)?, config).await?;
    let mwaa = SdkMwaa::new(region, &config.aws_timeouts).await;
    let report = remote::run_dag(&options, &mwaa, store.as_ref(), cancel).await?;
    Ok(super::emitted(config, &report, || {
        render_remote(what, &report)
    }))
}

fn render_remote(what: &str, r: &RemoteReport) -> String {
    let mut text = format!(
        "{what} ran in MWAA environment {} as run {} of {}: {} in {:.1} s",
        r.environment, r.dag_run_id, r.dag_id, r.state, r.seconds
    );
    if !r.triggered {
        text.push_str(" (an earlier run, followed again)");
    }
    match (&r.report, &r.report_note) {
        (Some(report), _) => {
            let field = |k: &str| {
                report
                    .get(k)
                    .map(|v| v.to_string().trim_matches('"').to_string())
            };
            if let Some(id) = field("backup_id") {
                text.push_str(&format!("\nbackup {id}"));
                if let Some(rows) = field("rows") {
                    text.push_str(&format!(": {rows} rows"));
                }
                if let Some(store) = field("store") {
                    text.push_str(&format!(" in {store}"));
                }
            }
            text.push_str(&format!("\nreport: {report}"));
        }
        (None, Some(note)) => text.push_str(&format!("\nno report: {note}")),
        (None, None) => {}
    }
    text
}

/// The environment whose DR DAG runs the command: `--environment`, else the secondary's name
/// when no database URL is given.
pub fn remote_environment(config: &Config, flag: Option<&String>) -> Option<String> {
    flag.cloned().or_else(|| {
        (!config.has_target_db())
            .then(|| config.secondary.environment_name.clone())
            .flatten()
    })
}

/// The primary's region for the primary's environment, else the secondary's.
pub fn region_of<'a>(config: &'a Config, environment: &str) -> Option<&'a str> {
    if config.primary.environment_name.as_deref() == Some(environment) {
        config.primary.region.as_deref()
    } else {
        config.secondary.region.as_deref()
    }
}

/// The restore DAG run's conf (the contract's keys).
pub fn restore_conf(
    config: &Config,
    backup_id: Option<&str>,
    clean: bool,
) -> serde_json::Map<String, serde_json::Value> {
    let mut conf = serde_json::Map::new();
    if let Some(id) = backup_id {
        conf.insert("backup_id".into(), id.into());
    }
    conf.insert(
        "variable_strategy".into(),
        serde_json::to_value(config.variable_strategy).unwrap_or_default(),
    );
    conf.insert(
        "connection_strategy".into(),
        serde_json::to_value(config.connection_strategy).unwrap_or_default(),
    );
    conf.insert("clean".into(), clean.into());
    conf
}
