//! EC2: security groups and their rules, the instance, and the read-only lookups of the VPC,
//! subnets and looked-up groups. Rules are normalized to one per (protocol, port, peer) before
//! diffing; diffs are pure functions, unit-tested below.

use super::{
    ApplyCtx, AwsError, AwsProvider, NetworkCache, Observed, Op, Resolved, desired_tags,
    group_name_of, is_owned, lookup, tag_changes,
};
use crate::model::{
    Desired, Ensure, HttpTokens, IngressRule, InstanceSpec, Kind, LookupType, Peer, Protocol,
    ResourceId, SecurityGroupSpec, Tags,
};
use crate::plan::{Action, Change, Condition, ConditionStatus, FieldChange};
use crate::provider::{ProviderPlan, Step};
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, HttpTokensState, IamInstanceProfileSpecification,
    InstanceMetadataEndpointState, InstanceMetadataOptionsRequest, InstanceMetadataTagsState,
    IpPermission, IpRange, Ipv6Range, ResourceType, Tag, TagSpecification, UserIdGroupPair,
    VolumeType,
};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;

/// Instance tag holding the hash of the user data it was launched with (DescribeInstances does
/// not return user data; reading it would cost a call per cycle).
const TAG_USER_DATA: &str = "stackwarden:user-data-sha256";
/// Instance tag holding the root volume it was launched with (`gp3/30/encrypted`).
const TAG_ROOT_VOLUME: &str = "stackwarden:root-volume";
/// Instance tag holding the subnet Lookup it was launched into.
const TAG_SUBNET: &str = "stackwarden:subnet";
/// Ranges wider than this are kept whole rather than split per port (0-65535 would be 65536
/// rules); they never equal a desired per-port rule, so they show as drift.
const MAX_SPLIT_RANGE: i32 = 1024;
/// States of an instance that still exists.
const LIVE_STATES: [&str; 4] = ["pending", "running", "stopping", "stopped"];

// ---------------------------------------------------------------------------------------------
// Observed types

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
#[derive(Debug, Clone)]
pub struct LiveGroup {
    /// `sg-…`.
    pub id: String,
    /// Group name.
    pub name: String,
    /// Its VPC.
    pub vpc_id: String,
    /// Its tags.
    pub tags: Tags,
    /// Inbound permissions.
    pub ingress: Vec<LivePerm>,
    /// Outbound permissions.
    pub egress: Vec<LivePerm>,
}

/// An instance as observed.
#[derive(Debug, Clone)]
pub struct LiveInstance {
    /// `i-…`.
    pub id: String,
    /// State name (`running`, `terminated`, …).
    pub state: String,
    /// Instance type.
    pub instance_type: String,
    /// AMI id.
    pub image_id: String,
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
    /// Tags.
    pub tags: Tags,
    /// Launch time, to prefer the oldest of duplicates.
    pub launched: String,
}

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

/// Instance writes.
#[derive(Debug)]
pub enum InstanceOp {
    /// Launch it.
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
    /// Put the desired tags.
    Tag {
        /// `i-…`.
        id: String,
        /// Instance manifest name.
        name: String,
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

// ---------------------------------------------------------------------------------------------
// Normalization (pure)

/// A rule's identity after normalization: protocol, port span, peer (group name or CIDR).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleKey {
    /// Normalized protocol.
    pub protocol: String,
    /// First port (-1 for all).
    pub from: i32,
    /// Last port.
    pub to: i32,
    /// `sg:<group name>` or a CIDR.
    pub peer: String,
}

impl fmt::Display for RuleKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = if self.protocol == "-1" {
            "all"
        } else {
            &self.protocol
        };
        match (self.from, self.to) {
            (-1, -1) => write!(f, "{proto} {}", self.peer),
            (a, b) if a == b || self.protocol == "icmp" => write!(f, "{proto}/{a} {}", self.peer),
            (a, b) => write!(f, "{proto}/{a}-{b} {}", self.peer),
        }
    }
}

/// EC2 spells protocols as names or numbers, in any case.
pub fn normalize_protocol(p: &str) -> String {
    match p.to_ascii_lowercase().as_str() {
        "6" | "tcp" => "tcp".into(),
        "17" | "udp" => "udp".into(),
        "1" | "icmp" => "icmp".into(),
        "-1" | "all" => "-1".into(),
        other => other.into(),
    }
}

