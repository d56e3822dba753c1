//! A summary of every record kept up to date as records change, for anti-entropy: the largest
//! foldable IBLT over the items (key hash, state hash) and the number of records. Built by one
//! scan of a RocksDB snapshot the first time anti-entropy needs it; after that every record
//! write, join and removal updates it, so a round reads no record (`Iblt::fold` answers any
//! size asked for). The keys-by-hash column family turns the key hashes a peer asks for into
//! keys.
//!
//! Consistency: every path that changes records holds the engine's gate for reading while it
//! commits and updates the summary; the build takes it for writing to start (and a summary
//! read copies the table under it), so the table always equals the records at a point in time.
//! A record found changed behind the engine's back (damaged bytes) makes the summary stale:
//! the next use builds it again from the records as they are, so that a peer's good state
//! replaces the damaged one through the usual difference.

use crate::model::digest::{key_hash, state_hash};
use crate::replication::iblt::Iblt;
use crate::replication::{SharedIblt, SUMMARY_SUB_LOG};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::OnceLock;

/// Version byte of a summary kept across a clean shutdown.
const SAVED_FORMAT: u8 = 2;

/// Bytes before the cells in a kept summary: format, record count, sub-table size.
const SAVED_HEADER_BYTES: usize = 1 + 8 + 4;

/// The built summary.
struct Table {
    cells: SharedIblt,
    records: AtomicI64,
}

/// Makes sure the keys-by-hash index covers every record: a directory created by a build that
/// keeps it has it from the start (and the marker); one from before it is indexed once, here
/// (the migration to layout 2, `migrations.rs`). Idempotent: an interrupted run indexes again.
pub(crate) fn ensure_key_index(store: &crate::store::Store) -> crate::Result<()> {
    use crate::store::keys::META_KEYHASH_INDEX;
    if store.get_meta(META_KEYHASH_INDEX)?.is_some() {
        return Ok(());
    }
    let mut wb = store.batch();
    let mut staged = 0usize;
    let mut indexed = 0u64;
    for item in store.records_from(b"", None) {
        let (key, _) = item?;
        wb.index_key(&key);
        staged += 1;
        if staged == 10_000 {
            std::mem::replace(&mut wb, store.batch()).commit(false)?;
            indexed += staged as u64;
            staged = 0;
        }
    }
    // The marker goes with the last chunk, synced (the WAL syncs the earlier chunks with it).
    wb.put_meta(META_KEYHASH_INDEX, &[1]);
    wb.commit(true)?;
    indexed += staged as u64;
    tracing::info!(
        records = indexed,
        "indexed keys by hash (a directory from an earlier build)"
    );
    Ok(())
}

impl crate::Engine {
    /// Builds the anti-entropy summary: starts it while no record changes (under the gate),
    /// then adds every record of a snapshot taken at that moment; changes made meanwhile
    /// update it as they commit.
    pub(crate) fn build_summary(&self) -> crate::Result<()> {
        let inner = &*self.inner;
        let (snapshot, started) = {
            let _gate = crate::engine::write_lock(&inner.gate);
            (inner.store.records_snapshot(), inner.digest.start())
        };
        if started {
            let began = std::time::Instant::now();
            snapshot.for_each(|key, bytes| inner.digest.add(key, bytes))?;
            tracing::info!(
                elapsed_ms = began.elapsed().as_millis() as u64,
                "anti-entropy summary built from the records"
            );
        }
        Ok(())
    }
}

/// The summary, empty until built.
#[derive(Default)]
pub(crate) struct StateDigest {
    table: OnceLock<Table>,
    /// It no longer equals the records (one changed behind the engine's back): build again.
    stale: std::sync::atomic::AtomicBool,
}

impl StateDigest {
    /// Whether the summary is built (and so must be kept up to date).
    pub(crate) fn is_built(&self) -> bool {
        self.table.get().is_some()
    }

    /// Whether it must be built (again) before it is read.
    pub(crate) fn needs_build(&self) -> bool {
        !self.is_built() || self.stale.load(Ordering::SeqCst)
    }

    /// The records changed behind the engine's back: the next read builds it again.
    pub(crate) fn mark_stale(&self) {
        self.stale.store(true, Ordering::SeqCst);
    }

    /// Starts an empty summary (or empties a stale one); the caller then adds every record of
    /// a snapshot taken while no record changes (see the module documentation).
    pub(crate) fn start(&self) -> bool {
        if let Some(t) = self.table.get() {
            if !self.stale.swap(false, Ordering::SeqCst) {
                return false;
            }
            t.cells.clear();
            t.records.store(0, Ordering::Relaxed);
            return true;
        }
        self.stale.store(false, Ordering::SeqCst);
        self.table
            .set(Table {
                cells: SharedIblt::new(SUMMARY_SUB_LOG),
                records: AtomicI64::new(0),
            })
            .is_ok()
    }

    /// `key` went from the state whose hash is `old` to the one whose hash is `new` (`None`:
    /// no record); see `model::digest::state_hash`.
    pub(crate) fn changed(&self, key: &[u8], old: Option<u64>, new: Option<u64>) {
        let Some(t) = self.table.get() else { return };
        let kh = key_hash(key);
        if let Some(old) = old {
            t.cells.toggle((kh, old), -1);
            t.records.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(new) = new {
            t.cells.toggle((kh, new), 1);
            t.records.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Adds a record found by the build's scan.
    pub(crate) fn add(&self, key: &[u8], bytes: &[u8]) {
        self.changed(key, None, Some(state_hash(bytes)));
    }

    /// The summary's bytes, to keep across a clean shutdown (`None` before it is built).
    pub(crate) fn to_bytes(&self) -> Option<Vec<u8>> {
        let t = self.table.get()?;
        let mut out = Vec::with_capacity(SAVED_HEADER_BYTES + t.cells.saved_len());
        out.push(SAVED_FORMAT);
        out.extend_from_slice(&t.records.load(Ordering::Relaxed).to_le_bytes());
        out.extend_from_slice(&SUMMARY_SUB_LOG.to_le_bytes());
        t.cells.save(&mut out);
        Some(out)
    }

    /// Takes a summary kept by `to_bytes` (the records have not changed since); false if the
    /// bytes are not one (the summary is then built when first needed).
    pub(crate) fn load(&self, bytes: &[u8]) -> bool {
        if bytes.len() < SAVED_HEADER_BYTES
            || bytes[0] != SAVED_FORMAT
            || bytes[9..13] != SUMMARY_SUB_LOG.to_le_bytes()
        {
            return false;
        }
        let Some(cells) = SharedIblt::load(SUMMARY_SUB_LOG, &bytes[SAVED_HEADER_BYTES..]) else {
            return false;
        };
        let mut count = [0u8; 8];
        count.copy_from_slice(&bytes[1..9]);
        let records = AtomicI64::new(i64::from_le_bytes(count));
        self.table.set(Table { cells, records }).is_ok()
    }

    /// How many records there are (0 before the summary is built).
    pub(crate) fn records(&self) -> u64 {
        self.table.get().map_or(0, |t| {
            u64::try_from(t.records.load(Ordering::Relaxed)).unwrap_or(0)
        })
    }

    /// A copy of the summary folded to `cells` cells, and the number of records (`None`
    /// before it is built).
    pub(crate) fn read(&self, cells: usize) -> Option<(Iblt, u64)> {
        let t = self.table.get()?;
        let full: Iblt = t.cells.snapshot();
        let records = u64::try_from(t.records.load(Ordering::Relaxed)).unwrap_or(0);
        Some((full.fold(cells), records))
    }
}
