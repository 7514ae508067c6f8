//! The host's record of the files stackwarden wrote (`<host root>/.stackwarden/files.json`),
//! so that a ConfigFile removed from the manifests takes its file with it: without the record
//! nothing on disk says which files are ours, and a removed file's copy would stay where a
//! container can read it. Only regular files are recorded, never data directories.
//!
//! The record is read as hostile input (a person with root may have edited it): bounded,
//! never through a symlink, and an entry that is not a plain relative path under the root is
//! ignored, so it can never make stackwarden delete anything outside the host root.

use super::files::{self, FileError};
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path};

/// Where the record lives, relative to the host root. ConfigFiles may not use this folder.
pub const LEDGER_DIR: &str = crate::model::RESERVED_DIR;
const LEDGER_FILE: &str = "files.json";
/// A record of thousands of files is well under this; more is not ours.
const MAX_LEDGER_BYTES: u64 = 1 << 20;

/// Files written, by path under the host root → the ConfigFile that wrote it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ledger {
    /// The stack that wrote them.
    #[serde(default)]
    pub stack: String,
    /// Path under the host root → ConfigFile name.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
}

/// True for `a/b.txt`; false for anything absolute, with `..`, or empty.
pub fn is_plain_relative(path: &str) -> bool {
    let p = Path::new(path);
    !path.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)))
}

fn ledger_path(host_root: &Path) -> std::path::PathBuf {
    host_root.join(LEDGER_DIR).join(LEDGER_FILE)
}

/// Reads the record; none yet is an empty one. Entries of another stack, or with paths that
/// are not plain relative paths, are dropped.
pub fn read(host_root: &Path, stack: &str) -> Result<Ledger, FileError> {
    let path = ledger_path(host_root);
    let read_err = |source| FileError::Read {
        path: path.clone(),
        source,
    };
    files::check_parents(host_root, &path)?;
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Ledger::default()),
        Err(e) => return Err(read_err(e)),
    };
    if !f.metadata().map_err(read_err)?.is_file() {
        return Err(read_err(std::io::Error::other("not a regular file")));
    }
    let mut bytes = Vec::new();
    f.take(MAX_LEDGER_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_LEDGER_BYTES {
        return Err(read_err(std::io::Error::other("larger than 1 MiB")));
    }
    let mut ledger: Ledger = match serde_json::from_slice(&bytes) {
        Ok(l) => l,
        Err(e) => {
            // Unreadable, it names nothing we may delete; the next write starts it afresh.
            tracing::warn!(path = %path.display(), error = %e, "the record of written files is not valid JSON; it is started afresh");
            return Ok(Ledger::default());
        }
    };
    if !ledger.stack.is_empty() && ledger.stack != stack {
        return Ok(Ledger::default());
    }
    ledger.files.retain(|p, _| is_plain_relative(p));
    Ok(ledger)
}

/// Adds (`Some(name)`) or removes (`None`) one path in the record, atomically.
pub fn update(
    host_root: &Path,
    stack: &str,
    path: &str,
    name: Option<&str>,
) -> Result<(), FileError> {
    let mut ledger = read(host_root, stack)?;
    let before = ledger.files.get(path).cloned();
    match name {
        Some(n) => {
            ledger.files.insert(path.to_string(), n.to_string());
        }
        None => {
            ledger.files.remove(path);
        }
    }
    if before.as_deref() == name && ledger.stack == stack {
        return Ok(());
    }
    ledger.stack = stack.to_string();
    let dir = host_root.join(LEDGER_DIR);
    files::check_parents(host_root, &ledger_path(host_root))?;
    files::make_dir(&dir)?;
    // Owned by whoever runs the daemon: the folder was just made (or found) by it.
    let meta = std::fs::symlink_metadata(&dir).map_err(|source| FileError::Read {
        path: dir.clone(),
        source,
    })?;
    let bytes = serde_json::to_vec_pretty(&ledger).unwrap_or_default();
    files::write_atomic(
        &ledger_path(host_root),
        &bytes,
        meta.uid(),
        meta.gid(),
        0o600,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_paths_are_recorded_and_forgotten() -> Result<(), Box<dyn std::error::Error>> {
        let root = tempfile::tempdir()?;
        update(root.path(), "s", "grafana/grafana.ini", Some("grafana-ini"))?;
        update(root.path(), "s", "loki/config.yaml", Some("loki-config"))?;
        update(root.path(), "s", "grafana/grafana.ini", None)?;
        let l = read(root.path(), "s")?;
        assert_eq!(
            l.files.into_iter().collect::<Vec<_>>(),
            [("loki/config.yaml".to_string(), "loki-config".to_string())]
        );
        Ok(())
    }

    #[test]
    fn a_tampered_record_never_names_a_path_outside_the_root()
    -> Result<(), Box<dyn std::error::Error>> {
        let root = tempfile::tempdir()?;
        std::fs::create_dir_all(root.path().join(LEDGER_DIR))?;
        std::fs::write(
            ledger_path(root.path()),
            r#"{"stack":"s","files":{"../../etc/passwd":"x","/etc/shadow":"y","a/./b":"z","ok/f":"w"}}"#,
        )?;
        let l = read(root.path(), "s")?;
        assert_eq!(l.files.keys().collect::<Vec<_>>(), ["a/./b", "ok/f"]);
        // Another stack's record names nothing of ours.
        assert!(read(root.path(), "other")?.files.is_empty());
        Ok(())
    }

    #[test]
    fn a_record_that_is_a_symlink_is_not_followed() -> Result<(), Box<dyn std::error::Error>> {
        let root = tempfile::tempdir()?;
        let elsewhere = tempfile::tempdir()?;
        std::fs::write(
            elsewhere.path().join("f"),
            r#"{"stack":"s","files":{"x":"y"}}"#,
        )?;
        std::fs::create_dir_all(root.path().join(LEDGER_DIR))?;
        std::os::unix::fs::symlink(elsewhere.path().join("f"), ledger_path(root.path()))?;
        assert!(read(root.path(), "s").is_err());
        Ok(())
    }
}
