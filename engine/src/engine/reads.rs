//! Reads: one key as a typed view, scans in pages bounded in rows and bytes.

use super::*;

impl Engine {
    /// The decoded records of `keys` (sorted, distinct) in one batched lookup, each with the
    /// state hash of its stored bytes when `hash` is set (the summary for anti-entropy needs
    /// what a record was to take it out).
    pub(super) fn load_many_hashed(
        &self,
        keys: &[&[u8]],
        hash: bool,
    ) -> Result<Vec<(Option<Record>, Option<u64>)>> {
        let one = |key: &[u8], bytes: Option<&[u8]>| -> Result<(Option<Record>, Option<u64>)> {
            match bytes {
                Some(b) => Ok((
                    Some(decode_stored(key, b).inspect_err(|e| self.note_corrupt(key, e))?),
                    hash.then(|| crate::model::digest::state_hash(b)),
                )),
                None => Ok((None, None)),
            }
        };
        if let [key] = keys {
            let stored = self.inner.store.get_record(key)?;
            return Ok(vec![one(key, stored.as_deref())?]);
        }
        let stored = self.inner.store.get_records(keys)?;
        keys.iter()
            .zip(stored)
            .map(|(key, bytes)| one(key, bytes.as_deref()))
            .collect()
    }

    pub(crate) fn load(&self, key: &[u8]) -> Result<Option<Record>> {
        self.inner
            .store
            .get_record(key)?
            .map(|bytes| decode_stored(key, &bytes))
            .transpose()
            .inspect_err(|e| self.note_corrupt(key, e))
    }

    /// A record that does not decode found by a read or a write: reported, and repaired from
    /// a peer when one shows its state (`faults.rs`).
    fn note_corrupt(&self, key: &[u8], e: &Error) {
        if matches!(e, Error::Corrupt { .. }) {
            self.note_fault(faults::Stored::Record, key, e);
        }
    }

    /// Everything under `key`; `None` if absent or deleted.
    pub fn read(&self, key: &[u8]) -> Result<Option<Read>> {
        check_key(key)?;
        Ok(self.load_visible(key)?.and_then(read_of))
    }

    /// When the key's present value stops being read (its earliest pending expiry), if it has
    /// one; `None` for a key that is absent or does not expire.
    pub fn expires_at(&self, key: &[u8]) -> Result<Option<std::time::SystemTime>> {
        check_key(key)?;
        let Some(record) = self.load_visible(key)? else {
            return Ok(None);
        };
        if record.is_bottom() {
            return Ok(None);
        }
        Ok(record
            .expires_at()
            .map(|at| std::time::UNIX_EPOCH + std::time::Duration::from_millis(at.millis())))
    }

    /// The record under `key` as a reader sees it now: what has expired left out.
    fn load_visible(&self, key: &[u8]) -> Result<Option<Record>> {
        Ok(self.load(key)?.map(|r| self.visible(r, &mut None)))
    }

    /// `record` as a reader sees it now; the read time (which takes the clock's lock) is
    /// read only for a record with expiries, once per `now` slot.
    fn visible(&self, record: Record, now: &mut Option<Hlc>) -> Record {
        if record.expiries.store.is_empty() {
            return record;
        }
        let at = *now.get_or_insert_with(|| self.read_time());
        record.into_visible_at(at)
    }

    /// The HLC time a read is made at now: the later of the wall clock and the last marker
    /// this replica issued or observed (so an expiry any write here was ordered after is
    /// passed). A value whose expiry is at or before it is not read.
    pub fn read_time(&self) -> Hlc {
        let wall = Hlc::from_millis(self.inner.config.clock.now_ms());
        wall.max(lock(&self.inner.clock).last())
    }

    pub(super) fn typed(&self, key: &[u8], kind: Kind) -> Result<Option<ReadValue>> {
        check_key(key)?;
        let Some(mut record) = self.load_visible(key)? else {
            return Ok(None);
        };
        if let Some(read) = record.values.remove(&kind).and_then(ReadValue::from_value) {
            return Ok(Some(read));
        }
        let existing = record.present().next().map(Value::kind);
        match existing {
            Some(existing) => Err(Error::WrongType {
                key: key.to_vec(),
                existing,
                requested: kind,
            }),
            None => Ok(None),
        }
    }