/// Descriptions compare with whitespace collapsed (consoles and Terraform add or trim it).
pub fn normalize_description(d: &str) -> String {
    d.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn peer_key(peer: &LivePeer, names: &BTreeMap<String, String>) -> String {
    match peer {
        LivePeer::Cidr4(c) | LivePeer::Cidr6(c) => c.to_ascii_lowercase(),
        LivePeer::Group(id) => format!(
            "sg:{}",
            names.get(id).cloned().unwrap_or_else(|| id.clone())
        ),
    }
}

/// Splits a live permission into per-port keys (ranges of tcp/udp up to [`MAX_SPLIT_RANGE`]).
pub fn split_perm(perm: &LivePerm, names: &BTreeMap<String, String>) -> Vec<RuleKey> {
    let peer = peer_key(&perm.peer, names);
    let splittable = matches!(perm.protocol.as_str(), "tcp" | "udp")
        && perm.from >= 0
        && perm.to >= perm.from
        && perm.to - perm.from < MAX_SPLIT_RANGE;
    if splittable {
        (perm.from..=perm.to)
            .map(|p| RuleKey {
                protocol: perm.protocol.clone(),
                from: p,
                to: p,
                peer: peer.clone(),
            })
            .collect()
    } else {
        let (from, to) = if perm.protocol == "-1" {
            (-1, -1)
        } else {
            (perm.from, perm.to)
        };
        vec![RuleKey {
            protocol: perm.protocol.clone(),
            from,
            to,
            peer,
        }]
    }
}

/// The desired rules of one direction as keys with descriptions.
pub fn desired_keys(
    rules: &[(String, Protocol, Vec<u16>, Peer)],
    group_name: &dyn Fn(&str) -> Option<String>,
) -> Vec<(RuleKey, String)> {
    let mut out = Vec::new();
    for (description, protocol, ports, peer) in rules {
        let peer = match (&peer.security_group, &peer.cidr) {
            (Some(sg), _) => format!("sg:{}", group_name(sg).unwrap_or_else(|| sg.clone())),
            (None, Some(c)) => c.trim().to_ascii_lowercase(),
            (None, None) => continue,
        };
        let proto = protocol.as_ec2().to_string();
        let spans: Vec<(i32, i32)> = match protocol {
            Protocol::All => vec![(-1, -1)],
            Protocol::Icmp if ports.is_empty() => vec![(-1, -1)],
            Protocol::Icmp => ports.iter().map(|p| (i32::from(*p), -1)).collect(),
            _ => ports
                .iter()
                .map(|p| (i32::from(*p), i32::from(*p)))
                .collect(),
        };
        for (from, to) in spans {
            out.push((
                RuleKey {
                    protocol: proto.clone(),
                    from,
                    to,
                    peer: peer.clone(),
                },
                normalize_description(description),
            ));
        }
    }
    out
}

/// What to do to one direction of a group's rules.
#[derive(Debug, Default, PartialEq)]
pub struct RuleDiff {
    /// Rules to authorize, with descriptions.
    pub add: Vec<(RuleKey, String)>,
    /// Live permissions to revoke.
    pub revoke: Vec<LivePerm>,
    /// What the plan shows.
    pub fields: Vec<FieldChange>,
}

/// Diffs desired against live rules of one direction. A changed description or a revoked
/// range means revoke + authorize (pair rules cannot be modified in place).
pub fn diff_rules(
    direction: &str,
    want: &[(RuleKey, String)],
    live: &[LivePerm],
    names: &BTreeMap<String, String>,
) -> RuleDiff {
    let want_map: BTreeMap<&RuleKey, &String> = want.iter().map(|(k, d)| (k, d)).collect();
    // Every live key with the permissions carrying it.
    let mut have: BTreeMap<RuleKey, Vec<&LivePerm>> = BTreeMap::new();
    for perm in live {
        for key in split_perm(perm, names) {
            have.entry(key).or_default().push(perm);
        }
    }
    let mut out = RuleDiff::default();
    let mut revoke: BTreeSet<LivePerm> = BTreeSet::new();
    let mut add: BTreeMap<RuleKey, String> = BTreeMap::new();
    for (key, desc) in &want_map {
        let path = format!("{direction}[{key}]");
        match have.get(*key) {
            None => {
                out.fields.push(FieldChange::added(path, describe(desc)));
                add.insert((*key).clone(), (*desc).clone());
            }
            Some(perms) => {
                let exact = perms.iter().any(|p| &&p.description == desc);
                if !exact {
                    let old = perms
                        .first()
                        .map(|p| p.description.clone())
                        .unwrap_or_default();
                    out.fields
                        .push(FieldChange::changed(path, describe(&old), describe(desc)));
                    add.insert((*key).clone(), (*desc).clone());
                }
                // Duplicates of the key with another description go; the exact one stays.
                let mut kept = false;
                for p in perms {
                    if exact && !kept && &&p.description == desc {
                        kept = true;
                    } else {
                        revoke.insert((*p).clone());
                    }
                }
            }
        }
    }
    for (key, perms) in &have {
        if !want_map.contains_key(key) {
            let desc = perms
                .first()
                .map(|p| p.description.clone())
                .unwrap_or_default();
            out.fields.push(FieldChange::removed(
                format!("{direction}[{key}]"),
                describe(&desc),
            ));
            revoke.extend(perms.iter().map(|p| (*p).clone()));
        }
    }
    // Revoking a range takes its other ports with it: authorize the wanted ones again.
    for perm in &revoke {
        for key in split_perm(perm, names) {
            if let Some(desc) = want_map.get(&key) {
                add.entry(key).or_insert_with(|| (*desc).clone());
            }
        }
    }
    out.revoke = revoke.into_iter().collect();
    out.add = add.into_iter().collect();
    out
}

fn describe(desc: &str) -> String {
    if desc.is_empty() {
        "(no description)".to_string()
    } else {
        format!("\"{desc}\"")
    }
}

fn tags_of(tags: &[Tag]) -> Tags {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
        .collect()
}

fn perms_of(perms: &[IpPermission]) -> Vec<LivePerm> {
    let mut out = Vec::new();
    for p in perms {
        let protocol = normalize_protocol(p.ip_protocol().unwrap_or("-1"));
        let (from, to) = if protocol == "-1" {
            (-1, -1)
        } else {
            (p.from_port().unwrap_or(-1), p.to_port().unwrap_or(-1))
        };
        let mut push = |peer: LivePeer, desc: Option<&str>| {
            out.push(LivePerm {
                protocol: protocol.clone(),
                from,
                to,
                peer,
                description: normalize_description(desc.unwrap_or("")),
            })
        };
        for r in p.ip_ranges() {
            if let Some(c) = r.cidr_ip() {
                push(LivePeer::Cidr4(c.to_string()), r.description());
            }
        }
        for r in p.ipv6_ranges() {
            if let Some(c) = r.cidr_ipv6() {
                push(LivePeer::Cidr6(c.to_string()), r.description());
            }
        }
        for g in p.user_id_group_pairs() {
            if let Some(id) = g.group_id() {
                push(LivePeer::Group(id.to_string()), g.description());
            }
        }
    }
    out
}

/// Observed groups by name; with duplicates across VPCs, an owned one wins.
pub fn live_groups(groups: &[aws_sdk_ec2::types::SecurityGroup]) -> BTreeMap<String, LiveGroup> {
    let mut out: BTreeMap<String, LiveGroup> = BTreeMap::new();
    for g in groups {
        let (Some(id), Some(name)) = (g.group_id(), g.group_name()) else {
            continue;
        };
        let live = LiveGroup {
            id: id.to_string(),
            name: name.to_string(),
            vpc_id: g.vpc_id().unwrap_or("").to_string(),
            tags: tags_of(g.tags()),
            ingress: perms_of(g.ip_permissions()),
            egress: perms_of(g.ip_permissions_egress()),
        };
        let replace = match out.get(name) {
            None => true,
            Some(existing) => {
                !existing
                    .tags
                    .contains_key(crate::model::ownership::MANAGED_BY_TAG)
                    && live
                        .tags
                        .contains_key(crate::model::ownership::MANAGED_BY_TAG)
            }
        };
        if replace {
            out.insert(name.to_string(), live);
        }
    }
    out
}

/// Group id → group name, for showing and keying rules.
fn id_names(observed: &Observed) -> BTreeMap<String, String> {
    observed
        .groups
        .values()
        .map(|g| (g.id.clone(), g.name.clone()))
        .collect()
}

/// True when an instance or group carries this stack's ownership tags.
pub fn owned(tags: &Tags, desired: &Desired) -> bool {
    is_owned(tags, desired)
}

fn ingress_tuples(spec: &SecurityGroupSpec) -> Vec<(String, Protocol, Vec<u16>, Peer)> {
    spec.ingress
        .iter()
        .map(|r| {
            (
                r.description.clone(),
                r.protocol,
                r.ports.clone(),
                r.from.clone(),
            )
        })
        .collect()
}

fn egress_tuples(spec: &SecurityGroupSpec) -> Vec<(String, Protocol, Vec<u16>, Peer)> {
    spec.egress
        .iter()
        .map(|r| {
            (
                r.description.clone(),
                r.protocol,
                r.ports.clone(),
                r.to.clone(),
            )
        })
        .collect()
}

/// The rule a new group starts with: all traffic out.
fn default_egress() -> LivePerm {
    LivePerm {
        protocol: "-1".into(),
        from: -1,
        to: -1,
        peer: LivePeer::Cidr4("0.0.0.0/0".into()),
        description: String::new(),
    }
}

/// Plans security groups: create, adopt, tag and rule changes. Groups are never deleted.
pub fn diff_groups(desired: &Desired, observed: &Observed, plan: &mut ProviderPlan<Op>) {
    let names = id_names(observed);
    let group_name = |m: &str| group_name_of(desired, m);
    for (r, spec) in desired.security_groups() {
        let live = observed.groups.get(&spec.name);
        let want_tags = desired_tags(desired, &spec.tags);
        let mut ops = Vec::new();
        let mut fields = Vec::new();
        let action = match live {
            None => {
                ops.push(SecurityGroupOp::Create {
                    name: r.id.name.clone(),
                });
                Action::Create
            }
            Some(g) if !is_owned(&g.tags, desired) => {
                tracing::info!(group = %spec.name, id = %g.id, "security group exists without ownership tags: planning to adopt it");
                ops.push(SecurityGroupOp::Tag {
                    name: r.id.name.clone(),
                });
                fields.extend(tag_changes(&want_tags, &g.tags));
                Action::Adopt
            }
            Some(g) => {
                let tf = tag_changes(&want_tags, &g.tags);
                if !tf.is_empty() {
                    ops.push(SecurityGroupOp::Tag {
                        name: r.id.name.clone(),
                    });
                    fields.extend(tf);
                }
                Action::Update
            }
        };
        let (live_in, live_out) = match live {
            Some(g) => (g.ingress.clone(), g.egress.clone()),
            None => (Vec::new(), vec![default_egress()]),
        };
        for (direction, egress, want, have) in [
            (
                "ingress",
                false,
                desired_keys(&ingress_tuples(spec), &group_name),
                live_in,
            ),
            (
                "egress",
                true,
                desired_keys(&egress_tuples(spec), &group_name),
                live_out,
            ),
        ] {
            let d = diff_rules(direction, &want, &have, &names);
            if action != Action::Create {
                fields.extend(d.fields);
            }
            for perm in d.revoke {
                ops.push(SecurityGroupOp::Revoke {
                    group: spec.name.clone(),
                    egress,
                    perm,
                });
            }
            for (rule, description) in d.add {
                ops.push(SecurityGroupOp::Authorize {
                    group: spec.name.clone(),
                    egress,
                    rule,
                    description,
                });
            }
        }
        if let Some(g) = live {
            plan.violations.extend(crate::policy::check_security_group(
                &r.id.to_string(),
                &live_spec(spec, g),
            ));
        }
        if ops.is_empty() {
            continue;
        }
        let change = Change::new(r.id.clone(), action).with_fields(fields);
        plan.steps.push(Step {
            change,
            ops: ops.into_iter().map(Op::SecurityGroup).collect(),
        });
    }
}

/// The live group as a spec, so the policy rules judge live state as they judge manifests.
fn live_spec(spec: &SecurityGroupSpec, g: &LiveGroup) -> SecurityGroupSpec {
    let ingress = g
        .ingress
        .iter()
        .map(|p| IngressRule {
            description: p.description.clone(),
            protocol: match p.protocol.as_str() {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                "icmp" => Protocol::Icmp,
                _ => Protocol::All,
            },
            ports: if p.from >= 0 && p.to >= p.from && p.to - p.from < MAX_SPLIT_RANGE {
                (p.from..=p.to)
                    .filter_map(|x| u16::try_from(x).ok())
                    .collect()
            } else {
                Vec::new()
            },
            from: match &p.peer {
                LivePeer::Cidr4(c) | LivePeer::Cidr6(c) => Peer {
                    security_group: None,
                    cidr: Some(c.clone()),
                },
                LivePeer::Group(id) => Peer {
                    security_group: Some(id.clone()),
                    cidr: None,
                },
            },
        })
        .collect();
    SecurityGroupSpec {
        ingress,
        egress: Vec::new(),
        ..spec.clone()
    }
}

// ---------------------------------------------------------------------------------------------
// Instances (pure diff)

/// The hex SHA-256 of user data (empty string when none).
pub fn user_data_hash(user_data: Option<&str>) -> String {
    hex::encode(Sha256::digest(user_data.unwrap_or("").as_bytes()))
}

/// How the root volume is recorded in the launch tag.
pub fn root_volume_tag(spec: &InstanceSpec) -> String {
    let v = &spec.root_volume;
    format!(
        "{}/{}/{}",
        v.volume_type.to_ascii_lowercase(),
        v.size_gib,
        if v.encrypted {
            "encrypted"
        } else {
            "unencrypted"
        }
    )
}

/// Why a live instance must be replaced rather than changed in place (empty: it need not).
pub fn replace_reasons(spec: &InstanceSpec, live: &LiveInstance) -> Vec<String> {
    let mut why = Vec::new();
    if let Some(ami) = &spec.ami.id
        && ami != &live.image_id
    {
        why.push(format!("pinned AMI changed {} → {ami}", live.image_id));
    }
    if !spec.instance_type.eq_ignore_ascii_case(&live.instance_type) {
        why.push(format!(
            "instance type changed {} → {}",
            live.instance_type, spec.instance_type
        ));
    }
    // Launch tags are compared only when present: an adopted instance has none.
    let checks = [
        (
            TAG_USER_DATA,
            user_data_hash(spec.user_data.as_deref()),
            "user data changed",
        ),
        (
            TAG_ROOT_VOLUME,
            root_volume_tag(spec),
            "root volume changed",
        ),
        (TAG_SUBNET, spec.subnet.clone(), "subnet changed"),
    ];
    for (tag, want, reason) in checks {
        if let Some(have) = live.tags.get(tag)
            && have != &want
        {
            why.push(reason.to_string());
        }
    }
    why
}

/// Metadata option fields that differ.
pub fn metadata_changes(spec: &InstanceSpec, live: &LiveInstance) -> Vec<FieldChange> {
    let m = &spec.metadata_options;
    let mut out = Vec::new();
    let tokens = match m.http_tokens {
        HttpTokens::Required => "required",
        HttpTokens::Optional => "optional",
    };
    let onoff = |b: bool| if b { "enabled" } else { "disabled" };
    for (path, have, want) in [
        (
            "metadataOptions.httpTokens",
            live.http_tokens.clone(),
            tokens.to_string(),
        ),
        (
            "metadataOptions.httpPutResponseHopLimit",
            live.hop_limit.to_string(),
            m.http_put_response_hop_limit.to_string(),
        ),
        (
            "metadataOptions.instanceMetadataTags",
            live.metadata_tags.clone(),
            onoff(m.instance_metadata_tags).to_string(),
        ),
        (
            "metadataOptions.httpEndpoint",
            live.http_endpoint.clone(),
            onoff(m.http_endpoint).to_string(),
        ),
    ] {
        if !have.eq_ignore_ascii_case(&want) {
            out.push(FieldChange::changed(path, have, want));
        }
    }
    out
}

/// The profile name at the end of an instance-profile ARN (`…:instance-profile/path/name`).
pub fn profile_name_of_arn(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// The desired tags of an instance: Name, ownership, its own.
fn instance_tags(desired: &Desired, spec: &InstanceSpec) -> Tags {
    let mut tags = desired_tags(desired, &spec.tags);
    tags.insert("Name".into(), spec.name.clone());
    tags
}

/// Plans instances. Returns the manifest names of instances created or replaced (their targets
/// must be registered anew).
pub fn diff_instances(
    desired: &Desired,
    observed: &Observed,
    plan: &mut ProviderPlan<Op>,
) -> HashSet<String> {
    let mut fresh = HashSet::new();
    let names = id_names(observed);
    let declared: HashSet<&str> = desired
        .instances()
        .filter(|(r, _)| r.ensure == Ensure::Present)
        .map(|(_, s)| s.name.as_str())
        .collect();
    for (r, spec) in desired.instances() {
        let mut cands: Vec<&LiveInstance> = observed
            .instances
            .iter()
            .filter(|i| i.tags.get("Name") == Some(&spec.name))
            .collect();
        let had_terminated = cands
            .iter()
            .any(|i| i.state == "terminated" || i.state == "shutting-down");
        cands.retain(|i| LIVE_STATES.contains(&i.state.as_str()));
        cands.sort_by_key(|i| (!is_owned(&i.tags, desired), i.launched.clone()));
        if r.ensure == Ensure::Absent {
            for i in cands.iter().filter(|i| is_owned(&i.tags, desired)) {
                plan.steps.push(Step {
                    change: Change::new(r.id.clone(), Action::Delete)
                        .because(format!("the stack is disabled ({})", i.id)),
                    ops: vec![Op::Instance(InstanceOp::Terminate { id: i.id.clone() })],
                });
            }
            continue;
        }
        let Some(live) = cands.first() else {
            let mut change = Change::new(r.id.clone(), Action::Create);
            if had_terminated {
                change = change.because("the instance was terminated");
            }
            plan.steps.push(Step {
                change,
                ops: vec![Op::Instance(InstanceOp::Run {
                    name: r.id.name.clone(),
                })],
            });
            fresh.insert(r.id.name.clone());
            continue;
        };
        let owned = is_owned(&live.tags, desired);
        let mut live_spec = spec.clone();
        live_spec.metadata_options.http_tokens = if live.http_tokens == "optional" {
            HttpTokens::Optional
        } else {
            HttpTokens::Required
        };
        plan.violations
            .extend(crate::policy::check_instance(&r.id.to_string(), &live_spec));
        let reasons = replace_reasons(spec, live);
        if owned && !reasons.is_empty() {
            plan.steps.push(Step {
                change: Change::new(r.id.clone(), Action::Replace).because(reasons.join("; ")),
                ops: vec![
                    Op::Instance(InstanceOp::Terminate {
                        id: live.id.clone(),
                    }),
                    Op::Instance(InstanceOp::Run {
                        name: r.id.name.clone(),
                    }),
                ],
            });
            fresh.insert(r.id.name.clone());
            continue;
        }
        let mut ops = Vec::new();
        let mut fields = Vec::new();
        let tf = tag_changes(&instance_tags(desired, spec), &live.tags);
        if !tf.is_empty() {
            fields.extend(tf);
            ops.push(InstanceOp::Tag {
                id: live.id.clone(),
                name: r.id.name.clone(),
            });
        }
        if live.state == "stopped" || live.state == "stopping" {
            fields.push(FieldChange::changed("state", &live.state, "running"));
            ops.push(InstanceOp::Start {
                id: live.id.clone(),
            });
        }
        let mf = metadata_changes(spec, live);
        if !mf.is_empty() {
            fields.extend(mf);
            ops.push(InstanceOp::Metadata {
                id: live.id.clone(),
                name: r.id.name.clone(),
            });
        }
        let want_profile = lookup(desired, &spec.instance_profile)
            .and_then(|l| l.name.clone())
            .unwrap_or_else(|| spec.instance_profile.clone());
        match (&live.profile_arn, &live.profile_association) {
            (Some(arn), Some(assoc)) => {
                if profile_name_of_arn(arn) != want_profile {
                    fields.push(FieldChange::changed(
                        "instanceProfile",
                        profile_name_of_arn(arn),
                        &want_profile,
                    ));
                    ops.push(InstanceOp::ReplaceProfile {
                        association: assoc.clone(),
                        name: r.id.name.clone(),
                    });
                }
            }
            _ => {
                fields.push(FieldChange::added("instanceProfile", &want_profile));
                ops.push(InstanceOp::Associate {
                    id: live.id.clone(),
                    name: r.id.name.clone(),
                });
            }
        }
        let want_groups: BTreeSet<String> = spec
            .security_groups
            .iter()
            .map(|m| group_name_of(desired, m).unwrap_or_else(|| m.clone()))
            .collect();
        let have_groups: BTreeSet<String> = live
            .group_ids
            .iter()
            .map(|id| names.get(id).cloned().unwrap_or_else(|| id.clone()))
            .collect();
        if want_groups != have_groups {
            let show = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(",");
            fields.push(FieldChange::changed(
                "securityGroups",
                show(&have_groups),
                show(&want_groups),
            ));
            ops.push(InstanceOp::Groups {
                id: live.id.clone(),
                name: r.id.name.clone(),
            });
        }
        if !owned {
            tracing::info!(instance = %spec.name, id = %live.id, "instance exists without ownership tags: planning to adopt it");
            if !ops.iter().any(|o| matches!(o, InstanceOp::Tag { .. })) {
                ops.insert(
                    0,
                    InstanceOp::Tag {
                        id: live.id.clone(),
                        name: r.id.name.clone(),
                    },
                );
            }
        }
        if live.state == "running" && owned {
            plan.conditions
                .push(ssm_condition(&r.id, observed.ssm.get(&live.id)));
        }
        if ops.is_empty() {
            continue;
        }
        let action = if owned { Action::Update } else { Action::Adopt };
        plan.steps.push(Step {
            change: Change::new(r.id.clone(), action).with_fields(fields),
            ops: ops.into_iter().map(Op::Instance).collect(),
        });
    }
    // Owned instances of this stack that no manifest declares any more.
    for i in &observed.instances {
        let Some(name) = i.tags.get("Name") else {
            continue;
        };
        if LIVE_STATES.contains(&i.state.as_str())
            && is_owned(&i.tags, desired)
            && !declared.contains(name.as_str())
            && desired.instances().all(|(_, s)| &s.name != name)
        {
            plan.steps.push(Step {
                change: Change::new(
                    ResourceId::new(Kind::Instance, name.clone()),
                    Action::Delete,
                )
                .because(format!("no longer declared ({})", i.id)),
                ops: vec![Op::Instance(InstanceOp::Terminate { id: i.id.clone() })],
            });
        }
    }
    fresh
}

fn ssm_condition(id: &ResourceId, reach: Option<&super::SsmReach>) -> Condition {
    let (status, reason, message) = match reach {
        Some(super::SsmReach::Online) => (
            ConditionStatus::True,
            "SsmOnline",
            "SSM sees the instance online".to_string(),
        ),
        Some(super::SsmReach::Offline(s)) => (
            ConditionStatus::False,
            "SsmOffline",
            format!("SSM does not see the instance online ({s}): Grafana cannot be reached"),
        ),
        Some(super::SsmReach::Unknown(why)) => (
            ConditionStatus::Unknown,
            "SsmUnavailable",
            format!("SSM reachability cannot be read: {why}"),
        ),
        None => (
            ConditionStatus::Unknown,
            "SsmUnavailable",
            "SSM reachability not read".to_string(),
        ),
    };
    Condition {
        id: id.clone(),
        kind: "Ready".into(),
        status,
        reason: reason.into(),
        message,
    }
}

// ---------------------------------------------------------------------------------------------
// Reads

/// Every security group of the region, paginated (one call per 1000 groups).
pub async fn describe_groups(
    client: &aws_sdk_ec2::Client,
) -> Result<Vec<aws_sdk_ec2::types::SecurityGroup>, AwsError> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let resp = client
            .describe_security_groups()
            .set_next_token(token)
            .max_results(1000)
            .send()
            .await
            .map_err(|e| AwsError::call("DescribeSecurityGroups", "security groups", e))?;
        out.extend(resp.security_groups().iter().cloned());
        token = resp.next_token().map(str::to_string);
        if token.is_none() {
            return Ok(out);
        }
    }
}

