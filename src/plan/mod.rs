//! The plan: what would change, per resource, as data. Pure: built by providers' `diff`,
//! printed for people (`Display`) and serialized for machines (`--output json`).

use crate::model::{Mode, ResourceId};
use serde::Serialize;
use std::fmt;

/// The field a container's failing health check shows as: not a setting anyone changed,
/// but a state to restore (the container is restarted).
pub const HEALTH_FIELD: &str = "health";

/// What happens to one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Create it.
    Create,
    /// Take over an existing, matching resource that lacks the ownership tags (tag it).
    Adopt,
    /// Change it in place.
    Update,
    /// Delete and create again (a field that cannot change in place).
    Replace,
    /// Delete it.
    Delete,
}

impl Action {
    /// The plan's symbol for this action.
    pub fn symbol(self) -> &'static str {
        match self {
            Action::Create => "+",
            Action::Adopt => "~",
            Action::Update => "~",
            Action::Replace => "-/+",
            Action::Delete => "-",
        }
    }

    /// The verb as printed.
    pub fn verb(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Adopt => "adopt",
            Action::Update => "update",
            Action::Replace => "replace",
            Action::Delete => "delete",
        }
    }
}

/// One field that differs. Values are rendered for display; a sensitive field never carries
/// its values, only the fact that it differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    /// Field path (`spec.user`, `ingress[tcp/4317 from ecs-tasks-sg]`).
    pub path: String,
    /// Live value; `None` when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<String>,
    /// Desired value; `None` when it should be absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<String>,
    /// True for secrets: old and new are always `None`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub sensitive: bool,
}

impl FieldChange {
    /// A field whose value changes.
    pub fn changed(
        path: impl Into<String>,
        old: impl fmt::Display,
        new: impl fmt::Display,
    ) -> Self {
        FieldChange {
            path: path.into(),
            old: Some(old.to_string()),
            new: Some(new.to_string()),
            sensitive: false,
        }
    }

    /// A value (a rule, a tag) that must be added.
    pub fn added(path: impl Into<String>, new: impl fmt::Display) -> Self {
        FieldChange {
            path: path.into(),
            old: None,
            new: Some(new.to_string()),
            sensitive: false,
        }
    }

    /// A value that must be removed.
    pub fn removed(path: impl Into<String>, old: impl fmt::Display) -> Self {
        FieldChange {
            path: path.into(),
            old: Some(old.to_string()),
            new: None,
            sensitive: false,
        }
    }

    /// A secret that differs; its values are never shown.
    pub fn secret(path: impl Into<String>) -> Self {
        FieldChange {
            path: path.into(),
            old: None,
            new: None,
            sensitive: true,
        }
    }
}

/// Why a resource differs, so people can tell a hand-made change from a reviewed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cause {
    /// Live state moved away from what stackwarden last applied (a hand-made change).
    Drift,
    /// The declared spec changed since it was last applied.
    Manifest,
    /// The resource does not exist: it is to be created.
    Missing,
}

