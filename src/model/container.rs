//! `Container`: one service of the stack on the host's Docker engine.

use super::common::{MemSize, Tags, duration};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// `kind: Container`: a Docker container named after its service (`metadata.name`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerSpec {
    /// Image reference.
    pub image: String,
    /// Arguments (Docker `Cmd`).
    #[serde(default)]
    pub command: Vec<String>,
    /// Environment variables, literal values only: a container's environment is readable by
    /// anyone who can `docker inspect` it and is logged by Docker clients, so a secret reaches
    /// a container as a file (a ConfigFile `fromParameter`, mounted read-only, named by a
    /// `<VAR>__FILE` variable), never here.
    #[serde(default)]
    pub environment: BTreeMap<String, EnvValue>,
    /// `uid:gid`, numeric. Unset means root, which policy rejects unless `allowRoot` says why.
    #[serde(default)]
    pub user: Option<String>,
    /// Supplementary groups, numeric gids (Docker `GroupAdd`). A container that needs a
    /// second group (stackwarden's own needs the Docker socket's) takes it here and keeps
    /// its primary group for the files it owns: without CAP_CHOWN, a process can give a file
    /// only a group it is a member of.
    #[serde(default)]
    pub group_add: Vec<String>,
    /// An explicit, reasoned exception to the no-root rule.
    #[serde(default)]
    pub allow_root: Option<RootAllowance>,
    /// Privileged mode (a policy violation).
    #[serde(default)]
    pub privileged: bool,
    /// Capabilities to add.
    #[serde(default)]
    pub cap_add: Vec<String>,
    /// Capabilities to drop.
    #[serde(default)]
    pub cap_drop: Vec<String>,
    /// Security options (`no-new-privileges` is required by policy).
    #[serde(default)]
    pub security_opt: Vec<String>,
    /// Devices mapped in.
    #[serde(default)]
    pub devices: Vec<Device>,
    /// Read-only root file system.
    #[serde(default)]
    pub read_only_root_filesystem: bool,
    /// tmpfs mounts: target path → options.
    #[serde(default)]
    pub tmpfs: BTreeMap<String, String>,
    /// Bind mounts of ConfigFiles or host paths, and named volumes.
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// Published ports (ignored on networks `none` and `host`, where there is nothing to publish).
    #[serde(default)]
    pub ports: Vec<Port>,
    /// Docker network mode: `none`, `host`, or a network name.
    #[serde(default = "default_network")]
    pub network: String,
    /// Memory limit.
    pub memory: MemSize,
    /// Restart policy.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Health check run inside the container.
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    /// Containers that must be started (or healthy) first.
    #[serde(default)]
    pub depends_on: Vec<DependsOn>,
    /// Extra labels (the stack label and config hash are added by stackwarden).
    #[serde(default)]
    pub labels: Tags,
}

fn default_network() -> String {
    "none".to_string()
}

/// Why a container may run as root.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RootAllowance {
    /// The reason, for reviewers and the audit trail.
    pub reason: String,
}

/// An environment variable's value (`{ value: … }`). There is deliberately no way to take
/// one from a Parameter: secrets go through files (see [`ContainerSpec::environment`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvValue {
    /// The literal value.
    pub value: String,
}

/// A device mapping.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Device {
    /// Path on the host (`/dev/kmsg`).
    pub host_path: String,
    /// Path in the container (defaults to the host path).
    #[serde(default)]
    pub container_path: Option<String>,
    /// cgroup permissions (`r`, `rw`, `rwm`).
    #[serde(default = "rwm")]
    pub permissions: String,
}

fn rwm() -> String {
    "rwm".to_string()
}

/// A mount: exactly one of `configFile`, `hostPath` or `volume`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mount {
    /// A ConfigFile by manifest name: its checksum is part of the container's config hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_file: Option<String>,
    /// A path relative to the host root (created if missing), or an absolute system path
    /// such as `/proc` (mounted as given, never created).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    /// A named Docker volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    /// Path in the container.
    pub target: String,
    /// Mount read-only.
    #[serde(default)]
    pub read_only: bool,
}

/// A published port.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Port {
    /// Container port.
    pub container: u16,
    /// Host port (defaults to the container port).
    #[serde(default)]
    pub host: Option<u16>,
    /// Host address to bind (defaults to 127.0.0.1: nothing is published to the world by default).
    #[serde(default = "loopback")]
    pub host_ip: String,
    /// `tcp` or `udp`.
    #[serde(default = "tcp")]
    pub protocol: String,
}

fn loopback() -> String {
    "127.0.0.1".to_string()
}
fn tcp() -> String {
    "tcp".to_string()
}

/// Docker restart policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never restart.
    No,
    /// Restart unless stopped by hand.
    #[default]
    UnlessStopped,
    /// Always restart.
    Always,
    /// Restart on a non-zero exit.
    OnFailure,
}

impl RestartPolicy {
    /// Docker's spelling.
    pub fn as_docker(self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::UnlessStopped => "unless-stopped",
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
        }
    }
}

/// A container health check.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheck {
    /// Docker `Test`, e.g. `["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:3100/ready"]`.
    pub test: Vec<String>,
    /// Time between probes.
    #[serde(with = "duration", default = "ten_s")]
    pub interval: Duration,
    /// Probe timeout.
    #[serde(with = "duration", default = "five_s")]
    pub timeout: Duration,
    /// Failures before unhealthy.
    #[serde(default = "three")]
    pub retries: u32,
    /// Grace period after start.
    #[serde(with = "duration", default = "zero")]
    pub start_period: Duration,
}

fn ten_s() -> Duration {
    Duration::from_secs(10)
}
fn five_s() -> Duration {
    Duration::from_secs(5)
}
fn zero() -> Duration {
    Duration::ZERO
}
fn three() -> u32 {
    3
}

/// A start-order dependency.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DependsOn {
    /// A Container by manifest name.
    pub container: String,
    /// Wait for `started` or `healthy`.
    #[serde(default)]
    pub condition: DependsOnCondition,
}

/// What a dependency must reach before the dependent starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DependsOnCondition {
    /// Running.
    #[default]
    Started,
    /// Running and its health check passing.
    Healthy,
}
