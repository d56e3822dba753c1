//! A region may come back with less than it shipped (an emptied data directory, a backup
//! restored, the unsynced tail of its WAL lost): it must never number a write with a sequence
//! number a peer may already hold. And a peer's identity is what its certificate and the
//! configuration say, whatever it announces. Real engines on RocksDB, replicators linked in
//! memory.

#![allow(clippy::unwrap_used)]

mod common;

use common::Net;
use meridian::replication::{LinkId, Output, ReplicationConfig, Replicator};
use meridian::{Config, Engine, Error, ReplicaId};

#[test]
fn a_region_back_with_an_empty_directory_writes_under_a_new_epoch_and_loses_nothing() {
    let mut net = Net::new(3);
    net.run(200);
    for k in 0..10 {
        net.engine(0)
            .put(format!("old{k}").as_bytes(), b"v")
            .unwrap();
    }
    net.run(500);
    net.assert_everywhere("old9", "v");
    let before = net.engine(0).replica_id();

    // Killed, its directory emptied, restarted under the same identity.
    net.stop(0);
    std::fs::remove_dir_all(&net.regions[0].dir).unwrap();
    net.start(0);
    let after = net.engine(0).replica_id();
    assert_ne!(before, after, "a new epoch, not the old origin again");
    assert_eq!(net.engine(0).member_id(), ReplicaId(1));
    assert!(net.engine(0).origin_status().writable);
    for k in 0..20 {
        net.engine(0)
            .put(format!("new{k}").as_bytes(), b"w")
            .unwrap();
    }
    net.run(3_000);
    for k in 0..20 {
        net.assert_everywhere(&format!("new{k}"), "w");
    }
    for k in 0..10 {
        net.assert_everywhere(&format!("old{k}"), "v"); // back from its peers
    }
    let applied: Vec<_> = net
        .regions
        .iter()
        .map(|r| r.node.as_ref().unwrap().0.applied())
        .collect();
    assert!(applied.windows(2).all(|w| w[0] == w[1]), "{applied:?}");
}

#[test]
fn a_region_restored_from_an_older_copy_waits_for_its_peers_then_takes_a_new_epoch() {
    let mut net = Net::new(3);
    net.run(200);
    net.engine(0).put(b"a", b"1").unwrap();
    net.run(300);
    let backup = net._scratch.path().join("backup");
    net.engine(0).checkpoint(&backup).unwrap();
    // Written and shipped after the copy: the peers hold them, the copy does not.
    for k in 0..5 {
        net.engine(0)
            .put(format!("late{k}").as_bytes(), b"x")
            .unwrap();
    }
    net.run(300);
    let origin = net.engine(0).replica_id();
    net.stop(0);
    std::fs::remove_dir_all(&net.regions[0].dir).unwrap();
    std::fs::rename(&backup, &net.regions[0].dir).unwrap();

    // Reopened with its peers unreachable: it refuses writes rather than reuse numbers.
    net.cut.insert((0, 1));
    net.cut.insert((0, 2));
    net.start(0);
    assert_eq!(net.engine(0).replica_id(), origin);
    let status = net.engine(0).origin_status();
    assert!(!status.writable, "{status:?}");
    assert!(status.note.starts_with("recovering"), "{status:?}");
    let refused = net.engine(0).put(b"b", b"2").unwrap_err();
    assert!(matches!(refused, Error::Recovering(_)), "{refused}");
    assert!(refused.is_retryable());

    // The peers answer: they hold more of its origin, so it writes under a new epoch.
    net.cut.clear();
    for j in 1..3 {
        net.link(0, j);
    }
    net.run(200);
    let status = net.engine(0).origin_status();
    assert!(status.writable, "{status:?}");
    assert_ne!(status.origin, origin);
    assert!(status.note.contains("new epoch"), "{status:?}");
    net.engine(0).put(b"b", b"2").unwrap();
    net.run(3_000);
    net.assert_everywhere("b", "2");
    for k in 0..5 {
        net.assert_everywhere(&format!("late{k}"), "x");
    }
}

