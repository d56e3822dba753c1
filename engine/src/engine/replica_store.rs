//! `Engine` as the replication core's storage seam: reading log entries with the current states
//! of their records, applying a peer's entry atomically (records joined, entry logged for
//! relaying, applied vector advanced), state transfer for anti-entropy, and compaction (log
//! truncation and tombstone collection at causal stability).

use super::faults::Stored;
use super::Replication;
use crate::engine::{lock, Engine};
use crate::engine::{read_lock, write_lock};
use crate::error::{Error, Result};
use crate::limits::RECORD_OVERHEAD_BYTES;
use crate::model::digest::state_hash;
use crate::model::{codec, Dot, MemberId, OriginId, Record, VersionVector};
use crate::replication::iblt::Iblt;
use crate::replication::incoming::{Incoming, Theirs};
use crate::replication::{
    decode_record_states, sequence_entries, sort_joining_by, ApplyOutcome, Compaction,
    DecodedEntry, Exceptions, OriginView, ReadStates, RecordRange, RecordState, ReplicaStore,
    ShippedEntry, StateSummary,
};
use crate::store::{keys, AtomicWrite, LogEntry};
use std::borrow::Cow;
use std::collections::BTreeSet;

/// Sorts peer records by key, joining those of a key into one (the same state shipped with
/// two entries is kept as it came).
fn sort_joining<'k>(all: Vec<Incoming<'k>>) -> Result<Vec<Incoming<'k>>> {
    sort_joining_by(
        all,
        |i| i.key,
        |into, next| -> Result<()> {
            if let (Theirs::Received { bytes: a, .. }, Theirs::Received { bytes: b, .. }) =
                (&into.state, &next.state)
            {
                if a == b {
                    return Ok(()); // the same current state, shipped with two entries
                }
            }
            let mut joined = into
                .decoded()
                .map_err(|e| Error::from_codec("remote record", into.key, e))?
                .into_owned();
            joined.join(
                &*next
                    .decoded()
                    .map_err(|e| Error::from_codec("remote record", next.key, e))?,
            );
            into.state = Theirs::Decoded(joined);
            Ok(())
        },
    )
}

