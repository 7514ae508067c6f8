//! The layering the source tree promises (docs/design.md, "Modules and the direction of
//! dependencies"): the model, the plan and the policy are plain data and pure functions, and
//! the engine knows no API. A forbidden import fails here.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read source dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

fn assert_free_of(module: &str, forbidden: &[&str]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src")
        .join(module);
    let files = rust_files(&dir);
    assert!(!files.is_empty(), "src/{module} has no files");
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read source");
        for word in forbidden {
            assert!(
                !text.contains(word),
                "{} mentions `{word}`: src/{module} must stay free of it",
                file.display()
            );
        }
    }
}

const WORLDS: [&str; 5] = [
    "aws_sdk",
    "aws_config",
    "bollard",
    "axum",
    "crate::provider",
];

#[test]
fn model_plan_and_policy_are_pure() {
    let effects = [
        &WORLDS[..],
        &["tokio", "std::fs", "std::net", "std::process"],
    ]
    .concat();
    for module in ["model", "plan", "policy"] {
        assert_free_of(module, &effects);
    }
}

#[test]
fn the_engine_knows_no_api() {
    assert_free_of("engine", &WORLDS[..4]);
}

#[test]
fn the_status_is_data_and_the_server_only_reads_it() {
    let effects = [
        &WORLDS[..4],
        &["tokio", "std::fs", "std::net", "std::process"],
    ]
    .concat();
    assert_free_of("status", &effects);
    // The HTTP side never calls AWS or Docker: a slow world cannot stall a request, and a
    // request cannot cost an API call.
    assert_free_of(
        "server",
        &[
            "aws_sdk",
            "aws_config",
            "bollard",
            "crate::provider",
            "crate::engine",
        ],
    );
}

/// The top-level modules each one names (`crate::x`), test code included: module `tests` and
/// `#[cfg(test)]` blocks may not reach upward either.
fn imports() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(&src).expect("read src") {
        let path = entry.expect("entry").path();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        if name == "lib" || name == "main" {
            continue;
        }
        let files = if path.is_dir() {
            rust_files(&path)
        } else {
            vec![path.clone()]
        };
        let mut uses = std::collections::BTreeSet::new();
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read source");
            for (i, _) in text.match_indices("crate::") {
                let rest = &text[i + "crate::".len()..];
                let module: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !module.is_empty() && module != name {
                    uses.insert(module);
                }
            }
        }
        out.insert(name, uses);
    }
    out
}

#[test]
fn no_two_top_level_modules_depend_on_each_other_even_through_others() {
    let graph = imports();
    // Depth-first search from each module for a path back to itself.
    for start in graph.keys() {
        let mut stack: Vec<(String, Vec<String>)> = vec![(start.clone(), vec![start.clone()])];
        let mut seen = std::collections::BTreeSet::new();
        while let Some((at, path)) = stack.pop() {
            for next in graph.get(&at).into_iter().flatten() {
                if next == start {
                    panic!("module cycle: {} → {start}", path.join(" → "));
                }
                if graph.contains_key(next) && seen.insert(next.clone()) {
                    let mut p = path.clone();
                    p.push(next.clone());
                    stack.push((next.clone(), p));
                }
            }
        }
    }
}
