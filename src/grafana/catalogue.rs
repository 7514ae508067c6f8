//! The series catalogue (`dashboards/catalogue.yaml`): every metric family, log stream and
//! profile type the stack produces, each with its source and labels. Reading only; the checks
//! that use it live in promql.rs and logql.rs.

use super::{ContentFile, Sink};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

/// The catalogue, resolved: each family's labels include its source's labels.
#[derive(Debug, Default, Clone)]
pub struct Catalogue {
    /// Metric families by declared name.
    pub families: BTreeMap<String, Family>,
    /// Log sources.
    pub logs: Vec<LogSource>,
    /// Profile type ids Pyroscope holds.
    pub profile_types: BTreeSet<String>,
    /// Labels profiles carry.
    pub profile_labels: BTreeSet<String>,
}

/// One metric family.
#[derive(Debug, Clone)]
pub struct Family {
    /// Declared name (a histogram's base name).
    pub name: String,
    /// counter, gauge or histogram.
    pub kind: FamilyType,
    /// Where it comes from (a key of `sources`).
    pub source: String,
    /// Its labels plus its source's.
    pub labels: BTreeSet<String>,
}

/// Prometheus metric types the catalogue knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FamilyType {
    /// Monotonic counter.
    Counter,
    /// Gauge.
    Gauge,
    /// Classic histogram: `_bucket` (with `le`), `_count`, `_sum`.
    Histogram,
}

/// A log stream source in Loki.
#[derive(Debug, Clone)]
pub struct LogSource {
    /// Its name.
    pub name: String,
    /// Label pairs that identify its streams.
    pub matches: BTreeMap<String, String>,
    /// Line format.
    pub format: LogFormat,
    /// Labels its streams carry.
    pub labels: BTreeSet<String>,
}

/// How a log source's lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `key=value` pairs: parse with `| logfmt`.
    Logfmt,
    /// JSON objects: parse with `| json`.
    Json,
    /// Free text.
    Text,
}

