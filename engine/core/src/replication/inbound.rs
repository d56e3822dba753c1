//! Frames decoded before they reach the replication core: the frame itself and, for `Entries`,
//! every record state checked. Pure work, so a driver can do it on its I/O threads and leave
//! the thread that applies entries only the joins and the writes.
//!
//! A state is checked without being built (`codec::check_record`) and kept as the bytes it
//! arrived as (slices of the frame, not copies), with the few facts applying it needs. The
//! thread that applies decodes a state only to join it into a local one.

use super::frame::{self, Frame, FrameError, LinkedEntryRef, WireEntry, WireForm};
use super::link_states::LinkStates;
use super::seam::RecordState;
use super::state_patch;
use crate::limits::{ENTRY_OVERHEAD_BYTES, KEY_BYTES_MAX, RECORD_OVERHEAD_BYTES};
use crate::model::{codec, digest, OriginId, RequestTag, StateFacts};
use bytes::Bytes;

/// A record state received from a peer, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteRecord {
    /// The key.
    pub key: Bytes,
    /// The state's canonical encoding, as it arrived (or as this replica encoded the join of
    /// repeats of the key).
    pub state: Bytes,
    /// What applying the state needs to know of it.
    pub facts: StateFacts,
}

impl RemoteRecord {
    /// The state, decoded.
    pub fn decode(&self) -> Result<crate::model::Record, codec::CodecError> {
        codec::decode_record(&self.state)
    }
}

/// One log entry with its records checked, sorted by key, one per key.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodedEntry {
    /// The origin's sequence number.
    pub seq: u64,
    /// The records, sorted by key; repeats of a key are joined.
    pub records: Vec<RemoteRecord>,
    /// Bytes the entry took on the wire, counted as its sender counts them in flight.
    pub wire_bytes: usize,
    /// Keys the entry changed whose states did not arrive: left out by the sender, or
    /// refused here (a bad key, too large, undecodable). Non-empty: the entry is partial.
    pub left_out: Vec<Vec<u8>>,
    /// The write is lost: its sender holds nothing of it (declared lost).
    pub lost: bool,
    /// The client request the write answered, if it named one (a tag that is not sane is
    /// dropped at decoding: the write stands without it).
    pub request: Option<RequestTag>,
}

impl DecodedEntry {
    /// Whether the entry carries every record state its write changed.
    pub fn is_whole(&self) -> bool {
        self.left_out.is_empty() && !self.lost
    }
}

/// Bytes of an entry in flight, as sender and receiver both count them.
pub(crate) use crate::limits::wire_bytes;

/// A frame ready for `Replicator::handle_inbound`.
#[derive(Clone, Debug)]
pub enum Inbound {
    /// Log entries of one origin with their records checked.
    Entries {
        /// The replica that made the writes.
        origin: OriginId,
        /// The entries, in the order received.
        entries: Vec<DecodedEntry>,
        /// Sequence numbers of entries left out of `entries` because a state of theirs was a
        /// patch against a state this end of the link does not hold (`link_states.rs`):
        /// received, not applicable; the replicator asks for them again.
        unresolved: Vec<u64>,
    },
    /// Any other frame.
    Other(Frame),
}

/// Most received entries frames merged into one application (see [`Inbound::absorb`]).
pub const MERGE_FRAMES_MAX: usize = 64;

impl Inbound {
    /// Merges `next` into this frame when both are entries of one origin (received from one
    /// link, in order): applied in one write and acknowledged once, which keeps a busy replica
    /// from falling behind. Gives `next` back otherwise. A driver merges frames already queued
    /// behind each other, at most [`MERGE_FRAMES_MAX`] and until about
    /// `Replicator::ack_every_bytes` are held: applying the sender's whole window at once would
    /// leave the sender idle until it is done (measured in a backlog drain on loopback: 6% to
    /// 13% more records/s with a quarter of the window than with all of it).
    // The frame handed back is moved, not copied: its size is no cost here.
    #[allow(clippy::result_large_err)]
    pub fn absorb(&mut self, next: Inbound) -> Result<(), Inbound> {
        match (self, next) {
            (
                Inbound::Entries {
                    origin,
                    entries,
                    unresolved,
                },
                Inbound::Entries {
                    origin: o,
                    entries: more,
                    unresolved: not_more,
                },
            ) if *origin == o => {
                entries.extend(more);
                unresolved.extend(not_more);
                Ok(())
            }
            (_, next) => Err(next),
        }
    }

