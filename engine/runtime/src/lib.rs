//! The server runtime: the engine's async layer. A quinn endpoint with mutual TLS carries
//! replication links (driving `replication::Replicator` on a dedicated thread) and client
//! requests (the protocol, the transport and the clients are `meridian-client`'s). It takes a
//! plain [`RuntimeConfig`]: a node's configuration file and the development certificates are
//! `meridian-config`'s, so neither toml nor rcgen is in this crate's tree.
//!
//! Links: the replica whose name sorts first dials, the other accepts, so each pair has one
//! connection; a dialer reconnects with exponential backoff and jitter. An inbound replica must
//! present a certificate naming one of the configured peers. Shutdown: stop accepting, close
//! links, stop the replicator, flush the engine.

mod actor;
mod link_queue;
mod links;
mod primary;
pub mod regions;
mod requests_in_flight;
mod service;
pub mod tls;

pub use meridian_client::feed;
/// Compatibility paths: the wire protocol and the client SDK moved to `meridian-client`; they
/// stay reachable here as `meridian_runtime::{client, client_proto, protocols, read_json,
/// routed}` (and `tls`, which adds the accepting side to `meridian_client::tls`). New code
/// names `meridian_client`. (`node_config`, `cluster_file` and `dev_certs` moved to
/// `meridian-config`, which depends on this crate: their old paths are kept by the facade
/// `meridian-runtime-compat`, engine/runtime/compat.)
pub use meridian_client::{client, client_proto, protocols, read_json, routed};

use meridian::{Engine, MemberId, RandomSource};
use meridian_client::client_proto::{NodeStatus, PeerStatus};
use meridian_core::model::digest::Fnv;
use meridian_core::replication::{ReplicationConfig, Replicator};
use meridian_core::routing::Location;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

pub use tls::TlsFiles;

/// Socket buffer asked for (the kernel caps it at `net.core.rmem_max` / `wmem_max`). The
/// default (about 200 KiB) overflows when the receiving threads are briefly descheduled while
/// a peer streams, and every datagram dropped there costs QUIC a loss recovery.
const UDP_BUFFER_BYTES: usize = 8 << 20;

/// The endpoint's UDP socket, bound to `addr`, with large kernel buffers.
fn udp_socket(addr: std::net::SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    // Best effort: a smaller buffer than asked for still works.
    let _ = socket.set_recv_buffer_size(UDP_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(UDP_BUFFER_BYTES);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Events queued for the replicator before link tasks wait.
const EVENT_QUEUE: usize = 4_096;
const TICK_MS: u64 = 50;

/// Errors starting or running the runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// Certificates or keys could not be loaded or used.
    #[error("tls: {0}")]
    Tls(String),
    /// Socket trouble.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The configuration is inconsistent.
    #[error("config: {0}")]
    Config(String),
}

impl From<tls::TlsError> for RuntimeError {
    fn from(e: tls::TlsError) -> RuntimeError {
        RuntimeError::Tls(e.0)
    }
}

/// A peer replica.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerSpec {
    /// Replica name (a DNS label).
    pub name: String,
    /// Region name (a DNS label).
    pub region: String,
    /// Address of its QUIC endpoint.
    pub address: SocketAddr,
    /// Its incarnation (bumped when it comes back with an empty disk).
    pub incarnation: u64,
    /// Where its region is, if known.
    pub location: Option<Location>,
}

/// Settings of a running replica.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Cluster id.
    pub cluster: String,
    /// This replica's name.
    pub name: String,
    /// This replica's region.
    pub region: String,
    /// This replica's incarnation.
    pub incarnation: u64,
    /// Address to bind.
    pub listen: SocketAddr,
    /// Where clients and peers reach this replica, when `listen` is not it (a wildcard or
    /// translated address).
    pub advertise: Option<SocketAddr>,
    /// Where this replica's region is.
    pub location: Option<Location>,
    /// The other replicas.
    pub peers: Vec<PeerSpec>,
    /// Certificate files.
    pub tls: TlsFiles,
    /// Turn off UDP segmentation offload (some containers advertise it and then fail).
    pub disable_gso: bool,
    /// Client requests per second per client identity.
    pub client_requests_per_second: u32,
    /// Burst allowed above that rate.
    pub client_burst: u32,
    /// The role a replica's certificate gets when it connects as a client (`None`: refused).
    pub replica_client_role: Option<tls::Role>,
    /// Protocol tunables (cluster, region and members are filled in from the above).
    pub replication: ReplicationConfig,
    /// Active-passive mode and its lease.
    pub active_passive: ActivePassiveConfig,
    /// The newest protocol versions spoken (`protocols`).
    pub protocols: protocols::Protocols,
}

