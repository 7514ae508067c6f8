//! The real Docker engine for the host tests. Container names are fixed service names, so
//! every Docker test holds one global lock (in-process async mutex + a file lock across test
//! processes) and cleans up the stack's containers first. An unreachable engine FAILS the
//! test: `scripts/dev-env up` starts one.

use bollard::Docker;
use bollard::models::{ContainerCreateBody, ContainerInspectResponse};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The local stub image (`scripts/dev-env image`).
pub const STUB_IMAGE: &str = "stackwarden/stub:local";

/// The shipped local stack's containers (manifests/host/containers.yaml).
pub const LOCAL_CONTAINERS: [&str; 9] = [
    "mimir",
    "loki",
    "tempo",
    "pyroscope",
    "node-exporter",
    "cadvisor",
    "alloy",
    "grafana",
    "stackwarden",
];

static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Held for the length of one Docker test.
pub struct Exclusive {
    _inner: tokio::sync::MutexGuard<'static, ()>,
    _file: std::fs::File,
}

/// Takes the global Docker-test lock (waits for other tests, in this process and others).
pub async fn exclusive() -> Exclusive {
    let inner = LOCK.lock().await;
    let path = std::env::temp_dir().join("stackwarden-docker-tests.lock");
    let file = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::create(&path).expect("lock file can be created");
        file.lock().expect("lock file can be locked");
        file
    })
    .await
    .expect("lock task runs");
    Exclusive {
        _inner: inner,
        _file: file,
    }
}

/// A client of the engine on the default socket; panics (fails the test) when none answers.
pub async fn docker() -> Docker {
    let docker = Docker::connect_with_local_defaults()
        .expect("a Docker engine socket exists (run scripts/dev-env up)");
    let docker = docker
        .negotiate_version()
        .await
        .expect("the Docker engine answers (run scripts/dev-env up)");
    docker
        .inspect_image(STUB_IMAGE)
        .await
        .expect("the stub image exists (run scripts/dev-env image)");
    docker
}

/// Every container carrying `stackwarden.stack=<stack>`, running or not.
pub async fn stack_containers(
    docker: &Docker,
    stack: &str,
) -> Vec<bollard::models::ContainerSummary> {
    let mut filters = HashMap::new();
    filters.insert(
        "label".to_string(),
        vec![format!("stackwarden.stack={stack}")],
    );
    let opts = bollard::query_parameters::ListContainersOptions {
        all: true,
        filters: Some(filters),
        ..Default::default()
    };
    docker
        .list_containers(Some(opts))
        .await
        .expect("containers can be listed")
}

/// A listed container's name, without Docker's leading slash.
pub fn name_of(c: &bollard::models::ContainerSummary) -> Option<String> {
    Some(
        c.names
            .as_ref()?
            .first()?
            .trim_start_matches('/')
            .to_string(),
    )
}

/// Removes, by force, every container carrying `stackwarden.stack=<stack>` and every
/// container with one of `names`.
pub async fn cleanup(docker: &Docker, stack: &str, names: &[&str]) {
    let mut ids: Vec<String> = stack_containers(docker, stack)
        .await
        .into_iter()
        .filter_map(|c| c.id)
        .collect();
    ids.extend(names.iter().map(|n| n.to_string()));
    for id in ids {
        remove(docker, &id).await;
    }
}

/// Removes a container by force; a missing one is fine.
pub async fn remove(docker: &Docker, name: &str) {
    let opts = bollard::query_parameters::RemoveContainerOptions {
        force: true,
        ..Default::default()
    };
    match docker.remove_container(name, Some(opts)).await {
        Ok(()) => {}
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        Err(e) => panic!("removing container {name}: {e}"),
    }
}

/// Inspects a container that must exist.
pub async fn inspect(docker: &Docker, name: &str) -> ContainerInspectResponse {
    docker
        .inspect_container(name, None)
        .await
        .unwrap_or_else(|e| panic!("inspecting container {name}: {e}"))
}

