//! Who can reach the bucket, which holds every metric, log, trace and profile of the stack:
//! its policy, its ACL and its object ownership. Block-public-access does not stop a grant to
//! another account, and the service cannot be relied on to refuse a public policy (moto
//! accepts one under BlockPublicPolicy), so the policy is compared statement by statement
//! and judged here: an undeclared statement is drift, and one that lets another account or
//! anyone in is also a live violation, whatever the service says.
//!
//! The live type, the pure comparison, the reads and the writes, top to bottom.

use super::code_is;
use crate::model::BucketSpec;
use crate::plan::{FieldChange, Violation};
use crate::provider::aws::AwsError;
use aws_sdk_s3::types::{BucketCannedAcl, OwnershipControls, OwnershipControlsRule};
use serde_json::Value;

/// The policy rule a foreign grant breaks.
pub const RULE: &str = "bucket-no-foreign-access";

/// The bucket's access as observed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LiveAccess {
    /// The policy document as returned; `None` when there is none.
    pub policy: Option<String>,
    /// The Object Ownership setting; `None` when none is set.
    pub ownership: Option<String>,
    /// The ACL's grants other than the owner's, as `grantee permission`; `None` when not
    /// read: with ownership enforced AWS refuses and ignores ACLs, so reading them would be a
    /// call per plan for nothing (a person must change the ownership first, which is seen).
    pub foreign_grants: Option<Vec<String>>,
}

/// Writes that bring the access back to the declaration, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessOp {
    /// Put the declared policy.
    PutPolicy,
    /// Delete the policy (none is declared).
    DeletePolicy,
    /// Reset the ACL to the owner's grant alone (`private`).
    ResetAcl,
    /// Put the declared Object Ownership.
    Ownership,
}

// ---------------------------------------------------------------------------------------------
// The comparison (pure)

/// A statement in a canonical form: single values as lists, lists sorted, `"*"` principals
/// as `{"AWS": ["*"]}`, so that the service's reformatting is not a difference.
fn canonical(statement: &Value) -> Value {
    let Value::Object(m) = statement else {
        return statement.clone();
    };
    let mut out = serde_json::Map::new();
    for (k, v) in m {
        let v = match k.as_str() {
            "Principal" | "NotPrincipal" => match v {
                Value::String(star) if star == "*" => serde_json::json!({"AWS": ["*"]}),
                Value::Object(by) => Value::Object(
                    by.iter()
                        .map(|(kind, who)| (kind.clone(), list(who)))
                        .collect(),
                ),
                other => other.clone(),
            },
            "Action" | "NotAction" | "Resource" | "NotResource" => list(v),
            // operator → key → values
            "Condition" => match v {
                Value::Object(ops) => Value::Object(
                    ops.iter()
                        .map(|(op, keys)| {
                            let keys = match keys {
                                Value::Object(ks) => Value::Object(
                                    ks.iter().map(|(k, vals)| (k.clone(), list(vals))).collect(),
                                ),
                                other => other.clone(),
                            };
                            (op.clone(), keys)
                        })
                        .collect(),
                ),
                other => other.clone(),
            },
            _ => v.clone(),
        };
        out.insert(k.clone(), v);
    }
    Value::Object(out)
}

/// A value or a list of values as a sorted list.
fn list(v: &Value) -> Value {
    let mut items: Vec<Value> = match v {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    };
    items.sort_by_key(|i| i.to_string());
    items.dedup();
    Value::Array(items)
}

/// The statements of a policy document, canonical; a document that does not parse has one
/// statement standing for its raw text (so it differs from anything declared).
pub fn statements(doc: &str) -> Vec<Value> {
    let Ok(v) = serde_json::from_str::<Value>(doc) else {
        return vec![Value::String(doc.to_string())];
    };
    match v.get("Statement") {
        Some(Value::Array(a)) => a.iter().map(canonical).collect(),
        Some(one) => vec![canonical(one)],
        None => Vec::new(),
    }
}

