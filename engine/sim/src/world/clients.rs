//! The client layer: routed sessions that send their writes and reads to the simulated
//! regions through the core's routing state machines, as the runtime's routed client does
//! (`WriteCall` for a write's attempts, deadlines and outcome; `Attempts` for reads;
//! `SessionKeys` for what a context-dependent write must find applied; `ClockOffset` for the
//! regions' clocks; a `Breaker` per region; `order_regions`).
//!
//! What it models: client links with latency (the session's place to each region) that
//! break, losing a request before it arrives or an answer after the region applied it (the
//! client hears nothing and finds the connection dead after its liveness); regions that
//! crash with requests under way (the connection breaks) or freeze with requests queued
//! (held until they thaw, their replication too: a request that arrives past its deadline
//! must be refused); regions' clocks skewed and stepped (the faults' clock skew);
//! sessions moving to another region's place (they measure round trips and clocks again);
//! retries in the next region after a lost answer (idempotent writes only).
//!
//! The region side mirrors the node's service (`engine/runtime/src/service.rs`): a write is
//! tagged with its request (session, call) and applied once per tag (`Engine::write_once`),
//! and a retry a region holds the first write of (applied there, or replicated to it) is
//! answered with that write (`Engine::request_outcome`); a write carrying `After` waits until the region
//! covers it, within the session wait and the deadline less the clock margin
//! (`wait_after`), then answers `NotYetVisible`, nothing written; a write whose deadline is
//! past in the region's clock, with the margin, is refused (`past_deadline`); the engine's
//! `ContextAhead` is `NotYetVisible`. A read waits (bounded) until the region covers the
//! session's token.
//!
//! Checks, besides the history's (every applied write counts there, answered or not): a
//! write reported as a definite failure was applied nowhere, ever; `Unknown` only after a
//! lost answer; a write applied in two regions, or answered after a lost one, reported
//! `retried_after_lost`; no write re-sent after a lost answer unless idempotent; no region
//! applies a write after the client went on from that attempt before its deadline, nor
//! after the deadline unless the region's clock stepped back since the client's samples of
//! it (counted: a deadline in the region's clock cannot hold across a step back); a
//! session's context-dependent write (removal, delete, register write with a read context)
//! applied only where everything the session wrote or read of the key is applied; a
//! session's read reflects every write of the key it was told was written
//! (read-your-writes, wherever the session moved); after the heal every region covers each
//! session's token (the world's session checks).
//!
//! A session whose call found no region covering what it holds forgets what a disk fault
//! lost (the writes the checks excuse, or the regions declared lost): the stand-in for the
//! node's `Uncoverable` answer and `RoutedClient::forget_last_lost`.

use super::{World, EPOCH_MS};
use crate::history::{reflects, History};
use crate::network::{Network, LOCATIONS, REGIONS};
use crate::rng::SimRng;
use crate::workload::{self, Applied, Session};
use crate::ClientStats;
use meridian::WallClock;
use meridian_core::model::{CausalToken, Dot, Op, VersionVector};
use meridian_core::routing::{
    attempt_budget_ms, order_regions, smoothed_rtt, Answer, Attempts, Breaker, BreakerSettings,
    Candidate, ClockOffset, ClockSample, Health, Location, Outcome, SessionKeys, Step,
    UnknownCause, Verdict, WriteCall, WriteOutcome,
};
use std::collections::{BTreeMap, BTreeSet};

/// Routed sessions per seed.
const SESSIONS: usize = 4;
/// A connection that hears nothing from its region this long is closed (the routed client's
/// default liveness).
const LIVENESS_MS: u64 = 1_000;
/// Longest wait for a connection.
const CONNECT_TIMEOUT_MS: u64 = 1_000;
/// Longest wait for an answer from a live region.
const REQUEST_TIMEOUT_MS: u64 = 15_000;
/// How long a region waits for a session's writes (reads' and writes' `wait_ms`).
const SESSION_WAIT_MS: u64 = 1_000;
/// The node's clock margin: a write is refused this long before its deadline.
const CLOCK_SKEW_MARGIN_MS: u64 = 250;
/// Keys whose session context is kept apart: few, so that the hashed buckets of evicted keys
/// are exercised.
const SESSION_KEYS: usize = 3;
/// How often a region waiting for a session's writes looks again.
const RECHECK_MS: u64 = 50;
/// Chances, while faults last, that a connection breaks before a request arrives, and after
/// its region answered.
const DROP_REQUEST: f64 = 0.03;
const DROP_ANSWER: f64 = 0.06;
/// Chance that a session moves to another region's place before a call.
const MOVE: f64 = 0.08;

/// A request on its way to (or waiting at) a region.
#[derive(Clone, Debug)]
struct Request {
    session: usize,
    call: u64,
    attempt: u64,
    to: usize,
    key: Vec<u8>,
    what: What,
    /// The run of the region it was sent to (it does not survive a crash: a restarted
    /// process knows nothing of the connection).
    run: u64,
    /// When the region stops waiting for the session's writes (simulated time).
    wait_until: Option<u64>,
}

#[derive(Clone, Debug)]
enum What {
    Write {
        op: Op,
        after: Option<CausalToken>,
        /// In the region's clock.
        deadline_ms: u64,
        /// What the session was told it wrote or read of the key when it made the call:
        /// what a context-dependent write must find applied.
        known: VersionVector,
    },
    Read {
        token: CausalToken,
        /// The session's own writes of the key when it sent the read: what the read must
        /// reflect.
        expect: Vec<Dot>,
    },
}

/// A region's answer.
#[derive(Debug)]
enum Reply {
    Written(CausalToken, Dot),
    Value(Option<meridian::Read>),
    /// Nothing done, the next region may serve it (`connected`: the region answered).
    NotServed(String, bool),
    NotYetVisible(String),
    Refused(String),
    Unknown(String),
}

#[derive(Debug)]
enum Event {
    /// The session acts: starts its next call, or goes on after a wait.
    Wake { session: usize },
    /// A request reaches its region (again, when the region held it).
    Arrive(Request),
    /// A region's answer reaches the session.
    Answer {
        session: usize,
        attempt: u64,
        reply: Reply,
        /// The region's clock when it answered (0: no region answered).
        node_ms: u64,
    },
    /// The session looks at whether the attempt's connection still lives.
    Silence { session: usize, attempt: u64 },
}

/// The attempt a session waits on.
#[derive(Clone, Debug)]
struct Inflight {
    attempt: u64,
    region: usize,
    sent_at: u64,
    sent_wall: u64,
    /// When its connection broke (a request or answer lost with it, the region crashed).
    broken_at: Option<u64>,
}

