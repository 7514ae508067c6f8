//! The reconcile loop: the daemon's one actor. It waits for a trigger (a manifest edit, the
//! resync timer, a Docker event, `POST /reconcile`, a backoff expiring), coalesces whatever
//! else arrived meanwhile, and runs one level-triggered pass over the whole desired state:
//! load the manifests (keeping the last good ones), connect the worlds that answer, take or
//! renew the stack's lease, observe, apply what is not held back, re-observe what was
//! written, and publish the result as a [`Status`] snapshot and metrics. The HTTP side only
//! reads those snapshots; only this loop writes them.

pub mod backoff;
pub mod budget;
pub mod decide;
mod detach;
pub mod health;
pub mod lease;
pub mod state;
#[cfg(test)]
mod tests;
pub mod triggers;
pub mod worlds;

use crate::alerts;
use crate::engine::{ApplyReport, Engine};
use crate::manifest;
use crate::model::{Desired, Kind, ResourceId};
use crate::plan::{Cause, Change, Plan, Problem, ProviderFailure, World};
use crate::provider::host::events::HostEvent;
use crate::provider::{CallKind, DynProvider, ErrorClass, OpenGate, Stats, WriteGate};
use crate::status::{
    AuditEntry, AuditLog, LeaseStatus, Metrics, PassRecord, PassSummary, Reach, Rejected, Role,
    ServiceCalls, Status, Timestamp, Trigger,
};
use backoff::Backoff;
use decide::Acting;
use detach::{Claims, Detached, Work};
use lease::{Holding, Lease};
use state::{Clock, State};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use worlds::{AwsWorld, Connect};

/// A pass that runs longer than this is abandoned (the next pass starts from what is live:
/// nothing is lost, a half-done step is simply planned again).
pub const PASS_DEADLINE: Duration = Duration::from_secs(120);
/// ± fraction of the resync interval drawn at random, so that several daemons (or a daemon
/// and CI) do not observe in lockstep.
pub const RESYNC_JITTER: f64 = 0.1;
/// How long a pass waits for its writes before it lets them go on in the background: a
/// slow step (an image pull, a health check taking its time) must not keep the loop from
/// seeing and repairing anything else. What is still being written is held back from later
/// passes until it finishes; then a pass re-observes it.
pub const DETACH_AFTER: Duration = Duration::from_secs(2);
/// How long a shutdown waits for the pass in flight before abandoning it.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long a shutdown waits for pending alerts (resolutions above all) to be delivered.
pub const ALERT_FLUSH: Duration = Duration::from_secs(5);

pub use crate::plan::Scope;

/// How the daemon was started.
#[derive(Debug, Clone)]
pub struct Options {
    /// The manifests directory.
    pub manifests: PathBuf,
    /// The environment.
    pub env: Option<String>,
    /// The repository root every file read must lie in (`--root`).
    pub root: Option<PathBuf>,
    /// Overrides the Stack's host root.
    pub host_root: Option<PathBuf>,
    /// Worlds covered.
    pub scope: Scope,
    /// Lease time-to-live.
    pub lease_ttl: Duration,
    /// The daemon's page as people reach it: alerts link to it.
    pub page_url: String,
}

/// What the HTTP side holds: snapshots to read and a way to wake the loop.
#[derive(Debug, Clone)]
pub struct Handle {
    /// The newest status.
    pub status: watch::Receiver<Arc<Status>>,
    /// The metrics, set from the same status.
    pub metrics: Arc<Metrics>,
    /// Wakes the loop.
    pub wake: mpsc::Sender<Trigger>,
}

/// The loop's state. Only [`Controller::run`] mutates it.
pub struct Controller {
    opts: Options,
    clock: Clock,
    stats: Arc<Stats>,
    /// How worlds are reached.
    connect: Arc<dyn Connect>,
    aws: Option<AwsWorld>,
    host: Option<Arc<dyn DynProvider>>,
    events: Option<mpsc::Receiver<HostEvent>>,
    files: Option<triggers::FileWatch>,
    /// The declared container names, for the Docker events watcher.
    watched_names: crate::provider::host::events::WatchedNames,
    /// What the loop remembers between passes.
    state: State,
    lease: Option<Lease>,
    identity: String,
    /// The published view of `state`, and the records that only it keeps.
    status: Status,
    audit: AuditLog,
    metrics: Arc<Metrics>,
    /// Which alerts are firing.
    alerts: alerts::Book,
    /// The receivers they go to.
    dispatcher: alerts::deliver::Dispatcher,
    status_tx: watch::Sender<Arc<Status>>,
    wake_tx: mpsc::Sender<Trigger>,
    wake_rx: mpsc::Receiver<Trigger>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

/// `sha256:<hex>` of a serializable value.
fn content_hash<T: serde::Serialize>(value: &T) -> String {
    use sha2::Digest;
    let json = serde_json::to_vec(value).unwrap_or_default();
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(&json)))
}

