//! The bundle: one deterministic archive (tar, gzip) of everything an environment's desired
//! state reads: its manifests, the environment's values (`_defaults` and its own), every
//! ConfigFile `source:` and the series catalogue beside the dashboards (validation reads it). Entries are sorted, with fixed times, owners and modes, and the gzip
//! header carries no time or name, so the same tree always gives the same bytes and digest.
//! A bundle is only built from manifests that validate, exactly as `stackwarden validate`
//! checks them. Secret files (a Parameter's `valueFrom.file`, a receiver's password file) are
//! not part of it: they stay on the host, by design.

use crate::manifest::{self, files, repository::Repository};
use sha2::Digest;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// The entry describing the bundle, at its root.
pub const INDEX_ENTRY: &str = "stackwarden-bundle.json";
/// The bundle format this build writes and reads.
pub const FORMAT: u32 = 1;

/// The index entry: where the manifests are inside the bundle, and for which environment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    /// [`FORMAT`].
    pub format: u32,
    /// The environment whose values it carries.
    pub env: String,
    /// The manifests directory, relative to the bundle's root (`manifests`).
    pub manifests: String,
}

/// A built bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The archive (tar.gz).
    pub bytes: Vec<u8>,
    /// Lowercase hex SHA-256 of `bytes`.
    pub sha256: String,
    /// The files in it, by their path inside it, sorted (the index first excluded).
    pub files: Vec<String>,
    /// The files it was read from, on disk, in the order of `files`: what a label saying
    /// which commit it is must match (`provenance`).
    pub read_from: Vec<PathBuf>,
    /// The repository root it was built from.
    pub root: PathBuf,
    /// The index.
    pub index: Index,
}

