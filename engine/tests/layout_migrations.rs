//! Data directories move forward: a directory written by an earlier layout (a fixture kept in
//! the repository) opens with this build, migrated at open, with everything it held intact.

#![allow(clippy::unwrap_used)]

mod common;

use anyhow::{ensure, Context};
use meridian::store::{keys, LogEntry, Store};
use meridian::{Batch, Config, Engine, Error, MemberId, Op, OriginId, ReadValue, RequestTag};
use meridian_core::model::digest::key_hash;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where the fixtures live.
fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Writes the layout-1 fixture (`tests/fixtures/layout-1.tar.gz`, or `$MERIDIAN_FIXTURE_OUT`):
/// region 1 of two replicating in memory, closed cleanly. Run it with the build whose layout
/// the fixture is to hold (see `tests/fixtures/README.md`):
/// `cargo test --release -p meridian --test layout_migrations -- --ignored write_layout_1_fixture`
#[test]
#[ignore = "writes the fixture kept in the repository"]
fn write_layout_1_fixture() -> anyhow::Result<()> {
    let out = std::env::var_os("MERIDIAN_FIXTURE_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| fixtures().join("layout-1.tar.gz"));
    let mut net = common::Net::new(2);
    let (a, b) = (net.engine(0).clone(), net.engine(1).clone());
    // Every value type, written by region 1.
    a.put(b"reg", b"v1")?;
    a.lww_set(b"lww", b"hello")?;
    a.counter_add(b"counter", 5)?;
    a.counter_add(b"counter", -2)?;
    a.set_add(b"set", &[b"a", b"b", b"c"])?;
    a.set_remove(b"set", &[b"b"])?;
    a.map_update(
        b"map",
        b"name",
        Op::LwwSet {
            value: b"ada".to_vec(),
        },
    )?;
    a.map_update(b"map", b"visits", Op::CounterAdd { delta: 2 })?;
    a.map_update(
        b"map",
        b"tags",
        Op::SetAdd {
            elems: vec![b"x".to_vec()],
        },
    )?;
    // Part of it in SST files, the rest in the WAL.
    a.store().flush()?;
    a.put(b"gone", b"soon")?;
    a.delete(b"gone")?;
    a.write(
        Batch::new()
            .put("b1", "one")
            .counter_add("b2", 7)
            .set_add("b3", "e"),
    )?;
    let tag = RequestTag::new("client-a", [3; 16]).context("tag")?;
    a.write_once(&tag, Batch::new().lww_set("tagged", "once"))?;
    a.set_setting("fixture", b"layout-1")?;
    // Region 2's writes reach region 1: its applied vector and log name another origin.
    b.put(b"from-2", b"hi")?;
    b.counter_add(b"counter", 10)?;
    net.run(2_000);
    ensure!(a.get_counter(b"counter")? == Some(13), "replicated");
    ensure!(
        a.applied().get(b.origin_id()) == 2,
        "applied: {:?}",
        a.applied()
    );
    // Entries not yet stable everywhere stay in the log: one of region 2's, delivered without
    // the acknowledgements that would reclaim it, and region 1's own while region 2 is down.
    b.put(b"late-2", b"relayed")?;
    let theirs = b.origin_id();
    net.run(common::TICK_MS);
    drop(b);
    net.stop(1);
    a.lww_set(b"lww", b"hello again")?;
    a.write(Batch::new().counter_add("counter", 1).set_add("set", "d"))?;
    let tag = RequestTag::new("client-a", [4; 16]).context("tag")?;
    a.write_once(&tag, Batch::new().put("tagged-late", "twice"))?;
    let origins: Vec<_> = a
        .store()
        .log_entries()
        .map(|e| e.map(|(k, _)| meridian::store::keys::parse_log_key(&k).map(|(o, _)| o)))
        .collect::<Result<_, _>>()?;
    ensure!(
        origins.len() >= 4 && origins.contains(&Some(theirs)),
        "entries of both origins in the log: {origins:?}"
    );
    drop(a);
    net.stop(0);
    // The informational LOG files are left out (they are not data, and the largest files).
    let status = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&out)
        .arg("-C")
        .arg(&net.regions[0].dir)
        .args(["--exclude=./LOG*", "--sort=name", "--owner=0", "--group=0"])
        .arg(".")
        .status()?;
    ensure!(status.success(), "tar: {status}");
    let bytes = std::fs::metadata(&out)?.len();
    ensure!(bytes < 200_000, "the fixture stays small: {bytes} bytes");
    eprintln!("wrote {}", out.display());
    Ok(())
}

