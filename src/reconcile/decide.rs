//! The loop's decisions, pure and table-tested: what a pass looks at, whether this daemon
//! writes this pass, which planned change it may write, and how the pass ends. No clock, no
//! I/O: the pass (the shell of effects in `mod.rs`) gathers the facts and acts on the answer.

use crate::model::Kind;
use crate::plan::Change;
use crate::status::{PassResult, Trigger};

/// Whether this daemon may write this pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acting {
    /// Everything not held back.
    Full,
    /// Only the bucket: there is nowhere to hold a lease before it exists.
    BucketOnly,
    /// Nothing: another actor holds the lease, or nobody can tell who does.
    Standby,
}

/// What decides [`Acting`] before any lease call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseChoice {
    /// Decided without asking S3.
    Decided(Acting),
    /// Take or renew the lease now; its answer decides.
    Ask,
}

/// The facts [`acting`] decides from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseFacts {
    /// The stack's mode writes (enforce); observe and warn never do.
    pub repairs: bool,
    /// This pass looks at the host alone (see [`host_only`]).
    pub host_only: bool,
    /// A lease object is known for the stack (the bucket is named).
    pub has_lease: bool,
    /// This daemon led at its last lease call and that lease has not expired.
    pub holds_unexpired: bool,
    /// AWS is in the daemon's scope.
    pub aws_in_scope: bool,
    /// AWS answered this pass.
    pub aws_up: bool,
}

/// Whether this daemon writes this pass, or must ask the lease first.
///
/// - Observe and warn modes write nothing, the lease object included: no lease.
/// - A host-only pass between lease checks goes by the lease it holds (the writes' gate
///   still confirms it before each write).
/// - Where AWS answers (or is not in scope: a host-only daemon has no lease), ask.
/// - AWS unreachable: the lease held stays ours until its expiry, so the host is repaired
///   meanwhile; without one, nobody can tell who acts, and nothing is written.
pub fn acting(f: LeaseFacts) -> LeaseChoice {
    use LeaseChoice::{Ask, Decided};
    if !f.repairs {
        Decided(Acting::Standby)
    } else if f.host_only && f.has_lease {
        Decided(if f.holds_unexpired {
            Acting::Full
        } else {
            Acting::Standby
        })
    } else if !f.aws_in_scope || f.aws_up {
        Ask
    } else if f.holds_unexpired {
        Decided(Acting::Full)
    } else {
        Decided(Acting::Standby)
    }
}

/// The one rule by which a trigger changes what a pass does, not only when it runs: a
/// Docker event can only mean a change on the host, so that pass observes the host alone
/// and a container is repaired without waiting on AWS or spending its call budget. Still
/// level-triggered: the host is reconciled whole, and AWS at the next other trigger.
pub fn host_only(trigger: Trigger, host_connected: bool) -> bool {
    trigger == Trigger::Docker && host_connected
}

/// Why a planned change may not be written this pass, if it may not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Another actor holds the lease (or the mode does not write).
    Standby,
    /// Before the bucket exists only the bucket is written.
    BucketFirst,
    /// Its last write failed and its backoff has not run out.
    Backoff,
    /// A health restart waits its turn after the last one.
    RestartWait,
}

/// Whether `change` may be written: `None` when it may.
pub fn hold(
    acting: Acting,
    change: &Change,
    in_backoff: bool,
    restart_waits: bool,
) -> Option<Hold> {
    match acting {
        Acting::Standby => Some(Hold::Standby),
        Acting::BucketOnly if change.id.kind != Kind::Bucket => Some(Hold::BucketFirst),
        Acting::BucketOnly => None,
        Acting::Full if in_backoff => Some(Hold::Backoff),
        Acting::Full if restart_waits => Some(Hold::RestartWait),
        Acting::Full => None,
    }
}

/// How a pass ended: failed when something could not be observed or a write failed,
/// drifted when differences remain, else converged.
pub fn result(incomplete: bool, a_write_failed: bool, differs: bool) -> PassResult {
    if incomplete || a_write_failed {
        PassResult::Failed
    } else if differs {
        PassResult::Drifted
    } else {
        PassResult::Converged
    }
}

