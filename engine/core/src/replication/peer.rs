//! What a replica knows about one peer link: handshake, send cursors, bytes in flight.

use crate::model::{MemberId, OriginId, VersionVector};
use crate::replication::link_states::LinkStates;
use std::collections::VecDeque;

/// Where the handshake stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// `Hello` sent at the given time, none received yet.
    Connecting {
        /// When our `Hello` went out.
        hello_sent_ms: u64,
    },
    /// Handshake done.
    Ready {
        /// The peer's member id.
        member: MemberId,
        /// The peer's region.
        region: String,
    },
    /// The peer was refused; nothing more is exchanged.
    Refused,
}

/// What a state-transfer round sends, once the peer answered its offer.
#[derive(Debug)]
pub(crate) enum Transfer {
    /// No answer yet.
    Waiting,
    /// The records of these keys (the peer asked for their hashes), not sent yet.
    Keys(VecDeque<Vec<u8>>),
    /// Every record in key order, from `next` on (`None`: all sent).
    Stream { next: Option<Vec<u8>> },
}

/// A state-transfer round on this link.
#[derive(Debug)]
pub(crate) enum AntiEntropy {
    /// This replica offered its state and waits for the peer's answer.
    Offering {
        round: u64,
        snapshot: VersionVector,
        /// Last progress (offer sent, chunk acknowledged).
        started_ms: u64,
        /// What is left to send.
        transfer: Transfer,
        /// Chunks sent: their number and size, oldest first, until acknowledged.
        unacked: VecDeque<(u64, usize)>,
        /// Number of the next chunk.
        next_chunk: u64,
        /// A check of a link whose vectors agreed (`check_idle`): the peer lacks no entry, so
        /// new ones keep flowing while it runs. A round offered because the peer lacks what
        /// the log no longer holds holds the entries back until it ends.
        check: bool,
    },
    /// The peer offered; this replica waits for the records of `round`, chunk by chunk.
    Receiving {
        round: u64,
        next_chunk: u64,
        /// Last progress (offer taken, chunk received): a round the sender abandoned, or one
        /// both ends took as the other's, is dropped after a while like an unanswered offer.
        since_ms: u64,
        /// Keys whose records only this replica held when the round began, not received
        /// since: the peer holds nothing of them.
        ours_only: std::collections::BTreeSet<Vec<u8>>,
        /// Keys joins with other peers' states created here since the round began, not
        /// received in it since: absent here when the summaries were compared, so absent at
        /// the peer too (it removed what it applied of them).
        arrived: std::collections::BTreeSet<Vec<u8>>,
        /// More keys arrived than are remembered: the round adopts nothing.
        spoiled: bool,
        /// Key hashes this replica asked for (`AeWant`) not received in the round yet: a key
        /// the peer held at its summary and no longer holds when it answers (a tombstone it
        /// reclaimed meanwhile) comes in no chunk, and the peer holds nothing of it.
        wanted: std::collections::BTreeSet<u64>,
        /// What the offer's snapshot does not vouch for: the offerer's exceptions, and the
        /// hashes of keys its chunks left out so far.
        exceptions: crate::replication::Exceptions,
    },
}

/// One entry sent and not yet acknowledged.
#[derive(Clone, Copy, Debug)]
pub(crate) struct InFlight {
    pub origin: OriginId,
    pub seq: u64,
    pub bytes: usize,
}

