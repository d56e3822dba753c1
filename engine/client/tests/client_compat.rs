//! Clients and nodes one client-protocol version apart: release 5's protocol code, frozen in
//! `frozen/client_proto_v5.rs` (a verbatim copy of the release's `client_proto.rs`), encodes
//! and decodes against this build's codec at version 5 in both directions.

#![allow(missing_docs, dead_code, unused_imports, clippy::unwrap_used)]

#[path = "frozen/client_proto_v5.rs"]
mod old;

use meridian_client::client_proto::{
    self as new, decode, decode_versioned, encode_at, Answer, ClientError, ClientRequest,
    ClientResponse, ErrorCode, NodeStatus, PeerStatus, CLIENT_PROTOCOL,
};
use meridian_core::model::{CausalToken, MemberId, OriginId, VersionVector};

fn token() -> CausalToken {
    CausalToken(VersionVector::from_entries([(OriginId(3), 9)]))
}

/// Requests as release 5 sent them, and as this build reads them.
fn requests() -> Vec<(old::ClientRequest, ClientRequest)> {
    vec![
        (
            old::ClientRequest::Scan {
                prefix: b"user/".to_vec(),
                limit: 7,
                after: Some(b"user/3".to_vec()),
            },
            ClientRequest::Scan {
                prefix: b"user/".to_vec(),
                limit: 7,
                after: Some(b"user/3".to_vec()),
                token: None,
                wait_ms: 0,
            },
        ),
        (
            old::ClientRequest::Read {
                key: b"k".to_vec(),
                token: Some(token()),
                wait_ms: 500,
            },
            ClientRequest::Read {
                key: b"k".to_vec(),
                token: Some(token()),
                wait_ms: 500,
            },
        ),
        (old::ClientRequest::Status, ClientRequest::Status),
        (
            old::ClientRequest::Isolate { isolated: true },
            ClientRequest::Isolate { isolated: true },
        ),
        (
            old::ClientRequest::Backup { path: "/b".into() },
            ClientRequest::Backup { path: "/b".into() },
        ),
    ]
}

#[test]
fn an_old_clients_requests_are_read_and_this_builds_version_5_requests_are_readable_by_an_old_node()
{
    for (theirs, ours) in requests() {
        let (version, read) = decode_versioned::<ClientRequest>(&old::encode(&theirs)).unwrap();
        assert_eq!((version, &read), (5, &ours));
        let sent = encode_at(5, &ours);
        assert_eq!(sent, old::encode(&theirs), "byte for byte as release 5");
        let back: old::ClientRequest = old::decode(&sent).unwrap();
        assert_eq!(back, theirs);
    }
    // A scan with a session token cannot be said in version 5: the client never sends it
    // there (`min_version`), and an old node would refuse version 6 outright.
    let session_scan = ClientRequest::Scan {
        prefix: b"p".to_vec(),
        limit: 1,
        after: None,
        token: Some(token()),
        wait_ms: 100,
    };
    assert_eq!(session_scan.min_version(), 6);
    assert!(old::decode::<old::ClientRequest>(&encode_at(6, &session_scan)).is_err());
    assert_eq!(
        decode::<ClientRequest>(&encode_at(6, &session_scan)).unwrap(),
        session_scan
    );
}

fn status() -> NodeStatus {
    NodeStatus {
        cluster: "c".into(),
        name: "us-1".into(),
        region: "us-east".into(),
        replica: Some(MemberId(1)),
        epoch: 2,
        writable: true,
        applied: vec![(OriginId(1), 4)],
        peers: vec![PeerStatus {
            name: "eu-1".into(),
            region: "eu-west".into(),
            connected: true,
            rtt_ms: Some(80),
            lag_ops: 3,
            lag_ms: 12,
            last_error: Some("x".into()),
            protocol: Some(5),
            features: vec!["fencing".into()],
        }],
        health: "ok".into(),
        mode: "active-active".into(),
        stability_frozen_ms: 5,
        ..NodeStatus::default()
    }
}

#[test]
fn answers_in_version_5_are_read_by_an_old_client_and_an_old_nodes_answers_by_this_build() {
    let answer = Answer {
        node_ms: 1_700_000_000_000,
        response: ClientResponse::Status(status()),
    };
    let bytes = encode_at(5, &answer);
    let theirs: old::Answer = old::decode(&bytes).unwrap();
    let old::ClientResponse::Status(s) = &theirs.response else {
        panic!("{theirs:?}")
    };
    assert_eq!((s.name.as_str(), s.peers[0].lag_ops), ("us-1", 3));
    assert_eq!(s.peers[0].last_error.as_deref(), Some("x"));
    assert_eq!(s.stability_frozen_ms, 5);
    // What an old node says reads here, without what version 5 lacks.
    let back: Answer = decode(&old::encode(&theirs)).unwrap();
    let mut expected = status();
    expected.peers[0].protocol = None;
    expected.peers[0].features.clear();
    assert_eq!(back.response, ClientResponse::Status(expected));
    // Version 6 carries the link's version.
    let now: Answer = decode(&encode_at(CLIENT_PROTOCOL, &answer)).unwrap();
    assert_eq!(now, answer);

    // `Unsupported` reaches an old client as a bad request that says so.
    let unsupported = Answer {
        node_ms: 1,
        response: ClientResponse::Error(ClientError {
            code: ErrorCode::Unsupported,
            message: "not here".into(),
            retry_after_ms: None,
            primary: None,
            lost: None,
        }),
    };
    let theirs: old::Answer = old::decode(&encode_at(5, &unsupported)).unwrap();
    let old::ClientResponse::Error(e) = theirs.response else {
        panic!()
    };
    assert_eq!(e.code, old::ErrorCode::BadRequest);
    assert!(e.message.contains("unsupported: not here"), "{}", e.message);
    // Every other answer is the same bytes in both versions.
    for response in [
        ClientResponse::Written {
            token: token(),
            regions: 2,
        },
        ClientResponse::Applied(token().0),
        ClientResponse::Done {
            message: "ok".into(),
        },
    ] {
        let a = Answer {
            node_ms: 9,
            response,
        };
        let theirs: old::Answer = old::decode(&encode_at(5, &a)).unwrap();
        assert_eq!(decode::<Answer>(&old::encode(&theirs)).unwrap(), a);
    }
    assert!(new::CLIENT_PROTOCOLS.contains(&5));
}

/// A node serves a `Watch` on its stream by the request's first body byte (postcard's variant
/// tag): the constant it reads must be the variant's, and a watch needs version 7.
#[test]
fn a_watch_is_told_by_its_tag_and_needs_version_7() {
    let watch = ClientRequest::Watch {
        prefix: b"cart/".to_vec(),
        from: Some(token()),
        name: Some("indexer".into()),
    };
    let bytes = encode_at(CLIENT_PROTOCOL, &watch);
    assert_eq!(bytes[1], new::WATCH_VARIANT);
    assert_eq!(decode::<ClientRequest>(&bytes).unwrap(), watch);
    assert_eq!(watch.min_version(), 7);
    let ack = ClientRequest::FeedAck {
        name: "indexer".into(),
        token: token(),
    };
    assert_eq!(ack.min_version(), 7);
    assert_ne!(encode_at(CLIENT_PROTOCOL, &ack)[1], new::WATCH_VARIANT);
    // No other request starts with the watch's tag.
    let scan = ClientRequest::Scan {
        prefix: vec![],
        limit: 1,
        after: None,
        token: None,
        wait_ms: 0,
    };
    assert_ne!(encode_at(CLIENT_PROTOCOL, &scan)[1], new::WATCH_VARIANT);
}
