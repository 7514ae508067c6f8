//! Delivery end to end, as it runs deployed: a checkout publishes signed revisions into the
//! stack's bucket (moto), a daemon that has nothing but `--source s3://…` and the public key
//! converges the local stack from them (the real Docker engine), follows a published edit,
//! rides out a minute without the bucket, refuses a forged pointer with `SourceRejected` at a
//! webhook while the last good revision stays in force, and writes the status snapshot that
//! `stackwarden status` reads.

use crate::daemon::converged;
use crate::support::alertmanager::WebhookSink;
use crate::support::cli::Cli;
use crate::support::daemon::{Daemon, DaemonOptions, Source, repo_copy, set_value};
use crate::support::docker as dk;
use crate::support::files::edit_loki_memory;
use crate::support::moto::Moto;
use crate::support::tcp::TcpProxy;
use serde_json::Value;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

const BUCKET: &str = "delivery-test-bucket";
const CONVERGE: Duration = Duration::from_secs(180);
const FOLLOW: Duration = Duration::from_secs(90);
/// How long the bucket stays unreachable (the outage).
const OUTAGE: Duration = Duration::from_secs(60);

fn stackwarden(moto: &Moto, cwd: &Path, args: &[&str]) -> Output {
    Cli::new(args)
        .dir(cwd)
        .moto(moto)
        .env_remove("GITHUB_SHA")
        .env_remove("GITHUB_RUN_ID")
        .output()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn publish(moto: &Moto, repo: &Path, key: &Path) -> String {
    publish_with(moto, repo, key, &[])
}

fn publish_with(moto: &Moto, repo: &Path, key: &Path, extra: &[&str]) -> String {
    let key = key.display().to_string();
    let mut args = vec![
        "publish",
        "--env",
        "local",
        "-f",
        "manifests",
        "--bucket",
        BUCKET,
        "--key",
        &key,
        "--commit",
        "test-commit",
    ];
    args.extend_from_slice(extra);
    ok(&stackwarden(moto, repo, &args))
}

fn source_revision(status: &Value) -> Option<u64> {
    status["source"]["revision"].as_u64()
}

#[tokio::test]
async fn a_daemon_given_only_the_source_and_the_key_converges_follows_edits_outlasts_an_outage_and_refuses_forgeries()
 {
    let _lock = dk::exclusive().await;
    let docker = dk::docker().await;
    dk::cleanup(&docker, "observability", &[]).await;
    let moto = Moto::start(&[]).await;
    let s3 = stackwarden::provider::aws::s3_client(&moto.sdk_config().await);
    s3.create_bucket().bucket(BUCKET).send().await.unwrap();
    let hook = WebhookSink::start();

    // The checkout: the shipped manifests, with a webhook receiver the test listens on.
    let repo = repo_copy("5s");
    let closed = format!("http://127.0.0.1:{}", crate::support::daemon::free_port());
    set_value(repo.path(), "alertmanagerUrl", &closed);
    let stack = repo.path().join("manifests/stack.yaml");
    let text = std::fs::read_to_string(&stack).unwrap().replacen(
        "        url: ${alertmanagerUrl}\n",
        &format!(
            "        url: ${{alertmanagerUrl}}\n      - name: hooks\n        type: webhook\n        url: {}/hooks/stackwarden\n",
            hook.url
        ),
        1,
    );
    std::fs::write(&stack, text).unwrap();
    let keys = tempfile::tempdir().unwrap();
    let keydir = keys.path().display().to_string();
    ok(&stackwarden(
        &moto,
        keys.path(),
        &["keygen", "--out", &keydir],
    ));
    let secret = keys.path().join("stackwarden.key");
    let public = keys.path().join("stackwarden.pub");
    publish(&moto, repo.path(), &secret);

    // The host: an empty directory, the source's URL, the public key. It reaches AWS through
    // a proxy the test can cut.
    let host = tempfile::tempdir().unwrap();
    let state = host.path().join("state");
    let url = format!("s3://{BUCKET}");
    let target = moto
        .endpoint
        .trim_start_matches("http://")
        .parse()
        .expect("moto listens on an address");
    let mut bucket_path = TcpProxy::start(target);
    let through_proxy = bucket_path.url();
    let d = Daemon::start_in(
        host.path(),
        DaemonOptions {
            aws_endpoint: Some(&through_proxy),
            scope: "host",
            source: Some(Source {
                url: &url,
                trust: &public,
                state_dir: &state,
            }),
            ..Default::default()
        },
    );
    d.wait_until("the stack converges from revision 1", CONVERGE, || {
        let s = d.status();
        converged(&s) && source_revision(&s) == Some(1)
    });
    assert!(dk::inspect_running(&docker, "loki").await);
    assert_eq!(d.status()["source"]["verified"], true);

    // Published edits reach the host: five, one after another (the figures are printed for
    // the record, never asserted).
    let mut took = Vec::new();
    for (i, mib) in [400u64, 416, 432, 448, 464].into_iter().enumerate() {
        edit_loki_memory(&repo.path().join("manifests"), &format!("{mib}M"));
        let published = Instant::now();
        publish(&moto, repo.path(), &secret);
        let mut applied = false;
        let deadline = Instant::now() + FOLLOW;
        while Instant::now() < deadline {
            // Between the old container's removal and its replacement, there is none.
            let memory = docker
                .inspect_container("loki", None)
                .await
                .ok()
                .and_then(|c| c.host_config)
                .and_then(|h| h.memory)
                .unwrap_or(0);
            if memory == (mib << 20) as i64 {
                applied = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            applied,
            "loki's memory {mib}M never arrived:\n{}",
            d.log_tail()
        );
        took.push(published.elapsed().as_millis());
        let revision = i as u64 + 2;
        d.wait_until("the revision is in force and converged", CONVERGE, || {
            let s = d.status();
            converged(&s) && source_revision(&s) == Some(revision)
        });
    }
    let mut sorted = took.clone();
    sorted.sort_unstable();
    eprintln!(
        "publish to applied on the host (source interval 1 s): {took:?} ms, median {} ms",
        sorted[sorted.len() / 2]
    );

    // What the host did, read from anywhere with access to the bucket.
    let out = stackwarden(
        &moto,
        repo.path(),
        &[
            "status",
            "--env",
            "local",
            "-f",
            "manifests",
            "--bucket",
            BUCKET,
            "--wait-revision",
            "6",
            "--timeout",
            "60s",
        ],
    );
    ok(&out);

    // The bucket unreachable for a minute: the daemon stays up, revision 6 stays in force and
    // readiness names it with the failed check; back, the next poll finds it unchanged.
    bucket_path.cut();
    let cut_at = Instant::now();
    let mut saw_error = false;
    while cut_at.elapsed() < OUTAGE {
        std::thread::sleep(Duration::from_secs(5));
        let s = d.status();
        assert_eq!(source_revision(&s), Some(6), "the revision changed: {s}");
        saw_error |= s["source"]["lastError"].is_string();
        let (_, ready) = d.get("/readyz").unwrap();
        assert!(ready.contains("source: revision 6"), "{ready}");
    }
    assert!(
        saw_error,
        "an unreachable bucket never showed:\n{}",
        d.log_tail()
    );
    bucket_path.restore();
    d.wait_until("the source answers again", FOLLOW, || {
        d.status()["source"]["lastError"].is_null()
    });
    assert_eq!(source_revision(&d.status()), Some(6));
    let memory = dk::inspect(&docker, "loki")
        .await
        .host_config
        .and_then(|h| h.memory)
        .unwrap_or(0);
    assert_eq!(memory, 464 << 20, "the outage changed what is applied");

    // A pointer signed by another key: refused, alerted, revision 6 stays.
    let other = tempfile::tempdir().unwrap();
    let otherdir = other.path().display().to_string();
    ok(&stackwarden(
        &moto,
        other.path(),
        &["keygen", "--out", &otherdir],
    ));
    edit_loki_memory(&repo.path().join("manifests"), "320M");
    // The forger's publish cannot verify the real pointer; it forces its way on with
    // --recover (as anyone holding the CI role could), and the host refuses it.
    publish_with(
        &moto,
        repo.path(),
        &other.path().join("stackwarden.key"),
        &["--recover"],
    );
    d.wait_until("the forged revision is refused", FOLLOW, || {
        let s = d.status();
        s["source"]["rejected"].is_object() && source_revision(&s) == Some(6)
    });
    d.wait_until("SourceRejected reaches the webhook", FOLLOW, || {
        hook.received().iter().filter_map(|r| r.json()).any(|j| {
            j["status"] == "firing"
                && j["alert"]["labels"]["alertname"] == "SourceRejected"
                && j["alert"]["labels"]["cause"] == "BadSignature"
        })
    });
    let memory = dk::inspect(&docker, "loki")
        .await
        .host_config
        .and_then(|h| h.memory)
        .unwrap_or(0);
    assert_eq!(memory, 464 << 20, "the refused revision was applied");
    assert_ne!(
        d.status()["phase"],
        "Ready",
        "a refused revision is not Ready"
    );
    let (code, ready) = d.get("/readyz").unwrap();
    assert_eq!(code, 200, "the last good revision is applied: {ready}");
    assert!(ready.contains("source: revision 6"), "{ready}");
    let metrics = d.get("/metrics").unwrap().1;
    assert!(
        metrics.contains("stackwarden_source_revision 6"),
        "{metrics}"
    );
    assert!(
        metrics.contains("stackwarden_source_rejected 1"),
        "{metrics}"
    );
    let page = d.get("/").unwrap().1;
    assert!(
        page.contains("id=\"source-rejected\"") && page.contains("bad signature"),
        "the page shows the refusal: {page}"
    );
    // Stopped first: a running daemon would put back what the cleanup removes.
    drop(d);
    dk::cleanup(&docker, "observability", &[]).await;
}
