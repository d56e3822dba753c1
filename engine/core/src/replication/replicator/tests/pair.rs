//! Two replicators over in-memory stores, linked by a simulated network in the style of
//! quinn-proto's `Pair`: frames travel with a one-way latency on a simulated clock, can be
//! dropped on their way, and `drive` runs both ends until nothing is left in flight. No disk,
//! no thread, no wall clock. Also the helpers the job files share: operations and reads.

use crate::model::{mvreg, Kind, MemberId, Op, Value};
use crate::replication::*;
use std::collections::VecDeque;

/// The configuration of a pair whose members are both in the cluster's membership.
pub(super) fn members_config() -> ReplicationConfig {
    ReplicationConfig {
        members: vec![MemberId(1), MemberId(2)],
        ..ReplicationConfig::default()
    }
}

/// One end of the pair: a replicator, its store, and the frames travelling towards it.
pub(super) struct Side {
    /// The end's state machine.
    pub replicator: Replicator,
    /// The end's storage.
    pub store: MemoryStore,
    /// The link id under which this end knows the other.
    pub link: LinkId,
    /// Frames on their way to this end, with their arrival time.
    incoming: VecDeque<(u64, Vec<u8>)>,
}

impl Side {
    fn new(member: u64, other: u64, config: ReplicationConfig) -> Side {
        let store = MemoryStore::new(MemberId(member), 0);
        Side {
            replicator: Replicator::new(MemberId(member), config),
            store,
            link: LinkId(other as u32),
            incoming: VecDeque::new(),
        }
    }

    /// Hands `frame` to this end as arrived from the other one at `now`.
    pub fn receive(&mut self, frame: &[u8], now: u64) {
        self.replicator
            .handle(self.link, frame, &self.store, now)
            .unwrap_or_else(|e| panic!("frame refused: {e}"));
    }

    /// Ticks this end alone at `now` (its frames stay queued until the pair transmits).
    pub fn tick(&mut self, now: u64) {
        self.replicator
            .tick(&self.store, now)
            .unwrap_or_else(|e| panic!("tick: {e}"));
    }

    /// Takes the frames this end has queued for the other one, off the wire (the pair never
    /// sees them).
    pub fn take_frames(&mut self) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| self.replicator.poll_output())
            .filter_map(|out| match out {
                Output::Send { link, frame } if link == self.link => Some(frame),
                _ => None,
            })
            .collect()
    }
}

/// Which way a frame goes (for a closed link: which end closed it, `AtoB` being `a`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Dir {
    /// From `a` to `b`.
    AtoB,
    /// From `b` to `a`.
    BtoA,
}

/// A frame as the pair saw it leave.
#[derive(Clone, Debug)]
struct Sent {
    dir: Dir,
    kind: String,
    /// The protocol version its first byte names.
    version: u8,
}

/// Decides whether a frame is lost on its way.
pub(super) type DropRule = Box<dyn FnMut(Dir, &str) -> bool>;

/// Rewrites a frame on its way (a peer that lies).
pub(super) type TamperRule = Box<dyn FnMut(Dir, Vec<u8>) -> Vec<u8>>;

/// Members 1 (`a`) and 2 (`b`), linked as peers 2 and 1.
pub(super) struct Pair {
    /// Member 1.
    pub a: Side,
    /// Member 2.
    pub b: Side,
    /// The simulated time, in milliseconds.
    pub now: u64,
    /// One-way delay of every frame.
    pub latency_ms: u64,
    /// Every frame sent, in order.
    sent: Vec<Sent>,
    /// Links closed: by which end (see `Dir`), which link, and why.
    closed: Vec<(Dir, LinkId, String)>,
    /// Which frames are lost on their way (none without one).
    pub drop_rule: Option<DropRule>,
    /// How frames are rewritten on their way (unchanged without one).
    pub tamper: Option<TamperRule>,
}

/// What kind of frame `bytes` is (`Entries` or the `Frame` variant's name).
fn kind_of(bytes: &[u8]) -> String {
    if decode_entries(bytes).is_some() {
        return "Entries".into();
    }
    let debug = format!("{:?}", Frame::decode(bytes).unwrap());
    debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_string()
}

impl Pair {
    /// Both ends on empty stores, not linked yet, at time 0 with no latency.
    pub fn new(config: ReplicationConfig) -> Pair {
        Pair {
            a: Side::new(1, 2, config.clone()),
            b: Side::new(2, 1, config),
            now: 0,
            latency_ms: 0,
            sent: Vec::new(),
            closed: Vec::new(),
            drop_rule: None,
            tamper: None,
        }
    }

    /// Both ends see the link come up.
    pub fn connect(&mut self) {
        self.connect_at(PROTOCOL_VERSION);
    }

    /// Both ends see the link come up, negotiated at protocol `version`.
    pub fn connect_at(&mut self, version: u8) {
        let (a, b) = (&mut self.a, &mut self.b);
        a.replicator
            .connected_at(a.link, b.store.member_id(), version, &a.store, self.now);
        b.replicator
            .connected_at(b.link, a.store.member_id(), version, &b.store, self.now);
    }

    /// Both ends see the link go down; frames on it are lost.
    pub fn disconnect(&mut self) {
        for side in [&mut self.a, &mut self.b] {
            side.replicator.disconnected(side.link);
            side.incoming.clear();
        }
    }

