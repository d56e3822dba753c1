//! `Engine` as the replication core's storage seam: reading log entries with the current states
//! of their records, applying a peer's entry atomically (records joined, entry logged for
//! relaying, applied vector advanced), state transfer for anti-entropy, and compaction (log
//! truncation and tombstone collection at causal stability).

use crate::engine::{lock, max_marker, Engine};
use crate::error::{Error, Result};
use crate::model::{codec, digest, Dot, Record, ReplicaId, VersionVector};
use crate::replication::iblt::Iblt;
use crate::replication::{
    decode_records, sort_joining, ApplyOutcome, Compaction, DecodedEntry, RecordState,
    ReplicaStore, StateSummary,
};
use crate::store::{keys, AtomicWrite, LogEntry};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Decoded peer records, sorted by key, one per key.
pub(crate) type RemoteRecords<'k> = Vec<(&'k [u8], Record)>;

impl Engine {
    /// Joins decoded peer records (sorted by key, one per key) into the local ones, staging
    /// changes (and marks for new tombstones) in `wb`; returns the keys whose record changed,
    /// in order, with their new states (for `cache_states` once committed). The caller holds the keys' stripes; `seen` is this replica's applied vector.
    /// A local record that does not decode is replaced by the peer's state when `repair` is
    /// set, an error otherwise; `record_max` refuses merges that would grow past it.
    pub(crate) fn stage_joins<'k>(
        &self,
        remote: RemoteRecords<'k>,
        seen: &VersionVector,
        wb: &mut AtomicWrite<'_>,
        repair: bool,
        record_max: Option<usize>,
    ) -> Result<Vec<(&'k [u8], Vec<u8>)>> {
        let inner = &*self.inner;
        if let Some(marker) = remote.iter().filter_map(|(_, r)| max_marker(r)).max() {
            lock(&inner.clock).observe(marker, inner.config.clock.now_ms());
        }
        let mut changed = Vec::new();
        let keys: Vec<&[u8]> = remote.iter().map(|(k, _)| *k).collect();
        let stored_all = inner.store.get_records(&keys)?;
        for ((key, theirs), stored) in remote.into_iter().zip(stored_all) {
            let stored = stored.as_deref();
            let local = match stored.map(codec::decode_record) {
                None => None,
                Some(Ok(r)) => Some(r),
                Some(Err(e)) if repair => {
                    // Unreadable here anyway: the peer's state replaces it.
                    tracing::warn!(key = %crate::error::show(key), error = %e, "replacing a corrupt record with a peer's state");
                    None
                }
                Some(Err(e)) => return Err(Error::from_codec("record", key, e)),
            };
            let merged = match local {
                Some(mut local) => {
                    count_conflict(&local, &theirs);
                    local.join_seen(&theirs, seen);
                    local
                }
                None => theirs.joined_into_nothing(seen),
            };
            let bytes =
                codec::encode_record(&merged).map_err(|e| Error::from_codec("record", key, e))?;
            if stored == Some(bytes.as_slice()) {
                continue;
            }
            if let Some(max) = record_max.filter(|max| bytes.len() > *max) {
                return Err(Error::RecordTooLarge {
                    key: key.to_vec(),
                    len: bytes.len(),
                    max,
                });
            }
            wb.put_record(key, &bytes);
            if merged.is_bottom() {
                // A new tombstone (also by state transfer, without a log entry): compaction
                // reclaims it once it is stable.
                wb.put_meta(&keys::tombstone_key(key), &[]);
            }
            changed.push((key, bytes));
        }
        Ok(changed)
    }
}

/// Counts a merge of concurrent updates (neither side had seen all of the other's).
fn count_conflict(local: &Record, remote: &Record) {
    if local.values.is_empty() {
        return; // nothing here yet: no conflict, and no contexts to build
    }
    let (mine, theirs) = (local.context(), remote.context());
    if !mine.is_empty() && !mine.dominates(&theirs) && !theirs.dominates(&mine) {
        metrics::counter!("meridian_conflicts_merged_total").increment(1);
    }
}

impl ReplicaStore for Engine {
    type Error = Error;

    fn replica_id(&self) -> ReplicaId {
        Engine::replica_id(self)
    }

    fn applied(&self) -> VersionVector {
        Engine::applied(self)
    }

    fn read_entry(&self, origin: ReplicaId, seq: u64) -> Result<Option<Arc<[RecordState]>>> {
        if seq <= lock(&self.inner.floors).get(origin) {
            return Ok(None);
        }
        let cached = lock(&self.inner.entry_keys).get(&(origin, seq));
        let keys: Arc<[Vec<u8>]> = match cached {
            Some(keys) => keys,
            None => {
                let Some(bytes) = self.inner.store.get_log(origin, seq)? else {
                    return Ok(None);
                };
                LogEntry::decode(&bytes)
                    .map_err(|e| Error::from_codec("log entry", &keys::log_key(origin, seq), e))?
                    .keys
                    .into()
            }
        };
        // Current states: from memory where recently written, else from RocksDB.
        let mut out = Vec::with_capacity(keys.len());
        let mut missing = Vec::new();
        for key in keys.iter() {
            match self.inner.states.get(key) {
                Some(state) => out.push((key.clone(), state.to_vec())),
                None => missing.push(key.clone()),
            }
        }
        if !missing.is_empty() {
            out.extend(self.read_records(&missing)?);
        }
        Ok(Some(out.into()))
    }

