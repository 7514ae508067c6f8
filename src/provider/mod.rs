//! Providers: one per world (AWS, the host's Docker engine, the host's files). Each has the
//! same three verbs: `observe` (read-only, batched), `diff` (pure) and `apply` (one change at a
//! time, idempotent). The engine drives them through [`DynProvider`] and knows no API.

pub mod aws;
pub mod host;
pub mod stats;

use crate::model::Desired;
use crate::plan::{Change, Condition, Violation};
use futures_util::future::BoxFuture;
use std::fmt;
use std::future::Future;

pub use stats::{CallKind, Stats};

/// A provider failed to observe its world (endpoint down, credentials refused, …).
#[derive(Debug, thiserror::Error)]
#[error("{provider}: {message}")]
pub struct ProviderError {
    /// Which provider.
    pub provider: &'static str,
    /// What failed, with the cause chain flattened.
    pub message: String,
}

impl ProviderError {
    /// Builds an error from any displayable cause.
    pub fn new(provider: &'static str, message: impl fmt::Display) -> Self {
        ProviderError {
            provider,
            message: message.to_string(),
        }
    }
}

/// One resource's planned change with the provider's typed operations that carry it out.
#[derive(Debug)]
pub struct Step<Op> {
    /// What the plan shows.
    pub change: Change,
    /// What apply does, in order.
    pub ops: Vec<Op>,
}

/// What a provider's `diff` returns.
#[derive(Debug)]
pub struct ProviderPlan<Op> {
    /// Steps in dependency order.
    pub steps: Vec<Step<Op>>,
    /// Readiness of observed resources.
    pub conditions: Vec<Condition>,
    /// Policy violations in live state.
    pub violations: Vec<Violation>,
    /// What blocks a declared resource and needs a person (a name held by something that
    /// is not ours): plan and apply report it and exit non-zero.
    pub errors: Vec<String>,
}

impl<Op> Default for ProviderPlan<Op> {
    fn default() -> Self {
        ProviderPlan {
            steps: Vec::new(),
            conditions: Vec::new(),
            violations: Vec::new(),
            errors: Vec::new(),
        }
    }
}

/// The result of applying one step.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StepOutcome {
    /// The change that was attempted.
    pub change: Change,
    /// `None` when it succeeded; otherwise what failed, for people.
    pub error: Option<String>,
}

/// The contract every provider implements.
pub trait Provider: Send + Sync {
    /// The live state this provider reads.
    type Observed: Send + Sync;
    /// One typed write operation.
    type Op: Send + Sync + fmt::Debug;

    /// A short name for logs and errors (`aws`, `docker`, `files`).
    fn name(&self) -> &'static str;

    /// Reads live state of everything the desired state names (and what this stack owns).
    fn observe<'a>(
        &'a self,
        desired: &'a Desired,
    ) -> impl Future<Output = Result<Self::Observed, ProviderError>> + Send + 'a;

    /// Compares desired with observed. Pure: no I/O, no clock.
    fn diff(&self, desired: &Desired, observed: &Self::Observed) -> ProviderPlan<Self::Op>;

    /// Carries out the steps, in order, respecting dependencies; a failed step does not stop
    /// independent ones.
    fn apply<'a>(
        &'a self,
        desired: &'a Desired,
        observed: &'a Self::Observed,
        steps: Vec<Step<Self::Op>>,
    ) -> impl Future<Output = Vec<StepOutcome>> + Send + 'a;
}

/// A provider's plan, ready to show or to apply, with its types erased for the engine.
pub trait PlannedWork: Send + Sync {
    /// The changes, in order.
    fn changes(&self) -> Vec<Change>;
    /// Conditions of observed resources.
    fn conditions(&self) -> Vec<Condition>;
    /// Live policy violations.
    fn violations(&self) -> Vec<Violation>;
    /// Blocked resources, for people.
    fn errors(&self) -> Vec<String>;
    /// Applies the steps whose change `select` accepts.
    fn apply<'s>(
        self: Box<Self>,
        select: &'s (dyn Fn(&Change) -> bool + Sync),
    ) -> BoxFuture<'s, Vec<StepOutcome>>
    where
        Self: 's;
}

/// The engine's object-safe view of a provider.
pub trait DynProvider: Send + Sync {
    /// See [`Provider::name`].
    fn name(&self) -> &'static str;
    /// Observes and diffs.
    fn plan<'a>(
        &'a self,
        desired: &'a Desired,
    ) -> BoxFuture<'a, Result<Box<dyn PlannedWork + 'a>, ProviderError>>;
}

struct Planned<'a, P: Provider> {
    provider: &'a P,
    desired: &'a Desired,
    observed: P::Observed,
    plan: ProviderPlan<P::Op>,
}

impl<'a, P: Provider> PlannedWork for Planned<'a, P> {
    fn changes(&self) -> Vec<Change> {
        self.plan.steps.iter().map(|s| s.change.clone()).collect()
    }

    fn conditions(&self) -> Vec<Condition> {
        self.plan.conditions.clone()
    }

    fn violations(&self) -> Vec<Violation> {
        self.plan.violations.clone()
    }

    fn errors(&self) -> Vec<String> {
        self.plan.errors.clone()
    }

    fn apply<'s>(
        self: Box<Self>,
        select: &'s (dyn Fn(&Change) -> bool + Sync),
    ) -> BoxFuture<'s, Vec<StepOutcome>>
    where
        Self: 's,
    {
        Box::pin(async move {
            let Planned {
                provider,
                desired,
                observed,
                plan,
            } = *self;
            let steps: Vec<_> = plan
                .steps
                .into_iter()
                .filter(|s| select(&s.change))
                .collect();
            if steps.is_empty() {
                return Vec::new();
            }
            provider.apply(desired, &observed, steps).await
        })
    }
}

impl<P: Provider> DynProvider for P {
    fn name(&self) -> &'static str {
        Provider::name(self)
    }

    fn plan<'a>(
        &'a self,
        desired: &'a Desired,
    ) -> BoxFuture<'a, Result<Box<dyn PlannedWork + 'a>, ProviderError>> {
        Box::pin(async move {
            let observed = self.observe(desired).await?;
            let plan = self.diff(desired, &observed);
            let work: Box<dyn PlannedWork + 'a> = Box::new(Planned {
                provider: self,
                desired,
                observed,
                plan,
            });
            Ok(work)
        })
    }
}
