//! What reads return: plain views of the stored CRDT state (the engine's reads and the client
//! protocol's answers alike; `meridian` re-exports them at its top level).

use crate::model::{counter, lww, CausalToken, Dot, Hlc, Kind, OriginId, Value, VersionVector};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A multi-value register as read: one value, or several siblings after concurrent writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Siblings {
    /// The values, in dot order.
    pub values: Vec<Vec<u8>>,
    /// The dot of each value.
    pub dots: Vec<Dot>,
    /// What this read saw: pass it to `put_with` to supersede exactly these siblings.
    pub context: VersionVector,
}

/// A last-writer-wins register as read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LwwValue {
    /// The winning value.
    pub value: Vec<u8>,
    /// Its hybrid-logical-clock marker.
    pub marker: Hlc,
    /// The replica that wrote it.
    pub writer: OriginId,
}

/// A map as read: field name -> value (two or more when regions wrote the field with different
/// types concurrently).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapView {
    /// The fields present.
    pub fields: BTreeMap<Vec<u8>, Vec<ReadValue>>,
}

/// One value of any type, as read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadValue {
    /// Multi-value register.
    Register(Siblings),
    /// Last-writer-wins register.
    Lww(LwwValue),
    /// Counter value.
    Counter(i64),
    /// Set elements in byte order.
    Set(Vec<Vec<u8>>),
    /// Map fields.
    Map(MapView),
}

impl ReadValue {
    /// The value with its registers' read contexts left empty (nested map fields too): what
    /// writes put there, without what a replica has learned of the key's history since (a
    /// context grows when a peer's state is joined, with no write to the key).
    pub fn without_contexts(&self) -> ReadValue {
        match self {
            ReadValue::Register(s) => ReadValue::Register(Siblings {
                values: s.values.clone(),
                dots: s.dots.clone(),
                context: VersionVector::new(),
            }),
            ReadValue::Map(m) => ReadValue::Map(MapView {
                fields: m
                    .fields
                    .iter()
                    .map(|(f, vs)| {
                        (
                            f.clone(),
                            vs.iter().map(ReadValue::without_contexts).collect(),
                        )
                    })
                    .collect(),
            }),
            other => other.clone(),
        }
    }

    /// The value's type.
    pub fn kind(&self) -> Kind {
        match self {
            ReadValue::Register(_) => Kind::Register,
            ReadValue::Lww(_) => Kind::Lww,
            ReadValue::Counter(_) => Kind::Counter,
            ReadValue::Set(_) => Kind::Set,
            ReadValue::Map(_) => Kind::Map,
        }
    }

    /// A view of a value, consuming it; `None` when it reads as absent.
    pub fn from_value(value: Value) -> Option<ReadValue> {
        if value.is_bottom() {
            return None;
        }
        Some(match value {
            Value::Register(r) => {
                let dots = r.store.keys().copied().collect();
                ReadValue::Register(Siblings {
                    values: r.store.into_values().collect(),
                    dots,
                    context: r.ctx,
                })
            }
            Value::Lww(r) => {
                let (dot, e) = lww::winner(&r)?;
                ReadValue::Lww(LwwValue {
                    value: e.value.clone(),
                    marker: e.marker,
                    writer: dot.replica,
                })
            }
            Value::Counter(c) => ReadValue::Counter(counter::value(&c)),
            Value::Set(s) => ReadValue::Set(s.store.into_keys().collect()),
            Value::Map(m) => {
                let mut view = MapView::default();
                for (k, v) in m.fields {
                    if let Some(read) = ReadValue::from_value(v) {
                        view.fields.entry(k.name).or_default().push(read);
                    }
                }
                ReadValue::Map(view)
            }
        })
    }
}

/// Everything under one key, as read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Read {
    /// The values present: one, or more when regions wrote the key with different types.
    pub values: Vec<ReadValue>,
    /// What this read observed; merge it into the session's token.
    pub token: CausalToken,
}

/// One event of a change feed (`Engine::feed`, the client protocol's `Watch`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FeedEvent {
    /// A key under the prefix changed.
    Change(Change),
    /// The feed could not go on from its position without a gap: the log no longer holds
    /// writes it needs. Rebuild what is derived from the feed with a scan of the prefix, then
    /// go on: the feed continues from `token`, which the scan reflects.
    Reset {
        /// Where the feed continues from.
        token: CausalToken,
        /// The origin whose writes could not be followed, and the first number missing.
        missing: Dot,
    },
}

/// A key's change as a feed hands it out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The key.
    pub key: Vec<u8>,
    /// Its values when the feed handed it out (the latest version); empty when deleted.
    pub values: Vec<ReadValue>,
    /// The position after this change: resuming from it hands out every later change.
    pub token: CausalToken,
}

impl FeedEvent {
    /// The position after the event.
    pub fn token(&self) -> &CausalToken {
        match self {
            FeedEvent::Change(change) => &change.token,
            FeedEvent::Reset { token, .. } => token,
        }
    }
}
