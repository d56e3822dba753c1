//! Handshake and link-isolation tests of the state machine over real engines.

#![allow(clippy::unwrap_used)]

use meridian::model::{ReplicaId, VersionVector};
use meridian::replication::*;
use meridian::{Config, Engine};

fn engine(dir: &tempfile::TempDir, id: u64) -> Engine {
    let config = Config {
        replica_id: Some(ReplicaId(id)),
        ..Config::default()
    };
    Engine::open(dir.path(), config).expect("open")
}

/// An entry's shipped states as owned vectors.
fn owned_entry(e: &Engine, origin: ReplicaId, seq: u64) -> Option<Vec<RecordState>> {
    let states = e.read_entry(origin, seq).unwrap()?;
    Some(
        states
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect(),
    )
}

fn drain(r: &mut Replicator) -> Vec<Output> {
    std::iter::from_fn(|| r.poll_output()).collect()
}

/// Delivers every frame `from` has queued for `link` to `to`.
fn pump(from: &mut Replicator, to: &mut Replicator, link: LinkId, store: &Engine) {
    for o in drain(from) {
        if let Output::Send { frame, .. } = o {
            to.handle(link, &frame, store, 0).expect("frame accepted");
        }
    }
}

#[test]
fn two_replicas_exchange_writes_and_a_foreign_cluster_is_refused() {
    let (da, db, dc) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (ea, eb, ec) = (engine(&da, 1), engine(&db, 2), engine(&dc, 3));
    ea.put(b"k", b"from-a").unwrap();
    let mut a = Replicator::new(ea.member_id(), ReplicationConfig::default());
    let mut b = Replicator::new(eb.member_id(), ReplicationConfig::default());
    a.connected(LinkId(2), eb.member_id(), &ea, 0);
    b.connected(LinkId(1), ea.member_id(), &eb, 0);
    for _ in 0..4 {
        pump(&mut a, &mut b, LinkId(1), &eb);
        pump(&mut b, &mut a, LinkId(2), &ea);
    }
    assert_eq!(
        eb.get(b"k").unwrap().unwrap().values,
        vec![b"from-a".to_vec()]
    );
    assert_eq!(ea.applied(), eb.applied());

    // A replica of another cluster says hello to a: refused, and only that link is closed.
    let other = ReplicationConfig {
        cluster: "elsewhere".into(),
        ..ReplicationConfig::default()
    };
    let mut c = Replicator::new(ec.member_id(), other);
    a.connected(LinkId(3), ec.member_id(), &ea, 0);
    c.connected(LinkId(1), ea.member_id(), &ec, 0);
    let hello = drain(&mut c).into_iter().find_map(|o| match o {
        Output::Send { frame, .. } => Some(frame),
        _ => None,
    });
    let err = a.handle(LinkId(3), &hello.unwrap(), &ea, 0).unwrap_err();
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
    assert!(drain(&mut a).iter().any(|o| matches!(
        o,
        Output::Close {
            link: LinkId(3),
            ..
        }
    )));

    // Garbage on the b link closes that link; a keeps replicating to b afterwards.
    assert!(a
        .handle(LinkId(2), b"\x01\xff\xff garbage", &ea, 0)
        .is_err());
    assert!(drain(&mut a).iter().any(|o| matches!(
        o,
        Output::Close {
            link: LinkId(2),
            ..
        }
    )));
    assert!(matches!(
        a.peers()
            .find(|(id, _)| *id == LinkId(3))
            .map(|(_, p)| p.state.clone()),
        Some(LinkState::Refused)
    ));
}

#[test]
fn an_entry_after_a_hole_is_not_applied_and_is_nacked() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ea, eb) = (engine(&da, 1), engine(&db, 2));
    ea.put(b"x", b"1").unwrap();
    ea.put(b"y", b"2").unwrap();
    let records = owned_entry(&ea, ea.replica_id(), 2).unwrap();
    assert_eq!(
        eb.apply_entry(ea.replica_id(), 2, &records).unwrap(),
        ApplyOutcome::Gap { expected: 1 }
    );
    assert_eq!(eb.get(b"y").unwrap(), None);
    let first = owned_entry(&ea, ea.replica_id(), 1).unwrap();
    assert_eq!(
        eb.apply_entry(ea.replica_id(), 1, &first).unwrap(),
        ApplyOutcome::Applied { changed: 1 }
    );
    assert_eq!(
        eb.apply_entry(ea.replica_id(), 1, &first).unwrap(),
        ApplyOutcome::Duplicate
    );
    // A record that does not check is left out; the rest of the entry (and of the origin's
    // entries after it) is applied: the fault stays with its key.
    let mut mixed = vec![(b"z".to_vec(), b"\x01garbage".to_vec())];
    mixed.extend(owned_entry(&ea, ea.replica_id(), 2).unwrap());
    assert_eq!(
        eb.apply_entry(ea.replica_id(), 2, &mixed).unwrap(),
        ApplyOutcome::Applied { changed: 1 }
    );
    assert_eq!(eb.applied().get(ea.replica_id()), 2);
    assert_eq!(eb.get(b"z").unwrap(), None);
    assert_eq!(eb.get(b"y").unwrap().unwrap().values, vec![b"2".to_vec()]);
}

