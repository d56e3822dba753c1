//! Geo-routing and per-operation consistency with real `meridian node` processes on loopback:
//! a client near eu-west uses it, fails over to the next nearest region when it dies and back
//! when it returns, reading its own writes throughout; `majority` and `all` writes refuse at
//! once, writing nothing, when too few regions are reachable; a write whose answer is lost is
//! retried elsewhere only if it is idempotent (a counter add is never doubled); routes from a
//! live node, from the cluster file and over HTTP.

#![allow(clippy::unwrap_used)]

mod support;

use meridian::{Op, ReadValue};
use meridian_core::routing::Location;
use meridian_runtime::client::{new_request_id, ClientFailure};
use meridian_runtime::client_proto::{Consistency, ErrorCode};
use meridian_runtime::routed::{RoutedClient, RoutedError};
use std::time::{Duration, Instant};
use support::*;

/// The placed regions in name order (the first dials the others).
const REGIONS_BY_NAME: [(&str, &str); 3] = [
    ("apn1", "ap-northeast"),
    ("euw1", "eu-west"),
    ("use1", "us-east"),
];
const WAIT: Duration = Duration::from_secs(30);

/// The three regions, each with its location, all started.
fn placed_cluster() -> Cluster {
    placed_cluster_with(&["t"], |_, _| {})
}

/// A routed client near Paris that gives up on a region after `timeout`.
async fn client_near_paris(cluster: &Cluster, timeout: Duration) -> RoutedClient {
    let mut config = cluster.cluster_file("t", Some(paris())).routed_config();
    config.request_timeout = timeout;
    config.breaker.open_ms = 500;
    RoutedClient::connect(config).await.unwrap()
}

