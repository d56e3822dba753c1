//! Canonical, versioned encoding of records.
//!
//! Envelope: one version byte, then postcard. Equal records encode to equal bytes: every map is
//! a `BTreeMap` and is written in order. Dots inside a causal value are written relative to its
//! context (index of the replica in the context, distance below its counter), which keeps a
//! single-writer record's causal metadata near 20 bytes even with 64-bit origin ids.

use super::counter::{Counter, Totals};
use super::lww::LwwEntry;
use super::VersionVector;
use super::{Causal, Dot, DotFun, FieldKey, Hlc, Kind, OrMap, OriginId, Record, Value};
use serde::ser::{SerializeSeq, SerializeStructVariant};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::cell::Cell;
use std::collections::BTreeMap;

mod check;
mod expiries;

pub use check::check_record;
pub use expiries::EXPIRY_FORMAT;

/// Newest version byte of the record envelope this build reads and writes: 2 when the
/// record has expiries (an expiry section follows the values), else 1.
pub const RECORD_FORMAT: u8 = EXPIRY_FORMAT;
/// Version byte of an envelope without expiries.
pub const PLAIN_FORMAT: u8 = 1;
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
    let mut out = Vec::with_capacity(64 + payload_len(record));
    let expiring = expiries::present(&record.expiries);
    out.push(if expiring {
        EXPIRY_FORMAT
    } else {
        PLAIN_FORMAT
    });
    postcard::to_io(&EncRecord(record), &mut out)
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    if expiring {
        expiries::write(&record.expiries, &mut out)?;
    }
    Ok(out)
}

/// Bytes of user payload in a record: a capacity hint for the encoder.
fn payload_len(record: &Record) -> usize {
    fn walk(v: &Value) -> usize {
        match v {
            Value::Register(c) => c.store.values().map(|v| v.len() + 8).sum(),
            Value::Lww(c) => c.store.values().map(|e| e.value.len() + 16).sum(),
            Value::Counter(c) => 32 * (c.store.entries.len() + c.store.base.len()),
            Value::Set(c) => c.store.keys().map(|e| e.len() + 8).sum(),
            Value::Map(m) => m
                .fields
                .iter()
                .map(|(k, v)| k.name.len() + 2 + walk(v))
                .sum(),
        }
    }
    record.values.values().map(walk).sum()
}

/// Decodes a record envelope.
pub fn decode_record(bytes: &[u8]) -> Result<Record, CodecError> {
    let (repr, section) = parse_envelope(bytes)?;
    let mut record = Record::default();
    if let Some(section) = section {
        record.expiries = expiries::read(section)?;
    }
    for v in repr.values {
        let value = value_from_repr(v)?;
        if record.values.insert(value.kind(), value).is_some() {
            return Err(CodecError::Malformed("a kind appears twice".into()));
        }
    }
    Ok(record)
}

/// Which way `link_form` rewrites a record's dots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DotsAs {
    /// Counters (1 to the context's entry): the link form.
    Counters,
    /// Distances below the context's entry (0 up): the canonical form.
    Distances,
}

/// A record's bytes with every dot rewritten as `to` says, the rest byte for byte. The
/// canonical form writes a dot as its distance below its context's entry, so a write that
/// moves the context rewrites every dot of the value; with counters, what a write did not
/// touch keeps its bytes, which is what a patch between two states needs
/// (`replication::state_patch`). `link_form(link_form(b, Counters), Distances)` is `b`.
pub fn link_form(bytes: &[u8], to: DotsAs) -> Result<Vec<u8>, CodecError> {
    let (mut repr, section) = parse_envelope(bytes)?;
    for v in &mut repr.values {
        rewrite_dots(v, to)?;
    }
    let mut out = Vec::with_capacity(bytes.len());
    out.push(bytes[0]);
    postcard::to_io(&repr, &mut out).map_err(|e| CodecError::Malformed(e.to_string()))?;
    out.extend_from_slice(section.unwrap_or_default());
    Ok(out)
}

/// Rewrites the dots of one value (and of a map's fields) as `to` says.
fn rewrite_dots(v: &mut ValueRepr<'_>, to: DotsAs) -> Result<(), CodecError> {
    fn flip(ctx: &[(OriginId, u64)], idx: u32, n: &mut u64, to: DotsAs) -> Result<(), CodecError> {
        let top = ctx
            .get(idx as usize)
            .map(|(_, top)| *top)
            .ok_or_else(|| CodecError::Malformed("dot refers past its context".into()))?;
        let fits = match to {
            DotsAs::Counters => *n < top,
            DotsAs::Distances => (1..=top).contains(n),
        };
        if !fits {
            return Err(CodecError::Malformed("dot outside its context".into()));
        }
        *n = top - *n;
        Ok(())
    }
    match v {
        ValueRepr::Register { ctx, entries } => {
            for e in entries {
                flip(ctx, e.idx, &mut e.back, to)?;
            }
        }
        ValueRepr::Lww { ctx, entries } => {
            for e in entries {
                flip(ctx, e.idx, &mut e.back, to)?;
            }
        }
        ValueRepr::Counter { ctx, entries, .. } => {
            for (idx, back, _, _) in entries {
                flip(ctx, *idx, back, to)?;
            }
        }
        ValueRepr::Set { ctx, elems } => {
            for e in elems {
                for (idx, back) in &mut e.dots {
                    flip(ctx, *idx, back, to)?;
                }
            }
        }
        ValueRepr::Map { fields } => {
            for f in &mut fields.0 {
                rewrite_dots(&mut f.value, to)?;
            }
        }
    }
    Ok(())
}

