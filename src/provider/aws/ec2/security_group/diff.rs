//! The security group's pure comparison: rules normalized to one per (protocol, port, peer),
//! then the group's description, tags and both directions' rules against the declared ones.
//! No I/O; the table tests below name every field of [`LiveGroup`].

use super::live::{LiveGroup, LivePeer, LivePerm};
use super::{MAX_SPLIT_RANGE, SecurityGroupOp};
use crate::model::{Desired, IngressRule, Peer, Protocol, SecurityGroupSpec, Tags};
use crate::plan::{Action, Change, FieldChange};
use crate::provider::aws::ec2::id_names;
use crate::provider::aws::{
    AwsError, Observed, Op, check_owner, desired_tags, group_name_of, is_owned, tag_drift,
};
use crate::provider::{ProviderPlan, Step};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

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

/// An error when a declared group's name is held by another stack's group.
pub fn check_ownership(
    desired: &Desired,
    groups: &BTreeMap<String, LiveGroup>,
) -> Result<(), AwsError> {
    for (r, spec) in desired.security_groups() {
        if let Some(g) = groups.get(&spec.name) {
            check_owner(
                || format!("{} (security group {} ({}))", r.id, g.name, g.id),
                &g.tags,
                desired,
            )?;
        }
    }
    Ok(())
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

/// One declared group with its references resolved: what a live one is compared against.
#[derive(Debug, Clone)]
pub struct GroupWant<'a> {
    /// The manifest name.
    pub name: &'a str,
    /// The spec.
    pub spec: &'a SecurityGroupSpec,
    /// Ownership and own tags.
    pub tags: Tags,
    /// Inbound rules as keys with descriptions.
    pub ingress: Vec<(RuleKey, String)>,
    /// Outbound rules as keys with descriptions.
    pub egress: Vec<(RuleKey, String)>,
}

/// What one group needs: the action, why, what the plan shows and the writes.
#[derive(Debug)]
pub struct GroupDrift {
    /// Create, adopt, update or replace.
    pub action: Action,
    /// Why (a replacement says what cannot change in place).
    pub reason: Option<String>,
    /// What the plan shows.
    pub fields: Vec<FieldChange>,
    /// The writes, in order.
    pub ops: Vec<SecurityGroupOp>,
}

