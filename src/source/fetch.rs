//! Following the pointer: [`Remote::poll`] makes one conditional GET of
//! `<prefix>/<env>/current` (a 304 costs one call) and, for a new revision, checks the
//! declared size, downloads the bundle under a cap, checks its digest, unpacks it under caps
//! and validates the manifests in it, then swaps it in with one rename of a symlink. Every
//! refusal is a typed [`Rejection`] and leaves the revision in force as it was; the revision
//! in force lives in the state directory, so a restart neither forgets it nor accepts an
//! older one. Returns outcomes only: what a pass does with them is the loop's business.
//!
//! The state directory: `revisions/<n>/tree/` (the unpacked bundle), `revisions/<n>/pointer`
//! (the signed pointer object, re-verified on every start), `revisions/<n>/etag`, and
//! `current` → `revisions/<n>`.

use super::bundle::{self, Index};
use super::pointer::{self, Pointer, PointerError, Publisher, Signed, Time};
use super::signing::TrustedKey;
use super::unpack::{self, Limits, UnpackError};
use super::{CapError, Location, S3Error, read_capped};
use serde::Serialize;
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The largest bundle downloaded by default: the shipped ones are tens of KiB.
pub const DEFAULT_MAX_BUNDLE_BYTES: u64 = 64 << 20;

/// How a [`Remote`] is set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the pointer and bundles are.
    pub location: Location,
    /// Where revisions are unpacked and the one in force is recorded.
    pub state_dir: PathBuf,
    /// The key pointers must be signed with (from the daemon's own configuration).
    pub trusted: TrustedKey,
    /// Bundles declared (or turning out) larger are refused.
    pub max_bundle_bytes: u64,
    /// Caps on unpacking.
    pub limits: Limits,
}

impl Options {
    /// Options with the default caps.
    pub fn new(location: Location, state_dir: PathBuf, trusted: TrustedKey) -> Options {
        Options {
            location,
            state_dir,
            trusted,
            max_bundle_bytes: DEFAULT_MAX_BUNDLE_BYTES,
            limits: Limits::default(),
        }
    }
}

/// Why an offered revision was refused. The revision in force stays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "reason", rename_all_fields = "camelCase")]
pub enum Rejection {
    /// The pointer's signature does not verify with the trusted key (another key, an edit).
    #[error("bad signature: {why}")]
    BadSignature {
        /// What failed.
        why: String,
    },
    /// The pointer object is not one.
    #[error("malformed pointer: {why}")]
    Malformed {
        /// What is wrong.
        why: String,
    },
    /// Signed, but for another environment.
    #[error("the pointer is for environment `{found}`")]
    WrongEnvironment {
        /// The pointer's environment.
        found: String,
    },
    /// The bundle's bytes are not the ones the pointer names.
    #[error("digest mismatch: the pointer names {expected}, the bundle is {found}")]
    DigestMismatch {
        /// The pointer's digest (and size).
        expected: String,
        /// What was downloaded.
        found: String,
    },
    /// Not newer than the revision in force (a replayed older pointer).
    #[error("rollback refused: revision {offered} offered, {in_force} in force")]
    Rollback {
        /// In force.
        in_force: u64,
        /// Offered.
        offered: u64,
    },
    /// A revision further ahead of the one in force than [`MAX_REVISION_JUMP`]: publish
    /// advances by one, so such a number only comes from a forged or runaway pointer that
    /// would leave no number for any later revision.
    #[error("revision {offered} jumps more than {limit} ahead of {in_force} in force")]
    Jump {
        /// In force.
        in_force: u64,
        /// Offered.
        offered: u64,
        /// [`MAX_REVISION_JUMP`].
        limit: u64,
    },
    /// A pointer that stays fresh beyond [`MAX_EXPIRY_HORIZON`]: a leaked key could
    /// otherwise freeze hosts on its revision for good.
    #[error("revision {revision} expires at {expires_at}, beyond the {horizon_days}-day horizon")]
    TooFarExpiry {
        /// The revision.
        revision: u64,
        /// When it says it expires.
        expires_at: String,
        /// The horizon, in days.
        horizon_days: u64,
    },
    /// The offered pointer had already expired.
    #[error("revision {revision} expired at {expires_at}")]
    Expired {
        /// The revision.
        revision: u64,
        /// When.
        expires_at: String,
    },
    /// Larger than the cap, from its declared size or while downloading.
    #[error("too large: {size} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// The declared or downloaded size.
        size: u64,
        /// The cap.
        limit: u64,
    },
    /// An archive entry that must never be unpacked.
    #[error("hostile archive: entry `{entry}`: {why}")]
    HostileArchive {
        /// The entry.
        entry: String,
        /// Why.
        why: String,
    },
    /// The manifests in it do not validate.
    #[error("invalid manifests: {}", errors.join("; "))]
    Invalid {
        /// The problems (the first few).
        errors: Vec<String>,
    },
}

