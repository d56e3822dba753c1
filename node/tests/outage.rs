//! The region-outage suite, fast form: every scenario with real `meridian node` processes
//! through the link emulator under load; each must lose no acknowledged write, converge after
//! the heal, break none of the checker's rules and stay within its bounds of what it cannot
//! verify. `make outage` runs the long form.

#![allow(clippy::unwrap_used)]

mod support;

use meridian_tests::outage::{self, Form, Scenario};

/// One scenario at a time: six processes, three clients and the emulator are already more
/// than two cores run comfortably.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn clean(scenario: Scenario) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let row = outage::run(
        scenario,
        Form::fast(),
        std::path::Path::new(support::BIN),
        1,
    )
    .await
    .unwrap();
    outage::print_table(std::slice::from_ref(&row));
    assert!(row.acked > 0, "no write was acknowledged: {row:?}");
    assert_eq!(row.lost, 0, "acknowledged writes lost: {:?}", row.problems);
    assert_eq!(row.violations, 0, "{:?}", row.problems);
    assert_eq!(row.over_bound, 0, "{:?}", row.problems);
    assert!(row.converge_ms.is_some(), "{:?}", row.problems);
    assert!(row.problems.is_empty(), "{:?}", row.problems);
}

macro_rules! scenarios {
    ($($name:ident => $scenario:expr),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                clean($scenario).await;
            }
        )*
    };
}

scenarios! {
    a_killed_region_restarted_under_load => Scenario::Kill,
    a_frozen_region_thawed => Scenario::Freeze,
    a_region_frozen_for_12_s_is_left_within_2_s => Scenario::Freeze12,
    clocks_two_seconds_off_both_ways => Scenario::ClockSkew,
    a_region_cut_off_acknowledges_no_majority_write => Scenario::Partition,
    a_partial_partition => Scenario::Partial,
    a_one_way_cut => Scenario::OneWay,
    a_flapping_link => Scenario::Flapping,
    thirty_percent_loss_everywhere => Scenario::Loss,
    every_region_restarted_at_once => Scenario::RestartAll,
    a_wiped_region_brought_back => Scenario::Wipe,
    a_retired_region_and_its_logs_reclaimed => Scenario::Retire,
    an_operator_isolates_and_heals_a_region => Scenario::AdminIsolate,
    a_rolling_upgrade_from_the_previous_release => Scenario::RollingUpgrade,
}
