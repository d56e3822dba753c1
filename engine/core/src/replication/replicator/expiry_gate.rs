//! Whether writes may set expiries: not while a member this replica links to runs a protocol
//! version below `EXPIRY_VERSION`. Such a member is sent states without their expiries
//! (`older_peers.rs`) and counts their writes applied all the same, so what it relays or sends
//! back by state transfer would not carry them: the store refuses new expiries until every
//! member linked since this process started reads them (a member not yet linked counts as
//! one that does, as a rolling upgrade restarts each member into the new release).

use super::Replicator;
use crate::model::MemberId;
use crate::replication::frame::EXPIRY_VERSION;
use crate::replication::seam::ReplicaStore;

impl Replicator {
    /// `member` linked at protocol `version`: tells the store whether expiries may be set.
    pub(super) fn note_member_version<S: ReplicaStore>(
        &mut self,
        member: MemberId,
        version: u8,
        store: &S,
    ) {
        let changed = if version < EXPIRY_VERSION {
            self.older_members.insert(member)
        } else {
            self.older_members.remove(&member)
        };
        if changed {
            if !self.older_members.is_empty() {
                tracing::warn!(
                    %member,
                    version,
                    "a member runs a release that does not read expiries: writes that set one are refused until it is upgraded"
                );
            }
            store.set_expiry_readable(self.older_members.is_empty());
        }
    }
}