impl Rejection {
    /// The reason's name, for metrics and alert labels.
    pub fn name(&self) -> &'static str {
        match self {
            Rejection::BadSignature { .. } => "BadSignature",
            Rejection::Malformed { .. } => "Malformed",
            Rejection::WrongEnvironment { .. } => "WrongEnvironment",
            Rejection::DigestMismatch { .. } => "DigestMismatch",
            Rejection::Rollback { .. } => "Rollback",
            Rejection::Expired { .. } => "Expired",
            Rejection::Jump { .. } => "Jump",
            Rejection::TooFarExpiry { .. } => "TooFarExpiry",
            Rejection::TooLarge { .. } => "TooLarge",
            Rejection::HostileArchive { .. } => "HostileArchive",
            Rejection::Invalid { .. } => "Invalid",
        }
    }
}

/// The furthest a pointer may run ahead of the revision in force. `publish` advances by one,
/// so a host offline through this many publishes is the only honest case; anything further
/// is a forged or runaway number that would exhaust the revisions after it.
pub const MAX_REVISION_JUMP: u64 = 100_000;

/// The longest a pointer may say it stays fresh: `publish` defaults to 7 days, a pointer
/// that would keep hosts on it for longer is refused.
pub const MAX_EXPIRY_HORIZON: std::time::Duration = std::time::Duration::from_secs(90 * 86_400);

/// Why the source could not be read this time (nothing about the desired state).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Nothing is published for this environment yet.
    #[error("no pointer at s3://{bucket}/{key}: nothing is published for this environment yet")]
    NoPointer {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
    },
    /// An S3 call failed (unreachable, denied, throttled).
    #[error(transparent)]
    S3(#[from] S3Error),
    /// The download broke off.
    #[error("downloading s3://{bucket}/{key}: {why}")]
    Download {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// Why.
        why: String,
    },
    /// The state directory could not be written.
    #[error("writing the state directory {path}: {source}")]
    State {
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Why a [`Remote`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The state directory cannot be made or read.
    #[error("the source's state directory {path}: {source}")]
    State {
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The revision recorded as in force does not verify with the trusted key: the state
    /// directory was tampered with, or the key changed.
    #[error(
        "the revision in force in {path} does not verify with the trusted key: {source}\n    fix: if the signing key was rotated on purpose, empty the state directory; the next poll fetches the current revision"
    )]
    Untrusted {
        /// The pointer file.
        path: PathBuf,
        /// Why.
        #[source]
        source: PointerError,
    },
}

/// The revision in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InForce {
    /// Its pointer (verified).
    pub pointer: Pointer,
    /// The unpacked bundle's root.
    pub tree: PathBuf,
    /// The manifests directory inside it.
    pub manifests: PathBuf,
}

impl InForce {
    /// The revision.
    pub fn revision(&self) -> u64 {
        self.pointer.revision
    }
}

/// What one poll found.
#[derive(Debug)]
pub enum Poll {
    /// Nothing new (a 304, or the same revision again).
    Unchanged,
    /// A new revision is in force.
    Updated {
        /// Its revision.
        revision: u64,
        /// The unpacked bundle's root (`--root`).
        dir: PathBuf,
        /// The manifests directory in it (`-f`).
        manifests: PathBuf,
    },
    /// The offered revision was refused; the one in force stays.
    Rejected {
        /// The offered revision, when the pointer could be read.
        revision: Option<u64>,
        /// Why.
        reason: Rejection,
    },
    /// The source could not be read; the revision in force stays.
    Unreachable {
        /// Why.
        error: FetchError,
    },
    /// The pointer in force has expired and nothing newer came: keep applying it, but say so.
    Stale {
        /// The revision in force.
        revision: u64,
        /// When it expired.
        expired_at: SystemTime,
    },
}

