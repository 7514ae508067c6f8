//! The host provider: ConfigFiles under the host root and Containers on the Docker engine,
//! as ONE provider because a repaired file must roll the containers that mount it and files
//! must be written before containers start (ConfigMap-rollout style). Observe is read-only
//! (one container list, one inspect per container, one inspect per image, a stat + read per
//! file); the decision is the pure [`diff::plan`]; apply runs files, then removals, then
//! containers level by level in dependsOn order. Never touches unmanaged containers.

mod diff;
mod docker;
pub mod events;
mod files;
mod hash;

pub use events::{HostEvent, watch_events};
pub use hash::HASH_LABEL;

use crate::model::{ContainerSpec, Desired, Kind};
use crate::plan::Action;
use crate::provider::{CallKind, Provider, ProviderError, ProviderPlan, Stats, Step, StepOutcome};
use docker::{Client, LiveContainer};
use files::FileState;
use futures_util::future::join_all;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The provider's name in logs, stats and errors.
const NAME: &str = "host";

/// How often a starting container is re-inspected while waiting for it.
const READY_POLL: Duration = Duration::from_millis(250);
/// The most apply waits for one container's health: a stuck service must not hold the rest
/// of the stack (dependents start anyway once this passes; the failure is reported).
const READY_CAP: Duration = Duration::from_secs(120);
/// A pull can hang on a dead registry; no registry is reachable in the local world at all.
const PULL_TIMEOUT: Duration = Duration::from_secs(120);

/// ConfigFiles and Containers on one host.
pub struct HostProvider {
    client: Client,
    host_root: PathBuf,
    stats: Arc<Stats>,
}

/// One typed write on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostOp {
    /// Write a ConfigFile's content atomically, with its owner and mode.
    WriteFile {
        /// ConfigFile name.
        file: String,
    },
    /// Create a directory ConfigFile, with its owner and mode.
    MakeDirectory {
        /// ConfigFile name.
        file: String,
    },
    /// Set a ConfigFile's owner and group.
    SetOwner {
        /// ConfigFile name.
        file: String,
    },
    /// Set a ConfigFile's mode.
    SetMode {
        /// ConfigFile name.
        file: String,
    },
    /// Make sure an image is present, pulling it only when missing.
    EnsureImage {
        /// Image reference.
        image: String,
    },
    /// Create a bridge network when missing.
    EnsureNetwork {
        /// Network name.
        network: String,
    },
    /// Remove a container (stopping it).
    RemoveContainer {
        /// Container name.
        name: String,
        /// Engine id (the one observed: never a newer container of the same name).
        id: String,
    },
    /// Create a container from its declaration.
    CreateContainer {
        /// Container name.
        name: String,
    },
    /// Start a container.
    StartContainer {
        /// Container name.
        name: String,
    },
    /// Wait until running (and healthy, with a health check), within a bounded time.
    WaitReady {
        /// Container name.
        name: String,
    },
}

/// Secret values by Parameter name; `Err` says why one cannot be read. Never printed.
#[derive(Default)]
pub struct Secrets(BTreeMap<String, Result<String, String>>);

impl Secrets {
    fn get(&self, param: &str) -> Option<&Result<String, String>> {
        self.0.get(param)
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// What the host looks like.
#[derive(Debug, Default)]
pub struct HostObserved {
    files: BTreeMap<String, FileState>,
    containers: Vec<LiveContainer>,
    images: BTreeMap<String, Option<String>>,
    networks: BTreeSet<String>,
    secrets: Secrets,
}

fn provider_err(e: impl fmt::Display) -> ProviderError {
    ProviderError::new(NAME, e)
}

/// Reads a Parameter's value from where its manifest says; the error names the source.
fn read_secret(spec: &crate::model::ParameterSpec) -> Result<String, String> {
    if let Some(var) = &spec.value_from.env {
        return match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(v),
            _ => Err(format!("environment variable {var} is not set")),
        };
    }
    if let Some(path) = &spec.value_from.file {
        return match std::fs::read_to_string(path) {
            Ok(s) if !s.trim().is_empty() => Ok(s.trim_end_matches(['\n', '\r']).to_string()),
            Ok(_) => Err(format!("secret file {path} is empty")),
            Err(e) => Err(format!("cannot read secret file {path}: {e}")),
        };
    }
    Err("the Parameter names no value source".to_string())
}

impl HostProvider {
    /// Connects to DOCKER_HOST (unix://) or the default socket, negotiating the API version
    /// (engine here is API 1.41).
    pub async fn connect(
        host_root: PathBuf,
        stats: Arc<Stats>,
    ) -> Result<HostProvider, ProviderError> {
        // bollard's local connect silently falls back to the default socket for a tcp://
        // DOCKER_HOST: refuse instead of talking to an engine the user did not name.
        if let Ok(host) = std::env::var("DOCKER_HOST")
            && !host.is_empty()
            && !host.starts_with("unix://")
        {
            return Err(provider_err(format!(
                "DOCKER_HOST={host} is not supported: use unix:///path/to/docker.sock"
            )));
        }
        let docker = bollard::Docker::connect_with_local_defaults()
            .map_err(|e| provider_err(format!("connecting to the Docker engine: {e}")))?;
        stats.record("docker", "GetVersion", CallKind::Read);
        // bollard speaks API 1.53 by default; versioned calls to an older engine fail, so
        // settle on the engine's version once.
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| provider_err(format!("negotiating the Docker API version: {e}")))?;
        Ok(HostProvider {
            client: Client {
                docker,
                stats: stats.clone(),
            },
            host_root,
            stats,
        })
    }