impl Engine {
    /// Joins peer records (sorted by key, one per key) into the local ones, staging changes
    /// (and marks for new tombstones) in `wb`; returns the keys whose record changed, in
    /// order. The caller holds the keys' stripes; `seen` is this replica's applied vector.
    /// A key new here whose state `seen` does not prune is stored as the bytes it arrived as.
    /// A local record that does not decode is replaced by the peer's state when `repair` is
    /// set, an error otherwise; `record_max` refuses merges that would grow past it. With a
    /// `horizon` (a state transfer's snapshot), the peer is known to have applied every write
    /// in it: dots it covers that the peer's state does not hold are removed here too, but
    /// for keys whose hash is in the horizon's spare set (the peer does not vouch for them).
    /// What the exceptions name (`declared_lost.rs`) is not counted as seen: a copy of a
    /// write declared lost that arrives later is kept. The caller holds the engine's gate for
    /// reading (the anti-entropy summary is updated here, for the batch it then commits).
    pub(crate) fn stage_joins<'k>(
        &self,
        remote: Vec<Incoming<'k>>,
        seen: &VersionVector,
        wb: &mut AtomicWrite<'_>,
        repair: bool,
        record_max: Option<usize>,
        horizon: Option<(&VersionVector, &BTreeSet<u64>)>,
    ) -> Result<Vec<&'k [u8]>> {
        let inner = &*self.inner;
        if let Some(marker) = remote.iter().filter_map(Incoming::max_marker).max() {
            lock(&inner.clock).observe(marker, inner.config.clock.now_ms());
        }
        let encode = |key: &[u8], record: &Record| {
            codec::encode_record(record).map_err(|e| Error::from_codec("record", key, e))
        };
        let mut changed = Vec::new();
        let keys: Vec<&[u8]> = remote.iter().map(|i| i.key).collect();
        let stored_all = inner.store.get_records(&keys)?;
        let exceptions = lock(&inner.exceptions).clone();
        for (theirs, stored) in remote.into_iter().zip(stored_all) {
            let key = theirs.key;
            let stored = stored.as_deref();
            let (local, damaged) = match stored.map(codec::decode_record) {
                None => (None, false),
                Some(Ok(r)) => (Some(r), false),
                Some(Err(e)) if repair => {
                    self.note_fault(super::faults::Stored::Record, key, &e);
                    // Unreadable here: replaced by the state of a peer that applied every
                    // write this replica did (a state transfer whose snapshot covers the
                    // applied vector), joined plainly. Any other state could lack a write the
                    // damaged one held (a removal among them: what it removed would come
                    // back); the key stays damaged (and uncertain) until such a state comes.
                    let vouched = horizon.is_some_and(|(h, spare)| {
                        h.dominates(seen) && !spare.contains(&crate::model::digest::key_hash(key))
                    });
                    if !vouched {
                        continue;
                    }
                    tracing::warn!(key = %crate::error::show(key), error = %e, "replacing a corrupt record with a peer's state");
                    self.repaired(key);
                    (None, true)
                }
                Some(Err(e)) => return Err(Error::from_codec("record", key, e)),
            };
            let seen = match damaged {
                true => Cow::Owned(VersionVector::new()),
                false => exceptions.seen_for(key, seen),
            };
            let seen = &*seen;
            let horizon = horizon.and_then(|(h, spare)| {
                let vouched = !damaged
                    && (spare.is_empty() || !spare.contains(&crate::model::digest::key_hash(key)));
                vouched.then_some(h)
            });
            let (bytes, bottom): (Cow<'_, [u8]>, bool) = match (local, &theirs.state) {
                // Joined into nothing, the state stays as it came: keep its bytes.
                (None, Theirs::Received { bytes, facts }) if !facts.has_dot_in(seen) => {
                    (Cow::Borrowed(*bytes), facts.bottom)
                }
                (local, _) => {
                    let remote = theirs
                        .decoded()
                        .map_err(|e| Error::from_codec("remote record", key, e))?;
                    let mut merged = match local {
                        Some(local) => {
                            count_conflict(&local, &remote);
                            local
                        }
                        None => Record::default(),
                    };
                    match horizon {
                        Some(h) => merged.join_seen_within(&remote, seen, h),
                        None => merged.join_seen(&remote, seen),
                    }
                    (Cow::Owned(encode(key, &merged)?), merged.is_bottom())
                }
            };
            if stored == Some(&bytes[..]) {
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
            self.mark_expiring(wb, key, &bytes);
            if stored.is_none() {
                wb.index_key(key);
                lock(&inner.created).created(key);
            }
            if bottom {
                // A new tombstone (also by state transfer, without a log entry): compaction
                // reclaims it once it is stable.
                self.mark_tombstone(wb, key);
            }
            if inner.digest.is_built() {
                inner
                    .digest
                    .changed(key, stored.map(state_hash), Some(state_hash(&bytes)));
            }
            changed.push(key);
        }
        Ok(changed)
    }
}