/// A refusal, as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Refused {
    /// The offered revision, when known.
    pub revision: Option<u64>,
    /// Why.
    #[serde(flatten)]
    pub reason: Rejection,
    /// The reason as one line.
    pub message: String,
}

/// The source as `/status` shows it (its future `source` field) and the snapshot carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    /// `s3://BUCKET/PREFIX`.
    pub url: String,
    /// The revision in force.
    pub revision: Option<u64>,
    /// Its bundle's SHA-256.
    pub digest: Option<String>,
    /// Who published it.
    pub publisher: Option<Publisher>,
    /// When it was published.
    pub published_at: Option<Time>,
    /// When its pointer expires.
    pub expires_at: Option<Time>,
    /// True when a revision is in force, its signature verified.
    pub verified: bool,
    /// True when the pointer in force has expired.
    pub stale: bool,
    /// The last poll.
    pub last_check: Option<Time>,
    /// The last poll's problem (unreachable, refused), cleared by a good poll.
    pub last_error: Option<String>,
    /// The last refused revision, until a newer one is taken.
    pub rejected: Option<Refused>,
}

/// The daemon's side of delivery: follows one environment's pointer.
#[derive(Debug)]
pub struct Remote {
    s3: aws_sdk_s3::Client,
    options: Options,
    /// The ETag of the pointer last read (in force or refused): the next GET is conditional.
    etag: Option<String>,
    in_force: Option<InForce>,
    status: SourceStatus,
}

const CURRENT: &str = "current";
const REVISIONS: &str = "revisions";
const TREE: &str = "tree";
const POINTER_FILE: &str = "pointer";
const ETAG_FILE: &str = "etag";
const INCOMING: &str = "incoming";
const DOWNLOAD: &str = "incoming.bundle";
/// Held (flock) while a revision is taken: two daemons may share one state directory (the
/// old one and its successor, during a handoff), and their downloads and swaps must not mix.
const LOCK: &str = "lock";
/// Problems of an invalid bundle kept for the status: the first screenful.
const MAX_SHOWN_PROBLEMS: usize = 20;

fn read_small(path: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    std::fs::File::open(path)?
        .take(cap + 1)
        .read_to_end(&mut out)?;
    if out.len() as u64 > cap {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "larger than expected",
        ));
    }
    Ok(out)
}

/// Reads and checks a bundle's index, returning the manifests directory inside `tree`.
fn manifests_of(tree: &Path, env: &str, limits: &Limits) -> Result<PathBuf, Rejection> {
    let invalid = |why: String| Rejection::Invalid { errors: vec![why] };
    let bytes = read_small(&tree.join(bundle::INDEX_ENTRY), 64 * 1024)
        .map_err(|e| invalid(format!("{}: {e}", bundle::INDEX_ENTRY)))?;
    let index: Index = serde_json::from_slice(&bytes)
        .map_err(|e| invalid(format!("{}: {e}", bundle::INDEX_ENTRY)))?;
    if index.format != bundle::FORMAT {
        return Err(invalid(format!(
            "bundle format {} (this build reads {}): upgrade stackwarden",
            index.format,
            bundle::FORMAT
        )));
    }
    if index.env != env {
        return Err(Rejection::WrongEnvironment { found: index.env });
    }
    if index.manifests == "." {
        return Ok(tree.to_path_buf());
    }
    let rel = unpack::check_path(index.manifests.as_bytes(), limits).map_err(|why| {
        Rejection::HostileArchive {
            entry: bundle::INDEX_ENTRY.to_string(),
            why: format!("manifests: {why}"),
        }
    })?;
    Ok(tree.join(rel))
}