/// Compares a live group (if any) with what is wanted: description, tags (extra ones too) and
/// every rule of both directions.
pub fn compare_group(
    want: &GroupWant<'_>,
    live: Option<&LiveGroup>,
    owned: bool,
    names: &BTreeMap<String, String>,
) -> GroupDrift {
    let spec = want.spec;
    let name = want.name.to_string();
    let mut ops = Vec::new();
    let mut fields = Vec::new();
    let mut reason = None;
    let description = normalize_description(&spec.description);
    let action = match live {
        None => {
            ops.push(SecurityGroupOp::Create { name: name.clone() });
            Action::Create
        }
        Some(g) if owned && g.description != description => {
            reason = Some(format!(
                "a group's description cannot change in place: {} → {}",
                describe(&g.description),
                describe(&description)
            ));
            fields.push(FieldChange::changed(
                "description",
                describe(&g.description),
                describe(&description),
            ));
            ops.push(SecurityGroupOp::Replace {
                name: name.clone(),
                old_id: g.id.clone(),
                vpc_id: g.vpc_id.clone(),
            });
            Action::Replace
        }
        Some(g) => {
            let tags = tag_drift(&want.tags, &g.tags);
            if !tags.put.is_empty() || !owned {
                ops.push(SecurityGroupOp::Tag { name: name.clone() });
                fields.extend(tags.put);
            }
            if !tags.extra.is_empty() {
                fields.extend(tags.removed);
                ops.push(SecurityGroupOp::Untag {
                    name: name.clone(),
                    keys: tags.extra,
                });
            }
            if g.description != description {
                // Not ours yet: shown; once adopted, the next plan replaces it.
                fields.push(FieldChange::changed(
                    "description",
                    describe(&g.description),
                    describe(&description),
                ));
            }
            if owned {
                Action::Update
            } else {
                tracing::info!(group = %spec.name, id = %g.id, "security group exists without ownership tags: planning to adopt it");
                Action::Adopt
            }
        }
    };
    // A created or replaced group starts with EC2's default egress rule only.
    let (live_in, live_out) = match live {
        Some(g) if action != Action::Replace => (g.ingress.clone(), g.egress.clone()),
        _ => (Vec::new(), vec![default_egress()]),
    };
    for (direction, egress, want_rules, have) in [
        ("ingress", false, &want.ingress, live_in),
        ("egress", true, &want.egress, live_out),
    ] {
        let d = diff_rules(direction, want_rules, &have, names);
        if !matches!(action, Action::Create | Action::Replace) {
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
    GroupDrift {
        action,
        reason,
        fields,
        ops,
    }
}

/// Plans security groups: create, adopt, tag, rule changes and replacement (a changed
/// description). Groups are never deleted otherwise.
pub fn diff_groups(desired: &Desired, observed: &Observed, plan: &mut ProviderPlan<Op>) {
    let names = id_names(observed);
    let group_name = |m: &str| group_name_of(desired, m);
    for (r, spec) in desired.security_groups() {
        let live = observed.groups.get(&spec.name);
        let want = GroupWant {
            name: &r.id.name,
            spec,
            tags: desired_tags(desired, &r.id, &spec.tags),
            ingress: desired_keys(&ingress_tuples(spec), &group_name),
            egress: desired_keys(&egress_tuples(spec), &group_name),
        };
        let owned = live.is_some_and(|g| is_owned(&g.tags, desired));
        let drift = compare_group(&want, live, owned, &names);
        if let Some(g) = live {
            plan.violations.extend(crate::policy::check_security_group(
                &r.id.to_string(),
                &live_spec(spec, g),
            ));
        }
        if drift.ops.is_empty() {
            continue;
        }
        let mut change = Change::new(r.id.clone(), drift.action).with_fields(drift.fields);
        if let Some(reason) = drift.reason {
            change = change.because(reason);
        }
        plan.steps.push(Step {
            change,
            ops: drift.ops.into_iter().map(Op::SecurityGroup).collect(),
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

    fn sg_spec() -> SecurityGroupSpec {
        SecurityGroupSpec {
            name: "obs-sg".into(),
            description: "Observability host".into(),
            vpc: "vpc".into(),
            ingress: Vec::new(),
            egress: Vec::new(),
            tags: Tags::new(),
        }
    }

    fn group_tags() -> Tags {
        [("ManagedBy", "stackwarden"), ("stackwarden:stack", "obs")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn faro() -> LivePerm {
        perm(
            "tcp",
            12347,
            12347,
            LivePeer::Group("sg-alb".into()),
            "Faro",
        )
    }

    fn group_want(spec: &SecurityGroupSpec) -> GroupWant<'_> {
        GroupWant {
            name: "observability",
            spec,
            tags: group_tags(),
            ingress: vec![(key("tcp", 12347, "sg:alb-sg"), "Faro".into())],
            egress: desired_keys(
                &[(
                    String::new(),
                    Protocol::All,
                    vec![],
                    Peer {
                        security_group: None,
                        cidr: Some("0.0.0.0/0".into()),
                    },
                )],
                &|_| None,
            ),
        }
    }

    /// A live group exactly as `group_want` wants it.
    fn matching_group() -> LiveGroup {
        LiveGroup {
            id: "sg-obs".into(),
            name: "obs-sg".into(),
            vpc_id: "vpc-1".into(),
            description: "Observability host".into(),
            tags: group_tags(),
            ingress: vec![faro()],
            egress: vec![default_egress()],
        }
    }

    fn other<T: PartialEq + fmt::Debug>(old: &T, new: T) -> T {
        assert_ne!(old, &new, "a case must change the field");
        new
    }

    fn shown(d: &GroupDrift) -> String {
        let mut out: Vec<String> = d.fields.iter().map(|f| f.path.clone()).collect();
        out.extend(d.reason.clone());
        out.join(" | ")
    }

    #[test]
    fn a_matching_group_has_no_drift() {
        let spec = sg_spec();
        let d = compare_group(&group_want(&spec), Some(&matching_group()), true, &names());
        assert!(d.ops.is_empty() && d.fields.is_empty(), "{d:?}");
    }

    #[test]
    fn every_field_of_a_live_group_changed_by_hand_is_detected() {
        let spec = sg_spec();
        let want = group_want(&spec);
        let base = matching_group();
        // Exhaustive on purpose: a field added to LiveGroup or LivePerm does not compile here
        // until it has a case below (or is named as identity).
        let LiveGroup {
            id,
            name,
            vpc_id,
            description,
            tags,
            ingress,
            egress,
        } = base.clone();
        // Identity: the id names the object, the name is how it is found, and a group never
        // moves between VPCs (its VPC is chosen when it is created).
        let _identity = (id, name, vpc_id);
        let LivePerm {
            protocol,
            from,
            to,
            peer,
            description: rule_description,
        } = faro();
        let rule = |p: LivePerm| other(&ingress, vec![p]);
        let mut extra_tags = tags.clone();
        extra_tags.insert("Owner".into(), "someone".into());
        let mut missing_tags = tags.clone();
        missing_tags.remove("ManagedBy");
        let cases: Vec<(&str, LiveGroup)> = vec![
            (
                "description",
                LiveGroup {
                    description: other(&description, "made by hand".into()),
                    ..base.clone()
                },
            ),
            (
                "tags.Owner",
                LiveGroup {
                    tags: other(&tags, extra_tags),
                    ..base.clone()
                },
            ),
            (
                "tags.ManagedBy",
                LiveGroup {
                    tags: other(&tags, missing_tags),
                    ..base.clone()
                },
            ),
            (
                "ingress[tcp/22 0.0.0.0/0]",
                LiveGroup {
                    ingress: other(
                        &ingress,
                        vec![
                            faro(),
                            perm("tcp", 22, 22, LivePeer::Cidr4("0.0.0.0/0".into()), ""),
                        ],
                    ),
                    ..base.clone()
                },
            ),
            (
                "ingress[tcp/12347 sg:alb-sg]",
                LiveGroup {
                    ingress: other(&ingress, Vec::new()),
                    ..base.clone()
                },
            ),
            (
                "ingress[udp/12347 sg:alb-sg]",
                LiveGroup {
                    ingress: rule(LivePerm {
                        protocol: other(&protocol, "udp".into()),
                        ..faro()
                    }),
                    ..base.clone()
                },
            ),
            (
                "ingress[tcp/12346 sg:alb-sg]",
                LiveGroup {
                    ingress: rule(LivePerm {
                        from: other(&from, 12346),
                        ..faro()
                    }),
                    ..base.clone()
                },
            ),
            (
                "ingress[tcp/12348 sg:alb-sg]",
                LiveGroup {
                    ingress: rule(LivePerm {
                        to: other(&to, 12348),
                        ..faro()
                    }),
                    ..base.clone()
                },
            ),
            (
                "ingress[tcp/12347 sg:ecs-sg]",
                LiveGroup {
                    ingress: rule(LivePerm {
                        peer: other(&peer, LivePeer::Group("sg-ecs".into())),
                        ..faro()
                    }),
                    ..base.clone()
                },
            ),
            (
                "ingress[tcp/12347 sg:alb-sg]",
                LiveGroup {
                    ingress: rule(LivePerm {
                        description: other(&rule_description, "changed".into()),
                        ..faro()
                    }),
                    ..base.clone()
                },
            ),
            (
                "egress[all 0.0.0.0/0]",
                LiveGroup {
                    egress: other(&egress, Vec::new()),
                    ..base.clone()
                },
            ),
            (
                "egress[tcp/25 0.0.0.0/0]",
                LiveGroup {
                    egress: other(
                        &egress,
                        vec![
                            default_egress(),
                            perm("tcp", 25, 25, LivePeer::Cidr4("0.0.0.0/0".into()), ""),
                        ],
                    ),
                    ..base.clone()
                },
            ),
        ];
        for (expect, live) in cases {
            let d = compare_group(&want, Some(&live), true, &names());
            let text = shown(&d);
            assert!(
                text.contains(expect),
                "`{expect}` not seen; plan shows: {text}"
            );
            assert!(
                !d.ops.is_empty(),
                "`{expect}` is seen but nothing would repair it"
            );
        }
    }

    #[test]
    fn a_changed_description_replaces_the_group_and_says_why() {
        let spec = sg_spec();
        let live = LiveGroup {
            description: "made by hand".into(),
            ..matching_group()
        };
        let d = compare_group(&group_want(&spec), Some(&live), true, &names());
        assert_eq!(d.action, Action::Replace);
        let reason = d.reason.unwrap_or_default();
        assert!(
            reason.contains("\"made by hand\" → \"Observability host\""),
            "{reason}"
        );
        assert!(
            matches!(d.ops.first(), Some(SecurityGroupOp::Replace { old_id, .. }) if old_id == "sg-obs")
        );
        // The new group starts with the default egress only: every ingress rule is authorized.
        assert!(
            d.ops
                .iter()
                .any(|o| matches!(o, SecurityGroupOp::Authorize { egress: false, .. }))
        );
    }
}
