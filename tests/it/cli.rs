//! The command-line contract, through the real binary: plan exits 0 with nothing to do, 2
//! with changes pending, 1 on error; apply exits 0 once converged; `--output json` and
//! `--stats` say the same as the text.

use crate::support::cli::{Cli, text};
use crate::support::moto::Moto;
use std::process::Output;

/// Runs stackwarden against this moto (AWS scope only: the host has its own tests).
fn stackwarden(moto: &Moto, args: &[&str]) -> Output {
    Cli::new(args)
        .args(["--env", "local", "--scope", "aws"])
        .moto(moto)
        .env("STACKWARDEN_GRAFANA_ADMIN_PASSWORD", "cli-test-secret")
        .output()
}

#[tokio::test]
async fn plan_and_apply_exit_codes_follow_the_contract() {
    let moto = Moto::start(&[]).await;
    let pending = stackwarden(&moto, &["plan"]);
    assert_eq!(pending.status.code(), Some(2), "{}", text(&pending));
    assert!(
        text(&pending).contains("+ create Bucket/data"),
        "{}",
        text(&pending)
    );

    let apply = stackwarden(&moto, &["apply"]);
    assert_eq!(apply.status.code(), Some(0), "{}", text(&apply));
    assert!(text(&apply).contains("Apply complete"), "{}", text(&apply));

    let clean = stackwarden(&moto, &["plan", "--stats"]);
    assert_eq!(clean.status.code(), Some(0), "{}", text(&clean));
    assert!(text(&clean).contains(", 0 writes"), "{}", text(&clean));
    assert!(
        !text(&clean).contains("cli-test-secret"),
        "the secret leaked"
    );
}

#[tokio::test]
async fn plan_json_lists_the_changes_and_never_the_secret() {
    let moto = Moto::start(&[]).await;
    let out = stackwarden(&moto, &["plan", "--output", "json"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let plan: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("plan --output json prints JSON");
    let changes = plan["changes"].as_array().expect("changes is a list");
    let ids: Vec<&str> = changes.iter().filter_map(|c| c["id"].as_str()).collect();
    for id in [
        "SecurityGroup/observability",
        "Bucket/data",
        "Parameter/grafana-admin-password",
    ] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    assert!(changes.iter().all(|c| c["action"] == "create"), "{plan}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("cli-test-secret"));
}

#[tokio::test]
async fn plan_without_a_reachable_aws_endpoint_exits_one_and_says_why() {
    let moto = Moto::start(&[]).await;
    let endpoint = moto.endpoint.clone();
    drop(moto); // nothing listens there any more
    let out = Cli::new(&["plan", "--env", "local", "--scope", "aws"])
        .aws(&endpoint)
        .env("AWS_MAX_ATTEMPTS", "1")
        .output();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("finding the AWS account"),
        "{}",
        text(&out)
    );
}

#[test]
fn an_invalid_manifest_makes_plan_exit_one_before_any_call() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(tmp.path().join("bad.yaml"), "kind: Nope\n").expect("write");
    let out = Cli::new(&["plan", "-f"])
        .arg(tmp.path())
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .output();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("bad.yaml:1:1"), "{}", text(&out));
}
