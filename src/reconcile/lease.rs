//! One actor per stack: a lease object in the stack's own bucket, written with S3 conditional
//! writes (`If-None-Match: *` to create it, `If-Match: <etag>` to renew or take it over), so
//! that two daemons, or a daemon and a CI `apply`, never act on the stack at once.
//!
//! The object holds the holder's identity and an expiry. A holder renews before the expiry;
//! anyone may take an expired lease. Two contenders racing for it both send `If-Match` with
//! the same ETag and S3 lets exactly one through (the other gets 412).
//!
//! Before the bucket exists there is nothing to hold a lease in: the caller may create the
//! bucket (idempotent, the same for every contender) and nothing else, then take the lease.
//! No clock decides who leads. A contender judges a lease lapsed by its own monotonic clock:
//! once the object (its ETag) has not changed for the holder's TTL since this contender
//! first saw it so, as client-go's leader election does. The holder's timestamp is shown,
//! never trusted, so two daemons whose clocks differ by days behave as if they agreed.

use crate::plan::Change;
use crate::provider::{ErrorClass, StepError, WriteGate};
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where the lease lives in the bucket.
pub const LEASE_PREFIX: &str = "stackwarden/lease/";

/// A lease operation failed in a way that says nothing about who holds it.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// An S3 call failed.
    #[error("{operation} s3://{bucket}/{key} failed: {code}: {message}")]
    Call {
        /// The S3 operation.
        operation: &'static str,
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// The service's error code, or the transport's.
        code: String,
        /// The service's message.
        message: String,
        /// The SDK error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The lease's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// `host:pid` of the holder (empty once released).
    pub holder: String,
    /// Unix seconds at which it lapses.
    pub expires: u64,
    /// The boot and pid namespace the holder's pid belongs to: only a contender that sees
    /// the same process table may judge the holder gone (a container sharing the host name
    /// does not).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub processes: String,
    /// The holder's TTL in seconds: how long it may go without renewing. A duration, not a
    /// time, so it means the same on every clock. 0 in records of older versions: the
    /// contender's own TTL stands in.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ttl: u64,
    /// Fresh for every write: two renewals within one second still differ, so a contender
    /// always sees a renewal as a change of the object (its ETag).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub nonce: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Who holds the lease, as seen by one contender after one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holding {
    /// We hold it until `expires`.
    Held {
        /// When it lapses unless renewed.
        expires: SystemTime,
    },
    /// Someone else holds it.
    Other {
        /// Who.
        holder: String,
        /// Until when.
        expires: SystemTime,
    },
    /// The bucket does not exist yet: no lease can be held.
    NoBucket,
}

/// A contender for one stack's lease.
#[derive(Debug, Clone)]
pub struct Lease {
    s3: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    identity: String,
    ttl: Duration,
    /// The ETag and expiry of our last successful write of the lease: what
    /// [`Lease::confirm`] expects to find.
    written: Arc<Mutex<Option<(String, SystemTime)>>>,
    /// Another holder's object as this contender last saw it: its ETag, and when (by this
    /// process's monotonic clock) it was first seen with that ETag.
    seen: Arc<Mutex<Option<(String, std::time::Instant)>>>,
    /// True once this contender has seen another holder's object change: that holder is
    /// alive and renewing.
    renewal_seen: Arc<std::sync::atomic::AtomicBool>,
}

/// What [`Lease::confirm`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirmed {
    /// The object is the one we wrote, and it has not expired.
    Held,
    /// We may not write: why, for people.
    Lost(String),
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn from_unix(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(s)
}

/// This machine's host name; in a container that does not carry its id as host name (one on
/// the host's network shares the host's name, and its process is pid 1 like its
/// successor's), the container's short id besides: two daemons in two containers, a
/// self-update's old and new one, must never share an identity.
fn host_name() -> String {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_string());
        match crate::provider::host::own_container::current() {
            Some(id) if !id.starts_with(&host) => format!("{host}.{}", &id[..12.min(id.len())]),
            _ => host,
        }
    })
    .clone()
}

/// This process's identity: host name and pid (what `/status` and a refused `apply` show).
pub fn identity(role: &str) -> String {
    format!("{role}@{}:{}", host_name(), std::process::id())
}

/// True when `holder` names a process on this host that no longer exists (killed, crashed):
/// its lease is as good as expired, and waiting out its TTL would only hold the stack up.
/// A holder on another host cannot be checked from here and keeps its lease to its expiry.
fn holder_is_dead_here(holder: &Record) -> bool {
    let Some((_, rest)) = holder.holder.split_once('@') else {
        return false;
    };
    let Some((host, pid)) = rest.rsplit_once(':') else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    !holder.processes.is_empty()
        && holder.processes == process_table()
        && host == host_name()
        && pid != std::process::id()
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Names the process table this process sees: the boot, and the pid namespace. Empty when
/// either cannot be read (then no holder is ever judged gone from here).
fn process_table() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let ns = std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    if boot.trim().is_empty() || ns.is_empty() {
        String::new()
    } else {
        format!("{} {ns}", boot.trim())
    }
}

