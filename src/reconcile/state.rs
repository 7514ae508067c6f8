//! The loop's own memory between passes: what it last loaded, what it found in sync, what
//! waits in backoff, what is being written, which worlds answered and what part it plays on
//! the lease. The loop decides from this, never from the [`Status`](crate::status::Status) it
//! publishes: the status is a view of this state, not an input.

use super::backoff::Backoff;
use super::budget::Budget;
use super::detach::{Detached, InFlight};
use super::health;
use crate::model::{Desired, ResourceId};
use crate::status::{LeaseStatus, Reach, Role};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// The loop's clock: the wall time at start plus the time elapsed on tokio's clock since.
/// Backoff, restarts and the resync are reckoned on it, so that they advance with the
/// runtime's time (paused and advanced at will in tests) and a wall-clock step does not
/// release or prolong every backoff at once. The lease, compared across hosts, keeps to
/// the wall clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall: SystemTime,
    mono: tokio::time::Instant,
}

impl Clock {
    /// A clock starting now.
    pub fn start() -> Self {
        Clock {
            wall: SystemTime::now(),
            mono: tokio::time::Instant::now(),
        }
    }

    /// Now, on this clock.
    pub fn now(&self) -> SystemTime {
        self.wall + self.mono.elapsed()
    }

    /// The runtime instant at which this clock reads `at` (now, when `at` has passed).
    pub fn instant_at(&self, at: SystemTime) -> tokio::time::Instant {
        let delay = at.duration_since(self.now()).unwrap_or(Duration::ZERO);
        tokio::time::Instant::now() + delay
    }
}

/// Whether each world answered the last time it was asked; `None` until it was.
#[derive(Debug, Clone, Default)]
pub struct Reachability {
    /// The AWS APIs.
    pub aws: Option<Reach>,
    /// The Docker engine.
    pub docker: Option<Reach>,
}

impl Reachability {
    /// True when AWS answered last.
    pub fn aws_up(&self) -> bool {
        self.aws.as_ref().is_some_and(|r| r.reachable)
    }

    /// Why AWS did not answer, for people.
    pub fn aws_error(&self) -> String {
        why(&self.aws)
    }

    /// Why Docker did not answer, for people.
    pub fn docker_error(&self) -> String {
        why(&self.docker)
    }
}

fn why(reach: &Option<Reach>) -> String {
    reach
        .as_ref()
        .and_then(|r| r.error.clone())
        .unwrap_or_else(|| "not connected".to_string())
}

/// Fresh reachability: it answered.
pub fn up() -> Reach {
    Reach {
        reachable: true,
        error: None,
    }
}

/// Fresh reachability: it did not, and why.
pub fn down(error: impl Into<String>) -> Reach {
    Reach {
        reachable: false,
        error: Some(error.into()),
    }
}

/// Everything the loop remembers from one pass to the next.
pub(super) struct State {
    /// The last desired state that loaded (the one in force).
    pub(super) desired: Option<Desired>,
    /// Its content hash.
    pub(super) revision: Option<String>,
    /// The content hash of the last edit refused, so that it is logged once.
    pub(super) rejected_revision: Option<String>,
    /// Spec hash of each resource at the last pass that found it in sync: tells a manifest
    /// edit from a hand-made change for kinds that record no hash on the resource itself.
    pub(super) in_sync: BTreeMap<ResourceId, String>,
    /// What waits before its next write.
    pub(super) backoff: Backoff,
    /// Restarts of unhealthy containers, counted across restarts that worked.
    pub(super) restarts: health::Restarts,
    /// When the next resync is due: a permanently failing resource waits for it.
    pub(super) next_resync: SystemTime,
    /// The AWS call budget.
    pub(super) budget: Budget,
    /// What some write is working on now.
    pub(super) in_flight: InFlight,
    /// Writes that outlived their pass.
    pub(super) detached: Vec<Detached>,
    /// Which worlds answered.
    pub(super) reach: Reachability,
    /// This daemon's part on the lease.
    pub(super) lease: LeaseStatus,
}

impl State {
    pub(super) fn new(now: SystemTime) -> Self {
        State {
            desired: None,
            revision: None,
            rejected_revision: None,
            in_sync: BTreeMap::new(),
            backoff: Backoff::default(),
            restarts: health::Restarts::default(),
            next_resync: now,
            budget: Budget::default(),
            in_flight: InFlight::default(),
            detached: Vec::new(),
            reach: Reachability::default(),
            lease: LeaseStatus::default(),
        }
    }

    /// True while this daemon leads on a lease that has not run out.
    pub(super) fn holds_unexpired_lease(&self, now: SystemTime) -> bool {
        self.lease.role == Role::Leader && self.lease.expires.is_some_and(|e| e.0 > now)
    }

    /// Stands by with no known holder.
    pub(super) fn stand_by(&mut self) {
        self.lease = LeaseStatus {
            role: Role::Standby,
            holder: None,
            expires: None,
        };
    }
}
