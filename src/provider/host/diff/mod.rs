//! The host's pure decision: desired ConfigFiles and Containers against what was observed →
//! ordered steps (files, then removals, then containers in dependency order), conditions,
//! errors (a declared name held by a container that is not ours) and live policy
//! violations. One function per concern; the field comparisons are in [`files`] and
//! [`container`]. No I/O, no clock.

pub mod container;
pub mod files;
pub mod render;

use super::HostObserved;
use super::docker::{LiveContainer, MOUNTS_LABEL};
use super::files::FileState;
use super::hash::{HASH_LABEL, config_hash, sha256_hex};
use super::image::ImageRef;
use super::op::HostOp;
use crate::model::ownership::{ENV_LABEL, STACK_LABEL};
use crate::model::{ConfigFileSpec, ContainerSpec, Desired, Ensure, FileType, Kind, ResourceId};
use crate::plan::{
    Action, BlockReason, Blocked, Cause, Change, Condition, ConditionStatus, FieldChange,
};
use crate::provider::{ProviderPlan, Step};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Network modes that exist on every engine and are never created.
const BUILTIN_NETWORKS: [&str; 4] = ["none", "host", "bridge", "default"];

/// Plans the host: files, removals, containers, live policy. Pure.
pub fn plan(desired: &Desired, host_root: &Path, obs: &HostObserved) -> ProviderPlan<HostOp> {
    let mut out = ProviderPlan::default();
    let rolled = plan_files(desired, host_root, obs, &mut out);
    plan_removed_files(desired, obs, &mut out);
    plan_removals(desired, obs, &mut out);
    plan_containers(desired, host_root, obs, &rolled, &mut out);
    live_policy(desired, obs, &mut out);
    out.unobserved = obs.unobserved.clone();
    out
}

/// The sha256 a ConfigFile's content must have; `None` for a secret that cannot be read.
pub fn desired_sha256(spec: &ConfigFileSpec, obs: &HostObserved) -> Option<String> {
    match &spec.from_parameter {
        Some(param) => match obs.secrets.get(param) {
            Some(Ok(value)) => Some(sha256_hex(value.as_bytes())),
            _ => None,
        },
        None => Some(sha256_hex(spec.content.as_deref().unwrap_or("").as_bytes())),
    }
}

/// Files first: containers mount them. Files stay when the stack is disabled (base data).
/// Returns the files whose content is (re)written: their containers must roll.
fn plan_files(
    desired: &Desired,
    host_root: &Path,
    obs: &HostObserved,
    out: &mut ProviderPlan<HostOp>,
) -> BTreeSet<String> {
    let mut rolled = BTreeSet::new();
    for (res, spec) in desired.config_files() {
        let name = &res.id.name;
        let live = obs.files.get(name).cloned().unwrap_or(FileState::Missing);
        let want = desired_sha256(spec, obs);
        if want.is_none()
            && let Some(param) = &spec.from_parameter
            && live != FileState::Missing
        {
            let why = match obs.secrets.get(param) {
                Some(Err(why)) => why.clone(),
                _ => format!("Parameter/{param} is not declared"),
            };
            out.conditions.push(ready(
                &res.id,
                ConditionStatus::Unknown,
                "SecretUnverified",
                format!("the content cannot be verified: {why}; the file is left as it is"),
            ));
        }
        let drift = files::diff(spec, &live, want.as_deref());
        if drift.is_clean() {
            continue;
        }
        let (action, ops) = if drift.missing {
            let op = match spec.kind {
                FileType::File => render::write_file(desired, host_root, name, spec, obs),
                FileType::Directory => render::make_directory(host_root, name, spec),
            };
            let action = if live == FileState::Missing {
                Action::Create
            } else {
                Action::Replace
            };
            (action, vec![op])
        } else if drift.content {
            (
                Action::Update,
                vec![render::write_file(desired, host_root, name, spec, obs)],
            )
        } else {
            let mut ops = Vec::new();
            if drift.owner {
                ops.push(render::set_owner(host_root, name, spec));
            }
            if drift.mode {
                ops.push(render::set_mode(host_root, name, spec));
            }
            (Action::Update, ops)
        };
        // Only a file's content is read by a running service; a directory's creation or an
        // owner/mode fix needs no restart (a replaced directory is seen by its identity).
        if spec.kind == FileType::File && (drift.missing || drift.content) {
            rolled.insert(name.clone());
        }
        let mut change = Change::new(res.id.clone(), action).with_fields(drift.fields);
        if action == Action::Replace {
            change = change.because(match &live {
                FileState::Symlink { .. } => {
                    "a symlink is at the path: it is replaced, never followed"
                }
                _ => "something other than a regular file/directory is at the path",
            });
        }
        out.steps.push(Step { change, ops });
    }
    rolled
}

/// This stack's containers in this environment. One from before the environment label is
/// not among them: it is adopted (recreated with the label) when a declared name finds it,
/// and never removed as undeclared, since another environment may have made it.
fn owned<'o>(desired: &Desired, obs: &'o HostObserved) -> impl Iterator<Item = &'o LiveContainer> {
    let stack = desired.stack_name.clone();
    let env = desired.environment.clone();
    obs.containers
        .iter()
        .filter(move |c| c.stack() == Some(stack.as_str()) && c.env() == Some(env.as_str()))
}

/// Files this stack wrote for ConfigFiles no longer declared: each goes with its resource.
/// A directory at the path is never deleted (it holds data); nothing there, nothing to do.
fn plan_removed_files(desired: &Desired, obs: &HostObserved, out: &mut ProviderPlan<HostOp>) {
    for (path, (name, state)) in &obs.orphans {
        if !matches!(state, FileState::File { .. } | FileState::Symlink { .. }) {
            continue;
        }
        out.steps.push(Step {
            change: Change::new(
                ResourceId::new(Kind::ConfigFile, name.clone()),
                Action::Delete,
            )
            .because(format!("no longer declared; stackwarden wrote {path}")),
            ops: vec![render::remove_file(desired, name, path)],
        });
    }
}

