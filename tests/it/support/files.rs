//! The repository the tests run from, and copies of its trees for tests that edit them: a
//! test never writes to the checkout itself.

use std::path::{Path, PathBuf};

/// The repository root (where the shipped manifests and fixtures are).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Copies the tree `from` into `to`, creating `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy file");
        }
    }
}

/// Edits loki's memory limit in a copied tree: a reviewed change, as a person would make it.
pub fn edit_loki_memory(manifests: &Path, to: &str) {
    let file = manifests.join("host/containers.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let at = text.find("name: loki").expect("loki is declared");
    let (head, tail) = text.split_at(at);
    let memory = tail.find("memory: ").expect("loki has a memory limit");
    let end = memory + tail[memory..].find('\n').unwrap();
    let edited = format!("{head}{}memory: {to}{}", &tail[..memory], &tail[end..]);
    assert_ne!(edited, text);
    std::fs::write(&file, edited).unwrap();
}
