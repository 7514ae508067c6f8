//! Alerting checks (Grafana file provisioning, apiVersion 1): rule uids unique, queries valid
//! against the catalogue, conditions and thresholds that can fire, sane `for` and intervals;
//! contact points complete with secrets only as environment references; notification
//! policies that route every rule to a contact point that exists.

use super::catalogue::Catalogue;
use super::provisioning::Datasources;
use super::{ContentFile, Sink, logql, parse_duration, promql};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How much was checked, and what the contact points expect from Grafana's environment.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Rules.
    pub rules: usize,
    /// Rule queries.
    pub queries: usize,
    /// Environment variables the contact points expand.
    pub env_refs: Vec<EnvRef>,
}

/// One `$NAME` a contact point setting expands at provisioning.
#[derive(Debug, Clone)]
pub struct EnvRef {
    /// The variable.
    pub name: String,
    /// Where it is used.
    pub location: crate::model::SourceLocation,
    /// `ConfigFile/<name>`.
    pub resource: String,
    /// YAML path of the setting.
    pub path: String,
}

/// The variable a setting names, when it is `$NAME`, `${NAME}` or `$__env{NAME}`.
pub fn env_name(v: &str) -> Option<&str> {
    let v = v.trim();
    if !is_env_reference(v) || v.starts_with("$__file{") {
        return None;
    }
    let inner = v
        .strip_prefix("$__env{")
        .or_else(|| v.strip_prefix("${"))
        .and_then(|i| i.strip_suffix('}'))
        .or_else(|| v.strip_prefix('$'))?;
    Some(inner)
}

/// Severities the notification policies route.
pub const SEVERITIES: [&str; 3] = ["critical", "warning", "info"];
/// The longest `for` that still means "pending"; longer conditions belong in the query range.
const MAX_FOR: Duration = Duration::from_secs(24 * 3600);
/// Grafana evaluates no more often than every 10 s.
const MIN_INTERVAL: Duration = Duration::from_secs(10);
/// Beyond an hour between evaluations an alert is a report, not an alert.
const MAX_INTERVAL: Duration = Duration::from_secs(3600);

/// Settings that carry secrets, per contact point type: they must come from the environment.
const SECRET_SETTINGS: [(&str, &str); 7] = [
    ("slack", "url"),
    ("slack", "token"),
    ("webhook", "authorization_credentials"),
    ("webhook", "password"),
    ("prometheus-alertmanager", "basicAuthPassword"),
    ("pagerduty", "integrationKey"),
    ("telegram", "bottoken"),
];
/// The setting each contact point type cannot do without.
const REQUIRED_SETTINGS: [(&str, &[&str]); 4] = [
    ("webhook", &["url"]),
    ("email", &["addresses"]),
    ("slack", &["url", "token"]),
    ("prometheus-alertmanager", &["url"]),
];

/// An environment reference Grafana expands at provisioning: `$NAME`, `${NAME}`,
/// `$__env{NAME}` or `$__file{path}`.
pub fn is_env_reference(v: &str) -> bool {
    let v = v.trim();
    let name_ok =
        |n: &str| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if let Some(inner) = v
        .strip_prefix("$__env{")
        .or_else(|| v.strip_prefix("$__file{"))
    {
        return inner.ends_with('}') && inner.len() > 1;
    }
    if let Some(inner) = v.strip_prefix("${") {
        return inner.strip_suffix('}').is_some_and(name_ok);
    }
    v.strip_prefix('$').is_some_and(name_ok)
}

struct Route {
    receiver: Option<String>,
    matchers: Vec<(String, String, String)>,
    cont: bool,
    routes: Vec<Route>,
}

