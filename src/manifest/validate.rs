//! Cross-field and cross-resource checks of typed resources: references, exactly-one-of
//! fields, formats, cycles. Pure: it reads resources and reports, it never fixes.

use super::schema::fix_for_unknown;
use crate::model::stack::MAX_ACKNOWLEDGEMENT;
use crate::model::{
    ConfigFileSpec, ContainerSpec, FileType, InstanceSpec, Kind, LookupSpec, LookupType, Peer,
    Protocol, Resource, ResourceId, Spec, StackSpec,
};
use std::collections::{BTreeMap, BTreeSet};

/// A problem before it is located: resource, field path, message, fix.
pub type Finding = (ResourceId, String, String, String);

/// What a reference may point at.
#[derive(Clone, Copy)]
enum Target {
    Kind(Kind),
    Lookup(LookupType),
}

struct Checker<'a> {
    by_id: BTreeMap<(Kind, &'a str), &'a Resource>,
    out: Vec<Finding>,
}

/// Checks every resource; `env` is the environment the values came from.
pub fn check(resources: &[Resource], env: Option<&str>) -> Vec<Finding> {
    let mut c = Checker {
        by_id: resources
            .iter()
            .map(|r| ((r.id.kind, r.id.name.as_str()), r))
            .collect(),
        out: Vec::new(),
    };
    for r in resources {
        let id = &r.id;
        match &r.spec {
            Spec::Stack(s) => c.stack(id, s, env),
            Spec::Lookup(s) => c.lookup(id, s),
            Spec::SecurityGroup(s) => {
                c.reference(id, "spec.vpc", &s.vpc, &[Target::Lookup(LookupType::Vpc)]);
                for (i, rule) in s.ingress.iter().enumerate() {
                    c.rule(
                        id,
                        &format!("spec.ingress[{i}]"),
                        "from",
                        rule.protocol,
                        &rule.ports,
                        &rule.from,
                    );
                }
                for (i, rule) in s.egress.iter().enumerate() {
                    c.rule(
                        id,
                        &format!("spec.egress[{i}]"),
                        "to",
                        rule.protocol,
                        &rule.ports,
                        &rule.to,
                    );
                }
            }
            Spec::Bucket(s) => {
                let name = s.name.replace("${account}", "123456789012");
                let valid = (3..=63).contains(&name.len())
                    && name.chars().all(|ch| {
                        ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-' || ch == '.'
                    });
                if !valid {
                    c.finding(
                        id,
                        "spec.name",
                        format!("`{}` is not a valid S3 bucket name", s.name),
                        "use 3–63 lowercase letters, digits, dashes and dots",
                    );
                }
                let mut prefixes = BTreeSet::new();
                for (i, rule) in s.lifecycle.iter().enumerate() {
                    if !prefixes.insert(&rule.prefix) {
                        c.finding(
                            id,
                            &format!("spec.lifecycle[{i}].prefix"),
                            format!("prefix `{}` has two lifecycle rules", rule.prefix),
                            "keep one rule per prefix",
                        );
                    }
                    if rule.expiration_days == 0 {
                        c.finding(
                            id,
                            &format!("spec.lifecycle[{i}].expirationDays"),
                            "expiry of 0 days",
                            "use at least 1 day",
                        );
                    }
                }
                if let Some(policy) = &s.policy {
                    let problem = match serde_json::from_str::<serde_json::Value>(policy) {
                        Err(e) => Some(format!("the policy is not JSON: {e}")),
                        Ok(v) if v.get("Statement").is_none() => {
                            Some("the policy has no Statement".to_string())
                        }
                        Ok(_) => None,
                    };
                    if let Some(problem) = problem {
                        c.finding(
                            id,
                            "spec.policy",
                            problem,
                            "give an IAM policy document as JSON text (policy: |), or remove it: no policy is the default",
                        );
                    }
                }
            }
            Spec::Parameter(s) => {
                if s.value_from.env.is_some() == s.value_from.file.is_some() {
                    c.finding(id, "spec.valueFrom", "set exactly one of `env` and `file`",
                        "name the environment variable (env:) or the file (file:) holding the secret");
                }
                if !s.name.starts_with('/') {
                    c.finding(
                        id,
                        "spec.name",
                        format!("`{}` is not a path-style parameter name", s.name),
                        "start the name with `/`, e.g. /durable-code/dev/grafana/admin-password",
                    );
                }
            }
            Spec::Instance(s) => c.instance(id, s),
            Spec::TargetGroup(s) => {
                c.reference(id, "spec.vpc", &s.vpc, &[Target::Lookup(LookupType::Vpc)]);
                for (i, t) in s.targets.iter().enumerate() {
                    c.reference(
                        id,
                        &format!("spec.targets[{i}].instance"),
                        &t.instance,
                        &[Target::Kind(Kind::Instance)],
                    );
                }
                if !s.health_check.path.starts_with('/') {
                    c.finding(
                        id,
                        "spec.healthCheck.path",
                        "health check path must start with `/`",
                        "write e.g. /-/ready",
                    );
                }
            }
            Spec::ListenerRule(s) => {
                c.reference(
                    id,
                    "spec.loadBalancer",
                    &s.load_balancer,
                    &[Target::Lookup(LookupType::LoadBalancer)],
                );
                c.reference(
                    id,
                    "spec.forwardTo",
                    &s.forward_to,
                    &[Target::Kind(Kind::TargetGroup)],
                );
                if !(1..=50_000).contains(&s.priority) {
                    c.finding(
                        id,
                        "spec.priority",
                        format!("priority {} is out of range", s.priority),
                        "use 1–50000",
                    );
                }
                if s.path_patterns.is_empty() {
                    c.finding(
                        id,
                        "spec.pathPatterns",
                        "no path patterns",
                        "list at least one, e.g. /collect",
                    );
                }
                if s.listeners.is_empty() {
                    c.finding(
                        id,
                        "spec.listeners",
                        "no listeners",
                        "list the ALB listener ports, e.g. - port: 80",
                    );
                }
            }
            Spec::ConfigFile(s) => c.config_file(id, s),
            Spec::Container(s) => c.container(id, s),
        }
    }
    c.config_paths(resources);
    c.dependency_cycles(resources);
    c.file_owners(resources);
    c.out
}

