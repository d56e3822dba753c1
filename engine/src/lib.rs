//! Meridian: an embeddable, multi-region, active-active replicated key-value engine.
//!
//! Layers, importing downwards only: [`model`] (CRDT values and causality, pure), [`store`]
//! (RocksDB), [`replication`] (the sans-IO protocol), and [`Engine`] (the local API). See ARCHITECTURE.md at the repository root.
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
mod entry_cache;
mod epoch;
mod error;
mod faults;
#[doc(hidden)]
pub mod fuzzing;
pub mod limits;
pub mod model;
mod read;
mod replica_store;
pub mod replication;
pub mod runtime;
pub mod sim;
mod state_digest;
pub mod store;

pub use batch::Batch;
pub use config::{
    Config, Durability, OsRandom, RandomSource, SystemClock, WallClock, KEY_BYTES_MAX,
};
pub use engine::Engine;
pub use epoch::OriginStatus;
pub use error::{Error, Result};
pub use faults::FaultReport;
pub use model::{CausalToken, Dot, Hlc, Kind, Op, ReplicaId, VersionVector};
pub use read::{LwwValue, MapView, Read, ReadValue, Siblings};
