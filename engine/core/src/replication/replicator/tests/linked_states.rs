//! Version 7's linked states: a write to a large collection crosses as a patch against the
//! state the link carried last; an end that lost that state asks again and gets it whole.

use super::pair::*;
use crate::model::Op;
use crate::replication::*;

/// A 2,000-element set at `a`, shipped to `b` once; then single adds, each alone in a frame.
fn large_set(version: u8) -> Pair {
    let mut pair = Pair::new(ReplicationConfig::default());
    pair.connect_at(version);
    pair.drive();
    let elems = (0..2_000u32)
        .map(|i| format!("element-{i:06}").into_bytes())
        .collect();
    pair.a.store.apply(b"set", Op::SetAdd { elems }).unwrap();
    pair.tick(1);
    assert_eq!(states(&pair.a.store), states(&pair.b.store));
    pair
}

/// Adds `n` elements at `a`, one per tick; the `Entries` bytes `a` sent meanwhile.
fn add(pair: &mut Pair, from: u32, n: u32) -> u64 {
    let before = pair.a.replicator.stats().entry_bytes_sent;
    for i in from..from + n {
        pair.a
            .store
            .apply(b"set", set_add(format!("new-{i:04}").as_bytes()))
            .unwrap();
        pair.tick(1);
    }
    pair.a.replicator.stats().entry_bytes_sent - before
}

#[test]
fn an_add_to_a_large_set_crosses_as_about_what_it_changed() {
    let mut linked = large_set(LINKED_STATES_VERSION);
    let whole = linked.a.store.export(b"set").unwrap().len();
    let bytes = add(&mut linked, 0, 20);
    let mut shared = large_set(SHARED_STATES_VERSION);
    let before_7 = add(&mut shared, 0, 20);
    assert!(whole > 20_000, "the set is {whole} bytes");
    assert!(
        before_7 > 20 * whole as u64,
        "version 6 ships the set each time"
    );
    assert!(
        bytes < 20 * 120,
        "{bytes} bytes for 20 adds to a {whole}-byte set"
    );
    assert_eq!(linked.a.replicator.stats().linked_states_sent, 20);
    for pair in [&linked, &shared] {
        assert_eq!(states(&pair.a.store), states(&pair.b.store));
        assert_eq!(pair.a.store.applied(), pair.b.store.applied());
        assert_eq!(set_members(&pair.b.store, b"set").len(), 2_020);
    }
}

/// A frame lost on the way: the next patch is based on a state `b` never got. `b` applies
/// nothing of that entry and asks for it again; `a` resends whole, and patches again after.
#[test]
fn a_patch_whose_base_did_not_arrive_is_asked_again_and_comes_whole() {
    let mut pair = large_set(LINKED_STATES_VERSION);
    add(&mut pair, 0, 2);
    let mut lost = 0;
    pair.drop_rule = Some(Box::new(move |dir, kind| {
        let lose = dir == Dir::AtoB && kind == "Entries" && lost == 0;
        lost += usize::from(lose);
        lose
    }));
    add(&mut pair, 2, 1);
    assert_ne!(
        states(&pair.a.store),
        states(&pair.b.store),
        "lost on the way"
    );
    let bytes = add(&mut pair, 3, 1);
    assert!(
        pair.b.replicator.stats().unresolved >= 1,
        "the patch's base was the lost state"
    );
    let whole = pair.a.store.export(b"set").unwrap().len() as u64;
    assert!(bytes > whole, "resent whole ({bytes} bytes)");
    assert_eq!(states(&pair.a.store), states(&pair.b.store));
    assert_eq!(pair.a.store.applied(), pair.b.store.applied());
    let sent = pair.a.replicator.stats().linked_states_sent;
    let bytes = add(&mut pair, 4, 5);
    assert_eq!(pair.a.replicator.stats().linked_states_sent, sent + 5);
    assert!(bytes < 5 * 120, "patches again ({bytes} bytes)");
    assert_eq!(states(&pair.a.store), states(&pair.b.store));
    assert_eq!(set_members(&pair.b.store, b"set").len(), 2_009);
}
