//! `Engine`: the embedded, thread-safe local API over the model and the store.

use crate::batch::Batch;
use crate::config::{Config, KEY_BYTES_MAX};
use crate::entry_cache::{EntryKeys, RecordStates, StateCell, ENTRY_KEY_OVERHEAD};
use crate::epoch::{self, OriginState};
use crate::error::{Error, Result};
use crate::model::codec::{self, MAX_DEPTH};
use crate::model::{
    ApplyError, CausalToken, Dot, HybridClock, Kind, Op, Record, ReplicaId, Stamp, Value,
    VersionVector,
};
use crate::read::{LwwValue, MapView, Read, ReadValue, Siblings};
use crate::replica_store::{Incoming, Theirs};
use crate::store::{keys, LogEntry, Store};
use std::borrow::Cow;
use std::hash::BuildHasher;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Writers touching the same key serialise on one of this many locks (many: a batch of a
/// hundred keys holds a hundred of them, and concurrent batches should rarely share one).
const STRIPES: usize = 1 << 16;
/// Widest read context accepted from a caller.
const CONTEXT_WIDTH_MAX: usize = 4096;
/// Every this many sequence numbers, the committed contiguous prefix is recorded, so that the
/// search for numbers handed out but never committed starts there after a crash.
const CONTIGUOUS_CHECKPOINT: u64 = 1_024;
/// On-disk layout version written at creation.
const LAYOUT: u8 = 1;

/// An embedded Meridian replica: a RocksDB directory plus this replica's identity and clock.
///
/// Cheap to clone; all clones share one database. `Send + Sync`.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) store: Store,
    /// Who this replica is (its name and incarnation in the cluster).
    pub(crate) member: ReplicaId,
    pub(crate) config: Config,
    /// The origin writes are numbered in, and whether they may be; writers hold it for
    /// reading, an epoch change for writing (`epoch.rs`).
    pub(crate) gate: RwLock<OriginState>,
    pub(crate) next_seq: AtomicU64,
    /// The current origin's sequence numbers committed so far.
    pub(crate) own: Mutex<Frontier>,
    /// Per remote origin, the highest sequence applied in order (mirrors `meta`).
    pub(crate) applied: Mutex<VersionVector>,
    /// Per origin, the log floor (entries at or below it are gone from this replica's log).
    pub(crate) floors: Mutex<VersionVector>,
    /// Serialises the application of remote log entries.
    pub(crate) apply_lock: Mutex<()>,
    pub(crate) clock: Mutex<HybridClock>,
    /// Bumped (and waiters woken) whenever the applied vector advances.
    applied_generation: Mutex<u64>,
    applied_changed: Condvar,
    /// Callers inside `wait_covers` (no wake-up, no syscall, when there are none).
    applied_waiters: AtomicUsize,
    /// Whether the caches below fill (once replication is attached).
    caching: AtomicBool,
    /// Keys of recent log entries, for replication to ship them without reading the log.
    pub(crate) entry_keys: Mutex<EntryKeys>,
    /// Own entries up to here reached every other member (`ReplicaStore::release_shipped`).
    pub(crate) released: Mutex<u64>,
    /// Current states of recently written records (kept equal to RocksDB's under the stripes).
    pub(crate) states: RecordStates,
    stripes: Box<[Mutex<()>]>,
    pub(crate) poisoned: AtomicBool,
    /// Stored items found unusable since open.
    pub(crate) faults: Mutex<crate::FaultReport>,
    /// The summary of every record anti-entropy reads (built on first use).
    pub(crate) digest: crate::state_digest::StateDigest,
    /// Tombstones marked so far (a compaction with nothing new to look at is skipped).
    pub(crate) tombstone_marks: AtomicU64,
    /// The stability, the marks and the pending tombstones of the last compaction.
    pub(crate) last_compaction: Mutex<(VersionVector, u64, u64)>,
    /// Called after every local commit (the runtime wakes its replicator with it).
    commit_hook: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
    /// Called whenever the applied vector advances (the runtime wakes token waits with it).
    applied_hook: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
    /// Set by `close_as_crashed`: the run does not end cleanly.
    crashed: AtomicBool,
}

/// Sequence numbers of the current origin committed out of order, folded into a contiguous
/// prefix.
#[derive(Debug)]
pub(crate) struct Frontier {
    /// The origin they are numbers of (changes with the epoch, under both locks).
    pub(crate) origin: ReplicaId,
    pub(crate) contiguous: u64,
    pub(crate) ahead: std::collections::BTreeSet<u64>,
}

