//! The client protocol: one request and one response per QUIC bidirectional stream, each a
//! frame of a version byte and postcard.
//!
//! A node speaks every version in `CLIENT_PROTOCOLS` and answers a request in the request's
//! version; a client learns the version to use when it connects (`protocols`: the newest both
//! speak) and never sends a request that version cannot carry (`ClientRequest::min_version`:
//! the client answers `Unsupported` itself). Version 6 added a session token to scans, the
//! `Unsupported` error, and each link's protocol version and features to the status; every
//! other message is encoded alike in 5 and 6 (`v5` holds what differs, frozen). Version 7
//! added change feeds: a `Watch` request is answered on its stream by `Changes` frames, one
//! after another, until the client closes it. Version 8 added expiry: writes may carry an
//! `Op::Expire`, and `ExpiresAt` asks when a key's value stops being read.

use meridian_core::model::{CausalToken, MemberId, Op, OriginId, VersionVector};
use meridian_core::read::{FeedEvent, Read};
use meridian_core::routing::{Location, Ranked};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// The newest client protocol version (3: writes carry a deadline, the status says whether the
/// node is isolated; 5: writes carry what the session wrote or read of their keys, answers
/// carry the node's clock; 6: scans carry the session's token, `Unsupported`, link versions in
/// the status; 7: change feeds, `Watch`, `FeedAck` and `FeedDrop`; 8: expiry, `Op::Expire`
/// in writes and `ExpiresAt`).
pub const CLIENT_PROTOCOL: u8 = 8;
/// Every client protocol version this build speaks, oldest to newest.
pub const CLIENT_PROTOCOLS: std::ops::RangeInclusive<u8> = 5..=CLIENT_PROTOCOL;
pub use meridian_core::limits::CLIENT_FRAME_BYTES_MAX;

/// How far a write must have gone before it is acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Consistency {
    /// Durable in the region that took it.
    #[default]
    Local,
    /// Durable in this many regions (the one that took it included).
    Regions(u8),
    /// Durable in more than half of the cluster's regions.
    Majority,
    /// Durable in every region.
    All,
}

impl Consistency {
    /// Regions that must hold the write, in a cluster of `regions` regions (at least one).
    pub fn regions_needed(&self, regions: usize) -> usize {
        match self {
            Consistency::Local => 1,
            Consistency::Regions(n) => usize::from(*n).max(1),
            Consistency::Majority => regions / 2 + 1,
            Consistency::All => regions.max(1),
        }
    }
}

impl std::str::FromStr for Consistency {
    type Err = String;

    /// `local`, `majority`, `all` or a number of regions.
    fn from_str(s: &str) -> Result<Consistency, String> {
        match s {
            "local" => Ok(Consistency::Local),
            "majority" => Ok(Consistency::Majority),
            "all" => Ok(Consistency::All),
            n => n.parse::<u8>().map(Consistency::Regions).map_err(|_| {
                format!("{s:?}: expected local, majority, all or a number of regions")
            }),
        }
    }
}

/// A write's identity, chosen by the client: a retried write carries the same one, and a
/// region that already applied it answers with the first outcome instead of applying it again.
pub type RequestId = [u8; 16];

/// What a write needs applied before it applies: what the session wrote or read of the keys
/// whose operations are context-dependent (`Op::depends_on_seen`). A remove or delete then
/// covers what the session wrote or read of the key, and a context write supersedes it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct After {
    /// The writes the region must have applied.
    pub token: CausalToken,
    /// Longest wait for them (bounded by the node and by the write's deadline), after which
    /// the write is refused as `NotYetVisible`, nothing written.
    pub wait_ms: u32,
}

