//! A cluster on loopback, laid out one way for `meridian local-cluster` and the test kit:
//! certificates in `DIR/certs` (a CA, one certificate per replica and client), one node
//! configuration per replica (data in `DIR/data-NAME`, every other replica a peer) and a
//! client's cluster file naming every node as a seed. Ports are picked on 127.0.0.1 below the
//! kernel's ephemeral range (32768 and up on Linux): the sockets clients, relays and scrapers
//! open bind there, and one of them taking a stopped node's port would keep it from
//! restarting on it. A port is free when picked; another socket could take it before the
//! node binds it, so starts are retried on new ports.

use crate::cluster_file::{ClusterFile, SeedEntry};
use crate::dev_certs::{self, CertsRequest};
use crate::node_config::NodeConfig;
use meridian_core::routing::Location;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Ports picked from here (below Linux's default ephemeral range).
const PICKED: std::ops::Range<u16> = 20_000..32_000;

/// Tries random ports of [`PICKED`] with `bind` (falling back to an ephemeral port).
fn pick<S>(
    bind: impl Fn(SocketAddr) -> std::io::Result<S>,
    addr: impl Fn(&S) -> std::io::Result<SocketAddr>,
) -> std::io::Result<SocketAddr> {
    let mut rng = fastrand::Rng::new();
    for _ in 0..64 {
        let candidate = SocketAddr::from(([127, 0, 0, 1], rng.u16(PICKED)));
        if let Ok(socket) = bind(candidate) {
            return addr(&socket);
        }
    }
    let socket = bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    addr(&socket)
}

/// A loopback UDP address no socket holds now (a node's QUIC endpoint, a relay).
pub fn free_udp() -> std::io::Result<SocketAddr> {
    pick(std::net::UdpSocket::bind, std::net::UdpSocket::local_addr)
}

/// A loopback TCP address no socket holds now (a node's metrics endpoint, a control port).
pub fn free_tcp() -> std::io::Result<SocketAddr> {
    pick(
        std::net::TcpListener::bind,
        std::net::TcpListener::local_addr,
    )
}

/// Where a cluster's certificates are under its directory.
pub fn certs_dir(dir: &Path) -> PathBuf {
    dir.join("certs")
}

/// Writes the CA and certificates of `replicas` (name, region) and `clients` (`NAME[:ROLE]`)
/// under `dir`, and returns one node configuration per replica (data in `DIR/data-NAME`,
/// listening on `listen`, which callers replace with a free port), every other replica its
/// peer.
pub fn prepare(
    dir: &Path,
    cluster: &str,
    replicas: &[(&str, &str)],
    clients: &[&str],
    listen: SocketAddr,
) -> Result<Vec<NodeConfig>, dev_certs::CertsError> {
    let certs = certs_dir(dir);
    dev_certs::init(&CertsRequest {
        dir: certs.clone(),
        cluster: cluster.into(),
        replicas: replicas.iter().map(|(n, r)| format!("{n}:{r}")).collect(),
        clients: clients.iter().map(|c| c.to_string()).collect(),
    })?;
    let mut configs: Vec<NodeConfig> = replicas
        .iter()
        .map(|(name, region)| {
            NodeConfig::new(
                cluster,
                name,
                region,
                dir.join(format!("data-{name}")),
                listen,
                dev_certs::replica_files(&certs, name),
            )
        })
        .collect();
    wire_peers(&mut configs);
    Ok(configs)
}

/// Names every other node as each node's peer, at the address it advertises (its
/// `advertise`, or its `listen`).
pub fn wire_peers(configs: &mut [NodeConfig]) {
    let all: Vec<_> = configs.iter().map(NodeConfig::as_peer).collect();
    for config in configs.iter_mut() {
        config.peers = all
            .iter()
            .filter(|p| p.name != config.name)
            .cloned()
            .collect();
    }
}

/// The cluster file of client `client` (its certificate under `DIR/certs`), every node a
/// seed at the address it advertises, for a client at `near`.
pub fn cluster_file(
    dir: &Path,
    configs: &[NodeConfig],
    client: &str,
    near: Option<Location>,
) -> ClusterFile {
    ClusterFile {
        cluster: configs
            .first()
            .map(|c| c.cluster.clone())
            .unwrap_or_default(),
        certs: certs_dir(dir).join(format!("client-{client}")),
        client: client.into(),
        near,
        seeds: configs
            .iter()
            .map(|c| SeedEntry {
                name: c.name.clone(),
                region: c.region.clone(),
                address: c.advertise.unwrap_or(c.listen),
                location: c.location,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_picked_below_the_ephemeral_range_and_every_node_names_the_others() {
        let port = free_udp().expect("a free port").port();
        // The fallback (an ephemeral port) only when 64 random picks were all taken.
        assert!(PICKED.contains(&port), "{port}");
        let dir = tempfile::tempdir().expect("a directory");
        let unbound = SocketAddr::from(([127, 0, 0, 1], 0));
        let configs = prepare(
            dir.path(),
            "c",
            &[("a", "r1"), ("b", "r2"), ("c", "r3")],
            &["dev:write"],
            unbound,
        )
        .expect("prepared");
        for c in &configs {
            assert_eq!(c.peers.len(), 2);
            assert!(c.peers.iter().all(|p| p.name != c.name));
            assert_eq!(c.data_dir, dir.path().join(format!("data-{}", c.name)));
        }
        let file = cluster_file(dir.path(), &configs, "dev", None);
        assert_eq!((file.cluster.as_str(), file.seeds.len()), ("c", 3));
        assert!(file.certs.ends_with("certs/client-dev"));
    }
}
