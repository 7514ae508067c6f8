//! Reads: every target group (their tags, and the attributes and targets of the declared
//! ones), the looked-up load balancers with their listeners, and the rules on the listeners
//! the manifests name.

use super::live::{ElbObserved, LiveLoadBalancer, LiveRule, LiveTargetGroup};
use super::{TAGS_PER_CALL, name_in_arn};
use crate::model::{Desired, HealthCheckSpec, LookupType, Tags};
use crate::provider::aws::AwsError;
use aws_sdk_elasticloadbalancingv2::types::{Action as ElbAction, ActionTypeEnum, RuleCondition};
use futures_util::future::join_all;
use std::collections::{BTreeMap, BTreeSet, HashSet};

async fn describe_target_groups(
    client: &aws_sdk_elasticloadbalancingv2::Client,
) -> Result<Vec<LiveTargetGroup>, AwsError> {
    let found = client
        .describe_target_groups()
        .page_size(400)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(|e| AwsError::call("DescribeTargetGroups", "target groups", e))?;
    let mut out = Vec::new();
    for tg in &found {
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
                timeout: u32::try_from(tg.health_check_timeout_seconds().unwrap_or(0)).unwrap_or(0),
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
    Ok(out)
}

pub(super) async fn describe_tags(
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
    let found = client
        .describe_listeners()
        .load_balancer_arn(&arn)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(|e| AwsError::call("DescribeListeners", format!("load balancer {name}"), e))?;
    let mut listeners = BTreeMap::new();
    for l in &found {
        if let (Some(port), Some(larn)) = (l.port(), l.listener_arn())
            && let Ok(port) = u16::try_from(port)
        {
            listeners.insert(port, larn.to_string());
        }
    }
    Ok(Some(LiveLoadBalancer { arn, listeners }))
}

pub(super) async fn describe_rules(
    client: &aws_sdk_elasticloadbalancingv2::Client,
    listener: &str,
) -> Result<Vec<LiveRule>, AwsError> {
    let found = client
        .describe_rules()
        .listener_arn(listener)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(|e| AwsError::call("DescribeRules", format!("listener {listener}"), e))?;
    let mut out = Vec::new();
    for r in &found {
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
    Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_elasticloadbalancingv2::types::PathPatternConditionConfig;

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
