//! The daemon's status as data: what `/status` serves, the page renders and the metrics
//! count. Pure: the reconcile loop folds each pass into a [`Status`] with [`Status::record_pass`]
//! (clock passed in), and the HTTP side only reads snapshots. Nothing here performs I/O.
//!
//! Conditions follow Kubernetes: `Ready`, `Synced` and `Drifted` per resource, each with
//! status, a CamelCase reason, a message and the time it last changed status.

mod audit;
mod metrics;

pub use audit::{AuditEntry, AuditLog};
pub use metrics::Metrics;
// Kept here too: the page and the audit describe drift the way alerts do.
pub use crate::plan::{describe_drift, describe_field};

use crate::model::{Desired, Mode, ResourceId};
use crate::plan::{Action, Change, ConditionStatus, Plan, Violation, World};
use crate::provider::StepOutcome;
use serde::{Serialize, Serializer};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// The schema version of `/status` (bumped on an incompatible change).
pub const SCHEMA_VERSION: u32 = 1;
/// Passes kept for the page's timeline: an hour at the shortest resync, bounded.
pub const PASS_HISTORY: usize = 720;

/// A point in time, serialized as RFC 3339 (UTC, seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub SystemTime);

impl Timestamp {
    /// Seconds since the Unix epoch (metrics).
    pub fn unix_seconds(self) -> f64 {
        self.0
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", humantime::format_rfc3339_seconds(self.0))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What woke a pass. Passes are level-triggered: the trigger only says when, never what.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// The daemon started.
    Startup,
    /// A manifest or content file changed.
    Manifest,
    /// The resync timer.
    Resync,
    /// A Docker event about one of the stack's containers.
    Docker,
    /// `POST /reconcile`.
    Http,
    /// A resource's backoff expired.
    Retry,
}

impl Trigger {
    /// The label value used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Startup => "startup",
            Trigger::Manifest => "manifest",
            Trigger::Resync => "resync",
            Trigger::Docker => "docker",
            Trigger::Http => "http",
            Trigger::Retry => "retry",
        }
    }
}

/// How a pass ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PassResult {
    /// Live state matches the manifests (verified by a second observe after any write).
    Converged,
    /// Drift remains that this pass did not repair (observe mode, backoff, standby).
    Drifted,
    /// A provider could not observe or a write failed.
    Failed,
}

impl PassResult {
    /// The label value used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            PassResult::Converged => "converged",
            PassResult::Drifted => "drifted",
            PassResult::Failed => "failed",
        }
    }
}

/// The stack as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Phase {
    /// No pass has finished yet.
    Starting,
    /// Every resource is ready and in sync.
    Ready,
    /// Something drifted, is not ready, or failed.
    Degraded,
    /// Another daemon holds the stack's lease; this one only watches.
    Standby,
}

/// Calls one pass made to one service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ServiceCalls {
    /// Read calls.
    pub reads: u64,
    /// Write calls.
    pub writes: u64,
}

/// One finished pass.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PassSummary {
    /// When it started.
    pub started: Timestamp,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// What woke it.
    pub trigger: Trigger,
    /// How it ended.
    pub result: PassResult,
    /// API calls by service.
    pub api_calls: BTreeMap<String, ServiceCalls>,
    /// Write calls in all.
    pub writes: u64,
    /// Resources found drifted at the start of the pass.
    pub drifts_found: usize,
    /// Changes applied successfully.
    pub repairs: usize,
}

/// One condition of one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceCondition {
    /// `Ready`, `Synced` or `Drifted`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// CamelCase reason.
    pub reason: String,
    /// A sentence for people.
    pub message: String,
    /// When `status` last changed.
    pub last_transition_time: Timestamp,
}

/// One declared (or formerly declared) resource.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    /// Kind, as in manifests.
    pub kind: String,
    /// `metadata.name`.
    pub name: String,
    /// Effective mode.
    pub mode: Mode,
    /// `Ready`, `Synced`, `Drifted`.
    pub conditions: Vec<ResourceCondition>,
    /// The change that would bring it back (fields before → after; secrets only "differs").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<Change>,
    /// Since when it has been drifted, continuously.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drifted_since: Option<Timestamp>,
    /// Live policy violations on it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<Violation>,
    /// The last write that failed, if the latest attempt failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The last error's class (`transient`: retried with backoff; `permanent`: waits for
    /// the next resync or a manifest change; `notfound`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error_class: Option<crate::provider::ErrorClass>,
    /// No write is attempted on it before this time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff_until: Option<Timestamp>,
}

