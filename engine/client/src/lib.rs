//! Meridian's wire protocol and client SDK: the client protocol (`client_proto`, one request
//! and one response per QUIC stream) and its versions (`protocols`), length-prefixed frames
//! (`framing`), mutual TLS and the QUIC transport both ends share (`tls`, `congestion`), a
//! client of one node (`client`), the routed client of a whole cluster (`routed`), change
//! feeds on either (`feed`), and reads as JSON (`read_json`).
//!
//! Usable without the server: it depends on the pure core (`meridian-core`) and on tokio,
//! quinn and rustls, never on the storage engine (RocksDB) nor on the node's configuration
//! files. The server runtime (`meridian-runtime`) speaks the same protocol from this crate.

pub mod client;
pub mod client_proto;
mod congestion;
pub mod feed;
pub mod framing;
pub mod protocols;
pub mod read_json;
pub mod routed;
pub mod tls;

pub use client::{Client, ClientFailure};
pub use feed::{RoutedWatch, WatchStream};
pub use routed::{RoutedClient, RoutedConfig, RoutedError};
pub use tls::TlsFiles;
