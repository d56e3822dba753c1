//! The stated exceptions to invariant I1 ("if the applied vector covers a write, the records
//! reflect it"): writes and keys' states a replica applied without holding them, because no
//! reachable member could supply them within the bound and they were declared lost.
//!
//! - A *lost write* `(origin, seq)`: nothing of it is held (a number missing from a log that
//!   nobody else held; its keys are unknown). Joins here count the origin as seen only below
//!   its first lost write, so a copy of it that surfaces later is kept, not pruned.
//! - An *uncertain key* (by key hash): a sender left its state out of what it shipped
//!   (unreadable, corrupt, grown past a frame), so the record here may lack writes the vector
//!   covers. Joins into it do not prune by the vector, so a good copy that arrives later wins.
//!
//! State transfers carry the sender's exceptions: the receiver neither erases a record nor
//! prunes a dot on the account of a snapshot that does not vouch for it, and takes the
//! exceptions on with the snapshot. Partial log entries carry theirs the same way. Both stores
//! keep one `ExceptionSet` (the engine persists it), bounded: beyond `EXCEPTIONS_MAX` of a kind
//! the oldest are forgotten, which only makes later joins prune as they normally would.

use super::frame::{Exceptions, EXCEPTIONS_MAX};
use crate::model::digest::key_hash;
use crate::model::{OriginId, VersionVector};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// The exceptions a replica holds (see the module documentation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExceptionSet {
    lost: BTreeSet<(OriginId, u64)>,
    lost_order: VecDeque<(OriginId, u64)>,
    uncertain: BTreeSet<u64>,
    uncertain_order: VecDeque<u64>,
}

/// What adding exceptions changed, for the store to persist.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExceptionChange {
    /// Lost writes added.
    pub lost_added: Vec<(OriginId, u64)>,
    /// Lost writes forgotten to stay within the bound.
    pub lost_forgotten: Vec<(OriginId, u64)>,
    /// Uncertain key hashes added.
    pub uncertain_added: Vec<u64>,
    /// Uncertain key hashes forgotten to stay within the bound.
    pub uncertain_forgotten: Vec<u64>,
}

impl ExceptionChange {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.lost_added.is_empty()
            && self.lost_forgotten.is_empty()
            && self.uncertain_added.is_empty()
            && self.uncertain_forgotten.is_empty()
    }
}

impl ExceptionSet {
    /// Whether there is none (the usual case: joins then use the applied vector as it is).
    pub fn is_empty(&self) -> bool {
        self.lost.is_empty() && self.uncertain.is_empty()
    }

    /// How many lost writes and uncertain keys are held.
    pub fn counts(&self) -> (usize, usize) {
        (self.lost.len(), self.uncertain.len())
    }

    /// Adds what `more` names; returns what changed.
    pub fn absorb(&mut self, more: &Exceptions) -> ExceptionChange {
        let mut change = ExceptionChange::default();
        for dot in more.lost.iter().take(EXCEPTIONS_MAX) {
            if self.lost.insert(*dot) {
                self.lost_order.push_back(*dot);
                change.lost_added.push(*dot);
            }
        }
        while self.lost_order.len() > EXCEPTIONS_MAX {
            if let Some(old) = self.lost_order.pop_front() {
                self.lost.remove(&old);
                change.lost_forgotten.push(old);
            }
        }
        for hash in more.uncertain.iter().take(EXCEPTIONS_MAX) {
            if self.uncertain.insert(*hash) {
                self.uncertain_order.push_back(*hash);
                change.uncertain_added.push(*hash);
            }
        }
        while self.uncertain_order.len() > EXCEPTIONS_MAX {
            if let Some(old) = self.uncertain_order.pop_front() {
                self.uncertain.remove(&old);
                change.uncertain_forgotten.push(old);
            }
        }
        change
    }

    /// The exceptions as state transfer carries them.
    pub fn to_wire(&self) -> Exceptions {
        Exceptions {
            lost: self.lost_order.iter().copied().collect(),
            uncertain: self.uncertain_order.iter().copied().collect(),
        }
    }

    /// Whether the state of `key` may lack writes the applied vector covers.
    pub fn is_uncertain(&self, key: &[u8]) -> bool {
        !self.uncertain.is_empty() && self.uncertain.contains(&key_hash(key))
    }

    /// What a join into `key` may count as seen, given the applied vector `applied`: all of
    /// it normally; below each origin's first lost write; nothing for an uncertain key.
    pub fn seen_for<'a>(&self, key: &[u8], applied: &'a VersionVector) -> Cow<'a, VersionVector> {
        if self.is_empty() {
            return Cow::Borrowed(applied);
        }
        if self.is_uncertain(key) {
            return Cow::Owned(VersionVector::new());
        }
        Cow::Owned(cap_below(applied, &self.lost))
    }
}

/// `vector` capped, per origin, below the first of `lost` (what it vouches for).
pub fn cap_below(vector: &VersionVector, lost: &BTreeSet<(OriginId, u64)>) -> VersionVector {
    if lost.is_empty() {
        return vector.clone();
    }
    let mut first: BTreeMap<OriginId, u64> = BTreeMap::new();
    for (origin, seq) in lost {
        first.entry(*origin).or_insert(*seq);
    }
    VersionVector::from_entries(vector.iter().map(|(o, s)| match first.get(&o) {
        Some(f) => (o, s.min(f.saturating_sub(1))),
        None => (o, s),
    }))
}

/// A snapshot as a state transfer's receiver trusts it for joins and erasures: below the
/// sender's first lost write of each origin.
pub fn horizon_of(snapshot: &VersionVector, exceptions: &Exceptions) -> VersionVector {
    let lost: BTreeSet<(OriginId, u64)> = exceptions.lost.iter().copied().collect();
    cap_below(snapshot, &lost)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Dot;

    fn vv(entries: &[(u64, u64)]) -> VersionVector {
        let mut v = VersionVector::new();
        for (r, s) in entries {
            v.add(Dot::new(OriginId(*r), *s));
        }
        v
    }

    #[test]
    fn joins_see_below_lost_writes_and_nothing_of_uncertain_keys() {
        let mut set = ExceptionSet::default();
        let applied = vv(&[(1, 10), (2, 5)]);
        assert_eq!(*set.seen_for(b"k", &applied), applied);
        let change = set.absorb(&Exceptions {
            lost: vec![(OriginId(1), 7), (OriginId(1), 9)],
            uncertain: vec![key_hash(b"u")],
        });
        assert_eq!(change.lost_added.len(), 2);
        assert_eq!(*set.seen_for(b"k", &applied), vv(&[(1, 6), (2, 5)]));
        assert!(set.seen_for(b"u", &applied).is_empty());
        assert!(set.absorb(&set.to_wire()).is_empty(), "idempotent");
    }

    #[test]
    fn the_oldest_are_forgotten_beyond_the_bound() {
        let mut set = ExceptionSet::default();
        let many = Exceptions {
            lost: (1..=EXCEPTIONS_MAX as u64 + 5)
                .map(|s| (OriginId(1), s))
                .collect(),
            uncertain: vec![],
        };
        // One message is cut to the bound; a second pushes the oldest out.
        set.absorb(&many);
        assert_eq!(set.counts().0, EXCEPTIONS_MAX);
        let change = set.absorb(&Exceptions {
            lost: vec![(OriginId(2), 1)],
            uncertain: vec![],
        });
        assert_eq!(change.lost_forgotten, vec![(OriginId(1), 1)]);
        assert_eq!(set.counts().0, EXCEPTIONS_MAX);
    }
}
