//! Compaction at causal stability: log entries every member applied are truncated, and
//! tombstones whose dots every member applied are collected (kept while a log entry still
//! names their key).
//!
//! The tombstone pass does work in proportion to what changed: when stability moved since
//! the last full pass, every pending tombstone is looked at again; when it stood still (a
//! member down freezes it, however long the outage), only the tombstones marked since the
//! last pass are (a tombstone that arrived by state transfer may be stable already). Either
//! way the candidates go in chunks of `TOMBSTONE_CHUNK` keys, each under its keys' stripes and
//! the apply lock only while its records are read and its batch commits, so writers and
//! replication wait at most one chunk. A tombstone the log above the floors still names is
//! kept; those keys are read from the entries appended since the last pass
//! (`named_keys.rs`), outside the locks, not from the whole log a down member holds back.

use super::*;
use crate::model::digest::state_hash;
use crate::replication::Compaction;
use std::collections::BTreeSet;

/// Tombstone candidates looked at under one hold of their stripes.
const TOMBSTONE_CHUNK: usize = 512;

/// Most keys marked between two passes that are remembered one by one; beyond it the next
/// pass looks at every pending tombstone.
const RECENT_MARKS_MAX: usize = 65_536;

/// Records each compaction reads back and checks (the scrub): damage nothing else reads is
/// found within `records / SCRUB_CHUNK` compactions, and repaired from a peer.
const SCRUB_CHUNK: usize = 1_024;

/// What the tombstone pass remembers between runs of it (in memory: an open starts with a
/// full pass).
#[derive(Debug, Default)]
pub(crate) struct TombstoneWork {
    /// Keys marked since the last pass; `None` once more than `RECENT_MARKS_MAX` were.
    recent: Option<BTreeSet<Vec<u8>>>,
    /// The stability of the last full pass (`None`: none yet in this run).
    last_full: Option<VersionVector>,
    /// Tombstones left pending by the last pass (exact after a full pass; an incremental one
    /// adds what it found pending, so a tombstone written over since counts until the next
    /// full pass).
    pending: u64,
    /// Where the scrub goes on (`None`: from the first key).
    scrub_from: Option<Vec<u8>>,
}

impl TombstoneWork {
    /// A fresh start: the first pass looks at every pending tombstone.
    pub(crate) fn new() -> TombstoneWork {
        TombstoneWork {
            recent: Some(BTreeSet::new()),
            last_full: None,
            pending: 0,
            scrub_from: None,
        }
    }

    /// `key` became a tombstone.
    pub(crate) fn marked(&mut self, key: &[u8]) {
        if let Some(recent) = &mut self.recent {
            if recent.len() < RECENT_MARKS_MAX {
                recent.insert(key.to_vec());
            } else {
                self.recent = None;
            }
        }
    }
}

impl Engine {
    /// Removes log entries covered by `stable` (applied by every live member) and tombstones
    /// whose every dot it covers, unless a log entry still names their key.
    pub(super) fn compact_to(&self, stable: &VersionVector) -> Result<Compaction> {
        let inner = &*self.inner;
        self.check_not_poisoned()?; // it frees space: it goes on when the disk is nearly full
        let mut out = Compaction::default();
        let floors_before = lock(&inner.floors).clone();
        let floors = self.truncate_log(stable, &mut out)?;
        // Floors can move while stability stands still (a named change feed let go of the
        // log): tombstones kept for entries now gone are looked at again.
        let floors_moved = floors != floors_before;
        // The keys the log names, topped up outside every lock writers take.
        {
            let mut named = lock(&inner.named_keys);
            named.top_up(&inner.store, self.applied().iter().map(|(o, _)| o), &floors)?;
            named.sweep(&floors);
        }
        // What to look at: every pending tombstone when stability moved (or the recent
        // marks overflowed, or this is the first pass of the run), else the recent marks.
        let (recent, full) = {
            let mut work = lock(&inner.tombstones);
            let recent = work.recent.replace(BTreeSet::new());
            let full = work.last_full.as_ref() != Some(stable) || recent.is_none() || floors_moved;
            (recent.unwrap_or_default(), full)
        };
        let mut pass = TombstonePass {
            stable,
            floors: &floors,
            out: &mut out,
        };
        if full {
            let mut after: Option<Vec<u8>> = None;
            loop {
                let page = inner.store.meta_page(
                    keys::META_TOMBSTONE_PREFIX,
                    after.as_deref(),
                    TOMBSTONE_CHUNK,
                )?;
                let Some((last, _)) = page.last() else { break };
                after = Some(last.to_vec());
                let keys: Vec<Vec<u8>> = page
                    .iter()
                    .map(|(k, _)| k[keys::META_TOMBSTONE_PREFIX.len()..].to_vec())
                    .collect();
                self.collect_tombstones(&keys, &mut pass)?;
                if page.len() < TOMBSTONE_CHUNK {
                    break;
                }
            }
        } else {
            let keys: Vec<Vec<u8>> = recent.into_iter().collect();
            for chunk in keys.chunks(TOMBSTONE_CHUNK) {
                self.collect_tombstones(chunk, &mut pass)?;
            }
        }
        let mut work = lock(&inner.tombstones);
        if full {
            work.last_full = Some(stable.clone());
            work.pending = out.tombstones_pending;
        } else {
            work.pending += out.tombstones_pending;
            out.tombstones_pending = work.pending;
        }
        let from = work.scrub_from.take().unwrap_or_default();
        drop(work);
        let next = self.scrub(&from)?;
        lock(&inner.tombstones).scrub_from = next;
        self.prune_requests(inner.config.clock.now_ms())?;
        Ok(out)
    }