/// Which writers a lease excludes from each other: one writer per world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseScope {
    /// Writers of AWS (CI's apply, a daemon that repairs AWS): `<stack>.json`.
    Aws,
    /// A daemon that writes the host alone (`run --aws-mode warn`, the host's daemon as
    /// shipped): `<stack>.host.json`. CI's AWS apply never waits for it.
    Host,
}

/// The lease object of `stack` in environment `env` for `scope`:
/// `stackwarden/lease/<env>/<stack>.json`, or `<stack>.host.json` for the host's writer.
pub fn key_of(stack: &str, env: &str, scope: LeaseScope) -> String {
    match scope {
        LeaseScope::Aws => format!("{LEASE_PREFIX}{env}/{stack}.json"),
        LeaseScope::Host => format!("{LEASE_PREFIX}{env}/{stack}.host.json"),
    }
}

impl Lease {
    /// A contender named `identity` for the lease of `stack` in environment `env`, in
    /// `bucket`. The key names the environment: a stack's identity is its name and its
    /// environment, and two environments given one bucket must not serialize each other.
    pub fn new(
        s3: aws_sdk_s3::Client,
        bucket: impl Into<String>,
        stack: &str,
        env: &str,
        scope: LeaseScope,
        identity: impl Into<String>,
        ttl: Duration,
    ) -> Lease {
        Lease {
            s3,
            bucket: bucket.into(),
            key: key_of(stack, env, scope),
            identity: identity.into(),
            ttl,
            written: Arc::default(),
            seen: Arc::default(),
            renewal_seen: Arc::default(),
        }
    }

