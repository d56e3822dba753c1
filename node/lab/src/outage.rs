//! `meridian-lab outage`: the region-outage suite against nodes of the `meridian` executable
//! beside this one: every scenario (or those named), a table of what each measured, and the
//! table as JSON. Exits non-zero when any acknowledged write was lost, anything else the
//! checker forbids happened, or what it cannot verify exceeded its bound.

use meridian_tests::outage::{self, Form, Row, Scenario};
use std::path::PathBuf;

/// Options of `outage`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The long form: 30 s outages under heavier load (the default is the fast form of
    /// `make test`: 5 s outages).
    #[arg(long)]
    long: bool,
    /// Only these scenarios (kill, freeze, freeze-12s, clock-skew, partition, partial,
    /// one-way, flapping, loss-30, restart-all, wipe, retire, admin-isolate,
    /// rolling-upgrade).
    #[arg(long = "only", value_name = "SCENARIO")]
    only: Vec<String>,
    /// Also write the rows as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Drives the load and the emulator's random impairments.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// A previous release's `meridian` executable: `rolling-upgrade` starts its regions with
    /// it (without it, with the `meridian` beside this executable pinned to the previous
    /// release's protocol versions) and upgrades them to the one beside this executable.
    #[arg(long, value_name = "PATH")]
    previous: Option<PathBuf>,
}

/// Runs the suite.
pub fn run(args: Args) -> anyhow::Result<()> {
    let scenarios: Vec<Scenario> = if args.only.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        args.only
            .iter()
            .map(|n| Scenario::from_name(n).ok_or_else(|| anyhow::anyhow!("no scenario {n:?}")))
            .collect::<anyhow::Result<_>>()?
    };
    let form = if args.long {
        Form::long()
    } else {
        Form::fast()
    };
    let bin = meridian_tests::node_process::daemon()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()?;
    let mut rows: Vec<Row> = Vec::new();
    for scenario in scenarios {
        eprintln!("outage: {} ...", scenario.name());
        let row = runtime.block_on(outage::run_upgrading(
            scenario,
            form,
            &bin,
            args.previous.as_deref(),
            args.seed,
        ))?;
        eprintln!(
            "outage: {}: {} acknowledged, {} lost, {} violations, {} bounds exceeded",
            row.scenario, row.acked, row.lost, row.violations, row.over_bound
        );
        rows.push(row);
    }
    outage::print_table(&rows);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&rows)?)?;
        println!("written to {}", path.display());
    }
    let bad: Vec<&str> = rows
        .iter()
        .filter(|r| r.lost > 0 || r.violations > 0 || r.over_bound > 0)
        .map(|r| r.scenario.as_str())
        .collect();
    anyhow::ensure!(
        bad.is_empty(),
        "scenarios with lost writes, violations or bounds exceeded: {bad:?}"
    );
    Ok(())
}
