//! The host's pure decision: desired ConfigFiles and Containers against what was observed →
//! ordered steps (files, then removals, then containers in dependency order), conditions
//! and live policy violations. No I/O, no clock.

use super::docker::{LiveContainer, compare, desired_view};
use super::files::{self, FileState};
use super::hash::{HASH_LABEL, config_hash};
use super::{HostObserved, HostOp};
use crate::model::{ContainerSpec, Desired, Ensure, FileType, Kind, ResourceId};
use crate::plan::{Action, Change, Condition, ConditionStatus, FieldChange};
use crate::provider::{ProviderPlan, Step};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Network modes that exist on every engine and are never created.
const BUILTIN_NETWORKS: [&str; 4] = ["none", "host", "bridge", "default"];

/// The bind strings of a container's mounts, resolved against the host root.
pub fn binds(desired: &Desired, host_root: &Path, spec: &ContainerSpec) -> Vec<String> {
    spec.mounts
        .iter()
        .filter_map(|m| {
            let source = if let Some(file) = &m.config_file {
                let (_, f) = desired.config_files().find(|(r, _)| r.id.name == *file)?;
                files::resolve(host_root, &f.path).display().to_string()
            } else if let Some(path) = &m.host_path {
                files::host_path(host_root, path).display().to_string()
            } else {
                m.volume.clone()?
            };
            let ro = if m.read_only { ":ro" } else { "" };
            Some(format!("{source}:{}{ro}", m.target))
        })
        .collect()
}

/// The config hash a declared container must carry.
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
            Some((f.clone(), files::desired_sha256(file)))
        })
        .collect();
    config_hash(name, spec, &mounted, &binds(desired, host_root, spec))
}

/// The full label set of a declared container.
pub fn labels(desired: &Desired, spec: &ContainerSpec, hash: &str) -> BTreeMap<String, String> {
    let mut labels = spec.labels.clone();
    labels.insert(
        crate::model::ownership::STACK_LABEL.to_string(),
        desired.stack_name.clone(),
    );
    labels.insert(HASH_LABEL.to_string(), hash.to_string());
    labels
}