impl ResourceStatus {
    /// The condition of this type, if any.
    pub fn condition(&self, kind: &str) -> Option<&ResourceCondition> {
        self.conditions.iter().find(|c| c.kind == kind)
    }
}

/// The manifests: what is in force, and what was rejected.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestStatus {
    /// Content hash of the desired state in force (`sha256:…`), once one loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// When it came into force.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<Timestamp>,
    /// The newest edit that failed to load; the revision above stays in force.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected: Option<Rejected>,
}

/// A manifest edit that did not load.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejected {
    /// Hash of the error report (identifies the broken revision).
    pub revision: String,
    /// When it was seen.
    pub at: Timestamp,
    /// Every problem, located, with its fix.
    pub errors: Vec<String>,
}

/// Whether the worlds the daemon talks to answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Connectivity {
    /// AWS: `None` when not in scope.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws: Option<Reach>,
    /// Docker: `None` when not in scope.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker: Option<Reach>,
}

/// One world's reachability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reach {
    /// It answered the last time it was asked.
    pub reachable: bool,
    /// Why not, for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// This daemon's part in acting on the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// It holds the lease (or needs none: a host-only daemon) and writes.
    Leader,
    /// Another actor holds the lease, or who holds it is unknown: it observes only.
    Standby,
    /// No lease is possible or needed yet (the bucket does not exist; a mode that writes
    /// nothing).
    #[default]
    None,
}

impl Role {
    /// The name `/status`, the page and the logs use.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Standby => "standby",
            Role::None => "none",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who acts on the stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseStatus {
    /// This daemon's role.
    pub role: Role,
    /// Who holds it (`host:pid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    /// When the holder's lease runs out unless renewed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<Timestamp>,
}

impl Default for LeaseStatus {
    fn default() -> Self {
        LeaseStatus {
            role: Role::None,
            holder: None,
            expires: None,
        }
    }
}

/// Everything `/status` serves.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The Stack's name, once a manifest loaded.
    pub stack: Option<String>,
    /// The environment.
    pub environment: Option<String>,
    /// Overall phase.
    pub phase: Phase,
    /// Stack-wide mode in force.
    pub mode: Option<Mode>,
    /// The manifests in force and any rejected edit.
    pub manifest: ManifestStatus,
    /// Where the manifests come from when they are delivered (`run --source s3://…`): the
    /// revision in force, who published it, the last check and any refusal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<crate::source::fetch::SourceStatus>,
    /// The lease.
    pub lease: LeaseStatus,
    /// AWS and Docker reachability.
    pub connectivity: Connectivity,
    /// The last finished pass.
    pub last_pass: Option<PassSummary>,
    /// When a pass last converged.
    pub last_success: Option<Timestamp>,
    /// Per resource.
    pub resources: Vec<ResourceStatus>,
    /// Live policy violations, all resources.
    pub violations: Vec<Violation>,
    /// Errors of the last pass that belong to no single resource (a provider that could not
    /// observe), as sentences: `problems` in words.
    pub errors: Vec<String>,
    /// The same, typed: what the next pass keeps (a host-only pass keeps AWS's).
    #[serde(skip)]
    pub problems: Vec<crate::plan::Problem>,
    /// Recent writes, newest last.
    pub audit: Vec<AuditEntry>,
    /// Recent passes, for the timeline (oldest first).
    pub passes: Vec<PassSummary>,
    /// Alerts firing and their delivery.
    pub alerts: AlertsStatus,
    /// The acknowledgements declared, and whether each is in force.
    pub acknowledgements: Vec<AcknowledgementStatus>,
    /// Violations standing that no acknowledgement covers: while any does, the stack is not
    /// Ready. Derived from `violations` when a pass is recorded.
    #[serde(skip)]
    pub unacknowledged_violations: usize,
}

/// The alerts side of `/status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertsStatus {
    /// Alerts firing now.
    pub active: Vec<crate::alerts::Alert>,
    /// Each receiver's delivery state.
    pub receivers: Vec<crate::alerts::deliver::ReceiverStatus>,
    /// Receivers that could not be started (a signing key that cannot be read).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// One declared acknowledgement.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AcknowledgementStatus {
    /// `Kind/name`.
    pub resource: String,
    /// Fields covered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// Rule covered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Why.
    pub reason: String,
    /// Until when.
    pub expires: Option<String>,
    /// True until it expires: no repair and no alert for what it covers.
    pub active: bool,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            schema_version: SCHEMA_VERSION,
            stack: None,
            environment: None,
            phase: Phase::Starting,
            mode: None,
            manifest: ManifestStatus::default(),
            source: None,
            lease: LeaseStatus::default(),
            connectivity: Connectivity::default(),
            last_pass: None,
            last_success: None,
            resources: Vec::new(),
            violations: Vec::new(),
            errors: Vec::new(),
            problems: Vec::new(),
            audit: Vec::new(),
            passes: Vec::new(),
            alerts: AlertsStatus::default(),
            acknowledgements: Vec::new(),
            unacknowledged_violations: 0,
        }
    }
}

