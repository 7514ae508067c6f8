//! Drift alerts end to end: the real daemon against moto and dockerd, alerting a real
//! Alertmanager whose webhook receiver is a sink this test reads. What counts is what
//! Alertmanager delivers (and what a generic webhook receives), never stackwarden's own word.

use crate::daemon::{audited, converged, ingress_rule_count, revoke_first_ingress};
use crate::support::alertmanager::{Alertmanager, Notification, WebhookSink};
use crate::support::daemon::{Daemon, DaemonOptions, SECRET, TOKEN, set_value};
use crate::support::docker as dk;
use crate::support::moto::Moto;
use std::time::{Duration, Instant, SystemTime};

/// A cold converge of the whole local stack takes seconds; CI machines are slower.
const CONVERGE: Duration = Duration::from_secs(180);
/// Generous bound for an alert to travel; the benchmark reports the real figure.
const DELIVER: Duration = Duration::from_secs(60);

/// True when Alertmanager notified `alertname` on `resource` in state `status`.
fn notified(n: &[Notification], alertname: &str, resource: &str, status: &str) -> bool {
    n.iter().any(|n| {
        n.alerts.iter().any(|a| {
            a.status == status
                && a.labels.get("alertname").map(String::as_str) == Some(alertname)
                && a.labels.get("resource").map(String::as_str) == Some(resource)
        })
    })
}

/// Notifications that carry `alertname` on `resource` firing.
fn firing_notifications(n: &[Notification], alertname: &str, resource: &str) -> usize {
    n.iter()
        .filter(|n| {
            n.alerts.iter().any(|a| {
                a.status == "firing"
                    && a.labels.get("alertname").map(String::as_str) == Some(alertname)
                    && a.labels.get("resource").map(String::as_str) == Some(resource)
            })
        })
        .count()
}

/// A seeded moto, a private Alertmanager, and an AWS-scope daemon alerting it, converged.
pub(crate) async fn aws_daemon_alerting(mode: &str) -> (Moto, Alertmanager, Daemon) {
    let moto = Moto::start(&[]).await;
    let am = Alertmanager::start();
    let d = Daemon::start(DaemonOptions {
        aws_endpoint: Some(&moto.endpoint),
        scope: "aws",
        resync: "5s",
        alertmanager: Some(&am.url),
        ..Default::default()
    });
    d.wait_until("the stack converges", CONVERGE, || converged(&d.status()));
    if mode != "enforce" {
        set_value(&d.dir, "mode", mode);
        d.wait_until("the mode is in force", CONVERGE, || {
            d.status()["mode"] == mode
        });
    }
    (moto, am, d)
}

/// A whole-stack daemon (AWS and the host) alerting a private Alertmanager, converged: the
/// Docker lock held, the stack's containers (and `remove`, left by a failed run) removed
/// first.
struct Full {
    _lock: dk::Exclusive,
    docker: bollard::Docker,
    _moto: Moto,
    am: Alertmanager,
    d: Daemon,
}

async fn full_daemon_alerting(resync: &str, log_level: &str, remove: &[&str]) -> Full {
    let lock = dk::exclusive().await;
    let docker = dk::docker().await;
    dk::cleanup(&docker, "observability", remove).await;
    let moto = Moto::start(&[]).await;
    let am = Alertmanager::start();
    let d = Daemon::start(DaemonOptions {
        aws_endpoint: Some(&moto.endpoint),
        resync,
        log_level,
        alertmanager: Some(&am.url),
        ..Default::default()
    });
    d.wait_until("the stack converges", CONVERGE, || converged(&d.status()));
    Full {
        _lock: lock,
        docker,
        _moto: moto,
        am,
        d,
    }
}

