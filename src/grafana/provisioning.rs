//! Grafana's own provisioning: the datasources (fixed uids, known types, cross-links that
//! resolve), the dashboard provider (reads where the dashboards are mounted) and grafana.ini
//! (port 3001, /grafana/ subpath, unified alerting on, anonymous at most Viewer, no password).

use super::catalogue::Catalogue;
use super::{ContentFile, Sink};
use crate::model::{Desired, Spec};
use serde_json::Value;
use std::collections::BTreeMap;

/// Datasource types the stack provisions.
pub const KNOWN_TYPES: [&str; 4] = [
    "prometheus",
    "loki",
    "tempo",
    "grafana-pyroscope-datasource",
];
/// Datasource uids Grafana provides itself (expressions, the built-in Grafana source, mixed).
pub const BUILTIN_UIDS: [&str; 5] = [
    "__expr__",
    "-- Grafana --",
    "-- Mixed --",
    "-- Dashboard --",
    "grafana",
];

/// One provisioned datasource.
#[derive(Debug, Clone)]
pub struct Datasource {
    /// Its `type`.
    pub kind: String,
    /// Whether Tempo's service map is wired to a Prometheus source.
    pub service_map: bool,
}

/// The provisioned datasources by uid.
#[derive(Debug, Clone, Default)]
pub struct Datasources {
    /// uid → datasource.
    pub by_uid: BTreeMap<String, Datasource>,
}

