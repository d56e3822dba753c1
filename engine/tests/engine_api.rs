//! The local API on a real RocksDB directory: typed operations, conflicts across two replicas,
//! batches, scans, persistence, and typed errors for bad input and corrupt bytes.

#![allow(clippy::unwrap_used)]

use meridian::{Batch, Config, Durability, Engine, Error, Kind, Op, ReadValue, WallClock};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

fn open(dir: &tempfile::TempDir) -> Engine {
    Engine::open(dir.path(), Config::default()).expect("open")
}

/// Copies every listed key's state from `from` into `to`.
fn sync(from: &Engine, to: &Engine, keys: &[&[u8]]) {
    for k in keys {
        if let Some(state) = from.replication().export(k).expect("export") {
            to.replication()
                .apply_remote(k, &state)
                .expect("apply_remote");
        }
    }
}

struct FixedClock(AtomicU64);
impl WallClock for FixedClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[test]
fn engine_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Engine>();
}

#[test]
fn concurrent_register_writes_become_siblings_and_a_contextual_write_resolves_them() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(&da), open(&db));
    a.put(b"k", b"from-a").unwrap();
    b.put(b"k", b"from-b").unwrap();
    sync(&a, &b, &[b"k"]);
    sync(&b, &a, &[b"k"]);
    let ra = a.get(b"k").unwrap().unwrap();
    let rb = b.get(b"k").unwrap().unwrap();
    assert_eq!(ra.values.len(), 2, "two siblings: {ra:?}");
    assert_eq!(ra, rb);
    // Resolve on a with the context it read; b meanwhile writes again, concurrently.
    a.put_with(b"k", b"resolved", &ra.context).unwrap();
    b.put(b"k", b"b-again").unwrap();
    sync(&a, &b, &[b"k"]);
    sync(&b, &a, &[b"k"]);
    let mut vals = a.get(b"k").unwrap().unwrap().values;
    vals.sort();
    assert_eq!(vals, vec![b"b-again".to_vec(), b"resolved".to_vec()]);
    // Applying the same state again changes nothing.
    let state = b.replication().export(b"k").unwrap().unwrap();
    assert!(!a.replication().apply_remote(b"k", &state).unwrap());
}

#[test]
fn causally_later_lww_write_wins_even_with_a_clock_far_behind() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ahead = Config {
        clock: Arc::new(FixedClock(AtomicU64::new(2_000_000_000_000))),
        ..Config::default()
    };
    let behind = Config {
        clock: Arc::new(FixedClock(AtomicU64::new(1_000_000_000_000))),
        ..Config::default()
    };
    let a = Engine::open(da.path(), ahead).unwrap();
    let b = Engine::open(db.path(), behind).unwrap();
    a.lww_set(b"x", b"first").unwrap();
    sync(&a, &b, &[b"x"]);
    b.lww_set(b"x", b"second").unwrap();
    sync(&b, &a, &[b"x"]);
    assert_eq!(a.get_lww(b"x").unwrap().unwrap().value, b"second");
    assert_eq!(b.get_lww(b"x").unwrap().unwrap().value, b"second");
}

#[test]
fn concurrent_lww_writes_pick_the_same_winner_everywhere() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(&da), open(&db));
    a.lww_set(b"x", b"a").unwrap();
    b.lww_set(b"x", b"b").unwrap();
    sync(&a, &b, &[b"x"]);
    sync(&b, &a, &[b"x"]);
    assert_eq!(a.get_lww(b"x").unwrap(), b.get_lww(b"x").unwrap());
}

