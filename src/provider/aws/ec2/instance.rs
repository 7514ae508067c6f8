//! `Instance`: the EC2 host. Observe reads the stack's instances, their root volumes and the
//! subnets their Lookup selects; the diff is pure and unit-tested below (one live object per
//! declared instance: duplicates are removed); apply launches, repairs in place (a new type is
//! stop → modify → start, a bigger or other-type volume is modified live) and replaces only
//! for what cannot change in place.

use super::{ec2_tags, extra_tags, group_id, id_names, tags_of};
use crate::model::ownership::STACK_TAG;
use crate::model::{Desired, Ensure, HttpTokens, InstanceSpec, Kind, ResourceId, Tags};
use crate::plan::{Action, BlockReason, Blocked, Change, Condition, ConditionStatus, FieldChange};
use crate::provider::aws::{
    ApplyCtx, AwsError, AwsProvider, Observed, Op, Resolved, SsmReach, desired_tags, group_name_of,
    is_owned, lookup, tag_changes,
};
use crate::provider::{ProviderPlan, Step};
use aws_sdk_ec2::types::{
    AttributeValue, BlockDeviceMapping, EbsBlockDevice, Filter, HttpTokensState,
    IamInstanceProfileSpecification, InstanceMetadataEndpointState, InstanceMetadataOptionsRequest,
    InstanceMetadataTagsState, ResourceType, TagSpecification, VolumeType,
};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

/// Instance tag holding the hash of the user data it was launched with (DescribeInstances does
/// not return user data; reading it would cost a call per cycle).
const TAG_USER_DATA: &str = "stackwarden:user-data-sha256";

/// Instance tag naming the Instance manifest it stands for: a Name tag changed or removed by
/// hand is then tag drift to restore, not a missing instance to launch again.
const TAG_RESOURCE: &str = "stackwarden:resource";

/// States of an instance that still exists.
pub(super) const LIVE_STATES: [&str; 4] = ["pending", "running", "stopping", "stopped"];

/// How often a stopping instance is polled before its type is changed: EC2 stops an instance
/// in tens of seconds, so a few seconds between reads keeps the call count low.
const STOP_POLL: Duration = Duration::from_secs(2);

/// How long a stop may take before the resize gives up (EC2's own stop waiter waits as long).
const STOP_TIMEOUT: Duration = Duration::from_secs(600);

// ---------------------------------------------------------------------------------------------
// Observed types and writes

/// An instance as observed.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveInstance {
    /// `i-…`.
    pub id: String,
    /// State name (`running`, `terminated`, …).
    pub state: String,
    /// Instance type.
    pub instance_type: String,
    /// AMI id.
    pub image_id: String,
    /// The subnet it runs in.
    pub subnet_id: String,
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
    /// The root EBS volume as DescribeVolumes reports it (`None`: not read, or none).
    pub root_volume: Option<LiveVolume>,
    /// Tags.
    pub tags: Tags,
    /// Launch time as zero-padded epoch seconds, to prefer the oldest of duplicates.
    pub launched: String,
}

/// A root EBS volume as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveVolume {
    /// `vol-…`.
    pub id: String,
    /// Size in GiB.
    pub size_gib: i32,
    /// `gp3`, `gp2`, …
    pub volume_type: String,
    /// Encryption at rest.
    pub encrypted: bool,
    /// The device it is attached as (`/dev/xvda`).
    pub device: String,
    /// Deleted with the instance (an attachment setting: false leaves volumes behind).
    pub delete_on_termination: bool,
}

/// What observe reads for instances.
#[derive(Debug, Default)]
pub struct InstancesObserved {
    /// The stack's instances (any state) and adoption candidates.
    pub instances: Vec<LiveInstance>,
    /// Subnet ids each subnet Lookup an instance names selects (by its tags), sorted.
    pub subnets: BTreeMap<String, Vec<String>>,
}

