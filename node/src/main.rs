//! `meridian`: what an operator runs: the node daemon, certificates, a client, routing, the
//! link emulator, cluster operations and a loopback cluster's files. The demo, benchmarks,
//! outage suite and simulator are `meridian-lab` (node/lab/), which runs this executable.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// mimalloc: the replication path allocates and frees many small buffers across threads,
/// where it measured clearly faster than the system allocator; built without transparent huge
/// pages, which cost more in zeroing than they saved (see ARCHITECTURE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod admin;
mod certs;
mod client_cli;
mod client_watch;
mod daemon;
mod http;
mod local_cluster;
mod netem;
mod route;

/// Meridian: multi-region, active-active replicated key-value engine.
#[derive(Parser)]
#[command(name = "meridian", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a regional node.
    Node {
        /// The node's TOML configuration.
        #[arg(long)]
        config: PathBuf,
    },
    /// Development certificates.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Talk to a running node.
    Client {
        #[command(flatten)]
        target: client_cli::Target,
        #[command(subcommand)]
        command: client_cli::Command,
    },
    /// The region that should serve a client at a place, and the fallbacks in order.
    Route(route::Args),
    /// Certificates and node configurations for a cluster on loopback (development,
    /// examples).
    LocalCluster(local_cluster::Args),
    /// Emulate the links between regions (latency, loss, partitions...) to rehearse outages.
    Netem {
        #[command(subcommand)]
        command: netem::Command,
    },
    /// Operations on a running cluster: promote a region, switch modes, isolate and heal a
    /// region, see every region's links.
    Admin(admin::Args),
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Create a cluster CA and certificates for replicas and clients.
    Init(certs::CertsArgs),
    /// Issue more certificates with the CA in `--dir`.
    Add(certs::CertsArgs),
}

/// Installs the log subscriber (`RUST_LOG` filters; default: info for the node, warn otherwise).
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,quinn=warn,rustls=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Node { .. }) {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_writer(std::io::stderr)
            .init();
    }
    match cli.command {
        Command::Node { config } => daemon::run(&config),
        Command::Certs {
            command: CertsCommand::Init(args),
        } => certs::init(args),
        Command::Certs {
            command: CertsCommand::Add(args),
        } => certs::add(args),
        Command::Client { target, command } => client_cli::run(target, command),
        Command::Route(args) => route::run(args),
        Command::Admin(args) => admin::run(args),
        Command::Netem { command } => netem::run(command),
        Command::LocalCluster(args) => local_cluster::run(args),
    }
}
