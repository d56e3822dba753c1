//! Two replicators over in-memory stores, linked by a simulated network in the style of
//! quinn-proto's `Pair`: frames travel with a one-way latency on a simulated clock, can be
//! dropped on their way, and `drive` runs both ends until nothing is left in flight. No disk,
//! no thread, no wall clock: the replicator tests of `engine/tests/replicator.rs` on the
//! reference model of the storage seam.

#![allow(clippy::unwrap_used)]

use meridian_core::model::{Kind, Op, ReplicaId, Value, VersionVector};
use meridian_core::replication::*;
use std::collections::VecDeque;

/// The configuration of a pair whose members are both in the cluster's membership.
fn members_config() -> ReplicationConfig {
    ReplicationConfig {
        members: vec![ReplicaId(1), ReplicaId(2)],
        ..ReplicationConfig::default()
    }
}

/// One end of the pair: a replicator, its store, and the frames travelling towards it.
struct Side {
    replicator: Replicator,
    store: MemoryStore,
    /// The link id under which this end knows the other.
    link: LinkId,
    /// Frames on their way to this end, with their arrival time.
    incoming: VecDeque<(u64, Vec<u8>)>,
}

impl Side {
    fn new(member: u64, other: u64, config: ReplicationConfig) -> Side {
        let store = MemoryStore::new(ReplicaId(member), 0);
        store.attach_replication();
        Side {
            replicator: Replicator::new(ReplicaId(member), config),
            store,
            link: LinkId(other as u32),
            incoming: VecDeque::new(),
        }
    }
}

/// Which way a frame goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    AtoB,
    BtoA,
}

/// A frame as the pair saw it leave.
#[derive(Clone, Debug)]
struct Sent {
    dir: Dir,
    kind: String,
}

/// Decides whether a frame is lost on its way.
type DropRule = Box<dyn FnMut(Dir, &str) -> bool>;

/// Members 1 (`a`) and 2 (`b`), linked as peers 2 and 1.
struct Pair {
    a: Side,
    b: Side,
    /// The simulated time, in milliseconds.
    now: u64,
    /// One-way delay of every frame.
    latency_ms: u64,
    /// Every frame sent, in order.
    sent: Vec<Sent>,
    /// Links closed, by the end that closed them, with the reason.
    closed: Vec<(Dir, String)>,
    drop_rule: Option<DropRule>,
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
    fn new(config: ReplicationConfig) -> Pair {
        Pair {
            a: Side::new(1, 2, config.clone()),
            b: Side::new(2, 1, config),
            now: 0,
            latency_ms: 0,
            sent: Vec::new(),
            closed: Vec::new(),
            drop_rule: None,
        }
    }

    /// Both ends see the link come up.
    fn connect(&mut self) {
        let (a, b) = (&mut self.a, &mut self.b);
        a.replicator
            .connected(a.link, b.store.member_id(), &a.store, self.now);
        b.replicator
            .connected(b.link, a.store.member_id(), &b.store, self.now);
    }