/// The instances this stack owns (any state, so a terminated one explains a re-create), plus,
/// only when a declared instance has no owned one, the instances carrying its Name tag (the
/// adoption candidates). Filtering server-side keeps a steady state at one call however many
/// instances the region runs.
pub async fn observe_instances(
    client: &aws_sdk_ec2::Client,
    desired: &Desired,
) -> Result<Vec<LiveInstance>, AwsError> {
    let owned = Filter::builder()
        .name(format!("tag:{}", crate::model::ownership::STACK_TAG))
        .values(&desired.stack_name)
        .build();
    let mut found = describe_instances(client, owned).await?;
    let missing: Vec<String> = desired
        .instances()
        .filter(|(r, _)| r.ensure == Ensure::Present)
        .map(|(_, s)| s.name.clone())
        .filter(|name| {
            !found.iter().any(|i| {
                i.tags.get("Name") == Some(name) && LIVE_STATES.contains(&i.state.as_str())
            })
        })
        .collect();
    if !missing.is_empty() {
        let by_name = Filter::builder()
            .name("tag:Name")
            .set_values(Some(missing))
            .build();
        for i in describe_instances(client, by_name).await? {
            if !found.iter().any(|f| f.id == i.id) {
                found.push(i);
            }
        }
    }
    Ok(found)
}

