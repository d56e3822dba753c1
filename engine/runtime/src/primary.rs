//! Active-passive mode in the runtime: the lease's settings as the core wants them, and what
//! the replication actor publishes of it for the client service, which takes a write only
//! while this node's lease runs (checked against the monotonic clock at the request).

use crate::ActivePassiveConfig;
use meridian::MemberId;
use meridian_core::lease::LeaseConfig;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A replica of the cluster: its member id and name.
#[derive(Clone, Debug)]
pub(crate) struct Member {
    pub id: MemberId,
    pub name: String,
}

/// The lease's settings for `members` (this replica first).
pub(crate) fn lease_config(settings: &ActivePassiveConfig, members: &[Member]) -> LeaseConfig {
    let mut by_name: Vec<&Member> = members.iter().collect();
    by_name.sort_by(|a, b| a.name.cmp(&b.name));
    let successors = if settings.successors.is_empty() {
        by_name.iter().map(|m| m.id).collect()
    } else {
        settings
            .successors
            .iter()
            .filter_map(|name| members.iter().find(|m| m.name == *name).map(|m| m.id))
            .collect()
    };
    let lease_ms = settings.lease_ms;
    LeaseConfig {
        members: members.iter().map(|m| m.id).collect(),
        lease_ms,
        drift_ppm: settings.drift_ppm,
        renew_every_ms: (lease_ms / 4).max(1),
        round_timeout_ms: (lease_ms / 4).max(1),
        failover_after_ms: (settings.failover_after_ms > 0).then_some(settings.failover_after_ms),
        successors,
        stagger_ms: (lease_ms / 2).max(1),
    }
}

/// What the service needs to know of the lease.
#[derive(Clone, Debug, Default)]
pub(crate) struct PrimaryState {
    /// Whether one primary takes the writes.
    pub active_passive: bool,
    /// While this node holds the lease: until when.
    pub holding_until: Option<Instant>,
    /// The primary as this node knows it.
    pub primary: Option<Member>,
}

/// A write is taken only while the lease runs at least this much longer: it is checked
/// when the request arrives and again just before the engine commits, and the commit itself
/// takes time.
const COMMIT_MARGIN: Duration = Duration::from_millis(100);

/// Shared between the actor (which writes) and the service (which reads).
pub(crate) struct PrimaryBoard(Mutex<PrimaryState>);

impl PrimaryBoard {
    /// A board in the mode the node starts in, holding nothing yet (a request that arrives
    /// before the actor's first word is refused in active-passive mode).
    pub fn new(active_passive: bool) -> PrimaryBoard {
        PrimaryBoard(Mutex::new(PrimaryState {
            active_passive,
            ..PrimaryState::default()
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PrimaryState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The latest state.
    pub fn get(&self) -> PrimaryState {
        self.lock().clone()
    }

    /// Replaces the state.
    pub fn set(&self, state: PrimaryState) {
        *self.lock() = state;
    }

    /// Whether a write may be taken now (the lease runs at least `COMMIT_MARGIN` longer);
    /// if not, the primary's replica name, when known.
    pub fn may_write(&self) -> Result<(), Option<String>> {
        let state = self.get();
        let runs = |until: Instant| Instant::now() + COMMIT_MARGIN < until;
        if !state.active_passive || state.holding_until.is_some_and(runs) {
            Ok(())
        } else {
            Err(state.primary.map(|m| m.name))
        }
    }
}