/// Directories of the content files the manifests name (watched besides the manifests).
fn content_dirs(desired: &Desired) -> BTreeSet<PathBuf> {
    desired
        .config_files()
        .filter_map(|(r, spec)| {
            let source = spec.source.as_ref()?;
            let base = r.source.file.parent().unwrap_or(Path::new("."));
            base.join(source).parent().map(Path::to_path_buf)
        })
        .filter_map(|d| std::fs::canonicalize(d).ok())
        .collect()
}

/// An event about a container is news about it: whatever held its repair back (a foreign
/// holder of its name, a failed start) may be gone, so its backoff is lifted, not waited out.
fn lift_backoff(backoff: &mut Backoff, event: &HostEvent, now: SystemTime) {
    if let HostEvent::Container { name, .. } = event {
        backoff.lift(&ResourceId::new(Kind::Container, name), now);
    }
}

fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(1.0 - RESYNC_JITTER + 2.0 * RESYNC_JITTER * fastrand::f64())
}

impl Controller {
    /// A controller over the real worlds and the handle the HTTP side reads.
    pub fn new(opts: Options) -> (Controller, Handle) {
        Controller::with_worlds(opts, Arc::new(worlds::Live))
    }

    /// A controller that reaches its worlds through `connect`.
    pub fn with_worlds(opts: Options, connect: Arc<dyn Connect>) -> (Controller, Handle) {
        let (status_tx, status_rx) = watch::channel(Arc::new(Status::default()));
        let (wake_tx, wake_rx) = mpsc::channel(64);
        let metrics = Arc::new(Metrics::new());
        let handle = Handle {
            status: status_rx,
            metrics: metrics.clone(),
            wake: wake_tx.clone(),
        };
        let clock = Clock::start();
        let controller = Controller {
            opts,
            clock,
            stats: Arc::new(Stats::default()),
            connect,
            aws: None,
            host: None,
            events: None,
            files: None,
            watched_names: Default::default(),
            state: State::new(clock.now()),
            lease: None,
            identity: lease::identity("daemon"),
            status: Status::default(),
            audit: AuditLog::default(),
            metrics: metrics.clone(),
            alerts: alerts::Book::default(),
            dispatcher: alerts::deliver::Dispatcher::new(metrics.clone()),
            status_tx,
            wake_tx,
            wake_rx,
        };
        (controller, handle)
    }

    fn publish(&mut self) {
        self.status.lease = self.state.lease.clone();
        self.status.connectivity.aws = self.state.reach.aws.clone();
        self.status.connectivity.docker = self.state.reach.docker.clone();
        self.status.audit = self.audit.entries();
        self.status.alerts.receivers = self.dispatcher.status();
        if let Some(d) = &self.state.desired {
            let now = self.clock.now();
            self.status.acknowledgements = d
                .stack
                .acknowledgements
                .iter()
                .map(|a| crate::status::AcknowledgementStatus {
                    resource: a.resource.clone(),
                    fields: a.fields.clone(),
                    rule: a.rule.clone(),
                    reason: a.reason.clone(),
                    expires: a.expires.clone(),
                    active: a.active(now),
                })
                .collect();
        }
        self.status.phase = self.status.derive_phase();
        self.metrics.set_from(&self.status);
        self.status_tx.send_replace(Arc::new(self.status.clone()));
    }

