//! `Stack`: the one document every manifest set has.

use super::common::{MemSize, Mode, duration};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

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
    /// `alertmanager` (v2 API) or `webhook` (JSON POST).
    #[serde(rename = "type")]
    pub kind: ReceiverType,
    /// Base URL (Alertmanager) or full URL (webhook).
    pub url: String,
}

/// The protocol a receiver speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceiverType {
    /// Alertmanager's `/api/v2/alerts`.
    Alertmanager,
    /// A plain JSON webhook.
    Webhook,
}