/// Per-link state.
#[derive(Debug)]
pub struct Peer {
    /// The member the link's certificate and the configuration say the peer is.
    pub member: MemberId,
    /// What the peer said of its region (`Frame::About`), if anything.
    pub about: Option<crate::replication::frame::RegionAbout>,
    /// Handshake state.
    pub state: LinkState,
    /// The origin the peer announced it writes under.
    pub origin: Option<OriginId>,
    /// The peer's latest applied vector as it claimed it (before clamping).
    pub claimed: VersionVector,
    /// The latest claim, clamped to what its author can know (what cursors follow).
    pub(crate) last_claim: VersionVector,
    /// Serial of the latest `Ack` taken from the peer (older ones are ignored).
    pub(crate) ack_serial: u64,
    /// Whether a claim beyond this replica's own writes was already logged on this link.
    pub(crate) overclaim_logged: bool,
    /// Per origin, the highest sequence sent on this link.
    pub sent: VersionVector,
    /// Per origin, the highest sequence the peer reports applied.
    pub acked: VersionVector,
    pub(crate) inflight: VecDeque<InFlight>,
    /// Bytes sent and not yet acknowledged.
    pub inflight_bytes: usize,
    /// Last time an acknowledgement released something (or the link became ready).
    pub last_progress_ms: u64,
    /// Last time this replica told the peer its applied vector (`Hello` or `Ack`).
    pub last_ack_ms: u64,
    /// Bytes of entries received from the peer since that `Ack`.
    pub unacked_bytes: usize,
    /// Last measured round trip, if any.
    pub rtt_ms: Option<u64>,
    /// Origin served last, for round-robin fairness.
    pub(crate) last_origin: Option<OriginId>,
    /// State transfer in progress, if any.
    pub(crate) ae: Option<AntiEntropy>,
    /// Per relayed origin: since when the peer lags on it, and its acknowledged sequence then.
    pub(crate) relay_wait: std::collections::BTreeMap<OriginId, (u64, u64)>,
    /// Per origin, a partial entry sent on this link (this replica cannot ship it whole):
    /// nothing beyond it is sent until the peer applies it, whole from another member or as
    /// partial once its bound has passed.
    pub(crate) partial_sent: std::collections::BTreeMap<OriginId, u64>,
    /// Last time this replica offered a state-transfer round on this link (or the link
    /// became ready): idle links with equal vectors are still checked now and then.
    pub(crate) last_offer_ms: u64,
    /// Last time this replica asked the peer for a round (`AeRequest`), to repair damage.
    pub(crate) last_request_ms: Option<u64>,
    /// The protocol version the link runs at (the driver negotiated it).
    pub version: u8,
    /// The oldest and newest versions the peer says it speaks (from its `Hello`).
    pub speaks: Option<[u8; 2]>,
    /// The named features both ends announced.
    pub features: Vec<String>,
    /// The states this replica's `Entries` frames carried on the link, as the peer's end
    /// remembers them too (version 7: `link_states.rs`); forgotten on any resend.
    pub(crate) link_out: LinkStates<std::sync::Arc<[u8]>>,
    /// The states the peer's `Entries` frames carried, for a driver that hands frames to
    /// `Replicator::handle` undecoded (the runtime keeps its own on its I/O task).
    pub(crate) link_in: LinkStates<bytes::Bytes>,
}

impl Peer {
    pub(crate) fn new(member: MemberId, version: u8, now_ms: u64) -> Peer {
        Peer {
            member,
            version,
            speaks: None,
            features: Vec::new(),
            about: None,
            state: LinkState::Connecting {
                hello_sent_ms: now_ms,
            },
            origin: None,
            claimed: VersionVector::new(),
            last_claim: VersionVector::new(),
            ack_serial: 0,
            overclaim_logged: false,
            sent: VersionVector::new(),
            acked: VersionVector::new(),
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            last_progress_ms: now_ms,
            last_ack_ms: now_ms,
            unacked_bytes: 0,
            rtt_ms: None,
            last_origin: None,
            ae: None,
            relay_wait: Default::default(),
            partial_sent: Default::default(),
            last_offer_ms: now_ms,
            last_request_ms: None,
            link_out: LinkStates::default(),
            link_in: LinkStates::default(),
        }
    }

    /// Whether a state-transfer round with this peer is under way (either side).
    pub fn reconciling(&self) -> bool {
        self.ae.is_some()
    }

    /// The peer's member id once the handshake is done.
    pub fn ready_member(&self) -> Option<MemberId> {
        match &self.state {
            LinkState::Ready { member, .. } => Some(*member),
            _ => None,
        }
    }

