//! Causal tokens: what a session has written or read, to be shown to any region later.

use super::{Dot, OriginId, VersionVector};
use serde::{Deserialize, Serialize};

const TOKEN_FORMAT: u8 = 1;
/// Upper bound on a token's encoded size: tokens arrive from clients.
pub const TOKEN_BYTES_MAX: usize = 64 * 1024;

/// A version vector a client carries between calls: a region that covers it has applied every
/// write the session made or saw.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CausalToken(pub VersionVector);

/// Why token bytes were refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Empty, oversized or undecodable bytes.
    #[error("malformed causal token: {0}")]
    Malformed(&'static str),
    /// From a newer format.
    #[error("causal token format {0} is newer than this build")]
    FutureVersion(u8),
}

impl CausalToken {
    /// The token of a single write.
    pub fn of_dot(dot: Dot) -> Self {
        let mut vv = VersionVector::new();
        vv.add(dot);
        CausalToken(vv)
    }

    /// Combines two tokens (a session's running token).
    pub fn merge(&mut self, other: &CausalToken) {
        self.0.join(&other.0);
    }

    /// Whether a replica whose applied vector is `applied` has seen everything in the token.
    pub fn is_covered_by(&self, applied: &VersionVector) -> bool {
        applied.dominates(&self.0)
    }

    /// The counter recorded for `replica`.
    pub fn get(&self, replica: OriginId) -> u64 {
        self.0.get(replica)
    }

    /// Versioned bytes for clients to keep.
    pub fn to_bytes(&self) -> Vec<u8> {
        let entries: Vec<(OriginId, u64)> = self.0.iter().collect();
        let mut out = vec![TOKEN_FORMAT];
        // Encoding a Vec of integers into a Vec cannot fail.
        if let Ok(body) = postcard::to_stdvec(&entries) {
            out.extend_from_slice(&body);
        }
        out
    }

    /// Parses bytes made by `to_bytes`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TokenError> {
        if bytes.len() > TOKEN_BYTES_MAX {
            return Err(TokenError::Malformed("too large"));
        }
        let (&v, body) = bytes.split_first().ok_or(TokenError::Malformed("empty"))?;
        if v > TOKEN_FORMAT {
            return Err(TokenError::FutureVersion(v));
        }
        let entries: Vec<(OriginId, u64)> =
            postcard::from_bytes(body).map_err(|_| TokenError::Malformed("undecodable"))?;
        Ok(CausalToken(VersionVector::from_entries(entries)))
    }
}
