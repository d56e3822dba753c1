//! The routed client against two runtimes in this process (`harness`: real engines, real QUIC
//! on loopback with development certificates, no processes): a session reads its writes in
//! another region, a region lacking them passes the read on, a stopped region is failed over,
//! a session's scan covers its writes, and calls on one shared client run at once.

#![allow(missing_docs, clippy::unwrap_used)]

mod harness;

use harness::{new_york, paris, Harness, TWO_REGIONS};
use meridian::{Op, ReadValue};
use meridian_client::client_proto::Consistency;
use meridian_client::routed::{RoutedClient, RoutedError};
use meridian_core::model::VersionVector;
use std::sync::Arc;
use std::time::Duration;

fn lww(v: &str) -> Op {
    Op::LwwSet {
        value: v.as_bytes().to_vec(),
    }
}

/// The last-writer-wins value `client` reads at `key`.
async fn read_lww(client: &RoutedClient, key: &[u8]) -> Option<String> {
    let read = client.read(key).await.unwrap()?;
    read.values.iter().find_map(|v| match v {
        ReadValue::Lww(l) => Some(String::from_utf8(l.value.clone()).unwrap()),
        _ => None,
    })
}

/// The keys of a scan page.
fn keys(rows: &[(Vec<u8>, meridian::Read)]) -> Vec<String> {
    rows.iter()
        .map(|(k, _)| String::from_utf8(k.clone()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_reads_its_write_in_the_other_region() {
    let cluster = Harness::start(&TWO_REGIONS).await;
    let writer = cluster.routed(new_york(), "us-east").await;
    let written = writer
        .apply(b"greeting", lww("hello"), Consistency::Local)
        .await
        .unwrap();
    assert_eq!(written.region, "us-east");
    assert_eq!(writer.last_region().as_deref(), Some("us-east"));

    // The session moves to a client near eu-west: its read there waits for the write.
    let reader = cluster.routed(paris(), "eu-west").await;
    reader.merge_token(&writer.token());
    assert_eq!(
        read_lww(&reader, b"greeting").await.as_deref(),
        Some("hello")
    );
    assert_eq!(reader.last_region().as_deref(), Some("eu-west"));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_lacking_the_sessions_write_passes_the_read_on() {
    let cluster = Harness::start(&TWO_REGIONS).await;
    // eu-west's links are cut: what us-east takes stays there.
    cluster.isolate("eu-west", true).await;
    let writer = cluster.routed(new_york(), "us-east").await;
    writer
        .apply(b"k", lww("only in us-east"), Consistency::Local)
        .await
        .unwrap();

    let reader = cluster.routed(paris(), "eu-west").await;
    // Without the session, eu-west serves what it has: nothing.
    assert_eq!(read_lww(&reader, b"k").await, None);
    assert_eq!(reader.last_region().as_deref(), Some("eu-west"));
    // With it, eu-west waits for the write in vain, and us-east serves the read.
    reader.merge_token(&writer.token());
    assert_eq!(
        read_lww(&reader, b"k").await.as_deref(),
        Some("only in us-east")
    );
    assert_eq!(reader.last_region().as_deref(), Some("us-east"));

    // Healed, the write reaches eu-west, which serves the session again.
    cluster.isolate("eu-west", false).await;
    cluster.wait_linked(Duration::from_secs(20)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let value = read_lww(&reader, b"k").await;
        if reader.last_region().as_deref() == Some("eu-west") {
            assert_eq!(value.as_deref(), Some("only in us-east"));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "eu-west never caught up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_fails_over_when_a_runtime_is_stopped() {
    let mut cluster = Harness::start(&TWO_REGIONS).await;
    let client = cluster.routed(new_york(), "us-east").await;
    // Held by both regions: the session's token stays satisfiable without us-east.
    let written = client
        .apply(b"before", lww("1"), Consistency::All)
        .await
        .unwrap();
    assert_eq!(written.region, "us-east");

    cluster.stop("us-east").await;
    assert_eq!(read_lww(&client, b"before").await.as_deref(), Some("1"));
    assert_eq!(client.last_region().as_deref(), Some("eu-west"));
    let after = client
        .apply(b"after", lww("2"), Consistency::Local)
        .await
        .unwrap();
    assert_eq!(after.region, "eu-west");
    assert!(!after.retried_after_lost);
    // A counter add (not idempotent) is applied once, in eu-west.
    client
        .apply(b"count", Op::CounterAdd { delta: 1 }, Consistency::Local)
        .await
        .unwrap();
    let count = client.read(b"count").await.unwrap().unwrap();
    assert_eq!(count.values, vec![ReadValue::Counter(1)]);
    // us-east is now last in the order (its breaker open).
    assert_eq!(client.route().region, "eu-west");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_scan_covers_its_writes() {
    let cluster = Harness::start(&TWO_REGIONS).await;
    cluster.isolate("eu-west", true).await;
    let writer = cluster.routed(new_york(), "us-east").await;
    for i in 1..=3 {
        writer
            .apply(format!("user/{i}").as_bytes(), lww("x"), Consistency::Local)
            .await
            .unwrap();
    }
    writer
        .apply(b"other", lww("y"), Consistency::Local)
        .await
        .unwrap();

    // Without the session, eu-west's page lacks the writes.
    let stranger = cluster.routed(paris(), "eu-west").await;
    let (rows, more) = stranger.scan_page(b"user/", None, 10).await.unwrap();
    assert!(rows.is_empty() && !more, "{:?}", keys(&rows));
    assert_eq!(stranger.last_region().as_deref(), Some("eu-west"));

    // With it, the page comes from a region that has them, in key order, and pages on.
    let reader = cluster.routed(paris(), "eu-west").await;
    reader.merge_token(&writer.token());
    let (rows, more) = reader.scan_page(b"user/", None, 2).await.unwrap();
    assert_eq!(keys(&rows), ["user/1", "user/2"]);
    assert!(more);
    assert_eq!(reader.last_region().as_deref(), Some("us-east"));
    let (rows, more) = reader
        .scan_page(b"user/", Some(b"user/2"), 2)
        .await
        .unwrap();
    assert_eq!(keys(&rows), ["user/3"]);
    assert!(!more);
    // The rows' tokens joined the session: it covers every write it scanned.
    assert!(reader.token().0.dominates(&writer.token().0));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_on_one_shared_client_run_at_once_and_all_join_the_session() {
    let cluster = Harness::start(&TWO_REGIONS).await;
    let mut config = cluster.routed_config(paris());
    config.session_wait_ms = 1_500;
    let client = Arc::new(RoutedClient::connect(config).await.unwrap());
    client
        .apply(b"first", lww("1"), Consistency::Local)
        .await
        .unwrap();
    // A register write whose read context names a million more writes of a live origin than
    // any region has: each region holds it for the session wait, then the next is asked.
    let (origin, _) = client.token().0.iter().next().unwrap();
    let held = {
        let client = client.clone();
        let context = VersionVector::from_entries([(origin, 1_000_000)]);
        tokio::spawn(async move {
            let put = Op::Put {
                value: b"held".to_vec(),
                context: Some(context),
            };
            client.apply(b"held", put, Consistency::Local).await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let key = format!("task/{i}");
                let value = format!("v{i}");
                client
                    .apply(key.as_bytes(), lww(&value), Consistency::Local)
                    .await
                    .unwrap();
                assert_eq!(
                    read_lww(&client, key.as_bytes()).await,
                    Some(value),
                    "task {i} reads its own write"
                );
                client
                    .apply(b"tasks", Op::CounterAdd { delta: 1 }, Consistency::Local)
                    .await
                    .unwrap();
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    // Every task went round while the held write waited.
    assert!(!held.is_finished(), "the tasks waited for the held write");
    assert!(matches!(
        held.await.unwrap(),
        Err(RoutedError::NotYetVisible)
    ));
    let count = client.read(b"tasks").await.unwrap().unwrap();
    assert_eq!(count.values, vec![ReadValue::Counter(16)]);
    // The session's token covers all 33 writes: another region given it sees every one.
    let token = client.token();
    assert_eq!(token.0.iter().map(|(_, n)| n).sum::<u64>(), 33);
    let far = cluster.routed(new_york(), "us-east").await;
    far.merge_token(&token);
    let (rows, _) = far.scan_page(b"task/", None, 100).await.unwrap();
    assert_eq!(rows.len(), 16);
    assert_eq!(far.last_region().as_deref(), Some("us-east"));
    let count = far.read(b"tasks").await.unwrap().unwrap();
    assert_eq!(count.values, vec![ReadValue::Counter(16)]);
    cluster.shutdown().await;
}
