//! Delivery of alert transitions to the Stack's receivers: Alertmanager's v2 API and
//! generic JSON webhooks signed with HMAC-SHA256. Reconciliation only ever drops a
//! transition into a receiver's bounded outbox ([`Outbox::push`] takes a lock for
//! microseconds and never waits on the network); one task per receiver sends, retries with
//! backoff while the receiver is down, and then sends each alert in its latest state.
//!
//! An alert's firing is always delivered before its resolution, and the resolution waits
//! [`HOLD`] after it: Alertmanager notifies a resolution only for an alert it notified as
//! firing, and it only notifies once its group waited. A drift repaired in a second would
//! otherwise reach nobody.

use super::transport::Client;
pub use super::transport::{DeliveryError, FailureKind};
use super::{Alert, AlertName, Event};
use crate::model::{Receiver, ReceiverAuth, ReceiverType, SecretSource};
use http::{HeaderMap, HeaderValue};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// How long a receiver fails every delivery before the other receivers are told.
pub const RECEIVER_FAILING_AFTER: Duration = Duration::from_secs(600);
/// Alerts a receiver's outbox holds at most; a new alert beyond it is dropped and counted.
pub const OUTBOX_LIMIT: usize = 1000;
/// How long a resolution waits after its firing was delivered (Alertmanager's group wait in
/// the shipped configuration is 1 s).
pub const HOLD: Duration = Duration::from_millis(1500);
/// How often a standing alert is sent again to Alertmanager, which resolves an alert by
/// itself once its `endsAt` passes.
pub const REFRESH: Duration = Duration::from_secs(60);
/// The `endsAt` of a firing alert: how long Alertmanager keeps it without a refresh (several
/// refreshes, so a slow pass or a short outage never flaps it).
pub const VALIDITY: Duration = Duration::from_secs(300);
/// First retry delay after a failed delivery; doubled up to [`RETRY_MAX`].
const RETRY_BASE: Duration = Duration::from_millis(500);
/// Longest retry delay.
const RETRY_MAX: Duration = Duration::from_secs(30);
/// The header carrying a webhook body's signature: `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "X-Stackwarden-Signature";

/// One alert's state in an outbox.
#[derive(Debug, Clone)]
struct Entry {
    alert: Alert,
    /// When it ended, once it did.
    ended: Option<SystemTime>,
    /// When its firing was delivered.
    fired: Option<Instant>,
    /// When it was last delivered in any state.
    sent: Option<Instant>,
}

/// A receiver's pending alerts, latest state per fingerprint.
#[derive(Debug, Default)]
pub struct Outbox {
    entries: Mutex<BTreeMap<String, Entry>>,
    wake: Notify,
    dropped: AtomicU64,
    sent_ok: AtomicU64,
    sent_failed: AtomicU64,
    health: Mutex<Health>,
}

/// How a receiver's deliveries have been going.
#[derive(Debug, Default, Clone)]
struct Health {
    /// When a delivery last succeeded.
    last_success: Option<SystemTime>,
    /// The last failure and its kind, while the receiver is failing.
    last_error: Option<(FailureKind, String)>,
    /// When the current run of failures began.
    failing_since: Option<(Instant, SystemTime)>,
}

