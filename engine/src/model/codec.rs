//! Canonical, versioned encoding of records.
//!
//! Envelope: one version byte, then postcard. Equal records encode to equal bytes: every map is
//! a `BTreeMap` and is written in order. Dots inside a causal value are written relative to its
//! context (index of the replica in the context, distance below its counter), which keeps a
//! single-writer record's causal metadata near 20 bytes even with 64-bit replica ids.

use super::counter::{Counter, Totals};
use super::lww::LwwEntry;
use super::VersionVector;
use super::{Causal, Dot, DotFun, FieldKey, Hlc, Kind, OrMap, Record, ReplicaId, Value};
use serde::{Deserialize, Deserializer, Serialize};
use std::borrow::Cow;
use std::cell::Cell;
use std::collections::BTreeMap;

/// Version byte of the record envelope written by this build.
pub const RECORD_FORMAT: u8 = 1;
/// Deepest map nesting accepted when decoding (the operation API enforces the same bound).
pub const MAX_DEPTH: usize = 16;

/// Why bytes could not be decoded (or a record could not be encoded).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// No bytes at all.
    #[error("empty envelope")]
    Empty,
    /// Written by a newer format than this build reads.
    #[error("format version {found} is newer than the supported {supported}")]
    FutureVersion {
        /// The version found.
        found: u8,
        /// The newest version this build reads.
        supported: u8,
    },
    /// The bytes do not decode.
    #[error("malformed: {0}")]
    Malformed(String),
}

/// Encodes a record into its canonical envelope.
pub fn encode_record(record: &Record) -> Result<Vec<u8>, CodecError> {
    let repr = RecordRepr {
        values: record
            .values
            .values()
            .map(value_to_repr)
            .collect::<Result<_, _>>()?,
    };
    let mut out = vec![RECORD_FORMAT];
    postcard::to_io(&repr, &mut out).map_err(|e| CodecError::Malformed(e.to_string()))?;
    Ok(out)
}

/// Decodes a record envelope.
pub fn decode_record(bytes: &[u8]) -> Result<Record, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version > RECORD_FORMAT {
        return Err(CodecError::FutureVersion {
            found: version,
            supported: RECORD_FORMAT,
        });
    }
    if version == 0 {
        return Err(CodecError::Malformed("version 0".into()));
    }
    let (repr, rest): (RecordRepr, _) =
        postcard::take_from_bytes(body).map_err(|e| CodecError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CodecError::Malformed(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    let mut record = Record::default();
    for v in repr.values {
        let value = value_from_repr(v)?;
        if record.values.insert(value.kind(), value).is_some() {
            return Err(CodecError::Malformed("a kind appears twice".into()));
        }
    }
    Ok(record)
}

type Bytes<'a> = Cow<'a, [u8]>;

#[derive(Serialize, Deserialize)]
struct RecordRepr<'a> {
    #[serde(borrow)]
    values: Vec<ValueRepr<'a>>,
}

#[derive(Serialize, Deserialize)]
struct Reg<'a> {
    idx: u32,
    back: u64,
    #[serde(with = "serde_bytes", borrow)]
    value: Bytes<'a>,
}

#[derive(Serialize, Deserialize)]
struct Lww<'a> {
    idx: u32,
    back: u64,
    marker: u64,
    #[serde(with = "serde_bytes", borrow)]
    value: Bytes<'a>,
}

#[derive(Serialize, Deserialize)]
struct Elem<'a> {
    #[serde(with = "serde_bytes", borrow)]
    elem: Bytes<'a>,
    dots: Vec<(u32, u64)>,
}

#[derive(Serialize, Deserialize)]
struct Field<'a> {
    #[serde(with = "serde_bytes", borrow)]
    name: Bytes<'a>,
    kind: Kind,
    #[serde(borrow)]
    value: ValueRepr<'a>,
}

