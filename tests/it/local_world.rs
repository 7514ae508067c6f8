//! The local world scripts are idempotent: `scripts/dev-env up` and `scripts/seed-world`
//! change nothing when run again.
//!
//! These tests bring up the real local world (docs/local-world.md): moto on
//! 127.0.0.1:$STACKWARDEN_MOTO_PORT (default 5000) and a Docker engine on
//! /var/run/docker.sock, installing them if missing. They leave it running.

use crate::support::moto::Moto;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

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

#[tokio::test]
async fn seed_world_is_idempotent() {
    // A moto server of the test's own, seeded once (with the HTTPS listener) as it starts.
    let moto = Moto::start(&["--https-listener"]).await;
    let stdout = moto.seed(&["--https-listener"]).await;
    assert_eq!(
        stdout.trim_end(),
        "seed-world: 0 created",
        "the second run created things"
    );
}
