//! Containers on the Docker engine: the normalized view of a live container (from inspect),
//! the same view of a desired one, their field-by-field comparison, the create body, and the
//! thin client calls (each recorded in [`Stats`]). Normalization follows docker-notes.md:
//! null = [] = {}, `""` = `no` restart, capabilities upper-cased with `CAP_`, every
//! spelling of no-new-privileges, MemorySwap ignored, image compared by id.

use super::hash::HASH_LABEL;
use crate::model::ownership::STACK_LABEL;
use crate::model::{ContainerSpec, HealthCheck};
use crate::plan::FieldChange;
use crate::provider::{CallKind, Stats};
use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, DeviceMapping, HealthConfig, HostConfig,
    PortBinding, RestartPolicy as DockerRestart, RestartPolicyNameEnum,
};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

/// The security-relevant settings of a container, normalized so that equal means equal.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecurityView {
    /// `Config.User`; `""` is root.
    pub user: String,
    /// Privileged mode.
    pub privileged: bool,
    /// Added capabilities, `CAP_X` upper-case, sorted.
    pub cap_add: Vec<String>,
    /// Dropped capabilities, same form.
    pub cap_drop: Vec<String>,
    /// Security options, normalized and sorted.
    pub security_opt: Vec<String>,
    /// Devices as `host:container:perms`, sorted.
    pub devices: Vec<String>,
    /// Memory limit in bytes (0 = none).
    pub memory: i64,
    /// Read-only root file system.
    pub read_only: bool,
    /// Network mode.
    pub network: String,
    /// Bind mounts and volumes as `source:target[:opts]`, sorted.
    pub binds: Vec<String>,
    /// Restart policy, Docker spelling (`no` for unset).
    pub restart: String,
}