impl Frontier {
    /// Records `seq` as committed; returns the contiguous prefix if it crossed a checkpoint.
    fn commit(&mut self, seq: u64) -> Option<u64> {
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
    /// Opens the replica stored at `path`, creating it (with a fresh replica id) if missing.
    pub fn open(path: impl AsRef<Path>, config: Config) -> Result<Engine> {
        let path = path.as_ref();
        crate::limits::check(config.value_bytes_max, config.record_bytes_max)
            .map_err(|e| Error::InvalidConfig(e.to_string()))?;
        let store = Store::open(path)?;
        let (member, created) = match store.get_meta(keys::META_REPLICA_ID)? {
            Some(bytes) => {
                let raw: [u8; 8] = bytes.as_slice().try_into().map_err(|_| Error::Corrupt {
                    what: "metadata",
                    key: keys::META_REPLICA_ID.to_vec(),
                    detail: format!("{} bytes, expected 8", bytes.len()),
                })?;
                (ReplicaId(u64::from_be_bytes(raw)), false)
            }
            None => {
                let id = match config.replica_id {
                    Some(id) => id,
                    None => ReplicaId(new_replica_id(&*config.random)),
                };
                store.put_meta_sync(keys::META_LAYOUT, &[LAYOUT])?;
                store.put_meta_sync(keys::META_REPLICA_ID, &id.0.to_be_bytes())?;
                (id, true)
            }
        };
        if let Some(layout) = store.get_meta(keys::META_LAYOUT)? {
            if layout.first().copied().unwrap_or(0) > LAYOUT {
                return Err(Error::FutureVersion {
                    what: "database layout",
                    key: keys::META_LAYOUT.to_vec(),
                    found: layout[0],
                    supported: LAYOUT,
                });
            }
        }
        if config.replica_id.is_some_and(|id| id != member) {
            return Err(Error::InvalidOperation(
                "the directory holds another replica than configured",
            ));
        }
        let origin = epoch::open_origin(&store, member, created, &config)?;
        let replica = origin.id;
        let previous = epoch::begin_run(&store, &config)?;
        crate::state_digest::ensure_key_index(&store, created)?;
        let applied = load_vector(&store, keys::META_APPLIED_PREFIX)?;
        let floors = load_vector(&store, keys::META_FLOOR_PREFIX)?;
        let contiguous = store
            .get_meta(keys::META_OWN_CONTIGUOUS)?
            .and_then(|b| <[u8; 8]>::try_from(&b[..]).ok())
            .map_or(0, u64::from_be_bytes);
        let from = floors.get(replica).max(contiguous);
        let last = fill_sequence_gaps(&store, replica, from, config.durability)?;
        let clock = HybridClock::new(config.clock_skew_ms_max);
        // A few bytes of keys per entry; the rest of the budget for record states.
        let entry_keys = Mutex::new(EntryKeys::new(config.entry_cache_bytes / 8));
        let states = RecordStates::new(config.entry_cache_bytes - config.entry_cache_bytes / 8);
        let stripes = (0..STRIPES).map(|_| Mutex::new(())).collect();
        tracing::debug!(member = %member, origin = %replica, epoch = origin.epoch, last_seq = last, path = %path.display(), "engine open");
        let engine = Engine {
            inner: Arc::new(Inner {
                store,
                member,
                config,
                gate: RwLock::new(origin),
                next_seq: AtomicU64::new(last + 1),
                own: Mutex::new(Frontier {
                    origin: replica,
                    contiguous: last,
                    ahead: Default::default(),
                }),
                applied: Mutex::new(applied),
                floors: Mutex::new(floors),
                apply_lock: Mutex::new(()),
                clock: Mutex::new(clock),
                caching: AtomicBool::new(false),
                entry_keys,
                released: Mutex::new(0),
                states,
                applied_generation: Mutex::new(0),
                applied_changed: Condvar::new(),
                applied_waiters: AtomicUsize::new(0),
                stripes,
                poisoned: AtomicBool::new(false),
                faults: Mutex::new(Default::default()),
                digest: Default::default(),
                tombstone_marks: AtomicU64::new(0),
                last_compaction: Mutex::new((VersionVector::new(), u64::MAX, 0)),
                commit_hook: std::sync::OnceLock::new(),
                applied_hook: std::sync::OnceLock::new(),
                crashed: AtomicBool::new(false),
            }),
        };
        if let Some(summary) = &previous.summary {
            if engine.inner.digest.load(summary) {
                tracing::debug!("anti-entropy summary kept by the last clean shutdown");
            }
        }
        if let Some(reason) = previous.lost_tail {
            // Numbers of the lost tail may be in clients' tokens: never numbered again.
            engine.start_new_epoch(&reason)?;
        }
        Ok(engine)
    }

    /// Drops this handle as a process crash would: the run is not marked as ended cleanly
    /// (the simulator's crashes; the next open treats the run as interrupted).
    pub fn close_as_crashed(self) {
        self.inner.crashed.store(true, Ordering::SeqCst);
    }

    /// The origin this replica's writes are numbered in (its dots' replica): the member id in
    /// epoch 0, another id in each later epoch (see `member_id`).
    pub fn replica_id(&self) -> ReplicaId {
        lock(&self.inner.own).origin
    }

    /// Who this replica is in its cluster (fixed for the life of its data directory).
    pub fn member_id(&self) -> ReplicaId {
        self.inner.member
    }

    /// The configuration the engine was opened with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The highest sequence number this replica has assigned.
    pub fn last_seq(&self) -> u64 {
        self.inner.next_seq.load(Ordering::SeqCst) - 1
    }

    /// Starts keeping recent entries' keys and records' current states in memory (up to
    /// `Config::entry_cache_bytes`), so that replication ships fresh writes without reading
    /// them back; the replication runtime calls it. An engine that does not replicate does not
    /// pay for it. Writes committed before the call are read from disk when shipped.
    pub fn enable_replication_cache(&self) {
        self.inner.caching.store(true, Ordering::SeqCst);
    }

    /// Registers the function called after every local commit; only the first call takes
    /// effect (returns whether this one did).
    pub fn set_commit_hook(&self, hook: Box<dyn Fn() + Send + Sync>) -> bool {
        self.inner.commit_hook.set(hook).is_ok()
    }

    /// Registers the function called whenever the applied vector advances (a local commit,
    /// a peer's entries applied), so an asynchronous caller can wait for a token without a
    /// thread; only the first call takes effect (returns whether this one did). It runs on
    /// the writing thread: keep it short.
    pub fn set_applied_hook(&self, hook: Box<dyn Fn() + Send + Sync>) -> bool {
        self.inner.applied_hook.set(hook).is_ok()
    }

    /// The underlying store (for replication and tools in this crate's family).
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    // ---- writes ----------------------------------------------------------------------------

    /// Multi-value register write that supersedes every sibling this replica holds.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<CausalToken> {
        self.apply(
            key,
            Op::Put {
                value: value.to_vec(),
                context: None,
            },
        )
    }

