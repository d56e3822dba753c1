//! Log shipping: a replica sends, for every origin it holds, what the peer's cursor lacks, in
//! frames of entries carrying the current states of the keys they name, keeping the bytes in
//! flight under the link's window; the receiver applies each origin's entries in order.

use super::handshake::clamp_seq;
use super::spans::{Offered, OpenSpan};
use super::{unreachable_peer, LinkId, ReplicationError, Replicator, INFLIGHT_BYTES_CAP};
use crate::limits::{ENTRY_BYTES_MAX, FRAME_STATES_BYTES_MAX};
use crate::model::digest;
use crate::model::{OriginId, VersionVector};
use crate::replication::frame::{
    encode_entries, encode_linked_entries, vv_entries, EntryOut, Frame, FrameError, StateForm,
    LINKED_STATES_VERSION, SHARED_STATES_VERSION, SPANS_VERSION,
};
use crate::replication::inbound::{wire_bytes, DecodedEntry};
use crate::replication::link_states::{LinkStates, LINKED_STATE_BYTES_MIN};
use crate::replication::older_peers;
use crate::replication::peer::{AntiEntropy, InFlight};
use crate::replication::seam::{ApplyOutcome, ReplicaStore, ShippedEntry};
use crate::replication::state_patch;

/// Acknowledgements a receiver sends per in-flight window of entries bytes.
const ACKS_PER_WINDOW: usize = 4;

/// Least time between two `Ack`s `acknowledge_idle` sends on one link, in milliseconds.
const ACK_IDLE_INTERVAL_MS: u64 = 2;

impl Replicator {
    /// Unacknowledged bytes allowed on a link with round trip `rtt_ms` (if measured).
    pub fn inflight_window(&self, rtt_ms: Option<u64>) -> usize {
        let extra = usize::try_from(rtt_ms.unwrap_or(0))
            .unwrap_or(usize::MAX)
            .saturating_mul(self.config.inflight_bytes_per_rtt_ms);
        self.config
            .inflight_bytes_max
            .saturating_add(extra)
            .min(INFLIGHT_BYTES_CAP.max(self.config.inflight_bytes_max))
    }

    /// Entries bytes received from one peer after which it is sent an `Ack` (a quarter of the
    /// in-flight budget: the sender refills its window while the rest is applied).
    pub fn ack_every_bytes(&self) -> usize {
        self.config.inflight_bytes_max / ACKS_PER_WINDOW
    }

    /// A local write committed: push it to every ready link.
    pub fn local_write<S: ReplicaStore>(
        &mut self,
        store: &S,
        now_ms: u64,
    ) -> Result<(), ReplicationError<S::Error>> {
        let ids: Vec<LinkId> = self.peers.keys().copied().collect();
        for id in ids {
            if let Err(e) = self.pump(id, store, now_ms) {
                self.debug_check(store);
                return Err(e);
            }
        }
        self.debug_check(store);
        Ok(())
    }