/// Runs frames between two replicators until both are quiet.
fn settle(a: &mut Replicator, ea: &Engine, b: &mut Replicator, eb: &Engine) -> u64 {
    let mut bytes = 0;
    for _ in 0..1_000 {
        let (fa, fb) = (drain(a), drain(b));
        if fa.is_empty() && fb.is_empty() {
            return bytes;
        }
        for o in fa {
            if let Output::Send { frame, .. } = o {
                bytes += frame.len() as u64;
                b.handle(LinkId(1), &frame, eb, 0).expect("b accepts");
            }
        }
        for o in fb {
            if let Output::Send { frame, .. } = o {
                bytes += frame.len() as u64;
                a.handle(LinkId(2), &frame, ea, 0).expect("a accepts");
            }
        }
    }
    panic!("replicators never went quiet");
}

#[test]
fn a_peer_behind_a_truncated_log_catches_up_by_state_transfer_and_deletes_stay_deleted() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ea, eb) = (engine(&da, 1), engine(&db, 2));
    for i in 0..200u32 {
        ea.put(format!("k{i}").as_bytes(), b"v1").unwrap();
    }
    let (mut a, mut b) = (
        Replicator::new(ReplicaId(1), ReplicationConfig::default()),
        Replicator::new(ReplicaId(2), ReplicationConfig::default()),
    );
    a.connected(LinkId(2), eb.member_id(), &ea, 0);
    b.connected(LinkId(1), ea.member_id(), &eb, 0);
    settle(&mut a, &ea, &mut b, &eb);
    assert_eq!(eb.applied(), ea.applied());
    a.disconnected(LinkId(2));
    b.disconnected(LinkId(1));
    let stale = eb.export(b"k2").unwrap().unwrap();

    // While b is away: updates, a delete, and a log truncated past everything b has.
    ea.put(b"k1", b"v2").unwrap();
    ea.delete(b"k2").unwrap();
    ea.put(b"new", b"x").unwrap();
    let c = ea.compact(&ea.applied()).unwrap();
    assert!(c.log_entries_removed >= 203, "{c:?}");
    assert_eq!(
        c.tombstones_removed, 1,
        "the delete's tombstone is stable by fiat here"
    );
    assert!(ea.read_entry(ea.replica_id(), 1).unwrap().is_none());

    a.connected(LinkId(2), eb.member_id(), &ea, 0);
    b.connected(LinkId(1), ea.member_id(), &eb, 0);
    settle(&mut a, &ea, &mut b, &eb);
    assert_eq!(a.stats().antientropy_rounds, 1);
    assert_eq!(eb.get(b"k1").unwrap().unwrap().values, vec![b"v2".to_vec()]);
    assert_eq!(eb.get(b"new").unwrap().unwrap().values, vec![b"x".to_vec()]);
    assert_eq!(
        eb.applied(),
        ea.applied(),
        "b adopts a's vector after the transfer"
    );
    // a reclaimed the delete's tombstone, so the transfer could not carry the delete; but a
    // holds nothing of k2 and applied every write to it: b removes what it held of it.
    assert_eq!(eb.get(b"k2").unwrap(), None, "b learnt the delete");
    // A stale state sent back must not resurrect it at a either.
    ea.merge_states(&[(b"k2".to_vec(), stale)], &VersionVector::new())
        .unwrap();
    assert_eq!(
        ea.get(b"k2").unwrap(),
        None,
        "a resurrected a reclaimed delete"
    );
}

