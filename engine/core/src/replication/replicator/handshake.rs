//! Who a peer is and what it may claim.
//!
//! - The handshake: a peer announces the member its certificate and configured incarnation
//!   derive (the driver says which one that is), an origin that is an epoch of that member,
//!   and its process session; any mismatch closes the link with the reason.
//! - Claims: a peer's applied vector is what it says it holds. This replica is the authority on
//!   its own origin: a claim beyond what it committed is clamped before cursors, stability or a
//!   state transfer's snapshot rely on it, and is evidence that its directory lost those writes
//!   (copied back by hand, say: a restart that may have lost writes takes a new epoch at open
//!   already), so it moves to a new epoch rather than number a write again that a peer holds.
//!   Of other origins nobody here knows the current end (an owner's report is stale as soon as
//!   it writes again): claims of them are taken as made, and a claim lowered later is followed
//!   (cursors rewind). A claim that holds more of any of this replica's origins of this run
//!   than it holds is shown wrong, and stability does not take it: the member counts with its
//!   last claim not shown wrong, so a peer that inflates its vector cannot get a tombstone
//!   reclaimed before it has applied the delete (simulator seed 3100000324).

use super::{LinkId, LinkState, Output, Peer, ReplicationError, Replicator};
use crate::model::{OriginId, VersionVector};
use crate::replication::frame::{
    vv_entries, Frame, Hello, RegionAbout, FEATURES, FEATURES_MAX, FEATURE_BYTES_MAX,
    HELLO_RANGE_VERSION, PROTOCOL_VERSIONS,
};
use crate::replication::ReplicaStore;
use std::collections::VecDeque;

/// Origins of this replica's run a claim is checked against (the current one and those it
/// left for new epochs; at most one move per run comes from a peer's claim).
const OWN_ORIGINS_MAX: usize = 8;

/// Earlier sessions remembered per member.
const RETIRED_SESSIONS_MAX: usize = 16;

/// The process sessions a member has announced.
#[derive(Debug, Default)]
pub(super) struct SessionLog {
    current: Option<u64>,
    retired: VecDeque<u64>,
}

/// What a session is to its member's log.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Session {
    /// The one in use.
    Current,
    /// A new process (the previous one restarted).
    New,
    /// One that was replaced earlier: two processes take turns with one identity.
    Retired,
}

impl SessionLog {
    /// Records `session` as announced by the member; says what it is to the log.
    pub(super) fn see(&mut self, session: u64) -> Session {
        if self.current == Some(session) {
            return Session::Current;
        }
        if self.retired.contains(&session) {
            return Session::Retired;
        }
        if let Some(old) = self.current.replace(session) {
            self.retired.push_back(old);
            if self.retired.len() > RETIRED_SESSIONS_MAX {
                self.retired.pop_front();
            }
        }
        Session::New
    }
}

