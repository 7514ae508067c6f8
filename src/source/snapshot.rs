//! The host's status, readable from anywhere with read access to the bucket: the leader
//! writes its `/status` JSON (which holds no secret) plus the source's revision and the time
//! of writing to `<prefix>/<env>/status.json`; `stackwarden status` reads it and [`judge`]s
//! it against the revision CI waits for.

use super::{CapError, Location, S3Error, read_capped};
use aws_sdk_s3::primitives::ByteStream;
use serde::Serialize;
use serde_json::Value;
use std::time::{Duration, SystemTime};

/// A snapshot is the status JSON: tens of KiB for the shipped stack.
pub const MAX_SNAPSHOT_BYTES: u64 = 4 << 20;
/// A snapshot older than this says the daemon stopped writing (it writes a heartbeat at
/// least every 5 minutes).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(10 * 60);

/// Why a snapshot could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// An S3 call failed.
    #[error(transparent)]
    S3(#[from] S3Error),
    /// None has been written for this environment.
    #[error(
        "no status snapshot at s3://{bucket}/{key}: no daemon has reported for this environment yet"
    )]
    Missing {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
    },
    /// Not JSON, or too large to be a snapshot.
    #[error("the status snapshot at s3://{bucket}/{key} is unreadable: {why}")]
    Unreadable {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// Why.
        why: String,
    },
}

/// The snapshot the leader writes: its status JSON, `source` (the source's status, whose
/// `revision` is the revision the last pass applied) and `writtenAt`.
pub fn compose<S: Serialize>(status: Value, source: Option<&S>, written_at: SystemTime) -> Value {
    let mut value = match status {
        Value::Object(map) => map,
        other => {
            let mut map = serde_json::Map::new();
            map.insert("status".to_string(), other);
            map
        }
    };
    if let Some(source) = source {
        value.insert(
            "source".to_string(),
            serde_json::to_value(source).unwrap_or(Value::Null),
        );
    }
    value.insert(
        "writtenAt".to_string(),
        Value::String(humantime::format_rfc3339_seconds(written_at).to_string()),
    );
    Value::Object(value)
}

/// Writes the snapshot (unconditionally: only the lease holder writes).
pub async fn write_snapshot(
    s3: &aws_sdk_s3::Client,
    location: &Location,
    body: &[u8],
) -> Result<(), SnapshotError> {
    let key = location.status_key();
    s3.put_object()
        .bucket(&location.bucket)
        .key(&key)
        .content_type("application/json")
        .body(ByteStream::from(body.to_vec()))
        .send()
        .await
        .map_err(|e| S3Error::new("PutObject", &location.bucket, &key, e))?;
    Ok(())
}

/// Reads the snapshot.
pub async fn read_snapshot(
    s3: &aws_sdk_s3::Client,
    location: &Location,
) -> Result<Value, SnapshotError> {
    let key = location.status_key();
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
            return Err(if e.is_not_found() && e.code != "NoSuchBucket" {
                SnapshotError::Missing {
                    bucket: location.bucket.clone(),
                    key,
                }
            } else {
                e.into()
            });
        }
    };
    let unreadable = |why: String| SnapshotError::Unreadable {
        bucket: location.bucket.clone(),
        key: key.clone(),
        why,
    };
    let bytes = read_capped(out.body, out.content_length, MAX_SNAPSHOT_BYTES)
        .await
        .map_err(|e| match e {
            CapError::TooLarge => unreadable(format!("over {MAX_SNAPSHOT_BYTES} bytes")),
            CapError::Stream(why) => unreadable(why),
        })?;
    serde_json::from_slice(&bytes).map_err(|e| unreadable(e.to_string()))
}

/// What a snapshot says about the revision CI waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "verdict",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Verdict {
    /// Converged at a revision at least the one waited for. Exit 0.
    Converged {
        /// The revision in force.
        revision: Option<u64>,
    },
    /// The waited-for revision is not in force yet. Exit 2.
    NotYet {
        /// The revision in force.
        revision: Option<u64>,
        /// The one waited for.
        waiting_for: u64,
    },
    /// At the revision, but drift remains (or no pass finished yet). Exit 2.
    Drifted {
        /// The revision in force.
        revision: Option<u64>,
        /// The last pass's result.
        result: String,
    },
    /// The stack failed at the revision, or refused it. Exit 1.
    Failed {
        /// The revision in force.
        revision: Option<u64>,
        /// What failed.
        why: String,
    },
    /// The daemon stopped writing. Exit 1.
    Stale {
        /// Seconds since the snapshot was written.
        age_seconds: u64,
    },
    /// No snapshot, or not one. Exit 1.
    Unreadable {
        /// Why.
        why: String,
    },
}

impl Verdict {
    /// The exit code (docs/contract.md): 0 converged, 2 not yet or drifted, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Verdict::Converged { .. } => 0,
            Verdict::NotYet { .. } | Verdict::Drifted { .. } => 2,
            Verdict::Failed { .. } | Verdict::Stale { .. } | Verdict::Unreadable { .. } => 1,
        }
    }

    /// True when waiting longer cannot change it.
    pub fn is_final(&self) -> bool {
        matches!(self, Verdict::Converged { .. } | Verdict::Failed { .. })
    }
}

