//! The Docker engine: thin client calls (each with a deadline, each recorded in [`Stats`]),
//! the normalization of inspect responses into [`ContainerView`] (docs/quirks.md, "Docker
//! Engine") and the create body. The comparison with the manifests is `diff`'s.

use super::view::{
    ContainerView, Env, device_string, env_map, health_view, normalize_bind, normalize_caps,
    normalize_security_opt, normalize_swap, port_string, sorted,
};
use crate::model::ownership::{ENV_LABEL, STACK_LABEL};
use crate::model::{ContainerSpec, HealthCheck};
use crate::provider::{CallKind, Stats};
use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, DeviceMapping, HealthConfig, HostConfig,
    ImageInspect, PortBinding, RestartPolicy as DockerRestart, RestartPolicyNameEnum,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// The engine's /dev/shm size when none is given (64 MiB).
const DEFAULT_SHM_SIZE: i64 = 64 << 20;

/// The label recording the identity of each mount source at creation (see
/// [`ContainerView::mount_sources`]).
pub const MOUNTS_LABEL: &str = "stackwarden.mount-sources";

/// A container as observed: its identity and state, and its settings normalized.
#[derive(Debug, Clone, Default)]
pub struct LiveContainer {
    /// Engine id.
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    /// Every label, as on the engine (the view holds the comparable subset).
    pub labels: BTreeMap<String, String>,
    /// `running`, `exited`, `created`, `paused`, …
    pub status: String,
    /// `healthy`, `unhealthy`, `starting`; `None` without a health check.
    pub health: Option<String>,
    /// The last health probe's output, for messages.
    pub health_output: Option<String>,
    /// Exit code of the last run.
    pub exit_code: i64,
    /// The engine's error for the last start, if any.
    pub error: String,
    /// The image reference it was created from (`Config.Image`), as written: with the same
    /// reference and another image id, the tag moved under it.
    pub image_ref: String,
    /// The settings, normalized.
    pub view: ContainerView,
}

impl LiveContainer {
    /// The owning stack, from the label.
    pub fn stack(&self) -> Option<&str> {
        self.labels.get(STACK_LABEL).map(String::as_str)
    }

    /// The owning stack's environment, from the label (none on a container created before
    /// the environment was part of a stack's identity).
    pub fn env(&self) -> Option<&str> {
        self.labels.get(ENV_LABEL).map(String::as_str)
    }

    /// True when the container's process is up (a paused one is not).
    pub fn is_running(&self) -> bool {
        self.status == "running"
    }

    /// The live settings as a model spec, so the policy rules judge live state with the
    /// same code that judges manifests.
    pub fn as_spec(&self, allow_root: Option<crate::model::RootAllowance>) -> ContainerSpec {
        let v = &self.view;
        ContainerSpec {
            image: v.image.clone(),
            command: Vec::new(),
            environment: BTreeMap::new(),
            user: Some(v.user.clone()),
            group_add: v.group_add.clone(),
            allow_root,
            privileged: v.privileged,
            cap_add: v.cap_add.clone(),
            cap_drop: v.cap_drop.clone(),
            security_opt: v.security_opt.clone(),
            devices: Vec::new(),
            read_only_root_filesystem: v.read_only,
            tmpfs: BTreeMap::new(),
            mounts: Vec::new(),
            ports: Vec::new(),
            network: v.network.clone(),
            memory: crate::model::MemSize(u64::try_from(v.memory).unwrap_or(0)),
            restart: crate::model::RestartPolicy::No,
            health_check: None,
            depends_on: Vec::new(),
            labels: self.labels.clone(),
        }
    }
}

/// What a container inherits from its image unless its own config says otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageInfo {
    /// Image id (`sha256:…`).
    pub id: String,
    /// `repo@sha256:…` digests, for references pinned by digest.
    pub repo_digests: Vec<String>,
    /// `Config.User`.
    pub user: String,
    /// `Config.Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Config.Cmd`.
    pub command: Vec<String>,
    /// `Config.Env`.
    pub env: BTreeMap<String, String>,
    /// `Config.WorkingDir`.
    pub working_dir: String,
    /// `Config.Labels`.
    pub labels: BTreeMap<String, String>,
    /// `Config.Healthcheck`, normalized.
    pub health: Option<super::view::HealthView>,
}

