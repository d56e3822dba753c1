//! A reconciliation table that many threads update in place: a store's running summary of
//! every record, toggled as records change and copied (then folded) when a round needs it.

use super::iblt::{check_hash, position, Cell, Iblt, Item};
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};

/// Bytes of one cell in [`SharedIblt::save`]'s format.
const SAVED_CELL_BYTES: usize = 32;

#[derive(Default)]
struct AtomicCell {
    count: AtomicI64,
    key_sum: AtomicU64,
    state_sum: AtomicU64,
    check_sum: AtomicU32,
}

/// A table of 3 × 2^`sub_log` cells updated with relaxed atomics: concurrent toggles commute,
/// so the table equals the set of items toggled in, whatever their order.
pub struct SharedIblt {
    cells: Box<[AtomicCell]>,
    sub_log: u32,
}

impl SharedIblt {
    /// An empty table of 3 × 2^`sub_log` cells.
    pub fn new(sub_log: u32) -> SharedIblt {
        SharedIblt {
            cells: (0..3usize << sub_log)
                .map(|_| AtomicCell::default())
                .collect(),
            sub_log,
        }
    }

    /// How many cells the table has.
    pub fn cell_count(&self) -> usize {
        self.cells.len()
    }

    /// Adds (`delta` 1) or removes (`delta` -1) an item.
    pub fn toggle(&self, item: Item, delta: i64) {
        let check = check_hash(item);
        for j in 0..3 {
            let c = &self.cells[position(item, j, self.sub_log)];
            c.count.fetch_add(delta, Ordering::Relaxed);
            c.key_sum.fetch_xor(item.0, Ordering::Relaxed);
            c.state_sum.fetch_xor(item.1, Ordering::Relaxed);
            c.check_sum.fetch_xor(check, Ordering::Relaxed);
        }
    }

    /// Empties the table (before it is filled again from the records).
    pub fn clear(&self) {
        for c in self.cells.iter() {
            c.count.store(0, Ordering::Relaxed);
            c.key_sum.store(0, Ordering::Relaxed);
            c.state_sum.store(0, Ordering::Relaxed);
            c.check_sum.store(0, Ordering::Relaxed);
        }
    }

    /// A copy of the table as it stands.
    pub fn snapshot(&self) -> Iblt {
        Iblt {
            cells: self
                .cells
                .iter()
                .map(|c| Cell {
                    count: c.count.load(Ordering::Relaxed),
                    key_sum: c.key_sum.load(Ordering::Relaxed),
                    state_sum: c.state_sum.load(Ordering::Relaxed),
                    check_sum: c.check_sum.load(Ordering::Relaxed),
                })
                .collect(),
        }
    }

    /// Bytes [`load`](SharedIblt::load) takes back: 32 per cell, little-endian.
    pub fn saved_len(&self) -> usize {
        self.cells.len() * SAVED_CELL_BYTES
    }

    /// Appends the table's cells to `out` (see [`saved_len`](SharedIblt::saved_len)).
    pub fn save(&self, out: &mut Vec<u8>) {
        out.reserve(self.saved_len());
        for c in self.cells.iter() {
            out.extend_from_slice(&c.count.load(Ordering::Relaxed).to_le_bytes());
            out.extend_from_slice(&c.key_sum.load(Ordering::Relaxed).to_le_bytes());
            out.extend_from_slice(&c.state_sum.load(Ordering::Relaxed).to_le_bytes());
            out.extend_from_slice(&u64::from(c.check_sum.load(Ordering::Relaxed)).to_le_bytes());
        }
    }

    /// A table of 3 × 2^`sub_log` cells from [`save`](SharedIblt::save)'s bytes; `None` if
    /// they are not a table of that size saved by this format.
    pub fn load(sub_log: u32, bytes: &[u8]) -> Option<SharedIblt> {
        let n = 3usize << sub_log;
        if bytes.len() != n * SAVED_CELL_BYTES {
            return None;
        }
        let word = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let cells = (0..n)
            .map(|i| {
                let at = SAVED_CELL_BYTES * i;
                Some(AtomicCell {
                    count: AtomicI64::new(word(at) as i64),
                    key_sum: AtomicU64::new(word(at + 8)),
                    state_sum: AtomicU64::new(word(at + 16)),
                    // A check wider than 32 bits: not a table this format saved.
                    check_sum: AtomicU32::new(u32::try_from(word(at + 24)).ok()?),
                })
            })
            .collect::<Option<Box<[AtomicCell]>>>()?;
        Some(SharedIblt { cells, sub_log })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_table_equals_the_table_of_its_items_and_survives_save_and_load() {
        let shared = SharedIblt::new(4);
        let mut plain = Iblt::with_cells(3 << 4);
        for i in 0..20u64 {
            shared.toggle((i, i * 7), 1);
            plain.insert((i, i * 7));
        }
        shared.toggle((3, 21), -1);
        plain.remove((3, 21));
        assert_eq!(shared.snapshot(), plain);
        let mut bytes = Vec::new();
        shared.save(&mut bytes);
        assert_eq!(bytes.len(), shared.saved_len());
        let loaded = SharedIblt::load(4, &bytes).expect("loads");
        assert_eq!(loaded.snapshot(), plain);
        assert!(SharedIblt::load(5, &bytes).is_none(), "another size");
    }
}
