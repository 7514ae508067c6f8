//! One ConfigFile against what is on disk: content (by digest), owner, mode, and the kind
//! of thing at the path (a symlink where a file or directory belongs is drift, replaced by
//! the real thing, never followed). A secret file's content is compared by digest only and
//! shown as "value differs". Pure.

use super::super::files::FileState;
use crate::model::{ConfigFileSpec, FileType};
use crate::plan::FieldChange;

/// How one ConfigFile differs from disk.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FileDrift {
    /// Nothing (or the wrong kind of thing) is there: write or create it whole.
    pub missing: bool,
    /// The content differs (files only).
    pub content: bool,
    /// Owner or group differs.
    pub owner: bool,
    /// Mode differs.
    pub mode: bool,
    /// What the plan shows.
    pub fields: Vec<FieldChange>,
}

impl FileDrift {
    /// True when nothing differs.
    pub fn is_clean(&self) -> bool {
        !(self.missing || self.content || self.owner || self.mode)
    }
}

fn short(sha: &str) -> String {
    format!("sha256:{}", sha.get(..12).unwrap_or(sha))
}

/// Compares a ConfigFile with what is on disk. `want_sha256` is the digest the content must
/// have; `None` when it cannot be known (an unreadable secret): the content is then left
/// unverified rather than reported different.
pub fn diff(spec: &ConfigFileSpec, live: &FileState, want_sha256: Option<&str>) -> FileDrift {
    let want_mode = spec.mode_bits().unwrap_or(crate::model::DEFAULT_FILE_MODE);
    let mut drift = FileDrift::default();
    let (uid, gid, mode) = match (spec.kind, live) {
        (
            FileType::File,
            FileState::File {
                sha256,
                uid,
                gid,
                mode,
            },
        ) => {
            if let Some(want) = want_sha256
                && sha256 != want
            {
                drift.content = true;
                drift.fields.push(if spec.is_secret() {
                    FieldChange::secret("spec.content")
                } else {
                    FieldChange::changed("spec.content", short(sha256), short(want))
                });
            }
            (*uid, *gid, *mode)
        }
        (FileType::Directory, FileState::Directory { uid, gid, mode }) => (*uid, *gid, *mode),
        (_, FileState::Symlink { target }) => {
            drift.missing = true;
            drift.fields.push(FieldChange::changed(
                "spec.type",
                format!("symlink to {target}"),
                kind_name(spec.kind),
            ));
            return drift;
        }
        _ => {
            drift.missing = true;
            return drift;
        }
    };
    if (uid, gid) != (spec.owner, spec.group) {
        drift.owner = true;
        drift.fields.push(FieldChange::changed(
            "spec.owner",
            format!("{uid}:{gid}"),
            format!("{}:{}", spec.owner, spec.group),
        ));
    }
    if mode != want_mode {
        drift.mode = true;
        drift.fields.push(FieldChange::changed(
            "spec.mode",
            format!("{mode:04o}"),
            format!("{want_mode:04o}"),
        ));
    }
    drift
}

fn kind_name(kind: FileType) -> &'static str {
    match kind {
        FileType::File => "file",
        FileType::Directory => "directory",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::host::hash::sha256_hex;

    fn spec(content: &str) -> ConfigFileSpec {
        ConfigFileSpec {
            path: "loki/config.yaml".into(),
            kind: FileType::File,
            content: Some(content.into()),
            source: None,
            from_parameter: None,
            template: false,
            owner: 10001,
            group: 10001,
            mode: Some("0640".into()),
        }
    }

    fn file(content: &[u8], uid: u32, mode: u32) -> FileState {
        FileState::File {
            sha256: sha256_hex(content),
            uid,
            gid: uid,
            mode,
        }
    }

    #[test]
    fn identical_file_has_no_drift() {
        let want = sha256_hex(b"x");
        assert!(diff(&spec("x"), &file(b"x", 10001, 0o640), Some(&want)).is_clean());
    }

    #[test]
    fn content_owner_and_mode_are_each_reported() {
        let want = sha256_hex(b"x");
        let d = diff(&spec("x"), &file(b"edited", 0, 0o666), Some(&want));
        assert!(d.content && d.owner && d.mode && !d.missing);
        let paths: Vec<_> = d.fields.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["spec.content", "spec.owner", "spec.mode"]);
        assert_eq!(d.fields[2].old.as_deref(), Some("0666"));
    }

    #[test]
    fn a_directory_where_a_file_belongs_counts_as_missing() {
        let live = FileState::Directory {
            uid: 10001,
            gid: 10001,
            mode: 0o640,
        };
        assert!(diff(&spec("x"), &live, None).missing);
    }

    #[test]
    fn a_symlink_where_a_data_directory_belongs_is_drift() {
        let mut dir = spec("");
        dir.kind = FileType::Directory;
        dir.content = None;
        let live = FileState::Symlink {
            target: "/etc".into(),
        };
        let d = diff(&dir, &live, None);
        assert!(d.missing, "{d:?}");
        assert_eq!(d.fields[0].old.as_deref(), Some("symlink to /etc"));
    }

    #[test]
    fn a_secret_file_differs_by_digest_and_shows_no_value() {
        let mut secret = spec("");
        secret.content = None;
        secret.from_parameter = Some("admin-password".into());
        let want = sha256_hex(b"the-new-password");
        let d = diff(
            &secret,
            &file(b"the-old-password", 10001, 0o640),
            Some(&want),
        );
        assert!(d.content);
        let f = &d.fields[0];
        assert!(f.sensitive && f.old.is_none() && f.new.is_none(), "{f:?}");
        // Unreadable secret: the content cannot be judged, so it is not reported.
        assert!(diff(&secret, &file(b"x", 10001, 0o640), None).is_clean());
    }
}
