//! Publishing: the bundle goes to `<prefix>/bundles/<sha256>` (`If-None-Match: *`: bundles
//! are immutable and named by their digest; one already there is read back and put right if
//! its bytes differ), then
//! the pointer advances by one revision with `If-Match` on the ETag it was read with
//! (`If-None-Match: *` for the first). Of two publishes racing, S3 lets exactly one pointer
//! write through; the other fails naming the winner's revision. It does not retry on top:
//! the winner may carry a newer commit, and silently putting an older one over it would lose
//! that update.

use super::bundle::Bundle;
use super::pointer::{self, BundleRef, Pointer, Publisher, Time};
use super::signing::{KeyError, SigningKey};
use super::{CapError, Location, S3Error, read_capped};
use aws_sdk_s3::primitives::ByteStream;
use std::time::{Duration, SystemTime};

/// What to publish.
#[derive(Debug)]
pub struct Request<'a> {
    /// Where.
    pub location: &'a Location,
    /// The bundle.
    pub bundle: &'a Bundle,
    /// The signing key.
    pub key: &'a SigningKey,
    /// Who publishes.
    pub publisher: Publisher,
    /// How long the pointer stays fresh.
    pub expires_in: Duration,
    /// Now.
    pub now: SystemTime,
    /// Publish on the revision the hosts report in force (the status snapshot) instead of a
    /// pointer that is missing or does not verify (`publish --recover`).
    pub recover: bool,
}

/// A publish that went through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The new revision.
    pub revision: u64,
    /// The revision it replaced.
    pub previous: Option<u64>,
    /// The pointer written.
    pub pointer: Pointer,
    /// False when the bundle was already in the bucket.
    pub uploaded: bool,
}

/// Why nothing was published (or only the bundle, which is harmless: nothing points at it).
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// An S3 call failed.
    #[error(transparent)]
    S3(#[from] S3Error),
    /// Another publish advanced the pointer between our read and our write.
    #[error(
        "another publish advanced {key} to revision {winner}{by} first; nothing of this publish points anywhere (publish again to go on top of it)"
    )]
    Lost {
        /// The pointer's key.
        key: String,
        /// The winner's revision (0 when it could not be read back).
        winner: u64,
        /// ` (commit …, run …)` when the winner said.
        by: String,
    },
    /// The pointer in the bucket cannot be read as one: publishing over it would reset the
    /// revision, so a person must look.
    #[error(
        "the pointer at {key} is not one this build reads ({why}); inspect it, and delete it only if it is not a real pointer"
    )]
    Unreadable {
        /// Key.
        key: String,
        /// Why.
        why: String,
    },
    /// The pointer in the bucket does not verify with the publishing key: its revision number
    /// is someone else's word (a forgery, a replay under another environment, or an earlier
    /// key's), and building on it could make every host refuse what follows.
    #[error(
        "the pointer at {key} does not verify with this key ({why}); nothing was published. If it is not yours (a forgery, or an earlier key's), run `stackwarden publish --recover`: it publishes on the revision the hosts report in force"
    )]
    Untrusted {
        /// Key.
        key: String,
        /// Why.
        why: String,
    },
    /// The pointer is gone while a host reports a revision in force: a revision 1 would be
    /// refused everywhere as a rollback.
    #[error(
        "the pointer at {key} is missing, but the hosts report revision {known} in force; nothing was published. Run `stackwarden publish --recover` to publish revision {}",
        known + 1
    )]
    Missing {
        /// Key.
        key: String,
        /// The revision the status snapshot reports in force.
        known: u64,
    },
    /// The pointer verifies but is behind the revision the hosts report in force: an older
    /// pointer put back (a replay).
    #[error(
        "the pointer at {key} is at revision {revision}, behind the revision {known} the hosts report in force (an older pointer put back?); nothing was published. Run `stackwarden publish --recover` to publish revision {}",
        known + 1
    )]
    Behind {
        /// Key.
        key: String,
        /// The pointer's revision.
        revision: u64,
        /// The revision the status snapshot reports in force.
        known: u64,
    },
    /// The revision number would overflow.
    #[error("the pointer is at the last revision number there is")]
    Exhausted,
    /// Signing failed.
    #[error(transparent)]
    Sign(#[from] KeyError),
}

/// The current pointer and its ETag, if there is one.
async fn current(
    s3: &aws_sdk_s3::Client,
    location: &Location,
) -> Result<Option<(Pointer, String, Vec<u8>)>, PublishError> {
    let key = location.pointer_key();
    let out = match s3
        .get_object()
        .bucket(&location.bucket)
        .key(&key)
        .send()
        .await
    {
        Ok(out) => out,
        Err(e) => {
            let e = S3Error::new("GetObject", &location.bucket, &key, e);
            return if e.is_not_found() {
                Ok(None)
            } else {
                Err(e.into())
            };
        }
    };
    let etag = out.e_tag().unwrap_or_default().to_string();
    let bytes = read_capped(out.body, out.content_length, pointer::MAX_POINTER_BYTES)
        .await
        .map_err(|e| PublishError::Unreadable {
            key: key.clone(),
            why: match e {
                CapError::TooLarge => "larger than any pointer".to_string(),
                CapError::Stream(why) => why,
            },
        })?;
    let pointer = pointer::peek(&bytes).map_err(|e| PublishError::Unreadable {
        key: key.clone(),
        why: e.to_string(),
    })?;
    Ok(Some((pointer, etag, bytes.to_vec())))
}

