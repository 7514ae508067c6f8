//! Writes: launch (settling a concurrent launch), terminate, start, resize by stop → modify
//! → start, and the in-place repairs of tags, metadata options, profile, groups and volume.

use super::diff::{claims, instance_tags, keeper, user_data_hash};
use super::live::LiveInstance;
use super::observe::describe_instances;
use super::{InstanceOp, LIVE_STATES, TAG_USER_DATA};
use crate::model::ownership::{ENV_TAG, STACK_TAG};
use crate::model::{Desired, HttpTokens, InstanceSpec, Kind};
use crate::plan::Change;
use crate::provider::aws::ec2::{ec2_tags, group_id, put_tags, remove_tags};
use crate::provider::aws::{
    ApplyCtx, AwsError, AwsProvider, Resolved, declared, desired_tags, group_name_of, is_owned,
    lookup,
};
use aws_sdk_ec2::types::{
    AttributeValue, BlockDeviceMapping, EbsBlockDevice, Filter, HttpTokensState,
    IamInstanceProfileSpecification, InstanceMetadataEndpointState, InstanceMetadataOptionsRequest,
    InstanceMetadataTagsState, ResourceType, TagSpecification, VolumeType,
};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// How often a stopping instance is polled before its type is changed: EC2 stops an instance
/// in tens of seconds, so a few seconds between reads keeps the call count low.
const STOP_POLL: Duration = Duration::from_secs(2);

/// How long a stop may take before the resize gives up (EC2's own stop waiter waits as long).
const STOP_TIMEOUT: Duration = Duration::from_secs(600);

fn metadata_request(spec: &InstanceSpec) -> InstanceMetadataOptionsRequest {
    let m = &spec.metadata_options;
    InstanceMetadataOptionsRequest::builder()
        .http_tokens(match m.http_tokens {
            HttpTokens::Required => HttpTokensState::Required,
            HttpTokens::Optional => HttpTokensState::Optional,
        })
        .http_put_response_hop_limit(i32::from(m.http_put_response_hop_limit))
        .http_endpoint(if m.http_endpoint {
            InstanceMetadataEndpointState::Enabled
        } else {
            InstanceMetadataEndpointState::Disabled
        })
        .instance_metadata_tags(if m.instance_metadata_tags {
            InstanceMetadataTagsState::Enabled
        } else {
            InstanceMetadataTagsState::Disabled
        })
        .build()
}

fn profile_name(desired: &Desired, spec: &InstanceSpec) -> String {
    lookup(desired, &spec.instance_profile)
        .and_then(|l| l.name.clone())
        .unwrap_or_else(|| spec.instance_profile.clone())
}

fn group_ids_of(ctx: &ApplyCtx<'_>, spec: &InstanceSpec) -> Result<Vec<String>, AwsError> {
    spec.security_groups
        .iter()
        .map(|m| {
            group_id(
                ctx,
                &group_name_of(ctx.desired, m).unwrap_or_else(|| m.clone()),
            )
        })
        .collect()
}

