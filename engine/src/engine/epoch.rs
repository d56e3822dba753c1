//! Epochs: a replica never numbers a write with a sequence number a peer may already hold.
//!
//! A member writes under an origin, `member.epoch_origin(epoch)`. A directory created by this
//! open for a configured member starts a new random epoch: it may be a wiped disk of a member
//! whose earlier writes peers still hold. A directory that has replicated reopens
//! *unconfirmed*: it refuses writes until the replication core has heard from every other
//! member that none holds more of its origin than the directory does (`confirm_origin`), or
//! moves to a new epoch (`start_new_epoch`) when one does (the unsynced tail of the WAL lost
//! in a power cut, a restored backup) or when some member stays silent too long. The previous
//! origin then becomes one more origin this replica receives and relays: what peers hold of it
//! comes back by the usual replication.

use crate::engine::{lock, write_lock, Engine};
use crate::error::{Error, Result};
use crate::model::{Dot, ReplicaId};
use crate::store::{keys, Store};
use crate::Config;
use std::sync::atomic::Ordering;

/// The origin writes are numbered in, and whether they may be.
#[derive(Clone, Debug)]
pub(crate) struct OriginState {
    /// The origin.
    pub(crate) id: ReplicaId,
    /// Its epoch.
    pub(crate) epoch: u32,
    /// Whether writes may be numbered in it.
    pub(crate) confirmed: bool,
    /// What the replica is doing about its origin, in words (status pages, errors).
    pub(crate) note: String,
}

impl OriginState {
    /// Why writes wait, for the `Recovering` error.
    pub(crate) fn waiting_for(&self) -> String {
        self.note.clone()
    }
}

/// A replica's identity and what it is doing about its origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginStatus {
    /// Who the replica is.
    pub member: ReplicaId,
    /// The origin its writes are numbered in.
    pub origin: ReplicaId,
    /// The origin's epoch.
    pub epoch: u32,
    /// Whether it accepts writes (false while it waits for its peers' confirmation).
    pub writable: bool,
    /// What it is doing, in words ("recovering: ...", "new epoch after ...", "writable").
    pub note: String,
}

const NOTE_RECOVERING: &str = "recovering: waiting for every peer to confirm it holds no write of \
this replica's origin that the data directory lacks";

/// The origin a directory opens with (see the module documentation).
pub(crate) fn open_origin(
    store: &Store,
    member: ReplicaId,
    created: bool,
    config: &Config,
) -> Result<OriginState> {
    let corrupt = |detail: String| Error::Corrupt {
        what: "metadata",
        key: keys::META_EPOCH.to_vec(),
        detail,
    };
    let mut note = if store.get_meta(keys::META_REPLICATED)?.is_some() {
        NOTE_RECOVERING.to_string()
    } else {
        "writable".to_string()
    };
    let (epoch, id) = match store.get_meta(keys::META_EPOCH)? {
        Some(bytes) => {
            let raw: [u8; 12] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| corrupt(format!("{} bytes, expected 12", bytes.len())))?;
            let epoch = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
            let mut origin = [0u8; 8];
            origin.copy_from_slice(&raw[4..]);
            let id = ReplicaId(u64::from_be_bytes(origin));
            if id != member.epoch_origin(epoch) {
                return Err(corrupt(format!(
                    "origin {id} is not epoch {epoch} of member {member}"
                )));
            }
            (epoch, id)
        }
        None if created && config.replica_id.is_some() => {
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
        None => (0, member),
    };
    let replicated = store.get_meta(keys::META_REPLICATED)?.is_some();
    Ok(OriginState {
        id,
        epoch,
        confirmed: !replicated,
        note,
    })
}

fn epoch_bytes(epoch: u32, origin: ReplicaId) -> [u8; 12] {
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
    /// Why it may have lost acknowledged writes (it ended without a clean shutdown, in another
    /// boot, under `Durability::Wal`: the WAL's unsynced tail went with the power), if it may.
    pub(crate) lost_tail: Option<String>,
    /// The anti-entropy summary it kept at its clean shutdown.
    pub(crate) summary: Option<Vec<u8>>,
}