/// Whether the daemon alerts after this pass: a standby leaves alerting to the leader (one
/// alert, not one per daemon); where nobody writes (observe, warn) each daemon alerts.
pub fn alerts(acting: Acting, repairs: bool) -> bool {
    acting != Acting::Standby || !repairs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ResourceId;
    use crate::plan::Action;

    fn facts(
        repairs: bool,
        host_only: bool,
        has_lease: bool,
        holds_unexpired: bool,
        aws_in_scope: bool,
        aws_up: bool,
    ) -> LeaseFacts {
        LeaseFacts {
            repairs,
            host_only,
            has_lease,
            holds_unexpired,
            aws_in_scope,
            aws_up,
        }
    }

    #[test]
    fn who_writes_this_pass() {
        use Acting::*;
        use LeaseChoice::*;
        // (repairs, host_only, has_lease, holds_unexpired, aws_in_scope, aws_up) → choice
        let table = [
            (
                (false, false, true, true, true, true),
                Decided(Standby),
                "observe mode",
            ),
            (
                (false, true, true, true, true, true),
                Decided(Standby),
                "observe, host-only",
            ),
            (
                (true, true, true, true, true, true),
                Decided(Full),
                "host-only, leading",
            ),
            (
                (true, true, true, false, true, true),
                Decided(Standby),
                "host-only, standing by",
            ),
            (
                (true, true, false, false, false, false),
                Ask,
                "host-only daemon: no lease",
            ),
            ((true, false, true, false, true, true), Ask, "AWS answers"),
            (
                (true, false, false, false, false, false),
                Ask,
                "AWS out of scope",
            ),
            (
                (true, false, true, true, true, false),
                Decided(Full),
                "AWS down, lease held",
            ),
            (
                (true, false, true, false, true, false),
                Decided(Standby),
                "AWS down, no lease",
            ),
            (
                (true, false, false, false, true, false),
                Decided(Standby),
                "AWS down, no bucket",
            ),
        ];
        for ((r, h, l, u, s, up), want, case) in table {
            assert_eq!(acting(facts(r, h, l, u, s, up)), want, "{case}");
        }
    }

    #[test]
    fn only_a_docker_event_makes_a_host_only_pass_and_only_with_the_host_connected() {
        for trigger in [
            Trigger::Startup,
            Trigger::Resync,
            Trigger::Retry,
            Trigger::Manifest,
            Trigger::Http,
        ] {
            assert!(!host_only(trigger, true), "{trigger:?}");
        }
        assert!(host_only(Trigger::Docker, true));
        assert!(!host_only(Trigger::Docker, false));
    }

    #[test]
    fn what_holds_a_change_back() {
        let change = |kind| Change::new(ResourceId::new(kind, "x"), Action::Update);
        let (bucket, container) = (change(Kind::Bucket), change(Kind::Container));
        let table = [
            (Acting::Standby, &bucket, false, false, Some(Hold::Standby)),
            (Acting::BucketOnly, &bucket, true, false, None),
            (
                Acting::BucketOnly,
                &container,
                false,
                false,
                Some(Hold::BucketFirst),
            ),
            (Acting::Full, &container, true, false, Some(Hold::Backoff)),
            (
                Acting::Full,
                &container,
                false,
                true,
                Some(Hold::RestartWait),
            ),
            (Acting::Full, &container, false, false, None),
        ];
        for (acting, c, backoff, restart, want) in table {
            assert_eq!(
                hold(acting, c, backoff, restart),
                want,
                "{acting:?} {}",
                c.id
            );
        }
    }

    #[test]
    fn a_pass_fails_on_anything_unknown_or_unwritten_and_converges_only_when_nothing_differs() {
        let table = [
            ((true, false, false), PassResult::Failed),
            ((false, true, false), PassResult::Failed),
            ((false, false, true), PassResult::Drifted),
            ((false, false, false), PassResult::Converged),
        ];
        for ((incomplete, failed, differs), want) in table {
            assert_eq!(result(incomplete, failed, differs), want);
        }
    }

    #[test]
    fn a_standby_leaves_alerts_to_the_leader_unless_nobody_writes() {
        assert!(alerts(Acting::Full, true));
        assert!(alerts(Acting::BucketOnly, true));
        assert!(!alerts(Acting::Standby, true));
        assert!(alerts(Acting::Standby, false));
    }
}
