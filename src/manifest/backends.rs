//! Where the backends (Mimir, Loki, Tempo, Pyroscope) keep their data in the stack's bucket,
//! read from the configs the manifests ship to them: for each, the bucket and the keys it
//! writes. `iam-policy --for host` grants exactly these (the backends reach S3 through the
//! instance role), and validation refuses a layout that would reach the keys stackwarden
//! keeps for itself or another backend's. Pure: parsed YAML in, a layout or a located error
//! out; it reads no file and asks no service.
//!
//! Each backend's rules are its pinned version's, with the reference they come from beside
//! them: what a config leaves unset is what the backend does by default, so an absent prefix
//! is either a layout at the bucket's root (Loki, single-tenant) or an error.

use super::repository::normalize;
use crate::manifest::yaml::{self, Document};
use crate::model::{ConfigFileSpec, Desired, Resource, SourceLocation};
use serde_json::Value;
use std::fmt;
use std::path::Path;

/// A backend that keeps its data in object storage. Its Container carries its name (the
/// naming contract) and reads the config its `-config.file=` argument names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Backend {
    /// Metrics: TSDB blocks.
    Mimir,
    /// Logs: chunks and the TSDB index.
    Loki,
    /// Traces: blocks.
    Tempo,
    /// Profiles: blocks.
    Pyroscope,
}

impl Backend {
    /// Every backend, in the order policies and messages list them.
    pub const ALL: [Backend; 4] = [
        Backend::Mimir,
        Backend::Loki,
        Backend::Tempo,
        Backend::Pyroscope,
    ];

    /// The service's name, which is also its Container's.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Mimir => "mimir",
            Backend::Loki => "loki",
            Backend::Tempo => "tempo",
            Backend::Pyroscope => "pyroscope",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Mimir => "Mimir",
            Backend::Loki => "Loki",
            Backend::Tempo => "Tempo",
            Backend::Pyroscope => "Pyroscope",
        })
    }
}

/// Keys a backend reads, writes and deletes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Keys {
    /// Every key under a prefix; it always ends with `/`, so `tempo/` never covers `tempox`.
    Prefix(String),
    /// One key (Loki's cluster seed at the bucket's root).
    Object(String),
}

impl Keys {
    /// A prefix as the backend's option gives it (`mimir`, `loki/`), with its one trailing
    /// delimiter.
    fn prefix(given: &str) -> Keys {
        Keys::Prefix(format!("{}/", given.trim_matches('/')))
    }

    /// The key or prefix itself.
    pub fn as_str(&self) -> &str {
        match self {
            Keys::Prefix(p) | Keys::Object(p) => p,
        }
    }

    /// True when some key is in both.
    pub fn overlaps(&self, other: &Keys) -> bool {
        match (self, other) {
            (Keys::Prefix(a), Keys::Prefix(b)) => {
                a.starts_with(b.as_str()) || b.starts_with(a.as_str())
            }
            (Keys::Prefix(p), Keys::Object(k)) | (Keys::Object(k), Keys::Prefix(p)) => {
                k.starts_with(p.as_str())
            }
            (Keys::Object(a), Keys::Object(b)) => a == b,
        }
    }
}

impl fmt::Display for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Keys::Prefix(p) => write!(f, "{p}*"),
            Keys::Object(k) => f.write_str(k),
        }
    }
}

/// One set of keys in one bucket, and the config line that puts them there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Area {
    /// The bucket, as the config names it (`${account}` filled in once the account is known).
    pub bucket: String,
    /// The keys.
    pub keys: Keys,
    /// The config's field that decides the keys (`blocks_storage.storage_prefix`).
    pub path: String,
    /// Where that field is (or would be).
    pub at: SourceLocation,
}

/// What one backend keeps in object storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The backend.
    pub backend: Backend,
    /// Its keys, bucket by bucket; empty when it keeps nothing in S3.
    pub areas: Vec<Area>,
}

