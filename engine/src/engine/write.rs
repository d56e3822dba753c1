//! The write path: typed writes and batches become operations applied under one fresh dot,
//! the records and the log entry committed in one RocksDB batch.

use super::*;

impl Engine {
    /// Multi-value register write that supersedes every sibling this replica holds.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<CausalToken> {
        self.apply(
            key,
            Op::Put {
                value: value.to_vec(),
                context: None,
            },
        )
    }

    /// Multi-value register write that supersedes exactly what `context` (from a read) saw.
    /// The context is a claim: one naming writes this replica has not seen of the key (its
    /// record's context joined with its applied vector) is refused with
    /// [`Error::ContextAhead`], nothing written, so a write never supersedes less than was read
    /// nor what it could not have read here.
    pub fn put_with(
        &self,
        key: &[u8],
        value: &[u8],
        context: &VersionVector,
    ) -> Result<CausalToken> {
        self.apply(
            key,
            Op::Put {
                value: value.to_vec(),
                context: Some(context.clone()),
            },
        )
    }

    /// Last-writer-wins register write.
    pub fn lww_set(&self, key: &[u8], value: &[u8]) -> Result<CausalToken> {
        self.apply(
            key,
            Op::LwwSet {
                value: value.to_vec(),
            },
        )
    }

    /// Counter increment (negative to decrement).
    pub fn counter_add(&self, key: &[u8], delta: i64) -> Result<CausalToken> {
        self.apply(key, Op::CounterAdd { delta })
    }

    /// Adds elements to a set.
    pub fn set_add(&self, key: &[u8], elems: &[&[u8]]) -> Result<CausalToken> {
        self.apply(
            key,
            Op::SetAdd {
                elems: elems.iter().map(|e| e.to_vec()).collect(),
            },
        )
    }

    /// Removes elements from a set (those this replica sees; concurrent adds survive).
    pub fn set_remove(&self, key: &[u8], elems: &[&[u8]]) -> Result<CausalToken> {
        self.apply(
            key,
            Op::SetRemove {
                elems: elems.iter().map(|e| e.to_vec()).collect(),
            },
        )
    }

    /// Applies `op` to map field `field` (nested maps: `op` is itself a `MapUpdate`).
    pub fn map_update(&self, key: &[u8], field: &[u8], op: Op) -> Result<CausalToken> {
        self.apply(
            key,
            Op::MapUpdate {
                field: field.to_vec(),
                op: Box::new(op),
            },
        )
    }

    /// Removes a map field.
    pub fn map_remove(&self, key: &[u8], field: &[u8]) -> Result<CausalToken> {
        self.apply(
            key,
            Op::MapRemove {
                field: field.to_vec(),
            },
        )
    }

    /// Deletes the key: a causal tombstone of everything this replica sees under it.
    pub fn delete(&self, key: &[u8]) -> Result<CausalToken> {
        self.apply(key, Op::Delete)
    }

    /// Gives the key a time to live: what it holds now (and what later writes without a TTL
    /// add) stops being read `ttl` after this write's HLC time, in every region. On an absent
    /// key it changes nothing. The rules under concurrency are in `model::expiry`.
    pub fn expire(&self, key: &[u8], ttl: std::time::Duration) -> Result<CausalToken> {
        self.apply(
            key,
            Op::Expire {
                expiry: Expiry::After(millis(ttl)),
            },
        )
    }

    /// Makes the key expire at wall time `at` (as read by each region's clock, within the
    /// skew bound); a time already past expires it at once.
    pub fn expire_at(&self, key: &[u8], at: std::time::SystemTime) -> Result<CausalToken> {
        self.apply(
            key,
            Op::Expire {
                expiry: Expiry::At(unix_millis(at)),
            },
        )
    }

    /// Removes the key's pending expiries (those this replica sees): it is kept until deleted.
    pub fn persist(&self, key: &[u8]) -> Result<CausalToken> {
        self.apply(
            key,
            Op::Expire {
                expiry: Expiry::Never,
            },
        )
    }

    /// Applies one operation.
    pub fn apply(&self, key: &[u8], op: Op) -> Result<CausalToken> {
        check_key(key)?;
        self.check_op(&op, 1)?;
        self.write_checked(&[key], std::iter::once(op), None)
    }

    /// Applies a batch atomically: one dot, one log entry, one RocksDB write.
    pub fn write(&self, batch: Batch) -> Result<CausalToken> {
        let (keys, ops) = self.checked_batch(batch)?;
        let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        self.write_checked(&keys, ops, None)
    }

    /// A batch's keys and operations, checked.
    pub(super) fn checked_batch(&self, batch: Batch) -> Result<(Vec<Vec<u8>>, Vec<Op>)> {
        if batch.ops.is_empty() {
            return Err(Error::InvalidOperation("empty batch"));
        }
        if batch.ops.len() > crate::limits::BATCH_OPS_MAX {
            return Err(Error::BatchTooLarge {
                len: batch.ops.len(),
                max: crate::limits::BATCH_OPS_MAX,
            });
        }
        for (key, op) in &batch.ops {
            check_key(key)?;
            self.check_op(op, 1)?;
        }
        // A key's expiry applies after its writes in the batch, so that it covers them.
        let (mut ops, expiries): (Vec<_>, Vec<_>) =
            batch.ops.into_iter().partition(|(_, op)| !op.is_expire());
        ops.extend(expiries);
        Ok(ops.into_iter().unzip())
    }

    /// Fences this process: from now on it refuses local writes (`Error::Fenced`), for the
    /// rest of its life. Replication calls it when the other members say a newer process of
    /// this replica's identity runs; peers' entries are not affected (they refuse its links).
    pub(crate) fn fence(&self, reason: &str) {
        if self.inner.fenced.set(reason.to_string()).is_ok() {
            tracing::error!(%reason, "this process is fenced: it refuses local writes from now on");
            metrics::gauge!("meridian_fenced").set(1.0);
        }
    }

    /// Why this process is fenced, if it is.
    pub fn fenced(&self) -> Option<String> {
        self.inner.fenced.get().cloned()
    }

    /// Refuses local writes of a fenced process.
    fn check_not_fenced(&self) -> Result<()> {
        match self.inner.fenced.get() {
            Some(reason) => Err(Error::Fenced {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Refuses writes after a storage failure, or while the disk is nearly full.
    pub(crate) fn check_writable(&self) -> Result<()> {
        self.check_not_poisoned()?;
        self.inner.disk.check()
    }

    /// Refuses storage writes after a storage failure (writes that free space or are tiny,
    /// such as compaction or an epoch change, go on when the disk is nearly full).
    pub(crate) fn check_not_poisoned(&self) -> Result<()> {
        if self.inner.poisoned.load(Ordering::SeqCst) {
            return Err(Error::Poisoned);
        }
        Ok(())
    }

    /// The write path for validated operations, `keys[i]` being the key of the i-th operation;
    /// the write answers client request `request`, if given (`requests.rs`).
    pub(super) fn write_checked(
        &self,
        keys: &[&[u8]],
        ops: impl IntoIterator<Item = Op>,
        request: Option<&crate::model::RequestTag>,
    ) -> Result<CausalToken> {
        let inner = &*self.inner;
        self.check_writable()?;
        self.check_not_fenced()?;
        // Held until the write is committed and visible: an epoch change waits for it.
        let origin = read_lock(&inner.gate);
        let distinct: Cow<'_, [&[u8]]> = if keys.len() == 1 {
            Cow::Borrowed(keys)
        } else {
            let mut d = keys.to_vec();
            d.sort_unstable();
            d.dedup();
            Cow::Owned(d)
        };
        let _guards = self.lock_keys(&distinct);
        let summarised = inner.digest.is_built();
        let loaded = self.load_many_hashed(&distinct, summarised)?;
        let before: Vec<(bool, Option<u64>)> =
            loaded.iter().map(|(r, h)| (r.is_some(), *h)).collect();
        let mut records: Vec<Record> = loaded
            .into_iter()
            .map(|(r, _)| r.unwrap_or_default())
            .collect();

        // Numbered where it commits (`commit_order.rs`): the log holds writes in sequence order.
        let (seq, written, (dot, encoded)) = self.commit_numbered(|seq| {
            let dot = Dot::new(origin.id, seq);
            let now_ms = inner.config.clock.now_ms();
            let marker = lock(&inner.clock).tick(now_ms);
            let stamp = Stamp { dot, marker };
            let encoded = self.apply_and_encode(keys, ops, &distinct, &mut records, stamp)?;
            let mut wb = inner.store.batch();
            for ((key, bytes), (record, (existed, _))) in distinct
                .iter()
                .zip(&encoded)
                .zip(records.iter().zip(&before))
            {
                wb.put_record(key, bytes);
                self.mark_expiring(&mut wb, key, bytes);
                if !existed {
                    wb.index_key(key);
                }
                if record.is_bottom() {
                    // A new tombstone: compaction reclaims it once it is stable.
                    self.mark_tombstone(&mut wb, key);
                }
            }
            wb.put_log(origin.id, seq, &LogEntry::encode_whole(&distinct, request));
            if let Some(tag) = request {
                requests::put_request(&mut wb, tag, dot, now_ms);
            }
            Ok((wb, (dot, encoded)))
        })?;
        self.sync_written(written)?;
        if summarised {
            for ((key, bytes), (_, old)) in distinct.iter().zip(&encoded).zip(&before) {
                inner
                    .digest
                    .changed(key, *old, Some(crate::model::digest::state_hash(bytes)));
            }
        }
        if inner.caching.load(Ordering::Relaxed) {
            // Cached with the stripes still held and before the sequence becomes visible.
            let written = distinct.iter().copied();
            let entry = CachedEntry {
                cells: self.cache_states(written.zip(encoded.iter().map(Vec::as_slice))),
                request: request.map(|tag| Arc::new(tag.clone())),
            };
            let size = distinct.iter().map(|k| k.len() + ENTRY_KEY_OVERHEAD).sum();
            lock(&inner.entry_keys).insert((origin.id, seq), entry, size);
        }
        if request.is_some() {
            self.requests_recorded(1);
        }
        let checkpoint = lock(&inner.own).commit(seq);
        self.applied_advanced();
        self.checkpoint_contiguous(checkpoint);
        inner.commit_subscribers.notify();
        Ok(CausalToken::of_dot(dot))
    }

    /// Applies `ops` (one per entry of `keys`) to `records` (one per entry of the sorted
    /// `distinct`) and encodes the results in `distinct` order.
    pub(super) fn apply_and_encode(
        &self,
        keys: &[&[u8]],
        ops: impl IntoIterator<Item = Op>,
        distinct: &[&[u8]],
        records: &mut [Record],
        stamp: Stamp,
    ) -> Result<Vec<Vec<u8>>> {
        let mut applied: Option<VersionVector> = None;
        for (key, op) in keys.iter().zip(ops) {
            let i = distinct
                .binary_search(key)
                .map_err(|_| Error::InvalidOperation("batch key lost"))?;
            if op.has_context() {
                // A caller's context is a claim: it may supersede only what this replica has
                // seen of the key (its record's context and every write applied here). Stored
                // as given, a context naming a replica's future writes would make them vanish
                // here when they arrive; lowered, the write would cover less than was read.
                let mut seen = applied.get_or_insert_with(|| self.applied()).clone();
                seen.join(&records[i].context());
                if !op.contexts_within(&seen) {
                    metrics::counter!("meridian_client_contexts_refused_total").increment(1);
                    return Err(Error::ContextAhead { key: key.to_vec() });
                }
            }
            records[i].apply(op, stamp).map_err(|e| match e {
                ApplyError::WrongType {
                    existing,
                    requested,
                } => Error::WrongType {
                    key: key.to_vec(),
                    existing,
                    requested,
                },
                ApplyError::CounterOverflow => Error::CounterOverflow { key: key.to_vec() },
                ApplyError::Invalid(why) => Error::InvalidOperation(why),
            })?;
        }
        // The entry as replication ships it must fit: refused now, not stuck later.
        let max = self.inner.config.record_bytes_max;
        let mut out = Vec::with_capacity(records.len());
        for (key, record) in distinct.iter().zip(records.iter()) {
            let bytes =
                codec::encode_record(record).map_err(|e| Error::from_codec("record", key, e))?;
            out.push(bytes);
        }
        let len =
            crate::limits::wire_bytes(distinct.iter().zip(&out).map(|(k, v)| (*k, v.as_slice())));
        if len > max {
            return Err(match distinct {
                [key] => Error::RecordTooLarge {
                    key: key.to_vec(),
                    len,
                    max,
                },
                _ => Error::BatchTooLarge { len, max },
            });
        }
        Ok(out)
    }

    pub(super) fn checkpoint_contiguous(&self, contiguous: Option<u64>) {
        if let Some(c) = contiguous {
            let mut wb = self.inner.store.batch();
            wb.put_meta(keys::META_OWN_CONTIGUOUS, &c.to_be_bytes());
            // Best effort: without it the next open searches from further back.
            let _ = wb.commit(false);
        }
    }

    /// Whether writes that set an expiry are refused now (a member linked runs a release that
    /// does not read them).
    fn expiry_refused(&self) -> bool {
        self.inner
            .expiry_refused
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(super) fn check_op(&self, op: &Op, depth: usize) -> Result<()> {
        let max = self.inner.config.value_bytes_max;
        let fits = |len: usize| {
            if len > max {
                Err(Error::ValueTooLarge { len, max })
            } else {
                Ok(())
            }
        };
        if depth >= MAX_DEPTH {
            return Err(Error::InvalidOperation("maps nested too deeply"));
        }
        match op {
            Op::Put { value, context } => {
                if context
                    .as_ref()
                    .is_some_and(|c| c.len() > CONTEXT_WIDTH_MAX)
                {
                    return Err(Error::InvalidOperation("read context too wide"));
                }
                fits(value.len())
            }
            Op::LwwSet { value } => fits(value.len()),
            Op::SetAdd { elems } | Op::SetRemove { elems } => {
                elems.iter().try_for_each(|e| fits(e.len()))?;
                fits(elems.iter().map(Vec::len).sum())
            }
            Op::MapUpdate { field, op } => {
                fits(field.len())?;
                if matches!(**op, Op::Delete | Op::Expire { .. }) {
                    return Err(Error::InvalidOperation(
                        "a map update cannot carry a delete or an expiry",
                    ));
                }
                self.check_op(op, depth + 1)
            }
            Op::MapRemove { field } => fits(field.len()),
            Op::Expire { expiry } if *expiry != Expiry::Lapsed && self.expiry_refused() => {
                Err(Error::InvalidOperation(
                    "a region runs a release that does not read expiries: upgrade it first",
                ))
            }
            Op::CounterAdd { .. } | Op::Delete | Op::Expire { .. } => Ok(()),
        }
    }
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A wall time in milliseconds since the Unix epoch (0 before it), saturating.
pub(crate) fn unix_millis(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(millis)
        .unwrap_or(0)
}
