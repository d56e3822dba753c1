//! State transfer, when the log no longer holds what a peer lacks.
//!
//! The replica that cannot ship from its log (the *offerer*) reads its applied vector (the
//! snapshot) with a table over every record (`AeOffer`, sized by the peer's lag; the store
//! keeps the summary up to date, so no record is read for it). The receiver subtracts its own
//! table and peels the difference: it asks for the key hashes it lacks (`AeWant`), or for a
//! larger table (`AeRetry`). When the difference is too large for any table (a replica
//! joining a large data set, or back after long), or the offerer holds far more records than
//! the receiver, the receiver asks for everything in key order instead (`AeStream`): bytes
//! and memory then scale with the records that move, chunk by chunk.
//!
//! Chunks (`AeRecords`, `AeRange`) are numbered, sized by bytes, flow-controlled by `AeAck`
//! and applied in order. Each carries the snapshot: the receiver joins every record knowing
//! the offerer applied every write in it, and records it holds that the offerer does not (the
//! difference's other side, or a streamed range's gaps) lose the dots the snapshot covers. The
//! last chunk ends the round and the receiver adopts the snapshot, capped by what the offerer
//! claims (`handshake::cap_snapshot`).
//!
//! A snapshot vouches only for what the offerer's records reflect: the offer carries its
//! exceptions (writes and keys declared lost, `replication::exceptions`) and each chunk the
//! keys it could not ship (unreadable, corrupt, too large). For those the receiver neither
//! erases nor prunes: it joins them plainly, and takes the exceptions on with the snapshot.

use super::{ReplicationError, Replicator};
use crate::model::digest::key_hash;
use crate::model::VersionVector;
use crate::replication::created_keys::CREATED_KEPT;
use crate::replication::exceptions::horizon_of;
use crate::replication::frame::{vv_entries, Exceptions, Frame, FrameError, EXCEPTIONS_MAX};
use crate::replication::iblt::Iblt;
use crate::replication::older_peers;
use crate::replication::peer::{AntiEntropy, LinkState, Transfer};
use crate::replication::seam::{ApplyOutcome, ReadStates, RecordRange, RecordState, ReplicaStore};
use crate::replication::LinkId;
use std::collections::{BTreeSet, VecDeque};

/// Cells per sub-table of the summary every store keeps up to date (`ReplicaStore::summarize`),
/// as a power of two: 3 × 2^17 cells, 12 MiB. Differences up to about 250,000 records decode;
/// larger ones stream. Both stores use it, so the replicator sizes rounds over the model as it
/// does over RocksDB.
pub const SUMMARY_SUB_LOG: u32 = 17;

/// Cells of that summary (`ReplicaStore::summary_cells`): the largest table a round uses.
pub const SUMMARY_CELLS: usize = 3 << SUMMARY_SUB_LOG;

/// A streamed chunk carries up to this many times `frame_bytes_target`.
const STREAM_CHUNK_FRAMES: usize = 8;

/// Records read at once when filling a chunk from wanted keys.
const TRANSFER_READ_KEYS: usize = 16;

/// The offerer holds more than this many times the receiver's records: most of it is missing
/// here, and streaming it costs less than any table.
const STREAM_WHEN_RECORDS_RATIO: u64 = 2;

/// ... and more than this many records beyond that (small data sets always use a table).
const STREAM_WHEN_RECORDS_MORE: u64 = 1_000;

/// A retry's table when the difference filled every cell of the last one: this many times its
/// cells (and at least twice them otherwise).
const RETRY_GROWTH_WHEN_FULL: usize = 8;

/// How a receiver answers an offer (`AeOffer`), from the offer's table and record count and
/// its own table of as many cells: the state-transfer diff plan, in one place (the replicator's
/// `on_offer`, and tests that run a round through the seam by hand).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OfferPlan {
    /// The difference peeled: ask for the records of `hashes` (`AeWant`); `ours` are the key
    /// hashes only this replica holds (the offerer holds nothing of those keys).
    Want {
        /// Hashes of the keys to ask for, sorted and distinct.
        hashes: Vec<u64>,
        /// Hashes of the keys only here, sorted and distinct (a key both hold in different
        /// states is asked for, not counted here).
        ours: Vec<u64>,
    },
    /// Ask for every record in key order (`AeStream`): the difference is too large for any
    /// table, or the offerer holds far more records.
    Stream,
    /// Ask for a table of this many cells (`AeRetry`).
    Retry {
        /// Cells of the table to offer.
        cells: usize,
    },
}

