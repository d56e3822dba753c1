//! Writes this replica cannot get whole, and the bound on waiting for them (invariant I1:
//! the applied vector never covers a write the records do not reflect, but for what is
//! declared lost).
//!
//! - A *partial entry* (its sender left some record states out, or holds nothing of the
//!   write) is not applied at first: the origin's applied entry stays below it, so another
//!   member that holds it whole sends it (relays start after `relay_delay_ms` without
//!   progress). It is applied as partial (what it lacks declared lost by the store: counted,
//!   logged with the dots and keys, kept among its exceptions) once no whole copy can come:
//!   every other member is linked and each that holds the write sent it partial, or
//!   `missing_wait_ms` has passed since it first arrived (a member out of reach may hold it).
//! - A *stranded* number (missing from this replica's own log, found at open: a lost tail,
//!   a restored copy) waits for any reachable member that holds it. When none does, and
//!   either every member is linked or `missing_wait_ms` has passed (a member out of reach may
//!   hold it), it is declared lost, and the entries held beyond it count again.

use super::{ReplicationError, Replicator};
use crate::model::{MemberId, OriginId};
use crate::replication::inbound::DecodedEntry;
use crate::replication::seam::ReplicaStore;

impl Replicator {
    /// Cuts `entries` (one origin's, in order) before the first partial entry not yet
    /// applied here, unless it has waited `missing_wait_ms` for a whole copy already.
    pub(super) fn hold_partial<S: ReplicaStore>(
        &mut self,
        sender: MemberId,
        origin: OriginId,
        entries: &mut Vec<DecodedEntry>,
        store: &S,
        now_ms: u64,
    ) {
        let applied = store.applied().get(origin);
        let Some(i) = entries
            .iter()
            .position(|e| e.seq > applied && !e.is_whole())
        else {
            return;
        };
        let seq = entries[i].seq;
        let held = match self.partial_held.get_mut(&origin) {
            Some(held) if held.seq == seq => held,
            _ => {
                self.stats.partial_entries_held += 1;
                tracing::warn!(%origin, seq, %sender, left_out = entries[i].left_out.len(), lost = entries[i].lost, "a peer shipped an entry partial; waiting for a whole copy from another member");
                self.partial_held.insert(
                    origin,
                    PartialHeld {
                        seq,
                        since_ms: now_ms,
                        senders: Default::default(),
                    },
                );
                match self.partial_held.get_mut(&origin) {
                    Some(held) => held,
                    None => return,
                }
            }
        };
        held.senders.insert(sender);
        let waited = now_ms.saturating_sub(held.since_ms) >= self.config.missing_wait_ms;
        let senders = held.senders.clone();
        if waited || self.nobody_else_holds(origin, seq, &senders) {
            self.partial_held.remove(&origin);
            self.stats.partial_entries_applied += 1;
        } else {
            entries.truncate(i);
        }
    }

    /// Whether no member can send `origin`'s write `seq` whole: every other member is linked,
    /// and each one that holds it (by its claim) is among `senders`, which sent it partial.
    fn nobody_else_holds(
        &self,
        origin: OriginId,
        seq: u64,
        senders: &std::collections::BTreeSet<MemberId>,
    ) -> bool {
        let linked: std::collections::BTreeMap<MemberId, &crate::replication::Peer> = self
            .peers
            .values()
            .filter_map(|p| p.ready_member().map(|r| (r, p)))
            .collect();
        self.all_members_linked()
            && linked
                .iter()
                .all(|(m, p)| p.claimed.get(origin) < seq || senders.contains(m))
    }

