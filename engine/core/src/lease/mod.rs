//! Active-passive mode: one primary at a time, holding a lease a majority of members granted.
//!
//! Every member is a voter. A voter promises one candidate at a time, for `lease_ms` of its own
//! clock from when the request arrives, and refuses every other candidate until that promise
//! ends (the fence: a higher term does not break a live promise; a release does). A candidate
//! that gathers a majority of promises for one round holds the lease until `sent + hold`, on
//! its own clock, where `sent` is when it sent that round and `hold` shrinks `lease_ms` by the
//! stated bound on clock-rate drift: its holding ends, in real time, before any promise of
//! that round does. The holder renews every `renew_every_ms`; it stops being primary the moment
//! its lease runs out, and before it releases. A voter that restarts (its promises forgotten)
//! grants nothing for as long as a promise it may have made could still run.
//!
//! So no two members are ever primary at the same instant, whatever the network does (loss,
//! duplication, reordering, partitions), as long as every clock's rate stays within
//! `drift_ppm` of true time. Terms only order attempts and name the holder to followers.
//!
//! What this relies on: monotonic clocks that keep running (a machine suspended or a VM
//! paused while its clock stops counts as drift); every node counting a majority of the same
//! member list (a voter refuses a candidate whose list differs); promises at least as long as
//! the candidate's lease (a voter promises the longer of its own and the candidate's, so a
//! rolling change of `lease_ms` stays safe); and each process of a member being a distinct
//! candidate (requests, promises and releases carry its random session, so a second process
//! of a member, or a message from a previous life, is fenced like anyone else).
//!
//! Sans-IO like the replicator: time is an argument, messages go out through `poll_output`.

mod keeper;
#[cfg(test)]
mod tests;

pub use keeper::{LeaseKeeper, Role};

use crate::model::MemberId;
use serde::{Deserialize, Serialize};

/// Parts per million.
const PPM: u64 = 1_000_000;

/// Longest lease a voter grants, in milliseconds (node configurations allow no longer).
pub const LEASE_MS_MAX: u64 = 600_000;

/// How leases are granted and held.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseConfig {
    /// Every voting member (this one included).
    pub members: Vec<MemberId>,
    /// How long a voter's promise lasts on its clock, in milliseconds.
    pub lease_ms: u64,
    /// Bound on any clock's rate error, in parts per million (10,000 = 1%).
    pub drift_ppm: u64,
    /// How often the holder renews, in milliseconds (well under the lease).
    pub renew_every_ms: u64,
    /// How long a candidate waits for a majority before it gives the round up.
    pub round_timeout_ms: u64,
    /// After how long without hearing from a primary a follower tries to take over (`None`:
    /// only `promote` makes a primary).
    pub failover_after_ms: Option<u64>,
    /// Who tries first when there is no primary: the first member listed at once (at start),
    /// the next after one more `stagger_ms`, and so on; members not listed never try on
    /// their own.
    pub successors: Vec<MemberId>,
    /// Delay between one successor's turn and the next one's.
    pub stagger_ms: u64,
}

impl LeaseConfig {
    /// Defaults for `members`: 4 s leases renewed every second, a 1% drift bound, automatic
    /// failover after 6 s in the order given.
    pub fn new(members: Vec<MemberId>) -> LeaseConfig {
        LeaseConfig {
            successors: members.clone(),
            members,
            lease_ms: 4_000,
            drift_ppm: 10_000,
            renew_every_ms: 1_000,
            round_timeout_ms: 1_000,
            failover_after_ms: Some(6_000),
            stagger_ms: 1_000,
        }
    }

    /// A digest of the member list (order does not matter).
    pub fn members_digest(&self) -> u64 {
        let mut members = self.members.clone();
        members.sort();
        members.dedup();
        let mut h = crate::model::digest::Fnv::default();
        for m in members {
            h.write_u64(m.0);
        }
        h.0
    }

    /// Promises needed: a majority of the members.
    pub fn quorum(&self) -> usize {
        self.members.len() / 2 + 1
    }

    /// How long a holder counts its lease from sending a round, on its own clock: `lease_ms`
    /// shrunk by the drift on both sides, so it ends in real time before any voter's promise
    /// of that round (a millisecond less for rounding).
    pub fn hold_ms(&self) -> u64 {
        let drift = self.drift_ppm.min(PPM / 2);
        (self.lease_ms * (PPM - drift) / (PPM + drift)).saturating_sub(1)
    }

    /// How long a restarted voter grants nothing: the longest a promise it made before could
    /// still run, measured on its new clock (a millisecond more for rounding).
    pub fn quiet_ms(&self) -> u64 {
        let drift = self.drift_ppm.min(PPM / 2);
        self.lease_ms * (PPM + drift) / (PPM - drift) + 1
    }
}

/// What members say to each other about the lease (carried on replication links).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseMessage {
    /// A candidate (or the holder, renewing) asks for a promise.
    Request {
        /// The candidate's term.
        term: u64,
        /// Its round within the term (each renewal is a new round).
        round: u64,
        /// The candidate's process (a restarted member is a new candidate).
        session: u64,
        /// How long the candidate counts on a promise lasting: a voter promises at least
        /// that (nodes whose settings differ during a rolling change stay safe).
        lease_ms: u64,
        /// Digest of the member list the candidate counts a majority of: a voter with
        /// another list refuses.
        members: u64,
    },
    /// A voter's answer to a request.
    Reply {
        /// The request's term.
        term: u64,
        /// The request's round.
        round: u64,
        /// The request's session.
        session: u64,
        /// Whether the voter promised.
        granted: bool,
        /// The member the voter has promised, if any (who the primary is, as it knows).
        holder: Option<MemberId>,
        /// The highest term the voter has seen (a refused candidate moves above it).
        highest_term: u64,
    },
    /// The holder gave the lease up: voters may promise others at once.
    Release {
        /// The term given up.
        term: u64,
        /// The holder's session.
        session: u64,
    },
    /// Asks the holder to give the lease up (a promotion of another member).
    StepDown {
        /// The member that will try to take over.
        successor: MemberId,
        /// The term it tries under: a holder of that term or a later one stays.
        term: u64,
    },
}

/// A message for a member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// The member.
    pub to: MemberId,
    /// The message.
    pub message: LeaseMessage,
}
