//! The AWS API budget: a token bucket per service, so that no trigger storm and no bug in the
//! loop can make the daemon throttle the account. A pass spends what it called; when a
//! service's bucket is in debt the next pass waits until it has refilled. Pure: the caller
//! passes the clock.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Calls a service may burst to: several steady passes (each ≤ 15 calls in all) back to back.
pub const CAPACITY: f64 = 60.0;
/// Sustained calls per second per service: far below any AWS API's throttling rate.
pub const REFILL_PER_SECOND: f64 = 2.0;

/// Token buckets by service.
#[derive(Debug, Clone)]
pub struct Budget {
    buckets: BTreeMap<String, (f64, Instant)>,
    capacity: f64,
    refill: f64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget::new(CAPACITY, REFILL_PER_SECOND)
    }
}

impl Budget {
    /// A budget with this capacity and refill rate per service.
    pub fn new(capacity: f64, refill_per_second: f64) -> Budget {
        Budget {
            buckets: BTreeMap::new(),
            capacity,
            refill: refill_per_second,
        }
    }

    fn level(&self, service: &str, now: Instant) -> f64 {
        match self.buckets.get(service) {
            None => self.capacity,
            Some((tokens, at)) => {
                let gained = now.saturating_duration_since(*at).as_secs_f64() * self.refill;
                (tokens + gained).min(self.capacity)
            }
        }
    }

    /// Spends `calls` of `service` at `now` (it may go into debt: the calls were made).
    pub fn spend(&mut self, service: &str, calls: u64, now: Instant) {
        let level = self.level(service, now) - calls as f64;
        self.buckets.insert(service.to_string(), (level, now));
    }

    /// How long until every service is out of debt (zero when none is).
    pub fn wait(&self, now: Instant) -> Duration {
        self.buckets
            .keys()
            .map(|s| self.level(s, now))
            .filter(|l| *l < 0.0)
            .map(|l| Duration::from_secs_f64(-l / self.refill))
            .max()
            .unwrap_or(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_passes_fit_and_a_storm_is_slowed_to_the_refill_rate() {
        let t0 = Instant::now();
        let mut b = Budget::new(60.0, 2.0);
        for _ in 0..4 {
            b.spend("ec2", 15, t0);
        }
        assert_eq!(b.wait(t0), Duration::ZERO, "four passes fit the burst");
        b.spend("ec2", 15, t0);
        assert_eq!(b.wait(t0), Duration::from_secs_f64(7.5));
        assert_eq!(b.wait(t0 + Duration::from_secs(8)), Duration::ZERO);
        assert_eq!(
            b.wait(t0),
            b.wait(t0),
            "waiting is a pure function of the clock"
        );
    }

    #[test]
    fn services_have_separate_buckets() {
        let t0 = Instant::now();
        let mut b = Budget::new(10.0, 1.0);
        b.spend("s3", 12, t0);
        b.spend("ec2", 5, t0);
        assert_eq!(b.wait(t0), Duration::from_secs(2));
    }
}
