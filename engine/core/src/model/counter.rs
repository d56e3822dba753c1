//! PN-counter with observed-reset delete.
//!
//! Each replica has one live entry (its running totals, tagged with the dot of its last change).
//! A delete removes the entries it saw and records their totals in `base`; the value counts only
//! what lies above `base`, so an increment concurrent with a delete survives, and only it.

use super::{Causal, Dot, DotFun, DotStore, OriginId, VersionVector};
use std::collections::BTreeMap;

/// Running totals of one replica: increments and decrements, both monotone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Totals {
    /// Sum of increments.
    pub inc: u64,
    /// Sum of decrements (as a positive number).
    pub dec: u64,
}

impl Totals {
    fn pointwise_max(self, other: Totals) -> Totals {
        Totals {
            inc: self.inc.max(other.inc),
            dec: self.dec.max(other.dec),
        }
    }
}

fn raise_base(base: &mut BTreeMap<OriginId, Totals>, replica: OriginId, t: Totals) {
    let slot = base.entry(replica).or_default();
    *slot = slot.pointwise_max(t);
}

/// The counter's store.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counter {
    /// Live entries, at most one per replica once joined.
    pub entries: DotFun<Totals>,
    /// Totals already reset by deletes, per replica.
    pub base: BTreeMap<OriginId, Totals>,
}

/// Error: the counter's running total would leave 64 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterOverflow;

impl DotStore for Counter {
    fn join(&mut self, own_ctx: &VersionVector, other: &Self, other_ctx: &VersionVector) {
        self.entries.join(own_ctx, &other.entries, other_ctx);
        for (r, t) in &other.base {
            raise_base(&mut self.base, *r, *t);
        }
    }

    fn is_bottom(&self) -> bool {
        self.entries.is_empty()
    }

    fn remove_all(&mut self) {
        for (d, t) in std::mem::take(&mut self.entries) {
            raise_base(&mut self.base, d.replica, t);
        }
    }

    fn remove_covered(&mut self, ctx: &VersionVector) {
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.entries)
            .into_iter()
            .partition(|(d, _)| ctx.contains(d));
        self.entries = kept.into_iter().collect();
        for (d, t) in gone {
            raise_base(&mut self.base, d.replica, t);
        }
    }

    fn for_each_dot(&self, f: &mut dyn FnMut(Dot)) {
        self.entries.keys().for_each(|d| f(*d));
    }
}

/// Adds `delta` on behalf of `dot.replica`.
pub fn add(c: &mut Causal<Counter>, dot: Dot, delta: i64) -> Result<(), CounterOverflow> {
    let mut own = c.store.base.get(&dot.replica).copied().unwrap_or_default();
    for (d, t) in &c.store.entries {
        if d.replica == dot.replica {
            own = own.pointwise_max(*t);
        }
    }
    let magnitude = delta.unsigned_abs();
    if delta >= 0 {
        own.inc = own.inc.checked_add(magnitude).ok_or(CounterOverflow)?;
    } else {
        own.dec = own.dec.checked_add(magnitude).ok_or(CounterOverflow)?;
    }
    c.store.entries.retain(|d, _| d.replica != dot.replica);
    c.store.entries.insert(dot, own);
    c.ctx.add(dot);
    Ok(())
}

/// The counter's value, clamped to the range of `i64`.
pub fn value(c: &Causal<Counter>) -> i64 {
    let mut sum: i128 = 0;
    for (d, t) in &c.store.entries {
        let b = c.store.base.get(&d.replica).copied().unwrap_or_default();
        sum += i128::from(t.inc.saturating_sub(b.inc)) - i128::from(t.dec.saturating_sub(b.dec));
    }
    sum.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}
