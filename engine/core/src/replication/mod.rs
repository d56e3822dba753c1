//! Replication: the sans-IO protocol that makes regions converge.
//!
//! `Replicator` is a deterministic state machine (frames, link events and ticks in; frames and
//! link closes out) over the storage seam `ReplicaStore`. Log entries name the keys a write
//! changed; a sender ships the keys' *current* states, so applying is a lattice join that
//! tolerates duplicates and needs no causal delivery. See `frame.rs` for the frames and
//! `replicator/mod.rs` for the invariants; `inbound.rs` decodes frames and their records, which a
//! driver may do on another thread than the one applying them.

pub mod created_keys;
pub mod exceptions;
mod frame;
pub mod iblt;
mod inbound;
pub mod incoming;
pub mod link_states;
mod memory_store;
mod older_peers;
mod peer;
mod replicator;
mod seam;
mod shared_iblt;
pub mod state_patch;

pub use frame::{
    common_version, decode_entries, encode_entries, encode_linked_entries, parse_linked_entries,
    EntryOut, EntryRef, Exceptions, Frame, FrameError, Hello, LinkedEntryRef, RegionAbout, Spans,
    StateForm, WireEntry, WireForm, ABOUT_ADDRESS_BYTES_MAX, EXCEPTIONS_MAX, EXPIRY_VERSION,
    FEATURES, FEATURES_MAX, FEATURE_BYTES_MAX, FRAME_BYTES_MAX, HELLO_RANGE_VERSION,
    LINKED_STATES_VERSION, PROTOCOL_VERSION, PROTOCOL_VERSIONS, SHARED_STATES_VERSION,
    SPANS_VERSION,
};

pub use inbound::{
    decode_record_states, decode_records, sort_joining, sort_joining_by, DecodedEntry, Inbound,
    RemoteRecord, MERGE_FRAMES_MAX,
};
pub use memory_store::{MemoryStore, MemoryStoreError};
pub use peer::{LinkState, Peer};
pub use replicator::{
    LinkId, OfferPlan, Output, PrimaryView, ReplicationConfig, ReplicationError, Replicator, Stats,
    INFLIGHT_BYTES_CAP, SUMMARY_CELLS, SUMMARY_SUB_LOG,
};
pub use seam::{
    sequence_entries, ApplyOutcome, Compaction, OriginView, ReadStates, RecordRange, RecordState,
    ReplicaStore, SharedState, ShippedEntry, StateSummary,
};
pub use shared_iblt::SharedIblt;
