//! Property tests of the core's values (`meridian_core::model`): every join is commutative,
//! associative and idempotent; encoding round-trips and is canonical; checking an encoded
//! record agrees with decoding it; a read-then-write never loses a concurrent sibling; the
//! receiver's shortcut for a key it does not hold gives the same record as the full join.
//! Expiries (`model::expiry`) are among the operations, so each law holds with them; and
//! their own: a local write is an inflation of the state it applied to, what an expiry hid
//! when a write applied never comes back in any state that includes the write, and regions
//! that exchanged everything agree on what a reader sees at any time.

#![allow(clippy::unwrap_used)]

use meridian_core::model::codec::{check_record, decode_record, encode_record, CodecError};
use meridian_core::model::{
    Dot, Expiry, Hlc, Kind, Op, OriginId, Record, Stamp, StateFacts, Value, VersionVector,
};
use proptest::prelude::*;
use std::collections::BTreeSet;

const REPLICAS: usize = 3;

fn rid(i: usize) -> OriginId {
    // Large ids exercise the compact dot encoding.
    OriginId(u64::MAX - 7 * i as u64)
}

#[derive(Clone, Debug)]
enum TestOp {
    Put(u8, bool),
    Lww(u8),
    Add(i8),
    SetAdd(u8),
    SetRemove(u8),
    MapPut(u8, u8),
    MapAdd(u8, i8),
    MapSetAdd(u8, u8),
    MapRemove(u8),
    NestedPut(u8, u8, u8),
    Delete,
    /// A time to live in milliseconds (markers below are about 15, 30 and 45 ms apart).
    Expire(u8),
    Persist,
}

#[derive(Clone, Debug)]
enum Action {
    Op(usize, TestOp),
    Merge { from: usize, to: usize },
}

fn test_op() -> impl Strategy<Value = TestOp> {
    prop_oneof![
        (0u8..4, any::<bool>()).prop_map(|(v, c)| TestOp::Put(v, c)),
        (0u8..4).prop_map(TestOp::Lww),
        (-3i8..4).prop_map(TestOp::Add),
        (0u8..4).prop_map(TestOp::SetAdd),
        (0u8..4).prop_map(TestOp::SetRemove),
        (0u8..3, 0u8..4).prop_map(|(f, v)| TestOp::MapPut(f, v)),
        (0u8..3, -3i8..4).prop_map(|(f, v)| TestOp::MapAdd(f, v)),
        (0u8..3, 0u8..4).prop_map(|(f, v)| TestOp::MapSetAdd(f, v)),
        (0u8..3).prop_map(TestOp::MapRemove),
        (0u8..2, 0u8..2, 0u8..4).prop_map(|(f, g, v)| TestOp::NestedPut(f, g, v)),
        Just(TestOp::Delete),
        (0u8..40).prop_map(TestOp::Expire),
        Just(TestOp::Persist),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => (0..REPLICAS, test_op()).prop_map(|(r, o)| Action::Op(r, o)),
        1 => (0..REPLICAS, 0..REPLICAS).prop_map(|(from, to)| Action::Merge { from, to }),
    ]
}

fn to_op(op: &TestOp, record: &Record) -> Op {
    let context = || match record.get(Kind::Register) {
        Some(Value::Register(r)) => Some(r.ctx.clone()),
        _ => None,
    };
    match op {
        TestOp::Put(v, with_ctx) => Op::Put {
            value: vec![*v],
            context: if *with_ctx { context() } else { None },
        },
        TestOp::Lww(v) => Op::LwwSet { value: vec![*v] },
        TestOp::Add(d) => Op::CounterAdd {
            delta: i64::from(*d),
        },
        TestOp::SetAdd(e) => Op::SetAdd {
            elems: vec![vec![*e]],
        },
        TestOp::SetRemove(e) => Op::SetRemove {
            elems: vec![vec![*e]],
        },
        TestOp::MapPut(f, v) => Op::MapUpdate {
            field: vec![*f],
            op: Box::new(Op::Put {
                value: vec![*v],
                context: None,
            }),
        },
        TestOp::MapAdd(f, d) => Op::MapUpdate {
            field: vec![*f],
            op: Box::new(Op::CounterAdd {
                delta: i64::from(*d),
            }),
        },
        TestOp::MapSetAdd(f, e) => Op::MapUpdate {
            field: vec![*f],
            op: Box::new(Op::SetAdd {
                elems: vec![vec![*e]],
            }),
        },
        TestOp::MapRemove(f) => Op::MapRemove { field: vec![*f] },
        TestOp::NestedPut(f, g, v) => Op::MapUpdate {
            field: vec![*f],
            op: Box::new(Op::MapUpdate {
                field: vec![*g],
                op: Box::new(Op::LwwSet { value: vec![*v] }),
            }),
        },
        TestOp::Delete => Op::Delete,
        TestOp::Expire(ms) => Op::Expire {
            expiry: Expiry::After(u64::from(*ms)),
        },
        TestOp::Persist => Op::Expire {
            expiry: Expiry::Never,
        },
    }
}