/// Start order: a container's depth in the dependsOn graph (0 = depends on nothing).
/// Cycles are rejected by validation; a defensive bound stops them here anyway.
pub fn levels(desired: &Desired) -> BTreeMap<String, usize> {
    let deps: BTreeMap<&str, Vec<&str>> = desired
        .containers()
        .map(|(r, s)| {
            (
                r.id.name.as_str(),
                s.depends_on.iter().map(|d| d.container.as_str()).collect(),
            )
        })
        .collect();
    fn depth<'a>(n: &'a str, deps: &BTreeMap<&'a str, Vec<&'a str>>, seen: usize) -> usize {
        if seen > deps.len() {
            return 0;
        }
        deps.get(n)
            .map(|ds| {
                ds.iter()
                    .map(|d| 1 + depth(d, deps, seen + 1))
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0)
    }
    deps.keys()
        .map(|n| (n.to_string(), depth(n, &deps, 0)))
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

/// Plans the host. Pure.
pub fn plan(desired: &Desired, host_root: &Path, obs: &HostObserved) -> ProviderPlan<HostOp> {
    let mut out = ProviderPlan::default();

    // Files first: containers mount them. Files stay when the stack is disabled (base data).
    let mut rolled = BTreeSet::new();
    for (res, spec) in desired.config_files() {
        let name = &res.id.name;
        let live = obs.files.get(name).cloned().unwrap_or(FileState::Missing);
        let drift = files::diff(spec, &live);
        if drift.is_clean() {
            continue;
        }
        let (action, ops) = if drift.missing {
            let op = match spec.kind {
                FileType::File => HostOp::WriteFile { file: name.clone() },
                FileType::Directory => HostOp::MakeDirectory { file: name.clone() },
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
                vec![HostOp::WriteFile { file: name.clone() }],
            )
        } else {
            let mut ops = Vec::new();
            if drift.owner {
                ops.push(HostOp::SetOwner { file: name.clone() });
            }
            if drift.mode {
                ops.push(HostOp::SetMode { file: name.clone() });
            }
            (Action::Update, ops)
        };
        // Only a file's content is read by a running service; a directory's creation or an
        // owner/mode fix needs no restart.
        if spec.kind == FileType::File && (drift.missing || drift.content) {
            rolled.insert(name.clone());
        }
        let mut change = Change::new(res.id.clone(), action).with_fields(drift.fields);
        if action == Action::Replace {
            change = change.because("something other than a regular file/directory is at the path");
        }
        out.steps.push(Step { change, ops });
    }

    let owned: BTreeMap<&str, &LiveContainer> = obs
        .containers
        .iter()
        .filter(|c| c.stack() == Some(desired.stack_name.as_str()))
        .map(|c| (c.name.as_str(), c))
        .collect();
    let by_name: BTreeMap<&str, &LiveContainer> = obs
        .containers
        .iter()
        .map(|c| (c.name.as_str(), c))
        .collect();

    // Removals: owned containers no longer declared, and declared ones of a disabled stack.
    for live in owned.values() {
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

    // Containers in start order (depth, then name: deterministic).
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
        let name = res.id.name.as_str();
        let image_id = obs.images.get(&spec.image).cloned().flatten();
        let mut prepare = vec![HostOp::EnsureImage {
            image: spec.image.clone(),
        }];
        if !BUILTIN_NETWORKS.contains(&spec.network.as_str())
            && !obs.networks.contains(&spec.network)
        {
            prepare.push(HostOp::EnsureNetwork {
                network: spec.network.clone(),
            });
        }
        let launch = [
            HostOp::CreateContainer {
                name: name.to_string(),
            },
            HostOp::StartContainer {
                name: name.to_string(),
            },
            HostOp::WaitReady {
                name: name.to_string(),
            },
        ];
        if image_id.is_none() {
            out.conditions.push(ready(
                &res.id,
                ConditionStatus::False,
                "ImageNotPresent",
                format!(
                    "image {} is not present on the engine; apply will try to pull it",
                    spec.image
                ),
            ));
        }
        let Some(live) = by_name.get(name) else {
            let mut ops = prepare;
            ops.extend(launch);
            out.steps.push(Step {
                change: Change::new(res.id.clone(), Action::Create),
                ops,
            });
            continue;
        };
        if !owned.contains_key(name) {
            out.conditions.push(ready(
                &res.id,
                ConditionStatus::False,
                "NameConflict",
                format!(
                    "a container named {name} exists without label {}={}; it is left alone",
                    crate::model::ownership::STACK_LABEL,
                    desired.stack_name
                ),
            ));
            continue;
        }

        let hash = desired_hash(desired, host_root, name, spec);
        let mut fields = compare(
            &desired_view(spec, &binds(desired, host_root, spec)),
            &live.view,
        );
        match &image_id {
            Some(id) if *id != live.image_id => fields.push(FieldChange::changed(
                "spec.image",
                short(&live.image_id),
                format!("{} ({})", spec.image, short(id)),
            )),
            None => fields.push(FieldChange::changed(
                "spec.image",
                short(&live.image_id),
                format!("{} (not present locally)", spec.image),
            )),
            _ => {}
        }
        if live.config_hash() != Some(hash.as_str()) {
            fields.push(FieldChange::changed(
                format!("metadata.labels[{HASH_LABEL}]"),
                live.config_hash().map(short).unwrap_or("(none)"),
                short(&hash),
            ));
        }
        for (var, value) in &spec.environment {
            let Some(param) = &value.from_parameter else {
                continue;
            };
            // Only a secret we can read can be verified; an unreadable one is reported when
            // (and only when) the container must be created.
            if let Some(Ok(secret)) = obs.secrets.get(param)
                && live.env.0.get(var) != Some(secret)
            {
                fields.push(FieldChange::secret(format!("spec.environment.{var}")));
            }
        }
        let mut reasons = Vec::new();
        if !fields.is_empty() {
            reasons.push("its configuration differs".to_string());
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
            ops.extend(launch);
            out.steps.push(Step {
                change: Change::new(res.id.clone(), Action::Replace)
                    .with_fields(fields)
                    .because(format!("recreate: {}", reasons.join("; "))),
                ops,
            });
            continue;
        }
        match live.status.as_str() {
            "running" => out.conditions.push(match live.health.as_deref() {
                Some("unhealthy") => ready(
                    &res.id,
                    ConditionStatus::False,
                    "HealthCheckFailing",
                    format!(
                        "health check failing: {}",
                        live.health_output.as_deref().unwrap_or("no output")
                    ),
                ),
                Some("starting") => ready(
                    &res.id,
                    ConditionStatus::Unknown,
                    "HealthCheckStarting",
                    "health check has not passed yet".into(),
                ),
                _ => ready(&res.id, ConditionStatus::True, "Running", "running".into()),
            }),
            "created" | "exited" => out.steps.push(Step {
                change: Change::new(res.id.clone(), Action::Update)
                    .with_fields(vec![FieldChange::changed("state", &live.status, "running")])
                    .because(if live.status == "exited" {
                        format!("it exited with code {}", live.exit_code)
                    } else {
                        "it was never started".to_string()
                    }),
                ops: vec![
                    HostOp::StartContainer {
                        name: name.to_string(),
                    },
                    HostOp::WaitReady {
                        name: name.to_string(),
                    },
                ],
            }),
            other => out.conditions.push(ready(
                &res.id,
                ConditionStatus::False,
                "NotRunning",
                format!("the container is {other} (exit code {})", live.exit_code),
            )),
        }
    }

    // Live policy: our own containers (with their declared root allowance) and unmanaged
    // ones, which are reported and never touched. Other stacks' containers are theirs.
    for live in &obs.containers {
        match live.stack() {
            None => out.violations.extend(crate::policy::check_container(
                &format!("docker container {}", live.name),
                &live.as_spec(None),
            )),
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
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        ConfigFileSpec, Mode, ParameterSpec, Resource, SourceLocation, Spec, StackSpec,
    };
    use serde_json::json;

    const ROOT: &str = "/srv/obs";
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

    /// One file mounted by one container, which takes a secret from a Parameter.
    fn desired() -> Desired {
        let stack: Result<StackSpec, _> = serde_json::from_value(json!({
            "project": "p", "environment": "local", "region": "us-east-1", "enabled": true,
            "domain": "localhost", "host": {"instanceType": "t3.medium", "memoryBudget": "3G"}
        }));
        let file: Result<ConfigFileSpec, _> = serde_json::from_value(json!({
            "path": "svc/config.yaml", "content": "a: 1\n", "owner": 10001, "group": 10001, "mode": "0640"
        }));
        let param: Result<ParameterSpec, _> = serde_json::from_value(json!({
            "name": "/p/local/secret", "valueFrom": {"env": "SECRET"}
        }));
        let svc: Result<ContainerSpec, _> = serde_json::from_value(json!({
            "image": "stub:local", "user": "10001:10001", "securityOpt": ["no-new-privileges"],
            "memory": "64M", "environment": {"PASSWORD": {"fromParameter": "secret"}},
            "mounts": [{"configFile": "cfg", "target": "/etc/svc.yaml", "readOnly": true}]
        }));
        let (Ok(stack), Ok(file), Ok(param), Ok(svc)) = (stack, file, param, svc) else {
            panic!("test specs parse");
        };
        Desired {
            stack_name: "obs".into(),
            stack,
            environment: "local".into(),
            resources: vec![
                resource(Kind::Parameter, "secret", Spec::Parameter(param)),
                resource(Kind::ConfigFile, "cfg", Spec::ConfigFile(file)),
                resource(Kind::Container, "svc", Spec::Container(Box::new(svc))),
            ],
        }
    }

    fn spec_of(d: &Desired) -> &ContainerSpec {
        d.containers()
            .map(|(_, s)| s)
            .next()
            .unwrap_or_else(|| panic!("one container"))
    }

    /// What the host looks like right after a successful apply of [`desired`].
    fn converged(d: &Desired) -> HostObserved {
        let root = Path::new(ROOT);
        let spec = spec_of(d);
        let hash = desired_hash(d, root, "svc", spec);
        let mut env = BTreeMap::new();
        env.insert("PASSWORD".to_string(), "pw".to_string());
        let live = LiveContainer {
            id: "c1".into(),
            name: "svc".into(),
            labels: labels(d, spec, &hash),
            status: "running".into(),
            image_id: IMAGE_ID.into(),
            view: desired_view(spec, &binds(d, root, spec)),
            env: super::super::docker::Env(env),
            ..Default::default()
        };
        let mut obs = HostObserved::default();
        obs.files.insert(
            "cfg".into(),
            FileState::File {
                sha256: crate::provider::host::hash::sha256_hex(b"a: 1\n"),
                uid: 10001,
                gid: 10001,
                mode: 0o640,
            },
        );
        obs.containers.push(live);
        obs.images
            .insert("stub:local".into(), Some(IMAGE_ID.into()));
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
            ["create ConfigFile/cfg", "create Container/svc"]
        );
        assert!(matches!(p.steps[1].ops[0], HostOp::EnsureImage { .. }));
    }

    #[test]
    fn a_root_copy_with_copied_labels_is_replaced() {
        let d = desired();
        let mut obs = converged(&d);
        obs.containers[0].view.user = "0".into();
        obs.containers[0].view.privileged = true;
        let p = run(&d, &obs);
        assert_eq!(summary(&p), ["replace Container/svc"]);
        let paths: Vec<&str> = p.steps[0]
            .change
            .fields
            .iter()
            .map(|f| f.path.as_str())
            .collect();
        assert_eq!(paths, ["spec.user", "spec.privileged"]);
        assert!(matches!(&p.steps[0].ops[1], HostOp::RemoveContainer { id, .. } if id == "c1"));
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
        assert_eq!(p.steps[0].ops, [HostOp::SetMode { file: "cfg".into() }]);
    }

    #[test]
    fn a_stopped_container_is_started_not_recreated() {
        let d = desired();
        let mut obs = converged(&d);
        obs.containers[0].status = "exited".into();
        let p = run(&d, &obs);
        assert_eq!(summary(&p), ["update Container/svc"]);
        assert!(matches!(p.steps[0].ops[0], HostOp::StartContainer { .. }));
    }

    #[test]
    fn a_different_secret_is_shown_without_its_value() {
        let d = desired();
        let mut obs = converged(&d);
        obs.containers[0]
            .env
            .0
            .insert("PASSWORD".into(), "admin".into());
        let p = run(&d, &obs);
        let field = &p.steps[0].change.fields[0];
        assert!(field.sensitive && field.old.is_none() && field.new.is_none());
        // An unreadable secret cannot be verified: no change is made up for it.
        obs.secrets.0.insert("secret".into(), Err("unset".into()));
        assert!(run(&d, &obs).steps.is_empty());
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
        obs.images
            .insert("stub:local".into(), Some("sha256:fedcba9876543210".into()));
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
}
