//! `--output sarif`: policy violations and drift as a SARIF 2.1.0 log for code scanning
//! (GitHub's upload-sarif). One rule per policy rule and one for drift; each result points at
//! the manifest line that declares its resource, the path relative to the working directory
//! (the repository root in CI) so that the annotation lands on the file. A violation of
//! something no manifest declares (an unmanaged `docker container X`) has only a logical
//! location.

use crate::model::{Desired, SourceLocation};
use crate::plan::{Cause, Change, FieldChange, Plan};
use serde::Serialize;
use std::path::{Component, Path};

/// The schema every log names (the OASIS standard, errata 01).
pub const SCHEMA_URI: &str =
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json";

/// The rule id of drift results: live state moved away from the manifests by hand.
pub const DRIFT_RULE: &str = "stackwarden/drift";

/// The rules policy checks on live state only (the instance profile's role, read from IAM),
/// which `crate::policy::RULES` does not list, with what they protect against.
const LIVE_ONLY_RULES: [(&str, &str); 5] = [
    (
        "bucket-no-foreign-access",
        "no bucket policy statement or ACL grant lets anyone or another account in",
    ),
    (
        "iam-no-admin",
        "the instance profile's role has no AdministratorAccess and no `*:*` statement",
    ),
    (
        "iam-s3-bucket-only",
        "the instance profile's role reaches S3 only in the stack's bucket",
    ),
    (
        "iam-listed-policies",
        "the instance profile's role has only the policies its Lookup lists in allowedPolicies",
    ),
    (
        "iam-no-publish",
        "the instance profile's role cannot write the delivery pointer or bundles",
    ),
];

/// The SARIF log of a plan (pretty JSON). `root` is the directory manifest paths are made
/// relative to: the working directory, which is the repository root in CI.
pub fn render(plan: &Plan, desired: &Desired, root: &Path) -> String {
    let log = log(plan, desired, root);
    // Serializing our own plain data cannot fail; an empty object is the safe fallback.
    serde_json::to_string_pretty(&log).unwrap_or_else(|_| "{}".to_string())
}

fn log(plan: &Plan, desired: &Desired, root: &Path) -> Log {
    let mut rules: Vec<Descriptor> = crate::policy::RULES
        .iter()
        .chain(LIVE_ONLY_RULES.iter())
        .map(|(id, description)| policy_rule(id, description))
        .collect();
    // A rule a provider reports that no table here knows still gets a descriptor, so every
    // result's ruleId resolves.
    for v in &plan.violations {
        if !rules.iter().any(|r| r.id == v.rule) {
            rules.push(policy_rule(v.rule, &format!("policy rule {}", v.rule)));
        }
    }
    rules.push(drift_rule());

    let index = |id: &str| rules.iter().position(|r| r.id == id).unwrap_or(0);
    let mut results = Vec::new();
    for v in &plan.violations {
        results.push(SarifResult {
            rule_id: v.rule.to_string(),
            rule_index: index(v.rule),
            level: "error",
            message: Message {
                text: format!(
                    "{} {}: {} [policy: {}]. Fix: {}",
                    v.resource, v.path, v.message, v.rule, v.fix
                ),
            },
            locations: vec![location(desired, &v.resource, root)],
        });
    }
    for c in plan.changes.iter().filter(|c| c.cause == Cause::Drift) {
        results.push(SarifResult {
            rule_id: DRIFT_RULE.to_string(),
            rule_index: index(DRIFT_RULE),
            level: "warning",
            message: Message {
                text: drift_message(c),
            },
            locations: vec![location(desired, &c.id.to_string(), root)],
        });
    }

    let mut notifications: Vec<Notification> = plan
        .problems
        .iter()
        .map(|p| Notification {
            level: "error",
            message: Message {
                text: p.to_string(),
            },
        })
        .collect();
    notifications.extend(plan.unobserved.iter().map(|u| Notification {
        level: "warning",
        message: Message {
            text: format!("{} not observed ({}): {}", u.id, u.class.as_str(), u.error),
        },
    }));

    Log {
        schema: SCHEMA_URI,
        version: "2.1.0",
        runs: vec![Run {
            tool: Tool {
                driver: Driver {
                    name: "stackwarden",
                    version: env!("CARGO_PKG_VERSION"),
                    semantic_version: env!("CARGO_PKG_VERSION"),
                    rules,
                },
            },
            invocations: vec![Invocation {
                execution_successful: !plan.is_incomplete(),
                tool_execution_notifications: notifications,
            }],
            column_kind: "unicodeCodePoints",
            results,
        }],
    }
}

