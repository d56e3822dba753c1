//! Meridian's core: CRDT values with their causality ([`model`]) and the sans-IO replication
//! protocol ([`replication`]), with the size limits both obey ([`limits`]), the choice of
//! the region that serves a client ([`routing`]), and what reads return ([`read`]).
//!
//! Pure by construction: this crate depends on no storage engine, async runtime, socket or
//! clock (see its Cargo.toml). Time is an argument, randomness comes from callers, and storage
//! is the [`replication::ReplicaStore`] trait that the engine implements on RocksDB.

#![deny(clippy::unwrap_used)]

pub mod lease;
pub mod limits;
pub mod model;
pub mod read;
pub mod replication;
pub mod routing;

/// A key as log lines show it: quoted text when it is printable UTF-8, hex otherwise.
pub fn show_key(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(s) if s.chars().all(|c| !c.is_control()) => format!("{s:?}"),
        _ => key.iter().map(|b| format!("{b:02x}")).collect::<String>(),
    }
}
