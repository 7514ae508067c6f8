//! The host provider against the real Docker engine and a temp host root: the local stack is
//! created from empty, a second run writes nothing, and each drift is repaired by ONE apply
//! (the plan shows it before, nothing after). Drift is made with bollard directly, as a
//! person with `docker` would.

use crate::support::cli::{Cli, text};
use crate::support::docker::{self as dk, STUB_IMAGE};
use bollard::Docker;
use serde_json::json;
use stackwarden::engine::Engine;
use stackwarden::model::{
    ConfigFileSpec, ContainerSpec, Desired, Ensure, Kind, Mode, Resource, ResourceId,
    SourceLocation, Spec,
};
use stackwarden::plan::{Action, Plan};
use stackwarden::provider::host::HostProvider;
use stackwarden::provider::{CallKind, OpenGate, Stats};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const STACK: &str = "observability";
const UNMANAGED: &str = "sw-test-unmanaged-root";
const BROKEN: &str = "broken";
const SECRET: &str = "s3cret-for-tests";
/// The account of moto's default credentials.
const MOTO_ACCOUNT: &str = "123456789012";

/// The host root shared by the tests of this process (tests are serialized by the lock, and
/// a shared root lets each start from the converged state instead of rebuilding it). Roots
/// left by earlier runs whose process is gone are removed.
fn host_root() -> &'static Path {
    static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        let tmp = std::env::temp_dir();
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if let Some(pid) = name.strip_prefix("stackwarden-host-it-")
                    && !Path::new("/proc").join(pid).exists()
                {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let root = tmp.join(format!("stackwarden-host-it-{}", std::process::id()));
        std::fs::create_dir_all(&root).expect("host root can be created");
        root
    })
}

/// The secret file the tests point the Grafana admin password Parameter at (a test cannot
/// set environment variables: `unsafe` is forbidden).
/// Written once: tests build their desired state concurrently (before taking the lock), and
/// a rewrite would let another test's observe read a half-written secret.
fn secret_file() -> PathBuf {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let path = host_root().join("admin-password");
        std::fs::write(&path, format!("{SECRET}\n")).expect("secret file");
        path
    })
    .clone()
}

fn resource(kind: Kind, name: &str, spec: Spec) -> Resource {
    Resource {
        id: ResourceId::new(kind, name),
        spec,
        ensure: Ensure::Present,
        mode: Mode::Enforce,
        source: SourceLocation::default(),
    }
}

/// A stub container beyond the shipped ones (for failure cases).
fn extra_container(name: &str, image: &str) -> Resource {
    let spec: ContainerSpec = serde_json::from_value(json!({
        "image": image,
        "user": "10001:10001",
        "securityOpt": ["no-new-privileges"],
        "network": "none",
        "memory": "64M"
    }))
    .expect("container spec");
    resource(Kind::Container, name, Spec::Container(Box::new(spec)))
}

/// The shipped manifests, environment `local`, with the admin password read from a file.
fn local_desired() -> Desired {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
    let mut desired = stackwarden::manifest::load(&dir, Some("local"))
        .unwrap_or_else(|e| panic!("the shipped manifests load: {e}"))
        .desired;
    // The account moto answers, as the binary's host scope resolves it.
    stackwarden::manifest::fill_runtime(&mut desired, MOTO_ACCOUNT);
    let secret = secret_file();
    for r in &mut desired.resources {
        if let Spec::Parameter(p) = &mut r.spec {
            p.value_from.env = None;
            p.value_from.file = Some(secret.display().to_string());
        }
    }
    assert_eq!(desired.stack_name, STACK);
    desired
}

fn services(desired: &Desired) -> Vec<String> {
    desired
        .containers()
        .map(|(r, _)| r.id.name.clone())
        .collect()
}

fn file_spec<'d>(desired: &'d Desired, name: &str) -> &'d ConfigFileSpec {
    desired
        .config_files()
        .find(|(r, _)| r.id.name == name)
        .map(|(_, s)| s)
        .unwrap_or_else(|| panic!("ConfigFile/{name} is declared"))
}

fn file_path(desired: &Desired, name: &str) -> PathBuf {
    host_root().join(&file_spec(desired, name).path)
}

/// One test's view of the host: the lock, an engine over a fresh HostProvider, the desired
/// state and the Docker client for making drift.
struct Host {
    _lock: dk::Exclusive,
    docker: Docker,
    engine: Engine,
    stats: Arc<Stats>,
    desired: Desired,
}

impl Host {
    async fn new(desired: Desired) -> Host {
        let lock = dk::exclusive().await;
        let docker = dk::docker().await;
        dk::remove(&docker, UNMANAGED).await;
        let stats = Arc::new(Stats::default());
        let provider = HostProvider::connect(host_root().to_path_buf(), stats.clone())
            .await
            .expect("the host provider connects");
        Host {
            _lock: lock,
            docker,
            engine: Engine::new(vec![Box::new(provider)]),
            stats,
            desired,
        }
    }

    /// The local stack, converged (from whatever the previous test left).
    async fn converged() -> Host {
        let host = Host::new(local_desired()).await;
        let report = host.engine.apply(&host.desired).await;
        assert!(report.converged(), "apply failed: {:#?}", report.outcomes);
        host.assert_no_changes().await;
        host
    }

    async fn plan(&self) -> Plan {
        let plan = self.engine.plan(&self.desired).await;
        assert!(
            plan.errors().is_empty(),
            "observe failed: {:?}",
            plan.errors()
        );
        plan
    }

    async fn assert_no_changes(&self) {
        let plan = self.plan().await;
        assert!(
            plan.changes.is_empty(),
            "expected no changes, plan:\n{plan}"
        );
    }

    /// Asserts the plan shows `action` on `id` (with a field at `path`, if given), then
    /// applies once and asserts nothing is left to do.
    async fn repair(&self, id: &str, action: Action, path: Option<&str>) {
        let plan = self.plan().await;
        let change = plan
            .changes
            .iter()
            .find(|c| c.id.to_string() == id)
            .unwrap_or_else(|| panic!("the plan does not show {id}:\n{plan}"));
        assert_eq!(change.action, action, "plan:\n{plan}");
        if let Some(path) = path {
            assert!(
                change.fields.iter().any(|f| f.path == path),
                "{id} shows no change of {path}:\n{plan}"
            );
        }
        let report = self.engine.apply(&self.desired).await;
        assert!(report.converged(), "apply failed: {:#?}", report.outcomes);
        self.assert_no_changes().await;
    }
}