/// Every dot present in a record's values.
fn value_dots(r: &Record) -> BTreeSet<Dot> {
    let mut out = BTreeSet::new();
    for v in r.values.values() {
        v.for_each_dot(&mut |d| {
            out.insert(d);
        });
    }
    out
}

/// Runs a history and returns each replica's final record.
fn run(actions: &[Action]) -> Vec<Record> {
    run_noting(actions).0
}

/// `run`, with the dots an expiry hid from a local write when it applied; checks that every
/// local write is an inflation (the join of the state before with the one after is the one
/// after).
fn run_noting(actions: &[Action]) -> (Vec<Record>, BTreeSet<Dot>) {
    let mut hidden = BTreeSet::new();
    let mut records = vec![Record::default(); REPLICAS];
    let mut seqs = [0u64; REPLICAS];
    for (step, a) in actions.iter().enumerate() {
        match a {
            Action::Op(r, op) => {
                let op = to_op(op, &records[*r]);
                seqs[*r] += 1;
                // Skewed clocks: replica 0 runs far ahead, so markers disagree with causality.
                let marker = Hlc(((REPLICAS - r) as u64) * 1_000_000 + step as u64);
                let stamp = Stamp {
                    dot: Dot::new(rid(*r), seqs[*r]),
                    marker,
                };
                let before = records[*r].clone();
                if records[*r].apply(op, stamp).is_err() {
                    assert_eq!(
                        records[*r], before,
                        "a refused operation changed the record"
                    );
                } else {
                    let seen = before.visible_at(marker);
                    hidden.extend(value_dots(&before).difference(&value_dots(&seen)));
                    assert_eq!(
                        bytes(&joined(&before, &records[*r])),
                        bytes(&records[*r]),
                        "a write is an inflation"
                    );
                }
            }
            Action::Merge { from, to } => {
                let src = records[*from].clone();
                records[*to].join(&src);
            }
        }
    }
    (records, hidden)
}

fn bytes(r: &Record) -> Vec<u8> {
    encode_record(r).expect("well-formed records encode")
}

/// `check_record`'s verdict, with the facts' dots in a fixed order.
fn checked(bytes: &[u8]) -> Result<StateFacts, CodecError> {
    check_record(bytes).map(sorted)
}

/// `decode_record`'s verdict, as facts of the decoded state in the same order.
fn decoded_facts(bytes: &[u8]) -> Result<StateFacts, CodecError> {
    decode_record(bytes).map(|r| sorted(StateFacts::of(&r)))
}

fn sorted(mut facts: StateFacts) -> StateFacts {
    facts.lowest_dots.sort();
    facts
}

/// A change to valid bytes: a byte replaced, the end cut, or a byte inserted.
#[derive(Clone, Debug)]
enum Damage {
    Replace(usize, u8),
    Cut(usize),
    Insert(usize, u8),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        3 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Damage::Replace(i, b)),
        1 => any::<usize>().prop_map(Damage::Cut),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Damage::Insert(i, b)),
    ]
}

fn damaged(mut bytes: Vec<u8>, damages: &[Damage]) -> Vec<u8> {
    for d in damages {
        let len = bytes.len().max(1);
        match *d {
            Damage::Replace(i, b) => {
                if let Some(x) = bytes.get_mut(i % len) {
                    *x = b;
                }
            }
            Damage::Cut(i) => bytes.truncate(i % len),
            Damage::Insert(i, b) => bytes.insert(i % (bytes.len() + 1), b),
        }
    }
    bytes
}

