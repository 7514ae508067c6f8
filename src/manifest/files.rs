//! Finding and reading the files of one load within bounds. Every file is sized before it is
//! read and then read through a bounded reader (a file growing under us is cut off, not read
//! to the end); only regular files are read (a FIFO would block, a device never end); the
//! directory walk follows symlinks but names a loop as a loop, by (device, inode).

use super::Diagnostic;
use crate::model::SourceLocation;
use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Largest manifest or environment values file. The shipped ones are a few KiB; a larger
/// file is a mistake or an attack, and parsing 50 MB took seconds and most of a gigabyte.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// Largest `source:` file of a ConfigFile (dashboards are the big ones, tens of KiB).
pub const MAX_SOURCE_BYTES: u64 = 4 << 20;
/// Largest secret file (a password is a line).
pub const MAX_SECRET_BYTES: u64 = 64 << 10;
/// Everything one load reads together: manifests, values and sources.
pub const MAX_TOTAL_BYTES: u64 = 16 << 20;
/// Most manifest files one directory may hold.
pub const MAX_FILES: usize = 1_000;

/// What a file is, for messages and fixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRole {
    /// A manifest under the manifests directory.
    Manifest,
    /// An environment values file.
    Values,
    /// A ConfigFile's `source:`.
    Source,
    /// A Parameter's `valueFrom.file`.
    Secret,
}

impl FileRole {
    fn name(self) -> &'static str {
        match self {
            FileRole::Manifest => "manifest file",
            FileRole::Values => "environment values file",
            FileRole::Source => "source file",
            FileRole::Secret => "secret file",
        }
    }

    /// The size limit of one file of this role.
    pub fn limit(self) -> u64 {
        match self {
            FileRole::Manifest | FileRole::Values => MAX_MANIFEST_BYTES,
            FileRole::Source => MAX_SOURCE_BYTES,
            FileRole::Secret => MAX_SECRET_BYTES,
        }
    }

    fn shrink(self) -> &'static str {
        match self {
            FileRole::Manifest => {
                "split it into several files, or move large content into a `source:` file"
            }
            FileRole::Values => "keep only values in it; large content belongs in `source:` files",
            FileRole::Source => "keep large data out of the host's config files",
            FileRole::Secret => "the file should hold the secret alone, on one line",
        }
    }
}

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadProblem {
    /// Opening or reading failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A directory, FIFO, socket or device.
    #[error("{path} is not a regular file")]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// Over the limit of one file of its role.
    #[error("{path} is {} bytes, over the {} limit for one {}", if *.grew { format!("at least {}", .size) } else { .size.to_string() }, human(*.limit), .role.name())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size (what was read, when it grew while being read).
        size: u64,
        /// The limit.
        limit: u64,
        /// True when the size was found by reading (the file grew after it was sized).
        grew: bool,
        /// What the file is.
        role: FileRole,
    },
    /// The load as a whole would read too much.
    #[error(
        "reading {path} ({size} bytes) takes the files of this load past the {} limit for manifests, values and sources together",
        human(MAX_TOTAL_BYTES)
    )]
    TotalTooLarge {
        /// The file that crossed the limit.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// Not UTF-8.
    #[error("{path} is not UTF-8 text")]
    NotUtf8 {
        /// The file.
        path: PathBuf,
    },
}

impl ReadProblem {
    /// The same problem, naming `path` (the path as the manifest wrote it, when the file
    /// read was its resolved form).
    pub fn named(mut self, name: &Path) -> ReadProblem {
        match &mut self {
            ReadProblem::Io { path, .. }
            | ReadProblem::NotAFile { path }
            | ReadProblem::TooLarge { path, .. }
            | ReadProblem::TotalTooLarge { path, .. }
            | ReadProblem::NotUtf8 { path } => *path = name.to_path_buf(),
        }
        self
    }

    /// What to do about it.
    pub fn fix(&self) -> String {
        match self {
            ReadProblem::Io { .. } => "check that the path exists and is readable".to_string(),
            ReadProblem::NotAFile { .. } => {
                "point it at a regular file: a FIFO, socket or device could block or never end"
                    .to_string()
            }
            ReadProblem::TooLarge { role, .. } => role.shrink().to_string(),
            ReadProblem::TotalTooLarge { .. } => {
                "keep only the stack's manifests and their sources under the manifests directory"
                    .to_string()
            }
            ReadProblem::NotUtf8 { .. } => "save the file as UTF-8".to_string(),
        }
    }

    /// As a diagnostic at the start of `file`.
    pub fn diagnostic(&self, file: &Path) -> Diagnostic {
        Diagnostic::at_file_start(file, self.to_string(), self.fix())
    }
}

/// `1048576` → `1 MiB`.
fn human(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} bytes")
    }
}

