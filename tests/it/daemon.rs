//! `stackwarden run` as users run it: the real binary against a moto server and the real
//! Docker engine, read through its HTTP endpoints, a headless browser and promtool. Drift is
//! made by hand through the AWS SDK and the Docker API, as a person would; what the daemon
//! did is checked in AWS and Docker themselves, not only in its own status.

use crate::support::cli::Cli;
use crate::support::daemon::{Daemon, DaemonOptions, SECRET, TOKEN};
use crate::support::docker as dk;
use crate::support::moto::{Moto, free_loopback_port};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// A cold converge of the whole local stack takes seconds; CI machines are slower.
const CONVERGE: Duration = Duration::from_secs(180);
/// Generous bound for one repair; the benchmark, not this test, measures the real figure.
const REPAIR: Duration = Duration::from_secs(60);
const SG_NAME: &str = "durable-code-local-observability-sg";

pub(crate) fn resource<'a>(status: &'a Value, id: &str) -> Option<&'a Value> {
    status["resources"].as_array()?.iter().find(|r| {
        format!(
            "{}/{}",
            r["kind"].as_str().unwrap_or(""),
            r["name"].as_str().unwrap_or("")
        ) == id
    })
}

pub(crate) fn audited(status: &Value, id: &str, cause: &str) -> bool {
    status["audit"].as_array().is_some_and(|entries| {
        entries
            .iter()
            .any(|e| e["resource"] == id && e["cause"] == cause && e["result"] == "ok")
    })
}

pub(crate) fn converged(status: &Value) -> bool {
    status["phase"] == "Ready" && status["lastPass"]["result"] == "converged"
}

async fn ec2(moto: &Moto) -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::new(&moto.sdk_config().await)
}

/// Revokes the observability group's first ingress rule by hand; returns its group id.
pub(crate) async fn revoke_first_ingress(moto: &Moto) -> String {
    let ec2 = ec2(moto).await;
    let groups = ec2
        .describe_security_groups()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("group-name")
                .values(SG_NAME)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let group = &groups.security_groups()[0];
    let perm = group.ip_permissions()[0].clone();
    ec2.revoke_security_group_ingress()
        .group_id(group.group_id().unwrap())
        .ip_permissions(perm)
        .send()
        .await
        .unwrap();
    group.group_id().unwrap().to_string()
}

pub(crate) async fn ingress_rule_count(moto: &Moto, group_id: &str) -> usize {
    ec2(moto)
        .await
        .describe_security_group_rules()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("group-id")
                .values(group_id)
                .build(),
        )
        .send()
        .await
        .unwrap()
        .security_group_rules()
        .iter()
        .filter(|r| r.is_egress() == Some(false))
        .count()
}

/// A seeded moto and an AWS-scope daemon with this resync that has converged the stack.
async fn converged_aws_daemon(resync: &str) -> (Moto, Daemon) {
    let moto = Moto::start(&[]).await;
    let d = Daemon::start(DaemonOptions {
        aws_endpoint: Some(&moto.endpoint),
        scope: "aws",
        resync,
        ..Default::default()
    });
    d.wait_until("the stack converges", CONVERGE, || converged(&d.status()));
    (moto, d)
}