    /// The bollard client (the events watcher and tests share it).
    pub fn docker(&self) -> &bollard::Docker {
        &self.client.docker
    }

    /// The host root config files live under.
    pub fn host_root(&self) -> &std::path::Path {
        &self.host_root
    }

    fn record_file(&self, operation: &str) {
        self.stats
            .record("files", operation, CallKind::of_operation(operation));
    }

    async fn observe_containers(&self) -> Result<Vec<LiveContainer>, ProviderError> {
        let ids = self.client.list_all().await.map_err(provider_err)?;
        let inspected = join_all(ids.iter().map(|id| self.client.inspect(id))).await;
        let mut out = Vec::with_capacity(ids.len());
        for r in inspected {
            if let Some(c) = r.map_err(provider_err)? {
                out.push(c);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn container_spec<'d>(desired: &'d Desired, name: &str) -> Result<&'d ContainerSpec, String> {
        desired
            .containers()
            .find(|(r, _)| r.id.name == name)
            .map(|(_, s)| s)
            .ok_or_else(|| format!("Container/{name} is not declared"))
    }

    fn file_spec<'d>(
        desired: &'d Desired,
        name: &str,
    ) -> Result<&'d crate::model::ConfigFileSpec, String> {
        desired
            .config_files()
            .find(|(r, _)| r.id.name == name)
            .map(|(_, s)| s)
            .ok_or_else(|| format!("ConfigFile/{name} is not declared"))
    }

    /// Runs one operation; the error is a sentence for people.
    async fn run_op(
        &self,
        desired: &Desired,
        observed: &HostObserved,
        op: &HostOp,
    ) -> Result<(), String> {
        let s = |e: &dyn fmt::Display| e.to_string();
        match op {
            HostOp::WriteFile { file } => {
                let spec = Self::file_spec(desired, file)?;
                let path = files::resolve(&self.host_root, &spec.path);
                let mode = spec
                    .mode_bits()
                    .ok_or_else(|| s(&files::FileError::Mode(spec.mode.clone())))?;
                if let Ok(meta) = std::fs::symlink_metadata(&path)
                    && meta.is_dir()
                {
                    return Err(format!(
                        "{} is a directory; remove it by hand, stackwarden does not delete directories",
                        path.display()
                    ));
                }
                self.record_file("WriteFile");
                files::write_atomic(
                    &path,
                    spec.content.as_deref().unwrap_or("").as_bytes(),
                    spec.owner,
                    spec.group,
                    mode,
                )
                .map_err(|e| s(&e))
            }
            HostOp::MakeDirectory { file } => {
                let spec = Self::file_spec(desired, file)?;
                let path = files::resolve(&self.host_root, &spec.path);
                let mode = spec
                    .mode_bits()
                    .ok_or_else(|| s(&files::FileError::Mode(spec.mode.clone())))?;
                self.record_file("CreateDirectory");
                files::make_dir(&path).map_err(|e| s(&e))?;
                self.record_file("SetOwner");
                files::set_owner(&path, spec.owner, spec.group).map_err(|e| s(&e))?;
                self.record_file("SetMode");
                files::set_mode(&path, mode).map_err(|e| s(&e))
            }
            HostOp::SetOwner { file } => {
                let spec = Self::file_spec(desired, file)?;
                self.record_file("SetOwner");
                files::set_owner(
                    &files::resolve(&self.host_root, &spec.path),
                    spec.owner,
                    spec.group,
                )
                .map_err(|e| s(&e))
            }
            HostOp::SetMode { file } => {
                let spec = Self::file_spec(desired, file)?;
                let mode = spec
                    .mode_bits()
                    .ok_or_else(|| s(&files::FileError::Mode(spec.mode.clone())))?;
                self.record_file("SetMode");
                files::set_mode(&files::resolve(&self.host_root, &spec.path), mode)
                    .map_err(|e| s(&e))
            }
            HostOp::EnsureImage { image } => {
                if observed.images.get(image).is_some_and(Option::is_some) {
                    return Ok(());
                }
                match tokio::time::timeout(PULL_TIMEOUT, self.client.pull(image)).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(format!(
                        "image {image} is not present and cannot be pulled: {}",
                        e.source
                    )),
                    Err(_) => Err(format!(
                        "pulling image {image} took longer than {}s",
                        PULL_TIMEOUT.as_secs()
                    )),
                }
            }
            HostOp::EnsureNetwork { network } => {
                if self
                    .client
                    .networks()
                    .await
                    .map_err(|e| s(&e))?
                    .contains(network)
                {
                    return Ok(());
                }
                let mut labels = BTreeMap::new();
                labels.insert(
                    crate::model::ownership::STACK_LABEL.to_string(),
                    desired.stack_name.clone(),
                );
                self.client
                    .create_network(network, &labels)
                    .await
                    .map_err(|e| s(&e))
            }
            HostOp::RemoveContainer { id, .. } => self.client.remove(id).await.map_err(|e| s(&e)),
            HostOp::CreateContainer { name } => {
                let spec = Self::container_spec(desired, name)?;
                let mut env = BTreeMap::new();
                for (var, value) in &spec.environment {
                    let resolved = match (&value.value, &value.from_parameter) {
                        (Some(v), _) => v.clone(),
                        (None, Some(param)) => match observed.secrets.get(param) {
                            Some(Ok(secret)) => secret.clone(),
                            Some(Err(why)) => {
                                return Err(format!(
                                    "environment {var} (from Parameter/{param}): {why}"
                                ));
                            }
                            None => {
                                return Err(format!(
                                    "environment {var}: Parameter/{param} is not declared"
                                ));
                            }
                        },
                        (None, None) => String::new(),
                    };
                    env.insert(var.clone(), resolved);
                }
                let binds = diff::binds(desired, &self.host_root, spec);
                // A missing bind source would be created by the engine as root 0755 (or,
                // for a file, as a directory): make hostPath directories under the root
                // ourselves. Absolute ones are the host's own (`/proc`) and never created.
                for m in &spec.mounts {
                    if let Some(p) = m.host_path.as_deref().filter(|p| !p.starts_with('/')) {
                        let path = files::host_path(&self.host_root, p);
                        if !path.exists() {
                            self.record_file("CreateDirectory");
                            files::make_dir(&path).map_err(|e| s(&e))?;
                        }
                    }
                }
                let hash = diff::desired_hash(desired, &self.host_root, name, spec);
                let labels = diff::labels(desired, spec, &hash);
                let body = docker::create_body(name, spec, &env, &binds, &labels);
                self.client
                    .create(name, body)
                    .await
                    .map(|_| ())
                    .map_err(|e| s(&e))
            }
            HostOp::StartContainer { name } => self.client.start(name).await.map_err(|e| s(&e)),
            HostOp::WaitReady { name } => {
                let spec = Self::container_spec(desired, name)?;
                self.wait_ready(name, spec).await
            }
        }
    }

    /// Waits until the container runs (and passes its health check, if it has one).
    async fn wait_ready(&self, name: &str, spec: &ContainerSpec) -> Result<(), String> {
        let limit = spec
            .health_check
            .as_ref()
            .map(|h| {
                h.start_period + (h.interval + h.timeout) * (h.retries + 1) + Duration::from_secs(5)
            })
            .unwrap_or(Duration::ZERO)
            .min(READY_CAP);
        let started = Instant::now();
        loop {
            let live = self
                .client
                .inspect(name)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("container {name} vanished after it was started"))?;
            if !live.is_running() {
                let mut why = format!(
                    "container {name} is {} (exit code {})",
                    live.status, live.exit_code
                );
                if !live.error.is_empty() {
                    why.push_str(&format!(": {}", live.error));
                }
                return Err(why);
            }
            match (spec.health_check.is_some(), live.health.as_deref()) {
                (false, _) | (true, Some("healthy")) => return Ok(()),
                (true, Some("unhealthy")) => {
                    return Err(format!(
                        "container {name} fails its health check: {}",
                        live.health_output.as_deref().unwrap_or("no output")
                    ));
                }
                _ => {}
            }
            if started.elapsed() >= limit {
                return Err(format!(
                    "container {name} is not healthy after {}s",
                    limit.as_secs()
                ));
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    async fn run_step(
        &self,
        desired: &Desired,
        observed: &HostObserved,
        step: Step<HostOp>,
    ) -> StepOutcome {
        for op in &step.ops {
            if let Err(error) = self.run_op(desired, observed, op).await {
                tracing::warn!(resource = %step.change.id, ?op, %error, "host step failed");
                return StepOutcome {
                    change: step.change,
                    error: Some(error),
                };
            }
        }
        tracing::info!(resource = %step.change.id, action = step.change.action.verb(), "applied");
        StepOutcome {
            change: step.change,
            error: None,
        }
    }
}

impl Provider for HostProvider {
    type Observed = HostObserved;
    type Op = HostOp;

    fn name(&self) -> &'static str {
        NAME
    }

    async fn observe(&self, desired: &Desired) -> Result<HostObserved, ProviderError> {
        let mut obs = HostObserved::default();
        for (res, spec) in desired.config_files() {
            self.record_file("InspectFile");
            let state = files::observe(&files::resolve(&self.host_root, &spec.path))
                .map_err(provider_err)?;
            obs.files.insert(res.id.name.clone(), state);
        }
        let images: BTreeSet<&str> = desired
            .containers()
            .map(|(_, s)| s.image.as_str())
            .collect();
        let (containers, image_ids) = tokio::join!(
            self.observe_containers(),
            join_all(images.iter().map(|i| self.client.image_id(i)))
        );
        obs.containers = containers?;
        for (image, id) in images.iter().zip(image_ids) {
            obs.images
                .insert(image.to_string(), id.map_err(provider_err)?);
        }
        let custom_network = desired
            .containers()
            .any(|(_, s)| !matches!(s.network.as_str(), "none" | "host" | "bridge" | "default"));
        if custom_network {
            obs.networks = self
                .client
                .networks()
                .await
                .map_err(provider_err)?
                .into_iter()
                .collect();
        }
        let params: BTreeSet<&str> = desired
            .containers()
            .flat_map(|(_, s)| {
                s.environment
                    .values()
                    .filter_map(|v| v.from_parameter.as_deref())
            })
            .collect();
        for (res, spec) in desired.parameters() {
            if params.contains(res.id.name.as_str()) {
                obs.secrets.0.insert(res.id.name.clone(), read_secret(spec));
            }
        }
        Ok(obs)
    }

    fn diff(&self, desired: &Desired, observed: &HostObserved) -> ProviderPlan<HostOp> {
        diff::plan(desired, &self.host_root, observed)
    }

    async fn apply(
        &self,
        desired: &Desired,
        observed: &HostObserved,
        steps: Vec<Step<HostOp>>,
    ) -> Vec<StepOutcome> {
        let mut outcomes = Vec::with_capacity(steps.len());
        let (file_steps, rest): (Vec<_>, Vec<_>) = steps
            .into_iter()
            .partition(|s| s.change.id.kind == Kind::ConfigFile);
        // Files one by one (cheap, and containers read them), then removals together.
        for step in file_steps {
            outcomes.push(self.run_step(desired, observed, step).await);
        }
        let (removals, rest): (Vec<_>, Vec<_>) = rest
            .into_iter()
            .partition(|s| s.change.action == Action::Delete);
        outcomes.extend(
            join_all(
                removals
                    .into_iter()
                    .map(|s| self.run_step(desired, observed, s)),
            )
            .await,
        );
        // Containers level by level: a level starts once the one before is running and
        // healthy (or has failed: a dependent still starts, its services retry, and the
        // failure is reported on the dependency's own step).
        let levels = diff::levels(desired);
        let mut by_level: BTreeMap<usize, Vec<Step<HostOp>>> = BTreeMap::new();
        for step in rest {
            let level = levels.get(&step.change.id.name).copied().unwrap_or(0);
            by_level.entry(level).or_default().push(step);
        }
        for (_, steps) in by_level {
            outcomes.extend(
                join_all(
                    steps
                        .into_iter()
                        .map(|s| self.run_step(desired, observed, s)),
                )
                .await,
            );
        }
        outcomes
    }
}
