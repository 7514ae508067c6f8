//! SSM: the SecureString parameter (its value never printed, logged or planned), the AMI
//! parameter read when launching, and whether SSM sees the instance online.

use super::{
    ApplyCtx, AwsError, Observed, Op, check_owner, declared, desired_tags, is_owned, tag_changes,
};
use crate::model::{Desired, Kind, ParameterSpec, SecretSource, Tags};
use crate::plan::{Action, Change, Condition, ConditionStatus, FieldChange};
use crate::provider::{ProviderPlan, Step};
use aws_sdk_ssm::types::{
    InstanceInformationStringFilter, ParameterType, PingStatus, ResourceTypeForTagging, Tag,
};
use std::collections::HashMap;
use std::fmt;

/// A SecureString parameter's value, decrypted. The error names the parameter and what SSM
/// said, never a value.
pub async fn read_value(client: &aws_sdk_ssm::Client, name: &str) -> Result<String, String> {
    let out = client
        .get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
        .map_err(|e| AwsError::call("GetParameter", format!("parameter {name}"), e).to_string())?;
    out.parameter()
        .and_then(|p| p.value())
        .filter(|v| !v.trim().is_empty())
        .map(str::to_string)
        .ok_or_else(|| format!("SSM parameter {name} holds no value"))
}

/// A secret value: compared, sent to SSM, never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The desired value of a parameter, as read from its source.
#[derive(Debug, Clone, PartialEq)]
pub enum SecretRead {
    /// The value.
    Value(Secret),
    /// Not available; says which variable or file, never a value.
    Missing(String),
}

/// The KMS key SSM uses for a SecureString when none is named.
const DEFAULT_KEY: &str = "alias/aws/ssm";
/// The tier a parameter gets unless someone asks for another.
const DEFAULT_TIER: &str = "Standard";
/// The data type a parameter gets unless someone asks for another.
const DEFAULT_DATA_TYPE: &str = "text";
/// GetParameterHistory's largest page.
const HISTORY_PAGE: i32 = 50;

/// A parameter as observed: its current version, completely (one GetParameterHistory call
/// tells the value and every setting a person can change).
#[derive(Debug, Clone)]
pub struct LiveParameter {
    /// The decrypted value.
    pub value: Secret,
    /// `SecureString`, `String`, …
    pub kind: String,
    /// Description.
    pub description: String,
    /// The KMS key (`alias/aws/ssm` by default).
    pub key_id: String,
    /// `Standard`, `Advanced`, `Intelligent-Tiering`.
    pub tier: String,
    /// `text`, `aws:ec2:image`, …
    pub data_type: String,
    /// A regular expression values must match ("" when none).
    pub allowed_pattern: String,
    /// Parameter policies (expiry, notifications), as JSON texts.
    pub policies: Vec<String>,
    /// Labels on the current version.
    pub labels: Vec<String>,
    /// Tags, read only when the parameter is about to be written (saves a call per cycle).
    pub tags: Option<Tags>,
}

/// Whether SSM sees an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SsmReach {
    /// Online.
    Online,
    /// Known to SSM but not online (the ping status), or unknown to SSM.
    Offline(String),
    /// The API could not tell (why).
    Unknown(String),
}

/// Parameter writes.
#[derive(Debug, PartialEq, Eq)]
pub enum ParameterOp {
    /// PutParameter (with tags when creating).
    Put {
        /// Replace an existing value.
        overwrite: bool,
    },
    /// AddTagsToResource.
    Tag,
}

/// Reads a secret from its source, as every secret is read ([`crate::manifest::secret`]).
pub fn read_secret(source: &SecretSource) -> SecretRead {
    match crate::manifest::secret::read(source) {
        Ok(v) => SecretRead::Value(Secret(v)),
        Err(e) => SecretRead::Missing(e.to_string()),
    }
}