    /// Checks (debug builds only) what the link's state keeps whatever the peer sends: the
    /// link runs at a version this build speaks; per origin, what the peer acknowledged was
    /// sent (`acked <= sent`); every entry in flight lies above the acknowledged sequence and
    /// at or below the sent one, and `inflight_bytes` is the sum of their bytes; no cursor
    /// holds more of this replica's origin `own` than it `committed` (claims are clamped,
    /// `replicator/handshake.rs`); a state transfer's unacknowledged chunks are numbered in
    /// order below the next one.
    pub(crate) fn debug_check(&self, link: u32, own: OriginId, committed: u64) {
        if !cfg!(debug_assertions) {
            return;
        }
        debug_assert!(
            crate::replication::PROTOCOL_VERSIONS.contains(&self.version),
            "link {link}: version {} is not one this build speaks",
            self.version
        );
        for (origin, acked) in self.acked.iter() {
            debug_assert!(
                acked <= self.sent.get(origin),
                "link {link}: {origin} acknowledged to {acked}, sent to {}",
                self.sent.get(origin)
            );
        }
        for f in &self.inflight {
            debug_assert!(
                self.acked.get(f.origin) < f.seq && f.seq <= self.sent.get(f.origin),
                "link {link}: {}:{} in flight, acknowledged to {}, sent to {}",
                f.origin,
                f.seq,
                self.acked.get(f.origin),
                self.sent.get(f.origin)
            );
        }
        debug_assert_eq!(
            self.inflight_bytes,
            self.inflight.iter().map(|f| f.bytes).sum::<usize>(),
            "link {link}: bytes in flight are not those of the entries in flight"
        );
        debug_assert!(
            self.sent.get(own) <= committed,
            "link {link}: sent to {} of this replica's origin {own}, which committed {committed}",
            self.sent.get(own)
        );
        if let Some(AntiEntropy::Offering {
            unacked,
            next_chunk,
            ..
        }) = &self.ae
        {
            debug_assert!(
                unacked
                    .iter()
                    .zip(unacked.iter().skip(1))
                    .all(|(a, b)| a.0 < b.0)
                    && unacked.back().is_none_or(|last| last.0 < *next_chunk),
                "link {link}: chunks in flight out of order: {unacked:?}, next {next_chunk}"
            );
        }
    }

    /// Forgets what is in flight for `origin` and resends from just after `from`.
    pub(crate) fn rewind(&mut self, origin: OriginId, from: u64) {
        // What the peer's end of the link remembers is no longer known: whole states until
        // both tables are built again.
        self.link_out.clear();
        let mut released = 0;
        self.inflight.retain(|f| {
            let keep = f.origin != origin;
            if !keep {
                released += f.bytes;
            }
            keep
        });
        self.inflight_bytes -= released;
        let mut sent: Vec<(OriginId, u64)> =
            self.sent.iter().filter(|(r, _)| *r != origin).collect();
        sent.push((origin, from.max(self.acked.get(origin))));
        self.sent = VersionVector::from_entries(sent);
    }

    /// Takes a new claim of the peer's applied vector (clamped): an origin it now reports less
    /// of than it did (a claim corrected, or data it lost) is sent again from what it reports;
    /// the rest is acknowledged. Returns whether anything in flight was released.
    pub(crate) fn follow(&mut self, claim: &VersionVector) -> bool {
        let lowered: Vec<(OriginId, u64)> = self
            .last_claim
            .iter()
            .filter(|(o, c)| claim.get(*o) < *c)
            .map(|(o, _)| (o, claim.get(o)))
            .collect();
        for (origin, to) in &lowered {
            self.acked = VersionVector::from_entries(self.acked.iter().map(|(o, c)| {
                if o == *origin {
                    (o, c.min(*to))
                } else {
                    (o, c)
                }
            }));
            self.rewind(*origin, *to);
        }
        self.last_claim = claim.clone();
        self.acknowledge(claim) || !lowered.is_empty()
    }

    /// Releases what `applied` acknowledges; returns whether anything was released.
    pub(crate) fn acknowledge(&mut self, applied: &VersionVector) -> bool {
        self.acked.join(applied);
        let before = self.inflight.len();
        let mut released = 0;
        self.inflight.retain(|f| {
            let done = f.seq <= applied.get(f.origin);
            if done {
                released += f.bytes;
            }
            !done
        });
        self.inflight_bytes -= released;
        // The peer may have received entries through another replica: skip ahead.
        self.sent.join(applied);
        self.inflight.len() != before
    }
}
