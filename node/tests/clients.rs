//! Clients are bounded and authorised: roles carried in their certificates, a replica's
//! certificate refused as a client, rate limits and connection caps per client identity,
//! token waits that hold no thread, scans bounded in bytes, and a CA key kept out of the
//! directories nodes and clients read. Real `meridian node` processes on loopback.

#![allow(clippy::unwrap_used)]

mod support;

use meridian::{CausalToken, Dot, Op, OriginId};
use meridian_runtime::client::{Client, ClientFailure};
use meridian_runtime::client_proto::{ClientRequest, ClientResponse, ErrorCode};
use std::time::{Duration, Instant};
use support::*;

const ONE: [(&str, &str); 1] = [("apn1", "ap-northeast")];

fn put(v: &[u8]) -> Op {
    Op::Put {
        value: v.to_vec(),
        context: None,
    }
}

async fn connect_as(cluster: &Cluster, name: &str) -> Result<Client, ClientFailure> {
    Client::connect(
        cluster.nodes[0].config.listen,
        &cluster.nodes[0].server_name(),
        &cluster.client_tls(name),
    )
    .await
}

fn code(r: Result<impl std::fmt::Debug, ClientFailure>) -> Option<ErrorCode> {
    match r {
        Err(ClientFailure::Server(e)) => Some(e.code),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_in_client_certificates_are_enforced_and_replicas_are_not_clients() {
    let cluster = start_with(&ONE, &["w:write", "r:read"], |_| {});
    let mut writer = connect_as(&cluster, "w").await.unwrap();
    writer.apply(b"k", put(b"v")).await.unwrap();
    let mut reader = connect_as(&cluster, "r").await.unwrap();
    assert!(reader.read(b"k", 0).await.unwrap().is_some());
    assert!(reader.status().await.is_ok());
    assert_eq!(
        code(reader.apply(b"k", put(b"no")).await),
        Some(ErrorCode::Forbidden)
    );
    // The node's own certificate, used as a client: refused (no `access.replica_role`).
    let as_replica = Client::connect(
        cluster.nodes[0].config.listen,
        &cluster.nodes[0].server_name(),
        &cluster.replica_tls("apn1"),
    )
    .await;
    let refused = match as_replica {
        Err(_) => true,
        Ok(c) => c.status().await.is_err(),
    };
    assert!(refused, "a replica certificate acted as a client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_certificate_acts_as_a_client_only_with_the_configured_role() {
    let cluster = start_with(&ONE, &["t"], |c| {
        c.access.replica_role = Some("read".into())
    });
    let c = Client::connect(
        cluster.nodes[0].config.listen,
        &cluster.nodes[0].server_name(),
        &cluster.replica_tls("apn1"),
    )
    .await
    .unwrap();
    assert!(c.status().await.is_ok());
    let mut c = c;
    assert_eq!(
        code(c.apply(b"k", put(b"v")).await),
        Some(ErrorCode::Forbidden)
    );
}

#[test]
fn certs_init_keeps_the_ca_key_out_of_node_and_client_directories() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .args(["certs", "init", "--cluster", "x", "--replica", "n1:us-east"])
        .args(["--client", "c:read", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(dir.path().join("ca/ca.key").exists());
    for sub in ["n1", "client-c"] {
        let names: Vec<String> = std::fs::read_dir(dir.path().join(sub))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.contains(&"ca.pem".to_string()), "{sub}: {names:?}");
        assert!(!names.iter().any(|n| n == "ca.key"), "{sub}: {names:?}");
    }
    // A role that does not exist is refused, naming it.
    let out = std::process::Command::new(BIN)
        .args([
            "certs",
            "init",
            "--cluster",
            "x",
            "--client",
            "c:root",
            "--dir",
        ])
        .arg(dir.path().join("other"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("root"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_connection_caps_follow_the_client_identity() {
    let cluster = start_with(&ONE, &["t"], |c| {
        c.limits.client_requests_per_second = 1;
        c.limits.client_burst = 5;
    });
    // Two connections of one client share one bucket: 5 requests, not 5 each.
    let a = connect_as(&cluster, "t").await.unwrap();
    let b = connect_as(&cluster, "t").await.unwrap();
    let mut limited = 0;
    for i in 0..8 {
        let c = if i % 2 == 0 { &a } else { &b };
        if code(c.status().await) == Some(ErrorCode::RateLimited) {
            limited += 1;
        }
    }
    assert!(limited >= 2, "only {limited} of 8 requests were limited");
    // Connections per identity are capped.
    let mut held = vec![a, b];
    let mut refused = false;
    for _ in 0..40 {
        match connect_as(&cluster, "t").await {
            Ok(c) => {
                // A refused connection fails its first request.
                if matches!(
                    c.status().await,
                    Err(ClientFailure::Stream(_) | ClientFailure::Connect(_))
                ) {
                    refused = true;
                    break;
                }
                held.push(c);
            }
            Err(_) => {
                refused = true;
                break;
            }
        }
    }
    assert!(
        refused,
        "{} connections of one client were accepted",
        held.len()
    );
    assert!(held.len() <= 32, "{}", held.len());
}

/// Hundreds of reads waiting for a token the region will not cover hold no thread: a write
/// and a read issued meanwhile are answered at once (a blocking thread per wait exhausted
/// the pool and stalled them until the waits timed out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_waits_hold_no_thread() {
    let cluster = start(&ONE);
    let unseen = CausalToken::of_dot(Dot::new(OriginId(7), 1_000_000));
    let mut clients = Vec::new();
    for _ in 0..10 {
        clients.push(std::sync::Arc::new(cluster.client(0).await.unwrap()));
    }
    let mut waits = Vec::new();
    for c in &clients {
        for _ in 0..60 {
            let c = c.clone();
            let token = unseen.clone();
            waits.push(tokio::spawn(async move {
                c.request(&ClientRequest::Read {
                    key: b"k".to_vec(),
                    token: Some(token),
                    wait_ms: 4_000,
                })
                .await
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut other = cluster.client(0).await.unwrap();
    let started = Instant::now();
    other.apply(b"k", put(b"v")).await.unwrap();
    assert!(other.read(b"k", 0).await.unwrap().is_some());
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(2_500),
        "a write waited {took:?}"
    );
    let mut not_yet = 0;
    for w in waits {
        if let Err(ClientFailure::Server(e)) = w.await.unwrap() {
            // Uncoverable once the wait ends: no member writes under replica 7.
            if e.code == ErrorCode::Uncoverable && e.lost == Some((OriginId(7), 0)) {
                not_yet += 1;
            }
        }
    }
    assert_eq!(not_yet, 600, "every wait ended, answered Uncoverable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_come_in_pages_bounded_in_bytes() {
    let cluster = start(&ONE);
    let mut c = cluster.client(0).await.unwrap();
    for i in 0..12u32 {
        c.apply(format!("big{i:02}").as_bytes(), put(&vec![1u8; 1 << 20]))
            .await
            .unwrap();
    }
    let mut after = None;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let response = c
            .request(&ClientRequest::Scan {
                prefix: b"big".to_vec(),
                limit: 1_000,
                after: after.clone(),
                token: None,
                wait_ms: 0,
            })
            .await
            .unwrap();
        let ClientResponse::Rows { rows, more } = response else {
            panic!("rows expected");
        };
        pages += 1;
        assert!(!rows.is_empty());
        assert!(rows.len() <= 9, "a page of {} MiB", rows.len());
        after = rows.last().map(|(k, _)| k.clone());
        seen.extend(rows.into_iter().map(|(k, _)| k));
        if !more {
            break;
        }
        assert!(pages < 10);
    }
    assert!(pages >= 2);
    let expected: Vec<Vec<u8>> = (0..12u32)
        .map(|i| format!("big{i:02}").into_bytes())
        .collect();
    assert_eq!(seen, expected);
}

/// The CLI reads any type as JSON, nested maps included (byte-string field names used to
/// make it fail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reads_a_map_as_json() {
    let cluster = start(&ONE);
    let path = cluster.dir().join("client.toml");
    cluster.cluster_file("t", None).write(&path).unwrap();
    let cli = |args: &[&str]| cli(&path, args);
    cli(&["map-add", "cart", "apple", "2"]);
    cli(&["map-set", "cart", "note", "gift"]);
    let json: serde_json::Value = serde_json::from_str(&cli(&["--json", "get", "cart"])).unwrap();
    let map = &json["values"][0]["map"];
    assert_eq!(map["apple"][0]["counter"], 2, "{json}");
    assert_eq!(map["note"][0]["lww"], "gift", "{json}");
    assert!(json["token"].as_str().is_some_and(|t| !t.is_empty()));
}

/// The daemon's commands are an operator's: the lab's (demo, bench, outage, sim) are
/// `meridian-lab`'s.
#[test]
fn the_daemons_help_names_only_an_operators_commands() {
    let out = std::process::Command::new(BIN)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8_lossy(&out.stdout);
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        commands,
        [
            "node",
            "certs",
            "client",
            "route",
            "local-cluster",
            "netem",
            "admin",
            "help"
        ],
        "{help}"
    );
}