/// Unpacks fixture `name` into a new directory.
fn unpack(name: &str) -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    let status = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(fixtures().join(name))
        .arg("-C")
        .arg(dir.path())
        .status()?;
    ensure!(status.success(), "tar: {status}");
    Ok(dir)
}

fn lww(e: &Engine, key: &[u8]) -> anyhow::Result<Vec<u8>> {
    Ok(e.get_lww(key)?.context("present")?.value)
}

fn register(e: &Engine, key: &[u8]) -> anyhow::Result<Vec<Vec<u8>>> {
    Ok(e.get(key)?.context("present")?.values)
}

/// Everything the layout-1 fixture's generator wrote reads back.
fn check_fixture_values(e: &Engine) -> anyhow::Result<()> {
    let v = |s: &str| s.as_bytes().to_vec();
    assert_eq!(e.member_id(), MemberId(1));
    assert_eq!(register(e, b"reg")?, vec![v("v1")]);
    assert_eq!(lww(e, b"lww")?, v("hello again"));
    assert_eq!(e.get_counter(b"counter")?, Some(14));
    assert_eq!(e.get_set(b"set")?, Some(vec![v("a"), v("c"), v("d")]));
    let map = e.get_map(b"map")?.context("map")?;
    assert_eq!(map.fields.len(), 3);
    assert!(matches!(&map.fields[&v("name")][..], [ReadValue::Lww(l)] if l.value == v("ada")));
    assert_eq!(map.fields[&v("visits")], vec![ReadValue::Counter(2)]);
    assert_eq!(map.fields[&v("tags")], vec![ReadValue::Set(vec![v("x")])]);
    assert!(e.read(b"gone")?.is_none(), "the deleted key stays deleted");
    assert_eq!(register(e, b"b1")?, vec![v("one")]);
    assert_eq!(e.get_counter(b"b2")?, Some(7));
    assert_eq!(e.get_set(b"b3")?, Some(vec![v("e")]));
    assert_eq!(lww(e, b"tagged")?, v("once"));
    assert_eq!(register(e, b"tagged-late")?, vec![v("twice")]);
    assert_eq!(register(e, b"from-2")?, vec![v("hi")]);
    assert_eq!(register(e, b"late-2")?, vec![v("relayed")]);
    let keys: Vec<Vec<u8>> = e
        .scan_prefix(b"", 100)?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys.len(), 12, "{keys:?}");
    assert_eq!(e.setting("fixture")?, Some(v("layout-1")));
    for id in [3, 4] {
        let tag = RequestTag::new("client-a", [id; 16]).context("tag")?;
        assert!(e.request_outcome(&tag)?.is_some(), "request {id} answered");
    }
    Ok(())
}

/// The keys and values an iterator over a column family hands out.
fn pairs<E: std::error::Error + Send + Sync + 'static>(
    items: impl Iterator<Item = Result<(Box<[u8]>, Box<[u8]>), E>>,
) -> anyhow::Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut out = BTreeMap::new();
    for item in items {
        let (k, v) = item?;
        out.insert(k.to_vec(), v.to_vec());
    }
    Ok(out)
}

/// Everything a directory holds, read straight from its column families.
#[derive(Debug, PartialEq, Eq)]
struct Contents {
    records: BTreeMap<Vec<u8>, Vec<u8>>,
    log: BTreeMap<Vec<u8>, Vec<u8>>,
    meta: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Contents {
    fn of(dir: &Path) -> anyhow::Result<Contents> {
        let store = Store::open(dir)?;
        Ok(Contents {
            records: pairs(store.records_from(b"", None))?,
            log: pairs(store.log_entries())?,
            meta: store
                .meta_with_prefix(b"")?
                .into_iter()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect(),
        })
    }

    /// The metadata but what every open and close rewrites (how the run went, the summary
    /// kept by a clean stop) and the layout bytes.
    fn lasting_meta(&self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let passing: [&[u8]; 5] = [
            keys::META_RUN,
            keys::META_RUN_DURABILITY,
            keys::META_SUMMARY,
            keys::META_LAYOUT,
            keys::META_LAYOUT_MIGRATED,
        ];
        let mut meta = self.meta.clone();
        meta.retain(|k, _| !passing.contains(&k.as_slice()));
        meta
    }

    fn layout_bytes(&self) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
        (
            self.meta.get(keys::META_LAYOUT).cloned(),
            self.meta.get(keys::META_LAYOUT_MIGRATED).cloned(),
        )
    }
}

