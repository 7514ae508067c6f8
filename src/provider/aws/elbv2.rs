//! ELBv2: the target group (health check, deregistration delay, targets) and the listener
//! rules on the looked-up ALB. The ALB and its listeners are lookups: read, never written.

use super::{
    ApplyCtx, AwsError, AwsProvider, Observed, Op, Resolved, desired_tags, is_owned, tag_changes,
};
use crate::model::{
    Desired, Ensure, HealthCheckSpec, Kind, ListenerRuleSpec, LookupType, ResourceId, Tags,
    TargetGroupSpec,
};
use crate::plan::{Action, Change, Condition, ConditionStatus, FieldChange};
use crate::provider::{ProviderPlan, Step};
use aws_sdk_elasticloadbalancingv2::types::{
    Action as ElbAction, ActionTypeEnum, Matcher, PathPatternConditionConfig, ProtocolEnum,
    RuleCondition, Tag, TargetDescription, TargetGroupAttribute, TargetTypeEnum,
};
use futures_util::future::join_all;
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// The attribute holding the deregistration delay.
const DEREGISTRATION_DELAY: &str = "deregistration_delay.timeout_seconds";
/// DescribeTags takes at most 20 ARNs per call.
const TAGS_PER_CALL: usize = 20;

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
    /// Health check as the model spells it.
    pub health_check: HealthCheckSpec,
    /// Load balancers using it.
    pub load_balancers: Vec<String>,
    /// Tags (read for declared and candidate orphan groups).
    pub tags: Tags,
    /// Deregistration delay, when read.
    pub deregistration_delay: Option<u32>,
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
    /// Path patterns, sorted.
    pub paths: Vec<String>,
    /// Names of the target groups it forwards to, sorted.
    pub forward: Vec<String>,
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

/// Target group writes.
#[derive(Debug)]
pub enum TargetGroupOp {
    /// Create it (with tags).
    Create {
        /// TargetGroup manifest name.
        name: String,
    },
    /// Delete it.
    Delete {
        /// ARN.
        arn: String,
    },
    /// Set the health check.
    HealthCheck {
        /// TargetGroup manifest name.
        name: String,
    },
    /// Set the deregistration delay.
    Attributes {
        /// TargetGroup manifest name.
        name: String,
    },
    /// Put the desired tags.
    Tag {
        /// TargetGroup manifest name.
        name: String,
    },
    /// Register an instance.
    Register {
        /// TargetGroup manifest name.
        name: String,
        /// Instance manifest name.
        instance: String,
        /// Port.
        port: u16,
    },
    /// Deregister a target.
    Deregister {
        /// TargetGroup manifest name.
        name: String,
        /// Instance id.
        id: String,
        /// Port.
        port: i32,
    },
}

/// Listener rule writes.
#[derive(Debug)]
pub enum ListenerRuleOp {
    /// Create the rule on a listener.
    Create {
        /// Listener ARN.
        listener: String,
    },
    /// Set conditions and actions.
    Modify {
        /// Rule ARN.
        rule: String,
    },
    /// Put the desired tags.
    Tag {
        /// Rule ARN.
        rule: String,
    },
    /// Delete a rule.
    Delete {
        /// Rule ARN.
        rule: String,
    },
}

/// The name inside a load balancer or target group ARN (`…:loadbalancer/app/<name>/<id>`,
/// `…:targetgroup/<name>/<id>`).
pub fn name_in_arn(arn: &str) -> &str {
    let parts: Vec<&str> = arn.split('/').collect();
    match parts.as_slice() {
        [_, "app" | "net", name, _] => name,
        [_, name, _] => name,
        _ => arn,
    }
}

fn tg_name_of<'a>(desired: &'a Desired, manifest: &str) -> &'a str {
    desired
        .target_groups()
        .find(|(r, _)| r.id.name == manifest)
        .map(|(_, s)| s.name.as_str())
        .unwrap_or("")
}

// ---------------------------------------------------------------------------------------------
// Reads

