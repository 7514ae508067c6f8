//! The host's planned writes as plain data: each op holds exactly what apply will write (a
//! file's bytes, owner and mode at its resolved path; a container's complete create body),
//! rendered once by `diff`, so that apply carries out the plan it was given and never reads
//! the desired state again (a saved plan, as Terraform's). Building one does no I/O; a
//! secret's bytes never show in `Debug`, and nothing here is `Serialize`.

use super::docker::ImageInfo;
use super::view::ContainerView;
use crate::model::HealthCheck;
use bollard::models::ContainerCreateBody;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

/// One typed write on the host.
#[derive(Debug, Clone, PartialEq)]
pub enum HostOp {
    /// Before a declared container's step: wait for the steps it depends on, and refuse
    /// when a ConfigFile it mounts could not be written (its first op; no write itself).
    Await(Prerequisites),
    /// Write a ConfigFile's content atomically, with its owner and mode.
    WriteFile(FileWrite),
    /// Create a directory ConfigFile, with its owner and mode.
    MakeDirectory(DirectoryCreate),
    /// Set a ConfigFile's owner and group.
    SetOwner(OwnerSet),
    /// Set a ConfigFile's mode.
    SetMode(ModeSet),
    /// Remove a file stackwarden wrote for a ConfigFile no longer declared (the file or a
    /// link at its path, never a directory, never a link's target).
    RemoveFile(FileRemoval),
    /// Make sure an image is present, pulling it only when missing.
    EnsureImage {
        /// Image reference.
        image: String,
        /// True when the plan found it on the engine: nothing to pull.
        present: bool,
    },
    /// Create a bridge network when missing.
    EnsureNetwork {
        /// Network name.
        network: String,
        /// Its labels (the owning stack).
        labels: BTreeMap<String, String>,
    },
    /// Remove a container (stopping it).
    RemoveContainer {
        /// Container name.
        name: String,
        /// Engine id (the one observed: never a newer container of the same name).
        id: String,
    },
    /// Create a container from its rendered body.
    CreateContainer(Box<ContainerCreate>),
    /// Start a container.
    StartContainer {
        /// Container name.
        name: String,
    },
    /// Restart a container whose health check fails.
    RestartContainer {
        /// Container name.
        name: String,
        /// Engine id of the one observed (never this process's own container).
        id: String,
    },
    /// Unpause a container paused by hand.
    UnpauseContainer {
        /// Container name.
        name: String,
    },
    /// Wait until running (and healthy, with a health check), within a bounded time.
    WaitReady {
        /// Container name.
        name: String,
        /// Its declared health check, probed while waiting.
        check: Option<HealthCheck>,
    },
}

/// What a declared container's step needs before it runs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Prerequisites {
    /// The container.
    pub container: String,
    /// ConfigFiles it mounts: when one of their steps fails, this step is blocked by that
    /// failure (a recreate would start it on the old file again, or on none).
    pub files: Vec<String>,
    /// The `dependsOn` edges reachable from this container, itself included: the step
    /// waits for its nearest ancestors that have a step in this apply, which only the apply
    /// knows (the daemon may hold some back).
    pub depends_on: BTreeMap<String, Vec<String>>,
}

impl Prerequisites {
    /// The containers whose steps this one waits for: the nearest ancestors in the
    /// `dependsOn` graph that have a step this apply (one without a step already runs; the
    /// wait goes through it to what it depends on).
    pub fn waits_for(&self, with_steps: &BTreeSet<String>) -> BTreeSet<String> {
        let deps_of = |n: &str| self.depends_on.get(n).cloned().unwrap_or_default();
        let mut out = BTreeSet::new();
        let mut seen = BTreeSet::new();
        let mut todo = deps_of(&self.container);
        // `seen` bounds the walk even if validation ever let a cycle through.
        while let Some(d) = todo.pop() {
            if !seen.insert(d.clone()) {
                continue;
            }
            if with_steps.contains(&d) {
                out.insert(d);
            } else {
                todo.extend(deps_of(&d));
            }
        }
        out
    }

    /// The container's depth in the `dependsOn` graph (0 = depends on nothing): steps
    /// start in this order, so that a dependency's step is scheduled before its dependents.
    pub fn level(&self) -> usize {
        depth(&self.container, &self.depends_on, 0)
    }
}

/// A container's depth in a `dependsOn` graph. Cycles are rejected by validation; the
/// bound stops them here anyway.
pub fn depth(name: &str, graph: &BTreeMap<String, Vec<String>>, seen: usize) -> usize {
    if seen > graph.len() {
        return 0;
    }
    graph
        .get(name)
        .map(|ds| {
            ds.iter()
                .map(|d| 1 + depth(d, graph, seen + 1))
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// A ConfigFile's content as planned.
#[derive(Clone, PartialEq, Eq)]
pub enum Content {
    /// Bytes from the manifest: `Debug` shows their length and digest.
    Plain(Vec<u8>),
    /// A Parameter's value: `Debug` shows only which Parameter.
    Secret {
        /// The Parameter it comes from.
        parameter: String,
        /// The value.
        bytes: Vec<u8>,
    },
    /// The value could not be read when planned: apply fails with this reason rather than
    /// write anything (it names the source, never a value).
    Unavailable(String),
}

impl Content {
    /// The bytes to write, or why there are none.
    pub fn bytes(&self) -> Result<&[u8], &str> {
        match self {
            Content::Plain(bytes) | Content::Secret { bytes, .. } => Ok(bytes),
            Content::Unavailable(why) => Err(why),
        }
    }
}

impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Content::Plain(bytes) => write!(
                f,
                "Plain({} bytes, sha256:{})",
                bytes.len(),
                super::hash::sha256_hex(bytes).get(..12).unwrap_or_default()
            ),
            // Neither length nor digest: a short password's digest can be brute-forced.
            Content::Secret { parameter, .. } => write!(f, "Secret(from Parameter/{parameter})"),
            Content::Unavailable(why) => f.debug_tuple("Unavailable").field(why).finish(),
        }
    }
}

