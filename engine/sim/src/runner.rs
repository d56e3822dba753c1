//! Running many seeds on a few threads, and the command that replays one.

use super::{run_seed, scratch_dir, SeedReport, SimOptions};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

impl SimOptions {
    /// The `meridian-lab sim` command line that replays `seed` under these options.
    pub fn replay_command(&self, seed: u64) -> String {
        let mut cmd = format!(
            "meridian-lab sim --seed {seed} --regions {} --ops {}",
            self.regions, self.ops
        );
        let f = &self.faults;
        for (on, flag) in [
            (f.lossy_links, " --no-lossy-links"),
            (f.partitions, " --no-partitions"),
            (f.crashes, " --no-crashes"),
            (f.clock_skew, " --no-clock-skew"),
            (f.power_loss, " --no-power-loss"),
            (f.wiped_disks, " --no-wiped-disks"),
            (f.hostile_clients, " --no-hostile-clients"),
            (f.lying_peers, " --no-lying-peers"),
            (f.torn_logs, " --no-torn-logs"),
            (f.restored_backups, " --no-restored-backups"),
            (f.durability_switch, " --no-durability-switch"),
            (f.corrupt_storage, " --no-corrupt-storage"),
            (!f.corrupt_records, " --corrupt-records"),
            (f.mixed_versions, " --no-mixed-versions"),
            (self.clients, " --no-clients"),
        ] {
            if !on {
                cmd.push_str(flag);
            }
        }
        cmd
    }
}

/// Runs every seed of `seeds` on `threads` threads in one scratch directory, calling
/// `done` after each; returns the reports in seed order.
pub fn run_seeds(
    opts: &SimOptions,
    seeds: &[u64],
    threads: usize,
    done: impl Fn(&SeedReport) + Sync,
) -> std::io::Result<Vec<SeedReport>> {
    let scratch = scratch_dir()?;
    let next = AtomicUsize::new(0);
    let reports = Mutex::new(Vec::with_capacity(seeds.len()));
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(&seed) = seeds.get(i) else { break };
                let report = run_seed(opts, seed, scratch.path());
                done(&report);
                reports
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(report);
            });
        }
    });
    let mut reports = reports.into_inner().unwrap_or_else(|e| e.into_inner());
    reports.sort_by_key(|r| r.seed);
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replay_line_names_every_fault_kind_turned_off() {
        let mut opts = SimOptions::default();
        assert_eq!(
            opts.replay_command(9),
            "meridian-lab sim --seed 9 --regions 3 --ops 120"
        );
        opts.faults.crashes = false;
        opts.faults.lying_peers = false;
        opts.clients = false;
        assert_eq!(
            opts.replay_command(9),
            "meridian-lab sim --seed 9 --regions 3 --ops 120 --no-crashes --no-lying-peers --no-clients"
        );
    }
}