/// A request from a client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ClientRequest {
    /// One operation on one key.
    Apply {
        /// The write's identity.
        id: RequestId,
        /// The key.
        key: Vec<u8>,
        /// The operation.
        op: Op,
        /// Required durability.
        consistency: Consistency,
        /// Not applied after this time (Unix milliseconds, the client's clock): a client that
        /// gave up on an answer and retries elsewhere knows the first attempt can no longer
        /// apply late (a region frozen with the request in its socket buffer).
        deadline_ms: Option<u64>,
        /// What the session wrote or read of the key, to be applied here first.
        after: Option<After>,
    },
    /// An atomic batch.
    Write {
        /// The write's identity.
        id: RequestId,
        /// (key, operation) pairs.
        ops: Vec<(Vec<u8>, Op)>,
        /// Required durability.
        consistency: Consistency,
        /// As for `Apply`.
        deadline_ms: Option<u64>,
        /// What the session wrote or read of the keys, to be applied here first.
        after: Option<After>,
    },
    /// A read; with a token, waits up to `wait_ms` for the region to have applied it.
    Read {
        /// The key.
        key: Vec<u8>,
        /// The session's causal token.
        token: Option<CausalToken>,
        /// Longest wait for the token.
        wait_ms: u32,
    },
    /// Keys starting with `prefix`, in order; a page holds at most `limit` rows and
    /// `limits::SCAN_BYTES_MAX` bytes of records (at least one row).
    Scan {
        /// The prefix.
        prefix: Vec<u8>,
        /// Most rows returned.
        limit: u32,
        /// Continue after this key (the last key of the previous page).
        after: Option<Vec<u8>>,
        /// The session's causal token: the page reflects at least its writes (the region
        /// waits up to `wait_ms` for them, then answers `NotYetVisible`). Version 6 and later.
        token: Option<CausalToken>,
        /// Longest wait for the token.
        wait_ms: u32,
    },
    /// The node's status.
    Status,
    /// What the node has applied (a majority read gathers it from a majority of regions).
    Applied,
    /// Every region of the cluster, with addresses and locations.
    Regions,
    /// The region that should serve a client at `near`, and the fallbacks in order.
    Route {
        /// The client's place.
        near: Option<Location>,
    },
    /// Active-passive mode: make this node's region the primary (admin).
    Promote,
    /// Switch this node between active-active and active-passive (admin; every node of the
    /// cluster must be switched).
    SetMode {
        /// Whether one primary takes the writes.
        active_passive: bool,
    },
    /// Game day (admin): cut this node's replication links without stopping it (`true`), or
    /// restore them (`false`). Clients are still served; the node forgets it on restart.
    Isolate {
        /// Whether the links stay cut.
        isolated: bool,
    },
    /// Online backup (admin): a consistent copy of this node's data written to `path` on the
    /// node's machine (a directory that must not exist; on the data directory's file system
    /// its files are hard links). `meridian admin restore` brings it back.
    Backup {
        /// Where the node writes the copy.
        path: String,
    },
    /// Follows the changes to keys under `prefix` after `from` (after every write the region
    /// applied when `None`), version 7: the node answers on this stream with `Changes` frames
    /// as changes come, and at least every `WATCH_HEARTBEAT_MS`, until the client closes it.
    /// With a `name`, the region's named feed: resumed from its acknowledged position when
    /// `from` is `None`, and its acknowledged position (`FeedAck`) holds the region's log.
    Watch {
        /// The prefix (empty: every key).
        prefix: Vec<u8>,
        /// Where to start: a token of an earlier `Changes` frame or event, from any region.
        from: Option<CausalToken>,
        /// The named feed to follow, if any.
        name: Option<String>,
    },
    /// Records that the consumer of the named feed `name` handled every change up to `token`
    /// (version 7): the region keeps its log from there on, within its bound.
    FeedAck {
        /// The feed's name.
        name: String,
        /// The position handled.
        token: CausalToken,
    },
    /// Forgets the named feed `name` in this region (version 7): its position no longer
    /// holds the log back.
    FeedDrop {
        /// The feed's name.
        name: String,
    },
    /// When the value under `key` stops being read in this region (version 8): answered by
    /// `ExpiresAt`.
    ExpiresAt {
        /// The key.
        key: Vec<u8>,
    },
}

/// Index of `ClientRequest::Watch` among its variants (postcard's enum tag, one byte): the
/// node serves it on its stream without the single-answer path.
pub const WATCH_VARIANT: u8 = 12;
/// Longest a watch goes without a `Changes` frame (an empty one, with the position, when
/// nothing changed): a client that hears nothing for longer moves to another region.
pub const WATCH_HEARTBEAT_MS: u64 = 1_000;

