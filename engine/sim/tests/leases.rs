//! 1,000 seeds of active-passive leases under partitions, loss, duplication, crashes,
//! promotions and clock-rate drift: never two primaries at once, one primary after healing.

#[test]
fn a_thousand_seeds_never_see_two_primaries() {
    let mut failures = Vec::new();
    let mut acquisitions = 0;
    for seed in 0..1_000 {
        match meridian_sim::run_lease_seed(seed) {
            Ok(report) => acquisitions += report.acquisitions,
            Err(why) => failures.push(format!("seed {seed}: {why}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        acquisitions >= 1_000,
        "the faults moved the lease: {acquisitions}"
    );
}
