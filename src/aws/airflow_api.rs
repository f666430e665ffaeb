//! A typed client of an MWAA environment's Airflow REST API, reached through InvokeRestApi:
//! `/api/v1` shapes for Airflow 2, `/api/v2` shapes for Airflow 3, as the environment's
//! AirflowVersion says. Every call returns at once (InvokeRestApi allows 10 s per call);
//! waiting is the caller's loop, and list calls are paged to stay under the 6 MB answer cap.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value, json};
use tracing::debug;

use super::mwaa::{INVOKE_REST_API_PERMISSION, Mwaa, RestAnswer, RestCall, RestMethod};
use crate::error::{Error, Result};

/// The task every DR DAG runs (the shared contract of the rendered DAGs).
pub const DR_TASK_ID: &str = "mwaa_dr";

/// DAGs per page of a list call: far below the 6 MB answer cap.
const PAGE: usize = 100;

/// The longest Path InvokeRestApi accepts (RestApiPath in MWAA's service model).
pub const MAX_PATH: usize = 64;

/// Which REST API the environment serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    /// Airflow 2.x: `/api/v1`.
    V1,
    /// Airflow 3.x: `/api/v2`.
    V2,
}

impl ApiVersion {
    /// From MWAA's AirflowVersion (`2.10.3`, `3.0.6`); `None` for one this tool does not know.
    pub fn of_airflow(version: &str) -> Option<ApiVersion> {
        match version.trim().split('.').next()? {
            "2" => Some(ApiVersion::V1),
            "3" => Some(ApiVersion::V2),
            _ => None,
        }
    }
}

/// A DAG as the API describes it (the fields both versions share).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Dag {
    pub dag_id: String,
    #[serde(default)]
    pub is_paused: Option<bool>,
}

/// A DAG run (the fields both versions share).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DagRun {
    pub dag_run_id: String,
    #[serde(default)]
    pub state: Option<String>,
}

impl DagRun {
    /// `success` or `failed`: the run will not change any more.
    pub fn finished(&self) -> bool {
        matches!(self.state.as_deref(), Some("success" | "failed"))
    }
}

/// A task instance (the fields both versions share).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TaskInstance {
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub try_number: Option<u32>,
}

/// The Airflow REST API of one MWAA environment.
pub struct AirflowApi<'a> {
    mwaa: &'a dyn Mwaa,
    environment: String,
    version: ApiVersion,
    /// How long one call keeps retrying throttling and server errors.
    retry_for: Duration,
}

