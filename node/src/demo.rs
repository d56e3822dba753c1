//! `meridian demo` (`make demo`): three regions as separate `meridian node` processes on
//! loopback with generated certificates; conflicting writes that converge; lag metrics; one
//! region killed while writes continue; its restart and catch-up; a clean stop. Narrated.

use crate::certs::{self, InitArgs};
use anyhow::Context;
use meridian::{Op, ReadValue, VersionVector};
use meridian_runtime::client::Client;
use meridian_runtime::tls::replica_dns_name;
use meridian_runtime::TlsFiles;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CLUSTER: &str = "demo";
const REGIONS: [(&str, &str); 3] = [
    ("use1", "us-east"),
    ("euw1", "eu-west"),
    ("apn1", "ap-northeast"),
];

struct Region {
    name: &'static str,
    region: &'static str,
    addr: SocketAddr,
    metrics: SocketAddr,
    config: PathBuf,
    child: Option<Child>,
}

impl Drop for Region {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn step(text: &str) {
    println!("\n== {text}");
}

fn free_udp() -> anyhow::Result<SocketAddr> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?)
}

fn free_tcp() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn start(r: &mut Region) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(["node", "--config"])
        .arg(&r.config)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting a node")?;
    let stdout = child.stdout.take().context("node stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(line) if line.contains("listening on") => {
            println!("   {line} (pid {})", child.id());
            r.child = Some(child);
            Ok(())
        }
        other => {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("{} did not start: {other:?}", r.name)
        }
    }
}

/// Attempts at starting nodes: their ports are picked free and bound a moment later by the
/// node, and another socket's ephemeral port can land on one in between.
const START_ATTEMPTS: usize = 5;

/// Starts `r` on its ports, retrying while one of them is held by another socket.
fn restart(r: &mut Region) -> anyhow::Result<()> {
    let mut last = start(r);
    for _ in 1..START_ATTEMPTS {
        if last.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
        last = start(r);
    }
    last
}

/// Picks fresh ports for every region, writes the configurations and starts the nodes; on a
/// failure stops those started and tries again on new ports.
fn start_all(regions: &mut [Region]) -> anyhow::Result<()> {
    let mut last = Ok(());
    for _ in 0..START_ATTEMPTS {
        for r in regions.iter_mut() {
            if let Some(mut c) = r.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            r.addr = free_udp()?;
            r.metrics = free_tcp()?;
        }
        write_configs(regions)?;
        last = regions.iter_mut().try_for_each(start);
        if last.is_ok() {
            break;
        }
    }
    last
}

/// Each region's `meridian node` configuration, naming the others as peers.
fn write_configs(regions: &[Region]) -> anyhow::Result<()> {
    for r in regions {
        let mut text = format!(
            "cluster = \"{CLUSTER}\"\nname = \"{}\"\nregion = \"{}\"\ndata_dir = \"data-{}\"\nlisten = \"{}\"\nmetrics_listen = \"{}\"\n\
             [tls]\nca = \"certs/{}/ca.pem\"\ncert = \"certs/{}/{}.pem\"\nkey = \"certs/{}/{}.key\"\n",
            r.name, r.region, r.name, r.addr, r.metrics, r.name, r.name, r.name, r.name, r.name
        );
        for p in regions.iter().filter(|p| p.name != r.name) {
            text.push_str(&format!(
                "[[peers]]\nname = \"{}\"\nregion = \"{}\"\naddress = \"{}\"\n",
                p.name, p.region, p.addr
            ));
        }
        std::fs::write(&r.config, text)?;
    }
    Ok(())
}

fn metrics(addr: SocketAddr) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nhost: demo\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn describe(read: &Option<meridian::Read>) -> String {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match read.as_ref().and_then(|r| r.values.first()) {
        None => "(absent)".into(),
        Some(ReadValue::Register(s)) if s.values.len() > 1 => format!(
            "{} siblings: {}",
            s.values.len(),
            s.values
                .iter()
                .map(|v| format!("{:?}", text(v)))
                .collect::<Vec<_>>()
                .join(" and ")
        ),
        Some(ReadValue::Register(s)) => s
            .values
            .iter()
            .map(|v| format!("{:?}", text(v)))
            .collect::<Vec<_>>()
            .join(""),
        Some(ReadValue::Counter(n)) => n.to_string(),
        Some(other) => format!("{other:?}"),
    }
}

