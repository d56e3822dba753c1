//! The cluster's regions as this node knows them: each replica's name, region, address and
//! location (from the configuration), whether a link to it is up, its smoothed round trip and
//! what it has acknowledged applying (kept by the replication actor). The client service
//! answers `Regions` and `Route` from it, and waits on it for writes asked to be durable in
//! several regions.

use crate::RuntimeConfig;
use meridian_client::client_proto::{RegionEntry, RegionTable, RouteAnswer};
use meridian_core::model::{CausalToken, OriginId, VersionVector};
use meridian_core::routing::{order_regions, smoothed_rtt, Candidate, Health, Location};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use tokio::sync::Notify;

/// One peer: its entry in the table, its member id and what it acknowledged applying.
#[derive(Clone, Debug)]
pub(crate) struct PeerView {
    /// As clients see it.
    pub entry: RegionEntry,
    /// The latest round-trip sample folded into `entry.rtt_ms`.
    last_sample_ms: Option<u64>,
    /// Smoothed round trip, unrounded.
    srtt_ms: Option<f64>,
    /// Everything it reported applying.
    pub acked: VersionVector,
    /// The origin it writes under, as it last announced.
    pub origin: Option<OriginId>,
}

impl PeerView {
    /// Folds a round-trip sample into the smoothed value (a sample seen already is skipped).
    pub fn sample_rtt(&mut self, sample_ms: Option<u64>) {
        let Some(sample) = sample_ms else { return };
        if self.last_sample_ms == Some(sample) {
            return;
        }
        self.last_sample_ms = Some(sample);
        let srtt = smoothed_rtt(self.srtt_ms, sample as f64);
        self.srtt_ms = Some(srtt);
        self.entry.rtt_ms = Some(srtt.round() as u64);
    }
}

/// The regions, shared by the replication actor (which updates them) and the client service.
pub(crate) struct RegionBoard {
    cluster: String,
    me: RegionEntry,
    peers: Mutex<Vec<PeerView>>,
    /// Woken when acknowledgements or links change, while some write waits.
    changed: Notify,
    waiting: AtomicUsize,
}

