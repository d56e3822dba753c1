//! A region may come back with less than it shipped (an emptied data directory, a backup
//! restored, the unsynced tail of its WAL lost): it must never number a write with a sequence
//! number a peer may already hold, and it stays writable while it makes sure of that. And a peer's identity is what its certificate and the
//! configuration say, whatever it announces. Real engines on RocksDB, replicators linked in
//! memory.

#![allow(clippy::unwrap_used)]

mod common;

use common::Net;
use meridian::{Config, Durability, Engine, MemberId};
use meridian_core::replication::ReplicaStore;
use meridian_core::replication::{LinkId, Output, ReplicationConfig, Replicator};

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
    let before = net.engine(0).origin_id();

    // Killed, its directory emptied, restarted under the same identity.
    net.stop(0);
    std::fs::remove_dir_all(&net.regions[0].dir).unwrap();
    net.start(0);
    let after = net.engine(0).origin_id();
    assert_ne!(before, after, "a new epoch, not the old origin again");
    assert_eq!(net.engine(0).member_id(), MemberId(1));
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
fn a_region_restored_from_a_backup_writes_under_a_new_epoch_at_once_and_gets_the_rest_back() {
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
    let origin = net.engine(0).origin_id();
    net.stop(0);
    std::fs::remove_dir_all(&net.regions[0].dir).unwrap();
    Engine::restore_backup(&backup, &net.regions[0].dir).unwrap();
    assert!(
        Engine::restore_backup(&backup, &net.regions[0].dir).is_err(),
        "never over an existing directory"
    );

    // Reopened with its peers unreachable: writable at once, under a new epoch (never the
    // numbers the peers hold).
    net.cut.insert((0, 1));
    net.cut.insert((0, 2));
    net.start(0);
    let status = net.engine(0).origin_status();
    assert!(status.writable, "{status:?}");
    assert_ne!(status.origin, origin);
    assert!(status.note.contains("restore"), "{status:?}");
    net.engine(0).put(b"b", b"2").unwrap();

    // The peers answer: what they hold of the old origin comes back.
    net.cut.clear();
    for j in 1..3 {
        net.link(0, j);
    }
    net.run(3_000);
    net.assert_everywhere("b", "2");
    for k in 0..5 {
        net.assert_everywhere(&format!("late{k}"), "x");
    }
    // A second open of the restored directory keeps its epoch: the mark went with the first.
    let epoch = net.engine(0).origin_id();
    net.stop(0);
    net.start(0);
    assert_eq!(net.engine(0).origin_id(), epoch);
}

#[test]
fn a_copy_put_back_by_hand_moves_to_a_new_epoch_when_a_peer_holds_more_of_its_origin() {
    let mut net = Net::new(3);
    net.run(200);
    net.engine(0).put(b"a", b"1").unwrap();
    net.run(300);
    let copy = net._scratch.path().join("copy");
    net.engine(0).checkpoint(&copy).unwrap();
    for k in 0..5 {
        net.engine(0)
            .put(format!("late{k}").as_bytes(), b"x")
            .unwrap();
    }
    net.run(300);
    let origin = net.engine(0).origin_id();
    net.stop(0);
    std::fs::remove_dir_all(&net.regions[0].dir).unwrap();
    std::fs::rename(&copy, &net.regions[0].dir).unwrap();
    net.start(0);
    net.run(200);
    let status = net.engine(0).origin_status();
    assert_ne!(status.origin, origin, "{status:?}");
    assert!(status.note.contains("holds"), "{status:?}");
    net.engine(0).put(b"b", b"2").unwrap();
    net.run(3_000);
    net.assert_everywhere("b", "2");
    for k in 0..5 {
        net.assert_everywhere(&format!("late{k}"), "x");
    }
}

#[test]
fn a_restart_that_lost_nothing_is_writable_at_once_under_its_origin() {
    let mut net = Net::new(3);
    net.run(200);
    net.engine(1).put(b"k", b"v").unwrap();
    net.run(300);
    let origin = net.engine(1).origin_id();
    // A clean stop, then a crash in the same boot: peers unreachable both times.
    for crash in [false, true] {
        if crash {
            net.crash(1);
        } else {
            net.stop(1);
        }
        net.cut.insert((0, 1));
        net.cut.insert((1, 2));
        net.start(1);
        let status = net.engine(1).origin_status();
        assert!(status.writable, "{status:?}");
        assert_eq!(status.origin, origin, "the same origin goes on");
        net.engine(1)
            .put(format!("k{crash}").as_bytes(), b"v2")
            .unwrap();
        net.cut.clear();
        net.link(1, 0);
        net.link(1, 2);
        net.run(500);
        net.assert_everywhere(&format!("k{crash}"), "v2");
    }
}

