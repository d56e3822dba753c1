//! A client of one node: mutual TLS, one stream per request, and a session causal token that
//! every write and read advances (read-your-writes across nodes).

use super::client_proto::{
    decode, encode_at, Answer, ClientError, ClientRequest, ClientResponse, Consistency, ErrorCode,
    NodeStatus, RegionTable, RequestId, RouteAnswer, CLIENT_FRAME_BYTES_MAX,
};
use super::framing::{read_frame, write_frame};
use super::protocols::{client_version, Protocols};
use super::tls::{client_config_offering, TlsFiles, CLIENT_LIVENESS};
use meridian_core::model::{CausalToken, Op, VersionVector};
use meridian_core::read::Read;
use meridian_core::routing::{ClockSample, Location};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientFailure {
    /// Nothing was sent: no connection could be made, or the one there was had closed.
    #[error("connect: {0}")]
    Connect(String),
    /// The connection or stream broke after the request was sent: it may have been applied.
    #[error("stream: {0}")]
    Stream(String),
    /// The node answered something unexpected.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The node refused the request.
    #[error("{:?}: {}", .0.code, .0.message)]
    Server(ClientError),
    /// The request is larger than any node accepts; it was not sent.
    #[error("request of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Its encoded size.
        len: usize,
        /// `limits::CLIENT_FRAME_BYTES_MAX`.
        max: usize,
    },
}

impl ClientFailure {
    /// Whether trying another region (or later) may help.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, ClientFailure::Connect(_) | ClientFailure::Stream(_))
    }
}

/// A connection to one node (a clone shares the connection, with a session token of its own).
#[derive(Clone)]
pub struct Client {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    /// The client protocol version the connection negotiated.
    version: u8,
    /// Everything this session wrote or read.
    pub token: CausalToken,
}

impl Client {
    /// Connects to the node at `addr` whose certificate names `server_name`; the connection
    /// dies after `CLIENT_LIVENESS` without hearing from the node.
    pub async fn connect(
        addr: SocketAddr,
        server_name: &str,
        tls: &TlsFiles,
    ) -> Result<Client, ClientFailure> {
        Client::connect_with(addr, server_name, tls, CLIENT_LIVENESS).await
    }

    /// `connect`, the connection dying after `liveness` without hearing from the node.
    pub async fn connect_with(
        addr: SocketAddr,
        server_name: &str,
        tls: &TlsFiles,
        liveness: Duration,
    ) -> Result<Client, ClientFailure> {
        Client::connect_speaking(addr, server_name, tls, liveness, CLIENT_PROTOCOL_NEWEST).await
    }