/// Active-passive mode: one primary region takes the writes while it holds a lease a majority
/// of replicas granted; the others serve reads and answer writes with `NotPrimary`. (A node's
/// configuration file has it as its `[active_passive]` section, `meridian-config`.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActivePassiveConfig {
    /// The mode at start, unless an operator switched it since (the engine keeps the switch).
    pub enabled: bool,
    /// Replica names in the order they take over when there is no primary (empty: every
    /// replica, by name); a replica not listed becomes primary only by promotion.
    pub successors: Vec<String>,
    /// How long a replica's promise to the primary lasts, in milliseconds.
    pub lease_ms: u64,
    /// After how long without a primary a successor takes over, in milliseconds; 0: only a
    /// promotion makes a primary.
    pub failover_after_ms: u64,
    /// Bound on any node's clock-rate error, in parts per million (10,000 = 1%): a primary
    /// stops that much earlier than the promises it holds.
    pub drift_ppm: u64,
}

impl Default for ActivePassiveConfig {
    /// Off; a 4 s lease, failover after 6 s without a primary, 1% clock-rate error.
    fn default() -> Self {
        ActivePassiveConfig {
            enabled: false,
            successors: Vec::new(),
            lease_ms: 4_000,
            failover_after_ms: 6_000,
            drift_ppm: 10_000,
        }
    }
}

/// The member id a replica name gets in a cluster: stable across restarts, new with each
/// incarnation (a replica that lost its disk comes back under a new id).
pub fn member_id_for(cluster: &str, name: &str, incarnation: u64) -> MemberId {
    let mut h = Fnv::default();
    h.write(cluster.as_bytes());
    h.write(&[0]);
    h.write(name.as_bytes());
    h.write_u64(incarnation);
    MemberId(h.0.max(1))
}

/// Reads a running replica's status (see `Runtime::status_handle`).
#[derive(Clone)]
pub struct StatusHandle(Arc<Mutex<NodeStatus>>);

