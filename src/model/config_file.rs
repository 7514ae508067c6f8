//! `ConfigFile`: a file or directory under the host root.

use serde::{Deserialize, Serialize};

/// `kind: ConfigFile`: a file with content, owner and mode, or a data directory.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigFileSpec {
    /// Path relative to the host root (`grafana/grafana.ini`).
    pub path: String,
    /// `file` or `directory`.
    #[serde(rename = "type", default)]
    pub kind: FileType,
    /// Inline content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// A repository file, relative to the manifest that names it; the loader reads it into
    /// `content`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// A Parameter by manifest name whose value is the file's whole content: a secret. It is
    /// read at apply time, written with the file's owner and mode, compared by digest only,
    /// and never shown (a plan says "value differs").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_parameter: Option<String>,
    /// Substitute `${name}` stack values in the content.
    #[serde(default)]
    pub template: bool,
    /// Owner uid.
    #[serde(default)]
    pub owner: u32,
    /// Group gid.
    #[serde(default)]
    pub group: u32,
    /// Octal permission bits as a string (`"0640"`); unset, [`DEFAULT_FILE_MODE`] or
    /// [`DEFAULT_DIRECTORY_MODE`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// A file's mode when none is declared: never world-readable, since the host's files sit in
/// directories that containers mount, and a config file may well hold a credential.
pub const DEFAULT_FILE_MODE: u32 = 0o640;
/// The folder under the host root where stackwarden keeps its own record of what it wrote;
/// no ConfigFile may live in it.
pub const RESERVED_DIR: &str = ".stackwarden";
/// A directory's mode when none is declared: the owner and its group may enter it.
pub const DEFAULT_DIRECTORY_MODE: u32 = 0o750;

impl ConfigFileSpec {
    /// True when the content is a secret (it comes from a Parameter).
    pub fn is_secret(&self) -> bool {
        self.from_parameter.is_some()
    }

    /// The mode as bits, the kind's default when none is declared; `None` when the declared
    /// mode does not parse (validation refuses that).
    pub fn mode_bits(&self) -> Option<u32> {
        match &self.mode {
            Some(mode) => u32::from_str_radix(mode.trim_start_matches("0o"), 8).ok(),
            None => Some(match self.kind {
                FileType::File => DEFAULT_FILE_MODE,
                FileType::Directory => DEFAULT_DIRECTORY_MODE,
            }),
        }
    }

    /// The mode as declared, for messages.
    pub fn mode_text(&self) -> &str {
        self.mode.as_deref().unwrap_or("(default)")
    }
}

/// Whether a ConfigFile is a regular file or a directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileType {
    /// A regular file.
    #[default]
    File,
    /// A directory (content and source are not allowed).
    Directory,
}