#[derive(Serialize, Deserialize)]
enum ValueRepr<'a> {
    Register {
        ctx: Vec<(ReplicaId, u64)>,
        #[serde(borrow)]
        entries: Vec<Reg<'a>>,
    },
    Lww {
        ctx: Vec<(ReplicaId, u64)>,
        #[serde(borrow)]
        entries: Vec<Lww<'a>>,
    },
    Counter {
        ctx: Vec<(ReplicaId, u64)>,
        entries: Vec<(u32, u64, u64, u64)>,
        base: Vec<(ReplicaId, u64, u64)>,
    },
    Set {
        ctx: Vec<(ReplicaId, u64)>,
        #[serde(borrow)]
        elems: Vec<Elem<'a>>,
    },
    Map {
        #[serde(borrow)]
        fields: Nested<Vec<Field<'a>>>,
    },
}

/// Wraps the recursive part of the encoding so decoding stops at `MAX_DEPTH` instead of
/// exhausting the stack on hostile input.
#[derive(Serialize)]
#[serde(transparent)]
struct Nested<T>(T);

thread_local! {
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

struct DepthGuard;

impl Drop for DepthGuard {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Nested<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let depth = DEPTH.with(|d| {
            d.set(d.get() + 1);
            d.get()
        });
        let _guard = DepthGuard;
        if depth > MAX_DEPTH {
            return Err(serde::de::Error::custom("maps nested too deeply"));
        }
        T::deserialize(deserializer).map(Nested)
    }
}

/// A causal context written as a table that dots refer into.
struct DotTable(Vec<(ReplicaId, u64)>);

impl DotTable {
    fn of(ctx: &VersionVector) -> Self {
        DotTable(ctx.iter().collect())
    }

    fn parse(entries: Vec<(ReplicaId, u64)>) -> Result<Self, CodecError> {
        let sorted = entries.windows(2).all(|w| w[0].0 < w[1].0);
        if !sorted || entries.iter().any(|(_, c)| *c == 0) {
            return Err(CodecError::Malformed("context not canonical".into()));
        }
        Ok(DotTable(entries))
    }

    fn ctx(&self) -> VersionVector {
        VersionVector::from_entries(self.0.iter().copied())
    }

    fn put(&self, d: Dot) -> Result<(u32, u64), CodecError> {
        let i = self
            .0
            .binary_search_by_key(&d.replica, |(r, _)| *r)
            .map_err(|_| CodecError::Malformed(format!("dot {d} outside its context")))?;
        let top = self.0[i].1;
        if d.counter == 0 || d.counter > top {
            return Err(CodecError::Malformed(format!(
                "dot {d} outside its context"
            )));
        }
        let idx = u32::try_from(i).map_err(|_| CodecError::Malformed("context too wide".into()))?;
        Ok((idx, top - d.counter))
    }

    fn get(&self, idx: u32, back: u64) -> Result<Dot, CodecError> {
        let (replica, top) = *self
            .0
            .get(idx as usize)
            .ok_or_else(|| CodecError::Malformed("dot refers past its context".into()))?;
        if back >= top {
            return Err(CodecError::Malformed("dot below 1".into()));
        }
        Ok(Dot::new(replica, top - back))
    }
}

fn insert_once<V>(map: &mut DotFun<V>, dot: Dot, v: V) -> Result<(), CodecError> {
    match map.insert(dot, v) {
        None => Ok(()),
        Some(_) => Err(CodecError::Malformed(format!("dot {dot} appears twice"))),
    }
}

