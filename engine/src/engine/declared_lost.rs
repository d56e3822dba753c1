//! What this replica's applied vector covers that its records do not reflect, kept with the
//! data (`replication::exceptions`): writes declared lost and keys whose states were left out
//! on their way here; and the origins stranded above a number missing from the log (found at
//! open), whose number is declared lost when no reachable member supplies it.

use super::*;
use crate::replication::exceptions::{ExceptionChange, ExceptionSet};
use crate::replication::Exceptions;
use std::collections::BTreeMap;

/// Loads the exceptions kept in the metadata.
pub(crate) fn load(store: &Store) -> Result<ExceptionSet> {
    let corrupt = |key: &[u8]| Error::Corrupt {
        what: "metadata",
        key: key.to_vec(),
        detail: "an exception key of the wrong length".into(),
    };
    let mut wire = Exceptions::default();
    for (k, _) in store.meta_with_prefix(keys::META_LOST_PREFIX)? {
        let raw: [u8; 16] = k[keys::META_LOST_PREFIX.len()..]
            .try_into()
            .map_err(|_| corrupt(&k))?;
        let (o, s) = raw.split_at(8);
        let origin = OriginId(u64::from_be_bytes(o.try_into().map_err(|_| corrupt(&k))?));
        let seq = u64::from_be_bytes(s.try_into().map_err(|_| corrupt(&k))?);
        wire.lost.push((origin, seq));
    }
    for (k, _) in store.meta_with_prefix(keys::META_UNCERTAIN_PREFIX)? {
        let raw: [u8; 8] = k[keys::META_UNCERTAIN_PREFIX.len()..]
            .try_into()
            .map_err(|_| corrupt(&k))?;
        wire.uncertain.push(u64::from_be_bytes(raw));
    }
    let mut set = ExceptionSet::default();
    set.absorb(&wire);
    Ok(set)
}

/// Origins whose log holds entries above their applied entry plus one (a number missing
/// below them): origin -> the highest number held.
pub(crate) fn find_stranded(
    store: &Store,
    applied: &VersionVector,
    also: &[OriginId],
) -> Result<BTreeMap<OriginId, u64>> {
    let mut stranded = BTreeMap::new();
    let origins: std::collections::BTreeSet<OriginId> = applied
        .iter()
        .map(|(o, _)| o)
        .chain(also.iter().copied())
        .collect();
    for origin in origins {
        let seq = applied.get(origin);
        let last = store.last_log_seq(origin)?;
        if last > seq + 1 || (last == seq + 1 && store.get_log(origin, seq + 1)?.is_none()) {
            stranded.insert(origin, last);
        }
    }
    Ok(stranded)
}

impl Engine {
    /// Stages `change` (exceptions added or forgotten) in `wb`.
    pub(crate) fn stage_exceptions(
        &self,
        wb: &mut crate::store::AtomicWrite<'_>,
        change: &ExceptionChange,
    ) {
        for (origin, seq) in &change.lost_added {
            wb.put_meta(&keys::lost_key(*origin, *seq), &[]);
        }
        for (origin, seq) in &change.lost_forgotten {
            wb.delete_meta(&keys::lost_key(*origin, *seq));
        }
        for hash in &change.uncertain_added {
            wb.put_meta(&keys::uncertain_key(*hash), &[]);
        }
        for hash in &change.uncertain_forgotten {
            wb.delete_meta(&keys::uncertain_key(*hash));
        }
        if !change.lost_added.is_empty() || !change.uncertain_added.is_empty() {
            metrics::counter!("meridian_writes_declared_lost_total")
                .increment(change.lost_added.len() as u64);
            metrics::counter!("meridian_records_declared_lost_total")
                .increment(change.uncertain_added.len() as u64);
        }
    }

    /// What the applied vector covers that the records do not reflect: writes and keys'
    /// states declared lost (at most `replication::EXCEPTIONS_MAX` of each, the latest).
    pub fn declared_lost(&self) -> Exceptions {
        lock(&self.inner.exceptions).to_wire()
    }

    /// `ReplicaStore::stranded`.
    pub(crate) fn stranded_origins(&self) -> Vec<(OriginId, u64)> {
        let stranded = lock(&self.inner.stranded);
        if stranded.is_empty() {
            return Vec::new();
        }
        let applied = lock(&self.inner.applied);
        stranded.keys().map(|o| (*o, applied.get(*o) + 1)).collect()
    }

    /// `ReplicaStore::declare_lost`: logs `origin`'s write `seq` as lost, keeps it among the
    /// exceptions, and advances the applied vector through the entries held beyond it (up to
    /// the next number missing, if any).
    pub(crate) fn declare_stranded_lost(&self, origin: OriginId, seq: u64) -> Result<()> {
        let inner = &*self.inner;
        self.check_writable()?;
        let _gate = read_lock(&inner.gate);
        let _serial = lock(&inner.apply_lock);
        let held = match lock(&inner.stranded).get(&origin) {
            Some(held) => *held,
            None => return Ok(()),
        };
        if lock(&inner.applied).get(origin) + 1 != seq {
            return Ok(()); // no longer the missing number (a peer supplied it meanwhile)
        }
        debug_assert_eq!(
            lock(&inner.applied).get(origin) + 1,
            seq,
            "I1: declared at the hole"
        );
        let present = inner.store.log_seqs(origin, seq + 1, held)?;
        let mut through = seq;
        for s in present {
            if s != through + 1 {
                break;
            }
            through = s;
        }
        let mut wb = inner.store.batch();
        let lost = LogEntry {
            lost: true,
            ..LogEntry::default()
        };
        wb.put_log(origin, seq, &lost.encode());
        let change = lock(&inner.exceptions).absorb(&Exceptions {
            lost: vec![(origin, seq)],
            uncertain: vec![],
        });
        self.stage_exceptions(&mut wb, &change);
        wb.put_meta(&keys::applied_key(origin), &through.to_be_bytes());
        self.commit(wb)?;
        lock(&inner.applied).add(Dot::new(origin, through));
        if through >= held {
            lock(&inner.stranded).remove(&origin);
        }
        tracing::error!(%origin, seq, applied_through = through, "no reachable member held this write, missing from the log: declared lost");
        self.applied_advanced();
        Ok(())
    }

    /// After `origin`'s applied entry advanced to `through`: no longer stranded once past
    /// what its log held beyond the missing number.
    pub(crate) fn unstrand(&self, origin: OriginId, through: u64) {
        let mut stranded = lock(&self.inner.stranded);
        if stranded.get(&origin).is_some_and(|held| through >= *held) {
            stranded.remove(&origin);
        }
    }
}