/// Every record's key is in the keys-by-hash index, and the index says it covers them.
fn check_key_index(e: &Engine) -> anyhow::Result<()> {
    let store = e.store();
    ensure!(
        store.get_meta(keys::META_KEYHASH_INDEX)?.is_some(),
        "marker"
    );
    for item in store.records_from(b"", None) {
        let (key, _) = item?;
        let indexed = store.keys_with_hash(key_hash(&key))?;
        ensure!(indexed.iter().any(|k| k[..] == key[..]), "{key:?} indexed");
    }
    Ok(())
}

#[test]
fn a_layout_1_directory_is_migrated_at_open_and_keeps_everything_it_held() -> anyhow::Result<()> {
    let dir = unpack("layout-1.tar.gz")?;
    let before = Contents::of(dir.path())?;
    assert_eq!(before.layout_bytes(), (Some(vec![1]), None));
    let (epoch, member) = (
        before.meta[keys::META_EPOCH].clone(),
        before.meta[keys::META_REPLICA_ID].clone(),
    );
    assert_eq!(member, 1u64.to_be_bytes());

    let e = Engine::open(dir.path(), Config::default())?;
    assert_eq!(Engine::LAYOUT, 2);
    assert_eq!(e.layout()?, Engine::LAYOUT, "migrated at open");
    // Its migration only added an index: builds of layout 1 still open it.
    assert_eq!(e.layout_floor()?, 1);
    check_fixture_values(&e)?;
    check_key_index(&e)?;
    // The same replica, writing under the same origin (a clean stop: no new epoch).
    let status = e.origin_status();
    assert_eq!(status.origin.0.to_be_bytes(), epoch[4..]);
    assert!(status.writable, "{status:?}");
    // The applied vector names both origins, as the metadata had it.
    let applied = e.applied();
    for (k, v) in before.meta.range(keys::META_APPLIED_PREFIX.to_vec()..) {
        let Some(origin) = k.strip_prefix(keys::META_APPLIED_PREFIX) else {
            break;
        };
        let origin = OriginId(u64::from_be_bytes(origin.try_into()?));
        assert_eq!(applied.get(origin), u64::from_be_bytes(v[..].try_into()?));
    }
    assert_eq!(applied.iter().count(), 2, "{applied:?}");
    // Every log entry decodes, the tagged one with its tag.
    let entries: Vec<LogEntry> = before
        .log
        .values()
        .map(|v| LogEntry::decode(v))
        .collect::<Result<_, _>>()?;
    assert_eq!(entries.len(), 4);
    assert_eq!(entries.iter().filter(|e| e.request.is_some()).count(), 1);
    drop(e);

    // The records, the log and the lasting metadata are byte for byte what they were.
    let after = Contents::of(dir.path())?;
    assert_eq!(after.records, before.records);
    assert_eq!(after.log, before.log);
    assert_eq!(after.lasting_meta(), before.lasting_meta());
    assert_eq!(after.layout_bytes(), (Some(vec![1]), Some(vec![2])));

    // Reopening is a no-op: nothing to migrate, nothing changed; and it takes writes.
    let e = Engine::open(dir.path(), Config::default())?;
    assert_eq!((e.layout()?, e.layout_floor()?), (2, 1));
    check_fixture_values(&e)?;
    drop(e);
    let again = Contents::of(dir.path())?;
    assert_eq!(again.records, after.records);
    assert_eq!(again.log, after.log);
    assert_eq!(again.lasting_meta(), after.lasting_meta());
    assert_eq!(again.layout_bytes(), after.layout_bytes());
    let e = Engine::open(dir.path(), Config::default())?;
    e.counter_add(b"counter", 1)?;
    assert_eq!(e.get_counter(b"counter")?, Some(15));
    check_key_index(&e)?;
    Ok(())
}