/// Judges a snapshot: how old it is, which revision is in force (`source.revision`), whether
/// that revision was refused, and the last pass's result. Pure.
pub fn judge(
    snapshot: &Value,
    wait_revision: Option<u64>,
    now: SystemTime,
    max_age: Duration,
) -> Verdict {
    let Some(written) = snapshot["writtenAt"]
        .as_str()
        .and_then(|t| humantime::parse_rfc3339(t).ok())
    else {
        return Verdict::Unreadable {
            why: "the snapshot has no writtenAt time".to_string(),
        };
    };
    let age = now.duration_since(written).unwrap_or_default();
    if age > max_age {
        return Verdict::Stale {
            age_seconds: age.as_secs(),
        };
    }
    let revision = snapshot["source"]["revision"].as_u64();
    if let Some(wanted) = wait_revision
        && revision.is_none_or(|r| r < wanted)
    {
        let refused = &snapshot["source"]["rejected"];
        if let Some(r) = refused["revision"].as_u64()
            && r >= wanted
        {
            return Verdict::Failed {
                revision,
                why: format!(
                    "revision {r} was refused: {}",
                    refused["message"].as_str().unwrap_or("?")
                ),
            };
        }
        return Verdict::NotYet {
            revision,
            waiting_for: wanted,
        };
    }
    match snapshot["lastPass"]["result"].as_str() {
        Some("converged") => Verdict::Converged { revision },
        Some("failed") => {
            let errors: Vec<&str> = snapshot["errors"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).take(5).collect())
                .unwrap_or_default();
            Verdict::Failed {
                revision,
                why: if errors.is_empty() {
                    "the last pass failed".to_string()
                } else {
                    format!("the last pass failed: {}", errors.join("; "))
                },
            }
        }
        Some(other) => Verdict::Drifted {
            revision,
            result: other.to_string(),
        },
        None => Verdict::Drifted {
            revision,
            result: "no pass finished yet".to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn snapshot(revision: Option<u64>, result: &str, written: u64) -> Value {
        let source = revision.map(|r| json!({ "revision": r }));
        compose(
            json!({ "lastPass": { "result": result }, "errors": ["Container/loki: failed"] }),
            source.as_ref(),
            at(written),
        )
    }

    const NOW: u64 = 1_800_000_000;
    const MAX: Duration = DEFAULT_MAX_AGE;

    #[test]
    fn a_verdict_serializes_as_its_name_and_camel_case_fields() {
        let v = Verdict::NotYet {
            revision: Some(4),
            waiting_for: 5,
        };
        assert_eq!(
            serde_json::to_value(&v).expect("serializes"),
            json!({ "verdict": "notYet", "revision": 4, "waitingFor": 5 })
        );
    }

    #[test]
    fn converged_at_or_past_the_revision_exits_zero() {
        let s = snapshot(Some(5), "converged", NOW - 30);
        assert_eq!(judge(&s, Some(5), at(NOW), MAX).exit_code(), 0);
        assert_eq!(judge(&s, Some(4), at(NOW), MAX).exit_code(), 0);
        assert_eq!(judge(&s, None, at(NOW), MAX).exit_code(), 0);
    }

    #[test]
    fn an_older_revision_or_drift_exits_two() {
        let s = snapshot(Some(4), "converged", NOW - 30);
        assert_eq!(
            judge(&s, Some(5), at(NOW), MAX),
            Verdict::NotYet {
                revision: Some(4),
                waiting_for: 5
            }
        );
        let s = snapshot(Some(5), "drifted", NOW - 30);
        assert_eq!(judge(&s, Some(5), at(NOW), MAX).exit_code(), 2);
        let s = snapshot(None, "converged", NOW - 30);
        assert_eq!(judge(&s, Some(1), at(NOW), MAX).exit_code(), 2);
    }

    #[test]
    fn a_failure_at_the_revision_a_refusal_of_it_or_a_stale_heartbeat_exits_one() {
        let s = snapshot(Some(5), "failed", NOW - 30);
        let v = judge(&s, Some(5), at(NOW), MAX);
        assert!(matches!(&v, Verdict::Failed { why, .. } if why.contains("Container/loki")));
        let s = snapshot(Some(5), "converged", NOW - 11 * 60);
        assert_eq!(
            judge(&s, Some(5), at(NOW), MAX),
            Verdict::Stale { age_seconds: 660 }
        );
        let mut s = snapshot(Some(4), "converged", NOW - 30);
        s["source"]["rejected"] = json!({ "revision": 5, "message": "bad signature: x" });
        assert_eq!(judge(&s, Some(5), at(NOW), MAX).exit_code(), 1);
        assert_eq!(
            judge(&json!({}), None, at(NOW), MAX).exit_code(),
            1,
            "no writtenAt"
        );
    }
}