/// Edits the Stack document of a daemon's manifests and waits until the edit is in force.
fn edit_stack(d: &Daemon, edit: impl FnOnce(String) -> String) {
    let path = d.dir.join("manifests/stack.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = edit(text.clone());
    assert_ne!(text, edited, "the edit changes nothing");
    let before = d.status()["manifest"]["revision"].clone();
    std::fs::write(&path, edited).unwrap();
    d.wait_until("the edit is in force", CONVERGE, || {
        let s = d.status();
        s["manifest"]["revision"] != before && s["manifest"]["rejected"].is_null()
    });
}

#[tokio::test]
async fn a_root_container_fires_drift_and_violation_and_both_resolve_after_the_repair() {
    let Full {
        _lock,
        docker,
        _moto,
        am,
        d,
    } = full_daemon_alerting("5s", "trace", &[]).await;
    // The first converge of a new stack created everything and alerted nothing.
    assert!(am.sink.received().is_empty(), "{:?}", am.sink.received());

    let t0 = Instant::now();
    dk::recreate_by_hand(&docker, "loki", true, |b| b.user = Some("0".into())).await;
    am.wait_until("both alerts fire", DELIVER, || {
        let n = am.sink.notifications();
        notified(&n, "StackDrift", "loki", "firing")
            && notified(&n, "PolicyViolation", "loki", "firing")
    });
    let fired = t0.elapsed();
    am.wait_until("both alerts resolve", DELIVER, || {
        let n = am.sink.notifications();
        notified(&n, "StackDrift", "loki", "resolved")
            && notified(&n, "PolicyViolation", "loki", "resolved")
    });
    eprintln!(
        "root loki: firing notified {:.2} s, resolved notified {:.2} s after the drift",
        fired.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    assert!(audited(&d.status(), "Container/loki", "drift"));
    let loki = dk::inspect(&docker, "loki").await;
    assert_eq!(loki.config.unwrap().user.as_deref(), Some("10001:10001"));

    // Labels as documented; the payload carries no secret.
    let n = am.sink.notifications();
    let drift = n
        .iter()
        .flat_map(|n| &n.alerts)
        .find(|a| {
            a.labels.get("alertname").map(String::as_str) == Some("StackDrift")
                && a.labels.get("resource").map(String::as_str) == Some("loki")
        })
        .unwrap();
    for (k, v) in [
        ("stack", "observability"),
        ("environment", "local"),
        ("kind", "Container"),
        ("resource", "loki"),
        ("severity", "warning"),
        ("cause", "drift"),
    ] {
        assert_eq!(drift.labels.get(k).map(String::as_str), Some(v), "{k}");
    }
    for r in am.sink.received() {
        assert!(
            !r.body.contains(SECRET),
            "a notification carries the secret"
        );
        assert!(!r.body.contains(TOKEN), "a notification carries the token");
    }
    let alerts = am.get("/api/v2/alerts?active=true&silenced=true&inhibited=true");
    assert!(!alerts.unwrap().1.contains(SECRET));
}

#[tokio::test]
async fn a_standing_drift_in_warn_mode_is_notified_once_across_ten_passes() {
    let (moto, am, d) = aws_daemon_alerting("warn").await;
    let group = revoke_first_ingress(&moto).await;
    let revoked = ingress_rule_count(&moto, &group).await;
    am.wait_until("the drift is notified", DELIVER, || {
        notified(
            &am.sink.notifications(),
            "StackDrift",
            "observability",
            "firing",
        )
    });
    for _ in 0..10 {
        let passes = d.passes();
        assert_eq!(d.post("/reconcile", Some(TOKEN)).unwrap().0, 202);
        d.wait_until("a pass", DELIVER, || d.passes() > passes);
    }
    // Alertmanager's group interval is 1 s: anything these passes caused is out by now.
    std::thread::sleep(Duration::from_secs(3));
    let n = am.sink.notifications();
    assert_eq!(
        firing_notifications(&n, "StackDrift", "observability"),
        1,
        "{n:#?}"
    );
    // Warn mode alerts and never repairs.
    assert_eq!(ingress_rule_count(&moto, &group).await, revoked);
    let s = d.status();
    let active = s["alerts"]["active"].as_array().unwrap();
    assert!(
        active.iter().any(|a| a["annotations"]["action"]
            .as_str()
            .unwrap_or("")
            .contains("warn")),
        "{s}"
    );
}

#[tokio::test]
async fn an_alert_raised_while_alertmanager_is_down_arrives_after_it_restarts() {
    let (moto, mut am, d) = aws_daemon_alerting("warn").await;
    am.stop();
    revoke_first_ingress(&moto).await;
    d.wait_until("delivery fails and the alert waits", DELIVER, || {
        let s = d.status();
        s["alerts"]["receivers"].as_array().is_some_and(|r| {
            r.iter()
                .any(|r| r["pending"] == 1 && !r["lastError"].is_null())
        })
    });
    std::thread::sleep(Duration::from_secs(30));
    assert!(am.sink.notifications().is_empty());
    am.restart();
    am.wait_until("the alert arrives", DELIVER, || {
        notified(
            &am.sink.notifications(),
            "StackDrift",
            "observability",
            "firing",
        )
    });
    let metrics = d.get("/metrics").unwrap().1;
    assert!(
        metrics
            .contains("stackwarden_alerts_sent_total{receiver=\"alertmanager\",result=\"error\"}"),
        "{metrics}"
    );
}

/// HMAC-SHA256 of `body` under `key`, by Python's standard library (not our code).
fn python_hmac(key: &str, body: &str) -> String {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import hmac,hashlib,sys; print(hmac.new(sys.argv[1].encode(), sys.stdin.buffer.read(), hashlib.sha256).hexdigest())",
            key,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(body.as_bytes())?;
            c.wait_with_output()
        })
        .expect("python3 runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn a_webhook_receives_bodies_whose_hmac_verifies_with_the_shared_key() {
    let (moto, _am, d) = aws_daemon_alerting("enforce").await;
    let hook = WebhookSink::start();
    let key = "a-shared-key-nobody-logs";
    let key_file = d.dir.join("webhook-key");
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    edit_stack(&d, |text| {
        text.replacen(
            "        url: ${alertmanagerUrl}\n",
            &format!(
                "        url: ${{alertmanagerUrl}}\n      - name: hooks\n        type: webhook\n        url: {}/hooks/stackwarden\n        signingKey: {{ file: {} }}\n",
                hook.url,
                key_file.display()
            ),
            1,
        )
    });
    let group = revoke_first_ingress(&moto).await;
    let revoked = ingress_rule_count(&moto, &group).await;
    d.wait_until("firing and resolved reach the webhook", DELIVER, || {
        let statuses: Vec<String> = hook
            .received()
            .iter()
            .filter_map(|r| r.json())
            .map(|j| j["status"].as_str().unwrap_or("").to_string())
            .collect();
        statuses.contains(&"firing".to_string()) && statuses.contains(&"resolved".to_string())
    });
    assert_eq!(ingress_rule_count(&moto, &group).await, revoked + 1);
    for r in hook.received() {
        let signature = r
            .header("X-Stackwarden-Signature")
            .expect("every body is signed");
        assert_eq!(signature, format!("sha256={}", python_hmac(key, &r.body)));
        assert_ne!(
            signature,
            format!("sha256={}", python_hmac("another key", &r.body))
        );
        let j = r.json().unwrap();
        assert_eq!(j["alert"]["labels"]["resource"], "observability", "{j}");
        assert!(!r.body.contains(key), "the body carries the key");
    }
    assert_eq!(hook.received()[0].json().unwrap()["status"], "firing");
    assert!(!d.log_text().contains(key), "the log carries the key");
}

#[tokio::test]
async fn an_acknowledgement_holds_repair_and_alert_until_it_expires_then_both_happen() {
    let (moto, am, d) = aws_daemon_alerting("enforce").await;
    let expires = humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(30));
    edit_stack(&d, |text| {
        text.replacen(
            "  alerts:\n",
            &format!(
                "  acknowledgements:\n    - resource: SecurityGroup/observability\n      fields: [ingress]\n      reason: \"a port closed on purpose until the expiry (test)\"\n      expires: \"{expires}\"\n  alerts:\n"
            ),
            1,
        )
    });
    assert_eq!(d.status()["acknowledgements"][0]["active"], true);
    let group = revoke_first_ingress(&moto).await;
    let revoked = ingress_rule_count(&moto, &group).await;
    // Two resyncs go by: the drift is seen, and left alone.
    let passes = d.passes();
    d.wait_until("two passes see the drift", DELIVER, || {
        d.passes() >= passes + 2
    });
    assert_eq!(ingress_rule_count(&moto, &group).await, revoked);
    assert!(
        am.sink.notifications().is_empty(),
        "{:?}",
        am.sink.notifications()
    );
    let metrics = d.get("/metrics").unwrap().1;
    assert!(
        metrics
            .contains("stackwarden_acknowledged{kind=\"SecurityGroup\",name=\"observability\"} 1"),
        "{metrics}"
    );
    // At expiry it is repaired, and people hear about it.
    am.wait_until("the expired drift alerts and resolves", DELIVER, || {
        let n = am.sink.notifications();
        notified(&n, "StackDrift", "observability", "firing")
            && notified(&n, "StackDrift", "observability", "resolved")
    });
    assert_eq!(ingress_rule_count(&moto, &group).await, revoked + 1);
    assert_eq!(d.status()["acknowledgements"][0]["active"], false);
}