#[test]
fn counter_delete_resets_what_it_saw_and_keeps_a_concurrent_increment() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(&da), open(&db));
    a.counter_add(b"c", 5).unwrap();
    b.counter_add(b"c", -2).unwrap();
    sync(&a, &b, &[b"c"]);
    sync(&b, &a, &[b"c"]);
    assert_eq!(a.get_counter(b"c").unwrap(), Some(3));
    // a deletes what it sees; b concurrently adds 10.
    a.delete(b"c").unwrap();
    assert_eq!(a.get_counter(b"c").unwrap(), None);
    b.counter_add(b"c", 10).unwrap();
    sync(&a, &b, &[b"c"]);
    sync(&b, &a, &[b"c"]);
    assert_eq!(a.get_counter(b"c").unwrap(), Some(10));
    assert_eq!(b.get_counter(b"c").unwrap(), Some(10));
    // After the delete, a counts from zero again.
    a.counter_add(b"c", 1).unwrap();
    assert_eq!(a.get_counter(b"c").unwrap(), Some(11));
}

#[test]
fn set_add_wins_over_a_concurrent_remove() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(&da), open(&db));
    a.set_add(b"s", &[b"x", b"y"]).unwrap();
    sync(&a, &b, &[b"s"]);
    b.set_remove(b"s", &[b"x", b"y"]).unwrap();
    a.set_add(b"s", &[b"x"]).unwrap();
    sync(&a, &b, &[b"s"]);
    sync(&b, &a, &[b"s"]);
    assert_eq!(a.get_set(b"s").unwrap().unwrap(), vec![b"x".to_vec()]);
    assert_eq!(b.get_set(b"s").unwrap().unwrap(), vec![b"x".to_vec()]);
}

#[test]
fn map_fields_nest_and_conflicting_field_types_stay_visible() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(&da), open(&db));
    a.map_update(
        b"m",
        b"name",
        Op::LwwSet {
            value: b"ada".to_vec(),
        },
    )
    .unwrap();
    a.map_update(
        b"m",
        b"stats",
        Op::MapUpdate {
            field: b"visits".to_vec(),
            op: Box::new(Op::CounterAdd { delta: 2 }),
        },
    )
    .unwrap();
    b.map_update(b"m", b"name", Op::CounterAdd { delta: 1 })
        .unwrap();
    sync(&a, &b, &[b"m"]);
    sync(&b, &a, &[b"m"]);
    let m = a.get_map(b"m").unwrap().unwrap();
    assert_eq!(m, b.get_map(b"m").unwrap().unwrap());
    let name_kinds: Vec<Kind> = m.fields[&b"name".to_vec()]
        .iter()
        .map(ReadValue::kind)
        .collect();
    assert_eq!(name_kinds, vec![Kind::Lww, Kind::Counter]);
    match &m.fields[&b"stats".to_vec()][0] {
        ReadValue::Map(inner) => assert_eq!(
            inner.fields[&b"visits".to_vec()],
            vec![ReadValue::Counter(2)]
        ),
        other => panic!("expected nested map, got {other:?}"),
    }
    a.map_remove(b"m", b"name").unwrap();
    assert!(!a
        .get_map(b"m")
        .unwrap()
        .unwrap()
        .fields
        .contains_key(b"name".as_slice()));
}

#[test]
fn batch_is_one_dot_and_one_log_entry() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(&dir);
    let before = e.replication().last_seq();
    let token = e
        .write(
            Batch::new()
                .put("a", "1")
                .counter_add("b", 4)
                .set_add("c", "x"),
        )
        .unwrap();
    assert_eq!(e.replication().last_seq(), before + 1);
    assert_eq!(token.get(e.origin_id()), before + 1);
    let entry = e
        .store()
        .get_log(e.origin_id(), before + 1)
        .unwrap()
        .unwrap();
    let entry = meridian::store::LogEntry::decode(&entry).unwrap();
    assert_eq!(
        entry.keys,
        vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
    );
    assert_eq!(e.get_counter(b"b").unwrap(), Some(4));
}

#[test]
fn a_failing_batch_writes_nothing_and_spends_no_sequence_number() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(&dir);
    e.counter_add(b"n", 1).unwrap();
    let before = e.replication().last_seq();
    let err = e
        .write(Batch::new().put("fresh", "v").put("n", "oops"))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::WrongType {
                existing: Kind::Counter,
                requested: Kind::Register,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(e.get(b"fresh").unwrap(), None, "half a batch was written");
    // Numbered where it commits: a write that fails takes no number, the log has no hole.
    assert_eq!(e.replication().last_seq(), before);
    assert!(e
        .store()
        .get_log(e.origin_id(), before + 1)
        .unwrap()
        .is_none());
    let token = e.put(b"next", b"v").unwrap();
    assert_eq!(token.get(e.origin_id()), before + 1);
    assert!(matches!(e.get(b"n"), Err(Error::WrongType { .. })));
}

