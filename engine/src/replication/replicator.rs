//! The replication state machine: frames and ticks in, frames out. No I/O, no clock, no
//! randomness; time is an argument. Drivers: the simulator (`crate::sim`) and, later, the QUIC
//! runtime.
//!
//! Invariants:
//! - entries of one origin are applied in sequence order; duplicates are ignored, a gap is
//!   answered with `Nack` and nothing after it is applied;
//! - a replica sends, for every origin it holds, what the peer's cursor lacks (so writes relay
//!   through any path of live links);
//! - bytes sent and not acknowledged per link stay under its window (`inflight_window`: the
//!   configured bytes plus more per millisecond of measured round trip, capped), plus one frame;
//! - a malformed or unexpected frame closes that link only.

use super::frame::{encode_entries, vv_entries, Frame, FrameError};
use super::inbound::{wire_bytes, DecodedEntry, Inbound};
use super::peer::{AntiEntropy, InFlight, LinkState, Peer};
use super::seam::{ApplyOutcome, ReplicaStore, SharedState};
use crate::limits::ENTRY_BYTES_MAX;
use crate::model::{ReplicaId, VersionVector};
use std::collections::{BTreeMap, VecDeque};

/// Most unacknowledged bytes allowed on any link, whatever its round trip.
pub const INFLIGHT_BYTES_CAP: usize = 8 << 20;

/// Transport-level handle of a link, chosen by the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId(pub u32);

/// Tunables of the protocol.
#[derive(Clone, Debug)]
pub struct ReplicationConfig {
    /// Cluster id; peers with another one are refused.
    pub cluster: String,
    /// This replica's region name.
    pub region: String,
    /// Unacknowledged bytes allowed per link (on a link whose round trip is not known yet,
    /// or short).
    pub inflight_bytes_max: usize,
    /// More unacknowledged bytes allowed per millisecond of a link's measured round trip, up
    /// to `INFLIGHT_BYTES_CAP`: a long link needs more in flight to stay busy (1 MiB over
    /// 50 ms carries at most 20 MB/s).
    pub inflight_bytes_per_rtt_ms: usize,
    /// Target size of one `Entries` frame (a single large entry may exceed it).
    pub frame_bytes_target: usize,
    /// Idle time after which an `Ack` and a `Ping` are sent as heartbeat.
    pub heartbeat_ms: u64,
    /// Time without acknowledged progress after which in-flight entries are resent.
    pub retransmit_ms: u64,
    /// How long a peer must lag on another origin's entries, without progress, before this
    /// replica relays them (the origin itself usually delivers first; relaying at once would
    /// send everything twice).
    pub relay_delay_ms: u64,
    /// Every live replica of the cluster, this one included. Log entries and tombstones are
    /// reclaimed once all of them have applied them; empty: never reclaim.
    pub members: Vec<ReplicaId>,
    /// Interval between compactions (log truncation and tombstone collection).
    pub compact_every_ms: u64,
    /// Drawn at each process start (the driver's randomness): a member whose earlier session
    /// comes back is two processes sharing one identity.
    pub session: u64,
    /// How long a replica reopened on a directory that has replicated waits for every other
    /// member to confirm its origin before it writes under a new epoch instead.
    pub epoch_confirm_ms: u64,
    /// Interval between state-transfer checks on an idle link whose vectors agree: equal
    /// vectors do not prove equal records (a dot of a write lost with a disk may survive at
    /// some replicas only), and the check costs one small table when nothing differs.
    pub antientropy_check_ms: u64,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            cluster: "meridian".into(),
            region: "local".into(),
            inflight_bytes_max: 1 << 20,
            inflight_bytes_per_rtt_ms: 128 << 10,
            frame_bytes_target: 64 << 10,
            heartbeat_ms: 500,
            retransmit_ms: 1_500,
            relay_delay_ms: 1_000,
            members: Vec::new(),
            compact_every_ms: 2_000,
            session: 0,
            epoch_confirm_ms: 5_000,
            antientropy_check_ms: 10_000,
        }
    }
}

/// Something the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send these frame bytes on the link.
    Send {
        /// The link.
        peer: PeerId,
        /// Encoded frame.
        frame: Vec<u8>,
    },
    /// Close the link (refused handshake or bad frame).
    Close {
        /// The link.
        peer: PeerId,
        /// Why.
        reason: String,
    },
}

