//! A real Alertmanager per test (Debian's `prometheus-alertmanager`, installed by
//! `scripts/dev-env up`), on a free loopback port with clustering off and its own storage,
//! notifying a [`WebhookSink`] that records what it is sent. Its route is the shipped one
//! (config/alertmanager/alertmanager.yml), read from the file rather than copied, so the tests
//! pin the timings the local world really runs with; only the receiver differs (the shipped
//! one notifies no one). Plus a minimal HTTP/1.1 client (loopback only, no new crates) to post
//! alerts and read the API.
//!
//! Everything here is blocking std I/O: the tests are plain `#[test]` functions, and the sink
//! runs on its own threads so that it answers while a test thread sleeps or polls.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use super::daemon::free_port;

/// How long Alertmanager may take to answer `/-/ready` (it is ready in well under a second
/// with clustering off; a loaded CI machine gets slack).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a graceful stop may take before the process is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Read and write timeout of every HTTP exchange here: a stuck peer fails the test instead of
/// hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The path the private Alertmanager posts its notifications to, on the sink.
pub const NOTIFY_PATH: &str = "/alertmanager";

/// The shipped local-world config, whose route the private instances reuse.
pub fn shipped_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/alertmanager/alertmanager.yml")
}

/// The path of an installed tool (`prometheus-alertmanager`, `amtool`), or a failure saying
/// how to install it.
pub fn tool(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!("`{name}` is not installed: run scripts/dev-env up (it installs Debian's prometheus-alertmanager)")
        })
}

// ---------------------------------------------------------------------------------------
// HTTP/1.1, just enough of it: one message head, and a body delimited by Content-Length,
// chunked transfer coding or (responses only) the end of the connection.

/// One HTTP message as read off the wire.
struct Message {
    /// The request or status line.
    start: String,
    /// Header names as sent, values trimmed.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Reads one message; `None` when the peer closed the connection before sending one (a
/// keep-alive connection ending). `body_to_eof`: a response without a length runs to the end
/// of the connection; a request without one has no body.
fn read_message(r: &mut impl BufRead, body_to_eof: bool) -> io::Result<Option<Message>> {
    let mut start = String::new();
    if r.read_line(&mut start)? == 0 {
        return Ok(None);
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed inside the message head",
            ));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.to_string(), value.trim().to_string()));
        }
    }
    let mut body = Vec::new();
    let chunked = header(&headers, "transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let size = size.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size, 16)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if size == 0 {
                // Trailers, if any, up to the empty line.
                let mut line = String::new();
                while r.read_line(&mut line)? > 0 && !line.trim().is_empty() {
                    line.clear();
                }
                break;
            }
            let at = body.len();
            body.resize(at + size, 0);
            r.read_exact(&mut body[at..])?;
            let mut crlf = [0; 2];
            r.read_exact(&mut crlf)?;
        }
    } else if let Some(len) = header(&headers, "content-length") {
        let len: usize = len
            .parse()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        body.resize(len, 0);
        r.read_exact(&mut body)?;
    } else if body_to_eof {
        r.read_to_end(&mut body)?;
    }
    Ok(Some(Message {
        start: start.trim_end().to_string(),
        headers,
        body,
    }))
}

/// One HTTP/1.1 request to `base` (`http://127.0.0.1:PORT`), `Connection: close`, with a JSON
/// body when given → (status code, body). Errors are the transport's: a refused connection is
/// `ErrorKind::ConnectionRefused`.
pub fn http(base: &str, method: &str, path: &str, body: Option<&str>) -> io::Result<(u16, String)> {
    let addr = base.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut reader = BufReader::new(stream);
    let response = read_message(&mut reader, true)?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed without a response",
        )
    })?;
    let code = response
        .start
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, String::from_utf8_lossy(&response.body).into_owned()))
}

// ---------------------------------------------------------------------------------------
// The webhook sink.

/// One request the sink received.
#[derive(Debug, Clone)]
pub struct Received {
    /// `POST`, usually.
    pub method: String,
    /// The request target, e.g. `/alertmanager`.
    pub path: String,
    /// Header names as the client spelled them, in order; see [`Received::header`].
    pub headers: Vec<(String, String)>,
    /// The body, as text (lossily, if it was not UTF-8).
    pub body: String,
    /// When the sink had read the whole request (before it answered).
    pub at: SystemTime,
}

impl Received {
    /// The first header called `name`, compared case-insensitively as HTTP says.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// The body as JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }

    /// The body as an Alertmanager webhook notification, if it is one.
    pub fn notification(&self) -> Option<Notification> {
        Notification::parse(&self.json()?)
    }
}

