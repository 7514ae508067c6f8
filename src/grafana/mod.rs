//! Grafana content, checked before it ships: the dashboards, datasources, provider, grafana.ini
//! and alerting files that the manifests' ConfigFiles deliver, against the series catalogue.
//!
//! Which file is which comes from its host path (the layout the grafana container mounts):
//! `grafana/dashboards/*.json`, `grafana/provisioning/{datasources,dashboards,alerting}/`,
//! `grafana/grafana.ini`. The catalogue is `catalogue.yaml` beside the dashboards' sources.
//! Everything here is pure: it reads the loaded [`Desired`] (content already templated, as it
//! reaches the host) plus the catalogue file, and returns every problem at once, each naming
//! the repository file, the JSON pointer or YAML path, and the fix. It never writes.

pub mod alerting;
pub mod catalogue;
pub mod dashboards;
pub mod logql;
pub mod promql;
pub mod provisioning;

use crate::manifest::Diagnostic;
use crate::manifest::repository::normalize;
use crate::manifest::yaml;
use crate::model::{Desired, SourceLocation};
use catalogue::Catalogue;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Host path prefix of the dashboards (the provider's directory on the host).
pub const DASHBOARDS_DIR: &str = "grafana/dashboards/";
/// Host path prefix of the alerting provisioning files.
pub const ALERTING_DIR: &str = "grafana/provisioning/alerting/";
/// Host path prefix of the datasource provisioning files.
pub const DATASOURCES_DIR: &str = "grafana/provisioning/datasources/";
/// Host path prefix of the dashboard provider files.
pub const PROVIDERS_DIR: &str = "grafana/provisioning/dashboards/";
/// Host path of grafana.ini.
pub const GRAFANA_INI: &str = "grafana/grafana.ini";
/// The Container that runs Grafana (the policy module uses the same name).
pub const GRAFANA_CONTAINER: &str = "grafana";
/// The catalogue's file name, beside the dashboards.
pub const CATALOGUE_FILE: &str = "catalogue.yaml";

/// What the Grafana check looked at, and what it found.
#[derive(Debug, Default)]
pub struct Report {
    /// Every problem, sorted by location.
    pub diagnostics: Vec<Diagnostic>,
    /// Dashboards checked.
    pub dashboards: usize,
    /// Panels checked (rows included).
    pub panels: usize,
    /// Queries checked (panel targets, variables, rule queries).
    pub queries: usize,
    /// Alert rules checked.
    pub rules: usize,
    /// Wiring that lives outside the Grafana content (the grafana Container's mounts and
    /// environment): reported, but it does not make the content invalid.
    pub warnings: Vec<Diagnostic>,
}

/// One content file: where it comes from in the repository, its text, and where each path is.
pub struct ContentFile<'a> {
    /// `ConfigFile/<name>` that delivers it.
    pub resource: String,
    /// The repository file (normalized, relative as the manifests were given).
    pub file: PathBuf,
    /// The content as it reaches the host (templated).
    pub text: &'a str,
    positions: HashMap<String, yaml::Pos>,
}

impl<'a> ContentFile<'a> {
    /// A file whose positions come from parsing `text` as YAML (JSON is YAML too).
    pub fn new(resource: String, file: PathBuf, text: &'a str) -> Self {
        let positions = yaml::parse(text)
            .ok()
            .and_then(|mut docs| (!docs.is_empty()).then(|| docs.swap_remove(0).positions))
            .unwrap_or_default();
        ContentFile {
            resource,
            file,
            text,
            positions,
        }
    }

    /// Where `path` (a JSON pointer `/a/0/b` or a YAML path `a[0].b`) starts, or its nearest
    /// ancestor that is known.
    pub fn locate(&self, path: &str) -> SourceLocation {
        let mut p = if path.starts_with('/') {
            pointer_to_yaml_path(path)
        } else {
            path.to_string()
        };
        loop {
            if let Some(pos) = self.positions.get(&p) {
                return SourceLocation {
                    file: self.file.clone(),
                    line: pos.line,
                    column: pos.column,
                };
            }
            match p.rfind(['.', '[']) {
                Some(i) => p.truncate(i),
                None => {
                    return SourceLocation {
                        file: self.file.clone(),
                        line: 1,
                        column: 1,
                    };
                }
            }
        }
    }
}

/// Collects diagnostics.
#[derive(Default)]
pub struct Sink {
    out: Vec<Diagnostic>,
}

impl Sink {
    /// Reports a problem at `path` of `file`.
    pub fn report(
        &mut self,
        file: &ContentFile<'_>,
        path: &str,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.out.push(Diagnostic {
            location: file.locate(path),
            resource: Some(file.resource.clone()),
            path: (!path.is_empty()).then(|| path.to_string()),
            message: message.into(),
            fix: fix.into(),
            rule: None,
        });
    }

    /// Reports a problem at a known line of `file` (formats the YAML index cannot read).
    pub fn report_line(
        &mut self,
        file: &ContentFile<'_>,
        (line, column): (usize, usize),
        path: &str,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.out.push(Diagnostic {
            location: SourceLocation {
                file: file.file.clone(),
                line,
                column,
            },
            resource: Some(file.resource.clone()),
            path: (!path.is_empty()).then(|| path.to_string()),
            message: message.into(),
            fix: fix.into(),
            rule: None,
        });
    }