impl Outbox {
    /// Records a transition; never blocks on delivery.
    pub fn push(&self, event: &Event) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::Firing(alert) => {
                if let Some(e) = entries.get_mut(&alert.fingerprint) {
                    e.alert = alert.clone();
                    e.ended = None;
                } else if entries.len() >= OUTBOX_LIMIT {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(alert = %alert.fingerprint, "alert outbox full: alert dropped");
                } else {
                    entries.insert(
                        alert.fingerprint.clone(),
                        Entry {
                            alert: alert.clone(),
                            ended: None,
                            fired: None,
                            sent: None,
                        },
                    );
                }
            }
            Event::Resolved(alert, at) => {
                if let Some(e) = entries.get_mut(&alert.fingerprint) {
                    e.alert = alert.clone();
                    e.ended = Some(*at);
                }
            }
        }
        drop(entries);
        self.wake.notify_one();
    }

    fn health(&self) -> Health {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn succeeded(&self) {
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        h.last_success = Some(SystemTime::now());
        h.last_error = None;
        h.failing_since = None;
    }

    fn failed(&self, e: &DeliveryError) {
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        h.last_error = Some((e.kind(), e.to_string()));
        h.failing_since
            .get_or_insert((Instant::now(), SystemTime::now()));
    }

    /// How long it has been failing, if it is.
    fn failing_for(&self, now: Instant) -> Option<(Duration, FailureKind)> {
        let h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        let (since, _) = h.failing_since?;
        let kind = h.last_error.as_ref().map_or(FailureKind::Http, |(k, _)| *k);
        Some((now.saturating_duration_since(since), kind))
    }

    /// Alerts not yet delivered in their latest state.
    pub fn pending(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|e| e.fired.is_none() || e.ended.is_some())
            .count()
    }

    /// What is due now, and when the next thing falls due.
    fn due(&self, kind: ReceiverType, now: Instant) -> (Vec<(String, Phase)>, Option<Instant>) {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        let mut later = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        for (fp, e) in entries.iter() {
            match (e.fired, e.ended) {
                (None, _) => due.push((fp.clone(), Phase::Firing)),
                (Some(fired), Some(_)) => {
                    let at = fired + HOLD;
                    if now >= at {
                        due.push((fp.clone(), Phase::Resolved));
                    } else {
                        later(at);
                    }
                }
                (Some(_), None) if kind == ReceiverType::Alertmanager => {
                    let at = e.sent.map_or(now, |s| s + REFRESH);
                    if now >= at {
                        due.push((fp.clone(), Phase::Firing));
                    } else {
                        later(at);
                    }
                }
                (Some(_), None) => {}
            }
        }
        (due, next)
    }

    /// Marks what was delivered; a resolved alert is done and leaves the outbox.
    fn delivered(&self, sent: &[(String, Phase)], now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        for (fp, phase) in sent {
            match phase {
                Phase::Firing => {
                    if let Some(e) = entries.get_mut(fp) {
                        e.fired.get_or_insert(now);
                        e.sent = Some(now);
                    }
                }
                Phase::Resolved => {
                    entries.remove(fp);
                }
            }
        }
    }

    fn snapshot(&self, fps: &[(String, Phase)]) -> Vec<(Entry, Phase)> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        fps.iter()
            .filter_map(|(fp, p)| Some((entries.get(fp)?.clone(), *p)))
            .collect()
    }
}

/// Which state of an alert a delivery carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Firing,
    Resolved,
}

/// Where deliveries are counted (the daemon's metrics): the alerts know only this, so that
/// the status, which shows alerts, is the one that depends on them.
pub trait Counts: Send + Sync {
    /// `n` alerts sent to `receiver` with `result` (`ok`, `failed`, `dropped`).
    fn count_alerts_sent(&self, receiver: &str, result: &str, n: u64);
    /// One failed delivery to `receiver`, by kind (`tls`, `dns`, `timeout`, `status`, …).
    fn count_delivery_failure(&self, receiver: &str, kind: &str);
}

/// What `/status` and the metrics show of one receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiverStatus {
    /// The receiver's name.
    pub name: String,
    /// `alertmanager` or `webhook`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Alerts waiting to be delivered in their latest state.
    pub pending: usize,
    /// Deliveries that succeeded.
    pub sent: u64,
    /// Deliveries that failed (each is retried).
    pub failed: u64,
    /// Alerts dropped because the outbox was full.
    pub dropped: u64,
    /// The last failure, while the receiver is failing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// What kind of failure it was: `tls`, `dns`, `connect`, `proxy`, `timeout`, `status`,
    /// `http` or `config`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error_kind: Option<FailureKind>,
    /// Since when it has been failing (RFC 3339).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "optional_rfc3339"
    )]
    pub failing_since: Option<SystemTime>,
    /// When a delivery last succeeded (RFC 3339).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "optional_rfc3339"
    )]
    pub last_success: Option<SystemTime>,
}