/// The container that writes the host root: the one mounting it read-write (on a host,
/// stackwarden's own). Its user, groups and capabilities bound what it can give a file.
struct RootWriter<'a> {
    name: &'a str,
    user: String,
    uid: u32,
    /// The primary group and every `groupAdd`: the groups a file it writes may be given.
    gids: BTreeSet<u32>,
    /// Root that kept CAP_CHOWN may give any owner and group. A non-root user never may:
    /// Docker adds capabilities to the bounding set only, and `no-new-privileges` keeps it so.
    chown: bool,
}

impl<'a> RootWriter<'a> {
    /// The writer among `resources`, if a container mounts the host root read-write; none
    /// when the daemon runs outside the stack's containers (a person's or CI's apply).
    fn find(resources: &'a [Resource]) -> Option<RootWriter<'a>> {
        let root = resources.iter().find_map(|r| match &r.spec {
            Spec::Stack(s) => Some(s.host.root.clone()),
            _ => None,
        })?;
        let (name, spec) = resources.iter().find_map(|r| match &r.spec {
            Spec::Container(c)
                if c.mounts.iter().any(|m| {
                    !m.read_only
                        && m.host_path.as_deref().is_some_and(|p| {
                            let p = p.trim_end_matches('/');
                            p.is_empty() || p == "." || std::path::Path::new(p) == root
                        })
                }) =>
            {
                Some((r.id.name.as_str(), c))
            }
            _ => None,
        })?;
        let user = spec.user.clone().unwrap_or_default();
        let (uid, gid) = match user.split_once(':') {
            Some((u, g)) => (u.parse().ok()?, g.parse().ok()?),
            // No gid: an image without /etc/passwd runs the user in group 0.
            None if user.is_empty() => (0, 0),
            None => (user.parse().ok()?, 0),
        };
        let mut gids: BTreeSet<u32> = spec
            .group_add
            .iter()
            .filter_map(|g| g.parse().ok())
            .collect();
        gids.insert(gid);
        let named = |list: &[String], cap: &str| {
            list.iter().any(|c| {
                let c = c.to_ascii_uppercase();
                c == "ALL" || c.trim_start_matches("CAP_") == cap
            })
        };
        Some(RootWriter {
            name,
            user,
            uid,
            gids,
            chown: uid == 0 && (!named(&spec.cap_drop, "CHOWN") || named(&spec.cap_add, "CHOWN")),
        })
    }
}

impl Checker<'_> {
    fn finding(
        &mut self,
        id: &ResourceId,
        path: &str,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.out
            .push((id.clone(), path.to_string(), message.into(), fix.into()));
    }

