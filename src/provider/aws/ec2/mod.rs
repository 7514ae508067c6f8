//! EC2, one module per kind: security groups and their rules ([`security_group`]), the
//! instance ([`instance`]), and the read-only lookups of the VPC and subnets ([`lookup`]). Each
//! kind is a folder, as `host/` is: `live` (its observed type), `diff` (pure, table-tested),
//! `observe` (SDK reads) and `apply` (SDK writes); this file holds only what they share (tags,
//! ownership, ids learnt during an apply).

mod instance;
mod lookup;
mod security_group;

use super::{ApplyCtx, AwsError, AwsProvider, Observed, Resolved, is_owned};
use crate::model::{Desired, Tags};
use aws_sdk_ec2::types::Tag;
use std::collections::BTreeMap;

pub use instance::{
    InstanceOp, InstancesObserved, LiveInstance, apply_instance, diff_instances, observe_instances,
};
pub use lookup::lookup_network;
pub use security_group::{
    LiveGroup, SecurityGroupOp, apply_group, describe_groups, diff_groups, live_groups,
};

/// Refuses to touch what another stack owns: a declared security group or instance whose live
/// object is tagged for another stack is an error naming that stack, never adopted or changed.
pub fn check_ownership(
    desired: &Desired,
    groups: &BTreeMap<String, LiveGroup>,
    instances: &[LiveInstance],
) -> Result<(), AwsError> {
    security_group::check_ownership(desired, groups)?;
    instance::check_ownership(desired, instances)
}

fn tags_of(tags: &[Tag]) -> Tags {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
        .collect()
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

/// Ids known before an apply starts.
pub fn seed_resolved(desired: &Desired, observed: &Observed) -> Resolved {
    let resolved = Resolved::default();
    for g in observed.groups.values() {
        Resolved::set(&resolved.groups, &g.name, g.id.clone());
    }
    for (r, spec) in desired.instances() {
        // The same choice as the diff's: the instance the plan keeps is the one registered.
        if let Some(i) = instance::chosen(desired, observed, &r.id.name, spec) {
            Resolved::set(&resolved.instances, &r.id.name, i.id.clone());
        }
    }
    for tg in &observed.elb.target_groups {
        Resolved::set(&resolved.target_groups, &tg.name, tg.arn.clone());
    }
    resolved
}

fn ec2_tags(tags: &Tags) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

/// Puts tags on an instance or a group (CreateTags overwrites the keys it names): one write
/// for both kinds, so adoption and tag drift are repaired alike.
async fn put_tags(p: &AwsProvider, res: &str, id: &str, tags: &Tags) -> Result<(), AwsError> {
    p.ec2
        .create_tags()
        .resources(id)
        .set_tags(Some(ec2_tags(tags)))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| AwsError::call("CreateTags", res, e))
}

/// Removes tags nobody declared from an instance or a group.
async fn remove_tags(
    p: &AwsProvider,
    res: &str,
    id: &str,
    keys: &[String],
) -> Result<(), AwsError> {
    p.ec2
        .delete_tags()
        .resources(id)
        .set_tags(Some(
            keys.iter().map(|k| Tag::builder().key(k).build()).collect(),
        ))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| AwsError::call("DeleteTags", res, e))
}

fn group_id(ctx: &ApplyCtx<'_>, group_name: &str) -> Result<String, AwsError> {
    Resolved::get(&ctx.resolved.groups, group_name)
        .ok_or_else(|| AwsError::invalid(format!("security group {group_name}"), "not found"))
}
