//! The replicator's unit tests, one file per job (named as the replicator's file of that job),
//! on two replicators over `MemoryStore`s linked by `pair.rs`: no disk, no thread, no wall
//! clock.

#![allow(clippy::unwrap_used)]

mod anti_entropy;
mod handshake;
mod linked_states;
mod log_shipping;
mod pair;
mod primary;
mod spans;
mod stability;
mod versions;
