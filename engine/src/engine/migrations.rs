//! Data directories move forward: the on-disk layout, and the migrations that take a directory
//! written by an earlier build to this build's layout, run in order at open.
//!
//! Two bytes of metadata describe a directory:
//! - `layout_migrated` (`keys::META_LAYOUT_MIGRATED`): the layout its contents are in, that is
//!   the last migration that ran on it (absent in a directory from before migrations: the
//!   `layout` byte's value).
//! - `layout` (`keys::META_LAYOUT`): its *compatibility floor*, the oldest build layout that can
//!   open it. Every build, including those from before migrations (which only know this byte),
//!   refuses a directory whose floor is above its own layout. A migration that only adds what
//!   the builds down to some layout K keep up by themselves or do without (an index they
//!   maintain, a marker they ignore) leaves the floor at K or below; one that changes what older
//!   builds read raises it to its own layout.
//!
//! Which build opens which directory (the downgrade policy):
//! - A build opens a directory of its own layout or older, running the migrations from the
//!   directory's layout up to its own, in order, at open (before anything else writes). Each
//!   migration is a function of the store taking layout N to N + 1; it is idempotent, and the
//!   runner ends it with a synced write of the new layout, so a crash in the middle runs only
//!   that migration again at the next open.
//! - A build also opens a directory a newer build migrated, as long as the directory's floor is
//!   at or below the build's layout (the newer build's migrations left it readable): it first
//!   lowers `layout_migrated` to its own layout (synced), so that the newer build, when it comes
//!   back, runs its migrations again over what the older one wrote meanwhile. A rolling upgrade
//!   whose migrations keep the floor can be rolled back, and forward again.
//! - A directory whose floor is above the build's layout is refused with
//!   `Error::FutureVersion` naming both (`found`: the floor, `supported`: the build's layout),
//!   before anything is written to its records, log or metadata (RocksDB itself rewrites its
//!   manifest and options files at any open); so is one this build's storage cannot even open (a column family a
//!   newer layout added), when its floor says it is newer. Run a build of that layout or newer;
//!   to go back to an older build anyway, restore a backup taken before the upgrade (it starts
//!   a new epoch and takes back from its peers what was written since), or start the region on
//!   an empty directory and let it rebuild from its peers (state transfer).
//!
//! Layouts:
//! 1. Every directory written before migrations existed. One from before the keys-by-hash
//!    index lacks the index (and its marker).
//! 2. The keys-by-hash index covers every record (`keys::META_KEYHASH_INDEX` is present).
//!    Floor 1: a build of layout 1 that can open the directory at all knows the index's column
//!    family (RocksDB refuses a directory holding a column family its opener does not name),
//!    and such builds keep the index up to date on every write.
//!
//! Adding a layout: first write a fixture with the last build of the current layout
//! (`engine/tests/fixtures/README.md`), then raise `LAYOUT`, append its migration here with the
//! lowest floor that is true, and describe it above.

use super::*;
use std::time::Instant;

/// One step forward: takes a directory of layout `to - 1` to layout `to`.
pub(super) struct Migration {
    /// The layout the directory is in once it ran.
    pub(super) to: u8,
    /// The oldest build layout that still opens a directory this step ran on.
    pub(super) floor: u8,
    /// What it does, in words (logs).
    pub(super) what: &'static str,
    /// The work: idempotent, as a crash may interrupt it and the next open runs it again.
    pub(super) run: fn(&Store) -> Result<()>,
}

/// Every migration, in order: `MIGRATIONS[i]` takes layout `i + 1` to `i + 2`; the last one
/// reaches `LAYOUT`.
pub(super) const MIGRATIONS: &[Migration] = &[Migration {
    to: 2,
    floor: 1,
    what: "index record keys by hash",
    run: index_keys_by_hash,
}];

/// Layout 1 to 2: the keys-by-hash index, which a directory from before it lacks.
fn index_keys_by_hash(store: &Store) -> Result<()> {
    state_digest::ensure_key_index(store)
}

/// A directory's layout bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Layouts {
    /// The layout its contents are in (`keys::META_LAYOUT_MIGRATED`).
    pub(super) migrated: u8,
    /// The oldest build layout that opens it (`keys::META_LAYOUT`).
    pub(super) floor: u8,
}

