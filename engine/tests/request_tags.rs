//! Client requests answered once (`Engine::write_once`): a write tagged with its client's
//! request is recorded with its dot where it is made, travels with its log entry, and answers
//! any retry of the request in every replica that applied it, across restarts; the tags are
//! pruned by age.

#![allow(clippy::unwrap_used)]

use meridian::{
    Batch, Config, Engine, Once, Op, ReadValue, Replication, RequestTag, REQUEST_TAG_AGE_MS,
};
use meridian_core::model::MemberId;
use meridian_core::replication::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A wall clock the test moves.
struct TestClock(AtomicU64);

impl meridian::WallClock for TestClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

fn engine(dir: &tempfile::TempDir, id: u64, clock: &Arc<TestClock>) -> Replication {
    let config = Config {
        member_id: Some(MemberId(id)),
        clock: clock.clone(),
        ..Config::default()
    };
    Engine::open(dir.path(), config)
        .expect("open")
        .replication()
}

/// Ships entry `seq` of `from`'s own origin to `to`, as replication does.
fn ship(from: &Replication, to: &Replication, seq: u64) -> ApplyOutcome {
    let origin = from.origin_id();
    let shipped = from.read_entry(origin, seq).unwrap().unwrap();
    let states: Vec<RecordState> = shipped
        .states
        .iter()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
    let mut left_out = Vec::new();
    let records = decode_record_states(&states, to.record_bytes_max(), &mut left_out).unwrap();
    let entry = DecodedEntry {
        seq,
        records,
        wire_bytes: 0,
        left_out,
        lost: shipped.lost,
        request: shipped.request,
    };
    to.apply_entries(origin, vec![entry]).unwrap()[0]
}

fn add(n: i64) -> Batch {
    Batch::new().op(b"views".to_vec(), Op::CounterAdd { delta: n })
}

fn views(e: &Replication) -> i64 {
    match e.read(b"views").unwrap().map(|r| r.values[0].clone()) {
        Some(ReadValue::Counter(n)) => n,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_request_is_answered_once_in_every_replica_that_applied_it_and_after_a_restart() {
    let clock = Arc::new(TestClock(AtomicU64::new(1_000_000)));
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ea, eb) = (engine(&da, 1, &clock), engine(&db, 2, &clock));
    let tag = RequestTag::new("app-1", [7; 16]).unwrap();
    let Once::Applied(first) = ea.write_once(&tag, add(5)).unwrap() else {
        panic!("the first write applies");
    };
    assert_eq!(
        ea.write_once(&tag, add(5)).unwrap(),
        Once::Earlier(first.clone())
    );
    // Another client's request with the same id is its own.
    let theirs = RequestTag::new("app-2", [7; 16]).unwrap();
    assert!(matches!(
        ea.write_once(&theirs, add(1)).unwrap(),
        Once::Applied(_)
    ));
    assert_eq!(views(&ea), 6);

    // Shipped from the log (no cache) and from the cache, the tag travels with the entry.
    assert!(matches!(ship(&ea, &eb, 1), ApplyOutcome::Applied { .. }));
    assert_eq!(eb.request_outcome(&tag).unwrap(), Some(first.clone()));
    assert_eq!(
        eb.write_once(&tag, add(5)).unwrap(),
        Once::Earlier(first.clone())
    );
    ea.enable_cache();
    let third = RequestTag::new("app-1", [8; 16]).unwrap();
    let Once::Applied(cached) = ea.write_once(&third, add(1)).unwrap() else {
        panic!("applies");
    };
    assert!(matches!(ship(&ea, &eb, 2), ApplyOutcome::Applied { .. }));
    assert!(matches!(ship(&ea, &eb, 3), ApplyOutcome::Applied { .. }));
    assert_eq!(eb.request_outcome(&third).unwrap(), Some(cached));
    assert_eq!(views(&eb), 7, "nothing applied twice");

    // A relay of the applied entry carries the tag on.
    let dc = tempfile::tempdir().unwrap();
    let ec = engine(&dc, 3, &clock);
    let relayed = eb.read_entry(ea.origin_id(), 1).unwrap().unwrap();
    assert_eq!(relayed.request, Some(tag.clone()));
    drop(ec);

    // Kept across a restart.
    drop(ea);
    let ea = engine(&da, 1, &clock);
    assert_eq!(ea.request_tags(), 3);
    assert_eq!(
        ea.write_once(&tag, add(5)).unwrap(),
        Once::Earlier(first.clone())
    );
    assert_eq!(views(&ea), 7);

    // Pruned once older than the age bound (a retry then applies again).
    clock.0.fetch_add(REQUEST_TAG_AGE_MS + 1, Ordering::SeqCst);
    assert_eq!(
        ea.prune_requests_at(clock.0.load(Ordering::SeqCst))
            .unwrap(),
        3
    );
    assert_eq!(ea.request_tags(), 0);
    assert_eq!(ea.request_outcome(&tag).unwrap(), None);
    drop(ea);
    let ea = engine(&da, 1, &clock);
    assert_eq!(ea.request_tags(), 0, "the count read at open");
    assert!(RequestTag::new(&"x".repeat(129), [1; 16]).is_none());
    assert!(RequestTag::new("x", [0; 16]).is_none());
}
