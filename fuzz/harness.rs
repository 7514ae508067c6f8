//! The harness of the fuzz targets, shared with `tests/fuzz_regressions.rs` (which includes
//! this file by path): arbitrary bytes become one file of a load beside a copy of the base
//! fixture (`tests/fixtures/base`), then `stackwarden::manifest::load(dir, Some("test"))`
//! runs, as `stackwarden validate --env test` would. The loader reads only from disk, so
//! each input is written to a file; the copy lives under /dev/shm when there is one.
//!
//! A load must return, `Ok` or `Err`, and its error must display: a panic is a bug. The fuzz
//! targets also bound its time (libFuzzer's `-timeout`) and its heap (`fuzz/heap.rs`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Which file of a load the input becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// One more manifest file, `manifests/case.yaml`.
    Manifest,
    /// The environment's values file, `manifests/environments/test.yaml`.
    Values,
}

impl Target {
    /// Every target, in the order `scripts/fuzz` runs them.
    pub const ALL: [Target; 2] = [Target::Manifest, Target::Values];

    /// The fuzz target's name, and its folder under the corpora and regression inputs.
    pub fn name(self) -> &'static str {
        match self {
            Target::Manifest => "manifest",
            Target::Values => "values",
        }
    }

    /// The input's file, relative to the manifests directory.
    fn file(self) -> &'static str {
        match self {
            Target::Manifest => "case.yaml",
            Target::Values => "environments/test.yaml",
        }
    }
}

/// The environment the base fixture declares.
pub const ENV: &str = "test";

const PREFIX: &str = "stackwarden-fuzz-";

/// A manifests directory holding a copy of the base fixture, made once; removed on drop.
pub struct Harness {
    root: PathBuf,
    manifests: PathBuf,
    target: Target,
}

impl Harness {
    /// Copies `repo`'s base fixture into a fresh directory for `target`'s inputs.
    pub fn new(repo: &Path, target: Target) -> Harness {
        static MADE: AtomicUsize = AtomicUsize::new(0);
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        remove_stale(&base);
        let root = base.join(format!(
            "{PREFIX}{}-{}-{}",
            std::process::id(),
            target.name(),
            MADE.fetch_add(1, Ordering::Relaxed)
        ));
        // A leftover of an earlier process with the same id.
        let _ = std::fs::remove_dir_all(&root);
        let manifests = root.join("manifests");
        copy_dir(&repo.join("tests/fixtures/base"), &manifests);
        Harness {
            root,
            manifests,
            target,
        }
    }

    /// Loads with `bytes` as the target's file. Panics only where the loader does (or its
    /// error's `Display`), or when the harness cannot write its file.
    pub fn load(
        &self,
        bytes: &[u8],
    ) -> Result<stackwarden::manifest::Loaded, stackwarden::manifest::LoadError> {
        let file = self.manifests.join(self.target.file());
        std::fs::write(&file, bytes)
            .unwrap_or_else(|e| panic!("harness: writing {}: {e}", file.display()));
        let out = stackwarden::manifest::load(&self.manifests, Some(ENV));
        if let Err(e) = &out {
            // What `validate` prints must not panic either.
            let _ = e.to_string();
        }
        out
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// libFuzzer ends its process with `exit()`, so a harness in a static is never dropped:
/// directories of processes that no longer run are removed by the next harness.
fn remove_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to)
        .unwrap_or_else(|e| panic!("harness: creating {}: {e}", to.display()));
    let entries = std::fs::read_dir(from)
        .unwrap_or_else(|e| panic!("harness: reading {}: {e}", from.display()));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("harness: reading {}: {e}", from.display()));
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target)
                .unwrap_or_else(|e| panic!("harness: copying to {}: {e}", target.display()));
        }
    }
}