/// A backend's config as it reaches the host: parsed, with where it comes from.
#[derive(Debug, Clone, Copy)]
pub struct Config<'a> {
    /// The backend it configures.
    pub backend: Backend,
    /// `ConfigFile/<name>` that delivers it.
    pub resource: &'a str,
    /// The repository file it is templated from (for locations).
    pub file: &'a Path,
    /// The parsed content.
    pub doc: &'a Document,
}

/// Why a layout cannot be derived, or may not be granted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The content does not parse.
    #[error("the config is not YAML: {0}")]
    NotYaml(String),
    /// A field the layout depends on is not set.
    #[error("is not set, so {consequence}")]
    Missing {
        /// What the backend would do without it.
        consequence: &'static str,
    },
    /// A field holds a mapping or a list where a name belongs.
    #[error("must be a string")]
    NotText,
    /// The storage is named in a form this module does not read.
    #[error("{0}")]
    Unsupported(&'static str),
    /// A prefix the backend (or IAM) cannot take as it is.
    #[error("{prefix:?} {why}")]
    BadPrefix {
        /// The prefix given.
        prefix: String,
        /// Why it is refused.
        why: &'static str,
    },
    /// Multi-tenant Loki at the bucket's root writes under tenant names nobody can list.
    #[error(
        "Loki writes each tenant's chunks under <tenant>/ at the bucket's root, and with \
         auth_enabled (the default) the tenants are not known"
    )]
    UnknownTenants,
    /// A bucket that is not the stack's.
    #[error("{bucket} is not a Bucket the manifests declare ({declared})")]
    OtherBucket {
        /// The bucket the config names.
        bucket: String,
        /// The stack's buckets.
        declared: String,
    },
    /// Keys under stackwarden's own prefix.
    #[error(
        "{keys} reaches {reserved}, where only stackwarden writes (the lease, signed delivery, \
         the status snapshots): the instance role would let the backend, and every container \
         reaching IMDS, publish to the host"
    )]
    Reserved {
        /// The backend's keys.
        keys: String,
        /// stackwarden's prefix.
        reserved: String,
    },
    /// Keys another backend writes too.
    #[error(
        "{keys} overlaps {other}'s {theirs}: each would read, overwrite and delete the other's data"
    )]
    Shared {
        /// This backend's keys.
        keys: String,
        /// The other backend.
        other: Backend,
        /// Its keys.
        theirs: String,
    },
}

/// A layout problem, located in the backend's config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {resource} ({backend}) {path}: {problem}")]
pub struct LayoutError {
    /// The backend.
    pub backend: Backend,
    /// `ConfigFile/<name>`.
    pub resource: String,
    /// The config's field path (`storage.trace.s3.prefix`).
    pub path: String,
    /// Where it is, or where it belongs (its nearest declared parent).
    pub at: SourceLocation,
    /// What is wrong (boxed: errors travel in `Result`s and stay small).
    pub problem: Box<Problem>,
}

impl LayoutError {
    /// What to do about it.
    pub fn fix(&self) -> String {
        let path = &self.path;
        match self.problem.as_ref() {
            Problem::NotYaml(_) => "correct the YAML: the backend would not start either".into(),
            Problem::Missing { .. } if path.ends_with("bucketnames") || path.contains("bucket") => {
                format!("set {path} to the stack's bucket (`${{bucketName}}`)")
            }
            Problem::Missing { .. } if self.backend == Backend::Pyroscope => format!(
                "set {path} to a prefix of its own, such as `pyroscope` (Pyroscope's key is \
                 storage_prefix, not prefix)"
            ),
            Problem::Missing { .. } => format!(
                "set {path} to a prefix of its own, such as `{}`",
                self.backend.name()
            ),
            Problem::NotText => format!("give {path} a plain name"),
            Problem::Unsupported(_) => format!("name the bucket with {path}"),
            Problem::BadPrefix { .. } => format!(
                "set {path} to letters and digits, such as `{}`",
                self.backend.name()
            ),
            Problem::UnknownTenants => {
                "set storage_config.object_prefix (such as `loki/`) so that every tenant's data \
                 stays under it, or auth_enabled: false for the single tenant `fake`"
                    .into()
            }
            Problem::OtherBucket { .. } => {
                format!("set {path} to the stack's bucket (`${{bucketName}}`)")
            }
            Problem::Reserved { .. } | Problem::Shared { .. } => format!(
                "give {path} a prefix of the backend's own, such as `{}`",
                self.backend.name()
            ),
        }
    }