/// Runs promtool's exposition linter over a metrics text.
fn promtool_check(metrics: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian package prometheus; scripts/dev-env up installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// What headless Chromium renders for `url`: the DOM after load.
fn chromium_dom(url: &str, profile: &Path) -> String {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--dump-dom", url])
        .output()
        .expect("chromium runs (Debian package chromium; scripts/dev-env up installs it)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn daemon_converges_and_repairs_drift_with_its_cause_audited() {
    let _lock = dk::exclusive().await;
    let docker = dk::docker().await;
    dk::cleanup(&docker, "observability", &[]).await;
    let moto = Moto::start(&[]).await;
    let d = Daemon::start(DaemonOptions {
        aws_endpoint: Some(&moto.endpoint),
        resync: "5s",
        log_level: "trace",
        ..Default::default()
    });
    d.wait_until("the stack converges", CONVERGE, || converged(&d.status()));
    assert_eq!(d.get("/readyz").unwrap().0, 200);

    // A container recreated as root by hand is replaced, and the write is audited as drift.
    dk::recreate_by_hand(&docker, "loki", true, |b| b.user = Some("0".into())).await;
    d.wait_until("the root loki is repaired", REPAIR, || {
        audited(&d.status(), "Container/loki", "drift")
    });
    let loki = dk::inspect(&docker, "loki").await;
    assert_eq!(loki.config.unwrap().user.as_deref(), Some("10001:10001"));

    // A revoked ingress rule is back within a resync.
    let group = revoke_first_ingress(&moto).await;
    let revoked = ingress_rule_count(&moto, &group).await;
    d.wait_until("the revoked rule is restored", REPAIR, || {
        audited(&d.status(), "SecurityGroup/observability", "drift")
    });
    assert_eq!(ingress_rule_count(&moto, &group).await, revoked + 1);

    // A broken edit is rejected with located errors; the last good revision stays in force.
    let revision = d.status()["manifest"]["revision"].clone();
    let broken = d.dir.join("manifests/broken.yaml");
    std::fs::write(
        &broken,
        "apiVersion: stackwarden.io/v1\nkind: Container\nmetadata: {name: x}\nspec: {user: [\n",
    )
    .unwrap();
    d.wait_until("the broken edit is reported", REPAIR, || {
        d.status()["manifest"]["rejected"]["errors"]
            .as_array()
            .is_some_and(|e| {
                e.iter()
                    .any(|e| e.as_str().unwrap_or("").contains("broken.yaml:"))
            })
    });
    let status = d.status();
    assert_eq!(status["manifest"]["revision"], revision, "{status}");
    // What runs is not what anybody intends any more: not Ready.
    assert_eq!(status["phase"], "Degraded", "{status}");
    let metrics = d.get("/metrics").unwrap().1;
    assert!(
        metrics.contains("stackwarden_manifest_rejected 1"),
        "{metrics}"
    );
    std::fs::remove_file(&broken).unwrap();
    d.wait_until("the fixed manifests are accepted", REPAIR, || {
        d.status()["manifest"]["rejected"].is_null()
    });

    // A manifest edit is applied and audited as `manifest`.
    let containers = d.dir.join("manifests/host/containers.yaml");
    let text = std::fs::read_to_string(&containers).unwrap();
    let edited = text.replacen("memory: 384M", "memory: 320M", 1);
    assert_ne!(text, edited);
    std::fs::write(&containers, edited).unwrap();
    d.wait_until("the edit is applied", REPAIR, || {
        audited(&d.status(), "Container/loki", "manifest")
    });
    let loki = dk::inspect(&docker, "loki").await;
    assert_eq!(loki.host_config.unwrap().memory, Some(320 << 20));

    // The metrics pass promtool, and no secret is anywhere a person or a scraper can look.
    let metrics = d.get("/metrics").unwrap().1;
    let (ok, out) = promtool_check(&metrics);
    assert!(ok, "promtool check metrics: {out}\n{metrics}");
    for path in ["/status", "/metrics", "/"] {
        let body = d.get(path).unwrap().1;
        assert!(!body.contains(SECRET), "{path} leaks the secret");
    }
    assert!(
        !d.log_text().contains(SECRET),
        "the debug log leaks the secret"
    );
    assert!(
        !d.log_text().contains(TOKEN),
        "the debug log leaks the token"
    );
}

#[tokio::test]
async fn observe_mode_switched_live_reports_drift_and_writes_nothing() {
    let (moto, d) = converged_aws_daemon("5s").await;

    // Switch the stack to observe by editing its values: no restart.
    let values = d.dir.join("manifests/environments/local.yaml");
    let mut text = std::fs::read_to_string(&values).unwrap();
    text.push_str("\nmode: observe\n");
    std::fs::write(&values, text).unwrap();
    d.wait_until("observe mode is in force", REPAIR, || {
        d.status()["mode"] == "observe"
    });
    let passes = d.passes();
    d.wait_until("a pass in observe mode finished", REPAIR, || {
        d.passes() > passes
    });

    moto_post(&moto.endpoint, "/moto-api/recorder/reset-recording");
    let http = moto_post(&moto.endpoint, "/moto-api/recorder/start-recording");
    assert!(http.contains("True"), "{http}");
    revoke_first_ingress(&moto).await;
    d.wait_until("the drift is reported", REPAIR, || {
        resource(&d.status(), "SecurityGroup/observability").is_some_and(|r| r["drift"].is_object())
    });
    let passes = d.passes();
    d.wait_until("two more passes ran", REPAIR, || d.passes() >= passes + 2);
    let recording = moto_get(&moto.endpoint, "/moto-api/recorder/download-recording");
    moto_post(&moto.endpoint, "/moto-api/recorder/stop-recording");
    let writes: Vec<String> = recording
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|r| write_operation(&r))
        .collect();
    // The test's own RevokeSecurityGroupIngress is the one write allowed.
    assert_eq!(
        writes,
        vec!["RevokeSecurityGroupIngress".to_string()],
        "observe mode wrote to AWS"
    );

    // A person opening the page sees the drifted group.
    let profile = tempfile::tempdir().unwrap();
    let dom = chromium_dom(&format!("http://{}/", d.addr), profile.path());
    assert!(
        dom.contains("data-resource=\"SecurityGroup/observability\""),
        "{dom}"
    );
    let row = dom
        .split("<tr")
        .find(|r| r.contains("data-resource=\"SecurityGroup/observability\""))
        .unwrap_or_default();
    assert!(
        row.contains("data-drifted=\"true\"") && row.contains("drifted"),
        "{row}"
    );
    assert!(dom.contains("data-resource=\"Bucket/data\""), "{dom}");
}

/// The operation of a recorded moto request when it writes (query `Action=`, JSON target, or
/// an S3 method other than GET/HEAD).
fn write_operation(r: &Value) -> Option<String> {
    let raw = r["body"].as_str().unwrap_or("");
    let body = if r["body_encoded"] == true {
        String::from_utf8_lossy(&aws_smithy_types::base64::decode(raw).unwrap_or_default())
            .into_owned()
    } else {
        raw.to_string()
    };
    let op = body
        .split('&')
        .find_map(|kv| kv.strip_prefix("Action="))
        .map(str::to_string)
        .or_else(|| {
            r["headers"]["X-Amz-Target"]
                .as_str()
                .and_then(|t| t.rsplit('.').next())
                .map(str::to_string)
        });
    match op {
        Some(op) => {
            let read = ["Describe", "Get", "List"]
                .iter()
                .any(|p| op.starts_with(p));
            (!read).then_some(op)
        }
        None => {
            let method = r["method"].as_str().unwrap_or("GET");
            (!matches!(method, "GET" | "HEAD")).then(|| format!("S3 {method}"))
        }
    }
}

fn raw_http(endpoint: &str, method: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let addr = endpoint.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

fn moto_get(endpoint: &str, path: &str) -> String {
    raw_http(endpoint, "GET", path)
}

fn moto_post(endpoint: &str, path: &str) -> String {
    raw_http(endpoint, "POST", path)
}

#[tokio::test]
async fn a_burst_of_file_events_costs_at_most_one_extra_pass() {
    let (_moto, d) = converged_aws_daemon("10m").await;
    // Let the passes that converging caused settle.
    let mut settled = d.passes();
    loop {
        std::thread::sleep(Duration::from_secs(2));
        let now = d.passes();
        if now == settled {
            break;
        }
        settled = now;
    }
    let stack = d.dir.join("manifests/stack.yaml");
    let text = std::fs::read_to_string(&stack).unwrap();
    for _ in 0..100 {
        std::fs::write(&stack, &text).unwrap();
    }
    // Counted by trigger: on a loaded machine a slow call may fail and its retry add a
    // pass of its own, which is not the burst's doing.
    let manifest_passes = || {
        d.status()["passes"].as_array().map_or(0, |p| {
            p.iter()
                .skip(settled)
                .filter(|p| p["trigger"] == "manifest")
                .count()
        })
    };
    d.wait_until("the burst triggers a pass", REPAIR, || {
        manifest_passes() > 0
    });
    std::thread::sleep(Duration::from_secs(3));
    let extra = manifest_passes();
    assert_eq!(
        extra,
        1,
        "100 file events caused {extra} passes: {}",
        d.status()["passes"]
    );
}

#[tokio::test]
async fn with_aws_down_the_daemon_starts_not_ready_and_converges_when_it_is_back() {
    let port = free_loopback_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let d = Daemon::start(DaemonOptions {
        aws_endpoint: Some(&endpoint),
        scope: "aws",
        resync: "5s",
        ..Default::default()
    });
    d.wait_until("a pass finished without AWS", REPAIR, || d.passes() >= 1);
    let (code, body) = d.get("/readyz").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("AWS"), "{body}");
    assert_eq!(d.get("/healthz").unwrap().0, 200);

    let moto = Moto::start_on(port, &[]).await;
    d.wait_until("the stack converges once AWS answers", CONVERGE, || {
        converged(&d.status())
    });
    let (code, body) = d.get("/readyz").unwrap();
    assert_eq!(code, 200, "{body}");

    drop(moto);
    d.wait_until("the daemon notices AWS is gone", REPAIR, || {
        d.get("/readyz").map(|(c, _)| c == 503).unwrap_or(false)
    });
    assert_eq!(d.get("/healthz").unwrap().0, 200, "the daemon crashed");

    let _moto = Moto::start_on(port, &[]).await;
    d.wait_until("the stack converges again", CONVERGE, || {
        converged(&d.status()) && d.get("/readyz").map(|(c, _)| c == 200).unwrap_or(false)
    });
}

#[tokio::test]
async fn with_docker_gone_the_daemon_is_not_ready_and_converges_when_it_is_back() {
    let _lock = dk::exclusive().await;
    let docker = dk::docker().await;
    dk::cleanup(&docker, "observability", &[]).await;
    let moto = Moto::start(&[]).await;
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("docker.sock");
    let d = Daemon::start(DaemonOptions {
        aws_endpoint: Some(&moto.endpoint),
        scope: "host",
        resync: "5s",
        docker_host: Some(format!("unix://{}", sock.display())),
        ..Default::default()
    });
    d.wait_until("a pass finished without Docker", REPAIR, || d.passes() >= 1);
    let (code, body) = d.get("/readyz").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("Docker"), "{body}");

    let proxy = dk::SocketProxy::start(&sock).await;
    d.wait_until("the stack converges once Docker answers", CONVERGE, || {
        converged(&d.status())
    });
    proxy.stop().await;
    d.wait_until("the daemon notices Docker is gone", REPAIR, || {
        d.get("/readyz").map(|(c, _)| c == 503).unwrap_or(false)
    });
    assert_eq!(d.get("/healthz").unwrap().0, 200, "the daemon crashed");
    dk::remove(&docker, "tempo").await;
    let _proxy = dk::SocketProxy::start(&sock).await;
    d.wait_until("the removed container is back", CONVERGE, || {
        converged(&d.status()) && audited(&d.status(), "Container/tempo", "missing")
    });
    assert!(
        dk::inspect(&docker, "tempo")
            .await
            .state
            .unwrap()
            .running
            .unwrap_or(false)
    );
}