/// A read through the regions, perhaps followed by a register write with its context.
#[derive(Debug)]
struct ReadCall {
    call: u64,
    key: Vec<u8>,
    token: CausalToken,
    attempts: Attempts,
    inflight: Option<Inflight>,
    /// The value to write back with the read's context.
    then_put: Option<Vec<u8>>,
}

#[derive(Debug)]
struct WriteState {
    call: u64,
    key: Vec<u8>,
    op: Op,
    after: Option<CausalToken>,
    machine: WriteCall,
    inflight: Option<Inflight>,
}

#[derive(Debug)]
enum Activity {
    Idle,
    Read(ReadCall),
    Write(WriteState),
}

/// A routed session.
#[derive(Debug)]
struct SimSession {
    /// The region whose place the session is at.
    home: usize,
    /// Its wall clock's offset from simulated time.
    skew_ms: i64,
    breakers: Vec<Breaker>,
    rtt_ms: Vec<Option<f64>>,
    clocks: Vec<ClockOffset>,
    /// When the request of the latest clock sample of each region was sent.
    last_sampled: Vec<Option<u64>>,
    token: CausalToken,
    keys: SessionKeys,
    activity: Activity,
    /// The oracle: everything the session was told it wrote or read of each key (joined
    /// tokens), and the dots of its own acknowledged writes per key.
    known: BTreeMap<Vec<u8>, VersionVector>,
    wrote: BTreeMap<Vec<u8>, BTreeSet<Dot>>,
    /// Writes it forgot as lost: (origin, last kept).
    forgot: Vec<(meridian::OriginId, u64)>,
    /// Set elements it added (key, element), for it to remove.
    elems: Vec<(Vec<u8>, Vec<u8>)>,
    /// Its last acknowledged register write.
    last_register: Option<(Vec<u8>, Dot)>,
}

impl SimSession {
    fn wall(&self, now: u64) -> u64 {
        (EPOCH_MS as i64 + now as i64 + self.skew_ms).max(0) as u64
    }

    fn sample(&mut self, region: usize, sample: ClockSample, now: u64) {
        self.clocks[region].sample(sample);
        // The node's clock was read after the request left: a step from then on is one the
        // sample may not show.
        let round_trip = sample.received_ms.saturating_sub(sample.sent_ms);
        self.last_sampled[region] = Some(now.saturating_sub(round_trip));
    }

    /// Whether the session forgot `dot` as lost.
    fn forgot(&self, dot: &Dot) -> bool {
        self.forgot
            .iter()
            .any(|(o, held)| *o == dot.replica && dot.counter > *held)
    }
}

/// One attempt of a write, as sent.
#[derive(Clone, Debug)]
struct AttemptRecord {
    attempt: u64,
    /// When the client gives up on it (simulated time).
    give_up: u64,
    /// The latest clock sample of the region when the deadline was stamped (`None`: none).
    measured_since: Option<u64>,
    /// When the client went on without it (sent the next attempt, or ended the call).
    moved_on: Option<u64>,
}

/// How a write ended.
#[derive(Clone, Debug, PartialEq)]
enum Ended {
    Written(usize),
    Failed(String),
    Unknown,
}

/// Everything about one write call, for the checks.
#[derive(Clone, Debug)]
struct CallRecord {
    session: usize,
    key: Vec<u8>,
    idempotent: bool,
    attempts: Vec<AttemptRecord>,
    /// Where it was applied: (region, dot, attempt, when).
    applied: Vec<(usize, Dot, u64, u64)>,
    /// Some attempt's answer was lost.
    lost: bool,
    ended: Option<Ended>,
}

/// The client layer's state.
pub(super) struct Clients {
    rng: SimRng,
    sessions: Vec<SimSession>,
    events: BTreeMap<(u64, u64), Event>,
    seq: u64,
    calls: BTreeMap<u64, CallRecord>,
    next_call: u64,
    next_attempt: u64,
    /// Faults on the client side (broken connections, freezes, moves): until the heal.
    faults: bool,
    /// New calls start: until the heal.
    starting: bool,
    next_freeze: u64,
    /// The seed, for values.
    seed: u64,
    pub stats: ClientStats,
    pub violations: Vec<String>,
}

fn location(region: usize) -> Option<Location> {
    let (lat, lon) = LOCATIONS[region % LOCATIONS.len()];
    Location::new(lat, lon)
}

impl Clients {
    /// The client layer of a seed (`rng`: its own stream, so that a run without it draws
    /// the same workload and faults).
    pub(super) fn new(mut rng: SimRng, regions: usize, seed: u64) -> Clients {
        let sessions = (0..SESSIONS)
            .map(|_| {
                let home = rng.below(regions as u64) as usize;
                let skew_ms = rng.below(4_001) as i64 - 2_000;
                SimSession {
                    home,
                    skew_ms,
                    breakers: vec![Breaker::new(BreakerSettings::default()); regions],
                    rtt_ms: vec![None; regions],
                    clocks: vec![ClockOffset::default(); regions],
                    last_sampled: vec![None; regions],
                    token: CausalToken::default(),
                    keys: SessionKeys::new(SESSION_KEYS),
                    activity: Activity::Idle,
                    known: BTreeMap::new(),
                    wrote: BTreeMap::new(),
                    forgot: Vec::new(),
                    elems: Vec::new(),
                    last_register: None,
                }
            })
            .collect();
        let mut clients = Clients {
            rng,
            sessions,
            events: BTreeMap::new(),
            seq: 0,
            calls: BTreeMap::new(),
            next_call: 1,
            next_attempt: 1,
            faults: true,
            starting: true,
            next_freeze: 1_000,
            seed,
            stats: ClientStats::default(),
            violations: Vec::new(),
        };
        for s in 0..SESSIONS {
            let at = 1 + clients.rng.below(300);
            clients.schedule(at, Event::Wake { session: s });
        }
        clients
    }

    fn schedule(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.events.insert((at, self.seq), event);
    }

    fn next_at(&self) -> Option<u64> {
        let event = self.events.keys().next().map(|(at, _)| *at);
        let freeze = (self.faults).then_some(self.next_freeze);
        match (event, freeze) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether every session is idle (no call under way).
    fn idle(&self) -> bool {
        self.sessions
            .iter()
            .all(|s| matches!(s.activity, Activity::Idle))
    }
}

impl World {
    /// When the client layer acts next, if it does.
    pub(super) fn clients_next_at(&self) -> Option<u64> {
        self.clients.as_ref().and_then(Clients::next_at)
    }

    /// Whether no client call is under way.
    pub(super) fn clients_idle(&self) -> bool {
        self.clients.as_ref().is_none_or(Clients::idle)
    }

    /// The heal: no more client-side faults, no new calls (those under way end).
    pub(super) fn clients_heal(&mut self) {
        if let Some(c) = &mut self.clients {
            c.faults = false;
            c.starting = false;
        }
    }

