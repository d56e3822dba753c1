//! Keys' values and their causality: pure data and merge logic, no I/O, no clock, no randomness.
//!
//! Every value is a causal CRDT (a dot store with its context); joins are commutative,
//! associative and idempotent (`engine/core/tests/model_laws.rs` holds them to it, with the
//! codec's round trip and canonical form).

mod causal;
pub mod codec;
pub mod counter;
pub mod digest;
mod dot_store;
pub mod expiry;
mod facts;
mod hlc;
pub mod lww;
pub mod mvreg;
mod op;
pub mod orset;
mod record;
mod replica;
mod request;
mod token;
mod value;

pub use causal::{Dot, VersionVector};
pub use counter::Counter;
pub use dot_store::{Causal, DotFun, DotStore};
pub use expiry::{Expiry, ExpiryEntry};
pub use facts::StateFacts;
pub use hlc::{Hlc, HybridClock};
pub use lww::LwwReg;
pub use mvreg::MvReg;
pub use op::Op;
pub use orset::OrSet;
pub use record::{ApplyError, Record, Stamp};
pub use replica::{MemberId, OriginId};
pub use request::{RequestTag, REQUEST_CLIENT_BYTES_MAX};
pub use token::{CausalToken, TokenError};
pub use value::{FieldKey, Kind, OrMap, Value};