impl<'a> AirflowApi<'a> {
    /// The API of `environment`, its version from GetEnvironment.
    pub async fn connect(
        mwaa: &'a dyn Mwaa,
        environment: &str,
        retry_for: Duration,
    ) -> Result<AirflowApi<'a>> {
        let operation = "reach the Airflow REST API";
        let env = mwaa.get_environment(environment).await?.ok_or_else(|| {
            Error::failed(operation, environment, "no MWAA environment of this name")
        })?;
        let shown = env.airflow_version.clone().unwrap_or_default();
        let version = ApiVersion::of_airflow(&shown).ok_or_else(|| {
            Error::failed(
                operation,
                environment,
                format!(
                    "AirflowVersion {shown:?} is not supported; accepted: 2.x (/api/v1) or 3.x (/api/v2)"
                ),
            )
        })?;
        Ok(Self::new(mwaa, environment, version, retry_for))
    }

    pub fn new(
        mwaa: &'a dyn Mwaa,
        environment: &str,
        version: ApiVersion,
        retry_for: Duration,
    ) -> AirflowApi<'a> {
        AirflowApi {
            mwaa,
            environment: environment.to_string(),
            version,
            retry_for,
        }
    }

    pub fn version(&self) -> ApiVersion {
        self.version
    }

    pub fn environment(&self) -> &str {
        &self.environment
    }

    fn resource(&self, what: &str) -> String {
        format!("{what} in MWAA environment {}", self.environment)
    }

    /// One call, retried with backoff while Airflow or MWAA answers "later" (429, 5xx,
    /// throttling), for at most `retry_for`. 401/403 is a permanent error naming the
    /// permission; other statuses come back to the caller.
    async fn call(&self, what: &str, call: RestCall) -> Result<RestAnswer> {
        if call.path.len() > MAX_PATH {
            return Err(Error::failed(
                format!("{} {}", call.method.as_str(), call.path),
                self.resource(what),
                format!(
                    "the path has {} characters and InvokeRestApi accepts at most {MAX_PATH}; read it in the Airflow UI instead",
                    call.path.len()
                ),
            ));
        }
        let started = std::time::Instant::now();
        let mut delay = Duration::from_millis(200);
        loop {
            let outcome = self.mwaa.invoke_rest_api(&self.environment, &call).await;
            let retry = match &outcome {
                Ok(a) if a.status == 429 || a.status >= 500 => true,
                Ok(_) => false,
                Err(e) => e.retryable(),
            };
            if !retry || started.elapsed() + delay > self.retry_for {
                return match outcome {
                    Ok(a) if a.status == 401 || a.status == 403 => Err(Error::failed(
                        format!("{} {}", call.method.as_str(), call.path),
                        self.resource(what),
                        format!(
                            "Airflow answered HTTP {} ({}): the caller's IAM role needs {INVOKE_REST_API_PERMISSION} on this environment, mapped to an Airflow role allowed to do this",
                            a.status,
                            problem_detail(&a.body)
                        ),
                    )),
                    Ok(a) if a.status == 429 || a.status >= 500 => Err(Error::transient(
                        format!("{} {}", call.method.as_str(), call.path),
                        self.resource(what),
                        format!(
                            "Airflow answered HTTP {} ({}) for {:.0} s",
                            a.status,
                            problem_detail(&a.body),
                            started.elapsed().as_secs_f64()
                        ),
                    )),
                    other => other,
                };
            }
            debug!(path = %call.path, delay_ms = delay.as_millis() as u64, "Airflow REST API said later; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    fn unexpected(&self, what: &str, call: &RestCall, answer: &RestAnswer) -> Error {
        Error::failed(
            format!("{} {}", call.method.as_str(), call.path),
            self.resource(what),
            format!(
                "Airflow answered HTTP {} ({})",
                answer.status,
                problem_detail(&answer.body)
            ),
        )
    }

    fn parse<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        call: &RestCall,
        body: Value,
    ) -> Result<T> {
        serde_json::from_value(body).map_err(|e| {
            Error::failed(
                format!("{} {}", call.method.as_str(), call.path),
                self.resource(what),
                format!("unexpected answer: {e}"),
            )
        })
    }

    /// `None` while the DAG is not parsed (404).
    pub async fn get_dag(&self, dag_id: &str) -> Result<Option<Dag>> {
        let what = format!("DAG {dag_id}");
        let call = get(format!("/dags/{}", segment(dag_id)), Map::new());
        let answer = self.call(&what, call.clone()).await?;
        match answer.status {
            200 => self.parse(&what, &call, answer.body).map(Some),
            404 => Ok(None),
            _ => Err(self.unexpected(&what, &call, &answer)),
        }
    }

    /// Every DAG, page by page.
    pub async fn list_dags(&self) -> Result<Vec<Dag>> {
        #[derive(Deserialize)]
        struct Page {
            dags: Vec<Dag>,
            #[serde(default)]
            total_entries: Option<usize>,
        }
        let mut all = Vec::new();
        loop {
            let mut query = Map::new();
            query.insert("limit".into(), json!(PAGE));
            query.insert("offset".into(), json!(all.len()));
            let call = get("/dags".into(), query);
            let answer = self.call("DAGs", call.clone()).await?;
            if answer.status != 200 {
                return Err(self.unexpected("DAGs", &call, &answer));
            }
            let page: Page = self.parse("DAGs", &call, answer.body)?;
            let got = page.dags.len();
            all.extend(page.dags);
            if got < PAGE || page.total_entries.is_some_and(|t| all.len() >= t) {
                return Ok(all);
            }
        }
    }

    /// Pauses or unpauses; `None` when the DAG is not parsed (404).
    pub async fn set_paused(&self, dag_id: &str, paused: bool) -> Result<Option<Dag>> {
        let what = format!("DAG {dag_id}");
        let mut query = Map::new();
        query.insert("update_mask".into(), json!("is_paused"));
        let call = RestCall {
            method: RestMethod::Patch,
            path: format!("/dags/{}", segment(dag_id)),
            query,
            body: Some(json!({ "is_paused": paused })),
        };
        let answer = self.call(&what, call.clone()).await?;
        match answer.status {
            200 => self.parse(&what, &call, answer.body).map(Some),
            404 => Ok(None),
            _ => Err(self.unexpected(&what, &call, &answer)),
        }
    }

    /// Triggers a run of `dag_id` with id `run_id` and `conf`. A run of that id that exists
    /// already (409: an earlier attempt's) is returned as it is, never triggered twice.
    /// `None` when the DAG is not parsed (404).
    pub async fn trigger(
        &self,
        dag_id: &str,
        run_id: &str,
        conf: &Map<String, Value>,
    ) -> Result<Option<DagRun>> {
        let what = format!("DAG {dag_id}");
        let mut body = json!({ "dag_run_id": run_id, "conf": conf });
        if self.version == ApiVersion::V2 {
            // /api/v2 requires the key; null lets Airflow 3 schedule the run now.
            body["logical_date"] = Value::Null;
        }
        let call = RestCall {
            method: RestMethod::Post,
            path: format!("/dags/{}/dagRuns", segment(dag_id)),
            query: Map::new(),
            body: Some(body),
        };
        let answer = self.call(&what, call.clone()).await?;
        match answer.status {
            200 | 201 => self.parse(&what, &call, answer.body).map(Some),
            409 => self.get_run(dag_id, run_id).await,
            404 => Ok(None),
            _ => Err(self.unexpected(&what, &call, &answer)),
        }
    }

    /// `None` when no such run exists.
    pub async fn get_run(&self, dag_id: &str, run_id: &str) -> Result<Option<DagRun>> {
        let what = format!("run {run_id} of DAG {dag_id}");
        let call = get(
            format!("/dags/{}/dagRuns/{}", segment(dag_id), segment(run_id)),
            Map::new(),
        );
        let answer = self.call(&what, call.clone()).await?;
        match answer.status {
            200 => self.parse(&what, &call, answer.body).map(Some),
            404 => Ok(None),
            _ => Err(self.unexpected(&what, &call, &answer)),
        }
    }

    fn task_path(dag_id: &str, run_id: &str) -> String {
        format!(
            "/dags/{}/dagRuns/{}/taskInstances/{DR_TASK_ID}",
            segment(dag_id),
            segment(run_id)
        )
    }

    /// The `mwaa_dr` task of the run; `None` when it has none (yet).
    pub async fn task_instance(&self, dag_id: &str, run_id: &str) -> Result<Option<TaskInstance>> {
        let what = format!("task {DR_TASK_ID} of run {run_id} of DAG {dag_id}");
        let call = get(Self::task_path(dag_id, run_id), Map::new());
        let answer = self.call(&what, call.clone()).await?;
        match answer.status {
            200 => self.parse(&what, &call, answer.body).map(Some),
            404 => Ok(None),
            _ => Err(self.unexpected(&what, &call, &answer)),
        }
    }

    /// The `mwaa_dr` task's XCom `return_value`: the JSON text of the binary's report, parsed.
    /// `None` when the task pushed none.
    pub async fn report(&self, dag_id: &str, run_id: &str) -> Result<Option<Value>> {
        let what = format!("report of run {run_id} of DAG {dag_id}");
        let call = get(
            format!(
                "{}/xcomEntries/return_value",
                Self::task_path(dag_id, run_id)
            ),
            Map::new(),
        );
        let answer = self.call(&what, call.clone()).await?;
        match answer.status {
            200 => {}
            404 => return Ok(None),
            _ => return Err(self.unexpected(&what, &call, &answer)),
        }
        match answer.body.get("value") {
            // The task returns the report as JSON text; Airflow hands it back verbatim.
            Some(Value::String(text)) => serde_json::from_str(text).map(Some).map_err(|e| {
                Error::failed(
                    "read the DR task's report",
                    self.resource(&what),
                    format!("its XCom return_value is not JSON: {e}"),
                )
            }),
            Some(Value::Null) | None => Ok(None),
            Some(other) => Ok(Some(other.clone())),
        }
    }

    /// The text of the `mwaa_dr` task's log for try `try_number`.
    pub async fn task_log(&self, dag_id: &str, run_id: &str, try_number: u32) -> Result<String> {
        let what = format!("log of task {DR_TASK_ID} of run {run_id} of DAG {dag_id}");
        let mut query = Map::new();
        query.insert("full_content".into(), json!(true));
        let call = get(
            format!("{}/logs/{try_number}", Self::task_path(dag_id, run_id)),
            query,
        );
        let answer = self.call(&what, call.clone()).await?;
        if answer.status != 200 {
            return Err(self.unexpected(&what, &call, &answer));
        }
        Ok(log_text(&answer.body))
    }
}