    fn reference(&mut self, id: &ResourceId, path: &str, name: &str, targets: &[Target]) {
        let found = targets.iter().any(|t| match t {
            Target::Kind(k) => self.by_id.contains_key(&(*k, name)),
            Target::Lookup(lt) => matches!(
                self.by_id.get(&(Kind::Lookup, name)).map(|r| &r.spec),
                Some(Spec::Lookup(l)) if l.kind == *lt
            ),
        });
        if found {
            return;
        }
        let wanted: Vec<String> = targets
            .iter()
            .map(|t| match t {
                Target::Kind(k) => k.to_string(),
                Target::Lookup(lt) => format!("Lookup (type {})", lt.as_str()),
            })
            .collect();
        let candidates: Vec<&str> = self
            .by_id
            .iter()
            .filter(|((k, _), r)| {
                targets.iter().any(|t| match t {
                    Target::Kind(want) => want == k,
                    Target::Lookup(lt) => matches!(&r.spec, Spec::Lookup(l) if l.kind == *lt),
                })
            })
            .map(|((_, n), _)| *n)
            .collect();
        let fix = if candidates.is_empty() {
            format!("declare a {} named `{name}`", wanted.join(" or "))
        } else {
            fix_for_unknown(name, &candidates)
                .replace("remove it, or use one of", "name one that exists")
        };
        self.finding(
            id,
            path,
            format!(
                "refers to `{name}`, but no {} has that name",
                wanted.join(" or ")
            ),
            fix,
        );
    }

    fn stack(&mut self, id: &ResourceId, s: &StackSpec, env: Option<&str>) {
        if let Some(env) = env
            && s.environment != env
        {
            self.finding(
                id,
                "spec.environment",
                format!(
                    "says environment `{}` but the values are for `{env}`",
                    s.environment
                ),
                "write `environment: ${env}` so it follows --env",
            );
        }
        if s.reconcile_interval.as_secs() < 5 {
            self.finding(
                id,
                "spec.reconcileInterval",
                "interval under 5s would hammer the AWS APIs",
                "use 30s or more",
            );
        }
        self.acknowledgements(id, s);
        for (i, rcv) in s.alerts.receivers.iter().enumerate() {
            if rcv.signing_key.is_some() && rcv.kind != crate::model::ReceiverType::Webhook {
                self.finding(
                    id,
                    &format!("spec.alerts.receivers[{i}].signingKey"),
                    "only a webhook receiver signs its bodies",
                    "remove signingKey, or set type: webhook",
                );
            }
            if let Some(key) = &rcv.signing_key
                && key.env.is_some() == key.file.is_some()
            {
                self.finding(
                    id,
                    &format!("spec.alerts.receivers[{i}].signingKey"),
                    "names neither or both of env and file",
                    "give exactly one: `env: VARIABLE` or `file: /path/to/key`",
                );
            }
            self.receiver(id, i, rcv);
        }
    }

