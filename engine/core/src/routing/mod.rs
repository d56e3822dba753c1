//! Which region serves a client: places on Earth and their distances ([`geo`]), a circuit
//! breaker per region ([`breaker`]), the order in which a client tries regions ([`order`])
//! and one request's way through them ([`attempts`]).
//! Pure state machines with time as an argument: the routed client of the runtime and the
//! simulator drive the same code.

pub mod attempts;
pub mod breaker;
pub mod geo;
pub mod order;

pub use attempts::{Attempts, Outcome, Verdict};
pub use breaker::{Breaker, BreakerSettings, BreakerState};
pub use geo::Location;
pub use order::{order_regions, smoothed_rtt, Candidate, Health, Ranked, Reason};
