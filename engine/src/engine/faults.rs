//! Stored bytes this replica could not use (a record that does not decode, a log entry that
//! does not, a block RocksDB reports corrupt): each fault stays with its key, replication
//! goes on for the rest, and the fault is counted, logged and shown in status.

use crate::engine::{lock, Engine};
use crate::error::show;

/// What a replica has found wrong in its own storage since it opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultReport {
    /// Records skipped because their bytes could not be read or decoded.
    pub corrupt_records: u64,
    /// Log entries skipped because their bytes could not be read or decoded.
    pub corrupt_log_entries: u64,
    /// The latest fault, described.
    pub last: Option<String>,
}

/// What kind of stored item a fault is in.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Stored {
    Record,
    LogEntry,
}

impl Engine {
    /// What this replica has found wrong in its own storage since it opened.
    pub fn faults(&self) -> FaultReport {
        lock(&self.inner.faults).clone()
    }

    /// Records a fault in a stored item (`key` names it) and reports it.
    pub(crate) fn note_fault(&self, what: Stored, key: &[u8], detail: &dyn std::fmt::Display) {
        let (label, counter) = match what {
            Stored::Record => ("record", "record"),
            Stored::LogEntry => ("log entry", "log_entry"),
        };
        metrics::counter!("meridian_storage_faults_total", "what" => counter).increment(1);
        let text = format!("corrupt {label} {}: {detail}", show(key));
        tracing::warn!(fault = %text, "skipping a stored item that cannot be used");
        let mut faults = lock(&self.inner.faults);
        match what {
            Stored::Record => faults.corrupt_records += 1,
            Stored::LogEntry => faults.corrupt_log_entries += 1,
        }
        faults.last = Some(text);
    }
}
