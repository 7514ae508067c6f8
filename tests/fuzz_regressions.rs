//! The fuzzers' findings as regression tests (issue 14): every input under
//! `tests/fixtures/fuzz/<target>/` (what `scripts/fuzz` found and kept), then the seed corpus
//! under `fuzz/corpus/<target>/` (so that the test replays something even before anything
//! was found), goes through the fuzz targets' own harness (`fuzz/harness.rs`): one file of a
//! load beside the base fixture, then `stackwarden::manifest::load`. Each load must return,
//! `Ok` or `Err`, without panicking, and without growing the process by more than the heap
//! the fuzzers allow one load (`fuzz/heap.rs`). No timing is asserted: a load that has not
//! returned after a minute is reported as hung rather than left to hang the test run.
#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

#[path = "../fuzz/harness.rs"]
mod harness;

use harness::{Harness, Target};
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::Duration;

/// The fuzzers' `MAX_LOAD_HEAP` (fuzz/heap.rs): a load growing the process's RSS by more is a
/// finding there, and here. The allocator keeps what a load freed, and a later load may reuse
/// it unseen: the first input over the bound fails the test, which is what matters.
const MAX_GROWTH_KIB: u64 = 256 << 10;
/// Far beyond any load's time (a debug build refuses the worst inputs in about a second):
/// past it, a load is hung, as one reading /proc/kmsg did.
const HUNG: Duration = Duration::from_secs(60);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The files directly under `dir`, sorted; none when it does not exist.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Resets the process's peak RSS to its current RSS; false where the kernel does not allow it.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// A `/proc/self/status` figure in KiB: `VmRSS` (now) or `VmHWM` (the peak).
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_string()
    }
}

/// One test for both targets, replaying one input at a time, so that the peak RSS read after
/// each load is that load's.
#[test]
fn fuzz_inputs_load_without_panicking_within_bounds() {
    let repo = repo();
    let mut replayed = Vec::new();
    let mut failures = Vec::new();
    'targets: for target in Target::ALL {
        let harness = Arc::new(Harness::new(&repo, target));
        let regressions = inputs(&repo.join("tests/fixtures/fuzz").join(target.name()));
        let seeds = inputs(&repo.join("fuzz/corpus").join(target.name()));
        assert!(
            !seeds.is_empty(),
            "fuzz/corpus/{} holds no seeds",
            target.name()
        );
        for file in regressions.iter().chain(&seeds) {
            let bytes = std::fs::read(file).unwrap();
            let before = status_kib("VmRSS:").filter(|_| reset_peak_rss());
            // On a thread of its own, so that a hung load can be reported.
            let (done, returned) = mpsc::channel();
            let loader = Arc::clone(&harness);
            let thread = std::thread::spawn(move || {
                let _ = loader.load(&bytes);
                let _ = done.send(());
            });
            let shown = file.strip_prefix(&repo).unwrap_or(file).display();
            replayed.push(shown.to_string());
            match returned.recv_timeout(HUNG) {
                Ok(()) => thread.join().unwrap(),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    failures.push(format!(
                        "{shown} ({} target): the load did not return within {} s",
                        target.name(),
                        HUNG.as_secs()
                    ));
                    // The hung thread keeps the harness's file: the target's other inputs
                    // are not replayed.
                    continue 'targets;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let payload = thread.join().unwrap_err();
                    failures.push(format!(
                        "{shown} ({} target): the load panicked: {}",
                        target.name(),
                        panic_message(payload.as_ref())
                    ));
                    continue;
                }
            }
            if let Some(grew) = before
                .zip(status_kib("VmHWM:"))
                .map(|(before, peak)| peak.saturating_sub(before))
                .filter(|&grew| grew > MAX_GROWTH_KIB)
            {
                failures.push(format!(
                    "{shown} ({} target): the load grew the process by {} MiB of RSS, over {} MiB",
                    target.name(),
                    grew >> 10,
                    MAX_GROWTH_KIB >> 10
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fuzz inputs failed:\n{}",
        failures.len(),
        replayed.len(),
        failures.join("\n")
    );
}
