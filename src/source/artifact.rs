//! What a new instance starts from: the stackwarden image (a `docker save` tarball) or its
//! static binary, put in the bucket under `<prefix>/artifacts/<sha256>`, named by its digest.
//! The bucket holds only the bytes. The digest to trust is pinned in the manifests (the
//! Instance's `bootstrap.sha256`), and the user data checks it before it runs anything, so a
//! replaced object is refused on the host, never trusted.

use super::{Location, S3Error};
use aws_sdk_s3::primitives::ByteStream;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// An artifact uploaded (or found already there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    /// Its SHA-256, hex.
    pub sha256: String,
    /// Its size.
    pub bytes: u64,
    /// The object's key.
    pub key: String,
    /// False when an object of that name and size was already there.
    pub uploaded: bool,
}

/// Why an artifact was not uploaded.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The file cannot be read.
    #[error("reading the artifact {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An S3 call failed.
    #[error(transparent)]
    S3(#[from] S3Error),
}

/// The SHA-256 of a file, read in blocks (an image tarball is hundreds of megabytes).
pub fn sha256_of(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), total))
}

/// Puts `path` at `<prefix>/artifacts/<sha256>` with `If-None-Match: *`. One already there of
/// the same size is kept (the host checks the digest of what it downloads anyway); one of
/// another size was replaced by someone, and is put right. `deadlines` gives the put's
/// timeouts for its size: the every-call ones would cut off any large image.
pub async fn upload(
    s3: &aws_sdk_s3::Client,
    location: &Location,
    path: &Path,
    deadlines: impl Fn(u64) -> aws_sdk_s3::config::timeout::TimeoutConfig,
) -> Result<Uploaded, ArtifactError> {
    let (sha256, bytes) = sha256_of(path).map_err(|source| ArtifactError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let key = location.artifact_key(&sha256);
    let body = |path: &Path| {
        let path = path.to_path_buf();
        async move {
            ByteStream::from_path(&path)
                .await
                .map_err(|e| ArtifactError::Read {
                    path,
                    source: std::io::Error::other(e),
                })
        }
    };
    let slow = || aws_sdk_s3::config::Builder::default().timeout_config(deadlines(bytes));
    let put = s3
        .put_object()
        .bucket(&location.bucket)
        .key(&key)
        .if_none_match("*")
        .body(body(path).await?)
        .customize()
        .config_override(slow())
        .send()
        .await;
    let uploaded = match put {
        Ok(_) => true,
        Err(e) => {
            let e = S3Error::new("PutObject", &location.bucket, &key, e);
            if !e.is_precondition_failed() {
                return Err(e.into());
            }
            let there = s3
                .head_object()
                .bucket(&location.bucket)
                .key(&key)
                .send()
                .await
                .map_err(|e| S3Error::new("HeadObject", &location.bucket, &key, e))?;
            let same = there.content_length().and_then(|l| u64::try_from(l).ok()) == Some(bytes);
            if !same {
                s3.put_object()
                    .bucket(&location.bucket)
                    .key(&key)
                    .body(body(path).await?)
                    .customize()
                    .config_override(slow())
                    .send()
                    .await
                    .map_err(|e| S3Error::new("PutObject", &location.bucket, &key, e))?;
            }
            !same
        }
    };
    Ok(Uploaded {
        sha256,
        bytes,
        key,
        uploaded,
    })
}
