//! The AWS provider's error: which operation failed on which resource, the SDK error kept as
//! the source, and a typed class (transient, permanent, not found) that callers route on.
//! Display is for people: the service's code and message, never a raw response dump.

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use std::error::Error as StdError;

pub use crate::provider::ErrorClass;

/// A boxed cause, kept for the source chain.
type Source = Box<dyn StdError + Send + Sync + 'static>;

/// Service codes that mean "slow down or try again" whatever their HTTP status.
const TRANSIENT_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "SlowDown",
    "ServiceUnavailable",
    "InternalError",
    "InternalFailure",
    "RequestTimeout",
    "RequestTimeoutException",
];

/// Service codes that mean "the credentials in use may not do this" (EC2 says
/// UnauthorizedOperation, ELBv2 and IAM AccessDenied, SSM AccessDeniedException, S3
/// AccessDenied, SNS-style query services AuthorizationError).
const DENIED_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "AuthorizationError",
];

/// Classifies a service error code (and the HTTP status when known).
pub fn class_of_code(code: Option<&str>, status: Option<u16>) -> ErrorClass {
    if let Some(code) = code {
        if TRANSIENT_CODES.contains(&code) {
            return ErrorClass::Transient;
        }
        if DENIED_CODES.contains(&code) {
            return ErrorClass::PermissionDenied;
        }
        if code.starts_with("NoSuch") || code.contains("NotFound") {
            return ErrorClass::NotFound;
        }
    }
    match status {
        Some(s) if s >= 500 || s == 429 => ErrorClass::Transient,
        Some(404) if code.is_none() => ErrorClass::NotFound,
        // A 403 the SDK could not read a code from (moto's XML answers to JSON-protocol
        // calls): a denial is the only thing a 403 without a code says.
        Some(403) if code.is_none() => ErrorClass::PermissionDenied,
        _ => ErrorClass::Permanent,
    }
}

/// A failed AWS call or an unusable answer, naming the operation and the resource.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    /// An API call failed.
    #[error("{operation} on {resource} failed: {summary}")]
    Call {
        /// The API operation.
        operation: &'static str,
        /// The resource it was for.
        resource: String,
        /// The error code, when the service sent one.
        code: Option<String>,
        /// The HTTP status, when an answer came back.
        status: Option<u16>,
        /// How to treat it.
        class: ErrorClass,
        /// For people: the service's code and message, or what happened on the wire.
        summary: String,
        /// The SDK error.
        #[source]
        source: Source,
    },
    /// Something needed is missing or not usable (a lookup found nothing, a secret is unset).
    #[error("{resource}: {message}")]
    Invalid {
        /// The resource.
        resource: String,
        /// What is wrong.
        message: String,
    },
    /// A resource carries another stack's ownership tag: it is never adopted or changed.
    #[error(
        "{resource} belongs to stack `{owner}` (tag stackwarden:stack={owner}); it is never adopted or changed: rename the declared resource or remove it from that stack"
    )]
    ForeignOwner {
        /// The resource (kind, manifest name and live name).
        resource: String,
        /// The stack named in its tag.
        owner: String,
    },
    /// A resource carries this stack's tag but another environment's: staging's and prod's
    /// stacks share a name, so it belongs to the other environment and is never adopted or
    /// changed.
    #[error(
        "{resource} belongs to stack `{stack}` of environment `{env}` (tag stackwarden:env={env}); it is never adopted or changed from another environment: check --env, or rename the declared resource"
    )]
    ForeignEnvironment {
        /// The resource (kind, manifest name and live name).
        resource: String,
        /// The stack named in its tag (this stack's name).
        stack: String,
        /// The environment named in its tag.
        env: String,
    },
    /// The endpoint did not answer in time, or could not be reached.
    #[error("AWS endpoint {endpoint}: {source}")]
    Endpoint {
        /// The endpoint URL (or the SDK's regional default).
        endpoint: String,
        /// The failed call.
        #[source]
        source: Box<AwsError>,
    },
}