impl LogFormat {
    /// The LogQL parser stage for this format.
    pub fn stage(self) -> &'static str {
        match self {
            LogFormat::Logfmt => "logfmt",
            LogFormat::Json => "json",
            LogFormat::Text => "pattern",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    sources: BTreeMap<String, SourceDecl>,
    families: Vec<FamilyDecl>,
    #[serde(default)]
    logs: Vec<LogDecl>,
    #[serde(default)]
    profiles: Option<ProfilesDecl>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceDecl {
    #[allow(dead_code)] // documentation for people; required so every source says what it is
    description: String,
    #[serde(default)]
    labels: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FamilyDecl {
    name: String,
    #[serde(rename = "type")]
    kind: FamilyType,
    source: String,
    #[serde(default)]
    labels: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogDecl {
    source: String,
    #[allow(dead_code)] // documentation for people
    description: String,
    #[serde(rename = "match", default)]
    matches: BTreeMap<String, String>,
    format: LogFormat,
    labels: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfilesDecl {
    types: Vec<String>,
    #[serde(default)]
    labels: Vec<String>,
}

/// What a concrete series name resolves to.
#[derive(Debug, Clone)]
pub struct Series<'c> {
    /// The family.
    pub family: &'c Family,
    /// Labels this series carries (a histogram's `_bucket` adds `le`).
    pub labels: BTreeSet<String>,
}

impl Catalogue {
    /// Reads the catalogue; problems in it are reported and `None` returned when unusable.
    pub fn read(file: &ContentFile<'_>, sink: &mut Sink) -> Option<Catalogue> {
        let value = match crate::manifest::yaml::parse(file.text) {
            Ok(mut docs) if docs.len() == 1 => docs.swap_remove(0).value,
            Ok(_) => {
                sink.report(
                    file,
                    "",
                    "the catalogue must be one YAML document",
                    "remove extra `---` documents",
                );
                return None;
            }
            Err(e) => {
                sink.out.push(crate::manifest::Diagnostic {
                    location: crate::model::SourceLocation {
                        file: file.file.clone(),
                        line: e.pos.line,
                        column: e.pos.column,
                    },
                    resource: None,
                    path: None,
                    message: format!("YAML syntax error: {}", e.message),
                    fix: "correct the YAML at this position".to_string(),
                    rule: None,
                });
                return None;
            }
        };
        let decl: File = match serde_path_to_error::deserialize(value) {
            Ok(d) => d,
            Err(e) => {
                let path = e.path().to_string();
                sink.report(
                    file,
                    if path == "." { "" } else { &path },
                    format!("the catalogue does not have the expected shape: {}", e.inner()),
                    "see the comment at the top of catalogue.yaml: sources, families (name, type, source, labels), logs, profiles",
                );
                return None;
            }
        };
        let mut cat = Catalogue::default();
        for (i, f) in decl.families.into_iter().enumerate() {
            let path = format!("families[{i}]");
            let Some(source) = decl.sources.get(&f.source) else {
                sink.report(
                    file,
                    &format!("{path}.source"),
                    format!(
                        "family `{}` names an undeclared source `{}`",
                        f.name, f.source
                    ),
                    format!(
                        "{}declare it under `sources:`",
                        super::did_you_mean(&f.source, decl.sources.keys().map(String::as_str))
                    ),
                );
                continue;
            };
            if cat.families.contains_key(&f.name) {
                sink.report(
                    file,
                    &format!("{path}.name"),
                    format!("family `{}` is declared twice", f.name),
                    "keep one declaration",
                );
                continue;
            }
            let labels = f
                .labels
                .iter()
                .chain(&source.labels)
                .cloned()
                .collect::<BTreeSet<_>>();
            cat.families.insert(
                f.name.clone(),
                Family {
                    name: f.name,
                    kind: f.kind,
                    source: f.source,
                    labels,
                },
            );
        }
        for l in decl.logs {
            cat.logs.push(LogSource {
                name: l.source,
                matches: l.matches,
                format: l.format,
                labels: l.labels.into_iter().collect(),
            });
        }
        if let Some(p) = decl.profiles {
            cat.profile_types = p.types.into_iter().collect();
            cat.profile_labels = p.labels.into_iter().collect();
        }
        Some(cat)
    }

    /// Resolves a concrete series name (`x_bucket` of histogram `x`, …).
    pub fn series(&self, name: &str) -> Option<Series<'_>> {
        if let Some(f) = self.families.get(name)
            && f.kind != FamilyType::Histogram
        {
            return Some(Series {
                family: f,
                labels: f.labels.clone(),
            });
        }
        for (suffix, extra) in [("_bucket", Some("le")), ("_count", None), ("_sum", None)] {
            if let Some(base) = name.strip_suffix(suffix)
                && let Some(f) = self.families.get(base)
                && f.kind == FamilyType::Histogram
            {
                let mut labels = f.labels.clone();
                labels.extend(extra.map(str::to_string));
                return Some(Series { family: f, labels });
            }
        }
        None
    }

    /// Every concrete series name, for suggestions.
    pub fn series_names(&self) -> Vec<String> {
        let mut out = Vec::new();
        for f in self.families.values() {
            if f.kind == FamilyType::Histogram {
                for s in ["_bucket", "_count", "_sum"] {
                    out.push(format!("{}{s}", f.name));
                }
            } else {
                out.push(f.name.clone());
            }
        }
        out
    }

    /// Every label any log source sets.
    pub fn log_labels(&self) -> BTreeSet<String> {
        self.logs
            .iter()
            .flat_map(|l| l.labels.iter().cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn read(text: &str) -> (Option<Catalogue>, Vec<String>) {
        let f = ContentFile::new("catalogue".into(), PathBuf::from("c.yaml"), text);
        let mut sink = Sink::default();
        let c = Catalogue::read(&f, &mut sink);
        (c, sink.out.iter().map(|d| d.to_string()).collect())
    }

    #[test]
    fn histograms_resolve_to_their_three_series() {
        let (c, errs) = read(
            "sources: {s: {description: d, labels: [job]}}\nfamilies:\n  - {name: h, type: histogram, source: s, labels: [a]}\n  - {name: g, type: gauge, source: s}\n",
        );
        assert!(errs.is_empty(), "{errs:?}");
        let c = c.unwrap();
        let b = c.series("h_bucket").unwrap();
        assert!(b.labels.contains("le") && b.labels.contains("job") && b.labels.contains("a"));
        assert!(!c.series("h_count").unwrap().labels.contains("le"));
        assert!(
            c.series("h").is_none(),
            "a histogram's base name is no series"
        );
        assert!(c.series("g").is_some());
        assert!(c.series("g_count").is_none());
    }

    #[test]
    fn a_family_with_an_unknown_source_is_reported() {
        let (_, errs) = read(
            "sources: {node: {description: d}}\nfamilies:\n  - {name: x, type: gauge, source: nod}\n",
        );
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].contains("families[0].source"), "{}", errs[0]);
        assert!(errs[0].contains("did you mean `node`"), "{}", errs[0]);
    }
}
