//! Secrets, through the real binary: a weak Grafana admin password is refused before anything
//! is written (moto and the Docker engine see nothing), validate and plan report it, and no
//! log level shows the password.

use crate::support::cli::{Cli, text};
use crate::support::files::copy_dir;
use crate::support::{docker, moto::Moto};
use std::path::Path;
use std::process::Output;

/// The variable the shipped manifests read the Grafana admin password from.
const VAR: &str = "STACKWARDEN_GRAFANA_ADMIN_PASSWORD";
/// The shipped stack's name (containers carry `stackwarden.stack=observability`).
const STACK: &str = "observability";

/// stackwarden with the shipped manifests, environment `local`, the password variable set to
/// `password`, AWS pointed at `endpoint` and no log variable unless `extra_env` sets one.
fn stackwarden(
    args: &[&str],
    password: Option<&str>,
    endpoint: &str,
    extra_env: &[(&str, &str)],
) -> Output {
    let cli = Cli::new(args)
        .args(["--env", "local"])
        .aws(endpoint)
        .env("AWS_MAX_ATTEMPTS", "1")
        .env_remove("STACKWARDEN_ENV")
        .env_remove("STACKWARDEN_LOG")
        .env_remove("RUST_LOG")
        .env_remove(VAR);
    match password {
        Some(p) => cli.env(VAR, p),
        None => cli,
    }
    .envs(extra_env)
    .output()
}

/// Nothing listens on the discard port: a run that reached AWS would fail loudly.
const NO_AWS: &str = "http://127.0.0.1:9";

/// The violation line a weak password gives, up to its reason.
const VIOLATION: &str = "manifests/storage.yaml:32:5: Parameter/grafana-admin-password spec.valueFrom.env: environment variable STACKWARDEN_GRAFANA_ADMIN_PASSWORD";

#[tokio::test]
async fn apply_with_the_default_admin_password_exits_one_naming_the_variable_and_writes_nothing_to_aws()
 {
    let moto = Moto::start(&[]).await;
    let out = stackwarden(
        &["apply", "--scope", "aws"],
        Some("admin"),
        &moto.endpoint,
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let expected =
        format!("{VIOLATION} is Grafana's default password [policy: no-default-grafana-password]");
    assert!(text(&out).contains(&expected), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "fix: set environment variable {VAR} to a generated password of at least 12 characters"
        )),
        "{}",
        text(&out)
    );

    // moto holds only the seeded world: no bucket, no managed group, no parameter.
    let config = moto.sdk_config().await;
    let buckets = aws_sdk_s3::Client::new(&config)
        .list_buckets()
        .send()
        .await
        .expect("list buckets");
    assert!(buckets.buckets().is_empty(), "{buckets:?}");
    let groups = aws_sdk_ec2::Client::new(&config)
        .describe_security_groups()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:ManagedBy")
                .values("stackwarden")
                .build(),
        )
        .send()
        .await
        .expect("describe security groups");
    assert!(groups.security_groups().is_empty(), "{groups:?}");
    let parameters = aws_sdk_ssm::Client::new(&config)
        .describe_parameters()
        .send()
        .await
        .expect("describe parameters");
    assert!(parameters.parameters().is_empty(), "{parameters:?}");
}

