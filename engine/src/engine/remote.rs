//! Remote joins by hand: a record's state exported, or a peer's state joined in.

use super::*;

impl Engine {
    /// The encoded state of `key` (tombstones included), to hand to another replica.
    pub(crate) fn export(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        check_key(key)?;
        Ok(self.inner.store.get_record(key)?.map(|b| b.to_vec()))
    }

    /// Merges a record state from another replica. Idempotent, commutative; returns whether the
    /// local state changed.
    pub(crate) fn apply_remote(&self, key: &[u8], state: &[u8]) -> Result<bool> {
        let inner = &*self.inner;
        self.check_writable()?;
        check_key(key)?;
        let max = inner.config.record_bytes_max;
        if state.len() > max {
            return Err(Error::RecordTooLarge {
                key: key.to_vec(),
                len: state.len(),
                max,
            });
        }
        let remote =
            codec::decode_record(state).map_err(|e| Error::from_codec("remote record", key, e))?;
        // Gate before the apply lock (the order every path takes them in).
        let _gate = read_lock(&inner.gate);
        let _serial = lock(&inner.apply_lock);
        let _guard = self.lock_keys(&[key]);
        let seen = self.applied();
        let mut wb = inner.store.batch();
        // Re-encoded, not stored as given: only states that came through this codec (a peer's
        // frames) are kept as their bytes.
        let incoming = Incoming {
            key,
            state: Theirs::Decoded(remote),
        };
        let changed = self.stage_joins(vec![incoming], &seen, &mut wb, false, Some(max), None)?;
        if changed.is_empty() {
            return Ok(false);
        }
        self.commit(wb)?;
        self.uncache_states(changed.iter().copied());
        Ok(true)
    }
}
