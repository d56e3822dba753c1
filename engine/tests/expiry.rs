//! Expiry on real engines: a value written with a time to live stops being read once the
//! HLC passes its time, in every region alike (clocks skewed within the bound included); the
//! conflict rules of `model::expiry` as a user meets them; the sweep that reclaims an expired
//! value for good.

#![allow(clippy::unwrap_used)]

mod common;

use common::Net;
use meridian::{Batch, Config, Engine, ReadValue, WallClock};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A wall clock the test moves.
#[derive(Debug)]
struct ManualClock(AtomicU64);

impl ManualClock {
    fn at(ms: u64) -> Arc<ManualClock> {
        Arc::new(ManualClock(AtomicU64::new(ms)))
    }
    fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl WallClock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

const T0: u64 = 1_800_000_000_000;

fn engine_at(clock: &Arc<ManualClock>) -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        clock: clock.clone(),
        ..Config::default()
    };
    let engine = Engine::open(dir.path(), config).unwrap();
    (dir, engine)
}

fn lww(e: &Engine, key: &str) -> Option<String> {
    e.get_lww(key.as_bytes())
        .unwrap()
        .map(|v| String::from_utf8(v.value).unwrap())
}

fn set(e: &Engine, key: &str) -> Vec<String> {
    e.get_set(key.as_bytes())
        .unwrap()
        .unwrap_or_default()
        .into_iter()
        .map(|v| String::from_utf8(v).unwrap())
        .collect()
}

#[test]
fn a_value_written_with_a_ttl_is_read_until_its_time_and_never_after() {
    let clock = ManualClock::at(T0);
    let (_dir, e) = engine_at(&clock);
    let ttl = Duration::from_secs(10);
    e.write(Batch::new().lww_set("s", "v").ttl("s", ttl))
        .unwrap();
    e.lww_set(b"other", b"kept").unwrap();
    let at = e.expires_at(b"s").unwrap().unwrap();
    let at_ms = at
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert_eq!(at_ms, T0 + 10_000);
    clock.set(T0 + 9_999);
    assert_eq!(lww(&e, "s").as_deref(), Some("v"));
    clock.set(T0 + 10_000);
    assert_eq!(lww(&e, "s"), None, "read at its expiry time");
    assert!(e.read(b"s").unwrap().is_none());
    assert_eq!(e.expires_at(b"s").unwrap(), None);
    let keys: Vec<Vec<u8>> = e
        .scan_prefix(b"", 10)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        keys,
        vec![b"other".to_vec()],
        "a scan skips the expired key"
    );
    assert_eq!(lww(&e, "other").as_deref(), Some("kept"));
    // A clock that goes back does not bring it back: the engine's HLC has passed the time.
    e.lww_set(b"tick", b"x").unwrap();
    clock.set(T0 + 5_000);
    assert_eq!(lww(&e, "s"), None, "read after the wall clock went back");
}

#[test]
fn writes_without_a_ttl_keep_it_persist_removes_it_and_expire_on_an_absent_key_does_nothing() {
    let clock = ManualClock::at(T0);
    let (_dir, e) = engine_at(&clock);
    e.write(
        Batch::new()
            .set_add("cart", "a")
            .ttl("cart", Duration::from_secs(60)),
    )
    .unwrap();
    clock.set(T0 + 30_000);
    e.set_add(b"cart", &[b"b"]).unwrap();
    clock.set(T0 + 60_000);
    assert!(
        set(&e, "cart").is_empty(),
        "a write without a TTL expires with the key"
    );

    clock.set(T0 + 100_000);
    e.write(
        Batch::new()
            .set_add("kept", "a")
            .ttl("kept", Duration::from_secs(60)),
    )
    .unwrap();
    e.persist(b"kept").unwrap();
    assert_eq!(e.expires_at(b"kept").unwrap(), None);
    clock.set(T0 + 1_000_000);
    assert_eq!(set(&e, "kept"), vec!["a"], "persisted");

    e.expire(b"absent", Duration::from_secs(1)).unwrap();
    e.lww_set(b"absent", b"now present").unwrap();
    assert_eq!(e.expires_at(b"absent").unwrap(), None);
    clock.set(T0 + 2_000_000);
    assert_eq!(lww(&e, "absent").as_deref(), Some("now present"));
}