    /// The problem as a validation diagnostic.
    pub fn diagnostic(&self) -> crate::manifest::Diagnostic {
        crate::manifest::Diagnostic {
            location: self.at.clone(),
            resource: Some(self.resource.clone()),
            path: Some(self.path.clone()),
            message: format!("{}: {}", self.backend, self.problem),
            fix: self.fix(),
            rule: None,
        }
    }
}

/// Every layout problem of a desired state, one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutErrors(pub Vec<LayoutError>);

impl std::error::Error for LayoutErrors {}

impl fmt::Display for LayoutErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// The backend's layout from its config. `Ok` with no areas when it keeps nothing in S3.
pub fn layout(config: Config<'_>) -> Result<Layout, LayoutError> {
    let areas = match config.backend {
        Backend::Mimir => mimir(&config)?,
        Backend::Loki => loki(&config)?,
        Backend::Tempo => tempo(&config)?,
        Backend::Pyroscope => pyroscope(&config)?,
    };
    Ok(Layout {
        backend: config.backend,
        areas,
    })
}

/// The value at a dotted field path (`storage.trace.s3`); list items as `name[0]`.
fn at<'v>(root: &'v Value, path: &str) -> Option<&'v Value> {
    let mut v = root;
    for part in path.split('.') {
        let (key, index) = match part.split_once('[') {
            Some((k, rest)) => (k, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        v = v.get(key)?;
        if let Some(i) = index {
            v = v.get(i)?;
        }
    }
    Some(v)
}

impl Config<'_> {
    fn error(&self, path: &str, problem: Problem) -> LayoutError {
        LayoutError {
            backend: self.backend,
            resource: self.resource.to_string(),
            path: path.to_string(),
            at: self.locate(path),
            problem: Box::new(problem),
        }
    }

    fn locate(&self, path: &str) -> SourceLocation {
        let pos = self.doc.position_of(path);
        SourceLocation {
            file: self.file.to_path_buf(),
            line: pos.line,
            column: pos.column,
        }
    }

    /// A name-like field: a string (or a number, which YAML reads `123` as); `None` when
    /// absent, null or empty.
    fn text(&self, path: &str) -> Result<Option<String>, LayoutError> {
        match at(&self.doc.value, path) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(self.error(path, Problem::NotText)),
        }
    }

    /// The first of `paths` that is set, with its path.
    fn first(&self, paths: &[&str]) -> Result<Option<(String, String)>, LayoutError> {
        for p in paths {
            if let Some(v) = self.text(p)? {
                return Ok(Some((v, p.to_string())));
            }
        }
        Ok(None)
    }

    /// The first of `paths` that is set; an error at the first when none is.
    fn required(
        &self,
        paths: &[&str],
        consequence: &'static str,
    ) -> Result<(String, String), LayoutError> {
        self.first(paths)?
            .ok_or_else(|| self.error(paths[0], Problem::Missing { consequence }))
    }

    fn area(&self, bucket: &str, keys: Keys, path: &str) -> Area {
        Area {
            bucket: bucket.to_string(),
            keys,
            path: path.to_string(),
            at: self.locate(path),
        }
    }
}