fn lww(v: &str) -> Op {
    Op::LwwSet {
        value: v.as_bytes().to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_near_eu_west_fails_over_and_back_reading_its_own_writes() {
    let mut cluster = placed_cluster();
    let client = client_near_paris(&cluster, Duration::from_secs(2)).await;
    until_first(&client, "eu-west").await;
    assert_eq!(client.route().region, "eu-west");
    // Held by a majority: the session's token stays satisfiable while eu-west is away.
    let w = client
        .apply(b"before", lww("1"), Consistency::Majority)
        .await
        .unwrap();
    assert_eq!(w.region, "eu-west");

    // eu-west dies: the next nearest from Paris is us-east.
    cluster.nodes[0].kill();
    let w = client
        .apply(b"during", lww("2"), Consistency::Local)
        .await
        .unwrap();
    assert_eq!(w.region, "us-east", "failed over to the next nearest");
    assert!(client.read(b"during").await.unwrap().is_some());
    assert_eq!(client.last_region().as_deref(), Some("us-east"));

    // eu-west returns: once its breaker lets a probe through, the client is back there, and
    // reads there what it wrote in us-east meanwhile.
    cluster.nodes[0].start().unwrap();
    let started = Instant::now();
    loop {
        let w = client
            .apply(b"after", lww("3"), Consistency::Local)
            .await
            .unwrap();
        if w.region == "eu-west" {
            break;
        }
        assert!(started.elapsed() < WAIT, "never failed back to eu-west");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let read = client.read(b"during").await.unwrap().unwrap();
    assert_eq!(client.last_region().as_deref(), Some("eu-west"));
    assert!(matches!(&read.values[0], ReadValue::Lww(l) if l.value == b"2"));
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn majority_and_all_writes_refuse_at_once_when_too_few_regions_are_reachable() {
    let mut cluster = placed_cluster();
    let mut c = cluster.client(0).await.unwrap();
    let put = |c: &mut meridian_runtime::client::Client, key: &'static [u8], level| {
        let mut c = c.clone();
        async move {
            c.apply_with(key, lww("v"), level, new_request_id())
                .await
                .map(|_| ())
        }
    };
    put(&mut c, b"all", Consistency::All).await.unwrap();
    put(&mut c, b"two", Consistency::Regions(2)).await.unwrap();

    // One region stops: a majority still holds writes; `all` is refused before writing.
    assert!(cluster.nodes[2].terminate().unwrap().is_some());
    wait_for_links(&cluster, 0, 1).await;
    put(&mut c, b"majority", Consistency::Majority)
        .await
        .unwrap();
    let started = Instant::now();
    let refused = put(&mut c, b"all-refused", Consistency::All).await;
    assert!(
        matches!(&refused, Err(ClientFailure::Server(e)) if e.code == ErrorCode::Unavailable),
        "{refused:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused at once"
    );

    // The minority side: alone, a majority write is refused and nothing is written.
    assert!(cluster.nodes[1].terminate().unwrap().is_some());
    wait_for_links(&cluster, 0, 0).await;
    let refused = put(&mut c, b"minority", Consistency::Majority).await;
    assert!(
        matches!(&refused, Err(ClientFailure::Server(e)) if e.code == ErrorCode::Unavailable),
        "{refused:?}"
    );
    assert!(c.read(b"minority", 0).await.unwrap().is_none());
    assert!(c.read(b"all-refused", 0).await.unwrap().is_none());
    // A local write still goes.
    put(&mut c, b"local", Consistency::Local).await.unwrap();
}

/// Waits until node `i` has links to exactly `up` peers.
async fn wait_for_links(cluster: &Cluster, i: usize, up: usize) {
    let started = Instant::now();
    loop {
        let status = cluster.nodes[i].health().unwrap();
        if status.peers.iter().filter(|p| p.connected).count() == up {
            return;
        }
        assert!(started.elapsed() < WAIT, "links never settled: {status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_retries_only_idempotent_writes_and_a_counter_is_never_doubled() {
    let mut cluster = placed_cluster();
    let client = client_near_paris(&cluster, Duration::from_millis(1_500)).await;
    let w = client
        .apply(b"warm", lww("x"), Consistency::Local)
        .await
        .unwrap();
    assert_eq!(w.region, "eu-west");

    // eu-west hangs: requests reach it and get no answer.
    cluster.nodes[0].pause().unwrap();
    let counted = client
        .apply(b"views", Op::CounterAdd { delta: 1 }, Consistency::Local)
        .await;
    assert!(
        matches!(&counted, Err(RoutedError::Unknown { region, .. }) if region == "eu-west"),
        "a counter add with a lost answer must be reported unknown, not retried: {counted:?}"
    );
    let w = client
        .apply(b"profile", lww("p"), Consistency::Local)
        .await
        .unwrap();
    assert_eq!(
        w.region, "us-east",
        "an idempotent write is retried elsewhere"
    );
    cluster.nodes[0].resume().unwrap();

    // However the hung region dealt with the add, no region ever counts it twice.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        for i in 0..3 {
            let mut c = cluster.client(i).await.unwrap();
            if let Some(read) = c.read(b"views", 0).await.unwrap() {
                assert!(
                    matches!(read.values[0], ReadValue::Counter(n) if n <= 1),
                    "{read:?}"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The same request id sent twice to one region is applied once.
    let mut c = cluster.client(1).await.unwrap();
    let id = new_request_id();
    let first = c
        .apply_with(b"once", Op::CounterAdd { delta: 5 }, Consistency::Local, id)
        .await
        .unwrap();
    let again = c
        .apply_with(b"once", Op::CounterAdd { delta: 5 }, Consistency::Local, id)
        .await
        .unwrap();
    assert_eq!(first, again, "the retry gets the first write's token");
    let read = c.read(b"once", 0).await.unwrap().unwrap();
    assert!(matches!(read.values[0], ReadValue::Counter(5)), "{read:?}");

    // Sent to another region once the write has reached it, the same request is answered
    // with the first write (the request travels with the replicated entry), not applied
    // again; so it is after the region that made it restarts (the tags are kept on disk).
    let started = Instant::now();
    let mut other = cluster.client(2).await.unwrap();
    while !other.applied().await.unwrap().dominates(&first.0) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never replicated"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elsewhere = other
        .apply_with(b"once", Op::CounterAdd { delta: 5 }, Consistency::Local, id)
        .await
        .unwrap();
    assert_eq!(
        elsewhere, first,
        "another region answers with the first write"
    );
    drop(c);
    cluster.nodes[1].terminate().unwrap();
    cluster.nodes[1].start().unwrap();
    let mut c = cluster.client(1).await.unwrap();
    let after_restart = c
        .apply_with(b"once", Op::CounterAdd { delta: 5 }, Consistency::Local, id)
        .await
        .unwrap();
    assert_eq!(after_restart, first, "the answer survives a restart");
    for i in 0..3 {
        let read = cluster
            .client(i)
            .await
            .unwrap()
            .read(b"once", 0)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(read.values[0], ReadValue::Counter(5)), "{read:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_come_from_a_live_node_the_cluster_file_and_http() {
    let mut cluster = placed_cluster();
    let path = cluster.dir().join("client.toml");
    cluster.cluster_file("t", None).write(&path).unwrap();
    let route = |extra: &[&str]| {
        let out = std::process::Command::new(BIN)
            .args(["route", "--cluster"])
            .arg(&path)
            .args(["--near", "48.85,2.35", "--json"])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let regions = |answer: &serde_json::Value| -> Vec<String> {
        answer["order"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["region"].as_str().unwrap().to_string())
            .collect()
    };
    for answer in [route(&[]), route(&["--offline"])] {
        assert_eq!(answer["region"], "eu-west", "{answer}");
        assert_eq!(regions(&answer), ["eu-west", "us-east", "ap-northeast"]);
        assert!(
            answer["order"][0]["reason"]["distance"]["km"]
                .as_f64()
                .unwrap()
                < 1_000.0,
            "{answer}"
        );
    }
    let http = scrape::http_get(
        cluster.nodes[1].config.metrics_listen.unwrap(),
        "/route?lat=48.85&lon=2.35",
    )
    .unwrap();
    let answer: serde_json::Value = serde_json::from_str(&http).unwrap();
    assert_eq!(answer["region"], "eu-west", "{answer}");

    // eu-west stops: a live node sends Paris to us-east, eu-west last and down.
    assert!(cluster.nodes[0].terminate().unwrap().is_some());
    wait_for_links(&cluster, 1, 1).await;
    let http = scrape::http_get(
        cluster.nodes[1].config.metrics_listen.unwrap(),
        "/route?lat=48.85&lon=2.35",
    )
    .unwrap();
    let answer: serde_json::Value = serde_json::from_str(&http).unwrap();
    assert_eq!(answer["region"], "us-east", "{answer}");
    assert_eq!(regions(&answer), ["us-east", "ap-northeast", "eu-west"]);
    assert_eq!(answer["order"][2]["health"], "down", "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hedged_read_is_answered_by_the_next_region_when_the_nearest_hangs() {
    let cluster = placed_cluster();
    let mut config = cluster.cluster_file("t", Some(paris())).routed_config();
    config.hedge_after = Some(Duration::from_millis(100));
    config.request_timeout = Duration::from_secs(10);
    let client = RoutedClient::connect(config).await.unwrap();
    client
        .apply(b"hedged", lww("h"), Consistency::All)
        .await
        .unwrap();
    cluster.nodes[0].pause().unwrap();
    let started = Instant::now();
    let read = client.read(b"hedged").await.unwrap();
    let took = started.elapsed();
    cluster.nodes[0].resume().unwrap();
    assert!(read.is_some());
    assert_eq!(
        client.last_region().as_deref(),
        Some("us-east"),
        "the hedge answered"
    );
    assert!(
        took < Duration::from_secs(5),
        "not held by the hung region: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regions_learn_where_their_peers_are_from_the_peers() {
    let mut cluster = Cluster::prepare(CLUSTER, &PLACED_REGIONS, &["t"]).unwrap();
    cluster.run_with(std::path::Path::new(BIN));
    for (node, (lat, lon)) in cluster.nodes.iter_mut().zip(PLACES) {
        node.config.location = Location::new(lat, lon);
    }
    cluster.pick_ports().unwrap();
    // Each node's configuration names only its own place.
    cluster.configure(|c| c.peers.iter_mut().for_each(|p| p.location = None));
    for node in &mut cluster.nodes {
        node.start().unwrap();
    }
    cluster.wait_linked(WAIT).unwrap();
    let c = cluster.client(2).await.unwrap();
    let started = Instant::now();
    loop {
        let table = c.regions().await.unwrap();
        if table.regions.iter().all(|r| r.location.is_some()) {
            break;
        }
        assert!(started.elapsed() < WAIT, "never learned: {table:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let route = c.route(Some(paris())).await.unwrap();
    assert_eq!(route.region, "eu-west");
}

/// A real partition (every datagram between one region and the others dropped by the link
/// emulator, all processes running): within a couple of seconds a `majority`
/// write on the minority side is refused at once and writes nothing, while the majority side
/// still takes them; after healing, the minority side takes them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn majority_writes_fail_fast_on_the_minority_side_of_a_partition() {
    let mut cluster = Cluster::prepare(CLUSTER, &REGIONS_BY_NAME, &["t"]).unwrap();
    cluster.run_with(std::path::Path::new(BIN));
    // Every link between the regions passes the link emulator.
    let netem = cluster.start_with_emulator(1).await.unwrap();
    cluster.wait_linked(WAIT).unwrap();
    let put = |i: usize, key: &'static [u8]| {
        let cluster = &cluster;
        async move {
            let mut c = cluster.client(i).await.unwrap();
            c.apply_with(key, lww("v"), Consistency::Majority, new_request_id())
                .await
                .map(|_| ())
        }
    };
    put(0, b"before").await.unwrap();

    let minority = cluster.nodes[0].name().to_string();
    netem.isolate(&minority, true).unwrap();
    // The minority side notices the silence within a few seconds and then refuses at once.
    let started = Instant::now();
    loop {
        let asked = Instant::now();
        match put(0, b"minority").await {
            Err(ClientFailure::Server(e)) if e.code == ErrorCode::Unavailable => {
                assert!(asked.elapsed() < Duration::from_secs(1), "refused at once");
                break;
            }
            // Before the silence is noticed the write waits, and its outcome is unknown.
            Err(ClientFailure::Server(e)) if e.code == ErrorCode::Unknown => {}
            other => panic!("a majority write on the minority side: {other:?}"),
        }
        assert!(started.elapsed() < WAIT, "never refused");
    }
    put(1, b"majority").await.unwrap();
    let mut c0 = cluster.client(0).await.unwrap();
    let refused = c0
        .apply_with(
            b"refused",
            lww("v"),
            Consistency::Majority,
            new_request_id(),
        )
        .await;
    assert!(matches!(&refused, Err(ClientFailure::Server(e)) if e.code == ErrorCode::Unavailable));
    assert!(
        c0.read(b"refused", 0).await.unwrap().is_none(),
        "nothing written"
    );

    netem.isolate(&minority, false).unwrap();
    let started = Instant::now();
    while put(0, b"healed").await.is_err() {
        assert!(started.elapsed() < WAIT, "the minority side never healed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A majority read from a client that reaches every region, while eu-west is cut off holding a
/// write it cannot ship: the region that serves it is given a majority it can complete
/// (itself and the region it is linked with), not one that includes the cut-off region's
/// write, which no region on the other side can get; it sees the majority's write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_majority_read_is_served_while_a_region_is_cut_off_with_unshipped_writes() {
    let cluster = placed_cluster_with(&["t", "ops:admin"], |_, _| {});
    let mut us = cluster.client(1).await.unwrap();
    let majority = us
        .apply_with(
            b"m",
            lww("held by a majority"),
            Consistency::Majority,
            new_request_id(),
        )
        .await
        .unwrap();
    let ops = cluster.client_as(0, "ops").await.unwrap();
    let cut = ops
        .request(&meridian_runtime::client_proto::ClientRequest::Isolate { isolated: true })
        .await
        .unwrap();
    assert!(
        matches!(
            cut,
            meridian_runtime::client_proto::ClientResponse::Done { .. }
        ),
        "{cut:?}"
    );
    let mut eu = cluster.client(0).await.unwrap();
    eu.apply(b"cut", lww("only in eu-west")).await.unwrap();
    let session = client_near_paris(&cluster, Duration::from_secs(3)).await;
    for _ in 0..5 {
        let read = session.read_majority(b"m").await;
        let read = match read {
            Ok(Some(read)) => read,
            other => panic!("the majority read failed: {other:?}"),
        };
        assert!(read.token.0.dominates(&majority.0), "{read:?}");
        assert!(
            matches!(&read.values[0], ReadValue::Lww(v) if v.value == b"held by a majority"),
            "{read:?}"
        );
    }
}

/// A session's scan reflects its writes: with eu-west cut off (an operator's isolate), a
/// client near Paris that merged a write taken in us-east scans; eu-west lacks the write, waits
/// for it and answers `NotYetVisible`, and the page comes from a region that has it. On main
/// the scan carried no token and eu-west served a page without the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_scan_is_served_where_its_writes_are() {
    let cluster = placed_cluster_with(&["t", "ops:admin"], |_, _| {});
    let ops = cluster.client_as(0, "ops").await.unwrap();
    let cut = ops
        .request(&meridian_runtime::client_proto::ClientRequest::Isolate { isolated: true })
        .await
        .unwrap();
    assert!(
        matches!(
            cut,
            meridian_runtime::client_proto::ClientResponse::Done { .. }
        ),
        "{cut:?}"
    );
    let mut us = cluster.client(1).await.unwrap();
    let written = us.apply(b"scan/a", lww("from us-east")).await.unwrap();
    let session = client_near_paris(&cluster, Duration::from_secs(5)).await;
    until_first(&session, "eu-west").await;
    session.merge_token(&written);
    let (rows, _) = session.scan_page(b"scan/", None, 100).await.unwrap();
    assert!(
        rows.iter().any(|(k, _)| k == b"scan/a"),
        "the session's write is in its scan: {rows:?}"
    );
    assert_ne!(session.last_region().as_deref(), Some("eu-west"));
    // The rows' tokens joined the session's.
    assert!(session.token().0.dominates(&written.0));
}