/// One configured receiver and its sending task.
struct Running {
    receiver: Receiver,
    outbox: Arc<Outbox>,
    task: JoinHandle<()>,
}

/// Every receiver of the Stack, reconfigured live when the manifest changes.
#[derive(Default)]
pub struct Dispatcher {
    running: Vec<Running>,
    /// Raises [`AlertName::AlertReceiverFailing`] on the other receivers.
    watchdog: Option<JoinHandle<()>>,
    /// How long a receiver fails before the others are told.
    failing_after: Option<Duration>,
    /// `stack` and `environment` as the alerts pushed so far carry them.
    identity: Arc<Mutex<BTreeMap<String, String>>>,
    /// The receiver-failing alerts standing, by failing receiver (kept across
    /// reconfigurations, so that the edit that fixes a receiver resolves its alert).
    raised: Arc<Mutex<BTreeMap<String, Alert>>>,
    metrics: Option<Arc<dyn Counts>>,
    /// Where the proxy variables are read from; `None`: the process's environment.
    environment: Option<Environment>,
}

/// Reads an environment variable by name.
pub type Environment = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("receivers", &self.running.len())
            .finish()
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        if let Some(w) = &self.watchdog {
            w.abort();
        }
        for r in &self.running {
            r.task.abort();
        }
    }
}

impl Dispatcher {
    /// A dispatcher that counts its deliveries in `metrics`.
    pub fn new(metrics: Arc<dyn Counts>) -> Dispatcher {
        let mut d = Dispatcher::default();
        d.metrics = Some(metrics);
        d
    }

    /// Tells the other receivers once a receiver has failed for `after` instead of
    /// [`RECEIVER_FAILING_AFTER`].
    pub fn with_failing_after(mut self, after: Duration) -> Dispatcher {
        self.failing_after = Some(after);
        self
    }

    /// Reads `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY` through `lookup`
    /// instead of the process's environment (which a test cannot change safely while other
    /// threads run).
    pub fn with_environment(mut self, lookup: Environment) -> Dispatcher {
        self.environment = Some(lookup);
        self
    }

    /// Starts, keeps or stops receivers to match `receivers`. A receiver kept by name keeps
    /// its outbox (nothing pending is lost by an unrelated edit). A webhook whose signing key
    /// cannot be read is not started; the error says why, never the key.
    pub fn configure(&mut self, receivers: &[Receiver]) -> Vec<String> {
        let mut errors = Vec::new();
        let mut old: BTreeMap<String, Running> = self
            .running
            .drain(..)
            .map(|r| (r.receiver.name.clone(), r))
            .collect();
        for receiver in receivers {
            // A receiver edited in place (a CA bundle added to one failing on TLS, say) keeps
            // its outbox: what it could not deliver is delivered by the new configuration.
            let mut kept = None;
            if let Some(r) = old.remove(&receiver.name) {
                if r.receiver == *receiver && !r.task.is_finished() {
                    self.running.push(r);
                    continue;
                }
                r.task.abort();
                kept = Some(r.outbox.clone());
            }
            let key = match &receiver.signing_key {
                Some(source) => match read_key(source) {
                    Ok(k) => Some(k),
                    Err(e) => {
                        errors.push(format!("receiver {}: {e}", receiver.name));
                        continue;
                    }
                },
                None => None,
            };
            let ca = receiver.tls.as_ref().and_then(|t| t.ca_file.as_deref());
            let proxy = match &self.environment {
                Some(lookup) => super::transport::proxy_from(|n| lookup(n)),
                None => super::transport::proxy_from(|n| std::env::var(n).ok()),
            };
            let setup = Client::new(ca, proxy)
                .map_err(|e| e.to_string())
                .and_then(|c| Ok((c, request_headers(receiver)?)));
            let (client, headers) = match setup {
                Ok(x) => x,
                Err(e) => {
                    errors.push(format!("receiver {}: {e}", receiver.name));
                    continue;
                }
            };
            let outbox = kept.unwrap_or_default();
            let task = tokio::spawn(send_loop(
                receiver.clone(),
                client,
                headers,
                key,
                outbox.clone(),
                self.metrics.clone(),
            ));
            self.running.push(Running {
                receiver: receiver.clone(),
                outbox,
                task,
            });
        }
        for (_, r) in old {
            r.task.abort();
        }
        if let Some(w) = self.watchdog.take() {
            w.abort();
        }
        if self.running.len() > 1 {
            let outboxes = self
                .running
                .iter()
                .map(|r| (r.receiver.name.clone(), r.outbox.clone()))
                .collect();
            self.watchdog = Some(tokio::spawn(watchdog(
                outboxes,
                self.failing_after.unwrap_or(RECEIVER_FAILING_AFTER),
                self.identity.clone(),
                self.raised.clone(),
            )));
        }
        errors
    }