impl Replicator {
    /// The handshake (see the module documentation).
    pub(super) fn on_hello<S: ReplicaStore>(
        &mut self,
        peer: LinkId,
        hello: Hello,
        store: &S,
        now_ms: u64,
    ) -> Result<(), ReplicationError<S::Error>> {
        let applied = VersionVector::from_entries(hello.applied.iter().copied());
        let Hello {
            cluster,
            member,
            origin,
            epoch,
            session,
            region,
            reply,
            speaks,
            features,
            ..
        } = hello;
        if let Err(why) = self.take_versions(peer, speaks, features) {
            metrics::counter!("meridian_replication_version_refused_total").increment(1);
            return Err(self.reject(peer, why));
        }
        if cluster != self.config.cluster {
            let why = format!("cluster {cluster:?} is not {:?}", self.config.cluster);
            return Err(self.reject(peer, why));
        }
        let Some(expected) = self.peers.get(&peer).map(|p| p.member) else {
            return Ok(());
        };
        if member == self.me {
            metrics::counter!("meridian_peer_identity_refused_total", "reason" => "own identity")
                .increment(1);
            let why = format!(
                "peer announces this replica's own member id {member}: two nodes run with one identity"
            );
            return Err(self.reject(peer, why));
        }
        if member != expected {
            metrics::counter!("meridian_peer_identity_refused_total", "reason" => "member")
                .increment(1);
            let why = format!(
                "peer announces member {member}, but its certificate and configured incarnation \
                 make it {expected} (is its incarnation the same in every configuration?)"
            );
            return Err(self.reject(peer, why));
        }
        if origin != member.epoch_origin(epoch) {
            metrics::counter!("meridian_peer_identity_refused_total", "reason" => "origin")
                .increment(1);
            let why = format!("origin {origin} is not epoch {epoch} of member {member}");
            return Err(self.reject(peer, why));
        }
        store.note_member_version(member, self.link_version(peer));
        match self.sessions.entry(member).or_default().see(session) {
            Session::Current => {}
            Session::New => {
                // The member restarted: its links of the earlier process are gone.
                let stale: Vec<LinkId> = self
                    .peers
                    .iter()
                    .filter(|(id, p)| **id != peer && p.member == member)
                    .map(|(id, _)| *id)
                    .collect();
                for id in stale {
                    self.peers.remove(&id);
                    self.out.push_back(Output::Close {
                        link: id,
                        reason: "superseded by a newer process of the same member".into(),
                    });
                }
            }
            Session::Retired => {
                metrics::counter!("meridian_peer_identity_refused_total", "reason" => "duplicate")
                    .increment(1);
                let why = format!(
                    "member {member} came back with an earlier process session: a newer \
                     process of this identity runs (two processes share it: a second start, or \
                     a restored copy), and the members replicate with that one"
                );
                return Err(self.reject_as(peer, why, true));
            }
        }
        if let Some(p) = self.peers.get_mut(&peer) {
            p.origin = Some(origin);
        }
        let claim = self.take_claim(peer, applied, store)?;
        let mut became_ready = false;
        if let Some(p) = self.peers.get_mut(&peer) {
            if p.ready_member() == Some(member) {
                // A repeated hello on a live link (an answer, a retry that crossed ours, or
                // a new epoch announced): follow what it reports, keep the cursors.
                p.follow(&claim);
            } else {
                let kept = (
                    p.origin,
                    std::mem::take(&mut p.claimed),
                    p.speaks,
                    std::mem::take(&mut p.features),
                );
                *p = Peer::new(member, p.version, now_ms);
                (p.origin, p.claimed, p.speaks, p.features) = kept;
                p.state = LinkState::Ready { member, region };
                p.sent = claim.clone();
                p.acked = claim.clone();
                p.last_claim = claim;
                became_ready = true;
            }
        }
        if !reply {
            self.send_hello(peer, store, true, now_ms);
        }
        if became_ready {
            // The round trip sizes the in-flight window: measure it before a catch-up.
            self.send(peer, &Frame::Ping { sent_ms: now_ms });
            if let Some(about) = self.config.about.clone() {
                self.send(peer, &Frame::About(about));
            }
        }
        self.pump(peer, store, now_ms)
    }

    /// Records a peer's claim of its applied vector (from a `Hello` or a fresh `Ack`): a claim
    /// above this replica's own writes is handled as evidence; returns the claim clamped to
    /// what its author can know, which becomes the member's known vector (what stability
    /// counts) unless it is shown wrong.
    pub(super) fn take_claim<S: ReplicaStore>(
        &mut self,
        peer: LinkId,
        raw: VersionVector,
        store: &S,
    ) -> Result<VersionVector, ReplicationError<S::Error>> {
        let Some(p) = self.peers.get(&peer) else {
            return Ok(raw);
        };
        let member = p.member;
        self.note_own_origin(store);
        self.check_overclaim(peer, &raw, store)?;
        let claim = self.clamp_claim(&raw, store);
        let shown_wrong = self.holds_more_of_ours(&raw, store);
        if let Some(p) = self.peers.get_mut(&peer) {
            p.claimed = raw;
        }
        if shown_wrong {
            // Stability keeps the member's last claim not shown wrong: one that vouches for
            // writes of ours that never were vouches for nothing (its other origins are as
            // likely inflated, and a tombstone reclaimed on them is gone for good).
            metrics::counter!("meridian_peer_claims_clamped_total", "what" => "stability")
                .increment(1);
        } else {
            self.known.insert(member, claim.clone());
        }
        Ok(claim)
    }

