//! `plan --output sarif` and `--output markdown` through the real binary against moto.
//!
//! The SARIF log is validated against the SARIF 2.1.0 JSON schema with check-jsonschema
//! (PyPI, installed by `scripts/dev-env up`). The schema, `tests/fixtures/sarif-schema-2.1.0.json`,
//! is the copy the SARIF SDK team ships in the npm package `@microsoft/sarif-multitool-linux`
//! 5.7.0 (`package/sarif-2.1.0.json`, MIT, repository microsoft/sarif-sdk), kept byte for byte
//! (sha256 1c49a0f2b60444c71bb14878e21e0d882198eff4c539861b133093ad89ed798c): the OASIS
//! SARIF 2.1.0 schema with its `$schema` set to JSON Schema 2020-12. No PyPI package checked
//! (sarif-om, sarif-tools, sarif-pydantic, pydantic-sarif, pysarif) bundles the schema.

use crate::support::cli::{Cli, text};
use crate::support::moto::Moto;
use crate::support::world;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

const SCHEMA: &str = "tests/fixtures/sarif-schema-2.1.0.json";

/// Runs stackwarden against this moto (AWS scope only), from the repository root.
fn stackwarden(moto: &Moto, args: &[&str]) -> Output {
    Cli::new(args)
        .args(["--env", "local", "--scope", "aws"])
        .moto(moto)
        .env("STACKWARDEN_GRAFANA_ADMIN_PASSWORD", "report-test-secret")
        .output()
}

/// `check-jsonschema --schemafile SCHEMA file`, through the python3 that dev-env installed it
/// into (as moto's).
fn check_jsonschema(file: &Path) -> Output {
    Command::new("python3")
        .args(["-m", "check_jsonschema", "--schemafile", SCHEMA])
        .arg(file)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("python3 runs check-jsonschema (scripts/dev-env up installs it)")
}

/// The 1-based line of `metadata.name: NAME` in the document of `kind` in a manifest file.
fn declared_at(file: &str, kind: &str, name: &str) -> usize {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let text = std::fs::read_to_string(&path).expect("read manifest");
    let mut in_kind = false;
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("kind:") {
            in_kind = line.trim() == format!("kind: {kind}");
        } else if in_kind && line.trim() == format!("name: {name}") {
            return i + 1;
        }
    }
    panic!("{file} declares no {kind}/{name}");
}

/// Opens the host's security group to the whole internet on port 22, by hand.
async fn open_ssh_to_the_world(moto: &Moto) {
    let ec2 = aws_sdk_ec2::Client::new(&moto.sdk_config().await);
    let id = world::group_id(&ec2, "durable-code-local-observability-sg").await;
    world::open_ssh_to_the_world(&ec2, &id).await;
}

#[tokio::test]
async fn plan_sarif_is_valid_sarif_2_1_0_and_points_violations_and_drift_at_the_manifest() {
    let moto = Moto::start(&[]).await;
    let apply = stackwarden(&moto, &["apply"]);
    assert_eq!(apply.status.code(), Some(0), "{}", text(&apply));
    open_ssh_to_the_world(&moto).await;

    let plan = stackwarden(&moto, &["plan", "--output", "sarif"]);
    assert_eq!(plan.status.code(), Some(2), "{}", text(&plan));
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("plan.sarif");
    std::fs::write(&file, &plan.stdout).expect("write the log");

    let check = check_jsonschema(&file);
    assert!(
        check.status.success(),
        "the log does not validate against {SCHEMA}:\n{}\n{}",
        text(&check),
        String::from_utf8_lossy(&plan.stdout)
    );

    let log: Value = serde_json::from_slice(&plan.stdout).expect("plan --output sarif is JSON");
    let run = &log["runs"][0];
    let results = run["results"].as_array().expect("results");
    let line = declared_at("manifests/network.yaml", "SecurityGroup", "observability");
    let at_the_group = |r: &&Value| {
        let physical = &r["locations"][0]["physicalLocation"];
        physical["artifactLocation"]["uri"] == "manifests/network.yaml"
            && physical["region"]["startLine"] == line
    };
    let violation = results
        .iter()
        .find(|r| r["ruleId"] == "no-open-ingress")
        .unwrap_or_else(|| panic!("no no-open-ingress result: {results:#?}"));
    assert_eq!(violation["level"], "error");
    assert!(
        at_the_group(&violation),
        "not at manifests/network.yaml:{line}: {violation:#}"
    );
    let drift = results
        .iter()
        .find(|r| r["ruleId"] == "stackwarden/drift")
        .unwrap_or_else(|| panic!("no drift result: {results:#?}"));
    assert_eq!(drift["level"], "warning");
    assert!(at_the_group(&drift), "{drift:#}");
    assert!(
        drift["message"]["text"]
            .as_str()
            .is_some_and(|m| m.contains("SecurityGroup/observability") && m.contains("0.0.0.0/0")),
        "{drift:#}"
    );
    let rules = run["tool"]["driver"]["rules"].as_array().expect("rules");
    for id in ["no-open-ingress", "stackwarden/drift"] {
        let rule = rules
            .iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("no descriptor for {id}"));
        assert!(rule["help"]["text"].is_string(), "{rule:#}");
    }
    assert!(
        !text(&plan).contains("report-test-secret"),
        "the secret leaked"
    );

    // The check can fail: the same log without its version is refused.
    let mut broken = log.clone();
    broken
        .as_object_mut()
        .expect("a log is an object")
        .remove("version");
    let broken_file = dir.path().join("broken.sarif");
    std::fs::write(&broken_file, broken.to_string()).expect("write");
    assert!(
        !check_jsonschema(&broken_file).status.success(),
        "check-jsonschema accepted a log without a version"
    );
}

#[tokio::test]
async fn plan_markdown_has_a_verdict_and_a_row_per_missing_resource() {
    let moto = Moto::start(&[]).await;
    let out = stackwarden(&moto, &["plan", "--output", "markdown"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.starts_with("## stackwarden plan: `Stack/observability` in environment `local`"),
        "{report}"
    );
    assert!(report.contains(" changes pending**"), "{report}");
    assert!(
        report.contains("| resource | change | cause | fields |\n|---|---|---|---|\n"),
        "{report}"
    );
    for row in [
        "| `Bucket/data` | `+` create | missing |",
        "| `SecurityGroup/observability` | `+` create | missing |",
    ] {
        assert!(report.contains(row), "no row {row}:\n{report}");
    }
    assert!(
        !text(&out).contains("report-test-secret"),
        "the secret leaked"
    );
}