    /// Reports a problem about a whole file (unreadable, missing).
    pub fn report_file(&mut self, file: &Path, message: impl Into<String>, fix: impl Into<String>) {
        self.out.push(Diagnostic {
            location: SourceLocation {
                file: file.to_path_buf(),
                line: 1,
                column: 1,
            },
            resource: None,
            path: None,
            message: message.into(),
            fix: fix.into(),
            rule: None,
        });
    }
}

/// `/panels/0/targets/1/expr` → `panels[0].targets[1].expr` (the manifest YAML index's form).
fn pointer_to_yaml_path(pointer: &str) -> String {
    let mut out = String::new();
    for seg in pointer.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg);
        }
    }
    out
}

/// Checks all Grafana content the desired state delivers.
pub fn check(desired: &Desired) -> Report {
    let mut sink = Sink::default();
    let mut report = Report::default();
    let mut dashboards = Vec::new();
    let mut alerting = Vec::new();
    let mut datasources = Vec::new();
    let mut providers = Vec::new();
    let mut ini = Vec::new();
    for (r, spec) in desired.config_files() {
        let Some(text) = spec.content.as_deref() else {
            continue;
        };
        let file = match &spec.source {
            Some(src) => normalize(&r.source.file.parent().unwrap_or(Path::new("")).join(src)),
            None => r.source.file.clone(),
        };
        let cf = ContentFile::new(r.id.to_string(), file, text);
        let p = spec.path.as_str();
        if p.starts_with(DASHBOARDS_DIR) {
            dashboards.push(cf);
        } else if p.starts_with(ALERTING_DIR) {
            alerting.push(cf);
        } else if p.starts_with(DATASOURCES_DIR) {
            datasources.push(cf);
        } else if p.starts_with(PROVIDERS_DIR) {
            providers.push(cf);
        } else if p == GRAFANA_INI {
            ini.push(cf);
        }
    }
    if dashboards.is_empty() && alerting.is_empty() && datasources.is_empty() {
        return report;
    }

    // The first dashboard directory that keeps a catalogue (the shipped one is dashboards/).
    let candidates: Vec<PathBuf> = dashboards
        .iter()
        .map(|d| {
            d.file
                .parent()
                .unwrap_or(Path::new(""))
                .join(CATALOGUE_FILE)
        })
        .collect();
    let catalogue_path = candidates
        .iter()
        .find(|p| p.is_file())
        .or(candidates.first())
        .cloned()
        .unwrap_or_else(|| PathBuf::from("dashboards").join(CATALOGUE_FILE));
    let catalogue_text = std::fs::read_to_string(&catalogue_path);
    let catalogue = match &catalogue_text {
        Ok(text) => {
            let cf = ContentFile::new("catalogue".to_string(), catalogue_path.clone(), text);
            Catalogue::read(&cf, &mut sink)
        }
        Err(e) => {
            sink.report_file(
                &catalogue_path,
                format!("cannot read the series catalogue: {e}"),
                "keep catalogue.yaml beside the dashboards: it declares every metric, log label and profile type the stack produces",
            );
            None
        }
    };
    let catalogue = catalogue.unwrap_or_default();

    let ds = provisioning::check_datasources(&datasources, &catalogue, &mut sink);
    provisioning::check_providers(&providers, desired, &mut sink);
    for f in &ini {
        provisioning::check_ini(f, &mut sink);
    }
    let stats = dashboards::check(&dashboards, &ds, &catalogue, &mut sink);
    report.dashboards = stats.dashboards;
    report.panels = stats.panels;
    report.queries = stats.queries;
    let stats = alerting::check(&alerting, &ds, &catalogue, &mut sink);
    report.rules = stats.rules;
    report.queries += stats.queries;
    report.warnings = wiring(desired, &stats.env_refs);
    report
        .warnings
        .sort_by(|a, b| a.location.cmp(&b.location).then(a.message.cmp(&b.message)));

    let mut diags = sink.out;
    diags.sort_by(|a, b| a.location.cmp(&b.location).then(a.message.cmp(&b.message)));
    diags.dedup();
    report.diagnostics = diags;
    report
}

/// Where the grafana container expects a content file from the host root (`grafana/…`).
pub fn container_target(host_path: &str) -> String {
    match host_path.strip_prefix("grafana/dashboards/") {
        Some(rest) => format!("/var/lib/grafana/dashboards/{rest}"),
        None => format!(
            "/etc/grafana/{}",
            host_path.strip_prefix("grafana/").unwrap_or(host_path)
        ),
    }
}

