//! One member's side of the lease: its promises as a voter, its attempts and renewals as a
//! candidate or holder, and what it knows of the current primary as a follower.

use super::{LeaseConfig, LeaseMessage, Outgoing};
use crate::model::MemberId;
use std::collections::{BTreeSet, VecDeque};

/// What a member is now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Follows the primary it knows (if any); does not accept writes.
    Follower,
    /// Gathering promises; does not accept writes yet.
    Candidate,
    /// Holds the lease: accepts writes until it runs out.
    Primary,
}

/// A voter's promise to one candidate.
#[derive(Clone, Copy, Debug)]
struct Promise {
    term: u64,
    candidate: MemberId,
    /// The candidate's process.
    session: u64,
    /// On this member's clock.
    until_ms: u64,
}

/// A request as a voter sees it.
#[derive(Clone, Copy, Debug)]
struct Asked {
    candidate: MemberId,
    session: u64,
    term: u64,
    round: u64,
    lease_ms: u64,
    members: u64,
}

/// A round of requests out (an acquisition or a renewal).
#[derive(Clone, Debug)]
struct Round {
    term: u64,
    round: u64,
    sent_ms: u64,
    grants: BTreeSet<MemberId>,
}

/// One member's lease state machine.
#[derive(Debug)]
pub struct LeaseKeeper {
    me: MemberId,
    /// This process (random, drawn by the caller).
    session: u64,
    config: LeaseConfig,
    /// `config.members_digest()`.
    members: u64,
    /// When this keeper started (its clock).
    started_ms: u64,
    /// It grants nothing before this: promises of a life before a restart may still run.
    quiet_until_ms: u64,
    highest_term: u64,
    promise: Option<Promise>,
    /// This member's latest term and round as a candidate or holder.
    term: u64,
    round: u64,
    pending: Option<Round>,
    /// While primary: the lease runs until this (its clock).
    holding_until_ms: Option<u64>,
    next_renew_ms: u64,
    /// The primary as this member last heard of it, and when.
    known_holder: Option<MemberId>,
    last_heard_ms: u64,
    /// A promotion asked for: try until primary, or until this time (its clock).
    promoting: bool,
    promote_until_ms: u64,
    /// Earliest time of the next attempt (after a failed round, or a step-down).
    next_attempt_ms: u64,
    out: VecDeque<Outgoing>,
}

impl LeaseKeeper {
    /// A member starting (or restarting: it keeps no state) at `now_ms` on its clock, as
    /// process `session` (random: a restarted member must not reuse it).
    pub fn new(me: MemberId, config: LeaseConfig, now_ms: u64, session: u64) -> LeaseKeeper {
        let quiet_until_ms = now_ms + config.quiet_ms();
        LeaseKeeper {
            me,
            session,
            members: config.members_digest(),
            started_ms: now_ms,
            quiet_until_ms,
            highest_term: 0,
            promise: None,
            term: 0,
            round: 0,
            pending: None,
            holding_until_ms: None,
            next_renew_ms: 0,
            known_holder: None,
            last_heard_ms: now_ms,
            promoting: false,
            promote_until_ms: 0,
            next_attempt_ms: now_ms,
            out: VecDeque::new(),
            config,
        }
    }

    /// Whether this member holds the lease at `now_ms` (accepts writes).
    pub fn is_primary(&self, now_ms: u64) -> bool {
        self.holding_until_ms.is_some_and(|until| now_ms < until)
    }

    /// Until when this member holds the lease (its clock), if it does.
    pub fn holding_until(&self) -> Option<u64> {
        self.holding_until_ms
    }

    /// What this member is at `now_ms`.
    pub fn role(&self, now_ms: u64) -> Role {
        if self.is_primary(now_ms) {
            Role::Primary
        } else if self.pending.is_some() {
            Role::Candidate
        } else {
            Role::Follower
        }
    }