impl AwsError {
    /// Wraps an SDK error, keeping it as the source and classifying it.
    pub fn call<E>(
        operation: &'static str,
        resource: impl Into<String>,
        err: SdkError<E, HttpResponse>,
    ) -> AwsError
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let code = err.code().map(str::to_string);
        let (class, summary) = match &err {
            SdkError::ServiceError(_) | SdkError::ResponseError(_) => {
                let class = class_of_code(code.as_deref(), status);
                let said = match (err.code(), err.message()) {
                    (Some(c), Some(m)) => format!("{c}: {m}"),
                    (Some(c), None) => c.to_string(),
                    (None, Some(m)) => m.to_string(),
                    (None, None) => match status {
                        Some(s) => format!("unreadable response (HTTP {s})"),
                        None => "unreadable response".to_string(),
                    },
                };
                // AWS's message names the principal it judged; the action to grant is ours
                // to name, from the table the policies are made of.
                let summary = if class == ErrorClass::PermissionDenied {
                    match super::permissions::action_of_operation(operation) {
                        Some(action) => format!(
                            "permission denied: the credentials in use lack {action} (grant it: `stackwarden iam-policy`; {said})"
                        ),
                        None => format!("permission denied ({said})"),
                    }
                } else {
                    said
                };
                (class, summary)
            }
            SdkError::TimeoutError(_) => (
                ErrorClass::Transient,
                format!("no answer in time ({})", innermost(&err)),
            ),
            SdkError::DispatchFailure(d) => {
                let what = match d.as_connector_error() {
                    Some(c) if c.is_timeout() => "connection timed out",
                    Some(c) if c.is_io() => "connection failed",
                    _ => "request not delivered",
                };
                (
                    ErrorClass::Transient,
                    format!("{what} ({})", innermost(&err)),
                )
            }
            SdkError::ConstructionFailure(_) => (
                ErrorClass::Permanent,
                format!("the request could not be built ({})", innermost(&err)),
            ),
            _ => (ErrorClass::Permanent, innermost(&err)),
        };
        AwsError::Call {
            operation,
            resource: resource.into(),
            code,
            status,
            class,
            summary,
            source: Box::new(err),
        }
    }

    /// An error that is not an API failure.
    pub fn invalid(resource: impl Into<String>, message: impl Into<String>) -> AwsError {
        AwsError::Invalid {
            resource: resource.into(),
            message: message.into(),
        }
    }

    /// The service's error code, if any.
    pub fn code(&self) -> Option<&str> {
        match self {
            AwsError::Call { code, .. } => code.as_deref(),
            AwsError::Endpoint { source, .. } => source.code(),
            AwsError::Invalid { .. }
            | AwsError::ForeignOwner { .. }
            | AwsError::ForeignEnvironment { .. } => None,
        }
    }

    /// How to treat this error: a foreign owner or an invalid input does not go away by
    /// trying again.
    pub fn class(&self) -> ErrorClass {
        match self {
            AwsError::Call { class, .. } => *class,
            AwsError::Endpoint { source, .. } => source.class(),
            AwsError::Invalid { .. }
            | AwsError::ForeignOwner { .. }
            | AwsError::ForeignEnvironment { .. } => ErrorClass::Permanent,
        }
    }

    /// True when no HTTP answer came back (timeout, refused, dropped): worth naming the
    /// endpoint, since the service itself said nothing.
    pub fn is_unanswered(&self) -> bool {
        matches!(
            self,
            AwsError::Call {
                status: None,
                class: ErrorClass::Transient,
                ..
            }
        )
    }
}

/// The deepest cause's Display (e.g. "Connection refused (os error 111)"): the words a
/// person needs, read from the source chain rather than from a Debug dump.
fn innermost(err: &(dyn StdError + 'static)) -> String {
    let mut cur: &(dyn StdError + 'static) = err;
    let mut last = cur.to_string();
    while let Some(next) = cur.source() {
        let text = next.to_string();
        if !text.is_empty() {
            last = text;
        }
        cur = next;
    }
    last
}

impl crate::provider::Classify for AwsError {
    fn class(&self) -> ErrorClass {
        AwsError::class(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_and_server_errors_are_transient() {
        assert_eq!(
            class_of_code(Some("Throttling"), Some(400)),
            ErrorClass::Transient
        );
        assert_eq!(
            class_of_code(Some("RequestLimitExceeded"), Some(503)),
            ErrorClass::Transient
        );
        assert_eq!(class_of_code(None, Some(500)), ErrorClass::Transient);
        assert_eq!(class_of_code(Some("SlowDown"), None), ErrorClass::Transient);
    }

    #[test]
    fn denied_requests_are_permission_denied_and_never_retried() {
        for (code, status) in [
            (Some("AccessDenied"), Some(403)),
            (Some("AccessDeniedException"), Some(400)),
            (Some("UnauthorizedOperation"), Some(403)),
            (Some("AuthorizationError"), Some(403)),
            (None, Some(403)),
        ] {
            let class = class_of_code(code, status);
            assert_eq!(class, ErrorClass::PermissionDenied, "{code:?} {status:?}");
            assert!(!class.is_retryable());
        }
    }

    #[test]
    fn a_denial_names_the_action_to_grant() {
        assert_eq!(
            crate::provider::aws::permissions::action_of_operation("GetBucketEncryption"),
            Some("s3:GetEncryptionConfiguration")
        );
        assert_eq!(
            crate::provider::aws::permissions::action_of_operation("CreateSecurityGroup"),
            Some("ec2:CreateSecurityGroup")
        );
        assert_eq!(
            crate::provider::aws::permissions::action_of_operation("NoSuchCall"),
            None
        );
    }

    #[test]
    fn invalid_requests_are_permanent() {
        for code in ["InvalidParameterValue", "ValidationError"] {
            assert_eq!(
                class_of_code(Some(code), Some(400)),
                ErrorClass::Permanent,
                "{code}"
            );
        }
    }

    #[test]
    fn missing_resources_are_not_found() {
        for code in [
            "NoSuchBucket",
            "InvalidPermission.NotFound",
            "LoadBalancerNotFound",
            "ParameterNotFound",
        ] {
            assert_eq!(
                class_of_code(Some(code), Some(400)),
                ErrorClass::NotFound,
                "{code}"
            );
        }
    }

    #[test]
    fn an_unanswered_call_keeps_the_sdk_error_as_its_source() {
        let err: SdkError<aws_sdk_sts::operation::get_caller_identity::GetCallerIdentityError, _> =
            SdkError::timeout_error("operation timeout after 4s");
        let e = AwsError::call("GetCallerIdentity", "account", err);
        assert_eq!(e.class(), ErrorClass::Transient);
        let text = e.to_string();
        assert!(text.contains("no answer in time"), "{text}");
        assert!(!text.contains("TimeoutError("), "no Debug dump: {text}");
        assert!(StdError::source(&e).is_some());
    }
}
