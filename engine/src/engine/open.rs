//! Opening an engine: the directory's layout (refused when newer than this build's, migrated
//! forward when older: `migrations.rs`) and identity, the origin to write under, the applied
//! vector and floors, and the recovery of sequence numbers handed out but never committed.

use super::*;

impl Engine {
    /// Opens the replica stored at `path`, creating it (with a fresh member id) if missing.
    pub fn open(path: impl AsRef<Path>, config: Config) -> Result<Engine> {
        let path = path.as_ref();
        crate::limits::check(config.value_bytes_max, config.record_bytes_max)
            .map_err(|e| Error::InvalidConfig(e.to_string()))?;
        let store = match Store::open(path) {
            Ok(store) => store,
            Err(e) => {
                // A newer layout may be what this build's storage cannot open.
                migrations::refuse_if_newer(path)?;
                return Err(e.into());
            }
        };
        let (member, created) = match store.get_meta(keys::META_REPLICA_ID)? {
            Some(bytes) => {
                let raw: [u8; 8] = bytes.as_slice().try_into().map_err(|_| Error::Corrupt {
                    what: "metadata",
                    key: keys::META_REPLICA_ID.to_vec(),
                    detail: format!("{} bytes, expected 8", bytes.len()),
                })?;
                (MemberId(u64::from_be_bytes(raw)), false)
            }
            None => {
                let id = match config.member_id {
                    Some(id) => id,
                    None => MemberId(new_member_id(&*config.random)),
                };
                let mut wb = store.batch();
                migrations::stage_created(&mut wb);
                wb.put_meta(keys::META_REPLICA_ID, &id.0.to_be_bytes());
                wb.commit(true)?;
                (id, true)
            }
        };
        // Nothing is written to a directory refused here (a newer layout, another replica).
        let found = migrations::read(&store)?;
        migrations::check(found, LAYOUT)?;
        if config.member_id.is_some_and(|id| id != member) {
            return Err(Error::InvalidOperation(
                "the directory holds another replica than configured",
            ));
        }
        // Before anything else reads or writes what a migration changes.
        migrations::migrate(&store, found, LAYOUT, migrations::MIGRATIONS)?;
        let origin = epoch::open_origin(&store, member, created, &config)?;
        let replica = origin.id;
        let restored_unreconciled = store.get_meta(keys::META_RECONCILING)?.is_some();
        let expiry_refused = !store
            .meta_page(keys::META_OLDER_MEMBER_PREFIX, None, 1)?
            .is_empty();
        let previous = epoch::begin_run(&store, &config)?;
        // A power loss under `wal` took the disk back to its last sync: its records may lack
        // writes it told its peers it had applied, which they counted on to forget removed
        // dots (stability). A restore in small: quarantined alike, marked durably, until a
        // peer's state transfer has reconciled it.
        let rolled_back = previous.lost_tail.is_some() && !restored_unreconciled;
        if rolled_back {
            let mut wb = store.batch();
            wb.put_meta(keys::META_RECONCILING, &[1]);
            wb.commit(true)?;
        }
        let mut applied = load_vector(&store, keys::META_APPLIED_PREFIX)?;
        let floors = load_vector(&store, keys::META_FLOOR_PREFIX)?;
        // Origins that may hold entries beyond a hole though the vector may name them no
        // more (applied down to 0): any lowered below, and the current one if its log has one.
        let mut maybe_stranded = Vec::new();
        if previous.lost_tail.is_some() {
            // The storage may have lost any write it did not sync: every origin counts only
            // up to the first number its log lacks (the current one is looked at below).
            let lowered;
            (applied, lowered) = lower_to_log_holes(&store, applied, &floors, replica)?;
            maybe_stranded.extend(lowered);
        }
        let contiguous = store
            .get_meta(keys::META_OWN_CONTIGUOUS)?
            .and_then(|b| <[u8; 8]>::try_from(&b[..]).ok())
            .map_or(0, u64::from_be_bytes);
        let from = floors.get(replica).max(contiguous);
        let (last, first_hole) = own_log_holes(&store, replica, from)?;
        if first_hole.is_some() {
            maybe_stranded.push(replica);
        }
        let exceptions = declared_lost::load(&store)?;
        let request_tags = requests::count_request_tags(&store)?;
        let clock = HybridClock::new(config.clock_skew_ms_max);
        // A few bytes of keys per entry; the rest of the budget for record states.
        let entry_keys = Mutex::new(EntryKeys::new(config.entry_cache_bytes / 8));
        let states = RecordStates::new(config.entry_cache_bytes - config.entry_cache_bytes / 8);
        let stripes = (0..STRIPES).map(|_| Mutex::new(())).collect();
        tracing::debug!(member = %member, origin = %replica, epoch = origin.epoch, last_seq = last, path = %path.display(), "engine open");
        let disk = disk_space::DiskSpace::new(path, config.disk_free_min_bytes);
        // What a peer's snapshot must cover to reconcile a restored or rolled-back copy: what
        // it came back with, but for its own origin (its writes nobody else may have seen).
        let reconciling = (restored_unreconciled || rolled_back)
            .then(|| VersionVector::from_entries(applied.iter().filter(|(o, _)| *o != replica)));
        let engine = Engine {
            inner: Arc::new(Inner {
                store,
                member,
                config,
                gate: RwLock::new(origin),
                numbering: Mutex::new(commit_order::Numbering {
                    next_seq: last + 1,
                    written: 0,
                }),
                wal: Mutex::new(Default::default()),
                wal_synced: Condvar::new(),
                own: Mutex::new(Frontier {
                    origin: replica,
                    // Committed in order up to the first hole; what lies beyond it becomes the
                    // previous epoch's, applied once the hole is filled or declared lost.
                    contiguous: first_hole.map_or(last, |h| h - 1),
                    ahead: Default::default(),
                }),
                applied: Mutex::new(applied),
                floors: Mutex::new(floors),
                exceptions: Mutex::new(exceptions),
                stranded: Mutex::new(Default::default()),
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
                disk,
                faults: Mutex::new(Default::default()),
                damaged: Mutex::new(Default::default()),
                digest: Default::default(),
                tombstones: Mutex::new(compaction::TombstoneWork::new()),
                named_keys: Mutex::new(Default::default()),
                expiry_sweep_from: Mutex::new(None),
                expiry_refused: std::sync::atomic::AtomicBool::new(expiry_refused),
                created: Mutex::new(Default::default()),
                commit_subscribers: Default::default(),
                applied_subscribers: Default::default(),
                crashed: AtomicBool::new(false),
                request_tags: AtomicUsize::new(request_tags),
                fenced: std::sync::OnceLock::new(),
                feed_positions: Mutex::new(()),
                reconciling: Mutex::new(reconciling.clone()),
            }),
        };
        if reconciling.is_some() {
            let why = if rolled_back {
                "back from a power loss under `wal` (its disk went back to its last sync)"
            } else {
                "restored from a backup"
            };
            tracing::warn!("{why}: this replica ships nothing and offers no state until a peer's state transfer has reconciled its records (dots its peers removed while it was away may remain in them)");
        }
        if let Some(summary) = &previous.summary {
            if engine.inner.digest.load(summary) {
                tracing::debug!("anti-entropy summary kept by the last clean shutdown");
            }
        }
        let hole = first_hole.map(|h| {
            format!(
                "number {h} of origin {replica} missing from the log below {last} (a non-suffix \
                 of the log lost: its entry must come back from a peer, or be declared lost)"
            )
        });
        if let Some(reason) = hole.or(previous.lost_tail) {
            // Numbers of a lost tail may be in clients' tokens, or held by peers: never
            // numbered again.
            engine.start_new_epoch(&reason)?;
        }
        let stranded = declared_lost::find_stranded(
            &engine.inner.store,
            &lock(&engine.inner.applied),
            &maybe_stranded,
        )?;
        for (origin, held) in &stranded {
            tracing::warn!(%origin, applied = lock(&engine.inner.applied).get(*origin), held, "the log holds entries beyond a missing number: waiting for a peer to supply it");
        }
        *lock(&engine.inner.stranded) = stranded;
        Ok(engine)
    }

