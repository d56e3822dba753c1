//! Replication frames: a version byte, then postcard. Length is checked before decoding.
//!
//! Versions: a build speaks a range of protocol versions (`PROTOCOL_VERSIONS`); a link runs at
//! the highest version both ends speak, which the driver negotiates before the first frame
//! (the runtime through the connection's ALPN, the simulator by comparing ranges) and hands
//! to `Replicator::connected_at`. Frames are encoded for the link's version (`encode_at`):
//! a field an older version lacks is never sent to it. Version 5 added the version range and
//! named features to `Hello`; every other frame is encoded alike in 4 and 5. Version 6 sends
//! a state that repeats in an `Entries` frame once: a record whose state is the one its key
//! last had earlier in the frame carries a mark instead (`frame/shared_states.rs`), and the
//! receiver hands each entry its states back, so what a store applies is the same in every
//! version. A key written a thousand times while a peer was away crosses the link once per
//! frame, not a thousand times. Version 7 may send a state as a patch against the state its
//! key had last on the link, with the hash of the result (`frame/linked_states.rs`,
//! `link_states.rs`): both ends keep that table by the same rule, and a receiver whose table
//! differs applies nothing of the entry and `Nack`s it; the resend goes whole. An add to a
//! 10,000-element set crosses as about the element.
//! `tests/frame_compat.rs` pins each version's bytes to what its release wrote.
//!
//! | frame | when | meaning |
//! |---|---|---|
//! | `Hello` | on connect, retried until answered; again after an epoch change | cluster, member, its origin and epoch, process session, region, applied vector |
//! | `Reject` | after a bad `Hello` | the reason, and whether the receiver is fenced (an earlier process of a member whose newer process runs); the link is closed |
//! | `Entries` | whenever the peer lacks entries of an origin this replica holds | one origin's log entries in sequence order, each with the current states of the records it changed, the keys whose states it leaves out, and whether the write is lost (a partial entry ends the frame); from version 7 a state may be a repeat of one earlier in the frame or a patch against the key's last state on the link |
//! | `Ack` | after `Entries`, and as the idle heartbeat | the sender's applied vector, numbered per link (older ones are ignored) |
//! | `Nack` | after an entry arrived out of order | resend `origin` from `next` |
//! | `AeOffer` | the peer lacks entries this replica's log no longer holds | IBLT over (key hash, state hash) of every record, the record count, and the exceptions (what the snapshot covers that the records do not reflect) |
//! | `AeWant` / `AeRetry` / `AeStream` | answer to an offer | the key hashes of the records the receiver lacks / a larger table, please / the difference is too large: send everything in key order |
//! | `AeRecords` / `AeRange` / `AeAck` | answer to `AeWant` / `AeStream`, flow-controlled | numbered chunks of records and the keys left out (a range chunk covers a key range whole), applied in order; every chunk carries the sender's snapshot; `done` ends the round and the receiver adopts it with the exceptions |
//! | `Ping` / `Pong` | heartbeat | round-trip time |
//! | `About` | once a link is ready, when the replica has a location or an advertised address | where its region is and where clients reach it |
//! | `AeRequest` | while this replica holds damaged records to repair | offer a state-transfer round now |
//! | `Lease` | active-passive mode | a lease request, a voter's promise or refusal, a release, a step-down (see `lease`) |

use crate::model::{MemberId, OriginId, RequestTag, VersionVector};
use serde::{Deserialize, Serialize};
use std::ops::RangeInclusive;

mod linked_states;
mod shared_states;

pub use linked_states::{LinkedEntryRef, Spans, StateForm, WireForm};