/// Checks every alerting file.
pub fn check(
    files: &[ContentFile<'_>],
    ds: &Datasources,
    cat: &Catalogue,
    sink: &mut Sink,
) -> Stats {
    let mut stats = Stats::default();
    let mut docs = Vec::new();
    for file in files {
        match crate::manifest::yaml::parse(file.text) {
            Ok(parsed) => docs.extend(parsed.into_iter().map(|d| (file, d.value))),
            Err(e) => sink.report_line(
                file,
                (e.pos.line, e.pos.column),
                "",
                format!("YAML syntax error: {}", e.message),
                "correct the YAML at this position",
            ),
        }
    }
    // Contact points first: policies and rules refer to them.
    let mut contact_points: BTreeMap<String, ()> = BTreeMap::new();
    for (file, doc) in &docs {
        check_api_version(file, doc, sink);
        for (i, cp) in array(doc, "contactPoints").iter().enumerate() {
            let path = format!("contactPoints[{i}]");
            let name = cp.get("name").and_then(Value::as_str).unwrap_or("");
            if name.is_empty() {
                sink.report(
                    file,
                    &path,
                    "the contact point has no name",
                    "set `name:`; policies route to it by name",
                );
                continue;
            }
            if contact_points.insert(name.to_string(), ()).is_some() {
                sink.report(
                    file,
                    &format!("{path}.name"),
                    format!("contact point `{name}` is declared twice"),
                    "give each contact point its own name",
                );
            }
            let receivers = array(cp, "receivers");
            if receivers.is_empty() {
                sink.report(
                    file,
                    &path,
                    format!("contact point `{name}` has no receivers"),
                    "add a receiver (webhook, email, slack, …)",
                );
            }
            for (j, r) in receivers.iter().enumerate() {
                let rpath = format!("{path}.receivers[{j}]");
                check_receiver(file, &rpath, r, sink);
                let settings = r.get("settings").and_then(Value::as_object);
                for (k, v) in settings.into_iter().flatten() {
                    if let Some(name) = v.as_str().and_then(env_name) {
                        let path = format!("{rpath}.settings.{k}");
                        stats.env_refs.push(EnvRef {
                            name: name.to_string(),
                            location: file.locate(&path),
                            resource: file.resource.clone(),
                            path,
                        });
                    }
                }
            }
        }
    }
    let mut routes = Vec::new();
    for (file, doc) in &docs {
        for (i, p) in array(doc, "policies").iter().enumerate() {
            let path = format!("policies[{i}]");
            if p.get("receiver").and_then(Value::as_str).is_none() {
                sink.report(
                    file,
                    &format!("{path}.receiver"),
                    "the root policy has no receiver",
                    "set `receiver:` to the default contact point",
                );
            }
            routes.push(read_route(file, &path, p, &contact_points, sink, None));
        }
    }
    let root = routes.into_iter().next();
    let mut uids: BTreeMap<String, String> = BTreeMap::new();
    for (file, doc) in &docs {
        for (g, group) in array(doc, "groups").iter().enumerate() {
            let gpath = format!("groups[{g}]");
            let gname = group.get("name").and_then(Value::as_str).unwrap_or("");
            if gname.is_empty() {
                sink.report(
                    file,
                    &format!("{gpath}.name"),
                    "the rule group has no name",
                    "set `name:`",
                );
            }
            if group
                .get("folder")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                sink.report(
                    file,
                    &format!("{gpath}.folder"),
                    "the rule group has no folder",
                    "set `folder:` (Grafana files rules under it)",
                );
            }
            let interval = match group
                .get("interval")
                .and_then(Value::as_str)
                .map(parse_duration)
            {
                Some(Some(d)) if (MIN_INTERVAL..=MAX_INTERVAL).contains(&d) => Some(d),
                Some(Some(d)) => {
                    sink.report(
                        file,
                        &format!("{gpath}.interval"),
                        format!("evaluation interval {}s is outside 10s..1h", d.as_secs()),
                        "evaluate every 1m (between 10s and 1h)",
                    );
                    None
                }
                _ => {
                    sink.report(
                        file,
                        &format!("{gpath}.interval"),
                        "the rule group has no valid interval",
                        "set `interval: 1m`",
                    );
                    None
                }
            };
            let mut titles = BTreeSet::new();
            for (r, rule) in array(group, "rules").iter().enumerate() {
                let rpath = format!("{gpath}.rules[{r}]");
                stats.rules += 1;
                let uid = rule.get("uid").and_then(Value::as_str).unwrap_or("");
                if uid.is_empty()
                    || uid.len() > 40
                    || !uid
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    sink.report(
                        file,
                        &format!("{rpath}.uid"),
                        format!("rule uid `{uid}` is missing or not valid"),
                        "set a fixed uid of at most 40 letters, digits, - and _",
                    );
                } else if let Some(first) = uids.get(uid) {
                    sink.report(
                        file,
                        &format!("{rpath}.uid"),
                        format!("rule uid `{uid}` is also used at {first}"),
                        "give every rule its own uid",
                    );
                } else {
                    uids.insert(uid.to_string(), format!("{} {rpath}", file.file.display()));
                }
                let title = rule.get("title").and_then(Value::as_str).unwrap_or("");
                if title.is_empty() {
                    sink.report(
                        file,
                        &format!("{rpath}.title"),
                        "the rule has no title",
                        "set `title:`",
                    );
                } else if !titles.insert(title.to_string()) {
                    sink.report(
                        file,
                        &format!("{rpath}.title"),
                        format!("two rules in group `{gname}` are titled `{title}`"),
                        "Grafana requires unique titles in a group: rename one",
                    );
                }
                stats.queries += check_rule(file, &rpath, rule, interval, ds, cat, sink);
                check_routing(file, &rpath, rule, root.as_ref(), &contact_points, sink);
            }
        }
    }
    stats
}

