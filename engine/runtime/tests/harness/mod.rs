//! An in-process cluster: one `Runtime` per region in this process, each over a real engine in
//! a temporary directory, linked by real QUIC on loopback with mutual TLS (development
//! certificates), and routed clients of it. No processes, no configuration files: the
//! runtime's settings are a plain `RuntimeConfig`.

#![allow(dead_code, clippy::unwrap_used)]

use meridian::{Config, Engine};
use meridian_client::client::Client;
use meridian_client::client_proto::{ClientRequest, ClientResponse};
use meridian_client::routed::{RoutedClient, RoutedConfig, Seed};
use meridian_client::tls::replica_dns_name;
use meridian_client::TlsFiles;
use meridian_config::dev_certs::{self, CertsRequest};
use meridian_core::routing::Location;
use meridian_runtime::{member_id_for, PeerSpec, Runtime, RuntimeConfig, RuntimeError};
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// The cluster's id.
pub const CLUSTER: &str = "harness";
/// The client certificates made: a writer, and an operator (admin role, for `isolate`).
pub const CLIENT: &str = "t";
pub const ADMIN: &str = "ops";

/// us-east (Ashburn) and eu-west (Dublin), as `(name, region, latitude, longitude)`.
pub const TWO_REGIONS: [(&str, &str, f64, f64); 2] = [
    ("use1", "us-east", 39.0, -77.5),
    ("euw1", "eu-west", 53.3, -6.3),
];

/// Near eu-west.
pub fn paris() -> Option<Location> {
    Location::new(48.85, 2.35)
}

/// Near us-east.
pub fn new_york() -> Option<Location> {
    Location::new(40.7, -74.0)
}

/// One region: its engine and, while it runs, its runtime.
pub struct Node {
    pub config: RuntimeConfig,
    pub engine: Engine,
    pub runtime: Option<Runtime>,
}

/// Regions running in this process.
pub struct Harness {
    /// Certificates and data directories (removed on drop).
    pub dir: tempfile::TempDir,
    pub nodes: Vec<Node>,
}

/// A random number from the standard library's hasher keys (no RNG crate needed).
fn random() -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// A loopback UDP address no socket holds now, below the kernel's ephemeral range (where the
/// clients' own sockets bind); another socket may still take it before the runtime binds,
/// which is why starts are retried.
fn free_udp() -> SocketAddr {
    for _ in 0..64 {
        let port = 20_000 + (random() % 12_000) as u16;
        let candidate = SocketAddr::from(([127, 0, 0, 1], port));
        if std::net::UdpSocket::bind(candidate).is_ok() {
            return candidate;
        }
    }
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap()
}