/// Owned containers no longer declared, and declared ones of a disabled stack.
fn plan_removals(desired: &Desired, obs: &HostObserved, out: &mut ProviderPlan<HostOp>) {
    let mut ours: Vec<&LiveContainer> = owned(desired, obs).collect();
    ours.sort_by(|a, b| a.name.cmp(&b.name));
    for live in ours {
        // A successor waiting under its temporary name is the handoff's to keep or remove.
        if live.labels.contains_key(super::handoff::SUCCESSOR_LABEL)
            && live.name.ends_with(super::handoff::SUCCESSOR_SUFFIX)
        {
            continue;
        }
        let declared = desired.get(Kind::Container, &live.name);
        if declared.is_none_or(|r| r.ensure == Ensure::Absent) {
            let reason = if declared.is_some() {
                "the stack is disabled"
            } else {
                "no longer declared"
            };
            out.steps.push(Step {
                change: Change::new(
                    ResourceId::new(Kind::Container, live.name.clone()),
                    Action::Delete,
                )
                .because(reason),
                ops: vec![HostOp::RemoveContainer {
                    name: live.name.clone(),
                    id: live.id.clone(),
                }],
            });
        }
    }
}

/// Declared containers in start order (depth, then name: deterministic).
fn plan_containers(
    desired: &Desired,
    host_root: &Path,
    obs: &HostObserved,
    rolled: &BTreeSet<String>,
    out: &mut ProviderPlan<HostOp>,
) {
    let levels = levels(desired);
    let mut declared: Vec<_> = desired
        .containers()
        .filter(|(r, _)| r.ensure == Ensure::Present)
        .collect();
    declared.sort_by_key(|(r, _)| {
        (
            levels.get(&r.id.name).copied().unwrap_or(0),
            r.id.name.clone(),
        )
    });
    for (res, spec) in declared {
        plan_container(desired, host_root, obs, rolled, &res.id, spec, out);
    }
}

/// The image as found for a reference, if it is there and (when pinned by digest) is the
/// very image the digest names.
fn found_image<'o>(obs: &'o HostObserved, reference: &str) -> Option<&'o super::docker::ImageInfo> {
    obs.images
        .get(reference)
        .and_then(Option::as_ref)
        .filter(|i| ImageRef::parse(reference).is_satisfied_by(&i.repo_digests))
}

fn plan_container(
    desired: &Desired,
    host_root: &Path,
    obs: &HostObserved,
    rolled: &BTreeSet<String>,
    id: &ResourceId,
    spec: &ContainerSpec,
    out: &mut ProviderPlan<HostOp>,
) {
    let name = id.name.as_str();
    let image = found_image(obs, &spec.image);
    let binds = binds(desired, host_root, spec);
    let hash = desired_hash(desired, host_root, name, spec);
    // Every declared container's step waits for what it depends on, and the plan holds
    // what apply will write: nothing is derived from the manifests again.
    let prerequisites = render::prerequisites(&render::graph(desired), name, spec);
    let mut prepare = vec![
        prerequisites.clone(),
        HostOp::EnsureImage {
            image: spec.image.clone(),
            present: image.is_some(),
        },
    ];
    if !BUILTIN_NETWORKS.contains(&spec.network.as_str()) && !obs.networks.contains(&spec.network) {
        prepare.push(render::ensure_network(desired, &spec.network));
    }
    // Rendered only for a step that creates: a steady pass renders no create body.
    let launch = || {
        [
            render::create_container(desired, host_root, name, spec, image, &hash),
            HostOp::StartContainer {
                name: name.to_string(),
            },
            HostOp::WaitReady {
                name: name.to_string(),
                check: spec.health_check.clone(),
            },
        ]
    };
    if image.is_none() {
        out.conditions.push(ready(
            id,
            ConditionStatus::False,
            "ImageNotPresent",
            format!(
                "image {} is not present on the engine; apply will try to pull it",
                spec.image
            ),
        ));
    }
    let Some(live) = obs.containers.iter().find(|c| c.name == name) else {
        let mut ops = prepare;
        ops.extend(launch());
        out.steps.push(Step {
            change: Change::new(id.clone(), Action::Create),
            ops,
        });
        return;
    };
    if let Some(blocked) = ownership(desired, id, live) {
        out.blocked.push(blocked);
        return;
    }

    let view = container::desired_view(
        name,
        spec,
        image,
        &binds,
        mount_sources(desired, host_root, spec, &obs.sources),
        labels(desired, spec, &hash),
    );
    let mut fields = container::compare(&view, &live.view);
    match image {
        Some(i) if i.id != live.view.image => fields.insert(
            0,
            FieldChange::changed(
                "spec.image",
                short(&live.view.image),
                format!("{} ({})", spec.image, short(&i.id)),
            ),
        ),
        None => fields.insert(
            0,
            FieldChange::changed(
                "spec.image",
                short(&live.view.image),
                format!("{} (not present locally)", spec.image),
            ),
        ),
        _ => {}
    }
    let mut reasons = Vec::new();
    // Created from the very reference the manifest names, running another image: the tag
    // moved under it. Rolling it out changes what runs, so it says so, apart from a
    // container someone recreated from another image.
    let moved_tag = match image {
        Some(i) if i.id != live.view.image && live.image_ref == spec.image => Some(format!(
            "image tag {} now resolves to {}, the container runs {}",
            spec.image,
            short(&i.id),
            short(&live.view.image)
        )),
        _ => None,
    };
    let only_image = fields.iter().all(|f| f.path == "spec.image");
    match (&moved_tag, only_image) {
        (Some(moved), true) if !fields.is_empty() => reasons.push(moved.clone()),
        (Some(moved), false) => {
            reasons.push(moved.clone());
            reasons.push("its configuration differs".to_string());
        }
        _ if !fields.is_empty() => reasons.push("its configuration differs".to_string()),
        _ => {}
    }
    // A container from before the environment label: Docker fixes labels at creation, so
    // adding the label recreates it, once, and the plan says that is all that differs.
    if live.env().is_none() {
        let env_field = format!("metadata.labels[{ENV_LABEL}]");
        let why = format!(
            "it predates the environment label {ENV_LABEL}={} (labels are fixed at creation)",
            desired.environment
        );
        if fields.iter().all(|f| f.path == env_field) {
            reasons.retain(|r| r != "its configuration differs");
        }
        reasons.push(why);
    }
    for m in &spec.mounts {
        if let Some(f) = &m.config_file
            && rolled.contains(f)
        {
            reasons.push(format!("mounted ConfigFile/{f} is rewritten"));
        }
    }
    if matches!(live.status.as_str(), "dead" | "removing") {
        reasons.push(format!("it is {}", live.status));
    }
    if !reasons.is_empty() {
        let mut ops = prepare;
        ops.push(HostOp::RemoveContainer {
            name: name.to_string(),
            id: live.id.clone(),
        });
        ops.extend(launch());
        out.steps.push(Step {
            // The config hash label records what was applied: the same hash as now means
            // the manifest did not change and someone changed the container.
            change: Change::new(id.clone(), Action::Replace)
                .with_fields(fields)
                .because(format!("recreate: {}", reasons.join("; ")))
                .caused_by(Cause::from_recorded_hash(
                    live.labels.get(HASH_LABEL).map(String::as_str),
                    &hash,
                )),
            ops,
        });
        return;
    }
    plan_state(id, live, prerequisites, spec, out);
}