/// A statement for people: `Allow s3:* to arn:aws:iam::999999999999:root on arn:aws:s3:::b/*`.
pub fn describe(s: &Value) -> String {
    let words = |key: &str| match s.get(key) {
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(","),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let principals = principals(s).join(",");
    format!(
        "{} {} to {} on {}",
        s.get("Effect").and_then(Value::as_str).unwrap_or("?"),
        words("Action"),
        if principals.is_empty() {
            "?".to_string()
        } else {
            principals
        },
        words("Resource")
    )
}

/// The principals a statement names (`*`, ARNs, account ids, service names).
fn principals(s: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(Value::Object(m)) = s.get("Principal") {
        for v in m.values() {
            if let Value::Array(a) = v {
                out.extend(a.iter().filter_map(Value::as_str).map(str::to_string));
            }
        }
    }
    out
}

/// The account an AWS principal belongs to: `123456789012` or `arn:aws:iam::123456789012:…`.
fn account_of(principal: &str) -> Option<&str> {
    if principal.len() == 12 && principal.bytes().all(|b| b.is_ascii_digit()) {
        return Some(principal);
    }
    principal.strip_prefix("arn:aws:iam::")?.split(':').next()
}

/// The principals of an `Allow` statement that lie outside `account`: `*`, another account.
/// Service principals (`logging.s3.amazonaws.com`) are AWS itself.
pub fn foreign_principals(s: &Value, account: &str) -> Vec<String> {
    if s.get("Effect").and_then(Value::as_str) != Some("Allow") {
        return Vec::new();
    }
    principals(s)
        .into_iter()
        .filter(|p| p == "*" || account_of(p).is_some_and(|a| a != account))
        .collect()
}

/// The field path of a statement: its Sid when it has one, else its place.
fn path_of(s: &Value, index: usize) -> String {
    match s.get("Sid").and_then(Value::as_str) {
        Some(sid) if !sid.is_empty() => format!("policy.Statement[{sid}]"),
        _ => format!("policy.Statement[{index}]"),
    }
}

/// How the live access differs from the declaration, and what is to be done. Pure.
pub fn diff(spec: &BucketSpec, live: &LiveAccess) -> (Vec<FieldChange>, Vec<AccessOp>) {
    let LiveAccess {
        policy,
        ownership,
        foreign_grants,
    } = live;
    let mut fields = Vec::new();
    let mut ops = Vec::new();
    let want: Vec<Value> = spec.policy.as_deref().map(statements).unwrap_or_default();
    let have: Vec<Value> = policy.as_deref().map(statements).unwrap_or_default();
    let count = |set: &[Value], s: &Value| set.iter().filter(|x| *x == s).count();
    let mut differs = false;
    for (i, s) in have.iter().enumerate() {
        if count(&want, s) < count(&have[..=i], s) {
            fields.push(FieldChange::removed(path_of(s, i), describe(s)));
            differs = true;
        }
    }
    for (i, s) in want.iter().enumerate() {
        if count(&have, s) < count(&want[..=i], s) {
            fields.push(FieldChange::added(path_of(s, i), describe(s)));
            differs = true;
        }
    }
    if differs {
        ops.push(if spec.policy.is_some() {
            AccessOp::PutPolicy
        } else {
            AccessOp::DeletePolicy
        });
    }
    if let Some(grants) = foreign_grants
        && !grants.is_empty()
    {
        for g in grants {
            fields.push(FieldChange::removed("acl", g));
        }
        ops.push(AccessOp::ResetAcl);
    }
    let want_ownership = spec.object_ownership.as_str();
    if ownership.as_deref() != Some(want_ownership) {
        fields.push(FieldChange::changed(
            "objectOwnership",
            ownership.as_deref().unwrap_or("(none)"),
            want_ownership,
        ));
        ops.push(AccessOp::Ownership);
    }
    (fields, ops)
}

/// The live grants that let someone outside `account` in, whatever block-public-access says:
/// policy statements and ACL grants to everyone or to another account.
pub fn violations(resource: &str, live: &LiveAccess, account: &str) -> Vec<Violation> {
    let mut out = Vec::new();
    let have: Vec<Value> = live.policy.as_deref().map(statements).unwrap_or_default();
    for (i, s) in have.iter().enumerate() {
        let foreign = foreign_principals(s, account);
        if foreign.is_empty() {
            continue;
        }
        out.push(Violation {
            world: None,
            rule: RULE,
            resource: resource.to_string(),
            path: path_of(s, i),
            message: format!(
                "the bucket policy lets {} in: {}",
                foreign.join(", "),
                describe(s)
            ),
            fix: "remove the statement (the declared policy is put back), or grant a principal of this account".to_string(),
        });
    }
    for g in live.foreign_grants.iter().flatten() {
        out.push(Violation {
            world: None,
            rule: RULE,
            resource: resource.to_string(),
            path: "acl".to_string(),
            message: format!("the bucket ACL grants {g}"),
            fix:
                "keep only the owner's grant; with objectOwnership BucketOwnerEnforced ACLs are off"
                    .to_string(),
        });
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Reads

/// Reads the policy and the ownership together, and the ACL only where ownership lets ACLs
/// apply. `name` exists (the caller read it).
pub async fn observe(client: &aws_sdk_s3::Client, name: &str) -> Result<LiveAccess, AwsError> {
    let res = format!("bucket {name}");
    let (policy, ownership) = tokio::join!(
        client.get_bucket_policy().bucket(name).send(),
        client.get_bucket_ownership_controls().bucket(name).send(),
    );
    let policy = match policy {
        Ok(p) => p.policy().map(str::to_string),
        Err(e) if code_is(&e, &["NoSuchBucketPolicy"]) => None,
        Err(e) => return Err(AwsError::call("GetBucketPolicy", res, e)),
    };
    let ownership = match ownership {
        Ok(o) => o
            .ownership_controls()
            .and_then(|c| c.rules().first())
            .map(|r| r.object_ownership().as_str().to_string()),
        Err(e) if code_is(&e, &["OwnershipControlsNotFoundError"]) => None,
        Err(e) => return Err(AwsError::call("GetBucketOwnershipControls", res, e)),
    };
    let foreign_grants = if ownership.as_deref() == Some("BucketOwnerEnforced") {
        None
    } else {
        let acl = client
            .get_bucket_acl()
            .bucket(name)
            .send()
            .await
            .map_err(|e| AwsError::call("GetBucketAcl", res.clone(), e))?;
        let owner = acl.owner().and_then(|o| o.id()).unwrap_or("");
        let mut grants: Vec<String> = acl
            .grants()
            .iter()
            .filter_map(|g| {
                let grantee = g.grantee()?;
                let who = grantee
                    .uri()
                    .map(|u| u.rsplit('/').next().unwrap_or(u).to_string())
                    .or_else(|| grantee.id().map(|id| format!("id:{id}")))
                    .or_else(|| grantee.email_address().map(|m| format!("email:{m}")))?;
                if grantee.id() == Some(owner) {
                    return None;
                }
                let permission = g.permission().map(|p| p.as_str()).unwrap_or("?");
                Some(format!("{who} {permission}"))
            })
            .collect();
        grants.sort();
        Some(grants)
    };
    Ok(LiveAccess {
        policy,
        ownership,
        foreign_grants,
    })
}

// ---------------------------------------------------------------------------------------------
// Writes

/// Applies one access op.
pub async fn apply(
    client: &aws_sdk_s3::Client,
    spec: &BucketSpec,
    res: &str,
    op: AccessOp,
) -> Result<(), AwsError> {
    let b = spec.name.as_str();
    match op {
        AccessOp::PutPolicy => {
            let policy = spec.policy.as_deref().unwrap_or("");
            client
                .put_bucket_policy()
                .bucket(b)
                .policy(policy)
                .send()
                .await
                .map_err(|e| AwsError::call("PutBucketPolicy", res, e))?;
        }
        AccessOp::DeletePolicy => {
            client
                .delete_bucket_policy()
                .bucket(b)
                .send()
                .await
                .map_err(|e| AwsError::call("DeleteBucketPolicy", res, e))?;
        }
        AccessOp::ResetAcl => {
            client
                .put_bucket_acl()
                .bucket(b)
                .acl(BucketCannedAcl::Private)
                .send()
                .await
                .map_err(|e| AwsError::call("PutBucketAcl", res, e))?;
        }
        AccessOp::Ownership => {
            let rule = OwnershipControlsRule::builder()
                .object_ownership(spec.object_ownership.as_str().into())
                .build()
                .map_err(|e| super::build_err(res, e))?;
            let controls = OwnershipControls::builder()
                .rules(rule)
                .build()
                .map_err(|e| super::build_err(res, e))?;
            client
                .put_bucket_ownership_controls()
                .bucket(b)
                .ownership_controls(controls)
                .send()
                .await
                .map_err(|e| AwsError::call("PutBucketOwnershipControls", res, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: &str = "123456789012";

    fn spec(policy: Option<&str>) -> BucketSpec {
        serde_json::from_value(serde_json::json!({
            "name": "b",
            "policy": policy,
        }))
        .expect("spec")
    }

    fn enforced() -> LiveAccess {
        LiveAccess {
            policy: None,
            ownership: Some("BucketOwnerEnforced".into()),
            foreign_grants: None,
        }
    }

    const CROSS_ACCOUNT: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"x","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::999999999999:root"},"Action":"s3:*","Resource":["arn:aws:s3:::b","arn:aws:s3:::b/*"]}]}"#;
    const PUBLIC_READ: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}]}"#;
    const OWN_ACCOUNT: &str = r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":["arn:aws:iam::123456789012:role/reader"]},"Action":["s3:GetObject"],"Resource":"arn:aws:s3:::b/*"}}"#;

    #[test]
    fn every_field_of_the_live_access_changed_by_hand_is_seen() {
        // The live type destructured without `..`: a field added without a case does not
        // compile.
        let LiveAccess {
            policy: _,
            ownership: _,
            foreign_grants: _,
        } = enforced();
        type Edit = fn(&mut LiveAccess);
        let cases: Vec<(&str, Edit, AccessOp)> = vec![
            (
                "policy",
                |l| l.policy = Some(CROSS_ACCOUNT.into()),
                AccessOp::DeletePolicy,
            ),
            (
                "ownership",
                |l| l.ownership = Some("ObjectWriter".into()),
                AccessOp::Ownership,
            ),
            ("ownership", |l| l.ownership = None, AccessOp::Ownership),
            (
                "foreign_grants",
                |l| l.foreign_grants = Some(vec!["AllUsers READ".into()]),
                AccessOp::ResetAcl,
            ),
        ];
        for (field, edit, op) in cases {
            let mut l = enforced();
            edit(&mut l);
            let (fields, ops) = diff(&spec(None), &l);
            assert!(!fields.is_empty(), "a changed {field} is not seen");
            assert!(ops.contains(&op), "{field}: {ops:?}");
        }
        assert_eq!(diff(&spec(None), &enforced()), (vec![], vec![]));
    }

    #[test]
    fn a_declared_policy_matches_however_the_service_reformats_it() {
        let reformatted = r#"{"Statement":[{"Resource":"arn:aws:s3:::b/*","Action":"s3:GetObject","Principal":{"AWS":"arn:aws:iam::123456789012:role/reader"},"Effect":"Allow"}],"Version":"2012-10-17"}"#;
        let mut live = enforced();
        live.policy = Some(reformatted.into());
        assert_eq!(diff(&spec(Some(OWN_ACCOUNT)), &live), (vec![], vec![]));
        // Missing: put back.
        let (fields, ops) = diff(&spec(Some(OWN_ACCOUNT)), &enforced());
        assert_eq!(ops, [AccessOp::PutPolicy]);
        assert!(
            fields[0]
                .new
                .as_deref()
                .is_some_and(|n| n.contains("role/reader"))
        );
    }

    #[test]
    fn an_undeclared_statement_is_removed_naming_its_principal() {
        let mut live = enforced();
        live.policy = Some(CROSS_ACCOUNT.into());
        let (fields, ops) = diff(&spec(None), &live);
        assert_eq!(ops, [AccessOp::DeletePolicy]);
        assert_eq!(fields[0].path, "policy.Statement[x]");
        let old = fields[0].old.as_deref().unwrap_or("");
        assert!(old.contains("arn:aws:iam::999999999999:root"), "{old}");
        assert!(old.starts_with("Allow s3:* to "), "{old}");
    }

    #[test]
    fn grants_to_another_account_or_anyone_are_violations_and_this_accounts_are_not() {
        for (doc, who) in [
            (CROSS_ACCOUNT, "arn:aws:iam::999999999999:root"),
            (PUBLIC_READ, "*"),
        ] {
            let mut live = enforced();
            live.policy = Some(doc.into());
            let v = violations("Bucket/data", &live, ACCOUNT);
            assert_eq!(v.len(), 1, "{v:?}");
            assert_eq!(v[0].rule, RULE);
            assert!(v[0].message.contains(who), "{}", v[0].message);
        }
        let mut live = enforced();
        live.policy = Some(OWN_ACCOUNT.into());
        assert!(violations("Bucket/data", &live, ACCOUNT).is_empty());
        live.foreign_grants = Some(vec!["AllUsers READ".into()]);
        assert_eq!(violations("Bucket/data", &live, ACCOUNT)[0].path, "acl");
    }

    #[test]
    fn a_deny_is_never_a_grant() {
        let deny = r#"{"Statement":[{"Effect":"Deny","Principal":"*","Action":"s3:*","Resource":"*","Condition":{"Bool":{"aws:SecureTransport":"false"}}}]}"#;
        let mut live = enforced();
        live.policy = Some(deny.into());
        assert!(violations("Bucket/data", &live, ACCOUNT).is_empty());
    }
}
