//! The client service: one request per bidirectional stream, from clients whose certificate
//! names them and their role (`tls::client_identity`).
//!
//! Everything a client can make the node hold is bounded: connections per client identity,
//! requests at once and request bytes in flight per connection, the time to send a request,
//! the bytes of a scan page, the wait for a token (an asynchronous wait, woken when the
//! applied vector advances: no thread held per waiting read). Requests are rate-limited per
//! client identity with a token bucket whose map is pruned as it grows.

mod watch;

use super::actor::Event;
use super::primary::PrimaryBoard;
use super::regions::RegionBoard;
use super::requests_in_flight::{RequestsInFlight, NO_ID};
use super::tls::{cert_names, client_identity, peer_leaf, Role};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use meridian::limits::SCAN_BYTES_MAX;
use meridian::{Batch, CausalToken, Engine, Error, Once, RequestTag};
use meridian_client::client_proto::{
    decode_versioned, encode_at, Answer, ClientError, ClientRequest, ClientResponse, Consistency,
    ErrorCode, NodeStatus, RequestId, CLIENT_FRAME_BYTES_MAX, CLIENT_PROTOCOLS, WATCH_VARIANT,
};
use meridian_client::framing::{read_frame_body, read_frame_len, write_frame};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};

/// Longest backup path a node takes.
const BACKUP_PATH_BYTES_MAX: usize = 4096;
/// Longest a read waits for a causal token.
const TOKEN_WAIT_MS_MAX: u32 = 10_000;
/// Longest a write waits to be durable in the regions its consistency asks for; after it, the
/// outcome is `Unknown` (the write stays, and converges).
const DURABLE_WAIT: Duration = Duration::from_secs(5);
/// Requests served at once on one connection.
const STREAMS_PER_CONNECTION: usize = 64;
/// Bytes of requests read and not yet answered, per connection (a largest request fits).
const REQUEST_BYTES_IN_FLIGHT: usize = 2 * CLIENT_FRAME_BYTES_MAX;
/// Connections one client identity may hold at once.
pub(crate) const CONNECTIONS_PER_CLIENT_MAX: usize = 32;
/// Longest a client may take to send a request once it opened its stream.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Most rows in one scan page.
const SCAN_ROWS_MAX: u32 = 10_000;
/// Requests between two prunings of the rate limiter's map.
const PRUNE_EVERY_REQUESTS: u64 = 4_096;

/// Serves client connections for one engine.
pub(crate) struct Service {
    engine: Engine,
    /// Wakes token waits when the applied vector advances, for as long as the service lives.
    _applied_wake: meridian::Subscription,
    cluster: String,
    /// Certificate names of the cluster's replicas (this one and its peers) and the role their
    /// certificates get as clients (`None`: refused).
    replicas: Vec<(String, String)>,
    replica_role: Option<Role>,
    limiter: DefaultKeyedRateLimiter<String>,
    requests: AtomicU64,
    connections: Mutex<HashMap<String, usize>>,
    status: Arc<Mutex<NodeStatus>>,
    /// Woken when the applied vector advances, while some read waits for a token.
    applied: Arc<Notify>,
    waiting: Arc<AtomicUsize>,
    /// The cluster's regions: routes, and what peers acknowledged.
    regions: Arc<RegionBoard>,
    /// Writes applied recently, by client and request id.
    in_flight: RequestsInFlight,
    /// Active-passive: whether this node takes writes now.
    primary: Arc<PrimaryBoard>,
    /// The replication actor, for admin requests.
    events: tokio::sync::mpsc::Sender<Event>,
    /// Whether an operator cut the replication links (the links watch it).
    isolation: tokio::sync::watch::Sender<bool>,
}

/// Settings of the client service.
pub(crate) struct ServiceConfig {
    pub cluster: String,
    /// (replica name, certificate DNS name) of every replica of the cluster.
    pub replicas: Vec<(String, String)>,
    pub replica_role: Option<Role>,
    pub per_second: u32,
    pub burst: u32,
}

