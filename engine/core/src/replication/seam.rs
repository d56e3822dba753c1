//! The narrow storage seam the replication core sees. `Engine` implements it on RocksDB; the
//! core never touches RocksDB, sockets or clocks itself.

use super::iblt::Iblt;
use super::inbound::{decode_record_states, wire_bytes, DecodedEntry};
use crate::model::{MemberId, OriginId, VersionVector};
use std::sync::Arc;

/// One record state shipped with a log entry: the key and its encoded record.
pub type RecordState = (Vec<u8>, Vec<u8>);

/// A record state as a log entry ships it: key and encoded record, shared with the store's
/// caches where they hold it (no copy per record on the sender's hot path).
pub type SharedState = (Arc<[u8]>, Arc<[u8]>);

/// Record states read to ship, and the keys that could not be (unreadable, corrupt, too
/// large: their faults stay with them, and the receiver is told).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadStates {
    /// (key, state) read, in key order.
    pub records: Vec<RecordState>,
    /// Keys held here whose states cannot be shipped.
    pub left_out: Vec<Vec<u8>>,
}

/// Records of a key range in order, and the key the next range starts at (`None`: the end).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordRange {
    /// The range's records (and those that cannot be shipped).
    pub states: ReadStates,
    /// The key the next range starts at (`None`: this one reaches the end).
    pub next: Option<Vec<u8>>,
}

/// A log entry as this replica ships it: the current states of the keys it names, and what
/// it cannot ship of it.
#[derive(Clone, Debug, Default)]
pub struct ShippedEntry {
    /// (key, state) of every key it named that this replica can ship.
    pub states: Vec<SharedState>,
    /// Keys it named whose states this replica cannot ship (unreadable, corrupt, grown past
    /// a frame), or did not receive (the entry was applied partial here).
    pub left_out: Vec<Vec<u8>>,
    /// Nothing of the write is held here: it was declared lost.
    pub lost: bool,
    /// The client request the write answered, if it named one.
    pub request: Option<crate::model::RequestTag>,
}

impl ShippedEntry {
    /// A whole entry of these states.
    pub fn whole(states: Vec<SharedState>) -> ShippedEntry {
        ShippedEntry {
            states,
            ..ShippedEntry::default()
        }
    }
}

pub use super::frame::Exceptions;

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

/// Decides each of an origin's consecutive entries' fate against `applied` (the origin's
/// highest sequence applied in order): already applied ones are `Duplicate`, the first after a
/// hole is a `Gap` (and nothing after it is looked at), the rest are accepted in order (their
/// outcome says `Applied` with no change counted yet). Every store applies entries this way.
pub fn sequence_entries(
    entries: &[DecodedEntry],
    applied: u64,
) -> (Vec<ApplyOutcome>, Vec<&DecodedEntry>) {
    let mut have = applied;
    let mut outcomes = Vec::with_capacity(entries.len());
    let mut accepted = Vec::new();
    for entry in entries {
        if entry.seq <= have {
            outcomes.push(ApplyOutcome::Duplicate);
            continue;
        }
        if entry.seq != have + 1 {
            outcomes.push(ApplyOutcome::Gap { expected: have + 1 });
            break;
        }
        accepted.push(entry);
        outcomes.push(ApplyOutcome::Applied { changed: 0 });
        have = entry.seq;
    }
    (outcomes, accepted)
}

/// A replica's state summarised for anti-entropy.
#[derive(Debug)]
pub struct StateSummary {
    /// The applied vector read with the summary: the records reflect it, but for
    /// `exceptions`.
    pub applied: VersionVector,
    /// What `applied` covers that the records do not reflect (declared lost).
    pub exceptions: Exceptions,
    /// Table over (key hash, state hash) of every record.
    pub table: Iblt,
    /// How many records there are.
    pub records: u64,
}

/// The origin a replica writes under, as the replication core sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OriginView {
    /// The origin (the actor of its dots).
    pub origin: OriginId,
    /// Its epoch.
    pub epoch: u32,
}

/// What a round of log truncation and tombstone collection did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Compaction {
    /// Log entries removed.
    pub log_entries_removed: u64,
    /// Tombstoned records removed.
    pub tombstones_removed: u64,
    /// Tombstones still waiting for stability.
    pub tombstones_pending: u64,
    /// Tombstone candidates looked at (the work the pass did).
    pub tombstones_examined: u64,
}

/// Storage operations the replication core needs. Calls block; drivers keep them off async
/// reactors.
pub trait ReplicaStore {
    /// The error the store reports.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The origin this replica writes under (its current epoch).
    fn origin_id(&self) -> OriginId;