#[test]
fn a_write_after_expiry_starts_afresh_and_a_counter_counts_from_zero() {
    let clock = ManualClock::at(T0);
    let (_dir, e) = engine_at(&clock);
    let minute = Duration::from_secs(60);
    e.write(Batch::new().set_add("s", "old").ttl("s", minute))
        .unwrap();
    e.write(Batch::new().counter_add("rate", 5).ttl("rate", minute))
        .unwrap();
    clock.set(T0 + 61_000);
    e.set_add(b"s", &[b"new"]).unwrap();
    e.counter_add(b"rate", 1).unwrap();
    assert_eq!(
        set(&e, "s"),
        vec!["new"],
        "nothing of the expired set comes back"
    );
    assert_eq!(e.get_counter(b"rate").unwrap(), Some(1));
    assert_eq!(
        e.expires_at(b"s").unwrap(),
        None,
        "the new value has no expiry"
    );
    // A TTL of zero expires at once, as a delete would.
    e.expire(b"s", Duration::ZERO).unwrap();
    assert!(set(&e, "s").is_empty());
}

#[test]
fn every_region_stops_reading_at_the_same_hlc_time_with_clocks_skewed_within_the_bound() {
    // Region clocks 0, +400 ms and -300 ms from true time.
    let skews: [i64; 3] = [0, 400, -300];
    let clocks: Vec<Arc<ManualClock>> = (0..3).map(|_| ManualClock::at(T0)).collect();
    let set_true_time = |t: u64| {
        for (c, s) in clocks.iter().zip(skews) {
            c.set(t.saturating_add_signed(s));
        }
    };
    set_true_time(T0);
    let mut net = Net::tuned(3, |i, c: &mut Config| c.clock = clocks[i].clone());
    net.run(200);
    net.engine(0)
        .write(
            Batch::new()
                .lww_set("session", "alice")
                .ttl("session", Duration::from_secs(30)),
        )
        .unwrap();
    net.run(200);
    let at = T0 + 30_000; // region 0's clock is true time
    for i in 0..3 {
        assert_eq!(
            lww(net.engine(i), "session").as_deref(),
            Some("alice"),
            "region {i}"
        );
    }
    // True time just before expiry minus the largest skew: every region still reads it.
    set_true_time(at - 401);
    for i in 0..3 {
        assert!(
            lww(net.engine(i), "session").is_some(),
            "region {i} before expiry"
        );
    }
    // Each region stops reading once its own clock passes the time: the one ahead first.
    set_true_time(at - 400);
    assert!(lww(net.engine(1), "session").is_none(), "the region ahead");
    assert!(lww(net.engine(0), "session").is_some());
    // Past the expiry plus the skew bound of these clocks, no region reads it.
    set_true_time(at + 300);
    for i in 0..3 {
        assert!(
            lww(net.engine(i), "session").is_none(),
            "region {i} after expiry + skew"
        );
    }
}

#[test]
fn concurrent_writes_and_expiries_follow_the_conflict_rules_in_every_region() {
    let clocks: Vec<Arc<ManualClock>> = (0..2).map(|_| ManualClock::at(T0)).collect();
    let mut net = Net::tuned(2, |i, c: &mut Config| c.clock = clocks[i].clone());
    net.run(200);
    net.engine(0).set_add(b"k", &[b"a"]).unwrap();
    net.run(200);
    net.cut.insert((0, 1));
    // Region 0 expires the key in 10 s; region 1, not having seen it, adds b.
    net.engine(0).expire(b"k", Duration::from_secs(10)).unwrap();
    net.engine(1).set_add(b"k", &[b"b"]).unwrap();
    // Two concurrent TTLs on another key: the earlier wins.
    net.engine(0)
        .write(
            Batch::new()
                .lww_set("t", "v")
                .ttl("t", Duration::from_secs(20)),
        )
        .unwrap();
    net.run(100);
    net.cut.clear();
    net.run(5_000);
    net.cut.insert((0, 1));
    net.engine(1).expire(b"t", Duration::from_secs(5)).unwrap();
    net.engine(0).expire(b"t", Duration::from_secs(50)).unwrap();
    net.run(100);
    net.cut.clear();
    net.run(5_000);
    assert_eq!(net.engine(0).applied(), net.engine(1).applied());
    for c in &clocks {
        c.set(T0 + 11_000);
    }
    for i in 0..2 {
        assert_eq!(
            set(net.engine(i), "k"),
            vec!["b"],
            "region {i}: the concurrent add survives"
        );
        assert_eq!(
            lww(net.engine(i), "t"),
            None,
            "region {i}: the earlier of two TTLs wins"
        );
    }
}