/// Reads the files of one load, keeping their running total under [`MAX_TOTAL_BYTES`].
#[derive(Debug, Default)]
pub struct Reader {
    total: u64,
}

impl Reader {
    /// Reads `path` as text if it is a regular file within its role's limit and the load's.
    pub fn read(&mut self, path: &Path, role: FileRole) -> Result<String, ReadProblem> {
        let io = |source| ReadProblem::Io {
            path: path.to_path_buf(),
            source,
        };
        // Sized before it is opened: opening a FIFO would block until someone writes to it.
        let meta = std::fs::metadata(path).map_err(io)?;
        if !meta.is_file() {
            return Err(ReadProblem::NotAFile {
                path: path.to_path_buf(),
            });
        }
        let limit = role.limit();
        let too_large = |size, grew| ReadProblem::TooLarge {
            path: path.to_path_buf(),
            size,
            limit,
            grew,
            role,
        };
        if meta.len() > limit {
            return Err(too_large(meta.len(), false));
        }
        let total_left = MAX_TOTAL_BYTES.saturating_sub(self.total);
        if meta.len() > total_left {
            return Err(ReadProblem::TotalTooLarge {
                path: path.to_path_buf(),
                size: meta.len(),
            });
        }
        // Non-blocking: a file that only looks regular (/proc/kmsg, a tracing pipe) would
        // otherwise block the read until the kernel has something to say, and a path swapped
        // for a FIFO after it was sized would block the open.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(io)?;
        let cap = limit.min(total_left);
        // meta.len() ≤ cap here, so the capacity is bounded too.
        let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        file.take(cap + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| match e.kind() {
                // Only something that is not a plain file (a kernel interface) would block.
                std::io::ErrorKind::WouldBlock => ReadProblem::NotAFile {
                    path: path.to_path_buf(),
                },
                _ => io(e),
            })?;
        let read = bytes.len() as u64;
        if read > limit {
            return Err(too_large(read, true));
        }
        if read > total_left {
            return Err(ReadProblem::TotalTooLarge {
                path: path.to_path_buf(),
                size: read,
            });
        }
        self.total += read;
        String::from_utf8(bytes).map_err(|_| ReadProblem::NotUtf8 {
            path: path.to_path_buf(),
        })
    }
}

/// What the walk of a manifests directory found.
#[derive(Debug, Default)]
pub struct Walk {
    /// The manifest files, sorted.
    pub files: Vec<PathBuf>,
    /// Loops, second paths to what was already found, dangling links, too many files.
    pub problems: Vec<Diagnostic>,
    /// The size of each file, from metadata (nothing is read yet).
    pub sizes: Vec<u64>,
}

impl Walk {
    /// The size problems, from metadata alone: each file over the limit of one manifest, then
    /// the rest if they add up to more than one load may read (naming the largest).
    pub fn size_problems(&self, dir: &Path) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        let mut total = 0;
        let mut largest: Option<(u64, &PathBuf)> = None;
        for (path, &size) in self.files.iter().zip(&self.sizes) {
            if size > MAX_MANIFEST_BYTES {
                let problem = ReadProblem::TooLarge {
                    path: path.clone(),
                    size,
                    limit: MAX_MANIFEST_BYTES,
                    grew: false,
                    role: FileRole::Manifest,
                };
                out.push(problem.diagnostic(path));
                continue;
            }
            total += size;
            if largest.is_none_or(|(s, _)| size > s) {
                largest = Some((size, path));
            }
        }
        if total > MAX_TOTAL_BYTES {
            let largest = largest
                .map(|(size, f)| format!(" (the largest is {}, {size} bytes)", f.display()))
                .unwrap_or_default();
            out.push(Diagnostic {
                location: SourceLocation {
                    file: dir.to_path_buf(),
                    line: 1,
                    column: 1,
                },
                resource: None,
                path: None,
                message: format!(
                    "the {} manifest files under {} add up to {total} bytes, over the {} limit for one load{largest}",
                    self.files.len(),
                    dir.display(),
                    human(MAX_TOTAL_BYTES)
                ),
                fix: "keep only the stack's manifests under the manifests directory".to_string(),
                rule: None,
            });
        }
        out
    }
}

