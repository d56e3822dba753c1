//! The RocksDB handle and the few operations the engine needs from it.

use super::keys::{self, CF_KEYHASH, CF_LOG, CF_META, CF_RECORDS};
use crate::model::OriginId;
use rocksdb::{
    BlockBasedOptions, ColumnFamilyDescriptor, DBPinnableSlice, Direction, IteratorMode, Options,
    ReadOptions, WriteBatch, WriteOptions, DB,
};
use std::path::Path;
use std::sync::Arc;

/// Options shared by the engine and by the raw-RocksDB reference in the benchmarks.
pub fn rocksdb_options() -> Options {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.increase_parallelism(2);
    opts.set_max_background_jobs(2);
    opts.set_bytes_per_sync(1 << 20);
    let mut table = BlockBasedOptions::default();
    table.set_bloom_filter(10.0, false);
    table.set_block_cache(&rocksdb::Cache::new_lru_cache(64 << 20));
    opts.set_block_based_table_factory(&table);
    // A bloom filter over the memtable too: writes first look up the key, and most are new.
    opts.set_memtable_whole_key_filtering(true);
    opts.set_memtable_prefix_bloom_ratio(0.05);
    opts
}

/// A key and its value as RocksDB hands them out.
pub type KeyValue = (Box<[u8]>, Box<[u8]>);

/// The engine's RocksDB database with its three column families.
#[derive(Clone)]
pub struct Store {
    db: Arc<DB>,
}