    /// Decodes a frame and, for `Entries`, checks its records (keeping their bytes as slices
    /// of `bytes`); a record with an invalid key, over `record_bytes_max` or undecodable
    /// makes the whole frame malformed.
    pub fn decode(bytes: &Bytes, record_bytes_max: usize) -> Result<Inbound, FrameError> {
        Inbound::decode_on(bytes, record_bytes_max, &mut LinkStates::default())
    }

    /// `decode` by the receiving end of a link, whose table `link` of the states its frames
    /// carried resolves the states a version-7 frame sends as patches (and takes in every
    /// state the frame carries, in order, as the sender's table did).
    pub fn decode_on(
        bytes: &Bytes,
        record_bytes_max: usize,
        link: &mut LinkStates<Bytes>,
    ) -> Result<Inbound, FrameError> {
        if let Some(parsed) = frame::parse_linked_entries(bytes) {
            let (origin, parsed) = parsed?;
            return resolve_linked(bytes, origin, parsed, record_bytes_max, link);
        }
        let Some(entries) = frame::decode_entries(bytes) else {
            return Inbound::from_frame(Frame::decode(bytes)?, record_bytes_max);
        };
        let (origin, entries) = entries?;
        let mut checked = Checked::default();
        let entries = entries
            .into_iter()
            .map(|(seq, records, left_out, lost, request)| {
                let wire_bytes = wire_bytes(records.iter().copied());
                let records = records
                    .into_iter()
                    .map(|(k, v)| (bytes.slice_ref(k), bytes.slice_ref(v)));
                let entry = DecodedEntry {
                    seq,
                    records: Vec::new(),
                    wire_bytes,
                    left_out: left_out.into_iter().map(<[u8]>::to_vec).collect(),
                    lost,
                    request,
                };
                check_entry(origin, entry, records, record_bytes_max, &mut checked)
            })
            .collect::<Result<_, _>>()?;
        Ok(Inbound::Entries {
            origin,
            entries,
            unresolved: Vec::new(),
        })
    }

    /// `decode` for a frame already parsed.
    pub fn from_frame(frame: Frame, record_bytes_max: usize) -> Result<Inbound, FrameError> {
        match frame {
            Frame::Entries { origin, entries } => {
                let entries = entries
                    .into_iter()
                    .map(
                        |WireEntry {
                             seq,
                             records,
                             left_out,
                             lost,
                             request,
                         }| {
                            let wire_bytes =
                                wire_bytes(records.iter().map(|(k, v)| (&k[..], &v[..])));
                            let records = records.into_iter().map(|(k, v)| {
                                (Bytes::from(k.into_vec()), Bytes::from(v.into_vec()))
                            });
                            let entry = DecodedEntry {
                                seq,
                                records: Vec::new(),
                                wire_bytes,
                                left_out: left_out.into_iter().map(|k| k.into_vec()).collect(),
                                lost,
                                request,
                            };
                            check_entry(
                                origin,
                                entry,
                                records,
                                record_bytes_max,
                                &mut Checked::default(),
                            )
                        },
                    )
                    .collect::<Result<_, _>>()?;
                Ok(Inbound::Entries {
                    origin,
                    entries,
                    unresolved: Vec::new(),
                })
            }
            other => Ok(Inbound::Other(other)),
        }
    }
}