/// The protocol versions this build speaks, oldest to newest.
pub const PROTOCOL_VERSIONS: RangeInclusive<u8> = 4..=9;
/// The newest protocol version this build speaks (what a link runs at between two builds
/// of this release).
pub const PROTOCOL_VERSION: u8 = *PROTOCOL_VERSIONS.end();
/// The first version whose `Hello` carries the sender's versions and features.
pub const HELLO_RANGE_VERSION: u8 = 5;
/// The first version whose `Entries` frames send a state that repeats in the frame once.
pub const SHARED_STATES_VERSION: u8 = 6;
/// The first version whose `Entries` frames may send a state as a patch against the one its
/// key had last on the link (`link_states.rs`).
pub const LINKED_STATES_VERSION: u8 = 7;
/// The first version whose `Entries` frames may send a run of writes as one entry that stands
/// for them all (`EntryOut::span`): a catch-up after an outage carries each key's state once
/// per frame, not once per write.
pub const SPANS_VERSION: u8 = 8;
/// The first version whose peer reads records with expiries (format 2); below it a state is
/// sent without them (`older_peers.rs`).
pub const EXPIRY_VERSION: u8 = 9;
/// Named features this build announces in its `Hello` (a link uses a feature only when both
/// ends announce it).
pub const FEATURES: &[&str] = &["request-tags", "fencing"];
/// Most features a `Hello` may announce, and longest name of one, in bytes (more is refused).
pub const FEATURES_MAX: usize = 32;
/// Longest feature name, in bytes.
pub const FEATURE_BYTES_MAX: usize = 64;

/// The version a link between a replica speaking `ours` and one speaking `theirs` runs at:
/// the highest both speak, `None` when the ranges do not meet.
pub fn common_version(ours: &RangeInclusive<u8>, theirs: &RangeInclusive<u8>) -> Option<u8> {
    let v = (*ours.end()).min(*theirs.end());
    (v >= *ours.start() && v >= *theirs.start()).then_some(v)
}
pub use crate::limits::FRAME_BYTES_MAX;

/// One log entry on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEntry {
    /// The origin's sequence number.
    pub seq: u64,
    /// (key, encoded record) for every record the entry changed that the sender ships.
    pub records: Vec<(serde_bytes::ByteBuf, serde_bytes::ByteBuf)>,
    /// Keys the entry changed whose states the sender leaves out (unreadable, corrupt,
    /// grown past a frame, or left out where the sender got the entry): the entry is partial.
    pub left_out: Vec<serde_bytes::ByteBuf>,
    /// The write is lost: the sender holds nothing of it (declared lost; its keys unknown).
    pub lost: bool,
    /// The client request the write answered, when it named one (a retry of it elsewhere is
    /// answered with this write).
    pub request: Option<RequestTag>,
}

/// What a replica's applied vector covers that its records do not reflect (declared lost),
/// as state transfer tells it: the receiver neither erases nor prunes on its account, and
/// takes it on with the snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exceptions {
    /// Writes declared lost (their keys unknown).
    pub lost: Vec<(OriginId, u64)>,
    /// Hashes (`model::digest::key_hash`) of keys whose state was left out somewhere on its way.
    pub uncertain: Vec<u64>,
}

/// Most items of each kind in an `Exceptions` a replica keeps or accepts.
pub const EXCEPTIONS_MAX: usize = 1_024;

/// A `Hello` frame: who the sender is, what it holds and which versions it speaks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Cluster id: replicas of different clusters never talk.
    pub cluster: String,
    /// The sender's member id: what its certificate name and configured incarnation derive.
    pub member: MemberId,
    /// The origin the sender writes under: `member.epoch_origin(epoch)`.
    pub origin: OriginId,
    /// The origin's epoch.
    pub epoch: u32,
    /// Drawn at each process start: a member whose earlier session comes back is two
    /// processes sharing one identity.
    pub session: u64,
    /// The sender's region.
    pub region: String,
    /// What the sender has applied, per origin.
    pub applied: Vec<(OriginId, u64)>,
    /// Whether this answers the peer's `Hello` (an answer is not answered).
    pub reply: bool,
    /// The oldest and newest protocol versions the sender speaks (sent from version 5;
    /// `[4, 4]` when read from a version-4 `Hello`).
    pub speaks: [u8; 2],
    /// Named features the sender supports (sent from version 5; none in version 4).
    pub features: Vec<String>,
}