fn user_of(c: &bollard::models::ContainerInspectResponse) -> String {
    c.config
        .as_ref()
        .and_then(|c| c.user.clone())
        .unwrap_or_default()
}

fn running(c: &bollard::models::ContainerInspectResponse) -> bool {
    c.state.as_ref().and_then(|s| s.running).unwrap_or(false)
}

/// Polls Docker's own health status for a while (its probes run on their interval).
async fn docker_health_becomes_healthy(docker: &Docker, name: &str) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < deadline {
        let health = dk::inspect(docker, name)
            .await
            .state
            .and_then(|s| s.health)
            .and_then(|h| h.status);
        if health == Some(bollard::models::HealthStatusEnum::HEALTHY) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

fn env_of(c: &bollard::models::ContainerInspectResponse) -> Vec<String> {
    c.config
        .as_ref()
        .and_then(|c| c.env.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn local_stack_is_created_from_empty_and_conforms_to_policy() {
    let host = Host::new(local_desired()).await;
    let names = services(&host.desired);
    // The eight services, and the one standing in for stackwarden's own container.
    assert_eq!(names.len(), 9, "{names:?}");
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    dk::cleanup(&host.docker, STACK, &refs).await;
    for entry in std::fs::read_dir(host_root()).expect("host root").flatten() {
        if entry.path().is_dir() {
            std::fs::remove_dir_all(entry.path()).expect("host root can be emptied");
        }
    }

    let plan = host.plan().await;
    let files = host.desired.config_files().count();
    let creates = plan
        .changes
        .iter()
        .filter(|c| c.action == Action::Create)
        .count();
    assert_eq!(
        creates,
        names.len() + files,
        "every container and file to create:\n{plan}"
    );

    let report = host.engine.apply(&host.desired).await;
    assert!(report.converged(), "apply failed: {:#?}", report.outcomes);
    for (res, spec) in host.desired.containers() {
        let name = res.id.name.as_str();
        let c = dk::inspect(&host.docker, name).await;
        assert!(running(&c), "{name} is not running");
        // Apply waited for the service's own probe; Docker's check follows on its interval.
        assert!(
            docker_health_becomes_healthy(&host.docker, name).await,
            "{name}: Docker's own health check never passed"
        );
        let labels = c
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        assert_eq!(
            labels.get("stackwarden.stack").map(String::as_str),
            Some(STACK)
        );
        assert_eq!(
            labels.get("stackwarden.env").map(String::as_str),
            Some("local")
        );
        let hc = c.host_config.clone().unwrap_or_default();
        assert_eq!(hc.privileged, Some(false), "{name}");
        assert!(
            hc.security_opt
                .unwrap_or_default()
                .iter()
                .any(|o| o == "no-new-privileges"),
            "{name}"
        );
        assert_eq!(hc.memory, i64::try_from(spec.memory.0).ok(), "{name}");
        assert_eq!(user_of(&c), spec.user.clone().unwrap_or_default(), "{name}");
    }
    let plan = host.plan().await;
    assert!(plan.changes.is_empty(), "{plan}");
    let ours: Vec<_> = plan
        .violations
        .iter()
        .filter(|v| v.resource.starts_with("Container/"))
        .collect();
    assert!(
        ours.is_empty(),
        "the stack's containers break policy: {ours:?}"
    );
    for (res, spec) in host.desired.config_files() {
        let path = host_root().join(&spec.path);
        let meta = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", res.id));
        assert_eq!(
            (meta.uid(), meta.gid()),
            (spec.owner, spec.group),
            "{}",
            res.id
        );
        assert_eq!(Some(meta.mode() & 0o7777), spec.mode_bits(), "{}", res.id);
        let want = spec
            .content
            .clone()
            .or_else(|| spec.is_secret().then(|| SECRET.into()));
        assert_eq!(
            std::fs::read_to_string(&path).ok(),
            want.filter(|_| meta.is_file()),
            "{}",
            res.id
        );
    }
}

#[tokio::test]
async fn second_apply_writes_nothing() {
    let host = Host::converged().await;
    host.stats.reset();
    let report = host.engine.apply(&host.desired).await;
    assert!(report.outcomes.is_empty(), "{:#?}", report.outcomes);
    assert_eq!(
        host.stats.service_total("docker", CallKind::Write),
        0,
        "{}",
        host.stats
    );
    assert_eq!(
        host.stats.service_total("files", CallKind::Write),
        0,
        "{}",
        host.stats
    );
    assert!(
        host.stats.service_total("docker", CallKind::Read) > 0,
        "observe read nothing"
    );
}

#[tokio::test]
async fn drift_container_removed_is_recreated() {
    let host = Host::converged().await;
    dk::remove(&host.docker, "loki").await;
    host.repair("Container/loki", Action::Create, None).await;
    assert!(running(&dk::inspect(&host.docker, "loki").await));
}

#[tokio::test]
async fn drift_container_stopped_is_started() {
    let host = Host::converged().await;
    dk::stop(&host.docker, "tempo").await;
    host.repair("Container/tempo", Action::Update, Some("state"))
        .await;
    assert!(running(&dk::inspect(&host.docker, "tempo").await));
}

#[tokio::test]
async fn drift_container_recreated_as_root_is_replaced() {
    let host = Host::converged().await;
    dk::recreate_by_hand(&host.docker, "mimir", true, |b| b.user = Some("0".into())).await;
    let plan = host.plan().await;
    assert!(
        plan.violations
            .iter()
            .any(|v| v.rule == "no-root-containers" && v.resource == "Container/mimir"),
        "no violation reported:\n{plan}"
    );
    host.repair("Container/mimir", Action::Replace, Some("spec.user"))
        .await;
    assert_eq!(
        user_of(&dk::inspect(&host.docker, "mimir").await),
        "10001:10001"
    );
}

#[tokio::test]
async fn drift_container_created_privileged_is_replaced() {
    let host = Host::converged().await;
    // Created, not started: this engine refuses to start privileged containers.
    dk::recreate_by_hand(&host.docker, "node-exporter", false, |b| {
        if let Some(hc) = b.host_config.as_mut() {
            hc.privileged = Some(true);
        }
    })
    .await;
    host.repair(
        "Container/node-exporter",
        Action::Replace,
        Some("spec.privileged"),
    )
    .await;
    let c = dk::inspect(&host.docker, "node-exporter").await;
    assert_eq!(c.host_config.and_then(|h| h.privileged), Some(false));
    assert!(running(&dk::inspect(&host.docker, "node-exporter").await));
}

#[tokio::test]
async fn drift_memory_limit_removed_is_restored() {
    let host = Host::converged().await;
    dk::recreate_by_hand(&host.docker, "pyroscope", true, |b| {
        if let Some(hc) = b.host_config.as_mut() {
            hc.memory = None;
            hc.memory_swap = None;
        }
    })
    .await;
    host.repair("Container/pyroscope", Action::Replace, Some("spec.memory"))
        .await;
    let c = dk::inspect(&host.docker, "pyroscope").await;
    assert_eq!(c.host_config.and_then(|h| h.memory), Some(384 << 20));
}

#[tokio::test]
async fn drift_no_new_privileges_dropped_is_restored() {
    let host = Host::converged().await;
    dk::recreate_by_hand(&host.docker, "alloy", true, |b| {
        if let Some(hc) = b.host_config.as_mut() {
            hc.security_opt = None;
        }
    })
    .await;
    host.repair("Container/alloy", Action::Replace, Some("spec.securityOpt"))
        .await;
    let c = dk::inspect(&host.docker, "alloy").await;
    let opts = c
        .host_config
        .and_then(|h| h.security_opt)
        .unwrap_or_default();
    assert_eq!(opts, ["no-new-privileges"]);
}

#[tokio::test]
async fn drift_capability_added_is_removed() {
    let host = Host::converged().await;
    dk::recreate_by_hand(&host.docker, "tempo", true, |b| {
        if let Some(hc) = b.host_config.as_mut() {
            hc.cap_add = Some(vec!["NET_ADMIN".into()]);
        }
    })
    .await;
    host.repair("Container/tempo", Action::Replace, Some("spec.capAdd"))
        .await;
    let c = dk::inspect(&host.docker, "tempo").await;
    assert!(
        c.host_config
            .and_then(|h| h.cap_add)
            .unwrap_or_default()
            .is_empty()
    );
}

#[tokio::test]
async fn drift_config_file_edited_is_rewritten_and_its_container_restarted() {
    let host = Host::converged().await;
    let before = dk::inspect(&host.docker, "loki").await.id;
    let grafana_before = dk::inspect(&host.docker, "grafana").await.id;
    let path = file_path(&host.desired, "loki-config");
    std::fs::write(
        &path,
        "server:\n  http_listen_port: 9999 # edited by hand\n",
    )
    .expect("edit");
    let plan = host.plan().await;
    let loki = plan
        .changes
        .iter()
        .find(|c| c.id.to_string() == "Container/loki");
    assert!(
        loki.is_some_and(|c| c.action == Action::Replace),
        "the container mounting the file is not rolled:\n{plan}"
    );
    host.repair(
        "ConfigFile/loki-config",
        Action::Update,
        Some("spec.content"),
    )
    .await;
    let want = file_spec(&host.desired, "loki-config")
        .content
        .clone()
        .unwrap_or_default();
    assert_eq!(std::fs::read_to_string(&path).expect("loki config"), want);
    let after = dk::inspect(&host.docker, "loki").await.id;
    assert_ne!(before, after, "loki was not restarted");
    assert_eq!(
        grafana_before,
        dk::inspect(&host.docker, "grafana").await.id,
        "a container not mounting the file was restarted"
    );
}

#[tokio::test]
async fn drift_config_file_mode_changed_is_restored() {
    let host = Host::converged().await;
    let path = file_path(&host.desired, "grafana-ini");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    host.repair("ConfigFile/grafana-ini", Action::Update, Some("spec.mode"))
        .await;
    let mode = std::fs::metadata(&path).expect("stat").mode() & 0o7777;
    assert_eq!(mode, 0o640);
}

#[tokio::test]
async fn drift_config_file_owner_changed_is_restored() {
    let host = Host::converged().await;
    let path = file_path(&host.desired, "loki-data");
    std::os::unix::fs::chown(&path, Some(0), Some(0)).expect("chown");
    host.repair("ConfigFile/loki-data", Action::Update, Some("spec.owner"))
        .await;
    let meta = std::fs::metadata(&path).expect("stat");
    assert_eq!((meta.uid(), meta.gid()), (10001, 10001));
}

#[tokio::test]
async fn unmanaged_root_container_is_reported_and_left_alone() {
    let host = Host::converged().await;
    let body = bollard::models::ContainerCreateBody {
        image: Some(STUB_IMAGE.into()),
        user: Some("0".into()),
        host_config: Some(bollard::models::HostConfig {
            network_mode: Some("none".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let opts = bollard::query_parameters::CreateContainerOptions {
        name: Some(UNMANAGED.into()),
        ..Default::default()
    };
    let id = host
        .docker
        .create_container(Some(opts), body)
        .await
        .expect("create unmanaged")
        .id;
    let plan = host.plan().await;
    let resource = format!("docker container {UNMANAGED}");
    for rule in ["no-root-containers", "no-new-privileges"] {
        assert!(
            plan.violations
                .iter()
                .any(|v| v.rule == rule && v.resource == resource),
            "{rule} not reported for {resource}:\n{plan}"
        );
    }
    assert!(
        plan.changes.is_empty(),
        "an unmanaged container was planned:\n{plan}"
    );
    let report = host.engine.apply(&host.desired).await;
    assert!(report.outcomes.is_empty(), "{:#?}", report.outcomes);
    assert_eq!(
        dk::inspect(&host.docker, UNMANAGED).await.id.as_deref(),
        Some(id.as_str())
    );
    dk::remove(&host.docker, UNMANAGED).await;
}

#[tokio::test]
async fn image_that_cannot_be_pulled_fails_its_container_only() {
    let mut desired = local_desired();
    desired
        .resources
        .push(extra_container(BROKEN, "stackwarden/does-not-exist:nope"));
    let host = Host::new(desired).await;
    dk::remove(&host.docker, "loki").await; // drift elsewhere must still be repaired
    let report = host.engine.apply(&host.desired).await;
    let failed: Vec<_> = report.failures().map(|o| o.change.id.to_string()).collect();
    assert_eq!(
        failed,
        [format!("Container/{BROKEN}")],
        "{:#?}",
        report.outcomes
    );
    let error = report
        .failures()
        .next()
        .and_then(|o| o.error.clone())
        .unwrap_or_default();
    assert!(error.contains("stackwarden/does-not-exist:nope"), "{error}");
    assert!(
        running(&dk::inspect(&host.docker, "loki").await),
        "the rest did not converge"
    );
    let plan = host.plan().await;
    assert!(
        plan.conditions
            .iter()
            .any(|c| c.id.name == BROKEN && c.reason == "ImageNotPresent"),
        "{plan}"
    );
    let others: Vec<_> = plan
        .changes
        .iter()
        .filter(|c| c.id.name != BROKEN)
        .collect();
    assert!(others.is_empty(), "{others:?}");
}

#[tokio::test]
async fn unreadable_secret_fails_only_its_file_and_the_container_mounting_it() {
    let mut desired = local_desired();
    for r in &mut desired.resources {
        if let Spec::Parameter(p) = &mut r.spec {
            p.value_from.file = Some(host_root().join("no-such-secret").display().to_string());
        }
    }
    let host = Host::new(desired).await;
    let secret_path = file_path(&host.desired, "grafana-admin-password");
    let _ = std::fs::remove_file(&secret_path);
    dk::remove(&host.docker, "grafana").await;
    dk::remove(&host.docker, "loki").await; // drift elsewhere must still be repaired
    let report = host.engine.apply(&host.desired).await;
    let failed: Vec<_> = report.failures().map(|o| o.change.id.to_string()).collect();
    assert_eq!(
        failed,
        ["ConfigFile/grafana-admin-password", "Container/grafana"],
        "{:#?}",
        report.outcomes
    );
    let errors: Vec<String> = report.failures().filter_map(|o| o.error.clone()).collect();
    assert!(errors[0].contains("no-such-secret"), "{errors:?}");
    // Not recreated onto a file that is not there: blocked by that failure.
    assert!(
        errors[1].contains(
            "blocked: its mounted ConfigFile/grafana-admin-password could not be written"
        ),
        "{errors:?}"
    );
    assert!(!format!("{errors:?}").contains(SECRET), "{errors:?}");
    assert!(running(&dk::inspect(&host.docker, "loki").await));
    // The engine never made a directory of the missing file's path.
    assert!(std::fs::symlink_metadata(&secret_path).is_err());
}

#[tokio::test]
async fn grafana_admin_password_reaches_grafana_as_a_file_never_in_its_environment() {
    let host = Host::converged().await;
    let grafana = dk::inspect(&host.docker, "grafana").await;
    let env = env_of(&grafana);
    assert!(
        !format!("{env:?}").contains(SECRET),
        "the secret is in the environment: {env:?}"
    );
    assert!(
        env.iter()
            .any(|e| e == "GF_SECURITY_ADMIN_PASSWORD__FILE=/run/secrets/grafana-admin-password"),
        "{env:?}"
    );
    let path = file_path(&host.desired, "grafana-admin-password");
    let meta = std::fs::symlink_metadata(&path).expect("the secret file exists");
    assert!(meta.is_file());
    assert_eq!(meta.mode() & 0o7777, 0o400);
    assert_eq!((meta.uid(), meta.gid()), (10001, 10001));
    assert_eq!(std::fs::read_to_string(&path).expect("secret"), SECRET);
    // Mounted as one read-only file, outside every directory the container mounts.
    let binds = grafana
        .host_config
        .clone()
        .and_then(|h| h.binds)
        .unwrap_or_default();
    let secret_bind = format!("{}:/run/secrets/grafana-admin-password:ro", path.display());
    assert!(binds.contains(&secret_bind), "{binds:?}");
    for b in &binds {
        let source = b.split(':').next().unwrap_or("");
        if Path::new(source).is_dir() {
            assert!(!path.starts_with(source), "{source} exposes the secret");
        }
    }
    let inspect_text = serde_json::to_string(&grafana).expect("inspect serializes");
    assert!(
        !inspect_text.contains(SECRET),
        "docker inspect shows the secret"
    );
}

#[tokio::test]
async fn secret_values_never_appear_in_plans() {
    let host = Host::converged().await;
    // Someone sets another password on the container by hand, and in the file too.
    dk::recreate_by_hand(&host.docker, "grafana", true, |b| {
        b.env
            .get_or_insert_with(Vec::new)
            .push("GF_SECURITY_ADMIN_PASSWORD=admin".into());
    })
    .await;
    let path = file_path(&host.desired, "grafana-admin-password");
    std::fs::write(&path, "hand-set-password").expect("edit the secret by hand");
    let plan = host.plan().await;
    let text = format!("{plan}");
    let json = serde_json::to_string(&plan).expect("plan serializes");
    for shown in [&text, &json] {
        for secret in [SECRET, "=admin", ": admin", "hand-set-password"] {
            assert!(!shown.contains(secret), "{secret} shown in:\n{shown}");
        }
    }
    assert!(text.contains("spec.content: value differs"), "{text}");
    host.repair(
        "Container/grafana",
        Action::Replace,
        Some("spec.environment.GF_SECURITY_ADMIN_PASSWORD"),
    )
    .await;
    assert_eq!(std::fs::read_to_string(&path).expect("secret"), SECRET);
}

#[tokio::test]
async fn disabled_stack_removes_containers_and_keeps_files() {
    let host = Host::converged().await;
    let mut disabled = local_desired();
    disabled.stack.enabled = false;
    for r in &mut disabled.resources {
        if r.id.kind == Kind::Container {
            r.ensure = Ensure::Absent;
        }
    }
    let report = host.engine.apply(&disabled).await;
    assert!(report.converged(), "{:#?}", report.outcomes);
    assert_eq!(
        report.outcomes.len(),
        services(&host.desired).len(),
        "{:#?}",
        report.outcomes
    );
    for name in services(&host.desired) {
        let gone = host.docker.inspect_container(&name, None).await.is_err();
        assert!(gone, "{name} still exists");
    }
    assert!(
        file_path(&host.desired, "loki-config").exists(),
        "files must stay"
    );
    assert!(host.engine.plan(&disabled).await.changes.is_empty());
    // Enabled again: everything comes back.
    let report = host.engine.apply(&host.desired).await;
    assert!(report.converged(), "{:#?}", report.outcomes);
    host.assert_no_changes().await;
}

#[tokio::test]
async fn events_report_container_drift_at_once() {
    let host = Host::converged().await;
    let stats = Arc::new(Stats::default());
    let mut events = stackwarden::provider::host::watch_events(
        host.docker.clone(),
        STACK.into(),
        Default::default(),
        stats,
    );
    // Subscribing takes a moment; drift made before it is replayed (`since`), so no sleep.
    dk::remove(&host.docker, "cadvisor").await;
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.iter().any(|a: &String| a == "destroy") {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(stackwarden::provider::host::HostEvent::Container {
                action, name, ..
            })) if name == "cadvisor" => seen.push(action),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => panic!("no destroy event for cadvisor; saw {seen:?}"),
        }
    }
    assert!(seen.iter().any(|a| a == "die"), "{seen:?}");
    let report = host.engine.apply(&host.desired).await;
    assert!(report.converged(), "{:#?}", report.outcomes);
}

#[tokio::test]
async fn events_of_a_foreign_container_holding_a_declared_name_are_reported_and_others_not() {
    let host = Host::converged().await;
    let names: stackwarden::provider::host::events::WatchedNames = Default::default();
    names.write().expect("names").insert("loki".to_string());
    let mut events = stackwarden::provider::host::watch_events(
        host.docker.clone(),
        STACK.into(),
        names,
        Arc::new(Stats::default()),
    );
    // A stranger under a name nobody declares, then a foreign loki that leaves again.
    impostor(&host.docker, "sw-test-stranger", &[]).await;
    dk::remove(&host.docker, "sw-test-stranger").await;
    impostor(&host.docker, "loki", &[]).await;
    dk::remove(&host.docker, "loki").await;
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen
        .iter()
        .any(|(n, a): &(String, String)| n == "loki" && a == "destroy")
    {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(stackwarden::provider::host::HostEvent::Container {
                action, name, ..
            })) => seen.push((name, action)),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => panic!("no destroy event for the foreign loki; saw {seen:?}"),
        }
    }
    assert!(
        !seen.iter().any(|(n, _)| n == "sw-test-stranger"),
        "{seen:?}"
    );
    let report = host.engine.apply(&host.desired).await;
    assert!(report.converged(), "{:#?}", report.outcomes);
}

/// Runs the stackwarden binary on the host scope of the shipped `local` manifests, against
/// this process's host root, with the tests' admin password. The host scope still asks AWS
/// for the account (`${account}` in the bucket names the configs carry): the local world's
/// moto (`scripts/dev-env up`) answers.
fn stackwarden(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let root = host_root().display().to_string();
    Cli::new(args)
        .args(["--env", "local", "--scope", "host", "--host-root", &root])
        .aws("http://127.0.0.1:5000")
        .env("STACKWARDEN_GRAFANA_ADMIN_PASSWORD", SECRET)
        .envs(envs)
        .output()
}

#[tokio::test]
async fn apply_at_trace_level_prints_no_secret_anywhere() {
    let host = Host::converged().await;
    // Recreating Grafana makes the Docker client log its create and inspect bodies.
    dk::remove(&host.docker, "grafana").await;
    let out = stackwarden(
        &["apply"],
        &[("STACKWARDEN_LOG", "trace"), ("RUST_LOG", "trace")],
    );
    let text = text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    // The trace must really be on (stackwarden's own events at TRACE/DEBUG, and the apply
    // record of Grafana's re-creation), or the absence of the secret proves nothing.
    assert!(
        (text.contains("TRACE") || text.contains("DEBUG")) && text.contains("Container/grafana"),
        "the output shows no trace of the apply, so it proves nothing:\n{text}"
    );
    assert!(!text.contains(SECRET), "the secret is in the output");
    assert!(
        text.contains("creating Container/grafana"),
        "apply printed no step record:\n{text}"
    );
    host.assert_no_changes().await;
}

#[tokio::test]
async fn drift_environment_variable_added_by_hand_is_removed() {
    let host = Host::converged().await;
    dk::recreate_by_hand(&host.docker, "grafana", true, |b| {
        b.env
            .get_or_insert_with(Vec::new)
            .push("GF_AUTH_ANONYMOUS_ENABLED=true".into());
    })
    .await;
    host.repair(
        "Container/grafana",
        Action::Replace,
        Some("spec.environment.GF_AUTH_ANONYMOUS_ENABLED"),
    )
    .await;
    let env = env_of(&dk::inspect(&host.docker, "grafana").await);
    assert!(
        !env.iter()
            .any(|e| e.starts_with("GF_AUTH_ANONYMOUS_ENABLED")),
        "{env:?}"
    );
}

#[tokio::test]
async fn drift_entrypoint_changed_is_restored() {
    let host = Host::converged().await;
    dk::recreate_by_hand(&host.docker, "loki", true, |b| {
        b.entrypoint = Some(vec!["/bin/sh".into(), "-c".into(), "exec /stub".into()]);
    })
    .await;
    host.repair("Container/loki", Action::Replace, Some("Config.Entrypoint"))
        .await;
    let c = dk::inspect(&host.docker, "loki").await;
    assert_eq!(
        c.config.and_then(|c| c.entrypoint).unwrap_or_default(),
        ["/stub"]
    );
}

#[tokio::test]
async fn drift_health_check_removed_is_restored() {
    let host = Host::converged().await;
    dk::recreate_by_hand(&host.docker, "tempo", true, |b| {
        b.healthcheck = Some(bollard::models::HealthConfig {
            test: Some(vec!["NONE".into()]),
            ..Default::default()
        });
    })
    .await;
    host.repair("Container/tempo", Action::Replace, Some("spec.healthCheck"))
        .await;
    let c = dk::inspect(&host.docker, "tempo").await;
    let test = c
        .config
        .and_then(|c| c.healthcheck)
        .and_then(|h| h.test)
        .unwrap_or_default();
    assert_eq!(test.first().map(String::as_str), Some("CMD"), "{test:?}");
}

#[tokio::test]
async fn drift_container_paused_is_unpaused() {
    let host = Host::converged().await;
    let before = dk::inspect(&host.docker, "pyroscope").await.id;
    host.docker
        .pause_container("pyroscope")
        .await
        .expect("pause pyroscope");
    host.repair("Container/pyroscope", Action::Update, Some("state"))
        .await;
    let c = dk::inspect(&host.docker, "pyroscope").await;
    assert!(running(&c) && !c.state.and_then(|s| s.paused).unwrap_or(true));
    assert_eq!(c.id, before, "unpausing must not recreate");
}

#[tokio::test]
async fn drift_data_directory_replaced_by_a_symlink_is_restored_without_following_it() {
    let host = Host::converged().await;
    let before = dk::inspect(&host.docker, "loki").await.id;
    let data = file_path(&host.desired, "loki-data");
    // The link points at a directory stackwarden must never chown or chmod.
    let victim = host_root().join("victim");
    let _ = std::fs::remove_dir_all(&victim);
    std::fs::create_dir(&victim).expect("victim dir");
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    std::fs::remove_dir_all(&data).expect("remove the data directory");
    std::os::unix::fs::symlink(&victim, &data).expect("plant the symlink");
    let plan = host.plan().await;
    assert!(
        plan.changes
            .iter()
            .any(|c| c.id.to_string() == "Container/loki" && c.action == Action::Replace),
        "the container writing into the linked directory is not rolled:\n{plan}"
    );
    host.repair("ConfigFile/loki-data", Action::Replace, Some("spec.type"))
        .await;
    let meta = std::fs::symlink_metadata(&data).expect("data dir");
    assert!(meta.is_dir(), "the symlink is still there");
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (10001, 0o750));
    let victim_meta = std::fs::metadata(&victim).expect("victim");
    assert_eq!(
        (victim_meta.uid(), victim_meta.mode() & 0o7777),
        (0, 0o700),
        "the link's target was changed"
    );
    assert_ne!(dk::inspect(&host.docker, "loki").await.id, before);
}

#[tokio::test]
async fn drift_data_directory_deleted_and_recreated_restarts_its_container() {
    let host = Host::converged().await;
    let before = dk::inspect(&host.docker, "tempo").await.id;
    let data = file_path(&host.desired, "tempo-data");
    std::fs::remove_dir_all(&data).expect("remove");
    std::fs::create_dir(&data).expect("recreate");
    std::os::unix::fs::chown(&data, Some(10001), Some(10001)).expect("chown");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o750)).expect("chmod");
    let plan = host.plan().await;
    assert!(
        !plan.changes.iter().any(|c| c.id.kind == Kind::ConfigFile),
        "the directory itself is as declared:\n{plan}"
    );
    host.repair(
        "Container/tempo",
        Action::Replace,
        Some("spec.mounts[/data].source"),
    )
    .await;
    assert_ne!(dk::inspect(&host.docker, "tempo").await.id, before);
}