    /// Region `i` went down: its connections break, what it was doing for clients is gone.
    pub(super) fn clients_region_down(&mut self, i: usize) {
        let now = self.now_ms;
        let Some(c) = &mut self.clients else { return };
        for s in &mut c.sessions {
            let inflight = match &mut s.activity {
                Activity::Read(r) => r.inflight.as_mut(),
                Activity::Write(w) => w.inflight.as_mut(),
                Activity::Idle => None,
            };
            if let Some(f) = inflight.filter(|f| f.region == i) {
                f.broken_at.get_or_insert(now);
            }
        }
    }

    /// Runs the client events due now.
    pub(super) fn clients_step(&mut self, history: &mut History) {
        let Some(mut c) = self.clients.take() else {
            return;
        };
        if c.faults && self.now_ms >= c.next_freeze {
            self.random_freeze(&mut c);
        }
        while let Some(entry) = c.events.first_entry() {
            if entry.key().0 > self.now_ms {
                break;
            }
            let event = entry.remove();
            self.client_event(&mut c, event, history);
        }
        self.clients = Some(c);
    }

    /// Freezes a region now and then (its process stopped: nothing it does, requests and
    /// frames to it held until it thaws).
    fn random_freeze(&mut self, c: &mut Clients) {
        c.next_freeze = self.now_ms + 500 + c.rng.below(2_500);
        if c.rng.below(3) != 0 {
            return;
        }
        let i = c.rng.below(self.regions.len() as u64) as usize;
        if self.regions[i].node.is_none() || self.frozen(i).is_some() {
            return;
        }
        let until = self.now_ms + 200 + c.rng.below(4_000);
        self.regions[i].frozen = Some((self.now_ms, until));
        c.stats.freezes += 1;
        self.trace.write(b"freeze");
        self.trace.write_u64(i as u64);
    }

    /// Since when region `i` has not answered anyone (down or frozen), if it has not.
    fn silent_since(&self, i: usize) -> Option<u64> {
        if self.regions[i].node.is_none() {
            return Some(self.regions[i].down_since);
        }
        self.frozen(i).map(|(since, _)| since)
    }

    fn client_event(&mut self, c: &mut Clients, event: Event, history: &mut History) {
        match event {
            Event::Wake { session } => match c.sessions[session].activity {
                Activity::Idle if c.starting => self.start_call(c, session, history),
                Activity::Write(_) => self.drive_write(c, session, history),
                _ => {}
            },
            Event::Arrive(request) => self.arrive(c, request, history),
            Event::Answer {
                session,
                attempt,
                reply,
                node_ms,
            } => self.answered(c, session, attempt, reply, node_ms, history),
            Event::Silence { session, attempt } => self.silence(c, session, attempt, history),
        }
    }

    /// The session's next call, chosen at random.
    fn start_call(&mut self, c: &mut Clients, s: usize, history: &mut History) {
        let mut moved = false;
        if c.faults && c.rng.chance(MOVE) {
            let home = c.rng.below(self.regions.len() as u64) as usize;
            if home != c.sessions[s].home {
                c.sessions[s].home = home;
                c.stats.moves += 1;
                moved = true;
                self.trace.write(b"move");
            }
        }
        // A new place, or a first call: round trips and clocks measured (as the routed
        // client's `measure_regions` when it connects).
        if moved || c.sessions[s].rtt_ms.iter().all(Option::is_none) {
            self.measure(c, s);
        }
        let call = c.next_call;
        c.next_call += 1;
        let value = format!("c{}-{call}", c.seed % 1_000_000).into_bytes();
        let k = c.rng.below(4);
        match c.rng.below(100) {
            0..=17 => {
                let key = format!("l{k}").into_bytes();
                self.begin_write(c, s, call, key, Op::LwwSet { value }, history)
            }
            18..=31 => {
                let key = format!("c{}", k % 3).into_bytes();
                let delta = c.rng.below(21) as i64 - 10;
                self.begin_write(c, s, call, key, Op::CounterAdd { delta }, history)
            }
            32..=45 => {
                let key = format!("s{}", k % 3).into_bytes();
                let op = Op::SetAdd { elems: vec![value] };
                self.begin_write(c, s, call, key, op, history)
            }
            46..=55 if !c.sessions[s].elems.is_empty() => {
                let n = c.sessions[s].elems.len() as u64;
                let (key, elem) = c.sessions[s].elems.remove(c.rng.below(n) as usize);
                let op = Op::SetRemove { elems: vec![elem] };
                self.begin_write(c, s, call, key, op, history)
            }
            46..=67 => {
                // A register read, then a write with its context.
                let key = format!("r{}", c.rng.below(6)).into_bytes();
                self.begin_read(c, s, call, key, Some(value), history)
            }
            68..=74 => {
                let key = format!("r{}", c.rng.below(6)).into_bytes();
                let op = Op::Put {
                    value,
                    context: None,
                };
                self.begin_write(c, s, call, key, op, history)
            }
            75..=82 => {
                let key = format!("r{}", c.rng.below(6)).into_bytes();
                self.begin_write(c, s, call, key, Op::Delete, history)
            }
            83..=90 => {
                let op = Op::MapUpdate {
                    field: format!("f{}", k % 3).into_bytes(),
                    op: Box::new(Op::CounterAdd {
                        delta: 1 + c.rng.below(9) as i64,
                    }),
                };
                self.begin_write(c, s, call, workload::MAP_KEY.to_vec(), op, history)
            }
            _ => {
                // A read of a key the session wrote (read-your-writes), if any.
                let written: Vec<Vec<u8>> = c.sessions[s].wrote.keys().cloned().collect();
                let key = if written.is_empty() {
                    format!("r{}", c.rng.below(6)).into_bytes()
                } else {
                    written[c.rng.below(written.len() as u64) as usize].clone()
                };
                self.begin_read(c, s, call, key, None, history)
            }
        }
    }

    /// Measures round trips and clocks of every region that answers (the routed client's
    /// probe of every region: one `Applied` request each).
    fn measure(&mut self, c: &mut Clients, s: usize) {
        let now = self.now_ms;
        for r in 0..self.regions.len() {
            if self.silent_since(r).is_some() {
                continue;
            }
            let session = &mut c.sessions[s];
            let owd = Network::one_way_ms(session.home, r);
            let wall = session.wall(now);
            let node_ms = self.regions[r].clock.now_ms() + owd;
            session.sample(
                r,
                ClockSample {
                    sent_ms: wall,
                    received_ms: wall + 2 * owd,
                    node_ms,
                },
                now,
            );
            session.rtt_ms[r] = Some(smoothed_rtt(session.rtt_ms[r], (2 * owd) as f64));
            session.breakers[r].on_success();
        }
    }

