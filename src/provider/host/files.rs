//! Config files and data directories under the host root: observe (content digest, owner,
//! mode), the pure per-file diff, and the writes (atomic replace, chown, chmod). Nothing here
//! talks to Docker.

use super::hash::sha256_hex;
use crate::model::{ConfigFileSpec, FileType};
use crate::plan::FieldChange;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What is on disk at a ConfigFile's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileState {
    /// Nothing there.
    Missing,
    /// A regular file.
    File {
        /// sha256 of the content, hex.
        sha256: String,
        /// Owner uid.
        uid: u32,
        /// Group gid.
        gid: u32,
        /// Permission bits (`0o7777` mask).
        mode: u32,
    },
    /// A directory.
    Directory {
        /// Owner uid.
        uid: u32,
        /// Group gid.
        gid: u32,
        /// Permission bits.
        mode: u32,
    },
    /// Something else (a symlink, a socket): never followed, never written through.
    Other,
}

/// A file operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Reading the current state failed.
    #[error("reading {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Writing failed.
    #[error("{op} {path}: {source}")]
    Write {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The spec's mode does not parse (validation should have caught it).
    #[error("mode `{0}` is not octal")]
    Mode(String),
}

/// The absolute path of a ConfigFile (or a hostPath) under the host root. Leading `/` are
/// stripped so a path can never escape the root by being absolute.
pub fn resolve(host_root: &Path, relative: &str) -> PathBuf {
    host_root.join(relative.trim_start_matches('/'))
}

/// The source of a `hostPath` mount: an absolute path is the host's own (`/proc`, `/sys` for
/// the exporters); a relative one lives under the host root like the config files.
pub fn host_path(host_root: &Path, path: &str) -> PathBuf {
    if path.starts_with('/') {
        PathBuf::from(path)
    } else {
        host_root.join(path)
    }
}

/// Reads what is at `path` without following symlinks.
pub fn observe(path: &Path) -> Result<FileState, FileError> {
    let read_err = |source| FileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FileState::Missing),
        Err(e) => return Err(read_err(e)),
    };
    let (uid, gid, mode) = (meta.uid(), meta.gid(), meta.mode() & 0o7777);
    if meta.is_dir() {
        Ok(FileState::Directory { uid, gid, mode })
    } else if meta.is_file() {
        let bytes = std::fs::read(path).map_err(read_err)?;
        Ok(FileState::File {
            sha256: sha256_hex(&bytes),
            uid,
            gid,
            mode,
        })
    } else {
        Ok(FileState::Other)
    }
}

/// The digest a ConfigFile's content must have.
pub fn desired_sha256(spec: &ConfigFileSpec) -> String {
    sha256_hex(spec.content.as_deref().unwrap_or("").as_bytes())
}

/// How one ConfigFile differs from disk. Pure.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FileDrift {
    /// Nothing (or the wrong type) is there: write or create it whole.
    pub missing: bool,
    /// The content differs (files only).
    pub content: bool,
    /// Owner or group differs.
    pub owner: bool,
    /// Mode differs.
    pub mode: bool,
    /// What the plan shows.
    pub fields: Vec<FieldChange>,
}

impl FileDrift {
    /// True when nothing differs.
    pub fn is_clean(&self) -> bool {
        !(self.missing || self.content || self.owner || self.mode)
    }
}

fn short(sha: &str) -> String {
    format!("sha256:{}", sha.get(..12).unwrap_or(sha))
}

/// Compares a ConfigFile with what is on disk. Pure.
pub fn diff(spec: &ConfigFileSpec, live: &FileState) -> FileDrift {
    let want_mode = spec.mode_bits().unwrap_or(0o644);
    let mut drift = FileDrift::default();
    let (uid, gid, mode) = match (spec.kind, live) {
        (
            FileType::File,
            FileState::File {
                sha256,
                uid,
                gid,
                mode,
            },
        ) => {
            let want = desired_sha256(spec);
            if *sha256 != want {
                drift.content = true;
                drift.fields.push(FieldChange::changed(
                    "spec.content",
                    short(sha256),
                    short(&want),
                ));
            }
            (*uid, *gid, *mode)
        }
        (FileType::Directory, FileState::Directory { uid, gid, mode }) => (*uid, *gid, *mode),
        _ => {
            drift.missing = true;
            return drift;
        }
    };
    if (uid, gid) != (spec.owner, spec.group) {
        drift.owner = true;
        drift.fields.push(FieldChange::changed(
            "spec.owner",
            format!("{uid}:{gid}"),
            format!("{}:{}", spec.owner, spec.group),
        ));
    }
    if mode != want_mode {
        drift.mode = true;
        drift.fields.push(FieldChange::changed(
            "spec.mode",
            format!("{mode:04o}"),
            format!("{want_mode:04o}"),
        ));
    }
    drift
}