/// A version-7 frame's entries with their states resolved on the receiving end of the link:
/// whole states as slices of the frame, repeats from earlier in it, patches against `link`'s
/// states (checked against the hash they came with). An entry with a state that does not
/// resolve is left out and named in `unresolved`; every state resolved goes into `link`, in
/// the frame's order, and one that did not is forgotten there.
fn resolve_linked(
    bytes: &Bytes,
    origin: OriginId,
    parsed: Vec<LinkedEntryRef<'_>>,
    record_bytes_max: usize,
    link: &mut LinkStates<Bytes>,
) -> Result<Inbound, FrameError> {
    use std::collections::HashMap;
    // Per key, its state earlier in the frame (`None`: it did not resolve).
    let mut earlier: HashMap<&[u8], Option<Bytes>> = HashMap::new();
    let mut handed = 0usize;
    let mut checked = Checked::default();
    let mut entries = Vec::with_capacity(parsed.len());
    let mut unresolved = Vec::new();
    for (seq, records, left_out, lost, request, span) in parsed {
        let mut states = Vec::with_capacity(records.len());
        let mut wire = ENTRY_OVERHEAD_BYTES;
        let mut whole = true;
        for (key, form) in records {
            let state = match form {
                WireForm::Whole(state) => {
                    wire += key.len() + state.len() + RECORD_OVERHEAD_BYTES;
                    Some(bytes.slice_ref(state))
                }
                WireForm::Repeat => {
                    wire += key.len() + RECORD_OVERHEAD_BYTES;
                    earlier
                        .get(key)
                        .cloned()
                        .ok_or_else(|| frame::no_earlier_state(origin, seq))?
                }
                WireForm::Linked(hash, patch) => {
                    wire += key.len() + 8 + patch.len() + RECORD_OVERHEAD_BYTES;
                    let resolved = link.get(key).and_then(|base| {
                        state_patch::apply_to_state(base, patch, record_bytes_max)
                    });
                    resolved
                        .filter(|s| digest::state_hash(s) == u64::from_le_bytes(hash))
                        .map(Bytes::from)
                }
            };
            match &state {
                Some(s) => {
                    // Remembered as a copy: a slice would keep the whole frame alive.
                    if LinkStates::<Bytes>::keeps(s.len()) {
                        link.remember(key, Bytes::copy_from_slice(s));
                    } else {
                        link.forget(key);
                    }
                    frame::hand_states(&mut handed, s.len(), origin, seq)?;
                    states.push((bytes.slice_ref(key), s.clone()));
                }
                None => {
                    link.forget(key);
                    whole = false;
                }
            }
            earlier.insert(key, state);
        }
        if !whole {
            metrics::counter!("meridian_replication_linked_states_unresolved_total").increment(1);
            unresolved.push(seq);
            continue;
        }
        let entry = DecodedEntry {
            seq,
            records: Vec::new(),
            wire_bytes: wire,
            left_out: left_out.into_iter().map(<[u8]>::to_vec).collect(),
            lost,
            request,
        };
        let head = entries.len();
        entries.push(check_entry(
            origin,
            entry,
            states,
            record_bytes_max,
            &mut checked,
        )?);
        // The writes a span stands for: each names the span's keys with its states (the
        // link's table took them in once, as the sender's did).
        // A key refused here (`check_records`) is left out of each of them too.
        for later in seq + 1..=seq + span {
            let records = entries[head].records.clone();
            for r in &records {
                frame::hand_states(&mut handed, r.state.len(), origin, later)?;
            }
            entries.push(DecodedEntry {
                seq: later,
                records,
                wire_bytes: ENTRY_OVERHEAD_BYTES,
                left_out: entries[head].left_out.clone(),
                lost: false,
                request: None,
            });
        }
    }
    Ok(Inbound::Entries {
        origin,
        entries,
        unresolved,
    })
}

