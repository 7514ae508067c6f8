//! The pointer `<prefix>/<env>/current`: which bundle is the environment's desired state,
//! at which revision, until when. It is signed over its exact bytes: the object holds those
//! bytes as a string beside the signature, so a verifier checks what the publisher signed,
//! never a re-serialization of it. Pure: no I/O.

use super::signing::{KeyError, SigningKey, TrustedKey};
use serde::{Deserialize, Serialize};
use std::time::SystemTime;

/// The pointer format this build writes and reads.
pub const FORMAT: u32 = 1;
/// A pointer object is a few hundred bytes; one larger is refused unread.
pub const MAX_POINTER_BYTES: u64 = 64 * 1024;

/// A point in time as RFC 3339 (UTC, seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Time(pub SystemTime);

impl std::fmt::Display for Time {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", humantime::format_rfc3339_seconds(self.0))
    }
}

impl Serialize for Time {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_rfc3339(&text)
            .map(Time)
            .map_err(serde::de::Error::custom)
    }
}

/// Who published a revision: the commit and the CI run, when known.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Publisher {
    /// The commit the bundle was built from (`GITHUB_SHA`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The CI run that published it (`GITHUB_RUN_ID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
}

/// The bundle a pointer names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleRef {
    /// Lowercase hex SHA-256 of the bundle's bytes; also its object name.
    pub sha256: String,
    /// Its size in bytes: a reader refuses an oversized bundle before downloading it.
    pub size: u64,
}

/// The signed content of a pointer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pointer {
    /// [`FORMAT`].
    pub format: u32,
    /// The environment it is for: a pointer copied to another environment's key is refused.
    pub env: String,
    /// Grows by one with every publish; a reader refuses one lower than the one in force.
    pub revision: u64,
    /// The bundle.
    pub bundle: BundleRef,
    /// When it was published.
    pub published_at: Time,
    /// After this, readers keep the revision in force but call it stale (a frozen or cut-off
    /// publisher must not keep a host on old manifests unnoticed).
    pub expires_at: Time,
    /// Who published it.
    #[serde(default)]
    pub publisher: Publisher,
}

/// The object stored at the pointer's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    format: u32,
    /// The pointer's JSON text, exactly as signed.
    pointer: String,
    /// The minisign signature over `pointer`'s bytes.
    signature: String,
}

/// Why a pointer object was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PointerError {
    /// Not a pointer object at all (or too large to be one).
    #[error("the pointer object is malformed: {0}")]
    Malformed(String),
    /// The signature does not verify with the trusted key.
    #[error("the pointer's signature does not verify with the trusted key {key}: {why}")]
    BadSignature {
        /// The trusted key's id.
        key: String,
        /// What failed (a wrong key names both key ids).
        why: String,
    },
    /// Signed, but for another environment.
    #[error("the pointer is for environment `{found}`, not `{expected}`")]
    WrongEnvironment {
        /// This reader's environment.
        expected: String,
        /// The pointer's.
        found: String,
    },
}

/// A pointer whose signature verified, with the object's exact bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The content.
    pub pointer: Pointer,
    /// The object as stored (kept, so the revision in force can be re-verified on restart).
    pub object: Vec<u8>,
}

impl Pointer {
    /// Signs the pointer: the object to store at its key.
    pub fn seal(&self, key: &SigningKey) -> Result<Vec<u8>, KeyError> {
        // Serializing our own plain struct cannot fail.
        let text = serde_json::to_string(self).unwrap_or_default();
        let signature = key.sign(text.as_bytes())?;
        let envelope = Envelope {
            format: FORMAT,
            pointer: text,
            signature,
        };
        let mut out = serde_json::to_vec_pretty(&envelope).unwrap_or_default();
        out.push(b'\n');
        Ok(out)
    }
}

fn envelope(object: &[u8]) -> Result<Envelope, PointerError> {
    if object.len() as u64 > MAX_POINTER_BYTES {
        return Err(PointerError::Malformed(format!(
            "{} bytes, over the {MAX_POINTER_BYTES}-byte limit of a pointer",
            object.len()
        )));
    }
    let envelope: Envelope =
        serde_json::from_slice(object).map_err(|e| PointerError::Malformed(e.to_string()))?;
    if envelope.format != FORMAT {
        return Err(PointerError::Malformed(format!(
            "format {} (this build reads {FORMAT}): upgrade stackwarden",
            envelope.format
        )));
    }
    Ok(envelope)
}

