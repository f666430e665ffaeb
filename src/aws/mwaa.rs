//! Amazon MWAA: GetEnvironment, CreateEnvironment and InvokeRestApi, with the environment
//! definition as plain data (the field names of MWAA's own API, so a saved definition reads
//! like a GetEnvironment answer).

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use aws_sdk_mwaa::Client;
use aws_sdk_mwaa::error::SdkError;
use aws_sdk_mwaa::types as t;
use serde::{Deserialize, Serialize};

use super::{StripHostPrefix, endpoint_override, sdk_config, sdk_error};
use crate::error::{Error, Result};
use crate::model::{AwsTimeouts, EnvironmentStatus};

/// An environment as MWAA describes it; also what CreateEnvironment takes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EnvironmentDefinition {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<EnvironmentStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub airflow_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_role_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_bucket_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dag_s3_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_configuration: Option<Network>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_workers: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_workers: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_webservers: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_webservers: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedulers: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_management: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webserver_access_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weekly_maintenance_window_start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub airflow_configuration_options: Option<BTreeMap<String, String>>,
    #[serde(
        default,
        rename = "PluginsS3Path",
        skip_serializing_if = "Option::is_none"
    )]
    pub plugins_s3_path: Option<String>,
    #[serde(
        default,
        rename = "PluginsS3ObjectVersion",
        skip_serializing_if = "Option::is_none"
    )]
    pub plugins_s3_object_version: Option<String>,
    #[serde(
        default,
        rename = "RequirementsS3Path",
        skip_serializing_if = "Option::is_none"
    )]
    pub requirements_s3_path: Option<String>,
    #[serde(
        default,
        rename = "RequirementsS3ObjectVersion",
        skip_serializing_if = "Option::is_none"
    )]
    pub requirements_s3_object_version: Option<String>,
    #[serde(
        default,
        rename = "StartupScriptS3Path",
        skip_serializing_if = "Option::is_none"
    )]
    pub startup_script_s3_path: Option<String>,
    #[serde(
        default,
        rename = "StartupScriptS3ObjectVersion",
        skip_serializing_if = "Option::is_none"
    )]
    pub startup_script_s3_object_version: Option<String>,
    /// Module name (DagProcessingLogs, SchedulerLogs, TaskLogs, WebserverLogs, WorkerLogs)
    /// -> its logging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging_configuration: Option<BTreeMap<String, ModuleLogging>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webserver_url: Option<String>,
    /// Last update's error, when the environment failed (e.g. CREATE_FAILED).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Network {
    #[serde(default)]
    pub subnet_ids: Vec<String>,
    #[serde(default)]
    pub security_group_ids: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ModuleLogging {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_watch_log_group_arn: Option<String>,
}

/// An HTTP method InvokeRestApi accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestMethod {
    Get,
    Post,
    Patch,
    Put,
    Delete,
}

impl RestMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            RestMethod::Get => "GET",
            RestMethod::Post => "POST",
            RestMethod::Patch => "PATCH",
            RestMethod::Put => "PUT",
            RestMethod::Delete => "DELETE",
        }
    }
}

/// One call to the environment's Airflow REST API through InvokeRestApi. `path` is relative
/// to the API's root (`/dags/x`: MWAA adds `/api/v1` or `/api/v2` itself).
#[derive(Debug, Clone, PartialEq)]
pub struct RestCall {
    pub method: RestMethod,
    pub path: String,
    pub query: serde_json::Map<String, serde_json::Value>,
    pub body: Option<serde_json::Value>,
}

/// Airflow's answer: its HTTP status and JSON body, whatever the status (MWAA's
/// RestApiClientException and RestApiServerException carry Airflow's 4xx and 5xx answers,
/// which the caller classifies).
#[derive(Debug, Clone, PartialEq)]
pub struct RestAnswer {
    pub status: u16,
    pub body: serde_json::Value,
}

/// The IAM action InvokeRestApi needs, named in the error when it is missing.
pub const INVOKE_REST_API_PERMISSION: &str = "airflow:InvokeRestApi";