/// What one pass observed and did, as the loop hands it to [`Status::record_pass`].
#[derive(Clone)]
pub struct PassRecord<'a> {
    /// The desired state the pass ran against.
    pub desired: &'a Desired,
    /// The plan observed at the start of the pass.
    pub before: &'a Plan,
    /// The plan observed after the writes (equal to `before` when nothing was written).
    pub after: &'a Plan,
    /// Outcomes of the writes.
    pub outcomes: &'a [StepOutcome],
    /// Resources held back by backoff, with when their backoff ends.
    pub backoff: &'a BTreeMap<ResourceId, SystemTime>,
    /// The pass's summary.
    pub summary: PassSummary,
    /// Which kinds the pass covered (the rest are out of the daemon's scope and not shown).
    pub covers: &'a dyn Fn(crate::model::Kind) -> bool,
    /// Why a kind's world could not be observed this pass, if it could not: its resources
    /// are `Unknown` and carry that error instead of claiming what was last seen.
    pub unobserved: &'a dyn Fn(crate::model::Kind) -> Option<String>,
    /// Kinds this pass did not look at (a Docker event wakes a host-only pass): their last
    /// status, violations and errors stay as they were.
    pub kept: &'a dyn Fn(crate::plan::World) -> bool,
    /// Resources a write is still working on (in the background, after its pass).
    pub applying: &'a std::collections::BTreeSet<ResourceId>,
}