    /// The regions in the order the session tries them (the routed client's `plan`).
    fn plan(&self, c: &Clients, s: usize) -> Vec<usize> {
        let now = self.now_ms;
        let session = &c.sessions[s];
        let candidates: Vec<Candidate> = (0..self.regions.len())
            .map(|r| Candidate {
                region: REGIONS[r].to_string(),
                location: location(r),
                rtt_ms: session.rtt_ms[r],
                health: Health::of(&session.breakers[r], now),
            })
            .collect();
        let order: Vec<usize> = order_regions(&candidates, location(session.home).as_ref())
            .iter()
            .map(|r| r.index)
            .collect();
        let allowed: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&r| session.breakers[r].may_try(now))
            .collect();
        if allowed.is_empty() {
            order
        } else {
            allowed
        }
    }

    fn begin_write(
        &mut self,
        c: &mut Clients,
        s: usize,
        call: u64,
        key: Vec<u8>,
        op: Op,
        history: &mut History,
    ) {
        let session = &c.sessions[s];
        let gate = session.keys.gate([(key.as_slice(), &op)]);
        let after = (!gate.is_empty()).then_some(CausalToken(gate));
        let idempotent = op.is_idempotent();
        let machine = WriteCall::new(self.plan(c, s), idempotent);
        c.calls.insert(
            call,
            CallRecord {
                session: s,
                key: key.clone(),
                idempotent,
                attempts: Vec::new(),
                applied: Vec::new(),
                lost: false,
                ended: None,
            },
        );
        c.sessions[s].activity = Activity::Write(WriteState {
            call,
            key,
            op,
            after,
            machine,
            inflight: None,
        });
        self.drive_write(c, s, history);
    }

    fn begin_read(
        &mut self,
        c: &mut Clients,
        s: usize,
        call: u64,
        key: Vec<u8>,
        then_put: Option<Vec<u8>>,
        history: &mut History,
    ) {
        let attempts = Attempts::new(self.plan(c, s), true);
        let token = c.sessions[s].token.clone();
        c.sessions[s].activity = Activity::Read(ReadCall {
            call,
            key,
            token,
            attempts,
            inflight: None,
            then_put,
        });
        self.drive_read(c, s, history);
    }

    /// Whether a request to `region` can go: `None` when no connection can be had (the
    /// region has been silent longer than a connection lives): the answer "not served"
    /// comes after the connection timeout.
    fn connectable(&self, region: usize) -> bool {
        self.silent_since(region)
            .is_none_or(|since| since + LIVENESS_MS > self.now_ms)
    }

    /// Sends `what` for the session's attempt at `region`; returns the attempt under way.
    fn send(
        &mut self,
        c: &mut Clients,
        s: usize,
        call: u64,
        region: usize,
        key: &[u8],
        what: What,
    ) -> Inflight {
        let now = self.now_ms;
        let attempt = c.next_attempt;
        c.next_attempt += 1;
        let session = &c.sessions[s];
        let owd = Network::one_way_ms(session.home, region);
        let mut inflight = Inflight {
            attempt,
            region,
            sent_at: now,
            sent_wall: session.wall(now),
            broken_at: None,
        };
        if let Some(since) = self
            .silent_since(region)
            .filter(|_| self.regions[region].node.is_none())
        {
            // Sent on a connection to a process that is gone.
            inflight.broken_at = Some(since);
        } else if c.faults && c.rng.chance(DROP_REQUEST) {
            inflight.broken_at = Some(now);
        } else {
            c.schedule(
                now + owd,
                Event::Arrive(Request {
                    session: s,
                    call,
                    attempt,
                    to: region,
                    key: key.to_vec(),
                    what,
                    run: self.regions[region].runs,
                    wait_until: None,
                }),
            );
        }
        c.schedule(
            now + LIVENESS_MS + 2 * owd,
            Event::Silence {
                session: s,
                attempt,
            },
        );
        self.trace.write_u64(attempt * 8 + region as u64);
        inflight
    }

    /// Asks the session's write machine what to do, and does it.
    fn drive_write(&mut self, c: &mut Clients, s: usize, history: &mut History) {
        let now = self.now_ms;
        let step = {
            let Activity::Write(w) = &mut c.sessions[s].activity else {
                return;
            };
            if w.inflight.is_some() {
                return;
            }
            w.machine.next::<(CausalToken, Dot), String>(now)
        };
        match step {
            Step::Send(region) => self.send_write(c, s, region),
            Step::Wait { until_ms } => c.schedule(until_ms, Event::Wake { session: s }),
            Step::Done(outcome) => self.finish_write(c, s, outcome, history),
        }
    }

    /// Sends the session's write to `region`, stamped with the deadline its machine gives.
    fn send_write(&mut self, c: &mut Clients, s: usize, region: usize) {
        let now = self.now_ms;
        c.sessions[s].breakers[region].try_acquire(now);
        if !self.connectable(region) {
            self.not_connected(c, s, region);
            return;
        }
        let session = &c.sessions[s];
        let budget = attempt_budget_ms(
            LIVENESS_MS,
            session.rtt_ms[region],
            CONNECT_TIMEOUT_MS,
            REQUEST_TIMEOUT_MS,
        );
        let wall = session.wall(now);
        let offset = session.clocks[region].estimate(wall);
        let measured_since = offset.and(session.last_sampled[region]);
        let session = &mut c.sessions[s];
        let Activity::Write(w) = &mut session.activity else {
            return;
        };
        let deadline_ms = w.machine.sent(now, wall, budget, offset);
        let (call, key) = (w.call, w.key.clone());
        let what = What::Write {
            op: w.op.clone(),
            after: w.after.clone(),
            deadline_ms,
            known: session.known.get(&key).cloned().unwrap_or_default(),
        };
        // The id `send` gives the attempt.
        let attempt = c.next_attempt;
        if let Some(record) = c.calls.get_mut(&call) {
            if record.lost {
                c.stats.retries += 1;
                if !record.idempotent {
                    c.violations.push(format!(
                        "call {call}: a non-idempotent write whose answer was lost was sent again, to {}",
                        REGIONS[region]
                    ));
                }
            }
            if let Some(last) = record.attempts.last_mut() {
                last.moved_on.get_or_insert(now);
            }
            record.attempts.push(AttemptRecord {
                attempt,
                give_up: now + budget,
                measured_since,
                moved_on: None,
            });
        }
        let inflight = self.send(c, s, call, region, &key, what);
        if let Activity::Write(w) = &mut c.sessions[s].activity {
            w.inflight = Some(inflight);
        }
    }

