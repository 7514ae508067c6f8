//! Manifests on disk → a validated [`Desired`]. Loading reports every problem at once, each
//! located (`file:line:col: Kind/name field.path: message`, then `fix:`); nothing partial is
//! ever returned, so a broken manifest can never replace the one in force.

/// Where the backends keep their data in the bucket, from the configs the manifests ship.
pub mod backends;
mod diagnostic;
pub mod files;
pub mod repository;
mod schema;
pub mod secret;
mod validate;
pub mod values;
pub mod yaml;

pub use diagnostic::{Diagnostic, Diagnostics};
pub use schema::API_VERSION;
pub use validate::{RULES_PER_GROUP, warnings};

use crate::model::{Desired, Ensure, Kind, Resource, SourceLocation, Spec};
use schema::Reporter;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use values::Values;

/// The folder under the manifests directory holding per-environment values.
pub const ENVIRONMENTS_DIR: &str = "environments";
/// Problems after which checking stops: a person reads the first screenful, and a hostile
/// file with thousands of broken documents must not cost thousands of schema passes.
pub const MAX_PROBLEMS: usize = 100;

/// Why manifests could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The directory or a file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// What.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No environment was chosen, or an unknown one.
    #[error("{message}")]
    Environment {
        /// What is wrong and which environments exist.
        message: String,
    },
    /// The manifests have problems; all are listed.
    #[error("{0}")]
    Invalid(Diagnostics),
}

/// A validated load.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The desired state.
    pub desired: Desired,
    /// How many manifest files were read.
    pub files: usize,
}

/// Loads and validates every `*.yaml`/`*.yml` under `dir` (except `environments/`), with
/// the values of `env`; files are confined to the repository found from `dir`
/// ([`repository::Repository::discover`]).
pub fn load(dir: &Path, env: Option<&str>) -> Result<Loaded, LoadError> {
    load_in(dir, env, None)
}

