//! `Entries` frames from version 7: a record's state goes whole, as a mark that it repeats the
//! key's state earlier in the frame (version 6's), or *linked*: a patch against the state the
//! key had last on the link, with the hash of the result (`link_states.rs`). A write to a
//! 10,000-element set crosses as its element, its dot and the context's change, not as the set.
//!
//! Parsing is stateless (`parse`); resolving a linked state needs the receiving end's table
//! (`Inbound::decode_on`). Without one (`decode_entries`, `Frame::decode`) a linked state is
//! refused as malformed.

use super::{EntryOut, EntryRef, FrameError, Keys, ENTRIES_VARIANT};
use crate::model::{OriginId, RequestTag};
use serde::{Deserialize, Serialize, Serializer};
use std::collections::HashMap;

/// How a sender ships one record's state on a version-7 link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateForm {
    /// The state itself.
    Whole,
    /// The state the key had earlier in this frame, byte for byte.
    Repeat,
    /// A patch (`state_patch`) against the key's last state on the link, and the state hash
    /// (`model::digest::state_hash`) of the result.
    Linked {
        /// The result's state hash.
        hash: u64,
        /// The patch.
        patch: Vec<u8>,
    },
}

impl StateForm {
    /// Bytes the form puts on the wire beyond the key, for a state of `whole` bytes.
    pub fn wire_bytes(&self, whole: usize) -> usize {
        match self {
            StateForm::Whole => whole,
            StateForm::Repeat => 0,
            StateForm::Linked { patch, .. } => 8 + patch.len(),
        }
    }
}

/// A record's state as a version-7 frame carries it.
#[derive(Debug, Serialize, Deserialize)]
pub enum WireForm<'a> {
    /// The state itself.
    Whole(#[serde(with = "serde_bytes", borrow)] &'a [u8]),
    /// The key's state earlier in the frame.
    Repeat,
    /// A patch against the key's last state on the link, with the result's hash.
    Linked([u8; 8], #[serde(with = "serde_bytes", borrow)] &'a [u8]),
}

/// One version-7 entry as parsed: sequence number, (key, form), keys left out, lost, request,
/// and the sequence numbers after it the entry stands for (`EntryOut::span`; version 8).
pub type LinkedEntryRef<'a> = (
    u64,
    Vec<(&'a [u8], WireForm<'a>)>,
    Vec<&'a [u8]>,
    bool,
    Option<RequestTag>,
    u64,
);

/// What follows a version-7 entry's records: one byte for an entry with no key left out, not
/// lost and naming no request (most of them), else those three; from version 8, a plain entry
/// that also stands for the next `n` sequence numbers (`EntryOut::span`).
#[derive(Deserialize)]
enum WireTail<'a> {
    Plain,
    Full(#[serde(borrow)] Vec<&'a [u8]>, bool, Option<RequestTag>),
    Span(u64),
}

/// A version-7 entry on the wire.
type WireEntryRef<'a> = (u64, Vec<(&'a [u8], WireForm<'a>)>, WireTail<'a>);

/// `WireTail` written from an entry's fields.
struct Tail<'a, B> {
    left_out: &'a [B],
    lost: bool,
    request: Option<&'a RequestTag>,
    span: u64,
}

impl<B: AsRef<[u8]>> Serialize for Tail<'_, B> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTupleVariant;
        if self.left_out.is_empty() && !self.lost && self.request.is_none() {
            if self.span > 0 {
                return s.serialize_newtype_variant("WireTail", 2, "Span", &self.span);
            }
            return s.serialize_unit_variant("WireTail", 0, "Plain");
        }
        let mut v = s.serialize_tuple_variant("WireTail", 1, "Full", 3)?;
        v.serialize_field(&Keys(self.left_out))?;
        v.serialize_field(&self.lost)?;
        v.serialize_field(&self.request)?;
        v.end()
    }
}

/// The bytes of a version-7 `Entries` frame; `forms[i][j]` says how entry `i`'s record `j`
/// goes (`None`: whole, or a repeat where it repeats the key's state earlier in the frame).
pub fn encode<B: AsRef<[u8]>>(
    version: u8,
    origin: OriginId,
    entries: &[EntryOut<'_, B>],
    forms: Option<&[Vec<StateForm>]>,
) -> Vec<u8> {
    debug_assert!(
        entries.iter().all(|e| e.span == 0
            || (version >= super::SPANS_VERSION
                && e.left_out.is_empty()
                && !e.lost
                && e.request.is_none())),
        "a span on version {version}, or on an entry that is not plain"
    );
    let mut last: HashMap<&[u8], &[u8]> = HashMap::new();
    let mut size = 16;
    let wire: Vec<Vec<(&[u8], WireForm<'_>)>> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            e.records
                .iter()
                .enumerate()
                .map(|(j, (k, v))| {
                    let (k, v) = (k.as_ref(), v.as_ref());
                    let repeats = last.insert(k, v).is_some_and(|before| before == v);
                    let form = match forms.and_then(|f| f.get(i)?.get(j)) {
                        Some(StateForm::Linked { hash, patch }) => {
                            WireForm::Linked(hash.to_le_bytes(), patch)
                        }
                        Some(StateForm::Repeat) => WireForm::Repeat,
                        Some(StateForm::Whole) => WireForm::Whole(v),
                        None if repeats => WireForm::Repeat,
                        None => WireForm::Whole(v),
                    };
                    size += k.len()
                        + 12
                        + if let WireForm::Whole(v) = form {
                            v.len()
                        } else {
                            0
                        };
                    (k, form)
                })
                .collect()
        })
        .collect();
    let mut out = Vec::with_capacity(size + 12 * entries.len());
    out.push(version);
    let body = Entries {
        entries,
        records: &wire,
    };
    // Writing into a Vec cannot fail.
    let _ = postcard::to_io(&(ENTRIES_VARIANT, origin, body), &mut out);
    out
}

