//! `Engine`: the embedded, thread-safe local API over the model and the store.
//!
//! The engine's state (`Inner`) is private to this module; each job has its file:
//! `open.rs` (open and recovery), `epoch.rs` (member, origin and epochs), `write.rs` (the
//! write path), `reads.rs` (reads and scans), `visibility.rs` (the applied vector and token
//! waits), `remote.rs` (joins by hand), `replica_store.rs` (the replication core's storage
//! seam), `compaction.rs` (log truncation and tombstone collection), `state_digest.rs` (the
//! anti-entropy summary), `entry_cache.rs` (what replication ships without reading RocksDB),
//! `faults.rs` (stored bytes found unusable), `commit_order.rs` (writes numbered where they
//! commit), `declared_lost.rs` (what the applied vector covers without the records),
//! `migrations.rs` (the on-disk layout, moved forward at open).

use crate::batch::Batch;
use crate::config::{Config, KEY_BYTES_MAX};
use crate::error::{Error, Result};
use crate::model::codec::{self, MAX_DEPTH};
use crate::model::{
    ApplyError, CausalToken, Dot, Expiry, Hlc, HybridClock, Kind, MemberId, Op, OriginId, Record,
    Stamp, Value, VersionVector,
};
use crate::read::{LwwValue, MapView, Read, ReadValue, Siblings};
use crate::replication::incoming::{Incoming, Theirs};
use crate::store::{keys, LogEntry, Store};
use entry_cache::{CachedEntry, EntryKeys, RecordStates, StateCell, ENTRY_KEY_OVERHEAD};
use epoch::OriginState;
use std::borrow::Cow;
use std::hash::BuildHasher;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

mod commit_order;
mod compaction;
mod declared_lost;
mod disk_space;
mod entry_cache;
mod epoch;
mod expiry_gate;
mod expiry_sweep;
mod faults;
mod feed;
mod migrations;
mod named_keys;
mod open;
mod reads;
mod remote;
mod replica_store;
mod replication;
mod requests;
mod settings;
mod state_digest;
mod subscriptions;
mod visibility;
mod write;

pub(crate) use write::{millis, unix_millis};

pub use epoch::OriginStatus;
pub use faults::FaultReport;
pub use feed::{Feed, FEEDS_MAX, FEED_BATCH_BYTES, FEED_BATCH_ENTRIES, FEED_NAME_BYTES_MAX};
pub use replication::Replication;
pub use requests::{Once, REQUEST_TAGS_MAX, REQUEST_TAG_AGE_MS};
pub use subscriptions::Subscription;

/// Writers touching the same key serialise on one of this many locks (many: a batch of a
/// hundred keys holds a hundred of them, and concurrent batches should rarely share one).
const STRIPES: usize = 1 << 16;
/// Widest read context accepted from a caller.
const CONTEXT_WIDTH_MAX: usize = 4096;
/// Every this many sequence numbers, the committed contiguous prefix is recorded, so that the
/// search for numbers handed out but never committed starts there after a crash.
const CONTIGUOUS_CHECKPOINT: u64 = 1_024;
/// On-disk layout this build writes and migrates older directories to (`migrations.rs`).
const LAYOUT: u8 = 2;