    pub(super) fn on_entries<S: ReplicaStore>(
        &mut self,
        peer: LinkId,
        origin: OriginId,
        mut entries: Vec<DecodedEntry>,
        unresolved: &[u64],
        store: &S,
        now_ms: u64,
    ) -> Result<(), ReplicationError<S::Error>> {
        if !self.may_relay(peer, origin, store) {
            // Not an origin the peer announced, nor one known here: not applied, not
            // acknowledged (a relay that overtook the peer's `Ack` comes again).
            metrics::counter!("meridian_replication_entries_refused_total").increment(1);
            tracing::debug!(peer = ?peer, %origin, "entries of an origin the peer never announced; ignored");
            return Ok(());
        }
        let mut nack = None;
        // The peer applied what it sends: never send those entries back to it, and count
        // them as applied there for stability.
        if let Some(last) = entries.last() {
            let mut has = VersionVector::new();
            has.add(crate::model::Dot::new(
                origin,
                clamp_seq(origin, last.seq, store),
            ));
            if let Some(p) = self.peers.get_mut(&peer) {
                p.acknowledge(&has);
                if let Some(r) = p.ready_member() {
                    self.known.entry(r).or_default().join(&has);
                }
            }
        }
        // An entry with a patched state this end could not resolve (`link_states.rs`) is
        // asked for again, from the first such entry not applied here: the sender's resend
        // ships whole states.
        let applied = store.applied().get(origin);
        let resend = unresolved.iter().copied().filter(|s| *s > applied).min();
        if let Some(first) = resend {
            self.stats.unresolved += 1;
            entries.retain(|e| e.seq < first);
        }
        let received: usize = entries.iter().map(|e| e.wire_bytes).sum();
        let sender = self.peers.get(&peer).map_or(self.me, |p| p.member);
        self.hold_partial(sender, origin, &mut entries, store, now_ms);
        let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
        let mark = self.receiving_others(peer).then(|| store.created_mark());
        let before = cfg!(debug_assertions).then(|| store.applied().get(origin));
        let outcomes = store
            .apply_entries(origin, entries)
            .map_err(ReplicationError::Store)?;
        if let Some(before) = before {
            debug_applied_in_order(origin, before, &seqs, &outcomes, store);
        }
        if let Some(mark) = mark {
            self.note_created(peer, store.created_since(mark));
        }
        for (outcome, seq) in outcomes.into_iter().zip(seqs) {
            match outcome {
                ApplyOutcome::Applied { .. } => self.stats.entries_applied += 1,
                ApplyOutcome::Duplicate => self.stats.duplicates += 1,
                ApplyOutcome::Invalid => {
                    let error =
                        FrameError::Malformed(format!("invalid records in entry {origin}:{seq}"));
                    return Err(self.refuse(peer, error));
                }
                ApplyOutcome::Gap { expected } => {
                    self.stats.gaps += 1;
                    nack = Some(expected);
                    break;
                }
            }
        }
        if let Some(next) = nack.or(resend) {
            nack = Some(next);
            self.send(peer, &Frame::Nack { origin, next });
        }
        // Acknowledged once a quarter of `inflight_bytes_max` has arrived (or at the next
        // tick): one `Ack` per frame would double the frames on a busy link.
        let ack_every = self.ack_every_bytes();
        let due = match self.peers.get_mut(&peer) {
            Some(p) => {
                p.unacked_bytes += received;
                nack.is_some() || p.unacked_bytes >= ack_every
            }
            None => false,
        };
        if due {
            self.send_ack(peer, store, now_ms);
        }
        Ok(())
    }

