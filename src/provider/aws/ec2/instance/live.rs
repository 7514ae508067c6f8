//! The instance as observed: the fields a person can change by hand, and its root volume.

use crate::model::Tags;
use std::collections::BTreeMap;

/// An instance as observed.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveInstance {
    /// `i-…`.
    pub id: String,
    /// State name (`running`, `terminated`, …).
    pub state: String,
    /// Instance type.
    pub instance_type: String,
    /// AMI id.
    pub image_id: String,
    /// The subnet it runs in.
    pub subnet_id: String,
    /// Security group ids.
    pub group_ids: Vec<String>,
    /// Instance profile ARN, when one is associated.
    pub profile_arn: Option<String>,
    /// The association id of that profile.
    pub profile_association: Option<String>,
    /// `required` / `optional`.
    pub http_tokens: String,
    /// Hop limit.
    pub hop_limit: i32,
    /// `enabled` / `disabled`.
    pub metadata_tags: String,
    /// `enabled` / `disabled`.
    pub http_endpoint: String,
    /// The root EBS volume as DescribeVolumes reports it (`None`: not read, or none).
    pub root_volume: Option<LiveVolume>,
    /// Tags.
    pub tags: Tags,
    /// Launch time as zero-padded epoch seconds, to prefer the oldest of duplicates.
    pub launched: String,
}

/// A root EBS volume as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveVolume {
    /// `vol-…`.
    pub id: String,
    /// Size in GiB.
    pub size_gib: i32,
    /// `gp3`, `gp2`, …
    pub volume_type: String,
    /// Encryption at rest.
    pub encrypted: bool,
    /// The device it is attached as (`/dev/xvda`).
    pub device: String,
    /// Deleted with the instance (an attachment setting: false leaves volumes behind).
    pub delete_on_termination: bool,
}

/// What observe reads for instances.
#[derive(Debug, Default)]
pub struct InstancesObserved {
    /// The stack's instances (any state) and adoption candidates.
    pub instances: Vec<LiveInstance>,
    /// Subnet ids each subnet Lookup an instance names selects (by its tags), sorted.
    pub subnets: BTreeMap<String, Vec<String>>,
}