    /// Moves every frame each end has queued onto the wire.
    fn transmit(&mut self) -> bool {
        let mut any = false;
        for dir in [Dir::AtoB, Dir::BtoA] {
            let (from, to) = match dir {
                Dir::AtoB => (&mut self.a, &mut self.b),
                Dir::BtoA => (&mut self.b, &mut self.a),
            };
            while let Some(out) = from.replicator.poll_output() {
                any = true;
                match out {
                    // Frames for other links (a third replicator's) go nowhere here.
                    Output::Send { link, .. } if link != from.link => {}
                    Output::Send { frame, .. } => {
                        let kind = kind_of(&frame);
                        let lost = self.drop_rule.as_mut().is_some_and(|lose| lose(dir, &kind));
                        let version = frame[0];
                        self.sent.push(Sent { dir, kind, version });
                        if !lost {
                            let frame = match self.tamper.as_mut() {
                                Some(rewrite) => rewrite(dir, frame),
                                None => frame,
                            };
                            to.incoming.push_back((self.now + self.latency_ms, frame));
                        }
                    }
                    Output::Close { link, reason } => self.closed.push((dir, link, reason)),
                    // Tests of fencing read the replicator's outputs themselves.
                    Output::Fenced { .. } => {}
                }
            }
        }
        any
    }

    /// Delivers every frame that has arrived by now.
    fn deliver(&mut self) -> bool {
        let mut any = false;
        for side in [&mut self.a, &mut self.b] {
            while side.incoming.front().is_some_and(|(at, _)| *at <= self.now) {
                let Some((_, frame)) = side.incoming.pop_front() else {
                    break;
                };
                side.receive(&frame, self.now);
                any = true;
            }
        }
        any
    }

    /// When the next frame in flight arrives, if any is.
    fn next_arrival(&self) -> Option<u64> {
        [&self.a, &self.b]
            .iter()
            .filter_map(|s| s.incoming.front().map(|(at, _)| *at))
            .min()
    }

    /// One step: frames queued go out, frames arrived are handled; else the clock moves to
    /// the next arrival. Returns false when nothing is queued or in flight.
    pub fn step(&mut self) -> bool {
        if self.transmit() | self.deliver() {
            return true;
        }
        match self.next_arrival() {
            Some(at) => {
                self.now = self.now.max(at);
                true
            }
            None => false,
        }
    }

    /// Runs both ends until nothing is queued or in flight.
    pub fn drive(&mut self) {
        for _ in 0..100_000 {
            if !self.step() {
                return;
            }
        }
        panic!("the pair never went quiet");
    }

    /// Lets `ms` pass, then ticks both ends and drives them.
    pub fn tick(&mut self, ms: u64) {
        self.now += ms;
        self.a.tick(self.now);
        self.b.tick(self.now);
        self.drive();
    }

    /// The links closed so far, in order, each with the end that closed it (see `Dir`).
    pub fn closed_links(&self) -> Vec<(Dir, LinkId)> {
        self.closed
            .iter()
            .map(|(by, link, _)| (*by, *link))
            .collect()
    }

    /// The protocol versions the frames sent so far were encoded in.
    pub fn versions_sent(&self) -> std::collections::BTreeSet<u8> {
        self.sent.iter().map(|s| s.version).collect()
    }

    /// Frames of `kind` sent in direction `dir`.
    pub fn count(&self, dir: Dir, kind: &str) -> usize {
        self.sent
            .iter()
            .filter(|s| s.dir == dir && s.kind == kind)
            .count()
    }
}

/// A register write superseding every sibling.
pub(super) fn put(value: &[u8]) -> Op {
    Op::Put {
        value: value.to_vec(),
        context: None,
    }
}

/// A set insertion of one element.
pub(super) fn set_add(elem: &[u8]) -> Op {
    Op::SetAdd {
        elems: vec![elem.to_vec()],
    }
}

/// The register values under `key`, sorted (`None`: absent or deleted).
pub(super) fn get(store: &MemoryStore, key: &[u8]) -> Option<Vec<Vec<u8>>> {
    let record = store.record(key)?;
    let Some(Value::Register(register)) = record.get(Kind::Register) else {
        return None;
    };
    let mut values: Vec<Vec<u8>> = mvreg::siblings(register)
        .into_iter()
        .map(|(_, value)| value)
        .collect();
    values.sort();
    Some(values)
}

/// The elements of the set under `key`, in order (empty: absent, deleted or emptied).
pub(super) fn set_members(store: &MemoryStore, key: &[u8]) -> Vec<Vec<u8>> {
    match store.record(key).as_ref().and_then(|r| r.get(Kind::Set)) {
        Some(Value::Set(s)) => s.store.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// Every record, as the seam streams them.
pub(super) fn states(store: &MemoryStore) -> Vec<RecordState> {
    store.read_range(b"", usize::MAX).unwrap().states.records
}

/// Where the handshake of `link` stands at `replicator` (`None`: no such link).
pub(super) fn link_state(replicator: &Replicator, link: LinkId) -> Option<LinkState> {
    replicator
        .peers()
        .find(|(id, _)| *id == link)
        .map(|(_, p)| p.state.clone())
}

/// The round trip `replicator` measured on `link`, if any.
pub(super) fn rtt_ms(replicator: &Replicator, link: LinkId) -> Option<u64> {
    replicator
        .peers()
        .find(|(id, _)| *id == link)
        .and_then(|(_, p)| p.rtt_ms)
}