/// The block when the container holding a declared name is not this stack's: stackwarden
/// never touches it, and the declared container cannot exist while it is there.
fn ownership(desired: &Desired, id: &ResourceId, live: &LiveContainer) -> Option<Blocked> {
    let short_id = live.id.get(..12).unwrap_or(&live.id);
    let (reason, message) = match live.stack() {
        Some(stack) if stack == desired.stack_name => match live.env() {
            // Legacy (no label): found by its name on this environment's engine, it is ours.
            None => return None,
            Some(env) if env == desired.environment => return None,
            Some(env) => (
                BlockReason::OwnedByAnotherStack,
                format!(
                    "{id}: the name is held by container {short_id} of stack `{stack}` in environment `{env}` (label {ENV_LABEL}={env}); stackwarden never changes another environment's container: run with --env {env}, or remove it"
                ),
            ),
        },
        Some(other) => (
            BlockReason::OwnedByAnotherStack,
            format!(
                "{id}: the name is held by container {short_id} of stack `{other}` (label {STACK_LABEL}={other}); stackwarden never changes another stack's container: rename or remove it, or rename this one"
            ),
        ),
        None => (
            BlockReason::HeldByForeignContainer,
            format!(
                "{id}: the name is held by container {short_id}, which stackwarden does not manage (no label {STACK_LABEL}={}); it is left alone and {id} cannot be created: remove or rename it by hand",
                desired.stack_name
            ),
        ),
    };
    Some(Blocked {
        id: id.clone(),
        reason,
        message,
    })
}

use crate::plan::HEALTH_FIELD;

/// A container whose settings match: only its state may need a start, an unpause, a
/// restart, or nothing but a condition.
fn plan_state(
    id: &ResourceId,
    live: &LiveContainer,
    prerequisites: HostOp,
    spec: &ContainerSpec,
    out: &mut ProviderPlan<HostOp>,
) {
    let name = id.name.clone();
    let wait = HostOp::WaitReady {
        name: name.clone(),
        check: spec.health_check.clone(),
    };
    let (reason, first) = match live.status.as_str() {
        // Unhealthy: restarted, and the daemon's backoff spaces the restarts out while the
        // check keeps failing (an alert says so after a few).
        "running" if live.health.as_deref() == Some("unhealthy") => {
            out.conditions.push(health_condition(id, live));
            out.steps.push(Step {
                change: Change::new(id.clone(), Action::Update)
                    .with_fields(vec![FieldChange::changed(
                        HEALTH_FIELD,
                        "unhealthy",
                        "healthy",
                    )])
                    .because(format!(
                        "its health check fails: {}",
                        live.health_output.as_deref().unwrap_or("no output").trim()
                    )),
                ops: vec![
                    prerequisites,
                    HostOp::RestartContainer {
                        name: name.clone(),
                        id: live.id.clone(),
                    },
                    wait,
                ],
            });
            return;
        }
        "running" => {
            out.conditions.push(health_condition(id, live));
            return;
        }
        "paused" => (
            "it was paused".to_string(),
            HostOp::UnpauseContainer { name },
        ),
        "exited" => (
            format!("it exited with code {}", live.exit_code),
            HostOp::StartContainer { name },
        ),
        "created" => (
            "it was never started".to_string(),
            HostOp::StartContainer { name },
        ),
        other => {
            out.conditions.push(ready(
                id,
                ConditionStatus::False,
                "NotRunning",
                format!("the container is {other} (exit code {})", live.exit_code),
            ));
            return;
        }
    };
    out.steps.push(Step {
        change: Change::new(id.clone(), Action::Update)
            .with_fields(vec![FieldChange::changed("state", &live.status, "running")])
            .because(reason),
        ops: vec![prerequisites, first, wait],
    });
}

