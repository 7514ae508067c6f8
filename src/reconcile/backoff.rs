//! Per-resource backoff: a resource whose write (or read) failed is left alone for a while,
//! longer after each failure, with jitter so that several failing resources do not retry in
//! lockstep. A success resets it. The failure's class sets the policy: a transient one is
//! retried after its delay; a permanent one (access denied, an invalid parameter) waits for
//! the next resync or a manifest change, and is never retried hot. Pure: the caller passes
//! the clock and the random draw.

use crate::model::ResourceId;
use crate::provider::ErrorClass;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// First retry delay. Short: the commonest first failure is a race with a person changing
/// the same thing (`docker rm` then `docker run` of a root copy makes our create collide with
/// theirs), and the next attempt sees their result. Repeated failures double from here.
pub const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// Longest delay: a permanently failing resource is still retried every few minutes, and
/// always at a manifest change (the loop clears backoff when the revision changes).
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// ± fraction of the delay drawn at random.
pub const JITTER: f64 = 0.2;

/// The one exponential schedule of the loop: `base` after the first failure, doubling with
/// each one after, capped at `cap` (none before the first). Write failures and health
/// restarts both wait by it.
pub fn exponential(base: Duration, cap: Duration, count: u32) -> Duration {
    if count == 0 {
        return Duration::ZERO;
    }
    base.saturating_mul(2u32.saturating_pow(count.saturating_sub(1).min(30)))
        .min(cap)
}

/// The delay before attempt `failures + 1`, jittered by `draw` in [0, 1).
pub fn delay(failures: u32, draw: f64) -> Duration {
    let capped = exponential(BACKOFF_BASE, BACKOFF_CAP, failures.max(1));
    let factor = 1.0 - JITTER + 2.0 * JITTER * draw.clamp(0.0, 1.0);
    capped.mul_f64(factor)
}

/// How often an event about a resource may cut its wait short: often enough that a person
/// removing what blocked it sees it repaired at once, seldom enough that the events of the
/// loop's own failing writes cannot make a tight retry loop.
pub const LIFT_EVERY: Duration = Duration::from_secs(5);

/// One resource's wait.
#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    until: SystemTime,
    /// Released early by a resync (its `until` is only the expected resync time).
    until_resync: bool,
    /// When an event last cut its wait short.
    lifted: Option<SystemTime>,
}

/// The backoff state of every resource (failures and the end of its wait).
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    entries: BTreeMap<ResourceId, Entry>,
}

impl Backoff {
    /// Records a failure of `id` at `now`: a retryable one waits its jittered delay; a
    /// permanent one waits until `next_resync` (or longer, after repeated failures).
    pub fn failed(
        &mut self,
        id: &ResourceId,
        class: ErrorClass,
        now: SystemTime,
        next_resync: SystemTime,
        draw: f64,
    ) {
        let before = self.entries.get(id);
        let failures = before.map(|e| e.failures + 1).unwrap_or(1);
        let lifted = before.and_then(|e| e.lifted);
        let retry = now + delay(failures, draw);
        let entry = if class.is_retryable() {
            Entry {
                failures,
                until: retry,
                until_resync: false,
                lifted,
            }
        } else {
            Entry {
                failures,
                until: retry.max(next_resync),
                until_resync: retry <= next_resync,
                lifted,
            }
        };
        self.entries.insert(id.clone(), entry);
    }

    /// Consecutive failures of `id` (0 when it is not failing).
    pub fn failures(&self, id: &ResourceId) -> u32 {
        self.entries.get(id).map_or(0, |e| e.failures)
    }

    /// A resync gives every permanently failing resource one more attempt (someone may have
    /// fixed the permission); failing again holds it until the next one.
    pub fn resync(&mut self) {
        self.entries.retain(|_, e| !e.until_resync);
    }

    /// An event about `id` (its container changed): whatever blocked it may be gone, so its
    /// wait ends now, at most once per [`LIFT_EVERY`]. Its failure count stays: failing
    /// again waits longer, as ever.
    pub fn lift(&mut self, id: &ResourceId, now: SystemTime) {
        if let Some(e) = self.entries.get_mut(id)
            && e.until > now
            && e.lifted.is_none_or(|at| now >= at + LIFT_EVERY)
        {
            e.until = now;
            e.until_resync = false;
            e.lifted = Some(now);
        }
    }

    /// Forgets `id` (its write succeeded, or it needs nothing any more).
    pub fn reset(&mut self, id: &ResourceId) {
        self.entries.remove(id);
    }

    /// Forgets everything (a new manifest revision deserves a fresh attempt).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// True while `id` must not be written.
    pub fn holds(&self, id: &ResourceId, now: SystemTime) -> bool {
        self.entries.get(id).is_some_and(|e| e.until > now)
    }

    /// Keeps only the ids `keep` accepts.
    pub fn retain(&mut self, keep: impl Fn(&ResourceId) -> bool) {
        self.entries.retain(|id, _| keep(id));
    }