    /// Hands transitions to every receiver.
    pub fn push(&self, events: &[Event]) {
        if let Some(Event::Firing(a) | Event::Resolved(a, _)) = events.first() {
            let mut id = self.identity.lock().unwrap_or_else(|e| e.into_inner());
            for k in ["stack", "environment"] {
                if let Some(v) = a.labels.get(k) {
                    id.insert(k.to_string(), v.clone());
                }
            }
        }
        for r in &self.running {
            for e in events {
                r.outbox.push(e);
            }
        }
    }

    /// Waits until every outbox has delivered what it holds, or `within` has passed (a
    /// receiver that is down cannot hold up the process's exit). A resolution keeps its hold
    /// (Alertmanager drops a resolution that arrives within its group wait of the firing, and
    /// the firing would never be notified), so `within` must exceed [`HOLD`]. Returns how
    /// many alerts were still pending.
    pub async fn flush(&self, within: Duration) -> usize {
        for r in &self.running {
            r.outbox.wake.notify_one();
        }
        let deadline = Instant::now() + within;
        loop {
            let left: usize = self
                .running
                .iter()
                .filter(|r| !r.task.is_finished())
                .map(|r| r.outbox.pending())
                .sum();
            if left == 0 || Instant::now() >= deadline {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every receiver's delivery state.
    pub fn status(&self) -> Vec<ReceiverStatus> {
        self.running
            .iter()
            .map(|r| (r, r.outbox.health()))
            .map(|(r, health)| ReceiverStatus {
                name: r.receiver.name.clone(),
                kind: match r.receiver.kind {
                    ReceiverType::Alertmanager => "alertmanager",
                    ReceiverType::Webhook => "webhook",
                    ReceiverType::Slack => "slack",
                },
                pending: r.outbox.pending(),
                sent: r.outbox.sent_ok.load(Ordering::Relaxed),
                failed: r.outbox.sent_failed.load(Ordering::Relaxed),
                dropped: r.outbox.dropped.load(Ordering::Relaxed),
                last_error: health.last_error.as_ref().map(|(_, e)| e.clone()),
                last_error_kind: health.last_error.as_ref().map(|(k, _)| *k),
                failing_since: health.failing_since.map(|(_, t)| t),
                last_success: health.last_success,
            })
            .collect()
    }
}

/// The headers every request to `receiver` carries: its declared ones, then its credential
/// (read now from its file, marked sensitive so that no HTTP layer ever logs it). An error
/// names the file, never its content.
fn request_headers(receiver: &Receiver) -> Result<HeaderMap, String> {
    let mut out = HeaderMap::new();
    for (name, value) in &receiver.headers {
        let name = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("header `{name}` is not a valid header name"))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("header `{name}` has a value that is not a valid header value"))?;
        out.insert(name, value);
    }
    let from = |file: &Option<std::path::PathBuf>, parameter: &Option<String>, field: &str| match (
        file, parameter,
    ) {
        (Some(path), None) => read_secret(path, &format!("{field}File")),
        (None, Some(name)) => match receiver.parameters.get(name) {
            Some(source) => crate::manifest::secret::read(source)
                .map_err(|e| format!("{field}FromParameter ({name}): {e}")),
            None => Err(format!("{field}FromParameter: no Parameter `{name}`")),
        },
        _ => Err(format!(
            "give exactly one of {field}File and {field}FromParameter"
        )),
    };
    let credential = match &receiver.auth {
        Some(ReceiverAuth {
            basic: Some(b),
            bearer_token_file: None,
            bearer_token_from_parameter: None,
        }) => {
            use base64::Engine;
            let password = from(
                &b.password_file,
                &b.password_from_parameter,
                "auth.basic.password",
            )?;
            let pair = format!("{}:{password}", b.username);
            Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            ))
        }
        Some(ReceiverAuth {
            basic: None,
            bearer_token_file,
            bearer_token_from_parameter,
        }) => Some(format!(
            "Bearer {}",
            from(
                bearer_token_file,
                bearer_token_from_parameter,
                "auth.bearerToken"
            )?
        )),
        Some(_) => return Err("auth names neither or both of basic and bearerTokenFile".into()),
        None => None,
    };
    if let Some(c) = credential {
        let mut value = HeaderValue::from_str(&c)
            .map_err(|_| "the credential holds characters a header cannot carry".to_string())?;
        value.set_sensitive(true);
        out.insert(http::header::AUTHORIZATION, value);
    }
    Ok(out)
}

