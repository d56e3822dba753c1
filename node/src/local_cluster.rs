//! `meridian local-cluster --dir D --replica NAME:REGION ...`: a cluster on loopback for
//! development and examples: certificates (`D/certs`), one node configuration per replica
//! (`D/NAME.toml`, free loopback ports, every other replica a peer, data in `D/data-NAME`) and
//! a client's cluster file (`D/client.toml`, client `dev` with the `write` role), and an
//! operator's (`D/admin.toml`, client `ops` with the `admin` role). With `--netem PORT`, the
//! replicas reach each other through the link emulator: `D/netem.toml` (control on
//! 127.0.0.1:PORT, a relay per ordered pair), and each peer address in the node
//! configurations is the relay's; start it with `meridian netem run --config D/netem.toml`.

use anyhow::Context;
use meridian_netem::config::NetemConfig;
use meridian_netem::{NodeAddr, Route};
use meridian_config::cluster_file::{ClusterFile, SeedEntry};
use meridian_config::dev_certs::{self, CertsRequest};
use meridian_config::node_config::NodeConfig;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;

/// Options of `local-cluster`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory to write into (created if missing).
    #[arg(long)]
    dir: PathBuf,
    /// Cluster id.
    #[arg(long, default_value = "local")]
    cluster: String,
    /// A replica as NAME:REGION (repeat).
    #[arg(long = "replica", value_name = "NAME:REGION", required = true)]
    replicas: Vec<String>,
    /// Link the replicas through the link emulator, whose control interface listens on
    /// 127.0.0.1:PORT (writes `netem.toml`).
    #[arg(long, value_name = "PORT")]
    netem: Option<u16>,
}

fn free_loopback_port() -> anyhow::Result<SocketAddr> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?)
}

/// Writes the cluster's files.
pub fn run(args: Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let certs = args.dir.join("certs");
    dev_certs::init(&CertsRequest {
        dir: certs.clone(),
        cluster: args.cluster.clone(),
        replicas: args.replicas.clone(),
        clients: vec!["dev:write".into(), "ops:admin".into()],
    })?;
    let mut configs = Vec::new();
    for spec in &args.replicas {
        let (name, region) = spec
            .split_once(':')
            .with_context(|| format!("--replica {spec:?}: expected NAME:REGION"))?;
        configs.push(NodeConfig::new(
            &args.cluster,
            name,
            region,
            args.dir.join(format!("data-{name}")),
            free_loopback_port()?,
            dev_certs::replica_files(&certs, name),
        ));
    }
    let peers: Vec<_> = configs.iter().map(NodeConfig::as_peer).collect();
    let mut routes = Vec::new();
    for config in &mut configs {
        config.peers = peers
            .iter()
            .filter(|p| p.name != config.name)
            .cloned()
            .collect();
        if args.netem.is_some() {
            // Clients reach the node directly; only replication passes the emulator.
            config.advertise = Some(config.listen);
            for peer in &mut config.peers {
                let listen = free_loopback_port()?;
                routes.push(Route {
                    from: config.name.clone(),
                    to: peer.name.clone(),
                    listen: Some(listen),
                });
                peer.address = listen;
            }
        }
        let path = args.dir.join(format!("{}.toml", config.name));
        config.write(&path)?;
        println!("{}", path.display());
    }
    let seeds: Vec<SeedEntry> = configs
        .iter()
        .map(|c| SeedEntry {
            name: c.name.clone(),
            region: c.region.clone(),
            address: c.listen,
            location: None,
        })
        .collect();
    for (client, file) in [("dev", "client.toml"), ("ops", "admin.toml")] {
        ClusterFile {
            cluster: args.cluster.clone(),
            certs: certs.join(format!("client-{client}")),
            client: client.into(),
            near: None,
            seeds: seeds.clone(),
        }
        .write(&args.dir.join(file))?;
    }
    if let Some(port) = args.netem {
        let path = args.dir.join("netem.toml");
        NetemConfig {
            control: SocketAddr::from(([127, 0, 0, 1], port)),
            seed: 0,
            node: configs
                .iter()
                .map(|c| NodeAddr {
                    name: c.name.clone(),
                    address: c.listen,
                })
                .collect(),
            route: routes,
            shape: Vec::new(),
        }
        .write(&path)?;
        println!("{}", path.display());
    }
    Ok(())
}