    /// Whether `raw` holds more of one of this replica's origins of this run (its current one
    /// or one it left for a new epoch, of which it knows every write it made) than it holds: a
    /// claim shown wrong, by a peer that lies or of writes this replica lost and has not got
    /// back yet.
    fn holds_more_of_ours(&mut self, raw: &VersionVector, store: &impl ReplicaStore) -> bool {
        self.note_own_origin(store);
        let applied = store.applied();
        self.own_origins
            .iter()
            .any(|o| raw.get(*o) > applied.get(*o))
    }

    /// Remembers the origin this replica writes under now, if new.
    fn note_own_origin(&mut self, store: &impl ReplicaStore) {
        let current = store.origin_id();
        if self.own_origins.last() != Some(&current) {
            if self.own_origins.len() == OWN_ORIGINS_MAX {
                self.own_origins.remove(0);
            }
            self.own_origins.push(current);
        }
    }

    /// A claim clamped to what its author can know: no more of this replica's origin than it
    /// committed.
    pub(super) fn clamp_claim(
        &self,
        raw: &VersionVector,
        store: &impl ReplicaStore,
    ) -> VersionVector {
        let own = store.origin_id();
        let committed = store.applied().get(own);
        VersionVector::from_entries(
            raw.iter()
                .map(|(o, s)| (o, if o == own { s.min(committed) } else { s })),
        )
    }

    /// The snapshot a state transfer from `peer` ends with, capped by what the peer claims to
    /// hold (a snapshot cannot raise this replica's vector beyond its sender's own claim, nor
    /// its own origin beyond what it committed).
    pub(super) fn cap_snapshot(
        &self,
        peer: LinkId,
        snapshot: &VersionVector,
        store: &impl ReplicaStore,
    ) -> VersionVector {
        let claimed = self
            .peers
            .get(&peer)
            .map(|p| p.claimed.clone())
            .unwrap_or_default();
        let capped =
            VersionVector::from_entries(snapshot.iter().map(|(o, s)| (o, s.min(claimed.get(o)))));
        if capped != *snapshot {
            metrics::counter!("meridian_peer_claims_clamped_total", "what" => "snapshot")
                .increment(1);
        }
        self.clamp_claim(&capped, store)
    }

    /// A peer claims more of this replica's origin than it committed: the directory lost
    /// writes it had shipped (copied back by hand, or a loss nothing at open could see), or a
    /// second process writes under this identity, or the peer lies. Numbering on in this
    /// origin could give a dot a peer holds to another write: the first time in a run, this
    /// replica moves to a new epoch; later claims are clamped and logged once per link (a
    /// lying peer must not make it churn epochs).
    fn check_overclaim<S: ReplicaStore>(
        &mut self,
        peer: LinkId,
        raw: &VersionVector,
        store: &S,
    ) -> Result<(), ReplicationError<S::Error>> {
        let view = store.origin_view();
        let held = store.applied().get(view.origin);
        let claimed = raw.get(view.origin);
        if claimed <= held {
            return Ok(());
        }
        let member = self.peers.get(&peer).map_or(self.me, |p| p.member);
        metrics::counter!("meridian_peer_claims_clamped_total", "what" => "own origin")
            .increment(1);
        if !self.moved_on_overclaim {
            self.moved_on_overclaim = true;
            let reason = format!(
                "member {member} holds {claimed} writes of origin {} and this replica \
                 committed {held}",
                view.origin
            );
            return self.new_epoch(store, &reason);
        }
        if let Some(p) = self.peers.get_mut(&peer) {
            if !p.overclaim_logged {
                p.overclaim_logged = true;
                tracing::warn!(peer = %member, origin = %view.origin, claimed, held, "a peer claims more of this replica's writes than it made: a peer that lies, or two processes with one identity");
            }
        }
        Ok(())
    }

    fn new_epoch<S: ReplicaStore>(
        &mut self,
        store: &S,
        reason: &str,
    ) -> Result<(), ReplicationError<S::Error>> {
        store
            .start_new_epoch(reason)
            .map_err(ReplicationError::Store)?;
        metrics::counter!("meridian_epochs_started_total").increment(1);
        self.announce(store, 0);
        Ok(())
    }

