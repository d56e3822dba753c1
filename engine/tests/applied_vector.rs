//! Invariant I1: a replica's applied vector never covers a write its records do not reflect,
//! but for what it declared lost. Catch-up, state transfer and anti-entropy all trust the
//! vector, so a hole in one region's log, or a record left out of what it ships, must not
//! spread. Three regions of real engines on RocksDB, replicators linked in memory.

#![allow(clippy::unwrap_used)]

mod common;

use common::Net;
use meridian::store::{LogEntry, Store};
use meridian::{Engine, OriginId};

/// The register values of `key` at region `i`.
fn values(net: &Net, i: usize, key: &[u8]) -> Option<Vec<Vec<u8>>> {
    net.engine(i).get(key).unwrap().map(|s| s.values)
}

fn assert_converged(net: &Net) {
    let applied: Vec<_> = (0..net.regions.len())
        .map(|i| net.engine(i).applied())
        .collect();
    assert!(applied.windows(2).all(|w| w[0] == w[1]), "{applied:?}");
}

/// Region 0 comes back from a state in which write `n` (k = v1) is missing from its log and
/// its record (k as before `n`, entry `n` an empty filler) while `n + 1` is there: a power
/// loss that kept a later commit of a concurrent writer, or a copy taken between a number and
/// its commit by a version that numbered writes before they committed. Returns the origin
/// and `n`.
fn restore_with_a_hole(net: &mut Net, before: &[u8], n: u64) -> OriginId {
    let origin = net.engine(0).origin_id();
    net.crash(0);
    {
        let store = Store::open(&net.regions[0].dir).unwrap();
        store.put_raw_record(b"k", before).unwrap();
        store
            .put_raw_log(origin, n, &LogEntry::default().encode())
            .unwrap();
    }
    // The crash was a power loss: the next run is in another boot.
    net.boot = "boot-2".into();
    origin
}

#[test]
fn a_hole_in_a_restored_log_is_refilled_by_the_peers() {
    let mut net = Net::new(3);
    net.replication.compact_every_ms = u64::MAX; // the entries stay in every log
    for i in 0..3 {
        net.stop(i);
        net.start(i);
    }
    net.run(200);
    net.engine(0).put(b"k", b"v0").unwrap();
    let before = net.engine(0).replication().export(b"k").unwrap().unwrap();
    net.engine(0).put(b"k", b"v1").unwrap();
    let n = net.engine(0).replication().last_seq();
    net.engine(0).put(b"j", b"x").unwrap();
    net.run(500);
    net.assert_everywhere("k", "v1");

    let origin = restore_with_a_hole(&mut net, &before, n);
    net.start(0);
    assert_ne!(net.engine(0).origin_id(), origin, "a new epoch");
    assert_eq!(
        net.engine(0).applied().get(origin),
        n - 1,
        "the old origin counts up to the hole only"
    );
    net.run(40_000);
    assert_eq!(values(&net, 0, b"k"), Some(vec![b"v1".to_vec()]));
    net.assert_everywhere("k", "v1");
    net.assert_everywhere("j", "x");
    assert_converged(&net);
    assert!(net.engine(0).declared_lost().lost.is_empty());
}

/// A number nobody holds: declared lost once the bound passed with a member out of reach (at
/// once when every member is linked and none holds it), and what lies beyond it ships.
#[test]
fn a_hole_no_member_holds_is_declared_lost_and_what_lies_beyond_ships() {
    let mut net = Net::new(3);
    net.replication.compact_every_ms = u64::MAX;
    net.replication.missing_wait_ms = 5_000;
    for i in 0..3 {
        net.stop(i);
        net.start(i);
    }
    net.run(200);
    net.engine(0).put(b"k", b"v0").unwrap();
    net.run(500);
    let before = net.engine(0).replication().export(b"k").unwrap().unwrap();
    // Written while region 0 is cut off: nobody else ever holds them.
    net.cut.insert((0, 1));
    net.cut.insert((0, 2));
    net.engine(0).put(b"k", b"v1").unwrap();
    let n = net.engine(0).replication().last_seq();
    net.engine(0).put(b"j", b"x").unwrap();
    let origin = restore_with_a_hole(&mut net, &before, n);
    net.cut.clear();
    // Region 2 is out of reach: it may hold the write, so region 0 waits for the bound.
    net.stop(2);
    net.start(0);
    net.run(3_000);
    assert_eq!(
        net.engine(0).applied().get(origin),
        n - 1,
        "waits for a member that may hold it"
    );
    net.run(10_000);
    assert_eq!(net.engine(0).applied().get(origin), n + 1);
    net.start(2);
    net.run(30_000);
    assert_eq!(
        net.engine(0).declared_lost().lost,
        vec![(origin, n)],
        "declared lost, by name"
    );
    net.assert_everywhere("j", "x");
    net.assert_everywhere("k", "v0");
    assert_converged(&net);
    for i in 1..3 {
        assert_eq!(
            net.engine(i).declared_lost().lost,
            vec![(origin, n)],
            "region {i} learnt of the loss with the entry"
        );
    }
}