/// Why handling input failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicationError<E: std::error::Error + 'static> {
    /// The peer sent something invalid; its link is closed, nothing else is affected.
    #[error("peer {peer:?}: {error}")]
    Peer {
        /// The link.
        peer: PeerId,
        /// What was wrong.
        error: FrameError,
    },
    /// The store failed; the driver should stop replicating.
    #[error("store: {0}")]
    Store(#[source] E),
}

/// Counters for metrics and benchmarks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames sent.
    pub frames_sent: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Bytes of `Entries` frames sent.
    pub entry_bytes_sent: u64,
    /// Entries applied in order.
    pub entries_applied: u64,
    /// Entries received that were already applied.
    pub duplicates: u64,
    /// Entries that arrived after a hole.
    pub gaps: u64,
    /// Links whose in-flight entries were resent after a timeout.
    pub retransmits: u64,
    /// State-transfer rounds started by this replica.
    pub antientropy_rounds: u64,
    /// Bytes of anti-entropy frames sent.
    pub antientropy_bytes_sent: u64,
    /// Log entries reclaimed.
    pub log_entries_removed: u64,
    /// Tombstones reclaimed.
    pub tombstones_removed: u64,
    /// Tombstones waiting for stability after the last compaction.
    pub tombstones_pending: u64,
}

/// The per-replica replication state machine.
pub struct Replicator {
    /// This replica's member id (its origin is the store's current one).
    me: ReplicaId,
    config: ReplicationConfig,
    peers: BTreeMap<PeerId, Peer>,
    out: VecDeque<Output>,
    stats: Stats,
    /// The latest applied vector each member reported (clamped), by member id.
    known: BTreeMap<ReplicaId, VersionVector>,
    /// Process sessions seen per member.
    sessions: BTreeMap<ReplicaId, identity::SessionLog>,
    /// While this replica's origin waits for its peers' confirmation.
    confirming: Option<identity::Confirming>,
    /// Serial of the last `Ack` sent (on any link: increasing on each).
    ack_serial: u64,
    next_round: u64,
    last_compact_ms: u64,
}

