//! A node's TOML configuration (`meridian node --config FILE`), read and written: unknown
//! fields are refused and every error names the field; the test kit writes it for the clusters
//! it launches.

use crate::dev_certs::is_label;
use meridian::{Config, Durability, SystemClock, WallClock};
use meridian_client::protocols::Protocols;
use meridian_client::tls::Role;
use meridian_client::TlsFiles;
use meridian_core::routing::Location;
use meridian_runtime::{member_id_for, ActivePassiveConfig, PeerSpec, RuntimeConfig};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not TOML of this shape, or a field's value is refused (the message names it).
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the field.
        message: String,
    },
}

/// A TOML file read into `T`; a field it does not know, or a value of the wrong shape, is
/// refused with the field's name.
pub(crate) fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Invalid {
        path: path.to_owned(),
        message: e.to_string().trim().to_string(),
    })
}

/// Refuses with the message when `cond` does not hold.
macro_rules! ensure {
    ($cond:expr, $($message:tt)+) => {
        if !$cond {
            return Err(format!($($message)+));
        }
    };
}

/// `meridian node --config FILE`.
#[derive(Clone, Debug, Serialize, Deserialize)]
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
    /// Where clients and peers reach this replica, if not at `listen` (a wildcard listen
    /// address, a translated one).
    #[serde(default)]
    pub advertise: Option<SocketAddr>,
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
    /// One primary region taking the writes, under a lease.
    #[serde(default)]
    pub active_passive: ActivePassive,
    /// Shifts this node's wall clock by this many milliseconds (game days and tests: a node
    /// whose clock is wrong); at most a day either way.
    #[serde(default)]
    pub clock_skew_ms: i64,
    /// The newest protocol versions to speak (a rolling upgrade pins the previous release's
    /// until every node runs the new one). Written only when set: a previous release refuses
    /// a section it does not know.
    #[serde(default, skip_serializing_if = "ProtocolsSection::is_newest")]
    pub protocols: ProtocolsSection,
}

/// `[protocols]`: the newest protocol versions this node speaks (absent: the newest this
/// build speaks).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtocolsSection {
    /// Newest replication protocol version.
    #[serde(default)]
    pub replication_max: Option<u8>,
    /// Newest client protocol version.
    #[serde(default)]
    pub client_max: Option<u8>,
}

impl ProtocolsSection {
    /// Whether nothing is pinned.
    pub fn is_newest(&self) -> bool {
        *self == ProtocolsSection::default()
    }

    /// The versions spoken, or why they cannot be.
    pub fn protocols(&self) -> Result<Protocols, String> {
        let newest = Protocols::default();
        Protocols::pinned(
            self.replication_max.unwrap_or(newest.replication_max),
            self.client_max.unwrap_or(newest.client_max),
        )
    }
}

/// Longest clock skew a node may be configured with (a day).
const CLOCK_SKEW_MS_MAX: i64 = 24 * 60 * 60 * 1_000;

/// The operating system's clock shifted by a fixed amount.
#[derive(Debug)]
struct SkewedClock(i64);

impl WallClock for SkewedClock {
    fn now_ms(&self) -> u64 {
        SystemClock.now_ms().saturating_add_signed(self.0)
    }
}

/// `[active_passive]`: one primary region takes the writes while it holds a lease a majority
/// of replicas granted; the others serve reads and answer writes with `NotPrimary`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivePassive {
    /// The mode at start (`meridian admin mode` switches running nodes).
    #[serde(default)]
    pub enabled: bool,
    /// Replica names in the order they take over when there is no primary (default: every
    /// replica, by name); a replica not listed becomes primary only by promotion.
    #[serde(default)]
    pub successors: Vec<String>,
    /// How long a replica's promise to the primary lasts, in milliseconds.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
    /// After how long without a primary a successor takes over, in milliseconds; 0: only
    /// `meridian admin promote` makes a primary.
    #[serde(default = "default_failover_after_ms")]
    pub failover_after_ms: u64,
    /// Bound on any node's clock-rate error, in parts per million (10,000 = 1%): a primary
    /// stops that much earlier than the promises it holds.
    #[serde(default = "default_drift_ppm")]
    pub drift_ppm: u64,
}