impl Harness {
    /// Starts `regions` (`(name, region, latitude, longitude)`), each linked to the others,
    /// and waits until every link is up.
    pub async fn start(regions: &[(&str, &str, f64, f64)]) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        dev_certs::init(&CertsRequest {
            dir: certs.clone(),
            cluster: CLUSTER.into(),
            replicas: regions
                .iter()
                .map(|(n, r, _, _)| format!("{n}:{r}"))
                .collect(),
            clients: vec![format!("{CLIENT}:write"), format!("{ADMIN}:admin")],
        })
        .unwrap();
        let mut nodes: Vec<Node> = regions
            .iter()
            .map(|&(name, region, lat, lon)| {
                let engine = Engine::open(
                    dir.path().join(name),
                    Config {
                        member_id: Some(member_id_for(CLUSTER, name, 0)),
                        ..Config::default()
                    },
                )
                .unwrap();
                let config = RuntimeConfig {
                    cluster: CLUSTER.into(),
                    name: name.into(),
                    region: region.into(),
                    incarnation: 0,
                    listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                    advertise: None,
                    location: Location::new(lat, lon),
                    peers: Vec::new(),
                    tls: dev_certs::replica_files(&certs, name),
                    disable_gso: false,
                    client_requests_per_second: 100_000,
                    client_burst: 10_000,
                    replica_client_role: None,
                    replication: Default::default(),
                    active_passive: Default::default(),
                    protocols: Default::default(),
                };
                Node {
                    config,
                    engine,
                    runtime: None,
                }
            })
            .collect();
        // Ports are picked, then bound by the runtimes: a port taken in between fails the
        // start (before the engine is touched), and every region starts again on new ports.
        for attempt in 1.. {
            for node in &mut nodes {
                node.config.listen = free_udp();
            }
            let peers: Vec<PeerSpec> = nodes
                .iter()
                .map(|n| PeerSpec {
                    name: n.config.name.clone(),
                    region: n.config.region.clone(),
                    address: n.config.listen,
                    incarnation: 0,
                    location: n.config.location,
                })
                .collect();
            for node in &mut nodes {
                node.config.peers = peers
                    .iter()
                    .filter(|p| p.name != node.config.name)
                    .cloned()
                    .collect();
            }
            let mut failed = None;
            for node in &mut nodes {
                match Runtime::start(node.engine.clone(), node.config.clone()).await {
                    Ok(runtime) => node.runtime = Some(runtime),
                    Err(RuntimeError::Io(e)) if attempt < 5 => {
                        failed = Some(e);
                        break;
                    }
                    Err(e) => panic!("{}: {e}", node.config.name),
                }
            }
            match failed {
                None => break,
                Some(e) => {
                    eprintln!("start attempt {attempt}: {e}; again on other ports");
                    for node in &mut nodes {
                        if let Some(runtime) = node.runtime.take() {
                            runtime.shutdown().await;
                        }
                    }
                }
            }
        }
        let harness = Harness { dir, nodes };
        harness.wait_linked(Duration::from_secs(20)).await;
        harness
    }

    fn certs(&self) -> std::path::PathBuf {
        self.dir.path().join("certs")
    }

    /// The client certificate `name`.
    pub fn client_tls(&self, name: &str) -> TlsFiles {
        dev_certs::client_files(&self.certs(), name)
    }

    /// Waits until every running region has a link to every other running one.
    pub async fn wait_linked(&self, timeout: Duration) {
        let started = Instant::now();
        let running: Vec<&Runtime> = self
            .nodes
            .iter()
            .filter_map(|n| n.runtime.as_ref())
            .collect();
        loop {
            let linked = running.iter().all(|r| {
                let up = r.status().peers.iter().filter(|p| p.connected).count();
                up + 1 >= running.len()
            });
            if linked {
                return;
            }
            assert!(
                started.elapsed() < timeout,
                "links not up after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every region as a seed.
    pub fn seeds(&self) -> Vec<Seed> {
        self.nodes
            .iter()
            .map(|n| Seed {
                name: n.config.name.clone(),
                region: n.config.region.clone(),
                address: n.config.listen,
            })
            .collect()
    }

    /// A routed client's settings: the writer's certificate, at `near`, giving up on a region
    /// after 2 s, asking the next one after 300 ms of session wait.
    pub fn routed_config(&self, near: Option<Location>) -> RoutedConfig {
        let mut config = RoutedConfig::new(CLUSTER, self.seeds(), self.client_tls(CLIENT));
        config.near = near;
        config.request_timeout = Duration::from_secs(2);
        config.session_wait_ms = 300;
        config
    }

    /// A routed client at `near`, once its nearest region comes first.
    pub async fn routed(&self, near: Option<Location>, nearest: &str) -> RoutedClient {
        let client = RoutedClient::connect(self.routed_config(near))
            .await
            .unwrap();
        for _ in 0..40 {
            if client.route().region == nearest {
                return client;
            }
            client.measure_regions().await;
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{nearest} never came first: {:?}", client.route());
    }

    /// The index of the node of `region`.
    pub fn index(&self, region: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.config.region == region)
            .unwrap()
    }

    /// Cuts (or restores) `region`'s replication links, as `meridian admin isolate` does.
    pub async fn isolate(&self, region: &str, isolated: bool) {
        let node = &self.nodes[self.index(region)];
        let server_name = replica_dns_name(CLUSTER, &node.config.name, region);
        let ops = Client::connect(node.config.listen, &server_name, &self.client_tls(ADMIN))
            .await
            .unwrap();
        let answer = ops
            .request(&ClientRequest::Isolate { isolated })
            .await
            .unwrap();
        assert!(matches!(answer, ClientResponse::Done { .. }), "{answer:?}");
        ops.close().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        let runtime = node.runtime.as_ref().unwrap();
        while runtime.status().isolated != isolated
            || (isolated && runtime.status().peers.iter().any(|p| p.connected))
        {
            assert!(Instant::now() < deadline, "{region} isolated: {isolated}?");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops `region`'s runtime (its engine stays open, in this process).
    pub async fn stop(&mut self, region: &str) {
        let i = self.index(region);
        if let Some(runtime) = self.nodes[i].runtime.take() {
            runtime.shutdown().await;
        }
    }

    /// Stops every runtime.
    pub async fn shutdown(mut self) {
        for node in &mut self.nodes {
            if let Some(runtime) = node.runtime.take() {
                runtime.shutdown().await;
            }
        }
    }

    /// The data directory of `region`.
    pub fn data_dir(&self, region: &str) -> std::path::PathBuf {
        let name = &self.nodes[self.index(region)].config.name;
        Path::new(self.dir.path()).join(name)
    }
}