#[tokio::test]
async fn apply_with_a_blank_admin_password_writes_no_file_and_starts_no_container() {
    let _lock = docker::exclusive().await;
    let engine = docker::docker().await;
    docker::cleanup(&engine, STACK, &[]).await;
    let host_root = tempfile::tempdir().expect("tempdir");
    let root = host_root.path().to_str().expect("utf-8 temp path");
    let out = stackwarden(
        &["apply", "--scope", "host", "--host-root", root],
        Some("   "),
        NO_AWS,
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let expected = format!("{VIOLATION} is blank [policy: no-default-grafana-password]");
    assert!(text(&out).contains(&expected), "{}", text(&out));

    let written: Vec<_> = std::fs::read_dir(host_root.path())
        .expect("host root")
        .collect();
    assert!(written.is_empty(), "files were written: {written:?}");
    let mut filters = std::collections::HashMap::new();
    filters.insert(
        "label".to_string(),
        vec![format!("stackwarden.stack={STACK}")],
    );
    let containers = engine
        .list_containers(Some(bollard::query_parameters::ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .expect("list containers");
    assert!(
        containers.is_empty(),
        "containers were created: {containers:?}"
    );
}

#[test]
fn validate_and_plan_report_a_short_admin_password_when_the_variable_is_set() {
    let expected =
        format!("{VIOLATION} is shorter than 12 characters [policy: no-default-grafana-password]");
    for command in ["validate", "plan"] {
        let out = stackwarden(&[command], Some("short-pw"), NO_AWS, &[]);
        assert_eq!(out.status.code(), Some(1), "{command}: {}", text(&out));
        assert!(text(&out).contains(&expected), "{command}: {}", text(&out));
        assert!(
            !text(&out).contains("short-pw"),
            "{command} printed the value"
        );
    }
}

#[test]
fn validate_passes_a_strong_password_and_an_unset_variable() {
    for password in [Some("a-strong-enough-password"), None] {
        let out = stackwarden(&["validate"], password, NO_AWS, &[]);
        assert_eq!(out.status.code(), Some(0), "{password:?}: {}", text(&out));
    }
}

#[test]
fn a_weak_password_in_a_secret_file_is_refused_naming_the_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // The manifests and the repository files their `source:` fields name.
    for dir in ["manifests", "config", "dashboards", "alerting"] {
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join(dir),
            &tmp.path().join(dir),
        );
    }
    let manifests = tmp.path().join("manifests");
    let secret = tmp.path().join("admin-password");
    std::fs::write(&secret, "admin\n").expect("secret file");
    let storage = manifests.join("storage.yaml");
    let text_before = std::fs::read_to_string(&storage).expect("storage.yaml");
    let from_file = text_before.replace(
        &format!("env: {VAR}"),
        &format!("file: {}", secret.display()),
    );
    assert_ne!(text_before, from_file, "storage.yaml names the variable");
    std::fs::write(&storage, from_file).expect("storage.yaml");
    let out = Cli::new(&["validate", "--env", "local"])
        .dir(tmp.path())
        .env_remove(VAR)
        .output();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let expected = format!(
        "Parameter/grafana-admin-password spec.valueFrom.file: file {} is Grafana's default password [policy: no-default-grafana-password]",
        secret.display()
    );
    assert!(text(&out).contains(&expected), "{}", text(&out));
}

/// The password as it appears in a `Bytes([..])` debug rendering of a request body.
fn as_debug_bytes(secret: &str) -> String {
    secret
        .bytes()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn rust_log_is_honoured_and_stackwarden_log_wins_when_both_are_set() {
    let loaded = "DEBUG stackwarden::manifest: manifests loaded";
    let strong = Some("a-strong-enough-password");
    let rust_log = stackwarden(&["validate"], strong, NO_AWS, &[("RUST_LOG", "debug")]);
    assert!(text(&rust_log).contains(loaded), "{}", text(&rust_log));
    let both = stackwarden(
        &["validate"],
        strong,
        NO_AWS,
        &[("RUST_LOG", "debug"), ("STACKWARDEN_LOG", "error")],
    );
    assert!(!text(&both).contains(loaded), "{}", text(&both));
    let ours = stackwarden(
        &["validate"],
        strong,
        NO_AWS,
        &[("RUST_LOG", "error"), ("STACKWARDEN_LOG", "debug")],
    );
    assert!(text(&ours).contains(loaded), "{}", text(&ours));
    // With neither set, no log line at all (validate's own findings still print).
    let neither = stackwarden(&["validate"], strong, NO_AWS, &[]);
    let stderr = String::from_utf8_lossy(&neither.stderr).into_owned();
    for level in [" ERROR ", " WARN ", " INFO ", " DEBUG ", " TRACE "] {
        assert!(
            !stderr.contains(level),
            "a log line at the default filter: {stderr}"
        );
    }
}

#[tokio::test]
async fn no_log_level_shows_the_admin_password_in_validate_plan_or_apply() {
    let moto = Moto::start(&[]).await;
    let secret = "Quartz-Zebra-Lantern-4711";
    // LOG_SIGNABLE_BODY makes the AWS SDK print request bodies at TRACE: PutParameter's
    // carries the password.
    let trace = [("RUST_LOG", "trace"), ("LOG_SIGNABLE_BODY", "true")];
    let runs = [
        ("validate", vec!["validate"]),
        ("apply", vec!["apply", "--scope", "aws"]),
        ("plan", vec!["plan", "--scope", "aws"]),
    ];
    for (name, args) in runs {
        let out = stackwarden(&args, Some(secret), &moto.endpoint, &trace);
        let all = text(&out);
        assert!(
            out.status.code() == Some(0),
            "{name} exit {:?}: {all}",
            out.status.code()
        );
        assert!(
            all.contains("DEBUG stackwarden::manifest: manifests loaded"),
            "{name} logged at trace: {all}"
        );
        assert!(!all.contains(secret), "{name} printed the password");
        assert!(
            !all.contains(&as_debug_bytes(secret)),
            "{name} printed the password as bytes"
        );
    }
}