    /// No connection to `region` can be had: after the connection timeout, the attempt
    /// comes to "not served" (nothing sent).
    fn not_connected(&mut self, c: &mut Clients, s: usize, region: usize) {
        let now = self.now_ms;
        let attempt = c.next_attempt;
        c.next_attempt += 1;
        let inflight = Inflight {
            attempt,
            region,
            sent_at: now,
            sent_wall: 0,
            broken_at: None,
        };
        match &mut c.sessions[s].activity {
            Activity::Write(w) => w.inflight = Some(inflight),
            Activity::Read(r) => r.inflight = Some(inflight),
            Activity::Idle => return,
        }
        c.schedule(
            now + CONNECT_TIMEOUT_MS,
            Event::Answer {
                session: s,
                attempt,
                reply: Reply::NotServed(
                    format!("{}: no connection in time", REGIONS[region]),
                    false,
                ),
                node_ms: 0,
            },
        );
    }

    /// Asks the session's read attempts what to do, and does it.
    fn drive_read(&mut self, c: &mut Clients, s: usize, history: &mut History) {
        let now = self.now_ms;
        let Activity::Read(r) = &mut c.sessions[s].activity else {
            return;
        };
        if r.inflight.is_some() {
            return;
        }
        match r.attempts.next_region() {
            Some(region) => {
                c.sessions[s].breakers[region].try_acquire(now);
                let Activity::Read(r) = &mut c.sessions[s].activity else {
                    return;
                };
                let (call, key, token) = (r.call, r.key.clone(), r.token.clone());
                if !self.connectable(region) {
                    self.not_connected(c, s, region);
                    return;
                }
                let expect = c.sessions[s]
                    .wrote
                    .get(&key)
                    .map(|d| d.iter().copied().collect())
                    .unwrap_or_default();
                let inflight = self.send(c, s, call, region, &key, What::Read { token, expect });
                if let Activity::Read(r) = &mut c.sessions[s].activity {
                    r.inflight = Some(inflight);
                }
            }
            None => {
                let not_yet = r.attempts.saw_not_yet_visible();
                c.stats.calls += 1;
                self.trace.write(b"read failed");
                if not_yet {
                    self.session_forget_lost(c, s, history);
                }
                self.idle(c, s);
            }
        }
    }

    /// The session rests a while before its next call.
    fn idle(&mut self, c: &mut Clients, s: usize) {
        c.sessions[s].activity = Activity::Idle;
        let at = self.now_ms + 50 + c.rng.below(600);
        c.schedule(at, Event::Wake { session: s });
    }

    /// A session whose call found no region covering what it holds forgets what no region
    /// will ever have (writes lost with a disk: what the node's `Uncoverable` answer names,
    /// and `RoutedClient::forget_last_lost` takes).
    fn session_forget_lost(&mut self, c: &mut Clients, s: usize, history: &History) {
        let mut declared: BTreeSet<Dot> = history.lost.clone();
        for n in self.regions.iter().filter_map(|r| r.node.as_ref()) {
            for (o, seq) in n.engine.declared_lost().lost {
                declared.insert(Dot::new(o, seq));
            }
        }
        let session = &mut c.sessions[s];
        let mut forgot = Vec::new();
        for (origin, seq) in session.token.0.iter() {
            let first = declared
                .range(Dot::new(origin, 1)..=Dot::new(origin, seq))
                .next();
            if let Some(first) = first {
                forgot.push((origin, first.counter - 1));
            }
        }
        for (origin, held) in forgot {
            session.token = CausalToken(session.token.0.capped(origin, held));
            session.keys.forget_beyond(origin, held);
            session.forgot.push((origin, held));
            c.stats.forgotten += 1;
        }
    }

    /// A request reaches its region: held while the region is frozen, served, or waiting
    /// there for the session's writes.
    fn arrive(&mut self, c: &mut Clients, mut request: Request, history: &mut History) {
        let now = self.now_ms;
        let r = request.to;
        let Some(run) = self.regions[r].node.as_ref().map(|_| self.regions[r].runs) else {
            // Gone with the process (its connection breaks: see `clients_region_down`).
            return;
        };
        if request.run != run {
            return;
        }
        if let Some((_, until)) = self.frozen(r) {
            c.schedule(until, Event::Arrive(request));
            return;
        }
        let reply = match &request.what {
            What::Write { .. } => self.serve_write(c, &mut request, history),
            What::Read { .. } => self.serve_read(c, &mut request, history),
        };
        let Some(reply) = reply else {
            // Waiting for the session's writes: it looks again.
            let until = request.wait_until.unwrap_or(now);
            c.schedule(
                (now + RECHECK_MS).min(until.max(now + 1)),
                Event::Arrive(request),
            );
            return;
        };
        let node_ms = self.regions[r].clock.now_ms();
        let session = &mut c.sessions[request.session];
        let inflight = match &mut session.activity {
            Activity::Read(x) => x.inflight.as_mut(),
            Activity::Write(x) => x.inflight.as_mut(),
            Activity::Idle => None,
        }
        .filter(|f| f.attempt == request.attempt);
        if c.faults && c.rng.chance(DROP_ANSWER) {
            // The connection breaks as the answer leaves: the client hears nothing.
            if let Some(f) = inflight {
                f.broken_at.get_or_insert(now);
            }
            self.trace.write(b"answer lost");
            return;
        }
        let owd = Network::one_way_ms(session.home, r);
        c.schedule(
            now + owd,
            Event::Answer {
                session: request.session,
                attempt: request.attempt,
                reply,
                node_ms,
            },
        );
    }

    /// What region `r` holds of request `tag`: the write that answered it (made there, or
    /// replicated to it), as the node asks before anything else.
    fn answered_before(&self, r: usize, tag: &meridian::RequestTag) -> Option<(CausalToken, Dot)> {
        let n = self.regions[r].node.as_ref()?;
        let token = n.engine.request_outcome(tag).ok().flatten()?;
        let dot = single_dot(&token)?;
        Some((token, dot))
    }

