//! What a peer of an older protocol version can take in. A link below `EXPIRY_VERSION` runs
//! to a build that reads no record with expiries (format 2): the states it is sent have them
//! left out. The peer reads such a value as one that does not expire until it is upgraded;
//! the expiries stay with the regions that hold them, and a state the peer sends back joins
//! with theirs without losing them (a join keeps what either side holds).

use super::frame::EXPIRY_VERSION;
use super::seam::{RecordState, ShippedEntry};
use crate::model::codec::{self, EXPIRY_FORMAT};
use std::sync::Arc;

/// `state` without its expiries, when it has any and a link at `version` needs that.
fn plain(version: u8, state: &[u8]) -> Option<Vec<u8>> {
    if version >= EXPIRY_VERSION || state.first() != Some(&EXPIRY_FORMAT) {
        return None;
    }
    let mut record = codec::decode_record(state).ok()?;
    record.expiries = Default::default();
    codec::encode_record(&record).ok()
}

/// An entry's states as a link at `version` can carry them.
pub(crate) fn entry_for(version: u8, mut entry: ShippedEntry) -> ShippedEntry {
    for (_, state) in &mut entry.states {
        if let Some(p) = plain(version, state) {
            *state = Arc::from(p);
        }
    }
    entry
}

/// Records as a link at `version` can carry them.
pub(crate) fn records_for(version: u8, mut records: Vec<RecordState>) -> Vec<RecordState> {
    for (_, state) in &mut records {
        if let Some(p) = plain(version, state) {
            *state = p;
        }
    }
    records
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::{Dot, Expiry, Hlc, Op, OriginId, Record, Stamp};

    #[test]
    fn an_older_link_gets_the_values_without_the_expiries_a_newer_one_gets_them_all() {
        let mut r = Record::default();
        let stamp = Stamp {
            dot: Dot::new(OriginId(1), 1),
            marker: Hlc::from_millis(1_000),
        };
        r.apply(
            Op::LwwSet {
                value: b"v".to_vec(),
            },
            stamp,
        )
        .unwrap();
        r.apply(
            Op::Expire {
                expiry: Expiry::After(10),
            },
            stamp,
        )
        .unwrap();
        let bytes = codec::encode_record(&r).unwrap();
        assert_eq!(bytes[0], EXPIRY_FORMAT);
        let old = records_for(EXPIRY_VERSION - 1, vec![(b"k".to_vec(), bytes.clone())]);
        let plain = codec::decode_record(&old[0].1).unwrap();
        assert_eq!(old[0].1[0], codec::PLAIN_FORMAT);
        assert_eq!(plain.values, r.values);
        assert!(plain.expiries.store.is_empty());
        let new = records_for(EXPIRY_VERSION, vec![(b"k".to_vec(), bytes.clone())]);
        assert_eq!(new[0].1, bytes);
    }
}
