//! The pure comparison of target groups and listener rules with their declared forms. No
//! I/O; the table tests below name every field of [`LiveTargetGroup`] and [`LiveRule`].

use super::live::{ElbObserved, LiveRule, LiveTargetGroup};
use super::{
    DEFAULT_ATTRIBUTES, DEREGISTRATION_DELAY, IP_ADDRESS_TYPE, ListenerRuleOp, PROTOCOL_VERSION,
    TARGET_TYPE, TargetGroupOp, tg_name_of,
};
use crate::model::{
    Desired, Ensure, HealthCheckSpec, Kind, ListenerRuleSpec, ResourceId, Tags, TargetGroupSpec,
};
use crate::plan::{Action, Change, Condition, ConditionStatus, FieldChange};
use crate::provider::aws::{
    AwsError, Observed, Op, Resolved, check_owner, desired_tags, is_owned, tag_drift,
};
use crate::provider::{ProviderPlan, Step};
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// Fails when a declared target group, or the rule at a declared rule's priority, is tagged
/// for another stack: it is never adopted or changed.
pub fn check_owners(desired: &Desired, elb: &ElbObserved) -> Result<(), AwsError> {
    for (r, spec) in desired.target_groups() {
        if let Some(l) = elb.target_groups.iter().find(|t| t.name == spec.name) {
            check_owner(
                || format!("{} (target group {})", r.id, l.name),
                &l.tags,
                desired,
            )?;
        }
    }
    for (r, spec) in desired.listener_rules() {
        let Some(Some(lb)) = elb.load_balancers.get(&spec.load_balancer) else {
            continue;
        };
        let prio = spec.priority.to_string();
        for l in &spec.listeners {
            let live = lb
                .listeners
                .get(&l.port)
                .and_then(|arn| elb.rules.get(arn))
                .and_then(|rs| rs.iter().find(|x| x.priority == prio));
            if let Some(x) = live {
                check_owner(
                    || format!("{} (rule at priority {prio} on listener {})", r.id, l.port),
                    &x.tags,
                    desired,
                )?;
            }
        }
    }
    Ok(())
}

/// Health check fields that differ.
pub fn health_check_changes(want: &HealthCheckSpec, have: &HealthCheckSpec) -> Vec<FieldChange> {
    // Named field by field: a field added to the health check does not compile until it has
    // a row below.
    let HealthCheckSpec {
        path: _,
        matcher: _,
        interval: _,
        healthy_threshold: _,
        unhealthy_threshold: _,
        timeout: _,
        port: _,
        protocol: _,
        enabled: _,
    } = want;
    let mut out = Vec::new();
    for (path, w, h) in [
        ("healthCheck.path", want.path.clone(), have.path.clone()),
        (
            "healthCheck.matcher",
            want.matcher.clone(),
            have.matcher.clone(),
        ),
        (
            "healthCheck.interval",
            want.interval.to_string(),
            have.interval.to_string(),
        ),
        (
            "healthCheck.healthyThreshold",
            want.healthy_threshold.to_string(),
            have.healthy_threshold.to_string(),
        ),
        (
            "healthCheck.unhealthyThreshold",
            want.unhealthy_threshold.to_string(),
            have.unhealthy_threshold.to_string(),
        ),
        (
            "healthCheck.timeout",
            want.timeout.to_string(),
            have.timeout.to_string(),
        ),
        ("healthCheck.port", want.port.clone(), have.port.clone()),
        (
            "healthCheck.protocol",
            want.protocol.to_ascii_uppercase(),
            have.protocol.to_ascii_uppercase(),
        ),
        (
            "healthCheck.enabled",
            want.enabled.to_string(),
            have.enabled.to_string(),
        ),
    ] {
        if w.trim() != h.trim() {
            out.push(FieldChange::changed(path, h, w));
        }
    }
    out
}

/// What differs on a live target group, targets aside (they need the instances' ids).
#[derive(Debug, Default)]
struct TargetGroupDrift {
    /// A field fixed at creation differs (protocol, port, target type, …): only a replace fixes it.
    fixed: Option<FieldChange>,
    /// Health check fields.
    health_check: Vec<FieldChange>,
    /// Attributes (`attributes.<key>`).
    attributes: Vec<FieldChange>,
    /// Missing or changed tags.
    tags: Vec<FieldChange>,
    /// Keys of tags nobody declared.
    extra_tags: Vec<String>,
}