/// Freezes a container's service (SIGSTOP to its httpd, as a hung process would be): its
/// health check times out from then on, until the container is restarted.
fn freeze(container: &str) {
    let _ = std::process::Command::new("docker")
        .env("DOCKER_HOST", "unix:///var/run/docker.sock")
        .args([
            "exec",
            container,
            "sh",
            "-c",
            "for p in /proc/[0-9]*; do read -r c < $p/comm && [ \"$c\" = httpd ] && kill -STOP ${p#/proc/}; done; true",
        ])
        .output();
}

#[tokio::test]
async fn an_unhealthy_container_is_restarted_with_backoff_and_its_alert_fires_and_resolves() {
    let Full {
        _lock,
        docker,
        _moto,
        am,
        d,
    } = full_daemon_alerting("5s", "info", &[]).await;

    // A service that hangs again after every restart.
    let limit = Instant::now() + Duration::from_secs(300);
    while !notified(
        &am.sink.notifications(),
        "ContainerUnhealthy",
        "loki",
        "firing",
    ) {
        assert!(
            Instant::now() < limit,
            "no ContainerUnhealthy: {}",
            d.log_tail()
        );
        freeze("loki");
        std::thread::sleep(Duration::from_millis(500));
    }
    let restarts: Vec<String> = d.status()["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["resource"] == "Container/loki"
                && e["fields"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|f| f["path"] == "health"))
        })
        .map(|e| e["at"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(restarts.len() >= 3, "restarts: {restarts:?}");
    // It is not a hand-made change: no drift alert for it.
    let n = am.sink.notifications();
    assert!(
        !notified(&n, "StackDrift", "loki", "firing"),
        "{:#?}",
        n.iter().map(|n| &n.body).collect::<Vec<_>>()
    );

    // Left alone, it stays healthy, and the alert resolves.
    am.wait_until("the alert resolves", Duration::from_secs(180), || {
        notified(
            &am.sink.notifications(),
            "ContainerUnhealthy",
            "loki",
            "resolved",
        )
    });
    let loki = dk::inspect(&docker, "loki").await;
    assert_eq!(loki.state.unwrap().running, Some(true));
}

/// The condition `kind` (`Synced`, `Drifted`) of `id` in a status: (status, reason).
fn condition(status: &serde_json::Value, id: &str, kind: &str) -> (String, String) {
    let c = crate::daemon::resource(status, id)
        .and_then(|r| r["conditions"].as_array())
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind));
    let field = |k: &str| {
        c.and_then(|c| c[k].as_str())
            .unwrap_or_default()
            .to_string()
    };
    (field("status"), field("reason"))
}