/// Normalizes capability names: `net_admin`, `CAP_NET_ADMIN` → `CAP_NET_ADMIN`; `ALL` stays.
pub fn normalize_caps(caps: &[String]) -> Vec<String> {
    let mut out: Vec<String> = caps
        .iter()
        .map(|c| {
            let up = c.trim().to_ascii_uppercase();
            let bare = up.strip_prefix("CAP_").unwrap_or(&up);
            if bare == "ALL" {
                "ALL".to_string()
            } else {
                format!("CAP_{bare}")
            }
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Normalizes security options: every spelling of no-new-privileges (`:true`, `=true`) is
/// one; `label=disable` is dropped when privileged (the engine adds it by itself then).
pub fn normalize_security_opt(opts: &[String], privileged: bool) -> Vec<String> {
    let mut out: Vec<String> = opts
        .iter()
        .filter_map(|o| {
            let o = o.trim();
            let (key, value) = match o.find([':', '=']) {
                Some(i) => (&o[..i], Some(&o[i + 1..])),
                None => (o, None),
            };
            if key == "no-new-privileges" {
                return match value {
                    None | Some("true") => Some("no-new-privileges".to_string()),
                    Some(_) => None,
                };
            }
            if privileged && key == "label" && value == Some("disable") {
                return None;
            }
            Some(match value {
                Some(v) => format!("{key}={v}"),
                None => key.to_string(),
            })
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Normalizes a bind string: `src:dst`, `src:dst:ro`; `rw` and empty options vanish, other
/// options are sorted.
pub fn normalize_bind(bind: &str) -> String {
    let mut parts = bind.splitn(3, ':');
    let (src, dst, opts) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next(),
    );
    let mut opts: Vec<&str> = opts
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty() && *o != "rw")
        .collect();
    opts.sort_unstable();
    if opts.is_empty() {
        format!("{src}:{dst}")
    } else {
        format!("{src}:{dst}:{}", opts.join(","))
    }
}

fn device_string(host: &str, container: &str, perms: &str) -> String {
    let container = if container.is_empty() {
        host
    } else {
        container
    };
    let perms = if perms.is_empty() { "rwm" } else { perms };
    format!("{host}:{container}:{perms}")
}

/// Environment values, kept out of `Debug` output: they may hold secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Env(pub BTreeMap<String, String>);

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// A container as observed, normalized.
#[derive(Debug, Clone, Default)]
pub struct LiveContainer {
    /// Engine id.
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// `running`, `exited`, `created`, …
    pub status: String,
    /// `healthy`, `unhealthy`, `starting`; `None` without a health check.
    pub health: Option<String>,
    /// The last health probe's output, for messages.
    pub health_output: Option<String>,
    /// Exit code of the last run.
    pub exit_code: i64,
    /// The engine's error for the last start, if any.
    pub error: String,
    /// Image id (`sha256:…`).
    pub image_id: String,
    /// Security-relevant settings.
    pub view: SecurityView,
    /// The environment (secrets compared in memory, never shown).
    pub env: Env,
}

impl LiveContainer {
    /// The owning stack, from the label.
    pub fn stack(&self) -> Option<&str> {
        self.labels.get(STACK_LABEL).map(String::as_str)
    }

    /// The config hash label.
    pub fn config_hash(&self) -> Option<&str> {
        self.labels.get(HASH_LABEL).map(String::as_str)
    }

    /// True when the container's process is up.
    pub fn is_running(&self) -> bool {
        self.status == "running"
    }

    /// The live settings as a model spec, so the policy rules judge live state with the
    /// same code that judges manifests.
    pub fn as_spec(&self, allow_root: Option<crate::model::RootAllowance>) -> ContainerSpec {
        ContainerSpec {
            image: self.image_id.clone(),
            command: Vec::new(),
            environment: BTreeMap::new(),
            user: Some(self.view.user.clone()),
            allow_root,
            privileged: self.view.privileged,
            cap_add: self.view.cap_add.clone(),
            cap_drop: self.view.cap_drop.clone(),
            security_opt: self.view.security_opt.clone(),
            devices: Vec::new(),
            read_only_root_filesystem: self.view.read_only,
            tmpfs: BTreeMap::new(),
            mounts: Vec::new(),
            ports: Vec::new(),
            network: self.view.network.clone(),
            memory: crate::model::MemSize(u64::try_from(self.view.memory).unwrap_or(0)),
            restart: crate::model::RestartPolicy::No,
            health_check: None,
            depends_on: Vec::new(),
            labels: self.labels.clone(),
        }
    }
}

/// Normalizes an inspect response. Pure.
pub fn from_inspect(c: &ContainerInspectResponse) -> LiveContainer {
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
    binds.sort();
    let mut devices: Vec<String> = host
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
    devices.sort();
    let restart = host
        .restart_policy
        .and_then(|r| r.name)
        .map(|n| n.to_string())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "no".to_string());
    let env = config
        .env
        .unwrap_or_default()
        .into_iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv, String::new()),
        })
        .collect();
    let health = state.health.as_ref();
    LiveContainer {
        id: c.id.clone().unwrap_or_default(),
        name: c
            .name
            .clone()
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        labels: config.labels.unwrap_or_default().into_iter().collect(),
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
        image_id: c.image.clone().unwrap_or_default(),
        view: SecurityView {
            user: config.user.unwrap_or_default().trim().to_string(),
            privileged,
            cap_add: normalize_caps(&host.cap_add.unwrap_or_default()),
            cap_drop: normalize_caps(&host.cap_drop.unwrap_or_default()),
            security_opt: normalize_security_opt(
                &host.security_opt.unwrap_or_default(),
                privileged,
            ),
            devices,
            memory: host.memory.unwrap_or(0),
            read_only: host.readonly_rootfs.unwrap_or(false),
            network: host.network_mode.unwrap_or_default(),
            binds,
            restart,
        },
        env: Env(env),
    }
}

