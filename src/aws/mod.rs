//! AWS adapters: MWAA, CloudWatch, EventBridge Scheduler / EventBridge, SNS and KMS behind narrow
//! traits whose signatures hold no SDK types. Credentials, regions and endpoints come from
//! the standard AWS chain only.

pub mod airflow_api;
pub mod buckets;
pub mod cloudformation;
pub mod cloudwatch;
pub mod kms;
pub mod mwaa;
pub mod schedule;
pub mod sfn;
pub mod sns;

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::error::Error;
use crate::model::AwsTimeouts;

/// The SDK configuration for `region` (None: the chain's region), with bounded calls: a
/// connect timeout, a timeout per attempt, and the SDK's standard retry of throttling,
/// timeouts and server errors up to `timeouts.max_attempts`. Loaded once per region.
pub async fn sdk_config(region: Option<&str>, timeouts: &AwsTimeouts) -> SdkConfig {
    type Loaded = Mutex<HashMap<(Option<String>, AwsTimeouts), SdkConfig>>;
    static LOADED: OnceLock<Loaded> = OnceLock::new();
    let cache = LOADED.get_or_init(Default::default);
    let key = (region.map(str::to_string), *timeouts);
    if let Some(config) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
        return config;
    }
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(timeouts.connect)
                .read_timeout(timeouts.attempt)
                .operation_attempt_timeout(timeouts.attempt)
                .build(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(timeouts.max_attempts.max(1)));
    if let Some(region) = region {
        loader = loader.region(Region::new(region.to_string()));
    }
    let config = loader.load().await;
    if let Ok(mut c) = cache.lock() {
        c.insert(key, config.clone());
    }
    config
}

/// Error codes of AWS services that mean "later": throttling and passing server trouble.
const TRANSIENT_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "ProvisionedThroughputExceededException",
    "SlowDown",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "InternalFailure",
    "InternalServerException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
];

/// An SDK error as the project's error: the full context in the message, and transient when
/// the call timed out, never reached the service, or the service said "later".
pub fn sdk_error<E, R>(operation: &str, resource: impl Into<String>, err: SdkError<E, R>) -> Error
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let transient = match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(service) => service
            .err()
            .code()
            .is_some_and(|code| TRANSIENT_CODES.contains(&code)),
        _ => false,
    };
    let message = sdk_message(&err);
    let timed_out = match &err {
        SdkError::TimeoutError(_) => true,
        SdkError::DispatchFailure(failure) => failure.is_timeout(),
        _ => false,
    };
    let message = if timed_out {
        format!("{message} (no answer within MWAA_DR_AWS_TIMEOUT_SECS)")
    } else {
        message
    };
    Error::caused(operation, resource, message, transient, err)
}

/// The endpoint override for a service, however it was given: `AWS_ENDPOINT_URL_<SERVICE>`,
/// or the general `AWS_ENDPOINT_URL` / profile endpoint the SDK config carries.
pub fn endpoint_override(config: &SdkConfig, service_env: &str) -> Option<String> {
    std::env::var(format!("AWS_ENDPOINT_URL_{service_env}"))
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(|| config.endpoint_url().map(str::to_string))
}

/// MWAA operations carry a host prefix (`api.` for the control plane, `env.` for tokens and
/// the REST API). Against an endpoint override (an emulator, a VPC endpoint) that prefix
/// makes a host that does not resolve; this strips it again, for that endpoint only.
#[derive(Debug)]
pub struct StripHostPrefix {
    authority: String,
}

impl StripHostPrefix {
    /// For the endpoint `url` (e.g. `http://127.0.0.1:5000`); `None` when it has no host.
    pub fn for_endpoint(url: &str) -> Option<Self> {
        let parsed = url::Url::parse(url).ok()?;
        let host = parsed.host_str()?;
        let authority = match parsed.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        Some(StripHostPrefix { authority })
    }

    fn rewrite(&self, uri: &str) -> Option<String> {
        ["api.", "env."].iter().find_map(|prefix| {
            let prefixed = format!("://{prefix}{}", self.authority);
            uri.contains(&prefixed)
                .then(|| uri.replacen(&prefixed, &format!("://{}", self.authority), 1))
        })
    }
}

impl Intercept for StripHostPrefix {
    fn name(&self) -> &'static str {
        "StripHostPrefix"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request_mut();
        if let Some(uri) = self.rewrite(request.uri()) {
            request.set_uri(uri)?;
        }
        Ok(())
    }
}

/// Renders an SDK error with its full context (service code and message).
pub fn sdk_message<E: std::error::Error>(err: &E) -> String {
    aws_smithy_types::error::display::DisplayErrorContext(err).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_only_the_configured_endpoints_prefix() {
        let strip = StripHostPrefix::for_endpoint("http://127.0.0.1:5123").expect("endpoint");
        assert_eq!(
            strip
                .rewrite("http://api.127.0.0.1:5123/environments/x")
                .as_deref(),
            Some("http://127.0.0.1:5123/environments/x")
        );
        assert_eq!(
            strip
                .rewrite("http://env.127.0.0.1:5123/clitoken/x")
                .as_deref(),
            Some("http://127.0.0.1:5123/clitoken/x")
        );
        assert_eq!(
            strip.rewrite("https://api.airflow.us-east-1.amazonaws.com/x"),
            None
        );
    }

    fn service_error(code: &str) -> Error {
        use aws_sdk_s3::operation::get_object::GetObjectError;
        use aws_smithy_runtime_api::http::{Response, StatusCode};
        use aws_smithy_types::body::SdkBody;
        use aws_smithy_types::error::ErrorMetadata;
        let status = StatusCode::try_from(400).expect("a valid status");
        let err =
            GetObjectError::generic(ErrorMetadata::builder().code(code).message("no").build());
        sdk_error(
            "get",
            "s3://b/k",
            SdkError::service_error(err, Response::new(status, SdkBody::empty())),
        )
    }

    #[test]
    fn throttling_is_transient_and_a_denial_is_not_and_both_keep_the_sdk_error() {
        let throttled = service_error("ThrottlingException");
        assert!(throttled.retryable(), "{throttled}");
        let denied = service_error("AccessDenied");
        assert!(!denied.retryable(), "{denied}");
        for err in [throttled, denied] {
            assert!(std::error::Error::source(&err).is_some(), "{err}");
        }
    }
}
