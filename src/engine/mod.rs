//! The engine: runs every provider's observe + diff concurrently into one [`Plan`], and
//! applies it. It knows nothing of any API; modes (`observe`) are enforced here, once, so
//! no provider can forget them.

use crate::model::{Desired, Mode, ResourceId};
use crate::plan::{Change, Plan};
use crate::provider::{DynProvider, OpenGate, PlannedWork, StepOutcome, WriteGate};
use futures_util::future::join_all;
use std::sync::Arc;

/// Drives a set of providers.
pub struct Engine {
    providers: Vec<Arc<dyn DynProvider>>,
}

/// The outcome of an apply.
#[derive(Debug, Default, serde::Serialize)]
pub struct ApplyReport {
    /// The plan that was applied (observe-mode changes included, marked).
    pub plan: Plan,
    /// One outcome per attempted step.
    pub outcomes: Vec<StepOutcome>,
}

impl ApplyReport {
    /// Steps that failed.
    pub fn failures(&self) -> impl Iterator<Item = &StepOutcome> {
        self.outcomes.iter().filter(|o| o.error.is_some())
    }

    /// True when every attempted step succeeded and everything could be observed.
    pub fn converged(&self) -> bool {
        self.failures().next().is_none() && !self.plan.is_incomplete()
    }

    /// True when it did not converge only for failures worth another try: each failed
    /// step's error is transient, and everything could be observed.
    pub fn worth_retrying(&self) -> bool {
        !self.converged()
            && !self.plan.is_incomplete()
            && self
                .failures()
                .all(|o| o.class == Some(crate::plan::ErrorClass::Transient))
    }

    /// This report followed by a retry's: the changes first planned, what the retry
    /// observed (its errors and unobserved resources are the latest word), and every
    /// outcome except the failures the retry superseded.
    pub fn then(self, retry: ApplyReport) -> ApplyReport {
        let mut plan = self.plan;
        plan.problems = retry.plan.problems;
        plan.unobserved = retry.plan.unobserved;
        plan.violations = retry.plan.violations;
        plan.conditions = retry.plan.conditions;
        let mut outcomes: Vec<StepOutcome> = self
            .outcomes
            .into_iter()
            .filter(|o| o.error.is_none())
            .collect();
        outcomes.extend(retry.outcomes);
        ApplyReport { plan, outcomes }
    }
}

impl Engine {
    /// An engine over these providers.
    pub fn new(providers: Vec<Box<dyn DynProvider>>) -> Self {
        Engine {
            providers: providers.into_iter().map(Arc::from).collect(),
        }
    }

    /// An engine over shared providers (the daemon keeps its providers, and their caches,
    /// across passes while the set of reachable worlds changes).
    pub fn shared(providers: Vec<Arc<dyn DynProvider>>) -> Self {
        Engine { providers }
    }

    /// Observes and diffs every provider concurrently.
    pub async fn plan(&self, desired: &Desired) -> Plan {
        let (plan, _) = self.plan_work(desired).await;
        plan
    }