/// The MWAA operations mwaa-dr needs.
#[async_trait]
pub trait Mwaa: Send + Sync {
    /// `None` when no environment of that name exists.
    async fn get_environment(&self, name: &str) -> Result<Option<EnvironmentDefinition>>;
    /// Starts creating the environment; returns its ARN.
    async fn create_environment(&self, definition: &EnvironmentDefinition) -> Result<String>;
    /// One call to the environment's Airflow REST API. Airflow's own error statuses come
    /// back as answers; MWAA's refusals (no permission, no such environment, web server
    /// down) as errors.
    async fn invoke_rest_api(&self, name: &str, call: &RestCall) -> Result<RestAnswer>;
}

/// The real MWAA API through aws-sdk-mwaa.
pub struct SdkMwaa {
    client: Client,
    region: String,
}

impl SdkMwaa {
    pub async fn new(region: Option<&str>, timeouts: &AwsTimeouts) -> Self {
        let shared = sdk_config(region, timeouts).await;
        let mut builder = aws_sdk_mwaa::config::Builder::from(&shared);
        if let Some(endpoint) = endpoint_override(&shared, "MWAA") {
            builder = builder.endpoint_url(&endpoint);
            if let Some(strip) = StripHostPrefix::for_endpoint(&endpoint) {
                builder = builder.interceptor(strip);
            }
        }
        SdkMwaa {
            client: Client::from_conf(builder.build()),
            region: shared
                .region()
                .map(|r| r.to_string())
                .unwrap_or_else(|| "default region".into()),
        }
    }

    fn resource(&self, name: &str) -> String {
        format!("MWAA environment {name} ({})", self.region)
    }
}

#[async_trait]
impl Mwaa for SdkMwaa {
    async fn get_environment(&self, name: &str) -> Result<Option<EnvironmentDefinition>> {
        match self.client.get_environment().name(name).send().await {
            Ok(out) => Ok(out.environment().map(definition_of)),
            Err(SdkError::ServiceError(e)) if e.err().is_resource_not_found_exception() => Ok(None),
            Err(e) => Err(sdk_error("GetEnvironment", self.resource(name), e)),
        }
    }

    async fn create_environment(&self, d: &EnvironmentDefinition) -> Result<String> {
        let logging = match &d.logging_configuration {
            Some(modules) => Some(
                logging_input(modules)
                    .map_err(|e| Error::failed("CreateEnvironment", self.resource(&d.name), e))?,
            ),
            None => None,
        };
        let network = d.network_configuration.as_ref().map(|n| {
            t::NetworkConfiguration::builder()
                .set_subnet_ids(Some(n.subnet_ids.clone()))
                .set_security_group_ids(Some(n.security_group_ids.clone()))
                .build()
        });
        let to_map = |m: &Option<BTreeMap<String, String>>| {
            m.as_ref().map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<HashMap<_, _>>()
            })
        };
        let out = self
            .client
            .create_environment()
            .name(&d.name)
            .set_execution_role_arn(d.execution_role_arn.clone())
            .set_source_bucket_arn(d.source_bucket_arn.clone())
            .set_dag_s3_path(d.dag_s3_path.clone())
            .set_network_configuration(network)
            .set_airflow_version(d.airflow_version.clone())
            .set_environment_class(d.environment_class.clone())
            .set_max_workers(d.max_workers)
            .set_min_workers(d.min_workers)
            .set_max_webservers(d.max_webservers)
            .set_min_webservers(d.min_webservers)
            .set_schedulers(d.schedulers)
            .set_kms_key(d.kms_key.clone())
            .set_endpoint_management(
                d.endpoint_management
                    .as_deref()
                    .map(t::EndpointManagement::from),
            )
            .set_webserver_access_mode(
                d.webserver_access_mode
                    .as_deref()
                    .map(t::WebserverAccessMode::from),
            )
            .set_weekly_maintenance_window_start(d.weekly_maintenance_window_start.clone())
            .set_airflow_configuration_options(to_map(&d.airflow_configuration_options))
            .set_plugins_s3_path(d.plugins_s3_path.clone())
            .set_plugins_s3_object_version(d.plugins_s3_object_version.clone())
            .set_requirements_s3_path(d.requirements_s3_path.clone())
            .set_requirements_s3_object_version(d.requirements_s3_object_version.clone())
            .set_startup_script_s3_path(d.startup_script_s3_path.clone())
            .set_startup_script_s3_object_version(d.startup_script_s3_object_version.clone())
            .set_logging_configuration(logging)
            .set_tags(to_map(&d.tags))
            .send()
            .await
            .map_err(|e| sdk_error("CreateEnvironment", self.resource(&d.name), e))?;
        Ok(out.arn().unwrap_or_default().to_string())
    }

    async fn invoke_rest_api(&self, name: &str, call: &RestCall) -> Result<RestAnswer> {
        self.invoke(name, call).await
    }
}