/// Puts a stub container named `name`, not created by stackwarden, with `labels`.
async fn impostor(docker: &Docker, name: &str, labels: &[(&str, &str)]) -> String {
    dk::remove(docker, name).await;
    let body = bollard::models::ContainerCreateBody {
        image: Some(STUB_IMAGE.into()),
        user: Some("10001:10001".into()),
        labels: Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        host_config: Some(bollard::models::HostConfig {
            network_mode: Some("none".into()),
            security_opt: Some(vec!["no-new-privileges".into()]),
            ..Default::default()
        }),
        ..Default::default()
    };
    dk::create(docker, name, body).await
}

#[tokio::test]
async fn a_declared_name_held_by_an_unmanaged_container_fails_plan_and_apply() {
    let host = Host::converged().await;
    let id = impostor(&host.docker, "loki", &[]).await;
    let plan = host.engine.plan(&host.desired).await;
    assert!(
        plan.errors()
            .iter()
            .any(|e| e.contains("Container/loki") && e.contains("does not manage")),
        "{:?}\n{plan}",
        plan.errors()
    );
    let report = host.engine.apply(&host.desired).await;
    assert!(!report.converged(), "apply claims convergence");
    let out = stackwarden(&["plan"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("Container/loki"));
    let out = stackwarden(&["apply"], &[]);
    let text = text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(!text.contains("Live state matches"), "{text}");
    // It still holds, untouched.
    assert_eq!(
        dk::inspect(&host.docker, "loki").await.id.as_deref(),
        Some(id.as_str())
    );
    dk::remove(&host.docker, "loki").await;
}

#[tokio::test]
async fn a_declared_name_held_by_another_stack_is_an_error_naming_the_owner() {
    let host = Host::converged().await;
    let id = impostor(&host.docker, "mimir", &[("stackwarden.stack", "billing")]).await;
    let plan = host.engine.plan(&host.desired).await;
    assert!(
        plan.errors()
            .iter()
            .any(|e| e.contains("Container/mimir") && e.contains("`billing`")),
        "{:?}",
        plan.errors()
    );
    let out = stackwarden(&["apply"], &[]);
    let text = text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("billing"), "{text}");
    assert_eq!(
        dk::inspect(&host.docker, "mimir").await.id.as_deref(),
        Some(id.as_str()),
        "another stack's container was touched"
    );
    dk::remove(&host.docker, "mimir").await;
}

