//! The loop's half of a self-update (the Docker half is `provider::host::handoff`): when
//! the host's apply reports a healthy successor of this daemon's own container, this
//! daemon gives up the lease at once (no TTL wait) and has the engine stop its container;
//! from then on it never asks for the lease again. A successor that holds the lease first
//! removes its predecessor and takes the declared name, before any other write. A failed
//! handoff raises `SelfUpdateFailed`, which resolves when a later handoff succeeds or the
//! declared spec matches the running container again. docs/daemon.md has the state machine.

use super::Controller;
use super::decide::Acting;
use super::lease::Confirmed;
use crate::alerts::{self, Alert, Event};
use crate::model::{Desired, Kind, ResourceId};
use crate::plan::Plan;
use crate::provider::host::handoff::{Handoff, TakeOver};
use std::time::SystemTime;
use tokio::task::JoinHandle;

/// What the loop remembers of a self-update.
#[derive(Debug, Default)]
pub(super) struct Handoffs {
    /// The lease was given up to a successor: this daemon never takes it again (unless
    /// stopping its container failed, when it contends again like any standby).
    pub(super) handing_off: bool,
    /// The engine stopping this container, under way.
    stopping: Option<JoinHandle<Result<(), String>>>,
    /// `SelfUpdateFailed`, while it fires.
    failed: Option<Alert>,
}

impl Handoffs {
    /// The alert firing, if any.
    pub(super) fn active(&self) -> impl Iterator<Item = &Alert> {
        self.failed.iter()
    }
}

impl Controller {
    /// Lets the host's apply hand this daemon's container over only while it holds a lease.
    pub(super) fn arm_handoff(&self, acting: Acting) {
        if let Some(su) = &self.self_update {
            su.arm(acting == Acting::Full && self.lease.is_some() && !self.handoff.handing_off);
        }
    }

    /// A daemon that just became the leader in a successor's container removes its
    /// predecessor and takes the declared name, before it writes anything else (a plan
    /// made first would start the stopped predecessor again). Checked against the lease
    /// object itself, like every write.
    pub(super) async fn take_over_if_successor(&mut self, desired: &Desired) {
        let (Some(su), Some(lease)) = (&self.self_update, &self.lease) else {
            return;
        };
        if su.own().is_none() {
            return;
        }
        if let Confirmed::Lost(why) = lease.confirm(SystemTime::now()).await {
            self.lease_lost(&why);
            return;
        }
        match su.take_over(&desired.stack_name).await {
            Ok(TakeOver::Renamed { name }) => {
                tracing::info!(container = %name, "this daemon now runs as the declared container");
            }
            Ok(TakeOver::NotASuccessor) => {}
            Err(e) => {
                tracing::warn!(error = %e, "taking over from the predecessor failed; the next pass tries again")
            }
        }
    }

    /// A leader whose own container needs nothing removes a successor left standing under
    /// the temporary name (see `SelfUpdate::clear_stale`).
    pub(super) async fn clear_stale_successor(
        &mut self,
        desired: &Desired,
        after: &Plan,
        acting: Acting,
    ) {
        let Some(su) = self.self_update.clone() else {
            return;
        };
        if acting != Acting::Full
            || self.lease.is_none()
            || self.handoff.handing_off
            || su.own().is_none()
            || after.is_incomplete()
        {
            return;
        }
        let busy: std::collections::BTreeSet<String> = after
            .changes
            .iter()
            .map(|c| &c.id)
            .chain(after.unobserved.iter().map(|u| &u.id))
            .chain(self.state.in_flight.ids().iter())
            .filter(|id| id.kind == Kind::Container)
            .map(|id| id.name.clone())
            .collect();
        if let Err(e) = su.clear_stale(&desired.stack_name, &busy).await {
            tracing::warn!(error = %e, "removing a stale successor failed; the next pass tries again");
        }
    }

