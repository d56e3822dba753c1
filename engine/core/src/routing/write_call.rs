//! One write's way through the regions, as a state machine with time as an argument: which
//! region to send it to next, with what deadline, what each answer means, when to wait and
//! when the outcome is final. The routed client of the runtime drives it over QUIC; the
//! simulator drives it over its simulated regions.
//!
//! The rules:
//!
//! - Regions are tried in the order given ([`Attempts`]): one that was not reached, that
//!   cannot serve now, or that has not yet applied what the session wrote or read of the
//!   keys (`NotYetVisible`, nothing written) passes the write on; a secondary's `NotPrimary`
//!   sends it to the primary next.
//! - Each attempt carries a deadline in the region's clock ([`node_deadline`]): the client's
//!   clock when it sends, plus the attempt's budget ([`attempt_budget_ms`]), less what the
//!   clock estimate may be off by. A region refuses a write it would start applying later.
//! - A lost answer (sent, then nothing: the region may have applied it) is waited out until
//!   the attempt's deadline, so that the region can no longer apply it once the next region
//!   is asked. Then a write that applying twice does not change (`Op::is_idempotent`) goes
//!   to the next region, reported `retried_after_lost` when it is written there; any other
//!   write ends `Unknown`.
//! - After a lost answer, a refusal from another region says nothing of the first attempt:
//!   the outcome is `Unknown`, as it is when every other region failed to take it.
//! - A region's own final answer stands: written, refused (every region would refuse it), or
//!   unknown (it applied it but cannot tell that it is durable where asked).

use super::attempts::{Attempts, Outcome, Verdict};
use super::clock_offset::{node_deadline, Offset};

/// What one attempt at one region came to, as its driver saw it. `T` is what a written
/// answer carries (a causal token), `E` a region's refusal.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer<T, E> {
    /// The region applied it (or had, under the same request id): the write's result.
    Written(T),
    /// Not applied there, and the next region may serve it: not reached (nothing sent), or
    /// it cannot serve now (recovering, too few regions reachable, its deadline passed when
    /// it got to it). The reason, for the caller's error.
    NotServed(String),
    /// The region has not applied what the session wrote or read of the keys: nothing was
    /// written.
    NotYetVisible(String),
    /// Active-passive: the region is not the primary; the primary's index, when known.
    NotPrimary(String, Option<usize>),
    /// Sent, and no answer came: the region may have applied it.
    Lost(String),
    /// A final refusal (bad request, wrong type, role, ...): nothing was applied there and
    /// any other region would refuse it too.
    Refused(E),
    /// The region answered that the write's outcome is unknown (applied there, and not known
    /// durable where asked).
    Unknown(E),
}

/// Why a write's outcome is unknown.
#[derive(Clone, Debug, PartialEq)]
pub enum UnknownCause<E> {
    /// The region said so.
    Answered(E),
    /// Its answer was lost, and the write may not be applied twice: not retried elsewhere.
    NotRetried(String),
    /// An earlier attempt's answer was lost, then a region refused it.
    RefusedAfterLost(E),
    /// An answer was lost and no other region took it.
    NoOtherRegion,
}

/// How a write ended.
#[derive(Clone, Debug, PartialEq)]
pub enum WriteOutcome<T, E> {
    /// Written in `region`.
    Written {
        /// The region's answer.
        value: T,
        /// The region (index) that took it.
        region: usize,
        /// An earlier attempt's answer was lost: that region may have applied it too.
        retried_after_lost: bool,
    },
    /// Refused by `region`, with nothing applied anywhere.
    Refused {
        /// The region that refused it.
        region: usize,
        /// Its answer.
        error: E,
    },
    /// It may or may not have been applied.
    Unknown {
        /// The region that may hold it (`None`: some region whose answer was lost).
        region: Option<usize>,
        /// Why.
        cause: UnknownCause<E>,
    },
    /// Every region that answered lacked what the session wrote or read of the keys:
    /// nothing was written.
    NotYetVisible,
    /// No region took it, and none may have: nothing was written.
    NoRegion,
}

impl<T, E> WriteOutcome<T, E> {
    /// Whether the outcome says nothing was applied anywhere.
    pub fn is_definite_failure(&self) -> bool {
        matches!(
            self,
            WriteOutcome::Refused { .. } | WriteOutcome::NotYetVisible | WriteOutcome::NoRegion
        )
    }
}