/// Reads a parameter (decrypted) and its tags.
pub async fn observe_parameter(
    client: &aws_sdk_ssm::Client,
    name: &str,
) -> Result<Option<LiveParameter>, AwsError> {
    let res = format!("parameter {name}");
    // The history is oldest first: the current version is the last entry of the last page.
    let mut current = None;
    let mut pages = client
        .get_parameter_history()
        .name(name)
        .with_decryption(true)
        .max_results(HISTORY_PAGE)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let out = match page {
            Ok(o) => o,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_parameter_not_found()) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(AwsError::call("GetParameterHistory", res, e)),
        };
        if let Some(p) = out.parameters().last() {
            current = Some(p.clone());
        }
    }
    let Some(p) = current else {
        return Ok(None);
    };
    let mut live = LiveParameter {
        value: Secret(p.value().unwrap_or("").to_string()),
        kind: p
            .r#type()
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        description: p.description().unwrap_or("").to_string(),
        key_id: p.key_id().unwrap_or("").to_string(),
        tier: p.tier().map(|t| t.as_str().to_string()).unwrap_or_default(),
        data_type: p.data_type().unwrap_or("").to_string(),
        allowed_pattern: p.allowed_pattern().unwrap_or("").to_string(),
        policies: p
            .policies()
            .iter()
            .filter_map(|x| x.policy_text().map(str::to_string))
            .collect(),
        labels: p.labels().to_vec(),
        tags: None,
    };
    // Read every time, not only before a write: a tag removed by hand (ownership, the spec
    // hash) is drift of its own, repaired by tagging again. One call per plan.
    live.tags = Some(list_tags(client, name).await?);
    Ok(Some(live))
}

async fn list_tags(client: &aws_sdk_ssm::Client, name: &str) -> Result<Tags, AwsError> {
    let out = client
        .list_tags_for_resource()
        .resource_type(ResourceTypeForTagging::Parameter)
        .resource_id(name)
        .send()
        .await
        .map_err(|e| AwsError::call("ListTagsForResource", format!("parameter {name}"), e))?;
    Ok(out
        .tag_list()
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect())
}

/// Whether SSM sees each instance online. One attempt, no retries: where the API is not
/// available (moto answers 500) retrying only costs time, and the answer is only a condition.
pub async fn reachability(
    client: &aws_sdk_ssm::Client,
    ids: &[String],
) -> HashMap<String, SsmReach> {
    let no_retry = aws_sdk_ssm::config::Builder::default()
        .retry_config(aws_smithy_types::retry::RetryConfig::disabled());
    let filter = match InstanceInformationStringFilter::builder()
        .key("InstanceIds")
        .set_values(Some(ids.to_vec()))
        .build()
    {
        Ok(f) => f,
        Err(e) => {
            let why = format!("building the request: {e}");
            return ids
                .iter()
                .map(|id| (id.clone(), SsmReach::Unknown(why.clone())))
                .collect();
        }
    };
    let result = client
        .describe_instance_information()
        .filters(filter)
        .customize()
        .config_override(no_retry)
        .send()
        .await;
    match result {
        Ok(out) => {
            let seen: HashMap<&str, &PingStatus> = out
                .instance_information_list()
                .iter()
                .filter_map(|i| Some((i.instance_id()?, i.ping_status()?)))
                .collect();
            ids.iter()
                .map(|id| {
                    let reach = match seen.get(id.as_str()) {
                        Some(PingStatus::Online) => SsmReach::Online,
                        Some(s) => SsmReach::Offline(s.as_str().to_string()),
                        None => SsmReach::Offline("not registered with SSM".to_string()),
                    };
                    (id.clone(), reach)
                })
                .collect()
        }
        Err(e) => {
            let why = AwsError::call("DescribeInstanceInformation", "instances", e).to_string();
            ids.iter()
                .map(|id| (id.clone(), SsmReach::Unknown(why.clone())))
                .collect()
        }
    }
}

