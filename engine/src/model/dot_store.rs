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

    /// Whether the value reads as absent.
    pub fn is_bottom(&self) -> bool {
        self.store.is_bottom()
    }

    /// Whether every present dot is covered by the context (the encoding relies on it).
    pub fn is_well_formed(&self) -> bool {
        let mut ok = true;
        self.store
            .for_each_dot(&mut |d| ok &= self.ctx.contains(&d));
        ok
    }
}