/// A replication message between two replicas.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Frame {
    /// Handshake (encoded as the struct variant it was before it had a type of its own).
    Hello(Hello),
    /// Handshake refused.
    Reject {
        /// Why.
        reason: String,
        /// The receiver is fenced: it is an earlier process of a member whose newer process
        /// the sender knows (it must stop acknowledging writes).
        fenced: bool,
    },
    /// Log entries of one origin, in sequence order.
    Entries {
        /// The replica that made the writes.
        origin: OriginId,
        /// The entries.
        entries: Vec<WireEntry>,
    },
    /// The sender's applied vector (acknowledgement and heartbeat).
    Ack {
        /// Per origin, highest sequence applied in order.
        applied: Vec<(OriginId, u64)>,
        /// Numbers the link's `Ack`s: a late one (reordered) is ignored.
        serial: u64,
    },
    /// An entry arrived ahead of a missing one: resend from `next`.
    Nack {
        /// The origin with the hole.
        origin: OriginId,
        /// The first missing sequence number.
        next: u64,
    },
    /// Anti-entropy, from a replica whose log no longer holds what the peer lacks: a table over
    /// all its records (the applied vector they reflect comes with the records).
    AeOffer {
        /// Round number, echoed in the answers.
        round: u64,
        /// `Iblt::to_bytes` of the table over (key hash, state hash) of every record.
        table: serde_bytes::ByteBuf,
        /// How many records the offerer holds.
        records: u64,
        /// What the offerer's snapshot covers without its records reflecting it.
        exceptions: Box<Exceptions>,
    },
    /// The hashes of the keys whose records the receiver lacks (or holds in another version).
    AeWant {
        /// Round number.
        round: u64,
        /// Key hashes (`model::digest::key_hash`).
        hashes: Vec<u64>,
    },
    /// The difference was too large for the table: offer again with `cells` cells.
    AeRetry {
        /// Round number.
        round: u64,
        /// Cells to use.
        cells: u64,
    },
    /// Wanted records, in numbered chunks; the last chunk of a round has `done` set.
    AeRecords {
        /// Round number.
        round: u64,
        /// Chunk number, from 0; chunks are applied only in order.
        chunk: u64,
        /// (key, encoded record).
        records: Vec<(serde_bytes::ByteBuf, serde_bytes::ByteBuf)>,
        /// Wanted keys the sender holds but cannot ship (unreadable, corrupt, too large).
        left_out: Vec<serde_bytes::ByteBuf>,
        /// Whether this ends the round: the receiver then adopts `snapshot`.
        done: bool,
        /// The offer's applied vector (the sender's states reflect every write in it).
        snapshot: Vec<(OriginId, u64)>,
    },
    /// A chunk of `AeRecords` was applied (releases the sender's in-flight budget).
    AeAck {
        /// Round number.
        round: u64,
        /// The chunk applied.
        chunk: u64,
    },
    /// Round-trip probe.
    Ping {
        /// Sender's time in milliseconds, echoed back.
        sent_ms: u64,
    },
    /// Answer to `Ping`.
    Pong {
        /// The `sent_ms` of the ping.
        sent_ms: u64,
    },
    /// The difference is too large for a table (a replica joining, or back after long): send
    /// every record, in key order.
    AeStream {
        /// Round number.
        round: u64,
    },
    /// Records of a streamed round: every record the sender holds with a key in
    /// `[from, through)` (`through` absent: to the end), in key order.
    AeRange {
        /// Round number.
        round: u64,
        /// Chunk number, from 0; chunks are applied only in order.
        chunk: u64,
        /// First key of the range covered.
        from: serde_bytes::ByteBuf,
        /// The key the next chunk starts at (`None`: this chunk reaches the end).
        through: Option<serde_bytes::ByteBuf>,
        /// (key, encoded record).
        records: Vec<(serde_bytes::ByteBuf, serde_bytes::ByteBuf)>,
        /// Keys in the range the sender holds but cannot ship (unreadable, corrupt, too large):
        /// not gaps.
        left_out: Vec<serde_bytes::ByteBuf>,
        /// Whether this ends the round.
        done: bool,
        /// The offer's applied vector (the sender's states reflect every write in it).
        snapshot: Vec<(OriginId, u64)>,
    },
    /// Active-passive mode: the primary's lease (requests, promises, releases, step-downs).
    Lease(crate::lease::LeaseMessage),
    /// What a replica says of its region, once its link is ready (only when it has
    /// something to say): where it is and where clients reach it.
    About(RegionAbout),
    /// Please offer a state-transfer round now: this replica holds damaged records to repair
    /// (answered with `AeOffer` unless a round is under way on the link).
    AeRequest,
}

