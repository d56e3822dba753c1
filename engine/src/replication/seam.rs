//! The narrow storage seam the replication core sees. `Engine` implements it on RocksDB; the
//! core never touches RocksDB, sockets or clocks itself.

use crate::model::{ReplicaId, VersionVector};

/// One record state shipped with a log entry: the key and its encoded record.
pub type RecordState = (Vec<u8>, Vec<u8>);

/// What applying a remote log entry did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// Applied in order; `changed` records differed from the local state.
    Applied {
        /// Records whose local state changed.
        changed: usize,
    },
    /// Already applied (a duplicate or a relay of something seen).
    Duplicate,
    /// The entry's records are invalid (undecodable, oversized, bad key); nothing was applied
    /// and the link that brought it should be closed.
    Invalid,
    /// An earlier entry of this origin is missing; nothing was applied.
    Gap {
        /// The sequence number this replica needs next from the origin.
        expected: u64,
    },
}

/// Storage operations the replication core needs. Calls block; drivers keep them off async
/// reactors.
pub trait ReplicaStore {
    /// The error the store reports.
    type Error: std::error::Error + Send + Sync + 'static;

    /// This replica's id.
    fn replica_id(&self) -> ReplicaId;

    /// Per origin, the highest sequence number applied with every earlier one applied too
    /// (this replica's own entry is its contiguous committed sequence).
    fn applied(&self) -> VersionVector;

    /// The records a log entry changed, in their current state; `None` when the entry is no
    /// longer in the log (truncated) or was never applied here.
    fn read_entry(
        &self,
        origin: ReplicaId,
        seq: u64,
    ) -> Result<Option<Vec<RecordState>>, Self::Error>;

    /// Merges the records of `origin`'s entry `seq`, logs the entry for relaying and advances
    /// the applied vector, atomically.
    fn apply_entry(
        &self,
        origin: ReplicaId,
        seq: u64,
        records: &[RecordState],
    ) -> Result<ApplyOutcome, Self::Error>;
}
