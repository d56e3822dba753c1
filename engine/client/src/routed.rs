//! A client of the whole cluster: it learns the regions from one or two seeds, tries them
//! nearest-healthy first (`meridian_core::routing`), fails over when a region does not answer and
//! fails back when the nearer one answers again, and keeps one session token across regions
//! (read-your-writes after a failover).
//!
//! A context-dependent write (`Op::depends_on_seen`: removals, deletes, register writes with
//! a read context) carries what the session wrote or read of its keys (`SessionKeys`), and a
//! region applies it only once it has applied that: a delete covers the session's own earlier
//! write of the key even when it is served by another region than that write. A region that
//! has not yet answers `NotYetVisible` (nothing written) and the next region is asked.
//!
//! Writes carry a request id, so a region never applies one twice. A write whose outcome is
//! unknown (the connection broke after it was sent, or it timed out) is retried in the next
//! region only if applying it twice changes nothing (`Op::is_idempotent`); otherwise the caller
//! gets [`RoutedError::Unknown`], never a silent double count.
//!
//! Calls take `&self` and run concurrently on one client (share it behind an `Arc`): each
//! request is a stream of its own on a region's connection. The session (its token, what it
//! wrote or read of each key) and each region's state (breaker, round trip, connection, clock)
//! sit behind short locks never held across an await: a call waits for every write this client
//! had acknowledged before it started, and every answer is taken into the session.

use crate::client::{new_request_id, wall_ms, Client, ClientFailure};
use crate::client_proto::{
    After, ClientRequest, ClientResponse, Consistency, ErrorCode, NodeStatus, RegionEntry,
    RouteAnswer,
};
use crate::tls::replica_dns_name;
use crate::TlsFiles;
use meridian_core::model::{CausalToken, Op, OriginId, VersionVector};
use meridian_core::read::Read;
use meridian_core::routing::{
    attempt_budget_ms, order_regions, smoothed_rtt, Answer, Breaker, BreakerSettings, Candidate,
    ClockOffset, ClockSample, Health, Location, SessionKeys, Step, UnknownCause, WriteCall,
    WriteOutcome,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How long a majority read waits, once a majority of regions gave their applied vectors, for
/// the others' (each serving region's token is built from a majority that includes it).
const MAJORITY_READ_GRACE: Duration = Duration::from_millis(100);

/// The key a session's wait is read at before a scan, in a region whose scans carry no token.
const SESSION_WAIT_KEY: &[u8] = b"\0";

/// Whether an attempt ended in `Unsupported` (the region's protocol cannot carry the request).
fn unsupported(attempt: &Attempt<ClientResponse>) -> bool {
    matches!(
        attempt,
        Attempt::Fail(RoutedError::Refused {
            failure: ClientFailure::Server(e),
            ..
        }) if e.code == ErrorCode::Unsupported
    )
}

/// Why a read no region served failed: every region that answered lacked the session's
/// writes, or none could serve.
fn read_failed(not_yet: bool, why: &[String]) -> RoutedError {
    if not_yet {
        RoutedError::NotYetVisible
    } else {
        RoutedError::NoRegion(why.join("; "))
    }
}

/// How many writes `theirs` holds that `own` lacks.
fn lacking(own: &VersionVector, theirs: &VersionVector) -> u64 {
    theirs
        .iter()
        .map(|(origin, n)| n.saturating_sub(own.get(origin)))
        .sum()
}

/// A key and what it holds, as a scan page carries it.
pub type ScanRow = (Vec<u8>, Read);
/// A node to learn the cluster from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    /// Replica name.
    pub name: String,
    /// Region name.
    pub region: String,
    /// Its QUIC address.
    pub address: SocketAddr,
}

/// How a routed client behaves.
#[derive(Clone, Debug)]
pub struct RoutedConfig {
    /// Cluster id.
    pub cluster: String,
    /// Nodes to learn the regions from, tried in order.
    pub seeds: Vec<Seed>,
    /// The client's certificate files.
    pub tls: TlsFiles,
    /// Where the client is (orders regions by distance until round trips are measured).
    pub near: Option<Location>,
    /// When a region is skipped, and for how long.
    pub breaker: BreakerSettings,
    /// Longest wait for a connection to a region.
    pub connect_timeout: Duration,
    /// Longest wait for one answer from a region that is alive (beyond it the region counts
    /// as failed; a write's outcome is then unknown).
    pub request_timeout: Duration,
    /// How long a connection lives without hearing from its region: a region that stops
    /// answering (dead, frozen, cut off) is left after this long. A write's attempt must
    /// start applying within this plus two round trips (its deadline, in the region's clock as
    /// measured from its answers), and after a lost answer the next region is asked only once
    /// that has passed, so a region never applies a write after the client moved on.
    pub liveness: Duration,
    /// Longest a region waits for the session's writes before a read moves to the next one.
    pub session_wait_ms: u32,
    /// A read that has no answer after this long is sent to the next region too, and the
    /// first answer wins (`None`: no hedging).
    pub hedge_after: Option<Duration>,
    /// Keys whose session context is kept apart (beyond, the least recently used share
    /// hashed buckets: their writes may wait for more than they need, never for less).
    pub session_keys: usize,
}

impl RoutedConfig {
    /// Defaults for a cluster: 1 s to connect, 15 s per answer from a live region, 1 s of
    /// liveness, 1 s of session wait per region, no hedging, 4,096 keys' session contexts
    /// kept apart.
    pub fn new(cluster: &str, seeds: Vec<Seed>, tls: TlsFiles) -> RoutedConfig {
        RoutedConfig {
            cluster: cluster.into(),
            seeds,
            tls,
            near: None,
            breaker: BreakerSettings::default(),
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(15),
            liveness: crate::tls::CLIENT_LIVENESS,
            session_wait_ms: 1_000,
            hedge_after: None,
            session_keys: 4_096,
        }
    }
}