    /// True once this contender has watched another holder renew the lease: it is alive.
    pub fn renewal_seen(&self) -> bool {
        self.renewal_seen.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How long another holder's object, as read now with `etag`, has gone unchanged by this
    /// process's monotonic clock (zero on first sight), and the TTL it must be renewed in.
    fn unchanged_for(&self, rec: &Record, etag: &str) -> (Duration, Duration) {
        let ttl = if rec.ttl > 0 {
            Duration::from_secs(rec.ttl)
        } else {
            self.ttl
        };
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let unchanged = match &*seen {
            Some((tag, at)) if tag == etag => at.elapsed(),
            previous => {
                if previous.is_some() {
                    self.renewal_seen
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
                *seen = Some((etag.to_string(), std::time::Instant::now()));
                Duration::ZERO
            }
        };
        (unchanged, ttl)
    }

    /// The bucket holding the lease.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Our identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn err<E>(&self, operation: &'static str, e: aws_sdk_s3::error::SdkError<E>) -> LeaseError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let code = e
            .as_service_error()
            .and_then(|s| s.code())
            .map(str::to_string)
            .unwrap_or_else(|| "transport".to_string());
        let message = e
            .as_service_error()
            .and_then(|s| s.message())
            .map(str::to_string)
            .unwrap_or_else(|| e.to_string());
        LeaseError::Call {
            operation,
            bucket: self.bucket.clone(),
            key: self.key.clone(),
            code,
            message,
            source: Box::new(e),
        }
    }

    /// Reads the lease: its record and ETag, `None` when there is none, `Err(NoBucket)` as a
    /// holding when the bucket is missing.
    async fn read(&self) -> Result<Result<Option<(Record, String)>, Holding>, LeaseError> {
        let out = self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                let code = e.as_service_error().and_then(|s| s.code()).unwrap_or("");
                if e.as_service_error().is_some_and(|s| s.is_no_such_key()) || code == "NoSuchKey" {
                    return Ok(Ok(None));
                }
                if code == "NoSuchBucket" {
                    return Ok(Err(Holding::NoBucket));
                }
                return Err(self.err("GetObject", e));
            }
        };
        let etag = out.e_tag().unwrap_or_default().to_string();
        // A lease object is tiny; anything large is not ours and is treated as garbage.
        let bytes = out
            .body
            .collect()
            .await
            .map(|b| b.into_bytes())
            .unwrap_or_default();
        let record =
            serde_json::from_slice::<Record>(&bytes[..bytes.len().min(4096)]).unwrap_or(Record {
                holder: String::new(),
                expires: 0,
                processes: String::new(),
                ttl: 0,
                nonce: 0,
            });
        Ok(Ok(Some((record, etag))))
    }

    /// Writes `record` if the object still has `etag` (or, without one, does not exist);
    /// false when another contender wrote first. Remembers the new ETag of a record of ours.
    async fn write(&self, record: &Record, etag: Option<&str>) -> Result<bool, LeaseError> {
        let body = serde_json::to_vec(record).unwrap_or_default();
        let req = self
            .s3
            .put_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .content_type("application/json")
            .body(ByteStream::from(body));
        let req = match etag {
            Some(tag) => req.if_match(tag),
            None => req.if_none_match("*"),
        };
        match req.send().await {
            Ok(out) => {
                let mine = (record.holder == self.identity)
                    .then(|| {
                        out.e_tag()
                            .map(|t| (t.to_string(), from_unix(record.expires)))
                    })
                    .flatten();
                *self.written.lock().unwrap_or_else(|e| e.into_inner()) = mine;
                Ok(true)
            }
            Err(e) => {
                let code = e.as_service_error().and_then(|s| s.code()).unwrap_or("");
                let status = e.raw_response().map(|r| r.status().as_u16());
                // 412: another contender wrote first; 409 (ConditionalRequestConflict) too.
                if code == "PreconditionFailed"
                    || code == "ConditionalRequestConflict"
                    || status == Some(412)
                    || status == Some(409)
                {
                    Ok(false)
                } else {
                    Err(self.err("PutObject", e))
                }
            }
        }
    }

    /// Takes, renews or observes the lease once.
    pub async fn acquire(&self, now: SystemTime) -> Result<Holding, LeaseError> {
        let expires = now + self.ttl;
        let ours = Record {
            holder: self.identity.clone(),
            expires: unix(expires),
            processes: process_table(),
            ttl: self.ttl.as_secs().max(1),
            nonce: fastrand::u64(1..),
        };
        let current = match self.read().await? {
            Ok(current) => current,
            Err(holding) => return Ok(holding),
        };
        let won = match &current {
            None => self.write(&ours, None).await?,
            // Ours, or released (an empty holder): taken at once.
            Some((rec, etag)) if rec.holder == self.identity || rec.holder.is_empty() => {
                self.write(&ours, Some(etag)).await?
            }
            Some((rec, etag)) if holder_is_dead_here(rec) => {
                tracing::warn!(holder = %rec.holder, "the lease's holder ran on this host and is gone: taking the lease over");
                self.write(&ours, Some(etag)).await?
            }
            Some((rec, etag)) => {
                let (unchanged, ttl) = self.unchanged_for(rec, etag);
                if unchanged < ttl {
                    return Ok(Holding::Other {
                        holder: rec.holder.clone(),
                        // As this contender measures it: the holder's own clock may be off
                        // by any amount.
                        expires: now + (ttl - unchanged),
                    });
                }
                tracing::warn!(holder = %rec.holder, unchanged_s = unchanged.as_secs(), "the lease was not renewed within its TTL: taking it over");
                self.write(&ours, Some(etag)).await?
            }
        };
        if won {
            return Ok(Holding::Held { expires });
        }
        // Lost a race: report whoever won.
        match self.read().await? {
            Ok(Some((rec, etag))) => {
                let (unchanged, ttl) = self.unchanged_for(&rec, &etag);
                Ok(Holding::Other {
                    holder: rec.holder,
                    expires: now + ttl.saturating_sub(unchanged),
                })
            }
            Ok(None) => Ok(Holding::Other {
                holder: "unknown".to_string(),
                expires: now,
            }),
            Err(h) => Ok(h),
        }
    }

    /// Checks, right before a write, that the lease object is still the one we last wrote
    /// and has not expired. A lease deleted or rewritten by anyone since is lost at once,
    /// whatever the local view says. One call: a HEAD while more than half the TTL is
    /// left; past that, a renewal conditional on our ETag, which checks and extends at once
    /// (a pass longer than the TTL keeps its lease while it writes). A call that gets no
    /// answer leaves an unexpired lease ours until its expiry, as a failed renewal does:
    /// nobody may take it before then.
    pub async fn confirm(&self, now: SystemTime) -> Confirmed {
        let Some((etag, expires)) = self
            .written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        else {
            return Confirmed::Lost("this daemon has not written the lease".to_string());
        };
        // Found gone or taken: forgotten, so that no later check trusts the old ETag.
        let lost = |why: String| {
            *self.written.lock().unwrap_or_else(|e| e.into_inner()) = None;
            Confirmed::Lost(why)
        };
        // Past half its TTL, or even past its expiry (a pass longer than the TTL): the
        // renewal's If-Match on our own ETag is the check, since nobody can have taken the
        // lease without writing the object.
        if expires.duration_since(now).unwrap_or_default() < self.ttl / 2 {
            let ours = Record {
                holder: self.identity.clone(),
                expires: unix(now + self.ttl),
                processes: process_table(),
                ttl: self.ttl.as_secs().max(1),
                nonce: fastrand::u64(1..),
            };
            return match self.write(&ours, Some(&etag)).await {
                Ok(true) => Confirmed::Held,
                Ok(false) => lost(format!(
                    "the lease object s3://{}/{} was rewritten or deleted by someone else",
                    self.bucket, self.key
                )),
                Err(e) if expires > now => {
                    tracing::debug!(error = %e, "lease renewal unanswered; ours until it expires");
                    Confirmed::Held
                }
                Err(e) => {
                    Confirmed::Lost(format!("the lease expired and could not be renewed: {e}"))
                }
            };
        }
        let head = self
            .s3
            .head_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .send()
            .await;
        match head {
            Ok(out) if out.e_tag() == Some(etag.as_str()) => Confirmed::Held,
            Ok(_) => lost(format!(
                "the lease object s3://{}/{} was rewritten by someone else",
                self.bucket, self.key
            )),
            Err(e) => match e.raw_response().map(|r| r.status().as_u16()) {
                Some(404) => lost(format!(
                    "the lease object s3://{}/{} was deleted",
                    self.bucket, self.key
                )),
                // Answered, but not with our object (denied, say): not ours to trust.
                Some(status) => lost(format!(
                    "the lease object s3://{}/{} could not be checked (HTTP {status})",
                    self.bucket, self.key
                )),
                None => {
                    tracing::debug!(error = %self.err("HeadObject", e), "lease check unanswered; ours until it expires");
                    Confirmed::Held
                }
            },
        }
    }

    /// Gives the lease up if we hold it (others may take it at once).
    pub async fn release(&self) -> Result<(), LeaseError> {
        if let Ok(Some((rec, etag))) = self.read().await?
            && rec.holder == self.identity
        {
            let released = Record {
                holder: String::new(),
                expires: 0,
                processes: String::new(),
                ttl: 0,
                nonce: 0,
            };
            self.write(&released, Some(&etag)).await?;
        }
        Ok(())
    }
}

