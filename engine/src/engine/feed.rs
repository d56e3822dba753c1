//! The change feed: every change to the keys under a prefix after a position, in any region.
//!
//! A position is a causal token read per origin: "every write of each origin up to its
//! number". The replication log already names the keys each write changed, in order per
//! origin, and is contiguous above its floor; the feed walks it from the position up to the
//! applied vector and hands out each named key with its current state (the latest version,
//! not every version: a key written twice in a batch of entries is handed out once, after
//! the later write). Delivery is at least once: a change's token is the position after it,
//! and resuming from any token hands out every change after it, some perhaps again.
//!
//! Where the log no longer holds what a position needs (truncated at stability past a slow
//! consumer's bound, or skipped by a state transfer), the feed says so with a reset event
//! rather than leave a silent gap. A named feed holds a retention floor on the log
//! (`Engine::ack_feed`) of at most `Config::feed_retention_entries` entries per origin behind
//! stability, so a consumer that acknowledges as it goes, in this region, is never reset.

use super::*;
use crate::read::{Change, FeedEvent};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// Log entries one refill of a feed reads at most: what a slow consumer costs in memory.
pub const FEED_BATCH_ENTRIES: usize = 1_024;
/// Longest feed name.
pub const FEED_NAME_BYTES_MAX: usize = 256;
/// Most named feeds one replica keeps.
pub const FEEDS_MAX: usize = 1_024;

/// A subscription to the changes under a prefix (`Engine::feed`): pull events with
/// `next_timeout`, iterate (blocking), or await `next_event` (any async runtime: the feed's
/// waker is woken when the applied vector advances). Memory is bounded by `FEED_BATCH_ENTRIES` entries'
/// keys whatever the consumer's pace: the feed reads the log only when asked.
pub struct Feed {
    engine: Engine,
    prefix: Vec<u8>,
    name: Option<String>,
    /// Per origin, the last number whose changes were handed out or queued.
    position: VersionVector,
    ready: VecDeque<FeedEvent>,
    woken: Arc<Woken>,
    _subscription: Subscription,
}

/// How a feed waiting for the applied vector to advance is woken: a generation and condition
/// variable for blocking waits, a waker for `next_event`.
#[derive(Default)]
struct Woken {
    generation: Mutex<u64>,
    changed: Condvar,
    waker: Mutex<Option<std::task::Waker>>,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("prefix", &crate::error::show(&self.prefix))
            .field("name", &self.name)
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Follows the changes to keys under `prefix` (empty: every key) after `from`, or after
    /// every write applied here now when `from` is `None`. The token of any event, or one
    /// handed out by another region's feed, resumes the feed here or in any region.
    pub fn feed(&self, prefix: &[u8], from: Option<&CausalToken>) -> Result<Feed> {
        if prefix.len() > KEY_BYTES_MAX {
            return Err(Error::InvalidKey("prefix longer than 64 KiB"));
        }
        let position = match from {
            // Every event carries the position: a token naming more origins than any cluster
            // has is refused rather than copied into each.
            Some(token) if token.0.len() > CONTEXT_WIDTH_MAX => {
                return Err(Error::InvalidOperation("feed token too wide"));
            }
            Some(token) => token.0.clone(),
            None => self.applied(),
        };
        let woken: Arc<Woken> = Arc::default();
        let wake = Arc::clone(&woken);
        let subscription = self.on_applied(move || {
            *lock(&wake.generation) += 1;
            wake.changed.notify_all();
            if let Some(waker) = lock(&wake.waker).take() {
                waker.wake();
            }
        });
        metrics::gauge!("meridian_feed_subscribers").increment(1.0);
        Ok(Feed {
            engine: self.clone(),
            prefix: prefix.to_vec(),
            name: None,
            position,
            ready: VecDeque::new(),
            woken,
            _subscription: subscription,
        })
    }

    /// A named feed: `feed`, resumed from where the name was last acknowledged (`ack_feed`)
    /// when `from` is `None` and the name is known here. Acknowledged positions hold the log
    /// back from truncation (up to `Config::feed_retention_entries` entries per origin), so
    /// the feed resumes in this region without a reset after any pause within that bound.
    pub fn named_feed(
        &self,
        name: &str,
        prefix: &[u8],
        from: Option<&CausalToken>,
    ) -> Result<Feed> {
        check_feed_name(name)?;
        let stored = self.feed_position(name)?;
        let from = from.cloned().or(stored.clone());
        if stored.is_none() {
            let start = from.clone().unwrap_or_else(|| CausalToken(self.applied()));
            self.ack_feed(name, &start)?;
        }
        let mut feed = self.feed(prefix, from.as_ref())?;
        feed.name = Some(name.to_string());
        Ok(feed)
    }

