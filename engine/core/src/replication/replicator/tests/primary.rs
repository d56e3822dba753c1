//! Active-passive mode over a pair: the lease travels in `Lease` frames on the link.

use super::pair::*;
use crate::lease::LeaseConfig;
use crate::model::MemberId;

/// Lets `ms` pass in ticks of 10 ms.
fn run(pair: &mut Pair, ms: u64) {
    for _ in 0..ms / 10 {
        pair.tick(10);
    }
}

#[test]
fn the_lease_travels_on_the_link_and_a_promotion_moves_it() {
    let mut pair = Pair::new(members_config());
    let mut lease = LeaseConfig::new(vec![MemberId(1), MemberId(2)]);
    lease.lease_ms = 400;
    lease.renew_every_ms = 100;
    lease.round_timeout_ms = 100;
    lease.failover_after_ms = Some(800);
    lease.stagger_ms = 200;
    let now = pair.now;
    pair.a.replicator.set_lease(Some(lease.clone()), now);
    pair.b.replicator.set_lease(Some(lease.clone()), now);
    pair.connect();
    pair.drive();
    assert!(!pair.a.replicator.primary_view(pair.now).unwrap().is_primary);
    run(&mut pair, lease.quiet_ms() + 300);
    let (a, b) = (
        pair.a.replicator.primary_view(pair.now).unwrap(),
        pair.b.replicator.primary_view(pair.now).unwrap(),
    );
    assert!(a.is_primary && !b.is_primary, "{a:?} {b:?}");
    assert_eq!(b.primary, Some(MemberId(1)));
    assert!(pair.count(Dir::AtoB, "Lease") > 0);

    let now = pair.now;
    assert!(pair.b.replicator.promote(now));
    run(&mut pair, 300);
    let (a, b) = (
        pair.a.replicator.primary_view(pair.now).unwrap(),
        pair.b.replicator.primary_view(pair.now).unwrap(),
    );
    assert!(b.is_primary && !a.is_primary, "{a:?} {b:?}");
    assert_eq!(a.primary, Some(MemberId(2)));
    // Without the mode, nothing to report or promote.
    pair.a.replicator.set_lease(None, pair.now);
    assert!(pair.a.replicator.primary_view(pair.now).is_none());
    assert!(!pair.a.replicator.promote(pair.now));
}