    /// Drops this handle as a process crash would: the run is not marked as ended cleanly
    /// (the simulator's crashes; the next open treats the run as interrupted).
    #[cfg(feature = "testing")]
    pub fn close_as_crashed(self) {
        self.inner.crashed.store(true, Ordering::SeqCst);
    }
}

fn new_member_id(random: &dyn crate::RandomSource) -> u64 {
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
                OriginId(u64::from_be_bytes(o)),
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

/// `applied`, each origin but `skip` lowered to just below the first number above its floor
/// that its log lacks or holds empty (a write lost with an unsynced tail while later ones
/// stayed: its record may not reflect it); the lowered ones are stored. What lies above the
/// hole is stranded, and comes back from a peer or is declared lost.
fn lower_to_log_holes(
    store: &Store,
    applied: VersionVector,
    floors: &VersionVector,
    skip: OriginId,
) -> Result<(VersionVector, Vec<OriginId>)> {
    let mut lowered = Vec::new();
    for (origin, seq) in applied.iter() {
        if origin == skip || seq <= floors.get(origin) {
            continue;
        }
        let (_, hole) = log_holes(store, origin, floors.get(origin), Some(seq))?;
        if let Some(hole) = hole {
            tracing::warn!(%origin, applied = seq, hole, "a number below the applied vector is missing from the log after a power loss: applied only up to it");
            lowered.push((origin, hole - 1));
        }
    }
    if lowered.is_empty() {
        return Ok((applied, Vec::new()));
    }
    let mut wb = store.batch();
    for (origin, seq) in &lowered {
        wb.put_meta(&keys::applied_key(*origin), &seq.to_be_bytes());
    }
    wb.commit(true)?;
    let vector = VersionVector::from_entries(applied.iter().map(|(o, s)| {
        let low = lowered.iter().find(|(l, _)| *l == o).map(|(_, s)| *s);
        (o, low.unwrap_or(s))
    }));
    Ok((vector, lowered.into_iter().map(|(o, _)| o).collect()))
}

/// This replica's last sequence number, and the first number above `floor` (below it the log
/// is known complete or reclaimed) that its log lacks or holds empty. Writes are numbered
/// where they commit, so a prefix of the log is contiguous: a number missing below the last
/// means the storage lost a non-suffix of the log (or the directory came from a copy made
/// mid-write by an earlier version, which numbered writes before they committed, or held an
/// empty filler such a version logged for a number it found missing after a crash). Nothing
/// is written: the caller moves to a new epoch, and the number comes back from a peer or is
/// declared lost.
fn own_log_holes(store: &Store, replica: OriginId, floor: u64) -> Result<(u64, Option<u64>)> {
    log_holes(store, replica, floor, None)
}

/// `origin`'s last logged number (or `upto`), and the first number above `floor` up to it
/// that the log lacks or holds as an empty filler.
fn log_holes(
    store: &Store,
    replica: OriginId,
    floor: u64,
    upto: Option<u64>,
) -> Result<(u64, Option<u64>)> {
    // Entries at or below the floor were reclaimed: the sequence goes on above it.
    let last = match upto {
        Some(upto) => upto,
        None => store.last_log_seq(replica)?,
    }
    .max(floor);
    if last == floor {
        return Ok((last, None));
    }
    let mut expected = floor + 1;
    for item in store.log_entries_of(replica, floor + 1) {
        let (key, bytes) = item?;
        let Some((origin, seq)) = keys::parse_log_key(&key) else {
            break;
        };
        if origin != replica || seq > last {
            break;
        }
        if seq != expected {
            return Ok((last, Some(expected)));
        }
        // An empty entry of its own origin is a filler (nothing this version logs).
        if LogEntry::decode(&bytes).is_ok_and(|e| e.is_whole() && e.keys.is_empty()) {
            return Ok((last, Some(seq)));
        }
        expected = seq + 1;
    }
    Ok((last, (expected <= last).then_some(expected)))
}
