//! Reads: every security group of the region, paginated, and its conversion into
//! [`LiveGroup`]s by name.

use super::diff::{normalize_description, normalize_protocol};
use super::live::{LiveGroup, LivePeer, LivePerm};
use crate::model::ownership::{ENV_TAG, STACK_TAG};
use crate::provider::aws::AwsError;
use crate::provider::aws::ec2::tags_of;
use aws_sdk_ec2::types::IpPermission;
use std::collections::BTreeMap;

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

/// Observed groups by name. With one name in several VPCs, this stack's group in this
/// environment wins, then this stack's from before the environment tag (adopted by adding
/// it), then an untagged one (an adoption candidate), then another stack's or another
/// environment's (reported, never touched).
pub fn live_groups(
    groups: &[aws_sdk_ec2::types::SecurityGroup],
    stack: &str,
    env: &str,
) -> BTreeMap<String, LiveGroup> {
    let rank = |g: &LiveGroup| match (g.tags.get(STACK_TAG), g.tags.get(ENV_TAG)) {
        (Some(s), Some(e)) if s == stack && e == env => 0,
        (Some(s), None) if s == stack => 1,
        (None, _) => 2,
        (Some(_), _) => 3,
    };
    let mut out: BTreeMap<String, LiveGroup> = BTreeMap::new();
    for g in groups {
        let (Some(id), Some(name)) = (g.group_id(), g.group_name()) else {
            continue;
        };
        let live = LiveGroup {
            id: id.to_string(),
            name: name.to_string(),
            vpc_id: g.vpc_id().unwrap_or("").to_string(),
            description: normalize_description(g.description().unwrap_or("")),
            tags: tags_of(g.tags()),
            ingress: perms_of(g.ip_permissions()),
            egress: perms_of(g.ip_permissions_egress()),
        };
        if out
            .get(name)
            .is_none_or(|existing| rank(&live) < rank(existing))
        {
            out.insert(name.to_string(), live);
        }
    }
    out
}

/// Every security group of the region, through the SDK's paginator (one call per 1000
/// groups).
pub async fn describe_groups(
    client: &aws_sdk_ec2::Client,
) -> Result<Vec<aws_sdk_ec2::types::SecurityGroup>, AwsError> {
    client
        .describe_security_groups()
        .max_results(1000)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(|e| AwsError::call("DescribeSecurityGroups", "security groups", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(id: &str, tags: &[(&str, &str)]) -> aws_sdk_ec2::types::SecurityGroup {
        let mut b = aws_sdk_ec2::types::SecurityGroup::builder()
            .group_id(id)
            .group_name("obs-sg");
        for (k, v) in tags {
            b = b.tags(aws_sdk_ec2::types::Tag::builder().key(*k).value(*v).build());
        }
        b.build()
    }

    #[test]
    fn another_stacks_group_of_the_same_name_never_wins_over_ours_or_an_untagged_one() {
        let theirs = group("sg-theirs", &[(STACK_TAG, "other")]);
        let untagged = group("sg-untagged", &[]);
        let ours = group("sg-ours", &[(STACK_TAG, "obs"), (ENV_TAG, "prod")]);
        let picked = live_groups(&[theirs.clone(), untagged.clone()], "obs", "prod");
        assert_eq!(picked["obs-sg"].id, "sg-untagged");
        let picked = live_groups(&[theirs, untagged, ours], "obs", "prod");
        assert_eq!(picked["obs-sg"].id, "sg-ours");
    }

    #[test]
    fn another_environments_group_ranks_below_an_untagged_one_and_a_legacy_one_above_it() {
        let staging = group("sg-staging", &[(STACK_TAG, "obs"), (ENV_TAG, "staging")]);
        let untagged = group("sg-untagged", &[]);
        let legacy = group("sg-legacy", &[(STACK_TAG, "obs")]);
        let ours = group("sg-ours", &[(STACK_TAG, "obs"), (ENV_TAG, "prod")]);
        let picked = live_groups(&[staging.clone(), untagged.clone()], "obs", "prod");
        assert_eq!(picked["obs-sg"].id, "sg-untagged");
        let picked = live_groups(
            &[staging.clone(), untagged.clone(), legacy.clone()],
            "obs",
            "prod",
        );
        assert_eq!(picked["obs-sg"].id, "sg-legacy");
        let picked = live_groups(&[legacy, staging, untagged, ours], "obs", "prod");
        assert_eq!(picked["obs-sg"].id, "sg-ours");
    }
}