impl Default for ActivePassive {
    fn default() -> Self {
        ActivePassive::from(&ActivePassiveConfig::default())
    }
}

impl From<&ActivePassiveConfig> for ActivePassive {
    fn from(c: &ActivePassiveConfig) -> ActivePassive {
        ActivePassive {
            enabled: c.enabled,
            successors: c.successors.clone(),
            lease_ms: c.lease_ms,
            failover_after_ms: c.failover_after_ms,
            drift_ppm: c.drift_ppm,
        }
    }
}

impl ActivePassive {
    /// The runtime's settings (the section's fields, checked by `NodeConfig::load`).
    pub fn runtime(&self) -> ActivePassiveConfig {
        ActivePassiveConfig {
            enabled: self.enabled,
            successors: self.successors.clone(),
            lease_ms: self.lease_ms,
            failover_after_ms: self.failover_after_ms,
            drift_ppm: self.drift_ppm,
        }
    }
}

// The section's defaults are the runtime's.
fn default_lease_ms() -> u64 {
    ActivePassiveConfig::default().lease_ms
}
fn default_failover_after_ms() -> u64 {
    ActivePassiveConfig::default().failover_after_ms
}
fn default_drift_ppm() -> u64 {
    ActivePassiveConfig::default().drift_ppm
}

/// `[tls]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
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
#[derive(Clone, Debug, Serialize, Deserialize)]
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
    /// Below this many MiB free on the data directory's file system, writes (clients' and
    /// peers') are refused with a typed error instead of failing inside RocksDB (0: no check).
    #[serde(default = "default_disk_free_min_mib")]
    pub disk_free_min_mib: u64,
    /// Most entries of one origin kept in the log for a peer that lags on it (down, or cut
    /// off); past it the peer comes back by state transfer, so a long outage costs the others
    /// a bounded log and bounded tombstones.
    #[serde(default = "default_log_retention_entries")]
    pub log_retention_entries: u64,
    /// Milliseconds a replica waits for a whole copy of a write it holds only partly (a peer
    /// left a record out) or not at all (lost from its own log) before it declares what is
    /// missing lost, while a member that may hold it is out of reach.
    #[serde(default = "default_missing_wait_ms")]
    pub missing_wait_ms: u64,
    /// Most entries of one origin that named change feeds hold in the log behind stability
    /// (`Config::feed_retention_entries`); a feed that falls further behind is reset. Written
    /// only when not the default (a previous release refuses a field it does not know).
    #[serde(
        default = "default_feed_retention_entries",
        skip_serializing_if = "is_default_feed_retention_entries"
    )]
    pub feed_retention_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            value_bytes_max: default_value_bytes_max(),
            record_bytes_max: default_record_bytes_max(),
            client_requests_per_second: default_rate(),
            client_burst: default_burst(),
            replication_cache_mib: default_replication_cache_mib(),
            disk_free_min_mib: default_disk_free_min_mib(),
            log_retention_entries: default_log_retention_entries(),
            missing_wait_ms: default_missing_wait_ms(),
            feed_retention_entries: default_feed_retention_entries(),
        }
    }
}

/// `[access]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Access {
    /// The role a replica's certificate gets when it connects as a client: `read`, `write`
    /// or `admin`; absent, replicas' certificates are refused as clients.
    #[serde(default)]
    pub replica_role: Option<String>,
}

/// `[[peers]]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
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

fn default_disk_free_min_mib() -> u64 {
    Config::default().disk_free_min_bytes >> 20
}

fn default_log_retention_entries() -> u64 {
    meridian_core::replication::ReplicationConfig::default().log_retention_entries
}

fn default_feed_retention_entries() -> u64 {
    Config::default().feed_retention_entries
}

fn is_default_feed_retention_entries(n: &u64) -> bool {
    *n == default_feed_retention_entries()
}

