//! Providers: one per world (AWS, the host's Docker engine, the host's files). Each has the
//! same three verbs: `observe` (read-only, batched), `diff` (pure) and `apply` (one change at a
//! time, idempotent). The engine drives them through [`DynProvider`] and knows no API.

pub mod aws;
pub mod error;
pub mod host;
pub mod stats;

use crate::model::Desired;
use crate::plan::{Blocked, Change, Condition, Unobserved, Violation};
use futures_util::future::BoxFuture;
use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;

pub use error::{Classify, ErrorClass, ProviderError, StepError};
pub use stats::{CallKind, Stats};

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
    pub blocked: Vec<Blocked>,
    /// Resources whose live state could not be read: nothing is planned for them (the
    /// engine drops whatever `diff` said of them), the rest of the plan goes ahead.
    pub unobserved: Vec<Unobserved>,
}

impl<Op> Default for ProviderPlan<Op> {
    fn default() -> Self {
        ProviderPlan {
            steps: Vec::new(),
            conditions: Vec::new(),
            violations: Vec::new(),
            blocked: Vec::new(),
            unobserved: Vec::new(),
        }
    }
}

impl<Op> ProviderPlan<Op> {
    /// Drops every step, condition and violation of an unobserved resource: a diff against
    /// state that could not be read would plan from a guess (a bucket that failed to
    /// answer is not a bucket to create).
    fn without_unobserved(mut self) -> Self {
        let unknown: BTreeSet<String> = self.unobserved.iter().map(|u| u.id.to_string()).collect();
        if unknown.is_empty() {
            return self;
        }
        self.steps
            .retain(|s| !unknown.contains(&s.change.id.to_string()));
        self.conditions
            .retain(|c| !unknown.contains(&c.id.to_string()));
        self.violations.retain(|v| !unknown.contains(&v.resource));
        self
    }
}

/// The result of applying one step.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StepOutcome {
    /// The change that was attempted.
    pub change: Change,
    /// `None` when it succeeded; otherwise what failed, for people.
    pub error: Option<String>,
    /// How the failure is to be treated (when it is retried); `None` on success.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<ErrorClass>,
}

impl StepOutcome {
    /// A step that succeeded.
    pub fn done(change: Change) -> Self {
        StepOutcome {
            change,
            error: None,
            class: None,
        }
    }

    /// A step that failed.
    pub fn failed(change: Change, error: StepError) -> Self {
        StepOutcome {
            change,
            error: Some(error.message),
            class: Some(error.class),
        }
    }
}

/// Asked right before each step writes anything. The daemon's gate checks that it still
/// holds the stack's lease, so that a leader whose lease vanished or was taken stops before
/// its next write rather than at its next lease tick; the CLI's is [`OpenGate`] (it checks
/// the lease once, before it plans).
pub trait WriteGate: Send + Sync {
    /// `Ok` when the step may write; otherwise why not, as the step's error.
    fn admit<'a>(&'a self, change: &'a Change) -> BoxFuture<'a, Result<(), StepError>>;
}

/// A gate that admits every step.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenGate;

impl WriteGate for OpenGate {
    fn admit<'a>(&'a self, _change: &'a Change) -> BoxFuture<'a, Result<(), StepError>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// The contract every provider implements.
pub trait Provider: Send + Sync {
    /// The live state this provider reads.
    type Observed: Send + Sync;
    /// One typed write operation.
    type Op: Send + Sync + fmt::Debug;

    /// A short name for logs and errors (`aws`, `docker`, `files`).
    fn name(&self) -> &'static str;

    /// The world it observes.
    fn world(&self) -> crate::plan::World;

    /// Reads live state of everything the desired state names (and what this stack owns).
    fn observe<'a>(
        &'a self,
        desired: &'a Desired,
    ) -> impl Future<Output = Result<Self::Observed, ProviderError>> + Send + 'a;

    /// Compares desired with observed. Pure: no I/O, no clock.
    fn diff(&self, desired: &Desired, observed: &Self::Observed) -> ProviderPlan<Self::Op>;

    /// Carries out the steps, in order, respecting dependencies; a failed step does not stop
    /// independent ones. Each step asks `gate` before its first write; a refused step fails
    /// with the gate's error and writes nothing.
    fn apply<'a>(
        &'a self,
        desired: &'a Desired,
        observed: &'a Self::Observed,
        steps: Vec<Step<Self::Op>>,
        gate: &'a dyn WriteGate,
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
    /// Blocked resources.
    fn blocked(&self) -> Vec<Blocked>;
    /// Resources that could not be observed.
    fn unobserved(&self) -> Vec<Unobserved>;
    /// Applies the steps whose change `select` accepts, each admitted by `gate`.
    fn apply<'s>(
        self: Box<Self>,
        select: &'s (dyn Fn(&Change) -> bool + Sync),
        gate: &'s dyn WriteGate,
    ) -> BoxFuture<'s, Vec<StepOutcome>>
    where
        Self: 's;
}

/// The engine's object-safe view of a provider.
pub trait DynProvider: Send + Sync {
    /// See [`Provider::name`].
    fn name(&self) -> &'static str;
    /// See [`Provider::world`].
    fn world(&self) -> crate::plan::World;
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

    fn blocked(&self) -> Vec<Blocked> {
        self.plan.blocked.clone()
    }

    fn unobserved(&self) -> Vec<Unobserved> {
        self.plan.unobserved.clone()
    }

    fn apply<'s>(
        self: Box<Self>,
        select: &'s (dyn Fn(&Change) -> bool + Sync),
        gate: &'s dyn WriteGate,
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
            provider.apply(desired, &observed, steps, gate).await
        })
    }
}

impl<P: Provider> DynProvider for P {
    fn name(&self) -> &'static str {
        Provider::name(self)
    }

    fn world(&self) -> crate::plan::World {
        Provider::world(self)
    }

    fn plan<'a>(
        &'a self,
        desired: &'a Desired,
    ) -> BoxFuture<'a, Result<Box<dyn PlannedWork + 'a>, ProviderError>> {
        Box::pin(async move {
            let observed = self.observe(desired).await?;
            let plan = self.diff(desired, &observed).without_unobserved();
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
