//! Stability: what every member applied, the own entries released once shipped everywhere,
//! and compaction below it.

use super::pair::*;
use crate::model::{MemberId, Op};
use crate::replication::*;

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

/// Log entries and tombstones are reclaimed once every member has applied them: not while a
/// member has never reported, and at the next compaction once it is removed (declared dead).
#[test]
fn log_entries_and_tombstones_are_reclaimed_once_every_member_applied_them() {
    let mut pair = Pair::new(ReplicationConfig {
        members: vec![MemberId(1), MemberId(2), MemberId(3)],
        ..ReplicationConfig::default()
    });
    pair.latency_ms = 5;
    let compact_every_ms = ReplicationConfig::default().compact_every_ms;
    pair.a.store.apply(b"k", put(b"v")).unwrap();
    pair.a.store.apply(b"k", Op::Delete).unwrap();
    pair.connect();
    pair.drive();
    pair.tick(compact_every_ms); // a compaction is due; b acknowledges
    assert_eq!(pair.b.store.applied(), pair.a.store.applied());

    // Member 3 never reported: nothing is stable, nothing is reclaimed.
    let origin = pair.a.store.origin_id();
    for side in [&pair.a, &pair.b] {
        assert_eq!(side.replicator.stable(&side.store), None);
        assert_eq!(side.replicator.stats().log_entries_removed, 0);
        assert!(side.store.read_entry(origin, 1).unwrap().is_some());
        let tombstone = side.store.record(b"k");
        assert!(
            tombstone.as_ref().is_some_and(|r| r.is_bottom()),
            "{tombstone:?}"
        );
    }

    // Member 3 is declared dead: what a and b both applied is stable, and reclaimed.
    for side in [&mut pair.a, &mut pair.b] {
        side.replicator.remove_member(MemberId(3));
    }
    let applied = pair.a.store.applied();
    for side in [&pair.a, &pair.b] {
        assert_eq!(side.replicator.stable(&side.store), Some(applied.clone()));
    }
    pair.tick(compact_every_ms);
    for side in [&pair.a, &pair.b] {
        let stats = side.replicator.stats();
        let reclaimed = (
            stats.log_entries_removed,
            stats.tombstones_removed,
            stats.tombstones_pending,
        );
        assert_eq!(reclaimed, (2, 1, 0));
        assert_eq!(side.store.log_floor().get(origin), 2);
        assert!(side.store.read_entry(origin, 2).unwrap().is_none());
        assert_eq!(side.store.record(b"k"), None, "the tombstone stayed");
    }

    // The log goes on above the floor.
    pair.a.store.apply(b"k", put(b"again")).unwrap();
    pair.tick(1);
    assert_eq!(get(&pair.b.store, b"k"), Some(vec![b"again".to_vec()]));
}

/// A member whose claim holds more of this replica's writes than it made is shown wrong, and
/// stability does not take that claim (nor its other origins): a delete it never received
/// keeps its tombstone and log entry while it lies, and reaches it once it reports truly
/// (simulator seed 3100000324, where a liar's claim of a third origin let a tombstone go).
#[test]
fn a_claim_shown_wrong_moves_no_tombstone_out() {
    let mut pair = Pair::new(members_config());
    pair.latency_ms = 5;
    let compact_every_ms = ReplicationConfig::default().compact_every_ms;
    pair.connect();
    pair.drive();
    pair.a.store.apply(b"k", put(b"v")).unwrap();
    pair.tick(compact_every_ms);
    assert_eq!(get(&pair.b.store, b"k"), Some(vec![b"v".to_vec()]));
    let first = pair.a.store.origin_id();

    // a deletes k; the entry is lost on its way, and b starts lying about what it holds.
    pair.drop_rule = Some(Box::new(|dir, kind| dir == Dir::AtoB && kind == "Entries"));
    pair.a.store.apply(b"k", Op::Delete).unwrap();
    pair.tick(1);
    pair.drop_rule = None;
    pair.tamper = Some(Box::new(|dir, frame| match dir {
        Dir::BtoA => Frame::with_claims_raised(frame, 1_000_000),
        Dir::AtoB => frame,
    }));
    pair.disconnect();
    pair.connect();
    pair.drive();
    for _ in 0..3 {
        pair.tick(compact_every_ms);
    }
    assert_eq!(
        get(&pair.b.store, b"k"),
        Some(vec![b"v".to_vec()]),
        "b never got the delete"
    );
    let stable = pair.a.replicator.stable(&pair.a.store).unwrap();
    assert_eq!(stable.get(first), 1, "stability took the lie: {stable:?}");
    assert!(
        pair.a.store.record(b"k").is_some_and(|r| r.is_bottom()),
        "the tombstone went before b applied the delete"
    );
    assert!(pair.a.store.read_entry(first, 2).unwrap().is_some());

    // b reports truly again: the delete reaches it, and only then goes everywhere.
    pair.tamper = None;
    pair.disconnect();
    pair.connect();
    pair.drive();
    for _ in 0..3 {
        pair.tick(compact_every_ms);
    }
    assert_eq!(get(&pair.b.store, b"k"), None, "b holds the deleted value");
    assert_eq!(
        pair.a.store.record(b"k"),
        None,
        "the tombstone stayed once b had the delete"
    );
    assert_eq!(pair.b.store.record(b"k"), None);
}
