//! QUIC links: the accept loop (replication and client connections), one dialer per peer that
//! this replica is responsible for dialing, and the frame pumps of a replication link.

use super::actor::Event;
use super::link_queue::{link_queue, LINK_QUEUE_BYTES};
use super::service::Service;
use super::tls::{self, alpn, cert_names, peer_leaf};
use super::PeerSpec;
use meridian::limits::{ENTRY_BYTES_MAX, FRAME_BYTES_MAX, LINK_INBOUND_BYTES};
use meridian_client::framing::{read_frame, write_frame};
use meridian_client::protocols::{client_version, is_no_common_version, replication_version};
use meridian_core::replication::link_states::LinkStates;
use meridian_core::replication::{Inbound, LinkId};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

const BACKOFF_MS_MIN: u64 = 100;
const BACKOFF_MS_MAX: u64 = 5_000;

/// How long one dial waits for the handshake before it gives up and dials again. A peer that
/// does not answer (down, or cut off) is dialled about this often, at the shortest backoff,
/// so that a healed link is back within about this long; a handshake takes one or two round
/// trips (cross-region, well under a second). Without it a dial would wait the whole idle
/// timeout (10 s) with its first packets retransmitted ever more rarely, then back off.
const DIAL_ATTEMPT_MAX: Duration = Duration::from_secs(1);

/// How long a link must have run for the next dial to start again at the shortest backoff.
const LINK_LIVED: Duration = Duration::from_secs(2);

/// How long a link the replicator closed waits for its last frames to be acknowledged.
const CLOSE_FLUSH: std::time::Duration = std::time::Duration::from_secs(1);
/// Why a link ends when the replicator dropped it (it keeps its own reason).
const CLOSED_BY_REPLICATOR: &str = "closed by the replicator";

/// What every link task shares.
pub(crate) struct LinkCtx {
    pub cluster: String,
    pub peers: Vec<PeerSpec>,
    pub events: mpsc::Sender<Event>,

    pub next_peer: AtomicU32,
    pub dial: quinn::ClientConfig,
    /// The protocol versions this node speaks.
    pub protocols: meridian_client::protocols::Protocols,
    pub service: Arc<Service>,
    pub shutdown: watch::Receiver<bool>,
    /// True while an operator keeps the replication links cut (`admin isolate`).
    pub isolated: watch::Receiver<bool>,
}

impl LinkCtx {
    fn dns(&self, p: &PeerSpec) -> String {
        tls::replica_dns_name(&self.cluster, &p.name, &p.region)
    }

    fn is_isolated(&self) -> bool {
        *self.isolated.borrow()
    }

    /// Tells the actor why a link to `peer` failed (never waits: a full queue loses it).
    fn link_failed(&self, peer: &str, error: String) {
        let _ = self.events.try_send(Event::LinkFailed {
            name: peer.to_string(),
            error,
        });
    }
}

/// Returns once `isolated` is (or turns) `want`; never if its sender is gone.
async fn isolation_is(mut isolated: watch::Receiver<bool>, want: bool) {
    loop {
        if *isolated.borrow_and_update() == want {
            return;
        }
        if isolated.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Accepts connections until shutdown.
pub(crate) async fn accept_loop(endpoint: quinn::Endpoint, ctx: Arc<LinkCtx>) {
    let mut shutdown = ctx.shutdown.clone();
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => i,
            _ = shutdown.changed() => None,
        };
        let Some(incoming) = incoming else { break };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) if is_no_common_version(&e.to_string()) => {
                    metrics::counter!("meridian_replication_version_refused_total").increment(1);
                    tracing::warn!(error = %e, speaks = %ctx.protocols.replication_range(), "a replica or client speaking no protocol version this node speaks was refused (a release too old or too new for this one)");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "incoming connection failed its handshake");
                    return;
                }
            };
            let negotiated = alpn(&conn).unwrap_or_default();
            if let Some(version) = replication_version(&negotiated) {
                let leaf = peer_leaf(&conn);
                let peer = leaf.and_then(|cert| {
                    ctx.peers
                        .iter()
                        .find(|p| cert_names(&cert, &ctx.dns(p)))
                        .cloned()
                });
                match peer {
                    Some(_) if ctx.is_isolated() => {
                        conn.close(quinn::VarInt::from_u32(503), b"isolated by an operator");
                    }
                    Some(p) => run_link(conn, p, version, ctx).await,
                    None => {
                        tracing::warn!(remote = %conn.remote_address(), "refusing a replica that is not a configured peer");
                        metrics::counter!("meridian_peers_refused_total").increment(1);
                        conn.close(
                            quinn::VarInt::from_u32(403),
                            b"not a member of this cluster",
                        );
                    }
                }
            } else if client_version(&negotiated).is_some() {
                ctx.service.clone().serve(conn).await
            } else {
                conn.close(quinn::VarInt::from_u32(400), b"unknown protocol");
            }
        });
    }
}

