//! Stability: what every member has applied (the pointwise minimum of their reported vectors),
//! below which log entries and tombstones are reclaimed.

use super::{ReplicationError, Replicator};
use crate::model::{MemberId, OriginId, VersionVector};
use crate::replication::seam::ReplicaStore;

impl Replicator {
    /// Counts `replica` as a member from now on (a replica added to the cluster).
    pub fn add_member(&mut self, replica: MemberId) {
        if !self.config.members.contains(&replica) {
            self.config.members.push(replica);
        }
    }

    /// Stops counting `replica` as a member (declared dead), so that stability can advance.
    pub fn remove_member(&mut self, replica: MemberId) {
        self.config.members.retain(|m| *m != replica);
        self.known.remove(&replica);
    }

    /// What every member has applied (pointwise minimum), once every member has reported.
    pub fn stable(&self, store: &impl ReplicaStore) -> Option<VersionVector> {
        if self.config.members.is_empty() {
            return None;
        }
        let own = store.applied();
        let mut vectors = Vec::with_capacity(self.config.members.len());
        for m in &self.config.members {
            vectors.push(if *m == self.me {
                &own
            } else {
                self.known.get(m)?
            });
        }
        let origins: std::collections::BTreeSet<OriginId> = vectors
            .iter()
            .flat_map(|v| v.iter().map(|(o, _)| o))
            .collect();
        Some(VersionVector::from_entries(origins.into_iter().map(|o| {
            (o, vectors.iter().map(|v| v.get(o)).min().unwrap_or(0))
        })))
    }

    /// How far every other member has applied this replica's own entries (of its current
    /// origin), once each has reported (`None` without other members).
    pub(super) fn shipped_everywhere(&self, origin: OriginId) -> Option<u64> {
        self.config
            .members
            .iter()
            .filter(|m| **m != self.me)
            .map(|m| self.known.get(m).map(|v| v.get(origin)))
            .min()
            .flatten()
    }

    /// What may be reclaimed: `stable`, except that a member lagging on an origin by more than
    /// `log_retention_entries` no longer holds that origin back (it will come back by state
    /// transfer). `None` until every member has reported.
    pub fn reclaim_horizon(&self, store: &impl ReplicaStore) -> Option<VersionVector> {
        if self.config.members.is_empty() {
            return None;
        }
        let own = store.applied();
        let cap = self.config.log_retention_entries;
        let mut vectors = Vec::with_capacity(self.config.members.len());
        for m in &self.config.members {
            if *m != self.me {
                vectors.push(self.known.get(m)?);
            }
        }
        Some(VersionVector::from_entries(own.iter().map(|(o, mine)| {
            let kept = vectors
                .iter()
                .map(|v| v.get(o))
                .filter(|theirs| mine.saturating_sub(*theirs) <= cap)
                .min()
                .unwrap_or(mine);
            (o, kept.min(mine))
        })))
    }

    /// How long reclamation has stood still while this replica holds something not yet
    /// reclaimable (a member down freezes it), as of the last compaction.
    pub fn stability_frozen_ms(&self, store: &impl ReplicaStore, now_ms: u64) -> u64 {
        match &self.horizon {
            Some((horizon, since)) if *horizon != store.applied() => now_ms.saturating_sub(*since),
            _ => 0,
        }
    }

    /// Every `compact_every_ms`: truncates the log and collects tombstones up to the
    /// reclamation horizon (also when it stood still: tombstones may have arrived by state
    /// transfer).
    pub(super) fn compact_if_due<S: ReplicaStore>(
        &mut self,
        store: &S,
        now_ms: u64,
    ) -> Result<(), ReplicationError<S::Error>> {
        if now_ms.saturating_sub(self.last_compact_ms) < self.config.compact_every_ms {
            return Ok(());
        }
        self.last_compact_ms = now_ms;
        if let Some(stable) = self.reclaim_horizon(store) {
            if self.horizon.as_ref().is_none_or(|(h, _)| *h != stable) {
                self.horizon = Some((stable.clone(), now_ms));
            }
            let c = store.compact(&stable).map_err(ReplicationError::Store)?;
            self.stats.log_entries_removed += c.log_entries_removed;
            self.stats.tombstones_removed += c.tombstones_removed;
            self.stats.tombstones_pending = c.tombstones_pending;
        }
        store.reclaim_expired().map_err(ReplicationError::Store)?;
        Ok(())
    }
}