impl Service {
    pub(crate) fn new(
        engine: Engine,
        config: ServiceConfig,
        status: Arc<Mutex<NodeStatus>>,
        regions: Arc<RegionBoard>,
        primary: Arc<PrimaryBoard>,
        events: tokio::sync::mpsc::Sender<Event>,
        isolation: tokio::sync::watch::Sender<bool>,
    ) -> Service {
        let rate = NonZeroU32::new(config.per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let limiter = RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst));
        let applied = Arc::new(Notify::new());
        let waiting = Arc::new(AtomicUsize::new(0));
        let applied_wake = {
            let (applied, waiting) = (applied.clone(), waiting.clone());
            engine.on_applied(move || {
                if waiting.load(Ordering::SeqCst) > 0 {
                    applied.notify_waiters();
                }
            })
        };
        Service {
            engine,
            _applied_wake: applied_wake,
            cluster: config.cluster,
            replicas: config.replicas,
            replica_role: config.replica_role,
            limiter,
            requests: AtomicU64::new(0),
            connections: Mutex::new(HashMap::new()),
            status,
            applied,
            waiting,
            regions,
            in_flight: RequestsInFlight::new(),
            primary,
            events,
            isolation,
        }
    }

    /// Who the connection's certificate names, and its role: a client certificate, or a
    /// replica's when replicas may act as clients.
    fn identify(&self, conn: &quinn::Connection) -> Option<(String, Role)> {
        let leaf = peer_leaf(conn)?;
        if let Some(who) = client_identity(&leaf, &self.cluster) {
            return Some(who);
        }
        let role = self.replica_role?;
        self.replicas
            .iter()
            .find(|(_, dns)| cert_names(&leaf, dns))
            .map(|(name, _)| (format!("replica {name}"), role))
    }

    /// Counts a connection of `who`, if it may have one more.
    fn admit(self: &Arc<Self>, who: &str) -> Option<Admitted> {
        let mut connections = self.connections.lock().ok()?;
        let n = connections.entry(who.to_string()).or_default();
        if *n >= CONNECTIONS_PER_CLIENT_MAX {
            return None;
        }
        *n += 1;
        Some(Admitted {
            service: self.clone(),
            who: who.to_string(),
        })
    }

    /// Serves one client connection until it closes.
    pub(crate) async fn serve(self: Arc<Self>, conn: quinn::Connection) {
        let Some((who, role)) = self.identify(&conn) else {
            metrics::counter!("meridian_client_refused_total", "reason" => "identity").increment(1);
            conn.close(
                quinn::VarInt::from_u32(403),
                b"no client identity for this cluster in the certificate",
            );
            return;
        };
        let Some(_admitted) = self.admit(&who) else {
            metrics::counter!("meridian_client_refused_total", "reason" => "connections")
                .increment(1);
            conn.close(
                quinn::VarInt::from_u32(429),
                b"too many connections for this client",
            );
            return;
        };
        let streams = Arc::new(Semaphore::new(STREAMS_PER_CONNECTION));
        let budget = Arc::new(Semaphore::new(REQUEST_BYTES_IN_FLIGHT));
        let who = Arc::new(who);
        loop {
            let (mut send, mut recv) = match conn.accept_bi().await {
                Ok(s) => s,
                Err(_) => return,
            };
            let Ok(slot) = streams.clone().acquire_owned().await else {
                return;
            };
            let (this, budget, who) = (self.clone(), budget.clone(), who.clone());
            tokio::spawn(async move {
                let _slot = slot;
                let read = async {
                    let Some(len) = read_frame_len(&mut recv, CLIENT_FRAME_BYTES_MAX).await? else {
                        return Ok(None);
                    };
                    // Reserved before the bytes are allocated: a connection holds at most
                    // REQUEST_BYTES_IN_FLIGHT of requests.
                    let permits = u32::try_from(len.max(1)).unwrap_or(u32::MAX);
                    let permit = budget.acquire_many_owned(permits).await.ok();
                    let body = read_frame_body(&mut recv, len).await?;
                    Ok::<_, meridian_client::framing::FramingError>(Some((body, permit)))
                };
                // Answered in the request's version (the oldest this node speaks when the
                // request did not say one it does).
                let mut version = *CLIENT_PROTOCOLS.start();
                let response = match tokio::time::timeout(REQUEST_READ_TIMEOUT, read).await {
                    Ok(Ok(Some((bytes, permit)))) => {
                        if let Some(&v) = bytes.first().filter(|v| CLIENT_PROTOCOLS.contains(v)) {
                            version = v;
                        }
                        if bytes.get(1) == Some(&WATCH_VARIANT) {
                            // A watch answers on its stream until the client closes it; it
                            // holds its stream's slot, not the request bytes.
                            drop(permit);
                            this.watch(&who, role, version, &bytes, &mut send).await;
                            return;
                        }
                        this.respond(&who, role, &bytes).await
                    }
                    Ok(Ok(None)) => return,
                    Ok(Err(e)) => error(ErrorCode::BadRequest, e.to_string()),
                    Err(_) => error(ErrorCode::BadRequest, "the request did not arrive in time"),
                };
                let answer = Answer {
                    node_ms: this.engine.config().clock.now_ms(),
                    response,
                };
                if write_frame(&mut send, encode_at(version, &answer))
                    .await
                    .is_ok()
                {
                    let _ = send.finish();
                }
            });
        }
    }

    async fn respond(&self, who: &str, role: Role, bytes: &[u8]) -> ClientResponse {
        let request = match self.admit_request(who, role, bytes) {
            Ok(request) => request,
            Err(refused) => return *refused,
        };
        self.respond_admitted(who, request).await
    }

    /// A request's checks before it is carried out: the client's rate, the bytes, the version
    /// that carries it, the role it needs. The request, or the answer refusing it.
    pub(crate) fn admit_request(
        &self,
        who: &str,
        role: Role,
        bytes: &[u8],
    ) -> Result<ClientRequest, Box<ClientResponse>> {
        if self
            .requests
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(PRUNE_EVERY_REQUESTS)
        {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        if let Err(not_until) = self.limiter.check_key(&who.to_string()) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            metrics::counter!("meridian_client_rate_limited_total").increment(1);
            return Err(Box::new(ClientResponse::Error(ClientError {
                code: ErrorCode::RateLimited,
                message: "too many requests".into(),
                retry_after_ms: Some(wait.as_millis().max(1) as u64),
                primary: None,
                lost: None,
            })));
        }
        let (version, request): (u8, ClientRequest) = match decode_versioned(bytes) {
            Ok(r) => r,
            Err(e) => return Err(Box::new(error(ErrorCode::BadRequest, e))),
        };
        if request.min_version() > version {
            return Err(Box::new(error(
                ErrorCode::Unsupported,
                format!(
                    "this request needs client protocol {}; it came in {version}",
                    request.min_version()
                ),
            )));
        }
        let needed = needed_role(&request);
        if role < needed {
            metrics::counter!("meridian_client_refused_total", "reason" => "role").increment(1);
            return Err(Box::new(error(
                ErrorCode::Forbidden,
                format!("{who} has role {role}; this request needs {needed}"),
            )));
        }
        Ok(request)
    }

    /// Carries out an admitted request (`admit_request`).
    async fn respond_admitted(&self, who: &str, request: ClientRequest) -> ClientResponse {
        match request {
            ClientRequest::Status => {
                return ClientResponse::Status(
                    self.status.lock().map(|s| s.clone()).unwrap_or_default(),
                )
            }
            ClientRequest::Applied => return ClientResponse::Applied(self.engine.applied()),
            ClientRequest::Regions => return ClientResponse::Regions(self.regions.table()),
            ClientRequest::Route { near } => {
                if near.is_some_and(|n| !n.is_on_earth()) {
                    return error(ErrorCode::BadRequest, "near: not a place on Earth");
                }
                return ClientResponse::Route(self.regions.route(near.as_ref()));
            }
            ClientRequest::Promote => return self.promote().await,
            ClientRequest::SetMode { active_passive } => {
                return self.set_mode(active_passive).await
            }
            ClientRequest::Isolate { isolated } => return self.isolate(who, isolated),
            ClientRequest::Backup { path } => return self.backup(who, path).await,
            ClientRequest::Apply {
                id, consistency, ..
            }
            | ClientRequest::Write {
                id, consistency, ..
            } => return self.write(who, id, consistency, request).await,
            _ => {}
        }
        if let ClientRequest::Read {
            token: Some(token),
            wait_ms,
            ..
        }
        | ClientRequest::Scan {
            token: Some(token),
            wait_ms,
            ..
        } = &request
        {
            let wait = Duration::from_millis(u64::from((*wait_ms).min(TOKEN_WAIT_MS_MAX)));
            if let Err(refused) = self
                .wait_token(
                    token,
                    wait,
                    "this region has not yet applied the token's writes",
                )
                .await
            {
                return refused;
            }
        }
        let engine = self.engine.clone();
        let outcome = tokio::task::spawn_blocking(move || execute(&engine, request)).await;
        let response = outcome.unwrap_or_else(|e| error(ErrorCode::Unavailable, e.to_string()));
        let result = if matches!(response, ClientResponse::Error(_)) {
            "error"
        } else {
            "ok"
        };
        metrics::counter!("meridian_client_requests_total", "result" => result).increment(1);
        response
    }

    /// Applies a write once per request id, then waits until it is durable in the regions
    /// `consistency` asks for; refuses at once, writing nothing, when fewer are reachable.
    async fn write(
        &self,
        who: &str,
        id: RequestId,
        consistency: Consistency,
        request: ClientRequest,
    ) -> ClientResponse {
        let regions = self.regions.region_count();
        let needed = consistency.regions_needed(regions);
        if needed > regions {
            return error(
                ErrorCode::BadRequest,
                format!("the write asks for {needed} regions; the cluster has {regions}"),
            );
        }
        // A retry of a write applied here (or applied elsewhere and replicated here) gets its
        // token, whatever changed since (the lease, the links): answering "nothing was
        // written" would make the client apply it again elsewhere.
        let tag = request_tag(who, id);
        let earlier = match &tag {
            Some(tag) => self.request_outcome(tag).await,
            None => None,
        };
        let token = match earlier {
            Some(token) => {
                metrics::counter!("meridian_client_writes_deduplicated_total").increment(1);
                token
            }
            None => {
                if let Some(refused) = self.wait_after(&request).await {
                    return refused;
                }
                match self
                    .apply_once(who, id, tag, needed, regions, request)
                    .await
                {
                    Ok(token) => token,
                    Err(refused) => return refused,
                }
            }
        };
        let deadline = tokio::time::Instant::now() + DURABLE_WAIT;
        let durable = if needed > 1 {
            self.regions.wait_durable(&token, needed, deadline).await
        } else {
            self.regions.durable_regions(&token)
        };
        if durable < needed {
            metrics::counter!("meridian_client_writes_unknown_total").increment(1);
            return error(
                ErrorCode::Unknown,
                format!(
                    "written here, but known durable in {durable} of the {needed} regions asked for after {DURABLE_WAIT:?}; it is never rolled back and still reaches every region"
                ),
            );
        }
        ClientResponse::Written {
            token,
            regions: u32::try_from(durable).unwrap_or(u32::MAX),
        }
    }

    /// Asks the actor to make this replica primary.
    async fn promote(&self) -> ClientResponse {
        let (done, answer) = tokio::sync::oneshot::channel();
        if self.events.send(Event::Promote { done }).await.is_err() {
            return error(ErrorCode::Unavailable, "the node is stopping");
        }
        match answer.await {
            Ok(true) => ClientResponse::Done {
                message: "promotion started: this region becomes primary once a majority promises it the lease".into(),
            },
            Ok(false) => error(
                ErrorCode::InvalidOperation,
                "the cluster is active-active: there is no primary to promote",
            ),
            Err(_) => error(ErrorCode::Unavailable, "the node is stopping"),
        }
    }

    /// Cuts or restores the replication links.
    fn isolate(&self, who: &str, isolated: bool) -> ClientResponse {
        let was = self.isolation.send_replace(isolated);
        if let Ok(mut status) = self.status.lock() {
            status.isolated = isolated;
        }
        metrics::gauge!("meridian_isolated").set(if isolated { 1.0 } else { 0.0 });
        let message = match (was, isolated) {
            (false, true) => {
                tracing::warn!(by = %who, "replication links cut by an operator (isolate)");
                "isolated: replication links cut, clients still served (admin heal restores them)"
            }
            (true, false) => {
                tracing::warn!(by = %who, "replication links restored by an operator (heal)");
                "healed: replication links restored"
            }
            (true, true) => "already isolated",
            (false, false) => "not isolated: nothing to heal",
        };
        ClientResponse::Done {
            message: message.into(),
        }
    }

    /// Writes a consistent copy of the engine to `path` (on the blocking pool: it flushes
    /// and links files).
    async fn backup(&self, who: &str, path: String) -> ClientResponse {
        if path.is_empty() || path.len() > BACKUP_PATH_BYTES_MAX {
            return error(ErrorCode::BadRequest, "a backup path of 1 to 4096 bytes");
        }
        let engine = self.engine.clone();
        let target = std::path::PathBuf::from(&path);
        let made = tokio::task::spawn_blocking(move || {
            if target.exists() {
                return Err(format!(
                    "{} exists: back up into a new directory",
                    target.display()
                ));
            }
            engine.checkpoint(&target).map_err(|e| e.to_string())?;
            Ok(engine.applied())
        })
        .await;
        match made {
            Ok(Ok(applied)) => {
                tracing::warn!(by = %who, %path, %applied, "backup written");
                ClientResponse::Done {
                    message: format!("backup written to {path} (applied {applied})"),
                }
            }
            Ok(Err(why)) => error(ErrorCode::BadRequest, why),
            Err(e) => error(ErrorCode::Unavailable, e.to_string()),
        }
    }

    /// Asks the actor to switch modes.
    async fn set_mode(&self, active_passive: bool) -> ClientResponse {
        let (done, answer) = tokio::sync::oneshot::channel();
        let event = Event::SetMode {
            active_passive,
            done,
        };
        if self.events.send(event).await.is_err() {
            return error(ErrorCode::Unavailable, "the node is stopping");
        }
        match answer.await {
            Ok(Ok(())) => {}
            Ok(Err(why)) => return error(ErrorCode::Unavailable, why),
            Err(_) => return error(ErrorCode::Unavailable, "the node is stopping"),
        }
        let mode = if active_passive {
            "active-passive"
        } else {
            "active-active"
        };
        ClientResponse::Done {
            message: format!("this node is {mode}"),
        }
    }

    /// Applies a write not applied here yet: refused (nothing written) when this node is not
    /// the primary or too few regions are reachable; the lease is checked again just before
    /// the engine commits.
    async fn apply_once(
        &self,
        who: &str,
        id: RequestId,
        tag: Option<RequestTag>,
        needed: usize,
        regions: usize,
        request: ClientRequest,
    ) -> Result<meridian::CausalToken, ClientResponse> {
        self.primary.may_write().map_err(not_primary)?;
        let reachable = self.regions.reachable_regions();
        if needed > reachable {
            metrics::counter!("meridian_client_writes_refused_total", "reason" => "unavailable")
                .increment(1);
            return Err(error(
                ErrorCode::Unavailable,
                format!(
                    "the write asks for {needed} regions; {reachable} of {regions} are reachable from here: nothing was written"
                ),
            ));
        }
        let Some(_claimed) = self.in_flight.claim(who, id, DURABLE_WAIT).await else {
            // Not "nothing written": the earlier request may yet apply.
            return Err(error(
                ErrorCode::Unknown,
                "an earlier request with this id is still being applied here: it may apply",
            ));
        };
        let engine = self.engine.clone();
        let primary = self.primary.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            if let Some(late) = past_deadline(&request, engine.config().clock.now_ms()) {
                metrics::counter!("meridian_client_writes_refused_total", "reason" => "expired")
                    .increment(1);
                return late;
            }
            match primary.may_write() {
                Ok(()) => execute_once(&engine, tag.as_ref(), request),
                Err(holder) => not_primary(holder),
            }
        })
        .await;
        match outcome.unwrap_or_else(|e| error(ErrorCode::Unavailable, e.to_string())) {
            ClientResponse::Written { token, .. } => Ok(token),
            other => Err(other),
        }
    }

    /// The token of the write that answered request `tag`, if this region holds it.
    async fn request_outcome(&self, tag: &RequestTag) -> Option<meridian::CausalToken> {
        let engine = self.engine.clone();
        let tag = tag.clone();
        match tokio::task::spawn_blocking(move || engine.request_outcome(&tag)).await {
            Ok(Ok(found)) => found,
            // Unreadable: the write goes through the engine's own check (`write_once`).
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "reading a request tag failed");
                None
            }
            Err(_) => None,
        }
    }

    /// Waits until this region has applied what the session wrote or read of the write's keys
    /// (`After`), within the node's bound and the write's deadline (less the clock margin);
    /// the refusal, nothing written, when it has not.
    async fn wait_after(&self, request: &ClientRequest) -> Option<ClientResponse> {
        let (ClientRequest::Apply {
            after: Some(after),
            deadline_ms,
            ..
        }
        | ClientRequest::Write {
            after: Some(after),
            deadline_ms,
            ..
        }) = request
        else {
            return None;
        };
        let mut wait = Duration::from_millis(u64::from(after.wait_ms.min(TOKEN_WAIT_MS_MAX)));
        if let Some(deadline) = deadline_ms {
            let now = self.engine.config().clock.now_ms() + CLOCK_SKEW_MARGIN.as_millis() as u64;
            wait = wait.min(Duration::from_millis(deadline.saturating_sub(now)));
        }
        let refused = self
            .wait_token(
                &after.token,
                wait,
                "this region has not yet applied what the session wrote or read of these keys: nothing was written",
            )
            .await
            .err()?;
        metrics::counter!("meridian_client_writes_refused_total", "reason" => "not_yet_visible")
            .increment(1);
        Some(refused)
    }

    /// Waits, without a thread, up to `wait` until this region has applied `token`; the
    /// refusal when it has not: `Uncoverable` when no region can ever supply it, else
    /// `NotYetVisible` (`why`), at once when no reachable peer writes or holds what it lacks
    /// (its region is down or cut off from here: waiting would only delay the client's move
    /// to another region).
    async fn wait_token(
        &self,
        token: &CausalToken,
        wait: Duration,
        why: &str,
    ) -> Result<(), ClientResponse> {
        if self.engine.covers(token) {
            return Ok(());
        }
        let arriving = self.regions.may_supply(token, &self.engine.applied());
        if arriving && self.wait_covers(token, wait).await {
            return Ok(());
        }
        if let Some(refused) = self.uncoverable(token) {
            return Err(refused);
        }
        if !arriving {
            metrics::counter!("meridian_client_token_waits_skipped_total").increment(1);
            return Err(error(
                ErrorCode::NotYetVisible,
                format!("{why} (no region reachable from here holds it)"),
            ));
        }
        Err(error(ErrorCode::NotYetVisible, why))
    }

    /// The refusal of a token no region can ever cover (`RegionBoard::uncoverable`), when it
    /// is one.
    fn uncoverable(&self, token: &CausalToken) -> Option<ClientResponse> {
        let applied = self.engine.applied();
        let own = self.engine.origin_status().origin;
        let (origin, held, wanted) = self.regions.uncoverable(token, &applied, own)?;
        metrics::counter!("meridian_client_tokens_uncoverable_total").increment(1);
        Some(ClientResponse::Error(ClientError {
            code: ErrorCode::Uncoverable,
            message: format!(
                "writes {} to {wanted} of origin {origin} are held by no region (lost with a region's disk before they were shipped): this session can never see them; forget them to go on",
                held + 1
            ),
            retry_after_ms: None,
            primary: None,
            lost: Some((origin, held)),
        }))
    }

    /// Waits, without a thread, until the engine covers `token` or `wait` passes.
    async fn wait_covers(&self, token: &CausalToken, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _counted = Waiting(&self.waiting);
        loop {
            let notified = self.applied.notified();
            tokio::pin!(notified);
            // Registered before the check: an advance after it wakes this wait.
            notified.as_mut().enable();
            if self.engine.covers(token) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.engine.covers(token);
            }
        }
    }
}

