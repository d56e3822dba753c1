//! Active-passive leases under faults: the core's `LeaseKeeper` in every region, driven over a
//! simulated network from one seed. Each region's clock runs at its own rate within the stated
//! drift bound, from its own offset; messages are delayed, lost, duplicated and reordered;
//! partitions come and go; regions crash (forgetting everything) and restart on a new clock;
//! an operator promotes random regions. The check is exact, in real (simulated) time: a region
//! holds the lease from the instant it gathers a majority until the instant its own clock
//! reaches the end of its hold (or it steps down or crashes), and no two such intervals of two
//! regions may overlap. After the faults, with every region up and every link whole, exactly
//! one primary must stand and every region must name it.
//!
//! Clients route their writes with the core's routing state machines, as the runtime's routed
//! client does (nearest-healthy order, a breaker per region, `Attempts`): a region takes a
//! write only while it holds the lease, a secondary redirects to the primary it knows, an
//! answer may be lost. No counter add may be applied in two regions; after healing, every
//! client's writes must succeed.

use super::rng::SimRng;
use meridian::MemberId;
use meridian_core::lease::{LeaseConfig, LeaseKeeper, LeaseMessage};
use meridian_core::routing::{
    order_regions, Attempts, Breaker, BreakerSettings, Candidate, Health, Location, Outcome,
    Verdict,
};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

/// Parts per million.
const PPM: i64 = 1_000_000;
/// Simulated time of the fault phase, and of the heal phase after it.
const FAULT_MS: u64 = 60_000;
const HEAL_MS: u64 = 30_000;
/// Each region ticks this often (real time).
const TICK_MS: u64 = 10;
/// A fault is drawn this often during the fault phase.
const FAULT_EVERY_MS: u64 = 100;
/// Each client writes this often.
const WRITE_EVERY_MS: u64 = 250;
/// Clients per seed.
const CLIENTS: usize = 3;

/// What one seed showed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseReport {
    /// Times a region became primary.
    pub acquisitions: u64,
    /// Messages delivered.
    pub delivered: u64,
    /// Promotions asked for.
    pub promotions: u64,
    /// Client writes that a primary took.
    pub writes: u64,
    /// Client writes answered `NotPrimary` and sent on to the primary.
    pub redirects: u64,
    /// Client writes whose outcome was unknown (a lost answer to a counter add).
    pub unknown: u64,
}

/// A client somewhere, routing its writes.
struct SimClient {
    place: Location,
    breakers: Vec<Breaker>,
    /// Outcome of its last write during the heal phase (`None`: none yet).
    healed_ok: Option<bool>,
    /// The write under way, if any.
    pending: Option<PendingWrite>,
}

/// A client's write on its way through the regions: an attempt whose answer was lost is
/// known lost only after the client's timeout, and a region it cannot reach after its
/// connection timeout, so leases may move between two attempts.
struct PendingWrite {
    id: u64,
    counter: bool,
    attempts: Attempts,
    /// When the client acts next, and the outcome it learns then (`None`: start the next
    /// attempt).
    resume_at: u64,
    learned: Option<Outcome>,
}

/// How long a client waits for an answer before it counts it lost.
const REQUEST_TIMEOUT_MS: u64 = 300;
/// How long a client takes to find a region unreachable.
const CONNECT_TIMEOUT_MS: u64 = 100;

/// A region's clock: `offset + real * (1 + drift)`, with `drift` in parts per million.
#[derive(Clone, Copy, Debug)]
struct Clock {
    offset: u64,
    drift_ppm: i64,
}

impl Clock {
    fn local(&self, real: u64) -> u64 {
        self.offset + (real as i128 * (PPM + self.drift_ppm) as i128 / PPM as i128) as u64
    }

    /// The first real millisecond at which the local clock reads at least `local`.
    fn real_at(&self, local: u64) -> u64 {
        let since = local.saturating_sub(self.offset) as i128;
        let rate = (PPM + self.drift_ppm) as i128;
        ((since * PPM as i128 + rate - 1) / rate) as u64
    }
}

