//! The daemon's own container, replaced by a handoff. A replace cannot be done from inside
//! (removing the container ends the process before the new one exists), so the daemon
//! creates its successor beside itself under a temporary name, from the new rendered spec,
//! and waits until Docker reports it healthy; the reconcile loop then gives up the lease and
//! has the engine stop this container, and the successor, once it holds the lease, removes
//! its predecessor and takes the declared name ([`SelfUpdate::take_over`]). The state
//! machine and its crash cases are written down in docs/daemon.md ("Self-update").
//!
//! This module holds the Docker side only; who may write, and when the lease is let go, is
//! the loop's (`reconcile::handoff`).

use super::docker::{Client, DockerError, LiveContainer};
use super::op::{ContainerCreate, HostOp};
use super::{APPLY_LOG_TARGET, HASH_LABEL, HostProvider};
use crate::model::HealthCheck;
use crate::model::ownership::STACK_LABEL;
use crate::provider::{Step, StepError};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The label a successor carries: the id of the container it replaces. The diff ignores
/// it (a successor renamed to the declared name is the declared container), and no pass
/// removes a container carrying it as undeclared.
pub const SUCCESSOR_LABEL: &str = "stackwarden.successor-of";
/// Appended to the declared name for the successor's temporary name.
pub const SUCCESSOR_SUFFIX: &str = "-next";
/// The least time a successor is given to turn healthy: Docker's first probe only runs one
/// interval after the start, and an image may take a moment to start.
pub const BOUND_FLOOR: Duration = Duration::from_secs(10);
/// The most: a successor that needs longer is a broken release, and the old daemon must
/// not leave the rest of the stack waiting on it.
pub const BOUND_CAP: Duration = Duration::from_secs(300);
/// How often the successor is inspected while it starts.
const POLL: Duration = Duration::from_millis(500);

/// The successor's temporary name.
pub fn successor_name(declared: &str) -> String {
    format!("{declared}{SUCCESSOR_SUFFIX}")
}

/// How long a successor may take to turn healthy: its start period, then as many probes as
/// it may fail plus one, each given its interval and timeout; within [`BOUND_FLOOR`] and
/// [`BOUND_CAP`]. Without a health check, it must run that long without exiting.
pub fn bound(check: Option<&HealthCheck>) -> Duration {
    let Some(c) = check else {
        return BOUND_FLOOR;
    };
    (c.start_period + (c.interval + c.timeout) * (c.retries + 1)).clamp(BOUND_FLOOR, BOUND_CAP)
}

/// What became of a handoff, for the loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handoff {
    /// The successor runs, healthy, under its temporary name: this daemon may go.
    Ready {
        /// The declared container's name.
        container: String,
        /// The successor's temporary name.
        successor: String,
    },
    /// The successor did not turn healthy within its bound and was removed.
    Failed {
        /// The declared container's name.
        container: String,
        /// Why: its last health output, or how it exited.
        why: String,
    },
}

/// What the host's apply and the loop share about the container this process runs in.
pub struct SelfUpdate {
    client: Client,
    own: Option<String>,
    /// Set by the loop while this daemon holds the stack's lease: without one, nothing keeps
    /// two daemons from acting once the successor runs, so the replace is refused instead.
    armed: AtomicBool,
    news: Mutex<Option<Handoff>>,
}

impl std::fmt::Debug for SelfUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfUpdate")
            .field("own", &self.own)
            .finish_non_exhaustive()
    }
}

/// What [`SelfUpdate::take_over`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TakeOver {
    /// This process does not run in a successor: nothing to do.
    NotASuccessor,
    /// The predecessor was removed (if it was still there) and this container renamed.
    Renamed {
        /// The declared name it runs under now.
        name: String,
    },
}

impl SelfUpdate {
    pub(super) fn new(client: Client, own: Option<String>) -> SelfUpdate {
        SelfUpdate {
            client,
            own,
            armed: AtomicBool::new(false),
            news: Mutex::new(None),
        }
    }