/// The same view of a desired container; `binds` are already resolved against the host root.
pub fn desired_view(spec: &ContainerSpec, binds: &[String]) -> SecurityView {
    let mut devices: Vec<String> = spec
        .devices
        .iter()
        .map(|d| {
            device_string(
                &d.host_path,
                d.container_path.as_deref().unwrap_or(""),
                &d.permissions,
            )
        })
        .collect();
    devices.sort();
    let mut binds: Vec<String> = binds.iter().map(|b| normalize_bind(b)).collect();
    binds.sort();
    SecurityView {
        user: spec.user.clone().unwrap_or_default().trim().to_string(),
        privileged: spec.privileged,
        cap_add: normalize_caps(&spec.cap_add),
        cap_drop: normalize_caps(&spec.cap_drop),
        security_opt: normalize_security_opt(&spec.security_opt, spec.privileged),
        devices,
        memory: i64::try_from(spec.memory.0).unwrap_or(i64::MAX),
        read_only: spec.read_only_root_filesystem,
        network: spec.network.clone(),
        binds,
        restart: spec.restart.as_docker().to_string(),
    }
}

fn show_list(v: &[String]) -> String {
    format!("[{}]", v.join(", "))
}

fn show_user(u: &str) -> String {
    if u.is_empty() {
        "\"\" (root)".to_string()
    } else {
        format!("\"{u}\"")
    }
}

fn show_mem(m: i64) -> String {
    if m == 0 {
        "unlimited".to_string()
    } else {
        crate::model::MemSize(u64::try_from(m).unwrap_or(0)).to_string()
    }
}

/// The fields in which live differs from desired, for the plan. Pure; empty when equal.
pub fn compare(desired: &SecurityView, live: &SecurityView) -> Vec<FieldChange> {
    let mut out = Vec::new();
    let mut field = |path: &str, old: String, new: String| {
        if old != new {
            out.push(FieldChange::changed(path, old, new));
        }
    };
    field("spec.user", show_user(&live.user), show_user(&desired.user));
    field(
        "spec.privileged",
        live.privileged.to_string(),
        desired.privileged.to_string(),
    );
    field(
        "spec.capAdd",
        show_list(&live.cap_add),
        show_list(&desired.cap_add),
    );
    field(
        "spec.capDrop",
        show_list(&live.cap_drop),
        show_list(&desired.cap_drop),
    );
    field(
        "spec.securityOpt",
        show_list(&live.security_opt),
        show_list(&desired.security_opt),
    );
    field(
        "spec.devices",
        show_list(&live.devices),
        show_list(&desired.devices),
    );
    field(
        "spec.memory",
        show_mem(live.memory),
        show_mem(desired.memory),
    );
    field(
        "spec.readOnlyRootFilesystem",
        live.read_only.to_string(),
        desired.read_only.to_string(),
    );
    field(
        "spec.network",
        live.network.clone(),
        desired.network.clone(),
    );
    field(
        "spec.mounts",
        show_list(&live.binds),
        show_list(&desired.binds),
    );
    field(
        "spec.restart",
        live.restart.clone(),
        desired.restart.clone(),
    );
    out
}

fn nanos(d: std::time::Duration) -> Option<i64> {
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

/// The create body for a desired container. `env` is fully resolved (secrets included: it
/// goes to the engine only), `binds` resolved against the host root, `labels` complete.
pub fn create_body(
    name: &str,
    spec: &ContainerSpec,
    env: &BTreeMap<String, String>,
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
        env: Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
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

/// A Docker call failed.
#[derive(Debug, thiserror::Error)]
#[error("{operation} {target}: {source}")]
pub struct DockerError {
    /// The API operation (`CreateContainer`).
    pub operation: &'static str,
    /// What it was about (a container or image name).
    pub target: String,
    /// The engine's or the transport's error.
    #[source]
    pub source: bollard::errors::Error,
}

impl DockerError {
    /// True when the engine answered 404.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.source,
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                ..
            }
        )
    }
}

/// The Docker client with every call counted in [`Stats`].
#[derive(Clone)]
pub struct Client {
    /// The bollard client.
    pub docker: Docker,
    /// Shared call counters.
    pub stats: Arc<Stats>,
}