/// Why a routed call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RoutedError {
    /// No region answered (each attempt said why).
    #[error("no region could serve the request: {0}")]
    NoRegion(String),
    /// The write may or may not have been applied (a region took it and then did not answer,
    /// or it is not known durable in the regions asked for). It is never rolled back; a
    /// non-idempotent write is not retried elsewhere, so it is applied at most once.
    #[error("outcome unknown in {region}: {message}")]
    Unknown {
        /// The region that may hold it.
        region: String,
        /// What happened.
        message: String,
    },
    /// No region had applied the session's writes within its wait (for a write: what the
    /// session wrote or read of its keys; nothing was written).
    #[error("no region has applied this session's writes yet")]
    NotYetVisible,
    /// No region can ever supply some of the session's writes (lost with a region's disk
    /// before any other region held them): every later read and dependent write would wait
    /// for them in vain. `forget_lost(origin, held)` lets the session go on without them.
    #[error("{region}: writes of origin {origin} beyond {held} are lost: no region holds them")]
    Uncoverable {
        /// The region that found it.
        region: String,
        /// The origin whose writes are lost.
        origin: OriginId,
        /// The last of its writes any region holds.
        held: u64,
    },
    /// A region refused the request itself (bad key, wrong type, role, rate...): another
    /// region would refuse it too.
    #[error("{region}: {failure}")]
    Refused {
        /// The region that answered.
        region: String,
        /// Its answer.
        failure: ClientFailure,
    },
}

/// A write acknowledged by the cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct Written {
    /// The write's token (merged into the session's).
    pub token: CausalToken,
    /// The region that took it.
    pub region: String,
    /// An earlier attempt's answer was lost (an idempotent write retried here): that region
    /// may have applied it too, under another dot, which reaches this region later. A removal
    /// or delete made meanwhile here covers only what this region had seen.
    pub retried_after_lost: bool,
}

/// One region as the client sees it: its entry in the table, and what calls learn of it.
struct Region {
    entry: RegionEntry,
    server_name: String,
    state: Mutex<RegionState>,
}

/// What calls learn of a region (locked briefly, never across an await).
struct RegionState {
    breaker: Breaker,
    rtt_ms: Option<f64>,
    /// Shared by every call (one stream per request); the first connection that lands is kept.
    conn: Option<Client>,
    /// Its clock as its answers show it.
    clock: ClockOffset,
}

/// What the session holds (locked briefly, never across an await).
struct Session {
    /// Everything this session wrote or read.
    token: CausalToken,
    /// What it wrote or read of each key.
    keys: SessionKeys,
    /// What the last `RoutedError::Uncoverable` named.
    last_lost: Option<(OriginId, u64)>,
    /// The region that answered last.
    last_region: Option<String>,
}

/// `mutex` locked (a panic elsewhere while it was held leaves nothing half-done in it: every
/// update under these locks is a single step).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What one attempt in one region came to.
enum Attempt<T> {
    Done(T),
    /// Not applied; the next region may serve it.
    Next(String),
    /// The region has not applied the session's writes yet; the next may have.
    NotYet(String),
    /// Active-passive: the region is not the primary; this one is (when it knows).
    Redirect(String, Option<String>),
    /// Sent, and then no answer: applied or not.
    Lost(String),
    /// Final.
    Fail(RoutedError),
}

/// A client of the cluster's nearest healthy region; its calls take `&self` and run
/// concurrently (share it behind an `Arc`).
pub struct RoutedClient {
    config: RoutedConfig,
    /// The region table (replaced only by `refresh_regions`, which takes `&mut self`: the
    /// indices a call holds stay valid for its length).
    regions: Vec<Region>,
    clock: Instant,
    /// What the session wrote or read, in all and of each key (add another session's with
    /// `merge_token`, so that writes wait for it too), and what its last answers said.
    session: Mutex<Session>,
}

impl RoutedClient {
    /// Learns the cluster's regions from the first seed that answers.
    pub async fn connect(config: RoutedConfig) -> Result<RoutedClient, RoutedError> {
        let mut client = RoutedClient {
            regions: Vec::new(),
            clock: Instant::now(),
            session: Mutex::new(Session {
                token: CausalToken::default(),
                keys: SessionKeys::new(config.session_keys),
                last_lost: None,
                last_region: None,
            }),
            config,
        };
        client.refresh_regions().await?;
        Ok(client)
    }

    fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    /// Region `i`'s state, locked (never across an await).
    fn state(&self, i: usize) -> MutexGuard<'_, RegionState> {
        lock(&self.regions[i].state)
    }

    /// The session, locked (never across an await).
    fn session(&self) -> MutexGuard<'_, Session> {
        lock(&self.session)
    }

    /// Asks the known regions (or the seeds) for the region table again.
    pub async fn refresh_regions(&mut self) -> Result<(), RoutedError> {
        let mut targets: Vec<(String, String, SocketAddr)> = self
            .regions
            .iter()
            .map(|r| {
                (
                    r.entry.name.clone(),
                    r.entry.region.clone(),
                    r.entry.address,
                )
            })
            .collect();
        targets.extend(
            self.config
                .seeds
                .iter()
                .map(|s| (s.name.clone(), s.region.clone(), s.address)),
        );
        let mut why = Vec::new();
        for (name, region, address) in targets {
            let server_name = replica_dns_name(&self.config.cluster, &name, &region);
            let connecting = Client::connect_with(
                address,
                &server_name,
                &self.config.tls,
                self.config.liveness,
            );
            let client = match tokio::time::timeout(self.config.connect_timeout, connecting).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    why.push(format!("{name} at {address}: {e}"));
                    continue;
                }
                Err(_) => {
                    why.push(format!("{name} at {address}: no connection in time"));
                    continue;
                }
            };
            let started = Instant::now();
            let table =
                match tokio::time::timeout(self.config.request_timeout, client.regions()).await {
                    Ok(Ok(t)) => t,
                    Ok(Err(e)) => {
                        why.push(format!("{name}: {e}"));
                        continue;
                    }
                    Err(_) => {
                        why.push(format!("{name}: no answer in time"));
                        continue;
                    }
                };
            let sample = started.elapsed().as_secs_f64() * 1_000.0;
            self.adopt(table.regions, &name, client, sample);
            self.measure_regions().await;
            return Ok(());
        }
        Err(RoutedError::NoRegion(why.join("; ")))
    }

    /// Takes a region table, keeping breakers, round trips and connections of regions it
    /// knew.
    fn adopt(&mut self, table: Vec<RegionEntry>, answered_by: &str, conn: Client, rtt: f64) {
        let mut old = std::mem::take(&mut self.regions);
        for entry in table {
            let kept = old
                .iter()
                .position(|r| r.entry.name == entry.name)
                .map(|i| old.swap_remove(i));
            let server_name = replica_dns_name(&self.config.cluster, &entry.name, &entry.region);
            let mut region = kept.unwrap_or_else(|| Region {
                entry: entry.clone(),
                server_name: server_name.clone(),
                state: Mutex::new(RegionState {
                    breaker: Breaker::new(self.config.breaker),
                    rtt_ms: None,
                    conn: None,
                    clock: ClockOffset::default(),
                }),
            });
            let state = region
                .state
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner);
            if region.entry.address != entry.address {
                state.conn = None;
            }
            if entry.name == answered_by {
                state.conn = Some(conn.clone());
                sample_rtt(&mut state.rtt_ms, rtt);
            }
            region.entry = entry;
            region.server_name = server_name;
            self.regions.push(region);
        }
    }

    /// Connects to every region at once and times one small request to each: the round trips
    /// that order regions (a region that does not answer in time stays unmeasured, and its
    /// breaker opens).
    pub async fn measure_regions(&self) {
        let mut probes = tokio::task::JoinSet::new();
        for (i, r) in self.regions.iter().enumerate() {
            let (address, name, tls) = (
                r.entry.address,
                r.server_name.clone(),
                self.config.tls.clone(),
            );
            let existing = self.state(i).conn.clone();
            let (connect_timeout, timeout, liveness) = (
                self.config.connect_timeout,
                self.config.request_timeout,
                self.config.liveness,
            );
            probes.spawn(async move {
                let conn = match existing {
                    Some(c) => c,
                    None => {
                        let connecting = Client::connect_with(address, &name, &tls, liveness);
                        match tokio::time::timeout(connect_timeout, connecting).await {
                            Ok(Ok(c)) => c,
                            _ => return (i, None),
                        }
                    }
                };
                let started = Instant::now();
                let asked = conn.request_sampled(&ClientRequest::Applied);
                match tokio::time::timeout(timeout, asked).await {
                    Ok((Ok(ClientResponse::Applied(_)), clock)) => {
                        let rtt = started.elapsed().as_secs_f64() * 1_000.0;
                        (i, Some((conn, rtt, clock)))
                    }
                    _ => (i, None),
                }
            });
        }
        while let Some(joined) = probes.join_next().await {
            let Ok((i, outcome)) = joined else { continue };
            match outcome {
                Some((conn, sample, clock)) => {
                    self.keep_first(i, conn);
                    let mut r = self.state(i);
                    sample_rtt(&mut r.rtt_ms, sample);
                    if let Some(clock) = clock {
                        r.clock.sample(clock);
                    }
                    r.breaker.on_success();
                }
                None => self.failed(i),
            }
        }
    }

    /// The regions in the order this client tries them now.
    pub fn route(&self) -> RouteAnswer {
        let now = self.now_ms();
        let candidates: Vec<Candidate> = self
            .regions
            .iter()
            .map(|r| {
                let state = lock(&r.state);
                Candidate {
                    region: r.entry.region.clone(),
                    location: r.entry.location,
                    rtt_ms: state.rtt_ms,
                    health: Health::of(&state.breaker, now),
                }
            })
            .collect();
        let order = order_regions(&candidates, self.config.near.as_ref());
        RouteAnswer {
            region: order.first().map(|r| r.region.clone()).unwrap_or_default(),
            order,
        }
    }

    /// Region indices in the order to try: those whose breaker lets a request go, then
    /// (when none does) every region anyway, nearest first. A half-open breaker's probe is
    /// taken when its region is tried (`attempt`), not here.
    fn plan(&self) -> Vec<usize> {
        let now = self.now_ms();
        let order: Vec<usize> = self.route().order.iter().map(|r| r.index).collect();
        let allowed: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&i| self.state(i).breaker.may_try(now))
            .collect();
        if allowed.is_empty() {
            order
        } else {
            allowed
        }
    }

    /// A connection to region `i` (made outside the lock when there is none: when calls
    /// connect at once, the first connection that lands is kept and the others dropped).
    async fn conn(&self, i: usize) -> Result<Client, String> {
        let existing = self.state(i).conn.clone();
        if let Some(c) = existing {
            if !c.is_closed() {
                return Ok(c);
            }
            // Gone (the node restarted, perhaps speaking a newer version): connect again, and
            // forget it unless another call has replaced it meanwhile.
            let mut state = self.state(i);
            if state
                .conn
                .as_ref()
                .is_some_and(|kept| kept.same_connection(&c))
            {
                state.conn = None;
            }
        }
        let r = &self.regions[i];
        let connecting = Client::connect_with(
            r.entry.address,
            &r.server_name,
            &self.config.tls,
            self.config.liveness,
        );
        match tokio::time::timeout(self.config.connect_timeout, connecting).await {
            Ok(Ok(c)) => Ok(self.keep_first(i, c)),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no connection in time".into()),
        }
    }

    /// Keeps `conn` as region `i`'s connection unless another call's landed first; the one
    /// kept (a connection dropped is closed, outside the lock).
    fn keep_first(&self, i: usize, conn: Client) -> Client {
        let mut state = self.state(i);
        if let Some(first) = &state.conn {
            let first = first.clone();
            drop(state);
            return first;
        }
        state.conn = Some(conn.clone());
        conn
    }

    /// Region `i`'s name.
    pub(crate) fn region_name(&self, i: usize) -> String {
        self.regions[i].entry.region.clone()
    }

    /// Regions to try in order (`plan`), for calls outside this file (the watch).
    pub(crate) fn regions_to_try(&self) -> Vec<usize> {
        self.plan()
    }

    /// A connection to region `i` (`conn`), taking a half-open breaker's probe.
    pub(crate) async fn region_conn(&self, i: usize) -> Result<Client, String> {
        let now = self.now_ms();
        self.state(i).breaker.try_acquire(now);
        self.conn(i).await
    }

    /// Region `i` failed a call (`failed`).
    pub(crate) fn region_failed(&self, i: usize) {
        self.failed(i);
    }

    /// Follows the changes to keys under `prefix` after `from` (after what the serving region
    /// applied when `None`) across the cluster: from the nearest region that serves it, and
    /// from the next one, resumed from the last position received, when that region fails or
    /// goes silent for `feed::WATCH_SILENCE`. With `name`, each region's named feed of that
    /// name (its acknowledged position holds that region's log: `ack_feed`). The positions
    /// received join the session's token.
    pub fn watch(
        &self,
        prefix: &[u8],
        from: Option<CausalToken>,
        name: Option<String>,
    ) -> super::feed::RoutedWatch<&RoutedClient> {
        super::feed::RoutedWatch::new(self, prefix, from, name)
    }

    /// Acknowledges `token` for the named feed `name` in every region that answers (a
    /// region's named feed holds only its own log: acknowledged everywhere, the feed resumes
    /// in whichever region serves it next without a reset); returns how many regions took
    /// it, and fails only when none did.
    pub async fn ack_feed(&self, name: &str, token: &CausalToken) -> Result<usize, RoutedError> {
        let request = ClientRequest::FeedAck {
            name: name.to_string(),
            token: token.clone(),
        };
        self.to_every_region(request).await
    }

    /// Forgets the named feed `name` in every region that answers (its position no longer
    /// holds their logs); returns how many did, failing only when none did.
    pub async fn drop_feed(&self, name: &str) -> Result<usize, RoutedError> {
        let request = ClientRequest::FeedDrop {
            name: name.to_string(),
        };
        self.to_every_region(request).await
    }

    /// Sends `request` (answered `Done`) to every region at once; how many took it.
    async fn to_every_region(&self, request: ClientRequest) -> Result<usize, RoutedError> {
        let mut why = Vec::new();
        let mut asks = tokio::task::JoinSet::new();
        // Regions whose breaker lets a request go (every region when none does).
        for i in self.plan() {
            match self.conn(i).await {
                Ok(c) => {
                    let request = request.clone();
                    let timeout = self.config.request_timeout;
                    asks.spawn(async move {
                        let answer = tokio::time::timeout(timeout, c.request(&request)).await;
                        (i, answer)
                    });
                }
                Err(e) => {
                    self.failed(i);
                    why.push(format!("{}: {e}", self.region_name(i)));
                }
            }
        }
        let mut took = 0;
        let mut refused: Option<(String, ClientFailure)> = None;
        while let Some(answer) = asks.join_next().await {
            let Ok((i, answer)) = answer else { continue };
            match answer {
                Ok(Ok(ClientResponse::Done { .. })) => took += 1,
                Ok(Ok(other)) => why.push(format!(
                    "{}: unexpected answer {other:?}",
                    self.region_name(i)
                )),
                // A region of an older release has no named feeds: the others do.
                Ok(Err(ClientFailure::Server(e))) if e.code == ErrorCode::Unsupported => {
                    why.push(format!("{}: {}", self.region_name(i), e.message));
                }
                // The request itself is wrong: every region would refuse it.
                Ok(Err(ClientFailure::Server(e)))
                    if super::feed::refused_everywhere(e.code) && refused.is_none() =>
                {
                    refused = Some((self.region_name(i), ClientFailure::Server(e)));
                }
                // This region's own refusal (unavailable, rate-limited...): the others count.
                Ok(Err(ClientFailure::Server(e))) => {
                    why.push(format!(
                        "{}: {:?}: {}",
                        self.region_name(i),
                        e.code,
                        e.message
                    ));
                }
                Ok(Err(e)) => {
                    self.failed(i);
                    why.push(format!("{}: {e}", self.region_name(i)));
                }
                Err(_) => {
                    self.failed(i);
                    why.push(format!("{}: no answer in time", self.region_name(i)));
                }
            }
        }
        if took == 0 {
            return Err(match refused {
                Some((region, failure)) => RoutedError::Refused { region, failure },
                None => RoutedError::NoRegion(why.join("; ")),
            });
        }
        Ok(took)
    }

    fn failed(&self, i: usize) {
        let now = self.now_ms();
        let mut r = self.state(i);
        r.breaker.on_failure(now);
        r.conn = None;
    }

    /// Sends `request` (not a write) to region `i` and sorts the outcome.
    async fn attempt(&self, i: usize, request: &ClientRequest) -> Attempt<ClientResponse> {
        let name = self.regions[i].entry.region.clone();
        let now = self.now_ms();
        // Takes a half-open breaker's probe (when every region is down, it is tried anyway).
        self.state(i).breaker.try_acquire(now);
        let conn = match self.conn(i).await {
            Ok(c) => c,
            Err(e) => {
                self.failed(i);
                return Attempt::Next(format!("{name}: {e}"));
            }
        };
        let started = Instant::now();
        let answer =
            tokio::time::timeout(self.config.request_timeout, conn.request_sampled(request)).await;
        if matches!(answer, Ok((Ok(_), _))) {
            let sample = started.elapsed().as_secs_f64() * 1_000.0;
            sample_rtt(&mut self.state(i).rtt_ms, sample);
        }
        self.settle_sampled(i, answer)
    }

    /// Sends the write `request` to region `i`, stamped with the deadline `call` gives it
    /// once connected, and says what the answer means.
    async fn attempt_write(
        &self,
        i: usize,
        request: &ClientRequest,
        call: &mut WriteCall,
    ) -> Answer<CausalToken, RoutedError> {
        let name = self.regions[i].entry.region.clone();
        let now = self.now_ms();
        // Takes a half-open breaker's probe (when every region is down, it is tried anyway).
        self.state(i).breaker.try_acquire(now);
        let conn = match self.conn(i).await {
            Ok(c) => c,
            Err(e) => {
                self.failed(i);
                return Answer::NotServed(format!("{name}: {e}"));
            }
        };
        // A write may start applying only until this client gives up on it: a region that
        // gets to it after that (it froze with the request queued, its clock lags) refuses it
        // rather than apply it behind a retry made elsewhere.
        let wall = wall_ms();
        let budget = self.attempt_budget_ms(i);
        let offset = self.state(i).clock.estimate(wall);
        let deadline = call.sent(self.now_ms(), wall, budget, offset);
        let stamped = with_deadline(request, deadline);
        let answer =
            tokio::time::timeout(self.config.request_timeout, conn.request_sampled(&stamped)).await;
        match self.settle_sampled(i, answer) {
            Attempt::Done(ClientResponse::Written { token, .. }) => Answer::Written(token),
            Attempt::Done(other) => Answer::NotServed(format!("unexpected answer {other:?}")),
            Attempt::Next(reason) => Answer::NotServed(reason),
            Attempt::NotYet(reason) => Answer::NotYetVisible(reason),
            Attempt::Redirect(reason, primary) => {
                Answer::NotPrimary(reason, self.region_index(&primary))
            }
            Attempt::Lost(reason) => Answer::Lost(reason),
            Attempt::Fail(e @ RoutedError::Unknown { .. }) => Answer::Unknown(e),
            Attempt::Fail(e) => Answer::Refused(e),
        }
    }

    /// How long an attempt of a write at region `i` may take to start applying
    /// (`attempt_budget_ms`: the liveness and two round trips, the connection's timeout when
    /// no round trip is known, at most the request timeout).
    fn attempt_budget_ms(&self, i: usize) -> u64 {
        attempt_budget_ms(
            self.config.liveness.as_millis() as u64,
            self.state(i).rtt_ms,
            self.config.connect_timeout.as_millis() as u64,
            self.config.request_timeout.as_millis() as u64,
        )
    }

    /// Applies `op` to `key`, acknowledged once durable in the regions `consistency` asks
    /// for, in the nearest region that takes it.
    pub async fn apply(
        &self,
        key: &[u8],
        op: Op,
        consistency: Consistency,
    ) -> Result<Written, RoutedError> {
        let idempotent = op.is_idempotent();
        let after = self.after(std::iter::once((key, &op)));
        let request = ClientRequest::Apply {
            id: new_request_id(),
            key: key.to_vec(),
            op,
            consistency,
            deadline_ms: None,
            after,
        };
        self.write(request, idempotent).await
    }

    /// Applies an atomic batch (retried elsewhere after a lost answer only if every operation
    /// in it is idempotent).
    pub async fn write_batch(
        &self,
        ops: Vec<(Vec<u8>, Op)>,
        consistency: Consistency,
    ) -> Result<Written, RoutedError> {
        let idempotent = ops.iter().all(|(_, op)| op.is_idempotent());
        let after = self.after(ops.iter().map(|(k, op)| (k.as_slice(), op)));
        let request = ClientRequest::Write {
            id: new_request_id(),
            ops,
            consistency,
            deadline_ms: None,
            after,
        };
        self.write(request, idempotent).await
    }

    /// What a write of `ops` must find applied in the region that takes it
    /// (`SessionKeys::gate`: what the session wrote or read of the keys whose operations depend
    /// on what is seen, and the read contexts the operations carry; `None` when that is
    /// nothing).
    fn after<'a>(&self, ops: impl IntoIterator<Item = (&'a [u8], &'a Op)>) -> Option<After> {
        let token = self.session().keys.gate(ops);
        let wait_ms = self.config.session_wait_ms;
        (!token.is_empty()).then_some(After {
            token: CausalToken(token),
            wait_ms,
        })
    }

    /// Sends a write through the regions as `WriteCall` decides (`meridian_core::routing`), and
    /// takes its outcome into the session.
    async fn write(
        &self,
        request: ClientRequest,
        idempotent: bool,
    ) -> Result<Written, RoutedError> {
        let mut call = WriteCall::new(self.plan(), idempotent);
        let outcome = loop {
            match call.next(self.now_ms()) {
                Step::Send(i) => {
                    let answer = self.attempt_write(i, &request, &mut call).await;
                    if let Some(outcome) = call.on_answer(answer, self.now_ms()) {
                        break outcome;
                    }
                }
                Step::Wait { until_ms } => {
                    let left = until_ms.saturating_sub(self.now_ms());
                    tokio::time::sleep(Duration::from_millis(left)).await;
                }
                Step::Done(outcome) => break outcome,
            }
        };
        let why = call.reasons().join("; ");
        let name = |i: Option<usize>| match i {
            Some(i) => self.regions[i].entry.region.clone(),
            None => "some region".into(),
        };
        match outcome {
            WriteOutcome::Written {
                value: token,
                region,
                retried_after_lost,
            } => {
                let region = name(Some(region));
                let mut session = self.session();
                session.token.merge(&token);
                session.keys.wrote(written_keys(&request), &token.0);
                drop(session);
                Ok(Written {
                    token,
                    region,
                    retried_after_lost,
                })
            }
            WriteOutcome::Refused { error, .. } => Err(error),
            WriteOutcome::Unknown { region, cause } => Err(match cause {
                UnknownCause::Answered(e) => e,
                UnknownCause::NotRetried(reason) => RoutedError::Unknown {
                    region: name(region),
                    message: format!(
                        "{reason}; not retried elsewhere, as applying it twice would count twice"
                    ),
                },
                UnknownCause::RefusedAfterLost(e) => RoutedError::Unknown {
                    region: name(region),
                    message: format!(
                        "an earlier attempt's answer was lost (it may have applied), then: {e}; {why}"
                    ),
                },
                UnknownCause::NoOtherRegion => RoutedError::Unknown {
                    region: "some region".into(),
                    message: format!(
                        "an answer was lost and no other region took the write: {why}"
                    ),
                },
            }),
            // Nothing was written: every region that answered lacked what the session wrote or
            // read of the keys (the region that holds it is down or cut off).
            WriteOutcome::NotYetVisible => Err(RoutedError::NotYetVisible),
            WriteOutcome::NoRegion => Err(RoutedError::NoRegion(why)),
        }
    }

    /// The index of the replica a `NotPrimary` answer names.
    fn region_index(&self, primary: &Option<String>) -> Option<usize> {
        let primary = primary.as_deref()?;
        self.regions.iter().position(|r| r.entry.name == primary)
    }

    /// Reads `key` in the nearest region that has applied this session's writes (each region
    /// waits up to `session_wait_ms` for them, then the next is asked).
    pub async fn read(&self, key: &[u8]) -> Result<Option<Read>, RoutedError> {
        let token = self.token();
        self.read_covering(key, token).await
    }

    /// Reads `key` with every write a majority of regions has applied: their applied vectors,
    /// gathered at once, are what the serving region must cover (it waits for replication to
    /// bring what it lacks), with this session's writes.
    pub async fn read_majority(&self, key: &[u8]) -> Result<Option<Read>, RoutedError> {
        // The session's writes acknowledged before the read started.
        let session = self.token();
        // Writes count regions (a region holds a write when one of its replicas does), so a
        // region counts here when every replica of it answered.
        let mut replicas_of: BTreeMap<String, usize> = BTreeMap::new();
        for r in &self.regions {
            *replicas_of.entry(r.entry.region.clone()).or_default() += 1;
        }
        let needed = replicas_of.len() / 2 + 1;
        let mut gathered = Vec::new();
        for i in 0..self.regions.len() {
            if let Ok(c) = self.conn(i).await {
                gathered.push((i, c));
            } else {
                self.failed(i);
            }
        }
        let mut asks = tokio::task::JoinSet::new();
        for (i, c) in gathered {
            let timeout = self.config.request_timeout;
            asks.spawn(async move { (i, tokio::time::timeout(timeout, c.applied()).await) });
        }
        // Per region, the join of its replicas' vectors and how many answered.
        let mut answered: BTreeMap<String, (VersionVector, usize)> = BTreeMap::new();
        let whole = |answered: &BTreeMap<String, (VersionVector, usize)>| {
            answered
                .iter()
                .filter(|(region, (_, n))| replicas_of.get(*region) == Some(n))
                .count()
        };
        // Once a majority answered, the others get a moment more: the majority each serving
        // region's token is built from should include that region.
        let mut grace: Option<tokio::time::Instant> = None;
        loop {
            let next = match grace {
                Some(until) => match tokio::time::timeout_at(until, asks.join_next()).await {
                    Ok(next) => next,
                    Err(_) => break,
                },
                None => asks.join_next().await,
            };
            let Some(joined) = next else { break };
            let Ok((i, outcome)) = joined else { continue };
            match outcome {
                Ok(Ok(applied)) => {
                    self.state(i).breaker.on_success();
                    let entry = answered
                        .entry(self.regions[i].entry.region.clone())
                        .or_default();
                    entry.0.join(&applied);
                    entry.1 += 1;
                    if grace.is_none() && whole(&answered) >= needed {
                        grace = Some(tokio::time::Instant::now() + MAJORITY_READ_GRACE);
                    }
                }
                _ => self.failed(i),
            }
        }
        asks.abort_all();
        let covered = whole(&answered);
        if covered < needed {
            return Err(RoutedError::NoRegion(format!(
                "a majority read needs every replica of {needed} regions; {covered} regions answered whole"
            )));
        }
        let regions: Vec<(String, VersionVector)> = answered
            .into_iter()
            .filter(|(region, (_, n))| replicas_of.get(region) == Some(n))
            .map(|(region, (applied, _))| (region, applied))
            .collect();
        // Any majority's vectors together hold every write a majority acknowledged; each
        // serving region is given the majority it can complete most easily: itself and the
        // regions whose writes it lacks least (a region cut off from it, holding writes it
        // cannot get, is left out when another majority exists).
        let mut why = Vec::new();
        let mut not_yet = false;
        for i in self.plan() {
            let region = self.regions[i].entry.region.clone();
            let Some(own) = regions.iter().find(|(r, _)| *r == region).map(|(_, v)| v) else {
                why.push(format!("{region}: its applied vector did not come"));
                continue;
            };
            let mut others: Vec<&(String, VersionVector)> =
                regions.iter().filter(|(r, _)| *r != region).collect();
            others.sort_by_key(|(_, v)| lacking(own, v));
            let mut seen = own.clone();
            for (_, v) in others.into_iter().take(needed - 1) {
                seen.join(v);
            }
            let mut token = session.clone();
            token.merge(&CausalToken(seen));
            let request = ClientRequest::Read {
                key: key.to_vec(),
                token: Some(token),
                wait_ms: self.config.session_wait_ms,
            };
            let attempt = self.attempt(i, &request).await;
            if let Some(read) = self.read_answer(key, attempt, &mut why, &mut not_yet)? {
                return Ok(read);
            }
        }
        Err(read_failed(not_yet, &why))
    }

    /// What a read attempt came to: the value read (this session's token and the key's
    /// context take it in), or `None` to ask the next region (why noted, and whether the region
    /// lacked the session's writes), or the failure that ends the read.
    fn read_answer(
        &self,
        key: &[u8],
        attempt: Attempt<ClientResponse>,
        why: &mut Vec<String>,
        not_yet: &mut bool,
    ) -> Result<Option<Option<Read>>, RoutedError> {
        match attempt {
            Attempt::Done(ClientResponse::Value { read }) => {
                let mut session = self.session();
                if let Some(r) = &read {
                    session.token.merge(&r.token);
                    session.keys.note(key, &r.token.0);
                }
                // Covered: nothing the session holds is lost.
                session.last_lost = None;
                return Ok(Some(read));
            }
            Attempt::Done(other) => why.push(format!("unexpected answer {other:?}")),
            Attempt::NotYet(reason) => {
                *not_yet = true;
                why.push(reason);
            }
            Attempt::Next(reason) | Attempt::Lost(reason) | Attempt::Redirect(reason, _) => {
                why.push(reason)
            }
            Attempt::Fail(e) => return Err(e),
        }
        Ok(None)
    }

    async fn read_covering(
        &self,
        key: &[u8],
        token: CausalToken,
    ) -> Result<Option<Read>, RoutedError> {
        let request = ClientRequest::Read {
            key: key.to_vec(),
            token: Some(token),
            wait_ms: self.config.session_wait_ms,
        };
        let plan = self.plan();
        let mut why = Vec::new();
        let mut not_yet = false;
        let mut k = 0;
        while k < plan.len() {
            let i = plan[k];
            let outcome = match (self.config.hedge_after, plan.get(k + 1)) {
                (Some(after), Some(&j)) => {
                    let (attempt, used) = self.hedged(i, j, after, &request).await;
                    if used {
                        k += 1;
                    }
                    attempt
                }
                _ => self.attempt(i, &request).await,
            };
            k += 1;
            if let Some(read) = self.read_answer(key, outcome, &mut why, &mut not_yet)? {
                return Ok(read);
            }
        }
        Err(read_failed(not_yet, &why))
    }

    /// A read sent to region `i`, and to `j` too when `i` has not answered after `after`;
    /// the first answer that serves wins. Says whether `j` was used.
    async fn hedged(
        &self,
        i: usize,
        j: usize,
        after: Duration,
        request: &ClientRequest,
    ) -> (Attempt<ClientResponse>, bool) {
        let now = self.now_ms();
        self.state(i).breaker.try_acquire(now);
        let (Ok(first), timeout) = (self.conn(i).await, self.config.request_timeout) else {
            self.failed(i);
            return (self.attempt(j, request).await, true);
        };
        let ask = |c: Client, r: ClientRequest| async move {
            tokio::time::timeout(timeout, c.request_sampled(&r)).await
        };
        let primary = ask(first, request.clone());
        tokio::pin!(primary);
        tokio::select! {
            answer = &mut primary => return (self.settle_sampled(i, answer), false),
            _ = tokio::time::sleep(after) => {}
        }
        metrics::counter!("meridian_client_hedged_reads_total").increment(1);
        let now = self.now_ms();
        self.state(j).breaker.try_acquire(now);
        let Ok(second) = self.conn(j).await else {
            self.failed(j);
            return (self.settle_sampled(i, primary.await), false);
        };
        let backup = ask(second, request.clone());
        tokio::pin!(backup);
        // The first answer that serves wins; a failure waits for the other one.
        let (first_done, answer) = tokio::select! {
            answer = &mut primary => (i, answer),
            answer = &mut backup => (j, answer),
        };
        let other = if first_done == i { j } else { i };
        let attempt = self.settle_sampled(first_done, answer);
        if matches!(attempt, Attempt::Done(_) | Attempt::Fail(_)) {
            self.state(other).breaker.abandon();
            return (attempt, true);
        }
        let answer = if other == i {
            primary.await
        } else {
            backup.await
        };
        (self.settle_sampled(other, answer), true)
    }

    /// `settle`, after taking what the answer says of the region's clock.
    fn settle_sampled(
        &self,
        i: usize,
        answer: Result<
            (Result<ClientResponse, ClientFailure>, Option<ClockSample>),
            tokio::time::error::Elapsed,
        >,
    ) -> Attempt<ClientResponse> {
        let answer = answer.map(|(result, clock)| {
            if let Some(clock) = clock {
                self.state(i).clock.sample(clock);
            }
            result
        });
        self.settle(i, answer)
    }

    /// Sorts an answer from region `i`, keeping its breaker.
    fn settle(
        &self,
        i: usize,
        answer: Result<Result<ClientResponse, ClientFailure>, tokio::time::error::Elapsed>,
    ) -> Attempt<ClientResponse> {
        let name = self.regions[i].entry.region.clone();
        match answer {
            Ok(Ok(response)) => {
                self.state(i).breaker.on_success();
                self.session().last_region = Some(name);
                Attempt::Done(response)
            }
            Ok(Err(ClientFailure::Server(e))) => match e.code {
                // The region answers but cannot serve this now (recovering after a restart,
                // too few regions reachable from it): nothing was applied. It is alive, so
                // its breaker stays closed and the next request asks it first again.
                ErrorCode::Unavailable | ErrorCode::Expired => {
                    self.state(i).breaker.on_success();
                    Attempt::Next(format!("{name}: {}", e.message))
                }
                ErrorCode::NotYetVisible => {
                    self.state(i).breaker.on_success();
                    Attempt::NotYet(format!("{name}: {}", e.message))
                }
                ErrorCode::Uncoverable => {
                    self.state(i).breaker.on_success();
                    match e.lost {
                        Some((origin, held)) => {
                            self.session().last_lost = Some((origin, held));
                            Attempt::Fail(RoutedError::Uncoverable {
                                region: name,
                                origin,
                                held,
                            })
                        }
                        None => Attempt::Next(format!("{name}: {}", e.message)),
                    }
                }
                ErrorCode::NotPrimary => {
                    self.state(i).breaker.on_success();
                    Attempt::Redirect(format!("{name}: {}", e.message), e.primary)
                }
                ErrorCode::Unknown => {
                    self.state(i).breaker.on_success();
                    Attempt::Fail(RoutedError::Unknown {
                        region: name,
                        message: e.message,
                    })
                }
                _ => {
                    self.state(i).breaker.on_success();
                    Attempt::Fail(RoutedError::Refused {
                        region: name,
                        failure: ClientFailure::Server(e),
                    })
                }
            },
            Ok(Err(ClientFailure::Connect(e))) => {
                self.failed(i);
                Attempt::Next(format!("{name}: {e}"))
            }
            Ok(Err(e @ ClientFailure::Stream(_))) => {
                self.failed(i);
                Attempt::Lost(format!("{name}: {e}"))
            }
            Ok(Err(e)) => {
                // Refused by the client itself (too large, an answer it cannot read).
                self.state(i).breaker.abandon();
                Attempt::Fail(RoutedError::Refused {
                    region: name,
                    failure: e,
                })
            }
            Err(_) => {
                self.failed(i);
                Attempt::Lost(format!("{name}: no answer in time"))
            }
        }
    }

    /// When the value under `key` stops being read (Unix milliseconds), as the nearest region
    /// that answers sees it; `None` when it is absent or does not expire (client protocol 8).
    pub async fn expires_at(&self, key: &[u8]) -> Result<Option<u64>, RoutedError> {
        let request = ClientRequest::ExpiresAt { key: key.to_vec() };
        self.first_answer(&request, |_, answer| match answer {
            ClientResponse::ExpiresAt { at_ms } => Ok(at_ms),
            other => Err(Box::new(other)),
        })
        .await
    }

    /// The status of the nearest region that answers, with its region name.
    pub async fn status(&self) -> Result<(String, NodeStatus), RoutedError> {
        self.first_answer(&ClientRequest::Status, |i, answer| match answer {
            ClientResponse::Status(s) => Ok((self.regions[i].entry.region.clone(), s)),
            other => Err(Box::new(other)),
        })
        .await
    }

    /// `request` to the nearest region that answers it as `take` expects (given the region's
    /// index); an unexpected answer or a region that does not answer moves on to the next.
    async fn first_answer<T>(
        &self,
        request: &ClientRequest,
        take: impl Fn(usize, ClientResponse) -> Result<T, Box<ClientResponse>>,
    ) -> Result<T, RoutedError> {
        let mut why = Vec::new();
        for i in self.plan() {
            match self.attempt(i, request).await {
                Attempt::Done(answer) => match take(i, answer) {
                    Ok(t) => return Ok(t),
                    Err(other) => why.push(format!("unexpected answer {other:?}")),
                },
                Attempt::Next(r)
                | Attempt::NotYet(r)
                | Attempt::Lost(r)
                | Attempt::Redirect(r, _) => why.push(r),
                Attempt::Fail(e) => return Err(e),
            }
        }
        Err(RoutedError::NoRegion(why.join("; ")))
    }

    /// A page of the keys starting with `prefix` after `after` (at most `limit` rows), in key
    /// order, from the nearest region that has applied this session's writes, and whether
    /// more follow. The page reflects at least every write the session made or saw before the
    /// call (a region waits up to `session_wait_ms` for them, then the next is asked), and its
    /// rows' tokens join the session. A cursor that pages with the last key it got survives a
    /// failover: its keys stay in order, each at most once. A region of the previous release
    /// (client protocol 5, whose scans carry no token) is asked to read with the session's
    /// token first, then to scan: two round trips, the same guarantee.
    pub async fn scan_page(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: u32,
    ) -> Result<(Vec<ScanRow>, bool), RoutedError> {
        let token = self.token();
        let session = (!token.0.is_empty()).then_some(token);
        let wait_ms = self.config.session_wait_ms;
        let scan = |token: Option<CausalToken>| ClientRequest::Scan {
            prefix: prefix.to_vec(),
            limit,
            after: after.map(<[u8]>::to_vec),
            wait_ms: if token.is_some() { wait_ms } else { 0 },
            token,
        };
        let (plain, covering) = (scan(None), scan(session.clone()));
        let mut why = Vec::new();
        let mut not_yet = false;
        for i in self.plan() {
            let mut attempt = self.attempt(i, &covering).await;
            if let (Some(token), true) = (&session, unsupported(&attempt)) {
                // The region speaks client protocol 5: waiting for the session's writes takes
                // a read (of any key) before the scan.
                let wait = ClientRequest::Read {
                    key: SESSION_WAIT_KEY.to_vec(),
                    token: Some(token.clone()),
                    wait_ms,
                };
                attempt = match self.attempt(i, &wait).await {
                    Attempt::Done(ClientResponse::Value { .. }) => self.attempt(i, &plain).await,
                    other => other,
                };
            }
            match attempt {
                Attempt::Done(ClientResponse::Rows { rows, more }) => {
                    let mut session = self.session();
                    for (key, read) in &rows {
                        session.token.merge(&read.token);
                        session.keys.note(key, &read.token.0);
                    }
                    session.last_lost = None;
                    return Ok((rows, more));
                }
                Attempt::Done(other) => why.push(format!("unexpected answer {other:?}")),
                Attempt::NotYet(r) => {
                    not_yet = true;
                    why.push(r);
                }
                Attempt::Next(r) | Attempt::Lost(r) | Attempt::Redirect(r, _) => why.push(r),
                Attempt::Fail(e) => return Err(e),
            }
        }
        Err(read_failed(not_yet, &why))
    }

    /// Adds another session's token: later reads wait for its writes, and later writes that
    /// depend on what is seen wait for them whatever their key.
    pub fn merge_token(&self, other: &CausalToken) {
        let mut session = self.session();
        session.token.merge(other);
        session.keys.note_everywhere(&other.0);
    }

    /// Forgets the session's writes of `origin` beyond `held` (what `RoutedError::Uncoverable`
    /// names): later reads and writes no longer wait for them. Read-your-writes then no
    /// longer covers them: they are lost.
    pub fn forget_lost(&self, origin: OriginId, held: u64) {
        let mut session = self.session();
        session.token = CausalToken(session.token.0.capped(origin, held));
        session.keys.forget_beyond(origin, held);
    }

    /// `forget_lost` of what the last `RoutedError::Uncoverable` named; whether there was one.
    pub fn forget_last_lost(&self) -> bool {
        let lost = self.session().last_lost.take();
        match lost {
            Some((origin, held)) => {
                self.forget_lost(origin, held);
                true
            }
            None => false,
        }
    }

    /// The region that answered the last request that succeeded.
    pub fn last_region(&self) -> Option<String> {
        self.session().last_region.clone()
    }

    /// Everything this session wrote or read (to carry to another client: `merge_token`).
    pub fn token(&self) -> CausalToken {
        self.session().token.clone()
    }

    /// Replaces the session's token: what later reads wait for. What the session wrote or
    /// read of each key, which its context-dependent writes carry, stays (`merge_token` adds
    /// another session's writes to both).
    pub fn set_token(&self, token: CausalToken) {
        self.session().token = token;
    }

    /// The region table as last learned.
    pub fn regions(&self) -> Vec<RegionEntry> {
        self.regions.iter().map(|r| r.entry.clone()).collect()
    }

    /// Closes every connection.
    pub async fn close(self) {
        for r in self.regions {
            let conn = r
                .state
                .into_inner()
                .unwrap_or_else(PoisonError::into_inner)
                .conn;
            if let Some(c) = conn {
                c.close().await;
            }
        }
    }
}

