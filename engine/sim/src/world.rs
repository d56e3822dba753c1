//! N regions of the real engine (real RocksDB directories) and their replicators over the
//! simulated network, driven by one seeded event loop: a fault phase, then a heal phase in which
//! every region must converge within a bound.

use super::history::{check, digest, sim_replica, unreclaimed, Fnv, History};

mod clients;
mod disk_faults;
mod expired;
mod feed_consumer;
mod invariants;
use super::network::{LinkFaults, Network, REGIONS};
use super::rng::{SharedRng, SimRng};
use super::workload::{self, Session};
use super::{Faults, SeedReport, SimOptions};
use meridian::{Config, Engine, Replication, WallClock};
use meridian_core::replication::{
    LinkId, Output, ReplicationConfig, Replicator, EXPIRY_VERSION, PROTOCOL_VERSION,
    PROTOCOL_VERSIONS,
};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

/// A fixed epoch so that HLC markers replay exactly (2026-01-01).
const EPOCH_MS: u64 = 1_767_225_600_000;
const TICK_MS: u64 = 100;
const CHECK_MS: u64 = 250;
/// Largest clock skew the faults give a region (and the engines' skew bound): small enough
/// that expired values are reclaimed within a run (`expiry_sweep.rs` waits the bound).
const SKEW_MS_MAX: i64 = 4_000;
/// How long a region waits for a whole copy of a write before declaring what it lacks lost.
const MISSING_WAIT_MS: u64 = 5_000;
/// Simulated time after convergence in which logs and tombstones must be reclaimed.
const RECLAIM_MS: u64 = 8_000;
/// How long past the heal bound writes made after convergence (expired values reclaimed, a
/// skew bound or three after their expiry) may keep moving the reclaim deadline.
const EXPIRY_RECLAIM_MS: u64 = 30_000;

/// A region's wall clock: simulated time plus a skew the faults move around.
#[derive(Debug, Default)]
struct SimClock {
    now_ms: AtomicU64,
    skew_ms: AtomicI64,
}

impl WallClock for SimClock {
    fn now_ms(&self) -> u64 {
        let t = EPOCH_MS as i64
            + self.now_ms.load(Ordering::SeqCst) as i64
            + self.skew_ms.load(Ordering::SeqCst);
        t.max(0) as u64
    }
}

struct Node {
    engine: Replication,
    repl: Replicator,
}

struct Region {
    dir: PathBuf,
    clock: Arc<SimClock>,
    node: Option<Node>,
    /// Bumped when the region, declared dead, comes back with an empty disk.
    incarnation: u64,
    /// Declared dead: removed from every member list until it returns.
    dead: bool,
    /// How its writes are acknowledged.
    durability: meridian::Durability,
    /// The machine's boot: a power loss starts a new one.
    boot: u64,
    /// What its disk had synced at the last sync point (a RocksDB checkpoint) and the applied
    /// vector it held, for a power loss to roll back to.
    synced: Option<(PathBuf, Held)>,
    /// Announces false applied vectors while set.
    liar: bool,
    /// Its last backup (an operator's online checkpoint) and what it held then.
    backup: Option<(PathBuf, Held)>,
    /// Its last run may have lost writes it numbered (a power loss under `wal`, a restore):
    /// the next open must write under another origin.
    lost_tail: bool,
    /// What the next open must reflect (after a power loss under `sync`).
    expect_after_open: Option<Held>,
    /// The origin its last run wrote under (set when it went down).
    node_origin: Option<meridian::OriginId>,
    /// Its disk was wiped since it went down.
    wiped: bool,
    /// The newest replication protocol version it speaks (the oldest until its first restart
    /// when it starts as the previous release: `Faults::mixed_versions`).
    protocol_max: u8,
    /// The applied vector I1 was last checked against, and the writes verified so far in this
    /// run.
    checked: Option<meridian::VersionVector>,
    verified: std::collections::BTreeSet<meridian::Dot>,
    /// Frozen (its process stopped) from, until: nothing it does, what is sent to it held.
    frozen: Option<(u64, u64)>,
    /// When it last went down.
    down_since: u64,
    /// Its runs (opens) so far.
    runs: u64,
    /// Its clock's steps: (when, skew from then on), the first (0, 0).
    skews: Vec<(u64, i64)>,
}

