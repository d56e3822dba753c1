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

/// Most damaged records remembered until repaired (beyond, more are reported but not repaired
/// before the next restart finds them again).
const DAMAGED_MAX: usize = 4_096;

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

    /// Records a fault in a stored item (`key` names it) and reports it. A damaged record is
    /// also an exception to I1 from now on (its state no longer reflects what the applied
    /// vector covers: a good copy from a peer is joined whole), and makes the anti-entropy
    /// summary stale, so that the next round with a peer finds the key different and repairs it.
    pub(crate) fn note_fault(&self, what: Stored, key: &[u8], detail: &dyn std::fmt::Display) {
        if let Stored::Record = what {
            if lock(&self.inner.damaged).contains(key) {
                return; // found again before its repair: reported once
            }
            self.repair_later(key);
        }
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

    /// `key`'s stored record is damaged: uncertain from now on, and the summary stale (once
    /// per damage: found again before it is repaired, nothing more is done).
    fn repair_later(&self, key: &[u8]) {
        let inner = &*self.inner;
        {
            let mut damaged = lock(&inner.damaged);
            if damaged.len() >= DAMAGED_MAX || !damaged.insert(key.to_vec()) {
                return;
            }
        }
        let hash = crate::model::digest::key_hash(key);
        let change = lock(&inner.exceptions).absorb(&crate::replication::Exceptions {
            lost: vec![],
            uncertain: vec![hash],
        });
        if !change.is_empty() {
            let mut wb = inner.store.batch();
            self.stage_exceptions(&mut wb, &change);
            // Best effort: kept in memory regardless; found again after a restart otherwise.
            let _ = wb.commit(false);
        }
        inner.digest.mark_stale();
    }

    /// Keys of damaged records not yet replaced.
    pub(crate) fn damaged_keys(&self) -> Vec<Vec<u8>> {
        lock(&self.inner.damaged).iter().cloned().collect()
    }

    /// `key`'s damaged record was replaced by a peer's state.
    pub(crate) fn repaired(&self, key: &[u8]) {
        let mut damaged = lock(&self.inner.damaged);
        if damaged.remove(key) {
            tracing::info!(key = %show(key), "a damaged record was replaced by a peer's state");
            metrics::counter!("meridian_storage_faults_repaired_total").increment(1);
        }
    }
}
