//! The region-outage suite: real `meridian node` processes linked through the link emulator
//! with wide-area round trips, a routed client per region writing every data type throughout
//! (and one client of the stronger levels: `regions(2)` and `all` writes, `majority` reads and
//! plain reads of other sessions' strong writes), one fault per scenario (a region killed,
//! frozen, frozen for 12 s, frozen with clocks 2 s off both ways, cut off, wiped, retired;
//! links cut one way, flapping or lossy; every region restarted), then the heal, the wait for
//! every region to hold the same state, and the history checked against it ([`checker`]: every
//! operation held to account, what cannot be verified reported and bounded). One [`Row`] per
//! scenario: operations acknowledged, lost, unknown, failed, violations, bounds exceeded, reads
//! and those unanswered or excused, removals checked and those unverifiable, writes at risk,
//! the longest time a client went without an acknowledged write, the catch-up time after the
//! heal, the time to identical state once the load stops, and the bytes the links carried to
//! catch up against the bytes of the records that had to move.

pub mod checker;
pub mod feed_consumer;
pub mod history;
mod report;
mod scenario;
pub mod workload;

pub use report::{print_table, Row};
pub use scenario::{run, run_upgrading, Form, Scenario};
