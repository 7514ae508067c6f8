//! The security policy (the seed's audit, PRs 9–10: see docs/design.md) as named rules. Each
//! check is a pure function of model types, so the same rule judges a manifest (`validate`)
//! and live state (a provider maps what it observes into the model type and calls the same
//! check).

use crate::model::{
    ConfigFileSpec, ContainerSpec, Desired, Encryption, Ensure, HttpTokens, InstanceSpec, MemSize,
    SecurityGroupSpec,
};
use crate::plan::Violation;

/// Grafana's port on the host (the seed serves it on 3001, reached only through SSM).
pub const GRAFANA_PORT: u16 = 3001;
/// The Faro receiver's payload cap (the seed lowered it from 10 MiB).
pub const FARO_MAX_PAYLOAD: u64 = 4 << 20;
/// Alloy's default `max_allowed_payload_size` when the field is absent.
const ALLOY_DEFAULT_PAYLOAD: u64 = 5 << 20;
/// Grafana's built-in admin password, the first one any attacker tries.
const GRAFANA_DEFAULT_PASSWORD: &str = "admin";
/// The shortest secret accepted, in characters.
pub const MIN_SECRET_CHARS: usize = 12;
/// Memory the OS and the Docker engine keep for themselves on the host.
const HOST_RESERVE: MemSize = MemSize(1 << 30);

/// Every rule, with what it protects against (`stackwarden validate` documents them).
pub const RULES: [(&str, &str); 13] = [
    (
        "no-root-containers",
        "containers run as a non-root numeric user unless allowRoot gives a reason",
    ),
    ("no-privileged-containers", "no container runs privileged"),
    (
        "no-new-privileges",
        "every container sets security_opt no-new-privileges",
    ),
    (
        "no-open-ingress",
        "no security-group ingress from 0.0.0.0/0 or ::/0",
    ),
    (
        "no-grafana-ingress",
        "no security-group ingress at all to Grafana's port",
    ),
    (
        "grafana-not-behind-alb",
        "Grafana is reached only through SSM port-forwarding, never the ALB",
    ),
    (
        "faro-cors-not-wildcard",
        "the Faro receiver's CORS origins are the app's domain, not *",
    ),
    (
        "faro-max-payload",
        "the Faro receiver accepts at most 4 MiB per request",
    ),
    (
        "no-default-grafana-password",
        "Grafana's admin password comes from the SSM SecureString parameter, and is not `admin`, blank or shorter than 12 characters",
    ),
    ("imdsv2-required", "the instance requires IMDSv2 tokens"),
    (
        "bucket-public-access-block",
        "all four S3 public-access-block flags are on",
    ),
    ("bucket-encryption", "the bucket has default encryption"),
    (
        "memory-budget",
        "container memory limits fit the host budget, which leaves the OS room",
    ),
];

fn violation(
    rule: &'static str,
    resource: &str,
    path: &str,
    message: String,
    fix: &str,
) -> Violation {
    Violation {
        world: None,
        rule,
        resource: resource.to_string(),
        path: path.to_string(),
        message,
        fix: fix.to_string(),
    }
}

/// True when a Docker `User` value means root (unset counts as root).
pub fn is_root_user(user: Option<&str>) -> bool {
    let user = user.unwrap_or("").trim();
    let name = user.split(':').next().unwrap_or("");
    name.is_empty() || name == "0" || name == "root"
}

/// True when the security options include no-new-privileges in any of Docker's spellings.
pub fn has_no_new_privileges(security_opt: &[String]) -> bool {
    security_opt.iter().any(|o| {
        matches!(
            o.trim(),
            "no-new-privileges" | "no-new-privileges:true" | "no-new-privileges=true"
        )
    })
}