    /// Sends what the peer lacks, origin by origin, while the in-flight budget allows.
    pub(super) fn pump<S: ReplicaStore>(
        &mut self,
        peer: LinkId,
        store: &S,
        now_ms: u64,
    ) -> Result<(), ReplicationError<S::Error>> {
        if store.reconciling().is_some() {
            // Restored from a backup: nothing leaves before a peer's round reconciles it.
            return Ok(());
        }
        let applied = store.applied();
        let own = store.origin_id();
        let version = self.link_version(peer);
        loop {
            let window = self.inflight_window(self.peers.get(&peer).and_then(|p| p.rtt_ms));
            let Some(p) = self.peers.get_mut(&peer) else {
                return Ok(());
            };
            if p.ready_member().is_none() {
                return Ok(());
            }
            // A round offered because the peer lacks what the log no longer holds keeps the
            // entries back until it ends; a check of agreeing vectors does not (new writes
            // waited a round trip or more behind it: `all` writes' tail).
            let offering = matches!(p.ae, Some(AntiEntropy::Offering { check: false, .. }));
            if offering || p.inflight_bytes >= window {
                return Ok(());
            }
            // Origins the peer lacks that are due: our own at once, others after the relay
            // delay. The peer's own writes count as relayed: it made them, and what it reports
            // of them is only as fresh as its last `Ack` (sending them back at once would echo
            // every write it streams to us).
            let mut due = Vec::new();
            for (o, s) in applied.iter() {
                if s <= p.sent.get(o) {
                    p.relay_wait.remove(&o);
                    continue;
                }
                if let Some(&partial) = p.partial_sent.get(&o) {
                    if p.acked.get(o) >= partial {
                        p.partial_sent.remove(&o);
                    } else if p.sent.get(o) >= partial {
                        continue; // a partial entry waits at the peer: nothing beyond it yet
                    }
                }
                if o == own {
                    due.push(o);
                    continue;
                }
                let acked = p.acked.get(o);
                let wait = p.relay_wait.entry(o).or_insert((now_ms, acked));
                if acked > wait.1 {
                    *wait = (now_ms, acked); // the peer is being served by someone else
                } else if now_ms.saturating_sub(wait.0) >= self.config.relay_delay_ms {
                    due.push(o);
                }
            }
            let Some(origin) = due
                .iter()
                .find(|o| p.last_origin.is_none_or(|last| **o > last))
                .or(due.first())
                .copied()
            else {
                return Ok(());
            };
            p.last_origin = Some(origin);
            let mut seq = p.sent.get(origin) + 1;
            let last = applied.get(origin);
            let mut entries: Vec<(u64, ShippedEntry)> = Vec::new();
            let mut size = 0;
            let mut flights = Vec::new();
            // From version 6 a state that repeats its key's previous one in the frame is sent
            // once, and from version 7 one the link carried before goes as a patch: what each
            // entry adds to the frame is counted as it goes.
            let linked = version >= LINKED_STATES_VERSION;
            let mut repeats = (version >= SHARED_STATES_VERSION).then(RepeatedStates::default);
            let mut forms: Vec<Vec<StateForm>> = Vec::new();
            let mut handed = 0;
            // From version 8 a run of plain entries goes as one that stands for them all
            // (`spans.rs`): the frame's last entry, while it may still grow.
            let mut open: Option<OpenSpan> = None;
            let mut spans_of: Vec<u64> = Vec::new();
            while seq <= last && size < self.config.frame_bytes_target {
                let Some(entry) = store
                    .read_entry(origin, seq)
                    .map_err(ReplicationError::Store)?
                else {
                    break;
                };
                let entry = older_peers::entry_for(version, fit_entry(origin, seq, entry));
                if let (Some(span), Some(r), Some((_, last_entry)), Some(last_forms)) = (
                    open.as_mut(),
                    repeats.as_mut(),
                    entries.last_mut(),
                    forms.last_mut(),
                ) {
                    match span.offer(last_entry, last_forms, &entry, r, &mut p.link_out) {
                        Offered::Joined(bytes) => {
                            self.stats.spanned_entries_sent += 1;
                            size += bytes;
                            handed = span.handed();
                            flights.push(InFlight { origin, seq, bytes });
                            if let Some(n) = spans_of.last_mut() {
                                *n = span.span;
                            }
                            seq += 1;
                            continue;
                        }
                        Offered::Full => break,
                        Offered::Apart => {}
                    }
                }
                let whole = shipped_bytes(&entry);
                let (bytes, entry_forms) = match repeats.as_mut() {
                    Some(r) if linked => {
                        let (entry_forms, saved) = r.forms(&p.link_out, &entry);
                        (whole - saved, Some(entry_forms))
                    }
                    Some(r) => (whole - r.bytes_repeated(&entry), None),
                    None => (whole, None),
                };
                if !entries.is_empty()
                    && (size + bytes > ENTRY_BYTES_MAX || handed + whole > FRAME_STATES_BYTES_MAX)
                {
                    break; // the next frame carries it: a frame holds at most one entry's worth
                }
                if let (Some(r), Some(entry_forms)) = (repeats.as_mut(), entry_forms) {
                    // The peer's end takes each state in as it reads the frame: so does this.
                    for (k, v) in &entry.states {
                        r.0.insert(k.clone(), v.clone());
                        p.link_out.remember(k, v.clone());
                    }
                    forms.push(entry_forms);
                }
                if version >= SPANS_VERSION {
                    let spans = open.map(|o| o.spans).unwrap_or_default();
                    open = Some(OpenSpan::new(handed, spans, whole, entry.states.len()));
                }
                size += bytes;
                handed += whole;
                flights.push(InFlight { origin, seq, bytes });
                let partial = !entry.left_out.is_empty() || entry.lost;
                entries.push((seq, entry));
                spans_of.push(0);
                seq += 1;
                if partial {
                    // The peer holds it until a whole copy comes, or its bound passes.
                    p.partial_sent.insert(origin, seq - 1);
                    metrics::counter!("meridian_replication_partial_entries_sent_total")
                        .increment(1);
                    break;
                }
            }
            if entries.is_empty() {
                // The log no longer holds what the peer needs: transfer state instead, once
                // the peer's round on this link, if one is being received, is over. Offering
                // now would replace that round: its chunks would be dropped as stale, while
                // the peer, whose offer won the tie (`on_offer`), ignores this one, and
                // neither round would ever finish.
                if matches!(p.ae, Some(AntiEntropy::Receiving { .. })) {
                    return Ok(());
                }
                let lag: u64 = applied
                    .iter()
                    .map(|(o, s)| s.saturating_sub(p.acked.get(o)))
                    .sum();
                return self.start_transfer(peer, lag, store, now_ms);
            }
            let left_out: Vec<Vec<std::sync::Arc<[u8]>>> = entries
                .iter()
                .map(|(_, e)| e.left_out.iter().map(|k| k[..].into()).collect())
                .collect();
            let borrowed: Vec<EntryOut<'_, std::sync::Arc<[u8]>>> = entries
                .iter()
                .zip(&left_out)
                .zip(&spans_of)
                .map(|(((seq, e), left_out), span)| EntryOut {
                    seq: *seq,
                    records: &e.states,
                    left_out,
                    lost: e.lost,
                    request: e.request.as_ref(),
                    span: *span,
                })
                .collect();
            let encoded = if linked {
                let sent: usize = forms
                    .iter()
                    .flatten()
                    .filter(|f| matches!(f, StateForm::Linked { .. }))
                    .count();
                self.stats.linked_states_sent += sent as u64;
                encode_linked_entries(version, origin, &borrowed, &forms)
            } else {
                encode_entries(version, origin, &borrowed)
            };
            let p = self
                .peers
                .get_mut(&peer)
                .ok_or_else(|| unreachable_peer(peer))?;
            p.sent.add(crate::model::Dot::new(origin, seq - 1));
            p.inflight_bytes += flights.iter().map(|f| f.bytes).sum::<usize>();
            p.inflight.extend(flights);
            self.stats.entry_bytes_sent += encoded.len() as u64;
            self.send_bytes(peer, encoded);
        }
    }

