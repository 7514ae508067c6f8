//! Following the stack's published source (`run --source s3://…`): the loop's side of
//! delivery. Every source interval it polls the signed pointer through
//! [`Remote`](crate::source::fetch::Remote); a new revision that passed every check becomes
//! the manifests the next pass loads, and anything refused or expired is shown in the status
//! and raised as `SourceRejected` or `SourceStale` while the last good revision stays in
//! force. The leader also writes its status snapshot into the bucket, for `stackwarden
//! status` to read from anywhere.

use super::worlds::Connect;
use crate::alerts::{self, Alert, AlertName, Event};
use crate::source::fetch::{self, Poll, Remote, SourceStatus};
use crate::source::signing::TrustedKey;
use crate::source::{Location, snapshot};
use crate::status::Status;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// The default time between two polls of the pointer (one conditional GET each).
pub const SOURCE_INTERVAL: Duration = Duration::from_secs(15);
/// The snapshot is written at most this often after passes that changed or found something.
pub const SNAPSHOT_MIN_GAP: Duration = Duration::from_secs(10);
/// And at least this often, as a heartbeat (`status` calls an older one stale).
pub const SNAPSHOT_HEARTBEAT: Duration = Duration::from_secs(300);
/// How long one snapshot write may take before it is given up (the next one tries again).
const SNAPSHOT_DEADLINE: Duration = Duration::from_secs(10);

/// How the daemon follows a published source.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// The bucket, prefix and environment.
    pub location: Location,
    /// The key pointers must be signed with (never from the bucket).
    pub trusted: TrustedKey,
    /// Where revisions are unpacked and the one in force is recorded.
    pub state_dir: PathBuf,
    /// Time between polls.
    pub interval: Duration,
    /// The region of the S3 client (the manifests, which name the stack's region, are what
    /// the source delivers).
    pub region: String,
}

/// What alerts about the source carry besides the source itself.
pub(super) struct AlertContext<'a> {
    pub(super) stack: &'a str,
    pub(super) page: &'a str,
}

/// The source, followed.
pub(super) struct Follow {
    opts: SourceOptions,
    remote: Option<Remote>,
    s3: Option<aws_sdk_s3::Client>,
    /// Why the state directory could not be opened (tried again at the next poll).
    open_error: Option<String>,
    /// The source's alerts firing now.
    firing: BTreeMap<AlertName, Alert>,
    /// When the last snapshot was written, and the revision and phase it showed.
    written: Option<(tokio::time::Instant, String)>,
}

impl Follow {
    pub(super) fn new(opts: SourceOptions) -> Self {
        Follow {
            opts,
            remote: None,
            s3: None,
            open_error: None,
            firing: BTreeMap::new(),
            written: None,
        }
    }

    pub(super) fn interval(&self) -> Duration {
        self.opts.interval
    }

    /// The manifests directory and the repository root of the revision in force.
    pub(super) fn in_force(&self) -> Option<(PathBuf, PathBuf)> {
        let f = self.remote.as_ref()?.in_force()?;
        Some((f.manifests.clone(), f.tree.clone()))
    }

    /// The source as `/status` shows it.
    pub(super) fn status(&self) -> SourceStatus {
        match &self.remote {
            Some(r) => r.status().clone(),
            None => SourceStatus {
                url: self.opts.location.url(),
                last_error: self.open_error.clone(),
                ..SourceStatus::default()
            },
        }
    }

    /// The source's alerts firing now.
    pub(super) fn active(&self) -> impl Iterator<Item = &Alert> {
        self.firing.values()
    }

    /// Opens the state directory (the revision in force, re-verified) once the S3 client
    /// exists; true when a revision is in force.
    pub(super) async fn open(&mut self, connect: &dyn Connect) -> bool {
        if self.remote.is_none() {
            let s3 = match &self.s3 {
                Some(s3) => s3.clone(),
                None => {
                    let s3 = connect.s3(&self.opts.region).await;
                    self.s3 = Some(s3.clone());
                    s3
                }
            };
            let options = fetch::Options::new(
                self.opts.location.clone(),
                self.opts.state_dir.clone(),
                self.opts.trusted.clone(),
            );
            match Remote::open(s3, options) {
                Ok(remote) => {
                    self.open_error = None;
                    self.remote = Some(remote);
                }
                Err(e) => {
                    let text = e.to_string();
                    if self.open_error.as_deref() != Some(text.as_str()) {
                        tracing::error!(error = %text, "the source's state cannot be opened");
                    }
                    self.open_error = Some(text);
                }
            }
        }
        self.in_force().is_some()
    }

