//! Epochs: a replica never numbers a write with a sequence number a peer may already hold.
//!
//! A member writes under an origin, `member.epoch_origin(epoch)`. A directory created by this
//! open for a configured member starts a new random epoch: it may be a wiped disk of a member
//! whose earlier writes peers still hold. A reopened directory keeps its origin and is
//! writable at once when it cannot have lost a write it made: its last run ended cleanly, or
//! crashed in this boot (the operating system kept the log's tail), or ran under `Sync`.
//! When it may have (an unclean end in another boot of a run under `Wal`, a directory
//! restored from a backup, a number missing from its own log), it moves to a new epoch at
//! open (`start_new_epoch`), also writable at once. The previous origin then becomes one more
//! origin this replica receives and relays, applied up to its first missing number: what
//! peers hold of it comes back by the usual replication. A peer that later claims more of the
//! current origin than this replica committed (a directory copied back by hand) moves it to a
//! new epoch too (`ReplicaStore::start_new_epoch`, from the replication core).

use crate::engine::{lock, write_lock, Engine};
use crate::error::{Error, Result};
use crate::model::{Dot, MemberId, OriginId};
use crate::store::{keys, Store};
use crate::Config;
use std::sync::atomic::Ordering;

/// The origin writes are numbered in, and whether they may be.
#[derive(Clone, Debug)]
pub(crate) struct OriginState {
    /// The origin.
    pub(crate) id: OriginId,
    /// Its epoch.
    pub(crate) epoch: u32,
    /// How the replica came to write under it, in words (status pages).
    pub(crate) note: String,
}

/// A replica's identity and what it is doing about its origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginStatus {
    /// Who the replica is.
    pub member: MemberId,
    /// The origin its writes are numbered in.
    pub origin: OriginId,
    /// The origin's epoch.
    pub epoch: u32,
    /// Whether it accepts writes (false once a storage failure poisoned it).
    pub writable: bool,
    /// How it came to write under its origin, in words ("writable", "writable: new epoch
    /// ... after ...").
    pub note: String,
}

/// The origin a directory opens with (see the module documentation).
pub(crate) fn open_origin(
    store: &Store,
    member: MemberId,
    created: bool,
    config: &Config,
) -> Result<OriginState> {
    let corrupt = |detail: String| Error::Corrupt {
        what: "metadata",
        key: keys::META_EPOCH.to_vec(),
        detail,
    };
    let mut note = "writable".to_string();
    let (epoch, id) = match store.get_meta(keys::META_EPOCH)? {
        Some(bytes) => {
            let raw: [u8; 12] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| corrupt(format!("{} bytes, expected 12", bytes.len())))?;
            let epoch = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
            let mut origin = [0u8; 8];
            origin.copy_from_slice(&raw[4..]);
            let id = OriginId(u64::from_be_bytes(origin));
            if id != member.epoch_origin(epoch) {
                return Err(corrupt(format!(
                    "origin {id} is not epoch {epoch} of member {member}"
                )));
            }
            (epoch, id)
        }
        None if created && config.member_id.is_some() => {
            let epoch = new_epoch(config, 0);
            let id = member.epoch_origin(epoch);
            store.put_meta_sync(keys::META_EPOCH, &epoch_bytes(epoch, id))?;
            note = format!(
                "writable: new epoch {epoch} (a directory created for this member: its earlier \
                 writes come back from its peers)"
            );
            (epoch, id)
        }
        // A random member is new everywhere; a directory from before epochs is in epoch 0.
        None => (0, member.epoch_origin(0)),
    };
    Ok(OriginState { id, epoch, note })
}

fn epoch_bytes(epoch: u32, origin: OriginId) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[..4].copy_from_slice(&epoch.to_be_bytes());
    b[4..].copy_from_slice(&origin.0.to_be_bytes());
    b
}

/// A random epoch other than 0 and `current`.
fn new_epoch(config: &Config, current: u32) -> u32 {
    loop {
        let e = config.random.next_u64() as u32;
        if e != 0 && e != current {
            return e;
        }
    }
}

/// The boot this process runs in (`Config::boot_id`, else the kernel's boot id, else empty:
/// unknown, which matches no earlier boot).
fn current_boot(config: &Config) -> String {
    config.boot_id.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    })
}

/// How the previous run of a directory ended.
pub(crate) struct PreviousRun {
    /// Why it may have lost writes it acknowledged or shipped, if it may: it ended without a
    /// clean shutdown, in another boot, under `Durability::Wal` (the WAL's unsynced tail went
    /// with the power), or the directory was restored from a backup.
    pub(crate) lost_tail: Option<String>,
    /// The anti-entropy summary it kept at its clean shutdown.
    pub(crate) summary: Option<Vec<u8>>,
}