/// An Alertmanager webhook notification (`version: "4"`): one group's alerts, each with its
/// own status; the group is `firing` while any of them fires.
#[derive(Debug, Clone)]
pub struct Notification {
    /// `firing` or `resolved`.
    pub status: String,
    /// The group's alerts as sent.
    pub alerts: Vec<NotifiedAlert>,
    /// The whole body (groupKey, groupLabels, externalURL, …).
    pub body: Value,
}

/// One alert inside a [`Notification`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifiedAlert {
    /// `firing` or `resolved`.
    pub status: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

impl Notification {
    /// Reads a notification body; `None` if `body` lacks `status` or `alerts`.
    pub fn parse(body: &Value) -> Option<Notification> {
        let alerts = body["alerts"]
            .as_array()?
            .iter()
            .map(|a| NotifiedAlert {
                status: a["status"].as_str().unwrap_or_default().to_string(),
                labels: a["labels"]
                    .as_object()
                    .map(|l| {
                        l.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect();
        Some(Notification {
            status: body["status"].as_str()?.to_string(),
            alerts,
            body: body.clone(),
        })
    }

    /// Whether any of its alerts has label `name` = `value`.
    pub fn mentions(&self, name: &str, value: &str) -> bool {
        self.alerts
            .iter()
            .any(|a| a.labels.get(name).map(String::as_str) == Some(value))
    }

    /// `(status, value of label)` for each alert: a compact form to assert on and print.
    pub fn summary(&self, label: &str) -> Vec<(String, String)> {
        self.alerts
            .iter()
            .map(|a| {
                let v = a.labels.get(label).cloned().unwrap_or_default();
                (a.status.clone(), v)
            })
            .collect()
    }
}

/// A tiny HTTP/1.1 server on 127.0.0.1 that records every request and answers it with an
/// empty body and a chosen status (200 unless told otherwise). It knows nothing of
/// Alertmanager, so it also serves as the target of stackwarden's own webhook receiver.
/// Stops accepting on drop.
pub struct WebhookSink {
    /// `http://127.0.0.1:PORT`; any path is accepted and recorded.
    pub url: String,
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    status: Arc<AtomicU16>,
    stop: Arc<AtomicBool>,
}

impl WebhookSink {
    /// Binds a free loopback port and serves it on a background thread, one thread per
    /// connection (Alertmanager keeps connections alive between notifications).
    pub fn start() -> WebhookSink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port for the sink");
        let addr = listener.local_addr().unwrap();
        let sink = WebhookSink {
            url: format!("http://{addr}"),
            addr,
            received: Arc::default(),
            status: Arc::new(AtomicU16::new(200)),
            stop: Arc::default(),
        };
        let (received, status, stop) = (
            sink.received.clone(),
            sink.status.clone(),
            sink.stop.clone(),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (received, status) = (received.clone(), status.clone());
                std::thread::spawn(move || serve(stream, &received, &status));
            }
        });
        sink
    }

    /// Every request received so far, in order of arrival.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Every request received so far, read as Alertmanager notifications; fails the test on
    /// a body that is not one.
    pub fn notifications(&self) -> Vec<Notification> {
        self.received()
            .iter()
            .map(|r| {
                r.notification()
                    .unwrap_or_else(|| panic!("not an Alertmanager notification: {}", r.body))
            })
            .collect()
    }

    /// Answers every later request with `status` (a receiver that fails, say).
    pub fn respond_with(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }
}

impl Drop for WebhookSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Serves one connection: request after request until the client closes it or asks to.
fn serve(stream: TcpStream, received: &Mutex<Vec<Received>>, status: &AtomicU16) {
    // An idle keep-alive connection ends the thread after a while instead of never.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    while let Ok(Some(request)) = read_message(&mut reader, false) {
        let mut words = request.start.split_whitespace();
        let method = words.next().unwrap_or_default().to_string();
        let path = words.next().unwrap_or_default().to_string();
        let close =
            header(&request.headers, "connection").is_some_and(|c| c.eq_ignore_ascii_case("close"));
        // Recorded before answering: once the client has its answer, a test sees the request.
        received.lock().unwrap().push(Received {
            method,
            path,
            body: String::from_utf8_lossy(&request.body).into_owned(),
            headers: request.headers,
            at: SystemTime::now(),
        });
        let code = status.load(Ordering::SeqCst);
        let connection = if close { "Connection: close\r\n" } else { "" };
        let answer = format!("HTTP/1.1 {code} Sink\r\nContent-Length: 0\r\n{connection}\r\n");
        if writer.write_all(answer.as_bytes()).is_err() || close {
            break;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Alerts as the v2 API takes them.

/// RFC 3339 in UTC with milliseconds, as the v2 API's `startsAt`/`endsAt` take it.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// One `postableAlert` of `POST /api/v2/alerts`: labels (their set is the alert's
/// identity), no annotations, and its time range. An `endsAt` in the future means firing
/// until then; one at or before now means resolved.
pub fn alert(labels: &[(&str, &str)], starts_at: SystemTime, ends_at: SystemTime) -> Value {
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), Value::from(*v)))
        .collect();
    json!({
        "labels": labels,
        "annotations": {},
        "startsAt": rfc3339(starts_at),
        "endsAt": rfc3339(ends_at),
    })
}

