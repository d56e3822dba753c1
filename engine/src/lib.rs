//! Meridian: an embeddable, multi-region, active-active replicated key-value engine.
//!
//! The embedded engine: [`Engine`] (the local API) over [`store`] (RocksDB), implementing the
//! storage seam of the sans-IO replication core (crate `meridian-core`, re-exported here as
//! [`model`], [`replication`] and [`limits`]). It pulls no async runtime and no QUIC: the
//! runtime that replicates over the network is crate `meridian-runtime`. See ARCHITECTURE.md
//! at the repository root.
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
    Engine, FaultReport, Once, OriginStatus, Replication, Row, Subscription, REQUEST_TAGS_MAX,
    REQUEST_TAG_AGE_MS,
};
pub use error::{Error, Result, StorageError};
pub use model::{CausalToken, Dot, Hlc, Kind, Op, ReplicaId, RequestTag, VersionVector};
pub use read::{LwwValue, MapView, Read, ReadValue, Siblings};