/// What a client can act on when a request fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The request did not decode or is not valid.
    BadRequest,
    /// Key empty or too long.
    InvalidKey,
    /// Value over the limit.
    ValueTooLarge,
    /// The key holds another type.
    WrongType,
    /// The operation is invalid.
    InvalidOperation,
    /// The stored record is corrupt.
    Corrupt,
    /// The token's writes are not visible here yet (for a write: what the session wrote or
    /// read of its keys, or its read context; nothing was written).
    NotYetVisible,
    /// Too many requests: retry after `retry_after_ms`.
    RateLimited,
    /// The node cannot serve (storage failure, shutting down, recovering after a restart).
    Unavailable,
    /// The client's certificate does not grant the role the request needs.
    Forbidden,
    /// The write was made here, but it was not known to be durable in the regions asked for
    /// before the wait ended. It is never rolled back: it still reaches every region.
    Unknown,
    /// Active-passive mode: this region does not hold the primary's lease; `primary` names
    /// the replica that does, when known. Nothing was written.
    NotPrimary,
    /// The write's deadline passed before this region could apply it. Nothing was written.
    Expired,
    /// No region can ever supply some of the session's writes: they were lost with a region's
    /// disk before any other region held them. `lost` names the origin and how much of it the
    /// cluster holds; the session goes on once it forgets the rest
    /// (`RoutedClient::forget_lost`).
    Uncoverable,
    /// The node (or the protocol version the connection runs at) does not support the
    /// request; nothing was done. Another region, or the node once upgraded, may.
    Unsupported,
}

/// A failed request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientError {
    /// What kind of failure.
    pub code: ErrorCode,
    /// For people.
    pub message: String,
    /// When to retry, for `RateLimited`.
    pub retry_after_ms: Option<u64>,
    /// The replica (its name) that takes writes, for `NotPrimary` (when this node knows it).
    pub primary: Option<String>,
    /// For `Uncoverable`: the origin, and the last of its writes any region holds.
    pub lost: Option<(OriginId, u64)>,
}

/// One peer as a node sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Replica name.
    pub name: String,
    /// Region.
    pub region: String,
    /// Whether a link is up.
    pub connected: bool,
    /// Last measured round trip.
    pub rtt_ms: Option<u64>,
    /// Operations the peer has not acknowledged.
    pub lag_ops: u64,
    /// Age of the oldest local write the peer has not acknowledged.
    pub lag_ms: u64,
    /// Why the link was last refused or closed by the protocol (a handshake mismatch, a bad
    /// frame), if it ever was.
    pub last_error: Option<String>,
    /// The replication protocol version the link runs at, while one is up (client protocol
    /// 6 and later).
    #[serde(default)]
    pub protocol: Option<u8>,
    /// The named features both ends of the link announced (client protocol 6 and later).
    #[serde(default)]
    pub features: Vec<String>,
}

/// One region of the cluster as a node knows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegionEntry {
    /// Replica name.
    pub name: String,
    /// Region name.
    pub region: String,
    /// Where clients and peers reach it.
    pub address: SocketAddr,
    /// Where it is, if configured.
    pub location: Option<Location>,
    /// Smoothed round trip from the answering node, in milliseconds (`None` for itself or
    /// before a measurement).
    pub rtt_ms: Option<u64>,
    /// Whether the answering node has a link to it (true for itself).
    pub reachable: bool,
}

/// The cluster's regions, from one node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegionTable {
    /// Cluster id.
    pub cluster: String,
    /// The answering replica's name.
    pub answered_by: String,
    /// Every replica, the answering one first.
    pub regions: Vec<RegionEntry>,
}

/// Where a client at a place should go.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouteAnswer {
    /// The region that should serve it.
    pub region: String,
    /// Every region in the order to try (the first is `region`).
    pub order: Vec<Ranked>,
}

