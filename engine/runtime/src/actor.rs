//! The replication actor: one thread owns the `Replicator` and calls the (blocking) store, fed
//! by a bounded channel of link events, frames, ticks and local-write notices. Frames for a peer
//! go to that link's queue, bounded in bytes; a full queue drops the frame (the protocol
//! resends), so a slow peer never stalls the others.

use super::link_queue::LinkSender;
use super::primary::{Member, PrimaryBoard, PrimaryState};
use super::regions::RegionBoard;
use meridian::Replication;
use meridian_client::client_proto::{NodeStatus, PeerStatus};
use meridian_core::lease::LeaseConfig;
use meridian_core::replication::{
    Inbound, LinkId, Output, ReplicationError, Replicator, MERGE_FRAMES_MAX,
};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc;

/// Most local-write timestamps kept for the lag-in-seconds estimate.
const WRITE_TIMES_MAX: usize = 65_536;

/// The first wait before ticking again after a storage error on the replication path; it
/// doubles with each error in a row, up to `STORE_RETRY_MAX`.
const STORE_RETRY_MIN: std::time::Duration = std::time::Duration::from_millis(100);
const STORE_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// Storage errors on the replication path: each is a fault of that round (a frame is dropped
/// and resent by its peer, a tick is retried after a backoff), counted and shown, never the
/// end of replication.
#[derive(Debug, Default)]
struct StoreTrouble {
    /// Errors since the node started.
    total: u64,
    /// Errors in a row (since the last round that went through).
    in_a_row: u32,
    /// When the current run of errors began.
    since: Option<Instant>,
    /// Ticks wait until then.
    retry_at: Option<Instant>,
    /// The latest error, described.
    last: Option<String>,
}

impl StoreTrouble {
    fn failed(&mut self, error: String) {
        self.total += 1;
        self.in_a_row = self.in_a_row.saturating_add(1);
        self.since.get_or_insert_with(Instant::now);
        let backoff = STORE_RETRY_MIN
            .saturating_mul(1 << self.in_a_row.min(8).saturating_sub(1))
            .min(STORE_RETRY_MAX);
        self.retry_at = Some(Instant::now() + backoff);
        metrics::counter!("meridian_replication_store_errors_total").increment(1);
        if self.in_a_row == 1 || self.in_a_row.is_power_of_two() {
            tracing::error!(%error, in_a_row = self.in_a_row, retry_in_ms = backoff.as_millis() as u64, "replication: storage error; retrying");
        }
        self.last = Some(error);
    }

    fn went_through(&mut self) {
        if self.since.take().is_some() {
            tracing::info!(errors = self.in_a_row, "replication: storage works again");
        }
        self.in_a_row = 0;
        self.retry_at = None;
    }

    /// Whether a tick should wait for the backoff.
    fn backing_off(&self) -> bool {
        self.retry_at.is_some_and(|at| Instant::now() < at)
    }
}

/// Input to the actor.
pub(crate) enum Event {
    /// A link to a configured peer is up; frames for it go to `out`. `member` is what the
    /// peer's certificate name and configured incarnation derive.
    Up {
        peer: LinkId,
        member: meridian::MemberId,
        name: String,
        region: String,
        out: LinkSender,
        /// The replication protocol version the link negotiated.
        version: u8,
    },
    /// The link is gone.
    Down { peer: LinkId },
    /// A frame arrived (`len` bytes), decoded by the link; `permit` holds its share of the
    /// link's inbound budget until it is handled.
    Frame {
        peer: LinkId,
        len: usize,
        inbound: Inbound,
        permit: tokio::sync::OwnedSemaphorePermit,
    },
    /// A link to peer `name` failed to come up, or closed: why (shown in the status).
    LinkFailed { name: String, error: String },
    /// Time to tick.
    Tick,
    /// Local writes committed.
    LocalWrite,
    /// Active-passive: make this replica primary; answers whether the mode is on.
    Promote {
        done: tokio::sync::oneshot::Sender<bool>,
    },
    /// Switch between active-active and active-passive (kept with the data: a restart
    /// resumes it).
    SetMode {
        active_passive: bool,
        done: tokio::sync::oneshot::Sender<Result<(), String>>,
    },
    /// Stop the actor.
    Stop,
}

