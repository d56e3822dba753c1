//! The client protocol: one request and one response per QUIC bidirectional stream, each a
//! frame of a version byte and postcard.

use meridian::Read;
use meridian_core::model::{CausalToken, Op, OriginId, VersionVector};
use meridian_core::routing::{Location, Ranked};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Version byte of client frames (3: writes carry a deadline, the status says whether the node
/// is isolated; 5: writes carry what the session wrote or read of their keys, answers carry
/// the node's clock).
pub const CLIENT_PROTOCOL: u8 = 5;
pub use meridian::limits::CLIENT_FRAME_BYTES_MAX;

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
}

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
    pub replica: Option<OriginId>,
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

/// Encodes a client message.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut out = vec![CLIENT_PROTOCOL];
    // Writing into a Vec cannot fail.
    let _ = postcard::to_io(msg, &mut out);
    out
}

/// Decodes a client message.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    let (&v, body) = bytes.split_first().ok_or("empty frame")?;
    if v != CLIENT_PROTOCOL {
        return Err(format!(
            "client protocol {v} is not supported (this node speaks {CLIENT_PROTOCOL})"
        ));
    }
    postcard::from_bytes(body).map_err(|e| format!("malformed: {e}"))
}