/// A second host provider, to plan before a container is created elsewhere (as when a
/// killed apply's create completes in the engine after the next apply observed).
async fn second_provider() -> HostProvider {
    HostProvider::connect(host_root().to_path_buf(), Arc::new(Stats::default()))
        .await
        .expect("the host provider connects")
}

#[tokio::test]
async fn a_container_created_from_the_same_spec_after_the_observe_is_adopted() {
    use stackwarden::provider::DynProvider;
    let host = Host::converged().await;
    dk::remove(&host.docker, "loki").await;
    let late = second_provider().await;
    let work = late.plan(&host.desired).await.expect("plan");
    assert!(
        work.changes()
            .iter()
            .any(|c| c.id.to_string() == "Container/loki" && c.action == Action::Create),
        "the plan does not create loki: {:?}",
        work.changes()
    );
    // Another apply makes it meanwhile, from the same manifests.
    let report = host.engine.apply(&host.desired).await;
    assert!(report.converged(), "apply failed: {:#?}", report.outcomes);
    let made = dk::inspect(&host.docker, "loki").await.id;

    let outcomes = work.apply(&|_| true, &OpenGate).await;
    let failed: Vec<_> = outcomes.iter().filter(|o| o.error.is_some()).collect();
    assert!(failed.is_empty(), "the late create failed: {failed:#?}");
    assert_eq!(
        dk::inspect(&host.docker, "loki").await.id,
        made,
        "the container made meanwhile was replaced"
    );
    host.assert_no_changes().await;
}

