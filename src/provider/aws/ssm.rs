//! SSM: the SecureString parameter (its value never printed, logged or planned), the AMI
//! parameter read when launching, and whether SSM sees the instance online.

use super::{ApplyCtx, AwsError, Observed, Op, desired_tags, is_owned, tag_changes};
use crate::model::{Desired, ParameterSpec, SecretSource, Tags};
use crate::plan::{Action, Change, Condition, ConditionStatus, FieldChange};
use crate::provider::{ProviderPlan, Step};
use aws_sdk_ssm::types::{
    InstanceInformationStringFilter, ParameterType, PingStatus, ResourceTypeForTagging, Tag,
};
use std::collections::HashMap;
use std::fmt;

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

/// A parameter as observed.
#[derive(Debug, Clone)]
pub struct LiveParameter {
    /// The decrypted value.
    pub value: Secret,
    /// `SecureString`, `String`, …
    pub kind: String,
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

/// Reads a secret from its source (environment variable or file; a trailing newline trimmed).
pub fn read_secret(source: &SecretSource) -> SecretRead {
    if let Some(var) = &source.env {
        return match std::env::var(var) {
            Ok(v) if !v.is_empty() => SecretRead::Value(Secret(v)),
            _ => SecretRead::Missing(format!("environment variable {var} is unset")),
        };
    }
    if let Some(path) = &source.file {
        return match std::fs::read_to_string(path) {
            Ok(v) => SecretRead::Value(Secret(v.trim_end_matches(['\n', '\r']).to_string())),
            Err(e) => SecretRead::Missing(format!("file {path} cannot be read ({e})")),
        };
    }
    SecretRead::Missing("valueFrom names neither env nor file".to_string())
}

/// Reads a parameter (decrypted); its tags only when its value will be written.
pub async fn observe_parameter(
    client: &aws_sdk_ssm::Client,
    name: &str,
    secret: &SecretRead,
) -> Result<Option<LiveParameter>, AwsError> {
    let res = format!("parameter {name}");
    let out = match client
        .get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
    {
        Ok(o) => o,
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_parameter_not_found()) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(AwsError::call("GetParameter", res, e)),
    };
    let Some(p) = out.parameter() else {
        return Ok(None);
    };
    let mut live = LiveParameter {
        value: Secret(p.value().unwrap_or("").to_string()),
        kind: p
            .r#type()
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        tags: None,
    };
    let differs = match secret {
        SecretRead::Value(v) => *v != live.value || live.kind != "SecureString",
        SecretRead::Missing(_) => false,
    };
    if differs {
        live.tags = Some(list_tags(client, name).await?);
    }
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
            (Some(_), Some(SecretRead::Missing(_)) | None) => plan.conditions.push(Condition {
                id: r.id.clone(),
                kind: "SecretVerified".into(),
                status: ConditionStatus::Unknown,
                reason: "ValueUnverified".into(),
                message: format!("the value is unverified: {}", why_of(secret)),
            }),
            (Some(l), Some(SecretRead::Value(v))) => {
                let mut fields = Vec::new();
                if l.kind != "SecureString" {
                    fields.push(FieldChange::changed("type", &l.kind, "SecureString"));
                }
                if &l.value != v {
                    fields.push(FieldChange::secret("value"));
                }
                if fields.is_empty() {
                    continue;
                }
                let tags = l.tags.clone().unwrap_or_default();
                let owned = is_owned(&tags, desired);
                let mut ops = Vec::new();
                if !owned {
                    tracing::info!(parameter = %spec.name, "parameter exists without ownership tags: planning to adopt it");
                    fields.extend(tag_changes(&desired_tags(desired, &spec.tags), &tags));
                    ops.push(Op::Parameter(ParameterOp::Tag));
                }
                ops.push(Op::Parameter(ParameterOp::Put { overwrite: true }));
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

fn why_of(secret: Option<&SecretRead>) -> String {
    match secret {
        Some(SecretRead::Missing(why)) => why.clone(),
        _ => "the value source was not read".to_string(),
    }
}

fn spec_of<'a>(desired: &'a Desired, change: &Change) -> Result<&'a ParameterSpec, AwsError> {
    desired
        .parameters()
        .find(|(r, _)| r.id == change.id)
        .map(|(_, s)| s)
        .ok_or_else(|| AwsError::invalid(change.id.to_string(), "not declared"))
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
    let spec = spec_of(ctx.desired, change)?;
    let res = format!("{} ({})", change.id, spec.name);
    let tags = desired_tags(ctx.desired, &spec.tags);
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
                .overwrite(overwrite);
            if !spec.description.is_empty() {
                req = req.description(&spec.description);
            }
            // Tags may only accompany a create (with Overwrite the API refuses them).
            if !overwrite {
                req = req.set_tags(Some(ssm_tags(&tags)?));
            }
            req.send()
                .await
                .map_err(|e| AwsError::call("PutParameter", res, e))?;
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
