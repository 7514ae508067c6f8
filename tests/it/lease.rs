//! Leases by the observer's clock (issue 35): who leads is never decided by a clock. Two
//! contenders share a real S3 lease object on moto, each with a wall clock days off the
//! other's; a standby judges the lease lapsed only once it has seen the object unchanged for
//! the holder's TTL by its own monotonic clock. What holds the lease is read from S3.

use crate::support::moto::Moto;
use stackwarden::reconcile::lease::{Holding, Lease, LeaseScope};
use std::time::{Duration, SystemTime};

const BUCKET: &str = "lease-clock-test";
const TTL: Duration = Duration::from_secs(2);
const DAYS: Duration = Duration::from_secs(3 * 24 * 3600);

async fn contenders() -> (Moto, Lease, Lease) {
    let moto = Moto::start_bare().await;
    let s3 = stackwarden::provider::aws::s3_client(&moto.sdk_config().await);
    s3.create_bucket().bucket(BUCKET).send().await.unwrap();
    let lease = |who: &str| {
        Lease::new(
            s3.clone(),
            BUCKET,
            "clocks",
            "test",
            LeaseScope::Aws,
            // Not `role@host:pid` of a process here: neither can judge the other gone from
            // this host's process table.
            who.to_string(),
            TTL,
        )
    };
    let (a, b) = (lease("leader"), lease("standby"));
    (moto, a, b)
}

fn held(h: &Holding) -> bool {
    matches!(h, Holding::Held { .. })
}

/// A live leader whose clock is three days slow writes expiries long past by the standby's
/// clock; it renews every third of its TTL and keeps the lease through five TTLs.
#[tokio::test]
async fn a_live_leader_whose_clock_is_days_slow_keeps_its_lease() {
    let (_moto, leader, standby) = contenders().await;
    let slow = || SystemTime::now() - DAYS;
    assert!(held(&leader.acquire(slow()).await.unwrap()));
    for _ in 0..15 {
        tokio::time::sleep(TTL / 3).await;
        let seen = standby.acquire(SystemTime::now()).await.unwrap();
        assert!(
            !held(&seen),
            "the standby took a live leader's lease: {seen:?}"
        );
        assert!(
            held(&leader.acquire(slow()).await.unwrap()),
            "the leader lost it"
        );
    }
    assert!(standby.renewal_seen(), "the standby saw the leader renew");
}

/// A standby whose clock is three days slow reads the frozen leader's expiry as days ahead;
/// it still takes the lease once the object has gone unchanged for the TTL.
#[tokio::test]
async fn a_standby_whose_clock_is_days_slow_takes_over_from_a_frozen_leader() {
    let (_moto, leader, standby) = contenders().await;
    assert!(held(&leader.acquire(SystemTime::now()).await.unwrap()));
    // The leader freezes: it never renews again.
    let slow = || SystemTime::now() - DAYS;
    let first = standby.acquire(slow()).await.unwrap();
    assert!(!held(&first), "taken on first sight: {first:?}");
    let mut took = false;
    for _ in 0..12 {
        tokio::time::sleep(TTL / 3).await;
        if held(&standby.acquire(slow()).await.unwrap()) {
            took = true;
            break;
        }
    }
    assert!(took, "the standby never took over from a frozen leader");
    assert!(!standby.renewal_seen());
    // And the leader, thawed, finds it taken.
    let back = leader.acquire(SystemTime::now()).await.unwrap();
    assert!(
        matches!(&back, Holding::Other { holder, .. } if holder == "standby"),
        "{back:?}"
    );
}
