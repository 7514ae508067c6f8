//! Unpacks a fetched bundle into a fresh directory, trusting nothing in it: only plain files
//! and directories, only relative paths without `..`, within caps on entries, on each file and
//! on all bytes together (decompressed), so a hostile archive fails fast with bounded memory
//! and never writes outside its directory.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Caps on what one bundle may unpack to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Entries (files and directories). A load reads at most 1,000 manifests and a few
    /// dozen sources; ten times that leaves room to grow.
    pub max_entries: u64,
    /// Bytes of one file: a load refuses a source over 4 MiB anyway.
    pub max_file_bytes: u64,
    /// Bytes of all files together: a load reads at most 16 MiB.
    pub max_total_bytes: u64,
    /// Bytes of one entry's path.
    pub max_path_bytes: usize,
    /// Components of one entry's path.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries: 10_000,
            max_file_bytes: 16 << 20,
            max_total_bytes: 64 << 20,
            max_path_bytes: 1024,
            max_depth: 32,
        }
    }
}

/// Why an entry is hostile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Hostility {
    /// `/etc/…`.
    #[error("an absolute path")]
    Absolute,
    /// `../…` anywhere in the path.
    #[error("a path climbing out through `..`")]
    ParentDir,
    /// `.` or an empty path.
    #[error("a path naming no file")]
    Empty,
    /// Not UTF-8 (no manifest path needs that).
    #[error("a path that is not UTF-8")]
    NotUtf8,
    /// A newline, tab, escape or other control character: no manifest path needs one, and
    /// one would forge lines in logs, listings and the status page that show the name.
    #[error("a path with a control character (a newline, a tab, an escape…)")]
    ControlCharacter,
    /// Longer or deeper than [`Limits`] allow.
    #[error("a path longer or deeper than a bundle needs")]
    PathTooLong,
    /// A symlink, a hard link, a device, a FIFO or any special entry.
    #[error("a {0} entry (only files and directories are unpacked)")]
    NotAFile(String),
    /// The same path twice, or a path through another entry's file: which one would count?
    #[error("a second entry with the same path, or a path through a file")]
    Duplicate,
    /// More entries than [`Limits::max_entries`].
    #[error("more than {0} entries")]
    TooManyEntries(u64),
}

/// Why a bundle was not unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// An entry that must never be unpacked.
    #[error("hostile archive: entry `{entry}`: {why}")]
    Hostile {
        /// The entry's path as the archive names it (lossy, shortened).
        entry: String,
        /// What is wrong with it.
        why: Hostility,
    },
    /// A file, or all of them, over the caps.
    #[error("the archive unpacks to more than {limit} bytes ({what})")]
    TooLarge {
        /// Which cap.
        what: String,
        /// The cap.
        limit: u64,
    },
    /// Not a tar.gz, or cut short.
    #[error("the archive is corrupt: {0}")]
    Corrupt(#[source] std::io::Error),
    /// Writing the unpacked files failed (a full disk, a quota): a problem of this host, not
    /// of the archive, so never a reason to refuse the revision.
    #[error("writing {path}: {source}")]
    Write {
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What was unpacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// Files written.
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// Checks one entry path: relative, plain components only, within the limits. Pure.
pub fn check_path(raw: &[u8], limits: &Limits) -> Result<PathBuf, Hostility> {
    if raw.len() > limits.max_path_bytes {
        return Err(Hostility::PathTooLong);
    }
    let text = std::str::from_utf8(raw).map_err(|_| Hostility::NotUtf8)?;
    if text.chars().any(char::is_control) {
        return Err(Hostility::ControlCharacter);
    }
    let path = Path::new(text);
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            // `./x` is how some tools write every entry; it names nothing by itself.
            Component::CurDir => {}
            Component::ParentDir => return Err(Hostility::ParentDir),
            Component::RootDir | Component::Prefix(_) => return Err(Hostility::Absolute),
        }
    }
    if out.as_os_str().is_empty() {
        return Err(Hostility::Empty);
    }
    if out.components().count() > limits.max_depth {
        return Err(Hostility::PathTooLong);
    }
    Ok(out)
}

/// Counts the decompressed bytes and stops the stream at a cap: a gzip bomb ends there.
struct Capped<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            // One byte past the cap tells a stream that ends exactly there from a longer one.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(std::io::Error::new(
                    std::io::ErrorKind::FileTooLarge,
                    "decompressed stream over the cap",
                )),
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// Which side of a copy failed.
enum Copy {
    /// Reading the archive: it is cut short or corrupt, which is the archive's fault.
    Read(std::io::Error),
    /// Writing the file: a full disk, a quota, an I/O error, which are this host's.
    Write(std::io::Error),
}

