//! The replication state machine: frames and ticks in, frames out. No I/O, no clock, no
//! randomness; time is an argument. Drivers: the simulator (crate `meridian-sim`) and the QUIC
//! runtime (crate `meridian-runtime`).
//!
//! This file holds the state, the entry points and the outputs; each job has its file:
//! `handshake.rs` (who a peer is, what it may claim), `log_shipping.rs` (entries out and in),
//! `anti_entropy.rs` (state transfer), `stability.rs` (what every member applied; compaction),
//! `missing.rs` (writes that cannot be had whole: held, then declared lost after a bound).
//!
//! Invariants:
//! - entries of one origin are applied in sequence order; duplicates are ignored, a gap is
//!   answered with `Nack` and nothing after it is applied;
//! - I1: the applied vector never covers a write the records do not reflect, but for what the
//!   store keeps as declared lost (`ReplicaStore::exceptions`): a partial entry is applied
//!   only after `missing_wait_ms` without a whole copy, and a state transfer's receiver
//!   neither prunes nor erases on the account of what the sender does not vouch for;
//! - a replica sends, for every origin it holds, what the peer's cursor lacks (so writes relay
//!   through any path of live links);
//! - bytes sent and not acknowledged per link stay under its window (`inflight_window`: the
//!   configured bytes plus more per millisecond of measured round trip, capped), plus one frame;
//! - a malformed or unexpected frame closes that link only;
//! - per link, what the peer acknowledged was sent (`acked <= sent` per origin), every entry in
//!   flight lies between the two, and the bytes counted in flight are those entries' sum; the
//!   link runs at one of `PROTOCOL_VERSIONS`;
//! - no cursor and no member's known vector holds more of this replica's own origin than it
//!   committed (claims, entries relayed back and `Nack`s are clamped: `handshake.rs`).
//!
//! Debug builds (`make test-checked`) assert the invariants a step can break after every entry
//! point (`Replicator::debug_check`), and that a store applies an origin's entries in order
//! (`log_shipping.rs`).

use super::frame::{Frame, FrameError, RegionAbout, PROTOCOL_VERSION, PROTOCOL_VERSIONS};
use super::inbound::Inbound;
use super::peer::{AntiEntropy, LinkState, Peer};
use super::seam::ReplicaStore;
use crate::model::{MemberId, OriginId, VersionVector};
pub use anti_entropy::{OfferPlan, SUMMARY_CELLS, SUMMARY_SUB_LOG};
pub use primary::PrimaryView;
use std::collections::{BTreeMap, VecDeque};

/// A state-transfer round with no progress for this many retransmit intervals is dropped,
/// on either end (the next pump or idle check offers again).
const OFFER_TIMEOUT_RETRANSMITS: u64 = 4;

/// Most unacknowledged bytes allowed on any link, whatever its round trip.
pub const INFLIGHT_BYTES_CAP: usize = 8 << 20;

/// Transport-level handle of a link, chosen by the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkId(pub u32);

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
    pub members: Vec<MemberId>,
    /// Interval between compactions (log truncation and tombstone collection).
    pub compact_every_ms: u64,
    /// Most entries of one origin kept for a member that lags on it (down, or cut off): past
    /// this lag the member no longer holds reclamation back for that origin; when it returns,
    /// state transfer brings it back instead of the log. What a down member costs the others
    /// (log, tombstones) stays bounded.
    pub log_retention_entries: u64,
    /// Drawn at each process start (the driver's randomness): a member whose earlier session
    /// comes back is two processes sharing one identity.
    pub session: u64,
    /// How long a replica waits for a whole copy of a write it holds only partly (a sender
    /// left record states out) or not at all (a number missing from its own log), from a
    /// reachable member, before it declares what is missing lost and moves on (invariant I1's
    /// stated exceptions, `replicator/missing.rs`).
    pub missing_wait_ms: u64,
    /// How long a replica restored from a backup waits for a round from a peer that saw
    /// everything its copy held (`ReplicaStore::reconciling`) before it ships what it holds
    /// anyway.
    pub reconcile_wait_ms: u64,
    /// Interval between state-transfer checks on an idle link whose vectors agree: equal
    /// vectors do not prove equal records (a dot of a write lost with a disk may survive at
    /// some replicas only), and the check costs one small table when nothing differs.
    pub antientropy_check_ms: u64,
    /// What this replica tells its peers of its region once a link is ready (nothing when
    /// `None`).
    pub about: Option<RegionAbout>,
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
            log_retention_entries: 1_000_000,
            session: 0,
            missing_wait_ms: 30_000,
            reconcile_wait_ms: 30_000,
            antientropy_check_ms: 10_000,
            about: None,
        }
    }
}

