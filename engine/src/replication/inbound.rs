//! Frames decoded before they reach the replication core: the frame itself and, for `Entries`,
//! every record state checked and decoded. Pure work, so a driver can do it on its I/O
//! threads and leave the thread that applies entries only the joins and the writes.

use super::frame::{Frame, FrameError, WireEntry};
use super::seam::RecordState;
use crate::config::KEY_BYTES_MAX;
use crate::model::{codec, Record, ReplicaId};

/// A record state received from a peer, decoded.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteRecord {
    /// The key.
    pub key: Vec<u8>,
    /// The decoded state.
    pub record: Record,
    /// The bytes the state arrived as, while they are its encoding (`None` once repeats of
    /// the key were joined): a key new here is stored as these bytes, not encoded again.
    pub encoded: Option<Vec<u8>>,
}

/// One log entry with its records decoded, sorted by key, one per key.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodedEntry {
    /// The origin's sequence number.
    pub seq: u64,
    /// The records, sorted by key; repeats of a key are joined.
    pub records: Vec<RemoteRecord>,
    /// Bytes the entry took on the wire, counted as its sender counts them in flight.
    pub wire_bytes: usize,
}

/// Bytes of an entry in flight, as sender and receiver both count them.
pub(crate) fn wire_bytes<'a>(records: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> usize {
    records
        .into_iter()
        .map(|(k, v)| k.len() + v.len() + 8)
        .sum::<usize>()
        + 10
}

/// A frame ready for `Replicator::handle_inbound`.
#[derive(Clone, Debug)]
pub enum Inbound {
    /// Log entries of one origin with their records decoded.
    Entries {
        /// The replica that made the writes.
        origin: ReplicaId,
        /// The entries, in the order received.
        entries: Vec<DecodedEntry>,
    },
    /// Any other frame.
    Other(Frame),
}

impl Inbound {
    /// Decodes a frame and, for `Entries`, its records; a record with an invalid key, over
    /// `record_bytes_max` or undecodable makes the whole frame malformed.
    pub fn decode(bytes: &[u8], record_bytes_max: usize) -> Result<Inbound, FrameError> {
        Inbound::from_frame(Frame::decode(bytes)?, record_bytes_max)
    }

    /// `decode` for a frame already parsed.
    pub fn from_frame(frame: Frame, record_bytes_max: usize) -> Result<Inbound, FrameError> {
        match frame {
            Frame::Entries { origin, entries } => {
                let entries = entries
                    .into_iter()
                    .map(|WireEntry { seq, records }| {
                        let wire_bytes = wire_bytes(records.iter().map(|(k, v)| (&k[..], &v[..])));
                        let records = records
                            .into_iter()
                            .map(|(k, v)| (k.into_vec(), v.into_vec()));
                        decode_records(records, record_bytes_max)
                            .map(|records| DecodedEntry {
                                seq,
                                records,
                                wire_bytes,
                            })
                            .map_err(|why| {
                                FrameError::Malformed(format!("entry {origin}:{seq}: {why}"))
                            })
                    })
                    .collect::<Result<_, _>>()?;
                Ok(Inbound::Entries { origin, entries })
            }
            other => Ok(Inbound::Other(other)),
        }
    }
}

/// Checks and decodes record states, sorted by key with repeats joined.
pub fn decode_records(
    records: impl IntoIterator<Item = RecordState>,
    record_bytes_max: usize,
) -> Result<Vec<RemoteRecord>, String> {
    let mut out: Vec<RemoteRecord> = Vec::new();
    for (key, state) in records {
        if key.is_empty() || key.len() > KEY_BYTES_MAX {
            return Err(format!("a key of {} bytes", key.len()));
        }
        if state.len() > record_bytes_max {
            return Err(format!("a record of {} bytes", state.len()));
        }
        let record = codec::decode_record(&state).map_err(|e| e.to_string())?;
        out.push(RemoteRecord {
            key,
            record,
            encoded: Some(state),
        });
    }
    Ok(sort_joining(out))
}

/// Sorts records by key, joining those of the same key into one.
pub fn sort_joining(records: Vec<RemoteRecord>) -> Vec<RemoteRecord> {
    sort_joining_by(
        records,
        |r| &r.key,
        |into, next| {
            into.record.join(&next.record);
            into.encoded = None;
        },
    )
}

/// Sorts items by `key`, folding those of the same key into the first with `join`.
pub(crate) fn sort_joining_by<T>(
    mut items: Vec<T>,
    key: for<'a> fn(&'a T) -> &'a [u8],
    join: impl Fn(&mut T, &T),
) -> Vec<T> {
    items.sort_by(|a, b| key(a).cmp(key(b)));
    let mut joined: Vec<T> = Vec::with_capacity(items.len());
    for next in items {
        match joined.last_mut() {
            Some(last) if key(last) == key(&next) => join(last, &next),
            _ => joined.push(next),
        }
    }
    joined
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::codec::encode_record;

    #[test]
    fn entries_decode_sorted_and_joined_and_bad_records_are_refused() {
        let state = encode_record(&Record::default()).expect("encodes");
        let frame = Frame::Entries {
            origin: ReplicaId(4),
            entries: vec![WireEntry {
                seq: 9,
                records: vec![
                    (b"b".to_vec().into(), state.clone().into()),
                    (b"a".to_vec().into(), state.clone().into()),
                    (b"b".to_vec().into(), state.clone().into()),
                ],
            }],
        };
        let Ok(Inbound::Entries { origin, entries }) = Inbound::decode(&frame.encode(), 1 << 20)
        else {
            panic!("entries expected");
        };
        assert_eq!(origin, ReplicaId(4));
        let keys: Vec<&[u8]> = entries[0].records.iter().map(|r| &r.key[..]).collect();
        assert_eq!(keys, vec![&b"a"[..], &b"b"[..]]);
        let encoded: Vec<Option<&Vec<u8>>> = entries[0]
            .records
            .iter()
            .map(|r| r.encoded.as_ref())
            .collect();
        assert_eq!(
            encoded,
            vec![Some(&state), None],
            "b was joined from two states"
        );

        for bad in [
            (b"".to_vec(), state.clone()),
            (b"k".to_vec(), b"\x01garbage".to_vec()),
            (b"k".to_vec(), vec![0; 64]),
        ] {
            let frame = Frame::Entries {
                origin: ReplicaId(4),
                entries: vec![WireEntry {
                    seq: 1,
                    records: vec![(bad.0.into(), bad.1.into())],
                }],
            };
            assert!(matches!(
                Inbound::decode(&frame.encode(), 32),
                Err(FrameError::Malformed(_))
            ));
        }
        let ping = Frame::Ping { sent_ms: 5 };
        assert!(matches!(
            Inbound::decode(&ping.encode(), 32),
            Ok(Inbound::Other(Frame::Ping { sent_ms: 5 }))
        ));
    }
}
