//! `meridian-lab` as a developer runs it: its commands, the simulator, and node processes of the
//! `meridian` executable beside it (built there by `cargo test --workspace`, `make test` or
//! `cargo build --release -p meridian-node`), or an error saying how to build it.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The executable under test.
const LAB: &str = env!("CARGO_BIN_EXE_meridian-lab");

/// The daemon the lab runs: `meridian` in the lab's directory.
fn daemon_beside_the_lab() -> PathBuf {
    let name = format!("meridian{}", std::env::consts::EXE_SUFFIX);
    let path = Path::new(LAB).with_file_name(name);
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo build --release -p meridian-node` (make test does)",
        path.display()
    );
    path
}

#[test]
fn the_labs_help_names_the_demo_benchmarks_outage_suite_and_simulator() {
    let out = Command::new(LAB).arg("--help").output().unwrap();
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
        ["demo", "bench", "outage", "sim", "help"],
        "{help}"
    );
}

#[test]
fn sim_runs_its_seeds_clean() {
    let out = Command::new(LAB)
        .args(["sim", "--seeds", "3"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("trace hash"),
        "{out:?}"
    );
}

/// Without `meridian` beside it, the lab starts nothing and names the command that builds it.
#[test]
fn without_the_daemon_beside_it_the_lab_says_how_to_build_it() {
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path().join(Path::new(LAB).file_name().unwrap());
    std::fs::copy(LAB, &lab).unwrap();
    for args in [
        &["demo"][..],
        &["outage", "--only", "kill"],
        &["bench", "scale"],
    ] {
        let out = Command::new(&lab).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("no `meridian` executable beside this one")
                && stderr.contains("cargo build --release -p meridian-node"),
            "{args:?}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?}: {out:?}");
    }
}

/// `outage` runs its regions as processes of the daemon beside the lab: one scenario, fast
/// form, no acknowledged write lost, its row written as JSON.
#[test]
fn the_outage_suite_runs_the_daemon_beside_the_lab() {
    daemon_beside_the_lab();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("outage.json");
    let out = Command::new(LAB)
        .args(["outage", "--only", "kill", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let row = &rows[0];
    assert_eq!(row["scenario"], "kill", "{rows}");
    assert!(row["acked"].as_u64().unwrap() > 0, "{rows}");
    assert_eq!(row["lost"], 0, "{rows}");
}