fn health_condition(id: &ResourceId, live: &LiveContainer) -> Condition {
    match live.health.as_deref() {
        Some("unhealthy") => ready(
            id,
            ConditionStatus::False,
            "HealthCheckFailing",
            format!(
                "health check failing: {}",
                live.health_output.as_deref().unwrap_or("no output")
            ),
        ),
        Some("starting") => ready(
            id,
            ConditionStatus::Unknown,
            "HealthCheckStarting",
            "health check has not passed yet".into(),
        ),
        _ => ready(id, ConditionStatus::True, "Running", "running".into()),
    }
}

/// Live policy: our own containers (with their declared root allowance) and unmanaged
/// ones, which are reported and never touched. Other stacks' containers are theirs.
fn live_policy(desired: &Desired, obs: &HostObserved, out: &mut ProviderPlan<HostOp>) {
    for live in &obs.containers {
        match live.stack() {
            // One holding a declared name breaks the rule in that resource's place: the
            // violation shows (and alerts) on Container/<name>, not on a stray name.
            None => {
                let declared = desired.get(Kind::Container, &live.name).is_some();
                let resource = if declared {
                    ResourceId::new(Kind::Container, live.name.clone()).to_string()
                } else {
                    format!("docker container {}", live.name)
                };
                out.violations.extend(crate::policy::check_container(
                    &resource,
                    &live.as_spec(None),
                ));
            }
            Some(stack) if stack == desired.stack_name => {
                let allow = desired
                    .containers()
                    .find(|(r, _)| r.id.name == live.name)
                    .and_then(|(_, s)| s.allow_root.clone());
                out.violations.extend(crate::policy::check_container(
                    &format!("Container/{}", live.name),
                    &live.as_spec(allow),
                ));
            }
            Some(_) => {}
        }
    }
}

/// The bind mounts of a container: source on the host (resolved against the host root),
/// target, read-only. Absolute hostPaths are the host's own (`/proc`) and never managed.
fn mount_list(
    desired: &Desired,
    host_root: &Path,
    spec: &ContainerSpec,
) -> Vec<(String, String, bool, bool)> {
    spec.mounts
        .iter()
        .filter_map(|m| {
            let (source, managed) = if let Some(file) = &m.config_file {
                let (_, f) = desired.config_files().find(|(r, _)| r.id.name == *file)?;
                (
                    super::files::resolve(host_root, &f.path)
                        .display()
                        .to_string(),
                    true,
                )
            } else if let Some(path) = &m.host_path {
                (
                    super::files::host_path(host_root, path)
                        .display()
                        .to_string(),
                    !path.starts_with('/'),
                )
            } else {
                (m.volume.clone()?, false)
            };
            Some((source, m.target.clone(), m.read_only, managed))
        })
        .collect()
}

/// The bind strings of a container's mounts, resolved against the host root.
pub fn binds(desired: &Desired, host_root: &Path, spec: &ContainerSpec) -> Vec<String> {
    mount_list(desired, host_root, spec)
        .into_iter()
        .map(|(source, target, ro, _)| {
            let ro = if ro { ":ro" } else { "" };
            format!("{source}:{target}{ro}")
        })
        .collect()
}

/// The bind sources under the host root, whose identity a container records.
pub fn managed_sources(desired: &Desired, host_root: &Path, spec: &ContainerSpec) -> Vec<PathBuf> {
    mount_list(desired, host_root, spec)
        .into_iter()
        .filter(|(_, _, _, managed)| *managed)
        .map(|(source, ..)| PathBuf::from(source))
        .collect()
}

/// Mount target → identity of its source now, from `identities` (source path → identity).
pub fn mount_sources(
    desired: &Desired,
    host_root: &Path,
    spec: &ContainerSpec,
    identities: &BTreeMap<PathBuf, String>,
) -> BTreeMap<String, String> {
    mount_list(desired, host_root, spec)
        .into_iter()
        .filter(|(_, _, _, managed)| *managed)
        .map(|(source, target, ..)| {
            let identity = identities
                .get(Path::new(&source))
                .cloned()
                .unwrap_or_else(|| "missing".to_string());
            (target, identity)
        })
        .collect()
}

/// The mount-identity label's value.
pub fn mount_sources_label(sources: &BTreeMap<String, String>) -> (String, String) {
    (
        MOUNTS_LABEL.to_string(),
        serde_json::to_string(sources).unwrap_or_default(),
    )
}

/// The config hash a declared container must carry. A secret file is hashed by the name
/// of its Parameter, never by its content: the label is readable by anyone who can inspect.
pub fn desired_hash(
    desired: &Desired,
    host_root: &Path,
    name: &str,
    spec: &ContainerSpec,
) -> String {
    let mounted: BTreeMap<String, String> = spec
        .mounts
        .iter()
        .filter_map(|m| m.config_file.as_ref())
        .filter_map(|f| {
            let (_, file) = desired.config_files().find(|(r, _)| r.id.name == *f)?;
            let digest = match &file.from_parameter {
                Some(param) => format!("param:{param}"),
                None => sha256_hex(file.content.as_deref().unwrap_or("").as_bytes()),
            };
            Some((f.clone(), digest))
        })
        .collect();
    config_hash(name, spec, &mounted, &binds(desired, host_root, spec))
}

