//! Change feeds over the client protocol with real `meridian node` processes on loopback: a
//! routed watch whose region is killed mid-stream resumes in the next region from its last
//! position and misses no acknowledged write; `meridian client watch` prints each change as
//! JSON with the token that resumes after it.

#![allow(clippy::unwrap_used)]

mod support;

use meridian::FeedEvent;
use meridian::Op;
use meridian_runtime::client_proto::Consistency;
use meridian_runtime::routed::RoutedClient;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

const WAIT: Duration = Duration::from_secs(60);

fn lww(v: &str) -> Op {
    Op::LwwSet {
        value: v.as_bytes().to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_in_the_next_region_when_its_region_dies_and_misses_no_write() {
    let mut cluster = placed_cluster_with(&["t"], |_, _| {});
    let near_paris = |cluster: &Cluster| {
        let mut config = cluster.cluster_file("t", Some(paris())).routed_config();
        config.request_timeout = Duration::from_secs(2);
        config.breaker.open_ms = 500;
        config
    };
    let writer = RoutedClient::connect(near_paris(&cluster)).await.unwrap();
    let watcher = Arc::new(RoutedClient::connect(near_paris(&cluster)).await.unwrap());
    until_first(&watcher, "eu-west").await;
    // The watch starts after a first write, so that it starts where the writes do.
    let start = writer
        .apply(b"w/start", lww("s"), Consistency::All)
        .await
        .unwrap();
    let seen = Arc::new(std::sync::Mutex::new((
        BTreeSet::<Vec<u8>>::new(),
        Vec::<String>::new(),
    )));
    let consumer = {
        let (watcher, seen) = (watcher.clone(), seen.clone());
        tokio::spawn(async move {
            let mut watch = watcher.watch(b"w/", Some(start.token), None);
            let deadline = Instant::now() + WAIT;
            while Instant::now() < deadline {
                let events = match tokio::time::timeout(Duration::from_secs(5), watch.next()).await
                {
                    Ok(Ok(events)) => events,
                    Ok(Err(e)) => panic!("the watch failed: {e}"),
                    Err(_) => continue,
                };
                let mut seen = seen.lock().unwrap();
                if let Some(region) = watch.region() {
                    if seen.1.last() != Some(&region) {
                        seen.1.push(region);
                    }
                }
                for e in events {
                    match e {
                        FeedEvent::Change(c) => {
                            seen.0.insert(c.key);
                        }
                        FeedEvent::Reset { .. } => panic!("reset: {e:?}"),
                    }
                }
                if seen.0.contains(&b"w/done"[..]) {
                    return;
                }
            }
        })
    };
    // Writes acknowledged by a majority survive eu-west's death in another region.
    let mut acknowledged = Vec::new();
    for i in 0..60 {
        if i == 20 {
            cluster.nodes[0].kill();
        }
        let key = format!("w/{i:03}").into_bytes();
        if writer
            .apply(&key, lww("v"), Consistency::Majority)
            .await
            .is_ok()
        {
            acknowledged.push(key);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    writer
        .apply(b"w/done", lww("d"), Consistency::Majority)
        .await
        .unwrap();
    tokio::time::timeout(WAIT, consumer).await.unwrap().unwrap();
    let (keys, regions) = seen.lock().unwrap().clone();
    let missed: Vec<String> = acknowledged
        .iter()
        .filter(|k| !keys.contains(*k))
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert!(
        missed.is_empty(),
        "the watch missed acknowledged writes: {missed:?}"
    );
    assert!(
        acknowledged.len() >= 50,
        "too few writes were acknowledged: {}",
        acknowledged.len()
    );
    assert_eq!(
        regions.first().map(String::as_str),
        Some("eu-west"),
        "{regions:?}"
    );
    assert!(
        regions.len() >= 2 && regions.last().map(String::as_str) != Some("eu-west"),
        "the watch did not move on: {regions:?}"
    );
    writer.close().await;
}

#[test]
fn the_cli_watch_prints_each_change_as_json_with_a_token_that_resumes_after_it() {
    let cluster = start(&[("n1", "eu-west")]);
    let path = cluster.dir().join("client.toml");
    cluster.cluster_file("t", None).write(&path).unwrap();
    let cli = |args: &[&str]| cli(&path, args);
    let first: serde_json::Value =
        serde_json::from_str(&cli(&["--json", "put", "cart/0", "zero"])).unwrap();
    let from = first["token"].as_str().unwrap().to_string();
    cli(&["put", "cart/1", "one"]);
    cli(&["put", "other", "x"]);
    cli(&["set-add", "cart/2", "apple"]);
    cli(&["del", "cart/1"]);
    let out = cli(&[
        "watch",
        "cart/",
        "--from",
        &from,
        "--json",
        "--count",
        "2",
        "--seconds",
        "30",
    ]);
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2, "{out}");
    // In write order of their last changes: cart/2's add, then cart/1's deletion.
    assert_eq!(events[0]["key"], "cart/2", "{out}");
    assert_eq!(events[0]["values"][0]["set"][0], "apple", "{out}");
    assert_eq!(events[1]["key"], "cart/1", "{out}");
    assert_eq!(
        events[1]["values"].as_array().map(Vec::len),
        Some(0),
        "{out}"
    );
    // From the first event's token, only the second comes back (and later ones).
    let token = events[0]["token"].as_str().unwrap();
    cli(&["put", "cart/3", "three"]);
    let out = cli(&[
        "watch",
        "cart/",
        "--from",
        token,
        "--json",
        "--count",
        "2",
        "--seconds",
        "30",
    ]);
    let keys: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["key"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(keys, vec!["cart/1", "cart/3"], "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_watch_acknowledged_everywhere_resumes_after_its_regions_death_without_a_reset() {
    let mut cluster = placed_cluster_with(&["t"], |_, _| {});
    let mut config = cluster.cluster_file("t", Some(paris())).routed_config();
    config.request_timeout = Duration::from_secs(2);
    config.breaker.open_ms = 500;
    let client = RoutedClient::connect(config).await.unwrap();
    until_first(&client, "eu-west").await;
    let start = client
        .apply(b"n/start", lww("s"), Consistency::All)
        .await
        .unwrap();
    // The consumer reads ten changes and acknowledges them (in every region).
    let mut watch = client.watch(b"n/", Some(start.token.clone()), Some("indexer".into()));
    for i in 0..10 {
        client
            .apply(format!("n/{i}").as_bytes(), lww("v"), Consistency::All)
            .await
            .unwrap();
    }
    let mut handled = 0;
    while handled < 10 {
        handled += tokio::time::timeout(WAIT, watch.next())
            .await
            .unwrap()
            .unwrap()
            .len();
    }
    assert_eq!(watch.region().as_deref(), Some("eu-west"));
    let acked = watch.position().unwrap().clone();
    assert_eq!(client.ack_feed("indexer", &acked).await.unwrap(), 3);
    drop(watch);
    // The consumer is away while ten more writes reach every region and stability passes
    // them (compaction runs every 2 s): only the named feed's floor keeps them in the logs.
    for i in 10..20 {
        client
            .apply(format!("n/{i}").as_bytes(), lww("v"), Consistency::All)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    cluster.nodes[0].kill();
    let mut watch = client.watch(b"n/", Some(acked), Some("indexer".into()));
    let mut keys = BTreeSet::new();
    while keys.len() < 10 {
        for e in tokio::time::timeout(WAIT, watch.next())
            .await
            .unwrap()
            .unwrap()
        {
            match e {
                FeedEvent::Change(c) => {
                    keys.insert(String::from_utf8(c.key).unwrap());
                }
                FeedEvent::Reset { .. } => panic!("reset after a failover: {e:?}"),
            }
        }
    }
    assert_ne!(watch.region().as_deref(), Some("eu-west"));
    let expected: BTreeSet<String> = (10..20).map(|i| format!("n/{i}")).collect();
    assert_eq!(keys, expected);
    drop(watch);
    // Forgotten in the two regions still up (the dead one is not reached); again is fine.
    assert_eq!(client.drop_feed("indexer").await.unwrap(), 2);
    let at = cluster.nodes[1]
        .connect(&cluster.client_tls("t"))
        .await
        .unwrap();
    at.drop_feed("indexer").await.unwrap();
    client.close().await;
}

/// Writes outside the prefix wake the watch without a change to send: the heartbeat still goes
/// every second, so the client never takes a busy region for a silent one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_hears_its_heartbeat_while_only_other_keys_are_written() {
    let cluster = start(&[("n1", "eu-west")]);
    let tls = cluster.client_tls("t");
    let client = cluster.nodes[0].connect(&tls).await.unwrap();
    let mut watch = client.watch(b"x/", None, None).await.unwrap();
    let writer = {
        let mut client = client.clone();
        tokio::spawn(async move {
            let until = Instant::now() + Duration::from_secs(5);
            let mut i = 0u64;
            while Instant::now() < until {
                client
                    .apply(format!("y/{i}").as_bytes(), lww("v"))
                    .await
                    .unwrap();
                i += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            i
        })
    };
    let started = Instant::now();
    let mut frames = 0;
    while started.elapsed() < Duration::from_secs(5) {
        let events = watch
            .next()
            .await
            .expect("the watch took a busy node for a silent one");
        assert!(events.is_empty(), "{events:?}");
        frames += 1;
    }
    let written = writer.await.unwrap();
    assert!(written > 100, "the writer wrote only {written}");
    assert!(frames >= 3, "{frames} heartbeats in 5 s");
}

/// A position no region holds (an origin none has heard of) is refused by each region, and the
/// routed watch says so once it has tried them all, rather than cycling through them forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_position_no_region_holds_fails_after_trying_each() {
    let cluster = start(&[("aa", "us-east"), ("bb", "eu-west")]);
    cluster.wait_linked(Duration::from_secs(30)).unwrap();
    let mut config = cluster.cluster_file("t", None).routed_config();
    config.request_timeout = Duration::from_secs(2);
    let client = RoutedClient::connect(config).await.unwrap();
    let nowhere = meridian::CausalToken(meridian::VersionVector::from_entries([(
        meridian::OriginId(0x5eed),
        5,
    )]));
    let mut watch = client.watch(b"", Some(nowhere), None);
    // Each region waits up to 2 s for the position, then refuses; then the watch says so.
    let refused = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match watch.next().await {
                Ok(events) => assert!(events.is_empty(), "{events:?}"),
                Err(e) => return e,
            }
        }
    })
    .await
    .expect("the watch cycled through the regions without end");
    assert!(
        matches!(
            &refused,
            meridian_runtime::routed::RoutedError::Refused {
                failure: meridian_runtime::client::ClientFailure::Server(e),
                ..
            } if matches!(e.code, meridian_runtime::client_proto::ErrorCode::NotYetVisible
                | meridian_runtime::client_proto::ErrorCode::Uncoverable)
        ),
        "{refused}"
    );
    client.close().await;
}
