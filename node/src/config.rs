//! The node's TOML configuration. Unknown fields are refused; every error names the field.

use anyhow::Context;
use meridian::Config;
use meridian_runtime::{PeerSpec, RuntimeConfig, TlsFiles};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// `meridian node --config FILE`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Cluster id (a DNS label).
    pub cluster: String,
    /// This replica's name (a DNS label).
    pub name: String,
    /// This replica's region (a DNS label).
    pub region: String,
    /// Bumped when the replica comes back with an empty disk.
    #[serde(default)]
    pub incarnation: u64,
    /// Region location.
    #[serde(default)]
    pub location: Option<Location>,
    /// RocksDB directory.
    pub data_dir: PathBuf,
    /// QUIC listen address.
    pub listen: SocketAddr,
    /// Prometheus metrics and `/health` listen address.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// `wal` or `sync`.
    #[serde(default = "default_durability")]
    pub durability: String,
    /// `text` or `json`.
    #[serde(default = "default_log_format")]
    pub log_format: String,
    /// Turn off UDP segmentation offload.
    #[serde(default)]
    pub disable_gso: bool,
    /// Certificate files.
    pub tls: TlsSection,
    /// Limits.
    #[serde(default)]
    pub limits: Limits,
    /// Who may do what.
    #[serde(default)]
    pub access: Access,
    /// The other replicas.
    #[serde(default)]
    pub peers: Vec<Peer>,
}

/// Latitude and longitude in degrees.
#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub struct Location {
    /// Degrees north.
    pub latitude: f64,
    /// Degrees east.
    pub longitude: f64,
}

/// `[tls]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// Cluster CA certificate.
    pub ca: PathBuf,
    /// This replica's certificate.
    pub cert: PathBuf,
    /// This replica's key.
    pub key: PathBuf,
}

/// `[limits]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest value in bytes.
    #[serde(default = "default_value_bytes_max")]
    pub value_bytes_max: usize,
    /// Largest log entry one write may leave (a record, or a batch's records with their
    /// keys), in bytes; at most half of what a replication frame carries.
    #[serde(default = "default_record_bytes_max")]
    pub record_bytes_max: usize,
    /// Client requests per second per client identity (its certificate).
    #[serde(default = "default_rate")]
    pub client_requests_per_second: u32,
    /// Burst above the rate.
    #[serde(default = "default_burst")]
    pub client_burst: u32,
    /// MiB of recent writes kept in memory for replication: what a peer that is down or behind
    /// still needs ships without reading RocksDB (0 turns it off).
    #[serde(default = "default_replication_cache_mib")]
    pub replication_cache_mib: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            value_bytes_max: default_value_bytes_max(),
            record_bytes_max: default_record_bytes_max(),
            client_requests_per_second: default_rate(),
            client_burst: default_burst(),
            replication_cache_mib: default_replication_cache_mib(),
        }
    }
}

/// `[access]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Access {
    /// The role a replica's certificate gets when it connects as a client: `read`, `write`
    /// or `admin`; absent, replicas' certificates are refused as clients.
    #[serde(default)]
    pub replica_role: Option<String>,
}

/// `[[peers]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// Replica name.
    pub name: String,
    /// Region.
    pub region: String,
    /// QUIC address.
    pub address: SocketAddr,
    /// Its incarnation.
    #[serde(default)]
    pub incarnation: u64,
    /// Region location.
    #[serde(default)]
    pub location: Option<Location>,
}

fn default_durability() -> String {
    "wal".into()
}
fn default_log_format() -> String {
    "text".into()
}
fn default_value_bytes_max() -> usize {
    4 << 20
}
fn default_record_bytes_max() -> usize {
    Config::default().record_bytes_max
}
fn default_replication_cache_mib() -> usize {
    Config::default().entry_cache_bytes >> 20
}

/// Largest `limits.replication_cache_mib` accepted (1 TiB).
const REPLICATION_CACHE_MIB_MAX: usize = 1 << 20;

