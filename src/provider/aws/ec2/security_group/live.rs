//! A security group as observed: the group and its permissions as EC2 lists them.

use crate::model::Tags;

/// The other side of a live rule, as EC2 stores it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LivePeer {
    /// An IPv4 block.
    Cidr4(String),
    /// An IPv6 block.
    Cidr6(String),
    /// A security group id.
    Group(String),
}

/// One live permission (a rule as EC2 lists it, possibly a port range).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LivePerm {
    /// Normalized protocol: `tcp`, `udp`, `icmp`, `-1`, …
    pub protocol: String,
    /// First port (-1 for all).
    pub from: i32,
    /// Last port (-1 for all).
    pub to: i32,
    /// The peer.
    pub peer: LivePeer,
    /// Description, whitespace-normalized.
    pub description: String,
}

/// A security group as observed.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveGroup {
    /// `sg-…`.
    pub id: String,
    /// Group name.
    pub name: String,
    /// Its VPC.
    pub vpc_id: String,
    /// Its description, whitespace-normalized (immutable in EC2).
    pub description: String,
    /// Its tags.
    pub tags: Tags,
    /// Inbound permissions.
    pub ingress: Vec<LivePerm>,
    /// Outbound permissions.
    pub egress: Vec<LivePerm>,
}