/// The compatibility floor of a directory migrated (or created) at `layout` by `steps`.
fn floor_of(steps: &[Migration], layout: u8) -> u8 {
    steps
        .iter()
        .filter(|m| m.to <= layout)
        .map(|m| m.floor)
        .fold(1, u8::max)
}

/// Stages what a directory this build creates holds of every migration's work: the layout
/// bytes, and the keys-by-hash index's marker (the index is kept from the first write).
pub(super) fn stage_created(wb: &mut crate::store::AtomicWrite<'_>) {
    wb.put_meta(keys::META_LAYOUT, &[floor_of(MIGRATIONS, LAYOUT)]);
    wb.put_meta(keys::META_LAYOUT_MIGRATED, &[LAYOUT]);
    wb.put_meta(keys::META_KEYHASH_INDEX, &[1]);
}

/// The layout bytes a directory holds (a directory from before the layout byte: layout 1).
pub(super) fn read(store: &Store) -> Result<Layouts> {
    let byte = |key: &[u8]| -> Result<Option<u8>> {
        match store.get_meta(key)? {
            None => Ok(None),
            Some(b) if b.len() == 1 => Ok(Some(b[0])),
            Some(b) => Err(Error::Corrupt {
                what: "metadata",
                key: key.to_vec(),
                detail: format!("{} bytes, expected 1", b.len()),
            }),
        }
    };
    let floor = byte(keys::META_LAYOUT)?.unwrap_or(1);
    let migrated = byte(keys::META_LAYOUT_MIGRATED)?.unwrap_or(floor);
    Ok(Layouts { migrated, floor })
}

/// The refusal of a directory whose floor is above `build`'s layout.
fn too_new(found: Layouts, build: u8) -> Error {
    tracing::error!(
        layout = found.migrated,
        floor = found.floor,
        build,
        "the data directory was written by a newer build: it needs a build of layout {} or newer",
        found.floor
    );
    Error::FutureVersion {
        what: "data directory",
        key: keys::META_LAYOUT.to_vec(),
        found: found.floor,
        supported: build,
    }
}

/// Refuses a directory this build cannot open if a newer build wrote it.
pub(super) fn check(found: Layouts, build: u8) -> Result<()> {
    if found.floor > build {
        return Err(too_new(found, build));
    }
    Ok(())
}

/// Called when the storage failed to open the directory at `path`: `Error::FutureVersion` if
/// its layout floor (read without writing) is above this build's, else `Ok` (the storage's
/// own error stands).
pub(super) fn refuse_if_newer(path: &Path) -> Result<()> {
    if !path.join("CURRENT").is_file() {
        return Ok(());
    }
    let opts = rocksdb::Options::default();
    let Ok(db) = rocksdb::DB::open_cf_for_read_only(&opts, path, [keys::CF_META], false) else {
        return Ok(());
    };
    let Some(meta) = db.cf_handle(keys::CF_META) else {
        return Ok(());
    };
    let byte = |key: &[u8]| {
        db.get_cf(meta, key)
            .ok()
            .flatten()
            .and_then(|b| b.first().copied())
    };
    let Some(floor) = byte(keys::META_LAYOUT) else {
        return Ok(());
    };
    let found = Layouts {
        migrated: byte(keys::META_LAYOUT_MIGRATED).unwrap_or(floor),
        floor,
    };
    check(found, LAYOUT)
}