/// Walks `dir` for `*.yaml`/`*.yml` files, skipping directories named `skip_dir`. Symlinks
/// are followed, but real directories are walked before linked ones, so that a second path
/// to something is the link; a directory met again among its own ancestors is a loop.
pub fn manifest_files(dir: &Path, skip_dir: &str) -> Result<Walk, std::io::Error> {
    let id = |m: &std::fs::Metadata| (m.dev(), m.ino());
    let root = std::fs::metadata(dir)?;
    let mut walk = Walk::default();
    let mut problem = |path: &Path, message: String, fix: &str| {
        walk.problems.push(Diagnostic {
            location: SourceLocation {
                file: path.to_path_buf(),
                line: 1,
                column: 1,
            },
            resource: None,
            path: None,
            message,
            fix: fix.to_string(),
            rule: None,
        });
    };
    let mut dirs: HashMap<(u64, u64), PathBuf> = HashMap::from([(id(&root), dir.to_path_buf())]);
    let mut files: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut out: Vec<(PathBuf, u64)> = Vec::new();
    // Each pending directory carries the (device, inode) of itself and its ancestors: meeting
    // one of them again is a loop. Linked directories wait until every real one is walked.
    let mut real = vec![(dir.to_path_buf(), vec![id(&root)])];
    let mut linked = Vec::new();
    'walk: while let Some((d, chain)) = real.pop().or_else(|| linked.pop()) {
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            let is_link = std::fs::symlink_metadata(&path)?.file_type().is_symlink();
            entries.push((is_link, path));
        }
        entries.sort();
        for (is_link, path) in entries {
            let is_yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
            let meta = match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(e) if is_yaml || is_link => {
                    problem(
                        &path,
                        format!("cannot read {}: {e}", path.display()),
                        "remove the dangling symlink, or point it at an existing file",
                    );
                    continue;
                }
                Err(e) => return Err(e),
            };
            if meta.is_dir() {
                if path.file_name().is_some_and(|n| n == skip_dir) {
                    continue;
                }
                let key = id(&meta);
                if chain.contains(&key) {
                    let target = dirs.get(&key).cloned().unwrap_or_else(|| d.clone());
                    problem(
                        &path,
                        format!(
                            "{} loop: {} leads back to {}, which contains it",
                            if is_link { "symlink" } else { "directory" },
                            path.display(),
                            target.display()
                        ),
                        "remove the symlink, or point it outside the manifests directory",
                    );
                } else if let Some(first) = dirs.get(&key) {
                    problem(
                        &path,
                        format!(
                            "{} is a second path to {}: its manifests would be read twice",
                            path.display(),
                            first.display()
                        ),
                        "remove the symlink or the second copy",
                    );
                } else {
                    dirs.insert(key, path.clone());
                    let mut below = chain.clone();
                    below.push(key);
                    if is_link {
                        linked.push((path, below));
                    } else {
                        real.push((path, below));
                    }
                }
            } else if is_yaml {
                if let Some(first) = files.get(&id(&meta)) {
                    problem(
                        &path,
                        format!(
                            "{} is a second path to {}: it would be read twice",
                            path.display(),
                            first.display()
                        ),
                        "remove the symlink or the second copy",
                    );
                    continue;
                }
                if out.len() == MAX_FILES {
                    problem(
                        &path,
                        format!(
                            "more than {MAX_FILES} manifest files under {}",
                            dir.display()
                        ),
                        "keep only the stack's manifests under the manifests directory",
                    );
                    break 'walk;
                }
                files.insert(id(&meta), path.clone());
                out.push((path, meta.len()));
            }
        }
    }
    out.sort();
    (walk.files, walk.sizes) = out.into_iter().unzip();
    Ok(walk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_over_its_limit_is_refused_before_it_is_read() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("big.yaml");
        let file = std::fs::File::create(&path).expect("create");
        // Sparse: the size is there without writing the bytes.
        file.set_len(MAX_MANIFEST_BYTES + 1).expect("set_len");
        let err = Reader::default()
            .read(&path, FileRole::Manifest)
            .expect_err("too large");
        assert_eq!(
            err.to_string(),
            format!(
                "{} is 1048577 bytes, over the 1 MiB limit for one manifest file",
                path.display()
            )
        );
    }

    #[test]
    fn the_load_total_is_bounded_across_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut reader = Reader::default();
        for i in 0..(MAX_TOTAL_BYTES / MAX_SOURCE_BYTES) {
            let path = tmp.path().join(format!("{i}.json"));
            std::fs::write(&path, vec![b' '; MAX_SOURCE_BYTES as usize]).expect("write");
            reader
                .read(&path, FileRole::Source)
                .expect("within the total");
        }
        let last = tmp.path().join("last.yaml");
        std::fs::write(&last, "a: 1\n").expect("write");
        let err = reader
            .read(&last, FileRole::Manifest)
            .expect_err("over the total");
        assert!(
            matches!(err, ReadProblem::TotalTooLarge { size: 5, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("pipe.yaml");
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .expect("mkfifo runs");
        assert!(made.success());
        let err = Reader::default()
            .read(&path, FileRole::Manifest)
            .expect_err("not a file");
        assert!(matches!(err, ReadProblem::NotAFile { .. }), "{err}");
    }

    #[test]
    fn sizes_are_shown_in_binary_units() {
        assert_eq!(human(1 << 20), "1 MiB");
        assert_eq!(human(64 << 10), "64 KiB");
        assert_eq!(human(1000), "1000 bytes");
    }
}