#[tokio::test]
async fn a_container_of_other_settings_taking_the_name_after_the_observe_is_left_to_the_next_pass()
{
    use stackwarden::provider::DynProvider;
    let host = Host::converged().await;
    dk::remove(&host.docker, "tempo").await;
    let late = second_provider().await;
    let work = late.plan(&host.desired).await.expect("plan");
    // This stack's label, but not the spec's hash: not the container the step was to make.
    let id = impostor(
        &host.docker,
        "tempo",
        &[("stackwarden.stack", STACK), ("stackwarden.env", "local")],
    )
    .await;

    let outcomes = work.apply(&|_| true, &OpenGate).await;
    let create = outcomes
        .iter()
        .find(|o| o.change.id.to_string() == "Container/tempo")
        .expect("an outcome for tempo");
    let error = create.error.as_deref().unwrap_or_default();
    assert!(
        error.contains("taken after the host was observed"),
        "{outcomes:#?}"
    );
    assert_eq!(
        dk::inspect(&host.docker, "tempo").await.id.as_deref(),
        Some(id.as_str()),
        "the container that took the name was touched"
    );
    // The next pass sees it, and replaces it with the declared one.
    host.repair("Container/tempo", Action::Replace, None).await;
}

#[tokio::test]
async fn a_container_wearing_the_stacks_labels_and_hash_but_other_settings_is_not_adopted() {
    use stackwarden::provider::DynProvider;
    let host = Host::converged().await;
    // Labels can be copied by hand, the config hash included: only the settings tell.
    let labels = dk::inspect(&host.docker, "pyroscope")
        .await
        .config
        .and_then(|c| c.labels)
        .unwrap_or_default();
    assert!(labels.contains_key(stackwarden::provider::host::HASH_LABEL));
    dk::remove(&host.docker, "pyroscope").await;
    let late = second_provider().await;
    let work = late.plan(&host.desired).await.expect("plan");
    let pairs: Vec<(&str, &str)> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let id = impostor(&host.docker, "pyroscope", &pairs).await;
    host.docker
        .start_container(
            "pyroscope",
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
        .ok();

    let outcomes = work.apply(&|_| true, &OpenGate).await;
    let create = outcomes
        .iter()
        .find(|o| o.change.id.to_string() == "Container/pyroscope")
        .expect("an outcome for pyroscope");
    assert!(
        create
            .error
            .as_deref()
            .is_some_and(|e| e.contains("taken after the host was observed")),
        "a container of other settings was adopted: {outcomes:#?}"
    );
    assert_eq!(
        dk::inspect(&host.docker, "pyroscope").await.id.as_deref(),
        Some(id.as_str())
    );
    host.repair("Container/pyroscope", Action::Replace, None)
        .await;
}

#[test]
fn a_docker_socket_that_never_answers_fails_plan_with_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("silent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    // Accept every connection and keep it open without a word.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let host = format!("unix://{}", socket.display());
    let out = stackwarden(&["plan"], &[("DOCKER_HOST", host.as_str())]);
    let text = text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&host),
        "the error does not name the socket: {text}"
    );
    assert!(text.contains("no answer within"), "{text}");
}

