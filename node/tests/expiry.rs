//! Expiry with real `meridian node` processes on loopback, their clocks skewed within the
//! bound: a value written with `meridian client --ttl` is read in every region until its
//! expiry and never after it by the region's own clock, every region reports the same expiry
//! time, and `persist` keeps a key past its time to live.

#![allow(clippy::unwrap_used)]

mod support;

use meridian_runtime::client::Client;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::*;

/// Node clocks: true time shifted by these (ms); the default skew bound is 5 minutes.
const SKEWS: [i64; 3] = [0, 700, -500];
/// What the checks allow for a read's own time and the test's scheduling.
const MARGIN_MS: i64 = 150;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Whether node `c` reads `key` now, with the (start, end) of the read in true time.
async fn read(c: &mut Client, key: &[u8]) -> (bool, i64, i64) {
    let start = now_ms();
    let present = c.read(key, 0).await.unwrap().is_some();
    (present, start, now_ms())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_region_stops_reading_a_value_at_its_expiry_by_its_own_clock() {
    let cluster = placed_cluster_with(&["t"], |i, config| config.clock_skew_ms = SKEWS[i]);
    let path = cluster.dir().join("client.toml");
    cluster.cluster_file("t", None).write(&path).unwrap();
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(cluster.client(i).await.unwrap());
    }
    // Written in the region the client file sends it to, with a 5 s time to live.
    cli(
        &path,
        &[
            "--ttl",
            "5s",
            "--consistency",
            "all",
            "lww-set",
            "session",
            "alice",
        ],
    );
    cli(
        &path,
        &[
            "--ttl",
            "5s",
            "--consistency",
            "all",
            "lww-set",
            "kept",
            "bob",
        ],
    );
    cli(&path, &["--consistency", "all", "persist", "kept"]);
    let shown = cli(&path, &["--json", "ttl", "session"]);
    let json: serde_json::Value = serde_json::from_str(&shown).unwrap();
    let at = json["expires_at_ms"].as_i64().expect("the key expires");
    let written = now_ms();
    assert!(
        (at - written - 5_000).abs() < 2_000,
        "expires at {at}, written about {written}"
    );
    // Every region holds the same expiry time.
    for (i, c) in clients.iter().enumerate() {
        assert_eq!(
            c.expires_at(b"session").await.unwrap(),
            Some(at as u64),
            "region {i}"
        );
        assert_eq!(c.expires_at(b"kept").await.unwrap(), None, "region {i}");
    }
    // Until 1.5 s past the expiry by the slowest clock: each read is timed in true time.
    let mut reads: Vec<(usize, bool, i64, i64)> = Vec::new();
    let end = at + 500 + 1_500;
    let started = Instant::now();
    while now_ms() < end && started.elapsed() < Duration::from_secs(30) {
        for (i, c) in clients.iter_mut().enumerate() {
            let (present, s, e) = read(c, b"session").await;
            reads.push((i, present, s, e));
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let ahead = *SKEWS.iter().max().unwrap();
    let mut before = 0;
    let mut after = 0;
    for (i, present, start, end) in &reads {
        // Node i's clock reads true time + SKEWS[i]: it passes the expiry at `at - SKEWS[i]`.
        let passes = at - SKEWS[*i];
        if *start > passes + MARGIN_MS {
            after += 1;
            assert!(
                !present,
                "region {i} read the value {} ms after its clock passed the expiry",
                start - passes
            );
        }
        // No member's clock (nor any marker it issued) has reached the expiry yet.
        if *end < at - ahead - MARGIN_MS {
            before += 1;
            assert!(
                present,
                "region {i} lost the value {} ms before any clock passed its expiry",
                at - ahead - end
            );
        }
    }
    assert!(
        before >= 3 && after >= 3,
        "{before} reads before, {after} after"
    );
    for (i, c) in clients.iter_mut().enumerate() {
        assert!(read(c, b"kept").await.0, "region {i}: persisted");
    }
}
