//! Entry points for coverage-guided fuzzing: one per decoder fed by the network or the disk.
//! Each takes arbitrary bytes, must not panic, and checks what the decoder promises (a
//! decoded value encodes back to what decodes to it again; two checkers of one format agree).
//! The targets in `fuzz/` call these; `tests/tests/fuzz_replay.rs` replays the corpus kept in
//! the repository through them with an allocation bound.

use meridian::store::LogEntry;
use meridian_core::model::CausalToken;
use meridian_core::model::{codec, StateFacts};
use meridian_core::replication::iblt::Iblt;
use meridian_core::replication::{Frame, Inbound, FRAME_BYTES_MAX};
use meridian_runtime::client_proto::{decode, encode, Answer, ClientRequest};

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// The targets, by name (the names of `fuzz/fuzz_targets/*.rs` and of the corpus folders).
pub const TARGETS: [(&str, Target); 7] = [
    ("frame", frame),
    ("entries", entries),
    ("record", record),
    ("log_entry", log_entry),
    ("iblt", iblt),
    ("client_request", client_request),
    ("token", token),
];

/// A replication frame from a peer: decoded, and if it decodes, encoded again to the same.
pub fn frame(data: &[u8]) {
    if let Ok(frame) = Frame::decode(data) {
        let again = Frame::decode(&frame.encode());
        assert_eq!(again.as_ref(), Ok(&frame), "a frame round-trips");
    }
}

/// A replication frame as the links take it: checked with its records (`Inbound::decode`),
/// which must agree with the plain frame decoder on what is a frame.
pub fn entries(data: &[u8]) {
    let bytes = bytes::Bytes::copy_from_slice(data);
    let inbound = Inbound::decode(&bytes, meridian::limits::ENTRY_BYTES_MAX);
    if data.len() <= FRAME_BYTES_MAX {
        assert_eq!(
            inbound.is_ok(),
            Frame::decode(data).is_ok(),
            "the borrowed and the owned decoders agree on a frame"
        );
    }
    if let Ok(Inbound::Entries { entries, .. }) = inbound {
        for entry in entries {
            for r in entry.records {
                assert!(r.decode().is_ok(), "a checked record decodes");
            }
        }
    }
}

/// A stored or shipped record state: the checker and the decoder agree, and a decoded record
/// encodes canonically (its encoding decodes to the same record, and encodes to itself).
pub fn record(data: &[u8]) {
    let checked = codec::check_record(data);
    match codec::decode_record(data) {
        Ok(record) => {
            assert_eq!(checked.ok(), Some(StateFacts::of(&record)), "same facts");
            if let Ok(bytes) = codec::encode_record(&record) {
                let again = codec::decode_record(&bytes).expect("an encoding decodes");
                assert_eq!(again, record, "a record round-trips");
                assert_eq!(codec::encode_record(&again).ok(), Some(bytes), "canonical");
            }
        }
        Err(_) => assert!(checked.is_err(), "the checker accepts what does not decode"),
    }
}

/// A stored log entry.
pub fn log_entry(data: &[u8]) {
    if let Ok(entry) = LogEntry::decode(data) {
        assert_eq!(LogEntry::decode(&entry.encode()), Ok(entry));
    }
}

/// An anti-entropy table from a peer: parsed (canonical encodings only), subtracted from an
/// empty table of its size and peeled.
pub fn iblt(data: &[u8]) {
    if let Ok(table) = Iblt::from_bytes(data) {
        assert_eq!(table.to_bytes(), data, "only canonical tables parse");
        let empty = Iblt::with_cells(table.cell_count());
        if let Ok(diff) = table.subtract(&empty) {
            let _ = diff.decode();
        }
    }
}

/// A client request (and, on the client's side, a response).
pub fn client_request(data: &[u8]) {
    if let Ok(request) = decode::<ClientRequest>(data) {
        assert_eq!(
            decode::<ClientRequest>(&encode(&request)).ok(),
            Some(request)
        );
    }
    if let Ok(answer) = decode::<Answer>(data) {
        assert_eq!(decode::<Answer>(&encode(&answer)).ok(), Some(answer));
    }
}

/// A causal token from a client.
pub fn token(data: &[u8]) {
    if let Ok(token) = CausalToken::from_bytes(data) {
        assert_eq!(CausalToken::from_bytes(&token.to_bytes()), Ok(token));
    }
}
