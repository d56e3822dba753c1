//! Active-passive leases under faults: the core's `LeaseKeeper` in every region, driven over a
//! simulated network from one seed. Each region's clock runs at its own rate within the stated
//! drift bound, from its own offset; messages are delayed, lost, duplicated and reordered;
//! partitions come and go; regions crash (forgetting everything) and restart on a new clock;
//! an operator promotes random regions. The check is exact, in real (simulated) time: a region
//! holds the lease from the instant it gathers a majority until the instant its own clock
//! reaches the end of its hold (or it steps down or crashes), and no two such intervals of two
//! regions may overlap. After the faults, with every region up and every link whole, exactly
//! one primary must stand and every region must name it.

use super::rng::SimRng;
use meridian::lease::{LeaseConfig, LeaseKeeper, LeaseMessage};
use meridian::ReplicaId;
use std::collections::{BTreeMap, BinaryHeap};

/// Parts per million.
const PPM: i64 = 1_000_000;
/// Simulated time of the fault phase, and of the heal phase after it.
const FAULT_MS: u64 = 60_000;
const HEAL_MS: u64 = 30_000;
/// Each region ticks this often (real time).
const TICK_MS: u64 = 10;
/// A fault is drawn this often during the fault phase.
const FAULT_EVERY_MS: u64 = 100;

/// What one seed showed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseReport {
    /// Times a region became primary.
    pub acquisitions: u64,
    /// Messages delivered.
    pub delivered: u64,
    /// Promotions asked for.
    pub promotions: u64,
}

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
}

fn member(i: usize) -> ReplicaId {
    ReplicaId(i as u64 + 1)
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
        self.regions[i].keeper = Some(LeaseKeeper::new(
            member(i),
            self.config.clone(),
            clock.local(real),
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
                let due = real + 1 + self.rng.below(self.latency_ms);
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
            _ => {}
        }
    }
}

/// Runs one seed: faults for a minute, then healing; says what went wrong, if anything.
pub fn run_lease_seed(seed: u64) -> Result<LeaseReport, String> {
    let mut rng = SimRng::new(seed ^ 0x1EA5E);
    let n = if rng.chance(0.5) { 3 } else { 5 };
    let members: Vec<ReplicaId> = (0..n).map(member).collect();
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
    let mut world = World {
        rng,
        regions: (0..n)
            .map(|_| Region {
                keeper: None,
                clock: Clock {
                    offset: 0,
                    drift_ppm: 0,
                },
                claim_end: 0,
                primary: false,
            })
            .collect(),
        config,
        in_flight: BinaryHeap::new(),
        latency_ms,
        sent: 0,
        cut: Vec::new(),
        loss: 0.0,
        report: LeaseReport::default(),
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
            world.loss = 0.0;
            for i in 0..n {
                if world.regions[i].keeper.is_none() {
                    world.start(i, real);
                }
            }
        }
        world.deliver_due(real)?;
        if real % TICK_MS == 0 {
            for i in 0..n {
                world.tick(i, real)?;
            }
        }
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
    let views: BTreeMap<usize, Option<ReplicaId>> = (0..n)
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