    /// Both ends see the link go down; frames on it are lost.
    fn disconnect(&mut self) {
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
                        self.sent.push(Sent { dir, kind });
                        if !lost {
                            to.incoming.push_back((self.now + self.latency_ms, frame));
                        }
                    }
                    Output::Close { reason, .. } => self.closed.push((dir, reason)),
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
                side.replicator
                    .handle(side.link, &frame, &side.store, self.now)
                    .unwrap_or_else(|e| panic!("frame refused: {e}"));
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
    fn step(&mut self) -> bool {
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
    fn drive(&mut self) {
        for _ in 0..100_000 {
            if !self.step() {
                return;
            }
        }
        panic!("the pair never went quiet");
    }

    /// Lets `ms` pass, then ticks both ends and drives them.
    fn tick(&mut self, ms: u64) {
        self.now += ms;
        for side in [&mut self.a, &mut self.b] {
            side.replicator
                .tick(&side.store, self.now)
                .unwrap_or_else(|e| panic!("tick: {e}"));
        }
        self.drive();
    }

    /// Frames of `kind` sent in direction `dir`.
    fn count(&self, dir: Dir, kind: &str) -> usize {
        self.sent
            .iter()
            .filter(|s| s.dir == dir && s.kind == kind)
            .count()
    }
}

fn put(value: &[u8]) -> Op {
    Op::Put {
        value: value.to_vec(),
        context: None,
    }
}

/// The register values under `key`, sorted (`None`: absent or deleted).
fn get(store: &MemoryStore, key: &[u8]) -> Option<Vec<Vec<u8>>> {
    match store.record(key)?.get(Kind::Register)? {
        Value::Register(r) => {
            let mut v: Vec<Vec<u8>> = r.store.values().cloned().collect();
            v.sort();
            Some(v)
        }
        _ => None,
    }
}

/// Every record, as the seam streams them.
fn states(store: &MemoryStore) -> Vec<RecordState> {
    store.read_range(b"", usize::MAX).unwrap().0
}

#[test]
fn two_replicas_exchange_writes_and_a_foreign_cluster_is_refused() {
    let mut pair = Pair::new(ReplicationConfig::default());
    pair.latency_ms = 20;
    pair.a.store.apply(b"k", put(b"from-a")).unwrap();
    pair.b.store.apply(b"j", put(b"from-b")).unwrap();
    pair.connect();
    pair.drive();
    assert_eq!(get(&pair.b.store, b"k"), Some(vec![b"from-a".to_vec()]));
    assert_eq!(get(&pair.a.store, b"j"), Some(vec![b"from-b".to_vec()]));
    assert_eq!(pair.a.store.applied(), pair.b.store.applied());
    assert_eq!(states(&pair.a.store), states(&pair.b.store));

    // A later write goes out at the next tick.
    pair.a.store.apply(b"k", put(b"again")).unwrap();
    pair.tick(1);
    assert_eq!(get(&pair.b.store, b"k"), Some(vec![b"again".to_vec()]));

    // A replica of another cluster says hello to a: refused, and only that link is closed.
    let c = MemoryStore::new(ReplicaId(3), 0);
    let other = ReplicationConfig {
        cluster: "elsewhere".into(),
        ..ReplicationConfig::default()
    };
    let mut rc = Replicator::new(c.member_id(), other);
    let a = &mut pair.a.replicator;
    a.connected(LinkId(3), c.member_id(), &pair.a.store, pair.now);
    rc.connected(LinkId(1), ReplicaId(1), &c, pair.now);
    let hello = std::iter::from_fn(|| rc.poll_output())
        .find_map(|o| match o {
            Output::Send { frame, .. } => Some(frame),
            _ => None,
        })
        .unwrap();
    let err = a
        .handle(LinkId(3), &hello, &pair.a.store, pair.now)
        .unwrap_err();
    assert!(
        matches!(
            err,
            ReplicationError::Peer {
                peer: LinkId(3),
                ..
            }
        ),
        "{err}"
    );
    let link3 = |r: &Replicator| {
        r.peers()
            .find(|(id, _)| *id == LinkId(3))
            .map(|(_, p)| p.state.clone())
    };
    assert!(matches!(link3(a), Some(LinkState::Refused)));
    // The frames a queued for link 3 go nowhere in this pair; the link to b goes on.
    pair.drive();
    assert_eq!(pair.closed.len(), 1, "a closed link 3, and only it");
    pair.a.store.apply(b"k", put(b"still")).unwrap();
    pair.tick(1);
    assert_eq!(get(&pair.b.store, b"k"), Some(vec![b"still".to_vec()]));
}

/// An entries frame lost on the way: the next one arrives after a hole, is not applied, and
/// is answered with a `Nack`; the sender resends from the hole at once, without waiting for
/// its retransmission timer.
#[test]
fn an_entry_after_a_hole_is_not_applied_and_is_nacked() {
    let mut pair = Pair::new(ReplicationConfig {
        frame_bytes_target: 1, // one entry per frame
        ..ReplicationConfig::default()
    });
    pair.latency_ms = 5;
    pair.connect();
    pair.drive();
    let mut lost = 0;
    pair.drop_rule = Some(Box::new(move |dir, kind| {
        let lose = dir == Dir::AtoB && kind == "Entries" && lost == 0;
        lost += usize::from(lose);
        lose
    }));
    pair.a.store.apply(b"x", put(b"1")).unwrap();
    pair.a.store.apply(b"y", put(b"2")).unwrap();
    pair.a.store.apply(b"z", put(b"3")).unwrap();
    pair.tick(1);
    // Entries 2 and 3 came after the hole: each is refused and answered with a Nack.
    let gaps = pair.b.replicator.stats().gaps;
    assert!(gaps >= 1, "entry 2 came after a hole");
    assert_eq!(pair.count(Dir::BtoA, "Nack") as u64, gaps);
    assert_eq!(pair.a.replicator.stats().retransmits, 0);
    assert!(pair.now < ReplicationConfig::default().retransmit_ms);
    for (key, value) in [(&b"x"[..], b"1"), (b"y", b"2"), (b"z", b"3")] {
        assert_eq!(get(&pair.b.store, key), Some(vec![value.to_vec()]));
    }
    assert_eq!(pair.a.store.applied(), pair.b.store.applied());
}

#[test]
fn a_peer_behind_a_truncated_log_catches_up_by_state_transfer_and_deletes_stay_deleted() {
    let mut pair = Pair::new(ReplicationConfig::default());
    pair.latency_ms = 10;
    for i in 0..200u32 {
        pair.a
            .store
            .apply(format!("k{i}").as_bytes(), put(b"v1"))
            .unwrap();
    }
    pair.connect();
    pair.drive();
    assert_eq!(pair.b.store.applied(), pair.a.store.applied());
    pair.disconnect();
    let stale = pair.b.store.export(b"k2").unwrap();

    // While b is away: updates, a delete, and a log truncated past everything b has.
    let a = &pair.a.store;
    a.apply(b"k1", put(b"v2")).unwrap();
    a.apply(b"k2", Op::Delete).unwrap();
    a.apply(b"new", put(b"x")).unwrap();
    let c = a.compact(&a.applied()).unwrap();
    assert!(c.log_entries_removed >= 203, "{c:?}");
    assert_eq!(c.tombstones_removed, 1, "stable by fiat here");
    assert!(a.read_entry(a.replica_id(), 1).unwrap().is_none());

    pair.now += 1_000;
    pair.connect();
    pair.drive();
    assert_eq!(pair.a.replicator.stats().antientropy_rounds, 1);
    let (a, b) = (&pair.a.store, &pair.b.store);
    assert_eq!(get(b, b"k1"), Some(vec![b"v2".to_vec()]));
    assert_eq!(get(b, b"new"), Some(vec![b"x".to_vec()]));
    assert_eq!(b.applied(), a.applied(), "b adopts a's vector");
    // a reclaimed the delete's tombstone, so the transfer could not carry the delete; but a
    // holds nothing of k2 and applied every write to it: b removes what it held of it.
    assert_eq!(get(b, b"k2"), None, "b learnt the delete");
    // A stale state sent back must not resurrect it at a either.
    a.merge_states(&[(b"k2".to_vec(), stale)], &VersionVector::new())
        .unwrap();
    assert_eq!(get(a, b"k2"), None, "a resurrected a reclaimed delete");
}

/// With a 30 ms round trip, the link measures it as it becomes ready, its window grows with
/// it, and a backlog never has more than the window (plus one frame) in flight.
#[test]
fn the_in_flight_window_grows_with_the_round_trip_and_bounds_a_backlog() {
    let config = ReplicationConfig {
        inflight_bytes_max: 64 << 10,
        inflight_bytes_per_rtt_ms: 4 << 10,
        frame_bytes_target: 16 << 10,
        ..ReplicationConfig::default()
    };
    let r = Replicator::new(ReplicaId(1), config.clone());
    assert_eq!(
        r.inflight_window(None),
        64 << 10,
        "round trip not measured yet"
    );
    assert_eq!(r.inflight_window(Some(20)), (64 << 10) + 20 * (4 << 10));
    assert_eq!(r.inflight_window(Some(u64::MAX)), INFLIGHT_BYTES_CAP);

    let mut pair = Pair::new(config);
    pair.latency_ms = 15;
    let value = vec![7u8; 4 << 10];
    for i in 0..300u32 {
        pair.a
            .store
            .apply(format!("k{i:03}").as_bytes(), put(&value))
            .unwrap();
    }
    pair.connect();
    // Step by step, watching a's bytes in flight.
    let link = |pair: &Pair| {
        let p = pair.a.replicator.peers().next().unwrap().1;
        (p.inflight_bytes, p.rtt_ms)
    };
    let mut most = 0;
    for _ in 0..10_000 {
        let moving = pair.step();
        let (inflight, rtt) = link(&pair);
        let window = pair.a.replicator.inflight_window(rtt);
        // Under the window before each frame: at most one frame's worth beyond.
        assert!(
            inflight < window + (16 << 10) + (8 << 10),
            "{inflight} bytes in flight, window {window}"
        );
        most = most.max(inflight);
        if !moving {
            if pair.b.store.applied() == pair.a.store.applied() {
                break;
            }
            pair.tick(1); // acknowledgements go out at the next tick
        }
    }
    assert_eq!(
        link(&pair).1,
        Some(30),
        "hellos arrive at 15 ms, the pong at 45 ms"
    );
    assert!(most > 64 << 10, "the window grew past its base ({most})");
    assert_eq!(pair.b.store.applied(), pair.a.store.applied());
    assert_eq!(states(&pair.a.store), states(&pair.b.store));
    // 1.2 MB through a window of about 200 KiB: several round trips.
    assert!(pair.now > 4 * 30, "{} ms", pair.now);
}

/// The replicator releases this replica's entries once every other member reports them.
#[test]
fn acknowledged_entries_are_released() {
    let mut pair = Pair::new(members_config());
    pair.latency_ms = 5;
    pair.a.store.apply(b"k", put(b"v")).unwrap();
    pair.connect();
    pair.drive();
    assert_eq!(get(&pair.b.store, b"k"), Some(vec![b"v".to_vec()]));
    assert_eq!(pair.a.store.released(), 0, "not acknowledged yet");
    pair.tick(10); // b acknowledges what arrived since its last Ack
    assert_eq!(pair.a.store.released(), 1);
}

/// A store restarted after replicating waits for its peer's word before writing; a restored
/// backup that lost writes its peer holds moves to a new epoch, and gets them back.
#[test]
fn a_restart_is_confirmed_by_the_peer_and_a_restored_backup_starts_a_new_epoch() {
    let mut pair = Pair::new(members_config());
    pair.latency_ms = 5;
    pair.connect();
    pair.drive();
    pair.a.store.apply(b"k", put(b"1")).unwrap();
    pair.tick(1);
    let backup = pair.a.store.checkpoint();
    pair.a.store.apply(b"k", put(b"2")).unwrap();
    pair.tick(1);
    assert_eq!(pair.b.store.applied().get(ReplicaId(1)), 2);

    // A clean restart: unconfirmed until b's hello shows it holds no more of a's origin.
    pair.disconnect();
    pair.a.store.restart();
    pair.a.replicator = Replicator::new(ReplicaId(1), members_config());
    assert_eq!(
        pair.a.store.apply(b"k", put(b"x")),
        Err(MemoryStoreError::Recovering)
    );
    pair.connect();
    pair.drive();
    assert!(pair.a.store.origin_view().confirmed);
    assert_eq!(pair.a.store.replica_id(), ReplicaId(1), "still epoch 0");
    pair.a.store.apply(b"k", put(b"3")).unwrap();
    pair.tick(1);
    assert_eq!(get(&pair.b.store, b"k"), Some(vec![b"3".to_vec()]));

    // The backup holds write 1 only; b holds 3: a new epoch, and writes 2 and 3 come back.
    pair.disconnect();
    pair.a.store = backup;
    pair.a.replicator = Replicator::new(ReplicaId(1), members_config());
    pair.connect();
    pair.drive();
    let view = pair.a.store.origin_view();
    assert!(view.confirmed);
    assert_eq!(view.epoch, 1);
    assert_eq!(view.origin, ReplicaId(1).epoch_origin(1));
    pair.tick(ReplicationConfig::default().relay_delay_ms);
    pair.tick(1);
    assert_eq!(pair.a.store.applied().get(ReplicaId(1)), 3);
    assert_eq!(get(&pair.a.store, b"k"), Some(vec![b"3".to_vec()]));
    pair.a.store.apply(b"k", put(b"4")).unwrap();
    pair.tick(1);
    assert_eq!(get(&pair.b.store, b"k"), Some(vec![b"4".to_vec()]));
    assert_eq!(pair.a.store.applied(), pair.b.store.applied());
    assert_eq!(states(&pair.a.store), states(&pair.b.store));
}