impl Store {
    /// Opens (creating if missing) the database at `path`.
    pub fn open(path: &Path) -> Result<Store, rocksdb::Error> {
        let opts = rocksdb_options();
        let cfs = [CF_RECORDS, CF_LOG, CF_META, CF_KEYHASH]
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, rocksdb_options()));
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        Ok(Store { db: Arc::new(db) })
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        // The three families are created at open; a missing one is a programming error.
        #[allow(clippy::expect_used)]
        self.db
            .cf_handle(name)
            .expect("column family opened at start")
    }

    /// The stored bytes of a record.
    pub fn get_record(&self, key: &[u8]) -> Result<Option<DBPinnableSlice<'_>>, rocksdb::Error> {
        self.db.get_pinned_cf(self.cf(CF_RECORDS), key)
    }

    /// The stored bytes of several records in one batched lookup; `keys` sorted ascending.
    pub fn get_records(
        &self,
        keys: &[&[u8]],
    ) -> Result<Vec<Option<DBPinnableSlice<'_>>>, rocksdb::Error> {
        self.db
            .batched_multi_get_cf(self.cf(CF_RECORDS), keys.iter().copied(), true)
            .into_iter()
            .collect()
    }

    /// `get_records`, with a result per key: one key's read error (a block RocksDB finds
    /// corrupt) does not fail the others.
    pub fn get_records_each(
        &self,
        keys: &[&[u8]],
    ) -> Vec<Result<Option<DBPinnableSlice<'_>>, rocksdb::Error>> {
        self.db
            .batched_multi_get_cf(self.cf(CF_RECORDS), keys.iter().copied(), true)
    }

    /// A metadata value.
    pub fn get_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, rocksdb::Error> {
        self.db.get_cf(self.cf(CF_META), key)
    }

    /// Every metadata entry whose key starts with `prefix`.
    pub fn meta_with_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, rocksdb::Error> {
        let mut ro = ReadOptions::default();
        if let Some(end) = keys::prefix_end(prefix) {
            ro.set_iterate_upper_bound(end);
        }
        let mode = IteratorMode::From(prefix, Direction::Forward);
        self.db
            .iterator_cf_opt(self.cf(CF_META), ro, mode)
            .collect()
    }

    /// Up to `limit` metadata entries whose key starts with `prefix`, after the key `after`
    /// (from the first when `None`), in key order.
    pub fn meta_page(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, rocksdb::Error> {
        let mut ro = ReadOptions::default();
        if let Some(end) = keys::prefix_end(prefix) {
            ro.set_iterate_upper_bound(end);
        }
        let start = match after {
            Some(after) => {
                let mut next = after.to_vec();
                next.push(0);
                next
            }
            None => prefix.to_vec(),
        };
        let mode = IteratorMode::From(&start, Direction::Forward);
        self.db
            .iterator_cf_opt(self.cf(CF_META), ro, mode)
            .take(limit)
            .collect()
    }

    /// Writes one metadata value durably.
    pub fn put_meta_sync(&self, key: &[u8], value: &[u8]) -> Result<(), rocksdb::Error> {
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.put_cf_opt(self.cf(CF_META), key, value, &wo)
    }

    /// The stored bytes of a log entry.
    pub fn get_log(&self, origin: OriginId, seq: u64) -> Result<Option<Vec<u8>>, rocksdb::Error> {
        self.db.get_cf(self.cf(CF_LOG), keys::log_key(origin, seq))
    }

    /// Sequence numbers of `origin`'s log entries in `[from, to]`, ascending.
    pub fn log_seqs(
        &self,
        origin: OriginId,
        from: u64,
        to: u64,
    ) -> Result<Vec<u64>, rocksdb::Error> {
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(keys::log_key(origin, to.saturating_add(1)).to_vec());
        let start = keys::log_key(origin, from);
        let mode = IteratorMode::From(&start, Direction::Forward);
        let mut out = Vec::new();
        for item in self.db.iterator_cf_opt(self.cf(CF_LOG), ro, mode) {
            let (k, _) = item?;
            match keys::parse_log_key(&k) {
                Some((o, s)) if o == origin && s <= to => out.push(s),
                _ => break,
            }
        }
        Ok(out)
    }

    /// The highest sequence number in `origin`'s log (0 if none).
    pub fn last_log_seq(&self, origin: OriginId) -> Result<u64, rocksdb::Error> {
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(keys::log_key(origin, 0).to_vec());
        let mut it = self.db.raw_iterator_cf_opt(self.cf(CF_LOG), ro);
        it.seek_for_prev(keys::log_key(origin, u64::MAX));
        it.status()?;
        Ok(it
            .key()
            .and_then(keys::parse_log_key)
            .filter(|(o, _)| *o == origin)
            .map_or(0, |(_, s)| s))
    }

    /// Records in `[start, end)` in key order, as raw bytes.
    pub fn records_from(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
    ) -> impl Iterator<Item = Result<KeyValue, rocksdb::Error>> + '_ {
        let mut ro = ReadOptions::default();
        if let Some(end) = end {
            ro.set_iterate_upper_bound(end.to_vec());
        }
        let mode = IteratorMode::From(start, Direction::Forward);
        self.db.iterator_cf_opt(self.cf(CF_RECORDS), ro, mode)
    }

    /// The keys whose hash is `hash` (nearly always one), from the keys-by-hash index.
    pub fn keys_with_hash(&self, hash: u64) -> Result<Vec<Vec<u8>>, rocksdb::Error> {
        let prefix = hash.to_be_bytes();
        let mut ro = ReadOptions::default();
        if let Some(end) = keys::prefix_end(&prefix) {
            ro.set_iterate_upper_bound(end);
        }
        let mode = IteratorMode::From(&prefix, Direction::Forward);
        let mut out = Vec::new();
        for item in self.db.iterator_cf_opt(self.cf(CF_KEYHASH), ro, mode) {
            let (k, _) = item?;
            if let Some(key) = k.strip_prefix(&prefix[..]) {
                out.push(key.to_vec());
            }
        }
        Ok(out)
    }

    /// A consistent view of the records as of now.
    pub fn records_snapshot(&self) -> RecordSnapshot<'_> {
        RecordSnapshot {
            store: self,
            snapshot: self.db.snapshot(),
        }
    }

    /// `origin`'s log entries from sequence `from` on, in order.
    pub fn log_entries_of(
        &self,
        origin: OriginId,
        from: u64,
    ) -> impl Iterator<Item = Result<KeyValue, rocksdb::Error>> + '_ {
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(keys::log_key(origin, u64::MAX).to_vec());
        let start = keys::log_key(origin, from);
        self.db.iterator_cf_opt(
            self.cf(CF_LOG),
            ro,
            IteratorMode::From(&start, Direction::Forward),
        )
    }

    /// Every log entry, in (origin, sequence) order.
    pub fn log_entries(&self) -> impl Iterator<Item = Result<KeyValue, rocksdb::Error>> + '_ {
        self.db.iterator_cf(self.cf(CF_LOG), IteratorMode::Start)
    }

    /// A batch builder bound to this store's column families.
    pub fn batch(&self) -> AtomicWrite<'_> {
        AtomicWrite {
            store: self,
            batch: WriteBatch::default(),
        }
    }

    /// Syncs the write-ahead log: every write so far survives a power loss.
    pub fn sync_wal(&self) -> Result<(), rocksdb::Error> {
        self.db.flush_wal(true)
    }

    /// Flushes memtables and the WAL to disk (used at close and by tests).
    pub fn flush(&self) -> Result<(), rocksdb::Error> {
        self.db.flush_wal(true)?;
        for cf in [CF_RECORDS, CF_LOG, CF_META, CF_KEYHASH] {
            self.db.flush_cf(self.cf(cf))?;
        }
        Ok(())
    }

    /// Writes a consistent copy of the database to `dir` (which must not exist): hard links
    /// to its table files where the file system allows, and what the WAL holds.
    pub fn checkpoint(&self, dir: &Path) -> Result<(), rocksdb::Error> {
        rocksdb::checkpoint::Checkpoint::new(&self.db)?.create_checkpoint(dir)
    }

    /// The live size of a column family's data in bytes (SST plus memtable estimate).
    pub fn cf_size_estimate(&self, cf: &str) -> Result<u64, rocksdb::Error> {
        let cf = self.cf(cf);
        let sst = self
            .db
            .property_int_value_cf(cf, "rocksdb.live-sst-files-size")?
            .unwrap_or(0);
        let mem = self
            .db
            .property_int_value_cf(cf, "rocksdb.cur-size-all-mem-tables")?
            .unwrap_or(0);
        Ok(sst + mem)
    }

    /// Overwrites a record's raw bytes, bypassing the engine (for corruption tests and repair).
    pub fn put_raw_record(&self, key: &[u8], bytes: &[u8]) -> Result<(), rocksdb::Error> {
        self.db.put_cf(self.cf(CF_RECORDS), key, bytes)
    }

    /// Overwrites a log entry's raw bytes, bypassing the engine (for corruption tests).
    pub fn put_raw_log(
        &self,
        origin: OriginId,
        seq: u64,
        bytes: &[u8],
    ) -> Result<(), rocksdb::Error> {
        self.db
            .put_cf(self.cf(CF_LOG), keys::log_key(origin, seq), bytes)
    }
}