/// The instances matching one filter, paginated.
async fn describe_instances(
    client: &aws_sdk_ec2::Client,
    filter: Filter,
) -> Result<Vec<LiveInstance>, AwsError> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let resp = client
            .describe_instances()
            .filters(filter.clone())
            .set_next_token(token)
            .max_results(1000)
            .send()
            .await
            .map_err(|e| AwsError::call("DescribeInstances", "instances", e))?;
        for i in resp.reservations().iter().flat_map(|r| r.instances()) {
            let Some(id) = i.instance_id() else { continue };
            let meta = i.metadata_options();
            out.push(LiveInstance {
                id: id.to_string(),
                state: i
                    .state()
                    .and_then(|s| s.name())
                    .map(|n| n.as_str().to_string())
                    .unwrap_or_default(),
                instance_type: i
                    .instance_type()
                    .map(|t| t.as_str().to_string())
                    .unwrap_or_default(),
                image_id: i.image_id().unwrap_or("").to_string(),
                group_ids: i
                    .security_groups()
                    .iter()
                    .filter_map(|g| g.group_id().map(str::to_string))
                    .collect(),
                profile_arn: i
                    .iam_instance_profile()
                    .and_then(|p| p.arn())
                    .map(str::to_string),
                profile_association: i
                    .iam_instance_profile()
                    .and_then(|p| p.id())
                    .map(str::to_string),
                http_tokens: meta
                    .and_then(|m| m.http_tokens())
                    .map(|t| t.as_str().to_string())
                    .unwrap_or_default(),
                hop_limit: meta
                    .and_then(|m| m.http_put_response_hop_limit())
                    .unwrap_or(1),
                metadata_tags: meta
                    .and_then(|m| m.instance_metadata_tags())
                    .map(|t| t.as_str().to_string())
                    .unwrap_or_else(|| "disabled".into()),
                http_endpoint: meta
                    .and_then(|m| m.http_endpoint())
                    .map(|t| t.as_str().to_string())
                    .unwrap_or_else(|| "enabled".into()),
                tags: tags_of(i.tags()),
                launched: i.launch_time().map(|t| t.to_string()).unwrap_or_default(),
            });
        }
        token = resp.next_token().map(str::to_string);
        if token.is_none() {
            return Ok(out);
        }
    }
}

