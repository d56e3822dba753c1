//! Clusters of this package's `meridian` executable, started with the test kit: ephemeral
//! loopback ports, certificates for the replicas and client `t`, every process killed when the
//! cluster is dropped.

#![allow(dead_code, clippy::unwrap_used)]

pub use meridian_runtime::node_config::NodeConfig;
#[allow(unused_imports)]
pub use meridian_tests::{scrape, Cluster, NodeProcess};
use std::path::Path;

/// The executable under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_meridian");

/// The cluster id of every test cluster.
pub const CLUSTER: &str = "test";

/// Starts one node per `regions` entry (name, region), with a certificate for client `t`.
pub fn start(regions: &[(&str, &str)]) -> Cluster {
    start_with(regions, &["t"], |_| {})
}

/// `start`, with certificates for `clients` (`NAME[:ROLE]`, the first is `Cluster::client`'s)
/// and every node's configuration changed by `configure`.
pub fn start_with(
    regions: &[(&str, &str)],
    clients: &[&str],
    configure: impl FnMut(&mut NodeConfig),
) -> Cluster {
    let mut cluster = Cluster::prepare(CLUSTER, regions, clients).unwrap();
    cluster.run_with(Path::new(BIN));
    cluster.configure(configure);
    if let Err(why) = cluster.start_all() {
        panic!("the cluster did not start: {why:#}");
    }
    cluster
}