/// An atomic write across the three column families.
pub struct AtomicWrite<'a> {
    store: &'a Store,
    batch: WriteBatch,
}

impl AtomicWrite<'_> {
    /// Stages a record.
    pub fn put_record(&mut self, key: &[u8], bytes: &[u8]) {
        self.batch.put_cf(self.store.cf(CF_RECORDS), key, bytes);
    }

    /// Stages a log entry.
    pub fn put_log(&mut self, origin: OriginId, seq: u64, bytes: &[u8]) {
        self.batch
            .put_cf(self.store.cf(CF_LOG), keys::log_key(origin, seq), bytes);
    }

    /// Stages the removal of `origin`'s log entries in `[from, to]`.
    pub fn delete_log_range(&mut self, origin: OriginId, from: u64, to: u64) {
        let (a, b) = (
            keys::log_key(origin, from),
            keys::log_key(origin, to.saturating_add(1)),
        );
        self.batch.delete_range_cf(self.store.cf(CF_LOG), a, b);
    }

    /// Stages the removal of a record.
    pub fn delete_record(&mut self, key: &[u8]) {
        self.batch.delete_cf(self.store.cf(CF_RECORDS), key);
    }

    /// Stages `key`'s entry in the keys-by-hash index (a record created).
    pub fn index_key(&mut self, key: &[u8]) {
        self.batch
            .put_cf(self.store.cf(CF_KEYHASH), keys::keyhash_key(key), []);
    }

    /// Stages the removal of `key`'s entry from the keys-by-hash index (a record removed).
    pub fn unindex_key(&mut self, key: &[u8]) {
        self.batch
            .delete_cf(self.store.cf(CF_KEYHASH), keys::keyhash_key(key));
    }

    /// Stages the removal of a metadata value.
    pub fn delete_meta(&mut self, key: &[u8]) {
        self.batch.delete_cf(self.store.cf(CF_META), key);
    }

    /// Stages a metadata value.
    pub fn put_meta(&mut self, key: &[u8], bytes: &[u8]) {
        self.batch.put_cf(self.store.cf(CF_META), key, bytes);
    }

    /// Commits the batch atomically; `sync` waits for fsync (group-committed by RocksDB).
    pub fn commit(self, sync: bool) -> Result<(), rocksdb::Error> {
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.store.db.write_opt(self.batch, &wo)
    }
}

/// The records as they were when `Store::records_snapshot` was called.
pub struct RecordSnapshot<'a> {
    store: &'a Store,
    snapshot: rocksdb::SnapshotWithThreadMode<'a, DB>,
}

impl RecordSnapshot<'_> {
    /// Calls `f` on every record of the snapshot, in key order.
    pub fn for_each(&self, mut f: impl FnMut(&[u8], &[u8])) -> Result<(), rocksdb::Error> {
        let cf = self.store.cf(CF_RECORDS);
        for item in self.snapshot.iterator_cf(cf, IteratorMode::Start) {
            let (k, v) = item?;
            f(&k, &v);
        }
        Ok(())
    }
}