/// A replica's description of its region, learned by its peers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegionAbout {
    /// Where the region is.
    pub location: Option<crate::routing::Location>,
    /// Where clients and peers reach the replica (`host:port`), if it says; at most
    /// `ABOUT_ADDRESS_BYTES_MAX` bytes.
    pub address: Option<String>,
}

/// Longest address a replica may announce, in bytes.
pub const ABOUT_ADDRESS_BYTES_MAX: usize = 256;

impl RegionAbout {
    /// Whether what it says can be believed: a place on Earth, a short address.
    pub fn is_sane(&self) -> bool {
        self.location.is_none_or(|l| l.is_on_earth())
            && self
                .address
                .as_ref()
                .is_none_or(|a| a.len() <= ABOUT_ADDRESS_BYTES_MAX)
    }
}

/// Why a frame was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Over `FRAME_BYTES_MAX`.
    #[error("frame of {0} bytes exceeds the maximum")]
    TooLarge(usize),
    /// Empty.
    #[error("empty frame")]
    Empty,
    /// A protocol version this build does not speak.
    #[error("protocol version {0} is not supported (this build speaks {lo} to {hi})", lo = PROTOCOL_VERSIONS.start(), hi = PROTOCOL_VERSIONS.end())]
    Version(u8),
    /// Undecodable.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

impl Frame {
    /// The frame's bytes at the newest version (`encode_at` for a link's version).
    pub fn encode(&self) -> Vec<u8> {
        self.encode_at(PROTOCOL_VERSION)
    }

    /// The frame's bytes at protocol `version` (one of `PROTOCOL_VERSIONS`; fields that
    /// version lacks are left out).
    pub fn encode_at(&self, version: u8) -> Vec<u8> {
        debug_assert!(PROTOCOL_VERSIONS.contains(&version), "version {version}");
        let mut out = vec![version];
        // Writing into a Vec cannot fail.
        match self {
            Frame::Hello(hello) if version < HELLO_RANGE_VERSION => {
                let _ = postcard::to_io(&(HELLO_VARIANT, v4::Hello::from(hello)), &mut out);
            }
            Frame::Entries { origin, entries } if version >= SHARED_STATES_VERSION => {
                let out: Vec<EntryOut<'_, serde_bytes::ByteBuf>> = entries
                    .iter()
                    .map(|e| EntryOut {
                        seq: e.seq,
                        records: &e.records,
                        left_out: &e.left_out,
                        lost: e.lost,
                        request: e.request.as_ref(),
                        span: 0,
                    })
                    .collect();
                return encode_entries(version, *origin, &out);
            }
            _ => {
                let _ = postcard::to_io(self, &mut out);
            }
        }
        out
    }

    /// Parses a frame of any version this build speaks, checking its size before anything
    /// else.
    pub fn decode(bytes: &[u8]) -> Result<Frame, FrameError> {
        if bytes.len() > FRAME_BYTES_MAX {
            return Err(FrameError::TooLarge(bytes.len()));
        }
        let (&v, body) = bytes.split_first().ok_or(FrameError::Empty)?;
        if !PROTOCOL_VERSIONS.contains(&v) {
            return Err(FrameError::Version(v));
        }
        if v < HELLO_RANGE_VERSION && body.first().map(|&t| u32::from(t)) == Some(HELLO_VARIANT) {
            let (_, hello): (u32, v4::Hello) = whole(body)?;
            return Ok(Frame::Hello(hello.into()));
        }
        if v >= SHARED_STATES_VERSION {
            if let Some(decoded) = decode_entries(bytes) {
                let (origin, entries) = decoded?;
                let owned = |b: &[u8]| serde_bytes::ByteBuf::from(b.to_vec());
                let entries = entries
                    .into_iter()
                    .map(|(seq, records, left_out, lost, request)| WireEntry {
                        seq,
                        records: records.iter().map(|(k, v)| (owned(k), owned(v))).collect(),
                        left_out: left_out.iter().map(|k| owned(k)).collect(),
                        lost,
                        request,
                    })
                    .collect();
                return Ok(Frame::Entries { origin, entries });
            }
        }
        whole(body)
    }

