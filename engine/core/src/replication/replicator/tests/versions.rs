//! Links between builds of different releases: a link runs at the version the driver
//! negotiated, every frame on it is encoded for that version, and a peer whose `Hello`
//! denies speaking it is refused.

use super::pair::*;
use crate::model::MemberId;
use crate::replication::*;

/// The peer's view of `link` at `replicator`.
fn peer(replicator: &Replicator, link: LinkId) -> &Peer {
    replicator
        .peers()
        .find(|(id, _)| *id == link)
        .map(|(_, p)| p)
        .expect("the link is known")
}

#[test]
fn a_link_at_the_oldest_version_replicates_with_only_its_frames() {
    let oldest = *PROTOCOL_VERSIONS.start();
    assert!(oldest < PROTOCOL_VERSION, "this build speaks two versions");
    let mut pair = Pair::new(members_config());
    pair.latency_ms = 5;
    pair.a.store.apply(b"k", put(b"from-a")).unwrap();
    pair.b.store.apply(b"s", set_add(b"e")).unwrap();
    pair.connect_at(oldest);
    pair.drive();
    pair.a.store.apply(b"k", put(b"again")).unwrap();
    pair.tick(600);
    assert_eq!(get(&pair.b.store, b"k"), Some(vec![b"again".to_vec()]));
    assert_eq!(set_members(&pair.a.store, b"s"), vec![b"e".to_vec()]);
    assert_eq!(states(&pair.a.store), states(&pair.b.store));
    // Nothing of the newer version went out: an older peer would have closed the link.
    assert_eq!(
        pair.versions_sent(),
        [oldest].into_iter().collect(),
        "every frame at the link's version"
    );
    // An older `Hello` says nothing of versions or features: none are used on the link.
    let p = peer(&pair.a.replicator, pair.a.link);
    assert_eq!((p.version, p.speaks), (oldest, Some([oldest, oldest])));
    assert!(p.features.is_empty());
}

#[test]
fn a_link_at_the_newest_version_learns_the_peers_versions_and_features() {
    let mut pair = Pair::new(members_config());
    pair.connect();
    pair.drive();
    assert_eq!(
        pair.versions_sent(),
        [PROTOCOL_VERSION].into_iter().collect()
    );
    let p = peer(&pair.a.replicator, pair.a.link);
    assert_eq!(p.version, PROTOCOL_VERSION);
    assert_eq!(
        p.speaks,
        Some([*PROTOCOL_VERSIONS.start(), *PROTOCOL_VERSIONS.end()])
    );
    let mut ours: Vec<String> = FEATURES.iter().map(|f| f.to_string()).collect();
    ours.sort();
    assert_eq!(p.features, ours);
    assert!(matches!(p.state, LinkState::Ready { .. }));
}

/// A `Hello` of member 2 to member 1 at the newest version, speaking `speaks` with `features`.
fn hello(speaks: [u8; 2], features: Vec<String>) -> Vec<u8> {
    Frame::Hello(Hello {
        cluster: ReplicationConfig::default().cluster,
        member: MemberId(2),
        origin: MemberId(2).epoch_origin(0),
        epoch: 0,
        session: 1,
        region: "r".into(),
        applied: Vec::new(),
        reply: false,
        speaks,
        features,
    })
    .encode()
}

#[test]
fn a_peer_denying_the_links_version_or_flooding_features_is_refused_with_the_reason() {
    for (speaks, features, says) in [
        ([10, 11], Vec::new(), "versions 10 to 11"),
        ([1, 4], Vec::new(), "versions 1 to 4"),
        ([4, 9], vec!["x".repeat(65)], "features"),
        ([4, 9], vec!["f".to_string(); 33], "features"),
    ] {
        let mut pair = Pair::new(members_config());
        let a = &mut pair.a;
        a.replicator.connected(a.link, MemberId(2), &a.store, 0);
        let refused = a
            .replicator
            .handle(a.link, &hello(speaks, features), &a.store, 0)
            .unwrap_err();
        assert!(matches!(refused, ReplicationError::Peer { .. }));
        assert_eq!(link_state(&a.replicator, a.link), Some(LinkState::Refused));
        let reason = std::iter::from_fn(|| a.replicator.poll_output())
            .find_map(|o| match o {
                Output::Send { frame, .. } => match Frame::decode(&frame) {
                    Ok(Frame::Reject { reason, .. }) => Some(reason),
                    _ => None,
                },
                _ => None,
            })
            .expect("a Reject says why");
        assert!(reason.contains(says), "{reason}");
    }
    // Unknown features are not refused: they are not the link's.
    let mut pair = Pair::new(members_config());
    let a = &mut pair.a;
    a.replicator.connected(a.link, MemberId(2), &a.store, 0);
    let unknown = vec!["from-the-future".to_string(), FEATURES[0].to_string()];
    a.replicator
        .handle(a.link, &hello([4, 9], unknown), &a.store, 0)
        .unwrap();
    assert_eq!(
        peer(&a.replicator, a.link).features,
        vec![FEATURES[0].to_string()]
    );
}
