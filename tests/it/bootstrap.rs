//! A new instance converges itself (docs/bootstrap.md). `apply --scope aws` launches the
//! instance (moto) with the user data rendered from its `bootstrap`; the test reads that user
//! data back from EC2 and runs it, as cloud-init would, on a "host" that has no checkout: an
//! empty working directory, a fresh host root, the AWS CLI pointed at moto, the real Docker
//! engine. Nothing else is run on the host.

use crate::support::cli::{Cli, text};
use crate::support::docker::{self as dk, SocketProxy};
use crate::support::moto::Moto;
use crate::support::world::PASSWORD;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

const BUCKET: &str = "durable-code-local-observability-123456789012";
const CONTAINERS: [&str; 9] = dk::LOCAL_CONTAINERS;

/// The checkout CI has, and the host that has nothing but its user data.
struct World {
    moto: Moto,
    repo: tempfile::TempDir,
    keys: tempfile::TempDir,
    /// The host root the user data names (fresh: nothing in it).
    host_root: tempfile::TempDir,
    /// The artifact: the stackwarden binary under test, or the image saved from the engine.
    artifact: PathBuf,
    sha256: String,
    /// Holds a saved image while the world lives.
    _saved: Option<tempfile::TempDir>,
}

/// What the user data fetches.
enum Kind {
    /// The binary under test.
    Binary,
    /// `scripts/image`'s image, saved with `docker save`, declared as Container/stackwarden's.
    Image,
}

