//! A real `stackwarden run` process for the daemon tests: a private copy of the repository's
//! manifests and content (so a test can edit them), a temp host root, the binary spawned with
//! its log captured to a file, and a minimal HTTP/1.1 client for its endpoints (loopback only).

use crate::support::cli::Cli;
use crate::support::files::copy_dir;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Grafana admin password every daemon test runs with (it must never appear anywhere).
pub const SECRET: &str = "daemon-test-S3cret-value";
/// The reconcile token the tests configure.
pub const TOKEN: &str = "daemon-test-token-0123456789";

/// A running daemon; killed on drop.
pub struct Daemon {
    child: Option<Child>,
    /// `127.0.0.1:PORT` of its status server.
    pub addr: String,
    /// The private repository copy (`<dir>/manifests`, `<dir>/config`, …).
    pub dir: PathBuf,
    /// Where its stderr goes.
    pub log: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

/// How to start one.
pub struct DaemonOptions<'a> {
    /// moto's endpoint; `None` points AWS at a closed port.
    pub aws_endpoint: Option<&'a str>,
    /// `all`, `aws` or `host`.
    pub scope: &'a str,
    /// Resync interval written into the local environment's values.
    pub resync: &'a str,
    /// Lease TTL.
    pub lease_ttl: &'a str,
    /// STACKWARDEN_LOG.
    pub log_level: &'a str,
    /// DOCKER_HOST override.
    pub docker_host: Option<String>,
    /// The Alertmanager the Stack's receiver points at; `None`: a closed port, so a test
    /// never alerts the local world's Alertmanager.
    pub alertmanager: Option<&'a str>,
    /// Follow a published source instead of `-f`: the daemon then starts in an empty
    /// directory, with only the source's URL and the public key.
    pub source: Option<Source<'a>>,
    /// `-f` other than `<dir>/manifests`.
    pub manifests: Option<&'a Path>,
    /// Further arguments of `run` (`--aws-mode warn`).
    pub extra: &'a [&'a str],
}

/// `run --source s3://… --trust KEY --state-dir DIR`.
pub struct Source<'a> {
    /// `s3://BUCKET[/PREFIX]`.
    pub url: &'a str,
    /// The public key.
    pub trust: &'a Path,
    /// Where revisions are unpacked.
    pub state_dir: &'a Path,
}

impl Default for DaemonOptions<'_> {
    fn default() -> Self {
        DaemonOptions {
            aws_endpoint: None,
            scope: "all",
            resync: "2s",
            lease_ttl: "3s",
            log_level: "info",
            docker_host: None,
            alertmanager: None,
            source: None,
            manifests: None,
            extra: &[],
        }
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh copy of the repository's manifests and content, the local resync set to `resync`.
pub fn repo_copy(resync: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in ["manifests", "config", "dashboards", "alerting"] {
        if repo.join(dir).is_dir() {
            copy_dir(&repo.join(dir), &tmp.path().join(dir));
        }
    }
    let local = tmp.path().join("manifests/environments/local.yaml");
    let text = std::fs::read_to_string(&local).unwrap();
    let text = text.replace(
        "reconcileInterval: 30s",
        &format!("reconcileInterval: {resync}"),
    );
    std::fs::write(&local, text).unwrap();
    tmp
}

/// Sets one value of the local environment in a repository copy (`key: value` on its own line).
pub fn set_value(dir: &Path, key: &str, value: &str) {
    let local = dir.join("manifests/environments/local.yaml");
    let text = std::fs::read_to_string(&local).unwrap();
    let mut found = false;
    let mut lines: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with(&format!("{key}:")) {
                found = true;
                format!("{key}: {value}")
            } else {
                l.to_string()
            }
        })
        .collect();
    if !found {
        lines.push(format!("{key}: {value}"));
    }
    std::fs::write(&local, lines.join("\n") + "\n").unwrap();
}

