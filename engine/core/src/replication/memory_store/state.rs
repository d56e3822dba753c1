//! What a `MemoryStore` holds, and what every path that changes records shares: the join of a
//! peer's states (the engine's `stage_joins`), the running summary, tombstone marks.

use super::MemoryStoreError;
use crate::model::digest::{key_hash, state_hash};
use crate::model::{codec, Dot, HybridClock, MemberId, OriginId, Record, VersionVector};
use crate::replication::exceptions::ExceptionSet;
use crate::replication::iblt::Iblt;
use crate::replication::incoming::{Incoming, Theirs};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Everything a store holds; one mutex guards it all, so every operation is atomic.
#[derive(Clone)]
pub(super) struct State {
    /// Who the replica is.
    pub(super) member: MemberId,
    /// The current epoch; writes are numbered in `member.epoch_origin(epoch)`.
    pub(super) epoch: u32,
    /// The current origin.
    pub(super) origin: OriginId,
    /// The current origin's last sequence number (every number up to it is committed: a
    /// write takes its number as it commits, and a failed one spends none).
    pub(super) last_seq: u64,
    /// Per other origin (earlier epochs of this member included), the highest sequence
    /// applied in order.
    pub(super) applied: VersionVector,
    /// Per origin, the log floor.
    pub(super) floors: VersionVector,
    /// Encoded records by key (tombstones included).
    pub(super) records: BTreeMap<Arc<[u8]>, Arc<[u8]>>,
    /// Log entries: the keys each changed, sorted and distinct, and what is partial of them.
    pub(super) log: BTreeMap<(OriginId, u64), Logged>,
    /// What the applied vector covers that the records do not reflect (declared lost).
    pub(super) exceptions: ExceptionSet,
    /// Keys whose record became a tombstone since the last compaction looked at them.
    pub(super) tombstones: BTreeSet<Arc<[u8]>>,
    /// The summary over (key hash, state hash) of every record: built on first use, then
    /// kept up to date as records change (and across restarts).
    pub(super) summary: Option<Iblt>,
    /// Markers for last-writer-wins values: a counter (see `MemoryStore`).
    pub(super) clock: HybridClock,
    /// Own entries up to here reached every other member (`release_shipped`).
    pub(super) released: u64,
    /// The epoch the next `start_new_epoch` moves to, if the caller chose it.
    pub(super) next_epoch: Option<u32>,
    /// Keys joins created, the latest of them.
    pub(super) created: crate::replication::created_keys::CreatedKeys,
}

/// A log entry as the store keeps it.
#[derive(Clone, Debug, Default)]
pub(super) struct Logged {
    /// Keys changed (whose states were applied), sorted and distinct.
    pub(super) keys: Vec<Arc<[u8]>>,
    /// Keys whose states were left out (the entry was applied partial).
    pub(super) left_out: Vec<Vec<u8>>,
    /// Nothing of the write is held (declared lost).
    pub(super) lost: bool,
}

/// Decodes a record this store holds (it holds only bytes it encoded or checked).
pub(super) fn decode(bytes: &[u8]) -> Result<Record, MemoryStoreError> {
    codec::decode_record(bytes).map_err(MemoryStoreError::Codec)
}

/// Encodes a record.
pub(super) fn encode(record: &Record) -> Result<Vec<u8>, MemoryStoreError> {
    codec::encode_record(record).map_err(MemoryStoreError::Codec)
}

impl State {
    /// A store created for `member` in `epoch`: writable, never replicated.
    pub(super) fn new(member: MemberId, epoch: u32) -> State {
        State {
            member,
            epoch,
            origin: member.epoch_origin(epoch),
            last_seq: 0,
            applied: VersionVector::new(),
            floors: VersionVector::new(),
            records: BTreeMap::new(),
            log: BTreeMap::new(),
            exceptions: ExceptionSet::default(),
            tombstones: BTreeSet::new(),
            summary: None,
            // No wall time: every tick is the last marker plus one, and markers observed
            // from peers are never too far ahead.
            clock: HybridClock::new(u64::MAX),
            released: 0,
            next_epoch: None,
            created: Default::default(),
        }
    }

    /// What a clean reopen changes: the in-memory shipping state starts over.
    pub(super) fn reopen(&mut self) {
        self.released = 0;
    }

    /// The applied vector, this replica's own origin included.
    pub(super) fn applied(&self) -> VersionVector {
        let mut vv = self.applied.clone();
        vv.add(Dot::new(self.origin, self.last_seq));
        vv
    }

    /// The stored record of `key`, decoded.
    pub(super) fn load(&self, key: &[u8]) -> Result<Option<Record>, MemoryStoreError> {
        self.records.get(key).map(|b| decode(b)).transpose()
    }

    /// The summary, built from every record if this is its first use.
    pub(super) fn summary(&mut self) -> &Iblt {
        let records = &self.records;
        self.summary.get_or_insert_with(|| {
            let mut table = Iblt::with_cells(crate::replication::SUMMARY_CELLS);
            for (key, bytes) in records {
                table.insert((key_hash(key), state_hash(bytes)));
            }
            table
        })
    }