struct Region {
    keeper: Option<LeaseKeeper>,
    clock: Clock,
    /// Real time until which this region's current (or last) hold runs.
    claim_end: u64,
    primary: bool,
    place: Location,
}

/// A message in flight, ordered by arrival.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    due: std::cmp::Reverse<(u64, u64)>,
    from: usize,
    to: usize,
    message: Wire,
}

/// `LeaseMessage` with an order, for the heap.
#[derive(PartialEq, Eq)]
struct Wire(LeaseMessage);

impl PartialOrd for Wire {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Wire {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

struct World {
    rng: SimRng,
    regions: Vec<Region>,
    config: LeaseConfig,
    in_flight: BinaryHeap<InFlight>,
    /// Largest one-way delay.
    latency_ms: u64,
    sent: u64,
    /// Links cut, both ways.
    cut: Vec<(usize, usize)>,
    loss: f64,
    report: LeaseReport,
    clients: Vec<SimClient>,
    /// Links cut between a client and a region.
    client_cut: Vec<(usize, usize)>,
    /// For every counter add: the regions that applied it.
    applied_adds: BTreeMap<u64, BTreeSet<usize>>,
    next_write: u64,
}

fn member(i: usize) -> MemberId {
    MemberId(i as u64 + 1)
}

impl World {
    fn new_clock(&mut self, bound_ppm: u64) -> Clock {
        let bound = bound_ppm as i64;
        Clock {
            offset: self.rng.below(1 << 40),
            drift_ppm: self.rng.below(2 * bound as u64 + 1) as i64 - bound,
        }
    }

    fn start(&mut self, i: usize, real: u64) {
        let clock = self.new_clock(self.config.drift_ppm);
        self.regions[i].clock = clock;
        let session = self.rng.next_u64();
        self.regions[i].keeper = Some(LeaseKeeper::new(
            member(i),
            self.config.clone(),
            clock.local(real),
            session,
        ));
    }

    fn crash(&mut self, i: usize, real: u64) {
        let r = &mut self.regions[i];
        r.keeper = None;
        if r.primary {
            r.claim_end = r.claim_end.min(real);
            r.primary = false;
        }
    }

    fn linked(&self, a: usize, b: usize) -> bool {
        !self.cut.contains(&(a, b)) && !self.cut.contains(&(b, a))
    }

    /// Sends what region `i` queued, with latency, loss and duplication.
    fn transmit(&mut self, i: usize, real: u64) {
        let mut outgoing = Vec::new();
        if let Some(k) = &mut self.regions[i].keeper {
            while let Some(out) = k.poll_output() {
                outgoing.push(out);
            }
        }
        for out in outgoing {
            let to = out.to.0 as usize - 1;
            let copies = if self.rng.chance(0.05) { 2 } else { 1 };
            for _ in 0..copies {
                if self.rng.chance(self.loss) {
                    continue;
                }
                self.sent += 1;
                // Now and then a message lingers for seconds (a queue somewhere), long enough
                // to reach a process restarted since it was sent.
                let delay = if self.rng.chance(0.01) {
                    self.rng.below(10_000)
                } else {
                    self.rng.below(self.latency_ms)
                };
                let due = real + 1 + delay;
                self.in_flight.push(InFlight {
                    due: std::cmp::Reverse((due, self.sent)),
                    from: i,
                    to,
                    message: Wire(out.message.clone()),
                });
            }
        }
    }

    /// After region `i` acted at `real`: its hold as an interval of real time, checked
    /// against every other region's.
    fn observe(&mut self, i: usize, real: u64) -> Result<(), String> {
        let Some(k) = &self.regions[i].keeper else {
            return Ok(());
        };
        let local = self.regions[i].clock.local(real);
        let now_primary = k.is_primary(local);
        let until = k.holding_until();
        let r = &self.regions[i];
        let was = r.primary;
        if now_primary {
            let end = until.map_or(real, |u| r.clock.real_at(u));
            if !was {
                self.report.acquisitions += 1;
                for (j, other) in self.regions.iter().enumerate() {
                    if j != i && other.claim_end > real {
                        return Err(format!(
                            "two primaries: region {i} became primary at {real} ms while region {j} holds until {} ms",
                            other.claim_end
                        ));
                    }
                }
            }
            let r = &mut self.regions[i];
            r.claim_end = if was { r.claim_end.max(end) } else { end };
            r.primary = true;
        } else if was {
            let r = &mut self.regions[i];
            r.claim_end = r.claim_end.min(real.max(1));
            r.primary = false;
        }
        Ok(())
    }