/// Applies one instance op.
pub async fn apply_instance(
    p: &AwsProvider,
    ctx: &ApplyCtx<'_>,
    change: &Change,
    op: InstanceOp,
) -> Result<(), AwsError> {
    let res = change.id.to_string();
    match op {
        InstanceOp::Run { name } => {
            let spec = declared(ctx.desired.instances(), Kind::Instance, &name)?;
            run_instance(p, ctx, &res, &name, spec).await?;
        }
        InstanceOp::Terminate { id } => {
            p.ec2
                .terminate_instances()
                .instance_ids(&id)
                .send()
                .await
                .map_err(|e| AwsError::call("TerminateInstances", &res, e))?;
        }
        InstanceOp::Start { id } => start(p, &res, &id).await?,
        InstanceOp::Resize { id, instance_type } => {
            resize(p, &res, &id, &instance_type).await?;
        }
        InstanceOp::DeleteOnTermination { id, device } => {
            p.ec2
                .modify_instance_attribute()
                .instance_id(&id)
                .block_device_mappings(
                    aws_sdk_ec2::types::InstanceBlockDeviceMappingSpecification::builder()
                        .device_name(device)
                        .ebs(
                            aws_sdk_ec2::types::EbsInstanceBlockDeviceSpecification::builder()
                                .delete_on_termination(true)
                                .build(),
                        )
                        .build(),
                )
                .send()
                .await
                .map_err(|e| AwsError::call("ModifyInstanceAttribute", &res, e))?;
        }
        InstanceOp::Volume {
            volume_id,
            size_gib,
            volume_type,
        } => {
            p.ec2
                .modify_volume()
                .volume_id(&volume_id)
                .set_size(size_gib)
                .set_volume_type(volume_type.as_deref().map(VolumeType::from))
                .send()
                .await
                .map_err(|e| AwsError::call("ModifyVolume", &res, e))?;
        }
        InstanceOp::Untag { id, keys } => remove_tags(p, &res, &id, &keys).await?,
        InstanceOp::Tag { id, name } => {
            let spec = declared(ctx.desired.instances(), Kind::Instance, &name)?;
            put_tags(p, &res, &id, &instance_tags(ctx.desired, &name, spec)).await?;
        }
        InstanceOp::Metadata { id, name } => {
            let spec = declared(ctx.desired.instances(), Kind::Instance, &name)?;
            let m = metadata_request(spec);
            // All four options every time: unsent ones would be reset.
            p.ec2
                .modify_instance_metadata_options()
                .instance_id(&id)
                .set_http_tokens(m.http_tokens().cloned())
                .set_http_put_response_hop_limit(m.http_put_response_hop_limit())
                .set_http_endpoint(m.http_endpoint().cloned())
                .set_instance_metadata_tags(m.instance_metadata_tags().cloned())
                .send()
                .await
                .map_err(|e| AwsError::call("ModifyInstanceMetadataOptions", &res, e))?;
        }
        InstanceOp::Associate { id, name } => {
            let spec = declared(ctx.desired.instances(), Kind::Instance, &name)?;
            p.ec2
                .associate_iam_instance_profile()
                .instance_id(&id)
                .iam_instance_profile(
                    IamInstanceProfileSpecification::builder()
                        .name(profile_name(ctx.desired, spec))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| AwsError::call("AssociateIamInstanceProfile", &res, e))?;
        }
        InstanceOp::ReplaceProfile { association, name } => {
            let spec = declared(ctx.desired.instances(), Kind::Instance, &name)?;
            p.ec2
                .replace_iam_instance_profile_association()
                .association_id(&association)
                .iam_instance_profile(
                    IamInstanceProfileSpecification::builder()
                        .name(profile_name(ctx.desired, spec))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| AwsError::call("ReplaceIamInstanceProfileAssociation", &res, e))?;
        }
        InstanceOp::Groups { id, name } => {
            let spec = declared(ctx.desired.instances(), Kind::Instance, &name)?;
            p.ec2
                .modify_instance_attribute()
                .instance_id(&id)
                .set_groups(Some(group_ids_of(ctx, spec)?))
                .send()
                .await
                .map_err(|e| AwsError::call("ModifyInstanceAttribute", &res, e))?;
        }
    }
    Ok(())
}

async fn run_instance(
    p: &AwsProvider,
    ctx: &ApplyCtx<'_>,
    res: &str,
    name: &str,
    spec: &InstanceSpec,
) -> Result<(), AwsError> {
    let image = match (&spec.ami.id, &spec.ami.ssm_parameter) {
        (Some(id), _) => id.clone(),
        (None, Some(param)) => crate::provider::aws::ssm::ami_from_parameter(&p.ssm, param).await?,
        (None, None) => {
            return Err(AwsError::invalid(
                res,
                "no AMI: set spec.ami.id or spec.ami.ssmParameter",
            ));
        }
    };
    let net = p.network(ctx.desired).await?;
    let subnet = net
        .subnets
        .get(&spec.subnet)
        .and_then(|s| s.first())
        .ok_or_else(|| AwsError::invalid(res, format!("Lookup/{} found no subnet", spec.subnet)))?;
    let root_device = p
        .ec2
        .describe_images()
        .image_ids(&image)
        .send()
        .await
        .ok()
        .and_then(|o| {
            o.images()
                .first()
                .and_then(|i| i.root_device_name().map(str::to_string))
        })
        .unwrap_or_else(|| "/dev/xvda".to_string());
    let mut tags = instance_tags(ctx.desired, name, spec);
    let user_data = crate::bootstrap::user_data(ctx.desired, spec);
    tags.insert(TAG_USER_DATA.into(), user_data_hash(user_data.as_deref()));
    let volume_tags = desired_tags(
        ctx.desired,
        &crate::model::ResourceId::new(crate::model::Kind::Instance, name),
        &spec.tags,
    );
    let group_ids = group_ids_of(ctx, spec)?;
    // Every instance of this Name seen by observe: concurrent runs that saw the same world
    // derive the same token, so EC2 launches once for both; the next re-creation (after the
    // next termination) has seen one more id and gets a new token.
    let mut seen: Vec<&str> = ctx
        .observed
        .instances
        .iter()
        .filter(|i| claims(i, name, &spec.name))
        .map(|i| i.id.as_str())
        .collect();
    seen.sort_unstable();
    let stable = token_of(&format!(
        "{}/{name}/{image}/{subnet}/{spec:?}/{}",
        ctx.desired.stack_name,
        seen.join(",")
    ));
    let mut token = stable;
    let mut attempt = 0;
    let id = loop {
        attempt += 1;
        let out = p
            .ec2
            .run_instances()
            .image_id(&image)
            .instance_type(spec.instance_type.as_str().into())
            .min_count(1)
            .max_count(1)
            .subnet_id(subnet)
            .set_security_group_ids(Some(group_ids.clone()))
            .iam_instance_profile(
                IamInstanceProfileSpecification::builder()
                    .name(profile_name(ctx.desired, spec))
                    .build(),
            )
            .metadata_options(metadata_request(spec))
            .block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name(&root_device)
                    .ebs(
                        EbsBlockDevice::builder()
                            .volume_size(
                                i32::try_from(spec.root_volume.size_gib).unwrap_or(i32::MAX),
                            )
                            .volume_type(VolumeType::from(spec.root_volume.volume_type.as_str()))
                            .encrypted(spec.root_volume.encrypted)
                            .delete_on_termination(true)
                            .build(),
                    )
                    .build(),
            )
            .set_user_data(user_data.as_ref().map(aws_smithy_types::base64::encode))
            .client_token(&token)
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Instance)
                    .set_tags(Some(ec2_tags(&tags)))
                    .build(),
            )
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Volume)
                    .set_tags(Some(ec2_tags(&volume_tags)))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| AwsError::call("RunInstances", res, e))?;
        let launched = out.instances().first();
        let id = launched
            .and_then(|i| i.instance_id())
            .ok_or_else(|| AwsError::invalid(res, "RunInstances returned no instance"))?;
        let state = launched
            .and_then(|i| i.state())
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_string())
            .unwrap_or_default();
        // A token EC2 already answered (the same world seen once before, its instance since
        // terminated) returns that old instance: launch again with a token of its own.
        if (LIVE_STATES.contains(&state.as_str()) && !seen.contains(&id)) || attempt > 1 {
            break id.to_string();
        }
        token = token_of(&format!("{token}/{}", unique_suffix()));
    };
    tracing::info!(resource = %res, id = %id, "instance launched");
    let kept = settle_duplicates(p, ctx, res, name, spec, &id).await?;
    Resolved::set(&ctx.resolved.instances, name, kept);
    Ok(())
}

