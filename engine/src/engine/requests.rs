//! Client requests already answered: a write tagged with its client's request (`RequestTag`)
//! records the tag with its dot, where it is made and wherever its log entry is applied, in
//! the same RocksDB batch as the write. A retry of the request, in this region or another
//! that has applied the write, is answered with that write instead of being applied again.
//!
//! Kept across restarts, bounded by age (`REQUEST_TAG_AGE_MS`) and count
//! (`REQUEST_TAGS_MAX`): the oldest go first.

use super::*;
use crate::model::RequestTag;

/// How long a request's tag is kept after its write was made (one hour: a client retries
/// within seconds, an operator's script within minutes).
pub const REQUEST_TAG_AGE_MS: u64 = 3_600_000;

/// Most request tags kept (about 100 bytes each on disk).
pub const REQUEST_TAGS_MAX: usize = 1 << 20;

/// Tags pruned at most per pass (a pass runs with compaction, and on writes once over the
/// bound).
const PRUNE_CHUNK: usize = 4_096;

/// What `Engine::write_once` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Once {
    /// The batch was applied now, under this token.
    Applied(CausalToken),
    /// A write tagged with the same request was applied before (here or in another region):
    /// nothing was written now; this is that write's token.
    Earlier(CausalToken),
}

impl Once {
    /// The token of the write that answered the request.
    pub fn token(&self) -> &CausalToken {
        match self {
            Once::Applied(t) | Once::Earlier(t) => t,
        }
    }
}

/// The stored value of a request key: the write's dot and when it was made.
fn encode_answer(dot: Dot, ms: u64) -> [u8; 24] {
    let mut v = [0; 24];
    v[..8].copy_from_slice(&dot.replica.0.to_be_bytes());
    v[8..16].copy_from_slice(&dot.counter.to_be_bytes());
    v[16..].copy_from_slice(&ms.to_be_bytes());
    v
}

fn decode_answer(bytes: &[u8]) -> Option<(Dot, u64)> {
    let b: &[u8; 24] = bytes.try_into().ok()?;
    let word = |i: usize| {
        let mut w = [0; 8];
        w.copy_from_slice(&b[i..i + 8]);
        u64::from_be_bytes(w)
    };
    Some((Dot::new(OriginId(word(0)), word(8)), word(16)))
}

impl Engine {
    /// The token of the write that answered request `tag`, if this replica holds it (made
    /// here, or replicated from the region that made it).
    pub fn request_outcome(&self, tag: &RequestTag) -> Result<Option<CausalToken>> {
        Ok(self.request_dot(tag)?.map(CausalToken::of_dot))
    }

    fn request_dot(&self, tag: &RequestTag) -> Result<Option<Dot>> {
        if !tag.is_sane() {
            return Ok(None);
        }
        let stored = self.inner.store.get_meta(&keys::request_key(tag))?;
        Ok(stored
            .as_deref()
            .and_then(decode_answer)
            .map(|(dot, _)| dot))
    }

    /// Applies `batch` as the answer to request `tag`, unless a write tagged with it is held
    /// already: then nothing is written and that write's token is returned. The tag travels
    /// with the write's log entry, so every region that applies it answers a retry the same
    /// way. Two regions given the same request before either has the other's write both
    /// apply it (the tag cannot be coordinated without a round trip); a retry made only after
    /// the first attempt can no longer apply (the routed client's deadlines) finds it held
    /// wherever it has arrived.
    pub fn write_once(&self, tag: &RequestTag, batch: Batch) -> Result<Once> {
        if !tag.is_sane() {
            return Err(Error::InvalidOperation(
                "a request tag names a client of at most 128 bytes and a non-zero id",
            ));
        }
        if let Some(token) = self.request_outcome(tag)? {
            return Ok(Once::Earlier(token));
        }
        let (keys, ops) = self.checked_batch(batch)?;
        let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        self.write_checked(&keys, ops, Some(tag)).map(Once::Applied)
    }

    /// Records in `wb` that request `tag` was answered by the write `dot` made at `ms`,
    /// unless an earlier write answered it (the first answer stands). Returns whether it was
    /// recorded.
    pub(super) fn stage_request(
        &self,
        wb: &mut crate::store::AtomicWrite<'_>,
        tag: &RequestTag,
        dot: Dot,
        ms: u64,
    ) -> Result<bool> {
        if self
            .inner
            .store
            .get_meta(&keys::request_key(tag))?
            .is_some()
        {
            return Ok(false);
        }
        put_request(wb, tag, dot, ms);
        Ok(true)
    }

