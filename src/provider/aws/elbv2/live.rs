//! Target groups, listener rules and the looked-up load balancers as observed.

use crate::model::{HealthCheckSpec, Tags};
use std::collections::{BTreeMap, BTreeSet};

/// A target group as observed.
#[derive(Debug, Clone)]
pub struct LiveTargetGroup {
    /// ARN.
    pub arn: String,
    /// Name.
    pub name: String,
    /// `HTTP`, `HTTPS`.
    pub protocol: String,
    /// Port.
    pub port: i32,
    /// The VPC id (fixed at creation).
    pub vpc_id: String,
    /// `instance`, `ip`, `lambda`, `alb` (fixed at creation).
    pub target_type: String,
    /// `HTTP1`, `HTTP2`, `GRPC` (fixed at creation).
    pub protocol_version: String,
    /// `ipv4`, `ipv6` (fixed at creation).
    pub ip_address_type: String,
    /// Health check as the model spells it.
    pub health_check: HealthCheckSpec,
    /// Load balancers using it (follows from the rules that forward to it).
    pub load_balancers: Vec<String>,
    /// Tags (read for declared and candidate orphan groups).
    pub tags: Tags,
    /// Every attribute, read for declared groups (deregistration delay, stickiness, …).
    pub attributes: BTreeMap<String, String>,
    /// Registered targets (instance id, port), draining ones excluded.
    pub targets: BTreeSet<(String, i32)>,
}

/// A listener rule as observed.
#[derive(Debug, Clone, Default)]
pub struct LiveRule {
    /// ARN.
    pub arn: String,
    /// Priority as the API spells it.
    pub priority: String,
    /// Path patterns of its (first) path-pattern condition, sorted.
    pub paths: Vec<String>,
    /// Every other condition (host, header, method, query, source IP, a second path
    /// pattern), rendered: a hand-added condition narrows or breaks the routing.
    pub extra_conditions: Vec<String>,
    /// Names of the target groups its (first) forward action sends to, sorted.
    pub forward: Vec<String>,
    /// Every other action or forward setting (fixed response, redirect, stickiness, …),
    /// rendered.
    pub extra_actions: Vec<String>,
    /// Tags.
    pub tags: Tags,
}

/// A looked-up load balancer with its listeners by port.
#[derive(Debug, Clone, Default)]
pub struct LiveLoadBalancer {
    /// ARN.
    pub arn: String,
    /// Listener ARNs by port.
    pub listeners: BTreeMap<u16, String>,
}

/// Everything ELBv2.
#[derive(Debug, Clone, Default)]
pub struct ElbObserved {
    /// Every target group of the region.
    pub target_groups: Vec<LiveTargetGroup>,
    /// Load balancer Lookups by manifest name (`None`: not found).
    pub load_balancers: BTreeMap<String, Option<LiveLoadBalancer>>,
    /// Non-default rules by listener ARN.
    pub rules: BTreeMap<String, Vec<LiveRule>>,
}
