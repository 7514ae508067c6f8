//! stackwarden on the host runs as one of the stack's containers (manifests/host). From
//! inside, it must never remove, replace or restart that container: the step would end the
//! process midway, and a replace would never create the new one. The image the Dockerfile
//! builds (scripts/image) runs `apply` inside a container the manifests declare, drifted.

use crate::support::cli::Cli;
use crate::support::docker as dk;
use bollard::Docker;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

/// What scripts/image builds from the Dockerfile.
const IMAGE: &str = "stackwarden:local";
const NAME: &str = "sw-self";
const STACK: &str = "selftest";
const SOCKET: &str = "/var/run/docker.sock";
/// What the container runs: `apply` over the manifests mounted at /stack.
const COMMAND: [&str; 9] = [
    "apply",
    "--env",
    "test",
    "--scope",
    "host",
    "--manifests",
    "/stack",
    "--host-root",
    "/stack",
];

/// The image, built by scripts/image when this machine has none yet (`.ci/run` builds it
/// before the tests).
pub(crate) fn ensure_image() {
    let present = Command::new("docker")
        .args(["image", "inspect", IMAGE])
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
}

/// A stack of one container: this image, running `apply` over the manifests it is given.
fn manifests(dir: &Path, socket_gid: u32) {
    let command = COMMAND.join(", ");
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
  reconcileInterval: 30s
  domain: example.com
  host:
    instanceType: t3.medium
    memoryBudget: 3G
---
apiVersion: stackwarden.io/v1
kind: Container
metadata:
  name: {NAME}
spec:
  image: {IMAGE}
  command: [{command}]
  user: "10001:{socket_gid}"
  securityOpt: [no-new-privileges]
  capDrop: [ALL]
  readOnlyRootFilesystem: true
  mounts:
    - {{ hostPath: {SOCKET}, target: {SOCKET} }}
  network: none
  memory: 64M
  restart: "no"
"#
        ),
    )
    .unwrap();
    std::fs::write(dir.join("environments/test.yaml"), "project: selftest\n").unwrap();
    // The container's user reads them.
    for p in [dir, &dir.join("environments")] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// The container as a person (or an older apply) left it: this stack's, but with 128 MiB
/// where the manifest says 64, so the plan made inside it replaces it.
async fn drifted_self(docker: &Docker, dir: &Path, socket_gid: u32) -> String {
    dk::remove(docker, NAME).await;
    let mut labels = HashMap::new();
    labels.insert("stackwarden.stack".to_string(), STACK.to_string());
    // The environment its plan runs in (`--env test`).
    labels.insert("stackwarden.env".to_string(), "test".to_string());
    let body = bollard::models::ContainerCreateBody {
        image: Some(IMAGE.into()),
        cmd: Some(COMMAND.map(String::from).to_vec()),
        user: Some(format!("10001:{socket_gid}")),
        labels: Some(labels),
        host_config: Some(bollard::models::HostConfig {
            network_mode: Some("none".into()),
            memory: Some(128 << 20),
            readonly_rootfs: Some(true),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            binds: Some(vec![
                format!("{SOCKET}:{SOCKET}"),
                format!("{}:/stack:ro", dir.display()),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    };
    dk::create(docker, NAME, body).await
}

#[tokio::test]
async fn apply_inside_its_own_drifted_container_refuses_to_replace_it_and_says_why() {
    let _lock = dk::exclusive().await;
    let docker = dk::docker().await;
    ensure_image();
    let socket_gid = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(SOCKET)
            .expect("the engine's socket")
            .gid()
    };
    let dir = tempfile::tempdir().unwrap();
    manifests(dir.path(), socket_gid);
    let id = drifted_self(&docker, dir.path(), socket_gid).await;

    // Planned from outside, the change is a replace (the test's premise).
    let plan = Cli::new(&["plan", "--env", "test", "--scope", "host", "--manifests"])
        .arg(dir.path())
        .arg("--host-root")
        .arg(dir.path())
        .env("DOCKER_HOST", format!("unix://{SOCKET}"))
        .output();
    let plan_text = String::from_utf8_lossy(&plan.stdout);
    assert!(
        plan_text.contains(&format!("replace Container/{NAME}")),
        "{plan_text}{}",
        String::from_utf8_lossy(&plan.stderr)
    );

    docker
        .start_container(
            NAME,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
        .expect("start");
    let mut wait = docker.wait_container(
        NAME,
        None::<bollard::query_parameters::WaitContainerOptions>,
    );
    use futures_util::StreamExt;
    while let Some(item) = wait.next().await {
        // A non-zero exit comes as an error item carrying the code; the inspect below decides.
        if item.is_err() {
            break;
        }
    }
    let after = dk::inspect(&docker, NAME).await;
    let logs: Vec<String> = docker
        .logs(
            NAME,
            Some(bollard::query_parameters::LogsOptions {
                stdout: true,
                stderr: true,
                ..Default::default()
            }),
        )
        .map(|l| l.map(|l| l.to_string()).unwrap_or_default())
        .collect()
        .await;
    let logs = logs.concat();
    assert_eq!(
        after.id.as_deref(),
        Some(id.as_str()),
        "the container was replaced:\n{logs}"
    );
    let code = after.state.as_ref().and_then(|s| s.exit_code);
    assert_eq!(
        code,
        Some(1),
        "apply inside should fail the refused step:\n{logs}"
    );
    assert!(
        logs.contains("runs this stackwarden process"),
        "the refusal does not say why:\n{logs}"
    );
    dk::remove(&docker, NAME).await;
}
