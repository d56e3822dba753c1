//! Meridian's wire protocol and client SDK: the client protocol (`client_proto`, one request
//! and one response per QUIC stream) and its versions (`protocols`), length-prefixed frames
//! (`framing`), mutual TLS and the QUIC transport both ends share (`tls`, `congestion`), a
//! client of one node (`client`), the routed client of a whole cluster (`routed`), and reads
//! as JSON (`read_json`).
//!
//! Usable without the server: it depends on the pure core (`meridian-core`) and on tokio,
//! quinn and rustls, never on the storage engine (RocksDB) nor on the node's configuration
//! files. The server runtime (`meridian-runtime`) speaks the same protocol from this crate.

pub mod client;
pub mod client_proto;
mod congestion;
pub mod framing;
pub mod protocols;
pub mod read_json;
pub mod routed;
pub mod tls;

pub use client::{Client, ClientFailure};
pub use routed::{RoutedClient, RoutedConfig, RoutedError};
pub use tls::TlsFiles;