async fn connect(r: &Region, tls: &TlsFiles) -> anyhow::Result<Client> {
    Client::connect(r.addr, &replica_dns_name(CLUSTER, r.name, r.region), tls)
        .await
        .with_context(|| format!("connecting to {}", r.name))
}

/// Runs the demo.
pub fn run() -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("meridian-demo").tempdir()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(demo(dir.path()))
}

async fn demo(dir: &Path) -> anyhow::Result<()> {
    step("Step 1. A cluster CA and one certificate per region (mutual TLS between replicas)");
    let certs_dir = dir.join("certs");
    certs::init(&InitArgs {
        dir: certs_dir.clone(),
        cluster: CLUSTER.into(),
        replicas: REGIONS.iter().map(|(n, r)| format!("{n}:{r}")).collect(),
        clients: vec!["demo:write".into()],
    })?;
    println!("   wrote {}", certs_dir.display());
    let mut regions = Vec::new();
    for (name, region) in REGIONS {
        regions.push(Region {
            name,
            region,
            // Picked by `start_all`.
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics: SocketAddr::from(([127, 0, 0, 1], 0)),
            config: dir.join(format!("{name}.toml")),
            child: None,
        });
    }

    step("Step 2. Three regions, three `meridian node` processes on loopback");
    start_all(&mut regions)?;
    let client_dir = certs_dir.join("client-demo");
    let tls = TlsFiles {
        ca: client_dir.join("ca.pem"),
        cert: client_dir.join("client-demo.pem"),
        key: client_dir.join("client-demo.key"),
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    step("Step 3. Conflicting writes in two regions at once");
    let mut us = connect(&regions[0], &tls).await?;
    let mut eu = connect(&regions[1], &tls).await?;
    let mut ap = connect(&regions[2], &tls).await?;
    let unseen = |v: &str| Op::Put {
        value: v.as_bytes().to_vec(),
        context: Some(VersionVector::new()),
    };
    us.apply(b"profile:bio", unseen("Hello from New York"))
        .await?;
    eu.apply(b"profile:bio", unseen("Bonjour de Paris")).await?;
    println!("   us-east wrote \"Hello from New York\", eu-west wrote \"Bonjour de Paris\" (neither had seen the other)");
    for (c, n) in [(&mut us, "use1"), (&mut eu, "euw1"), (&mut ap, "apn1")] {
        c.apply(b"page:views", Op::CounterAdd { delta: 10 }).await?;
        println!("   {n}: page:views += 10");
    }
    ap.token.merge(&us.token);
    ap.token.merge(&eu.token);
    let bio = ap.read(b"profile:bio", 5_000).await?;
    let views = ap.read(b"page:views", 5_000).await?;
    println!("   ap-northeast reads profile:bio -> {}", describe(&bio));
    println!("   ap-northeast reads page:views  -> {}", describe(&views));
    if let Some(read) = bio {
        if let Some(ReadValue::Register(s)) = read.values.first() {
            ap.apply(
                b"profile:bio",
                Op::Put {
                    value: b"Hello / Bonjour".to_vec(),
                    context: Some(s.context.clone()),
                },
            )
            .await?;
            us.token.merge(&ap.token);
            println!("   ap-northeast resolves the conflict with the context it read");
            println!(
                "   us-east now reads profile:bio -> {}",
                describe(&us.read(b"profile:bio", 5_000).await?)
            );
        }
    }

    step("Step 4. Replication lag and round trips, from us-east's Prometheus endpoint");
    tokio::time::sleep(Duration::from_millis(600)).await;
    for line in metrics(regions[0].metrics)
        .lines()
        .filter(|l| l.starts_with("meridian_peer_"))
    {
        println!("   {line}");
    }

    step("Step 5. ap-northeast is killed (SIGKILL); the other regions keep taking writes");
    drop(ap);
    if let Some(mut c) = regions[2].child.take() {
        c.kill()?;
        c.wait()?;
    }
    let writes = 1_000u32;
    let started = Instant::now();
    for i in 0..writes {
        let c = if i % 2 == 0 { &mut us } else { &mut eu };
        c.apply(
            format!("order:{i:05}").as_bytes(),
            Op::LwwSet {
                value: format!("item-{i}").into_bytes(),
            },
        )
        .await?;
    }
    println!(
        "   {writes} writes in {:?} while ap-northeast was down",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let status = us.status().await?;
    for p in &status.peers {
        println!(
            "   us-east sees {:<5} link {:<4} lag {:>5} ops",
            p.name,
            if p.connected { "up" } else { "down" },
            p.lag_ops
        );
    }
    println!("   (a silent link is declared down after the 10 s QUIC idle timeout; the lag counts from the first unacknowledged write)");

    step("Step 6. ap-northeast restarts on its data directory and catches up");
    restart(&mut regions[2])?;
    let mut ap = connect(&regions[2], &tls).await?;
    ap.token.merge(&us.token);
    ap.token.merge(&eu.token);
    let started = Instant::now();
    let last = ap
        .read(format!("order:{:05}", writes - 1).as_bytes(), 15_000)
        .await?;
    anyhow::ensure!(last.is_some(), "ap-northeast did not catch up");
    println!(
        "   caught up in {:?}: it covers both regions' session tokens",
        started.elapsed()
    );
    // Back on a directory that has replicated, it writes nothing until every peer confirmed
    // it holds no write of its origin that the directory lacks.
    let mut status = ap.status().await?;
    println!("   ap-northeast's origin at first: {}", status.origin_note);
    let waited = Instant::now();
    while !status.writable && waited.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        status = ap.status().await?;
    }
    println!("   then: {}", status.origin_note);
    let views = ap.read(b"page:views", 0).await?;
    println!(
        "   ap-northeast reads page:views -> {}, profile:bio -> {}",
        describe(&views),
        describe(&ap.read(b"profile:bio", 0).await?)
    );

    step("Step 7. ap-northeast loses its disk: killed, its data directory emptied, restarted");
    ap.close().await;
    if let Some(mut c) = regions[2].child.take() {
        c.kill()?;
        c.wait()?;
    }
    std::fs::remove_dir_all(dir.join(format!("data-{}", regions[2].name)))?;
    restart(&mut regions[2])?;
    let mut ap = connect(&regions[2], &tls).await?;
    let status = ap.status().await?;
    println!("   ap-northeast's origin: {}", status.origin_note);
    ap.apply(
        b"order:after-disk-loss",
        Op::LwwSet {
            value: b"placed".to_vec(),
        },
    )
    .await?;
    println!("   it writes at once, under a new epoch: its old sequence numbers, which its peers hold, are never used again");
    let mut check = connect(&regions[0], &tls).await?;
    check.token = ap.token.clone();
    anyhow::ensure!(
        check
            .read(b"order:after-disk-loss", 15_000)
            .await?
            .is_some(),
        "us-east did not receive the write made after the disk loss"
    );
    ap.token.merge(&us.token);
    let back = ap
        .read(format!("order:{:05}", writes - 1).as_bytes(), 15_000)
        .await?;
    anyhow::ensure!(back.is_some(), "ap-northeast did not get its data back");
    println!("   us-east has that write; ap-northeast has every earlier write back from its peers");
    check.close().await;

    step("Step 8. Everything stops cleanly (SIGTERM, drain, flush)");
    us.close().await;
    eu.close().await;
    ap.close().await;
    for r in &mut regions {
        if let Some(mut c) = r.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let status = c.wait()?;
            println!("   {} exited: {status}", r.name);
        }
    }
    println!("\nDone.");
    Ok(())
}