/// Instance writes.
#[derive(Debug)]
pub enum InstanceOp {
    /// Launch it (and settle a concurrent launch: the newer of two is terminated).
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
    /// Change the instance type: stop, modify, start (the root volume and its data stay).
    Resize {
        /// `i-…`.
        id: String,
        /// The type to set.
        instance_type: String,
    },
    /// Delete the root volume with the instance again.
    DeleteOnTermination {
        /// `i-…`.
        id: String,
        /// The root device name.
        device: String,
    },
    /// Modify the root volume in place (grow it, change its type).
    Volume {
        /// `vol-…`.
        volume_id: String,
        /// New size in GiB, when it grows.
        size_gib: Option<i32>,
        /// New type, when it changes.
        volume_type: Option<String>,
    },
    /// Put the desired tags.
    Tag {
        /// `i-…`.
        id: String,
        /// Instance manifest name.
        name: String,
    },
    /// Remove tags nobody declared.
    Untag {
        /// `i-…`.
        id: String,
        /// The tag keys.
        keys: Vec<String>,
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

/// The profile name at the end of an instance-profile ARN (`…:instance-profile/path/name`).
pub fn profile_name_of_arn(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// The desired tags of an instance: Name, ownership, the manifest it stands for, its own.
fn instance_tags(desired: &Desired, manifest: &str, spec: &InstanceSpec) -> Tags {
    let id = crate::model::ResourceId::new(crate::model::Kind::Instance, manifest);
    let mut tags = desired_tags(desired, &id, &spec.tags);
    tags.insert("Name".into(), spec.name.clone());
    tags.insert(TAG_RESOURCE.into(), manifest.to_string());
    tags
}

/// Whether a live instance stands for the declared one: its resource tag names it, or, with no
/// resource tag (adoption candidates, instances launched before the tag), its Name matches.
fn claims(i: &LiveInstance, manifest: &str, spec_name: &str) -> bool {
    match i.tags.get(TAG_RESOURCE) {
        Some(r) => r == manifest,
        None => i.tags.get("Name").map(String::as_str) == Some(spec_name),
    }
}

/// One declared instance with its references resolved: what a live one is compared against.
#[derive(Debug, Clone)]
pub struct Wanted<'a> {
    /// The manifest name.
    pub name: &'a str,
    /// The spec.
    pub spec: &'a InstanceSpec,
    /// Name, ownership and own tags.
    pub tags: Tags,
    /// The instance profile's name.
    pub profile: String,
    /// Security group names.
    pub groups: BTreeSet<String>,
    /// Subnet ids the subnet Lookup selects (`None`: not read).
    pub subnets: Option<&'a [String]>,
}

impl<'a> Wanted<'a> {
    /// Resolves a declared instance's references against the desired and observed state.
    pub fn of(
        desired: &Desired,
        observed: &'a Observed,
        name: &'a str,
        spec: &'a InstanceSpec,
    ) -> Wanted<'a> {
        Wanted {
            name,
            spec,
            tags: instance_tags(desired, name, spec),
            profile: lookup(desired, &spec.instance_profile)
                .and_then(|l| l.name.clone())
                .unwrap_or_else(|| spec.instance_profile.clone()),
            groups: spec
                .security_groups
                .iter()
                .map(|m| group_name_of(desired, m).unwrap_or_else(|| m.clone()))
                .collect(),
            subnets: observed.subnets.get(&spec.subnet).map(Vec::as_slice),
        }
    }
}

/// How one live instance differs from what is wanted.
#[derive(Debug, Default)]
pub struct Drift {
    /// Why it must be replaced (empty: it can be repaired in place).
    pub replace: Vec<String>,
    /// What the plan shows.
    pub fields: Vec<FieldChange>,
    /// In-place repairs, in order.
    pub ops: Vec<InstanceOp>,
    /// The type changes: the instance is stopped, modified and started.
    pub resize: bool,
}

/// Compares a live instance with what is wanted: every field a person can change by hand.
pub fn compare(want: &Wanted<'_>, live: &LiveInstance, names: &BTreeMap<String, String>) -> Drift {
    let spec = want.spec;
    let name = want.name.to_string();
    let mut d = Drift::default();
    // What cannot change in place.
    if let Some(ami) = &spec.ami.id
        && ami != &live.image_id
    {
        d.replace
            .push(format!("pinned AMI changed {} → {ami}", live.image_id));
    }
    if let Some(subnets) = want.subnets
        && !subnets.is_empty()
        && !subnets.contains(&live.subnet_id)
    {
        d.replace.push(format!(
            "subnet {} is not one Lookup/{} selects ({})",
            live.subnet_id,
            spec.subnet,
            subnets.join(", ")
        ));
        d.fields.push(FieldChange::changed(
            "subnet",
            &live.subnet_id,
            subnets.join("|"),
        ));
    }
    // User data is not returned by DescribeInstances: the launch tag records its hash.
    if let Some(have) = live.tags.get(TAG_USER_DATA)
        && have != &user_data_hash(spec.user_data.as_deref())
    {
        d.replace.push("user data changed".to_string());
    }
    if let Some(v) = &live.root_volume {
        let w = &spec.root_volume;
        let want_size = i32::try_from(w.size_gib).unwrap_or(i32::MAX);
        if v.encrypted != w.encrypted {
            d.replace.push(format!(
                "root volume encryption cannot change in place ({} → {})",
                v.encrypted, w.encrypted
            ));
            d.fields.push(FieldChange::changed(
                "rootVolume.encrypted",
                v.encrypted,
                w.encrypted,
            ));
        }
        if want_size < v.size_gib {
            d.replace.push(format!(
                "a root volume cannot shrink in place ({} → {want_size} GiB)",
                v.size_gib
            ));
        }
        let grow = want_size > v.size_gib;
        let retype = !v.volume_type.eq_ignore_ascii_case(&w.volume_type);
        if want_size != v.size_gib {
            d.fields.push(FieldChange::changed(
                "rootVolume.sizeGib",
                v.size_gib,
                want_size,
            ));
        }
        if retype {
            d.fields.push(FieldChange::changed(
                "rootVolume.type",
                &v.volume_type,
                &w.volume_type,
            ));
        }
        if !v.delete_on_termination {
            d.fields.push(FieldChange::changed(
                "rootVolume.deleteOnTermination",
                false,
                true,
            ));
            d.ops.push(InstanceOp::DeleteOnTermination {
                id: live.id.clone(),
                device: v.device.clone(),
            });
        }
        if grow || retype {
            d.ops.push(InstanceOp::Volume {
                volume_id: v.id.clone(),
                size_gib: grow.then_some(want_size),
                volume_type: retype.then(|| w.volume_type.clone()),
            });
        }
    }
    // In place.
    let tf = tag_changes(&want.tags, &live.tags);
    if !tf.is_empty() {
        d.fields.extend(tf);
        d.ops.push(InstanceOp::Tag {
            id: live.id.clone(),
            name: name.clone(),
        });
    }
    let extra = extra_tags(&want.tags, &live.tags);
    if !extra.is_empty() {
        for k in &extra {
            d.fields.push(FieldChange::removed(
                format!("tags.{k}"),
                live.tags.get(k).map(String::as_str).unwrap_or(""),
            ));
        }
        d.ops.push(InstanceOp::Untag {
            id: live.id.clone(),
            keys: extra,
        });
    }
    if !spec.instance_type.eq_ignore_ascii_case(&live.instance_type) {
        d.fields.push(FieldChange::changed(
            "instanceType",
            &live.instance_type,
            &spec.instance_type,
        ));
        d.ops.push(InstanceOp::Resize {
            id: live.id.clone(),
            instance_type: spec.instance_type.clone(),
        });
        d.resize = true;
    }
    if live.state == "stopped" || live.state == "stopping" {
        d.fields
            .push(FieldChange::changed("state", &live.state, "running"));
        // A resize starts the instance itself.
        if !d.resize {
            d.ops.push(InstanceOp::Start {
                id: live.id.clone(),
            });
        }
    }
    let mf = metadata_changes(spec, live);
    if !mf.is_empty() {
        d.fields.extend(mf);
        d.ops.push(InstanceOp::Metadata {
            id: live.id.clone(),
            name: name.clone(),
        });
    }
    match (&live.profile_arn, &live.profile_association) {
        (Some(arn), Some(assoc)) => {
            if profile_name_of_arn(arn) != want.profile {
                d.fields.push(FieldChange::changed(
                    "instanceProfile",
                    profile_name_of_arn(arn),
                    &want.profile,
                ));
                d.ops.push(InstanceOp::ReplaceProfile {
                    association: assoc.clone(),
                    name: name.clone(),
                });
            }
        }
        _ => {
            d.fields
                .push(FieldChange::added("instanceProfile", &want.profile));
            d.ops.push(InstanceOp::Associate {
                id: live.id.clone(),
                name: name.clone(),
            });
        }
    }
    let have_groups: BTreeSet<String> = live
        .group_ids
        .iter()
        .map(|id| names.get(id).cloned().unwrap_or_else(|| id.clone()))
        .collect();
    if want.groups != have_groups {
        let show = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(",");
        d.fields.push(FieldChange::changed(
            "securityGroups",
            show(&have_groups),
            show(&want.groups),
        ));
        d.ops.push(InstanceOp::Groups {
            id: live.id.clone(),
            name,
        });
    }
    d
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

/// True while the instance exists (not shutting down or terminated).
pub(super) fn is_live(i: &LiveInstance) -> bool {
    LIVE_STATES.contains(&i.state.as_str())
}

/// The stack tag names another stack.
fn foreign(tags: &Tags, desired: &Desired) -> bool {
    tags.get(STACK_TAG)
        .is_some_and(|s| s != &desired.stack_name)
}

/// The live instances that stand for one declared instance: this stack's, or (when it has none)
/// untagged ones carrying its Name, the adoption candidates. Another stack's never stand for it.
/// With none of those, an instance that lost its naming tags but carries the declared one's
/// other marks stands for it, when it is the only one ([`lookalikes`]): a deleted Name tag
/// must never launch a second host beside the first.
fn candidates<'a>(
    desired: &Desired,
    observed: &'a Observed,
    manifest: &str,
    spec: &InstanceSpec,
) -> Vec<&'a LiveInstance> {
    let live: Vec<&LiveInstance> = observed
        .instances
        .iter()
        .filter(|i| claims(i, manifest, &spec.name))
        .filter(|i| LIVE_STATES.contains(&i.state.as_str()))
        .filter(|i| !foreign(&i.tags, desired))
        .collect();
    let owned: Vec<&LiveInstance> = live
        .iter()
        .copied()
        .filter(|i| is_owned(&i.tags, desired))
        .collect();
    if !owned.is_empty() {
        return owned;
    }
    if !live.is_empty() {
        return live;
    }
    match lookalikes(desired, observed, manifest, spec) {
        Lookalikes { full, partial } if full.len() == 1 && partial.is_empty() => full,
        _ => Vec::new(),
    }
}