fn value_to_repr(value: &Value) -> Result<ValueRepr<'_>, CodecError> {
    Ok(match value {
        Value::Register(c) => {
            let t = DotTable::of(&c.ctx);
            let mut entries = Vec::with_capacity(c.store.len());
            for (d, v) in &c.store {
                let (idx, back) = t.put(*d)?;
                entries.push(Reg {
                    idx,
                    back,
                    value: Cow::Borrowed(v),
                });
            }
            ValueRepr::Register { ctx: t.0, entries }
        }
        Value::Lww(c) => {
            let t = DotTable::of(&c.ctx);
            let mut entries = Vec::with_capacity(c.store.len());
            for (d, e) in &c.store {
                let (idx, back) = t.put(*d)?;
                let value = Cow::Borrowed(e.value.as_slice());
                entries.push(Lww {
                    idx,
                    back,
                    marker: e.marker.0,
                    value,
                });
            }
            ValueRepr::Lww { ctx: t.0, entries }
        }
        Value::Counter(c) => {
            let t = DotTable::of(&c.ctx);
            let mut entries = Vec::with_capacity(c.store.entries.len());
            for (d, tot) in &c.store.entries {
                let (idx, back) = t.put(*d)?;
                entries.push((idx, back, tot.inc, tot.dec));
            }
            let base = c
                .store
                .base
                .iter()
                .map(|(r, b)| (*r, b.inc, b.dec))
                .collect();
            ValueRepr::Counter {
                ctx: t.0,
                entries,
                base,
            }
        }
        Value::Set(c) => {
            let t = DotTable::of(&c.ctx);
            let mut elems = Vec::with_capacity(c.store.len());
            for (e, dots) in &c.store {
                let dots = dots.keys().map(|d| t.put(*d)).collect::<Result<_, _>>()?;
                elems.push(Elem {
                    elem: Cow::Borrowed(e),
                    dots,
                });
            }
            ValueRepr::Set { ctx: t.0, elems }
        }
        Value::Map(m) => {
            let mut fields = Vec::with_capacity(m.fields.len());
            for (k, v) in &m.fields {
                let value = value_to_repr(v)?;
                fields.push(Field {
                    name: Cow::Borrowed(&k.name),
                    kind: k.kind,
                    value,
                });
            }
            ValueRepr::Map {
                fields: Nested(fields),
            }
        }
    })
}

fn value_from_repr(repr: ValueRepr<'_>) -> Result<Value, CodecError> {
    Ok(match repr {
        ValueRepr::Register { ctx, entries } => {
            let t = DotTable::parse(ctx)?;
            let mut store = DotFun::new();
            for e in entries {
                insert_once(&mut store, t.get(e.idx, e.back)?, e.value.into_owned())?;
            }
            Value::Register(Causal {
                ctx: t.ctx(),
                store,
            })
        }
        ValueRepr::Lww { ctx, entries } => {
            let t = DotTable::parse(ctx)?;
            let mut store = DotFun::new();
            for e in entries {
                let entry = LwwEntry {
                    marker: Hlc(e.marker),
                    value: e.value.into_owned(),
                };
                insert_once(&mut store, t.get(e.idx, e.back)?, entry)?;
            }
            Value::Lww(Causal {
                ctx: t.ctx(),
                store,
            })
        }
        ValueRepr::Counter { ctx, entries, base } => {
            let t = DotTable::parse(ctx)?;
            let mut store = Counter::default();
            for (idx, back, inc, dec) in entries {
                insert_once(&mut store.entries, t.get(idx, back)?, Totals { inc, dec })?;
            }
            for (r, inc, dec) in base {
                if store.base.insert(r, Totals { inc, dec }).is_some() {
                    return Err(CodecError::Malformed(
                        "counter base repeats a replica".into(),
                    ));
                }
            }
            Value::Counter(Causal {
                ctx: t.ctx(),
                store,
            })
        }
        ValueRepr::Set { ctx, elems } => {
            let t = DotTable::parse(ctx)?;
            let mut store = BTreeMap::new();
            for e in elems {
                let mut dots = DotFun::new();
                for (idx, back) in e.dots {
                    insert_once(&mut dots, t.get(idx, back)?, ())?;
                }
                if dots.is_empty() || store.insert(e.elem.into_owned(), dots).is_some() {
                    return Err(CodecError::Malformed(
                        "set element empty or repeated".into(),
                    ));
                }
            }
            Value::Set(Causal {
                ctx: t.ctx(),
                store,
            })
        }
        ValueRepr::Map { fields } => {
            let mut map = OrMap::default();
            for f in fields.0 {
                let value = value_from_repr(f.value)?;
                if value.kind() != f.kind {
                    return Err(CodecError::Malformed("map field kind mismatch".into()));
                }
                let key = FieldKey {
                    name: f.name.into_owned(),
                    kind: f.kind,
                };
                if map.fields.insert(key, value).is_some() {
                    return Err(CodecError::Malformed("map field repeated".into()));
                }
            }
            Value::Map(map)
        }
    })
}
