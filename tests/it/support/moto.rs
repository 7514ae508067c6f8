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
        Moto::start_on(free_port(), extra).await
    }

    /// Like [`Moto::start`], on a given port (a server restarted where a client expects it).
    pub async fn start_on(port: u16, extra: &[&str]) -> Moto {
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
        let moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer on port {port}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        moto.seed(extra).await;
        moto
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