/// A counted connection of one client; uncounted when dropped.
struct Admitted {
    service: Arc<Service>,
    who: String,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Ok(mut connections) = self.service.connections.lock() {
            if let Some(n) = connections.get_mut(&self.who) {
                *n -= 1;
                if *n == 0 {
                    connections.remove(&self.who);
                }
            }
        }
    }
}

/// Uncounts a token wait when it ends.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The answer of a node that is not the primary (`primary`: the replica that is, if known).
fn not_primary(primary: Option<String>) -> ClientResponse {
    metrics::counter!("meridian_client_writes_refused_total", "reason" => "not_primary")
        .increment(1);
    let named = primary.as_deref().unwrap_or("not known yet");
    ClientResponse::Error(ClientError {
        code: ErrorCode::NotPrimary,
        message: format!(
            "active-passive: this region is not the primary (primary: {named}); nothing was written"
        ),
        retry_after_ms: None,
        primary,
        lost: None,
    })
}

/// How far this node's clock may be behind a client's: a write is refused this long before
/// its deadline, so that once the client's clock passes the deadline (and it retries
/// elsewhere) this node no longer applies it.
const CLOCK_SKEW_MARGIN: Duration = Duration::from_millis(250);

/// The refusal of a write whose deadline is (about to be) past at `now_ms` (this node's
/// clock), checked just before it is applied.
fn past_deadline(request: &ClientRequest, now_ms: u64) -> Option<ClientResponse> {
    let (ClientRequest::Apply {
        deadline_ms: Some(deadline),
        ..
    }
    | ClientRequest::Write {
        deadline_ms: Some(deadline),
        ..
    }) = request
    else {
        return None;
    };
    let now = now_ms.saturating_add(CLOCK_SKEW_MARGIN.as_millis() as u64);
    (now > *deadline).then(|| {
        error(
            ErrorCode::Expired,
            format!(
                "the write reached this region {} ms after its deadline (within {CLOCK_SKEW_MARGIN:?} of clock margin): nothing was written",
                now - deadline
            ),
        )
    })
}