impl OfferPlan {
    /// The answer to an offer of `theirs` over `records` records, given this replica's table
    /// `mine` (as many cells) over `my_records`, and `largest`, the most cells this replica's
    /// summary has (`ReplicaStore::summary_cells`).
    pub fn of(
        theirs: &Iblt,
        records: u64,
        mine: &Iblt,
        my_records: u64,
        largest: usize,
    ) -> OfferPlan {
        if theirs.cell_count() > largest
            || records
                > STREAM_WHEN_RECORDS_RATIO
                    .saturating_mul(my_records)
                    .saturating_add(STREAM_WHEN_RECORDS_MORE)
        {
            return OfferPlan::Stream;
        }
        let difference = theirs.subtract(mine);
        match difference.as_ref().ok().and_then(|d| d.decode().ok()) {
            Some(diff) => {
                // Keys only here: those whose key hash the peer's side lacks too (a key both
                // hold in different states is asked for, not dropped).
                let mut hashes: Vec<u64> = diff.only_in_self.iter().map(|i| i.0).collect();
                hashes.dedup();
                let theirs_keys: BTreeSet<u64> = hashes.iter().copied().collect();
                let mut ours: Vec<u64> = diff
                    .only_in_other
                    .iter()
                    .map(|i| i.0)
                    .filter(|h| !theirs_keys.contains(h))
                    .collect();
                ours.dedup();
                OfferPlan::Want { hashes, ours }
            }
            None if theirs.cell_count() >= largest => OfferPlan::Stream,
            None => {
                // Sized from the share of cells the difference left empty; a table it filled
                // whole says only that it is much larger: eight times then.
                let estimate = difference.ok().and_then(|d| d.difference_estimate());
                let cells = match estimate {
                    Some(d) => Iblt::cells_for(d + d / 8),
                    None => theirs.cell_count() * RETRY_GROWTH_WHEN_FULL,
                }
                .max(theirs.cell_count() * 2);
                OfferPlan::Retry { cells }
            }
        }
    }
}

impl Replicator {
    /// Starts a state-transfer round towards `peer`, whose lag is about `lag` entries.
    pub(super) fn start_transfer<S: ReplicaStore>(
        &mut self,
        peer: LinkId,
        lag: u64,
        store: &S,
        now_ms: u64,
    ) -> Result<(), ReplicationError<S::Error>> {
        let expected = usize::try_from(lag.saturating_mul(2)).unwrap_or(usize::MAX);
        let records = store.record_count().map_err(ReplicationError::Store)?;
        // A lag as large as the data set: most of it will stream, and a table that size would
        // cost as much as the records; the smallest one carries the record count that makes
        // the receiver ask for the stream (or a larger table, if it holds as much).
        let cells = if expected as u64 >= records / 2 {
            crate::replication::iblt::CELLS_MIN
        } else {
            Iblt::cells_for(expected).min(store.summary_cells())
        };
        self.offer(peer, cells, store, now_ms)
    }