/// The entry a written file leaves in the stack's record of files it wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The stack.
    pub stack: String,
    /// The path as declared, relative to the host root.
    pub path: String,
}

/// A ConfigFile's content written whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileWrite {
    /// ConfigFile name.
    pub file: String,
    /// Its path, resolved under the host root.
    pub path: PathBuf,
    /// What the record of written files gets; `None` for a path that is not a plain
    /// relative one (never recorded, so never removed for it).
    pub record: Option<Record>,
    /// The bytes.
    pub content: Content,
    /// Owner uid.
    pub owner: u32,
    /// Group gid.
    pub group: u32,
    /// Permission bits; `Err` holds the declared text that does not parse (validation
    /// refuses it: apply fails on it rather than guess).
    pub mode: Result<u32, String>,
}

/// A directory ConfigFile created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryCreate {
    /// ConfigFile name.
    pub file: String,
    /// Its path, resolved under the host root.
    pub path: PathBuf,
    /// Owner uid.
    pub owner: u32,
    /// Group gid.
    pub group: u32,
    /// Permission bits, as in [`FileWrite::mode`].
    pub mode: Result<u32, String>,
}

/// A ConfigFile's owner set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerSet {
    /// ConfigFile name.
    pub file: String,
    /// Its path, resolved under the host root.
    pub path: PathBuf,
    /// Owner uid.
    pub owner: u32,
    /// Group gid.
    pub group: u32,
}

/// A ConfigFile's mode set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeSet {
    /// ConfigFile name.
    pub file: String,
    /// Its path, resolved under the host root.
    pub path: PathBuf,
    /// Permission bits, as in [`FileWrite::mode`].
    pub mode: Result<u32, String>,
}

/// A file this stack wrote, removed with its undeclared ConfigFile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRemoval {
    /// The ConfigFile that wrote it.
    pub file: String,
    /// Its entry in the record (the path as recorded, relative to the host root).
    pub record: Record,
}

/// A container created from its rendered body.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerCreate {
    /// Container name.
    pub name: String,
    /// The create body: image, environment, binds, labels with the config hash, user,
    /// resources, restart policy, network, health check. Only the mount-identity label is
    /// added at create, from [`ContainerCreate::sources`]: it records what the engine binds
    /// at that moment (a file rewritten earlier in this apply is a new inode).
    pub body: ContainerCreateBody,
    /// `hostPath` directories under the host root, made when missing (the engine would
    /// make them root-owned 0755, or a directory where a file belongs).
    pub host_dirs: Vec<PathBuf>,
    /// Mounted ConfigFiles (name → path) that must be on disk before the create: a missing
    /// one would become a root-owned directory made by the engine.
    pub mounted_files: Vec<(String, PathBuf)>,
    /// Bind sources under the host root, by mount target: none may sit below a symlink,
    /// and each one's identity is recorded.
    pub sources: BTreeMap<String, PathBuf>,
    /// What a container already holding the name must look like to be adopted as this
    /// one: the view the plan compared against (mount identities filled in at create).
    pub expected: Box<ContainerView>,
    /// The image the plan found for the reference (`None`: not present when planned, and
    /// then a container holding the name is never adopted).
    pub image: Option<ImageInfo>,
    /// The owning stack.
    pub stack: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_waits_for_its_nearest_ancestors_that_have_a_step() {
        let edges = |v: &[(&str, &[&str])]| {
            v.iter()
                .map(|(n, ds)| (n.to_string(), ds.iter().map(|d| d.to_string()).collect()))
                .collect()
        };
        // grafana → loki → minio; loki has no step this apply, so grafana waits for minio.
        let pre = Prerequisites {
            container: "grafana".into(),
            files: Vec::new(),
            depends_on: edges(&[("grafana", &["loki"]), ("loki", &["minio"]), ("minio", &[])]),
        };
        let with_steps = ["grafana", "minio"].map(String::from).into();
        assert_eq!(pre.waits_for(&with_steps), ["minio".to_string()].into());
        let with_steps = ["grafana", "loki", "minio"].map(String::from).into();
        assert_eq!(pre.waits_for(&with_steps), ["loki".to_string()].into());
        assert_eq!(pre.level(), 2);
    }

    #[test]
    fn a_secret_never_shows_in_an_ops_debug_and_plain_content_shows_its_digest() {
        let op = HostOp::WriteFile(FileWrite {
            file: "pw".into(),
            path: "/srv/obs/pw".into(),
            record: None,
            content: Content::Secret {
                parameter: "admin-password".into(),
                bytes: b"hunter2-secret".to_vec(),
            },
            owner: 0,
            group: 0,
            mode: Ok(0o400),
        });
        let shown = format!("{op:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("Parameter/admin-password"), "{shown}");
        let plain = format!("{:?}", Content::Plain(b"a: 1\n".to_vec()));
        assert_eq!(plain, "Plain(5 bytes, sha256:37b128c59f1f)");
    }
}