#[cfg(test)]
impl TargetGroupDrift {
    fn is_empty(&self) -> bool {
        self.fixed.is_none()
            && self.health_check.is_empty()
            && self.attributes.is_empty()
            && self.tags.is_empty()
            && self.extra_tags.is_empty()
    }
}

/// The attributes a target group must have: the declared deregistration delay and AWS's
/// defaults for the rest.
pub(super) fn desired_attributes(spec: &TargetGroupSpec) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, String> = DEFAULT_ATTRIBUTES
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    m.insert(
        DEREGISTRATION_DELAY.to_string(),
        spec.deregistration_delay.to_string(),
    );
    m
}

/// The field path of an attribute change, and back.
fn attribute_path(key: &str) -> String {
    if key == DEREGISTRATION_DELAY {
        "deregistrationDelay".to_string()
    } else {
        format!("attributes.{key}")
    }
}

fn attribute_key(path: &str) -> String {
    match path.strip_prefix("attributes.") {
        Some(k) => k.to_string(),
        None => DEREGISTRATION_DELAY.to_string(),
    }
}

/// Compares a declared target group with its live form. Every field of the live type is
/// named here, so a field added to it does not compile until it is compared (or said why
/// not).
fn compare_target_group(
    spec: &TargetGroupSpec,
    want_tags: &Tags,
    live: &LiveTargetGroup,
) -> TargetGroupDrift {
    let LiveTargetGroup {
        // Identity: found by name.
        arn: _,
        name: _,
        protocol,
        port,
        // Fixed at creation and chosen from a Lookup: a group in another VPC cannot be
        // reached by the ALB at all, and the name is unique per region.
        vpc_id: _,
        target_type,
        protocol_version,
        ip_address_type,
        health_check,
        // Follows from the listener rules, which are compared on their own.
        load_balancers: _,
        tags,
        attributes,
        // Compared against the instances' ids by the caller.
        targets: _,
    } = live;
    let mut out = TargetGroupDrift::default();
    let fixed_differs = !spec.protocol.eq_ignore_ascii_case(protocol)
        || i32::from(spec.port) != *port
        || (!target_type.is_empty() && target_type != TARGET_TYPE)
        || (!protocol_version.is_empty() && protocol_version != PROTOCOL_VERSION)
        || (!ip_address_type.is_empty() && ip_address_type != IP_ADDRESS_TYPE);
    if fixed_differs {
        out.fixed = Some(FieldChange::changed(
            "protocol/port",
            format!("{protocol}:{port} ({target_type}, {protocol_version}, {ip_address_type})"),
            format!(
                "{}:{} ({TARGET_TYPE}, {PROTOCOL_VERSION}, {IP_ADDRESS_TYPE})",
                spec.protocol, spec.port
            ),
        ));
    }
    out.health_check = health_check_changes(&spec.health_check, health_check);
    for (key, want) in desired_attributes(spec) {
        match attributes.get(&key) {
            Some(have) if *have != want => {
                out.attributes
                    .push(FieldChange::changed(attribute_path(&key), have, want))
            }
            // Only the delay is known to every endpoint: it must be there.
            None if key == DEREGISTRATION_DELAY => {
                out.attributes
                    .push(FieldChange::changed(attribute_path(&key), "(unset)", want))
            }
            _ => {}
        }
    }
    let (tf, extra) = tag_drift(want_tags, tags).into_parts();
    out.tags = tf;
    out.extra_tags = extra;
    out
}

/// Plans target groups and listener rules. `fresh` names Instances being created or replaced:
/// their targets are registered anew.
pub fn diff(
    desired: &Desired,
    observed: &Observed,
    fresh: &HashSet<String>,
    plan: &mut ProviderPlan<Op>,
) {
    let resolved = crate::provider::aws::ec2::seed_resolved(desired, observed);
    let replaced = diff_target_groups(desired, observed, fresh, &resolved, plan);
    diff_rules(desired, observed, &replaced, plan);
}