/// The two stand-ins the daemon's container needs on this machine (docs/local-world.md),
/// and nothing else changed in its shipped declaration: static keys and moto's endpoint in
/// place of the instance role through IMDS, and the host's network in place of a bridge
/// (moto listens on the host's loopback; the engine runs without a bridge).
fn daemon_reaches_moto(repo: &Path, moto: &Moto) {
    let path = repo.join("manifests/host/containers.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut found = 0;
    let docs: Vec<String> = text
        .split("\n---\n")
        .map(|doc| {
            if !doc.contains("\n  name: stackwarden\n") {
                return doc.to_string();
            }
            found += 1;
            let region = "    AWS_REGION: { value: \"${region}\" }\n";
            assert!(doc.contains(region), "the shipped daemon's environment:\n{doc}");
            assert!(doc.contains("\n  network: ${network}\n"), "{doc}");
            doc.replace(
                region,
                &format!(
                    "{region}    AWS_ENDPOINT_URL: {{ value: \"{}\" }}\n    AWS_ACCESS_KEY_ID: {{ value: testing }}\n    AWS_SECRET_ACCESS_KEY: {{ value: testing }}\n",
                    moto.endpoint
                ),
            )
            .replace("\n  network: ${network}\n", "\n  network: host\n")
        })
        .collect();
    assert_eq!(found, 1, "one Container/stackwarden in {}", path.display());
    std::fs::write(&path, docs.join("\n---\n")).unwrap();
}

/// What scripts/image builds from the Dockerfile.
const IMAGE: &str = "stackwarden:local";

fn sha256_of(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\n{}",
        out.status.code(),
        text(out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl World {
    /// The seeded AWS world, a checkout whose local environment bootstraps from the binary,
    /// a signing key.
    async fn new() -> World {
        World::with(Kind::Binary).await
    }

    async fn with(kind: Kind) -> World {
        let moto = Moto::start(&[]).await;
        let repo = crate::support::daemon::repo_copy("30s");
        let keys = tempfile::tempdir().unwrap();
        let host_root = tempfile::tempdir().unwrap();
        let keydir = keys.path().display().to_string();
        ok(&Cli::new(&["keygen", "--out", &keydir]).output());
        let public = std::fs::read_to_string(keys.path().join("stackwarden.pub")).unwrap();
        let trust = public.lines().last().unwrap().trim().to_string();
        let set = |k: &str, v: &str| crate::support::daemon::set_value(repo.path(), k, v);
        let (artifact, saved, name) = match kind {
            Kind::Binary => (
                PathBuf::from(env!("CARGO_BIN_EXE_stackwarden")),
                None,
                "binary",
            ),
            Kind::Image => {
                crate::own_container::ensure_image();
                let dir = tempfile::tempdir().unwrap();
                let tar = dir.path().join("stackwarden.tar");
                let saved = Command::new("docker")
                    .args(["save", "--output"])
                    .arg(&tar)
                    .arg(IMAGE)
                    .status()
                    .unwrap();
                assert!(saved.success(), "docker save {IMAGE}");
                // The daemon the apply starts is this image, in the socket's group.
                let values = repo.path().join("manifests/environments/local.yaml");
                let text = std::fs::read_to_string(&values).unwrap().replace(
                    "  stackwarden: stackwarden/stub:local",
                    &format!("  stackwarden: {IMAGE}"),
                );
                std::fs::write(&values, text).unwrap();
                let gid = {
                    use std::os::unix::fs::MetadataExt;
                    std::fs::metadata("/var/run/docker.sock").unwrap().gid()
                };
                set("dockerGroup", &format!("\"{gid}\""));
                daemon_reaches_moto(repo.path(), &moto);
                (tar, Some(dir), "image")
            }
        };
        let sha256 = sha256_of(&artifact);
        set("hostRoot", &host_root.path().display().to_string());
        set(
            "bootstrap",
            &format!("{{artifact: {name}, sha256: \"{sha256}\", trust: \"{trust}\"}}"),
        );
        set("daemonSource", &format!("s3://{BUCKET}/stackwarden"));
        World {
            moto,
            repo,
            keys,
            host_root,
            artifact,
            sha256,
            _saved: saved,
        }
    }

    fn cli(&self, args: &[&str]) -> Output {
        Cli::new(args)
            .dir(self.repo.path())
            .moto(&self.moto)
            .env("STACKWARDEN_GRAFANA_ADMIN_PASSWORD", PASSWORD)
            .env_remove("GITHUB_SHA")
            .env_remove("GITHUB_RUN_ID")
            .output()
    }

    /// CI: the AWS side, which launches the instance with the rendered user data.
    fn apply_aws(&self) {
        ok(&self.cli(&["apply", "--env", "local", "--scope", "aws"]));
    }

    /// CI: a signed revision of the manifests.
    fn publish(&self) {
        let key = self.keys.path().join("stackwarden.key");
        ok(&self.cli(&[
            "publish",
            "--env",
            "local",
            "--key",
            &key.display().to_string(),
        ]));
    }

    /// CI: the artifact; returns what publish printed.
    fn publish_artifact(&self) -> String {
        ok(&self.cli(&[
            "publish",
            "--env",
            "local",
            "--artifact",
            &self.artifact.display().to_string(),
        ]))
    }

    async fn ec2(&self) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::new(&self.moto.sdk_config().await)
    }

    async fn s3(&self) -> aws_sdk_s3::Client {
        stackwarden::provider::aws::s3_client(&self.moto.sdk_config().await)
    }

    /// The running instance's id.
    async fn instance(&self) -> String {
        let out = self.ec2().await.describe_instances().send().await.unwrap();
        let ids: Vec<String> = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter(|i| i.state().and_then(|s| s.name()).map(|n| n.as_str()) == Some("running"))
            .filter_map(|i| i.instance_id().map(str::to_string))
            .collect();
        assert_eq!(ids.len(), 1, "one running instance: {ids:?}");
        ids[0].clone()
    }

    /// The user data EC2 holds for the running instance, as cloud-init would run it.
    async fn user_data(&self) -> String {
        let out = self
            .ec2()
            .await
            .describe_instance_attribute()
            .instance_id(self.instance().await)
            .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
            .send()
            .await
            .unwrap();
        let encoded = out.user_data().and_then(|v| v.value()).unwrap();
        String::from_utf8(aws_smithy_types::base64::decode(encoded).unwrap()).unwrap()
    }

    /// Runs `script` as the host would: bash, an empty working directory, only the
    /// environment a host has (AWS reached at moto instead of through the instance role).
    fn run_on_host(&self, script: &str, docker_host: &str) -> (Output, f64) {
        let cwd = tempfile::tempdir().unwrap();
        let file = cwd.path().join("user-data");
        std::fs::write(&file, script).unwrap();
        let started = Instant::now();
        let out = Command::new("bash")
            .arg(&file)
            .current_dir(cwd.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", cwd.path())
            .env("AWS_ENDPOINT_URL", &self.moto.endpoint)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("DOCKER_HOST", docker_host)
            .output()
            .unwrap();
        (out, started.elapsed().as_secs_f64())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.host_root.path().join("stackwarden/bootstrap.log"))
            .unwrap_or_default()
    }

    /// `plan --scope host` from the published source: exit 0 when the host is converged.
    fn plan_host(&self) -> Output {
        let state = tempfile::tempdir().unwrap();
        let public = self.keys.path().join("stackwarden.pub");
        Cli::new(&[
            "plan",
            "--env",
            "local",
            "--scope",
            "host",
            "--source",
            &format!("s3://{BUCKET}/stackwarden"),
            "--trust",
            &public.display().to_string(),
            "--state-dir",
            &state.path().display().to_string(),
            "--host-root",
            &self.host_root.path().display().to_string(),
        ])
        .dir(state.path())
        .moto(&self.moto)
        // As on the host: the value comes from SSM, where CI's apply put it.
        .env_remove("STACKWARDEN_GRAFANA_ADMIN_PASSWORD")
        .output()
    }
}

const ENGINE: &str = "unix:///var/run/docker.sock";

async fn none_running(docker: &bollard::Docker) -> Vec<String> {
    let mut running = Vec::new();
    for name in CONTAINERS {
        if dk::inspect_running(docker, name).await {
            running.push(name.to_string());
        }
    }
    running
}

#[tokio::test]
async fn the_user_data_alone_converges_a_fresh_host_refuses_a_bad_artifact_and_is_idempotent() {
    let _lock = dk::exclusive().await;
    let docker = dk::docker().await;
    dk::cleanup(&docker, "observability", &CONTAINERS).await;
    let world = World::new().await;
    world.apply_aws();
    world.publish();
    let user_data = world.user_data().await;
    assert!(
        user_data.contains(&format!("export STACKWARDEN_SHA256='{}'", world.sha256)),
        "the digest comes from the manifests:\n{user_data}"
    );
    let check = Command::new("shellcheck")
        .args(["--shell=bash", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(user_data.as_bytes())?;
            c.wait_with_output()
        })
        .expect("shellcheck runs (scripts/dev-env installs it)");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );

    // No artifact in the bucket: a clear error, nothing started.
    let (out, _) = world.run_on_host(&user_data, ENGINE);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("cannot be fetched") && text(&out).contains("publish --artifact"),
        "{}",
        text(&out)
    );
    assert_eq!(none_running(&docker).await, Vec::<String>::new());
    // CI's plan says so before any instance depends on it.
    let plan = world.cli(&["plan", "--env", "local", "--scope", "aws"]);
    assert!(
        text(&plan).contains("Bootstrap=False ArtifactMissing"),
        "{}",
        text(&plan)
    );

    // Someone else's bytes under the pinned name: refused, nothing started, nothing kept.
    world
        .s3()
        .await
        .put_object()
        .bucket(BUCKET)
        .key(format!("stackwarden/artifacts/{}", world.sha256))
        .body(b"#!/bin/sh\necho pwned\n".to_vec().into())
        .send()
        .await
        .unwrap();
    let (out, _) = world.run_on_host(&user_data, ENGINE);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("sha256 mismatch"), "{}", text(&out));
    assert_eq!(none_running(&docker).await, Vec::<String>::new());
    assert!(
        !world
            .host_root
            .path()
            .join(format!("stackwarden/artifact-{}", world.sha256))
            .exists()
    );
    assert!(world.log().contains("nothing started"), "{}", world.log());

    // The real artifact (publish puts right the replaced object): the host converges.
    let printed = world.publish_artifact();
    assert!(
        printed.contains(&format!("sha256:{}", world.sha256)),
        "{printed}"
    );
    let plan = world.cli(&["plan", "--env", "local", "--scope", "aws"]);
    assert!(!text(&plan).contains("ArtifactMissing"), "{}", text(&plan));
    let (out, took) = world.run_on_host(&user_data, ENGINE);
    assert!(out.status.success(), "{}", text(&out));
    eprintln!("empty host to converged stack through the user data alone: {took:.1} s");
    let plan = world.plan_host();
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));
    assert_eq!(none_running(&docker).await.len(), CONTAINERS.len());
    let log = world.log();
    for step in ["docker: present", "artifact: fetched", "apply:", "done:"] {
        assert!(log.contains(step), "the log names `{step}`:\n{log}");
    }

    // Run again: nothing changes (writes counted at the Docker API, not from our output).
    let writes = Arc::new(AtomicUsize::new(0));
    let socket = world.host_root.path().join("engine.sock");
    let proxy = SocketProxy::counting(&socket, writes.clone()).await;
    let (out, _) = world.run_on_host(&user_data, &format!("unix://{}", socket.display()));
    proxy.stop().await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(writes.load(Ordering::SeqCst), 0, "{}", text(&out));
    assert!(text(&out).contains("nothing changed"), "{}", text(&out));

    dk::cleanup(&docker, "observability", &CONTAINERS).await;
}

