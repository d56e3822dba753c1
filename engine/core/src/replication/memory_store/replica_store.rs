//! `MemoryStore` as `ReplicaStore`: the engine's `replica_store.rs` and `epoch.rs` over maps.

use super::{MemoryStore, MemoryStoreError};
use crate::limits::RECORD_OVERHEAD_BYTES;
use crate::model::digest::key_hash;
use crate::model::{Dot, MemberId, OriginId, VersionVector};
use crate::replication::incoming::Incoming;
use crate::replication::{
    decode_record_states, sequence_entries, sort_joining, ApplyOutcome, Compaction, DecodedEntry,
    Exceptions, OriginView, ReadStates, RecordRange, RecordState, ReplicaStore, ShippedEntry,
    StateSummary,
};
use std::collections::{BTreeSet, HashSet};
use std::ops::Bound;
use std::sync::Arc;

impl ReplicaStore for MemoryStore {
    type Error = MemoryStoreError;

    fn origin_id(&self) -> OriginId {
        self.lock().origin
    }

    fn member_id(&self) -> MemberId {
        self.lock().member
    }

    fn origin_view(&self) -> OriginView {
        let s = self.lock();
        OriginView {
            origin: s.origin,
            epoch: s.epoch,
        }
    }

    fn start_new_epoch(&self, reason: &str) -> Result<OriginId, MemoryStoreError> {
        let mut s = self.lock();
        let (old, old_seq) = (s.origin, s.last_seq);
        // The engine draws a random epoch other than 0 and the current one.
        let current = s.epoch;
        let epoch = match s.next_epoch.take() {
            Some(e) if e != 0 && e != current => e,
            _ => current.wrapping_add(1).max(1),
        };
        let origin = s.member.epoch_origin(epoch);
        // The old origin's committed entries become those of any other origin.
        s.applied.add(Dot::new(old, old_seq));
        s.epoch = epoch;
        s.origin = origin;
        s.last_seq = 0;
        s.released = 0;
        tracing::warn!(member = %s.member, old_origin = %old, old_seq, new_origin = %origin, epoch, %reason, "writing under a new epoch");
        Ok(origin)
    }

    fn applied(&self) -> VersionVector {
        self.lock().applied()
    }

    fn exceptions(&self) -> Exceptions {
        self.lock().exceptions.to_wire()
    }

    fn stranded(&self) -> Vec<(OriginId, u64)> {
        // Nothing in memory is lost: no log has a number missing.
        Vec::new()
    }

    fn declare_lost(&self, origin: OriginId, seq: u64) -> Result<(), MemoryStoreError> {
        Err(MemoryStoreError::NothingMissing(format!(
            "{origin}:{seq} is not stranded here"
        )))
    }