/// Live instances that carry no tag naming any instance (no resource tag, no Name) but wear
/// a declared instance's other marks: its security groups and its instance profile.
#[derive(Debug, Default)]
pub struct Lookalikes<'a> {
    /// Every mark agrees: the groups are the declared ones and the profile is.
    pub full: Vec<&'a LiveInstance>,
    /// Some marks, not all: one of the groups, another profile or more groups.
    pub partial: Vec<&'a LiveInstance>,
}

/// Finds the [`Lookalikes`] of a declared instance. Pure.
pub fn lookalikes<'a>(
    desired: &Desired,
    observed: &'a Observed,
    manifest: &str,
    spec: &InstanceSpec,
) -> Lookalikes<'a> {
    let want = Wanted::of(desired, observed, manifest, spec);
    let names = id_names(observed);
    let mut out = Lookalikes::default();
    for i in &observed.instances {
        if !is_live(i)
            || foreign(&i.tags, desired)
            || i.tags.contains_key(TAG_RESOURCE)
            || i.tags.contains_key("Name")
        {
            continue;
        }
        let groups: BTreeSet<String> = i
            .group_ids
            .iter()
            .map(|id| names.get(id).cloned().unwrap_or_else(|| id.clone()))
            .collect();
        if groups.is_disjoint(&want.groups) {
            continue;
        }
        let profile = i.profile_arn.as_deref().map(profile_name_of_arn);
        if groups == want.groups && profile == Some(want.profile.as_str()) {
            out.full.push(i);
        } else {
            out.partial.push(i);
        }
    }
    out
}