impl SdkMwaa {
    async fn invoke(&self, name: &str, call: &RestCall) -> Result<RestAnswer> {
        use aws_sdk_mwaa::operation::invoke_rest_api::InvokeRestApiError as E;
        let operation = "InvokeRestApi";
        let mut request = self
            .client
            .invoke_rest_api()
            .name(name)
            .path(&call.path)
            .method(t::RestApiMethod::from(call.method.as_str()));
        if !call.query.is_empty() {
            request = request
                .query_parameters(document_of(&serde_json::Value::Object(call.query.clone())));
        }
        if let Some(body) = &call.body {
            request = request.body(document_of(body));
        }
        let answer = |status: Option<i32>, body: Option<&aws_smithy_types::Document>| RestAnswer {
            status: status.and_then(|s| u16::try_from(s).ok()).unwrap_or(500),
            body: body.map(json_of).unwrap_or(serde_json::Value::Null),
        };
        match request.send().await {
            Ok(out) => Ok(answer(
                out.rest_api_status_code().or(Some(200)),
                out.rest_api_response(),
            )),
            Err(SdkError::ServiceError(e)) => match e.err() {
                E::RestApiClientException(x) => {
                    Ok(answer(x.rest_api_status_code(), x.rest_api_response()))
                }
                E::RestApiServerException(x) => {
                    Ok(answer(x.rest_api_status_code(), x.rest_api_response()))
                }
                E::AccessDeniedException(x) => Err(Error::failed(
                    operation,
                    self.resource(name),
                    format!(
                        "access denied ({}): the caller needs the IAM permission {INVOKE_REST_API_PERMISSION} on this environment",
                        x.message().unwrap_or("no message")
                    ),
                )),
                E::ResourceNotFoundException(x) => Err(Error::failed(
                    operation,
                    self.resource(name),
                    format!(
                        "no such environment, or its web server is not up ({})",
                        x.message().unwrap_or("ResourceNotFoundException")
                    ),
                )),
                _ => Err(sdk_error(
                    operation,
                    self.resource(name),
                    SdkError::ServiceError(e),
                )),
            },
            Err(e) => Err(sdk_error(operation, self.resource(name), e)),
        }
    }
}

/// JSON as a Smithy document (what InvokeRestApi's Body and QueryParameters are).
pub fn document_of(value: &serde_json::Value) -> aws_smithy_types::Document {
    use aws_smithy_types::{Document as D, Number as N};
    match value {
        serde_json::Value::Null => D::Null,
        serde_json::Value::Bool(b) => D::Bool(*b),
        serde_json::Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => D::Number(N::PosInt(u)),
            (None, Some(i), _) => D::Number(N::NegInt(i)),
            (_, _, f) => D::Number(N::Float(f.unwrap_or(0.0))),
        },
        serde_json::Value::String(s) => D::String(s.clone()),
        serde_json::Value::Array(a) => D::Array(a.iter().map(document_of).collect()),
        serde_json::Value::Object(o) => {
            D::Object(o.iter().map(|(k, v)| (k.clone(), document_of(v))).collect())
        }
    }
}

/// A Smithy document as JSON.
pub fn json_of(document: &aws_smithy_types::Document) -> serde_json::Value {
    use aws_smithy_types::{Document as D, Number as N};
    match document {
        D::Null => serde_json::Value::Null,
        D::Bool(b) => serde_json::Value::Bool(*b),
        D::Number(N::PosInt(u)) => serde_json::Value::from(*u),
        D::Number(N::NegInt(i)) => serde_json::Value::from(*i),
        D::Number(N::Float(f)) => serde_json::Number::from_f64(*f)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        D::String(s) => serde_json::Value::String(s.clone()),
        D::Array(a) => serde_json::Value::Array(a.iter().map(json_of).collect()),
        D::Object(o) => {
            serde_json::Value::Object(o.iter().map(|(k, v)| (k.clone(), json_of(v))).collect())
        }
    }
}