    /// The node's handling of a write (`Service::write`): `None` while it waits for the
    /// session's writes.
    fn serve_write(
        &mut self,
        c: &mut Clients,
        request: &mut Request,
        history: &mut History,
    ) -> Option<Reply> {
        let now = self.now_ms;
        let r = request.to;
        let What::Write {
            op,
            after,
            deadline_ms,
            ..
        } = &request.what
        else {
            return None;
        };
        let (op, after, deadline_ms) = (op.clone(), after.clone(), *deadline_ms);
        let name = REGIONS[r];
        let tag = request_tag(request.session, request.call);
        if let Some((token, dot)) = self.answered_before(r, &tag) {
            c.stats.deduplicated += 1;
            self.trace.write(b"deduplicated");
            return Some(Reply::Written(token, dot));
        }
        let clock = self.regions[r].clock.now_ms();
        let n = self.regions[r].node.as_ref()?;
        if let Some(after) = &after {
            if !n.engine.covers(after) {
                // `wait_after`: within the session wait and the deadline less the margin.
                let wait =
                    SESSION_WAIT_MS.min(deadline_ms.saturating_sub(clock + CLOCK_SKEW_MARGIN_MS));
                let until = *request.wait_until.get_or_insert(now + wait);
                if now < until {
                    return None;
                }
                return Some(Reply::NotYetVisible(format!(
                    "{name}: this region has not yet applied what the session wrote or read of these keys: nothing was written"
                )));
            }
        }
        // `past_deadline`, just before applying.
        if clock + CLOCK_SKEW_MARGIN_MS > deadline_ms {
            c.stats.late_refused += 1;
            self.trace.write(b"expired");
            return Some(Reply::NotServed(
                format!(
                    "{name}: the write reached this region {} ms after its deadline: nothing was written",
                    clock + CLOCK_SKEW_MARGIN_MS - deadline_ms
                ),
                true,
            ));
        }
        if !n.engine.origin_status().writable {
            return Some(Reply::NotServed(format!("{name}: refusing writes"), true));
        }
        if op.depends_on_seen() {
            self.check_covers(c, request, history);
        }
        let n = self.regions[r].node.as_ref()?;
        let applied = workload::apply_routed(&n.engine, r, &tag, &request.key, op, history);
        let reply = match applied {
            Ok(Applied::Earlier(token)) => match single_dot(&token) {
                Some(dot) => {
                    c.stats.deduplicated += 1;
                    Reply::Written(token, dot)
                }
                None => {
                    self.violations.push(format!(
                        "{name} answered request {} with the token {} (not one write)",
                        request.call, token.0
                    ));
                    Reply::NotServed(format!("{name}: bad earlier token"), true)
                }
            },
            Ok(Applied::Written(token, dot)) => {
                self.applied_for(c, request, r, dot);
                let done = self.with_node(r, |n, now| n.repl.local_write(&n.engine, now));
                self.replication_result(r, done);
                self.trace.write(&token.to_bytes());
                Reply::Written(token, dot)
            }
            Ok(Applied::Refused(e)) => match e {
                meridian::Error::ContextAhead { .. } => {
                    Reply::NotYetVisible(format!("{name}: {e}"))
                }
                meridian::Error::Corrupt { .. } => Reply::Refused(format!("{name}: {e}")),
                e if e.to_string().starts_with("corrupt record") => {
                    Reply::Refused(format!("{name}: {e}"))
                }
                e @ meridian::Error::Storage(_) => Reply::Unknown(format!("{name}: {e}")),
                e => Reply::NotServed(format!("{name}: {e}"), true),
            },
            Err(e) => {
                self.violations.push(e.clone());
                Reply::NotServed(e, true)
            }
        };
        Some(reply)
    }

    /// The node's handling of a read with the session's token: `None` while it waits for it.
    fn serve_read(
        &mut self,
        c: &mut Clients,
        request: &mut Request,
        history: &History,
    ) -> Option<Reply> {
        let now = self.now_ms;
        let r = request.to;
        let What::Read { token, expect } = &request.what else {
            return None;
        };
        let n = self.regions[r].node.as_ref()?;
        if !n.engine.covers(token) {
            let until = *request.wait_until.get_or_insert(now + SESSION_WAIT_MS);
            if now < until {
                return None;
            }
            return Some(Reply::NotYetVisible(format!(
                "{}: this region has not yet applied the token's writes",
                REGIONS[r]
            )));
        }
        let read = match n.engine.read(&request.key) {
            Ok(read) => read,
            Err(e) => return Some(Reply::Refused(format!("{}: {e}", REGIONS[r]))),
        };
        // Read-your-writes: every write of the key the session was told was written (and
        // did not forget as lost) is reflected here.
        let session = &c.sessions[request.session];
        let applied = n.engine.applied();
        let declared = n.engine.declared_lost();
        let record = n
            .engine
            .export(&request.key)
            .ok()
            .flatten()
            .and_then(|b| meridian_core::model::codec::decode_record(&b).ok());
        for d in expect {
            if session.forgot(d)
                || history.lost.contains(d)
                || declared.lost.contains(&(d.replica, d.counter))
                || self.excused_key(r, &request.key, &declared)
            {
                continue;
            }
            c.stats.session_checks += 1;
            if !reflects(record.as_ref(), &request.key, *d, history, &applied) {
                if std::env::var("MERIDIAN_SIM_DEBUG").is_ok() {
                    eprintln!(
                        "t={now} RYW region {r} {d} token {} applied {applied} covers {} record {:?} declared {declared:?} forgot {:?} written {:?} ops {:?}",
                        token.0,
                        n.engine.covers(token),
                        record.as_ref().map(|x| (x.context().to_string(), x)),
                        session.forgot,
                        history.written.get(d).map(|w| w.region),
                        history.registers.get(&request.key)
                    );
                }
                self.violations.push(format!(
                    "read-your-writes: session {} read {:?} in {} (covering its token) without its write {d}",
                    request.session,
                    String::from_utf8_lossy(&request.key),
                    REGIONS[r]
                ));
            }
        }
        Some(Reply::Value(read))
    }

    /// Whether the checks leave region `r`'s record of `key` aside (damaged, or uncertain).
    fn excused_key(
        &self,
        r: usize,
        key: &[u8],
        declared: &meridian_core::replication::Exceptions,
    ) -> bool {
        self.corrupted.contains(&(r, key.to_vec()))
            || declared
                .uncertain
                .contains(&meridian_core::model::digest::key_hash(key))
    }

    /// A session's context-dependent write (`request`) about to apply at its region: the
    /// region must have applied everything the session wrote or read of the key when it made
    /// the call (but for writes lost with a disk, or forgotten as such).
    fn check_covers(&mut self, c: &mut Clients, request: &Request, history: &History) {
        let What::Write { op, known, .. } = &request.what else {
            return;
        };
        let (s, r, key) = (request.session, request.to, request.key.as_slice());
        let Some(n) = self.regions[r].node.as_ref() else {
            return;
        };
        let session = &c.sessions[s];
        let applied = n.engine.applied();
        let declared = n.engine.declared_lost();
        if self.excused_key(r, key, &declared) {
            return;
        }
        c.stats.session_checks += 1;
        let missing: Vec<String> = known
            .iter()
            .filter(|(o, seq)| applied.get(*o) < *seq)
            .flat_map(|(o, seq)| (applied.get(o) + 1..=seq).map(move |k| Dot::new(o, k)))
            .filter(|d| {
                !history.lost.contains(d)
                    && !declared.lost.contains(&(d.replica, d.counter))
                    && !session.forgot(d)
            })
            .map(|d| d.to_string())
            .collect();
        if !missing.is_empty() {
            self.violations.push(format!(
                "session {s}: its {} of {:?} applied in {} without what it wrote or read of the key (missing {})",
                op_name(op),
                String::from_utf8_lossy(key),
                REGIONS[r],
                missing.join(", ")
            ));
        }
    }

