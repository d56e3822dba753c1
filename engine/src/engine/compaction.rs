//! Compaction at causal stability: log entries every member applied are truncated, and
//! tombstones whose dots every member applied are collected (kept while a log entry still
//! names their key). Skipped when neither stability nor the tombstone marks moved.

use super::*;
use crate::model::digest::state_hash;
use crate::replication::Compaction;
use std::collections::BTreeSet;

impl Engine {
    /// Removes log entries covered by `stable` (applied by every live member) and tombstones
    /// whose every dot it covers, unless a log entry still names their key.
    pub(super) fn compact_to(&self, stable: &VersionVector) -> Result<Compaction> {
        let inner = &*self.inner;
        self.check_writable()?;
        // Gate before the apply lock (the order every path takes them in).
        let _gate = read_lock(&inner.gate);
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
        // Tombstones are looked at again only when stability moved or new ones were marked:
        // a member that stays down freezes stability, and the pass would find nothing new.
        let marks = inner
            .tombstone_marks
            .load(std::sync::atomic::Ordering::SeqCst);
        let mut last = lock(&inner.last_compaction);
        if last.0 == *stable && last.1 == marks {
            out.tombstones_pending = last.2;
            self.commit(wb)?;
            *lock(&inner.floors) = floors;
            return Ok(out);
        }
        // Tombstone candidates: every record that became a tombstone was marked when it did.
        let candidates: BTreeSet<Vec<u8>> = store
            .meta_with_prefix(keys::META_TOMBSTONE_PREFIX)?
            .into_iter()
            .map(|(k, _)| k[keys::META_TOMBSTONE_PREFIX.len()..].to_vec())
            .collect();
        let candidate_refs: Vec<&[u8]> = candidates.iter().map(Vec::as_slice).collect();
        let _guards = self.lock_keys(&candidate_refs);
        // Reclaimable: a tombstone (no counter reset to remember) whose every dot is stable.
        let mut reclaimable: Vec<(&Vec<u8>, u64)> = Vec::new();
        for key in &candidates {
            let pending = keys::tombstone_key(key);
            let stored = match store.get_record(key) {
                Ok(Some(stored)) => stored,
                Ok(None) => {
                    wb.delete_meta(&pending);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            match codec::decode_record(&stored) {
                Ok(record) if record.is_bottom() && !record.has_counter_reset() => {
                    if stable.dominates(&record.context()) {
                        reclaimable.push((key, state_hash(&stored)));
                    } else {
                        wb.put_meta(&pending, &[]);
                        out.tombstones_pending += 1;
                    }
                }
                // Written again since, or unreadable: no longer a candidate.
                _ => wb.delete_meta(&pending),
            }
        }
        // Keys still named by the log that stays (above the new floors): their tombstones are
        // needed to ship deletes. Read only when something is reclaimable, and only that part
        // of the log.
        let mut referenced: BTreeSet<Vec<u8>> = BTreeSet::new();
        if !reclaimable.is_empty() {
            for (origin, _) in self.applied().iter() {
                for item in store.log_entries_of(origin, floors.get(origin) + 1) {
                    let (_, v) = item?;
                    if let Ok(entry) = LogEntry::decode(&v) {
                        referenced.extend(entry.keys);
                    }
                }
            }
        }
        let mut reclaimed: Vec<&Vec<u8>> = Vec::new();
        for (key, old) in reclaimable {
            if referenced.contains(key) {
                out.tombstones_pending += 1;
                continue;
            }
            wb.delete_record(key);
            wb.unindex_key(key);
            wb.delete_meta(&keys::tombstone_key(key));
            if inner.digest.is_built() {
                inner.digest.changed(key, Some(old), None);
            }
            reclaimed.push(key);
            out.tombstones_removed += 1;
        }
        self.commit(wb)?;
        // The stripes of the reclaimed keys are still held.
        self.uncache_states(reclaimed.iter().map(|k| k.as_slice()));
        *lock(&inner.floors) = floors;
        *last = (stable.clone(), marks, out.tombstones_pending);
        Ok(out)
    }
}