impl Replicator {
    /// A replicator for the replica whose member id is `member`.
    pub fn new(member: ReplicaId, config: ReplicationConfig) -> Replicator {
        Replicator {
            me: member,
            config,
            peers: BTreeMap::new(),
            out: VecDeque::new(),
            stats: Stats::default(),
            known: BTreeMap::new(),
            sessions: BTreeMap::new(),
            confirming: None,
            ack_serial: 0,
            next_round: 1,
            last_compact_ms: 0,
        }
    }

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
        self.config.inflight_bytes_max / 4
    }

    /// Counts `replica` as a member from now on (a replica added to the cluster).
    pub fn add_member(&mut self, replica: ReplicaId) {
        if !self.config.members.contains(&replica) {
            self.config.members.push(replica);
        }
    }

    /// Stops counting `replica` as a member (declared dead), so that stability can advance.
    pub fn remove_member(&mut self, replica: ReplicaId) {
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
        let origins: std::collections::BTreeSet<ReplicaId> = vectors
            .iter()
            .flat_map(|v| v.iter().map(|(o, _)| o))
            .collect();
        Some(VersionVector::from_entries(origins.into_iter().map(|o| {
            (o, vectors.iter().map(|v| v.get(o)).min().unwrap_or(0))
        })))
    }

    /// How far every other member has applied this replica's own entries (of its current
    /// origin), once each has reported (`None` without other members).
    fn shipped_everywhere(&self, origin: ReplicaId) -> Option<u64> {
        self.config
            .members
            .iter()
            .filter(|m| **m != self.me)
            .map(|m| self.known.get(m).map(|v| v.get(origin)))
            .min()
            .flatten()
    }

    /// The next thing the driver must do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The links and what is known of them.
    pub fn peers(&self) -> impl Iterator<Item = (PeerId, &Peer)> {
        self.peers.iter().map(|(id, p)| (*id, p))
    }

    /// A link came up to the peer that its certificate and the configuration say is member
    /// `member`: say hello (the peer's own hello must announce that member).
    pub fn connected(
        &mut self,
        peer: PeerId,
        member: ReplicaId,
        store: &impl ReplicaStore,
        now_ms: u64,
    ) {
        self.peers.insert(peer, Peer::new(member, now_ms));
        self.send_hello(peer, store, false, now_ms);
    }

    /// A link went down: forget it (cursors are rebuilt from the next `Hello`).
    pub fn disconnected(&mut self, peer: PeerId) {
        self.peers.remove(&peer);
    }

    /// A local write committed: push it to every ready link.
    pub fn local_write<S: ReplicaStore>(
        &mut self,
        store: &S,
        now_ms: u64,
    ) -> Result<(), ReplicationError<S::Error>> {
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in ids {
            self.pump(id, store, now_ms)?;
        }
        Ok(())
    }

    /// Time passed: retry hellos, resend after timeouts, heartbeat, push.
    pub fn tick<S: ReplicaStore>(
        &mut self,
        store: &S,
        now_ms: u64,
    ) -> Result<(), ReplicationError<S::Error>> {
        self.check_origin(store, now_ms)?;
        if now_ms.saturating_sub(self.last_compact_ms) >= self.config.compact_every_ms {
            self.last_compact_ms = now_ms;
            // Also when stability stood still: tombstones may have arrived by state transfer.
            if let Some(stable) = self.stable(store) {
                let c = store.compact(&stable).map_err(ReplicationError::Store)?;
                self.stats.log_entries_removed += c.log_entries_removed;
                self.stats.tombstones_removed += c.tombstones_removed;
                self.stats.tombstones_pending = c.tombstones_pending;
            }
        }
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in ids {
            let Some(p) = self.peers.get_mut(&id) else {
                continue;
            };
            match p.state {
                LinkState::Connecting { hello_sent_ms } => {
                    if now_ms.saturating_sub(hello_sent_ms) >= self.config.retransmit_ms {
                        self.send_hello(id, store, false, now_ms);
                    }
                    continue;
                }
                LinkState::Refused => continue,
                LinkState::Ready { .. } => {}
            }
            if let Some(AntiEntropy::Offering { started_ms, .. }) = &p.ae {
                if now_ms.saturating_sub(*started_ms) >= 4 * self.config.retransmit_ms {
                    p.ae = None; // lost somewhere: the next pump offers again
                }
            }
            if !p.inflight.is_empty()
                && now_ms.saturating_sub(p.last_progress_ms) >= self.config.retransmit_ms
            {
                let origins: Vec<ReplicaId> = p.inflight.iter().map(|f| f.origin).collect();
                for o in origins {
                    let acked = p.acked.get(o);
                    p.rewind(o, acked);
                }
                p.last_progress_ms = now_ms;
                self.stats.retransmits += 1;
            }
            // Heartbeat: other traffic (a `Pong`, entries) does not tell the peer what this
            // replica has applied, which its stability and relaying depend on.
            if now_ms.saturating_sub(p.last_ack_ms) >= self.config.heartbeat_ms {
                self.send_ack(id, store, now_ms);
                self.send(id, &Frame::Ping { sent_ms: now_ms });
            } else if p.unacked_bytes > 0 {
                self.send_ack(id, store, now_ms);
            }
            self.pump(id, store, now_ms)?;
            self.check_idle(id, store, now_ms)?;
        }
        Ok(())
    }

    /// Offers the smallest table on an idle link whose vectors agree, once per
    /// `antientropy_check_ms`: the peer asks for whatever differs.
    fn check_idle<S: ReplicaStore>(
        &mut self,
        peer: PeerId,
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
        self.offer(peer, crate::replication::iblt::CELLS_MIN, store, now_ms)
    }

    /// A frame arrived on a link.
    pub fn handle<S: ReplicaStore>(
        &mut self,
        peer: PeerId,
        bytes: &[u8],
        store: &S,
        now_ms: u64,
    ) -> Result<(), ReplicationError<S::Error>> {
        if !self.peers.contains_key(&peer) {
            return Ok(()); // a late frame on a link that is gone
        }
        match Inbound::decode(
            &bytes::Bytes::copy_from_slice(bytes),
            store.record_bytes_max(),
        ) {
            Ok(inbound) => self.handle_inbound(peer, inbound, store, now_ms),
            Err(error) => Err(self.refuse(peer, error)),
        }
    }

    /// A frame arrived on a link, already decoded by `Inbound::decode` (drivers do that on
    /// their I/O threads).
    pub fn handle_inbound<S: ReplicaStore>(
        &mut self,
        peer: PeerId,
        inbound: Inbound,
        store: &S,
        now_ms: u64,
    ) -> Result<(), ReplicationError<S::Error>> {
        if !self.peers.contains_key(&peer) {
            return Ok(()); // a late frame on a link that is gone
        }
        let ready = matches!(
            self.peers.get(&peer).map(|p| &p.state),
            Some(LinkState::Ready { .. })
        );
        let frame = match inbound {
            // Before the handshake (its hello was lost or overtaken): drop it; the sender
            // resends after the handshake completes.
            Inbound::Entries { .. } if !ready => return Ok(()),
            Inbound::Entries { origin, entries } => {
                return self.on_entries(peer, origin, entries, store, now_ms)
            }
            Inbound::Other(frame) => frame,
        };
        match frame {
            Frame::Hello {
                cluster,
                member,
                origin,
                epoch,
                confirmed,
                session,
                region,
                applied,
                reply,
            } => {
                let hello = identity::Hello {
                    cluster,
                    member,
                    origin,
                    epoch,
                    confirmed,
                    session,
                    region,
                    applied: VersionVector::from_entries(applied),
                    reply,
                };
                self.on_hello(peer, hello, store, now_ms)
            }
            Frame::Reject { reason } => {
                tracing::warn!(peer = ?peer, %reason, "peer refused the handshake");
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.state = LinkState::Refused;
                }
                self.out.push_back(Output::Close { peer, reason });
                Ok(())
            }
            // Before the handshake (its hello was lost or overtaken): drop it; the sender resends
            // after the handshake completes.
            _ if !ready => Ok(()),
            entries @ Frame::Entries { .. } => {
                match Inbound::from_frame(entries, store.record_bytes_max()) {
                    Ok(inbound) => self.handle_inbound(peer, inbound, store, now_ms),
                    Err(error) => Err(self.refuse(peer, error)),
                }
            }
            Frame::Ack { applied, serial } => {
                let fresh = self.peers.get(&peer).is_some_and(|p| serial > p.ack_serial);
                if !fresh {
                    return Ok(()); // overtaken by a later one
                }
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.ack_serial = serial;
                }
                let claim = self.take_claim(peer, VersionVector::from_entries(applied), store)?;
                if let Some(p) = self.peers.get_mut(&peer) {
                    if p.follow(&claim) {
                        p.last_progress_ms = now_ms;
                    }
                    if let Some(AntiEntropy::Offering { snapshot, .. }) = &p.ae {
                        if claim.dominates(snapshot) {
                            p.ae = None;
                            p.last_progress_ms = now_ms;
                        }
                    }
                }
                if let Some(upto) = self.shipped_everywhere(store.replica_id()) {
                    store.release_shipped(upto);
                }
                self.pump(peer, store, now_ms)
            }
            frame @ (Frame::AeOffer { .. }
            | Frame::AeWant { .. }
            | Frame::AeRetry { .. }
            | Frame::AeRecords { .. }
            | Frame::AeAck { .. }
            | Frame::AeStream { .. }
            | Frame::AeRange { .. }) => self.on_anti_entropy(peer, frame, store, now_ms),
            Frame::Nack { origin, next } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.rewind(origin, next.saturating_sub(1));
                }
                self.pump(peer, store, now_ms)
            }
            Frame::Ping { sent_ms } => {
                self.send(peer, &Frame::Pong { sent_ms });
                Ok(())
            }
            Frame::Pong { sent_ms } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.rtt_ms = Some(now_ms.saturating_sub(sent_ms));
                }
                Ok(())
            }
        }
    }

    fn on_entries<S: ReplicaStore>(
        &mut self,
        peer: PeerId,
        origin: ReplicaId,
        entries: Vec<DecodedEntry>,
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
        if let (Some(last), Some(p)) = (entries.last(), self.peers.get_mut(&peer)) {
            let mut has = VersionVector::new();
            has.add(crate::model::Dot::new(origin, last.seq));
            p.acknowledge(&has);
            if let Some(r) = p.replica() {
                self.known.entry(r).or_default().join(&has);
            }
        }
        let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
        let received: usize = entries.iter().map(|e| e.wire_bytes).sum();
        let outcomes = store
            .apply_entries(origin, entries)
            .map_err(ReplicationError::Store)?;
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
        if let Some(next) = nack {
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
    fn pump<S: ReplicaStore>(
        &mut self,
        peer: PeerId,
        store: &S,
        now_ms: u64,
    ) -> Result<(), ReplicationError<S::Error>> {
        let applied = store.applied();
        let own = store.replica_id();
        loop {
            let window = self.inflight_window(self.peers.get(&peer).and_then(|p| p.rtt_ms));
            let Some(p) = self.peers.get_mut(&peer) else {
                return Ok(());
            };
            if p.replica().is_none() {
                return Ok(());
            }
            let offering = matches!(p.ae, Some(AntiEntropy::Offering { .. }));
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
            let mut entries = Vec::new();
            let mut size = 0;
            let mut flights = Vec::new();
            while seq <= last && size < self.config.frame_bytes_target {
                let Some(records) = store
                    .read_entry(origin, seq)
                    .map_err(ReplicationError::Store)?
                else {
                    break;
                };
                let records = fit_entry(origin, seq, records);
                let bytes = wire_bytes(records.iter().map(|(k, v)| (&k[..], &v[..])));
                if !entries.is_empty() && size + bytes > ENTRY_BYTES_MAX {
                    break; // the next frame carries it: a frame holds at most one entry's worth
                }
                size += bytes;
                flights.push(InFlight { origin, seq, bytes });
                entries.push((seq, records));
                seq += 1;
            }
            if entries.is_empty() {
                // The log no longer holds what the peer needs: transfer state instead.
                let lag: u64 = applied
                    .iter()
                    .map(|(o, s)| s.saturating_sub(p.acked.get(o)))
                    .sum();
                return self.start_transfer(peer, lag, store, now_ms);
            }
            let borrowed: Vec<(u64, &[SharedState])> =
                entries.iter().map(|(seq, r)| (*seq, &r[..])).collect();
            let encoded = encode_entries(origin, &borrowed);
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

    fn send_hello(&mut self, peer: PeerId, store: &impl ReplicaStore, reply: bool, now_ms: u64) {
        let origin = store.origin_view();
        let hello = Frame::Hello {
            cluster: self.config.cluster.clone(),
            member: self.me,
            origin: origin.origin,
            epoch: origin.epoch,
            confirmed: origin.confirmed,
            session: self.config.session,
            region: self.config.region.clone(),
            applied: vv_entries(&store.applied()),
            reply,
        };
        if let Some(p) = self.peers.get_mut(&peer) {
            if let LinkState::Connecting { hello_sent_ms } = &mut p.state {
                *hello_sent_ms = now_ms;
            }
        }
        self.send(peer, &hello);
    }

    /// Tells the peer this replica's applied vector.
    fn send_ack(&mut self, peer: PeerId, store: &impl ReplicaStore, now_ms: u64) {
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

    fn send(&mut self, peer: PeerId, frame: &Frame) {
        self.send_bytes(peer, frame.encode());
    }

    fn send_bytes(&mut self, peer: PeerId, frame: Vec<u8>) {
        self.stats.frames_sent += 1;
        self.stats.bytes_sent += frame.len() as u64;
        self.out.push_back(Output::Send { peer, frame });
    }

    fn reject<E: std::error::Error>(
        &mut self,
        peer: PeerId,
        reason: String,
    ) -> ReplicationError<E> {
        tracing::warn!(peer = ?peer, %reason, "refusing peer");
        self.send(
            peer,
            &Frame::Reject {
                reason: reason.clone(),
            },
        );
        self.refuse(peer, FrameError::Malformed(reason))
    }

    fn refuse<E: std::error::Error>(
        &mut self,
        peer: PeerId,
        error: FrameError,
    ) -> ReplicationError<E> {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.state = LinkState::Refused;
        }
        self.out.push_back(Output::Close {
            peer,
            reason: error.to_string(),
        });
        ReplicationError::Peer { peer, error }
    }
}

/// An entry's records, trimmed to what one frame carries. A write never leaves more
/// (`limits`), but the current states it ships may have met other regions' concurrent writes
/// since: the largest are left out then, counted and logged (the fault stays with their keys;
/// the entry, and the origin's entries after it, still ship).
fn fit_entry(origin: ReplicaId, seq: u64, mut records: Vec<SharedState>) -> Vec<SharedState> {
    let mut size = wire_bytes(records.iter().map(|(k, v)| (&k[..], &v[..])));
    while size > ENTRY_BYTES_MAX {
        let Some((largest, _)) = records
            .iter()
            .enumerate()
            .max_by_key(|(_, (k, v))| k.len() + v.len())
        else {
            break;
        };
        let (key, state) = records.remove(largest);
        size -= key.len() + state.len() + 8;
        metrics::counter!("meridian_replication_records_unshippable_total").increment(1);
        tracing::error!(%origin, seq, key = %crate::error::show(&key[..key.len().min(64)]), bytes = state.len(), "a record grew past what one frame carries and is left out of its entry");
    }
    records
}

fn unreachable_peer<E: std::error::Error>(peer: PeerId) -> ReplicationError<E> {
    ReplicationError::Peer {
        peer,
        error: FrameError::Malformed("link vanished".into()),
    }
}

mod anti_entropy;
mod identity;
#[cfg(test)]
mod tests;
