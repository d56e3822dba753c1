//! RocksDB: records, the replication log and metadata, written together in atomic batches.
//!
//! Everything here blocks; async callers keep it off the reactor.

mod db;
pub mod keys;
mod log_entry;

pub use db::{rocksdb_options, AtomicWrite, RecordSnapshot, Store};
pub use log_entry::LogEntry;
