//! An atomic multi-key write: every operation shares one dot and one log entry.

use crate::model::{Expiry, Op, VersionVector};

/// Operations applied together: all or none, under one dot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    pub(crate) ops: Vec<(Vec<u8>, Op)>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// The operations, in the order they were added.
    pub fn ops(&self) -> &[(Vec<u8>, Op)] {
        &self.ops
    }

    /// Adds any operation.
    pub fn op(mut self, key: impl Into<Vec<u8>>, op: Op) -> Self {
        self.ops.push((key.into(), op));
        self
    }

    /// Multi-value register write superseding what this replica holds.
    pub fn put(self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        self.op(
            key,
            Op::Put {
                value: value.into(),
                context: None,
            },
        )
    }

    /// Multi-value register write superseding what `context` saw.
    pub fn put_with(
        self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        context: &VersionVector,
    ) -> Self {
        self.op(
            key,
            Op::Put {
                value: value.into(),
                context: Some(context.clone()),
            },
        )
    }

    /// Last-writer-wins register write.
    pub fn lww_set(self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        self.op(
            key,
            Op::LwwSet {
                value: value.into(),
            },
        )
    }

    /// Counter increment (negative to decrement).
    pub fn counter_add(self, key: impl Into<Vec<u8>>, delta: i64) -> Self {
        self.op(key, Op::CounterAdd { delta })
    }

    /// Set insertion.
    pub fn set_add(self, key: impl Into<Vec<u8>>, elem: impl Into<Vec<u8>>) -> Self {
        self.op(
            key,
            Op::SetAdd {
                elems: vec![elem.into()],
            },
        )
    }

    /// Set removal.
    pub fn set_remove(self, key: impl Into<Vec<u8>>, elem: impl Into<Vec<u8>>) -> Self {
        self.op(
            key,
            Op::SetRemove {
                elems: vec![elem.into()],
            },
        )
    }

    /// Causal delete of the key.
    pub fn delete(self, key: impl Into<Vec<u8>>) -> Self {
        self.op(key, Op::Delete)
    }

    /// Gives the key a time to live from this batch's HLC time (`Engine::expire`); it covers
    /// the batch's writes to the key wherever it stands in the batch.
    pub fn ttl(self, key: impl Into<Vec<u8>>, ttl: std::time::Duration) -> Self {
        let ms = crate::engine::millis(ttl);
        self.op(
            key,
            Op::Expire {
                expiry: Expiry::After(ms),
            },
        )
    }

    /// Makes the key expire at wall time `at` (`Engine::expire_at`).
    pub fn expire_at(self, key: impl Into<Vec<u8>>, at: std::time::SystemTime) -> Self {
        let ms = crate::engine::unix_millis(at);
        self.op(
            key,
            Op::Expire {
                expiry: Expiry::At(ms),
            },
        )
    }

    /// Removes the key's pending expiries (`Engine::persist`).
    pub fn persist(self, key: impl Into<Vec<u8>>) -> Self {
        self.op(
            key,
            Op::Expire {
                expiry: Expiry::Never,
            },
        )
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch has no operation.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}