fn write_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> FileError + 'a {
    move |source| FileError::Write {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Replaces `path` atomically with `content`, owned `uid:gid` with `mode`: a temp file in
/// the same directory gets the final owner and mode first, then is renamed over the target,
/// so a reader (or a container restart) never sees a partial or wrongly-owned file.
pub fn write_atomic(
    path: &Path,
    content: &[u8],
    uid: u32,
    gid: u32,
    mode: u32,
) -> Result<(), FileError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(write_err("creating directory", dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.stackwarden-{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(write_err("creating", &tmp))?;
        f.write_all(content).map_err(write_err("writing", &tmp))?;
        f.sync_all().map_err(write_err("syncing", &tmp))?;
        std::os::unix::fs::chown(&tmp, Some(uid), Some(gid)).map_err(write_err("chown", &tmp))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
            .map_err(write_err("chmod", &tmp))?;
        std::fs::rename(&tmp, path).map_err(write_err("renaming into place", path))
    })();
    if result.is_err() {
        // Best effort: a stale temp file is harmless but untidy.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Creates a directory (and its parents) if missing; owner and mode are set separately.
pub fn make_dir(path: &Path) -> Result<(), FileError> {
    std::fs::create_dir_all(path).map_err(write_err("creating directory", path))
}

/// Sets owner and group.
pub fn set_owner(path: &Path, uid: u32, gid: u32) -> Result<(), FileError> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(write_err("chown", path))
}

/// Sets permission bits.
pub fn set_mode(path: &Path, mode: u32) -> Result<(), FileError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(write_err("chmod", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(content: &str) -> ConfigFileSpec {
        ConfigFileSpec {
            path: "loki/config.yaml".into(),
            kind: FileType::File,
            content: Some(content.into()),
            source: None,
            template: false,
            owner: 10001,
            group: 10001,
            mode: "0640".into(),
        }
    }

    #[test]
    fn identical_file_has_no_drift() {
        let live = FileState::File {
            sha256: sha256_hex(b"x"),
            uid: 10001,
            gid: 10001,
            mode: 0o640,
        };
        assert!(diff(&spec("x"), &live).is_clean());
    }

    #[test]
    fn content_owner_and_mode_are_each_reported() {
        let live = FileState::File {
            sha256: sha256_hex(b"edited"),
            uid: 0,
            gid: 0,
            mode: 0o666,
        };
        let d = diff(&spec("x"), &live);
        assert!(d.content && d.owner && d.mode && !d.missing);
        let paths: Vec<_> = d.fields.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["spec.content", "spec.owner", "spec.mode"]);
        assert_eq!(d.fields[2].old.as_deref(), Some("0666"));
    }

    #[test]
    fn a_directory_where_a_file_belongs_counts_as_missing() {
        let live = FileState::Directory {
            uid: 10001,
            gid: 10001,
            mode: 0o640,
        };
        assert!(diff(&spec("x"), &live).missing);
    }

    #[test]
    fn absolute_paths_stay_under_the_root() {
        assert_eq!(
            resolve(Path::new("/r"), "/etc/passwd"),
            PathBuf::from("/r/etc/passwd")
        );
    }

    #[test]
    fn atomic_write_sets_content_owner_and_mode() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("a/b.txt");
        let uid = std::fs::metadata(dir.path())?.uid();
        let gid = std::fs::metadata(dir.path())?.gid();
        write_atomic(&path, b"hello", uid, gid, 0o600)?;
        assert_eq!(std::fs::read(&path)?, b"hello");
        match observe(&path)? {
            FileState::File { mode, .. } => assert_eq!(mode, 0o600),
            other => panic!("expected a file, got {other:?}"),
        }
        Ok(())
    }
}