fn policy_rule(id: &str, description: &str) -> Descriptor {
    let help = help(id);
    Descriptor {
        id: id.to_string(),
        short_description: Message {
            text: sentence(description),
        },
        full_description: Message {
            text: format!(
                "Policy rule {id}: {description}. Checked by `stackwarden validate` on the manifests and by plan and apply on live state."
            ),
        },
        help: Message {
            text: format!("Fix: {help}"),
        },
        default_configuration: Configuration { level: "error" },
        properties: Properties {
            tags: vec!["security", "policy"],
        },
    }
}

fn drift_rule() -> Descriptor {
    Descriptor {
        id: DRIFT_RULE.to_string(),
        short_description: Message {
            text: "Live state differs from the manifests by a change made outside them."
                .to_string(),
        },
        full_description: Message {
            text: "The resource carries the spec hash of its last apply, and that spec is still the manifests' one: the difference was made by hand (the console, the CLI, docker run), not by a reviewed change.".to_string(),
        },
        help: Message {
            text: "Fix: run `stackwarden apply` to restore the declared state (the daemon does it on its own in enforce mode); if the change is wanted, make it in the manifests, or acknowledge it in the Stack's spec.acknowledgements with a reason and an expiry.".to_string(),
        },
        default_configuration: Configuration { level: "warning" },
        properties: Properties {
            tags: vec!["drift"],
        },
    }
}

/// What to do about a rule's violations, in general (each result says it for its case).
fn help(rule: &str) -> &'static str {
    match rule {
        "no-root-containers" => {
            "set spec.user to a numeric non-root uid:gid such as \"10001:10001\", or add spec.allowRoot.reason explaining why root is needed."
        }
        "no-privileged-containers" => {
            "remove spec.privileged; map only the devices the container needs (spec.devices) and add single capabilities."
        }
        "no-new-privileges" => "add \"no-new-privileges\" to the container's spec.securityOpt.",
        "no-open-ingress" => {
            "allow a security group (the ALB's or the ECS tasks') instead of a world-open CIDR (0.0.0.0/0 or ::/0)."
        }
        "no-grafana-ingress" => {
            "remove the ingress rule to Grafana's port: Grafana is reached through SSM port-forwarding only."
        }
        "grafana-not-behind-alb" => {
            "remove Grafana from the ALB (target group and listener rules); reach it with SSM port-forwarding."
        }
        "faro-cors-not-wildcard" => {
            "list the app's origin in the Faro receiver's cors_allowed_origins instead of \"*\", e.g. [\"https://${domain}\"]."
        }
        "faro-max-payload" => {
            "set max_allowed_payload_size = \"4MiB\" in the faro.receiver server block of Alloy's config."
        }
        "no-default-grafana-password" => {
            "take Grafana's admin password from the SSM SecureString parameter, mounted as a file (a ConfigFile fromParameter and GF_SECURITY_ADMIN_PASSWORD__FILE), and set it to a generated password of at least 12 characters (e.g. `openssl rand -base64 24`)."
        }
        "imdsv2-required" => "set the Instance's spec.metadataOptions.httpTokens to required.",
        "bucket-public-access-block" => {
            "turn all four public-access-block flags on (or remove spec.publicAccessBlock: they default to on)."
        }
        "bucket-encryption" => "set the Bucket's spec.encryption to AES256 (or aws:kms).",
        "bucket-no-foreign-access" => {
            "remove the statement or grant that lets another account or anyone in; apply puts back exactly the declared spec.policy and objectOwnership BucketOwnerEnforced."
        }
        "memory-budget" => {
            "lower some containers' spec.memory, or raise the budget on a larger instance type; keep the budget at least 1G below the instance's memory."
        }
        "iam-no-admin" => {
            "detach AdministratorAccess and any `*:*` statement from the instance profile's role; grant only the actions and resources the host needs."
        }
        "iam-s3-bucket-only" => {
            "limit the role's S3 statements' Resource to the stack's bucket and its objects."
        }
        "iam-no-publish" => {
            "add a Deny of s3:PutObject and s3:DeleteObject on the bucket's stackwarden/bundles/* and stackwarden/*/current to the instance profile's role."
        }
        "iam-listed-policies" => {
            "detach the policy from the role or, if it is needed, add it to the instance-profile Lookup's spec.allowedPolicies."
        }
        _ => "see the result's message: it names the field and what to do.",
    }
}