    async fn plan_work<'a>(
        &'a self,
        desired: &'a Desired,
    ) -> (Plan, Vec<Box<dyn PlannedWork + 'a>>) {
        let results = join_all(self.providers.iter().map(|p| p.plan(desired))).await;
        let mut plan = Plan::default();
        let mut works = Vec::new();
        for (provider, result) in self.providers.iter().zip(results) {
            match result {
                Ok(work) => {
                    plan.changes.extend(work.changes().into_iter().map(|mut c| {
                        c.mode = mode_of(desired, &c.id);
                        c
                    }));
                    plan.conditions.extend(work.conditions());
                    plan.violations
                        .extend(work.violations().into_iter().map(|mut v| {
                            v.world = Some(provider.world());
                            v
                        }));
                    for b in work.blocked() {
                        plan.block(b);
                    }
                    plan.unobserved.extend(work.unobserved());
                    works.push(work);
                }
                Err(e) => plan.provider_failed(e.into()),
            }
        }
        (plan, works)
    }

    /// Plans, then applies every change not in observe mode. Providers apply concurrently;
    /// each orders its own steps by dependency.
    pub async fn apply(&self, desired: &Desired) -> ApplyReport {
        self.apply_selected(desired, &|_| true).await
    }

    /// Like [`Engine::apply`], applying only the enforce-mode changes `select` accepts (the
    /// daemon holds back resources in backoff; the rest of the plan goes ahead).
    pub async fn apply_selected(
        &self,
        desired: &Desired,
        select: &(dyn Fn(&Change) -> bool + Sync),
    ) -> ApplyReport {
        self.apply_announcing(desired, select, &OpenGate, |_| {})
            .await
    }

    /// Like [`Engine::apply_selected`], handing the plan to `planned` as soon as it is made,
    /// before any write (the daemon shows it while a slow write goes on), and asking `gate`
    /// before each step writes (the daemon's lease check).
    pub async fn apply_announcing(
        &self,
        desired: &Desired,
        select: &(dyn Fn(&Change) -> bool + Sync),
        gate: &dyn WriteGate,
        planned: impl FnOnce(&Plan),
    ) -> ApplyReport {
        let (plan, works) = self.plan_work(desired).await;
        planned(&plan);
        let now = std::time::SystemTime::now();
        let enforce = |c: &Change| {
            mode_of(desired, &c.id).repairs() && !acknowledged(desired, c, now) && select(c)
        };
        let outcomes = join_all(works.into_iter().map(|w| w.apply(&enforce, gate)))
            .await
            .into_iter()
            .flatten()
            .collect();
        ApplyReport { plan, outcomes }
    }
}

/// True when an acknowledgement in force covers every field the change makes: it is left
/// as it is (a create or a delete changes the whole resource, so only an in-place change
/// with fields can be covered).
pub fn acknowledged(desired: &Desired, change: &Change, now: std::time::SystemTime) -> bool {
    !change.fields.is_empty()
        && desired
            .acknowledgement(
                &change.id.to_string(),
                change.fields.iter().map(|f| f.path.as_str()),
                now,
            )
            .is_some()
}

/// A change's mode: its resource's effective mode, or the stack's for resources no longer
/// declared (pruning follows the stack-wide mode).
fn mode_of(desired: &Desired, id: &ResourceId) -> Mode {
    match desired.get(id.kind, &id.name) {
        Some(resource) => desired.effective_mode(resource),
        None => desired.stack.mode,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;
    use crate::plan::{Action, ErrorClass};
    use crate::provider::StepError;

    fn change(name: &str) -> Change {
        Change::new(
            ResourceId {
                kind: Kind::Container,
                name: name.to_string(),
            },
            Action::Create,
        )
    }

    fn failed(name: &str, class: ErrorClass) -> StepOutcome {
        StepOutcome::failed(
            change(name),
            StepError {
                class,
                message: format!("{name} failed"),
            },
        )
    }

    fn report(outcomes: Vec<StepOutcome>) -> ApplyReport {
        ApplyReport {
            plan: Plan::default(),
            outcomes,
        }
    }

    #[test]
    fn only_transient_failures_are_worth_a_retry() {
        let transient = report(vec![
            StepOutcome::done(change("a")),
            failed("b", ErrorClass::Transient),
        ]);
        assert!(transient.worth_retrying());
        let permanent = report(vec![
            failed("b", ErrorClass::Transient),
            failed("c", ErrorClass::Permanent),
        ]);
        assert!(!permanent.worth_retrying());
        assert!(!report(vec![StepOutcome::done(change("a"))]).worth_retrying());
        let mut unobserved = report(vec![failed("b", ErrorClass::Transient)]);
        unobserved
            .plan
            .provider_failed(crate::plan::ProviderFailure::new(
                crate::plan::World::Host,
                ErrorClass::Transient,
                "the engine did not answer",
            ));
        assert!(!unobserved.worth_retrying());
    }

    #[test]
    fn a_retry_supersedes_the_failures_and_keeps_the_earlier_successes() {
        let first = report(vec![
            StepOutcome::done(change("a")),
            failed("b", ErrorClass::Transient),
        ]);
        let merged = first.then(report(vec![StepOutcome::done(change("b"))]));
        let names: Vec<(&str, bool)> = merged
            .outcomes
            .iter()
            .map(|o| (o.change.id.name.as_str(), o.error.is_none()))
            .collect();
        assert_eq!(names, [("a", true), ("b", true)]);
        assert!(merged.converged());
    }
}