    fn tick(&mut self, i: usize, real: u64) -> Result<(), String> {
        let local = self.regions[i].clock.local(real);
        if let Some(k) = &mut self.regions[i].keeper {
            k.tick(local);
        }
        self.observe(i, real)?;
        self.transmit(i, real);
        Ok(())
    }

    fn deliver_due(&mut self, real: u64) -> Result<(), String> {
        while self.in_flight.peek().is_some_and(|m| m.due.0 .0 <= real) {
            let Some(m) = self.in_flight.pop() else { break };
            if !self.linked(m.from, m.to) {
                continue;
            }
            let local = self.regions[m.to].clock.local(real);
            let Some(k) = &mut self.regions[m.to].keeper else {
                continue;
            };
            k.handle(member(m.from), m.message.0, local);
            self.report.delivered += 1;
            self.observe(m.to, real)?;
            self.transmit(m.to, real);
        }
        Ok(())
    }

    /// Client `c` acts: starts a write (a counter add, not idempotent, or a set, idempotent)
    /// routed as the runtime's routed client routes it, or goes on with the one under way.
    fn client_step(&mut self, c: usize, real: u64, healed: bool) -> Result<(), String> {
        let mut pending = match self.clients[c].pending.take() {
            Some(p) if real < p.resume_at => {
                self.clients[c].pending = Some(p);
                return Ok(());
            }
            Some(p) => p,
            None if !real.is_multiple_of(WRITE_EVERY_MS) => return Ok(()),
            None => self.start_write(c, real),
        };
        loop {
            let verdict = match pending.learned.take() {
                Some(outcome) => pending.attempts.record(outcome),
                None => Verdict::Continue,
            };
            match verdict {
                Verdict::Done | Verdict::Unknown => {
                    if verdict == Verdict::Unknown {
                        self.report.unknown += 1;
                    }
                    if healed {
                        self.clients[c].healed_ok = Some(verdict == Verdict::Done);
                    }
                    return Ok(());
                }
                Verdict::Continue => {}
            }
            let Some(i) = pending.attempts.next_region() else {
                if healed {
                    self.clients[c].healed_ok = Some(false);
                }
                return Ok(());
            };
            let (outcome, delay) = self.attempt_write(c, i, &pending, real)?;
            pending.learned = Some(outcome);
            if delay > 0 {
                pending.resume_at = real + delay;
                self.clients[c].pending = Some(pending);
                return Ok(());
            }
        }
    }

    /// A new write of client `c`, its regions in the order the client tries them.
    fn start_write(&mut self, c: usize, real: u64) -> PendingWrite {
        let n = self.regions.len();
        let candidates: Vec<Candidate> = (0..n)
            .map(|i| Candidate {
                region: format!("r{i}"),
                location: Some(self.regions[i].place),
                rtt_ms: None,
                health: Health::of(&self.clients[c].breakers[i], real),
            })
            .collect();
        let order: Vec<usize> = order_regions(&candidates, Some(&self.clients[c].place))
            .into_iter()
            .map(|r| r.index)
            .collect();
        let allowed: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&i| self.clients[c].breakers[i].may_try(real))
            .collect();
        let plan = if allowed.is_empty() { order } else { allowed };
        let counter = self.rng.chance(0.5);
        self.next_write += 1;
        PendingWrite {
            id: self.next_write,
            counter,
            attempts: Attempts::new(plan, !counter),
            resume_at: real,
            learned: None,
        }
    }