fn array<'v>(v: &'v Value, key: &str) -> Vec<&'v Value> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn check_api_version(file: &ContentFile<'_>, doc: &Value, sink: &mut Sink) {
    if doc.get("apiVersion").and_then(Value::as_i64) != Some(1) {
        sink.report(
            file,
            "apiVersion",
            "alerting provisioning files must say `apiVersion: 1`",
            "set `apiVersion: 1`",
        );
    }
    if let Some(map) = doc.as_object() {
        for k in map.keys() {
            let known = [
                "apiVersion",
                "groups",
                "contactPoints",
                "policies",
                "deleteRules",
                "resetPolicies",
                "deleteContactPoints",
                "templates",
                "muteTimes",
                "deleteTemplates",
                "deleteMuteTimes",
            ];
            if !known.contains(&k.as_str()) {
                sink.report(
                    file,
                    k,
                    format!("unknown top-level key `{k}`: Grafana ignores it"),
                    format!(
                        "{}use groups, contactPoints or policies",
                        super::did_you_mean(k, known)
                    ),
                );
            }
        }
    }
}

fn check_receiver(file: &ContentFile<'_>, path: &str, r: &Value, sink: &mut Sink) {
    let kind = r.get("type").and_then(Value::as_str).unwrap_or("");
    if r.get("uid")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        sink.report(
            file,
            &format!("{path}.uid"),
            "the receiver has no fixed uid",
            "set `uid:` so a re-provision updates it instead of adding another",
        );
    }
    let settings = r.get("settings").and_then(Value::as_object);
    if let Some((_, keys)) = REQUIRED_SETTINGS.iter().find(|(t, _)| *t == kind) {
        let has = |k: &str| {
            settings
                .and_then(|s| s.get(k))
                .and_then(Value::as_str)
                .is_some_and(|v| !v.trim().is_empty())
        };
        if !keys.iter().any(|k| has(k)) {
            sink.report(
                file,
                &format!("{path}.settings"),
                format!("a {kind} receiver needs `{}`", keys.join("` or `")),
                format!(
                    "set settings.{} (from an environment variable if it is a secret)",
                    keys[0]
                ),
            );
        }
    }
    for (t, key) in SECRET_SETTINGS {
        if t != kind {
            continue;
        }
        if let Some(v) = settings.and_then(|s| s.get(key)).and_then(Value::as_str)
            && !is_env_reference(v)
        {
            // Never echo the value: it may be the secret itself.
            sink.report(file, &format!("{path}.settings.{key}"), format!("the {kind} `{key}` is written into the file; it is a secret and would be committed"), format!("set `{key}: $GRAFANA_{}_{}` and give Grafana that environment variable", kind.to_ascii_uppercase().replace('-', "_"), key.to_ascii_uppercase()));
        }
    }
}