fn tag_filters(tags: &Tags) -> Vec<Filter> {
    tags.iter()
        .map(|(k, v)| Filter::builder().name(format!("tag:{k}")).values(v).build())
        .collect()
}

/// Resolves every VPC and subnet Lookup (read-only).
pub async fn lookup_network(
    client: &aws_sdk_ec2::Client,
    desired: &Desired,
) -> Result<NetworkCache, AwsError> {
    let mut cache = NetworkCache::default();
    for (r, l) in desired.lookups().filter(|(_, l)| l.kind == LookupType::Vpc) {
        let resp = client
            .describe_vpcs()
            .set_filters(Some(tag_filters(&l.tags)))
            .send()
            .await
            .map_err(|e| AwsError::call("DescribeVpcs", r.id.to_string(), e))?;
        if let Some(id) = resp.vpcs().iter().filter_map(|v| v.vpc_id()).min() {
            cache.vpcs.insert(r.id.name.clone(), id.to_string());
        }
    }
    for (r, l) in desired
        .lookups()
        .filter(|(_, l)| l.kind == LookupType::Subnet)
    {
        let mut filters = tag_filters(&l.tags);
        if let Some(vpc) = l.vpc.as_ref().and_then(|v| cache.vpcs.get(v)) {
            filters.push(Filter::builder().name("vpc-id").values(vpc).build());
        }
        let resp = client
            .describe_subnets()
            .set_filters(Some(filters))
            .send()
            .await
            .map_err(|e| AwsError::call("DescribeSubnets", r.id.to_string(), e))?;
        let mut ids: Vec<String> = resp
            .subnets()
            .iter()
            .filter_map(|s| s.subnet_id().map(str::to_string))
            .collect();
        ids.sort();
        cache.subnets.insert(r.id.name.clone(), ids);
    }
    Ok(cache)
}

