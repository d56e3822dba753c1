//! A record: everything stored under one key. Normally one value; two when regions concurrently
//! wrote the key with different types (a visible conflict, kept rather than lost).

use super::expiry::{self, Expiries, Expiry, ExpiryEntry};
use super::{counter, lww, mvreg, orset, value::join_values, Dot, FieldKey, Hlc, Kind, Value};
use super::{DotStore, Op, VersionVector};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// The state stored under one key.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Record {
    /// One value per kind ever written under this key (present or tombstoned).
    pub values: BTreeMap<Kind, Value>,
    /// Pending expiries (`expiry.rs`): what they cover is not read once their time passed.
    pub expiries: Expiries,
}

/// Identity of one local write: its dot and its HLC marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// The write's dot.
    pub dot: Dot,
    /// The write's hybrid-logical-clock marker.
    pub marker: Hlc,
}

/// Why an operation could not be applied to a record (exhaustive: the engine maps each to
/// its own error).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The key (or map field) already holds a value of another type.
    #[error("holds a {existing}, not a {requested}")]
    WrongType {
        /// The type present.
        existing: Kind,
        /// The type the operation needs.
        requested: Kind,
    },
    /// A counter total would overflow 64 bits.
    #[error("counter overflow")]
    CounterOverflow,
    /// The operation is not valid here (for example a delete nested in a map update).
    #[error("invalid operation: {0}")]
    Invalid(&'static str),
}

impl Record {
    /// The lattice join with a record from another replica.
    pub fn join(&mut self, other: &Record) {
        join_values(&mut self.values, &other.values);
        self.expiries.join(&other.expiries);
    }

    /// The join as done by a replica that has applied every write up to `seen`: a dot it has
    /// seen and no longer holds stays removed even if its tombstone was reclaimed.
    pub fn join_seen(&mut self, other: &Record, seen: &VersionVector) {
        for (kind, v) in &other.values {
            self.values
                .entry(*kind)
                .or_insert_with(|| Value::empty(*kind))
                .join_seen(v, seen);
        }
        self.expiries.join_seen(&other.expiries, seen);
    }

    /// `join_seen` with a record from a replica that applied every write in `horizon` (a
    /// state transfer's sender): what it holds is joined with its context widened to
    /// `horizon`; values it does not hold at all lose the dots `horizon` covers.
    pub fn join_seen_within(
        &mut self,
        other: &Record,
        seen: &VersionVector,
        horizon: &VersionVector,
    ) {
        for (kind, v) in self.values.iter_mut() {
            if !other.values.contains_key(kind) {
                v.remove_covered(horizon);
            }
        }
        for (kind, v) in &other.values {
            self.values
                .entry(*kind)
                .or_insert_with(|| Value::empty(*kind))
                .join_seen_within(v, seen, horizon);
        }
        if other.expiries == Expiries::default() {
            // A state without an expiry section (an older release's, or one sent to it) says
            // nothing of expiries: the horizon does not take this record's away.
            self.expiries.join_seen(&other.expiries, seen);
        } else {
            self.expiries
                .join_seen_within(&other.expiries, seen, horizon);
        }
    }

    /// Whether any dot present here is in `seen`; if none is, joining the record into a
    /// replica that holds nothing under its key (`join_seen`) leaves it as it is.
    pub fn has_dot_in(&self, seen: &VersionVector) -> bool {
        let mut covered = false;
        for v in self.values.values() {
            v.for_each_dot(&mut |d| covered |= seen.contains(&d));
        }
        expiry::for_each_dot(&self.expiries, &mut |d| covered |= seen.contains(&d));
        covered
    }

    /// The largest hybrid-logical-clock marker of its last-writer-wins values, nested fields
    /// included (a replica observes it to keep its clock ahead of what it stores).
    pub fn max_marker(&self) -> Option<Hlc> {
        fn walk(v: &Value) -> Option<Hlc> {
            match v {
                Value::Lww(r) => lww::max_marker(r),
                Value::Map(m) => m.fields.values().filter_map(walk).max(),
                _ => None,
            }
        }
        self.values.values().filter_map(walk).max()
    }

    /// Forgets removal memory covered by `stable` (see `Causal::normalize`); equal records
    /// normalised with the same vector encode to equal bytes.
    pub fn normalize(&mut self, stable: &VersionVector) {
        self.values.values_mut().for_each(|v| v.normalize(stable));
        self.values.retain(|_, v| !v.is_forgotten());
        self.expiries.normalize(stable);
    }

