//! Session guarantees for writes, with real `meridian node` processes on loopback: a session's
//! delete or removal served by another region than the session's earlier write or read of the
//! key covers that write or read, or is refused (`NotYetVisible`, nothing written) while no
//! reachable region has applied it. The scenario: a region cut off from the others takes a
//! session's write, then dies before shipping it; the session's delete must not be
//! acknowledged as covering less.

#![allow(clippy::unwrap_used)]

mod support;

use meridian::{Op, ReadValue};
use meridian_runtime::client::new_request_id;
use meridian_runtime::client_proto::{ClientRequest, ClientResponse, Consistency};
use meridian_runtime::routed::{RoutedClient, RoutedError};
use std::time::{Duration, Instant};
use support::*;

const WAIT: Duration = Duration::from_secs(30);

fn put(v: &str) -> Op {
    Op::Put {
        value: v.as_bytes().to_vec(),
        context: None,
    }
}

/// Retries `write` while no region can take it yet (`NotYetVisible`, or no region at all while
/// one restarts), up to `WAIT`.
async fn until_taken(session: &RoutedClient, key: &[u8], op: Op) -> String {
    let started = Instant::now();
    loop {
        match session.apply(key, op.clone(), Consistency::Local).await {
            Ok(w) => return w.region,
            Err(RoutedError::NotYetVisible | RoutedError::NoRegion(_)) => {}
            Err(e) => panic!("{key:?}: {e}"),
        }
        assert!(started.elapsed() < WAIT, "{key:?} never taken");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until every region reads `key` as `expected` says.
async fn until_every_region(
    cluster: &Cluster,
    key: &[u8],
    expected: impl Fn(Option<&[ReadValue]>) -> bool,
) {
    let started = Instant::now();
    'poll: loop {
        assert!(
            started.elapsed() < WAIT,
            "{key:?}: the regions never agreed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        for i in 0..cluster.nodes.len() {
            let Ok(mut c) = cluster.client(i).await else {
                continue 'poll;
            };
            let read = c.read(key, 0).await.unwrap();
            if !expected(read.as_ref().map(|r| r.values.as_slice())) {
                continue 'poll;
            }
        }
        return;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_delete_and_remove_cover_what_it_wrote_and_read_in_a_region_that_died() {
    let mut cluster = placed_cluster_with(&["t", "ops:admin"], |_, _| {});
    let mut config = cluster.cluster_file("t", Some(paris())).routed_config();
    config.request_timeout = Duration::from_secs(2);
    config.session_wait_ms = 300;
    // Once eu-west fails, the session stays away from it: what it lacks must come to the
    // others by replication.
    config.breaker.open_ms = 120_000;
    config.breaker.open_ms_max = 120_000;
    let session = RoutedClient::connect(config).await.unwrap();
    until_first(&session, "eu-west").await;
    assert_eq!(session.route().region, "eu-west");

    // eu-west's replication links are cut. The session writes k there, and reads set s, which
    // another client filled there.
    let ops = cluster.client_as(0, "ops").await.unwrap();
    let cut = ops
        .request(&ClientRequest::Isolate { isolated: true })
        .await
        .unwrap();
    assert!(matches!(cut, ClientResponse::Done { .. }), "{cut:?}");
    let w = session
        .apply(b"k", put("v1"), Consistency::Local)
        .await
        .unwrap();
    assert_eq!(w.region, "eu-west");
    let mut other = cluster.client(0).await.unwrap();
    let add = Op::SetAdd {
        elems: vec![b"e".to_vec()],
    };
    other
        .apply_with(b"s", add, Consistency::Local, new_request_id())
        .await
        .unwrap();
    let read = session.read(b"s").await.unwrap().unwrap();
    assert_eq!(read.values, vec![ReadValue::Set(vec![b"e".to_vec()])]);

    // eu-west dies before shipping either. The session's next read fails over (and finds no
    // region with its writes).
    cluster.nodes[0].kill();
    let failed_over = session.read(b"k").await;
    assert!(
        matches!(failed_over, Err(RoutedError::NotYetVisible)),
        "{failed_over:?}"
    );

    // The delete and the removal go to regions that hold neither the write nor the element:
    // refused, nothing written (acknowledged, they would cover less than the session saw).
    let deleted = session.apply(b"k", Op::Delete, Consistency::Local).await;
    assert!(
        matches!(deleted, Err(RoutedError::NotYetVisible)),
        "{deleted:?}"
    );
    let remove = Op::SetRemove {
        elems: vec![b"e".to_vec()],
    };
    let removed = session
        .apply(b"s", remove.clone(), Consistency::Local)
        .await;
    assert!(
        matches!(removed, Err(RoutedError::NotYetVisible)),
        "{removed:?}"
    );
    // Each region refused at once rather than wait: no reachable peer writes or holds what
    // the session lacks.
    for node in &cluster.nodes[1..] {
        let text = node.metrics().unwrap();
        let skipped =
            meridian_tests::scrape::metric(&text, "meridian_client_token_waits_skipped_total");
        assert!(skipped >= 2.0, "{}: {skipped}", node.name());
    }
    // A write that does not depend on what is seen goes on meanwhile.
    let counted = session
        .apply(b"c", Op::CounterAdd { delta: 1 }, Consistency::Local)
        .await
        .unwrap();
    assert_ne!(counted.region, "eu-west");

    // eu-west returns (its isolation is forgotten) and ships what it held. The delete and the
    // removal are taken by another region once it has applied them, and cover them everywhere.
    cluster.nodes[0].start().unwrap();
    assert_ne!(until_taken(&session, b"k", Op::Delete).await, "eu-west");
    assert_ne!(until_taken(&session, b"s", remove).await, "eu-west");
    until_every_region(&cluster, b"k", |r| r.is_none()).await;
    until_every_region(&cluster, b"s", |r| {
        r.is_none() || matches!(r, Some([ReadValue::Set(e)]) if e.is_empty())
    })
    .await;
    session.close().await;
}

/// A session's write lost with a region's disk before any other region held it can never be
/// covered: reads are answered `Uncoverable` (naming the origin) instead of `NotYetVisible`
/// forever, and once the session forgets those writes it reads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_naming_writes_lost_with_a_disk_is_reported_and_can_be_forgotten() {
    let mut cluster = placed_cluster_with(&["t", "ops:admin"], |_, _| {});
    let mut config = cluster.cluster_file("t", Some(paris())).routed_config();
    config.session_wait_ms = 300;
    let session = RoutedClient::connect(config).await.unwrap();
    session
        .apply(b"kept", put("everywhere"), Consistency::Majority)
        .await
        .unwrap();

    // eu-west, cut off, takes the session's write, then loses its disk.
    let ops = cluster.client_as(0, "ops").await.unwrap();
    ops.request(&ClientRequest::Isolate { isolated: true })
        .await
        .unwrap();
    let w = session
        .apply(b"k", put("v1"), Consistency::Local)
        .await
        .unwrap();
    assert_eq!(w.region, "eu-west");
    let lost_origin = w.token.0.iter().next().unwrap().0;
    cluster.nodes[0].kill();
    std::fs::remove_dir_all(&cluster.nodes[0].config.data_dir).unwrap();
    cluster.nodes[0].start().unwrap();
    cluster.wait_linked(WAIT).unwrap();

    // Every region is up and none holds the write: the read says so, naming the origin.
    let started = Instant::now();
    let (origin, held) = loop {
        match session.read(b"kept").await {
            Err(RoutedError::Uncoverable { origin, held, .. }) => break (origin, held),
            // Until every link has announced its origin and reported what it applied.
            Err(RoutedError::NotYetVisible) => {}
            other => panic!("a token naming a lost write: {other:?}"),
        }
        assert!(started.elapsed() < WAIT, "never reported as uncoverable");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(origin, lost_origin);
    assert!(held < w.token.get(origin), "{held}");
    session.forget_lost(origin, held);
    let read = session.read(b"kept").await.unwrap().unwrap();
    assert!(
        matches!(&read.values[0], ReadValue::Register(s) if s.values == [b"everywhere".to_vec()])
    );
    assert!(
        session.read(b"k").await.unwrap().is_none(),
        "lost with the disk"
    );
    session.close().await;
}

/// Calls on one routed client run at once and keep the session: tasks sharing it each add an
/// element to one set, count once, write a key of their own and read it back at once; then a
/// read through the client sees every element and count, its token covers every write, and
/// another region given that token waits for them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_sharing_one_client_read_their_writes_and_a_later_read_sees_them_all() {
    const TASKS: usize = 16;
    let cluster = placed_cluster_with(&["t"], |_, _| {});
    let config = cluster.cluster_file("t", Some(paris())).routed_config();
    let session = std::sync::Arc::new(RoutedClient::connect(config).await.unwrap());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..TASKS {
        let session = session.clone();
        tasks.spawn(async move {
            let add = Op::SetAdd {
                elems: vec![format!("e{i:02}").into_bytes()],
            };
            let count = Op::CounterAdd { delta: 1 };
            let own = format!("k{i}");
            let value = format!("v{i}").into_bytes();
            let lww = Op::LwwSet {
                value: value.clone(),
            };
            let (added, counted, wrote) = tokio::join!(
                session.apply(b"members", add, Consistency::Local),
                session.apply(b"count", count, Consistency::Local),
                session.apply(own.as_bytes(), lww, Consistency::Local),
            );
            let wrote = wrote.unwrap();
            // Started after its write was acknowledged: it sees it.
            let read = session.read(own.as_bytes()).await.unwrap().unwrap();
            assert!(
                matches!(&read.values[..], [ReadValue::Lww(l)] if l.value == value),
                "{own}: {read:?}"
            );
            assert!(read.token.0.dominates(&wrote.token.0), "{own}: {read:?}");
            [added.unwrap().token, counted.unwrap().token, wrote.token]
        });
    }
    let mut written = Vec::new();
    while let Some(done) = tasks.join_next().await {
        written.extend(done.unwrap());
    }
    assert_eq!(written.len(), 3 * TASKS);

    // Every answer was taken into the session.
    let token = session.token();
    for w in &written {
        assert!(token.0.dominates(&w.0), "{token:?} lacks {w:?}");
    }
    let members: Vec<Vec<u8>> = (0..TASKS)
        .map(|i| format!("e{i:02}").into_bytes())
        .collect();
    let read = session.read(b"members").await.unwrap().unwrap();
    assert_eq!(read.values, vec![ReadValue::Set(members.clone())]);
    let read = session.read(b"count").await.unwrap().unwrap();
    assert_eq!(read.values, vec![ReadValue::Counter(TASKS as i64)]);

    // The farthest region, given the session's token, waits until it holds every write.
    let mut far = cluster.client(2).await.unwrap();
    far.token = token;
    let read = far.read(b"members", 10_000).await.unwrap().unwrap();
    assert_eq!(read.values, vec![ReadValue::Set(members)]);
    let read = far.read(b"count", 10_000).await.unwrap().unwrap();
    assert_eq!(read.values, vec![ReadValue::Counter(TASKS as i64)]);
    far.close().await;
    match std::sync::Arc::try_unwrap(session) {
        Ok(session) => session.close().await,
        Err(_) => panic!("a task still holds the client"),
    }
}