impl Status {
    /// Folds a finished pass into the status: conditions keep their transition times unless
    /// their status changes; `driftedSince` holds while a resource stays drifted.
    pub fn record_pass(&mut self, pass: PassRecord<'_>, now: SystemTime) {
        let now_ts = Timestamp(now);
        let previous: BTreeMap<String, ResourceStatus> = std::mem::take(&mut self.resources)
            .into_iter()
            .map(|r| (format!("{}/{}", r.kind, r.name), r))
            .collect();
        let failed: BTreeMap<String, (&str, Option<crate::provider::ErrorClass>)> = pass
            .outcomes
            .iter()
            .filter_map(|o| {
                o.error
                    .as_deref()
                    .map(|e| (o.change.id.to_string(), (e, o.class)))
            })
            .collect();
        let drift_of = |id: &str| pass.after.changes.iter().find(|c| c.id.to_string() == id);
        let mut ids: Vec<(ResourceId, Mode)> = pass
            .desired
            .resources
            .iter()
            .filter(|r| (pass.covers)(r.id.kind) && !(pass.kept)(World::of(r.id.kind)))
            .map(|r| (r.id.clone(), pass.desired.effective_mode(r)))
            .collect();
        // Undeclared resources still present (to delete) show until they are gone.
        for c in &pass.after.changes {
            if !ids.iter().any(|(i, _)| *i == c.id) {
                ids.push((c.id.clone(), c.mode));
            }
        }
        for (rid, mode) in ids {
            let (id, kind, name) = (rid.to_string(), rid.kind.to_string(), rid.name.clone());
            let prev = previous.get(&id);
            let drift = drift_of(&id).cloned();
            let ready = pass
                .after
                .conditions
                .iter()
                .find(|c| c.id.to_string() == id && c.kind == "Ready");
            // Unknown: the resource's own read failed, or its whole world could not be read.
            let own = pass
                .after
                .unobserved
                .iter()
                .find(|u| u.id.to_string() == id);
            let unobserved = own
                .map(|u| u.error.clone())
                .or_else(|| (pass.unobserved)(rid.kind));
            let (ready_status, ready_reason, ready_message) = match (ready, &drift) {
                // Its world could not be observed this pass: nothing is known of it.
                _ if unobserved.is_some() => (
                    ConditionStatus::Unknown,
                    "ObserveFailed".to_string(),
                    unobserved.clone().unwrap_or_default(),
                ),
                (Some(c), _) => (c.status, c.reason.clone(), c.message.clone()),
                (None, Some(d)) if d.action == Action::Create => (
                    ConditionStatus::False,
                    "Missing".to_string(),
                    "does not exist yet".to_string(),
                ),
                (None, _) => (
                    ConditionStatus::True,
                    "Observed".to_string(),
                    "exists as observed".to_string(),
                ),
            };
            // A write that failed holds its resource back (backoff) while it still differs:
            // the passes in between attempt nothing on it, and its error is still the reason
            // it is not synced, so it stays shown until the next attempt.
            let held = prev
                .filter(|_| drift.is_some() && pass.backoff.contains_key(&rid))
                .and_then(|p| p.last_error.clone().map(|e| (e, p.last_error_class)));
            let error = failed
                .get(&id)
                .map(|(e, _)| e.to_string())
                .or_else(|| unobserved.clone())
                .or_else(|| held.as_ref().map(|(e, _)| e.clone()));
            let error_class = failed
                .get(&id)
                .and_then(|(_, c)| *c)
                .or_else(|| own.map(|u| u.class))
                .or_else(|| {
                    unobserved
                        .as_ref()
                        .map(|_| crate::provider::ErrorClass::Transient)
                })
                .or_else(|| held.and_then(|(_, c)| c));
            let backoff_until = pass.backoff.get(&rid).copied().map(Timestamp);
            // Something that is not ours holds it: it cannot be written until a person acts,
            // and what runs under its name is not what the manifest declares.
            let blocked = pass.after.blocks().find(|b| b.id.to_string() == id);
            let (synced_status, synced_reason, synced_message) = match (&error, &drift) {
                // Denied, whether reading or writing it: a person must grant the action
                // the message names; nothing is retried before the next resync.
                (Some(e), _)
                    if error_class == Some(crate::provider::ErrorClass::PermissionDenied) =>
                {
                    (ConditionStatus::False, "PermissionDenied", e.clone())
                }
                (Some(e), _) if unobserved.is_some() => {
                    (ConditionStatus::Unknown, "ObserveFailed", e.clone())
                }
                _ if blocked.is_some() => (
                    ConditionStatus::False,
                    blocked.map_or("Blocked", |b| b.reason.as_str()),
                    blocked.map(|b| b.message.clone()).unwrap_or_default(),
                ),
                (Some(e), _) => (ConditionStatus::False, "ApplyFailed", e.clone()),
                // Its write goes on after the pass (a slow start waiting on its health
                // check): not synced until that write ends and a pass has looked again.
                (None, _) if pass.applying.contains(&rid) => (
                    ConditionStatus::False,
                    "Applying",
                    "a write is in progress".to_string(),
                ),
                (None, Some(_)) if !mode.repairs() => (
                    ConditionStatus::False,
                    if mode == Mode::Warn {
                        "WarnOnly"
                    } else {
                        "ObserveOnly"
                    },
                    format!("drift is reported, never repaired (mode {mode})"),
                ),

                (None, Some(_)) if backoff_until.is_some() => (
                    ConditionStatus::False,
                    "BackingOff",
                    "a recent write failed; retrying after the backoff".to_string(),
                ),
                (None, Some(_)) => (
                    ConditionStatus::False,
                    "Pending",
                    "changes are pending".to_string(),
                ),
                (None, None) => (
                    ConditionStatus::True,
                    "InSync",
                    "live state matches the manifest".to_string(),
                ),
            };
            let drifted = drift.is_some() || blocked.is_some();
            let drifted_message = match (&drift, blocked) {
                (Some(d), _) => describe_drift(d),
                (None, Some(b)) => b.message.clone(),
                (None, None) => "no drift".to_string(),
            };
            let conditions = vec![
                transition(
                    prev,
                    "Ready",
                    ready_status,
                    ready_reason,
                    ready_message,
                    now_ts,
                ),
                transition(
                    prev,
                    "Synced",
                    synced_status,
                    synced_reason.to_string(),
                    synced_message,
                    now_ts,
                ),
                transition(
                    prev,
                    "Drifted",
                    if drifted {
                        ConditionStatus::True
                    } else {
                        ConditionStatus::False
                    },
                    match (drifted, blocked) {
                        (true, Some(b)) => b.reason.as_str(),
                        (true, None) => "Differs",
                        (false, _) => "Matches",
                    }
                    .to_string(),
                    drifted_message,
                    now_ts,
                ),
            ];
            let drifted_since = if drifted {
                prev.and_then(|p| p.drifted_since).or(Some(now_ts))
            } else {
                None
            };
            let violations = pass
                .after
                .violations
                .iter()
                .filter(|v| v.resource == id)
                .cloned()
                .collect();
            self.resources.push(ResourceStatus {
                kind,
                name,
                mode,
                conditions,
                drift,
                drifted_since,
                violations,
                last_error: error,
                last_error_class: error_class,
                backoff_until,
            });
        }
        self.stack = Some(pass.desired.stack_name.clone());
        self.environment = Some(pass.desired.environment.clone());
        self.mode = Some(pass.desired.stack.mode);
        // Kinds this pass did not look at keep their last status, in declaration order.
        let mut fresh: BTreeMap<String, ResourceStatus> = std::mem::take(&mut self.resources)
            .into_iter()
            .map(|r| (format!("{}/{}", r.kind, r.name), r))
            .collect();
        let mut ordered = Vec::with_capacity(fresh.len());
        for r in &pass.desired.resources {
            let id = r.id.to_string();
            if let Some(f) = fresh.remove(&id) {
                ordered.push(f);
            } else if (pass.covers)(r.id.kind)
                && (pass.kept)(World::of(r.id.kind))
                && let Some(p) = previous.get(&id)
            {
                ordered.push(p.clone());
            }
        }
        ordered.extend(fresh.into_values());
        self.resources = ordered;
        let kept_violations: Vec<Violation> = std::mem::take(&mut self.violations)
            .into_iter()
            .filter(|v| v.world.is_some_and(|w| (pass.kept)(w)))
            .collect();
        self.violations = kept_violations;
        self.violations
            .extend(pass.after.violations.iter().cloned());
        self.unacknowledged_violations = self
            .violations
            .iter()
            .filter(|v| {
                pass.desired
                    .acknowledged_rule(&v.resource, v.rule, now)
                    .is_none()
            })
            .count();
        // A pass that did not look at AWS (a Docker-triggered one) keeps what it knew there.
        self.problems
            .retain(|p| p.world().is_some_and(|w| (pass.kept)(w)));
        self.problems.extend(pass.after.problems.iter().cloned());
        self.errors = self.problems.iter().map(ToString::to_string).collect();
        if pass.summary.result == PassResult::Converged {
            self.last_success = Some(now_ts);
        }
        self.passes.push(pass.summary.clone());
        if self.passes.len() > PASS_HISTORY {
            let excess = self.passes.len() - PASS_HISTORY;
            self.passes.drain(..excess);
        }
        self.last_pass = Some(pass.summary);
        self.phase = self.derive_phase();
    }