/// Plans target groups; returns the names of those being replaced, whose rules must be
/// re-created.
fn diff_target_groups(
    desired: &Desired,
    observed: &Observed,
    fresh: &HashSet<String>,
    resolved: &Resolved,
    plan: &mut ProviderPlan<Op>,
) -> HashSet<String> {
    let elb = &observed.elb;
    let mut replaced = HashSet::new();
    for (r, spec) in desired.target_groups() {
        let live = elb.target_groups.iter().find(|t| t.name == spec.name);
        let name = r.id.name.clone();
        if r.ensure == Ensure::Absent {
            if let Some(l) = live.filter(|l| is_owned(&l.tags, desired)) {
                plan.steps.push(Step {
                    change: Change::new(r.id.clone(), Action::Delete)
                        .because("the stack is disabled"),
                    ops: vec![Op::TargetGroup(TargetGroupOp::Delete {
                        arn: l.arn.clone(),
                    })],
                });
            }
            continue;
        }
        let Some(l) = live else {
            let mut ops = vec![
                TargetGroupOp::Create { name: name.clone() },
                TargetGroupOp::Attributes {
                    name: name.clone(),
                    keys: vec![DEREGISTRATION_DELAY.to_string()],
                },
            ];
            ops.extend(spec.targets.iter().map(|t| TargetGroupOp::Register {
                name: name.clone(),
                instance: t.instance.clone(),
                port: t.port,
            }));
            plan.steps.push(Step {
                change: Change::new(r.id.clone(), Action::Create),
                ops: ops.into_iter().map(Op::TargetGroup).collect(),
            });
            continue;
        };
        let owned = is_owned(&l.tags, desired);
        let found = compare_target_group(spec, &desired_tags(desired, &r.id, &spec.tags), l);
        if found.fixed.is_some() && owned {
            plan.steps.push(replace_target_group(r, spec, l, elb));
            replaced.insert(spec.name.clone());
            continue;
        }
        let mut fields = Vec::new();
        let mut ops = Vec::new();
        if !found.tags.is_empty() || !owned {
            fields.extend(found.tags);
            ops.push(TargetGroupOp::Tag { name: name.clone() });
        }
        if !found.extra_tags.is_empty() {
            ops.push(TargetGroupOp::Untag {
                name: name.clone(),
                keys: found.extra_tags,
            });
        }
        if let Some(f) = found.fixed {
            // Not ours to replace: report it; adopting the group first makes it replaceable.
            fields.push(f);
        }
        if !found.health_check.is_empty() {
            fields.extend(found.health_check);
            ops.push(TargetGroupOp::HealthCheck { name: name.clone() });
        }
        if !found.attributes.is_empty() {
            ops.push(TargetGroupOp::Attributes {
                name: name.clone(),
                keys: found
                    .attributes
                    .iter()
                    .map(|f| attribute_key(&f.path))
                    .collect(),
            });
            fields.extend(found.attributes);
        }
        let mut wanted: BTreeSet<(String, i32)> = BTreeSet::new();
        for t in &spec.targets {
            let id = Resolved::get(&resolved.instances, &t.instance);
            match id {
                Some(id) if !fresh.contains(&t.instance) => {
                    if !l.targets.contains(&(id.clone(), i32::from(t.port))) {
                        fields.push(FieldChange::added(
                            format!("targets[{}:{}]", t.instance, t.port),
                            &id,
                        ));
                        ops.push(TargetGroupOp::Register {
                            name: name.clone(),
                            instance: t.instance.clone(),
                            port: t.port,
                        });
                    }
                    wanted.insert((id, i32::from(t.port)));
                }
                _ => {
                    fields.push(FieldChange::added(
                        format!("targets[{}:{}]", t.instance, t.port),
                        "(new instance)",
                    ));
                    ops.push(TargetGroupOp::Register {
                        name: name.clone(),
                        instance: t.instance.clone(),
                        port: t.port,
                    });
                }
            }
        }
        for (id, port) in &l.targets {
            if !wanted.contains(&(id.clone(), *port)) {
                fields.push(FieldChange::removed(format!("targets[{id}:{port}]"), id));
                ops.push(TargetGroupOp::Deregister {
                    name: name.clone(),
                    id: id.clone(),
                    port: *port,
                });
            }
        }
        if ops.is_empty() && fields.is_empty() {
            continue;
        }
        if !owned {
            tracing::info!(target_group = %spec.name, "target group exists without ownership tags: planning to adopt it");
        }
        plan.steps.push(Step {
            change: Change::new(
                r.id.clone(),
                if owned { Action::Update } else { Action::Adopt },
            )
            .with_fields(fields),
            ops: ops.into_iter().map(Op::TargetGroup).collect(),
        });
    }
    let declared: HashSet<&str> = desired
        .target_groups()
        .map(|(_, s)| s.name.as_str())
        .collect();
    for l in &elb.target_groups {
        if !declared.contains(l.name.as_str()) && is_owned(&l.tags, desired) {
            plan.steps.push(Step {
                change: Change::new(
                    ResourceId::new(Kind::TargetGroup, l.name.clone()),
                    Action::Delete,
                )
                .because("no longer declared"),
                ops: vec![Op::TargetGroup(TargetGroupOp::Delete {
                    arn: l.arn.clone(),
                })],
            });
        }
    }
    replaced
}

