//! Engine configuration.

use std::fmt;
use std::sync::Arc;

/// Longest key accepted, in bytes.
pub const KEY_BYTES_MAX: usize = 64 * 1024;

/// How far an acknowledged write has gone before the call returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Written to the write-ahead log: survives a process crash, not a power loss.
    #[default]
    Wal,
    /// Written and fsynced (concurrent writers share one fsync): survives a power loss.
    Sync,
}

/// Source of wall-clock time in milliseconds since the Unix epoch (an input, so that a
/// simulator can skew or stop it).
pub trait WallClock: Send + Sync {
    /// Now, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The operating system's clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// Settings for `Engine::open`.
#[derive(Clone)]
pub struct Config {
    /// Durability of acknowledged writes.
    pub durability: Durability,
    /// Largest value, set element or field name, in bytes.
    pub value_bytes_max: usize,
    /// Largest encoded record, in bytes.
    pub record_bytes_max: usize,
    /// Remote HLC markers further ahead of local wall time than this are not followed.
    pub clock_skew_ms_max: u64,
    /// Wall-clock source.
    pub clock: Arc<dyn WallClock>,
    /// Identity to give a replica created by this open (simulations, tests); `None` draws a
    /// random one. Opening an existing replica with a different id is refused.
    pub replica_id: Option<crate::ReplicaId>,
    /// Memory for the keys of recent log entries and the current states of recently written
    /// records, which replication ships without reading them back from disk; 0 turns the
    /// caches off.
    pub entry_cache_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            durability: Durability::Wal,
            value_bytes_max: 4 << 20,
            record_bytes_max: 16 << 20,
            clock_skew_ms_max: 5 * 60 * 1000,
            clock: Arc::new(SystemClock),
            replica_id: None,
            entry_cache_bytes: 64 << 20,
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("durability", &self.durability)
            .field("value_bytes_max", &self.value_bytes_max)
            .field("record_bytes_max", &self.record_bytes_max)
            .field("clock_skew_ms_max", &self.clock_skew_ms_max)
            .field("replica_id", &self.replica_id)
            .field("entry_cache_bytes", &self.entry_cache_bytes)
            .finish_non_exhaustive()
    }
}