impl Cause {
    /// The word used in plans, status, metrics and alerts.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Drift => "drift",
            Cause::Manifest => "manifest",
            Cause::Missing => "missing",
        }
    }

    /// The cause implied by the spec hash recorded on the live resource at its last apply:
    /// the same hash as the desired spec means the manifest did not change, so live state
    /// moved; another (or none, on a resource from before hashes were recorded) means the
    /// manifest changed.
    pub fn from_recorded_hash(recorded: Option<&str>, desired: &str) -> Cause {
        match recorded {
            Some(h) if h == desired => Cause::Drift,
            _ => Cause::Manifest,
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The planned change to one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// The resource.
    pub id: ResourceId,
    /// What happens.
    pub action: Action,
    /// The fields that differ (empty for plain creates and deletes).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldChange>,
    /// Why (required for replace; e.g. "the instance was terminated").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `observe`: reported as drift, never applied.
    pub mode: Mode,
    /// Why it differs.
    pub cause: Cause,
}

impl Change {
    /// A change with no fields and no reason, in enforce mode.
    pub fn new(id: ResourceId, action: Action) -> Self {
        Change {
            id,
            action,
            fields: Vec::new(),
            reason: None,
            mode: Mode::Enforce,
            // A provider that can tell (a recorded spec hash) says `manifest` instead.
            cause: if action == Action::Create {
                Cause::Missing
            } else {
                Cause::Drift
            },
        }
    }

    /// Sets the cause.
    pub fn caused_by(mut self, cause: Cause) -> Self {
        self.cause = cause;
        self
    }

    /// Adds a reason.
    pub fn because(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Adds field changes.
    pub fn with_fields(mut self, fields: Vec<FieldChange>) -> Self {
        self.fields = fields;
        self
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}",
            self.action.symbol(),
            self.action.verb(),
            self.id
        )?;
        if let Some(reason) = &self.reason {
            write!(f, " ({reason})")?;
        }
        write!(f, " [cause: {}]", self.cause)?;
        if !self.mode.repairs() {
            write!(f, " [{}: not applied]", self.mode)?;
        }
        for field in &self.fields {
            f.write_str("\n    ")?;
            match (&field.old, &field.new) {
                _ if field.sensitive => write!(f, "~ {}: value differs", field.path)?,
                (Some(old), Some(new)) => write!(f, "~ {}: {old} → {new}", field.path)?,
                (None, Some(new)) => write!(f, "+ {}: {new}", field.path)?,
                (Some(old), None) => write!(f, "- {}: {old}", field.path)?,
                (None, None) => write!(f, "~ {}", field.path)?,
            }
        }
        Ok(())
    }
}

/// A readiness fact about one resource, in the style of Kubernetes conditions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Condition {
    /// The resource.
    pub id: ResourceId,
    /// Condition type (`Ready`, `SecretVerified`).
    #[serde(rename = "type")]
    pub kind: String,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// A CamelCase reason (`SsmOffline`, `HealthCheckFailing`).
    pub reason: String,
    /// A sentence for people.
    pub message: String,
}

/// A condition's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ConditionStatus {
    /// Holds.
    True,
    /// Does not hold.
    False,
    /// Cannot be told.
    Unknown,
}

/// A policy rule broken by live state (desired-state violations are validation errors).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Rule name (`no-root-containers`).
    pub rule: &'static str,
    /// What breaks it (`Container/loki`, or `docker container adhoc` for unmanaged ones).
    pub resource: String,
    /// The offending field.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// What to do.
    pub fix: String,
    /// The world it was found in (set by the engine from the provider that found it):
    /// a pass that does not look at that world keeps it standing.
    #[serde(skip)]
    pub world: Option<World>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {} [policy: {}]\n    fix: {}",
            self.resource, self.path, self.message, self.rule, self.fix
        )
    }
}

/// A whole plan across providers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Changes in apply order.
    pub changes: Vec<Change>,
    /// Conditions of observed resources.
    pub conditions: Vec<Condition>,
    /// Policy violations found in live state.
    pub violations: Vec<Violation>,
    /// What keeps the plan from being the whole truth and needs a person or a later pass:
    /// worlds that could not observe, resources blocked by an owner that is not this stack,
    /// an account not yet known, a pass cut short.
    pub problems: Vec<Problem>,
    /// Resources whose live state could not be read this time: not planned, not applied.
    pub unobserved: Vec<Unobserved>,
}

