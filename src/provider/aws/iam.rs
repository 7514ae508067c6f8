//! IAM, read only: the role behind each instanceProfile Lookup, with its attached and inline
//! policies, checked for least privilege (S3 only on the stack's bucket, no administrator
//! access, only the policies the manifest lists, no write to the delivery pointer or bundles).
//! Nothing here writes to IAM.
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
    /// Carries a `Condition`: whether it applies depends on the request, which a static check
    /// cannot know.
    conditional: bool,
}

impl Statement {
    /// Whether the statement names `action` on `resource` (its effect and condition aside).
    fn covers(&self, action: &str, resource: &str) -> bool {
        let action_named = self.actions.iter().any(|a| wildcard(a, action));
        let resource_named = self.resources.iter().any(|r| wildcard_exact(r, resource));
        action_named != self.not_action && resource_named != self.not_resource
    }
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
            conditional: s.get("Condition").is_some(),
        })
        .collect())
}

/// IAM wildcard match (`*` any run, `?` one character), case-insensitive as actions are.
fn wildcard(pattern: &str, text: &str) -> bool {
    matches(
        &pattern.to_ascii_lowercase().chars().collect::<Vec<_>>(),
        &text.to_ascii_lowercase().chars().collect::<Vec<_>>(),
    )
}

/// IAM wildcard match, case-sensitive as resource ARNs are.
fn wildcard_exact(pattern: &str, text: &str) -> bool {
    matches(
        &pattern.chars().collect::<Vec<_>>(),
        &text.chars().collect::<Vec<_>>(),
    )
}

fn matches(p: &[char], t: &[char]) -> bool {
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

/// The writes that would let a principal publish: a new pointer or bundle, or deleting the one
/// in force (which freezes delivery).
const PUBLISHING_WRITES: [&str; 2] = ["s3:PutObject", "s3:DeleteObject"];

/// An object of the delivery prefix that only the publisher may write (docs/delivery.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guarded {
    /// The object's ARN. For the bundles, one stand-in key under the prefix: a statement that
    /// reaches it reaches every bundle name of that shape.
    pub arn: String,
    /// What it is, for the message: `the delivery pointer`, `the bundles`.
    pub what: &'static str,
}

/// The delivery objects of `environment` in each of `buckets`, under the default prefix.
pub fn delivery_objects(buckets: &[String], environment: &str) -> Vec<Guarded> {
    let prefix = super::permissions::DELIVERY_PREFIX;
    let mut out = Vec::new();
    for b in buckets {
        out.push(Guarded {
            arn: format!("arn:aws:s3:::{b}/{prefix}{environment}/current"),
            what: "the delivery pointer",
        });
        out.push(Guarded {
            arn: format!("arn:aws:s3:::{b}/{prefix}bundles/{}", "0".repeat(64)),
            what: "the bundles",
        });
    }
    out
}

/// The least-privilege violations of a role: administrator access, S3 beyond the stack's
/// buckets, a policy the manifest does not list, a write to the delivery objects `guarded`
/// names. `resource` names the Lookup.
pub fn violations(
    resource: &str,
    role: &LiveRole,
    allowed: &[String],
    buckets: &[String],
    guarded: &[Guarded],
) -> Vec<Violation> {
    let mut out = Vec::new();
    // Every policy's statements, labelled: a Deny in one policy takes from an Allow in another.
    let mut all: Vec<(String, Statement)> = Vec::new();
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
        all.extend(
            stmts
                .iter()
                .map(|s| (format!("{at}.{}", s.label), s.clone())),
        );
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
    out.extend(publishing(resource, role, &all, guarded));
    out
}

/// The instance role must not be able to publish: its containers reach it through IMDS, so a
/// container that could write the pointer or a bundle could hand the daemon a root container
/// (or, deleting the pointer, freeze delivery). One violation per guarded object, naming the
/// Allow statements that reach it and no Deny takes back. A Deny with a `Condition` is not
/// counted: whether it applies depends on the request.
fn publishing(
    resource: &str,
    role: &LiveRole,
    all: &[(String, Statement)],
    guarded: &[Guarded],
) -> Vec<Violation> {
    let mut out = Vec::new();
    for g in guarded {
        let mut granting: Vec<&str> = Vec::new();
        let mut actions: Vec<&str> = Vec::new();
        for action in PUBLISHING_WRITES {
            let denied = all
                .iter()
                .any(|(_, s)| !s.allow && !s.conditional && s.covers(action, &g.arn));
            if denied {
                continue;
            }
            let allowing = all
                .iter()
                .filter(|(_, s)| s.allow && s.covers(action, &g.arn));
            let mut any = false;
            for (path, _) in allowing {
                any = true;
                if !granting.contains(&path.as_str()) {
                    granting.push(path);
                }
            }
            if any {
                actions.push(action);
            }
        }
        let Some(first) = granting.first() else {
            continue;
        };
        let object = g.arn.split_once(":::").map_or(g.arn.as_str(), |(_, o)| o);
        out.push(Violation {
            world: None,
            rule: "iam-no-publish",
            resource: resource.to_string(),
            path: first.to_string(),
            message: format!(
                "role {} may {} {} ({object}) through {}: its containers reach the role through \
                 IMDS, so one of them could publish to the host",
                role.name,
                actions.join(" and "),
                g.what,
                granting.join(", "),
            ),
            fix: format!(
                "add a Deny statement of {} on {} to the role's policy (docs/delivery.md), or \
                 narrow the Allow",
                PUBLISHING_WRITES.join(" and "),
                deny_pattern(&g.arn),
            ),
        });
    }
    out
}