    /// Reads back up to `SCRUB_CHUNK` records from `from` and checks them: a damaged one is
    /// reported and repaired from a peer (`faults.rs`). Returns where the next scrub starts.
    fn scrub(&self, from: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut next = None;
        for (i, item) in self.inner.store.records_from(from, None).enumerate() {
            let (key, bytes) = item?;
            if i == SCRUB_CHUNK {
                next = Some(key.into_vec());
                break;
            }
            if let Err(e) = codec::check_record(&bytes) {
                self.note_fault(super::faults::Stored::Record, &key, &e);
            }
        }
        Ok(next)
    }

    /// Removes the log entries `stable` covers and raises the floors; returns the floors.
    fn truncate_log(&self, stable: &VersionVector, out: &mut Compaction) -> Result<VersionVector> {
        let inner = &*self.inner;
        // Gate before the apply lock (the order every path takes them in).
        let _gate = read_lock(&inner.gate);
        let _serial = lock(&inner.apply_lock);
        let mut floors = lock(&inner.floors).clone();
        let mut wb = inner.store.batch();
        let mut moved = false;
        // Named change feeds hold the log back, within their bound (`feed.rs`).
        let held = self.feed_held(stable)?;
        for (origin, upto) in held.iter() {
            let floor = floors.get(origin);
            if upto <= floor {
                continue;
            }
            // The log is contiguous above the floor: no need to count entry by entry.
            out.log_entries_removed += upto - floor;
            wb.delete_log_range(origin, floor + 1, upto);
            wb.put_meta(&keys::floor_key(origin), &upto.to_be_bytes());
            floors.add(Dot::new(origin, upto));
            moved = true;
        }
        if moved {
            self.commit(wb)?;
            *lock(&inner.floors) = floors.clone();
        }
        Ok(floors)
    }

    /// Looks at tombstone candidates `keys` (one chunk) under their stripes: reclaims those
    /// whose every dot `pass.stable` covers and that no remaining log entry names, keeps the
    /// others pending, and forgets markers of keys that are no longer tombstones.
    fn collect_tombstones(&self, keys: &[Vec<u8>], pass: &mut TombstonePass<'_>) -> Result<()> {
        let inner = &*self.inner;
        let store = &inner.store;
        let _gate = read_lock(&inner.gate);
        let _serial = lock(&inner.apply_lock);
        let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let _guards = self.lock_keys(&refs);
        let mut wb = store.batch();
        // Reclaimable: a tombstone (no counter reset to remember) whose every dot is stable.
        let mut reclaimable: Vec<(&Vec<u8>, u64)> = Vec::new();
        let stored_all = store.get_records(&refs)?;
        pass.out.tombstones_examined += keys.len() as u64;
        for (key, stored) in keys.iter().zip(stored_all) {
            let pending = keys::tombstone_key(key);
            let Some(stored) = stored else {
                wb.delete_meta(&pending);
                continue;
            };
            match codec::decode_record(&stored) {
                Ok(record) if record.is_bottom() && !record.has_counter_reset() => {
                    if pass.stable.dominates(&record.context()) {
                        reclaimable.push((key, state_hash(&stored)));
                    } else {
                        pass.out.tombstones_pending += 1;
                    }
                }
                // Written again since, or unreadable: no longer a candidate.
                _ => wb.delete_meta(&pending),
            }
        }
        // What was appended since the pass's top-up (little: entries of the last moments).
        let mut named = lock(&inner.named_keys);
        if !reclaimable.is_empty() {
            named.top_up(store, self.applied().iter().map(|(o, _)| o), pass.floors)?;
        }
        let mut reclaimed: Vec<&[u8]> = Vec::new();
        for (key, old) in reclaimable {
            if named.names(key, pass.floors) {
                pass.out.tombstones_pending += 1;
                continue;
            }
            wb.delete_record(key);
            wb.unindex_key(key);
            wb.delete_meta(&keys::tombstone_key(key));
            if inner.digest.is_built() {
                inner.digest.changed(key, Some(old), None);
            }
            reclaimed.push(key);
            pass.out.tombstones_removed += 1;
        }
        self.commit(wb)?;
        // The stripes of the reclaimed keys are still held.
        self.uncache_states(reclaimed);
        Ok(())
    }
}

/// One tombstone pass's inputs and findings, chunk after chunk.
struct TombstonePass<'a> {
    stable: &'a VersionVector,
    floors: &'a VersionVector,
    out: &'a mut Compaction,
}
