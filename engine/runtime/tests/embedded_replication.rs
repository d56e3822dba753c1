//! Two embedded engines replicate by themselves over QUIC with mutual TLS (no tokio in the
//! application), on loopback.

#![allow(clippy::unwrap_used)]

use meridian::{Config, Engine};
use meridian_runtime::{replica_id_for, BackgroundRuntime, PeerSpec, RuntimeConfig, TlsFiles};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

fn write_certs(dir: &Path, names: &[&str]) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    for name in names {
        let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &ca).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}

fn free_udp() -> SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Two engines in `dir`, each replicating with the other over QUIC on loopback.
fn start_pair(dir: &Path) -> Vec<(Engine, BackgroundRuntime)> {
    let regions = [("a", "us-east"), ("b", "eu-west")];
    let dns: Vec<String> = regions
        .iter()
        .map(|(n, r)| meridian_runtime::tls::replica_dns_name("emb", n, r))
        .collect();
    write_certs(dir, &dns.iter().map(String::as_str).collect::<Vec<_>>());
    let addrs = [free_udp(), free_udp()];
    let mut nodes = Vec::new();
    for i in 0..2 {
        let (name, region) = regions[i];
        let (peer, peer_region) = regions[1 - i];
        let config = Config {
            replica_id: Some(replica_id_for("emb", name, 0)),
            ..Config::default()
        };
        let engine = Engine::open(dir.join(name), config).unwrap();
        let runtime = BackgroundRuntime::start(
            engine.clone(),
            RuntimeConfig {
                cluster: "emb".into(),
                name: name.into(),
                region: region.into(),
                incarnation: 0,
                listen: addrs[i],
                peers: vec![PeerSpec {
                    name: peer.into(),
                    region: peer_region.into(),
                    address: addrs[1 - i],
                    incarnation: 0,
                }],
                tls: TlsFiles {
                    ca: dir.join("ca.pem"),
                    cert: dir.join(format!("{}.pem", dns[i])),
                    key: dir.join(format!("{}.key", dns[i])),
                },
                disable_gso: false,
                client_requests_per_second: 1_000,
                client_burst: 100,
                replica_client_role: None,
                replication: Default::default(),
            },
        )
        .unwrap();
        nodes.push((engine, runtime));
    }
    nodes
}

#[test]
fn two_embedded_engines_replicate_by_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_pair(dir.path());
    let token = nodes[0].0.set_add(b"cart", &[b"book"]).unwrap();
    nodes[1].0.set_add(b"cart", &[b"pen"]).unwrap();
    // Replication wakes a reader waiting for the token at the other region.
    assert!(
        nodes[1].0.wait_covers(&token, Duration::from_secs(20)),
        "the write did not become visible in the other region"
    );
    // A token of a write that never happened times out.
    let mut unseen = token.clone();
    unseen
        .0
        .add(meridian::Dot::new(nodes[0].0.replica_id(), 1_000_000));
    let waited = Instant::now();
    assert!(!nodes[1].0.wait_covers(&unseen, Duration::from_millis(100)));
    assert!(waited.elapsed() >= Duration::from_millis(100));
    let start = Instant::now();
    while !(nodes[1].0.covers(&token)
        && nodes[0]
            .0
            .get_set(b"cart")
            .unwrap()
            .is_some_and(|s| s.len() == 2))
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "embedded engines did not replicate"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        nodes[1].0.get_set(b"cart").unwrap().unwrap(),
        vec![b"book".to_vec(), b"pen".to_vec()]
    );
    for (_, runtime) in nodes {
        runtime.shutdown();
    }
}

/// The largest batch a replica accepts (its entry exactly `record_bytes_max`, with the
/// default limits) crosses a real link: frame, link queue and QUIC windows all carry it.
#[test]
fn the_largest_batch_crosses_a_real_link() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_pair(dir.path());
    let e = &nodes[0].0;
    let max = e.config().record_bytes_max;
    let size = e.config().value_bytes_max - 4096;
    e.put(b"probe", &vec![1u8; size]).unwrap();
    let overhead = e.export(b"probe").unwrap().unwrap().len() - size;
    let per = (max - 10) / 4 - 2 - 8 - overhead;
    let last = per + (max - 10) - 4 * (per + 2 + 8 + overhead);
    let batch = ["b0", "b1", "b2", "b3"]
        .iter()
        .enumerate()
        .fold(meridian::Batch::new(), |b, (i, k)| {
            b.put(*k, vec![i as u8; if i == 3 { last } else { per }])
        });
    let token = e.write(batch).unwrap();
    assert!(
        nodes[1].0.wait_covers(&token, Duration::from_secs(30)),
        "the largest batch did not reach the other region"
    );
    let got = nodes[1].0.get(b"b3").unwrap().unwrap().values;
    assert_eq!(got[0].len(), last);
    for (_, runtime) in nodes {
        runtime.shutdown();
    }
}