/// A prefix IAM can scope to: no wildcard (`*`, `?`) and no policy variable (`${…}`), which
/// a resource ARN would read as such; no `..`, which S3 keeps literally but people do not.
fn check_iam_safe(c: &Config<'_>, path: &str, prefix: &str) -> Result<(), LayoutError> {
    let why = if prefix.contains(['*', '?']) {
        Some("holds an IAM wildcard, so a grant on it would reach other keys")
    } else if prefix.contains('$') {
        Some("holds `$`, which IAM reads as a policy variable in a resource")
    } else if prefix.split('/').any(|s| s == "..") {
        Some("holds `..`, which S3 keeps as a literal key part")
    } else {
        None
    };
    match why {
        Some(why) => Err(c.error(
            path,
            Problem::BadPrefix {
                prefix: prefix.to_string(),
                why,
            },
        )),
        None => Ok(()),
    }
}

/// Mimir and Pyroscope take a storage prefix of digits and English letters only (their
/// `validPrefixCharactersRegex`, `^[\da-zA-Z]+$`) and refuse to start on anything else.
fn check_alphanumeric(c: &Config<'_>, path: &str, prefix: &str) -> Result<(), LayoutError> {
    if prefix.chars().all(|ch| ch.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(c.error(
            path,
            Problem::BadPrefix {
                prefix: prefix.to_string(),
                why: "may hold only digits and English letters (the backend refuses to start)",
            },
        ))
    }
}

/// Mimir 2.14. Each storage (`blocks_storage`, `ruler_storage`, `alertmanager_storage`) takes
/// what it leaves unset from `common.storage`; the backend defaults to `filesystem`
/// (reference: https://grafana.com/docs/mimir/v2.14.x/configure/configuration-parameters/,
/// `common`, `blocks_storage`, `ruler_storage`, `alertmanager_storage`). Blocks, the bucket
/// index and the cluster seed (`__mimir_cluster/`) all go under the blocks storage's
/// `storage_prefix` (pkg/storage/bucket/client.go wraps the whole client in it). The ruler
/// (part of `-target=all`) keeps its rule groups under `rules/` of its own storage, and the
/// Alertmanager (not part of `all`: https://grafana.com/docs/mimir/v2.14.x/references/architecture/components/alertmanager/)
/// under `alerts/` and `alertmanager/`, each below that storage's prefix when one is set.
fn mimir(c: &Config<'_>) -> Result<Vec<Area>, LayoutError> {
    const STORAGES: [(&str, &[&str]); 3] = [
        ("blocks_storage", &[]),
        ("ruler_storage", &["rules"]),
        ("alertmanager_storage", &["alerts", "alertmanager"]),
    ];
    let target_has_alertmanager = match at(&c.doc.value, "target") {
        Some(Value::String(t)) => t.split(',').any(|t| t.trim() == "alertmanager"),
        _ => false,
    };
    let mut out = Vec::new();
    for (storage, root_keys) in STORAGES {
        if storage == "alertmanager_storage" && !target_has_alertmanager {
            continue;
        }
        let own = |field: &str| format!("{storage}.{field}");
        let backend = c
            .first(&[&own("backend"), "common.storage.backend"])?
            .map_or_else(|| "filesystem".to_string(), |(b, _)| b);
        if backend != "s3" {
            continue;
        }
        let (bucket, _) = c.required(
            &[&own("s3.bucket_name"), "common.storage.s3.bucket_name"],
            "Mimir has no bucket to keep its data in and does not start",
        )?;
        let prefix_field = own("storage_prefix");
        match c.first(&[&prefix_field, "common.storage.storage_prefix"])? {
            Some((prefix, path)) => {
                check_alphanumeric(c, &path, &prefix)?;
                out.push(c.area(&bucket, Keys::prefix(&prefix), &path));
            }
            None if root_keys.is_empty() => {
                return Err(c.error(
                    &prefix_field,
                    Problem::Missing {
                        consequence: "Mimir writes every tenant's blocks at the bucket's root, \
                                      beside everything else kept there",
                    },
                ));
            }
            None => {
                for k in root_keys {
                    out.push(c.area(&bucket, Keys::prefix(k), &prefix_field));
                }
            }
        }
    }
    Ok(out)
}

