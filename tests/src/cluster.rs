//! A cluster on loopback: a certificate authority with one certificate per replica and client,
//! one [`NodeProcess`] per replica configured with the others as peers, in a temporary
//! directory removed (after every process is killed) when the cluster is dropped. The same
//! configurations serve in-process runtimes ([`NodeConfig::runtime`]).

use crate::node_process::{NodeProcess, START_ATTEMPTS};
use meridian_config::cluster_file::ClusterFile;
use meridian_config::dev_certs::{self, CertsRequest};
use meridian_config::local_cluster;
use meridian_config::node_config::NodeConfig;
use meridian_core::routing::Location;
use meridian_runtime::client::Client;
use meridian_runtime::TlsFiles;
use std::path::{Path, PathBuf};

/// Replicas, clients and certificates of a cluster, and its nodes.
pub struct Cluster {
    /// Cluster id.
    pub id: String,
    /// One per replica, in the order given.
    pub nodes: Vec<NodeProcess>,
    clients: Vec<String>,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Writes certificates for `replicas` (name, region) and `clients` (`NAME[:ROLE]`) into a
    /// new temporary directory and describes one node per replica, to be run by the `meridian`
    /// executable beside this process's ([`crate::node_process::daemon_path`]; another with
    /// [`Cluster::run_with`]) or in this process;
    /// nothing starts until [`Cluster::start_all`].
    pub fn prepare(
        id: &str,
        replicas: &[(&str, &str)],
        clients: &[&str],
    ) -> anyhow::Result<Cluster> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("meridian-{id}-"))
            .tempdir()?;
        let unbound = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let bin = crate::node_process::daemon_path()?;
        let configs = local_cluster::prepare(dir.path(), id, replicas, clients, unbound)?;
        let nodes = configs
            .into_iter()
            .map(|config| {
                let path = dir.path().join(format!("{}.toml", config.name));
                NodeProcess::new(&bin, config, path)
            })
            .collect();
        Ok(Cluster {
            id: id.into(),
            nodes,
            clients: clients
                .iter()
                .map(|c| c.split(':').next().unwrap_or(c).to_string())
                .collect(),
            dir,
        })
    }

    /// Runs the nodes with `bin`, a `meridian` executable (a test's `CARGO_BIN_EXE_meridian`).
    pub fn run_with(&mut self, bin: &Path) {
        for node in &mut self.nodes {
            node.bin = bin.to_owned();
        }
    }

    /// Changes every node's configuration (limits, access, durability...).
    pub fn configure(&mut self, mut change: impl FnMut(&mut NodeConfig)) {
        for node in &mut self.nodes {
            change(&mut node.config);
        }
    }

    /// Gives every node free loopback ports and names the others, at their new addresses, as
    /// its peers.
    pub fn pick_ports(&mut self) -> anyhow::Result<()> {
        for node in &mut self.nodes {
            node.pick_ports()?;
        }
        self.wire_peers();
        Ok(())
    }

    /// Names every other node as each node's peer, at the address it advertises (its
    /// `advertise`, or its `listen`).
    pub fn wire_peers(&mut self) {
        let mut configs: Vec<NodeConfig> = self.nodes.iter().map(|n| n.config.clone()).collect();
        local_cluster::wire_peers(&mut configs);
        for (node, config) in self.nodes.iter_mut().zip(configs) {
            node.config.peers = config.peers;
        }
    }

    /// Starts every node on fresh ports and returns their ready lines; when one cannot start
    /// (a port taken in between), stops them all and tries again on new ports.
    pub fn start_all(&mut self) -> anyhow::Result<Vec<String>> {
        let mut last = Err(anyhow::anyhow!("never started"));
        for _ in 0..START_ATTEMPTS {
            for node in &mut self.nodes {
                node.kill();
            }
            self.pick_ports()?;
            last = self.nodes.iter_mut().map(NodeProcess::try_start).collect();
            if last.is_ok() {
                break;
            }
        }
        last
    }

    /// Places the link emulator between every pair of nodes (after their ports are picked):
    /// each node's peer addresses become relays whose shapes the returned emulator sets, per
    /// directed link. Clients still reach the nodes directly: each node advertises its own
    /// address, which its peers pass on in their region tables. Start the nodes with
    /// [`Cluster::start_each`], which keeps their ports.
    pub async fn emulate_links(&mut self, seed: u64) -> anyhow::Result<meridian_netem::Netem> {
        let nodes = self
            .nodes
            .iter()
            .map(|n| meridian_netem::NodeAddr {
                name: n.config.name.clone(),
                address: n.config.listen,
            })
            .collect();
        let netem = meridian_netem::Netem::full_mesh(nodes, seed).await?;
        for node in &mut self.nodes {
            node.config.advertise = Some(node.config.listen);
            let from = node.config.name.clone();
            for peer in &mut node.config.peers {
                peer.address = netem
                    .route(&from, &peer.name)
                    .ok_or_else(|| anyhow::anyhow!("no relay from {from} to {}", peer.name))?;
            }
        }
        Ok(netem)
    }

    /// Starts every node on the ports it has; returns their ready lines.
    pub fn start_each(&mut self) -> anyhow::Result<Vec<String>> {
        self.nodes.iter_mut().map(NodeProcess::start).collect()
    }

    /// Picks ports, places the link emulator between every pair of nodes
    /// ([`Cluster::emulate_links`]) and starts them all; when one cannot start (a relay or
    /// another socket took its port in between), stops everything and tries again on new
    /// ports. Blocks while nodes start.
    pub async fn start_with_emulator(
        &mut self,
        seed: u64,
    ) -> anyhow::Result<meridian_netem::Netem> {
        let mut last = anyhow::anyhow!("never started");
        for _ in 0..START_ATTEMPTS {
            for node in &mut self.nodes {
                node.kill();
            }
            self.pick_ports()?;
            let netem = self.emulate_links(seed).await?;
            let started = tokio::task::block_in_place(|| -> anyhow::Result<()> {
                for node in &mut self.nodes {
                    node.try_start()?;
                }
                Ok(())
            });
            match started {
                Ok(()) => return Ok(netem),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Waits until every running node has a link to every other running node.
    pub fn wait_linked(&self, timeout: std::time::Duration) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        let running: Vec<&NodeProcess> = self.nodes.iter().filter(|n| n.is_running()).collect();
        loop {
            let mut missing = Vec::new();
            for node in &running {
                let status = node.health()?;
                let up = status.peers.iter().filter(|p| p.connected).count();
                if up + 1 < running.len() {
                    missing.push(format!("{} has {up} links", node.name()));
                }
            }
            if missing.is_empty() {
                return Ok(());
            }
            anyhow::ensure!(
                started.elapsed() < timeout,
                "links not up after {timeout:?}: {}",
                missing.join(", ")
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// The cluster's directory (certificates, configurations, data).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The directory `meridian certs init` would have written.
    pub fn certs_dir(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    /// The files of client `name`.
    pub fn client_tls(&self, name: &str) -> TlsFiles {
        dev_certs::client_files(&self.certs_dir(), name)
    }

    /// The files of replica `name`.
    pub fn replica_tls(&self, name: &str) -> TlsFiles {
        dev_certs::replica_files(&self.certs_dir(), name)
    }

    /// Issues more certificates from this cluster's CA (`replicas` as `NAME:REGION`).
    pub fn add_certs(&self, replicas: &[&str], clients: &[&str]) -> anyhow::Result<()> {
        dev_certs::add(&CertsRequest {
            dir: self.certs_dir(),
            cluster: self.id.clone(),
            replicas: replicas.iter().map(|r| r.to_string()).collect(),
            clients: clients.iter().map(|c| c.to_string()).collect(),
        })?;
        Ok(())
    }

    /// The cluster file of client `name` (every node a seed, with its location), for a
    /// client at `near`.
    pub fn cluster_file(&self, name: &str, near: Option<Location>) -> ClusterFile {
        let configs: Vec<NodeConfig> = self.nodes.iter().map(|n| n.config.clone()).collect();
        let mut file = local_cluster::cluster_file(self.dir.path(), &configs, name, near);
        file.cluster = self.id.clone();
        file
    }

    /// A connection to node `i` as the first client named at [`Cluster::prepare`].
    pub async fn client(&self, i: usize) -> anyhow::Result<Client> {
        let Some(name) = self.clients.first() else {
            anyhow::bail!("the cluster has no client certificate");
        };
        self.client_as(i, name).await
    }

    /// A connection to node `i` as client `name`.
    pub async fn client_as(&self, i: usize, name: &str) -> anyhow::Result<Client> {
        self.nodes[i].connect(&self.client_tls(name)).await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Before the directory goes.
        for node in &mut self.nodes {
            node.kill();
        }
    }
}