/// Ids known before an apply starts.
pub fn seed_resolved(desired: &Desired, observed: &Observed) -> Resolved {
    let resolved = Resolved::default();
    for g in observed.groups.values() {
        Resolved::set(&resolved.groups, &g.name, g.id.clone());
    }
    for (r, spec) in desired.instances() {
        let mut cands: Vec<&LiveInstance> = observed
            .instances
            .iter()
            .filter(|i| {
                i.tags.get("Name") == Some(&spec.name) && LIVE_STATES.contains(&i.state.as_str())
            })
            .collect();
        cands.sort_by_key(|i| (!is_owned(&i.tags, desired), i.launched.clone()));
        if let Some(i) = cands.first() {
            Resolved::set(&resolved.instances, &r.id.name, i.id.clone());
        }
    }
    for tg in &observed.elb.target_groups {
        Resolved::set(&resolved.target_groups, &tg.name, tg.arn.clone());
    }
    resolved
}

// ---------------------------------------------------------------------------------------------
// Writes

fn ec2_tags(tags: &Tags) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

fn group_spec<'a>(desired: &'a Desired, name: &str) -> Result<&'a SecurityGroupSpec, AwsError> {
    desired
        .security_groups()
        .find(|(r, _)| r.id.name == name)
        .map(|(_, s)| s)
        .ok_or_else(|| AwsError::invalid(format!("SecurityGroup/{name}"), "not declared"))
}

fn group_id(ctx: &ApplyCtx<'_>, group_name: &str) -> Result<String, AwsError> {
    Resolved::get(&ctx.resolved.groups, group_name)
        .ok_or_else(|| AwsError::invalid(format!("security group {group_name}"), "not found"))
}

/// Applies one security-group op.
pub async fn apply_group(
    p: &AwsProvider,
    ctx: &ApplyCtx<'_>,
    change: &Change,
    op: SecurityGroupOp,
) -> Result<(), AwsError> {
    let res = change.id.to_string();
    match op {
        SecurityGroupOp::Create { name } => {
            let spec = group_spec(ctx.desired, &name)?;
            let net = p.network(ctx.desired).await?;
            let vpc = net.vpcs.get(&spec.vpc).ok_or_else(|| {
                AwsError::invalid(
                    &res,
                    format!("the VPC of Lookup/{} was not found", spec.vpc),
                )
            })?;
            let out = p
                .ec2
                .create_security_group()
                .group_name(&spec.name)
                .description(&spec.description)
                .vpc_id(vpc)
                .tag_specifications(
                    TagSpecification::builder()
                        .resource_type(ResourceType::SecurityGroup)
                        .set_tags(Some(ec2_tags(&desired_tags(ctx.desired, &spec.tags))))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| AwsError::call("CreateSecurityGroup", &res, e))?;
            let id = out
                .group_id()
                .ok_or_else(|| AwsError::invalid(&res, "CreateSecurityGroup returned no id"))?;
            Resolved::set(&ctx.resolved.groups, &spec.name, id.to_string());
        }
        SecurityGroupOp::Tag { name } => {
            let spec = group_spec(ctx.desired, &name)?;
            let id = group_id(ctx, &spec.name)?;
            tracing::info!(resource = %res, id = %id, "tagging security group with ownership tags");
            p.ec2
                .create_tags()
                .resources(id)
                .set_tags(Some(ec2_tags(&desired_tags(ctx.desired, &spec.tags))))
                .send()
                .await
                .map_err(|e| AwsError::call("CreateTags", &res, e))?;
        }
        SecurityGroupOp::Revoke {
            group,
            egress,
            perm,
        } => {
            let id = group_id(ctx, &group)?;
            let rules = p
                .ec2
                .describe_security_group_rules()
                .filters(Filter::builder().name("group-id").values(&id).build())
                .send()
                .await
                .map_err(|e| AwsError::call("DescribeSecurityGroupRules", &res, e))?;
            let ids: Vec<String> = rules
                .security_group_rules()
                .iter()
                .filter(|r| r.is_egress() == Some(egress))
                .filter(|r| rule_matches(r, &perm))
                .filter_map(|r| r.security_group_rule_id().map(str::to_string))
                .collect();
            if ids.is_empty() {
                // Already gone: revoking is done.
                return Ok(());
            }
            let result = if egress {
                p.ec2
                    .revoke_security_group_egress()
                    .group_id(&id)
                    .set_security_group_rule_ids(Some(ids))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| AwsError::call("RevokeSecurityGroupEgress", &res, e))
            } else {
                p.ec2
                    .revoke_security_group_ingress()
                    .group_id(&id)
                    .set_security_group_rule_ids(Some(ids))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| AwsError::call("RevokeSecurityGroupIngress", &res, e))
            };
            match result {
                Err(e) if e.code() == Some("InvalidPermission.NotFound") => {}
                other => other?,
            }
        }
        SecurityGroupOp::Authorize {
            group,
            egress,
            rule,
            description,
        } => {
            let id = group_id(ctx, &group)?;
            let perm = ip_permission(ctx, &rule, &description)?;
            let result = if egress {
                p.ec2
                    .authorize_security_group_egress()
                    .group_id(&id)
                    .ip_permissions(perm)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| AwsError::call("AuthorizeSecurityGroupEgress", &res, e))
            } else {
                p.ec2
                    .authorize_security_group_ingress()
                    .group_id(&id)
                    .ip_permissions(perm)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| AwsError::call("AuthorizeSecurityGroupIngress", &res, e))
            };
            match result {
                Err(e) if e.code() == Some("InvalidPermission.Duplicate") => {}
                other => other?,
            }
        }
    }
    Ok(())
}

fn rule_matches(r: &aws_sdk_ec2::types::SecurityGroupRule, perm: &LivePerm) -> bool {
    let proto = normalize_protocol(r.ip_protocol().unwrap_or("-1"));
    if proto != perm.protocol {
        return false;
    }
    if proto != "-1"
        && (r.from_port().unwrap_or(-1) != perm.from || r.to_port().unwrap_or(-1) != perm.to)
    {
        return false;
    }
    match &perm.peer {
        LivePeer::Cidr4(c) => r.cidr_ipv4() == Some(c.as_str()),
        LivePeer::Cidr6(c) => r.cidr_ipv6() == Some(c.as_str()),
        LivePeer::Group(g) => {
            r.referenced_group_info().and_then(|i| i.group_id()) == Some(g.as_str())
        }
    }
}

fn ip_permission(
    ctx: &ApplyCtx<'_>,
    rule: &RuleKey,
    description: &str,
) -> Result<IpPermission, AwsError> {
    let mut b = IpPermission::builder().ip_protocol(&rule.protocol);
    if rule.protocol != "-1" {
        b = b.from_port(rule.from).to_port(rule.to);
    }
    let desc = (!description.is_empty()).then(|| description.to_string());
    if let Some(group) = rule.peer.strip_prefix("sg:") {
        let id = group_id(ctx, group)?;
        b = b.user_id_group_pairs(
            UserIdGroupPair::builder()
                .group_id(id)
                .set_description(desc)
                .build(),
        );
    } else if rule.peer.contains(':') {
        b = b.ipv6_ranges(
            Ipv6Range::builder()
                .cidr_ipv6(&rule.peer)
                .set_description(desc)
                .build(),
        );
    } else {
        b = b.ip_ranges(
            IpRange::builder()
                .cidr_ip(&rule.peer)
                .set_description(desc)
                .build(),
        );
    }
    Ok(b.build())
}