/// The envelope's version checked and its values parsed, borrowing the bytes; with the
/// bytes of its expiry section (format 2).
fn parse_envelope(bytes: &[u8]) -> Result<(RecordRepr<'_>, Option<&[u8]>), CodecError> {
    let (repr, rest): (RecordRepr, _) = postcard::take_from_bytes(envelope_body(bytes)?)
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    after_values(bytes[0], rest).map(|section| (repr, section))
}

/// What follows the values: nothing in format 1, the expiry section in format 2.
fn after_values(version: u8, rest: &[u8]) -> Result<Option<&[u8]>, CodecError> {
    match version {
        EXPIRY_FORMAT if !rest.is_empty() => Ok(Some(rest)),
        EXPIRY_FORMAT => Err(CodecError::Malformed("format 2 without expiries".into())),
        _ if rest.is_empty() => Ok(None),
        _ => Err(trailing(rest.len())),
    }
}

/// The envelope's body, once its version byte is one this build reads.
fn envelope_body(bytes: &[u8]) -> Result<&[u8], CodecError> {
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
    Ok(body)
}

fn trailing(n: usize) -> CodecError {
    CodecError::Malformed(format!("{n} trailing bytes"))
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
        ctx: Vec<(OriginId, u64)>,
        #[serde(borrow)]
        entries: Vec<Reg<'a>>,
    },
    Lww {
        ctx: Vec<(OriginId, u64)>,
        #[serde(borrow)]
        entries: Vec<Lww<'a>>,
    },
    Counter {
        ctx: Vec<(OriginId, u64)>,
        entries: Vec<(u32, u64, u64, u64)>,
        base: Vec<(OriginId, u64, u64)>,
    },
    Set {
        ctx: Vec<(OriginId, u64)>,
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
struct DotTable(Vec<(OriginId, u64)>);

impl DotTable {
    fn parse(entries: Vec<(OriginId, u64)>) -> Result<Self, CodecError> {
        check_ctx(&entries)?;
        Ok(DotTable(entries))
    }

    fn ctx(&self) -> VersionVector {
        VersionVector::from_entries(self.0.iter().copied())
    }

    fn get(&self, idx: u32, back: u64) -> Result<Dot, CodecError> {
        dot_at(&self.0, idx, back)
    }
}

/// Checks that a context is canonical: replicas strictly ascending, no zero counter.
fn check_ctx(entries: &[(OriginId, u64)]) -> Result<(), CodecError> {
    let sorted = entries.windows(2).all(|w| w[0].0 < w[1].0);
    if !sorted || entries.iter().any(|(_, c)| *c == 0) {
        return Err(CodecError::Malformed("context not canonical".into()));
    }
    Ok(())
}

/// The dot written as (`idx`, `back`) relative to the context `ctx`.
fn dot_at(ctx: &[(OriginId, u64)], idx: u32, back: u64) -> Result<Dot, CodecError> {
    let (replica, top) = *ctx
        .get(idx as usize)
        .ok_or_else(|| CodecError::Malformed("dot refers past its context".into()))?;
    if back >= top {
        return Err(CodecError::Malformed("dot below 1".into()));
    }
    Ok(Dot::new(replica, top - back))
}

fn insert_once<V>(map: &mut DotFun<V>, dot: Dot, v: V) -> Result<(), CodecError> {
    match map.insert(dot, v) {
        None => Ok(()),
        Some(_) => Err(CodecError::Malformed(format!("dot {dot} appears twice"))),
    }
}

// ---- encoding: written straight from the model, in the layout `RecordRepr` decodes ----

struct EncRecord<'a>(&'a Record);

impl Serialize for EncRecord<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut seq = ser.serialize_seq(Some(self.0.values.len()))?;
        for v in self.0.values.values() {
            seq.serialize_element(&EncValue(v))?;
        }
        seq.end()
    }
}

struct EncCtx<'a>(&'a VersionVector);

impl Serialize for EncCtx<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut seq = ser.serialize_seq(Some(self.0.len()))?;
        for entry in self.0.iter() {
            seq.serialize_element(&entry)?;
        }
        seq.end()
    }
}