/// Something the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send these frame bytes on the link.
    Send {
        /// The link.
        link: LinkId,
        /// Encoded frame.
        frame: Vec<u8>,
    },
    /// Close the link (refused handshake or bad frame).
    Close {
        /// The link.
        link: LinkId,
        /// Why.
        reason: String,
    },
    /// A peer says this process is fenced: a newer process of this replica's identity runs,
    /// and the members replicate with that one. The driver must stop acknowledging local
    /// writes (`Engine::fence`).
    Fenced {
        /// What the peer said.
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
        peer: LinkId,
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
    /// States sent as patches against the link's earlier states (version 7).
    pub linked_states_sent: u64,
    /// Entries sent within spans: writes an earlier entry of their frame stood for (version 8).
    pub spanned_entries_sent: u64,
    /// Frames with patched states that did not resolve here (their entries asked again).
    pub unresolved: u64,
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
    /// Partial entries received and held, waiting for a whole copy.
    pub partial_entries_held: u64,
    /// Partial entries applied as partial after their bound (what they lacked declared lost).
    pub partial_entries_applied: u64,
    /// Numbers missing from this replica's log that no reachable member held: declared lost.
    pub writes_declared_lost: u64,
}

/// The per-replica replication state machine.
pub struct Replicator {
    /// This replica's member id (its origin is the store's current one).
    me: MemberId,

    config: ReplicationConfig,
    peers: BTreeMap<LinkId, Peer>,
    out: VecDeque<Output>,
    stats: Stats,
    /// The latest applied vector each member reported (clamped), by member id.
    known: BTreeMap<MemberId, VersionVector>,
    /// Process sessions seen per member.
    sessions: BTreeMap<MemberId, handshake::SessionLog>,
    /// Per origin, the partial entry held.
    partial_held: BTreeMap<OriginId, missing::PartialHeld>,
    /// The reclamation horizon of the last compaction, and since when it has stood still.
    horizon: Option<(VersionVector, u64)>,
    /// Per damaged record not yet repaired, the members that showed, in a state-transfer round
    /// since, that they hold nothing of its key.
    damaged_absent_at: BTreeMap<Vec<u8>, std::collections::BTreeSet<MemberId>>,
    /// Per origin stranded here, the missing number and since when it is missing.
    stranded_since: BTreeMap<OriginId, (u64, u64)>,
    /// Since when a restored replica has waited to be reconciled (`ReplicaStore::reconciling`).
    reconciling_since: Option<u64>,
    /// Whether a peer's claim beyond this replica's own writes already moved it to a new epoch
    /// in this run (at most once: a lying peer must not make it churn epochs).
    moved_on_overclaim: bool,
    /// The origins this replica has written under in this run, newest last (a claim holding
    /// more of one than it holds is shown wrong: `handshake.rs`).
    own_origins: Vec<OriginId>,
    /// Serial of the last `Ack` sent (on any link: increasing on each).
    ack_serial: u64,
    next_round: u64,
    last_compact_ms: u64,
    /// Active-passive mode: this replica's side of the primary's lease.
    lease: Option<crate::lease::LeaseKeeper>,
}

