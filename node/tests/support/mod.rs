//! A cluster of real `meridian node` processes on loopback, with generated certificates and
//! ephemeral ports; everything it starts is killed when it is dropped.

#![allow(dead_code, clippy::unwrap_used)]

use meridian_runtime::client::Client;
use meridian_runtime::TlsFiles;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_meridian");
pub const CLUSTER: &str = "test";

pub struct Node {
    pub name: String,
    pub region: String,
    pub addr: SocketAddr,
    pub metrics: SocketAddr,
    pub config: PathBuf,
    child: Option<Child>,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<Node>,
}

/// A free loopback UDP port (and the same number is checked free for TCP by the caller's luck).
pub fn free_udp() -> SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

pub fn free_tcp() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Runs `meridian certs <verb>` (`init` makes a CA, `add` signs with the one in `dir`).
fn certs_command(verb: &str, dir: &Path, replicas: &[(&str, &str)], clients: &[&str]) {
    let mut cmd = Command::new(BIN);
    cmd.args(["certs", verb, "--dir"])
        .arg(dir)
        .args(["--cluster", CLUSTER]);
    for (n, r) in replicas {
        cmd.args(["--replica", &format!("{n}:{r}")]);
    }
    for c in clients {
        cmd.args(["--client", c]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "certs {verb}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A new cluster CA with certificates, in `dir`.
pub fn certs(dir: &Path, replicas: &[(&str, &str)], clients: &[&str]) {
    certs_command("init", dir, replicas, clients);
}

pub fn node_config(node: &Node, certs: &Path, data: &Path, peers: &[&Node]) -> String {
    let mut s = format!(
        "cluster = \"{CLUSTER}\"\nname = \"{}\"\nregion = \"{}\"\ndata_dir = \"{}\"\nlisten = \"{}\"\nmetrics_listen = \"{}\"\n\
         [tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        node.name,
        node.region,
        data.display(),
        node.addr,
        node.metrics,
        certs.join(&node.name).join("ca.pem").display(),
        certs.join(&node.name).join(format!("{}.pem", node.name)).display(),
        certs.join(&node.name).join(format!("{}.key", node.name)).display(),
    );
    for p in peers {
        s.push_str(&format!(
            "[[peers]]\nname = \"{}\"\nregion = \"{}\"\naddress = \"{}\"\n",
            p.name, p.region, p.addr
        ));
    }
    s
}

impl Node {
    /// A node description with fresh loopback ports.
    pub fn new(name: &str, region: &str, config: PathBuf) -> Node {
        Node {
            name: name.into(),
            region: region.into(),
            addr: free_udp(),
            metrics: free_tcp(),
            config,
            child: None,
        }
    }
}

/// The files of client `name` in a directory `certs init` wrote.
pub fn client_tls(certs: &Path, name: &str) -> TlsFiles {
    let dir = certs.join(format!("client-{name}"));
    TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join(format!("client-{name}.pem")),
        key: dir.join(format!("client-{name}.key")),
    }
}

/// The files of replica `name` in a directory `certs init` wrote.
pub fn node_tls(certs: &Path, name: &str) -> TlsFiles {
    let dir = certs.join(name);
    TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
    }
}

/// Issues more certificates from the CA in `dir` (`certs add`).
pub fn certs_add(dir: &Path, replicas: &[(&str, &str)], clients: &[&str]) {
    certs_command("add", dir, replicas, clients);
}

impl Cluster {
    /// Writes certificates and configurations for `regions` (name, region) and starts them all
    /// (again on fresh ports if one of them was taken before its node bound it).
    pub fn start(regions: &[(&str, &str)]) -> Cluster {
        Cluster::start_with(regions, &["t"], "")
    }

    /// `start`, with certificates for `clients` (`NAME[:ROLE]`) and `extra` appended to every
    /// node's configuration.
    pub fn start_with(regions: &[(&str, &str)], clients: &[&str], extra: &str) -> Cluster {
        attempts(Duration::ZERO, || {
            Cluster::try_start(regions, clients, extra)
        })
        .unwrap_or_else(|why| panic!("the cluster did not start: {why}"))
    }

    fn try_start(
        regions: &[(&str, &str)],
        clients: &[&str],
        extra: &str,
    ) -> Result<Cluster, String> {
        let dir = tempfile::tempdir().unwrap();
        let certs_dir = dir.path().join("certs");
        certs(&certs_dir, regions, clients);
        let mut nodes: Vec<Node> = regions
            .iter()
            .map(|(n, r)| Node::new(n, r, dir.path().join(format!("{n}.toml"))))
            .collect();
        for i in 0..nodes.len() {
            let peers: Vec<&Node> = nodes
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, n)| n)
                .collect();
            let text = node_config(
                &nodes[i],
                &certs_dir,
                &dir.path().join(format!("data-{}", nodes[i].name)),
                &peers,
            );
            std::fs::write(&nodes[i].config, text + extra).unwrap();
        }
        let mut cluster = Cluster {
            dir,
            nodes: Vec::new(),
        };
        cluster.nodes = std::mem::take(&mut nodes);
        for i in 0..cluster.nodes.len() {
            let node = &mut cluster.nodes[i];
            let child = try_spawn_node(&node.config).map_err(|e| format!("{}: {e}", node.name))?;
            node.child = Some(child);
        }
        Ok(cluster)
    }

    /// Starts node `i` (again, on its ports: retried while another socket holds one) and waits
    /// for its ready line.
    pub fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let child = attempts(Duration::from_millis(500), || try_spawn_node(&node.config))
            .unwrap_or_else(|why| panic!("node {} did not start: {why}", node.name));
        node.child = Some(child);
    }

    /// SIGTERMs node `i` and waits for it to exit; returns whether it exited cleanly.
    pub fn terminate(&mut self, i: usize) -> bool {
        let Some(mut c) = self.nodes[i].child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        c.wait().map(|s| s.success()).unwrap_or(false)
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn certs(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    pub fn tls(&self) -> TlsFiles {
        client_tls(&self.certs(), "t")
    }

    pub fn server_name(&self, i: usize) -> String {
        meridian_runtime::tls::replica_dns_name(CLUSTER, &self.nodes[i].name, &self.nodes[i].region)
    }

    pub async fn client(&self, i: usize) -> Client {
        Client::connect(self.nodes[i].addr, &self.server_name(i), &self.tls())
            .await
            .unwrap()
    }

    pub fn metrics(&self, i: usize) -> String {
        http_get(self.nodes[i].metrics, "/metrics")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// A process killed when dropped (so a failing test leaves nothing running).
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Describes a node on fresh ports (writing its configuration) and starts it, describing it
/// again on new ports while one of them turns out taken.
pub fn start_fresh(mut describe: impl FnMut() -> Node) -> (Node, Running) {
    attempts(Duration::ZERO, || {
        let node = describe();
        try_spawn_node(&node.config).map(|child| (node, Running(child)))
    })
    .unwrap_or_else(|why| panic!("node did not start: {why}"))
}

/// Runs `start` up to five times, `pause` apart, until it succeeds: ports are picked free,
/// then bound by the node a moment later, and an ephemeral port of some other socket (a
/// client, another test's node) can land on one in between.
fn attempts<T>(pause: Duration, mut start: impl FnMut() -> Result<T, String>) -> Result<T, String> {
    let mut last = start();
    for _ in 1..5 {
        if last.is_ok() {
            break;
        }
        std::thread::sleep(pause);
        last = start();
    }
    last
}

/// Starts `meridian node --config` and waits (30 s at most) for its ready line; or says why the
/// node did not come up (it exited or printed something else).
pub fn try_spawn_node(config: &Path) -> Result<Child, String> {
    let mut child = Command::new(BIN)
        .args(["node", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(30));
    if !matches!(&line, Ok(l) if l.contains("listening on")) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("{line:?}"));
    }
    Ok(child)
}

pub fn http_get(addr: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}