    /// The phase implied by the resources and the lease.
    pub fn derive_phase(&self) -> Phase {
        if self.lease.role == Role::Standby {
            return Phase::Standby;
        }
        if self.last_pass.is_none() {
            return Phase::Starting;
        }
        // A rejected manifest edit means the stack runs a revision nobody intends any more,
        // and a standing violation is a weak point live: neither is Ready.
        // A refused or expired revision from the source likewise: what runs is not what
        // was last published.
        let source_ok = self
            .source
            .as_ref()
            .is_none_or(|s| s.rejected.is_none() && !s.stale);
        let healthy = self.errors.is_empty()
            && source_ok
            && self.manifest.rejected.is_none()
            && self.unacknowledged_violations == 0
            && self.resources.iter().all(|r| {
                // Unknown (a world that cannot tell, like SSM reachability in moto) is not
                // a failure; only a Ready=False, a Synced=False or a drift is.
                ["Ready", "Synced"].iter().all(|kind| {
                    r.condition(kind)
                        .is_none_or(|c| c.status != ConditionStatus::False)
                }) && r.drift.is_none()
            });
        if healthy {
            Phase::Ready
        } else {
            Phase::Degraded
        }
    }

    /// Resources that are drifted now.
    pub fn drifted(&self) -> impl Iterator<Item = &ResourceStatus> {
        self.resources.iter().filter(|r| r.drift.is_some())
    }

    /// Passes that started within `window` of `now` (the page's timeline).
    pub fn passes_within(&self, now: SystemTime, window: Duration) -> Vec<&PassSummary> {
        self.passes
            .iter()
            .filter(|p| {
                now.duration_since(p.started.0)
                    .map(|age| age <= window)
                    .unwrap_or(true)
            })
            .collect()
    }
}

fn transition(
    prev: Option<&ResourceStatus>,
    kind: &'static str,
    status: ConditionStatus,
    reason: String,
    message: String,
    now: Timestamp,
) -> ResourceCondition {
    let last_transition_time = prev
        .and_then(|p| p.condition(kind))
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time)
        .unwrap_or(now);
    ResourceCondition {
        kind,
        status,
        reason,
        message,
        last_transition_time,
    }
}

#[cfg(test)]
mod tests;
