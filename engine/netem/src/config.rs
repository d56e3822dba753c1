//! The configuration file of `meridian netem run`: the nodes, a relay per ordered pair, the
//! starting shapes and where the control interface listens.

use crate::emulator::{NodeAddr, Route};
use crate::shape::ShapeChange;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::Path;

/// `netem.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetemConfig {
    /// Where the control interface (HTTP) listens; keep it on loopback or a staging network.
    pub control: SocketAddr,
    /// Drives loss, duplication, jitter and reordering (the same seed drops the same
    /// datagrams for the same traffic).
    #[serde(default)]
    pub seed: u64,
    /// The nodes, at the addresses where they really listen.
    pub node: Vec<NodeAddr>,
    /// One relay per entry; without entries, one per ordered pair on ephemeral loopback ports.
    #[serde(default)]
    pub route: Vec<Route>,
    /// Starting shapes, applied in order.
    #[serde(default)]
    pub shape: Vec<ShapeEntry>,
}

/// A starting shape for the links from `from` to `to` (`*` for every node).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShapeEntry {
    /// Sending node, or `*`.
    pub from: String,
    /// Receiving node, or `*`.
    pub to: String,
    /// The opposite direction too.
    #[serde(default)]
    pub both: bool,
    /// The shape's fields.
    #[serde(flatten)]
    pub change: ShapeChange,
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    /// The file is not a valid configuration.
    #[error("{0}: {1}")]
    Parse(String, toml::de::Error),
    /// Fewer than two nodes.
    #[error("{0}: an emulator needs at least two nodes")]
    TooFewNodes(String),
    /// The file could not be written.
    #[error("cannot write {0}: {1}")]
    Write(String, String),
}

impl NetemConfig {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<NetemConfig, ConfigError> {
        let shown = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError::Read(shown.clone(), e))?;
        let config: NetemConfig =
            toml::from_str(&text).map_err(|e| ConfigError::Parse(shown.clone(), e))?;
        if config.node.len() < 2 {
            return Err(ConfigError::TooFewNodes(shown));
        }
        Ok(config)
    }

    /// Writes it to `path`.
    pub fn write(&self, path: &Path) -> Result<(), ConfigError> {
        let shown = path.display().to_string();
        let text =
            toml::to_string(self).map_err(|e| ConfigError::Write(shown.clone(), e.to_string()))?;
        std::fs::write(path, text).map_err(|e| ConfigError::Write(shown, e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configuration_names_nodes_routes_and_shapes() -> anyhow::Result<()> {
        let text = r#"
            control = "127.0.0.1:7700"
            [[node]]
            name = "use1"
            address = "127.0.0.1:7001"
            [[node]]
            name = "euw1"
            address = "127.0.0.1:7002"
            [[route]]
            from = "use1"
            to = "euw1"
            listen = "127.0.0.1:7101"
            [[shape]]
            from = "use1"
            to = "euw1"
            both = true
            latency_ms = 37.5
            loss = 0.01
        "#;
        let config: NetemConfig = toml::from_str(text)?;
        assert_eq!(config.node.len(), 2);
        assert_eq!(config.route[0].listen, Some("127.0.0.1:7101".parse()?));
        assert!(config.shape[0].both);
        assert_eq!(config.shape[0].change.latency_ms, Some(37.5));
        assert!(toml::from_str::<NetemConfig>(&text.replace("loss", "lost")).is_err());
        Ok(())
    }
}
