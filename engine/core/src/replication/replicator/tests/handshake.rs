//! The handshake: hellos, refused peers and links, process sessions, the round trip measured
//! as a link becomes ready, confirmation of the origin after a restart.

use super::pair::*;
use crate::model::{MemberId, OriginId};
use crate::replication::replicator::handshake::{Session, SessionLog};
use crate::replication::*;

/// Bytes that decode as no frame.
const GARBAGE: &[u8] = b"\x01\xff\xff garbage";

#[test]
fn two_replicas_exchange_writes_and_a_foreign_cluster_is_refused() {
    let mut pair = Pair::new(ReplicationConfig::default());
    pair.latency_ms = 20;
    pair.a.store.apply(b"k", put(b"from-a")).unwrap();
    pair.b.store.apply(b"j", put(b"from-b")).unwrap();
    pair.connect();
    pair.drive();
    assert_eq!(get(&pair.b.store, b"k"), Some(vec![b"from-a".to_vec()]));
    assert_eq!(get(&pair.a.store, b"j"), Some(vec![b"from-b".to_vec()]));
    assert_eq!(pair.a.store.applied(), pair.b.store.applied());
    assert_eq!(states(&pair.a.store), states(&pair.b.store));

    // A later write goes out at the next tick.
    pair.a.store.apply(b"k", put(b"again")).unwrap();
    pair.tick(1);
    assert_eq!(get(&pair.b.store, b"k"), Some(vec![b"again".to_vec()]));

    // A replica of another cluster says hello to a: refused, and only that link is closed.
    let c = MemoryStore::new(MemberId(3), 0);
    let other = ReplicationConfig {
        cluster: "elsewhere".into(),
        ..ReplicationConfig::default()
    };
    let mut rc = Replicator::new(c.member_id(), other);
    let a = &mut pair.a.replicator;
    a.connected(LinkId(3), c.member_id(), &pair.a.store, pair.now);
    rc.connected(LinkId(1), MemberId(1), &c, pair.now);
    let hello = std::iter::from_fn(|| rc.poll_output())
        .find_map(|o| match o {
            Output::Send { frame, .. } => Some(frame),
            _ => None,
        })
        .unwrap();
    let err = a
        .handle(LinkId(3), &hello, &pair.a.store, pair.now)
        .unwrap_err();
    assert!(
        matches!(
            err,
            ReplicationError::Peer {
                peer: LinkId(3),
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(link_state(a, LinkId(3)), Some(LinkState::Refused));
    // The frames a queued for link 3 go nowhere in this pair; the link to b goes on.
    pair.drive();
    assert_eq!(
        pair.closed_links(),
        [(Dir::AtoB, LinkId(3))],
        "a closed link 3, and only it"
    );
    pair.a.store.apply(b"k", put(b"still")).unwrap();
    pair.tick(1);
    assert_eq!(get(&pair.b.store, b"k"), Some(vec![b"still".to_vec()]));
}

/// Bytes that are not a frame close the link they came on, and no other: the link to b goes
/// on after garbage arrives on another link, and carries nothing more once garbage came on it.
#[test]
fn a_malformed_frame_closes_its_link_only() {
    let mut pair = Pair::new(ReplicationConfig::default());
    pair.latency_ms = 5;
    pair.connect();
    pair.drive();
    let peer_error = |err: ReplicationError<MemoryStoreError>| match err {
        ReplicationError::Peer { peer, .. } => peer,
        other => panic!("{other}"),
    };

    // A third link, whose peer has not said hello yet, brings garbage.
    let a = &mut pair.a;
    a.replicator
        .connected(LinkId(3), MemberId(3), &a.store, pair.now);
    let err = a.replicator.handle(LinkId(3), GARBAGE, &a.store, pair.now);
    assert_eq!(peer_error(err.unwrap_err()), LinkId(3));
    pair.drive();
    assert_eq!(pair.closed_links(), [(Dir::AtoB, LinkId(3))]);
    assert!(matches!(
        link_state(&pair.a.replicator, pair.a.link),
        Some(LinkState::Ready { .. })
    ));
    pair.a.store.apply(b"k", put(b"1")).unwrap();
    pair.tick(1);
    assert_eq!(get(&pair.b.store, b"k"), Some(vec![b"1".to_vec()]));

    // Garbage from b closes the link to b: a sends it nothing more.
    let a = &mut pair.a;
    let err = a.replicator.handle(a.link, GARBAGE, &a.store, pair.now);
    assert_eq!(peer_error(err.unwrap_err()), LinkId(2));
    pair.drive();
    assert_eq!(
        pair.closed_links(),
        [(Dir::AtoB, LinkId(3)), (Dir::AtoB, LinkId(2))]
    );
    assert_eq!(
        link_state(&pair.a.replicator, LinkId(2)),
        Some(LinkState::Refused)
    );
    pair.a.store.apply(b"k", put(b"2")).unwrap();
    pair.tick(1);
    pair.tick(ReplicationConfig::default().retransmit_ms);
    assert_eq!(
        get(&pair.b.store, b"k"),
        Some(vec![b"1".to_vec()]),
        "an entry went out on a closed link"
    );
}

/// As a link becomes ready each end pings: the pong measures the round trip, which sizes the
/// link's in-flight window before any catch-up.
#[test]
fn a_link_measures_its_round_trip_as_it_becomes_ready() {
    let mut pair = Pair::new(ReplicationConfig::default());
    pair.latency_ms = 20;
    pair.connect();
    // The hellos cross and arrive at 20 ms, when each end is ready and pings; the pongs come
    // back at 60 ms.
    while pair.now < 60 {
        assert_eq!(rtt_ms(&pair.a.replicator, pair.a.link), None);
        assert_eq!(rtt_ms(&pair.b.replicator, pair.b.link), None);
        assert!(pair.step(), "the pair went quiet at {} ms", pair.now);
    }
    pair.drive();
    let rtt = rtt_ms(&pair.a.replicator, pair.a.link);
    assert_eq!(rtt, Some(40));
    assert_eq!(rtt_ms(&pair.b.replicator, pair.b.link), Some(40));
    let base = ReplicationConfig::default().inflight_bytes_max;
    assert!(
        pair.a.replicator.inflight_window(rtt) > base,
        "the window grew with the round trip"
    );
}

#[test]
fn a_session_that_comes_back_after_another_is_a_second_process() {
    let mut log = SessionLog::default();
    assert_eq!(log.see(1), Session::New);
    assert_eq!(log.see(1), Session::Current);
    assert_eq!(log.see(2), Session::New, "a restart");
    assert_eq!(log.see(1), Session::Retired, "the first process again");
    assert_eq!(log.see(2), Session::Current);
}

/// A second process of b (a restored copy, a second start) says hello to a: a replicates with
/// it and drops the first's link. When the first comes back, a refuses it as fenced, and the
/// first's replicator says so (`Output::Fenced`), for its driver to stop acknowledging writes.
#[test]
fn an_earlier_process_of_a_member_learns_it_is_fenced() {
    let mut pair = Pair::new(ReplicationConfig::default());
    pair.connect();
    pair.drive();
    let frames = |r: &mut Replicator| -> Vec<Vec<u8>> {
        std::iter::from_fn(|| r.poll_output())
            .filter_map(|o| match o {
                Output::Send { frame, .. } => Some(frame),
                _ => None,
            })
            .collect()
    };
    // b's second process, session 7, on a's link 3.
    let b2_store = MemoryStore::new(MemberId(2), 0);
    let config = ReplicationConfig {
        session: 7,
        ..ReplicationConfig::default()
    };
    let mut b2 = Replicator::new(MemberId(2), config);
    b2.connected(LinkId(1), MemberId(1), &b2_store, pair.now);
    let a = &mut pair.a;
    a.replicator
        .connected(LinkId(3), MemberId(2), &a.store, pair.now);
    for hello in frames(&mut b2) {
        a.replicator
            .handle(LinkId(3), &hello, &a.store, pair.now)
            .unwrap();
    }
    assert!(matches!(
        link_state(&a.replicator, LinkId(3)),
        Some(LinkState::Ready { .. })
    ));
    assert_eq!(
        link_state(&a.replicator, LinkId(2)),
        None,
        "b's first link dropped"
    );
    // The first process of b comes back.
    pair.disconnect();
    pair.connect();
    let a = &mut pair.a;
    let b = &mut pair.b;
    let _ = frames(&mut a.replicator);
    let mut rejects = Vec::new();
    for hello in frames(&mut b.replicator) {
        assert!(a
            .replicator
            .handle(a.link, &hello, &a.store, pair.now)
            .is_err());
        rejects.extend(frames(&mut a.replicator));
    }
    assert!(!rejects.is_empty());
    for reject in rejects {
        assert!(matches!(
            Frame::decode(&reject),
            Ok(Frame::Reject { fenced: true, .. })
        ));
        b.replicator
            .handle(b.link, &reject, &b.store, pair.now)
            .unwrap();
    }
    let fenced: Vec<String> = std::iter::from_fn(|| b.replicator.poll_output())
        .filter_map(|o| match o {
            Output::Fenced { reason } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(fenced.len(), 1, "{fenced:?}");
    assert!(fenced[0].contains("newer process"), "{}", fenced[0]);
}

/// A store restarted after replicating writes at once under its origin; a copy put back by
/// hand that lost writes its peer holds learns it from the peer's claim, moves to a new
/// epoch, and gets them back; a restored backup writes under a new epoch from the start.
#[test]
fn a_restart_stays_writable_and_a_copy_behind_its_peer_starts_a_new_epoch() {
    let mut pair = Pair::new(members_config());
    pair.latency_ms = 5;
    pair.connect();
    pair.drive();
    pair.a.store.apply(b"k", put(b"1")).unwrap();
    pair.tick(1);
    let copy = pair.a.store.copied();
    let backup = pair.a.store.checkpoint();
    pair.a.store.apply(b"k", put(b"2")).unwrap();
    pair.tick(1);
    assert_eq!(pair.b.store.applied().get(OriginId(1)), 2);

    // A restart: writable at once, in the same origin.
    pair.disconnect();
    pair.a.store.restart();
    pair.a.replicator = Replicator::new(MemberId(1), members_config());
    pair.a.store.apply(b"k", put(b"3")).unwrap();
    pair.connect();
    pair.drive();
    assert_eq!(pair.a.store.origin_id(), OriginId(1), "still epoch 0");
    pair.tick(1);
    assert_eq!(get(&pair.b.store, b"k"), Some(vec![b"3".to_vec()]));

    // The copy holds write 1 only; b holds 3: its claim moves the copy to a new epoch, and
    // writes 2 and 3 come back.
    pair.disconnect();
    pair.a.store = copy;
    pair.a.store.set_next_epoch(5);
    pair.a.replicator = Replicator::new(MemberId(1), members_config());
    pair.connect();
    pair.drive();
    let view = pair.a.store.origin_view();
    assert_eq!(view.epoch, 5);
    assert_eq!(view.origin, MemberId(1).epoch_origin(5));
    pair.tick(ReplicationConfig::default().relay_delay_ms);
    pair.tick(1);
    assert_eq!(pair.a.store.applied().get(OriginId(1)), 3);
    assert_eq!(get(&pair.a.store, b"k"), Some(vec![b"3".to_vec()]));
    pair.a.store.apply(b"k", put(b"4")).unwrap();
    pair.tick(1);
    assert_eq!(get(&pair.b.store, b"k"), Some(vec![b"4".to_vec()]));
    assert_eq!(pair.a.store.applied(), pair.b.store.applied());
    assert_eq!(states(&pair.a.store), states(&pair.b.store));

    // The restored backup wrote under a new epoch from its first open.
    assert_eq!(backup.origin_view().epoch, 1);
    assert_eq!(backup.applied().get(OriginId(1)), 1);
}

/// A replica describes its region once the link is ready; its peer keeps what can be
/// believed and drops a place off the Earth.
#[test]
fn a_peer_learns_the_region_a_replica_describes_and_drops_what_cannot_be() {
    let about = RegionAbout {
        location: crate::routing::Location::new(53.3, -6.3),
        address: Some("198.51.100.7:7001".into()),
    };
    let mut pair = Pair::new(ReplicationConfig {
        about: Some(about.clone()),
        ..members_config()
    });
    pair.connect();
    pair.drive();
    let learned = |r: &Replicator| r.peers().next().and_then(|(_, p)| p.about.clone());
    assert_eq!(learned(&pair.b.replicator), Some(about.clone()));
    assert_eq!(pair.count(Dir::AtoB, "About"), 1, "said once");

    let mut pair = Pair::new(ReplicationConfig {
        about: Some(RegionAbout {
            location: Some(crate::routing::Location {
                latitude: 123.0,
                longitude: 0.0,
            }),
            address: None,
        }),
        ..members_config()
    });
    pair.connect();
    pair.drive();
    assert_eq!(learned(&pair.b.replicator), None, "off the Earth: ignored");
    assert!(pair.closed_links().is_empty(), "the link lives on");
}
