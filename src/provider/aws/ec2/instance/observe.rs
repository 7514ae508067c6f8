//! Reads: the stack's instances (and, only while a declared one has none, the candidates
//! carrying its Name or its groups), their root volumes, and the subnets a Lookup selects.

use super::LIVE_STATES;
use super::diff::{claims, is_live};
use super::live::{InstancesObserved, LiveInstance, LiveVolume};
use crate::model::ownership::{ENV_TAG, STACK_TAG};
use crate::model::{Desired, Ensure};
use crate::provider::aws::ec2::{lookup::tag_filters, tags_of};
use crate::provider::aws::{AwsError, group_name_of, lookup};
use aws_sdk_ec2::types::Filter;
use std::collections::{BTreeMap, BTreeSet};

/// The instances this stack owns (any state, so a terminated one explains a re-create), plus,
/// only when a declared instance has no owned one, the instances carrying its Name tag (the
/// adoption candidates); the root volumes of the live ones; and the subnets each subnet Lookup
/// selects. Filtering server-side keeps a steady state at three calls however many instances
/// the region runs.
pub async fn observe_instances(
    client: &aws_sdk_ec2::Client,
    desired: &Desired,
) -> Result<InstancesObserved, AwsError> {
    let instances = async {
        // Both halves of the stack's identity, server-side: another environment's instances
        // (same stack name) are never read as ours. One written before the environment tag
        // existed is missing from this and is found by its Name below.
        let owned = vec![
            Filter::builder()
                .name(format!("tag:{STACK_TAG}"))
                .values(&desired.stack_name)
                .build(),
            Filter::builder()
                .name(format!("tag:{ENV_TAG}"))
                .values(&desired.environment)
                .build(),
        ];
        let mut found = describe_instances(client, owned).await?;
        let missing = desired
            .instances()
            .filter(|(r, _)| r.ensure == Ensure::Present)
            .filter(|(r, s)| {
                !found
                    .iter()
                    .any(|i| claims(i, &r.id.name, &s.name) && is_live(i))
            })
            .map(|(r, s)| (r.id.name.clone(), s))
            .collect::<Vec<_>>();
        if !missing.is_empty() {
            let by_name = Filter::builder()
                .name("tag:Name")
                .set_values(Some(missing.iter().map(|(_, s)| s.name.clone()).collect()))
                .build();
            // One that lost every tag is found by its security groups instead: it must be
            // adopted, never launched again beside it. Only while one is missing: a steady
            // plan makes neither call.
            let groups: BTreeSet<String> = missing
                .iter()
                .flat_map(|(_, s)| s.security_groups.iter())
                .map(|m| group_name_of(desired, m).unwrap_or_else(|| m.clone()))
                .collect();
            let by_group = Filter::builder()
                .name("instance.group-name")
                .set_values(Some(groups.into_iter().collect()))
                .build();
            for filter in [by_name, by_group] {
                for i in describe_instances(client, vec![filter]).await? {
                    if !found.iter().any(|f| f.id == i.id) {
                        found.push(i);
                    }
                }
            }
        }
        read_root_volumes(client, &mut found).await?;
        Ok::<_, AwsError>(found)
    };
    let subnets = async {
        let mut out = BTreeMap::new();
        let wanted: BTreeSet<&str> = desired
            .instances()
            .filter(|(r, _)| r.ensure == Ensure::Present)
            .map(|(_, s)| s.subnet.as_str())
            .collect();
        for name in wanted {
            let Some(l) = lookup(desired, name) else {
                continue;
            };
            let resp = client
                .describe_subnets()
                .set_filters(Some(tag_filters(&l.tags)))
                .send()
                .await
                .map_err(|e| AwsError::call("DescribeSubnets", format!("Lookup/{name}"), e))?;
            let mut ids: Vec<String> = resp
                .subnets()
                .iter()
                .filter_map(|s| s.subnet_id().map(str::to_string))
                .collect();
            ids.sort();
            out.insert(name.to_string(), ids);
        }
        Ok::<_, AwsError>(out)
    };
    let (instances, subnets) = tokio::join!(instances, subnets);
    Ok(InstancesObserved {
        instances: instances?,
        subnets: subnets?,
    })
}