/// Brings a directory holding `found` to `build`'s layout: runs `steps` from its layout up
/// (each ending with a synced write of its layout), or, for a directory a newer build
/// migrated that `build` may open (`check` first), lowers its layout to `build`'s so that the
/// newer build's migrations run again when it comes back. Returns the layouts it ends with.
pub(super) fn migrate(
    store: &Store,
    mut found: Layouts,
    build: u8,
    steps: &[Migration],
) -> Result<Layouts> {
    if found.migrated > build {
        store.put_meta_sync(keys::META_LAYOUT_MIGRATED, &[build])?;
        tracing::warn!(
            layout = found.migrated,
            floor = found.floor,
            build,
            "opened a data directory a newer build migrated (it leaves it readable from layout {}): \
             its migrations above layout {build} run again when a newer build opens it",
            found.floor
        );
        found.migrated = build;
        return Ok(found);
    }
    while found.migrated < build {
        let from = found.migrated;
        let step = steps
            .iter()
            .find(|m| m.to == from + 1)
            .ok_or(Error::InvalidOperation(
                "no migration from the data directory's layout",
            ))?;
        tracing::info!(
            from,
            to = step.to,
            what = step.what,
            "migrating the data directory"
        );
        let began = Instant::now();
        (step.run)(store)?;
        let floor = found.floor.max(step.floor);
        let mut wb = store.batch();
        wb.put_meta(keys::META_LAYOUT_MIGRATED, &[step.to]);
        wb.put_meta(keys::META_LAYOUT, &[floor]);
        wb.commit(true)?;
        tracing::info!(
            from,
            to = step.to,
            floor,
            what = step.what,
            elapsed_ms = began.elapsed().as_millis() as u64,
            "data directory migrated"
        );
        found = Layouts {
            migrated: step.to,
            floor,
        };
    }
    Ok(found)
}

impl Engine {
    /// The on-disk layout this build writes, and migrates older data directories to at open.
    pub const LAYOUT: u8 = LAYOUT;

    /// The layout of the data directory's contents (`Engine::LAYOUT` once this build opened
    /// it: migrated up to it, or down from a newer build's; see `layout_floor`).
    pub fn layout(&self) -> Result<u8> {
        Ok(read(&self.inner.store)?.migrated)
    }

