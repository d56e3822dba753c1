//! A peer's record on its way into a store: what both stores of the seam (`MemoryStore` here,
//! the engine over RocksDB) join into their records, borrowed from the checked frame where it
//! can be.

use crate::model::codec::{decode_record, CodecError};
use crate::model::{Hlc, Record, StateFacts};
use crate::replication::RemoteRecord;
use std::borrow::Cow;

/// A peer's record to join here.
#[derive(Debug)]
pub struct Incoming<'k> {
    /// The key.
    pub key: &'k [u8],
    /// The peer's state.
    pub state: Theirs<'k>,
}

/// A peer's state, as it arrived or decoded.
#[derive(Debug)]
pub enum Theirs<'k> {
    /// Its canonical bytes, checked, with the facts known of them: stored as they are when
    /// the key is new here and none of the state's dots is in the applied vector.
    Received {
        /// The bytes.
        bytes: &'k [u8],
        /// What is known of them without decoding.
        facts: &'k StateFacts,
    },
    /// Decoded (a caller's state, or repeats of the key joined): encoded again to be stored.
    Decoded(Record),
}

impl<'k> Incoming<'k> {
    /// Borrows a checked record.
    pub fn of(r: &'k RemoteRecord) -> Incoming<'k> {
        Incoming {
            key: &r.key,
            state: Theirs::Received {
                bytes: &r.state,
                facts: &r.facts,
            },
        }
    }

    /// The state decoded (borrowed when it is already).
    pub fn decoded(&self) -> Result<Cow<'_, Record>, CodecError> {
        match &self.state {
            Theirs::Received { bytes, .. } => decode_record(bytes).map(Cow::Owned),
            Theirs::Decoded(record) => Ok(Cow::Borrowed(record)),
        }
    }

    /// The largest last-writer-wins marker of the state.
    pub fn max_marker(&self) -> Option<Hlc> {
        match &self.state {
            Theirs::Received { facts, .. } => facts.max_marker,
            Theirs::Decoded(record) => record.max_marker(),
        }
    }
}

impl Theirs<'_> {
    /// The state as a record (decoded when it arrived as bytes).
    pub fn into_record(self) -> Result<Record, CodecError> {
        match self {
            Theirs::Received { bytes, .. } => decode_record(bytes),
            Theirs::Decoded(record) => Ok(record),
        }
    }
}
