//! Active-passive mode with real `meridian node` processes: one primary takes the writes, the
//! others answer `NotPrimary` naming it and the routed client follows; `meridian admin
//! promote` moves the lease; a killed primary is replaced after the configured outage;
//! `meridian admin mode active-active` lets every region write again, and outlives a restart.

#![allow(clippy::unwrap_used)]

mod support;

use meridian::Op;
use meridian_runtime::client::{new_request_id, ClientFailure};
use meridian_runtime::client_proto::{Consistency, ErrorCode};
use meridian_runtime::routed::RoutedClient;
use std::path::Path;
use std::time::{Duration, Instant};
use support::*;

const REGIONS: [(&str, &str); 3] = [
    ("apn1", "ap-northeast"),
    ("euw1", "eu-west"),
    ("use1", "us-east"),
];
const WAIT: Duration = Duration::from_secs(30);

fn lww(v: &str) -> Op {
    Op::LwwSet {
        value: v.as_bytes().to_vec(),
    }
}

/// Waits until some node holds the lease and every running node names it; returns it.
fn wait_any_primary(cluster: &Cluster) -> usize {
    let started = Instant::now();
    loop {
        let holders: Vec<usize> = (0..cluster.nodes.len())
            .filter(|&i| cluster.nodes[i].is_running())
            .filter(|&i| cluster.nodes[i].health().is_ok_and(|s| s.is_primary))
            .collect();
        if let [i] = holders[..] {
            wait_primary(cluster, i);
            return i;
        }
        assert!(started.elapsed() < WAIT, "no primary: {holders:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until node `i` holds the lease and every running node names it.
fn wait_primary(cluster: &Cluster, i: usize) {
    let started = Instant::now();
    loop {
        let statuses: Vec<_> = cluster
            .nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.health().unwrap())
            .collect();
        let name = cluster.nodes[i].name();
        if statuses
            .iter()
            .all(|s| s.primary.as_deref() == Some(name) && s.is_primary == (s.name == name))
        {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "{name} never became the agreed primary: {:?}",
            statuses
                .iter()
                .map(|s| (&s.name, &s.mode, &s.primary, s.is_primary))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn admin(cluster: &Cluster, args: &[&str]) {
    let path = cluster.dir().join("ops.toml");
    cluster.cluster_file("ops", None).write(&path).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["admin", "--cluster"])
        .arg(&path)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_primary_takes_writes_moves_on_promotion_and_on_its_outage() {
    let mut cluster = Cluster::prepare(CLUSTER, &REGIONS, &["t", "ops:admin"]).unwrap();
    cluster.run_with(Path::new(BIN));
    cluster.configure(|c| {
        c.active_passive.enabled = true;
        c.active_passive.lease_ms = 1_000;
        c.active_passive.failover_after_ms = 2_000;
    });
    cluster.start_all().unwrap();
    cluster.wait_linked(WAIT).unwrap();
    // A successor is elected (the first by name, unless its links were late).
    let first = wait_any_primary(&cluster);
    let first_region = cluster.nodes[first].config.region.clone();
    let first_name = cluster.nodes[first].name().to_string();

    // A secondary refuses, naming the primary; nothing is written there.
    let secondary = (first + 1) % 3;
    let mut other = cluster.client(secondary).await.unwrap();
    let refused = other
        .apply_with(b"k", lww("x"), Consistency::Local, new_request_id())
        .await;
    match refused {
        Err(ClientFailure::Server(e)) => {
            assert_eq!(e.code, ErrorCode::NotPrimary);
            assert_eq!(e.primary.as_deref(), Some(first_name.as_str()));
        }
        other => panic!("expected NotPrimary, got {other:?}"),
    }
    assert!(other.read(b"k", 0).await.unwrap().is_none());

    // The routed client, nearest to eu-west, follows the redirect to the primary.
    let mut config = cluster
        .cluster_file("t", meridian_core::routing::Location::new(48.85, 2.35))
        .routed_config();
    config.request_timeout = Duration::from_secs(3);
    let routed = RoutedClient::connect(config).await.unwrap();
    let w = routed
        .apply(b"k", lww("1"), Consistency::Local)
        .await
        .unwrap();
    assert_eq!(
        w.region, first_region,
        "the routed write followed the redirect"
    );

    // Promotion moves the lease; the old primary refuses writes.
    let promoted = (first + 2) % 3;
    let promoted_region = cluster.nodes[promoted].config.region.clone();
    admin(&cluster, &["promote", &promoted_region]);
    wait_primary(&cluster, promoted);
    let mut old = cluster.client(first).await.unwrap();
    let refused = old
        .apply_with(b"k2", lww("x"), Consistency::Local, new_request_id())
        .await;
    assert!(
        matches!(&refused, Err(ClientFailure::Server(e)) if e.code == ErrorCode::NotPrimary),
        "{refused:?}"
    );
    let w = routed
        .apply(b"k", lww("2"), Consistency::Local)
        .await
        .unwrap();
    assert_eq!(w.region, promoted_region);

    // The primary dies: after the outage, a successor takes over and writes go there.
    cluster.nodes[promoted].kill();
    let started = Instant::now();
    let region = loop {
        match routed.apply(b"k", lww("3"), Consistency::Local).await {
            Ok(w) => break w.region,
            Err(e) => {
                assert!(started.elapsed() < WAIT, "no new primary: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_ne!(region, promoted_region);
    let new_primary = cluster
        .nodes
        .iter()
        .position(|n| n.config.region == region)
        .unwrap();
    wait_primary(&cluster, new_primary);

    // The old primary returns (a follower now); back to active-active: every region writes.
    cluster.nodes[promoted].start().unwrap();
    cluster.wait_linked(WAIT).unwrap();
    wait_primary(&cluster, new_primary);
    admin(&cluster, &["mode", "active-active"]);
    for i in 0..3 {
        let mut c = cluster.client(i).await.unwrap();
        let started = Instant::now();
        // A node back from a restart writes once the mode reached it.
        while let Err(e) = c
            .apply_with(b"aa", lww("any"), Consistency::Local, new_request_id())
            .await
        {
            assert!(started.elapsed() < WAIT, "region {i} does not write: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // The switch outlives a restart, whatever the configuration says.
    let node = &mut cluster.nodes[promoted];
    assert!(node.terminate().unwrap().is_some());
    node.start().unwrap();
    assert!(node.config.active_passive.enabled);
    assert_eq!(node.health().unwrap().mode, "active-active");
}