/// Shipping a key's state as an older write left it could bring back a dot whose removal the
/// receiver knows only through a tombstone reclaimed since (found by the simulator): entries
/// go out with the current states, whatever the in-memory caches hold.
#[test]
fn an_entry_is_shipped_with_the_current_state_of_its_keys() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ea, eb) = (engine(&da, 1), engine(&db, 2));
    ea.enable_replication_cache();
    let current = |e: &Engine| vec![(b"s".to_vec(), e.export(b"s").unwrap().unwrap())];
    ea.set_add(b"s", &[b"x"]).unwrap(); // entry 1
    ea.set_remove(b"s", &[b"x"]).unwrap(); // entry 2 rewrites the key
    assert_eq!(owned_entry(&ea, ea.replica_id(), 1).unwrap(), current(&ea));
    // A peer's state joined in changes the key too.
    eb.set_add(b"s", &[b"y"]).unwrap();
    assert!(ea
        .apply_remote(b"s", &eb.export(b"s").unwrap().unwrap())
        .unwrap());
    assert_eq!(owned_entry(&ea, ea.replica_id(), 1).unwrap(), current(&ea));
    assert_eq!(ea.get_set(b"s").unwrap().unwrap(), vec![b"y".to_vec()]);
}

/// The replicator releases this replica's entries once every other member reports them.
#[test]
fn acknowledged_entries_are_released() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ea, eb) = (engine(&da, 1), engine(&db, 2));
    ea.enable_replication_cache();
    let config = ReplicationConfig {
        members: vec![ReplicaId(1), ReplicaId(2)],
        ..ReplicationConfig::default()
    };
    let mut a = Replicator::new(ea.member_id(), config.clone());
    let mut b = Replicator::new(eb.member_id(), config);
    ea.put(b"k", b"v").unwrap();
    a.connected(LinkId(2), eb.member_id(), &ea, 0);
    b.connected(LinkId(1), ea.member_id(), &eb, 0);
    settle(&mut a, &ea, &mut b, &eb);
    assert_eq!(eb.get(b"k").unwrap().unwrap().values, vec![b"v".to_vec()]);
    assert!(ea.holds_shipping_state(b"k"), "not acknowledged yet");
    b.tick(&eb, 10).unwrap(); // acknowledges what arrived since the last Ack
    settle(&mut a, &ea, &mut b, &eb);
    assert!(
        !ea.holds_shipping_state(b"k"),
        "b applied entry 1: a no longer keeps its state"
    );
}

#[test]
fn the_in_flight_window_grows_with_the_round_trip_up_to_the_cap() {
    let config = ReplicationConfig::default();
    let (base, per_ms) = (config.inflight_bytes_max, config.inflight_bytes_per_rtt_ms);
    let r = Replicator::new(ReplicaId(1), config);
    assert_eq!(r.inflight_window(None), base, "round trip not measured yet");
    assert_eq!(r.inflight_window(Some(0)), base);
    assert_eq!(r.inflight_window(Some(20)), base + 20 * per_ms);
    assert_eq!(r.inflight_window(Some(u64::MAX)), INFLIGHT_BYTES_CAP);
}

#[test]
fn a_link_measures_its_round_trip_as_it_becomes_ready() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ea, eb) = (engine(&da, 1), engine(&db, 2));
    let mut a = Replicator::new(ea.member_id(), ReplicationConfig::default());
    let mut b = Replicator::new(eb.member_id(), ReplicationConfig::default());
    a.connected(LinkId(2), eb.member_id(), &ea, 0);
    b.connected(LinkId(1), ea.member_id(), &eb, 0);
    let deliver = |from: &mut Replicator, to: &mut Replicator, link, store: &Engine, now| {
        for o in drain(from) {
            if let Output::Send { frame, .. } = o {
                to.handle(link, &frame, store, now).expect("frame accepted");
            }
        }
    };
    // a's hello reaches b; b's answer reaches a, which is then ready and pings; the pong comes
    // back 30 ms after a sent the ping.
    deliver(&mut a, &mut b, LinkId(1), &eb, 0);
    deliver(&mut b, &mut a, LinkId(2), &ea, 10);
    deliver(&mut a, &mut b, LinkId(1), &eb, 10);
    deliver(&mut b, &mut a, LinkId(2), &ea, 40);
    let rtt = a
        .peers()
        .find(|(id, _)| *id == LinkId(2))
        .and_then(|(_, p)| p.rtt_ms);
    assert_eq!(rtt, Some(30));
    let base = ReplicationConfig::default().inflight_bytes_max;
    assert!(
        a.inflight_window(rtt) > base,
        "the window grew with the round trip"
    );
}

