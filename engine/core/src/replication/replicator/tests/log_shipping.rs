//! Log shipping: entries out under the in-flight window, and in, applied in order with holes
//! answered by a `Nack`.

use super::pair::*;
use crate::model::MemberId;
use crate::replication::*;

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

/// The window: the configured bytes until a round trip is measured (or when it is none), more
/// per millisecond of it, never beyond the cap.
#[test]
fn the_in_flight_window_grows_with_the_round_trip_up_to_the_cap() {
    let config = ReplicationConfig::default();
    let (base, per_ms) = (config.inflight_bytes_max, config.inflight_bytes_per_rtt_ms);
    let r = Replicator::new(MemberId(1), config);
    assert_eq!(r.inflight_window(None), base, "round trip not measured yet");
    assert_eq!(r.inflight_window(Some(0)), base);
    assert_eq!(r.inflight_window(Some(20)), base + 20 * per_ms);
    assert_eq!(r.inflight_window(Some(u64::MAX)), INFLIGHT_BYTES_CAP);
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
    let r = Replicator::new(MemberId(1), config.clone());
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

/// A small write's entries are acknowledged when the receiving driver goes idle, not at the
/// next tick, and at most once per interval on a link (a busy link is not doubled in frames).
#[test]
fn idle_drivers_acknowledge_at_once_and_at_most_once_per_interval() {
    let mut pair = Pair::new(ReplicationConfig::default());
    pair.connect();
    pair.drive();
    let _ = (pair.a.take_frames(), pair.b.take_frames());
    let now = pair.now + 1_000;
    pair.a.store.apply(b"k", put(b"v")).unwrap();
    pair.a.replicator.local_write(&pair.a.store, now).unwrap();
    let entries = pair.a.take_frames();
    assert_eq!(entries.len(), 1, "one entries frame");
    pair.b.receive(&entries[0], now);
    let acks = |frames: &[Vec<u8>]| {
        frames
            .iter()
            .filter(|f| matches!(Frame::decode(f), Ok(Frame::Ack { .. })))
            .count()
    };
    assert_eq!(
        acks(&pair.b.take_frames()),
        0,
        "a small entry waits for its Ack"
    );
    pair.b.replicator.acknowledge_idle(&pair.b.store, now);
    assert_eq!(acks(&pair.b.take_frames()), 1, "acknowledged when idle");
    // Another entry within the interval: not acknowledged until the interval has passed.
    pair.a.store.apply(b"k2", put(b"w")).unwrap();
    pair.a.replicator.local_write(&pair.a.store, now).unwrap();
    for frame in pair.a.take_frames() {
        pair.b.receive(&frame, now + 1);
    }
    pair.b.replicator.acknowledge_idle(&pair.b.store, now + 1);
    assert_eq!(acks(&pair.b.take_frames()), 0, "once per interval");
    pair.b.replicator.acknowledge_idle(&pair.b.store, now + 2);
    assert_eq!(acks(&pair.b.take_frames()), 1);
}
