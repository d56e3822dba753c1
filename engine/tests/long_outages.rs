//! What a member that stays down costs the others: the tombstone pass does work in proportion
//! to what changed while stability stands still.

#![allow(clippy::unwrap_used)]

use meridian::replication::ReplicaStore;
use meridian::{Config, Engine, VersionVector};

#[test]
fn with_stability_frozen_the_tombstone_pass_looks_only_at_new_tombstones() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), Config::default()).unwrap();
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
