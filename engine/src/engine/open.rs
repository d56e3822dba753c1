//! Opening an engine: the directory's layout and identity, the origin to write under, the
//! applied vector and floors, and the recovery of sequence numbers handed out but never
//! committed.

use super::*;

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
        state_digest::ensure_key_index(&store, created)?;
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
