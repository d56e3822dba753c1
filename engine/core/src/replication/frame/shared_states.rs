//! `Entries` frames from version 6: a key's state that repeats in a frame goes once. Every
//! entry of the frame that changed a key still names it, so the receiver's log records which
//! keys each entry changed exactly as before; a record whose state is, byte for byte, the one
//! its key last had earlier in the frame carries a mark instead of the state. The sender reads
//! each entry's states as they are now, so a key written many times while a peer was away
//! ships one state per frame, not one per write.
//!
//! Decoding hands each entry its states back (borrowed from the frame, no copy): what a store
//! applies is exactly what a version-5 frame of the same entries gives it.

use super::{EntryOut, EntryRef, FrameError, Keys, ENTRIES_VARIANT};
use crate::model::{OriginId, RequestTag};
use serde::{Serialize, Serializer};
use std::collections::HashMap;

/// A record on the wire: its key, and its state unless it repeats the key's previous one.
type WireRecord<'a> = (&'a [u8], Option<&'a [u8]>);

/// One entry on the wire: sequence number, (key, state or "rides earlier"), keys left out,
/// whether it is lost, the request it answered.
type WireRef<'a> = (
    u64,
    Vec<WireRecord<'a>>,
    Vec<&'a [u8]>,
    bool,
    Option<RequestTag>,
);

/// The bytes of an `Entries` frame at `version` (6 or later).
pub(super) fn encode<B: AsRef<[u8]>>(
    version: u8,
    origin: OriginId,
    entries: &[EntryOut<'_, B>],
) -> Vec<u8> {
    // Per key, the state it last had in the frame so far.
    let mut last: HashMap<&[u8], &[u8]> = HashMap::new();
    let records: Vec<Vec<WireRecord<'_>>> = entries
        .iter()
        .map(|e| {
            e.records
                .iter()
                .map(|(k, v)| {
                    let (k, v) = (k.as_ref(), v.as_ref());
                    match last.insert(k, v) {
                        Some(before) if before == v => (k, None),
                        _ => (k, Some(v)),
                    }
                })
                .collect()
        })
        .collect();
    let size: usize = records
        .iter()
        .flatten()
        .map(|(k, v)| k.len() + v.map_or(0, <[u8]>::len) + 6)
        .sum();
    let mut out = Vec::with_capacity(size + 16 + 12 * entries.len());
    out.push(version);
    let wire = Entries {
        entries,
        records: &records,
    };
    // Writing into a Vec cannot fail.
    let _ = postcard::to_io(&(ENTRIES_VARIANT, origin, wire), &mut out);
    out
}

/// The origin and entries of a version-6 `Entries` frame's body (after its variant tag), each
/// entry with its states.
pub(super) fn decode(body: &[u8]) -> Result<(OriginId, Vec<EntryRef<'_>>), FrameError> {
    let (origin, wire): (OriginId, Vec<WireRef<'_>>) = match postcard::take_from_bytes(body) {
        Ok((decoded, [])) => decoded,
        Ok((_, rest)) => {
            return Err(FrameError::Malformed(format!(
                "{} trailing bytes",
                rest.len()
            )))
        }
        Err(e) => return Err(FrameError::Malformed(e.to_string())),
    };
    let mut states: HashMap<&[u8], &[u8]> = HashMap::new();
    let mut entries = Vec::with_capacity(wire.len());
    let mut handed = 0usize;
    for (seq, records, left_out, lost, request) in wire {
        let mut whole = Vec::with_capacity(records.len());
        for (key, state) in records {
            let state = match state {
                Some(state) => {
                    states.insert(key, state);
                    state
                }
                None => *states
                    .get(key)
                    .ok_or_else(|| super::no_earlier_state(origin, seq))?,
            };
            super::hand_states(&mut handed, state.len(), origin, seq)?;
            whole.push((key, state));
        }
        entries.push((seq, whole, left_out, lost, request));
    }
    Ok((origin, entries))
}

/// The entries of a frame as `encode` writes them.
struct Entries<'a, 'e, B> {
    entries: &'a [EntryOut<'e, B>],
    records: &'a [Vec<WireRecord<'a>>],
}

