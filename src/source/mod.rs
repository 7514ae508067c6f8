//! Signed delivery of the desired state through the stack's own bucket, and the host's status
//! back through it (docs/delivery.md). CI [`publish`]es a deterministic [`bundle`] of the
//! environment's manifests and a signed [`pointer`] to it; the daemon follows the pointer with
//! a [`fetch::Remote`], which verifies, [`unpack`]s, validates and swaps a new revision in, or
//! refuses it with a typed reason and keeps the last good one. The leader writes its status
//! [`snapshot`] to the bucket, where `stackwarden status` reads it from anywhere.
//!
//! Below the reconcile loop: this module returns outcomes and never decides what a pass does.
//! Objects, under a prefix (default `stackwarden`):
//! `<prefix>/bundles/<sha256>`, `<prefix>/<env>/current`, `<prefix>/<env>/status.json`, and
//! the [`artifact`]s a new instance starts from, `<prefix>/artifacts/<sha256>`.

pub mod artifact;
pub mod bundle;
pub mod fetch;
pub mod pointer;
pub mod provenance;
pub mod publish;
pub mod signing;
pub mod snapshot;
pub mod unpack;

use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// The prefix every delivery object lives under unless told otherwise.
pub const DEFAULT_PREFIX: &str = "stackwarden";

/// Where one environment's delivery objects are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The stack's bucket.
    pub bucket: String,
    /// The prefix, without slashes at either end.
    pub prefix: String,
    /// The environment.
    pub env: String,
}

impl Location {
    /// A location; slashes around the prefix are dropped.
    pub fn new(bucket: &str, prefix: &str, env: &str) -> Location {
        Location {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            env: env.to_string(),
        }
    }

    /// `s3://BUCKET/PREFIX`, as `run --source` takes it.
    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    fn join(&self, rest: &str) -> String {
        if self.prefix.is_empty() {
            rest.to_string()
        } else {
            format!("{}/{rest}", self.prefix)
        }
    }

    /// `<prefix>/bundles/<sha256>`.
    pub fn bundle_key(&self, sha256: &str) -> String {
        self.join(&format!("bundles/{sha256}"))
    }

    /// `<prefix>/artifacts/<sha256>`.
    pub fn artifact_key(&self, sha256: &str) -> String {
        self.join(&format!("artifacts/{sha256}"))
    }

    /// `<prefix>/<env>/current`.
    pub fn pointer_key(&self) -> String {
        self.join(&format!("{}/current", self.env))
    }

    /// `<prefix>/<env>/status.json`.
    pub fn status_key(&self) -> String {
        self.join(&format!("{}/status.json", self.env))
    }
}

/// `s3://BUCKET[/PREFIX]` → bucket and prefix (default [`DEFAULT_PREFIX`]).
pub fn parse_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let prefix = prefix.trim_matches('/');
    if bucket.is_empty() {
        return None;
    }
    let prefix = if prefix.is_empty() {
        DEFAULT_PREFIX
    } else {
        prefix
    };
    Some((bucket.to_string(), prefix.to_string()))
}

/// An S3 call that failed, naming the object and what S3 (or the transport) said.
#[derive(Debug, thiserror::Error)]
#[error("{operation} s3://{bucket}/{key} failed: {code}: {message}")]
pub struct S3Error {
    /// The S3 operation.
    pub operation: &'static str,
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// The service's error code (`AccessDenied`, `NoSuchBucket`), or `transport`.
    pub code: String,
    /// The service's message.
    pub message: String,
    /// HTTP status, when there was an answer.
    pub status: Option<u16>,
    /// The SDK error.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl S3Error {
    fn new<E>(
        operation: &'static str,
        bucket: &str,
        key: &str,
        e: aws_sdk_s3::error::SdkError<E>,
    ) -> S3Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = e.raw_response().map(|r| r.status().as_u16());
        let code = e
            .as_service_error()
            .and_then(|s| s.code())
            .map(str::to_string)
            .unwrap_or_else(|| match status {
                Some(s) => format!("HTTP {s}"),
                None => "transport".to_string(),
            });
        let message = e
            .as_service_error()
            .and_then(|s| s.message())
            .map(str::to_string)
            .unwrap_or_else(|| {
                use std::error::Error;
                // The SDK's own Display says only "service error"; the cause says what.
                let mut text = e.to_string();
                let mut cause = e.source();
                while let Some(c) = cause {
                    text = format!("{text}: {c}");
                    cause = c.source();
                }
                text
            });
        S3Error {
            operation,
            bucket: bucket.to_string(),
            key: key.to_string(),
            code,
            message,
            status,
            source: Box::new(e),
        }
    }

    /// S3 refused the caller (IAM).
    pub fn is_access_denied(&self) -> bool {
        self.code == "AccessDenied" || self.status == Some(403)
    }

    /// The object does not exist.
    pub fn is_not_found(&self) -> bool {
        self.code == "NoSuchKey" || self.code == "NotFound" || self.status == Some(404)
    }

    /// A conditional write lost: another writer came first.
    pub fn is_precondition_failed(&self) -> bool {
        matches!(
            self.code.as_str(),
            "PreconditionFailed" | "ConditionalRequestConflict"
        ) || matches!(self.status, Some(412 | 409))
    }
}

/// Reads a GetObject body, refusing more than `cap` bytes (checked against the declared
/// length first, then while streaming).
async fn read_capped(
    body: aws_sdk_s3::primitives::ByteStream,
    declared: Option<i64>,
    cap: u64,
) -> Result<Vec<u8>, CapError> {
    if let Some(len) = declared
        && u64::try_from(len).unwrap_or(u64::MAX) > cap
    {
        return Err(CapError::TooLarge);
    }
    let mut body = body;
    let mut out = Vec::new();
    while let Some(chunk) = body
        .try_next()
        .await
        .map_err(|e| CapError::Stream(e.to_string()))?
    {
        if (out.len() + chunk.len()) as u64 > cap {
            return Err(CapError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Why a capped read stopped.
#[derive(Debug)]
enum CapError {
    TooLarge,
    Stream(String),
}