    /// Who this replica is: its member id, fixed for the life of its storage.
    fn member_id(&self) -> MemberId;

    /// The current origin.
    fn origin_view(&self) -> OriginView;

    /// Moves writes to a new epoch (a peer holds writes of the current origin this replica
    /// does not: its directory lost them); the current origin's entries become those of any
    /// other origin. Returns the new origin.
    fn start_new_epoch(&self, reason: &str) -> Result<OriginId, Self::Error>;

    /// Per origin, the highest sequence number applied with every earlier one applied too
    /// (this replica's own entry is its contiguous committed sequence). Invariant I1: the
    /// records reflect every write it covers, but for `exceptions`.
    fn applied(&self) -> VersionVector;

    /// What the applied vector covers that the records do not reflect: writes and keys'
    /// states declared lost (bounded; the oldest are forgotten first).
    fn exceptions(&self) -> Exceptions;

    /// Origins whose log here holds entries beyond a sequence number it lacks (a number lost
    /// from this replica's own log, found at open): (origin, the missing number, which is the
    /// origin's applied entry plus one).
    fn stranded(&self) -> Vec<(OriginId, u64)>;

    /// No reachable member supplied `origin`'s write `seq` (stranded here) within the bound:
    /// declares it lost (logged as a lost entry, counted, kept among the exceptions) and
    /// advances the applied vector through the entries held beyond it.
    fn declare_lost(&self, origin: OriginId, seq: u64) -> Result<(), Self::Error>;

    /// The records a log entry changed, in a state that includes the entry (the current one,
    /// or the one the entry's commit left), and the keys that cannot be shipped; `None` when
    /// the entry is no longer in the log (truncated) or was never applied here.
    fn read_entry(&self, origin: OriginId, seq: u64) -> Result<Option<ShippedEntry>, Self::Error>;

    /// Largest encoded record accepted from a peer: by default an entry's worth (a peer's
    /// record may have met concurrent writes on its way, `limits`).
    fn record_bytes_max(&self) -> usize {
        crate::limits::ENTRY_BYTES_MAX
    }

    /// Applies consecutive entries of one origin (records already decoded), stopping at the
    /// first that is not applied: each applied entry's records joined, the entry logged for
    /// relaying and the applied vector advanced, atomically. Returns one outcome per entry
    /// handled. A partial entry (`DecodedEntry::is_whole` false) is applied as partial: what
    /// it lacks is declared lost (logged with the entry, counted, kept among the exceptions);
    /// the caller passes one only once no whole copy came within its bound.
    fn apply_entries(
        &self,
        origin: OriginId,
        entries: Vec<DecodedEntry>,
    ) -> Result<Vec<ApplyOutcome>, Self::Error>;

    /// `apply_entries` for one entry given as encoded record states (one that does not check
    /// is left out; `Invalid` if they cannot be put together).
    fn apply_entry(
        &self,
        origin: OriginId,
        seq: u64,
        records: &[RecordState],
    ) -> Result<ApplyOutcome, Self::Error> {
        let wire_bytes = wire_bytes(records.iter().map(|(k, v)| (&k[..], &v[..])));
        let mut left_out = Vec::new();
        let Ok(records) = decode_record_states(records, self.record_bytes_max(), &mut left_out)
        else {
            return Ok(ApplyOutcome::Invalid);
        };
        let entry = DecodedEntry {
            seq,
            records,
            wire_bytes,
            left_out,
            lost: false,
            request: None,
        };
        let outcomes = self.apply_entries(origin, vec![entry])?;
        Ok(outcomes.first().copied().unwrap_or(ApplyOutcome::Duplicate))
    }

    /// Per origin, the log floor: entries at or below it are not in this replica's log.
    fn log_floor(&self) -> VersionVector;

    /// The applied vector and a table of `cells` cells (at most `summary_cells`) over every
    /// record, read together.
    fn summarize(&self, cells: usize) -> Result<StateSummary, Self::Error>;

    /// The largest table `summarize` makes.
    fn summary_cells(&self) -> usize;

    /// How many records there are (tombstones included).
    fn record_count(&self) -> Result<u64, Self::Error>;

    /// The keys of the records whose key hash is one of `hashes`.
    fn keys_for_hashes(&self, hashes: &[u64]) -> Result<Vec<Vec<u8>>, Self::Error>;

    /// The current states of `keys`, in key order (absent keys are skipped; those that
    /// cannot be shipped are named).
    fn read_records(&self, keys: &[Vec<u8>]) -> Result<ReadStates, Self::Error>;

    /// The records from key `from` on, in key order, up to about `bytes` bytes (at least one
    /// if any), and the key the next range starts at (`None`: none left).
    fn read_range(&self, from: &[u8], bytes: usize) -> Result<RecordRange, Self::Error>;