/// loki's memory limit as the engine has it.
async fn memory_of(docker: &bollard::Docker, name: &str) -> Option<i64> {
    dk::inspect(docker, name)
        .await
        .host_config
        .and_then(|h| h.memory)
}

/// Issue 35: `docker update` changes a container in place (memory, restart policy, cpus,
/// pids), which the engine reports as an `update` event. That event wakes a pass at once,
/// as a start or a death does: the resync here is five minutes away, and the repair must not
/// wait for it.
#[tokio::test]
async fn an_in_place_docker_update_is_repaired_from_its_event_long_before_the_resync() {
    let _lock = dk::exclusive().await;
    let docker = dk::docker().await;
    dk::cleanup(&docker, "observability", &[]).await;
    let moto = Moto::start(&[]).await;
    let d = Daemon::start(DaemonOptions {
        aws_endpoint: Some(&moto.endpoint),
        scope: "host",
        resync: "300s",
        ..Default::default()
    });
    d.wait_until("the stack converges", CONVERGE, || converged(&d.status()));
    // Settled: no pass for a while, so the next one is the update's.
    let mut passes = d.passes();
    d.wait_until("the passes settle", CONVERGE, || {
        std::thread::sleep(Duration::from_secs(3));
        let now = d.passes();
        std::mem::replace(&mut passes, now) == now
    });
    // A slow start may still be replacing loki after the passes settle: wait until it runs.
    let mut declared = None;
    for _ in 0..240 {
        if dk::inspect_running(&docker, "loki").await {
            declared = memory_of(&docker, "loki").await;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(declared, Some(384 << 20), "loki's declared memory");

    let updated = Command::new("docker")
        .args([
            "update",
            "--memory",
            "200m",
            "--memory-swap",
            "200m",
            "loki",
        ])
        .output()
        .unwrap();
    assert!(
        updated.status.success(),
        "{}",
        String::from_utf8_lossy(&updated.stderr)
    );
    // The repair may recreate loki: between its removal and its creation there is none.
    let current = async || {
        if dk::inspect_running(&docker, "loki").await {
            memory_of(&docker, "loki").await
        } else {
            None
        }
    };
    let start = std::time::Instant::now();
    let mut now = current().await;
    while now != declared && start.elapsed() < REPAIR {
        tokio::time::sleep(Duration::from_millis(250)).await;
        now = current().await;
    }
    assert_eq!(
        now,
        declared,
        "loki's memory was not put back within {REPAIR:?} (the resync is 300 s away)\n{}",
        d.log_tail()
    );
}

#[tokio::test]
async fn two_daemons_one_acts_the_standby_takes_over_and_apply_defers() {
    let moto = Moto::start(&[]).await;
    let mut a = Daemon::start(DaemonOptions {
        aws_endpoint: Some(&moto.endpoint),
        scope: "aws",
        resync: "5s",
        lease_ttl: "3s",
        ..Default::default()
    });
    a.wait_until("the first daemon converges", CONVERGE, || {
        converged(&a.status())
    });
    let holder = a.status()["lease"]["holder"].as_str().unwrap().to_string();
    assert_eq!(a.status()["lease"]["role"], "leader");

    let mut b = Daemon::start_in(
        &a.dir,
        DaemonOptions {
            aws_endpoint: Some(&moto.endpoint),
            scope: "aws",
            resync: "5s",
            lease_ttl: "3s",
            ..Default::default()
        },
    );
    b.wait_until("the second daemon stands by", REPAIR, || {
        let s = b.status();
        s["lease"]["role"] == "standby" && s["lease"]["holder"] == holder.as_str()
    });
    assert_eq!(b.status()["phase"], "Standby");

    // CI's apply defers to the daemon holding the lease, naming it.
    let out = Cli::new(&["apply", "--env", "local", "--scope", "aws", "-f"])
        .arg(a.dir.join("manifests"))
        .moto(&moto)
        .env("STACKWARDEN_GRAFANA_ADMIN_PASSWORD", SECRET)
        .output();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains(&holder), "{text}");

    a.kill9();
    b.wait_until("the standby takes over", REPAIR, || {
        b.status()["lease"]["role"] == "leader"
    });
    let b_holder = b.status()["lease"]["holder"].as_str().unwrap().to_string();
    assert_ne!(b_holder, holder);

    // SIGTERM: a clean exit that releases the lease.
    assert_eq!(b.terminate(), Some(0));
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&moto.sdk_config().await)
            .force_path_style(true)
            .build(),
    );
    let bucket = "durable-code-local-observability-123456789012";
    let obj = s3
        .get_object()
        .bucket(bucket)
        .key("stackwarden/lease/local/observability.json")
        .send()
        .await
        .unwrap();
    let body = obj.body.collect().await.unwrap().into_bytes();
    let record: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(record["holder"], "", "the lease was not released: {record}");
}