/// Verifies a pointer object with `trusted` and checks it is for `env`. Nothing in it is
/// read before its signature verifies.
pub fn open(object: &[u8], trusted: &TrustedKey, env: &str) -> Result<Signed, PointerError> {
    let envelope = envelope(object)?;
    trusted
        .verify(envelope.pointer.as_bytes(), &envelope.signature)
        .map_err(|e| PointerError::BadSignature {
            key: trusted.id(),
            why: e.0,
        })?;
    let pointer: Pointer = serde_json::from_str(&envelope.pointer)
        .map_err(|e| PointerError::Malformed(format!("signed content: {e}")))?;
    if pointer.env != env {
        return Err(PointerError::WrongEnvironment {
            expected: env.to_string(),
            found: pointer.env,
        });
    }
    Ok(Signed {
        pointer,
        object: object.to_vec(),
    })
}

/// Reads a pointer object's content without verifying it: only for the publisher, which
/// needs the revision to advance from and cannot trust or distrust it (it holds no public
/// key it was told to trust; the daemon verifies).
pub fn peek(object: &[u8]) -> Result<Pointer, PointerError> {
    let envelope = envelope(object)?;
    serde_json::from_str(&envelope.pointer).map_err(|e| PointerError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn keys() -> (tempfile::TempDir, SigningKey) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (secret, _) = super::super::signing::generate(dir.path()).expect("keygen");
        let key = SigningKey::from_file(&secret).expect("key");
        (dir, key)
    }

    fn pointer(revision: u64) -> Pointer {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        Pointer {
            format: FORMAT,
            env: "prod".to_string(),
            revision,
            bundle: BundleRef {
                sha256: "ab".repeat(32),
                size: 1234,
            },
            published_at: Time(at),
            expires_at: Time(at + Duration::from_secs(3600)),
            publisher: Publisher {
                commit: Some("c0ffee".to_string()),
                run: Some("42".to_string()),
            },
        }
    }

    #[test]
    fn a_sealed_pointer_opens_with_its_key_and_round_trips() {
        let (_d, key) = keys();
        let object = pointer(7).seal(&key).expect("seal");
        let signed = open(&object, &key.trusted(), "prod").expect("opens");
        assert_eq!(signed.pointer, pointer(7));
        assert_eq!(peek(&object).expect("peek"), pointer(7));
    }

    #[test]
    fn a_pointer_edited_after_signing_is_refused_even_if_it_is_still_valid_json() {
        let (_d, key) = keys();
        let object = pointer(7).seal(&key).expect("seal");
        let text = String::from_utf8(object).expect("utf8");
        let edited = text.replace("\\\"revision\\\":7", "\\\"revision\\\":8");
        assert_ne!(edited, text, "the edit must hit the signed text");
        let err = open(edited.as_bytes(), &key.trusted(), "prod").expect_err("edited");
        assert!(matches!(err, PointerError::BadSignature { .. }), "{err}");
    }

    #[test]
    fn a_pointer_signed_by_another_key_names_the_trusted_one() {
        let (_a, key) = keys();
        let (_b, other) = keys();
        let object = pointer(7).seal(&other).expect("seal");
        let err = open(&object, &key.trusted(), "prod").expect_err("other key");
        assert!(
            matches!(&err, PointerError::BadSignature { key: k, .. } if *k == key.id()),
            "{err}"
        );
    }

    #[test]
    fn a_pointer_for_another_environment_is_refused() {
        let (_d, key) = keys();
        let object = pointer(7).seal(&key).expect("seal");
        let err = open(&object, &key.trusted(), "dev").expect_err("env");
        assert_eq!(
            err,
            PointerError::WrongEnvironment {
                expected: "dev".into(),
                found: "prod".into()
            }
        );
    }

    #[test]
    fn garbage_and_oversized_objects_are_malformed() {
        let (_d, key) = keys();
        assert!(matches!(
            open(b"{\"format\":1}", &key.trusted(), "prod"),
            Err(PointerError::Malformed(_))
        ));
        let huge = vec![b' '; MAX_POINTER_BYTES as usize + 1];
        assert!(matches!(
            open(&huge, &key.trusted(), "prod"),
            Err(PointerError::Malformed(_))
        ));
    }
}
