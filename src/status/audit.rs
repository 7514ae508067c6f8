//! The audit trail: every write the daemon made, bounded in memory (the newest
//! [`AUDIT_CAPACITY`] entries) and also written as one structured log line each.

use super::{Timestamp, Trigger};
use crate::plan::{Change, FieldChange};
use crate::provider::StepOutcome;
use serde::Serialize;
use std::collections::VecDeque;
use std::time::SystemTime;

/// Entries kept in memory; older ones survive only in the log.
pub const AUDIT_CAPACITY: usize = 200;

/// One write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// When it finished.
    pub at: Timestamp,
    /// `Kind/name`.
    pub resource: String,
    /// create, update, replace, delete, adopt.
    pub action: String,
    /// Fields before → after; secrets only as "changed".
    pub fields: Vec<AuditField>,
    /// What woke the pass.
    pub trigger: Trigger,
    /// `drift`, `manifest` or `missing`.
    pub cause: String,
    /// `ok`, or the error for people.
    pub result: String,
}

/// One field of an audited write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditField {
    /// Field path.
    pub path: String,
    /// Value before; absent for secrets and additions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    /// Value after; absent for secrets and removals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// True for secrets: the values are never recorded, only that they changed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub changed_secret: bool,
}

impl From<&FieldChange> for AuditField {
    fn from(f: &FieldChange) -> Self {
        if f.sensitive {
            return AuditField {
                path: f.path.clone(),
                before: None,
                after: None,
                changed_secret: true,
            };
        }
        AuditField {
            path: f.path.clone(),
            before: f.old.clone(),
            after: f.new.clone(),
            changed_secret: false,
        }
    }
}

impl AuditEntry {
    /// The entry for one applied step.
    pub fn of(outcome: &StepOutcome, trigger: Trigger, at: SystemTime) -> AuditEntry {
        let change: &Change = &outcome.change;
        AuditEntry {
            at: Timestamp(at),
            resource: change.id.to_string(),
            action: change.action.verb().to_string(),
            fields: change.fields.iter().map(AuditField::from).collect(),
            trigger,
            cause: change.cause.as_str().to_string(),
            result: match &outcome.error {
                None => "ok".to_string(),
                Some(e) => e.clone(),
            },
        }
    }
}

/// The bounded trail.
#[derive(Debug, Clone, Default)]
pub struct AuditLog {
    entries: VecDeque<AuditEntry>,
}

impl AuditLog {
    /// Appends an entry (dropping the oldest beyond [`AUDIT_CAPACITY`]) and logs it.
    pub fn push(&mut self, entry: AuditEntry) {
        tracing::info!(
            target: "stackwarden::audit",
            resource = %entry.resource,
            action = %entry.action,
            cause = %entry.cause,
            trigger = entry.trigger.as_str(),
            result = %entry.result,
            fields = %serde_json::to_string(&entry.fields).unwrap_or_default(),
            "write"
        );
        if self.entries.len() == AUDIT_CAPACITY {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
    }

    /// Oldest first.
    pub fn entries(&self) -> Vec<AuditEntry> {
        self.entries.iter().cloned().collect()
    }
}