impl RegionBoard {
    /// The board of a runtime bound at `bound`, before any link is up.
    pub fn new(config: &RuntimeConfig, bound: SocketAddr) -> RegionBoard {
        let me = RegionEntry {
            name: config.name.clone(),
            region: config.region.clone(),
            address: config.advertise.unwrap_or(bound),
            location: config.location,
            rtt_ms: None,
            reachable: true,
        };
        let peers = config
            .peers
            .iter()
            .map(|p| PeerView {
                entry: RegionEntry {
                    name: p.name.clone(),
                    region: p.region.clone(),
                    address: p.address,
                    location: p.location,
                    rtt_ms: None,
                    reachable: false,
                },
                last_sample_ms: None,
                srtt_ms: None,
                acked: VersionVector::new(),
                origin: None,
            })
            .collect();
        RegionBoard {
            cluster: config.cluster.clone(),
            me,
            peers: Mutex::new(peers),
            changed: Notify::new(),
            waiting: AtomicUsize::new(0),
        }
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, Vec<PeerView>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a write waits for acknowledgements (the actor then reports every one).
    pub fn has_waiters(&self) -> bool {
        self.waiting.load(Ordering::SeqCst) > 0
    }

    /// Changes the peers' views (the actor), waking the writes that wait.
    pub fn update(&self, change: impl FnOnce(&mut [PeerView])) {
        change(&mut self.peers());
        if self.has_waiters() {
            self.changed.notify_waiters();
        }
    }

    /// Every replica, this one first.
    pub fn table(&self) -> RegionTable {
        let mut regions = vec![self.me.clone()];
        regions.extend(self.peers().iter().map(|p| p.entry.clone()));
        RegionTable {
            cluster: self.cluster.clone(),
            answered_by: self.me.name.clone(),
            regions,
        }
    }

    /// Where a client at `near` should go: nearest first by distance (this node's round
    /// trips to its peers say nothing of the client's), regions this node has no link to last.
    pub fn route(&self, near: Option<&Location>) -> RouteAnswer {
        route(&self.table().regions, near)
    }

    /// Regions of the cluster (distinct region names).
    pub fn region_count(&self) -> usize {
        let peers = self.peers();
        let names: BTreeSet<&str> = std::iter::once(self.me.region.as_str())
            .chain(peers.iter().map(|p| p.entry.region.as_str()))
            .collect();
        names.len()
    }

    /// Regions this node has a link to, its own included.
    pub fn reachable_regions(&self) -> usize {
        let peers = self.peers();
        let names: BTreeSet<&str> = std::iter::once(self.me.region.as_str())
            .chain(
                peers
                    .iter()
                    .filter(|p| p.entry.reachable)
                    .map(|p| p.entry.region.as_str()),
            )
            .collect();
        names.len()
    }

    /// Regions known to hold every write of `token`: this one, and those of peers whose
    /// acknowledgements cover it.
    pub fn durable_regions(&self, token: &CausalToken) -> usize {
        let peers = self.peers();
        let names: BTreeSet<&str> = std::iter::once(self.me.region.as_str())
            .chain(
                peers
                    .iter()
                    .filter(|p| token.is_covered_by(&p.acked))
                    .map(|p| p.entry.region.as_str()),
            )
            .collect();
        names.len()
    }

    /// The first of `token`'s origins whose writes no member can ever supply: an origin
    /// no member writes under any more (this one's is `own`), of which neither this replica
    /// (`applied`) nor any peer has applied as much as the token names. Only when every peer
    /// is reachable and has announced its origin (one that is not may hold them). Returns the
    /// origin, the most any member holds, and what the token names.
    pub fn uncoverable(
        &self,
        token: &CausalToken,
        applied: &VersionVector,
        own: OriginId,
    ) -> Option<(OriginId, u64, u64)> {
        let peers = self.peers();
        if peers
            .iter()
            .any(|p| !p.entry.reachable || p.origin.is_none())
        {
            return None;
        }
        token.0.iter().find_map(|(origin, wanted)| {
            let written_under = origin == own || peers.iter().any(|p| p.origin == Some(origin));
            let held = peers
                .iter()
                .map(|p| p.acked.get(origin))
                .fold(applied.get(origin), u64::max);
            (!written_under && held < wanted).then_some((origin, held, wanted))
        })
    }

    /// Whether what `token` names beyond `applied` may still arrive here soon. It may not only
    /// when some origin it lacks is written under by a peer that is unreachable from here, and
    /// no reachable peer has acknowledged applying that much of it: the writes are in a region
    /// that is down or cut off, and a wait for them is in vain. Anything less known (an origin
    /// no peer is known to write under: a peer's new epoch not announced yet, a restart's links
    /// still coming up) may arrive.
    pub fn may_supply(&self, token: &CausalToken, applied: &VersionVector) -> bool {
        let peers = self.peers();
        token.0.iter().all(|(origin, wanted)| {
            let stranded = applied.get(origin) < wanted
                && peers
                    .iter()
                    .any(|p| p.origin == Some(origin) && !p.entry.reachable)
                && !peers
                    .iter()
                    .any(|p| p.entry.reachable && p.acked.get(origin) >= wanted);
            !stranded
        })
    }

    /// Waits, without a thread, until `needed` regions hold `token` or `deadline` passes;
    /// returns how many do.
    pub async fn wait_durable(
        &self,
        token: &CausalToken,
        needed: usize,
        deadline: tokio::time::Instant,
    ) -> usize {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _counted = Uncount(&self.waiting);
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before the check: a change after it wakes this wait.
            notified.as_mut().enable();
            let durable = self.durable_regions(token);
            if durable >= needed {
                return durable;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.durable_regions(token);
            }
        }
    }
}

/// The route for a client at `near` over a region table: nearest first by distance, regions
/// not reachable from the answering node last.
pub fn route(regions: &[RegionEntry], near: Option<&Location>) -> RouteAnswer {
    let candidates: Vec<Candidate> = regions
        .iter()
        .map(|r| Candidate {
            region: r.region.clone(),
            location: r.location,
            rtt_ms: None,
            health: if r.reachable {
                Health::Healthy
            } else {
                Health::Down
            },
        })
        .collect();
    let order = order_regions(&candidates, near);
    RouteAnswer {
        region: order.first().map(|r| r.region.clone()).unwrap_or_default(),
        order,
    }
}

/// Uncounts a waiting write when it ends.
struct Uncount<'a>(&'a AtomicUsize);

impl Drop for Uncount<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoothed_round_trips_move_an_eighth_towards_each_new_sample() {
        let mut view = PeerView {
            entry: RegionEntry {
                name: "b".into(),
                region: "eu-west".into(),
                address: "127.0.0.1:1".parse().expect("address"),
                location: None,
                rtt_ms: None,
                reachable: true,
            },
            last_sample_ms: None,
            srtt_ms: None,
            acked: VersionVector::new(),
            origin: None,
        };
        view.sample_rtt(Some(80));
        assert_eq!(view.entry.rtt_ms, Some(80));
        view.sample_rtt(Some(80));
        view.sample_rtt(Some(160));
        assert_eq!(view.entry.rtt_ms, Some(90));
        view.sample_rtt(None);
        assert_eq!(view.entry.rtt_ms, Some(90));
    }
}