    /// A state-transfer frame from `peer`.
    pub(super) fn on_anti_entropy<S: ReplicaStore>(
        &mut self,
        peer: LinkId,
        frame: Frame,
        store: &S,
        now_ms: u64,
    ) -> Result<(), ReplicationError<S::Error>> {
        match frame {
            Frame::AeOffer {
                round,
                table,
                records,
                exceptions,
            } => self.on_offer(peer, round, &table, records, *exceptions, store, now_ms),
            Frame::AeWant { round, .. } | Frame::AeStream { round }
                if self.dropped_round(peer, round) =>
            {
                // The peer took an offer this replica has dropped (overtaken by the answer to
                // the peer's own offer) and waits for it: a fresh round replaces it there.
                self.offer(peer, crate::replication::iblt::CELLS_MIN, store, now_ms)
            }
            Frame::AeWant { round, hashes } => {
                let keys = store
                    .keys_for_hashes(&hashes)
                    .map_err(ReplicationError::Store)?;
                self.answered(peer, round, Transfer::Keys(keys.into()), now_ms);
                self.send_transfer(peer, store)
            }
            Frame::AeStream { round } => {
                self.answered(
                    peer,
                    round,
                    Transfer::Stream {
                        next: Some(Vec::new()),
                    },
                    now_ms,
                );
                self.send_transfer(peer, store)
            }
            Frame::AeRetry { round, cells } => {
                if self.offering(peer) == Some(round) {
                    let cells = usize::try_from(cells)
                        .unwrap_or(usize::MAX)
                        .min(store.summary_cells());
                    self.offer(peer, cells, store, now_ms)?;
                }
                Ok(())
            }
            Frame::AeRecords {
                round,
                chunk,
                records,
                left_out,
                done,
                snapshot,
            } => {
                let chunk = Chunk {
                    round,
                    chunk,
                    records: owned(records),
                    left_out: left_out.into_iter().map(|k| k.into_vec()).collect(),
                    range: None,
                    done,
                    snapshot,
                };
                self.on_chunk(peer, chunk, store, now_ms)
            }
            Frame::AeRange {
                round,
                chunk,
                from,
                through,
                records,
                left_out,
                done,
                snapshot,
            } => {
                let chunk = Chunk {
                    round,
                    chunk,
                    records: owned(records),
                    left_out: left_out.into_iter().map(|k| k.into_vec()).collect(),
                    range: Some((from.into_vec(), through.map(|t| t.into_vec()))),
                    done,
                    snapshot,
                };
                self.on_chunk(peer, chunk, store, now_ms)
            }
            Frame::AeAck { round, chunk } => {
                if let Some(Some(AntiEntropy::Offering {
                    round: r,
                    unacked,
                    started_ms,
                    ..
                })) = self.peers.get_mut(&peer).map(|p| p.ae.as_mut())
                {
                    if *r == round {
                        while unacked.front().is_some_and(|(n, _)| *n <= chunk) {
                            unacked.pop_front();
                        }
                        *started_ms = now_ms;
                    }
                }
                self.send_transfer(peer, store)
            }
            _ => Ok(()),
        }
    }

    /// The round this replica is offering to `peer`, if any.
    fn offering(&self, peer: LinkId) -> Option<u64> {
        match self.peers.get(&peer)?.ae.as_ref()? {
            AntiEntropy::Offering { round, .. } => Some(*round),
            AntiEntropy::Receiving { .. } => None,
        }
    }

    /// Whether `round` is an offer of this replica's that it dropped, with nothing under way
    /// on the link now (an answer to an offer in progress, or a stale one while another
    /// round runs, is not).
    fn dropped_round(&self, peer: LinkId, round: u64) -> bool {
        self.peers
            .get(&peer)
            .is_some_and(|p| p.ae.is_none() && round < self.next_round)
    }

    /// The peer answered round `round`'s offer: what to send.
    fn answered(&mut self, peer: LinkId, round: u64, what: Transfer, now_ms: u64) {
        if let Some(Some(AntiEntropy::Offering {
            round: r,
            transfer,
            started_ms,
            ..
        })) = self.peers.get_mut(&peer).map(|p| p.ae.as_mut())
        {
            if *r == round && matches!(transfer, Transfer::Waiting) {
                *transfer = what;
                *started_ms = now_ms;
            }
        }
    }

