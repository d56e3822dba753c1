//! Engine configuration.

use std::fmt;
use std::sync::Arc;

pub use crate::limits::KEY_BYTES_MAX;

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

/// Source of the random numbers identity needs (a new member id, a new epoch): the operating
/// system by default; a simulator passes a seeded one so that a seed replays exactly.
pub trait RandomSource: Send + Sync {
    /// A random 64-bit number.
    fn next_u64(&self) -> u64;
}

/// The operating system's randomness (`getrandom`). Should the system have none to give (no
/// `getrandom` syscall and no `/dev/urandom`, which Linux has had since 3.17), a number is
/// mixed from the wall clock and the process id instead: an id must still be drawn, but two
/// processes started in the same millisecond with the same pid could draw the same one, so
/// the fallback is logged as an error and counted (`meridian_random_fallback_total`).
#[derive(Debug, Default)]
pub struct OsRandom;

impl RandomSource for OsRandom {
    fn next_u64(&self) -> u64 {
        let mut b = [0u8; 8];
        if let Err(e) = getrandom::fill(&mut b) {
            tracing::error!(error = %e, "the operating system gave no randomness: a member id or epoch is drawn from the clock and the process id instead, and may collide with another process's");
            metrics::counter!("meridian_random_fallback_total").increment(1);
            let t = SystemClock.now_ms() ^ u64::from(std::process::id()) << 40;
            return crate::model::MemberId(t).epoch_origin(0x5eed).0;
        }
        u64::from_le_bytes(b)
    }
}

/// Settings for `Engine::open`.
#[derive(Clone)]
pub struct Config {
    /// Durability of acknowledged writes.
    pub durability: Durability,
    /// Largest value, set element or field name, in bytes.
    pub value_bytes_max: usize,
    /// Largest log entry a local write may leave, in bytes: its records with their keys, as
    /// replication ships them (a single record, or a batch's). At most
    /// `limits::RECORD_BYTES_MAX`; see `limits` for how the limits fit together.
    pub record_bytes_max: usize,
    /// Remote HLC markers further ahead of local wall time than this are not followed.
    pub clock_skew_ms_max: u64,
    /// Wall-clock source.
    pub clock: Arc<dyn WallClock>,
    /// The member identity to give a replica created by this open (a node derives it from its
    /// cluster, name and incarnation); `None` draws a random one. Opening an existing replica
    /// of another member is refused. A directory created for a configured member writes under
    /// a new random epoch of it (`MemberId::epoch_origin`): it may be a wiped disk of a
    /// member whose earlier writes peers still hold.
    pub member_id: Option<crate::MemberId>,
    /// Randomness for new ids and epochs.
    pub random: Arc<dyn RandomSource>,
    /// The machine's current boot (`None`: read `/proc/sys/kernel/random/boot_id`). A
    /// directory last run without a clean shutdown under `Durability::Wal` in another boot may
    /// have lost its WAL's unsynced tail: it writes under a new epoch.
    pub boot_id: Option<String>,
    /// Memory for the keys of recent log entries and the current states of recently written
    /// records, which replication ships without reading them back from disk; 0 turns the
    /// caches off.
    pub entry_cache_bytes: usize,
    /// Below this much free space on the data directory's file system, writes (local, and
    /// peers' entries) are refused with `Error::DiskFull` rather than fail inside the storage
    /// engine (which would poison it); 0 turns the check off.
    pub disk_free_min_bytes: u64,
    /// Most log entries per origin that named change feeds (`Engine::named_feed`) hold back
    /// from truncation behind causal stability; a feed that falls further behind is reset.
    pub feed_retention_entries: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            durability: Durability::Wal,
            value_bytes_max: 4 << 20,
            record_bytes_max: crate::limits::RECORD_BYTES_MAX,
            clock_skew_ms_max: 5 * 60 * 1000,
            clock: Arc::new(SystemClock),
            member_id: None,
            random: Arc::new(OsRandom),
            boot_id: None,
            entry_cache_bytes: 64 << 20,
            disk_free_min_bytes: 256 << 20,
            feed_retention_entries: 1_000_000,
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
            .field("member_id", &self.member_id)
            .field("entry_cache_bytes", &self.entry_cache_bytes)
            .field("disk_free_min_bytes", &self.disk_free_min_bytes)
            .field("feed_retention_entries", &self.feed_retention_entries)
            .finish_non_exhaustive()
    }
}
