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
/// Bytes of states one refill hands out at most (it stops after the entry that passes it;
/// a single entry's states may exceed it).
pub const FEED_BATCH_BYTES: usize = 4 << 20;
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
    /// Whether the last refill reached the applied vector.
    caught_up: bool,
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
            // Taken out first: an executor may poll inside `wake`, which locks it again.
            let waker = lock(&wake.waker).take();
            if let Some(waker) = waker {
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
            caught_up: false,
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
        if position.0.len() > CONTEXT_WIDTH_MAX {
            return Err(Error::InvalidOperation("feed position too wide"));
        }
        inner
            .store
            .put_meta_sync(&keys::feed_key(name.as_bytes()), &position.to_bytes())?;
        Ok(())
    }

    /// Forgets feed `name`: it no longer holds the log back.
    pub fn drop_feed(&self, name: &str) -> Result<()> {
        check_feed_name(name)?;
        // Serialised with acknowledgements: one in flight must not bring the feed back.
        let _serial = lock(&self.inner.feed_positions);
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

/// About what `values` take in an event.
fn values_bytes(values: &[ReadValue]) -> usize {
    postcard::experimental::serialized_size(values).unwrap_or(usize::MAX / 4)
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
        let start = Instant::now();
        let left = || timeout.checked_sub(start.elapsed());
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(Some(event));
            }
            let generation = *lock(&self.woken.generation);
            // Entries outside the prefix are read past without waiting for a write, within
            // the wait asked for.
            while self.ready.is_empty() && self.refill()? && left().is_some() {}
            if !self.ready.is_empty() {
                continue;
            }
            let Some(left) = left() else {
                return Ok(None);
            };
            if !self.caught_up {
                continue;
            }
            let guard = lock(&self.woken.generation);
            if *guard == generation {
                // A wake-up after the refill bumped the generation: no wait then.
                let _ = self.woken.changed.wait_timeout(guard, left);
            }
        }
    }

    /// The next event, awaited without a thread: the feed's waker is woken when the applied
    /// vector advances (a local commit, a peer's entries), on the thread that advanced it.
    /// Each poll does one refill on the polling thread (at most `FEED_BATCH_ENTRIES` entries
    /// and `FEED_BATCH_BYTES` of states), yielding between refills of a backlog.
    pub async fn next_event(&mut self) -> Result<FeedEvent> {
        std::future::poll_fn(|cx| {
            if let Some(event) = self.ready.pop_front() {
                return std::task::Poll::Ready(Ok(event));
            }
            // Registered before the refill: an advance after it wakes this task.
            *lock(&self.woken.waker) = Some(cx.waker().clone());
            if let Err(e) = self.refill() {
                return std::task::Poll::Ready(Err(e));
            }
            match self.ready.pop_front() {
                Some(event) => std::task::Poll::Ready(Ok(event)),
                None => {
                    if !self.caught_up {
                        cx.waker().wake_by_ref(); // more to read: come back at once
                    }
                    std::task::Poll::Pending
                }
            }
        })
        .await
    }

    /// The events of one refill (at most `FEED_BATCH_ENTRIES` log entries and about
    /// `FEED_BATCH_BYTES` of states), without waiting; empty when the entries read named
    /// nothing under the prefix, or when the feed has caught up (`caught_up` tells which).
    pub fn poll(&mut self) -> Result<Vec<FeedEvent>> {
        if self.ready.is_empty() {
            self.refill()?;
        }
        Ok(self.ready.drain(..).collect())
    }

    /// Whether the last refill reached what this replica has applied (nothing more to read
    /// until it applies more).
    pub fn caught_up(&self) -> bool {
        self.caught_up
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

    /// Queues a reset at `missing` and moves the position to the applied vector.
    fn reset(&mut self, applied: &VersionVector, missing: Dot, why: &'static str) {
        metrics::counter!("meridian_feed_resets_total").increment(1);
        tracing::info!(origin = %missing.replica, missing = missing.counter, why, "change feed reset");
        self.position.join(applied);
        self.ready.push_back(FeedEvent::Reset {
            token: CausalToken(self.position.clone()),
            missing,
        });
        self.caught_up = true;
    }

    /// Reads up to `FEED_BATCH_ENTRIES` log entries past the position and queues the changes
    /// they name under the prefix (stopping after the entry whose states pass
    /// `FEED_BATCH_BYTES`), or a reset where the log cannot be followed; returns whether more
    /// entries may follow (`!caught_up`). Nothing is handed out while this replica has not
    /// applied the position (a token from a region ahead of it): a key's state here could be
    /// older than one the consumer was handed.
    fn refill(&mut self) -> Result<bool> {
        let engine = &self.engine;
        let applied = engine.applied();
        if !applied.dominates(&self.position) {
            self.caught_up = true;
            return Ok(false);
        }
        let mut budget = FEED_BATCH_ENTRIES;
        // The entries read, in order, with the keys under the prefix each names.
        let mut steps: Vec<(Dot, Vec<Vec<u8>>)> = Vec::new();
        // For each key, the last entry naming it.
        let mut last: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
        for (origin, upto) in applied.iter() {
            let from = self.position.get(origin);
            if upto <= from || budget == 0 {
                continue;
            }
            let end = upto.min(from + budget as u64);
            let mut expected = from + 1;
            let mut unfollowed = None;
            for item in engine.inner.store.log_entries_of(origin, expected) {
                let (k, bytes) = item?;
                let Some((_, seq)) = keys::parse_log_key(&k) else {
                    break;
                };
                if seq > end || seq != expected {
                    break; // past the batch, or a gap (found below)
                }
                let entry = match LogEntry::decode(&bytes) {
                    Ok(entry) => entry,
                    Err(e) => {
                        engine.note_fault(faults::Stored::LogEntry, &k, &e);
                        break; // unusable: a gap from here
                    }
                };
                if !entry.is_whole() {
                    // Applied without all of it (declared lost): what it changed may arrive
                    // later as a state no entry names.
                    unfollowed = Some("an entry applied without all of its write");
                    break;
                }
                let named: Vec<Vec<u8>> = entry
                    .keys
                    .into_iter()
                    .filter(|key| key.starts_with(&self.prefix))
                    .collect();
                for key in &named {
                    last.insert(key.clone(), steps.len());
                }
                steps.push((Dot::new(origin, seq), named));
                expected += 1;
            }
            if expected <= end {
                // The log lacks what the position needs: truncated past it, skipped by a
                // state transfer, damaged, or partial.
                let why = unfollowed.unwrap_or("the log no longer holds what the position needs");
                self.reset(&applied, Dot::new(origin, expected), why);
                return Ok(false);
            }
            budget -= (end - from) as usize;
        }
        // Events in entry order, each key after the last entry naming it; a change's token is
        // the position after its entry only for the entry's last change (before the entry for
        // the others: resuming from one of them hands out the entry's other keys again).
        let mut position = self.position.clone();
        let mut bytes = 0usize;
        let mut stopped = false;
        for (i, (dot, named)) in steps.iter().enumerate() {
            let before = CausalToken(position.clone());
            position.add(*dot);
            let keys: Vec<&Vec<u8>> = named.iter().filter(|k| last.get(*k) == Some(&i)).collect();
            let n = keys.len();
            for (j, key) in keys.into_iter().enumerate() {
                let values = engine.read(key)?.map(|r| r.values).unwrap_or_default();
                bytes += key.len() + values_bytes(&values) + position.len() * 16;
                let token = if j + 1 == n {
                    CausalToken(position.clone())
                } else {
                    before.clone()
                };
                self.ready.push_back(FeedEvent::Change(Change {
                    key: key.clone(),
                    values,
                    token,
                }));
            }
            if bytes > FEED_BATCH_BYTES {
                stopped = true;
                break;
            }
        }
        self.position = position;
        let behind: u64 = applied
            .iter()
            .map(|(origin, upto)| upto.saturating_sub(self.position.get(origin)))
            .sum();
        metrics::histogram!("meridian_feed_lag_entries").record(behind as f64);
        self.caught_up = behind == 0;
        Ok(!self.caught_up || stopped)
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
