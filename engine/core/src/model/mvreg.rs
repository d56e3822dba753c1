//! Multi-value register: concurrent writes become siblings.

use super::{Causal, Dot, DotFun, VersionVector};

/// The register's store: one entry per sibling.
pub type MvReg = DotFun<Vec<u8>>;

/// Writes `value` with dot `dot`. With a read context, supersedes exactly what it saw (and no
/// concurrent sibling); without one, supersedes every sibling this replica holds.
pub fn put(reg: &mut Causal<MvReg>, dot: Dot, value: Vec<u8>, context: Option<&VersionVector>) {
    match context {
        Some(seen) => {
            reg.store.retain(|d, _| !seen.contains(d));
            reg.ctx.join(seen);
        }
        None => reg.store.clear(),
    }
    reg.store.insert(dot, value);
    reg.ctx.add(dot);
}

/// The siblings in dot order.
pub fn siblings(reg: &Causal<MvReg>) -> Vec<(Dot, Vec<u8>)> {
    reg.store.iter().map(|(d, v)| (*d, v.clone())).collect()
}
