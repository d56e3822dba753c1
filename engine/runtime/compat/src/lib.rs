//! Compatibility paths: `meridian_runtime` as dependents knew it before the runtime was split
//! by job. Everything of the server runtime (`meridian-runtime`, which re-exports the client
//! SDK's modules itself), and the configuration files and development certificates that moved
//! to `meridian-config`: `node_config`, `cluster_file`, `dev_certs`.
//!
//! New code names the crates: `meridian_runtime` (the server), `meridian_client` (the
//! protocol and the SDK), `meridian_config` (the files and the development CA).

pub use meridian_config::{cluster_file, dev_certs, node_config};
pub use meridian_runtime::*;
