//! Dashboard checks: each file is a dashboard with a fixed, unique uid; panel ids are unique
//! within it; every datasource reference resolves to a provisioned uid of the same type; every
//! query is checked in its own language against the catalogue; links reach shipped dashboards.

use super::catalogue::Catalogue;
use super::promql::Finding;
use super::provisioning::{BUILTIN_UIDS, Datasources};
use super::{ContentFile, Sink, logql, promql};
use serde_json::Value;
use std::collections::BTreeMap;

/// How much was checked.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// Dashboards.
    pub dashboards: usize,
    /// Panels (rows included).
    pub panels: usize,
    /// Queries (targets and variables).
    pub queries: usize,
}

/// Checks every dashboard file.
pub fn check(
    files: &[ContentFile<'_>],
    ds: &Datasources,
    cat: &Catalogue,
    sink: &mut Sink,
) -> Stats {
    let mut stats = Stats::default();
    let mut parsed = Vec::new();
    for file in files {
        match serde_json::from_str::<Value>(file.text) {
            Ok(v) if v.is_object() => parsed.push((file, v)),
            Ok(_) => sink.report(
                file,
                "",
                "a dashboard file holds one JSON object",
                "export the dashboard JSON model (Dashboard settings → JSON Model)",
            ),
            Err(e) => sink.report_line(
                file,
                (e.line(), e.column()),
                "",
                format!("JSON syntax error: {e}"),
                "correct the JSON at this position",
            ),
        }
    }
    // Uids first: links between dashboards are checked against all of them.
    let mut uids: BTreeMap<String, &ContentFile<'_>> = BTreeMap::new();
    for (file, d) in &parsed {
        let uid = d.get("uid").and_then(Value::as_str).unwrap_or("");
        if uid.is_empty() {
            sink.report(file, "/uid", "the dashboard has no fixed uid", "set \"uid\" (letters, digits, - and _, at most 40): links and alerts find dashboards by it");
            continue;
        }
        if uid.len() > 40
            || !uid
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            sink.report(
                file,
                "/uid",
                format!("uid `{uid}` is not valid in Grafana"),
                "use at most 40 letters, digits, - and _",
            );
        }
        if let Some(first) = uids.get(uid) {
            sink.report(
                file,
                "/uid",
                format!("uid `{uid}` is also the uid of {}", first.file.display()),
                "give every dashboard its own uid",
            );
        } else {
            uids.insert(uid.to_string(), file);
        }
    }
    for (file, d) in &parsed {
        stats.dashboards += 1;
        if d.get("title")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            sink.report(
                file,
                "/title",
                "the dashboard has no title",
                "set \"title\"",
            );
        }
        let mut ctx = Ctx {
            file,
            ds,
            cat,
            sink,
            stats: &mut stats,
            uids: &uids,
        };
        if let Some(links) = d.get("links").and_then(Value::as_array) {
            for (i, l) in links.iter().enumerate() {
                if let Some(url) = l.get("url").and_then(Value::as_str) {
                    ctx.links(url, &format!("/links/{i}/url"));
                }
            }
        }
        if let Some(vars) = d.pointer("/templating/list").and_then(Value::as_array) {
            for (i, v) in vars.iter().enumerate() {
                ctx.variable(v, &format!("/templating/list/{i}"));
            }
        }
        let mut ids = BTreeMap::new();
        match d.get("panels").and_then(Value::as_array) {
            Some(panels) => ctx.panels(panels, "/panels", &mut ids),
            None => ctx.sink.report(
                file,
                "/panels",
                "the dashboard has no panels",
                "add panels, or remove the dashboard",
            ),
        }
    }
    stats
}

struct Ctx<'a, 'f> {
    file: &'a ContentFile<'f>,
    ds: &'a Datasources,
    cat: &'a Catalogue,
    sink: &'a mut Sink,
    stats: &'a mut Stats,
    uids: &'a BTreeMap<String, &'a ContentFile<'f>>,
}

impl Ctx<'_, '_> {
    fn report(&mut self, path: &str, message: impl Into<String>, fix: impl Into<String>) {
        self.sink.report(self.file, path, message, fix);
    }

    fn findings(&mut self, path: &str, findings: Vec<Finding>) {
        for f in findings {
            self.report(path, f.message, f.fix);
        }
    }