/// Loki 3.3. Its S3 client comes from `storage_config.aws` or, when that is unset,
/// `common.storage.s3`, which also puts the ruler's rule store on S3 (pkg/loki/config_wrapper.go,
/// `applyStorageConfig`). `storage_config.object_prefix` ("Experimental. Sets a constant prefix
/// for all keys inserted into object storage. Example: loki/":
/// https://grafana.com/docs/loki/v3.3.x/configure/#storage_config) wraps every object client
/// built from the storage config — chunks, the TSDB index, the compactor's delete requests,
/// the cluster seed (pkg/storage/factory.go, `NewObjectClient`) — but not the ruler's, which is
/// built apart and keeps rule groups under `rules/` at the bucket's root
/// (pkg/ruler/base/storage.go, `NewLegacyRuleStore`). Without a prefix, Loki writes at the
/// root: each tenant's chunks under `<tenant>/` (`fake` when auth_enabled is false:
/// https://grafana.com/docs/loki/v3.3.x/operations/multi-tenancy/), the index under each
/// period's `index.path_prefix` (default `index/`), delete requests under
/// `compactor.delete_request_store_key_prefix` (default `index/`), and `loki_cluster_seed.json`.
fn loki(c: &Config<'_>) -> Result<Vec<Area>, LayoutError> {
    let aws = c.first(&["storage_config.aws.bucketnames"])?;
    let (buckets, path, ruler_on_s3) = match aws {
        Some((b, p)) => (b, p, false),
        None => {
            if c.text("storage_config.aws.s3")?.is_some() {
                return Err(c.error(
                    "storage_config.aws.bucketnames",
                    Problem::Unsupported(
                        "the bucket is named by an s3:// URL, which is not read here",
                    ),
                ));
            }
            match c.first(&["common.storage.s3.bucketnames"])? {
                Some((b, p)) => (b, p, true),
                None => {
                    // No S3 client at all: the periods keep their data elsewhere.
                    if uses_s3(c) {
                        return Err(c.error(
                            "storage_config.aws.bucketnames",
                            Problem::Missing {
                                consequence: "Loki has no bucket for the periods whose \
                                              object_store is s3 and does not start",
                            },
                        ));
                    }
                    return Ok(Vec::new());
                }
            }
        }
    };
    let buckets: Vec<&str> = buckets
        .split(',')
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .collect();
    let mut keys: Vec<(Keys, String)> = Vec::new();
    if uses_s3(c) {
        match c.text("storage_config.object_prefix")? {
            Some(prefix) if !prefix.trim_matches('/').is_empty() => {
                check_iam_safe(c, "storage_config.object_prefix", &prefix)?;
                keys.push((Keys::prefix(&prefix), "storage_config.object_prefix".into()));
            }
            _ => {
                if at(&c.doc.value, "auth_enabled") != Some(&Value::Bool(false)) {
                    return Err(c.error("storage_config.object_prefix", Problem::UnknownTenants));
                }
                keys.push((Keys::prefix("fake"), "auth_enabled".into()));
                let periods = match at(&c.doc.value, "schema_config.configs") {
                    Some(Value::Array(list)) => list.len(),
                    _ => 0,
                };
                for i in 0..periods {
                    let p = format!("schema_config.configs[{i}].index.path_prefix");
                    let prefix = c.text(&p)?.unwrap_or_else(|| "index/".to_string());
                    check_iam_safe(c, &p, &prefix)?;
                    keys.push((Keys::prefix(&prefix), p));
                }
                let p = "compactor.delete_request_store_key_prefix";
                let prefix = c.text(p)?.unwrap_or_else(|| "index/".to_string());
                check_iam_safe(c, p, &prefix)?;
                keys.push((Keys::prefix(&prefix), p.into()));
                keys.push((
                    Keys::Object("loki_cluster_seed.json".into()),
                    "storage_config".into(),
                ));
            }
        }
    }
    if ruler_on_s3 {
        keys.push((Keys::prefix("rules"), path.clone()));
    }
    let mut out = Vec::new();
    for b in buckets {
        for (k, p) in &keys {
            // The index and delete requests share `index/` by default: one area for both.
            if !out.iter().any(|a: &Area| a.bucket == b && &a.keys == k) {
                out.push(c.area(b, k.clone(), p));
            }
        }
    }
    Ok(out)
}