/// What a region's disk holds, for the oracle: its applied vector and each record's context
/// (a record's state may reflect a write before the write's entry is applied: states travel
/// current).
#[derive(Clone, Debug, Default)]
struct Held {
    applied: meridian::VersionVector,
    contexts: std::collections::BTreeMap<Vec<u8>, meridian::VersionVector>,
    /// Keys whose record does not decode (damaged): nothing of them is held.
    unreadable: std::collections::BTreeSet<Vec<u8>>,
}

impl Held {
    fn of(engine: &Replication) -> Held {
        let mut contexts = std::collections::BTreeMap::new();
        let mut unreadable = std::collections::BTreeSet::new();
        for (key, bytes) in engine.store().records_from(b"", None).flatten() {
            match meridian_core::model::codec::decode_record(&bytes) {
                Ok(record) => {
                    contexts.insert(key.into_vec(), record.context());
                }
                Err(_) => {
                    unreadable.insert(key.into_vec());
                }
            }
        }
        Held {
            applied: engine.applied(),
            contexts,
            unreadable,
        }
    }

    /// Whether the write `dot` (to `key`) is reflected here: applied, or in the key's state.
    fn holds(&self, dot: &meridian::Dot, key: Option<&Vec<u8>>) -> bool {
        if key.is_some_and(|k| self.unreadable.contains(k)) {
            return false;
        }
        self.applied.contains(dot)
            || key
                .and_then(|k| self.contexts.get(k))
                .is_some_and(|c| c.contains(dot))
    }

    /// The write `dot` to `key` torn out of the log: the key back to its state `before` the
    /// write, the origin applied only below it.
    fn tear(&mut self, dot: meridian::Dot, key: &[u8], before: Option<&[u8]>) {
        let context = before
            .and_then(|b| meridian_core::model::codec::decode_record(b).ok())
            .map(|r| r.context());
        match context {
            Some(c) => self.contexts.insert(key.to_vec(), c),
            None => self.contexts.remove(key),
        };
        self.applied = meridian::VersionVector::from_entries(self.applied.iter().map(|(o, s)| {
            if o == dot.replica {
                (o, s.min(dot.counter - 1))
            } else {
                (o, s)
            }
        }));
    }
}

/// What a lying member adds to every entry of the vectors it announces.
const LIE: u64 = 1_000_000;

struct World {
    rng: SimRng,
    net: Network,
    regions: Vec<Region>,
    now_ms: u64,
    trace: Fnv,
    violations: Vec<String>,
    /// What each crashed replica had applied when it went down.
    held_at_crash: std::collections::BTreeMap<meridian::MemberId, Held>,
    /// Power losses and wiped disks so far.
    disk_faults: u64,
    /// Links opened at an older protocol version than the newest.
    older_version_links: u64,
    /// Whether power losses may tear the log (lose an earlier write, keep a later one).
    torn_logs: bool,
    /// Whether a region's durability may change between two of its runs.
    durability_switch: bool,
    /// Whether records (not only log entries) may be damaged.
    corrupt_records: bool,
    /// Logs torn, backups restored, I1 violations so far.
    torn: u64,
    restores: u64,
    i1_violations: u64,
    /// Records damaged at a region (region, key), for the checks to leave aside until they
    /// decode again; and how many items were damaged.
    corrupted: std::collections::BTreeSet<(usize, Vec<u8>)>,
    corruptions: u64,
    /// The routed client sessions, when the run has them.
    clients: Option<clients::Clients>,
    /// The change-feed consumer beside the workload.
    feed: feed_consumer::FeedConsumer,
    /// What each region hid as expired, and at which of its read times (`expired.rs`).
    expired: expired::Hidden,
    /// Dots hidden as expired, removed after, shown again after an extension.
    expired_counts: (u64, u64, u64),
}

impl World {
    /// Region `i`'s freeze (from, until), while it lasts.
    fn frozen(&self, i: usize) -> Option<(u64, u64)> {
        self.regions[i]
            .frozen
            .filter(|(_, until)| self.now_ms < *until)
    }

    fn members(&self) -> Vec<meridian::MemberId> {
        (0..self.regions.len())
            .filter(|i| !self.regions[*i].dead)
            .map(|i| sim_replica(i, self.regions[i].incarnation))
            .collect()
    }

