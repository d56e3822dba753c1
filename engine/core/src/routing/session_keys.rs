//! What a session wrote or read of each key: the writes a later write of that key must find
//! applied in the region that takes it (monotonic writes and writes-follow-reads, per key).
//! Gating on the key's own context, not the whole session's, keeps one stranded write of
//! another key from blocking every remove.
//!
//! Bounded: the least recently used keys beyond the capacity are folded into one of
//! [`EVICTED_BUCKETS`] vectors chosen by the key's hash, so an evicted key still asks for at
//! least what the session wrote or read of it (and perhaps more, never less).

use crate::model::digest::key_hash;
use crate::model::{Op, VersionVector};
use std::collections::{BTreeMap, HashMap};

/// Buckets the contexts of evicted keys are folded into.
pub const EVICTED_BUCKETS: usize = 64;

/// Per-key session contexts, the least recently used evicted into hashed buckets.
#[derive(Clone, Debug)]
pub struct SessionKeys {
    /// Key -> (what the session wrote or read of it, last use).
    keys: HashMap<Vec<u8>, (VersionVector, u64)>,
    /// Last use -> key, oldest first.
    by_use: BTreeMap<u64, Vec<u8>>,
    /// Contexts of evicted keys, by `key_hash % EVICTED_BUCKETS`.
    evicted: Vec<VersionVector>,
    tick: u64,
    capacity: usize,
}

impl SessionKeys {
    /// Keeps up to `capacity` keys apart (at least one).
    pub fn new(capacity: usize) -> SessionKeys {
        SessionKeys {
            keys: HashMap::new(),
            by_use: BTreeMap::new(),
            evicted: vec![VersionVector::new(); EVICTED_BUCKETS],
            tick: 0,
            capacity: capacity.max(1),
        }
    }

    /// Records that the session wrote or read `seen` of `key` (a write's dot, a read's
    /// context).
    pub fn note(&mut self, key: &[u8], seen: &VersionVector) {
        self.tick += 1;
        let tick = self.tick;
        match self.keys.get_mut(key) {
            Some((context, used)) => {
                context.join(seen);
                self.by_use.remove(used);
                *used = tick;
            }
            None => {
                self.keys.insert(key.to_vec(), (seen.clone(), tick));
            }
        }
        self.by_use.insert(tick, key.to_vec());
        while self.keys.len() > self.capacity {
            let Some((_, oldest)) = self.by_use.pop_first() else {
                break;
            };
            if let Some((context, _)) = self.keys.remove(&oldest) {
                self.evicted[bucket(&oldest)].join(&context);
            }
        }
    }

    /// What a write of `key` must find applied: everything the session wrote or read of it.
    pub fn of(&self, key: &[u8]) -> VersionVector {
        let mut context = self.evicted[bucket(key)].clone();
        if let Some((kept, _)) = self.keys.get(key) {
            context.join(kept);
        }
        context
    }

    /// What a write of `ops` must find applied in the region that takes it: what the session
    /// wrote or read of the keys whose operations depend on what is seen
    /// (`Op::depends_on_seen`: removals, deletes, register writes with a read context), and
    /// the read contexts the operations carry. Empty when it need wait for nothing.
    pub fn gate<'a>(&self, ops: impl IntoIterator<Item = (&'a [u8], &'a Op)>) -> VersionVector {
        let mut gate = VersionVector::new();
        for (key, op) in ops {
            if op.depends_on_seen() {
                gate.join(&self.of(key));
            }
            if let Some(context) = op.context() {
                gate.join(context);
            }
        }
        gate
    }

    /// Records a write of `keys` acknowledged with `token` (its dot).
    pub fn wrote<'a>(&mut self, keys: impl IntoIterator<Item = &'a [u8]>, token: &VersionVector) {
        for key in keys {
            self.note(key, token);
        }
    }

    /// Records `seen` for every key (a token merged from another session): each bucket, so
    /// every key, asks for it.
    pub fn note_everywhere(&mut self, seen: &VersionVector) {
        for bucket in &mut self.evicted {
            bucket.join(seen);
        }
    }

    /// Forgets `origin`'s writes beyond `held` (lost: no region will ever have them).
    pub fn forget_beyond(&mut self, origin: crate::model::OriginId, held: u64) {
        for (context, _) in self.keys.values_mut() {
            *context = context.capped(origin, held);
        }
        for bucket in &mut self.evicted {
            *bucket = bucket.capped(origin, held);
        }
    }

    /// Keys kept apart.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is kept apart.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn bucket(key: &[u8]) -> usize {
    (key_hash(key) % EVICTED_BUCKETS as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Dot, OriginId};

    fn dot(origin: u64, seq: u64) -> VersionVector {
        let mut v = VersionVector::new();
        v.add(Dot::new(OriginId(origin), seq));
        v
    }

    #[test]
    fn a_key_asks_for_what_the_session_wrote_or_read_of_it_only() {
        let mut s = SessionKeys::new(8);
        s.note(b"a", &dot(1, 3));
        s.note(b"a", &dot(2, 5));
        s.note(b"b", &dot(1, 9));
        let a = s.of(b"a");
        assert_eq!((a.get(OriginId(1)), a.get(OriginId(2))), (3, 5));
        assert_eq!(
            s.of(b"b").get(OriginId(2)),
            0,
            "b's gate ignores a's writes"
        );
        assert!(s.of(b"never").is_empty());
        s.note_everywhere(&dot(7, 2));
        assert_eq!(s.of(b"never").get(OriginId(7)), 2);
        assert_eq!(s.of(b"a").get(OriginId(7)), 2);
    }

    #[test]
    fn only_context_dependent_writes_wait_for_the_keys_context() {
        use crate::model::Op;
        let mut s = SessionKeys::new(8);
        s.wrote([b"a".as_slice(), b"b".as_slice()], &dot(1, 4));
        let add = Op::CounterAdd { delta: 1 };
        assert!(s.gate([(b"a".as_slice(), &add)]).is_empty());
        let gate = s.gate([(b"a".as_slice(), &Op::Delete)]);
        assert_eq!(gate.get(OriginId(1)), 4);
        // A register write waits for its key's context and for the context it carries.
        let put = Op::Put {
            value: b"v".to_vec(),
            context: Some(dot(2, 7)),
        };
        let gate = s.gate([(b"b".as_slice(), &put), (b"c".as_slice(), &add)]);
        assert_eq!((gate.get(OriginId(1)), gate.get(OriginId(2))), (4, 7));
    }

    #[test]
    fn evicted_keys_still_ask_for_at_least_their_context() {
        let mut s = SessionKeys::new(4);
        for i in 0..100u64 {
            s.note(format!("k{i}").as_bytes(), &dot(i + 1, i + 1));
        }
        assert_eq!(s.len(), 4);
        for i in 0..100u64 {
            let of = s.of(format!("k{i}").as_bytes());
            assert!(of.dominates(&dot(i + 1, i + 1)), "k{i}: {of}");
        }
        // Forgetting an origin's lost writes lowers every key's and bucket's context.
        let mut f = s.clone();
        f.forget_beyond(OriginId(50), 10);
        assert_eq!(f.of(b"k49").get(OriginId(50)), 10);
        assert_eq!(f.of(b"k48").get(OriginId(49)), 49);
        // A key touched again stays among the kept ones.
        s.note(b"k0", &dot(1, 2));
        s.note(b"new", &dot(500, 1));
        assert!(s.keys.contains_key(b"k0".as_slice()));
    }
}
