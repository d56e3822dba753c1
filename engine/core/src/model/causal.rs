//! Dots and version vectors: the causality layer every value type is built on.
//!
//! `VersionVector` wraps `crdts::VClock`, whose `BTreeMap` keeps the encoding canonical.
//! Within one causal value the context is downward closed per replica: `ctx[r] = n` means
//! every dot of `r` up to `n` that touched this value is reflected (present or removed).

use super::OriginId;
use crdts::{CmRDT, CvRDT, VClock};
use serde::{Deserialize, Serialize};
use std::fmt;

/// One event: the `counter`-th write made by `replica`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    /// The replica that made the write.
    pub replica: OriginId,
    /// Its per-replica sequence number, starting at 1.
    pub counter: u64,
}

impl Dot {
    /// A dot from its parts.
    pub fn new(replica: OriginId, counter: u64) -> Self {
        Dot { replica, counter }
    }
}

impl fmt::Display for Dot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.replica, self.counter)
    }
}

/// A version vector: for each replica, the highest counter seen.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VersionVector(VClock<OriginId>);

impl VersionVector {
    /// The empty vector.
    pub fn new() -> Self {
        Self::default()
    }

    /// The highest counter seen from `replica` (0 if none).
    pub fn get(&self, replica: OriginId) -> u64 {
        self.0.get(&replica)
    }

    /// Whether `dot` is covered by this vector.
    pub fn contains(&self, dot: &Dot) -> bool {
        dot.counter <= self.get(dot.replica)
    }

    /// Raises the entry of `dot.replica` to at least `dot.counter`.
    pub fn add(&mut self, dot: Dot) {
        self.0.apply(crdts::Dot::new(dot.replica, dot.counter));
    }

    /// Pointwise maximum with `other`.
    pub fn join(&mut self, other: &VersionVector) {
        self.0.merge(other.0.clone());
    }

    /// Pointwise minimum with `other`: what both vectors cover.
    pub fn meet(&self, other: &VersionVector) -> VersionVector {
        VersionVector::from_entries(self.iter().map(|(r, c)| (r, c.min(other.get(r)))))
    }

    /// Whether every entry of `other` is covered by this vector.
    pub fn dominates(&self, other: &VersionVector) -> bool {
        other.iter().all(|(r, c)| self.get(r) >= c)
    }

    /// Entries in replica order.
    pub fn iter(&self) -> impl Iterator<Item = (OriginId, u64)> + '_ {
        self.0.dots.iter().map(|(r, c)| (*r, *c))
    }

    /// Number of replicas with an entry.
    pub fn len(&self) -> usize {
        self.0.dots.len()
    }

    /// Whether no replica has an entry.
    pub fn is_empty(&self) -> bool {
        self.0.dots.is_empty()
    }

    /// This vector with the entry of `replica` lowered to at most `at_most`.
    pub fn capped(&self, replica: OriginId, at_most: u64) -> VersionVector {
        VersionVector::from_entries(
            self.iter()
                .map(|(r, c)| (r, if r == replica { c.min(at_most) } else { c })),
        )
    }

    /// Builds a vector from (replica, counter) pairs; zero counters are dropped.
    pub fn from_entries(entries: impl IntoIterator<Item = (OriginId, u64)>) -> Self {
        let mut vv = VersionVector::new();
        for (r, c) in entries {
            if c > 0 {
                vv.add(Dot::new(r, c));
            }
        }
        vv
    }
}

impl fmt::Display for VersionVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<")?;
        for (i, (r, c)) in self.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{r}:{c}")?;
        }
        write!(f, ">")
    }
}
