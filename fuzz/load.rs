//! What both fuzz targets run: the input as the target's file of a load (`harness.rs`),
//! under the heap bound (`heap.rs`). Each target binary fuzzes one `Target`, so one harness
//! per process is enough.

#[allow(dead_code)] // Target::ALL and name() serve tests/fuzz_regressions.rs
#[path = "harness.rs"]
pub mod harness;
#[path = "heap.rs"]
mod heap;

use harness::{Harness, Target};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

static HARNESS: OnceLock<Harness> = OnceLock::new();

/// Loads `data` as `target`'s file: a panic, a load past libFuzzer's `-timeout` or a heap
/// past `heap::MAX_LOAD_HEAP` is a finding.
pub fn one(target: Target, data: &[u8]) {
    let harness = HARNESS.get_or_init(|| {
        // The checkout the fixture is copied from: scripts/fuzz names it, else where this
        // was built.
        let repo = std::env::var_os("STACKWARDEN_FUZZ_REPO")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
        Harness::new(&repo, target)
    });
    let _ = heap::bounded("the load", || harness.load(data));
}