/// `the bucket has default encryption` → `The bucket has default encryption.`
fn sentence(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => format!("{}{}.", first.to_uppercase(), chars.as_str()),
        None => String::new(),
    }
}

fn drift_message(c: &Change) -> String {
    let mut text = format!(
        "{} drifted from the manifests: apply would {} it",
        c.id,
        c.action.verb()
    );
    if let Some(reason) = &c.reason {
        text.push_str(&format!(" ({reason})"));
    }
    if !c.mode.repairs() {
        text.push_str(&format!(" [{}: not applied]", c.mode));
    }
    if !c.fields.is_empty() {
        let fields: Vec<String> = c.fields.iter().map(field).collect();
        text.push_str(&format!(". Differs: {}", fields.join("; ")));
    }
    text.push('.');
    text
}

/// `path: before → after` as the plan prints it; a secret only differs.
fn field(f: &FieldChange) -> String {
    match (&f.old, &f.new) {
        _ if f.sensitive => format!("{}: value differs", f.path),
        (Some(old), Some(new)) => format!("{}: {old} → {new}", f.path),
        (None, Some(new)) => format!("{}: (none) → {new}", f.path),
        (Some(old), None) => format!("{}: {old} → (none)", f.path),
        (None, None) => f.path.clone(),
    }
}

/// Where a resource (`Kind/name`) is declared, and its name as a logical location.
fn location(desired: &Desired, resource: &str, root: &Path) -> Location {
    let physical = super::declared(desired, resource).and_then(|r| physical(&r.source, root));
    Location {
        physical_location: physical,
        logical_locations: vec![LogicalLocation {
            fully_qualified_name: resource.to_string(),
            kind: "resource",
        }],
    }
}

fn physical(source: &SourceLocation, root: &Path) -> Option<PhysicalLocation> {
    let uri = artifact_uri(&source.file, root)?;
    let region = (source.line > 0).then(|| Region {
        start_line: source.line,
        start_column: (source.column > 0).then_some(source.column),
    });
    Some(PhysicalLocation {
        artifact_location: ArtifactLocation { uri },
        region,
    })
}

/// A manifest path as a URI reference: relative (`manifests/network.yaml`) when it is relative
/// or under `root`, else an absolute `file://` URI. Segments are percent-encoded.
fn artifact_uri(file: &Path, root: &Path) -> Option<String> {
    if file.as_os_str().is_empty() {
        return None;
    }
    let (absolute, path) = match file.strip_prefix(root) {
        Ok(rel) if file.is_absolute() => (false, rel),
        _ => (file.is_absolute(), file),
    };
    let segments: Vec<String> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(encode(&s.to_string_lossy())),
            Component::ParentDir => Some("..".to_string()),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => None,
        })
        .collect();
    if segments.is_empty() {
        return None;
    }
    let joined = segments.join("/");
    Some(if absolute {
        format!("file:///{joined}")
    } else {
        joined
    })
}

/// Percent-encodes all but RFC 3986's unreserved characters.
fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// The subset of SARIF 2.1.0 written here, field names as the schema spells them.

