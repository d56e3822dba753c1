//! Two embedded engines replicate by themselves over QUIC with mutual TLS (no tokio in the
//! application), on loopback.

#![allow(clippy::unwrap_used)]

use meridian::Engine;
use meridian_runtime::BackgroundRuntime;
use meridian_tests::Cluster;
use std::time::{Duration, Instant};

/// Two engines, each replicating with the other over QUIC on loopback, and the cluster that
/// holds their certificates and directories.
fn start_pair() -> (Cluster, Vec<(Engine, BackgroundRuntime)>) {
    let mut cluster = Cluster::prepare("emb", &[("a", "us-east"), ("b", "eu-west")], &[]).unwrap();
    cluster.pick_ports().unwrap();
    let nodes = cluster
        .nodes
        .iter()
        .map(|node| {
            let engine = Engine::open(&node.config.data_dir, node.config.engine_config()).unwrap();
            let runtime = BackgroundRuntime::start(engine.clone(), node.config.runtime()).unwrap();
            (engine, runtime)
        })
        .collect();
    (cluster, nodes)
}

#[test]
fn two_embedded_engines_replicate_by_themselves() {
    let (_cluster, nodes) = start_pair();
    let token = nodes[0].0.set_add(b"cart", &[b"book"]).unwrap();
    nodes[1].0.set_add(b"cart", &[b"pen"]).unwrap();
    // Replication wakes a reader waiting for the token at the other region.
    assert!(
        nodes[1].0.wait_covers(&token, Duration::from_secs(20)),
        "the write did not become visible in the other region"
    );
    // A token of a write that never happened times out.
    let mut unseen = token.clone();
    unseen
        .0
        .add(meridian::Dot::new(nodes[0].0.origin_id(), 1_000_000));
    let waited = Instant::now();
    assert!(!nodes[1].0.wait_covers(&unseen, Duration::from_millis(100)));
    assert!(waited.elapsed() >= Duration::from_millis(100));
    let start = Instant::now();
    while !(nodes[1].0.covers(&token)
        && nodes[0]
            .0
            .get_set(b"cart")
            .unwrap()
            .is_some_and(|s| s.len() == 2))
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "embedded engines did not replicate"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        nodes[1].0.get_set(b"cart").unwrap().unwrap(),
        vec![b"book".to_vec(), b"pen".to_vec()]
    );
    for (_, runtime) in nodes {
        runtime.shutdown();
    }
}

/// The largest batch a replica accepts (its entry exactly `record_bytes_max`, with the
/// default limits) crosses a real link: frame, link queue and QUIC windows all carry it.
#[test]
fn the_largest_batch_crosses_a_real_link() {
    let (_cluster, nodes) = start_pair();
    let e = &nodes[0].0;
    let max = e.config().record_bytes_max;
    let size = e.config().value_bytes_max - 4096;
    e.put(b"probe", &vec![1u8; size]).unwrap();
    let overhead = e.replication().export(b"probe").unwrap().unwrap().len() - size;
    let per = (max - 10) / 4 - 2 - 8 - overhead;
    let last = per + (max - 10) - 4 * (per + 2 + 8 + overhead);
    let batch = ["b0", "b1", "b2", "b3"]
        .iter()
        .enumerate()
        .fold(meridian::Batch::new(), |b, (i, k)| {
            b.put(*k, vec![i as u8; if i == 3 { last } else { per }])
        });
    let token = e.write(batch).unwrap();
    assert!(
        nodes[1].0.wait_covers(&token, Duration::from_secs(30)),
        "the largest batch did not reach the other region"
    );
    let got = nodes[1].0.get(b"b3").unwrap().unwrap().values;
    assert_eq!(got[0].len(), last);
    for (_, runtime) in nodes {
        runtime.shutdown();
    }
}