/// What a lookalike is, for the plan: `i-… (groups a,b; profile p; registered in a target group)`.
fn describe_marks(i: &LiveInstance, names: &BTreeMap<String, String>, registered: bool) -> String {
    let groups: Vec<String> = i
        .group_ids
        .iter()
        .map(|id| names.get(id).cloned().unwrap_or_else(|| id.clone()))
        .collect();
    format!(
        "{} (security groups {}; instance profile {}{})",
        i.id,
        groups.join(","),
        i.profile_arn
            .as_deref()
            .map(profile_name_of_arn)
            .unwrap_or("none"),
        if registered {
            "; registered in the stack's target group"
        } else {
            ""
        }
    )
}

/// Which of several live instances is kept: the one registered in a target group (traffic goes
/// to it), else the oldest; ties go to the smaller id so that concurrent runs agree.
pub fn keeper<'a>(
    cands: &[&'a LiveInstance],
    registered: &HashSet<&str>,
) -> Option<&'a LiveInstance> {
    cands.iter().copied().min_by_key(|i| {
        (
            !registered.contains(i.id.as_str()),
            i.launched.clone(),
            i.id.clone(),
        )
    })
}

/// Instance ids registered in any observed target group.
fn registered(observed: &Observed) -> HashSet<&str> {
    observed
        .elb
        .target_groups
        .iter()
        .flat_map(|tg| tg.targets.iter().map(|(id, _)| id.as_str()))
        .collect()
}

