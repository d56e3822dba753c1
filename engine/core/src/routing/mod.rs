//! Which region serves a client: places on Earth and their distances ([`geo`]), a circuit
//! breaker per region ([`breaker`]), the order in which a client tries regions ([`order`]),
//! one request's way through them ([`attempts`]), what a session wrote or read of each key
//! ([`session_keys`]), each node's clock as the client sees it ([`clock_offset`]) and one
//! write's attempts, deadlines and outcome ([`write_call`]).
//! Pure state machines with time as an argument: the routed client of the runtime and the
//! simulator drive the same code.

pub mod attempts;
pub mod breaker;
pub mod clock_offset;
pub mod geo;
pub mod order;
pub mod session_keys;
pub mod write_call;

pub use attempts::{Attempts, Outcome, Verdict};
pub use breaker::{Breaker, BreakerSettings, BreakerState};
pub use clock_offset::{node_deadline, ClockOffset, ClockSample, Offset};
pub use geo::Location;
pub use order::{order_regions, smoothed_rtt, Candidate, Health, Ranked, Reason};
pub use session_keys::SessionKeys;
pub use write_call::{attempt_budget_ms, Answer, Step, UnknownCause, WriteCall, WriteOutcome};