fn get(path: String, query: Map<String, Value>) -> RestCall {
    RestCall {
        method: RestMethod::Get,
        path,
        query,
        body: None,
    }
}

/// A path segment: DAG and run ids may hold `:` and `+` (run ids made from timestamps).
fn segment(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// The readable part of an Airflow error answer (problem JSON `detail`/`title`, else the body).
fn problem_detail(body: &Value) -> String {
    for key in ["detail", "title", "message", "Message"] {
        match body.get(key) {
            Some(Value::String(s)) if !s.is_empty() => return s.clone(),
            Some(v @ (Value::Array(_) | Value::Object(_))) => return v.to_string(),
            _ => {}
        }
    }
    match body {
        Value::Null => "no body".into(),
        Value::String(s) => s.chars().take(300).collect(),
        other => other.to_string().chars().take(300).collect(),
    }
}

/// A task log answer as text: `/api/v1` gives `content` as one string, `/api/v2` as a list
/// of structured messages (`event`) or strings.
fn log_text(body: &Value) -> String {
    match body.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(lines)) => lines
            .iter()
            .map(|l| match l {
                Value::String(s) => s.clone(),
                other => other
                    .get("event")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| other.to_string()),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The DR binary's error in a task log: the `message` of its JSON error document
/// (`{"error": {"message": ...}}`) when the log holds one, else the log's last lines.
pub fn error_of_log(log: &str) -> String {
    for line in log.lines().rev() {
        let Some(start) = line.find('{') else {
            continue;
        };
        if let Ok(doc) = serde_json::from_str::<Value>(&line[start..])
            && let Some(message) = doc
                .get("error")
                .and_then(|e| e.get("message"))
                .and_then(Value::as_str)
        {
            return message.to_string();
        }
    }
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = &lines[lines.len().saturating_sub(5)..];
    if tail.is_empty() {
        "the task log is empty".into()
    } else {
        tail.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_follows_the_airflow_major() {
        assert_eq!(ApiVersion::of_airflow("2.10.3"), Some(ApiVersion::V1));
        assert_eq!(ApiVersion::of_airflow("3.0.6"), Some(ApiVersion::V2));
        assert_eq!(ApiVersion::of_airflow("1.10.12"), None);
        assert_eq!(ApiVersion::of_airflow(""), None);
    }

    #[test]
    fn run_ids_are_escaped_in_paths() {
        assert_eq!(
            segment("manual__2024-01-01T00:00:00+00:00"),
            "manual__2024-01-01T00%3A00%3A00%2B00%3A00"
        );
        assert_eq!(segment("a b"), "a%20b");
    }

    #[test]
    fn log_text_reads_both_shapes() {
        assert_eq!(log_text(&json!({"content": "a\nb"})), "a\nb");
        assert_eq!(
            log_text(&json!({"content": [{"event": "one", "timestamp": "t"}, "two"]})),
            "one\ntwo"
        );
    }

    #[test]
    fn the_binarys_json_error_is_found_in_a_log() {
        let log = "[2024] INFO - starting\n[2024] INFO - {\"error\": {\"kind\": \"failed\", \"message\": \"restore failed on db: boom\"}}\n[2024] ERROR - Task failed";
        assert_eq!(error_of_log(log), "restore failed on db: boom");
        assert_eq!(error_of_log("x\n\ny\nz"), "x\ny\nz");
        assert_eq!(error_of_log(""), "the task log is empty");
    }
}