    fn panels(&mut self, panels: &[Value], base: &str, ids: &mut BTreeMap<i64, String>) {
        for (i, p) in panels.iter().enumerate() {
            let path = format!("{base}/{i}");
            self.stats.panels += 1;
            match p.get("id").and_then(Value::as_i64) {
                None => self.report(
                    &format!("{path}/id"),
                    "the panel has no numeric id",
                    "give every panel an \"id\" unique in this dashboard",
                ),
                Some(id) => {
                    if let Some(first) = ids.get(&id) {
                        let msg = format!("panel id {id} is also the id of the panel at {first}");
                        self.report(&format!("{path}/id"), msg, "give every panel an id unique in this dashboard (links and embeds use it)");
                    } else {
                        ids.insert(id, path.clone());
                    }
                }
            }
            let kind = p.get("type").and_then(Value::as_str).unwrap_or("");
            if kind.is_empty() {
                self.report(
                    &format!("{path}/type"),
                    "the panel has no type",
                    "set \"type\" (timeseries, stat, table, logs, …)",
                );
            }
            if let Some(content) = p.pointer("/options/content").and_then(Value::as_str) {
                self.links(content, &format!("{path}/options/content"));
            }
            if let Some(nested) = p.get("panels").and_then(Value::as_array) {
                self.panels(nested, &format!("{path}/panels"), ids);
            }
            let panel_ds = p
                .get("datasource")
                .and_then(|v| self.datasource(v, &format!("{path}/datasource")));
            let Some(targets) = p.get("targets").and_then(Value::as_array) else {
                continue;
            };
            if !targets.is_empty() && p.get("datasource").is_none_or(Value::is_null) {
                self.report(
                    &format!("{path}/datasource"),
                    "the panel has queries but names no datasource (Grafana would use the default)",
                    "set \"datasource\": {\"type\": …, \"uid\": …} naming a provisioned datasource",
                );
            }
            for (j, t) in targets.iter().enumerate() {
                let tpath = format!("{path}/targets/{j}");
                let kind = match t.get("datasource") {
                    Some(v) if !v.is_null() => self.datasource(v, &format!("{tpath}/datasource")),
                    _ => panel_ds.clone(),
                };
                self.target(t, kind.as_deref(), &tpath);
            }
        }
    }

    /// Resolves a datasource reference; returns its type when known.
    fn datasource(&mut self, v: &Value, path: &str) -> Option<String> {
        match v {
            Value::String(s) if s.starts_with('$') => {
                self.report(
                    path,
                    format!("datasource variable `{s}`: shipped dashboards name their datasource"),
                    "use {\"type\": …, \"uid\": …} of a provisioned datasource",
                );
                None
            }
            Value::String(s) => {
                self.report(path, format!("refers to datasource `{s}` by name"), "use {\"type\": …, \"uid\": …}: uids are fixed in the provisioning, names are not");
                None
            }
            Value::Object(o) => {
                let uid = o.get("uid").and_then(Value::as_str).unwrap_or("");
                let kind = o.get("type").and_then(Value::as_str);
                if BUILTIN_UIDS.contains(&uid) {
                    return Some("builtin".to_string());
                }
                match self.ds.by_uid.get(uid) {
                    None => {
                        let fix = format!(
                            "{}use a provisioned uid: {}",
                            super::did_you_mean(uid, self.ds.by_uid.keys().map(String::as_str)),
                            self.ds.uids()
                        );
                        self.report(
                            &format!("{path}/uid"),
                            format!("datasource uid `{uid}` is not provisioned"),
                            fix,
                        );
                        None
                    }
                    Some(d) => {
                        if let Some(k) = kind
                            && k != d.kind
                        {
                            self.report(
                                &format!("{path}/type"),
                                format!("datasource `{uid}` is of type `{}`, not `{k}`", d.kind),
                                format!("set \"type\": \"{}\"", d.kind),
                            );
                        }
                        Some(d.kind.clone())
                    }
                }
            }
            _ => None,
        }
    }

