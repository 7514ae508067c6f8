//! ELBv2: the target group (health check, deregistration delay, targets) and the listener
//! rules on the looked-up ALB. The ALB and its listeners are lookups: read, never written.

use super::{
    ApplyCtx, AwsError, AwsProvider, Observed, Op, Resolved, check_owner, desired_tags, is_owned,
    tag_drift,
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
/// What the target group's attributes must be besides the deregistration delay: AWS's
/// defaults for an instance target group behind an ALB. A person changing one by hand is
/// drift. A key the endpoint does not return is not compared (older APIs, moto).
const DEFAULT_ATTRIBUTES: &[(&str, &str)] = &[
    ("stickiness.enabled", "false"),
    ("stickiness.type", "lb_cookie"),
    ("stickiness.lb_cookie.duration_seconds", "86400"),
    ("stickiness.app_cookie.cookie_name", ""),
    ("stickiness.app_cookie.duration_seconds", "86400"),
    ("load_balancing.algorithm.type", "round_robin"),
    ("load_balancing.algorithm.anomaly_mitigation", "off"),
    (
        "load_balancing.cross_zone.enabled",
        "use_load_balancer_configuration",
    ),
    ("slow_start.duration_seconds", "0"),
    ("waf.fail_open.enabled", "false"),
    (
        "target_group_health.dns_failover.minimum_healthy_targets.count",
        "1",
    ),
    (
        "target_group_health.dns_failover.minimum_healthy_targets.percentage",
        "off",
    ),
    (
        "target_group_health.unhealthy_state_routing.minimum_healthy_targets.count",
        "1",
    ),
    (
        "target_group_health.unhealthy_state_routing.minimum_healthy_targets.percentage",
        "off",
    ),
];
/// Fixed when a target group is created; anything else means it was re-created by hand.
const TARGET_TYPE: &str = "instance";
/// See [`TARGET_TYPE`].
const PROTOCOL_VERSION: &str = "HTTP1";
/// See [`TARGET_TYPE`].
const IP_ADDRESS_TYPE: &str = "ipv4";

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
    /// Set attributes to their desired values.
    Attributes {
        /// TargetGroup manifest name.
        name: String,
        /// The attribute keys to set.
        keys: Vec<String>,
    },
    /// Remove tags nobody declared.
    Untag {
        /// TargetGroup manifest name.
        name: String,
        /// Tag keys.
        keys: Vec<String>,
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
    /// Remove tags nobody declared.
    Untag {
        /// Rule ARN.
        rule: String,
        /// Tag keys.
        keys: Vec<String>,
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
                vpc_id: tg.vpc_id().unwrap_or("").to_string(),
                target_type: tg
                    .target_type()
                    .map(|t| t.as_str().to_string())
                    .unwrap_or_default(),
                protocol_version: tg.protocol_version().unwrap_or("").to_string(),
                ip_address_type: tg
                    .ip_address_type()
                    .map(|t| t.as_str().to_string())
                    .unwrap_or_default(),
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
                    timeout: u32::try_from(tg.health_check_timeout_seconds().unwrap_or(0))
                        .unwrap_or(0),
                    port: tg.health_check_port().unwrap_or("").to_string(),
                    protocol: tg
                        .health_check_protocol()
                        .map(|p| p.as_str().to_string())
                        .unwrap_or_default(),
                    enabled: tg.health_check_enabled().unwrap_or(true),
                },
                load_balancers: tg.load_balancer_arns().to_vec(),
                tags: Tags::new(),
                attributes: BTreeMap::new(),
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
            let (paths, extra_conditions) = read_conditions(r.conditions());
            let (forward, extra_actions) = read_actions(r.actions());
            out.push(LiveRule {
                arn: r.rule_arn().unwrap_or("").to_string(),
                priority: r.priority().unwrap_or("").to_string(),
                paths,
                extra_conditions,
                forward,
                extra_actions,
                tags: Tags::new(),
            });
        }
        marker = resp.next_marker().map(str::to_string);
        if marker.is_none() {
            return Ok(out);
        }
    }
}

