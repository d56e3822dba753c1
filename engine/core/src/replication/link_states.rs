//! What each end of a link remembers of the record states its `Entries` frames carried, so
//! that from protocol 7 a state can go as a patch against the one its key had last on the
//! link (`state_patch.rs`): a write to a large set or map crosses as about what it changed.
//!
//! Both ends keep the same table by the same rule: every record state of every `Entries`
//! frame, in the frame's order, replaces its key's (states under `LINKED_STATE_BYTES_MIN`
//! are not worth a patch and are forgotten instead), and the oldest go past
//! `LINK_STATES_BYTES_MAX`. The link's stream is ordered, so the receiver's table is the
//! sender's as of each record. A patched state carries the hash of its result: a receiver
//! whose table differs (a frame the sender's driver dropped, a lossy simulated network)
//! finds out, applies nothing of that entry and asks for it again (`Nack`); the sender, on
//! any resend, forgets its table and sends whole states until both tables are rebuilt.

use std::collections::{BTreeMap, HashMap};

/// States smaller than this go whole and are not remembered.
pub const LINKED_STATE_BYTES_MIN: usize = 256;
/// Bytes of states (and their keys) one end of a link remembers, per direction.
pub const LINK_STATES_BYTES_MAX: usize = 4 << 20;

/// The states a link's frames carried last, per key, oldest forgotten first.
#[derive(Debug)]
pub struct LinkStates<B> {
    by_key: HashMap<Vec<u8>, (u64, B)>,
    order: BTreeMap<u64, Vec<u8>>,
    next: u64,
    bytes: usize,
}

impl<B> Default for LinkStates<B> {
    fn default() -> Self {
        LinkStates {
            by_key: HashMap::new(),
            order: BTreeMap::new(),
            next: 0,
            bytes: 0,
        }
    }
}

impl<B: AsRef<[u8]>> LinkStates<B> {
    /// The state `key` had last on the link, if remembered.
    pub fn get(&self, key: &[u8]) -> Option<&B> {
        self.by_key.get(key).map(|(_, s)| s)
    }

    /// Whether a state of `len` bytes is remembered (others are forgotten instead).
    pub fn keeps(len: usize) -> bool {
        (LINKED_STATE_BYTES_MIN..=LINK_STATES_BYTES_MAX / 4).contains(&len)
    }

    /// A record of `key` carried `state`: it is now the key's state on the link.
    pub fn remember(&mut self, key: &[u8], state: B) {
        self.forget(key);
        let len = state.as_ref().len();
        if !Self::keeps(len) {
            return;
        }
        self.next += 1;
        self.bytes += key.len() + len;
        self.order.insert(self.next, key.to_vec());
        self.by_key.insert(key.to_vec(), (self.next, state));
        while self.bytes > LINK_STATES_BYTES_MAX {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some((_, s)) = self.by_key.remove(&oldest) {
                self.bytes -= oldest.len() + s.as_ref().len();
            }
        }
    }

    /// Forgets `key`'s state (a record of it that did not resolve here).
    pub fn forget(&mut self, key: &[u8]) {
        if self.by_key.is_empty() {
            return; // links of small records only: no hashing per record
        }
        if let Some((stamp, s)) = self.by_key.remove(key) {
            self.order.remove(&stamp);
            self.bytes -= key.len() + s.as_ref().len();
        }
    }

    /// Forgets everything (the sender resends: what the receiver holds is no longer known).
    pub fn clear(&mut self) {
        *self = LinkStates::default();
    }

    /// Keys remembered.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_states_are_not_remembered_and_the_oldest_go_past_the_budget() {
        let mut t: LinkStates<Vec<u8>> = LinkStates::default();
        t.remember(b"small", vec![1; 10]);
        assert!(t.get(b"small").is_none());
        t.remember(b"a", vec![1; LINKED_STATE_BYTES_MIN]);
        t.remember(b"a", vec![2; 10]);
        assert!(
            t.get(b"a").is_none(),
            "a small state replaces a remembered one"
        );
        let big = LINK_STATES_BYTES_MAX / 4;
        for k in 0..5u8 {
            t.remember(&[k], vec![k; big - 1]);
        }
        assert!(t.get(&[0]).is_none(), "the oldest went");
        assert_eq!(t.get(&[4]).map(Vec::len), Some(big - 1));
        assert_eq!(t.len(), 4);
        t.clear();
        assert!(t.is_empty());
    }
}
