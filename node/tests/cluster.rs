//! Real `meridian node` processes on loopback: convergence with visible conflicts, session
//! tokens across regions, catch-up after SIGKILL, refusal of foreign and unknown peers, bad
//! frames that close only their stream or link, and configuration errors that name the field.

#![allow(clippy::unwrap_used)]

mod support;

use meridian::{Op, ReadValue, VersionVector};
use meridian_runtime::client_proto::{
    decode, encode, Answer, ClientRequest, ClientResponse, ErrorCode,
};
use meridian_runtime::tls::{client_config, ALPN_CLIENT, ALPN_REPLICATION};
use std::path::Path;
use std::time::Duration;
use support::*;

const REGIONS: [(&str, &str); 3] = [
    ("apn1", "ap-northeast"),
    ("euw1", "eu-west"),
    ("use1", "us-east"),
];
const WAIT: Duration = Duration::from_secs(20);

async fn register(c: &mut meridian_runtime::client::Client, key: &[u8]) -> Option<Vec<Vec<u8>>> {
    let read = c.read(key, 0).await.ok()??;
    match read.values.first()? {
        ReadValue::Register(s) => Some(s.values.clone()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_regions_converge_and_keep_concurrent_writes_as_siblings() {
    let cluster = start(&REGIONS);
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(cluster.client(i).await.unwrap());
    }
    // Writes with an empty read context supersede nothing: two regions, two siblings.
    let blind = |v: &str| Op::Put {
        value: v.as_bytes().to_vec(),
        context: Some(VersionVector::new()),
    };
    clients[0]
        .apply(b"conflict", blind("from-apn1"))
        .await
        .unwrap();
    clients[2]
        .apply(b"conflict", blind("from-use1"))
        .await
        .unwrap();
    clients[1]
        .apply(b"views", Op::CounterAdd { delta: 5 })
        .await
        .unwrap();
    clients[2]
        .apply(b"views", Op::CounterAdd { delta: 7 })
        .await
        .unwrap();
    for (i, c) in clients.iter_mut().enumerate() {
        let start = std::time::Instant::now();
        let mut converged = false;
        while !converged && start.elapsed() < WAIT {
            let mut siblings = register(c, b"conflict").await.unwrap_or_default();
            siblings.sort();
            let views = c.read(b"views", 0).await.ok().flatten();
            converged = siblings == vec![b"from-apn1".to_vec(), b"from-use1".to_vec()]
                && matches!(
                    views.as_ref().and_then(|r| r.values.first()),
                    Some(ReadValue::Counter(12))
                );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            converged,
            "region {} did not converge",
            cluster.nodes[i].name()
        );
    }
    let status = clients[0].status().await.unwrap();
    assert_eq!(status.peers.len(), 2);
    assert!(status.peers.iter().all(|p| p.connected), "{status:?}");
    let metrics = cluster.nodes[0].metrics().unwrap();
    assert!(metrics.contains("meridian_peer_lag_ops"), "{metrics}");
    assert!(
        scrape::metric(&metrics, "meridian_peer_quic_cwnd_bytes") > 0.0,
        "no congestion window exported:\n{metrics}"
    );
    let conflicts: f64 = (0..3)
        .map(|i| {
            let text = cluster.nodes[i].metrics().unwrap();
            scrape::metric(&text, "meridian_conflicts_merged_total")
        })
        .sum();
    assert!(
        conflicts >= 1.0,
        "concurrent writes were merged without being counted as conflicts"
    );
    let health = cluster.nodes[0].health().unwrap();
    assert!(health.peers.iter().all(|p| p.connected), "{health:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_token_reads_its_own_write_in_another_region() {
    let cluster = start(&REGIONS);
    let mut writer = cluster.client(0).await.unwrap();
    writer
        .apply(
            b"profile",
            Op::LwwSet {
                value: b"v1".to_vec(),
            },
        )
        .await
        .unwrap();
    // The same session, failed over to another region, waits for its token there.
    let mut reader = cluster.client(2).await.unwrap();
    reader.token = writer.token.clone();
    let read = reader.read(b"profile", 5_000).await.unwrap().unwrap();
    assert!(matches!(&read.values[0], ReadValue::Lww(l) if l.value == b"v1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_region_catches_up_after_restart() {
    let mut cluster = start(&REGIONS);
    cluster.nodes[2].kill();
    let mut c0 = cluster.client(0).await.unwrap();
    for i in 0..200u32 {
        c0.apply(
            format!("k{i}").as_bytes(),
            Op::Put {
                value: b"x".to_vec(),
                context: None,
            },
        )
        .await
        .unwrap();
    }
    cluster.nodes[2].start().unwrap();
    let mut c2 = cluster.client(2).await.unwrap();
    c2.token = c0.token.clone();
    let read = c2.read(b"k199", 15_000).await.unwrap();
    assert!(read.is_some(), "restarted region did not catch up");
    for i in 0..200u32 {
        assert!(
            c2.read(format!("k{i}").as_bytes(), 0)
                .await
                .unwrap()
                .is_some(),
            "k{i} missing"
        );
    }
}

/// The operator's way to lose a disk: a region killed, its data directory emptied, restarted
/// with the same configuration. Its writes after the restart reach every region (they used to
/// reuse sequence numbers its peers held, and vanished everywhere), and its writes from before
/// come back to it from its peers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_restarted_on_an_emptied_directory_loses_none_of_its_writes() {
    let mut cluster = start(&REGIONS);
    let put = |v: &str| Op::Put {
        value: v.as_bytes().to_vec(),
        context: None,
    };
    let mut c2 = cluster.client(2).await.unwrap();
    for i in 0..20u32 {
        c2.apply(format!("before{i}").as_bytes(), put("b"))
            .await
            .unwrap();
    }
    let before = c2.token.clone();
    let mut c0 = cluster.client(0).await.unwrap();
    c0.token = before.clone();
    assert!(c0.read(b"before19", 15_000).await.unwrap().is_some());
    let old_origin = c2.status().await.unwrap().origin;

    cluster.nodes[2].kill();
    std::fs::remove_dir_all(cluster.dir().join("data-use1")).unwrap();
    cluster.nodes[2].start().unwrap();
    let mut c2 = cluster.client(2).await.unwrap();
    let status = c2.status().await.unwrap();
    assert!(status.writable, "{status:?}");
    assert_ne!(status.origin, old_origin, "a new epoch: {status:?}");
    for i in 0..20u32 {
        c2.apply(format!("after{i}").as_bytes(), put("a"))
            .await
            .unwrap();
    }
    let mut everything = before;
    everything.merge(&c2.token);
    for region in 0..3 {
        let mut c = cluster.client(region).await.unwrap();
        c.token = everything.clone();
        assert!(
            c.read(b"after19", 20_000).await.unwrap().is_some(),
            "region {region} does not cover every write"
        );
        for i in 0..20u32 {
            for key in [format!("before{i}"), format!("after{i}")] {
                assert!(
                    c.read(key.as_bytes(), 0).await.unwrap().is_some(),
                    "{key} missing in region {region}"
                );
            }
        }
    }
}

/// An operator error: a replica brought back under a new incarnation that its peers'
/// configurations do not name. The link is refused, with the reason in both nodes' status,
/// instead of its writes being merged under an identity nobody vouches for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_under_an_incarnation_its_peers_do_not_expect_is_refused_visibly() {
    let mut cluster = start(&REGIONS[..2]);
    cluster.nodes[1].kill();
    std::fs::remove_dir_all(cluster.dir().join("data-euw1")).unwrap();
    cluster.nodes[1].config.incarnation = 1;
    cluster.nodes[1].start().unwrap();
    let c0 = cluster.client(0).await.unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let status = c0.status().await.unwrap();
        let peer = status.peers.iter().find(|p| p.name == "euw1").unwrap();
        if let Some(why) = &peer.last_error {
            assert!(why.contains("incarnation"), "{why}");
            assert!(!peer.connected);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no refusal in {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(cluster.nodes[0]
        .metrics()
        .unwrap()
        .contains("meridian_peer_identity_refused_total"));
}

/// SIGTERM drains and flushes with the metrics endpoint on (the endpoint used to hold the
/// runtime, and the node exited without either); the endpoint drops a client that sends
/// nothing instead of holding its connection open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_with_the_metrics_endpoint_on_and_idle_metrics_clients_are_dropped() {
    use std::io::Read;
    let mut cluster = start(&REGIONS[..1]);
    let mut idle =
        std::net::TcpStream::connect(cluster.nodes[0].config.metrics_listen.unwrap()).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    assert_eq!(idle.read(&mut buf).unwrap(), 0, "closed by the node");
    assert!(started.elapsed() < Duration::from_secs(12));
    assert!(
        cluster.nodes[0].metrics().unwrap().contains("meridian_"),
        "still serving"
    );

    let mut c = cluster.client(0).await.unwrap();
    for i in 0..10u32 {
        c.apply(
            format!("k{i}").as_bytes(),
            Op::Put {
                value: b"v".to_vec(),
                context: None,
            },
        )
        .await
        .unwrap();
    }
    c.close().await;
    assert!(
        cluster.nodes[0]
            .terminate()
            .unwrap()
            .is_some_and(|s| s.success()),
        "a clean exit"
    );
    let tables = std::fs::read_dir(cluster.dir().join("data-apn1"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "sst"))
        .count();
    assert!(tables > 0, "memtables were flushed at shutdown");
}

/// A value of exactly `value_bytes_max` written through a node replicates; one byte more is
/// refused with a typed error the client can act on; a request larger than any node accepts
/// is refused by the client without being sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_value_replicates_and_one_byte_more_is_refused_at_the_client() {
    use meridian_runtime::client::ClientFailure;
    let cluster = start(&REGIONS[..2]);
    let max = meridian::Config::default().value_bytes_max;
    let mut c0 = cluster.client(0).await.unwrap();
    let put = |n: usize| Op::Put {
        value: vec![9u8; n],
        context: None,
    };
    c0.apply(b"largest", put(max)).await.unwrap();
    match c0.apply(b"over", put(max + 1)).await {
        Err(ClientFailure::Server(e)) => assert_eq!(e.code, ErrorCode::ValueTooLarge),
        other => panic!("expected ValueTooLarge, got {other:?}"),
    }
    match c0
        .apply(b"huge", put(meridian::limits::CLIENT_FRAME_BYTES_MAX))
        .await
    {
        Err(ClientFailure::TooLarge { .. }) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let mut c1 = cluster.client(1).await.unwrap();
    c1.token = c0.token.clone();
    let read = c1.read(b"largest", 20_000).await.unwrap().unwrap();
    assert!(matches!(&read.values[0], ReadValue::Register(s) if s.values[0].len() == max));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_from_another_ca_or_outside_the_cluster_are_refused() {
    let cluster = start(&REGIONS[..2]);
    let target = cluster.nodes[0].config.as_peer();
    // Intruder "aaa" sorts first, so it dials. One holds a certificate from another CA, the
    // other a certificate from the cluster CA under a name the cluster does not list.
    let foreign = Cluster::prepare(CLUSTER, &[("aaa", "ap-northeast")], &["t"]).unwrap();
    cluster.add_certs(&["aaa:ap-northeast"], &[]).unwrap();
    let mut intruders = Vec::new();
    for (label, certs_dir) in [
        ("foreign", foreign.certs_dir()),
        ("non-member", cluster.certs_dir()),
    ] {
        let mut config = NodeConfig::new(
            CLUSTER,
            "aaa",
            "ap-northeast",
            cluster.dir().join(format!("data-{label}")),
            "127.0.0.1:0".parse().unwrap(),
            meridian_config::dev_certs::replica_files(&certs_dir, "aaa"),
        );
        config.peers = vec![target.clone()];
        let path = cluster.dir().join(format!("{label}.toml"));
        let mut node = NodeProcess::new(Path::new(BIN), config, path);
        node.start_on_fresh_ports().unwrap();
        intruders.push((
            node,
            meridian_config::dev_certs::client_files(&certs_dir, "t"),
        ));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (node, tls) in &intruders {
        let client = node.connect(tls).await.unwrap();
        let status = client.status().await.unwrap();
        assert!(
            status.peers.iter().all(|p| !p.connected),
            "an intruder got a link: {status:?}"
        );
    }
    let metrics = cluster.nodes[0].metrics().unwrap();
    let refused = scrape::metric(&metrics, "meridian_peers_refused_total");
    assert!(refused >= 1.0, "the non-member was not refused:\n{metrics}");
    let status = cluster.client(0).await.unwrap().status().await.unwrap();
    assert!(status.peers.iter().all(|p| p.name != "aaa"));
    assert!(
        status.peers.iter().all(|p| p.connected),
        "the real link must stay up: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_frames_close_only_their_stream_or_link() {
    let cluster = start(&REGIONS[..2]);
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let client_tls = cluster.client_tls("t");
    let conn = endpoint
        .connect_with(
            client_config(&client_tls, ALPN_CLIENT, false).unwrap(),
            cluster.nodes[0].config.listen,
            &cluster.nodes[0].server_name(),
        )
        .unwrap()
        .await
        .unwrap();
    // A well-framed request that does not decode: a typed error, the connection lives on.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&5u32.to_be_bytes()).await.unwrap();
    send.write_all(b"\x01\xff\xff\xff\xff").await.unwrap();
    send.finish().unwrap();
    let reply = recv.read_to_end(1 << 20).await.unwrap();
    let answer: Answer = decode(&reply[4..]).unwrap();
    assert!(matches!(answer.response, ClientResponse::Error(e) if e.code == ErrorCode::BadRequest));
    // A length far over the bound: refused before allocation.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    let _ = send.finish();
    let reply = recv.read_to_end(1 << 20).await.unwrap();
    let answer: Answer = decode(&reply[4..]).unwrap();
    assert!(matches!(answer.response, ClientResponse::Error(e) if e.code == ErrorCode::BadRequest));
    // The same connection still serves.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let req = encode(&ClientRequest::Status);
    send.write_all(&(req.len() as u32).to_be_bytes())
        .await
        .unwrap();
    send.write_all(&req).await.unwrap();
    send.finish().unwrap();
    let reply = recv.read_to_end(1 << 20).await.unwrap();
    assert!(matches!(
        decode::<Answer>(&reply[4..]).unwrap().response,
        ClientResponse::Status(_)
    ));

    // On a replication link (posing as the configured peer, with its certificate): garbage
    // closes that link only; the node keeps serving clients and its other link comes back.
    let peer = &cluster.nodes[1];
    let peer_tls = cluster.replica_tls(peer.name());
    let repl = endpoint
        .connect_with(
            client_config(&peer_tls, ALPN_REPLICATION, false).unwrap(),
            cluster.nodes[0].config.listen,
            &cluster.nodes[0].server_name(),
        )
        .unwrap()
        .await
        .unwrap();
    let mut uni = repl.open_uni().await.unwrap();
    uni.write_all(&7u32.to_be_bytes()).await.unwrap();
    uni.write_all(b"garbage").await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(10), repl.closed()).await;
    assert!(
        closed.is_ok(),
        "a garbage replication frame must close the link"
    );
    let mut c0 = cluster.client(0).await.unwrap();
    c0.apply(b"still", Op::CounterAdd { delta: 1 })
        .await
        .unwrap();
    let mut c1 = cluster.client(1).await.unwrap();
    c1.token = c0.token.clone();
    assert!(
        c1.read(b"still", 15_000).await.unwrap().is_some(),
        "replication did not recover"
    );
}

#[test]
fn configuration_errors_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let base = "cluster = \"c\"\nname = \"a\"\nregion = \"r\"\ndata_dir = \"d\"\nlisten = \"127.0.0.1:0\"\n[tls]\nca = \"x\"\ncert = \"y\"\nkey = \"z\"\n";
    let cases = [
        (format!("{base}bogus = 1\n").replacen("[tls]", "colour = \"red\"\n[tls]", 1), "colour"),
        (base.replace("cluster = \"c\"", "cluster = \"c\"\ndurability = \"never\""), "durability"),
        (base.replace("name = \"a\"", "name = \"Not A Label\""), "name"),
        (base.replace("listen = \"127.0.0.1:0\"", "listen = \"nowhere\""), "listen"),
        (format!("{base}[[peers]]\nname = \"b\"\nregion = \"r\"\naddress = \"127.0.0.1:1\"\nweight = 3\n"), "weight"),
        (format!("{base}[limits]\nreplication_cache_mib = 99999999\n"), "replication_cache_mib"),
    ];
    for (text, field) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, &text).unwrap();
        let out = std::process::Command::new(BIN)
            .args(["node", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(!out.status.success(), "accepted a bad config:\n{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(field),
            "error for `{field}` does not name it: {err}"
        );
    }
}
