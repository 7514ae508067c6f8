//! Receivers as users declare them: HTTPS with a private CA, basic auth and bearer tokens
//! read from files, extra headers, a proxy; what `validate` refuses and warns about, and what
//! the daemon delivers to real servers on loopback.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn validate(dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stackwarden"))
        .args(["validate", "--env", "test"])
        .current_dir(dir)
        .env_remove("STACKWARDEN_ENV")
        .output()
        .expect("the stackwarden binary runs")
}

/// A copy of the valid base fixture whose Stack declares `receivers` (YAML list items,
/// indented for `spec.alerts.receivers`).
fn with_receivers(receivers: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    let manifests = tmp.path().join("manifests");
    let copied = Command::new("cp")
        .arg("-r")
        .arg(repo().join("tests/fixtures/base"))
        .arg(&manifests)
        .status()
        .expect("cp runs");
    assert!(copied.success(), "copy the base fixture");
    let stack = manifests.join("stack.yaml");
    let text = std::fs::read_to_string(&stack).expect("read stack");
    let text = text.replacen(
        "    memoryBudget: 3G\n",
        &format!("    memoryBudget: 3G\n  alerts:\n    receivers:\n{receivers}"),
        1,
    );
    std::fs::write(&stack, text).expect("write stack");
    tmp
}

#[test]
fn credentials_in_a_receiver_url_or_header_are_refused_without_being_repeated() {
    let tmp = with_receivers(
        "      - { name: am, type: alertmanager, url: \"https://stackwarden:hunter2@am.example:9093\" }\n\
         \x20     - name: hook\n\
         \x20       type: webhook\n\
         \x20       url: https://hooks.example/x\n\
         \x20       headers: { Authorization: \"Bearer hunter2\", X-Scope-OrgID: observability }\n\
         \x20       auth: { bearerTokenFile: token, basic: { username: u, passwordFile: p } }\n",
    );
    let out = validate(tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for expected in [
        "Stack/demo spec.alerts.receivers[0].url: the URL carries credentials (user:password@)",
        "Stack/demo spec.alerts.receivers[1].headers.Authorization: a credential header cannot be written in a manifest",
        "Stack/demo spec.alerts.receivers[1].auth: names neither or both of basic and bearerTokenFile",
    ] {
        assert!(
            stderr.contains(expected),
            "missing `{expected}` in:\n{stderr}"
        );
    }
    assert!(
        !stderr.contains("hunter2"),
        "a credential repeated:\n{stderr}"
    );
}

#[test]
fn a_plain_http_receiver_on_another_host_warns_and_one_on_loopback_does_not() {
    let tmp = with_receivers(
        "      - { name: near, type: alertmanager, url: \"http://127.0.0.1:9093\" }\n\
         \x20     - { name: far, type: alertmanager, url: \"http://am.internal.example:9093\" }\n\
         \x20     - name: tls\n\
         \x20       type: alertmanager\n\
         \x20       url: https://am.example:9093\n\
         \x20       tls: { caFile: ca.pem }\n\
         \x20       auth: { basic: { username: stackwarden, passwordFile: /run/secrets/am } }\n\
         \x20       headers: { X-Scope-OrgID: observability }\n",
    );
    let out = validate(tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("receiver far: sends alerts over plain http:// to am.internal.example"),
        "{stderr}"
    );
    assert!(!stderr.contains("receiver near"), "{stderr}");
    assert!(!stderr.contains("receiver tls"), "{stderr}");
}