/// Container rules: root, privileged, no-new-privileges.
pub fn check_container(resource: &str, spec: &ContainerSpec) -> Vec<Violation> {
    let mut out = Vec::new();
    let allowed = spec
        .allow_root
        .as_ref()
        .is_some_and(|a| !a.reason.trim().is_empty());
    if is_root_user(spec.user.as_deref()) && !allowed {
        let shown = match spec.user.as_deref() {
            None | Some("") => "unset, which means root".to_string(),
            Some(u) => format!("\"{u}\""),
        };
        out.push(violation(
            "no-root-containers",
            resource,
            "spec.user",
            format!("runs as root (user {shown})"),
            "set spec.user to a numeric non-root uid:gid such as \"10001:10001\", or add spec.allowRoot.reason explaining why root is needed",
        ));
    }
    if spec.privileged {
        out.push(violation(
            "no-privileged-containers",
            resource,
            "spec.privileged",
            "runs privileged".to_string(),
            "remove spec.privileged; map only the devices it needs (spec.devices) and add single capabilities",
        ));
    }
    if !has_no_new_privileges(&spec.security_opt) {
        out.push(violation(
            "no-new-privileges",
            resource,
            "spec.securityOpt",
            "does not set no-new-privileges".to_string(),
            "add \"no-new-privileges\" to spec.securityOpt",
        ));
    }
    out
}

/// Security-group rules: no open ingress, nothing to Grafana's port.
pub fn check_security_group(resource: &str, spec: &SecurityGroupSpec) -> Vec<Violation> {
    let mut out = Vec::new();
    for (i, rule) in spec.ingress.iter().enumerate() {
        if let Some(cidr) = &rule.from.cidr
            && matches!(cidr.trim(), "0.0.0.0/0" | "::/0")
        {
            out.push(violation(
                "no-open-ingress",
                resource,
                &format!("spec.ingress[{i}].from.cidr"),
                format!("allows ingress from the whole internet ({cidr})"),
                "allow a security group (the ALB's or the ECS tasks') instead of a world-open CIDR",
            ));
        }
        let to_grafana = rule.ports.contains(&GRAFANA_PORT)
            || (rule.ports.is_empty() && rule.protocol == crate::model::Protocol::All);
        if to_grafana {
            out.push(violation(
                "no-grafana-ingress",
                resource,
                &format!("spec.ingress[{i}].ports"),
                format!("allows ingress to Grafana's port {GRAFANA_PORT}"),
                "remove the rule: Grafana is reached through SSM port-forwarding only",
            ));
        }
    }
    out
}

/// Instance rules: IMDSv2.
pub fn check_instance(resource: &str, spec: &InstanceSpec) -> Vec<Violation> {
    if spec.metadata_options.http_tokens == HttpTokens::Required {
        return Vec::new();
    }
    vec![violation(
        "imdsv2-required",
        resource,
        "spec.metadataOptions.httpTokens",
        "allows IMDSv1 (httpTokens optional)".to_string(),
        "set spec.metadataOptions.httpTokens to required",
    )]
}

/// Bucket rules: public-access-block and encryption.
pub fn check_bucket(resource: &str, spec: &crate::model::BucketSpec) -> Vec<Violation> {
    let mut out = Vec::new();
    let pab = &spec.public_access_block;
    for (on, field) in [
        (pab.block_public_acls, "blockPublicAcls"),
        (pab.ignore_public_acls, "ignorePublicAcls"),
        (pab.block_public_policy, "blockPublicPolicy"),
        (pab.restrict_public_buckets, "restrictPublicBuckets"),
    ] {
        if !on {
            out.push(violation(
                "bucket-public-access-block",
                resource,
                &format!("spec.publicAccessBlock.{field}"),
                format!("public-access-block {field} is off"),
                "set it to true (or remove it: all four flags default to on)",
            ));
        }
    }
    if spec.encryption == Encryption::None {
        out.push(violation(
            "bucket-encryption",
            resource,
            "spec.encryption",
            "has no default encryption".to_string(),
            "set spec.encryption to AES256 (or aws:kms)",
        ));
    }
    out
}

