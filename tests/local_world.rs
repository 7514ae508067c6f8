//! The local world scripts are idempotent: `scripts/dev-env up` and `scripts/seed-world`
//! change nothing when run again.
//!
//! These tests bring up the real local world (architecture.md, "The local world"): moto on
//! 127.0.0.1:$STACKWARDEN_MOTO_PORT (default 5000) and a Docker engine on
//! /var/run/docker.sock, installing them if missing. They leave it running.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const IO_TIMEOUT: Duration = Duration::from_secs(5);

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

fn moto_port() -> u16 {
    std::env::var("STACKWARDEN_MOTO_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(5000)
}

fn run(command: &mut Command) -> Output {
    let output = command.output().expect("script runs");
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    output
}

fn dev_env_up() -> Output {
    run(Command::new(script("dev-env")).arg("up"))
}

/// Sends one HTTP/1.0 request over `stream` and returns the whole response.
fn http_get<S: Read + Write>(mut stream: S, path: &str) -> Option<String> {
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

fn moto_answers(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(stream) = TcpStream::connect_timeout(&addr, IO_TIMEOUT) else {
        return false;
    };
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .expect("set timeout");
    // moto answers this GET with 201 Created.
    http_get(stream, "/moto-api/config").is_some_and(|r| {
        r.split_whitespace()
            .nth(1)
            .is_some_and(|status| status.starts_with('2'))
    })
}

fn docker_answers() -> bool {
    let Ok(stream) = UnixStream::connect("/var/run/docker.sock") else {
        return false;
    };
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .expect("set timeout");
    http_get(stream, "/_ping").is_some_and(|r| r.ends_with("\r\n\r\nOK"))
}

#[test]
fn dev_env_second_run_changes_nothing() {
    dev_env_up();
    let second = dev_env_up();

    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("dev-env: 0 changes"),
        "second run changed things:\n{stderr}"
    );
    let stdout = String::from_utf8_lossy(&second.stdout);
    let endpoint = format!("export AWS_ENDPOINT_URL=http://127.0.0.1:{}", moto_port());
    assert!(
        stdout.lines().any(|l| l == endpoint),
        "no {endpoint} in:\n{stdout}"
    );
    assert!(
        moto_answers(moto_port()),
        "moto does not answer on port {}",
        moto_port()
    );
    assert!(
        docker_answers(),
        "docker engine does not answer on /var/run/docker.sock"
    );
}

/// A moto server of the test's own, so seeding starts from nothing; killed on drop.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    fn start() -> Moto {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto");
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !moto_answers(port) {
            assert!(
                Instant::now() < deadline,
                "moto did not answer on port {port}"
            );
            sleep(Duration::from_millis(100));
        }
        moto
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn seed_world(moto: &Moto) -> String {
    let output = run(Command::new(script("seed-world")).args([
        "--endpoint-url",
        &format!("http://127.0.0.1:{}", moto.port),
        "--project",
        "durable-code",
        "--env",
        "local",
        "--region",
        "us-east-1",
        "--https-listener",
    ]));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn seed_world_is_idempotent() {
    // Installs moto (and boto3) if this machine lacks them.
    dev_env_up();
    let moto = Moto::start();

    let first = seed_world(&moto);
    assert!(
        first.contains("created vpc durable-code-local-vpc"),
        "first run:\n{first}"
    );
    assert!(
        first.contains("created listener HTTPS:443"),
        "first run:\n{first}"
    );
    let second = seed_world(&moto);
    assert_eq!(
        second.trim_end(),
        "seed-world: 0 created",
        "second run created things"
    );
}
