//! The expiry check, for every region's expiring keys:
//!
//! - a dot once removed from a region's record (by a write after expiry, a reclaim, or an
//!   overwrite) never comes back there;
//! - a dot once hidden as expired is not shown again at a later read time of the region while
//!   the expiries that hid it are still held. It may be shown again once they are replaced:
//!   an extension or a persist stamped before the expiry, made in a region whose clock was
//!   behind, wins wherever it arrives (`model::expiry`); a read time that went back (a clock
//!   stepped back over a restart) may show it too, as the promise is stated against the
//!   reader's clock.

use super::World;
use crate::workload::EXPIRING_KEYS;
use meridian::Dot;
use meridian_core::model::{codec, Hlc, Record};
use std::collections::{BTreeMap, BTreeSet};

/// What one region saw of one key.
#[derive(Default)]
pub(super) struct Seen {
    /// Each dot hidden as expired: the read time, and the expiries that hid it.
    hidden: BTreeMap<Dot, (Hlc, BTreeSet<Dot>)>,
    /// Dots once present, since removed.
    removed: BTreeSet<Dot>,
    /// Dots present at the last look.
    present: BTreeSet<Dot>,
}

/// Per (region, key).
pub(super) type Hidden = BTreeMap<(usize, Vec<u8>), Seen>;

/// Every dot present in a record's values.
fn dots(r: &Record) -> BTreeSet<Dot> {
    let mut out = BTreeSet::new();
    for v in r.values.values() {
        v.for_each_dot(&mut |d| {
            out.insert(d);
        });
    }
    out
}

impl World {
    /// Looks at every region's expiring keys now.
    pub(super) fn check_expired(&mut self) {
        let debug = std::env::var("MERIDIAN_SIM_DEBUG").is_ok();
        for i in 0..self.regions.len() {
            let Some(n) = &self.regions[i].node else {
                continue;
            };
            let now = n.engine.read_time();
            for k in 0..EXPIRING_KEYS {
                let key = format!("e{k}").into_bytes();
                let Some(record) = n
                    .engine
                    .export(&key)
                    .ok()
                    .flatten()
                    .and_then(|b| codec::decode_record(&b).ok())
                else {
                    continue;
                };
                let name = String::from_utf8_lossy(&key).into_owned();
                let present = dots(&record);
                let shown = dots(&record.visible_at(now));
                let held: BTreeSet<Dot> = record.expiries.store.keys().copied().collect();
                let seen = self.expired.entry((i, key)).or_default();
                for d in present.intersection(&seen.removed) {
                    self.violations.push(format!(
                        "expiry: region {i} holds {d} of {name:?} again after it was removed"
                    ));
                }
                for d in &shown {
                    let Some((at, by)) = seen.hidden.get(d) else {
                        continue;
                    };
                    if *at <= now && by.is_subset(&held) {
                        self.violations.push(format!(
                            "expiry: region {i} shows {d} of {name:?} at {now} again, after hiding it as expired at {at}, under the same expiries"
                        ));
                    }
                    if debug {
                        eprintln!("expiry: region {i} shows {d} at {now} again: {record:?}");
                    }
                    self.expired_counts.2 += 1;
                    seen.hidden.remove(d);
                }
                for d in present.difference(&shown) {
                    if !seen.hidden.contains_key(d) {
                        let by = record
                            .expiries
                            .store
                            .iter()
                            .filter(|(_, e)| e.at <= now && e.covers.contains(d))
                            .map(|(dot, _)| *dot)
                            .collect();
                        seen.hidden.insert(*d, (now, by));
                        self.expired_counts.0 += 1;
                    }
                }
                let context = record.context();
                for d in seen.present.difference(&present) {
                    if context.contains(d) && seen.removed.insert(*d) && seen.hidden.contains_key(d)
                    {
                        self.expired_counts.1 += 1;
                    }
                }
                seen.present = present;
            }
        }
    }
}
