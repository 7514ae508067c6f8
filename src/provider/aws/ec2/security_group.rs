//! `SecurityGroup`: the group and every rule in it. Rules are normalized to one per (protocol,
//! port, peer) before diffing; the diff is pure and unit-tested below.

use super::{ec2_tags, group_id, id_names, tags_of};
use crate::model::{Desired, IngressRule, Peer, Protocol, SecurityGroupSpec, Tags};
use crate::plan::{Action, Change, FieldChange};
use crate::provider::aws::{
    ApplyCtx, AwsError, AwsProvider, Observed, Op, Resolved, desired_tags, group_name_of, is_owned,
    tag_changes,
};
use crate::provider::{ProviderPlan, Step};
use aws_sdk_ec2::types::{
    Filter, IpPermission, IpRange, Ipv6Range, ResourceType, TagSpecification, UserIdGroupPair,
};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Ranges wider than this are kept whole rather than split per port (0-65535 would be 65536
/// rules); they never equal a desired per-port rule, so they show as drift.
const MAX_SPLIT_RANGE: i32 = 1024;

// ---------------------------------------------------------------------------------------------
// Observed types and writes

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

// ---------------------------------------------------------------------------------------------
// Normalization and diff (pure)

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

// ---------------------------------------------------------------------------------------------
// Writes

fn group_spec<'a>(desired: &'a Desired, name: &str) -> Result<&'a SecurityGroupSpec, AwsError> {
    desired
        .security_groups()
        .find(|(r, _)| r.id.name == name)
        .map(|(_, s)| s)
        .ok_or_else(|| AwsError::invalid(format!("SecurityGroup/{name}"), "not declared"))
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
}