impl Client {
    fn record(&self, operation: &str) {
        self.stats
            .record("docker", operation, CallKind::of_operation(operation));
    }

    fn err<'a>(
        operation: &'static str,
        target: &'a str,
    ) -> impl FnOnce(bollard::errors::Error) -> DockerError + 'a {
        move |source| DockerError {
            operation,
            target: target.to_string(),
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
        let list = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(Self::err("ListContainers", "all"))?;
        Ok(list.into_iter().filter_map(|c| c.id).collect())
    }

    /// Inspects one container; `None` if it vanished meanwhile.
    pub async fn inspect(&self, id: &str) -> Result<Option<LiveContainer>, DockerError> {
        self.record("InspectContainer");
        match self.docker.inspect_container(id, None).await {
            Ok(c) => Ok(Some(from_inspect(&c))),
            Err(e) => {
                let e = Self::err("InspectContainer", id)(e);
                if e.is_not_found() { Ok(None) } else { Err(e) }
            }
        }
    }

    /// The local id of an image reference; `None` when it is not present.
    pub async fn image_id(&self, image: &str) -> Result<Option<String>, DockerError> {
        self.record("InspectImage");
        match self.docker.inspect_image(image).await {
            Ok(i) => Ok(i.id),
            Err(e) => {
                let e = Self::err("InspectImage", image)(e);
                if e.is_not_found() { Ok(None) } else { Err(e) }
            }
        }
    }

    /// Pulls an image (no registry may be reachable: the error is the caller's to report).
    pub async fn pull(&self, image: &str) -> Result<(), DockerError> {
        use futures_util::StreamExt;
        self.record("CreateImage");
        let (repo, tag) = split_image(image);
        let opts = bollard::query_parameters::CreateImageOptions {
            from_image: Some(repo.to_string()),
            tag: Some(tag.to_string()),
            ..Default::default()
        };
        let mut stream = self.docker.create_image(Some(opts), None, None);
        while let Some(item) = stream.next().await {
            item.map_err(Self::err("CreateImage", image))?;
        }
        Ok(())
    }

    /// Names of existing networks.
    pub async fn networks(&self) -> Result<Vec<String>, DockerError> {
        self.record("ListNetworks");
        let list = self
            .docker
            .list_networks(None::<bollard::query_parameters::ListNetworksOptions>)
            .await
            .map_err(Self::err("ListNetworks", "all"))?;
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
        self.docker
            .create_network(req)
            .await
            .map(|_| ())
            .map_err(Self::err("CreateNetwork", name))
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
        self.docker
            .create_container(Some(opts), body)
            .await
            .map(|r| r.id)
            .map_err(Self::err("CreateContainer", name))
    }

    /// Starts a container.
    pub async fn start(&self, name: &str) -> Result<(), DockerError> {
        self.record("StartContainer");
        self.docker
            .start_container(
                name,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .map_err(Self::err("StartContainer", name))
    }

    /// Removes a container by force (stopping it); a missing one is not an error.
    pub async fn remove(&self, id: &str) -> Result<(), DockerError> {
        self.record("RemoveContainer");
        let opts = bollard::query_parameters::RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        match self.docker.remove_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = Self::err("RemoveContainer", id)(e);
                if e.is_not_found() { Ok(()) } else { Err(e) }
            }
        }
    }
}