    /// The version a frame's bytes say they are in, if any.
    pub fn version_of(bytes: &[u8]) -> Option<u8> {
        bytes.first().copied()
    }

    /// `frame` as a member that inflates its vector sends it: every entry of a `Hello`'s or
    /// an `Ack`'s vector `by` higher, any other frame as it is (the simulator's lying member,
    /// and tests of what a claim may move).
    pub fn with_claims_raised(frame: Vec<u8>, by: u64) -> Vec<u8> {
        let raise = |v: Vec<(OriginId, u64)>| {
            v.into_iter()
                .map(|(o, s)| (o, s.saturating_add(by)))
                .collect()
        };
        let Some(version) = Frame::version_of(&frame) else {
            return frame;
        };
        match Frame::decode(&frame) {
            Ok(Frame::Hello(mut hello)) => {
                hello.applied = raise(hello.applied);
                Frame::Hello(hello).encode_at(version)
            }
            Ok(Frame::Ack { applied, serial }) => Frame::Ack {
                applied: raise(applied),
                serial,
            }
            .encode_at(version),
            _ => frame,
        }
    }
}

/// `T` decoded from all of `body` (trailing bytes are malformed).
fn whole<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, FrameError> {
    let (value, rest) =
        postcard::take_from_bytes(body).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::Malformed(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    Ok(value)
}

/// Index of `Frame::Hello` among the variants (postcard's enum tag).
const HELLO_VARIANT: u32 = 0;

/// Version 4's frames where they differ from the newest (frozen: these are the bytes released
/// peers of version 4 read and write).
mod v4 {
    use crate::model::{MemberId, OriginId};
    use serde::{Deserialize, Serialize};

    /// `super::Hello` before it carried versions and features.
    #[derive(Serialize, Deserialize)]
    pub(super) struct Hello {
        cluster: String,
        member: MemberId,
        origin: OriginId,
        epoch: u32,
        session: u64,
        region: String,
        applied: Vec<(OriginId, u64)>,
        reply: bool,
    }

    impl From<&super::Hello> for Hello {
        fn from(h: &super::Hello) -> Hello {
            Hello {
                cluster: h.cluster.clone(),
                member: h.member,
                origin: h.origin,
                epoch: h.epoch,
                session: h.session,
                region: h.region.clone(),
                applied: h.applied.clone(),
                reply: h.reply,
            }
        }
    }

    impl From<Hello> for super::Hello {
        fn from(h: Hello) -> super::Hello {
            super::Hello {
                cluster: h.cluster,
                member: h.member,
                origin: h.origin,
                epoch: h.epoch,
                session: h.session,
                region: h.region,
                applied: h.applied,
                reply: h.reply,
                speaks: [4, 4],
                features: Vec::new(),
            }
        }
    }
}

/// One entry as `encode_entries` writes it: sequence number, the record states shipped, the
/// keys left out, and whether the write is lost.
pub struct EntryOut<'a, B> {
    /// The origin's sequence number.
    pub seq: u64,
    /// (key, state) shipped.
    pub records: &'a [(B, B)],
    /// Keys whose states are left out.
    pub left_out: &'a [B],
    /// The write is lost (nothing of it is held).
    pub lost: bool,
    /// The client request the write answered, if it named one.
    pub request: Option<&'a RequestTag>,
    /// The sequence numbers after `seq` this entry also stands for (from version 8; 0 before):
    /// writes `seq + 1 ..= seq + span`, none left out, lost or naming a request, whose keys
    /// are all among `records` and whose states these are. A receiver takes each as an entry
    /// naming every key of `records` with these states.
    pub span: u64,
}