struct Link {
    name: String,
    region: String,
    out: LinkSender,
    /// When a frame last arrived on it (or it came up).
    last_heard: Instant,
}

/// Silence after which a peer counts as unreachable for writes that need other regions
/// (heartbeats come every half second; QUIC's idle timeout, which closes the link, is 10 s):
/// a write asking for a majority on the minority side of a partition is refused at once.
const PEER_SILENCE_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// What the actor shares with the rest of the runtime, and the lease it runs.
pub(crate) struct Shared {
    pub status: Arc<Mutex<NodeStatus>>,
    pub regions: Arc<RegionBoard>,
    pub primary: Arc<PrimaryBoard>,
    /// Every replica, this one first.
    pub members: Vec<Member>,
    /// The lease's settings for active-passive mode.
    pub lease: LeaseConfig,
    /// The mode at start.
    pub active_passive: bool,
}

/// Runs until `Stop` or until every sender is gone.
pub(crate) fn run(
    engine: Replication,
    mut repl: Replicator,
    mut events: mpsc::Receiver<Event>,
    write_pending: Arc<AtomicBool>,
    shared: Shared,
) {
    let Shared {
        status,
        regions,
        primary,
        members,
        lease,
        active_passive,
    } = shared;
    let start = Instant::now();
    let now = || start.elapsed().as_millis() as u64;
    if active_passive {
        repl.set_lease(Some(lease.clone()), now());
    }
    publish_primary(&repl, start, &members, &primary, &status);
    let mut links: BTreeMap<LinkId, Link> = BTreeMap::new();
    let mut write_times: VecDeque<(u64, Instant)> = VecDeque::new();
    let mut held = None;
    let merge_bytes_max = repl.ack_every_bytes();
    // Per peer name, why its link was last refused or closed by the protocol.
    let mut link_errors: BTreeMap<String, String> = BTreeMap::new();
    let mut trouble = StoreTrouble::default();
    while let Some(event) = next_event(&mut events, &mut held, merge_bytes_max) {
        // Links, round trips and acknowledgements go to the region board every tick, and at
        // once while a write waits for them.
        let report = regions.has_waiters()
            || matches!(event, Event::Tick | Event::Up { .. } | Event::Down { .. });
        let inbound = matches!(event, Event::Frame { .. });
        let result = match event {
            Event::Up {
                peer,
                member,
                name,
                region,
                out,
                version,
            } => {
                tracing::info!(peer = %name, %region, version, "replication link up");
                metrics::gauge!("meridian_replication_link_protocol", "peer" => name.clone())
                    .set(f64::from(version));
                links.insert(
                    peer,
                    Link {
                        name,
                        region,
                        out,
                        last_heard: Instant::now(),
                    },
                );
                repl.connected_at(peer, member, version, &engine, now());
                Ok(())
            }
            Event::Down { peer } => {
                if let Some(l) = links.remove(&peer) {
                    tracing::info!(peer = %l.name, "replication link down");
                }
                repl.disconnected(peer);
                Ok(())
            }
            Event::Frame {
                peer,
                len,
                inbound,
                permit,
            } => {
                metrics::counter!("meridian_replication_bytes_received_total")
                    .increment(len as u64);
                if let Some(link) = links.get_mut(&peer) {
                    link.last_heard = Instant::now();
                }
                let handled = repl.handle_inbound(peer, inbound, &engine, now());
                drop(permit);
                handled
            }
            Event::LinkFailed { name, error } => {
                link_errors.insert(name, error);
                Ok(())
            }
            Event::Tick => {
                let r = if trouble.backing_off() {
                    Ok(())
                } else {
                    repl.tick(&engine, now())
                };
                let view = Published {
                    now_ms: now(),
                    links: &links,
                    write_times: &write_times,
                    link_errors: &link_errors,
                    trouble: &trouble,
                };
                publish(&engine, &repl, &view, &status);
                r
            }
            Event::LocalWrite => {
                write_pending.store(false, Ordering::SeqCst);
                let seq = engine.last_seq();
                if write_times.back().is_none_or(|(s, _)| *s < seq) {
                    write_times.push_back((seq, Instant::now()));
                    if write_times.len() > WRITE_TIMES_MAX {
                        write_times.pop_front();
                    }
                }
                repl.local_write(&engine, now())
            }
            Event::Promote { done } => {
                let _ = done.send(repl.promote(now()));
                Ok(())
            }
            Event::SetMode {
                active_passive,
                done,
            } => {
                let kept = engine
                    .set_setting(MODE_SETTING, mode_name(active_passive).as_bytes())
                    .map_err(|e| format!("keeping the mode: {e}"));
                if kept.is_ok() && active_passive != repl.primary_view(now()).is_some() {
                    repl.set_lease(active_passive.then(|| lease.clone()), now());
                    tracing::warn!(active_passive, "replication mode switched");
                }
                let _ = done.send(kept);
                Ok(())
            }
            Event::Stop => break,
        };
        publish_primary(&repl, start, &members, &primary, &status);
        match result {
            Ok(()) => trouble.went_through(),
            Err(ReplicationError::Peer { peer, error }) => {
                let name = links.get(&peer).map_or("?", |l| l.name.as_str());
                tracing::warn!(peer = %name, %error, "closing replication link after a bad frame");
                link_errors.insert(name.to_string(), error.to_string());
                metrics::counter!("meridian_replication_peer_errors_total").increment(1);
            }
            Err(e) => trouble.failed(e.to_string()),
        }
        // Nothing else queued after frames arrived: acknowledge them now rather than at the
        // next tick (writes waiting to be held by several regions wait on these).
        if inbound && held.is_none() && events.is_empty() {
            repl.acknowledge_idle(&engine, now());
        }
        while let Some(out) = repl.poll_output() {
            match out {
                Output::Send { link: peer, frame } => {
                    if let Some(l) = links.get(&peer) {
                        let len = frame.len() as u64;
                        if l.out.try_send(frame).is_ok() {
                            metrics::counter!("meridian_replication_bytes_sent_total")
                                .increment(len);
                            metrics::counter!("meridian_replication_frames_sent_total")
                                .increment(1);
                        } else {
                            metrics::counter!("meridian_replication_frames_dropped_total")
                                .increment(1);
                        }
                    }
                }
                Output::Close { link: peer, reason } => {
                    if let Some(l) = links.remove(&peer) {
                        tracing::warn!(peer = %l.name, %reason, "closing replication link");
                        link_errors.insert(l.name, reason);
                    }
                }
                // A newer process of this identity runs: acknowledge no more writes.
                Output::Fenced { reason } => engine.fence(&reason),
            }
        }
        if report {
            report_regions(&repl, &links, &regions);
        }
        // Keep only the timestamps some peer may still lack.
        let min_acked = repl
            .peers()
            .filter_map(|(_, p)| p.ready_member().map(|_| p.acked.get(engine.origin_id())))
            .min();
        if let Some(acked) = min_acked {
            while write_times.front().is_some_and(|(s, _)| *s <= acked) {
                write_times.pop_front();
            }
        }
    }
}