/// Records the start of a run (its boot and durability; a summary kept by the previous one is
/// taken, and removed: it holds only until the first change) and says how the previous run
/// ended. The previous run's own durability decides whether its unsynced tail may be lost,
/// whatever this run's is.
pub(crate) fn begin_run(store: &Store, config: &Config) -> Result<PreviousRun> {
    let boot = current_boot(config);
    let previous = store.get_meta(keys::META_RUN)?;
    // Absent: a directory from before the durability was kept, which may have run under `Wal`.
    let previous_durability = store.get_meta(keys::META_RUN_DURABILITY)?;
    let restored = store.get_meta(keys::META_RESTORED)?.is_some();
    let summary = store.get_meta(keys::META_SUMMARY)?;
    let mut run = vec![0u8];
    run.extend_from_slice(boot.as_bytes());
    let mut wb = store.batch();
    wb.put_meta(keys::META_RUN, &run);
    wb.put_meta(
        keys::META_RUN_DURABILITY,
        &[durability_byte(config.durability)],
    );
    wb.delete_meta(keys::META_SUMMARY);
    wb.commit(true)?;
    if restored {
        // Taken by the new epoch `Engine::open` starts next; the marker goes with it.
        return Ok(PreviousRun {
            lost_tail: Some(
                "a restore from a backup (the copy may have a live twin, and lacks what was \
                 written after it was taken)"
                    .into(),
            ),
            summary: None,
        });
    }
    let Some(previous) = previous else {
        return Ok(PreviousRun {
            lost_tail: None,
            summary: None,
        });
    };
    let clean = previous.first() == Some(&1);
    let same_boot = !boot.is_empty() && previous.get(1..) == Some(boot.as_bytes());
    let synced =
        previous_durability.as_deref() == Some(&[durability_byte(crate::Durability::Sync)]);
    let lost_tail = (!clean && !same_boot && !synced).then(|| {
        "an unclean shutdown in an earlier boot of a run under `wal` durability (the WAL's \
         unsynced tail may be lost)"
            .into()
    });
    Ok(PreviousRun {
        lost_tail,
        summary: summary.filter(|_| clean),
    })
}

fn durability_byte(d: crate::Durability) -> u8 {
    match d {
        crate::Durability::Wal => 0,
        crate::Durability::Sync => 1,
    }
}

/// Marks the run as ended cleanly (the WAL synced), with the boot it ran in, keeping the
/// anti-entropy summary if there is one.
pub(crate) fn end_run(store: &Store, config: &Config, summary: Option<Vec<u8>>) {
    if store.sync_wal().is_err() {
        return;
    }
    if let Some(summary) = summary {
        if store.put_meta_sync(keys::META_SUMMARY, &summary).is_err() {
            return;
        }
    }
    let mut run = vec![1u8];
    run.extend_from_slice(current_boot(config).as_bytes());
    let _ = store.put_meta_sync(keys::META_RUN, &run);
}

impl Engine {
    /// The replica's identity and what it is doing about its origin.
    pub fn origin_status(&self) -> OriginStatus {
        let gate = crate::engine::read_lock(&self.inner.gate);
        OriginStatus {
            member: self.inner.member,
            origin: gate.id,
            epoch: gate.epoch,
            writable: !self.inner.poisoned.load(Ordering::SeqCst)
                && self.inner.fenced.get().is_none(),
            note: match self.inner.fenced.get() {
                Some(reason) => format!("fenced: {reason}"),
                None => gate.note.clone(),
            },
        }
    }

    /// Writes a consistent copy of the replica to `dir` (which must not exist), for a backup:
    /// a prefix of its writes, numbered without holes (writes are numbered where they commit).
    /// Restore it with `Engine::restore_backup`, which makes the copy write under a new epoch.
    pub fn checkpoint(&self, dir: impl AsRef<std::path::Path>) -> Result<()> {
        Ok(self.inner.store.checkpoint(dir.as_ref())?)
    }