    /// Removes the dots `seen` covers: the join with a replica that applied every write `seen`
    /// covers and holds nothing under this key. Returns whether anything was removed.
    pub fn remove_covered(&mut self, seen: &VersionVector) -> bool {
        if !self.has_dot_in(seen) {
            return false;
        }
        self.values
            .values_mut()
            .for_each(|v| v.remove_covered(seen));
        self.expiries.store.remove_covered(seen);
        true
    }

    /// Whether a counter in the record remembers a reset.
    pub fn has_counter_reset(&self) -> bool {
        self.values.values().any(Value::has_counter_reset)
    }

    /// Whether the key reads as absent (never written, or deleted).
    pub fn is_bottom(&self) -> bool {
        self.values.values().all(Value::is_bottom)
    }

    /// The values present, in kind order.
    pub fn present(&self) -> impl Iterator<Item = &Value> {
        self.values.values().filter(|v| !v.is_bottom())
    }

    /// The present value of `kind`, if any.
    pub fn get(&self, kind: Kind) -> Option<&Value> {
        self.values.get(&kind).filter(|v| !v.is_bottom())
    }

    /// Union of every causal context in the record: what a reader of it has seen.
    pub fn context(&self) -> VersionVector {
        let mut vv = self.values_context();
        vv.join(&self.expiries.ctx);
        vv
    }

    /// Union of the causal contexts of the values (expiries left out).
    fn values_context(&self) -> VersionVector {
        let mut vv = VersionVector::new();
        fn walk(v: &Value, vv: &mut VersionVector) {
            match v {
                Value::Register(c) => vv.join(&c.ctx),
                Value::Lww(c) => vv.join(&c.ctx),
                Value::Counter(c) => vv.join(&c.ctx),
                Value::Set(c) => vv.join(&c.ctx),
                Value::Map(m) => m.fields.values().for_each(|f| walk(f, vv)),
            }
        }
        self.values.values().for_each(|v| walk(v, &mut vv));
        vv
    }

    /// Whether every causal part keeps its dots inside its context.
    pub fn is_well_formed(&self) -> bool {
        self.values
            .iter()
            .all(|(k, v)| v.kind() == *k && v.is_well_formed())
            && self.expiries.is_well_formed()
    }