#[tokio::test]
async fn the_cause_of_a_change_survives_a_restart_it_lives_on_the_resource() {
    let (moto, mut a) = converged_aws_daemon("5s").await;
    assert_eq!(a.terminate(), Some(0));

    // While no daemon runs, the manifest is edited and, separately, a rule is revoked by hand.
    let compute = a.dir.join("manifests/compute.yaml");
    let text = std::fs::read_to_string(&compute).unwrap();
    let edited = text.replacen("path: /-/ready", "path: /ready", 1);
    assert_ne!(text, edited);
    std::fs::write(&compute, edited).unwrap();
    let group = revoke_first_ingress(&moto).await;
    let revoked = ingress_rule_count(&moto, &group).await;

    // A new daemon, with no memory of the first, tells one from the other by the spec hash
    // each resource carries.
    let b = Daemon::start_in(
        &a.dir,
        DaemonOptions {
            aws_endpoint: Some(&moto.endpoint),
            scope: "aws",
            resync: "5s",
            ..Default::default()
        },
    );
    b.wait_until("both are repaired", CONVERGE, || {
        let s = b.status();
        audited(&s, "TargetGroup/faro", "manifest")
            && audited(&s, "SecurityGroup/observability", "drift")
    });
    assert_eq!(ingress_rule_count(&moto, &group).await, revoked + 1);
    let s = b.status();
    assert!(
        !audited(&s, "TargetGroup/faro", "drift"),
        "the edit was taken for a hand-made change: {s}"
    );
}

