//! Whether a bundle is what its commit label says: when the tree it was built from is a git
//! work tree, and a file the bundle holds differs from HEAD (modified, staged, untracked or
//! ignored), the label gets `-dirty`, as `git describe --dirty` says it. Runs `git status`
//! and nothing else; decides nothing about what is published.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What a label of a tree with uncommitted changes ends with.
pub const DIRTY_SUFFIX: &str = "-dirty";

/// Why the tree's state could not be told.
#[derive(Debug, thiserror::Error)]
pub enum ProvenanceError {
    /// `git` could not be run in a git work tree.
    #[error(
        "running `git status` in {root}: {source}\n    fix: install git, or publish from a tree that is not a git work tree"
    )]
    Spawn {
        /// The repository root.
        root: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `git status` failed (a broken repository, one git refuses as of dubious ownership).
    #[error("`git status` in {root} failed: {stderr}")]
    Failed {
        /// The repository root.
        root: PathBuf,
        /// What git said.
        stderr: String,
    },
}

/// The bundled files that differ from HEAD, by their path in the repository; `None` when
/// `root` is in no git work tree (a copied tree: there is no commit to differ from).
pub fn uncommitted(root: &Path, files: &[PathBuf]) -> Result<Option<Vec<String>>, ProvenanceError> {
    if !root.ancestors().any(|d| d.join(".git").exists()) {
        return Ok(None);
    }
    // `:(literal)`: a file name is never read as a glob. Untracked and ignored files count:
    // neither is in the commit the label names.
    let mut git = Command::new("git");
    git.arg("-C")
        .arg(root)
        .args([
            "status",
            "--porcelain=v1",
            "-z",
            "--untracked-files=all",
            "--ignored=matching",
            "--",
        ])
        .args(files.iter().map(|f| {
            let mut spec = std::ffi::OsString::from(":(literal)");
            spec.push(f);
            spec
        }));
    let out = git.output().map_err(|source| ProvenanceError::Spawn {
        root: root.to_path_buf(),
        source,
    })?;
    if !out.status.success() {
        return Err(ProvenanceError::Failed {
            root: root.to_path_buf(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(Some(changed_paths(&out.stdout)))
}

/// The paths of `git status --porcelain=v1 -z` output. Pure.
fn changed_paths(porcelain: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut records = porcelain.split(|b| *b == 0).filter(|r| !r.is_empty());
    while let Some(record) = records.next() {
        let Some(path) = record.get(3..) else {
            continue;
        };
        out.push(String::from_utf8_lossy(path).into_owned());
        // A rename or copy is followed by the path it came from.
        if matches!(record.first(), Some(b'R' | b'C')) {
            records.next();
        }
    }
    out
}

/// The label to publish: `commit` as given, with [`DIRTY_SUFFIX`] when files the bundle
/// holds are not as committed. Pure.
pub fn label(commit: &str, uncommitted: &[String]) -> String {
    if uncommitted.is_empty() || commit.ends_with(DIRTY_SUFFIX) {
        commit.to_string()
    } else {
        format!("{commit}{DIRTY_SUFFIX}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A real repository with two committed files and one the bundle never holds.
    fn repo() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("manifests")).expect("mkdir");
        std::fs::write(dir.path().join("manifests/a.yaml"), "a: 1\n").expect("write");
        std::fs::write(dir.path().join("manifests/b c.yaml"), "b: 1\n").expect("write");
        std::fs::write(dir.path().join("README"), "hello\n").expect("write");
        git(dir.path(), &["init", "-q"]);
        git(dir.path(), &["add", "."]);
        git(dir.path(), &["commit", "-q", "-m", "one"]);
        dir
    }

    fn bundled(dir: &Path) -> Vec<PathBuf> {
        vec![
            dir.join("manifests/a.yaml"),
            dir.join("manifests/b c.yaml"),
            dir.join("manifests/new.yaml"),
        ]
    }

    #[test]
    fn a_clean_tree_keeps_its_label_whatever_else_changed_beside_the_bundle() {
        let dir = repo();
        std::fs::write(dir.path().join("README"), "edited\n").expect("write");
        std::fs::write(dir.path().join("notes.txt"), "untracked\n").expect("write");
        let changed = uncommitted(dir.path(), &bundled(dir.path()))
            .expect("git status")
            .expect("a work tree");
        assert_eq!(changed, Vec::<String>::new());
        assert_eq!(label("abc123", &changed), "abc123");
    }

    #[test]
    fn an_edited_staged_or_new_bundled_file_makes_the_label_dirty() {
        type Edit = fn(&Path);
        let edits: [(&str, Edit); 3] = [
            ("edited", |d| {
                std::fs::write(d.join("manifests/a.yaml"), "a: 2\n").expect("write")
            }),
            ("staged", |d| {
                std::fs::write(d.join("manifests/b c.yaml"), "b: 2\n").expect("write");
                git(d, &["add", "manifests/b c.yaml"]);
            }),
            ("untracked", |d| {
                std::fs::write(d.join("manifests/new.yaml"), "n: 1\n").expect("write")
            }),
        ];
        for (what, edit) in edits {
            let dir = repo();
            edit(dir.path());
            let changed = uncommitted(dir.path(), &bundled(dir.path()))
                .expect("git status")
                .expect("a work tree");
            assert_eq!(changed.len(), 1, "{what}: {changed:?}");
            assert_eq!(label("abc123", &changed), "abc123-dirty", "{what}");
        }
    }

    #[test]
    fn an_ignored_bundled_file_is_not_committed_either() {
        let dir = repo();
        std::fs::write(dir.path().join(".gitignore"), "new.yaml\n").expect("write");
        git(dir.path(), &["add", ".gitignore"]);
        git(dir.path(), &["commit", "-q", "-m", "ignore"]);
        std::fs::write(dir.path().join("manifests/new.yaml"), "n: 1\n").expect("write");
        let changed = uncommitted(dir.path(), &bundled(dir.path()))
            .expect("git status")
            .expect("a work tree");
        assert_eq!(changed, vec!["manifests/new.yaml".to_string()]);
    }

    #[test]
    fn a_tree_outside_git_has_nothing_to_compare_with() {
        let dir = tempfile::tempdir().expect("tempdir");
        // tempdir() is under /tmp, in no work tree; a test run from one would show here.
        assert!(dir.path().ancestors().all(|d| !d.join(".git").exists()));
        assert_eq!(
            uncommitted(dir.path(), &[dir.path().join("a")]).expect("no git run"),
            None
        );
    }

    #[test]
    fn porcelain_records_are_read_with_renames_and_odd_names() {
        let out = b"R  new.yaml\0old.yaml\0 M manifests/a b.yaml\0?? x\0";
        assert_eq!(
            changed_paths(out),
            vec!["new.yaml", "manifests/a b.yaml", "x"]
        );
        assert_eq!(label("abc-dirty", &["x".to_string()]), "abc-dirty");
    }
}
