//! Types shared by every kind: identity, tags, memory sizes, modes, source locations.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// AWS tag key marking what stackwarden manages.
pub const MANAGED_BY_TAG: &str = "ManagedBy";
/// Value of [`MANAGED_BY_TAG`].
pub const MANAGED_BY_VALUE: &str = "stackwarden";
/// AWS tag key naming the owning stack.
pub const STACK_TAG: &str = "stackwarden:stack";
/// AWS tag key naming the owning stack's environment: a stack's identity is its name and its
/// environment, since every environment deploys the same Stack name (staging and prod may
/// share an account, and their resources must never be taken for each other's).
pub const ENV_TAG: &str = "stackwarden:env";
/// AWS tag key recording the hash of the spec last applied to a resource: a live resource
/// whose recorded hash matches the manifest moved by hand (drift); another hash means the
/// manifest changed. It lives on the resource, so it survives restarts with no state file.
pub const SPEC_HASH_TAG: &str = "stackwarden:spec-hash";
/// Docker label naming the owning stack.
pub const STACK_LABEL: &str = "stackwarden.stack";
/// Docker label naming the owning stack's environment (see [`ENV_TAG`]).
pub const ENV_LABEL: &str = "stackwarden.env";

/// Tags or labels: ordered so that output and hashes are stable.
pub type Tags = BTreeMap<String, String>;

/// A resource's identity: its kind and its manifest name (`Container/loki`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceId {
    /// The kind.
    pub kind: super::Kind,
    /// `metadata.name`.
    pub name: String,
}

impl ResourceId {
    /// Builds an id.
    pub fn new(kind: super::Kind, name: impl Into<String>) -> Self {
        ResourceId {
            kind,
            name: name.into(),
        }
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

impl Serialize for ResourceId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Where something was declared: file, 1-based line and column.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceLocation {
    /// The manifest file, as given on the command line.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

impl fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// `metadata` of a manifest document.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// The resource's name in the manifests; references use it.
    pub name: String,
    /// `observe` to report drift on this resource without ever writing to it.
    #[serde(default)]
    pub mode: Option<Mode>,
}

/// How far stackwarden goes about drift: a ladder from watching to repairing.
/// Ordered from least to most acting, so the stricter of two modes is their minimum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Report drift in status and metrics; never write, never alert.
    Observe,
    /// Alert on drift; never write.
    Warn,
    /// Repair drift and alert.
    #[default]
    Enforce,
}

impl Mode {
    /// The word used in manifests, plans and status.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Observe => "observe",
            Mode::Warn => "warn",
            Mode::Enforce => "enforce",
        }
    }

    /// True when drift is repaired.
    pub fn repairs(self) -> bool {
        self == Mode::Enforce
    }

    /// True when drift is alerted on.
    pub fn alerts(self) -> bool {
        self != Mode::Observe
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a resource should exist.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ensure {
    /// It should exist as declared.
    #[default]
    Present,
    /// It should not exist (a runtime resource of a disabled stack).
    Absent,
}

/// A memory size in Docker's notation (`768M` is 768 MiB), held in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MemSize(pub u64);

impl MemSize {
    /// Parses `768M`, `3G`, `512k`, `1024b` or a plain byte count; units are binary as in Docker.
    pub fn parse(s: &str) -> Result<MemSize, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("`{s}` is not a memory size: write a size such as 768M or 3G"))?;
        let mult: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "ki" => 1 << 10,
            "m" | "mb" | "mi" => 1 << 20,
            "g" | "gb" | "gi" => 1 << 30,
            _ => {
                return Err(format!(
                    "`{s}` has an unknown unit `{unit}`: use b, k, M or G"
                ));
            }
        };
        n.checked_mul(mult)
            .map(MemSize)
            .ok_or_else(|| format!("`{s}` is too large"))
    }

    /// The size in MiB, rounded down.
    pub fn mib(self) -> u64 {
        self.0 >> 20
    }
}

impl fmt::Display for MemSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b != 0 && b.is_multiple_of(1 << 30) {
            write!(f, "{}G", b >> 30)
        } else if b != 0 && b.is_multiple_of(1 << 20) {
            write!(f, "{}M", b >> 20)
        } else if b != 0 && b.is_multiple_of(1 << 10) {
            write!(f, "{}k", b >> 10)
        } else {
            write!(f, "{b}b")
        }
    }
}

impl<'de> Deserialize<'de> for MemSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(b) => Ok(MemSize(b)),
            Raw::Text(s) => MemSize::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for MemSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Serde helpers for durations written as `30s`, `5m` (humantime).
pub mod duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Deserializes `30s` into a [`Duration`].
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{s}` is not a duration ({e}): write e.g. 30s or 5m"
            ))
        })
    }

    /// Serializes a [`Duration`] as `30s`.
    pub fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_follow_docker_binary_units() {
        assert_eq!(MemSize::parse("768M"), Ok(MemSize(768 << 20)));
        assert_eq!(MemSize::parse("3G"), Ok(MemSize(3 << 30)));
        assert_eq!(MemSize::parse("64m"), Ok(MemSize(64 << 20)));
        assert_eq!(MemSize::parse("1024"), Ok(MemSize(1024)));
        assert!(MemSize::parse("12X").is_err());
        assert!(MemSize::parse("M").is_err());
        assert_eq!(MemSize(768 << 20).to_string(), "768M");
        assert_eq!(MemSize(3 << 30).to_string(), "3G");
    }
}
