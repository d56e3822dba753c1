//! Frames of every kind, encoded at each protocol version this build speaks, against the bytes
//! the release that introduced the version wrote (`fixtures/frames-v*.hex`): a peer of that
//! release reads what this build sends it, and this build reads what that release sends.
//!
//! `MERIDIAN_WRITE_FRAME_FIXTURES=1 cargo test -p meridian-core --test frame_compat` rewrites
//! the fixture of the newest version only (older ones are frozen: their bytes are what
//! released peers decode).

use meridian_core::lease::LeaseMessage;
use meridian_core::model::{MemberId, OriginId, RequestTag};
use meridian_core::replication::{Exceptions, Frame, Hello, RegionAbout, WireEntry};
use meridian_core::routing::Location;
use serde_bytes::ByteBuf;

fn b(s: &str) -> ByteBuf {
    ByteBuf::from(s.as_bytes().to_vec())
}

/// One frame of every kind, with every field set to something other than its default.
pub fn samples() -> Vec<(&'static str, Frame)> {
    let r = MemberId(0x0102_0304_0506_0708);
    let o = OriginId(0x1112_1314_1516_1718);
    let tag = RequestTag::new("client-a", [7; 16]).expect("a valid tag");
    vec![
        (
            "hello",
            Frame::Hello(Hello {
                cluster: "prod".into(),
                member: r,
                origin: o,
                epoch: 3,
                session: 0xDEAD_BEEF,
                region: "eu-west".into(),
                applied: vec![(OriginId(r.0), 10), (o, 20)],
                reply: true,
                speaks: [4, 5],
                features: vec!["fencing".into(), "request-tags".into()],
            }),
        ),
        (
            "reject",
            Frame::Reject {
                reason: "no".into(),
                fenced: true,
            },
        ),
        (
            "entries",
            Frame::Entries {
                origin: o,
                entries: vec![
                    WireEntry {
                        seq: 5,
                        records: vec![(b("k1"), b("state1"))],
                        left_out: vec![b("k2")],
                        lost: false,
                        request: Some(tag),
                    },
                    WireEntry {
                        seq: 6,
                        records: Vec::new(),
                        left_out: Vec::new(),
                        lost: true,
                        request: None,
                    },
                ],
            },
        ),
        (
            "ack",
            Frame::Ack {
                applied: vec![(o, 6)],
                serial: 9,
            },
        ),
        ("nack", Frame::Nack { origin: o, next: 4 }),
        (
            "ae_offer",
            Frame::AeOffer {
                round: 2,
                table: ByteBuf::from(vec![1, 2, 3]),
                records: 40,
                exceptions: Box::new(Exceptions {
                    lost: vec![(o, 3)],
                    uncertain: vec![99],
                }),
            },
        ),
        (
            "ae_want",
            Frame::AeWant {
                round: 2,
                hashes: vec![1, u64::MAX],
            },
        ),
        (
            "ae_retry",
            Frame::AeRetry {
                round: 2,
                cells: 96,
            },
        ),
        (
            "ae_records",
            Frame::AeRecords {
                round: 2,
                chunk: 1,
                records: vec![(b("k"), b("v"))],
                left_out: vec![b("x")],
                done: true,
                snapshot: vec![(OriginId(r.0), 1)],
            },
        ),
        ("ae_ack", Frame::AeAck { round: 2, chunk: 1 }),
        ("ping", Frame::Ping { sent_ms: 123_456 }),
        ("pong", Frame::Pong { sent_ms: 123_456 }),
        ("ae_stream", Frame::AeStream { round: 8 }),
        (
            "ae_range",
            Frame::AeRange {
                round: 8,
                chunk: 0,
                from: b("a"),
                through: Some(b("m")),
                records: vec![(b("b"), b("s"))],
                left_out: Vec::new(),
                done: false,
                snapshot: vec![(o, 2)],
            },
        ),
        (
            "lease_request",
            Frame::Lease(LeaseMessage::Request {
                term: 4,
                round: 1,
                session: 77,
                lease_ms: 5_000,
                members: 0xABCD,
            }),
        ),
        (
            "lease_reply",
            Frame::Lease(LeaseMessage::Reply {
                term: 4,
                round: 1,
                session: 77,
                granted: true,
                holder: Some(r),
                highest_term: 4,
            }),
        ),
        (
            "lease_release",
            Frame::Lease(LeaseMessage::Release {
                term: 4,
                session: 77,
            }),
        ),
        (
            "lease_step_down",
            Frame::Lease(LeaseMessage::StepDown {
                successor: MemberId(o.0),
                term: 5,
            }),
        ),
        (
            "about",
            Frame::About(RegionAbout {
                location: Location::new(48.85, 2.35),
                address: Some("127.0.0.1:7000".into()),
            }),
        ),
        ("ae_request", Frame::AeRequest),
    ]
}

