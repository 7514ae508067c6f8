//! `SecurityGroup`: the group and every rule in it. [`observe`] reads every group of the
//! region once; rules are normalized to one per (protocol, port, peer) before [`diff`], which
//! is pure and table-tested; [`apply`] creates, tags, replaces (a changed description) and
//! revokes or authorizes single rules. [`live`] holds the observed types.

mod apply;
mod diff;
mod live;
mod observe;

pub use apply::apply_group;
pub use diff::{check_ownership, diff_groups};
pub use live::{LiveGroup, LivePerm};
pub use observe::{describe_groups, live_groups};

use diff::RuleKey;

/// Ranges wider than this are kept whole rather than split per port (0-65535 would be 65536
/// rules); they never equal a desired per-port rule, so they show as drift.
const MAX_SPLIT_RANGE: i32 = 1024;

/// Security group writes.
#[derive(Debug)]
pub enum SecurityGroupOp {
    /// Create the group (in the looked-up VPC) with its tags.
    Create {
        /// SecurityGroup manifest name.
        name: String,
    },
    /// Put the desired tags (adoption, tag drift).
    Tag {
        /// SecurityGroup manifest name.
        name: String,
    },
    /// Remove tags nobody declared.
    Untag {
        /// SecurityGroup manifest name.
        name: String,
        /// The tag keys.
        keys: Vec<String>,
    },
    /// Delete the group and create it again under the same name (its description changed):
    /// this stack's instances are moved to the VPC's default group meanwhile, and back after.
    Replace {
        /// SecurityGroup manifest name.
        name: String,
        /// The live group's id.
        old_id: String,
        /// Its VPC (a group never moves, so the new one goes to the same VPC).
        vpc_id: String,
    },
    /// Revoke one live rule (by rule id).
    Revoke {
        /// Group name.
        group: String,
        /// Outbound?
        egress: bool,
        /// The live permission.
        perm: LivePerm,
    },
    /// Authorize one rule.
    Authorize {
        /// Group name.
        group: String,
        /// Outbound?
        egress: bool,
        /// The rule.
        rule: RuleKey,
        /// Its description.
        description: String,
    },
}