impl Datasources {
    /// The uids, for messages.
    pub fn uids(&self) -> String {
        self.by_uid.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

fn parse_yaml(file: &ContentFile<'_>, sink: &mut Sink) -> Option<Value> {
    match crate::manifest::yaml::parse(file.text) {
        Ok(mut docs) if !docs.is_empty() => Some(docs.swap_remove(0).value),
        Ok(_) => {
            sink.report(file, "", "the file is empty", "restore its content");
            None
        }
        Err(e) => {
            sink.report_line(
                file,
                (e.pos.line, e.pos.column),
                "",
                format!("YAML syntax error: {}", e.message),
                "correct the YAML at this position",
            );
            None
        }
    }
}

/// Reads and checks the datasource files; returns what they provision.
pub fn check_datasources(
    files: &[ContentFile<'_>],
    cat: &Catalogue,
    sink: &mut Sink,
) -> Datasources {
    let mut ds = Datasources::default();
    let mut links = Vec::new();
    for file in files {
        let Some(doc) = parse_yaml(file, sink) else {
            continue;
        };
        let Some(list) = doc.get("datasources").and_then(Value::as_array) else {
            sink.report(
                file,
                "datasources",
                "no `datasources:` list",
                "list the datasources under `datasources:`",
            );
            continue;
        };
        let mut names = BTreeMap::new();
        for (i, d) in list.iter().enumerate() {
            let path = format!("datasources[{i}]");
            let uid = d.get("uid").and_then(Value::as_str).unwrap_or("");
            let kind = d.get("type").and_then(Value::as_str).unwrap_or("");
            let name = d.get("name").and_then(Value::as_str).unwrap_or("");
            if uid.is_empty() {
                sink.report(
                    file,
                    &path,
                    format!("datasource `{name}` has no fixed uid"),
                    "set `uid:`; dashboards and alert rules refer to datasources by uid",
                );
                continue;
            }
            if !KNOWN_TYPES.contains(&kind) {
                sink.report(
                    file,
                    &format!("{path}.type"),
                    format!("datasource `{uid}` has unknown type `{kind}`"),
                    format!(
                        "{}use one of: {}",
                        super::did_you_mean(kind, KNOWN_TYPES),
                        KNOWN_TYPES.join(", ")
                    ),
                );
            }
            if names.insert(name.to_string(), ()).is_some() {
                sink.report(
                    file,
                    &format!("{path}.name"),
                    format!("datasource name `{name}` is used twice"),
                    "give each datasource its own name",
                );
            }
            let service_map = d.pointer("/jsonData/serviceMap/datasourceUid").is_some();
            if ds
                .by_uid
                .insert(
                    uid.to_string(),
                    Datasource {
                        kind: kind.to_string(),
                        service_map,
                    },
                )
                .is_some()
            {
                sink.report(
                    file,
                    &format!("{path}.uid"),
                    format!("datasource uid `{uid}` is provisioned twice"),
                    "give each datasource its own uid",
                );
            }
            let json = d.get("jsonData");
            let mut link = |ptr: &str, want: &'static str, yaml: String| {
                if let Some(target) = json.and_then(|j| j.pointer(ptr)).and_then(Value::as_str) {
                    links.push((
                        files
                            .iter()
                            .position(|f| std::ptr::eq(f, file))
                            .unwrap_or(0),
                        yaml,
                        target.to_string(),
                        want,
                    ));
                }
            };
            link(
                "/tracesToLogsV2/datasourceUid",
                "loki",
                format!("{path}.jsonData.tracesToLogsV2.datasourceUid"),
            );
            link(
                "/tracesToMetrics/datasourceUid",
                "prometheus",
                format!("{path}.jsonData.tracesToMetrics.datasourceUid"),
            );
            link(
                "/tracesToProfiles/datasourceUid",
                "grafana-pyroscope-datasource",
                format!("{path}.jsonData.tracesToProfiles.datasourceUid"),
            );
            link(
                "/serviceMap/datasourceUid",
                "prometheus",
                format!("{path}.jsonData.serviceMap.datasourceUid"),
            );
            for (key, want) in [
                ("exemplarTraceIdDestinations", "tempo"),
                ("derivedFields", "tempo"),
            ] {
                let n = json
                    .and_then(|j| j.get(key))
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                for k in 0..n {
                    link(
                        &format!("/{key}/{k}/datasourceUid"),
                        want,
                        format!("{path}.jsonData.{key}[{k}].datasourceUid"),
                    );
                }
            }
            if let Some(pt) = json
                .and_then(|j| j.pointer("/tracesToProfiles/profileTypeId"))
                .and_then(Value::as_str)
                && !cat.profile_types.contains(pt)
            {
                sink.report(
                    file,
                    &format!("{path}.jsonData.tracesToProfiles.profileTypeId"),
                    format!("profile type `{pt}` is not one Pyroscope holds for this stack"),
                    format!(
                        "use one of: {}",
                        cat.profile_types
                            .iter()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
        }
    }
    for (i, path, target, want) in links {
        let file = &files[i];
        match ds.by_uid.get(&target) {
            None => sink.report(
                file,
                &path,
                format!("links to datasource uid `{target}`, which is not provisioned"),
                format!(
                    "{}use one of: {}",
                    super::did_you_mean(&target, ds.by_uid.keys().map(String::as_str)),
                    ds.uids()
                ),
            ),
            Some(d) if d.kind != want => sink.report(
                file,
                &path,
                format!(
                    "links to `{target}`, a {} datasource, where a {want} one is needed",
                    d.kind
                ),
                format!("point it at the {want} datasource"),
            ),
            Some(_) => {}
        }
    }
    ds
}

/// Checks the dashboard provider: file-based, and reading the directory where the grafana
/// container has the dashboards mounted.
pub fn check_providers(files: &[ContentFile<'_>], desired: &Desired, sink: &mut Sink) {
    // Where the grafana container sees each dashboard ConfigFile.
    let dashboard_files: Vec<&str> = desired
        .config_files()
        .filter(|(_, f)| f.path.starts_with(super::DASHBOARDS_DIR))
        .map(|(r, _)| r.id.name.as_str())
        .collect();
    let mut mounted = Vec::new();
    for r in &desired.resources {
        if let Spec::Container(c) = &r.spec
            && r.id.name == "grafana"
        {
            for m in &c.mounts {
                if let Some(cf) = &m.config_file
                    && dashboard_files.contains(&cf.as_str())
                {
                    mounted.push((cf.clone(), m.target.clone()));
                }
            }
        }
    }
    for file in files {
        let Some(doc) = parse_yaml(file, sink) else {
            continue;
        };
        let providers = doc
            .get("providers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if providers.is_empty() {
            sink.report(file, "providers", "no dashboard provider", "declare a `type: file` provider whose options.path is where the dashboards are mounted");
        }
        for (i, p) in providers.iter().enumerate() {
            let path = format!("providers[{i}]");
            if p.get("type").and_then(Value::as_str).unwrap_or("file") != "file" {
                sink.report(
                    file,
                    &format!("{path}.type"),
                    "only file providers are shipped",
                    "set `type: file`",
                );
                continue;
            }
            let Some(dir) = p.pointer("/options/path").and_then(Value::as_str) else {
                sink.report(file, &format!("{path}.options"), "the provider has no options.path", "set options.path to the directory the dashboards are mounted in (/var/lib/grafana/dashboards)");
                continue;
            };
            let prefix = format!("{}/", dir.trim_end_matches('/'));
            for (cf, target) in &mounted {
                if !target.starts_with(&prefix) {
                    sink.report(file, &format!("{path}.options.path"), format!("Grafana reads dashboards from {dir}, but ConfigFile/{cf} is mounted at {target}"), format!("mount the dashboards under {prefix} or point options.path at their directory"));
                }
            }
        }
    }
}

/// Checks grafana.ini for the settings the stack's security posture depends on.
pub fn check_ini(file: &ContentFile<'_>, sink: &mut Sink) {
    let mut section = String::new();
    let mut values: BTreeMap<(String, String), (String, usize)> = BTreeMap::new();
    for (i, line) in file.text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if let Some(s) = l.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = s.trim().to_string();
            continue;
        }
        if let Some((k, v)) = l.split_once('=') {
            values.insert(
                (section.clone(), k.trim().to_string()),
                (v.trim().to_string(), i + 1),
            );
        }
    }
    let get = |s: &str, k: &str| values.get(&(s.to_string(), k.to_string()));
    let mut expect = |s: &str, k: &str, ok: &dyn Fn(&str) -> bool, want: &str, why: &str| {
        let path = format!("[{s}] {k}");
        match get(s, k) {
            Some((v, line)) if !ok(v) => sink.report_line(
                file,
                (*line, 1),
                &path,
                format!("is `{v}`; {why}"),
                format!("set `{k} = {want}` in [{s}]"),
            ),
            Some(_) => {}
            None => sink.report_line(
                file,
                (1, 1),
                &path,
                format!("is not set; {why}"),
                format!("add `{k} = {want}` under [{s}]"),
            ),
        }
    };
    expect(
        "server",
        "http_port",
        &|v| v == "3001",
        "3001",
        "the container publishes 3001 and the SSM tunnel forwards to it",
    );
    expect(
        "server",
        "root_url",
        &|v| v.trim_end_matches('/').ends_with("/grafana"),
        "http://localhost:3001/grafana/",
        "Grafana is served under /grafana/",
    );
    expect(
        "server",
        "serve_from_sub_path",
        &|v| v == "true",
        "true",
        "Grafana is served under /grafana/",
    );
    expect(
        "unified_alerting",
        "enabled",
        &|v| v == "true",
        "true",
        "the alerting/ rules are Grafana-managed",
    );
    if get("auth.anonymous", "enabled").is_some_and(|(v, _)| v == "true") {
        expect(
            "auth.anonymous",
            "org_role",
            &|v| v == "Viewer",
            "Viewer",
            "anonymous users may look, never edit",
        );
    }
    if let Some((_, line)) = get("security", "admin_password") {
        sink.report_line(file, (*line, 1), "[security] admin_password", "grafana.ini sets admin_password; the admin password never lives in a file in the repository", "remove it: the container reads the password from GF_SECURITY_ADMIN_PASSWORD__FILE, filled from the SSM parameter");
    }
}
