//! `Instance`: the EC2 host. [`observe`] reads the stack's instances, their root volumes and
//! the subnets their Lookup selects; [`diff`] is pure and table-tested (one live object per
//! declared instance: duplicates are removed); [`apply`] launches, repairs in place (a new
//! type is stop → modify → start, a bigger or other-type volume is modified live) and
//! replaces only for what cannot change in place. [`live`] holds the observed types.

mod apply;
mod diff;
mod live;
mod observe;

pub use apply::apply_instance;
pub use diff::{check_ownership, chosen, diff_instances, is_live};
pub use live::{InstancesObserved, LiveInstance};
pub use observe::observe_instances;

/// Instance tag holding the hash of the user data it was launched with (DescribeInstances does
/// not return user data; reading it would cost a call per cycle).
const TAG_USER_DATA: &str = "stackwarden:user-data-sha256";

/// Instance tag naming the Instance manifest it stands for: a Name tag changed or removed by
/// hand is then tag drift to restore, not a missing instance to launch again.
const TAG_RESOURCE: &str = "stackwarden:resource";

/// States of an instance that still exists.
pub(super) const LIVE_STATES: [&str; 4] = ["pending", "running", "stopping", "stopped"];

/// Instance writes.
#[derive(Debug)]
pub enum InstanceOp {
    /// Launch it (and settle a concurrent launch: the newer of two is terminated).
    Run {
        /// Instance manifest name.
        name: String,
    },
    /// Terminate an instance.
    Terminate {
        /// `i-…`.
        id: String,
    },
    /// Start a stopped instance.
    Start {
        /// `i-…`.
        id: String,
    },
    /// Change the instance type: stop, modify, start (the root volume and its data stay).
    Resize {
        /// `i-…`.
        id: String,
        /// The type to set.
        instance_type: String,
    },
    /// Delete the root volume with the instance again.
    DeleteOnTermination {
        /// `i-…`.
        id: String,
        /// The root device name.
        device: String,
    },
    /// Modify the root volume in place (grow it, change its type).
    Volume {
        /// `vol-…`.
        volume_id: String,
        /// New size in GiB, when it grows.
        size_gib: Option<i32>,
        /// New type, when it changes.
        volume_type: Option<String>,
    },
    /// Put the desired tags.
    Tag {
        /// `i-…`.
        id: String,
        /// Instance manifest name.
        name: String,
    },
    /// Remove tags nobody declared.
    Untag {
        /// `i-…`.
        id: String,
        /// The tag keys.
        keys: Vec<String>,
    },
    /// Set all four metadata options.
    Metadata {
        /// `i-…`.
        id: String,
        /// Instance manifest name.
        name: String,
    },
    /// Associate the instance profile.
    Associate {
        /// `i-…`.
        id: String,
        /// Instance manifest name.
        name: String,
    },
    /// Replace the associated profile.
    ReplaceProfile {
        /// The association id.
        association: String,
        /// Instance manifest name.
        name: String,
    },
    /// Set the security groups.
    Groups {
        /// `i-…`.
        id: String,
        /// Instance manifest name.
        name: String,
    },
}
