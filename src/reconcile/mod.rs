//! The reconcile loop: the daemon's one actor. It waits for a trigger (a manifest edit, the
//! resync timer, a Docker event, `POST /reconcile`, a backoff expiring), coalesces whatever
//! else arrived meanwhile, and runs one level-triggered pass over the whole desired state:
//! load the manifests (keeping the last good ones), connect the worlds that answer, take or
//! renew the stack's lease, observe, apply what is not held back, re-observe what was
//! written, and publish the result as a [`Status`] snapshot and metrics. The HTTP side only
//! reads those snapshots; only this loop writes them.
//!
//! Read in this order: `run` (triggers to the next pass), `pass` (one pass's effects),
//! `decide` (the pure choices a pass makes), `state` (what the loop remembers), `worlds`
//! (connecting, shared with the CLI), `leadership` and `lease` (who writes), `handoff` (the
//! daemon replacing its own container), `detach` (writes that outlive their pass), `backoff`, `health` and `budget` (what holds a write back).

pub mod backoff;
pub mod budget;
pub mod decide;
mod detach;
pub mod follow;
mod handoff;
pub mod health;
mod leadership;
pub mod lease;
mod pass;
mod run;
pub mod state;
#[cfg(test)]
mod tests;
pub mod triggers;
pub mod worlds;

use crate::alerts;
use crate::provider::host::events::HostEvent;
use crate::provider::{DynProvider, Stats};
use crate::status::{AuditLog, Metrics, Reach, Status, Trigger};
use lease::Lease;
use state::{Clock, State};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
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
    /// A published source to follow instead of reading `manifests` (`--source s3://…`):
    /// the revision in force becomes the manifests and the root.
    pub source: Option<follow::SourceOptions>,
    /// The most this daemon does to AWS resources (`--aws-mode`): the host's daemon reports
    /// and alerts AWS drift (`warn`) and leaves AWS writes to CI.
    pub aws_mode: Option<crate::model::Mode>,
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
    /// The daemon's own container, as the host's apply hands it over.
    self_update: Option<Arc<crate::provider::host::handoff::SelfUpdate>>,
    /// What the loop remembers of a self-update.
    handoff: handoff::Handoffs,
    files: Option<triggers::FileWatch>,
    /// The declared container names, for the Docker events watcher.
    watched_names: crate::provider::host::events::WatchedNames,
    /// What the loop remembers between passes.
    state: State,
    /// The published source it follows, if any.
    follow: Option<follow::Follow>,
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
        let follow = opts.source.clone().map(follow::Follow::new);
        let controller = Controller {
            opts,
            clock,
            stats: Arc::new(Stats::default()),
            connect,
            aws: None,
            host: None,
            events: None,
            self_update: None,
            handoff: handoff::Handoffs::default(),
            files: None,
            watched_names: Default::default(),
            state: State::new(clock.now()),
            follow,
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
        self.status.source = self.follow.as_ref().map(follow::Follow::status);
        self.status.audit = self.audit.entries();
        self.status.alerts.receivers = self.dispatcher.status();
        self.status.alerts.active = self
            .alerts
            .active()
            .chain(self.follow.iter().flat_map(follow::Follow::active))
            .chain(self.handoff.active())
            .cloned()
            .collect();
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
}

/// Whether the daemon is ready: a revision is in force (when it follows a source), a pass
/// finished and every world in scope answers. A source that cannot be read does not make it
/// unready: the revision in force stays applied ([`source_line`] names it).
pub fn readiness(status: &Status, scope: Scope) -> Result<(), String> {
    if let Some(source) = &status.source
        && source.revision.is_none()
    {
        return Err(format!(
            "no revision from {} is in force yet: {}",
            source.url,
            source
                .last_error
                .as_deref()
                .unwrap_or("waiting for the first poll")
        ));
    }
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

/// What `/readyz` says of a followed source besides readiness: the revision in force and,
/// when the last poll failed, why (an unreachable bucket keeps the last good revision).
pub fn source_line(status: &Status) -> Option<String> {
    let source = status.source.as_ref()?;
    let revision = source.revision?;
    Some(match &source.last_error {
        Some(e) => format!(
            "source: revision {revision} from {} in force; the last check failed: {e}",
            source.url
        ),
        None => format!("source: revision {revision} from {} in force", source.url),
    })
}
