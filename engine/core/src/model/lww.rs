//! Last-writer-wins register: concurrent writes are kept as hidden siblings and the read picks the
//! largest (HLC marker, origin id), so equal markers can never diverge. A causally later write
//! always wins because it removes what it saw, whatever the clocks say.

use super::{Causal, Dot, DotFun, Hlc};
use serde::{Deserialize, Serialize};

/// One write: its marker and value (ordered by marker first).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LwwEntry {
    /// Hybrid-logical-clock marker of the write.
    pub marker: Hlc,
    /// The value written.
    pub value: Vec<u8>,
}

/// The register's store.
pub type LwwReg = DotFun<LwwEntry>;

/// Writes `value`, superseding every write this replica holds.
pub fn set(reg: &mut Causal<LwwReg>, dot: Dot, marker: Hlc, value: Vec<u8>) {
    reg.store.clear();
    reg.store.insert(dot, LwwEntry { marker, value });
    reg.ctx.add(dot);
}

/// The winning write: largest marker, then largest origin id.
pub fn winner(reg: &Causal<LwwReg>) -> Option<(Dot, &LwwEntry)> {
    reg.store
        .iter()
        .max_by_key(|(d, e)| (e.marker, d.replica, d.counter))
        .map(|(d, e)| (*d, e))
}

/// The largest marker present, for clock observation.
pub fn max_marker(reg: &Causal<LwwReg>) -> Option<Hlc> {
    reg.store.values().map(|e| e.marker).max()
}
