//! IAM, read only: the role behind each instanceProfile Lookup, with its attached and inline
//! policies, checked for least privilege (S3 only on the stack's bucket, no administrator
//! access, only the policies the manifest lists). Nothing here writes to IAM.
//!
//! Cost: the profile's role is cached like the other lookups, and managed policy documents
//! by (ARN, version), so a steady pass makes three calls: ListAttachedRolePolicies,
//! ListRolePolicies and one ListPolicies (OnlyAttached) that tells every attached policy's
//! current version at once. An inline policy costs one GetRolePolicy each (none in the
//! shipped stack): inline documents have no version to cache by.

use super::{AwsError, LOOKUP_TTL};
use crate::plan::Violation;
use futures_util::future::join_all;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// The AWS-managed policy that grants everything.
const ADMINISTRATOR_ACCESS: &str = "AdministratorAccess";
/// ListPolicies page size: the API's maximum, so one call covers an ordinary account.
const POLICIES_PER_PAGE: i32 = 1000;

/// One policy on the role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LivePolicy {
    /// Policy name (managed) or inline policy name.
    pub name: String,
    /// The managed policy's ARN; `None` for an inline policy.
    pub arn: Option<String>,
    /// The policy document (JSON), decoded.
    pub document: String,
}

/// The role behind an instance profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveRole {
    /// Role name.
    pub name: String,
    /// Attached and inline policies.
    pub policies: Vec<LivePolicy>,
}

/// What IAM reads are kept across passes.
#[derive(Debug, Default)]
pub struct Cache {
    /// Role name by instance profile name, with when it was read (`None`: no role).
    roles: HashMap<String, (Instant, Option<String>)>,
    /// Managed policy documents by (ARN, version id): a version's document never changes.
    documents: HashMap<(String, String), String>,
}

fn lock(cache: &Mutex<Cache>) -> std::sync::MutexGuard<'_, Cache> {
    cache.lock().unwrap_or_else(|e| e.into_inner())
}

fn not_found<E: aws_smithy_types::error::metadata::ProvideErrorMetadata>(e: &E) -> bool {
    e.code() == Some("NoSuchEntity")
}

/// The role of an instance profile (cached for [`LOOKUP_TTL`]); `None` when the profile does
/// not exist or has no role.
async fn role_of(
    client: &aws_sdk_iam::Client,
    cache: &Mutex<Cache>,
    profile: &str,
) -> Result<Option<String>, AwsError> {
    if let Some((at, role)) = lock(cache).roles.get(profile)
        && at.elapsed() < LOOKUP_TTL
    {
        return Ok(role.clone());
    }
    let role = match client
        .get_instance_profile()
        .instance_profile_name(profile)
        .send()
        .await
    {
        Ok(out) => out
            .instance_profile()
            .and_then(|p| p.roles().first())
            .map(|r| r.role_name().to_string()),
        Err(e) if not_found(&e) => None,
        Err(e) => {
            return Err(AwsError::call(
                "GetInstanceProfile",
                format!("instance profile {profile}"),
                e,
            ));
        }
    };
    lock(cache)
        .roles
        .insert(profile.to_string(), (Instant::now(), role.clone()));
    Ok(role)
}

