//! Free space on the data directory's file system: writes are refused with a typed error
//! before the storage engine runs out of room (which would fail a write half-way and poison
//! the engine). Read at most once per `REFRESH`, so the check costs a clock read per write.

use super::*;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long a reading of the free space is trusted.
const REFRESH: Duration = Duration::from_millis(500);

/// The free-space check of one data directory.
#[derive(Debug)]
pub(crate) struct DiskSpace {
    path: PathBuf,
    min_free: u64,
    /// When the space was last read, and how many bytes were free then.
    last: Mutex<Option<(Instant, u64)>>,
}

impl DiskSpace {
    /// The check for `path`, refusing below `min_free` bytes (0: never).
    pub(crate) fn new(path: &Path, min_free: u64) -> DiskSpace {
        DiskSpace {
            path: path.to_path_buf(),
            min_free,
            last: Mutex::new(None),
        }
    }

    /// `Err(DiskFull)` when less than the minimum is free (a file system that cannot be asked
    /// counts as having room: the storage engine's own errors still apply).
    pub(crate) fn check(&self) -> Result<()> {
        if self.min_free == 0 {
            return Ok(());
        }
        let mut last = lock(&self.last);
        let available = match *last {
            Some((at, free)) if at.elapsed() < REFRESH => free,
            _ => {
                let free = rustix::fs::statvfs(&self.path)
                    .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
                    .unwrap_or(u64::MAX);
                *last = Some((Instant::now(), free));
                free
            }
        };
        if available < self.min_free {
            metrics::counter!("meridian_writes_refused_disk_full_total").increment(1);
            return Err(Error::DiskFull {
                available,
                required: self.min_free,
            });
        }
        Ok(())
    }
}