    /// Acts on what the host's apply reported of a handoff: a healthy successor makes this
    /// daemon give up the lease and stop its container; a failed one raises the alert.
    /// True once this daemon has handed off (the pass writes nothing more).
    pub(super) async fn settle_handoff(&mut self) -> bool {
        if let Some(stopping) = &self.handoff.stopping
            && stopping.is_finished()
            && let Some(task) = self.handoff.stopping.take()
        {
            let failed = match task.await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(e) => Some(e.to_string()),
            };
            if let Some(e) = failed {
                // Still running: contend again. Whichever daemon wins finishes the handoff
                // (the successor takes over) or repeats it (this one hands over again).
                tracing::warn!(error = %e, "stopping this container failed; contending for the lease again");
                self.handoff.handing_off = false;
            }
        }
        let Some(su) = self.self_update.clone() else {
            return self.handoff.handing_off;
        };
        match su.take_news() {
            Some(Handoff::Ready {
                container,
                successor,
            }) => {
                let now = self.clock.now();
                self.resolve_self_update(&container, "the self-update completed", now);
                self.handoff.handing_off = true;
                su.arm(false);
                if let Some(lease) = &self.lease {
                    match lease.release().await {
                        Ok(()) => tracing::info!(%successor, "lease released to the successor"),
                        // It lapses at its expiry: the successor waits one TTL at most.
                        Err(e) => {
                            tracing::warn!(error = %e, %successor, "releasing the lease failed; it lapses at its expiry")
                        }
                    }
                }
                self.state.stand_by();
                self.publish();
                tracing::info!(%successor, "handing off: stopping this container");
                let stop = su.clone();
                self.handoff.stopping = Some(tokio::spawn(async move {
                    stop.stop_own().await.map_err(|e| e.to_string())
                }));
            }
            Some(Handoff::Failed { container, why }) => {
                let now = self.clock.now();
                self.fire_self_update(&container, &why, now);
            }
            None => {}
        }
        self.handoff.handing_off
    }

    /// Resolves `SelfUpdateFailed` once the plan holds no change of that container: the
    /// declared spec is what runs (changed back, or applied from outside).
    pub(super) fn resolve_self_update_if_clean(&mut self, after: &Plan, looked_at_host: bool) {
        let Some(alert) = &self.handoff.failed else {
            return;
        };
        let Some(name) = alert.labels.get("resource").cloned() else {
            return;
        };
        let id = ResourceId::new(Kind::Container, &name);
        let pending =
            after.changes.iter().any(|c| c.id == id) || after.unobserved.iter().any(|u| u.id == id);
        if looked_at_host && !pending && !after.is_incomplete() {
            let now = self.clock.now();
            self.resolve_self_update(&name, "the declared spec runs", now);
        }
    }

    fn fire_self_update(&mut self, container: &str, why: &str, now: SystemTime) {
        let stack = self.status.stack.clone().unwrap_or_default();
        let environment = self
            .state
            .desired
            .as_ref()
            .map(|d| d.environment.clone())
            .unwrap_or_default();
        let mut alert = alerts::self_update_alert(
            alerts::SelfUpdateAt {
                stack: &stack,
                environment: &environment,
                container,
                page: &self.opts.page_url,
            },
            why,
            now,
        );
        tracing::error!(container, reason = %why, "self-update failed: the successor was removed, this daemon carries on");
        if let Some(before) = &self.handoff.failed {
            if before.annotations == alert.annotations {
                return;
            }
            alert.starts_at = before.starts_at;
        }
        self.handoff.failed = Some(alert.clone());
        self.dispatcher.push(&[Event::Firing(alert)]);
        self.publish();
    }

    fn resolve_self_update(&mut self, container: &str, action: &str, now: SystemTime) {
        let firing = self
            .handoff
            .failed
            .as_ref()
            .is_some_and(|a| a.labels.get("resource").map(String::as_str) == Some(container));
        if !firing {
            return;
        }
        if let Some(mut alert) = self.handoff.failed.take() {
            alert.annotations.insert("action".into(), action.into());
            self.dispatcher.push(&[Event::Resolved(alert, now)]);
            self.publish();
        }
    }
}