/// The origin and entries of a version-7 (or later) `Entries` frame's body (after its variant
/// tag), each record's state in the form it came in; spans checked against the frame's bounds
/// (`FRAME_SPAN_ENTRIES_MAX`, `FRAME_SPAN_RECORDS_MAX`), not yet listed.
pub fn parse(version: u8, body: &[u8]) -> Result<(OriginId, Vec<LinkedEntryRef<'_>>), FrameError> {
    let (origin, wire) = match postcard::take_from_bytes::<(OriginId, Vec<WireEntryRef<'_>>)>(body)
    {
        Ok((parsed, [])) => parsed,
        Ok((_, rest)) => {
            return Err(FrameError::Malformed(format!(
                "{} trailing bytes",
                rest.len()
            )))
        }
        Err(e) => return Err(FrameError::Malformed(e.to_string())),
    };
    let mut spans = Spans::default();
    let mut entries = Vec::with_capacity(wire.len());
    for (seq, records, tail) in wire {
        entries.push(match tail {
            WireTail::Plain => (seq, records, Vec::new(), false, None, 0),
            WireTail::Full(left_out, lost, request) => (seq, records, left_out, lost, request, 0),
            WireTail::Span(n) => {
                if version < super::SPANS_VERSION {
                    return Err(FrameError::Malformed(format!(
                        "entry {origin}:{seq} stands for later writes, which version \
                         {version} cannot say"
                    )));
                }
                spans
                    .take(n, records.len())
                    .map_err(|why| FrameError::Malformed(format!("entry {origin}:{seq}: {why}")))?;
                if seq.checked_add(n).is_none() {
                    return Err(FrameError::Malformed(format!(
                        "entry {origin}:{seq} stands for sequence numbers past the last"
                    )));
                }
                (seq, records, Vec::new(), false, None, n)
            }
        });
    }
    Ok((origin, entries))
}

/// What the spans of one frame stand for so far, against the frame's bounds (a sender filling
/// a frame counts the same way).
#[derive(Clone, Copy, Debug, Default)]
pub struct Spans {
    entries: usize,
    records: usize,
}

impl Spans {
    /// Counts a span of `n` sequence numbers over `records` records, or says which bound it
    /// passes.
    pub fn take(&mut self, n: u64, records: usize) -> Result<(), String> {
        use crate::limits::{FRAME_SPAN_ENTRIES_MAX, FRAME_SPAN_RECORDS_MAX};
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        let entries = self.entries.saturating_add(n);
        let records = self.records.saturating_add(n.saturating_mul(records));
        if entries > FRAME_SPAN_ENTRIES_MAX {
            return Err(format!(
                "the frame's spans stand for more than {FRAME_SPAN_ENTRIES_MAX} entries"
            ));
        }
        if records > FRAME_SPAN_RECORDS_MAX {
            return Err(format!(
                "the frame's spans stand for more than {FRAME_SPAN_RECORDS_MAX} records"
            ));
        }
        *self = Spans { entries, records };
        Ok(())
    }
}

/// A version-7 frame's entries with every state resolved without a link table: repeats from
/// earlier in the frame; a linked state is malformed here.
pub(super) fn decode(
    version: u8,
    body: &[u8],
) -> Result<(OriginId, Vec<EntryRef<'_>>), FrameError> {
    let (origin, parsed) = parse(version, body)?;
    let mut states: HashMap<&[u8], &[u8]> = HashMap::new();
    let mut handed = 0usize;
    let mut entries = Vec::with_capacity(parsed.len());
    for (seq, records, left_out, lost, request, span) in parsed {
        let mut whole = Vec::with_capacity(records.len());
        for (key, form) in records {
            let state = match form {
                WireForm::Whole(state) => state,
                WireForm::Repeat => *states
                    .get(key)
                    .ok_or_else(|| super::no_earlier_state(origin, seq))?,
                WireForm::Linked(..) => {
                    return Err(FrameError::Malformed(format!(
                        "entry {origin}:{seq} patches a state of its link: only the link's \
                         receiving end can decode it"
                    )))
                }
            };
            states.insert(key, state);
            super::hand_states(&mut handed, state.len(), origin, seq)?;
            whole.push((key, state));
        }
        let head = entries.len();
        entries.push((seq, whole, left_out, lost, request));
        for later in seq + 1..=seq + span {
            let records = entries[head].1.clone();
            for (_, state) in &records {
                super::hand_states(&mut handed, state.len(), origin, later)?;
            }
            entries.push((later, records, Vec::new(), false, None));
        }
    }
    Ok((origin, entries))
}

/// The entries of a frame as `encode` writes them.
struct Entries<'a, 'e, B> {
    entries: &'a [EntryOut<'e, B>],
    records: &'a [Vec<(&'a [u8], WireForm<'a>)>],
}

