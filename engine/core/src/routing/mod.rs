//! Which region serves a client: places on Earth and their distances ([`geo`]), a circuit
//! breaker per region ([`breaker`]) and the order in which a client tries regions ([`order`]).
//! Pure state machines with time as an argument: the routed client of the runtime and the
//! simulator drive the same code.

pub mod breaker;
pub mod geo;
pub mod order;

pub use breaker::{Breaker, BreakerSettings, BreakerState};
pub use geo::Location;
pub use order::{order_regions, Candidate, Health, Ranked, Reason};
