//! In-memory copies that let replication ship fresh entries without reading RocksDB: the keys
//! of recently committed log entries, and the current states of recently written records. Both
//! are byte-bounded (oldest dropped first); a miss falls back to RocksDB.
//!
//! The record states are kept equal to what RocksDB holds: a local write of a record updates its
//! copy, a peer's change or a removal drops it, while the key's stripe lock is held (so two writers of a
//! key cannot leave the older state behind). Senders must ship a key's *current* state: an
//! older one could bring back a dot whose removal the receiver only knows through a tombstone
//! that has since been reclaimed.

use crate::model::ReplicaId;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash};
use std::sync::{Arc, Mutex, MutexGuard};

/// Bookkeeping bytes counted per cached item, besides its own bytes.
const ITEM_OVERHEAD: usize = 64;

/// A byte-bounded map that forgets its oldest insertions first.
#[derive(Debug)]
pub(crate) struct BoundedCache<K, V> {
    budget: usize,
    bytes: usize,
    /// Value, accounted size, generation of the insertion (foldhash: keys are hashed on
    /// every write and every shipped record, and SipHash showed in profiles).
    map: HashMap<K, (V, usize, u64), foldhash::fast::RandomState>,
    /// Insertion order; an item whose generation no longer matches the map's is stale.
    order: VecDeque<(K, u64)>,
    next_generation: u64,
}

impl<K: Hash + Eq + Clone, V: Clone> BoundedCache<K, V> {
    /// An empty cache holding at most about `budget` bytes (0 disables it).
    pub(crate) fn new(budget: usize) -> Self {
        BoundedCache {
            budget,
            bytes: 0,
            map: HashMap::default(),
            order: VecDeque::new(),
            next_generation: 0,
        }
    }

    /// Sets `key` to `value` of `size` bytes, dropping the oldest items beyond the budget. An
    /// item larger than the whole budget is not kept (and any older value goes).
    pub(crate) fn insert(&mut self, key: K, value: V, size: usize) {
        let size = size + ITEM_OVERHEAD;
        if size > self.budget {
            self.remove(&key);
            return;
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        if let Some((_, old, _)) = self.map.insert(key.clone(), (value, size, generation)) {
            self.bytes -= old;
        }
        self.bytes += size;
        self.order.push_back((key, generation));
        while self.bytes > self.budget {
            let Some((oldest, generation)) = self.order.pop_front() else {
                break;
            };
            if self
                .map
                .get(&oldest)
                .is_some_and(|(_, _, g)| *g == generation)
            {
                if let Some((_, size, _)) = self.map.remove(&oldest) {
                    self.bytes -= size;
                }
            }
        }
        // Keys rewritten again and again leave stale positions behind: keep them bounded.
        if self.order.len() > 2 * self.map.len() + 1024 {
            let map = &self.map;
            self.order
                .retain(|(k, g)| map.get(k).is_some_and(|(_, _, mine)| mine == g));
        }
    }

    /// Forgets `key`.
    pub(crate) fn remove<Q>(&mut self, key: &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some((_, size, _)) = self.map.remove(key) {
            self.bytes -= size;
        }
    }

    /// The value of `key`, if cached.
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get(key).map(|(v, _, _)| v.clone())
    }

    /// Bytes currently accounted.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Positions kept in the insertion order.
    #[cfg(test)]
    pub(crate) fn positions(&self) -> usize {
        self.order.len()
    }
}

/// The keys of recent log entries, by (origin, sequence).
pub(crate) type EntryKeys = BoundedCache<(ReplicaId, u64), Arc<[Vec<u8>]>>;

/// Shards of the record-state cache: concurrent writers rarely wait on one another's.
const STATE_SHARDS: usize = 16;

/// One shard: key -> current state (keys shared between the map and its insertion order).
type StateShard = BoundedCache<Arc<[u8]>, Arc<[u8]>>;

/// The current states of recently written records, by key, in shards by key hash.
#[derive(Debug)]
pub(crate) struct RecordStates {
    shards: Box<[Mutex<StateShard>]>,
    hasher: foldhash::fast::FixedState,
}

impl RecordStates {
    /// Empty shards holding at most about `budget` bytes in all.
    pub(crate) fn new(budget: usize) -> RecordStates {
        RecordStates {
            shards: (0..STATE_SHARDS)
                .map(|_| Mutex::new(BoundedCache::new(budget / STATE_SHARDS)))
                .collect(),
            hasher: foldhash::fast::FixedState::default(),
        }
    }

    fn shard(&self, key: &[u8]) -> MutexGuard<'_, StateShard> {
        let i = self.hasher.hash_one(key) as usize % STATE_SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the state of `key`.
    pub(crate) fn insert(&self, key: &[u8], state: &[u8]) {
        self.shard(key)
            .insert(Arc::from(key), Arc::from(state), key.len() + state.len());
    }

    /// Forgets `key`.
    pub(crate) fn remove(&self, key: &[u8]) {
        self.shard(key).remove(key);
    }

    /// The state of `key`, if cached.
    pub(crate) fn get(&self, key: &[u8]) -> Option<Arc<[u8]>> {
        self.shard(key).get(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_budget_dropping_oldest_first() {
        let mut cache: BoundedCache<u64, Vec<u8>> = BoundedCache::new(10_000);
        for k in 1..=100 {
            cache.insert(k, vec![0; 500], 500);
            assert!(cache.bytes() <= 10_000);
        }
        assert!(cache.get(&1).is_none(), "the oldest item was dropped");
        assert_eq!(cache.get(&100).map(|v| v.len()), Some(500));
        // Replacing an item does not count it twice.
        let before = cache.bytes();
        cache.insert(100, vec![1; 500], 500);
        assert_eq!(cache.bytes(), before);
        assert_eq!(cache.get(&100), Some(vec![1; 500]));
        cache.remove(&100);
        assert!(cache.get(&100).is_none());
        assert_eq!(cache.bytes(), before - 500 - ITEM_OVERHEAD);
    }

    #[test]
    fn an_item_larger_than_the_budget_is_not_kept_and_drops_the_older_value() {
        let mut cache: BoundedCache<u64, Vec<u8>> = BoundedCache::new(1_000);
        cache.insert(1, vec![0; 10], 10);
        cache.insert(1, vec![0; 2_000], 2_000);
        assert!(cache.get(&1).is_none(), "a stale value must not survive");
        assert_eq!(cache.bytes(), 0);
        let mut off: BoundedCache<u64, Vec<u8>> = BoundedCache::new(0);
        off.insert(1, vec![0], 1);
        assert!(off.get(&1).is_none());
    }

    #[test]
    fn rewriting_one_key_keeps_the_order_bounded() {
        let mut cache: BoundedCache<u64, u64> = BoundedCache::new(1 << 20);
        for i in 0..100_000 {
            cache.insert(7, i, 8);
        }
        assert_eq!(cache.get(&7), Some(99_999));
        assert!(cache.positions() <= 2 + 1024 + 1);
    }
}