    /// One attempt of a write at region `i`: its outcome, and how long the client takes to
    /// learn it.
    fn attempt_write(
        &mut self,
        c: usize,
        i: usize,
        write: &PendingWrite,
        real: u64,
    ) -> Result<(Outcome, u64), String> {
        self.clients[c].breakers[i].try_acquire(real);
        let reachable = self.regions[i].keeper.is_some() && !self.client_cut.contains(&(c, i));
        let local = self.regions[i].clock.local(real);
        let keeper = self.regions[i].keeper.as_ref().filter(|_| reachable);
        let Some(k) = keeper else {
            self.clients[c].breakers[i].on_failure(real);
            return Ok((Outcome::NotServed, CONNECT_TIMEOUT_MS));
        };
        if !k.is_primary(local) {
            self.report.redirects += 1;
            self.clients[c].breakers[i].on_success();
            let primary = k.primary(local).map(|m| m.0 as usize - 1);
            return Ok((Outcome::NotPrimary(primary), 0));
        }
        self.report.writes += 1;
        if write.counter {
            let regions = self.applied_adds.entry(write.id).or_default();
            regions.insert(i);
            if regions.len() > 1 {
                return Err(format!(
                    "a counter add was applied in regions {regions:?} (client {c}, {real} ms)"
                ));
            }
        }
        if self.rng.chance(self.loss) {
            self.clients[c].breakers[i].on_failure(real + REQUEST_TIMEOUT_MS);
            Ok((Outcome::Lost, REQUEST_TIMEOUT_MS))
        } else {
            self.clients[c].breakers[i].on_success();
            Ok((Outcome::Answered, 0))
        }
    }

