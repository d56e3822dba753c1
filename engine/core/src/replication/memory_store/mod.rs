//! `MemoryStore`: the storage seam (`ReplicaStore`) in memory, the reference model of what
//! `Engine` does over RocksDB, for running the replication core with no disk.
//!
//! It holds what the engine holds (records as their canonical bytes, a log of the keys each
//! entry changed, the applied vector and the log floors, tombstone marks, the anti-entropy
//! summary, the origin and its epoch) in one `Mutex`: every operation is atomic, as one
//! RocksDB batch is. There is no clock: a last-writer-wins marker is the previous marker plus
//! one, and markers observed in peers' states move it forward (as the engine's hybrid clock
//! does, with no skew bound). There is no randomness: a new epoch is the current one plus one.
//!
//! Where it differs from the engine, on purpose:
//! - nothing in memory is damaged, so no stored record or log entry is ever skipped as a fault,
//!   and no write fails half-way (nothing poisons the store);
//! - a local write checks what the protocol bounds (keys, nesting, the record's size) but not
//!   the engine's configurable value size or context width;
//! - `compact` looks at every marked tombstone each time (the engine skips the pass when
//!   neither stability nor the marks moved, reporting the last pending count);
//! - there are no shipping caches: `read_entry` always reads the current states, and
//!   `release_shipped` only records how far the own origin was shipped (`released`).

mod replica_store;
mod state;
#[cfg(test)]
mod tests;

use crate::limits::{BATCH_OPS_MAX, KEY_BYTES_MAX, RECORD_BYTES_MAX};
use crate::model::codec::{CodecError, MAX_DEPTH};
use crate::model::{ApplyError, Dot, MemberId, Op, Record, Stamp};
use crate::replication::incoming::{Incoming, Theirs};
use state::State;
use std::sync::{Mutex, MutexGuard};

