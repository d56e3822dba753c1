//! A write's request identity: the client that made it and the id the client chose, carried
//! with the write wherever it replicates, so that a retry of it is recognised in any region.

use serde::{Deserialize, Serialize};

/// Longest client identity a request tag may name, in bytes.
pub const REQUEST_CLIENT_BYTES_MAX: usize = 128;

/// Who asked for a write, and the id it gave the request (random, 16 bytes).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestTag {
    /// The client's identity (its certificate's name; any name for an embedder).
    pub client: String,
    /// The request's id, the same in every retry of the request.
    pub id: [u8; 16],
}

impl RequestTag {
    /// A tag, or `None` when `client` is longer than `REQUEST_CLIENT_BYTES_MAX` or the id is
    /// all zero (the id that asks for no deduplication).
    pub fn new(client: &str, id: [u8; 16]) -> Option<RequestTag> {
        let tag = RequestTag {
            client: client.to_string(),
            id,
        };
        tag.is_sane().then_some(tag)
    }

    /// Whether a tag received from elsewhere can be kept.
    pub fn is_sane(&self) -> bool {
        self.client.len() <= REQUEST_CLIENT_BYTES_MAX && self.id != [0; 16]
    }
}
