//! The keys of signed delivery: minisign key files in, signatures out. The publisher signs
//! with a secret key (`minisign -G -W`, or `stackwarden keygen`); the daemon verifies with
//! the public key it was given on its own command line, never one read from the bucket.
//! A secret key never reaches a log line or a `Debug` print.

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

/// Key files are a few lines; anything larger is not one.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;
/// The variable holding the password of an encrypted secret key (keys are never prompted
/// for: a publish runs in CI, with no terminal).
pub const KEY_PASSWORD_VAR: &str = "STACKWARDEN_KEY_PASSWORD";
/// The secret key's file name in `keygen`'s directory.
pub const SECRET_KEY_FILE: &str = "stackwarden.key";
/// The public key's file name in `keygen`'s directory.
pub const PUBLIC_KEY_FILE: &str = "stackwarden.pub";

/// Why a key could not be read, written or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read (or is too large to be a key).
    #[error("reading the key file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a minisign key of the expected kind.
    #[error("{path} is not a minisign {kind} key: {why}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// `secret` or `public`.
        kind: &'static str,
        /// What minisign said.
        why: String,
    },
    /// The secret key is encrypted and no password was given.
    #[error(
        "{path} is an encrypted minisign key: set {KEY_PASSWORD_VAR}, or create an unencrypted one (minisign -G -W, or stackwarden keygen)"
    )]
    Encrypted {
        /// The file.
        path: PathBuf,
    },
    /// Signing failed.
    #[error("signing failed: {why}")]
    Sign {
        /// What minisign said.
        why: String,
    },
    /// A key file could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Why a signature did not verify. The message is minisign's (a wrong key names both key ids).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SignatureError(pub String);

/// The secret key a publisher signs with.
pub struct SigningKey {
    sk: minisign::SecretKey,
    pk: minisign::PublicKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // minisign's own Debug prints the secret bytes.
        write!(f, "SigningKey({})", key_id(self.pk.keynum()))
    }
}

fn read_key_file(path: &Path) -> Result<String, KeyError> {
    let read = |source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read)?;
    if !file.metadata().map_err(read)?.is_file() {
        return Err(read(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    let mut text = String::new();
    file.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read)?;
    if text.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(read(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "larger than any key file",
        )));
    }
    Ok(text)
}

/// minisign 0.11's `-G -W` (Debian's package) writes an unencrypted secret key with an
/// all-zero checksum, which the crate refuses as corrupted. Such a key (no KDF, zero checksum)
/// is taken as it is; [`SigningKey::from_file`] then proves it by a signature.
fn unencrypted_without_checksum(text: &str) -> Option<minisign::SecretKey> {
    use base64::Engine;
    let line = text.lines().nth(1)?.trim();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(line)
        .ok()?;
    // sig_alg (2), kdf_alg (2), chk_alg (2), salt (32), opslimit (8), memlimit (8),
    // keynum (8), secret key (64), checksum (32).
    if bytes.len() != 158 || bytes[2..4] != [0, 0] || bytes[126..].iter().any(|b| *b != 0) {
        return None;
    }
    minisign::SecretKey::from_bytes(&bytes).ok()
}

/// A key's id as minisign prints it (16 hex digits): what tells two keys apart in messages.
fn key_id(keynum: &[u8]) -> String {
    let mut bytes = [0u8; 8];
    for (b, k) in bytes.iter_mut().zip(keynum) {
        *b = *k;
    }
    format!("{:016X}", u64::from_le_bytes(bytes))
}

impl SigningKey {
    /// Reads a minisign secret key file; an encrypted one needs [`KEY_PASSWORD_VAR`].
    pub fn from_file(path: &Path) -> Result<SigningKey, KeyError> {
        let text = read_key_file(path)?;
        let parse = |e: minisign::PError| KeyError::Parse {
            path: path.to_path_buf(),
            kind: "secret",
            why: e.to_string(),
        };
        let boxed = minisign::SecretKeyBox::from_string(&text).map_err(parse)?;
        let sk = match boxed.clone().into_unencrypted_secret_key() {
            Ok(sk) => sk,
            Err(_) if let Some(sk) = unencrypted_without_checksum(&text) => sk,
            Err(plain) => match std::env::var(KEY_PASSWORD_VAR) {
                Ok(password) if !password.is_empty() => {
                    minisign::SecretKey::from_box(boxed, Some(password)).map_err(parse)?
                }
                _ if plain.to_string().contains("encrypted") => {
                    return Err(KeyError::Encrypted {
                        path: path.to_path_buf(),
                    });
                }
                _ => return Err(parse(plain)),
            },
        };
        let pk = minisign::PublicKey::from_secret_key(&sk).map_err(parse)?;
        let key = SigningKey { sk, pk };
        // The key must sign what its own public half verifies: a corrupted key (its checksum
        // may be unset, see below) fails here, not on every daemon.
        let probe = key.sign(b"stackwarden key check")?;
        key.trusted()
            .verify(b"stackwarden key check", &probe)
            .map_err(|e| KeyError::Parse {
                path: path.to_path_buf(),
                kind: "secret",
                why: format!("the key does not verify its own signature: {e}"),
            })?;
        Ok(key)
    }

    /// Signs `data`; the result is a minisign signature file's text.
    pub fn sign(&self, data: &[u8]) -> Result<String, KeyError> {
        minisign::sign(
            Some(&self.pk),
            &self.sk,
            Cursor::new(data),
            None,
            Some("stackwarden pointer"),
        )
        .map(|s| s.into_string())
        .map_err(|e| KeyError::Sign { why: e.to_string() })
    }

