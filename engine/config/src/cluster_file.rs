//! A client's cluster file (`meridian client --cluster FILE`, `meridian route`): the cluster
//! id, one or more seed nodes to learn the regions from, and the client's certificate. Paths
//! are relative to the file; unknown fields are refused, naming them.
//!
//! ```toml
//! cluster = "demo"
//! certs = "certs/client-cli"   # holds ca.pem, client-cli.pem, client-cli.key
//! client = "cli"
//! near = { latitude = 48.85, longitude = 2.35 }   # optional: where this client is
//!
//! [[seeds]]
//! name = "use1"
//! region = "us-east"
//! address = "127.0.0.1:7001"
//! location = { latitude = 39.0, longitude = -77.5 }   # optional (offline routes use it)
//! ```

use crate::dev_certs::is_label;
use crate::node_config::{read_toml, ConfigError};
use meridian_client::routed::{RoutedConfig, Seed};
use meridian_client::TlsFiles;
use meridian_core::routing::Location;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A seed node, with its region's location if known.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedEntry {
    /// Replica name.
    pub name: String,
    /// Region name.
    pub region: String,
    /// QUIC address.
    pub address: SocketAddr,
    /// Where its region is.
    #[serde(default)]
    pub location: Option<Location>,
}

/// The file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// Cluster id.
    pub cluster: String,
    /// Directory of the client's certificate (`ca.pem`, `client-<client>.pem` and `.key`).
    pub certs: PathBuf,
    /// The client's name in its certificate.
    pub client: String,
    /// Where the client is.
    #[serde(default)]
    pub near: Option<Location>,
    /// Nodes to learn the regions from, tried in order.
    pub seeds: Vec<SeedEntry>,
}

impl ClusterFile {
    /// Reads and checks a file.
    pub fn load(path: &Path) -> Result<ClusterFile, ConfigError> {
        let mut file: ClusterFile = read_toml(path)?;
        if file.certs.is_relative() {
            file.certs = path.parent().unwrap_or(Path::new(".")).join(&file.certs);
        }
        file.check().map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        Ok(file)
    }

    /// Writes the file as TOML.
    pub fn write(&self, path: &Path) -> Result<(), ConfigError> {
        let text = toml::to_string(self).map_err(|e| ConfigError::Invalid {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        std::fs::write(path, text).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })
    }

    fn check(&self) -> Result<(), String> {
        if !is_label(&self.cluster) {
            return Err(format!(
                "field `cluster`: {:?} is not a DNS label",
                self.cluster
            ));
        }
        if self.seeds.is_empty() {
            return Err("field `seeds`: at least one seed is needed".into());
        }
        for (i, s) in self.seeds.iter().enumerate() {
            if !is_label(&s.name) || !is_label(&s.region) {
                return Err(format!(
                    "field `seeds[{i}]`: name and region must be DNS labels"
                ));
            }
        }
        let places = self
            .near
            .iter()
            .chain(self.seeds.iter().filter_map(|s| s.location.as_ref()));
        for place in places {
            if !place.is_on_earth() {
                return Err(format!("a location {place} is not a place on Earth"));
            }
        }
        Ok(())
    }

    /// The client's certificate files.
    pub fn tls(&self) -> TlsFiles {
        let id = format!("client-{}", self.client);
        TlsFiles {
            ca: self.certs.join("ca.pem"),
            cert: self.certs.join(format!("{id}.pem")),
            key: self.certs.join(format!("{id}.key")),
        }
    }

    /// A routed client's settings (defaults for the rest).
    pub fn routed_config(&self) -> RoutedConfig {
        let seeds = self
            .seeds
            .iter()
            .map(|s| Seed {
                name: s.name.clone(),
                region: s.region.clone(),
                address: s.address,
            })
            .collect();
        let mut config = RoutedConfig::new(&self.cluster, seeds, self.tls());
        config.near = self.near;
        config
    }
}