/// Unpacks and validates a downloaded bundle into `staging/tree`. Blocking.
fn unpack_and_validate(
    download: &Path,
    staging: &Path,
    env: &str,
    limits: &Limits,
) -> Result<Result<PathBuf, Rejection>, std::io::Error> {
    let file = std::fs::File::open(download)?;
    let tree = staging.join(TREE);
    match unpack::unpack(std::io::BufReader::new(file), &tree, limits) {
        Ok(_) => {}
        Err(UnpackError::Hostile { entry, why }) => {
            return Ok(Err(Rejection::HostileArchive {
                entry,
                why: why.to_string(),
            }));
        }
        Err(UnpackError::TooLarge { what, limit }) => {
            return Ok(Err(Rejection::HostileArchive {
                entry: what,
                why: format!("unpacks to more than {limit} bytes"),
            }));
        }
        Err(UnpackError::Corrupt(e)) => {
            return Ok(Err(Rejection::HostileArchive {
                entry: "(archive)".to_string(),
                why: format!("corrupt: {e}"),
            }));
        }
        Err(UnpackError::Write { source, .. }) => return Err(source),
    }
    let manifests = match manifests_of(&tree, env, limits) {
        Ok(m) => m,
        Err(r) => return Ok(Err(r)),
    };
    let problems: Vec<String> = match crate::manifest::load_in(&manifests, Some(env), Some(&tree)) {
        Ok(loaded) => crate::grafana::check(&loaded.desired)
            .diagnostics
            .iter()
            .map(|d| d.to_string())
            .collect(),
        Err(e) => e.to_string().lines().map(str::to_string).collect(),
    };
    if !problems.is_empty() {
        return Ok(Err(Rejection::Invalid {
            errors: problems.into_iter().take(MAX_SHOWN_PROBLEMS).collect(),
        }));
    }
    Ok(Ok(manifests))
}