    /// A receiver's URL, trust, credentials and headers. A credential is only ever a file's
    /// content: one written in the URL or a header would sit in the repository and in
    /// every plan, so it is refused (the message never repeats it).
    fn receiver(&mut self, id: &ResourceId, i: usize, rcv: &crate::model::Receiver) {
        let at = |field: &str| format!("spec.alerts.receivers[{i}].{field}");
        match rcv.url.parse::<http::Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {
                if u.authority().is_some_and(|a| a.as_str().contains('@')) {
                    self.finding(
                        id,
                        &at("url"),
                        "the URL carries credentials (user:password@)",
                        "remove them from the URL and use auth.basic { username, passwordFile } or auth.bearerTokenFile",
                    );
                }
                if rcv.tls.is_some() && u.scheme_str() == Some("http") {
                    self.finding(
                        id,
                        &at("tls"),
                        "tls applies only to an https:// URL",
                        "use https://, or remove tls",
                    );
                }
            }
            _ => {
                // Shown without its path: a webhook's path may be its secret.
                self.finding(
                    id,
                    &at("url"),
                    "is not an absolute http:// or https:// URL with a host",
                    "write e.g. https://alertmanager.example:9093",
                )
            }
        }
        if let Some(auth) = &rcv.auth {
            let by_file = auth.bearer_token_file.is_some();
            let by_parameter = auth.bearer_token_from_parameter.is_some();
            if auth.basic.is_some() == (by_file || by_parameter) || (by_file && by_parameter) {
                self.finding(
                    id,
                    &at("auth"),
                    "names neither or more than one of basic, bearerTokenFile and bearerTokenFromParameter",
                    "give exactly one: basic: { username, passwordFile } or bearerTokenFile: /path (or bearerTokenFromParameter: <Parameter>)",
                );
            }
            if let Some(b) = &auth.basic
                && b.password_file.is_some() == b.password_from_parameter.is_some()
            {
                self.finding(
                    id,
                    &at("auth.basic"),
                    "names neither or both of passwordFile and passwordFromParameter",
                    "give exactly one: passwordFile: /path or passwordFromParameter: <Parameter>",
                );
            }
            let named = [
                (
                    "auth.basic.passwordFromParameter",
                    auth.basic
                        .as_ref()
                        .and_then(|b| b.password_from_parameter.as_ref()),
                ),
                (
                    "auth.bearerTokenFromParameter",
                    auth.bearer_token_from_parameter.as_ref(),
                ),
            ];
            for (field, name) in named {
                if let Some(name) = name
                    && !self.by_id.contains_key(&(Kind::Parameter, name.as_str()))
                {
                    self.finding(
                        id,
                        &at(field),
                        format!("`{name}` is not a declared Parameter"),
                        "name a Parameter's metadata.name",
                    );
                }
            }
        }
        if let Some(b) = rcv.auth.as_ref().and_then(|a| a.basic.as_ref())
            && (b.username.is_empty() || b.username.contains(':'))
        {
            self.finding(
                id,
                &at("auth.basic.username"),
                "is empty or contains ':'",
                "give the user name alone; the password comes from passwordFile",
            );
        }
        for (name, value) in &rcv.headers {
            let path = at(&format!("headers.{name}"));
            match http::HeaderName::from_bytes(name.as_bytes()) {
                Err(_) => self.finding(
                    id,
                    &path,
                    "is not a valid HTTP header name",
                    "use letters, digits and '-', e.g. X-Scope-OrgID",
                ),
                Ok(h)
                    if h == http::header::AUTHORIZATION
                        || h == http::header::PROXY_AUTHORIZATION
                        || h == http::header::COOKIE =>
                {
                    self.finding(
                        id,
                        &path,
                        "a credential header cannot be written in a manifest",
                        "use auth.bearerTokenFile or auth.basic with passwordFile",
                    )
                }
                Ok(h)
                    if h == http::header::HOST
                        || h == http::header::CONTENT_TYPE
                        || h == http::header::CONTENT_LENGTH =>
                {
                    self.finding(
                        id,
                        &path,
                        "is set by the client itself",
                        "remove this header",
                    )
                }
                Ok(_) => {}
            }
            if http::HeaderValue::from_str(value).is_err() {
                self.finding(
                    id,
                    &path,
                    "the value is not a valid HTTP header value",
                    "use visible ASCII without line breaks",
                );
            }
        }
    }

    /// Acknowledgements are reviewed like code: each names what it covers, why, and until
    /// when, and none runs longer than [`MAX_ACKNOWLEDGEMENT`] (an expired one only warns:
    /// `stackwarden validate` says so).
    fn acknowledgements(&mut self, id: &ResourceId, s: &StackSpec) {
        let now = std::time::SystemTime::now();
        for (i, a) in s.acknowledgements.iter().enumerate() {
            let at = |field: &str| format!("spec.acknowledgements[{i}]{field}");
            let known = a
                .resource
                .split_once('/')
                .and_then(|(k, n)| Some((Kind::parse(k)?, n)))
                .is_some_and(|(k, n)| self.by_id.contains_key(&(k, n)));
            if !known {
                self.finding(
                    id,
                    &at(".resource"),
                    format!("`{}` is not a declared resource", a.resource),
                    "name one as Kind/name, e.g. Container/loki",
                );
            }
            if a.fields.is_empty() && a.rule.is_none() {
                self.finding(
                    id,
                    &at(""),
                    "covers nothing: it names neither fields nor a rule",
                    "add `fields: [spec.user]` or `rule: no-root-containers`",
                );
            }
            if let Some(rule) = &a.rule
                && !crate::policy::RULES.iter().any(|(r, _)| r == rule)
            {
                let names: Vec<&str> = crate::policy::RULES.iter().map(|(r, _)| *r).collect();
                self.finding(
                    id,
                    &at(".rule"),
                    format!("`{rule}` is not a policy rule"),
                    fix_for_unknown(rule, &names),
                );
            }
            if a.reason.trim().is_empty() {
                self.finding(
                    id,
                    &at(".reason"),
                    "an acknowledgement needs a reason",
                    "say why the drift may stand and who decided, e.g. `reason: loki migration, ops-123`",
                );
            }
            match (&a.expires, a.expires_at()) {
                (None, _) => self.finding(
                    id,
                    &at(".expires"),
                    "an acknowledgement needs an expiry",
                    "add `expires: 2026-12-31` (at most 90 days ahead)",
                ),
                (Some(text), None) => self.finding(
                    id,
                    &at(".expires"),
                    format!("`{text}` is not a date or an RFC 3339 time"),
                    "write `2026-12-31` or `2026-12-31T18:00:00Z`",
                ),
                (Some(text), Some(t))
                    if t.duration_since(now).unwrap_or_default() > MAX_ACKNOWLEDGEMENT =>
                {
                    self.finding(
                        id,
                        &at(".expires"),
                        format!("`{text}` is more than 90 days ahead"),
                        "acknowledge for at most 90 days, and fix the manifest or the stack meanwhile",
                    )
                }
                _ => {}
            }
        }
    }

    fn lookup(&mut self, id: &ResourceId, s: &LookupSpec) {
        match s.kind {
            LookupType::Vpc if s.tags.is_empty() => {
                self.finding(
                    id,
                    "spec.tags",
                    "a vpc lookup needs tags",
                    "add e.g. tags: {Name: durable-code-dev-vpc}",
                );
            }
            LookupType::Subnet => {
                if s.tags.is_empty() {
                    self.finding(
                        id,
                        "spec.tags",
                        "a subnet lookup needs tags",
                        "add e.g. tags: {Tier: private}",
                    );
                }
                match &s.vpc {
                    Some(vpc) => {
                        self.reference(id, "spec.vpc", vpc, &[Target::Lookup(LookupType::Vpc)])
                    }
                    None => self.finding(
                        id,
                        "spec.vpc",
                        "a subnet lookup needs the vpc it lives in",
                        "add `vpc:` naming the vpc Lookup",
                    ),
                }
            }
            LookupType::SecurityGroup | LookupType::LoadBalancer | LookupType::InstanceProfile
                if s.name.is_none() =>
            {
                self.finding(
                    id,
                    "spec.name",
                    format!("a {} lookup needs a name", s.kind.as_str()),
                    "add `name:` as in the naming contract",
                );
            }
            _ => {}
        }
        if s.kind == LookupType::SecurityGroup
            && let Some(vpc) = &s.vpc
        {
            self.reference(id, "spec.vpc", vpc, &[Target::Lookup(LookupType::Vpc)]);
        }
    }

    fn rule(
        &mut self,
        id: &ResourceId,
        path: &str,
        side: &str,
        protocol: Protocol,
        ports: &[u16],
        peer: &Peer,
    ) {
        match (protocol, ports.is_empty()) {
            (Protocol::All, false) => self.finding(
                id,
                &format!("{path}.ports"),
                "protocol `all` covers every port",
                "remove ports, or use tcp/udp",
            ),
            (Protocol::Tcp | Protocol::Udp, true) => self.finding(
                id,
                &format!("{path}.ports"),
                "no ports",
                "list the ports, e.g. ports: [4317]",
            ),
            _ => {}
        }
        if ports.contains(&0) {
            self.finding(id, &format!("{path}.ports"), "port 0", "use ports 1–65535");
        }
        match (&peer.security_group, &peer.cidr) {
            (Some(sg), None) => self.reference(
                id,
                &format!("{path}.{side}.securityGroup"),
                sg,
                &[
                    Target::Kind(Kind::SecurityGroup),
                    Target::Lookup(LookupType::SecurityGroup),
                ],
            ),
            (None, Some(cidr)) => {
                if !valid_cidr(cidr) {
                    self.finding(
                        id,
                        &format!("{path}.{side}.cidr"),
                        format!("`{cidr}` is not a CIDR block"),
                        "write e.g. 10.0.0.0/16",
                    );
                }
            }
            _ => self.finding(
                id,
                &format!("{path}.{side}"),
                "set exactly one of `securityGroup` and `cidr`",
                "name a security group (preferred) or a CIDR block",
            ),
        }
    }

    fn instance(&mut self, id: &ResourceId, s: &InstanceSpec) {
        self.reference(
            id,
            "spec.subnet",
            &s.subnet,
            &[Target::Lookup(LookupType::Subnet)],
        );
        self.reference(
            id,
            "spec.instanceProfile",
            &s.instance_profile,
            &[Target::Lookup(LookupType::InstanceProfile)],
        );
        for (i, sg) in s.security_groups.iter().enumerate() {
            self.reference(
                id,
                &format!("spec.securityGroups[{i}]"),
                sg,
                &[
                    Target::Kind(Kind::SecurityGroup),
                    Target::Lookup(LookupType::SecurityGroup),
                ],
            );
        }
        if s.security_groups.is_empty() {
            self.finding(
                id,
                "spec.securityGroups",
                "no security groups",
                "name the observability SecurityGroup",
            );
        }
        if s.ami.id.is_some() == s.ami.ssm_parameter.is_some() {
            self.finding(
                id,
                "spec.ami",
                "set exactly one of `id` and `ssmParameter`",
                "remove spec.ami to use the newest Amazon Linux 2023, or pin `id: ami-…`",
            );
        }
        let hop = s.metadata_options.http_put_response_hop_limit;
        if !(1..=64).contains(&hop) {
            self.finding(
                id,
                "spec.metadataOptions.httpPutResponseHopLimit",
                format!("hop limit {hop} is out of range"),
                "use 2 so containers reach IMDS",
            );
        }
        if s.root_volume.size_gib < 8 {
            self.finding(
                id,
                "spec.rootVolume.sizeGib",
                "root volume under 8 GiB cannot hold Amazon Linux",
                "use 30",
            );
        }
        if let Some(b) = &s.bootstrap {
            self.bootstrap(id, s, b);
        }
    }

    fn bootstrap(&mut self, id: &ResourceId, s: &InstanceSpec, b: &crate::model::Bootstrap) {
        if s.user_data.is_some() {
            self.finding(
                id,
                "spec.userData",
                "both `userData` and `bootstrap` are set; the bootstrap renders the user data",
                "remove spec.userData (the bootstrap installs Docker), or remove spec.bootstrap",
            );
        }
        self.reference(
            id,
            "spec.bootstrap.bucket",
            &b.bucket,
            &[Target::Kind(Kind::Bucket)],
        );
        if !b.host_root.starts_with('/') {
            self.finding(
                id,
                "spec.bootstrap.hostRoot",
                format!("`{}` is not an absolute path", b.host_root),
                "use the Stack's host root, e.g. /opt/observability",
            );
        }
        if b.artifact == crate::model::ArtifactKind::None {
            return;
        }
        self.reference(
            id,
            "spec.bootstrap.container",
            &b.container,
            &[Target::Kind(Kind::Container)],
        );
        let hex = b.sha256.len() == 64 && b.sha256.bytes().all(|c| c.is_ascii_hexdigit());
        if !hex {
            self.finding(
                id,
                "spec.bootstrap.sha256",
                format!("`{}` is not a SHA-256 (64 hex digits)", b.sha256),
                "publish the artifact with `stackwarden publish --artifact FILE` and pin the digest it prints (without `sha256:`)",
            );
        }
        let text = b.trust.trim();
        let key = if text.lines().count() >= 2 {
            minisign::PublicKeyBox::from_string(text).and_then(|k| k.into_public_key())
        } else {
            minisign::PublicKey::from_base64(text)
        };
        if let Err(e) = key {
            self.finding(
                id,
                "spec.bootstrap.trust",
                format!("not a minisign public key: {e}"),
                "paste the text of stackwarden.pub (`stackwarden keygen` writes it)",
            );
        }
    }

    fn config_file(&mut self, id: &ResourceId, s: &ConfigFileSpec) {
        let p = std::path::Path::new(&s.path);
        if s.path.is_empty()
            || p.is_absolute()
            || p.components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            self.finding(
                id,
                "spec.path",
                format!("`{}` must be a relative path inside the host root", s.path),
                "write it relative to the host root, e.g. grafana/grafana.ini, without `..`",
            );
        } else if p
            .components()
            .next()
            .is_some_and(|c| c.as_os_str() == crate::model::RESERVED_DIR)
        {
            self.finding(
                id,
                "spec.path",
                format!(
                    "`{}` is in {}/, where stackwarden keeps its record of the files it wrote",
                    s.path,
                    crate::model::RESERVED_DIR
                ),
                "choose a path outside that folder",
            );
        }
        match s.mode_bits() {
            Some(bits) if bits <= 0o7777 => {}
            _ => self.finding(
                id,
                "spec.mode",
                format!("`{}` is not an octal file mode", s.mode_text()),
                "quote an octal mode, e.g. \"0640\"",
            ),
        }
        if let Some(param) = &s.from_parameter {
            self.reference(
                id,
                "spec.fromParameter",
                param,
                &[Target::Kind(Kind::Parameter)],
            );
            if s.kind == FileType::Directory || s.content.is_some() || s.source.is_some() {
                self.finding(
                    id,
                    "spec.fromParameter",
                    "a secret file takes its whole content from the Parameter",
                    "remove content, source and type: directory from this ConfigFile",
                );
            }
            return;
        }
        match (s.kind, s.content.is_some(), s.source.is_some()) {
            // The loader reads `source` into `content` (and reports both being set), so a file
            // is valid here when it has content.
            // A source without content is one the loader could not read, and reported.
            (FileType::Directory, false, false)
            | (FileType::File, true, _)
            | (FileType::File, false, true) => {}
            (FileType::Directory, _, _) => self.finding(
                id,
                "spec.content",
                "a directory has no content",
                "remove content and source",
            ),
            (FileType::File, false, _) => self.finding(
                id,
                "spec",
                "a file needs `content` or `source`",
                "inline the content, or name a repository file with source:",
            ),
        }
    }

    fn container(&mut self, id: &ResourceId, s: &ContainerSpec) {
        if let Some(user) = &s.user {
            let numeric = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit());
            let ok = match user.split_once(':') {
                Some((u, g)) => numeric(u) && numeric(g),
                None => numeric(user),
            };
            if !ok {
                self.finding(
                    id,
                    "spec.user",
                    format!("`{user}` is not a numeric uid[:gid]"),
                    "write numeric ids, e.g. \"10001:10001\" (images here have no /etc/passwd)",
                );
            }
        }
        if let Some(allow) = &s.allow_root
            && allow.reason.trim().is_empty()
        {
            self.finding(
                id,
                "spec.allowRoot.reason",
                "an exception to the no-root rule needs a reason",
                "say why this container must run as root",
            );
        }
        if s.memory.0 < (4 << 20) {
            self.finding(
                id,
                "spec.memory",
                format!("memory limit {} is below Docker's 4M minimum", s.memory),
                "set a limit such as 384M",
            );
        }
        if let Some(hc) = &s.health_check
            && hc.test.is_empty()
        {
            self.finding(
                id,
                "spec.healthCheck.test",
                "empty health check",
                "write e.g. [CMD, wget, -q, -O, /dev/null, http://127.0.0.1:3100/ready]",
            );
        }
        for (i, m) in s.mounts.iter().enumerate() {
            let path = format!("spec.mounts[{i}]");
            let set = [
                m.config_file.is_some(),
                m.host_path.is_some(),
                m.volume.is_some(),
            ];
            if set.iter().filter(|b| **b).count() != 1 {
                self.finding(
                    id,
                    &path,
                    "set exactly one of `configFile`, `hostPath` and `volume`",
                    "name a ConfigFile, a path under the host root, or a volume",
                );
            }
            if let Some(cf) = &m.config_file {
                self.reference(
                    id,
                    &format!("{path}.configFile"),
                    cf,
                    &[Target::Kind(Kind::ConfigFile)],
                );
            }
            if !m.target.starts_with('/') {
                self.finding(
                    id,
                    &format!("{path}.target"),
                    "mount target must be absolute",
                    "write e.g. /etc/loki/config.yaml",
                );
            }
        }
        for (i, d) in s.depends_on.iter().enumerate() {
            let path = format!("spec.dependsOn[{i}].container");
            self.reference(id, &path, &d.container, &[Target::Kind(Kind::Container)]);
            if d.condition == crate::model::DependsOnCondition::Healthy
                && let Some(Spec::Container(dep)) = self
                    .by_id
                    .get(&(Kind::Container, d.container.as_str()))
                    .map(|r| &r.spec)
                && dep.health_check.is_none()
            {
                self.finding(
                    id,
                    &path,
                    format!(
                        "waits for `{}` to be healthy, but it has no health check",
                        d.container
                    ),
                    "give that container a healthCheck, or use condition: started",
                );
            }
        }
    }

    /// Every owner and group a ConfigFile declares must be one the host root's writer can
    /// set: otherwise each write of that file fails on `chown` in the field, while a test
    /// daemon running as root passes.
    fn file_owners(&mut self, resources: &[Resource]) {
        let Some(w) = RootWriter::find(resources) else {
            return;
        };
        if w.chown {
            return;
        }
        let groups: Vec<String> = w.gids.iter().map(u32::to_string).collect();
        for r in resources {
            let Spec::ConfigFile(f) = &r.spec else {
                continue;
            };
            if f.owner != w.uid {
                self.finding(
                    &r.id,
                    "spec.owner",
                    format!(
                        "Container/{} writes the host root as user `{}` without CAP_CHOWN: it cannot make uid {} this file's owner",
                        w.name, w.user, f.owner
                    ),
                    format!("give this file owner {}", w.uid),
                );
            }
            if !w.gids.contains(&f.group) {
                self.finding(
                    &r.id,
                    "spec.group",
                    format!(
                        "Container/{} writes the host root in groups [{}] without CAP_CHOWN: it cannot give this file group {}",
                        w.name,
                        groups.join(", "),
                        f.group
                    ),
                    format!(
                        "give this file one of those groups, or add {} to Container/{}'s spec.groupAdd",
                        f.group, w.name
                    ),
                );
            }
        }
    }

    /// Two ConfigFiles on one path would overwrite each other on every pass.
    fn config_paths(&mut self, resources: &[Resource]) {
        let mut seen: BTreeMap<String, &ResourceId> = BTreeMap::new();
        for r in resources {
            if let Spec::ConfigFile(s) = &r.spec {
                let norm = s.path.trim_end_matches('/').to_string();
                if let Some(first) = seen.get(&norm) {
                    let msg = format!("path `{}` is also declared by {first}", s.path);
                    self.finding(&r.id, "spec.path", msg, "give each ConfigFile its own path");
                } else {
                    seen.insert(norm, &r.id);
                }
            }
        }
    }

    fn dependency_cycles(&mut self, resources: &[Resource]) {
        let deps: BTreeMap<&str, Vec<&str>> = resources
            .iter()
            .filter_map(|r| match &r.spec {
                Spec::Container(c) => Some((
                    r.id.name.as_str(),
                    c.depends_on.iter().map(|d| d.container.as_str()).collect(),
                )),
                _ => None,
            })
            .collect();
        for start in deps.keys() {
            let mut stack = vec![(*start, vec![*start])];
            while let Some((node, trail)) = stack.pop() {
                for next in deps.get(node).into_iter().flatten() {
                    if next == start {
                        let mut cycle = trail.clone();
                        cycle.push(next);
                        self.finding(
                            &ResourceId::new(Kind::Container, *start),
                            "spec.dependsOn",
                            format!("start order has a cycle: {}", cycle.join(" → ")),
                            "remove one dependsOn entry of the cycle",
                        );
                        return;
                    }
                    if !trail.contains(next) && trail.len() < deps.len() {
                        let mut t = trail.clone();
                        t.push(next);
                        stack.push((next, t));
                    }
                }
            }
        }
    }
}

