//! Expiry: a key's value stops being read once the hybrid logical clock passes a time its
//! writer set, in every region alike.
//!
//! An expiry is a dotted entry of the record (`Expiries`, a causal map from the dot of the
//! write that set it to `(at, covers)`): the dots it `covers` (what its writer saw of the key)
//! read as absent at any HLC time `>= at`. The entries join as any dot store does, so
//! expiries are a lattice like the rest of the record. The rules:
//!
//! - **A write with a TTL** (an `Op::Expire` beside the write, under the same dot) replaces
//!   the expiries its replica sees with one covering everything it sees of the key.
//! - **A write without one keeps the pending expiry** (as Redis's INCR, SADD and HSET do): the
//!   expiries it sees are replaced by one at the earliest of their times, covering its write.
//! - **A concurrent write survives an expiry** it was not seen by (as a write concurrent with
//!   a delete does); two concurrent expiries both hold, so the earlier one wins for what both
//!   cover.
//! - **A write after expiry starts afresh**: before it applies, what the passed expiries
//!   cover is removed for good (an observed remove, carried with the write's state), so no
//!   element of the expired value comes back and a counter counts from zero again.
//! - **Persist** removes the expiries its replica sees; one stamped before an expiry's time
//!   wins wherever it arrives, within the skew bound of the clocks.
//! - **Reclaiming**: a passed expiry is made permanent by a `Lapsed` write (the engine issues
//!   it once the clocks of every member must have passed the time), which turns the expired
//!   value into an ordinary tombstone.

use super::{Causal, Dot, DotFun, DotStore, Hlc, VersionVector};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// What an `Op::Expire` sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expiry {
    /// Expires this many milliseconds after the write's HLC time (a time to live).
    After(u64),
    /// Expires at this wall time, in milliseconds since the Unix epoch.
    At(u64),
    /// Removes every pending expiry this replica sees (persist).
    Never,
    /// Changes nothing but makes permanent what passed expiries hid (the engine's reclaim).
    Lapsed,
}

/// One pending expiry: the dots it covers read as absent from HLC time `at` on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpiryEntry {
    /// The HLC time from which the covered dots are not read.
    pub at: Hlc,
    /// The dots it covers: what its writer had seen of the key, its own write included.
    pub covers: VersionVector,
}

impl Ord for ExpiryEntry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.at
            .cmp(&other.at)
            .then_with(|| self.covers.iter().cmp(other.covers.iter()))
    }
}

impl PartialOrd for ExpiryEntry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A record's expiries: dotted entries with their context.
pub type Expiries = Causal<DotFun<ExpiryEntry>>;

/// The HLC time an `Expiry::After` or `At` written at `marker` sets; `None` for the others.
pub fn expiry_time(expiry: Expiry, marker: Hlc) -> Option<Hlc> {
    match expiry {
        Expiry::After(ms) => Some(Hlc::from_millis(marker.millis().saturating_add(ms))),
        Expiry::At(unix_ms) => Some(Hlc::from_millis(unix_ms)),
        Expiry::Never | Expiry::Lapsed => None,
    }
}

/// The entries whose time has come at `now`.
pub fn passed(e: &Expiries, now: Hlc) -> impl Iterator<Item = &ExpiryEntry> {
    e.store.values().filter(move |x| x.at <= now)
}

/// The earliest time of any entry.
pub fn earliest(e: &Expiries) -> Option<Hlc> {
    e.store.values().map(|x| x.at).min()
}

/// Removes every entry (an observed remove) and records `dot` as seen.
pub fn clear_at(e: &mut Expiries, dot: Dot) {
    e.store.remove_all();
    e.ctx.add(dot);
}

/// Replaces every entry with one at `dot`.
pub fn replace(e: &mut Expiries, dot: Dot, entry: ExpiryEntry) {
    clear_at(e, dot);
    e.store.insert(dot, entry);
}