    /// Acknowledges what arrived and was applied, on links where an `Ack` is owed and none
    /// was sent for `ACK_IDLE_INTERVAL_MS`: a driver calls it when it has nothing else queued,
    /// so a writer waiting for other regions to hold its write does not wait for the next tick,
    /// and a busy link still sends at most one such `Ack` per interval.
    pub fn acknowledge_idle(&mut self, store: &impl ReplicaStore, now_ms: u64) {
        let owed: Vec<LinkId> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                p.unacked_bytes > 0 && now_ms.saturating_sub(p.last_ack_ms) >= ACK_IDLE_INTERVAL_MS
            })
            .map(|(id, _)| *id)
            .collect();
        for peer in owed {
            self.send_ack(peer, store, now_ms);
        }
    }

    /// Tells the peer this replica's applied vector.
    pub(super) fn send_ack(&mut self, peer: LinkId, store: &impl ReplicaStore, now_ms: u64) {
        self.ack_serial += 1;
        let ack = Frame::Ack {
            applied: vv_entries(&store.applied()),
            serial: self.ack_serial,
        };
        if let Some(p) = self.peers.get_mut(&peer) {
            p.last_ack_ms = p.last_ack_ms.max(now_ms);
            p.unacked_bytes = 0;
        }
        self.send(peer, &ack);
    }
}

/// Checks (debug builds) that the store applied `origin`'s entries in sequence order, each
/// once (the first invariant of `replicator/mod.rs`): the applied ones run on from `before`,
/// one number after the other, nothing is applied after a gap, and the applied vector covers
/// them.
fn debug_applied_in_order(
    origin: OriginId,
    before: u64,
    seqs: &[u64],
    outcomes: &[ApplyOutcome],
    store: &impl ReplicaStore,
) {
    let applied: Vec<u64> = outcomes
        .iter()
        .zip(seqs)
        .filter(|(o, _)| matches!(o, ApplyOutcome::Applied { .. }))
        .map(|(_, seq)| *seq)
        .collect();
    debug_assert!(
        applied
            .iter()
            .zip(before + 1..)
            .all(|(seq, next)| *seq == next),
        "{origin}: applied {applied:?} after {before}"
    );
    debug_assert!(
        outcomes
            .iter()
            .position(|o| matches!(o, ApplyOutcome::Gap { .. }))
            .is_none_or(|gap| gap + 1 == outcomes.len()),
        "{origin}: outcomes after a gap: {outcomes:?}"
    );
    debug_assert!(
        applied
            .last()
            .is_none_or(|last| *last <= store.applied().get(origin)),
        "{origin}: applied {applied:?}, but the applied vector stands at {}",
        store.applied().get(origin)
    );
}

