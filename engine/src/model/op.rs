//! Operations a local writer can apply to a key.

use super::{Kind, VersionVector};
use serde::{Deserialize, Serialize};

/// One operation on one key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// Multi-value register write; `context` (from a read) limits what it supersedes.
    Put {
        /// The value.
        value: Vec<u8>,
        /// What the writer read; `None` supersedes every sibling this replica holds.
        context: Option<VersionVector>,
    },
    /// Last-writer-wins register write.
    LwwSet {
        /// The value.
        value: Vec<u8>,
    },
    /// Counter increment (negative to decrement).
    CounterAdd {
        /// The amount.
        delta: i64,
    },
    /// Set insertions.
    SetAdd {
        /// Elements to add.
        elems: Vec<Vec<u8>>,
    },
    /// Set removals (of what this replica sees).
    SetRemove {
        /// Elements to remove.
        elems: Vec<Vec<u8>>,
    },
    /// Applies a nested operation to a map field (the field's type follows the operation).
    MapUpdate {
        /// Field name.
        field: Vec<u8>,
        /// The operation on the field's value.
        op: Box<Op>,
    },
    /// Removes a map field (every type under that name).
    MapRemove {
        /// Field name.
        field: Vec<u8>,
    },
    /// Deletes the key: a causal tombstone of everything this replica sees.
    Delete,
}

impl Op {
    /// The value type this operation needs; `None` for a delete.
    pub fn kind(&self) -> Option<Kind> {
        Some(match self {
            Op::Put { .. } => Kind::Register,
            Op::LwwSet { .. } => Kind::Lww,
            Op::CounterAdd { .. } => Kind::Counter,
            Op::SetAdd { .. } | Op::SetRemove { .. } => Kind::Set,
            Op::MapUpdate { .. } | Op::MapRemove { .. } => Kind::Map,
            Op::Delete => return None,
        })
    }

    /// Nesting depth of map updates (1 for a plain operation).
    pub fn depth(&self) -> usize {
        match self {
            Op::MapUpdate { op, .. } => 1 + op.depth(),
            _ => 1,
        }
    }

    /// Bytes of user payload the operation carries (values, elements, field names).
    pub fn payload_len(&self) -> usize {
        match self {
            Op::Put { value, .. } | Op::LwwSet { value } => value.len(),
            Op::SetAdd { elems } | Op::SetRemove { elems } => elems.iter().map(Vec::len).sum(),
            Op::MapUpdate { field, op } => field.len() + op.payload_len(),
            Op::MapRemove { field } => field.len(),
            Op::CounterAdd { .. } | Op::Delete => 0,
        }
    }
}