/// The revision the environment's hosts report in force, from their status snapshot; `None`
/// when there is none (nothing was ever taken) or it cannot be read.
async fn reported_in_force(s3: &aws_sdk_s3::Client, location: &Location) -> Option<u64> {
    let snapshot = super::snapshot::read_snapshot(s3, location).await.ok()?;
    snapshot["source"]["revision"].as_u64()
}

/// True when the object at `key` has exactly the bundle's bytes.
async fn holds(
    s3: &aws_sdk_s3::Client,
    location: &Location,
    key: &str,
    bundle: &Bundle,
) -> Result<bool, PublishError> {
    let out = s3
        .get_object()
        .bucket(&location.bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| S3Error::new("GetObject", &location.bucket, key, e))?;
    // One byte more than the bundle tells a longer object apart without reading all of it.
    match read_capped(out.body, out.content_length, bundle.bytes.len() as u64 + 1).await {
        Ok(bytes) => Ok(bytes == bundle.bytes),
        Err(CapError::TooLarge) => Ok(false),
        Err(CapError::Stream(why)) => Err(PublishError::Unreadable {
            key: key.to_string(),
            why,
        }),
    }
}

/// Uploads the bundle and advances the pointer by one revision.
pub async fn publish(
    s3: &aws_sdk_s3::Client,
    request: Request<'_>,
) -> Result<Published, PublishError> {
    let location = request.location;
    let bundle_key = location.bundle_key(&request.bundle.sha256);
    let uploaded = match s3
        .put_object()
        .bucket(&location.bucket)
        .key(&bundle_key)
        .if_none_match("*")
        .content_type("application/gzip")
        .body(ByteStream::from(request.bundle.bytes.clone()))
        .send()
        .await
    {
        Ok(_) => true,
        Err(e) => {
            let e = S3Error::new("PutObject", &location.bucket, &bundle_key, e);
            if !e.is_precondition_failed() {
                return Err(e.into());
            }
            // Named by its digest, the object there should be this bundle; if someone
            // replaced it, every host would refuse it (digest mismatch) for as long as it
            // stays, so it is checked and put back.
            if !holds(s3, location, &bundle_key, request.bundle).await? {
                s3.put_object()
                    .bucket(&location.bucket)
                    .key(&bundle_key)
                    .content_type("application/gzip")
                    .body(ByteStream::from(request.bundle.bytes.clone()))
                    .send()
                    .await
                    .map_err(|e| S3Error::new("PutObject", &location.bucket, &bundle_key, e))?;
                tracing::warn!(key = %bundle_key, "the bundle in the bucket had other bytes than its name says; replaced");
                true
            } else {
                false
            }
        }
    };
    let previous = current(s3, location).await?;
    let key = location.pointer_key();
    // The next number comes from a pointer this key verifies, never from whatever object
    // lies at the pointer's key.
    let verified = previous.as_ref().map(|(_, _, bytes)| {
        pointer::open(bytes, &request.key.trusted(), &location.env).map(|s| s.pointer.revision)
    });
    let base = match verified {
        Some(Ok(revision)) if !request.recover => match reported_in_force(s3, location).await {
            // A replayed older pointer, signed by this very key: building on it would give a
            // number the hosts refuse as a rollback.
            Some(known) if known > revision => {
                return Err(PublishError::Behind {
                    key,
                    revision,
                    known,
                });
            }
            _ => revision,
        },
        Some(Err(e)) if !request.recover => {
            return Err(PublishError::Untrusted {
                key,
                why: e.to_string(),
            });
        }
        None if !request.recover => match reported_in_force(s3, location).await {
            // A deleted pointer: hosts are at a revision; starting again at 1 would be
            // refused by every one of them as a rollback.
            Some(known) if known > 0 => return Err(PublishError::Missing { key, known }),
            _ => 0,
        },
        // Recovery: on the revision the hosts report, and never below a pointer this key
        // signed.
        verified => {
            let signed = verified.and_then(Result::ok).unwrap_or(0);
            reported_in_force(s3, location)
                .await
                .unwrap_or(0)
                .max(signed)
        }
    };
    let revision = base.checked_add(1).ok_or(PublishError::Exhausted)?;
    let pointer = Pointer {
        format: pointer::FORMAT,
        env: location.env.clone(),
        revision,
        bundle: BundleRef {
            sha256: request.bundle.sha256.clone(),
            size: request.bundle.bytes.len() as u64,
        },
        published_at: Time(request.now),
        expires_at: Time(request.now + request.expires_in),
        publisher: request.publisher.clone(),
    };
    let object = pointer.seal(request.key)?;
    let put = s3
        .put_object()
        .bucket(&location.bucket)
        .key(&key)
        .content_type("application/json")
        .body(ByteStream::from(object));
    let put = match &previous {
        Some((_, etag, _)) => put.if_match(etag),
        None => put.if_none_match("*"),
    };
    match put.send().await {
        Ok(_) => Ok(Published {
            revision,
            previous: previous.map(|(p, _, _)| p.revision),
            pointer,
            uploaded,
        }),
        Err(e) => {
            let e = S3Error::new("PutObject", &location.bucket, &key, e);
            if !e.is_precondition_failed() {
                return Err(e.into());
            }
            let winner = current(s3, location).await.ok().flatten();
            let (winner, by) = match winner {
                Some((p, _, _)) => {
                    let by = match (&p.publisher.commit, &p.publisher.run) {
                        (Some(c), Some(r)) => format!(" (commit {c}, run {r})"),
                        (Some(c), None) => format!(" (commit {c})"),
                        (None, Some(r)) => format!(" (run {r})"),
                        (None, None) => String::new(),
                    };
                    (p.revision, by)
                }
                None => (0, String::new()),
            };
            Err(PublishError::Lost { key, winner, by })
        }
    }
}