/// Protocol and port are fixed when a target group is created: delete the rules that forward
/// to it (ELBv2 refuses to delete a group in use), delete it, create it anew and register its
/// targets; the rules are re-created in the next phase.
fn replace_target_group(
    r: &crate::model::Resource,
    spec: &crate::model::TargetGroupSpec,
    live: &LiveTargetGroup,
    elb: &ElbObserved,
) -> Step<Op> {
    let name = r.id.name.clone();
    let mut ops: Vec<Op> = elb
        .rules
        .values()
        .flatten()
        .filter(|x| x.forward.iter().any(|tg| tg == &spec.name))
        .map(|x| {
            Op::ListenerRule(ListenerRuleOp::Delete {
                rule: x.arn.clone(),
            })
        })
        .collect();
    ops.push(Op::TargetGroup(TargetGroupOp::Delete {
        arn: live.arn.clone(),
    }));
    ops.push(Op::TargetGroup(TargetGroupOp::Create {
        name: name.clone(),
    }));
    ops.push(Op::TargetGroup(TargetGroupOp::Attributes {
        name: name.clone(),
        keys: vec![DEREGISTRATION_DELAY.to_string()],
    }));
    ops.extend(spec.targets.iter().map(|t| {
        Op::TargetGroup(TargetGroupOp::Register {
            name: name.clone(),
            instance: t.instance.clone(),
            port: t.port,
        })
    }));
    Step {
        change: Change::new(r.id.clone(), Action::Replace)
            .because("protocol and port cannot change in place; its listener rules are re-created")
            .with_fields(vec![FieldChange::changed(
                "protocol/port",
                format!("{}:{}", live.protocol, live.port),
                format!("{}:{}", spec.protocol, spec.port),
            )]),
        ops,
    }
}

fn want_paths(spec: &ListenerRuleSpec) -> Vec<String> {
    let mut p: Vec<String> = spec
        .path_patterns
        .iter()
        .map(|s| s.trim().to_string())
        .collect();
    p.sort();
    p.dedup();
    p
}

/// What differs on a live listener rule.
#[derive(Debug, Default)]
struct RuleDrift {
    /// Conditions and actions (paths, forward target, anything extra).
    routing: Vec<FieldChange>,
    /// Missing or changed tags.
    tags: Vec<FieldChange>,
    /// Keys of tags nobody declared.
    extra_tags: Vec<String>,
}

#[cfg(test)]
impl RuleDrift {
    fn is_empty(&self) -> bool {
        self.routing.is_empty() && self.tags.is_empty() && self.extra_tags.is_empty()
    }
}

/// Compares a declared rule with the live rule at its priority. Every field of the live type
/// is named here, so a field added to it does not compile until it is compared.
fn compare_rule(
    spec: &ListenerRuleSpec,
    want_tags: &Tags,
    tg_name: &str,
    live: &LiveRule,
) -> RuleDrift {
    let LiveRule {
        // Identity: found by listener and priority.
        arn: _,
        priority: _,
        paths,
        extra_conditions,
        forward,
        extra_actions,
        tags,
    } = live;
    let mut out = RuleDrift::default();
    let wp = want_paths(spec);
    if wp != *paths {
        out.routing.push(FieldChange::changed(
            "pathPatterns",
            paths.join(","),
            wp.join(","),
        ));
    }
    for c in extra_conditions {
        out.routing.push(FieldChange::removed("conditions", c));
    }
    if forward.as_slice() != [tg_name.to_string()] {
        out.routing.push(FieldChange::changed(
            "forwardTo",
            forward.join(","),
            tg_name,
        ));
    }
    for a in extra_actions {
        out.routing.push(FieldChange::removed("actions", a));
    }
    let (tf, extra) = tag_drift(want_tags, tags).into_parts();
    out.tags = tf;
    out.extra_tags = extra;
    out
}