/// An embedded Meridian replica: a RocksDB directory plus this replica's identity and clock.
///
/// Cheap to clone; all clones share one database. `Send + Sync`.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    /// Who this replica is (its name and incarnation in the cluster).
    member: MemberId,
    config: Config,
    /// The origin writes are numbered in, and whether they may be; writers hold it for
    /// reading, an epoch change for writing (`epoch.rs`).
    gate: RwLock<OriginState>,
    /// Local writes' numbering, held while a write takes its number and is written
    /// (`commit_order.rs`).
    numbering: Mutex<commit_order::Numbering>,
    /// Group fsyncs of the log for `Durability::Sync` writes.
    wal: Mutex<commit_order::WalSync>,
    wal_synced: Condvar,
    /// The current origin's sequence numbers committed so far.
    own: Mutex<Frontier>,
    /// Per remote origin, the highest sequence applied in order (mirrors `meta`).
    applied: Mutex<VersionVector>,
    /// Per origin, the log floor (entries at or below it are gone from this replica's log).
    floors: Mutex<VersionVector>,
    /// What the applied vector covers that the records do not reflect (`declared_lost.rs`).
    exceptions: Mutex<crate::replication::exceptions::ExceptionSet>,
    /// Origins whose log holds entries beyond a missing number: origin -> highest held.
    stranded: Mutex<std::collections::BTreeMap<OriginId, u64>>,
    /// Serialises the application of remote log entries.
    apply_lock: Mutex<()>,
    clock: Mutex<HybridClock>,
    /// Bumped (and waiters woken) whenever the applied vector advances.
    applied_generation: Mutex<u64>,
    applied_changed: Condvar,
    /// Callers inside `wait_covers` (no wake-up, no syscall, when there are none).
    applied_waiters: AtomicUsize,
    /// Whether the caches below fill (once replication is attached).
    caching: AtomicBool,
    /// Keys of recent log entries, for replication to ship them without reading the log.
    entry_keys: Mutex<EntryKeys>,
    /// Own entries up to here reached every other member (`ReplicaStore::release_shipped`).
    released: Mutex<u64>,
    /// Current states of recently written records (kept equal to RocksDB's under the stripes).
    states: RecordStates,
    stripes: Box<[Mutex<()>]>,
    poisoned: AtomicBool,
    /// Free space on the data directory's file system (`disk_space.rs`).
    disk: disk_space::DiskSpace,
    /// Stored items found unusable since open.
    faults: Mutex<crate::FaultReport>,
    /// Records found damaged and not yet replaced by a peer's state (`faults.rs`).
    damaged: Mutex<std::collections::BTreeSet<Vec<u8>>>,
    /// The summary of every record anti-entropy reads (built on first use).
    digest: state_digest::StateDigest,
    /// What the tombstone pass looks at next (`compaction.rs`).
    tombstones: Mutex<compaction::TombstoneWork>,
    /// Keys joins with peers' states created, the latest of them (for anti-entropy rounds).
    created: Mutex<crate::replication::created_keys::CreatedKeys>,
    /// The keys the log names above the floors (`named_keys.rs`), for the tombstone pass.
    named_keys: Mutex<named_keys::NamedKeys>,
    /// Where the next expiry sweep goes on (`expiry_sweep.rs`); `None` from the start.
    expiry_sweep_from: Mutex<Option<Vec<u8>>>,
    /// A member was last seen on a release that does not read expiries: writes setting one
    /// are refused (`expiry_gate.rs`).
    expiry_refused: std::sync::atomic::AtomicBool,
    /// Called after every local commit (`Replication::on_commit`: runtimes wake their
    /// replicators with it).
    commit_subscribers: Arc<subscriptions::Subscribers>,
    /// Called whenever the applied vector advances (`Engine::on_applied`: runtimes wake token
    /// waits with it).
    applied_subscribers: Arc<subscriptions::Subscribers>,
    /// Set by `close_as_crashed`: the run does not end cleanly.
    crashed: AtomicBool,
    /// Request tags kept (`requests.rs`).
    request_tags: AtomicUsize,
    /// Why this process is fenced, once it is (`Engine::fence`).
    fenced: std::sync::OnceLock<String>,
    /// Serialises updates of the named feeds' positions (`feed.rs`).
    feed_positions: Mutex<()>,
    /// Restored from a backup and not yet reconciled by a peer's state transfer: what a peer's
    /// snapshot must cover (`keys::META_RECONCILING`, `ReplicaStore::reconciling`).
    reconciling: Mutex<Option<VersionVector>>,
}

/// Sequence numbers of the current origin committed out of order, folded into a contiguous
/// prefix.
#[derive(Debug)]
pub(crate) struct Frontier {
    /// The origin they are numbers of (changes with the epoch, under both locks).
    pub(crate) origin: OriginId,
    pub(crate) contiguous: u64,
    pub(crate) ahead: std::collections::BTreeSet<u64>,
}