/// Reads the role of `profile` and its policies. `None` when there is no such profile or role.
pub async fn observe(
    client: &aws_sdk_iam::Client,
    cache: &Mutex<Cache>,
    profile: &str,
) -> Result<Option<LiveRole>, AwsError> {
    let Some(role) = role_of(client, cache, profile).await? else {
        return Ok(None);
    };
    let res = format!("role {role}");
    let (attached, inline) = tokio::join!(
        client
            .list_attached_role_policies()
            .role_name(&role)
            .max_items(POLICIES_PER_PAGE)
            .send(),
        client
            .list_role_policies()
            .role_name(&role)
            .max_items(POLICIES_PER_PAGE)
            .send(),
    );
    let attached = match attached {
        Ok(a) => a,
        Err(e) if not_found(&e) => {
            // The profile's role was replaced or deleted: read the profile again next time.
            lock(cache).roles.remove(profile);
            return Ok(None);
        }
        Err(e) => return Err(AwsError::call("ListAttachedRolePolicies", &res, e)),
    };
    let inline = inline.map_err(|e| AwsError::call("ListRolePolicies", &res, e))?;
    let attached: Vec<(String, String)> = attached
        .attached_policies()
        .iter()
        .filter_map(|p| Some((p.policy_name()?.to_string(), p.policy_arn()?.to_string())))
        .collect();
    let mut versions: HashMap<String, String> = HashMap::new();
    if !attached.is_empty() {
        let out = client
            .list_policies()
            .only_attached(true)
            .max_items(POLICIES_PER_PAGE)
            .send()
            .await
            .map_err(|e| AwsError::call("ListPolicies", "attached policies", e))?;
        for p in out.policies() {
            if let (Some(arn), Some(v)) = (p.arn(), p.default_version_id()) {
                versions.insert(arn.to_string(), v.to_string());
            }
        }
    }
    let managed = join_all(attached.into_iter().map(|(name, arn)| {
        let version = versions.get(&arn).cloned();
        async move {
            let doc = managed_document(client, cache, &arn, version).await?;
            Ok::<_, AwsError>(LivePolicy {
                name,
                arn: Some(arn),
                document: doc,
            })
        }
    }));
    let inline_docs = join_all(inline.policy_names().iter().map(|name| {
        let res = &res;
        let role = &role;
        async move {
            let out = client
                .get_role_policy()
                .role_name(role)
                .policy_name(name)
                .send()
                .await
                .map_err(|e| AwsError::call("GetRolePolicy", format!("{res} policy {name}"), e))?;
            Ok::<_, AwsError>(LivePolicy {
                name: name.clone(),
                arn: None,
                document: decode_document(out.policy_document()),
            })
        }
    }));
    let (managed, inline_docs) = tokio::join!(managed, inline_docs);
    let mut policies = Vec::new();
    for p in managed.into_iter().chain(inline_docs) {
        policies.push(p?);
    }
    Ok(Some(LiveRole {
        name: role,
        policies,
    }))
}

/// A managed policy's current document, read once per version.
async fn managed_document(
    client: &aws_sdk_iam::Client,
    cache: &Mutex<Cache>,
    arn: &str,
    version: Option<String>,
) -> Result<String, AwsError> {
    let res = format!("policy {arn}");
    let version = match version {
        Some(v) => v,
        None => client
            .get_policy()
            .policy_arn(arn)
            .send()
            .await
            .map_err(|e| AwsError::call("GetPolicy", &res, e))?
            .policy()
            .and_then(|p| p.default_version_id())
            .map(str::to_string)
            .ok_or_else(|| AwsError::invalid(&res, "GetPolicy returned no default version"))?,
    };
    let key = (arn.to_string(), version.clone());
    if let Some(doc) = lock(cache).documents.get(&key) {
        return Ok(doc.clone());
    }
    let out = client
        .get_policy_version()
        .policy_arn(arn)
        .version_id(&version)
        .send()
        .await
        .map_err(|e| AwsError::call("GetPolicyVersion", &res, e))?;
    let doc = decode_document(
        out.policy_version()
            .and_then(|v| v.document())
            .unwrap_or(""),
    );
    lock(cache).documents.insert(key, doc.clone());
    Ok(doc)
}

/// IAM returns policy documents URL-encoded (RFC 3986); some servers send them plain.
pub fn decode_document(raw: &str) -> String {
    if raw.trim_start().starts_with('{') {
        return raw.to_string();
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                        i += 3;
                    }
                    _ => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Checks (pure)

/// One statement of a policy document, as much as the checks need.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Statement {
    /// `Sid`, or `Statement[i]` when there is none.
    label: String,
    allow: bool,
    actions: Vec<String>,
    not_action: bool,
    resources: Vec<String>,
    not_resource: bool,
}