    /// The id of the container this process runs in.
    pub fn own(&self) -> Option<&str> {
        self.own.as_deref()
    }

    /// Allows (while this daemon holds the lease) or forbids a handoff.
    pub fn arm(&self, armed: bool) {
        self.armed.store(armed, Ordering::SeqCst);
    }

    fn armed(&self) -> bool {
        self.armed.load(Ordering::SeqCst)
    }

    /// The outcome of the last handoff, once.
    pub fn take_news(&self) -> Option<Handoff> {
        self.news.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn tell(&self, news: Handoff) {
        *self.news.lock().unwrap_or_else(|e| e.into_inner()) = Some(news);
    }

    /// Has the engine stop this process's container (SIGTERM, then SIGKILL after the
    /// grace). Through the engine, not by exiting: `restart: unless-stopped` would start a
    /// container whose process merely exited.
    pub async fn stop_own(&self) -> Result<(), DockerError> {
        match &self.own {
            Some(id) => self.client.stop(id).await,
            None => Ok(()),
        }
    }

    /// Run by a daemon that holds the lease, before it writes anything else: when this
    /// process runs in a successor (the temporary name, the successor label, `stack`'s),
    /// removes whatever of this stack still holds the declared name (the stopped
    /// predecessor, or a predecessor restarted after a crash, standing by) and renames this
    /// container to the declared name. A container of another owner holding the name is
    /// never touched: the rename then fails, and the next pass tries again.
    pub async fn take_over(&self, stack: &str) -> Result<TakeOver, DockerError> {
        let Some(own) = &self.own else {
            return Ok(TakeOver::NotASuccessor);
        };
        let Some(me) = self.client.inspect(own).await? else {
            return Ok(TakeOver::NotASuccessor);
        };
        let declared = match me.name.strip_suffix(SUCCESSOR_SUFFIX) {
            Some(d) if is_successor(&me, stack) => d.to_string(),
            _ => return Ok(TakeOver::NotASuccessor),
        };
        if let Some(holder) = self.client.inspect(&declared).await?
            && holder.id != *own
            && holder.labels.get(STACK_LABEL).map(String::as_str) == Some(stack)
        {
            tracing::info!(
                predecessor = %short(&holder.id),
                "successor holds the lease: removing its predecessor"
            );
            self.client.remove(&holder.id).await?;
        }
        self.client.rename(own, &declared).await?;
        tracing::info!(name = %declared, "successor renamed to the declared name: the handoff is complete");
        Ok(TakeOver::Renamed { name: declared })
    }
}

impl SelfUpdate {
    /// Removes a successor of this container left under the temporary name once nothing
    /// is to be handed over any more (`busy` holds the declared names with a change pending
    /// or being written): one whose handoff was cut short by a crash, after which the spec
    /// changed back. Left standing, it would wait for the lease for ever. True when one was
    /// removed.
    pub async fn clear_stale(
        &self,
        stack: &str,
        busy: &std::collections::BTreeSet<String>,
    ) -> Result<bool, DockerError> {
        let Some(own) = &self.own else {
            return Ok(false);
        };
        let Some(me) = self.client.inspect(own).await? else {
            return Ok(false);
        };
        if me.stack() != Some(stack)
            || is_successor(&me, stack) && me.name.ends_with(SUCCESSOR_SUFFIX)
        {
            return Ok(false);
        }
        if busy.contains(&me.name) {
            return Ok(false);
        }
        let name = successor_name(&me.name);
        match self.client.inspect(&name).await? {
            Some(stale) if is_successor(&stale, stack) => {
                tracing::info!(successor = %name, "removing a successor left from a handoff that is no longer due");
                self.client.remove(&stale.id).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// True when `c` is a successor created by a handoff of `stack`.
fn is_successor(c: &LiveContainer, stack: &str) -> bool {
    c.labels.contains_key(SUCCESSOR_LABEL) && c.stack() == Some(stack)
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

impl HostProvider {
    /// The declared name when `step` replaces the container this process runs in.
    pub(super) fn replaces_own(&self, step: &Step<HostOp>) -> bool {
        let Some(own) = self.self_update.own() else {
            return false;
        };
        let removes_own = step
            .ops
            .iter()
            .any(|op| matches!(op, HostOp::RemoveContainer { id, .. } if id == own));
        let creates = step
            .ops
            .iter()
            .any(|op| matches!(op, HostOp::CreateContainer(_)));
        removes_own && creates
    }

    /// Carries out a replace of this process's own container as a handoff's first half:
    /// the successor, created and healthy under its temporary name. The loop does the rest
    /// (see [`Handoff::Ready`]). A successor that does not turn healthy is removed, and the
    /// step fails permanently: the same spec is tried again at the next resync, not sooner.
    pub(super) async fn hand_off(&self, step: &Step<HostOp>) -> Result<(), StepError> {
        let own = self.self_update.own().unwrap_or_default().to_string();
        let create = step.ops.iter().find_map(|op| match op {
            HostOp::CreateContainer(c) => Some(c),
            _ => None,
        });
        let Some(create) = create else {
            return Err(StepError::permanent("a replace without a create"));
        };
        if !self.self_update.armed() {
            return Err(StepError::permanent(format!(
                "Container/{} runs this stackwarden process: only a daemon holding the stack's lease hands its own container over to a successor; \
                 run `stackwarden apply --scope host` on the host, outside this container, to apply this change",
                create.name
            )));
        }
        // What the new container needs first: its image, its network.
        for op in &step.ops {
            match op {
                HostOp::EnsureImage { .. } | HostOp::EnsureNetwork { .. } => {
                    self.run_prepare(op).await?
                }
                _ => {}
            }
        }
        let check = step.ops.iter().find_map(|op| match op {
            HostOp::WaitReady { check, .. } => check.clone(),
            _ => None,
        });
        let name = successor_name(&create.name);
        let successor = successor_of(create, &name, &own);
        if self.reuse_or_clear(&successor, &own).await? {
            tracing::info!(target: APPLY_LOG_TARGET, "successor {name} of this spec already runs, healthy: handing over to it");
            self.self_update.tell(Handoff::Ready {
                container: create.name.clone(),
                successor: name,
            });
            return Ok(());
        }
        let limit = bound(check.as_ref());
        tracing::info!(
            target: APPLY_LOG_TARGET,
            "creating successor {name} for Container/{}; waiting up to {}s for it to turn healthy",
            create.name,
            limit.as_secs()
        );
        let started = async {
            let successor = self.without_held_ports(successor, &own).await?;
            self.create_container(&successor).await?;
            self.client.start(&name).await?;
            self.wait_healthy(&name, check.is_some(), limit)
                .await
                .map_err(StepError::permanent)
        };
        match started.await {
            Ok(()) => {
                tracing::info!(target: APPLY_LOG_TARGET, "successor {name} is healthy: handing over to it");
                self.self_update.tell(Handoff::Ready {
                    container: create.name.clone(),
                    successor: name,
                });
                Ok(())
            }
            Err(e) => {
                // Rolled back: this daemon keeps the lease and carries on.
                if let Err(e) = self.client.remove(&name).await {
                    tracing::warn!(target: APPLY_LOG_TARGET, error = %e, "removing the failed successor {name} failed; the next handoff replaces it");
                }
                self.self_update.tell(Handoff::Failed {
                    container: create.name.clone(),
                    why: e.message.clone(),
                });
                Err(StepError::permanent(format!(
                    "self-update of Container/{} failed, its successor was removed and this daemon carries on: {}",
                    create.name, e.message
                )))
            }
        }
    }

    /// The successor without the host ports this container publishes: the engine gives a
    /// host port to one container at a time, so a successor asking for the same one would
    /// never start. It takes them in a second handoff, once it runs under the declared name
    /// and its own successor is created (its predecessor, holding none, then frees nothing
    /// it needs).
    async fn without_held_ports(
        &self,
        mut successor: ContainerCreate,
        own: &str,
    ) -> Result<ContainerCreate, StepError> {
        let held: Vec<(String, String)> = self
            .client
            .inspect_raw(own)
            .await?
            .and_then(|c| c.host_config?.port_bindings)
            .unwrap_or_default()
            .into_values()
            .flatten()
            .flatten()
            .map(|b| {
                (
                    b.host_ip.unwrap_or_default(),
                    b.host_port.unwrap_or_default(),
                )
            })
            .collect();
        if held.is_empty() {
            return Ok(successor);
        }
        if drop_held_ports(&mut successor.body, &held) {
            tracing::info!(target: APPLY_LOG_TARGET, "the successor publishes no port this container holds; it takes them in a second handoff");
        }
        Ok(successor)
    }

    async fn run_prepare(&self, op: &HostOp) -> Result<(), StepError> {
        match op {
            HostOp::EnsureImage { image, present } => self.ensure_image(image, *present).await,
            HostOp::EnsureNetwork { network, labels } => self.ensure_network(network, labels).await,
            _ => Ok(()),
        }
    }

    /// True when a successor of this very spec already runs, healthy, for this container
    /// (a handoff begun by this daemon before it crashed): it is handed over to as it is.
    /// Anything else of this stack under the temporary name is removed first.
    async fn reuse_or_clear(
        &self,
        successor: &ContainerCreate,
        own: &str,
    ) -> Result<bool, StepError> {
        let Some(live) = self.client.inspect(&successor.name).await? else {
            return Ok(false);
        };
        if live.stack() != Some(successor.stack.as_str()) {
            return Err(StepError::permanent(format!(
                "the successor's name {} is held by a container this stack does not own; remove it by hand",
                successor.name
            )));
        }
        let hash = successor
            .body
            .labels
            .as_ref()
            .and_then(|l| l.get(HASH_LABEL));
        let same = live.labels.get(SUCCESSOR_LABEL).map(String::as_str) == Some(own)
            && live.labels.get(HASH_LABEL) == hash
            && live.is_running()
            && matches!(live.health.as_deref(), None | Some("healthy"));
        if same {
            return Ok(true);
        }
        tracing::info!(target: APPLY_LOG_TARGET, "removing the stale successor {} ({})", successor.name, short(&live.id));
        self.client.remove(&live.id).await?;
        Ok(false)
    }

    /// Waits until the engine reports the successor healthy (with a health check) or running
    /// steadily for the whole bound (without one). Docker's `unhealthy` ends the wait at
    /// once; a successor that exits may be restarted by its policy and still turn healthy
    /// within the bound.
    async fn wait_healthy(
        &self,
        name: &str,
        has_check: bool,
        limit: Duration,
    ) -> Result<(), String> {
        let started = Instant::now();
        let mut last;
        loop {
            match self.client.inspect(name).await {
                Ok(None) => return Err(format!("successor {name} vanished while it started")),
                Ok(Some(live)) => {
                    match live.health.as_deref() {
                        Some("healthy") => return Ok(()),
                        Some("unhealthy") => {
                            return Err(format!(
                                "successor {name} is unhealthy: {}",
                                live.health_output.as_deref().unwrap_or("no output").trim()
                            ));
                        }
                        _ => {}
                    }
                    last = if live.is_running() {
                        match &live.health_output {
                            Some(out) if has_check => {
                                format!("its last probe said: {}", out.trim())
                            }
                            _ if has_check => "no probe has passed yet".to_string(),
                            _ => "running".to_string(),
                        }
                    } else {
                        let mut why =
                            format!("it is {} (exit code {})", live.status, live.exit_code);
                        if !live.error.is_empty() {
                            why.push_str(&format!(": {}", live.error));
                        }
                        why
                    };
                    if !has_check && !live.is_running() {
                        return Err(format!("successor {name} exited: {last}"));
                    }
                }
                Err(e) => last = e.to_string(),
            }
            if started.elapsed() >= limit {
                if !has_check && last == "running" {
                    return Ok(());
                }
                return Err(format!(
                    "successor {name} is not healthy after {}s: {last}",
                    limit.as_secs()
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Leaves out of `body` every published port bound to a (host address, host port) in
/// `held`; true when it left one out.
fn drop_held_ports(
    body: &mut bollard::models::ContainerCreateBody,
    held: &[(String, String)],
) -> bool {
    let Some(bindings) = body
        .host_config
        .as_mut()
        .and_then(|h| h.port_bindings.as_mut())
    else {
        return false;
    };
    let mut dropped = false;
    for list in bindings.values_mut().flatten() {
        let before = list.len();
        list.retain(|b| {
            let key = (
                b.host_ip.clone().unwrap_or_default(),
                b.host_port.clone().unwrap_or_default(),
            );
            !held.contains(&key)
        });
        dropped |= list.len() != before;
    }
    bindings.retain(|_, list| list.as_ref().is_some_and(|l| !l.is_empty()));
    dropped
}

/// The successor's create: the declared container's, under `name`, labelled with the id
/// of the container it replaces.
fn successor_of(create: &ContainerCreate, name: &str, own: &str) -> ContainerCreate {
    let mut successor = create.clone();
    successor.name = name.to_string();
    successor
        .body
        .labels
        .get_or_insert_with(Default::default)
        .insert(SUCCESSOR_LABEL.to_string(), own.to_string());
    successor
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(interval: u64, timeout: u64, retries: u32, start_period: u64) -> HealthCheck {
        HealthCheck {
            test: vec!["CMD".into(), "true".into()],
            interval: Duration::from_secs(interval),
            timeout: Duration::from_secs(timeout),
            retries,
            start_period: Duration::from_secs(start_period),
        }
    }

    #[test]
    fn the_bound_is_the_start_period_and_every_probe_it_may_fail_plus_one() {
        // 10 s + (15 s + 3 s) × 4.
        assert_eq!(bound(Some(&check(15, 3, 3, 10))), Duration::from_secs(82));
    }

    #[test]
    fn the_bound_has_a_floor_and_a_cap() {
        assert_eq!(bound(Some(&check(1, 1, 1, 0))), BOUND_FLOOR);
        assert_eq!(bound(Some(&check(120, 30, 5, 60))), BOUND_CAP);
        assert_eq!(bound(None), BOUND_FLOOR);
    }

    #[test]
    fn a_successor_leaves_out_the_host_ports_its_predecessor_holds() {
        use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
        let bind = |ip: &str, port: &str| PortBinding {
            host_ip: Some(ip.into()),
            host_port: Some(port.into()),
        };
        let mut body = ContainerCreateBody {
            host_config: Some(HostConfig {
                port_bindings: Some(
                    [
                        (
                            "9464/tcp".to_string(),
                            Some(vec![bind("127.0.0.1", "9464")]),
                        ),
                        (
                            "9465/tcp".to_string(),
                            Some(vec![bind("127.0.0.1", "9465")]),
                        ),
                    ]
                    .into(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        let held = [("127.0.0.1".to_string(), "9464".to_string())];
        assert!(drop_held_ports(&mut body, &held));
        let left = body
            .host_config
            .and_then(|h| h.port_bindings)
            .unwrap_or_default();
        assert_eq!(left.keys().collect::<Vec<_>>(), ["9465/tcp"]);
        // Nothing held: nothing left out.
        let mut none = ContainerCreateBody::default();
        assert!(!drop_held_ports(&mut none, &held));
    }

    #[test]
    fn a_successor_is_the_declared_create_renamed_and_labelled_with_its_predecessor() {
        let create = ContainerCreate {
            name: "stackwarden".into(),
            body: Default::default(),
            host_dirs: vec![],
            mounted_files: vec![],
            sources: Default::default(),
            expected: Box::default(),
            image: None,
            stack: "s".into(),
        };
        let s = successor_of(&create, &successor_name("stackwarden"), "abc");
        assert_eq!(s.name, "stackwarden-next");
        assert_eq!(
            s.body.labels.as_ref().and_then(|l| l.get(SUCCESSOR_LABEL)),
            Some(&"abc".to_string())
        );
    }
}
