//! Writes that outlive their pass: a slow step (an image pull, a health check taking its
//! time) goes on in the background while the loop sees and repairs everything else. What is
//! being written is claimed, so that no later pass writes it too; once the writes finish,
//! their outcomes are folded in (audited, alerted) exactly as an inline write's are.

use super::lease;
use crate::engine::ApplyReport;
use crate::model::{Desired, ResourceId};
use crate::plan::Plan;
use crate::status::Trigger;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use tokio::task::JoinHandle;

/// What a pass's work task gives back: the report and the plan re-observed after the
/// writes; `None` when it ran past [`PASS_DEADLINE`].
pub(super) type Work = Option<(ApplyReport, Plan)>;

/// Writes a pass let go on in the background, the trigger of that pass, and what its alerts
/// are judged against once they finish.
pub(super) struct Detached {
    pub(super) task: JoinHandle<Work>,
    pub(super) trigger: Trigger,
    pub(super) desired: Desired,
    /// The pass looked at the host alone (a Docker-triggered pass).
    pub(super) host_only: bool,
    /// What the writes found missing that the alert book knew existed then: only those
    /// creates are removals to alert on once the writes finish (a create of a new stack's
    /// resource is not, even if the book has seen it since).
    pub(super) known_missing: BTreeSet<ResourceId>,
    /// The lease check its writes go through, when this daemon leads.
    pub(super) lease_gate: Option<Arc<lease::LeaseGate>>,
}

/// The resources some write is working on now. A pass claims what it is about to write; a
/// later pass leaves claimed resources alone.
#[derive(Debug, Clone, Default)]
pub(super) struct InFlight(Arc<Mutex<BTreeSet<ResourceId>>>);

impl InFlight {
    pub(super) fn ids(&self) -> BTreeSet<ResourceId> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// One pass's claims on [`InFlight`], released when the pass's writes end (or are
/// abandoned: dropping the task drops the claims).
pub(super) struct Claims {
    in_flight: InFlight,
    mine: Mutex<Vec<ResourceId>>,
}

impl Claims {
    pub(super) fn new(in_flight: InFlight) -> Self {
        Claims {
            in_flight,
            mine: Mutex::new(Vec::new()),
        }
    }

    /// True when `id` was free and is now this pass's to write.
    pub(super) fn claim(&self, id: &ResourceId) -> bool {
        let fresh = self
            .in_flight
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone());
        if fresh {
            self.mine
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(id.clone());
        }
        fresh
    }
}

impl Drop for Claims {
    fn drop(&mut self) {
        let mine = std::mem::take(self.mine.get_mut().unwrap_or_else(|e| e.into_inner()));
        let mut all = self.in_flight.0.lock().unwrap_or_else(|e| e.into_inner());
        for id in mine {
            all.remove(&id);
        }
    }
}