async fn describe_target_groups(
    client: &aws_sdk_elasticloadbalancingv2::Client,
) -> Result<Vec<LiveTargetGroup>, AwsError> {
    let mut out = Vec::new();
    let mut marker = None;
    loop {
        let resp = client
            .describe_target_groups()
            .set_marker(marker)
            .page_size(400)
            .send()
            .await
            .map_err(|e| AwsError::call("DescribeTargetGroups", "target groups", e))?;
        for tg in resp.target_groups() {
            let (Some(arn), Some(name)) = (tg.target_group_arn(), tg.target_group_name()) else {
                continue;
            };
            out.push(LiveTargetGroup {
                arn: arn.to_string(),
                name: name.to_string(),
                protocol: tg
                    .protocol()
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_default(),
                port: tg.port().unwrap_or(0),
                health_check: HealthCheckSpec {
                    path: tg.health_check_path().unwrap_or("").to_string(),
                    matcher: tg
                        .matcher()
                        .and_then(|m| m.http_code())
                        .unwrap_or("")
                        .to_string(),
                    interval: u32::try_from(tg.health_check_interval_seconds().unwrap_or(0))
                        .unwrap_or(0),
                    healthy_threshold: u32::try_from(tg.healthy_threshold_count().unwrap_or(0))
                        .unwrap_or(0),
                    unhealthy_threshold: u32::try_from(tg.unhealthy_threshold_count().unwrap_or(0))
                        .unwrap_or(0),
                },
                load_balancers: tg.load_balancer_arns().to_vec(),
                tags: Tags::new(),
                deregistration_delay: None,
                targets: BTreeSet::new(),
            });
        }
        marker = resp.next_marker().map(str::to_string);
        if marker.is_none() {
            return Ok(out);
        }
    }
}

async fn describe_tags(
    client: &aws_sdk_elasticloadbalancingv2::Client,
    arns: Vec<String>,
) -> Result<BTreeMap<String, Tags>, AwsError> {
    let calls = arns.chunks(TAGS_PER_CALL).map(|chunk| {
        client
            .describe_tags()
            .set_resource_arns(Some(chunk.to_vec()))
            .send()
    });
    let mut out = BTreeMap::new();
    for resp in join_all(calls).await {
        let resp =
            resp.map_err(|e| AwsError::call("DescribeTags", "target groups and rules", e))?;
        for d in resp.tag_descriptions() {
            let tags = d
                .tags()
                .iter()
                .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
                .collect();
            if let Some(arn) = d.resource_arn() {
                out.insert(arn.to_string(), tags);
            }
        }
    }
    Ok(out)
}

async fn find_load_balancer(
    client: &aws_sdk_elasticloadbalancingv2::Client,
    name: &str,
    target_groups: &[LiveTargetGroup],
) -> Result<Option<LiveLoadBalancer>, AwsError> {
    // The target group already names the ALB when a rule forwards to it: no extra call.
    let known = target_groups
        .iter()
        .flat_map(|tg| tg.load_balancers.iter())
        .find(|arn| name_in_arn(arn) == name)
        .cloned();
    let arn = match known {
        Some(arn) => arn,
        None => match client.describe_load_balancers().names(name).send().await {
            Ok(o) => match o
                .load_balancers()
                .first()
                .and_then(|lb| lb.load_balancer_arn())
            {
                Some(a) => a.to_string(),
                None => return Ok(None),
            },
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_load_balancer_not_found_exception()) =>
            {
                return Ok(None);
            }
            Err(e) => {
                return Err(AwsError::call(
                    "DescribeLoadBalancers",
                    format!("load balancer {name}"),
                    e,
                ));
            }
        },
    };
    let mut listeners = BTreeMap::new();
    let mut marker = None;
    loop {
        let resp = client
            .describe_listeners()
            .load_balancer_arn(&arn)
            .set_marker(marker)
            .send()
            .await
            .map_err(|e| AwsError::call("DescribeListeners", format!("load balancer {name}"), e))?;
        for l in resp.listeners() {
            if let (Some(port), Some(larn)) = (l.port(), l.listener_arn())
                && let Ok(port) = u16::try_from(port)
            {
                listeners.insert(port, larn.to_string());
            }
        }
        marker = resp.next_marker().map(str::to_string);
        if marker.is_none() {
            break;
        }
    }
    Ok(Some(LiveLoadBalancer { arn, listeners }))
}

