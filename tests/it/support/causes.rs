//! What a plan's causes must say, known from the outside: the spec of each resource as it was
//! when the test last applied it.

use stackwarden::model::Desired;
use stackwarden::plan::{Action, Cause, Plan};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Spec hashes of the desired state at the last successful apply, by resource.
#[derive(Debug, Default)]
pub struct Applied(Mutex<BTreeMap<String, String>>);

impl Applied {
    /// Remembers the desired state as applied.
    pub fn record(&self, desired: &Desired) {
        let mut applied = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for r in &desired.resources {
            applied.insert(r.id.to_string(), r.spec_hash());
        }
    }

    /// Every in-place change of a resource whose spec is as last applied is a hand-made
    /// change (`drift`); of one whose spec was edited since, the manifest's. Creates are
    /// `missing`. (Replacements and deletes follow their own rules, unit-tested.)
    pub fn assert_causes(&self, plan: &Plan, desired: &Desired) {
        let applied = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for c in &plan.changes {
            let expected = match c.action {
                Action::Create => Cause::Missing,
                Action::Replace | Action::Delete => continue,
                Action::Update | Action::Adopt => {
                    let Some(then) = applied.get(&c.id.to_string()) else {
                        continue;
                    };
                    let now = desired
                        .get(c.id.kind, &c.id.name)
                        .map(|r| r.spec_hash())
                        .unwrap_or_default();
                    if *then == now {
                        Cause::Drift
                    } else {
                        Cause::Manifest
                    }
                }
            };
            assert_eq!(c.cause, expected, "the cause of {c}\nin the plan:\n{plan}");
        }
    }
}
