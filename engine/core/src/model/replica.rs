//! Replica identity: the actor behind every dot.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A replica identifier: a *member* (who a replica is: its name and incarnation in the cluster,
/// what its certificate proves) or an *origin* (the sequence space its writes are numbered in:
/// the member's current epoch). A member writes under `member.epoch_origin(epoch)`; epoch 0 is
/// the member id itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReplicaId(pub u64);

impl ReplicaId {
    /// The origin a member writes under in `epoch`: the member id itself for epoch 0, a mix of
    /// both otherwise (never 0, never the member id).
    pub fn epoch_origin(self, epoch: u32) -> ReplicaId {
        if epoch == 0 {
            return self;
        }
        // splitmix64 of the member id and the epoch: a fixed bijection, the same everywhere.
        let mut z = (self.0 ^ (u64::from(epoch) << 32 | u64::from(epoch)))
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        if z == 0 || z == self.0 {
            z = !self.0 | 1;
        }
        ReplicaId(z)
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl std::str::FromStr for ReplicaId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u64::from_str_radix(s, 16).map(ReplicaId)
    }
}
