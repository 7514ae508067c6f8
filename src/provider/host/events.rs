//! The Docker events stream as a trigger: create, start, die, destroy, in-place updates and
//! health changes of the stack's containers arrive at once instead of at the next resync. The engine keeps
//! events in memory only, so after the stream ends (engine restart) the watcher reconnects
//! with backoff and sends [`HostEvent::Resync`]: the consumer must re-list everything.
//! Events only say *when* to reconcile; what to do is always recomputed from scratch.

use crate::model::ownership::STACK_LABEL;
use crate::provider::{CallKind, Stats};
use bollard::Docker;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Container actions that can mean drift. `update` is `docker update` changing a running
/// container in place (memory, cpus, pids, restart policy): nothing else would say so before
/// the resync.
const ACTIONS: [&str; 6] = [
    "create",
    "start",
    "die",
    "destroy",
    "health_status",
    "update",
];
/// First reconnect delay; doubled up to [`BACKOFF_MAX`] while the engine stays away.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// Longest reconnect delay: an engine back after a restart is noticed within this.
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Buffered events; a slow consumer only needs to know *that* something happened.
const CHANNEL: usize = 256;

/// Something the reconciler should react to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostEvent {
    /// One of the stack's containers changed.
    Container {
        /// `create`, `start`, `die`, `destroy`, `update`, `health_status: unhealthy`, …
        action: String,
        /// Container name.
        name: String,
        /// Engine id.
        id: String,
    },
    /// The stream was re-established after a loss; events in between are gone: re-list.
    Resync,
}

/// The container names a stack declares, kept current by the loop: events about a container
/// holding one of them count even when it is not the stack's (a foreign holder that leaves
/// lets the declared one be created at once, not at the next resync).
pub type WatchedNames = Arc<std::sync::RwLock<std::collections::BTreeSet<String>>>;

/// Watches the events of `stack`'s containers, and of any container holding a name in
/// `names`, in a background task until the receiver is dropped. Reconnects forever with
/// backoff; each subscription is counted in `stats`.
pub fn watch_events(
    docker: Docker,
    stack: String,
    names: WatchedNames,
    stats: Arc<Stats>,
) -> mpsc::Receiver<HostEvent> {
    let (tx, rx) = mpsc::channel(CHANNEL);
    tokio::spawn(async move {
        let mut backoff = BACKOFF_MIN;
        let mut first = true;
        loop {
            if tx.is_closed() {
                return;
            }
            if docker.ping().await.is_err() {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
            // Replay from a second before the (re)connect so nothing between the ping and
            // the subscription is lost; duplicates are harmless to a level-triggered loop.
            let since = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs().saturating_sub(1))
                .unwrap_or(0);
            if !first && tx.send(HostEvent::Resync).await.is_err() {
                return;
            }
            first = false;
            let mut filters: HashMap<String, Vec<String>> = HashMap::new();
            filters.insert("type".into(), vec!["container".into()]);
            filters.insert(
                "event".into(),
                ACTIONS.iter().map(|a| a.to_string()).collect(),
            );
            // No label filter: Docker ANDs filters of different keys, and a container holding
            // a declared name need not carry the stack's label. Filtered here instead.
            let opts = bollard::query_parameters::EventsOptions {
                since: Some(since.to_string()),
                until: None,
                filters: Some(filters),
            };
            stats.record("docker", "MonitorEvents", CallKind::Read);
            let mut stream = docker.events(Some(opts));
            while let Some(item) = stream.next().await {
                let Ok(msg) = item else { break };
                backoff = BACKOFF_MIN;
                let actor = msg.actor.unwrap_or_default();
                let attrs = actor.attributes.unwrap_or_default();
                let name = attrs.get("name").cloned().unwrap_or_default();
                let ours = attrs.get(STACK_LABEL).map(String::as_str) == Some(stack.as_str());
                let declared = names.read().map(|n| n.contains(&name)).unwrap_or(false);
                if !ours && !declared {
                    continue;
                }
                let event = HostEvent::Container {
                    action: msg.action.unwrap_or_default(),
                    name,
                    id: actor.id.unwrap_or_default(),
                };
                if tx.send(event).await.is_err() {
                    return;
                }
            }
            tracing::debug!("docker events stream ended; reconnecting");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    });
    rx
}