    /// Multi-value register write that supersedes exactly what `context` (from a read) saw.
    /// The context is a claim: entries beyond what this replica has seen of the key (its
    /// record's context joined with its applied vector) are lowered to it, so a write never
    /// supersedes what it could not have read here.
    pub fn put_with(
        &self,
        key: &[u8],
        value: &[u8],
        context: &VersionVector,
    ) -> Result<CausalToken> {
        self.apply(
            key,
            Op::Put {
                value: value.to_vec(),
                context: Some(context.clone()),
            },
        )
    }

    /// Last-writer-wins register write.
    pub fn lww_set(&self, key: &[u8], value: &[u8]) -> Result<CausalToken> {
        self.apply(
            key,
            Op::LwwSet {
                value: value.to_vec(),
            },
        )
    }

    /// Counter increment (negative to decrement).
    pub fn counter_add(&self, key: &[u8], delta: i64) -> Result<CausalToken> {
        self.apply(key, Op::CounterAdd { delta })
    }

    /// Adds elements to a set.
    pub fn set_add(&self, key: &[u8], elems: &[&[u8]]) -> Result<CausalToken> {
        self.apply(
            key,
            Op::SetAdd {
                elems: elems.iter().map(|e| e.to_vec()).collect(),
            },
        )
    }

    /// Removes elements from a set (those this replica sees; concurrent adds survive).
    pub fn set_remove(&self, key: &[u8], elems: &[&[u8]]) -> Result<CausalToken> {
        self.apply(
            key,
            Op::SetRemove {
                elems: elems.iter().map(|e| e.to_vec()).collect(),
            },
        )
    }

    /// Applies `op` to map field `field` (nested maps: `op` is itself a `MapUpdate`).
    pub fn map_update(&self, key: &[u8], field: &[u8], op: Op) -> Result<CausalToken> {
        self.apply(
            key,
            Op::MapUpdate {
                field: field.to_vec(),
                op: Box::new(op),
            },
        )
    }

    /// Removes a map field.
    pub fn map_remove(&self, key: &[u8], field: &[u8]) -> Result<CausalToken> {
        self.apply(
            key,
            Op::MapRemove {
                field: field.to_vec(),
            },
        )
    }