fn instance_spec<'a>(desired: &'a Desired, name: &str) -> Result<&'a InstanceSpec, AwsError> {
    desired
        .instances()
        .find(|(r, _)| r.id.name == name)
        .map(|(_, s)| s)
        .ok_or_else(|| AwsError::invalid(format!("Instance/{name}"), "not declared"))
}

fn metadata_request(spec: &InstanceSpec) -> InstanceMetadataOptionsRequest {
    let m = &spec.metadata_options;
    InstanceMetadataOptionsRequest::builder()
        .http_tokens(match m.http_tokens {
            HttpTokens::Required => HttpTokensState::Required,
            HttpTokens::Optional => HttpTokensState::Optional,
        })
        .http_put_response_hop_limit(i32::from(m.http_put_response_hop_limit))
        .http_endpoint(if m.http_endpoint {
            InstanceMetadataEndpointState::Enabled
        } else {
            InstanceMetadataEndpointState::Disabled
        })
        .instance_metadata_tags(if m.instance_metadata_tags {
            InstanceMetadataTagsState::Enabled
        } else {
            InstanceMetadataTagsState::Disabled
        })
        .build()
}

fn profile_name(desired: &Desired, spec: &InstanceSpec) -> String {
    lookup(desired, &spec.instance_profile)
        .and_then(|l| l.name.clone())
        .unwrap_or_else(|| spec.instance_profile.clone())
}

fn group_ids_of(ctx: &ApplyCtx<'_>, spec: &InstanceSpec) -> Result<Vec<String>, AwsError> {
    spec.security_groups
        .iter()
        .map(|m| {
            group_id(
                ctx,
                &group_name_of(ctx.desired, m).unwrap_or_else(|| m.clone()),
            )
        })
        .collect()
}

/// Applies one instance op.
pub async fn apply_instance(
    p: &AwsProvider,
    ctx: &ApplyCtx<'_>,
    change: &Change,
    op: InstanceOp,
) -> Result<(), AwsError> {
    let res = change.id.to_string();
    match op {
        InstanceOp::Run { name } => {
            let spec = instance_spec(ctx.desired, &name)?;
            run_instance(p, ctx, &res, &name, spec).await?;
        }
        InstanceOp::Terminate { id } => {
            p.ec2
                .terminate_instances()
                .instance_ids(&id)
                .send()
                .await
                .map_err(|e| AwsError::call("TerminateInstances", &res, e))?;
        }
        InstanceOp::Start { id } => {
            p.ec2
                .start_instances()
                .instance_ids(&id)
                .send()
                .await
                .map_err(|e| AwsError::call("StartInstances", &res, e))?;
        }
        InstanceOp::Tag { id, name } => {
            let spec = instance_spec(ctx.desired, &name)?;
            p.ec2
                .create_tags()
                .resources(&id)
                .set_tags(Some(ec2_tags(&instance_tags(ctx.desired, spec))))
                .send()
                .await
                .map_err(|e| AwsError::call("CreateTags", &res, e))?;
        }
        InstanceOp::Metadata { id, name } => {
            let spec = instance_spec(ctx.desired, &name)?;
            let m = metadata_request(spec);
            // All four options every time: unsent ones would be reset.
            p.ec2
                .modify_instance_metadata_options()
                .instance_id(&id)
                .set_http_tokens(m.http_tokens().cloned())
                .set_http_put_response_hop_limit(m.http_put_response_hop_limit())
                .set_http_endpoint(m.http_endpoint().cloned())
                .set_instance_metadata_tags(m.instance_metadata_tags().cloned())
                .send()
                .await
                .map_err(|e| AwsError::call("ModifyInstanceMetadataOptions", &res, e))?;
        }
        InstanceOp::Associate { id, name } => {
            let spec = instance_spec(ctx.desired, &name)?;
            p.ec2
                .associate_iam_instance_profile()
                .instance_id(&id)
                .iam_instance_profile(
                    IamInstanceProfileSpecification::builder()
                        .name(profile_name(ctx.desired, spec))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| AwsError::call("AssociateIamInstanceProfile", &res, e))?;
        }
        InstanceOp::ReplaceProfile { association, name } => {
            let spec = instance_spec(ctx.desired, &name)?;
            p.ec2
                .replace_iam_instance_profile_association()
                .association_id(&association)
                .iam_instance_profile(
                    IamInstanceProfileSpecification::builder()
                        .name(profile_name(ctx.desired, spec))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| AwsError::call("ReplaceIamInstanceProfileAssociation", &res, e))?;
        }
        InstanceOp::Groups { id, name } => {
            let spec = instance_spec(ctx.desired, &name)?;
            p.ec2
                .modify_instance_attribute()
                .instance_id(&id)
                .set_groups(Some(group_ids_of(ctx, spec)?))
                .send()
                .await
                .map_err(|e| AwsError::call("ModifyInstanceAttribute", &res, e))?;
        }
    }
    Ok(())
}

