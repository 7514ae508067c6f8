//! One YAML document → one typed [`Resource`], reporting every unknown field and the first
//! type error of each document, each at its field path.

use super::diagnostic::Diagnostic;
use super::yaml::Document;
use crate::model::{Ensure, Kind, Metadata, Mode, Resource, ResourceId, SourceLocation, Spec};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::path::Path;

/// The only apiVersion this release understands.
pub const API_VERSION: &str = "stackwarden.io/v1";
const TOP_LEVEL: [&str; 4] = ["apiVersion", "kind", "metadata", "spec"];

/// Reports problems of one document, locating paths in it.
pub struct Reporter<'a> {
    /// The file.
    pub file: &'a Path,
    /// The document.
    pub doc: &'a Document,
    /// `Kind/name`, once known.
    pub resource: Option<String>,
    /// Where problems go.
    pub out: &'a mut Vec<Diagnostic>,
}

impl Reporter<'_> {
    /// The source location of a field path.
    pub fn locate(&self, path: &str) -> SourceLocation {
        let pos = self.doc.position_of(path);
        SourceLocation {
            file: self.file.to_path_buf(),
            line: pos.line,
            column: pos.column,
        }
    }

    /// Records a problem at a field path.
    pub fn report(&mut self, path: &str, message: impl Into<String>, fix: impl Into<String>) {
        let location = self.locate(path);
        self.out.push(Diagnostic {
            location,
            resource: self.resource.clone(),
            path: (!path.is_empty()).then(|| path.to_string()),
            message: message.into(),
            fix: fix.into(),
            rule: None,
        });
    }
}

/// Reads a document's envelope and spec. `None` when it has errors (already reported).
pub fn read_resource(value: Value, r: &mut Reporter<'_>) -> Option<Resource> {
    let Value::Object(mut map) = value else {
        r.report(
            "",
            "a manifest document must be a mapping",
            "write apiVersion, kind, metadata and spec at the top level",
        );
        return None;
    };
    for key in map.keys() {
        if !TOP_LEVEL.contains(&key.as_str()) {
            r.report(
                key,
                format!("unknown field `{key}`"),
                fix_for_unknown(key, &TOP_LEVEL),
            );
        }
    }
    let kind = match map.remove("kind") {
        Some(Value::String(k)) => match Kind::parse(&k) {
            Some(kind) => Some(kind),
            None => {
                let names: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                r.report(
                    "kind",
                    format!("unknown kind `{k}`"),
                    fix_for_unknown(&k, &names),
                );
                None
            }
        },
        Some(_) => {
            r.report(
                "kind",
                "kind must be a string",
                "write e.g. `kind: Container`",
            );
            None
        }
        None => {
            r.report(
                "kind",
                "missing field `kind`",
                "add `kind:` with one of the resource kinds, e.g. `kind: Container`",
            );
            None
        }
    };
    match map.remove("apiVersion") {
        Some(Value::String(v)) if v == API_VERSION => {}
        Some(v) => r.report(
            "apiVersion",
            format!("unsupported apiVersion {v}"),
            format!("write `apiVersion: {API_VERSION}`"),
        ),
        None => r.report(
            "apiVersion",
            "missing field `apiVersion`",
            format!("add `apiVersion: {API_VERSION}`"),
        ),
    }
    let metadata: Option<Metadata> = match map.remove("metadata") {
        Some(v) => typed(v, "metadata", r),
        None => {
            r.report(
                "metadata",
                "missing field `metadata`",
                "add `metadata:` with `name:`",
            );
            None
        }
    };
    let (kind, metadata) = (kind?, metadata?);
    r.resource = Some(format!("{kind}/{}", metadata.name));
    check_name(kind, &metadata.name, r);
    let Some(spec_value) = map.remove("spec") else {
        r.report(
            "spec",
            "missing field `spec`",
            "add the `spec:` of the resource",
        );
        return None;
    };
    let spec = match kind {
        Kind::Stack => Spec::Stack(typed(spec_value, "spec", r)?),
        Kind::Lookup => Spec::Lookup(typed(spec_value, "spec", r)?),
        Kind::SecurityGroup => Spec::SecurityGroup(typed(spec_value, "spec", r)?),
        Kind::Bucket => Spec::Bucket(typed(spec_value, "spec", r)?),
        Kind::Parameter => Spec::Parameter(typed(spec_value, "spec", r)?),
        Kind::Instance => Spec::Instance(typed(spec_value, "spec", r)?),
        Kind::TargetGroup => Spec::TargetGroup(typed(spec_value, "spec", r)?),
        Kind::ListenerRule => Spec::ListenerRule(typed(spec_value, "spec", r)?),
        Kind::ConfigFile => Spec::ConfigFile(typed(spec_value, "spec", r)?),
        Kind::Container => Spec::Container(Box::new(typed(spec_value, "spec", r)?)),
    };
    Some(Resource {
        id: ResourceId::new(kind, metadata.name),
        spec,
        ensure: Ensure::Present,
        mode: metadata.mode.unwrap_or(Mode::Enforce),
        source: r.locate("metadata.name"),
    })
}

/// Names become container names, tags and references: keep them to DNS-label characters.
fn check_name(kind: Kind, name: &str, r: &mut Reporter<'_>) {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        r.report(
            "metadata.name",
            format!("`{name}` is not a valid {kind} name"),
            "use 1–63 lowercase letters, digits and dashes, not starting or ending with a dash",
        );
    }
}