/// Normalizes an image inspect response. Pure.
pub fn image_info(i: &ImageInspect) -> ImageInfo {
    let config = i.config.clone().unwrap_or_default();
    let hc = config.healthcheck.unwrap_or_default();
    ImageInfo {
        id: i.id.clone().unwrap_or_default(),
        repo_digests: i.repo_digests.clone().unwrap_or_default(),
        user: config.user.unwrap_or_default(),
        entrypoint: config.entrypoint.unwrap_or_default(),
        command: config.cmd.unwrap_or_default(),
        env: env_map(&config.env.unwrap_or_default()),
        working_dir: config.working_dir.unwrap_or_default(),
        labels: config.labels.unwrap_or_default().into_iter().collect(),
        health: health_view(
            &hc.test.unwrap_or_default(),
            hc.interval.unwrap_or(0),
            hc.timeout.unwrap_or(0),
            hc.retries.unwrap_or(0),
            hc.start_period.unwrap_or(0),
        ),
    }
}

/// Normalizes an inspect response; `image` is what the container's image sets by itself
/// (subtracted from the environment and labels, where the engine merges it in). Pure.
pub fn from_inspect(c: &ContainerInspectResponse, image: Option<&ImageInfo>) -> LiveContainer {
    let config = c.config.clone().unwrap_or_default();
    let host = c.host_config.clone().unwrap_or_default();
    let state = c.state.clone().unwrap_or_default();
    let privileged = host.privileged.unwrap_or(false);
    let mut binds: Vec<String> = host
        .binds
        .unwrap_or_default()
        .iter()
        .map(|b| normalize_bind(b))
        .collect();
    // `--mount` mounts land in HostConfig.Mounts instead of Binds: same meaning, same form.
    for m in host.mounts.unwrap_or_default() {
        let src = m.source.unwrap_or_default();
        let dst = m.target.unwrap_or_default();
        let ro = if m.read_only.unwrap_or(false) {
            ":ro"
        } else {
            ""
        };
        binds.push(normalize_bind(&format!("{src}:{dst}{ro}")));
    }
    let devices = host
        .devices
        .unwrap_or_default()
        .iter()
        .map(|d| {
            device_string(
                d.path_on_host.as_deref().unwrap_or(""),
                d.path_in_container.as_deref().unwrap_or(""),
                d.cgroup_permissions.as_deref().unwrap_or(""),
            )
        })
        .collect();
    let restart = host.restart_policy.unwrap_or_default();
    let restart_name = restart
        .name
        .map(|n| n.to_string())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "no".to_string());
    let restart = match restart.maximum_retry_count.unwrap_or(0) {
        0 => restart_name,
        n => format!("{restart_name}:{n}"),
    };
    let inherited = image.cloned().unwrap_or_default();
    let mut env = env_map(&config.env.unwrap_or_default());
    env.retain(|k, v| inherited.env.get(k) != Some(v));
    let all_labels: BTreeMap<String, String> =
        config.labels.unwrap_or_default().into_iter().collect();
    let mut labels = all_labels.clone();
    // The successor label records how a container came to be, not what it is: a successor
    // renamed to the declared name is the declared container.
    labels.retain(|k, v| {
        inherited.labels.get(k) != Some(v)
            && k != MOUNTS_LABEL
            && k != super::handoff::SUCCESSOR_LABEL
    });
    let mount_sources = all_labels
        .get(MOUNTS_LABEL)
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_default();
    let mut namespaces = BTreeMap::new();
    // The engine's own defaults: IPC is `private` (or `shareable` on engines configured the
    // older way); only a mode that joins another namespace (`host`, `container:…`) counts.
    for (kind, mode, defaults) in [
        ("pid", host.pid_mode.clone(), &[][..]),
        ("ipc", host.ipc_mode.clone(), &["private", "shareable"][..]),
        ("uts", host.uts_mode.clone(), &[][..]),
        ("userns", host.userns_mode.clone(), &[][..]),
    ] {
        let mode = mode.unwrap_or_default();
        if !mode.is_empty() && !defaults.contains(&mode.as_str()) {
            namespaces.insert(kind.to_string(), mode);
        }
    }
    let mut cpu = Vec::new();
    for (name, value) in [
        ("nano_cpus", host.nano_cpus),
        ("shares", host.cpu_shares),
        ("quota", host.cpu_quota),
        ("period", host.cpu_period),
    ] {
        if let Some(v) = value.filter(|v| *v != 0) {
            cpu.push(format!("{name}={v}"));
        }
    }
    if let Some(set) = host.cpuset_cpus.filter(|s| !s.is_empty()) {
        cpu.push(format!("cpuset={set}"));
    }
    let mut ports = Vec::new();
    for (port, bindings) in host.port_bindings.unwrap_or_default() {
        for b in bindings.unwrap_or_default() {
            ports.push(port_string(
                b.host_ip.as_deref().unwrap_or(""),
                b.host_port.as_deref().unwrap_or(""),
                &port,
            ));
        }
    }
    let networks: Vec<String> = c
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .map(|n| n.keys().cloned().collect())
        .unwrap_or_default();
    let hc = config.healthcheck.unwrap_or_default();
    let memory = host.memory.unwrap_or(0);
    let health = state.health.as_ref();
    LiveContainer {
        id: c.id.clone().unwrap_or_default(),
        name: c
            .name
            .clone()
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        labels: all_labels,
        status: state.status.map(|s| s.to_string()).unwrap_or_default(),
        health: health
            .and_then(|h| h.status)
            .map(|s| s.to_string())
            .filter(|s| !s.is_empty() && s != "none"),
        health_output: health
            .and_then(|h| h.log.as_ref())
            .and_then(|l| l.last())
            .and_then(|r| r.output.clone())
            .map(|o| o.trim().to_string()),
        exit_code: state.exit_code.unwrap_or(0),
        error: state.error.unwrap_or_default(),
        image_ref: config.image.clone().unwrap_or_default(),
        view: ContainerView {
            image: c.image.clone().unwrap_or_default(),
            entrypoint: config.entrypoint.unwrap_or_default(),
            command: config.cmd.unwrap_or_default(),
            env: Env(env),
            working_dir: config.working_dir.unwrap_or_default(),
            hostname: config.hostname.unwrap_or_default(),
            labels,
            user: config.user.unwrap_or_default().trim().to_string(),
            privileged,
            cap_add: normalize_caps(&host.cap_add.unwrap_or_default()),
            cap_drop: normalize_caps(&host.cap_drop.unwrap_or_default()),
            security_opt: normalize_security_opt(
                &host.security_opt.unwrap_or_default(),
                privileged,
            ),
            devices: sorted(devices),
            read_only: host.readonly_rootfs.unwrap_or(false),
            masked_paths: !host.masked_paths.unwrap_or_default().is_empty(),
            namespaces,
            group_add: sorted(host.group_add.unwrap_or_default()),
            sysctls: host.sysctls.unwrap_or_default().into_iter().collect(),
            device_cgroup_rules: sorted(host.device_cgroup_rules.unwrap_or_default()),
            runtime: host.runtime.filter(|r| r != "runc").unwrap_or_default(),
            memory,
            memory_swap: normalize_swap(memory, host.memory_swap.unwrap_or(0)),
            cpu,
            pids_limit: host.pids_limit.filter(|p| *p > 0).unwrap_or(0),
            oom_kill_disable: host.oom_kill_disable.unwrap_or(false),
            ulimits: sorted(
                host.ulimits
                    .unwrap_or_default()
                    .into_iter()
                    .map(|u| {
                        format!(
                            "{}={}:{}",
                            u.name.unwrap_or_default(),
                            u.soft.unwrap_or(0),
                            u.hard.unwrap_or(0)
                        )
                    })
                    .collect(),
            ),
            oom_score_adj: host.oom_score_adj.unwrap_or(0),
            shm_size: host
                .shm_size
                .filter(|s| *s != DEFAULT_SHM_SIZE)
                .unwrap_or(0),
            cgroup_parent: host.cgroup_parent.unwrap_or_default(),
            binds: sorted(binds),
            mount_sources,
            tmpfs: host.tmpfs.unwrap_or_default().into_iter().collect(),
            volumes_from: sorted(host.volumes_from.unwrap_or_default()),
            network: host.network_mode.unwrap_or_default(),
            networks: sorted(networks),
            ports: sorted(ports),
            publish_all_ports: host.publish_all_ports.unwrap_or(false),
            extra_hosts: sorted(host.extra_hosts.unwrap_or_default()),
            dns: host.dns.unwrap_or_default(),
            restart,
            health: health_view(
                &hc.test.unwrap_or_default(),
                hc.interval.unwrap_or(0),
                hc.timeout.unwrap_or(0),
                hc.retries.unwrap_or(0),
                hc.start_period.unwrap_or(0),
            ),
            init: host.init.unwrap_or(false),
        },
    }
}

