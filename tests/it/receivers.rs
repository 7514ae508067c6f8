//! Receivers as users declare them: HTTPS with a private CA, basic auth and bearer tokens
//! read from files, extra headers, a proxy; what `validate` refuses and warns about, and what
//! the daemon delivers to real servers on loopback.

use crate::support::cli::Cli;
use crate::support::files::repo;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn validate(dir: &Path) -> Output {
    Cli::new(&["validate", "--env", "test"])
        .dir(dir)
        .env_remove("STACKWARDEN_ENV")
        .output()
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
         \x20       auth: { bearerTokenFile: token, basic: { username: u, passwordFile: p } }\n\
         \x20     - { name: p, type: webhook, url: \"https://h.example/\", auth: { bearerTokenFromParameter: no-such-parameter } }\n",
    );
    let out = validate(tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for expected in [
        "Stack/demo spec.alerts.receivers[0].url: the URL carries credentials (user:password@)",
        "Stack/demo spec.alerts.receivers[1].headers.Authorization: a credential header cannot be written in a manifest",
        "Stack/demo spec.alerts.receivers[1].auth: names neither or more than one of basic, bearerTokenFile and bearerTokenFromParameter",
        "Stack/demo spec.alerts.receivers[2].auth.bearerTokenFromParameter: `no-such-parameter` is not a declared Parameter",
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

// ---------------------------------------------------------------------------------------
// Delivery to real servers on loopback, through the daemon's own dispatcher.

use crate::support::alertmanager::Alertmanager;
use crate::support::tls::{Pki, Tinyproxy, TlsSink};
use serde_json::json;
use stackwarden::alerts::deliver::{Dispatcher, ReceiverStatus};
use stackwarden::alerts::{Alert, AlertName, Event};
use stackwarden::model::Receiver;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

const PASSWORD: &str = "am-pa55word-not-for-logs";
const TOKEN: &str = "bearer-t0ken-not-for-logs";
const SIGNING_KEY: &str = "signing-k3y-not-for-logs";
const DELIVERY: Duration = Duration::from_secs(30);

fn receiver(value: serde_json::Value) -> Receiver {
    serde_json::from_value(value).expect("a receiver as a manifest declares it")
}

fn drift(resource: &str) -> Alert {
    let labels: BTreeMap<String, String> = [
        ("alertname", "StackDrift"),
        ("stack", "receivers-test"),
        ("kind", "Container"),
        ("resource", resource),
        ("severity", "warning"),
        ("cause", "drift"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let annotations = [
        ("summary", format!("Container/{resource} drifted")),
        ("differs", "spec.user: 10001:10001 → root".to_string()),
        ("page", "http://127.0.0.1:9464/".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Alert {
        fingerprint: format!("receivers-test/Container/{resource}"),
        name: AlertName::StackDrift,
        labels,
        annotations,
        starts_at: SystemTime::now(),
    }
}

/// Writes `content` to a 0600 file in `dir`.
fn secret_file(dir: &Path, name: &str, content: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("{content}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DELIVERY;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn status_of(d: &Dispatcher, name: &str) -> ReceiverStatus {
    d.status()
        .into_iter()
        .find(|r| r.name == name)
        .expect("the receiver is running")
}

/// Everything the tracing subscriber writes, at trace level, for the whole test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
    /// Installs it for this thread (the test's current-thread runtime runs every task here).
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let w = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || w.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }
}

#[tokio::test]
async fn an_https_alertmanager_with_basic_auth_gets_the_drift_and_its_resolution() {
    let log = Captured::default();
    let _guard = log.install();
    let pki = Pki::new("stackwarden test CA");
    let am = Alertmanager::start_https(&pki.cert, &pki.key, &pki.ca, "stackwarden", PASSWORD);
    let files = tempfile::tempdir().unwrap();
    let password = secret_file(files.path(), "am-password", PASSWORD);
    let mut d = Dispatcher::default();
    let errors = d.configure(&[receiver(json!({
        "name": "am", "type": "alertmanager", "url": am.url,
        "tls": { "caFile": pki.ca },
        "auth": { "basic": { "username": "stackwarden", "passwordFile": password } },
        "headers": { "X-Scope-OrgID": "observability" },
    }))]);
    assert!(errors.is_empty(), "{errors:?}");
    let alert = drift("loki");
    d.push(&[Event::Firing(alert.clone())]);
    let notified = |status: &str| {
        am.sink
            .notifications()
            .iter()
            .any(|n| n.status == status && n.mentions("resource", "loki"))
    };
    wait_for("Alertmanager notifies the drift as firing", || {
        notified("firing")
    })
    .await;
    d.push(&[Event::Resolved(alert, SystemTime::now())]);
    wait_for("Alertmanager notifies the drift as resolved", || {
        notified("resolved")
    })
    .await;
    let s = status_of(&d, "am");
    assert!(s.sent >= 2 && s.last_error.is_none(), "{s:?}");

    let shown = format!(
        "{}{}",
        log.text(),
        serde_json::to_string(&d.status()).unwrap()
    );
    assert!(
        shown.contains("alert delivery answered") && shown.contains("authorization"),
        "the trace of the exchange was captured:\n{shown}"
    );
    assert!(!shown.contains(PASSWORD), "the password leaked:\n{shown}");
}

#[tokio::test]
async fn a_certificate_from_an_untrusted_ca_fails_as_tls_and_the_alert_arrives_once_the_ca_is_configured()
 {
    let pki = Pki::new("stackwarden test CA");
    let am = Alertmanager::start_https(&pki.cert, &pki.key, &pki.ca, "stackwarden", PASSWORD);
    let files = tempfile::tempdir().unwrap();
    let password = secret_file(files.path(), "am-password", PASSWORD);
    let declared = |ca: Option<&Path>| {
        let mut r = json!({
            "name": "am", "type": "alertmanager", "url": am.url,
            "auth": { "basic": { "username": "stackwarden", "passwordFile": password } },
        });
        if let Some(ca) = ca {
            r["tls"] = json!({ "caFile": ca });
        }
        receiver(r)
    };
    let mut d = Dispatcher::default();
    assert!(d.configure(&[declared(None)]).is_empty());
    d.push(&[Event::Firing(drift("grafana"))]);
    wait_for("the delivery fails on the certificate", || {
        status_of(&d, "am")
            .last_error
            .is_some_and(|e| e.contains("TLS handshake failed") && e.contains("UnknownIssuer"))
    })
    .await;
    let s = status_of(&d, "am");
    assert!(s.failed >= 1 && s.pending == 1, "{s:?}");
    assert!(am.sink.received().is_empty(), "nothing got through");

    assert!(d.configure(&[declared(Some(&pki.ca))]).is_empty());
    wait_for(
        "the pending alert is delivered with the CA configured",
        || {
            am.sink
                .notifications()
                .iter()
                .any(|n| n.status == "firing" && n.mentions("resource", "grafana"))
        },
    )
    .await;
    wait_for("the error is cleared", || {
        status_of(&d, "am").last_error.is_none()
    })
    .await;
}

#[tokio::test]
async fn an_https_webhook_gets_the_signed_body_the_bearer_token_and_the_tenant_header() {
    let log = Captured::default();
    let _guard = log.install();
    let pki = Pki::new("stackwarden test CA");
    let sink = TlsSink::start(&pki).await;
    let files = tempfile::tempdir().unwrap();
    let token = secret_file(files.path(), "token", TOKEN);
    let key = secret_file(files.path(), "key", SIGNING_KEY);
    let mut d = Dispatcher::default();
    // The token is a Parameter's value (its valueFrom, as the manifests' load fills it in).
    let mut hooks = receiver(json!({
        "name": "hooks", "type": "webhook", "url": format!("{}/hooks/stackwarden", sink.url),
        "signingKey": { "file": key },
        "tls": { "caFile": pki.ca },
        "auth": { "bearerTokenFromParameter": "webhook-token" },
        "headers": { "X-Scope-OrgID": "observability" },
    }));
    hooks.parameters.insert(
        "webhook-token".into(),
        serde_json::from_value(json!({ "file": token })).unwrap(),
    );
    let errors = d.configure(&[hooks]);
    assert!(errors.is_empty(), "{errors:?}");
    d.push(&[Event::Firing(drift("tempo"))]);
    wait_for("the sink receives the body", || !sink.received().is_empty()).await;
    let r = sink.received().remove(0);
    assert_eq!(r.path, "/hooks/stackwarden");
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(r.header("x-scope-orgid"), Some("observability"));
    let expected = format!(
        "sha256={}",
        stackwarden::alerts::deliver::sign(SIGNING_KEY.as_bytes(), r.body.as_bytes())
    );
    assert_eq!(r.header("x-stackwarden-signature"), Some(expected.as_str()));
    assert_eq!(r.json().unwrap()["alert"]["labels"]["resource"], "tempo");

    let shown = format!(
        "{}{}",
        log.text(),
        serde_json::to_string(&d.status()).unwrap()
    );
    for secret in [TOKEN, SIGNING_KEY] {
        assert!(!shown.contains(secret), "a secret leaked:\n{shown}");
    }
    assert!(!r.body.contains(TOKEN) && !r.body.contains(SIGNING_KEY));
}

#[tokio::test]
async fn an_https_delivery_goes_through_the_proxy_https_proxy_names() {
    let pki = Pki::new("stackwarden test CA");
    let sink = TlsSink::start(&pki).await;
    let proxy = Tinyproxy::start();
    let proxy_url = proxy.url.clone();
    let env: stackwarden::alerts::deliver::Environment =
        Arc::new(move |name: &str| (name == "HTTPS_PROXY").then(|| proxy_url.clone()));
    let mut d = Dispatcher::default().with_environment(env);
    let errors = d.configure(&[receiver(json!({
        "name": "hooks", "type": "webhook", "url": format!("{}/via-proxy", sink.url),
        "tls": { "caFile": pki.ca },
    }))]);
    assert!(errors.is_empty(), "{errors:?}");
    d.push(&[Event::Firing(drift("mimir"))]);
    wait_for("the sink receives the body", || !sink.received().is_empty()).await;
    let port = sink.url.rsplit(':').next().unwrap();
    let log = proxy.log_text();
    assert!(
        log.contains(&format!("CONNECT 127.0.0.1:{port}")),
        "the proxy did not carry it:\n{log}"
    );
}

#[tokio::test]
async fn a_slack_receiver_gets_one_message_when_a_drift_fires_and_one_when_it_resolves() {
    let sink = crate::support::alertmanager::WebhookSink::start();
    let mut d = Dispatcher::default();
    let errors = d.configure(&[receiver(json!({
        "name": "slack", "type": "slack", "url": format!("{}/services/T0/B0/abc", sink.url),
    }))]);
    assert!(errors.is_empty(), "{errors:?}");
    let mut alert = drift("loki");
    alert.annotations.insert(
        "summary".into(),
        "Container/loki drifted <@here> & more".into(),
    );
    alert.annotations.insert(
        "differs".into(),
        "spec.user: 10001:10001 → root; spec.env.LOKI_PASSWORD: differs".into(),
    );
    alert.annotations.insert("action".into(), "repaired".into());
    d.push(&[Event::Firing(alert.clone())]);
    wait_for("the firing message", || sink.received().len() == 1).await;
    d.push(&[Event::Resolved(alert, SystemTime::now())]);
    wait_for("the resolved message", || sink.received().len() == 2).await;
    let messages: Vec<serde_json::Value> =
        sink.received().iter().map(|r| r.json().unwrap()).collect();
    for (m, state) in messages.iter().zip(["FIRING", "RESOLVED"]) {
        let title = format!("[{state}] StackDrift: Container/loki");
        assert!(m["text"].as_str().unwrap().starts_with(&title), "{m}");
        assert_eq!(m["blocks"][0]["type"], "header");
        assert_eq!(m["blocks"][0]["text"]["text"], title.as_str());
        assert_eq!(
            m["blocks"][1]["text"]["text"], "Container/loki drifted &lt;@here&gt; &amp; more",
            "mrkdwn escaped, so nothing in a value can mention or link"
        );
        assert_eq!(
            m["blocks"][2]["text"]["text"],
            "*Before → after*\n```spec.user: 10001:10001 → root; spec.env.LOKI_PASSWORD: differs```"
        );
        let context = m["blocks"][3]["elements"][0]["text"].as_str().unwrap();
        assert!(context.contains("stack *receivers-test*"), "{context}");
        assert!(context.contains("· repaired"), "{context}");
        assert!(
            context.ends_with("<http://127.0.0.1:9464/|stackwarden page>"),
            "{context}"
        );
    }
    assert_eq!(sink.received()[0].path, "/services/T0/B0/abc");
}

#[tokio::test]
async fn a_receiver_failing_past_the_threshold_is_alerted_on_the_others_and_resolved_once_fixed() {
    let pki = Pki::new("stackwarden test CA");
    let am = Alertmanager::start_https(&pki.cert, &pki.key, &pki.ca, "stackwarden", PASSWORD);
    let sink = crate::support::alertmanager::WebhookSink::start();
    let files = tempfile::tempdir().unwrap();
    let password = secret_file(files.path(), "am-password", PASSWORD);
    let declared = |ca: Option<&Path>| {
        let mut am = json!({
            "name": "am", "type": "alertmanager", "url": am.url,
            "auth": { "basic": { "username": "stackwarden", "passwordFile": password } },
        });
        if let Some(ca) = ca {
            am["tls"] = json!({ "caFile": ca });
        }
        vec![
            receiver(am),
            receiver(
                json!({ "name": "slack", "type": "slack", "url": format!("{}/services/x", sink.url) }),
            ),
        ]
    };
    let metrics = Arc::new(stackwarden::status::Metrics::new());
    let mut d = Dispatcher::new(metrics.clone()).with_failing_after(Duration::from_secs(1));
    assert!(d.configure(&declared(None)).is_empty());
    d.push(&[Event::Firing(drift("alloy"))]);
    let said = |prefix: &str| {
        sink.received().iter().any(|r| {
            r.json()
                .is_some_and(|m| m["text"].as_str().is_some_and(|t| t.starts_with(prefix)))
        })
    };
    wait_for("the other receiver is told that am fails", || {
        said("[FIRING] AlertReceiverFailing: Receiver/am")
    })
    .await;
    let s = status_of(&d, "am");
    assert_eq!(
        s.last_error_kind,
        Some(stackwarden::alerts::deliver::FailureKind::Tls),
        "{s:?}"
    );
    assert!(
        s.failing_since.is_some() && s.last_success.is_none() && s.pending == 1,
        "{s:?}"
    );
    let shown = serde_json::to_value(&s).unwrap();
    assert_eq!(shown["lastErrorKind"], "tls");
    assert!(status_of(&d, "slack").last_success.is_some());
    let exposed = metrics.encode();
    assert!(
        exposed.contains(r#"stackwarden_alert_delivery_failures_total{receiver="am",kind="tls"}"#),
        "{exposed}"
    );

    assert!(d.configure(&declared(Some(&pki.ca))).is_empty());
    wait_for("the alert on the others resolves once am delivers", || {
        said("[RESOLVED] AlertReceiverFailing: Receiver/am")
    })
    .await;
    let s = status_of(&d, "am");
    assert!(
        s.last_success.is_some() && s.last_error_kind.is_none(),
        "{s:?}"
    );
}

#[test]
fn the_shipped_grafana_alerting_sends_to_the_stacks_alertmanager_and_validate_warns_about_none_of_it()
 {
    for env in ["dev", "staging", "prod", "local"] {
        let out = Cli::new(&["validate", "--env", env])
            .dir(repo())
            .env_remove("STACKWARDEN_ENV")
            .output();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{env}: {stderr}");
        for line in stderr.lines().filter(|l| l.starts_with("warning:")) {
            assert!(
                !line.contains("alerting/") && !line.contains("receiver"),
                "{env}: {line}"
            );
        }
    }
    let points = std::fs::read_to_string(repo().join("alerting/contact-points.yaml")).unwrap();
    assert!(points.contains("url: ${alertmanagerUrl}"), "{points}");
}

#[test]
fn a_receivers_relative_files_resolve_against_the_manifests_directory() {
    let tmp = with_receivers(
        "      - name: am\n\
         \x20       type: alertmanager\n\
         \x20       url: https://am.example:9093\n\
         \x20       tls: { caFile: certs/ca.pem }\n\
         \x20       auth: { basic: { username: stackwarden, passwordFile: ../secrets/am } }\n\
         \x20     - { name: hook, type: webhook, url: \"https://h.example/\", auth: { bearerTokenFile: /run/secrets/token } }\n\
         \x20     - { name: p, type: webhook, url: \"https://h.example/\", auth: { bearerTokenFromParameter: admin-password } }\n",
    );
    let manifests = tmp.path().join("manifests");
    let loaded = stackwarden::manifest::load_in(&manifests, Some("test"), Some(tmp.path()))
        .expect("the manifests load");
    let r = &loaded.desired.stack.alerts.receivers;
    assert_eq!(
        r[0].tls.as_ref().and_then(|t| t.ca_file.clone()),
        Some(manifests.join("certs/ca.pem"))
    );
    let basic = r[0].auth.as_ref().and_then(|a| a.basic.clone()).unwrap();
    assert_eq!(basic.password_file, Some(manifests.join("../secrets/am")));
    assert_eq!(
        r[1].auth.as_ref().and_then(|a| a.bearer_token_file.clone()),
        Some(PathBuf::from("/run/secrets/token"))
    );
    // A credential named by Parameter is read where the Parameter's value is.
    assert_eq!(
        r[2].parameters["admin-password"].env.as_deref(),
        Some("DEMO_PASSWORD")
    );
}