    /// `connect_with`, speaking client protocol versions up to `max` (the node picks the
    /// newest it speaks too).
    pub async fn connect_speaking(
        addr: SocketAddr,
        server_name: &str,
        tls: &TlsFiles,
        liveness: Duration,
        max: u8,
    ) -> Result<Client, ClientFailure> {
        let protocols = Protocols {
            client_max: max,
            ..Protocols::default()
        };
        let config = client_config_offering(tls, protocols.client_alpns(), false, Some(liveness))
            .map_err(|e| ClientFailure::Connect(e.to_string()))?;
        let bind: SocketAddr = match (addr.is_ipv4(), addr.ip().is_loopback()) {
            (true, true) => (Ipv4Addr::LOCALHOST, 0).into(),
            (true, false) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            (false, true) => (Ipv6Addr::LOCALHOST, 0).into(),
            (false, false) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let mut endpoint =
            quinn::Endpoint::client(bind).map_err(|e| ClientFailure::Connect(e.to_string()))?;
        endpoint.set_default_client_config(config);
        let connecting = endpoint
            .connect(addr, server_name)
            .map_err(|e| ClientFailure::Connect(e.to_string()))?;
        let conn = connecting.await.map_err(|e| {
            let e = e.to_string();
            if super::protocols::is_no_common_version(&e) {
                ClientFailure::Connect(format!(
                    "no client protocol version in common with the node (this client speaks {}): {e}",
                    protocols.client_range()
                ))
            } else {
                ClientFailure::Connect(e)
            }
        })?;
        let alpn = super::tls::alpn(&conn).unwrap_or_default();
        let Some(version) = client_version(&alpn) else {
            return Err(ClientFailure::Protocol(
                "the node chose no client protocol version".into(),
            ));
        };
        Ok(Client {
            endpoint,
            conn,
            version,
            token: CausalToken::default(),
        })
    }

    /// The client protocol version the connection runs at.
    pub fn version(&self) -> u8 {
        self.version
    }

    /// Whether the connection has closed (the node went away or restarted).
    pub fn is_closed(&self) -> bool {
        self.conn.close_reason().is_some()
    }

    /// Whether `other` shares this client's connection.
    pub fn same_connection(&self, other: &Client) -> bool {
        self.conn.stable_id() == other.conn.stable_id()
    }

    /// The QUIC connection (the watch opens its stream on it).
    pub(crate) fn connection(&self) -> &quinn::Connection {
        &self.conn
    }

    /// `Unsupported` when the connection's version cannot carry `request`.
    pub(crate) fn check_carries(&self, request: &ClientRequest) -> Result<(), ClientFailure> {
        if request.min_version() <= self.version {
            return Ok(());
        }
        Err(ClientFailure::Server(ClientError {
            code: ErrorCode::Unsupported,
            message: format!(
                "the node speaks client protocol {}; this request needs {}",
                self.version,
                request.min_version()
            ),
            retry_after_ms: None,
            primary: None,
            lost: None,
        }))
    }

    /// Follows the changes to keys under `prefix` after `from` (after what the node applied
    /// when `None`), on the node's named feed `name` if given (client protocol 7).
    pub async fn watch(
        &self,
        prefix: &[u8],
        from: Option<CausalToken>,
        name: Option<String>,
    ) -> Result<super::feed::WatchStream, ClientFailure> {
        super::feed::WatchStream::open(self, prefix, from, name).await
    }

    /// Records that the consumer of the node's named feed `name` handled every change up to
    /// `token` (the node keeps its log from there, within its bound).
    pub async fn ack_feed(&self, name: &str, token: &CausalToken) -> Result<(), ClientFailure> {
        let request = ClientRequest::FeedAck {
            name: name.to_string(),
            token: token.clone(),
        };
        match self.request(&request).await? {
            ClientResponse::Done { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// When the value under `key` stops being read on this node (Unix milliseconds); `None`
    /// when it is absent or does not expire.
    pub async fn expires_at(&self, key: &[u8]) -> Result<Option<u64>, ClientFailure> {
        let request = ClientRequest::ExpiresAt { key: key.to_vec() };
        match self.request(&request).await? {
            ClientResponse::ExpiresAt { at_ms } => Ok(at_ms),
            other => Err(unexpected(other)),
        }
    }

    /// Forgets the node's named feed `name`: its position no longer holds the node's log.
    pub async fn drop_feed(&self, name: &str) -> Result<(), ClientFailure> {
        let request = ClientRequest::FeedDrop {
            name: name.to_string(),
        };
        match self.request(&request).await? {
            ClientResponse::Done { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Sends one request and waits for its response.
    pub async fn request(&self, request: &ClientRequest) -> Result<ClientResponse, ClientFailure> {
        self.request_sampled(request).await.0
    }

    /// `request`, with what the answer says of the node's clock when an answer came. A
    /// connection that had closed, or broke before the whole request left, sent nothing
    /// (`Connect`); one that broke after may have had it applied (`Stream`).
    pub async fn request_sampled(
        &self,
        request: &ClientRequest,
    ) -> (Result<ClientResponse, ClientFailure>, Option<ClockSample>) {
        if let Err(unsupported) = self.check_carries(request) {
            return (Err(unsupported), None);
        }
        let frame = encode_at(self.version, request);
        if frame.len() > CLIENT_FRAME_BYTES_MAX {
            let len = frame.len();
            let max = CLIENT_FRAME_BYTES_MAX;
            return (Err(ClientFailure::TooLarge { len, max }), None);
        }
        if let Some(reason) = self.conn.close_reason() {
            return (
                Err(ClientFailure::Connect(format!("closed: {reason}"))),
                None,
            );
        }
        let (mut send, mut recv) = match self.conn.open_bi().await {
            Ok(streams) => streams,
            Err(e) => return (Err(ClientFailure::Connect(e.to_string())), None),
        };
        let sent_ms = wall_ms();
        // A frame the node does not get whole is never applied: a failed write sent nothing.
        if let Err(e) = write_frame(&mut send, frame).await {
            return (Err(ClientFailure::Connect(e.to_string())), None);
        }
        let _ = send.finish();
        let bytes = match read_frame(&mut recv, CLIENT_FRAME_BYTES_MAX).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return (Err(ClientFailure::Stream("no response".into())), None),
            Err(e) => return (Err(ClientFailure::Stream(e.to_string())), None),
        };
        let received_ms = wall_ms();
        let answer = match decode::<Answer>(&bytes) {
            Ok(answer) => answer,
            Err(e) => return (Err(ClientFailure::Protocol(e)), None),
        };
        let sample = ClockSample {
            sent_ms,
            received_ms,
            node_ms: answer.node_ms,
        };
        let result = match answer.response {
            ClientResponse::Error(e) => Err(ClientFailure::Server(e)),
            other => Ok(other),
        };
        (result, Some(sample))
    }

    /// Applies one operation, durable in this node's region; the session token advances.
    pub async fn apply(&mut self, key: &[u8], op: Op) -> Result<CausalToken, ClientFailure> {
        self.apply_with(key, op, Consistency::Local, new_request_id())
            .await
    }

    /// Applies one operation under request id `id` (a retry carries the first attempt's),
    /// acknowledged once durable in the regions `consistency` asks for.
    pub async fn apply_with(
        &mut self,
        key: &[u8],
        op: Op,
        consistency: Consistency,
        id: RequestId,
    ) -> Result<CausalToken, ClientFailure> {
        let request = ClientRequest::Apply {
            id,
            key: key.to_vec(),
            op,
            consistency,
            deadline_ms: None,
            after: None,
        };
        match self.request(&request).await? {
            ClientResponse::Written { token, .. } => {
                self.token.merge(&token);
                Ok(token)
            }
            other => Err(unexpected(other)),
        }
    }

    /// Applies `ops` as one atomic batch under request id `id`, acknowledged once durable in
    /// the regions `consistency` asks for.
    pub async fn write_with(
        &mut self,
        ops: Vec<(Vec<u8>, Op)>,
        consistency: Consistency,
        id: RequestId,
    ) -> Result<CausalToken, ClientFailure> {
        let request = ClientRequest::Write {
            id,
            ops,
            consistency,
            deadline_ms: None,
            after: None,
        };
        match self.request(&request).await? {
            ClientResponse::Written { token, .. } => {
                self.token.merge(&token);
                Ok(token)
            }
            other => Err(unexpected(other)),
        }
    }

    /// Reads a key, waiting up to `wait_ms` for this session's writes to be visible there.
    pub async fn read(&mut self, key: &[u8], wait_ms: u32) -> Result<Option<Read>, ClientFailure> {
        let request = ClientRequest::Read {
            key: key.to_vec(),
            token: Some(self.token.clone()),
            wait_ms,
        };
        match self.request(&request).await? {
            ClientResponse::Value { read } => {
                if let Some(r) = &read {
                    self.token.merge(&r.token);
                }
                Ok(read)
            }
            other => Err(unexpected(other)),
        }
    }

    /// The node's status.
    pub async fn status(&self) -> Result<NodeStatus, ClientFailure> {
        match self.request(&ClientRequest::Status).await? {
            ClientResponse::Status(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// What the node has applied.
    pub async fn applied(&self) -> Result<VersionVector, ClientFailure> {
        match self.request(&ClientRequest::Applied).await? {
            ClientResponse::Applied(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    /// The cluster's regions as the node knows them.
    pub async fn regions(&self) -> Result<RegionTable, ClientFailure> {
        match self.request(&ClientRequest::Regions).await? {
            ClientResponse::Regions(t) => Ok(t),
            other => Err(unexpected(other)),
        }
    }

    /// The region that should serve a client at `near`, as the node sees the cluster.
    pub async fn route(&self, near: Option<Location>) -> Result<RouteAnswer, ClientFailure> {
        match self.request(&ClientRequest::Route { near }).await? {
            ClientResponse::Route(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// Closes the connection: tells the node, and waits at most `CLOSE_WAIT` for it to hear
    /// (a connection to a node that froze has backed its timers off to seconds, and draining
    /// it fully took up to 20 s; the node forgets the connection by itself anyway).
    pub async fn close(self) {
        self.conn.close(quinn::VarInt::from_u32(0), b"bye");
        let _ = tokio::time::timeout(CLOSE_WAIT, self.endpoint.wait_idle()).await;
    }
}

/// The newest client protocol version.
const CLIENT_PROTOCOL_NEWEST: u8 = super::client_proto::CLIENT_PROTOCOL;

/// Longest wait for a closed connection to drain.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The wall clock, in milliseconds since the Unix epoch (what a node's clock is compared with).
pub(crate) fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A fresh request id (random; never the all-zero id, which asks for no deduplication).
/// Without the operating system's randomness, an id unique in this process (the time in
/// nanoseconds, the process id and a counter), with a warning: ids of two processes may then
/// collide, and a node would take the second request for a retry of the first.
pub fn new_request_id() -> RequestId {
    let mut id = [0u8; 16];
    if let Err(e) = getrandom::fill(&mut id) {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        tracing::warn!(error = %e, "no OS randomness for a request id: using the time, the process id and a counter");
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        id[..8].copy_from_slice(&nanos.to_le_bytes());
        id[8..12].copy_from_slice(&std::process::id().to_le_bytes());
        let n = COUNTER.fetch_add(1, Ordering::Relaxed) as u32;
        id[12..].copy_from_slice(&n.to_le_bytes());
    }
    id[0] |= 1;
    id
}

fn unexpected(answer: ClientResponse) -> ClientFailure {
    ClientFailure::Protocol(format!("unexpected answer {answer:?}"))
}