/// Issue 35: a step that stops the script through `set -e`, not through its own `fail`, left
/// no trace in bootstrap.log, where a person looks first.
#[tokio::test]
async fn a_step_failing_unexpectedly_is_in_the_log_with_its_command() {
    let _lock = dk::exclusive().await;
    let docker = dk::docker().await;
    dk::cleanup(&docker, "observability", &CONTAINERS).await;
    let world = World::new().await;
    world.apply_aws();
    world.publish();
    world.publish_artifact();
    // Where the key file goes, a directory: writing the key fails, as a full or read-only
    // disk would make it.
    let trust = world.host_root.path().join("stackwarden/trust.pub");
    std::fs::create_dir_all(&trust).unwrap();

    let (out, _) = world.run_on_host(&world.user_data().await, ENGINE);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let log = world.log();
    let failed: Vec<&str> = log.lines().filter(|l| l.contains("FAILED")).collect();
    assert_eq!(failed.len(), 1, "one failure, logged once:\n{log}");
    assert!(
        failed[0].contains("$trust") && failed[0].contains("exit 1"),
        "the log names the command that failed:\n{log}"
    );
    assert!(!log.contains("apply:"), "nothing after it ran:\n{log}");
    assert_eq!(none_running(&docker).await, Vec::<String>::new());
}