/// The bytes of `Frame::Entries { origin, entries }` at protocol `version`, written straight
/// from borrowed record states (the sender's hot path: no copy into owned `WireEntry`s
/// first). Versions 4 and 5 ship every entry's states whole; from version 6 a state that
/// repeats its key's previous one in the frame goes once.
pub fn encode_entries<B: AsRef<[u8]>>(
    version: u8,
    origin: OriginId,
    entries: &[EntryOut<'_, B>],
) -> Vec<u8> {
    if version >= LINKED_STATES_VERSION {
        return linked_states::encode(version, origin, entries, None);
    }
    if version >= SHARED_STATES_VERSION {
        return shared_states::encode(version, origin, entries);
    }
    struct Records<'a, B>(&'a [(B, B)]);
    impl<B: AsRef<[u8]>> Serialize for Records<'_, B> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(self.0.iter().map(|(k, v)| {
                (
                    serde_bytes::Bytes::new(k.as_ref()),
                    serde_bytes::Bytes::new(v.as_ref()),
                )
            }))
        }
    }
    struct Entries<'a, B>(&'a [EntryOut<'a, B>]);
    impl<B: AsRef<[u8]>> Serialize for Entries<'_, B> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(self.0.iter().map(|e| {
                (
                    e.seq,
                    Records(e.records),
                    Keys(e.left_out),
                    e.lost,
                    e.request,
                )
            }))
        }
    }
    let size: usize = entries
        .iter()
        .flat_map(|e| e.records.iter())
        .map(|(k, v)| k.as_ref().len() + v.as_ref().len() + 6)
        .sum();
    let mut out = Vec::with_capacity(size + 16 + 12 * entries.len());
    out.push(version);
    // postcard writes an enum variant as its index, then the fields in order; writing into a
    // Vec cannot fail. `encode_entries_matches_frame_encode` pins this to `Frame::encode`.
    let _ = postcard::to_io(&(ENTRIES_VARIANT, origin, Entries(entries)), &mut out);
    out
}

/// Keys as an entry's keys left out are written, borrowed.
struct Keys<'a, B>(&'a [B]);

impl<B: AsRef<[u8]>> Serialize for Keys<'_, B> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|k| serde_bytes::Bytes::new(k.as_ref())))
    }
}

/// One entry of an `Entries` frame as `decode_entries` returns it: sequence number, (key,
/// record state) pairs and the keys left out, borrowed from the frame's bytes, whether the
/// write is lost, and the client request it answered.
pub type EntryRef<'a> = (
    u64,
    Vec<(&'a [u8], &'a [u8])>,
    Vec<&'a [u8]>,
    bool,
    Option<RequestTag>,
);

/// The origin and entries of an `Entries` frame, borrowed from its bytes (the receiver's hot
/// path: no copy of any key or state); `None` for any other frame, checked as `Frame::decode`
/// checks it.
pub fn decode_entries(bytes: &[u8]) -> Option<Result<(OriginId, Vec<EntryRef<'_>>), FrameError>> {
    // postcard writes the variant index as a varint: one byte below 128.
    match bytes {
        [v, tag, body @ ..]
            if u32::from(*tag) == ENTRIES_VARIANT && PROTOCOL_VERSIONS.contains(v) =>
        {
            if bytes.len() > FRAME_BYTES_MAX {
                return Some(Err(FrameError::TooLarge(bytes.len())));
            }
            if *v >= LINKED_STATES_VERSION {
                return Some(linked_states::decode(*v, body));
            }
            if *v >= SHARED_STATES_VERSION {
                return Some(shared_states::decode(body));
            }
            Some(match postcard::take_from_bytes(body) {
                Ok((decoded, [])) => Ok(decoded),
                Ok((_, rest)) => Err(FrameError::Malformed(format!(
                    "{} trailing bytes",
                    rest.len()
                ))),
                Err(e) => Err(FrameError::Malformed(e.to_string())),
            })
        }
        _ => None,
    }
}

