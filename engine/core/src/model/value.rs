//! The value types a key or a map field can hold, and the map that nests them.

use super::{Causal, Counter, Dot, DotStore, LwwReg, MvReg, OrSet, VersionVector};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The type of a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// Multi-value register (siblings on conflict).
    Register,
    /// Last-writer-wins register.
    Lww,
    /// PN-counter.
    Counter,
    /// Observed-remove set.
    Set,
    /// Observed-remove map of nested values.
    Map,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Register => "register",
            Kind::Lww => "lww",
            Kind::Counter => "counter",
            Kind::Set => "set",
            Kind::Map => "map",
        })
    }
}

/// A map field is named and typed: concurrent writes of one name with two types keep both.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FieldKey {
    /// The field's name.
    pub name: Vec<u8>,
    /// The field's type.
    pub kind: Kind,
}

/// Observed-remove map: each field is an independent causal value.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OrMap {
    /// The fields, present or tombstoned.
    pub fields: BTreeMap<FieldKey, Value>,
}

/// One value of any kind.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Multi-value register.
    Register(Causal<MvReg>),
    /// Last-writer-wins register.
    Lww(Causal<LwwReg>),
    /// PN-counter.
    Counter(Causal<Counter>),
    /// Observed-remove set.
    Set(Causal<OrSet>),
    /// Map of nested values.
    Map(OrMap),
}

impl Value {
    /// An empty value of `kind`.
    pub fn empty(kind: Kind) -> Value {
        match kind {
            Kind::Register => Value::Register(Causal::default()),
            Kind::Lww => Value::Lww(Causal::default()),
            Kind::Counter => Value::Counter(Causal::default()),
            Kind::Set => Value::Set(Causal::default()),
            Kind::Map => Value::Map(OrMap::default()),
        }
    }