/// Issue 35: two runs at once fetched into one shared `.part` file and applied together.
/// Now the second waits for the first, then finds the host bootstrapped.
#[tokio::test]
async fn two_runs_at_once_take_turns_and_leave_no_partial_download() {
    let _lock = dk::exclusive().await;
    let docker = dk::docker().await;
    dk::cleanup(&docker, "observability", &CONTAINERS).await;
    let world = World::new().await;
    world.apply_aws();
    world.publish();
    world.publish_artifact();
    let user_data = world.user_data().await;

    let (one, two) = std::thread::scope(|s| {
        let one = s.spawn(|| world.run_on_host(&user_data, ENGINE).0);
        let two = s.spawn(|| world.run_on_host(&user_data, ENGINE).0);
        (one.join().unwrap(), two.join().unwrap())
    });
    assert!(one.status.success(), "{}", text(&one));
    assert!(two.status.success(), "{}", text(&two));
    let log = world.log();
    let count = |step: &str| log.lines().filter(|l| l.contains(step)).count();
    assert_eq!(count("artifact: fetching"), 1, "one download:\n{log}");
    assert_eq!(count("apply: the host side"), 1, "one apply:\n{log}");
    assert_eq!(
        count("nothing changed"),
        1,
        "the other run found it done:\n{log}"
    );
    let state = world.host_root.path().join("stackwarden");
    let partial: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".part"))
        .collect();
    assert_eq!(partial, Vec::<String>::new(), "no download left behind");
    let plan = world.plan_host();
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));
    dk::cleanup(&docker, "observability", &CONTAINERS).await;
}