/// A node's status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Cluster id.
    pub cluster: String,
    /// Replica name.
    pub name: String,
    /// Region.
    pub region: String,
    /// Replica id (the member: its name and incarnation in the cluster).
    pub replica: Option<MemberId>,
    /// The origin its writes are numbered in (its current epoch).
    pub origin: Option<OriginId>,
    /// The origin's epoch.
    pub epoch: u32,
    /// Whether it accepts writes (false once a storage failure poisoned its engine).
    pub writable: bool,
    /// How it came to write under its origin: "writable", "writable: new epoch ... after
    /// ...".
    pub origin_note: String,
    /// Applied vector.
    pub applied: Vec<(OriginId, u64)>,
    /// Peers.
    pub peers: Vec<PeerStatus>,
    /// Stored items (records, log entries) found unusable since the node started: each
    /// fault stays with its key and replication goes on for the rest.
    pub storage_faults: u64,
    /// The latest such fault, described.
    pub last_fault: Option<String>,
    /// Log entries reclaimed so far.
    pub log_entries_reclaimed: u64,
    /// Tombstones waiting for stability.
    pub tombstones_pending: u64,
    /// `active-active` (every region takes writes) or `active-passive` (the primary does).
    pub mode: String,
    /// Active-passive: the replica holding the primary's lease, as this node knows it.
    pub primary: Option<String>,
    /// Active-passive: whether this node holds the lease now.
    pub is_primary: bool,
    /// Whether an operator cut its replication links (`meridian admin isolate`).
    pub isolated: bool,
    /// "ok", or "degraded: " and why (replication stuck on storage errors, writes refused
    /// after a storage failure).
    pub health: String,
    /// Storage errors on the replication path since the node started (each retried).
    pub replication_store_errors: u64,
    /// The latest of them, described.
    pub last_replication_store_error: Option<String>,
    /// How long reclamation of log entries and tombstones has stood still (a member down):
    /// what a down member costs grows meanwhile, up to `log_retention_entries` per origin.
    pub stability_frozen_ms: u64,
    /// Writes declared lost here (numbers no reachable member held; the latest ones kept).
    pub writes_declared_lost: u64,
    /// Keys whose states were declared lost on their way here (the latest ones kept).
    pub records_declared_lost: u64,
}

/// A response.
// One per request, encoded and dropped: the size of the status variant costs nothing here.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ClientResponse {
    /// The write is acknowledged; merge the token into the session's.
    Written {
        /// The write's token.
        token: CausalToken,
        /// Regions known to hold it when it was acknowledged.
        regions: u32,
    },
    /// A read.
    Value {
        /// `None` when absent.
        read: Option<Read>,
    },
    /// A page of a scan.
    Rows {
        /// Key and value per row.
        rows: Vec<(Vec<u8>, Read)>,
        /// Whether more rows follow (ask again with `after` set to the last key).
        more: bool,
    },
    /// The node's status.
    Status(NodeStatus),
    /// What the node has applied.
    Applied(VersionVector),
    /// The cluster's regions.
    Regions(RegionTable),
    /// A route.
    Route(RouteAnswer),
    /// An admin request was carried out.
    Done {
        /// What happened.
        message: String,
    },
    /// The request failed.
    Error(ClientError),
    /// Changes of a watch (version 7): every event after the last frame's `position`, and the
    /// position after them (changes outside the prefix move it too).
    Changes {
        /// The events, in order.
        events: Vec<FeedEvent>,
        /// Where to resume from once every event is handled.
        position: CausalToken,
    },
    /// The answer to `ExpiresAt` (version 8): the Unix milliseconds from which the key's
    /// present value is not read, `None` when it is absent or does not expire.
    ExpiresAt {
        /// The expiry time.
        at_ms: Option<u64>,
    },
}

/// A response as a node sends it: with its wall clock when it answered (Unix milliseconds),
/// from which a client estimates the node's clock offset (`routing::ClockOffset`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The node's clock.
    pub node_ms: u64,
    /// The response.
    pub response: ClientResponse,
}

/// A message of the client protocol, encoded for a version.
pub trait Message: Sized + Serialize + for<'a> Deserialize<'a> {
    /// Writes the message's body at `version` (one of `CLIENT_PROTOCOLS`).
    fn encode_body(&self, version: u8, out: &mut Vec<u8>);
    /// Reads a body written at `version`.
    fn decode_body(version: u8, body: &[u8]) -> Result<Self, String>;
}

/// Encodes a client message at the newest version.
pub fn encode<T: Message>(msg: &T) -> Vec<u8> {
    encode_at(CLIENT_PROTOCOL, msg)
}

/// Encodes a client message at `version` (one of `CLIENT_PROTOCOLS`).
pub fn encode_at<T: Message>(version: u8, msg: &T) -> Vec<u8> {
    let mut out = vec![version];
    msg.encode_body(version, &mut out);
    out
}

