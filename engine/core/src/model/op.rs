//! Operations a local writer can apply to a key.

use super::{Expiry, Kind, VersionVector};
use serde::{Deserialize, Deserializer, Serialize};
use std::cell::Cell;

thread_local! {
    static OP_DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Decodes a nested operation, refusing nesting deeper than the codec's `MAX_DEPTH`, so that a
/// hostile request cannot exhaust the stack.
fn bounded_nested<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Box<Op>, D::Error> {
    struct Guard;
    impl Drop for Guard {
        fn drop(&mut self) {
            OP_DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
        }
    }
    let depth = OP_DEPTH.with(|d| {
        d.set(d.get() + 1);
        d.get()
    });
    let _guard = Guard;
    if depth > super::codec::MAX_DEPTH {
        return Err(serde::de::Error::custom("operation nested too deeply"));
    }
    Box::<Op>::deserialize(deserializer)
}

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
        #[serde(deserialize_with = "bounded_nested")]
        op: Box<Op>,
    },
    /// Removes a map field (every type under that name).
    MapRemove {
        /// Field name.
        field: Vec<u8>,
    },
    /// Deletes the key: a causal tombstone of everything this replica sees.
    Delete,
    /// Sets, removes or reclaims the key's expiry (`model::expiry`); beside a write in a batch,
    /// gives that write a time to live. Client protocol 8 and later.
    Expire {
        /// What to set.
        expiry: Expiry,
    },
}

impl Op {
    /// Whether applying it twice, in one region or in two, leaves what applying it once
    /// leaves: a register write with a read context, a last-writer-wins write, set and map
    /// field changes made of those, removals and deletes. A counter add is not (it would
    /// count twice), nor a register write without a context (a second region that has not
    /// seen the first would keep both as siblings). A client may retry an idempotent write
    /// whose outcome it does not know in another region.
    pub fn is_idempotent(&self) -> bool {
        match self {
            Op::Put { context, .. } => context.is_some(),
            Op::CounterAdd { .. } => false,
            Op::MapUpdate { op, .. } => op.is_idempotent(),
            Op::LwwSet { .. }
            | Op::SetAdd { .. }
            | Op::SetRemove { .. }
            | Op::MapRemove { .. }
            | Op::Delete
            | Op::Expire { .. } => true,
        }
    }

    /// The value type this operation needs; `None` for a delete or an expiry.
    pub fn kind(&self) -> Option<Kind> {
        Some(match self {
            Op::Put { .. } => Kind::Register,
            Op::LwwSet { .. } => Kind::Lww,
            Op::CounterAdd { .. } => Kind::Counter,
            Op::SetAdd { .. } | Op::SetRemove { .. } => Kind::Set,
            Op::MapUpdate { .. } | Op::MapRemove { .. } => Kind::Map,
            Op::Delete | Op::Expire { .. } => return None,
        })
    }

    /// Whether it is an `Expire` (which a client protocol before 8 cannot carry).
    pub fn is_expire(&self) -> bool {
        matches!(self, Op::Expire { .. })
    }

    /// Nesting depth of map updates (1 for a plain operation).
    pub fn depth(&self) -> usize {
        match self {
            Op::MapUpdate { op, .. } => 1 + op.depth(),
            _ => 1,
        }
    }

    /// Whether every read context the operation carries (nested ones included) is within
    /// `seen`: a context comes from a caller, and a write may supersede only what this replica
    /// has seen. A context beyond it is refused, never lowered: lowered, the write would
    /// silently cover less than the caller read.
    pub fn contexts_within(&self, seen: &VersionVector) -> bool {
        match self {
            Op::Put {
                context: Some(context),
                ..
            } => seen.dominates(context),
            Op::MapUpdate { op, .. } => op.contexts_within(seen),
            _ => true,
        }
    }

    /// Whether the operation is context-dependent: what it removes or supersedes is what this
    /// replica has seen of the key (set and map removals, deletes, a register write with a
    /// read context). A session's such write goes only to a region that has applied what the
    /// session wrote or read of the key. Writes that add (counter adds, set additions, a blind
    /// register write, which at worst leaves a sibling) and last-writer-wins writes (ordered
    /// by their stamps) do not wait, so they stay available when the region holding the
    /// session's last write is down.
    pub fn depends_on_seen(&self) -> bool {
        match self {
            Op::Put { context, .. } => context.is_some(),
            Op::CounterAdd { .. } | Op::SetAdd { .. } | Op::LwwSet { .. } => false,
            Op::MapUpdate { op, .. } => op.depends_on_seen(),
            Op::SetRemove { .. } | Op::MapRemove { .. } | Op::Delete | Op::Expire { .. } => true,
        }
    }