/// The next event. Entries frames of one origin from one link that are already queued behind
/// each other come merged into one (`Inbound::absorb`, which says why and how far).
fn next_event(
    events: &mut mpsc::Receiver<Event>,
    held: &mut Option<Event>,
    merge_bytes_max: usize,
) -> Option<Event> {
    let first = match held.take() {
        Some(event) => event,
        None => events.blocking_recv()?,
    };
    let Event::Frame {
        peer,
        mut len,
        mut inbound,
        mut permit,
    } = first
    else {
        return Some(first);
    };
    if !matches!(inbound, Inbound::Entries { .. }) {
        return Some(Event::Frame {
            peer,
            len,
            inbound,
            permit,
        });
    }
    for _ in 1..MERGE_FRAMES_MAX {
        if len >= merge_bytes_max {
            break;
        }
        match events.try_recv() {
            Ok(Event::Frame {
                peer: p,
                len: l,
                inbound: more,
                permit: more_permit,
            }) if p == peer => match inbound.absorb(more) {
                Ok(()) => {
                    len += l;
                    permit.merge(more_permit);
                }
                Err(more) => {
                    *held = Some(Event::Frame {
                        peer: p,
                        len: l,
                        inbound: more,
                        permit: more_permit,
                    });
                    break;
                }
            },
            Ok(other) => {
                *held = Some(other);
                break;
            }
            Err(_) => break,
        }
    }
    Some(Event::Frame {
        peer,
        len,
        inbound,
        permit,
    })
}

