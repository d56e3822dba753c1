//! `meridian-lab sim`: many seeds of the deterministic multi-region simulation, a summary, and the
//! command that replays a failing seed.

use indicatif::{ProgressBar, ProgressStyle};
use meridian_sim::{run_seeds, Faults, SeedReport, SimOptions};

/// Options of `meridian-lab sim`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Number of seeds to run (seeds `first-seed .. first-seed + seeds`).
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// First seed of the range.
    #[arg(long, default_value_t = 1)]
    first_seed: u64,
    /// Replay exactly this seed, printing its violations.
    #[arg(long)]
    seed: Option<u64>,
    /// Regions per seed (3 to 7).
    #[arg(long, default_value_t = 3)]
    regions: usize,
    /// Operations per seed.
    #[arg(long, default_value_t = 120)]
    ops: usize,
    /// No loss, duplication or reordering.
    #[arg(long)]
    no_lossy_links: bool,
    /// No partitions.
    #[arg(long)]
    no_partitions: bool,
    /// No crashes.
    #[arg(long)]
    no_crashes: bool,
    /// No clock skew.
    #[arg(long)]
    no_clock_skew: bool,
    /// No power losses (disks rolled back to their last sync point).
    #[arg(long)]
    no_power_loss: bool,
    /// No wiped disks.
    #[arg(long)]
    no_wiped_disks: bool,
    /// No clients forging contexts and tokens.
    #[arg(long)]
    no_hostile_clients: bool,
    /// No members announcing false applied vectors.
    #[arg(long)]
    no_lying_peers: bool,
    /// No torn logs (a power loss that keeps a later write and loses an earlier one).
    #[arg(long)]
    no_torn_logs: bool,
    /// No backups restored.
    #[arg(long)]
    no_restored_backups: bool,
    /// No durability changed between two runs of a region.
    #[arg(long)]
    no_durability_switch: bool,
    /// No damaged log entries.
    #[arg(long)]
    no_corrupt_storage: bool,
    /// Damaged records too (exploratory: see `meridian_sim::Faults::corrupt_records`).
    #[arg(long)]
    corrupt_records: bool,
    /// Every region speaks the newest protocol version from the start (no rolling upgrade).
    #[arg(long)]
    no_mixed_versions: bool,
    /// No routed client sessions (the embedded workload alone, as before they existed).
    #[arg(long)]
    no_clients: bool,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// One JSON summary object instead of a table.
    #[arg(long)]
    json: bool,
    /// Simulate active-passive leases instead (partitions, loss, crashes, promotions, clock
    /// drift within the bound): never two primaries at once, one primary after healing.
    #[arg(long)]
    leases: bool,
}

impl Args {
    fn options(&self) -> SimOptions {
        SimOptions {
            regions: self.regions,
            ops: self.ops,
            faults: Faults {
                lossy_links: !self.no_lossy_links,
                partitions: !self.no_partitions,
                crashes: !self.no_crashes,
                clock_skew: !self.no_clock_skew,
                power_loss: !self.no_power_loss,
                wiped_disks: !self.no_wiped_disks,
                hostile_clients: !self.no_hostile_clients,
                lying_peers: !self.no_lying_peers,
                torn_logs: !self.no_torn_logs,
                restored_backups: !self.no_restored_backups,
                durability_switch: !self.no_durability_switch,
                corrupt_storage: !self.no_corrupt_storage,
                corrupt_records: self.corrupt_records,
                mixed_versions: !self.no_mixed_versions,
            },
            clients: !self.no_clients,
            ..SimOptions::default()
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Runs the simulation; exits non-zero on any violation.
pub fn run(args: Args) -> anyhow::Result<()> {
    let opts = args.options();
    let seeds: Vec<u64> = match args.seed {
        Some(s) => vec![s],
        None => (args.first_seed..args.first_seed + args.seeds).collect(),
    };
    if args.leases {
        return run_leases(&seeds, args.json);
    }
    let bar = if args.json || seeds.len() == 1 {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(seeds.len() as u64)
    };
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} seeds {elapsed_precise} eta {eta}",
    )?);
    let reports = run_seeds(&opts, &seeds, args.threads, |_| bar.inc(1))?;
    bar.finish_and_clear();

