//! EC2, one module per kind: security groups and their rules ([`security_group`]), the
//! instance ([`instance`]), and the read-only lookups of the VPC and subnets ([`lookup`]). Each
//! kind's module holds its observed type, its pure diff with unit tests, and its writes; this
//! file holds only what they share (tags, ownership, ids learnt during an apply).

mod instance;
mod lookup;
mod security_group;

use super::{ApplyCtx, AwsError, Observed, Resolved, is_owned};
use crate::model::{Desired, Tags};
use aws_sdk_ec2::types::Tag;
use instance::LIVE_STATES;
use std::collections::BTreeMap;

pub use instance::{InstanceOp, LiveInstance, apply_instance, diff_instances, observe_instances};
pub use lookup::lookup_network;
pub use security_group::{
    LiveGroup, SecurityGroupOp, apply_group, describe_groups, diff_groups, live_groups,
};

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

fn ec2_tags(tags: &Tags) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

fn group_id(ctx: &ApplyCtx<'_>, group_name: &str) -> Result<String, AwsError> {
    Resolved::get(&ctx.resolved.groups, group_name)
        .ok_or_else(|| AwsError::invalid(format!("security group {group_name}"), "not found"))
}
