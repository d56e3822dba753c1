//! What reads return: plain views of the stored CRDT state. They live in the core
//! (`meridian_core::read`), shared with the client protocol; re-exported here at their old
//! paths.

pub use meridian_core::read::{Change, FeedEvent, LwwValue, MapView, Read, ReadValue, Siblings};