#[tokio::test]
async fn a_linked_parent_directory_is_never_written_through() {
    let host = Host::converged().await;
    let secret = file_path(&host.desired, "grafana-admin-password");
    let parent = secret.parent().expect("parent").to_path_buf();
    // A person replaces secrets/ with a link to a directory holding a file of that name.
    let victim = host_root().join("victim-parent");
    let _ = std::fs::remove_dir_all(&victim);
    std::fs::create_dir(&victim).expect("victim dir");
    let bait = victim.join("grafana-admin-password");
    std::fs::write(&bait, "bait").expect("bait");
    std::fs::set_permissions(&bait, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    std::fs::remove_dir_all(&parent).expect("remove secrets/");
    std::os::unix::fs::symlink(&victim, &parent).expect("link secrets/");

    let plan = host.plan().await;
    assert!(
        plan.changes
            .iter()
            .any(|c| c.id.to_string() == "ConfigFile/grafana-admin-password"),
        "a file behind a linked parent passes for ours:\n{plan}"
    );
    let report = host.engine.apply(&host.desired).await;
    let failed: Vec<String> = report.failures().map(|o| o.change.id.to_string()).collect();
    assert!(
        failed.contains(&"ConfigFile/grafana-admin-password".to_string()),
        "{:#?}",
        report.outcomes
    );
    let error = report
        .failures()
        .find_map(|o| o.error.clone())
        .unwrap_or_default();
    assert!(error.contains("refusing to write through"), "{error}");
    let meta = std::fs::metadata(&bait).expect("bait");
    assert_eq!(std::fs::read_to_string(&bait).expect("bait"), "bait");
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o644));
    // Once the link is gone, one apply restores everything.
    std::fs::remove_file(&parent).expect("unlink");
    let report = host.engine.apply(&host.desired).await;
    assert!(report.converged(), "{:#?}", report.outcomes);
    host.assert_no_changes().await;
}