fn default_rate() -> u32 {
    10_000
}
fn default_burst() -> u32 {
    2_000
}

impl NodeConfig {
    /// Reads and validates a file; paths in it are relative to the file's directory.
    pub fn load(path: &Path) -> anyhow::Result<NodeConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut config: NodeConfig = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut config.data_dir,
            &mut config.tls.ca,
            &mut config.tls.cert,
            &mut config.tls.key,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        config
            .validate()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        use crate::certs::is_label;
        anyhow::ensure!(
            is_label(&self.cluster),
            "field `cluster`: {:?} is not a DNS label",
            self.cluster
        );
        anyhow::ensure!(
            is_label(&self.name),
            "field `name`: {:?} is not a DNS label",
            self.name
        );
        anyhow::ensure!(
            is_label(&self.region),
            "field `region`: {:?} is not a DNS label",
            self.region
        );
        anyhow::ensure!(
            matches!(self.durability.as_str(), "wal" | "sync"),
            "field `durability`: {:?} is neither \"wal\" nor \"sync\"",
            self.durability
        );
        anyhow::ensure!(
            matches!(self.log_format.as_str(), "text" | "json"),
            "field `log_format`: {:?} is neither \"text\" nor \"json\"",
            self.log_format
        );
        if let Err(e) =
            meridian::limits::check(self.limits.value_bytes_max, self.limits.record_bytes_max)
        {
            anyhow::bail!("fields `limits.value_bytes_max` and `limits.record_bytes_max`: {e}");
        }
        anyhow::ensure!(
            self.limits.client_requests_per_second > 0,
            "field `limits.client_requests_per_second` must be positive"
        );
        anyhow::ensure!(
            self.limits.replication_cache_mib <= REPLICATION_CACHE_MIB_MAX,
            "field `limits.replication_cache_mib`: {} is more than {REPLICATION_CACHE_MIB_MAX}",
            self.limits.replication_cache_mib
        );
        if let Some(role) = &self.access.replica_role {
            role.parse::<meridian_runtime::tls::Role>()
                .map_err(|e| anyhow::anyhow!("field `access.replica_role`: {e}"))?;
        }
        for (i, p) in self.peers.iter().enumerate() {
            anyhow::ensure!(
                is_label(&p.name),
                "field `peers[{i}].name`: {:?} is not a DNS label",
                p.name
            );
            anyhow::ensure!(
                is_label(&p.region),
                "field `peers[{i}].region`: {:?} is not a DNS label",
                p.region
            );
            anyhow::ensure!(
                p.name != self.name,
                "field `peers[{i}].name`: {:?} is this replica",
                p.name
            );
        }
        for loc in self
            .location
            .iter()
            .chain(self.peers.iter().filter_map(|p| p.location.as_ref()))
        {
            anyhow::ensure!(
                (-90.0..=90.0).contains(&loc.latitude) && (-180.0..=180.0).contains(&loc.longitude),
                "field `location`: ({}, {}) is not a place on Earth",
                loc.latitude,
                loc.longitude
            );
        }
        Ok(())
    }

    /// The runtime's settings.
    pub fn runtime(&self) -> RuntimeConfig {
        RuntimeConfig {
            cluster: self.cluster.clone(),
            name: self.name.clone(),
            region: self.region.clone(),
            incarnation: self.incarnation,
            listen: self.listen,
            peers: self
                .peers
                .iter()
                .map(|p| PeerSpec {
                    name: p.name.clone(),
                    region: p.region.clone(),
                    address: p.address,
                    incarnation: p.incarnation,
                })
                .collect(),
            tls: TlsFiles {
                ca: self.tls.ca.clone(),
                cert: self.tls.cert.clone(),
                key: self.tls.key.clone(),
            },
            disable_gso: self.disable_gso,
            client_requests_per_second: self.limits.client_requests_per_second,
            client_burst: self.limits.client_burst,
            replica_client_role: self
                .access
                .replica_role
                .as_deref()
                .and_then(|r| r.parse().ok()),
            replication: Default::default(),
        }
    }
}