/// Whether a schema period keeps its chunks and index in S3 (`s3` or its older name `aws`).
fn uses_s3(c: &Config<'_>) -> bool {
    match at(&c.doc.value, "schema_config.configs") {
        Some(Value::Array(list)) => list.iter().any(|p| {
            matches!(
                p.get("object_store").and_then(Value::as_str),
                Some("s3" | "aws")
            )
        }),
        _ => false,
    }
}

/// Tempo 2.6. `storage.trace.backend` names the store; on S3, every object (blocks, the
/// tenant index, the cluster seed) goes under `storage.trace.s3.prefix` ("Tempo has this
/// additional option to support a custom prefix to nest all the objects within a shared
/// bucket": https://grafana.com/docs/tempo/v2.6.x/configuration/#storage). Its startup check
/// lists the bare prefix (`tempo`, no delimiter), which the bucket-wide `s3:ListBucket` of the
/// host policy covers.
fn tempo(c: &Config<'_>) -> Result<Vec<Area>, LayoutError> {
    if c.text("storage.trace.backend")?.as_deref() != Some("s3") {
        return Ok(Vec::new());
    }
    let (bucket, _) = c.required(
        &["storage.trace.s3.bucket"],
        "Tempo has no bucket to keep its traces in and does not start",
    )?;
    let (prefix, path) = c.required(
        &["storage.trace.s3.prefix"],
        "Tempo writes every tenant's blocks at the bucket's root, beside everything else kept there",
    )?;
    check_iam_safe(c, &path, &prefix)?;
    if prefix.trim_matches('/').is_empty() {
        return Err(c.error(
            &path,
            Problem::Missing {
                consequence: "Tempo writes at the bucket's root",
            },
        ));
    }
    Ok(vec![c.area(&bucket, Keys::prefix(&prefix), &path)])
}

/// Pyroscope 1.10. `storage` is one object-store client whose `storage_prefix` wraps every
/// object it writes ("Prefix for all objects stored in the backend storage. For simplicity, it
/// may only contain digits and English alphabet letters":
/// https://grafana.com/docs/pyroscope/v1.10.x/configure-server/reference-configuration-parameters/#storage).
/// The backend defaults to `filesystem`. Pyroscope reads its config strictly, so a `prefix`
/// key there would stop it from starting.
fn pyroscope(c: &Config<'_>) -> Result<Vec<Area>, LayoutError> {
    if c.text("storage.backend")?.as_deref() != Some("s3") {
        return Ok(Vec::new());
    }
    let (bucket, _) = c.required(
        &["storage.s3.bucket_name"],
        "Pyroscope has no bucket to keep its profiles in and does not start",
    )?;
    let (prefix, path) = c.required(
        &["storage.storage_prefix"],
        "Pyroscope writes every tenant's blocks at the bucket's root, beside everything else kept there",
    )?;
    check_alphanumeric(c, &path, &prefix)?;
    Ok(vec![c.area(&bucket, Keys::prefix(&prefix), &path)])
}

