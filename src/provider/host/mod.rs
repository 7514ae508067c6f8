//! The host provider: ConfigFiles under the host root and Containers on the Docker engine,
//! as ONE provider because a repaired file must roll the containers that mount it and files
//! must be written before containers start (ConfigMap-rollout style). Observe is read-only
//! (one container list, one inspect per container, one inspect per image, a stat + read per
//! file); the decision is the pure [`diff::plan`]; apply runs files, then removals, then
//! containers level by level in dependsOn order, printing each step as it starts and ends.
//! Never touches unmanaged containers. Every Docker call has a deadline (`docker`).

mod diff;
mod docker;
pub mod events;
mod files;
mod hash;
mod image;
mod ledger;
mod own_container;
mod view;

pub use events::{HostEvent, watch_events};
pub use hash::HASH_LABEL;

use crate::model::{ContainerSpec, Desired, Kind, ResourceId};
use crate::plan::{Action, Change, Unobserved};
use crate::provider::{
    CallKind, Classify, ErrorClass, Provider, ProviderError, ProviderPlan, Stats, Step, StepError,
    StepOutcome, WriteGate,
};
use docker::{Client, ImageInfo, LiveContainer};
use files::FileState;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared, join_all};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The provider's name in logs, stats and errors.
const NAME: &str = "host";

/// The tracing target of the step-by-step apply record (shown at info by default).
pub const APPLY_LOG_TARGET: &str = "stackwarden::apply";

/// How often a starting container is probed (or re-inspected) while waiting for it: the
/// stub answers within milliseconds of starting, real services within a second or two.
const READY_POLL: Duration = Duration::from_millis(100);
/// The most apply waits for one container's health: a stuck service must not hold the rest
/// of the stack (dependents start anyway once this passes; the failure is reported).
const READY_CAP: Duration = Duration::from_secs(120);

