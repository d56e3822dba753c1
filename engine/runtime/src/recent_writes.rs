//! Writes this node applied recently, by client identity and request id: a retried write (the
//! client did not learn the first outcome) gets the first write's token instead of being
//! applied twice here. Bounded: the least recently used of the last 65,536 applied ids go
//! first (ids are not kept across restarts); ids being applied are never evicted.

use crate::client_proto::RequestId;
use hashlink::LruCache;
use meridian::model::CausalToken;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;

/// Writes remembered (about 100 bytes each).
const RECENT_WRITES_MAX: usize = 65_536;

/// The id of a write that asks for no deduplication.
pub(crate) const NO_ID: RequestId = [0; 16];

/// What a write request should do.
pub(crate) enum Claim<'a> {
    /// Apply it, then report through the guard.
    Apply(Pending<'a>),
    /// Applied already, under this token.
    Applied(CausalToken),
}

/// The recent writes of every client of this node: those applied in a bounded LRU, those
/// being applied beside it (bounded by the requests a node serves at once, never evicted).
pub(crate) struct RecentWrites {
    slots: Mutex<Slots>,
    settled: Notify,
}

/// What the record holds.
struct Slots {
    done: LruCache<(String, RequestId), CausalToken>,
    in_flight: std::collections::HashSet<(String, RequestId)>,
}

impl RecentWrites {
    /// An empty record.
    pub fn new() -> RecentWrites {
        RecentWrites {
            slots: Mutex::new(Slots {
                done: LruCache::new(RECENT_WRITES_MAX),
                in_flight: Default::default(),
            }),
            settled: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The token of write `id` of client `who`, if this node applied it.
    pub fn applied(&self, who: &str, id: RequestId) -> Option<CausalToken> {
        if id == NO_ID {
            return None;
        }
        self.lock().done.get(&(who.to_string(), id)).cloned()
    }

    /// Claims write `id` of client `who`: to apply it, or its earlier token; an earlier
    /// request still applying it is waited for, up to `wait` (then `None`).
    pub async fn claim(&self, who: &str, id: RequestId, wait: Duration) -> Option<Claim<'_>> {
        let key = (who.to_string(), id);
        if id == NO_ID {
            return Some(Claim::Apply(Pending {
                writes: self,
                key: None,
            }));
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.settled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut slots = self.lock();
                if let Some(token) = slots.done.get(&key) {
                    return Some(Claim::Applied(token.clone()));
                }
                if slots.in_flight.insert(key.clone()) {
                    return Some(Claim::Apply(Pending {
                        writes: self,
                        key: Some(key),
                    }));
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }
}

/// A claimed write being applied; dropped without `applied`, the claim is released (the write
/// was not made, and a retry may make it).
pub(crate) struct Pending<'a> {
    writes: &'a RecentWrites,
    key: Option<(String, RequestId)>,
}

impl Pending<'_> {
    /// The write was made under `token`.
    pub fn applied(mut self, token: &CausalToken) {
        if let Some(key) = self.key.take() {
            let mut slots = self.writes.lock();
            slots.in_flight.remove(&key);
            slots.done.insert(key, token.clone());
            drop(slots);
            self.writes.settled.notify_waiters();
        }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.writes.lock().in_flight.remove(&key);
            self.writes.settled.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian::model::{Dot, ReplicaId};

    fn token() -> CausalToken {
        CausalToken::of_dot(Dot::new(ReplicaId(1), 7))
    }

    #[tokio::test]
    async fn a_retried_write_gets_the_first_token_and_a_failed_one_may_be_retried() {
        let writes = RecentWrites::new();
        let wait = Duration::from_millis(50);
        let Some(Claim::Apply(first)) = writes.claim("c", [1; 16], wait).await else {
            panic!("the first claim applies");
        };
        // While the first is applying, a retry waits, and gives up after `wait`.
        assert!(writes.claim("c", [1; 16], wait).await.is_none());
        // Another client's write with the same id is its own.
        assert!(matches!(
            writes.claim("d", [1; 16], wait).await,
            Some(Claim::Apply(_))
        ));
        first.applied(&token());
        assert!(matches!(
            writes.claim("c", [1; 16], wait).await,
            Some(Claim::Applied(t)) if t == token()
        ));
        assert_eq!(writes.applied("c", [1; 16]), Some(token()));
        assert_eq!(writes.applied("d", [9; 16]), None);
        // A write that failed is released.
        let Some(Claim::Apply(failed)) = writes.claim("c", [2; 16], wait).await else {
            panic!("applies");
        };
        drop(failed);
        assert!(matches!(
            writes.claim("c", [2; 16], wait).await,
            Some(Claim::Apply(_))
        ));
        // Without an id, nothing is remembered.
        for _ in 0..2 {
            assert!(matches!(
                writes.claim("c", NO_ID, wait).await,
                Some(Claim::Apply(_))
            ));
        }
    }
}
