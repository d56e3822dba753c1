//! Visibility: the applied vector, and waits for a causal token to be covered.

use super::*;

impl Engine {
    /// Per origin, the highest sequence number applied with all earlier ones (this replica's
    /// own entry: its committed writes). A causal token covered by it is visible here.
    pub fn applied(&self) -> VersionVector {
        let mut vv = lock(&self.inner.applied).clone();
        let own = lock(&self.inner.own);
        vv.add(Dot::new(own.origin, own.contiguous));
        vv
    }

    /// Whether every write named by `token` is visible in this replica.
    pub fn covers(&self, token: &CausalToken) -> bool {
        token.is_covered_by(&self.applied())
    }

    /// Waits until every write named by `token` is visible here (local commits and
    /// replication wake the wait), or `timeout` passes; returns whether it is visible.
    pub fn wait_covers(&self, token: &CausalToken, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut generation = lock(&self.inner.applied_generation);
        // Counted before the first check: an advance that misses the count happens before
        // that check, which then sees it.
        self.inner.applied_waiters.fetch_add(1, Ordering::SeqCst);
        let _counted = WaiterCount(&self.inner.applied_waiters);
        loop {
            // Checked with the generation lock held: an advance after this check bumps the
            // generation under the same lock, so its wake-up cannot be missed.
            if self.covers(token) {
                return true;
            }
            let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) else {
                return false;
            };
            generation = match self.inner.applied_changed.wait_timeout(generation, left) {
                Ok((g, _)) => g,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// Wakes `wait_covers` callers after the applied vector advanced.
    pub(crate) fn applied_advanced(&self) {
        self.inner.applied_subscribers.notify();
        if self.inner.applied_waiters.load(Ordering::SeqCst) == 0 {
            return;
        }
        *lock(&self.inner.applied_generation) += 1;
        self.inner.applied_changed.notify_all();
    }
}

/// Uncounts a `wait_covers` caller when it returns.
struct WaiterCount<'a>(&'a AtomicUsize);

impl Drop for WaiterCount<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
