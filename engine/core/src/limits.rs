//! Size limits, derived from one place and checked against each other.
//!
//! The protocol fixes what any replica must accept from any other (a log entry, a frame), so
//! that no write one replica accepts can be stuck unshippable at another. A replica's own
//! configuration only narrows what its local writes may leave (`Config::record_bytes_max`,
//! `Config::value_bytes_max`), within bounds `check` enforces at open:
//!
//! ```text
//! value_bytes_max <= record_bytes_max <= RECORD_BYTES_MAX = ENTRY_BYTES_MAX / 2
//! ENTRY_BYTES_MAX + FRAME_OVERHEAD_BYTES = FRAME_BYTES_MAX = CLIENT_FRAME_BYTES_MAX
//! FRAME_BYTES_MAX <= LINK_QUEUE_BYTES, LINK_INBOUND_BYTES
//! ```
//!
//! A local write whose log entry (its records with their keys, as a frame ships them) would
//! exceed `record_bytes_max` is refused when it is made. Half an entry leaves room for the
//! record to meet a concurrent write of the same size from another region: merged states still
//! ship. Entries frames, state-transfer chunks and link queues are sized in bytes.

/// Longest key, in bytes.
pub const KEY_BYTES_MAX: usize = 64 << 10;

/// Largest log entry on the wire: a write's records (as their current states) with their keys,
/// counted as `wire_bytes` counts them. Every replica accepts entries up to this size.
pub const ENTRY_BYTES_MAX: usize = 32 << 20;

/// Room in a frame around one entry (the frame's tag, origin, sequence and lengths).
pub const FRAME_OVERHEAD_BYTES: usize = 64 << 10;

/// Largest replication frame: one largest entry with its framing.
pub const FRAME_BYTES_MAX: usize = ENTRY_BYTES_MAX + FRAME_OVERHEAD_BYTES;

/// Most bytes of record states one `Entries` frame may hand its entries, repeats counted: from
/// protocol version 6 a state that repeats in a frame crosses once, so this bounds what a
/// receiver compares and joins for one frame (a frame past it is refused; a sender stops
/// filling a frame before it).
pub const FRAME_STATES_BYTES_MAX: usize = 4 * ENTRY_BYTES_MAX;

/// Most sequence numbers the spans of one `Entries` frame may stand for beyond their own
/// entries (protocol version 8: an entry standing for the writes after it): a receiver lists
/// each, so this bounds its work per frame (a frame past it is refused; a sender stops a span
/// before it).
pub const FRAME_SPAN_ENTRIES_MAX: usize = 1 << 16;

/// Most records the spans of one `Entries` frame may stand for beyond their own entries (each
/// entry a span stands for names every key of the span's records).
pub const FRAME_SPAN_RECORDS_MAX: usize = 1 << 18;

/// Largest `Config::record_bytes_max`: what one local write may leave (a record, or a batch's
/// records with their keys).
pub const RECORD_BYTES_MAX: usize = ENTRY_BYTES_MAX / 2;

/// Largest client request or response frame: a batch up to the record limit, a read of a
/// record merged up to an entry.
pub const CLIENT_FRAME_BYTES_MAX: usize = FRAME_BYTES_MAX;

/// Most operations in one batch (each costs bytes of framing beyond its payload).
pub const BATCH_OPS_MAX: usize = 10_000;

/// Bytes of frames queued for one link's writer: a largest frame, plus twice the largest
/// in-flight window.
pub const LINK_QUEUE_BYTES: usize = FRAME_BYTES_MAX + 2 * crate::replication::INFLIGHT_BYTES_CAP;

/// Bytes of one link's received frames waiting to be applied (two largest frames).
pub const LINK_INBOUND_BYTES: usize = 2 * FRAME_BYTES_MAX;

/// Bytes of rows one scan returns at most (at least one row, whatever its size).
pub const SCAN_BYTES_MAX: usize = 8 << 20;

const _: () = {
    assert!(RECORD_BYTES_MAX * 2 <= ENTRY_BYTES_MAX);
    assert!(FRAME_BYTES_MAX <= CLIENT_FRAME_BYTES_MAX);
    assert!(FRAME_BYTES_MAX <= LINK_QUEUE_BYTES);
    assert!(FRAME_BYTES_MAX <= LINK_INBOUND_BYTES);
    assert!(KEY_BYTES_MAX < FRAME_OVERHEAD_BYTES * 2);
    assert!(SCAN_BYTES_MAX <= ENTRY_BYTES_MAX);
    // Frames are length-prefixed with 32 bits.
    assert!(FRAME_BYTES_MAX < u32::MAX as usize);
};

/// Why a configuration's limits do not fit together.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("limits: {0}")]
pub struct LimitsError(pub String);

/// Checks a replica's configured limits against each other and the protocol's.
pub fn check(value_bytes_max: usize, record_bytes_max: usize) -> Result<(), LimitsError> {
    if value_bytes_max == 0 {
        return Err(LimitsError("value_bytes_max must be positive".into()));
    }
    if value_bytes_max > record_bytes_max {
        return Err(LimitsError(format!(
            "value_bytes_max ({value_bytes_max}) exceeds record_bytes_max ({record_bytes_max})"
        )));
    }
    if record_bytes_max > RECORD_BYTES_MAX {
        return Err(LimitsError(format!(
            "record_bytes_max ({record_bytes_max}) exceeds {RECORD_BYTES_MAX}, half of what one \
             replication frame carries"
        )));
    }
    Ok(())
}

/// Bytes counted on the wire for one record of an entry beyond its key and state (their
/// lengths).
pub const RECORD_OVERHEAD_BYTES: usize = 8;

/// Bytes counted on the wire for an entry beyond its records (its sequence number and count).
pub const ENTRY_OVERHEAD_BYTES: usize = 10;

/// Bytes an entry's records take on the wire, as sender and receiver count them.
pub fn wire_bytes<'a>(records: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> usize {
    records
        .into_iter()
        .map(|(k, v)| k.len() + v.len() + RECORD_OVERHEAD_BYTES)
        .sum::<usize>()
        + ENTRY_OVERHEAD_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_limits_are_checked_against_each_other() {
        assert!(check(4 << 20, 16 << 20).is_ok());
        assert!(check(RECORD_BYTES_MAX, RECORD_BYTES_MAX).is_ok());
        assert!(check(0, 1).is_err());
        assert!(check(2, 1).is_err());
        assert!(check(1, RECORD_BYTES_MAX + 1).is_err());
    }
}
