//! Nodes and clients of two releases side by side, as a rolling upgrade has them: a node
//! pinned to the previous release's protocol versions (`[protocols]`: replication 4, client 5)
//! beside one speaking the newest; they link at the older version and replicate both ways,
//! the status shows each link's version, clients of either version work against either node,
//! expiries are refused while the older node is linked, and a dialer speaking no version in
//! common is refused at the handshake.

#![allow(clippy::unwrap_used)]

mod support;

use meridian_core::model::Op;
use meridian_runtime::client::Client;
use meridian_runtime::client::{new_request_id, ClientFailure};
use meridian_runtime::client_proto::{ClientRequest, ClientResponse, Consistency, ErrorCode};
use meridian_runtime::protocols::is_no_common_version;
use meridian_runtime::tls::client_config;
use std::time::Duration;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_the_previous_release_and_one_of_this_release_replicate_and_serve_both_clients() {
    let cluster = start_with(&[("aa", "us-east"), ("bb", "eu-west")], &["t"], |c| {
        if c.name == "aa" {
            c.protocols.replication_max = Some(4);
            c.protocols.client_max = Some(5);
        }
    });
    cluster.wait_linked(Duration::from_secs(30)).unwrap();
    let (old_node, new_node) = (&cluster.nodes[0], &cluster.nodes[1]);
    let tls = cluster.client_tls("t");

    // The link runs at the older version, as both ends say.
    let status = new_node.health().unwrap();
    let link = &status.peers[0];
    assert_eq!(
        (link.protocol, link.features.len()),
        (Some(4), 0),
        "{status:?}"
    );
    assert_eq!(old_node.health().unwrap().peers[0].protocol, Some(4));
    let metrics = new_node.metrics().unwrap();
    assert_eq!(
        scrape::metric(&metrics, "meridian_replication_link_protocol"),
        4.0,
        "{metrics}"
    );

    // A client of this release talks to the old node at its version, and writes replicate
    // both ways over the older link.
    let mut at_old = old_node.connect(&tls).await.unwrap();
    assert_eq!(at_old.version(), 5);
    at_old
        .apply(b"from-old", Op::CounterAdd { delta: 2 })
        .await
        .unwrap();
    let mut at_new = new_node.connect(&tls).await.unwrap();
    assert_eq!(
        at_new.version(),
        meridian_runtime::client_proto::CLIENT_PROTOCOL
    );
    at_new.token.merge(&at_old.token);
    let read = at_new.read(b"from-old", 10_000).await.unwrap();
    assert!(read.is_some(), "the old node's write reached the new one");
    at_new
        .apply(b"from-new", Op::CounterAdd { delta: 3 })
        .await
        .unwrap();
    at_old.token.merge(&at_new.token);
    assert!(at_old.read(b"from-new", 10_000).await.unwrap().is_some());

    // A session scan rides on version 6: the new node serves it; against the old node the
    // client answers `Unsupported` itself, nothing sent, and the connection lives on.
    let session_scan = ClientRequest::Scan {
        prefix: b"from-".to_vec(),
        limit: 10,
        after: None,
        token: Some(at_new.token.clone()),
        wait_ms: 1_000,
    };
    match at_new.request(&session_scan).await.unwrap() {
        ClientResponse::Rows { rows, .. } => assert_eq!(rows.len(), 2),
        other => panic!("{other:?}"),
    }
    match at_old.request(&session_scan).await {
        Err(ClientFailure::Server(e)) => assert_eq!(e.code, ErrorCode::Unsupported),
        other => panic!("{other:?}"),
    }
    assert!(at_old.status().await.is_ok());

    // Expiry rides on client protocol 8 and replication 9: the old node is never sent one,
    // and the new node refuses to set one while a member it links to cannot read it (states
    // reaching that member would go without it, and it counts their writes applied).
    let ttl = |ms| Op::Expire {
        expiry: meridian::Expiry::After(ms),
    };
    match at_old.apply(b"from-new", ttl(1)).await {
        Err(ClientFailure::Server(e)) => assert_eq!(e.code, ErrorCode::Unsupported),
        other => panic!("{other:?}"),
    }
    let expiring = vec![
        (b"short".to_vec(), Op::CounterAdd { delta: 1 }),
        (b"short".to_vec(), ttl(300)),
    ];
    match at_new
        .write_with(expiring, Consistency::Local, new_request_id())
        .await
    {
        Err(ClientFailure::Server(e)) => {
            assert_eq!(e.code, ErrorCode::InvalidOperation, "{e:?}");
            assert!(e.message.contains("does not read expiries"), "{e:?}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(at_new.expires_at(b"from-new").await.unwrap(), None);

    // A client of the previous release (client protocol 5 only) against the new node.
    let old_client = Client::connect_speaking(
        new_node.config.listen,
        &new_node.server_name(),
        &tls,
        Duration::from_secs(10),
        5,
    )
    .await
    .unwrap();
    assert_eq!(old_client.version(), 5);
    let status = old_client.status().await.unwrap();
    assert_eq!(
        status.peers[0].protocol, None,
        "version 5 carries no link version"
    );
    assert!(matches!(
        old_client
            .request(&ClientRequest::Scan {
                prefix: b"from-".to_vec(),
                limit: 10,
                after: None,
                token: None,
                wait_ms: 0,
            })
            .await
            .unwrap(),
        ClientResponse::Rows { .. }
    ));

    // A replica dialing with a version nobody speaks is refused by the TLS handshake, which
    // the dialer can tell apart from any other failure.
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let peer_tls = cluster.replica_tls(old_node.name());
    let future = client_config(&peer_tls, b"meridian-replication/99", false).unwrap();
    let refused = endpoint
        .connect_with(future, new_node.config.listen, &new_node.server_name())
        .unwrap()
        .await
        .unwrap_err()
        .to_string();
    assert!(is_no_common_version(&refused), "{refused}");
    endpoint.close(quinn::VarInt::from_u32(0), b"");
    at_new.close().await;
    at_old.close().await;
}

/// A routed client's scan against regions of the previous release (client protocol 5, whose
/// scans carry no token): each region is asked to read with the session's token first, then
/// to scan, and the page holds the session's writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_scan_against_previous_release_regions_waits_with_a_read_first() {
    let cluster = start_with(&[("aa", "us-east"), ("bb", "eu-west")], &["t"], |c| {
        c.protocols.client_max = Some(5);
    });
    cluster.wait_linked(Duration::from_secs(30)).unwrap();
    let config = cluster.cluster_file("t", None).routed_config();
    let session = meridian_runtime::routed::RoutedClient::connect(config)
        .await
        .unwrap();
    for k in ["p/1", "p/2", "p/3"] {
        session
            .apply(
                k.as_bytes(),
                Op::CounterAdd { delta: 1 },
                meridian_runtime::client_proto::Consistency::Local,
            )
            .await
            .unwrap();
    }
    let (rows, more) = session.scan_page(b"p/", None, 10).await.unwrap();
    let keys: Vec<&[u8]> = rows.iter().map(|(k, _)| k.as_slice()).collect();
    assert_eq!(keys, vec![&b"p/1"[..], b"p/2", b"p/3"]);
    assert!(!more);
    session.close().await;
}

/// A watch needs client protocol 7: a node pinned to 6 is told apart by the client before
/// anything is sent, and a routed watch takes the next region that serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_skips_a_region_of_an_older_client_protocol() {
    let cluster = start_with(&[("aa", "us-east"), ("bb", "eu-west")], &["t"], |c| {
        if c.name == "aa" {
            c.protocols.client_max = Some(6);
        }
    });
    cluster.wait_linked(Duration::from_secs(30)).unwrap();
    let tls = cluster.client_tls("t");
    let at_old = cluster.nodes[0].connect(&tls).await.unwrap();
    assert_eq!(at_old.version(), 6);
    let refused = at_old.watch(b"", None, None).await.err().unwrap();
    assert!(
        matches!(&refused, ClientFailure::Server(e) if e.code == ErrorCode::Unsupported),
        "{refused}"
    );
    let mut config = cluster.cluster_file("t", None).routed_config();
    config.request_timeout = Duration::from_secs(2);
    let client = meridian_runtime::routed::RoutedClient::connect(config)
        .await
        .unwrap();
    let mut watch = client.watch(b"k", None, None);
    let _heartbeat = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(watch.region().as_deref(), Some("eu-west"));
    client.close().await;
}