/// Equal vectors do not prove equal records (a dot of a write lost with a disk can survive at
/// some replicas only, found by the simulator): idle links still compare tables now and then,
/// and both ends offering at once does not stall either.
#[test]
fn idle_links_with_equal_vectors_still_find_a_differing_record() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ea, eb) = (engine(&da, 1), engine(&db, 2));
    ea.put(b"orphan", b"v").unwrap();
    ea.put(b"shared", b"v").unwrap();
    eb.merge_states(
        &[(b"shared".to_vec(), ea.export(b"shared").unwrap().unwrap())],
        &VersionVector::new(),
    )
    .unwrap();
    // b's vector covers both writes, but it holds only one of them.
    eb.adopt(&ea.applied()).unwrap();
    assert_eq!(ea.applied(), eb.applied());
    let config = ReplicationConfig::default();
    let check = config.antientropy_check_ms;
    let (mut a, mut b) = (
        Replicator::new(ReplicaId(1), config.clone()),
        Replicator::new(ReplicaId(2), config),
    );
    a.connected(LinkId(2), eb.member_id(), &ea, 0);
    b.connected(LinkId(1), ea.member_id(), &eb, 0);
    settle(&mut a, &ea, &mut b, &eb);
    a.tick(&ea, check - 1).unwrap();
    b.tick(&eb, check - 1).unwrap();
    settle(&mut a, &ea, &mut b, &eb);
    assert_eq!(
        a.stats().antientropy_rounds + b.stats().antientropy_rounds,
        0
    );
    assert!(ea.get(b"orphan").unwrap().is_some());

    // Both offer at once: the lower member's round goes first (b cannot take the record, its
    // vector says it removed it), and b's round follows at its next tick.
    a.tick(&ea, check).unwrap();
    b.tick(&eb, check).unwrap();
    settle(&mut a, &ea, &mut b, &eb);
    assert_eq!(a.stats().antientropy_rounds, 1);
    assert_eq!(b.stats().antientropy_rounds, 1);
    assert!(ea.get(b"orphan").unwrap().is_some());
    b.tick(&eb, check + 1).unwrap();
    settle(&mut a, &ea, &mut b, &eb);
    assert_eq!(b.stats().antientropy_rounds, 2);
    // b applied that write and holds nothing of it: it removed it, and a learns so.
    assert_eq!(ea.get(b"orphan").unwrap(), None);
    assert_eq!(eb.get(b"orphan").unwrap(), None);
    assert!(ea.get(b"shared").unwrap().is_some());
    assert!(eb.get(b"shared").unwrap().is_some());
    let idle = |r: &Replicator| r.peers().all(|(_, p)| !p.reconciling());
    assert!(idle(&a) && idle(&b), "a round was left hanging");

    // Nothing more until the interval has passed again.
    a.tick(&ea, 2 * check - 1).unwrap();
    b.tick(&eb, 2 * check).unwrap();
    settle(&mut a, &ea, &mut b, &eb);
    assert_eq!(a.stats().antientropy_rounds, 1);
    assert_eq!(b.stats().antientropy_rounds, 2);
}

/// A duplicated offer (found by the simulator, whose network duplicates frames) answered a
/// second time after a local write must not make the receiver drop a key the offerer holds.
#[test]
fn a_duplicated_offer_is_answered_once() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ea, eb) = (engine(&da, 1), engine(&db, 2));
    ea.set_add(b"set", &[b"from-a"]).unwrap();
    let config = ReplicationConfig::default();
    let check = config.antientropy_check_ms;
    let (mut a, mut b) = (
        Replicator::new(ReplicaId(1), config.clone()),
        Replicator::new(ReplicaId(2), config),
    );
    a.connected(LinkId(2), eb.member_id(), &ea, 0);
    b.connected(LinkId(1), ea.member_id(), &eb, 0);
    settle(&mut a, &ea, &mut b, &eb);
    assert_eq!(eb.applied(), ea.applied());
    a.tick(&ea, check - 1).unwrap();
    b.tick(&eb, check - 1).unwrap();
    settle(&mut a, &ea, &mut b, &eb);

    a.tick(&ea, check).unwrap();
    let offer: Vec<Vec<u8>> = drain(&mut a)
        .into_iter()
        .filter_map(|o| match o {
            Output::Send { frame, .. } => Some(frame.to_vec()),
            _ => None,
        })
        .collect();
    assert_eq!(a.stats().antientropy_rounds, 1, "a offered");
    for f in &offer {
        b.handle(LinkId(1), f, &eb, check).unwrap();
    }
    eb.set_add(b"set", &[b"from-b"]).unwrap();
    for f in &offer {
        b.handle(LinkId(1), f, &eb, check).unwrap();
    }
    settle(&mut a, &ea, &mut b, &eb);
    let members = |e: &Engine| e.get_set(b"set").unwrap().unwrap_or_default();
    assert_eq!(
        members(&eb),
        vec![b"from-a".to_vec(), b"from-b".to_vec()],
        "b dropped a's element"
    );
    a.tick(&ea, check + 1).unwrap();
    b.tick(&eb, check + 1).unwrap();
    settle(&mut a, &ea, &mut b, &eb);
    assert_eq!(members(&ea), members(&eb));
}