    /// Starts (or restarts with `cells` cells) a state-transfer round towards `peer`.
    pub(super) fn offer<S: ReplicaStore>(
        &mut self,
        peer: LinkId,
        cells: usize,
        store: &S,
        now_ms: u64,
    ) -> Result<(), ReplicationError<S::Error>> {
        if store.reconciling().is_some() {
            // Restored from a backup: its records vouch for nothing before a peer's round.
            return Ok(());
        }
        let summary = store.summarize(cells).map_err(ReplicationError::Store)?;
        let round = self.next_round;
        self.next_round += 1;
        self.stats.antientropy_rounds += 1;
        let frame = Frame::AeOffer {
            round,
            table: summary.table.to_bytes().into(),
            records: summary.records,
            exceptions: Box::new(summary.exceptions),
        };
        let Some(p) = self.peers.get_mut(&peer) else {
            return Ok(());
        };
        p.last_offer_ms = now_ms;
        p.ae = Some(AntiEntropy::Offering {
            round,
            snapshot: summary.applied,
            started_ms: now_ms,
            transfer: Transfer::Waiting,
            unacked: VecDeque::new(),
            next_chunk: 0,
            check: false,
        });
        let encoded = frame.encode();
        self.stats.antientropy_bytes_sent += encoded.len() as u64;
        self.send_bytes(peer, encoded);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn on_offer<S: ReplicaStore>(
        &mut self,
        peer: LinkId,
        round: u64,
        table: &[u8],
        records: u64,
        mut exceptions: Exceptions,
        store: &S,
        now_ms: u64,
    ) -> Result<(), ReplicationError<S::Error>> {
        // Both ends offered at once: the lower member id's round goes first (its peer takes
        // it and drops its own, which it offers again once this round is over).
        // A repeated offer of the round in progress (a duplicated frame) changes nothing: the
        // answer to the first one stands.
        if let Some(p) = self.peers.get(&peer) {
            match &p.ae {
                Some(AntiEntropy::Offering { .. }) if self.me < p.member => return Ok(()),
                Some(AntiEntropy::Receiving { round: r, .. }) if *r == round => return Ok(()),
                _ => {}
            }
        }
        let theirs = match Iblt::from_bytes(table) {
            Ok(t) => t,
            Err(e) => {
                return Err(self.refuse(
                    peer,
                    FrameError::Malformed(format!("anti-entropy table: {e}")),
                ))
            }
        };
        // A replica keeps at most this many: more is not an offer this build makes.
        exceptions.lost.truncate(EXCEPTIONS_MAX);
        exceptions.uncertain.truncate(EXCEPTIONS_MAX);
        let largest = store.summary_cells();
        let plan = if theirs.cell_count() > largest {
            OfferPlan::Stream
        } else {
            let mine = store
                .summarize(theirs.cell_count())
                .map_err(ReplicationError::Store)?;
            OfferPlan::of(&theirs, records, &mine.table, mine.records, largest)
        };
        let mut ours_only = BTreeSet::new();
        let mut wanted = BTreeSet::new();
        let reply = match plan {
            OfferPlan::Want { hashes, ours } => {
                wanted.extend(hashes.iter().copied());
                ours_only.extend(
                    store
                        .keys_for_hashes(&ours)
                        .map_err(ReplicationError::Store)?,
                );
                Frame::AeWant { round, hashes }
            }
            OfferPlan::Stream => Frame::AeStream { round },
            OfferPlan::Retry { cells } => Frame::AeRetry {
                round,
                cells: cells as u64,
            },
        };
        if let Some(p) = self.peers.get_mut(&peer) {
            if matches!(p.ae, Some(AntiEntropy::Offering { .. })) {
                p.last_offer_ms = 0; // the round dropped for the peer's is due again
            }
            p.ae = Some(AntiEntropy::Receiving {
                round,
                next_chunk: 0,
                since_ms: now_ms,
                ours_only,
                arrived: BTreeSet::new(),
                spoiled: false,
                wanted,
                exceptions,
            });
        }
        let encoded = reply.encode();
        self.stats.antientropy_bytes_sent += encoded.len() as u64;
        self.send_bytes(peer, encoded);
        Ok(())
    }

    /// A chunk of records of a round this replica receives.
    fn on_chunk<S: ReplicaStore>(
        &mut self,
        peer: LinkId,
        chunk: Chunk,
        store: &S,
        now_ms: u64,
    ) -> Result<(), ReplicationError<S::Error>> {
        let Chunk {
            round,
            chunk,
            records,
            left_out,
            range,
            done,
            snapshot,
        } = chunk;
        // What the sender does not vouch for: its exceptions, and every key its chunks left
        // out so far (taken on here with the snapshot).
        let exceptions = match self.peers.get_mut(&peer).and_then(|p| p.ae.as_mut()) {
            Some(AntiEntropy::Receiving {
                round: r,
                next_chunk,
                exceptions,
                ..
            }) if *r == round && *next_chunk == chunk => {
                for key in &left_out {
                    let hash = key_hash(key);
                    if !exceptions.uncertain.contains(&hash) {
                        exceptions.uncertain.push(hash);
                    }
                }
                exceptions.clone()
            }
            // A stale round, or out of order: the sender restarts the round after a timeout.
            _ => return Ok(()),
        };
        if !left_out.is_empty() {
            metrics::counter!("meridian_antientropy_records_left_out_total")
                .increment(left_out.len() as u64);
        }
        let spare: BTreeSet<u64> = exceptions.uncertain.iter().copied().collect();
        let snapshot = self.cap_snapshot(peer, &VersionVector::from_entries(snapshot), store);
        let horizon = horizon_of(&snapshot, &exceptions);
        if let Some((from, through)) = &range {
            // Keys held here in the range that the peer does not hold: what it applied of
            // them, it removed. (Looked at before the chunk's records are written; keys it
            // holds but left out are not gaps.)
            let present: BTreeSet<Vec<u8>> = records
                .iter()
                .map(|(k, _)| k.clone())
                .chain(left_out.iter().cloned())
                .collect();
            store
                .drop_absent(from, through.as_deref(), &present, &horizon, &spare)
                .map_err(ReplicationError::Store)?;
        }
        let mark = self.receiving_others(peer).then(|| store.created_mark());
        let merged = store
            .merge_states(&records, &horizon, &spare)
            .map_err(ReplicationError::Store)?;
        if let Some(mark) = mark {
            self.note_created(peer, store.created_since(mark));
        }
        if merged == ApplyOutcome::Invalid {
            return Err(self.refuse(
                peer,
                FrameError::Malformed("invalid records in a state transfer".into()),
            ));
        }
        let mut ours_only = BTreeSet::new();
        let mut spoilt = false;
        let mut gone = BTreeSet::new();
        if let Some(Some(AntiEntropy::Receiving {
            next_chunk,
            ours_only: only,
            arrived,
            spoiled,
            since_ms,
            wanted,
            ..
        })) = self.peers.get_mut(&peer).map(|p| p.ae.as_mut())
        {
            *next_chunk = chunk + 1;
            *since_ms = now_ms;
            for key in records.iter().map(|(k, _)| k).chain(&left_out) {
                only.remove(key);
                arrived.remove(key);
                wanted.remove(&key_hash(key));
            }
            if done {
                // Keys that came from elsewhere during the round, absent here when it began
                // and not sent by the peer: it holds nothing of them either.
                only.append(arrived);
                ours_only = std::mem::take(only);
                spoilt = *spoiled;
                gone = std::mem::take(wanted);
            }
        }
        if done && !gone.is_empty() {
            // Asked for and never sent: the peer no longer holds them (it reclaimed their
            // tombstones after its summary), so what it applied of them, it removed. The keys
            // held here with those hashes go as the ones only this replica held (simulator
            // seed 2400000933: a set removal's element stayed while the snapshot covered it).
            let hashes: Vec<u64> = gone.into_iter().collect();
            ours_only.extend(
                store
                    .keys_for_hashes(&hashes)
                    .map_err(ReplicationError::Store)?,
            );
        }
        if spoilt {
            // Keys arrived that are no longer known: the snapshot cannot be taken safely this
            // round (what it merged stays); the next round starts over.
            if let Some(p) = self.peers.get_mut(&peer) {
                p.ae = None;
            }
            self.send(peer, &Frame::AeAck { round, chunk });
            return Ok(());
        }
        self.send(peer, &Frame::AeAck { round, chunk });
        if done {
            let damaged = store.damaged();
            if !damaged.is_empty() {
                // The peer holds nothing of these keys: a damaged record among them has no
                // copy there to come back from.
                let member = self.peers.get(&peer).map(|p| p.member);
                let keys: Vec<Vec<u8>> = ours_only.iter().cloned().collect();
                if let Some(m) = member {
                    self.absent_at(m, &keys, &damaged);
                }
            }
            let (spared, dropped): (Vec<Vec<u8>>, Vec<Vec<u8>>) = ours_only
                .into_iter()
                .partition(|k| spare.contains(&key_hash(k)));
            if !dropped.is_empty() {
                // The peer holds nothing of these keys: what it applied of them, it removed (a
                // replica back with older states than it shipped learns deletes whose
                // tombstones are reclaimed everywhere else).
                store
                    .drop_covered(&dropped, &horizon)
                    .map_err(ReplicationError::Store)?;
            }
            // Keys the peer does not vouch for (`spared`) lose nothing here.
            let _ = spared;
            // What the snapshot does not vouch for matters here only where it raises this
            // replica's vector: dots it already applied, its records reflect.
            let applied = store.applied();
            let raised = snapshot.iter().any(|(o, s)| s > applied.get(o));
            let taken = Exceptions {
                lost: exceptions
                    .lost
                    .iter()
                    .filter(|(o, s)| *s > applied.get(*o) && *s <= snapshot.get(*o))
                    .copied()
                    .collect(),
                uncertain: if raised {
                    exceptions.uncertain.clone()
                } else {
                    Vec::new()
                },
            };
            store
                .adopt(&snapshot, &taken)
                .map_err(ReplicationError::Store)?;
            // A restored replica's records lost every dot the peer removed, once the peer has
            // seen everything the copy held: a peer that saw less (one that lost its disk
            // too) proves nothing of what the others removed.
            if let Some(need) = store.reconciling() {
                if need.iter().all(|(o, s)| snapshot.get(o) >= s) {
                    store.reconciled().map_err(ReplicationError::Store)?;
                }
            }
            if let Some(p) = self.peers.get_mut(&peer) {
                p.ae = None;
            }
            self.send_ack(peer, store, now_ms);
        }
        Ok(())
    }

    /// Whether a round from a peer other than `from` is being received (keys a join of
    /// `from`'s states creates then matter to it).
    pub(super) fn receiving_others(&self, from: LinkId) -> bool {
        self.peers
            .iter()
            .any(|(id, p)| *id != from && matches!(p.ae, Some(AntiEntropy::Receiving { .. })))
    }

    /// Keys a join of `from`'s states created (`None`: more than are remembered), noted in
    /// every round received from another peer.
    pub(super) fn note_created(&mut self, from: LinkId, created: Option<Vec<Vec<u8>>>) {
        for (id, p) in self.peers.iter_mut() {
            if *id == from {
                continue;
            }
            if let Some(AntiEntropy::Receiving {
                arrived, spoiled, ..
            }) = p.ae.as_mut()
            {
                match &created {
                    Some(keys) if arrived.len() + keys.len() <= CREATED_KEPT => {
                        arrived.extend(keys.iter().cloned())
                    }
                    _ => *spoiled = true,
                }
            }
        }
    }

    /// Sends the next chunks of a state transfer while the in-flight budget allows.
    pub(super) fn send_transfer<S: ReplicaStore>(
        &mut self,
        peer: LinkId,
        store: &S,
    ) -> Result<(), ReplicationError<S::Error>> {
        let target = self.config.frame_bytes_target;
        // A stream is a bulk transfer: chunks of a few frames' worth, as much in flight as the
        // link's window allows.
        let stream_target = (target * STREAM_CHUNK_FRAMES).min(crate::limits::ENTRY_BYTES_MAX);
        let window = self.inflight_window(self.peers.get(&peer).and_then(|p| p.rtt_ms));
        let version = self.link_version(peer);
        loop {
            let Some(Some(AntiEntropy::Offering {
                round,
                snapshot,
                transfer,
                unacked,
                next_chunk,
                ..
            })) = self.peers.get_mut(&peer).map(|p| p.ae.as_mut())
            else {
                return Ok(());
            };
            let in_flight: usize = unacked.iter().map(|(_, b)| *b).sum();
            // A stream may keep as much in flight as any link (the receiver applies chunk by
            // chunk, and bulk transfer is what the cap is for).
            let budget = match transfer {
                Transfer::Stream { .. } => crate::replication::INFLIGHT_BYTES_CAP.max(window),
                _ => window,
            };
            let finished = match transfer {
                Transfer::Waiting => return Ok(()),
                Transfer::Keys(pending) => pending.is_empty() && *next_chunk > 0,
                Transfer::Stream { next } => next.is_none(),
            };
            if finished || in_flight >= budget {
                return Ok(());
            }
            let (round, chunk) = (*round, *next_chunk);
            *next_chunk += 1;
            // Every chunk carries the snapshot: the receiver joins each record knowing this
            // replica applied every write in it.
            let snapshot = vv_entries(snapshot);
            let frame = match transfer {
                Transfer::Waiting => return Ok(()),
                Transfer::Keys(pending) => {
                    let states = read_wanted(pending, target, store)?;
                    Frame::AeRecords {
                        round,
                        chunk,
                        records: shipped(older_peers::records_for(version, states.records)),
                        left_out: states.left_out.into_iter().map(Into::into).collect(),
                        done: pending.is_empty(),
                        snapshot,
                    }
                }
                Transfer::Stream { next } => {
                    let from = next.take().unwrap_or_default();
                    let RecordRange {
                        states,
                        next: through,
                    } = store
                        .read_range(&from, stream_target)
                        .map_err(ReplicationError::Store)?;
                    next.clone_from(&through);
                    Frame::AeRange {
                        round,
                        chunk,
                        from: from.into(),
                        done: through.is_none(),
                        through: through.map(Into::into),
                        records: shipped(older_peers::records_for(version, states.records)),
                        left_out: states.left_out.into_iter().map(Into::into).collect(),
                        snapshot,
                    }
                }
            };
            let encoded = frame.encode();
            if let Some(Some(AntiEntropy::Offering { unacked, .. })) =
                self.peers.get_mut(&peer).map(|p| p.ae.as_mut())
            {
                unacked.push_back((chunk, encoded.len()));
            }
            if matches!(
                frame,
                Frame::AeRecords { done: true, .. } | Frame::AeRange { done: true, .. }
            ) {
                // The receiver caps the snapshot it adopts by what this replica claims: claim
                // it fresh, ahead of the last chunk on the same stream.
                self.send_ack(peer, store, 0);
            }
            self.stats.antientropy_bytes_sent += encoded.len() as u64;
            self.send_bytes(peer, encoded);
        }
    }
}

/// The records of wanted keys, a few at a time: at least one record, then up to `target`
/// bytes, never past what one frame carries; keys not read go back to `pending`, keys that
/// cannot be shipped are named.
fn read_wanted<S: ReplicaStore>(
    pending: &mut VecDeque<Vec<u8>>,
    target: usize,
    store: &S,
) -> Result<ReadStates, ReplicationError<S::Error>> {
    let max = crate::limits::ENTRY_BYTES_MAX;
    let mut out = ReadStates::default();
    let mut size = 0;
    while size < target {
        let group: Vec<Vec<u8>> = (0..TRANSFER_READ_KEYS)
            .map_while(|_| pending.pop_front())
            .collect();
        if group.is_empty() {
            break;
        }
        let read = store
            .read_records(&group)
            .map_err(ReplicationError::Store)?;
        size += read
            .left_out
            .iter()
            .map(|k| k.len() + crate::limits::RECORD_OVERHEAD_BYTES)
            .sum::<usize>();
        out.left_out.extend(read.left_out);
        let mut read = read.records.into_iter();
        for state in read.by_ref() {
            let bytes = state.0.len() + state.1.len() + crate::limits::RECORD_OVERHEAD_BYTES;
            if bytes > max {
                // Grown past what a frame carries (merges): left out, as in entries.
                metrics::counter!("meridian_replication_records_unshippable_total").increment(1);
                out.left_out.push(state.0);
                continue;
            }
            if !out.records.is_empty() && size + bytes > max {
                pending.push_front(state.0);
                break;
            }
            size += bytes;
            out.records.push(state);
        }
        for (key, _) in read {
            pending.push_front(key);
        }
    }
    Ok(out)
}

fn owned(records: Vec<(serde_bytes::ByteBuf, serde_bytes::ByteBuf)>) -> Vec<RecordState> {
    records
        .into_iter()
        .map(|(k, v)| (k.into_vec(), v.into_vec()))
        .collect()
}

fn shipped(records: Vec<RecordState>) -> Vec<(serde_bytes::ByteBuf, serde_bytes::ByteBuf)> {
    records
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect()
}

impl Replicator {
    /// Offers the smallest table on an idle link whose vectors agree, once per
    /// `antientropy_check_ms`: the peer asks for whatever differs.
    pub(super) fn check_idle<S: ReplicaStore>(
        &mut self,
        peer: LinkId,
        store: &S,
        now_ms: u64,
    ) -> Result<(), ReplicationError<S::Error>> {
        let Some(p) = self.peers.get(&peer) else {
            return Ok(());
        };
        let idle = matches!(p.state, LinkState::Ready { .. })
            && p.ae.is_none()
            && p.inflight.is_empty()
            && now_ms.saturating_sub(p.last_offer_ms) >= self.config.antientropy_check_ms;
        if !idle || p.claimed != store.applied() {
            return Ok(());
        }
        self.offer(peer, crate::replication::iblt::CELLS_MIN, store, now_ms)?;
        if let Some(Some(AntiEntropy::Offering { check, .. })) =
            self.peers.get_mut(&peer).map(|p| p.ae.as_mut())
        {
            *check = true;
        }
        Ok(())
    }
}

/// A chunk of a state-transfer round, as received.
struct Chunk {
    round: u64,
    chunk: u64,
    records: Vec<RecordState>,
    left_out: Vec<Vec<u8>>,
    /// The key range a streamed chunk covers whole.
    range: Option<(Vec<u8>, Option<Vec<u8>>)>,
    done: bool,
    snapshot: Vec<(crate::model::OriginId, u64)>,
}