fn logging_input(
    modules: &BTreeMap<String, ModuleLogging>,
) -> std::result::Result<t::LoggingConfigurationInput, String> {
    let module =
        |name: &str| -> std::result::Result<Option<t::ModuleLoggingConfigurationInput>, String> {
            let Some(m) = modules.get(name) else {
                return Ok(None);
            };
            t::ModuleLoggingConfigurationInput::builder()
                .enabled(m.enabled.unwrap_or(false))
                .log_level(t::LoggingLevel::from(
                    m.log_level.as_deref().unwrap_or("INFO"),
                ))
                .build()
                .map(Some)
                .map_err(|e| format!("logging of {name}: {e}"))
        };
    Ok(t::LoggingConfigurationInput::builder()
        .set_dag_processing_logs(module("DagProcessingLogs")?)
        .set_scheduler_logs(module("SchedulerLogs")?)
        .set_task_logs(module("TaskLogs")?)
        .set_webserver_logs(module("WebserverLogs")?)
        .set_worker_logs(module("WorkerLogs")?)
        .build())
}

/// The SDK's environment as plain data.
fn definition_of(e: &t::Environment) -> EnvironmentDefinition {
    let s = |v: Option<&str>| v.map(str::to_string);
    let module = |m: Option<&t::ModuleLoggingConfiguration>| {
        m.map(|m| ModuleLogging {
            enabled: m.enabled(),
            log_level: m.log_level().map(|l| l.as_str().to_string()),
            cloud_watch_log_group_arn: s(m.cloud_watch_log_group_arn()),
        })
    };
    let logging = e.logging_configuration().map(|l| {
        [
            ("DagProcessingLogs", module(l.dag_processing_logs())),
            ("SchedulerLogs", module(l.scheduler_logs())),
            ("TaskLogs", module(l.task_logs())),
            ("WebserverLogs", module(l.webserver_logs())),
            ("WorkerLogs", module(l.worker_logs())),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
        .collect()
    });
    let sorted = |m: Option<&HashMap<String, String>>| {
        m.map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    };
    EnvironmentDefinition {
        name: e.name().unwrap_or_default().to_string(),
        arn: s(e.arn()),
        status: e.status().map(|x| EnvironmentStatus::parse(x.as_str())),
        airflow_version: s(e.airflow_version()),
        execution_role_arn: s(e.execution_role_arn()),
        source_bucket_arn: s(e.source_bucket_arn()),
        dag_s3_path: s(e.dag_s3_path()),
        network_configuration: e.network_configuration().map(|n| Network {
            subnet_ids: n.subnet_ids().to_vec(),
            security_group_ids: n.security_group_ids().to_vec(),
        }),
        environment_class: s(e.environment_class()),
        max_workers: e.max_workers(),
        min_workers: e.min_workers(),
        max_webservers: e.max_webservers(),
        min_webservers: e.min_webservers(),
        schedulers: e.schedulers(),
        kms_key: s(e.kms_key()),
        endpoint_management: e.endpoint_management().map(|x| x.as_str().to_string()),
        webserver_access_mode: e.webserver_access_mode().map(|x| x.as_str().to_string()),
        weekly_maintenance_window_start: s(e.weekly_maintenance_window_start()),
        airflow_configuration_options: sorted(e.airflow_configuration_options()),
        plugins_s3_path: s(e.plugins_s3_path()),
        plugins_s3_object_version: s(e.plugins_s3_object_version()),
        requirements_s3_path: s(e.requirements_s3_path()),
        requirements_s3_object_version: s(e.requirements_s3_object_version()),
        startup_script_s3_path: s(e.startup_script_s3_path()),
        startup_script_s3_object_version: s(e.startup_script_s3_object_version()),
        logging_configuration: logging,
        tags: sorted(e.tags()),
        webserver_url: s(e.webserver_url()),
        last_error: e.last_update().and_then(|u| u.error()).map(|err| {
            format!(
                "{}: {}",
                err.error_code().unwrap_or("error"),
                err.error_message().unwrap_or("")
            )
        }),
    }
}