#[test]
fn an_interrupted_migration_is_completed_at_the_next_open() -> anyhow::Result<()> {
    // A layout-1 directory from before the keys-by-hash index, whose indexing (the migration
    // to layout 2) was cut short: part of the keys indexed, no marker, the layout still 1.
    let dir = unpack("layout-1.tar.gz")?;
    {
        let store = Store::open(dir.path())?;
        let keys: Vec<Box<[u8]>> = store
            .records_from(b"", None)
            .map(|i| i.map(|(k, _)| k))
            .collect::<Result<_, _>>()?;
        let mut wb = store.batch();
        for key in &keys {
            wb.unindex_key(key);
        }
        wb.delete_meta(keys::META_KEYHASH_INDEX);
        wb.commit(true)?;
        let mut wb = store.batch();
        for key in keys.iter().take(keys.len() / 2) {
            wb.index_key(key);
        }
        wb.commit(true)?;
        assert!(store
            .keys_with_hash(key_hash(keys.last().context("keys")?))?
            .is_empty());
    }
    assert_eq!(
        Contents::of(dir.path())?.layout_bytes(),
        (Some(vec![1]), None)
    );
    let e = Engine::open(dir.path(), Config::default())?;
    assert_eq!(e.layout()?, Engine::LAYOUT);
    check_key_index(&e)?;
    check_fixture_values(&e)?;
    Ok(())
}

#[test]
fn a_directory_of_a_newer_layout_is_refused_and_left_as_it_was() -> anyhow::Result<()> {
    let dir = unpack("layout-1.tar.gz")?;
    drop(Engine::open(dir.path(), Config::default())?);
    // What a newer build whose migrations older builds cannot read would leave.
    let newer = Engine::LAYOUT + 1;
    {
        let store = Store::open(dir.path())?;
        let mut wb = store.batch();
        wb.put_meta(keys::META_LAYOUT, &[newer]);
        wb.put_meta(keys::META_LAYOUT_MIGRATED, &[newer]);
        wb.commit(true)?;
    }
    let before = Contents::of(dir.path())?;
    for config in [
        Config::default(),
        Config {
            member_id: Some(MemberId(1)),
            ..Config::default()
        },
    ] {
        let err = match Engine::open(dir.path(), config) {
            Err(err) => err,
            Ok(_) => panic!("a directory of layout {newer} opened"),
        };
        assert!(
            matches!(err, Error::FutureVersion { found, supported, .. }
                if found == newer && supported == Engine::LAYOUT),
            "{err:?}"
        );
        // "data directory layout has format version 3; this build reads up to 2"
        let message = err.to_string();
        assert!(
            message.contains(&format!("version {newer}"))
                && message.contains(&format!("up to {}", Engine::LAYOUT)),
            "{message}"
        );
    }
    // Nothing in it changed: not the layout, not how its last run ended, nothing.
    assert_eq!(Contents::of(dir.path())?, before);
    Ok(())
}

#[test]
fn a_directory_a_newer_build_left_readable_opens_and_is_migrated_again_later() -> anyhow::Result<()>
{
    // A newer build's migrations kept the floor at this build's layout (they only added what
    // this build keeps up or ignores): this build opens it, and lowers its layout so that the
    // newer build runs its migrations again when it comes back.
    let dir = unpack("layout-1.tar.gz")?;
    drop(Engine::open(dir.path(), Config::default())?);
    let newer = Engine::LAYOUT + 1;
    {
        let store = Store::open(dir.path())?;
        store.put_meta_sync(keys::META_LAYOUT_MIGRATED, &[newer])?;
    }
    let e = Engine::open(dir.path(), Config::default())?;
    assert_eq!((e.layout()?, e.layout_floor()?), (Engine::LAYOUT, 1));
    check_fixture_values(&e)?;
    e.put(b"written-after-a-rollback", b"kept")?;
    drop(e);
    assert_eq!(
        Contents::of(dir.path())?.layout_bytes(),
        (Some(vec![1]), Some(vec![Engine::LAYOUT]))
    );
    Ok(())
}