/// The setting that keeps the mode an operator switched to.
pub(crate) const MODE_SETTING: &str = "replication_mode";

/// The name of a mode, as kept and shown.
pub(crate) fn mode_name(active_passive: bool) -> &'static str {
    if active_passive {
        "active-passive"
    } else {
        "active-active"
    }
}

/// Publishes where the lease stands for the client service and the status.
fn publish_primary(
    repl: &Replicator,
    start: Instant,
    members: &[Member],
    board: &PrimaryBoard,
    status: &Mutex<NodeStatus>,
) {
    let now_ms = start.elapsed().as_millis() as u64;
    let view = repl.primary_view(now_ms);
    // Active-active and already published as such: nothing changes per event.
    if view.is_none() && !board.get().active_passive {
        return;
    }
    let primary = view
        .and_then(|v| v.primary)
        .and_then(|id| members.iter().find(|m| m.id == id).cloned());
    let holding_until = view
        .and_then(|v| v.holding_until_ms)
        .map(|ms| start + std::time::Duration::from_millis(ms));
    if let Ok(mut s) = status.lock() {
        s.mode = mode_name(view.is_some()).into();
        s.primary = primary.as_ref().map(|m| m.name.clone());
        s.is_primary = view.is_some_and(|v| v.is_primary);
    }
    board.set(PrimaryState {
        active_passive: view.is_some(),
        holding_until,
        primary,
    });
}

/// Copies each peer's link state, round trip and acknowledgements to the region board.
fn report_regions(repl: &Replicator, links: &BTreeMap<LinkId, Link>, regions: &RegionBoard) {
    regions.update(|views| {
        for view in views.iter_mut() {
            view.entry.reachable = false;
        }
        for (id, p) in repl.peers() {
            let Some(link) = links.get(&id) else { continue };
            let Some(view) = views.iter_mut().find(|v| v.entry.name == link.name) else {
                continue;
            };
            view.entry.reachable =
                p.ready_member().is_some() && link.last_heard.elapsed() < PEER_SILENCE_MAX;
            view.sample_rtt(p.rtt_ms);
            // What the peer reports now (a peer that lost data reports less than before).
            view.acked = p.acked.clone();
            if p.origin.is_some() {
                view.origin = p.origin;
            }
            // What the peer says of its own region wins over this node's configuration.
            if let Some(about) = &p.about {
                if about.location.is_some() {
                    view.entry.location = about.location;
                }
                if let Some(address) = about.address.as_ref().and_then(|a| a.parse().ok()) {
                    view.entry.address = address;
                }
            }
        }
    });
}

/// What the actor knows beside the replicator, for the status.
struct Published<'a> {
    now_ms: u64,
    links: &'a BTreeMap<LinkId, Link>,
    write_times: &'a VecDeque<(u64, Instant)>,
    link_errors: &'a BTreeMap<String, String>,
    trouble: &'a StoreTrouble,
}