/// What the driver does next.
#[derive(Clone, Debug, PartialEq)]
pub enum Step<T, E> {
    /// Send the write to this region: stamp it with [`WriteCall::sent`]'s deadline once it
    /// can go (connected), or report [`Answer::NotServed`] when it cannot; then report its
    /// answer with [`WriteCall::on_answer`].
    Send(usize),
    /// Nothing before this time (the driver's clock): a region whose answer was lost may
    /// start applying the write until then.
    Wait {
        /// When to call [`WriteCall::next`] again.
        until_ms: u64,
    },
    /// The outcome (final).
    Done(WriteOutcome<T, E>),
}

/// How long a write's attempt at a region may take to start applying: the connection's
/// liveness (a region silent that long is left) and two round trips (the connection's timeout
/// when no round trip is known yet), at most the request timeout.
pub fn attempt_budget_ms(
    liveness_ms: u64,
    rtt_ms: Option<f64>,
    connect_timeout_ms: u64,
    request_timeout_ms: u64,
) -> u64 {
    let rtt = rtt_ms.map_or(connect_timeout_ms, |ms| ms.max(0.0).ceil() as u64);
    liveness_ms
        .saturating_add(rtt.saturating_mul(2))
        .min(request_timeout_ms)
}

/// The attempt under way or just ended.
#[derive(Clone, Debug)]
enum State {
    /// Ready to pick the next region.
    Ready,
    /// Sent (or about to be) to `region`; `give_up_ms`: when it can no longer start
    /// applying it (`None`: not stamped yet, nothing sent).
    Sent {
        region: usize,
        give_up_ms: Option<u64>,
    },
    /// After a lost answer at `region`: nothing until `until_ms`, then the next region, or
    /// (`unknown`) the end.
    Waiting {
        region: usize,
        until_ms: u64,
        unknown: Option<String>,
    },
    /// Over.
    Finished,
}

/// One write's way through the regions (see the module's rules).
#[derive(Clone, Debug)]
pub struct WriteCall {
    attempts: Attempts,
    state: State,
    /// Some attempt's answer was lost.
    lost: bool,
    /// What each attempt that did not end the call came to.
    reasons: Vec<String>,
    /// Attempts sent (stamped).
    sent: u32,
}

impl WriteCall {
    /// A write trying regions in `order` (indices, nearest healthy first); `idempotent`:
    /// applying it twice changes nothing, so a lost answer may be retried elsewhere.
    pub fn new(order: impl IntoIterator<Item = usize>, idempotent: bool) -> WriteCall {
        WriteCall {
            attempts: Attempts::new(order, idempotent),
            state: State::Ready,
            lost: false,
            reasons: Vec::new(),
            sent: 0,
        }
    }

    /// What to do at `now_ms` (the driver's clock, the one `Wait` is in).
    pub fn next<T, E>(&mut self, now_ms: u64) -> Step<T, E> {
        match &self.state {
            State::Finished => Step::Done(WriteOutcome::NoRegion),
            State::Sent { give_up_ms, .. } => {
                // The driver owes an answer; until it gives one, nothing else happens.
                Step::Wait {
                    until_ms: give_up_ms.unwrap_or(now_ms),
                }
            }
            State::Waiting {
                region,
                until_ms,
                unknown,
            } => {
                if now_ms < *until_ms {
                    return Step::Wait {
                        until_ms: *until_ms,
                    };
                }
                if let Some(reason) = unknown {
                    let (region, reason) = (*region, reason.clone());
                    return self.finish(WriteOutcome::Unknown {
                        region: Some(region),
                        cause: UnknownCause::NotRetried(reason),
                    });
                }
                self.state = State::Ready;
                self.next(now_ms)
            }
            State::Ready => match self.attempts.next_region() {
                Some(region) => {
                    self.state = State::Sent {
                        region,
                        give_up_ms: None,
                    };
                    Step::Send(region)
                }
                None if self.attempts.lost_an_answer() => self.finish(WriteOutcome::Unknown {
                    region: None,
                    cause: UnknownCause::NoOtherRegion,
                }),
                // Nothing was written: every region that answered lacked what the session
                // wrote or read of the keys (the region that holds it is down or cut off).
                None if self.attempts.saw_not_yet_visible() => {
                    self.finish(WriteOutcome::NotYetVisible)
                }
                None => self.finish(WriteOutcome::NoRegion),
            },
        }
    }

