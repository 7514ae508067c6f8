//! Reads: every security group of the region, paginated, and its conversion into
//! [`LiveGroup`]s by name.

use super::diff::{normalize_description, normalize_protocol};
use super::live::{LiveGroup, LivePeer, LivePerm};
use crate::model::ownership::STACK_TAG;
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

/// Observed groups by name. With one name in several VPCs, this stack's group wins, then an
/// untagged one (an adoption candidate), then another stack's (reported, never touched).
pub fn live_groups(
    groups: &[aws_sdk_ec2::types::SecurityGroup],
    stack: &str,
) -> BTreeMap<String, LiveGroup> {
    let rank = |g: &LiveGroup| match g.tags.get(STACK_TAG) {
        Some(s) if s == stack => 0,
        None => 1,
        Some(_) => 2,
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

    #[test]
    fn another_stacks_group_of_the_same_name_never_wins_over_ours_or_an_untagged_one() {
        let group = |id: &str, stack: Option<&str>| {
            let mut b = aws_sdk_ec2::types::SecurityGroup::builder()
                .group_id(id)
                .group_name("obs-sg");
            if let Some(s) = stack {
                b = b.tags(
                    aws_sdk_ec2::types::Tag::builder()
                        .key(STACK_TAG)
                        .value(s)
                        .build(),
                );
            }
            b.build()
        };
        let theirs = group("sg-theirs", Some("other"));
        let untagged = group("sg-untagged", None);
        let ours = group("sg-ours", Some("obs"));
        let picked = live_groups(&[theirs.clone(), untagged.clone()], "obs");
        assert_eq!(picked["obs-sg"].id, "sg-untagged");
        let picked = live_groups(&[theirs, untagged, ours], "obs");
        assert_eq!(picked["obs-sg"].id, "sg-ours");
    }
}
