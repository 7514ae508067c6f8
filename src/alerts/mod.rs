//! Drift alerts people trust. After each pass, [`Book::pass`] works out, as data, which
//! alerts should be firing (one per drift, per policy violation, per resource whose repair
//! keeps failing) and which have ended; [`deliver`] sends those transitions to the Stack's
//! receivers without ever holding up a pass.
//!
//! One alert per drift, not one per pass: an alert is keyed by its fingerprint (stack,
//! kind, resource and the rule or set of fields), fires once when first seen, is kept alive
//! by the delivery side while it stands, and resolves when it is gone. A drift found and
//! repaired in the same pass still fires and then resolves, so people learn that someone
//! changed the stack.

pub mod deliver;
pub mod transport;

use crate::engine::acknowledged;
use crate::model::{Desired, Kind, Mode, ResourceId};
use crate::plan::{Blocked, Cause, Change, Plan, Violation};
use crate::provider::StepOutcome;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

/// Consecutive failed repairs of one resource after which `ReconcileFailing` fires.
pub const FAILING_AFTER: u32 = 3;

/// The alerts stackwarden raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum AlertName {
    /// Live state differs from the manifest.
    StackDrift,
    /// A live resource breaks a policy rule.
    PolicyViolation,
    /// A resource's repair keeps failing.
    ReconcileFailing,
    /// A container's health check keeps failing after restarts.
    ContainerUnhealthy,
    /// An alert receiver has failed every delivery for a while (sent to the others).
    AlertReceiverFailing,
    /// A published revision was refused (signature, digest, rollback, size, archive,
    /// manifests); the last good one stays in force.
    SourceRejected,
    /// The pointer in force has expired and nothing newer came: the last good revision is
    /// still applied, but nobody is publishing.
    SourceStale,
    /// The daemon's handoff to a successor of its own container failed: the successor did
    /// not turn healthy within its bound and was removed; the old daemon carries on.
    SelfUpdateFailed,
}

impl AlertName {
    /// Every alert stackwarden raises (docs/alerts.md catalogues each).
    pub const ALL: [AlertName; 8] = [
        AlertName::StackDrift,
        AlertName::PolicyViolation,
        AlertName::ReconcileFailing,
        AlertName::ContainerUnhealthy,
        AlertName::AlertReceiverFailing,
        AlertName::SourceRejected,
        AlertName::SourceStale,
        AlertName::SelfUpdateFailed,
    ];

    /// The `alertname` label.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertName::StackDrift => "StackDrift",
            AlertName::PolicyViolation => "PolicyViolation",
            AlertName::ReconcileFailing => "ReconcileFailing",
            AlertName::ContainerUnhealthy => "ContainerUnhealthy",
            AlertName::AlertReceiverFailing => "AlertReceiverFailing",
            AlertName::SourceRejected => "SourceRejected",
            AlertName::SourceStale => "SourceStale",
            AlertName::SelfUpdateFailed => "SelfUpdateFailed",
        }
    }

    /// The `severity` label.
    pub fn severity(self) -> &'static str {
        match self {
            AlertName::StackDrift | AlertName::SourceStale => "warning",
            AlertName::PolicyViolation | AlertName::ReconcileFailing => "critical",
            AlertName::ContainerUnhealthy | AlertName::AlertReceiverFailing => "critical",
            AlertName::SourceRejected | AlertName::SelfUpdateFailed => "critical",
        }
    }
}

/// One alert, in the shape every receiver is sent (Alertmanager's, give or take the names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// Stable identity: stack, kind, resource and the rule or the set of fields.
    pub fingerprint: String,
    /// The `alertname` label's value.
    pub name: AlertName,
    /// `alertname`, `stack`, `environment`, `kind`, `resource`, `severity`, `cause` (and
    /// `rule` for a violation).
    pub labels: BTreeMap<String, String>,
    /// `summary`, `differs` (before → after; a secret only "differs"), `action` (what was
    /// done) and `page` (the daemon's page).
    pub annotations: BTreeMap<String, String>,
    /// When it was first seen (RFC 3339, seconds).
    #[serde(serialize_with = "rfc3339_seconds")]
    pub starts_at: SystemTime,
}

fn rfc3339_seconds<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_seconds(*t))
}

/// What changed about an alert this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Newly firing.
    Firing(Alert),
    /// Ended at the given time (the alert as it was last seen, `action` updated).
    Resolved(Alert, SystemTime),
}