/// The first path-pattern condition's patterns (sorted), and every other condition rendered.
fn read_conditions(conditions: &[RuleCondition]) -> (Vec<String>, Vec<String>) {
    let mut paths: Option<Vec<String>> = None;
    let mut extra = Vec::new();
    for c in conditions {
        if c.field() == Some("path-pattern") && paths.is_none() {
            let mut v: Vec<String> = c
                .path_pattern_config()
                .map(|p| p.values().to_vec())
                .unwrap_or_default();
            if v.is_empty() {
                v = c.values().to_vec();
            }
            v.sort();
            v.dedup();
            paths = Some(v);
            continue;
        }
        extra.push(render_condition(c));
    }
    extra.sort();
    (paths.unwrap_or_default(), extra)
}

/// A condition as `field=values` (header conditions name their header).
fn render_condition(c: &RuleCondition) -> String {
    let mut values: Vec<String> = c.values().to_vec();
    let mut field = c.field().unwrap_or("?").to_string();
    if let Some(p) = c.path_pattern_config() {
        values.extend(p.values().iter().cloned());
    }
    if let Some(h) = c.host_header_config() {
        values.extend(h.values().iter().cloned());
    }
    if let Some(h) = c.http_header_config() {
        field = format!("{field}[{}]", h.http_header_name().unwrap_or(""));
        values.extend(h.values().iter().cloned());
    }
    if let Some(m) = c.http_request_method_config() {
        values.extend(m.values().iter().cloned());
    }
    if let Some(q) = c.query_string_config() {
        values.extend(
            q.values()
                .iter()
                .map(|kv| format!("{}={}", kv.key().unwrap_or(""), kv.value().unwrap_or(""))),
        );
    }
    if let Some(ip) = c.source_ip_config() {
        values.extend(ip.values().iter().cloned());
    }
    values.sort();
    values.dedup();
    format!("{field}={}", values.join(","))
}

/// The first forward action's target group names (sorted), and every other action or
/// forward setting rendered.
fn read_actions(actions: &[ElbAction]) -> (Vec<String>, Vec<String>) {
    let mut forward: Option<Vec<String>> = None;
    let mut extra = Vec::new();
    for a in actions {
        let kind = a.r#type().map(|t| t.as_str()).unwrap_or("?");
        if a.r#type() == Some(&ActionTypeEnum::Forward) && forward.is_none() {
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
                if let Some(st) = fc.target_group_stickiness_config()
                    && st.enabled() == Some(true)
                {
                    extra.push(format!(
                        "forward stickiness {}s",
                        st.duration_seconds().unwrap_or(0)
                    ));
                }
            }
            let mut names: Vec<String> = v.iter().map(|arn| name_in_arn(arn).to_string()).collect();
            names.sort();
            names.dedup();
            forward = Some(names);
            continue;
        }
        let detail = if let Some(f) = a.fixed_response_config() {
            format!(" {}", f.status_code().unwrap_or(""))
        } else if let Some(r) = a.redirect_config() {
            format!(
                " {} {}{}",
                r.status_code().map(|c| c.as_str()).unwrap_or(""),
                r.host().unwrap_or(""),
                r.path().unwrap_or("")
            )
        } else if let Some(fc) = a.forward_config() {
            let tgs: Vec<&str> = fc
                .target_groups()
                .iter()
                .filter_map(|t| t.target_group_arn().map(name_in_arn))
                .collect();
            format!(" {}", tgs.join(","))
        } else if let Some(arn) = a.target_group_arn() {
            format!(" {}", name_in_arn(arn))
        } else {
            String::new()
        };
        extra.push(format!("{kind}{detail}"));
    }
    extra.sort();
    (forward.unwrap_or_default(), extra)
}