/// [`load`] with the repository root given explicitly (`--root`): every manifest, values
/// and `source:` file must resolve inside it.
pub fn load_in(dir: &Path, env: Option<&str>, root: Option<&Path>) -> Result<Loaded, LoadError> {
    let repo = repository::Repository::discover(dir, root).map_err(|source| LoadError::Read {
        path: root.unwrap_or(dir).to_path_buf(),
        source,
    })?;
    let mut diags = Vec::new();
    // One reader and one budget for the whole load: size, alias expansion and the position
    // index are bounded across files, not only per file.
    let mut reader = files::Reader::default();
    let mut budget = yaml::Budget::default();
    let (values, env_name) = load_values(dir, env, &repo, &mut reader, &mut budget, &mut diags)?;
    let walk = files::manifest_files(dir, ENVIRONMENTS_DIR).map_err(|source| LoadError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    // Files too large, alone or together, are refused from their sizes, before any is read.
    let too_large = walk.size_problems(dir);
    if !too_large.is_empty() {
        diags.extend(too_large);
        return Err(LoadError::Invalid(Diagnostics(diags)));
    }
    diags.extend(walk.problems);
    // A manifest reached through a symlink out of the repository is not read at all: its
    // content would be parsed and quoted in errors.
    let mut files = Vec::with_capacity(walk.files.len());
    for file in walk.files {
        match repo.confine_found(&file) {
            Ok(_) => files.push(file),
            Err(e) => diags.push(escape_diagnostic(&file, &e)),
        }
    }

    // Parse every document, remembering where each resource came from.
    let mut docs: Vec<(PathBuf, yaml::Document)> = Vec::new();
    for file in &files {
        let text = match reader.read(file, files::FileRole::Manifest) {
            Ok(text) => text,
            Err(problem) => {
                diags.push(problem.diagnostic(file));
                if matches!(problem, files::ReadProblem::TotalTooLarge { .. }) {
                    break;
                }
                continue;
            }
        };
        match yaml::parse_within(&text, &mut budget) {
            Ok(parsed) => docs.extend(parsed.into_iter().map(|d| (file.clone(), d))),
            Err(e) if e.load_wide => {
                // The rest would fail the same way, and what was not parsed would only add
                // noise (a missing Stack, dangling references): this is the problem to fix.
                diags.push(syntax_error(file, &e));
                let mut diags = Diagnostics(diags);
                diags.sort();
                return Err(LoadError::Invalid(diags));
            }
            Err(e) => diags.push(syntax_error(file, &e)),
        }
    }
    let mut resources: Vec<(Resource, usize)> = Vec::new();
    for (i, (file, doc)) in docs.iter().enumerate() {
        if doc.value.is_null() {
            continue;
        }
        if diags.len() >= MAX_PROBLEMS {
            diags.push(Diagnostic {
                location: SourceLocation {
                    file: file.clone(),
                    line: doc.start.line,
                    column: doc.start.column,
                },
                resource: None,
                path: None,
                message: format!(
                    "stopped after {MAX_PROBLEMS} problems; the documents from here on were not checked"
                ),
                fix: "correct the problems above and validate again".to_string(),
                rule: None,
            });
            break;
        }
        let mut value = doc.value.clone();
        let mut r = Reporter {
            file,
            doc,
            resource: resource_label(&value),
            out: &mut diags,
        };
        let mut undefined = Vec::new();
        // One problem per failed reference, each holding its field path: a long path over
        // many references (`"${u}${u}…"`) must not make as many copies, so no more are kept
        // than could be shown.
        values.substitute(&mut value, &mut |path, err| {
            if undefined.len() < MAX_PROBLEMS {
                undefined.push((path.to_string(), err))
            }
        });
        for (path, err) in undefined {
            let (message, fix) = subst_message(&err, &env_name);
            r.report(&path, message, fix);
        }
        if let Some(mut resource) = schema::read_resource(value, &mut r) {
            read_sources(&mut resource, file, &values, &repo, &mut reader, &mut r);
            resolve_receiver_files(&mut resource, file);
            resources.push((resource, i));
        }
    }

    let locate = |doc: usize, path: &str| {
        let (file, d) = &docs[doc];
        let pos = d.position_of(path);
        SourceLocation {
            file: file.clone(),
            line: pos.line,
            column: pos.column,
        }
    };
    // Duplicates: the second declaration is the error, pointing at the first.
    let mut first: BTreeMap<(Kind, String), usize> = BTreeMap::new();
    let mut unique = Vec::with_capacity(resources.len());
    for (res, doc) in resources {
        let key = (res.id.kind, res.id.name.clone());
        if let Some(prev) = first.get(&key) {
            diags.push(Diagnostic {
                location: locate(doc, "metadata.name"),
                resource: Some(res.id.to_string()),
                path: Some("metadata.name".to_string()),
                message: format!(
                    "{} is declared twice (first at {})",
                    res.id,
                    locate(*prev, "metadata.name")
                ),
                fix: "rename one of them or remove the duplicate".to_string(),
                rule: None,
            });
        } else {
            first.insert(key, doc);
            unique.push((res, doc));
        }
    }
    let doc_of: BTreeMap<String, usize> =
        unique.iter().map(|(r, d)| (r.id.to_string(), *d)).collect();
    let all: Vec<Resource> = unique.into_iter().map(|(r, _)| r).collect();
    let mut located = Vec::new();
    let mut locate_finding = |resource: &str, path: &str, message: String, fix: String, rule| {
        let location = match doc_of.get(resource) {
            Some(doc) => locate(*doc, path),
            None => SourceLocation::default(),
        };
        located.push(Diagnostic {
            location,
            resource: Some(resource.to_string()),
            path: Some(path.to_string()),
            message,
            fix,
            rule,
        });
    };
    for (id, path, message, fix) in validate::check(&all, Some(&env_name)) {
        locate_finding(&id.to_string(), &path, message, fix, None);
    }

    let stacks: Vec<&Resource> = all.iter().filter(|r| r.id.kind == Kind::Stack).collect();
    let desired = match stacks.as_slice() {
        [stack] => Some(assemble(stack, &all, &env_name)),
        [] => {
            diags.push(Diagnostic {
                location: SourceLocation {
                    file: dir.to_path_buf(),
                    line: 1,
                    column: 1,
                },
                resource: None,
                path: None,
                message: "no Stack is declared".to_string(),
                fix: format!("add a document with `apiVersion: {API_VERSION}` and `kind: Stack`"),
                rule: None,
            });
            None
        }
        [first, second, ..] => {
            diags.push(Diagnostic {
                location: second.source.clone(),
                resource: Some(second.id.to_string()),
                path: None,
                message: format!(
                    "a second Stack is declared (the first is {} at {}); one manifest set describes one stack",
                    first.id, first.source
                ),
                fix: "keep one Stack document".to_string(),
                rule: None,
            });
            None
        }
    };
    if let Some(desired) = &desired {
        let findings = crate::policy::check_desired(desired)
            .into_iter()
            .chain(secret_findings(desired));
        for v in findings {
            locate_finding(&v.resource, &v.path, v.message, v.fix, Some(v.rule));
        }
        // The backends' layouts decide what the host policy grants them: one that cannot be
        // derived, or would reach stackwarden's own keys, is refused here, in the config line.
        if let Err(errors) = backends::layouts(desired, crate::model::STACKWARDEN_KEYS) {
            diags.extend(errors.0.iter().map(backends::LayoutError::diagnostic));
        }
    }
    diags.extend(located);
    let mut diags = Diagnostics(diags);
    diags.sort();
    tracing::debug!(
        dir = %dir.display(),
        environment = %env_name,
        files = files.len(),
        problems = diags.0.len(),
        "manifests loaded"
    );
    match desired {
        Some(desired) if diags.is_empty() => Ok(Loaded {
            desired,
            files: files.len(),
        }),
        _ => Err(LoadError::Invalid(diags)),
    }
}

/// Builds the desired state from a valid resource set.
fn assemble(stack: &Resource, all: &[Resource], env: &str) -> Desired {
    let Spec::Stack(stack_spec) = &stack.spec else {
        unreachable!("assemble is only called with the Stack resource")
    };
    let mut resources: Vec<Resource> = all
        .iter()
        .filter(|r| r.id.kind != Kind::Stack)
        .cloned()
        .map(|mut r| {
            if !stack_spec.enabled && r.id.kind.is_runtime() {
                r.ensure = Ensure::Absent;
            }
            r
        })
        .collect();
    resources.sort_by(|a, b| a.id.cmp(&b.id));
    // A receiver's credential named by Parameter is read where that Parameter's value is.
    let mut stack_spec = stack_spec.clone();
    for rcv in &mut stack_spec.alerts.receivers {
        let named = rcv.auth.iter().flat_map(|a| {
            [
                a.basic
                    .as_ref()
                    .and_then(|b| b.password_from_parameter.clone()),
                a.bearer_token_from_parameter.clone(),
            ]
        });
        let named: Vec<String> = named.flatten().collect();
        for name in named {
            let source = all.iter().find_map(|r| match &r.spec {
                Spec::Parameter(p) if r.id.name == name => Some(p.value_from.clone()),
                _ => None,
            });
            if let Some(source) = source {
                rcv.parameters.insert(name, source);
            }
        }
    }
    Desired {
        stack_name: stack.id.name.clone(),
        stack: stack_spec,
        environment: env.to_string(),
        resources,
    }
}

fn resource_label(value: &serde_json::Value) -> Option<String> {
    let kind = value.get("kind")?.as_str()?;
    let name = value.get("metadata")?.get("name")?.as_str()?;
    Some(format!("{kind}/{name}"))
}

fn subst_message(err: &values::SubstError, env: &str) -> (String, String) {
    let file = format!("manifests/{ENVIRONMENTS_DIR}/{env}.yaml");
    match err {
        values::SubstError::Undefined(name) => (
            format!("`${{{name}}}` is not defined for environment `{env}`"),
            format!(
                "define `{name}` in {file} (or in {ENVIRONMENTS_DIR}/{})",
                values::DEFAULTS_FILE
            ),
        ),
        values::SubstError::Unterminated => (
            "`${` without a closing `}`".to_string(),
            "close the reference, or write `$${` for a literal `${`".to_string(),
        ),
        values::SubstError::TooLarge => (
            format!(
                "substituting values here takes the manifests past {} MiB of inserted text (values that repeat other values grow exponentially)",
                values::MAX_SUBSTITUTED_BYTES >> 20
            ),
            "refer to large values once, and do not build values out of repeated references"
                .to_string(),
        ),
        values::SubstError::NotScalar(name) => (
            format!("`${{{name}}}` is a map or list and cannot be placed inside text"),
            format!(
                "use the whole value alone (`${{{name}}}`), or one of its fields (`${{{name}.x}}`)"
            ),
        ),
    }
}

/// A file refused because it resolves outside the repository, at its first line.
fn escape_diagnostic(file: &Path, e: &repository::Escape) -> Diagnostic {
    Diagnostic::at_file_start(file, e.to_string(), e.fix())
}

/// Makes a receiver's relative file paths (CA bundle, password, token) relative to the
/// manifest's directory, as `source:` is: the daemon reads them later, from whatever
/// directory it runs in. The files are read only by the daemon (they are credentials on the
/// host, not repository content), so they are not confined to the repository.
fn resolve_receiver_files(resource: &mut Resource, manifest: &Path) {
    let Spec::Stack(spec) = &mut resource.spec else {
        return;
    };
    let base = manifest.parent().unwrap_or(Path::new("."));
    let resolve = |p: &mut std::path::PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    for rcv in &mut spec.alerts.receivers {
        if let Some(ca) = rcv.tls.as_mut().and_then(|t| t.ca_file.as_mut()) {
            resolve(ca);
        }
        if let Some(auth) = &mut rcv.auth {
            if let Some(p) = auth.basic.as_mut().and_then(|b| b.password_file.as_mut()) {
                resolve(p);
            }
            if let Some(t) = &mut auth.bearer_token_file {
                resolve(t);
            }
        }
    }
}

/// Reads ConfigFile `source:` files (relative to the manifest, confined to the repository)
/// into `content`.
fn read_sources(
    resource: &mut Resource,
    manifest: &Path,
    values: &Values,
    repo: &repository::Repository,
    reader: &mut files::Reader,
    r: &mut Reporter<'_>,
) {
    let Spec::ConfigFile(spec) = &mut resource.spec else {
        return;
    };
    let Some(source) = spec.source.clone() else {
        return;
    };
    if spec.content.is_some() {
        r.report(
            "spec.source",
            "set exactly one of `content` and `source`",
            "inline the content, or name a repository file with source:, not both",
        );
        return;
    }
    let base = manifest.parent().unwrap_or(Path::new("."));
    let path = base.join(&source);
    // The real path is what is read: a link swapped after the check would need to replace a
    // directory of the resolved path, which lies inside the repository.
    let read_path = match repo.confine(base, &source) {
        Ok(resolved) => resolved.unwrap_or_else(|| path.clone()),
        Err(e) => {
            r.report("spec.source", e.to_string(), e.fix());
            return;
        }
    };
    match reader
        .read(&read_path, files::FileRole::Source)
        .map_err(|e| e.named(&path))
    {
        Ok(text) if spec.template => match values.interpolate(&text) {
            Ok(text) => spec.content = Some(text),
            Err(errors) => {
                for e in errors.into_iter().take(MAX_PROBLEMS) {
                    let env = values
                        .get("env")
                        .and_then(|v| v.as_str())
                        .unwrap_or("?")
                        .to_string();
                    let (message, fix) = subst_message(&e, &env);
                    r.report(
                        "spec.source",
                        format!("in {}: {message}", path.display()),
                        fix,
                    );
                }
            }
        },
        Ok(text) => spec.content = Some(text),
        Err(e @ files::ReadProblem::Io { .. }) => r.report(
            "spec.source",
            e.to_string(),
            "give a path relative to this manifest file, e.g. ../dashboards/home.json",
        ),
        Err(e) => r.report("spec.source", e.to_string(), e.fix()),
    }
}

/// Reads `_defaults.yaml` and `<env>.yaml`; with no `--env`, the only environment if there is
/// exactly one, else an error listing them.
fn load_values(
    dir: &Path,
    env: Option<&str>,
    repo: &repository::Repository,
    reader: &mut files::Reader,
    budget: &mut yaml::Budget,
    diags: &mut Vec<Diagnostic>,
) -> Result<(Values, String), LoadError> {
    let env_dir = dir.join(ENVIRONMENTS_DIR);
    let mut available: Vec<String> = match std::fs::read_dir(&env_dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                let stem = name.strip_suffix(".yaml")?;
                (!stem.starts_with('_')).then(|| stem.to_string())
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    available.sort();
    let env = match (env, available.as_slice()) {
        (Some(e), _) if available.iter().any(|a| a == e) => e.to_string(),
        (Some(e), []) => e.to_string(),
        (Some(e), list) => {
            return Err(LoadError::Environment {
                message: format!(
                    "no environment `{e}`: {} does not exist\n    fix: pass --env with one of: {}",
                    env_dir.join(format!("{e}.yaml")).display(),
                    list.join(", ")
                ),
            });
        }
        (None, [only]) => only.clone(),
        (None, []) => "default".to_string(),
        (None, list) => {
            return Err(LoadError::Environment {
                message: format!(
                    "several environments exist\n    fix: pass --env with one of: {}",
                    list.join(", ")
                ),
            });
        }
    };
    let mut read =
        |path: PathBuf, required: bool| -> Result<Option<(PathBuf, yaml::Document)>, LoadError> {
            if let Err(e) = repo.confine_found(&path) {
                diags.push(escape_diagnostic(&path, &e));
                return Ok(None);
            }
            let text = match reader.read(&path, files::FileRole::Values) {
                Ok(t) => t,
                Err(files::ReadProblem::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound && !required =>
                {
                    return Ok(None);
                }
                Err(files::ReadProblem::Io { path, source }) => {
                    return Err(LoadError::Read { path, source });
                }
                Err(problem) => {
                    diags.push(problem.diagnostic(&path));
                    return Ok(None);
                }
            };
            match yaml::parse_within(&text, budget) {
                Ok(mut docs) if docs.len() <= 1 => Ok(docs.pop().map(|d| (path, d))),
                Ok(_) => {
                    diags.push(Diagnostic {
                        location: SourceLocation {
                            file: path,
                            line: 1,
                            column: 1,
                        },
                        resource: None,
                        path: None,
                        message: "a values file holds one document".to_string(),
                        fix: "remove the extra `---` documents".to_string(),
                        rule: None,
                    });
                    Ok(None)
                }
                Err(e) if e.load_wide => {
                    // As in the manifests: this is the problem to fix, not what follows it.
                    diags.push(syntax_error(&path, &e));
                    let mut all = Diagnostics(std::mem::take(diags));
                    all.sort();
                    Err(LoadError::Invalid(all))
                }
                Err(e) => {
                    diags.push(syntax_error(&path, &e));
                    Ok(None)
                }
            }
        };
    let defaults = read(env_dir.join(values::DEFAULTS_FILE), false)?;
    let own = if available.is_empty() {
        None
    } else {
        read(env_dir.join(format!("{env}.yaml")), true)?
    };
    let values = Values::new(
        defaults.as_ref().map(|(_, d)| d.value.clone()),
        own.as_ref()
            .map(|(_, d)| d.value.clone())
            .unwrap_or_default(),
        &env,
    );
    // A value that grows past the budget is reported where it is written: in the
    // environment's file when it sets it, else in the defaults.
    for name in values.oversized() {
        let Some((file, doc)) = [&own, &defaults]
            .into_iter()
            .flatten()
            .find(|(_, d)| d.positions.contains_key(name))
        else {
            continue;
        };
        let pos = doc.position_of(name);
        diags.push(Diagnostic {
            location: SourceLocation {
                file: file.clone(),
                line: pos.line,
                column: pos.column,
            },
            resource: None,
            path: Some(name.to_string()),
            message: format!(
                "this value repeats other values past {} MiB of text (values that repeat other values grow exponentially)",
                values::MAX_VALUE_BYTES >> 20
            ),
            fix: "build it from fewer references, without repeating values that repeat others"
                .to_string(),
            rule: None,
        });
    }
    Ok((values, env))
}

/// The weak-secret rule over every Parameter whose value source is set (an unset variable
/// is the providers' concern: an existing parameter is left alone). Read here so that
/// validate, plan and apply refuse a weak secret before anything is written; each value is
/// dropped once judged.
fn secret_findings(desired: &Desired) -> Vec<crate::plan::Violation> {
    let mut out = Vec::new();
    for (r, spec) in desired.parameters() {
        let id = r.id.to_string();
        let source = &spec.value_from;
        // Read as the providers read it; an unreadable value is theirs to report.
        // A blank value is the weak-secret rule's to judge (it refuses it by name); one
        // that cannot be read at all is the providers' to report.
        let value = match secret::read(source) {
            Ok(value) => Some(value),
            Err(secret::SecretProblem::Empty(_)) => Some(String::new()),
            Err(_) => None,
        };
        let finding = value.and_then(|value| {
            let (path, origin) = match (&source.env, &source.file) {
                (Some(var), _) => ("spec.valueFrom.env", format!("environment variable {var}")),
                (None, Some(file)) => ("spec.valueFrom.file", format!("file {file}")),
                (None, None) => ("spec.valueFrom", String::new()),
            };
            crate::policy::check_secret(&id, path, &origin, &value)
        });
        out.extend(finding);
    }
    out
}

/// Fills the run-time values (`${account}`) into a desired state once they are known.
pub fn fill_runtime(desired: &mut Desired, account: &str) {
    for r in &mut desired.resources {
        match &mut r.spec {
            Spec::Bucket(b) => b.name = values::fill_runtime(&b.name, account),
            Spec::ConfigFile(f) => {
                if let Some(c) = &mut f.content {
                    *c = values::fill_runtime(c, account);
                }
            }
            Spec::Container(c) => {
                for arg in &mut c.command {
                    *arg = values::fill_runtime(arg, account);
                }
                for v in c.environment.values_mut() {
                    v.value = values::fill_runtime(&v.value, account);
                }
            }
            _ => {}
        }
    }
}

fn syntax_error(file: &Path, e: &yaml::SyntaxError) -> Diagnostic {
    Diagnostic {
        location: SourceLocation {
            file: file.to_path_buf(),
            line: e.pos.line,
            column: e.pos.column,
        },
        resource: None,
        path: e.path.clone(),
        message: e.message.clone(),
        fix: e.fix.clone(),
        rule: None,
    }
}
