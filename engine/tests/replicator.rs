//! The RocksDB engine as the replication core's storage seam (`ReplicaStore`): what only the
//! engine does, under the replicator or alone. Entries applied in order, each once, with a
//! record that does not check left out; entries shipped with their keys' current states
//! whatever the in-memory caches hold; acknowledged entries leaving those caches. The
//! replicator's protocol itself is tested on `MemoryStore` in the core
//! (`engine/core/src/replication/replicator/tests/`), and `store_equivalence.rs` holds the
//! engine to that store's behaviour.

#![allow(clippy::unwrap_used)]

use meridian::{Config, Engine, Replication};
use meridian_core::model::{MemberId, OriginId};
use meridian_core::replication::*;

/// An engine for replica `id` in `dir`.
fn engine(dir: &tempfile::TempDir, id: u64) -> Replication {
    let config = Config {
        member_id: Some(MemberId(id)),
        ..Config::default()
    };
    Engine::open(dir.path(), config)
        .expect("open")
        .replication()
}

/// An entry's shipped states as owned vectors.
fn owned_entry(e: &Replication, origin: OriginId, seq: u64) -> Option<Vec<RecordState>> {
    let states = e.read_entry(origin, seq).unwrap()?.states;
    Some(
        states
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect(),
    )
}

/// Everything `r` has queued for its driver.
fn drain(r: &mut Replicator) -> Vec<Output> {
    std::iter::from_fn(|| r.poll_output()).collect()
}

/// Runs frames between two replicators until both are quiet.
fn settle(a: &mut Replicator, ea: &Replication, b: &mut Replicator, eb: &Replication) {
    for _ in 0..1_000 {
        let (fa, fb) = (drain(a), drain(b));
        if fa.is_empty() && fb.is_empty() {
            return;
        }
        for o in fa {
            if let Output::Send { frame, .. } = o {
                b.handle(LinkId(1), &frame, eb, 0).expect("b accepts");
            }
        }
        for o in fb {
            if let Output::Send { frame, .. } = o {
                a.handle(LinkId(2), &frame, ea, 0).expect("a accepts");
            }
        }
    }
    panic!("replicators never went quiet");
}

/// An entry after a hole is not applied, a repeated one is a duplicate, and a record that
/// does not check is left out of its entry while the rest applies.
#[test]
fn entries_apply_in_order_once_each_and_a_record_that_does_not_check_is_left_out() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ea, eb) = (engine(&da, 1), engine(&db, 2));
    ea.put(b"x", b"1").unwrap();
    ea.put(b"y", b"2").unwrap();
    let records = owned_entry(&ea, ea.origin_id(), 2).unwrap();
    assert_eq!(
        eb.apply_entry(ea.origin_id(), 2, &records).unwrap(),
        ApplyOutcome::Gap { expected: 1 }
    );
    assert_eq!(eb.get(b"y").unwrap(), None);
    let first = owned_entry(&ea, ea.origin_id(), 1).unwrap();
    assert_eq!(
        eb.apply_entry(ea.origin_id(), 1, &first).unwrap(),
        ApplyOutcome::Applied { changed: 1 }
    );
    assert_eq!(
        eb.apply_entry(ea.origin_id(), 1, &first).unwrap(),
        ApplyOutcome::Duplicate
    );
    // A record that does not check is left out; the rest of the entry (and of the origin's
    // entries after it) is applied: the fault stays with its key.
    let mut mixed = vec![(b"z".to_vec(), b"\x01garbage".to_vec())];
    mixed.extend(owned_entry(&ea, ea.origin_id(), 2).unwrap());
    assert_eq!(
        eb.apply_entry(ea.origin_id(), 2, &mixed).unwrap(),
        ApplyOutcome::Applied { changed: 1 }
    );
    assert_eq!(eb.applied().get(ea.origin_id()), 2);
    assert_eq!(eb.get(b"z").unwrap(), None);
    assert_eq!(eb.get(b"y").unwrap().unwrap().values, vec![b"2".to_vec()]);
}

/// Shipping a key's state as an older write left it could bring back a dot whose removal the
/// receiver knows only through a tombstone reclaimed since (found by the simulator): entries
/// go out with the current states, whatever the in-memory caches hold.
#[test]
fn an_entry_is_shipped_with_the_current_state_of_its_keys() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ea, eb) = (engine(&da, 1), engine(&db, 2));
    ea.enable_cache();
    let current = |e: &Replication| {
        vec![(
            b"s".to_vec(),
            e.replication().export(b"s").unwrap().unwrap(),
        )]
    };
    ea.set_add(b"s", &[b"x"]).unwrap(); // entry 1
    ea.set_remove(b"s", &[b"x"]).unwrap(); // entry 2 rewrites the key
    assert_eq!(owned_entry(&ea, ea.origin_id(), 1).unwrap(), current(&ea));
    // A peer's state joined in changes the key too.
    eb.set_add(b"s", &[b"y"]).unwrap();
    assert!(ea
        .replication()
        .apply_remote(b"s", &eb.replication().export(b"s").unwrap().unwrap())
        .unwrap());
    assert_eq!(owned_entry(&ea, ea.origin_id(), 1).unwrap(), current(&ea));
    assert_eq!(ea.get_set(b"s").unwrap().unwrap(), vec![b"y".to_vec()]);
}

/// The replicator releases this replica's entries once every other member reports them: the
/// engine then drops their states from its shipping caches.
#[test]
fn acknowledged_entries_leave_the_shipping_caches() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ea, eb) = (engine(&da, 1), engine(&db, 2));
    ea.enable_cache();
    let config = ReplicationConfig {
        members: vec![MemberId(1), MemberId(2)],
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