    /// The record as a reader at HLC time `now` sees it: what passed expiries cover removed.
    pub fn visible_at(&self, now: Hlc) -> Cow<'_, Record> {
        if expiry::passed(&self.expiries, now).next().is_none() {
            return Cow::Borrowed(self);
        }
        let mut seen = self.clone();
        seen.lapse(now);
        Cow::Owned(seen)
    }

    /// `visible_at` of an owned record (a reader's view: never to be stored, since what it
    /// removed is not a write).
    pub fn into_visible_at(mut self, now: Hlc) -> Record {
        self.lapse(now);
        self
    }

    /// When what is present stops being read (the earliest pending expiry), if ever.
    pub fn expires_at(&self) -> Option<Hlc> {
        if self.expiries.store.is_empty() {
            return None;
        }
        let mut present = Vec::new();
        for v in self.values.values() {
            v.for_each_dot(&mut |d| present.push(d));
        }
        self.expiries
            .store
            .values()
            .filter(|e| present.iter().any(|d| e.covers.contains(d)))
            .map(|e| e.at)
            .min()
    }

    /// Removes for good what the expiries passed at `now` cover, and those expiries.
    fn lapse(&mut self, now: Hlc) {
        let gone: Vec<VersionVector> = expiry::passed(&self.expiries, now)
            .map(|e| e.covers.clone())
            .collect();
        if gone.is_empty() {
            return;
        }
        for covers in &gone {
            self.values
                .values_mut()
                .for_each(|v| v.remove_covered(covers));
        }
        self.expiries.store.retain(|_, e| e.at > now);
    }

    /// Applies a local operation stamped with a fresh dot. On error the record is unchanged.
    pub fn apply(&mut self, op: Op, stamp: Stamp) -> Result<(), ApplyError> {
        if self.expiries.store.is_empty() {
            return self.apply_expiring(op, stamp);
        }
        let before = self.clone();
        let result = self.apply_expiring(op, stamp);
        if result.is_err() {
            *self = before;
        }
        result
    }

    /// `apply` with the expiry rules (`expiry.rs`): what passed expiries cover goes first; an
    /// expiry is set, removed or kept.
    fn apply_expiring(&mut self, op: Op, stamp: Stamp) -> Result<(), ApplyError> {
        self.lapse(stamp.marker);
        self.drop_orphan_expiries();
        let Op::Expire { expiry } = op else {
            self.apply_value(op, stamp)?;
            self.keep_expiry(stamp.dot);
            return Ok(());
        };
        match (expiry, expiry::expiry_time(expiry, stamp.marker)) {
            (_, Some(at)) if !self.is_bottom() => {
                let mut covers = self.values_context();
                covers.add(stamp.dot);
                expiry::replace(&mut self.expiries, stamp.dot, ExpiryEntry { at, covers });
                self.lapse(stamp.marker);
            }
            (Expiry::Lapsed, _) => self.expiries.ctx.add(stamp.dot),
            _ => expiry::clear_at(&mut self.expiries, stamp.dot),
        }
        Ok(())
    }

    /// Removes the expiries that cover nothing present (left by a delete concurrent with
    /// them): a key deleted and written again does not inherit them.
    fn drop_orphan_expiries(&mut self) {
        if self.expiries.store.is_empty() {
            return;
        }
        let mut present = Vec::new();
        for v in self.values.values() {
            v.for_each_dot(&mut |d| present.push(d));
        }
        self.expiries
            .store
            .retain(|_, e| present.iter().any(|d| e.covers.contains(d)));
    }

    /// After a write: the pending expiries it sees become one at the earliest of their times
    /// covering it (none when the key is left absent).
    fn keep_expiry(&mut self, dot: Dot) {
        let Some(at) = expiry::earliest(&self.expiries) else {
            return;
        };
        if self.is_bottom() {
            expiry::clear_at(&mut self.expiries, dot);
            return;
        }
        let covers = self.values_context();
        expiry::replace(&mut self.expiries, dot, ExpiryEntry { at, covers });
    }

    /// Applies an operation on the values.
    fn apply_value(&mut self, op: Op, stamp: Stamp) -> Result<(), ApplyError> {
        let Some(kind) = op.kind() else {
            // Delete: an observed remove of everything this replica sees under the key.
            self.values
                .values_mut()
                .for_each(|v| v.remove_all_at(stamp.dot));
            return Ok(());
        };
        if let Some(other) = self.present().map(Value::kind).find(|k| *k != kind) {
            return Err(ApplyError::WrongType {
                existing: other,
                requested: kind,
            });
        }
        let existed = self.values.contains_key(&kind);
        let value = self
            .values
            .entry(kind)
            .or_insert_with(|| Value::empty(kind));
        let result = apply_to_value(value, op, stamp);
        if result.is_err() && !existed {
            self.values.remove(&kind);
        }
        result
    }
}

fn apply_to_value(value: &mut Value, op: Op, stamp: Stamp) -> Result<(), ApplyError> {
    let dot = stamp.dot;
    let requested = op.kind();
    match (value, op) {
        (Value::Register(r), Op::Put { value, context }) => {
            mvreg::put(r, dot, value, context.as_ref())
        }
        (Value::Lww(r), Op::LwwSet { value }) => lww::set(r, dot, stamp.marker, value),
        (Value::Counter(c), Op::CounterAdd { delta }) => {
            counter::add(c, dot, delta).map_err(|_| ApplyError::CounterOverflow)?
        }
        (Value::Set(s), Op::SetAdd { elems }) => {
            elems.into_iter().for_each(|e| orset::add(s, dot, e))
        }
        (Value::Set(s), Op::SetRemove { elems }) => elems.iter().for_each(|e| orset::remove(s, e)),
        (Value::Map(m), Op::MapUpdate { field, op }) => {
            let Some(kind) = op.kind() else {
                return Err(ApplyError::Invalid(
                    "a map update cannot carry a delete or an expiry",
                ));
            };
            let clash = m
                .fields
                .iter()
                .find(|(k, v)| k.name == field && k.kind != kind && !v.is_bottom());
            if let Some((k, _)) = clash {
                return Err(ApplyError::WrongType {
                    existing: k.kind,
                    requested: kind,
                });
            }
            let key = FieldKey { name: field, kind };
            let existed = m.fields.contains_key(&key);
            let nested = m
                .fields
                .entry(key.clone())
                .or_insert_with(|| Value::empty(kind));
            if let Err(e) = apply_to_value(nested, *op, stamp) {
                if !existed {
                    m.fields.remove(&key);
                }
                return Err(e);
            }
        }
        (Value::Map(m), Op::MapRemove { field }) => m
            .fields
            .iter_mut()
            .filter(|(k, _)| k.name == field)
            .for_each(|(_, v)| v.remove_all()),
        (v, _) => {
            return Err(ApplyError::WrongType {
                existing: v.kind(),
                requested: requested.unwrap_or(v.kind()),
            })
        }
    }
    Ok(())
}
