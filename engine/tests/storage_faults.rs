//! A fault in stored bytes stays with its key: a record or log entry that cannot be used is
//! skipped and reported, and replication goes on for everything else.

#![allow(clippy::unwrap_used)]

mod common;

use common::Net;

/// Region 0 writes `keys` while region 1 is down, then `damage` breaks something in its
/// storage, then both run again (region 0 restarted: nothing cached, everything is read back
/// from RocksDB).
fn written_while_a_peer_was_down(
    keys: &[&str],
    damage: impl FnOnce(&meridian::Replication),
) -> Net {
    let mut net = Net::new(2);
    net.run(200);
    net.stop(1);
    for k in keys {
        net.engine(0).put(k.as_bytes(), b"v").unwrap();
    }
    damage(net.engine(0));
    net.stop(0);
    net.start(0);
    net.start(1);
    net
}

#[test]
fn a_record_that_does_not_decode_stays_with_its_key_and_replication_goes_on() {
    let mut net = written_while_a_peer_was_down(&["k1", "k2", "k3"], |e| {
        e.store()
            .put_raw_record(b"k2", b"\x01not a record")
            .unwrap();
    });
    net.run(1_000);
    net.engine(0).put(b"k4", b"v").unwrap();
    net.run(1_000);
    for k in ["k1", "k3", "k4"] {
        assert!(net.engine(1).get(k.as_bytes()).unwrap().is_some(), "{k}");
    }
    assert_eq!(net.engine(1).get(b"k2").unwrap(), None, "never shipped");
    let faults = net.engine(0).faults();
    assert!(faults.corrupt_records >= 1, "{faults:?}");
    assert!(faults.last.unwrap().contains("k2"));
    assert!(net.closed.is_empty(), "no link closed: {:?}", net.closed);
}

#[test]
fn a_log_entry_that_does_not_decode_is_replaced_by_a_state_transfer() {
    let mut net = written_while_a_peer_was_down(&["k1", "k2", "k3"], |e| {
        e.store()
            .put_raw_log(e.origin_id(), 2, b"\xffgarbage")
            .unwrap();
    });
    net.run(3_000);
    for k in ["k1", "k2", "k3"] {
        assert!(net.engine(1).get(k.as_bytes()).unwrap().is_some(), "{k}");
    }
    assert_eq!(net.engine(0).applied(), net.engine(1).applied());
    let faults = net.engine(0).faults();
    assert!(faults.corrupt_log_entries >= 1, "{faults:?}");
}

#[test]
fn a_scan_skips_a_record_that_does_not_decode_and_reports_it() {
    let net = Net::new(1);
    let e = net.engine(0);
    for k in ["a", "b", "c"] {
        e.put(k.as_bytes(), b"v").unwrap();
    }
    e.store().put_raw_record(b"b", b"\x01broken").unwrap();
    let rows = e.scan_prefix(b"", 10).unwrap();
    let keys: Vec<&[u8]> = rows.iter().map(|(k, _)| k.as_slice()).collect();
    assert_eq!(keys, vec![b"a".as_slice(), b"c"]);
    assert!(matches!(e.get(b"b"), Err(meridian::Error::Corrupt { .. })));
    assert_eq!(e.faults().corrupt_records, 1);
}