/// Index of `Frame::Entries` among the variants (postcard's enum tag).
const ENTRIES_VARIANT: u32 = 2;

/// The error of a record marked as repeating its key's state where no earlier record of the
/// key in the frame carries one.
pub(crate) fn no_earlier_state(origin: OriginId, seq: u64) -> FrameError {
    FrameError::Malformed(format!(
        "entry {origin}:{seq} repeats a state no earlier record of its key carries"
    ))
}

/// Counts `len` more bytes of states a frame hands its entries (repeats counted), refusing the
/// frame past `FRAME_STATES_BYTES_MAX`.
pub(crate) fn hand_states(
    handed: &mut usize,
    len: usize,
    origin: OriginId,
    seq: u64,
) -> Result<(), FrameError> {
    use crate::limits::FRAME_STATES_BYTES_MAX;
    *handed = handed.saturating_add(len);
    if *handed > FRAME_STATES_BYTES_MAX {
        return Err(FrameError::Malformed(format!(
            "entry {origin}:{seq}: the frame's states repeat past {FRAME_STATES_BYTES_MAX} bytes"
        )));
    }
    Ok(())
}

/// The bytes of an `Entries` frame at `version` (7 or later) whose records go in the given
/// forms (`forms[i][j]` for entry `i`'s record `j`): how a sender uses its link table.
pub fn encode_linked_entries<B: AsRef<[u8]>>(
    version: u8,
    origin: OriginId,
    entries: &[EntryOut<'_, B>],
    forms: &[Vec<StateForm>],
) -> Vec<u8> {
    debug_assert!(version >= LINKED_STATES_VERSION, "version {version}");
    linked_states::encode(version, origin, entries, Some(forms))
}

/// The origin and entries of a version-7 (or later) `Entries` frame, each record's state in
/// the form it came in (resolving linked ones needs the link's table: `Inbound::decode_on`);
/// `None` for any other frame or version.
pub fn parse_linked_entries(
    bytes: &[u8],
) -> Option<Result<(OriginId, Vec<LinkedEntryRef<'_>>), FrameError>> {
    match bytes {
        [v, tag, body @ ..]
            if u32::from(*tag) == ENTRIES_VARIANT
                && PROTOCOL_VERSIONS.contains(v)
                && *v >= LINKED_STATES_VERSION =>
        {
            if bytes.len() > FRAME_BYTES_MAX {
                return Some(Err(FrameError::TooLarge(bytes.len())));
            }
            Some(linked_states::parse(*v, body))
        }
        _ => None,
    }
}

/// A version vector as frame entries.
pub fn vv_entries(vv: &VersionVector) -> Vec<(OriginId, u64)> {
    vv.iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_entries_matches_frame_encode() {
        use crate::replication::RecordState;
        let a: Vec<RecordState> = vec![(b"k1".to_vec(), vec![1; 200]), (b"k2".to_vec(), vec![])];
        let b: Vec<RecordState> = vec![(vec![7; 300], b"v".to_vec())];
        let bytes = |r: &[RecordState]| -> Vec<(serde_bytes::ByteBuf, serde_bytes::ByteBuf)> {
            r.iter()
                .map(|(k, v)| (k.clone().into(), v.clone().into()))
                .collect()
        };
        let tag = RequestTag {
            client: "c".into(),
            id: [5; 16],
        };
        let owned = Frame::Entries {
            origin: OriginId(u64::MAX - 3),
            entries: vec![
                WireEntry {
                    seq: 1,
                    records: bytes(&a),
                    left_out: vec![],
                    lost: false,
                    request: Some(tag.clone()),
                },
                WireEntry {
                    seq: 300,
                    records: bytes(&b),
                    left_out: vec![b"gone".to_vec().into()],
                    lost: false,
                    request: None,
                },
                WireEntry {
                    seq: 301,
                    records: vec![],
                    left_out: vec![],
                    lost: true,
                    request: None,
                },
            ],
        };
        let gone = [b"gone".to_vec()];
        let none: [Vec<u8>; 0] = [];
        let borrowed = encode_entries(
            PROTOCOL_VERSION,
            OriginId(u64::MAX - 3),
            &[
                EntryOut {
                    seq: 1,
                    records: &a[..],
                    left_out: &none[..],
                    lost: false,
                    request: Some(&tag),
                    span: 0,
                },
                EntryOut {
                    seq: 300,
                    records: &b[..],
                    left_out: &gone[..],
                    lost: false,
                    request: None,
                    span: 0,
                },
                EntryOut {
                    seq: 301,
                    records: &[][..],
                    left_out: &none[..],
                    lost: true,
                    request: None,
                    span: 0,
                },
            ],
        );
        assert_eq!(borrowed, owned.encode());
        assert_eq!(Frame::decode(&borrowed), Ok(owned.clone()));
        // Versions 4 and 5 encode entries alike, but for the version byte (6 on is tested in
        // `frame/shared_states.rs`).
        for v in *PROTOCOL_VERSIONS.start()..SHARED_STATES_VERSION {
            let none: [Vec<u8>; 0] = [];
            let at = encode_entries(
                v,
                OriginId(7),
                &[EntryOut {
                    seq: 1,
                    records: &a[..],
                    left_out: &none[..],
                    lost: false,
                    request: None,
                    span: 0,
                }],
            );
            let Frame::Entries { entries, .. } = &owned else {
                unreachable!()
            };
            let mut first = entries[0].clone();
            first.request = None;
            let expected = Frame::Entries {
                origin: OriginId(7),
                entries: vec![first],
            };
            assert_eq!(at, expected.encode_at(v));
            assert_eq!(at[0], v);
            assert!(matches!(decode_entries(&at), Some(Ok(_))));
        }
        let Some(Ok((origin, entries))) = decode_entries(&borrowed) else {
            panic!("an entries frame decodes borrowed");
        };
        assert_eq!(origin, OriginId(u64::MAX - 3));
        fn pairs(r: &[RecordState]) -> Vec<(&[u8], &[u8])> {
            r.iter().map(|(k, v)| (&k[..], &v[..])).collect()
        }
        let as_sent: Vec<EntryRef<'_>> = vec![
            (1, pairs(&a), vec![], false, Some(tag.clone())),
            (300, pairs(&b), vec![&b"gone"[..]], false, None),
            (301, vec![], vec![], true, None),
        ];
        assert_eq!(entries, as_sent);
        assert!(decode_entries(&Frame::Ping { sent_ms: 1 }.encode()).is_none());
        let mut trailing = borrowed.clone();
        trailing.push(0);
        assert!(matches!(
            decode_entries(&trailing),
            Some(Err(FrameError::Malformed(_)))
        ));
    }

    #[test]
    fn frames_round_trip_and_garbage_is_refused() {
        let f = Frame::Entries {
            origin: OriginId(7),
            entries: vec![WireEntry {
                seq: 3,
                records: vec![(b"k".to_vec().into(), b"v".to_vec().into())],
                left_out: vec![],
                lost: false,
                request: None,
            }],
        };
        assert_eq!(Frame::decode(&f.encode()), Ok(f));
        assert_eq!(Frame::decode(&[]), Err(FrameError::Empty));
        assert_eq!(Frame::decode(&[10, 0]), Err(FrameError::Version(10)));
        assert!(matches!(
            Frame::decode(&[PROTOCOL_VERSION, 200, 1, 2]),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(
            Frame::decode(&vec![PROTOCOL_VERSION; FRAME_BYTES_MAX + 1]),
            Err(FrameError::TooLarge(_))
        ));
        // A huge declared length inside a small frame fails without allocating it.
        let mut lie = vec![PROTOCOL_VERSION, 2];
        lie.extend_from_slice(&[7, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(Frame::decode(&lie).is_err());
    }
}
