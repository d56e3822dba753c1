//! What a client sends is a claim: read contexts that name writes this replica has not seen
//! (another replica's future writes, unknown replicas, huge counters) are refused, nothing
//! written, and never make later writes vanish anywhere. Replicas exchange states with `export` / `apply_remote`.

#![allow(clippy::unwrap_used)]

use meridian::{Batch, Config, Engine, MemberId, Op, OriginId, VersionVector};
use proptest::prelude::*;

fn open(dir: &tempfile::TempDir, id: u64) -> Engine {
    let config = Config {
        member_id: Some(MemberId(id)),
        ..Config::default()
    };
    Engine::open(dir.path(), config).unwrap()
}

/// Every replica receives every other replica's state of `key`.
fn exchange(engines: &[Engine], key: &[u8]) {
    for from in engines {
        for to in engines {
            if let Some(state) = from.replication().export(key).unwrap() {
                to.replication().apply_remote(key, &state).unwrap();
            }
        }
    }
}

fn values(engine: &Engine, key: &[u8]) -> Vec<Vec<u8>> {
    let mut v = engine
        .get(key)
        .unwrap()
        .map(|s| s.values)
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn a_context_naming_another_replicas_future_writes_is_refused_and_hides_nothing() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(&da, 1), open(&db, 2));
    let forged = VersionVector::from_entries([(b.origin_id(), 1_000_000_000)]);
    let refused = a.put_with(b"k", b"forged", &forged);
    assert!(
        matches!(&refused, Err(meridian::Error::ContextAhead { key }) if key == b"k"),
        "{refused:?}"
    );
    assert!(a.get(b"k").unwrap().is_none(), "nothing written");
    a.put(b"k", b"from-a").unwrap();
    b.put(b"k", b"from-b").unwrap();
    exchange(&[a.clone(), b.clone()], b"k");
    // Neither write saw the other: both stay, in both regions.
    assert_eq!(
        values(&a, b"k"),
        vec![b"from-a".to_vec(), b"from-b".to_vec()]
    );
    assert_eq!(values(&b, b"k"), values(&a, b"k"));
    // A context a read here gave is within what this replica saw: taken.
    let read = a.get(b"k").unwrap().unwrap().context;
    a.put_with(b"k", b"merged", &read).unwrap();
    assert_eq!(values(&a, b"k"), vec![b"merged".to_vec()]);
}

#[test]
fn nested_and_batched_contexts_are_refused_too() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(&da, 1), open(&db, 2));
    let forged = VersionVector::from_entries([(b.origin_id(), u64::MAX), (OriginId(99), 7)]);
    let put = |v: &[u8]| Op::Put {
        value: v.to_vec(),
        context: Some(forged.clone()),
    };
    let ahead = |r: Result<meridian::CausalToken, meridian::Error>| {
        matches!(r, Err(meridian::Error::ContextAhead { .. }))
    };
    assert!(ahead(a.map_update(b"m", b"f", put(b"a-field"))));
    // The whole batch is refused, its plain write too.
    assert!(ahead(
        a.write(
            Batch::new()
                .op(b"plain".to_vec(), Op::CounterAdd { delta: 1 })
                .op(b"r".to_vec(), put(b"a-batch"))
        )
    ));
    for key in [&b"m"[..], b"r", b"plain"] {
        assert!(a.read(key).unwrap().is_none(), "nothing written");
    }
    assert_eq!(a.applied().get(a.origin_id()), 0, "no number spent");
    // b's writes go on and reach a whole.
    b.map_update(
        b"m",
        b"f",
        Op::Put {
            value: b"b-field".to_vec(),
            context: None,
        },
    )
    .unwrap();
    exchange(&[a.clone(), b.clone()], b"m");
    let map = a.get_map(b"m").unwrap().unwrap();
    assert_eq!(map.fields[&b"f".to_vec()].len(), 1);
}

/// A context of arbitrary (forged) entries: (replica slot, counter); slots 0 to 2 name the
/// three replicas' origins, 3 an unknown replica; counters small and huge.
type Forged = Vec<(usize, u64)>;

fn forged_context() -> impl Strategy<Value = Forged> {
    let counter = prop_oneof![0u64..6, Just(1u64 << 40), Just(u64::MAX)];
    prop::collection::vec((0usize..4, counter), 0..4)
}

fn context_of(forged: &Forged, engines: &[Engine]) -> VersionVector {
    VersionVector::from_entries(forged.iter().map(|(slot, c)| {
        let replica = engines
            .get(*slot)
            .map_or(OriginId(0xdead_beef), Engine::origin_id);
        (replica, *c)
    }))
}

#[derive(Clone, Debug)]
enum Step {
    /// Replica `0` writes with a forged context.
    Forged(usize, Forged),
    /// Replica `0` writes with the context it reads.
    Read(usize),
    /// Every replica receives every other's state.
    Exchange,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0usize..3, forged_context()).prop_map(|(r, c)| Step::Forged(r, c)),
        2 => (0usize..3).prop_map(Step::Read),
        1 => Just(Step::Exchange),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Whatever contexts clients forged before, a later round of concurrent writes (one per
    /// replica) is visible in full at every replica once states are exchanged.
    #[test]
    fn later_writes_of_every_replica_converge_whatever_clients_forged(
        steps in prop::collection::vec(step(), 1..12)
    ) {
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let engines: Vec<Engine> = dirs.iter().enumerate().map(|(i, d)| open(d, i as u64 + 1)).collect();
        for (n, s) in steps.iter().enumerate() {
            match s {
                Step::Forged(r, forged) => {
                    let ctx = context_of(forged, &engines);
                    let mut seen = engines[*r].applied();
                    if let Some(s) = engines[*r].get(b"k").unwrap() {
                        seen.join(&s.context);
                    }
                    let written = engines[*r].put_with(b"k", format!("forged{n}").as_bytes(), &ctx);
                    // Taken when within what the replica saw, refused (nothing written) when not.
                    prop_assert_eq!(written.is_ok(), seen.dominates(&ctx), "{:?}", written);
                }
                Step::Read(r) => {
                    let ctx = engines[*r].get(b"k").unwrap().map(|s| s.context).unwrap_or_default();
                    engines[*r].put_with(b"k", format!("read{n}").as_bytes(), &ctx).unwrap();
                }
                Step::Exchange => exchange(&engines, b"k"),
            }
        }
        exchange(&engines, b"k");
        let mut last = Vec::new();
        for (i, e) in engines.iter().enumerate() {
            let value = format!("last{i}").into_bytes();
            e.put(b"k", &value).unwrap();
            last.push(value);
        }
        exchange(&engines, b"k");
        let first = values(&engines[0], b"k");
        prop_assert_eq!(&first, &last, "the three concurrent writes are the siblings");
        for e in &engines[1..] {
            prop_assert_eq!(values(e, b"k"), first.clone());
        }
    }
}