    fn read_entry(
        &self,
        origin: OriginId,
        seq: u64,
    ) -> Result<Option<ShippedEntry>, MemoryStoreError> {
        let s = self.lock();
        if seq <= s.floors.get(origin) {
            return Ok(None);
        }
        let Some(logged) = s.log.get(&(origin, seq)) else {
            return Ok(None);
        };
        // The keys' current states (a key whose tombstone was reclaimed is left out).
        Ok(Some(ShippedEntry {
            states: logged
                .keys
                .iter()
                .filter_map(|k| s.records.get_key_value(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            left_out: logged.left_out.clone(),
            lost: logged.lost,
            // The model keeps no request tags (the engine does).
            request: None,
        }))
    }

    fn apply_entries(
        &self,
        origin: OriginId,
        entries: Vec<DecodedEntry>,
    ) -> Result<Vec<ApplyOutcome>, MemoryStoreError> {
        let mut s = self.lock();
        if origin == s.origin {
            return Ok(vec![ApplyOutcome::Duplicate; entries.len()]);
        }
        let (mut outcomes, accepted) = sequence_entries(&entries, s.applied.get(origin));
        let Some(have) = accepted.last().map(|e| e.seq) else {
            return Ok(outcomes);
        };
        // The frame's states joined together, then into the local records with the applied
        // vector as it stood before the frame.
        let all: Vec<_> = accepted
            .iter()
            .flat_map(|e| e.records.iter().cloned())
            .collect();
        let joined = if accepted.len() == 1 {
            all
        } else {
            match sort_joining(all) {
                Ok(joined) => joined,
                Err(_) => return Ok(vec![ApplyOutcome::Invalid; entries.len()]),
            }
        };
        let seen = s.applied();
        let remote = joined.iter().map(Incoming::of).collect();
        let changed: BTreeSet<&[u8]> = s.join(remote, &seen, None, None)?.into_iter().collect();
        for entry in &accepted {
            let keys: Vec<&[u8]> = entry.records.iter().map(|r| &r.key[..]).collect();
            s.put_log_partial(origin, entry.seq, &keys, entry.left_out.clone(), entry.lost);
            if !entry.is_whole() {
                // Declared lost: what it lacks is among the exceptions from now on (but for a
                // key that already reflects the write here).
                let dot = Dot::new(origin, entry.seq);
                let uncertain = entry
                    .left_out
                    .iter()
                    .filter(|k| {
                        !s.load(k)
                            .ok()
                            .flatten()
                            .is_some_and(|r| r.context().contains(&dot))
                    })
                    .map(|k| key_hash(k))
                    .collect();
                let lost = Exceptions {
                    lost: if entry.lost {
                        vec![(origin, entry.seq)]
                    } else {
                        vec![]
                    },
                    uncertain,
                };
                s.exceptions.absorb(&lost);
            }
        }
        s.applied.add(Dot::new(origin, have));
        // Per applied entry, how many of its records changed here.
        let mut applied = accepted.iter();
        for outcome in &mut outcomes {
            if let ApplyOutcome::Applied { changed: n } = outcome {
                if let Some(entry) = applied.next() {
                    *n = entry
                        .records
                        .iter()
                        .filter(|r| changed.contains(&r.key[..]))
                        .count();
                }
            }
        }
        Ok(outcomes)
    }

    fn log_floor(&self) -> VersionVector {
        self.lock().floors.clone()
    }

    fn summarize(&self, cells: usize) -> Result<StateSummary, MemoryStoreError> {
        let mut s = self.lock();
        let table = s.summary().fold(cells);
        Ok(StateSummary {
            applied: s.applied(),
            exceptions: s.exceptions.to_wire(),
            table,
            records: s.records.len() as u64,
        })
    }

    fn summary_cells(&self) -> usize {
        crate::replication::SUMMARY_CELLS
    }

    fn record_count(&self) -> Result<u64, MemoryStoreError> {
        Ok(self.lock().records.len() as u64)
    }

    fn keys_for_hashes(&self, hashes: &[u64]) -> Result<Vec<Vec<u8>>, MemoryStoreError> {
        // No index: every key's hash is computed (the engine keeps a keys-by-hash index).
        let wanted: HashSet<u64> = hashes.iter().copied().collect();
        Ok(self
            .lock()
            .records
            .keys()
            .filter(|k| wanted.contains(&key_hash(k)))
            .map(|k| k.to_vec())
            .collect())
    }

    fn read_records(&self, keys: &[Vec<u8>]) -> Result<ReadStates, MemoryStoreError> {
        let mut sorted: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        sorted.sort_unstable();
        let s = self.lock();
        // Nothing in memory is damaged: every record held is read.
        Ok(ReadStates {
            records: sorted
                .into_iter()
                .filter_map(|k| s.records.get(k).map(|v| (k.to_vec(), v.to_vec())))
                .collect(),
            left_out: Vec::new(),
        })
    }

    fn read_range(&self, from: &[u8], bytes: usize) -> Result<RecordRange, MemoryStoreError> {
        let s = self.lock();
        let mut out = Vec::new();
        let mut size = 0;
        let range = s
            .records
            .range::<[u8], _>((Bound::Included(from), Bound::Unbounded));
        for (key, state) in range {
            if !out.is_empty() && size + key.len() + state.len() + RECORD_OVERHEAD_BYTES > bytes {
                return Ok(range_of(out, Some(key.to_vec())));
            }
            size += key.len() + state.len() + RECORD_OVERHEAD_BYTES;
            out.push((key.to_vec(), state.to_vec()));
        }
        Ok(range_of(out, None))
    }

    fn drop_absent(
        &self,
        from: &[u8],
        through: Option<&[u8]>,
        present: &BTreeSet<Vec<u8>>,
        seen: &VersionVector,
        spare: &BTreeSet<u64>,
    ) -> Result<usize, MemoryStoreError> {
        let mut s = self.lock();
        let end = through.map_or(Bound::Unbounded, Bound::Excluded);
        let absent: Vec<Arc<[u8]>> = s
            .records
            .range::<[u8], _>((Bound::Included(from), end))
            .map(|(k, _)| k.clone())
            .filter(|k| !present.contains(&k[..]) && !spare.contains(&key_hash(k)))
            .collect();
        let keys: Vec<&[u8]> = absent.iter().map(|k| &k[..]).collect();
        s.drop_covered(&keys, seen)
    }

    fn merge_states(
        &self,
        records: &[RecordState],
        horizon: &VersionVector,
        spare: &BTreeSet<u64>,
    ) -> Result<ApplyOutcome, MemoryStoreError> {
        let mut left_out = Vec::new();
        let Ok(decoded) = decode_record_states(records, self.record_bytes_max(), &mut left_out)
        else {
            return Ok(ApplyOutcome::Invalid);
        };
        let remote = decoded.iter().map(Incoming::of).collect();
        let mut s = self.lock();
        if !left_out.is_empty() {
            // States refused here: their keys may lack what the snapshot covers.
            let uncertain = left_out.iter().map(|k| key_hash(k)).collect();
            s.exceptions.absorb(&Exceptions {
                lost: vec![],
                uncertain,
            });
        }
        let seen = s.applied();
        let changed = s.join(remote, &seen, Some((horizon, spare)), None)?;
        Ok(ApplyOutcome::Applied {
            changed: changed.len(),
        })
    }

    fn drop_covered(
        &self,
        keys: &[Vec<u8>],
        seen: &VersionVector,
    ) -> Result<usize, MemoryStoreError> {
        let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        self.lock().drop_covered(&keys, seen)
    }

    fn created_mark(&self) -> u64 {
        self.lock().created.mark()
    }

    fn created_since(&self, mark: u64) -> Option<Vec<Vec<u8>>> {
        self.lock().created.since(mark)
    }

    fn adopt(
        &self,
        snapshot: &VersionVector,
        exceptions: &Exceptions,
    ) -> Result<(), MemoryStoreError> {
        let mut s = self.lock();
        s.exceptions.absorb(exceptions);
        for (origin, seq) in snapshot.iter() {
            if origin == s.origin || seq <= s.applied.get(origin) {
                continue;
            }
            // Entries below the new floor can no longer be served in order: dropped.
            let floor = s.floors.get(origin);
            s.delete_log_range(origin, floor + 1, seq);
            s.applied.add(Dot::new(origin, seq));
            s.floors.add(Dot::new(origin, seq));
        }
        Ok(())
    }

    fn compact(&self, stable: &VersionVector) -> Result<Compaction, MemoryStoreError> {
        let mut s = self.lock();
        let mut out = Compaction::default();
        for (origin, upto) in stable.iter() {
            let floor = s.floors.get(origin);
            if upto <= floor {
                continue;
            }
            // Counted as the engine counts it: the log is contiguous above the floor.
            out.log_entries_removed += upto - floor;
            s.delete_log_range(origin, floor + 1, upto);
            s.floors.add(Dot::new(origin, upto));
        }
        // Reclaimable: a tombstone (no counter reset to remember) whose every dot is stable.
        let mut reclaimable = Vec::new();
        for key in s.tombstones.clone() {
            out.tombstones_examined += 1;
            match s.load(&key)? {
                Some(r) if r.is_bottom() && !r.has_counter_reset() => {
                    if stable.dominates(&r.context()) {
                        reclaimable.push(key);
                    } else {
                        out.tombstones_pending += 1;
                    }
                }
                // Gone, or written again since: no longer a candidate.
                _ => {
                    s.tombstones.remove(&key);
                }
            }
        }
        // Keys still named by the log that stays: their tombstones ship deletes.
        let referenced: BTreeSet<&[u8]> = s
            .log
            .values()
            .flat_map(|logged| logged.keys.iter().map(|k| &k[..]))
            .collect();
        let (reclaimed, pending): (Vec<_>, Vec<_>) = reclaimable
            .into_iter()
            .partition(|k| !referenced.contains(&k[..]));
        out.tombstones_pending += pending.len() as u64;
        for key in reclaimed {
            s.remove_record(&key);
            out.tombstones_removed += 1;
        }
        Ok(out)
    }

    fn release_shipped(&self, upto: u64) {
        let mut s = self.lock();
        s.released = s.released.max(upto);
    }
}

fn range_of(records: Vec<RecordState>, next: Option<Vec<u8>>) -> RecordRange {
    RecordRange {
        states: ReadStates {
            records,
            left_out: Vec::new(),
        },
        next,
    }
}