fn read_secret(path: &std::path::Path, field: &str) -> Result<String, String> {
    crate::manifest::secret::read_file(path).map_err(|e| format!("{field}: {e}"))
}

/// Watches every receiver: one failing every delivery for `after` raises
/// [`AlertName::AlertReceiverFailing`] on the others (a receiver cannot carry news of its
/// own failure), resolved there once it delivers again.
async fn watchdog(
    outboxes: Vec<(String, Arc<Outbox>)>,
    after: Duration,
    identity: Arc<Mutex<BTreeMap<String, String>>>,
    raised: Arc<Mutex<BTreeMap<String, Alert>>>,
) {
    let tick = (after / 10).clamp(Duration::from_millis(50), Duration::from_secs(30));
    loop {
        tokio::time::sleep(tick).await;
        let now = Instant::now();
        let mut raised = raised.lock().unwrap_or_else(|e| e.into_inner());
        for (name, outbox) in &outboxes {
            let event = match (outbox.failing_for(now), raised.get(name)) {
                (Some((d, kind)), None) if d >= after => {
                    let alert = receiver_failing(name, kind, after, outbox, &identity);
                    raised.insert(name.clone(), alert.clone());
                    Event::Firing(alert)
                }
                (None, Some(_)) => match raised.remove(name) {
                    Some(alert) => Event::Resolved(alert, SystemTime::now()),
                    None => continue,
                },
                _ => continue,
            };
            tracing::warn!(receiver = %name, firing = matches!(event, Event::Firing(_)), "alert receiver failing alert");
            for (other, o) in &outboxes {
                if other != name {
                    o.push(&event);
                }
            }
        }
    }
}