#[tokio::test]
async fn an_instance_terminated_and_applied_again_comes_back_with_the_buckets_data_intact() {
    let _lock = dk::exclusive().await;
    let docker = dk::docker().await;
    dk::cleanup(&docker, "observability", &CONTAINERS).await;
    let world = World::new().await;
    let mut steps: Vec<(String, f64)> = Vec::new();
    let mut step =
        |name: &str, since: Instant| steps.push((name.to_string(), since.elapsed().as_secs_f64()));

    // Up, with the flag on, and something in the bucket that must outlive the host.
    let t = Instant::now();
    world.apply_aws();
    world.publish();
    world.publish_artifact();
    step("apply (AWS), publish the revision and the artifact", t);
    let t = Instant::now();
    let (out, _) = world.run_on_host(&world.user_data().await, ENGINE);
    assert!(out.status.success(), "{}", text(&out));
    step("the first instance's user data", t);
    let s3 = world.s3().await;
    s3.put_object()
        .bucket(BUCKET)
        .key("loki/marker")
        .body(b"written before the instance went away".to_vec().into())
        .send()
        .await
        .unwrap();
    let first = world.instance().await;

    // Down: the instance terminated, and with it the host: its containers and its disk.
    let t = Instant::now();
    world
        .ec2()
        .await
        .terminate_instances()
        .instance_ids(&first)
        .send()
        .await
        .unwrap();
    dk::cleanup(&docker, "observability", &CONTAINERS).await;
    for entry in std::fs::read_dir(world.host_root.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
    }
    step("terminate the instance, lose the host", t);

    // Up: apply (AWS) launches a new instance; its user data brings the host side back.
    let t = Instant::now();
    world.apply_aws();
    let second = world.instance().await;
    assert_ne!(first, second, "a new instance was launched");
    step("apply (AWS): a new instance", t);
    let t = Instant::now();
    let (out, _) = world.run_on_host(&world.user_data().await, ENGINE);
    assert!(out.status.success(), "{}", text(&out));
    step("the new instance's user data", t);
    let plan = world.plan_host();
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));
    assert_eq!(none_running(&docker).await.len(), CONTAINERS.len());
    let marker = s3
        .get_object()
        .bucket(BUCKET)
        .key("loki/marker")
        .send()
        .await
        .expect("the marker outlived the instance");
    let body = marker.body.collect().await.unwrap().into_bytes();
    assert_eq!(&body[..], b"written before the instance went away");
    for (name, secs) in &steps {
        eprintln!("down and up: {name}: {secs:.1} s");
    }
    dk::cleanup(&docker, "observability", &CONTAINERS).await;
}

/// A fresh host converged from the image artifact through its user data alone, as CI then
/// the instance would: the Docker lock (held while it lives), the engine, the world, and how
/// long the user data took.
async fn converged_from_the_image() -> (dk::Exclusive, bollard::Docker, World, f64) {
    let lock = dk::exclusive().await;
    let docker = dk::docker().await;
    dk::cleanup(&docker, "observability", &CONTAINERS).await;
    let world = World::with(Kind::Image).await;
    world.apply_aws();
    world.publish();
    world.publish_artifact();
    let (out, took) = world.run_on_host(&world.user_data().await, ENGINE);
    assert!(out.status.success(), "{}", text(&out));
    (lock, docker, world, took)
}

#[tokio::test]
async fn an_image_artifact_is_loaded_and_the_host_is_applied_from_inside_it() {
    let (_lock, docker, world, took) = converged_from_the_image().await;
    eprintln!("empty host to converged stack from the image artifact: {took:.1} s");
    assert!(world.log().contains("image: loading"), "{}", world.log());
    let plan = world.plan_host();
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));
    let daemon = dk::inspect(&docker, "stackwarden").await;
    assert_eq!(
        daemon.config.and_then(|c| c.image).as_deref(),
        Some(IMAGE),
        "the daemon runs the image the artifact held"
    );
    dk::cleanup(&docker, "observability", &CONTAINERS).await;
}