/// Why a bundle was not built.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The manifests do not validate: nothing is bundled.
    #[error("the manifests do not validate, so nothing was bundled")]
    Invalid(#[source] manifest::LoadError),
    /// The manifests load, but the Grafana content they ship does not check.
    #[error("the Grafana content does not check, so nothing was bundled:\n{0}")]
    Content(manifest::Diagnostics),
    /// A file changed or vanished between validation and bundling, or cannot be read.
    #[error("reading {path} for the bundle: {problem}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        problem: files::ReadProblem,
    },
    /// The repository root could not be resolved.
    #[error("resolving the repository root of {path}: {source}")]
    Root {
        /// The manifests directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A path cannot be represented inside the bundle.
    #[error("{path}: {why}")]
    Path {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// Writing the archive failed (in memory: only a path the tar format cannot hold).
    #[error("writing the archive entry {entry}: {source}")]
    Archive {
        /// The entry.
        entry: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// `a/b/../c` → `a/c`, refusing a path that climbs above its start or is absolute.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

fn entry_name(path: &Path) -> Option<String> {
    let text = path.to_str()?;
    (!text.is_empty()).then(|| text.to_string())
}

/// Validates the manifests in `dir` for `env` (exactly as `stackwarden validate` does) and
/// builds the bundle of every file that desired state reads.
pub fn build(dir: &Path, env: Option<&str>, root: Option<&Path>) -> Result<Bundle, BundleError> {
    let loaded = manifest::load_in(dir, env, root).map_err(BundleError::Invalid)?;
    let desired = &loaded.desired;
    let content = crate::grafana::check(desired);
    if !content.diagnostics.is_empty() {
        return Err(BundleError::Content(manifest::Diagnostics(
            content.diagnostics,
        )));
    }
    let repo = Repository::discover(dir, root).map_err(|source| BundleError::Root {
        path: dir.to_path_buf(),
        source,
    })?;
    let canonical = std::fs::canonicalize(dir).map_err(|source| BundleError::Root {
        path: dir.to_path_buf(),
        source,
    })?;
    let manifests_rel = canonical
        .strip_prefix(repo.root())
        .map(Path::to_path_buf)
        .map_err(|_| BundleError::Path {
            path: dir.to_path_buf(),
            why: format!(
                "the manifests directory is outside the repository root {}",
                repo.root().display()
            ),
        })?;
    let manifests_name = entry_name(&manifests_rel).unwrap_or_else(|| ".".to_string());

    // Archive path → the file to read. Manifests keep their place under the manifests
    // directory as walked; a source lands where the loader will look for it, relative to its
    // manifest's place in the bundle (its content is the file it resolves to).
    let mut wanted: BTreeMap<String, (PathBuf, files::FileRole)> = BTreeMap::new();
    let in_bundle = |walked: &Path| -> Result<PathBuf, BundleError> {
        let rel = walked.strip_prefix(dir).map_err(|_| BundleError::Path {
            path: walked.to_path_buf(),
            why: "not under the manifests directory".to_string(),
        })?;
        normalize(&manifests_rel.join(rel)).ok_or_else(|| BundleError::Path {
            path: walked.to_path_buf(),
            why: "climbs out of the repository".to_string(),
        })
    };
    let walk = files::manifest_files(dir, manifest::ENVIRONMENTS_DIR).map_err(|source| {
        BundleError::Root {
            path: dir.to_path_buf(),
            source,
        }
    })?;
    let mut manifest_entries: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
    for file in &walk.files {
        let at = in_bundle(file)?;
        manifest_entries.insert(file.clone(), at.clone());
        if let Some(name) = entry_name(&at) {
            wanted.insert(name, (file.clone(), files::FileRole::Manifest));
        }
    }
    let env_dir = dir.join(manifest::ENVIRONMENTS_DIR);
    for name in ["_defaults".to_string(), desired.environment.clone()] {
        let file = env_dir.join(format!("{name}.yaml"));
        if file.is_file() {
            let at = in_bundle(&file)?;
            if let Some(name) = entry_name(&at) {
                wanted.insert(name, (file, files::FileRole::Values));
            }
        }
    }
    for (resource, spec) in desired.config_files() {
        let Some(source) = &spec.source else { continue };
        let manifest_file = &resource.source.file;
        let base = manifest_file.parent().unwrap_or(Path::new("."));
        let resolved = match repo.confine(base, source) {
            Ok(Some(resolved)) => resolved,
            // The load just read it: it vanished or was moved out since.
            _ => {
                return Err(BundleError::Path {
                    path: base.join(source),
                    why: "changed since it was validated; bundle again".to_string(),
                });
            }
        };
        let manifest_at = manifest_entries
            .iter()
            .find(|(walked, _)| walked.as_path() == manifest_file.as_path())
            .map(|(_, at)| at.clone())
            .ok_or_else(|| BundleError::Path {
                path: manifest_file.clone(),
                why: "the manifest declaring a source is not among the walked files".to_string(),
            })?;
        let at = normalize(
            &manifest_at
                .parent()
                .unwrap_or(Path::new(""))
                .join(Path::new(source)),
        )
        .ok_or_else(|| BundleError::Path {
            path: base.join(source),
            why: "climbs above the repository root".to_string(),
        })?;
        if let Some(name) = entry_name(&at) {
            wanted.insert(name, (resolved, files::FileRole::Source));
        }
        // Dashboards are checked against the series catalogue beside them: validation on the
        // host needs it as much as here.
        if spec.path.starts_with(crate::grafana::DASHBOARDS_DIR) {
            let beside = Path::new(source)
                .parent()
                .unwrap_or(Path::new(""))
                .join(crate::grafana::CATALOGUE_FILE);
            let beside_text = beside.to_string_lossy();
            if let Ok(Some(catalogue)) = repo.confine(base, &beside_text)
                && let Some(at) = at.parent().map(|d| d.join(crate::grafana::CATALOGUE_FILE))
                && let Some(name) = entry_name(&at)
            {
                wanted.insert(name, (catalogue, files::FileRole::Source));
            }
        }
    }

    let index = Index {
        format: FORMAT,
        env: desired.environment.clone(),
        manifests: manifests_name,
    };
    let mut contents: Vec<(String, Vec<u8>)> = Vec::with_capacity(wanted.len() + 1);
    // Serializing our own plain struct cannot fail.
    contents.push((
        INDEX_ENTRY.to_string(),
        serde_json::to_vec_pretty(&index).unwrap_or_default(),
    ));
    let mut reader = files::Reader::default();
    for (name, (path, role)) in &wanted {
        let text = reader
            .read(path, *role)
            .map_err(|problem| BundleError::Read {
                path: path.clone(),
                problem,
            })?;
        contents.push((name.clone(), text.into_bytes()));
    }
    let bytes = archive(&contents)?;
    let sha256 = hex::encode(sha2::Sha256::digest(&bytes));
    let (files, read_from) = wanted
        .into_iter()
        .map(|(name, (path, _))| (name, path))
        .unzip();
    Ok(Bundle {
        bytes,
        sha256,
        files,
        read_from,
        root: repo.root().to_path_buf(),
        index,
    })
}

/// The archive of `entries` (already in their order): ustar/GNU headers with mode 0644,
/// owner 0:0, time 0; gzip with no time, no name and a fixed OS byte.
pub fn archive(entries: &[(String, Vec<u8>)]) -> Result<Vec<u8>, BundleError> {
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), flate2::Compression::best());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    for (name, data) in entries {
        let err = |source| BundleError::Archive {
            entry: name.clone(),
            source,
        };
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        tar.append_data(&mut header, name, data.as_slice())
            .map_err(err)?;
    }
    let gz = tar.into_inner().map_err(|source| BundleError::Archive {
        entry: "(end)".to_string(),
        source,
    })?;
    gz.finish().map_err(|source| BundleError::Archive {
        entry: "(gzip trailer)".to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_entries_archive_to_the_same_bytes() {
        let entries = vec![
            ("a.yaml".to_string(), b"a: 1\n".to_vec()),
            ("b/c.json".to_string(), b"{}".to_vec()),
        ];
        let one = archive(&entries).expect("archive");
        let two = archive(&entries).expect("archive");
        assert_eq!(one, two);
        let mut other = entries.clone();
        other[0].1 = b"a: 2\n".to_vec();
        assert_ne!(archive(&other).expect("archive"), one);
    }

    #[test]
    fn paths_are_normalized_and_never_climb_out() {
        assert_eq!(
            normalize(Path::new("manifests/host/../../config/x.yaml")),
            Some(PathBuf::from("config/x.yaml"))
        );
        assert_eq!(normalize(Path::new("manifests/../../x")), None);
        assert_eq!(normalize(Path::new("/etc/passwd")), None);
    }
}