    fn open(&mut self, i: usize) -> Result<(), String> {
        if self.regions[i].dead {
            // Back from the dead: an empty disk and a new identity, added to every member list.
            let r = &mut self.regions[i];
            let _ = std::fs::remove_dir_all(&r.dir);
            // The old disk's last sync point goes with it: a power loss of the new member
            // must not bring back the old one's directory.
            if let Some((synced, _)) = r.synced.take() {
                let _ = std::fs::remove_dir_all(synced);
            }
            if let Some((backup, _)) = r.backup.take() {
                let _ = std::fs::remove_dir_all(backup);
            }
            r.incarnation += 1;
            r.dead = false;
            // A new member: nothing of the old one's origin or its runs applies.
            r.node_origin = None;
            r.lost_tail = false;
            r.expect_after_open = None;
            let id = sim_replica(i, r.incarnation);
            for j in 0..self.regions.len() {
                self.with_node(j, |n, _| n.repl.add_member(id));
            }
            self.trace.write(b"reborn");
        }
        let members = self.members();
        let switch = self.durability_switch
            && self.regions[i].node_origin.is_some()
            && self.rng.below(4) == 0;
        let r = &mut self.regions[i];
        if switch {
            // The operator changed the setting between two runs.
            r.durability = match r.durability {
                meridian::Durability::Wal => meridian::Durability::Sync,
                meridian::Durability::Sync => meridian::Durability::Wal,
            };
        }
        let id = sim_replica(i, r.incarnation);
        let config = Config {
            clock: r.clock.clone(),
            member_id: Some(id),
            random: Arc::new(SharedRng::new(self.rng.next_u64())),
            durability: r.durability,
            boot_id: Some(format!("boot-{}", r.boot)),
            clock_skew_ms_max: SKEW_MS_MAX as u64,
            ..Config::default()
        };
        let origin_before = r.node_origin.take();
        let engine = Engine::open(&r.dir, config)
            .map_err(|e| format!("open region {i}: {e}"))?
            .replication();
        let (lost_tail, wiped) = (
            std::mem::take(&mut r.lost_tail),
            std::mem::take(&mut r.wiped),
        );
        if lost_tail || wiped || origin_before.is_none() {
            // Writes lost with a torn log or a disk, or a new member: what it hid is not its.
            self.expired.retain(|(region, _), _| *region != i);
        }
        match origin_before {
            Some(o) if lost_tail && o == engine.origin_id() => self.violations.push(format!(
                "region {i} reopened after losing writes it numbered and writes under origin {o} again"
            )),
            Some(o) if !lost_tail && !wiped && o != engine.origin_id() => {
                self.violations.push(format!(
                    "region {i} lost nothing but reopened under a new origin ({o} -> {})",
                    engine.origin_id()
                ))
            }
            _ => {}
        }
        r.checked = None;
        r.verified.clear();
        r.frozen = None;
        if r.runs > 0 {
            // Restarted: upgraded to this release, if it was not.
            r.protocol_max = PROTOCOL_VERSION;
        }
        r.runs += 1;
        engine
            .attach()
            .map_err(|e| format!("attach region {i}: {e}"))?;
        let repl_config = ReplicationConfig {
            region: REGIONS[i].to_string(),
            members,
            session: self.rng.next_u64(),
            // Writes that cannot be had whole are waited for 5 s of simulated time (the heal
            // bound is 30 s), not the 30 s a node waits.
            missing_wait_ms: MISSING_WAIT_MS,
            // A restored region waits as long for a peer that saw all its copy held.
            reconcile_wait_ms: MISSING_WAIT_MS,
            ..ReplicationConfig::default()
        };
        r.node = Some(Node {
            repl: Replicator::new(id, repl_config),
            engine,
        });
        for j in 0..self.regions.len() {
            if j != i && self.regions[j].node.is_some() {
                let member_j = sim_replica(j, self.regions[j].incarnation);
                // Both ends speak from the oldest version up: the link runs at the lower of
                // their newest, as the runtime's ALPN negotiation settles it.
                let version = self.regions[i]
                    .protocol_max
                    .min(self.regions[j].protocol_max);
                if version < PROTOCOL_VERSION {
                    self.older_version_links += 1;
                }
                self.with_node(i, |n, now| {
                    n.repl
                        .connected_at(LinkId(j as u32), member_j, version, &n.engine, now)
                });
                self.with_node(j, |n, now| {
                    n.repl
                        .connected_at(LinkId(i as u32), id, version, &n.engine, now)
                });
                self.flush(i);
                self.flush(j);
            }
        }
        Ok(())
    }

