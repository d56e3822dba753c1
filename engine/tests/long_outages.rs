//! What a member that stays down costs the others: the tombstone pass does work in proportion
//! to what changed while stability stands still, the log and tombstones are kept for it only up
//! to the retention cap, and a nearly full disk is a typed refusal, not a poisoned engine.

#![allow(clippy::unwrap_used)]

mod common;

use meridian::{Config, Engine, VersionVector};
use meridian_core::replication::ReplicaStore;

#[test]
fn with_stability_frozen_the_tombstone_pass_looks_only_at_new_tombstones() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), Config::default())
        .unwrap()
        .replication();
    for i in 0..3_000u32 {
        let key = format!("k{i:05}");
        e.put(key.as_bytes(), b"v").unwrap();
        e.delete(key.as_bytes()).unwrap();
    }
    // A member down: nothing is stable.
    let frozen = VersionVector::new();
    let first = e.compact(&frozen).unwrap();
    assert_eq!(
        first.tombstones_examined, 3_000,
        "the run's first pass looks at all"
    );
    assert_eq!(first.tombstones_pending, 3_000);
    for i in 0..3u32 {
        let key = format!("new{i}");
        e.put(key.as_bytes(), b"v").unwrap();
        e.delete(key.as_bytes()).unwrap();
    }
    let next = e.compact(&frozen).unwrap();
    assert_eq!(next.tombstones_examined, 3, "only the new tombstones");
    assert_eq!(next.tombstones_pending, 3_003);
    assert_eq!(next.tombstones_removed, 0);
    let idle = e.compact(&frozen).unwrap();
    assert_eq!(
        idle.tombstones_examined, 0,
        "nothing changed: nothing looked at"
    );
    // The member is back and everything is stable: one full pass reclaims them all.
    let healed = e.compact(&e.applied()).unwrap();
    assert_eq!(healed.tombstones_examined, 3_003);
    assert_eq!(healed.tombstones_removed, 3_003);
    assert_eq!(healed.tombstones_pending, 0);
    assert_eq!(e.scan_prefix(b"", 10).unwrap().len(), 0);
}

#[test]
fn a_nearly_full_disk_refuses_writes_with_a_typed_error_and_poisons_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), Config::default())
        .unwrap()
        .replication();
    e.put(b"k", b"v").unwrap();
    drop(e);
    let full = Config {
        disk_free_min_bytes: u64::MAX,
        ..Config::default()
    };
    let e = Engine::open(dir.path(), full).unwrap().replication();
    let refused = e.put(b"k2", b"v").unwrap_err();
    assert!(
        matches!(refused, meridian::Error::DiskFull { .. }),
        "{refused}"
    );
    assert!(refused.is_retryable());
    assert!(e.origin_status().writable, "not poisoned");
    assert_eq!(e.get(b"k").unwrap().unwrap().values, vec![b"v".to_vec()]);
    // Compaction frees space: it goes on.
    e.compact(&e.applied()).unwrap();
    drop(e);
    let e = Engine::open(dir.path(), Config::default())
        .unwrap()
        .replication();
    e.put(b"k2", b"v").unwrap();
}

/// A member down past the retention cap no longer holds reclamation back: the others' logs
/// and tombstones stay bounded, and when it returns state transfer brings it back, deletes
/// included (nothing it held comes back).
#[test]
fn a_member_down_past_the_retention_cap_holds_nothing_back_and_comes_back_by_state() {
    let mut net = common::Net::new(3);
    net.replication.log_retention_entries = 50;
    for i in 0..3 {
        net.stop(i);
        net.start(i);
    }
    net.run(200);
    for i in 0..20u32 {
        net.engine(0)
            .put(format!("old{i}").as_bytes(), b"v")
            .unwrap();
    }
    net.run(500);
    net.assert_everywhere("old0", "v");
    net.stop(2);
    for i in 0..20u32 {
        net.engine(0).delete(format!("old{i}").as_bytes()).unwrap();
    }
    for i in 0..200u32 {
        net.engine(0)
            .put(format!("new{i}").as_bytes(), b"w")
            .unwrap();
    }
    net.run(5_000);
    for i in 0..2 {
        let e = net.engine(i);
        let floor =
            meridian_core::replication::ReplicaStore::log_floor(e).get(net.engine(0).origin_id());
        assert!(floor >= 200, "region {i}: log floor {floor}");
        assert_eq!(
            e.store().records_from(b"", None).count(),
            200,
            "region {i}: the deletes' tombstones are reclaimed"
        );
    }
    net.start(2);
    net.run(10_000);
    for i in 0..20u32 {
        for r in 0..3 {
            assert!(
                net.engine(r)
                    .get(format!("old{i}").as_bytes())
                    .unwrap()
                    .is_none(),
                "old{i} back at region {r}"
            );
        }
    }
    net.assert_everywhere("new199", "w");
    let applied: Vec<_> = (0..3).map(|i| net.engine(i).applied()).collect();
    assert!(applied.windows(2).all(|w| w[0] == w[1]), "{applied:?}");
}
