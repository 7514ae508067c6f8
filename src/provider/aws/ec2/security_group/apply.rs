//! Writes: create (converging on a concurrent create), tag, replace (instances parked on the
//! VPC's default group meanwhile), and revoke or authorize one rule at a time.

use super::SecurityGroupOp;
use super::diff::{RuleKey, normalize_protocol};
use super::live::{LivePeer, LivePerm};
use crate::model::{Desired, Kind, SecurityGroupSpec, Tags};
use crate::plan::Change;
use crate::provider::aws::ec2::{ec2_tags, group_id, put_tags, remove_tags, tags_of};
use crate::provider::aws::{
    ApplyCtx, AwsError, AwsProvider, Resolved, declared, desired_tags, is_owned,
};
use aws_sdk_ec2::types::{
    Filter, IpPermission, IpRange, Ipv6Range, ResourceType, TagSpecification, UserIdGroupPair,
};

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
            let spec = declared(ctx.desired.security_groups(), Kind::SecurityGroup, &name)?;
            let net = p.network(ctx.desired).await?;
            let vpc = net.vpcs.get(&spec.vpc).ok_or_else(|| {
                AwsError::invalid(
                    &res,
                    format!("the VPC of Lookup/{} was not found", spec.vpc),
                )
            })?;
            create_group(p, ctx, &res, spec, vpc).await?;
        }
        SecurityGroupOp::Replace {
            name,
            old_id,
            vpc_id,
        } => {
            let spec = declared(ctx.desired.security_groups(), Kind::SecurityGroup, &name)?;
            replace_group(p, ctx, &res, spec, &old_id, &vpc_id).await?;
        }
        SecurityGroupOp::Untag { name, keys } => {
            let spec = declared(ctx.desired.security_groups(), Kind::SecurityGroup, &name)?;
            remove_tags(p, &res, &group_id(ctx, &spec.name)?, &keys).await?;
        }
        SecurityGroupOp::Tag { name } => {
            let spec = declared(ctx.desired.security_groups(), Kind::SecurityGroup, &name)?;
            let id = group_id(ctx, &spec.name)?;
            tracing::info!(resource = %res, id = %id, "tagging security group with ownership tags");
            put_tags(p, &res, &id, &group_tags(ctx.desired, spec)).await?;
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

/// The tags a declared group is written with (its AWS name is unique among the declared).
fn group_tags(desired: &Desired, spec: &SecurityGroupSpec) -> Tags {
    match desired.security_groups().find(|(_, s)| s.name == spec.name) {
        Some((r, s)) => desired_tags(desired, &r.id, &s.tags),
        None => spec.tags.clone(),
    }
}

async fn create_group(
    p: &AwsProvider,
    ctx: &ApplyCtx<'_>,
    res: &str,
    spec: &SecurityGroupSpec,
    vpc: &str,
) -> Result<String, AwsError> {
    let out = p
        .ec2
        .create_security_group()
        .group_name(&spec.name)
        .description(&spec.description)
        .vpc_id(vpc)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::SecurityGroup)
                .set_tags(Some(ec2_tags(&group_tags(ctx.desired, spec))))
                .build(),
        )
        .send()
        .await
        .map_err(|e| AwsError::call("CreateSecurityGroup", res, e));
    let id = match out {
        Ok(out) => out
            .group_id()
            .ok_or_else(|| AwsError::invalid(res, "CreateSecurityGroup returned no id"))?
            .to_string(),
        // A concurrent run created it first (names are unique per VPC): use that group when it
        // is this stack's; another stack's or an untagged one is not ours to take here.
        Err(e) if e.code() == Some("InvalidGroup.Duplicate") => {
            created_concurrently(p, ctx, res, spec, vpc)
                .await?
                .ok_or(e)?
        }
        Err(e) => return Err(e),
    };
    Resolved::set(&ctx.resolved.groups, &spec.name, id.clone());
    Ok(id)
}

/// The id of this stack's group of that name in the VPC, if there is one.
async fn created_concurrently(
    p: &AwsProvider,
    ctx: &ApplyCtx<'_>,
    res: &str,
    spec: &SecurityGroupSpec,
    vpc: &str,
) -> Result<Option<String>, AwsError> {
    let out = p
        .ec2
        .describe_security_groups()
        .filters(Filter::builder().name("vpc-id").values(vpc).build())
        .filters(
            Filter::builder()
                .name("group-name")
                .values(&spec.name)
                .build(),
        )
        .send()
        .await
        .map_err(|e| AwsError::call("DescribeSecurityGroups", res, e))?;
    Ok(out
        .security_groups()
        .iter()
        .find(|g| is_owned(&tags_of(g.tags()), ctx.desired))
        .and_then(|g| g.group_id())
        .map(|id| {
            tracing::info!(resource = %res, id = %id, "a concurrent run created the group: using it");
            id.to_string()
        }))
}

/// Sets an instance's security groups.
async fn set_instance_groups(
    p: &AwsProvider,
    res: &str,
    instance: &str,
    groups: Vec<String>,
) -> Result<(), AwsError> {
    p.ec2
        .modify_instance_attribute()
        .instance_id(instance)
        .set_groups(Some(groups))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| AwsError::call("ModifyInstanceAttribute", res, e))
}

/// A group's name is unique in its VPC, so the new group can only be created once the old one
/// is gone, and EC2 refuses to delete a group an instance uses: this stack's instances are
/// moved to the VPC's default group, the group is re-created (its rules follow as the step's
/// next ops), and the instances are moved back with the new group in place of the old.
async fn replace_group(
    p: &AwsProvider,
    ctx: &ApplyCtx<'_>,
    res: &str,
    spec: &SecurityGroupSpec,
    old_id: &str,
    vpc: &str,
) -> Result<(), AwsError> {
    let users: Vec<(String, Vec<String>)> = ctx
        .observed
        .instances
        .iter()
        .filter(|i| is_owned(&i.tags, ctx.desired))
        .filter(|i| crate::provider::aws::ec2::instance::is_live(i))
        .filter(|i| i.group_ids.iter().any(|g| g == old_id))
        .map(|i| (i.id.clone(), i.group_ids.clone()))
        .collect();
    if !users.is_empty() {
        let defaults = p
            .ec2
            .describe_security_groups()
            .filters(Filter::builder().name("vpc-id").values(vpc).build())
            .filters(
                Filter::builder()
                    .name("group-name")
                    .values("default")
                    .build(),
            )
            .send()
            .await
            .map_err(|e| AwsError::call("DescribeSecurityGroups", res, e))?;
        let default = defaults
            .security_groups()
            .first()
            .and_then(|g| g.group_id())
            .ok_or_else(|| AwsError::invalid(res, format!("VPC {vpc} has no default group")))?
            .to_string();
        for (instance, groups) in &users {
            let mut parked: Vec<String> = groups.iter().filter(|g| *g != old_id).cloned().collect();
            if parked.is_empty() {
                parked.push(default.clone());
            }
            set_instance_groups(p, res, instance, parked).await?;
        }
    }
    p.ec2
        .delete_security_group()
        .group_id(old_id)
        .send()
        .await
        .map_err(|e| AwsError::call("DeleteSecurityGroup", res, e))?;
    let new_id = create_group(p, ctx, res, spec, vpc).await?;
    for (instance, groups) in users {
        let back = groups
            .into_iter()
            .map(|g| if g == old_id { new_id.clone() } else { g })
            .collect();
        set_instance_groups(p, res, &instance, back).await?;
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
