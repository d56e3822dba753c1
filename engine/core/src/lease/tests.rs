//! Three members on one clock, messages delivered at once unless a link is cut.

#![allow(clippy::unwrap_used)]

use super::*;

struct Net {
    keepers: Vec<LeaseKeeper>,
    now: u64,
    /// Cut links, both ways.
    cut: Vec<(usize, usize)>,
}

fn id(i: usize) -> MemberId {
    MemberId(i as u64 + 1)
}

impl Net {
    fn new(config: impl Fn(LeaseConfig) -> LeaseConfig) -> Net {
        let members: Vec<MemberId> = (0..3).map(id).collect();
        let config = config(LeaseConfig::new(members));
        Net {
            keepers: (0..3)
                .map(|i| LeaseKeeper::new(id(i), config.clone(), 0, i as u64 + 100))
                .collect(),
            now: 0,
            cut: Vec::new(),
        }
    }

    fn linked(&self, a: usize, b: usize) -> bool {
        !self.cut.contains(&(a, b)) && !self.cut.contains(&(b, a))
    }

    /// Delivers every queued message (and the answers they cause).
    fn deliver(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..3 {
                while let Some(out) = self.keepers[i].poll_output() {
                    let j = out.to.0 as usize - 1;
                    if self.linked(i, j) {
                        self.keepers[j].handle(id(i), out.message, self.now);
                        moved = true;
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Runs `ms` milliseconds in steps of 10, checking that never two members are primary.
    fn run(&mut self, ms: u64) {
        for _ in 0..ms / 10 {
            self.now += 10;
            for k in &mut self.keepers {
                k.tick(self.now);
            }
            self.deliver();
            let primaries = self.primaries();
            assert!(
                primaries.len() <= 1,
                "two primaries at {}: {primaries:?}",
                self.now
            );
        }
    }

    fn primaries(&self) -> Vec<usize> {
        (0..3)
            .filter(|&i| self.keepers[i].is_primary(self.now))
            .collect()
    }
}

#[test]
fn the_first_successor_becomes_primary_after_the_quiet_period_and_keeps_the_lease() {
    let mut net = Net::new(|c| c);
    let quiet = net.keepers[0].config().quiet_ms();
    net.run(quiet - 10);
    assert!(net.primaries().is_empty(), "nothing granted while quiet");
    net.run(200);
    assert_eq!(net.primaries(), [0]);
    // Renewals keep it far beyond one lease.
    net.run(20_000);
    assert_eq!(net.primaries(), [0]);
    for k in &net.keepers {
        assert_eq!(k.primary(net.now), Some(id(0)));
    }
}

#[test]
fn a_cut_off_primary_stops_before_another_member_takes_over() {
    let mut net = Net::new(|c| c);
    net.run(net.keepers[0].config().quiet_ms() + 200);
    assert_eq!(net.primaries(), [0]);
    net.cut = vec![(0, 1), (0, 2)];
    // `run` checks at every step that the old primary has stopped before the new one starts.
    net.run(15_000);
    assert_eq!(net.primaries(), [1], "the next successor took over");
    assert_eq!(net.keepers[2].primary(net.now), Some(id(1)));
    // Healed: the old primary follows the new one and does not take the lease back.
    net.cut.clear();
    net.run(15_000);
    assert_eq!(net.primaries(), [1]);
    assert_eq!(net.keepers[0].primary(net.now), Some(id(1)));
}

#[test]
fn a_promotion_moves_the_lease_at_once_when_the_holder_answers() {
    let mut net = Net::new(|c| c);
    net.run(net.keepers[0].config().quiet_ms() + 200);
    assert_eq!(net.primaries(), [0]);
    let now = net.now;
    net.keepers[2].promote(now);
    net.deliver();
    net.run(100);
    assert_eq!(
        net.primaries(),
        [2],
        "promoted without waiting for the lease to run out"
    );
    net.run(20_000);
    assert_eq!(net.primaries(), [2]);
}

#[test]
fn a_promotion_cut_off_from_the_holder_waits_for_its_promises_to_run_out() {
    let mut net = Net::new(|c| LeaseConfig {
        failover_after_ms: None,
        ..c
    });
    net.run(net.keepers[0].config().quiet_ms() + 200);
    assert_eq!(net.primaries(), [0]);
    net.cut = vec![(0, 1), (0, 2)];
    let now = net.now;
    net.keepers[2].promote(now);
    net.run(1_000);
    assert!(
        !net.keepers[2].is_primary(net.now),
        "the fence holds while promises run"
    );
    net.run(10_000);
    assert_eq!(net.primaries(), [2]);
}

#[test]
fn a_restarted_voter_grants_nothing_while_its_old_promises_may_run() {
    let mut net = Net::new(|c| c);
    net.run(net.keepers[0].config().quiet_ms() + 200);
    assert_eq!(net.primaries(), [0]);
    // Member 1 restarts, forgetting it promised member 0; member 0 is cut off from member 2
    // and keeps renewing with member 1 only.
    let config = net.keepers[1].config().clone();
    net.keepers[1] = LeaseKeeper::new(id(1), config.clone(), net.now, 999);
    net.cut = vec![(0, 2)];
    let now = net.now;
    net.keepers[2].promote(now);
    net.run(config.quiet_ms() - 20);
    assert!(!net.keepers[2].is_primary(net.now));
    net.run(10_000);
    assert_eq!(net.primaries().len(), 1);
}

#[test]
fn hold_is_shorter_than_a_promise_and_quiet_longer_by_the_drift_both_ways() {
    let c = LeaseConfig::new(vec![id(0)]);
    // 1%: a promise of 4 s lasts at least 3.96 s of real time; a hold of h at most 1.01 h.
    assert!(c.hold_ms() as f64 * 1.01 <= c.lease_ms as f64 * 0.99);
    assert!(c.quiet_ms() as f64 * 0.99 >= c.lease_ms as f64 * 1.01);
    assert_eq!(LeaseConfig::new(vec![id(0), id(1), id(2)]).quorum(), 2);
}

/// The answer of voter `v` to a request from member 1's process `session`.
fn ask(v: &mut LeaseKeeper, session: u64, lease_ms: u64, members: u64, now: u64) -> bool {
    v.handle(
        id(0),
        LeaseMessage::Request {
            term: 50,
            round: 1,
            session,
            lease_ms,
            members,
        },
        now,
    );
    match v.poll_output().map(|o| o.message) {
        Some(LeaseMessage::Reply { granted, .. }) => granted,
        other => panic!("a reply expected, got {other:?}"),
    }
}

#[test]
fn another_process_of_the_holder_another_member_list_are_refused_and_longer_leases_kept() {
    let mut net = Net::new(|c| c);
    net.run(net.keepers[0].config().quiet_ms() + 200);
    assert_eq!(net.primaries(), [0]);
    let digest = net.keepers[0].config().members_digest();
    let now = net.now;
    // Process 100 of member 1 holds; a second process of member 1 is somebody else.
    assert!(!ask(&mut net.keepers[1], 555, 4_000, digest, now));
    // The holder's own process renews.
    assert!(ask(&mut net.keepers[1], 100, 4_000, digest, now));
    // A candidate counting another member list is refused even when no promise runs.
    let config = net.keepers[2].config().clone();
    let mut fresh = LeaseKeeper::new(id(2), config.clone(), 0, 7);
    let later = config.quiet_ms() + 1;
    assert!(!ask(&mut fresh, 100, 4_000, digest ^ 1, later));
    // A candidate counting on a longer lease than the voter's gets that long a promise.
    assert!(ask(&mut fresh, 100, 60_000, digest, later));
    assert!(
        !ask(&mut fresh, 200, 4_000, digest, later + 30_000),
        "still promised"
    );
}