/// One entry (its records still to come, as `records`) checked, or the frame refused naming
/// the entry.
fn check_entry(
    origin: OriginId,
    mut entry: DecodedEntry,
    records: impl IntoIterator<Item = (Bytes, Bytes)>,
    record_bytes_max: usize,
    checked: &mut Checked,
) -> Result<DecodedEntry, FrameError> {
    let seq = entry.seq;
    entry.request = entry.request.filter(|tag| {
        let sane = tag.is_sane();
        if !sane {
            tracing::warn!(%origin, seq, "a peer's entry named a request tag that is not sane: dropped, the write stands");
        }
        sane
    });
    if entry.left_out.iter().any(|k| k.len() > KEY_BYTES_MAX) {
        return Err(FrameError::Malformed(format!(
            "entry {origin}:{seq}: a key left out is over {KEY_BYTES_MAX} bytes"
        )));
    }
    entry.records = check_records(records, record_bytes_max, &mut entry.left_out, checked)
        .map_err(|why| FrameError::Malformed(format!("entry {origin}:{seq}: {why}")))?;
    Ok(entry)
}

/// The facts of the states of one frame checked so far, by where their bytes are: a state
/// repeated in a version-6 frame is one slice of the frame, checked once.
#[derive(Default)]
struct Checked(std::collections::HashMap<(usize, usize), StateFacts>);

/// Checks record states, sorted by key with repeats joined. A record that does not check (a
/// bad key, over `record_bytes_max`, undecodable, from a newer format) is counted, and its key
/// added to `left_out` (cut to `KEY_BYTES_MAX`): its fault stays with its key, the others are
/// applied, and what holds them knows it lacks that state.
pub fn decode_records(
    records: impl IntoIterator<Item = (Bytes, Bytes)>,
    record_bytes_max: usize,
    left_out: &mut Vec<Vec<u8>>,
) -> Result<Vec<RemoteRecord>, String> {
    check_records(records, record_bytes_max, left_out, &mut Checked::default())
}

/// `decode_records`, reusing the facts of states `checked` already holds.
fn check_records(
    records: impl IntoIterator<Item = (Bytes, Bytes)>,
    record_bytes_max: usize,
    left_out: &mut Vec<Vec<u8>>,
    checked: &mut Checked,
) -> Result<Vec<RemoteRecord>, String> {
    let mut out: Vec<RemoteRecord> = Vec::new();
    for (key, state) in records {
        let why = if key.is_empty() || key.len() > KEY_BYTES_MAX {
            format!("a key of {} bytes", key.len())
        } else if state.len() > record_bytes_max {
            format!("a record of {} bytes", state.len())
        } else {
            let at = (state.as_ptr() as usize, state.len());
            let facts = match checked.0.get(&at) {
                Some(facts) => Ok(facts.clone()),
                None => codec::check_record(&state).inspect(|facts| {
                    checked.0.insert(at, facts.clone());
                }),
            };
            match facts {
                Ok(facts) => {
                    out.push(RemoteRecord { key, state, facts });
                    continue;
                }
                Err(e) => e.to_string(),
            }
        };
        metrics::counter!("meridian_replication_records_refused_total").increment(1);
        tracing::warn!(key = %crate::show_key(&key[..key.len().min(64)]), %why, "a peer's record state was refused; the rest of its entry is applied");
        left_out.push(key[..key.len().min(KEY_BYTES_MAX)].to_vec());
    }
    sort_joining(out)
}

/// `decode_records` for states held as vectors.
pub fn decode_record_states(
    records: &[RecordState],
    record_bytes_max: usize,
    left_out: &mut Vec<Vec<u8>>,
) -> Result<Vec<RemoteRecord>, String> {
    let owned = records
        .iter()
        .map(|(k, v)| (Bytes::copy_from_slice(k), Bytes::copy_from_slice(v)));
    decode_records(owned, record_bytes_max, left_out)
}