/// Why a `MemoryStore` refused an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MemoryStoreError {
    /// The store never loses a write, so it holds no number missing from its log to declare
    /// lost.
    #[error("nothing to declare lost: {0}")]
    NothingMissing(String),
    /// The key is empty or too long.
    #[error("invalid key: {0}")]
    InvalidKey(&'static str),
    /// The operation or batch is not valid.
    #[error("invalid operation: {0}")]
    InvalidOperation(&'static str),
    /// The operation does not apply to the record (wrong type, counter overflow).
    #[error("operation refused: {0}")]
    Apply(#[from] ApplyError),
    /// A record (or a write's entry) would grow past the limit.
    #[error("record of {len} bytes over the limit of {max}")]
    RecordTooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A record did not encode or decode.
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    /// A read context names writes this store has not seen of the key: nothing was written.
    #[error("the read context names writes not applied here")]
    ContextAhead,
}

/// An in-memory replica store: `ReplicaStore` with no disk, clock or randomness (see the
/// module documentation for how it mirrors the engine).
pub struct MemoryStore {
    state: Mutex<State>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("MemoryStore")
            .field("member", &s.member)
            .field("origin", &s.origin)
            .field("epoch", &s.epoch)
            .field("applied", &s.applied())
            .field("records", &s.records.len())
            .field("log_entries", &s.log.len())
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// A new, empty store for `member`, writing in `epoch` (its origin is
    /// `member.epoch_origin(epoch)`), writable at once.
    pub fn new(member: MemberId, epoch: u32) -> MemoryStore {
        MemoryStore {
            state: Mutex::new(State::new(member, epoch)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Models a restart that lost nothing (a clean one, a crash in the same boot, or any
    /// under `Sync`): everything stays, writable at once under the same origin.
    pub fn restart(&self) {
        self.lock().reopen();
    }

    /// A copy of the store as it stands, opened as a restored backup is: under a new epoch
    /// (the copy lacks what the original writes next); the original goes on independently.
    pub fn checkpoint(&self) -> MemoryStore {
        let mut state = self.lock().clone();
        state.reopen();
        let copy = MemoryStore {
            state: Mutex::new(state),
        };
        // Cannot fail: a new epoch only moves numbers in memory.
        let _ = crate::replication::ReplicaStore::start_new_epoch(&copy, "a restore from a backup");
        copy
    }

    /// A copy of the store as it stands, opened as a directory copied back by hand is (not
    /// marked as restored): it keeps its origin until a peer's claim shows it lacks writes.
    pub fn copied(&self) -> MemoryStore {
        let mut state = self.lock().clone();
        state.reopen();
        MemoryStore {
            state: Mutex::new(state),
        }
    }

    /// Chooses the epoch the next `start_new_epoch` moves to (the engine draws one at
    /// random); without it, or if it is 0 or the current epoch, the current epoch plus one.
    pub fn set_next_epoch(&self, epoch: u32) {
        self.lock().next_epoch = Some(epoch);
    }

    /// Applies `op` to `key` under a fresh dot of the current origin, logging an entry naming
    /// the key; returns the dot's sequence number.
    pub fn apply(&self, key: &[u8], op: Op) -> Result<u64, MemoryStoreError> {
        self.write(vec![(key.to_vec(), op)])
    }

    /// Applies a batch atomically under one dot and one log entry (naming its distinct keys);
    /// returns the dot's sequence number. An operation that does not apply (a wrong type, a
    /// record grown too large) fails the batch and spends no number, as in the engine.
    pub fn write(&self, ops: Vec<(Vec<u8>, Op)>) -> Result<u64, MemoryStoreError> {
        if ops.is_empty() {
            return Err(MemoryStoreError::InvalidOperation("empty batch"));
        }
        if ops.len() > BATCH_OPS_MAX {
            return Err(MemoryStoreError::InvalidOperation("batch too large"));
        }
        for (key, op) in &ops {
            check_key(key)?;
            check_op(op, 1)?;
        }
        // A key's expiry applies after its writes in the batch, as in the engine.
        let (mut ops, expiries): (Vec<_>, Vec<_>) =
            ops.into_iter().partition(|(_, op)| !op.is_expire());
        ops.extend(expiries);
        let mut state = self.lock();
        let mut distinct: Vec<&[u8]> = ops.iter().map(|(k, _)| k.as_slice()).collect();
        distinct.sort_unstable();
        distinct.dedup();
        let mut records: Vec<Record> = distinct
            .iter()
            .map(|k| state.load(k).map(Option::unwrap_or_default))
            .collect::<Result<_, _>>()?;
        let origin = state.origin;
        let seq = state.last_seq + 1;
        let stamp = Stamp {
            dot: Dot::new(origin, seq),
            marker: state.clock.tick(0),
        };
        // A write that fails spends no number (the engine numbers a write as it commits).
        let encoded = apply_ops(&state, &ops, &distinct, &mut records, stamp)?;
        for ((key, bytes), record) in distinct.iter().zip(encoded).zip(&records) {
            state.put_record(key, bytes, record.is_bottom());
        }
        state.put_log(origin, seq, &distinct);
        state.last_seq = seq;
        Ok(seq)
    }

    /// The record stored under `key`, decoded (tombstones included: `Record::is_bottom`).
    pub fn record(&self, key: &[u8]) -> Option<Record> {
        self.lock().load(key).ok().flatten()
    }

    /// The encoded state of `key` (tombstones included), to hand to another replica.
    pub fn export(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.lock().records.get(key).map(|b| b.to_vec())
    }

    /// Joins a record state from another replica (no log entry, no applied change), as
    /// `Engine::apply_remote`; returns whether the local state changed.
    pub fn apply_remote(&self, key: &[u8], state: &[u8]) -> Result<bool, MemoryStoreError> {
        check_key(key)?;
        if state.len() > RECORD_BYTES_MAX {
            return Err(MemoryStoreError::RecordTooLarge {
                len: state.len(),
                max: RECORD_BYTES_MAX,
            });
        }
        let remote = state::decode(state)?;
        let mut s = self.lock();
        let seen = s.applied();
        let incoming = Incoming {
            key,
            state: Theirs::Decoded(remote),
        };
        let changed = s.join(vec![incoming], &seen, None, Some(RECORD_BYTES_MAX))?;
        Ok(!changed.is_empty())
    }

    /// This replica's own entries up to here have reached every other member (what the
    /// replicator last passed to `release_shipped` in the current epoch and run).
    pub fn released(&self) -> u64 {
        self.lock().released
    }
}

/// Applies `ops` (the i-th on key `ops[i].0`) to `records` (one per key of the sorted
/// `distinct`) under `stamp`, refusing read contexts beyond what this replica has seen;
/// returns the encoded records, in `distinct` order.
fn apply_ops(
    state: &State,
    ops: &[(Vec<u8>, Op)],
    distinct: &[&[u8]],
    records: &mut [Record],
    stamp: Stamp,
) -> Result<Vec<Vec<u8>>, MemoryStoreError> {
    let mut applied = None;
    for (key, op) in ops {
        let i = distinct
            .binary_search(&key.as_slice())
            .map_err(|_| MemoryStoreError::InvalidOperation("batch key lost"))?;
        if op.has_context() {
            // A caller's context is a claim: it may supersede only what this replica has seen,
            // and one beyond it is refused rather than lowered.
            let mut seen = applied.get_or_insert_with(|| state.applied()).clone();
            seen.join(&records[i].context());
            if !op.contexts_within(&seen) {
                return Err(MemoryStoreError::ContextAhead);
            }
        }
        records[i].apply(op.clone(), stamp)?;
    }
    let encoded: Vec<Vec<u8>> = records
        .iter()
        .map(state::encode)
        .collect::<Result<_, _>>()?;
    let len = crate::limits::wire_bytes(distinct.iter().zip(&encoded).map(|(k, v)| (*k, &v[..])));
    if len > RECORD_BYTES_MAX {
        return Err(MemoryStoreError::RecordTooLarge {
            len,
            max: RECORD_BYTES_MAX,
        });
    }
    Ok(encoded)
}

fn check_key(key: &[u8]) -> Result<(), MemoryStoreError> {
    if key.is_empty() {
        return Err(MemoryStoreError::InvalidKey("empty"));
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(MemoryStoreError::InvalidKey("longer than 64 KiB"));
    }
    Ok(())
}

/// What the engine refuses before numbering a write and that the protocol bounds: nesting
/// deeper than the codec reads, a delete or an expiry inside a map update.
fn check_op(op: &Op, depth: usize) -> Result<(), MemoryStoreError> {
    if depth >= MAX_DEPTH {
        return Err(MemoryStoreError::InvalidOperation("maps nested too deeply"));
    }
    match op {
        Op::MapUpdate { op, .. } if matches!(**op, Op::Delete | Op::Expire { .. }) => Err(
            MemoryStoreError::InvalidOperation("a map update cannot carry a delete or an expiry"),
        ),
        Op::MapUpdate { op, .. } => check_op(op, depth + 1),
        _ => Ok(()),
    }
}