/// An alert that is firing, and which world it belongs to (a pass that did not look at a
/// world leaves its alerts alone).
#[derive(Debug, Clone)]
struct Active {
    alert: Alert,
    kind: Kind,
    /// Its resource (or the unmanaged container a violation names).
    id: ResourceId,
}

/// What one pass saw, as the alert book needs it.
pub struct PassView<'a> {
    /// The desired state in force.
    pub desired: &'a Desired,
    /// The plan before the pass's writes.
    pub before: &'a Plan,
    /// The plan after them (what still differs).
    pub after: &'a Plan,
    /// The writes' outcomes.
    pub outcomes: &'a [StepOutcome],
    /// Kinds the pass looked at.
    pub looked_at: &'a dyn Fn(Kind) -> bool,
    /// Consecutive failed repairs of a resource.
    pub failures: &'a dyn Fn(&ResourceId) -> u32,
    /// Consecutive restarts of a container for its failing health check.
    pub restarts: &'a dyn Fn(&ResourceId) -> u32,
    /// True for a resource a write is still working on: what a pass saw of it midway (a
    /// container between stop and start) is neither drift nor a repair.
    pub busy: &'a dyn Fn(&ResourceId) -> bool,
    /// Link to the daemon's page, for annotations.
    pub page: &'a str,
    /// Now.
    pub now: SystemTime,
}

/// The alerts firing now, and what is needed to tell the next pass's transitions.
#[derive(Debug, Default)]
pub struct Book {
    active: BTreeMap<String, Active>,
    /// Resources seen existing: a later `missing` is someone removing one (an alert), while
    /// the first converge of a new stack creates everything without alerting.
    present: BTreeSet<String>,
    /// The worlds (host or not) this book has seen a pass of.
    started: BTreeSet<bool>,
}

impl Book {
    /// The alerts firing now.
    pub fn active(&self) -> impl Iterator<Item = &Alert> {
        self.active.values().map(|a| &a.alert)
    }

    /// Folds one pass in and returns the transitions to deliver, firings first.
    pub fn pass(&mut self, v: &PassView<'_>) -> Vec<Event> {
        self.start(v);
        let seen = candidates(v, v.before, &self.present);
        let mut standing = candidates(v, v.after, &self.present);
        for (fp, (mut alert, kind)) in failing(v).into_iter().chain(unhealthy(v)) {
            let action = if alert.name == AlertName::ContainerUnhealthy {
                "restarted with backoff; still unhealthy"
            } else {
                "repair keeps failing"
            };
            alert.annotations.insert("action".into(), action.into());
            standing.insert(fp, (alert, kind));
        }
        let mut events = Vec::new();
        for (fp, (alert, kind)) in seen.iter().chain(standing.iter()) {
            if !self.active.contains_key(fp) {
                let mut alert = alert.clone();
                if let Some(action) = action_of(v, &alert, standing.contains_key(fp)) {
                    alert.annotations.insert("action".into(), action);
                }
                events.push(Event::Firing(alert.clone()));
                let id = ResourceId::new(
                    *kind,
                    alert.labels.get("resource").map_or("", String::as_str),
                );
                self.active.insert(
                    fp.clone(),
                    Active {
                        alert,
                        kind: *kind,
                        id,
                    },
                );
            }
        }
        // A resource that could not be read this pass keeps its alerts: unknown is not fixed.
        let unknown: BTreeSet<&ResourceId> = v.after.unobserved.iter().map(|u| &u.id).collect();
        let ended: Vec<String> = self
            .active
            .iter()
            .filter(|(fp, a)| {
                (v.looked_at)(a.kind)
                    && !standing.contains_key(*fp)
                    && !unknown.contains(&a.id)
                    && !(v.busy)(&a.id)
            })
            .map(|(fp, _)| fp.clone())
            .collect();
        for fp in ended {
            if let Some(a) = self.active.remove(&fp) {
                let mut alert = a.alert;
                let action = match alert.name {
                    AlertName::StackDrift | AlertName::PolicyViolation => {
                        resolution(v, &alert).to_string()
                    }
                    AlertName::ReconcileFailing => "the repair succeeded".to_string(),
                    AlertName::ContainerUnhealthy => "healthy again".to_string(),
                    // Raised and resolved by the delivery side, never by a pass.
                    AlertName::AlertReceiverFailing => "delivering again".to_string(),
                    // Raised and resolved by the loop's source, never by a pass.
                    AlertName::SourceRejected | AlertName::SourceStale => {
                        source_resolution(alert.name).to_string()
                    }
                    // Raised and resolved by the loop's handoff, never by a pass.
                    AlertName::SelfUpdateFailed => "the self-update completed".to_string(),
                };
                alert.annotations.insert("action".into(), action);
                events.push(Event::Resolved(alert, v.now));
            }
        }
        // What exists now may alert when it goes missing later.
        let missing: BTreeSet<String> = v
            .after
            .changes
            .iter()
            .filter(|c| c.cause == Cause::Missing)
            .map(|c| c.id.to_string())
            .chain(v.after.unobserved.iter().map(|u| u.id.to_string()))
            .collect();
        for r in &v.desired.resources {
            let id = r.id.to_string();
            if (v.looked_at)(r.id.kind) && !missing.contains(&id) {
                self.present.insert(id);
            }
        }
        events
    }
}