/// A duration in nanoseconds, `None` when zero (the engine's default applies).
pub fn nanos(d: Duration) -> Option<i64> {
    (!d.is_zero()).then(|| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn health_config(h: &HealthCheck) -> HealthConfig {
    HealthConfig {
        test: Some(h.test.clone()),
        interval: nanos(h.interval),
        timeout: nanos(h.timeout),
        retries: Some(i64::from(h.retries)),
        start_period: nanos(h.start_period),
        start_interval: None,
    }
}

/// The create body for a desired container: `env` literal values only (secrets reach
/// containers as files), `binds` resolved against the host root, `labels` complete.
pub fn create_body(
    name: &str,
    spec: &ContainerSpec,
    binds: &[String],
    labels: &BTreeMap<String, String>,
) -> ContainerCreateBody {
    // Ports mean nothing without a network namespace of our own to publish from.
    let publish = !matches!(spec.network.as_str(), "none" | "host");
    let (exposed, bindings) = if publish && !spec.ports.is_empty() {
        let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        for p in &spec.ports {
            let key = format!("{}/{}", p.container, p.protocol);
            bindings
                .entry(key)
                .or_insert_with(|| Some(Vec::new()))
                .get_or_insert_with(Vec::new)
                .push(PortBinding {
                    host_ip: Some(p.host_ip.clone()),
                    host_port: Some(p.host.unwrap_or(p.container).to_string()),
                });
        }
        (Some(bindings.keys().cloned().collect()), Some(bindings))
    } else {
        (None, None)
    };
    let non_empty = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    ContainerCreateBody {
        hostname: Some(name.to_string()),
        user: spec.user.clone(),
        env: Some(
            spec.environment
                .iter()
                .map(|(k, v)| format!("{k}={}", v.value))
                .collect(),
        ),
        cmd: non_empty(&spec.command),
        image: Some(spec.image.clone()),
        labels: Some(labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        healthcheck: spec.health_check.as_ref().map(health_config),
        exposed_ports: exposed,
        host_config: Some(HostConfig {
            memory: Some(i64::try_from(spec.memory.0).unwrap_or(i64::MAX)),
            privileged: Some(spec.privileged),
            cap_add: non_empty(&spec.cap_add),
            cap_drop: non_empty(&spec.cap_drop),
            group_add: non_empty(&spec.group_add),
            security_opt: non_empty(&spec.security_opt),
            devices: (!spec.devices.is_empty()).then(|| {
                spec.devices
                    .iter()
                    .map(|d| DeviceMapping {
                        path_on_host: Some(d.host_path.clone()),
                        path_in_container: Some(
                            d.container_path
                                .clone()
                                .unwrap_or_else(|| d.host_path.clone()),
                        ),
                        cgroup_permissions: Some(d.permissions.clone()),
                    })
                    .collect()
            }),
            readonly_rootfs: Some(spec.read_only_root_filesystem),
            tmpfs: (!spec.tmpfs.is_empty()).then(|| {
                spec.tmpfs
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            }),
            binds: (!binds.is_empty()).then(|| binds.to_vec()),
            network_mode: Some(spec.network.clone()),
            port_bindings: bindings,
            restart_policy: Some(DockerRestart {
                name: Some(match spec.restart {
                    crate::model::RestartPolicy::No => RestartPolicyNameEnum::NO,
                    crate::model::RestartPolicy::UnlessStopped => {
                        RestartPolicyNameEnum::UNLESS_STOPPED
                    }
                    crate::model::RestartPolicy::Always => RestartPolicyNameEnum::ALWAYS,
                    crate::model::RestartPolicy::OnFailure => RestartPolicyNameEnum::ON_FAILURE,
                }),
                maximum_retry_count: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The deadline of one API call (connect and answer): the engine answers in milliseconds
/// (docs/quirks.md), so a socket silent this long is stuck, not busy.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopped container's process gets to exit after SIGTERM before SIGKILL.
pub const STOP_GRACE_SECONDS: i32 = 10;
/// The deadline of a whole image pull: a registry may be slow, but a dead one must not
/// hold the apply forever (no registry is reachable in the local world at all).
pub const PULL_TIMEOUT: Duration = Duration::from_secs(300);

/// A Docker call failed.
#[derive(Debug, thiserror::Error)]
#[error("{operation} {target} (Docker engine at {endpoint}): {}", describe(.source))]
pub struct DockerError {
    /// The API operation (`CreateContainer`).
    pub operation: &'static str,
    /// What it was about (a container or image name).
    pub target: String,
    /// The engine's address (`unix:///var/run/docker.sock`).
    pub endpoint: Arc<str>,
    /// The engine's or the transport's error.
    #[source]
    pub source: bollard::errors::Error,
}

/// bollard says only "Timeout error": say which deadline expired.
fn describe(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::RequestTimeoutError => format!(
            "no answer within {}s (the engine is stuck or this socket is not a Docker engine)",
            CALL_TIMEOUT.as_secs()
        ),
        other => other.to_string(),
    }
}

impl crate::provider::Classify for DockerError {
    fn class(&self) -> crate::provider::ErrorClass {
        use crate::provider::ErrorClass;
        use bollard::errors::Error as E;
        match &self.source {
            E::DockerResponseServerError { status_code, .. } => match status_code {
                404 => ErrorClass::NotFound,
                // A name taken or a container in the middle of a state change: the race
                // with a person's `docker run` is decided by the next observe.
                409 | 429 => ErrorClass::Transient,
                s if *s >= 500 => ErrorClass::Transient,
                _ => ErrorClass::Permanent,
            },
            E::RequestTimeoutError
            | E::HyperResponseError { .. }
            | E::IOError { .. }
            | E::HyperLegacyError { .. }
            | E::SocketNotFoundError(_) => ErrorClass::Transient,
            _ => ErrorClass::Permanent,
        }
    }
}

impl DockerError {
    /// True when the engine answered 404.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// True when the engine answered 409 (a name in use, a state change under way).
    pub fn is_conflict(&self) -> bool {
        self.status() == Some(409)
    }

    fn status(&self) -> Option<u16> {
        match self.source {
            bollard::errors::Error::DockerResponseServerError { status_code, .. } => {
                Some(status_code)
            }
            _ => None,
        }
    }
}

/// The result of running a command in a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecResult {
    /// Exit code; `None` if the engine did not report one.
    pub exit_code: Option<i64>,
    /// The last lines of output, for messages.
    pub output: String,
}

/// The Docker client with every call counted in [`Stats`] and bounded in time.
#[derive(Clone)]
pub struct Client {
    /// The bollard client (its request timeout is [`CALL_TIMEOUT`]).
    pub docker: Docker,
    /// The engine's address, for errors.
    pub endpoint: Arc<str>,
    /// Shared call counters.
    pub stats: Arc<Stats>,
}

impl Client {
    /// A client of the engine at `DOCKER_HOST` (`unix://` only) or the default socket. Makes
    /// no call: the first one (version negotiation) finds out whether anything answers.
    pub fn new(stats: Arc<Stats>) -> Result<Client, DockerError> {
        let endpoint = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string());
        Client::at(&endpoint, stats)
    }

    /// A client of the engine at a `unix://` address. Makes no call.
    pub fn at(endpoint: &str, stats: Arc<Stats>) -> Result<Client, DockerError> {
        let endpoint: Arc<str> = endpoint.into();
        let docker = Docker::connect_with_unix(
            &endpoint,
            CALL_TIMEOUT.as_secs(),
            bollard::API_DEFAULT_VERSION,
        )
        .map_err(|source| DockerError {
            operation: "Connect",
            target: String::new(),
            endpoint: endpoint.clone(),
            source,
        })?;
        Ok(Client {
            docker,
            endpoint,
            stats,
        })
    }

    /// Settles on the engine's API version (bollard speaks a newer one by default; versioned
    /// calls to an older engine fail).
    pub async fn negotiate(mut self) -> Result<Client, DockerError> {
        self.record("GetVersion");
        let docker = self.docker.clone();
        self.docker = bounded(docker.negotiate_version())
            .await
            .map_err(self.err("GetVersion", ""))?;
        Ok(self)
    }

    fn record(&self, operation: &str) {
        self.stats
            .record("docker", operation, CallKind::of_operation(operation));
    }

    fn err<'a>(
        &self,
        operation: &'static str,
        target: &'a str,
    ) -> impl FnOnce(bollard::errors::Error) -> DockerError + 'a {
        let endpoint = self.endpoint.clone();
        move |source| DockerError {
            operation,
            target: target.to_string(),
            endpoint,
            source,
        }
    }

    /// Every container, running or not (one call).
    pub async fn list_all(&self) -> Result<Vec<String>, DockerError> {
        self.record("ListContainers");
        let opts = bollard::query_parameters::ListContainersOptions {
            all: true,
            ..Default::default()
        };
        let list = bounded(self.docker.list_containers(Some(opts)))
            .await
            .map_err(self.err("ListContainers", "all"))?;
        Ok(list.into_iter().filter_map(|c| c.id).collect())
    }

    /// Inspects one container, raw; `None` if it vanished meanwhile.
    pub async fn inspect_raw(
        &self,
        id: &str,
    ) -> Result<Option<ContainerInspectResponse>, DockerError> {
        self.record("InspectContainer");
        match bounded(self.docker.inspect_container(id, None)).await {
            Ok(c) => Ok(Some(c)),
            Err(e) => {
                let e = self.err("InspectContainer", id)(e);
                if e.is_not_found() { Ok(None) } else { Err(e) }
            }
        }
    }

    /// Inspects one container, normalized without image defaults (for state and health).
    pub async fn inspect(&self, id: &str) -> Result<Option<LiveContainer>, DockerError> {
        Ok(self.inspect_raw(id).await?.map(|c| from_inspect(&c, None)))
    }

    /// An image by reference or id; `None` when it is not present.
    pub async fn image(&self, image: &str) -> Result<Option<ImageInfo>, DockerError> {
        self.record("InspectImage");
        match bounded(self.docker.inspect_image(image)).await {
            Ok(i) => Ok(Some(image_info(&i))),
            Err(e) => {
                let e = self.err("InspectImage", image)(e);
                if e.is_not_found() { Ok(None) } else { Err(e) }
            }
        }
    }

    /// Pulls an image by tag or, when pinned, by digest, within [`PULL_TIMEOUT`].
    pub async fn pull(&self, image: &str) -> Result<(), DockerError> {
        use futures_util::StreamExt;
        self.record("CreateImage");
        let (repo, tag) = super::image::ImageRef::parse(image).pull_args();
        let opts = bollard::query_parameters::CreateImageOptions {
            from_image: Some(repo.to_string()),
            tag: Some(tag.to_string()),
            ..Default::default()
        };
        let pull = async {
            let mut stream = self.docker.create_image(Some(opts), None, None);
            while let Some(item) = stream.next().await {
                item?;
            }
            Ok(())
        };
        match tokio::time::timeout(PULL_TIMEOUT, pull).await {
            Ok(r) => r.map_err(self.err("CreateImage", image)),
            Err(_) => Err(self.err("CreateImage", image)(
                bollard::errors::Error::RequestTimeoutError,
            )),
        }
    }

    /// Names of existing networks.
    pub async fn networks(&self) -> Result<Vec<String>, DockerError> {
        self.record("ListNetworks");
        let list = bounded(
            self.docker
                .list_networks(None::<bollard::query_parameters::ListNetworksOptions>),
        )
        .await
        .map_err(self.err("ListNetworks", "all"))?;
        Ok(list.into_iter().filter_map(|n| n.name).collect())
    }

    /// Creates a bridge network.
    pub async fn create_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), DockerError> {
        self.record("CreateNetwork");
        let req = bollard::models::NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".to_string()),
            labels: Some(labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
            ..Default::default()
        };
        bounded(self.docker.create_network(req))
            .await
            .map(|_| ())
            .map_err(self.err("CreateNetwork", name))
    }

    /// Creates a container; returns its id.
    pub async fn create(
        &self,
        name: &str,
        body: ContainerCreateBody,
    ) -> Result<String, DockerError> {
        self.record("CreateContainer");
        let opts = bollard::query_parameters::CreateContainerOptions {
            name: Some(name.to_string()),
            ..Default::default()
        };
        bounded(self.docker.create_container(Some(opts), body))
            .await
            .map(|r| r.id)
            .map_err(self.err("CreateContainer", name))
    }

    /// Starts a container.
    pub async fn start(&self, name: &str) -> Result<(), DockerError> {
        self.record("StartContainer");
        bounded(self.docker.start_container(
            name,
            None::<bollard::query_parameters::StartContainerOptions>,
        ))
        .await
        .map_err(self.err("StartContainer", name))
    }

    /// Restarts a running container (stop with the engine's grace, then start).
    pub async fn restart(&self, name: &str) -> Result<(), DockerError> {
        self.record("RestartContainer");
        bounded(self.docker.restart_container(
            name,
            None::<bollard::query_parameters::RestartContainerOptions>,
        ))
        .await
        .map_err(self.err("RestartContainer", name))
    }

    /// Renames a container (its id, state and settings stay).
    pub async fn rename(&self, id: &str, name: &str) -> Result<(), DockerError> {
        self.record("RenameContainer");
        let opts = bollard::query_parameters::RenameContainerOptions {
            name: name.to_string(),
        };
        bounded(self.docker.rename_container(id, opts))
            .await
            .map_err(self.err("RenameContainer", id))
    }

    /// Stops a container through the engine, which marks it stopped on purpose: a policy
    /// of `unless-stopped` does not start it again (a process's own exit would).
    pub async fn stop(&self, id: &str) -> Result<(), DockerError> {
        self.record("StopContainer");
        let opts = bollard::query_parameters::StopContainerOptions {
            t: Some(STOP_GRACE_SECONDS),
            ..Default::default()
        };
        // The engine waits out the grace before it answers.
        let call = self.docker.stop_container(id, Some(opts));
        match tokio::time::timeout(
            CALL_TIMEOUT + Duration::from_secs(STOP_GRACE_SECONDS as u64),
            call,
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.err("StopContainer", id)(e)),
            Err(_) => Err(self.err("StopContainer", id)(
                bollard::errors::Error::RequestTimeoutError,
            )),
        }
    }

    /// Unpauses a container.
    pub async fn unpause(&self, name: &str) -> Result<(), DockerError> {
        self.record("UnpauseContainer");
        bounded(self.docker.unpause_container(name))
            .await
            .map_err(self.err("UnpauseContainer", name))
    }

    /// Removes a container by force (stopping it); a missing one is not an error.
    pub async fn remove(&self, id: &str) -> Result<(), DockerError> {
        self.record("RemoveContainer");
        let opts = bollard::query_parameters::RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        match bounded(self.docker.remove_container(id, Some(opts))).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = self.err("RemoveContainer", id)(e);
                if e.is_not_found() { Ok(()) } else { Err(e) }
            }
        }
    }

    /// Runs `cmd` in a running container as its own user and waits for it, within `limit`:
    /// the same probe Docker's health check runs, without waiting for its first interval.
    pub async fn exec(
        &self,
        name: &str,
        cmd: Vec<String>,
        limit: Duration,
    ) -> Result<ExecResult, DockerError> {
        use bollard::exec::{CreateExecOptions, StartExecResults};
        use futures_util::StreamExt;
        self.record("CreateExec");
        let created = bounded(self.docker.create_exec(
            name,
            CreateExecOptions {
                cmd: Some(cmd),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        ))
        .await
        .map_err(self.err("CreateExec", name))?;
        self.record("StartExec");
        let run = async {
            let mut output = String::new();
            if let StartExecResults::Attached {
                output: mut out, ..
            } = self.docker.start_exec(&created.id, None).await?
            {
                while let Some(chunk) = out.next().await {
                    output.push_str(&chunk?.to_string());
                }
            }
            Ok(output)
        };
        let output = match tokio::time::timeout(limit, run).await {
            Ok(r) => r.map_err(self.err("StartExec", name))?,
            // A probe that overruns its timeout is a failed probe, as for Docker.
            Err(_) => {
                return Ok(ExecResult {
                    exit_code: None,
                    output: format!("probe timed out after {limit:?}"),
                });
            }
        };
        self.record("InspectExec");
        let inspected = bounded(self.docker.inspect_exec(&created.id))
            .await
            .map_err(self.err("InspectExec", name))?;
        let tail: String = output.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
        Ok(ExecResult {
            exit_code: inspected.exit_code,
            output: tail,
        })
    }
}

/// Bounds a call that bollard's own request timeout may not cover whole (a response body
/// that never ends).
async fn bounded<T>(
    call: impl std::future::Future<Output = Result<T, bollard::errors::Error>>,
) -> Result<T, bollard::errors::Error> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(r) => r,
        Err(_) => Err(bollard::errors::Error::RequestTimeoutError),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_inspect_normalizes_to_the_engine_defaults() {
        let inspect: ContainerInspectResponse = serde_json::from_value(serde_json::json!({
            "Id": "abc", "Name": "/x", "Image": "sha256:1",
            "Config": {"User": "", "Labels": {"from-image": "1"}, "Env": ["PATH=/bin", "A=1"],
                       "Healthcheck": {"Test": ["NONE"]}},
            "HostConfig": {"CapAdd": null, "CapDrop": null, "SecurityOpt": null, "Devices": null,
                            "Binds": null, "Memory": 1048576, "MemorySwap": 2097152, "NetworkMode": "none",
                            "IpcMode": "private", "PidsLimit": -1,
                            "MaskedPaths": ["/proc/kcore"],
                            "RestartPolicy": {"Name": ""}, "Privileged": false, "ReadonlyRootfs": false},
            "State": {"Status": "paused"}
        }))
        .unwrap_or_default();
        let image = ImageInfo {
            env: env_map(&["PATH=/bin".to_string()]),
            labels: [("from-image".to_string(), "1".to_string())].into(),
            ..Default::default()
        };
        let live = from_inspect(&inspect, Some(&image));
        assert_eq!(live.name, "x");
        assert_eq!(live.status, "paused");
        let v = &live.view;
        assert_eq!(v.restart, "no");
        assert_eq!(v.memory_swap, 0);
        assert_eq!(v.pids_limit, 0);
        assert!(v.namespaces.is_empty() && v.masked_paths && v.health.is_none());
        assert_eq!(v.env.0.keys().collect::<Vec<_>>(), ["A"]);
        assert!(v.labels.is_empty());
    }

    #[test]
    fn the_successor_label_is_a_record_not_a_setting() {
        let inspect: ContainerInspectResponse = serde_json::from_value(serde_json::json!({
            "Id": "abc", "Name": "/stackwarden", "Image": "sha256:1",
            "Config": {"Labels": {"stackwarden.stack": "s", "stackwarden.successor-of": "old"}}
        }))
        .unwrap_or_default();
        let live = from_inspect(&inspect, None);
        assert_eq!(
            live.labels.get(super::super::handoff::SUCCESSOR_LABEL),
            Some(&"old".to_string())
        );
        assert_eq!(
            live.view.labels.keys().collect::<Vec<_>>(),
            ["stackwarden.stack"]
        );
    }
}