/// The live instance that stands for a declared one (the keeper of its candidates).
pub fn chosen<'a>(
    desired: &Desired,
    observed: &'a Observed,
    manifest: &str,
    spec: &InstanceSpec,
) -> Option<&'a LiveInstance> {
    keeper(
        &candidates(desired, observed, manifest, spec),
        &registered(observed),
    )
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
    let registered = registered(observed);
    for (r, spec) in desired.instances() {
        let had_terminated = observed.instances.iter().any(|i| {
            claims(i, &r.id.name, &spec.name)
                && (i.state == "terminated" || i.state == "shutting-down")
        });
        let cands = candidates(desired, observed, &r.id.name, spec);
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
        if cands.is_empty() {
            // Instances that lost their tags but carry its marks: never a second host beside
            // them. More than one, or marks that disagree, need a person to say which.
            let Lookalikes { full, partial } = lookalikes(desired, observed, &r.id.name, spec);
            if !full.is_empty() || !partial.is_empty() {
                let shown: Vec<String> = full
                    .iter()
                    .chain(partial.iter())
                    .map(|i| describe_marks(i, &names, registered.contains(i.id.as_str())))
                    .collect();
                plan.blocked.push(Blocked {
                    id: r.id.clone(),
                    reason: BlockReason::Ambiguous,
                    message: format!(
                        "{}: no instance carries its tags, and {} carry some of its marks without them: {}; nothing is created: tag the one that stands for it with Name={} (or terminate the others)",
                        r.id,
                        shown.len(),
                        shown.join(", "),
                        spec.name
                    ),
                });
                continue;
            }
        }
        let Some(live) = keeper(&cands, &registered) else {
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
        // One live object per declared resource: the others are removed (only our own).
        for extra in cands
            .iter()
            .filter(|i| i.id != live.id && is_owned(&i.tags, desired))
        {
            let why = if registered.contains(live.id.as_str()) {
                "the registered one"
            } else {
                "the oldest"
            };
            plan.steps.push(Step {
                change: Change::new(r.id.clone(), Action::Delete).because(format!(
                    "duplicate: {} also carries this stack's tags; {} ({why}) is kept",
                    extra.id, live.id
                )),
                ops: vec![Op::Instance(InstanceOp::Terminate {
                    id: extra.id.clone(),
                })],
            });
        }
        let mut live_spec = spec.clone();
        live_spec.metadata_options.http_tokens = if live.http_tokens == "optional" {
            HttpTokens::Optional
        } else {
            HttpTokens::Required
        };
        plan.violations
            .extend(crate::policy::check_instance(&r.id.to_string(), &live_spec));
        let want = Wanted::of(desired, observed, &r.id.name, spec);
        let mut drift = compare(&want, live, &names);
        if owned && !drift.replace.is_empty() {
            plan.steps.push(Step {
                change: Change::new(r.id.clone(), Action::Replace)
                    .because(drift.replace.join("; "))
                    .with_fields(drift.fields),
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
        if !owned {
            tracing::info!(instance = %spec.name, id = %live.id, "instance exists without ownership tags: planning to adopt it");
            if !drift
                .ops
                .iter()
                .any(|o| matches!(o, InstanceOp::Tag { .. }))
            {
                drift.ops.insert(
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
        if drift.ops.is_empty() {
            continue;
        }
        let action = if owned { Action::Update } else { Action::Adopt };
        let mut change = Change::new(r.id.clone(), action).with_fields(drift.fields);
        let mut why = Vec::new();
        if drift.resize {
            why.push("the type changes by stop → modify → start; the data stays".to_string());
        }
        if !owned && !live.tags.contains_key("Name") {
            why.push(format!(
                "it lost its tags but carries this one's marks: {}; it is tagged again, never launched twice",
                describe_marks(live, &names, registered.contains(live.id.as_str()))
            ));
        }
        if !drift.replace.is_empty() {
            // Not ours yet: shown, never acted on; once adopted, the next plan replaces it.
            why.push(format!(
                "once adopted it must be replaced: {}",
                drift.replace.join("; ")
            ));
        }
        if !why.is_empty() {
            change = change.because(why.join("; "));
        }
        plan.steps.push(Step {
            change,
            ops: drift.ops.into_iter().map(Op::Instance).collect(),
        });
    }
    // Owned instances of this stack that no declared instance claims (or stands for, having
    // lost its naming tags): no longer declared.
    for i in &observed.instances {
        if is_live(i)
            && is_owned(&i.tags, desired)
            && !desired.instances().any(|(r, s)| {
                claims(i, &r.id.name, &s.name)
                    || chosen(desired, observed, &r.id.name, s).is_some_and(|c| c.id == i.id)
            })
        {
            let name = i
                .tags
                .get(TAG_RESOURCE)
                .or_else(|| i.tags.get("Name"))
                .cloned()
                .unwrap_or_else(|| i.id.clone());
            plan.steps.push(Step {
                change: Change::new(ResourceId::new(Kind::Instance, name), Action::Delete)
                    .because(format!("no longer declared ({})", i.id)),
                ops: vec![Op::Instance(InstanceOp::Terminate { id: i.id.clone() })],
            });
        }
    }
    fresh
}

/// An error when a declared instance's Name is carried only by another stack's instance: it is
/// never adopted or changed.
pub fn check_ownership(desired: &Desired, instances: &[LiveInstance]) -> Result<(), AwsError> {
    for (r, spec) in desired
        .instances()
        .filter(|(r, _)| r.ensure == Ensure::Present)
    {
        let named = || {
            instances.iter().filter(|i| {
                i.tags.get("Name") == Some(&spec.name) && LIVE_STATES.contains(&i.state.as_str())
            })
        };
        if named().any(|i| is_owned(&i.tags, desired)) {
            continue;
        }
        if let Some(i) = named().find(|i| foreign(&i.tags, desired)) {
            let owner = i.tags.get(STACK_TAG).cloned().unwrap_or_default();
            return Err(super::owned_by_another_stack(
                &r.id,
                &format!("instance {} ({})", spec.name, i.id),
                &owner,
            ));
        }
    }
    Ok(())
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
/// adoption candidates); the root volumes of the live ones; and the subnets each subnet Lookup
/// selects. Filtering server-side keeps a steady state at three calls however many instances
/// the region runs.
pub async fn observe_instances(
    client: &aws_sdk_ec2::Client,
    desired: &Desired,
) -> Result<InstancesObserved, AwsError> {
    let instances = async {
        let owned = Filter::builder()
            .name(format!("tag:{STACK_TAG}"))
            .values(&desired.stack_name)
            .build();
        let mut found = describe_instances(client, vec![owned]).await?;
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
                .set_filters(Some(super::lookup::tag_filters(&l.tags)))
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
    let mut volumes: BTreeMap<String, LiveVolume> = BTreeMap::new();
    let mut token = None;
    loop {
        let resp = client
            .describe_volumes()
            .filters(filter.clone())
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| AwsError::call("DescribeVolumes", "root volumes", e))?;
        for v in resp.volumes() {
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
        token = resp.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
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

/// The instances matching the filters, paginated; the root volume holds only its id (see
/// [`read_root_volumes`]).
async fn describe_instances(
    client: &aws_sdk_ec2::Client,
    filters: Vec<Filter>,
) -> Result<Vec<LiveInstance>, AwsError> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let resp = client
            .describe_instances()
            .set_filters(Some(filters.clone()))
            .set_next_token(token)
            .max_results(1000)
            .send()
            .await
            .map_err(|e| AwsError::call("DescribeInstances", "instances", e))?;
        for i in resp.reservations().iter().flat_map(|r| r.instances()) {
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
        InstanceOp::Untag { id, keys } => {
            p.ec2
                .delete_tags()
                .resources(&id)
                .set_tags(Some(
                    keys.iter()
                        .map(|k| aws_sdk_ec2::types::Tag::builder().key(k).build())
                        .collect(),
                ))
                .send()
                .await
                .map_err(|e| AwsError::call("DeleteTags", &res, e))?;
        }
        InstanceOp::Tag { id, name } => {
            let spec = instance_spec(ctx.desired, &name)?;
            p.ec2
                .create_tags()
                .resources(&id)
                .set_tags(Some(ec2_tags(&instance_tags(ctx.desired, &name, spec))))
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
    let mut tags = instance_tags(ctx.desired, name, spec);
    tags.insert(
        TAG_USER_DATA.into(),
        user_data_hash(spec.user_data.as_deref()),
    );
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
            .set_user_data(
                spec.user_data
                    .as_ref()
                    .map(aws_smithy_types::base64::encode),
            )
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AmiSource, MetadataOptions, RootVolume};
    use std::fmt::Debug;

    const SUBNETS: [&str; 2] = ["subnet-a", "subnet-b"];

    fn spec() -> InstanceSpec {
        InstanceSpec {
            name: "obs-host".into(),
            instance_type: "t3.medium".into(),
            ami: AmiSource {
                id: Some("ami-1".into()),
                ssm_parameter: None,
            },
            subnet: "private".into(),
            security_groups: vec!["observability".into()],
            instance_profile: "profile".into(),
            metadata_options: MetadataOptions::default(),
            root_volume: RootVolume::default(),
            user_data: None,
            tags: Tags::new(),
        }
    }

    fn want_tags() -> Tags {
        [
            ("Name", "obs-host"),
            ("stackwarden:resource", "host"),
            ("ManagedBy", "stackwarden"),
            ("stackwarden:stack", "obs"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn wanted<'a>(spec: &'a InstanceSpec, subnets: &'a [String]) -> Wanted<'a> {
        Wanted {
            name: "host",
            spec,
            tags: want_tags(),
            profile: "obs-profile".into(),
            groups: ["obs-sg".to_string()].into_iter().collect(),
            subnets: Some(subnets),
        }
    }

    fn names() -> BTreeMap<String, String> {
        [("sg-obs", "obs-sg"), ("sg-other", "other-sg")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A live instance exactly as `spec()` wants it.
    fn matching() -> LiveInstance {
        let mut tags = want_tags();
        tags.insert(TAG_USER_DATA.into(), user_data_hash(None));
        LiveInstance {
            id: "i-1".into(),
            state: "running".into(),
            instance_type: "t3.medium".into(),
            image_id: "ami-1".into(),
            subnet_id: "subnet-a".into(),
            group_ids: vec!["sg-obs".into()],
            profile_arn: Some("arn:aws:iam::123456789012:instance-profile/obs-profile".into()),
            profile_association: Some("iip-assoc-1".into()),
            http_tokens: "required".into(),
            hop_limit: 2,
            metadata_tags: "enabled".into(),
            http_endpoint: "enabled".into(),
            root_volume: Some(LiveVolume {
                id: "vol-1".into(),
                size_gib: 30,
                volume_type: "gp3".into(),
                encrypted: true,
                device: "/dev/xvda".into(),
                delete_on_termination: true,
            }),
            tags,
            launched: "2026-01-01T00:00:00Z".into(),
        }
    }

    /// A new value for a field, which must differ from the old one (else the case proves nothing).
    fn other<T: PartialEq + Debug>(old: &T, new: T) -> T {
        assert_ne!(old, &new, "a case must change the field");
        new
    }

    /// Everything a drift shows: field paths and replacement reasons.
    fn shown(d: &Drift) -> String {
        let mut out: Vec<String> = d.fields.iter().map(|f| f.path.clone()).collect();
        out.extend(d.replace.iter().cloned());
        out.join(" | ")
    }

    #[test]
    fn a_matching_instance_has_no_drift() {
        let (spec, subnets) = (spec(), SUBNETS.map(String::from));
        let d = compare(&wanted(&spec, &subnets), &matching(), &names());
        assert!(
            d.fields.is_empty() && d.replace.is_empty() && d.ops.is_empty(),
            "{d:?}"
        );
    }

    #[test]
    fn every_field_of_a_live_instance_changed_by_hand_is_detected() {
        let (spec, subnets) = (spec(), SUBNETS.map(String::from));
        let want = wanted(&spec, &subnets);
        let base = matching();
        // Exhaustive on purpose: a field added to LiveInstance does not compile here until it
        // has a case below (or is named as identity).
        let LiveInstance {
            id,
            state,
            instance_type,
            image_id,
            subnet_id,
            group_ids,
            profile_arn,
            profile_association,
            http_tokens,
            hop_limit,
            metadata_tags,
            http_endpoint,
            root_volume,
            tags,
            launched,
        } = base.clone();
        // Identity, not settings: the id names the object, the association id is renewed by
        // every association (the profile's ARN is compared), the launch time orders duplicates.
        let _identity = (id, profile_association, launched);
        let volume = root_volume.clone().expect("a root volume");
        let LiveVolume {
            id: volume_id,
            size_gib,
            volume_type,
            encrypted,
            device,
            delete_on_termination,
        } = volume.clone();
        // The volume's id and device name identify it; they are not settings.
        let _volume_identity = (volume_id, device);
        let with_volume = |v: LiveVolume| other(&root_volume, Some(v));
        let with_tags = |f: &dyn Fn(&mut Tags)| {
            let mut t = tags.clone();
            f(&mut t);
            other(&tags, t)
        };
        let cases: Vec<(&str, LiveInstance)> = vec![
            (
                "state",
                LiveInstance {
                    state: other(&state, "stopped".into()),
                    ..base.clone()
                },
            ),
            (
                "instanceType",
                LiveInstance {
                    instance_type: other(&instance_type, "t3.large".into()),
                    ..base.clone()
                },
            ),
            (
                "pinned AMI changed",
                LiveInstance {
                    image_id: other(&image_id, "ami-2".into()),
                    ..base.clone()
                },
            ),
            (
                "subnet",
                LiveInstance {
                    subnet_id: other(&subnet_id, "subnet-public".into()),
                    ..base.clone()
                },
            ),
            (
                "securityGroups",
                LiveInstance {
                    group_ids: other(&group_ids, vec!["sg-other".into()]),
                    ..base.clone()
                },
            ),
            (
                "securityGroups",
                LiveInstance {
                    group_ids: other(&group_ids, vec!["sg-obs".into(), "sg-other".into()]),
                    ..base.clone()
                },
            ),
            (
                "instanceProfile",
                LiveInstance {
                    profile_arn: other(
                        &profile_arn,
                        Some("arn:aws:iam::123456789012:instance-profile/admin".into()),
                    ),
                    ..base.clone()
                },
            ),
            (
                "instanceProfile",
                LiveInstance {
                    profile_arn: other(&profile_arn, None),
                    ..base.clone()
                },
            ),
            (
                "metadataOptions.httpTokens",
                LiveInstance {
                    http_tokens: other(&http_tokens, "optional".into()),
                    ..base.clone()
                },
            ),
            (
                "metadataOptions.httpPutResponseHopLimit",
                LiveInstance {
                    hop_limit: other(&hop_limit, 1),
                    ..base.clone()
                },
            ),
            (
                "metadataOptions.instanceMetadataTags",
                LiveInstance {
                    metadata_tags: other(&metadata_tags, "disabled".into()),
                    ..base.clone()
                },
            ),
            (
                "metadataOptions.httpEndpoint",
                LiveInstance {
                    http_endpoint: other(&http_endpoint, "disabled".into()),
                    ..base.clone()
                },
            ),
            (
                "rootVolume.sizeGib",
                LiveInstance {
                    root_volume: with_volume(LiveVolume {
                        size_gib: other(&size_gib, 20),
                        ..volume.clone()
                    }),
                    ..base.clone()
                },
            ),
            (
                "cannot shrink",
                LiveInstance {
                    root_volume: with_volume(LiveVolume {
                        size_gib: other(&size_gib, 40),
                        ..volume.clone()
                    }),
                    ..base.clone()
                },
            ),
            (
                "rootVolume.type",
                LiveInstance {
                    root_volume: with_volume(LiveVolume {
                        volume_type: other(&volume_type, "gp2".into()),
                        ..volume.clone()
                    }),
                    ..base.clone()
                },
            ),
            (
                "rootVolume.encrypted",
                LiveInstance {
                    root_volume: with_volume(LiveVolume {
                        encrypted: other(&encrypted, false),
                        ..volume.clone()
                    }),
                    ..base.clone()
                },
            ),
            (
                "rootVolume.deleteOnTermination",
                LiveInstance {
                    root_volume: with_volume(LiveVolume {
                        delete_on_termination: other(&delete_on_termination, false),
                        ..volume.clone()
                    }),
                    ..base.clone()
                },
            ),
            (
                "tags.ManagedBy",
                LiveInstance {
                    tags: with_tags(&|t| {
                        t.remove("ManagedBy");
                    }),
                    ..base.clone()
                },
            ),
            (
                "tags.Name",
                LiveInstance {
                    tags: with_tags(&|t| {
                        t.insert("Name".into(), "renamed".into());
                    }),
                    ..base.clone()
                },
            ),
            (
                "tags.Owner",
                LiveInstance {
                    tags: with_tags(&|t| {
                        t.insert("Owner".into(), "someone".into());
                    }),
                    ..base.clone()
                },
            ),
            (
                "user data changed",
                LiveInstance {
                    tags: with_tags(&|t| {
                        t.insert(TAG_USER_DATA.into(), user_data_hash(Some("echo hi")));
                    }),
                    ..base.clone()
                },
            ),
        ];
        for (expect, live) in cases {
            let d = compare(&want, &live, &names());
            let text = shown(&d);
            assert!(
                text.contains(expect),
                "`{expect}` not seen; plan shows: {text}"
            );
            assert!(
                !d.ops.is_empty() || !d.replace.is_empty(),
                "`{expect}` is seen but nothing would repair it"
            );
        }
    }

    #[test]
    fn a_new_instance_type_is_changed_in_place_never_by_replacement() {
        let (spec, subnets) = (spec(), SUBNETS.map(String::from));
        let live = LiveInstance {
            instance_type: "t3.small".into(),
            ..matching()
        };
        let d = compare(&wanted(&spec, &subnets), &live, &names());
        assert!(d.replace.is_empty(), "{:?}", d.replace);
        assert!(d.resize);
        assert!(matches!(
            d.ops.as_slice(),
            [InstanceOp::Resize { instance_type, .. }] if instance_type == "t3.medium"
        ));
    }

    #[test]
    fn a_stopped_instance_with_a_new_type_is_started_once_by_the_resize() {
        let (spec, subnets) = (spec(), SUBNETS.map(String::from));
        let live = LiveInstance {
            instance_type: "t3.small".into(),
            state: "stopped".into(),
            ..matching()
        };
        let d = compare(&wanted(&spec, &subnets), &live, &names());
        assert!(!d.ops.iter().any(|o| matches!(o, InstanceOp::Start { .. })));
        assert!(d.ops.iter().any(|o| matches!(o, InstanceOp::Resize { .. })));
    }

    #[test]
    fn a_subnet_or_pinned_ami_change_is_a_replacement_with_its_reason() {
        let (spec, subnets) = (spec(), SUBNETS.map(String::from));
        let live = LiveInstance {
            subnet_id: "subnet-z".into(),
            image_id: "ami-0".into(),
            ..matching()
        };
        let d = compare(&wanted(&spec, &subnets), &live, &names());
        assert_eq!(d.replace.len(), 2, "{:?}", d.replace);
        assert!(d.replace[0].contains("ami-0 → ami-1"), "{:?}", d.replace);
        assert!(d.replace[1].contains("subnet-z"), "{:?}", d.replace);
    }

    #[test]
    fn any_subnet_the_lookup_selects_is_the_right_one() {
        let (spec, subnets) = (spec(), SUBNETS.map(String::from));
        let live = LiveInstance {
            subnet_id: "subnet-b".into(),
            ..matching()
        };
        let d = compare(&wanted(&spec, &subnets), &live, &names());
        assert!(d.replace.is_empty() && d.fields.is_empty(), "{d:?}");
    }

    #[test]
    fn a_grown_volume_or_another_type_is_modified_live() {
        let (spec, subnets) = (spec(), SUBNETS.map(String::from));
        let live = LiveInstance {
            root_volume: Some(LiveVolume {
                id: "vol-1".into(),
                size_gib: 20,
                volume_type: "gp2".into(),
                encrypted: true,
                device: "/dev/xvda".into(),
                delete_on_termination: true,
            }),
            ..matching()
        };
        let d = compare(&wanted(&spec, &subnets), &live, &names());
        assert!(d.replace.is_empty());
        assert!(matches!(
            d.ops.as_slice(),
            [InstanceOp::Volume { size_gib: Some(30), volume_type: Some(t), .. }] if t == "gp3"
        ));
    }

    fn at(id: &str, launched: &str) -> LiveInstance {
        LiveInstance {
            id: id.into(),
            launched: launched.into(),
            ..matching()
        }
    }

    #[test]
    fn of_duplicates_the_registered_one_is_kept() {
        let (old, new) = (at("i-b", "2026-01-01"), at("i-a", "2026-01-02"));
        let registered: HashSet<&str> = ["i-a"].into_iter().collect();
        let kept = keeper(&[&old, &new], &registered).map(|i| i.id.as_str());
        assert_eq!(kept, Some("i-a"));
    }

    #[test]
    fn of_unregistered_duplicates_the_oldest_is_kept_and_ties_go_to_the_smaller_id() {
        let (old, new) = (at("i-b", "2026-01-01"), at("i-a", "2026-01-02"));
        let none = HashSet::new();
        assert_eq!(
            keeper(&[&new, &old], &none).map(|i| i.id.as_str()),
            Some("i-b")
        );
        let (x, y) = (at("i-b", "2026-01-01"), at("i-a", "2026-01-01"));
        assert_eq!(keeper(&[&x, &y], &none).map(|i| i.id.as_str()), Some("i-a"));
    }

    #[test]
    fn profile_names_are_read_from_arns_with_paths() {
        assert_eq!(
            profile_name_of_arn("arn:aws:iam::123456789012:instance-profile/a/b/obs"),
            "obs"
        );
        assert_eq!(profile_name_of_arn("obs"), "obs");
    }
}