/// Takes `name` with a root container no stack manages, as `docker rm -f` then `docker run
/// --user 0` would; retried when the daemon's own repair takes the name in between.
async fn take_name_as_root(docker: &bollard::Docker, name: &str) -> String {
    for _ in 0..20 {
        dk::remove(docker, name).await;
        let body = bollard::models::ContainerCreateBody {
            image: Some(dk::STUB_IMAGE.into()),
            user: Some("0".into()),
            host_config: Some(bollard::models::HostConfig {
                network_mode: Some("none".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let opts = bollard::query_parameters::CreateContainerOptions {
            name: Some(name.to_string()),
            ..Default::default()
        };
        if let Ok(created) = docker.create_container(Some(opts), body).await {
            docker
                .start_container(
                    &created.id,
                    None::<bollard::query_parameters::StartContainerOptions>,
                )
                .await
                .expect("the foreign container starts");
            return created.id;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the name {name} could not be taken by hand");
}

#[tokio::test]
async fn a_declared_name_taken_by_a_foreign_root_container_shows_on_its_resource_and_alerts() {
    let Full {
        _lock,
        docker,
        _moto,
        am,
        d,
    } = full_daemon_alerting("5s", "info", &["loki"]).await;

    let foreign = take_name_as_root(&docker, "loki").await;
    d.wait_until("Container/loki shows the holder", DELIVER, || {
        let s = d.status();
        condition(&s, "Container/loki", "Synced")
            == ("False".into(), "HeldByForeignContainer".into())
            && condition(&s, "Container/loki", "Drifted").0 == "True"
            && s["phase"] == "Degraded"
    });
    let s = d.status();
    let on_loki = crate::daemon::resource(&s, "Container/loki")
        .map(|r| r["violations"].to_string())
        .unwrap_or_default();
    assert!(on_loki.contains("no-root-containers"), "{on_loki}");
    am.wait_until("drift and violation fire on loki", DELIVER, || {
        let n = am.sink.notifications();
        notified(&n, "StackDrift", "loki", "firing")
            && notified(&n, "PolicyViolation", "loki", "firing")
    });
    // Never written to: the holder is the very container made by hand, still running.
    let held = dk::inspect(&docker, "loki").await;
    assert_eq!(held.id.as_deref(), Some(foreign.as_str()));
    assert_eq!(held.state.and_then(|s| s.running), Some(true));

    // Gone again: loki comes back as declared and both alerts resolve.
    dk::remove(&docker, "loki").await;
    am.wait_until("both alerts resolve", CONVERGE, || {
        let n = am.sink.notifications();
        notified(&n, "StackDrift", "loki", "resolved")
            && notified(&n, "PolicyViolation", "loki", "resolved")
    });
    d.wait_until("the stack converges again", CONVERGE, || {
        converged(&d.status())
    });
    let loki = dk::inspect(&docker, "loki").await;
    assert_eq!(
        loki.config.and_then(|c| c.user).as_deref(),
        Some("10001:10001")
    );
}

#[tokio::test]
async fn a_resolution_in_the_last_pass_before_sigterm_still_reaches_the_receiver() {
    let (moto, am, mut d) = aws_daemon_alerting("enforce").await;
    // Found and repaired in one pass: the alert fires and resolves at once, and the
    // resolution waits in the outbox for its hold after the firing is delivered. The process
    // is stopped as soon as the repair shows.
    revoke_first_ingress(&moto).await;
    d.wait_until("the repair is audited", CONVERGE, || {
        audited(&d.status(), "SecurityGroup/observability", "drift")
    });
    assert_eq!(d.terminate(), Some(0), "{}", d.log_tail());
    am.wait_until(
        "the firing and the resolution are notified",
        DELIVER,
        || {
            let n = am.sink.notifications();
            notified(&n, "StackDrift", "observability", "firing")
                && notified(&n, "StackDrift", "observability", "resolved")
        },
    );
}

#[tokio::test]
async fn a_daemon_restarted_on_an_existing_stack_alerts_on_what_was_removed_while_it_was_down() {
    let (moto, am, mut d) = aws_daemon_alerting("enforce").await;
    assert_eq!(d.terminate(), Some(0), "{}", d.log_tail());
    // While no daemon runs, the parameter is deleted by hand.
    let ssm = aws_sdk_ssm::Client::new(&moto.sdk_config().await);
    let names = ssm
        .describe_parameters()
        .send()
        .await
        .expect("describe parameters");
    let name = names
        .parameters()
        .first()
        .and_then(|p| p.name())
        .expect("the stack's parameter")
        .to_string();
    ssm.delete_parameter()
        .name(&name)
        .send()
        .await
        .expect("delete parameter");
    // The next daemon finds the stack there but for it: a removal, alerted and repaired.
    let next = Daemon::start_in(
        &d.dir,
        DaemonOptions {
            aws_endpoint: Some(&moto.endpoint),
            scope: "aws",
            resync: "5s",
            alertmanager: Some(&am.url),
            ..Default::default()
        },
    );
    next.wait_until("the stack converges", CONVERGE, || {
        converged(&next.status())
    });
    am.wait_until("the removal is notified", DELIVER, || {
        notified(
            &am.sink.notifications(),
            "StackDrift",
            "grafana-admin-password",
            "firing",
        )
    });
    ssm.get_parameter()
        .name(&name)
        .send()
        .await
        .expect("the parameter is back");
}

#[tokio::test]
async fn a_repair_that_finishes_in_the_background_alerts_like_any_other() {
    let Full {
        _lock,
        docker,
        _moto,
        am,
        d,
    } = full_daemon_alerting("30s", "info", &[]).await;
    // Pyroscope's health check takes 2.5 s to pass: a repair waits on it, past the 2 s after
    // which a pass lets its writes go on in the background.
    let containers = d.dir.join("manifests/host/containers.yaml");
    let text = std::fs::read_to_string(&containers).unwrap();
    let edited = text.replacen(
        r#"test: [CMD, wget, -q, -O, /dev/null, "http://127.0.0.1:4040/ready"]"#,
        r#"test: [CMD-SHELL, "sleep 2.5"]"#,
        1,
    );
    assert_ne!(text, edited);
    std::fs::write(&containers, edited).unwrap();
    d.wait_until("the slow check is in force", CONVERGE, || {
        converged(&d.status()) && d.log_text().contains("writes continue in the background")
    });
    // `docker update --restart no`: a hand-made change, repaired by a recreate that waits on
    // the slow check, in the background.
    docker
        .update_container(
            "pyroscope",
            bollard::models::ContainerUpdateBody {
                restart_policy: Some(bollard::models::RestartPolicy {
                    name: Some(bollard::models::RestartPolicyNameEnum::NO),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            },
        )
        .await
        .expect("docker update");
    d.wait_until("the repair is audited", CONVERGE, || {
        audited(&d.status(), "Container/pyroscope", "drift")
    });
    am.wait_until("the drift fires and resolves", DELIVER, || {
        let n = am.sink.notifications();
        notified(&n, "StackDrift", "pyroscope", "firing")
            && notified(&n, "StackDrift", "pyroscope", "resolved")
    });
}

#[tokio::test]
async fn a_container_moved_to_another_network_alerts_and_resolves_once_it_is_put_back() {
    const NET: &str = "sw-test-alert-net";
    let Full {
        _lock,
        docker,
        _moto,
        am,
        d,
    } = full_daemon_alerting("5s", "info", &[]).await;
    dk::move_to_new_network(&docker, "grafana", NET).await;

    am.wait_until("the drift fires on grafana and resolves", CONVERGE, || {
        let n = am.sink.notifications();
        notified(&n, "StackDrift", "grafana", "firing")
            && notified(&n, "StackDrift", "grafana", "resolved")
    });
    let attached: Vec<String> = dk::inspect(&docker, "grafana")
        .await
        .network_settings
        .and_then(|n| n.networks)
        .map(|n| n.into_keys().collect())
        .unwrap_or_default();
    assert_eq!(
        attached,
        ["none"],
        "grafana is back on its declared network"
    );
    drop(d);
    docker.remove_network(NET).await.expect("the network goes");
}

#[tokio::test]
async fn a_root_container_alerts_an_https_alertmanager_with_basic_auth_and_resolves_with_no_secret_shown()
 {
    const AM_PASSWORD: &str = "https-am-pa55word-never-shown";
    let _lock = dk::exclusive().await;
    let docker = dk::docker().await;
    dk::cleanup(&docker, "observability", &[]).await;
    let _moto = Moto::start(&[]).await;
    let pki = crate::support::tls::Pki::new("stackwarden test CA");
    let am = Alertmanager::start_https(&pki.cert, &pki.key, &pki.ca, "stackwarden", AM_PASSWORD);
    let d = Daemon::start(DaemonOptions {
        aws_endpoint: Some(&_moto.endpoint),
        resync: "5s",
        log_level: "trace",
        alertmanager: Some(&am.url),
        ..Default::default()
    });
    d.wait_until("the stack converges", CONVERGE, || converged(&d.status()));
    // The password beside the manifests, named relative to them.
    let password = d.dir.join("am-password");
    std::fs::write(&password, format!("{AM_PASSWORD}\n")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    edit_stack(&d, |text| {
        text.replacen(
            "        url: ${alertmanagerUrl}\n",
            &format!(
                "        url: ${{alertmanagerUrl}}\n        tls: {{ caFile: {} }}\n        auth: {{ basic: {{ username: stackwarden, passwordFile: ../am-password }} }}\n        headers: {{ X-Scope-OrgID: observability }}\n",
                pki.ca.display()
            ),
            1,
        )
    });

    dk::recreate_by_hand(&docker, "loki", true, |b| b.user = Some("0".into())).await;
    am.wait_until("the drift fires over HTTPS", DELIVER, || {
        notified(&am.sink.notifications(), "StackDrift", "loki", "firing")
    });
    am.wait_until("the drift resolves over HTTPS", DELIVER, || {
        notified(&am.sink.notifications(), "StackDrift", "loki", "resolved")
    });
    let receivers = d.status()["alerts"]["receivers"].clone();
    assert_eq!(
        receivers[0]["lastErrorKind"],
        serde_json::Value::Null,
        "{receivers}"
    );
    assert!(receivers[0]["lastSuccess"].is_string(), "{receivers}");

    let log = d.log_text();
    assert!(
        log.contains("alert delivery answered"),
        "the log is at trace level"
    );
    let mut shown = vec![("log", log)];
    for path in ["/status", "/metrics", "/"] {
        shown.push((path, d.get(path).unwrap().1));
    }
    shown.extend(
        am.sink
            .received()
            .into_iter()
            .map(|r| ("notification", r.body)),
    );
    for (what, text) in shown {
        assert!(!text.contains(AM_PASSWORD), "{what} shows the password");
    }
}

#[tokio::test]
async fn an_image_tag_moved_under_running_containers_alerts_saying_so_and_resolves() {
    let Full {
        _lock,
        docker,
        _moto,
        am,
        d,
    } = full_daemon_alerting("5s", "info", &[]).await;
    let image = crate::support::docker::STUB_IMAGE;
    let original = docker
        .inspect_image(image)
        .await
        .expect("the stub image")
        .id
        .expect("an image id");
    // Other content under the same tag, as a push to the registry would make it.
    let built = std::process::Command::new("docker")
        .args(["build", "-q", "-t", image, "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(
                    format!("FROM {original}\nLABEL io.stackwarden.test.moved-alert=\"1\"\n")
                        .as_bytes(),
                )?;
            }
            child.wait_with_output()
        })
        .expect("docker build runs");
    let moved = built.status.success();
    let limit = Instant::now() + CONVERGE;
    let said_so = |n: &[Notification]| {
        notified(n, "StackDrift", "loki", "firing")
            && notified(n, "StackDrift", "loki", "resolved")
            && n.iter()
                .any(|x| x.body.to_string().contains("now resolves to"))
    };
    while moved && !said_so(&am.sink.notifications()) && Instant::now() < limit {
        std::thread::sleep(Duration::from_millis(200));
    }
    let seen = am.sink.notifications();
    // Put the tag back whatever the assertions say, for the tests that follow.
    let _ = docker
        .tag_image(
            &original,
            Some(bollard::query_parameters::TagImageOptions {
                repo: Some(image.split(':').next().unwrap_or(image).to_string()),
                tag: Some(image.split(':').nth(1).unwrap_or("latest").to_string()),
            }),
        )
        .await;
    assert!(moved, "{}", String::from_utf8_lossy(&built.stderr));
    assert!(
        said_so(&seen),
        "no StackDrift naming the moved tag fired and resolved on loki: {:#?}\n{}",
        seen.iter().map(|n| &n.body).collect::<Vec<_>>(),
        d.log_tail()
    );
    let loki = dk::inspect(&docker, "loki").await;
    assert_ne!(
        loki.image.as_deref(),
        Some(original.as_str()),
        "loki runs the moved tag's image"
    );
}
