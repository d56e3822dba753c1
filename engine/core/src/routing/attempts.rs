//! One request's way through the regions: which region to try next and when to stop. A
//! region that was not reached, or answered that it cannot serve now, passes the request on;
//! a secondary's `NotPrimary` sends it to the primary next; a write whose answer was lost
//! (sent, then nothing) is retried elsewhere only when applying it twice changes nothing, and
//! otherwise ends as unknown. The routed client of the runtime and the simulator's clients
//! both follow it.

use std::collections::VecDeque;

/// What one attempt at one region came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The region answered (the answer stands, success or refusal).
    Answered,
    /// Not applied there: not reached, or it cannot serve now.
    NotServed,
    /// It has not applied the session's writes yet (a read).
    NotYetVisible,
    /// Active-passive: it is not the primary; the primary is this region index, if known.
    NotPrimary(Option<usize>),
    /// Sent, and no answer came: applied or not.
    Lost,
}

/// What to do after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The request is answered.
    Done,
    /// Try the next region (`Attempts::next_region`).
    Continue,
    /// A write that may have been applied and may not be sent elsewhere: its outcome is
    /// unknown.
    Unknown,
}

/// The regions one request tries, in order.
#[derive(Clone, Debug)]
pub struct Attempts {
    plan: VecDeque<usize>,
    tried: Vec<usize>,
    /// Whether a lost answer may be retried elsewhere (reads, idempotent writes).
    retry_lost: bool,
    not_yet_visible: bool,
    lost: bool,
}

impl Attempts {
    /// A request trying regions in `order`; `retry_lost`: it may be applied twice safely.
    pub fn new(order: impl IntoIterator<Item = usize>, retry_lost: bool) -> Attempts {
        Attempts {
            plan: order.into_iter().collect(),
            tried: Vec::new(),
            retry_lost,
            not_yet_visible: false,
            lost: false,
        }
    }

    /// The next region to try (never one tried already), or `None` when none is left.
    pub fn next_region(&mut self) -> Option<usize> {
        while let Some(i) = self.plan.pop_front() {
            if !self.tried.contains(&i) {
                self.tried.push(i);
                return Some(i);
            }
        }
        None
    }

    /// Takes the outcome of the attempt at the region `next_region` gave last.
    pub fn record(&mut self, outcome: Outcome) -> Verdict {
        match outcome {
            Outcome::Answered => Verdict::Done,
            Outcome::NotServed => Verdict::Continue,
            Outcome::NotYetVisible => {
                self.not_yet_visible = true;
                Verdict::Continue
            }
            Outcome::NotPrimary(primary) => {
                if let Some(p) = primary.filter(|p| !self.tried.contains(p)) {
                    self.plan.push_front(p);
                }
                Verdict::Continue
            }
            Outcome::Lost if self.retry_lost => {
                self.lost = true;
                Verdict::Continue
            }
            Outcome::Lost => Verdict::Unknown,
        }
    }

    /// Whether some attempt's answer was lost: a write that then found no region to serve it
    /// may still have been applied (its outcome is unknown, not refused).
    pub fn lost_an_answer(&self) -> bool {
        self.lost
    }

    /// Whether some region had not yet applied the session's writes (when every region was
    /// tried in vain, the read is "not yet visible" rather than "no region").
    pub fn saw_not_yet_visible(&self) -> bool {
        self.not_yet_visible
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_writes_stop_unless_idempotent_and_redirects_go_first() {
        let mut counter = Attempts::new([0, 1, 2], false);
        assert_eq!(counter.next_region(), Some(0));
        assert_eq!(counter.record(Outcome::NotServed), Verdict::Continue);
        assert_eq!(counter.next_region(), Some(1));
        assert_eq!(counter.record(Outcome::Lost), Verdict::Unknown);

        let mut put = Attempts::new([0, 1, 2], true);
        assert_eq!(put.next_region(), Some(0));
        assert_eq!(put.record(Outcome::Lost), Verdict::Continue);
        assert_eq!(put.next_region(), Some(1));
        assert_eq!(put.record(Outcome::NotPrimary(Some(2))), Verdict::Continue);
        assert_eq!(put.next_region(), Some(2), "the primary next");
        assert_eq!(put.record(Outcome::NotPrimary(Some(0))), Verdict::Continue);
        assert_eq!(put.next_region(), None, "never a region twice");
        assert!(put.lost_an_answer());

        let mut read = Attempts::new([1, 0], true);
        read.next_region();
        assert_eq!(read.record(Outcome::NotYetVisible), Verdict::Continue);
        read.next_region();
        assert_eq!(read.record(Outcome::Answered), Verdict::Done);
        assert!(read.saw_not_yet_visible());
    }
}