    /// Restores a backup (a directory `Engine::checkpoint` wrote) as the data directory `dir`,
    /// which must not exist: the files are copied (the backup stays usable) and the copy is
    /// marked, so that its first open writes under a new epoch, at once, whatever its peers
    /// can say (it lacks what was written after the backup, and may have a live twin).
    pub fn restore_backup(
        backup: impl AsRef<std::path::Path>,
        dir: impl AsRef<std::path::Path>,
    ) -> Result<()> {
        let (backup, dir) = (backup.as_ref(), dir.as_ref());
        let io = |what: &str, e: std::io::Error| Error::InvalidConfig(format!("{what}: {e}"));
        if dir.exists() {
            return Err(Error::InvalidConfig(format!(
                "{} exists: restore into a directory that does not",
                dir.display()
            )));
        }
        if !backup.join("CURRENT").is_file() {
            return Err(Error::InvalidConfig(format!(
                "{} is not a backup (no CURRENT file)",
                backup.display()
            )));
        }
        std::fs::create_dir_all(dir).map_err(|e| io("creating the data directory", e))?;
        let entries = std::fs::read_dir(backup).map_err(|e| io("reading the backup", e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io("reading the backup", e))?;
            if entry
                .file_type()
                .map_err(|e| io("reading the backup", e))?
                .is_file()
            {
                std::fs::copy(entry.path(), dir.join(entry.file_name()))
                    .map_err(|e| io("copying the backup", e))?;
            }
        }
        let store = Store::open(dir)?;
        let mut wb = store.batch();
        wb.put_meta(keys::META_RESTORED, &[1]);
        wb.put_meta(keys::META_RECONCILING, &[1]);
        wb.commit(true)?;
        Ok(())
    }

    /// What a peer's snapshot must cover to reconcile this replica, restored from a backup
    /// and not reconciled yet (`ReplicaStore::reconciling`).
    pub(crate) fn reconcile_vector(&self) -> Option<crate::VersionVector> {
        lock(&self.inner.reconciling).clone()
    }

    /// A peer's state transfer has reconciled this replica's records: it ships again.
    pub(crate) fn mark_reconciled(&self) -> Result<()> {
        let mut reconciling = lock(&self.inner.reconciling);
        if reconciling.is_some() {
            let mut wb = self.inner.store.batch();
            wb.delete_meta(keys::META_RECONCILING);
            wb.commit(true)?;
            *reconciling = None;
            tracing::info!(
                "a peer's state transfer reconciled this replica (restored, or back from a power loss): it ships again"
            );
        }
        Ok(())
    }

    /// Marks the directory as replicated (peers may hold its writes from now on) and fills the
    /// replication caches. Replication drivers call it before the first link comes up.
    pub(crate) fn attach_replication(&self) -> Result<()> {
        if self.inner.store.get_meta(keys::META_REPLICATED)?.is_none() {
            self.inner
                .store
                .put_meta_sync(keys::META_REPLICATED, &[1])?;
        }
        self.enable_replication_cache();
        Ok(())
    }

    /// Moves writes to a new random epoch, because `reason` (the directory may lack writes of
    /// the current origin that peers or clients hold). The current origin's writes committed
    /// without a hole become an origin like any other: entries peers hold beyond them arrive
    /// by replication. Waits for writes in progress; returns the new origin.
    pub(crate) fn start_new_epoch(&self, reason: &str) -> Result<OriginId> {
        self.check_not_poisoned()?;
        let inner = &*self.inner;
        let mut gate = write_lock(&inner.gate);
        let _serial = lock(&inner.apply_lock);
        let mut applied = lock(&inner.applied);
        let mut own = lock(&inner.own);
        let old = own.origin;
        // Up to the first number missing from the log (found at open), if one is: what lies
        // beyond it counts once a peer supplies it or it is declared lost (`declared_lost.rs`).
        let old_seq = own.contiguous;
        let epoch = new_epoch(&inner.config, gate.epoch);
        let origin = inner.member.epoch_origin(epoch);
        let mut wb = inner.store.batch();
        wb.put_meta(keys::META_EPOCH, &epoch_bytes(epoch, origin));
        wb.put_meta(&keys::applied_key(old), &old_seq.to_be_bytes());
        wb.put_meta(keys::META_OWN_CONTIGUOUS, &0u64.to_be_bytes());
        // A restored directory's marker is taken by this epoch.
        wb.delete_meta(keys::META_RESTORED);
        wb.commit(true).map_err(|e| {
            inner.poisoned.store(true, Ordering::SeqCst);
            Error::from(e)
        })?;
        applied.add(Dot::new(old, old_seq));
        own.origin = origin;
        own.contiguous = 0;
        own.ahead.clear();
        lock(&inner.numbering).next_seq = 1;
        *lock(&inner.released) = 0;
        tracing::warn!(member = %inner.member, old_origin = %old, old_seq, new_origin = %origin, epoch, %reason, "writing under a new epoch");
        gate.id = origin;
        gate.epoch = epoch;
        gate.note = format!("writable: new epoch {epoch} after {reason}");
        drop((own, applied));
        self.applied_advanced();
        Ok(origin)
    }
}
