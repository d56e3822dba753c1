//! Keys a replica's records gained from peers (absent before a join, present after), numbered
//! in the order they came, the last `CREATED_KEPT` of them. An anti-entropy round uses them:
//! a key that came from a third replica while the round ran was absent when its summaries
//! were compared, so the offerer's word on it is "absent" too, like a key only this side held.

use std::collections::VecDeque;

/// Keys remembered; a round that misses some (more came while it ran) adopts nothing.
pub const CREATED_KEPT: usize = 4_096;

/// The most recent keys created by joins, numbered.
#[derive(Clone, Debug, Default)]
pub struct CreatedKeys {
    /// The number the next key takes.
    next: u64,
    /// The last keys, numbered `next - keys.len()` to `next - 1`.
    keys: VecDeque<Vec<u8>>,
}

impl CreatedKeys {
    /// Notes that `key` was created by a join.
    pub fn created(&mut self, key: &[u8]) {
        if self.keys.len() == CREATED_KEPT {
            self.keys.pop_front();
        }
        self.keys.push_back(key.to_vec());
        self.next += 1;
    }

    /// The number the next created key takes (a mark to ask `since` with).
    pub fn mark(&self) -> u64 {
        self.next
    }

    /// The keys created since `mark`, or `None` when some are no longer remembered.
    pub fn since(&self, mark: u64) -> Option<Vec<Vec<u8>>> {
        let first = self.next - self.keys.len() as u64;
        if mark < first {
            return None;
        }
        let skip = usize::try_from(mark - first).ok()?;
        Some(self.keys.iter().skip(skip).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_since_a_mark_until_forgotten() {
        let mut c = CreatedKeys::default();
        c.created(b"a");
        let m = c.mark();
        c.created(b"b");
        c.created(b"c");
        assert_eq!(c.since(m), Some(vec![b"b".to_vec(), b"c".to_vec()]));
        assert_eq!(c.since(c.mark()), Some(vec![]));
        for i in 0..CREATED_KEPT {
            c.created(&i.to_be_bytes());
        }
        assert_eq!(c.since(m), None, "b and c were forgotten");
        assert_eq!(c.since(c.mark() - 1).map(|k| k.len()), Some(1));
    }
}
