//! Reclaiming expired values. A read hides what a passed expiry covers (`model::expiry`); the
//! sweep makes it permanent with a `Lapsed` write (an ordinary local write: dotted, logged and
//! replicated), after which the value is an ordinary tombstone that compaction collects once
//! stable. An expiry is reclaimed only once the clock of every member must have passed its
//! time (`clock_skew_ms_max` after it: the skew bound), so that no member can still write a
//! persist stamped before it; the member that set the expiry reclaims first, the others
//! three bounds later should it be down.

use super::*;
use crate::model::Expiry;

/// Marked keys looked at per compaction pass (the next pass goes on from there).
const SWEEP_CHUNK: usize = 1024;

impl Engine {
    /// Looks at the next chunk of keys marked as holding expiries and reclaims what expired
    /// long enough ago; returns how many keys it reclaimed.
    pub(super) fn reclaim_expired(&self) -> Result<u64> {
        let inner = &*self.inner;
        let after = lock(&inner.expiry_sweep_from).take();
        let page =
            inner
                .store
                .meta_page(keys::META_EXPIRING_PREFIX, after.as_deref(), SWEEP_CHUNK)?;
        if page.len() == SWEEP_CHUNK {
            *lock(&inner.expiry_sweep_from) = page.last().map(|(k, _)| k.to_vec());
        }
        let now = self.read_time().millis();
        let bound = inner.config.clock_skew_ms_max;
        let own = self.origin_id();
        let mut reclaimed = 0;
        for (marker, _) in &page {
            let key = &marker[keys::META_EXPIRING_PREFIX.len()..];
            let due = {
                let _guard = self.lock_keys(&[key]);
                let record = self.load(key).ok().flatten();
                let entries = record.as_ref().map(|r| &r.expiries.store);
                if entries.is_none_or(|e| e.is_empty()) {
                    // Nothing pending: unmarked (a state bringing expiries marks it again).
                    let mut wb = inner.store.batch();
                    wb.delete_meta(marker);
                    self.commit(wb)?;
                    continue;
                }
                let wait = |dot: &Dot| {
                    if dot.replica == own {
                        bound
                    } else {
                        bound.saturating_mul(3)
                    }
                };
                let passed = entries
                    .into_iter()
                    .flatten()
                    .filter(|(_, e)| e.at.millis() <= now);
                let mut any = false;
                let mut all = true;
                for (dot, e) in passed {
                    let due = e.at.millis().saturating_add(wait(dot)) <= now;
                    any |= due;
                    all &= due;
                }
                any && all
            };
            if !due {
                continue;
            }
            match self.apply(
                key,
                Op::Expire {
                    expiry: Expiry::Lapsed,
                },
            ) {
                Ok(_) => reclaimed += 1,
                Err(e) => tracing::debug!(error = %e, "an expired key was not reclaimed"),
            }
        }
        if reclaimed > 0 {
            metrics::counter!("meridian_expired_reclaimed_total").increment(reclaimed);
        }
        Ok(reclaimed)
    }
}
