//! A fenced process stops acknowledging writes, with real `meridian node` processes on
//! loopback: a backup of a region restored and started elsewhere (a second process of the
//! region's identity) takes over its links; the first process, told so by its peers, refuses
//! writes (nothing written, so a routed client moves on), and says why in its health.

#![allow(clippy::unwrap_used)]

mod support;

use meridian::Op;
use meridian_runtime::client::ClientFailure;
use meridian_runtime::client_proto::{ClientRequest, ClientResponse, ErrorCode};
use meridian_tests::NodeProcess;
use std::time::{Duration, Instant};
use support::*;

const WAIT: Duration = Duration::from_secs(30);

fn lww(v: &str) -> Op {
    Op::LwwSet {
        value: v.as_bytes().to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_whose_identity_runs_again_elsewhere_stops_acknowledging_writes() {
    let cluster = start_with(
        &[
            ("euw1", "eu-west"),
            ("use1", "us-east"),
            ("apn1", "ap-northeast"),
        ],
        &["t", "ops:admin"],
        |_| {},
    );
    cluster.wait_linked(WAIT).unwrap();
    let mut first = cluster.client(0).await.unwrap();
    first.apply(b"k", lww("before")).await.unwrap();

    // A backup of eu-west, restored into another directory and started on other ports.
    let backup = cluster.dir().join("euw1-backup");
    let ops = cluster.client_as(0, "ops").await.unwrap();
    let answer = ops
        .request(&ClientRequest::Backup {
            path: backup.display().to_string(),
        })
        .await
        .unwrap();
    assert!(matches!(answer, ClientResponse::Done { .. }), "{answer:?}");
    let mut config = cluster.nodes[0].config.clone();
    config.data_dir = cluster.dir().join("euw1-twin");
    meridian::Engine::restore_backup(&backup, &config.data_dir).unwrap();
    let mut twin = NodeProcess::new(
        std::path::Path::new(BIN),
        config,
        cluster.dir().join("euw1-twin.toml"),
    );
    twin.pick_ports().unwrap();
    twin.start().unwrap();

    // The first process learns from its peers that it is fenced, and refuses writes from
    // then on: nothing written, and its health says why.
    let started = Instant::now();
    let refusal = loop {
        assert!(
            started.elapsed() < WAIT,
            "the first process still acknowledges writes"
        );
        match first.apply(b"k", lww("zombie")).await {
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(ClientFailure::Server(e)) => break e,
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(refusal.code, ErrorCode::Unavailable, "{refusal:?}");
    assert!(refusal.message.contains("fenced"), "{}", refusal.message);
    // The status is published at the node's next tick.
    let health = loop {
        let health = cluster.nodes[0].health().unwrap();
        if health.health.starts_with("fenced") || started.elapsed() > WAIT {
            break health;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(health.health.starts_with("fenced"), "{}", health.health);
    assert!(!health.writable);

    // The twin writes, and its writes reach the other regions.
    let mut at_twin = twin.connect(&cluster.client_tls("t")).await.unwrap();
    let token = at_twin.apply(b"k", lww("twin")).await.unwrap();
    let other = cluster.client(1).await.unwrap();
    while !other.applied().await.unwrap().dominates(&token.0) {
        assert!(
            started.elapsed() < 2 * WAIT,
            "the twin's write never arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    twin.kill();
}