/// The JSON keeps the shape users and scripts rely on: `errors` as sentences, and the
/// typed `blocked` and `failed_providers` beside them.
impl Serialize for Plan {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let blocked: Vec<&Blocked> = self.blocks().collect();
        let failed: Vec<&ProviderFailure> = self
            .problems
            .iter()
            .filter_map(|p| match p {
                Problem::Unreachable(f) => Some(f),
                _ => None,
            })
            .collect();
        let mut st = serializer.serialize_struct("Plan", 7)?;
        st.serialize_field("changes", &self.changes)?;
        st.serialize_field("conditions", &self.conditions)?;
        st.serialize_field("violations", &self.violations)?;
        st.serialize_field("errors", &self.errors())?;
        if blocked.is_empty() {
            st.skip_field("blocked")?;
        } else {
            st.serialize_field("blocked", &blocked)?;
        }
        if failed.is_empty() {
            st.skip_field("failed_providers")?;
        } else {
            st.serialize_field("failed_providers", &failed)?;
        }
        if self.unobserved.is_empty() {
            st.skip_field("unobserved")?;
        } else {
            st.serialize_field("unobserved", &self.unobserved)?;
        }
        st.end()
    }
}

/// A world stackwarden observes through one provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum World {
    /// The AWS account: instance, security group, bucket, parameter, load balancer, IAM.
    Aws,
    /// The host: its Docker engine and its files.
    Host,
}

impl World {
    /// The name used in errors, logs and JSON (`aws`, `host`).
    pub fn as_str(self) -> &'static str {
        match self {
            World::Aws => "aws",
            World::Host => "host",
        }
    }

    /// The world a kind lives in.
    pub fn of(kind: crate::model::Kind) -> World {
        if kind.on_host() {
            World::Host
        } else {
            World::Aws
        }
    }
}

impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which worlds a command or the daemon covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scope {
    /// AWS and the host.
    All,
    /// AWS only (CI, where the host's Docker engine is not at hand).
    Aws,
    /// The host only: containers and files (on the instance itself).
    Host,
}

impl Scope {
    /// True when it covers `world`.
    pub fn covers(self, world: World) -> bool {
        !matches!(
            (self, world),
            (Scope::Aws, World::Host) | (Scope::Host, World::Aws)
        )
    }

    /// True when it covers AWS.
    pub fn aws(self) -> bool {
        self.covers(World::Aws)
    }

    /// True when it covers the host.
    pub fn host(self) -> bool {
        self.covers(World::Host)
    }
}

/// Something that keeps a plan from being the whole truth: plan and apply exit non-zero,
/// the daemon's pass does not count as converged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A world could not be observed at all: nothing there is planned.
    Unreachable(ProviderFailure),
    /// A declared resource cannot be written until a person acts.
    Blocked(Blocked),
    /// `${account}` is not known yet (AWS has not answered): nothing on the host is
    /// planned, since it would be written with the placeholder in it.
    AccountUnresolved,
    /// The pass ran past its deadline and was abandoned; what it planned is not known.
    Deadline(std::time::Duration),
    /// The pass's own task failed (a panic): what it planned is not known.
    Aborted(String),
}

impl Problem {
    /// The world it concerns, when it concerns one.
    pub fn world(&self) -> Option<World> {
        match self {
            Problem::Unreachable(f) => Some(f.world),
            Problem::Blocked(b) => Some(World::of(b.id.kind)),
            Problem::AccountUnresolved => Some(World::Host),
            Problem::Deadline(_) | Problem::Aborted(_) => None,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Unreachable(failure) => write!(f, "{failure}"),
            Problem::Blocked(b) => f.write_str(&b.message),
            Problem::AccountUnresolved => f.write_str(
                "account: waiting for AWS to resolve ${account}; nothing on the host is planned until it answers",
            ),
            Problem::Deadline(limit) => write!(
                f,
                "the pass exceeded its {}s deadline and was abandoned",
                limit.as_secs()
            ),
            Problem::Aborted(why) => write!(f, "the pass failed: {why}"),
        }
    }
}

/// Why stackwarden may not write a declared resource: a person must act first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum BlockReason {
    /// Its name is held by a container no stack manages.
    HeldByForeignContainer,
    /// Its name is held by another stack's resource.
    OwnedByAnotherStack,
    /// No live object carries its tags, and several (or one whose marks disagree) carry
    /// some of its other marks: creating it could make a second copy, so nothing is.
    Ambiguous,
}

