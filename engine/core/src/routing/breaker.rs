//! A circuit breaker per region: closed (requests go), open (requests go elsewhere until a
//! cool-down passes), half-open (one probe goes; its success closes the breaker, its failure
//! opens it again for longer).

use serde::{Deserialize, Serialize};

/// When a breaker opens and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerSettings {
    /// Consecutive failures (errors or timeouts) that open a closed breaker.
    pub failures_to_open: u32,
    /// How long an opened breaker stays open before a probe, in milliseconds.
    pub open_ms: u64,
    /// Longest open period, reached by doubling after each failed probe, in milliseconds.
    pub open_ms_max: u64,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            failures_to_open: 1,
            open_ms: 2_000,
            open_ms_max: 10_000,
        }
    }
}

/// Where a breaker stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BreakerState {
    /// Requests go.
    Closed,
    /// Requests go elsewhere until `until_ms`.
    Open {
        /// End of the cool-down.
        until_ms: u64,
    },
    /// The cool-down passed: one probe may go.
    HalfOpen,
}

/// One region's breaker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Breaker {
    settings: BreakerSettings,
    state: BreakerState,
    failures: u32,
    /// The current open period (doubles after each failed probe).
    open_ms: u64,
    /// Whether the half-open probe is out.
    probing: bool,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(settings: BreakerSettings) -> Breaker {
        Breaker {
            settings,
            state: BreakerState::Closed,
            failures: 0,
            open_ms: settings.open_ms,
            probing: false,
        }
    }

    /// Its state at `now_ms` (an open breaker whose cool-down passed is half-open).
    pub fn state(&self, now_ms: u64) -> BreakerState {
        match self.state {
            BreakerState::Open { until_ms } if now_ms >= until_ms => BreakerState::HalfOpen,
            state => state,
        }
    }

    /// Whether `try_acquire` would let a request go now (without taking the probe).
    pub fn may_try(&self, now_ms: u64) -> bool {
        match self.state(now_ms) {
            BreakerState::Closed => true,
            BreakerState::Open { .. } => false,
            BreakerState::HalfOpen => !self.probing,
        }
    }

    /// Whether a request may go to this region now; a half-open breaker lets one probe go
    /// and holds the others until the probe's outcome.
    pub fn try_acquire(&mut self, now_ms: u64) -> bool {
        match self.state(now_ms) {
            BreakerState::Closed => true,
            BreakerState::Open { .. } => false,
            BreakerState::HalfOpen => {
                self.state = BreakerState::HalfOpen;
                if self.probing {
                    false
                } else {
                    self.probing = true;
                    true
                }
            }
        }
    }

    /// A request was given up before its outcome said anything of the region (a hedged read
    /// answered elsewhere, a request refused by the client itself): a probe it carried is
    /// free again.
    pub fn abandon(&mut self) {
        self.probing = false;
    }

    /// A request succeeded: the breaker closes.
    pub fn on_success(&mut self) {
        self.state = BreakerState::Closed;
        self.failures = 0;
        self.open_ms = self.settings.open_ms;
        self.probing = false;
    }

    /// A request failed or timed out at `now_ms`.
    pub fn on_failure(&mut self, now_ms: u64) {
        match self.state(now_ms) {
            BreakerState::Closed => {
                self.failures += 1;
                if self.failures >= self.settings.failures_to_open {
                    self.open(now_ms);
                }
            }
            BreakerState::HalfOpen => {
                self.open_ms = self
                    .open_ms
                    .saturating_mul(2)
                    .min(self.settings.open_ms_max);
                self.open(now_ms);
            }
            // A request sent before the breaker opened: it is open already.
            BreakerState::Open { .. } => {}
        }
    }

    fn open(&mut self, now_ms: u64) {
        self.state = BreakerState::Open {
            until_ms: now_ms.saturating_add(self.open_ms),
        };
        self.failures = 0;
        self.probing = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(failures_to_open: u32) -> Breaker {
        Breaker::new(BreakerSettings {
            failures_to_open,
            open_ms: 100,
            open_ms_max: 400,
        })
    }

    #[test]
    fn opens_after_failures_probes_once_and_closes_on_success() {
        let mut b = breaker(2);
        assert!(b.try_acquire(0));
        b.on_failure(0);
        assert_eq!(b.state(0), BreakerState::Closed);
        b.on_failure(10);
        assert_eq!(b.state(10), BreakerState::Open { until_ms: 110 });
        assert!(!b.try_acquire(50));
        assert_eq!(b.state(110), BreakerState::HalfOpen);
        assert!(b.may_try(110));
        assert!(b.try_acquire(110), "one probe");
        assert!(!b.may_try(111));
        assert!(!b.try_acquire(111), "only one");
        b.abandon();
        assert!(b.may_try(111), "an abandoned probe frees the turn");
        assert!(b.try_acquire(111));
        b.on_success();
        assert_eq!(b.state(112), BreakerState::Closed);
        assert!(b.try_acquire(112));
    }

    #[test]
    fn a_failed_probe_opens_for_longer_up_to_the_cap() {
        let mut b = breaker(1);
        b.on_failure(0);
        let mut now = 0;
        for expected in [200, 400, 400] {
            now = match b.state(now) {
                BreakerState::Open { until_ms } => until_ms,
                other => panic!("open expected, got {other:?}"),
            };
            assert!(b.try_acquire(now));
            b.on_failure(now);
            assert_eq!(
                b.state(now),
                BreakerState::Open {
                    until_ms: now + expected
                }
            );
        }
        // A success resets the period.
        now += 400;
        assert!(b.try_acquire(now));
        b.on_success();
        b.on_failure(now);
        assert_eq!(
            b.state(now),
            BreakerState::Open {
                until_ms: now + 100
            }
        );
    }
}