#[test]
fn bad_input_gets_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(
        dir.path(),
        Config {
            value_bytes_max: 1024,
            ..Config::default()
        },
    )
    .unwrap();
    assert!(matches!(e.put(b"", b"v"), Err(Error::InvalidKey(_))));
    assert!(matches!(
        e.put(&vec![b'k'; 64 * 1024 + 1], b"v"),
        Err(Error::InvalidKey(_))
    ));
    assert!(matches!(
        e.put(b"k", &[0u8; 1025]),
        Err(Error::ValueTooLarge {
            len: 1025,
            max: 1024
        })
    ));
    assert!(matches!(
        e.write(Batch::new()),
        Err(Error::InvalidOperation(_))
    ));
    let mut deep = Op::CounterAdd { delta: 1 };
    for _ in 0..40 {
        deep = Op::MapUpdate {
            field: b"f".to_vec(),
            op: Box::new(deep),
        };
    }
    assert!(matches!(
        e.apply(b"deep", deep),
        Err(Error::InvalidOperation(_))
    ));
    let nested_delete = Op::MapUpdate {
        field: b"f".to_vec(),
        op: Box::new(Op::Delete),
    };
    assert!(matches!(
        e.apply(b"m", nested_delete),
        Err(Error::InvalidOperation(_))
    ));
    assert!(matches!(
        e.replication().apply_remote(b"k", b"\x01garbage"),
        Err(Error::Corrupt { .. })
    ));
    assert!(matches!(
        e.replication().apply_remote(b"k", b"\x09future"),
        Err(Error::FutureVersion { found: 9, .. })
    ));
    assert_eq!(
        e.read(b"k").unwrap(),
        None,
        "a refused remote state left something behind"
    );
    assert!(matches!(
        e.counter_add(b"big", i64::MAX)
            .and_then(|_| e.counter_add(b"big", i64::MAX))
            .and_then(|_| e.counter_add(b"big", i64::MAX)),
        Err(Error::CounterOverflow { .. })
    ));
}

#[test]
fn a_corrupt_record_is_named_and_the_rest_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(&dir);
    e.put(b"good", b"1").unwrap();
    e.put(b"bad", b"2").unwrap();
    e.store()
        .put_raw_record(b"bad", b"\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff")
        .unwrap();
    e.store().put_raw_record(b"newer", b"\x07whatever").unwrap();
    match e.get(b"bad") {
        Err(Error::Corrupt {
            key,
            what: "record",
            ..
        }) => assert_eq!(key, b"bad"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(matches!(
        e.get(b"newer"),
        Err(Error::FutureVersion { found: 7, .. })
    ));
    assert!(matches!(e.put(b"bad", b"3"), Err(Error::Corrupt { .. })));
    assert_eq!(e.get(b"good").unwrap().unwrap().values, vec![b"1".to_vec()]);
    e.put(b"other", b"ok").unwrap();
    // A scan skips what it cannot read (and reports it) instead of failing on it.
    let keys: Vec<Vec<u8>> = e
        .scan_prefix(b"", 100)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, vec![b"good".to_vec(), b"other".to_vec()]);
    assert_eq!(e.faults().corrupt_records, 2);
    assert_eq!(e.scan_prefix(b"go", 100).unwrap().len(), 1);
}

#[test]
fn scans_return_live_keys_in_order_within_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(&dir);
    for k in ["user/1", "user/2", "user/3", "users", "video/1"] {
        e.put(k.as_bytes(), b"v").unwrap();
    }
    e.delete(b"user/2").unwrap();
    let keys = |rows: Vec<(Vec<u8>, meridian::Read)>| {
        rows.into_iter()
            .map(|(k, _)| String::from_utf8(k).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(e.scan_prefix(b"user/", 10).unwrap()),
        ["user/1", "user/3"]
    );
    assert_eq!(
        keys(e.scan_range(b"user/3", Some(b"video/1"), 10).unwrap()),
        ["user/3", "users"]
    );
    assert_eq!(
        keys(e.scan_range(b"a", None, 2).unwrap()),
        ["user/1", "user/3"]
    );
}