impl BlockReason {
    /// The `Synced` condition's reason.
    pub fn as_str(self) -> &'static str {
        match self {
            BlockReason::HeldByForeignContainer => "HeldByForeignContainer",
            BlockReason::OwnedByAnotherStack => "OwnedByAnotherStack",
            BlockReason::Ambiguous => "Ambiguous",
        }
    }
}

/// A declared resource that cannot be written, and why: shown on the resource itself (not
/// only among the stack's errors), alerted, and never written to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Blocked {
    /// The declared resource.
    pub id: ResourceId,
    /// Why.
    pub reason: BlockReason,
    /// What holds it and what to do, for people.
    pub message: String,
}

/// A resource whose live state could not be read (a refused or failed call about it alone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unobserved {
    /// The resource.
    pub id: ResourceId,
    /// How the failure is to be treated.
    pub class: ErrorClass,
    /// What failed, for people.
    pub error: String,
}

/// A world that could not be observed, with the failure's class and its error kept whole.
#[derive(Debug, Clone)]
pub struct ProviderFailure {
    /// The world.
    pub world: World,
    /// How the failure is to be treated.
    pub class: ErrorClass,
    /// What failed (its source chain intact).
    pub error: std::sync::Arc<dyn std::error::Error + Send + Sync>,
}

impl ProviderFailure {
    /// A failure of `world` from any error.
    pub fn new(
        world: World,
        class: ErrorClass,
        error: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        ProviderFailure {
            world,
            class,
            error: std::sync::Arc::from(error.into()),
        }
    }

    /// The error without the world's name in front (for places that already name it).
    pub fn detail(&self) -> String {
        self.error.to_string()
    }
}

impl PartialEq for ProviderFailure {
    fn eq(&self, other: &Self) -> bool {
        self.world == other.world
            && self.class == other.class
            && self.error.to_string() == other.error.to_string()
    }
}

impl Eq for ProviderFailure {}

impl fmt::Display for ProviderFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.world, self.error)
    }
}

impl Serialize for ProviderFailure {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = serializer.serialize_struct("ProviderFailure", 3)?;
        st.serialize_field("provider", &self.world)?;
        st.serialize_field("class", &self.class)?;
        st.serialize_field("error", &self.to_string())?;
        st.end()
    }
}