    /// The write goes to the region `next` named, now (`now_ms`: the driver's clock;
    /// `wall_ms`: the client's wall clock), given the attempt's budget and the region's clock
    /// as its answers show it: returns the deadline to stamp on it, in the region's clock.
    pub fn sent(
        &mut self,
        now_ms: u64,
        wall_ms: u64,
        budget_ms: u64,
        offset: Option<Offset>,
    ) -> u64 {
        if let State::Sent { give_up_ms, .. } = &mut self.state {
            *give_up_ms = Some(now_ms.saturating_add(budget_ms));
            self.sent += 1;
        }
        node_deadline(wall_ms.saturating_add(budget_ms), offset)
    }

    /// Takes the answer of the attempt `next` sent, at `now_ms` (the driver's clock): the
    /// outcome when it ends the write, else `None` (ask `next`).
    pub fn on_answer<T, E>(
        &mut self,
        answer: Answer<T, E>,
        now_ms: u64,
    ) -> Option<WriteOutcome<T, E>> {
        let State::Sent { region, give_up_ms } = self.state.clone() else {
            return None;
        };
        let lost = self.lost;
        let (outcome, reason) = match answer {
            Answer::Written(value) => {
                return self.end(WriteOutcome::Written {
                    value,
                    region,
                    retried_after_lost: lost,
                })
            }
            // A refusal here says nothing of an earlier attempt whose answer was lost.
            Answer::Refused(error) if lost => {
                return self.end(WriteOutcome::Unknown {
                    region: Some(region),
                    cause: UnknownCause::RefusedAfterLost(error),
                })
            }
            Answer::Refused(error) => return self.end(WriteOutcome::Refused { region, error }),
            Answer::Unknown(error) => {
                return self.end(WriteOutcome::Unknown {
                    region: Some(region),
                    cause: UnknownCause::Answered(error),
                })
            }
            Answer::NotServed(r) => (Outcome::NotServed, r),
            Answer::NotYetVisible(r) => (Outcome::NotYetVisible, r),
            Answer::NotPrimary(r, primary) => (Outcome::NotPrimary(primary), r),
            Answer::Lost(r) => {
                self.lost = true;
                (Outcome::Lost, r)
            }
        };
        let verdict = self.attempts.record(outcome);
        let was_lost = outcome == Outcome::Lost;
        let unknown = (verdict == Verdict::Unknown).then(|| reason.clone());
        if unknown.is_none() {
            self.reasons.push(reason);
        }
        // The region may still hold a write whose answer was lost: nothing more until it can
        // no longer start applying it.
        let until_ms = give_up_ms.filter(|_| was_lost).unwrap_or(now_ms);
        self.state = State::Waiting {
            region,
            until_ms,
            unknown,
        };
        None
    }

    fn finish<T, E>(&mut self, outcome: WriteOutcome<T, E>) -> Step<T, E> {
        self.state = State::Finished;
        Step::Done(outcome)
    }

    fn end<T, E>(&mut self, outcome: WriteOutcome<T, E>) -> Option<WriteOutcome<T, E>> {
        self.state = State::Finished;
        Some(outcome)
    }

    /// What each attempt that did not end the call came to, in order.
    pub fn reasons(&self) -> &[String] {
        &self.reasons
    }

    /// Whether some attempt's answer was lost.
    pub fn lost_an_answer(&self) -> bool {
        self.lost
    }

