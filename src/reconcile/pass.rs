//! One level-triggered pass, the effects in order: load the manifests, connect, resolve the
//! account, decide who writes, plan and apply (letting slow writes go on in the background),
//! attribute causes, record outcomes and backoff, publish the status and raise alerts. The
//! decisions it takes on the way are the pure functions of `decide`.

use super::decide::{self, Acting};
use super::detach::{Claims, Detached, Work};
use super::{
    Controller, DETACH_AFTER, PASS_DEADLINE, RESYNC_JITTER, lease, state, triggers, worlds,
};
use crate::alerts;
use crate::engine::{ApplyReport, Engine};
use crate::manifest;
use crate::model::{Desired, Kind, ResourceId};
use crate::plan::{Cause, Change, Plan, Problem, ProviderFailure, World};
use crate::provider::{CallKind, DynProvider, ErrorClass, OpenGate, WriteGate};
use crate::status::{
    AuditEntry, LeaseStatus, PassRecord, PassSummary, Rejected, ServiceCalls, Timestamp, Trigger,
};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// The worlds a pass plans in, and what keeps it from the whole truth.
struct Reached {
    providers: Vec<Arc<dyn DynProvider>>,
    problems: Vec<Problem>,
    /// A Docker-triggered pass: it looks at the host alone (`decide::host_only`).
    host_only: bool,
    aws_up: bool,
}

/// What a pass's work left: the plan and outcomes, the plan re-observed after the writes,
/// and what kept the pass from finishing.
struct Worked {
    report: ApplyReport,
    after: Plan,
    problems: Vec<Problem>,
}
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// `sha256:<hex>` of a serializable value.
fn content_hash<T: serde::Serialize>(value: &T) -> String {
    use sha2::Digest;
    let json = serde_json::to_vec(value).unwrap_or_default();
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(&json)))
}

/// The directories holding each symbolic link on the way to `path` (the link itself, or one
/// of its ancestors).
fn links_on_the_way(path: &Path) -> BTreeSet<PathBuf> {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    absolute
        .ancestors()
        .filter(|p| {
            p.symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink())
        })
        .filter_map(|link| link.parent())
        .filter_map(|dir| std::fs::canonicalize(dir).ok())
        .collect()
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

/// Caps the mode of every resource of `world` at `cap`: a daemon that must not write a world
/// (the host's, for AWS: its role holds no AWS write) still observes it, reports its drift on
/// the resource and, from `warn`, alerts; it never plans a write it would be denied.
pub(super) fn cap_world(desired: &mut Desired, world: World, cap: crate::model::Mode) {
    for r in &mut desired.resources {
        if World::of(r.id.kind) == world {
            r.mode = r.mode.min(cap);
        }
    }
}