/// The states a frame being filled carries so far, by key (the last one of each), to count
/// what an entry adds to a version-6 frame.
#[derive(Default)]
pub(super) struct RepeatedStates(
    pub(super) std::collections::HashMap<std::sync::Arc<[u8]>, std::sync::Arc<[u8]>>,
);

impl RepeatedStates {
    /// Bytes of `entry`'s states that repeat their key's previous state in the frame (sent as
    /// a mark), taking its states in.
    fn bytes_repeated(&mut self, entry: &ShippedEntry) -> usize {
        let mut repeated = 0;
        for (k, v) in &entry.states {
            match self.0.insert(k.clone(), v.clone()) {
                Some(before) if before[..] == v[..] => repeated += v.len(),
                _ => {}
            }
        }
        repeated
    }

    /// How each of `entry`'s states goes on a version-7 link whose peer end remembers
    /// `link`: a repeat of its key's state earlier in the frame, a patch against the one the
    /// link carried last when that is smaller, or whole; and the bytes that saves. Takes
    /// nothing in (the caller does, once the entry is in the frame).
    pub(super) fn forms(
        &self,
        link: &LinkStates<std::sync::Arc<[u8]>>,
        entry: &ShippedEntry,
    ) -> (Vec<StateForm>, usize) {
        let mut saved = 0;
        // An entry of one record (most writes) needs no map of its own records.
        let mut in_entry: std::collections::HashMap<&[u8], &[u8]> = Default::default();
        let several = entry.states.len() > 1;
        let forms = entry
            .states
            .iter()
            .map(|(k, v)| {
                let in_this_entry = several.then(|| in_entry.insert(&k[..], &v[..])).flatten();
                let earlier = in_this_entry.or_else(|| self.0.get(k).map(|s| &s[..]));
                if earlier == Some(&v[..]) {
                    saved += v.len();
                    return StateForm::Repeat;
                }
                // The link's table is as the receiver reads it up to this entry (the caller
                // takes each entry in once it is in the frame); within the entry it is not.
                if in_this_entry.is_some() || v.len() < LINKED_STATE_BYTES_MIN {
                    return StateForm::Whole;
                }
                let Some(base) = link.get(k) else {
                    return StateForm::Whole;
                };
                let Some(patch) = state_patch::diff_states(base, v) else {
                    return StateForm::Whole;
                };
                let form = StateForm::Linked {
                    hash: digest::state_hash(v),
                    patch,
                };
                let wire = form.wire_bytes(v.len());
                if wire >= v.len() {
                    return StateForm::Whole;
                }
                saved += v.len() - wire;
                form
            })
            .collect();
        (forms, saved)
    }
}

/// Bytes of an entry in flight: its states, the keys it leaves out and its request tag.
fn shipped_bytes(entry: &ShippedEntry) -> usize {
    wire_bytes(entry.states.iter().map(|(k, v)| (&k[..], &v[..])))
        + entry
            .request
            .as_ref()
            .map_or(0, |tag| tag.client.len() + tag.id.len() + 2)
        + entry
            .left_out
            .iter()
            .map(|k| k.len() + crate::limits::RECORD_OVERHEAD_BYTES)
            .sum::<usize>()
}

/// An entry's records, trimmed to what one frame carries. A write never leaves more
/// (`limits`), but the current states it ships may have met other regions' concurrent writes
/// since: the largest are left out then, counted and logged, and named in the entry (the
/// fault stays with their keys; the entry ships partial, and the peer waits for a whole copy
/// from another member before it counts it as applied).
fn fit_entry(origin: OriginId, seq: u64, mut entry: ShippedEntry) -> ShippedEntry {
    let mut size = shipped_bytes(&entry);
    while size > ENTRY_BYTES_MAX {
        let Some((largest, _)) = entry
            .states
            .iter()
            .enumerate()
            .max_by_key(|(_, (k, v))| k.len() + v.len())
        else {
            break;
        };
        let (key, state) = entry.states.remove(largest);
        size -= state.len();
        metrics::counter!("meridian_replication_records_unshippable_total").increment(1);
        tracing::error!(%origin, seq, key = %crate::show_key(&key[..key.len().min(64)]), bytes = state.len(), "a record grew past what one frame carries and is left out of its entry");
        entry.left_out.push(key.to_vec());
    }
    entry
}
