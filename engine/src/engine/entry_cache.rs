//! In-memory copies that let replication ship fresh entries without reading RocksDB: the keys
//! of recently committed log entries, and the current states of recently written records. Both
//! are byte-bounded (oldest dropped first); a miss falls back to RocksDB.
//!
//! A key's current state lives in one `StateCell`, shared by the state map and by every cached
//! entry that names the key, so shipping an entry reads its states without a lookup. The cells
//! are kept equal to what RocksDB holds: a local write of a record sets its cell, a peer's change
//! or a removal empties it, while the key's stripe lock is held (so two writers of a key cannot
//! leave the older state behind); a cell the map drops is emptied at once, as a later write
//! would not reach it. Senders must ship a key's *current* state: an older one could bring back
//! a dot whose removal the receiver only knows through a tombstone that has since been
//! reclaimed.
//!
//! Once every other member has applied an entry (`ReplicaStore::release_shipped`), the entry
//! and the cells no newer entry names leave at once, while still in the processor's caches: in
//! steady state both maps hold what is in flight, not 64 MiB of cold history.

use crate::model::OriginId;
use hashlink::LinkedHashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::{Arc, Mutex, MutexGuard};

/// Bookkeeping bytes counted per cached item, besides its own bytes.
const ITEM_OVERHEAD: usize = 64;

/// A byte-bounded map that forgets its oldest insertions first.
#[derive(Debug)]
pub(crate) struct BoundedCache<K, V> {
    budget: usize,
    bytes: usize,
    /// Bytes inserted so far: an item's stamp tells its age in bytes.
    clock: u64,
    /// Oldest insertion first: value, accounted size, clock at insertion (foldhash: keys are
    /// hashed on every write and every shipped record, and SipHash showed in profiles).
    map: LinkedHashMap<K, (V, usize, u64), foldhash::fast::RandomState>,
}

impl<K: Hash + Eq, V: Clone> BoundedCache<K, V> {
    /// An empty cache holding at most about `budget` bytes (0 disables it).
    pub(crate) fn new(budget: usize) -> Self {
        BoundedCache {
            budget,
            bytes: 0,
            clock: 0,
            map: LinkedHashMap::default(),
        }
    }

    /// Sets `key` to `value` of `size` bytes, dropping the oldest items beyond the budget. An
    /// item larger than the whole budget is not kept (and any older value goes).
    pub(crate) fn insert(&mut self, key: K, value: V, size: usize) {
        self.insert_dropping(key, value, size, drop);
    }

    /// `insert`, handing every value that leaves the cache to `dropped`: the oldest ones beyond
    /// the budget, a replaced one, and `value` itself if it is not kept.
    pub(crate) fn insert_dropping(
        &mut self,
        key: K,
        value: V,
        size: usize,
        mut dropped: impl FnMut(V),
    ) {
        let size = size + ITEM_OVERHEAD;
        if size > self.budget {
            if let Some(old) = self.take(&key) {
                dropped(old);
            }
            dropped(value);
            return;
        }
        let stamp = self.clock;
        self.clock += size as u64;
        if let Some((old, old_size, _)) = self.map.insert(key, (value, size, stamp)) {
            self.bytes -= old_size;
            dropped(old);
        }
        self.bytes += size;
        self.evict(dropped);
    }

    /// Accounts `key`'s item anew at `size` bytes, as inserted now; returns it, or `None` if
    /// the cache does not hold `key` (or not any more: an item larger than the whole budget
    /// goes to `dropped`, like the oldest ones beyond the budget).
    pub(crate) fn refresh<Q>(&mut self, key: &Q, size: usize, dropped: impl FnMut(V)) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let size = size + ITEM_OVERHEAD;
        if size > self.budget {
            self.take(key).map(dropped);
            return None;
        }
        let stamp = self.clock;
        let (value, old_size, old_stamp) = self.map.to_back(key)?;
        let (value, was) = (value.clone(), *old_size);
        (*old_size, *old_stamp) = (size, stamp);
        self.clock += size as u64;
        self.bytes = self.bytes - was + size;
        self.evict(dropped);
        Some(value)
    }

    /// Drops the oldest items while over the budget.
    fn evict(&mut self, mut dropped: impl FnMut(V)) {
        while self.bytes > self.budget {
            let Some((_, (value, size, _))) = self.map.pop_front() else {
                break;
            };
            self.bytes -= size;
            dropped(value);
        }
    }

    /// Forgets `key`, returning its value.
    pub(crate) fn take<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.take_aged(key).map(|(value, _)| value)
    }

    /// Forgets `key` if its value satisfies `keep_out`, returning the value; one lookup.
    pub(crate) fn take_if<Q>(&mut self, key: &Q, keep_out: impl FnOnce(&V) -> bool) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match self.map.raw_entry_mut().from_key(key) {
            hashlink::linked_hash_map::RawEntryMut::Occupied(item) if keep_out(&item.get().0) => {
                let (value, size, _) = item.remove();
                self.bytes -= size;
                Some(value)
            }
            _ => None,
        }
    }

    /// `take`, with the item's age: the bytes inserted since it was.
    pub(crate) fn take_aged<Q>(&mut self, key: &Q) -> Option<(V, u64)>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (value, size, stamp) = self.map.remove(key)?;
        self.bytes -= size;
        Some((value, self.clock - stamp))
    }

    /// The byte budget.
    pub(crate) fn budget(&self) -> usize {
        self.budget
    }

    /// Forgets every item whose key matches.
    pub(crate) fn remove_matching(&mut self, mut matches: impl FnMut(&K) -> bool) {
        let bytes = &mut self.bytes;
        self.map.retain(|k, (_, size, _)| {
            let remove = matches(k);
            if remove {
                *bytes -= *size;
            }
            !remove
        });
    }

    /// Items held.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
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
}