    /// Stores `bytes` as the record of `key` (marking a new tombstone), keeping the summary.
    pub(super) fn put_record(&mut self, key: &[u8], bytes: Vec<u8>, bottom: bool) {
        let key: Arc<[u8]> = match self.records.get_key_value(key) {
            Some((k, _)) => k.clone(),
            None => key.into(),
        };
        let old = self.records.insert(key.clone(), bytes.into());
        if let Some(table) = &mut self.summary {
            let kh = key_hash(&key);
            if let Some(old) = old {
                table.remove((kh, state_hash(&old)));
            }
            if let Some(new) = self.records.get(&key) {
                table.insert((kh, state_hash(new)));
            }
        }
        if bottom {
            // Compaction reclaims it once it is stable.
            self.tombstones.insert(key);
        }
    }

    /// Removes the record of `key` (a reclaimed tombstone), keeping the summary.
    pub(super) fn remove_record(&mut self, key: &[u8]) {
        if let Some(old) = self.records.remove(key) {
            if let Some(table) = &mut self.summary {
                table.remove((key_hash(key), state_hash(&old)));
            }
        }
        self.tombstones.remove(key);
    }

    /// Logs an entry of `origin` naming `keys` (sorted, distinct), whole.
    pub(super) fn put_log(&mut self, origin: OriginId, seq: u64, keys: &[&[u8]]) {
        self.put_log_partial(origin, seq, keys, Vec::new(), false);
    }

    /// Logs an entry of `origin` naming `keys` (sorted, distinct), with the keys whose states
    /// it lacks and whether the write is lost.
    pub(super) fn put_log_partial(
        &mut self,
        origin: OriginId,
        seq: u64,
        keys: &[&[u8]],
        left_out: Vec<Vec<u8>>,
        lost: bool,
    ) {
        let keys = keys
            .iter()
            .map(|k| match self.records.get_key_value(*k) {
                Some((shared, _)) => shared.clone(),
                None => Arc::from(*k),
            })
            .collect();
        let logged = Logged {
            keys,
            left_out,
            lost,
        };
        self.log.insert((origin, seq), logged);
    }

    /// Removes the log entries of `origin` numbered `from..=to`; returns how many there were.
    pub(super) fn delete_log_range(&mut self, origin: OriginId, from: u64, to: u64) -> u64 {
        if from > to {
            return 0;
        }
        let doomed: Vec<(OriginId, u64)> = self
            .log
            .range((origin, from)..=(origin, to))
            .map(|(k, _)| *k)
            .collect();
        for k in &doomed {
            self.log.remove(k);
        }
        doomed.len() as u64
    }

    /// Joins peer records (sorted by key, one per key) into the local ones with `seen` (the
    /// applied vector) counted as seen but for the exceptions, and with a state transfer's
    /// `horizon` if any (but for keys whose hash is in `spare`); every state is computed
    /// before anything changes, so a refusal (a merge past `record_max`) changes nothing.
    /// Returns the keys whose record changed, in order.
    pub(super) fn join<'k>(
        &mut self,
        remote: Vec<Incoming<'k>>,
        seen: &VersionVector,
        horizon: Option<(&VersionVector, &BTreeSet<u64>)>,
        record_max: Option<usize>,
    ) -> Result<Vec<&'k [u8]>, MemoryStoreError> {
        if let Some(marker) = remote.iter().filter_map(Incoming::max_marker).max() {
            self.clock.observe(marker, 0);
        }
        let mut staged: Vec<(&'k [u8], Vec<u8>, bool)> = Vec::new();
        for theirs in remote {
            let key = theirs.key;
            let stored = self.records.get(key);
            let local = stored.map(|b| decode(b)).transpose()?;
            let seen = self.exceptions.seen_for(key, seen);
            let seen = &*seen;
            let horizon =
                horizon.and_then(|(h, spare)| (!spare.contains(&key_hash(key))).then_some(h));
            let (bytes, bottom) = match (local, theirs.state) {
                // Joined into nothing, the state stays as it came: keep its bytes.
                (None, Theirs::Received { bytes, facts }) if !facts.has_dot_in(seen) => {
                    (bytes.to_vec(), facts.bottom)
                }
                (local, state) => {
                    let remote = state.into_record()?;
                    let mut merged = local.unwrap_or_default();
                    match horizon {
                        Some(h) => merged.join_seen_within(&remote, seen, h),
                        None => merged.join_seen(&remote, seen),
                    }
                    (encode(&merged)?, merged.is_bottom())
                }
            };
            if stored.is_some_and(|s| **s == bytes[..]) {
                continue;
            }
            if let Some(max) = record_max.filter(|max| bytes.len() > *max) {
                return Err(MemoryStoreError::RecordTooLarge {
                    len: bytes.len(),
                    max,
                });
            }
            staged.push((key, bytes, bottom));
        }
        let mut changed = Vec::with_capacity(staged.len());
        for (key, bytes, bottom) in staged {
            if !self.records.contains_key(key) {
                self.created.created(key);
            }
            self.put_record(key, bytes, bottom);
            changed.push(key);
        }
        Ok(changed)
    }

    /// Removes from the records of `keys` every dot `seen` covers (see
    /// `ReplicaStore::drop_covered`); returns how many changed.
    pub(super) fn drop_covered(
        &mut self,
        keys: &[&[u8]],
        seen: &VersionVector,
    ) -> Result<usize, MemoryStoreError> {
        let mut sorted = keys.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut changed = 0;
        for key in sorted {
            let Some(mut record) = self.load(key)? else {
                continue;
            };
            if !record.remove_covered(seen) {
                continue;
            }
            let bytes = encode(&record)?;
            self.put_record(key, bytes, record.is_bottom());
            changed += 1;
        }
        Ok(changed)
    }
}