fn publish(
    engine: &Replication,
    repl: &Replicator,
    view: &Published<'_>,
    status: &Mutex<NodeStatus>,
) {
    let Published {
        now_ms,
        links,
        write_times,
        link_errors,
        trouble,
    } = view;
    let applied = engine.applied();
    let me = engine.origin_id();
    let mut peers: BTreeMap<String, PeerStatus> = BTreeMap::new();
    for (id, p) in repl.peers() {
        let Some(link) = links.get(&id) else { continue };
        let lag_ops: u64 = applied
            .iter()
            .map(|(o, s)| s.saturating_sub(p.acked.get(o)))
            .sum();
        let acked_own = p.acked.get(me);
        let lag_ms = write_times
            .iter()
            .find(|(s, _)| *s > acked_own)
            .map_or(0, |(_, t)| t.elapsed().as_millis() as u64);
        metrics::gauge!("meridian_peer_lag_ops", "peer" => link.name.clone()).set(lag_ops as f64);
        metrics::gauge!("meridian_peer_lag_seconds", "peer" => link.name.clone())
            .set(lag_ms as f64 / 1000.0);
        if let Some(rtt) = p.rtt_ms {
            metrics::gauge!("meridian_peer_rtt_seconds", "peer" => link.name.clone())
                .set(rtt as f64 / 1000.0);
        }
        peers.insert(
            link.name.clone(),
            PeerStatus {
                name: link.name.clone(),
                region: link.region.clone(),
                connected: p.ready_member().is_some(),
                rtt_ms: p.rtt_ms,
                lag_ops,
                lag_ms,
                last_error: None,
                protocol: Some(p.version),
                features: p.features.clone(),
            },
        );
    }
    let stats = repl.stats();
    metrics::gauge!("meridian_entries_applied").set(stats.entries_applied as f64);
    metrics::gauge!("meridian_log_entries_reclaimed").set(stats.log_entries_removed as f64);
    metrics::gauge!("meridian_tombstones_pending").set(stats.tombstones_pending as f64);
    let floor = meridian_core::replication::ReplicaStore::log_floor(engine);
    let log_len: u64 = applied
        .iter()
        .map(|(o, s)| s.saturating_sub(floor.get(o)))
        .sum();
    metrics::gauge!("meridian_log_entries").set(log_len as f64);
    let origin = engine.origin_status();
    metrics::gauge!("meridian_writable").set(if origin.writable { 1.0 } else { 0.0 });
    metrics::gauge!("meridian_epoch").set(f64::from(origin.epoch));
    let frozen_ms = repl.stability_frozen_ms(engine, *now_ms);
    metrics::gauge!("meridian_stability_frozen_seconds").set(frozen_ms as f64 / 1000.0);
    let stuck_ms = trouble.since.map(|t| t.elapsed().as_millis() as u64);
    metrics::gauge!("meridian_replication_stuck_seconds")
        .set(stuck_ms.map_or(0.0, |ms| ms as f64 / 1000.0));
    let lost = engine.declared_lost();
    let health = if let Some(reason) = engine.fenced() {
        format!("fenced: this process refuses writes ({reason}); stop it")
    } else if !origin.writable {
        "degraded: the engine refuses writes after a storage failure (restart the node)".into()
    } else if let (Some(ms), Some(error)) = (stuck_ms, &trouble.last) {
        format!("degraded: replication stuck for {ms} ms on storage errors ({error})")
    } else {
        "ok".into()
    };
    if let Ok(mut s) = status.lock() {
        s.origin = Some(origin.origin);
        s.epoch = origin.epoch;
        s.writable = origin.writable;
        s.origin_note = origin.note;
        let faults = engine.faults();
        s.storage_faults = faults.corrupt_records + faults.corrupt_log_entries;
        s.last_fault = faults.last;
        s.applied = applied.iter().collect();
        for configured in &mut s.peers {
            match peers.remove(&configured.name) {
                Some(now) => *configured = now,
                None => configured.connected = false,
            }
            configured.last_error = link_errors.get(&configured.name).cloned();
        }
        s.log_entries_reclaimed = stats.log_entries_removed;
        s.tombstones_pending = stats.tombstones_pending;
        s.health = health;
        s.replication_store_errors = trouble.total;
        s.last_replication_store_error = trouble.last.clone();
        s.stability_frozen_ms = frozen_ms;
        s.writes_declared_lost = lost.lost.len() as u64;
        s.records_declared_lost = lost.uncertain.len() as u64;
    }
}
