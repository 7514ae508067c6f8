//! The loop itself: waits for a trigger (a manifest edit, the resync timer, a Docker event,
//! `POST /reconcile`, a backoff expiring, background writes finishing, the lease tick),
//! coalesces whatever else arrived, and runs one pass; at shutdown, gives the pass in flight
//! and the background writes their grace, flushes the alerts and releases the lease.

use super::backoff::Backoff;
use super::detach::{Detached, Work};
use super::{ALERT_FLUSH, Controller, PASS_DEADLINE, RESYNC_JITTER, SHUTDOWN_GRACE, follow};
use crate::model::{Kind, ResourceId};
use crate::plan::World;
use crate::provider::host::events::HostEvent;
use crate::status::{LeaseStatus, Trigger};
use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

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
        // A source is polled on its own timer: a new revision wakes a pass, anything else
        // (nothing new, a refusal, an outage) only shows in the status.
        let mut source_at = tokio::time::Instant::now();
        if self.follow.is_some() {
            self.follow_source().await;
        }
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
                        _ = async { match &self.follow { Some(_) => tokio::time::sleep_until(source_at).await, None => std::future::pending().await } } => {
                            source_at = tokio::time::Instant::now()
                                + self.follow.as_ref().map_or(Duration::MAX, |f| f.interval());
                            if !self.poll_source().await {
                                continue;
                            }
                            Trigger::Manifest
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
            self.write_snapshot().await;
            // A Docker-triggered pass looks at the containers alone: it must not push back
            // the resync, the one pass that looks at AWS (a container dying every few
            // seconds would otherwise hide AWS drift for as long as it keeps dying).
            if trigger == Trigger::Docker {
                continue;
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
    pub(super) fn fold_detached(
        &mut self,
        done: Result<Work, tokio::task::JoinError>,
        d: Detached,
    ) -> bool {
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

    pub(super) async fn shutdown(&mut self) {
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

    /// Points the loader at the source's revision in force, if there is one yet.
    async fn follow_source(&mut self) -> bool {
        let Some(follow) = self.follow.as_mut() else {
            return false;
        };
        follow.open(self.connect.as_ref()).await;
        match follow.in_force() {
            Some((manifests, root)) => {
                self.opts.manifests = manifests;
                self.opts.root = Some(root);
                true
            }
            None => false,
        }
    }

    /// Polls the source once; true when a new revision came into force (a pass is due).
    async fn poll_source(&mut self) -> bool {
        let Some(follow) = self.follow.as_mut() else {
            return false;
        };
        let stack = self.status.stack.clone().unwrap_or_default();
        let ctx = follow::AlertContext {
            stack: &stack,
            page: &self.opts.page_url,
        };
        let (updated, events) = follow
            .poll(self.connect.as_ref(), &ctx, self.clock.now())
            .await;
        // One conditional GET; a new revision costs its download besides.
        let calls = if updated { 2 } else { 1 };
        self.state.budget.spend("s3", calls, Instant::now());
        if !events.is_empty() {
            self.dispatcher.push(&events);
        }
        if updated {
            self.follow_source().await;
        }
        self.publish();
        updated
    }

    /// The leader's status snapshot into the bucket, when one is due.
    async fn write_snapshot(&mut self) {
        let leads = self.state.lease.role == crate::status::Role::Leader;
        let Some(follow) = self.follow.as_mut() else {
            return;
        };
        if !leads {
            return;
        }
        let eventful = self.status.last_pass.as_ref().is_some_and(|p| {
            p.result != crate::status::PassResult::Converged || p.drifts_found > 0
        });
        follow.write_snapshot(&self.status, eventful).await;
    }
}
