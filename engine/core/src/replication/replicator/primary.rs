//! Active-passive mode on the replication links: this replica's `LeaseKeeper`, fed the
//! `Lease` frames of ready links and ticked with the replicator; what it sends goes to the
//! link of the member it is for (a member without a ready link misses it, as a lost frame).

use super::{LinkId, Replicator};
use crate::lease::{LeaseConfig, LeaseKeeper, LeaseMessage};
use crate::model::MemberId;
use crate::replication::frame::Frame;
use crate::replication::peer::LinkState;

/// Where the lease stands, as this replica sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrimaryView {
    /// Whether this replica holds the lease now.
    pub is_primary: bool,
    /// Until when it holds it (the driver's clock), if it does.
    pub holding_until_ms: Option<u64>,
    /// The primary it knows of (itself while it holds the lease).
    pub primary: Option<MemberId>,
    /// Its latest term.
    pub term: u64,
}

impl Replicator {
    /// Turns active-passive mode on (a fresh keeper: it grants nothing while promises it may
    /// have made before could still run) or off.
    pub fn set_lease(&mut self, config: Option<LeaseConfig>, now_ms: u64) {
        let session = self.config.session;
        self.lease = config.map(|c| LeaseKeeper::new(self.me, c, now_ms, session));
    }

    /// Where the lease stands; `None` in active-active mode.
    pub fn primary_view(&self, now_ms: u64) -> Option<PrimaryView> {
        self.lease.as_ref().map(|k| PrimaryView {
            is_primary: k.is_primary(now_ms),
            holding_until_ms: k.holding_until().filter(|u| *u > now_ms),
            primary: k.primary(now_ms),
            term: k.term(),
        })
    }

    /// Makes this replica primary as soon as it can (active-passive mode only).
    pub fn promote(&mut self, now_ms: u64) -> bool {
        let Some(k) = &mut self.lease else {
            return false;
        };
        k.promote(now_ms);
        self.send_lease_output();
        true
    }

    /// A `Lease` frame from a link.
    pub(super) fn on_lease(&mut self, peer: LinkId, message: LeaseMessage, now_ms: u64) {
        let Some(LinkState::Ready { member, .. }) = self.peers.get(&peer).map(|p| &p.state) else {
            return;
        };
        let from = *member;
        if let Some(k) = &mut self.lease {
            k.handle(from, message, now_ms);
            self.send_lease_output();
        }
    }

    /// Ticks the keeper.
    pub(super) fn tick_lease(&mut self, now_ms: u64) {
        if let Some(k) = &mut self.lease {
            k.tick(now_ms);
            self.send_lease_output();
        }
    }

    fn send_lease_output(&mut self) {
        let Some(k) = &mut self.lease else { return };
        let mut outgoing = Vec::new();
        while let Some(out) = k.poll_output() {
            outgoing.push(out);
        }
        for out in outgoing {
            let link = self.peers.iter().find_map(|(id, p)| match p.state {
                LinkState::Ready { member, .. } if member == out.to => Some(*id),
                _ => None,
            });
            if let Some(link) = link {
                self.send(link, &Frame::Lease(out.message));
            }
        }
    }
}
