//! Active-passive mode with real `meridian node` processes: one primary takes the writes, the
//! others answer `NotPrimary` naming it and the routed client follows; `meridian admin
//! promote` moves the lease; a killed primary is replaced after the configured outage;
//! `meridian admin mode active-active` lets every region write again.

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
    // The first successor by name.
    wait_primary(&cluster, 0);

    // A secondary refuses, naming the primary; nothing is written there.
    let mut eu = cluster.client(1).await.unwrap();
    let refused = eu
        .apply_with(b"k", lww("x"), Consistency::Local, new_request_id())
        .await;
    match refused {
        Err(ClientFailure::Server(e)) => {
            assert_eq!(e.code, ErrorCode::NotPrimary);
            assert_eq!(e.primary.as_deref(), Some("ap-northeast"));
        }
        other => panic!("expected NotPrimary, got {other:?}"),
    }
    assert!(eu.read(b"k", 0).await.unwrap().is_none());

    // The routed client, nearest to eu-west, follows the redirect to the primary.
    let mut config = cluster
        .cluster_file("t", meridian::routing::Location::new(48.85, 2.35))
        .routed_config();
    config.request_timeout = Duration::from_secs(3);
    let mut routed = RoutedClient::connect(config).await.unwrap();
    let w = routed
        .apply(b"k", lww("1"), Consistency::Local)
        .await
        .unwrap();
    assert_eq!(w.region, "ap-northeast");

    // Promotion moves the lease; the old primary refuses writes.
    admin(&cluster, &["promote", "eu-west"]);
    wait_primary(&cluster, 1);
    let mut ap = cluster.client(0).await.unwrap();
    let refused = ap
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
    assert_eq!(w.region, "eu-west");

    // The primary dies: after the outage, a successor takes over and writes go there.
    cluster.nodes[1].kill();
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
    assert_ne!(region, "eu-west");
    let new_primary = cluster
        .nodes
        .iter()
        .position(|n| n.config.region == region)
        .unwrap();
    wait_primary(&cluster, new_primary);

    // eu-west returns (a follower now); back to active-active: every region writes.
    cluster.nodes[1].start().unwrap();
    cluster.wait_linked(WAIT).unwrap();
    wait_primary(&cluster, new_primary);
    admin(&cluster, &["mode", "active-active"]);
    for i in 0..3 {
        let mut c = cluster.client(i).await.unwrap();
        let started = Instant::now();
        // A node back from a restart writes once its peers confirmed its origin.
        while let Err(e) = c
            .apply_with(b"aa", lww("any"), Consistency::Local, new_request_id())
            .await
        {
            assert!(started.elapsed() < WAIT, "region {i} does not write: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