impl<B: AsRef<[u8]>> Serialize for Entries<'_, '_, B> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            self.entries
                .iter()
                .zip(self.records)
                .map(|(e, records)| (e.seq, Records(records), Keys(e.left_out), e.lost, e.request)),
        )
    }
}

/// An entry's records: (key, state or none).
struct Records<'a>(&'a [WireRecord<'a>]);

impl Serialize for Records<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            self.0
                .iter()
                .map(|(k, v)| (serde_bytes::Bytes::new(k), v.map(serde_bytes::Bytes::new))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::{decode_entries, encode_entries, EntryOut, Frame, FrameError};
    use crate::model::OriginId;

    fn out<'a>(seq: u64, records: &'a [(Vec<u8>, Vec<u8>)]) -> EntryOut<'a, Vec<u8>> {
        EntryOut {
            seq,
            records,
            left_out: &[],
            lost: false,
            request: None,
            span: 0,
        }
    }

    #[test]
    fn a_state_that_repeats_in_a_frame_crosses_once_and_every_entry_gets_it_back() {
        let hot = (b"hot".to_vec(), vec![7; 1_000]);
        let per_entry: Vec<Vec<(Vec<u8>, Vec<u8>)>> = (0..100u8)
            .map(|i| vec![hot.clone(), (vec![b'k', i], vec![i])])
            .collect();
        let entries: Vec<EntryOut<'_, Vec<u8>>> = per_entry
            .iter()
            .enumerate()
            .map(|(i, r)| out(i as u64 + 1, r))
            .collect();
        let v5 = encode_entries(5, OriginId(3), &entries);
        let v6 = encode_entries(6, OriginId(3), &entries);
        assert!(
            v6.len() * 20 < v5.len(),
            "{} against {}",
            v6.len(),
            v5.len()
        );
        let (Some(Ok(five)), Some(Ok(six))) = (decode_entries(&v5), decode_entries(&v6)) else {
            panic!("both decode");
        };
        assert_eq!(five, six, "each entry has its states back");
        assert_eq!(six.1[99].1[0], (&b"hot"[..], &hot.1[..]));
        assert_eq!(
            Frame::decode(&v6).map(|f| f.encode_at(6)),
            Ok(v6),
            "owned frames encode alike"
        );
    }

    #[test]
    fn a_state_that_changed_is_sent_again_and_repeats_within_an_entry_are_kept() {
        let records = [
            vec![(b"k".to_vec(), b"one".to_vec())],
            vec![
                (b"k".to_vec(), b"two".to_vec()),
                (b"k".to_vec(), b"one".to_vec()),
                (b"k".to_vec(), b"one".to_vec()),
            ],
            vec![(b"k".to_vec(), b"one".to_vec())],
        ];
        let entries: Vec<EntryOut<'_, Vec<u8>>> = records
            .iter()
            .enumerate()
            .map(|(i, r)| out(i as u64 + 1, r))
            .collect();
        let v5 = encode_entries(5, OriginId(3), &entries);
        let v6 = encode_entries(6, OriginId(3), &entries);
        assert_eq!(decode_entries(&v5), decode_entries(&v6));
    }

    #[test]
    fn a_mark_with_no_earlier_state_is_malformed() {
        let records: Vec<(&[u8], Option<&[u8]>)> = vec![(b"k", None)];
        let wire = vec![(
            1u64,
            records,
            Vec::<&[u8]>::new(),
            false,
            None::<crate::model::RequestTag>,
        )];
        let mut bytes = vec![6];
        bytes.extend(
            postcard::to_allocvec(&(super::ENTRIES_VARIANT, OriginId(3), wire)).expect("encodes"),
        );
        assert!(matches!(
            decode_entries(&bytes),
            Some(Err(FrameError::Malformed(m))) if m.contains("repeats a state")
        ));
        assert!(matches!(
            Frame::decode(&bytes),
            Err(FrameError::Malformed(_))
        ));
    }
}