    let sum = |f: fn(&SeedReport) -> u64| reports.iter().map(f).sum::<u64>();
    let mut conv: Vec<u64> = reports.iter().filter_map(|r| r.convergence_ms).collect();
    conv.sort_unstable();
    let trace_hash = reports.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, r| {
        (h ^ r.trace_hash).wrapping_mul(0x0100_0000_01b3)
    });
    let failing: Vec<&SeedReport> = reports
        .iter()
        .filter(|r| !r.violations.is_empty())
        .collect();
    let violations = reports
        .iter()
        .map(|r| r.violations.len() as u64)
        .sum::<u64>();
    let simulated_hours = sum(|r| r.simulated_ms) as f64 / 3_600_000.0;
    if args.json {
        let client = serde_json::json!({
            "calls": sum(|r| r.client.calls),
            "lost_answers": sum(|r| r.client.lost_answers),
            "retries": sum(|r| r.client.retries),
            "retried_written": sum(|r| r.client.retried_written),
            "deduplicated": sum(|r| r.client.deduplicated),
            "unknowns": sum(|r| r.client.unknowns),
            "unknowns_applied": sum(|r| r.client.unknowns_applied),
            "failed": sum(|r| r.client.failed),
            "late_refused": sum(|r| r.client.late_refused),
            "late_applied_after_step": sum(|r| r.client.late_applied_after_step),
            "late_applied_unmeasured": sum(|r| r.client.late_applied_unmeasured),
            "session_checks": sum(|r| r.client.session_checks),
            "freezes": sum(|r| r.client.freezes),
            "moves": sum(|r| r.client.moves)
        });
        let summary = serde_json::json!({
            "seeds": reports.len(),
            "regions": opts.regions,
            "simulated_hours": simulated_hours,
            "operations": sum(|r| r.operations),
            "lost_acked_writes": sum(|r| r.lost_acked_writes),
            "divergences": sum(|r| r.divergences),
            "resurrections": sum(|r| r.resurrections),
            "ryw_violations": sum(|r| r.ryw_violations),
            "not_yet_visible": sum(|r| r.not_yet_visible),
            "unavailable": sum(|r| r.unavailable),
            "disk_faults": sum(|r| r.disk_faults),
            "older_version_links": sum(|r| r.older_version_links),
            "lost_by_contract": sum(|r| r.lost_by_contract),
            "i1_violations": sum(|r| r.i1_violations),
            "ryw_checks": sum(|r| r.ryw_checks),
            "session_checks": sum(|r| r.session_checks),
            "torn_logs": sum(|r| r.torn_logs),
            "restores": sum(|r| r.restores),
            "corruptions": sum(|r| r.corruptions),
            "declared_lost": sum(|r| r.declared_lost),
            "uncoverable_tokens": sum(|r| r.uncoverable_tokens),
            "feed_changes": sum(|r| r.feed_changes),
            "feed_resets": sum(|r| r.feed_resets),
            "feed_violations": sum(|r| r.feed_violations),
            "expired_hidden": sum(|r| r.expired_hidden),
            "expired_removed": sum(|r| r.expired_removed),
            "expired_extended": sum(|r| r.expired_extended),
            "violations": violations,
            "convergence_ms_p50": percentile(&conv, 0.5),
            "convergence_ms_p99": percentile(&conv, 0.99),
            "bytes_moved": sum(|r| r.bytes_moved),
            "antientropy_rounds": sum(|r| r.antientropy_rounds),
            "linked_states": sum(|r| r.linked_states),
            "spanned_entries": sum(|r| r.spanned_entries),
            "linked_unresolved": sum(|r| r.linked_unresolved),
            "log_entries_reclaimed": sum(|r| r.log_entries_reclaimed),
            "tombstones_reclaimed": sum(|r| r.tombstones_reclaimed),
            "client": client,
            "trace_hash": format!("{trace_hash:016x}"),
            "failing_seeds": failing.iter().map(|r| r.seed).collect::<Vec<_>>(),
        });
        println!("{summary}");
    } else {
        println!("seeds                {}", reports.len());
        println!("regions              {}", opts.regions);
        println!("simulated hours      {simulated_hours:.2}");
        println!("operations           {}", sum(|r| r.operations));
        println!("lost acked writes    {}", sum(|r| r.lost_acked_writes));
        println!("divergences          {}", sum(|r| r.divergences));
        println!("resurrections        {}", sum(|r| r.resurrections));
        println!("ryw violations       {}", sum(|r| r.ryw_violations));
        println!("not-yet-visible      {}", sum(|r| r.not_yet_visible));
        println!("unavailable          {}", sum(|r| r.unavailable));
        println!("disk faults          {}", sum(|r| r.disk_faults));
        println!("older-version links  {}", sum(|r| r.older_version_links));
        println!("lost by contract     {}", sum(|r| r.lost_by_contract));
        println!("I1 violations        {}", sum(|r| r.i1_violations));
        println!("ryw checks           {}", sum(|r| r.ryw_checks));
        println!("session checks       {}", sum(|r| r.session_checks));
        println!("torn logs            {}", sum(|r| r.torn_logs));
        println!("backups restored     {}", sum(|r| r.restores));
        println!("damaged items        {}", sum(|r| r.corruptions));
        println!("declared lost        {}", sum(|r| r.declared_lost));
        println!("uncoverable tokens   {}", sum(|r| r.uncoverable_tokens));
        println!(
            "change feed          {} changes, {} resets, {} views that differed",
            sum(|r| r.feed_changes),
            sum(|r| r.feed_resets),
            sum(|r| r.feed_violations)
        );
        println!(
            "expiry               {} values hidden, {} removed after, {} extended before expiry",
            sum(|r| r.expired_hidden),
            sum(|r| r.expired_removed),
            sum(|r| r.expired_extended)
        );
        println!("violations           {violations}");
        println!(
            "convergence p50/p99  {} ms / {} ms",
            percentile(&conv, 0.5),
            percentile(&conv, 0.99)
        );
        println!("bytes moved          {}", sum(|r| r.bytes_moved));
        println!("anti-entropy rounds  {}", sum(|r| r.antientropy_rounds));
        println!(
            "linked states        {} ({} frames unresolved, asked again)",
            sum(|r| r.linked_states),
            sum(|r| r.linked_unresolved)
        );
        println!("spanned entries      {}", sum(|r| r.spanned_entries));
        println!("log entries freed    {}", sum(|r| r.log_entries_reclaimed));
        println!("tombstones freed     {}", sum(|r| r.tombstones_reclaimed));
        println!(
            "client calls         {} ({} written, {} failed; {} session checks)",
            sum(|r| r.client.calls),
            sum(|r| r.client.written),
            sum(|r| r.client.failed),
            sum(|r| r.client.session_checks)
        );
        println!(
            "lost answers         {} ({} retries, {} written after one, {} answered with the first write)",
            sum(|r| r.client.lost_answers),
            sum(|r| r.client.retries),
            sum(|r| r.client.retried_written),
            sum(|r| r.client.deduplicated)
        );
        println!(
            "unknown outcomes     {} ({} of them applied)",
            sum(|r| r.client.unknowns),
            sum(|r| r.client.unknowns_applied)
        );
        println!(
            "late refused         {} ({} freezes, {} moves; applied late: {} after a clock step, {} unmeasured)",
            sum(|r| r.client.late_refused),
            sum(|r| r.client.freezes),
            sum(|r| r.client.moves),
            sum(|r| r.client.late_applied_after_step),
            sum(|r| r.client.late_applied_unmeasured)
        );
        println!("trace hash           {trace_hash:016x}");
    }
    if let Some(first) = failing.first() {
        for r in failing.iter().take(5) {
            eprintln!("seed {} failed:", r.seed);
            for v in r.violations.iter().take(10) {
                eprintln!("  - {v}");
            }
        }
        eprintln!("replay with: {}", opts.replay_command(first.seed));
        anyhow::bail!(
            "{} of {} seeds violated an invariant",
            failing.len(),
            reports.len()
        );
    }
    Ok(())
}