#[test]
fn a_restart_that_lost_nothing_keeps_its_epoch_once_every_peer_confirms() {
    let mut net = Net::new(3);
    net.run(200);
    net.engine(1).put(b"k", b"v").unwrap();
    net.run(300);
    let origin = net.engine(1).replica_id();
    net.stop(1);
    net.start(1);
    assert!(!net.engine(1).origin_status().writable);
    net.run(200);
    let status = net.engine(1).origin_status();
    assert!(status.writable, "{status:?}");
    assert_eq!(status.origin, origin, "confirmed: the same origin goes on");
    net.engine(1).put(b"k2", b"v2").unwrap();
    net.run(500);
    net.assert_everywhere("k2", "v2");
}

#[test]
fn a_restart_with_a_peer_silent_too_long_moves_to_a_new_epoch() {
    let mut net = Net::new(3);
    net.run(200);
    let origin = net.engine(2).replica_id();
    net.stop(0); // stays down
    net.stop(2);
    net.start(2);
    assert!(!net.engine(2).origin_status().writable);
    let limit = ReplicationConfig::default().epoch_confirm_ms;
    net.run(limit - 500);
    assert!(
        !net.engine(2).origin_status().writable,
        "still waiting for region 0"
    );
    net.run(1_000);
    let status = net.engine(2).origin_status();
    assert!(status.writable, "{status:?}");
    assert_ne!(status.origin, origin);
    assert!(
        status.note.contains(&ReplicaId(1).to_string()),
        "{status:?}"
    );
}

#[test]
fn a_peer_announcing_another_member_than_its_certificate_is_refused() {
    let mut net = Net::new(2);
    net.run(200);
    // Region 1 comes back configured with another incarnation (another member id) while
    // region 0 still expects the old one.
    net.stop(1);
    net.start_as(1, ReplicaId(99));
    net.run(200);
    let refused: Vec<&(usize, usize, String)> = net
        .closed
        .iter()
        .filter(|(i, j, _)| *i == 0 && *j == 1)
        .collect();
    assert!(
        refused
            .iter()
            .any(|(_, _, why)| why.contains("incarnation")),
        "{:?}",
        net.closed
    );
    let _ = net.engine(1).put(b"x", b"1");
    net.run(300);
    assert_eq!(net.engine(0).get(b"x").unwrap(), None, "nothing crossed");
}

#[test]
fn a_second_process_with_a_live_identity_is_refused() {
    let mut net = Net::new(2);
    net.run(200);
    let (e0, r0) = net.regions[0].node.take().unwrap();
    // A second process of member 2 (another data directory, another session).
    let twin_dir = net._scratch.path().join("twin");
    let twin = Engine::open(
        &twin_dir,
        Config {
            replica_id: Some(ReplicaId(2)),
            ..Config::default()
        },
    )
    .unwrap();
    let mut twin_repl = Replicator::new(
        ReplicaId(2),
        ReplicationConfig {
            members: net.members.clone(),
            session: 1_000,
            ..ReplicationConfig::default()
        },
    );
    let mut r0 = r0;
    // The twin links first (a new session replaces the original's), then the original
    // process comes back on another link: its earlier session is refused.
    let hello = |r: &mut Replicator| -> Vec<Vec<u8>> {
        std::iter::from_fn(|| r.poll_output())
            .filter_map(|o| match o {
                Output::Send { frame, .. } => Some(frame),
                Output::Close { .. } => None,
            })
            .collect()
    };
    r0.connected(LinkId(7), ReplicaId(2), &e0, 10);
    twin_repl.connected(LinkId(0), ReplicaId(1), &twin, 10);
    for f in hello(&mut twin_repl) {
        r0.handle(LinkId(7), &f, &e0, 10).unwrap();
    }
    let (e1, mut r1) = net.regions[1].node.take().unwrap();
    r0.connected(LinkId(8), ReplicaId(2), &e0, 20);
    r1.connected(LinkId(0), ReplicaId(1), &e1, 20);
    let mut errors = Vec::new();
    for f in hello(&mut r1) {
        if let Err(e) = r0.handle(LinkId(8), &f, &e0, 20) {
            errors.push(e.to_string());
        }
    }
    assert!(
        errors
            .iter()
            .any(|e| e.contains("two processes share this identity")),
        "{errors:?}"
    );
}