impl StatusHandle {
    /// The latest status snapshot.
    pub fn get(&self) -> NodeStatus {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// Answers route and region-table questions while a runtime runs (see
/// `Runtime::route_handle`).
#[derive(Clone)]
pub struct RouteHandle(Arc<regions::RegionBoard>);

impl RouteHandle {
    /// Where a client at `near` should go, as this replica sees the cluster.
    pub fn route(&self, near: Option<&Location>) -> client_proto::RouteAnswer {
        self.0.route(near)
    }

    /// Every replica of the cluster, this one first.
    pub fn table(&self) -> client_proto::RegionTable {
        self.0.table()
    }
}

/// A running replica: endpoint, link tasks, replicator thread.
pub struct Runtime {
    endpoint: quinn::Endpoint,
    regions: Arc<regions::RegionBoard>,
    shutdown: watch::Sender<bool>,
    events: mpsc::Sender<Event>,
    actor: Option<std::thread::JoinHandle<()>>,
    engine: Engine,
    status: Arc<Mutex<NodeStatus>>,
    /// Wakes the replicator after local commits, for as long as this runtime lives.
    _commit_wake: meridian::Subscription,
}

use actor::Event;

/// A `Runtime` on threads of its own, for applications that do not run tokio: open an
/// `Engine`, start this, and the engine replicates by itself until `shutdown` (or drop).
pub struct BackgroundRuntime {
    tokio: Option<tokio::runtime::Runtime>,
    runtime: Option<Runtime>,
}

impl BackgroundRuntime {
    /// Starts replicating `engine` on two runtime threads (plus the replicator's).
    pub fn start(engine: Engine, config: RuntimeConfig) -> Result<BackgroundRuntime, RuntimeError> {
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("meridian-runtime")
            .enable_all()
            .build()?;
        let runtime = tokio.block_on(Runtime::start(engine, config))?;
        Ok(BackgroundRuntime {
            tokio: Some(tokio),
            runtime: Some(runtime),
        })
    }

    /// The latest status snapshot.
    pub fn status(&self) -> NodeStatus {
        self.runtime
            .as_ref()
            .map(Runtime::status)
            .unwrap_or_default()
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, RuntimeError> {
        match &self.runtime {
            Some(r) => r.local_addr(),
            None => Err(RuntimeError::Config("runtime stopped".into())),
        }
    }

    /// Stops replicating (as `Runtime::shutdown`) and the threads.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let (Some(tokio), Some(runtime)) = (self.tokio.take(), self.runtime.take()) {
            tokio.block_on(runtime.shutdown());
            tokio.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

impl Drop for BackgroundRuntime {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Runtime {
    /// Binds the endpoint and starts replicating `engine` with the configured peers.
    pub async fn start(engine: Engine, config: RuntimeConfig) -> Result<Runtime, RuntimeError> {
        let me = member_id_for(&config.cluster, &config.name, config.incarnation);
        if engine.member_id() != me {
            return Err(RuntimeError::Config(format!(
                "the data directory holds replica {}, but {:?} incarnation {} is {me}",
                engine.member_id(),
                config.name,
                config.incarnation
            )));
        }
        let server = tls::server_config(&config.tls, config.disable_gso, &config.protocols)?;
        let dial = tls::client_config_offering(
            &config.tls,
            config.protocols.replication_alpns(),
            config.disable_gso,
            None,
        )?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server),
            udp_socket(config.listen)?,
            Arc::new(quinn::TokioRuntime),
        )?;

        let mut members = vec![me];
        members.extend(
            config
                .peers
                .iter()
                .map(|p| member_id_for(&config.cluster, &p.name, p.incarnation)),
        );
        let repl_config = ReplicationConfig {
            cluster: config.cluster.clone(),
            region: config.region.clone(),
            members,
            session: meridian::OsRandom.next_u64(),
            about: (config.location.is_some() || config.advertise.is_some()).then(|| {
                meridian_core::replication::RegionAbout {
                    location: config.location,
                    address: config.advertise.map(|a| a.to_string()),
                }
            }),
            ..config.replication.clone()
        };
        let origin = engine.origin_status();
        // A mode an operator switched to outlives restarts; else the configuration's.
        let active_passive = match engine.setting(actor::MODE_SETTING) {
            Ok(Some(kept)) => kept == actor::mode_name(true).as_bytes(),
            _ => config.active_passive.enabled,
        };
        let status = Arc::new(Mutex::new(NodeStatus {
            cluster: config.cluster.clone(),
            name: config.name.clone(),
            region: config.region.clone(),
            replica: Some(me),
            origin: Some(origin.origin),
            epoch: origin.epoch,
            writable: origin.writable,
            origin_note: origin.note,
            peers: config
                .peers
                .iter()
                .map(|p| PeerStatus {
                    name: p.name.clone(),
                    region: p.region.clone(),
                    ..PeerStatus::default()
                })
                .collect(),
            mode: actor::mode_name(active_passive).into(),
            health: "ok".into(),
            ..NodeStatus::default()
        }));

        let (events, rx) = mpsc::channel(EVENT_QUEUE);
        let pending = Arc::new(AtomicBool::new(false));
        let commit_wake = {
            let events = events.clone();
            let pending = pending.clone();
            let replication = engine.replication();
            replication.attach().map_err(|e| {
                RuntimeError::Config(format!("marking the directory replicated: {e}"))
            })?;
            replication.on_commit(move || {
                if !pending.swap(true, Ordering::SeqCst)
                    && events.try_send(Event::LocalWrite).is_err()
                {
                    pending.store(false, Ordering::SeqCst);
                }
            })
        };
        let regions = Arc::new(regions::RegionBoard::new(&config, endpoint.local_addr()?));
        let primary_board = Arc::new(primary::PrimaryBoard::new(active_passive));
        let cluster_members: Vec<primary::Member> = std::iter::once(primary::Member {
            id: me,
            name: config.name.clone(),
        })
        .chain(config.peers.iter().map(|p| primary::Member {
            id: member_id_for(&config.cluster, &p.name, p.incarnation),
            name: p.name.clone(),
        }))
        .collect();
        let actor = {
            let shared = actor::Shared {
                status: status.clone(),
                regions: regions.clone(),
                primary: primary_board.clone(),
                members: cluster_members.clone(),
                lease: primary::lease_config(&config.active_passive, &cluster_members),
                active_passive,
            };
            let engine = engine.replication();
            let repl = Replicator::new(me, repl_config);
            std::thread::Builder::new()
                .name(format!("replicator-{}", config.name))
                .spawn(move || actor::run(engine, repl, rx, pending, shared))?
        };

        let (shutdown, shutdown_rx) = watch::channel(false);
        let (isolation, isolated) = watch::channel(false);
        let replicas = std::iter::once((config.name.clone(), config.region.clone()))
            .chain(
                config
                    .peers
                    .iter()
                    .map(|p| (p.name.clone(), p.region.clone())),
            )
            .map(|(name, region)| {
                let dns = tls::replica_dns_name(&config.cluster, &name, &region);
                (name, dns)
            })
            .collect();
        let service = Arc::new(service::Service::new(
            engine.clone(),
            service::ServiceConfig {
                cluster: config.cluster.clone(),
                replicas,
                replica_role: config.replica_client_role,
                per_second: config.client_requests_per_second,
                burst: config.client_burst,
            },
            status.clone(),
            regions.clone(),
            primary_board,
            events.clone(),
            isolation,
        ));
        let ctx = Arc::new(links::LinkCtx {
            cluster: config.cluster.clone(),
            peers: config.peers.clone(),
            events: events.clone(),
            next_peer: AtomicU32::new(0),
            dial,
            protocols: config.protocols,
            service,
            shutdown: shutdown_rx.clone(),
            isolated,
        });
        tokio::spawn(links::accept_loop(endpoint.clone(), ctx.clone()));
        for peer in config.peers.iter().filter(|p| config.name < p.name) {
            tokio::spawn(links::dial_loop(
                endpoint.clone(),
                ctx.clone(),
                peer.clone(),
            ));
        }
        {
            let events = events.clone();
            let mut stop = shutdown_rx;
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_millis(TICK_MS));
                loop {
                    tokio::select! {
                        _ = every.tick() => {
                            if events.try_send(Event::Tick).is_err() && events.is_closed() {
                                return;
                            }
                        }
                        _ = stop.changed() => return,
                    }
                }
            });
        }
        tracing::info!(replica = %config.name, region = %config.region, id = %me, addr = %endpoint.local_addr()?, "runtime started");
        Ok(Runtime {
            endpoint,
            regions,
            shutdown,
            events,
            actor: Some(actor),
            engine,
            status,
            _commit_wake: commit_wake,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, RuntimeError> {
        Ok(self.endpoint.local_addr()?)
    }

    /// The latest status snapshot.
    pub fn status(&self) -> NodeStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// A handle that reads the status while the runtime runs (and keeps nothing else of it
    /// alive: `shutdown` still owns the runtime).
    pub fn status_handle(&self) -> StatusHandle {
        StatusHandle(self.status.clone())
    }

    /// A handle answering routes from this replica's view of the cluster.
    pub fn route_handle(&self) -> RouteHandle {
        RouteHandle(self.regions.clone())
    }

    /// Stops accepting, closes links, stops the replicator, flushes the engine.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        self.endpoint
            .close(quinn::VarInt::from_u32(0), b"shutting down");
        let _ = self.events.send(Event::Stop).await;
        if let Some(actor) = self.actor.take() {
            let _ = tokio::task::spawn_blocking(move || actor.join()).await;
        }
        tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle())
            .await
            .ok();
        if let Err(e) = self.engine.flush() {
            tracing::warn!(error = %e, "flush at shutdown failed");
        }
        tracing::info!("runtime stopped");
    }
}