/// The largest write a replica accepts is one replication carries: a value of exactly
/// `value_bytes_max`, a batch whose entry is exactly `record_bytes_max`, both replicate; one
/// byte more is refused when written, never accepted and then stuck.
#[test]
fn the_largest_value_and_batch_replicate_and_one_byte_more_is_refused() {
    let mut net = Net::new(2);
    net.run(200);
    let e = net.engine(0).clone();
    let config = e.config().clone();
    let value = vec![7u8; config.value_bytes_max];
    e.put(b"big", &value).unwrap();
    let over = vec![7u8; config.value_bytes_max + 1];
    assert!(matches!(
        e.put(b"big2", &over),
        Err(meridian::Error::ValueTooLarge { .. })
    ));

    // What a fresh key's record adds to its value, measured on this replica.
    let size = config.value_bytes_max - 4096;
    e.put(b"probe", &vec![1u8; size]).unwrap();
    let overhead = e.replication().export(b"probe").unwrap().unwrap().len() - size;
    // Four keys of 2 bytes; the entry counts key + record + 8 per record, and 10.
    let keys = [b"b0", b"b1", b"b2", b"b3"];
    let per = (config.record_bytes_max - 10) / 4 - 2 - 8 - overhead;
    let mut sizes = [per; 4];
    sizes[3] += (config.record_bytes_max - 10) - 4 * (per + 2 + 8 + overhead);
    assert!(sizes.iter().all(|s| *s <= config.value_bytes_max));
    let batch = |extra: usize| {
        keys.iter()
            .zip(sizes)
            .enumerate()
            .fold(meridian::Batch::new(), |b, (i, (k, s))| {
                b.put(
                    k.to_vec(),
                    vec![i as u8; s + if i == 0 { extra } else { 0 }],
                )
            })
    };
    let refused = e.write(batch(1)).unwrap_err();
    assert!(
        matches!(refused, meridian::Error::BatchTooLarge { len, max } if len == max + 1),
        "{refused}"
    );
    e.write(batch(0)).unwrap();
    net.run(3_000);
    let other = net.engine(1);
    assert_eq!(other.get(b"big").unwrap().unwrap().values, vec![value]);
    for (i, k) in keys.iter().enumerate() {
        let got = other.get(*k).unwrap().unwrap().values;
        assert_eq!(got[0].len(), sizes[i], "{k:?}");
    }
}

/// A record damaged at one region of three (bit rot under a running node): the scrub finds it,
/// the region asks its peers for a round, and a peer that applied everything it did gives the
/// good state back. Nothing is lost and nothing else is touched.
#[test]
fn a_damaged_record_is_repaired_from_a_peer() {
    let mut net = Net::new(3);
    net.run(200);
    for k in ["a", "b", "c"] {
        net.engine(1).put(k.as_bytes(), b"v").unwrap();
    }
    net.engine(2).set_add(b"s", &[b"x"]).unwrap();
    net.run(1_000);
    net.engine(0)
        .store()
        .put_raw_record(b"b", b"\x01not a record")
        .unwrap();
    assert!(net.engine(0).get(b"b").is_err(), "damaged: its reads fail");
    net.run(10_000);
    net.assert_everywhere("b", "v");
    assert_eq!(
        net.engine(0).get_set(b"s").unwrap(),
        Some(vec![b"x".to_vec()])
    );
    let faults = net.engine(0).faults();
    assert!(faults.corrupt_records >= 1, "{faults:?}");
    // Writable again there, and the write replicates.
    net.engine(0).put(b"b", b"w").unwrap();
    net.run(1_000);
    net.assert_everywhere("b", "w");
}

/// A set removal's log entry damaged before a peer received it: its tombstone (the element's
/// dot, stable everywhere) must stay until the removal itself reached every member, or the
/// peer keeps the element while its vector covers the removal (found by simulator seed
/// 363156624).
#[test]
fn a_removal_whose_log_entry_does_not_decode_keeps_its_tombstone_until_every_member_has_it() {
    let mut net = Net::new(2);
    net.engine(0).set_add(b"s", &[b"x"]).unwrap();
    net.run(500);
    assert_eq!(
        net.engine(1).get_set(b"s").unwrap(),
        Some(vec![b"x".to_vec()])
    );
    net.stop(1);
    net.engine(0).set_remove(b"s", &[b"x"]).unwrap();
    let origin = net.engine(0).origin_id();
    let removal = net.engine(0).applied().get(origin);
    net.engine(0)
        .store()
        .put_raw_log(origin, removal, b"\xffgarbage")
        .unwrap();
    // Compactions pass while region 1 is away (its last report covers the element's dot).
    net.run(6_000);
    net.start(1);
    net.run(6_000);
    let applied = net.engine(1).applied();
    assert!(applied.get(origin) >= removal, "{applied}");
    assert_eq!(
        net.engine(1).get_set(b"s").unwrap().unwrap_or_default(),
        Vec::<Vec<u8>>::new(),
        "region 1 covers the removal {origin}:{removal}, so it must not hold the element"
    );
}