/// The AMI id an SSM parameter names (read only when launching).
pub async fn ami_from_parameter(
    client: &aws_sdk_ssm::Client,
    name: &str,
) -> Result<String, AwsError> {
    let out = client
        .get_parameter()
        .name(name)
        .send()
        .await
        .map_err(|e| AwsError::call("GetParameter", format!("AMI parameter {name}"), e))?;
    out.parameter()
        .and_then(|p| p.value())
        .map(str::to_string)
        .ok_or_else(|| AwsError::invalid(format!("AMI parameter {name}"), "has no value"))
}

/// The settings of a live parameter that differ from the declared ones (the value aside).
/// Every field of the live type is named here, so a field added to it does not compile
/// until it is compared.
pub fn settings_differ(description: &str, live: &LiveParameter) -> Vec<FieldChange> {
    let LiveParameter {
        // Compared against the secret by the caller, never shown.
        value: _,
        kind,
        description: live_description,
        key_id,
        tier,
        data_type,
        allowed_pattern,
        policies,
        labels,
        // Read only before a write; ownership is checked then.
        tags: _,
    } = live;
    let mut out = Vec::new();
    let mut check = |path: &str, have: &str, want: &str| {
        if have != want {
            out.push(FieldChange::changed(path, shown(have), shown(want)));
        }
    };
    check("type", kind, "SecureString");
    check("description", live_description, description);
    check("keyId", key_id, DEFAULT_KEY);
    check("tier", tier, DEFAULT_TIER);
    check("dataType", data_type, DEFAULT_DATA_TYPE);
    check("allowedPattern", allowed_pattern, "");
    for p in policies {
        out.push(FieldChange::removed("policies", p));
    }
    for l in labels {
        out.push(FieldChange::removed("labels", l));
    }
    out
}

fn shown(v: &str) -> &str {
    if v.is_empty() { "(none)" } else { v }
}

/// Fails when a declared parameter is tagged for another stack (its tags are read before
/// any write).
pub fn check_owners(desired: &Desired, observed: &Observed) -> Result<(), AwsError> {
    for (r, spec) in desired.parameters() {
        if let Some(Some(LiveParameter { tags: Some(t), .. })) = observed.parameters.get(&r.id.name)
        {
            check_owner(|| format!("{} (parameter {})", r.id, spec.name), t, desired)?;
        }
    }
    Ok(())
}

/// Plans parameters: create, adopt, overwrite. Never deletes (base resource).
pub fn diff(desired: &Desired, observed: &Observed, plan: &mut ProviderPlan<Op>) {
    for (r, spec) in desired.parameters() {
        let Some(live) = observed.parameters.get(&r.id.name) else {
            continue;
        };
        let secret = observed.secrets.get(&r.id.name);
        match (live, secret) {
            (None, _) => plan.steps.push(Step {
                change: Change::new(r.id.clone(), Action::Create),
                ops: vec![Op::Parameter(ParameterOp::Put { overwrite: false })],
            }),
            (Some(l), Some(SecretRead::Missing(_)) | None) => {
                plan.conditions.push(Condition {
                    id: r.id.clone(),
                    kind: "SecretVerified".into(),
                    status: ConditionStatus::Unknown,
                    reason: "ValueUnverified".into(),
                    message: format!("the value is unverified: {}", why_of(secret)),
                });
                // Settings are seen even so; writing them needs the value, so apply says
                // which variable is missing. Tags need no value.
                let mut fields = settings_differ(&spec.description, l);
                let mut ops = Vec::new();
                if !fields.is_empty() {
                    ops.push(Op::Parameter(ParameterOp::Put { overwrite: true }));
                }
                let tags = l.tags.clone().unwrap_or_default();
                let tag_fields = tags_to_put_back(desired, &r.id, spec, &tags);
                if !tag_fields.is_empty() {
                    fields.extend(tag_fields);
                    ops.insert(0, Op::Parameter(ParameterOp::Tag));
                }
                if !ops.is_empty() {
                    let action = if is_owned(&tags, desired) {
                        Action::Update
                    } else {
                        Action::Adopt
                    };
                    plan.steps.push(Step {
                        change: Change::new(r.id.clone(), action).with_fields(fields),
                        ops,
                    });
                }
            }
            (Some(l), Some(SecretRead::Value(v))) => {
                let mut fields = settings_differ(&spec.description, l);
                if &l.value != v {
                    fields.push(FieldChange::secret("value"));
                }
                let write_value = !fields.is_empty();
                let tags = l.tags.clone().unwrap_or_default();
                let tag_fields = tags_to_put_back(desired, &r.id, spec, &tags);
                if !write_value && tag_fields.is_empty() {
                    continue;
                }
                let owned = is_owned(&tags, desired);
                let mut ops = Vec::new();
                if !owned {
                    tracing::info!(parameter = %spec.name, "parameter exists without ownership tags: planning to adopt it");
                }
                if !tag_fields.is_empty() {
                    fields.extend(tag_fields);
                    ops.push(Op::Parameter(ParameterOp::Tag));
                }
                if write_value {
                    ops.push(Op::Parameter(ParameterOp::Put { overwrite: true }));
                }
                plan.steps.push(Step {
                    change: Change::new(
                        r.id.clone(),
                        if owned { Action::Update } else { Action::Adopt },
                    )
                    .with_fields(fields),
                    ops,
                });
            }
        }
    }
}

