//! Per-resource backoff: a resource whose write (or read) failed is left alone for a while,
//! longer after each failure, with jitter so that several failing resources do not retry in
//! lockstep. A success resets it. The failure's class sets the policy: a transient one is
//! retried after its delay; a permanent one (access denied, an invalid parameter) waits for
//! the next resync or a manifest change, and is never retried hot. Pure: the caller passes
//! the clock and the random draw.

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

/// The delay before attempt `failures + 1`, jittered by `draw` in [0, 1).
pub fn delay(failures: u32, draw: f64) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)));
    let capped = exp.min(BACKOFF_CAP);
    let factor = 1.0 - JITTER + 2.0 * JITTER * draw.clamp(0.0, 1.0);
    capped.mul_f64(factor)
}

/// One resource's wait.
#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    until: SystemTime,
    /// Released early by a resync (its `until` is only the expected resync time).
    until_resync: bool,
}

/// The backoff state of every resource (`Kind/name` → failures and the end of its wait).
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    entries: BTreeMap<String, Entry>,
}

impl Backoff {
    /// Records a failure of `id` at `now`: a retryable one waits its jittered delay; a
    /// permanent one waits until `next_resync` (or longer, after repeated failures).
    pub fn failed(
        &mut self,
        id: &str,
        class: ErrorClass,
        now: SystemTime,
        next_resync: SystemTime,
        draw: f64,
    ) {
        let failures = self.entries.get(id).map(|e| e.failures + 1).unwrap_or(1);
        let retry = now + delay(failures, draw);
        let entry = if class.is_retryable() {
            Entry {
                failures,
                until: retry,
                until_resync: false,
            }
        } else {
            Entry {
                failures,
                until: retry.max(next_resync),
                until_resync: retry <= next_resync,
            }
        };
        self.entries.insert(id.to_string(), entry);
    }

    /// Consecutive failures of `id` (0 when it is not failing).
    pub fn failures(&self, id: &str) -> u32 {
        self.entries.get(id).map_or(0, |e| e.failures)
    }

    /// A resync gives every permanently failing resource one more attempt (someone may have
    /// fixed the permission); failing again holds it until the next one.
    pub fn resync(&mut self) {
        self.entries.retain(|_, e| !e.until_resync);
    }

    /// Forgets `id` (its write succeeded, or it needs nothing any more).
    pub fn reset(&mut self, id: &str) {
        self.entries.remove(id);
    }

    /// Forgets everything (a new manifest revision deserves a fresh attempt).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// True while `id` must not be written.
    pub fn holds(&self, id: &str, now: SystemTime) -> bool {
        self.entries.get(id).is_some_and(|e| e.until > now)
    }

    /// Keeps only the ids `keep` accepts.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.entries.retain(|id, _| keep(id));
    }

    /// When each resource's wait ends.
    pub fn until(&self) -> BTreeMap<String, SystemTime> {
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
        let mut b = Backoff::default();
        b.failed("Container/loki", ErrorClass::Transient, t0, resync, 0.5);
        assert!(b.holds("Container/loki", t0 + Duration::from_millis(100)));
        assert!(!b.holds("Container/loki", t0 + Duration::from_millis(300)));
        assert!(!b.holds("Container/mimir", t0));
        b.failed("Container/loki", ErrorClass::Transient, t0, resync, 0.5);
        assert_eq!(b.next_expiry(t0), Some(t0 + BACKOFF_BASE * 2));
        b.reset("Container/loki");
        assert!(!b.holds("Container/loki", t0));
        assert_eq!(b.next_expiry(t0), None);
    }

    #[test]
    fn a_permanent_failure_waits_for_the_resync_and_is_never_retried_hot() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let resync = t0 + Duration::from_secs(30);
        let mut b = Backoff::default();
        b.failed("Bucket/data", ErrorClass::Permanent, t0, resync, 0.5);
        assert!(b.holds("Bucket/data", t0 + Duration::from_secs(29)));
        // No retry timer fires for it: only the resync (or a manifest change) frees it.
        assert_eq!(b.next_expiry(t0), None);
        b.resync();
        assert!(!b.holds("Bucket/data", t0 + Duration::from_secs(1)));
        // A transient failure is not released by a resync: its own timer runs.
        b.failed("Bucket/data", ErrorClass::Transient, t0, resync, 0.5);
        b.resync();
        assert!(b.holds("Bucket/data", t0 + Duration::from_millis(100)));
    }
}