/// The alert telling the other receivers that `name` is failing.
fn receiver_failing(
    name: &str,
    kind: FailureKind,
    after: Duration,
    outbox: &Outbox,
    identity: &Mutex<BTreeMap<String, String>>,
) -> Alert {
    let mut labels = identity.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for (k, v) in [
        ("alertname", AlertName::AlertReceiverFailing.as_str()),
        ("severity", AlertName::AlertReceiverFailing.severity()),
        ("kind", "Receiver"),
        ("resource", name),
        ("cause", kind.as_str()),
    ] {
        labels.insert(k.to_string(), v.to_string());
    }
    let health = outbox.health();
    let annotations = [
        (
            "summary",
            format!(
                "alert receiver {name} has failed every delivery for {} min ({})",
                after.as_secs() / 60,
                kind.as_str()
            ),
        ),
        (
            "differs",
            health
                .last_error
                .map(|(_, e)| e)
                .unwrap_or_else(|| kind.as_str().to_string()),
        ),
        ("action", "retrying with backoff".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Alert {
        fingerprint: format!("receiver/{name}"),
        name: AlertName::AlertReceiverFailing,
        labels,
        annotations,
        starts_at: health
            .failing_since
            .map_or_else(SystemTime::now, |(_, t)| t),
    }
}

/// A signing key, never shown.
struct Key(Vec<u8>);

fn read_key(source: &SecretSource) -> Result<Key, String> {
    // Read as every secret is: bounded, a trailing line ending trimmed, blank refused.
    crate::manifest::secret::read(source)
        .map(|k| Key(k.into_bytes()))
        .map_err(|e| format!("the signing key: {e}"))
}

/// Sends what falls due, forever: retries with backoff while the receiver fails.
async fn send_loop(
    receiver: Receiver,
    client: Client,
    headers: HeaderMap,
    key: Option<Key>,
    outbox: Arc<Outbox>,
    metrics: Option<Arc<dyn Counts>>,
) {
    let count = |result: &str, n: u64| {
        if let Some(m) = &metrics {
            m.count_alerts_sent(&receiver.name, result, n);
        }
    };
    let mut failures = 0u32;
    loop {
        let now = Instant::now();
        let (due, next) = outbox.due(receiver.kind, now);
        if due.is_empty() {
            let wait = next.map_or(REFRESH, |n| n.saturating_duration_since(now));
            tokio::select! {
                _ = outbox.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
            continue;
        }
        let batch = outbox.snapshot(&due);
        let result = match receiver.kind {
            ReceiverType::Alertmanager => {
                post_alertmanager(&client, &receiver.url, &headers, &batch).await
            }
            ReceiverType::Webhook => {
                post_webhooks(&client, &receiver, &headers, key.as_ref(), &batch).await
            }
            ReceiverType::Slack => post_slack(&client, &receiver, &headers, &batch).await,
        };
        match result {
            Ok(()) => {
                failures = 0;
                outbox.delivered(&due, Instant::now());
                outbox
                    .sent_ok
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                count("ok", batch.len() as u64);
                outbox.succeeded();
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                outbox.sent_failed.fetch_add(1, Ordering::Relaxed);
                count("error", 1);
                if let Some(m) = &metrics {
                    m.count_delivery_failure(&receiver.name, e.kind().as_str());
                }
                tracing::warn!(receiver = %receiver.name, error = %e, "alert delivery failed; retrying with backoff");
                outbox.failed(&e);
                let exp = RETRY_BASE.saturating_mul(2u32.saturating_pow(failures.min(16) - 1));
                let delay = exp.min(RETRY_MAX).mul_f64(0.8 + 0.4 * fastrand::f64());
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Alertmanager's `postableAlert`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Postable<'a> {
    labels: &'a BTreeMap<String, String>,
    annotations: &'a BTreeMap<String, String>,
    starts_at: String,
    ends_at: String,
    #[serde(rename = "generatorURL")]
    generator_url: &'a str,
}

fn optional_rfc3339<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&humantime::format_rfc3339_seconds(*t).to_string()),
        None => s.serialize_none(),
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// One POST of every due alert to `/api/v2/alerts`: firing ones valid for [`VALIDITY`],
/// resolved ones ending when they were repaired.
async fn post_alertmanager(
    client: &Client,
    base: &str,
    headers: &HeaderMap,
    batch: &[(Entry, Phase)],
) -> Result<(), DeliveryError> {
    let now = SystemTime::now();
    let body: Vec<Postable<'_>> = batch
        .iter()
        .map(|(e, phase)| Postable {
            labels: &e.alert.labels,
            annotations: &e.alert.annotations,
            starts_at: rfc3339(e.alert.starts_at),
            ends_at: rfc3339(match phase {
                Phase::Firing => now + VALIDITY,
                Phase::Resolved => e.ended.unwrap_or(now).max(e.alert.starts_at),
            }),
            generator_url: e.alert.annotations.get("page").map_or("", String::as_str),
        })
        .collect();
    let json = serde_json::to_vec(&body).unwrap_or_default();
    let url = format!("{}/api/v2/alerts", base.trim_end_matches('/'));
    client.post_json(&url, headers, json.into()).await
}

/// The body a webhook receives for one alert.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WebhookBody<'a> {
    /// The body's schema version.
    version: &'static str,
    /// `firing` or `resolved`.
    status: &'static str,
    /// The alert.
    alert: &'a Alert,
    /// When it ended (resolved only).
    #[serde(skip_serializing_if = "Option::is_none")]
    ends_at: Option<String>,
    /// When this body was sent (a receiver may refuse old replays).
    sent_at: String,
}

/// One signed POST per due alert, in order.
async fn post_webhooks(
    client: &Client,
    receiver: &Receiver,
    common: &HeaderMap,
    key: Option<&Key>,
    batch: &[(Entry, Phase)],
) -> Result<(), DeliveryError> {
    for (e, phase) in batch {
        let body = WebhookBody {
            version: "1",
            status: match phase {
                Phase::Firing => "firing",
                Phase::Resolved => "resolved",
            },
            alert: &e.alert,
            ends_at: match phase {
                Phase::Firing => None,
                Phase::Resolved => e.ended.map(rfc3339),
            },
            sent_at: rfc3339(SystemTime::now()),
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let signature = key.map(|k| format!("sha256={}", sign(&k.0, &json)));
        let mut headers = common.clone();
        if let Some(s) = signature {
            // Hex digits only: always a valid header value.
            if let Ok(v) = http::HeaderValue::from_str(&s) {
                headers.insert(SIGNATURE_HEADER, v);
            }
        }
        client
            .post_json(&receiver.url, &headers, json.into())
            .await?;
    }
    Ok(())
}

/// One Slack message per due alert, in order: its state and summary, the fields before →
/// after (the `differs` annotation, where a secret is only "differs"), what was done, and
/// the page link. Slack's mrkdwn takes `&`, `<` and `>` escaped, so no value can forge a
/// link or a mention.
async fn post_slack(
    client: &Client,
    receiver: &Receiver,
    headers: &HeaderMap,
    batch: &[(Entry, Phase)],
) -> Result<(), DeliveryError> {
    for (e, phase) in batch {
        let json = serde_json::to_vec(&slack_message(&e.alert, *phase)).unwrap_or_default();
        client
            .post_json(&receiver.url, headers, json.into())
            .await?;
    }
    Ok(())
}

/// Slack's mrkdwn escaping.
fn mrkdwn(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The incoming-webhook body for one alert in one state (`text` is the notification's
/// fallback; `blocks` the message).
fn slack_message(alert: &Alert, phase: Phase) -> serde_json::Value {
    let get = |k: &str| alert.annotations.get(k).map(String::as_str).unwrap_or("");
    let label = |k: &str| alert.labels.get(k).map(String::as_str).unwrap_or("?");
    let state = match phase {
        Phase::Firing => "FIRING",
        Phase::Resolved => "RESOLVED",
    };
    let title = format!(
        "[{state}] {}: {}/{}",
        label("alertname"),
        label("kind"),
        label("resource")
    );
    let mut blocks = vec![
        serde_json::json!({ "type": "header", "text": { "type": "plain_text", "text": title } }),
        serde_json::json!({ "type": "section", "text": { "type": "mrkdwn", "text": mrkdwn(get("summary")) } }),
    ];
    if !get("differs").is_empty() {
        blocks.push(serde_json::json!({
            "type": "section",
            "text": { "type": "mrkdwn", "text": format!("*Before → after*\n```{}```", mrkdwn(get("differs"))) },
        }));
    }
    let mut context = format!(
        "stack *{}* · environment *{}* · severity *{}*",
        mrkdwn(label("stack")),
        mrkdwn(label("environment")),
        mrkdwn(label("severity"))
    );
    if !get("action").is_empty() {
        context.push_str(&format!(" · {}", mrkdwn(get("action"))));
    }
    if !get("page").is_empty() {
        context.push_str(&format!(" · <{}|stackwarden page>", mrkdwn(get("page"))));
    }
    blocks.push(serde_json::json!({
        "type": "context",
        "elements": [{ "type": "mrkdwn", "text": context }],
    }));
    serde_json::json!({ "text": format!("{title}: {}", get("summary")), "blocks": blocks })
}

/// Hex HMAC-SHA256 of `body` under `key`.
pub fn sign(key: &[u8], body: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    // HMAC takes a key of any length; new_from_slice cannot fail for it.
    match hmac::Hmac::<sha2::Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(body);
            hex::encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::AlertName;

    fn alert(fp: &str) -> Alert {
        Alert {
            fingerprint: fp.into(),
            name: AlertName::StackDrift,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            starts_at: SystemTime::now(),
        }
    }

    #[test]
    fn a_resolution_waits_for_its_firing_to_be_delivered_and_held() {
        let out = Outbox::default();
        out.push(&Event::Firing(alert("a")));
        out.push(&Event::Resolved(alert("a"), SystemTime::now()));
        let t0 = Instant::now();
        let (due, _) = out.due(ReceiverType::Alertmanager, t0);
        assert_eq!(due, vec![("a".to_string(), Phase::Firing)]);
        out.delivered(&due, t0);
        let (due, next) = out.due(ReceiverType::Alertmanager, t0);
        assert!(due.is_empty());
        assert_eq!(next, Some(t0 + HOLD));
        let (due, _) = out.due(ReceiverType::Alertmanager, t0 + HOLD);
        assert_eq!(due, vec![("a".to_string(), Phase::Resolved)]);
        out.delivered(&due, t0 + HOLD);
        assert_eq!(out.pending(), 0);
    }

    #[test]
    fn a_standing_alert_is_refreshed_for_alertmanager_and_sent_once_to_a_webhook() {
        let out = Outbox::default();
        out.push(&Event::Firing(alert("a")));
        let t0 = Instant::now();
        let (due, _) = out.due(ReceiverType::Alertmanager, t0);
        out.delivered(&due, t0);
        assert!(
            out.due(ReceiverType::Alertmanager, t0 + REFRESH / 2)
                .0
                .is_empty()
        );
        assert_eq!(out.due(ReceiverType::Alertmanager, t0 + REFRESH).0.len(), 1);
        assert!(
            out.due(ReceiverType::Webhook, t0 + REFRESH * 10)
                .0
                .is_empty()
        );
    }

    #[test]
    fn a_full_outbox_drops_new_alerts_and_counts_them_but_updates_known_ones() {
        let out = Outbox::default();
        for i in 0..OUTBOX_LIMIT {
            out.push(&Event::Firing(alert(&i.to_string())));
        }
        out.push(&Event::Firing(alert("one too many")));
        assert_eq!(out.dropped.load(Ordering::Relaxed), 1);
        out.push(&Event::Resolved(alert("0"), SystemTime::now()));
        assert_eq!(out.pending(), OUTBOX_LIMIT);
    }

    #[test]
    fn the_signature_is_rfc_4231s_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