    /// Region `r` applied the write of `request` as `dot`: checks it against the call.
    fn applied_for(&mut self, c: &mut Clients, request: &Request, r: usize, dot: Dot) {
        let now = self.now_ms;
        let Some(record) = c.calls.get_mut(&request.call) else {
            return;
        };
        record.applied.push((r, dot, request.attempt, now));
        if let Some(Ended::Failed(why)) = &record.ended {
            self.violations.push(format!(
                "call {} of session {}: {} applied it as {dot} after the client was told it failed ({why})",
                request.call, record.session, REGIONS[r]
            ));
        }
        let Some(a) = record
            .attempts
            .iter()
            .find(|a| a.attempt == request.attempt)
        else {
            return;
        };
        // After the client went on to another region (or to its caller) before the attempt's
        // deadline: the client did not wait it out.
        if let Some(left) = a.moved_on.filter(|left| now > *left && *left < a.give_up) {
            self.violations.push(format!(
                "call {} of session {}: {} applied it as {dot} at {now} ms, after the client went on at {left} ms, before the attempt's deadline ({} ms)",
                request.call, record.session, REGIONS[r], a.give_up
            ));
            return;
        }
        if now <= a.give_up {
            return;
        }
        // After the client gave up on the attempt: its deadline did not hold. Excused when
        // the region's clock stepped back after the latest sample the client had when it
        // stamped the deadline (it reads less than that sample showed), or when it had none
        // (the client's own clock stood for the region's). A step the client's samples showed
        // is not excused: the estimate must follow it (seed 825907964).
        match a.measured_since {
            None => c.stats.late_applied_unmeasured += 1,
            Some(since) if self.stepped_back(r, since) => {
                c.stats.late_applied_after_step += 1;
                if std::env::var("MERIDIAN_SIM_DEBUG").is_ok() {
                    eprintln!(
                        "t={now} call {} applied late in {} (gave up at {}; clock steps {:?})",
                        request.call,
                        REGIONS[r],
                        a.give_up,
                        self.regions[r].skews
                    );
                }
            }
            Some(since) => self.violations.push(format!(
                "call {} of session {}: {} applied it as {dot} at {now} ms, after the client gave up on the attempt at {} ms (its clock did not step back since the client's last sample at {since} ms; its steps (at, skew): {:?})",
                request.call, record.session, REGIONS[r], a.give_up, self.regions[r].skews
            )),
        }
    }

    /// Whether region `r`'s clock now reads less, against simulated time, than it did at
    /// some point since `since`.
    fn stepped_back(&self, r: usize, since: u64) -> bool {
        let skews = &self.regions[r].skews;
        let Some(&(_, now)) = skews.last() else {
            return false;
        };
        // The skew in force at `since`, and every one after it.
        let first = skews.iter().rposition(|(at, _)| *at <= since).unwrap_or(0);
        skews[first..].iter().any(|(_, skew)| *skew > now)
    }

    /// A region's answer reaches the session.
    fn answered(
        &mut self,
        c: &mut Clients,
        s: usize,
        attempt: u64,
        reply: Reply,
        node_ms: u64,
        history: &mut History,
    ) {
        let now = self.now_ms;
        let session = &mut c.sessions[s];
        let inflight = match &session.activity {
            Activity::Read(r) => r.inflight.clone(),
            Activity::Write(w) => w.inflight.clone(),
            Activity::Idle => None,
        };
        let Some(f) = inflight.filter(|f| f.attempt == attempt) else {
            // An answer to an attempt the client left (its connection closed).
            return;
        };
        if node_ms != 0 {
            let received = session.wall(now);
            session.sample(
                f.region,
                ClockSample {
                    sent_ms: f.sent_wall,
                    received_ms: received,
                    node_ms,
                },
                now,
            );
        }
        match &reply {
            Reply::NotServed(_, false) => session.breakers[f.region].on_failure(now),
            _ => session.breakers[f.region].on_success(),
        }
        match &mut session.activity {
            Activity::Write(w) => {
                w.inflight = None;
                let answer = match reply {
                    Reply::Written(token, dot) => Answer::Written((token, dot)),
                    Reply::Value(_) => Answer::NotServed("unexpected answer".into()),
                    Reply::NotServed(why, _) => Answer::NotServed(why),
                    Reply::NotYetVisible(why) => Answer::NotYetVisible(why),
                    Reply::Refused(why) => Answer::Refused(why),
                    Reply::Unknown(why) => Answer::Unknown(why),
                };
                match w.machine.on_answer(answer, now) {
                    Some(outcome) => self.finish_write(c, s, outcome, history),
                    None => self.drive_write(c, s, history),
                }
            }
            Activity::Read(r) => {
                r.inflight = None;
                let outcome = match reply {
                    Reply::Value(read) => {
                        let sample = (now - f.sent_at) as f64;
                        session.rtt_ms[f.region] =
                            Some(smoothed_rtt(session.rtt_ms[f.region], sample));
                        let key = r.key.clone();
                        let then = r.then_put.take();
                        let call = r.call;
                        let context = read.as_ref().map(|x| x.token.0.clone());
                        if let Some(read) = &read {
                            session.token.merge(&read.token);
                            session.keys.note(&key, &read.token.0);
                            session
                                .known
                                .entry(key.clone())
                                .or_default()
                                .join(&read.token.0);
                        }
                        c.stats.calls += 1;
                        self.trace.write(b"read");
                        match then {
                            Some(value) => {
                                let op = Op::Put {
                                    value,
                                    context: Some(context.unwrap_or_default()),
                                };
                                self.begin_write(c, s, call, key, op, history);
                            }
                            None => self.idle(c, s),
                        }
                        return;
                    }
                    Reply::NotYetVisible(_) => Outcome::NotYetVisible,
                    Reply::Refused(_) | Reply::Unknown(_) => Outcome::Answered,
                    Reply::Written(..) | Reply::NotServed(..) => Outcome::NotServed,
                };
                if r.attempts.record(outcome) == Verdict::Done {
                    c.stats.calls += 1;
                    self.trace.write(b"read refused");
                    self.idle(c, s);
                } else {
                    self.drive_read(c, s, history);
                }
            }
            Activity::Idle => {}
        }
    }

