//! Version 8's spans: a catch-up of many writes to a few keys carries each key's state once
//! per frame, and the receiver holds each write as an entry naming the span's keys.

use super::pair::*;
use crate::model::Op;
use crate::replication::*;

/// `a` writes `n` times to two hot keys (a set and a register, in turn) before the link
/// comes up at `version`; returns the pair, caught up, and the `Entries` bytes `a` sent.
fn hot_catch_up(version: u8, n: u32) -> (Pair, u64) {
    let mut pair = Pair::new(members_config());
    pair.latency_ms = 5;
    for i in 0..n {
        let (key, op): (&[u8], Op) = match i % 2 {
            0 => (b"set", set_add(format!("e-{}", i % 50).as_bytes())),
            _ => (b"r1", put(format!("v-{i}").as_bytes())),
        };
        pair.a.store.apply(key, op).unwrap();
    }
    pair.connect_at(version);
    pair.drive();
    pair.tick(1);
    let sent = pair.a.replicator.stats().entry_bytes_sent;
    (pair, sent)
}

#[test]
fn a_catch_up_of_hot_keys_carries_each_state_once_per_frame() {
    let (spans, bytes) = hot_catch_up(SPANS_VERSION, 3_000);
    let (linked, bytes_7) = hot_catch_up(LINKED_STATES_VERSION, 3_000);
    for pair in [&spans, &linked] {
        assert_eq!(pair.a.store.applied(), pair.b.store.applied());
        assert_eq!(states(&pair.a.store), states(&pair.b.store));
    }
    let state: usize = [&b"set"[..], b"r1"]
        .iter()
        .map(|k| k.len() + spans.a.store.export(k).unwrap().len())
        .sum();
    assert!(
        bytes < 2 * state as u64 + 64,
        "{bytes} bytes for 3,000 writes to {state} bytes of state (version 7: {bytes_7})"
    );
    assert!(
        bytes_7 > 10 * bytes,
        "version 7 sends {bytes_7}, version 8 {bytes}"
    );
    // Every write the span stood for is held at b as an entry naming the span's keys: b
    // relays any of them with those keys' states.
    let origin = spans.a.store.origin_id();
    for seq in [2, 1_500, 3_000] {
        let entry = spans.b.store.read_entry(origin, seq).unwrap().unwrap();
        let keys: Vec<&[u8]> = entry.states.iter().map(|(k, _)| &k[..]).collect();
        assert_eq!(keys, [&b"r1"[..], b"set"], "entry {seq}");
    }
}

/// Writes to distinct keys fold into pairs at most: a longer span would have the receiver
/// store and relay each write with every key of the span.
#[test]
fn writes_to_distinct_keys_fold_into_pairs_at_most() {
    let mut pair = Pair::new(members_config());
    for i in 0..200u32 {
        pair.a
            .store
            .apply(format!("k{i}").as_bytes(), put(b"v"))
            .unwrap();
    }
    pair.connect_at(SPANS_VERSION);
    pair.drive();
    pair.tick(1);
    assert_eq!(states(&pair.a.store), states(&pair.b.store));
    assert!(pair.a.replicator.stats().spanned_entries_sent <= 100);
    let origin = pair.a.store.origin_id();
    for seq in 1..=200 {
        let entry = pair.b.store.read_entry(origin, seq).unwrap().unwrap();
        assert!(entry.states.len() <= 2, "entry {seq}: {:?}", entry.states);
    }
}

/// A frame's spans stand for at most `FRAME_SPAN_ENTRIES_MAX` writes (the receiver lists
/// each): a longer run goes in several frames, and the catch-up still ends with equal stores.
#[test]
fn a_run_longer_than_a_frames_spans_may_stand_for_goes_in_several_frames() {
    let mut pair = Pair::new(members_config());
    let n = crate::limits::FRAME_SPAN_ENTRIES_MAX as u32 + 5_000;
    for i in 0..n {
        pair.a.store.apply(b"k", put(&i.to_le_bytes())).unwrap();
    }
    pair.connect_at(SPANS_VERSION);
    pair.drive();
    pair.tick(1);
    assert_eq!(pair.a.store.applied(), pair.b.store.applied());
    assert_eq!(states(&pair.a.store), states(&pair.b.store));
    assert!(pair.count(Dir::AtoB, "Entries") >= 2);
    assert!(
        pair.a.replicator.stats().entry_bytes_sent < 2_000,
        "{} bytes",
        pair.a.replicator.stats().entry_bytes_sent
    );
}