fn default_missing_wait_ms() -> u64 {
    meridian_core::replication::ReplicationConfig::default().missing_wait_ms
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
    /// A configuration with every optional field at its default: no metrics endpoint, no
    /// peers, incarnation 0, write-ahead-log durability.
    pub fn new(
        cluster: &str,
        name: &str,
        region: &str,
        data_dir: PathBuf,
        listen: SocketAddr,
        tls: TlsFiles,
    ) -> NodeConfig {
        NodeConfig {
            cluster: cluster.into(),
            name: name.into(),
            region: region.into(),
            incarnation: 0,
            location: None,
            data_dir,
            listen,
            advertise: None,
            metrics_listen: None,
            durability: default_durability(),
            log_format: default_log_format(),
            disable_gso: false,
            tls: TlsSection {
                ca: tls.ca,
                cert: tls.cert,
                key: tls.key,
            },
            limits: Limits::default(),
            access: Access::default(),
            peers: Vec::new(),
            active_passive: ActivePassive::default(),
            clock_skew_ms: 0,
            protocols: ProtocolsSection::default(),
        }
    }

    /// Reads and validates a file; paths in it are relative to the file's directory.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let mut config: NodeConfig = read_toml(path)?;
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
        config.validate().map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        Ok(config)
    }

    /// Validates this configuration and writes it to `path` as TOML.
    pub fn write(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        self.validate().map_err(invalid)?;
        let text = toml::to_string(self).map_err(|e| invalid(e.to_string()))?;
        std::fs::write(path, text).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// This replica as a peer of the others.
    pub fn as_peer(&self) -> Peer {
        Peer {
            name: self.name.clone(),
            region: self.region.clone(),
            address: self.advertise.unwrap_or(self.listen),
            incarnation: self.incarnation,
            location: self.location,
        }
    }

    /// The engine's settings.
    pub fn engine_config(&self) -> Config {
        Config {
            durability: if self.durability == "sync" {
                Durability::Sync
            } else {
                Durability::Wal
            },
            value_bytes_max: self.limits.value_bytes_max,
            record_bytes_max: self.limits.record_bytes_max,
            entry_cache_bytes: self.limits.replication_cache_mib << 20,
            disk_free_min_bytes: self.limits.disk_free_min_mib.saturating_mul(1 << 20),
            feed_retention_entries: self.limits.feed_retention_entries,
            member_id: Some(member_id_for(&self.cluster, &self.name, self.incarnation)),
            clock: if self.clock_skew_ms == 0 {
                Arc::new(SystemClock)
            } else {
                Arc::new(SkewedClock(self.clock_skew_ms))
            },
            ..Config::default()
        }
    }

    /// Checks every field; the message names the one refused.
    fn validate(&self) -> Result<(), String> {
        let label = |field: &str, value: &str| {
            ensure!(
                is_label(value),
                "field `{field}`: {value:?} is not a DNS label"
            );
            Ok(())
        };
        label("cluster", &self.cluster)?;
        label("name", &self.name)?;
        label("region", &self.region)?;
        ensure!(
            self.clock_skew_ms.abs() <= CLOCK_SKEW_MS_MAX,
            "field `clock_skew_ms`: {} is more than a day",
            self.clock_skew_ms
        );
        ensure!(
            matches!(self.durability.as_str(), "wal" | "sync"),
            "field `durability`: {:?} is neither \"wal\" nor \"sync\"",
            self.durability
        );
        ensure!(
            matches!(self.log_format.as_str(), "text" | "json"),
            "field `log_format`: {:?} is neither \"text\" nor \"json\"",
            self.log_format
        );
        if let Err(e) =
            meridian::limits::check(self.limits.value_bytes_max, self.limits.record_bytes_max)
        {
            return Err(format!(
                "fields `limits.value_bytes_max` and `limits.record_bytes_max`: {e}"
            ));
        }
        ensure!(
            self.limits.client_requests_per_second > 0,
            "field `limits.client_requests_per_second` must be positive"
        );
        ensure!(
            self.limits.log_retention_entries > 0,
            "field `limits.log_retention_entries` must be positive"
        );
        ensure!(
            self.limits.missing_wait_ms <= 86_400_000,
            "field `limits.missing_wait_ms`: {} is more than a day",
            self.limits.missing_wait_ms
        );
        ensure!(
            self.limits.replication_cache_mib <= REPLICATION_CACHE_MIB_MAX,
            "field `limits.replication_cache_mib`: {} is more than {REPLICATION_CACHE_MIB_MAX}",
            self.limits.replication_cache_mib
        );
        if let Some(role) = &self.access.replica_role {
            role.parse::<Role>()
                .map_err(|e| format!("field `access.replica_role`: {e}"))?;
        }
        for (i, p) in self.peers.iter().enumerate() {
            label(&format!("peers[{i}].name"), &p.name)?;
            label(&format!("peers[{i}].region"), &p.region)?;
            ensure!(
                p.name != self.name,
                "field `peers[{i}].name`: {:?} is this replica",
                p.name
            );
        }
        self.protocols
            .protocols()
            .map_err(|e| format!("section `protocols`: {e}"))?;
        let ap = &self.active_passive;
        ensure!(
            (200..=meridian_core::lease::LEASE_MS_MAX).contains(&ap.lease_ms),
            "field `active_passive.lease_ms`: {} is not between 200 and 600000",
            ap.lease_ms
        );
        ensure!(
            ap.failover_after_ms == 0 || ap.failover_after_ms >= ap.lease_ms,
            "field `active_passive.failover_after_ms`: {} is shorter than the lease ({})",
            ap.failover_after_ms,
            ap.lease_ms
        );
        ensure!(
            ap.drift_ppm <= 100_000,
            "field `active_passive.drift_ppm`: {} is more than 100000 (10%)",
            ap.drift_ppm
        );
        for (i, name) in ap.successors.iter().enumerate() {
            ensure!(
                *name == self.name || self.peers.iter().any(|p| p.name == *name),
                "field `active_passive.successors[{i}]`: {name:?} is neither this replica nor a peer"
            );
        }
        for loc in self
            .location
            .iter()
            .chain(self.peers.iter().filter_map(|p| p.location.as_ref()))
        {
            ensure!(
                loc.is_on_earth(),
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
            advertise: self.advertise,
            location: self.location,
            peers: self
                .peers
                .iter()
                .map(|p| PeerSpec {
                    name: p.name.clone(),
                    region: p.region.clone(),
                    address: p.address,
                    incarnation: p.incarnation,
                    location: p.location,
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
            replication: meridian_core::replication::ReplicationConfig {
                log_retention_entries: self.limits.log_retention_entries,
                missing_wait_ms: self.limits.missing_wait_ms,
                ..Default::default()
            },
            active_passive: self.active_passive.runtime(),
            protocols: self.protocols.protocols().unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dir: &Path) -> NodeConfig {
        let mut config = NodeConfig::new(
            "c",
            "a",
            "us-east",
            dir.join("data"),
            "127.0.0.1:7000".parse().expect("address"),
            crate::dev_certs::replica_files(dir, "a"),
        );
        config.metrics_listen = Some("127.0.0.1:9000".parse().expect("address"));
        config.location = Some(Location {
            latitude: 40.7,
            longitude: -74.0,
        });
        config.limits.client_burst = 7;
        config.access.replica_role = Some("read".into());
        let mut peer = config.as_peer();
        peer.name = "b".into();
        peer.incarnation = 2;
        config.peers.push(peer);
        config
    }

    #[test]
    fn a_written_configuration_loads_as_it_was() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = sample(dir.path());
        let path = dir.path().join("a.toml");
        config.write(&path).expect("write");
        let loaded = NodeConfig::load(&path).expect("load");
        assert_eq!(
            toml::to_string(&loaded).expect("toml"),
            toml::to_string(&config).expect("toml")
        );
        assert_eq!(loaded.peers[0].incarnation, 2);
        assert_eq!(
            loaded.engine_config().member_id,
            Some(member_id_for("c", "a", 0))
        );
    }

    #[test]
    fn a_refused_field_is_named_and_not_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = sample(dir.path());
        config.peers[0].name = "a".into();
        let path = dir.path().join("a.toml");
        let err = config
            .write(&path)
            .expect_err("a peer named as this replica");
        assert!(err.to_string().contains("peers[0].name"), "{err}");
        assert!(!path.exists());
    }
}
