//! The deterministic multi-region simulation as part of `make test`: at least 500 seeds under
//! every fault kind with zero violations, and replays that hash identically.

use meridian_sim::{run_seed, run_seeds, SeedReport, SimOptions};

fn run_many(opts: &SimOptions, seeds: std::ops::Range<u64>) -> Vec<SeedReport> {
    let seeds: Vec<u64> = seeds.collect();
    run_seeds(opts, &seeds, 2, |_| {}).expect("scratch dir")
}

fn assert_clean(opts: &SimOptions, reports: &[SeedReport]) {
    let failing: Vec<String> = reports
        .iter()
        .filter(|r| !r.violations.is_empty())
        .map(|r| {
            format!(
                "seed {}: {:?}\n  replay: {}",
                r.seed,
                r.violations,
                opts.replay_command(r.seed)
            )
        })
        .collect();
    assert!(
        failing.is_empty(),
        "{} seeds failed:\n{}",
        failing.len(),
        failing.join("\n")
    );
    let ops: u64 = reports.iter().map(|r| r.operations).sum();
    assert_eq!(
        ops,
        reports.len() as u64 * opts.ops as u64,
        "every seed ran its workload"
    );
    assert!(reports.iter().all(|r| r.convergence_ms.is_some()));
}

#[test]
fn five_hundred_seeds_of_three_regions_under_all_faults_have_no_violation() {
    let opts = SimOptions::default();
    let reports = run_many(&opts, 1..501);
    assert_clean(&opts, &reports);
    // The routed sessions met what they are there for: answers lost (idempotent writes
    // retried and written elsewhere, others unknown), writes arriving past their deadline
    // (refused), sessions moving, regions freezing; and their checks ran.
    let sum = |f: fn(&SeedReport) -> u64| reports.iter().map(f).sum::<u64>();
    for (what, n) in [
        ("client calls", sum(|r| r.client.calls)),
        ("lost answers", sum(|r| r.client.lost_answers)),
        ("retries", sum(|r| r.client.retries)),
        (
            "written after a lost answer",
            sum(|r| r.client.retried_written),
        ),
        ("unknown outcomes", sum(|r| r.client.unknowns)),
        (
            "unknown outcomes applied",
            sum(|r| r.client.unknowns_applied),
        ),
        ("late writes refused", sum(|r| r.client.late_refused)),
        ("freezes", sum(|r| r.client.freezes)),
        ("moves", sum(|r| r.client.moves)),
        ("client session checks", sum(|r| r.client.session_checks)),
        // Catch-ups at protocol 8 sent runs of writes as spans, over lossy links too.
        ("spanned entries", sum(|r| r.spanned_entries)),
        // The change-feed consumer followed the writes, and was reset (a wiped disk's state
        // transfer, a truncated log) and rebuilt its view, which still matched.
        ("feed changes", sum(|r| r.feed_changes)),
        ("feed resets", sum(|r| r.feed_resets)),
    ] {
        assert!(n > 0, "no {what} in 500 seeds");
    }
}

/// Seeds that failed in long runs (`make sim`) before their fix, kept as regressions (seed,
/// regions): 1686 left a dot of a write lost with a disk at two regions of three, under equal
/// vectors; 260 of five regions had a duplicated offer answered twice, the second time after a
/// local write, and a key the offerer held was dropped as if it held none; 527636831 had two
/// ends each waiting for a round the other had dropped; 91001673 (a simulator bug) rolled a
/// reborn region back to its previous life's sync point on a power loss; 123001600 (logs
/// reclaimed on lying peers' claims, each end needing the other's state) had the end whose
/// offer lost the tie offer again while it received the winner's round, dropping that round's
/// chunks as stale, forever; 123001106 did the same after a lying peer, a wiped disk and a
/// power loss. They run as they were found: most without the routed client sessions (which draw
/// their own randomness, so the rest of the run is the same), the later ones with them.
#[test]
fn seeds_that_once_failed_in_long_runs_stay_clean() {
    let scratch = meridian_sim::scratch_dir().expect("scratch dir");
    for (seed, regions, clients) in [
        (1686, 3, false),
        (260, 5, false),
        (527_636_831, 3, false),
        (91_001_673, 3, false),
        (123_001_106, 3, false),
        (123_001_600, 3, false),
        // A key from a third region arriving during an anti-entropy round (3_001_192); an old
        // epoch's log torn (3_000_362); a set removal learned by state (3_000_679).
        (3_001_192, 3, false),
        (3_000_362, 3, false),
        (3_000_679, 3, false),
        (3_000_296, 3, false),
        (3_001_436, 3, false),
        // An old epoch whose first number was torn: what its log held beyond the hole was
        // never counted again (lost acknowledged writes; 4_001_521, 4_000_400).
        (4_001_521, 3, false),
        (4_000_400, 3, false),
        // Found with the routed client sessions on: a set removal whose log entry was damaged
        // before a partitioned region received it lost its tombstone (363_156_624); a client
        // kept its estimate of a region's clock from before the clock stepped back two minutes,
        // against seven answers since, and stamped a deadline the region applied past
        // (825_907_964).
        (363_156_624, 3, true),
        (825_907_964, 3, true),
        // A region restored from a backup older than a delete whose tombstone its peers had
        // reclaimed relayed the deleted value to a wiped region before any peer's round had
        // reconciled it (1_200_000_864).
        (1_200_000_864, 3, true),
        // A region whose power loss under `wal` took its disk back past a register write it
        // had reported applied (its peers forgot the superseded sibling's dot) handed the
        // superseded value to a wiped region (31_162).
        (31_162, 3, true),
        // A state-transfer round whose offerer reclaimed a tombstone between its summary and
        // its answer: the receiver asked for the key, got nothing for it, kept a set element
        // the key's removal had taken, and adopted a snapshot covering that removal
        // (2_400_000_933).
        (2_400_000_933, 3, true),
        // A lying member's inflated claim of a third origin let a region reclaim a delete's
        // tombstone the liar had not applied; the liar later handed the deleted sibling to a
        // wiped region (3_100_000_324).
        (3_100_000_324, 3, true),
    ] {
        let opts = SimOptions {
            regions,
            clients,
            ..SimOptions::default()
        };
        let report = run_seed(&opts, seed, scratch.path());
        assert_clean(&opts, &[report]);
    }
}

#[test]
fn fifty_seeds_of_five_regions_have_no_violation() {
    let opts = SimOptions {
        regions: 5,
        ..SimOptions::default()
    };
    let reports = run_many(&opts, 10_001..10_051);
    assert_clean(&opts, &reports);
}

#[test]
fn a_seed_replays_to_the_same_trace_hash() {
    let opts = SimOptions::default();
    let scratch = meridian_sim::scratch_dir().expect("scratch dir");
    let a = run_seed(&opts, 42, scratch.path());
    let b = run_seed(&opts, 42, scratch.path());
    let c = run_seed(&opts, 43, scratch.path());
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.bytes_moved, b.bytes_moved);
    assert_ne!(
        a.trace_hash, c.trace_hash,
        "different seeds should not collide"
    );
}