    /// The oldest build layout that can open the data directory: builds of this layout or
    /// newer can be rolled back to without a restore; older ones refuse it.
    #[cfg(feature = "testing")]
    pub fn layout_floor(&self) -> Result<u8> {
        Ok(read(&self.inner.store)?.floor)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_migrations_take_every_layout_to_the_builds_in_order() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(usize::from(m.to), i + 2, "{}", m.what);
            assert!(m.floor >= 1 && m.floor <= m.to, "{}", m.what);
        }
        assert_eq!(MIGRATIONS.last().map_or(1, |m| m.to), LAYOUT);
    }

    /// How many times step `n` ran to its end in `store`.
    fn runs(store: &Store, n: u8) -> u8 {
        let key = format!("step{n}/runs");
        store.get_meta(key.as_bytes()).unwrap().map_or(0, |b| b[0])
    }

    /// A test step: half its work, then (if `fail_at` names it) a failure, the test's crash.
    fn step(n: u8, store: &Store) -> Result<()> {
        store.put_meta_sync(format!("step{n}/half").as_bytes(), &[1])?;
        if store.get_meta(b"fail_at")? == Some(vec![n]) {
            return Err(Error::InvalidOperation("interrupted"));
        }
        let ran = runs(store, n) + 1;
        store.put_meta_sync(format!("step{n}/runs").as_bytes(), &[ran])?;
        Ok(())
    }

    const STEPS: &[Migration] = &[
        Migration {
            to: 2,
            floor: 1,
            what: "two",
            run: |s| step(2, s),
        },
        Migration {
            to: 3,
            floor: 3,
            what: "three",
            run: |s| step(3, s),
        },
        Migration {
            to: 4,
            floor: 2,
            what: "four",
            run: |s| step(4, s),
        },
    ];

    fn layouts(migrated: u8, floor: u8) -> Layouts {
        Layouts { migrated, floor }
    }

    #[test]
    fn an_interrupted_migration_runs_again_and_the_ones_before_it_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.put_meta_sync(keys::META_LAYOUT, &[1]).unwrap();
        store.put_meta_sync(b"fail_at", &[3]).unwrap();
        let found = read(&store).unwrap();
        assert_eq!(found, layouts(1, 1));
        assert!(migrate(&store, found, 4, STEPS).is_err());
        // Step 2 is done and recorded; step 3 left half its work.
        assert_eq!(read(&store).unwrap(), layouts(2, 1));
        assert!(store.get_meta(b"step3/half").unwrap().is_some());
        assert_eq!((runs(&store, 2), runs(&store, 3)), (1, 0));
        store.put_meta_sync(b"fail_at", &[0]).unwrap();
        let found = read(&store).unwrap();
        assert_eq!(migrate(&store, found, 4, STEPS).unwrap(), layouts(4, 3));
        assert_eq!(read(&store).unwrap(), layouts(4, 3), "the floor only rises");
        let all = |s: &Store| [2, 3, 4].map(|n| runs(s, n));
        assert_eq!(all(&store), [1, 1, 1], "each step ran to its end once");
        // At the build's layout, nothing runs.
        assert_eq!(
            migrate(&store, layouts(4, 3), 4, STEPS).unwrap(),
            layouts(4, 3)
        );
        assert_eq!(all(&store), [1, 1, 1]);
    }

    #[test]
    fn an_older_build_opens_a_directory_down_to_its_floor_and_steps_it_down() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.put_meta_sync(keys::META_LAYOUT, &[2]).unwrap();
        store
            .put_meta_sync(keys::META_LAYOUT_MIGRATED, &[4])
            .unwrap();
        let newer = read(&store).unwrap();
        assert_eq!(newer, layouts(4, 2));
        // A build of layout 1 is below the floor: refused.
        assert!(matches!(
            check(newer, 1),
            Err(Error::FutureVersion {
                found: 2,
                supported: 1,
                ..
            })
        ));
        // A build of layout 2 opens it, and lowers its layout so that 3 and 4 run again.
        check(newer, 2).unwrap();
        assert_eq!(migrate(&store, newer, 2, STEPS).unwrap(), layouts(2, 2));
        assert_eq!(read(&store).unwrap(), layouts(2, 2));
        // The newer build, back, runs its migrations again.
        assert_eq!(
            migrate(&store, layouts(2, 2), 4, STEPS).unwrap(),
            layouts(4, 3)
        );
        assert_eq!([2, 3, 4].map(|n| runs(&store, n)), [0, 1, 1]);
    }

    #[test]
    fn a_created_directory_has_the_builds_layout_and_floor() {
        assert_eq!(floor_of(STEPS, 1), 1);
        assert_eq!(floor_of(STEPS, 2), 1);
        assert_eq!(floor_of(STEPS, 4), 3);
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut wb = store.batch();
        stage_created(&mut wb);
        wb.commit(true).unwrap();
        assert_eq!(
            read(&store).unwrap(),
            layouts(LAYOUT, floor_of(MIGRATIONS, LAYOUT))
        );
    }

    #[test]
    fn a_column_family_of_a_newer_layout_is_refused_as_a_newer_layout() {
        let dir = tempfile::tempdir().unwrap();
        drop(Engine::open(dir.path(), crate::Config::default()).unwrap());
        // What a newer build adding a column family would leave (with its floor, or without).
        let set_floor = |floor: u8| {
            let opts = crate::store::rocksdb_options();
            let names = rocksdb::DB::list_cf(&opts, dir.path()).unwrap();
            let mut db = rocksdb::DB::open_cf(&opts, dir.path(), &names).unwrap();
            if !names.iter().any(|n| n == "future") {
                db.create_cf("future", &opts).unwrap();
            }
            let meta = db.cf_handle(keys::CF_META).unwrap();
            db.put_cf(meta, keys::META_LAYOUT, [floor]).unwrap();
            db.put_cf(meta, keys::META_LAYOUT_MIGRATED, [LAYOUT + 1])
                .unwrap();
        };
        set_floor(LAYOUT + 1);
        match Engine::open(dir.path(), crate::Config::default()) {
            Err(Error::FutureVersion {
                found, supported, ..
            }) => assert_eq!((found, supported), (LAYOUT + 1, LAYOUT)),
            Err(other) => panic!("expected FutureVersion, got {other}"),
            Ok(_) => panic!("opened"),
        }
        // Its floor says it is not newer: the storage's own error stands.
        set_floor(LAYOUT);
        assert!(matches!(
            Engine::open(dir.path(), crate::Config::default()),
            Err(Error::Storage(_))
        ));
    }
}