/// Faro receiver rules over an Alloy config file's content.
pub fn check_alloy_config(resource: &str, spec: &ConfigFileSpec) -> Vec<Violation> {
    let Some(content) = spec.content.as_deref() else {
        return Vec::new();
    };
    if !content.contains("faro.receiver") {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut payload = None;
    for line in content.lines().map(str::trim) {
        if line.starts_with("cors_allowed_origins") && line.contains("\"*\"") {
            out.push(violation(
                "faro-cors-not-wildcard",
                resource,
                "spec.content",
                "the Faro receiver allows CORS from any origin (\"*\")".to_string(),
                "list the app's origin instead, e.g. cors_allowed_origins = [\"https://${domain}\"]",
            ));
        }
        if let Some(rest) = line.strip_prefix("max_allowed_payload_size") {
            payload = Some(
                rest.trim_start_matches([' ', '='])
                    .trim()
                    .trim_matches('"')
                    .to_string(),
            );
        }
    }
    let fix = "set max_allowed_payload_size = \"4MiB\" in the faro.receiver server block";
    match payload {
        None => out.push(violation(
            "faro-max-payload",
            resource,
            "spec.content",
            format!(
                "the Faro receiver sets no max_allowed_payload_size (Alloy's default is {} MiB)",
                ALLOY_DEFAULT_PAYLOAD >> 20
            ),
            fix,
        )),
        Some(v) => match parse_size(&v) {
            Some(bytes) if bytes <= FARO_MAX_PAYLOAD => {}
            Some(_) => out.push(violation(
                "faro-max-payload",
                resource,
                "spec.content",
                format!("the Faro receiver accepts {v} per request, more than 4MiB"),
                fix,
            )),
            None => out.push(violation(
                "faro-max-payload",
                resource,
                "spec.content",
                format!("max_allowed_payload_size \"{v}\" is not a size"),
                fix,
            )),
        },
    }
    out
}

/// Parses Alloy sizes: `4MiB`, `512KiB`, `4MB`, `1024`.
fn parse_size(s: &str) -> Option<u64> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Why a secret value is too weak to protect Grafana's admin account, if it is. Says what is
/// wrong with it, never what it is.
pub fn weak_secret(value: &str) -> Option<&'static str> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        Some("is blank")
    } else if trimmed.eq_ignore_ascii_case(GRAFANA_DEFAULT_PASSWORD) {
        Some("is Grafana's default password")
    } else if value.chars().count() < MIN_SECRET_CHARS {
        Some("is shorter than 12 characters")
    } else {
        None
    }
}

/// The weak-password rule over a Parameter's secret as read from `source` (`environment
/// variable X`, `file Y`) for the field `path`. The message names the source, never the value.
pub fn check_secret(resource: &str, path: &str, source: &str, value: &str) -> Option<Violation> {
    let why = weak_secret(value)?;
    Some(violation(
        "no-default-grafana-password",
        resource,
        path,
        format!("{source} {why}"),
        &format!(
            "set {source} to a generated password of at least {MIN_SECRET_CHARS} characters, e.g. the output of `openssl rand -base64 24`"
        ),
    ))
}

/// Memory of known instance types, for the budget check.
fn instance_memory(instance_type: &str) -> Option<MemSize> {
    let gib = match instance_type {
        "t3.micro" => 1,
        "t3.small" => 2,
        "t3.medium" | "t3a.medium" => 4,
        "t3.large" | "t3a.large" | "m5.large" => 8,
        "t3.xlarge" | "m5.xlarge" => 16,
        _ => return None,
    };
    Some(MemSize(gib << 30))
}