#[tokio::test]
async fn post_reconcile_needs_the_bearer_token() {
    let (_moto, d) = converged_aws_daemon("10m").await;
    assert_eq!(d.post("/reconcile", None).unwrap().0, 401);
    assert_eq!(d.post("/reconcile", Some("wrong-token")).unwrap().0, 401);
    let passes = d.passes();
    assert_eq!(d.post("/reconcile", Some(TOKEN)).unwrap().0, 202);
    d.wait_until("the requested pass runs", REPAIR, || d.passes() > passes);
    assert_eq!(d.status()["lastPass"]["trigger"], "http");
}

fn synced_reason(status: &Value, id: &str) -> String {
    resource(status, id)
        .and_then(|r| r["conditions"].as_array())
        .and_then(|c| c.iter().find(|c| c["type"] == "Synced"))
        .and_then(|c| c["reason"].as_str())
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn a_slow_start_holds_up_nothing_else_a_root_container_is_repaired_meanwhile() {
    let _lock = dk::exclusive().await;
    let docker = dk::docker().await;
    dk::cleanup(&docker, "observability", &[]).await;
    let moto = Moto::start(&[]).await;
    let d = Daemon::start(DaemonOptions {
        aws_endpoint: Some(&moto.endpoint),
        resync: "30s",
        ..Default::default()
    });
    d.wait_until("the stack converges", CONVERGE, || converged(&d.status()));

    // Pyroscope gets a health check that never passes: its replacement waits on it for
    // tens of seconds (the readiness bound), in the background after its pass.
    let containers = d.dir.join("manifests/host/containers.yaml");
    let text = std::fs::read_to_string(&containers).unwrap();
    let edited = text.replacen(
        r#"test: [CMD, wget, -q, -O, /dev/null, "http://127.0.0.1:4040/ready"]"#,
        "test: [CMD, \"false\"]",
        1,
    );
    assert_ne!(text, edited);
    std::fs::write(&containers, edited).unwrap();
    d.wait_until("pyroscope's slow start is in progress", REPAIR, || {
        synced_reason(&d.status(), "Container/pyroscope") == "Applying"
    });

    // Meanwhile someone recreates loki as root: it is repaired without waiting.
    dk::recreate_by_hand(&docker, "loki", true, |b| b.user = Some("0".into())).await;
    d.wait_until("the root loki is repaired", REPAIR, || {
        audited(&d.status(), "Container/loki", "drift")
    });
    let loki = dk::inspect(&docker, "loki").await;
    assert_eq!(loki.config.unwrap().user.as_deref(), Some("10001:10001"));
    let status = d.status();
    assert_eq!(
        synced_reason(&status, "Container/pyroscope"),
        "Applying",
        "the repair came while the slow start still waited: {status}"
    );
}

#[tokio::test]
async fn a_leader_whose_lease_object_is_overwritten_or_deleted_stops_before_its_next_write() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let _lock = dk::exclusive().await;
    let docker = dk::docker().await;
    dk::cleanup(&docker, "observability", &[]).await;
    let moto = Moto::start(&[]).await;
    // Each daemon talks to Docker through its own counting proxy: the writes each one
    // made are read off the wire, not from its own account of them.
    let socks = tempfile::tempdir().unwrap();
    let (writes_a, writes_b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let _proxy_a = dk::SocketProxy::counting(&socks.path().join("a.sock"), writes_a.clone()).await;
    let _proxy_b = dk::SocketProxy::counting(&socks.path().join("b.sock"), writes_b.clone()).await;
    // A long TTL: lease ticks 10 s apart, so that a leader going by its last tick alone
    // would still believe it leads when the container goes.
    let options = |sock: &str| DaemonOptions {
        aws_endpoint: Some(&moto.endpoint),
        resync: "60s",
        lease_ttl: "30s",
        docker_host: Some(format!("unix://{}", socks.path().join(sock).display())),
        ..Default::default()
    };
    let a = Daemon::start(options("a.sock"));
    a.wait_until("the first daemon converges", CONVERGE, || {
        converged(&a.status())
    });
    let b = Daemon::start_in(&a.dir, options("b.sock"));
    b.wait_until("the second daemon stands by", REPAIR, || {
        b.status()["lease"]["role"] == "standby"
    });
    writes_a.store(0, Ordering::SeqCst);
    writes_b.store(0, Ordering::SeqCst);

    // Someone else takes the lease by overwriting its object (a CI apply, an operator),
    // and a container goes: neither daemon may touch it while the other holder's lease runs.
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&moto.sdk_config().await)
            .force_path_style(true)
            .build(),
    );
    let bucket = "durable-code-local-observability-123456789012";
    let key = "stackwarden/lease/local/observability.json";
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(
            format!(r#"{{"holder":"apply@elsewhere:1","expires":{until}}}"#)
                .into_bytes()
                .into(),
        )
        .send()
        .await
        .unwrap();
    dk::remove(&docker, "node-exporter").await;
    let (pa, pb) = (a.passes(), b.passes());
    a.wait_until("the first daemon looks twice", REPAIR, || {
        a.passes() >= pa + 2
    });
    b.wait_until("the second daemon looks twice", REPAIR, || {
        b.passes() >= pb + 2
    });
    let (wa, wb) = (
        writes_a.load(Ordering::SeqCst),
        writes_b.load(Ordering::SeqCst),
    );
    assert_eq!(
        (wa, wb),
        (0, 0),
        "container writes while another actor held the lease (first daemon, second daemon)"
    );
    assert!(!dk::inspect_running(&docker, "node-exporter").await);

    // The lease object deleted: one daemon takes the lease and puts the container back;
    // the other writes nothing.
    s3.delete_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    let back = std::time::Instant::now();
    while !dk::inspect_running(&docker, "node-exporter").await {
        assert!(back.elapsed() < CONVERGE, "node-exporter was not put back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (pa, pb) = (a.passes(), b.passes());
    a.wait_until("the first daemon passes again", REPAIR, || a.passes() > pa);
    b.wait_until("the second daemon passes again", REPAIR, || b.passes() > pb);
    let (wa, wb) = (
        writes_a.load(Ordering::SeqCst),
        writes_b.load(Ordering::SeqCst),
    );
    assert!(
        (wa == 0) != (wb == 0),
        "exactly one daemon writes to Docker: the first made {wa} container writes, the second {wb}"
    );
    a.wait_until("one leader and one standby", REPAIR, || {
        let roles = [
            a.status()["lease"]["role"].clone(),
            b.status()["lease"]["role"].clone(),
        ];
        roles.contains(&Value::from("leader")) && roles.contains(&Value::from("standby"))
    });
}

#[tokio::test]
async fn a_manifests_directory_swapped_by_a_symlink_is_followed_at_once() {
    // git-sync and ConfigMap volumes publish a directory by swapping a symlink; nothing is
    // written inside the old target. A resync of 5 minutes leaves the watch alone to notice.
    let _lock = dk::exclusive().await;
    let docker = dk::docker().await;
    dk::cleanup(&docker, "observability", &[]).await;
    let moto = Moto::start(&[]).await;
    let repo = crate::support::daemon::repo_copy("300s");
    let base = repo.path();
    let closed = format!("http://127.0.0.1:{}", free_loopback_port());
    crate::support::daemon::set_value(base, "alertmanagerUrl", &closed);
    let copy = |name: &str| {
        let status = Command::new("cp")
            .args(["-a", "manifests", name])
            .current_dir(base)
            .status()
            .unwrap();
        assert!(status.success());
    };
    copy("rev-a");
    copy("rev-b");
    let containers = base.join("rev-b/host/containers.yaml");
    let text = std::fs::read_to_string(&containers).unwrap();
    let edited = text.replacen("memory: 384M", "memory: 320M", 1);
    assert_ne!(text, edited);
    std::fs::write(&containers, edited).unwrap();
    std::os::unix::fs::symlink("rev-a", base.join("current")).unwrap();
    let d = Daemon::start_in(
        base,
        DaemonOptions {
            aws_endpoint: Some(&moto.endpoint),
            scope: "host",
            manifests: Some(&base.join("current")),
            ..Default::default()
        },
    );
    d.wait_until("the stack converges from rev-a", CONVERGE, || {
        converged(&d.status())
    });
    let manifest_passes = |status: &Value| {
        status["passes"].as_array().map_or(0, |p| {
            p.iter().filter(|p| p["trigger"] == "manifest").count()
        })
    };
    let before = manifest_passes(&d.status());
    // `ln -sfn rev-b current`, atomically: a new link renamed over the old one.
    std::os::unix::fs::symlink("rev-b", base.join("current.new")).unwrap();
    std::fs::rename(base.join("current.new"), base.join("current")).unwrap();
    // Woken by the swap itself (other passes, a Docker event's, may load it first; only the
    // watch makes a manifest-triggered one).
    d.wait_until("the swap wakes a pass", REPAIR, || {
        manifest_passes(&d.status()) > before
    });
    d.wait_until("the swapped-in edit is applied", REPAIR, || {
        audited(&d.status(), "Container/loki", "manifest")
    });
    let loki = dk::inspect(&docker, "loki").await;
    assert_eq!(loki.host_config.unwrap().memory, Some(320 << 20));
    // Stopped first: a running daemon would put back what the cleanup removes.
    drop(d);
    dk::cleanup(&docker, "observability", &[]).await;
}

/// True when `kind/name` shows in the status as drifted.
fn drifted(status: &Value, kind: &str, name: &str) -> bool {
    status["resources"].as_array().is_some_and(|rs| {
        rs.iter().any(|r| {
            r["kind"] == kind
                && r["name"] == name
                && r["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Drifted" && c["status"] == "True")
                })
        })
    })
}

