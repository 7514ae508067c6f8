//! `Instance`: the EC2 host. Its diff is pure and unit-tested below; observe reads it with one
//! filtered describe, apply launches, repairs in place or replaces it.

use super::{ec2_tags, group_id, id_names, tags_of};
use crate::model::{Desired, Ensure, HttpTokens, InstanceSpec, Kind, ResourceId, Tags};
use crate::plan::{Action, Change, Condition, ConditionStatus, FieldChange};
use crate::provider::aws::{
    ApplyCtx, AwsError, AwsProvider, Observed, Op, Resolved, SsmReach, desired_tags, group_name_of,
    is_owned, lookup, tag_changes,
};
use crate::provider::{ProviderPlan, Step};
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, HttpTokensState, IamInstanceProfileSpecification,
    InstanceMetadataEndpointState, InstanceMetadataOptionsRequest, InstanceMetadataTagsState,
    ResourceType, TagSpecification, VolumeType,
};
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashSet};

/// Instance tag holding the hash of the user data it was launched with (DescribeInstances does
/// not return user data; reading it would cost a call per cycle).
const TAG_USER_DATA: &str = "stackwarden:user-data-sha256";

/// Instance tag holding the root volume it was launched with (`gp3/30/encrypted`).
const TAG_ROOT_VOLUME: &str = "stackwarden:root-volume";

/// Instance tag holding the subnet Lookup it was launched into.
const TAG_SUBNET: &str = "stackwarden:subnet";

/// States of an instance that still exists.
pub(super) const LIVE_STATES: [&str; 4] = ["pending", "running", "stopping", "stopped"];

// ---------------------------------------------------------------------------------------------
// Observed types and writes

/// An instance as observed.
#[derive(Debug, Clone)]
pub struct LiveInstance {
    /// `i-…`.
    pub id: String,
    /// State name (`running`, `terminated`, …).
    pub state: String,
    /// Instance type.
    pub instance_type: String,
    /// AMI id.
    pub image_id: String,
    /// Security group ids.
    pub group_ids: Vec<String>,
    /// Instance profile ARN, when one is associated.
    pub profile_arn: Option<String>,
    /// The association id of that profile.
    pub profile_association: Option<String>,
    /// `required` / `optional`.
    pub http_tokens: String,
    /// Hop limit.
    pub hop_limit: i32,
    /// `enabled` / `disabled`.
    pub metadata_tags: String,
    /// `enabled` / `disabled`.
    pub http_endpoint: String,
    /// Tags.
    pub tags: Tags,
    /// Launch time, to prefer the oldest of duplicates.
    pub launched: String,
}

/// Instance writes.
#[derive(Debug)]
pub enum InstanceOp {
    /// Launch it.
    Run {
        /// Instance manifest name.
        name: String,
    },
    /// Terminate an instance.
    Terminate {
        /// `i-…`.
        id: String,
    },
    /// Start a stopped instance.
    Start {
        /// `i-…`.
        id: String,
    },
    /// Put the desired tags.
    Tag {
        /// `i-…`.
        id: String,
        /// Instance manifest name.
        name: String,
    },
    /// Set all four metadata options.
    Metadata {
        /// `i-…`.
        id: String,
        /// Instance manifest name.
        name: String,
    },
    /// Associate the instance profile.
    Associate {
        /// `i-…`.
        id: String,
        /// Instance manifest name.
        name: String,
    },
    /// Replace the associated profile.
    ReplaceProfile {
        /// The association id.
        association: String,
        /// Instance manifest name.
        name: String,
    },
    /// Set the security groups.
    Groups {
        /// `i-…`.
        id: String,
        /// Instance manifest name.
        name: String,
    },
}

// ---------------------------------------------------------------------------------------------
// Diff (pure)

/// The hex SHA-256 of user data (empty string when none).
pub fn user_data_hash(user_data: Option<&str>) -> String {
    hex::encode(Sha256::digest(user_data.unwrap_or("").as_bytes()))
}

