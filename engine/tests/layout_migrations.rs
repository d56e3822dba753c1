//! Data directories move forward: a directory written by an earlier layout (a fixture kept in
//! the repository) opens with this build, migrated at open, with everything it held intact.

#![allow(clippy::unwrap_used)]

mod common;

use anyhow::{ensure, Context};
use meridian::{Batch, Config, Engine, Op, ReadValue, ReplicaId, RequestTag};
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
    ensure!(a.applied().get(b.replica_id()) == 2, "applied: {:?}", a.applied());
    // Entries not yet stable everywhere stay in the log: one of region 2's, delivered without
    // the acknowledgements that would reclaim it, and region 1's own while region 2 is down.
    b.put(b"late-2", b"relayed")?;
    let theirs = b.replica_id();
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
    assert_eq!(e.member_id(), ReplicaId(1));
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
    let keys: Vec<Vec<u8>> = e.scan_prefix(b"", 100)?.into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys.len(), 12, "{keys:?}");
    assert_eq!(e.setting("fixture")?, Some(v("layout-1")));
    for id in [3, 4] {
        let tag = RequestTag::new("client-a", [id; 16]).context("tag")?;
        assert!(e.request_outcome(&tag)?.is_some(), "request {id} answered");
    }
    Ok(())
}

/// The fixture as the build that wrote it reads it (run once, before any migration existed).
#[test]
#[ignore = "checks the fixture with the build that wrote it"]
fn layout_1_fixture_reads_back() -> anyhow::Result<()> {
    let dir = unpack("layout-1.tar.gz")?;
    let e = Engine::open(dir.path(), Config::default())?;
    check_fixture_values(&e)
}