/// `std::io::copy`, telling a read error from a write error: a full state directory must
/// never be taken for a corrupt archive, or a good revision would be refused for good.
fn copy_entry(from: &mut impl Read, to: &mut impl std::io::Write) -> Result<u64, Copy> {
    let mut buf = [0u8; 64 * 1024];
    let mut copied = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(copied),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Copy::Read(e)),
        };
        to.write_all(&buf[..n]).map_err(Copy::Write)?;
        copied += n as u64;
    }
}

/// The entry's name for a refusal: shortened, and with control characters escaped (`\n`), so
/// the name of a hostile entry cannot add lines to the message that names it.
fn shown(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::new();
    for c in text.chars().take(200) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Unpacks the tar.gz read from `archive` into `dest` (created; it must not exist yet).
pub fn unpack(archive: impl Read, dest: &Path, limits: &Limits) -> Result<Summary, UnpackError> {
    let write = |path: &Path| {
        let path = path.to_path_buf();
        move |source| UnpackError::Write { path, source }
    };
    std::fs::create_dir(dest).map_err(write(dest))?;
    // Headers and padding cost up to 1.5 KiB an entry beside the data itself.
    let stream_cap = limits
        .max_total_bytes
        .saturating_add(limits.max_entries.saturating_mul(1536))
        .saturating_add(1024);
    let total_too_large = || UnpackError::TooLarge {
        what: "all files together".to_string(),
        limit: limits.max_total_bytes,
    };
    let corrupt = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::FileTooLarge {
            total_too_large()
        } else {
            UnpackError::Corrupt(e)
        }
    };
    let capped = Capped {
        inner: flate2::read::GzDecoder::new(archive),
        left: stream_cap,
    };
    let mut tar = tar::Archive::new(capped);
    let mut summary = Summary::default();
    let mut entries_seen = 0u64;
    for entry in tar.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        entries_seen += 1;
        let raw = entry.path_bytes().into_owned();
        let hostile = |why| UnpackError::Hostile {
            entry: shown(&raw),
            why,
        };
        if entries_seen > limits.max_entries {
            return Err(hostile(Hostility::TooManyEntries(limits.max_entries)));
        }
        let kind = entry.header().entry_type();
        let rel = check_path(&raw, limits).map_err(hostile)?;
        let path = dest.join(&rel);
        // Only this function writes under `dest`: a path that exists where it should not is
        // the archive contradicting itself, not a problem of the disk.
        let clash = |e: std::io::Error, at: &Path| match e.kind() {
            std::io::ErrorKind::AlreadyExists | std::io::ErrorKind::NotADirectory => {
                hostile(Hostility::Duplicate)
            }
            _ => write(at)(e),
        };
        match kind {
            tar::EntryType::Directory => {
                std::fs::create_dir_all(&path).map_err(|e| clash(e, &path))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.header().size().map_err(corrupt)?;
                if size > limits.max_file_bytes {
                    return Err(UnpackError::TooLarge {
                        what: format!("file `{}`, {size} bytes", shown(&raw)),
                        limit: limits.max_file_bytes,
                    });
                }
                if summary.bytes.saturating_add(size) > limits.max_total_bytes {
                    return Err(total_too_large());
                }
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| clash(e, parent))?;
                }
                // Only directories this function made lie on the way (no links are ever
                // created), so `create_new` cannot be led outside `dest`; it also refuses a
                // second entry for the same path.
                let mut file = match std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                {
                    Ok(file) => file,
                    Err(e) => return Err(clash(e, &path)),
                };
                let copied =
                    copy_entry(&mut (&mut entry).take(size), &mut file).map_err(|e| match e {
                        Copy::Read(e) => corrupt(e),
                        Copy::Write(e) => write(&path)(e),
                    })?;
                if copied != size {
                    return Err(UnpackError::Corrupt(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("entry `{}` is cut short", shown(&raw)),
                    )));
                }
                summary.files += 1;
                summary.bytes += size;
            }
            tar::EntryType::Symlink => return Err(hostile(Hostility::NotAFile("symlink".into()))),
            tar::EntryType::Link => return Err(hostile(Hostility::NotAFile("hard link".into()))),
            tar::EntryType::Char | tar::EntryType::Block => {
                return Err(hostile(Hostility::NotAFile("device".into())));
            }
            tar::EntryType::Fifo => return Err(hostile(Hostility::NotAFile("FIFO".into()))),
            other => {
                return Err(hostile(Hostility::NotAFile(format!("{other:?}"))));
            }
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_must_be_plain_relative_paths() {
        let l = Limits::default();
        assert_eq!(
            check_path(b"manifests/stack.yaml", &l),
            Ok(PathBuf::from("manifests/stack.yaml"))
        );
        assert_eq!(check_path(b"./a/b", &l), Ok(PathBuf::from("a/b")));
        assert_eq!(check_path(b"/etc/passwd", &l), Err(Hostility::Absolute));
        assert_eq!(check_path(b"../escape", &l), Err(Hostility::ParentDir));
        assert_eq!(check_path(b"a/../../escape", &l), Err(Hostility::ParentDir));
        assert_eq!(check_path(b"a/..", &l), Err(Hostility::ParentDir));
        assert_eq!(check_path(b".", &l), Err(Hostility::Empty));
        assert_eq!(check_path(b"", &l), Err(Hostility::Empty));
        assert_eq!(check_path(b"a/\xff", &l), Err(Hostility::NotUtf8));
        let deep = "a/".repeat(40) + "f";
        assert_eq!(check_path(deep.as_bytes(), &l), Err(Hostility::PathTooLong));
        let long = "a".repeat(2000);
        assert_eq!(check_path(long.as_bytes(), &l), Err(Hostility::PathTooLong));
    }

    #[test]
    fn a_name_with_a_newline_or_any_control_character_is_hostile() {
        let l = Limits::default();
        for raw in [
            &b"manifests/a\nb.yaml"[..],
            b"manifests/a\rb.yaml",
            b"manifests/a\tb.yaml",
            b"manifests/\x1b[31mred.yaml",
            b"manifests/a\x7f.yaml",
            "manifests/a\u{85}b.yaml".as_bytes(),
        ] {
            assert_eq!(
                check_path(raw, &l),
                Err(Hostility::ControlCharacter),
                "{raw:?}"
            );
        }
        assert_eq!(
            check_path("manifests/grafana é.yaml".as_bytes(), &l),
            Ok(PathBuf::from("manifests/grafana é.yaml")),
            "printable non-ASCII names stay allowed"
        );
    }

    #[test]
    fn a_refusal_names_the_entry_on_one_line() {
        let entries = vec![("manifests/a\nb.yaml".to_string(), b"x".to_vec())];
        let bytes = super::super::bundle::archive(&entries).expect("archive");
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let err = unpack(bytes.as_slice(), &out, &Limits::default()).expect_err("refused");
        assert!(
            matches!(
                &err,
                UnpackError::Hostile {
                    why: Hostility::ControlCharacter,
                    ..
                }
            ),
            "{err}"
        );
        let message = err.to_string();
        assert!(!message.contains('\n'), "{message:?}");
        assert!(message.contains(r"manifests/a\nb.yaml"), "{message}");
        assert!(message.contains("control character"), "{message}");
        let written: Vec<_> = std::fs::read_dir(&out).expect("out").flatten().collect();
        assert!(written.is_empty(), "nothing unpacked: {written:?}");
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_cap() {
        // 8 MiB of zeros compress to a few KiB; the cap is far below.
        let entries = vec![("big".to_string(), vec![0u8; 8 << 20])];
        let bytes = super::super::bundle::archive(&entries).expect("archive");
        assert!(bytes.len() < 64 << 10);
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = Limits {
            max_file_bytes: 1 << 20,
            max_total_bytes: 1 << 20,
            ..Limits::default()
        };
        let err = unpack(bytes.as_slice(), &dir.path().join("out"), &limits).expect_err("bomb");
        assert!(matches!(err, UnpackError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn an_entry_twice_or_under_a_file_is_hostile() {
        for second in ["a", "a/b"] {
            let entries = vec![
                ("a".to_string(), b"1".to_vec()),
                (second.to_string(), b"2".to_vec()),
            ];
            let bytes = super::super::bundle::archive(&entries).expect("archive");
            let dir = tempfile::tempdir().expect("tempdir");
            let err = unpack(
                bytes.as_slice(),
                &dir.path().join("out"),
                &Limits::default(),
            )
            .expect_err("clash");
            assert!(
                matches!(
                    err,
                    UnpackError::Hostile {
                        why: Hostility::Duplicate,
                        ..
                    }
                ),
                "{second}: {err}"
            );
        }
    }

    #[test]
    fn files_and_directories_unpack_where_they_say() {
        let entries = vec![
            ("a.yaml".to_string(), b"a: 1\n".to_vec()),
            ("b/c.json".to_string(), b"{}".to_vec()),
        ];
        let bytes = super::super::bundle::archive(&entries).expect("archive");
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let s = unpack(bytes.as_slice(), &out, &Limits::default()).expect("unpack");
        assert_eq!(s, Summary { files: 2, bytes: 7 });
        assert_eq!(std::fs::read(out.join("b/c.json")).expect("read"), b"{}");
    }
}