/// Decodes a client message of any version this build speaks.
pub fn decode<T: Message>(bytes: &[u8]) -> Result<T, String> {
    decode_versioned(bytes).map(|(_, msg)| msg)
}

/// Decodes a client message of any version this build speaks, with its version.
pub fn decode_versioned<T: Message>(bytes: &[u8]) -> Result<(u8, T), String> {
    let (&v, body) = bytes.split_first().ok_or("empty frame")?;
    if !CLIENT_PROTOCOLS.contains(&v) {
        return Err(format!(
            "client protocol {v} is not supported (this node speaks {} to {})",
            CLIENT_PROTOCOLS.start(),
            CLIENT_PROTOCOLS.end()
        ));
    }
    Ok((v, T::decode_body(v, body)?))
}

/// Writes `msg` as postcard (into a Vec: cannot fail).
fn put<T: Serialize + ?Sized>(msg: &T, out: &mut Vec<u8>) {
    let _ = postcard::to_io(msg, out);
}

/// Reads postcard (bytes after the message are ignored, as every version did).
fn get<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, String> {
    postcard::from_bytes(body).map_err(|e| format!("malformed: {e}"))
}

/// Index of `ClientRequest::Scan` among its variants (postcard's enum tag).
const SCAN_VARIANT: u32 = 3;
/// Index of `ClientResponse::Status` among its variants.
const STATUS_VARIANT: u32 = 3;

impl ClientRequest {
    /// The oldest client protocol version that can carry this request (a scan with a session
    /// token needs 6).
    pub fn min_version(&self) -> u8 {
        match self {
            ClientRequest::Scan { token: Some(_), .. } => 6,
            ClientRequest::Apply { op, .. } if op.is_expire() => 8,
            ClientRequest::Write { ops, .. } if ops.iter().any(|(_, op)| op.is_expire()) => 8,
            ClientRequest::ExpiresAt { .. } => 8,
            ClientRequest::Watch { .. }
            | ClientRequest::FeedAck { .. }
            | ClientRequest::FeedDrop { .. } => 7,
            _ => *CLIENT_PROTOCOLS.start(),
        }
    }
}

impl Message for ClientRequest {
    fn encode_body(&self, version: u8, out: &mut Vec<u8>) {
        match self {
            // Version 5's scan has no token (`min_version` keeps one from being sent there).
            ClientRequest::Scan {
                prefix,
                limit,
                after,
                ..
            } if version < 6 => put(&(SCAN_VARIANT, prefix, limit, after), out),
            _ => put(self, out),
        }
    }

    fn decode_body(version: u8, body: &[u8]) -> Result<ClientRequest, String> {
        if version < 6 && body.first().map(|&t| u32::from(t)) == Some(SCAN_VARIANT) {
            let (_, prefix, limit, after): (u32, Vec<u8>, u32, Option<Vec<u8>>) = get(body)?;
            return Ok(ClientRequest::Scan {
                prefix,
                limit,
                after,
                token: None,
                wait_ms: 0,
            });
        }
        get(body)
    }
}

impl Message for Answer {
    fn encode_body(&self, version: u8, out: &mut Vec<u8>) {
        if version >= 6 {
            return put(self, out);
        }
        match &self.response {
            ClientResponse::Status(s) => put(
                &(self.node_ms, STATUS_VARIANT, v5::NodeStatus::from(s)),
                out,
            ),
            ClientResponse::Error(e) if e.code == ErrorCode::Unsupported => {
                let older = ClientError {
                    code: ErrorCode::BadRequest,
                    message: format!("unsupported: {}", e.message),
                    ..e.clone()
                };
                put(
                    &Answer {
                        node_ms: self.node_ms,
                        response: ClientResponse::Error(older),
                    },
                    out,
                )
            }
            _ => put(self, out),
        }
    }

    fn decode_body(version: u8, body: &[u8]) -> Result<Answer, String> {
        if version < 6 {
            let (_, tag): (u64, u32) = get(body)?;
            if tag == STATUS_VARIANT {
                let (node_ms, _, status): (u64, u32, v5::NodeStatus) = get(body)?;
                return Ok(Answer {
                    node_ms,
                    response: ClientResponse::Status(status.into()),
                });
            }
        }
        get(body)
    }
}

