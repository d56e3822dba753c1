//! Replays the fuzzing corpus kept in the repository (`fuzz/corpus/<target>/`) through each
//! target in `meridian_tests::fuzzing`: no input may panic, and none may make a target allocate more
//! than `alloc_bound` (a multiple of the input plus a constant). The corpus grows
//! with `make fuzz`, which runs the same targets under libFuzzer.

#![allow(clippy::unwrap_used)]

use cap::Cap;
use std::alloc::System;
use std::path::PathBuf;

/// Counts what every input makes the decoders allocate.
#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

/// Most bytes a target may allocate in all (decoding, then encoding and decoding again) for
/// an input of `len` bytes: proportional to the input, never driven by a length it declares.
fn alloc_bound(len: usize) -> usize {
    64 * len + (4 << 20)
}

fn corpus(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

#[test]
fn every_target_runs_its_corpus_without_a_panic_within_the_allocation_bound() {
    let mut failures = Vec::new();
    let mut inputs = 0;
    for (name, target) in meridian_tests::fuzzing::TARGETS {
        let dir = corpus(name);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(
            files.len() >= 3,
            "{name}: a corpus of {} inputs",
            files.len()
        );
        for file in files {
            let data = std::fs::read(&file).unwrap();
            let before = ALLOCATOR.total_allocated();
            let outcome = std::panic::catch_unwind(|| target(&data));
            let held = ALLOCATOR.total_allocated() - before;
            inputs += 1;
            if outcome.is_err() {
                failures.push(format!("{name}: {} panicked", file.display()));
            } else if held > alloc_bound(data.len()) {
                failures.push(format!(
                    "{name}: {} allocated {held} bytes for {} bytes of input",
                    file.display(),
                    data.len()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{inputs} inputs; failures:\n{}",
        failures.join("\n")
    );
}

/// Writes the seed corpus (valid encodings of every kind, and a few cut short) into
/// `fuzz/corpus/`: `cargo test --release --test fuzz_replay -- --ignored` after a format
/// changes; the files are kept in the repository.
#[test]
#[ignore]
fn write_seed_corpus() {
    use meridian::store::LogEntry;
    use meridian::{Config, Engine, Op};
    use meridian_core::model::{CausalToken, Dot, MemberId, OriginId, VersionVector};
    use meridian_core::replication::iblt::Iblt;
    use meridian_core::replication::{encode_entries, EntryOut, Frame, WireEntry};
    use meridian_runtime::client_proto::{
        encode, After, Answer, ClientError, ClientRequest, ClientResponse, Consistency, ErrorCode,
        NodeStatus,
    };

    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), Config::default()).unwrap();
    let other = tempfile::tempdir().unwrap();
    let o = Engine::open(other.path(), Config::default()).unwrap();
    e.put(b"reg", b"one").unwrap();
    o.put(b"reg", b"two").unwrap();
    e.replication()
        .apply_remote(b"reg", &o.replication().export(b"reg").unwrap().unwrap())
        .unwrap();
    e.lww_set(b"lww", b"last").unwrap();
    e.counter_add(b"cnt", 5).unwrap();
    e.counter_add(b"cnt", -2).unwrap();
    e.set_add(b"set", &[b"a", b"b"]).unwrap();
    e.set_remove(b"set", &[b"a"]).unwrap();
    e.map_update(
        b"map",
        b"f",
        Op::MapUpdate {
            field: b"g".to_vec(),
            op: Box::new(Op::CounterAdd { delta: 3 }),
        },
    )
    .unwrap();
    e.put(b"gone", b"x").unwrap();
    e.delete(b"gone").unwrap();
    e.counter_add(b"reset", 9).unwrap();
    e.delete(b"reset").unwrap();
    let tag = meridian::RequestTag::new("fuzz-client", [9; 16]).expect("a sane tag");
    let records: Vec<(Vec<u8>, Vec<u8>)> = ["reg", "lww", "cnt", "set", "map", "gone", "reset"]
        .iter()
        .map(|k| {
            (
                k.as_bytes().to_vec(),
                e.replication().export(k.as_bytes()).unwrap().unwrap(),
            )
        })
        .collect();

    let mut table = Iblt::with_cells(24);
    for id in [1u64, 2, 99, u64::MAX] {
        table.insert((id, id.rotate_left(7)));
    }
    let vv = vec![(OriginId(7), 3), (e.origin_id(), 12)];
    let frames = vec![
        Frame::Hello(meridian_core::replication::Hello {
            cluster: "c".into(),
            member: MemberId(7),
            origin: MemberId(7).epoch_origin(4),
            epoch: 4,
            session: 42,
            region: "us-east".into(),
            applied: vv.clone(),
            reply: false,
            speaks: [4, 5],
            features: vec!["fencing".into()],
        })
        .encode(),
        Frame::Reject {
            reason: "no".into(),
            fenced: true,
        }
        .encode(),
        Frame::Ack {
            applied: vv.clone(),
            serial: 9,
        }
        .encode(),
        Frame::Nack {
            origin: OriginId(7),
            next: 4,
        }
        .encode(),
        Frame::AeOffer {
            round: 1,
            table: table.to_bytes().into(),
            records: 10,
            exceptions: Box::new(meridian_core::replication::Exceptions {
                lost: vec![(OriginId(7), 2)],
                uncertain: vec![5],
            }),
        }
        .encode(),
        Frame::AeWant {
            round: 1,
            hashes: vec![1, 99],
        }
        .encode(),
        Frame::AeStream { round: 1 }.encode(),
        Frame::AeRange {
            round: 1,
            chunk: 0,
            from: b"".to_vec().into(),
            through: Some(b"m".to_vec().into()),
            records: records
                .iter()
                .map(|(k, v)| (k.clone().into(), v.clone().into()))
                .collect(),
            left_out: vec![b"gone".to_vec().into()],
            done: false,
            snapshot: vv.clone(),
        }
        .encode(),
        Frame::AeRetry {
            round: 1,
            cells: 48,
        }
        .encode(),
        Frame::AeRecords {
            round: 1,
            chunk: 0,
            records: records
                .iter()
                .map(|(k, v)| (k.clone().into(), v.clone().into()))
                .collect(),
            left_out: vec![],
            done: true,
            snapshot: vv.clone(),
        }
        .encode(),
        Frame::AeAck { round: 1, chunk: 0 }.encode(),
        Frame::Ping { sent_ms: 5 }.encode(),
        Frame::Pong { sent_ms: 5 }.encode(),
        Frame::Lease(meridian_core::lease::LeaseMessage::Request {
            term: 3,
            round: 2,
            session: 9,
            lease_ms: 4_000,
            members: 77,
        })
        .encode(),
        Frame::About(meridian_core::replication::RegionAbout {
            location: meridian_core::routing::Location::new(53.3, -6.3),
            address: Some("127.0.0.1:7001".into()),
        })
        .encode(),
        Frame::Lease(meridian_core::lease::LeaseMessage::Reply {
            term: 3,
            round: 2,
            session: 9,
            granted: true,
            holder: Some(MemberId(7)),
            highest_term: 4,
        })
        .encode(),
        Frame::Lease(meridian_core::lease::LeaseMessage::StepDown {
            successor: MemberId(2),
            term: 5,
        })
        .encode(),
        encode_entries(
            meridian_core::replication::PROTOCOL_VERSION,
            OriginId(7),
            &[
                EntryOut {
                    seq: 1,
                    records: &records[..3],
                    left_out: &[],
                    lost: false,
                    request: Some(&tag),
                    span: 0,
                },
                EntryOut {
                    seq: 2,
                    records: &records[3..],
                    left_out: &[b"gone".to_vec()],
                    lost: false,
                    request: None,
                    span: 0,
                },
                // Protocol 8: an entry standing for the two writes after it.
                EntryOut {
                    seq: 3,
                    records: &records[..2],
                    left_out: &[],
                    lost: false,
                    request: None,
                    span: 2,
                },
            ],
        ),
        Frame::Entries {
            origin: OriginId(7),
            entries: vec![WireEntry {
                seq: 3,
                records: vec![],
                left_out: vec![],
                lost: true,
                request: None,
            }],
        }
        .encode(),
    ];
    let requests = vec![
        encode(&ClientRequest::Apply {
            id: [7; 16],
            key: b"k".to_vec(),
            op: Op::Put {
                value: b"v".to_vec(),
                context: Some(VersionVector::new()),
            },
            consistency: Consistency::Local,
            deadline_ms: Some(1),
            after: None,
        }),
        encode(&ClientRequest::Write {
            id: [9; 16],
            ops: vec![
                (b"a".to_vec(), Op::CounterAdd { delta: 1 }),
                (b"b".to_vec(), Op::Delete),
            ],
            consistency: Consistency::Majority,
            deadline_ms: None,
            after: Some(After {
                token: CausalToken::of_dot(Dot::new(OriginId(3), 4)),
                wait_ms: 5,
            }),
        }),
        encode(&ClientRequest::Applied),
        encode(&ClientRequest::Regions),
        encode(&ClientRequest::Route {
            near: meridian_core::routing::Location::new(48.85, 2.35),
        }),
        encode(&ClientRequest::Promote),
        encode(&ClientRequest::SetMode {
            active_passive: true,
        }),
        encode(&ClientRequest::Read {
            key: b"k".to_vec(),
            token: Some(CausalToken::of_dot(Dot::new(OriginId(7), 3))),
            wait_ms: 100,
        }),
        encode(&ClientRequest::Scan {
            prefix: b"p".to_vec(),
            limit: 10,
            after: Some(b"pa".to_vec()),
            token: None,
            wait_ms: 0,
        }),
        encode(&ClientRequest::Status),
        // Client protocol 7: change feeds.
        encode(&ClientRequest::Watch {
            prefix: b"cart/".to_vec(),
            from: Some(CausalToken::of_dot(Dot::new(OriginId(7), 3))),
            name: Some("indexer".into()),
        }),
        encode(&ClientRequest::FeedAck {
            name: "indexer".into(),
            token: CausalToken(VersionVector::from_entries(vv.clone())),
        }),
        encode(&ClientRequest::FeedDrop {
            name: "indexer".into(),
        }),
        encode(&Answer {
            node_ms: 2,
            response: ClientResponse::Changes {
                events: vec![
                    meridian::FeedEvent::Change(meridian::Change {
                        key: b"map".to_vec(),
                        values: e
                            .read(b"map")
                            .unwrap()
                            .map(|r| r.values)
                            .unwrap_or_default(),
                        token: CausalToken::of_dot(Dot::new(OriginId(7), 4)),
                    }),
                    meridian::FeedEvent::Reset {
                        token: CausalToken::of_dot(Dot::new(OriginId(7), 9)),
                        missing: Dot::new(OriginId(3), 5),
                    },
                ],
                position: CausalToken::of_dot(Dot::new(OriginId(7), 9)),
            },
        }),
        // Answers as a node sends them, with its clock.
        encode(&Answer {
            node_ms: 1,
            response: ClientResponse::Error(ClientError {
                code: ErrorCode::Uncoverable,
                message: "lost".into(),
                retry_after_ms: Some(3),
                primary: None,
                lost: Some((OriginId(7), 2)),
            }),
        }),
        encode(&Answer {
            node_ms: u64::MAX,
            response: ClientResponse::Status(NodeStatus::default()),
        }),
        encode(&Answer {
            node_ms: 0,
            response: ClientResponse::Value {
                read: e.read(b"map").unwrap(),
            },
        }),
    ];
    let tokens = vec![
        CausalToken::default().to_bytes(),
        CausalToken::of_dot(Dot::new(OriginId(7), 3)).to_bytes(),
        CausalToken(VersionVector::from_entries(vv.clone())).to_bytes(),
    ];
    let logs = vec![
        LogEntry::default().encode(),
        LogEntry::encode_keys(&[b"a", b"bb", b"ccc"]),
    ];
    let tables = vec![
        table.to_bytes(),
        Iblt::with_cells(12).to_bytes(),
        Iblt::with_cells(3 * 64).to_bytes(),
    ];
    let record_bytes: Vec<Vec<u8>> = records.iter().map(|(_, v)| v.clone()).collect();
    for (target, inputs) in [
        ("frame", &frames),
        ("entries", &frames),
        ("record", &record_bytes),
        ("log_entry", &logs),
        ("iblt", &tables),
        ("client_request", &requests),
        ("token", &tokens),
    ] {
        let dir = corpus(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, input) in inputs.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:02}")), input).unwrap();
            // The same, cut short: decoders meet truncated input on every link.
            std::fs::write(
                dir.join(format!("seed-{i:02}-cut")),
                &input[..input.len() / 2],
            )
            .unwrap();
        }
    }
}