async fn describe_rules(
    client: &aws_sdk_elasticloadbalancingv2::Client,
    listener: &str,
) -> Result<Vec<LiveRule>, AwsError> {
    let mut out = Vec::new();
    let mut marker = None;
    loop {
        let resp = client
            .describe_rules()
            .listener_arn(listener)
            .set_marker(marker)
            .send()
            .await
            .map_err(|e| AwsError::call("DescribeRules", format!("listener {listener}"), e))?;
        for r in resp.rules() {
            if r.is_default() == Some(true) {
                continue;
            }
            let mut paths: Vec<String> = r
                .conditions()
                .iter()
                .filter(|c| c.field() == Some("path-pattern"))
                .flat_map(|c| {
                    let mut v: Vec<String> = c
                        .path_pattern_config()
                        .map(|p| p.values().to_vec())
                        .unwrap_or_default();
                    if v.is_empty() {
                        v = c.values().to_vec();
                    }
                    v
                })
                .collect();
            paths.sort();
            paths.dedup();
            let mut forward: Vec<String> = r
                .actions()
                .iter()
                .filter(|a| a.r#type() == Some(&ActionTypeEnum::Forward))
                .flat_map(|a| {
                    let mut v: Vec<String> = a
                        .target_group_arn()
                        .map(str::to_string)
                        .into_iter()
                        .collect();
                    if let Some(fc) = a.forward_config() {
                        v.extend(
                            fc.target_groups()
                                .iter()
                                .filter_map(|t| t.target_group_arn().map(str::to_string)),
                        );
                    }
                    v
                })
                .map(|arn| name_in_arn(&arn).to_string())
                .collect();
            forward.sort();
            forward.dedup();
            out.push(LiveRule {
                arn: r.rule_arn().unwrap_or("").to_string(),
                priority: r.priority().unwrap_or("").to_string(),
                paths,
                forward,
                tags: Tags::new(),
            });
        }
        marker = resp.next_marker().map(str::to_string);
        if marker.is_none() {
            return Ok(out);
        }
    }
}

async fn tg_details(
    client: &aws_sdk_elasticloadbalancingv2::Client,
    tg: &LiveTargetGroup,
) -> Result<(Option<u32>, BTreeSet<(String, i32)>), AwsError> {
    let res = format!("target group {}", tg.name);
    let (attrs, health) = tokio::join!(
        client
            .describe_target_group_attributes()
            .target_group_arn(&tg.arn)
            .send(),
        client
            .describe_target_health()
            .target_group_arn(&tg.arn)
            .send(),
    );
    let attrs = attrs.map_err(|e| AwsError::call("DescribeTargetGroupAttributes", &res, e))?;
    let delay = attrs
        .attributes()
        .iter()
        .find(|a| a.key() == Some(DEREGISTRATION_DELAY))
        .and_then(|a| a.value())
        .and_then(|v| v.parse().ok());
    let health = health.map_err(|e| AwsError::call("DescribeTargetHealth", &res, e))?;
    let targets = health
        .target_health_descriptions()
        .iter()
        .filter(|d| {
            !matches!(
                d.target_health()
                    .and_then(|h| h.state())
                    .map(|s| s.as_str()),
                Some("draining")
            )
        })
        .filter_map(|d| {
            let t = d.target()?;
            Some((t.id()?.to_string(), t.port().unwrap_or(0)))
        })
        .collect();
    Ok((delay, targets))
}

/// Observes target groups, the looked-up ALBs with their listeners, and the rules on the
/// listeners the manifests use.
pub async fn observe(
    client: &aws_sdk_elasticloadbalancingv2::Client,
    desired: &Desired,
) -> Result<ElbObserved, AwsError> {
    let mut out = ElbObserved::default();
    let has_rules = desired.listener_rules().next().is_some();
    if desired.target_groups().next().is_none() && !has_rules {
        return Ok(out);
    }
    out.target_groups = describe_target_groups(client).await?;
    let declared: HashSet<&str> = desired
        .target_groups()
        .map(|(_, s)| s.name.as_str())
        .collect();
    let lbs = join_all(
        desired
            .lookups()
            .filter(|(_, l)| l.kind == LookupType::LoadBalancer)
            .map(|(r, l)| {
                let name = l.name.clone().unwrap_or_default();
                let tgs = &out.target_groups;
                async move {
                    (
                        r.id.name.clone(),
                        find_load_balancer(client, &name, tgs).await,
                    )
                }
            }),
    );
    let details = join_all(
        out.target_groups
            .iter()
            .filter(|tg| declared.contains(tg.name.as_str()))
            .map(|tg| async move { (tg.arn.clone(), tg_details(client, tg).await) }),
    );
    let (lbs, details) = tokio::join!(lbs, details);
    for (name, lb) in lbs {
        out.load_balancers.insert(name, lb?);
    }
    let details: BTreeMap<String, _> = details.into_iter().collect();
    for tg in &mut out.target_groups {
        if let Some(d) = details.get(&tg.arn) {
            match d {
                Ok((delay, targets)) => {
                    tg.deregistration_delay = *delay;
                    tg.targets = targets.clone();
                }
                Err(e) => {
                    return Err(AwsError::invalid(
                        format!("target group {}", tg.name),
                        e.to_string(),
                    ));
                }
            }
        }
    }
    // Rules of the listeners the manifests name.
    let mut listeners = BTreeSet::new();
    for (_, spec) in desired.listener_rules() {
        if let Some(Some(lb)) = out.load_balancers.get(&spec.load_balancer) {
            for l in &spec.listeners {
                if let Some(arn) = lb.listeners.get(&l.port) {
                    listeners.insert(arn.clone());
                }
            }
        }
    }
    let rules = join_all(
        listeners
            .into_iter()
            .map(|l| async move { (l.clone(), describe_rules(client, &l).await) }),
    )
    .await;
    for (l, r) in rules {
        out.rules.insert(l, r?);
    }
    // One DescribeTags for every group and rule whose ownership matters.
    let arns: Vec<String> = out
        .target_groups
        .iter()
        .map(|t| t.arn.clone())
        .chain(out.rules.values().flatten().map(|r| r.arn.clone()))
        .collect();
    if !arns.is_empty() {
        let tags = describe_tags(client, arns).await?;
        for tg in &mut out.target_groups {
            tg.tags = tags.get(&tg.arn).cloned().unwrap_or_default();
        }
        for r in out.rules.values_mut().flatten() {
            r.tags = tags.get(&r.arn).cloned().unwrap_or_default();
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Diff (pure)

/// Health check fields that differ.
pub fn health_check_changes(want: &HealthCheckSpec, have: &HealthCheckSpec) -> Vec<FieldChange> {
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
    ] {
        if w.trim() != h.trim() {
            out.push(FieldChange::changed(path, h, w));
        }
    }
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
    let resolved = super::ec2::seed_resolved(desired, observed);
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
                TargetGroupOp::Attributes { name: name.clone() },
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
        let moved =
            !spec.protocol.eq_ignore_ascii_case(&l.protocol) || i32::from(spec.port) != l.port;
        if moved && owned {
            plan.steps.push(replace_target_group(r, spec, l, elb));
            replaced.insert(spec.name.clone());
            continue;
        }
        let mut fields = Vec::new();
        let mut ops = Vec::new();
        let tf = tag_changes(&desired_tags(desired, &spec.tags), &l.tags);
        if !tf.is_empty() || !owned {
            fields.extend(tf);
            ops.push(TargetGroupOp::Tag { name: name.clone() });
        }
        if moved {
            // Not ours to replace: report it; adopting the group first makes it replaceable.
            fields.push(FieldChange::changed(
                "protocol/port",
                format!("{}:{}", l.protocol, l.port),
                format!("{}:{}", spec.protocol, spec.port),
            ));
        }
        let hc = health_check_changes(&spec.health_check, &l.health_check);
        if !hc.is_empty() {
            fields.extend(hc);
            ops.push(TargetGroupOp::HealthCheck { name: name.clone() });
        }
        if l.deregistration_delay != Some(spec.deregistration_delay) {
            let old = l
                .deregistration_delay
                .map(|d| d.to_string())
                .unwrap_or_else(|| "(unset)".into());
            fields.push(FieldChange::changed(
                "deregistrationDelay",
                old,
                spec.deregistration_delay,
            ));
            ops.push(TargetGroupOp::Attributes { name: name.clone() });
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
            let tf = tag_changes(&desired_tags(desired, &spec.tags), &x.tags);
            if !tf.is_empty() {
                fields.extend(tf.into_iter().map(|mut f| {
                    f.path = format!("{at}.{}", f.path);
                    f
                }));
                ops.push(ListenerRuleOp::Tag {
                    rule: x.arn.clone(),
                });
            }
            let wp = want_paths(spec);
            let mut modify = false;
            if wp != x.paths {
                fields.push(FieldChange::changed(
                    format!("{at}.pathPatterns"),
                    x.paths.join(","),
                    wp.join(","),
                ));
                modify = true;
            }
            if x.forward != [tg_name.clone()] {
                fields.push(FieldChange::changed(
                    format!("{at}.forwardTo"),
                    x.forward.join(","),
                    &tg_name,
                ));
                modify = true;
            }
            if modify {
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
                plan.steps.push(Step {
                    change: Change::new(
                        ResourceId::new(Kind::ListenerRule, format!("priority-{}", x.priority)),
                        Action::Delete,
                    )
                    .because("no longer declared"),
                    ops: vec![Op::ListenerRule(ListenerRuleOp::Delete {
                        rule: x.arn.clone(),
                    })],
                });
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Writes

fn tg_spec<'a>(desired: &'a Desired, name: &str) -> Result<&'a TargetGroupSpec, AwsError> {
    desired
        .target_groups()
        .find(|(r, _)| r.id.name == name)
        .map(|(_, s)| s)
        .ok_or_else(|| AwsError::invalid(format!("TargetGroup/{name}"), "not declared"))
}

fn elb_tags(tags: &Tags) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

fn tg_arn(ctx: &ApplyCtx<'_>, spec: &TargetGroupSpec) -> Result<String, AwsError> {
    Resolved::get(&ctx.resolved.target_groups, &spec.name)
        .ok_or_else(|| AwsError::invalid(format!("target group {}", spec.name), "not found"))
}

/// Applies one target group op.
pub async fn apply_target_group(
    p: &AwsProvider,
    ctx: &ApplyCtx<'_>,
    change: &Change,
    op: TargetGroupOp,
) -> Result<(), AwsError> {
    let res = change.id.to_string();
    let c = &p.elbv2;
    match op {
        TargetGroupOp::Create { name } => {
            let spec = tg_spec(ctx.desired, &name)?;
            let net = p.network(ctx.desired).await?;
            let vpc = net.vpcs.get(&spec.vpc).ok_or_else(|| {
                AwsError::invalid(
                    &res,
                    format!("the VPC of Lookup/{} was not found", spec.vpc),
                )
            })?;
            let hc = &spec.health_check;
            let out = c
                .create_target_group()
                .name(&spec.name)
                .protocol(ProtocolEnum::from(
                    spec.protocol.to_ascii_uppercase().as_str(),
                ))
                .port(i32::from(spec.port))
                .vpc_id(vpc)
                .target_type(TargetTypeEnum::Instance)
                .health_check_path(&hc.path)
                .health_check_interval_seconds(i32::try_from(hc.interval).unwrap_or(30))
                .healthy_threshold_count(i32::try_from(hc.healthy_threshold).unwrap_or(2))
                .unhealthy_threshold_count(i32::try_from(hc.unhealthy_threshold).unwrap_or(3))
                .matcher(Matcher::builder().http_code(&hc.matcher).build())
                .set_tags(Some(elb_tags(&desired_tags(ctx.desired, &spec.tags))))
                .send()
                .await
                .map_err(|e| AwsError::call("CreateTargetGroup", &res, e))?;
            let arn = out
                .target_groups()
                .first()
                .and_then(|t| t.target_group_arn())
                .ok_or_else(|| AwsError::invalid(&res, "CreateTargetGroup returned no ARN"))?;
            Resolved::set(&ctx.resolved.target_groups, &spec.name, arn.to_string());
        }
        TargetGroupOp::Delete { arn } => {
            c.delete_target_group()
                .target_group_arn(&arn)
                .send()
                .await
                .map_err(|e| AwsError::call("DeleteTargetGroup", &res, e))?;
        }
        TargetGroupOp::HealthCheck { name } => {
            let spec = tg_spec(ctx.desired, &name)?;
            let hc = &spec.health_check;
            c.modify_target_group()
                .target_group_arn(tg_arn(ctx, spec)?)
                .health_check_path(&hc.path)
                .health_check_interval_seconds(i32::try_from(hc.interval).unwrap_or(30))
                .healthy_threshold_count(i32::try_from(hc.healthy_threshold).unwrap_or(2))
                .unhealthy_threshold_count(i32::try_from(hc.unhealthy_threshold).unwrap_or(3))
                .matcher(Matcher::builder().http_code(&hc.matcher).build())
                .send()
                .await
                .map_err(|e| AwsError::call("ModifyTargetGroup", &res, e))?;
        }
        TargetGroupOp::Attributes { name } => {
            let spec = tg_spec(ctx.desired, &name)?;
            c.modify_target_group_attributes()
                .target_group_arn(tg_arn(ctx, spec)?)
                .attributes(
                    TargetGroupAttribute::builder()
                        .key(DEREGISTRATION_DELAY)
                        .value(spec.deregistration_delay.to_string())
                        .build(),
                )
                .send()
                .await
                .map_err(|e| AwsError::call("ModifyTargetGroupAttributes", &res, e))?;
        }
        TargetGroupOp::Tag { name } => {
            let spec = tg_spec(ctx.desired, &name)?;
            tracing::info!(resource = %res, "tagging target group with ownership tags");
            c.add_tags()
                .resource_arns(tg_arn(ctx, spec)?)
                .set_tags(Some(elb_tags(&desired_tags(ctx.desired, &spec.tags))))
                .send()
                .await
                .map_err(|e| AwsError::call("AddTags", &res, e))?;
        }
        TargetGroupOp::Register {
            name,
            instance,
            port,
        } => {
            let spec = tg_spec(ctx.desired, &name)?;
            let id = Resolved::get(&ctx.resolved.instances, &instance).ok_or_else(|| {
                AwsError::invalid(
                    &res,
                    format!("Instance/{instance} has no instance to register"),
                )
            })?;
            c.register_targets()
                .target_group_arn(tg_arn(ctx, spec)?)
                .targets(
                    TargetDescription::builder()
                        .id(id)
                        .port(i32::from(port))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| AwsError::call("RegisterTargets", &res, e))?;
        }
        TargetGroupOp::Deregister { name, id, port } => {
            let spec = tg_spec(ctx.desired, &name)?;
            let result = c
                .deregister_targets()
                .target_group_arn(tg_arn(ctx, spec)?)
                .targets(TargetDescription::builder().id(id).port(port).build())
                .send()
                .await
                .map_err(|e| AwsError::call("DeregisterTargets", &res, e));
            match result {
                // A terminated instance is no target any more: deregistering it is done.
                Err(e) if e.code() == Some("InvalidTarget") => {}
                other => {
                    other?;
                }
            }
        }
    }
    Ok(())
}

fn rule_spec<'a>(desired: &'a Desired, change: &Change) -> Result<&'a ListenerRuleSpec, AwsError> {
    desired
        .listener_rules()
        .find(|(r, _)| r.id == change.id)
        .map(|(_, s)| s)
        .ok_or_else(|| AwsError::invalid(change.id.to_string(), "not declared"))
}

fn rule_parts(
    ctx: &ApplyCtx<'_>,
    spec: &ListenerRuleSpec,
) -> Result<(RuleCondition, ElbAction), AwsError> {
    let tg = tg_spec(ctx.desired, &spec.forward_to)?;
    let arn = tg_arn(ctx, tg)?;
    let condition = RuleCondition::builder()
        .field("path-pattern")
        .path_pattern_config(
            PathPatternConditionConfig::builder()
                .set_values(Some(spec.path_patterns.clone()))
                .build(),
        )
        .build();
    let action = ElbAction::builder()
        .r#type(ActionTypeEnum::Forward)
        .target_group_arn(arn)
        .build();
    Ok((condition, action))
}

/// Applies one listener rule op.
pub async fn apply_rule(
    p: &AwsProvider,
    ctx: &ApplyCtx<'_>,
    change: &Change,
    op: ListenerRuleOp,
) -> Result<(), AwsError> {
    let res = change.id.to_string();
    let c = &p.elbv2;
    match op {
        ListenerRuleOp::Create { listener } => {
            let spec = rule_spec(ctx.desired, change)?;
            let (condition, action) = rule_parts(ctx, spec)?;
            c.create_rule()
                .listener_arn(&listener)
                .priority(i32::try_from(spec.priority).unwrap_or(i32::MAX))
                .conditions(condition)
                .actions(action)
                .set_tags(Some(elb_tags(&desired_tags(ctx.desired, &spec.tags))))
                .send()
                .await
                .map_err(|e| AwsError::call("CreateRule", &res, e))?;
        }
        ListenerRuleOp::Modify { rule } => {
            let spec = rule_spec(ctx.desired, change)?;
            let (condition, action) = rule_parts(ctx, spec)?;
            c.modify_rule()
                .rule_arn(&rule)
                .conditions(condition)
                .actions(action)
                .send()
                .await
                .map_err(|e| AwsError::call("ModifyRule", &res, e))?;
        }
        ListenerRuleOp::Tag { rule } => {
            let spec = rule_spec(ctx.desired, change)?;
            c.add_tags()
                .resource_arns(&rule)
                .set_tags(Some(elb_tags(&desired_tags(ctx.desired, &spec.tags))))
                .send()
                .await
                .map_err(|e| AwsError::call("AddTags", &res, e))?;
        }
        ListenerRuleOp::Delete { rule } => {
            c.delete_rule()
                .rule_arn(&rule)
                .send()
                .await
                .map_err(|e| AwsError::call("DeleteRule", &res, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_read_from_arns() {
        assert_eq!(
            name_in_arn(
                "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/durable-code-local-alb/50dc6c495c0c9188"
            ),
            "durable-code-local-alb"
        );
        assert_eq!(
            name_in_arn(
                "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/durable-code-local-faro-tg/6d0ecf831eec9f09"
            ),
            "durable-code-local-faro-tg"
        );
    }

    #[test]
    fn health_checks_compare_field_by_field() {
        let want = HealthCheckSpec {
            path: "/-/ready".into(),
            matcher: "200".into(),
            interval: 30,
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        };
        assert!(health_check_changes(&want, &want.clone()).is_empty());
        let mut have = want.clone();
        have.path = "/".into();
        let c = health_check_changes(&want, &have);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].path, "healthCheck.path");
    }
}