/// A run under `sync` that ends without a clean shutdown in another boot (a power loss) lost
/// nothing it acknowledged: the next open keeps its origin and numbering.
#[test]
fn data_identity_and_sequence_survive_a_power_loss_with_fsync_durability() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = |boot: &str| Config {
        durability: Durability::Sync,
        boot_id: Some(boot.into()),
        ..Config::default()
    };
    let (id, seq) = {
        let e = Engine::open(dir.path(), cfg("boot-1")).unwrap();
        e.put(b"k", b"v").unwrap();
        e.set_add(b"s", &[b"a"]).unwrap();
        let kept = (e.origin_id(), e.replication().last_seq());
        e.close_as_crashed();
        kept
    };
    let e = Engine::open(dir.path(), cfg("boot-2")).unwrap();
    assert_eq!(e.origin_id(), id);
    assert_eq!(e.replication().last_seq(), seq);
    assert_eq!(e.get(b"k").unwrap().unwrap().values, vec![b"v".to_vec()]);
    let t = e.put(b"k", b"w").unwrap();
    assert_eq!(t.get(id), seq + 1);
}

#[test]
fn deleted_key_reads_absent_but_keeps_its_tombstone() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(&dir);
    e.put(b"k", b"v").unwrap();
    e.delete(b"k").unwrap();
    assert_eq!(e.read(b"k").unwrap(), None);
    assert!(
        e.replication().export(b"k").unwrap().is_some(),
        "tombstone kept for replication"
    );
}

#[test]
fn settings_are_kept_with_the_data_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = open(&dir);
        assert_eq!(e.setting("mode").unwrap(), None);
        e.set_setting("mode", b"active-passive").unwrap();
        assert!(matches!(
            e.set_setting("", b"x"),
            Err(Error::InvalidOperation(_))
        ));
        assert!(matches!(
            e.set_setting("big", &[0u8; 5000]),
            Err(Error::InvalidOperation(_))
        ));
    }
    let e = open(&dir);
    assert_eq!(
        e.setting("mode").unwrap().as_deref(),
        Some(&b"active-passive"[..])
    );
    // Settings are not records: scans and reads do not see them.
    assert!(e.read(b"setting/mode").unwrap().is_none());
}

/// Wake-ups are subscriptions: any number of them (two runtimes, an application waiting for
/// tokens) are each called, and a dropped one no longer is.
#[test]
fn every_subscriber_to_commits_and_the_applied_vector_is_woken_until_it_unsubscribes() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(&dir);
    let counter = |n: &Arc<AtomicU64>| {
        let n = Arc::clone(n);
        move || {
            n.fetch_add(1, Ordering::SeqCst);
        }
    };
    let (applied_a, applied_b, commits_a, commits_b) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let sa = e.on_applied(counter(&applied_a));
    let sb = e.on_applied(counter(&applied_b));
    let ca = e.replication().on_commit(counter(&commits_a));
    let cb = e.replication().on_commit(counter(&commits_b));
    e.put(b"k", b"1").unwrap();
    for n in [&applied_a, &applied_b, &commits_a, &commits_b] {
        assert_eq!(n.load(Ordering::SeqCst), 1, "every subscriber woken once");
    }
    drop((sa, ca));
    e.put(b"k", b"2").unwrap();
    assert_eq!(applied_a.load(Ordering::SeqCst), 1, "unsubscribed");
    assert_eq!(commits_a.load(Ordering::SeqCst), 1, "unsubscribed");
    assert_eq!(applied_b.load(Ordering::SeqCst), 2);
    assert_eq!(commits_b.load(Ordering::SeqCst), 2);
    drop((sb, cb));
}