/// How the root volume is recorded in the launch tag.
pub fn root_volume_tag(spec: &InstanceSpec) -> String {
    let v = &spec.root_volume;
    format!(
        "{}/{}/{}",
        v.volume_type.to_ascii_lowercase(),
        v.size_gib,
        if v.encrypted {
            "encrypted"
        } else {
            "unencrypted"
        }
    )
}

/// Why a live instance must be replaced rather than changed in place (empty: it need not).
pub fn replace_reasons(spec: &InstanceSpec, live: &LiveInstance) -> Vec<String> {
    let mut why = Vec::new();
    if let Some(ami) = &spec.ami.id
        && ami != &live.image_id
    {
        why.push(format!("pinned AMI changed {} → {ami}", live.image_id));
    }
    if !spec.instance_type.eq_ignore_ascii_case(&live.instance_type) {
        why.push(format!(
            "instance type changed {} → {}",
            live.instance_type, spec.instance_type
        ));
    }
    // Launch tags are compared only when present: an adopted instance has none.
    let checks = [
        (
            TAG_USER_DATA,
            user_data_hash(spec.user_data.as_deref()),
            "user data changed",
        ),
        (
            TAG_ROOT_VOLUME,
            root_volume_tag(spec),
            "root volume changed",
        ),
        (TAG_SUBNET, spec.subnet.clone(), "subnet changed"),
    ];
    for (tag, want, reason) in checks {
        if let Some(have) = live.tags.get(tag)
            && have != &want
        {
            why.push(reason.to_string());
        }
    }
    why
}

/// Metadata option fields that differ.
pub fn metadata_changes(spec: &InstanceSpec, live: &LiveInstance) -> Vec<FieldChange> {
    let m = &spec.metadata_options;
    let mut out = Vec::new();
    let tokens = match m.http_tokens {
        HttpTokens::Required => "required",
        HttpTokens::Optional => "optional",
    };
    let onoff = |b: bool| if b { "enabled" } else { "disabled" };
    for (path, have, want) in [
        (
            "metadataOptions.httpTokens",
            live.http_tokens.clone(),
            tokens.to_string(),
        ),
        (
            "metadataOptions.httpPutResponseHopLimit",
            live.hop_limit.to_string(),
            m.http_put_response_hop_limit.to_string(),
        ),
        (
            "metadataOptions.instanceMetadataTags",
            live.metadata_tags.clone(),
            onoff(m.instance_metadata_tags).to_string(),
        ),
        (
            "metadataOptions.httpEndpoint",
            live.http_endpoint.clone(),
            onoff(m.http_endpoint).to_string(),
        ),
    ] {
        if !have.eq_ignore_ascii_case(&want) {
            out.push(FieldChange::changed(path, have, want));
        }
    }
    out
}