impl Controller {
    /// Loads the manifests; an invalid edit is recorded and the last good state stays.
    pub(super) fn load(&mut self) {
        if self.follow.as_ref().is_some_and(|f| f.in_force().is_none()) {
            // Nothing published has been taken yet: there is nothing to load.
            return;
        }
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
                }
                // Every load, not only a new revision's: the manifests path may now resolve
                // elsewhere (a symlink swapped to identical content).
                self.watch(&loaded.desired);
                if let Ok(mut names) = self.watched_names.write() {
                    *names = loaded
                        .desired
                        .containers()
                        .map(|(r, _)| r.id.name.clone())
                        .collect();
                }
                let mut desired = loaded.desired;
                if let Some(cap) = self.opts.aws_mode {
                    cap_world(&mut desired, World::Aws, cap);
                }
                self.state.desired = Some(desired);
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
    pub(super) fn watch(&mut self, desired: &Desired) {
        if self.follow.is_some() {
            // A followed source's revisions are swapped in whole, and polled: no watch.
            return;
        }
        let root = std::fs::canonicalize(&self.opts.manifests)
            .unwrap_or_else(|_| self.opts.manifests.clone());
        let mut dirs = content_dirs(desired);
        // A directory published by swapping a symlink (`ln -sfn new current`, as git-sync
        // and ConfigMap volumes do) changes where the path leads without a write inside the
        // old target: the directory holding each link on the way is watched too, and the
        // next load follows the path to its new target.
        dirs.extend(links_on_the_way(&self.opts.manifests));
        if let Some(current) = &self.files
            && current.dirs().contains(&root)
            && dirs
                .iter()
                .all(|d| current.dirs().contains(d) || d.starts_with(&root) || !d.is_dir())
        {
            return;
        }
        match triggers::watch_files(root, dirs, self.wake_tx.clone()) {
            Ok(w) => self.files = Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the manifests; relying on the resync timer")
            }
        }
    }

    /// Connects the worlds in scope that are not connected yet.
    pub(super) async fn connect(&mut self, desired: &Desired) {
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
                    self.self_update = world.self_update;
                    self.host = Some(world.provider);
                    self.state.reach.docker = Some(state::up());
                }
                Err(e) => self.state.reach.docker = Some(state::down(e.to_string())),
            }
        }
    }

    /// One level-triggered pass.
    #[tracing::instrument(name = "pass", skip(self), fields(trigger = trigger.as_str()))]
    pub(super) async fn pass(&mut self, trigger: Trigger) {
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
        self.stats.reset();
        // A handoff finished in the background since the last pass: hand over first.
        if self.settle_handoff().await {
            self.publish();
            return;
        }
        let reached = self.reach(&mut desired, trigger).await;
        let host_only = reached.host_only;
        let mut acting = self.who_writes(&desired, &reached).await;
        if acting == Acting::Full {
            self.take_over_if_successor(&desired).await;
            // The lease may have been found lost just now.
            if self.state.lease.role != crate::status::Role::Leader {
                acting = Acting::Standby;
            }
        }
        self.arm_handoff(acting);
        let Worked {
            mut report,
            mut after,
            problems,
        } = self.work(trigger, &desired, reached, acting).await;
        // The pass itself did not finish (deadline, panic): its empty plan says nothing, so
        // it may not resolve alerts. A blocked resource is not that: it is a finding.
        let pass_failed = problems
            .iter()
            .any(|p| matches!(p, Problem::Deadline(_) | Problem::Aborted(_)));
        after.problems.extend(problems);
        let looked_at = move |k: Kind| !host_only || k.on_host();
        self.attribute_causes(&desired, &mut report, &mut after, &looked_at);
        self.note_reachability(&after);
        let finished = self.clock.now();
        self.settle_backoff(&desired, trigger, &report, &after, finished);
        if acting == Acting::BucketOnly
            && !report.outcomes.is_empty()
            && report.outcomes.iter().all(|o| o.error.is_none())
        {
            // The bucket exists now: take the lease and do the rest at once.
            let _ = self.wake_tx.try_send(Trigger::Retry);
        }
        let summary = self.count_calls(started, t0, trigger, &report, &after);
        let applying = self.state.in_flight.ids();
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
            let host_seen = !pass_failed && unobserved(Kind::Container).is_none();
            self.resolve_self_update_if_clean(&after, host_seen);
        }
        self.publish();
        if !host_only {
            self.clear_stale_successor(&desired, &after, acting).await;
        }
        // The handoff, when its steps finished within this pass.
        self.settle_handoff().await;
    }

    /// Connects what is in scope, resolves `${account}`, and says which worlds this pass
    /// plans in and what keeps it from the whole truth.
    async fn reach(&mut self, desired: &mut Desired, trigger: Trigger) -> Reached {
        self.connect(desired).await;
        // What keeps this pass from the whole truth, besides what the plan itself finds.
        let mut problems: Vec<Problem> = Vec::new();
        if let Some(aws) = &self.aws {
            match aws.account.account_id().await {
                Ok(account) => {
                    manifest::fill_runtime(desired, &account);
                    self.ensure_lease(desired);
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
        Reached {
            providers,
            problems,
            host_only,
            aws_up,
        }
    }

    /// What this pass may write, by the mode and the lease (taking or renewing it when the
    /// rule in `decide::acting` asks).
    async fn who_writes(&mut self, desired: &Desired, reached: &Reached) -> Acting {
        let repairs = desired.stack.mode.repairs();
        if !repairs {
            // Observe and warn modes write nothing, the lease object included: no lease.
            self.state.lease = LeaseStatus::default();
        }
        match decide::acting(decide::LeaseFacts {
            repairs,
            host_only: reached.host_only,
            has_lease: self.lease.is_some(),
            holds_unexpired: self.state.holds_unexpired_lease(SystemTime::now()),
            aws_in_scope: self.opts.scope.aws(),
            aws_up: reached.aws_up,
        }) {
            decide::LeaseChoice::Decided(acting) => acting,
            decide::LeaseChoice::Ask => self.lease_step().await,
        }
    }

    /// Plans and applies what is not held back, in a task of its own: writes still going
    /// after [`DETACH_AFTER`] go on in the background (see `detach`), and this pass reports
    /// their plan.
    async fn work(
        &mut self,
        trigger: Trigger,
        desired: &Desired,
        reached: Reached,
        acting: Acting,
    ) -> Worked {
        let Reached {
            providers,
            mut problems,
            host_only,
            ..
        } = reached;
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
        let (report, after) = match finished_in_time {
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
        Worked {
            report,
            after,
            problems,
        }
    }

    /// Audits and counts the writes, and sets what waits: a failed write by its class, an
    /// unreadable resource likewise; whatever needs nothing any more is forgotten.
    fn settle_backoff(
        &mut self,
        desired: &Desired,
        trigger: Trigger,
        report: &ApplyReport,
        after: &Plan,
        finished: SystemTime,
    ) {
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
    }

    /// Counts this pass's API calls (against the budget and in the metrics) and sums it up.
    fn count_calls(
        &mut self,
        started: SystemTime,
        t0: Instant,
        trigger: Trigger,
        report: &ApplyReport,
        after: &Plan,
    ) -> PassSummary {
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
        summary
    }

    /// Audits each write, counts it, and sets its resource's backoff by the failure's class.
    pub(super) fn record_outcomes(
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

    /// Works out which alerts fire and resolve after this pass and hands them to the
    /// receivers (never waiting on them); then shows both in the status.
    pub(super) fn raise_alerts(
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
    pub(super) fn attribute_causes(
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
    pub(super) fn note_reachability(&mut self, plan: &Plan) {
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