/// Fills the root volume of every live instance with one DescribeVolumes call.
async fn read_root_volumes(
    client: &aws_sdk_ec2::Client,
    instances: &mut [LiveInstance],
) -> Result<(), AwsError> {
    let ids: Vec<String> = instances
        .iter()
        .filter(|i| LIVE_STATES.contains(&i.state.as_str()))
        .filter_map(|i| i.root_volume.as_ref().map(|v| v.id.clone()))
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    let filter = Filter::builder()
        .name("volume-id")
        .set_values(Some(ids))
        .build();
    let found = client
        .describe_volumes()
        .filters(filter)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(|e| AwsError::call("DescribeVolumes", "root volumes", e))?;
    let mut volumes: BTreeMap<String, LiveVolume> = BTreeMap::new();
    for v in &found {
        let Some(id) = v.volume_id() else { continue };
        volumes.insert(
            id.to_string(),
            LiveVolume {
                id: id.to_string(),
                size_gib: v.size().unwrap_or(0),
                volume_type: v
                    .volume_type()
                    .map(|t| t.as_str().to_string())
                    .unwrap_or_default(),
                encrypted: v.encrypted().unwrap_or(false),
                device: String::new(),
                delete_on_termination: true,
            },
        );
    }
    for i in instances.iter_mut() {
        // A volume id DescribeVolumes did not return is no volume to compare.
        // The attachment settings come from the instance, the rest from the volume.
        i.root_volume = i.root_volume.as_ref().and_then(|a| {
            volumes.get(&a.id).map(|v| LiveVolume {
                device: a.device.clone(),
                delete_on_termination: a.delete_on_termination,
                ..v.clone()
            })
        });
    }
    Ok(())
}

/// The instances matching the filters, through the SDK's paginator; the root volume holds
/// only its id (see [`read_root_volumes`]).
pub(super) async fn describe_instances(
    client: &aws_sdk_ec2::Client,
    filters: Vec<Filter>,
) -> Result<Vec<LiveInstance>, AwsError> {
    let reservations = client
        .describe_instances()
        .set_filters(Some(filters))
        .max_results(1000)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(|e| AwsError::call("DescribeInstances", "instances", e))?;
    let mut out = Vec::new();
    for i in reservations.iter().flat_map(|r| r.instances()) {
        let Some(id) = i.instance_id() else { continue };
        let meta = i.metadata_options();
        let root = i.root_device_name().and_then(|dev| {
            let ebs = i
                .block_device_mappings()
                .iter()
                .find(|m| m.device_name() == Some(dev))
                .and_then(|m| m.ebs())?;
            Some(LiveVolume {
                id: ebs.volume_id()?.to_string(),
                size_gib: 0,
                volume_type: String::new(),
                encrypted: false,
                device: dev.to_string(),
                delete_on_termination: ebs.delete_on_termination().unwrap_or(true),
            })
        });
        out.push(LiveInstance {
            id: id.to_string(),
            state: i
                .state()
                .and_then(|s| s.name())
                .map(|n| n.as_str().to_string())
                .unwrap_or_default(),
            instance_type: i
                .instance_type()
                .map(|t| t.as_str().to_string())
                .unwrap_or_default(),
            image_id: i.image_id().unwrap_or("").to_string(),
            subnet_id: i.subnet_id().unwrap_or("").to_string(),
            group_ids: i
                .security_groups()
                .iter()
                .filter_map(|g| g.group_id().map(str::to_string))
                .collect(),
            profile_arn: i
                .iam_instance_profile()
                .and_then(|p| p.arn())
                .map(str::to_string),
            profile_association: i
                .iam_instance_profile()
                .and_then(|p| p.id())
                .map(str::to_string),
            http_tokens: meta
                .and_then(|m| m.http_tokens())
                .map(|t| t.as_str().to_string())
                .unwrap_or_default(),
            hop_limit: meta
                .and_then(|m| m.http_put_response_hop_limit())
                .unwrap_or(1),
            metadata_tags: meta
                .and_then(|m| m.instance_metadata_tags())
                .map(|t| t.as_str().to_string())
                .unwrap_or_else(|| "disabled".into()),
            http_endpoint: meta
                .and_then(|m| m.http_endpoint())
                .map(|t| t.as_str().to_string())
                .unwrap_or_else(|| "enabled".into()),
            root_volume: root,
            tags: tags_of(i.tags()),
            // Zero-padded epoch time sorts as text; RFC 3339 with a variable fraction
            // would not ("…21Z" after "…21.5Z").
            launched: i
                .launch_time()
                .map(|t| format!("{:012}.{:09}", t.secs(), t.subsec_nanos()))
                .unwrap_or_default(),
        });
    }
    Ok(out)
}
