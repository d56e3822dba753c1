//! The outage rehearsal a user runs by hand, as README.md shows it, with real processes: a
//! cluster written by `meridian local-cluster --netem`, the link emulator started by
//! `meridian netem run`, a region cut off with `meridian netem set` and healed with
//! `meridian netem heal`, then isolated and healed with `meridian admin`, its links followed
//! with `meridian admin status`.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::BIN;

const WAIT: Duration = Duration::from_secs(30);

/// Children killed when dropped.
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn(args: &[&str]) -> Child {
    Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Runs a command to completion: (success, stdout and stderr).
fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Every peer link of every region, from `admin status --json`: (region, peer, up).
fn links(admin: &str) -> Vec<(String, String, bool)> {
    let (_, text) = run(&["admin", "--cluster", admin, "status", "--json"]);
    let mut found = Vec::new();
    for line in text.lines() {
        let Ok(status) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let region = status["name"].as_str().unwrap_or("?").to_string();
        for peer in status["peers"].as_array().into_iter().flatten() {
            found.push((
                region.clone(),
                peer["name"].as_str().unwrap_or("?").to_string(),
                peer["connected"].as_bool().unwrap_or(false),
            ));
        }
    }
    found
}

/// Waits until `admin status` shows every link of `node` up (`true`) or down (`false`), and
/// the others up.
fn wait_links(admin: &str, node: &str, up: bool) {
    let started = Instant::now();
    loop {
        let seen = links(admin);
        let ok = seen.len() == 6
            && seen
                .iter()
                .all(|(a, b, connected)| *connected == (up || (a != node && b != node)));
        if ok {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "links of {node} never {up}: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_user_rehearses_a_region_outage_with_netem_and_admin() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let control = meridian_tests::ports::free_tcp().unwrap();
    let port = control.port().to_string();
    let (ok, text) = run(&[
        "local-cluster",
        "--dir",
        d,
        "--replica",
        "use1:us-east",
        "--replica",
        "euw1:eu-west",
        "--replica",
        "apn1:ap-northeast",
        "--netem",
        &port,
    ]);
    assert!(ok, "{text}");
    let path = |f: &str| Path::new(d).join(f).to_str().unwrap().to_string();
    let mut processes = Processes(vec![spawn(&[
        "netem",
        "run",
        "--config",
        &path("netem.toml"),
    ])]);
    for node in ["use1", "euw1", "apn1"] {
        processes
            .0
            .push(spawn(&["node", "--config", &path(&format!("{node}.toml"))]));
    }
    let admin = path("admin.toml");
    let control = control.to_string();
    wait_links(&admin, "euw1", true);

    // A wide-area round trip on one link, measured by the nodes themselves.
    let (ok, text) = run(&[
        "netem",
        "set",
        "--control",
        &control,
        "--from",
        "use1",
        "--to",
        "euw1",
        "--both",
        "--latency",
        "40ms",
    ]);
    assert!(ok, "{text}");
    let started = Instant::now();
    loop {
        let (_, status) = run(&["admin", "--cluster", &admin, "status", "eu-west", "--json"]);
        let status: serde_json::Value = serde_json::from_str(status.trim()).unwrap_or_default();
        let rtt = status["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == "use1")
            .and_then(|p| p["rtt_ms"].as_u64());
        if rtt.is_some_and(|r| r >= 80) {
            break;
        }
        assert!(started.elapsed() < WAIT, "round trip never 80 ms: {rtt:?}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // A partition by the emulator: every datagram to and from eu-west dropped.
    let (ok, text) = run(&[
        "netem",
        "set",
        "--control",
        &control,
        "--from",
        "euw1",
        "--to",
        "*",
        "--both",
        "--down",
    ]);
    assert!(ok && text.contains("DOWN"), "{text}");
    wait_links(&admin, "euw1", false);
    let (ok, shown) = run(&["netem", "show", "--control", &control, "--json"]);
    assert!(ok, "{shown}");
    let shown: Vec<meridian_tests::netem::LinkReport> = serde_json::from_str(&shown).unwrap();
    assert!(shown
        .iter()
        .any(|l| l.from == "use1" && l.to == "euw1" && l.stats.blackholed > 0));
    let (ok, text) = run(&["netem", "heal", "--control", &control]);
    assert!(ok, "{text}");
    wait_links(&admin, "euw1", true);

    // A bad request names what is wrong.
    let (ok, text) = run(&[
        "netem",
        "set",
        "--control",
        &control,
        "--from",
        "euw1",
        "--to",
        "nobody",
        "--down",
    ]);
    assert!(!ok && text.contains("no node \"nobody\""), "{text}");

    // The game-day switch on the node itself.
    let (ok, text) = run(&["admin", "--cluster", &admin, "isolate", "eu-west"]);
    assert!(ok && text.contains("isolated"), "{text}");
    wait_links(&admin, "euw1", false);
    let (_, text) = run(&["admin", "--cluster", &admin, "status", "eu-west"]);
    assert!(
        text.contains("ISOLATED") && text.contains("isolated by an operator"),
        "{text}"
    );
    let (ok, text) = run(&["admin", "--cluster", &admin, "heal", "eu-west"]);
    assert!(ok && text.contains("healed"), "{text}");
    wait_links(&admin, "euw1", true);

    // Only an admin may isolate.
    let (ok, text) = run(&[
        "admin",
        "--cluster",
        &path("client.toml"),
        "isolate",
        "eu-west",
    ]);
    assert!(!ok, "{text}");
}
