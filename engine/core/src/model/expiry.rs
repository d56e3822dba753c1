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
