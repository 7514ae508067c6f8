//! A manifest problem, located: `file:line:col: Kind/name field.path: message`, then a fix.

use crate::model::SourceLocation;
use std::fmt;

/// One problem found while loading or validating manifests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where.
    pub location: SourceLocation,
    /// The resource (`Container/loki`), when the problem belongs to one.
    pub resource: Option<String>,
    /// The field path (`spec.user`), when the problem belongs to a field.
    pub path: Option<String>,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub fix: String,
    /// The policy rule, for policy violations.
    pub rule: Option<&'static str>,
}

impl Diagnostic {
    /// A problem of a whole file, located at its first line.
    pub fn at_file_start(
        file: &std::path::Path,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic {
            location: SourceLocation {
                file: file.to_path_buf(),
                line: 1,
                column: 1,
            },
            resource: None,
            path: None,
            message: message.into(),
            fix: fix.into(),
            rule: None,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.location)?;
        let subject: Vec<&str> = [self.resource.as_deref(), self.path.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        if subject.is_empty() {
            write!(f, " {}", self.message)?;
        } else {
            write!(f, " {}: {}", subject.join(" "), self.message)?;
        }
        if let Some(rule) = self.rule {
            write!(f, " [policy: {rule}]")?;
        }
        write!(f, "\n    fix: {}", self.fix)
    }
}

/// Every problem found in one load, in file and line order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Adds one.
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    /// True when nothing was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sorts by location so output is stable and reads top to bottom.
    pub fn sort(&mut self) {
        self.0
            .sort_by(|a, b| a.location.cmp(&b.location).then(a.message.cmp(&b.message)));
        self.0.dedup();
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        let n = self.0.len();
        write!(
            f,
            "{n} problem{} found; the manifests were not accepted",
            if n == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for Diagnostics {}