/// Keeps a link to `peer` up: connect, run, back off with jitter after a failure.
pub(crate) async fn dial_loop(endpoint: quinn::Endpoint, ctx: Arc<LinkCtx>, peer: PeerSpec) {
    let mut shutdown = ctx.shutdown.clone();
    let mut backoff = BACKOFF_MS_MIN;
    loop {
        if *shutdown.borrow() {
            return;
        }
        if ctx.is_isolated() {
            tokio::select! {
                _ = isolation_is(ctx.isolated.clone(), false) => {}
                _ = shutdown.changed() => return,
            }
            backoff = BACKOFF_MS_MIN;
        }
        let dns = ctx.dns(&peer);
        let attempt = async {
            let connecting = endpoint
                .connect_with(ctx.dial.clone(), peer.address, &dns)
                .map_err(|e| e.to_string())?;
            connecting.await.map_err(|e| e.to_string())
        };
        match tokio::time::timeout(DIAL_ATTEMPT_MAX, attempt).await {
            Err(_) => {
                // No answer: dialled again at the shortest backoff (the peer may be back any
                // moment), not ever more rarely.
                ctx.link_failed(
                    &peer.name,
                    format!("dial: no answer within {DIAL_ATTEMPT_MAX:?}"),
                );
                backoff = BACKOFF_MS_MIN;
            }
            Ok(Ok(conn)) => {
                let up = std::time::Instant::now();
                let negotiated = alpn(&conn).unwrap_or_default();
                let Some(version) = replication_version(&negotiated) else {
                    conn.close(quinn::VarInt::from_u32(400), b"unknown protocol");
                    ctx.link_failed(
                        &peer.name,
                        "dial: the peer chose no replication protocol".into(),
                    );
                    continue;
                };
                run_link(conn, peer.clone(), version, ctx.clone()).await;
                // A link the peer closes at once (isolated by an operator, or refusing this
                // replica) is retried with the backoff, not in a tight loop of handshakes.
                if up.elapsed() >= LINK_LIVED {
                    backoff = BACKOFF_MS_MIN;
                }
            }
            Ok(Err(e)) if is_no_common_version(&e) => {
                metrics::counter!("meridian_replication_version_refused_total").increment(1);
                let why = format!(
                    "dial: no replication protocol version in common with the peer (this node \
                     speaks {}): one of the two runs a release too old or too new for the \
                     other ({e})",
                    ctx.protocols.replication_range()
                );
                tracing::warn!(peer = %peer.name, reason = %why, "replication link refused");
                ctx.link_failed(&peer.name, why);
            }
            Ok(Err(e)) => {
                tracing::debug!(peer = %peer.name, error = %e, "dial failed");
                ctx.link_failed(&peer.name, format!("dial: {e}"));
            }
        }
        // Exponential backoff with jitter from the clock's low bits (no RNG needed here).
        let jitter = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::from(d.subsec_nanos()))
            % (backoff / 2 + 1);
        let wait = Duration::from_millis(backoff / 2 + jitter);
        backoff = (backoff * 2).min(BACKOFF_MS_MAX);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Runs one replication link until it fails or shutdown: our frames out on a unidirectional
/// stream, the peer's in on the one it opens.
async fn run_link(conn: quinn::Connection, peer: PeerSpec, version: u8, ctx: Arc<LinkCtx>) {
    let id = LinkId(ctx.next_peer.fetch_add(1, Ordering::SeqCst));
    let (tx, mut rx) = link_queue(LINK_QUEUE_BYTES);
    let mut send = match conn.open_uni().await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(peer = %peer.name, error = %e, "could not open a stream");
            return;
        }
    };
    let up = Event::Up {
        peer: id,
        member: super::member_id_for(&ctx.cluster, &peer.name, peer.incarnation),
        name: peer.name.clone(),
        region: peer.region.clone(),
        out: tx,
        version,
    };
    if ctx.events.send(up).await.is_err() {
        return;
    }
    // Set once the replicator dropped the link: whatever ends the link after that (the peer
    // closing it while the last frames flush) keeps the replicator's own reason.
    let dropped = std::sync::atomic::AtomicBool::new(false);
    let writer = async {
        while let Some(frame) = rx.recv().await {
            if let Err(e) = write_frame(&mut send, frame).await {
                return format!("write: {e}");
            }
        }
        // The replicator closed the link: what it queued last (a refusal saying why, which
        // tells an earlier process of a member that it is fenced) reaches the peer before the
        // connection closes, within a bound.
        dropped.store(true, Ordering::SeqCst);
        let _ = send.finish();
        let _ = tokio::time::timeout(CLOSE_FLUSH, send.stopped()).await;
        CLOSED_BY_REPLICATOR.to_string()
    };
    let events = ctx.events.clone();
    let budget = Arc::new(tokio::sync::Semaphore::new(LINK_INBOUND_BYTES));
    let reader = async {
        let mut recv = match conn.accept_uni().await {
            Ok(r) => r,
            Err(e) => return format!("accept: {e}"),
        };
        // The states the peer's frames carried, as its end of the link remembers them: the
        // base of the patches version 7 sends (`link_states.rs`). Frames are decoded here in
        // the order they were sent.
        let mut link_states = LinkStates::default();
        loop {
            match read_frame(&mut recv, FRAME_BYTES_MAX).await {
                Ok(Some(bytes)) => {
                    // Frames are at most FRAME_BYTES_MAX, below the budget: this waits only
                    // for earlier frames to be applied.
                    let want = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
                    let Ok(permit) = budget.clone().acquire_many_owned(want).await else {
                        return "replicator gone".into();
                    };
                    // Decoded here, on the I/O threads: the replicator thread only applies.
                    // A peer's record may be as large as an entry (merged with others' writes).
                    let inbound =
                        match Inbound::decode_on(&bytes, ENTRY_BYTES_MAX, &mut link_states) {
                            Ok(inbound) => inbound,
                            Err(e) => {
                                metrics::counter!("meridian_replication_peer_errors_total")
                                    .increment(1);
                                return format!("bad frame: {e}");
                            }
                        };
                    let frame = Event::Frame {
                        peer: id,
                        len: bytes.len(),
                        inbound,
                        permit,
                    };
                    if events.send(frame).await.is_err() {
                        return "replicator gone".into();
                    }
                }
                Ok(None) => return "peer finished its stream".into(),
                Err(e) => {
                    metrics::counter!("meridian_replication_peer_errors_total").increment(1);
                    return format!("bad frame: {e}");
                }
            }
        }
    };
    let mut shutdown = ctx.shutdown.clone();
    let mut why = tokio::select! {
        never = export_path_stats(conn.clone(), peer.name.clone()) => never,
        w = writer => w,
        r = reader => r,
        _ = isolation_is(ctx.isolated.clone(), true) => "isolated by an operator".into(),
        _ = shutdown.changed() => "shutting down".into(),
    };
    if dropped.load(Ordering::SeqCst) {
        why = CLOSED_BY_REPLICATOR.to_string();
    }
    tracing::info!(peer = %peer.name, reason = %why, "replication link closed");
    // The replicator recorded its own reason (a refused identity, a bad frame) already.
    if !*ctx.shutdown.borrow() && why != CLOSED_BY_REPLICATOR {
        ctx.link_failed(&peer.name, format!("closed: {why}"));
    }
    let _ = ctx.events.send(Event::Down { peer: id }).await;
    conn.close(quinn::VarInt::from_u32(0), why.as_bytes());
}

/// Publishes the link's QUIC path statistics as per-peer gauges every second, for as long as
/// the link runs: what limits a link's throughput (round trip, congestion window, losses) is
/// visible without a packet capture.
async fn export_path_stats(conn: quinn::Connection, peer: String) -> String {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let path = conn.stats().path;
        let gauge = |name: &'static str, value: f64| {
            metrics::gauge!(name, "peer" => peer.clone()).set(value);
        };
        gauge("meridian_peer_quic_rtt_seconds", path.rtt.as_secs_f64());
        gauge("meridian_peer_quic_cwnd_bytes", path.cwnd as f64);
        gauge("meridian_peer_quic_lost_packets", path.lost_packets as f64);
        gauge(
            "meridian_peer_quic_congestion_events",
            path.congestion_events as f64,
        );
    }
}