/// A key and its current state, if known: shared by the state map and the cached entries
/// naming the key. Only changed with the shard of its key locked (and the key's stripe held),
/// read without either.
#[derive(Debug)]
pub(crate) struct StateCell {
    key: Arc<[u8]>,
    state: Mutex<Option<Arc<[u8]>>>,
}

impl StateCell {
    /// The key.
    pub(crate) fn key(&self) -> &[u8] {
        &self.key
    }

    /// The key, shared.
    pub(crate) fn shared_key(&self) -> Arc<[u8]> {
        self.key.clone()
    }

    /// The key's current state, or `None` if it must be read from RocksDB.
    pub(crate) fn state(&self) -> Option<Arc<[u8]>> {
        self.slot().clone()
    }

    fn slot(&self) -> MutexGuard<'_, Option<Arc<[u8]>>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets the state: the cell has left the map, and later writes will not reach it.
    fn clear(&self) {
        *self.slot() = None;
    }
}

/// A recent log entry: the cells of its keys' states, and the client request it answered.
#[derive(Clone, Debug)]
pub(crate) struct CachedEntry {
    /// The cells of the keys' states.
    pub(crate) cells: Arc<[Arc<StateCell>]>,
    /// The client request the write answered, if it named one.
    pub(crate) request: Option<Arc<crate::model::RequestTag>>,
}

/// The recent log entries, by (origin, sequence).
pub(crate) type EntryKeys = BoundedCache<(OriginId, u64), CachedEntry>;

/// Bytes counted per key of a cached entry besides the key itself: its pointer, and its cell
/// once the state map has dropped it (a live cell is counted there).
pub(crate) const ENTRY_KEY_OVERHEAD: usize = 16;

/// Shards of the record-state cache: concurrent writers rarely wait on one another's.
const STATE_SHARDS: usize = 16;