/// Splits `repo[:tag]` (a registry port is not a tag); the tag defaults to `latest`.
pub fn split_image(image: &str) -> (&str, &str) {
    let image = image.split('@').next().unwrap_or(image);
    match image.rfind(':') {
        Some(i) if !image[i..].contains('/') => (&image[..i], &image[i + 1..]),
        _ => (image, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn capabilities_compare_in_any_spelling() {
        assert_eq!(
            normalize_caps(&s(&["net_admin", "CAP_SYSLOG", "all"])),
            s(&["ALL", "CAP_NET_ADMIN", "CAP_SYSLOG"])
        );
        assert_eq!(
            normalize_caps(&s(&["NET_ADMIN"])),
            normalize_caps(&s(&["CAP_NET_ADMIN"]))
        );
    }

    #[test]
    fn every_no_new_privileges_spelling_is_one() {
        for spelling in [
            "no-new-privileges",
            "no-new-privileges:true",
            "no-new-privileges=true",
        ] {
            assert_eq!(
                normalize_security_opt(&s(&[spelling]), false),
                s(&["no-new-privileges"])
            );
        }
        assert!(normalize_security_opt(&s(&["no-new-privileges:false"]), false).is_empty());
        assert!(normalize_security_opt(&s(&["label=disable"]), true).is_empty());
        assert_eq!(
            normalize_security_opt(&s(&["label:disable"]), false),
            s(&["label=disable"])
        );
    }

    #[test]
    fn binds_ignore_rw_and_option_order() {
        assert_eq!(normalize_bind("/a:/b:rw"), "/a:/b");
        assert_eq!(normalize_bind("/a:/b"), "/a:/b");
        assert_eq!(normalize_bind("/a:/b:z,ro"), "/a:/b:ro,z");
    }

    #[test]
    fn images_split_into_repo_and_tag() {
        assert_eq!(
            split_image("stackwarden/stub:local"),
            ("stackwarden/stub", "local")
        );
        assert_eq!(
            split_image("grafana/grafana"),
            ("grafana/grafana", "latest")
        );
        assert_eq!(
            split_image("localhost:5000/x"),
            ("localhost:5000/x", "latest")
        );
    }

    #[test]
    fn empty_inspect_equals_an_unset_desired_root_container() {
        let inspect: ContainerInspectResponse = serde_json::from_value(serde_json::json!({
            "Id": "abc", "Name": "/x", "Image": "sha256:1",
            "Config": {"User": "", "Labels": {}, "Env": null},
            "HostConfig": {"CapAdd": null, "CapDrop": null, "SecurityOpt": null, "Devices": null,
                            "Binds": null, "Memory": 0, "MemorySwap": 0, "NetworkMode": "none",
                            "RestartPolicy": {"Name": ""}, "Privileged": false, "ReadonlyRootfs": false},
            "State": {"Status": "running"}
        }))
        .unwrap_or_default();
        let live = from_inspect(&inspect);
        assert_eq!(live.name, "x");
        assert_eq!(live.view.restart, "no");
        let spec = ContainerSpec {
            image: "i".into(),
            command: vec![],
            environment: BTreeMap::new(),
            user: None,
            allow_root: None,
            privileged: false,
            cap_add: vec![],
            cap_drop: vec![],
            security_opt: vec![],
            devices: vec![],
            read_only_root_filesystem: false,
            tmpfs: BTreeMap::new(),
            mounts: vec![],
            ports: vec![],
            network: "none".into(),
            memory: crate::model::MemSize(0),
            restart: crate::model::RestartPolicy::No,
            health_check: None,
            depends_on: vec![],
            labels: BTreeMap::new(),
        };
        assert_eq!(compare(&desired_view(&spec, &[]), &live.view), vec![]);
    }

    #[test]
    fn a_root_privileged_container_shows_each_field() {
        let mut desired = SecurityView {
            user: "10001:10001".into(),
            security_opt: s(&["no-new-privileges"]),
            memory: 1 << 20,
            network: "none".into(),
            restart: "unless-stopped".into(),
            ..Default::default()
        };
        let mut live = desired.clone();
        live.user = "0".into();
        live.privileged = true;
        live.security_opt.clear();
        live.memory = 0;
        let paths: Vec<String> = compare(&desired, &live)
            .into_iter()
            .map(|f| f.path)
            .collect();
        assert_eq!(
            paths,
            [
                "spec.user",
                "spec.privileged",
                "spec.securityOpt",
                "spec.memory"
            ]
        );
        desired.cap_add = s(&["CAP_NET_ADMIN"]);
        assert!(compare(&desired, &desired.clone()).is_empty());
    }
}
