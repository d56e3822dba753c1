//! `meridian-lab`: a developer's tools around the `meridian` daemon: the demo, the benchmarks,
//! the region-outage suite and the deterministic simulator. Node processes are the `meridian`
//! executable in this executable's directory (`cargo build --release -p meridian-node`
//! builds it there).

use clap::{Parser, Subcommand};

/// mimalloc, as in the daemon: the benchmarks measure the engine and its replication in this
/// process too, and should measure them with the daemon's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod demo;
mod outage;
mod sim;

/// Meridian's lab: the demo, benchmarks, outage suite and simulator, run against the `meridian`
/// executable beside this one.
#[derive(Parser)]
#[command(name = "meridian-lab", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Three regions as separate processes: conflicts, lag, an outage and its catch-up.
    Demo,
    /// Measure Meridian against a reference measured in the same run.
    Bench {
        #[command(subcommand)]
        suite: bench::Suite,
    },
    /// The region-outage suite: real node processes through the link emulator, under load,
    /// each outage healed and the history checked (`--long` for the long form).
    Outage(outage::Args),
    /// Deterministic multi-region outage simulation of the real engine.
    Sim(sim::Args),
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Demo => demo::run(),
        Command::Bench { suite } => bench::run(suite),
        Command::Outage(args) => outage::run(args),
        Command::Sim(args) => sim::run(args),
    }
}
