//! `meridian`: the command-line face of Meridian (benchmarks now; the node daemon later).

use clap::{Parser, Subcommand};

mod bench;
mod sim;

/// Meridian: multi-region, active-active replicated key-value engine.
#[derive(Parser)]
#[command(name = "meridian", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure Meridian against a reference measured in the same run.
    Bench {
        #[command(subcommand)]
        suite: bench::Suite,
    },
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Bench { suite } => bench::run(suite),
        Command::Sim(args) => sim::run(args),
    }
}