// ---------------------------------------------------------------------------------------
// The Alertmanager process.

/// A running private Alertmanager and the sink it notifies; killed on drop (its storage goes
/// with the temp dir).
pub struct Alertmanager {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Where its webhook receiver posts (at [`NOTIFY_PATH`]).
    pub sink: WebhookSink,
    /// Its stderr (debug level: each received alert, flush and notification), across restarts.
    pub log: PathBuf,
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// With `--web.config.file` (TLS, basic auth): how curl reaches `/-/ready`.
    secured: Option<Secured>,
}

/// An Alertmanager serving HTTPS and basic auth through `--web.config.file`.
struct Secured {
    /// The web config's path.
    web_config: PathBuf,
    /// curl's options to reach it: `--cacert`, `-u user:password`.
    curl: Vec<String>,
}

impl Alertmanager {
    /// Starts a sink and an Alertmanager notifying it, and waits until `/-/ready` answers.
    pub fn start() -> Alertmanager {
        let sink = WebhookSink::start();
        let dir = tempfile::tempdir().unwrap();
        let config = generated_config(&format!("{}{NOTIFY_PATH}", sink.url));
        std::fs::write(dir.path().join("alertmanager.yml"), config).unwrap();
        std::fs::create_dir_all(dir.path().join("storage")).unwrap();
        let port = free_port();
        let mut am = Alertmanager {
            url: format!("http://127.0.0.1:{port}"),
            sink,
            log: dir.path().join("alertmanager.log"),
            port,
            child: None,
            dir,
            secured: None,
        };
        am.spawn();
        am
    }

    /// Like [`Alertmanager::start`], serving HTTPS with `cert`/`key` and requiring basic auth
    /// as `user` with `password` (bcrypt-hashed by `htpasswd`, as Alertmanager's web config
    /// takes it); `ca` is what curl trusts to check that it is ready.
    pub fn start_https(
        cert: &Path,
        key: &Path,
        ca: &Path,
        user: &str,
        password: &str,
    ) -> Alertmanager {
        let sink = WebhookSink::start();
        let dir = tempfile::tempdir().unwrap();
        let config = generated_config(&format!("{}{NOTIFY_PATH}", sink.url));
        std::fs::write(dir.path().join("alertmanager.yml"), config).unwrap();
        std::fs::create_dir_all(dir.path().join("storage")).unwrap();
        let hash = Command::new(tool("htpasswd"))
            .args(["-nbBC", "10", user, password])
            .output()
            .expect("htpasswd runs (apache2-utils, installed by scripts/dev-env up)");
        assert!(hash.status.success(), "htpasswd failed");
        let line = String::from_utf8(hash.stdout).unwrap();
        let hash = line
            .trim()
            .split_once(':')
            .expect("user:hash")
            .1
            .to_string();
        let web_config = dir.path().join("web.yml");
        std::fs::write(
            &web_config,
            json!({
                "tls_server_config": { "cert_file": cert, "key_file": key },
                "basic_auth_users": { user: hash },
            })
            .to_string(),
        )
        .unwrap();
        let port = free_port();
        let mut am = Alertmanager {
            url: format!("https://127.0.0.1:{port}"),
            sink,
            log: dir.path().join("alertmanager.log"),
            port,
            child: None,
            dir,
            secured: Some(Secured {
                web_config,
                curl: vec![
                    "--cacert".into(),
                    ca.display().to_string(),
                    "-u".into(),
                    format!("{user}:{password}"),
                ],
            }),
        };
        am.spawn();
        am
    }

