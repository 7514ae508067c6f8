//! The one way a secret is read, wherever it is needed (validate's weak-secret rule, the
//! Parameter's value, a secret ConfigFile, the daemon's token): from an environment variable
//! or a file, the file bounded and regular like every file a load reads, one line ending
//! trimmed, and an empty value never taken for a value.

use super::files::{FileRole, ReadProblem, Reader};
use crate::model::SecretSource;
use std::path::Path;

/// Why a secret has no value. Never carries the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretProblem {
    /// The variable is not set (or set to nothing).
    #[error("environment variable {0} is unset")]
    Unset(String),
    /// The file or variable holds nothing but line endings or spaces (names which).
    #[error("{0} is empty")]
    Empty(String),
    /// The file could not be read within the bounds.
    #[error("secret file {path}: {problem}")]
    Unreadable {
        /// The file.
        path: String,
        /// Why.
        #[source]
        problem: ReadProblem,
    },
    /// The source names neither.
    #[error("the value source names neither an environment variable nor a file")]
    NoSource,
}

/// Reads a secret file: at most 64 KiB, a regular file, UTF-8; the trailing line ending
/// trimmed (editors add one); nothing but whitespace is empty.
pub fn read_file(path: &Path) -> Result<String, SecretProblem> {
    let shown = path.display().to_string();
    let text = Reader::default()
        .read(path, FileRole::Secret)
        .map_err(|problem| SecretProblem::Unreadable {
            path: shown.clone(),
            problem,
        })?;
    let value = text.trim_end_matches(['\n', '\r']);
    if value.trim().is_empty() {
        return Err(SecretProblem::Empty(format!("secret file {shown}")));
    }
    Ok(value.to_string())
}

/// Reads a secret from its declared source; a named variable wins over a file.
pub fn read(source: &SecretSource) -> Result<String, SecretProblem> {
    if let Some(var) = &source.env {
        return match std::env::var(var) {
            Ok(v) if v.is_empty() => Err(SecretProblem::Unset(var.clone())),
            Ok(v) if v.trim().is_empty() => {
                Err(SecretProblem::Empty(format!("environment variable {var}")))
            }
            Ok(v) => Ok(v),
            Err(_) => Err(SecretProblem::Unset(var.clone())),
        };
    }
    match &source.file {
        Some(path) => read_file(Path::new(path)),
        None => Err(SecretProblem::NoSource),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(content: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        std::fs::write(&path, content).expect("write");
        (dir, path)
    }

    #[test]
    fn one_trailing_line_ending_is_trimmed_and_the_rest_kept() {
        let (_d, p) = file(b"  s3cret value \r\n");
        assert_eq!(read_file(&p).expect("read"), "  s3cret value ");
    }

    #[test]
    fn an_empty_or_blank_file_is_no_value() {
        for content in [&b""[..], b"\n", b"  \r\n"] {
            let (_d, p) = file(content);
            assert!(
                matches!(read_file(&p), Err(SecretProblem::Empty(_))),
                "{content:?}"
            );
        }
    }

    #[test]
    fn a_large_file_or_a_device_is_refused_without_reading_it_whole() {
        let (_d, p) = file(&vec![b'x'; 65 << 10]);
        let err = read_file(&p).expect_err("too large");
        assert!(err.to_string().contains("limit"), "{err}");
        let err = read_file(Path::new("/dev/zero")).expect_err("device");
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn a_problem_never_carries_the_value() {
        let (_d, p) = file(b"\xff\xfe not utf-8 s3cret");
        let err = read_file(&p).expect_err("not utf-8");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
}