/// `request` (a write) with its deadline `deadline` (Unix milliseconds, the region's clock).
/// Other requests are passed on as they are.
fn with_deadline(request: &ClientRequest, deadline: u64) -> std::borrow::Cow<'_, ClientRequest> {
    if !matches!(
        request,
        ClientRequest::Apply { .. } | ClientRequest::Write { .. }
    ) {
        return std::borrow::Cow::Borrowed(request);
    }
    let mut stamped = request.clone();
    if let ClientRequest::Apply { deadline_ms, .. } | ClientRequest::Write { deadline_ms, .. } =
        &mut stamped
    {
        *deadline_ms = Some(deadline);
    }
    std::borrow::Cow::Owned(stamped)
}

/// The keys a write request writes.
fn written_keys(request: &ClientRequest) -> Vec<&[u8]> {
    match request {
        ClientRequest::Apply { key, .. } => vec![key.as_slice()],
        ClientRequest::Write { ops, .. } => ops.iter().map(|(k, _)| k.as_slice()).collect(),
        _ => Vec::new(),
    }
}

/// Folds a round-trip sample into a smoothed value.
fn sample_rtt(smoothed: &mut Option<f64>, sample_ms: f64) {
    *smoothed = Some(smoothed_rtt(*smoothed, sample_ms));
}