/// The profile name at the end of an instance-profile ARN (`…:instance-profile/path/name`).
pub fn profile_name_of_arn(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// The desired tags of an instance: Name, ownership, its own.
fn instance_tags(desired: &Desired, spec: &InstanceSpec) -> Tags {
    let mut tags = desired_tags(desired, &spec.tags);
    tags.insert("Name".into(), spec.name.clone());
    tags
}

/// Plans instances. Returns the manifest names of instances created or replaced (their targets
/// must be registered anew).
pub fn diff_instances(
    desired: &Desired,
    observed: &Observed,
    plan: &mut ProviderPlan<Op>,
) -> HashSet<String> {
    let mut fresh = HashSet::new();
    let names = id_names(observed);
    let declared: HashSet<&str> = desired
        .instances()
        .filter(|(r, _)| r.ensure == Ensure::Present)
        .map(|(_, s)| s.name.as_str())
        .collect();
    for (r, spec) in desired.instances() {
        let mut cands: Vec<&LiveInstance> = observed
            .instances
            .iter()
            .filter(|i| i.tags.get("Name") == Some(&spec.name))
            .collect();
        let had_terminated = cands
            .iter()
            .any(|i| i.state == "terminated" || i.state == "shutting-down");
        cands.retain(|i| LIVE_STATES.contains(&i.state.as_str()));
        cands.sort_by_key(|i| (!is_owned(&i.tags, desired), i.launched.clone()));
        if r.ensure == Ensure::Absent {
            for i in cands.iter().filter(|i| is_owned(&i.tags, desired)) {
                plan.steps.push(Step {
                    change: Change::new(r.id.clone(), Action::Delete)
                        .because(format!("the stack is disabled ({})", i.id)),
                    ops: vec![Op::Instance(InstanceOp::Terminate { id: i.id.clone() })],
                });
            }
            continue;
        }
        let Some(live) = cands.first() else {
            let mut change = Change::new(r.id.clone(), Action::Create);
            if had_terminated {
                change = change.because("the instance was terminated");
            }
            plan.steps.push(Step {
                change,
                ops: vec![Op::Instance(InstanceOp::Run {
                    name: r.id.name.clone(),
                })],
            });
            fresh.insert(r.id.name.clone());
            continue;
        };
        let owned = is_owned(&live.tags, desired);
        let mut live_spec = spec.clone();
        live_spec.metadata_options.http_tokens = if live.http_tokens == "optional" {
            HttpTokens::Optional
        } else {
            HttpTokens::Required
        };
        plan.violations
            .extend(crate::policy::check_instance(&r.id.to_string(), &live_spec));
        let reasons = replace_reasons(spec, live);
        if owned && !reasons.is_empty() {
            plan.steps.push(Step {
                change: Change::new(r.id.clone(), Action::Replace).because(reasons.join("; ")),
                ops: vec![
                    Op::Instance(InstanceOp::Terminate {
                        id: live.id.clone(),
                    }),
                    Op::Instance(InstanceOp::Run {
                        name: r.id.name.clone(),
                    }),
                ],
            });
            fresh.insert(r.id.name.clone());
            continue;
        }
        let mut ops = Vec::new();
        let mut fields = Vec::new();
        let tf = tag_changes(&instance_tags(desired, spec), &live.tags);
        if !tf.is_empty() {
            fields.extend(tf);
            ops.push(InstanceOp::Tag {
                id: live.id.clone(),
                name: r.id.name.clone(),
            });
        }
        if live.state == "stopped" || live.state == "stopping" {
            fields.push(FieldChange::changed("state", &live.state, "running"));
            ops.push(InstanceOp::Start {
                id: live.id.clone(),
            });
        }
        let mf = metadata_changes(spec, live);
        if !mf.is_empty() {
            fields.extend(mf);
            ops.push(InstanceOp::Metadata {
                id: live.id.clone(),
                name: r.id.name.clone(),
            });
        }
        let want_profile = lookup(desired, &spec.instance_profile)
            .and_then(|l| l.name.clone())
            .unwrap_or_else(|| spec.instance_profile.clone());
        match (&live.profile_arn, &live.profile_association) {
            (Some(arn), Some(assoc)) => {
                if profile_name_of_arn(arn) != want_profile {
                    fields.push(FieldChange::changed(
                        "instanceProfile",
                        profile_name_of_arn(arn),
                        &want_profile,
                    ));
                    ops.push(InstanceOp::ReplaceProfile {
                        association: assoc.clone(),
                        name: r.id.name.clone(),
                    });
                }
            }
            _ => {
                fields.push(FieldChange::added("instanceProfile", &want_profile));
                ops.push(InstanceOp::Associate {
                    id: live.id.clone(),
                    name: r.id.name.clone(),
                });
            }
        }
        let want_groups: BTreeSet<String> = spec
            .security_groups
            .iter()
            .map(|m| group_name_of(desired, m).unwrap_or_else(|| m.clone()))
            .collect();
        let have_groups: BTreeSet<String> = live
            .group_ids
            .iter()
            .map(|id| names.get(id).cloned().unwrap_or_else(|| id.clone()))
            .collect();
        if want_groups != have_groups {
            let show = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(",");
            fields.push(FieldChange::changed(
                "securityGroups",
                show(&have_groups),
                show(&want_groups),
            ));
            ops.push(InstanceOp::Groups {
                id: live.id.clone(),
                name: r.id.name.clone(),
            });
        }
        if !owned {
            tracing::info!(instance = %spec.name, id = %live.id, "instance exists without ownership tags: planning to adopt it");
            if !ops.iter().any(|o| matches!(o, InstanceOp::Tag { .. })) {
                ops.insert(
                    0,
                    InstanceOp::Tag {
                        id: live.id.clone(),
                        name: r.id.name.clone(),
                    },
                );
            }
        }
        if live.state == "running" && owned {
            plan.conditions
                .push(ssm_condition(&r.id, observed.ssm.get(&live.id)));
        }
        if ops.is_empty() {
            continue;
        }
        let action = if owned { Action::Update } else { Action::Adopt };
        plan.steps.push(Step {
            change: Change::new(r.id.clone(), action).with_fields(fields),
            ops: ops.into_iter().map(Op::Instance).collect(),
        });
    }
    // Owned instances of this stack that no manifest declares any more.
    for i in &observed.instances {
        let Some(name) = i.tags.get("Name") else {
            continue;
        };
        if LIVE_STATES.contains(&i.state.as_str())
            && is_owned(&i.tags, desired)
            && !declared.contains(name.as_str())
            && desired.instances().all(|(_, s)| &s.name != name)
        {
            plan.steps.push(Step {
                change: Change::new(
                    ResourceId::new(Kind::Instance, name.clone()),
                    Action::Delete,
                )
                .because(format!("no longer declared ({})", i.id)),
                ops: vec![Op::Instance(InstanceOp::Terminate { id: i.id.clone() })],
            });
        }
    }
    fresh
}

fn ssm_condition(id: &ResourceId, reach: Option<&SsmReach>) -> Condition {
    let (status, reason, message) = match reach {
        Some(SsmReach::Online) => (
            ConditionStatus::True,
            "SsmOnline",
            "SSM sees the instance online".to_string(),
        ),
        Some(SsmReach::Offline(s)) => (
            ConditionStatus::False,
            "SsmOffline",
            format!("SSM does not see the instance online ({s}): Grafana cannot be reached"),
        ),
        Some(SsmReach::Unknown(why)) => (
            ConditionStatus::Unknown,
            "SsmUnavailable",
            format!("SSM reachability cannot be read: {why}"),
        ),
        None => (
            ConditionStatus::Unknown,
            "SsmUnavailable",
            "SSM reachability not read".to_string(),
        ),
    };
    Condition {
        id: id.clone(),
        kind: "Ready".into(),
        status,
        reason: reason.into(),
        message,
    }
}

// ---------------------------------------------------------------------------------------------
// Reads

/// The instances this stack owns (any state, so a terminated one explains a re-create), plus,
/// only when a declared instance has no owned one, the instances carrying its Name tag (the
/// adoption candidates). Filtering server-side keeps a steady state at one call however many
/// instances the region runs.
pub async fn observe_instances(
    client: &aws_sdk_ec2::Client,
    desired: &Desired,
) -> Result<Vec<LiveInstance>, AwsError> {
    let owned = Filter::builder()
        .name(format!("tag:{}", crate::model::ownership::STACK_TAG))
        .values(&desired.stack_name)
        .build();
    let mut found = describe_instances(client, owned).await?;
    let missing: Vec<String> = desired
        .instances()
        .filter(|(r, _)| r.ensure == Ensure::Present)
        .map(|(_, s)| s.name.clone())
        .filter(|name| {
            !found.iter().any(|i| {
                i.tags.get("Name") == Some(name) && LIVE_STATES.contains(&i.state.as_str())
            })
        })
        .collect();
    if !missing.is_empty() {
        let by_name = Filter::builder()
            .name("tag:Name")
            .set_values(Some(missing))
            .build();
        for i in describe_instances(client, by_name).await? {
            if !found.iter().any(|f| f.id == i.id) {
                found.push(i);
            }
        }
    }
    Ok(found)
}

/// The instances matching one filter, paginated.
async fn describe_instances(
    client: &aws_sdk_ec2::Client,
    filter: Filter,
) -> Result<Vec<LiveInstance>, AwsError> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let resp = client
            .describe_instances()
            .filters(filter.clone())
            .set_next_token(token)
            .max_results(1000)
            .send()
            .await
            .map_err(|e| AwsError::call("DescribeInstances", "instances", e))?;
        for i in resp.reservations().iter().flat_map(|r| r.instances()) {
            let Some(id) = i.instance_id() else { continue };
            let meta = i.metadata_options();
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
                tags: tags_of(i.tags()),
                launched: i.launch_time().map(|t| t.to_string()).unwrap_or_default(),
            });
        }
        token = resp.next_token().map(str::to_string);
        if token.is_none() {
            return Ok(out);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Writes

fn instance_spec<'a>(desired: &'a Desired, name: &str) -> Result<&'a InstanceSpec, AwsError> {
    desired
        .instances()
        .find(|(r, _)| r.id.name == name)
        .map(|(_, s)| s)
        .ok_or_else(|| AwsError::invalid(format!("Instance/{name}"), "not declared"))
}

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
            let spec = instance_spec(ctx.desired, &name)?;
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
        InstanceOp::Start { id } => {
            p.ec2
                .start_instances()
                .instance_ids(&id)
                .send()
                .await
                .map_err(|e| AwsError::call("StartInstances", &res, e))?;
        }
        InstanceOp::Tag { id, name } => {
            let spec = instance_spec(ctx.desired, &name)?;
            p.ec2
                .create_tags()
                .resources(&id)
                .set_tags(Some(ec2_tags(&instance_tags(ctx.desired, spec))))
                .send()
                .await
                .map_err(|e| AwsError::call("CreateTags", &res, e))?;
        }
        InstanceOp::Metadata { id, name } => {
            let spec = instance_spec(ctx.desired, &name)?;
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
            let spec = instance_spec(ctx.desired, &name)?;
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
            let spec = instance_spec(ctx.desired, &name)?;
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
            let spec = instance_spec(ctx.desired, &name)?;
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
    let mut tags = instance_tags(ctx.desired, spec);
    tags.insert(
        TAG_USER_DATA.into(),
        user_data_hash(spec.user_data.as_deref()),
    );
    tags.insert(TAG_ROOT_VOLUME.into(), root_volume_tag(spec));
    tags.insert(TAG_SUBNET.into(), spec.subnet.clone());
    let volume_tags = desired_tags(ctx.desired, &spec.tags);
    // A fresh token per launch: retries of this request are idempotent, a later re-creation
    // (after a termination) is not mistaken for it.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let token = hex::encode(
        &Sha256::digest(format!("{}/{name}/{nanos}", ctx.desired.stack_name).as_bytes())[..16],
    );
    let out = p
        .ec2
        .run_instances()
        .image_id(image)
        .instance_type(spec.instance_type.as_str().into())
        .min_count(1)
        .max_count(1)
        .subnet_id(subnet)
        .set_security_group_ids(Some(group_ids_of(ctx, spec)?))
        .iam_instance_profile(
            IamInstanceProfileSpecification::builder()
                .name(profile_name(ctx.desired, spec))
                .build(),
        )
        .metadata_options(metadata_request(spec))
        .block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name(root_device)
                .ebs(
                    EbsBlockDevice::builder()
                        .volume_size(i32::try_from(spec.root_volume.size_gib).unwrap_or(i32::MAX))
                        .volume_type(VolumeType::from(spec.root_volume.volume_type.as_str()))
                        .encrypted(spec.root_volume.encrypted)
                        .delete_on_termination(true)
                        .build(),
                )
                .build(),
        )
        .set_user_data(
            spec.user_data
                .as_ref()
                .map(aws_smithy_types::base64::encode),
        )
        .client_token(token)
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
    let id = out
        .instances()
        .first()
        .and_then(|i| i.instance_id())
        .ok_or_else(|| AwsError::invalid(res, "RunInstances returned no instance"))?;
    tracing::info!(resource = %res, id = %id, "instance launched");
    Resolved::set(&ctx.resolved.instances, name, id.to_string());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_names_are_read_from_arns_with_paths() {
        assert_eq!(
            profile_name_of_arn("arn:aws:iam::123456789012:instance-profile/a/b/obs"),
            "obs"
        );
        assert_eq!(profile_name_of_arn("obs"), "obs");
    }
}