/// The ConfigFile a backend's Container reads: the one mounted where its `-config.file=`
/// argument points. `None` when there is no such Container, argument or mount (the backend
/// then runs on its defaults, which keep nothing in S3), or the file has no content.
pub fn config_of(desired: &Desired, backend: Backend) -> Option<(&Resource, &ConfigFileSpec)> {
    let (_, container) = desired
        .containers()
        .find(|(r, _)| r.id.name == backend.name())?;
    let target = container.command.iter().find_map(|a| {
        a.strip_prefix("-config.file=")
            .or_else(|| a.strip_prefix("--config.file="))
    })?;
    let name = container
        .mounts
        .iter()
        .find(|m| m.target == target)?
        .config_file
        .as_deref()?;
    desired
        .config_files()
        .find(|(r, f)| r.id.name == name && f.content.is_some())
}

/// Every backend's layout from the desired state, checked against the stack: each bucket must
/// be one the manifests declare, no key may reach `reserved` (stackwarden's own prefix), and no
/// two backends may share a key. Every problem at once.
pub fn layouts(desired: &Desired, reserved: &str) -> Result<Vec<Layout>, LayoutErrors> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for backend in Backend::ALL {
        let Some((r, spec)) = config_of(desired, backend) else {
            continue;
        };
        let Some(text) = spec.content.as_deref() else {
            continue;
        };
        let file = match &spec.source {
            Some(src) => normalize(&r.source.file.parent().unwrap_or(Path::new("")).join(src)),
            None => r.source.file.clone(),
        };
        let resource = r.id.to_string();
        let doc = match yaml::parse(text) {
            Ok(mut docs) if !docs.is_empty() => docs.swap_remove(0),
            Ok(_) => continue,
            Err(e) => {
                errors.push(LayoutError {
                    backend,
                    resource,
                    path: e.path.clone().unwrap_or_default(),
                    at: SourceLocation {
                        file,
                        line: e.pos.line,
                        column: e.pos.column,
                    },
                    problem: Box::new(Problem::NotYaml(e.message)),
                });
                continue;
            }
        };
        let config = Config {
            backend,
            resource: &resource,
            file: &file,
            doc: &doc,
        };
        match layout(config) {
            Ok(l) => out.push((resource, l)),
            Err(e) => errors.push(e),
        }
    }
    errors.extend(check(desired, &out, reserved));
    if errors.is_empty() {
        Ok(out.into_iter().map(|(_, l)| l).collect())
    } else {
        Err(LayoutErrors(errors))
    }
}

/// The stack-wide rules over derived layouts (see [`layouts`]).
fn check(desired: &Desired, layouts: &[(String, Layout)], reserved: &str) -> Vec<LayoutError> {
    let declared: Vec<&str> = desired.buckets().map(|(_, b)| b.name.as_str()).collect();
    let reserved_keys = Keys::Prefix(reserved.to_string());
    let mut errors = Vec::new();
    let error = |resource: &str, backend: Backend, a: &Area, problem: Problem| LayoutError {
        backend,
        resource: resource.to_string(),
        path: a.path.clone(),
        at: a.at.clone(),
        problem: Box::new(problem),
    };
    for (i, (resource, l)) in layouts.iter().enumerate() {
        for a in &l.areas {
            if !declared.contains(&a.bucket.as_str()) {
                errors.push(error(
                    resource,
                    l.backend,
                    a,
                    Problem::OtherBucket {
                        bucket: a.bucket.clone(),
                        declared: if declared.is_empty() {
                            "none".to_string()
                        } else {
                            declared.join(", ")
                        },
                    },
                ));
            }
            if a.keys.overlaps(&reserved_keys) {
                errors.push(error(
                    resource,
                    l.backend,
                    a,
                    Problem::Reserved {
                        keys: a.keys.to_string(),
                        reserved: reserved_keys.to_string(),
                    },
                ));
            }
            for (_, other) in layouts.iter().skip(i + 1) {
                for b in &other.areas {
                    if a.bucket == b.bucket && a.keys.overlaps(&b.keys) {
                        errors.push(error(
                            resource,
                            l.backend,
                            a,
                            Problem::Shared {
                                keys: a.keys.to_string(),
                                other: other.backend,
                                theirs: b.keys.to_string(),
                            },
                        ));
                    }
                }
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests;
