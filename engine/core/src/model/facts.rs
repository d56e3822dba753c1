//! What a replica applying a peer's record state needs to know of it without decoding it:
//! `codec::check_record` finds these in the encoding, `StateFacts::of` in a decoded record.

use super::{Dot, Hlc, Record, VersionVector};
use smallvec::SmallVec;

/// The facts of one record state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateFacts {
    /// The lowest counter of each replica among the state's dots, in replica order: a
    /// version vector covers one of the state's dots exactly when it covers one of these.
    pub lowest_dots: SmallVec<[Dot; 2]>,
    /// The largest last-writer-wins marker in the state.
    pub max_marker: Option<Hlc>,
    /// Whether the state holds no value (a tombstone).
    pub bottom: bool,
}

impl StateFacts {
    /// The facts of a decoded state.
    pub fn of(record: &Record) -> StateFacts {
        let mut facts = StateFacts {
            max_marker: record.max_marker(),
            bottom: record.is_bottom(),
            ..StateFacts::default()
        };
        for value in record.values.values() {
            value.for_each_dot(&mut |dot| facts.note_dot(dot));
        }
        super::expiry::for_each_dot(&record.expiries, &mut |dot| facts.note_dot(dot));
        facts
    }

    /// `Record::has_dot_in` of the state.
    pub fn has_dot_in(&self, seen: &VersionVector) -> bool {
        self.lowest_dots.iter().any(|d| seen.contains(d))
    }

    /// Counts a dot of the state.
    pub(crate) fn note_dot(&mut self, dot: Dot) {
        // Kept in replica order, so that the facts of one state are equal however its dots
        // were met (the checker walks the bytes, `of` the decoded values).
        match self
            .lowest_dots
            .binary_search_by_key(&dot.replica, |d| d.replica)
        {
            Ok(i) => self.lowest_dots[i].counter = self.lowest_dots[i].counter.min(dot.counter),
            Err(i) => self.lowest_dots.insert(i, dot),
        }
    }

    /// Counts a last-writer-wins marker of the state.
    pub(crate) fn note_marker(&mut self, marker: Hlc) {
        self.max_marker = self.max_marker.max(Some(marker));
    }
}
