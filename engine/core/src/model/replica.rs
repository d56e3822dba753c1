//! Replica identity: who a replica is (its member id) and the sequence space its writes are
//! numbered in (its origin, the actor behind every dot).

use serde::{Deserialize, Serialize};
use std::fmt;

/// Who a replica is: its name and incarnation in the cluster, what its certificate proves, what
/// the member lists and stability count. It writes under `member.epoch_origin(epoch)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MemberId(pub u64);

/// The sequence space a replica's writes are numbered in (the actor of their dots): its member
/// id's origin in its current epoch. A replica that lost writes it had numbered starts a new
/// epoch, so a new origin, and never numbers two writes alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OriginId(pub u64);

impl MemberId {
    /// The origin this member writes under in `epoch`: the member id's number itself for epoch
    /// 0, a mix of both otherwise (never 0, never the member id's number).
    pub fn epoch_origin(self, epoch: u32) -> OriginId {
        if epoch == 0 {
            return OriginId(self.0);
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
        OriginId(z)
    }
}

macro_rules! hex_id {
    ($t:ident) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:016x}", self.0)
            }
        }

        impl std::str::FromStr for $t {
            type Err = std::num::ParseIntError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                u64::from_str_radix(s, 16).map($t)
            }
        }
    };
}

hex_id!(MemberId);
hex_id!(OriginId);
