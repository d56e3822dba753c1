//! The keys the log still names, for the tombstone pass: a tombstone a log entry above the
//! floors names is kept (shipping that entry reads it). Kept between passes and topped up with
//! the entries appended since the last read, so a pass reads what changed rather than the whole
//! log a down member holds back.
//!
//! An entry that does not decode names keys no one can read back, so it is taken to name every
//! key: no tombstone is reclaimed until the log is truncated past it (every member has applied
//! it). Otherwise a removal whose entry was damaged would lose its tombstone before a member
//! that still holds the removed element received it, and the state that replaces the entry
//! would no longer carry the removal.
//!
//! Exact because an origin's keyed entries are written in sequence order, each above the last
//! one written (own writes commit in number order; a peer's are applied in order from the next
//! expected number; only keyless fillers, which name nothing, go below): reading an origin's
//! log on from the last number read sees every keyed entry written since.

use crate::model::OriginId;
use crate::store::{keys, LogEntry, Store};
use crate::{Result, VersionVector};
use std::collections::HashMap;

/// Past this many keys, entries all at or below the floors are swept out at the next pass.
const SWEEP_AT: usize = 4_096;

/// Keys named by log entries, with the highest number per origin that names each.
#[derive(Debug, Default)]
pub(crate) struct NamedKeys {
    /// Per origin, the last sequence number read.
    read_upto: VersionVector,
    /// Per key, per origin naming it, the highest sequence number of an entry naming it.
    named: HashMap<Vec<u8>, Vec<(OriginId, u64)>>,
    /// Per origin, the highest sequence number of an entry that did not decode (taken to
    /// name every key).
    unreadable: VersionVector,
    /// `named.len()` at the last sweep.
    swept_at: usize,
}

impl NamedKeys {
    /// Reads the entries of `origins` appended since the last read (from the floors on).
    pub(crate) fn top_up(
        &mut self,
        store: &Store,
        origins: impl Iterator<Item = OriginId>,
        floors: &VersionVector,
    ) -> Result<()> {
        for origin in origins {
            let from = self.read_upto.get(origin).max(floors.get(origin)) + 1;
            for item in store.log_entries_of(origin, from) {
                let (k, v) = item?;
                let Some((_, seq)) = keys::parse_log_key(&k) else {
                    continue;
                };
                self.read_upto.add(crate::model::Dot::new(origin, seq));
                // An entry that does not decode is replaced by a state transfer, but which
                // keys it changed is lost: it holds every tombstone until truncated.
                let Ok(entry) = LogEntry::decode(&v) else {
                    self.unreadable.add(crate::model::Dot::new(origin, seq));
                    continue;
                };
                for key in entry.keys.into_iter().chain(entry.left_out) {
                    let by = self.named.entry(key).or_default();
                    match by.iter_mut().find(|(o, _)| *o == origin) {
                        Some((_, s)) => *s = (*s).max(seq),
                        None => by.push((origin, seq)),
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether an entry above `floors` names `key` (or may: one above them does not decode).
    pub(crate) fn names(&self, key: &[u8], floors: &VersionVector) -> bool {
        self.unreadable.iter().any(|(o, s)| s > floors.get(o))
            || self
                .named
                .get(key)
                .is_some_and(|by| by.iter().any(|(o, s)| *s > floors.get(*o)))
    }

    /// Forgets keys only entries at or below `floors` (truncated) named, once the map has
    /// doubled since the last sweep: the cost stays in proportion to what was added.
    pub(crate) fn sweep(&mut self, floors: &VersionVector) {
        if self.named.len() < SWEEP_AT.max(2 * self.swept_at) {
            return;
        }
        self.named.retain(|_, by| {
            by.retain(|(o, s)| *s > floors.get(*o));
            !by.is_empty()
        });
        self.swept_at = self.named.len();
    }
}