    /// This value's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Value::Register(_) => Kind::Register,
            Value::Lww(_) => Kind::Lww,
            Value::Counter(_) => Kind::Counter,
            Value::Set(_) => Kind::Set,
            Value::Map(_) => Kind::Map,
        }
    }

    /// The lattice join; values of different kinds are never joined (they live under
    /// different keys), so a mismatch leaves `self` as it is.
    pub fn join(&mut self, other: &Value) {
        match (self, other) {
            (Value::Register(a), Value::Register(b)) => a.join(b),
            (Value::Lww(a), Value::Lww(b)) => a.join(b),
            (Value::Counter(a), Value::Counter(b)) => a.join(b),
            (Value::Set(a), Value::Set(b)) => a.join(b),
            (Value::Map(a), Value::Map(b)) => join_values(&mut a.fields, &b.fields),
            _ => debug_assert!(false, "join of values of different kinds"),
        }
    }

    /// `join_seen` with a value whose replica applied every write in `horizon` (see
    /// `Causal::join_seen_within`); fields it does not hold at all lose what `horizon` covers.
    pub fn join_seen_within(
        &mut self,
        other: &Value,
        seen: &VersionVector,
        horizon: &VersionVector,
    ) {
        match (self, other) {
            (Value::Register(a), Value::Register(b)) => a.join_seen_within(b, seen, horizon),
            (Value::Lww(a), Value::Lww(b)) => a.join_seen_within(b, seen, horizon),
            (Value::Counter(a), Value::Counter(b)) => a.join_seen_within(b, seen, horizon),
            (Value::Set(a), Value::Set(b)) => a.join_seen_within(b, seen, horizon),
            (Value::Map(a), Value::Map(b)) => {
                for (k, v) in a.fields.iter_mut() {
                    if !b.fields.contains_key(k) {
                        v.remove_covered(horizon);
                    }
                }
                for (k, v) in &b.fields {
                    a.fields
                        .entry(k.clone())
                        .or_insert_with(|| Value::empty(k.kind))
                        .join_seen_within(v, seen, horizon);
                }
            }
            _ => debug_assert!(false, "join of values of different kinds"),
        }
    }

    /// `join` with `seen` counted as observed (see `Causal::join_seen`).
    pub fn join_seen(&mut self, other: &Value, seen: &VersionVector) {
        match (self, other) {
            (Value::Register(a), Value::Register(b)) => a.join_seen(b, seen),
            (Value::Lww(a), Value::Lww(b)) => a.join_seen(b, seen),
            (Value::Counter(a), Value::Counter(b)) => a.join_seen(b, seen),
            (Value::Set(a), Value::Set(b)) => a.join_seen(b, seen),
            (Value::Map(a), Value::Map(b)) => {
                for (k, v) in &b.fields {
                    a.fields
                        .entry(k.clone())
                        .or_insert_with(|| Value::empty(k.kind))
                        .join_seen(v, seen);
                }
            }
            _ => debug_assert!(false, "join of values of different kinds"),
        }
    }

    /// `Causal::normalize` throughout; map fields left with nothing to remember are dropped.
    pub fn normalize(&mut self, stable: &VersionVector) {
        match self {
            Value::Register(c) => c.normalize(stable),
            Value::Lww(c) => c.normalize(stable),
            Value::Counter(c) => c.normalize(stable),
            Value::Set(c) => c.normalize(stable),
            Value::Map(m) => {
                m.fields.values_mut().for_each(|f| f.normalize(stable));
                m.fields.retain(|_, f| !f.is_forgotten());
            }
        }
    }

    /// Absent and remembering nothing: no dot, no context, no counter reset.
    pub fn is_forgotten(&self) -> bool {
        match self {
            Value::Register(c) => c.store.is_empty() && c.ctx.is_empty(),
            Value::Lww(c) => c.store.is_empty() && c.ctx.is_empty(),
            Value::Counter(c) => {
                c.store.entries.is_empty() && c.store.base.is_empty() && c.ctx.is_empty()
            }
            Value::Set(c) => c.store.is_empty() && c.ctx.is_empty(),
            Value::Map(m) => m.fields.values().all(Value::is_forgotten),
        }
    }

    /// Whether a counter somewhere in the value remembers a reset (such tombstones are kept:
    /// the reset must apply to increments still on their way).
    pub fn has_counter_reset(&self) -> bool {
        match self {
            Value::Counter(c) => !c.store.base.is_empty(),
            Value::Map(m) => m.fields.values().any(Value::has_counter_reset),
            _ => false,
        }
    }

    /// Whether the value reads as absent.
    pub fn is_bottom(&self) -> bool {
        match self {
            Value::Register(c) => c.is_bottom(),
            Value::Lww(c) => c.is_bottom(),
            Value::Counter(c) => c.is_bottom(),
            Value::Set(c) => c.is_bottom(),
            Value::Map(m) => m.fields.values().all(Value::is_bottom),
        }
    }

    /// Removes everything this replica sees (observed remove); contexts are kept as tombstones.
    pub fn remove_all(&mut self) {
        match self {
            Value::Register(c) => c.store.remove_all(),
            Value::Lww(c) => c.store.remove_all(),
            Value::Counter(c) => c.store.remove_all(),
            Value::Set(c) => c.store.remove_all(),
            Value::Map(m) => m.fields.values_mut().for_each(Value::remove_all),
        }
    }

    /// Removes the dots `seen` covers, as the join with a replica that applied all of them and
    /// holds none would (counters record what they drop as reset, as a delete does).
    pub fn remove_covered(&mut self, seen: &VersionVector) {
        match self {
            Value::Register(c) => c.store.remove_covered(seen),
            Value::Lww(c) => c.store.remove_covered(seen),
            Value::Counter(c) => c.store.remove_covered(seen),
            Value::Set(c) => c.store.remove_covered(seen),
            Value::Map(m) => m.fields.values_mut().for_each(|f| f.remove_covered(seen)),
        }
    }

    /// `remove_all`, recording the removing write's dot in every context it touched, so that
    /// the tombstone is reclaimable only once that write is stable.
    pub fn remove_all_at(&mut self, dot: Dot) {
        fn clear<S: DotStore>(c: &mut Causal<S>, dot: Dot) {
            c.store.remove_all();
            c.ctx.add(dot);
        }
        match self {
            Value::Register(c) => clear(c, dot),
            Value::Lww(c) => clear(c, dot),
            Value::Counter(c) => clear(c, dot),
            Value::Set(c) => clear(c, dot),
            Value::Map(m) => m.fields.values_mut().for_each(|f| f.remove_all_at(dot)),
        }
    }

    /// Whether every causal part keeps its dots inside its context.
    pub fn is_well_formed(&self) -> bool {
        match self {
            Value::Register(c) => c.is_well_formed(),
            Value::Lww(c) => c.is_well_formed(),
            Value::Counter(c) => c.is_well_formed(),
            Value::Set(c) => c.is_well_formed(),
            Value::Map(m) => m.fields.values().all(Value::is_well_formed),
        }
    }

    /// Calls `f` on every dot present, nested fields included.
    pub fn for_each_dot(&self, f: &mut dyn FnMut(Dot)) {
        match self {
            Value::Register(c) => c.store.for_each_dot(f),
            Value::Lww(c) => c.store.for_each_dot(f),
            Value::Counter(c) => c.store.for_each_dot(f),
            Value::Set(c) => c.store.for_each_dot(f),
            Value::Map(m) => m.fields.values().for_each(|v| v.for_each_dot(f)),
        }
    }

    /// Nesting depth: 1 for a leaf, 1 + deepest field for a map.
    pub fn depth(&self) -> usize {
        match self {
            Value::Map(m) => 1 + m.fields.values().map(Value::depth).max().unwrap_or(0),
            _ => 1,
        }
    }
}

/// Joins a map of values into another, key by key.
pub(crate) fn join_values<K: Ord + Clone>(
    mine: &mut BTreeMap<K, Value>,
    theirs: &BTreeMap<K, Value>,
) {
    for (k, v) in theirs {
        match mine.get_mut(k) {
            Some(m) => m.join(v),
            None => {
                mine.insert(k.clone(), v.clone());
            }
        }
    }
}