    /// A multi-value register: its siblings and the context to write back with.
    pub fn get(&self, key: &[u8]) -> Result<Option<Siblings>> {
        Ok(match self.typed(key, Kind::Register)? {
            Some(ReadValue::Register(s)) => Some(s),
            _ => None,
        })
    }

    /// A last-writer-wins register.
    pub fn get_lww(&self, key: &[u8]) -> Result<Option<LwwValue>> {
        Ok(match self.typed(key, Kind::Lww)? {
            Some(ReadValue::Lww(v)) => Some(v),
            _ => None,
        })
    }

    /// A counter's value.
    pub fn get_counter(&self, key: &[u8]) -> Result<Option<i64>> {
        Ok(match self.typed(key, Kind::Counter)? {
            Some(ReadValue::Counter(v)) => Some(v),
            _ => None,
        })
    }

    /// A set's elements in byte order.
    pub fn get_set(&self, key: &[u8]) -> Result<Option<Vec<Vec<u8>>>> {
        Ok(match self.typed(key, Kind::Set)? {
            Some(ReadValue::Set(v)) => Some(v),
            _ => None,
        })
    }

    /// A map's fields.
    pub fn get_map(&self, key: &[u8]) -> Result<Option<MapView>> {
        Ok(match self.typed(key, Kind::Map)? {
            Some(ReadValue::Map(v)) => Some(v),
            _ => None,
        })
    }

    /// Keys starting with `prefix`, in order, at most `limit` of them (deleted keys skipped).
    pub fn scan_prefix(&self, prefix: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Read)>> {
        let end = keys::prefix_end(prefix);
        self.scan(prefix, end.as_deref(), limit)
    }

    /// Keys in `[start, end)` (`end = None`: to the last key), at most `limit` of them.
    pub fn scan_range(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Read)>> {
        self.scan(start, end, limit)
    }

    /// One page of the keys starting with `prefix` after `after` (exclusive), in order: at most
    /// `limit` rows and about `bytes_max` bytes of records, at least one row; and whether more
    /// follow.
    pub fn scan_prefix_page(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        bytes_max: usize,
    ) -> Result<(Vec<Row>, bool)> {
        let end = keys::prefix_end(prefix);
        let start = match after {
            Some(a) if a >= prefix => {
                let mut next = a.to_vec();
                next.push(0); // the smallest key after `a`
                next
            }
            _ => prefix.to_vec(),
        };
        self.scan_bounded(&start, end.as_deref(), limit, bytes_max)
    }

    pub(super) fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Read)>> {
        Ok(self.scan_bounded(start, end, limit, usize::MAX)?.0)
    }

    /// Rows in `[start, end)` up to `limit` rows and about `bytes_max` bytes (at least one);
    /// and whether stored records remain beyond (a deleted key among them reads as nothing).
    pub(super) fn scan_bounded(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
        bytes_max: usize,
    ) -> Result<(Vec<Row>, bool)> {
        let mut out = Vec::new();
        let mut bytes_seen = 0usize;
        let mut now = None;
        for item in self.inner.store.records_from(start, end) {
            if out.len() >= limit || (bytes_seen >= bytes_max && !out.is_empty()) {
                return Ok((out, true));
            }
            let (key, bytes) = item?;
            bytes_seen += key.len() + bytes.len();
            match decode_stored(&key, &bytes) {
                Ok(record) => {
                    if let Some(read) = read_of(self.visible(record, &mut now)) {
                        out.push((key.into_vec(), read));
                    }
                }
                // One unreadable record does not hide the others: skipped and reported.
                Err(e @ (Error::Corrupt { .. } | Error::FutureVersion { .. })) => {
                    self.note_fault(faults::Stored::Record, &key, &e)
                }
                Err(e) => return Err(e),
            }
        }
        Ok((out, false))
    }
}

/// The record stored under `key`, decoded.
fn decode_stored(key: &[u8], bytes: &[u8]) -> Result<Record> {
    codec::decode_record(bytes).map_err(|e| Error::from_codec("record", key, e))
}

fn read_of(record: Record) -> Option<Read> {
    let token = CausalToken(record.context());
    let values: Vec<ReadValue> = record
        .values
        .into_values()
        .filter_map(ReadValue::from_value)
        .collect();
    (!values.is_empty()).then_some(Read { values, token })
}