    /// Whether it answers `/-/ready` with 200.
    fn ready(&self) -> bool {
        match &self.secured {
            None => matches!(self.get("/-/ready"), Ok((200, _))),
            Some(s) => Command::new("curl")
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "5",
                ])
                .args(&s.curl)
                .arg(format!("{}/-/ready", self.url))
                .output()
                .is_ok_and(|o| o.stdout == b"200"),
        }
    }

    fn spawn(&mut self) {
        let dir = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(tool("prometheus-alertmanager"));
        if let Some(s) = &self.secured {
            cmd.arg(format!("--web.config.file={}", s.web_config.display()));
        }
        let child = cmd
            .arg(format!(
                "--config.file={}",
                dir.join("alertmanager.yml").display()
            ))
            .arg(format!("--storage.path={}", dir.join("storage").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .arg(format!("--web.external-url={}/", self.url))
            // Empty: clustering off. No gossip port, and ready at once instead of after the
            // cluster settles.
            .arg("--cluster.listen-address=")
            .arg("--log.level=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus-alertmanager starts");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.ready() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "alertmanager exited during startup ({status})\n{}",
                    self.log_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "alertmanager did not answer /-/ready within {START_TIMEOUT:?}\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it as a service manager would (SIGTERM, then wait), keeping its storage: on a
    /// graceful stop Alertmanager writes its notification log and silences to disk. Its
    /// alerts live only in memory and are gone.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "alertmanager still ran {STOP_TIMEOUT:?} after SIGTERM\n{}",
            self.log_tail()
        );
    }

    /// Starts it again on the same port, config and storage (stopping it first if it runs),
    /// and waits until it is ready.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// `GET path` → (status code, body).
    pub fn get(&self, path: &str) -> io::Result<(u16, String)> {
        http(&self.url, "GET", path, None)
    }

    /// `POST /api/v2/alerts` with these alerts (see [`alert`]) → (status code, body).
    pub fn post(&self, alerts: &[Value]) -> io::Result<(u16, String)> {
        http(
            &self.url,
            "POST",
            "/api/v2/alerts",
            Some(&Value::from(alerts.to_vec()).to_string()),
        )
    }

    /// Like [`Alertmanager::post`], failing the test unless it is accepted (200).
    pub fn post_ok(&self, alerts: &[Value]) {
        let (code, body) = self.post(alerts).expect("alertmanager answers");
        assert_eq!(code, 200, "POST /api/v2/alerts refused: {body}");
    }

    /// `GET /api/v2/alerts`, parsed: the alerts it holds that have not ended (resolved ones
    /// are not listed).
    pub fn alerts(&self) -> Vec<Value> {
        let (code, body) = self.get("/api/v2/alerts").expect("alertmanager answers");
        assert_eq!(code, 200, "GET /api/v2/alerts: {body}");
        serde_json::from_str(&body).expect("/api/v2/alerts is a JSON array")
    }

    /// One sample of its `/metrics`, by series exactly as exposed (`name` or
    /// `name{label="value"}`); 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.get("/metrics").expect("alertmanager answers");
        text.lines()
            .filter_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .find_map(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Polls `cond` every 50 ms until it holds; fails the test naming `what` after `limit`,
    /// with what the sink received and the end of Alertmanager's log.
    pub fn wait_until(&self, what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if cond() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let received: Vec<String> = self.sink.received().into_iter().map(|r| r.body).collect();
        panic!(
            "timed out waiting until {what}\n--- sink received ---\n{}\n--- alertmanager log tail ---\n{}",
            received.join("\n"),
            self.log_tail()
        );
    }

    /// The last 40 lines of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The shipped config with its receivers replaced by one webhook to `url` (send_resolved, so
/// repairs are notified too) and every route pointed at it; the route's grouping and timings
/// are kept as shipped. Written as JSON, which is YAML too.
fn generated_config(url: &str) -> String {
    let text = std::fs::read_to_string(shipped_config()).unwrap();
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).expect("the shipped config is YAML");
    let mut config = yaml_to_json(&docs[0]);
    point_routes_at(&mut config["route"], "sink");
    config["receivers"] = json!([{
        "name": "sink",
        "webhook_configs": [{ "url": url, "send_resolved": true }],
    }]);
    config.to_string()
}

fn point_routes_at(route: &mut Value, receiver: &str) {
    if route.get("receiver").is_some() {
        route["receiver"] = Value::from(receiver);
    }
    if let Some(children) = route.get_mut("routes").and_then(Value::as_array_mut) {
        for child in children {
            point_routes_at(child, receiver);
        }
    }
}

fn yaml_to_json(y: &yaml_rust2::Yaml) -> Value {
    use yaml_rust2::Yaml;
    match y {
        Yaml::String(s) => Value::from(s.as_str()),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::Real(r) => r
            .parse::<f64>()
            .map(Value::from)
            .unwrap_or(Value::from(r.as_str())),
        Yaml::Boolean(b) => Value::from(*b),
        Yaml::Array(items) => items.iter().map(yaml_to_json).collect(),
        Yaml::Hash(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) => s.clone(),
                        other => format!("{other:?}"),
                    };
                    (key, yaml_to_json(v))
                })
                .collect(),
        ),
        Yaml::Null | Yaml::Alias(_) | Yaml::BadValue => Value::Null,
    }
}