/// Resync passes the status lists.
fn resyncs(status: &Value) -> usize {
    status["passes"].as_array().map_or(0, |ps| {
        ps.iter().filter(|p| p["trigger"] == "resync").count()
    })
}

/// Blocker B3 of the field: the host's role holds no AWS write, so the host's daemon runs
/// `--aws-mode warn`. It reports a revoked rule on its resource and never repairs it: CI's
/// apply does. Checked on the AWS API: the rule stays revoked pass after pass.
#[tokio::test]
async fn a_daemon_in_aws_mode_warn_reports_aws_drift_on_the_resource_and_never_writes_aws() {
    let moto = Moto::start(&[]).await;
    let repo = crate::support::daemon::repo_copy("5s");
    let ci_apply = || {
        Cli::new(&["apply", "--env", "local", "--scope", "aws"])
            .dir(repo.path())
            .moto(&moto)
            .env("STACKWARDEN_GRAFANA_ADMIN_PASSWORD", SECRET)
            .output()
    };
    let out = ci_apply();
    assert!(out.status.success(), "{}", crate::support::cli::text(&out));
    let d = Daemon::start_in(
        repo.path(),
        DaemonOptions {
            aws_endpoint: Some(&moto.endpoint),
            scope: "aws",
            extra: &["--aws-mode", "warn"],
            ..Default::default()
        },
    );
    d.wait_until("the stack converges", CONVERGE, || converged(&d.status()));

    let group = revoke_first_ingress(&moto).await;
    let revoked = ingress_rule_count(&moto, &group).await;
    d.wait_until("the revoked rule shows on its resource", REPAIR, || {
        drifted(&d.status(), "SecurityGroup", "observability")
    });
    let seen = resyncs(&d.status());
    d.wait_until("two more resyncs", REPAIR, || {
        resyncs(&d.status()) >= seen + 2
    });
    assert_eq!(
        ingress_rule_count(&moto, &group).await,
        revoked,
        "the daemon in warn wrote AWS"
    );
    let status = d.status();
    assert!(
        !audited(&status, "SecurityGroup/observability", "drift"),
        "{status}"
    );
    // CI's apply repairs it while the daemon runs: the AWS world's writer never waits for
    // the host's (one lease per world), and the daemon then sees the stack converged.
    let out = ci_apply();
    assert!(out.status.success(), "{}", crate::support::cli::text(&out));
    assert_eq!(ingress_rule_count(&moto, &group).await, revoked + 1);
    d.wait_until("the daemon sees the repair", REPAIR, || {
        !drifted(&d.status(), "SecurityGroup", "observability") && converged(&d.status())
    });
    assert_eq!(d.status()["lease"]["role"], "leader", "{}", d.status());
}