fn diff_rules(
    desired: &Desired,
    observed: &Observed,
    replaced: &HashSet<String>,
    plan: &mut ProviderPlan<Op>,
) {
    let elb = &observed.elb;
    // (listener ARN, priority) of every declared, present rule: the others that we own go.
    let mut declared: HashSet<(String, String)> = HashSet::new();
    for (r, spec) in desired.listener_rules() {
        let lb = match elb.load_balancers.get(&spec.load_balancer) {
            Some(Some(lb)) => lb,
            _ => {
                if r.ensure == Ensure::Present {
                    plan.conditions.push(Condition {
                        id: r.id.clone(),
                        kind: "Ready".into(),
                        status: ConditionStatus::False,
                        reason: "LoadBalancerNotFound".into(),
                        message: format!("Lookup/{} found no load balancer", spec.load_balancer),
                    });
                }
                continue;
            }
        };
        let mut fields = Vec::new();
        let mut ops = Vec::new();
        let mut action = Action::Update;
        let tg_name = tg_name_of(desired, &spec.forward_to).to_string();
        for l in &spec.listeners {
            let Some(listener) = lb.listeners.get(&l.port) else {
                if !l.optional && r.ensure == Ensure::Present {
                    plan.conditions.push(Condition {
                        id: r.id.clone(),
                        kind: "Ready".into(),
                        status: ConditionStatus::False,
                        reason: "ListenerNotFound".into(),
                        message: format!("the load balancer has no listener on port {}", l.port),
                    });
                }
                continue;
            };
            let prio = spec.priority.to_string();
            // A rule forwarding to a replaced group is deleted with it, so it is created anew.
            let live = elb
                .rules
                .get(listener)
                .and_then(|rs| rs.iter().find(|x| x.priority == prio))
                .filter(|x| !x.forward.iter().any(|tg| replaced.contains(tg)));
            if r.ensure == Ensure::Absent {
                if let Some(x) = live.filter(|x| is_owned(&x.tags, desired)) {
                    action = Action::Delete;
                    ops.push(ListenerRuleOp::Delete {
                        rule: x.arn.clone(),
                    });
                }
                continue;
            }
            declared.insert((listener.clone(), prio.clone()));
            let at = format!("listener:{}", l.port);
            let Some(x) = live else {
                fields.push(FieldChange::added(
                    at,
                    format!(
                        "priority {prio}: {} → {tg_name}",
                        spec.path_patterns.join(",")
                    ),
                ));
                ops.push(ListenerRuleOp::Create {
                    listener: listener.clone(),
                });
                continue;
            };
            if !is_owned(&x.tags, desired) {
                tracing::info!(rule = %x.arn, "listener rule exists without ownership tags: planning to adopt it");
                action = Action::Adopt;
            }
            let found = compare_rule(spec, &desired_tags(desired, &r.id, &spec.tags), &tg_name, x);
            let prefixed = |v: Vec<FieldChange>| {
                v.into_iter().map(|mut f| {
                    f.path = format!("{at}.{}", f.path);
                    f
                })
            };
            if !found.tags.is_empty() {
                fields.extend(prefixed(found.tags));
                ops.push(ListenerRuleOp::Tag {
                    rule: x.arn.clone(),
                });
            }
            if !found.extra_tags.is_empty() {
                ops.push(ListenerRuleOp::Untag {
                    rule: x.arn.clone(),
                    keys: found.extra_tags,
                });
            }
            if !found.routing.is_empty() {
                fields.extend(prefixed(found.routing));
                ops.push(ListenerRuleOp::Modify {
                    rule: x.arn.clone(),
                });
            }
        }
        if ops.is_empty() {
            continue;
        }
        if ops
            .iter()
            .all(|o| matches!(o, ListenerRuleOp::Create { .. }))
        {
            action = Action::Create;
        }
        let mut change = Change::new(r.id.clone(), action).with_fields(fields);
        if action == Action::Delete {
            change = change.because("the stack is disabled");
        }
        plan.steps.push(Step {
            change,
            ops: ops.into_iter().map(Op::ListenerRule).collect(),
        });
    }
    for (listener, rules) in &elb.rules {
        for x in rules {
            if is_owned(&x.tags, desired)
                && !declared.contains(&(listener.clone(), x.priority.clone()))
            {
                let declared_absent = desired.listener_rules().any(|(r, s)| {
                    r.ensure == Ensure::Absent && s.priority.to_string() == x.priority
                });
                if declared_absent {
                    continue;
                }
                // Ours but at an undeclared priority: a leftover, or a duplicate of a declared
                // rule (a concurrent apply, a copy by hand). The declared priority is the one
                // kept; routing by priority makes the other one dead weight or a hazard.
                let twin = desired.listener_rules().find(|(r, s)| {
                    r.ensure == Ensure::Present
                        && want_paths(s) == x.paths
                        && x.forward == [tg_name_of(desired, &s.forward_to).to_string()]
                });
                let why = match twin {
                    Some((r, s)) => format!(
                        "a duplicate of {} (priority {} is the declared one)",
                        r.id, s.priority
                    ),
                    None => "no longer declared".to_string(),
                };
                plan.steps.push(Step {
                    change: Change::new(
                        ResourceId::new(Kind::ListenerRule, format!("priority-{}", x.priority)),
                        Action::Delete,
                    )
                    .because(why),
                    ops: vec![Op::ListenerRule(ListenerRuleOp::Delete {
                        rule: x.arn.clone(),
                    })],
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TargetGroupSpec {
        TargetGroupSpec {
            name: "tg".into(),
            protocol: "HTTP".into(),
            port: 12347,
            vpc: "vpc".into(),
            health_check: HealthCheckSpec {
                path: "/-/ready".into(),
                matcher: "200".into(),
                interval: 30,
                healthy_threshold: 2,
                unhealthy_threshold: 3,
                timeout: 5,
                port: "traffic-port".into(),
                protocol: "HTTP".into(),
                enabled: true,
            },
            deregistration_delay: 30,
            targets: vec![],
            tags: Tags::new(),
        }
    }

    fn want_tags() -> Tags {
        [("ManagedBy".to_string(), "stackwarden".to_string())].into()
    }

    /// A live group exactly as declared. The struct literal names every field: a new field
    /// does not compile until it is given here, and then it needs a row in the table below.
    fn live_tg() -> LiveTargetGroup {
        let s = spec();
        let mut attributes: BTreeMap<String, String> = DEFAULT_ATTRIBUTES
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        attributes.insert(DEREGISTRATION_DELAY.into(), "30".into());
        LiveTargetGroup {
            arn: "arn:tg".into(),
            name: s.name.clone(),
            protocol: "HTTP".into(),
            port: 12347,
            vpc_id: "vpc-1".into(),
            target_type: "instance".into(),
            protocol_version: "HTTP1".into(),
            ip_address_type: "ipv4".into(),
            health_check: s.health_check.clone(),
            load_balancers: vec![],
            tags: want_tags(),
            attributes,
            targets: BTreeSet::new(),
        }
    }

    /// Every field of the live target group: a change to each is seen, or the row says why
    /// a person cannot make it (or who compares it).
    #[test]
    fn every_target_group_field_changed_by_hand_is_seen() {
        type Edit = fn(&mut LiveTargetGroup);
        let seen: Vec<(&str, Edit)> = vec![
            ("protocol", |l| l.protocol = "HTTPS".into()),
            ("port", |l| l.port = 80),
            ("target_type", |l| l.target_type = "ip".into()),
            ("protocol_version", |l| l.protocol_version = "HTTP2".into()),
            ("ip_address_type", |l| l.ip_address_type = "ipv6".into()),
            ("health_check.path", |l| l.health_check.path = "/".into()),
            ("health_check.matcher", |l| {
                l.health_check.matcher = "200-399".into()
            }),
            ("health_check.interval", |l| l.health_check.interval = 10),
            ("health_check.healthy_threshold", |l| {
                l.health_check.healthy_threshold = 5
            }),
            ("health_check.unhealthy_threshold", |l| {
                l.health_check.unhealthy_threshold = 2
            }),
            ("health_check.timeout", |l| l.health_check.timeout = 29),
            ("health_check.port", |l| l.health_check.port = "8080".into()),
            ("health_check.protocol", |l| {
                l.health_check.protocol = "HTTPS".into()
            }),
            ("health_check.enabled", |l| l.health_check.enabled = false),
            ("tags", |l| {
                l.tags.insert("extra".into(), "x".into());
            }),
            ("tags", |l| {
                l.tags.clear();
            }),
            ("attributes", |l| {
                l.attributes
                    .insert(DEREGISTRATION_DELAY.into(), "300".into());
            }),
            ("attributes", |l| {
                l.attributes
                    .insert("stickiness.enabled".into(), "true".into());
            }),
            ("attributes", |l| {
                l.attributes
                    .insert("slow_start.duration_seconds".into(), "60".into());
            }),
            ("attributes", |l| {
                l.attributes.remove(DEREGISTRATION_DELAY);
            }),
        ];
        // Fields a person cannot change in place, or that are compared elsewhere.
        let not_here = ["arn", "name", "vpc_id", "load_balancers", "targets"];
        let LiveTargetGroup {
            arn: _,
            name: _,
            protocol: _,
            port: _,
            vpc_id: _,
            target_type: _,
            protocol_version: _,
            ip_address_type: _,
            health_check:
                HealthCheckSpec {
                    path: _,
                    matcher: _,
                    interval: _,
                    healthy_threshold: _,
                    unhealthy_threshold: _,
                    timeout: _,
                    port: _,
                    protocol: _,
                    enabled: _,
                },
            load_balancers: _,
            tags: _,
            attributes: _,
            targets: _,
        } = live_tg();
        let fields = [
            "arn",
            "name",
            "protocol",
            "port",
            "vpc_id",
            "target_type",
            "protocol_version",
            "ip_address_type",
            "health_check.path",
            "health_check.matcher",
            "health_check.interval",
            "health_check.healthy_threshold",
            "health_check.unhealthy_threshold",
            "health_check.timeout",
            "health_check.port",
            "health_check.protocol",
            "health_check.enabled",
            "load_balancers",
            "tags",
            "attributes",
            "targets",
        ];
        for f in fields {
            assert!(
                not_here.contains(&f) || seen.iter().any(|(n, _)| *n == f),
                "field {f} has no case"
            );
        }
        assert!(compare_target_group(&spec(), &want_tags(), &live_tg()).is_empty());
        for (field, edit) in seen {
            let mut l = live_tg();
            edit(&mut l);
            let d = compare_target_group(&spec(), &want_tags(), &l);
            assert!(!d.is_empty(), "a changed {field} is not seen");
        }
    }

    fn rule_spec() -> ListenerRuleSpec {
        ListenerRuleSpec {
            load_balancer: "alb".into(),
            listeners: vec![],
            priority: 91,
            path_patterns: vec!["/collect".into(), "/collect/*".into()],
            forward_to: "faro".into(),
            tags: Tags::new(),
        }
    }

    fn live_rule() -> LiveRule {
        LiveRule {
            arn: "arn:rule".into(),
            priority: "91".into(),
            paths: vec!["/collect".into(), "/collect/*".into()],
            extra_conditions: vec![],
            forward: vec!["tg".into()],
            extra_actions: vec![],
            tags: want_tags(),
        }
    }

    #[test]
    fn every_listener_rule_field_changed_by_hand_is_seen() {
        type Edit = fn(&mut LiveRule);
        let seen: Vec<(&str, Edit)> = vec![
            ("paths", |l| l.paths.push("/grafana/*".into())),
            ("paths", |l| {
                l.paths.pop();
            }),
            ("extra_conditions", |l| {
                l.extra_conditions.push("host-header=evil.example".into())
            }),
            ("forward", |l| l.forward = vec!["other".into()]),
            ("forward", |l| l.forward.push("other".into())),
            ("extra_actions", |l| {
                l.extra_actions.push("fixed-response 503".into())
            }),
            ("tags", |l| {
                l.tags.insert("extra".into(), "x".into());
            }),
            ("tags", |l| {
                l.tags.clear();
            }),
        ];
        let not_here = ["arn", "priority"];
        let LiveRule {
            arn: _,
            priority: _,
            paths: _,
            extra_conditions: _,
            forward: _,
            extra_actions: _,
            tags: _,
        } = live_rule();
        let fields = [
            "arn",
            "priority",
            "paths",
            "extra_conditions",
            "forward",
            "extra_actions",
            "tags",
        ];
        for f in fields {
            assert!(
                not_here.contains(&f) || seen.iter().any(|(n, _)| *n == f),
                "field {f} has no case"
            );
        }
        assert!(compare_rule(&rule_spec(), &want_tags(), "tg", &live_rule()).is_empty());
        for (field, edit) in seen {
            let mut l = live_rule();
            edit(&mut l);
            assert!(
                !compare_rule(&rule_spec(), &want_tags(), "tg", &l).is_empty(),
                "a changed {field} is not seen"
            );
        }
    }
}