/// One shard: key -> its cell (keys shared between the map, its insertion order and the cell).
type StateShard = BoundedCache<Arc<[u8]>, Arc<StateCell>>;

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

    fn shard_of(&self, key: &[u8]) -> usize {
        self.hasher.hash_one(key) as usize % STATE_SHARDS
    }

    fn lock_shard(&self, i: usize) -> MutexGuard<'_, StateShard> {
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn shard(&self, key: &[u8]) -> MutexGuard<'_, StateShard> {
        self.lock_shard(self.shard_of(key))
    }

    /// Sets the state of `key` (whose stripe the caller holds); returns the key's cell.
    pub(crate) fn insert(&self, key: &[u8], state: &[u8]) -> Arc<StateCell> {
        let size = key.len() + state.len();
        let state: Arc<[u8]> = Arc::from(state);
        let mut shard = self.shard(key);
        let dropped = |cell: Arc<StateCell>| cell.clear();
        if let Some(cell) = shard.refresh(key, size, dropped) {
            // The newest item now: the budget cannot drop it before the shard is unlocked.
            *cell.slot() = Some(state);
            return cell;
        }
        let cell = Arc::new(StateCell {
            key: Arc::from(key),
            state: Mutex::new(Some(state)),
        });
        shard.insert_dropping(cell.key.clone(), cell.clone(), size, dropped);
        cell
    }

    /// Forgets the state of `key` (whose stripe the caller holds).
    pub(crate) fn remove(&self, key: &[u8]) {
        if let Some(cell) = self.shard(key).take(key) {
            cell.clear();
        }
    }

    /// Forgets the cells of shipped entries that no other cached entry still names, locking
    /// each shard once.
    pub(crate) fn release<'c>(&self, cells: impl IntoIterator<Item = &'c Arc<StateCell>>) {
        // Held by the map and by the caller only (no writer can add a holder while the shard
        // is locked).
        let mut by_shard: Vec<(usize, &Arc<StateCell>)> = cells
            .into_iter()
            .filter(|cell| Arc::strong_count(cell) == 2)
            .map(|cell| (self.shard_of(&cell.key), cell))
            .collect();
        by_shard.sort_unstable_by_key(|(shard, _)| *shard);
        for group in by_shard.chunk_by(|a, b| a.0 == b.0) {
            let mut shard = self.lock_shard(group[0].0);
            for (_, cell) in group {
                if Arc::strong_count(cell) != 2 {
                    continue; // a writer took the cell up again before the shard was locked
                }
                if let Some(cell) = shard.take_if(&cell.key[..], |mapped| Arc::ptr_eq(mapped, cell))
                {
                    cell.clear();
                }
            }
        }
    }

    /// The state of `key`, if cached.
    pub(crate) fn get(&self, key: &[u8]) -> Option<Arc<[u8]>> {
        self.shard(key).get(key).and_then(|cell| cell.state())
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
        assert_eq!(cache.take(&100), Some(vec![1; 500]));
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
    fn rewriting_a_key_makes_it_the_newest_and_aging_counts_bytes() {
        let mut cache: BoundedCache<u64, u64> = BoundedCache::new(10 * (8 + ITEM_OVERHEAD));
        for k in 0..10 {
            cache.insert(k, k, 8);
        }
        assert_eq!(cache.refresh(&0, 8, drop), Some(0), "0 is now the newest");
        cache.insert(10, 10, 8);
        assert!(cache.get(&1).is_none(), "1 was the oldest");
        assert_eq!(cache.get(&0), Some(0));
        let (_, age) = cache.take_aged(&0).expect("held");
        assert_eq!(
            age,
            2 * (8 + ITEM_OVERHEAD) as u64,
            "one insertion since, and its own"
        );
        cache.remove_matching(|k| *k >= 5);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.bytes(), 3 * (8 + ITEM_OVERHEAD));
    }

    #[test]
    fn release_forgets_only_cells_no_other_holder_names() {
        let states = RecordStates::new(1 << 20);
        let keys: Vec<String> = (0..64).map(|i| format!("k{i}")).collect();
        let cells: Vec<_> = keys
            .iter()
            .map(|k| states.insert(k.as_bytes(), b"v"))
            .collect();
        // k0 is also named by a newer entry. k1's cell left the map (a new one took its key)
        // and is held twice, like a mapped cell: only the map's own cell may go.
        let newer = cells[0].clone();
        states.remove(b"k1");
        let fresh = states.insert(b"k1", b"w");
        let _second_holder = cells[1].clone();
        states.release(&cells);
        assert_eq!(states.get(b"k0").as_deref(), Some(&b"v"[..]), "still named");
        assert_eq!(newer.state().as_deref(), Some(&b"v"[..]));
        assert_eq!(
            states.get(b"k1").as_deref(),
            Some(&b"w"[..]),
            "not the released cell"
        );
        assert_eq!(fresh.state().as_deref(), Some(&b"w"[..]));
        for (key, cell) in keys.iter().zip(&cells).skip(2) {
            assert!(states.get(key.as_bytes()).is_none(), "{key} released");
            assert_eq!(cell.state(), None, "{key} emptied");
        }
    }

    #[test]
    fn a_cell_the_map_drops_is_emptied_and_a_rewrite_keeps_the_cell() {
        // One shard's budget holds a few items only.
        let states = RecordStates::new(STATE_SHARDS * 4 * (ITEM_OVERHEAD + 16));
        let first = states.insert(b"k0", b"v0");
        assert_eq!(first.state().as_deref(), Some(&b"v0"[..]));
        let again = states.insert(b"k0", b"v1");
        assert!(
            Arc::ptr_eq(&first, &again),
            "a rewrite updates the key's cell"
        );
        assert_eq!(first.state().as_deref(), Some(&b"v1"[..]));
        // Enough other keys to push k0 out of its shard, whichever it is.
        let others: Vec<_> = (1..200u32)
            .map(|i| states.insert(format!("k{i}").as_bytes(), b"vv"))
            .collect();
        assert!(states.get(b"k0").is_none());
        assert_eq!(first.state(), None, "a dropped cell must not keep a state");
        assert!(others.last().and_then(|c| c.state()).is_some());
        // A removal empties the cell as well.
        let last = others.last().expect("inserted");
        states.remove(last.key());
        assert_eq!(last.state(), None);
    }
}