#[test]
fn the_sweep_reclaims_an_expired_value_for_good_once_the_skew_bound_passed() {
    let clocks: Vec<Arc<ManualClock>> = (0..2).map(|_| ManualClock::at(T0)).collect();
    let bound = 1_000;
    let mut net = Net::tuned(2, |i, c: &mut Config| {
        c.clock = clocks[i].clone();
        c.clock_skew_ms_max = bound;
    });
    net.run(200);
    net.engine(0)
        .write(
            Batch::new()
                .set_add("k", "a")
                .ttl("k", Duration::from_secs(5)),
        )
        .unwrap();
    net.run(200);
    let applied_before = net.engine(1).applied();
    for c in &clocks {
        c.set(T0 + 5_000 + bound);
    }
    net.run(3_000); // compactions run
    let applied_after = net.engine(1).applied();
    assert_ne!(
        applied_before, applied_after,
        "the reclaim is a replicated write"
    );
    // Region 1 now holds the reclaim: a persist it makes cannot bring the value back.
    net.engine(1).persist(b"k").unwrap();
    for i in 0..2 {
        let e = net.engine(i);
        assert!(set(e, "k").is_empty(), "region {i}");
        let record_clock_back = e.read(b"k").unwrap();
        assert!(record_clock_back.is_none());
    }
    // Even a reader whose wall clock went back does not see it: it is removed, not hidden.
    for c in &clocks {
        c.set(T0);
    }
    for i in 0..2 {
        assert!(set(net.engine(i), "k").is_empty(), "region {i}");
        assert!(!matches!(
            net.engine(i).read(b"k").unwrap().map(|r| r.values),
            Some(v) if v.iter().any(|x| matches!(x, ReadValue::Set(_)))
        ));
    }
}

#[test]
fn expiries_are_refused_while_a_member_was_last_seen_on_an_older_release_across_restarts() {
    use meridian_core::replication::ReplicaStore;
    let clock = ManualClock::at(T0);
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let config = Config {
            clock: clock.clone(),
            ..Config::default()
        };
        Engine::open(dir.path(), config).unwrap().replication()
    };
    let e = open();
    e.lww_set(b"k", b"v").unwrap();
    let old = meridian::MemberId(7);
    e.note_member_version(old, meridian_core::replication::EXPIRY_VERSION - 1);
    let refused = e.expire(b"k", Duration::from_secs(1)).unwrap_err();
    assert!(
        refused.to_string().contains("does not read expiries"),
        "{refused}"
    );
    assert!(e
        .write(
            Batch::new()
                .lww_set("k", "w")
                .ttl("k", Duration::from_secs(1))
        )
        .is_err());
    e.lww_set(b"k", b"plain writes go on").unwrap();
    drop(e);
    let e = open();
    assert!(
        e.expire(b"k", Duration::from_secs(1)).is_err(),
        "still refused after a restart"
    );
    e.note_member_version(
        meridian::MemberId(8),
        meridian_core::replication::EXPIRY_VERSION,
    );
    assert!(
        e.expire(b"k", Duration::from_secs(1)).is_err(),
        "another member upgraded is not it"
    );
    e.note_member_version(old, meridian_core::replication::EXPIRY_VERSION);
    e.expire(b"k", Duration::from_secs(1)).unwrap();
    drop(e);
    let e = open();
    e.persist(b"k").unwrap();
}
