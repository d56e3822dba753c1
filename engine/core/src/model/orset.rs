//! Observed-remove set (add wins): each element holds the dots of the adds that put it there.

use super::{Causal, Dot, DotFun, DotStore, VersionVector};
use std::collections::BTreeMap;

/// The set's store: element -> dots of the adds still present.
pub type OrSet = BTreeMap<Vec<u8>, DotFun<()>>;

impl DotStore for OrSet {
    fn join(&mut self, own_ctx: &VersionVector, other: &Self, other_ctx: &VersionVector) {
        for (elem, theirs) in other {
            let mine = self.entry(elem.clone()).or_default();
            mine.join(own_ctx, theirs, other_ctx);
        }
        let empty = DotFun::new();
        for (elem, mine) in self.iter_mut() {
            if !other.contains_key(elem) {
                mine.join(own_ctx, &empty, other_ctx);
            }
        }
        self.retain(|_, dots| !dots.is_empty());
    }

    fn is_bottom(&self) -> bool {
        self.is_empty()
    }

    fn remove_all(&mut self) {
        self.clear();
    }

    fn remove_covered(&mut self, ctx: &VersionVector) {
        for dots in self.values_mut() {
            dots.retain(|d, _| !ctx.contains(d));
        }
        self.retain(|_, dots| !dots.is_empty());
    }

    fn for_each_dot(&self, f: &mut dyn FnMut(Dot)) {
        for dots in self.values() {
            dots.keys().for_each(|d| f(*d));
        }
    }
}

/// Adds `elem` with `dot`, superseding the adds of it this replica has seen.
pub fn add(set: &mut Causal<OrSet>, dot: Dot, elem: Vec<u8>) {
    set.store.insert(elem, DotFun::from([(dot, ())]));
    set.ctx.add(dot);
}

/// Removes `elem` as this replica sees it; a concurrent add elsewhere survives.
pub fn remove(set: &mut Causal<OrSet>, elem: &[u8]) {
    set.store.remove(elem);
}
