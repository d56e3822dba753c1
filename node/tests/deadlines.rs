//! Deadlines end when the client moves on, with real `meridian node` processes on loopback and
//! the routed client's default settings: a frozen region is left within about a second (its
//! connection's liveness), and when it thaws it does not apply the write the client has
//! meanwhile made elsewhere, whatever its clock says (the client stamps deadlines in each
//! region's clock, measured from its answers).
//!
//! A late apply is made visible with a set: the session adds `x` (the frozen region holds the
//! request), the add is retried in the next region, the session removes `x` there; a late add
//! in the thawed region would bring `x` back everywhere.

#![allow(clippy::unwrap_used)]

mod support;

use meridian::{Op, ReadValue};
use meridian_core::routing::Location;
use meridian_runtime::client_proto::{ClientResponse, Consistency};
use meridian_runtime::routed::RoutedClient;
use std::time::{Duration, Instant};
use support::*;

const WAIT: Duration = Duration::from_secs(30);

/// The three placed regions, node `i`'s clock shifted by `skews[i]` ms.
fn cluster_with_clocks(skews: [i64; 3]) -> Cluster {
    placed_cluster_with(&["t"], |i, config| config.clock_skew_ms = skews[i])
}

/// A routed client near `place` with the default settings.
async fn client_near(cluster: &Cluster, place: Location) -> RoutedClient {
    let config = cluster.cluster_file("t", Some(place)).routed_config();
    RoutedClient::connect(config).await.unwrap()
}

fn elems(e: &str) -> Vec<Vec<u8>> {
    vec![e.as_bytes().to_vec()]
}

/// Freezes eu-west for `frozen`; meanwhile the session adds `x` to `key` (held by eu-west, then
/// taken elsewhere) and removes it. Returns how long the add took.
async fn add_in_a_frozen_region_then_remove(
    cluster: &Cluster,
    session: &mut RoutedClient,
    key: &[u8],
    frozen: Duration,
) -> Duration {
    let warm = session
        .apply(b"warm", Op::CounterAdd { delta: 1 }, Consistency::Local)
        .await
        .unwrap();
    assert_eq!(warm.region, "eu-west");
    cluster.nodes[0].pause().unwrap();
    let paused = Instant::now();
    let add = Op::SetAdd { elems: elems("x") };
    let added = session.apply(key, add, Consistency::Local).await.unwrap();
    let took = paused.elapsed();
    assert_ne!(added.region, "eu-west");
    assert!(added.retried_after_lost, "{added:?}");
    let remove = Op::SetRemove { elems: elems("x") };
    let removed = session
        .apply(key, remove, Consistency::Local)
        .await
        .unwrap();
    assert_eq!(removed.region, added.region);
    tokio::time::sleep(frozen.saturating_sub(paused.elapsed())).await;
    cluster.nodes[0].resume().unwrap();
    took
}

/// Waits until every region has applied the same writes, then checks `key` is empty in each.
async fn converged_without_x(cluster: &Cluster, key: &[u8]) {
    let started = Instant::now();
    loop {
        assert!(started.elapsed() < WAIT, "the regions never converged");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut applied = Vec::new();
        for i in 0..3 {
            let Ok(c) = cluster.client(i).await else {
                break;
            };
            match c
                .request(&meridian_runtime::client_proto::ClientRequest::Applied)
                .await
            {
                Ok(ClientResponse::Applied(v)) => applied.push(v),
                _ => break,
            }
        }
        if applied.len() == 3 && applied.windows(2).all(|w| w[0] == w[1]) {
            break;
        }
    }
    for (i, (_, region)) in PLACED_REGIONS.iter().enumerate() {
        let mut c = cluster.client(i).await.unwrap();
        let read = c.read(key, 0).await.unwrap();
        let values = read.map(|r| r.values).unwrap_or_default();
        assert!(
            values.is_empty() || matches!(values.as_slice(), [ReadValue::Set(e)] if e.is_empty()),
            "{region}: the removed element is back (a late apply): {values:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_frozen_for_12_s_is_left_within_about_a_second_and_applies_nothing_late() {
    let cluster = cluster_with_clocks([0, 0, 0]);
    let mut session = client_near(&cluster, paris()).await;
    let took =
        add_in_a_frozen_region_then_remove(&cluster, &mut session, b"s", Duration::from_secs(12))
            .await;
    // About a second (the default liveness, plus two round trips); the bound leaves room for
    // a loaded machine, far below the 10 s a connection used to take to die.
    eprintln!("failover from a frozen region took {took:?}");
    assert!(took < Duration::from_secs(4), "failover took {took:?}");
    converged_without_x(&cluster, b"s").await;
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clocks_two_seconds_off_neither_refuse_every_write_nor_reopen_the_late_apply() {
    // eu-west's clock lags the client's by 2 s, us-east's leads by 2 s.
    let cluster = cluster_with_clocks([-2_000, 2_000, 0]);
    // A node whose clock leads takes writes (a deadline in the client's clock would look past).
    let virginia = client_near(&cluster, Location::new(38.9, -77.0).unwrap()).await;
    for n in 0..5 {
        let w = virginia
            .apply(b"v", Op::CounterAdd { delta: n }, Consistency::Local)
            .await
            .unwrap();
        assert_eq!(w.region, "us-east", "refused by the node whose clock leads");
    }
    virginia.close().await;
    // A node whose clock lags, frozen past the moment the client moved on, does not apply the
    // write when it thaws (in its clock, the deadline has not come yet).
    let mut session = client_near(&cluster, paris()).await;
    add_in_a_frozen_region_then_remove(&cluster, &mut session, b"s", Duration::from_millis(2_500))
        .await;
    converged_without_x(&cluster, b"s").await;
    session.close().await;
}