/// Version 5's messages where they differ from the newest (frozen: the bytes released clients
/// and nodes of version 5 read and write).
mod v5 {
    use meridian_core::model::OriginId;
    use serde::{Deserialize, Serialize};

    /// `super::PeerStatus` before it carried the link's version and features.
    #[derive(Serialize, Deserialize)]
    pub(super) struct PeerStatus {
        name: String,
        region: String,
        connected: bool,
        rtt_ms: Option<u64>,
        lag_ops: u64,
        lag_ms: u64,
        last_error: Option<String>,
    }

    /// `super::NodeStatus` of version 5 (its peers as above).
    #[derive(Serialize, Deserialize)]
    pub(super) struct NodeStatus {
        cluster: String,
        name: String,
        region: String,
        replica: Option<OriginId>,
        origin: Option<OriginId>,
        epoch: u32,
        writable: bool,
        origin_note: String,
        applied: Vec<(OriginId, u64)>,
        peers: Vec<PeerStatus>,
        storage_faults: u64,
        last_fault: Option<String>,
        log_entries_reclaimed: u64,
        tombstones_pending: u64,
        mode: String,
        primary: Option<String>,
        is_primary: bool,
        isolated: bool,
        health: String,
        replication_store_errors: u64,
        last_replication_store_error: Option<String>,
        stability_frozen_ms: u64,
        writes_declared_lost: u64,
        records_declared_lost: u64,
    }

    impl From<&super::NodeStatus> for NodeStatus {
        fn from(s: &super::NodeStatus) -> NodeStatus {
            let s = s.clone();
            NodeStatus {
                cluster: s.cluster,
                name: s.name,
                region: s.region,
                replica: s.replica.map(|m| OriginId(m.0)),
                origin: s.origin,
                epoch: s.epoch,
                writable: s.writable,
                origin_note: s.origin_note,
                applied: s.applied,
                peers: s
                    .peers
                    .into_iter()
                    .map(|p| PeerStatus {
                        name: p.name,
                        region: p.region,
                        connected: p.connected,
                        rtt_ms: p.rtt_ms,
                        lag_ops: p.lag_ops,
                        lag_ms: p.lag_ms,
                        last_error: p.last_error,
                    })
                    .collect(),
                storage_faults: s.storage_faults,
                last_fault: s.last_fault,
                log_entries_reclaimed: s.log_entries_reclaimed,
                tombstones_pending: s.tombstones_pending,
                mode: s.mode,
                primary: s.primary,
                is_primary: s.is_primary,
                isolated: s.isolated,
                health: s.health,
                replication_store_errors: s.replication_store_errors,
                last_replication_store_error: s.last_replication_store_error,
                stability_frozen_ms: s.stability_frozen_ms,
                writes_declared_lost: s.writes_declared_lost,
                records_declared_lost: s.records_declared_lost,
            }
        }
    }

    impl From<NodeStatus> for super::NodeStatus {
        fn from(s: NodeStatus) -> super::NodeStatus {
            super::NodeStatus {
                cluster: s.cluster,
                name: s.name,
                region: s.region,
                replica: s.replica.map(|m| meridian_core::model::MemberId(m.0)),
                origin: s.origin,
                epoch: s.epoch,
                writable: s.writable,
                origin_note: s.origin_note,
                applied: s.applied,
                peers: s
                    .peers
                    .into_iter()
                    .map(|p| super::PeerStatus {
                        name: p.name,
                        region: p.region,
                        connected: p.connected,
                        rtt_ms: p.rtt_ms,
                        lag_ops: p.lag_ops,
                        lag_ms: p.lag_ms,
                        last_error: p.last_error,
                        protocol: None,
                        features: Vec::new(),
                    })
                    .collect(),
                storage_faults: s.storage_faults,
                last_fault: s.last_fault,
                log_entries_reclaimed: s.log_entries_reclaimed,
                tombstones_pending: s.tombstones_pending,
                mode: s.mode,
                primary: s.primary,
                is_primary: s.is_primary,
                isolated: s.isolated,
                health: s.health,
                replication_store_errors: s.replication_store_errors,
                last_replication_store_error: s.last_replication_store_error,
                stability_frozen_ms: s.stability_frozen_ms,
                writes_declared_lost: s.writes_declared_lost,
                records_declared_lost: s.records_declared_lost,
            }
        }
    }
}