    fn record_bytes_max(&self) -> usize {
        self.inner.config.record_bytes_max
    }

    fn apply_entries(
        &self,
        origin: ReplicaId,
        entries: Vec<DecodedEntry>,
    ) -> Result<Vec<ApplyOutcome>> {
        let inner = &*self.inner;
        self.check_writable()?;
        if origin == inner.replica {
            return Ok(vec![ApplyOutcome::Duplicate; entries.len()]);
        }
        let _serial = lock(&inner.apply_lock);
        let mut have = lock(&inner.applied).get(origin);
        // Decide each entry's fate before touching anything. Keys and records are kept apart
        // so that the log entries can borrow the keys while the records move into the join.
        let mut outcomes = Vec::with_capacity(entries.len());
        let mut entry_keys: Vec<(u64, Vec<Vec<u8>>)> = Vec::new();
        let mut entry_records: Vec<Vec<Record>> = Vec::new();
        for entry in entries {
            if entry.seq <= have {
                outcomes.push(ApplyOutcome::Duplicate);
                continue;
            }
            if entry.seq != have + 1 {
                outcomes.push(ApplyOutcome::Gap { expected: have + 1 });
                break;
            }
            let (keys, records): (Vec<Vec<u8>>, Vec<Record>) = entry.records.into_iter().unzip();
            entry_keys.push((entry.seq, keys));
            entry_records.push(records);
            outcomes.push(ApplyOutcome::Applied { changed: 0 });
            have = entry.seq;
        }
        if entry_keys.is_empty() {
            return Ok(outcomes);
        }
        // The frame's states joined together, then into the local records with the applied
        // vector as it stood before the frame (the same result as entry by entry: a state is
        // a lattice element, and dots of this frame are not in that vector), in one batch.
        let mut wb = inner.store.batch();
        let mut all: RemoteRecords<'_> =
            Vec::with_capacity(entry_records.iter().map(Vec::len).sum());
        for ((seq, keys), records) in entry_keys.iter().zip(entry_records) {
            let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            wb.put_log(origin, *seq, &LogEntry::encode_keys(&keys));
            all.extend(keys.into_iter().zip(records));
        }
        let remote = if entry_keys.len() == 1 {
            all // one entry's records are sorted and distinct already
        } else {
            sort_joining(all)
        };
        let keys: Vec<&[u8]> = remote.iter().map(|(k, _)| *k).collect();
        let _guards = self.lock_keys(&keys);
        let seen = self.applied();
        let changed = self.stage_joins(remote, &seen, &mut wb, true, None)?;
        wb.put_meta(&keys::applied_key(origin), &have.to_be_bytes());
        self.commit(wb)?;
        self.uncache_states(changed.iter().map(|(k, _)| *k));
        lock(&inner.applied).add(Dot::new(origin, have));
        self.applied_advanced();
        // Report, per applied entry, how many of its records changed here.
        let everything = changed.len() == keys.len();
        let mut applied = entry_keys.iter();
        for outcome in &mut outcomes {
            if let ApplyOutcome::Applied { changed: n } = outcome {
                if let Some((_, keys)) = applied.next() {
                    *n = if everything {
                        keys.len()
                    } else {
                        keys.iter()
                            .filter(|k| {
                                changed
                                    .binary_search_by(|(c, _)| (*c).cmp(k.as_slice()))
                                    .is_ok()
                            })
                            .count()
                    };
                }
            }
        }
        Ok(outcomes)
    }

    fn log_floor(&self) -> VersionVector {
        lock(&self.inner.floors).clone()
    }

    fn summarize(&self, cells: usize) -> Result<StateSummary> {
        let applied = self.applied();
        let mut table = Iblt::with_cells(cells);
        let mut keys = BTreeMap::new();
        for item in self.inner.store.records_from(b"", None) {
            let (key, bytes) = item?;
            let id = digest::record_id(&key, &bytes);
            table.insert(id);
            keys.insert(id, key.into_vec());
        }
        Ok(StateSummary {
            applied,
            table,
            keys,
        })
    }

