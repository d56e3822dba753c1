//! Wake-up subscriptions: functions called after every local commit or whenever the applied
//! vector advances. Any number may subscribe (several runtimes on one engine, an application
//! waiting for tokens); each lasts as long as its `Subscription`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

/// A function a subscription calls: short, and on the thread that committed or applied.
type Wake = Arc<dyn Fn() + Send + Sync>;

/// The functions subscribed to one event.
#[derive(Default)]
pub(crate) struct Subscribers {
    next_id: AtomicU64,
    /// How many are subscribed: the event's path reads no lock when none is.
    count: AtomicUsize,
    list: RwLock<Vec<(u64, Wake)>>,
}

impl Subscribers {
    /// Adds `wake`; it is called until the returned subscription is dropped.
    pub(crate) fn subscribe(self: &Arc<Self>, wake: Wake) -> Subscription {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut list = self.list.write().unwrap_or_else(|p| p.into_inner());
        list.push((id, wake));
        self.count.store(list.len(), Ordering::SeqCst);
        Subscription {
            subscribers: Arc::clone(self),
            id,
        }
    }

    /// Calls every subscribed function.
    pub(crate) fn notify(&self) {
        if self.count.load(Ordering::SeqCst) == 0 {
            return;
        }
        let list = self.list.read().unwrap_or_else(|p| p.into_inner());
        for (_, wake) in list.iter() {
            wake();
        }
    }

    fn unsubscribe(&self, id: u64) {
        let mut list = self.list.write().unwrap_or_else(|p| p.into_inner());
        list.retain(|(i, _)| *i != id);
        self.count.store(list.len(), Ordering::SeqCst);
    }
}

/// A function subscribed to an engine's commits or applied vector (`Engine::on_commit`,
/// `Engine::on_applied`): called until this is dropped.
#[must_use = "the function is unsubscribed when the subscription is dropped"]
pub struct Subscription {
    subscribers: Arc<Subscribers>,
    id: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.subscribers.unsubscribe(self.id);
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subscriber_is_called_until_it_drops_its_subscription() {
        let subscribers = Arc::new(Subscribers::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let wake = |calls: &Arc<AtomicUsize>| -> Wake {
            let calls = Arc::clone(calls);
            Arc::new(move || {
                calls.fetch_add(1, Ordering::SeqCst);
            })
        };
        let first = subscribers.subscribe(wake(&calls));
        let second = subscribers.subscribe(wake(&calls));
        subscribers.notify();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        drop(first);
        subscribers.notify();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        drop(second);
        subscribers.notify();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }
}