/// Deserializes `value` as `T`, reporting every unknown field (dropping each and retrying)
/// and the first other error, at paths under `prefix`.
fn typed<T: DeserializeOwned>(mut value: Value, prefix: &str, r: &mut Reporter<'_>) -> Option<T> {
    // Each retry removes one unknown field (already reported), so that the rest of the
    // document is still checked; a document has far fewer fields than this.
    for _ in 0..256 {
        let err = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(t) => return Some(t),
            Err(e) => e,
        };
        let inner = err.inner().to_string();
        let mut segments = path_segments(&err.path().to_string());
        if let Some((field, expected)) = unknown_field(&inner) {
            if segments.last().map(String::as_str) != Some(field.as_str()) {
                segments.push(field.clone());
            }
            let path = join(prefix, &segments);
            let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
            r.report(
                &path,
                format!("unknown field `{field}`"),
                fix_for_unknown(&field, &expected),
            );
            if !remove_at(&mut value, &segments) {
                return None;
            }
            continue;
        }
        if let Some(field) = between(&inner, "missing field `", "`") {
            segments.push(field.to_string());
            let path = join(prefix, &segments);
            r.report(
                &path,
                format!("missing field `{field}`"),
                format!("add `{field}:` to {}", parent(&path)),
            );
            return None;
        }
        let path = join(prefix, &segments);
        let (message, fix) = explain(&inner);
        r.report(&path, message, fix);
        return None;
    }
    None
}

fn parent(path: &str) -> &str {
    path.rfind(['.', '[']).map_or(path, |i| &path[..i])
}

fn explain(inner: &str) -> (String, String) {
    // serde_json appends " at line 0 column 0" to some messages; positions come from our index.
    let message = inner.split(" at line ").next().unwrap_or(inner).to_string();
    if let Some(variant) = between(&message, "unknown variant `", "`") {
        let expected = expected_list(&message);
        let names: Vec<&str> = expected.iter().map(String::as_str).collect();
        return (
            format!("unknown value `{variant}`"),
            fix_for_unknown(variant, &names),
        );
    }
    if let Some(expected) = message.split(", expected ").nth(1) {
        return (message.clone(), format!("write {expected} here"));
    }
    // Our own parse errors (sizes, durations) end with ": <how to write it>".
    if let Some((problem, hint)) = message.split_once(": ") {
        return (problem.to_string(), hint.to_string());
    }
    (message, "correct the value".to_string())
}

/// `unknown field `x`, expected one of `a`, `b`` → (x, [a, b]).
fn unknown_field(msg: &str) -> Option<(String, Vec<String>)> {
    let field = between(msg, "unknown field `", "`")?;
    Some((field.to_string(), expected_list(msg)))
}

fn expected_list(msg: &str) -> Vec<String> {
    let Some(rest) = msg.split("expected").nth(1) else {
        return Vec::new();
    };
    rest.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = s.find(start)? + start.len();
    let len = s[from..].find(end)?;
    Some(&s[from..from + len])
}

/// serde_path_to_error's `a.b[0].c` → [a, b, [0], c]; `.` is the root.
fn path_segments(p: &str) -> Vec<String> {
    if p == "." || p.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for part in p.split('.') {
        let mut rest = part;
        if let Some(i) = rest.find('[') {
            if i > 0 {
                out.push(rest[..i].to_string());
            }
            rest = &rest[i..];
            while let Some(end) = rest.find(']') {
                out.push(rest[..=end].to_string());
                rest = &rest[end + 1..];
            }
        } else {
            out.push(rest.to_string());
        }
    }
    out
}

fn join(prefix: &str, segments: &[String]) -> String {
    let mut out = prefix.to_string();
    for s in segments {
        if !s.starts_with('[') && !out.is_empty() {
            out.push('.');
        }
        out.push_str(s);
    }
    out
}

fn remove_at(value: &mut Value, segments: &[String]) -> bool {
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut cur = value;
    for s in parents {
        let next = match s.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            Some(i) => i.parse::<usize>().ok().and_then(|i| cur.get_mut(i)),
            None => cur.get_mut(s.as_str()),
        };
        match next {
            Some(n) => cur = n,
            None => return false,
        }
    }
    cur.as_object_mut().and_then(|m| m.remove(last)).is_some()
}

/// "did you mean" for a misspelt name, else the list of valid ones.
pub fn fix_for_unknown(given: &str, valid: &[&str]) -> String {
    let norm = |s: &str| s.replace(['_', '-'], "").to_ascii_lowercase();
    let best = valid
        .iter()
        .map(|v| {
            let d = if norm(v) == norm(given) {
                0
            } else {
                strsim::levenshtein(v, given)
            };
            (d, *v)
        })
        .min();
    match best {
        Some((d, v)) if d <= 2.max(given.len() / 4) => format!("did you mean `{v}`?"),
        _ if valid.is_empty() => "remove it".to_string(),
        _ => format!("remove it, or use one of: {}", valid.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misspelt_fields_get_a_suggestion() {
        assert_eq!(
            fix_for_unknown("usr", &["user", "image"]),
            "did you mean `user`?"
        );
        assert_eq!(
            fix_for_unknown("security_opt", &["securityOpt"]),
            "did you mean `securityOpt`?"
        );
        assert_eq!(
            fix_for_unknown("zzzzzz", &["user", "image"]),
            "remove it, or use one of: user, image"
        );
    }

    #[test]
    fn serde_paths_split_into_segments() {
        assert_eq!(
            path_segments("ingress[0].from"),
            vec!["ingress", "[0]", "from"]
        );
        assert_eq!(
            join("spec", &path_segments("ingress[0].from")),
            "spec.ingress[0].from"
        );
        assert_eq!(join("spec", &[]), "spec");
    }
}
