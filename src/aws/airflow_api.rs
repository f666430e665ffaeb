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
                    "the path has {} characters and InvokeRestApi accepts at most {MAX_PATH} (a DAG id of at most {} characters can be triggered); give the DAG a shorter id",
                    call.path.len(),
                    MAX_PATH - "/dags//dagRuns".len()
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

    /// Refuses a DAG whose trigger path (`/dags/{dag_id}/dagRuns`) is longer than
    /// InvokeRestApi's Path allows: such a DAG cannot be run from outside at all.
    pub fn check_triggerable(&self, dag_id: &str) -> Result<()> {
        let path = format!("/dags/{}/dagRuns", segment(dag_id));
        if path.len() > MAX_PATH {
            return Err(Error::failed(
                format!("trigger the DAG {dag_id}"),
                self.resource(&format!("DAG {dag_id}")),
                format!(
                    "its trigger path {path} has {} characters and InvokeRestApi accepts at most {MAX_PATH}, so DAG ids of at most {} characters (escaped) can be run from outside; give the DAG a shorter id (METADATA_EXPORT_DAG_NAME, METADATA_IMPORT_DAG_NAME, METADATA_CLEANUP_DAG_NAME)",
                    path.len(),
                    MAX_PATH - "/dags//dagRuns".len()
                ),
            ));
        }
        Ok(())
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

    /// `None` when no such run exists. Where `/dags/{dag_id}/dagRuns/{run_id}` is longer than
    /// InvokeRestApi's Path allows (a long DAG id), the run is picked from the DAG's runs,
    /// newest first, through `POST /dags/~/dagRuns/list` (both versions have it).
    pub async fn get_run(&self, dag_id: &str, run_id: &str) -> Result<Option<DagRun>> {
        let what = format!("run {run_id} of DAG {dag_id}");
        let path = format!("/dags/{}/dagRuns/{}", segment(dag_id), segment(run_id));
        if path.len() > MAX_PATH {
            return self.find_run(dag_id, run_id).await;
        }
        let call = get(path, Map::new());
        let answer = self.call(&what, call.clone()).await?;
        match answer.status {
            200 => self.parse(&what, &call, answer.body).map(Some),
            404 => Ok(None),
            _ => Err(self.unexpected(&what, &call, &answer)),
        }
    }

    async fn find_run(&self, dag_id: &str, run_id: &str) -> Result<Option<DagRun>> {
        #[derive(Deserialize)]
        struct Page {
            dag_runs: Vec<DagRun>,
        }
        let what = format!("runs of DAG {dag_id}");
        let mut offset = 0;
        loop {
            let call = RestCall {
                method: RestMethod::Post,
                path: "/dags/~/dagRuns/list".into(),
                query: Map::new(),
                body: Some(json!({
                    "dag_ids": [dag_id],
                    "order_by": "-id",
                    "page_offset": offset,
                    "page_limit": PAGE,
                })),
            };
            let answer = self.call(&what, call.clone()).await?;
            if answer.status != 200 {
                return Err(self.unexpected(&what, &call, &answer));
            }
            let page: Page = self.parse(&what, &call, answer.body)?;
            let got = page.dag_runs.len();
            if let Some(run) = page.dag_runs.into_iter().find(|r| r.dag_run_id == run_id) {
                return Ok(Some(run));
            }
            if got < PAGE {
                return Ok(None);
            }
            offset += got;
        }
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
}
