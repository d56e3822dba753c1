//! 1,000 seeds of active-passive leases under partitions, loss, duplication, crashes,
//! promotions and clock-rate drift, with clients routing writes by the core's routing state
//! machines: never two primaries at once, no counter add applied in two regions, one primary
//! and every client's writes going through after healing.

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