/// Sorts records by key, joining those of the same key into one (encoded anew).
pub fn sort_joining(records: Vec<RemoteRecord>) -> Result<Vec<RemoteRecord>, String> {
    sort_joining_by(
        records,
        |r| &r.key,
        |into, next| {
            if into.state == next.state {
                return Ok(());
            }
            let mut joined = into.decode().map_err(|e| e.to_string())?;
            joined.join(&next.decode().map_err(|e| e.to_string())?);
            into.state = codec::encode_record(&joined)
                .map_err(|e| e.to_string())?
                .into();
            into.facts = StateFacts::of(&joined);
            Ok(())
        },
    )
}

/// Sorts items by `key`, folding those of the same key into the first with `join`.
pub fn sort_joining_by<T, E>(
    mut items: Vec<T>,
    key: for<'a> fn(&'a T) -> &'a [u8],
    join: impl Fn(&mut T, &T) -> Result<(), E>,
) -> Result<Vec<T>, E> {
    if items.is_sorted_by(|a, b| key(a) < key(b)) {
        return Ok(items); // the usual case: one entry's keys, distinct and in order
    }
    items.sort_by(|a, b| key(a).cmp(key(b)));
    let mut joined: Vec<T> = Vec::with_capacity(items.len());
    for next in items {
        match joined.last_mut() {
            Some(last) if key(last) == key(&next) => join(last, &next)?,
            _ => joined.push(next),
        }
    }
    Ok(joined)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::codec::encode_record;
    use crate::model::{Dot, Hlc, Op, Record, Stamp, VersionVector};

    fn entries(origin: u64, seqs: &[u64]) -> Inbound {
        Inbound::Entries {
            origin: OriginId(origin),
            entries: seqs
                .iter()
                .map(|&seq| DecodedEntry {
                    seq,
                    records: Vec::new(),
                    wire_bytes: 10,
                    left_out: Vec::new(),
                    lost: false,
                    request: None,
                })
                .collect(),
            unresolved: Vec::new(),
        }
    }

    #[test]
    fn entries_of_one_origin_merge_and_anything_else_is_given_back() {
        let mut merged = entries(1, &[1, 2]);
        assert!(merged.absorb(entries(1, &[3])).is_ok());
        assert!(merged.absorb(entries(2, &[1])).is_err(), "another origin");
        let ping = Inbound::Other(Frame::Ping { sent_ms: 5 });
        assert!(matches!(merged.absorb(ping), Err(Inbound::Other(_))));
        let Inbound::Entries { entries: held, .. } = &merged else {
            panic!("still entries");
        };
        let seqs: Vec<u64> = held.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        let mut other = Inbound::Other(Frame::Ping { sent_ms: 1 });
        assert!(
            other.absorb(entries(1, &[1])).is_err(),
            "only entries absorb"
        );
    }

    fn written(replica: u64, counter: u64, value: &[u8]) -> Record {
        let mut record = Record::default();
        let op = Op::LwwSet {
            value: value.to_vec(),
        };
        let stamp = Stamp {
            dot: Dot::new(OriginId(replica), counter),
            marker: Hlc(counter << 16),
        };
        record.apply(op, stamp).expect("applies");
        record
    }

    #[test]
    fn entries_decode_sorted_and_joined_and_bad_records_are_refused() {
        let state = encode_record(&Record::default()).expect("encodes");
        let (x, y) = (written(1, 5, b"x"), written(2, 3, b"y"));
        let frame = Frame::Entries {
            origin: OriginId(4),
            entries: vec![WireEntry {
                seq: 9,
                records: vec![
                    (b"b".to_vec().into(), state.clone().into()),
                    (b"a".to_vec().into(), state.clone().into()),
                    (b"b".to_vec().into(), state.clone().into()),
                    (
                        b"c".to_vec().into(),
                        encode_record(&x).expect("encodes").into(),
                    ),
                    (
                        b"c".to_vec().into(),
                        encode_record(&y).expect("encodes").into(),
                    ),
                ],
                left_out: vec![],
                lost: false,
                request: None,
            }],
        };
        let bytes = Bytes::from(frame.encode());
        let Ok(Inbound::Entries {
            origin, entries, ..
        }) = Inbound::decode(&bytes, 1 << 20)
        else {
            panic!("entries expected");
        };
        assert_eq!(origin, OriginId(4));
        let records = &entries[0].records;
        let keys: Vec<&[u8]> = records.iter().map(|r| &r.key[..]).collect();
        assert_eq!(keys, vec![&b"a"[..], &b"b"[..], &b"c"[..]]);
        assert_eq!(records[1].state, state, "equal repeats are one state");
        let mut joined = x.clone();
        joined.join(&y);
        assert_eq!(records[2].decode(), Ok(joined.clone()));
        assert_eq!(records[2].facts, StateFacts::of(&joined));
        // The same entries; only what they took on the wire differs (a repeat is a mark).
        let unsized_ = |e: &[DecodedEntry]| {
            e.iter()
                .map(|e| DecodedEntry {
                    wire_bytes: 0,
                    ..e.clone()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            Inbound::from_frame(frame, 1 << 20).map(
                |i| matches!(i, Inbound::Entries { entries: e, .. } if unsized_(&e) == unsized_(&entries))
            ),
            Ok(true),
            "an owned frame decodes to the same entries"
        );

        // A record that does not check is left out (its fault stays with its key); the
        // entry and the other records stand, and the entry knows what it lacks.
        for bad in [
            (b"".to_vec(), state.clone()),
            (b"k".to_vec(), b"\x01garbage".to_vec()),
            (b"k".to_vec(), vec![0; 64]),
        ] {
            let frame = Frame::Entries {
                origin: OriginId(4),
                entries: vec![WireEntry {
                    seq: 1,
                    records: vec![
                        (bad.0.clone().into(), bad.1.into()),
                        (b"a".to_vec().into(), state.clone().into()),
                    ],
                    left_out: vec![],
                    lost: false,
                    request: None,
                }],
            };
            let Ok(Inbound::Entries { entries, .. }) = Inbound::decode(&frame.encode().into(), 32)
            else {
                panic!("the entry stands");
            };
            let keys: Vec<&[u8]> = entries[0].records.iter().map(|r| &r.key[..]).collect();
            assert_eq!(keys, vec![&b"a"[..]]);
            assert!(!entries[0].is_whole());
            assert_eq!(entries[0].left_out, vec![bad.0.clone()]);
        }
        // A frame that does not decode is refused whole.
        let mut cut = bytes.to_vec();
        cut.truncate(cut.len() - 3);
        assert!(matches!(
            Inbound::decode(&cut.into(), 1 << 20),
            Err(FrameError::Malformed(_))
        ));
        let ping = Frame::Ping { sent_ms: 5 };
        assert!(matches!(
            Inbound::decode(&ping.encode().into(), 32),
            Ok(Inbound::Other(Frame::Ping { sent_ms: 5 }))
        ));
    }

    #[test]
    fn facts_answer_as_the_decoded_state_would() {
        // A set holding dots 1:2 and 1:5, and concurrently a register written at 2:3.
        let mut record = Record::default();
        for (counter, elem) in [(2, b"p"), (5, b"q")] {
            let op = Op::SetAdd {
                elems: vec![elem.to_vec()],
            };
            let dot = Dot::new(OriginId(1), counter);
            let stamp = Stamp {
                dot,
                marker: Hlc(1),
            };
            record.apply(op, stamp).expect("applies");
        }
        record.join(&written(2, 3, b"y"));
        assert_eq!(record.values.len(), 2);
        let facts = StateFacts::of(&record);
        assert_eq!(facts.max_marker, record.max_marker());
        assert!(!facts.bottom);
        for (one, two) in [(0, 0), (1, 0), (2, 0), (4, 2), (5, 3), (0, 3), (9, 9)] {
            let seen = VersionVector::from_entries([(OriginId(1), one), (OriginId(2), two)]);
            assert_eq!(
                facts.has_dot_in(&seen),
                record.has_dot_in(&seen),
                "{one} {two}"
            );
        }
        assert!(StateFacts::of(&Record::default()).bottom);
    }
}
