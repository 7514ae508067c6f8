//! The instance's pure comparison: which live instance stands for a declared one (its tags,
//! else its marks), how it differs field by field, and what that plans. No I/O; the table
//! tests below name every field of [`LiveInstance`].

use super::live::LiveInstance;
use super::{InstanceOp, LIVE_STATES, TAG_RESOURCE, TAG_USER_DATA};
use crate::model::ownership::{ENV_TAG, STACK_TAG};
use crate::model::{Desired, Ensure, HttpTokens, InstanceSpec, Kind, ResourceId, Tags};
use crate::plan::{Action, BlockReason, Blocked, Change, Condition, ConditionStatus, FieldChange};
use crate::provider::aws::ec2::id_names;
use crate::provider::aws::{
    AwsError, Observed, Op, SsmReach, check_owner, desired_tags, foreign_owner, group_name_of,
    is_owned, lookup, tag_drift,
};
use crate::provider::{ProviderPlan, Step};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// The hex SHA-256 of user data (empty string when none).
pub fn user_data_hash(user_data: Option<&str>) -> String {
    hex::encode(Sha256::digest(user_data.unwrap_or("").as_bytes()))
}

/// The profile name at the end of an instance-profile ARN (`…:instance-profile/path/name`).
pub fn profile_name_of_arn(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// The desired tags of an instance: Name, ownership, the manifest it stands for, its own.
pub(super) fn instance_tags(desired: &Desired, manifest: &str, spec: &InstanceSpec) -> Tags {
    let id = crate::model::ResourceId::new(crate::model::Kind::Instance, manifest);
    let mut tags = desired_tags(desired, &id, &spec.tags);
    tags.insert("Name".into(), spec.name.clone());
    tags.insert(TAG_RESOURCE.into(), manifest.to_string());
    tags
}

/// Whether a live instance stands for the declared one: its resource tag names it, or, with no
/// resource tag (adoption candidates, instances launched before the tag), its Name matches.
///
/// One written before the environment was part of a stack's identity (a stack tag, no
/// environment tag) carries the same resource tag in every environment: only its Name, which
/// embeds the environment, says whose it is, so both must match.
pub(super) fn claims(i: &LiveInstance, manifest: &str, spec_name: &str) -> bool {
    let named = i.tags.get("Name").map(String::as_str) == Some(spec_name);
    let legacy = i.tags.contains_key(STACK_TAG) && !i.tags.contains_key(ENV_TAG);
    match i.tags.get(TAG_RESOURCE) {
        Some(r) if legacy => r == manifest && named,
        Some(r) => r == manifest,
        None => named,
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
    /// The user data it launches with (its own, or its bootstrap rendered).
    pub user_data: Option<String>,
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
            user_data: crate::bootstrap::user_data(desired, spec),
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
        && have != &user_data_hash(want.user_data.as_deref())
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
    // The user-data hash is stackwarden's launch record, compared on its own above.
    let mut live_tags = live.tags.clone();
    live_tags.remove(TAG_USER_DATA);
    let tags = tag_drift(&want.tags, &live_tags);
    if !tags.put.is_empty() {
        d.fields.extend(tags.put);
        d.ops.push(InstanceOp::Tag {
            id: live.id.clone(),
            name: name.clone(),
        });
    }
    if !tags.extra.is_empty() {
        d.fields.extend(tags.removed);
        d.ops.push(InstanceOp::Untag {
            id: live.id.clone(),
            keys: tags.extra,
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
pub fn is_live(i: &LiveInstance) -> bool {
    LIVE_STATES.contains(&i.state.as_str())
}

/// The stack tag names another stack.
fn foreign(tags: &Tags, desired: &Desired) -> bool {
    foreign_owner(tags, desired).is_some()
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
        // Shown whether or not an instance runs: a create or a replacement is exactly when a
        // missing artifact would bite.
        if let Some(c) = bootstrap_condition(desired, observed, &r.id, spec) {
            plan.conditions.push(c);
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
            check_owner(
                || format!("{} (instance {} ({}))", r.id, spec.name, i.id),
                &i.tags,
                desired,
            )?;
        }
    }
    Ok(())
}

/// Whether a new instance could bootstrap: the artifact its user data pins is in the bucket.
/// A missing one would leave a replacement (or the stack's next `up`) with Docker only.
fn bootstrap_condition(
    desired: &Desired,
    observed: &Observed,
    id: &ResourceId,
    spec: &InstanceSpec,
) -> Option<Condition> {
    let b = spec.bootstrap.as_ref()?;
    if b.artifact == crate::model::ArtifactKind::None {
        return None;
    }
    let url = crate::bootstrap::artifact_url(desired, b);
    let (status, reason, message) = match observed.artifacts.get(&url) {
        Some(Ok(true)) => (
            ConditionStatus::True,
            "ArtifactPresent",
            format!("the pinned artifact is at {url}"),
        ),
        Some(Ok(false)) => (
            ConditionStatus::False,
            "ArtifactMissing",
            format!(
                "the pinned artifact is not at {url}: a new instance would start nothing (publish it with `stackwarden publish --artifact FILE`)"
            ),
        ),
        Some(Err(why)) => (
            ConditionStatus::Unknown,
            "ArtifactUnknown",
            format!("whether the pinned artifact is at {url} cannot be told: {why}"),
        ),
        None => (
            ConditionStatus::Unknown,
            "ArtifactUnknown",
            "the pinned artifact was not looked for".to_string(),
        ),
    };
    Some(Condition {
        id: id.clone(),
        kind: "Bootstrap".into(),
        status,
        reason: reason.into(),
        message,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AmiSource, MetadataOptions, RootVolume};
    use crate::provider::aws::ec2::instance::live::LiveVolume;
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
            bootstrap: None,
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
            user_data: spec.user_data.clone(),
        }
    }

    fn names() -> BTreeMap<String, String> {
        [("sg-obs", "obs-sg"), ("sg-other", "other-sg")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A live instance exactly as `spec()` wants it.
    #[test]
    fn an_instance_from_before_the_env_tag_claims_a_declared_one_only_by_its_env_specific_name() {
        let tagged = |pairs: &[(&str, &str)]| {
            let mut i = matching();
            i.tags = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            i
        };
        let staging_legacy = tagged(&[
            (STACK_TAG, "obs"),
            (TAG_RESOURCE, "host"),
            ("Name", "p-staging-obs"),
        ]);
        // Prod's declared instance has the same manifest name but its own Name.
        assert!(!claims(&staging_legacy, "host", "p-prod-obs"));
        assert!(claims(&staging_legacy, "host", "p-staging-obs"));
        // With the env tag, the resource tag says it (whose env it is, ownership decides).
        let prod = tagged(&[
            (STACK_TAG, "obs"),
            (ENV_TAG, "prod"),
            (TAG_RESOURCE, "host"),
            ("Name", "renamed-by-hand"),
        ]);
        assert!(claims(&prod, "host", "p-prod-obs"));
    }

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