/// The Deny resource that covers a guarded object: every environment's pointer, every bundle.
fn deny_pattern(arn: &str) -> String {
    let (bucket, key) = arn.rsplit_once('/').unwrap_or((arn, ""));
    if key == "current" {
        let bucket = bucket.rsplit_once('/').map_or(bucket, |(b, _)| b);
        format!("{bucket}/*/current")
    } else {
        format!("{bucket}/*")
    }
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
            &delivery_objects(&[BUCKET.to_string()], "local"),
        )
    }

    const LEAST: &str = r#"{"Version":"2012-10-17","Statement":[
        {"Sid":"Bucket","Effect":"Allow","Action":["s3:GetObject","s3:PutObject","s3:ListBucket"],
         "Resource":["arn:aws:s3:::durable-code-local-observability-123456789012",
                     "arn:aws:s3:::durable-code-local-observability-123456789012/*"]},
        {"Sid":"NoPublish","Effect":"Deny","Action":["s3:PutObject","s3:DeleteObject"],
         "Resource":["arn:aws:s3:::durable-code-local-observability-123456789012/stackwarden/bundles/*",
                     "arn:aws:s3:::durable-code-local-observability-123456789012/stackwarden/*/current"]},
        {"Sid":"SsmCore","Effect":"Allow","Action":["ssm:UpdateInstanceInformation","ssmmessages:*","ec2messages:*"],"Resource":"*"}]}"#;

    /// The rules `v` names, in order.
    fn rules(v: &[Violation]) -> Vec<&'static str> {
        v.iter().map(|v| v.rule).collect()
    }

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
        assert_eq!(
            rules(&v),
            ["iam-s3-bucket-only", "iam-no-publish", "iam-no-publish"],
            "{v:?}"
        );
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
            assert_eq!(rules(&v), ["iam-s3-bucket-only"], "{resource}: {v:?}");
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
            assert_eq!(rules(&v)[0], "iam-no-admin", "{v:?}");
            assert!(!rules(&v).contains(&"iam-s3-bucket-only"), "{v:?}");
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

    const BUCKET_ALLOW: &str = r#"{"Sid":"StackBucket","Effect":"Allow","Action":["s3:GetObject","s3:PutObject","s3:DeleteObject"],
         "Resource":"arn:aws:s3:::durable-code-local-observability-123456789012/*"}"#;

    fn document(statements: &[&str]) -> String {
        format!(r#"{{"Statement":[{}]}}"#, statements.join(","))
    }

    #[test]
    fn a_role_that_may_write_the_pointer_and_bundles_is_a_violation_naming_the_statement() {
        let v = check(
            &role(&[("obs", None, &document(&[BUCKET_ALLOW]))]),
            &["obs"],
        );
        assert_eq!(rules(&v), ["iam-no-publish", "iam-no-publish"], "{v:?}");
        assert_eq!(v[0].path, "role r: policies[obs].StackBucket");
        assert!(
            v[0].message.contains("the delivery pointer")
                && v[0].message.contains("stackwarden/local/current")
                && v[0].message.contains("s3:PutObject and s3:DeleteObject"),
            "{}",
            v[0].message
        );
        assert!(v[1].message.contains("the bundles"), "{}", v[1].message);
        assert!(
            v[0].fix
                .contains(&format!("arn:aws:s3:::{BUCKET}/stackwarden/*/current"))
                && v[1]
                    .fix
                    .contains(&format!("arn:aws:s3:::{BUCKET}/stackwarden/bundles/*")),
            "{} / {}",
            v[0].fix,
            v[1].fix
        );
    }

    #[test]
    fn a_deny_in_another_policy_takes_the_write_back() {
        let deny = r#"{"Effect":"Deny","Action":"s3:*","Resource":["arn:aws:s3:::*/stackwarden/bundles/*","arn:aws:s3:::*/stackwarden/*/current"]}"#;
        let r = role(&[
            ("obs", None, &document(&[BUCKET_ALLOW])),
            ("fence", None, &document(&[deny])),
        ]);
        assert_eq!(check(&r, &["obs", "fence"]), vec![]);
    }

    #[test]
    fn a_deny_of_one_write_leaves_the_other_named() {
        let deny = format!(
            r#"{{"Effect":"Deny","Action":"s3:PutObject","Resource":"arn:aws:s3:::{BUCKET}/stackwarden/*"}}"#
        );
        let v = check(
            &role(&[("obs", None, &document(&[BUCKET_ALLOW, &deny]))]),
            &["obs"],
        );
        assert_eq!(rules(&v), ["iam-no-publish", "iam-no-publish"], "{v:?}");
        assert!(
            v.iter()
                .all(|v| v.message.contains("may s3:DeleteObject the"))
        );
    }

    #[test]
    fn a_conditional_deny_is_not_counted() {
        let deny = format!(
            r#"{{"Effect":"Deny","Action":"s3:*","Resource":"arn:aws:s3:::{BUCKET}/stackwarden/*",
                "Condition":{{"StringNotEquals":{{"aws:SourceVpce":"vpce-1"}}}}}}"#
        );
        let v = check(
            &role(&[("obs", None, &document(&[BUCKET_ALLOW, &deny]))]),
            &["obs"],
        );
        assert_eq!(rules(&v), ["iam-no-publish", "iam-no-publish"], "{v:?}");
    }

    #[test]
    fn not_action_and_not_resource_reach_the_pointer_too() {
        let not_action = format!(
            r#"{{"Sid":"AllButIam","Effect":"Allow","NotAction":"iam:*","Resource":"arn:aws:s3:::{BUCKET}/*"}}"#
        );
        let v = check(&role(&[("p", None, &document(&[&not_action]))]), &["p"]);
        assert!(rules(&v).contains(&"iam-no-publish"), "{v:?}");
        assert!(v.iter().any(|v| v.path.ends_with("AllButIam")));
        // NotResource naming only the delivery objects grants everything else: no publish.
        let not_resource = format!(
            r#"{{"Effect":"Allow","Action":"s3:PutObject","NotResource":["arn:aws:s3:::{BUCKET}/stackwarden/*"]}}"#
        );
        let v = check(&role(&[("p", None, &document(&[&not_resource]))]), &["p"]);
        assert!(!rules(&v).contains(&"iam-no-publish"), "{v:?}");
    }

    #[test]
    fn reads_of_the_delivery_prefix_are_fine() {
        let read = format!(
            r#"{{"Effect":"Allow","Action":["s3:GetObject","s3:ListBucket"],"Resource":"arn:aws:s3:::{BUCKET}/*"}}"#
        );
        assert_eq!(
            check(&role(&[("p", None, &document(&[&read]))]), &["p"]),
            vec![]
        );
    }

    #[test]
    fn the_policy_iam_policy_writes_for_the_host_cannot_publish() {
        use crate::provider::aws::permissions::{Principal, Scope, policy};
        let scope = Scope {
            partition: "aws".into(),
            region: "us-east-1".into(),
            account: "123456789012".into(),
            stack: "durable-code".into(),
            environment: "local".into(),
            buckets: vec![BUCKET.into()],
            parameters: vec![],
            instance_profiles: vec!["durable-code-local-observability".into()],
            target_groups: vec![],
            load_balancers: vec![],
            // The backends' prefixes, as the shipped configs give them: their writes must not
            // reach the delivery objects either.
            backends: ["mimir/", "loki/", "tempo/", "pyroscope/"]
                .into_iter()
                .zip(crate::manifest::backends::Backend::ALL)
                .map(|(prefix, backend)| crate::manifest::backends::Layout {
                    backend,
                    areas: vec![crate::manifest::backends::Area {
                        bucket: BUCKET.into(),
                        keys: crate::manifest::backends::Keys::Prefix(prefix.into()),
                        path: String::new(),
                        at: crate::model::SourceLocation::default(),
                    }],
                })
                .collect(),
        };
        let host = policy(Principal::Host, &scope).to_string();
        let v = check(&role(&[("host", None, &host)]), &["host"]);
        assert_eq!(v, vec![]);
        // Nor with AWS writes opted in: the host repairs AWS, it never publishes.
        let writing = policy(Principal::HostWritingAws, &scope).to_string();
        let v = check(&role(&[("host", None, &writing)]), &["host"]);
        assert_eq!(v, vec![]);
        // The CI policy publishes, so the same check on it must find the writes: the check
        // can fail.
        let ci = policy(Principal::Ci, &scope).to_string();
        let v = check(&role(&[("ci", None, &ci)]), &["ci"]);
        assert!(rules(&v).contains(&"iam-no-publish"), "{v:?}");
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
