//! Meridian's link emulator: a user-space UDP relay per directed pair of nodes, so that QUIC
//! between regions on one machine (or in a staging network) sees the links of a real
//! deployment and its outages. Per directed link ([`Shape`]): latency with jitter, loss,
//! duplication, reordering, a bandwidth cap and a blackhole, each changeable while traffic
//! flows; each link counts what it did ([`LinkStats`]).
//!
//! [`Relay`] is one relay (a front socket relaying to an upstream, one socket per client
//! towards it); [`Netem`] places a relay for every ordered pair of named nodes and keeps their
//! shapes; [`control`] serves a small HTTP interface to change them (`meridian netem`).

#![deny(clippy::unwrap_used)]

pub mod config;
pub mod control;
mod direction;
mod emulator;
mod link;
mod relay;
mod shape;

pub use emulator::{LinkReport, Netem, NetemError, NodeAddr, Route};
pub use link::{Link, LinkStats};
pub use relay::Relay;
pub use shape::{parse_ms, parse_rate_kbit, parse_share, Shape, ShapeChange, ShapeError};