async fn run_instance(
    p: &AwsProvider,
    ctx: &ApplyCtx<'_>,
    res: &str,
    name: &str,
    spec: &InstanceSpec,
) -> Result<(), AwsError> {
    let image = match (&spec.ami.id, &spec.ami.ssm_parameter) {
        (Some(id), _) => id.clone(),
        (None, Some(param)) => super::ssm::ami_from_parameter(&p.ssm, param).await?,
        (None, None) => {
            return Err(AwsError::invalid(
                res,
                "no AMI: set spec.ami.id or spec.ami.ssmParameter",
            ));
        }
    };
    let net = p.network(ctx.desired).await?;
    let subnet = net
        .subnets
        .get(&spec.subnet)
        .and_then(|s| s.first())
        .ok_or_else(|| AwsError::invalid(res, format!("Lookup/{} found no subnet", spec.subnet)))?;
    let root_device = p
        .ec2
        .describe_images()
        .image_ids(&image)
        .send()
        .await
        .ok()
        .and_then(|o| {
            o.images()
                .first()
                .and_then(|i| i.root_device_name().map(str::to_string))
        })
        .unwrap_or_else(|| "/dev/xvda".to_string());
    let mut tags = instance_tags(ctx.desired, spec);
    tags.insert(
        TAG_USER_DATA.into(),
        user_data_hash(spec.user_data.as_deref()),
    );
    tags.insert(TAG_ROOT_VOLUME.into(), root_volume_tag(spec));
    tags.insert(TAG_SUBNET.into(), spec.subnet.clone());
    let volume_tags = desired_tags(ctx.desired, &spec.tags);
    // A fresh token per launch: retries of this request are idempotent, a later re-creation
    // (after a termination) is not mistaken for it.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let token = hex::encode(
        &Sha256::digest(format!("{}/{name}/{nanos}", ctx.desired.stack_name).as_bytes())[..16],
    );
    let out = p
        .ec2
        .run_instances()
        .image_id(image)
        .instance_type(spec.instance_type.as_str().into())
        .min_count(1)
        .max_count(1)
        .subnet_id(subnet)
        .set_security_group_ids(Some(group_ids_of(ctx, spec)?))
        .iam_instance_profile(
            IamInstanceProfileSpecification::builder()
                .name(profile_name(ctx.desired, spec))
                .build(),
        )
        .metadata_options(metadata_request(spec))
        .block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name(root_device)
                .ebs(
                    EbsBlockDevice::builder()
                        .volume_size(i32::try_from(spec.root_volume.size_gib).unwrap_or(i32::MAX))
                        .volume_type(VolumeType::from(spec.root_volume.volume_type.as_str()))
                        .encrypted(spec.root_volume.encrypted)
                        .delete_on_termination(true)
                        .build(),
                )
                .build(),
        )
        .set_user_data(
            spec.user_data
                .as_ref()
                .map(aws_smithy_types::base64::encode),
        )
        .client_token(token)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Instance)
                .set_tags(Some(ec2_tags(&tags)))
                .build(),
        )
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Volume)
                .set_tags(Some(ec2_tags(&volume_tags)))
                .build(),
        )
        .send()
        .await
        .map_err(|e| AwsError::call("RunInstances", res, e))?;
    let id = out
        .instances()
        .first()
        .and_then(|i| i.instance_id())
        .ok_or_else(|| AwsError::invalid(res, "RunInstances returned no instance"))?;
    tracing::info!(resource = %res, id = %id, "instance launched");
    Resolved::set(&ctx.resolved.instances, name, id.to_string());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(protocol: &str, from: i32, to: i32, peer: LivePeer, desc: &str) -> LivePerm {
        LivePerm {
            protocol: protocol.into(),
            from,
            to,
            peer,
            description: desc.into(),
        }
    }

    fn names() -> BTreeMap<String, String> {
        [
            ("sg-ecs".to_string(), "ecs-sg".to_string()),
            ("sg-alb".to_string(), "alb-sg".to_string()),
        ]
        .into_iter()
        .collect()
    }

    fn key(protocol: &str, port: i32, peer: &str) -> RuleKey {
        RuleKey {
            protocol: protocol.into(),
            from: port,
            to: port,
            peer: peer.into(),
        }
    }

    #[test]
    fn a_live_range_equals_the_same_ports_declared_one_by_one() {
        let live = vec![perm(
            "tcp",
            4317,
            4318,
            LivePeer::Group("sg-ecs".into()),
            "OTLP",
        )];
        let want = vec![
            (key("tcp", 4317, "sg:ecs-sg"), "OTLP".into()),
            (key("tcp", 4318, "sg:ecs-sg"), "OTLP".into()),
        ];
        let d = diff_rules("ingress", &want, &live, &names());
        assert_eq!(d, RuleDiff::default());
    }

    #[test]
    fn rule_order_and_description_whitespace_are_not_drift() {
        let live = vec![
            perm(
                "6",
                4040,
                4040,
                LivePeer::Group("sg-ecs".into()),
                "  Pyroscope\tpush ",
            ),
            perm(
                "tcp",
                12347,
                12347,
                LivePeer::Group("sg-alb".into()),
                "Faro",
            ),
        ];
        let live: Vec<LivePerm> = live
            .into_iter()
            .map(|p| LivePerm {
                protocol: normalize_protocol(&p.protocol),
                description: normalize_description(&p.description),
                ..p
            })
            .collect();
        let want = vec![
            (key("tcp", 12347, "sg:alb-sg"), "Faro".into()),
            (key("tcp", 4040, "sg:ecs-sg"), "Pyroscope push".into()),
        ];
        assert_eq!(
            diff_rules("ingress", &want, &live, &names()),
            RuleDiff::default()
        );
    }

    #[test]
    fn the_default_egress_rule_is_normal_when_declared() {
        let want = desired_keys(
            &[(
                "".into(),
                Protocol::All,
                vec![],
                Peer {
                    security_group: None,
                    cidr: Some("0.0.0.0/0".into()),
                },
            )],
            &|_| None,
        );
        assert_eq!(
            diff_rules("egress", &want, &[default_egress()], &names()),
            RuleDiff::default()
        );
    }

    #[test]
    fn an_extra_open_rule_is_revoked() {
        let open = perm("tcp", 22, 22, LivePeer::Cidr4("0.0.0.0/0".into()), "");
        let d = diff_rules("ingress", &[], std::slice::from_ref(&open), &names());
        assert_eq!(d.revoke, vec![open]);
        assert!(d.add.is_empty());
        assert_eq!(d.fields.len(), 1);
        assert_eq!(d.fields[0].path, "ingress[tcp/22 0.0.0.0/0]");
    }

    #[test]
    fn a_changed_port_is_one_revoke_and_one_authorize() {
        let live = vec![perm(
            "tcp",
            4041,
            4041,
            LivePeer::Group("sg-ecs".into()),
            "Pyroscope",
        )];
        let want = vec![(key("tcp", 4040, "sg:ecs-sg"), "Pyroscope".to_string())];
        let d = diff_rules("ingress", &want, &live, &names());
        assert_eq!(d.revoke, live);
        assert_eq!(d.add, want);
    }

    #[test]
    fn revoking_a_range_reauthorizes_its_wanted_ports() {
        let live = vec![perm(
            "tcp",
            4317,
            4319,
            LivePeer::Group("sg-ecs".into()),
            "OTLP",
        )];
        let want = vec![
            (key("tcp", 4317, "sg:ecs-sg"), "OTLP".into()),
            (key("tcp", 4318, "sg:ecs-sg"), "OTLP".into()),
        ];
        let d = diff_rules("ingress", &want, &live, &names());
        assert_eq!(d.revoke, live);
        assert_eq!(d.add, want);
    }

    #[test]
    fn a_changed_description_replaces_the_rule() {
        let live = vec![perm(
            "tcp",
            4040,
            4040,
            LivePeer::Group("sg-ecs".into()),
            "old",
        )];
        let want = vec![(key("tcp", 4040, "sg:ecs-sg"), "new".to_string())];
        let d = diff_rules("ingress", &want, &live, &names());
        assert_eq!(d.revoke.len(), 1);
        assert_eq!(d.add, want);
        assert_eq!(d.fields[0].old.as_deref(), Some("\"old\""));
    }

    #[test]
    fn cidr_case_does_not_matter() {
        let live = vec![perm(
            "tcp",
            443,
            443,
            LivePeer::Cidr6("2001:DB8::/32".into()),
            "",
        )];
        let want = desired_keys(
            &[(
                "".into(),
                Protocol::Tcp,
                vec![443],
                Peer {
                    security_group: None,
                    cidr: Some("2001:db8::/32".into()),
                },
            )],
            &|_| None,
        );
        assert_eq!(
            diff_rules("ingress", &want, &live, &names()),
            RuleDiff::default()
        );
    }

    #[test]
    fn profile_names_are_read_from_arns_with_paths() {
        assert_eq!(
            profile_name_of_arn("arn:aws:iam::123456789012:instance-profile/a/b/obs"),
            "obs"
        );
        assert_eq!(profile_name_of_arn("obs"), "obs");
    }
}
