//! Clusters of this package's `meridian` executable, started with the test kit: ephemeral
//! loopback ports, certificates for the replicas and client `t`, every process killed when the
//! cluster is dropped.

#![allow(dead_code, clippy::unwrap_used)]

pub use meridian_config::node_config::NodeConfig;
use meridian_core::routing::Location;
#[allow(unused_imports)]
pub use meridian_tests::{scrape, Cluster, NodeProcess};
use std::path::Path;
use std::time::Duration;

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

/// Three regions with their places: Dublin, Virginia, Tokyo.
pub const PLACED_REGIONS: [(&str, &str); 3] = [
    ("euw1", "eu-west"),
    ("use1", "us-east"),
    ("apn1", "ap-northeast"),
];
/// Where `PLACED_REGIONS` are (latitude, longitude).
pub const PLACES: [(f64, f64); 3] = [(53.3, -6.3), (39.0, -77.5), (35.7, 139.7)];

/// Paris: nearest to eu-west, then us-east.
pub fn paris() -> Location {
    Location::new(48.85, 2.35).unwrap()
}

/// `PLACED_REGIONS` with their places and certificates for `clients`, each node's
/// configuration changed by `configure` (with its index), all started and linked.
pub fn placed_cluster_with(
    clients: &[&str],
    mut configure: impl FnMut(usize, &mut NodeConfig),
) -> Cluster {
    let mut cluster = Cluster::prepare(CLUSTER, &PLACED_REGIONS, clients).unwrap();
    cluster.run_with(Path::new(BIN));
    for (i, (node, (lat, lon))) in cluster.nodes.iter_mut().zip(PLACES).enumerate() {
        node.config.location = Location::new(lat, lon);
        configure(i, &mut node.config);
    }
    cluster.start_all().unwrap();
    cluster.wait_linked(Duration::from_secs(30)).unwrap();
    cluster
}

/// Measures `client`'s round trips again until `region` comes first (a first sample on a
/// loaded machine can put a loopback region in a slower band), up to 20 rounds.
pub async fn until_first(client: &meridian_runtime::routed::RoutedClient, region: &str) {
    for _ in 0..20 {
        if client.route().region == region {
            return;
        }
        client.measure_regions().await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Runs `meridian client --cluster FILE ARGS` and returns what it printed (it must succeed).
pub fn cli(cluster_file: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(BIN)
        .args(["client", "--cluster"])
        .arg(cluster_file)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}