/// ConfigFiles and Containers on one host.
pub struct HostProvider {
    client: Client,
    host_root: PathBuf,
    stats: Arc<Stats>,
    /// The container this process runs in (see [`own_container`]): never removed or
    /// restarted from here.
    own_container: Option<String>,
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
    /// Remove a file stackwarden wrote for a ConfigFile no longer declared (the file or a
    /// link at its path, never a directory, never a link's target).
    RemoveFile {
        /// Path under the host root, as recorded when it was written.
        path: String,
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
    /// Restart a container whose health check fails.
    RestartContainer {
        /// Container name.
        name: String,
    },
    /// Unpause a container paused by hand.
    UnpauseContainer {
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
    /// Declared image reference → the image found for it.
    images: BTreeMap<String, Option<ImageInfo>>,
    networks: BTreeSet<String>,
    secrets: Secrets,
    /// Identity (`dev:inode`) of each bind source under the host root, now.
    sources: BTreeMap<PathBuf, String>,
    /// Resources whose state could not be read this pass (and the containers built on them).
    unobserved: Vec<Unobserved>,
    /// Files this stack wrote whose ConfigFile is no longer declared: path under the host
    /// root → (the ConfigFile's name, what is there now).
    orphans: BTreeMap<String, (String, FileState)>,
}

fn provider_err<E: Classify>(e: E) -> ProviderError {
    ProviderError::of(crate::plan::World::Host, e)
}

/// The resources a failed read leaves unknown: the files and images themselves, and every
/// container built on one (planned from a guess, it would be recreated for nothing).
fn unobserved_of(
    desired: &Desired,
    files: &BTreeMap<String, (ErrorClass, String)>,
    images: &BTreeMap<String, (ErrorClass, String)>,
) -> Vec<Unobserved> {
    let mut out: Vec<Unobserved> = files
        .iter()
        .map(|(name, (class, error))| Unobserved {
            id: ResourceId::new(Kind::ConfigFile, name),
            class: *class,
            error: error.clone(),
        })
        .collect();
    for (r, spec) in desired.containers() {
        let cause = images.get(&spec.image).or_else(|| {
            spec.mounts
                .iter()
                .find_map(|m| m.config_file.as_ref().and_then(|f| files.get(f)))
        });
        if let Some((class, error)) = cause {
            out.push(Unobserved {
                id: r.id.clone(),
                class: *class,
                error: error.clone(),
            });
        }
    }
    if !out.is_empty() {
        tracing::warn!(
            count = out.len(),
            "some host resources could not be observed; they are unknown this pass"
        );
    }
    out
}

/// Reads a Parameter's value from where its manifest says, as every secret is read; the
/// error names the source, never the value.
fn read_secret(spec: &crate::model::ParameterSpec) -> Result<String, String> {
    crate::manifest::secret::read(&spec.value_from).map_err(|e| e.to_string())
}

impl HostProvider {
    /// Connects to DOCKER_HOST (unix://) or the default socket, negotiating the API version
    /// (engine here is API 1.41). Fails within the call deadline when nothing answers.
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
            return Err(ProviderError::plain(
                crate::plan::World::Host,
                ErrorClass::Permanent,
                format!("DOCKER_HOST={host} is not supported: use unix:///path/to/docker.sock"),
            ));
        }
        let client = Client::new(stats.clone())
            .map_err(provider_err)?
            .negotiate()
            .await
            .map_err(provider_err)?;
        Ok(HostProvider {
            client,
            host_root,
            stats,
            own_container: own_container::current(),
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

    /// The files this stack wrote (its record) that no declared ConfigFile writes any more,
    /// and what is at each path now. An unreadable record leaves them unknown this pass.
    fn observe_orphans(
        &self,
        desired: &Desired,
        obs: &mut HostObserved,
        failed: &mut BTreeMap<String, (ErrorClass, String)>,
    ) {
        self.record_file("InspectFile");
        let record = match ledger::read(&self.host_root, &desired.stack_name) {
            Ok(record) => record,
            Err(e) => {
                tracing::warn!(error = %e, "the record of written files cannot be read; removed ConfigFiles' files stay this pass");
                return;
            }
        };
        let declared_paths: BTreeSet<&str> = desired
            .config_files()
            .map(|(_, s)| s.path.trim_start_matches('/'))
            .collect();
        for (path, name) in record.files {
            if declared_paths.contains(path.as_str())
                || desired.get(Kind::ConfigFile, &name).is_some()
            {
                continue;
            }
            self.record_file("InspectFile");
            let full = files::resolve(&self.host_root, &path);
            match files::observe_under(&self.host_root, &full) {
                Ok(state) => {
                    obs.orphans.insert(path, (name, state));
                }
                Err(e) => {
                    failed.insert(name, (e.class(), e.to_string()));
                }
            }
        }
    }

    fn record_file(&self, operation: &str) {
        self.stats
            .record("files", operation, CallKind::of_operation(operation));
    }

    /// Every container, normalized against its own image (whose environment and labels the
    /// engine merges in). Images already inspected by reference are reused by id.
    async fn observe_containers(
        &self,
        images: &BTreeMap<String, Option<ImageInfo>>,
    ) -> Result<Vec<LiveContainer>, ProviderError> {
        let ids = self.client.list_all().await.map_err(provider_err)?;
        let inspected = join_all(ids.iter().map(|id| self.client.inspect_raw(id))).await;
        let mut raw = Vec::with_capacity(ids.len());
        for r in inspected {
            if let Some(c) = r.map_err(provider_err)? {
                raw.push(c);
            }
        }
        let mut by_id: BTreeMap<String, ImageInfo> = images
            .values()
            .flatten()
            .map(|i| (i.id.clone(), i.clone()))
            .collect();
        let missing: BTreeSet<String> = raw
            .iter()
            .filter_map(|c| c.image.clone())
            .filter(|id| !by_id.contains_key(id))
            .collect();
        for (id, info) in missing
            .iter()
            .zip(join_all(missing.iter().map(|id| self.client.image(id))).await)
        {
            if let Some(info) = info.map_err(provider_err)? {
                by_id.insert(id.clone(), info);
            }
        }
        let mut out: Vec<LiveContainer> = raw
            .iter()
            .map(|c| docker::from_inspect(c, c.image.as_ref().and_then(|i| by_id.get(i))))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Docker's `unhealthy` may be stale: probes failed while the container was paused or
    /// stopped, and Docker only says otherwise after its next check (up to an interval
    /// away). Before a restart is planned on it, the declared check runs once, now; a pass
    /// overrules the verdict. Only unhealthy containers are probed, so a steady pass costs
    /// nothing more.
    async fn confirm_unhealthy(&self, desired: &Desired, containers: &mut [LiveContainer]) {
        let probes = containers.iter().enumerate().filter_map(|(i, live)| {
            if live.status != "running" || live.health.as_deref() != Some("unhealthy") {
                return None;
            }
            let (_, spec) = desired.containers().find(|(r, _)| r.id.name == live.name)?;
            let check = spec.health_check.as_ref()?;
            let cmd = probe_command(&check.test)?;
            let timeout = if check.timeout.is_zero() {
                Duration::from_secs(30)
            } else {
                check.timeout
            };
            let name = live.name.clone();
            Some(async move {
                let ok = matches!(
                    self.client.exec(&name, cmd, timeout).await,
                    Ok(r) if r.exit_code == Some(0)
                );
                (i, ok)
            })
        });
        for (i, ok) in join_all(probes).await {
            if ok {
                containers[i].health = Some("healthy".to_string());
            }
        }
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

    /// The bytes a ConfigFile must hold: its content, or its Parameter's value (a secret:
    /// the error names where it should come from, never the value).
    fn file_content<'o>(
        spec: &'o crate::model::ConfigFileSpec,
        observed: &'o HostObserved,
    ) -> Result<&'o [u8], String> {
        match &spec.from_parameter {
            Some(param) => match observed.secrets.get(param) {
                Some(Ok(value)) => Ok(value.as_bytes()),
                Some(Err(why)) => Err(format!("content from Parameter/{param}: {why}")),
                None => Err(format!("Parameter/{param} is not declared")),
            },
            None => Ok(spec.content.as_deref().unwrap_or("").as_bytes()),
        }
    }

    /// Runs one operation; the error is a sentence for people.
    async fn run_op(
        &self,
        desired: &Desired,
        observed: &HostObserved,
        op: &HostOp,
    ) -> Result<(), StepError> {
        match op {
            HostOp::WriteFile { file } => {
                let spec = Self::file_spec(desired, file)?;
                let path = files::resolve(&self.host_root, &spec.path);
                let mode = spec.mode_bits().ok_or_else(|| {
                    StepError::from(files::FileError::Mode(spec.mode_text().to_string()))
                })?;
                if let Ok(meta) = std::fs::symlink_metadata(&path)
                    && meta.is_dir()
                {
                    return Err(StepError::permanent(format!(
                        "{} is a directory; remove it by hand, stackwarden does not delete directories",
                        path.display()
                    )));
                }
                let content = Self::file_content(spec, observed)?;
                files::check_parents(&self.host_root, &path).map_err(StepError::from)?;
                // Recorded before it is written: a file on disk is never one the record
                // does not know (a record of a file not written is harmless).
                if ledger::is_plain_relative(&spec.path) {
                    ledger::update(&self.host_root, &desired.stack_name, &spec.path, Some(file))
                        .map_err(StepError::from)?;
                }
                self.record_file("WriteFile");
                files::write_atomic(&path, content, spec.owner, spec.group, mode)
                    .map_err(StepError::from)
            }
            HostOp::MakeDirectory { file } => {
                let spec = Self::file_spec(desired, file)?;
                let path = files::resolve(&self.host_root, &spec.path);
                let mode = spec.mode_bits().ok_or_else(|| {
                    StepError::from(files::FileError::Mode(spec.mode_text().to_string()))
                })?;
                files::check_parents(&self.host_root, &path).map_err(StepError::from)?;
                // A symlink (or file) where the directory belongs goes, never its target.
                self.record_file("RemoveFile");
                files::remove_non_directory(&path).map_err(StepError::from)?;
                self.record_file("CreateDirectory");
                files::make_dir(&path).map_err(StepError::from)?;
                self.record_file("SetOwner");
                files::set_owner(&path, spec.owner, spec.group).map_err(StepError::from)?;
                self.record_file("SetMode");
                files::set_mode(&path, mode).map_err(StepError::from)
            }
            HostOp::SetOwner { file } => {
                let spec = Self::file_spec(desired, file)?;
                let path = files::resolve(&self.host_root, &spec.path);
                files::check_parents(&self.host_root, &path).map_err(StepError::from)?;
                self.record_file("SetOwner");
                files::set_owner(&path, spec.owner, spec.group).map_err(StepError::from)
            }
            HostOp::SetMode { file } => {
                let spec = Self::file_spec(desired, file)?;
                let mode = spec.mode_bits().ok_or_else(|| {
                    StepError::from(files::FileError::Mode(spec.mode_text().to_string()))
                })?;
                let path = files::resolve(&self.host_root, &spec.path);
                files::check_parents(&self.host_root, &path).map_err(StepError::from)?;
                self.record_file("SetMode");
                files::set_mode(&path, mode).map_err(StepError::from)
            }
            HostOp::RemoveFile { path } => {
                if !ledger::is_plain_relative(path) {
                    return Err(StepError::permanent(format!(
                        "`{path}` is not a plain path under the host root; it is left alone"
                    )));
                }
                let full = files::resolve(&self.host_root, path);
                files::check_parents(&self.host_root, &full).map_err(StepError::from)?;
                self.record_file("RemoveFile");
                files::remove_non_directory(&full).map_err(StepError::from)?;
                ledger::update(&self.host_root, &desired.stack_name, path, None)
                    .map_err(StepError::from)
            }
            HostOp::EnsureImage { image } => {
                if diff_image_found(observed, image) {
                    return Ok(());
                }
                // A registry that cannot be reached may be back later: transient.
                self.client.pull(image).await.map_err(|e| StepError {
                    class: ErrorClass::Transient,
                    message: format!("image {image} is not present and cannot be pulled: {e}"),
                })?;
                // A pinned reference must now resolve to an image carrying its digest.
                match self.client.image(image).await.map_err(StepError::from)? {
                    Some(info)
                        if image::ImageRef::parse(image).is_satisfied_by(&info.repo_digests) =>
                    {
                        Ok(())
                    }
                    _ => Err(StepError::permanent(format!(
                        "image {image} was pulled but no local image carries that reference"
                    ))),
                }
            }
            HostOp::EnsureNetwork { network } => {
                if self
                    .client
                    .networks()
                    .await
                    .map_err(StepError::from)?
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
                    .map_err(StepError::from)
            }
            HostOp::RemoveContainer { id, name } => {
                self.refuse_own(name, id)?;
                self.client.remove(id).await.map_err(StepError::from)
            }
            HostOp::CreateContainer { name } => {
                let spec = Self::container_spec(desired, name)?;
                // A missing bind source would be created by the engine as root 0755 (or,
                // for a file, as a directory): make hostPath directories under the root
                // ourselves. Absolute ones are the host's own (`/proc`) and never created.
                for m in &spec.mounts {
                    if let Some(p) = m.host_path.as_deref().filter(|p| !p.starts_with('/')) {
                        let path = files::host_path(&self.host_root, p);
                        if std::fs::symlink_metadata(&path).is_err() {
                            self.record_file("CreateDirectory");
                            files::make_dir(&path).map_err(StepError::from)?;
                        }
                    }
                }
                // The engine resolves bind sources through symlinks: none may hide in the
                // path of a source under the root.
                for source in diff::managed_sources(desired, &self.host_root, spec) {
                    files::check_parents(&self.host_root, &source).map_err(StepError::from)?;
                }
                // A missing ConfigFile (its write failed) would become a root-owned directory
                // made by the engine, which then blocks the file for good: refuse instead.
                for m in &spec.mounts {
                    if let Some(file) = &m.config_file {
                        let f = Self::file_spec(desired, file)?;
                        let path = files::resolve(&self.host_root, &f.path);
                        if std::fs::symlink_metadata(&path).is_err() {
                            return Err(StepError::permanent(format!(
                                "mounted ConfigFile/{file} is missing at {}; it must be written first",
                                path.display()
                            )));
                        }
                    }
                }
                let binds = diff::binds(desired, &self.host_root, spec);
                // The sources' identities as of now, when the engine resolves the binds.
                let identities = diff::managed_sources(desired, &self.host_root, spec)
                    .into_iter()
                    .map(|p| {
                        let id = files::identity(&p);
                        (p, id)
                    })
                    .collect();
                let sources = diff::mount_sources(desired, &self.host_root, spec, &identities);
                let hash = diff::desired_hash(desired, &self.host_root, name, spec);
                let mut labels = diff::labels(desired, spec, &hash);
                let (k, v) = diff::mount_sources_label(&sources);
                labels.insert(k, v);
                let body = docker::create_body(name, spec, &binds, &labels);
                match self.client.create(name, body).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.is_conflict() => {
                        let view = |image: Option<&ImageInfo>| {
                            diff::container::desired_view(
                                name,
                                spec,
                                image,
                                &binds,
                                sources.clone(),
                                diff::labels(desired, spec, &hash),
                            )
                        };
                        self.adopt(desired, name, &spec.image, view).await
                    }
                    Err(e) => Err(StepError::from(e)),
                }
            }
            HostOp::StartContainer { name } => {
                self.client.start(name).await.map_err(StepError::from)
            }
            HostOp::UnpauseContainer { name } => {
                self.client.unpause(name).await.map_err(StepError::from)
            }
            HostOp::RestartContainer { name } => {
                if let Some(live) = observed.containers.iter().find(|c| &c.name == name) {
                    self.refuse_own(name, &live.id)?;
                }
                self.client.restart(name).await.map_err(StepError::from)
            }
            HostOp::WaitReady { name } => {
                let spec = Self::container_spec(desired, name)?;
                // A container that is not (yet) healthy may become so: transient.
                self.wait_ready(name, spec)
                    .await
                    .map_err(|message| StepError {
                        class: ErrorClass::Transient,
                        message,
                    })
            }
        }
    }

    /// Refuses to stop the container this process runs in: the step would end the process
    /// midway (a replace would never create the new one). An apply from outside does it.
    fn refuse_own(&self, name: &str, id: &str) -> Result<(), StepError> {
        if self.own_container.as_deref() != Some(id) {
            return Ok(());
        }
        Err(StepError::permanent(format!(
            "Container/{name} runs this stackwarden process, which cannot stop or replace its own container; \
             run `stackwarden apply --scope host` on the host, outside this container, to apply this change"
        )))
    }

    /// The name was taken between observe and create. When the container holding it is this
    /// stack's and exactly what this step was to make (the create of an `apply` killed
    /// mid-call completes in the engine after the process is gone), it is adopted: compared
    /// field by field as observe would, since labels alone can be copied by hand. Anything
    /// else is left to the next observe, which sees it and plans for it.
    async fn adopt(
        &self,
        desired: &Desired,
        name: &str,
        image: &str,
        desired_view: impl Fn(Option<&ImageInfo>) -> view::ContainerView,
    ) -> Result<(), StepError> {
        // The engine reserves the name before the container can be inspected: a create
        // still under way answers 404 for a moment.
        let mut raw = None;
        for round in 0..5 {
            if round > 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            raw = self
                .client
                .inspect_raw(name)
                .await
                .map_err(StepError::from)?;
            if raw.is_some() {
                break;
            }
        }
        let holder = match &raw {
            None => "a container that is gone again",
            Some(raw) => {
                // Only a container of the declared image can be the one: its image info is
                // the declared one's, so one lookup serves both views.
                let declared = self
                    .client
                    .image(image)
                    .await
                    .map_err(StepError::from)?
                    .filter(|d| raw.image.as_deref() == Some(d.id.as_str()));
                let live = docker::from_inspect(raw, declared.as_ref());
                let same = live.stack() == Some(desired.stack_name.as_str())
                    && declared.is_some()
                    && diff::container::compare(&desired_view(declared.as_ref()), &live.view)
                        .is_empty();
                if same {
                    return Ok(());
                }
                if live.stack().is_some() {
                    "a container of other settings"
                } else {
                    "a container this stack does not own"
                }
            }
        };
        Err(StepError {
            class: ErrorClass::Transient,
            message: format!(
                "the name {name} was taken after the host was observed, by {holder}; the next pass plans for it"
            ),
        })
    }

    /// Waits until the container runs and, with a health check, passes it. Docker's first
    /// probe only comes one whole interval after the start (15 s in production), so the
    /// declared test is run here at once, in the container, until it passes or the cap is
    /// reached; Docker's own check keeps watching afterwards.
    async fn wait_ready(&self, name: &str, spec: &ContainerSpec) -> Result<(), String> {
        let Some(check) = &spec.health_check else {
            return self.running_or_why(name).await.map(|_| ());
        };
        let limit = (check.start_period
            + (check.interval + check.timeout) * (check.retries + 1)
            + Duration::from_secs(5))
        .min(READY_CAP);
        let probe = probe_command(&check.test);
        let started = Instant::now();
        let mut last = String::from("no probe ran");
        loop {
            let live = self.running_or_why(name).await?;
            if live.health.as_deref() == Some("healthy") {
                return Ok(());
            }
            // Docker's `unhealthy` may be stale (probes failed while the container was
            // paused or stopped): with a probe of our own, only the probe decides.
            if probe.is_none() && live.health.as_deref() == Some("unhealthy") {
                return Err(format!(
                    "container {name} fails its health check: {}",
                    live.health_output.as_deref().unwrap_or("no output")
                ));
            }
            if let Some(cmd) = &probe {
                let timeout = if check.timeout.is_zero() {
                    Duration::from_secs(30)
                } else {
                    check.timeout
                };
                match self.client.exec(name, cmd.clone(), timeout).await {
                    Ok(r) if r.exit_code == Some(0) => return Ok(()),
                    Ok(r) => last = r.output,
                    // The process may not be up for exec yet; the next round tells.
                    Err(e) => last = e.to_string(),
                }
            }
            if started.elapsed() >= limit {
                return Err(format!(
                    "container {name} is not healthy after {}s: {last}",
                    limit.as_secs()
                ));
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// The container, if it runs; otherwise why not.
    async fn running_or_why(&self, name: &str) -> Result<LiveContainer, String> {
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
        Ok(live)
    }

    async fn run_step(
        &self,
        desired: &Desired,
        observed: &HostObserved,
        step: Step<HostOp>,
        gate: &dyn WriteGate,
    ) -> StepOutcome {
        if let Err(e) = gate.admit(&step.change).await {
            tracing::warn!(
                target: APPLY_LOG_TARGET,
                "not {}: {}",
                step_line(&step.change),
                e.message
            );
            return StepOutcome::failed(step.change, e);
        }
        let started = Instant::now();
        tracing::info!(target: APPLY_LOG_TARGET, "{}", step_line(&step.change));
        for op in &step.ops {
            if let Err(error) = self.run_op(desired, observed, op).await {
                tracing::warn!(
                    target: APPLY_LOG_TARGET,
                    "{} {} failed after {:.1}s: {error}",
                    step.change.action.verb(),
                    step.change.id,
                    started.elapsed().as_secs_f64()
                );
                return StepOutcome::failed(step.change, error);
            }
        }
        tracing::info!(
            target: APPLY_LOG_TARGET,
            "{} {}: done in {:.1}s",
            step.change.action.verb(),
            step.change.id,
            started.elapsed().as_secs_f64()
        );
        StepOutcome::done(step.change)
    }
}

/// True when the image a reference names is on the engine.
fn diff_image_found(observed: &HostObserved, reference: &str) -> bool {
    observed
        .images
        .get(reference)
        .and_then(Option::as_ref)
        .is_some_and(|i| image::ImageRef::parse(reference).is_satisfied_by(&i.repo_digests))
}

/// The command Docker would run for a health test: `CMD args…` as is, `CMD-SHELL cmd`
/// through `/bin/sh -c`; `None` for `NONE` or an unknown form (Docker's check decides).
fn probe_command(test: &[String]) -> Option<Vec<String>> {
    match test.split_first() {
        Some((kind, args)) if kind == "CMD" && !args.is_empty() => Some(args.to_vec()),
        Some((kind, args)) if kind == "CMD-SHELL" && !args.is_empty() => Some(vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            args.join(" "),
        ]),
        _ => None,
    }
}

/// One line saying what a step is about to do, e.g. `recreating Container/loki: spec.user
/// "0" → "10001:10001"`. Sensitive fields say only that they differ.
fn step_line(change: &Change) -> String {
    let verb = match change.action {
        Action::Create => "creating",
        Action::Adopt => "adopting",
        Action::Update => "updating",
        Action::Replace => "recreating",
        Action::Delete => "removing",
    };
    let mut line = format!("{verb} {}", change.id);
    let shown: Vec<String> = change
        .fields
        .iter()
        .take(3)
        .map(|f| match (&f.old, &f.new) {
            _ if f.sensitive => format!("{}: value differs", f.path),
            (Some(old), Some(new)) => format!("{}: {old} → {new}", f.path),
            (None, Some(new)) => format!("{}: + {new}", f.path),
            (Some(old), None) => format!("{}: - {old}", f.path),
            (None, None) => f.path.clone(),
        })
        .collect();
    if !shown.is_empty() {
        line.push_str(": ");
        line.push_str(&shown.join("; "));
        if change.fields.len() > shown.len() {
            line.push_str(&format!(" (+{} more)", change.fields.len() - shown.len()));
        }
    } else if let Some(reason) = &change.reason {
        line.push_str(&format!(" ({reason})"));
    }
    line
}

impl Provider for HostProvider {
    type Observed = HostObserved;
    type Op = HostOp;

    fn name(&self) -> &'static str {
        NAME
    }

    fn world(&self) -> crate::plan::World {
        crate::plan::World::Host
    }

    async fn observe(&self, desired: &Desired) -> Result<HostObserved, ProviderError> {
        // A `${account}` still in a file or a container would be written literally: refuse
        // before anything is planned (the caller resolves the account first).
        let unresolved: Vec<String> = desired
            .unresolved_runtime()
            .iter()
            .filter(|id| id.kind.on_host())
            .map(|id| id.to_string())
            .collect();
        if !unresolved.is_empty() {
            return Err(ProviderError::plain(
                crate::plan::World::Host,
                ErrorClass::Transient,
                format!(
                    "{} still hold an unresolved ${{account}}; nothing on the host is planned until the AWS account is known",
                    unresolved.join(", ")
                ),
            ));
        }
        let mut obs = HostObserved::default();
        // Why a resource could not be read, by manifest name of what it holds up.
        let mut failed_files: BTreeMap<String, (ErrorClass, String)> = BTreeMap::new();
        for (res, spec) in desired.config_files() {
            self.record_file("InspectFile");
            match files::observe_under(
                &self.host_root,
                &files::resolve(&self.host_root, &spec.path),
            ) {
                Ok(state) => {
                    obs.files.insert(res.id.name.clone(), state);
                }
                Err(e) => {
                    failed_files.insert(res.id.name.clone(), (e.class(), e.to_string()));
                }
            }
        }
        self.observe_orphans(desired, &mut obs, &mut failed_files);
        for (_, spec) in desired.containers() {
            for source in diff::managed_sources(desired, &self.host_root, spec) {
                let id = files::identity(&source);
                obs.sources.insert(source, id);
            }
        }
        let images: BTreeSet<&str> = desired
            .containers()
            .map(|(_, s)| s.image.as_str())
            .collect();
        let mut failed_images: BTreeMap<String, (ErrorClass, String)> = BTreeMap::new();
        for (image, info) in images
            .iter()
            .zip(join_all(images.iter().map(|i| self.client.image(i))).await)
        {
            match info {
                Ok(info) => {
                    obs.images.insert(image.to_string(), info);
                }
                Err(e) => {
                    failed_images.insert(image.to_string(), (e.class(), e.to_string()));
                }
            }
        }
        obs.unobserved = unobserved_of(desired, &failed_files, &failed_images);
        obs.containers = self.observe_containers(&obs.images).await?;
        self.confirm_unhealthy(desired, &mut obs.containers).await;
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
            .config_files()
            .filter_map(|(_, s)| s.from_parameter.as_deref())
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
        gate: &dyn WriteGate,
    ) -> Vec<StepOutcome> {
        let mut outcomes = Vec::with_capacity(steps.len());
        let (file_steps, rest): (Vec<_>, Vec<_>) = steps
            .into_iter()
            .partition(|s| s.change.id.kind == Kind::ConfigFile);
        // Files one by one (cheap, and containers read them), then removals together.
        let mut failed_files: BTreeMap<String, (ErrorClass, String)> = BTreeMap::new();
        for step in file_steps {
            let outcome = self.run_step(desired, observed, step, gate).await;
            if let (Some(error), Some(class)) = (&outcome.error, outcome.class) {
                failed_files.insert(outcome.change.id.name.clone(), (class, error.clone()));
            }
            outcomes.push(outcome);
        }
        // A container whose mounted file could not be written is not recreated for it: the
        // restart would start it on the old file again, and its own events would wake pass
        // after pass. Its outcome says what blocks it, and its backoff holds.
        let (blocked, rest): (Vec<_>, Vec<_>) = rest.into_iter().partition(|s| {
            s.change.id.kind == Kind::Container
                && Self::container_spec(desired, &s.change.id.name).is_ok_and(|spec| {
                    spec.mounts.iter().any(|m| {
                        m.config_file
                            .as_ref()
                            .is_some_and(|f| failed_files.contains_key(f))
                    })
                })
        });
        for step in blocked {
            let spec = Self::container_spec(desired, &step.change.id.name).ok();
            let (file, (class, error)) = spec
                .into_iter()
                .flat_map(|s| s.mounts.iter())
                .filter_map(|m| m.config_file.as_ref())
                .find_map(|f| failed_files.get_key_value(f))
                .map(|(f, e)| (f.clone(), e.clone()))
                .unwrap_or_else(|| (String::new(), (ErrorClass::Transient, String::new())));
            tracing::warn!(
                target: APPLY_LOG_TARGET,
                "not {}: its mounted ConfigFile/{file} could not be written",
                step_line(&step.change)
            );
            outcomes.push(StepOutcome::failed(
                step.change,
                StepError {
                    class,
                    message: format!(
                        "blocked: its mounted ConfigFile/{file} could not be written ({error})"
                    ),
                },
            ));
        }
        let (removals, rest): (Vec<_>, Vec<_>) = rest
            .into_iter()
            .partition(|s| s.change.action == Action::Delete);
        outcomes.extend(
            join_all(
                removals
                    .into_iter()
                    .map(|s| self.run_step(desired, observed, s, gate)),
            )
            .await,
        );
        // Containers as a graph: each starts once the containers it depends on are running
        // and healthy (or have failed: a dependent still starts, its services retry, and the
        // failure is reported on the dependency's own step). A slow start (a pull, a health
        // check that takes its time) holds up its own dependents and nothing else.
        let levels = diff::levels(desired);
        let mut rest = rest;
        rest.sort_by_key(|s| levels.get(&s.change.id.name).copied().unwrap_or(0));
        let with_steps: BTreeSet<String> = rest.iter().map(|s| s.change.id.name.clone()).collect();
        let mut started: BTreeMap<String, Shared<BoxFuture<'_, StepOutcome>>> = BTreeMap::new();
        for step in rest {
            let name = step.change.id.name.clone();
            let waits: Vec<_> = diff::step_dependencies(desired, &name, &with_steps)
                .iter()
                .filter_map(|d| started.get(d).cloned())
                .collect();
            let run = async move {
                join_all(waits).await;
                self.run_step(desired, observed, step, gate).await
            };
            started.insert(name, run.boxed().shared());
        }
        outcomes.extend(join_all(started.into_values()).await);
        outcomes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_tests_become_the_commands_docker_would_run() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            probe_command(&s(&["CMD", "wget", "-q", "http://127.0.0.1:1/"])),
            Some(s(&["wget", "-q", "http://127.0.0.1:1/"]))
        );
        assert_eq!(
            probe_command(&s(&["CMD-SHELL", "wget -q http://127.0.0.1:1/ || exit 1"])),
            Some(s(&[
                "/bin/sh",
                "-c",
                "wget -q http://127.0.0.1:1/ || exit 1"
            ]))
        );
        assert_eq!(probe_command(&s(&["NONE"])), None);
    }

    #[test]
    fn a_step_line_names_the_resource_and_what_changes_but_never_a_secret() {
        use crate::model::ResourceId;
        use crate::plan::FieldChange;
        let change = Change::new(ResourceId::new(Kind::Container, "loki"), Action::Replace)
            .with_fields(vec![
                FieldChange::changed("spec.user", "\"0\"", "\"10001:10001\""),
                FieldChange::secret("spec.content"),
            ]);
        assert_eq!(
            step_line(&change),
            "recreating Container/loki: spec.user: \"0\" → \"10001:10001\"; spec.content: value differs"
        );
    }
}