    fn crash(&mut self, i: usize) {
        if let Some(n) = &self.regions[i].node {
            self.held_at_crash
                .insert(n.engine.member_id(), Held::of(&n.engine));
            self.regions[i].node_origin = Some(n.engine.origin_id());
        }
        if let Some(n) = self.regions[i].node.take() {
            n.engine.into_engine().close_as_crashed();
        }
        self.net.drop_region(i);
        for j in 0..self.regions.len() {
            self.with_node(j, |n, _| n.repl.disconnected(LinkId(i as u32)));
        }
        self.regions[i].down_since = self.now_ms;
        self.regions[i].frozen = None;
        self.clients_region_down(i);
        self.trace.write(b"crash");
        self.trace.write_u64(i as u64);
    }

    fn with_node<T>(&mut self, i: usize, f: impl FnOnce(&mut Node, u64) -> T) -> Option<T> {
        let now = self.now_ms;
        self.regions[i].node.as_mut().map(|n| f(n, now))
    }

    /// Hands a node's outputs to the network.
    fn flush(&mut self, i: usize) {
        let mut outs = Vec::new();
        if let Some(n) = self.regions[i].node.as_mut() {
            while let Some(o) = n.repl.poll_output() {
                outs.push(o);
            }
        }
        let liar = self.regions[i].liar;
        for o in outs {
            match o {
                Output::Send { link: peer, frame } => {
                    let frame = if liar { inflate_claims(frame) } else { frame };
                    self.net
                        .send(&mut self.rng, self.now_ms, i, peer.0 as usize, frame);
                }
                Output::Close { link: peer, reason } => {
                    self.violations.push(format!(
                        "region {i} closed its link to {}: {reason}",
                        peer.0
                    ));
                }
                // No region runs twice here: a region told it is fenced is a bug.
                Output::Fenced { reason } => {
                    self.violations
                        .push(format!("region {i} was fenced: {reason}"));
                }
            }
        }
    }

    fn replication_result<E: std::fmt::Display>(&mut self, i: usize, r: Option<Result<(), E>>) {
        if let Some(Err(e)) = r {
            self.violations
                .push(format!("region {i}: replication error: {e}"));
        }
        self.flush(i);
    }

    fn set_time(&mut self, t: u64) {
        self.now_ms = t;
        for r in &self.regions {
            r.clock.now_ms.store(t, Ordering::SeqCst);
        }
    }

    fn deliver_due(&mut self) {
        while let Some(m) = self.net.pop_due(self.now_ms) {
            if let Some((_, until)) = self.frozen(m.to) {
                self.net.hold(m, until);
                continue;
            }
            self.trace.write_u64(m.at_ms);
            self.trace.write_u64(m.from as u64 * 16 + m.to as u64);
            let r = self.with_node(m.to, |n, now| {
                n.repl
                    .handle(LinkId(m.from as u32), &m.bytes, &n.engine, now)
            });
            self.replication_result(m.to, r);
        }
    }

    fn tick_all(&mut self) {
        for i in 0..self.regions.len() {
            if self.frozen(i).is_some() {
                continue;
            }
            let r = self.with_node(i, |n, now| n.repl.tick(&n.engine, now));
            self.replication_result(i, r);
        }
    }

    fn up(&self) -> Vec<usize> {
        (0..self.regions.len())
            .filter(|i| self.regions[*i].node.is_some())
            .collect()
    }

    /// Converged: every region up, same applied vector, same record digest. A record that
    /// does not decode (damaged, not yet repaired from a peer) is not converged yet: the
    /// error is returned at the deadline only.
    fn converged(&self) -> Result<Option<u64>, String> {
        let mut first: Option<(meridian::VersionVector, u64)> = None;
        for r in &self.regions {
            let Some(n) = &r.node else { return Ok(None) };
            let applied = n.engine.applied();
            let Ok(d) = digest(&n.engine, &applied) else {
                return Ok(None);
            };
            let state = (applied.clone(), d);
            match &first {
                None => first = Some(state),
                Some(f) if *f != state => return Ok(None),
                Some(_) => {}
            }
        }
        Ok(first.map(|(_, d)| d))
    }