/// Moves `container` off `none` onto a new bridge network `net` (made afresh), as
/// `docker network disconnect none` and `docker network connect` would.
pub async fn move_to_new_network(docker: &Docker, container: &str, net: &str) {
    use bollard::models::{NetworkConnectRequest, NetworkCreateRequest, NetworkDisconnectRequest};
    let _ = docker.remove_network(net).await;
    docker
        .create_network(NetworkCreateRequest {
            name: net.into(),
            driver: Some("bridge".into()),
            ..Default::default()
        })
        .await
        .expect("a bridge network can be made");
    docker
        .disconnect_network(
            "none",
            NetworkDisconnectRequest {
                container: container.into(),
                force: Some(true),
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{container} leaves none: {e}"));
    docker
        .connect_network(
            net,
            NetworkConnectRequest {
                container: container.into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{container} joins {net}: {e}"));
}

/// True when a container of that name exists and runs.
pub async fn inspect_running(docker: &Docker, name: &str) -> bool {
    docker
        .inspect_container(name, None)
        .await
        .ok()
        .and_then(|c| c.state)
        .and_then(|s| s.running)
        .unwrap_or(false)
}

/// Creates container `name` from `body`, as `docker create --name` would; returns its id.
pub async fn create(docker: &Docker, name: &str, body: ContainerCreateBody) -> String {
    let opts = bollard::query_parameters::CreateContainerOptions {
        name: Some(name.to_string()),
        ..Default::default()
    };
    docker
        .create_container(Some(opts), body)
        .await
        .unwrap_or_else(|e| panic!("creating {name} by hand: {e}"))
        .id
}

/// Recreates container `name` by hand the way a person would with `docker run`: same image,
/// environment, labels (the stack label and config hash copied) and host config, changed by
/// `edit`; started only when `start` (this engine refuses to start privileged containers).
pub async fn recreate_by_hand(
    docker: &Docker,
    name: &str,
    start: bool,
    edit: impl FnOnce(&mut ContainerCreateBody),
) {
    let old = inspect(docker, name).await;
    let config = old.config.clone().unwrap_or_default();
    let mut body = ContainerCreateBody {
        hostname: config.hostname,
        user: config.user,
        env: config.env,
        cmd: config.cmd,
        image: config.image,
        labels: config.labels,
        healthcheck: config.healthcheck,
        host_config: old.host_config.clone(),
        ..Default::default()
    };
    edit(&mut body);
    remove(docker, name).await;
    create(docker, name, body).await;
    if start {
        docker
            .start_container(
                name,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .unwrap_or_else(|e| panic!("starting {name} by hand: {e}"));
    }
}

/// Stops a container (the stub ends on SIGTERM at once).
pub async fn stop(docker: &Docker, name: &str) {
    let opts = bollard::query_parameters::StopContainerOptions {
        t: Some(5),
        signal: None,
    };
    docker
        .stop_container(name, Some(opts))
        .await
        .unwrap_or_else(|e| panic!("stopping {name}: {e}"));
}

/// A unix-socket proxy in front of the real engine: the daemon under test talks to it, and a
/// test stops it to make "the Docker engine is gone" real for the client (connections
/// refused, streams cut) without stopping the engine other tests share. It runs on a thread
/// of its own: the tests poll the daemon with blocking waits, which would starve a proxy
/// running on the test's own runtime.
pub struct SocketProxy {
    path: std::path::PathBuf,
    server: super::thread::OwnThread,
}

impl SocketProxy {
    /// Listens on `path`, forwarding every connection to /var/run/docker.sock.
    pub async fn start(path: &std::path::Path) -> SocketProxy {
        Self::counting(path, Arc::default()).await
    }

    /// Like [`SocketProxy::start`], counting in `writes` every request that changes a
    /// container (`POST` or `DELETE` under `/containers`), as the engine receives it: what a
    /// client did, seen from the Docker API rather than from the client's own account.
    pub async fn counting(path: &std::path::Path, writes: Arc<AtomicUsize>) -> SocketProxy {
        Self::recording(path, move |_, _| {
            writes.fetch_add(1, Ordering::SeqCst);
        })
        .await
    }

    /// Like [`SocketProxy::counting`], keeping each container-changing request (`METHOD
    /// /path`) under the pid of the process that sent it (the socket's peer, as the kernel
    /// names it): which of several clients wrote what. The socket is open to every user (a
    /// container's uid connects to it).
    pub async fn by_peer(path: &std::path::Path, writes: WritesByPeer) -> SocketProxy {
        let proxy = Self::recording(path, move |pid, request| {
            writes
                .lock()
                .unwrap()
                .entry(pid)
                .or_default()
                .push(request.to_string());
        })
        .await;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
            .expect("the proxy socket opens to all");
        proxy
    }

    async fn recording(
        path: &std::path::Path,
        record: impl Fn(i32, &str) + Send + Sync + 'static,
    ) -> SocketProxy {
        let record: Recorder = Arc::new(record);
        let _ = std::fs::remove_file(path);
        let listener = std::os::unix::net::UnixListener::bind(path).expect("proxy socket binds");
        listener.set_nonblocking(true).expect("nonblocking socket");
        let server = super::thread::OwnThread::spawn(move || async move {
            let listener = tokio::net::UnixListener::from_std(listener).expect("proxy listener");
            while let Ok((inbound, _)) = listener.accept().await {
                let record = record.clone();
                let pid = inbound.peer_cred().ok().and_then(|c| c.pid()).unwrap_or(0);
                tokio::spawn(async move {
                    if let Ok(outbound) =
                        tokio::net::UnixStream::connect("/var/run/docker.sock").await
                    {
                        forward(inbound, outbound, record, pid).await;
                    }
                });
            }
        });
        SocketProxy {
            path: path.to_path_buf(),
            server,
        }
    }

    /// Stops accepting, cuts every open connection, removes the socket.
    pub async fn stop(self) {
        let server = self.server;
        let _ = tokio::task::spawn_blocking(move || server.stop()).await;
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Container-changing requests (`METHOD /path`) by the pid that sent them.
pub type WritesByPeer = Arc<std::sync::Mutex<std::collections::BTreeMap<i32, Vec<String>>>>;

type Recorder = Arc<dyn Fn(i32, &str) + Send + Sync>;

/// Copies both ways, recording container-changing requests on the way in. Request lines are
/// found by their method at the start of a line; a carry of the last bytes finds one split
/// across two reads.
async fn forward(
    inbound: tokio::net::UnixStream,
    outbound: tokio::net::UnixStream,
    record: Recorder,
    pid: i32,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut in_read, mut in_write) = inbound.into_split();
    let (mut out_read, mut out_write) = outbound.into_split();
    let upstream = async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut carry: Vec<u8> = b"\n".to_vec();
        loop {
            let n = match in_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut seen = std::mem::take(&mut carry);
            seen.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&seen);
            for (at, _) in ["\nPOST /", "\nDELETE /"]
                .iter()
                .flat_map(|m| text.match_indices(m))
            {
                let mut words = text[at + 1..].split(' ');
                if let (Some(method), Some(path)) = (words.next(), words.next())
                    && path.contains("/containers")
                {
                    record(pid, &format!("{method} {path}"));
                }
            }
            carry = seen[seen.len().saturating_sub(64)..].to_vec();
            if out_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = out_write.shutdown().await;
    };
    let downstream = async move {
        let _ = tokio::io::copy(&mut out_read, &mut in_write).await;
        let _ = in_write.shutdown().await;
    };
    tokio::join!(upstream, downstream);
}
