//! Whether writes may set expiries: not while a member was last seen linked at a replication
//! protocol below `EXPIRY_VERSION`. Such a member is sent states without their expiries
//! (`replication/older_peers.rs`) and counts their writes applied all the same, so what it
//! relays, or sends back by state transfer, would not carry them. The members last seen on
//! such a release are kept in metadata (`older_member/<id>`), so a restart goes on refusing
//! until each links again upgraded; a member never linked counts as one that reads them (a
//! rolling upgrade restarts each member into the new release).

use super::*;
use crate::replication::EXPIRY_VERSION;
use std::sync::atomic::Ordering;

impl Engine {
    /// Member `member` linked at replication protocol `version`.
    pub(super) fn note_member_release(&self, member: MemberId, version: u8) {
        let key = keys::older_member_key(member);
        let older = version < EXPIRY_VERSION;
        let listed = matches!(self.inner.store.get_meta(&key), Ok(Some(_)));
        if older != listed {
            let result = if older {
                self.inner.store.put_meta_sync(&key, &[version])
            } else {
                let mut wb = self.inner.store.batch();
                wb.delete_meta(&key);
                wb.commit(false)
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, %member, "a member's release was not recorded");
            }
        }
        if older && !listed {
            tracing::warn!(
                %member,
                version,
                "a member runs a release that does not read expiries: writes that set one are refused until it links upgraded"
            );
        }
        let any = match self
            .inner
            .store
            .meta_page(keys::META_OLDER_MEMBER_PREFIX, None, 1)
        {
            Ok(page) => !page.is_empty(),
            Err(_) => older,
        };
        self.inner.expiry_refused.store(any, Ordering::SeqCst);
    }
}
