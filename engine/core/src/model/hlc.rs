//! Hybrid logical clock: the marker that orders concurrent LWW writes.
//!
//! Wall time is an input (milliseconds since the Unix epoch); nothing here reads a clock.

use serde::{Deserialize, Serialize};
use std::fmt;

const LOGICAL_BITS: u32 = 16;
const LOGICAL_MASK: u64 = (1 << LOGICAL_BITS) - 1;

/// A hybrid logical timestamp: 48 bits of milliseconds, 16 bits of logical counter.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Hlc(pub u64);

impl Hlc {
    /// The physical part in milliseconds since the Unix epoch.
    pub fn millis(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    /// The logical counter.
    pub fn logical(self) -> u64 {
        self.0 & LOGICAL_MASK
    }

    /// The latest wall time a timestamp holds (about the year 10889).
    pub const MILLIS_MAX: u64 = u64::MAX >> LOGICAL_BITS;

    /// The timestamp for a wall time with a zero logical part (a time past `MILLIS_MAX`
    /// saturates to it).
    pub fn from_millis(ms: u64) -> Self {
        Hlc(ms.min(Self::MILLIS_MAX) << LOGICAL_BITS)
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.millis(), self.logical())
    }
}

/// The per-replica clock state: strictly increasing markers, never behind any marker observed.
#[derive(Clone, Debug)]
pub struct HybridClock {
    last: Hlc,
    max_skew_ms: u64,
}

impl HybridClock {
    /// A clock that ignores remote markers more than `max_skew_ms` ahead of local wall time.
    pub fn new(max_skew_ms: u64) -> Self {
        HybridClock {
            last: Hlc(0),
            max_skew_ms,
        }
    }

    /// The next marker for a local event at wall time `wall_ms`.
    pub fn tick(&mut self, wall_ms: u64) -> Hlc {
        let wall = Hlc::from_millis(wall_ms);
        self.last = if wall > self.last {
            wall
        } else {
            Hlc(self.last.0 + 1)
        };
        self.last
    }

    /// Takes a remote marker into account, unless it is further ahead than the allowed skew.
    pub fn observe(&mut self, remote: Hlc, wall_ms: u64) -> bool {
        if remote.millis() > wall_ms.saturating_add(self.max_skew_ms) {
            return false;
        }
        if remote > self.last {
            self.last = remote;
        }
        true
    }

    /// The last marker issued or observed.
    pub fn last(&self) -> Hlc {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_strictly_increase_even_when_wall_time_goes_back() {
        let mut c = HybridClock::new(300_000);
        let a = c.tick(1_000);
        let b = c.tick(500);
        let d = c.tick(1_000);
        assert!(a < b && b < d);
        assert_eq!(d.millis(), 1_000);
    }

    #[test]
    fn observed_remote_marker_orders_later_local_events_after_it() {
        let mut c = HybridClock::new(300_000);
        let remote = Hlc::from_millis(2_000);
        assert!(c.observe(remote, 1_900));
        assert!(c.tick(1_000) > remote);
        // Far beyond the skew bound: ignored.
        assert!(!c.observe(Hlc::from_millis(10_000_000), 1_000));
        assert!(c.last().millis() < 10_000_000);
    }
}