fn read_route(
    file: &ContentFile<'_>,
    path: &str,
    v: &Value,
    cps: &BTreeMap<String, ()>,
    sink: &mut Sink,
    parent: Option<&str>,
) -> Route {
    let receiver = v
        .get("receiver")
        .and_then(Value::as_str)
        .map(str::to_string);
    if let Some(r) = &receiver
        && !cps.contains_key(r)
    {
        sink.report(
            file,
            &format!("{path}.receiver"),
            format!("routes to contact point `{r}`, which is not declared"),
            format!(
                "{}declare it under contactPoints, or route to one of: {}",
                super::did_you_mean(r, cps.keys().map(String::as_str)),
                cps.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        );
    }
    let mut matchers = Vec::new();
    for (i, m) in array(v, "object_matchers").iter().enumerate() {
        let parts: Vec<&str> = m
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        match parts.as_slice() {
            [l, op, val] if ["=", "!=", "=~", "!~"].contains(op) => {
                matchers.push((l.to_string(), op.to_string(), val.to_string()))
            }
            _ => sink.report(
                file,
                &format!("{path}.object_matchers[{i}]"),
                "a matcher is [label, op, value] with op =, !=, =~ or !~",
                "write it as [severity, \"=\", critical]",
            ),
        }
    }
    let durations = ["group_wait", "group_interval", "repeat_interval"];
    let mut parsed = BTreeMap::new();
    for key in durations {
        if let Some(s) = v.get(key).and_then(Value::as_str) {
            match parse_duration(s) {
                Some(d) => {
                    parsed.insert(key, d);
                }
                None => sink.report(
                    file,
                    &format!("{path}.{key}"),
                    format!("`{s}` is not a duration"),
                    "write it like 30s, 5m or 4h",
                ),
            }
        }
    }
    if let (Some(gi), Some(ri)) = (parsed.get("group_interval"), parsed.get("repeat_interval"))
        && ri < gi
    {
        sink.report(file, &format!("{path}.repeat_interval"), "repeat_interval is shorter than group_interval: notifications repeat at group_interval anyway", "make repeat_interval at least group_interval");
    }
    let inherited = receiver.as_deref().or(parent);
    let routes = array(v, "routes")
        .iter()
        .enumerate()
        .map(|(i, r)| {
            read_route(
                file,
                &format!("{path}.routes[{i}]"),
                r,
                cps,
                sink,
                inherited,
            )
        })
        .collect();
    Route {
        receiver,
        matchers,
        cont: v.get("continue").and_then(Value::as_bool).unwrap_or(false),
        routes,
    }
}

fn matches(route: &Route, labels: &BTreeMap<String, String>) -> bool {
    route.matchers.iter().all(|(l, op, v)| {
        let have = labels.get(l).map(String::as_str).unwrap_or("");
        let re = |pattern: &str| {
            // Alertmanager anchors regexes; alternatives of plain words cover what we ship.
            pattern
                .split('|')
                .any(|alt| alt == have || alt == ".*" || (alt == ".+" && !have.is_empty()))
        };
        match op.as_str() {
            "=" => have == v,
            "!=" => have != v,
            "=~" => re(v),
            _ => !re(v),
        }
    })
}

/// The contact points a rule with these labels reaches.
fn route_receivers(
    route: &Route,
    labels: &BTreeMap<String, String>,
    inherited: Option<&str>,
    out: &mut Vec<String>,
) {
    let own = route.receiver.as_deref().or(inherited);
    let mut matched = false;
    for child in &route.routes {
        if matches(child, labels) {
            matched = true;
            route_receivers(child, labels, own, out);
            if !child.cont {
                break;
            }
        }
    }
    if !matched {
        out.extend(own.map(str::to_string));
    }
}

fn check_routing(
    file: &ContentFile<'_>,
    path: &str,
    rule: &Value,
    root: Option<&Route>,
    cps: &BTreeMap<String, ()>,
    sink: &mut Sink,
) {
    let labels: BTreeMap<String, String> = rule
        .get("labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default();
    for (k, v) in &labels {
        // Grafana expands `$NAME` from its environment in rule labels (not in annotations).
        if v.replace("$$", "").contains('$') {
            sink.report(
                file,
                &format!("{path}.labels.{k}"),
                format!("label `{k}` contains `$`, which Grafana replaces with an environment variable when it provisions the rule"),
                "write `$$` for a literal `$`, or move the template into an annotation",
            );
        }
    }
    match labels.get("severity") {
        None => sink.report(
            file,
            &format!("{path}.labels"),
            "the rule has no `severity` label, so the policies cannot route it by severity",
            format!("set labels.severity to one of: {}", SEVERITIES.join(", ")),
        ),
        Some(s) if !SEVERITIES.contains(&s.as_str()) => sink.report(
            file,
            &format!("{path}.labels.severity"),
            format!("severity `{s}` is not one the policies route"),
            format!(
                "{}use one of: {}",
                super::did_you_mean(s, SEVERITIES),
                SEVERITIES.join(", ")
            ),
        ),
        Some(_) => {}
    }
    if let Some(r) = rule
        .pointer("/notification_settings/receiver")
        .and_then(Value::as_str)
        && !cps.contains_key(r)
    {
        sink.report(
            file,
            &format!("{path}.notification_settings.receiver"),
            format!("names contact point `{r}`, which is not declared"),
            "name a declared contact point",
        );
        return;
    }
    let Some(root) = root else {
        sink.report(
            file,
            path,
            "no notification policy is provisioned, so this rule reaches no contact point",
            "provision policies (alerting/policies.yaml) routing by severity",
        );
        return;
    };
    let mut receivers = Vec::new();
    route_receivers(root, &labels, None, &mut receivers);
    for r in receivers {
        if !cps.contains_key(&r) {
            sink.report(
                file,
                &format!("{path}.labels"),
                format!(
                    "the policies route this rule to contact point `{r}`, which is not declared"
                ),
                "declare the contact point, or fix the policy's receiver",
            );
        }
    }
}

/// Checks one rule's queries, condition, threshold and durations; returns the number of queries.
fn check_rule(
    file: &ContentFile<'_>,
    path: &str,
    rule: &Value,
    interval: Option<Duration>,
    ds: &Datasources,
    cat: &Catalogue,
    sink: &mut Sink,
) -> usize {
    let mut queries = 0;
    let data = array(rule, "data");
    let refs: BTreeSet<&str> = data
        .iter()
        .filter_map(|d| d.get("refId").and_then(Value::as_str))
        .collect();
    if refs.len() != data.len() {
        sink.report(
            file,
            &format!("{path}.data"),
            "every query needs its own refId",
            "give each data item a unique refId (A, B, C, …)",
        );
    }
    match rule.get("condition").and_then(Value::as_str) {
        Some(c) if refs.contains(c) => {}
        Some(c) => sink.report(
            file,
            &format!("{path}.condition"),
            format!("condition `{c}` is not the refId of any query"),
            format!(
                "set condition to one of: {}",
                refs.iter().copied().collect::<Vec<_>>().join(", ")
            ),
        ),
        None => sink.report(
            file,
            &format!("{path}.condition"),
            "the rule has no condition",
            "set `condition:` to the refId of the threshold expression",
        ),
    }
    for (i, d) in data.iter().enumerate() {
        let dpath = format!("{path}.data[{i}]");
        let uid = d.get("datasourceUid").and_then(Value::as_str).unwrap_or("");
        if uid == "__expr__" {
            check_expression(file, &dpath, d, &refs, sink);
            continue;
        }
        let Some(source) = ds.by_uid.get(uid) else {
            sink.report(
                file,
                &format!("{dpath}.datasourceUid"),
                format!("datasource uid `{uid}` is not provisioned"),
                format!(
                    "{}use one of: {}, or __expr__ for expressions",
                    super::did_you_mean(uid, ds.by_uid.keys().map(String::as_str)),
                    ds.uids()
                ),
            );
            continue;
        };
        queries += 1;
        let expr = d
            .pointer("/model/expr")
            .and_then(Value::as_str)
            .unwrap_or("");
        let findings = match source.kind.as_str() {
            "prometheus" => promql::check(expr, cat),
            "loki" => logql::check_logql(expr, cat),
            _ => Vec::new(),
        };
        for f in findings {
            sink.report(file, &format!("{dpath}.model.expr"), f.message, f.fix);
        }
    }
    match rule.get("for").and_then(Value::as_str) {
        None => {}
        Some(s) => match parse_duration(s) {
            None => sink.report(file, &format!("{path}.for"), format!("`for: {s}` is not a duration"), "write it like 5m, 1h or 0s"),
            Some(d) if d > MAX_FOR => sink.report(file, &format!("{path}.for"), format!("`for: {s}` is longer than a day: the alert would stay pending through any real incident"), "measure long windows in the query's range and keep `for` to minutes"),
            Some(d) if !d.is_zero() && interval.is_some_and(|i| d < i) => sink.report(file, &format!("{path}.for"), format!("`for: {s}` is shorter than the group's evaluation interval, so it means nothing"), "use 0s, or a `for` of at least the interval"),
            Some(_) => {}
        },
    }
    for (key, allowed) in [
        ("noDataState", &["OK", "NoData", "Alerting", "KeepLast"][..]),
        ("execErrState", &["OK", "Error", "Alerting", "KeepLast"][..]),
    ] {
        if let Some(v) = rule.get(key).and_then(Value::as_str)
            && !allowed.contains(&v)
        {
            sink.report(
                file,
                &format!("{path}.{key}"),
                format!("`{v}` is not a state Grafana knows"),
                format!(
                    "{}use one of: {}",
                    super::did_you_mean(v, allowed.iter().copied()),
                    allowed.join(", ")
                ),
            );
        }
    }
    queries
}

fn check_expression(
    file: &ContentFile<'_>,
    path: &str,
    d: &Value,
    refs: &BTreeSet<&str>,
    sink: &mut Sink,
) {
    let kind = d
        .pointer("/model/type")
        .and_then(Value::as_str)
        .unwrap_or("");
    let known = [
        "threshold",
        "math",
        "reduce",
        "classic_conditions",
        "resample",
    ];
    if !known.contains(&kind) {
        sink.report(
            file,
            &format!("{path}.model.type"),
            format!("unknown expression type `{kind}`"),
            format!(
                "{}use one of: {}",
                super::did_you_mean(kind, known),
                known.join(", ")
            ),
        );
        return;
    }
    if ["threshold", "reduce", "resample"].contains(&kind) {
        let input = d
            .pointer("/model/expression")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !refs.contains(input) {
            sink.report(
                file,
                &format!("{path}.model.expression"),
                format!("the {kind} reads `{input}`, which is not the refId of any query"),
                "name the refId of the query it applies to",
            );
        }
    }
    if kind != "threshold" {
        return;
    }
    let conditions = d
        .pointer("/model/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if conditions.is_empty() {
        sink.report(
            file,
            &format!("{path}.model.conditions"),
            "the threshold has no condition",
            "add conditions: [{evaluator: {type: gt, params: [0]}}]",
        );
    }
    for (i, c) in conditions.iter().enumerate() {
        let epath = format!("{path}.model.conditions[{i}].evaluator");
        let t = c
            .pointer("/evaluator/type")
            .and_then(Value::as_str)
            .unwrap_or("");
        let params: Vec<Option<f64>> = c
            .pointer("/evaluator/params")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(Value::as_f64).collect())
            .unwrap_or_default();
        let want = match t {
            "gt" | "lt" => 1,
            "within_range"
            | "outside_range"
            | "within_range_included"
            | "outside_range_included" => 2,
            _ => {
                sink.report(
                    file,
                    &format!("{epath}.type"),
                    format!("unknown threshold type `{t}`"),
                    "use gt, lt, within_range or outside_range",
                );
                continue;
            }
        };
        if params.len() != want || params.iter().any(|p| !p.is_some_and(f64::is_finite)) {
            sink.report(
                file,
                &format!("{epath}.params"),
                format!(
                    "`{t}` takes {want} finite number{}",
                    if want == 1 { "" } else { "s" }
                ),
                format!(
                    "give params: [{}]",
                    if want == 1 { "0" } else { "low, high" }
                ),
            );
        } else if want == 2 && params[0] >= params[1] {
            sink.report(
                file,
                &format!("{epath}.params"),
                "the range is empty: its low end is not below its high end",
                "give params as [low, high] with low < high",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_references_are_recognized() {
        for ok in [
            "$SLACK_URL",
            "${SLACK_URL}",
            "$__env{SLACK_URL}",
            "$__file{/run/secrets/x}",
        ] {
            assert!(is_env_reference(ok), "{ok}");
        }
        for bad in [
            "https://hooks.slack.com/services/T0/B0/x",
            "",
            "$",
            "${}",
            "token-$X",
        ] {
            assert!(!is_env_reference(bad), "{bad}");
        }
    }

    #[test]
    fn the_variable_of_a_reference_is_its_name() {
        assert_eq!(env_name("$SLACK_URL"), Some("SLACK_URL"));
        assert_eq!(env_name("${SLACK_URL}"), Some("SLACK_URL"));
        assert_eq!(env_name("$__env{SLACK_URL}"), Some("SLACK_URL"));
        assert_eq!(env_name("$__file{/run/secrets/x}"), None);
        assert_eq!(env_name("http://127.0.0.1:9093"), None);
    }

    fn route(receiver: &str, m: &[(&str, &str, &str)], cont: bool, routes: Vec<Route>) -> Route {
        Route {
            receiver: (!receiver.is_empty()).then(|| receiver.to_string()),
            matchers: m
                .iter()
                .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
                .collect(),
            cont,
            routes,
        }
    }

    #[test]
    fn routing_follows_matchers_continue_and_the_default() {
        let root = route(
            "default",
            &[],
            false,
            vec![
                route("slack", &[("severity", "=", "critical")], true, vec![]),
                route("pager", &[("severity", "=", "critical")], false, vec![]),
                route(
                    "email",
                    &[("severity", "=~", "warning|info")],
                    false,
                    vec![],
                ),
            ],
        );
        let reach = |sev: &str| {
            let mut out = Vec::new();
            let labels = BTreeMap::from([("severity".to_string(), sev.to_string())]);
            route_receivers(&root, &labels, None, &mut out);
            out
        };
        assert_eq!(reach("critical"), vec!["slack", "pager"]);
        assert_eq!(reach("info"), vec!["email"]);
        assert_eq!(reach("other"), vec!["default"]);
    }
}