/// A ConfigFile beyond the shipped ones, with no mode declared.
fn extra_file(name: &str, path: &str) -> Resource {
    let spec: ConfigFileSpec = serde_json::from_value(json!({
        "path": path,
        "content": "written by a ConfigFile that is later removed\n",
        "owner": 10001,
        "group": 10001
    }))
    .expect("config file spec");
    resource(Kind::ConfigFile, name, Spec::ConfigFile(spec))
}

#[tokio::test]
async fn a_file_with_no_declared_mode_is_never_world_readable() {
    let mut host = Host::converged().await;
    host.desired
        .resources
        .push(extra_file("undeclared-mode", "notes/undeclared-mode.txt"));
    let report = host.engine.apply(&host.desired).await;
    assert!(report.converged(), "{:#?}", report.outcomes);
    let path = host_root().join("notes/undeclared-mode.txt");
    let mode = std::fs::metadata(&path).expect("written").mode() & 0o7777;
    assert_eq!(mode, 0o640, "{mode:o}");
    // Clean up through the same path a person takes: remove it from the manifests.
    host.desired.resources.pop();
    host.repair("ConfigFile/undeclared-mode", Action::Delete, None)
        .await;
}

#[tokio::test]
async fn a_removed_config_file_takes_its_file_with_it() {
    let mut host = Host::converged().await;
    host.desired
        .resources
        .push(extra_file("removed-later", "notes/removed-later.txt"));
    let report = host.engine.apply(&host.desired).await;
    assert!(report.converged(), "{:#?}", report.outcomes);
    let path = host_root().join("notes/removed-later.txt");
    assert!(path.exists(), "the file is written");
    // A data directory beside it is never touched by the removal.
    host.desired.resources.pop();
    let plan = host.plan().await;
    let change = plan
        .changes
        .iter()
        .find(|c| c.id.to_string() == "ConfigFile/removed-later")
        .unwrap_or_else(|| panic!("the removal is planned:\n{plan}"));
    assert_eq!(change.action, Action::Delete);
    assert!(
        change
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("notes/removed-later.txt")),
        "{plan}"
    );
    host.repair("ConfigFile/removed-later", Action::Delete, None)
        .await;
    assert!(
        std::fs::symlink_metadata(&path).is_err(),
        "the file is gone"
    );
    assert!(
        file_path(&host.desired, "loki-config").exists(),
        "declared files stay"
    );
}

