//! The host's apply: carries out the planned steps exactly as [`HostOp`]s hold them (files
//! one by one, then removals, then containers as a `dependsOn` graph), one function per op
//! kind. It never reads the desired state: what to write was rendered by `diff`. A step
//! whose prerequisite failed (a ConfigFile it mounts could not be written) does not run.

use super::docker::{self, ImageInfo, LiveContainer};
use super::op::{
    ContainerCreate, DirectoryCreate, FileRemoval, FileWrite, HostOp, ModeSet, OwnerSet,
    Prerequisites,
};
use super::{APPLY_LOG_TARGET, HostProvider, READY_CAP, READY_POLL, diff, files, image, ledger};
use super::{probe_command, view};
use crate::model::{HealthCheck, Kind};
use crate::plan::{Action, Change};
use crate::provider::{ErrorClass, Step, StepError, StepOutcome, WriteGate};
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared, join_all};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// How long a probe may run when the health check declares no timeout (Docker's default).
const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(30);

impl HostProvider {
    /// Carries out the steps: files one by one (cheap, and containers read them), then
    /// removals together, then containers, each once the steps it depends on are done.
    pub(super) async fn apply_steps(
        &self,
        steps: Vec<Step<HostOp>>,
        gate: &dyn WriteGate,
    ) -> Vec<StepOutcome> {
        let mut outcomes = Vec::with_capacity(steps.len());
        let (file_steps, rest): (Vec<_>, Vec<_>) = steps
            .into_iter()
            .partition(|s| s.change.id.kind == Kind::ConfigFile);
        let mut failed_files: BTreeMap<String, StepError> = BTreeMap::new();
        for step in file_steps {
            let outcome = self.run_step(step, gate).await;
            if let (Some(message), Some(class)) = (&outcome.error, outcome.class) {
                let error = StepError {
                    class,
                    message: message.clone(),
                };
                failed_files.insert(outcome.change.id.name.clone(), error);
            }
            outcomes.push(outcome);
        }
        // A container whose mounted file could not be written is not recreated for it: the
        // restart would start it on the old file again, and its own events would wake pass
        // after pass. Its outcome says what blocks it, and its backoff holds.
        let mut runnable = Vec::with_capacity(rest.len());
        for step in rest {
            match blocked_by(&step, &failed_files) {
                Some((file, error)) => {
                    tracing::warn!(
                        target: APPLY_LOG_TARGET,
                        "not {}: its mounted ConfigFile/{file} could not be written",
                        step_line(&step.change)
                    );
                    outcomes.push(StepOutcome::failed(step.change, error));
                }
                None => runnable.push(step),
            }
        }
        let (removals, containers): (Vec<_>, Vec<_>) = runnable
            .into_iter()
            .partition(|s| s.change.action == Action::Delete);
        outcomes.extend(join_all(removals.into_iter().map(|s| self.run_step(s, gate))).await);
        outcomes.extend(self.run_graph(containers, gate).await);
        outcomes
    }

    /// Containers as a graph: each starts once the containers it depends on are running and
    /// healthy (or have failed: a dependent still starts, its services retry, and the
    /// failure is reported on the dependency's own step). A slow start (a pull, a health
    /// check that takes its time) holds up its own dependents and nothing else.
    async fn run_graph(
        &self,
        mut steps: Vec<Step<HostOp>>,
        gate: &dyn WriteGate,
    ) -> Vec<StepOutcome> {
        steps.sort_by_key(|s| prerequisites(s).map_or(0, Prerequisites::level));
        let with_steps: BTreeSet<String> = steps.iter().map(|s| s.change.id.name.clone()).collect();
        let mut started: BTreeMap<String, Shared<BoxFuture<'_, StepOutcome>>> = BTreeMap::new();
        for step in steps {
            let name = step.change.id.name.clone();
            let waits: Vec<_> = prerequisites(&step)
                .map(|p| p.waits_for(&with_steps))
                .unwrap_or_default()
                .iter()
                .filter_map(|d| started.get(d).cloned())
                .collect();
            let run = async move {
                join_all(waits).await;
                self.run_step(step, gate).await
            };
            started.insert(name, run.boxed().shared());
        }
        join_all(started.into_values()).await
    }

