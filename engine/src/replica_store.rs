//! `Engine` as the replication core's storage seam: reading log entries with the current states
//! of their records, and applying a peer's entry atomically (records joined, entry logged for
//! relaying, applied vector advanced).

use crate::engine::{check_key, lock, max_marker, Engine};
use crate::error::{Error, Result};
use crate::model::{codec, Dot, Record, ReplicaId, VersionVector};
use crate::replication::{ApplyOutcome, RecordState, ReplicaStore};
use crate::store::{keys, LogEntry};
use std::collections::BTreeMap;

impl ReplicaStore for Engine {
    type Error = Error;

    fn replica_id(&self) -> ReplicaId {
        Engine::replica_id(self)
    }

    fn applied(&self) -> VersionVector {
        Engine::applied(self)
    }

    fn read_entry(&self, origin: ReplicaId, seq: u64) -> Result<Option<Vec<RecordState>>> {
        let store = &self.inner.store;
        let Some(bytes) = store.get_log(origin, seq)? else {
            return Ok(None);
        };
        let entry = LogEntry::decode(&bytes)
            .map_err(|e| Error::from_codec("log entry", &keys::log_key(origin, seq), e))?;
        let mut out = Vec::with_capacity(entry.keys.len());
        for key in entry.keys {
            if let Some(state) = store.get_record(&key)? {
                let state = state.to_vec();
                out.push((key, state));
            }
        }
        Ok(Some(out))
    }

    fn apply_entry(
        &self,
        origin: ReplicaId,
        seq: u64,
        records: &[RecordState],
    ) -> Result<ApplyOutcome> {
        let inner = &*self.inner;
        self.check_writable()?;
        if origin == inner.replica {
            return Ok(ApplyOutcome::Duplicate);
        }
        let _serial = lock(&inner.apply_lock);
        let have = lock(&inner.applied).get(origin);
        if seq <= have {
            return Ok(ApplyOutcome::Duplicate);
        }
        if seq != have + 1 {
            return Ok(ApplyOutcome::Gap { expected: have + 1 });
        }
        // Decode everything first: a bad record refuses the whole entry and changes nothing.
        let mut remote: BTreeMap<&[u8], Record> = BTreeMap::new();
        for (key, state) in records {
            if check_key(key).is_err() || state.len() > inner.config.record_bytes_max {
                return Ok(ApplyOutcome::Invalid);
            }
            let Ok(record) = codec::decode_record(state) else {
                return Ok(ApplyOutcome::Invalid);
            };
            remote.entry(key.as_slice()).or_default().join(&record);
        }
        if let Some(marker) = remote.values().filter_map(max_marker).max() {
            lock(&inner.clock).observe(marker, inner.config.clock.now_ms());
        }
        let keys: Vec<&[u8]> = remote.keys().copied().collect();
        let _guards = self.lock_keys(&keys);
        let mut wb = inner.store.batch();
        let mut changed = 0;
        for (key, theirs) in &remote {
            let stored = inner.store.get_record(key)?.map(|b| b.to_vec());
            let mut local = match stored.as_deref().map(codec::decode_record) {
                None => Record::default(),
                Some(Ok(r)) => r,
                Some(Err(e)) => {
                    // Unreadable here anyway: the peer's state replaces it.
                    tracing::warn!(key = %crate::error::show(key), error = %e, "replacing a corrupt record with a peer's state");
                    Record::default()
                }
            };
            local.join(theirs);
            let merged =
                codec::encode_record(&local).map_err(|e| Error::from_codec("record", key, e))?;
            if stored.as_deref() != Some(merged.as_slice()) {
                wb.put_record(key, &merged);
                changed += 1;
            }
        }
        wb.put_log(origin, seq, &LogEntry::encode_keys(&keys));
        wb.put_meta(&keys::applied_key(origin), &seq.to_be_bytes());
        self.commit(wb)?;
        lock(&inner.applied).add(Dot::new(origin, seq));
        Ok(ApplyOutcome::Applied { changed })
    }
}