    /// Tells every ready peer this replica's origin again (after a confirmation or a new epoch).
    fn announce(&mut self, store: &impl ReplicaStore, now_ms: u64) {
        let ready: Vec<LinkId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.ready_member().is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in ready {
            self.send_hello(id, store, true, now_ms);
        }
    }

    /// Whether `peer` may bring entries of `origin`: its own, or an origin it announced
    /// holding, or one this replica holds.
    pub(super) fn may_relay(
        &self,
        peer: LinkId,
        origin: OriginId,
        store: &impl ReplicaStore,
    ) -> bool {
        let Some(p) = self.peers.get(&peer) else {
            return false;
        };
        p.origin == Some(origin) || p.claimed.get(origin) > 0 || store.applied().get(origin) > 0
    }
}

/// How far a peer may hold `origin` when it says `seq` (entries it relays, a `Nack`): no more
/// of this replica's own origin than it committed, as `Replicator::clamp_claim`.
pub(super) fn clamp_seq(origin: OriginId, seq: u64, store: &impl ReplicaStore) -> u64 {
    if origin == store.origin_id() {
        seq.min(store.applied().get(origin))
    } else {
        seq
    }
}

impl Replicator {
    /// Takes the versions and features a peer's `Hello` announces: the link's version must be
    /// one it speaks (a `Hello` of version 4 announces neither); the features both ends
    /// announce are the link's.
    fn take_versions(
        &mut self,
        peer: LinkId,
        speaks: [u8; 2],
        features: Vec<String>,
    ) -> Result<(), String> {
        let Some(p) = self.peers.get_mut(&peer) else {
            return Ok(());
        };
        let [oldest, newest] = speaks;
        if p.version >= HELLO_RANGE_VERSION && !(oldest..=newest).contains(&p.version) {
            return Err(format!(
                "peer speaks protocol versions {oldest} to {newest}, but the link runs version {} \
                 (this build speaks {} to {})",
                p.version,
                PROTOCOL_VERSIONS.start(),
                PROTOCOL_VERSIONS.end()
            ));
        }
        if features.len() > FEATURES_MAX || features.iter().any(|f| f.len() > FEATURE_BYTES_MAX) {
            return Err(format!(
                "peer announces {} features (at most {FEATURES_MAX} of at most \
                 {FEATURE_BYTES_MAX} bytes are accepted)",
                features.len()
            ));
        }
        p.speaks = Some(speaks);
        p.features = features
            .into_iter()
            .filter(|f| FEATURES.contains(&f.as_str()))
            .collect();
        p.features.sort();
        p.features.dedup();
        Ok(())
    }

    pub(super) fn send_hello(
        &mut self,
        peer: LinkId,
        store: &impl ReplicaStore,
        reply: bool,
        now_ms: u64,
    ) {
        let origin = store.origin_view();
        let hello = Frame::Hello(Hello {
            cluster: self.config.cluster.clone(),
            member: self.me,
            origin: origin.origin,
            epoch: origin.epoch,
            session: self.config.session,
            region: self.config.region.clone(),
            applied: vv_entries(&store.applied()),
            reply,
            speaks: [*PROTOCOL_VERSIONS.start(), *PROTOCOL_VERSIONS.end()],
            features: FEATURES.iter().map(|f| f.to_string()).collect(),
        });
        if let Some(p) = self.peers.get_mut(&peer) {
            if let LinkState::Connecting { hello_sent_ms } = &mut p.state {
                *hello_sent_ms = now_ms;
            }
        }
        self.send(peer, &hello);
    }
}

impl Replicator {
    /// What a peer said of its region: kept for the driver's region table, unless it cannot
    /// be believed (a place off the Earth, an address too long), which is logged and dropped.
    pub(super) fn on_about(&mut self, peer: LinkId, about: RegionAbout) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if about.is_sane() {
            p.about = Some(about);
        } else {
            tracing::warn!(peer = %p.member, "a peer described its region with a location off the Earth or an overlong address: ignored");
        }
    }
}