    fn target(&mut self, t: &Value, kind: Option<&str>, path: &str) {
        self.stats.queries += 1;
        let s = |k: &str| t.get(k).and_then(Value::as_str).unwrap_or("");
        match kind {
            Some("prometheus") => {
                let expr = s("expr");
                if expr.trim().is_empty() {
                    self.report(
                        &format!("{path}/expr"),
                        "the query is empty",
                        "write the PromQL, or remove the target",
                    );
                    return;
                }
                let mut f = promql::check(expr, self.cat);
                if f.is_empty()
                    && promql::selects_errors(expr)
                    && !expr
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                        .contains("or vector(")
                {
                    f.push(Finding {
                        message:
                            "an error rate without a fallback shows \"No data\" while nothing fails"
                                .to_string(),
                        fix: "append `or vector(0)` (seed PR 9)".to_string(),
                    });
                }
                self.findings(&format!("{path}/expr"), f);
            }
            Some("loki") => {
                let expr = s("expr");
                let f = logql::check_logql(expr, self.cat);
                self.findings(&format!("{path}/expr"), f);
            }
            Some("tempo") => match s("queryType") {
                "traceql" => {
                    let f = logql::check_traceql(s("query"));
                    self.findings(&format!("{path}/query"), f);
                }
                "serviceMap" => {
                    let wired = self
                        .ds
                        .by_uid
                        .values()
                        .any(|d| d.kind == "tempo" && d.service_map);
                    if !wired {
                        self.report(&format!("{path}/queryType"), "a service map query, but no Tempo datasource has jsonData.serviceMap.datasourceUid", "wire Tempo's serviceMap to the Mimir datasource in datasources.yaml");
                    }
                }
                "traceqlSearch" | "search" | "nativeSearch" => {}
                other => self.report(
                    &format!("{path}/queryType"),
                    format!("unknown Tempo query type `{other}`"),
                    "use traceql, traceqlSearch or serviceMap",
                ),
            },
            Some("grafana-pyroscope-datasource") => {
                let qt = s("queryType");
                if !["profile", "metrics", "both"].contains(&qt) {
                    self.report(
                        &format!("{path}/queryType"),
                        format!("unknown Pyroscope query type `{qt}`"),
                        "use profile (flame graph), metrics or both",
                    );
                }
                let f = logql::check_profile(s("profileTypeId"), s("labelSelector"), self.cat);
                self.findings(&format!("{path}/profileTypeId"), f);
            }
            _ => {}
        }
    }

    fn variable(&mut self, v: &Value, path: &str) {
        if v.get("type").and_then(Value::as_str) != Some("query") {
            return;
        }
        let kind = v
            .get("datasource")
            .and_then(|d| self.datasource(d, &format!("{path}/datasource")));
        if kind.as_deref() != Some("prometheus") {
            return;
        }
        self.stats.queries += 1;
        let query = match v.get("query") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Object(o)) => o
                .get("query")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            _ => String::new(),
        };
        let qpath = if v.get("query").is_some_and(Value::is_object) {
            format!("{path}/query/query")
        } else {
            format!("{path}/query")
        };
        let f = check_variable_query(&query, self.cat);
        self.findings(&qpath, f);
    }

    /// Links of the form `/grafana/d/<uid>` or `/d/<uid>` must reach a shipped dashboard.
    fn links(&mut self, text: &str, path: &str) {
        for uid in linked_uids(text) {
            if !self.uids.contains_key(&uid) {
                let fix = format!(
                    "{}link to a shipped dashboard uid: {}",
                    super::did_you_mean(&uid, self.uids.keys().map(String::as_str)),
                    self.uids.keys().cloned().collect::<Vec<_>>().join(", ")
                );
                self.report(
                    path,
                    format!("links to dashboard uid `{uid}`, which is not shipped"),
                    fix,
                );
            }
        }
    }
}

/// The uids named by `/d/<uid>` links in a text.
fn linked_uids(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("/d/") {
        let after = &rest[i + 3..];
        let uid: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        if !uid.is_empty() {
            out.push(uid);
        }
        rest = after;
    }
    out
}

/// `label_values(metric{…}, label)`, `label_values(label)`, `metrics(…)` or a PromQL query.
pub fn check_variable_query(query: &str, cat: &Catalogue) -> Vec<Finding> {
    let q = query.trim();
    if let Some(args) = q
        .strip_prefix("label_values(")
        .and_then(|a| a.strip_suffix(')'))
    {
        let (metric, label) = match args.rsplit_once(',') {
            Some((m, l)) => (Some(m.trim()), l.trim()),
            None => (None, args.trim()),
        };
        let Some(metric) = metric else {
            return Vec::new();
        };
        let mut f = promql::check(metric, cat);
        if f.is_empty() {
            let names = promql::metric_names(metric);
            for n in names {
                if let Some(series) = cat.series(&n)
                    && !series.labels.contains(label)
                {
                    f.push(Finding {
                        message: format!(
                            "`{n}` has no label `{label}`: the variable would be empty"
                        ),
                        fix: format!(
                            "{}use one of: {}",
                            super::did_you_mean(label, series.labels.iter().map(String::as_str)),
                            series.labels.iter().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    });
                }
            }
        }
        return f;
    }
    if q.starts_with("label_names(") || q.starts_with("metrics(") || q.starts_with("query_result(")
    {
        return Vec::new();
    }
    promql::check(q, cat)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_name_their_uids() {
        assert_eq!(
            linked_uids("[a](/grafana/d/home) and /d/x-y_z?var=1"),
            vec!["home", "x-y_z"]
        );
        assert!(linked_uids("https://example.com/docs").is_empty());
    }
}