    /// Polls the pointer once. True when a new revision came into force; the alert
    /// transitions go to the receivers.
    pub(super) async fn poll(
        &mut self,
        connect: &dyn Connect,
        ctx: &AlertContext<'_>,
        now: SystemTime,
    ) -> (bool, Vec<Event>) {
        self.open(connect).await;
        let Some(remote) = self.remote.as_mut() else {
            return (false, Vec::new());
        };
        let url = self.opts.location.url();
        let env = self.opts.location.env.clone();
        let mut events = Vec::new();
        let updated = match remote.poll(now).await {
            Poll::Updated { revision, .. } => {
                tracing::info!(revision, %url, "a new revision from the source is in force");
                self.resolve(AlertName::SourceRejected, now, &mut events);
                self.resolve(AlertName::SourceStale, now, &mut events);
                true
            }
            Poll::Unchanged => {
                if !remote.status().stale {
                    self.resolve(AlertName::SourceStale, now, &mut events);
                }
                false
            }
            Poll::Rejected { revision, reason } => {
                let offered =
                    revision.map_or_else(|| "a revision".to_string(), |r| format!("revision {r}"));
                tracing::error!(
                    offered = %offered,
                    reason = reason.name(),
                    error = %reason,
                    "a revision from the source was refused; the last good one stays in force"
                );
                let summary = format!(
                    "{offered} from {url} was refused ({reason}); the last good revision stays in force"
                );
                let at = alerts::SourceAlertAt {
                    stack: ctx.stack,
                    environment: &env,
                    url: &url,
                    page: ctx.page,
                };
                let alert = alerts::source_alert(
                    AlertName::SourceRejected,
                    at,
                    reason.name(),
                    summary,
                    now,
                );
                self.fire(alert, &mut events);
                false
            }
            Poll::Stale {
                revision,
                expired_at,
            } => {
                let summary = format!(
                    "the pointer of revision {revision} at {url} expired at {}; nothing newer was published",
                    humantime::format_rfc3339_seconds(expired_at)
                );
                let at = alerts::SourceAlertAt {
                    stack: ctx.stack,
                    environment: &env,
                    url: &url,
                    page: ctx.page,
                };
                let alert =
                    alerts::source_alert(AlertName::SourceStale, at, "expired", summary, now);
                self.fire(alert, &mut events);
                false
            }
            Poll::Unreachable { error } => {
                // Not a problem of the desired state: the revision in force stays, and the
                // status names the error.
                tracing::warn!(error = %error, %url, "the source cannot be read; the revision in force stays");
                false
            }
        };
        (updated, events)
    }

    fn fire(&mut self, alert: Alert, events: &mut Vec<Event>) {
        // A new reason (or a newer refused revision) updates the alert in place.
        let changed = self
            .firing
            .get(&alert.name)
            .is_none_or(|a| a.labels != alert.labels || a.annotations != alert.annotations);
        if changed {
            let mut alert = alert;
            if let Some(before) = self.firing.get(&alert.name) {
                alert.starts_at = before.starts_at;
            }
            events.push(Event::Firing(alert.clone()));
            self.firing.insert(alert.name, alert);
        }
    }

    fn resolve(&mut self, name: AlertName, now: SystemTime, events: &mut Vec<Event>) {
        if let Some(mut alert) = self.firing.remove(&name) {
            let action = alerts::source_resolution(name);
            alert.annotations.insert("action".into(), action.into());
            events.push(Event::Resolved(alert, now));
        }
    }

    /// Writes the status snapshot into the bucket when it is due: after a pass that changed
    /// or found something (at most every [`SNAPSHOT_MIN_GAP`]), and at least every
    /// [`SNAPSHOT_HEARTBEAT`]. Only the leader calls this.
    pub(super) async fn write_snapshot(&mut self, status: &Status, eventful: bool) {
        let Some(s3) = self.s3.clone() else {
            return;
        };
        let now = tokio::time::Instant::now();
        let shape = format!(
            "{:?}/{:?}",
            status.phase,
            status.source.as_ref().and_then(|s| s.revision)
        );
        let due = match &self.written {
            None => true,
            Some((at, before)) => {
                let since = now.duration_since(*at);
                since >= SNAPSHOT_HEARTBEAT
                    || ((eventful || *before != shape) && since >= SNAPSHOT_MIN_GAP)
            }
        };
        if !due {
            return;
        }
        let value = match serde_json::to_value(status) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "the status snapshot cannot be rendered");
                return;
            }
        };
        let body = snapshot::compose::<SourceStatus>(value, None, SystemTime::now());
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let write = snapshot::write_snapshot(&s3, &self.opts.location, &bytes);
        match tokio::time::timeout(SNAPSHOT_DEADLINE, write).await {
            Ok(Ok(())) => self.written = Some((now, shape)),
            Ok(Err(e)) => tracing::warn!(error = %e, "writing the status snapshot failed"),
            Err(_) => tracing::warn!("writing the status snapshot timed out"),
        }
    }
}
