//! What a replica knows about one peer link: handshake, send cursors, bytes in flight.

use crate::model::{ReplicaId, VersionVector};
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
        /// The peer's replica id.
        replica: ReplicaId,
        /// The peer's region.
        region: String,
    },
    /// The peer was refused; nothing more is exchanged.
    Refused,
}

/// A state-transfer round on this link.
#[derive(Debug)]
pub(crate) enum AntiEntropy {
    /// This replica offered its state and waits for the peer's answer.
    Offering {
        round: u64,
        snapshot: VersionVector,
        keys: std::collections::BTreeMap<u64, Vec<u8>>,
        /// Last progress (offer sent, chunk acknowledged).
        started_ms: u64,
        /// Keys the peer asked for and that are not sent yet (`None` before its answer).
        pending: Option<VecDeque<Vec<u8>>>,
        /// Chunks sent: their number and size, oldest first, until acknowledged.
        unacked: VecDeque<(u64, usize)>,
        /// Number of the next chunk.
        next_chunk: u64,
    },
    /// The peer offered; this replica waits for the records of `round`, chunk by chunk.
    Receiving { round: u64, next_chunk: u64 },
}

/// One entry sent and not yet acknowledged.
#[derive(Clone, Copy, Debug)]
pub(crate) struct InFlight {
    pub origin: ReplicaId,
    pub seq: u64,
    pub bytes: usize,
}

/// Per-link state.
#[derive(Debug)]
pub struct Peer {
    /// Handshake state.
    pub state: LinkState,
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
    pub(crate) last_origin: Option<ReplicaId>,
    /// State transfer in progress, if any.
    pub(crate) ae: Option<AntiEntropy>,
    /// Per relayed origin: since when the peer lags on it, and its acknowledged sequence then.
    pub(crate) relay_wait: std::collections::BTreeMap<ReplicaId, (u64, u64)>,
}

impl Peer {
    pub(crate) fn new(now_ms: u64) -> Peer {
        Peer {
            state: LinkState::Connecting {
                hello_sent_ms: now_ms,
            },
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
        }
    }

    /// The peer's replica id once the handshake is done.
    pub fn replica(&self) -> Option<ReplicaId> {
        match &self.state {
            LinkState::Ready { replica, .. } => Some(*replica),
            _ => None,
        }
    }

    /// Forgets what is in flight for `origin` and resends from just after `from`.
    pub(crate) fn rewind(&mut self, origin: ReplicaId, from: u64) {
        let mut released = 0;
        self.inflight.retain(|f| {
            let keep = f.origin != origin;
            if !keep {
                released += f.bytes;
            }
            keep
        });
        self.inflight_bytes -= released;
        let mut sent: Vec<(ReplicaId, u64)> =
            self.sent.iter().filter(|(r, _)| *r != origin).collect();
        sent.push((origin, from.max(self.acked.get(origin))));
        self.sent = VersionVector::from_entries(sent);
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