/// A hundred restarts of one region: clean stops and crashes in the same boot keep its
/// origin; only a power loss under `wal` (a crash in another boot) adds one, so the vectors
/// carry one origin per such loss and nothing per ordinary restart. Every write survives.
#[test]
fn a_hundred_restarts_add_an_origin_only_per_power_loss() {
    let mut net = Net::new(3);
    net.run(200);
    net.engine(0).put(b"a", b"0").unwrap();
    net.engine(2).put(b"c", b"2").unwrap();
    let mut power_losses = 0;
    for i in 0..100 {
        net.engine(1).put(format!("r{i}").as_bytes(), b"v").unwrap();
        net.run(100);
        match i % 5 {
            0 => {
                net.crash(1);
                net.boot = format!("boot-{i}");
                power_losses += 1;
            }
            1 | 2 => net.crash(1),
            _ => net.stop(1),
        }
        net.start(1);
        assert!(net.engine(1).origin_status().writable);
    }
    net.run(2_000);
    for i in 0..100 {
        net.assert_everywhere(&format!("r{i}"), "v");
    }
    for r in 0..3 {
        let origins = net.engine(r).applied().len();
        assert_eq!(origins, 3 + power_losses, "region {r}");
    }
}

/// The durability of the run that crashed decides whether its tail may be lost, not that of
/// the next run: a power loss under `wal` restarted under `sync` still takes a new epoch.
#[test]
fn a_power_loss_under_wal_takes_a_new_epoch_at_once_whatever_the_next_run_says() {
    let mut net = Net::new(3);
    net.run(200);
    net.engine(2).put(b"k", b"v").unwrap();
    net.run(300);
    let origin = net.engine(2).origin_id();
    net.crash(2);
    net.cut.insert((0, 2));
    net.cut.insert((1, 2));
    net.boot = "boot-2".into();
    net.start_tuned(2, |c| c.durability = Durability::Sync);
    let status = net.engine(2).origin_status();
    assert!(status.writable, "{status:?}");
    assert_ne!(status.origin, origin);
    assert!(status.note.contains("earlier boot"), "{status:?}");
    // A crash of a run under `sync` in another boot lost nothing it acknowledged: same origin.
    let origin = net.engine(2).origin_id();
    net.crash(2);
    net.boot = "boot-3".into();
    net.start_tuned(2, |c| c.durability = Durability::Wal);
    assert_eq!(net.engine(2).origin_id(), origin);
}