    /// Records that the consumer of feed `name` handled every change up to `token`: the log
    /// is kept from there on (within the bound), and `named_feed` resumes there. Positions
    /// only move forward (a token behind the stored one changes nothing).
    pub fn ack_feed(&self, name: &str, token: &CausalToken) -> Result<()> {
        check_feed_name(name)?;
        if token.0.len() > CONTEXT_WIDTH_MAX {
            return Err(Error::InvalidOperation("feed token too wide"));
        }
        let inner = &*self.inner;
        let _serial = lock(&inner.feed_positions);
        let stored = self.feed_position(name)?;
        if stored.as_ref().is_some_and(|p| p.0.dominates(&token.0)) {
            return Ok(());
        }
        if stored.is_none()
            && inner.store.meta_with_prefix(keys::META_FEED_PREFIX)?.len() >= FEEDS_MAX
        {
            return Err(Error::InvalidOperation("too many named feeds (FEEDS_MAX)"));
        }
        let mut position = stored.unwrap_or_default();
        position.merge(token);
        inner
            .store
            .put_meta_sync(&keys::feed_key(name.as_bytes()), &position.to_bytes())?;
        Ok(())
    }

    /// Forgets feed `name`: it no longer holds the log back.
    pub fn drop_feed(&self, name: &str) -> Result<()> {
        check_feed_name(name)?;
        let mut wb = self.inner.store.batch();
        wb.delete_meta(&keys::feed_key(name.as_bytes()));
        self.commit(wb)
    }

    /// The position feed `name` was last acknowledged at, if the name is known here.
    pub fn feed_position(&self, name: &str) -> Result<Option<CausalToken>> {
        check_feed_name(name)?;
        let Some(bytes) = self
            .inner
            .store
            .get_meta(&keys::feed_key(name.as_bytes()))?
        else {
            return Ok(None);
        };
        CausalToken::from_bytes(&bytes)
            .map(Some)
            .map_err(|e| Error::Corrupt {
                what: "feed position",
                key: name.as_bytes().to_vec(),
                detail: e.to_string(),
            })
    }

    /// Per origin, how far the log may be truncated given `stable`: to `stable`, but held at
    /// the least acknowledged position of the named feeds, at most
    /// `Config::feed_retention_entries` behind `stable`.
    pub(super) fn feed_held(&self, stable: &VersionVector) -> Result<VersionVector> {
        let feeds = self.inner.store.meta_with_prefix(keys::META_FEED_PREFIX)?;
        if feeds.is_empty() {
            return Ok(stable.clone());
        }
        let positions: Vec<VersionVector> = feeds
            .iter()
            .filter_map(|(_, bytes)| CausalToken::from_bytes(bytes).ok().map(|t| t.0))
            .collect();
        let bound = self.inner.config.feed_retention_entries;
        let mut held = VersionVector::new();
        for (origin, upto) in stable.iter() {
            let least = positions
                .iter()
                .map(|p| p.get(origin))
                .min()
                .unwrap_or(upto);
            let to = upto.min(least.max(upto.saturating_sub(bound)));
            held.add(Dot::new(origin, to));
        }
        Ok(held)
    }
}

fn check_feed_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > FEED_NAME_BYTES_MAX {
        return Err(Error::InvalidOperation(
            "a feed name is 1 to 256 bytes (FEED_NAME_BYTES_MAX)",
        ));
    }
    Ok(())
}

