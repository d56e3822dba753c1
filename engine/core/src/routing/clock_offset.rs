//! A node's wall clock as a client sees it. Every answer carries the node's clock; the offset
//! between node and client is estimated from the recent answers with the shortest round trip
//! (as NTP's clock filter does), within half that round trip, widened as the answer ages (the
//! two clocks may drift apart meanwhile). An answer whose bound excludes an older one's shows
//! that a clock stepped (an operator, NTP stepping, a VM restored): the older answers are
//! dropped, and the estimate comes from the answers since. A step smaller than the two bounds
//! together cannot be told from jitter; the node's own margin covers it. A write's deadline is
//! stamped in
//! the node's clock with it ([`node_deadline`]), so a node whose clock leads does not refuse
//! everything and one whose clock lags does not apply a write after the client moved on.

use std::collections::VecDeque;

/// Answers kept for the estimate.
pub const SAMPLES_KEPT: usize = 8;
/// How fast two clocks may drift apart, in parts per million: an answer's error grows by this
/// much of its age (a millisecond every 10 s).
pub const DRIFT_PPM: u64 = 100;

/// One answer's evidence, in milliseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockSample {
    /// The client's clock when it sent the request.
    pub sent_ms: u64,
    /// The client's clock when the answer came.
    pub received_ms: u64,
    /// The node's clock in the answer.
    pub node_ms: u64,
}

/// Node clock minus client clock, within `± error_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offset {
    /// The estimated offset.
    pub offset_ms: i64,
    /// Its bound (half the round trip of the answer it comes from).
    pub error_ms: u64,
}

/// The recent answers of one node.
#[derive(Clone, Debug, Default)]
pub struct ClockOffset {
    /// (client clock when received, what the answer says).
    samples: VecDeque<(u64, Offset)>,
}

impl ClockOffset {
    /// Takes one answer (ignored when the client's clock went backwards meanwhile).
    pub fn sample(&mut self, s: ClockSample) {
        let Some(round_trip) = s.received_ms.checked_sub(s.sent_ms) else {
            return;
        };
        let half = round_trip / 2;
        let middle = s.sent_ms.saturating_add(half);
        let offset_ms = (i128::from(s.node_ms) - i128::from(middle))
            .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
        // Rounded up: the bound must hold for an odd round trip too.
        let error_ms = round_trip.div_ceil(2);
        // Older answers this one contradicts came before a clock step: they no longer hold.
        self.samples.retain(|(at, o)| {
            let drift = s.received_ms.saturating_sub(*at).saturating_mul(DRIFT_PPM) / 1_000_000;
            let apart = (i128::from(o.offset_ms) - i128::from(offset_ms)).unsigned_abs();
            apart <= u128::from(o.error_ms) + u128::from(drift) + u128::from(error_ms)
        });
        self.samples.push_back((
            s.received_ms,
            Offset {
                offset_ms,
                error_ms,
            },
        ));
        while self.samples.len() > SAMPLES_KEPT {
            self.samples.pop_front();
        }
    }

    /// The estimate from the kept answer with the smallest error at `now_ms` (its round trip
    /// and its age's drift), the newest of those tied, if any.
    pub fn estimate(&self, now_ms: u64) -> Option<Offset> {
        self.samples
            .iter()
            .rev()
            .map(|(at, o)| {
                let drift = now_ms.saturating_sub(*at).saturating_mul(DRIFT_PPM) / 1_000_000;
                Offset {
                    offset_ms: o.offset_ms,
                    error_ms: o.error_ms.saturating_add(drift),
                }
            })
            .min_by_key(|o| o.error_ms)
    }
}

