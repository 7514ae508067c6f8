//! Config files and data directories under the host root: observe (content digest, owner,
//! mode) and the writes (atomic replace, chown, chmod). Nothing here talks to Docker, and
//! nothing here follows a symlink: the host root may hold links planted by hand, and a write
//! as root through one would land anywhere (lchown, O_NOFOLLOW, checks with
//! `symlink_metadata`). The comparison is `diff::files`.

use super::hash::sha256_hex;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
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
    /// A symlink: never followed, never written through; replaced by the real thing.
    Symlink {
        /// Where it points, for the plan.
        target: String,
    },
    /// Something else (a socket, a device): never written through.
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
    /// A component of the path is a symlink (or not a directory): refusing to write through.
    #[error("{path} is a symlink or not a directory; refusing to write through it")]
    NotADirectory {
        /// The offending component.
        path: PathBuf,
    },
}

impl crate::provider::Classify for FileError {
    fn class(&self) -> crate::provider::ErrorClass {
        use crate::provider::ErrorClass;
        match self {
            FileError::Read { source, .. } | FileError::Write { source, .. } => {
                match source.kind() {
                    std::io::ErrorKind::PermissionDenied
                    | std::io::ErrorKind::ReadOnlyFilesystem
                    | std::io::ErrorKind::InvalidInput => ErrorClass::Permanent,
                    std::io::ErrorKind::NotFound => ErrorClass::NotFound,
                    _ => ErrorClass::Transient,
                }
            }
            FileError::Mode(_) | FileError::NotADirectory { .. } => ErrorClass::Permanent,
        }
    }
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
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(path).map_err(read_err)?;
        Ok(FileState::Symlink {
            target: target.display().to_string(),
        })
    } else if meta.is_dir() {
        Ok(FileState::Directory { uid, gid, mode })
    } else if meta.is_file() {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(read_err)?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut bytes).map_err(read_err)?;
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

/// Reads what is at `path` under `root`; a symlinked directory on the way there counts as
/// a symlink at the path itself: `symlink_metadata` only spares the last component, and what
/// lies behind a linked parent is not ours to judge or fix.
pub fn observe_under(root: &Path, path: &Path) -> Result<FileState, FileError> {
    match check_parents(root, path) {
        Err(FileError::NotADirectory { path: parent }) => Ok(FileState::Symlink {
            target: format!("a linked parent directory, {}", parent.display()),
        }),
        _ => observe(path),
    }
}

/// The identity (`dev:inode`) of what is at `path`, not following a symlink; `missing`
/// when nothing is there. A bind mount holds the inode it was given: a new identity means
/// the container still sees the old one.
pub fn identity(path: &Path) -> String {
    match std::fs::symlink_metadata(path) {
        Ok(m) => format!("{}:{}", m.dev(), m.ino()),
        Err(_) => "missing".to_string(),
    }
}

/// Checks that every directory from `root` (exclusive) down to `path`'s parent is a real
/// directory or absent, never a symlink: a write below a linked directory would land
/// outside the root.
pub fn check_parents(root: &Path, path: &Path) -> Result<(), FileError> {
    let Ok(rel) = path.strip_prefix(root) else {
        return Ok(());
    };
    let mut at = root.to_path_buf();
    let parents: Vec<_> = rel.components().collect();
    for c in parents.iter().take(parents.len().saturating_sub(1)) {
        at.push(c);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(FileError::NotADirectory { path: at }),
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

/// Removes a symlink or other non-directory at `path` (the link itself, never its target).
pub fn remove_non_directory(path: &Path) -> Result<(), FileError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.is_dir() => std::fs::remove_file(path).map_err(write_err("removing", path)),
        _ => Ok(()),
    }
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
    // A stale temp file (or a link planted at its name) goes first: create_new never
    // follows or reuses one.
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        // Born owner-only: a secret is never readable by others, not even for a moment.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(write_err("creating a new copy of", path))?;
        f.write_all(content)
            .map_err(write_err("writing a new copy of", path))?;
        f.sync_all()
            .map_err(write_err("syncing a new copy of", path))?;
        // The error names the file people know, not the temporary copy.
        std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
            .map_err(write_err("chown of a new copy of", path))?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(write_err("chmod of a new copy of", path))?;
        std::fs::rename(&tmp, path).map_err(write_err("renaming into place", path))
    })();
    if result.is_err() {
        // Best effort: a stale temp file is harmless but untidy.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Creates a directory (and its parents) if missing; owner and mode are set separately.
/// A symlink at the path is an error here: the caller removes it first, knowingly.
pub fn make_dir(path: &Path) -> Result<(), FileError> {
    std::fs::create_dir_all(path).map_err(write_err("creating directory", path))?;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        _ => Err(FileError::NotADirectory {
            path: path.to_path_buf(),
        }),
    }
}

/// Sets owner and group of the path itself, never of a symlink's target (lchown).
pub fn set_owner(path: &Path, uid: u32, gid: u32) -> Result<(), FileError> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(write_err("chown", path))
}

/// Sets permission bits through a descriptor opened with O_NOFOLLOW: a symlink at the path
/// fails instead of handing its target's mode over.
pub fn set_mode(path: &Path, mode: u32) -> Result<(), FileError> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(write_err("opening for chmod", path))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(write_err("chmod", path))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        write_atomic(&path, b"hello", uid, gid, 0o400)?;
        assert_eq!(std::fs::read(&path)?, b"hello");
        match observe(&path)? {
            FileState::File { mode, .. } => assert_eq!(mode, 0o400),
            other => panic!("expected a file, got {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn owner_and_mode_fixes_never_follow_a_symlink() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let target = dir.path().join("elsewhere");
        std::fs::create_dir(&target)?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700))?;
        let link = dir.path().join("data");
        std::os::unix::fs::symlink(&target, &link)?;
        assert!(matches!(observe(&link)?, FileState::Symlink { .. }));
        assert!(set_mode(&link, 0o777).is_err());
        let meta = std::fs::metadata(&target)?;
        set_owner(&link, meta.uid(), meta.gid())?;
        assert_eq!(std::fs::metadata(&target)?.mode() & 0o7777, 0o700);
        assert!(make_dir(&link).is_err(), "a link passed for a directory");
        remove_non_directory(&link)?;
        make_dir(&link)?;
        assert!(std::fs::symlink_metadata(&link)?.is_dir());
        assert!(target.exists(), "the link's target was touched");
        Ok(())
    }

    #[test]
    fn writes_never_go_through_a_linked_parent() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().join("root");
        std::fs::create_dir(&root)?;
        std::os::unix::fs::symlink(dir.path(), root.join("grafana"))?;
        let path = root.join("grafana/grafana.ini");
        assert!(matches!(
            check_parents(&root, &path),
            Err(FileError::NotADirectory { .. })
        ));
        assert!(check_parents(&root, &root.join("loki/loki.yaml")).is_ok());
        assert!(matches!(
            observe_under(&root, &path)?,
            FileState::Symlink { .. }
        ));
        Ok(())
    }
}