    /// Deletes the key: a causal tombstone of everything this replica sees under it.
    pub fn delete(&self, key: &[u8]) -> Result<CausalToken> {
        self.apply(key, Op::Delete)
    }

    /// Applies one operation.
    pub fn apply(&self, key: &[u8], op: Op) -> Result<CausalToken> {
        check_key(key)?;
        self.check_op(&op, 1)?;
        self.write_checked(&[key], std::iter::once(op))
    }

    /// Applies a batch atomically: one dot, one log entry, one RocksDB write.
    pub fn write(&self, batch: Batch) -> Result<CausalToken> {
        if batch.ops.is_empty() {
            return Err(Error::InvalidOperation("empty batch"));
        }
        if batch.ops.len() > crate::limits::BATCH_OPS_MAX {
            return Err(Error::BatchTooLarge {
                len: batch.ops.len(),
                max: crate::limits::BATCH_OPS_MAX,
            });
        }
        for (key, op) in &batch.ops {
            check_key(key)?;
            self.check_op(op, 1)?;
        }
        let (keys, ops): (Vec<Vec<u8>>, Vec<Op>) = batch.ops.into_iter().unzip();
        let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        self.write_checked(&keys, ops)
    }

    pub(crate) fn check_writable(&self) -> Result<()> {
        if self.inner.poisoned.load(Ordering::SeqCst) {
            return Err(Error::Poisoned);
        }
        Ok(())
    }

    /// The write path for validated operations, `keys[i]` being the key of the i-th operation.
    fn write_checked(
        &self,
        keys: &[&[u8]],
        ops: impl IntoIterator<Item = Op>,
    ) -> Result<CausalToken> {
        let inner = &*self.inner;
        if inner.poisoned.load(Ordering::SeqCst) {
            return Err(Error::Poisoned);
        }
        // Held until the write is committed and visible: an epoch change waits for it.
        let origin = read_lock(&inner.gate);
        if !origin.confirmed {
            return Err(Error::Recovering(origin.waiting_for()));
        }
        let distinct: Cow<'_, [&[u8]]> = if keys.len() == 1 {
            Cow::Borrowed(keys)
        } else {
            let mut d = keys.to_vec();
            d.sort_unstable();
            d.dedup();
            Cow::Owned(d)
        };
        let _guards = self.lock_keys(&distinct);
        let summarised = inner.digest.is_built();
        let loaded = self.load_many_hashed(&distinct, summarised)?;
        let before: Vec<(bool, Option<u64>)> =
            loaded.iter().map(|(r, h)| (r.is_some(), *h)).collect();
        let mut records: Vec<Record> = loaded
            .into_iter()
            .map(|(r, _)| r.unwrap_or_default())
            .collect();

