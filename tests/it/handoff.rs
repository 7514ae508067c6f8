//! The daemon replaces its own container by a lease-guarded handoff: it runs as a container
//! of the real image (scripts/image, with this build's binary laid over it), on the host's
//! network to reach moto (the lease's bucket) on loopback, and a manifest edit changes its
//! own Container's image tag to a re-tagged copy. What happened is read from the Docker
//! engine and from S3 (the lease object's versions), never from stackwarden's output.
//!
//! On the host's network, two daemons cannot listen on one port: each spec listens on a
//! port of its own (the edit changes it with the tag), and its health check asks that port.

use crate::daemon::converged;
use crate::support::alertmanager::{WebhookSink, http};
use crate::support::cli::Cli;
use crate::support::docker as dk;
use crate::support::moto::{Moto, free_loopback_port};
use bollard::Docker;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What scripts/image builds from the Dockerfile.
const BASE_IMAGE: &str = "stackwarden:local";
/// This build's binary over the real image; the spec before the edit runs this tag...
const TAG_A: &str = "stackwarden-handoff:a";
/// ...and after it, a re-tagged copy (no registry).
const TAG_B: &str = "stackwarden-handoff:b";
const NAME: &str = "sw-handoff";
const NEXT: &str = "sw-handoff-next";
const STACK: &str = "handofftest";
const BUCKET: &str = "handofftest-lease-bucket";
/// The lease of stack `handofftest` in environment `test`.
const LEASE_KEY: &str = "stackwarden/lease/test/handofftest.json";
const SOCKET: &str = "/var/run/docker.sock";
/// The lease's TTL in these tests: a daemon that dies holding it is replaced within it.
const TTL: Duration = Duration::from_secs(6);
/// How long a handoff may take here: the successor's bound (10 s floor) and the passes
/// around it, with room for a slow shared machine.
const HANDOFF: Duration = Duration::from_secs(120);

/// The image, built by scripts/image when this machine has none yet, with the binary under
/// test laid over it as TAG_A, and TAG_B the same image under another tag.
fn images() {
    let present = Command::new("docker")
        .args(["image", "inspect", BASE_IMAGE])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !present {
        let status = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/image"))
            .arg("--debug")
            .status()
            .expect("scripts/image runs");
        assert!(status.success(), "scripts/image --debug failed");
    }
    let image_id = |tag: &str| {
        Command::new("docker")
            .args(["image", "inspect", "-f", "{{.Id}}", tag])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let previous = image_id(TAG_A);
    let context = tempfile::tempdir().unwrap();
    std::fs::copy(
        env!("CARGO_BIN_EXE_stackwarden"),
        context.path().join("stackwarden"),
    )
    .unwrap();
    std::fs::write(
        context.path().join("Dockerfile"),
        format!("FROM {BASE_IMAGE}\nCOPY stackwarden /usr/local/bin/stackwarden\n"),
    )
    .unwrap();
    let built = Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "--network", "none", "-q", "-t", TAG_A])
        .arg(context.path())
        .output()
        .expect("docker build runs");
    assert!(
        built.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let tagged = Command::new("docker")
        .args(["tag", TAG_A, TAG_B])
        .status()
        .expect("docker tag runs");
    assert!(tagged.success());
    // The image of an earlier build, once no tag names it, goes (as scripts/image does).
    if let Some(previous) = previous
        && image_id(TAG_A).as_deref() != Some(previous.as_str())
    {
        let _ = Command::new("docker")
            .args(["image", "rm", &previous])
            .output();
    }
}

fn socket_gid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(SOCKET)
        .expect("the engine's socket")
        .gid()
}

/// One spec of the daemon's own container.
#[derive(Clone, Copy)]
struct Spec<'a> {
    image: &'a str,
    port: u16,
    /// The health check's command after `CMD`.
    health: &'a [&'a str],
}

impl Spec<'_> {
    fn healthy(image: &str, port: u16) -> Spec<'_> {
        Spec {
            image,
            port,
            health: &[],
        }
    }
}