    /// The read context the operation carries (nested ones included), if any.
    pub fn context(&self) -> Option<&VersionVector> {
        match self {
            Op::Put { context, .. } => context.as_ref(),
            Op::MapUpdate { op, .. } => op.context(),
            _ => None,
        }
    }

    /// Whether the operation carries a read context (nested ones included).
    pub fn has_context(&self) -> bool {
        match self {
            Op::Put { context, .. } => context.is_some(),
            Op::MapUpdate { op, .. } => op.has_context(),
            _ => false,
        }
    }

    /// Bytes of user payload the operation carries (values, elements, field names).
    pub fn payload_len(&self) -> usize {
        match self {
            Op::Put { value, .. } | Op::LwwSet { value } => value.len(),
            Op::SetAdd { elems } | Op::SetRemove { elems } => elems.iter().map(Vec::len).sum(),
            Op::MapUpdate { field, op } => field.len() + op.payload_len(),
            Op::MapRemove { field } => field.len(),
            Op::CounterAdd { .. } | Op::Delete | Op::Expire { .. } => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_counting_and_blind_register_writes_are_not_idempotent() {
        let nested = |op: Op| Op::MapUpdate {
            field: b"f".to_vec(),
            op: Box::new(op),
        };
        let blind = Op::Put {
            value: b"v".to_vec(),
            context: None,
        };
        let seen = Op::Put {
            value: b"v".to_vec(),
            context: Some(VersionVector::new()),
        };
        assert!(!Op::CounterAdd { delta: 1 }.is_idempotent());
        assert!(!nested(Op::CounterAdd { delta: 1 }).is_idempotent());
        assert!(!blind.is_idempotent());
        assert!(seen.is_idempotent());
        assert!(nested(Op::LwwSet { value: vec![] }).is_idempotent());
        assert!(Op::SetRemove { elems: vec![] }.is_idempotent());
        assert!(Op::Delete.is_idempotent());
    }

    #[test]
    fn what_depends_on_the_seen_state_and_whether_contexts_are_within_it() {
        let nested = |op: Op| Op::MapUpdate {
            field: b"f".to_vec(),
            op: Box::new(op),
        };
        assert!(!Op::CounterAdd { delta: 1 }.depends_on_seen());
        assert!(!nested(Op::SetAdd { elems: vec![] }).depends_on_seen());
        assert!(!nested(Op::LwwSet { value: vec![] }).depends_on_seen());
        let blind = Op::Put {
            value: vec![],
            context: None,
        };
        assert!(!blind.depends_on_seen());
        assert!(nested(Op::Put {
            value: vec![],
            context: Some(VersionVector::new()),
        })
        .depends_on_seen());
        assert!(Op::Delete.depends_on_seen());
        assert!(Op::MapRemove { field: vec![] }.depends_on_seen());
        let a = super::super::OriginId(1);
        let seen = VersionVector::from_entries([(a, 3)]);
        let put = |n: u64| Op::Put {
            value: vec![],
            context: Some(VersionVector::from_entries([(a, n)])),
        };
        assert!(put(3).contexts_within(&seen));
        assert!(!put(4).contexts_within(&seen));
        assert!(!nested(put(4)).contexts_within(&seen));
        assert!(Op::Delete.contexts_within(&VersionVector::new()));
    }

    #[test]
    fn deeply_nested_operations_are_refused_when_decoding() {
        let mut op = Op::CounterAdd { delta: 1 };
        for _ in 0..10 {
            op = Op::MapUpdate {
                field: b"f".to_vec(),
                op: Box::new(op),
            };
        }
        let ok = postcard::to_stdvec(&op).expect("encodes");
        assert_eq!(
            &ok[..3],
            &[5, 1, b'f'],
            "the hostile input below mimics this layout"
        );
        assert_eq!(
            postcard::from_bytes::<Op>(&ok).expect("10 levels decode"),
            op
        );
        // A hand-made chain of a million MapUpdate headers: refused, no stack overflow.
        let mut hostile = Vec::new();
        for _ in 0..1_000_000 {
            hostile.extend_from_slice(&[5, 1, b'f']); // variant MapUpdate, field "f"
        }
        assert!(postcard::from_bytes::<Op>(&hostile).is_err());
    }
}
