//! Replication log entries: which keys one write (one dot) changed.
//!
//! The entry names keys, not values: a peer catching up is sent the keys' current states, which
//! already include the write (state shipping is idempotent and needs no causal delivery).

use crate::model::codec::CodecError;
use serde::{Deserialize, Serialize};

const LOG_FORMAT: u8 = 1;

/// The keys one write changed; empty for a sequence number that carried no change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Keys changed by the write.
    pub keys: Vec<Vec<u8>>,
}

impl LogEntry {
    /// Versioned bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![LOG_FORMAT];
        // Writing into a Vec cannot fail.
        let _ = postcard::to_io(self, &mut out);
        out
    }

    /// The encoding of an entry naming `keys`, without building one.
    pub fn encode_keys(keys: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + keys.iter().map(|k| k.len() + 3).sum::<usize>());
        out.push(LOG_FORMAT);
        let keys: Vec<&serde_bytes::Bytes> =
            keys.iter().map(|k| serde_bytes::Bytes::new(k)).collect();
        // Writing into a Vec cannot fail.
        let _ = postcard::to_io(&keys, &mut out);
        out
    }

    /// Parses `encode`'s output.
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let (&v, body) = bytes.split_first().ok_or(CodecError::Empty)?;
        if v > LOG_FORMAT {
            return Err(CodecError::FutureVersion {
                found: v,
                supported: LOG_FORMAT,
            });
        }
        postcard::from_bytes(body).map_err(|e| CodecError::Malformed(e.to_string()))
    }
}
