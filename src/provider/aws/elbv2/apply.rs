//! Writes: create (converging on a concurrent create), modify, tag and delete target groups
//! and listener rules; register and deregister targets.

use super::diff::desired_attributes;
use super::observe::{describe_rules, describe_tags};
use super::{ListenerRuleOp, TargetGroupOp};
use crate::model::{Desired, Kind, ListenerRuleSpec, Tags, TargetGroupSpec};
use crate::plan::Change;
use crate::provider::aws::{
    ApplyCtx, AwsError, AwsProvider, Resolved, declared, desired_tags, is_owned,
};
use aws_sdk_elasticloadbalancingv2::types::{
    Action as ElbAction, ActionTypeEnum, Matcher, PathPatternConditionConfig, ProtocolEnum,
    RuleCondition, Tag, TargetDescription, TargetGroupAttribute, TargetTypeEnum,
};

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
            let spec = declared(ctx.desired.target_groups(), Kind::TargetGroup, &name)?;
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
            let spec = declared(ctx.desired.target_groups(), Kind::TargetGroup, &name)?;
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
            let spec = declared(ctx.desired.target_groups(), Kind::TargetGroup, &name)?;
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
            let spec = declared(ctx.desired.target_groups(), Kind::TargetGroup, &name)?;
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
            let spec = declared(ctx.desired.target_groups(), Kind::TargetGroup, &name)?;
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
            let spec = declared(ctx.desired.target_groups(), Kind::TargetGroup, &name)?;
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
            let spec = declared(ctx.desired.target_groups(), Kind::TargetGroup, &name)?;
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

fn rule_parts(
    ctx: &ApplyCtx<'_>,
    spec: &ListenerRuleSpec,
) -> Result<(RuleCondition, ElbAction), AwsError> {
    let tg = declared(
        ctx.desired.target_groups(),
        Kind::TargetGroup,
        &spec.forward_to,
    )?;
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
            let spec = declared(
                ctx.desired.listener_rules(),
                Kind::ListenerRule,
                &change.id.name,
            )?;
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
            let spec = declared(
                ctx.desired.listener_rules(),
                Kind::ListenerRule,
                &change.id.name,
            )?;
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
            let spec = declared(
                ctx.desired.listener_rules(),
                Kind::ListenerRule,
                &change.id.name,
            )?;
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