/// Content the grafana container would never see (not mounted), and environment variables
/// the contact points expand that the container does not set.
fn wiring(desired: &Desired, env_refs: &[alerting::EnvRef]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let Some((grafana, container)) = desired
        .containers()
        .find(|(r, _)| r.id.name == GRAFANA_CONTAINER)
    else {
        return out;
    };
    for (r, f) in desired.config_files() {
        let p = f.path.as_str();
        let content = [DASHBOARDS_DIR, ALERTING_DIR, DATASOURCES_DIR, PROVIDERS_DIR]
            .iter()
            .any(|d| p.starts_with(d))
            || p == GRAFANA_INI;
        let mounted = container.mounts.iter().any(|m| {
            m.config_file.as_deref() == Some(r.id.name.as_str())
                || m.host_path
                    .as_deref()
                    .is_some_and(|h| p.starts_with(&format!("{}/", h.trim_end_matches('/'))))
        });
        if content && !mounted {
            out.push(Diagnostic {
                location: r.source.clone(),
                resource: Some(r.id.to_string()),
                path: Some("spec.path".to_string()),
                message: format!(
                    "{} does not mount it, so Grafana never sees {p}",
                    grafana.id
                ),
                fix: format!(
                    "add `- {{ configFile: {}, target: {}, readOnly: true }}` to {} spec.mounts",
                    r.id.name,
                    container_target(p),
                    grafana.id
                ),
                rule: None,
            });
        }
    }
    for e in env_refs {
        if !container.environment.contains_key(&e.name) {
            out.push(Diagnostic {
                location: e.location.clone(),
                resource: Some(e.resource.clone()),
                path: Some(e.path.clone()),
                message: format!(
                    "expands ${} from Grafana's environment, which {} does not set (Grafana would provision an empty value)",
                    e.name, grafana.id
                ),
                fix: format!(
                    "set {} spec.environment.{} (a secret goes in a file instead: a ConfigFile with fromParameter, referenced as $__file{{path}})",
                    grafana.id, e.name
                ),
                rule: None,
            });
        }
    }
    out
}

/// "did you mean `x`?" when a candidate is close to `given`.
pub fn did_you_mean<'c>(given: &str, candidates: impl IntoIterator<Item = &'c str>) -> String {
    let best = candidates
        .into_iter()
        .map(|c| {
            // A prefix (`service` for `service_name`) is as likely a slip as a typo.
            let prefix = given.len() >= 4 && (c.starts_with(given) || given.starts_with(c));
            (if prefix { 1 } else { edit_distance(c, given) }, c)
        })
        .min();
    match best {
        Some((d, c)) if d <= 2.max(given.len() / 5) => format!("did you mean `{c}`? "),
        _ => String::new(),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Parses a Grafana duration (`30s`, `5m`, `1h`, `1d`, `0`); `None` when malformed.
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(std::time::Duration::ZERO);
    }
    let mut total = 0u64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let secs = match &rest[..unit_len] {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 604_800,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(secs)?)?;
        rest = &rest[unit_len..];
    }
    Some(std::time::Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_pointers_become_yaml_paths() {
        assert_eq!(
            pointer_to_yaml_path("/panels/3/targets/0/expr"),
            "panels[3].targets[0].expr"
        );
        assert_eq!(pointer_to_yaml_path("/uid"), "uid");
    }

    #[test]
    fn source_paths_are_normalized() {
        assert_eq!(
            normalize(Path::new("manifests/host/../../dashboards/home.json")),
            PathBuf::from("dashboards/home.json")
        );
        assert_eq!(normalize(Path::new("../x/./y")), PathBuf::from("../x/y"));
    }

    #[test]
    fn content_goes_where_the_grafana_container_reads_it() {
        assert_eq!(
            container_target("grafana/dashboards/home.json"),
            "/var/lib/grafana/dashboards/home.json"
        );
        assert_eq!(
            container_target("grafana/provisioning/alerting/rules.yaml"),
            "/etc/grafana/provisioning/alerting/rules.yaml"
        );
        assert_eq!(
            container_target("grafana/grafana.ini"),
            "/etc/grafana/grafana.ini"
        );
    }

    #[test]
    fn durations_parse_like_grafana() {
        assert_eq!(
            parse_duration("5m"),
            Some(std::time::Duration::from_secs(300))
        );
        assert_eq!(
            parse_duration("1h30m"),
            Some(std::time::Duration::from_secs(5400))
        );
        assert_eq!(parse_duration("0s"), Some(std::time::Duration::ZERO));
        assert_eq!(parse_duration("5 minutes"), None);
        assert_eq!(parse_duration("-5m"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn json_positions_come_from_the_yaml_index() {
        let text = "{\n  \"uid\": \"x\",\n  \"panels\": [\n    {\"id\": 1, \"targets\": [{\"expr\": \"up\"}]}\n  ]\n}\n";
        let f = ContentFile::new("ConfigFile/d".into(), PathBuf::from("d.json"), text);
        let loc = f.locate("/panels/0/targets/0/expr");
        assert_eq!(loc.line, 4);
        assert!(loc.column > 5, "{loc}");
    }

    #[test]
    fn close_names_are_suggested() {
        assert_eq!(
            did_you_mean("service", ["service_name", "job"]),
            "did you mean `service_name`? "
        );
        assert_eq!(did_you_mean("path", ["service_name", "job"]), String::new());
        assert_eq!(
            did_you_mean("http_status_cod", ["http_status_code", "http_method"]),
            "did you mean `http_status_code`? "
        );
    }
}