async fn tg_details(
    client: &aws_sdk_elasticloadbalancingv2::Client,
    tg: &LiveTargetGroup,
) -> Result<(BTreeMap<String, String>, BTreeSet<(String, i32)>), AwsError> {
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
    let attributes = attrs
        .attributes()
        .iter()
        .filter_map(|a| Some((a.key()?.to_string(), a.value().unwrap_or("").to_string())))
        .collect();
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
    Ok((attributes, targets))
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
    let mut details: BTreeMap<String, _> = details.into_iter().collect();
    for tg in &mut out.target_groups {
        if let Some(d) = details.remove(&tg.arn) {
            let (attributes, targets) = d?;
            tg.attributes = attributes;
            tg.targets = targets;
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
fn desired_attributes(spec: &TargetGroupSpec) -> BTreeMap<String, String> {
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
    let (tf, extra) = tag_drift(want_tags, tags);
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
    let (tf, extra) = tag_drift(want_tags, tags);
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

// ---------------------------------------------------------------------------------------------
// Writes

fn tg_spec<'a>(desired: &'a Desired, name: &str) -> Result<&'a TargetGroupSpec, AwsError> {
    desired
        .target_groups()
        .find(|(r, _)| r.id.name == name)
        .map(|(_, s)| s)
        .ok_or_else(|| AwsError::invalid(format!("TargetGroup/{name}"), "not declared"))
}

fn tg_id(name: &str) -> crate::model::ResourceId {
    crate::model::ResourceId::new(crate::model::Kind::TargetGroup, name)
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
                .health_check_timeout_seconds(i32::try_from(hc.timeout).unwrap_or(5))
                .health_check_port(&hc.port)
                .health_check_protocol(ProtocolEnum::from(
                    hc.protocol.to_ascii_uppercase().as_str(),
                ))
                .health_check_enabled(hc.enabled)
                .matcher(Matcher::builder().http_code(&hc.matcher).build())
                .set_tags(Some(elb_tags(&desired_tags(
                    ctx.desired,
                    &tg_id(&name),
                    &spec.tags,
                ))))
                .send()
                .await
                .map_err(|e| AwsError::call("CreateTargetGroup", &res, e));
            let arn = match out {
                Ok(out) => out
                    .target_groups()
                    .first()
                    .and_then(|t| t.target_group_arn())
                    .map(str::to_string)
                    .ok_or_else(|| AwsError::invalid(&res, "CreateTargetGroup returned no ARN"))?,
                // A concurrent apply created it first: converge on that one when it is ours.
                Err(e) if e.code() == Some("DuplicateTargetGroupName") => {
                    owned_target_group(c, ctx.desired, &spec.name)
                        .await?
                        .ok_or(e)?
                }
                Err(e) => return Err(e),
            };
            Resolved::set(&ctx.resolved.target_groups, &spec.name, arn);
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
                .health_check_timeout_seconds(i32::try_from(hc.timeout).unwrap_or(5))
                .health_check_port(&hc.port)
                .health_check_protocol(ProtocolEnum::from(
                    hc.protocol.to_ascii_uppercase().as_str(),
                ))
                .health_check_enabled(hc.enabled)
                .matcher(Matcher::builder().http_code(&hc.matcher).build())
                .send()
                .await
                .map_err(|e| AwsError::call("ModifyTargetGroup", &res, e))?;
        }
        TargetGroupOp::Attributes { name, keys } => {
            let spec = tg_spec(ctx.desired, &name)?;
            let want = desired_attributes(spec);
            let attributes = keys
                .iter()
                .filter_map(|k| {
                    let v = want.get(k)?;
                    Some(TargetGroupAttribute::builder().key(k).value(v).build())
                })
                .collect();
            c.modify_target_group_attributes()
                .target_group_arn(tg_arn(ctx, spec)?)
                .set_attributes(Some(attributes))
                .send()
                .await
                .map_err(|e| AwsError::call("ModifyTargetGroupAttributes", &res, e))?;
        }
        TargetGroupOp::Tag { name } => {
            let spec = tg_spec(ctx.desired, &name)?;
            tracing::info!(resource = %res, "tagging target group with ownership tags");
            c.add_tags()
                .resource_arns(tg_arn(ctx, spec)?)
                .set_tags(Some(elb_tags(&desired_tags(
                    ctx.desired,
                    &tg_id(&name),
                    &spec.tags,
                ))))
                .send()
                .await
                .map_err(|e| AwsError::call("AddTags", &res, e))?;
        }
        TargetGroupOp::Untag { name, keys } => {
            let spec = tg_spec(ctx.desired, &name)?;
            c.remove_tags()
                .resource_arns(tg_arn(ctx, spec)?)
                .set_tag_keys(Some(keys))
                .send()
                .await
                .map_err(|e| AwsError::call("RemoveTags", &res, e))?;
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

/// The ARN of the target group of that name when it carries this stack's tags.
async fn owned_target_group(
    c: &aws_sdk_elasticloadbalancingv2::Client,
    desired: &Desired,
    name: &str,
) -> Result<Option<String>, AwsError> {
    let out = c
        .describe_target_groups()
        .names(name)
        .send()
        .await
        .map_err(|e| AwsError::call("DescribeTargetGroups", format!("target group {name}"), e))?;
    let Some(arn) = out
        .target_groups()
        .first()
        .and_then(|t| t.target_group_arn())
        .map(str::to_string)
    else {
        return Ok(None);
    };
    let tags = describe_tags(c, vec![arn.clone()]).await?;
    Ok(tags.get(&arn).filter(|t| is_owned(t, desired)).map(|_| arn))
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
            let created = c
                .create_rule()
                .listener_arn(&listener)
                .priority(i32::try_from(spec.priority).unwrap_or(i32::MAX))
                .conditions(condition)
                .actions(action)
                .set_tags(Some(elb_tags(&desired_tags(
                    ctx.desired,
                    &change.id,
                    &spec.tags,
                ))))
                .send()
                .await
                .map_err(|e| AwsError::call("CreateRule", &res, e));
            match created {
                Ok(_) => {}
                // A concurrent apply created it first: ours at our priority is converged (the
                // next pass compares its content); anyone else's is an error.
                Err(e) if e.code() == Some("PriorityInUse") => {
                    let rules = describe_rules(c, &listener).await?;
                    let prio = spec.priority.to_string();
                    let Some(x) = rules.into_iter().find(|x| x.priority == prio) else {
                        return Err(e);
                    };
                    let tags = describe_tags(c, vec![x.arn.clone()]).await?;
                    if !tags.get(&x.arn).is_some_and(|t| is_owned(t, ctx.desired)) {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
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
                .set_tags(Some(elb_tags(&desired_tags(
                    ctx.desired,
                    &change.id,
                    &spec.tags,
                ))))
                .send()
                .await
                .map_err(|e| AwsError::call("AddTags", &res, e))?;
        }
        ListenerRuleOp::Untag { rule, keys } => {
            c.remove_tags()
                .resource_arns(&rule)
                .set_tag_keys(Some(keys))
                .send()
                .await
                .map_err(|e| AwsError::call("RemoveTags", &res, e))?;
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

    #[test]
    fn an_extra_condition_is_read_beside_the_path_pattern() {
        let path = RuleCondition::builder()
            .field("path-pattern")
            .path_pattern_config(
                PathPatternConditionConfig::builder()
                    .values("/collect")
                    .build(),
            )
            .build();
        let host = RuleCondition::builder()
            .field("host-header")
            .host_header_config(
                aws_sdk_elasticloadbalancingv2::types::HostHeaderConditionConfig::builder()
                    .values("a.example")
                    .build(),
            )
            .build();
        let (paths, extra) = read_conditions(&[path, host]);
        assert_eq!(paths, vec!["/collect".to_string()]);
        assert_eq!(extra, vec!["host-header=a.example".to_string()]);
    }
}
