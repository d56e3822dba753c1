//! Meridian's configuration files and development certificates: a node's TOML configuration
//! (`node_config`, read into the engine's `Config` and the runtime's `RuntimeConfig`), a
//! client's cluster file (`cluster_file`, read into a `RoutedConfig`), and a development CA
//! with replicas' and clients' certificates (`dev_certs`).
//!
//! The only crate that parses TOML or makes certificates: an application that embeds the
//! engine with replication (`meridian-runtime`) or a client (`meridian-client`) builds
//! neither toml nor rcgen unless it asks for this crate.

pub mod cluster_file;
pub mod dev_certs;
pub mod local_cluster;
pub mod node_config;

pub use cluster_file::ClusterFile;
pub use dev_certs::CertsRequest;
pub use node_config::{ConfigError, NodeConfig};
