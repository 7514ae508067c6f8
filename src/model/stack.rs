//! `Stack`: the one document every manifest set has.

use super::common::{MemSize, Mode, duration};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// `kind: Stack`: identity of the stack and its stack-wide settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StackSpec {
    /// Project name, the `{project}` of the naming contract (`durable-code`).
    pub project: String,
    /// Environment name, the `{env}` of the naming contract.
    pub environment: String,
    /// The AWS region the stack lives in.
    pub region: String,
    /// The seed's `enable_observability`: false removes the runtime resources.
    pub enabled: bool,
    /// `enforce` repairs drift; `observe` only reports it.
    #[serde(default)]
    pub mode: Mode,
    /// How often the daemon re-observes everything even without a trigger.
    #[serde(with = "duration", default = "default_interval")]
    pub reconcile_interval: Duration,
    /// The application's public domain (Faro CORS origin).
    pub domain: String,
    /// The host's shape and budget.
    pub host: HostSpec,
    /// Where drift alerts go.
    #[serde(default)]
    pub alerts: AlertsSpec,
    /// Drift people know about and accept until a date: no repair and no alert for exactly
    /// that, reviewed like any other manifest change.
    #[serde(default)]
    pub acknowledgements: Vec<Acknowledgement>,
}

/// The longest an acknowledgement may run: past that, fix the manifest instead.
pub const MAX_ACKNOWLEDGEMENT: Duration = Duration::from_secs(90 * 24 * 3600);

/// One acknowledged drift or policy violation.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Acknowledgement {
    /// The resource, `Kind/name` (`Container/loki`).
    pub resource: String,
    /// Field paths it covers (`spec.user`, `ingress`): a change is covered when every field
    /// it changes is one of them or lies under one.
    #[serde(default)]
    pub fields: Vec<String>,
    /// A policy rule whose violation on the resource it covers.
    #[serde(default)]
    pub rule: Option<String>,
    /// Why the drift may stand (required).
    #[serde(default)]
    pub reason: String,
    /// Until when: RFC 3339 (`2026-12-04T18:00:00Z`) or a date (`2026-12-04`, midnight UTC).
    #[serde(default)]
    pub expires: Option<String>,
}

impl Acknowledgement {
    /// When it runs out, if `expires` is set and readable.
    pub fn expires_at(&self) -> Option<SystemTime> {
        let text = self.expires.as_deref()?.trim();
        let full = if text.len() == 10 {
            format!("{text}T00:00:00Z")
        } else {
            text.to_string()
        };
        humantime::parse_rfc3339_weak(full.trim_end_matches('Z')).ok()
    }

    /// True while it holds.
    pub fn active(&self, now: SystemTime) -> bool {
        self.expires_at().is_some_and(|t| now < t)
    }

    /// True when it covers a change of `resource` to these field paths (all of them).
    pub fn covers_fields<'a>(
        &self,
        resource: &str,
        mut paths: impl Iterator<Item = &'a str>,
    ) -> bool {
        !self.fields.is_empty()
            && self.resource == resource
            && paths.all(|p| self.fields.iter().any(|f| field_under(p, f)))
    }

    /// True when it covers the violation of `rule` on `resource`.
    pub fn covers_rule(&self, resource: &str, rule: &str) -> bool {
        self.resource == resource && self.rule.as_deref() == Some(rule)
    }
}

/// True when `path` is `field` or lies under it (`spec.user` under `spec`, `ingress[tcp/22 …]`
/// under `ingress`).
fn field_under(path: &str, field: &str) -> bool {
    path == field
        || path
            .strip_prefix(field)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

fn default_interval() -> Duration {
    Duration::from_secs(300)
}

/// The EC2 host that runs the containers.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostSpec {
    /// EC2 instance type (t3.medium).
    pub instance_type: String,
    /// The most the containers' memory limits may add up to.
    pub memory_budget: MemSize,
    /// Where config files and data directories live on the host.
    #[serde(default = "default_root")]
    pub root: PathBuf,
}

fn default_root() -> PathBuf {
    PathBuf::from("/opt/observability")
}

/// Alert routing.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlertsSpec {
    /// Where drift alerts are sent.
    #[serde(default)]
    pub receivers: Vec<Receiver>,
}

/// One alert receiver.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Receiver {
    /// A name for status and logs.
    pub name: String,
    /// `alertmanager` (v2 API), `webhook` (signed JSON POST) or `slack` (incoming webhook).
    #[serde(rename = "type")]
    pub kind: ReceiverType,
    /// Base URL (Alertmanager) or full URL (webhook).
    pub url: String,
    /// The HMAC-SHA256 key a webhook's body is signed with, from a file or an environment
    /// variable: never written in a manifest.
    #[serde(default)]
    pub signing_key: Option<super::SecretSource>,
    /// Extra trust for an `https://` receiver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ReceiverTls>,
    /// Credentials, each read from a file: never written in a manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<ReceiverAuth>,
    /// Extra request headers (e.g. Mimir's `X-Scope-OrgID`); not for credentials.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Where the Parameters named by `…FromParameter` read their values (filled when the
    /// manifests load, from each Parameter's `valueFrom`).
    #[serde(skip)]
    pub parameters: BTreeMap<String, super::SecretSource>,
}

/// A receiver's TLS trust.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReceiverTls {
    /// A PEM bundle of CA certificates trusted in addition to the system roots (relative to
    /// the manifest's directory).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// How a receiver authenticates: one of basic auth and a bearer token.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReceiverAuth {
    /// HTTP basic auth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic: Option<BasicAuth>,
    /// A file holding the bearer token (relative to the manifest's directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_file: Option<PathBuf>,
    /// The Parameter whose value is the bearer token (instead of a file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_from_parameter: Option<String>,
}

/// HTTP basic auth, the password from a file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BasicAuth {
    /// The user name (not a secret).
    pub username: String,
    /// A file holding the password (relative to the manifest's directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// The Parameter whose value is the password (instead of a file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_from_parameter: Option<String>,
}

/// The protocol a receiver speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceiverType {
    /// Alertmanager's `/api/v2/alerts`.
    Alertmanager,
    /// A plain JSON webhook.
    Webhook,
    /// A Slack (or Slack-compatible) incoming webhook: one message per transition.
    Slack,
}