    async fn run_step(&self, step: Step<HostOp>, gate: &dyn WriteGate) -> StepOutcome {
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
        if self.replaces_own(&step) {
            // Not removed from inside: handed over to a successor (see `handoff`).
            return match self.hand_off(&step).await {
                Ok(()) => StepOutcome::done(step.change),
                Err(error) => {
                    tracing::warn!(target: APPLY_LOG_TARGET, "{} {} failed: {error}", step.change.action.verb(), step.change.id);
                    StepOutcome::failed(step.change, error)
                }
            };
        }
        for op in &step.ops {
            if let Err(error) = self.run_op(op).await {
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

    /// Runs one operation as planned; the error is a sentence for people.
    async fn run_op(&self, op: &HostOp) -> Result<(), StepError> {
        match op {
            // Waiting and blocking are the scheduler's, before the step starts
            // ([`HostProvider::apply_steps`]); nothing is left to do here.
            HostOp::Await(_) => Ok(()),
            HostOp::WriteFile(w) => self.write_file(w),
            HostOp::MakeDirectory(d) => self.make_directory(d),
            HostOp::SetOwner(o) => self.set_owner(o),
            HostOp::SetMode(m) => self.set_mode(m),
            HostOp::RemoveFile(r) => self.remove_file(r),
            HostOp::EnsureImage { image, present } => self.ensure_image(image, *present).await,
            HostOp::EnsureNetwork { network, labels } => self.ensure_network(network, labels).await,
            HostOp::RemoveContainer { name, id } => {
                self.refuse_own(name, id)?;
                Ok(self.client.remove(id).await?)
            }
            HostOp::CreateContainer(c) => self.create_container(c).await,
            HostOp::StartContainer { name } => Ok(self.client.start(name).await?),
            HostOp::UnpauseContainer { name } => Ok(self.client.unpause(name).await?),
            HostOp::RestartContainer { name, id } => {
                self.refuse_own(name, id)?;
                Ok(self.client.restart(name).await?)
            }
            // A container that is not (yet) healthy may become so: transient.
            HostOp::WaitReady { name, check } => self
                .wait_ready(name, check.as_ref())
                .await
                .map_err(|message| StepError {
                    class: ErrorClass::Transient,
                    message,
                }),
        }
    }

    fn write_file(&self, w: &FileWrite) -> Result<(), StepError> {
        let mode = w.mode.clone().map_err(files::FileError::Mode)?;
        if let Ok(meta) = std::fs::symlink_metadata(&w.path)
            && meta.is_dir()
        {
            return Err(StepError::permanent(format!(
                "{} is a directory; remove it by hand, stackwarden does not delete directories",
                w.path.display()
            )));
        }
        let content = w.content.bytes().map_err(StepError::permanent)?;
        files::check_parents(&self.host_root, &w.path)?;
        // Recorded before it is written: a file on disk is never one the record does not
        // know (a record of a file not written is harmless).
        if let Some(record) = &w.record {
            ledger::update(&self.host_root, &record.stack, &record.path, Some(&w.file))?;
        }
        self.record_file("WriteFile");
        Ok(files::write_atomic(
            &w.path, content, w.owner, w.group, mode,
        )?)
    }

    fn make_directory(&self, d: &DirectoryCreate) -> Result<(), StepError> {
        let mode = d.mode.clone().map_err(files::FileError::Mode)?;
        files::check_parents(&self.host_root, &d.path)?;
        // A symlink (or file) where the directory belongs goes, never its target.
        self.record_file("RemoveFile");
        files::remove_non_directory(&d.path)?;
        self.record_file("CreateDirectory");
        files::make_dir(&d.path)?;
        self.record_file("SetOwner");
        files::set_owner(&d.path, d.owner, d.group)?;
        self.record_file("SetMode");
        Ok(files::set_mode(&d.path, mode)?)
    }

    fn set_owner(&self, o: &OwnerSet) -> Result<(), StepError> {
        files::check_parents(&self.host_root, &o.path)?;
        self.record_file("SetOwner");
        Ok(files::set_owner(&o.path, o.owner, o.group)?)
    }

    fn set_mode(&self, m: &ModeSet) -> Result<(), StepError> {
        let mode = m.mode.clone().map_err(files::FileError::Mode)?;
        files::check_parents(&self.host_root, &m.path)?;
        self.record_file("SetMode");
        Ok(files::set_mode(&m.path, mode)?)
    }

    fn remove_file(&self, r: &FileRemoval) -> Result<(), StepError> {
        let path = &r.record.path;
        if !ledger::is_plain_relative(path) {
            return Err(StepError::permanent(format!(
                "`{path}` is not a plain path under the host root; it is left alone"
            )));
        }
        let full = files::resolve(&self.host_root, path);
        files::check_parents(&self.host_root, &full)?;
        self.record_file("RemoveFile");
        files::remove_non_directory(&full)?;
        Ok(ledger::update(
            &self.host_root,
            &r.record.stack,
            path,
            None,
        )?)
    }

    pub(super) async fn ensure_image(&self, image: &str, present: bool) -> Result<(), StepError> {
        if present {
            return Ok(());
        }
        // A registry that cannot be reached may be back later: transient.
        self.client.pull(image).await.map_err(|e| StepError {
            class: ErrorClass::Transient,
            message: format!("image {image} is not present and cannot be pulled: {e}"),
        })?;
        // A pinned reference must now resolve to an image carrying its digest.
        match self.client.image(image).await? {
            Some(info) if image::ImageRef::parse(image).is_satisfied_by(&info.repo_digests) => {
                Ok(())
            }
            _ => Err(StepError::permanent(format!(
                "image {image} was pulled but no local image carries that reference"
            ))),
        }
    }

    pub(super) async fn ensure_network(
        &self,
        network: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), StepError> {
        if self.client.networks().await?.iter().any(|n| n == network) {
            return Ok(());
        }
        Ok(self.client.create_network(network, labels).await?)
    }

    pub(super) async fn create_container(&self, c: &ContainerCreate) -> Result<(), StepError> {
        // A missing bind source would be created by the engine as root 0755 (or, for a
        // file, as a directory): hostPath directories under the root are made here.
        for dir in &c.host_dirs {
            if std::fs::symlink_metadata(dir).is_err() {
                self.record_file("CreateDirectory");
                files::make_dir(dir)?;
            }
        }
        // The engine resolves bind sources through symlinks: none may hide in the path of
        // a source under the root.
        for source in c.sources.values() {
            files::check_parents(&self.host_root, source)?;
        }
        // A missing ConfigFile (its write failed) would become a root-owned directory made
        // by the engine, which then blocks the file for good: refuse instead.
        for (file, path) in &c.mounted_files {
            if std::fs::symlink_metadata(path).is_err() {
                return Err(StepError::permanent(format!(
                    "mounted ConfigFile/{file} is missing at {}; it must be written first",
                    path.display()
                )));
            }
        }
        // The sources' identities as of now, when the engine resolves the binds.
        let identities: BTreeMap<String, String> = c
            .sources
            .iter()
            .map(|(target, source)| (target.clone(), files::identity(source)))
            .collect();
        let mut body = c.body.clone();
        let (key, value) = diff::mount_sources_label(&identities);
        body.labels
            .get_or_insert_with(Default::default)
            .insert(key, value);
        match self.client.create(&c.name, body).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_conflict() => {
                let mut expected = (*c.expected).clone();
                expected.mount_sources = identities;
                self.adopt(c, &expected).await
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Refuses to remove or restart the container this process runs in: the step would end
    /// the process midway. A replace is handed over instead (`handoff`, before any op
    /// runs); what is left here is a removal (no longer declared) or a health restart,
    /// which an apply from outside does.
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
    /// field by field with the planned view, since labels alone can be copied by hand.
    /// Anything else is left to the next observe, which sees it and plans for it.
    async fn adopt(
        &self,
        c: &ContainerCreate,
        expected: &view::ContainerView,
    ) -> Result<(), StepError> {
        let name = &c.name;
        // The engine reserves the name before the container can be inspected: a create
        // still under way answers 404 for a moment.
        let mut raw = None;
        for round in 0..5 {
            if round > 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            raw = self.client.inspect_raw(name).await?;
            if raw.is_some() {
                break;
            }
        }
        let holder = match &raw {
            None => "a container that is gone again",
            Some(raw) => {
                // Only a container of the image the plan was made for can be the one; that
                // image's defaults normalize its inspect as observe would.
                let planned: Option<&ImageInfo> = c
                    .image
                    .as_ref()
                    .filter(|i| raw.image.as_deref() == Some(i.id.as_str()));
                let live = docker::from_inspect(raw, planned);
                let same = live.stack() == Some(c.stack.as_str())
                    && planned.is_some()
                    && diff::container::compare(expected, &live.view).is_empty();
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
    async fn wait_ready(&self, name: &str, check: Option<&HealthCheck>) -> Result<(), String> {
        let Some(check) = check else {
            return self.running_or_why(name).await.map(|_| ());
        };
        let limit = (check.start_period
            + (check.interval + check.timeout) * (check.retries + 1)
            + Duration::from_secs(5))
        .min(READY_CAP);
        let probe = probe_command(&check.test);
        let timeout = if check.timeout.is_zero() {
            DEFAULT_PROBE_TIMEOUT
        } else {
            check.timeout
        };
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
}

/// A declared container's prerequisites, from its step's first op.
fn prerequisites(step: &Step<HostOp>) -> Option<&Prerequisites> {
    step.ops.iter().find_map(|op| match op {
        HostOp::Await(p) => Some(p),
        _ => None,
    })
}

/// Why a step may not run: a ConfigFile it mounts failed to be written this apply. The
/// error keeps that failure's class (a permanent one waits for a person; a transient one
/// is tried again with the file) and names it. `None` when nothing it needs failed.
fn blocked_by(
    step: &Step<HostOp>,
    failed_files: &BTreeMap<String, StepError>,
) -> Option<(String, StepError)> {
    let (file, cause) = prerequisites(step)?
        .files
        .iter()
        .find_map(|f| failed_files.get_key_value(f))?;
    let error = StepError {
        class: cause.class,
        message: format!(
            "blocked: its mounted ConfigFile/{file} could not be written ({})",
            cause.message
        ),
    };
    Some((file.clone(), error))
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

#[cfg(test)]
mod tests {
    use super::super::diff::tests::{converged, desired};
    use super::super::{diff::plan, docker::Client, files::FileState};
    use super::*;
    use crate::model::Spec;
    use crate::provider::{CallKind, OpenGate, Stats};
    use std::os::unix::net::UnixListener;
    use std::path::Path;
    use std::sync::Arc;

    /// A host provider over `root` whose engine socket is bound but never answers: a step
    /// that reached the engine would fail, and be counted.
    fn offline(root: &Path, stats: Arc<Stats>) -> (HostProvider, UnixListener) {
        let path = root.join("silent-engine.sock");
        let socket = UnixListener::bind(&path).unwrap_or_else(|e| panic!("{e}"));
        let endpoint = format!("unix://{}", path.display());
        let client = Client::at(&endpoint, stats.clone()).unwrap_or_else(|e| panic!("{e}"));
        let host = HostProvider {
            self_update: Arc::new(super::super::handoff::SelfUpdate::new(client.clone(), None)),
            client,
            host_root: root.to_path_buf(),
            stats,
            own_container: None,
            stored: Default::default(),
        };
        (host, socket)
    }

    fn temp_root() -> tempfile::TempDir {
        tempfile::tempdir().unwrap_or_else(|e| panic!("a temp dir: {e}"))
    }

    fn engine_calls(stats: &Stats) -> u64 {
        [CallKind::Read, CallKind::Write]
            .into_iter()
            .map(|k| stats.service_total("docker", k))
            .sum()
    }

    #[tokio::test]
    async fn a_step_applied_after_the_manifest_changed_writes_what_was_planned() {
        let root = temp_root();
        let mut d = desired();
        let mut obs = converged(&d);
        obs.files.insert("cfg".into(), FileState::Missing);
        obs.files.insert("pw".into(), FileState::Missing);
        let steps: Vec<_> = plan(&d, root.path(), &obs)
            .steps
            .into_iter()
            .filter(|s| s.change.id.kind == Kind::ConfigFile)
            .collect();
        assert_eq!(steps.len(), 2, "{steps:?}");
        // The manifest and the secret change after the plan was made.
        for r in &mut d.resources {
            if let Spec::ConfigFile(f) = &mut r.spec {
                f.path = format!("moved/{}", f.path);
                f.content = f.content.as_ref().map(|_| "a: 2\n".to_string());
                f.mode = Some("0666".into());
            }
        }
        obs.secrets.0.insert("secret".into(), Ok("another".into()));

        let stats = Arc::new(Stats::default());
        let (host, _engine) = offline(root.path(), stats);
        let outcomes = host.apply_steps(steps, &OpenGate).await;
        assert!(outcomes.iter().all(|o| o.error.is_none()), "{outcomes:#?}");
        let read = |p: &str| std::fs::read(root.path().join(p)).unwrap_or_default();
        assert_eq!(read("svc/config.yaml"), b"a: 1\n");
        assert_eq!(read("secrets/password"), b"pw");
        assert!(!root.path().join("moved").exists());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(root.path().join("svc/config.yaml"))
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or_default();
        assert_eq!(mode, 0o640);
    }

    #[tokio::test]
    async fn a_container_whose_mounted_file_could_not_be_written_is_blocked_and_never_reaches_the_engine()
     {
        let root = temp_root();
        let d = desired();
        let mut obs = converged(&d);
        obs.files.insert(
            "cfg".into(),
            FileState::File {
                sha256: "edited by hand".into(),
                uid: 10001,
                gid: 10001,
                mode: 0o640,
            },
        );
        let steps = plan(&d, root.path(), &obs).steps;
        let planned: Vec<String> = steps.iter().map(|s| s.change.id.to_string()).collect();
        assert_eq!(planned, ["ConfigFile/cfg", "Container/svc"]);
        // The file's directory is a plain file: no write can land below it.
        std::fs::write(root.path().join("svc"), "not a directory")
            .unwrap_or_else(|e| panic!("{e}"));

        let stats = Arc::new(Stats::default());
        let (host, _engine) = offline(root.path(), stats.clone());
        let outcomes = host.apply_steps(steps, &OpenGate).await;
        let file = &outcomes[0];
        assert_eq!(file.change.id.to_string(), "ConfigFile/cfg");
        assert_eq!(file.class, Some(ErrorClass::Permanent), "{file:?}");
        let svc = &outcomes[1];
        assert_eq!(svc.change.id.to_string(), "Container/svc");
        let error = svc.error.as_deref().unwrap_or_default();
        assert!(
            error.starts_with("blocked: its mounted ConfigFile/cfg could not be written ("),
            "{error}"
        );
        // It keeps its prerequisite's class: a person must act before it can run.
        assert_eq!(svc.class, file.class);
        assert_eq!(engine_calls(&stats), 0, "{:?}", stats.snapshot());
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