    /// Counts tags recorded by a committed batch; prunes the oldest when over the bound.
    pub(super) fn requests_recorded(&self, n: usize) {
        if n == 0 {
            return;
        }
        let count = self.inner.request_tags.fetch_add(n, Ordering::Relaxed) + n;
        if count > REQUEST_TAGS_MAX + PRUNE_CHUNK / 4 {
            if let Err(e) = self.prune_requests(self.inner.config.clock.now_ms()) {
                tracing::warn!(error = %e, "pruning request tags failed; retried later");
            }
        }
    }

    /// Deletes request tags older than `REQUEST_TAG_AGE_MS` and, oldest first, those beyond
    /// `REQUEST_TAGS_MAX`: at most `PRUNE_CHUNK` per call. Returns how many went.
    pub(crate) fn prune_requests(&self, now_ms: u64) -> Result<usize> {
        let inner = &*self.inner;
        let cutoff = now_ms.saturating_sub(REQUEST_TAG_AGE_MS);
        let count = inner.request_tags.load(Ordering::Relaxed);
        let mut over = count.saturating_sub(REQUEST_TAGS_MAX);
        let mut wb = inner.store.batch();
        let mut pruned = 0;
        let mut after: Option<Vec<u8>> = None;
        'pages: while pruned < PRUNE_CHUNK {
            // Small pages: a pass that finds nothing to prune reads a few keys.
            let page =
                inner
                    .store
                    .meta_page(keys::META_REQUEST_AGE_PREFIX, after.as_deref(), 256)?;
            for (age_key, _) in &page {
                let Some((ms, key)) = keys::request_key_of_age_key(age_key) else {
                    wb.delete_meta(age_key);
                    continue;
                };
                if ms >= cutoff && over == 0 {
                    break 'pages;
                }
                over = over.saturating_sub(1);
                // The request key goes with the age key that recorded it (a later record of
                // the same tag under another age is not this one).
                if inner
                    .store
                    .get_meta(&key)?
                    .as_deref()
                    .and_then(decode_answer)
                    .is_some_and(|(_, at)| at == ms)
                {
                    wb.delete_meta(&key);
                }
                wb.delete_meta(age_key);
                pruned += 1;
            }
            match page.last() {
                Some((last, _)) if page.len() == 256 => after = Some(last.to_vec()),
                _ => break,
            }
        }
        if pruned > 0 {
            wb.commit(false)?;
            let _ = inner
                .request_tags
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                    Some(c.saturating_sub(pruned))
                });
            metrics::counter!("meridian_request_tags_pruned_total").increment(pruned as u64);
        }
        Ok(pruned)
    }

    /// How many request tags are kept (feature `testing`).
    #[cfg(feature = "testing")]
    pub fn request_tags(&self) -> usize {
        self.inner.request_tags.load(Ordering::Relaxed)
    }

    /// Prunes request tags as at `now_ms` (feature `testing`; the engine prunes by itself).
    #[cfg(feature = "testing")]
    pub fn prune_requests_at(&self, now_ms: u64) -> Result<usize> {
        self.prune_requests(now_ms)
    }
}

/// Records in `wb` that request `tag` was answered by the write `dot` made at `ms`.
pub(super) fn put_request(
    wb: &mut crate::store::AtomicWrite<'_>,
    tag: &RequestTag,
    dot: Dot,
    ms: u64,
) {
    wb.put_meta(&keys::request_key(tag), &encode_answer(dot, ms));
    wb.put_meta(&keys::request_age_key(ms, tag), &[]);
}

/// Counts the request tags a directory keeps (at open).
pub(super) fn count_request_tags(store: &crate::store::Store) -> Result<usize> {
    let mut n = 0;
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store.meta_page(keys::META_REQUEST_AGE_PREFIX, after.as_deref(), 65_536)?;
        n += page.len();
        match page.last() {
            Some((last, _)) if page.len() == 65_536 => after = Some(last.to_vec()),
            _ => return Ok(n),
        }
    }
}