#[tokio::test]
async fn drift_container_moved_to_another_network_is_replaced() {
    let host = Host::converged().await;
    const NET: &str = "sw-test-moved-net";
    dk::move_to_new_network(&host.docker, "grafana", NET).await;
    host.repair(
        "Container/grafana",
        Action::Replace,
        Some("spec.network (attached)"),
    )
    .await;
    let grafana = dk::inspect(&host.docker, "grafana").await;
    let attached: Vec<String> = grafana
        .network_settings
        .and_then(|n| n.networks)
        .map(|n| n.into_keys().collect())
        .unwrap_or_default();
    assert_eq!(attached, ["none"]);
    host.docker
        .remove_network(NET)
        .await
        .expect("the network goes");
}

/// Runs the docker CLI against the test engine; panics with its output on failure.
fn docker_cli(args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("docker")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the docker CLI runs");
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        input.write_all(text.as_bytes()).expect("stdin");
    }
    let out = child.wait_with_output().expect("docker finishes");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn a_tag_moved_in_the_registry_is_a_planned_replacement_saying_so() {
    let host = Host::converged().await;
    let original = docker_cli(&["image", "inspect", "-f", "{{.Id}}", STUB_IMAGE], None);
    // Other content under the same tag, as a push to the registry would make it.
    docker_cli(
        &["build", "-q", "-t", STUB_IMAGE, "-"],
        Some(&format!(
            "FROM {original}\nLABEL io.stackwarden.test.moved=\"1\"\n"
        )),
    );
    let plan = host.plan().await;
    let loki = plan
        .changes
        .iter()
        .find(|c| c.id.to_string() == "Container/loki")
        .unwrap_or_else(|| panic!("loki is planned:\n{plan}"));
    let reason = loki.reason.clone().unwrap_or_default();
    // Put the tag back whatever the assertions say, for the tests that follow.
    docker_cli(&["tag", &original, STUB_IMAGE], None);
    assert_eq!(loki.action, Action::Replace, "{plan}");
    assert!(
        reason.contains(&format!("image tag {STUB_IMAGE} now resolves to")),
        "{reason}"
    );
    assert!(loki.fields.iter().any(|f| f.path == "spec.image"), "{plan}");
    // The tag is back: nothing to do.
    host.assert_no_changes().await;
}

#[tokio::test]
async fn a_container_whose_mounted_file_cannot_be_written_is_not_recreated() {
    let host = Host::converged().await;
    let before = dk::inspect(&host.docker, "grafana").await.id;
    // The file's directory replaced by a plain file: no write can land below it.
    let rules = file_path(&host.desired, "grafana-alert-rules");
    let dir = rules.parent().expect("a parent").to_path_buf();
    let saved = host_root().join("alerting-saved");
    let _ = std::fs::remove_dir_all(&saved);
    std::fs::rename(&dir, &saved).expect("move the directory away");
    std::fs::write(&dir, "not a directory").expect("a file in its place");
    let report = host.engine.apply(&host.desired).await;
    // Put the directory back whatever the assertions say, for the tests that follow.
    std::fs::remove_file(&dir).expect("remove the file");
    std::fs::rename(&saved, &dir).expect("restore the directory");
    let outcome = |id: &str| {
        report
            .outcomes
            .iter()
            .find(|o| o.change.id.to_string() == id)
            .unwrap_or_else(|| panic!("no outcome for {id}: {:#?}", report.outcomes))
    };
    assert!(outcome("ConfigFile/grafana-alert-rules").error.is_some());
    let grafana = outcome("Container/grafana");
    assert!(
        grafana
            .error
            .as_deref()
            .is_some_and(|e| e.contains("blocked: its mounted ConfigFile/grafana-")),
        "{grafana:?}"
    );
    // Never stopped, never recreated.
    let after = dk::inspect(&host.docker, "grafana").await;
    assert_eq!(after.id, before);
    assert_eq!(after.state.and_then(|s| s.running), Some(true));
    host.assert_no_changes().await;
}

#[tokio::test]
async fn a_container_from_before_the_environment_label_is_adopted_by_recreating_it_with_the_label()
{
    let host = Host::converged().await;
    // What a stackwarden from before the environment label left: the stack's labels, its
    // config hash, no `stackwarden.env`.
    let labels = dk::inspect(&host.docker, "tempo")
        .await
        .config
        .and_then(|c| c.labels)
        .unwrap_or_default();
    assert_eq!(
        labels.get("stackwarden.env").map(String::as_str),
        Some("local")
    );
    let pairs: Vec<(&str, &str)> = labels
        .iter()
        .filter(|(k, _)| k.as_str() != "stackwarden.env")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    impostor(&host.docker, "tempo", &pairs).await;
    let plan = host.plan().await;
    assert!(plan.errors().is_empty(), "{:?}\n{plan}", plan.errors());
    let change = plan
        .changes
        .iter()
        .find(|c| c.id.to_string() == "Container/tempo")
        .unwrap_or_else(|| panic!("tempo is not planned:\n{plan}"));
    let reason = change.reason.as_deref().unwrap_or("");
    assert!(
        reason.contains("predates the environment label stackwarden.env=local"),
        "{reason}\n{plan}"
    );
    host.repair(
        "Container/tempo",
        Action::Replace,
        Some("metadata.labels[stackwarden.env]"),
    )
    .await;
    let labels = dk::inspect(&host.docker, "tempo")
        .await
        .config
        .and_then(|c| c.labels)
        .unwrap_or_default();
    assert_eq!(
        labels.get("stackwarden.env").map(String::as_str),
        Some("local")
    );
}
