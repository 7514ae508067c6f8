//! Counts of API calls per service and operation, reads and writes apart (`--stats`).

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

/// Whether a call reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CallKind {
    /// Describe, Get, List, inspect.
    Read,
    /// Everything else.
    Write,
}

impl CallKind {
    /// Classifies an API operation by its name: reads start with a read verb.
    pub fn of_operation(operation: &str) -> CallKind {
        const READ_PREFIXES: [&str; 6] = ["Describe", "Get", "List", "Head", "Inspect", "Lookup"];
        if READ_PREFIXES.iter().any(|p| operation.starts_with(p)) {
            CallKind::Read
        } else {
            CallKind::Write
        }
    }
}

/// Thread-safe call counters shared by every provider of one run.
#[derive(Debug, Default)]
pub struct Stats {
    calls: Mutex<BTreeMap<(String, String), (CallKind, u64)>>,
}

impl Stats {
    /// Records one call.
    pub fn record(&self, service: &str, operation: &str, kind: CallKind) {
        // A poisoned lock only means another thread panicked mid-increment; counts stay usable.
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        let entry = calls
            .entry((service.to_string(), operation.to_string()))
            .or_insert((kind, 0));
        entry.1 += 1;
    }

    /// Total calls of one kind.
    pub fn total(&self, kind: CallKind) -> u64 {
        let calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        calls
            .values()
            .filter(|(k, _)| *k == kind)
            .map(|(_, n)| n)
            .sum()
    }

    /// Total calls of one kind to one service.
    pub fn service_total(&self, service: &str, kind: CallKind) -> u64 {
        let calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        calls
            .iter()
            .filter(|((s, _), (k, _))| s == service && *k == kind)
            .map(|(_, (_, n))| n)
            .sum()
    }

    /// Forgets every count (the daemon reports per cycle).
    pub fn reset(&self) {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// A snapshot: (service, operation, kind, count), sorted.
    pub fn snapshot(&self) -> Vec<(String, String, CallKind, u64)> {
        let calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        calls
            .iter()
            .map(|((s, o), (k, n))| (s.clone(), o.clone(), *k, *n))
            .collect()
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows = self.snapshot();
        writeln!(
            f,
            "API calls: {} reads, {} writes",
            self.total(CallKind::Read),
            self.total(CallKind::Write)
        )?;
        for (service, op, kind, n) in rows {
            let kind = match kind {
                CallKind::Read => "read ",
                CallKind::Write => "write",
            };
            writeln!(f, "  {kind} {service:<8} {op:<40} {n}")?;
        }
        Ok(())
    }
}