/// Every rule over a whole desired state, including the cross-resource ones.
pub fn check_desired(desired: &Desired) -> Vec<Violation> {
    let mut out = Vec::new();
    for (r, spec) in desired.containers() {
        out.extend(check_container(&r.id.to_string(), spec));
    }
    for (r, spec) in desired.security_groups() {
        out.extend(check_security_group(&r.id.to_string(), spec));
    }
    for (r, spec) in desired.instances() {
        out.extend(check_instance(&r.id.to_string(), spec));
    }
    for (r, spec) in desired.buckets() {
        out.extend(check_bucket(&r.id.to_string(), spec));
    }
    for (r, spec) in desired.config_files() {
        out.extend(check_alloy_config(&r.id.to_string(), spec));
        if let Some(content) = &spec.content
            && let Some(line) = content
                .lines()
                .map(str::trim)
                .find(|l| l.starts_with("admin_password") && l.contains('='))
        {
            let value = line.split_once('=').map(|(_, v)| v.trim()).unwrap_or("");
            if !value.is_empty() && !value.starts_with("$__") {
                out.push(violation(
                    "no-default-grafana-password",
                    &r.id.to_string(),
                    "spec.content",
                    "sets a literal Grafana admin_password".to_string(),
                    "remove admin_password from the file; pass the password as a file (a ConfigFile fromParameter and GF_SECURITY_ADMIN_PASSWORD__FILE)",
                ));
            }
        }
    }
    check_grafana(desired, &mut out);
    check_memory_budget(desired, &mut out);
    out
}

fn check_grafana(desired: &Desired, out: &mut Vec<Violation>) {
    let grafana_ports: Vec<u16> = std::iter::once(GRAFANA_PORT)
        .chain(
            desired
                .containers()
                .filter(|(r, _)| r.id.name == "grafana")
                .flat_map(|(_, c)| c.ports.iter().map(|p| p.container)),
        )
        .collect();
    for (r, tg) in desired.target_groups() {
        let (field, port) = if grafana_ports.contains(&tg.port) {
            ("spec.port", tg.port)
        } else if let Some(t) = tg.targets.iter().find(|t| grafana_ports.contains(&t.port)) {
            ("spec.targets", t.port)
        } else {
            continue;
        };
        out.push(violation(
            "grafana-not-behind-alb",
            &r.id.to_string(),
            field,
            format!("sends ALB traffic to Grafana's port {port}"),
            "remove Grafana from the ALB; reach it with SSM port-forwarding",
        ));
    }
    for (r, c) in desired.containers().filter(|(r, _)| r.id.name == "grafana") {
        // The password reaches Grafana as a file mounted from a secret ConfigFile; a literal
        // in the environment is both a default-password risk and readable by `docker inspect`.
        let from_secret_file = c
            .environment
            .get("GF_SECURITY_ADMIN_PASSWORD__FILE")
            .is_some_and(|v| {
                c.mounts.iter().any(|m| {
                    m.target == v.value
                        && m.config_file.as_ref().is_some_and(|f| {
                            desired
                                .config_files()
                                .any(|(fr, fs)| fr.id.name == *f && fs.is_secret())
                        })
                })
            });
        // Located at the variable when it is there, else at the map it is missing from.
        let (path, message) = if c.environment.contains_key("GF_SECURITY_ADMIN_PASSWORD") {
            (
                "spec.environment.GF_SECURITY_ADMIN_PASSWORD",
                "sets GF_SECURITY_ADMIN_PASSWORD to a literal value",
            )
        } else if !from_secret_file {
            (
                "spec.environment",
                "sets no GF_SECURITY_ADMIN_PASSWORD, so Grafana starts with admin/admin",
            )
        } else {
            continue;
        };
        out.push(violation(
            "no-default-grafana-password",
            &r.id.to_string(),
            path,
            message.to_string(),
            "mount a ConfigFile with fromParameter: <admin-password Parameter> read-only and set GF_SECURITY_ADMIN_PASSWORD__FILE to its target",
        ));
    }
}

