//! What each planned host op will write, rendered once from the desired state and the
//! observation: a file's bytes, owner and mode at its resolved path; a container's create
//! body with its config hash; the prerequisites of a container's step. The rendered op is
//! what apply carries out, so apply never derives anything from the desired state again.
//! Pure: no I/O (paths are resolved, never touched).

use super::super::HostObserved;
use super::super::docker::{ImageInfo, create_body};
use super::super::files;
use super::super::ledger;
use super::super::op::{
    ContainerCreate, Content, DirectoryCreate, FileRemoval, FileWrite, HostOp, ModeSet, OwnerSet,
    Prerequisites, Record,
};
use super::{binds, container, labels, mount_list};
use crate::model::ownership::{ENV_LABEL, STACK_LABEL};
use crate::model::{ConfigFileSpec, ContainerSpec, Desired};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A ConfigFile's declared mode as bits, or the text that does not parse.
fn mode(spec: &ConfigFileSpec) -> Result<u32, String> {
    spec.mode_bits().ok_or_else(|| spec.mode_text().to_string())
}

/// The bytes a ConfigFile must hold: its content, or its Parameter's value as observed (a
/// secret: when it cannot be read, the reason names where it should come from).
fn content(spec: &ConfigFileSpec, obs: &HostObserved) -> Content {
    match &spec.from_parameter {
        Some(param) => match obs.secrets.get(param) {
            Some(Ok(value)) => Content::Secret {
                parameter: param.clone(),
                bytes: value.as_bytes().to_vec(),
            },
            Some(Err(why)) => {
                Content::Unavailable(format!("content from Parameter/{param}: {why}"))
            }
            None => Content::Unavailable(format!("Parameter/{param} is not declared")),
        },
        None => Content::Plain(spec.content.as_deref().unwrap_or("").as_bytes().to_vec()),
    }
}

/// Writes a ConfigFile's content whole.
pub fn write_file(
    desired: &Desired,
    host_root: &Path,
    name: &str,
    spec: &ConfigFileSpec,
    obs: &HostObserved,
) -> HostOp {
    HostOp::WriteFile(FileWrite {
        file: name.to_string(),
        path: files::resolve(host_root, &spec.path),
        record: ledger::is_plain_relative(&spec.path).then(|| Record {
            stack: desired.stack_name.clone(),
            path: spec.path.clone(),
        }),
        content: content(spec, obs),
        owner: spec.owner,
        group: spec.group,
        mode: mode(spec),
    })
}

/// Creates a directory ConfigFile.
pub fn make_directory(host_root: &Path, name: &str, spec: &ConfigFileSpec) -> HostOp {
    HostOp::MakeDirectory(DirectoryCreate {
        file: name.to_string(),
        path: files::resolve(host_root, &spec.path),
        owner: spec.owner,
        group: spec.group,
        mode: mode(spec),
    })
}

/// Sets a ConfigFile's owner and group.
pub fn set_owner(host_root: &Path, name: &str, spec: &ConfigFileSpec) -> HostOp {
    HostOp::SetOwner(OwnerSet {
        file: name.to_string(),
        path: files::resolve(host_root, &spec.path),
        owner: spec.owner,
        group: spec.group,
    })
}

/// Sets a ConfigFile's mode.
pub fn set_mode(host_root: &Path, name: &str, spec: &ConfigFileSpec) -> HostOp {
    HostOp::SetMode(ModeSet {
        file: name.to_string(),
        path: files::resolve(host_root, &spec.path),
        mode: mode(spec),
    })
}

/// Removes a file the record says this stack wrote for `name`.
pub fn remove_file(desired: &Desired, name: &str, path: &str) -> HostOp {
    HostOp::RemoveFile(FileRemoval {
        file: name.to_string(),
        record: Record {
            stack: desired.stack_name.clone(),
            path: path.to_string(),
        },
    })
}

/// Creates a bridge network labelled with its stack.
pub fn ensure_network(desired: &Desired, network: &str) -> HostOp {
    HostOp::EnsureNetwork {
        network: network.to_string(),
        labels: BTreeMap::from([
            (STACK_LABEL.to_string(), desired.stack_name.clone()),
            (ENV_LABEL.to_string(), desired.environment.clone()),
        ]),
    }
}

/// Every container's `dependsOn`, by name.
pub fn graph(desired: &Desired) -> BTreeMap<String, Vec<String>> {
    desired
        .containers()
        .map(|(r, s)| {
            (
                r.id.name.clone(),
                s.depends_on.iter().map(|d| d.container.clone()).collect(),
            )
        })
        .collect()
}

/// What a declared container's step needs first: the files it mounts, and the part of the
/// `dependsOn` graph reachable from it.
pub fn prerequisites(
    graph: &BTreeMap<String, Vec<String>>,
    name: &str,
    spec: &ContainerSpec,
) -> HostOp {
    let mut reachable = BTreeMap::new();
    let mut todo = vec![name.to_string()];
    let mut seen = BTreeSet::new();
    while let Some(n) = todo.pop() {
        if !seen.insert(n.clone()) {
            continue;
        }
        let deps = graph.get(&n).cloned().unwrap_or_default();
        todo.extend(deps.iter().cloned());
        reachable.insert(n, deps);
    }
    HostOp::Await(Prerequisites {
        container: name.to_string(),
        files: spec
            .mounts
            .iter()
            .filter_map(|m| m.config_file.clone())
            .collect(),
        depends_on: reachable,
    })
}

/// Creates a declared container: its complete create body (labels with the stack and the
/// config `hash`), what must be on disk first, and the view it must match to be adopted.
pub fn create_container(
    desired: &Desired,
    host_root: &Path,
    name: &str,
    spec: &ContainerSpec,
    image: Option<&ImageInfo>,
    hash: &str,
) -> HostOp {
    let binds = binds(desired, host_root, spec);
    let labels = labels(desired, spec, hash);
    let host_dirs = spec
        .mounts
        .iter()
        .filter_map(|m| m.host_path.as_deref())
        .filter(|p| !p.starts_with('/'))
        .map(|p| files::host_path(host_root, p))
        .collect();
    let mounted_files = spec
        .mounts
        .iter()
        .filter_map(|m| m.config_file.as_ref())
        .filter_map(|f| {
            let (_, file) = desired.config_files().find(|(r, _)| r.id.name == *f)?;
            Some((f.clone(), files::resolve(host_root, &file.path)))
        })
        .collect();
    let sources = mount_list(desired, host_root, spec)
        .into_iter()
        .filter(|(_, _, _, managed)| *managed)
        .map(|(source, target, ..)| (target, source.into()))
        .collect();
    let expected =
        container::desired_view(name, spec, image, &binds, BTreeMap::new(), labels.clone());
    HostOp::CreateContainer(Box::new(ContainerCreate {
        name: name.to_string(),
        body: create_body(name, spec, &binds, &labels),
        host_dirs,
        mounted_files,
        sources,
        expected: Box::new(expected),
        image: image.cloned(),
        stack: desired.stack_name.clone(),
    }))
}
