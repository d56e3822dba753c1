//! Replication log entries: which keys one write (one dot) changed.
//!
//! The entry names keys, not values: a peer catching up is sent the keys' current states, which
//! already include the write (state shipping is idempotent and needs no causal delivery).

use crate::model::codec::CodecError;
use crate::model::RequestTag;
use serde::{Deserialize, Serialize};

/// Format of an entry this replica reflects whole: its keys only (what every write leaves).
const LOG_FORMAT_KEYS: u8 = 1;
/// Format of a partial entry: its keys, the keys left out, and whether the write is lost.
const LOG_FORMAT_PARTIAL: u8 = 2;
/// Format of an entry naming the client request it answered: every field.
const LOG_FORMAT_TAGGED: u8 = 3;

/// The fields of a `LOG_FORMAT_PARTIAL` entry.
#[derive(Serialize, Deserialize)]
struct Partial {
    keys: Vec<Vec<u8>>,
    left_out: Vec<Vec<u8>>,
    lost: bool,
}

/// The keys one write changed; empty for a sequence number that carried no change.
///
/// An entry is *partial* when this replica applied it without reflecting all of it (declared
/// lost after no replica could supply the rest, `ReplicaStore::apply_entries`): some keys'
/// states were left out, or the write itself is lost (its keys unknown). A partial entry is
/// relayed as partial, so that no replica counts it as whole.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Keys changed by the write (whose states were applied).
    pub keys: Vec<Vec<u8>>,
    /// Keys the write changed whose states were left out.
    pub left_out: Vec<Vec<u8>>,
    /// Nothing of the write is held: it was declared lost.
    pub lost: bool,
    /// The client request the write answered, if it named one.
    pub request: Option<RequestTag>,
}

impl LogEntry {
    /// Whether the entry is reflected whole.
    pub fn is_whole(&self) -> bool {
        self.left_out.is_empty() && !self.lost
    }

    /// Versioned bytes (an untagged entry in the formats older builds read).
    pub fn encode(&self) -> Vec<u8> {
        if self.request.is_some() {
            let mut out = vec![LOG_FORMAT_TAGGED];
            // Writing into a Vec cannot fail.
            let _ = postcard::to_io(self, &mut out);
            return out;
        }
        if self.is_whole() {
            let keys: Vec<&[u8]> = self.keys.iter().map(Vec::as_slice).collect();
            return Self::encode_keys(&keys);
        }
        let mut out = vec![LOG_FORMAT_PARTIAL];
        let partial = Partial {
            keys: self.keys.clone(),
            left_out: self.left_out.clone(),
            lost: self.lost,
        };
        // Writing into a Vec cannot fail.
        let _ = postcard::to_io(&partial, &mut out);
        out
    }

    /// The encoding of a whole entry naming `keys`, tagged with `request` if given.
    pub fn encode_whole(keys: &[&[u8]], request: Option<&RequestTag>) -> Vec<u8> {
        match request {
            None => Self::encode_keys(keys),
            Some(tag) => LogEntry {
                keys: keys.iter().map(|k| k.to_vec()).collect(),
                request: Some(tag.clone()),
                ..LogEntry::default()
            }
            .encode(),
        }
    }

    /// The encoding of an entry naming `keys`, without building one.
    pub fn encode_keys(keys: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + keys.iter().map(|k| k.len() + 3).sum::<usize>());
        out.push(LOG_FORMAT_KEYS);
        let keys: Vec<&serde_bytes::Bytes> =
            keys.iter().map(|k| serde_bytes::Bytes::new(k)).collect();
        // Writing into a Vec cannot fail.
        let _ = postcard::to_io(&keys, &mut out);
        out
    }

    /// Parses `encode`'s output.
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let (&v, body) = bytes.split_first().ok_or(CodecError::Empty)?;
        let malformed = |e: postcard::Error| CodecError::Malformed(e.to_string());
        match v {
            LOG_FORMAT_KEYS => Ok(LogEntry {
                keys: postcard::from_bytes(body).map_err(malformed)?,
                ..LogEntry::default()
            }),
            LOG_FORMAT_PARTIAL => {
                let p: Partial = postcard::from_bytes(body).map_err(malformed)?;
                Ok(LogEntry {
                    keys: p.keys,
                    left_out: p.left_out,
                    lost: p.lost,
                    request: None,
                })
            }
            LOG_FORMAT_TAGGED => postcard::from_bytes(body).map_err(malformed),
            0 => Err(CodecError::Malformed("log format 0".into())),
            found => Err(CodecError::FutureVersion {
                found,
                supported: LOG_FORMAT_TAGGED,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn whole_entries_keep_the_keys_only_format_and_partial_ones_round_trip() {
        let whole = LogEntry {
            keys: vec![b"a".to_vec(), b"bc".to_vec()],
            ..LogEntry::default()
        };
        let bytes = whole.encode();
        assert_eq!(bytes, LogEntry::encode_keys(&[b"a", b"bc"]));
        assert_eq!(bytes[0], LOG_FORMAT_KEYS);
        assert_eq!(LogEntry::decode(&bytes).unwrap(), whole);
        for partial in [
            LogEntry {
                keys: vec![b"a".to_vec()],
                left_out: vec![b"z".to_vec()],
                lost: false,
                request: None,
            },
            LogEntry {
                lost: true,
                ..LogEntry::default()
            },
        ] {
            let bytes = partial.encode();
            assert_eq!(bytes[0], LOG_FORMAT_PARTIAL);
            assert_eq!(LogEntry::decode(&bytes).unwrap(), partial);
            assert!(!partial.is_whole());
        }
        // A tagged entry, whole or partial, keeps its tag; the bytes of an older build's
        // partial entry (no tag field) still decode.
        let tag = RequestTag::new("client-a", [3; 16]).unwrap();
        for tagged in [
            LogEntry {
                keys: vec![b"a".to_vec()],
                request: Some(tag.clone()),
                ..LogEntry::default()
            },
            LogEntry {
                keys: vec![b"a".to_vec()],
                left_out: vec![b"z".to_vec()],
                request: Some(tag.clone()),
                ..LogEntry::default()
            },
        ] {
            let bytes = tagged.encode();
            assert_eq!(bytes[0], LOG_FORMAT_TAGGED);
            assert_eq!(LogEntry::decode(&bytes).unwrap(), tagged);
        }
        assert_eq!(
            LogEntry::encode_whole(&[b"a"], Some(&tag)),
            LogEntry {
                keys: vec![b"a".to_vec()],
                request: Some(tag),
                ..LogEntry::default()
            }
            .encode()
        );
        let old = [LOG_FORMAT_PARTIAL, 1, 1, b'a', 0, 1];
        assert_eq!(
            LogEntry::decode(&old).unwrap(),
            LogEntry {
                keys: vec![b"a".to_vec()],
                lost: true,
                ..LogEntry::default()
            }
        );
        assert!(matches!(
            LogEntry::decode(&[9, 0]),
            Err(CodecError::FutureVersion { found: 9, .. })
        ));
        assert!(LogEntry::decode(&[]).is_err());
    }
}