/// Records the start of a run (a summary kept by the previous one is taken, and removed: it
/// holds only until the first change) and says how the previous run ended.
pub(crate) fn begin_run(store: &Store, config: &Config) -> Result<PreviousRun> {
    let boot = current_boot(config);
    let previous = store.get_meta(keys::META_RUN)?;
    let summary = store.get_meta(keys::META_SUMMARY)?;
    let mut run = vec![0u8];
    run.extend_from_slice(boot.as_bytes());
    let mut wb = store.batch();
    wb.put_meta(keys::META_RUN, &run);
    wb.delete_meta(keys::META_SUMMARY);
    wb.commit(true)?;
    let Some(previous) = previous else {
        return Ok(PreviousRun {
            lost_tail: None,
            summary: None,
        });
    };
    let clean = previous.first() == Some(&1);
    let same_boot = !boot.is_empty() && previous.get(1..) == Some(boot.as_bytes());
    let lost_tail =
        (!clean && !same_boot && config.durability == crate::Durability::Wal).then(|| {
            "an unclean shutdown in an earlier boot (the WAL's unsynced tail may be lost)".into()
        });
    Ok(PreviousRun {
        lost_tail,
        summary: summary.filter(|_| clean),
    })
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
            writable: gate.confirmed,
            note: gate.note.clone(),
        }
    }

    /// Writes a consistent copy of the replica to `dir` (which must not exist), for a backup.
    /// A replica restored from it comes back with less than it may have shipped since: once
    /// it has replicated, it waits for its peers before writing, and writes under a new epoch
    /// if they hold more of its origin.
    pub fn checkpoint(&self, dir: impl AsRef<std::path::Path>) -> Result<()> {
        Ok(self.inner.store.checkpoint(dir.as_ref())?)
    }

    /// Marks the directory as replicated (peers may hold its writes from now on, so a later
    /// open waits for their confirmation before writing) and fills the replication caches.
    /// Replication drivers call it before the first link comes up.
    pub fn attach_replication(&self) -> Result<()> {
        if self.inner.store.get_meta(keys::META_REPLICATED)?.is_none() {
            self.inner
                .store
                .put_meta_sync(keys::META_REPLICATED, &[1])?;
        }
        self.enable_replication_cache();
        Ok(())
    }

    /// Accepts writes in the current origin: every other member confirmed it holds no more of
    /// it than this replica.
    pub fn confirm_origin(&self) {
        let mut gate = write_lock(&self.inner.gate);
        if !gate.confirmed {
            gate.confirmed = true;
            gate.note = format!("writable: epoch {} confirmed by every peer", gate.epoch);
            tracing::info!(member = %self.inner.member, origin = %gate.id, epoch = gate.epoch, "origin confirmed by every peer; accepting writes");
        }
    }

    /// Moves writes to a new random epoch, because `reason` (peers may hold writes of the
    /// current origin this replica does not, or could not say). The current origin's committed
    /// writes become an origin like any other: entries peers hold beyond them arrive by
    /// replication. Waits for writes in progress; returns the new origin.
    pub fn start_new_epoch(&self, reason: &str) -> Result<ReplicaId> {
        self.check_writable()?;
        let inner = &*self.inner;
        let mut gate = write_lock(&inner.gate);
        let _serial = lock(&inner.apply_lock);
        let mut applied = lock(&inner.applied);
        let mut own = lock(&inner.own);
        let old = own.origin;
        // Numbers committed after a hole (a failed write whose empty entry could not be
        // logged) stay unshipped; the hole itself poisons the engine, refused above.
        let old_seq = own.contiguous;
        let epoch = new_epoch(&inner.config, gate.epoch);
        let origin = inner.member.epoch_origin(epoch);
        let mut wb = inner.store.batch();
        wb.put_meta(keys::META_EPOCH, &epoch_bytes(epoch, origin));
        wb.put_meta(&keys::applied_key(old), &old_seq.to_be_bytes());
        wb.put_meta(keys::META_OWN_CONTIGUOUS, &0u64.to_be_bytes());
        wb.commit(true).map_err(|e| {
            inner.poisoned.store(true, Ordering::SeqCst);
            Error::from(e)
        })?;
        applied.add(Dot::new(old, old_seq));
        own.origin = origin;
        own.contiguous = 0;
        own.ahead.clear();
        inner.next_seq.store(1, Ordering::SeqCst);
        *lock(&inner.released) = 0;
        tracing::warn!(member = %inner.member, old_origin = %old, old_seq, new_origin = %origin, epoch, %reason, "writing under a new epoch");
        gate.id = origin;
        gate.epoch = epoch;
        gate.confirmed = true;
        gate.note = format!("writable: new epoch {epoch} after {reason}");
        drop((own, applied));
        self.applied_advanced();
        Ok(origin)
    }
}
