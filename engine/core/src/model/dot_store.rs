//! Dot stores and the causal join (Almeida, Shoker, Baquero: delta-state CRDTs).
//!
//! A causal value is a pair (store, context). The join keeps an entry when both sides hold it,
//! or when the other side has not seen its dot; an entry the other side has seen but no longer
//! holds was removed there and stays removed.

use super::{Dot, VersionVector};
use std::collections::BTreeMap;

/// A store of dots whose join is defined relative to the causal contexts of both sides.
pub trait DotStore: Default + Clone + PartialEq {
    /// Joins `other` (with context `other_ctx`) into `self` (with context `own_ctx`).
    fn join(&mut self, own_ctx: &VersionVector, other: &Self, other_ctx: &VersionVector);
    /// Whether no dot is present (the value reads as absent).
    fn is_bottom(&self) -> bool;
    /// Removes every present dot (an observed remove of everything this replica sees).
    fn remove_all(&mut self);
    /// Removes the dots covered by `ctx`.
    fn remove_covered(&mut self, ctx: &VersionVector);
    /// Calls `f` on every dot present.
    fn for_each_dot(&self, f: &mut dyn FnMut(Dot));
}

/// A map from dots to values: the store of registers, and (with `()`) of dot sets.
pub type DotFun<V> = BTreeMap<Dot, V>;

impl<V: Clone + PartialEq + Ord> DotStore for DotFun<V> {
    fn join(&mut self, own_ctx: &VersionVector, other: &Self, other_ctx: &VersionVector) {
        self.retain(|d, _| other.contains_key(d) || !other_ctx.contains(d));
        for (d, v) in other {
            match self.get_mut(d) {
                // The same dot is the same event; should two sides ever disagree, the larger
                // value wins so that the join stays commutative.
                Some(mine) if v > mine => *mine = v.clone(),
                Some(_) => {}
                None if !own_ctx.contains(d) => {
                    self.insert(*d, v.clone());
                }
                None => {}
            }
        }
    }

    fn is_bottom(&self) -> bool {
        self.is_empty()
    }

    fn remove_all(&mut self) {
        self.clear();
    }

    fn remove_covered(&mut self, ctx: &VersionVector) {
        self.retain(|d, _| !ctx.contains(d));
    }

    fn for_each_dot(&self, f: &mut dyn FnMut(Dot)) {
        self.keys().for_each(|d| f(*d));
    }
}

/// A store with its causal context: the unit every value type is built from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Causal<S> {
    /// Every dot this value has seen.
    pub ctx: VersionVector,
    /// The dots still present, with their payloads.
    pub store: S,
}

impl<S: DotStore> Causal<S> {
    /// The lattice join.
    pub fn join(&mut self, other: &Causal<S>) {
        self.store.join(&self.ctx, &other.store, &other.ctx);
        self.ctx.join(&other.ctx);
    }

    /// The join, counting as seen here everything in `seen` as well as this value's context:
    /// a replica that applied every write up to `seen` has reflected each such dot (present or
    /// removed), even after the tombstone that recorded a removal was reclaimed.
    pub fn join_seen(&mut self, other: &Causal<S>, seen: &VersionVector) {
        let mut own = self.ctx.clone();
        own.join(seen);
        self.store.join(&own, &other.store, &other.ctx);
        self.ctx.join(&other.ctx);
    }

    /// `join_seen` with a state of which more is known than its context says: its replica
    /// has applied every write in `horizon` too, so a dot `horizon` covers that it does not
    /// hold was removed there (a state-transfer sender's snapshot). Joins the state its
    /// context widened; this value's context takes only the state's own.
    pub fn join_seen_within(
        &mut self,
        other: &Causal<S>,
        seen: &VersionVector,
        horizon: &VersionVector,
    ) {
        let mut own = self.ctx.clone();
        own.join(seen);
        let mut theirs = other.ctx.clone();
        theirs.join(horizon);
        self.store.join(&own, &other.store, &theirs);
        self.ctx.join(&other.ctx);
    }

    /// Whether the value reads as absent.
    pub fn is_bottom(&self) -> bool {
        self.store.is_bottom()
    }

    /// Forgets what the context remembers only about removed dots that every replica has
    /// applied (`stable`): each replica's entry drops to its highest present dot, or goes.
    /// Safe because replicas join with everything they applied counted as seen
    /// (`join_seen`), and `stable` is below every replica's applied vector.
    pub fn normalize(&mut self, stable: &VersionVector) {
        let mut present: std::collections::BTreeMap<crate::model::OriginId, u64> =
            Default::default();
        self.store.for_each_dot(&mut |d| {
            let top = present.entry(d.replica).or_default();
            *top = (*top).max(d.counter);
        });
        self.ctx = VersionVector::from_entries(self.ctx.iter().map(|(r, c)| {
            if c > stable.get(r) {
                (r, c)
            } else {
                (r, present.get(&r).copied().unwrap_or(0))
            }
        }));
    }

    /// Whether every present dot is covered by the context (the encoding relies on it).
    pub fn is_well_formed(&self) -> bool {
        let mut ok = true;
        self.store
            .for_each_dot(&mut |d| ok &= self.ctx.contains(&d));
        ok
    }
}