#[test]
fn a_record_left_out_by_its_sender_comes_from_a_region_that_holds_it() {
    let mut net = Net::new(3);
    net.run(200);
    net.stop(2);
    net.engine(0).put(b"k", b"v").unwrap();
    net.engine(0).put(b"other", b"w").unwrap();
    net.run(500);
    assert_eq!(values(&net, 1, b"k"), Some(vec![b"v".to_vec()]));
    // Region 0's stored copy of k goes bad; it restarts (nothing cached) and region 2 comes
    // back and catches up from it.
    net.engine(0)
        .store()
        .put_raw_record(b"k", b"\x01not a record")
        .unwrap();
    net.stop(0);
    net.start(0);
    net.start(2);
    net.run(40_000);
    assert_eq!(values(&net, 2, b"k"), Some(vec![b"v".to_vec()]));
    assert_eq!(values(&net, 2, b"other"), Some(vec![b"w".to_vec()]));
    assert!(net.engine(2).declared_lost().uncertain.is_empty());
    assert!(net.engine(0).faults().corrupt_records >= 1);
    assert!(net.closed.is_empty(), "no link closed: {:?}", net.closed);
}

/// A record no reachable region holds whole: the receiver waits while a member that may hold
/// it is out of reach, up to the bound; once every member is linked and each holder sent it
/// partial, at once.
#[test]
fn a_record_no_region_holds_whole_is_declared_lost_and_replication_goes_on() {
    let mut net = Net::new(3);
    net.replication.missing_wait_ms = 5_000;
    for i in 0..3 {
        net.stop(i);
        net.start(i);
    }
    net.run(200);
    net.stop(1);
    net.stop(2);
    for k in ["k1", "k2", "k3"] {
        net.engine(0).put(k.as_bytes(), b"v").unwrap();
    }
    net.engine(0)
        .store()
        .put_raw_record(b"k2", b"\x01not a record")
        .unwrap();
    net.stop(0);
    net.start(0);
    net.start(1);
    net.run(2_000);
    assert!(
        net.engine(1).get(b"k3").unwrap().is_none(),
        "held at the partial entry while region 2 is out of reach"
    );
    net.run(10_000);
    for k in ["k1", "k3"] {
        assert!(net.engine(1).get(k.as_bytes()).unwrap().is_some(), "{k}");
    }
    assert_eq!(net.engine(1).get(b"k2").unwrap(), None, "never shipped");
    let k2 = meridian_core::model::digest::key_hash(b"k2");
    assert_eq!(net.engine(1).declared_lost().uncertain, vec![k2]);
    // Region 2 comes back: both holders send the entry partial, so it applies without waiting
    // for the bound.
    net.start(2);
    // (After the relay delay: region 1 relays once region 2 lags on the origin for it.)
    net.run(3_000);
    assert!(net.engine(2).get(b"k3").unwrap().is_some());
    assert_eq!(net.engine(2).declared_lost().uncertain, vec![k2]);
    assert_converged(&net);
    net.engine(0).put(b"k4", b"v").unwrap();
    net.run(1_000);
    net.assert_everywhere("k4", "v");
}

/// Writers on many threads while checkpoints are taken: every checkpoint holds a contiguous
/// run of this replica's numbers (writes are numbered where they commit).
#[test]
fn concurrent_writers_leave_no_hole_in_any_checkpoint() {
    let scratch = tempfile::tempdir().unwrap();
    let engine = Engine::open(scratch.path().join("db"), meridian::Config::default())
        .unwrap()
        .replication();
    let origin = engine.origin_id();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let copies: Vec<std::path::PathBuf> = std::thread::scope(|s| {
        for t in 0..6 {
            let (engine, stop) = (&engine, &stop);
            s.spawn(move || {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let key = format!("t{t}-{}", i % 50);
                    engine.put(key.as_bytes(), &[7; 200]).unwrap();
                    i += 1;
                }
            });
        }
        let copies = (0..20)
            .map(|c| {
                std::thread::sleep(std::time::Duration::from_millis(5));
                let dir = scratch.path().join(format!("copy{c}"));
                engine.checkpoint(&dir).unwrap();
                dir
            })
            .collect();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        copies
    });
    for dir in copies {
        let store = Store::open(&dir).unwrap();
        let last = store.last_log_seq(origin).unwrap();
        let seqs = store.log_seqs(origin, 1, last).unwrap();
        assert_eq!(
            seqs.len() as u64,
            last,
            "{}: a hole below {last}",
            dir.display()
        );
    }
}
