//! Local writes are numbered where they commit: a write takes its sequence number and writes
//! its batch to RocksDB under one lock, so the write-ahead log holds this replica's writes in
//! sequence order and any prefix of it (what a power loss or a checkpoint keeps) holds a
//! contiguous run of numbers. `Durability::Sync` writes then wait for an fsync of the log
//! outside that lock, one fsync serving every write made before it started (group sync).

use super::*;

/// The numbering of local writes (under `Inner::numbering`).
#[derive(Debug)]
pub(crate) struct Numbering {
    /// The sequence number the next local write takes in the current origin.
    pub(crate) next_seq: u64,
    /// Local writes written to the log so far, in every epoch (what a sync must cover).
    pub(crate) written: u64,
}

/// Fsyncs of the write-ahead log shared by the writers waiting for one (under `Inner::wal`).
#[derive(Debug, Default)]
pub(crate) struct WalSync {
    /// Local writes known to be on disk (`Numbering::written` when the last sync started).
    synced: u64,
    /// Whether a writer is syncing now (the others wait for it).
    syncing: bool,
}

impl Engine {
    /// Numbers a local write and writes it: `build` gets the sequence number and returns the
    /// batch (or an error, which spends no number). Returns the number and what `build` made
    /// besides the batch. The batch is written unsynced; under `Durability::Sync` the caller
    /// then waits in `sync_written` before the write counts as committed.
    pub(crate) fn commit_numbered<'a, T>(
        &'a self,
        build: impl FnOnce(u64) -> Result<(crate::store::AtomicWrite<'a>, T)>,
    ) -> Result<(u64, u64, T)> {
        let inner = &*self.inner;
        let mut numbering = lock(&inner.numbering);
        let seq = numbering.next_seq;
        let (wb, made) = build(seq)?;
        wb.commit(false).map_err(|e| self.poison(e))?;
        numbering.next_seq = seq + 1;
        numbering.written += 1;
        Ok((seq, numbering.written, made))
    }

    /// Under `Durability::Sync`, returns once the log is on disk up to local write number
    /// `written` (from `commit_numbered`); one fsync covers every write made before it began.
    pub(crate) fn sync_written(&self, written: u64) -> Result<()> {
        let inner = &*self.inner;
        if inner.config.durability != crate::config::Durability::Sync {
            return Ok(());
        }
        let mut wal = lock(&inner.wal);
        loop {
            if wal.synced >= written {
                return Ok(());
            }
            if wal.syncing {
                wal = inner
                    .wal_synced
                    .wait(wal)
                    .unwrap_or_else(|e| e.into_inner());
                continue;
            }
            wal.syncing = true;
            // Everything written before this point is in the log the fsync covers.
            let target = lock(&inner.numbering).written;
            drop(wal);
            let result = inner.store.sync_wal();
            wal = lock(&inner.wal);
            wal.syncing = false;
            if result.is_ok() {
                wal.synced = wal.synced.max(target);
            }
            inner.wal_synced.notify_all();
            result.map_err(|e| self.poison(e))?;
        }
    }

    /// A storage write failed: the on-disk state is unknown, so the engine refuses writes.
    pub(crate) fn poison(&self, e: rocksdb::Error) -> Error {
        self.inner.poisoned.store(true, Ordering::SeqCst);
        tracing::error!(error = %e, member = %self.inner.member, "storage write failed; engine poisoned");
        Error::from(e)
    }
}
