//! A real moto server per test, on a free loopback port, seeded with the pre-existing world
//! (scripts/seed-world) and killed on drop. Clients are built for its endpoint explicitly:
//! tests never touch the process environment (they run in parallel threads).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long moto may take to start answering (it imports all of boto on start).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running, seeded moto server.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

/// A free loopback port (for a server to be started later).
pub fn free_loopback_port() -> u16 {
    free_port()
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
    listener.local_addr().expect("bound address").port()
}

fn moto_server_binary() -> String {
    for candidate in ["/root/.pyenv/shims/moto_server", "moto_server"] {
        if candidate == "moto_server" || Path::new(candidate).exists() {
            return candidate.to_string();
        }
    }
    "moto_server".to_string()
}

impl Moto {
    /// Starts moto and seeds the local world of durable-code (VPC, subnets, ALB with its HTTP
    /// listener, the ALB and ECS-tasks groups, the instance profile).
    /// `extra` are further seed-world flags (`--https-listener`).
    pub async fn start(extra: &[&str]) -> Moto {
        // The port was free when picked, but is not reserved: something else may take it
        // before moto binds it, and moto then exits. Another port is tried.
        for _ in 0..3 {
            if let Some(moto) = Moto::spawn_on(free_port()).await {
                moto.seed(extra).await;
                return moto;
            }
        }
        panic!("moto_server exited at start three times (ports taken as it started?)");
    }

    /// Starts moto with nothing seeded (tests that need only a bucket).
    pub async fn start_bare() -> Moto {
        for _ in 0..3 {
            if let Some(moto) = Moto::spawn_on(free_port()).await {
                return moto;
            }
        }
        panic!("moto_server exited at start three times (ports taken as it started?)");
    }

    /// Like [`Moto::start`], on a given port (a server restarted where a client expects it).
    pub async fn start_on(port: u16, extra: &[&str]) -> Moto {
        let moto = Moto::spawn_on(port)
            .await
            .unwrap_or_else(|| panic!("moto_server exited at start on port {port}"));
        moto.seed(extra).await;
        moto
    }

    /// Starts moto on `port` and waits until it answers there; `None` if it exited first.
    async fn spawn_on(port: u16) -> Option<Moto> {
        let child = Command::new(moto_server_binary())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            // Request recordings (the daemon tests count writes with them) stay out of the
            // repository.
            .env(
                "MOTO_RECORDER_FILEPATH",
                std::env::temp_dir().join(format!("stackwarden-moto-recording-{port}")),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts (pip install 'moto[server]==5.2.1')");
        let mut moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(_)) = moto.child.try_wait() {
                return None;
            }
            // Its own listening socket, not merely something answering on the port: the port
            // is not reserved between its pick and moto's bind, and a connect to a port
            // nobody listens on can even land on itself.
            if listens(moto.child.id(), port) {
                return Some(moto);
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer on port {port}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs scripts/seed-world against this server (idempotent) and returns what it printed.
    pub async fn seed(&self, extra: &[&str]) -> String {
        let endpoint = self.endpoint.clone();
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let out = tokio::task::spawn_blocking(move || {
            Command::new("python3")
                .args([
                    "scripts/seed-world",
                    "--endpoint-url",
                    &endpoint,
                    "--project",
                    "durable-code",
                    "--env",
                    "local",
                    "--region",
                    "us-east-1",
                ])
                .args(&extra)
                .env("AWS_ACCESS_KEY_ID", "testing")
                .env("AWS_SECRET_ACCESS_KEY", "testing")
                .output()
        })
        .await
        .expect("seed task runs")
        .expect("scripts/seed-world runs");
        assert!(
            out.status.success(),
            "seed-world failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// An SDK config for this server: static test credentials, us-east-1, its endpoint.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_ec2::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .endpoint_url(&self.endpoint)
            .load()
            .await
    }
}

/// True when process `pid` holds a socket listening on 127.0.0.1 (or any address) `port`.
fn listens(pid: u32, port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    // Columns: sl local_address rem_address st … inode; ports in hex, 0A = LISTEN.
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let local_port = cols.get(1)?.rsplit_once(':')?.1;
            let listening = *cols.get(3)? == "0A";
            (listening && u16::from_str_radix(local_port, 16).ok()? == port)
                .then(|| cols.get(9).map(|i| format!("socket:[{i}]")))
                .flatten()
        })
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .map(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
            .unwrap_or(false)
    })
}
