//! The repository a load reads from, and the rule that every file it reads lies inside it.
//! A ConfigFile's `source:` is copied onto the host, into directories containers mount: a
//! path that could name any file (`/etc/shadow`, `../../../etc/shadow`, a symlink in the
//! repository pointing out of it) would let a one-line change in a pull request copy any file
//! the runner or the host can read. So a source is resolved, symlinks and all, and refused
//! unless it ends inside the repository root.

use std::path::{Component, Path, PathBuf};

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Escape {
    /// An absolute path names a file anywhere on the machine.
    #[error("`{given}` is an absolute path; sources come from the repository ({root})")]
    Absolute {
        /// The path as written.
        given: String,
        /// The repository root.
        root: PathBuf,
    },
    /// `..` climbs out of the repository.
    #[error("`{given}` leaves the repository ({root}) through `..`")]
    Climbs {
        /// The path as written.
        given: String,
        /// The repository root.
        root: PathBuf,
    },
    /// A symlink on the way leads out of the repository.
    #[error("`{given}` resolves through a symlink to {resolved}, outside the repository ({root})")]
    Symlink {
        /// The path as written.
        given: String,
        /// Where it leads.
        resolved: PathBuf,
        /// The repository root.
        root: PathBuf,
    },
}

impl Escape {
    /// What to do about it.
    pub fn fix(&self) -> &'static str {
        match self {
            Escape::Absolute { .. } | Escape::Climbs { .. } => {
                "give a path relative to this manifest file that stays inside the repository (e.g. ../../dashboards/home.json); the root is the manifests directory's git root, or --root"
            }
            Escape::Symlink { .. } => {
                "copy the file into the repository instead of linking to it, or point the link at a file inside the repository"
            }
        }
    }
}

/// The root every file of a load must lie in: canonical, symlinks resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    root: PathBuf,
}

impl Repository {
    /// The root given explicitly (`--root`), or the git root of the manifests directory (the
    /// nearest ancestor holding `.git`), or, outside any git work tree (a copied tree, a
    /// container's read-only mount), the directory that holds the manifests directory: the
    /// layout this repository has (`manifests/` beside `config/`, `dashboards/`, `alerting/`).
    pub fn discover(manifests: &Path, explicit: Option<&Path>) -> std::io::Result<Repository> {
        let root = match explicit {
            Some(root) => std::fs::canonicalize(root)?,
            None => {
                let dir = std::fs::canonicalize(manifests)?;
                let git = dir
                    .ancestors()
                    .find(|d| std::fs::symlink_metadata(d.join(".git")).is_ok());
                match git {
                    Some(g) => g.to_path_buf(),
                    None => dir.parent().unwrap_or(&dir).to_path_buf(),
                }
            }
        };
        Ok(Repository { root })
    }

    /// The canonical root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Resolves `given`, written in a file under `base` (that file's directory), to the real
    /// path it names, refused unless it lies inside the root. `Ok(None)`: the path does not
    /// exist (or cannot be resolved), which the reader reports with its own error.
    pub fn confine(&self, base: &Path, given: &str) -> Result<Option<PathBuf>, Escape> {
        let path = Path::new(given);
        if path.is_absolute() {
            return Err(Escape::Absolute {
                given: given.to_string(),
                root: self.root.clone(),
            });
        }
        // The base resolved first, so that `..` is judged from where the manifest really is.
        let base = std::fs::canonicalize(base).unwrap_or_else(|_| base.to_path_buf());
        if !lexical(&base.join(path)).starts_with(&self.root) {
            return Err(Escape::Climbs {
                given: given.to_string(),
                root: self.root.clone(),
            });
        }
        let Ok(resolved) = std::fs::canonicalize(base.join(path)) else {
            return Ok(None);
        };
        self.check(given, resolved).map(Some)
    }

    /// A file found by walking the manifests directory: its real path must be inside too (a
    /// `manifests/x.yaml` linking to `/etc/shadow` would otherwise be parsed, and quoted in
    /// errors). `Ok(None)` when it cannot be resolved.
    pub fn confine_found(&self, path: &Path) -> Result<Option<PathBuf>, Escape> {
        let Ok(resolved) = std::fs::canonicalize(path) else {
            return Ok(None);
        };
        self.check(&path.display().to_string(), resolved).map(Some)
    }