impl Book {
    /// True once `id` (`Kind/name`) has been seen existing: its going missing alerts.
    pub fn knows(&self, id: &str) -> bool {
        self.present.contains(id)
    }

    /// The first pass over a world decides whether its stack existed before this process: if
    /// any of its declared resources is there, the stack is not new, and what is missing was
    /// removed while no daemon watched (an alert). Only a stack created from nothing is
    /// exempt. Lookups (pre-existing by definition) and the Stack itself say nothing.
    fn start(&mut self, v: &PassView<'_>) {
        let missing: BTreeSet<String> = v
            .before
            .changes
            .iter()
            .filter(|c| c.cause == Cause::Missing)
            .map(|c| c.id.to_string())
            .collect();
        for host in [false, true] {
            let in_world = |k: Kind| {
                k.on_host() == host && (v.looked_at)(k) && !matches!(k, Kind::Stack | Kind::Lookup)
            };
            let declared: Vec<String> = v
                .desired
                .resources
                .iter()
                .filter(|r| in_world(r.id.kind))
                .map(|r| r.id.to_string())
                .collect();
            if declared.is_empty() || !self.started.insert(host) {
                continue;
            }
            if declared.iter().any(|id| !missing.contains(id)) {
                self.present.extend(declared);
            }
        }
    }
}

/// Why an alert that was firing ended.
fn resolution(v: &PassView<'_>, alert: &Alert) -> &'static str {
    let resource = format!(
        "{}/{}",
        alert.labels.get("kind").map(String::as_str).unwrap_or(""),
        alert
            .labels
            .get("resource")
            .map(String::as_str)
            .unwrap_or("")
    );
    let repaired = v
        .outcomes
        .iter()
        .any(|o| o.error.is_none() && o.change.id.to_string() == resource);
    if repaired {
        "repaired"
    } else if v
        .desired
        .stack
        .acknowledgements
        .iter()
        .any(|a| a.active(v.now) && a.resource == resource)
    {
        "acknowledged"
    } else {
        "no longer differs"
    }
}

/// What was done about a newly firing alert: repaired, held by the mode, or failing.
fn action_of(v: &PassView<'_>, alert: &Alert, standing: bool) -> Option<String> {
    if alert.annotations.contains_key("action") {
        return None;
    }
    let resource = format!(
        "{}/{}",
        alert.labels.get("kind")?,
        alert.labels.get("resource")?
    );
    let outcome = v
        .outcomes
        .iter()
        .find(|o| o.change.id.to_string() == resource);
    let mode = mode_of(v.desired, &resource);
    Some(match (mode, outcome) {
        (Mode::Warn, _) => "not repaired: mode warn (alert only)".to_string(),
        (_, Some(o)) if o.error.is_none() && !standing => "repaired".to_string(),
        (_, Some(o)) if o.error.is_some() => "repair failed; retried with backoff".to_string(),
        _ if standing => "repair pending".to_string(),
        _ => "repaired".to_string(),
    })
}

/// A resource's effective mode by its `Kind/name` (the stack's for anything undeclared).
fn mode_of(desired: &Desired, resource: &str) -> Mode {
    resource
        .split_once('/')
        .and_then(|(k, n)| desired.get(Kind::parse(k)?, n))
        .map(|r| desired.effective_mode(r))
        .unwrap_or(desired.stack.mode)
}

/// A short, stable hash of the parts that make an alert itself.
/// The `action` a source alert resolves with.
pub fn source_resolution(name: AlertName) -> &'static str {
    match name {
        AlertName::SourceStale => "a fresh pointer was published",
        _ => "a newer revision was taken",
    }
}

