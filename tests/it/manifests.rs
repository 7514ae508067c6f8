//! Manifest specifications: the shipped manifests validate for every environment, and every
//! broken manifest in tests/fixtures/invalid is rejected with its location, field path, rule
//! and fix.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ENVIRONMENTS: [&str; 4] = ["dev", "staging", "prod", "local"];

fn stackwarden(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stackwarden"))
        .args(args)
        .current_dir(dir)
        .env_remove("STACKWARDEN_ENV")
        .output()
        .expect("the stackwarden binary runs")
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read fixture dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy fixture");
        }
    }
}

/// A temp dir holding `manifests/` = the valid base fixture plus `case.yaml`.
fn with_case(case: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    let manifests = tmp.path().join("manifests");
    copy_dir(&repo().join("tests/fixtures/base"), &manifests);
    std::fs::write(manifests.join("case.yaml"), case).expect("write case");
    tmp
}

#[test]
fn shipped_manifests_validate_for_every_environment() {
    for env in ENVIRONMENTS {
        let out = stackwarden(&repo(), &["validate", "--env", env]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{env}: {}{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains(&format!("valid for environment `{env}`")),
            "{stdout}"
        );
    }
}

#[test]
fn shipped_manifests_express_the_seed_per_environment() {
    use stackwarden::model::{Kind, Spec};
    let dev =
        stackwarden::manifest::load(&repo().join("manifests"), Some("dev")).expect("dev loads");
    let prod =
        stackwarden::manifest::load(&repo().join("manifests"), Some("prod")).expect("prod loads");
    let retention = |d: &stackwarden::model::Desired| -> Vec<u32> {
        d.buckets()
            .flat_map(|(_, b)| b.lifecycle.iter().map(|r| r.expiration_days))
            .collect()
    };
    assert_eq!(retention(&dev.desired), vec![7; 4]);
    assert_eq!(retention(&prod.desired), vec![30; 4]);
    let bucket = dev.desired.buckets().next().map(|(_, b)| b.name.clone());
    assert_eq!(
        bucket.as_deref(),
        Some("durable-code-dev-observability-${account}")
    );
    let containers: Vec<&str> = dev
        .desired
        .containers()
        .map(|(r, _)| r.id.name.as_str())
        .collect();
    assert_eq!(
        containers,
        [
            "alloy",
            "cadvisor",
            "grafana",
            "loki",
            "mimir",
            "node-exporter",
            "pyroscope",
            "tempo"
        ]
    );
    let local =
        stackwarden::manifest::load(&repo().join("manifests"), Some("local")).expect("local loads");
    assert!(
        local
            .desired
            .containers()
            .all(|(_, c)| c.image == "stackwarden/stub:local" && c.network == "none")
    );
    let mimir_config = local
        .desired
        .get(Kind::ConfigFile, "mimir-config")
        .map(|r| &r.spec);
    let Some(Spec::ConfigFile(f)) = mimir_config else {
        panic!("mimir-config is declared")
    };
    let content = f.content.as_deref().unwrap_or_default();
    assert!(
        content.contains("bucket_name: durable-code-local-observability-${account}"),
        "{content}"
    );
}

#[test]
fn validate_without_env_lists_the_environments() {
    let out = stackwarden(&repo(), &["validate"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("pass --env with one of: dev, local, prod, staging"),
        "{stderr}"
    );
}

#[test]
fn every_broken_manifest_is_rejected_with_location_path_and_fix() {
    let dir = repo().join("tests/fixtures/invalid");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .collect();
    cases.sort();
    assert!(cases.len() >= 25, "the corpus has {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let text = std::fs::read_to_string(case).expect("read case");
        let expects: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(
            !expects.is_empty(),
            "{} has no `# expect:` line",
            case.display()
        );
        let tmp = with_case(&text);
        let out = stackwarden(tmp.path(), &["validate", "--env", "test"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(1) {
            failures.push(format!(
                "{}: exit {:?}, expected 1",
                case.display(),
                out.status.code()
            ));
        }
        for e in expects {
            if !stderr.contains(e) {
                failures.push(format!("{}: missing `{e}` in:\n{stderr}", case.display()));
            }
        }
        if !stderr.contains("fix: ") {
            failures.push(format!("{}: no fix line in:\n{stderr}", case.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn all_problems_are_reported_at_once_across_files() {
    let tmp = with_case(
        "apiVersion: stackwarden.io/v1\nkind: Container\nmetadata:\n  name: a\nspec:\n  image: x\n  usr: \"1\"\n  memory: 64M\n",
    );
    std::fs::write(
        tmp.path().join("manifests/second.yaml"),
        "apiVersion: stackwarden.io/v1\nkind: Bucket\nmetadata:\n  name: b\nspec:\n  name: demo-b\n  encryption: none\n  versionin: true\n",
    )
    .expect("write second file");
    let out = stackwarden(tmp.path(), &["validate", "--env", "test"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    for e in [
        "manifests/case.yaml:7:3: Container/a spec.usr: unknown field `usr`",
        "manifests/second.yaml:8:3: Bucket/b spec.versionin: unknown field `versionin`",
        "manifests/second.yaml:7:3: Bucket/b spec.encryption: has no default encryption [policy: bucket-encryption]",
    ] {
        assert!(stderr.contains(e), "missing `{e}` in:\n{stderr}");
    }
    assert!(
        stderr.contains("problems found; the manifests were not accepted"),
        "{stderr}"
    );
}

/// Rewrites one line of the base fixture's stack.yaml in a case directory.
fn edit_base_stack(tmp: &tempfile::TempDir, from: &str, to: &str) {
    let path = tmp.path().join("manifests/stack.yaml");
    let text = std::fs::read_to_string(&path).expect("read stack.yaml");
    assert!(text.contains(from), "the base fixture has `{from}`");
    std::fs::write(&path, text.replace(from, to)).expect("write stack.yaml");
}

#[test]
fn a_budget_leaving_the_os_under_a_gigabyte_is_a_policy_violation() {
    let tmp = with_case("");
    edit_base_stack(&tmp, "memoryBudget: 3G", "memoryBudget: 3584M");
    let out = stackwarden(tmp.path(), &["validate", "--env", "test"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    let expect = "manifests/stack.yaml:15:5: Stack/demo spec.host.memoryBudget: a budget of 3584M leaves the OS less than 1G of the t3.medium's 4G [policy: memory-budget]";
    assert!(stderr.contains(expect), "missing `{expect}` in:\n{stderr}");
}

#[test]
fn a_stack_pinned_to_another_environment_is_rejected() {
    let tmp = with_case("");
    edit_base_stack(&tmp, "environment: ${env}", "environment: prod");
    let out = stackwarden(tmp.path(), &["validate", "--env", "test"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    let expect = "manifests/stack.yaml:8:3: Stack/demo spec.environment: says environment `prod` but the values are for `test`";
    assert!(stderr.contains(expect), "missing `{expect}` in:\n{stderr}");
    assert!(
        stderr.contains("fix: write `environment: ${env}`"),
        "{stderr}"
    );
}

#[test]
fn manifests_without_a_stack_say_what_to_add() {
    let tmp = with_case("");
    std::fs::remove_file(tmp.path().join("manifests/stack.yaml")).expect("remove stack.yaml");
    std::fs::write(
        tmp.path().join("manifests/only.yaml"),
        "apiVersion: stackwarden.io/v1\nkind: Lookup\nmetadata:\n  name: vpc\nspec:\n  type: vpc\n  tags: { Name: x }\n",
    )
    .expect("write only.yaml");
    let out = stackwarden(tmp.path(), &["validate", "--env", "test"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("manifests:1:1: no Stack is declared"),
        "{stderr}"
    );
    assert!(
        stderr
            .contains("fix: add a document with `apiVersion: stackwarden.io/v1` and `kind: Stack`"),
        "{stderr}"
    );
}

#[test]
fn an_unknown_environment_lists_the_known_ones() {
    let out = stackwarden(&repo(), &["validate", "--env", "qa"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("no environment `qa`: manifests/environments/qa.yaml does not exist"),
        "{stderr}"
    );
    assert!(
        stderr.contains("fix: pass --env with one of: dev, local, prod, staging"),
        "{stderr}"
    );
}
