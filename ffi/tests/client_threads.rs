//! Calls on one client handle from several threads run at once: `tests/c/client_threads.c`,
//! compiled against the header and the shared library this build made, opens two regions'
//! nodes in its own process (`meridian_engine_open_node`) and a client of them, and holds one
//! thread's write up in the regions (each waits most of a second for a write its read context
//! names) while another thread on the same handle writes and reads. With a lock around calls
//! (as before), the second thread's calls would wait for the first's and the program fails.
//! The same program then gives keys a time to live through the client (`meridian_client_expire`,
//! a batch with `meridian_batch_ttl`, `meridian_client_expires_at`) and follows changes
//! through it (`meridian_client_watch`).

use meridian_config::cluster_file::{ClusterFile, SeedEntry};
use meridian_config::dev_certs::{self, CertsRequest};
use meridian_config::node_config::NodeConfig;
use std::path::{Path, PathBuf};
use std::process::Command;

const CLUSTER: &str = "threads";
const REPLICAS: [(&str, &str); 2] = [("euw1", "eu-west"), ("use1", "us-east")];

/// The shared library built beside this test (in `<target>/release/deps`, with the
/// dependencies: the one of this very build), or the one `make` built.
fn shared_library() -> PathBuf {
    let exe = std::env::current_exe().expect("test path");
    let deps = exe.parent().expect("deps dir");
    let here = deps.join("libmeridian.so");
    if here.exists() {
        return here;
    }
    deps.parent().expect("target dir").join("libmeridian.so")
}

/// A loopback UDP address no socket holds now (taken by another process before the node binds
/// it, the node fails to start and the program exits 2).
fn free_udp() -> std::net::SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
}

/// Writes the nodes' configurations (on fresh ports, each the other's peer) and the client's
/// cluster file into `dir` (whose `certs` the certificates are in); returns their paths.
fn write_configs(dir: &Path) -> Vec<PathBuf> {
    let certs = dir.join("certs");
    let mut nodes: Vec<NodeConfig> = REPLICAS
        .iter()
        .map(|(name, region)| {
            NodeConfig::new(
                CLUSTER,
                name,
                region,
                dir.join(format!("data-{name}")),
                free_udp(),
                dev_certs::replica_files(&certs, name),
            )
        })
        .collect();
    let peers: Vec<_> = nodes.iter().map(NodeConfig::as_peer).collect();
    for node in &mut nodes {
        node.peers = peers
            .iter()
            .filter(|p| p.name != node.name)
            .cloned()
            .collect();
    }
    let mut paths = Vec::new();
    for node in &nodes {
        let path = dir.join(format!("{}.toml", node.name));
        node.write(&path).expect("node configuration");
        paths.push(path);
    }
    let file = ClusterFile {
        cluster: CLUSTER.into(),
        certs: certs.join("client-t"),
        client: "t".into(),
        near: None,
        seeds: nodes
            .iter()
            .map(|n| SeedEntry {
                name: n.name.clone(),
                region: n.region.clone(),
                address: n.listen,
                location: None,
            })
            .collect(),
    };
    let path = dir.join("client.toml");
    file.write(&path).expect("cluster file");
    paths.push(path);
    paths
}

#[test]
fn calls_on_one_client_from_two_threads_run_at_once() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let scratch = tempfile::tempdir().expect("tempdir");
    dev_certs::init(&CertsRequest {
        dir: scratch.path().join("certs"),
        cluster: CLUSTER.into(),
        replicas: REPLICAS.iter().map(|(n, r)| format!("{n}:{r}")).collect(),
        clients: vec!["t".into()],
    })
    .expect("certificates");
    // The program finds the library at run time under its SONAME.
    std::os::unix::fs::symlink(shared_library(), scratch.path().join("libmeridian.so.1"))
        .expect("symlink");
    let exe = scratch.path().join("client_threads");
    let built = Command::new("cc")
        .args([
            "-std=c11",
            "-D_DEFAULT_SOURCE",
            "-pthread",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-g",
        ])
        .arg("-I")
        .arg(crate_dir.join("include"))
        .arg(crate_dir.join("tests/c/client_threads.c"))
        .arg("-o")
        .arg(&exe)
        .arg(scratch.path().join("libmeridian.so.1"))
        .arg(format!("-Wl,-rpath,{}", scratch.path().display()))
        .output()
        .expect("cc");
    assert!(
        built.status.success(),
        "cc failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    // A port picked free can be taken before a node binds it: fresh ports, fresh data.
    for attempt in 0..3 {
        let dir = scratch.path().join(format!("attempt-{attempt}"));
        std::fs::create_dir(&dir).expect("attempt dir");
        std::os::unix::fs::symlink(scratch.path().join("certs"), dir.join("certs"))
            .expect("certs link");
        let paths = write_configs(&dir);
        // Only this build's library (cargo's own search path may hold an older one).
        let run = Command::new(&exe)
            .args(&paths)
            .env("LD_LIBRARY_PATH", scratch.path())
            .env("RUST_LOG", "error")
            .output()
            .expect("run");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr),
        );
        if run.status.code() == Some(2) {
            eprintln!("a node did not start, trying again: {stderr}");
            continue;
        }
        assert!(
            run.status.success() && stdout.contains("ok"),
            "client_threads failed:\n{stdout}\n{stderr}"
        );
        return;
    }
    panic!("the nodes did not start in 3 attempts");
}