impl Remote {
    /// Opens the state directory (creating it) and the revision in force recorded there,
    /// re-verified with the trusted key. Makes no call.
    pub fn open(s3: aws_sdk_s3::Client, options: Options) -> Result<Remote, OpenError> {
        let state = &options.state_dir;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| OpenError::State { path, source }
        };
        std::fs::create_dir_all(state.join(REVISIONS)).map_err(io(state))?;
        let current = state.join(CURRENT);
        let mut remote = Remote {
            s3,
            status: SourceStatus {
                url: options.location.url(),
                ..SourceStatus::default()
            },
            options,
            etag: None,
            in_force: None,
        };
        match std::fs::symlink_metadata(&current) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(remote),
            Err(e) => return Err(io(&current)(e)),
            Ok(_) => {}
        }
        let pointer_path = current.join(POINTER_FILE);
        let object =
            read_small(&pointer_path, pointer::MAX_POINTER_BYTES).map_err(io(&pointer_path))?;
        let signed = pointer::open(
            &object,
            &remote.options.trusted,
            &remote.options.location.env,
        )
        .map_err(|source| OpenError::Untrusted {
            path: pointer_path.clone(),
            source,
        })?;
        // The resolved directory, so a later flip of `current` does not move it under a pass.
        let dir = std::fs::canonicalize(&current).map_err(io(&current))?;
        let tree = dir.join(TREE);
        let manifests = manifests_of(&tree, &remote.options.location.env, &remote.options.limits)
            .map_err(|r| OpenError::State {
            path: tree.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, r.to_string()),
        })?;
        remote.etag = std::fs::read_to_string(dir.join(ETAG_FILE))
            .ok()
            .filter(|e| !e.is_empty());
        remote.set_in_force(InForce {
            pointer: signed.pointer,
            tree,
            manifests,
        });
        Ok(remote)
    }

    /// The revision in force, if any.
    pub fn in_force(&self) -> Option<&InForce> {
        self.in_force.as_ref()
    }

    /// The source's status.
    pub fn status(&self) -> &SourceStatus {
        &self.status
    }

    /// Where this source reads from.
    pub fn location(&self) -> &Location {
        &self.options.location
    }

    fn set_in_force(&mut self, f: InForce) {
        let p = &f.pointer;
        self.status.revision = Some(p.revision);
        self.status.digest = Some(p.bundle.sha256.clone());
        self.status.publisher = Some(p.publisher.clone());
        self.status.published_at = Some(p.published_at);
        self.status.expires_at = Some(p.expires_at);
        self.status.verified = true;
        self.in_force = Some(f);
    }

    /// The outcome when nothing newer is offered: stale once the pointer in force expired.
    fn unchanged(&mut self, now: SystemTime) -> Poll {
        match &self.in_force {
            Some(f) if f.pointer.expires_at.0 <= now => {
                self.status.stale = true;
                Poll::Stale {
                    revision: f.revision(),
                    expired_at: f.pointer.expires_at.0,
                }
            }
            _ => {
                self.status.stale = false;
                Poll::Unchanged
            }
        }
    }

    fn reject(&mut self, revision: Option<u64>, reason: Rejection, etag: Option<String>) -> Poll {
        // The same refused pointer is not fetched again: its ETag makes the next GET a 304.
        if etag.is_some() {
            self.etag = etag;
        }
        let message = reason.to_string();
        self.status.last_error = Some(format!("refused: {message}"));
        self.status.rejected = Some(Refused {
            revision,
            reason: reason.clone(),
            message,
        });
        Poll::Rejected { revision, reason }
    }

    fn unreachable(&mut self, error: FetchError) -> Poll {
        self.status.last_error = Some(error.to_string());
        Poll::Unreachable { error }
    }

    /// One poll: one conditional GET of the pointer, and for a new revision its download,
    /// checks and swap.
    pub async fn poll(&mut self, now: SystemTime) -> Poll {
        self.status.last_check = Some(Time(now));
        let loc = self.options.location.clone();
        let key = loc.pointer_key();
        let mut get = self.s3.get_object().bucket(&loc.bucket).key(&key);
        if let Some(etag) = &self.etag {
            get = get.if_none_match(etag);
        }
        let out = match get.send().await {
            Ok(out) => out,
            Err(e) => {
                let e = S3Error::new("GetObject", &loc.bucket, &key, e);
                if e.status == Some(304) {
                    if self.status.rejected.is_none() {
                        self.status.last_error = None;
                    }
                    return self.unchanged(now);
                }
                if e.is_not_found() && e.code != "NoSuchBucket" {
                    return self.unreachable(FetchError::NoPointer {
                        bucket: loc.bucket,
                        key,
                    });
                }
                return self.unreachable(e.into());
            }
        };
        let etag = out.e_tag().map(str::to_string);
        let object =
            match read_capped(out.body, out.content_length, pointer::MAX_POINTER_BYTES).await {
                Ok(bytes) => bytes,
                Err(CapError::TooLarge) => {
                    let why = format!("over the {}-byte limit", pointer::MAX_POINTER_BYTES);
                    return self.reject(None, Rejection::Malformed { why }, etag);
                }
                Err(CapError::Stream(why)) => {
                    return self.unreachable(FetchError::Download {
                        bucket: loc.bucket,
                        key,
                        why,
                    });
                }
            };
        let signed = match pointer::open(&object, &self.options.trusted, &loc.env) {
            Ok(signed) => signed,
            Err(e) => {
                let reason = match e {
                    PointerError::Malformed(why) => Rejection::Malformed { why },
                    e @ PointerError::BadSignature { .. } => {
                        Rejection::BadSignature { why: e.to_string() }
                    }
                    PointerError::WrongEnvironment { found, .. } => {
                        Rejection::WrongEnvironment { found }
                    }
                };
                return self.reject(None, reason, etag);
            }
        };
        let offered = signed.pointer.revision;
        if let Some(f) = &self.in_force {
            let in_force = f.revision();
            if offered < in_force
                || (offered == in_force && signed.pointer.bundle != f.pointer.bundle)
            {
                return self.reject(
                    Some(offered),
                    Rejection::Rollback { in_force, offered },
                    etag,
                );
            }
            if offered == in_force {
                self.etag = etag;
                self.status.last_error = None;
                return self.unchanged(now);
            }
            if offered - in_force > MAX_REVISION_JUMP {
                let reason = Rejection::Jump {
                    in_force,
                    offered,
                    limit: MAX_REVISION_JUMP,
                };
                return self.reject(Some(offered), reason, etag);
            }
        }
        if signed
            .pointer
            .expires_at
            .0
            .duration_since(now)
            .is_ok_and(|left| left > MAX_EXPIRY_HORIZON)
        {
            let reason = Rejection::TooFarExpiry {
                revision: offered,
                expires_at: signed.pointer.expires_at.to_string(),
                horizon_days: MAX_EXPIRY_HORIZON.as_secs() / 86_400,
            };
            return self.reject(Some(offered), reason, etag);
        }
        if signed.pointer.expires_at.0 <= now {
            let reason = Rejection::Expired {
                revision: offered,
                expires_at: signed.pointer.expires_at.to_string(),
            };
            return self.reject(Some(offered), reason, etag);
        }
        let cap = self.options.max_bundle_bytes;
        if signed.pointer.bundle.size > cap {
            let reason = Rejection::TooLarge {
                size: signed.pointer.bundle.size,
                limit: cap,
            };
            return self.reject(Some(offered), reason, etag);
        }
        match self.take(&signed, etag.clone()).await {
            Ok(Ok(f)) => {
                let dir = f.tree.clone();
                let manifests = f.manifests.clone();
                self.set_in_force(f);
                self.etag = etag;
                self.status.last_error = None;
                self.status.rejected = None;
                self.status.stale = false;
                Poll::Updated {
                    revision: offered,
                    dir,
                    manifests,
                }
            }
            Ok(Err(reason)) => self.reject(Some(offered), reason, etag),
            Err(error) => self.unreachable(error),
        }
    }

    /// Downloads, checks, unpacks, validates and swaps in a verified pointer's bundle.
    async fn take(
        &self,
        signed: &Signed,
        etag: Option<String>,
    ) -> Result<Result<InForce, Rejection>, FetchError> {
        use tokio::io::AsyncWriteExt;
        let loc = &self.options.location;
        let state = self.options.state_dir.clone();
        let state_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| FetchError::State { path, source }
        };
        let lock_path = state.join(LOCK);
        let _lock = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)?;
            file.lock()?;
            Ok(file)
        })
        .await
        .map_err(|e| FetchError::State {
            path: state.clone(),
            source: std::io::Error::other(e.to_string()),
        })?
        .map_err(state_err(&state.join(LOCK)))?;
        // Taken by the other daemon while this one waited: adopted as it is, never swapped
        // again under a pass that may be reading it.
        if let Some(taken) = self.already_taken(signed) {
            return Ok(Ok(taken));
        }
        let want = &signed.pointer.bundle;
        let key = loc.bundle_key(&want.sha256);
        let out = self
            .s3
            .get_object()
            .bucket(&loc.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| S3Error::new("GetObject", &loc.bucket, &key, e))?;
        let cap = want.size.min(self.options.max_bundle_bytes);
        if let Some(len) = out.content_length
            && u64::try_from(len).unwrap_or(u64::MAX) > cap
        {
            return Ok(Err(self.oversized(len as u64, want.size)));
        }
        let download = state.join(DOWNLOAD);
        let mut file = tokio::fs::File::create(&download)
            .await
            .map_err(state_err(&download))?;
        let mut hasher = sha2::Sha256::new();
        let mut size = 0u64;
        let mut body = out.body;
        loop {
            let chunk = match body.try_next().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    return Err(FetchError::Download {
                        bucket: loc.bucket.clone(),
                        key,
                        why: e.to_string(),
                    });
                }
            };
            size += chunk.len() as u64;
            if size > cap {
                drop(file);
                let _ = tokio::fs::remove_file(&download).await;
                return Ok(Err(self.oversized(size, want.size)));
            }
            hasher.update(&chunk);
            if let Err(e) = file.write_all(&chunk).await {
                // A full disk: nothing wrong with the revision. The partial file goes, so the
                // space is back for the next poll, which downloads it again.
                drop(file);
                let _ = tokio::fs::remove_file(&download).await;
                return Err(state_err(&download)(e));
            }
        }
        file.sync_all().await.map_err(state_err(&download))?;
        drop(file);
        let found = hex::encode(hasher.finalize());
        if found != want.sha256 || size != want.size {
            let _ = tokio::fs::remove_file(&download).await;
            return Ok(Err(Rejection::DigestMismatch {
                expected: format!("sha256:{} ({} bytes)", want.sha256, want.size),
                found: format!("sha256:{found} ({size} bytes)"),
            }));
        }
        let staging = state.join(INCOMING);
        let env = loc.env.clone();
        let limits = self.options.limits;
        let object = signed.object.clone();
        let revision = signed.pointer.revision;
        let previous = self.in_force.as_ref().map(|f| f.revision());
        let swapped = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            match std::fs::remove_dir_all(&staging) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            std::fs::create_dir(&staging)?;
            let checked = unpack_and_validate(&download, &staging, &env, &limits);
            let _ = std::fs::remove_file(&download);
            // A write that failed (a full disk) leaves the revision unrefused, to be taken
            // again at the next poll; what was unpacked so far goes, to give the space back.
            let kept = checked.and_then(|checked| {
                let Ok(m) = checked else { return Ok(checked) };
                std::fs::write(staging.join(POINTER_FILE), &object)?;
                std::fs::write(staging.join(ETAG_FILE), etag.unwrap_or_default())?;
                Ok(Ok(m))
            });
            let manifests_in_staging = match kept {
                Ok(Ok(m)) => m,
                Ok(Err(reason)) => {
                    let _ = std::fs::remove_dir_all(&staging);
                    return Ok(Err(reason));
                }
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&staging);
                    return Err(e);
                }
            };
            let rel = manifests_in_staging
                .strip_prefix(staging.join(TREE))
                .map(Path::to_path_buf)
                .unwrap_or_default();
            let revisions = state.join(REVISIONS);
            let target = revisions.join(revision.to_string());
            // A leftover of a crash between unpacking and the flip: never the one in force,
            // which is lower.
            match std::fs::remove_dir_all(&target) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            std::fs::rename(&staging, &target)?;
            // The swap: a new symlink renamed over `current` replaces it in one step.
            let link = state.join(format!("{CURRENT}.new"));
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(Path::new(REVISIONS).join(revision.to_string()), &link)?;
            std::fs::rename(&link, state.join(CURRENT))?;
            std::fs::File::open(&state)?.sync_all()?;
            // Older revisions go; the one just replaced stays, in case a pass still reads it.
            for entry in std::fs::read_dir(&revisions)?.flatten() {
                let name = entry.file_name();
                let keep = name.to_str().and_then(|n| n.parse::<u64>().ok());
                if keep != Some(revision) && keep != previous {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
            let tree = std::fs::canonicalize(target.join(TREE))?;
            Ok(Ok((tree.clone(), tree.join(rel))))
        })
        .await
        .map_err(|e| FetchError::State {
            path: self.options.state_dir.clone(),
            source: std::io::Error::other(e.to_string()),
        })?
        .map_err(state_err(&self.options.state_dir))?;
        Ok(swapped.map(|(tree, manifests)| InForce {
            pointer: signed.pointer.clone(),
            tree,
            manifests,
        }))
    }

    /// The revision in force on disk, when it is exactly `signed` (same pointer bytes).
    fn already_taken(&self, signed: &Signed) -> Option<InForce> {
        let current = self.options.state_dir.join(CURRENT);
        let object = read_small(&current.join(POINTER_FILE), 1 << 20).ok()?;
        if object != signed.object.as_slice() {
            return None;
        }
        let tree = std::fs::canonicalize(current.join(TREE)).ok()?;
        let manifests =
            manifests_of(&tree, &self.options.location.env, &self.options.limits).ok()?;
        Some(InForce {
            pointer: signed.pointer.clone(),
            tree,
            manifests,
        })
    }

    fn oversized(&self, size: u64, declared: u64) -> Rejection {
        if size > self.options.max_bundle_bytes {
            Rejection::TooLarge {
                size,
                limit: self.options.max_bundle_bytes,
            }
        } else {
            Rejection::DigestMismatch {
                expected: format!("{declared} bytes"),
                found: format!("more than {declared} bytes"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_shows_in_the_status_as_its_reason_and_fields() {
        let status = SourceStatus {
            url: "s3://b/stackwarden".to_string(),
            revision: Some(2),
            verified: true,
            rejected: Some(Refused {
                revision: Some(1),
                reason: Rejection::Rollback {
                    in_force: 2,
                    offered: 1,
                },
                message: "rollback refused: revision 1 offered, 2 in force".to_string(),
            }),
            ..SourceStatus::default()
        };
        let json = serde_json::to_value(&status).expect("serializes");
        assert_eq!(
            json["rejected"],
            serde_json::json!({
                "revision": 1,
                "reason": "Rollback",
                "inForce": 2,
                "offered": 1,
                "message": "rollback refused: revision 1 offered, 2 in force"
            })
        );
        assert_eq!(json["revision"], 2);
        assert_eq!(json["lastError"], serde_json::Value::Null);
    }

    /// Compiles only while a poll can move between tokio's worker threads: the loop spawns it.
    #[allow(dead_code)]
    fn a_poll_is_send(remote: &mut super::Remote) {
        fn send<T: Send>(_: &T) {}
        let poll = remote.poll(std::time::SystemTime::now());
        send(&poll);
    }
}