/// Where a source alert is about, and what it links to.
#[derive(Debug, Clone, Copy)]
pub struct SourceAlertAt<'a> {
    /// The stack's name.
    pub stack: &'a str,
    /// The environment followed.
    pub environment: &'a str,
    /// The source's `s3://` URL.
    pub url: &'a str,
    /// The daemon's page.
    pub page: &'a str,
}

/// An alert about the stack's source (`SourceRejected`, `SourceStale`): one per source and
/// alert name, so that a second refusal updates the first rather than stacking up.
pub fn source_alert(
    name: AlertName,
    at: SourceAlertAt<'_>,
    cause: &str,
    summary: String,
    now: SystemTime,
) -> Alert {
    let labels = [
        ("alertname", name.as_str()),
        ("severity", name.severity()),
        ("stack", at.stack),
        ("environment", at.environment),
        ("kind", "Source"),
        ("resource", at.url),
        ("cause", cause),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let action = match name {
        AlertName::SourceStale => "still applying the last good revision",
        _ => "kept the last good revision in force",
    };
    let annotations = [
        ("summary", summary),
        ("action", action.to_string()),
        ("page", at.page.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Alert {
        fingerprint: fingerprint(&[at.stack, "Source", at.url, name.as_str()]),
        name,
        labels,
        annotations,
        starts_at: now,
    }
}

/// Where a self-update alert is about, and what it links to.
#[derive(Debug, Clone, Copy)]
pub struct SelfUpdateAt<'a> {
    /// The stack's name.
    pub stack: &'a str,
    /// The environment.
    pub environment: &'a str,
    /// The declared name of the daemon's own container.
    pub container: &'a str,
    /// The daemon's page.
    pub page: &'a str,
}

/// `SelfUpdateFailed`: the successor of the daemon's own container did not turn healthy
/// and was removed. One per container, so that a second failure updates the first.
pub fn self_update_alert(at: SelfUpdateAt<'_>, why: &str, now: SystemTime) -> Alert {
    let name = AlertName::SelfUpdateFailed;
    let labels = [
        ("alertname", name.as_str()),
        ("severity", name.severity()),
        ("stack", at.stack),
        ("environment", at.environment),
        ("kind", "Container"),
        ("resource", at.container),
        ("cause", "manifest"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let annotations = [
        (
            "summary",
            format!(
                "the successor of Container/{} did not turn healthy and was removed: {why}",
                at.container
            ),
        ),
        (
            "action",
            "rolled back: the running daemon keeps the lease; tried again at the next resync"
                .to_string(),
        ),
        ("page", at.page.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Alert {
        fingerprint: fingerprint(&[at.stack, "Container", at.container, name.as_str()]),
        name,
        labels,
        annotations,
        starts_at: now,
    }
}

fn fingerprint(parts: &[&str]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    hex::encode(&h.finalize()[..8])
}

fn labels(
    desired: &Desired,
    name: AlertName,
    kind: &str,
    resource: &str,
    cause: &str,
) -> BTreeMap<String, String> {
    [
        ("alertname", name.as_str()),
        ("stack", desired.stack_name.as_str()),
        ("environment", desired.environment.as_str()),
        ("kind", kind),
        ("resource", resource),
        ("severity", name.severity()),
        ("cause", cause),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The alerts a plan's drift and violations call for (acknowledged and observe-mode ones
/// left out), by fingerprint.
fn candidates(
    v: &PassView<'_>,
    plan: &Plan,
    present: &BTreeSet<String>,
) -> BTreeMap<String, (Alert, Kind)> {
    let mut out = BTreeMap::new();
    for c in &plan.changes {
        if let Some((fp, alert)) = drift_alert(v, c, present) {
            out.insert(fp, (alert, c.id.kind));
        }
    }
    for violation in &plan.violations {
        if let Some((fp, alert, kind)) = violation_alert(v, violation) {
            out.insert(fp, (alert, kind));
        }
    }
    for b in plan.blocks() {
        if let Some((fp, alert)) = blocked_alert(v, b) {
            out.insert(fp, (alert, b.id.kind));
        }
    }
    out
}

/// `StackDrift` for a declared resource whose name something else holds: what runs under
/// the name is not what the manifest declares, and stackwarden may not write it.
fn blocked_alert(v: &PassView<'_>, b: &Blocked) -> Option<(String, Alert)> {
    let id = b.id.to_string();
    if !(v.looked_at)(b.id.kind) || !mode_of(v.desired, &id).alerts() || (v.busy)(&b.id) {
        return None;
    }
    let fp = fingerprint(&[
        AlertName::StackDrift.as_str(),
        &v.desired.stack_name,
        b.id.kind.as_str(),
        &b.id.name,
        b.reason.as_str(),
    ]);
    let annotations = [
        ("summary", b.message.clone()),
        ("differs", b.reason.as_str().to_string()),
        (
            "action",
            "not repaired: stackwarden never writes what it does not own".to_string(),
        ),
    ];
    Some(stack_drift(v, fp, &b.id, "drift", annotations))
}

/// A `StackDrift` alert about `id`, with the page link beside the given annotations.
fn stack_drift<const N: usize>(
    v: &PassView<'_>,
    fp: String,
    id: &ResourceId,
    cause: &str,
    annotations: [(&str, String); N],
) -> (String, Alert) {
    let mut annotations: BTreeMap<String, String> = annotations
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    annotations.insert("page".to_string(), v.page.to_string());
    let labels = labels(
        v.desired,
        AlertName::StackDrift,
        id.kind.as_str(),
        &id.name,
        cause,
    );
    (
        fp.clone(),
        Alert {
            fingerprint: fp,
            name: AlertName::StackDrift,
            labels,
            annotations,
            starts_at: v.now,
        },
    )
}

fn drift_alert(
    v: &PassView<'_>,
    c: &Change,
    present: &BTreeSet<String>,
) -> Option<(String, Alert)> {
    let id = c.id.to_string();
    if !(v.looked_at)(c.id.kind) || !mode_of(v.desired, &id).alerts() || (v.busy)(&c.id) {
        return None;
    }
    if c.cause == Cause::Missing && !present.contains(&id) {
        return None;
    }
    // A reviewed manifest change that the mode lets through is the stack doing its job,
    // not drift: StackDrift with `cause: manifest` is only for changes the mode holds back.
    if c.cause == Cause::Manifest && mode_of(v.desired, &id).repairs() {
        return None;
    }
    // A failing health check is nobody's change: restarts repair it, and only once they
    // keep failing is it an alert (`ContainerUnhealthy`).
    if is_health(c) {
        return None;
    }
    if acknowledged(v.desired, c, v.now) {
        return None;
    }
    let mut fields: Vec<&str> = c.fields.iter().map(|f| f.path.as_str()).collect();
    fields.sort_unstable();
    let what = if fields.is_empty() {
        c.action.verb().to_string()
    } else {
        fields.join(",")
    };
    let fp = fingerprint(&[
        AlertName::StackDrift.as_str(),
        &v.desired.stack_name,
        c.id.kind.as_str(),
        &c.id.name,
        &what,
    ]);
    let cause = match c.cause {
        Cause::Manifest => "manifest",
        Cause::Drift | Cause::Missing => "drift",
    };
    let summary = match c.cause {
        Cause::Manifest => format!("{id} is behind its manifest"),
        Cause::Missing => format!("{id} was removed by hand"),
        Cause::Drift => format!("{id} was changed by hand"),
    };
    let annotations = [
        ("summary", summary),
        ("differs", crate::plan::describe_drift(c)),
    ];
    Some(stack_drift(v, fp, &c.id, cause, annotations))
}

fn violation_alert(v: &PassView<'_>, x: &Violation) -> Option<(String, Alert, Kind)> {
    let (kind, name) = match x.resource.split_once('/') {
        Some((k, n)) => (Kind::parse(k)?, n),
        // An unmanaged container (`docker container adhoc`) belongs to the host.
        None => (Kind::Container, x.resource.as_str()),
    };
    if !(v.looked_at)(kind) || !mode_of(v.desired, &x.resource).alerts() {
        return None;
    }
    if v.desired
        .acknowledged_rule(&x.resource, x.rule, v.now)
        .is_some()
    {
        return None;
    }
    let fp = fingerprint(&[
        AlertName::PolicyViolation.as_str(),
        &v.desired.stack_name,
        kind.as_str(),
        name,
        x.rule,
    ]);
    let mut labels = labels(
        v.desired,
        AlertName::PolicyViolation,
        kind.as_str(),
        name,
        "drift",
    );
    labels.insert("rule".into(), x.rule.to_string());
    let mut annotations = BTreeMap::new();
    annotations.insert(
        "summary".to_string(),
        format!("{} breaks {}: {}", x.resource, x.rule, x.message),
    );
    annotations.insert("differs".to_string(), x.path.clone());
    annotations.insert("fix".to_string(), x.fix.clone());
    annotations.insert("page".to_string(), v.page.to_string());
    Some((
        fp.clone(),
        Alert {
            fingerprint: fp,
            name: AlertName::PolicyViolation,
            labels,
            annotations,
            starts_at: v.now,
        },
        kind,
    ))
}

/// `ReconcileFailing` for each resource still differing whose repair failed
/// [`FAILING_AFTER`] times in a row.
fn failing(v: &PassView<'_>) -> BTreeMap<String, (Alert, Kind)> {
    let mut out = BTreeMap::new();
    for c in &v.after.changes {
        let id = c.id.to_string();
        if !(v.looked_at)(c.id.kind)
            || !mode_of(v.desired, &id).repairs()
            || (v.failures)(&c.id) < FAILING_AFTER
            || is_health(c)
        {
            continue;
        }
        let name = AlertName::ReconcileFailing;
        let fp = fingerprint(&[
            name.as_str(),
            &v.desired.stack_name,
            c.id.kind.as_str(),
            &c.id.name,
        ]);
        let mut annotations = BTreeMap::new();
        annotations.insert(
            "summary".to_string(),
            format!(
                "{id} could not be repaired {} times in a row",
                (v.failures)(&c.id)
            ),
        );
        annotations.insert("differs".to_string(), crate::plan::describe_drift(c));
        if let Some(e) = v
            .outcomes
            .iter()
            .find(|o| o.change.id == c.id)
            .and_then(|o| o.error.clone())
        {
            annotations.insert("error".to_string(), e);
        }
        annotations.insert("page".to_string(), v.page.to_string());
        let cause = if c.cause == Cause::Manifest {
            "manifest"
        } else {
            "drift"
        };
        out.insert(
            fp.clone(),
            (
                Alert {
                    fingerprint: fp,
                    name,
                    labels: labels(v.desired, name, c.id.kind.as_str(), &c.id.name, cause),
                    annotations,
                    starts_at: v.now,
                },
                c.id.kind,
            ),
        );
    }
    out
}

/// `ContainerUnhealthy` for each container restarted [`FAILING_AFTER`] times in a row for a
/// failing health check; it stands until the container has stayed healthy a while.
fn unhealthy(v: &PassView<'_>) -> BTreeMap<String, (Alert, Kind)> {
    let mut out = BTreeMap::new();
    for (r, _) in v.desired.containers() {
        let id = r.id.to_string();
        let restarts = (v.restarts)(&r.id);
        if !(v.looked_at)(Kind::Container)
            || !mode_of(v.desired, &id).alerts()
            || restarts < FAILING_AFTER
        {
            continue;
        }
        let name = AlertName::ContainerUnhealthy;
        let fp = fingerprint(&[
            name.as_str(),
            &v.desired.stack_name,
            Kind::Container.as_str(),
            &r.id.name,
        ]);
        let mut annotations = BTreeMap::new();
        annotations.insert(
            "summary".to_string(),
            format!("{id} keeps failing its health check: {restarts} restarts in a row"),
        );
        if let Some(c) = v.before.changes.iter().find(|c| c.id == r.id) {
            annotations.insert("differs".to_string(), crate::plan::describe_drift(c));
        }
        annotations.insert("page".to_string(), v.page.to_string());
        out.insert(
            fp.clone(),
            (
                Alert {
                    fingerprint: fp,
                    name,
                    labels: labels(
                        v.desired,
                        name,
                        Kind::Container.as_str(),
                        &r.id.name,
                        "drift",
                    ),
                    annotations,
                    starts_at: v.now,
                },
                Kind::Container,
            ),
        );
    }
    out
}

/// True for a container's failing health check (restarted, not drift).
fn is_health(c: &Change) -> bool {
    !c.fields.is_empty() && c.fields.iter().all(|f| f.path == crate::plan::HEALTH_FIELD)
}

/// True for a change that only restarts an unhealthy container.
pub fn is_health_restart(c: &Change) -> bool {
    is_health(c)
}

/// The resources an acknowledgement in force covers now (for status and metrics).
pub fn acknowledged_resources(desired: &Desired, now: SystemTime) -> Vec<ResourceId> {
    desired
        .stack
        .acknowledgements
        .iter()
        .filter(|a| a.active(now))
        .filter_map(|a| {
            let (k, n) = a.resource.split_once('/')?;
            Some(ResourceId::new(Kind::parse(k)?, n))
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests;