/// The role a request needs.
fn needed_role(request: &ClientRequest) -> Role {
    match request {
        ClientRequest::Apply { .. } | ClientRequest::Write { .. } => Role::Write,
        ClientRequest::Read { .. }
        | ClientRequest::Scan { .. }
        | ClientRequest::Status
        | ClientRequest::Applied
        | ClientRequest::Regions
        | ClientRequest::Route { .. }
        | ClientRequest::Watch { .. }
        | ClientRequest::FeedAck { .. }
        | ClientRequest::FeedDrop { .. }
        | ClientRequest::ExpiresAt { .. } => Role::Read,
        ClientRequest::Promote
        | ClientRequest::SetMode { .. }
        | ClientRequest::Isolate { .. }
        | ClientRequest::Backup { .. } => Role::Admin,
    }
}

fn error(code: ErrorCode, message: impl Into<String>) -> ClientResponse {
    ClientResponse::Error(ClientError {
        code,
        message: message.into(),
        retry_after_ms: None,
        primary: None,
        lost: None,
    })
}

fn from_engine(e: Error) -> ClientResponse {
    let code = match &e {
        Error::InvalidKey(_) => ErrorCode::InvalidKey,
        Error::ValueTooLarge { .. }
        | Error::RecordTooLarge { .. }
        | Error::BatchTooLarge { .. } => ErrorCode::ValueTooLarge,
        Error::WrongType { .. } => ErrorCode::WrongType,
        Error::InvalidOperation(_) | Error::CounterOverflow { .. } | Error::InvalidToken(_) => {
            ErrorCode::InvalidOperation
        }
        Error::Corrupt { .. } | Error::FutureVersion { .. } => ErrorCode::Corrupt,
        Error::ContextAhead { .. } => ErrorCode::NotYetVisible,
        // Nothing written: the next region takes it.
        Error::Fenced { .. } => ErrorCode::Unavailable,
        _ => ErrorCode::Unavailable,
    };
    error(code, e.to_string())
}