    /// The matching public key.
    pub fn trusted(&self) -> TrustedKey {
        TrustedKey {
            pk: self.pk.clone(),
        }
    }

    /// The key's id (16 hex digits, as minisign prints it).
    pub fn id(&self) -> String {
        key_id(self.pk.keynum())
    }
}

/// The public key a daemon verifies pointers with.
#[derive(Clone)]
pub struct TrustedKey {
    pk: minisign::PublicKey,
}

impl std::fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TrustedKey({})", self.id())
    }
}

impl TrustedKey {
    /// Reads a minisign public key file (`minisign -G`'s `.pub`, or `stackwarden keygen`'s).
    pub fn from_file(path: &Path) -> Result<TrustedKey, KeyError> {
        let text = read_key_file(path)?;
        TrustedKey::from_text(&text).map_err(|why| KeyError::Parse {
            path: path.to_path_buf(),
            kind: "public",
            why,
        })
    }

    /// A public key from a key file's text, or from its bare base64 line (`RW…`).
    pub fn from_text(text: &str) -> Result<TrustedKey, String> {
        let text = text.trim();
        let pk = if text.lines().count() >= 2 {
            minisign::PublicKeyBox::from_string(text).and_then(|b| b.into_public_key())
        } else {
            minisign::PublicKey::from_base64(text)
        };
        pk.map(|pk| TrustedKey { pk }).map_err(|e| e.to_string())
    }

    /// Checks `signature` (a minisign signature file's text) over exactly `data`.
    pub fn verify(&self, data: &[u8], signature: &str) -> Result<(), SignatureError> {
        let sig = minisign::SignatureBox::from_string(signature)
            .map_err(|e| SignatureError(format!("not a minisign signature: {e}")))?;
        minisign::verify(&self.pk, &sig, Cursor::new(data), true, false, false)
            .map_err(|e| SignatureError(e.to_string()))
    }

    /// The key's id (16 hex digits, as minisign prints it).
    pub fn id(&self) -> String {
        key_id(self.pk.keynum())
    }
}

/// Creates a new unencrypted key pair in `dir`: [`SECRET_KEY_FILE`] (mode 0600) and
/// [`PUBLIC_KEY_FILE`]. Existing files are never replaced: a lost secret key would orphan
/// every daemon trusting the old public one.
pub fn generate(dir: &Path) -> Result<(PathBuf, PathBuf), KeyError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let secret = dir.join(SECRET_KEY_FILE);
    let public = dir.join(PUBLIC_KEY_FILE);
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| KeyError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(write_err(dir))?;
    let pair = minisign::KeyPair::generate_unencrypted_keypair()
        .map_err(|e| KeyError::Sign { why: e.to_string() })?;
    let sk_text = pair
        .sk
        .to_box(Some("stackwarden secret key"))
        .map_err(|e| KeyError::Sign { why: e.to_string() })?
        .into_string();
    let pk_text = pair
        .pk
        .to_box()
        .map_err(|e| KeyError::Sign { why: e.to_string() })?
        .into_string();
    for (path, text, mode) in [(&secret, &sk_text, 0o600), (&public, &pk_text, 0o644)] {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .map_err(write_err(path))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(write_err(path))?;
    }
    Ok((secret, public))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path) -> (SigningKey, TrustedKey) {
        let (secret, public) = generate(dir).expect("keygen");
        (
            SigningKey::from_file(&secret).expect("secret key"),
            TrustedKey::from_file(&public).expect("public key"),
        )
    }

    #[test]
    fn a_signature_verifies_over_exactly_the_signed_bytes_with_the_matching_key() {
        let a = tempfile::tempdir().expect("tempdir");
        let b = tempfile::tempdir().expect("tempdir");
        let (key, trusted) = pair(a.path());
        let (_, other) = pair(b.path());
        let sig = key.sign(b"revision 7").expect("sign");
        assert_eq!(trusted.verify(b"revision 7", &sig), Ok(()));
        assert!(trusted.verify(b"revision 8", &sig).is_err());
        let wrong = other.verify(b"revision 7", &sig).expect_err("another key");
        assert!(wrong.0.contains(&other.id()), "{wrong}");
    }

    #[test]
    fn keygen_never_replaces_an_existing_key_and_keeps_the_secret_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let (secret, _) = generate(dir.path()).expect("keygen");
        let mode = std::fs::metadata(&secret)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(generate(dir.path()), Err(KeyError::Write { .. })));
    }

    #[test]
    fn a_key_pair_made_by_debians_minisign_signs_and_verifies() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minisign");
        let key = SigningKey::from_file(&dir.join("debian-0.11-unencrypted.key")).expect("key");
        let trusted = TrustedKey::from_file(&dir.join("debian-0.11.pub")).expect("public");
        assert_eq!(key.id(), trusted.id());
        let sig = key.sign(b"revision 1").expect("sign");
        assert_eq!(trusted.verify(b"revision 1", &sig), Ok(()));
    }

    #[test]
    fn a_secret_key_that_is_not_one_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.key");
        std::fs::write(&path, "untrusted comment: x\nRWQAAEIy\n").expect("write");
        let err = SigningKey::from_file(&path).expect_err("garbage");
        assert!(err.to_string().contains("k.key"), "{err}");
    }

    #[test]
    fn a_signing_key_prints_its_id_not_its_secret() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (key, _) = pair(dir.path());
        assert_eq!(format!("{key:?}"), format!("SigningKey({})", key.id()));
    }
}