fn strings(v: Option<&serde_json::Value>) -> Vec<String> {
    match v {
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

fn statements(document: &str) -> Result<Vec<Statement>, String> {
    let v: serde_json::Value =
        serde_json::from_str(document).map_err(|e| format!("not valid JSON: {e}"))?;
    let list = match v.get("Statement") {
        Some(serde_json::Value::Array(a)) => a.clone(),
        Some(o @ serde_json::Value::Object(_)) => vec![o.clone()],
        _ => return Err("has no Statement".to_string()),
    };
    Ok(list
        .iter()
        .enumerate()
        .map(|(i, s)| Statement {
            label: s
                .get("Sid")
                .and_then(|x| x.as_str())
                .filter(|x| !x.is_empty())
                .map(str::to_string)
                .unwrap_or_else(|| format!("Statement[{i}]")),
            allow: s.get("Effect").and_then(|x| x.as_str()) == Some("Allow"),
            not_action: s.get("NotAction").is_some(),
            actions: strings(s.get("Action").or(s.get("NotAction"))),
            not_resource: s.get("NotResource").is_some(),
            resources: strings(s.get("Resource").or(s.get("NotResource"))),
        })
        .collect())
}

/// IAM wildcard match (`*` any run, `?` one character), case-insensitive as actions are.
fn wildcard(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let t: Vec<char> = text.to_ascii_lowercase().chars().collect();
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// True when an action pattern can grant some S3 action.
fn reaches_s3(action: &str) -> bool {
    match action.split_once(':') {
        Some((service, _)) => wildcard(service, "s3"),
        None => action == "*",
    }
}

/// True when a resource is the bucket or an object in it.
fn within_bucket(resource: &str, bucket: &str) -> bool {
    let arn = format!("arn:aws:s3:::{bucket}");
    resource == arn || resource.starts_with(&format!("{arn}/"))
}

/// A statement granting every action on every resource.
fn is_admin(s: &Statement) -> bool {
    s.allow
        && !s.not_action
        && !s.not_resource
        && s.actions.iter().any(|a| a == "*" || a == "*:*")
        && s.resources.iter().any(|r| r == "*")
}

/// The least-privilege violations of a role: administrator access, S3 beyond the stack's
/// buckets, a policy the manifest does not list. `resource` names the Lookup.
pub fn violations(
    resource: &str,
    role: &LiveRole,
    allowed: &[String],
    buckets: &[String],
) -> Vec<Violation> {
    let mut out = Vec::new();
    for p in &role.policies {
        let kind = if p.arn.is_some() {
            "attached"
        } else {
            "inline"
        };
        let at = format!("role {}: policies[{}]", role.name, p.name);
        if !allowed
            .iter()
            .any(|a| a == &p.name || Some(a) == p.arn.as_ref())
        {
            out.push(Violation {
                world: None,
                rule: "iam-listed-policies",
                resource: resource.to_string(),
                path: at.clone(),
                message: format!(
                    "{kind} policy {} is not listed in spec.allowedPolicies",
                    p.name
                ),
                fix: format!(
                    "detach it from role {} or, if it is needed, add `{}` to spec.allowedPolicies",
                    role.name, p.name
                ),
            });
        }
        let admin_by_name = p
            .arn
            .as_deref()
            .is_some_and(|a| a.ends_with(&format!(":policy/{ADMINISTRATOR_ACCESS}")));
        if admin_by_name {
            out.push(Violation {
                world: None,
                rule: "iam-no-admin",
                resource: resource.to_string(),
                path: at.clone(),
                message: format!("the administrator policy {ADMINISTRATOR_ACCESS} is attached"),
                fix: format!("detach {ADMINISTRATOR_ACCESS} from role {}", role.name),
            });
            continue;
        }
        let stmts = match statements(&p.document) {
            Ok(s) => s,
            Err(why) => {
                out.push(Violation {
                    world: None,
                    rule: "iam-no-admin",
                    resource: resource.to_string(),
                    path: at.clone(),
                    message: format!("the policy document cannot be checked: it is {why}"),
                    fix: "replace it with a valid policy document".to_string(),
                });
                continue;
            }
        };
        for s in stmts {
            let path = format!("{at}.{}", s.label);
            if is_admin(&s) {
                out.push(Violation {
                    world: None,
                    rule: "iam-no-admin",
                    resource: resource.to_string(),
                    path,
                    message: format!(
                        "statement {} allows every action (`*:*`) on every resource",
                        s.label
                    ),
                    fix: "grant only the actions and resources the host needs".to_string(),
                });
                continue;
            }
            if !s.allow {
                continue;
            }
            let s3 = s.not_action || s.actions.iter().any(|a| reaches_s3(a));
            if !s3 {
                continue;
            }
            let outside: Vec<&String> = if s.not_resource {
                s.resources.iter().collect()
            } else {
                s.resources
                    .iter()
                    .filter(|r| !buckets.iter().any(|b| within_bucket(r, b)))
                    .collect()
            };
            if s.not_resource || !outside.is_empty() {
                let shown: Vec<&str> = outside.iter().map(|r| r.as_str()).collect();
                out.push(Violation {
                    world: None,
                    rule: "iam-s3-bucket-only",
                    resource: resource.to_string(),
                    path,
                    message: format!(
                        "statement {} grants S3 access beyond the stack's bucket: {}{}",
                        s.label,
                        if s.not_resource { "NotResource " } else { "" },
                        shown.join(", ")
                    ),
                    fix: format!(
                        "limit Resource to {}",
                        buckets
                            .iter()
                            .map(|b| format!("arn:aws:s3:::{b} and arn:aws:s3:::{b}/*"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUCKET: &str = "durable-code-local-observability-123456789012";

    fn role(policies: &[(&str, Option<&str>, &str)]) -> LiveRole {
        LiveRole {
            name: "r".into(),
            policies: policies
                .iter()
                .map(|(n, arn, d)| LivePolicy {
                    name: n.to_string(),
                    arn: arn.map(str::to_string),
                    document: d.to_string(),
                })
                .collect(),
        }
    }

    fn check(r: &LiveRole, allowed: &[&str]) -> Vec<Violation> {
        let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
        violations(
            "Lookup/instance-profile",
            r,
            &allowed,
            &[BUCKET.to_string()],
        )
    }

    const LEAST: &str = r#"{"Version":"2012-10-17","Statement":[
        {"Sid":"Bucket","Effect":"Allow","Action":["s3:GetObject","s3:PutObject","s3:ListBucket"],
         "Resource":["arn:aws:s3:::durable-code-local-observability-123456789012",
                     "arn:aws:s3:::durable-code-local-observability-123456789012/*"]},
        {"Sid":"SsmCore","Effect":"Allow","Action":["ssm:UpdateInstanceInformation","ssmmessages:*","ec2messages:*"],"Resource":"*"}]}"#;

    #[test]
    fn a_least_privilege_role_that_is_listed_has_no_violation() {
        let r = role(&[("obs", Some("arn:aws:iam::1:policy/obs"), LEAST)]);
        assert_eq!(check(&r, &["obs"]), vec![]);
    }

    #[test]
    fn an_unlisted_policy_is_a_violation_naming_it() {
        let r = role(&[("obs", Some("arn:aws:iam::1:policy/obs"), LEAST)]);
        let v = check(&r, &[]);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].rule, "iam-listed-policies");
        assert!(v[0].message.contains("obs"));
    }

    #[test]
    fn s3_on_every_resource_names_the_statement() {
        let doc =
            r#"{"Statement":[{"Sid":"AllS3","Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#;
        let v = check(&role(&[("wide", None, doc)]), &["wide"]);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].rule, "iam-s3-bucket-only");
        assert!(v[0].path.ends_with("policies[wide].AllS3"), "{}", v[0].path);
        assert!(v[0].message.contains("AllS3"));
    }

    #[test]
    fn s3_on_a_wider_bucket_pattern_or_another_bucket_is_a_violation() {
        for resource in [
            "arn:aws:s3:::durable-code-*",
            "arn:aws:s3:::other-bucket/*",
            "arn:aws:s3:::*",
        ] {
            let doc = format!(
                r#"{{"Statement":{{"Effect":"Allow","Action":"s3:GetObject","Resource":"{resource}"}}}}"#
            );
            let v = check(&role(&[("p", None, &doc)]), &["p"]);
            assert_eq!(v.len(), 1, "{resource}: {v:?}");
            assert!(v[0].path.ends_with("Statement[0]"));
        }
    }

    #[test]
    fn every_action_on_every_resource_is_admin() {
        for action in ["*", "*:*"] {
            let doc = format!(
                r#"{{"Statement":[{{"Effect":"Allow","Action":"{action}","Resource":"*"}}]}}"#
            );
            let v = check(&role(&[("p", None, &doc)]), &["p"]);
            assert_eq!(v.len(), 1, "{v:?}");
            assert_eq!(v[0].rule, "iam-no-admin");
        }
    }

    #[test]
    fn administrator_access_by_arn_is_admin_even_when_listed() {
        let r = role(&[(
            "AdministratorAccess",
            Some("arn:aws:iam::aws:policy/AdministratorAccess"),
            "",
        )]);
        let v = check(&r, &["AdministratorAccess"]);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].rule, "iam-no-admin");
    }

    #[test]
    fn deny_statements_and_other_services_are_fine() {
        let doc = r#"{"Statement":[{"Effect":"Deny","Action":"s3:*","Resource":"*"},
                                    {"Effect":"Allow","Action":"logs:*","Resource":"*"}]}"#;
        assert_eq!(check(&role(&[("p", None, doc)]), &["p"]), vec![]);
    }

    #[test]
    fn url_encoded_documents_are_decoded() {
        assert_eq!(
            decode_document("%7B%22Statement%22%3A%5B%5D%7D"),
            r#"{"Statement":[]}"#
        );
        assert_eq!(decode_document(r#"{"a":1}"#), r#"{"a":1}"#);
    }

    #[test]
    fn wildcards_match_like_iam() {
        assert!(wildcard("s*", "s3"));
        assert!(wildcard("*", "s3"));
        assert!(wildcard("s?", "s3"));
        assert!(!wildcard("ssm*", "s3"));
        assert!(reaches_s3("S3:Get*"));
        assert!(!reaches_s3("ssm:GetParameter"));
    }
}