    fn random_fault(&mut self, faults: &Faults, history: &mut History) {
        let n = self.regions.len();
        let a = self.rng.below(n as u64) as usize;
        let b = (a + 1 + self.rng.below(n as u64 - 1) as usize) % n;
        match self.rng.below(15) {
            0 if faults.partitions => {
                // Full partition of one region.
                for j in 0..n {
                    if j != a {
                        self.net.cut.insert((a, j));
                        self.net.cut.insert((j, a));
                    }
                }
            }
            1 | 2 if faults.partitions => {
                // Partial: one link cut both ways, the rest stays up.
                self.net.cut.insert((a, b));
                self.net.cut.insert((b, a));
            }
            3 if faults.partitions => {
                self.net.cut.insert((a, b)); // one-way
            }
            4 => {
                // Links heal (also makes cut links flap).
                let cut: Vec<_> = self.net.cut.iter().copied().collect();
                if !cut.is_empty() {
                    let k = cut[self.rng.below(cut.len() as u64) as usize];
                    self.net.cut.remove(&k);
                    self.net.cut.remove(&(k.1, k.0));
                }
            }
            5 if faults.crashes => {
                if self.regions[a].node.is_some() && self.up().len() > 1 {
                    self.crash(a);
                } else if self.regions[a].node.is_none() {
                    if let Err(e) = self.open(a) {
                        self.violations.push(e);
                    }
                }
            }
            7 if faults.crashes && self.regions[a].node.is_none() && !self.regions[a].dead => {
                // Declare a crashed region dead, if no write lives only on its disk (its own, or
                // one it alone had received): every origin it held is held as far by a live region.
                let id = sim_replica(a, self.regions[a].incarnation);
                // What it holds reaches past its applied vector where its log holds writes
                // beyond a missing number (their effects are in its records).
                let held = self
                    .held_at_crash
                    .get(&id)
                    .map(|h| {
                        let mut reach = h.applied.clone();
                        h.contexts.values().for_each(|c| reach.join(c));
                        reach
                    })
                    .unwrap_or_default();
                let live: Vec<meridian::VersionVector> = self
                    .up()
                    .iter()
                    .filter_map(|j| self.regions[*j].node.as_ref().map(|n| n.engine.applied()))
                    .collect();
                let safe = held.iter().all(|(o, s)| live.iter().any(|v| v.get(o) >= s));
                if safe {
                    self.regions[a].dead = true;
                    for j in 0..n {
                        self.with_node(j, |node, _| node.repl.remove_member(id));
                    }
                    self.trace.write(b"dead");
                }
            }
            6 if faults.clock_skew => {
                let skew = self.rng.below(2 * SKEW_MS_MAX as u64 + 1) as i64 - SKEW_MS_MAX;
                self.regions[a].clock.skew_ms.store(skew, Ordering::SeqCst);
                self.regions[a].skews.push((self.now_ms, skew));
            }
            8 if faults.power_loss => self.sync_point(a),
            9 if faults.power_loss => {
                self.disk_faults += 1;
                self.power_loss(a, history)
            }
            10 if faults.wiped_disks => {
                self.disk_faults += 1;
                self.wipe(a, history)
            }
            11 if faults.lying_peers => {
                self.regions[a].liar = !self.regions[a].liar;
                self.trace.write(b"liar");
            }
            12 if faults.restored_backups => self.backup(a),
            13 if faults.restored_backups => {
                self.disk_faults += 1;
                self.restore(a, history)
            }
            14 if faults.corrupt_storage => self.corrupt(a, history),
            _ => {}
        }
        self.trace.write_u64(self.net.cut.len() as u64);
    }
}

/// A lying member's frame: the vectors of its `Hello`s and `Ack`s inflated by `LIE`.
fn inflate_claims(frame: Vec<u8>) -> Vec<u8> {
    meridian_core::replication::Frame::with_claims_raised(frame, LIE)
}