/// A deadline of `give_up_ms` on the client's clock, stamped in the node's clock: no later
/// than the node's clock can read when the client's reads `give_up_ms` (the estimate's error
/// taken off). Without an estimate, the client's clock (the node's own margin covers a small
/// skew).
pub fn node_deadline(give_up_ms: u64, offset: Option<Offset>) -> u64 {
    match offset {
        Some(o) => {
            let shifted = i128::from(give_up_ms) + i128::from(o.offset_ms) - i128::from(o.error_ms);
            shifted.clamp(0, i128::from(u64::MAX)) as u64
        }
        None => give_up_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shortest_round_trip_wins_and_bounds_the_error() {
        let mut c = ClockOffset::default();
        assert_eq!(c.estimate(0), None);
        // A node 2 s ahead: a slow answer (400 ms) and a quick one (10 ms).
        c.sample(ClockSample {
            sent_ms: 1_000,
            received_ms: 1_400,
            node_ms: 3_100,
        });
        c.sample(ClockSample {
            sent_ms: 5_000,
            received_ms: 5_010,
            node_ms: 7_004,
        });
        let o = c.estimate(5_010).expect("an estimate");
        assert_eq!(o.error_ms, 5);
        assert!((o.offset_ms - 2_000).unsigned_abs() <= o.error_ms, "{o:?}");
        // A clock that went backwards gives nothing.
        c.sample(ClockSample {
            sent_ms: 9_000,
            received_ms: 8_000,
            node_ms: 0,
        });
        assert_eq!(c.estimate(9_000), Some(o));
        // An old answer counts with its error widened by the drift its age allows.
        let hour = 3_600_000;
        let aged = c.estimate(5_010 + hour).expect("kept");
        assert_eq!(aged.offset_ms, o.offset_ms);
        assert_eq!(aged.error_ms, 5 + hour * DRIFT_PPM / 1_000_000);
    }

    #[test]
    fn a_deadline_in_the_nodes_clock_never_lets_it_apply_after_the_client_gave_up() {
        // Whatever the true offset within the estimate's bound, the node's clock reads at
        // least the stamped deadline when the client's reads its give-up time.
        for true_offset in [-2_000i64, -3, 0, 7, 2_000] {
            for seen in [-6i64, 0, 6] {
                let estimate = Offset {
                    offset_ms: true_offset + seen,
                    error_ms: 6,
                };
                let deadline = node_deadline(100_000, Some(estimate));
                let node_at_give_up = (100_000 + true_offset) as u64;
                assert!(deadline <= node_at_give_up, "{true_offset} {seen}");
                // And not needlessly early: within twice the error.
                assert!(node_at_give_up - deadline <= 12);
            }
        }
        assert_eq!(node_deadline(5, None), 5);
    }

    #[test]
    fn a_node_clock_that_stepped_is_believed_from_the_answers_after_the_step() {
        // A precise answer, then the node's clock steps back two minutes, then slower answers
        // that all show it (simulator seed 825907964: the old answer kept winning the tie on
        // error and the deadline was stamped two minutes late in the node's clock).
        let base = 1_767_225_600_000;
        let mut c = ClockOffset::default();
        c.sample(ClockSample {
            sent_ms: base,
            received_ms: base + 244,
            node_ms: base + 122,
        });
        for k in 1..SAMPLES_KEPT as u64 {
            let sent = base + 1_000 * k;
            c.sample(ClockSample {
                sent_ms: sent,
                received_ms: sent + 244,
                node_ms: sent + 122 - 120_000,
            });
        }
        let o = c.estimate(base + 8_000).expect("an estimate");
        assert!(
            (o.offset_ms + 120_000).unsigned_abs() <= o.error_ms,
            "{o:?}"
        );
        // Answers whose bounds overlap stay: the most precise one wins, the newest on a tie.
        let mut c = ClockOffset::default();
        for (sent, round_trip, node) in [(0, 200, 150), (1_000, 2, 1_001), (2_000, 2, 2_001)] {
            c.sample(ClockSample {
                sent_ms: sent,
                received_ms: sent + round_trip,
                node_ms: node,
            });
        }
        assert_eq!(
            c.estimate(2_002),
            Some(Offset {
                offset_ms: 0,
                error_ms: 1
            })
        );
        assert_eq!(c.samples.len(), 3, "consistent answers are all kept");
    }
}