    /// Attempts sent so far.
    pub fn attempts_sent(&self) -> u32 {
        self.sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type S = Step<u64, &'static str>;

    fn send(call: &mut WriteCall, now: u64) -> usize {
        match call.next::<u64, &str>(now) {
            Step::Send(r) => r,
            other => panic!("expected a send at {now}, got {other:?}"),
        }
    }

    #[test]
    fn an_idempotent_write_waits_out_a_lost_answer_then_goes_on() {
        let mut call = WriteCall::new([2, 0, 1], true);
        assert_eq!(send(&mut call, 0), 2);
        // The region's clock is 5 s ahead, known within 10 ms.
        let offset = Some(Offset {
            offset_ms: 5_000,
            error_ms: 10,
        });
        assert_eq!(
            call.sent(0, 1_000, 1_200, offset),
            1_000 + 1_200 + 5_000 - 10
        );
        assert_eq!(
            call.on_answer::<u64, &str>(Answer::Lost("gone".into()), 300),
            None
        );
        assert_eq!(call.next::<u64, &str>(300), S::Wait { until_ms: 1_200 });
        assert_eq!(call.next::<u64, &str>(1_199), S::Wait { until_ms: 1_200 });
        assert_eq!(send(&mut call, 1_200), 0);
        call.sent(1_200, 2_200, 1_200, None);
        let done = call.on_answer::<u64, &str>(Answer::Written(7), 1_300);
        assert_eq!(
            done,
            Some(WriteOutcome::Written {
                value: 7,
                region: 0,
                retried_after_lost: true
            })
        );
        assert_eq!(call.attempts_sent(), 2);
    }

    #[test]
    fn a_counter_add_whose_answer_was_lost_ends_unknown_after_the_deadline() {
        let mut call = WriteCall::new([0, 1], false);
        send(&mut call, 0);
        call.sent(0, 0, 1_000, None);
        assert_eq!(
            call.on_answer::<u64, &str>(Answer::Lost("x".into()), 50),
            None
        );
        assert_eq!(call.next::<u64, &str>(50), S::Wait { until_ms: 1_000 });
        assert_eq!(
            call.next::<u64, &str>(1_000),
            S::Done(WriteOutcome::Unknown {
                region: Some(0),
                cause: UnknownCause::NotRetried("x".into())
            })
        );
    }

    #[test]
    fn refusals_are_final_and_unknown_after_a_lost_answer() {
        let mut call = WriteCall::new([0, 1, 2], true);
        send(&mut call, 0);
        call.on_answer::<u64, &str>(Answer::NotServed("unreachable".into()), 0);
        assert_eq!(send(&mut call, 0), 1);
        call.sent(0, 0, 100, None);
        call.on_answer::<u64, &str>(Answer::Lost("lost".into()), 10);
        assert_eq!(send(&mut call, 100), 2);
        assert_eq!(
            call.on_answer(Answer::<u64, &str>::Refused("wrong type"), 120),
            Some(WriteOutcome::Unknown {
                region: Some(2),
                cause: UnknownCause::RefusedAfterLost("wrong type")
            })
        );
        assert_eq!(call.reasons(), ["unreachable", "lost"]);

        let mut call = WriteCall::new([0, 1], true);
        send(&mut call, 0);
        let done = call.on_answer(Answer::<u64, &str>::Refused("wrong type"), 0);
        assert!(done.is_some_and(|o| o.is_definite_failure()));
    }

    #[test]
    fn not_yet_visible_everywhere_writes_nothing_and_lost_then_nothing_is_unknown() {
        let mut call = WriteCall::new([0, 1], true);
        send(&mut call, 0);
        call.on_answer::<u64, &str>(Answer::NotYetVisible("behind".into()), 0);
        send(&mut call, 0);
        call.on_answer::<u64, &str>(Answer::NotServed("down".into()), 0);
        assert_eq!(
            call.next::<u64, &str>(0),
            S::Done(WriteOutcome::NotYetVisible)
        );

        let mut call = WriteCall::new([0, 1], true);
        send(&mut call, 0);
        call.sent(0, 0, 10, None);
        call.on_answer::<u64, &str>(Answer::Lost("lost".into()), 0);
        send(&mut call, 10);
        call.on_answer::<u64, &str>(Answer::NotYetVisible("behind".into()), 10);
        assert_eq!(
            call.next::<u64, &str>(10),
            S::Done(WriteOutcome::Unknown {
                region: None,
                cause: UnknownCause::NoOtherRegion
            })
        );

        let mut call = WriteCall::new([0, 1], true);
        send(&mut call, 0);
        call.on_answer::<u64, &str>(Answer::NotPrimary("secondary".into(), Some(1)), 0);
        assert_eq!(send(&mut call, 0), 1, "the primary next");
        call.on_answer::<u64, &str>(Answer::NotServed("down".into()), 0);
        assert_eq!(call.next::<u64, &str>(0), S::Done(WriteOutcome::NoRegion));
    }

    #[test]
    fn the_budget_is_liveness_and_two_round_trips_within_the_request_timeout() {
        assert_eq!(attempt_budget_ms(1_000, Some(40.2), 1_000, 15_000), 1_082);
        assert_eq!(attempt_budget_ms(1_000, None, 1_000, 15_000), 3_000);
        assert_eq!(
            attempt_budget_ms(1_000, Some(20_000.0), 1_000, 15_000),
            15_000
        );
    }
}