impl Daemon {
    /// Starts a daemon over a fresh repository copy.
    pub fn start(opts: DaemonOptions<'_>) -> Daemon {
        let tmp = repo_copy(opts.resync);
        let closed = format!("http://127.0.0.1:{}", free_port());
        set_value(
            tmp.path(),
            "alertmanagerUrl",
            opts.alertmanager.unwrap_or(&closed),
        );
        let dir = tmp.path().to_path_buf();
        let mut d = Daemon::start_in(&dir, opts);
        d._tmp = Some(tmp);
        d
    }

    /// Starts a daemon over an existing repository copy (a second daemon on the same stack).
    pub fn start_in(dir: &Path, opts: DaemonOptions<'_>) -> Daemon {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let host_root = dir.join("host-root");
        std::fs::create_dir_all(&host_root).unwrap();
        let log = dir.join(format!("daemon-{port}.log"));
        let token_file = dir.join("token");
        std::fs::write(&token_file, TOKEN).unwrap();
        let endpoint = opts
            .aws_endpoint
            .map(str::to_string)
            .unwrap_or_else(|| format!("http://127.0.0.1:{}", free_port()));
        let docker_host = opts
            .docker_host
            .as_deref()
            .unwrap_or("unix:///var/run/docker.sock");
        let cli = Cli::new(&["run", "--env", "local"]);
        let cli = match &opts.source {
            None => {
                let manifests = opts
                    .manifests
                    .map_or_else(|| dir.join("manifests"), Path::to_path_buf);
                cli.arg("-f").arg(manifests)
            }
            Some(source) => {
                let empty = dir.join(format!("cwd-{port}"));
                std::fs::create_dir_all(&empty).unwrap();
                cli.args(["--source", source.url, "--trust"])
                    .arg(source.trust)
                    .arg("--state-dir")
                    .arg(source.state_dir)
                    .args(["--source-interval", "1s"])
                    .dir(empty)
            }
        };
        let child = cli
            .args(["--listen", &addr, "--scope", opts.scope])
            .args(opts.extra)
            .args(["--lease-ttl", opts.lease_ttl, "--token-file"])
            .arg(&token_file)
            .arg("--host-root")
            .arg(&host_root)
            .aws(&endpoint)
            .env("STACKWARDEN_GRAFANA_ADMIN_PASSWORD", SECRET)
            .env("STACKWARDEN_LOG", opts.log_level)
            .env("DOCKER_HOST", docker_host)
            .env_remove("RUST_LOG")
            .command()
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("the stackwarden binary starts");
        let d = Daemon {
            child: Some(child),
            addr,
            dir: dir.to_path_buf(),
            log,
            _tmp: None,
        };
        d.wait_until("the status server answers", Duration::from_secs(20), || {
            d.get("/healthz").map(|(c, _)| c == 200).unwrap_or(false)
        });
        d
    }

    /// `GET path` → (status code, body).
    pub fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        self.request("GET", path, None)
    }

    /// `POST path`, with a bearer token when given.
    pub fn post(&self, path: &str, token: Option<&str>) -> std::io::Result<(u16, String)> {
        self.request("POST", path, token)
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
    ) -> std::io::Result<(u16, String)> {
        let mut s = TcpStream::connect(&self.addr)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n",
            self.addr
        )?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let code = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((code, body))
    }

    /// The parsed `/status`.
    pub fn status(&self) -> serde_json::Value {
        let (code, body) = self.get("/status").expect("/status answers");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("/status is JSON")
    }

    /// Polls `cond` every 100 ms until it holds; fails the test naming `what` after `limit`.
    pub fn wait_until(&self, what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if cond() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "timed out waiting until {what}\n--- status ---\n{}\n--- log tail ---\n{}",
            self.get("/status").map(|(_, b)| b).unwrap_or_default(),
            self.log_tail()
        );
    }

    /// The last 60 lines of the log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// The whole log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, no clean-up (what a crash looks like).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait; the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        None
    }

    /// Runs a finished pass count probe: the number of passes in `/status`'s history.
    pub fn passes(&self) -> usize {
        self.status()["passes"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}