        let seq = inner.next_seq.fetch_add(1, Ordering::SeqCst);
        let dot = Dot::new(origin.id, seq);
        let marker = lock(&inner.clock).tick(inner.config.clock.now_ms());
        let stamp = Stamp { dot, marker };
        let encoded = match self.apply_and_encode(keys, ops, &distinct, &mut records, stamp) {
            Ok(encoded) => encoded,
            Err(e) => {
                // The sequence number is spent: log it as empty so the origin stays contiguous.
                self.commit_empty(origin.id, seq)?;
                return Err(e);
            }
        };
        let mut wb = inner.store.batch();
        for ((key, bytes), (record, (existed, _))) in distinct
            .iter()
            .zip(&encoded)
            .zip(records.iter().zip(&before))
        {
            wb.put_record(key, bytes);
            if !existed {
                wb.index_key(key);
            }
            if record.is_bottom() {
                // A new tombstone: compaction reclaims it once it is stable.
                self.mark_tombstone(&mut wb, key);
            }
        }
        wb.put_log(origin.id, seq, &LogEntry::encode_keys(&distinct));
        self.commit(wb)?;
        if summarised {
            for ((key, bytes), (_, old)) in distinct.iter().zip(&encoded).zip(&before) {
                inner
                    .digest
                    .changed(key, *old, Some(crate::model::digest::state_hash(bytes)));
            }
        }
        if inner.caching.load(Ordering::Relaxed) {
            // Cached with the stripes still held and before the sequence becomes visible.
            let written = distinct.iter().copied();
            let entry = self.cache_states(written.zip(encoded.iter().map(Vec::as_slice)));
            let size = distinct.iter().map(|k| k.len() + ENTRY_KEY_OVERHEAD).sum();
            lock(&inner.entry_keys).insert((origin.id, seq), entry, size);
        }
        let checkpoint = lock(&inner.own).commit(seq);
        self.applied_advanced();
        self.checkpoint_contiguous(checkpoint);
        if let Some(hook) = inner.commit_hook.get() {
            hook();
        }
        Ok(CausalToken::of_dot(dot))
    }

    /// Applies `ops` (one per entry of `keys`) to `records` (one per entry of the sorted
    /// `distinct`) and encodes the results in `distinct` order.
    fn apply_and_encode(
        &self,
        keys: &[&[u8]],
        ops: impl IntoIterator<Item = Op>,
        distinct: &[&[u8]],
        records: &mut [Record],
        stamp: Stamp,
    ) -> Result<Vec<Vec<u8>>> {
        let mut applied: Option<VersionVector> = None;
        for (key, mut op) in keys.iter().zip(ops) {
            let i = distinct
                .binary_search(key)
                .map_err(|_| Error::InvalidOperation("batch key lost"))?;
            if op.has_context() {
                // A caller's context is a claim: it supersedes only what this replica has seen
                // of the key (its record's context and every write applied here). Stored as
                // given, a context naming a replica's future writes would make them vanish
                // here when they arrive, and the regions would never converge.
                let mut seen = applied.get_or_insert_with(|| self.applied()).clone();
                seen.join(&records[i].context());
                if op.clamp_contexts(&seen) {
                    metrics::counter!("meridian_client_contexts_clamped_total").increment(1);
                }
            }
            records[i].apply(op, stamp).map_err(|e| match e {
                ApplyError::WrongType {
                    existing,
                    requested,
                } => Error::WrongType {
                    key: key.to_vec(),
                    existing,
                    requested,
                },
                ApplyError::CounterOverflow => Error::CounterOverflow { key: key.to_vec() },
                ApplyError::Invalid(why) => Error::InvalidOperation(why),
            })?;
        }
        // The entry as replication ships it must fit: refused now, not stuck later.
        let max = self.inner.config.record_bytes_max;
        let mut out = Vec::with_capacity(records.len());
        for (key, record) in distinct.iter().zip(records.iter()) {
            let bytes =
                codec::encode_record(record).map_err(|e| Error::from_codec("record", key, e))?;
            out.push(bytes);
        }
        let len =
            crate::limits::wire_bytes(distinct.iter().zip(&out).map(|(k, v)| (*k, v.as_slice())));
        if len > max {
            return Err(match distinct {
                [key] => Error::RecordTooLarge {
                    key: key.to_vec(),
                    len,
                    max,
                },
                _ => Error::BatchTooLarge { len, max },
            });
        }
        Ok(out)
    }

    fn commit_empty(&self, origin: ReplicaId, seq: u64) -> Result<()> {
        let mut wb = self.inner.store.batch();
        wb.put_log(origin, seq, &LogEntry::default().encode());
        self.commit(wb)?;
        let checkpoint = lock(&self.inner.own).commit(seq);
        self.applied_advanced();
        self.checkpoint_contiguous(checkpoint);
        Ok(())
    }

    fn checkpoint_contiguous(&self, contiguous: Option<u64>) {
        if let Some(c) = contiguous {
            let mut wb = self.inner.store.batch();
            wb.put_meta(keys::META_OWN_CONTIGUOUS, &c.to_be_bytes());
            // Best effort: without it the next open searches from further back.
            let _ = wb.commit(false);
        }
    }

    /// Per origin, the highest sequence number applied with all earlier ones (this replica's
    /// own entry: its committed writes). A causal token covered by it is visible here.
    pub fn applied(&self) -> VersionVector {
        let mut vv = lock(&self.inner.applied).clone();
        let own = lock(&self.inner.own);
        vv.add(Dot::new(own.origin, own.contiguous));
        vv
    }

    /// Whether every write named by `token` is visible in this replica.
    pub fn covers(&self, token: &CausalToken) -> bool {
        token.is_covered_by(&self.applied())
    }

    /// Waits until every write named by `token` is visible here (local commits and
    /// replication wake the wait), or `timeout` passes; returns whether it is visible.
    pub fn wait_covers(&self, token: &CausalToken, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut generation = lock(&self.inner.applied_generation);
        // Counted before the first check: an advance that misses the count happens before
        // that check, which then sees it.
        self.inner.applied_waiters.fetch_add(1, Ordering::SeqCst);
        let _counted = WaiterCount(&self.inner.applied_waiters);
        loop {
            // Checked with the generation lock held: an advance after this check bumps the
            // generation under the same lock, so its wake-up cannot be missed.
            if self.covers(token) {
                return true;
            }
            let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) else {
                return false;
            };
            generation = match self.inner.applied_changed.wait_timeout(generation, left) {
                Ok((g, _)) => g,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

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

    /// Wakes `wait_covers` callers after the applied vector advanced.
    pub(crate) fn applied_advanced(&self) {
        if let Some(hook) = self.inner.applied_hook.get() {
            hook();
        }
        if self.inner.applied_waiters.load(Ordering::SeqCst) == 0 {
            return;
        }
        *lock(&self.inner.applied_generation) += 1;
        self.inner.applied_changed.notify_all();
    }

    /// Marks `key` as a new tombstone in `wb`: compaction reclaims it once it is stable.
    pub(crate) fn mark_tombstone(&self, wb: &mut crate::store::AtomicWrite<'_>, key: &[u8]) {
        wb.put_meta(&keys::tombstone_key(key), &[]);
        self.inner.tombstone_marks.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn commit(&self, wb: crate::store::AtomicWrite<'_>) -> Result<()> {
        let sync = self.inner.config.durability == crate::config::Durability::Sync;
        wb.commit(sync).map_err(|e| {
            // After a failed write the on-disk state is unknown: refuse further writes.
            self.inner.poisoned.store(true, Ordering::SeqCst);
            tracing::error!(error = %e, member = %self.inner.member, "storage write failed; engine poisoned");
            Error::Storage(e)
        })
    }

    fn check_op(&self, op: &Op, depth: usize) -> Result<()> {
        let max = self.inner.config.value_bytes_max;
        let fits = |len: usize| {
            if len > max {
                Err(Error::ValueTooLarge { len, max })
            } else {
                Ok(())
            }
        };
        if depth >= MAX_DEPTH {
            return Err(Error::InvalidOperation("maps nested too deeply"));
        }
        match op {
            Op::Put { value, context } => {
                if context
                    .as_ref()
                    .is_some_and(|c| c.len() > CONTEXT_WIDTH_MAX)
                {
                    return Err(Error::InvalidOperation("read context too wide"));
                }
                fits(value.len())
            }
            Op::LwwSet { value } => fits(value.len()),
            Op::SetAdd { elems } | Op::SetRemove { elems } => {
                elems.iter().try_for_each(|e| fits(e.len()))?;
                fits(elems.iter().map(Vec::len).sum())
            }
            Op::MapUpdate { field, op } => {
                fits(field.len())?;
                if matches!(**op, Op::Delete) {
                    return Err(Error::InvalidOperation(
                        "a map update cannot carry a delete",
                    ));
                }
                self.check_op(op, depth + 1)
            }
            Op::MapRemove { field } => fits(field.len()),
            Op::CounterAdd { .. } | Op::Delete => Ok(()),
        }
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

    /// The decoded records of `keys` (sorted, distinct) in one batched lookup.
    /// `load_many`, with the state hash of each stored record when `hash` is set (the summary
    /// for anti-entropy needs what a record was to take it out).
    fn load_many_hashed(
        &self,
        keys: &[&[u8]],
        hash: bool,
    ) -> Result<Vec<(Option<Record>, Option<u64>)>> {
        let one = |key: &[u8], bytes: Option<&[u8]>| -> Result<(Option<Record>, Option<u64>)> {
            match bytes {
                Some(b) => Ok((
                    Some(decode_stored(key, b)?),
                    hash.then(|| crate::model::digest::state_hash(b)),
                )),
                None => Ok((None, None)),
            }
        };
        if let [key] = keys {
            let stored = self.inner.store.get_record(key)?;
            return Ok(vec![one(key, stored.as_deref())?]);
        }
        let stored = self.inner.store.get_records(keys)?;
        keys.iter()
            .zip(stored)
            .map(|(key, bytes)| one(key, bytes.as_deref()))
            .collect()
    }

    pub(crate) fn load(&self, key: &[u8]) -> Result<Option<Record>> {
        self.inner
            .store
            .get_record(key)?
            .map(|bytes| decode_stored(key, &bytes))
            .transpose()
    }

    /// Everything under `key`; `None` if absent or deleted.
    pub fn read(&self, key: &[u8]) -> Result<Option<Read>> {
        check_key(key)?;
        Ok(self.load(key)?.and_then(read_of))
    }

    fn typed(&self, key: &[u8], kind: Kind) -> Result<Option<ReadValue>> {
        check_key(key)?;
        let Some(mut record) = self.load(key)? else {
            return Ok(None);
        };
        if let Some(read) = record.values.remove(&kind).and_then(ReadValue::from_value) {
            return Ok(Some(read));
        }
        let existing = record.present().next().map(Value::kind);
        match existing {
            Some(existing) => Err(Error::WrongType {
                key: key.to_vec(),
                existing,
                requested: kind,
            }),
            None => Ok(None),
        }
    }

    /// A multi-value register: its siblings and the context to write back with.
    pub fn get(&self, key: &[u8]) -> Result<Option<Siblings>> {
        Ok(match self.typed(key, Kind::Register)? {
            Some(ReadValue::Register(s)) => Some(s),
            _ => None,
        })
    }

    /// A last-writer-wins register.
    pub fn get_lww(&self, key: &[u8]) -> Result<Option<LwwValue>> {
        Ok(match self.typed(key, Kind::Lww)? {
            Some(ReadValue::Lww(v)) => Some(v),
            _ => None,
        })
    }

    /// A counter's value.
    pub fn get_counter(&self, key: &[u8]) -> Result<Option<i64>> {
        Ok(match self.typed(key, Kind::Counter)? {
            Some(ReadValue::Counter(v)) => Some(v),
            _ => None,
        })
    }

    /// A set's elements in byte order.
    pub fn get_set(&self, key: &[u8]) -> Result<Option<Vec<Vec<u8>>>> {
        Ok(match self.typed(key, Kind::Set)? {
            Some(ReadValue::Set(v)) => Some(v),
            _ => None,
        })
    }

    /// A map's fields.
    pub fn get_map(&self, key: &[u8]) -> Result<Option<MapView>> {
        Ok(match self.typed(key, Kind::Map)? {
            Some(ReadValue::Map(v)) => Some(v),
            _ => None,
        })
    }

    /// Keys starting with `prefix`, in order, at most `limit` of them (deleted keys skipped).
    pub fn scan_prefix(&self, prefix: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Read)>> {
        let end = keys::prefix_end(prefix);
        self.scan(prefix, end.as_deref(), limit)
    }

    /// Keys in `[start, end)` (`end = None`: to the last key), at most `limit` of them.
    pub fn scan_range(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Read)>> {
        self.scan(start, end, limit)
    }

    /// One page of the keys starting with `prefix` after `after` (exclusive), in order: at most
    /// `limit` rows and about `bytes_max` bytes of records, at least one row; and whether more
    /// follow.
    pub fn scan_prefix_page(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        bytes_max: usize,
    ) -> Result<(Vec<Row>, bool)> {
        let end = keys::prefix_end(prefix);
        let start = match after {
            Some(a) if a >= prefix => {
                let mut next = a.to_vec();
                next.push(0); // the smallest key after `a`
                next
            }
            _ => prefix.to_vec(),
        };
        self.scan_bounded(&start, end.as_deref(), limit, bytes_max)
    }

    fn scan(&self, start: &[u8], end: Option<&[u8]>, limit: usize) -> Result<Vec<(Vec<u8>, Read)>> {
        Ok(self.scan_bounded(start, end, limit, usize::MAX)?.0)
    }

    /// Rows in `[start, end)` up to `limit` rows and about `bytes_max` bytes (at least one);
    /// and whether stored records remain beyond (a deleted key among them reads as nothing).
    fn scan_bounded(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
        bytes_max: usize,
    ) -> Result<(Vec<Row>, bool)> {
        let mut out = Vec::new();
        let mut bytes_seen = 0usize;
        for item in self.inner.store.records_from(start, end) {
            if out.len() >= limit || (bytes_seen >= bytes_max && !out.is_empty()) {
                return Ok((out, true));
            }
            let (key, bytes) = item?;
            bytes_seen += key.len() + bytes.len();
            match decode_stored(&key, &bytes) {
                Ok(record) => {
                    if let Some(read) = read_of(record) {
                        out.push((key.into_vec(), read));
                    }
                }
                // One unreadable record does not hide the others: skipped and reported.
                Err(e @ (Error::Corrupt { .. } | Error::FutureVersion { .. })) => {
                    self.note_fault(crate::faults::Stored::Record, &key, &e)
                }
                Err(e) => return Err(e),
            }
        }
        Ok((out, false))
    }

    // ---- state exchange --------------------------------------------------------------------

    /// The encoded state of `key` (tombstones included), to hand to another replica.
    pub fn export(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        check_key(key)?;
        Ok(self.inner.store.get_record(key)?.map(|b| b.to_vec()))
    }

    /// Merges a record state from another replica. Idempotent, commutative; returns whether the
    /// local state changed.
    pub fn apply_remote(&self, key: &[u8], state: &[u8]) -> Result<bool> {
        let inner = &*self.inner;
        self.check_writable()?;
        check_key(key)?;
        let max = inner.config.record_bytes_max;
        if state.len() > max {
            return Err(Error::RecordTooLarge {
                key: key.to_vec(),
                len: state.len(),
                max,
            });
        }
        let remote =
            codec::decode_record(state).map_err(|e| Error::from_codec("remote record", key, e))?;
        // Gate before the apply lock (the order every path takes them in).
        let _gate = read_lock(&inner.gate);
        let _serial = lock(&inner.apply_lock);
        let _guard = self.lock_keys(&[key]);
        let seen = self.applied();
        let mut wb = inner.store.batch();
        // Re-encoded, not stored as given: only states that came through this codec (a peer's
        // frames) are kept as their bytes.
        let incoming = Incoming {
            key,
            state: Theirs::Decoded(remote),
        };
        let changed = self.stage_joins(vec![incoming], &seen, &mut wb, false, Some(max), None)?;
        if changed.is_empty() {
            return Ok(false);
        }
        self.commit(wb)?;
        self.uncache_states(changed.iter().copied());
        Ok(true)
    }
}

/// A scan's row: a key and what it holds.
pub type Row = (Vec<u8>, Read);

/// The record stored under `key`, decoded.
fn decode_stored(key: &[u8], bytes: &[u8]) -> Result<Record> {
    codec::decode_record(bytes).map_err(|e| Error::from_codec("record", key, e))
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: the run ended cleanly (flushed), unless it crashed or a
        // storage failure left its state unknown.
        if !self.crashed.load(Ordering::SeqCst) && !self.poisoned.load(Ordering::SeqCst) {
            epoch::end_run(&self.store, &self.config, self.digest.to_bytes());
        }
    }
}

/// Uncounts a `wait_covers` caller when it returns.
struct WaiterCount<'a>(&'a AtomicUsize);

impl Drop for WaiterCount<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn read_of(record: Record) -> Option<Read> {
    let token = CausalToken(record.context());
    let values: Vec<ReadValue> = record
        .values
        .into_values()
        .filter_map(ReadValue::from_value)
        .collect();
    (!values.is_empty()).then_some(Read { values, token })
}

pub(crate) fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidKey("empty"));
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(Error::InvalidKey("longer than 64 KiB"));
    }
    Ok(())
}