/// Whether a RocksDB error is about damaged data (the item is unusable) rather than the
/// storage failing (the engine cannot go on).
fn is_corruption(e: &rocksdb::Error) -> bool {
    matches!(e.kind(), rocksdb::ErrorKind::Corruption)
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

impl Engine {
    /// I1 when shipping: an uncertain key (its state may lack what the applied vector covers:
    /// damaged and repaired, or received partial) whose state does not reflect the entry's
    /// write `dot` is left out of the entry rather than shipped as if it did. Other keys ship
    /// as they are, undecoded.
    fn leave_out_unreflected(&self, dot: Dot, out: &mut ShippedEntry) {
        let exceptions = lock(&self.inner.exceptions);
        if exceptions.is_empty() {
            return;
        }
        let mut kept = Vec::with_capacity(out.states.len());
        for (key, state) in std::mem::take(&mut out.states) {
            let reflects = !exceptions.is_uncertain(&key)
                || codec::decode_record(&state).is_ok_and(|r| r.context().contains(&dot));
            if reflects {
                kept.push((key, state));
            } else {
                out.left_out.push(key.to_vec());
            }
        }
        out.states = kept;
    }

    /// Whether the stored record of `key` reflects the write `dot` (its context holds it).
    fn reflects(&self, key: &[u8], dot: Dot) -> bool {
        matches!(self.inner.store.get_record(key), Ok(Some(bytes))
            if codec::decode_record(&bytes).is_ok_and(|r| r.context().contains(&dot)))
    }
}

impl ReplicaStore for Replication {
    type Error = Error;

    fn origin_id(&self) -> OriginId {
        Engine::origin_id(&self.engine)
    }

    fn member_id(&self) -> MemberId {
        Engine::member_id(&self.engine)
    }

    fn origin_view(&self) -> OriginView {
        let status = self.origin_status();
        OriginView {
            origin: status.origin,
            epoch: status.epoch,
        }
    }

    fn start_new_epoch(&self, reason: &str) -> Result<OriginId> {
        Engine::start_new_epoch(&self.engine, reason)
    }

    fn drop_covered(&self, keys: &[Vec<u8>], seen: &VersionVector) -> Result<usize> {
        let inner = &*self.inner;
        self.check_writable()?;
        let mut sorted: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        sorted.sort_unstable();
        sorted.dedup();
        // Gate before the apply lock (the order every path takes them in).
        let _gate = read_lock(&inner.gate);
        let _serial = lock(&inner.apply_lock);
        let _guards = self.lock_keys(&sorted);
        let mut wb = inner.store.batch();
        let mut changed = Vec::new();
        let mut damaged = Vec::new();
        for key in &sorted {
            let Some(stored) = inner.store.get_record(key)? else {
                continue;
            };
            let mut record = match codec::decode_record(&stored) {
                Ok(record) => record,
                Err(codec::CodecError::Malformed(_) | codec::CodecError::Empty) => {
                    damaged.push(key.to_vec());
                    continue;
                }
                // From a newer format: left as it is.
                Err(_) => continue,
            };
            if !record.remove_covered(seen) {
                continue;
            }
            let bytes =
                codec::encode_record(&record).map_err(|e| Error::from_codec("record", key, e))?;
            wb.put_record(key, &bytes);
            self.mark_expiring(&mut wb, key, &bytes);
            if record.is_bottom() {
                self.mark_tombstone(&mut wb, key);
            }
            if inner.digest.is_built() {
                let old = Some(state_hash(&stored));
                inner.digest.changed(key, old, Some(state_hash(&bytes)));
            }
            changed.push(*key);
        }
        let mut done = changed.len();
        if !changed.is_empty() {
            self.commit(wb)?;
            self.uncache_states(changed.iter().copied());
            tracing::info!(
                records = changed.len(),
                "removed dots a peer had removed (this replica held older states)"
            );
        }
        drop((_guards, _serial, _gate));
        // A damaged record the peer holds nothing of, when the peer has applied everything
        // this replica has: nothing it could hold is anywhere else.
        if !damaged.is_empty() && seen.dominates(&self.applied()) {
            done += self.drop_damaged(&damaged)?;
        }
        Ok(done)
    }

    fn damaged(&self) -> Vec<Vec<u8>> {
        self.damaged_keys()
    }

    fn reconciling(&self) -> Option<VersionVector> {
        self.reconcile_vector()
    }

    fn reconciled(&self) -> Result<()> {
        self.mark_reconciled()
    }

    fn drop_damaged(&self, keys: &[Vec<u8>]) -> Result<usize> {
        let inner = &*self.inner;
        self.check_writable()?;
        let mut sorted: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        sorted.sort_unstable();
        sorted.dedup();
        let _gate = read_lock(&inner.gate);
        let _serial = lock(&inner.apply_lock);
        let _guards = self.lock_keys(&sorted);
        let mut wb = inner.store.batch();
        let mut gone = Vec::new();
        for key in sorted {
            let Some(stored) = inner.store.get_record(key)? else {
                continue;
            };
            let Err(e @ (codec::CodecError::Malformed(_) | codec::CodecError::Empty)) =
                codec::decode_record(&stored)
            else {
                continue;
            };
            // No copy is left to repair it from, and what it held is lost; the key stays
            // uncertain, so a copy that turns up later is joined whole.
            self.note_fault(Stored::Record, key, &e);
            self.repaired(key);
            tracing::warn!(key = %crate::error::show(key), "a damaged record no peer holds is removed: what it held is lost");
            wb.delete_record(key);
            wb.unindex_key(key);
            if inner.digest.is_built() {
                inner.digest.changed(key, Some(state_hash(&stored)), None);
            }
            gone.push(key);
        }
        if gone.is_empty() {
            return Ok(0);
        }
        self.commit(wb)?;
        self.uncache_states(gone.iter().copied());
        Ok(gone.len())
    }

    fn applied(&self) -> VersionVector {
        Engine::applied(&self.engine)
    }

    fn exceptions(&self) -> Exceptions {
        self.declared_lost()
    }

    fn stranded(&self) -> Vec<(OriginId, u64)> {
        self.stranded_origins()
    }

    fn declare_lost(&self, origin: OriginId, seq: u64) -> Result<()> {
        self.declare_stranded_lost(origin, seq)
    }

    fn read_entry(&self, origin: OriginId, seq: u64) -> Result<Option<ShippedEntry>> {
        if seq <= lock(&self.inner.floors).get(origin) {
            return Ok(None);
        }
        // Current states: from the entry's cells where recently written, else from RocksDB.
        let mut out = ShippedEntry::default();
        let mut missing = Vec::new();
        let cached = lock(&self.inner.entry_keys).get(&(origin, seq));
        match cached {
            Some(cached) => {
                out.request = cached.request.as_deref().cloned();
                let cells = cached.cells;
                out.states.reserve(cells.len());
                for cell in cells.iter() {
                    match cell.state() {
                        Some(state) => out.states.push((cell.shared_key(), state)),
                        None => missing.push(cell.key().to_vec()),
                    }
                }
            }
            None => {
                let bytes = match self.inner.store.get_log(origin, seq) {
                    Ok(Some(bytes)) => bytes,
                    Ok(None) => return Ok(None),
                    Err(e) if is_corruption(&e) => {
                        self.note_fault(Stored::LogEntry, &keys::log_key(origin, seq), &e);
                        return Ok(None);
                    }
                    Err(e) => return Err(e.into()),
                };
                let entry = match LogEntry::decode(&bytes) {
                    Ok(entry) => entry,
                    // Which keys it named is lost: peers that need it get the state instead
                    // (`None` is what a truncated log answers).
                    Err(e) => {
                        self.note_fault(Stored::LogEntry, &keys::log_key(origin, seq), &e);
                        return Ok(None);
                    }
                };
                out.left_out = entry.left_out;
                out.lost = entry.lost;
                out.request = entry.request;
                out.states.reserve(entry.keys.len());
                for key in entry.keys {
                    match self.inner.states.get(&key) {
                        Some(state) => out.states.push((key.into(), state)),
                        None => missing.push(key),
                    }
                }
            }
        }
        if !missing.is_empty() {
            let read = self.read_records(&missing)?;
            // A key held nowhere here any more but uncertain (a damaged record removed: what
            // it held is lost) is left out, not taken for a reclaimed delete.
            let exceptions = lock(&self.inner.exceptions);
            for key in &missing {
                let found =
                    read.records.iter().any(|(k, _)| k == key) || read.left_out.contains(key);
                if !found && exceptions.is_uncertain(key) {
                    out.left_out.push(key.clone());
                }
            }
            drop(exceptions);
            out.states
                .extend(read.records.into_iter().map(|(k, v)| (k.into(), v.into())));
            // Unreadable here: the entry ships partial, and its peer waits for a whole copy.
            out.left_out.extend(read.left_out);
        }
        self.leave_out_unreflected(Dot::new(origin, seq), &mut out);
        Ok(Some(out))
    }

    fn apply_entries(
        &self,
        origin: OriginId,
        entries: Vec<DecodedEntry>,
    ) -> Result<Vec<ApplyOutcome>> {
        let inner = &*self.inner;
        self.check_writable()?;
        if origin == self.origin_id() {
            return Ok(vec![ApplyOutcome::Duplicate; entries.len()]);
        }
        // Gate before the apply lock (the order every path takes them in).
        let _gate = read_lock(&inner.gate);
        let _serial = lock(&inner.apply_lock);
        // Decide each entry's fate before touching anything.
        let (mut outcomes, accepted) = sequence_entries(&entries, lock(&inner.applied).get(origin));
        let Some(have) = accepted.last().map(|e| e.seq) else {
            return Ok(outcomes);
        };
        // I1: the vector advances over consecutive entries from the next expected one only.
        debug_assert!(accepted
            .iter()
            .zip(lock(&inner.applied).get(origin) + 1..)
            .all(|(e, expected)| e.seq == expected));
        // The frame's states joined together, then into the local records with the applied
        // vector as it stood before the frame (the same result as entry by entry: a state is
        // a lattice element, and dots of this frame are not in that vector), in one batch.
        let mut wb = inner.store.batch();
        let mut all: Vec<Incoming<'_>> =
            Vec::with_capacity(accepted.iter().map(|e| e.records.len()).sum());
        let mut declared = Exceptions::default();
        let mut tagged = 0;
        let now_ms = inner.config.clock.now_ms();
        for entry in &accepted {
            let keys: Vec<&[u8]> = entry.records.iter().map(|r| &r.key[..]).collect();
            if let Some(tag) = &entry.request {
                // A retry of the request in this region is answered with this write.
                if self.stage_request(&mut wb, tag, Dot::new(origin, entry.seq), now_ms)? {
                    tagged += 1;
                }
            }
            if entry.is_whole() {
                wb.put_log(
                    origin,
                    entry.seq,
                    &LogEntry::encode_whole(&keys, entry.request.as_ref()),
                );
            } else {
                // Applied partial (no whole copy came within the bound): what it lacks is
                // declared lost, and it is relayed as partial.
                let logged = LogEntry {
                    keys: keys.iter().map(|k| k.to_vec()).collect(),
                    left_out: entry.left_out.clone(),
                    lost: entry.lost,
                    request: entry.request.clone(),
                };
                wb.put_log(origin, entry.seq, &logged.encode());
                if entry.lost {
                    declared.lost.push((origin, entry.seq));
                }
                // A key left out that already reflects the write here (a whole copy came
                // another way) is not uncertain.
                let dot = Dot::new(origin, entry.seq);
                declared.uncertain.extend(
                    entry
                        .left_out
                        .iter()
                        .filter(|k| !self.reflects(k, dot))
                        .map(|k| crate::model::digest::key_hash(k)),
                );
                tracing::error!(%origin, seq = entry.seq, lost = entry.lost, left_out = ?entry.left_out.iter().map(|k| crate::error::show(k).to_string()).collect::<Vec<_>>(), "no member can supply this entry whole: applied partial, what it lacks declared lost");
            }
            all.extend(entry.records.iter().map(Incoming::of));
        }
        let remote = if accepted.len() == 1 {
            all // one entry's records are sorted and distinct already
        } else {
            sort_joining(all)?
        };
        let keys: Vec<&[u8]> = remote.iter().map(|i| i.key).collect();
        let _guards = self.lock_keys(&keys);
        let seen = self.applied();
        let changed = self.stage_joins(remote, &seen, &mut wb, true, None, None)?;
        if !declared.lost.is_empty() || !declared.uncertain.is_empty() {
            let change = lock(&inner.exceptions).absorb(&declared);
            self.stage_exceptions(&mut wb, &change);
        }
        // A stranded origin's log holds entries beyond the number just supplied: they count
        // again, up to the next number missing.
        let have = match lock(&inner.stranded).get(&origin).copied() {
            Some(held) if held > have => {
                let mut through = have;
                for s in inner.store.log_seqs(origin, have + 1, held)? {
                    if s != through + 1 {
                        break;
                    }
                    through = s;
                }
                through
            }
            _ => have,
        };
        wb.put_meta(&keys::applied_key(origin), &have.to_be_bytes());
        self.commit(wb)?;
        self.requests_recorded(tagged);
        self.uncache_states(changed.iter().copied());
        lock(&inner.applied).add(Dot::new(origin, have));
        self.unstrand(origin, have);
        self.applied_advanced();
        // Report, per applied entry, how many of its records changed here.
        let everything = changed.len() == keys.len();
        let mut applied = accepted.iter();
        for outcome in &mut outcomes {
            if let ApplyOutcome::Applied { changed: n } = outcome {
                if let Some(entry) = applied.next() {
                    *n = if everything {
                        entry.records.len()
                    } else {
                        entry
                            .records
                            .iter()
                            .filter(|r| changed.binary_search(&&r.key[..]).is_ok())
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
        let inner = &*self.inner;
        if inner.digest.needs_build() {
            self.build_summary()?;
        }
        // Under the gate: no record changes while the table is copied and the vector read.
        let _gate = write_lock(&inner.gate);
        let applied = self.applied();
        let (table, records) = inner
            .digest
            .read(cells)
            .unwrap_or_else(|| (Iblt::with_cells(cells), 0));
        Ok(StateSummary {
            applied,
            exceptions: self.declared_lost(),
            table,
            records,
        })
    }

    fn summary_cells(&self) -> usize {
        crate::replication::SUMMARY_CELLS
    }

    fn record_count(&self) -> Result<u64> {
        if self.inner.digest.needs_build() {
            self.build_summary()?;
        }
        Ok(self.inner.digest.records())
    }

    fn keys_for_hashes(&self, hashes: &[u64]) -> Result<Vec<Vec<u8>>> {
        let mut keys = Vec::with_capacity(hashes.len());
        for h in hashes {
            keys.extend(self.inner.store.keys_with_hash(*h)?);
        }
        keys.sort_unstable();
        keys.dedup();
        Ok(keys)
    }

    fn read_range(&self, from: &[u8], bytes: usize) -> Result<RecordRange> {
        let mut out = RecordRange::default();
        let mut size = 0;
        let max = crate::limits::ENTRY_BYTES_MAX;
        for item in self.inner.store.records_from(from, None) {
            let (key, state) = item?;
            let len = key.len() + state.len() + RECORD_OVERHEAD_BYTES;
            if (!out.states.records.is_empty() || !out.states.left_out.is_empty())
                && size + len > bytes
            {
                out.next = Some(key.into_vec());
                return Ok(out);
            }
            // A record that does not check, or that no frame carries, is not shipped (its
            // fault stays its own) but named: the receiver does not take the gap for a delete.
            if let Err(e) = codec::check_record(&state) {
                self.note_fault(Stored::Record, &key, &e);
                size += key.len() + RECORD_OVERHEAD_BYTES;
                out.states.left_out.push(key.into_vec());
                continue;
            }
            if len > max {
                metrics::counter!("meridian_replication_records_unshippable_total").increment(1);
                size += key.len() + RECORD_OVERHEAD_BYTES;
                out.states.left_out.push(key.into_vec());
                continue;
            }
            size += len;
            out.states.records.push((key.into_vec(), state.into_vec()));
        }
        Ok(out)
    }

    fn drop_absent(
        &self,
        from: &[u8],
        through: Option<&[u8]>,
        present: &BTreeSet<Vec<u8>>,
        seen: &VersionVector,
        spare: &BTreeSet<u64>,
    ) -> Result<usize> {
        let (mut absent, mut spared) = (Vec::new(), Vec::new());
        for item in self.inner.store.records_from(from, through) {
            let (key, _) = item?;
            if present.contains(&key[..]) {
                continue;
            }
            if spare.contains(&crate::model::digest::key_hash(&key)) {
                spared.push(key.into_vec());
            } else {
                absent.push(key.into_vec());
            }
        }
        // A key the peer does not vouch for loses nothing readable: only a damaged record
        // goes (`drop_covered` with nothing covered).
        let mut changed = 0;
        if !spared.is_empty() {
            changed += self.drop_covered(&spared, &VersionVector::new())?;
        }
        if !absent.is_empty() {
            changed += self.drop_covered(&absent, seen)?;
        }
        Ok(changed)
    }

    fn read_records(&self, keys: &[Vec<u8>]) -> Result<ReadStates> {
        // One batched lookup; RocksDB wants the keys sorted, which log entries' keys are.
        let mut sorted: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        if !sorted.is_sorted() {
            sorted.sort_unstable();
        }
        let found = self.inner.store.get_records_each(&sorted);
        let mut out = ReadStates {
            records: Vec::with_capacity(sorted.len()),
            left_out: Vec::new(),
        };
        for (key, state) in sorted.iter().zip(found) {
            // A record that cannot be read or checked is not shipped (peers would refuse it)
            // but named, so that they know they lack it. The fault stays with its key.
            match state {
                Ok(Some(state)) => match codec::check_record(&state) {
                    Ok(_) => out.records.push((key.to_vec(), state.to_vec())),
                    Err(e) => {
                        self.note_fault(Stored::Record, key, &e);
                        out.left_out.push(key.to_vec());
                    }
                },
                Ok(None) => {}
                Err(e) if is_corruption(&e) => {
                    self.note_fault(Stored::Record, key, &e);
                    out.left_out.push(key.to_vec());
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    fn merge_states(
        &self,
        records: &[RecordState],
        horizon: &VersionVector,
        spare: &BTreeSet<u64>,
    ) -> Result<ApplyOutcome> {
        self.check_writable()?;
        let mut left_out = Vec::new();
        let Ok(decoded) = decode_record_states(records, self.record_bytes_max(), &mut left_out)
        else {
            return Ok(ApplyOutcome::Invalid);
        };
        let remote: Vec<Incoming<'_>> = decoded.iter().map(Incoming::of).collect();
        let _gate = read_lock(&self.inner.gate);
        let _serial = lock(&self.inner.apply_lock);
        let keys: Vec<&[u8]> = remote.iter().map(|i| i.key).collect();
        let _guards = self.lock_keys(&keys);
        let seen = self.applied();
        let mut wb = self.inner.store.batch();
        if !left_out.is_empty() {
            // States refused here: their keys may lack what the snapshot covers.
            let uncertain = left_out
                .iter()
                .map(|k| crate::model::digest::key_hash(k))
                .collect();
            let change = lock(&self.inner.exceptions).absorb(&Exceptions {
                lost: vec![],
                uncertain,
            });
            self.stage_exceptions(&mut wb, &change);
        }
        let changed =
            self.stage_joins(remote, &seen, &mut wb, true, None, Some((horizon, spare)))?;
        self.commit(wb)?;
        self.uncache_states(changed.iter().copied());
        Ok(ApplyOutcome::Applied {
            changed: changed.len(),
        })
    }

    fn created_mark(&self) -> u64 {
        lock(&self.inner.created).mark()
    }

    fn created_since(&self, mark: u64) -> Option<Vec<Vec<u8>>> {
        lock(&self.inner.created).since(mark)
    }

    fn adopt(&self, snapshot: &VersionVector, exceptions: &Exceptions) -> Result<()> {
        let inner = &*self.inner;
        self.check_writable()?;
        // Gate before the apply lock (the order every path takes them in).
        let _gate = read_lock(&inner.gate);
        let _serial = lock(&inner.apply_lock);
        let me = self.origin_id();
        let mut applied = lock(&inner.applied).clone();
        let mut floors = lock(&inner.floors).clone();
        let mut wb = inner.store.batch();
        // What the sender's records did not reflect holds here too from now on.
        let change = lock(&inner.exceptions).absorb(exceptions);
        self.stage_exceptions(&mut wb, &change);
        let stranded = lock(&inner.stranded).clone();
        for (origin, seq) in snapshot.iter() {
            if origin == me || seq <= applied.get(origin) {
                continue;
            }
            // Entries below the new floor can no longer be served in order: drop them.
            wb.delete_log_range(origin, floors.get(origin) + 1, seq);
            floors.add(Dot::new(origin, seq));
            wb.put_meta(&keys::floor_key(origin), &seq.to_be_bytes());
            // A stranded origin's log holds entries beyond the snapshot: they count again, up
            // to the next number missing (as when a peer supplies the missing entry).
            let mut through = seq;
            if let Some(held) = stranded.get(&origin).filter(|held| **held > seq) {
                for s in inner.store.log_seqs(origin, seq + 1, *held)? {
                    if s != through + 1 {
                        break;
                    }
                    through = s;
                }
            }
            applied.add(Dot::new(origin, through));
            wb.put_meta(&keys::applied_key(origin), &through.to_be_bytes());
        }
        self.commit(wb)?;
        for (origin, seq) in applied.iter() {
            self.unstrand(origin, seq);
        }
        *lock(&inner.applied) = applied;
        self.applied_advanced();
        *lock(&inner.floors) = floors;
        Ok(())
    }

    fn release_shipped(&self, upto: u64) {
        let inner = &*self.inner;
        let from = {
            let mut released = lock(&inner.released);
            if upto <= *released {
                return;
            }
            std::mem::replace(&mut *released, upto) + 1
        };
        let me = self.origin_id();
        let entries: Vec<_> = {
            let mut cache = lock(&inner.entry_keys);
            // Only the cells of recent entries, still in the processor's caches, are worth
            // releasing one by one; older ones (a backlog shipped after an outage) leave with
            // the oldest items when the budget needs the room.
            let recent = cache.budget() as u64 / 4;
            if upto - from < cache.len() as u64 {
                (from..=upto)
                    .filter_map(|seq| cache.take_aged(&(me, seq)))
                    .filter_map(|(cached, age)| (age <= recent).then_some(cached.cells))
                    .collect()
            } else {
                cache.remove_matching(|(origin, seq)| *origin == me && *seq <= upto);
                Vec::new()
            }
        };
        // Shipped everywhere: the states stay only where a newer entry still needs them.
        inner
            .states
            .release(entries.iter().flat_map(|cells| cells.iter()));
    }

    fn compact(&self, stable: &VersionVector) -> Result<Compaction> {
        self.compact_to(stable)
    }

    fn reclaim_expired(&self) -> Result<u64> {
        Engine::reclaim_expired(self)
    }

    fn note_member_version(&self, member: MemberId, version: u8) {
        self.note_member_release(member, version);
    }
}

#[cfg(test)]
mod tests {
    //! The shipping caches, seen from inside the engine.
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::replication::RecordState;
    use crate::Config;

    fn engine(dir: &std::path::Path, id: u64) -> Replication {
        let config = Config {
            member_id: Some(MemberId(id)),
            ..Config::default()
        };
        Engine::open(dir, config).expect("open").replication()
    }

    fn owned_entry(e: &Replication, origin: OriginId, seq: u64) -> Option<Vec<RecordState>> {
        let states = e.read_entry(origin, seq).unwrap()?.states;
        Some(
            states
                .iter()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect(),
        )
    }

    /// Entries every other member has applied leave the in-memory caches, except the states a
    /// newer entry still needs; what is shipped afterwards is still the current state.
    #[test]
    fn shipped_entries_leave_the_caches_and_still_ship_current_states() {
        let da = tempfile::tempdir().unwrap();
        let ea = engine(da.path(), 1);
        ea.enable_replication_cache();
        let current = |key: &[u8]| vec![(key.to_vec(), ea.export(key).unwrap().unwrap())];
        ea.put(b"a", b"1").unwrap(); // entry 1
        ea.put(b"b", b"1").unwrap(); // entry 2
        ea.put(b"a", b"2").unwrap(); // entry 3 rewrites a
        ea.release_shipped(2);
        assert!(
            ea.inner.states.get(b"b").is_none(),
            "b's state was released"
        );
        assert!(
            ea.inner.states.get(b"a").is_some(),
            "entry 3 still needs a's state"
        );
        assert!(lock(&ea.inner.entry_keys)
            .get(&(ea.origin_id(), 1))
            .is_none());
        for (seq, key) in [(1, b"a"), (2, b"b"), (3, b"a")] {
            assert_eq!(owned_entry(&ea, ea.origin_id(), seq).unwrap(), current(key));
        }
        ea.release_shipped(3);
        assert!(ea.inner.states.get(b"a").is_none());
        ea.put(b"a", b"3").unwrap(); // entry 4: cached again
        assert!(ea.inner.states.get(b"a").is_some());
        assert_eq!(owned_entry(&ea, ea.origin_id(), 3).unwrap(), current(b"a"));
    }
}
