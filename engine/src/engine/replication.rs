//! The replication handle (`Engine::replication`): what a replication driver (the QUIC
//! runtime, the simulator, a program shipping records by hand) needs beyond the application's
//! API: the storage seam `ReplicaStore`, epochs, fencing, records exported and joined by hand.
//! An application that only reads and writes never needs it.

use super::*;
use std::ops::Deref;

/// A replication driver's handle on an engine: implements the replication core's storage seam
/// (`meridian_core::replication::ReplicaStore`) and reads through to the engine. Cheap to
/// clone; it shares the engine's database.
#[derive(Clone)]
pub struct Replication {
    pub(super) engine: Engine,
}

impl Engine {
    /// The handle replication drivers work through (see `Replication`).
    pub fn replication(&self) -> Replication {
        Replication {
            engine: self.clone(),
        }
    }
}

impl Deref for Replication {
    type Target = Engine;

    fn deref(&self) -> &Engine {
        &self.engine
    }
}

impl std::fmt::Debug for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replication")
            .field("member", &self.engine.member_id())
            .finish_non_exhaustive()
    }
}

impl Replication {
    /// The engine this handle drives.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The engine this handle drives, the handle given up.
    pub fn into_engine(self) -> Engine {
        self.engine
    }

    /// Marks the directory as replicated (peers may hold its writes from now on) and fills the
    /// replication caches. Drivers call it before the first link comes up.
    pub fn attach(&self) -> Result<()> {
        self.engine.attach_replication()
    }

    /// Starts keeping recent entries' keys and records' current states in memory (up to
    /// `Config::entry_cache_bytes`), so that fresh writes ship without being read back
    /// (`attach` does it). Writes committed before the call are read from disk when shipped.
    pub fn enable_cache(&self) {
        self.engine.enable_replication_cache();
    }

    /// Moves writes to a new random epoch, because `reason` (the directory may lack writes of
    /// the current origin that peers or clients hold); returns the new origin. Waits for
    /// writes in progress.
    pub fn start_new_epoch(&self, reason: &str) -> Result<OriginId> {
        self.engine.start_new_epoch(reason)
    }

    /// The highest sequence number this replica has assigned.
    pub fn last_seq(&self) -> u64 {
        self.engine.last_seq()
    }

    /// Fences this process: from now on it refuses local writes (`Error::Fenced`), for the
    /// rest of its life; drivers call it when the other members say a newer process of this
    /// replica's identity runs. Peers' entries are not affected.
    pub fn fence(&self, reason: &str) {
        self.engine.fence(reason);
    }

    /// The encoded state of `key` (tombstones included), to hand to another replica.
    pub fn export(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.engine.export(key)
    }

    /// Joins a record state from another replica (`export`'s bytes). Idempotent,
    /// commutative; returns whether the local state changed.
    pub fn apply_remote(&self, key: &[u8], state: &[u8]) -> Result<bool> {
        self.engine.apply_remote(key, state)
    }

    /// Calls `wake` after every local commit until the subscription is dropped (a runtime
    /// wakes its replicator with it). It runs on the writing thread: keep it short, and do not
    /// subscribe or drop a subscription from inside it (the list is held while they run).
    pub fn on_commit(&self, wake: impl Fn() + Send + Sync + 'static) -> Subscription {
        self.engine
            .inner
            .commit_subscribers
            .subscribe(Arc::new(wake))
    }
}
