//! Restarts of containers whose health check fails. A restart that brings a container back
//! is a success, so the per-resource backoff (which counts failed writes) would forget it at
//! once; a service that hangs again after every restart would then be restarted in a tight
//! loop, and nobody would hear of it. This keeps the count across restarts: each restart
//! waits twice as long as the one before, and the count (which the `ContainerUnhealthy`
//! alert reads) only clears once the container has stayed healthy for [`HEALTHY_FOR`].

use crate::model::ResourceId;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

/// How long a container must stay healthy after its last restart for its count to clear.
pub const HEALTHY_FOR: Duration = Duration::from_secs(30);
/// The wait before the second restart; it doubles with each one after.
const FIRST_WAIT: Duration = Duration::from_secs(1);
/// The longest wait between restarts.
const MAX_WAIT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy)]
struct Entry {
    count: u32,
    last: SystemTime,
}

/// Consecutive health restarts per container.
#[derive(Debug, Clone, Default)]
pub struct Restarts {
    entries: BTreeMap<ResourceId, Entry>,
}

impl Restarts {
    /// Records a restart of `id` at `now`.
    pub fn restarted(&mut self, id: &ResourceId, now: SystemTime) {
        let e = self.entries.entry(id.clone()).or_insert(Entry {
            count: 0,
            last: now,
        });
        e.count = e.count.saturating_add(1);
        e.last = now;
    }

    /// Consecutive restarts of `id` (0 once it stayed healthy).
    pub fn count(&self, id: &ResourceId) -> u32 {
        self.entries.get(id).map_or(0, |e| e.count)
    }

    /// True while `id` must wait before its next restart.
    pub fn holds(&self, id: &ResourceId, now: SystemTime) -> bool {
        self.entries
            .get(id)
            .is_some_and(|e| now < e.last + wait(e.count))
    }

    /// When the next restart of each waiting container may happen.
    pub fn until(&self) -> BTreeMap<ResourceId, SystemTime> {
        self.entries
            .iter()
            .map(|(id, e)| (id.clone(), e.last + wait(e.count)))
            .collect()
    }

    /// Clears the count of every container that is not unhealthy now and has not been
    /// restarted for [`HEALTHY_FOR`]; `looked_at` says which containers the pass saw.
    pub fn settle(
        &mut self,
        unhealthy: &BTreeSet<ResourceId>,
        looked_at: impl Fn(&ResourceId) -> bool,
        now: SystemTime,
    ) {
        self.entries
            .retain(|id, e| !looked_at(id) || unhealthy.contains(id) || now < e.last + HEALTHY_FOR);
    }
}

/// The wait after `count` restarts: none before the first, then 1 s, 2 s, 4 s, … up to 5 min.
fn wait(count: u32) -> Duration {
    super::backoff::exponential(FIRST_WAIT, MAX_WAIT, count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_wait_twice_as_long_each_time_and_clear_after_staying_healthy() {
        let loki = ResourceId::new(crate::model::Kind::Container, "loki");
        let mut r = Restarts::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert!(!r.holds(&loki, t0));
        r.restarted(&loki, t0);
        assert!(r.holds(&loki, t0 + Duration::from_millis(900)));
        assert!(!r.holds(&loki, t0 + Duration::from_secs(1)));
        let t1 = t0 + Duration::from_secs(1);
        r.restarted(&loki, t1);
        assert!(r.holds(&loki, t1 + Duration::from_millis(1900)));
        assert_eq!(r.count(&loki), 2);

        let unhealthy = BTreeSet::from([loki.clone()]);
        r.settle(&unhealthy, |_| true, t1 + HEALTHY_FOR * 2);
        assert_eq!(r.count(&loki), 2, "still unhealthy: kept");
        r.settle(&BTreeSet::new(), |_| true, t1 + HEALTHY_FOR / 2);
        assert_eq!(r.count(&loki), 2, "healthy, but not for long enough");
        r.settle(&BTreeSet::new(), |_| false, t1 + HEALTHY_FOR * 2);
        assert_eq!(r.count(&loki), 2, "not looked at: kept");
        r.settle(&BTreeSet::new(), |_| true, t1 + HEALTHY_FOR);
        assert_eq!(r.count(&loki), 0);
    }

    #[test]
    fn the_wait_is_capped() {
        assert_eq!(wait(40), MAX_WAIT);
    }
}
