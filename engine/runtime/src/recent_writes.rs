//! Writes this node applied recently, by client identity and request id: a retried write (the
//! client did not learn the first outcome) gets the first write's token instead of being
//! applied twice here. Bounded: the least recently used ids go first.

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

/// Where a write with a given id stands here.
#[derive(Clone, Debug)]
enum Slot {
    /// Being applied by an earlier request.
    InFlight,
    /// Applied, under this token.
    Done(CausalToken),
}

/// What a write request should do.
pub(crate) enum Claim<'a> {
    /// Apply it, then report through the guard.
    Apply(Pending<'a>),
    /// Applied already, under this token.
    Applied(CausalToken),
}

/// The recent writes of every client of this node.
pub(crate) struct RecentWrites {
    slots: Mutex<LruCache<(String, RequestId), Slot>>,
    settled: Notify,
}

impl RecentWrites {
    /// An empty record.
    pub fn new() -> RecentWrites {
        RecentWrites {
            slots: Mutex::new(LruCache::new(RECENT_WRITES_MAX)),
            settled: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<(String, RequestId), Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
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
                match slots.get(&key) {
                    None => {
                        slots.insert(key.clone(), Slot::InFlight);
                        return Some(Claim::Apply(Pending {
                            writes: self,
                            key: Some(key),
                        }));
                    }
                    Some(Slot::Done(token)) => return Some(Claim::Applied(token.clone())),
                    Some(Slot::InFlight) => {}
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
            self.writes.lock().insert(key, Slot::Done(token.clone()));
            self.writes.settled.notify_waiters();
        }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.writes.lock().remove(&key);
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