/// AWS's default quota of inbound (and of outbound) rules per security group.
pub const RULES_PER_GROUP: usize = 60;

/// Warnings that do not make the manifests invalid: a security group declaring more rules
/// than AWS's default quota allows (fine where the quota was raised; otherwise the apply
/// stops at the 61st rule).
pub fn warnings(desired: &crate::model::Desired) -> Vec<String> {
    let mut out = Vec::new();
    for (r, g) in desired.security_groups() {
        // Each port of a rule is a rule to AWS.
        let inbound: usize = g.ingress.iter().map(|x| x.ports.len().max(1)).sum();
        let outbound: usize = g.egress.iter().map(|x| x.ports.len().max(1)).sum();
        for (direction, n) in [("inbound", inbound), ("outbound", outbound)] {
            if n > RULES_PER_GROUP {
                out.push(format!(
                    "{}: {} declares {n} {direction} rules; AWS allows {RULES_PER_GROUP} per group unless the quota \"Inbound or outbound rules per security group\" was raised, and an apply then fails at rule {}\n    fix: split the rules over several groups, or raise the quota first",
                    r.source, r.id, RULES_PER_GROUP + 1
                ));
            }
        }
    }
    // A plain-HTTP receiver elsewhere than this host: the payload names the stack's weak
    // points (what drifted, which rule broke) for anyone on the path to read.
    for rcv in &desired.stack.alerts.receivers {
        let Ok(uri) = rcv.url.parse::<http::Uri>() else {
            continue;
        };
        if uri.scheme_str() == Some("http") && !uri.host().is_some_and(is_loopback) {
            out.push(format!(
                "receiver {}: sends alerts over plain http:// to {}, which is not this host; the alerts name what drifted and which rules broke\n    fix: use https:// (tls.caFile for a private CA), or a relay on 127.0.0.1",
                rcv.name,
                uri.host().unwrap_or("?"),
            ));
        }
    }
    // A tag can be moved in the registry: what runs would change without a manifest edit
    // (rolled out as a planned replacement, but a change nobody reviewed). `local` runs the
    // stub image built on the machine, which has no digest to pin.
    if desired.environment != "local" {
        let unpinned: Vec<String> = desired
            .containers()
            .filter(|(_, c)| !c.image.contains("@sha256:"))
            .map(|(r, c)| format!("{} ({})", r.id, c.image))
            .collect();
        if let (Some(first), false) = (desired.containers().next(), unpinned.is_empty()) {
            out.push(format!(
                "{}: {} container images are pinned by tag, not by digest, in environment `{}`: {}\n    fix: pin each as name:tag@sha256:…, so that a tag moved in the registry cannot change what runs (a moved tag is otherwise rolled out as a planned replacement)",
                first.0.source,
                unpinned.len(),
                desired.environment,
                unpinned.join(", ")
            ));
        }
    }
    out
}

/// Whether a URL's host is this machine: `localhost`, 127.0.0.0/8 or ::1.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn valid_cidr(s: &str) -> bool {
    let Some((addr, len)) = s.split_once('/') else {
        return false;
    };
    let Ok(len) = len.parse::<u8>() else {
        return false;
    };
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => len <= 32,
        Ok(std::net::IpAddr::V6(_)) => len <= 128,
        Err(_) => false,
    }
}