/// The samples a frame of `version` is checked with: `samples`, and from version 6 an
/// `Entries` frame whose entries share a key's state.
pub fn samples_at(version: u8) -> Vec<(&'static str, Frame)> {
    let mut all = samples();
    if version >= meridian_core::replication::SHARED_STATES_VERSION {
        let entry = |seq, records: Vec<(ByteBuf, ByteBuf)>| WireEntry {
            seq,
            records,
            left_out: Vec::new(),
            lost: false,
            request: None,
        };
        all.push((
            "entries_shared",
            Frame::Entries {
                origin: OriginId(0x1112_1314_1516_1718),
                entries: vec![
                    entry(7, vec![(b("hot"), b("state-7")), (b("k1"), b("s"))]),
                    entry(8, vec![(b("hot"), b("state-7"))]),
                    entry(9, vec![(b("k2"), b("t")), (b("hot"), b("state-7"))]),
                ],
            },
        ));
    }
    all
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn fixture_path(version: u8) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("frames-v{version}.hex"))
}

/// `name hex` lines of the samples encoded at `version`.
fn encoded_at(version: u8) -> String {
    let mut lines: String = samples_at(version)
        .into_iter()
        .map(|(name, frame)| format!("{name} {}\n", hex(&frame.encode_at(version))))
        .collect();
    if let Some(linked) = linked_sample(version) {
        lines.push_str(&format!("entries_linked {}\n", hex(&linked)));
    }
    if let Some(span) = span_sample(version) {
        lines.push_str(&format!("entries_span {}\n", hex(&span)));
    }
    lines
}

/// From version 8, an `Entries` frame whose first entry stands for the two writes after it
/// (`EntryOut::span`), then an entry of its own.
fn span_sample(version: u8) -> Option<Vec<u8>> {
    use meridian_core::replication::{encode_entries, EntryOut, SPANS_VERSION};
    if version < SPANS_VERSION {
        return None;
    }
    let records = [
        vec![(b"hot".to_vec(), b"state-9".to_vec())],
        vec![(b"k".to_vec(), b"v".to_vec())],
    ];
    let entries = [
        EntryOut {
            seq: 9,
            records: &records[0],
            left_out: &[],
            lost: false,
            request: None,
            span: 2,
        },
        EntryOut {
            seq: 12,
            records: &records[1],
            left_out: &[],
            lost: false,
            request: None,
            span: 0,
        },
    ];
    Some(encode_entries(
        version,
        OriginId(0x1112_1314_1516_1718),
        &entries,
    ))
}

/// From version 7, an `Entries` frame with a state in each form: whole, a repeat of the one
/// before it in the frame, and a patch against the link's earlier state (what only a link's
/// sender writes: no `Frame` holds it).
fn linked_sample(version: u8) -> Option<Vec<u8>> {
    use meridian_core::replication::{encode_linked_entries, EntryOut, StateForm};
    if version < meridian_core::replication::LINKED_STATES_VERSION {
        return None;
    }
    let records = [
        vec![(b"hot".to_vec(), b"state-7".to_vec())],
        vec![
            (b"hot".to_vec(), b"state-7".to_vec()),
            (b"big".to_vec(), b"not sent".to_vec()),
        ],
    ];
    let entries: Vec<EntryOut<'_, Vec<u8>>> = records
        .iter()
        .enumerate()
        .map(|(i, records)| EntryOut {
            seq: 7 + i as u64,
            records,
            left_out: &[],
            lost: false,
            request: None,
            span: 0,
        })
        .collect();
    let forms = vec![
        vec![StateForm::Whole],
        vec![
            StateForm::Repeat,
            StateForm::Linked {
                hash: 0x2122_2324_2526_2728,
                patch: vec![0x02, 0x01, 0x03, b'n', b'e', b'w'],
            },
        ],
    ];
    Some(encode_linked_entries(
        version,
        OriginId(0x1112_1314_1516_1718),
        &entries,
        &forms,
    ))
}