    /// The session looks at the attempt's connection: closed after its liveness without a
    /// word from the region (it is down or frozen, or the connection broke), or the answer
    /// not come within the request timeout: the answer is lost.
    fn silence(&mut self, c: &mut Clients, s: usize, attempt: u64, history: &mut History) {
        let now = self.now_ms;
        let inflight = match &c.sessions[s].activity {
            Activity::Read(r) => r.inflight.clone(),
            Activity::Write(w) => w.inflight.clone(),
            Activity::Idle => None,
        };
        let Some(f) = inflight.filter(|f| f.attempt == attempt) else {
            return;
        };
        let dead_since = match (f.broken_at, self.silent_since(f.region)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // The connection closes a liveness after the region was last heard.
        let lost = match dead_since.map(|since| (since + LIVENESS_MS).max(f.sent_at)) {
            Some(closes) if now >= closes => true,
            Some(closes) => {
                c.schedule(
                    closes,
                    Event::Silence {
                        session: s,
                        attempt,
                    },
                );
                return;
            }
            None if now >= f.sent_at + REQUEST_TIMEOUT_MS => true,
            None => {
                let at = (now + 250).min(f.sent_at + REQUEST_TIMEOUT_MS);
                c.schedule(
                    at,
                    Event::Silence {
                        session: s,
                        attempt,
                    },
                );
                return;
            }
        };
        debug_assert!(lost);
        c.stats.lost_answers += 1;
        self.trace.write(b"lost");
        let session = &mut c.sessions[s];
        session.breakers[f.region].on_failure(now);
        let why = format!("{}: the connection closed", REGIONS[f.region]);
        match &mut session.activity {
            Activity::Write(w) => {
                w.inflight = None;
                let call = w.call;
                if let Some(record) = c.calls.get_mut(&call) {
                    record.lost = true;
                }
                let Activity::Write(w) = &mut c.sessions[s].activity else {
                    return;
                };
                match w.machine.on_answer(Answer::Lost(why), now) {
                    Some(outcome) => self.finish_write(c, s, outcome, history),
                    None => self.drive_write(c, s, history),
                }
            }
            Activity::Read(r) => {
                r.inflight = None;
                r.attempts.record(Outcome::Lost);
                self.drive_read(c, s, history);
            }
            Activity::Idle => {}
        }
    }

    /// A write's outcome: checked against what the regions did, and taken into the session.
    fn finish_write(
        &mut self,
        c: &mut Clients,
        s: usize,
        outcome: WriteOutcome<(CausalToken, Dot), String>,
        history: &History,
    ) {
        let Activity::Write(w) = std::mem::replace(&mut c.sessions[s].activity, Activity::Idle)
        else {
            return;
        };
        c.stats.calls += 1;
        let Some(record) = c.calls.get_mut(&w.call) else {
            return;
        };
        let call = w.call;
        if let Some(last) = record.attempts.last_mut() {
            last.moved_on.get_or_insert(self.now_ms);
        }
        let applied_in: Vec<String> = record
            .applied
            .iter()
            .map(|(r, dot, _, _)| format!("{} as {dot}", REGIONS[*r]))
            .collect();
        match outcome {
            WriteOutcome::Written {
                value: (token, dot),
                region,
                retried_after_lost,
            } => {
                c.stats.written += 1;
                if retried_after_lost {
                    c.stats.retried_written += 1;
                }
                let elsewhere = record
                    .applied
                    .iter()
                    .any(|(r, d, _, _)| *r != region || *d != dot);
                if (record.lost || elsewhere) && !retried_after_lost {
                    self.violations.push(format!(
                        "call {call} of session {s}: written in {} without retried_after_lost, though {} (applied: {})",
                        REGIONS[region],
                        if record.lost { "an earlier answer was lost" } else { "another region applied it" },
                        applied_in.join(", ")
                    ));
                }
                record.ended = Some(Ended::Written(region));
                self.trace.write(b"written");
                self.trace.write(&token.to_bytes());
                let session = &mut c.sessions[s];
                session.token.merge(&token);
                session.keys.wrote([w.key.as_slice()], &token.0);
                session
                    .known
                    .entry(w.key.clone())
                    .or_default()
                    .join(&token.0);
                session.wrote.entry(w.key.clone()).or_default().insert(dot);
                match &w.op {
                    Op::Put { .. } => session.last_register = Some((w.key.clone(), dot)),
                    Op::SetAdd { elems } => {
                        for e in elems {
                            session.elems.push((w.key.clone(), e.clone()));
                        }
                    }
                    _ => {}
                }
            }
            WriteOutcome::Unknown { region, cause } => {
                c.stats.unknowns += 1;
                if !record.applied.is_empty() {
                    c.stats.unknowns_applied += 1;
                }
                let answered = matches!(cause, UnknownCause::Answered(_));
                if !record.lost && !answered {
                    self.violations.push(format!(
                        "call {call} of session {s}: outcome unknown ({cause:?}, {region:?}) though no answer was lost"
                    ));
                }
                record.ended = Some(Ended::Unknown);
                self.trace.write(b"unknown");
            }
            failed => {
                c.stats.failed += 1;
                let why = match &failed {
                    WriteOutcome::Refused { error, .. } => error.clone(),
                    WriteOutcome::NotYetVisible => "not yet visible".into(),
                    _ => "no region".into(),
                };
                if !record.applied.is_empty() {
                    self.violations.push(format!(
                        "call {call} of session {s}: its write of {:?} reported failed ({why}) but applied in {}",
                        String::from_utf8_lossy(&record.key),
                        applied_in.join(", ")
                    ));
                }
                record.ended = Some(Ended::Failed(why));
                self.trace.write(b"failed");
                if matches!(failed, WriteOutcome::NotYetVisible) {
                    self.session_forget_lost(c, s, history);
                }
            }
        }
        self.idle(c, s);
    }

    /// At the end: every call ended; the client sessions as the final session checks take
    /// them (token, last register write).
    pub(super) fn clients_finish(&mut self, converged: bool) -> (ClientStats, Vec<Session>) {
        let Some(c) = self.clients.take() else {
            return (ClientStats::default(), Vec::new());
        };
        if converged {
            for (call, record) in &c.calls {
                if record.ended.is_none() {
                    self.violations.push(format!(
                        "call {call} of session {} never ended",
                        record.session
                    ));
                }
            }
        }
        self.violations.extend(c.violations);
        let sessions = c
            .sessions
            .iter()
            .map(|s| Session {
                token: s.token.clone(),
                last_write: s.last_register.clone(),
            })
            .collect();
        (c.stats, sessions)
    }
}

/// The engine's tag of a session's request (its call).
fn request_tag(session: usize, call: u64) -> meridian::RequestTag {
    let mut id = [0xC1; 16];
    id[8..].copy_from_slice(&call.to_be_bytes());
    meridian::RequestTag {
        client: format!("session-{session}"),
        id,
    }
}

/// The one write a request's earlier token names.
fn single_dot(token: &CausalToken) -> Option<Dot> {
    let mut entries = token.0.iter();
    let (origin, seq) = entries.next()?;
    entries.next().is_none().then_some(Dot::new(origin, seq))
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Put { .. } => "register write",
        Op::Delete => "delete",
        Op::SetRemove { .. } => "set removal",
        Op::MapRemove { .. } => "map removal",
        _ => "write",
    }
}