#[derive(Serialize)]
struct Log {
    #[serde(rename = "$schema")]
    schema: &'static str,
    version: &'static str,
    runs: Vec<Run>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Run {
    tool: Tool,
    invocations: Vec<Invocation>,
    column_kind: &'static str,
    results: Vec<SarifResult>,
}

#[derive(Serialize)]
struct Tool {
    driver: Driver,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Driver {
    name: &'static str,
    version: &'static str,
    semantic_version: &'static str,
    rules: Vec<Descriptor>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    id: String,
    short_description: Message,
    full_description: Message,
    help: Message,
    default_configuration: Configuration,
    properties: Properties,
}

#[derive(Serialize)]
struct Configuration {
    level: &'static str,
}

#[derive(Serialize)]
struct Properties {
    tags: Vec<&'static str>,
}

#[derive(Serialize)]
struct Message {
    text: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Invocation {
    execution_successful: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_execution_notifications: Vec<Notification>,
}

#[derive(Serialize)]
struct Notification {
    level: &'static str,
    message: Message,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SarifResult {
    rule_id: String,
    rule_index: usize,
    level: &'static str,
    message: Message,
    locations: Vec<Location>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Location {
    #[serde(skip_serializing_if = "Option::is_none")]
    physical_location: Option<PhysicalLocation>,
    logical_locations: Vec<LogicalLocation>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PhysicalLocation {
    artifact_location: ArtifactLocation,
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<Region>,
}

#[derive(Serialize)]
struct ArtifactLocation {
    uri: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Region {
    start_line: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_column: Option<usize>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LogicalLocation {
    fully_qualified_name: String,
    kind: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Kind, ResourceId};
    use crate::plan::{Action, Violation};
    use crate::report::tests::desired;
    use serde_json::Value;

    fn open_ingress(resource: &str) -> Violation {
        Violation {
            world: None,
            rule: "no-open-ingress",
            resource: resource.into(),
            path: "spec.ingress[2].from.cidr".into(),
            message: "allows ingress from the whole internet (0.0.0.0/0)".into(),
            fix: "allow a security group".into(),
        }
    }

    fn sarif(plan: &Plan) -> Value {
        serde_json::from_str(&render(plan, &desired(), Path::new("/repo")))
            .expect("render writes JSON")
    }

    #[test]
    fn the_log_names_sarif_2_1_0_and_stackwarden() {
        let log = sarif(&Plan::default());
        assert_eq!(log["version"], "2.1.0");
        assert_eq!(log["$schema"], SCHEMA_URI);
        assert_eq!(log["runs"][0]["tool"]["driver"]["name"], "stackwarden");
        assert_eq!(log["runs"][0]["results"], serde_json::json!([]));
        // No automationDetails: upload-sarif's `category` sets it only where it is absent.
        assert!(log["runs"][0].get("automationDetails").is_none());
    }

    #[test]
    fn every_policy_rule_and_drift_has_a_descriptor_with_help() {
        let log = sarif(&Plan::default());
        let rules = log["runs"][0]["tool"]["driver"]["rules"]
            .as_array()
            .expect("rules");
        let ids: Vec<&str> = rules.iter().filter_map(|r| r["id"].as_str()).collect();
        for (id, _) in crate::policy::RULES.iter().chain(LIVE_ONLY_RULES.iter()) {
            assert!(ids.contains(id), "{id} has no descriptor: {ids:?}");
            assert_ne!(
                help(id),
                help("an-unknown-rule"),
                "{id} has no specific help"
            );
        }
        assert!(ids.contains(&DRIFT_RULE));
        for r in rules {
            for key in ["shortDescription", "fullDescription", "help"] {
                let text = r[key]["text"].as_str().unwrap_or_default();
                assert!(!text.is_empty(), "{} lacks {key}", r["id"]);
            }
        }
    }

    #[test]
    fn a_violation_is_an_error_at_the_line_that_declares_its_resource() {
        let plan = Plan {
            violations: vec![open_ingress("SecurityGroup/observability")],
            ..Plan::default()
        };
        let log = sarif(&plan);
        let result = &log["runs"][0]["results"][0];
        assert_eq!(result["ruleId"], "no-open-ingress");
        assert_eq!(result["level"], "error");
        let rules = &log["runs"][0]["tool"]["driver"]["rules"];
        let index = result["ruleIndex"].as_u64().expect("ruleIndex") as usize;
        assert_eq!(rules[index]["id"], "no-open-ingress");
        let message = result["message"]["text"].as_str().unwrap_or_default();
        assert!(
            message.contains("SecurityGroup/observability spec.ingress[2].from.cidr: allows ingress from the whole internet")
                && message.contains("Fix: allow a security group"),
            "{message}"
        );
        let physical = &result["locations"][0]["physicalLocation"];
        assert_eq!(
            physical["artifactLocation"]["uri"],
            "manifests/network.yaml"
        );
        assert_eq!(physical["region"]["startLine"], 6);
        assert_eq!(physical["region"]["startColumn"], 3);
        assert_eq!(
            result["locations"][0]["logicalLocations"][0]["fullyQualifiedName"],
            "SecurityGroup/observability"
        );
    }

    #[test]
    fn an_unmanaged_container_has_only_a_logical_location() {
        let plan = Plan {
            violations: vec![Violation {
                world: None,
                rule: "no-privileged-containers",
                resource: "docker container adhoc".into(),
                path: "HostConfig.Privileged".into(),
                message: "runs privileged".into(),
                fix: "remove it".into(),
            }],
            ..Plan::default()
        };
        let location = &sarif(&plan)["runs"][0]["results"][0]["locations"][0];
        assert!(location.get("physicalLocation").is_none(), "{location}");
        assert_eq!(
            location["logicalLocations"][0]["fullyQualifiedName"],
            "docker container adhoc"
        );
    }

    #[test]
    fn drift_is_a_warning_and_other_changes_are_not_results() {
        let drifted = Change::new(
            ResourceId::new(Kind::SecurityGroup, "observability"),
            Action::Update,
        )
        .caused_by(Cause::Drift)
        .with_fields(vec![
            FieldChange::removed("ingress[tcp/22 0.0.0.0/0]", "present"),
            FieldChange::secret("value"),
        ]);
        let plan = Plan {
            changes: vec![
                drifted,
                Change::new(ResourceId::new(Kind::Bucket, "data"), Action::Create),
                Change::new(ResourceId::new(Kind::Bucket, "logs"), Action::Update)
                    .caused_by(Cause::Manifest),
            ],
            ..Plan::default()
        };
        let log = sarif(&plan);
        let results = log["runs"][0]["results"].as_array().expect("results");
        assert_eq!(results.len(), 1, "{results:?}");
        assert_eq!(results[0]["ruleId"], DRIFT_RULE);
        assert_eq!(results[0]["level"], "warning");
        assert_eq!(
            results[0]["message"]["text"],
            "SecurityGroup/observability drifted from the manifests: apply would update it. Differs: ingress[tcp/22 0.0.0.0/0]: present → (none); value: value differs."
        );
    }

    #[test]
    fn a_rule_no_table_knows_still_resolves() {
        let mut v = open_ingress("SecurityGroup/observability");
        v.rule = "some-future-rule";
        let log = sarif(&Plan {
            violations: vec![v],
            ..Plan::default()
        });
        let index = log["runs"][0]["results"][0]["ruleIndex"]
            .as_u64()
            .expect("ruleIndex") as usize;
        assert_eq!(
            log["runs"][0]["tool"]["driver"]["rules"][index]["id"],
            "some-future-rule"
        );
    }

    #[test]
    fn errors_make_the_invocation_unsuccessful_and_become_notifications() {
        let plan = Plan {
            problems: vec![crate::plan::Problem::Unreachable(
                crate::plan::ProviderFailure::new(
                    crate::plan::World::Aws,
                    crate::plan::ErrorClass::Transient,
                    "connection refused",
                ),
            )],
            ..Plan::default()
        };
        let invocation = &sarif(&plan)["runs"][0]["invocations"][0];
        assert_eq!(invocation["executionSuccessful"], false);
        assert_eq!(
            invocation["toolExecutionNotifications"][0]["message"]["text"],
            "aws: connection refused"
        );
    }

    #[test]
    fn manifest_paths_are_relative_to_the_working_directory() {
        let root = Path::new("/work/repo");
        let uri = |p: &str| artifact_uri(Path::new(p), root);
        assert_eq!(uri("manifests/a.yaml").as_deref(), Some("manifests/a.yaml"));
        assert_eq!(
            uri("./manifests/a.yaml").as_deref(),
            Some("manifests/a.yaml")
        );
        assert_eq!(
            uri("/work/repo/manifests/a.yaml").as_deref(),
            Some("manifests/a.yaml")
        );
        assert_eq!(
            uri("/elsewhere/my manifests/a.yaml").as_deref(),
            Some("file:///elsewhere/my%20manifests/a.yaml")
        );
        assert_eq!(
            uri("odd:name#1.yaml").as_deref(),
            Some("odd%3Aname%231.yaml")
        );
        assert_eq!(uri(""), None);
    }
}