    fn check(&self, given: &str, resolved: PathBuf) -> Result<PathBuf, Escape> {
        if resolved.starts_with(&self.root) {
            Ok(resolved)
        } else {
            Err(Escape::Symlink {
                given: given.to_string(),
                resolved,
                root: self.root.clone(),
            })
        }
    }
}

/// Lexically resolves `.` and `..`, keeping a leading `..`, so messages name
/// `dashboards/home.json` or `config/loki.yaml`, not `manifests/host/../../config/loki.yaml`.
/// For showing paths; [`lexical`] is the one that confines them.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if matches!(out.components().next_back(), Some(Component::Normal(_))) {
                    out.pop();
                } else {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// `a/b/../c/./d` → `a/c/d`, without touching the disk (`..` at the top stays at the top).
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A repository at `<tmp>/repo` with `manifests/host/` and `config/a.ini`, and a secret
    /// beside it, outside.
    fn world() -> (tempfile::TempDir, Repository, PathBuf) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = tmp.path().join("repo");
        std::fs::create_dir_all(repo.join(".git")).expect("git");
        std::fs::create_dir_all(repo.join("manifests/host")).expect("manifests");
        std::fs::create_dir_all(repo.join("config")).expect("config");
        std::fs::write(repo.join("config/a.ini"), "a").expect("a");
        std::fs::write(tmp.path().join("secret"), "s").expect("secret");
        let r = Repository::discover(&repo.join("manifests"), None).expect("discover");
        (tmp, r, repo.join("manifests/host"))
    }

    #[test]
    fn source_inside_the_repository_resolves() {
        let (_tmp, r, base) = world();
        let got = r.confine(&base, "../../config/a.ini").expect("inside");
        assert_eq!(got, Some(r.root().join("config/a.ini")));
    }

    #[test]
    fn absolute_source_is_refused() {
        let (_tmp, r, base) = world();
        let err = r.confine(&base, "/etc/shadow").expect_err("absolute");
        assert!(matches!(err, Escape::Absolute { .. }), "{err:?}");
    }

    #[test]
    fn source_climbing_out_through_dotdot_is_refused() {
        let (_tmp, r, base) = world();
        for given in ["../../../secret", "../../../../../../../../etc/shadow"] {
            let err = r.confine(&base, given).expect_err(given);
            assert!(matches!(err, Escape::Climbs { .. }), "{given}: {err:?}");
        }
        // Down and back up again stays inside.
        assert!(r.confine(&base, "../../config/../config/a.ini").is_ok());
    }

    #[test]
    fn source_through_a_symlink_leading_out_is_refused() {
        let (tmp, r, base) = world();
        let link = r.root().join("config/link.ini");
        std::os::unix::fs::symlink(tmp.path().join("secret"), &link).expect("link");
        let err = r.confine(&base, "../../config/link.ini").expect_err("link");
        assert!(matches!(err, Escape::Symlink { .. }), "{err:?}");
        // A linked directory is followed the same way.
        std::os::unix::fs::symlink(tmp.path(), r.root().join("config/out")).expect("dir link");
        let err = r
            .confine(&base, "../../config/out/secret")
            .expect_err("dir");
        assert!(matches!(err, Escape::Symlink { .. }), "{err:?}");
        // A link that stays inside is fine.
        std::os::unix::fs::symlink(r.root().join("config/a.ini"), r.root().join("config/in"))
            .expect("inside link");
        assert!(r.confine(&base, "../../config/in").is_ok());
    }

    #[test]
    fn missing_source_is_left_to_the_reader() {
        let (_tmp, r, base) = world();
        assert_eq!(r.confine(&base, "../../config/none.ini"), Ok(None));
    }

    #[test]
    fn root_is_the_git_root_else_the_manifests_parent_else_explicit() {
        let (tmp, r, _) = world();
        assert_eq!(
            r.root(),
            std::fs::canonicalize(tmp.path().join("repo")).unwrap()
        );
        let plain = tmp.path().join("plain/manifests");
        std::fs::create_dir_all(&plain).expect("plain");
        let p = Repository::discover(&plain, None).expect("plain");
        assert_eq!(
            p.root(),
            std::fs::canonicalize(tmp.path().join("plain")).unwrap()
        );
        let e = Repository::discover(&plain, Some(&plain)).expect("explicit");
        assert_eq!(e.root(), std::fs::canonicalize(&plain).unwrap());
    }
}