/// The daemon's [`WriteGate`]: a step writes only while [`Lease::confirm`] says the lease
/// is held. The first refusal stands for the rest of the writes it guards (no later step
/// writes, nor asks S3 again); the loop reads it to stand by until the lease is retaken.
#[derive(Debug)]
pub struct LeaseGate {
    lease: Lease,
    lost: Mutex<Option<String>>,
}

impl LeaseGate {
    /// A gate over `lease`.
    pub fn new(lease: Lease) -> Self {
        LeaseGate {
            lease,
            lost: Mutex::new(None),
        }
    }

    /// Why the lease was found lost, if it was.
    pub fn lost(&self) -> Option<String> {
        self.lost.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl WriteGate for LeaseGate {
    fn admit<'a>(&'a self, _change: &'a Change) -> BoxFuture<'a, Result<(), StepError>> {
        Box::pin(async move {
            let refused = |why: &str| StepError {
                class: ErrorClass::Transient,
                message: format!(
                    "not written: {why}; this daemon writes again once it holds the lease"
                ),
            };
            if let Some(why) = self.lost() {
                return Err(refused(&why));
            }
            match self.lease.confirm(SystemTime::now()).await {
                Confirmed::Held => Ok(()),
                Confirmed::Lost(why) => {
                    tracing::warn!(reason = %why, "lease lost: writes stop");
                    *self.lost.lock().unwrap_or_else(|e| e.into_inner()) = Some(why.clone());
                    Err(refused(&why))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_gone_from_this_host_is_dead_one_alive_or_elsewhere_is_not() {
        let host = host_name();
        let here = |holder: String| Record {
            holder,
            expires: u64::MAX,
            processes: process_table(),
            ttl: 0,
            nonce: 0,
        };
        // Pid 1 always exists; a pid beyond pid_max never does.
        assert!(!holder_is_dead_here(&here(format!("apply@{host}:1"))));
        assert!(holder_is_dead_here(&here(format!(
            "apply@{host}:4294967295"
        ))));
        assert!(!holder_is_dead_here(&here(format!(
            "apply@{host}-elsewhere:4294967295"
        ))));
        assert!(!holder_is_dead_here(&here(identity("daemon"))));
        assert!(!holder_is_dead_here(&here("garbage".into())));
        // Same host name, another process table (a container, another boot): unknowable.
        let mut elsewhere = here(format!("apply@{host}:4294967295"));
        elsewhere.processes = "another-boot pid:[1]".into();
        assert!(!holder_is_dead_here(&elsewhere));
        elsewhere.processes = String::new();
        assert!(!holder_is_dead_here(&elsewhere));
    }

    #[test]
    fn identities_name_the_role_host_and_pid() {
        let id = identity("daemon");
        assert!(id.starts_with("daemon@"), "{id}");
        assert!(id.ends_with(&format!(":{}", std::process::id())), "{id}");
    }
}
