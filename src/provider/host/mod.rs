//! The host provider: ConfigFiles under the host root and Containers on the Docker engine,
//! as ONE provider because a repaired file must roll the containers that mount it and files
//! must be written before containers start (ConfigMap-rollout style). Observe is read-only
//! (one container list, one inspect per container, one inspect per image, a stat + read per
//! file); the decision is the pure [`diff::plan`], whose steps hold their rendered writes
//! ([`op`]); `apply` carries them out as planned (files, then removals, then containers in
//! dependsOn order), printing each step as it starts and ends, and never reads the desired
//! state again. Never touches unmanaged containers. Every Docker call has a deadline
//! (`docker`).

mod apply;
mod diff;
mod docker;
pub mod events;
mod files;
pub mod handoff;
mod hash;
mod image;
mod ledger;
pub mod op;
pub mod own_container;
mod view;

pub use events::{HostEvent, watch_events};
pub use hash::HASH_LABEL;
pub use op::HostOp;

use crate::model::{Desired, Kind, ResourceId};
use crate::plan::Unobserved;
use crate::provider::{
    CallKind, Classify, ErrorClass, Provider, ProviderError, ProviderPlan, Stats, Step,
    StepOutcome, WriteGate,
};
use docker::{Client, ImageInfo, LiveContainer};
use files::FileState;
use futures_util::future::join_all;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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
    /// Parameter values read from SSM, when this process's environment has no copy.
    stored: StoredSecrets,
    /// The self-update shared with the reconcile loop.
    self_update: Arc<handoff::SelfUpdate>,
}

/// How long a Parameter's value read from SSM is kept before it is read again: a rotated
/// password reaches the host within this, at one GetParameter per parameter each time.
const STORED_SECRET_TTL: Duration = Duration::from_secs(300);

/// The SSM client (made on first need, in the stack's region) and the values it read, by
/// parameter name. Never printed.
#[derive(Default)]
pub(super) struct StoredSecrets {
    client: tokio::sync::OnceCell<aws_sdk_ssm::Client>,
    values: std::sync::Mutex<BTreeMap<String, (std::time::Instant, String)>>,
}

impl fmt::Debug for StoredSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoredSecrets(..)")
    }
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

impl HostProvider {
    /// A Parameter's value as SSM holds it: what CI's apply put there. On the host, the
    /// value's declared source (CI's environment) is absent, so this is where it comes from.
    async fn stored_secret(&self, region: &str, name: &str) -> Result<String, String> {
        let lock = |m: &std::sync::Mutex<BTreeMap<String, (std::time::Instant, String)>>| {
            m.lock().map(|g| g.get(name).cloned()).unwrap_or(None)
        };
        if let Some((at, value)) = lock(&self.stored.values)
            && at.elapsed() < STORED_SECRET_TTL
        {
            return Ok(value);
        }
        let client = self
            .stored
            .client
            .get_or_init(|| crate::provider::aws::parameter_client(region, self.stats.clone()))
            .await;
        let value = crate::provider::aws::read_parameter_value(client, name).await?;
        if let Ok(mut values) = self.stored.values.lock() {
            values.insert(name.to_string(), (std::time::Instant::now(), value.clone()));
        }
        Ok(value)
    }
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
        let own = own_container::current();
        Ok(HostProvider {
            self_update: Arc::new(handoff::SelfUpdate::new(client.clone(), own.clone())),
            client,
            host_root,
            stats,
            own_container: own,
            stored: StoredSecrets::default(),
        })
    }

    /// The bollard client (the events watcher and tests share it).
    pub fn docker(&self) -> &bollard::Docker {
        &self.client.docker
    }

    /// What the reconcile loop shares with this provider about its own container.
    pub fn self_update(&self) -> Arc<handoff::SelfUpdate> {
        self.self_update.clone()
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
                let value = match read_secret(spec) {
                    Ok(value) => Ok(value),
                    Err(local) => self
                        .stored_secret(&desired.stack.region, &spec.name)
                        .await
                        .map_err(|ssm| format!("{local}, and {ssm}")),
                };
                obs.secrets.0.insert(res.id.name.clone(), value);
            }
        }
        Ok(obs)
    }

    fn diff(&self, desired: &Desired, observed: &HostObserved) -> ProviderPlan<HostOp> {
        diff::plan(desired, &self.host_root, observed)
    }

    async fn apply(
        &self,
        _desired: &Desired,
        _observed: &HostObserved,
        steps: Vec<Step<HostOp>>,
        gate: &dyn WriteGate,
    ) -> Vec<StepOutcome> {
        // Each step holds what it writes, rendered by `diff`: apply carries out the plan
        // it was given and reads neither the manifests nor the observation again.
        self.apply_steps(steps, gate).await
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
}