/// A failed write's answer: a storage failure may have left the batch written (the engine
/// then refuses every later write), so its outcome is unknown.
fn from_failed_write(e: Error) -> ClientResponse {
    match e {
        Error::Storage(_) => error(ErrorCode::Unknown, e.to_string()),
        e => from_engine(e),
    }
}

/// The engine's tag of request `id` of client `who` (`None` for `NO_ID`). An identity longer
/// than a tag holds is named by a hash of it (the same in every region).
fn request_tag(who: &str, id: RequestId) -> Option<RequestTag> {
    if id == NO_ID {
        return None;
    }
    RequestTag::new(who, id).or_else(|| {
        let hash = meridian_core::model::digest::key_hash(who.as_bytes());
        RequestTag::new(&format!("#{hash:016x}"), id)
    })
}

/// Applies a write once per request tag: a write tagged so already held answers it.
fn execute_once(
    engine: &Engine,
    tag: Option<&RequestTag>,
    request: ClientRequest,
) -> ClientResponse {
    let Some(tag) = tag else {
        return execute(engine, request);
    };
    let batch = match request {
        ClientRequest::Apply { key, op, .. } => Batch::new().op(key, op),
        ClientRequest::Write { ops, .. } => {
            ops.into_iter().fold(Batch::new(), |b, (k, op)| b.op(k, op))
        }
        other => return execute(engine, other),
    };
    match engine.write_once(tag, batch) {
        Ok(Once::Applied(token)) => ClientResponse::Written { token, regions: 1 },
        Ok(Once::Earlier(token)) => {
            metrics::counter!("meridian_client_writes_deduplicated_total").increment(1);
            ClientResponse::Written { token, regions: 1 }
        }
        Err(e) => from_failed_write(e),
    }
}