/// Runs one seed in `dir` (a scratch directory that will hold one RocksDB per region).
pub fn run_seed(opts: &SimOptions, seed: u64, dir: &std::path::Path) -> SeedReport {
    let mut rng = SimRng::new(seed);
    let regions = opts.regions.clamp(3, REGIONS.len());
    let faults = opts.faults;
    let mut net = Network::default();
    if faults.lossy_links {
        net.faults = LinkFaults {
            loss: 0.05,
            duplicate: 0.03,
            jitter: 0.5,
        };
    }
    let mut world = World {
        rng: SimRng::new(rng.next_u64()),
        net,
        regions: (0..regions)
            .map(|i| Region {
                dir: dir.join(REGIONS[i]),
                clock: Arc::default(),
                node: None,
                incarnation: 0,
                dead: false,
                durability: if rng.below(2) == 0 {
                    meridian::Durability::Sync
                } else {
                    meridian::Durability::Wal
                },
                boot: 0,
                synced: None,
                liar: false,
                backup: None,
                lost_tail: false,
                expect_after_open: None,
                node_origin: None,
                wiped: false,
                // Decided by the seed's bits, not drawn: seeds keep their random sequence.
                protocol_max: if faults.mixed_versions && (seed >> (8 + i)) & 1 == 1 {
                    *PROTOCOL_VERSIONS.start()
                } else {
                    PROTOCOL_VERSION
                },
                checked: None,
                verified: Default::default(),
                frozen: None,
                down_since: 0,
                runs: 0,
                skews: vec![(0, 0)],
            })
            .collect(),
        now_ms: 0,
        trace: Fnv::default(),
        violations: Vec::new(),
        held_at_crash: Default::default(),
        disk_faults: 0,
        older_version_links: 0,
        torn_logs: faults.torn_logs,
        durability_switch: faults.durability_switch,
        corrupt_records: faults.corrupt_records,
        torn: 0,
        restores: 0,
        i1_violations: 0,
        corrupted: Default::default(),
        corruptions: 0,
        // Its own random stream: a run without clients draws the same workload and faults.
        clients: opts.clients.then(|| {
            clients::Clients::new(SimRng::new(seed ^ 0xC11E_4750_0000_0001), regions, seed)
        }),
        feed: Default::default(),
        expired: Default::default(),
        expired_counts: (0, 0, 0),
    };
    let mut report = SeedReport {
        seed,
        ..SeedReport::default()
    };
    for i in 0..regions {
        if let Err(e) = world.open(i) {
            report.violations.push(e);
            return report;
        }
    }
    let mut history = History::default();
    let mut sessions = vec![Session::default(); 4];
    let op_gap = (opts.fault_phase_ms / opts.ops.max(1) as u64).max(1);
    let mut next_op = 0;
    let mut next_tick = TICK_MS;
    let mut next_fault = 500;
    let mut ops_done = 0;
    let heal_at = opts.fault_phase_ms;
    let deadline = heal_at + opts.heal_bound_ms;
    let mut healed = false;
    let mut next_check = heal_at;
    let mut reclaim_until: Option<u64> = None;
    let mut settled_writes: Option<u64> = None;

    loop {
        let mut t = next_tick.min(if healed {
            next_check
        } else {
            next_fault.min(heal_at)
        });
        if ops_done < opts.ops {
            t = t.min(next_op);
        }
        if let Some(m) = world.net.next_at() {
            t = t.min(m);
        }
        if let Some(c) = world.clients_next_at() {
            t = t.min(c);
        }
        world.set_time(t.max(world.now_ms));
        world.deliver_due();

        if !healed && world.now_ms >= heal_at {
            // Heal: all links up, no loss, crashed regions restarted, clocks stay skewed.
            healed = true;
            world.net.cut.clear();
            world.net.faults = LinkFaults::default();
            for r in world.regions.iter_mut() {
                r.liar = false;
            }
            world.clients_heal();
            for i in 0..regions {
                if world.regions[i].node.is_none() {
                    if let Err(e) = world.open(i) {
                        world.violations.push(e);
                    }
                }
            }
        }
        if ops_done < opts.ops && world.now_ms >= next_op {
            let up = world.up();
            let region = up[rng.below(up.len() as u64) as usize];
            let s = rng.below(sessions.len() as u64) as usize;
            let op_id = seed.wrapping_mul(1_000_003).wrapping_add(ops_done as u64);
            let expiry = world
                .regions
                .iter()
                .all(|r| r.protocol_max >= EXPIRY_VERSION);
            let at = workload::At { region, expiry };
            let frozen = world.frozen(region).is_some();
            let stepped = world.regions[region].node.as_ref().map(|n| {
                if frozen {
                    // Its process is stopped: the embedded application with it.
                    Ok(workload::StepOutcome::unavailable())
                } else if n.engine.origin_status().writable {
                    let forge = faults.hostile_clients;
                    workload::step(
                        &mut rng,
                        &n.engine,
                        at,
                        &mut sessions[s],
                        &mut history,
                        op_id,
                        forge,
                    )
                } else {
                    // Refusing writes after a storage failure.
                    Ok(workload::StepOutcome::unavailable())
                }
            });
            match stepped {
                Some(Ok(step)) => {
                    world.trace.write(&step.trace);
                    report.unavailable += u64::from(step.unavailable);
                    report.not_yet_visible += u64::from(step.not_yet_visible);
                    report.ryw_checks += u64::from(step.ryw_checked);
                    if let Some(v) = step.ryw_violation {
                        report.ryw_violations += 1;
                        world.violations.push(v);
                    }
                }
                // A key damaged at this region fails its reads and writes until repaired.
                Some(Err(e)) if e.starts_with("corrupt record") => report.unavailable += 1,
                Some(Err(e)) => world
                    .violations
                    .push(format!("operation failed in region {region}: {e}")),
                None => {}
            }
            let r = world.with_node(region, |n, now| n.repl.local_write(&n.engine, now));
            world.replication_result(region, r);
            ops_done += 1;
            next_op = world.now_ms + 1 + rng.below(2 * op_gap);
        }
        world.clients_step(&mut history);
        if world.now_ms >= next_tick {
            world.tick_all();
            world.feed_step();
            next_tick = world.now_ms + TICK_MS;
        }
        if !healed && world.now_ms >= next_fault {
            world.random_fault(&faults, &mut history);
            next_fault = world.now_ms + 200 + world.rng.below(1_500);
        }
        world.check_i1(&history);
        world.check_expired();
        if healed && world.now_ms >= next_check {
            next_check = world.now_ms + CHECK_MS;
            match world.converged() {
                Ok(Some(d))
                    if ops_done >= opts.ops
                        && world.clients_idle()
                        && report.convergence_ms.is_none() =>
                {
                    report.convergence_ms = Some(world.now_ms - heal_at);
                    world.trace.write_u64(d);
                    reclaim_until = Some(world.now_ms + RECLAIM_MS);
                }
                Ok(_) => {}
                Err(e) => {
                    world.violations.push(e);
                    break;
                }
            }
            // A write after convergence (the sweep reclaiming an expired value is one) starts
            // the reclaim clock again, up to a bound.
            if reclaim_until.is_some() {
                let written: u64 = world
                    .regions
                    .iter()
                    .filter_map(|r| r.node.as_ref())
                    .map(|n| n.engine.applied().iter().map(|(_, c)| c).sum::<u64>())
                    .sum();
                if settled_writes.is_some_and(|w| w != written)
                    && world.now_ms + RECLAIM_MS <= deadline + EXPIRY_RECLAIM_MS
                {
                    reclaim_until = Some(world.now_ms + RECLAIM_MS);
                }
                settled_writes = Some(written);
            }
            if reclaim_until.is_some_and(|t| world.now_ms >= t) {
                break;
            }
            if report.convergence_ms.is_none() && world.now_ms >= deadline {
                report.divergences += 1;
                let states: Vec<String> = world
                    .regions
                    .iter()
                    .map(|r| match &r.node {
                        Some(n) => format!(
                            "{}={} digest {:x}",
                            n.engine.origin_id(),
                            n.engine.applied(),
                            digest(&n.engine, &n.engine.applied()).unwrap_or(0)
                        ),
                        None => "down".into(),
                    })
                    .collect();
                world.violations.push(format!(
                    "not converged {} ms after the heal: {}",
                    opts.heal_bound_ms,
                    states.join("; ")
                ));
                if std::env::var("MERIDIAN_SIM_DEBUG").is_ok() {
                    for (i, r) in world.regions.iter().enumerate() {
                        let Some(n) = &r.node else { continue };
                        eprintln!(
                            "region {i} member {} origin {} applied {} floors {}",
                            n.engine.member_id(),
                            n.engine.origin_id(),
                            n.engine.applied(),
                            meridian_core::replication::ReplicaStore::log_floor(&n.engine)
                        );
                        for (id, p) in n.repl.peers() {
                            eprintln!(
                                "  link {id:?} member {} state {:?} sent {} acked {} inflight {} claimed {} origin {:?}",
                                p.member, p.state, p.sent, p.acked, p.inflight_bytes, p.claimed, p.origin
                            );
                        }
                    }
                    for r in world.regions.iter().filter_map(|r| r.node.as_ref()) {
                        for item in r.engine.store().records_from(b"", None).flatten() {
                            let rec = meridian_core::model::codec::decode_record(&item.1);
                            eprintln!(
                                "{} {:?} {:?}",
                                r.engine.origin_id(),
                                String::from_utf8_lossy(&item.0),
                                rec.map(|x| (x.is_bottom(), x.context().to_string(), x))
                            );
                        }
                    }
                }
                break;
            }
        }
    }

    report.operations = ops_done as u64;
    report.disk_faults = world.disk_faults;
    report.older_version_links = world.older_version_links;
    report.simulated_ms = world.now_ms;
    report.bytes_moved = world.net.bytes_sent;
    let (client, client_sessions) = world.clients_finish(report.convergence_ms.is_some());
    report.client = client;
    if report.convergence_ms.is_some() {
        match world.converged() {
            Ok(Some(_)) => {}
            Ok(None) => world
                .violations
                .push("diverged again while reclaiming".into()),
            Err(e) => world.violations.push(e),
        }
        let mut existing = meridian::VersionVector::new();
        for n in world.regions.iter().filter_map(|r| r.node.as_ref()) {
            existing.join(&n.engine.applied());
        }
        for (i, r) in world.regions.iter().enumerate() {
            if let Some(n) = &r.node {
                match unreclaimed(&n.engine, &existing) {
                    Ok((0, 0)) => {}
                    Ok((entries, tombs)) => {
                        let first: Vec<String> = n
                            .engine
                            .store()
                            .log_entries()
                            .take(3)
                            .filter_map(|e| e.ok())
                            .filter_map(|(k, _)| meridian::store::keys::parse_log_key(&k))
                            .map(|(o, s)| format!("{o}:{s}"))
                            .collect();
                        world.violations.push(format!(
                        "region {i}: {entries} log entries and {tombs} tombstones not reclaimed {RECLAIM_MS} ms after convergence (first {first:?}; stable {:?}; floors {})",
                        n.repl.stable(&n.engine).map(|v| v.to_string()), meridian_core::replication::ReplicaStore::log_floor(&n.engine)
                    ))
                    }
                    Err(e) => world.violations.push(e),
                }
            }
        }
        for r in world.regions.iter().filter_map(|r| r.node.as_ref()) {
            let s = r.repl.stats();
            report.antientropy_rounds += s.antientropy_rounds;
            report.linked_states += s.linked_states_sent;
            report.spanned_entries += s.spanned_entries_sent;
            report.linked_unresolved += s.unresolved;
            report.log_entries_reclaimed += s.log_entries_removed;
            report.tombstones_reclaimed += s.tombstones_removed;
            report.declared_lost = report
                .declared_lost
                .max(r.engine.declared_lost().lost.len() as u64);
        }
        sessions.extend(client_sessions);
        (report.session_checks, report.uncoverable_tokens) =
            world.check_sessions(&sessions, &history);
        let writes_lost = !history.lost.is_empty() || report.uncoverable_tokens > 0;
        if let Err(e) = world.feed_check(writes_lost) {
            report.feed_violations += 1;
            world.violations.push(e);
        }
        report.feed_changes = world.feed.changes;
        report.feed_resets = world.feed.resets;
    }
    (
        report.expired_hidden,
        report.expired_removed,
        report.expired_extended,
    ) = world.expired_counts;
    report.i1_violations = world.i1_violations;
    report.torn_logs = world.torn;
    report.restores = world.restores;
    report.corruptions = world.corruptions;
    if std::env::var("MERIDIAN_SIM_DEBUG").is_ok() {
        for (i, r) in world.regions.iter().enumerate() {
            if let Some(n) = &r.node {
                eprintln!(
                    "end: region {i} applied {} stranded {:?} floors {}",
                    n.engine.applied(),
                    meridian_core::replication::ReplicaStore::stranded(&n.engine),
                    meridian_core::replication::ReplicaStore::log_floor(&n.engine)
                );
                for (id, p) in n.repl.peers() {
                    eprintln!("   link {id:?} member {} claimed {}", p.member, p.claimed);
                }
                if let Ok(k) = std::env::var("MERIDIAN_SIM_KEY") {
                    let rec = n
                        .engine
                        .export(k.as_bytes())
                        .ok()
                        .flatten()
                        .map(|b| meridian_core::model::codec::decode_record(&b));
                    eprintln!("   {k}: {rec:?} lost {:?}", n.engine.declared_lost());
                }
            }
        }
    }
    if let Some(n) = world.regions.iter().find_map(|r| r.node.as_ref()) {
        let findings = check(&n.engine, &history);
        report.lost_acked_writes = findings.lost;
        report.lost_by_contract = history.lost.len() as u64;
        report.resurrections = findings.resurrected;
        world.violations.extend(findings.other);
        if findings.lost > 0 {
            world
                .violations
                .push(format!("{} acknowledged writes lost", findings.lost));
        }
        if findings.resurrected > 0 {
            world.violations.push(format!(
                "{} superseded or deleted writes resurrected",
                findings.resurrected
            ));
        }
    }
    report.trace_hash = world.trace.0;
    // The scratch directory goes: nothing to keep at a clean shutdown.
    for r in world.regions.iter_mut() {
        if let Some(n) = r.node.take() {
            n.engine.into_engine().close_as_crashed();
        }
    }
    report.violations.extend(world.violations);
    report
}
