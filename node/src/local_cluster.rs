//! `meridian local-cluster --dir D --replica NAME:REGION ...`: a cluster on loopback for
//! development and examples, laid out as the test kit's (`meridian_config::local_cluster`):
//! certificates (`D/certs`), one node configuration per replica (`D/NAME.toml`, free loopback
//! ports below the ephemeral range, every other replica a peer, data in `D/data-NAME`) and
//! a client's cluster file (`D/client.toml`, client `dev` with the `write` role), and an
//! operator's (`D/admin.toml`, client `ops` with the `admin` role). With `--netem PORT`, the
//! replicas reach each other through the link emulator: `D/netem.toml` (control on
//! 127.0.0.1:PORT, a relay per ordered pair), and each peer address in the node
//! configurations is the relay's; start it with `meridian netem run --config D/netem.toml`.

use anyhow::Context;
use meridian_config::local_cluster;
use meridian_netem::config::NetemConfig;
use meridian_netem::{NodeAddr, Route};
use std::net::SocketAddr;
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

/// Writes the cluster's files.
pub fn run(args: Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let mut replicas = Vec::new();
    for spec in &args.replicas {
        replicas.push(
            spec.split_once(':')
                .with_context(|| format!("--replica {spec:?}: expected NAME:REGION"))?,
        );
    }
    let unbound = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut configs = local_cluster::prepare(
        &args.dir,
        &args.cluster,
        &replicas,
        &["dev:write", "ops:admin"],
        unbound,
    )?;
    for config in &mut configs {
        config.listen = local_cluster::free_udp()?;
    }
    local_cluster::wire_peers(&mut configs);
    let mut routes = Vec::new();
    for config in &mut configs {
        if args.netem.is_some() {
            // Clients reach the node directly; only replication passes the emulator.
            config.advertise = Some(config.listen);
            for peer in &mut config.peers {
                let listen = local_cluster::free_udp()?;
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
    for (client, file) in [("dev", "client.toml"), ("ops", "admin.toml")] {
        // Seeds at each node's own address (clients reach nodes directly).
        let mut file_configs = configs.clone();
        for c in &mut file_configs {
            c.advertise = Some(c.listen);
        }
        local_cluster::cluster_file(&args.dir, &file_configs, client, None)
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