/// A client token (at most 64 characters) from a stable text.
fn token_of(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..16])
}

/// Something no earlier launch used.
fn unique_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// After a launch: when another run launched the same instance at the same time, every run
/// keeps the same one (the oldest, then the smaller id) and terminates the others, so the stack
/// converges to one instance without any lock. Returns the id that is kept.
async fn settle_duplicates(
    p: &AwsProvider,
    ctx: &ApplyCtx<'_>,
    res: &str,
    name: &str,
    spec: &InstanceSpec,
    launched: &str,
) -> Result<String, AwsError> {
    let filters = vec![
        Filter::builder()
            .name(format!("tag:{STACK_TAG}"))
            .values(&ctx.desired.stack_name)
            .build(),
        Filter::builder()
            .name(format!("tag:{ENV_TAG}"))
            .values(&ctx.desired.environment)
            .build(),
        Filter::builder()
            .name("instance-state-name")
            .set_values(Some(LIVE_STATES.iter().map(|s| s.to_string()).collect()))
            .build(),
    ];
    let mut live = describe_instances(&p.ec2, filters).await?;
    live.retain(|i| is_owned(&i.tags, ctx.desired) && claims(i, name, &spec.name));
    let cands: Vec<&LiveInstance> = live.iter().collect();
    let Some(keep) = keeper(&cands, &HashSet::new()) else {
        // Not listed yet (eventual consistency): keep what was launched.
        return Ok(launched.to_string());
    };
    let extra: Vec<String> = live
        .iter()
        .filter(|i| i.id != keep.id)
        .map(|i| i.id.clone())
        .collect();
    if !extra.is_empty() {
        tracing::warn!(resource = %res, kept = %keep.id, terminated = ?extra, "a concurrent run launched the same instance: terminating the newer");
        p.ec2
            .terminate_instances()
            .set_instance_ids(Some(extra))
            .send()
            .await
            .map_err(|e| AwsError::call("TerminateInstances", res, e))?;
    }
    Ok(keep.id.clone())
}

async fn start(p: &AwsProvider, res: &str, id: &str) -> Result<(), AwsError> {
    p.ec2
        .start_instances()
        .instance_ids(id)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| AwsError::call("StartInstances", res, e))
}

/// Stop → modify → start: the type cannot change while the instance runs, and a stop keeps the
/// EBS root volume (and the host's data) where a replacement would not.
async fn resize(p: &AwsProvider, res: &str, id: &str, instance_type: &str) -> Result<(), AwsError> {
    p.ec2
        .stop_instances()
        .instance_ids(id)
        .send()
        .await
        .map_err(|e| AwsError::call("StopInstances", res, e))?;
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        let state = describe_instances(
            &p.ec2,
            vec![Filter::builder().name("instance-id").values(id).build()],
        )
        .await?
        .first()
        .map(|i| i.state.clone())
        .unwrap_or_default();
        if state == "stopped" {
            break;
        }
        if Instant::now() >= deadline {
            return Err(AwsError::invalid(
                res,
                format!(
                    "{id} did not stop within {}s (state {state}); its type is unchanged",
                    STOP_TIMEOUT.as_secs()
                ),
            ));
        }
        tokio::time::sleep(STOP_POLL).await;
    }
    p.ec2
        .modify_instance_attribute()
        .instance_id(id)
        .instance_type(AttributeValue::builder().value(instance_type).build())
        .send()
        .await
        .map_err(|e| AwsError::call("ModifyInstanceAttribute", res, e))?;
    start(p, res, id).await
}