fn new_replica_id(random: &dyn crate::RandomSource) -> u64 {
    loop {
        let id = random.next_u64();
        if id != 0 {
            return id;
        }
    }
}

/// Reads a per-origin vector stored under `prefix` in the metadata.
fn load_vector(store: &Store, prefix: &[u8]) -> Result<VersionVector> {
    let mut vv = VersionVector::new();
    for (k, v) in store.meta_with_prefix(prefix)? {
        let origin = k
            .get(prefix.len()..)
            .and_then(|b| <[u8; 8]>::try_from(b).ok());
        match (origin, <[u8; 8]>::try_from(&v[..]).ok()) {
            (Some(o), Some(s)) => vv.add(Dot::new(
                ReplicaId(u64::from_be_bytes(o)),
                u64::from_be_bytes(s),
            )),
            _ => {
                return Err(Error::Corrupt {
                    what: "metadata",
                    key: k.to_vec(),
                    detail: "expected an 8-byte origin and an 8-byte sequence".into(),
                })
            }
        }
    }
    Ok(vv)
}

/// Finds this replica's last sequence number and logs empty entries for any number above
/// `floor` (below it the log is known complete or reclaimed) that was handed out but never
/// committed before a crash, so that the origin's log stays contiguous. A writer stalled
/// between taking its number and committing can leave a hole arbitrarily far below the last
/// number, hence the search from the recorded contiguous prefix rather than a fixed window.
fn fill_sequence_gaps(
    store: &Store,
    replica: ReplicaId,
    floor: u64,
    durability: crate::config::Durability,
) -> Result<u64> {
    // Entries at or below the floor were reclaimed: the sequence goes on above it.
    let last = store.last_log_seq(replica)?.max(floor);
    if last == floor {
        return Ok(last);
    }
    let from = floor + 1;
    let present = store.log_seqs(replica, from, last)?;
    let missing: Vec<u64> = (from..=last)
        .filter(|s| present.binary_search(s).is_err())
        .collect();
    if !missing.is_empty() {
        let mut wb = store.batch();
        for s in &missing {
            wb.put_log(replica, *s, &LogEntry::default().encode());
        }
        wb.commit(durability == crate::config::Durability::Sync)?;
        tracing::info!(replica = %replica, filled = missing.len(), "filled sequence gaps left by a crash");
    }
    Ok(last)
}