impl Feed {
    /// The next event, waiting up to `timeout` for one; `None` when none came in time.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<FeedEvent>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(Some(event));
            }
            let generation = *lock(&self.woken.generation);
            self.refill_some()?;
            if !self.ready.is_empty() {
                continue;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Ok(None);
            };
            let guard = lock(&self.woken.generation);
            if *guard == generation {
                // A wake-up after the refill bumped the generation: no wait then.
                let _ = self.woken.changed.wait_timeout(guard, left);
            }
        }
    }

    /// The next event, awaited without a thread: the feed's waker is woken when the applied
    /// vector advances (a local commit, a peer's entries), on the thread that advanced it. A
    /// refill reads the log on the polling thread (at most `FEED_BATCH_ENTRIES` entries).
    pub async fn next_event(&mut self) -> Result<FeedEvent> {
        std::future::poll_fn(|cx| {
            if let Some(event) = self.ready.pop_front() {
                return std::task::Poll::Ready(Ok(event));
            }
            // Registered before the refill: an advance after it wakes this task.
            *lock(&self.woken.waker) = Some(cx.waker().clone());
            if let Err(e) = self.refill_some() {
                return std::task::Poll::Ready(Err(e));
            }
            match self.ready.pop_front() {
                Some(event) => std::task::Poll::Ready(Ok(event)),
                None => std::task::Poll::Pending,
            }
        })
        .await
    }

    /// The events ready now, without waiting (up to one refill's worth: empty once the feed
    /// has caught up with what this replica applied).
    pub fn poll(&mut self) -> Result<Vec<FeedEvent>> {
        if self.ready.is_empty() {
            self.refill_some()?;
        }
        Ok(self.ready.drain(..).collect())
    }

    /// Refills until some event is ready or the feed has caught up with the applied vector
    /// (entries outside the prefix are read past, `FEED_BATCH_ENTRIES` at a time, without
    /// waiting for the next write).
    fn refill_some(&mut self) -> Result<()> {
        while self.ready.is_empty() {
            if !self.refill()? {
                break;
            }
        }
        Ok(())
    }

    /// The position after every event handed out or ready: what to resume from when the
    /// consumer handled them all (changes outside the prefix move it too).
    pub fn position(&self) -> CausalToken {
        CausalToken(self.position.clone())
    }

    /// The prefix followed.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// Acknowledges `token` for a named feed (`Engine::ack_feed`); an unnamed feed holds no
    /// floor and this does nothing.
    pub fn ack(&self, token: &CausalToken) -> Result<()> {
        match &self.name {
            Some(name) => self.engine.ack_feed(name, token),
            None => Ok(()),
        }
    }

    /// Reads up to `FEED_BATCH_ENTRIES` log entries past the position and queues the changes
    /// they name under the prefix, or a reset where the log has a gap; returns whether it
    /// stopped at that bound (more entries may follow).
    fn refill(&mut self) -> Result<bool> {
        let engine = &self.engine;
        let applied = engine.applied();
        let mut budget = FEED_BATCH_ENTRIES;
        // The entries read, in order, and for each key the last of them naming it.
        let mut steps: Vec<Dot> = Vec::new();
        let mut last: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
        for (origin, upto) in applied.iter() {
            let from = self.position.get(origin);
            if upto <= from || budget == 0 {
                continue;
            }
            let end = upto.min(from + budget as u64);
            let mut expected = from + 1;
            for item in engine.inner.store.log_entries_of(origin, expected) {
                let (k, bytes) = item?;
                let Some((_, seq)) = keys::parse_log_key(&k) else {
                    break;
                };
                if seq > end {
                    break;
                }
                if seq != expected {
                    break; // a gap: found below
                }
                let entry = match LogEntry::decode(&bytes) {
                    Ok(entry) => entry,
                    Err(e) => {
                        engine.note_fault(faults::Stored::LogEntry, &k, &e);
                        break; // unusable: a gap from here
                    }
                };
                for key in entry.keys.into_iter().chain(entry.left_out) {
                    if key.starts_with(&self.prefix) {
                        last.insert(key, steps.len());
                    }
                }
                steps.push(Dot::new(origin, seq));
                expected += 1;
            }
            if expected <= end {
                // The log lacks what the position needs: truncated past it, skipped by a
                // state transfer, or damaged.
                metrics::counter!("meridian_feed_resets_total").increment(1);
                tracing::info!(%origin, missing = expected, "change feed reset: the log no longer holds what its position needs");
                self.ready.clear();
                self.position.join(&applied);
                self.ready.push_back(FeedEvent::Reset {
                    token: CausalToken(self.position.clone()),
                    missing: Dot::new(origin, expected),
                });
                return Ok(false);
            }
            budget -= (end - from) as usize;
        }
        let more = budget == 0;
        if steps.is_empty() {
            return Ok(more);
        }
        let mut at: Vec<(usize, Vec<u8>)> = last.into_iter().map(|(k, i)| (i, k)).collect();
        at.sort_unstable();
        let mut at = at.into_iter().peekable();
        let mut position = self.position.clone();
        for (i, dot) in steps.iter().enumerate() {
            position.add(*dot);
            while let Some((_, key)) = at.next_if(|(j, _)| *j == i) {
                let values = engine.read(&key)?.map(|r| r.values).unwrap_or_default();
                self.ready.push_back(FeedEvent::Change(Change {
                    key,
                    values,
                    token: CausalToken(position.clone()),
                }));
            }
        }
        self.position = position;
        let behind: u64 = applied
            .iter()
            .map(|(origin, upto)| upto.saturating_sub(self.position.get(origin)))
            .sum();
        metrics::histogram!("meridian_feed_lag_entries").record(behind as f64);
        Ok(more)
    }
}

impl Iterator for Feed {
    type Item = Result<FeedEvent>;

    /// The next event, waiting as long as it takes.
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.next_timeout(Duration::from_secs(3600)) {
                Ok(Some(event)) => return Some(Ok(event)),
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        metrics::gauge!("meridian_feed_subscribers").decrement(1.0);
    }
}
