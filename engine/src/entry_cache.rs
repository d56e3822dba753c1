//! Recently committed log entries with the record states they wrote, kept in memory (up to a
//! byte budget, oldest dropped first) so that replication ships fresh entries without reading
//! them back from RocksDB. A miss falls back to the log on disk.
//!
//! A cached state is the record as that commit left it, not necessarily its current state; both
//! contain the entry's write, and a receiver joins either.

use crate::model::ReplicaId;
use crate::replication::RecordState;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Bookkeeping bytes counted per cached entry and per record, besides keys and states.
const ENTRY_OVERHEAD: usize = 64;
const RECORD_OVERHEAD: usize = 48;

/// The records of one cached entry, shared with readers.
pub(crate) type CachedEntry = Arc<[RecordState]>;

/// Byte-bounded first-in-first-out cache of log entries, by (origin, sequence).
#[derive(Debug)]
pub(crate) struct EntryCache {
    budget: usize,
    bytes: usize,
    entries: HashMap<(ReplicaId, u64), (CachedEntry, usize)>,
    order: VecDeque<(ReplicaId, u64)>,
}

impl EntryCache {
    /// An empty cache holding at most about `budget` bytes (0 disables it).
    pub(crate) fn new(budget: usize) -> EntryCache {
        EntryCache {
            budget,
            bytes: 0,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Keeps `records` as the states of `origin`'s entry `seq`, dropping the oldest entries
    /// beyond the budget. An entry larger than the whole budget is not kept.
    pub(crate) fn insert(&mut self, origin: ReplicaId, seq: u64, records: Vec<RecordState>) {
        let size = ENTRY_OVERHEAD
            + records
                .iter()
                .map(|(k, v)| k.len() + v.len() + RECORD_OVERHEAD)
                .sum::<usize>();
        if size > self.budget {
            return;
        }
        if let Some((_, old)) = self.entries.insert((origin, seq), (records.into(), size)) {
            self.bytes -= old;
        } else {
            self.order.push_back((origin, seq));
        }
        self.bytes += size;
        while self.bytes > self.budget {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some((_, size)) = self.entries.remove(&oldest) {
                self.bytes -= size;
            }
        }
    }

    /// The cached states of `origin`'s entry `seq`.
    pub(crate) fn get(&self, origin: ReplicaId, seq: u64) -> Option<CachedEntry> {
        self.entries.get(&(origin, seq)).map(|(e, _)| e.clone())
    }

    /// Bytes currently accounted.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: usize) -> Vec<RecordState> {
        (0..n).map(|i| (vec![i as u8; 8], vec![0; 100])).collect()
    }

    #[test]
    fn stays_within_budget_dropping_oldest_first() {
        let mut cache = EntryCache::new(10_000);
        let r = ReplicaId(1);
        for seq in 1..=100 {
            cache.insert(r, seq, entry(5));
            assert!(cache.bytes() <= 10_000);
        }
        assert!(cache.get(r, 1).is_none(), "the oldest entry was dropped");
        let newest = cache.get(r, 100).expect("the newest entry is kept");
        assert_eq!(newest.len(), 5);
        // Replacing an entry does not count it twice.
        let before = cache.bytes();
        cache.insert(r, 100, entry(5));
        assert_eq!(cache.bytes(), before);
    }

    #[test]
    fn an_entry_larger_than_the_budget_is_not_kept() {
        let mut cache = EntryCache::new(500);
        cache.insert(ReplicaId(1), 1, entry(10));
        assert!(cache.get(ReplicaId(1), 1).is_none());
        assert_eq!(cache.bytes(), 0);
        let mut off = EntryCache::new(0);
        off.insert(ReplicaId(1), 1, entry(1));
        assert!(off.get(ReplicaId(1), 1).is_none());
    }
}
