//! Meridian: an embeddable, multi-region, active-active replicated key-value engine.
//!
//! The application's API is at the top level: [`Engine`] (open, typed reads and writes,
//! batches, scans, causal tokens and waits, wake-up subscriptions), [`Config`], [`Batch`],
//! [`Error`] and the read types. Data lives in RocksDB; every record is a CRDT of the sans-IO
//! core (crate `meridian-core`). Replication drivers (the QUIC runtime `meridian-runtime`, the
//! simulator) work through one handle, [`Engine::replication`]; this crate pulls no async
//! runtime and no QUIC. Feature `testing` exposes the RocksDB layout and crash-like closes to
//! the project's own tools and tests. See ARCHITECTURE.md at the repository root.
//!
//! ```no_run
//! let dir = tempfile::tempdir()?;
//! let engine = meridian::Engine::open(dir.path(), meridian::Config::default())?;
//! let token = engine.put(b"greeting", b"hello")?;
//! let read = engine.get(b"greeting")?.expect("just written");
//! assert_eq!(read.values, vec![b"hello".to_vec()]);
//! # let _ = token;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(clippy::unwrap_used)]

mod batch;
mod config;
mod engine;
mod error;
mod read;
/// RocksDB as this crate lays it out: for tools and tests of the crate's family only.
#[cfg(feature = "testing")]
pub mod store;
#[cfg(not(feature = "testing"))]
#[allow(dead_code, unused_imports)]
mod store;

pub use meridian_core::limits;
pub(crate) use meridian_core::{model, replication};

pub use batch::Batch;
pub use config::{
    Config, Durability, OsRandom, RandomSource, SystemClock, WallClock, KEY_BYTES_MAX,
};
pub use engine::{
    Engine, FaultReport, Feed, Once, OriginStatus, Replication, Row, Subscription, FEEDS_MAX,
    FEED_BATCH_BYTES, FEED_BATCH_ENTRIES, FEED_NAME_BYTES_MAX, REQUEST_TAGS_MAX,
    REQUEST_TAG_AGE_MS,
};
pub use error::{Error, Result, StorageError};
pub use model::{
    CausalToken, Dot, Expiry, Hlc, Kind, MemberId, Op, OriginId, RequestTag, VersionVector,
};
pub use read::{Change, FeedEvent, LwwValue, MapView, Read, ReadValue, Siblings};