    /// Runs until `shutdown` turns true: then the pass in flight gets [`SHUTDOWN_GRACE`] to
    /// finish (else it is abandoned; the next run plans again from live state), and the
    /// lease is released.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        self.publish();
        let mut next_trigger = Some(Trigger::Startup);
        let mut resync_at = tokio::time::Instant::now();
        // The lease is renewed (or, by a standby, checked) three times per TTL, between
        // passes too: a resync longer than the TTL must neither lose the lease to a standby
        // nor leave a dead holder's stack unattended for longer than the TTL.
        let lease_period = self.opts.lease_ttl / 3;
        let mut lease_at = tokio::time::Instant::now() + lease_period;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let trigger = match next_trigger.take() {
                Some(t) => t,
                None => {
                    let clock = self.clock;
                    let retry_at = self
                        .state
                        .backoff
                        .next_expiry(clock.now())
                        .map(|at| clock.instant_at(at));
                    let events = self.events.as_mut();
                    tokio::select! {
                        _ = shutdown.changed() => continue,
                        wake = self.wake_rx.recv() => match wake {
                            Some(t) => t,
                            None => break,
                        },
                        ev = async { match events { Some(rx) => rx.recv().await, None => std::future::pending().await } } => {
                            let Some(ev) = ev else { self.events = None; continue; };
                            lift_backoff(&mut self.state.backoff, &ev, self.clock.now());
                            Trigger::Docker
                        },
                        _ = tokio::time::sleep_until(resync_at) => Trigger::Resync,
                        _ = async { match retry_at { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => Trigger::Retry,
                        // (select_all panics on no futures, and select! builds every branch's future.)
                        (done, index) = async { if self.state.detached.is_empty() { std::future::pending().await } else { let (done, index, _) = futures_util::future::select_all(self.state.detached.iter_mut().map(|d| &mut d.task)).await; (done, index) } } => {
                            let d = self.state.detached.swap_remove(index);
                            // Converged means observed: look at what those writes left. A
                            // pass that merely planned slowly wrote nothing to look at, and
                            // another pass now would only plan slowly again.
                            if !self.fold_detached(done, d) {
                                continue;
                            }
                            Trigger::Retry
                        },
                        _ = tokio::time::sleep_until(lease_at) => {
                            lease_at = tokio::time::Instant::now() + lease_period;
                            if !self.lease_tick().await {
                                continue;
                            }
                            // Just became the leader: act at once.
                            Trigger::Retry
                        },
                    }
                }
            };
            // Coalesce: whatever else arrived is covered by this level-triggered pass.
            while self.wake_rx.try_recv().is_ok() {}
            if let Some(rx) = self.events.as_mut() {
                while let Ok(ev) = rx.try_recv() {
                    lift_backoff(&mut self.state.backoff, &ev, self.clock.now());
                }
            }
            // A Docker-triggered pass makes no AWS call (see `pass`): it never waits on the
            // AWS budget.
            let wait = if trigger == Trigger::Docker {
                Duration::ZERO
            } else {
                self.state.budget.wait(Instant::now())
            };
            if !wait.is_zero() {
                tracing::warn!(
                    wait_ms = wait.as_millis() as u64,
                    "AWS call budget spent; pass delayed"
                );
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => continue,
                }
            }
            let stopped = {
                let pass = self.pass(trigger);
                tokio::pin!(pass);
                tokio::select! {
                    _ = &mut pass => false,
                    _ = shutdown.changed() => {
                        if tokio::time::timeout(SHUTDOWN_GRACE, &mut pass).await.is_err() {
                            tracing::warn!("shutdown: the pass in flight was abandoned");
                        }
                        true
                    }
                }
            };
            if stopped {
                break;
            }
            let interval = self
                .state
                .desired
                .as_ref()
                .map(|d| d.stack.reconcile_interval)
                .unwrap_or(Duration::from_secs(30));
            let wait = jittered(interval);
            resync_at = tokio::time::Instant::now() + wait;
            self.state.next_resync = self.clock.now() + wait;
        }
        self.shutdown().await;
    }

    /// Folds in the outcomes of writes that finished after their pass.
    /// True when they attempted any step.
    fn fold_detached(&mut self, done: Result<Work, tokio::task::JoinError>, d: Detached) -> bool {
        match done {
            Ok(Some((report, after))) => {
                tracing::info!(steps = report.outcomes.len(), "background writes finished");
                let wrote = !report.outcomes.is_empty();
                if let Some(why) = d.lease_gate.as_ref().and_then(|g| g.lost()) {
                    self.lease_lost(&why);
                }
                let now = self.clock.now();
                self.record_outcomes(&report.outcomes, d.trigger, now);
                // Their pass held back the alerts of what they were writing (it was busy):
                // judged now, exactly as an inline write's are, against what they found and
                // what they left.
                let scope = self.opts.scope;
                let host_only = d.host_only;
                let failed_host = after.failure_of(World::Host).is_some();
                let failed_aws = after.failure_of(World::Aws).is_some();
                let looked_at = move |k: Kind| {
                    if k.on_host() {
                        scope.host() && !failed_host
                    } else {
                        scope.aws() && !host_only && !failed_aws
                    }
                };
                // Only what these writes did, as their pass found it: the rest of that
                // plan was judged by the pass itself (and is stale by now).
                let mut report = report;
                let written: BTreeSet<&ResourceId> =
                    report.outcomes.iter().map(|o| &o.change.id).collect();
                report.plan.changes.retain(|c| {
                    written.contains(&c.id)
                        && (c.cause != crate::plan::Cause::Missing
                            || d.known_missing.contains(&c.id))
                });
                report.plan.violations.clear();
                self.raise_alerts(&d.desired, &report, &after, &looked_at, now);
                self.publish();
                wrote
            }
            Ok(None) => {
                tracing::warn!(
                    "background writes ran past the {}s deadline and were abandoned",
                    PASS_DEADLINE.as_secs()
                );
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "background writes failed");
                true
            }
        }
    }

    /// Audits each write, counts it, and sets its resource's backoff by the failure's class.
    fn record_outcomes(
        &mut self,
        outcomes: &[crate::provider::StepOutcome],
        trigger: Trigger,
        at: SystemTime,
    ) {
        for o in outcomes {
            let id = &o.change.id;
            if alerts::is_health_restart(&o.change) {
                // Restarted, whether or not it came back healthy: the next waits longer.
                self.state.restarts.restarted(id, at);
            }
            match &o.error {
                None => {
                    self.state.backoff.reset(id);
                    self.metrics
                        .count_write(o.change.id.kind.as_str(), o.change.cause.as_str());
                }
                Some(_) => self.state.backoff.failed(
                    id,
                    o.class.unwrap_or(ErrorClass::Transient),
                    at,
                    self.state.next_resync,
                    fastrand::f64(),
                ),
            }
            self.audit.push(AuditEntry::of(o, trigger, at));
        }
    }

    async fn shutdown(&mut self) {
        // Writes in the background get the same grace as a pass in flight.
        // What they did is folded in as ever: audited, and alerted before the flush below.
        for mut d in std::mem::take(&mut self.state.detached) {
            let abort = d.task.abort_handle();
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut d.task).await {
                Ok(done) => {
                    self.fold_detached(done, d);
                }
                Err(_) => {
                    abort.abort();
                    tracing::warn!("shutdown: background writes were abandoned");
                }
            }
        }
        // Alerts raised or resolved in the last pass are still in their outboxes: sent now,
        // within a bound, so that nothing stays firing at a receiver forever.
        let left = self.dispatcher.flush(ALERT_FLUSH).await;
        if left > 0 {
            tracing::warn!(
                pending = left,
                "shutdown: some alerts could not be delivered in time"
            );
        }
        if let Some(lease) = &self.lease {
            match tokio::time::timeout(SHUTDOWN_GRACE, lease.release()).await {
                Ok(Ok(())) => tracing::info!(holder = lease.identity(), "lease released"),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "releasing the lease failed; it lapses at its expiry")
                }
                Err(_) => tracing::warn!("releasing the lease timed out; it lapses at its expiry"),
            }
        }
        self.state.lease = LeaseStatus::default();
        self.publish();
    }

    /// Loads the manifests; an invalid edit is recorded and the last good state stays.
    fn load(&mut self) {
        match manifest::load_in(
            &self.opts.manifests,
            self.opts.env.as_deref(),
            self.opts.root.as_deref(),
        ) {
            Ok(loaded) => {
                let revision = content_hash(&loaded.desired);
                if self.state.revision.as_deref() != Some(revision.as_str()) {
                    tracing::info!(revision = %revision, "manifest revision in force");
                    self.state.revision = Some(revision.clone());
                    self.status.manifest.revision = Some(revision);
                    self.status.manifest.applied_at = Some(Timestamp(SystemTime::now()));
                    // A new revision deserves a fresh attempt at whatever was failing.
                    self.state.backoff.clear();
                    self.watch(&loaded.desired);
                }
                if let Ok(mut names) = self.watched_names.write() {
                    *names = loaded
                        .desired
                        .containers()
                        .map(|(r, _)| r.id.name.clone())
                        .collect();
                }
                self.state.desired = Some(loaded.desired);
                self.status.manifest.rejected = None;
                self.state.rejected_revision = None;
            }
            Err(e) => {
                let text = e.to_string();
                let revision = content_hash(&text);
                if self.state.rejected_revision.as_deref() != Some(revision.as_str()) {
                    tracing::error!(
                        errors = %text,
                        "manifest edit rejected; the last good revision stays in force"
                    );
                    self.state.rejected_revision = Some(revision.clone());
                }
                let errors = match &e {
                    manifest::LoadError::Invalid(d) => d.0.iter().map(|d| d.to_string()).collect(),
                    other => vec![other.to_string()],
                };
                self.status.manifest.rejected = Some(Rejected {
                    revision,
                    at: Timestamp(SystemTime::now()),
                    errors,
                });
            }
        }
    }

    /// (Re)starts the file watch over the manifests and the content they name.
    fn watch(&mut self, desired: &Desired) {
        let root = std::fs::canonicalize(&self.opts.manifests)
            .unwrap_or_else(|_| self.opts.manifests.clone());
        let dirs = content_dirs(desired);
        if let Some(current) = &self.files {
            let mut want = dirs.clone();
            want.insert(root.clone());
            if want
                .iter()
                .all(|d| current.dirs().contains(d) || d.starts_with(&root))
            {
                return;
            }
        }
        match triggers::watch_files(root, dirs, self.wake_tx.clone()) {
            Ok(w) => self.files = Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the manifests; relying on the resync timer")
            }
        }
    }

    /// Connects the worlds in scope that are not connected yet.
    async fn connect(&mut self, desired: &Desired) {
        // Host-only daemons still need AWS for one thing: the account in `${account}`.
        let needs_aws = self.opts.scope.aws() || !desired.unresolved_runtime().is_empty();
        if needs_aws && self.aws.is_none() {
            let world = self
                .connect
                .aws(&desired.stack.region, self.stats.clone())
                .await;
            self.aws = Some(world);
        }
        if self.opts.scope.host() && self.host.is_none() {
            let root = self
                .opts
                .host_root
                .clone()
                .unwrap_or_else(|| desired.stack.host.root.clone());
            let watch = worlds::Watch {
                stack: desired.stack_name.clone(),
                names: self.watched_names.clone(),
            };
            match self
                .connect
                .host(root, self.stats.clone(), Some(watch))
                .await
            {
                Ok(world) => {
                    self.events = world.events;
                    self.host = Some(world.provider);
                    self.state.reach.docker = Some(state::up());
                }
                Err(e) => self.state.reach.docker = Some(state::down(e.to_string())),
            }
        }
    }

    /// Points the lease at the stack's bucket (named only once `${account}` is known; a
    /// renamed bucket moves the lease with it).
    fn ensure_lease(&mut self, desired: &Desired) {
        if !self.opts.scope.aws() {
            return;
        }
        let s3 = self.aws.as_ref().and_then(|w| w.s3.as_ref());
        let (Some(s3), Some((_, bucket))) = (s3, desired.buckets().next()) else {
            return;
        };
        let key_matches = self
            .lease
            .as_ref()
            .is_some_and(|l| l.bucket() == bucket.name);
        if !key_matches {
            self.lease = Some(Lease::new(
                s3.clone(),
                bucket.name.clone(),
                &desired.stack_name,
                self.identity.clone(),
                self.opts.lease_ttl,
            ));
        }
    }

    /// Renews or checks the lease between passes; true when this daemon just took it over.
    async fn lease_tick(&mut self) -> bool {
        let observing = self
            .state
            .desired
            .as_ref()
            .is_some_and(|d| !d.stack.mode.repairs());
        if self.lease.is_none() || observing {
            return false;
        }
        let was_leader = self.state.lease.role == Role::Leader;
        let acting = self.lease_step().await;
        self.publish();
        acting == Acting::Full && !was_leader
    }

    /// A write found the lease gone or taken: stand by (no later pass writes on the old
    /// holding). The next lease tick looks again, and acts at once if it retakes it.
    fn lease_lost(&mut self, why: &str) {
        tracing::warn!(reason = %why, "lease lost mid-pass: standing by until it is retaken");
        self.state.stand_by();
    }

    /// Takes or renews the lease; says what this pass may do.
    async fn lease_step(&mut self) -> Acting {
        let Some(lease) = &self.lease else {
            // Host-only daemons (on the instance, no AWS in scope) have no bucket to hold a
            // lease in: one daemon per host is the deployment's guarantee.
            self.state.lease = LeaseStatus {
                role: Role::Leader,
                holder: Some(self.identity.clone()),
                expires: None,
            };
            return Acting::Full;
        };
        match lease.acquire(SystemTime::now()).await {
            Ok(Holding::Held { expires }) => {
                if self.state.lease.role != Role::Leader {
                    tracing::info!(holder = lease.identity(), "lease taken: this daemon acts");
                }
                self.state.lease = LeaseStatus {
                    role: Role::Leader,
                    holder: Some(lease.identity().to_string()),
                    expires: Some(Timestamp(expires)),
                };
                Acting::Full
            }
            Ok(Holding::Other { holder, expires }) => {
                if self.state.lease.role != Role::Standby {
                    tracing::info!(%holder, "another actor holds the lease: standing by");
                }
                self.state.lease = LeaseStatus {
                    role: Role::Standby,
                    holder: Some(holder),
                    expires: Some(Timestamp(expires)),
                };
                Acting::Standby
            }
            Ok(Holding::NoBucket) => {
                self.state.lease = LeaseStatus::default();
                Acting::BucketOnly
            }
            Err(e) if self.state.holds_unexpired_lease(SystemTime::now()) => {
                // Ours until its expiry, whatever S3 answers now.
                tracing::warn!(error = %e, "lease renewal failed; acting until it expires");
                Acting::Full
            }
            Err(e) => {
                // Without knowing who holds the lease, acting could make two actors.
                tracing::warn!(error = %e, "lease unknown: observing only");
                self.state.lease = LeaseStatus {
                    role: Role::Standby,
                    holder: None,
                    expires: None,
                };
                Acting::Standby
            }
        }
    }

    /// One level-triggered pass.
    #[tracing::instrument(name = "pass", skip(self), fields(trigger = trigger.as_str()))]
    async fn pass(&mut self, trigger: Trigger) {
        let started = self.clock.now();
        let t0 = Instant::now();
        if trigger == Trigger::Resync {
            self.state.backoff.resync();
        }
        self.load();
        let Some(mut desired) = self.state.desired.clone() else {
            self.publish();
            return;
        };
        self.connect(&desired).await;
        self.stats.reset();
        // What keeps this pass from the whole truth, besides what the plan itself finds.
        let mut problems: Vec<Problem> = Vec::new();
        if let Some(aws) = &self.aws {
            match aws.account.account_id().await {
                Ok(account) => {
                    manifest::fill_runtime(&mut desired, &account);
                    self.ensure_lease(&desired);
                    self.state.reach.aws = Some(state::up());
                }
                Err(e) => {
                    self.state.reach.aws = Some(state::down(e.to_string()));
                    // What the provider cached (account, network lookups, policy
                    // documents) may not survive an outage (a restarted endpoint, a
                    // restored account): start afresh.
                    self.aws = None;
                    self.lease = None;
                }
            }
        }
        let aws_up = self.aws.is_some() && self.state.reach.aws_up();
        let host_only = decide::host_only(trigger, self.host.is_some());
        let mut providers: Vec<Arc<dyn DynProvider>> = Vec::new();
        if let Some(aws) = &self.aws
            && aws_up
            && self.opts.scope.aws()
            && !host_only
        {
            providers.push(aws.provider.clone());
        }
        if let Some(host) = &self.host {
            if !desired.unresolved_runtime().is_empty() {
                problems.push(Problem::AccountUnresolved);
            } else {
                providers.push(host.clone());
            }
        }
        // A world in scope that cannot be reached fails the pass: nothing planned there is
        // not the same as nothing to do.
        if self.opts.scope.aws() && !aws_up && !host_only {
            problems.push(Problem::Unreachable(ProviderFailure::new(
                World::Aws,
                ErrorClass::Transient,
                format!("unreachable: {}", self.state.reach.aws_error()),
            )));
        }
        if self.opts.scope.host() && self.host.is_none() {
            problems.push(Problem::Unreachable(ProviderFailure::new(
                World::Host,
                ErrorClass::Transient,
                format!(
                    "Docker engine unreachable: {}",
                    self.state.reach.docker_error()
                ),
            )));
        }
        let repairs = desired.stack.mode.repairs();
        if !repairs {
            // Observe and warn modes write nothing, the lease object included: no lease.
            self.state.lease = LeaseStatus::default();
        }
        let acting = match decide::acting(decide::LeaseFacts {
            repairs,
            host_only,
            has_lease: self.lease.is_some(),
            holds_unexpired: self.state.holds_unexpired_lease(SystemTime::now()),
            aws_in_scope: self.opts.scope.aws(),
            aws_up,
        }) {
            decide::LeaseChoice::Decided(acting) => acting,
            decide::LeaseChoice::Ask => self.lease_step().await,
        };
        let engine = Engine::shared(providers);
        // A leader confirms its lease before each write, not only at its ticks: a lease
        // deleted or taken meanwhile stops this daemon before its next write.
        let lease_gate = match (&self.lease, acting) {
            (Some(lease), Acting::Full) => Some(Arc::new(lease::LeaseGate::new(lease.clone()))),
            _ => None,
        };
        let gate: Arc<dyn WriteGate> = match &lease_gate {
            Some(g) => g.clone(),
            None => Arc::new(OpenGate),
        };
        let now = self.clock.now();
        let backoff = self.state.backoff.clone();
        let restarts = self.state.restarts.clone();
        let claims = Claims::new(self.state.in_flight.clone());
        let work_desired = desired.clone();
        let (plan_tx, plan_rx) = oneshot::channel::<Plan>();
        // The work runs as its own task so that a slow write can outlive this pass.
        let mut task: JoinHandle<Work> = tokio::spawn(async move {
            let work = async {
                let select = |c: &Change| {
                    let restart_waits = alerts::is_health_restart(c) && restarts.holds(&c.id, now);
                    decide::hold(acting, c, backoff.holds(&c.id, now), restart_waits).is_none()
                        && claims.claim(&c.id)
                };
                let report = engine
                    .apply_announcing(&work_desired, &select, gate.as_ref(), |plan| {
                        let _ = plan_tx.send(plan.clone());
                    })
                    .await;
                // Converged means observed: re-read what was written.
                let after = if report.outcomes.is_empty() {
                    report.plan.clone()
                } else {
                    engine.plan(&work_desired).await
                };
                (report, after)
            };
            let done = tokio::time::timeout(PASS_DEADLINE, work).await.ok();
            drop(claims);
            done
        });
        let exceeded = || Problem::Deadline(PASS_DEADLINE);
        let aborted = |e: tokio::task::JoinError| Problem::Aborted(e.to_string());
        let finished_in_time = tokio::select! {
            done = &mut task => Some(done),
            _ = tokio::time::sleep(DETACH_AFTER) => None,
        };
        let (report, mut after) = match finished_in_time {
            Some(Ok(Some(r))) => r,
            Some(Ok(None)) => {
                problems.push(exceeded());
                (ApplyReport::default(), Plan::default())
            }
            Some(Err(e)) => {
                problems.push(aborted(e));
                (ApplyReport::default(), Plan::default())
            }
            None => match tokio::time::timeout(PASS_DEADLINE, plan_rx).await {
                Ok(Ok(plan)) => {
                    // Planned, and writing still: show the plan now, let the writes go on.
                    tracing::info!(
                        in_flight = ?self.state.in_flight.ids(),
                        "writes continue in the background"
                    );
                    let known_missing = plan
                        .changes
                        .iter()
                        .filter(|c| c.cause == crate::plan::Cause::Missing)
                        .filter(|c| self.alerts.knows(&c.id.to_string()))
                        .map(|c| c.id.clone())
                        .collect();
                    self.state.detached.push(Detached {
                        task,
                        trigger,
                        desired: desired.clone(),
                        host_only,
                        known_missing,
                        lease_gate: lease_gate.clone(),
                    });
                    (
                        ApplyReport {
                            plan: plan.clone(),
                            outcomes: Vec::new(),
                        },
                        plan,
                    )
                }
                // The task ended before it could hand over a plan: it is done.
                Ok(Err(_)) => match task.await {
                    Ok(Some(r)) => r,
                    Ok(None) => {
                        problems.push(exceeded());
                        (ApplyReport::default(), Plan::default())
                    }
                    Err(e) => {
                        problems.push(aborted(e));
                        (ApplyReport::default(), Plan::default())
                    }
                },
                Err(_) => {
                    task.abort();
                    problems.push(exceeded());
                    (ApplyReport::default(), Plan::default())
                }
            },
        };
        if let Some(why) = lease_gate.as_ref().and_then(|g| g.lost()) {
            self.lease_lost(&why);
        }
        // The pass itself did not finish (deadline, panic): its empty plan says nothing, so
        // it may not resolve alerts. A blocked resource is not that: it is a finding.
        let pass_failed = problems
            .iter()
            .any(|p| matches!(p, Problem::Deadline(_) | Problem::Aborted(_)));
        after.problems.extend(problems);
        let mut report = report;
        let looked_at = move |k: Kind| !host_only || k.on_host();
        self.attribute_causes(&desired, &mut report, &mut after, &looked_at);
        self.note_reachability(&after);
        let finished = self.clock.now();
        // The resync timer restarts when this pass ends: a permanent failure waits for it
        // (the resync itself releases it), so until then, reckon with its latest time.
        self.state.next_resync = finished
            + desired
                .stack
                .reconcile_interval
                .mul_f64(1.0 + RESYNC_JITTER);
        self.record_outcomes(&report.outcomes, trigger, finished);
        // A resource that could not be read is looked at again by its class's policy: soon
        // when the failure is transient, at the resync when it is not.
        for u in &after.unobserved {
            self.state.backoff.failed(
                &u.id,
                u.class,
                finished,
                self.state.next_resync,
                fastrand::f64(),
            );
        }
        let applying = self.state.in_flight.ids();
        let pending: BTreeSet<&ResourceId> = after
            .changes
            .iter()
            .map(|c| &c.id)
            .chain(after.unobserved.iter().map(|u| &u.id))
            .chain(applying.iter())
            .collect();
        self.state.backoff.retain(|id| pending.contains(id));
        if acting == Acting::BucketOnly
            && !report.outcomes.is_empty()
            && report.outcomes.iter().all(|o| o.error.is_none())
        {
            // The bucket exists now: take the lease and do the rest at once.
            let _ = self.wake_tx.try_send(Trigger::Retry);
        }
        let calls = self.stats.snapshot();
        let mut api_calls: BTreeMap<String, ServiceCalls> = BTreeMap::new();
        for (service, _, kind, n) in &calls {
            let entry = api_calls.entry(service.clone()).or_default();
            match kind {
                CallKind::Read => entry.reads += n,
                CallKind::Write => entry.writes += n,
            }
        }
        let now_i = Instant::now();
        for (service, c) in &api_calls {
            if !matches!(service.as_str(), "docker" | "files") {
                self.state.budget.spend(service, c.reads + c.writes, now_i);
            }
        }
        let writes = self.stats.total(CallKind::Write);
        let result = decide::result(
            after.is_incomplete(),
            report.failures().next().is_some(),
            after.has_changes(),
        );
        let summary = PassSummary {
            started: Timestamp(started),
            duration_ms: t0.elapsed().as_millis() as u64,
            trigger,
            result,
            api_calls,
            writes,
            drifts_found: report.plan.changes.len(),
            repairs: report.outcomes.iter().filter(|o| o.error.is_none()).count(),
        };
        tracing::info!(
            result = result.as_str(),
            duration_ms = summary.duration_ms,
            drifts = summary.drifts_found,
            repairs = summary.repairs,
            writes,
            "pass finished"
        );
        let call_rows: Vec<(String, String, &'static str, u64)> = calls
            .iter()
            .map(|(s, o, k, n)| {
                let access = match k {
                    CallKind::Read => "read",
                    CallKind::Write => "write",
                };
                (s.clone(), o.clone(), access, *n)
            })
            .collect();
        self.metrics.count_pass(&summary, &call_rows);
        let backoff_until = self.state.backoff.until();
        let scope = self.opts.scope;
        let covers = move |k: Kind| scope.covers(World::of(k));
        let aws_error = after.failure_of(World::Aws).map(ProviderFailure::detail);
        let host_error = after.failure_of(World::Host).map(ProviderFailure::detail);
        let unobserved = move |k: Kind| {
            if k.on_host() {
                host_error.clone()
            } else {
                aws_error.clone()
            }
        };
        self.status.record_pass(
            PassRecord {
                desired: &desired,
                before: &report.plan,
                after: &after,
                outcomes: &report.outcomes,
                backoff: &backoff_until,
                summary,
                covers: &covers,
                unobserved: &unobserved,
                kept: &|w: World| host_only && w == World::Aws,
                applying: &applying,
            },
            finished,
        );
        if decide::alerts(acting, desired.stack.mode.repairs()) {
            let alert_scope = |k: Kind| looked_at(k) && !pass_failed && unobserved(k).is_none();
            self.raise_alerts(&desired, &report, &after, &alert_scope, finished);
        }
        self.publish();
    }

    /// Works out which alerts fire and resolve after this pass and hands them to the
    /// receivers (never waiting on them); then shows both in the status.
    fn raise_alerts(
        &mut self,
        desired: &Desired,
        report: &ApplyReport,
        after: &Plan,
        looked_at: &dyn Fn(Kind) -> bool,
        now: SystemTime,
    ) {
        let unhealthy: BTreeSet<ResourceId> = report
            .plan
            .changes
            .iter()
            .chain(after.changes.iter())
            .filter(|c| alerts::is_health_restart(c))
            .map(|c| c.id.clone())
            .collect();
        self.state
            .restarts
            .settle(&unhealthy, |id| looked_at(id.kind), now);
        let errors = self.dispatcher.configure(&desired.stack.alerts.receivers);
        let backoff = &self.state.backoff;
        let restarts = &self.state.restarts;
        let busy = self.state.in_flight.ids();
        let events = self.alerts.pass(&alerts::PassView {
            desired,
            before: &report.plan,
            after,
            outcomes: &report.outcomes,
            looked_at,
            failures: &|id: &ResourceId| backoff.failures(id),
            restarts: &|id: &ResourceId| restarts.count(id),
            busy: &|id: &ResourceId| busy.contains(id),
            page: &self.opts.page_url,
            now,
        });
        for e in &events {
            match e {
                alerts::Event::Firing(a) => tracing::info!(
                    target: "stackwarden::alerts",
                    alert = a.name.as_str(),
                    resource = %format!("{}/{}", a.labels["kind"], a.labels["resource"]),
                    fingerprint = %a.fingerprint,
                    "alert firing"
                ),
                alerts::Event::Resolved(a, _) => tracing::info!(
                    target: "stackwarden::alerts",
                    alert = a.name.as_str(),
                    resource = %format!("{}/{}", a.labels["kind"], a.labels["resource"]),
                    fingerprint = %a.fingerprint,
                    "alert resolved"
                ),
            }
        }
        self.dispatcher.push(&events);
        self.status.alerts = crate::status::AlertsStatus {
            active: self.alerts.active().cloned().collect(),
            receivers: self.dispatcher.status(),
            errors,
        };
    }

    /// Sharpens each change's cause with what this daemon saw: a resource that was in sync
    /// under an older spec changed because its manifest did; under the same spec, because
    /// someone changed it. A provider's own record (a container's config-hash label) already
    /// said `manifest` and is kept; creates stay `missing`. Then remembers what is in sync now.
    fn attribute_causes(
        &mut self,
        desired: &Desired,
        report: &mut ApplyReport,
        after: &mut Plan,
        looked_at: &dyn Fn(Kind) -> bool,
    ) {
        let hashes: BTreeMap<ResourceId, String> = desired
            .resources
            .iter()
            .filter(|r| looked_at(r.id.kind))
            .map(|r| (r.id.clone(), content_hash(&r.spec)))
            .collect();
        let in_sync = &self.state.in_sync;
        let sharpen = |c: &mut Change| {
            if c.cause == Cause::Drift
                && let (Some(then), Some(now)) = (in_sync.get(&c.id), hashes.get(&c.id))
                && then != now
            {
                c.cause = Cause::Manifest;
            }
        };
        report.plan.changes.iter_mut().for_each(sharpen);
        report
            .outcomes
            .iter_mut()
            .for_each(|o| sharpen(&mut o.change));
        after.changes.iter_mut().for_each(sharpen);
        // Only a resource the pass observed without error counts as in sync.
        if after.problems.is_empty() {
            let pending: BTreeSet<&ResourceId> = after
                .changes
                .iter()
                .map(|c| &c.id)
                .chain(after.unobserved.iter().map(|u| &u.id))
                .collect();
            for (id, hash) in hashes {
                if !pending.contains(&id) {
                    self.state.in_sync.insert(id, hash);
                }
            }
        }
    }

    /// Marks AWS and Docker unreachable when their provider could not observe this pass.
    fn note_reachability(&mut self, plan: &Plan) {
        if let Some(f) = plan.failure_of(World::Aws) {
            self.state.reach.aws = Some(state::down(f.detail()));
            self.aws = None;
            self.lease = None;
        }
        match plan.failure_of(World::Host) {
            Some(f) => self.state.reach.docker = Some(state::down(f.detail())),
            None if self.host.is_some() => self.state.reach.docker = Some(state::up()),
            None => {}
        }
    }
}

/// Whether the daemon is ready: a pass finished and every world in scope answers.
pub fn readiness(status: &Status, scope: Scope) -> Result<(), String> {
    if status.last_pass.is_none() {
        return Err("no pass has finished yet".to_string());
    }
    let check = |name: &str, reach: &Option<Reach>| match reach {
        Some(Reach {
            reachable: true, ..
        }) => Ok(()),
        Some(Reach { error, .. }) => Err(format!(
            "{name} unreachable: {}",
            error.as_deref().unwrap_or("unknown")
        )),
        None => Err(format!("{name} not connected yet")),
    };
    if scope.aws() {
        check("AWS", &status.connectivity.aws)?;
    }
    if scope.host() {
        check("Docker", &status.connectivity.docker)?;
    }
    Ok(())
}