impl Replicator {
    /// A replicator for the replica whose member id is `member`.
    pub fn new(member: MemberId, config: ReplicationConfig) -> Replicator {
        Replicator {
            me: member,
            config,
            peers: BTreeMap::new(),
            out: VecDeque::new(),
            stats: Stats::default(),
            known: BTreeMap::new(),
            sessions: BTreeMap::new(),
            partial_held: BTreeMap::new(),
            stranded_since: BTreeMap::new(),
            reconciling_since: None,
            damaged_absent_at: BTreeMap::new(),
            horizon: None,

            moved_on_overclaim: false,
            own_origins: Vec::new(),
            ack_serial: 0,
            next_round: 1,
            last_compact_ms: 0,
            lease: None,
        }
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
    pub fn peers(&self) -> impl Iterator<Item = (LinkId, &Peer)> {
        self.peers.iter().map(|(id, p)| (*id, p))
    }

    /// A link came up to the peer that its certificate and the configuration say is member
    /// `member`: say hello (the peer's own hello must announce that member). The link runs at
    /// the newest protocol version (`connected_at` for another).
    pub fn connected(
        &mut self,
        peer: LinkId,
        member: MemberId,
        store: &impl ReplicaStore,
        now_ms: u64,
    ) {
        self.connected_at(peer, member, PROTOCOL_VERSION, store, now_ms);
    }

    /// `connected`, the link running at protocol `version` (the highest both ends speak, as
    /// the driver negotiated it: one of `PROTOCOL_VERSIONS`). Every frame sent on the link is
    /// encoded for that version.
    pub fn connected_at(
        &mut self,
        peer: LinkId,
        member: MemberId,
        version: u8,
        store: &impl ReplicaStore,
        now_ms: u64,
    ) {
        debug_assert!(PROTOCOL_VERSIONS.contains(&version), "version {version}");
        self.peers.insert(peer, Peer::new(member, version, now_ms));
        self.send_hello(peer, store, false, now_ms);
        self.debug_check(store);
    }

    /// A link went down: forget it (cursors are rebuilt from the next `Hello`).
    pub fn disconnected(&mut self, peer: LinkId) {
        self.peers.remove(&peer);
    }

    /// Time passed: retry hellos, resend after timeouts, heartbeat, push.
    pub fn tick<S: ReplicaStore>(
        &mut self,
        store: &S,
        now_ms: u64,
    ) -> Result<(), ReplicationError<S::Error>> {
        let result = self.tick_links(store, now_ms);
        self.debug_check(store);
        result
    }

    fn tick_links<S: ReplicaStore>(
        &mut self,
        store: &S,
        now_ms: u64,
    ) -> Result<(), ReplicationError<S::Error>> {
        self.check_missing(store, now_ms)?;
        self.compact_if_due(store, now_ms)?;
        self.tick_lease(now_ms);
        let ids: Vec<LinkId> = self.peers.keys().copied().collect();
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
            let progress = match &p.ae {
                Some(AntiEntropy::Offering { started_ms, .. }) => Some(*started_ms),
                Some(AntiEntropy::Receiving { since_ms, .. }) => Some(*since_ms),
                None => None,
            };
            if progress.is_some_and(|at| {
                now_ms.saturating_sub(at) >= OFFER_TIMEOUT_RETRANSMITS * self.config.retransmit_ms
            }) {
                p.ae = None; // lost somewhere, or both ends waiting: the next check offers again
            }
            if !p.inflight.is_empty()
                && now_ms.saturating_sub(p.last_progress_ms) >= self.config.retransmit_ms
            {
                let origins: Vec<OriginId> = p.inflight.iter().map(|f| f.origin).collect();
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

    /// A frame arrived on a link.
    pub fn handle<S: ReplicaStore>(
        &mut self,
        peer: LinkId,
        bytes: &[u8],
        store: &S,
        now_ms: u64,
    ) -> Result<(), ReplicationError<S::Error>> {
        if !self.peers.contains_key(&peer) {
            return Ok(()); // a late frame on a link that is gone
        }
        let bytes = bytes::Bytes::copy_from_slice(bytes);
        let record_bytes_max = store.record_bytes_max();
        let decoded = match self.peers.get_mut(&peer) {
            Some(p) => Inbound::decode_on(&bytes, record_bytes_max, &mut p.link_in),
            None => return Ok(()),
        };
        match decoded {
            Ok(inbound) => self.handle_inbound(peer, inbound, store, now_ms),
            Err(error) => Err(self.refuse(peer, error)),
        }
    }

    /// A frame arrived on a link, already decoded by `Inbound::decode` (drivers do that on
    /// their I/O threads).
    pub fn handle_inbound<S: ReplicaStore>(
        &mut self,
        peer: LinkId,
        inbound: Inbound,
        store: &S,
        now_ms: u64,
    ) -> Result<(), ReplicationError<S::Error>> {
        let result = self.dispatch(peer, inbound, store, now_ms);
        self.debug_check(store);
        result
    }

    fn dispatch<S: ReplicaStore>(
        &mut self,
        peer: LinkId,
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
            Inbound::Entries {
                origin,
                entries,
                unresolved,
            } => return self.on_entries(peer, origin, entries, &unresolved, store, now_ms),
            Inbound::Other(frame) => frame,
        };
        match frame {
            Frame::Hello(hello) => self.on_hello(peer, hello, store, now_ms),
            Frame::Reject { reason, fenced } => {
                tracing::warn!(peer = ?peer, %reason, fenced, "peer refused the handshake");
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.state = LinkState::Refused;
                }
                if fenced {
                    self.out.push_back(Output::Fenced {
                        reason: reason.clone(),
                    });
                }
                self.out.push_back(Output::Close { link: peer, reason });
                Ok(())
            }
            // Before the handshake (its hello was lost or overtaken): drop it; the sender resends
            // after the handshake completes.
            _ if !ready => Ok(()),
            entries @ Frame::Entries { .. } => {
                match Inbound::from_frame(entries, store.record_bytes_max()) {
                    Ok(inbound) => self.dispatch(peer, inbound, store, now_ms),
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
                if let Some(upto) = self.shipped_everywhere(store.origin_id()) {
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
                let from = handshake::clamp_seq(origin, next.saturating_sub(1), store);
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.rewind(origin, from);
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
            Frame::Lease(message) => {
                self.on_lease(peer, message, now_ms);
                Ok(())
            }
            Frame::About(about) => {
                self.on_about(peer, about);
                Ok(())
            }
            Frame::AeRequest => {
                let idle = self.peers.get(&peer).is_some_and(|p| p.ae.is_none());
                if idle {
                    self.offer(peer, super::iblt::CELLS_MIN, store, now_ms)?;
                }
                Ok(())
            }
        }
    }

    /// Checks (debug builds only: `make test-checked`) the invariants every entry point leaves
    /// behind, whatever peers sent: each link's (`Peer::debug_check`), and that no member's
    /// known vector holds more of this replica's origin than it committed (stability relies on
    /// clamped claims only).
    fn debug_check(&self, store: &impl ReplicaStore) {
        if !cfg!(debug_assertions) {
            return;
        }
        let own = store.origin_id();
        let committed = store.applied().get(own);
        for (id, p) in &self.peers {
            p.debug_check(id.0, own, committed);
        }
        for (member, known) in &self.known {
            debug_assert!(
                known.get(own) <= committed,
                "member {member} known to hold {} of this replica's origin {own}, which \
                 committed {committed}",
                known.get(own)
            );
        }
    }

    /// Sends `frame` on the link, encoded for the link's version.
    fn send(&mut self, peer: LinkId, frame: &Frame) {
        let version = self.link_version(peer);
        self.send_bytes(peer, frame.encode_at(version));
    }

    /// The protocol version link `peer` runs at.
    fn link_version(&self, peer: LinkId) -> u8 {
        self.peers
            .get(&peer)
            .map_or(PROTOCOL_VERSION, |p| p.version)
    }

    fn send_bytes(&mut self, peer: LinkId, frame: Vec<u8>) {
        self.stats.frames_sent += 1;
        self.stats.bytes_sent += frame.len() as u64;
        self.out.push_back(Output::Send { link: peer, frame });
    }

    fn reject<E: std::error::Error>(
        &mut self,
        peer: LinkId,
        reason: String,
    ) -> ReplicationError<E> {
        self.reject_as(peer, reason, false)
    }

    /// `reject`, telling the peer whether it is fenced (an earlier process of its member).
    fn reject_as<E: std::error::Error>(
        &mut self,
        peer: LinkId,
        reason: String,
        fenced: bool,
    ) -> ReplicationError<E> {
        tracing::warn!(peer = ?peer, %reason, fenced, "refusing peer");
        self.send(
            peer,
            &Frame::Reject {
                reason: reason.clone(),
                fenced,
            },
        );
        self.refuse(peer, FrameError::Malformed(reason))
    }

    fn refuse<E: std::error::Error>(
        &mut self,
        peer: LinkId,
        error: FrameError,
    ) -> ReplicationError<E> {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.state = LinkState::Refused;
        }
        self.out.push_back(Output::Close {
            link: peer,
            reason: error.to_string(),
        });
        ReplicationError::Peer { peer, error }
    }
}

pub(super) fn unreachable_peer<E: std::error::Error>(peer: LinkId) -> ReplicationError<E> {
    ReplicationError::Peer {
        peer,
        error: FrameError::Malformed("link vanished".into()),
    }
}

mod anti_entropy;
mod handshake;
mod log_shipping;
mod missing;
mod primary;
mod spans;
mod stability;
#[cfg(test)]
mod tests;
