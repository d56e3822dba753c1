//! Benchmarks: each prints metrics with a reference measured in the same run and their ratio.

mod local;
mod report;

/// The benchmark suites.
#[derive(clap::Subcommand)]
pub enum Suite {
    /// Local write and read path against raw RocksDB doing the same job.
    Local(local::Args),
}

/// Runs one suite.
pub fn run(suite: Suite) -> anyhow::Result<()> {
    match suite {
        Suite::Local(args) => local::run(args),
    }
}