    /// When each resource's wait ends.
    pub fn until(&self) -> BTreeMap<ResourceId, SystemTime> {
        self.entries
            .iter()
            .map(|(id, e)| (id.clone(), e.until))
            .collect()
    }

    /// The earliest end of a wait still in the future, for the retry timer.
    pub fn next_expiry(&self, now: SystemTime) -> Option<SystemTime> {
        self.entries
            .values()
            .filter(|e| !e.until_resync)
            .map(|e| e.until)
            .filter(|u| *u > now)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;

    fn id(kind: Kind, name: &str) -> ResourceId {
        ResourceId::new(kind, name)
    }

    #[test]
    fn delays_double_then_cap_and_stay_within_the_jitter() {
        assert_eq!(delay(1, 0.5), BACKOFF_BASE);
        assert_eq!(delay(2, 0.5), BACKOFF_BASE * 2);
        assert_eq!(delay(3, 0.5), BACKOFF_BASE * 4);
        assert_eq!(delay(40, 0.5), BACKOFF_CAP);
        assert_eq!(delay(1, 0.0), BACKOFF_BASE.mul_f64(0.8));
        assert_eq!(delay(1, 1.0), BACKOFF_BASE.mul_f64(1.2));
    }

    #[test]
    fn a_failing_resource_is_held_until_its_wait_ends_and_a_success_resets_it() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let resync = t0 + Duration::from_secs(30);
        let (loki, mimir) = (id(Kind::Container, "loki"), id(Kind::Container, "mimir"));
        let mut b = Backoff::default();
        b.failed(&loki, ErrorClass::Transient, t0, resync, 0.5);
        assert!(b.holds(&loki, t0 + Duration::from_millis(100)));
        assert!(!b.holds(&loki, t0 + Duration::from_millis(300)));
        assert!(!b.holds(&mimir, t0));
        b.failed(&loki, ErrorClass::Transient, t0, resync, 0.5);
        assert_eq!(b.next_expiry(t0), Some(t0 + BACKOFF_BASE * 2));
        b.reset(&loki);
        assert!(!b.holds(&loki, t0));
        assert_eq!(b.next_expiry(t0), None);
    }

    #[test]
    fn a_permanent_failure_waits_for_the_resync_and_is_never_retried_hot() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let resync = t0 + Duration::from_secs(30);
        let data = id(Kind::Bucket, "data");
        let mut b = Backoff::default();
        b.failed(&data, ErrorClass::Permanent, t0, resync, 0.5);
        assert!(b.holds(&data, t0 + Duration::from_secs(29)));
        // No retry timer fires for it: only the resync (or a manifest change) frees it.
        assert_eq!(b.next_expiry(t0), None);
        b.resync();
        assert!(!b.holds(&data, t0 + Duration::from_secs(1)));
        // A transient failure is not released by a resync: its own timer runs.
        b.failed(&data, ErrorClass::Transient, t0, resync, 0.5);
        b.resync();
        assert!(b.holds(&data, t0 + Duration::from_millis(100)));
    }
}

#[cfg(test)]
mod lift {
    use super::*;
    use crate::model::Kind;

    #[test]
    fn an_event_lifts_a_wait_at_once_but_not_twice_within_the_lift_interval() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let resync = t0 + Duration::from_secs(60);
        let loki = ResourceId::new(Kind::Container, "loki");
        let mut b = Backoff::default();
        // A permanent failure (a name held by someone else) waits for the resync…
        b.failed(&loki, ErrorClass::Permanent, t0, resync, 0.5);
        assert!(b.holds(&loki, t0 + Duration::from_secs(1)));
        // …until an event about it: the holder went away.
        b.lift(&loki, t0 + Duration::from_secs(1));
        assert!(!b.holds(&loki, t0 + Duration::from_secs(1)));
        assert_eq!(b.failures(&loki), 1, "the count stays");
        // Failing again right away, its own events cannot lift it again so soon…
        let t1 = t0 + Duration::from_secs(2);
        b.failed(&loki, ErrorClass::Transient, t1, resync, 0.5);
        b.lift(&loki, t1);
        assert!(b.holds(&loki, t1), "lifted twice within LIFT_EVERY");
        // …but a later event can.
        let t2 = t0 + Duration::from_secs(1) + LIFT_EVERY;
        b.failed(&loki, ErrorClass::Permanent, t2, resync, 0.5);
        b.lift(&loki, t2);
        assert!(!b.holds(&loki, t2));
        // An event about a resource that is not waiting changes nothing.
        let mimir = ResourceId::new(Kind::Container, "mimir");
        b.lift(&mimir, t2);
        assert_eq!(b.failures(&mimir), 0);
    }

    #[test]
    fn health_restarts_and_write_failures_share_one_schedule() {
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(300);
        let waits: Vec<u64> = (0..5)
            .map(|n| exponential(base, cap, n).as_secs())
            .collect();
        assert_eq!(waits, [0, 1, 2, 4, 8]);
        assert_eq!(exponential(base, cap, 40), cap);
        assert_eq!(delay(3, 0.5), exponential(BACKOFF_BASE, BACKOFF_CAP, 3));
    }
}