/// The dots of a store written as (index in context, distance below the counter, payload).
struct EncDots<'a, V, F> {
    ctx: &'a VersionVector,
    store: &'a DotFun<V>,
    item: F,
}

impl<'a, V, T: Serialize, F: Fn(u32, u64, &'a V) -> T> Serialize for EncDots<'a, V, F> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut seq = ser.serialize_seq(Some(self.store.len()))?;
        for (d, v) in self.store {
            let (idx, back) = dot_position(self.ctx, *d).map_err(serde::ser::Error::custom)?;
            seq.serialize_element(&(self.item)(idx, back, v))?;
        }
        seq.end()
    }
}

fn dot_position(ctx: &VersionVector, d: Dot) -> Result<(u32, u64), CodecError> {
    let outside = || CodecError::Malformed(format!("dot {d} outside its context"));
    let idx = ctx
        .iter()
        .position(|(r, _)| r == d.replica)
        .ok_or_else(outside)?;
    let top = ctx.get(d.replica);
    if d.counter == 0 || d.counter > top {
        return Err(outside());
    }
    Ok((u32::try_from(idx).map_err(|_| outside())?, top - d.counter))
}

struct EncElems<'a>(&'a Causal<super::OrSet>);

impl Serialize for EncElems<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut seq = ser.serialize_seq(Some(self.0.store.len()))?;
        for (elem, dots) in &self.0.store {
            let dots = EncDots {
                ctx: &self.0.ctx,
                store: dots,
                item: |i, b, _: &()| (i, b),
            };
            seq.serialize_element(&(serde_bytes::Bytes::new(elem), dots))?;
        }
        seq.end()
    }
}

struct EncBase<'a>(&'a BTreeMap<OriginId, Totals>);

impl Serialize for EncBase<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut seq = ser.serialize_seq(Some(self.0.len()))?;
        for (r, t) in self.0 {
            seq.serialize_element(&(r, t.inc, t.dec))?;
        }
        seq.end()
    }
}

struct EncFields<'a>(&'a OrMap);

impl Serialize for EncFields<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut seq = ser.serialize_seq(Some(self.0.fields.len()))?;
        for (k, v) in &self.0.fields {
            seq.serialize_element(&(serde_bytes::Bytes::new(&k.name), k.kind, EncValue(v)))?;
        }
        seq.end()
    }
}

#[allow(clippy::ptr_arg)] // the signature must match `DotFun<Vec<u8>>`
fn register_item(i: u32, b: u64, v: &Vec<u8>) -> (u32, u64, &serde_bytes::Bytes) {
    (i, b, serde_bytes::Bytes::new(v))
}

fn lww_item(i: u32, b: u64, e: &LwwEntry) -> (u32, u64, u64, &serde_bytes::Bytes) {
    (i, b, e.marker.0, serde_bytes::Bytes::new(&e.value))
}

/// A register-like variant: its context, then its entries written by `item`.
fn dots_variant<'a, S: Serializer, V, T: Serialize>(
    ser: S,
    index: u32,
    name: &'static str,
    c: &'a Causal<DotFun<V>>,
    item: impl Fn(u32, u64, &'a V) -> T,
) -> Result<S::Ok, S::Error> {
    let mut sv = ser.serialize_struct_variant("ValueRepr", index, name, 2)?;
    sv.serialize_field("ctx", &EncCtx(&c.ctx))?;
    sv.serialize_field(
        "entries",
        &EncDots {
            ctx: &c.ctx,
            store: &c.store,
            item,
        },
    )?;
    sv.end()
}

struct EncValue<'a>(&'a Value);

impl Serialize for EncValue<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        const NAME: &str = "ValueRepr";
        match self.0 {
            Value::Register(c) => dots_variant(ser, 0, "Register", c, register_item),
            Value::Lww(c) => dots_variant(ser, 1, "Lww", c, lww_item),
            Value::Counter(c) => {
                let mut sv = ser.serialize_struct_variant(NAME, 2, "Counter", 3)?;
                sv.serialize_field("ctx", &EncCtx(&c.ctx))?;
                let item = |i, b, t: &Totals| (i, b, t.inc, t.dec);
                let entries = EncDots {
                    ctx: &c.ctx,
                    store: &c.store.entries,
                    item,
                };
                sv.serialize_field("entries", &entries)?;
                sv.serialize_field("base", &EncBase(&c.store.base))?;
                sv.end()
            }
            Value::Set(c) => {
                let mut sv = ser.serialize_struct_variant(NAME, 3, "Set", 2)?;
                sv.serialize_field("ctx", &EncCtx(&c.ctx))?;
                sv.serialize_field("elems", &EncElems(c))?;
                sv.end()
            }
            Value::Map(m) => {
                let mut sv = ser.serialize_struct_variant(NAME, 4, "Map", 1)?;
                sv.serialize_field("fields", &EncFields(m))?;
                sv.end()
            }
        }
    }
}

// ---- decoding ----

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
