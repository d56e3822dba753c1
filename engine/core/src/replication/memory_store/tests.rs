//! The in-memory store through the seam: entries, state transfer, compaction, epochs.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::model::digest::{key_hash, state_hash};
use crate::model::{Kind, MemberId, OriginId, Value, VersionVector};
use crate::replication::iblt::Iblt;
use crate::replication::{
    ApplyOutcome, Compaction, Exceptions, OfferPlan, RecordState, ReplicaStore,
};

fn put(value: &[u8]) -> Op {
    Op::Put {
        value: value.to_vec(),
        context: None,
    }
}

/// The register values under `key`, if it holds a register.
fn values(s: &MemoryStore, key: &[u8]) -> Option<Vec<Vec<u8>>> {
    match s.record(key)?.get(Kind::Register)? {
        Value::Register(r) => {
            let mut v: Vec<Vec<u8>> = r.store.values().cloned().collect();
            v.sort();
            Some(v)
        }
        _ => None,
    }
}

/// Every record, as the seam streams them.
fn all_states(s: &MemoryStore) -> Vec<RecordState> {
    s.read_range(b"", usize::MAX).unwrap().states.records
}

/// Ships every entry `from` holds that `to` has not applied (origin by origin, in order).
fn ship(from: &MemoryStore, to: &MemoryStore) -> usize {
    let mut applied = 0;
    for (origin, last) in from.applied().iter() {
        for seq in to.applied().get(origin) + 1..=last {
            let Some(states) = from.read_entry(origin, seq).unwrap() else {
                continue;
            };
            let records: Vec<RecordState> = states
                .states
                .iter()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect();
            let outcome = to.apply_entry(origin, seq, &records).unwrap();
            assert!(
                matches!(outcome, ApplyOutcome::Applied { .. }),
                "{origin}:{seq}: {outcome:?}"
            );
            applied += 1;
        }
    }
    applied
}

