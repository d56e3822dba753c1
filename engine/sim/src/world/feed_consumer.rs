//! A change-feed consumer beside the workload: it follows every key from the start, reading
//! from one region at a time (the next that is up when its region crashes or freezes: its
//! position is a token, good in any region), and keeps each key's latest values, as an
//! application's cache or index would; a reset rebuilds the view from a scan of the region.
//! After convergence its view must equal the regions' state: a change the feed skipped without
//! a reset (across crashes, torn logs, wiped disks, state transfers, declared losses) shows as
//! a key that differs. It only reads: the run's trace is the same with or without it.

use super::World;
use meridian::{CausalToken, FeedEvent, ReadValue};
use std::collections::BTreeMap;

/// Refills one tick of the consumer reads at most.
const REFILLS_PER_TICK: usize = 8;

/// The consumer's state.
#[derive(Default)]
pub(super) struct FeedConsumer {
    /// The region it reads from.
    region: usize,
    position: CausalToken,
    /// Each key's values as last handed out (empty: deleted).
    view: BTreeMap<Vec<u8>, Vec<ReadValue>>,
    pub(super) changes: u64,
    pub(super) resets: u64,
}

impl World {
    /// One tick of the consumer: reads what its region has (moving to the next region that
    /// is up when its own is not).
    pub(super) fn feed_step(&mut self) {
        if let Err(e) = self.feed_read(REFILLS_PER_TICK) {
            self.violations.push(format!("change feed: {e}"));
        }
    }

    /// Reads up to `refills` refills from the consumer's region; `Ok(true)` when it caught up.
    fn feed_read(&mut self, refills: usize) -> Result<bool, String> {
        let n = self.regions.len();
        let Some(region) = (0..n)
            .map(|k| (self.feed.region + k) % n)
            .find(|&i| self.regions[i].node.is_some() && self.frozen(i).is_none())
        else {
            return Ok(false);
        };
        self.feed.region = region;
        let Some(node) = &self.regions[region].node else {
            return Ok(false);
        };
        let engine = &node.engine;
        let mut feed = engine
            .feed(b"", Some(&self.feed.position))
            .map_err(|e| e.to_string())?;
        let c = &mut self.feed;
        for _ in 0..refills {
            // A storage failure of the region (a disk fault): try again later.
            let Ok(events) = feed.poll() else {
                return Ok(false);
            };
            for event in events {
                match event {
                    FeedEvent::Change(change) => {
                        c.changes += 1;
                        if std::env::var("MERIDIAN_SIM_KEY")
                            .is_ok_and(|k| k.as_bytes() == change.key)
                        {
                            eprintln!(
                                "feed t={} region {region} hands out {:?} token {:?}",
                                self.now_ms, change.values, change.token
                            );
                        }
                        c.view.insert(change.key, change.values);
                    }
                    FeedEvent::Reset { token, .. } => {
                        c.resets += 1;
                        let Ok(view) = scanned(engine) else {
                            return Ok(false);
                        };
                        c.view = view;
                        c.position = token;
                    }
                }
            }
            c.position = feed.position();
            if feed.caught_up() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// After convergence: the consumer catches up in the first region that is up and its view
    /// must equal that region's records. A position no region will ever cover (writes lost
    /// with a disk before they shipped, when the run lost some: `writes_lost`) is what an
    /// application meets as `Uncoverable`: it rebuilds from a scan, counted as a reset.
    pub(super) fn feed_check(&mut self, writes_lost: bool) -> Result<(), String> {
        let Some(region) = (0..self.regions.len()).find(|&i| self.regions[i].node.is_some()) else {
            return Ok(());
        };
        self.feed.region = region;
        let applied = self.regions[region]
            .node
            .as_ref()
            .map(|n| n.engine.applied())
            .unwrap_or_default();
        if !applied.dominates(&self.feed.position.0) {
            if !writes_lost {
                return Err(format!(
                    "change feed: the consumer's position {:?} is ahead of region {region}'s applied vector {applied} after convergence, with no write lost",
                    self.feed.position
                ));
            }
            let Some(n) = &self.regions[region].node else {
                return Ok(());
            };
            self.feed.view = scanned(&n.engine)?;
            self.feed.position = CausalToken(applied);
            self.feed.resets += 1;
        }
        let mut caught_up = false;
        for _ in 0..1_000 {
            if self.feed_read(64)? {
                caught_up = true;
                break;
            }
        }
        if !caught_up {
            return Err("change feed: the consumer never caught up".into());
        }
        let Some(n) = &self.regions[region].node else {
            return Ok(());
        };
        let rows = scanned(&n.engine)?;
        // Compared without registers' contexts: a context grows when a peer's state is
        // joined, without a write to the key (and so without a change to hand out).
        let plain = |v: &Vec<ReadValue>| -> Vec<ReadValue> {
            v.iter().map(ReadValue::without_contexts).collect()
        };
        // Expiring keys are left out: an expiry passing is no write, so the feed hands it
        // out only when it is reclaimed, a skew bound later.
        let expiring = |k: &[u8]| k.first() == Some(&b'e');
        let held: BTreeMap<Vec<u8>, Vec<ReadValue>> = rows
            .into_iter()
            .filter(|(k, v)| !v.is_empty() && !expiring(k))
            .map(|(k, v)| (k, plain(&v)))
            .collect();
        let seen: BTreeMap<Vec<u8>, Vec<ReadValue>> = self
            .feed
            .view
            .iter()
            .filter(|(k, v)| !v.is_empty() && !expiring(k))
            .map(|(k, v)| (k.clone(), plain(v)))
            .collect();
        let differ: Vec<String> = held
            .keys()
            .chain(seen.keys())
            .filter(|k| held.get(*k) != seen.get(*k))
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if differ.is_empty() {
            return Ok(());
        }
        if std::env::var("MERIDIAN_SIM_DEBUG").is_ok() {
            for k in &differ {
                let key = k.as_bytes().to_vec();
                eprintln!(
                    "feed: {k:?} seen {:?}\n      held {:?}\n      position {:?}",
                    self.feed.view.get(&key),
                    held.get(&key),
                    self.feed.position
                );
            }
        }
        Err(format!(
            "change feed: the consumer's view differs from region {region}'s records in {} keys (e.g. {:?}; {} changes, {} resets)",
            differ.len(),
            &differ[..differ.len().min(3)],
            self.feed.changes,
            self.feed.resets
        ))
    }
}

/// Every key a region holds with its values: the view a consumer rebuilds on a reset.
fn scanned(engine: &meridian::Engine) -> Result<BTreeMap<Vec<u8>, Vec<ReadValue>>, String> {
    let rows = engine
        .scan_prefix(b"", usize::MAX)
        .map_err(|e| e.to_string())?;
    Ok(rows.into_iter().map(|(k, r)| (k, r.values)).collect())
}
