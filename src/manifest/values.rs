//! Per-environment values: `manifests/environments/_defaults.yaml` overlaid by
//! `manifests/environments/<env>.yaml`, substituted into manifests as `${name}`.
//!
//! A scalar that is exactly `${name}` takes the value's type (`enabled: ${enabled}` is a
//! bool); inside longer text the value is interpolated. `$${` writes a literal `${`. Names
//! known only at run time (`${account}`) are left for the engine to fill in.

use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Values resolved at run time, not from files (the AWS account comes from STS).
pub const RUNTIME_VALUES: [&str; 1] = ["account"];
/// The file under `environments/` that every environment starts from.
pub const DEFAULTS_FILE: &str = "_defaults.yaml";
/// How many bytes substitution may insert in one load. A value can repeat other values
/// (`a: ${b}${b}`, `b: ${c}${c}`…), which grows exponentially like nested YAML aliases; the
/// shipped manifests insert a few KiB.
pub const MAX_SUBSTITUTED_BYTES: usize = 16 << 20;
/// How many bytes resolving one value's references to other values may insert.
pub const MAX_VALUE_BYTES: usize = 1 << 20;

/// The merged values of one environment.
#[derive(Debug, Clone)]
pub struct Values {
    root: serde_json::Map<String, Value>,
    /// Bytes inserted so far, shared by every copy of these values (one load).
    inserted: Arc<AtomicUsize>,
    /// Values whose own references grew past the budget; referring to one is an error.
    oversized: BTreeSet<String>,
    /// The most `inserted` may reach.
    limit: usize,
}

/// Why a `${…}` could not be substituted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubstError {
    /// No such value.
    Undefined(String),
    /// `${` without a closing `}`.
    Unterminated,
    /// A map or list spliced into text.
    NotScalar(String),
    /// Substitution would insert more than [`MAX_SUBSTITUTED_BYTES`].
    TooLarge,
}

impl Values {
    /// Builds values from the defaults and the environment's own map, the latter winning, plus
    /// the built-in `env`.
    pub fn new(defaults: Option<Value>, env_values: Value, env: &str) -> Values {
        let mut root = serde_json::Map::new();
        for layer in [defaults.unwrap_or(Value::Null), env_values] {
            if let Value::Object(map) = layer {
                merge(&mut root, map);
            }
        }
        root.insert("env".to_string(), Value::String(env.to_string()));
        let mut values = Values {
            root,
            inserted: Arc::default(),
            oversized: BTreeSet::new(),
            limit: MAX_SUBSTITUTED_BYTES,
        };
        values.resolve_self_references();
        values
    }

    /// The values (dotted paths) that grew past the substitution budget while resolving
    /// each other.
    pub fn oversized(&self) -> impl Iterator<Item = &str> {
        self.oversized.iter().map(String::as_str)
    }

    /// True when `name` is, holds or lies within an oversized value.
    fn is_oversized(&self, name: &str) -> bool {
        self.oversized.iter().any(|o| {
            name == o
                || name
                    .strip_prefix(o.as_str())
                    .is_some_and(|r| r.starts_with('.'))
                || o.strip_prefix(name).is_some_and(|r| r.starts_with('.'))
        })
    }

    /// A value by dotted name (`images.grafana`).
    pub fn get(&self, name: &str) -> Option<&Value> {
        let mut parts = name.split('.');
        let mut cur = self.root.get(parts.next()?)?;
        for part in parts {
            cur = cur.get(part)?;
        }
        Some(cur)
    }