fn execute(engine: &Engine, request: ClientRequest) -> ClientResponse {
    match request {
        ClientRequest::Apply { key, op, .. } => match engine.apply(&key, op) {
            Ok(token) => ClientResponse::Written { token, regions: 1 },
            Err(e) => from_failed_write(e),
        },
        ClientRequest::Write { ops, .. } => {
            let batch = ops.into_iter().fold(Batch::new(), |b, (k, op)| b.op(k, op));
            match engine.write(batch) {
                Ok(token) => ClientResponse::Written { token, regions: 1 },
                Err(e) => from_failed_write(e),
            }
        }
        // A token was waited for before: the read itself does not wait.
        ClientRequest::Read { key, .. } => match engine.read(&key) {
            Ok(read) => ClientResponse::Value { read },
            Err(e) => from_engine(e),
        },
        ClientRequest::Scan {
            prefix,
            limit,
            after,
            ..
        } => {
            let limit = limit.min(SCAN_ROWS_MAX) as usize;
            match engine.scan_prefix_page(&prefix, after.as_deref(), limit, SCAN_BYTES_MAX) {
                Ok((rows, more)) => ClientResponse::Rows { rows, more },
                Err(e) => from_engine(e),
            }
        }
        ClientRequest::FeedAck { name, token } => match engine.ack_feed(&name, &token) {
            Ok(()) => ClientResponse::Done {
                message: format!("feed {name} acknowledged"),
            },
            Err(e) => from_engine(e),
        },
        ClientRequest::ExpiresAt { key } => match engine.expires_at(&key) {
            Ok(at) => ClientResponse::ExpiresAt {
                at_ms: at.map(unix_ms),
            },
            Err(e) => from_engine(e),
        },
        ClientRequest::FeedDrop { name } => match engine.drop_feed(&name) {
            Ok(()) => ClientResponse::Done {
                message: format!("feed {name} forgotten"),
            },
            Err(e) => from_engine(e),
        },
        ClientRequest::Watch { .. } => error(
            ErrorCode::BadRequest,
            "a watch is served on a stream of its own",
        ),
        ClientRequest::Status
        | ClientRequest::Applied
        | ClientRequest::Regions
        | ClientRequest::Route { .. }
        | ClientRequest::Promote
        | ClientRequest::SetMode { .. }
        | ClientRequest::Isolate { .. }
        | ClientRequest::Backup { .. } => error(
            ErrorCode::BadRequest,
            "answered by the service, not the engine",
        ),
    }
}

/// A wall time as Unix milliseconds (0 before the epoch).
fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(deadline_ms: Option<u64>) -> ClientRequest {
        ClientRequest::Apply {
            id: [1; 16],
            key: b"k".to_vec(),
            op: meridian::Op::LwwSet {
                value: b"v".to_vec(),
            },
            consistency: Consistency::Local,
            deadline_ms,
            after: None,
        }
    }

    #[test]
    fn a_write_past_its_deadline_is_refused_before_it_is_applied() {
        let now = 1_000_000;
        assert_eq!(past_deadline(&put(None), now), None, "no deadline");
        assert_eq!(past_deadline(&put(Some(now + 10_000)), now), None);
        assert!(matches!(
            past_deadline(&put(Some(now - 1_000)), now),
            Some(ClientResponse::Error(ClientError {
                code: ErrorCode::Expired,
                ..
            }))
        ));
        // Within the clock margin counts as past.
        assert!(past_deadline(&put(Some(now + 100)), now).is_some());
    }
}