    fn read_records(&self, keys: &[Vec<u8>]) -> Result<Vec<RecordState>> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(state) = self.inner.store.get_record(key)? {
                let state = state.to_vec();
                out.push((key.clone(), state));
            }
        }
        Ok(out)
    }

    fn merge_states(&self, records: &[RecordState]) -> Result<ApplyOutcome> {
        self.check_writable()?;
        let Ok(decoded) = decode_records(records.iter().cloned(), self.record_bytes_max()) else {
            return Ok(ApplyOutcome::Invalid);
        };
        let (keys, decoded): (Vec<Vec<u8>>, Vec<Record>) = decoded.into_iter().unzip();
        let remote: RemoteRecords<'_> = keys.iter().map(Vec::as_slice).zip(decoded).collect();
        let _serial = lock(&self.inner.apply_lock);
        let keys: Vec<&[u8]> = remote.iter().map(|(k, _)| *k).collect();
        let _guards = self.lock_keys(&keys);
        let seen = self.applied();
        let mut wb = self.inner.store.batch();
        let changed = self.stage_joins(remote, &seen, &mut wb, true, None)?;
        self.commit(wb)?;
        self.uncache_states(changed.iter().map(|(k, _)| *k));
        Ok(ApplyOutcome::Applied {
            changed: changed.len(),
        })
    }

    fn adopt(&self, snapshot: &VersionVector) -> Result<()> {
        let inner = &*self.inner;
        self.check_writable()?;
        let _serial = lock(&inner.apply_lock);
        let mut applied = lock(&inner.applied).clone();
        let mut floors = lock(&inner.floors).clone();
        let mut wb = inner.store.batch();
        for (origin, seq) in snapshot.iter() {
            if origin == inner.replica || seq <= applied.get(origin) {
                continue;
            }
            // Entries below the new floor can no longer be served in order: drop them.
            wb.delete_log_range(origin, floors.get(origin) + 1, seq);
            applied.add(Dot::new(origin, seq));
            floors.add(Dot::new(origin, seq));
            wb.put_meta(&keys::applied_key(origin), &seq.to_be_bytes());
            wb.put_meta(&keys::floor_key(origin), &seq.to_be_bytes());
        }
        self.commit(wb)?;
        *lock(&inner.applied) = applied;
        self.applied_advanced();
        *lock(&inner.floors) = floors;
        Ok(())
    }

    fn compact(&self, stable: &VersionVector) -> Result<Compaction> {
        let inner = &*self.inner;
        self.check_writable()?;
        let _serial = lock(&inner.apply_lock);
        let mut floors = lock(&inner.floors).clone();
        let store = &inner.store;
        let mut out = Compaction::default();
        let mut wb = store.batch();
        for (origin, upto) in stable.iter() {
            let floor = floors.get(origin);
            if upto <= floor {
                continue;
            }
            // The log is contiguous above the floor: no need to count entry by entry.
            out.log_entries_removed += upto - floor;
            wb.delete_log_range(origin, floor + 1, upto);
            wb.put_meta(&keys::floor_key(origin), &upto.to_be_bytes());
            floors.add(Dot::new(origin, upto));
        }
        // Tombstone candidates: every record that became a tombstone was marked when it did.
        let candidates: BTreeSet<Vec<u8>> = store
            .meta_with_prefix(keys::META_TOMBSTONE_PREFIX)?
            .into_iter()
            .map(|(k, _)| k[keys::META_TOMBSTONE_PREFIX.len()..].to_vec())
            .collect();
        // Keys still named by the log that stays: their tombstones are needed to ship deletes.
        let mut referenced: BTreeSet<Vec<u8>> = BTreeSet::new();
        if !candidates.is_empty() {
            for item in store.log_entries() {
                let (k, v) = item?;
                let Some((origin, seq)) = keys::parse_log_key(&k) else {
                    continue;
                };
                if seq > floors.get(origin) {
                    if let Ok(entry) = LogEntry::decode(&v) {
                        referenced.extend(entry.keys);
                    }
                }
            }
        }
        let candidate_refs: Vec<&[u8]> = candidates.iter().map(Vec::as_slice).collect();
        let _guards = self.lock_keys(&candidate_refs);
        let mut reclaimed: Vec<&Vec<u8>> = Vec::new();
        for key in &candidates {
            let pending = keys::tombstone_key(key);
            match self.load(key) {
                Ok(Some(record)) if record.is_bottom() && !record.has_counter_reset() => {
                    if stable.dominates(&record.context()) && !referenced.contains(key) {
                        wb.delete_record(key);
                        wb.delete_meta(&pending);
                        reclaimed.push(key);
                        out.tombstones_removed += 1;
                    } else {
                        wb.put_meta(&pending, &[]);
                        out.tombstones_pending += 1;
                    }
                }
                Ok(_) | Err(Error::Corrupt { .. }) | Err(Error::FutureVersion { .. }) => {
                    wb.delete_meta(&pending)
                }
                Err(e) => return Err(e),
            }
        }
        self.commit(wb)?;
        // The stripes of the reclaimed keys are still held.
        self.uncache_states(reclaimed.iter().map(|k| k.as_slice()));
        *lock(&inner.floors) = floors;
        Ok(out)
    }
}