    /// After a range `[from, through)` of a streamed state transfer: the records held here in
    /// it that are not among `present` (the peer holds nothing of them) lose the dots `seen`
    /// (the peer's snapshot) covers, but for keys whose hash is in `spare` (the peer does not
    /// vouch for them). Returns how many changed.
    fn drop_absent(
        &self,
        from: &[u8],
        through: Option<&[u8]>,
        present: &std::collections::BTreeSet<Vec<u8>>,
        seen: &VersionVector,
        spare: &std::collections::BTreeSet<u64>,
    ) -> Result<usize, Self::Error>;

    /// Joins record states from a state transfer (no log entry, no applied change); the
    /// sender applied every write in `horizon` (its snapshot), so what it covers and the
    /// sender's states do not hold was removed there, and goes here too; but for keys whose
    /// hash is in `spare` (the sender does not vouch for them), which are joined plainly.
    fn merge_states(
        &self,
        records: &[RecordState],
        horizon: &VersionVector,
        spare: &std::collections::BTreeSet<u64>,
    ) -> Result<ApplyOutcome, Self::Error>;

    /// After a state transfer from a peer that holds none of `keys`: removes from their
    /// records every dot `seen` covers (the peer applied those writes and holds nothing of the
    /// keys, so it removed them; a replica that came back with older states than it had
    /// shipped learns its deletes this way). Returns how many records changed.
    fn drop_covered(&self, keys: &[Vec<u8>], seen: &VersionVector) -> Result<usize, Self::Error>;

    /// Keys whose stored record was found damaged (it does not decode) and not yet replaced
    /// by a peer's state.
    fn damaged(&self) -> Vec<Vec<u8>> {
        Vec::new()
    }

    /// When this replica was restored from a backup and no peer's state transfer has
    /// reconciled it since: what a peer's snapshot must cover for its round to reconcile it
    /// (the vector the copy came back with, but for its own origin). Its records may hold
    /// dots whose removal its peers collected while it was away (their reports of what it had
    /// applied, made before the restore, let them): shipped, such a dot would come back at a
    /// replica that has not seen its removal. Until then it ships no entries and offers no
    /// state, and asks its peers for a round (`ReplicationConfig::reconcile_wait_ms` bounds
    /// the wait).
    fn reconciling(&self) -> Option<VersionVector> {
        None
    }

    /// A peer's state-transfer round has ended here (its snapshot adopted): the records
    /// reflect what that peer removed, and `reconciling` is over.
    fn reconciled(&self) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Removes the records of `keys` that are still damaged: no peer supplied a good copy
    /// within the bound, so what they held is declared lost (the keys stay uncertain, and a
    /// copy that turns up later is joined whole). Returns how many went.
    fn drop_damaged(&self, _keys: &[Vec<u8>]) -> Result<usize, Self::Error> {
        Ok(0)
    }

    /// The mark of the next key a join creates (`created_keys.rs`).
    fn created_mark(&self) -> u64;

    /// The keys joins created since `mark` (absent before, present after), or `None` when
    /// more came than are remembered.
    fn created_since(&self, mark: u64) -> Option<Vec<Vec<u8>>>;

    /// After a complete state transfer reflecting `snapshot` but for `exceptions` (the
    /// sender's, and what it left out): advances the applied vector to it, raises the log
    /// floor where it jumped, and keeps the exceptions (they now hold here too).
    fn adopt(&self, snapshot: &VersionVector, exceptions: &Exceptions) -> Result<(), Self::Error>;

    /// Removes log entries covered by `stable` (applied by every live member) and tombstones
    /// whose every dot is covered by it.
    fn compact(&self, stable: &VersionVector) -> Result<Compaction, Self::Error>;

    /// Reclaims values whose expiry passed long enough ago (with writes of its own, numbered
    /// and logged as any), looking at a bounded part of the keys per call; returns how many
    /// keys it reclaimed. Called every compaction interval whether or not stability moved.
    fn reclaim_expired(&self) -> Result<u64, Self::Error> {
        Ok(0)
    }

    /// Member `member` linked at replication protocol `version`: a store that has expiries
    /// refuses writes that set one while a member was last seen below `EXPIRY_VERSION` (states
    /// reaching it go without their expiries: `older_peers.rs`).
    fn note_member_version(&self, _member: MemberId, _version: u8) {}

    /// This replica's own entries up to `upto` have reached every other member: whatever the
    /// store keeps in memory to ship them can go (they stay readable).
    fn release_shipped(&self, _upto: u64) {}
}
