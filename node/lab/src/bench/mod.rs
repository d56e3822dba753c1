//! Benchmarks: each prints metrics with a reference measured in the same run and their ratio.

mod all;
mod consistency;
mod ffi;
mod local;
mod outage_cost;
mod replication;
mod replication_bytes;
mod replication_collections;
mod report;
mod scale;

/// The benchmark suites.
#[derive(clap::Subcommand)]
pub enum Suite {
    /// Every suite `make bench` runs, in one table: the local path (both durabilities, 1 to 64
    /// writers), replication bytes, two regions over QUIC, consistency levels, the C ABI.
    All(all::Args),
    /// Local write and read path against raw RocksDB doing the same job.
    Local(local::Args),
    /// Two replicas over QUIC on loopback: replicated throughput, lag, CPU per record.
    Replication(replication::Args),
    /// Bytes moved by catch-up and by state anti-entropy against the records that had to move.
    Sim(replication_bytes::Args),
    /// Latency of each write and read consistency level over an emulated wide-area round trip.
    Consistency(consistency::Args),
    /// The C ABI against the Rust API, and Python against the C ABI.
    Ffi(ffi::Args),
    /// State transfer at data-set scale between two node processes: bootstrap rate and bytes,
    /// anti-entropy bytes and time for a 0.1% difference, peak memory of the receiver.
    Scale(scale::Args),
    /// What one region down costs the others: throughput, p99 and max latency, memory and
    /// disk with a region down against all up, and its catch-up once back (node processes).
    OutageCost(outage_cost::Args),
}

/// Runs one suite.
pub fn run(suite: Suite) -> anyhow::Result<()> {
    match suite {
        Suite::All(args) => all::run(args),
        Suite::Local(args) => local::run(args),
        Suite::Replication(args) => replication::run(args),
        Suite::Sim(args) => replication_bytes::run(args),
        Suite::Scale(args) => scale::run(args),
        Suite::Consistency(args) => consistency::run(args),
        Suite::Ffi(args) => ffi::run(args),
        Suite::OutageCost(args) => outage_cost::run(args),
    }
}

/// A 16-byte benchmark key: a 4-byte prefix and 12 decimal digits of `i`.
pub(crate) fn prefixed_key(prefix: &[u8; 4], i: u64) -> [u8; 16] {
    let mut k = [b'0'; 16];
    k[..4].copy_from_slice(prefix);
    let mut n = i;
    for slot in k[4..].iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
    k
}