/// `meridian-lab sim --leases`: lease seeds, each checked for two primaries at one instant and for
/// one agreed primary after healing.
fn run_leases(seeds: &[u64], json: bool) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    let (mut acquisitions, mut promotions, mut delivered) = (0, 0, 0);
    let (mut writes, mut redirects, mut unknown) = (0, 0, 0);
    for &seed in seeds {
        match meridian_sim::run_lease_seed(seed) {
            Ok(r) => {
                acquisitions += r.acquisitions;
                promotions += r.promotions;
                delivered += r.delivered;
                writes += r.writes;
                redirects += r.redirects;
                unknown += r.unknown;
            }
            Err(why) => {
                if !json {
                    println!(
                        "seed {seed}: {why}\n  replay: meridian-lab sim --leases --seed {seed}"
                    );
                }
                failed.push(seed);
            }
        }
    }
    if json {
        println!(
            "{}",
            serde_json::json!({
                "seeds": seeds.len(), "failed": failed, "acquisitions": acquisitions,
                "promotions": promotions, "messages": delivered, "client_writes": writes,
                "redirects": redirects, "unknown_outcomes": unknown,
            })
        );
    } else {
        println!(
            "{} lease seeds, {} failed; {acquisitions} acquisitions, {promotions} promotions, {delivered} messages; client writes: {writes} taken by a primary, {redirects} redirects, {unknown} unknown outcomes",
            seeds.len(),
            failed.len()
        );
    }
    anyhow::ensure!(failed.is_empty(), "{} seeds failed", failed.len());
    Ok(())
}