/// The full comparable label set of a declared container (the mount-identity label is
/// compared as [`super::view::ContainerView::mount_sources`]).
pub fn labels(desired: &Desired, spec: &ContainerSpec, hash: &str) -> BTreeMap<String, String> {
    let mut labels = spec.labels.clone();
    labels.insert(STACK_LABEL.to_string(), desired.stack_name.clone());
    labels.insert(ENV_LABEL.to_string(), desired.environment.clone());
    labels.insert(HASH_LABEL.to_string(), hash.to_string());
    labels
}

/// Start order: a container's depth in the dependsOn graph (0 = depends on nothing).
pub fn levels(desired: &Desired) -> BTreeMap<String, usize> {
    let graph = render::graph(desired);
    graph
        .keys()
        .map(|n| (n.clone(), super::op::depth(n, &graph, 0)))
        .collect()
}

fn ready(id: &ResourceId, status: ConditionStatus, reason: &str, message: String) -> Condition {
    Condition {
        id: id.clone(),
        kind: "Ready".to_string(),
        status,
        reason: reason.to_string(),
        message,
    }
}

fn short(s: &str) -> &str {
    s.strip_prefix("sha256:")
        .unwrap_or(s)
        .get(..12)
        .unwrap_or(s)
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::docker::ImageInfo;
    use super::super::op::ModeSet;
    use super::*;
    use crate::model::{Mode, ParameterSpec, Resource, SourceLocation, Spec, StackSpec};
    use serde_json::json;

    pub(in crate::provider::host) const ROOT: &str = "/srv/obs";
    const IMAGE_ID: &str = "sha256:0123456789abcdef";

    fn resource(kind: Kind, name: &str, spec: Spec) -> Resource {
        Resource {
            id: ResourceId::new(kind, name),
            spec,
            ensure: Ensure::Present,
            mode: Mode::Enforce,
            source: SourceLocation::default(),
        }
    }

    /// One file and one secret file mounted by one container.
    pub(in crate::provider::host) fn desired() -> Desired {
        let stack: Result<StackSpec, _> = serde_json::from_value(json!({
            "project": "p", "environment": "local", "region": "us-east-1", "enabled": true,
            "domain": "localhost", "host": {"instanceType": "t3.medium", "memoryBudget": "3G"}
        }));
        let file: Result<ConfigFileSpec, _> = serde_json::from_value(json!({
            "path": "svc/config.yaml", "content": "a: 1\n", "owner": 10001, "group": 10001, "mode": "0640"
        }));
        let secret_file: Result<ConfigFileSpec, _> = serde_json::from_value(json!({
            "path": "secrets/password", "fromParameter": "secret", "owner": 10001, "group": 10001, "mode": "0400"
        }));
        let param: Result<ParameterSpec, _> = serde_json::from_value(json!({
            "name": "/p/local/secret", "valueFrom": {"env": "SECRET"}
        }));
        let svc: Result<ContainerSpec, _> = serde_json::from_value(json!({
            "image": "stub:local", "user": "10001:10001", "securityOpt": ["no-new-privileges"],
            "memory": "64M", "environment": {"PASSWORD__FILE": {"value": "/run/secrets/password"}},
            "mounts": [{"configFile": "cfg", "target": "/etc/svc.yaml", "readOnly": true},
                       {"configFile": "pw", "target": "/run/secrets/password", "readOnly": true}]
        }));
        let (Ok(stack), Ok(file), Ok(secret_file), Ok(param), Ok(svc)) =
            (stack, file, secret_file, param, svc)
        else {
            panic!("test specs parse");
        };
        Desired {
            stack_name: "obs".into(),
            stack,
            environment: "local".into(),
            resources: vec![
                resource(Kind::Parameter, "secret", Spec::Parameter(param)),
                resource(Kind::ConfigFile, "cfg", Spec::ConfigFile(file)),
                resource(Kind::ConfigFile, "pw", Spec::ConfigFile(secret_file)),
                resource(Kind::Container, "svc", Spec::Container(Box::new(svc))),
            ],
        }
    }

    pub(in crate::provider::host) fn spec_of(d: &Desired) -> &ContainerSpec {
        d.containers()
            .map(|(_, s)| s)
            .next()
            .unwrap_or_else(|| panic!("one container"))
    }

    fn image() -> ImageInfo {
        ImageInfo {
            id: IMAGE_ID.into(),
            entrypoint: vec!["/stub".into()],
            ..Default::default()
        }
    }

    /// What the host looks like right after a successful apply of [`desired`].
    pub(in crate::provider::host) fn converged(d: &Desired) -> HostObserved {
        let root = Path::new(ROOT);
        let spec = spec_of(d);
        let hash = desired_hash(d, root, "svc", spec);
        let mut obs = HostObserved::default();
        for source in managed_sources(d, root, spec) {
            obs.sources.insert(source, "2049:7".into());
        }
        let live = LiveContainer {
            id: "c1".into(),
            name: "svc".into(),
            labels: labels(d, spec, &hash),
            status: "running".into(),
            view: container::desired_view(
                "svc",
                spec,
                Some(&image()),
                &binds(d, root, spec),
                mount_sources(d, root, spec, &obs.sources),
                labels(d, spec, &hash),
            ),
            ..Default::default()
        };
        obs.files.insert(
            "cfg".into(),
            FileState::File {
                sha256: sha256_hex(b"a: 1\n"),
                uid: 10001,
                gid: 10001,
                mode: 0o640,
            },
        );
        obs.files.insert(
            "pw".into(),
            FileState::File {
                sha256: sha256_hex(b"pw"),
                uid: 10001,
                gid: 10001,
                mode: 0o400,
            },
        );
        obs.containers.push(live);
        obs.images.insert("stub:local".into(), Some(image()));
        obs.secrets.0.insert("secret".into(), Ok("pw".into()));
        obs
    }

    fn run(d: &Desired, obs: &HostObserved) -> ProviderPlan<HostOp> {
        plan(d, Path::new(ROOT), obs)
    }

    fn summary(p: &ProviderPlan<HostOp>) -> Vec<String> {
        p.steps
            .iter()
            .map(|s| format!("{} {}", s.change.action.verb(), s.change.id))
            .collect()
    }

    #[test]
    fn a_converged_host_plans_nothing() {
        let d = desired();
        let p = run(&d, &converged(&d));
        assert!(p.steps.is_empty(), "{:?}", summary(&p));
        assert!(p.violations.is_empty(), "{:?}", p.violations);
    }

    #[test]
    fn an_empty_host_gets_files_before_containers() {
        let d = desired();
        let mut obs = converged(&d);
        obs.files.clear();
        obs.containers.clear();
        let p = run(&d, &obs);
        assert_eq!(
            summary(&p),
            [
                "create ConfigFile/cfg",
                "create ConfigFile/pw",
                "create Container/svc"
            ]
        );
        assert!(matches!(p.steps[2].ops[0], HostOp::Await(_)));
        assert!(matches!(p.steps[2].ops[1], HostOp::EnsureImage { .. }));
    }

    #[test]
    fn a_root_copy_with_copied_labels_is_replaced() {
        let d = desired();
        let mut obs = converged(&d);
        obs.containers[0].view.user = "0".into();
        obs.containers[0].view.privileged = true;
        obs.containers[0].view.masked_paths = false;
        let p = run(&d, &obs);
        assert_eq!(summary(&p), ["replace Container/svc"]);
        let paths: Vec<&str> = p.steps[0]
            .change
            .fields
            .iter()
            .map(|f| f.path.as_str())
            .collect();
        assert_eq!(
            paths,
            ["spec.user", "spec.privileged", "HostConfig.MaskedPaths"]
        );
        assert!(matches!(&p.steps[0].ops[2], HostOp::RemoveContainer { id, .. } if id == "c1"));
        let rules: Vec<&str> = p.violations.iter().map(|v| v.rule).collect();
        assert_eq!(rules, ["no-root-containers", "no-privileged-containers"]);
    }

    #[test]
    fn a_file_edited_on_disk_is_rewritten_and_rolls_its_container() {
        let d = desired();
        let mut obs = converged(&d);
        obs.files.insert(
            "cfg".into(),
            FileState::File {
                sha256: "edited".into(),
                uid: 10001,
                gid: 10001,
                mode: 0o640,
            },
        );
        let p = run(&d, &obs);
        assert_eq!(
            summary(&p),
            ["update ConfigFile/cfg", "replace Container/svc"]
        );
        let reason = p.steps[1].change.reason.clone().unwrap_or_default();
        assert!(reason.contains("ConfigFile/cfg"), "{reason}");
    }

    #[test]
    fn a_mode_change_is_fixed_in_place_without_a_restart() {
        let d = desired();
        let mut obs = converged(&d);
        if let Some(FileState::File { mode, .. }) = obs.files.get_mut("cfg") {
            *mode = 0o666;
        }
        let p = run(&d, &obs);
        assert_eq!(summary(&p), ["update ConfigFile/cfg"]);
        assert_eq!(
            p.steps[0].ops,
            [HostOp::SetMode(ModeSet {
                file: "cfg".into(),
                path: Path::new(ROOT).join("svc/config.yaml"),
                mode: Ok(0o640),
            })]
        );
    }

    #[test]
    fn a_stopped_container_is_started_not_recreated() {
        let d = desired();
        let mut obs = converged(&d);
        obs.containers[0].status = "exited".into();
        let p = run(&d, &obs);
        assert_eq!(summary(&p), ["update Container/svc"]);
        assert!(matches!(p.steps[0].ops[1], HostOp::StartContainer { .. }));
    }

    #[test]
    fn a_different_secret_rewrites_its_file_shows_no_value_and_rolls_the_container() {
        let d = desired();
        let mut obs = converged(&d);
        obs.secrets
            .0
            .insert("secret".into(), Ok("a-new-password".into()));
        let p = run(&d, &obs);
        assert_eq!(
            summary(&p),
            ["update ConfigFile/pw", "replace Container/svc"]
        );
        let field = &p.steps[0].change.fields[0];
        assert!(field.sensitive && field.old.is_none() && field.new.is_none());
        // The step holds the very bytes it writes, and shows none of them.
        assert!(
            matches!(&p.steps[0].ops[0], HostOp::WriteFile(w)
                if w.content.bytes() == Ok(b"a-new-password".as_slice())),
            "{:?}",
            p.steps[0].ops
        );
        let shown = format!("{:?}", p.steps);
        assert!(!shown.contains("a-new-password"), "{shown}");
        // An unreadable secret cannot be verified: no change is made up for it.
        obs.secrets.0.insert("secret".into(), Err("unset".into()));
        let p = run(&d, &obs);
        assert!(p.steps.is_empty(), "{:?}", summary(&p));
        assert!(p.conditions.iter().any(|c| c.reason == "SecretUnverified"));
    }

    #[test]
    fn the_config_hash_never_depends_on_a_secret_value() {
        let d = desired();
        let spec = spec_of(&d);
        let before = desired_hash(&d, Path::new(ROOT), "svc", spec);
        let mut obs = converged(&d);
        obs.secrets.0.insert("secret".into(), Ok("other".into()));
        assert_eq!(before, desired_hash(&d, Path::new(ROOT), "svc", spec));
    }

    #[test]
    fn a_name_held_by_an_unmanaged_or_foreign_container_is_an_error() {
        let d = desired();
        let mut obs = converged(&d);
        obs.containers[0].labels.remove(STACK_LABEL);
        let p = run(&d, &obs);
        assert!(p.steps.is_empty(), "{:?}", summary(&p));
        assert_eq!(p.blocked.len(), 1, "{:?}", p.blocked);
        assert_eq!(p.blocked[0].reason, BlockReason::HeldByForeignContainer);
        assert!(
            p.blocked[0].message.contains("does not manage"),
            "{:?}",
            p.blocked
        );
        obs.containers[0]
            .labels
            .insert(STACK_LABEL.into(), "someone-else".into());
        let p = run(&d, &obs);
        assert!(p.steps.is_empty(), "{:?}", summary(&p));
        assert_eq!(p.blocked[0].reason, BlockReason::OwnedByAnotherStack);
        assert!(
            p.blocked[0].message.contains("`someone-else`"),
            "{:?}",
            p.blocked
        );
    }

    #[test]
    fn a_paused_container_is_unpaused_not_recreated() {
        let d = desired();
        let mut obs = converged(&d);
        obs.containers[0].status = "paused".into();
        let p = run(&d, &obs);
        assert_eq!(summary(&p), ["update Container/svc"]);
        assert!(matches!(p.steps[0].ops[1], HostOp::UnpauseContainer { .. }));
    }

    #[test]
    fn a_data_directory_recreated_under_a_running_container_rolls_it() {
        let d = desired();
        let mut obs = converged(&d);
        let source = managed_sources(&d, Path::new(ROOT), spec_of(&d))[0].clone();
        obs.sources.insert(source, "2049:8".into());
        let p = run(&d, &obs);
        assert_eq!(summary(&p), ["replace Container/svc"]);
        assert_eq!(
            p.steps[0].change.fields[0].path,
            "spec.mounts[/etc/svc.yaml].source"
        );
    }

    #[test]
    fn unmanaged_containers_are_reported_and_never_planned() {
        let d = desired();
        let mut obs = converged(&d);
        obs.containers.push(LiveContainer {
            id: "x".into(),
            name: "adhoc".into(),
            status: "running".into(),
            ..Default::default()
        });
        let p = run(&d, &obs);
        assert!(p.steps.is_empty());
        let found: Vec<(&str, &str)> = p
            .violations
            .iter()
            .map(|v| (v.rule, v.resource.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                ("no-root-containers", "docker container adhoc"),
                ("no-new-privileges", "docker container adhoc")
            ]
        );
    }

    #[test]
    fn a_successor_under_its_temporary_name_is_left_to_the_handoff() {
        let d = desired();
        let mut obs = converged(&d);
        let mut successor = obs.containers[0].clone();
        successor.name = format!(
            "{}{}",
            successor.name,
            super::super::handoff::SUCCESSOR_SUFFIX
        );
        successor.id = "c1".into();
        successor.labels.insert(
            super::super::handoff::SUCCESSOR_LABEL.into(),
            obs.containers[0].id.clone(),
        );
        obs.containers.push(successor.clone());
        assert!(summary(&run(&d, &obs)).is_empty());
        // Without the label it is an undeclared container of the stack, as ever.
        successor
            .labels
            .remove(super::super::handoff::SUCCESSOR_LABEL);
        obs.containers.pop();
        obs.containers.push(successor.clone());
        assert_eq!(
            summary(&run(&d, &obs)),
            [format!("delete Container/{}", successor.name)]
        );
    }

    /// `c` as it would be had another environment of the same stack created it (`Some`), or
    /// a stackwarden from before the environment label (`None`).
    fn relabel(c: &mut LiveContainer, env: Option<&str>) {
        for labels in [&mut c.labels, &mut c.view.labels] {
            match env {
                Some(e) => labels.insert(ENV_LABEL.into(), e.into()),
                None => labels.remove(ENV_LABEL),
            };
        }
    }

    #[test]
    fn a_name_held_by_another_environments_container_is_blocked_never_changed() {
        let d = desired();
        let mut obs = converged(&d);
        relabel(&mut obs.containers[0], Some("prod"));
        let p = run(&d, &obs);
        assert!(p.steps.is_empty(), "{:?}", summary(&p));
        assert_eq!(p.blocked.len(), 1, "{:?}", p.blocked);
        assert_eq!(p.blocked[0].reason, BlockReason::OwnedByAnotherStack);
        assert!(
            p.blocked[0].message.contains("environment `prod`"),
            "{:?}",
            p.blocked
        );
    }

    #[test]
    fn a_container_from_before_the_environment_label_is_recreated_once_with_it() {
        let d = desired();
        let mut obs = converged(&d);
        relabel(&mut obs.containers[0], None);
        let p = run(&d, &obs);
        assert_eq!(summary(&p), ["replace Container/svc"]);
        let change = &p.steps[0].change;
        let paths: Vec<&str> = change.fields.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, [format!("metadata.labels[{ENV_LABEL}]")]);
        let reason = change.reason.as_deref().unwrap_or("");
        assert!(
            reason.contains("predates the environment label"),
            "{reason}"
        );
        assert!(!reason.contains("configuration differs"), "{reason}");
    }

    #[test]
    fn undeclared_containers_of_another_environment_or_from_before_the_label_are_never_removed() {
        let d = desired();
        let mut obs = converged(&d);
        for (id, env) in [("c-prod", Some("prod")), ("c-legacy", None)] {
            let mut stray = obs.containers[0].clone();
            stray.name = format!("old-{id}");
            stray.id = id.into();
            relabel(&mut stray, env);
            obs.containers.push(stray);
        }
        assert!(summary(&run(&d, &obs)).is_empty());
    }

    #[test]
    fn undeclared_and_disabled_containers_are_deleted_files_stay() {
        let mut d = desired();
        let mut obs = converged(&d);
        let mut stray = obs.containers[0].clone();
        stray.name = "old".into();
        stray.id = "c0".into();
        obs.containers.push(stray);
        for r in &mut d.resources {
            if r.id.kind.is_runtime() {
                r.ensure = Ensure::Absent;
            }
        }
        let p = run(&d, &obs);
        assert_eq!(
            summary(&p),
            ["delete Container/old", "delete Container/svc"]
        );
    }

    #[test]
    fn a_missing_image_is_a_condition_and_a_changed_image_a_replace() {
        let d = desired();
        let mut obs = converged(&d);
        obs.images.insert(
            "stub:local".into(),
            Some(ImageInfo {
                id: "sha256:fedcba9876543210".into(),
                ..image()
            }),
        );
        assert_eq!(summary(&run(&d, &obs)), ["replace Container/svc"]);
        obs.containers.clear();
        obs.images.insert("stub:local".into(), None);
        let p = run(&d, &obs);
        assert!(p.conditions.iter().any(|c| c.reason == "ImageNotPresent"));
    }

    #[test]
    fn start_order_follows_depends_on() {
        let mut d = desired();
        let later: Result<ContainerSpec, _> = serde_json::from_value(json!({
            "image": "stub:local", "user": "1:1", "securityOpt": ["no-new-privileges"], "memory": "8M",
            "dependsOn": [{"container": "svc", "condition": "healthy"}]
        }));
        let Ok(later) = later else {
            panic!("spec parses")
        };
        d.resources.insert(
            0,
            resource(Kind::Container, "aaa", Spec::Container(Box::new(later))),
        );
        let levels = levels(&d);
        assert_eq!((levels["svc"], levels["aaa"]), (0, 1));
        let mut obs = converged(&d);
        obs.containers.clear();
        assert_eq!(
            summary(&run(&d, &obs)),
            ["create Container/svc", "create Container/aaa"]
        );
    }

    #[test]
    fn a_tag_moved_under_a_container_is_a_replacement_that_says_so() {
        let d = desired();
        let mut obs = converged(&d);
        obs.containers[0].view.image = "sha256:0123456789abcdef0000".into();
        obs.containers[0].image_ref = "stub:local".into();
        let p = run(&d, &obs);
        let step = p
            .steps
            .iter()
            .find(|s| s.change.id.name == "svc")
            .expect("a step");
        assert_eq!(step.change.action, Action::Replace);
        let reason = step.change.reason.as_deref().unwrap_or("");
        assert!(
            reason.contains("image tag stub:local now resolves to"),
            "{reason}"
        );
        assert!(!reason.contains("configuration differs"), "{reason}");
        // Recreated by hand from another reference: not a moved tag.
        obs.containers[0].image_ref = "other:tag".into();
        let p = run(&d, &obs);
        let reason = p.steps[0].change.reason.clone().unwrap_or_default();
        assert!(!reason.contains("now resolves"), "{reason}");
    }

    /// The create op of `svc` in a plan of `obs`.
    fn create_op(d: &Desired, obs: &HostObserved) -> super::super::op::ContainerCreate {
        let p = run(d, obs);
        p.steps
            .iter()
            .flat_map(|s| &s.ops)
            .find_map(|op| match op {
                HostOp::CreateContainer(c) => Some((**c).clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no create in {:?}", summary(&p)))
    }

    #[test]
    fn a_planned_create_holds_its_complete_body_with_the_config_hash_label() {
        let d = desired();
        let mut obs = converged(&d);
        obs.containers.clear();
        let c = create_op(&d, &obs);
        let hash = desired_hash(&d, Path::new(ROOT), "svc", spec_of(&d));
        let labels = c.body.labels.clone().unwrap_or_default();
        assert_eq!(labels.get(HASH_LABEL), Some(&hash));
        assert_eq!(labels.get(STACK_LABEL).map(String::as_str), Some("obs"));
        // What the engine binds is only known at create: that label is added then.
        assert!(!labels.contains_key(MOUNTS_LABEL), "{labels:?}");
        assert_eq!(c.expected.labels.get(HASH_LABEL), Some(&hash));
        assert_eq!(c.body.image.as_deref(), Some("stub:local"));
        assert_eq!(c.body.user.as_deref(), Some("10001:10001"));
        assert_eq!(
            c.body.env.as_deref(),
            Some(["PASSWORD__FILE=/run/secrets/password".to_string()].as_slice())
        );
        let host = c.body.host_config.clone().unwrap_or_default();
        assert_eq!(host.memory, Some(64 << 20));
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(
            host.binds.unwrap_or_default(),
            [
                "/srv/obs/svc/config.yaml:/etc/svc.yaml:ro",
                "/srv/obs/secrets/password:/run/secrets/password:ro"
            ]
        );
        let mounted: Vec<&str> = c.mounted_files.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(mounted, ["cfg", "pw"]);
    }

    #[test]
    fn a_recreate_holds_the_same_rendered_create_as_a_create() {
        let d = desired();
        let mut obs = converged(&d);
        obs.containers[0].view.user = "0".into();
        let replace = create_op(&d, &obs);
        obs.containers.clear();
        assert_eq!(replace, create_op(&d, &obs));
    }

    #[test]
    fn every_declared_container_step_first_awaits_its_mounted_files_and_dependencies() {
        let d = desired();
        let mut obs = converged(&d);
        obs.containers[0].status = "exited".into();
        let p = run(&d, &obs);
        let HostOp::Await(pre) = &p.steps[0].ops[0] else {
            panic!("{:?}", p.steps[0].ops)
        };
        assert_eq!(pre.files, ["cfg", "pw"]);
        assert_eq!(pre.container, "svc");
    }
}