fn check_memory_budget(desired: &Desired, out: &mut Vec<Violation>) {
    let stack = format!("Stack/{}", desired.stack_name);
    let budget = desired.stack.host.memory_budget;
    let total: u64 = desired
        .containers()
        .filter(|(r, _)| r.ensure == Ensure::Present)
        .map(|(_, c)| c.memory.0)
        .sum();
    if total > budget.0 {
        out.push(violation(
            "memory-budget",
            &stack,
            "spec.host.memoryBudget",
            format!(
                "container memory limits add up to {}, over the host budget of {budget}",
                MemSize(total)
            ),
            "lower some containers' spec.memory, or raise the budget on a larger instance type",
        ));
    }
    if let Some(mem) = instance_memory(&desired.stack.host.instance_type)
        && budget.0 + HOST_RESERVE.0 > mem.0
    {
        out.push(violation(
            "memory-budget",
            &stack,
            "spec.host.memoryBudget",
            format!(
                "a budget of {budget} leaves the OS less than {HOST_RESERVE} of the {}'s {mem}",
                desired.stack.host.instance_type
            ),
            "keep the budget at least 1G below the instance's memory (3G on a t3.medium)",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_zero_and_root_users_count_as_root() {
        assert!(is_root_user(None));
        assert!(is_root_user(Some("")));
        assert!(is_root_user(Some("0")));
        assert!(is_root_user(Some("0:0")));
        assert!(is_root_user(Some("root")));
        assert!(!is_root_user(Some("10001:10001")));
        assert!(!is_root_user(Some("65534")));
    }

    #[test]
    fn no_new_privileges_accepts_every_docker_spelling() {
        for s in [
            "no-new-privileges",
            "no-new-privileges:true",
            "no-new-privileges=true",
        ] {
            assert!(has_no_new_privileges(&[s.to_string()]), "{s}");
        }
        assert!(!has_no_new_privileges(&[
            "no-new-privileges:false".to_string()
        ]));
        assert!(!has_no_new_privileges(&[]));
    }

    #[test]
    fn admin_blank_whitespace_and_short_secrets_are_weak() {
        assert_eq!(weak_secret("admin"), Some("is Grafana's default password"));
        assert_eq!(
            weak_secret(" Admin\n"),
            Some("is Grafana's default password")
        );
        assert_eq!(weak_secret(""), Some("is blank"));
        assert_eq!(weak_secret(" \t \n"), Some("is blank"));
        assert_eq!(
            weak_secret("elevenchars"),
            Some("is shorter than 12 characters")
        );
        // Characters, not bytes: eleven two-byte letters are still eleven.
        assert_eq!(
            weak_secret("ééééééééééé"),
            Some("is shorter than 12 characters")
        );
        assert_eq!(weak_secret("twelve-chars"), None);
        assert_eq!(weak_secret("correct-horse-battery-staple"), None);
    }

    #[test]
    fn a_weak_secret_violation_names_its_source_and_never_the_value() {
        let v = check_secret(
            "Parameter/admin",
            "spec.valueFrom.env",
            "environment variable GF_PW",
            "hunter2",
        )
        .expect("weak");
        assert_eq!(v.rule, "no-default-grafana-password");
        assert_eq!(v.path, "spec.valueFrom.env");
        assert_eq!(
            v.message,
            "environment variable GF_PW is shorter than 12 characters"
        );
        assert!(
            v.fix
                .starts_with("set environment variable GF_PW to a generated password")
        );
        assert!(!format!("{v}").contains("hunter2"));
        assert!(check_secret("P/a", "p", "s", "a-long-enough-secret").is_none());
    }

    #[test]
    fn alloy_sizes_parse_binary_and_decimal_units() {
        assert_eq!(parse_size("4MiB"), Some(4 << 20));
        assert_eq!(parse_size("10MiB"), Some(10 << 20));
        assert_eq!(parse_size("4MB"), Some(4_000_000));
        assert_eq!(parse_size("lots"), None);
    }
}