    /// The primary as this member knows it: itself while it holds the lease, else the member
    /// it last heard holding or renewing one.
    pub fn primary(&self, now_ms: u64) -> Option<MemberId> {
        if self.is_primary(now_ms) {
            Some(self.me)
        } else {
            self.known_holder.filter(|h| *h != self.me)
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// The term of this member's latest attempt or lease.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// The next message to send.
    pub fn poll_output(&mut self) -> Option<Outgoing> {
        self.out.pop_front()
    }

    /// Makes this member primary as soon as it can: the holder is asked to step down, and
    /// this member asks for promises until a majority gives them (at once if the holder
    /// releases, after the holder's promises run out if it is unreachable).
    /// It gives up after two promises' time (the holder unreachable and its voters
    /// refusing, or another promotion asked for meanwhile).
    pub fn promote(&mut self, now_ms: u64) {
        self.promoting = true;
        self.promote_until_ms = now_ms + 2 * self.config.quiet_ms();
        if self.is_primary(now_ms) {
            return;
        }
        self.next_attempt_ms = now_ms;
        self.tick(now_ms);
    }

    /// Renews, expires, times rounds out and takes over when it is this member's turn.
    pub fn tick(&mut self, now_ms: u64) {
        if self.promoting && now_ms >= self.promote_until_ms {
            self.promoting = false;
        }
        if self.holding_until_ms.is_some_and(|until| now_ms >= until) {
            self.holding_until_ms = None;
            if self.known_holder == Some(self.me) {
                self.known_holder = None;
            }
            self.last_heard_ms = now_ms;
        }
        if let Some(round) = &self.pending {
            if now_ms >= round.sent_ms + self.config.round_timeout_ms {
                let term = round.term;
                let renewal = self.holding_until_ms.is_some();
                self.pending = None;
                self.next_attempt_ms = now_ms + self.retry_delay();
                if !renewal {
                    // The promises this attempt did get are given back, so that voters can
                    // promise the holder (or the next candidate) at once.
                    let (me, session) = (self.me, self.session);
                    self.release_promise(me, session, term, now_ms);
                    self.broadcast(LeaseMessage::Release { term, session });
                }
            }
        }
        if self.pending.is_some() {
            return;
        }
        if self.holding_until_ms.is_some() {
            if now_ms >= self.next_renew_ms {
                self.start_round(now_ms, true);
            }
        } else if now_ms >= self.next_attempt_ms && self.my_turn(now_ms) {
            self.start_round(now_ms, false);
        }
    }

    /// Handles a message from member `from`.
    pub fn handle(&mut self, from: MemberId, message: LeaseMessage, now_ms: u64) {
        match message {
            LeaseMessage::Request {
                term,
                round,
                session,
                lease_ms,
                members,
            } => {
                let asked = Asked {
                    candidate: from,
                    session,
                    term,
                    round,
                    lease_ms,
                    members,
                };
                let reply = self.vote(asked, now_ms);
                if from == self.me {
                    self.handle(from, reply, now_ms);
                } else {
                    self.out.push_back(Outgoing {
                        to: from,
                        message: reply,
                    });
                }
            }
            LeaseMessage::Reply {
                term,
                round,
                session,
                granted,
                holder,
                highest_term,
            } => {
                if session == self.session && self.config.members.contains(&from) {
                    self.on_reply(from, term, round, granted, holder, highest_term, now_ms)
                }
            }
            LeaseMessage::Release { term, session } => {
                self.release_promise(from, session, term, now_ms);
                if self.known_holder == Some(from) {
                    self.known_holder = None;
                    self.last_heard_ms = now_ms;
                }
                // A promotion waiting on the holder asks again at once.
                if self.promoting && !self.is_primary(now_ms) {
                    self.pending = None;
                    self.start_round(now_ms, false);
                }
            }
            LeaseMessage::StepDown { successor, term } => {
                // A promotion that started before this member's current term is stale.
                if successor != self.me && term > self.term {
                    self.step_down(now_ms);
                }
            }
        }
    }

    /// A voter's answer to a request.
    fn vote(&mut self, asked: Asked, now_ms: u64) -> LeaseMessage {
        let Asked {
            candidate,
            session,
            term,
            round,
            lease_ms,
            members,
        } = asked;
        let live = self.promise.filter(|p| now_ms < p.until_ms);
        if members != self.members {
            tracing::warn!(%candidate, "a lease request counts a majority of another member list: refused (are the nodes configured alike?)");
        }
        // A lease longer than any configuration allows is refused (a bug, or a liar): granting
        // it would pin this voter for as long as the candidate asked.
        let granted = now_ms >= self.quiet_until_ms
            && self.config.members.contains(&candidate)
            && members == self.members
            && lease_ms <= super::LEASE_MS_MAX
            && match live {
                // Renewal by the process promised: whatever terms others have tried since.
                Some(p) if p.candidate == candidate && p.session == session => term >= p.term,
                // The fence: nobody else while a promise runs.
                Some(_) => false,
                // Terms do not fence (promises do): a holder whose promise here ran out
                // renews under its term even after others tried higher ones.
                None => true,
            };
        self.highest_term = self.highest_term.max(term);
        if candidate != self.me && round > 1 {
            // A renewal: the candidate held the lease (granted here or not).
            self.known_holder = Some(candidate);
            self.last_heard_ms = now_ms;
        }
        if granted {
            self.promise = Some(Promise {
                term,
                candidate,
                session,
                // At least as long as the candidate counts on.
                until_ms: now_ms.saturating_add(self.config.lease_ms.max(lease_ms)),
            });
            if candidate != self.me {
                self.last_heard_ms = now_ms;
            }
        }
        LeaseMessage::Reply {
            term,
            round,
            session,
            granted,
            holder: self
                .promise
                .filter(|p| now_ms < p.until_ms)
                .map(|p| p.candidate),
            highest_term: self.highest_term,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_reply(
        &mut self,
        from: MemberId,
        term: u64,
        round: u64,
        granted: bool,
        holder: Option<MemberId>,
        highest_term: u64,
        now_ms: u64,
    ) {
        self.highest_term = self.highest_term.max(highest_term);
        if !granted {
            if let Some(h) = holder.filter(|h| *h != self.me) {
                self.known_holder = Some(h);
                self.last_heard_ms = now_ms;
            }
            return;
        }
        let quorum = self.config.quorum();
        let Some(pending) = &mut self.pending else {
            return;
        };
        if pending.term != term || pending.round != round {
            return;
        }
        pending.grants.insert(from);
        if pending.grants.len() < quorum {
            return;
        }
        let sent_ms = pending.sent_ms;
        self.pending = None;
        let until = sent_ms + self.config.hold_ms();
        if until > now_ms {
            self.holding_until_ms = Some(until.max(self.holding_until_ms.unwrap_or(0)));
            self.known_holder = Some(self.me);
            self.promoting = false;
        }
        self.next_renew_ms = sent_ms + self.config.renew_every_ms;
    }

    /// Gives the lease up (a promotion elsewhere): stops being primary first, then tells the
    /// voters they may promise others; does not try again before a failover would.
    fn step_down(&mut self, now_ms: u64) {
        let was_holding = self.holding_until_ms.take().is_some();
        let attempting = self.pending.take().is_some();
        self.promoting = false;
        if was_holding || attempting {
            let (me, session, term) = (self.me, self.session, self.term);
            self.release_promise(me, session, term, now_ms);
            self.broadcast(LeaseMessage::Release { term, session });
        }
        if self.known_holder == Some(self.me) {
            self.known_holder = None;
        }
        self.last_heard_ms = now_ms;
        self.next_attempt_ms = now_ms + self.config.failover_after_ms.unwrap_or(0);
    }

    /// Ends this voter's promise to `candidate`'s process `session` for `term`, if that is
    /// the one it holds.
    fn release_promise(&mut self, candidate: MemberId, session: u64, term: u64, now_ms: u64) {
        if let Some(p) = &mut self.promise {
            if p.candidate == candidate && p.session == session && p.term == term {
                p.until_ms = p.until_ms.min(now_ms);
            }
        }
    }

    /// Whether this member should try to become primary now.
    fn my_turn(&self, now_ms: u64) -> bool {
        if self.promoting {
            return true;
        }
        let Some(rank) = self.config.successors.iter().position(|m| *m == self.me) else {
            return false;
        };
        let stagger = self.config.stagger_ms * rank as u64;
        match self.known_holder {
            // Never heard of a primary since starting: the successors in their order.
            None if self.last_heard_ms == self.started_ms => {
                now_ms >= self.started_ms.max(self.quiet_until_ms) + stagger
            }
            _ => match self.config.failover_after_ms {
                Some(after) => now_ms >= self.last_heard_ms + after + stagger,
                None => false,
            },
        }
    }

    /// Delay before trying again after a round that did not gather a majority (a promotion
    /// tries again at once; a failover waits its turn).
    fn retry_delay(&self) -> u64 {
        if self.promoting {
            return self.config.round_timeout_ms;
        }
        let rank = self
            .config
            .successors
            .iter()
            .position(|m| *m == self.me)
            .unwrap_or(self.config.successors.len()) as u64;
        self.config.round_timeout_ms + self.config.stagger_ms * rank
    }

    fn start_round(&mut self, now_ms: u64, renewal: bool) {
        if renewal {
            self.round += 1;
        } else {
            self.term = self.term.max(self.highest_term) + 1;
            self.round = 1;
            if self.promoting {
                // Asked at every attempt: a lost request would leave the holder in place.
                self.broadcast(LeaseMessage::StepDown {
                    successor: self.me,
                    term: self.term,
                });
            }
        }
        self.pending = Some(Round {
            term: self.term,
            round: self.round,
            sent_ms: now_ms,
            grants: BTreeSet::new(),
        });
        let request = LeaseMessage::Request {
            term: self.term,
            round: self.round,
            session: self.session,
            lease_ms: self.config.lease_ms,
            members: self.members,
        };
        self.broadcast(request.clone());
        // Its own vote, as any voter's.
        let me = self.me;
        self.handle(me, request, now_ms);
    }

    fn broadcast(&mut self, message: LeaseMessage) {
        let others: Vec<MemberId> = self
            .config
            .members
            .iter()
            .copied()
            .filter(|m| *m != self.me)
            .collect();
        for to in others {
            self.out.push_back(Outgoing {
                to,
                message: message.clone(),
            });
        }
    }
}