#[test]
fn a_peer_announcing_another_member_than_its_certificate_is_refused() {
    let mut net = Net::new(2);
    net.run(200);
    // Region 1 comes back configured with another incarnation (another member id) while
    // region 0 still expects the old one.
    net.stop(1);
    net.start_as(1, MemberId(99));
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

/// A second process of a member links first; the original process, coming back, is refused
/// and told it is fenced, and its engine then refuses local writes.
#[test]
fn a_second_process_with_a_live_identity_is_refused_and_the_first_fenced() {
    let mut net = Net::new(2);
    net.run(200);
    let (e0, r0) = net.regions[0].node.take().unwrap();
    // A second process of member 2 (another data directory, another session).
    let twin_dir = net._scratch.path().join("twin");
    let twin = Engine::open(
        &twin_dir,
        Config {
            member_id: Some(MemberId(2)),
            ..Config::default()
        },
    )
    .unwrap()
    .replication();
    let mut twin_repl = Replicator::new(
        MemberId(2),
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
                Output::Close { .. } | Output::Fenced { .. } => None,
            })
            .collect()
    };
    r0.connected(LinkId(7), MemberId(2), &e0, 10);
    twin_repl.connected(LinkId(0), MemberId(1), &twin, 10);
    for f in hello(&mut twin_repl) {
        r0.handle(LinkId(7), &f, &e0, 10).unwrap();
    }
    let (e1, mut r1) = net.regions[1].node.take().unwrap();
    r0.connected(LinkId(8), MemberId(2), &e0, 20);
    r1.connected(LinkId(0), MemberId(1), &e1, 20);
    let mut errors = Vec::new();
    for f in hello(&mut r1) {
        if let Err(e) = r0.handle(LinkId(8), &f, &e0, 20) {
            errors.push(e.to_string());
        }
    }
    assert!(
        errors
            .iter()
            .any(|e| e.contains("a newer process of this identity runs")),
        "{errors:?}"
    );
    // Told so, the original process is fenced: its driver fences the engine, which refuses
    // local writes from then on, saying why.
    for f in hello(&mut r0) {
        r1.handle(LinkId(0), &f, &e1, 30).unwrap();
    }
    let fenced: Vec<String> = std::iter::from_fn(|| r1.poll_output())
        .filter_map(|o| match o {
            Output::Fenced { reason } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(fenced.len(), 1, "{fenced:?}");
    assert!(e1.put(b"before", b"1").is_ok());
    e1.fence(&fenced[0]);
    assert!(matches!(
        e1.put(b"after", b"1"),
        Err(meridian::Error::Fenced { reason }) if reason == fenced[0]
    ));
    assert_eq!(e1.get(b"after").unwrap(), None, "nothing written");
    assert!(!e1.origin_status().writable);
    assert!(twin.put(b"twin", b"1").is_ok(), "the twin writes");
}

/// `k` written at region 0 and a copy of region 1's directory taken at `copy` (a backup, or
/// the sync point a power loss takes its disk back to); then `k` deleted and reclaimed
/// everywhere (every region applied the delete: log entries and tombstone go).
fn deleted_and_reclaimed_after_a_copy_of_region_1(net: &mut Net, copy: &std::path::Path) {
    net.run(200);
    net.engine(0).put(b"k", b"old").unwrap();
    net.run(500);
    net.engine(1).checkpoint(copy).unwrap();
    net.engine(0).delete(b"k").unwrap();
    net.run(500);
    for i in 0..3 {
        let e = net.engine(i).clone();
        e.compact(&e.applied()).unwrap();
        e.compact(&e.applied()).unwrap();
        assert!(e.store().get_record(b"k").unwrap().is_none(), "reclaimed");
    }
}

/// Region 1, back with a copy that holds the deleted `k`, and region 2, back empty (both
/// down, their directories in place), reach each other only for three seconds: the value
/// must not travel (`how` region 1 came back). Then every link heals, no region reads `k`, and
/// region 1, reconciled, ships again.
fn the_old_copy_hands_nothing_on(net: &mut Net, how: &str) {
    std::fs::remove_dir_all(&net.regions[2].dir).unwrap();
    net.cut.insert((0, 1));
    net.cut.insert((0, 2));
    net.start(1);
    net.start(2);
    assert_eq!(
        net.engine(1).get(b"k").unwrap().map(|r| r.values),
        Some(vec![b"old".to_vec()]),
        "the copy holds the deleted value"
    );
    net.run(3_000);
    assert_eq!(
        net.engine(2).get(b"k").unwrap(),
        None,
        "the deleted value came back through the region {how}"
    );
    net.cut.clear();
    net.link(0, 1);
    net.link(0, 2);
    net.run(3_000);
    for i in 0..3 {
        assert_eq!(net.engine(i).get(b"k").unwrap(), None, "region {i}");
    }
    net.engine(1).put(b"after", b"1").unwrap();
    net.run(2_000);
    net.assert_everywhere("after", "1");
}

/// A region restored from a backup older than a delete whose tombstone its peers then reclaimed
/// (they counted what it reported before the restore) holds the deleted value again. It must
/// not hand it to a region that never saw the delete: it ships nothing, and offers nothing,
/// until a peer's state transfer has reconciled it (simulator seed 1200000864).
#[test]
fn a_restored_region_ships_nothing_until_a_peer_reconciles_it_and_no_deleted_value_returns() {
    let mut net = Net::new(3);
    let backup = net._scratch.path().join("backup-1");
    deleted_and_reclaimed_after_a_copy_of_region_1(&mut net, &backup);
    net.stop(1);
    net.stop(2);
    std::fs::remove_dir_all(&net.regions[1].dir).unwrap();
    Engine::restore_backup(&backup, &net.regions[1].dir).unwrap();
    the_old_copy_hands_nothing_on(&mut net, "restored from a backup");
}

/// A power loss under `wal` takes a region's disk back to its last sync, past writes it had
/// reported applied: here a delete its peers then reclaimed (tombstone and log) counting its
/// report. Back with the deleted value, it must not hand it to a region that lost its disk
/// before a peer's state transfer has reconciled it (the simulator found this: seed 31162, a
/// superseded register value back through a region rolled back by a power loss).
#[test]
fn a_region_back_from_a_power_loss_ships_nothing_until_a_peer_reconciles_it() {
    let mut net = Net::new(3);
    let synced = net._scratch.path().join("synced-1");
    deleted_and_reclaimed_after_a_copy_of_region_1(&mut net, &synced);
    // A power loss: down at once, on a new boot, its disk back at the sync point.
    net.crash(1);
    net.stop(2);
    std::fs::remove_dir_all(&net.regions[1].dir).unwrap();
    std::fs::rename(&synced, &net.regions[1].dir).unwrap();
    net.boot = "boot-2".into();
    the_old_copy_hands_nothing_on(&mut net, "that lost power");
}