/// Calls `f` on the dot of every entry.
pub fn for_each_dot(e: &Expiries, f: &mut dyn FnMut(Dot)) {
    e.store.for_each_dot(f);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::model::{counter, Dot, Expiry, Hlc, Op, OriginId, Record, Stamp, Value};

    fn stamp(origin: u64, counter: u64, ms: u64) -> Stamp {
        Stamp {
            dot: Dot::new(OriginId(origin), counter),
            marker: Hlc::from_millis(ms),
        }
    }

    fn add(r: &mut Record, elem: &str, s: Stamp) {
        let elems = vec![elem.as_bytes().to_vec()];
        r.apply(Op::SetAdd { elems }, s).unwrap();
    }

    fn ttl(r: &mut Record, ms: u64, s: Stamp) {
        r.apply(
            Op::Expire {
                expiry: Expiry::After(ms),
            },
            s,
        )
        .unwrap();
    }

    fn elems(r: &Record, now: u64) -> Vec<String> {
        match r
            .visible_at(Hlc::from_millis(now))
            .get(crate::model::Kind::Set)
        {
            Some(Value::Set(s)) => s
                .store
                .keys()
                .map(|e| String::from_utf8(e.clone()).unwrap())
                .collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn a_write_concurrent_with_an_expire_survives_it() {
        let mut a = Record::default();
        add(&mut a, "x", stamp(1, 1, 0));
        let mut b = a.clone();
        ttl(&mut a, 100, stamp(1, 2, 10));
        add(&mut b, "y", stamp(2, 1, 10));
        a.join(&b);
        assert_eq!(elems(&a, 109), vec!["x", "y"]);
        assert_eq!(elems(&a, 110), vec!["y"]);
    }

    #[test]
    fn of_two_concurrent_ttls_the_earlier_wins_for_what_both_cover() {
        let mut a = Record::default();
        add(&mut a, "x", stamp(1, 1, 0));
        let mut b = a.clone();
        ttl(&mut a, 1_000, stamp(1, 2, 10));
        ttl(&mut b, 50, stamp(2, 1, 10));
        a.join(&b);
        assert_eq!(elems(&a, 59), vec!["x"]);
        assert!(elems(&a, 60).is_empty());
    }

    #[test]
    fn a_write_after_expiry_starts_afresh_even_joined_with_a_copy_from_before() {
        let mut a = Record::default();
        add(&mut a, "old", stamp(1, 1, 0));
        ttl(&mut a, 100, stamp(1, 2, 0));
        let before = a.clone();
        add(&mut a, "new", stamp(1, 3, 200));
        a.join(&before);
        // Read even at a time before the expiry: the old element was removed, not hidden.
        assert_eq!(elems(&a, 0), vec!["new"]);
        assert_eq!(a.expires_at(), None);
    }

    #[test]
    fn a_counter_with_a_ttl_counts_from_zero_after_it() {
        let mut r = Record::default();
        let s1 = stamp(1, 1, 0);
        r.apply(Op::CounterAdd { delta: 5 }, s1).unwrap();
        ttl(&mut r, 100, stamp(1, 2, 0));
        r.apply(Op::CounterAdd { delta: 1 }, stamp(1, 3, 150))
            .unwrap();
        let Some(Value::Counter(c)) = r.get(crate::model::Kind::Counter) else {
            panic!("a counter")
        };
        assert_eq!(counter::value(c), 1);
    }

    #[test]
    fn a_key_deleted_and_written_again_does_not_inherit_a_concurrent_expiry() {
        let mut a = Record::default();
        add(&mut a, "x", stamp(1, 1, 0));
        let mut b = a.clone();
        a.apply(Op::Delete, stamp(1, 2, 10)).unwrap();
        ttl(&mut b, 100, stamp(2, 1, 10));
        a.join(&b);
        add(&mut a, "y", stamp(1, 3, 20));
        assert_eq!(a.expires_at(), None);
        assert_eq!(elems(&a, 1_000), vec!["y"]);
    }
}