fn joined(a: &Record, b: &Record) -> Record {
    let mut x = a.clone();
    x.join(b);
    x
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn join_is_commutative_associative_idempotent(actions in prop::collection::vec(action(), 0..40)) {
        let rs = run(&actions);
        let (a, b, c) = (&rs[0], &rs[1], &rs[2]);
        prop_assert_eq!(bytes(&joined(a, b)), bytes(&joined(b, a)));
        prop_assert_eq!(bytes(&joined(&joined(a, b), c)), bytes(&joined(a, &joined(b, c))));
        prop_assert_eq!(bytes(&joined(a, a)), bytes(a));
        for r in &rs {
            prop_assert!(r.is_well_formed());
        }
    }

    #[test]
    fn encoding_round_trips_and_is_canonical(actions in prop::collection::vec(action(), 0..40)) {
        for r in run(&actions) {
            let enc = bytes(&r);
            let back = decode_record(&enc).expect("decodes");
            prop_assert_eq!(&back, &r);
            prop_assert_eq!(bytes(&back), enc);
        }
    }

    /// Version 7's links send a state as a patch against the key's state the link carried
    /// before: between any two states, in either order (a newer base, a concurrent one, the
    /// same one), the patch gives back exactly the state, so its join is the whole state's;
    /// and the link form (dots as counters) converts back to the canonical bytes.
    #[test]
    fn a_patch_between_two_states_gives_back_exactly_the_state(
        actions in prop::collection::vec(action(), 0..40),
    ) {
        use meridian_core::model::codec::{link_form, DotsAs};
        use meridian_core::replication::state_patch::{apply_to_state, diff_states};
        let rs = run(&actions);
        for x in &rs {
            let from = bytes(x);
            let linked = link_form(&from, DotsAs::Counters).expect("a link form");
            prop_assert_eq!(link_form(&linked, DotsAs::Distances).expect("canonical"), from.clone());
            for y in &rs {
                let to = bytes(&joined(x, y));
                let patch = diff_states(&from, &to).expect("both decode");
                let got = apply_to_state(&from, &patch, usize::MAX).expect("applies");
                prop_assert_eq!(&got, &to);
                prop_assert_eq!(bytes(&joined(y, &decode_record(&got).unwrap())), bytes(&joined(y, &joined(x, y))));
            }
        }
    }

    /// What lets a receiver store a new key's state as the bytes it arrived as.
    #[test]
    fn a_record_without_seen_dots_joins_into_nothing_unchanged(
        actions in prop::collection::vec(action(), 0..40),
        seen in prop::collection::vec(0u64..12, REPLICAS),
    ) {
        let seen = VersionVector::from_entries(
            seen.iter().enumerate().map(|(i, c)| (rid(i), *c)),
        );
        for r in run(&actions) {
            let mut full = Record::default();
            full.join_seen(&r, &seen);
            if !r.has_dot_in(&seen) {
                prop_assert_eq!(bytes(&full), bytes(&r));
            }
            let mut unseen = Record::default();
            unseen.join_seen(&r, &VersionVector::new());
            prop_assert_eq!(bytes(&unseen), bytes(&r));
            // Every present dot lies inside the record's own context: a record holding
            // anything has a dot there, a tombstone has none among its values (an expiry
            // concurrent with a delete may stay beside it, covering nothing present).
            prop_assert!(!r.is_bottom() <= r.has_dot_in(&r.context()));
            prop_assert_eq!(!value_dots(&r).is_empty(), !r.is_bottom());
        }
    }

    /// What lets a receiver check a peer's state without building it.
    #[test]
    fn checking_finds_the_decoded_states_facts(actions in prop::collection::vec(action(), 0..40)) {
        for r in run(&actions) {
            let enc = bytes(&r);
            prop_assert_eq!(checked(&enc), Ok(sorted(StateFacts::of(&r))));
        }
    }

    #[test]
    fn checking_and_decoding_refuse_the_same_damaged_bytes(
        actions in prop::collection::vec(action(), 0..30),
        damages in prop::collection::vec(damage(), 1..4),
    ) {
        for r in run(&actions) {
            let bad = damaged(bytes(&r), &damages);
            match (checked(&bad), decoded_facts(&bad)) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(_), Err(_)) => {}
                (a, b) => prop_assert!(false, "check {:?} but decode {:?} of {:?}", a, b, bad),
            }
        }
    }

    #[test]
    fn checking_and_decoding_agree_on_garbage(body in prop::collection::vec(any::<u8>(), 0..48)) {
        let mut bad = vec![1u8];
        bad.extend(body);
        prop_assert_eq!(checked(&bad).is_ok(), decoded_facts(&bad).is_ok());
    }

    #[test]
    fn replicas_converge_after_exchanging_everything(actions in prop::collection::vec(action(), 0..40)) {
        let mut rs = run(&actions);
        for _ in 0..2 {
            for i in 0..REPLICAS {
                for j in 0..REPLICAS {
                    let src = rs[j].clone();
                    rs[i].join(&src);
                }
            }
        }
        prop_assert_eq!(bytes(&rs[0]), bytes(&rs[1]));
        prop_assert_eq!(bytes(&rs[1]), bytes(&rs[2]));
    }

    #[test]
    fn what_an_expiry_hid_from_a_write_never_comes_back_and_converged_readers_agree(
        actions in prop::collection::vec(action(), 0..40),
        at in 0u64..4_000_000,
    ) {
        let (mut rs, hidden) = run_noting(&actions);
        for _ in 0..2 {
            for i in 0..REPLICAS {
                for j in 0..REPLICAS {
                    let src = rs[j].clone();
                    rs[i].join(&src);
                }
            }
        }
        for r in &rs {
            let back: Vec<Dot> = value_dots(r).intersection(&hidden).copied().collect();
            prop_assert!(back.is_empty(), "expired dots came back: {:?}", back);
        }
        let now = Hlc(at);
        let seen: Vec<Vec<u8>> = rs.iter().map(|r| bytes(&r.visible_at(now))).collect();
        prop_assert_eq!(&seen[0], &seen[1]);
        prop_assert_eq!(&seen[1], &seen[2]);
    }

    #[test]
    fn read_then_write_back_never_loses_a_concurrent_sibling(
        actions in prop::collection::vec(action(), 0..30),
        concurrent in 2u8..200,
        mine in 200u8..255,
    ) {
        let mut rs = run(&actions);
        // Replicas 0 and 1 share the register the actions left everywhere (its siblings and
        // context; other types the actions wrote are set aside), then a register write over it.
        let mut shared = joined(&joined(&rs[0], &rs[1]), &rs[2]);
        shared.values.retain(|kind, _| *kind == Kind::Register);
        let stamp = Stamp { dot: Dot::new(rid(2), 1_000), marker: Hlc(1) };
        shared
            .apply(Op::Put { value: vec![1], context: None }, stamp)
            .expect("a register takes a put");
        rs[0] = shared.clone();
        rs[1] = shared;
        // Replica 0 reads; replica 1 writes concurrently; replica 0 writes back with its context.
        let ctx = match rs[0].get(Kind::Register) {
            Some(Value::Register(r)) => r.ctx.clone(),
            _ => unreachable!(),
        };
        let s1 = Stamp { dot: Dot::new(rid(1), 5_000), marker: Hlc(2) };
        rs[1].apply(Op::Put { value: vec![concurrent], context: None }, s1).expect("register");
        let s0 = Stamp { dot: Dot::new(rid(0), 5_000), marker: Hlc(3) };
        rs[0].apply(Op::Put { value: vec![mine], context: Some(ctx) }, s0).expect("register");
        let merged = joined(&rs[0], &rs[1]);
        let values = match merged.get(Kind::Register) {
            Some(Value::Register(r)) => r.store.values().cloned().collect::<Vec<_>>(),
            _ => Vec::new(),
        };
        prop_assert!(values.contains(&vec![concurrent]), "concurrent sibling lost: {:?}", values);
        prop_assert!(values.contains(&vec![mine]));
        prop_assert!(!values.contains(&vec![1]), "superseded value survived: {:?}", values);
    }
}