/// The test's world: moto, the manifests directory, a webhook, the engine.
struct World {
    moto: Moto,
    dir: tempfile::TempDir,
    hook: WebhookSink,
    docker: Docker,
    s3: aws_sdk_s3::Client,
    gid: u32,
    /// The engine as the daemons reach it: a proxy that records which process wrote what.
    _proxy: dk::SocketProxy,
    socket: tempfile::TempDir,
    writes: dk::WritesByPeer,
}

impl World {
    async fn start() -> World {
        let docker = dk::docker().await;
        dk::cleanup(&docker, STACK, &[NAME, NEXT]).await;
        images();
        let moto = Moto::start_bare().await;
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&moto.sdk_config().await)
                .force_path_style(true)
                .build(),
        );
        let socket = tempfile::tempdir().unwrap();
        let writes = dk::WritesByPeer::default();
        let proxy =
            dk::SocketProxy::by_peer(&socket.path().join("docker.sock"), writes.clone()).await;
        World {
            moto,
            dir: tempfile::tempdir().unwrap(),
            hook: WebhookSink::start(),
            docker,
            s3,
            gid: socket_gid(),
            _proxy: proxy,
            socket,
            writes,
        }
    }

    /// Writes the manifests: a bucket (the lease's home, versioned so that every write of
    /// the lease stays readable) and the daemon's own container as `spec` says.
    fn write(&self, spec: Spec<'_>) {
        let dir = self.dir.path();
        let gid = self.gid;
        let endpoint = &self.moto.endpoint;
        let hook = &self.hook.url;
        let port = spec.port;
        let image = spec.image;
        let health = if spec.health.is_empty() {
            format!(
                "/usr/libexec/stackwarden/busybox, wget, -q, -O, /dev/null, \"http://127.0.0.1:{port}/healthz\""
            )
        } else {
            spec.health.join(", ")
        };
        let root = dir.display();
        let proxy = self.socket.path().join("docker.sock");
        let proxy = proxy.display();
        std::fs::create_dir_all(dir.join("environments")).unwrap();
        std::fs::write(
            dir.join("stack.yaml"),
            format!(
                r#"apiVersion: stackwarden.io/v1
kind: Stack
metadata:
  name: {STACK}
spec:
  project: ${{project}}
  environment: ${{env}}
  region: us-east-1
  enabled: true
  reconcileInterval: 5s
  domain: example.com
  host:
    instanceType: t3.medium
    memoryBudget: 3G
  alerts:
    receivers:
      - name: hooks
        type: webhook
        url: {hook}/hooks/stackwarden
---
apiVersion: stackwarden.io/v1
kind: Bucket
metadata:
  name: lease
spec:
  name: {BUCKET}
  publicAccessBlock:
    blockPublicAcls: true
    ignorePublicAcls: true
    blockPublicPolicy: true
    restrictPublicBuckets: true
  encryption: AES256
  versioning: true
  deletionPolicy: Retain
---
apiVersion: stackwarden.io/v1
kind: Container
metadata:
  name: {NAME}
spec:
  image: {image}
  command: [run, --env, test, --manifests, {root}, --host-root, {root}, --listen, "127.0.0.1:{port}", --lease-ttl, {ttl}s]
  user: "10001:{gid}"
  securityOpt: [no-new-privileges]
  capDrop: [ALL]
  readOnlyRootFilesystem: true
  environment:
    AWS_ENDPOINT_URL: {{ value: "{endpoint}" }}
    AWS_REGION: {{ value: us-east-1 }}
    AWS_ACCESS_KEY_ID: {{ value: testing }}
    AWS_SECRET_ACCESS_KEY: {{ value: testing }}
    STACKWARDEN_LOG: {{ value: info }}
  mounts:
    - {{ hostPath: {proxy}, target: {SOCKET} }}
    - {{ hostPath: {root}, target: {root}, readOnly: true }}
  network: host
  memory: 256M
  restart: unless-stopped
  healthCheck:
    test: [CMD, {health}]
    interval: 1s
    timeout: 2s
    retries: 3
"#,
                ttl = TTL.as_secs(),
            ),
        )
        .unwrap();
        std::fs::write(dir.join("environments/test.yaml"), "project: handofftest\n").unwrap();
        // The container's user reads them.
        for p in [dir, &dir.join("environments")] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    fn manifests(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// The way in from outside: `apply --scope host` on the host creates the daemon's
    /// container as declared.
    fn apply_from_outside(&self) {
        let out = Cli::new(&["apply", "--env", "test", "--scope", "host", "--manifests"])
            .arg(self.manifests())
            .arg("--host-root")
            .arg(self.manifests())
            .moto(&self.moto)
            .env("DOCKER_HOST", format!("unix://{SOCKET}"))
            .output();
        assert!(
            out.status.success(),
            "apply from outside failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The lease object's holder, if there is one.
    async fn holder(&self) -> Option<String> {
        let obj = self
            .s3
            .get_object()
            .bucket(BUCKET)
            .key(LEASE_KEY)
            .send()
            .await
            .ok()?;
        let body = obj.body.collect().await.ok()?.into_bytes();
        let record: serde_json::Value = serde_json::from_slice(&body).ok()?;
        let expires = record["expires"].as_u64().unwrap_or(0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        record["holder"]
            .as_str()
            .filter(|h| !h.is_empty() && expires > now)
            .map(str::to_string)
    }

    /// Every holder the lease object recorded, oldest first (its versions).
    async fn holder_history(&self) -> Vec<String> {
        let versions = self
            .s3
            .list_object_versions()
            .bucket(BUCKET)
            .prefix(LEASE_KEY)
            .send()
            .await
            .expect("the lease's versions can be listed");
        let mut found: Vec<(aws_sdk_s3::primitives::DateTime, String)> = Vec::new();
        for v in versions.versions() {
            let (Some(version), Some(at)) = (v.version_id(), v.last_modified()) else {
                continue;
            };
            let obj = self
                .s3
                .get_object()
                .bucket(BUCKET)
                .key(LEASE_KEY)
                .version_id(version)
                .send()
                .await
                .expect("a version of the lease can be read");
            let body = obj.body.collect().await.unwrap().into_bytes();
            let record: serde_json::Value = serde_json::from_slice(&body).unwrap();
            found.push((*at, record["holder"].as_str().unwrap_or("").to_string()));
        }
        // Listed newest first; equal times keep that order reversed.
        found.reverse();
        found.sort_by_key(|(at, _)| (at.secs(), at.subsec_nanos()));
        found.into_iter().map(|(_, h)| h).collect()
    }

    /// The containers of the stack, by name → (id, running, image reference).
    async fn containers(&self) -> BTreeMap<String, (String, bool, String)> {
        let list = dk::stack_containers(&self.docker, STACK).await;
        list.into_iter()
            .filter_map(|c| {
                let name = dk::name_of(&c)?;
                let running = c.state.map(|s| s.to_string()) == Some("running".to_string());
                Some((name, (c.id?, running, c.image.unwrap_or_default())))
            })
            .collect()
    }

    /// The running container whose daemon holds the lease: its name and id.
    async fn acting(&self) -> Option<(String, String)> {
        let holder = self.holder().await?;
        self.containers()
            .await
            .into_iter()
            .find(|(_, (id, running, _))| *running && holder.contains(&id[..12]))
            .map(|(name, (id, _, _))| (name, id))
    }

    async fn wait_for<T>(
        &self,
        what: &str,
        limit: Duration,
        mut probe: impl AsyncFnMut() -> Option<T>,
    ) -> T {
        let started = Instant::now();
        loop {
            if let Some(found) = probe().await {
                return found;
            }
            if started.elapsed() > limit {
                let logs = self.logs().await;
                panic!(
                    "timed out after {}s waiting for {what}; containers: {:?}; lease: {:?}\n{logs}",
                    limit.as_secs(),
                    self.containers().await,
                    self.holder().await
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn logs(&self) -> String {
        use futures_util::StreamExt;
        let mut all = String::new();
        for name in [NAME, NEXT] {
            let lines: Vec<String> = self
                .docker
                .logs(
                    name,
                    Some(bollard::query_parameters::LogsOptions {
                        stdout: true,
                        stderr: true,
                        tail: "40".into(),
                        ..Default::default()
                    }),
                )
                .map(|l| l.map(|l| l.to_string()).unwrap_or_default())
                .collect()
                .await;
            all.push_str(&format!("--- {name}:\n{}\n", lines.concat()));
        }
        all
    }

    /// The daemon of spec A, created from outside, leading, its last pass converged: its
    /// own container is as declared.
    async fn leading(&self, port: u16) -> String {
        self.write(Spec::healthy(TAG_A, port));
        self.apply_from_outside();
        let (name, id) = self
            .wait_for("the daemon in its container to lead", HANDOFF, async || {
                self.acting().await
            })
            .await;
        assert_eq!(name, NAME);
        self.wait_for("the daemon to converge", HANDOFF, async || {
            converged_at(port).then_some(())
        })
        .await;
        id
    }

    /// Kills a container's process with SIGKILL from the host, as a crash or the kernel's
    /// OOM killer would: its restart policy applies. (`docker kill` would not do: the
    /// engine counts it as a stop by hand, and `unless-stopped` then starts nothing.)
    /// False when it was not running any more.
    async fn kill9(&self, id: &str) -> bool {
        let pid = self
            .docker
            .inspect_container(id, None)
            .await
            .ok()
            .and_then(|c| c.state?.pid)
            .filter(|pid| *pid > 0);
        let Some(pid) = pid else {
            return false;
        };
        Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// `docker kill --signal KILL`: the engine counts it as a stop by hand, so no restart
    /// policy brings the container back. False when it was not running any more.
    async fn docker_kill(&self, id: &str) -> bool {
        let killed = self
            .docker
            .kill_container(
                id,
                Some(bollard::query_parameters::KillContainerOptions {
                    signal: "KILL".into(),
                }),
            )
            .await;
        match killed {
            Ok(()) => true,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => false,
            Err(e) => panic!("docker kill {id}: {e}"),
        }
    }

    /// The host pid of a container's process.
    async fn pid(&self, id: &str) -> i32 {
        dk::inspect(&self.docker, id)
            .await
            .state
            .and_then(|s| s.pid)
            .and_then(|p| i32::try_from(p).ok())
            .unwrap_or(0)
    }

    /// The container-changing requests the process `pid` sent the engine.
    fn writes_of(&self, pid: i32) -> Vec<String> {
        self.writes
            .lock()
            .unwrap()
            .get(&pid)
            .cloned()
            .unwrap_or_default()
    }

    async fn cleanup(&self) {
        dk::cleanup(&self.docker, STACK, &[NAME, NEXT]).await;
    }
}

/// Watches from outside, every 100 ms: which daemon acts (holds an unexpired lease, its
/// container running), and how long the longest stretch without one lasted.
struct Watch {
    gaps: Arc<Mutex<(Option<Instant>, Duration)>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Watch {
    fn start(world: Arc<World>) -> Watch {
        let gaps = Arc::new(Mutex::new((None::<Instant>, Duration::ZERO)));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (g, s) = (gaps.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !s.load(std::sync::atomic::Ordering::SeqCst) {
                let acting = world.acting().await.is_some();
                {
                    let mut g = g.lock().unwrap();
                    match (acting, g.0) {
                        (false, None) => g.0 = Some(Instant::now()),
                        (true, Some(since)) => {
                            g.1 = g.1.max(since.elapsed());
                            g.0 = None;
                        }
                        _ => {}
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Watch { gaps, stop, task }
    }

    async fn longest_gap(self) -> Duration {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = self.task.await;
        let g = self.gaps.lock().unwrap();
        g.0.map_or(g.1, |since| g.1.max(since.elapsed()))
    }
}

/// The handoff's end state: one container of the declared name, running TAG_B, its daemon
/// holding the lease; no successor left under the temporary name.
async fn handed_over(world: &World) -> Option<String> {
    let containers = world.containers().await;
    let (id, running, image) = containers.get(NAME)?;
    if containers.len() != 1 || !running || image != TAG_B {
        return None;
    }
    let (name, acting) = world.acting().await?;
    (name == NAME && acting == *id).then(|| id.clone())
}

/// True when the daemon listening on `port` leads and its last pass converged.
fn converged_at(port: u16) -> bool {
    http(&format!("http://127.0.0.1:{port}"), "GET", "/status", None)
        .ok()
        .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
        .is_some_and(|s| s["lease"]["role"] == "leader" && converged(&s))
}

/// The holders the lease recorded, runs of one holder merged, releases ("") left out.
fn holder_runs(history: &[String]) -> Vec<String> {
    let mut runs: Vec<String> = Vec::new();
    for h in history.iter().filter(|h| !h.is_empty()) {
        if runs.last() != Some(h) {
            runs.push(h.clone());
        }
    }
    runs
}

#[tokio::test]
async fn a_changed_image_of_its_own_container_is_handed_over_to_a_healthy_successor() {
    let _lock = dk::exclusive().await;
    let world = Arc::new(World::start().await);
    let old = world.leading(free_loopback_port()).await;
    let old_pid = world.pid(&old).await;

    let watch = Watch::start(world.clone());
    let started = Instant::now();
    let port = free_loopback_port();
    world.write(Spec::healthy(TAG_B, port));
    let new = world
        .wait_for("the handoff to complete", HANDOFF, async || {
            handed_over(&world).await
        })
        .await;
    let took = started.elapsed();
    let gap = watch.longest_gap().await;
    assert_ne!(new, old, "the container was not replaced");
    // The successor, now under the declared name, is what the manifests declare.
    world
        .wait_for("the new daemon to converge", HANDOFF, async || {
            converged_at(port).then_some(())
        })
        .await;
    assert_eq!(handed_over(&world).await.as_deref(), Some(new.as_str()));

    // What each daemon wrote, as the engine received it: the old one created, started and
    // stopped; the new one, standing by until it held the lease, then removed its
    // predecessor and renamed itself, and nothing else.
    let old_writes = world.writes_of(old_pid);
    for (what, wrote) in [
        (
            "create the successor",
            "/containers/create?name=sw-handoff-next",
        ),
        ("start it", "/containers/sw-handoff-next/start"),
        ("stop itself", &format!("/containers/{old}/stop")),
    ] {
        assert!(
            old_writes.iter().any(|w| w.contains(wrote)),
            "the old daemon did not {what}: {old_writes:?}"
        );
    }
    let new_writes = world.writes_of(world.pid(&new).await);
    assert_eq!(new_writes.len(), 2, "{new_writes:?}");
    assert!(
        new_writes[0].starts_with("DELETE ") && new_writes[0].contains(&old),
        "{new_writes:?}"
    );
    assert!(
        new_writes[1].starts_with("POST ")
            && new_writes[1].contains(&format!("/containers/{new}/rename?name={NAME}")),
        "{new_writes:?}"
    );

    // One holder at a time: the old daemon's writes, then the new one's, never back.
    let runs = holder_runs(&world.holder_history().await);
    assert_eq!(runs.len(), 2, "holders: {runs:?}");
    assert!(runs[0].contains(&old[..12]), "holders: {runs:?}");
    assert!(runs[1].contains(&new[..12]), "holders: {runs:?}");
    println!(
        "handoff: {:.1}s from the edit to the new daemon leading under the declared name; \
         longest window with no acting daemon: {:.1}s",
        took.as_secs_f64(),
        gap.as_secs_f64()
    );
    world.cleanup().await;
}

#[tokio::test]
async fn a_successor_that_never_turns_healthy_is_removed_and_self_update_failed_is_sent() {
    let _lock = dk::exclusive().await;
    let world = Arc::new(World::start().await);
    let port = free_loopback_port();
    let old = world.leading(port).await;

    world.write(Spec {
        image: TAG_B,
        port: free_loopback_port(),
        health: &["/usr/libexec/stackwarden/busybox", "\"false\""],
    });
    // The first successor, as it appears (it lives seconds: until its health check fails).
    let successor = format!("{NAME}-next");
    let first = world
        .wait_for("the successor to be created", HANDOFF, async || {
            world
                .containers()
                .await
                .get(&successor)
                .map(|c| c.0.clone())
        })
        .await;
    world
        .wait_for("SelfUpdateFailed at the webhook", HANDOFF, async || {
            world
                .hook
                .received()
                .iter()
                .filter_map(|r| r.json())
                .any(|j| {
                    j["status"] == "firing"
                        && j["alert"]["labels"]["alertname"] == "SelfUpdateFailed"
                        && j["alert"]["labels"]["resource"] == NAME
                })
                .then_some(())
        })
        .await;
    // Rolled back: that successor is removed (the same spec is tried again at each resync,
    // every 5 s here, so a later successor may already stand: its id differs), the old daemon
    // runs and still holds the lease.
    world
        .wait_for("the failed successor to be removed", HANDOFF, async || {
            let containers = world.containers().await;
            (!containers.values().any(|c| c.0 == first)).then_some(())
        })
        .await;
    let containers = world.containers().await;
    assert_eq!(
        containers.get(NAME).map(|c| c.0.as_str()),
        Some(old.as_str())
    );
    let (name, acting) = world.acting().await.expect("a daemon acts");
    assert_eq!((name.as_str(), acting.as_str()), (NAME, old.as_str()));
    let runs = holder_runs(&world.holder_history().await);
    assert_eq!(runs.len(), 1, "the lease changed hands: {runs:?}");

    // The spec changed back: the alert resolves.
    world.write(Spec::healthy(TAG_A, port));
    world
        .wait_for("SelfUpdateFailed to resolve", HANDOFF, async || {
            world
                .hook
                .received()
                .iter()
                .filter_map(|r| r.json())
                .any(|j| {
                    j["status"] == "resolved"
                        && j["alert"]["labels"]["alertname"] == "SelfUpdateFailed"
                })
                .then_some(())
        })
        .await;
    world.cleanup().await;
}

#[tokio::test]
async fn a_successor_left_standing_when_no_handoff_is_due_is_removed() {
    let _lock = dk::exclusive().await;
    let world = Arc::new(World::start().await);
    let old = world.leading(free_loopback_port()).await;
    // What a handoff cut short leaves when the spec then changes back: a successor of the
    // running container, never started here (it would only stand by).
    let mut labels = std::collections::HashMap::new();
    labels.insert("stackwarden.stack".to_string(), STACK.to_string());
    labels.insert("stackwarden.env".to_string(), "local".to_string());
    labels.insert("stackwarden.successor-of".to_string(), old.clone());
    let body = bollard::models::ContainerCreateBody {
        image: Some(TAG_A.into()),
        cmd: Some(vec!["--version".into()]),
        labels: Some(labels),
        host_config: Some(bollard::models::HostConfig {
            network_mode: Some("none".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let stale = dk::create(&world.docker, NEXT, body).await;
    world
        .wait_for("the stale successor to be removed", HANDOFF, async || {
            let containers = world.containers().await;
            (!containers.values().any(|(id, _, _)| *id == stale)).then_some(containers)
        })
        .await;
    // The leader is untouched.
    let (name, acting) = world.acting().await.expect("a daemon acts");
    assert_eq!((name.as_str(), acting.as_str()), (NAME, old.as_str()));
    world.cleanup().await;
}

/// A moment of the handoff, as seen from outside (the engine and the lease object).
#[derive(Debug, Clone, Copy)]
enum Moment {
    /// The successor runs under its temporary name; the old daemon holds the lease and
    /// waits for it to turn healthy.
    SuccessorStarting,
    /// The successor holds the lease (renamed, or about to be).
    SuccessorLeads,
}

/// Who is killed.
#[derive(Debug, Clone, Copy)]
enum Victim {
    Old,
    /// The old daemon, by `docker kill`: it stays down.
    OldForGood,
    Successor,
    Both,
}

/// The ids of the old daemon's container and of its successor, once the moment is seen.
async fn seen(world: &World, old: &str, moment: Moment) -> Option<(String, Option<String>)> {
    let containers = world.containers().await;
    let successor = containers
        .values()
        .find(|(id, _, image)| id != old && image == TAG_B)
        .map(|(id, running, _)| (id.clone(), *running));
    let holder = world.holder().await;
    let holds = |id: &str| holder.as_deref().is_some_and(|h| h.contains(&id[..12]));
    let found = match (moment, &successor) {
        (Moment::SuccessorStarting, Some((_, true))) => holds(old),
        (Moment::SuccessorLeads, Some((id, true))) => holds(id),
        _ => false,
    };
    found.then(|| (old.to_string(), successor.map(|(id, _)| id)))
}

/// Edits the daemon's own container, kills `victim` with SIGKILL at `moment`, and checks
/// what follows: the handoff completes, one holder at a time in the lease's history.
async fn crash(moment: Moment, victim: Victim) {
    let _lock = dk::exclusive().await;
    let world = Arc::new(World::start().await);
    let old = world.leading(free_loopback_port()).await;
    let watch = Watch::start(world.clone());
    world.write(Spec::healthy(TAG_B, free_loopback_port()));
    let (old, successor) = world
        .wait_for(&format!("the moment {moment:?}"), HANDOFF, async || {
            seen(&world, &old, moment).await
        })
        .await;
    let mut killed = Vec::new();
    if matches!(victim, Victim::Old | Victim::Both) && world.kill9(&old).await {
        killed.push("old");
    }
    if matches!(victim, Victim::OldForGood) && world.docker_kill(&old).await {
        killed.push("old, for good");
    }
    if matches!(victim, Victim::Successor | Victim::Both)
        && let Some(id) = &successor
        && world.kill9(id).await
    {
        killed.push("successor");
    }
    let killed_at = Instant::now();
    let new = world
        .wait_for("one daemon to act, handed over", HANDOFF, async || {
            handed_over(&world).await
        })
        .await;
    let settled = killed_at.elapsed();
    let gap = watch.longest_gap().await;
    let runs = holder_runs(&world.holder_history().await);
    // No holder comes back after another took over: one holder at a time, in order.
    let mut distinct = runs.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), runs.len(), "the lease went back: {runs:?}");
    assert!(
        runs.first().is_some_and(|h| h.contains(&old[..12])),
        "holders: {runs:?}"
    );
    assert!(
        runs.last().is_some_and(|h| h.contains(&new[..12])),
        "holders: {runs:?}"
    );
    println!(
        "kill -9 of {victim:?} at {moment:?} (killed: {killed:?}): handed over {:.1}s later; \
         longest window with no acting daemon: {:.1}s (lease TTL {}s); holders: {}",
        settled.as_secs_f64(),
        gap.as_secs_f64(),
        TTL.as_secs(),
        runs.len()
    );
    world.cleanup().await;
}

#[tokio::test]
async fn kill9_of_the_old_daemon_while_its_successor_starts_leaves_one_acting() {
    crash(Moment::SuccessorStarting, Victim::Old).await;
}

#[tokio::test]
async fn the_old_daemon_killed_for_good_while_its_successor_starts_is_succeeded_after_its_ttl() {
    crash(Moment::SuccessorStarting, Victim::OldForGood).await;
}

#[tokio::test]
async fn kill9_of_the_successor_while_it_starts_leaves_one_acting() {
    crash(Moment::SuccessorStarting, Victim::Successor).await;
}

#[tokio::test]
async fn kill9_of_both_while_the_successor_starts_leaves_one_acting() {
    crash(Moment::SuccessorStarting, Victim::Both).await;
}

#[tokio::test]
async fn kill9_of_the_successor_once_it_holds_the_lease_leaves_one_acting() {
    crash(Moment::SuccessorLeads, Victim::Successor).await;
}
