//! Write requests being applied by this node, by client identity and request id: a retry that
//! arrives while its first copy is still being applied waits for it (then finds its answer in
//! the engine, `Engine::request_outcome`) instead of being applied beside it. What was applied
//! is kept by the engine, with the write, across restarts and regions (`requests.rs` there).

use meridian_client::client_proto::RequestId;
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;

/// The id of a write that asks for no deduplication.
pub(crate) const NO_ID: RequestId = [0; 16];

/// The requests being applied (bounded by the requests a node serves at once).
pub(crate) struct RequestsInFlight {
    applying: Mutex<HashSet<(String, RequestId)>>,
    settled: Notify,
}

impl RequestsInFlight {
    /// None in flight.
    pub fn new() -> RequestsInFlight {
        RequestsInFlight {
            applying: Mutex::new(HashSet::new()),
            settled: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<(String, RequestId)>> {
        self.applying.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims write `id` of client `who` for applying; an earlier request still applying it is
    /// waited for, up to `wait` (then `None`: it may yet apply).
    pub async fn claim(&self, who: &str, id: RequestId, wait: Duration) -> Option<Claimed<'_>> {
        if id == NO_ID {
            return Some(Claimed {
                requests: self,
                key: None,
            });
        }
        let key = (who.to_string(), id);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.settled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.lock().insert(key.clone()) {
                return Some(Claimed {
                    requests: self,
                    key: Some(key),
                });
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }
}

/// A claimed request; released when dropped (applied or not).
pub(crate) struct Claimed<'a> {
    requests: &'a RequestsInFlight,
    key: Option<(String, RequestId)>,
}

impl Drop for Claimed<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.requests.lock().remove(&key);
            self.requests.settled.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_in_flight_holds_its_retries_until_released() {
        let requests = RequestsInFlight::new();
        let wait = Duration::from_millis(50);
        let first = requests.claim("c", [1; 16], wait).await;
        assert!(first.is_some(), "the first claim applies");
        // While the first is applying, a retry waits, and gives up after `wait`.
        assert!(requests.claim("c", [1; 16], wait).await.is_none());
        // Another client's request with the same id is its own.
        assert!(requests.claim("d", [1; 16], wait).await.is_some());
        drop(first);
        assert!(requests.claim("c", [1; 16], wait).await.is_some());
        // Without an id, nothing is held.
        let a = requests.claim("c", NO_ID, wait).await;
        let b = requests.claim("c", NO_ID, wait).await;
        assert!(a.is_some() && b.is_some());
    }
}