impl<B: AsRef<[u8]>> Serialize for Entries<'_, '_, B> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.entries.iter().zip(self.records).map(|(e, records)| {
            let tail = Tail {
                left_out: e.left_out,
                lost: e.lost,
                request: e.request,
                span: e.span,
            };
            (e.seq, Records(records), tail)
        }))
    }
}

/// An entry's records: (key, form).
struct Records<'a>(&'a [(&'a [u8], WireForm<'a>)]);

impl Serialize for Records<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            self.0
                .iter()
                .map(|(k, form)| (serde_bytes::Bytes::new(k), form)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::{decode_entries, encode_entries, EntryOut, Frame, FrameError};
    use super::{encode, StateForm};
    use crate::model::OriginId;

    #[test]
    fn version_7_without_a_link_table_carries_what_version_6_does() {
        let records = [
            vec![
                (b"hot".to_vec(), vec![7; 300]),
                (b"k".to_vec(), b"1".to_vec()),
            ],
            vec![(b"hot".to_vec(), vec![7; 300])],
        ];
        let entries: Vec<EntryOut<'_, Vec<u8>>> = records
            .iter()
            .enumerate()
            .map(|(i, r)| EntryOut {
                seq: i as u64 + 1,
                records: r,
                left_out: &[],
                lost: false,
                request: None,
                span: 0,
            })
            .collect();
        let (v6, v7) = (
            encode_entries(6, OriginId(3), &entries),
            encode_entries(7, OriginId(3), &entries),
        );
        assert!(v7.len() < v6.len() + 8, "{} against {}", v7.len(), v6.len());
        assert_eq!(decode_entries(&v6), decode_entries(&v7));
        assert_eq!(
            Frame::decode(&v7).map(|f| f.encode_at(7)),
            Ok(v7),
            "owned frames encode alike"
        );
        let linked = encode(
            7,
            OriginId(3),
            &entries[..1],
            Some(&[vec![
                StateForm::Linked {
                    hash: 1,
                    patch: vec![1, 2],
                },
                StateForm::Whole,
            ]]),
        );
        assert!(matches!(
            decode_entries(&linked),
            Some(Err(FrameError::Malformed(m))) if m.contains("receiving end")
        ));
    }

    /// A span is untrusted input: one standing for more writes than a frame's spans may, for
    /// more records, or past the last sequence number is refused before anything is listed;
    /// within the bounds each write it stands for is listed.
    #[test]
    fn a_span_past_the_frames_bounds_is_refused_before_anything_is_listed() {
        use crate::limits::{FRAME_SPAN_ENTRIES_MAX, FRAME_SPAN_RECORDS_MAX};
        use crate::replication::inbound::Inbound;
        let one = [(b"k".to_vec(), b"v".to_vec())];
        let five: Vec<(Vec<u8>, Vec<u8>)> =
            (0..5u8).map(|i| (vec![b'k', i], b"v".to_vec())).collect();
        let frame = |seq: u64, records: &[(Vec<u8>, Vec<u8>)], span: u64| {
            let entry = EntryOut {
                seq,
                records,
                left_out: &[],
                lost: false,
                request: None,
                span,
            };
            encode_entries(8, OriginId(3), &[entry])
        };
        let entries = FRAME_SPAN_ENTRIES_MAX as u64;
        let records = (FRAME_SPAN_RECORDS_MAX / 5) as u64;
        for (bytes, why) in [
            (frame(1, &one, entries + 1), "entries"),
            (frame(1, &five, records + 1), "records"),
            (frame(u64::MAX - 1, &one, 2), "past the last"),
            (frame(1, &one, u64::MAX), "entries"),
        ] {
            match decode_entries(&bytes) {
                Some(Err(FrameError::Malformed(m))) => assert!(m.contains(why), "{m}"),
                other => panic!("{why}: {other:?}"),
            }
            let inbound = Inbound::decode(&bytes::Bytes::from(bytes), 1 << 20);
            assert!(matches!(inbound, Err(FrameError::Malformed(_))), "{why}");
        }
        let at_bound = frame(1, &one, entries);
        let Some(Ok((_, listed))) = decode_entries(&at_bound) else {
            panic!("a span at the bound decodes");
        };
        assert_eq!(listed.len(), FRAME_SPAN_ENTRIES_MAX + 1);
        assert_eq!(listed.last().map(|e| e.0), Some(entries + 1));
    }
}