    /// Values may refer to other values (`bucketName: ${project}-${env}-…`); resolve those
    /// a few levels deep, which covers any sane layering without risking a cycle.
    fn resolve_self_references(&mut self) {
        let mut total = 0usize;
        for _ in 0..4 {
            let mut snapshot = self.clone();
            // Each value is judged on its own growth, so that one exponential value does not
            // spend the budget of the honest values after it.
            snapshot.inserted = Arc::default();
            snapshot.limit = MAX_VALUE_BYTES;
            let mut oversized = BTreeSet::new();
            for (key, value) in self.root.iter_mut() {
                if total > MAX_SUBSTITUTED_BYTES {
                    oversized.insert(key.clone());
                    continue;
                }
                snapshot.inserted.store(0, Ordering::Relaxed);
                snapshot.substitute_at(value, key.clone(), &mut |path, e| {
                    if e == SubstError::TooLarge {
                        oversized.insert(path.to_string());
                    }
                });
                total = total.saturating_add(snapshot.inserted.load(Ordering::Relaxed));
            }
            if !oversized.is_empty() {
                // Dropped, so that their partial expansion holds no memory.
                for path in &oversized {
                    if let Some(v) = self.get_mut(path) {
                        *v = Value::Null;
                    }
                }
                self.oversized = oversized;
                return;
            }
        }
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut Value> {
        let mut parts = name.split('.');
        let mut cur = self.root.get_mut(parts.next()?)?;
        for part in parts {
            cur = cur.get_mut(part)?;
        }
        Some(cur)
    }

    /// Substitutes `${…}` in every string of `value`; reports each failure with its path.
    pub fn substitute(&self, value: &mut Value, on_error: &mut dyn FnMut(&str, SubstError)) {
        self.substitute_at(value, String::new(), on_error);
    }

    fn substitute_at(
        &self,
        value: &mut Value,
        path: String,
        on_error: &mut dyn FnMut(&str, SubstError),
    ) {
        match value {
            Value::String(s) => {
                if let Some(name) = whole_reference(s) {
                    if RUNTIME_VALUES.contains(&name) {
                        return;
                    }
                    if self.is_oversized(name) {
                        on_error(&path, SubstError::TooLarge);
                        return;
                    }
                    match self.get(name) {
                        Some(v) if !self.spend_on(|| size_of(v)) => {
                            on_error(&path, SubstError::TooLarge)
                        }
                        Some(v) => *value = v.clone(),
                        None => on_error(&path, SubstError::Undefined(name.to_string())),
                    }
                    return;
                }
                match self.interpolate(s) {
                    Ok(text) => *s = text,
                    Err(errors) => errors.into_iter().for_each(|e| on_error(&path, e)),
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    self.substitute_at(item, format!("{path}[{i}]"), on_error);
                }
            }
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    self.substitute_at(v, p, on_error);
                }
            }
            _ => {}
        }
    }

    /// Interpolates `${name}` inside text; runtime names are kept as written.
    pub fn interpolate(&self, text: &str) -> Result<String, Vec<SubstError>> {
        let mut out = String::with_capacity(text.len());
        let mut errors = Vec::new();
        let mut rest = text;
        while let Some(i) = rest.find("${") {
            if rest[..i].ends_with('$') {
                // `$${` is an escaped literal `${`.
                out.push_str(&rest[..i - 1]);
                out.push_str("${");
                rest = &rest[i + 2..];
                continue;
            }
            out.push_str(&rest[..i]);
            let after = &rest[i + 2..];
            let Some(end) = after.find('}') else {
                errors.push(SubstError::Unterminated);
                out.push_str(&rest[i..]);
                rest = "";
                break;
            };
            let name = after[..end].trim();
            if RUNTIME_VALUES.contains(&name) {
                out.push_str(&rest[i..i + 3 + end]);
            } else {
                let text = match self.get(name) {
                    _ if self.is_oversized(name) => Err(SubstError::TooLarge),
                    Some(Value::String(s)) => Ok(std::borrow::Cow::Borrowed(s.as_str())),
                    Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(v.to_string().into()),
                    Some(_) => Err(SubstError::NotScalar(name.to_string())),
                    None => Err(SubstError::Undefined(name.to_string())),
                };
                match text {
                    // Spent before copying: a spent budget costs nothing more.
                    Ok(text) if !self.spend_on(|| text.len()) => {
                        errors.push(SubstError::TooLarge);
                        break;
                    }
                    Ok(text) => out.push_str(&text),
                    Err(e) => errors.push(e),
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }

    /// Takes `bytes()` from the load's substitution budget; false when it is spent. Once it
    /// is, nothing more is measured, so further references cost nothing.
    fn spend_on(&self, bytes: impl FnOnce() -> usize) -> bool {
        if self.inserted.load(Ordering::Relaxed) > self.limit {
            return false;
        }
        let bytes = bytes();
        let before = self.inserted.fetch_add(bytes, Ordering::Relaxed);
        before.saturating_add(bytes) <= self.limit
    }

    /// Every top-level name, for "did you mean" hints.
    pub fn names(&self) -> BTreeSet<String> {
        self.root.keys().cloned().collect()
    }
}

fn merge(into: &mut serde_json::Map<String, Value>, from: serde_json::Map<String, Value>) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(Value::Object(a)), Value::Object(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

/// About what a value takes as text: its scalars and keys, one byte per node more.
fn size_of(value: &Value) -> usize {
    match value {
        Value::String(s) => s.len() + 1,
        Value::Array(items) => items.iter().map(size_of).sum::<usize>() + 1,
        Value::Object(map) => map.iter().map(|(k, v)| k.len() + size_of(v)).sum::<usize>() + 1,
        _ => 8,
    }
}

fn whole_reference(s: &str) -> Option<&str> {
    let inner = s.strip_prefix("${")?.strip_suffix('}')?;
    (!inner.contains(['$', '{', '}'])).then(|| inner.trim())
}

/// Replaces the run-time values (`${account}`) in text.
pub fn fill_runtime(text: &str, account: &str) -> String {
    text.replace("${account}", account)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn values() -> Values {
        Values::new(
            Some(
                json!({"project": "durable-code", "retentionDays": 30, "images": {"grafana": "grafana/grafana:11"}}),
            ),
            json!({"retentionDays": 7, "enabled": true, "bucket": "${project}-${env}-obs-${account}"}),
            "dev",
        )
    }

    #[test]
    fn whole_scalars_keep_the_value_type_and_env_overrides_defaults() {
        let mut v =
            json!({"days": "${retentionDays}", "on": "${enabled}", "img": "${images.grafana}"});
        values().substitute(&mut v, &mut |p, e| panic!("{p}: {e:?}"));
        assert_eq!(
            v,
            json!({"days": 7, "on": true, "img": "grafana/grafana:11"})
        );
    }

    #[test]
    fn text_is_interpolated_runtime_names_kept_and_escapes_honoured() {
        let vals = values();
        assert_eq!(
            vals.interpolate("${project}-${env}-x").ok(),
            Some("durable-code-dev-x".to_string())
        );
        assert_eq!(
            vals.get("bucket"),
            Some(&json!("durable-code-dev-obs-${account}"))
        );
        assert_eq!(
            vals.interpolate("$${HOME}").ok(),
            Some("${HOME}".to_string())
        );
    }

    #[test]
    fn values_repeating_values_stop_at_the_substitution_budget() {
        // Each level doubles ten times: 10^8 copies of "lol" if nothing stopped it.
        let mut layers = serde_json::Map::new();
        layers.insert("v0".to_string(), json!("lol"));
        for level in 1..=8 {
            let refs = format!("${{v{}}}", level - 1).repeat(10);
            layers.insert(format!("v{level}"), json!(refs));
        }
        layers.insert("small".to_string(), json!("${v0}-ok"));
        layers.insert("zzz".to_string(), json!("${v0}-after"));
        let vals = Values::new(None, Value::Object(layers), "dev");
        let oversized: Vec<&str> = vals.oversized().collect();
        assert!(oversized.contains(&"v8"), "{oversized:?}");
        assert!(!oversized.contains(&"small"), "{oversized:?}");
        assert!(!oversized.contains(&"zzz"), "{oversized:?}");
        let mut v = json!({"spec": {"x": "${v8}", "y": "${small}"}});
        let mut seen = Vec::new();
        vals.substitute(&mut v, &mut |p, e| seen.push((p.to_string(), e)));
        assert_eq!(seen, vec![("spec.x".to_string(), SubstError::TooLarge)]);
        assert_eq!(v["spec"]["y"], json!("lol-ok"));
    }

    #[test]
    fn undefined_values_are_reported_with_their_path() {
        let mut v = json!({"spec": {"x": ["${nope}"]}});
        let mut seen = Vec::new();
        values().substitute(&mut v, &mut |p, e| seen.push((p.to_string(), e)));
        assert_eq!(
            seen,
            vec![(
                "spec.x[0]".to_string(),
                SubstError::Undefined("nope".to_string())
            )]
        );
    }
}