impl Plan {
    /// True when an apply would change something (observe-mode drift included: it is pending).
    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty()
    }

    /// True when something could not be observed or is blocked: the plan is not the whole
    /// truth, and plan and apply exit non-zero.
    pub fn is_incomplete(&self) -> bool {
        !self.problems.is_empty() || !self.unobserved.is_empty()
    }

    /// The problems as sentences, for people.
    pub fn errors(&self) -> Vec<String> {
        self.problems.iter().map(ToString::to_string).collect()
    }

    /// Records a resource that cannot be written.
    pub fn block(&mut self, blocked: Blocked) {
        self.problems.push(Problem::Blocked(blocked));
    }

    /// Every blocked resource.
    pub fn blocks(&self) -> impl Iterator<Item = &Blocked> {
        self.problems.iter().filter_map(|p| match p {
            Problem::Blocked(b) => Some(b),
            _ => None,
        })
    }

    /// Why a resource is blocked, if it is.
    pub fn blocked(&self, id: &ResourceId) -> Option<&Blocked> {
        self.blocks().find(|b| &b.id == id)
    }

    /// Records a world that could not observe.
    pub fn provider_failed(&mut self, failure: ProviderFailure) {
        self.problems.push(Problem::Unreachable(failure));
    }

    /// The failure of a world, if it could not observe.
    pub fn failure_of(&self, world: World) -> Option<&ProviderFailure> {
        self.problems.iter().find_map(|p| match p {
            Problem::Unreachable(f) if f.world == world => Some(f),
            _ => None,
        })
    }

    /// Counts by action, for the summary line.
    pub fn summary(&self) -> String {
        let count = |a: Action| self.changes.iter().filter(|c| c.action == a).count();
        format!(
            "Plan: {} to create, {} to adopt, {} to update, {} to replace, {} to delete.",
            count(Action::Create),
            count(Action::Adopt),
            count(Action::Update),
            count(Action::Replace),
            count(Action::Delete)
        )
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for change in &self.changes {
            writeln!(f, "{change}")?;
        }
        for v in &self.violations {
            writeln!(f, "! {v}")?;
        }
        for c in &self.conditions {
            if c.status != ConditionStatus::True {
                writeln!(
                    f,
                    "? {} {}={:?} {}: {}",
                    c.id, c.kind, c.status, c.reason, c.message
                )?;
            }
        }
        for u in &self.unobserved {
            writeln!(
                f,
                "? {} not observed ({}): {}",
                u.id,
                u.class.as_str(),
                u.error
            )?;
        }
        for p in &self.problems {
            writeln!(f, "error: {p}")?;
        }
        if self.changes.is_empty() {
            writeln!(f, "No changes. Live state matches the manifests.")
        } else {
            writeln!(f, "{}", self.summary())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;

    #[test]
    fn sensitive_fields_never_print_values() {
        let change = Change::new(ResourceId::new(Kind::Parameter, "admin"), Action::Update)
            .with_fields(vec![FieldChange::secret("value")]);
        let text = change.to_string();
        assert_eq!(
            text,
            "~ update Parameter/admin [cause: drift]\n    ~ value: value differs"
        );
        let json = serde_json::to_string(&change).unwrap_or_default();
        assert!(!json.contains("old") && !json.contains("\"new\""), "{json}");
    }

    #[test]
    fn replace_prints_its_reason() {
        let change = Change::new(ResourceId::new(Kind::Instance, "host"), Action::Replace)
            .because("user data changed");
        assert_eq!(
            change.to_string(),
            "-/+ replace Instance/host (user data changed) [cause: drift]"
        );
    }
}

/// How a failure should be treated by whoever decides what to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorClass {
    /// Worth trying again soon: throttling, a 5xx, a timeout, a refused or dropped
    /// connection, a conflict with a concurrent change.
    Transient,
    /// Trying again changes nothing until someone acts: an invalid parameter, a resource
    /// owned by someone else.
    Permanent,
    /// The credentials in use lack a permission: permanent too (never retried within a pass,
    /// looked at again at the next resync), and told apart so that the error can name the
    /// action to grant (`stackwarden iam-policy`).
    #[serde(rename = "permission-denied")]
    PermissionDenied,
    /// The thing named does not exist (any more).
    NotFound,
}

impl ErrorClass {
    /// The word used in status, logs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Permanent => "permanent",
            ErrorClass::PermissionDenied => "permission-denied",
            ErrorClass::NotFound => "notfound",
        }
    }

    /// True when trying again soon may succeed. A vanished resource counts: the next
    /// observe sees it gone and plans accordingly.
    pub fn is_retryable(self) -> bool {
        !matches!(self, ErrorClass::Permanent | ErrorClass::PermissionDenied)
    }
}

/// One line: the action and the fields, secrets as "differs".
pub fn describe_drift(change: &Change) -> String {
    let fields: Vec<String> = change.fields.iter().map(describe_field).collect();
    let mut text = change.action.verb().to_string();
    if let Some(reason) = &change.reason {
        text.push_str(&format!(" ({reason})"));
    }
    if !fields.is_empty() {
        text.push_str(": ");
        text.push_str(&fields.join("; "));
    }
    text
}

/// A field change for people: `path: before → after`; a secret only "differs".
pub fn describe_field(f: &FieldChange) -> String {
    if f.sensitive {
        return format!("{}: differs", f.path);
    }
    match (&f.old, &f.new) {
        (Some(o), Some(n)) => format!("{}: {o} → {n}", f.path),
        (None, Some(n)) => format!("{}: (none) → {n}", f.path),
        (Some(o), None) => format!("{}: {o} → (none)", f.path),
        (None, None) => f.path.clone(),
    }
}