/// The tags to put back. A spec hash that is there but older is only a record of the last
/// write (the manifest changed in a way the parameter's live fields already match): it is
/// brought up to date with the next write, never a change of its own; one removed by hand is.
fn tags_to_put_back(
    desired: &Desired,
    id: &crate::model::ResourceId,
    spec: &ParameterSpec,
    live: &crate::model::Tags,
) -> Vec<FieldChange> {
    let mut fields = tag_changes(&desired_tags(desired, id, &spec.tags), live);
    let others = fields
        .iter()
        .any(|f| f.path != format!("tags.{}", crate::model::ownership::SPEC_HASH_TAG));
    if !others {
        fields.retain(|f| f.old.is_none());
    }
    fields
}

fn why_of(secret: Option<&SecretRead>) -> String {
    match secret {
        Some(SecretRead::Missing(why)) => why.clone(),
        _ => "the value source was not read".to_string(),
    }
}

fn ssm_tags(tags: &Tags) -> Result<Vec<Tag>, AwsError> {
    tags.iter()
        .map(|(k, v)| {
            Tag::builder()
                .key(k)
                .value(v)
                .build()
                .map_err(|e| AwsError::invalid("parameter tags", e.to_string()))
        })
        .collect()
}

/// Applies one parameter op.
pub async fn apply(
    client: &aws_sdk_ssm::Client,
    ctx: &ApplyCtx<'_>,
    change: &Change,
    op: ParameterOp,
) -> Result<(), AwsError> {
    let spec = declared(ctx.desired.parameters(), Kind::Parameter, &change.id.name)?;
    let res = format!("{} ({})", change.id, spec.name);
    let tags = desired_tags(ctx.desired, &change.id, &spec.tags);
    match op {
        ParameterOp::Put { overwrite } => {
            let value = match ctx.observed.secrets.get(&change.id.name) {
                Some(SecretRead::Value(v)) => v.clone(),
                Some(SecretRead::Missing(why)) => {
                    return Err(AwsError::invalid(
                        res,
                        format!("cannot set the value: {why}"),
                    ));
                }
                None => return Err(AwsError::invalid(res, "the value source was not read")),
            };
            let mut req = client
                .put_parameter()
                .name(&spec.name)
                .value(value.expose())
                .r#type(ParameterType::SecureString)
                .overwrite(overwrite)
                .description(&spec.description)
                .data_type(DEFAULT_DATA_TYPE)
                .tier(aws_sdk_ssm::types::ParameterTier::Standard);
            // Tags may only accompany a create (with Overwrite the API refuses them).
            if !overwrite {
                req = req.set_tags(Some(ssm_tags(&tags)?));
            }
            // Only an overwrite can carry settings someone changed by hand: clear them.
            if overwrite && let Some(Some(l)) = ctx.observed.parameters.get(&change.id.name) {
                if l.key_id != DEFAULT_KEY {
                    req = req.key_id(DEFAULT_KEY);
                }
                if !l.allowed_pattern.is_empty() {
                    req = req.allowed_pattern("");
                }
                if !l.policies.is_empty() {
                    req = req.policies("[]");
                }
            }
            match req.send().await {
                Ok(_) => {}
                // A concurrent apply created it first: the next pass compares its value (and
                // reads its tags before any write).
                Err(e)
                    if !overwrite
                        && e.as_service_error()
                            .is_some_and(|s| s.is_parameter_already_exists()) => {}
                Err(e) => return Err(AwsError::call("PutParameter", res, e)),
            }
        }
        ParameterOp::Tag => {
            tracing::info!(resource = %res, "tagging parameter with ownership tags");
            client
                .add_tags_to_resource()
                .resource_type(ResourceTypeForTagging::Parameter)
                .resource_id(&spec.name)
                .set_tags(Some(ssm_tags(&tags)?))
                .send()
                .await
                .map_err(|e| AwsError::call("AddTagsToResource", res, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The struct literal names every field: a new one does not compile until it is given
    /// here, and then it needs a row in the table below.
    fn live() -> LiveParameter {
        LiveParameter {
            value: Secret::new("v"),
            kind: "SecureString".into(),
            description: "d".into(),
            key_id: DEFAULT_KEY.into(),
            tier: DEFAULT_TIER.into(),
            data_type: DEFAULT_DATA_TYPE.into(),
            allowed_pattern: String::new(),
            policies: vec![],
            labels: vec![],
            tags: None,
        }
    }

    #[test]
    fn every_parameter_setting_changed_by_hand_is_seen() {
        type Edit = fn(&mut LiveParameter);
        let seen: Vec<(&str, Edit)> = vec![
            ("kind", |l| l.kind = "String".into()),
            ("description", |l| l.description = "changed".into()),
            ("key_id", |l| l.key_id = "alias/other".into()),
            ("tier", |l| l.tier = "Advanced".into()),
            ("data_type", |l| l.data_type = "aws:ec2:image".into()),
            ("allowed_pattern", |l| l.allowed_pattern = ".*".into()),
            ("policies", |l| l.policies.push("{}".into())),
            ("labels", |l| l.labels.push("hand".into())),
        ];
        // The value is compared (never shown) by `diff`; tags with ownership before a write.
        let not_here = ["value", "tags"];
        let LiveParameter {
            value: _,
            kind: _,
            description: _,
            key_id: _,
            tier: _,
            data_type: _,
            allowed_pattern: _,
            policies: _,
            labels: _,
            tags: _,
        } = live();
        let fields = [
            "value",
            "kind",
            "description",
            "key_id",
            "tier",
            "data_type",
            "allowed_pattern",
            "policies",
            "labels",
            "tags",
        ];
        for f in fields {
            assert!(
                not_here.contains(&f) || seen.iter().any(|(n, _)| *n == f),
                "field {f} has no case"
            );
        }
        assert!(settings_differ("d", &live()).is_empty());
        for (field, edit) in seen {
            let mut l = live();
            edit(&mut l);
            assert!(
                !settings_differ("d", &l).is_empty(),
                "a changed {field} is not seen"
            );
        }
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let s = SecretRead::Value(Secret::new("hunter2"));
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn a_missing_variable_is_named_in_the_reason() {
        let src = SecretSource {
            env: Some("STACKWARDEN_TEST_SURELY_UNSET_VARIABLE".into()),
            file: None,
        };
        assert_eq!(
            read_secret(&src),
            SecretRead::Missing(
                "environment variable STACKWARDEN_TEST_SURELY_UNSET_VARIABLE is unset".into()
            )
        );
    }
}