#[test]
fn every_version_encodes_as_its_release_did_and_reads_it_back() {
    let newest = *meridian_core::replication::PROTOCOL_VERSIONS.end();
    if std::env::var_os("MERIDIAN_WRITE_FRAME_FIXTURES").is_some() {
        std::fs::write(fixture_path(newest), encoded_at(newest)).expect("fixture written");
    }
    for version in meridian_core::replication::PROTOCOL_VERSIONS {
        let fixture = std::fs::read_to_string(fixture_path(version))
            .unwrap_or_else(|e| panic!("fixture of version {version}: {e}"));
        let mut frozen = fixture.lines().map(|l| {
            let (name, hex) = l.split_once(' ').expect("a `name hex` line");
            (name.to_string(), hex.to_string())
        });
        for (name, frame) in samples_at(version) {
            let (fixture_name, fixture_hex) = frozen
                .next()
                .unwrap_or_else(|| panic!("v{version}: no fixture line for {name}"));
            assert_eq!(fixture_name, name, "v{version}: fixture lines in order");
            let bytes = frame.encode_at(version);
            assert_eq!(
                hex(&bytes),
                fixture_hex,
                "v{version} {name}: encoded otherwise than its release did"
            );
            let back = Frame::decode(&bytes).expect("decodes");
            // What the version carries survives the round trip (a version-4 `Hello` carries
            // no versions or features: read as speaking 4 alone).
            if version < meridian_core::replication::HELLO_RANGE_VERSION {
                if let Frame::Hello(Hello {
                    speaks, features, ..
                }) = &back
                {
                    assert_eq!((speaks, features.len()), (&[4, 4], 0));
                }
            } else {
                assert_eq!(back, frame, "v{version} {name}: decoded whole");
            }
            assert_eq!(
                back.encode_at(version),
                bytes,
                "v{version} {name}: decoded and encoded again"
            );
        }
        if let Some(linked) = linked_sample(version) {
            use meridian_core::replication::{parse_linked_entries, WireForm};
            let (name, fixture_hex) = frozen.next().expect("a line for the linked sample");
            assert_eq!(name, "entries_linked");
            assert_eq!(hex(&linked), fixture_hex, "v{version} entries_linked");
            let Some(Ok((_, entries))) = parse_linked_entries(&linked) else {
                panic!("v{version}: the linked sample parses");
            };
            let forms: Vec<String> = entries
                .iter()
                .flat_map(|e| e.1.iter())
                .map(|(_, form)| match form {
                    WireForm::Whole(s) => format!("whole {}", String::from_utf8_lossy(s)),
                    WireForm::Repeat => "repeat".into(),
                    WireForm::Linked(hash, patch) => format!("linked {hash:?} {patch:?}"),
                })
                .collect();
            assert_eq!(
                forms,
                [
                    "whole state-7",
                    "repeat",
                    "linked [40, 39, 38, 37, 36, 35, 34, 33] [2, 1, 3, 110, 101, 119]"
                ]
            );
        }
        if let Some(span) = span_sample(version) {
            use meridian_core::replication::decode_entries;
            let (name, fixture_hex) = frozen.next().expect("a line for the span sample");
            assert_eq!(name, "entries_span");
            assert_eq!(hex(&span), fixture_hex, "v{version} entries_span");
            let Some(Ok((_, entries))) = decode_entries(&span) else {
                panic!("v{version}: the span sample decodes");
            };
            let read: Vec<String> = entries
                .iter()
                .map(|e| {
                    let records: Vec<String> =
                        e.1.iter()
                            .map(|(k, v)| {
                                format!(
                                    "{}={}",
                                    String::from_utf8_lossy(k),
                                    String::from_utf8_lossy(v)
                                )
                            })
                            .collect();
                    format!("{} {}", e.0, records.join(","))
                })
                .collect();
            assert_eq!(
                read,
                [
                    "9 hot=state-9",
                    "10 hot=state-9",
                    "11 hot=state-9",
                    "12 k=v"
                ],
                "each write a span stands for names its keys with its states"
            );
            // A version-7 peer never sends a span: one is refused at that version.
            let mut as_v7 = span.clone();
            as_v7[0] = 7;
            assert!(matches!(decode_entries(&as_v7), Some(Err(_))));
        }
        assert!(frozen.next().is_none(), "v{version}: no fixture line left");
    }
}