    /// Forgets partial entries applied meanwhile (whole from another member), and declares
    /// lost the stranded numbers no reachable member has held for `missing_wait_ms`.
    pub(super) fn check_missing<S: ReplicaStore>(
        &mut self,
        store: &S,
        now_ms: u64,
    ) -> Result<(), ReplicationError<S::Error>> {
        if !self.partial_held.is_empty() {
            let applied = store.applied();
            self.partial_held
                .retain(|origin, held| applied.get(*origin) < held.seq);
        }
        self.repair_damaged(store, now_ms)?;
        let stranded = store.stranded();
        self.stranded_since
            .retain(|origin, (seq, _)| stranded.contains(&(*origin, *seq)));
        for (origin, seq) in stranded {
            let since = self.stranded_since.entry(origin).or_insert((seq, now_ms)).1;
            // A reachable member that holds it sends it (directly or relayed); with every
            // member linked and none holding it, nobody can.
            let held_elsewhere = self
                .peers
                .values()
                .any(|p| p.ready_member().is_some() && p.claimed.get(origin) >= seq);
            let waited = now_ms.saturating_sub(since) >= self.config.missing_wait_ms;
            if held_elsewhere || !(waited || self.all_members_linked()) {
                continue;
            }
            store
                .declare_lost(origin, seq)
                .map_err(ReplicationError::Store)?;
            self.stranded_since.remove(&origin);
            self.stats.writes_declared_lost += 1;
        }
        Ok(())
    }
}

impl Replicator {
    /// Damaged records (bytes that no longer decode), or a restored replica not yet
    /// reconciled (`ReplicaStore::reconciling`): each ready peer is asked for a state-transfer
    /// round (`AeRequest`, at most every `retransmit_ms`), whose difference brings the key's
    /// good state back (and prunes what the peer removed); a damaged record every other member
    /// showed it holds nothing of is removed (no copy is left; what it held is lost).
    fn repair_damaged<S: ReplicaStore>(
        &mut self,
        store: &S,
        now_ms: u64,
    ) -> Result<(), ReplicationError<S::Error>> {
        let damaged = store.damaged();
        self.damaged_absent_at.retain(|k, _| damaged.contains(k));
        let reconciling = store.reconciling().is_some();
        if !reconciling {
            self.reconciling_since = None;
        } else if now_ms.saturating_sub(*self.reconciling_since.get_or_insert(now_ms))
            >= self.config.reconcile_wait_ms
        {
            // No peer that saw everything the copy held answered in time (they all lost
            // their disks too, or stay cut off): what the copy holds is the best there is.
            tracing::warn!(
                waited_ms = self.config.reconcile_wait_ms,
                "no peer reconciled this replica (restored, or back from a power loss) in time: it ships what it holds"
            );
            store.reconciled().map_err(ReplicationError::Store)?;
            self.reconciling_since = None;
        }
        if damaged.is_empty() && !reconciling {
            return Ok(());
        }
        let others: Vec<MemberId> = self
            .config
            .members
            .iter()
            .copied()
            .filter(|m| *m != self.me)
            .collect();
        let lost: Vec<Vec<u8>> = damaged
            .iter()
            .filter(|k| {
                let absent = self.damaged_absent_at.get(*k);
                !others.is_empty() && others.iter().all(|m| absent.is_some_and(|a| a.contains(m)))
            })
            .cloned()
            .collect();
        if !lost.is_empty() {
            store.drop_damaged(&lost).map_err(ReplicationError::Store)?;
        }
        let due: Vec<super::LinkId> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                p.ready_member().is_some()
                    && p.ae.is_none()
                    && p.last_request_ms
                        .is_none_or(|at| now_ms.saturating_sub(at) >= self.config.retransmit_ms)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(p) = self.peers.get_mut(&id) {
                p.last_request_ms = Some(now_ms);
            }
            self.send(id, &crate::replication::frame::Frame::AeRequest);
        }
        Ok(())
    }

    /// `member` showed, in a state-transfer round, that it holds nothing of `keys`.
    pub(super) fn absent_at(&mut self, member: MemberId, keys: &[Vec<u8>], damaged: &[Vec<u8>]) {
        for key in keys.iter().filter(|k| damaged.contains(k)) {
            self.damaged_absent_at
                .entry(key.clone())
                .or_default()
                .insert(member);
        }
    }

    /// Whether every other member has a ready link to this replica.
    fn all_members_linked(&self) -> bool {
        self.config
            .members
            .iter()
            .all(|m| *m == self.me || self.peers.values().any(|p| p.ready_member() == Some(*m)))
    }
}

/// A partial entry held at its origin's applied entry.
#[derive(Debug)]
pub(super) struct PartialHeld {
    /// Its sequence number.
    seq: u64,
    /// When it first arrived.
    since_ms: u64,
    /// The members that sent it partial.
    senders: std::collections::BTreeSet<MemberId>,
}