/// Waits up to `limit` for `check`, polling every 250 ms; true once it held.
async fn eventually(limit: std::time::Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    check().await
}

/// Owner, group and content of a host file, read from the disk.
fn file_on_host(path: &Path) -> (u32, u32, String) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).unwrap();
    (
        meta.uid(),
        meta.gid(),
        std::fs::read_to_string(path).unwrap(),
    )
}

/// Blocker B1 of the field: the daemon runs as its Container declares it (the real image,
/// the declared user and groups, no capability, a read-only root) and is the one that
/// writes the host's files from then on. Every check reads the disk and the engine.
#[tokio::test]
async fn the_daemon_in_its_shipped_container_writes_a_published_config_change_and_repairs_a_hand_edit()
 {
    let (_lock, docker, world, _) = converged_from_the_image().await;

    // The daemon runs as declared, not as root.
    let daemon = dk::inspect(&docker, "stackwarden").await;
    let config = daemon.config.clone().unwrap();
    let host = daemon.host_config.clone().unwrap();
    let gid = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/var/run/docker.sock").unwrap().gid()
    };
    assert_eq!(config.user.as_deref(), Some("10001:10001"));
    assert_eq!(host.group_add, Some(vec![gid.to_string()]));
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
    assert_eq!(host.readonly_rootfs, Some(true));
    let daemon_id = daemon.id.clone().unwrap();

    // A hand edit of a config file: the daemon in its container puts it back, as 10001:10001.
    let loki = world.host_root.path().join("loki/loki.yaml");
    let (uid, gid0, shipped) = file_on_host(&loki);
    assert_eq!((uid, gid0), (10001, 10001));
    std::fs::write(&loki, format!("{shipped}# edited by hand\n")).unwrap();
    let repaired = eventually(std::time::Duration::from_secs(90), async || {
        file_on_host(&loki) == (10001, 10001, shipped.clone())
    })
    .await;
    assert!(
        repaired,
        "the hand edit stays: {:?}\ndaemon log:\n{}",
        file_on_host(&loki),
        dk_logs(&docker, "stackwarden").await
    );

    // A reviewed change to config/loki.yaml, published: it reaches the host file, written by
    // the daemon, and loki is recreated to read it.
    let loki_before = dk::inspect(&docker, "loki").await.id.unwrap();
    let source = world.repo.path().join("config/loki.yaml");
    let changed = format!(
        "{}# a reviewed change\n",
        std::fs::read_to_string(&source).unwrap()
    );
    std::fs::write(&source, changed).unwrap();
    world.publish();
    let arrived = eventually(std::time::Duration::from_secs(120), async || {
        let (uid, gid, text) = file_on_host(&loki);
        (uid, gid) == (10001, 10001)
            && text.ends_with("# a reviewed change\n")
            && dk::inspect(&docker, "loki").await.id.as_deref() != Some(loki_before.as_str())
            && dk::inspect_running(&docker, "loki").await
    })
    .await;
    assert!(
        arrived,
        "the published change did not reach the host: {:?}\ndaemon log:\n{}",
        file_on_host(&loki),
        dk_logs(&docker, "stackwarden").await
    );
    // The same daemon did it: no restart, no one-shot apply from outside.
    assert_eq!(
        dk::inspect(&docker, "stackwarden").await.id.as_deref(),
        Some(daemon_id.as_str())
    );
    dk::cleanup(&docker, "observability", &CONTAINERS).await;
}

/// The last lines a container logged, for a failure message.
async fn dk_logs(docker: &bollard::Docker, name: &str) -> String {
    use futures_util::StreamExt;
    let opts = bollard::query_parameters::LogsOptions {
        stdout: true,
        stderr: true,
        tail: "60".to_string(),
        ..Default::default()
    };
    let mut out = String::new();
    let mut logs = docker.logs(name, Some(opts));
    while let Some(Ok(line)) = logs.next().await {
        out.push_str(&line.to_string());
    }
    out
}