#[test]
fn two_stores_exchanging_entries_through_the_seam_converge() {
    let (a, b) = (
        MemoryStore::new(MemberId(1), 0),
        MemoryStore::new(MemberId(2), 0),
    );
    assert_eq!(a.apply(b"x", put(b"a1")).unwrap(), 1);
    assert_eq!(a.apply(b"shared", put(b"from-a")).unwrap(), 2);
    b.apply(b"shared", put(b"from-b")).unwrap();
    b.apply(b"y", Op::CounterAdd { delta: 5 }).unwrap();
    b.apply(b"y", Op::CounterAdd { delta: -2 }).unwrap();
    a.apply(
        b"lww",
        Op::LwwSet {
            value: b"1".to_vec(),
        },
    )
    .unwrap();
    assert_eq!(ship(&a, &b), 3);
    assert_eq!(ship(&b, &a), 3);
    assert_eq!(ship(&a, &b), 0, "b relays nothing new to a");
    assert_eq!(a.applied(), b.applied());
    assert_eq!(all_states(&a), all_states(&b));
    // Concurrent writes are siblings; one that saw both supersedes them.
    assert_eq!(
        values(&a, b"shared").unwrap(),
        vec![b"from-a".to_vec(), b"from-b".to_vec()]
    );
    a.apply(b"shared", put(b"resolved")).unwrap();
    ship(&a, &b);
    assert_eq!(values(&b, b"shared").unwrap(), vec![b"resolved".to_vec()]);
    // An entry relayed through b reaches a third store.
    let c = MemoryStore::new(MemberId(3), 0);
    ship(&b, &c);
    assert_eq!(all_states(&c), all_states(&a));
    // A later LWW write here orders after what it observed from a peer.
    c.apply(
        b"lww",
        Op::LwwSet {
            value: b"2".to_vec(),
        },
    )
    .unwrap();
    ship(&c, &a);
    match a.record(b"lww").unwrap().get(Kind::Lww).unwrap() {
        Value::Lww(r) => {
            let v: Vec<&[u8]> = r.store.values().map(|e| &e.value[..]).collect();
            assert_eq!(v, vec![&b"2"[..]]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn gaps_duplicates_and_own_entries_are_not_applied() {
    let (a, b) = (
        MemoryStore::new(MemberId(1), 0),
        MemoryStore::new(MemberId(2), 0),
    );
    a.apply(b"x", put(b"1")).unwrap();
    a.apply(b"y", put(b"2")).unwrap();
    let entry = |seq| -> Vec<RecordState> {
        a.read_entry(a.origin_id(), seq)
            .unwrap()
            .unwrap()
            .states
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect()
    };
    let origin = a.origin_id();
    assert_eq!(
        b.apply_entry(origin, 2, &entry(2)).unwrap(),
        ApplyOutcome::Gap { expected: 1 }
    );
    assert_eq!(b.record(b"y"), None);
    assert_eq!(
        b.apply_entry(origin, 1, &entry(1)).unwrap(),
        ApplyOutcome::Applied { changed: 1 }
    );
    assert_eq!(
        b.apply_entry(origin, 1, &entry(1)).unwrap(),
        ApplyOutcome::Duplicate
    );
    // A record that does not check is left out; the rest of the entry is applied, partial:
    // the key is among the exceptions, and the entry is relayed as partial.
    let mut mixed = vec![(b"z".to_vec(), b"\x01garbage".to_vec())];
    mixed.extend(entry(2));
    assert_eq!(
        b.apply_entry(origin, 2, &mixed).unwrap(),
        ApplyOutcome::Applied { changed: 1 }
    );
    assert_eq!(b.applied().get(origin), 2);
    assert_eq!(b.record(b"z"), None);
    assert_eq!(b.exceptions().uncertain, vec![key_hash(b"z")]);
    // The receiver logged the entries for relaying, with its current states.
    let relayed = b.read_entry(origin, 2).unwrap().unwrap();
    assert_eq!(relayed.states[0].1.to_vec(), b.export(b"y").unwrap());
    assert_eq!(relayed.left_out, vec![b"z".to_vec()]);
    // Entries of this replica's own origin coming back are duplicates.
    assert_eq!(
        a.apply_entry(origin, 3, &entry(1)).unwrap(),
        ApplyOutcome::Duplicate
    );
}

#[test]
fn a_batch_is_one_dot_and_one_entry_and_a_failed_write_spends_no_number() {
    let a = MemoryStore::new(MemberId(1), 0);
    let seq = a
        .write(vec![
            (b"b".to_vec(), put(b"1")),
            (b"a".to_vec(), Op::CounterAdd { delta: 1 }),
            (b"b".to_vec(), put(b"2")),
        ])
        .unwrap();
    assert_eq!(seq, 1);
    let keys: Vec<Vec<u8>> = a
        .read_entry(a.origin_id(), 1)
        .unwrap()
        .unwrap()
        .states
        .iter()
        .map(|(k, _)| k.to_vec())
        .collect();
    assert_eq!(keys, vec![b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(values(&a, b"b").unwrap(), vec![b"2".to_vec()]);
    // A wrong type fails the write, which spends no number: the next write takes 2.
    assert!(matches!(
        a.apply(b"b", Op::CounterAdd { delta: 1 }),
        Err(MemoryStoreError::Apply(ApplyError::WrongType { .. }))
    ));
    assert_eq!(a.applied().get(a.origin_id()), 1);
    assert!(a.read_entry(a.origin_id(), 2).unwrap().is_none());
    assert_eq!(a.apply(b"c", put(b"3")).unwrap(), 2);
    assert!(a.apply(b"", put(b"x")).is_err());
    assert!(a.write(vec![]).is_err());
    assert_eq!(a.applied().get(a.origin_id()), 2);
}

#[test]
fn a_read_context_beyond_what_this_replica_has_seen_is_refused() {
    let a = MemoryStore::new(MemberId(1), 0);
    a.apply(b"k", put(b"1")).unwrap();
    // The context claims a write of replica 9 that never arrived here.
    let claim = VersionVector::from_entries([(a.origin_id(), 1), (OriginId(9), 5)]);
    let refused = a.apply(
        b"k",
        Op::Put {
            value: b"2".to_vec(),
            context: Some(claim),
        },
    );
    assert!(
        matches!(refused, Err(MemoryStoreError::ContextAhead)),
        "{refused:?}"
    );
    assert_eq!(
        values(&a, b"k").unwrap(),
        vec![b"1".to_vec()],
        "nothing written"
    );
    assert_eq!(a.applied().get(a.origin_id()), 1, "no number spent");
}

#[test]
fn a_state_transfer_by_summary_converges_and_carries_deletes() {
    let (a, b) = (
        MemoryStore::new(MemberId(1), 0),
        MemoryStore::new(MemberId(2), 0),
    );
    for i in 0..50u32 {
        a.apply(format!("k{i}").as_bytes(), put(b"v1")).unwrap();
    }
    ship(&a, &b);
    let stale = b.export(b"k7").unwrap();
    // While b is away: updates and a delete, and a's log truncated past everything.
    a.apply(b"k1", put(b"v2")).unwrap();
    a.apply(b"k7", Op::Delete).unwrap();
    a.apply(b"new", put(b"x")).unwrap();
    let c = a.compact(&a.applied()).unwrap();
    assert_eq!(c.log_entries_removed, 53);
    assert_eq!(c.tombstones_removed, 1, "stable by fiat here");
    assert!(a.read_entry(a.origin_id(), 51).unwrap().is_none());
    assert_eq!(a.log_floor().get(a.origin_id()), 53);

    // b compares tables with a, asks for the keys a holds in other states, and joins them.
    let cells = Iblt::cells_for(8);
    let (theirs, mine) = (a.summarize(cells).unwrap(), b.summarize(cells).unwrap());
    assert_eq!((theirs.records, mine.records), (50, 50));
    let plan = OfferPlan::of(
        &theirs.table,
        theirs.records,
        &mine.table,
        mine.records,
        b.summary_cells(),
    );
    let OfferPlan::Want { hashes, ours } = plan else {
        panic!("a difference of three keys peels: {plan:?}");
    };
    let keys = a.keys_for_hashes(&hashes).unwrap();
    assert_eq!(keys, vec![b"k1".to_vec(), b"new".to_vec()]);
    let states = a.read_records(&keys).unwrap().records;
    let none = std::collections::BTreeSet::new();
    assert_eq!(
        b.merge_states(&states, &theirs.applied, &none).unwrap(),
        ApplyOutcome::Applied { changed: 2 }
    );
    // k7's key hash is only on b's side (k1's is on both, in two states): a holds nothing of
    // it and applied every write to it.
    let absent = b.keys_for_hashes(&ours).unwrap();
    assert_eq!(absent, vec![b"k7".to_vec()]);
    assert_eq!(b.drop_covered(&absent, &theirs.applied).unwrap(), 1);
    b.adopt(&theirs.applied, &theirs.exceptions).unwrap();
    assert_eq!(b.applied(), a.applied());
    assert_eq!(b.log_floor().get(a.origin_id()), 53);
    assert_eq!(values(&b, b"k1").unwrap(), vec![b"v2".to_vec()]);
    assert!(b.record(b"k7").unwrap().is_bottom(), "b learnt the delete");
    b.compact(&b.applied()).unwrap();
    assert_eq!(all_states(&a), all_states(&b));
    // The stale state sent back does not resurrect the reclaimed delete at a.
    a.merge_states(&[(b"k7".to_vec(), stale)], &VersionVector::new(), &none)
        .unwrap();
    assert!(a.record(b"k7").is_none_or(|r| r.is_bottom()));
}

#[test]
fn a_streamed_transfer_drops_what_the_sender_holds_nothing_of() {
    let (a, b) = (
        MemoryStore::new(MemberId(1), 0),
        MemoryStore::new(MemberId(2), 0),
    );
    for key in [&b"a"[..], b"b", b"c", b"d"] {
        a.apply(key, put(key)).unwrap();
    }
    ship(&a, &b);
    a.apply(b"b", Op::Delete).unwrap();
    a.compact(&a.applied()).unwrap();
    let snapshot = a.applied();
    // A range of two records, then the rest.
    let none = std::collections::BTreeSet::new();
    let range = a.read_range(b"", 10).unwrap();
    let first = range.states.records;
    assert_eq!(first.len(), 1, "at least one record, then the byte bound");
    let next = range.next.unwrap();
    assert_eq!(next, b"c".to_vec());
    let present: std::collections::BTreeSet<Vec<u8>> =
        first.iter().map(|(k, _)| k.clone()).collect();
    b.merge_states(&first, &snapshot, &none).unwrap();
    assert_eq!(
        b.drop_absent(
            b"",
            Some(&next),
            &present,
            &snapshot,
            &[key_hash(b"b")].into()
        )
        .unwrap(),
        0,
        "a key the sender does not vouch for is spared"
    );
    assert_eq!(
        b.drop_absent(b"", Some(&next), &present, &snapshot, &none)
            .unwrap(),
        1,
        "b's \"b\" lies in the range and a holds nothing of it"
    );
    let range = a.read_range(&next, usize::MAX).unwrap();
    assert_eq!(range.next, None);
    let rest = range.states.records;
    let present = rest.iter().map(|(k, _)| k.clone()).collect();
    b.merge_states(&rest, &snapshot, &none).unwrap();
    assert_eq!(
        b.drop_absent(&next, None, &present, &snapshot, &none)
            .unwrap(),
        0
    );
    b.adopt(&snapshot, &Exceptions::default()).unwrap();
    b.compact(&b.applied()).unwrap();
    assert_eq!(all_states(&a), all_states(&b));
}

#[test]
fn compaction_removes_the_log_entries_stable_covers() {
    let (a, b) = (
        MemoryStore::new(MemberId(1), 0),
        MemoryStore::new(MemberId(2), 0),
    );
    for i in 0..5u32 {
        a.apply(format!("k{i}").as_bytes(), put(b"v")).unwrap();
    }
    ship(&a, &b);
    let origin = a.origin_id();
    let stable = VersionVector::from_entries([(origin, 3)]);
    for s in [&a, &b] {
        let c = s.compact(&stable).unwrap();
        assert_eq!(c.log_entries_removed, 3);
        assert_eq!(s.log_floor().get(origin), 3);
        for seq in 1..=3 {
            assert!(s.read_entry(origin, seq).unwrap().is_none());
        }
        for seq in 4..=5 {
            assert!(s.read_entry(origin, seq).unwrap().is_some());
        }
        assert_eq!(s.compact(&stable).unwrap(), Compaction::default());
    }
    // The sequence goes on above the floor.
    assert_eq!(a.apply(b"k9", put(b"v")).unwrap(), 6);
}

#[test]
fn tombstones_are_reclaimed_once_stable_and_no_entry_names_them() {
    let (a, b) = (
        MemoryStore::new(MemberId(1), 0),
        MemoryStore::new(MemberId(2), 0),
    );
    a.apply(b"gone", put(b"v")).unwrap();
    a.apply(b"gone", Op::Delete).unwrap();
    a.apply(b"reset", Op::CounterAdd { delta: 3 }).unwrap();
    a.apply(b"reset", Op::Delete).unwrap();
    ship(&a, &b);
    assert!(b.record(b"gone").unwrap().is_bottom());
    // Not stable yet: pending.
    let c = b.compact(&VersionVector::new()).unwrap();
    assert_eq!((c.tombstones_removed, c.tombstones_pending), (0, 1));
    // A stable vector short of the delete keeps it pending.
    let origin = a.origin_id();
    let c = b
        .compact(&VersionVector::from_entries([(origin, 1)]))
        .unwrap();
    assert_eq!((c.tombstones_removed, c.tombstones_pending), (0, 1));
    let c = b.compact(&b.applied()).unwrap();
    assert_eq!((c.tombstones_removed, c.tombstones_pending), (1, 0));
    assert!(b.record(b"gone").is_none());
    assert!(b.record(b"reset").is_some(), "a counter reset is kept");
    // A stale state of the reclaimed key does not bring it back.
    let stale = {
        let old = MemoryStore::new(MemberId(1), 0);
        old.apply(b"gone", put(b"v")).unwrap();
        old.export(b"gone").unwrap()
    };
    b.apply_remote(b"gone", &stale).unwrap();
    assert!(b.record(b"gone").is_none_or(|r| r.is_bottom()));
    assert_eq!(b.record_count().unwrap(), b.summarize(12).unwrap().records);
}

#[test]
fn the_running_summary_equals_one_built_from_the_records() {
    let (a, b) = (
        MemoryStore::new(MemberId(1), 0),
        MemoryStore::new(MemberId(2), 0),
    );
    a.apply(b"x", put(b"1")).unwrap();
    let _ = a.summarize(12).unwrap(); // built here, then kept up to date
    a.apply(b"y", put(b"2")).unwrap();
    a.apply(b"x", Op::Delete).unwrap();
    b.apply(
        b"z",
        Op::SetAdd {
            elems: vec![b"e".to_vec()],
        },
    )
    .unwrap();
    ship(&b, &a);
    a.compact(&a.applied()).unwrap();
    a.restart();
    let cells = a.summary_cells();
    let kept = a.summarize(cells).unwrap();
    let mut fresh = Iblt::with_cells(cells);
    for (k, v) in all_states(&a) {
        fresh.insert((key_hash(&k), state_hash(&v)));
    }
    assert_eq!(kept.table, fresh);
    assert_eq!(kept.records, 2);
    assert_eq!(a.summarize(96).unwrap().table, fresh.fold(96));
}

#[test]
fn a_restart_stays_writable_and_a_restored_backup_writes_under_a_new_epoch() {
    let a = MemoryStore::new(MemberId(1), 0);
    assert_eq!(a.origin_id(), OriginId(1), "epoch 0: the member id");
    a.apply(b"k", put(b"1")).unwrap();
    a.restart();
    let backup = a.checkpoint();
    a.apply(b"k", put(b"2")).unwrap();
    a.restart();
    assert_eq!(a.apply(b"k", put(b"3")).unwrap(), 3, "writable at once");

    // The backup lacks writes 2 and 3, which peers may hold: it writes under a new epoch.
    let origin = backup.origin_id();
    assert_eq!(origin, MemberId(1).epoch_origin(1));
    assert_eq!(backup.origin_view().epoch, 1);
    assert_eq!(backup.applied().get(OriginId(1)), 1);
    assert_eq!(backup.member_id(), MemberId(1));
    assert_eq!(backup.apply(b"k", put(b"4")).unwrap(), 1);
    // The old origin is one like any other: what the peer holds of it comes back.
    assert_eq!(ship(&a, &backup), 2);
    assert_eq!(backup.applied().get(OriginId(1)), 3);
    assert_eq!(backup.applied().get(origin), 1);
    // Write 4 saw only write 1: concurrent with write 3.
    assert_eq!(
        values(&backup, b"k").unwrap(),
        vec![b"3".to_vec(), b"4".to_vec()]
    );
    // Another copy restored must not reuse epoch 1: the caller picks another.
    a.set_next_epoch(7);
    let again = a.checkpoint();
    assert_eq!(again.origin_id(), MemberId(1).epoch_origin(7));
    assert_eq!(again.origin_view().epoch, 7);
    assert!(format!("{again:?}").len() < 400, "Debug stays short");
}