    /// A fault of the fault phase, drawn every `FAULT_EVERY_MS`: partitions that last
    /// seconds (longer than leases), crashes, restarts, promotions, loss rates.
    fn random_fault(&mut self, real: u64) {
        let n = self.regions.len();
        match self.rng.below(100) {
            0..=2 => {
                // A partition: one region cut off, or a random set of links.
                self.cut.clear();
                if self.rng.chance(0.5) {
                    let i = self.rng.below(n as u64) as usize;
                    self.cut.extend((0..n).filter(|&j| j != i).map(|j| (i, j)));
                } else {
                    for a in 0..n {
                        for b in a + 1..n {
                            if self.rng.chance(0.3) {
                                self.cut.push((a, b));
                            }
                        }
                    }
                }
            }
            3..=4 => self.cut.clear(),
            5 => {
                let i = self.rng.below(n as u64) as usize;
                if self.regions[i].keeper.is_some() {
                    self.crash(i, real);
                }
            }
            6..=8 => {
                let i = self.rng.below(n as u64) as usize;
                if self.regions[i].keeper.is_none() {
                    self.start(i, real);
                }
            }
            9..=10 => {
                let i = self.rng.below(n as u64) as usize;
                let local = self.regions[i].clock.local(real);
                if let Some(k) = &mut self.regions[i].keeper {
                    k.promote(local);
                    self.report.promotions += 1;
                }
            }
            11 => self.loss = self.rng.below(30) as f64 / 100.0,
            12..=13 => {
                // A client cut off from a region, or every client link healed.
                if self.rng.chance(0.5) {
                    let c = self.rng.below(CLIENTS as u64) as usize;
                    let i = self.rng.below(n as u64) as usize;
                    self.client_cut.push((c, i));
                } else {
                    self.client_cut.clear();
                }
            }
            _ => {}
        }
    }
}

/// Runs one seed: faults for a minute, then healing; says what went wrong, if anything.
pub fn run_lease_seed(seed: u64) -> Result<LeaseReport, String> {
    let mut rng = SimRng::new(seed ^ 0x1EA5E);
    let n = if rng.chance(0.5) { 3 } else { 5 };
    let members: Vec<MemberId> = (0..n).map(member).collect();
    let mut config = LeaseConfig::new(members);
    config.lease_ms = 1_000 + rng.below(3_000);
    config.renew_every_ms = config.lease_ms / 4;
    // Some seeds run a fast network with quick rounds: candidates then land right at the end
    // of promises, where a holder that overstays would be caught.
    let fast = rng.chance(0.5);
    config.round_timeout_ms = if fast {
        20 + rng.below(40)
    } else {
        300 + rng.below(500)
    };
    let latency_ms = if fast { 5 } else { 150 };
    config.failover_after_ms = Some(config.lease_ms + rng.below(3_000));
    config.stagger_ms = 200 + rng.below(800);
    let place = |rng: &mut SimRng| {
        let lat = rng.below(120) as f64 - 60.0;
        let lon = rng.below(360) as f64 - 180.0;
        Location::new(lat, lon).unwrap_or(Location {
            latitude: 0.0,
            longitude: 0.0,
        })
    };
    let regions = (0..n)
        .map(|_| Region {
            keeper: None,
            clock: Clock {
                offset: 0,
                drift_ppm: 0,
            },
            claim_end: 0,
            primary: false,
            place: place(&mut rng),
        })
        .collect();
    let clients = (0..CLIENTS)
        .map(|_| SimClient {
            place: place(&mut rng),
            breakers: vec![Breaker::new(BreakerSettings::default()); n],
            healed_ok: None,
            pending: None,
        })
        .collect();
    let mut world = World {
        rng,
        regions,
        config,
        in_flight: BinaryHeap::new(),
        latency_ms,
        sent: 0,
        cut: Vec::new(),
        loss: 0.0,
        report: LeaseReport::default(),
        clients,
        client_cut: Vec::new(),
        applied_adds: BTreeMap::new(),
        next_write: 0,
    };
    for i in 0..n {
        world.start(i, 0);
    }
    let mut real = 0;
    while real < FAULT_MS + HEAL_MS {
        real += 1;
        if real < FAULT_MS {
            if real % FAULT_EVERY_MS == 0 {
                world.random_fault(real);
            }
        } else if real == FAULT_MS {
            world.cut.clear();
            world.client_cut.clear();
            world.loss = 0.0;
            for i in 0..n {
                if world.regions[i].keeper.is_none() {
                    world.start(i, real);
                }
            }
        }
        world.deliver_due(real)?;
        if real % TICK_MS == 0 {
            // Clients' writes in the last part of the heal phase must all succeed.
            let healed = real >= FAULT_MS + HEAL_MS / 2;
            for c in 0..CLIENTS {
                world.client_step(c, real, healed)?;
            }
        }
        if real % TICK_MS == 0 {
            for i in 0..n {
                world.tick(i, real)?;
            }
        }
    }
    // Healed: every client's writes go through.
    if let Some(c) = world.clients.iter().position(|c| c.healed_ok != Some(true)) {
        return Err(format!(
            "after healing, client {c}'s last write did not go through"
        ));
    }
    // Healed: one primary, named by everyone.
    let primaries: Vec<usize> = (0..n).filter(|&i| world.regions[i].primary).collect();
    if primaries.len() != 1 {
        return Err(format!(
            "after healing, {} primaries: {primaries:?}",
            primaries.len()
        ));
    }
    let primary = member(primaries[0]);
    let views: BTreeMap<usize, Option<MemberId>> = (0..n)
        .map(|i| {
            let local = world.regions[i].clock.local(real);
            (
                i,
                world.regions[i]
                    .keeper
                    .as_ref()
                    .and_then(|k| k.primary(local)),
            )
        })
        .collect();
    if views.values().any(|v| *v != Some(primary)) {
        let odd: Vec<String> = views
            .iter()
            .filter(|(_, v)| **v != Some(primary))
            .map(|(i, _)| format!("{:?}", world.regions[*i].keeper))
            .collect();
        return Err(format!(
            "after healing, regions disagree on the primary {primary}: {views:?} {odd:?}"
        ));
    }
    Ok(world.report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_map_local_times_back_to_the_real_instant() {
        for drift_ppm in [-10_000, 0, 10_000] {
            let clock = Clock {
                offset: 1_000,
                drift_ppm,
            };
            for real in [0, 1, 999, 123_456] {
                let local = clock.local(real);
                let back = clock.real_at(local);
                assert!(
                    back <= real && clock.local(back) >= local,
                    "{drift_ppm} {real}"
                );
            }
        }
    }
}