impl Frontier {
    /// Records `seq` as committed; returns the contiguous prefix if it crossed a checkpoint.
    fn commit(&mut self, seq: u64) -> Option<u64> {
        // I1: each number is committed once, above the contiguous prefix.
        debug_assert!(seq > self.contiguous && !self.ahead.contains(&seq));
        let before = self.contiguous;
        self.ahead.insert(seq);
        while self.ahead.remove(&(self.contiguous + 1)) {
            self.contiguous += 1;
        }
        (self.contiguous / CONTIGUOUS_CHECKPOINT > before / CONTIGUOUS_CHECKPOINT)
            .then_some(self.contiguous)
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn read_lock<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn write_lock<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

impl Engine {
    /// The origin this replica's writes are numbered in (its dots' replica): the member id in
    /// epoch 0, another id in each later epoch (see `member_id`).
    pub fn origin_id(&self) -> OriginId {
        lock(&self.inner.own).origin
    }

    /// Who this replica is in its cluster (fixed for the life of its data directory).
    pub fn member_id(&self) -> MemberId {
        self.inner.member
    }

    /// The configuration the engine was opened with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The highest sequence number this replica has assigned.
    pub(crate) fn last_seq(&self) -> u64 {
        lock(&self.inner.numbering).next_seq - 1
    }

    /// Starts keeping recent entries' keys and records' current states in memory (up to
    /// `Config::entry_cache_bytes`), so that replication ships fresh writes without reading
    /// them back; the replication runtime calls it. An engine that does not replicate does not
    /// pay for it. Writes committed before the call are read from disk when shipped.
    pub(crate) fn enable_replication_cache(&self) {
        self.inner.caching.store(true, Ordering::SeqCst);
    }

    /// Whether the current state of `key` is held in memory for shipping (an entry that not
    /// every peer has acknowledged still needs it): a diagnostic of the shipping caches.
    #[cfg(feature = "testing")]
    pub fn holds_shipping_state(&self, key: &[u8]) -> bool {
        self.inner.states.get(key).is_some()
    }

    /// Calls `wake` whenever the applied vector advances (a local commit, a peer's entries
    /// applied) until the subscription is dropped, so an asynchronous caller can wait for a
    /// token without a thread (check `covers` again when woken). Any number may subscribe.
    /// It runs on the writing thread: keep it short, and do not subscribe or drop a
    /// subscription from inside it (the list is held while the functions run).
    pub fn on_applied(&self, wake: impl Fn() + Send + Sync + 'static) -> Subscription {
        self.inner.applied_subscribers.subscribe(Arc::new(wake))
    }

    /// Flushes RocksDB's memory tables and write-ahead log to disk.
    pub fn flush(&self) -> Result<()> {
        Ok(self.inner.store.flush()?)
    }

    /// The underlying store (tools and tests of this crate's family: feature `testing`).
    #[cfg(feature = "testing")]
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    // ---- writes ----------------------------------------------------------------------------

    /// Records the states just committed by local writes, for keys whose stripes the caller
    /// holds (replication mostly ships what this replica wrote itself); returns their cells.
    pub(crate) fn cache_states<'a>(
        &self,
        written: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Arc<[Arc<StateCell>]> {
        written
            .into_iter()
            .map(|(key, bytes)| self.inner.states.insert(key, bytes))
            .collect()
    }

    /// Drops the cached states of keys just changed by a peer's states, whose stripes the
    /// caller holds (cheaper than caching them; they are read from RocksDB if relayed).
    pub(crate) fn uncache_states<'a>(&self, changed: impl IntoIterator<Item = &'a [u8]>) {
        for key in changed {
            self.inner.states.remove(key);
        }
    }

    /// Marks `key` in `wb` as holding expiries when its new state `bytes` has any: the sweep
    /// (`expiry_sweep.rs`) reclaims what expires.
    pub(crate) fn mark_expiring(
        &self,
        wb: &mut crate::store::AtomicWrite<'_>,
        key: &[u8],
        bytes: &[u8],
    ) {
        if bytes.first() == Some(&codec::EXPIRY_FORMAT) {
            wb.put_meta(&keys::expiring_key(key), &[]);
        }
    }

    /// Marks `key` as a new tombstone in `wb`: compaction reclaims it once it is stable.
    pub(crate) fn mark_tombstone(&self, wb: &mut crate::store::AtomicWrite<'_>, key: &[u8]) {
        wb.put_meta(&keys::tombstone_key(key), &[]);
        lock(&self.inner.tombstones).marked(key);
    }

    pub(crate) fn commit(&self, wb: crate::store::AtomicWrite<'_>) -> Result<()> {
        let sync = self.inner.config.durability == crate::config::Durability::Sync;
        // After a failed write the on-disk state is unknown: refuse further writes.
        wb.commit(sync).map_err(|e| self.poison(e))
    }

    /// Locks the stripes of `keys` (sorted and distinct) in stripe order.
    pub(crate) fn lock_keys(&self, keys: &[&[u8]]) -> Vec<MutexGuard<'_, ()>> {
        let hasher = foldhash::fast::FixedState::default();
        let stripe = |k: &[u8]| hasher.hash_one(k) as usize % STRIPES;
        if let [key] = keys {
            return vec![lock(&self.inner.stripes[stripe(key)])];
        }
        let mut stripes: Vec<usize> = keys.iter().map(|k| stripe(k)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        stripes
            .into_iter()
            .map(|i| lock(&self.inner.stripes[i]))
            .collect()
    }

    // ---- reads -----------------------------------------------------------------------------

    // ---- state exchange --------------------------------------------------------------------
}

/// A scan's row: a key and what it holds.
pub type Row = (Vec<u8>, Read);

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: the run ended cleanly (flushed), unless it crashed or a
        // storage failure left its state unknown.
        if !self.crashed.load(Ordering::SeqCst) && !self.poisoned.load(Ordering::SeqCst) {
            epoch::end_run(&self.store, &self.config, self.digest.to_bytes());
        }
    }
}

/// Refuses a key no write or read takes: empty, or longer than `KEY_BYTES_MAX`.
pub(crate) fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidKey("empty"));
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(Error::InvalidKey("longer than 64 KiB"));
    }
    Ok(())
}
