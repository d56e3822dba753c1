//! Invertible Bloom Lookup Table (IBLT) for set reconciliation of record digests.
//!
//! State anti-entropy: a replica's records are the items `(key hash, state hash)`; each side
//! summarises them in an [`Iblt`] and one ships [`Iblt::to_bytes`]. The receiver subtracts its
//! own table ([`Iblt::subtract`]) and peels the result ([`Iblt::decode`]) to learn exactly which
//! items only one side has, and so the hashes of the keys to ask for. The table size, and so
//! the bytes moved, is proportional to the size of the difference ([`Iblt::cells_for`]), not
//! to the data set. On [`IbltError::Undecodable`] the caller retries with a larger table.
//!
//! Tables have three disjoint sub-tables of a power of two cells each; an item's cell in a
//! sub-table is given by the top bits of a hash of it. So a large table folds into any smaller
//! one exactly ([`Iblt::fold`]): a replica keeps one large table up to date as it writes, and
//! answers any size asked for without reading its records.
//!
//! Everything is deterministic (no randomness, clock or I/O): positions come from splitmix64
//! with fixed seeds, so tables built on any machine, in any run, are compatible.

use serde::{Deserialize, Serialize};

/// Fewest cells per sub-table, as a power of two.
pub const SUB_LOG_MIN: u32 = 2;
/// Most cells per sub-table, as a power of two.
pub const SUB_LOG_MAX: u32 = 20;
/// Smallest table, in cells.
pub const CELLS_MIN: usize = K << SUB_LOG_MIN;
/// Largest accepted table, in cells.
pub const CELLS_MAX: usize = K << SUB_LOG_MAX;
/// Version byte that starts every encoding made by [`Iblt::to_bytes`].
pub const FORMAT_VERSION: u8 = 3;

const K: usize = 3;
const SEEDS: [u64; K] = [
    0x243F_6A88_85A3_08D3,
    0x1319_8A2E_0370_7344,
    0xA409_3822_299F_31D0,
];
const ITEM_SEED: u64 = 0x4528_21E6_38D0_1377;
const CHECK_SEED: u64 = 0x082E_FA98_EC4E_6C89;

/// One item: a record's key hash and state hash.
pub type Item = (u64, u64);

/// Why a table could not be combined, decoded or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IbltError {
    /// Peeling stopped with non-empty cells: retry with a larger table.
    #[error("IBLT difference could not be decoded; retry with a larger table")]
    Undecodable,
    /// The two tables have different cell counts (left, right).
    #[error("IBLT sizes differ: {0} and {1} cells")]
    SizeMismatch(usize, usize),
    /// The encoding has a format version this build does not know.
    #[error("unsupported IBLT format version {0}")]
    UnsupportedVersion(u8),
    /// The encoding is truncated, has trailing bytes, an invalid cell count or is non-canonical.
    #[error("malformed IBLT encoding: {0}")]
    Malformed(&'static str),
}

/// The items found on exactly one side of a subtraction `a.subtract(&b)`, each list sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Difference {
    /// Items in `a` but not in `b`.
    pub only_in_self: Vec<Item>,
    /// Items in `b` but not in `a`.
    pub only_in_other: Vec<Item>,
}

/// On the wire a cell is an `Option<Cell>`: an all-zero cell is `None` (1 byte), any other
/// costs 1 + zig-zag varint count + 2 × 8 + 4 (the sums look random, so they are
/// fixed-width; 32 bits of check tell a cell holding one item from one holding several).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Cell {
    pub(crate) count: i64,
    #[serde(with = "postcard::fixint::le")]
    pub(crate) key_sum: u64,
    #[serde(with = "postcard::fixint::le")]
    pub(crate) state_sum: u64,
    #[serde(with = "postcard::fixint::le")]
    pub(crate) check_sum: u32,
}

impl Cell {
    fn toggle(&mut self, item: Item, delta: i64) {
        self.count = self.count.wrapping_add(delta);
        self.key_sum ^= item.0;
        self.state_sum ^= item.1;
        self.check_sum ^= check_hash(item);
    }

    fn add(&mut self, other: &Cell) {
        self.count = self.count.wrapping_add(other.count);
        self.key_sum ^= other.key_sum;
        self.state_sum ^= other.state_sum;
        self.check_sum ^= other.check_sum;
    }
}

/// splitmix64: a fixed, well-mixing bijection on `u64`.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn item_hash(item: Item) -> u64 {
    mix(item.0 ^ mix(item.1 ^ ITEM_SEED))
}

/// The check hash of an item (a cell holding exactly one item carries it).
pub(crate) fn check_hash(item: Item) -> u32 {
    (mix(item_hash(item) ^ CHECK_SEED) >> 32) as u32
}

/// The cell of `item` in sub-table `j` of a table with `2^log` cells per sub-table.
pub(crate) fn position(item: Item, j: usize, log: u32) -> usize {
    let h = mix(item_hash(item) ^ SEEDS[j]);
    (j << log)
        + if log == 0 {
            0
        } else {
            (h >> (64 - log)) as usize
        }
}

/// An invertible Bloom lookup table over items, in three equal disjoint sub-tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iblt {
    pub(crate) cells: Vec<Cell>,
}

impl Iblt {
    /// An empty table of at least `n` cells: three sub-tables of a power of two cells,
    /// within `CELLS_MIN..=CELLS_MAX`.
    pub fn with_cells(n: usize) -> Iblt {
        Iblt {
            cells: vec![Cell::default(); Self::round_cells(n)],
        }
    }

    /// A cell count that decodes a symmetric difference of `expected_difference` items with
    /// high probability (about 99%; failures are mostly two items sharing all three cells).
    pub fn cells_for(expected_difference: usize) -> usize {
        let d = expected_difference;
        let slack = d.saturating_mul(2).min(90) + 12;
        Self::round_cells(d.saturating_add(d / 4).saturating_add(slack))
    }

    /// About how many items a difference table holds, from the share of its cells left
    /// empty (each item fills one cell of each sub-table: with `d` items in `m` cells, about
    /// `e^(-d/m)` stay empty); `None` when no cell is empty (it holds many more than its size).
    pub fn difference_estimate(&self) -> Option<usize> {
        let m = self.cells.len() / K;
        let empty = self.cells.iter().filter(|c| **c == Cell::default()).count();
        if empty == 0 {
            return None;
        }
        let share = empty as f64 / self.cells.len() as f64;
        Some((-(m as f64) * share.ln()).ceil() as usize)
    }

    fn round_cells(n: usize) -> usize {
        let per = n.div_ceil(K).clamp(1 << SUB_LOG_MIN, 1 << SUB_LOG_MAX);
        K * per.next_power_of_two()
    }

    /// The number of cells in this table.
    pub fn cell_count(&self) -> usize {
        self.cells.len()
    }

    fn sub_log(&self) -> u32 {
        (self.cells.len() / K).trailing_zeros()
    }

    fn positions(&self, item: Item) -> [usize; K] {
        let log = self.sub_log();
        std::array::from_fn(|j| position(item, j, log))
    }

    /// Adds `item` to the table.
    pub fn insert(&mut self, item: Item) {
        for p in self.positions(item) {
            self.cells[p].toggle(item, 1);
        }
    }

    /// Removes a previously inserted `item` from the table.
    pub fn remove(&mut self, item: Item) {
        for p in self.positions(item) {
            self.cells[p].toggle(item, -1);
        }
    }

    /// This table folded to `n` cells (rounded as `with_cells` does; at most its own size):
    /// the table the same items would fill at that size.
    pub fn fold(&self, n: usize) -> Iblt {
        let target = Self::round_cells(n).min(self.cells.len());
        let (from, to) = (self.sub_log(), (target / K).trailing_zeros());
        let shift = from - to;
        let mut cells = vec![Cell::default(); target];
        for j in 0..K {
            for i in 0..(1usize << from) {
                cells[(j << to) + (i >> shift)].add(&self.cells[(j << from) + i]);
            }
        }
        Iblt { cells }
    }

    /// The cell-wise difference `self - other`, to be [`decode`](Iblt::decode)d.
    pub fn subtract(&self, other: &Iblt) -> Result<Iblt, IbltError> {
        if self.cells.len() != other.cells.len() {
            let (left, right) = (self.cells.len(), other.cells.len());
            return Err(IbltError::SizeMismatch(left, right));
        }
        let cells = self.cells.iter().zip(&other.cells).map(|(a, b)| Cell {
            count: a.count.wrapping_sub(b.count),
            key_sum: a.key_sum ^ b.key_sum,
            state_sum: a.state_sum ^ b.state_sum,
            check_sum: a.check_sum ^ b.check_sum,
        });
        Ok(Iblt {
            cells: cells.collect(),
        })
    }

    /// Peels the table into the items it holds positively and negatively, or `Undecodable`.
    pub fn decode(&self) -> Result<Difference, IbltError> {
        let mut t = self.clone();
        let mut diff = Difference::default();
        let mut pending: Vec<usize> = (0..t.cells.len()).collect();
        // An honest peel empties its pure cell for good, so more peels than cells is an attack.
        let mut peels_left = t.cells.len();
        while let Some(i) = pending.pop() {
            let c = t.cells[i];
            let item = (c.key_sum, c.state_sum);
            if !matches!(c.count, 1 | -1) || c.check_sum != check_hash(item) {
                continue;
            }
            peels_left = peels_left.checked_sub(1).ok_or(IbltError::Undecodable)?;
            match c.count {
                1 => diff.only_in_self.push(item),
                _ => diff.only_in_other.push(item),
            }
            for p in t.positions(item) {
                t.cells[p].toggle(item, -c.count);
                pending.push(p);
            }
        }
        if t.cells.iter().any(|c| *c != Cell::default()) {
            return Err(IbltError::Undecodable);
        }
        diff.only_in_self.sort_unstable();
        diff.only_in_other.sort_unstable();
        let mut all = [diff.only_in_self.as_slice(), &diff.only_in_other].concat();
        all.sort_unstable();
        if all.windows(2).any(|w| w[0] == w[1]) {
            return Err(IbltError::Undecodable); // an item peeled twice: a crafted table
        }
        Ok(diff)
    }

    /// Canonical encoding: version byte, varint cell count, then each cell (empty ones 1 byte).
    pub fn to_bytes(&self) -> Vec<u8> {
        let wire: Vec<Option<Cell>> = (self.cells.iter())
            .map(|c| (*c != Cell::default()).then_some(*c))
            .collect();
        let mut out = vec![FORMAT_VERSION];
        // Encoding into a Vec cannot fail.
        let _ = postcard::to_io(&wire, &mut out);
        out
    }

    /// Parses [`to_bytes`](Iblt::to_bytes) output, rejecting anything else without panicking.
    pub fn from_bytes(bytes: &[u8]) -> Result<Iblt, IbltError> {
        let malformed = IbltError::Malformed;
        let (&version, rest) = bytes.split_first().ok_or(malformed("empty"))?;
        if version != FORMAT_VERSION {
            return Err(IbltError::UnsupportedVersion(version));
        }
        let (n, mut rest) =
            postcard::take_from_bytes::<u64>(rest).map_err(|_| malformed("cell count"))?;
        let n = usize::try_from(n).unwrap_or(usize::MAX); // rejected just below
        if !(CELLS_MIN..=CELLS_MAX).contains(&n) || Self::round_cells(n) != n {
            return Err(malformed("cell count is not three powers of two in range"));
        }
        if n > rest.len() {
            return Err(malformed("shorter than its cell count")); // a cell takes >= 1 byte
        }
        let mut cells = Vec::with_capacity(n);
        for _ in 0..n {
            let (cell, tail) =
                postcard::take_from_bytes::<Option<Cell>>(rest).map_err(|_| malformed("cell"))?;
            cells.push(cell.unwrap_or_default());
            rest = tail;
        }
        let iblt = Iblt { cells };
        // Re-encoding also rejects overlong varints and zero cells spelled as full ones.
        if !rest.is_empty() || iblt.to_bytes() != bytes {
            return Err(malformed("trailing bytes or non-canonical"));
        }
        Ok(iblt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    fn item(i: u64) -> Item {
        (mix(i), mix(i ^ 0xABCD))
    }

    fn table(n: usize, items: impl IntoIterator<Item = Item>) -> Iblt {
        let mut t = Iblt::with_cells(n);
        items.into_iter().for_each(|x| t.insert(x));
        t
    }

    #[test]
    fn decodes_a_known_difference_both_ways() -> Result<(), IbltError> {
        let a = table(24, (1..=1000).map(item).chain([(0, 0), (u64::MAX, 1)]));
        let b = table(24, (1..=1000).map(item).chain([(7, 7)]));
        let ab = a.subtract(&b)?.decode()?;
        assert_eq!(
            (ab.only_in_self, ab.only_in_other),
            (vec![(0, 0), (u64::MAX, 1)], vec![(7, 7)])
        );
        let ba = b.subtract(&a)?.decode()?;
        assert_eq!(
            (ba.only_in_self, ba.only_in_other),
            (vec![(7, 7)], vec![(0, 0), (u64::MAX, 1)])
        );
        assert_eq!(a.subtract(&a)?.decode()?, Difference::default());
        // The same key in two states is two items.
        let mut c = a.clone();
        c.remove((0, 0));
        c.insert((0, 5));
        let ac = a.subtract(&c)?.decode()?;
        assert_eq!(
            (ac.only_in_self, ac.only_in_other),
            (vec![(0, 0)], vec![(0, 5)])
        );
        assert_eq!(
            a.subtract(&table(99, [])),
            Err(IbltError::SizeMismatch(24, 192))
        );
        Ok(())
    }

    #[test]
    fn a_large_table_folds_into_the_table_its_items_fill_at_any_smaller_size() {
        let items: Vec<Item> = (0..5_000).map(item).collect();
        let big = table(3 << 16, items.iter().copied());
        for n in [12, 96, 3 << 10, 3 << 16] {
            assert_eq!(big.fold(n), table(n, items.iter().copied()), "{n} cells");
        }
        // Differences peel from folded tables as from tables built at that size.
        let other = table(3 << 16, items.iter().skip(10).copied());
        let n = Iblt::cells_for(10);
        let diff = big
            .fold(n)
            .subtract(&other.fold(n))
            .and_then(|d| d.decode());
        assert_eq!(diff.map(|d| d.only_in_self.len()), Ok(10));
    }

    #[test]
    fn sizes_and_encoded_sizes() {
        assert_eq!(
            [0, 13, usize::MAX].map(Iblt::round_cells),
            [12, 24, CELLS_MAX]
        );
        assert_eq!(Iblt::cells_for(usize::MAX), CELLS_MAX);
        assert_eq!(Iblt::cells_for(1000), 3 << 9);
        let full = table(3 << 10, (0..100_000).map(item)).to_bytes().len();
        assert_eq!(Iblt::with_cells(3 << 10).to_bytes().len(), 3 + (3 << 10));
        assert!(full <= 27 * (3 << 10) + 3, "{full}");
    }

    /// Decoding succeeds for nearly every difference within `cells_for` (failures are mostly
    /// two items sharing all three cells, reported as `Undecodable`).
    #[test]
    fn random_differences_decode_exactly_or_report_undecodable() {
        let config = Config {
            cases: 500,
            failure_persistence: None,
            ..Config::default()
        };
        let ok = std::cell::Cell::new(0u32);
        let cases = (0..=5000usize, 0..=500usize, any::<u64>(), any::<u64>());
        let result = TestRunner::new(config).run(&cases, |(base, d, seed, split)| {
            let items: Vec<Item> = (0..(base + d) as u64).map(|i| item(seed ^ i)).collect();
            let (shared, diff) = items.split_at(base);
            let (only_a, only_b) = diff.split_at((split % (d as u64 + 1)) as usize);
            let n = Iblt::cells_for(d);
            let a = table(n, shared.iter().chain(only_a).copied());
            let b = table(n, shared.iter().chain(only_b).copied());
            let (mut x, mut y) = (only_a.to_vec(), only_b.to_vec());
            x.sort_unstable();
            y.sort_unstable();
            match a.subtract(&b).and_then(|t| t.decode()) {
                Ok(found) => {
                    prop_assert_eq!((found.only_in_self, found.only_in_other), (x, y));
                    ok.set(ok.get() + 1);
                }
                Err(e) => prop_assert_eq!(e, IbltError::Undecodable),
            }
            Ok(())
        });
        assert!(result.is_ok(), "{result:?}");
        let rate = f64::from(ok.get()) / 500.0;
        assert!(rate >= 0.97, "decode success rate {rate}");
    }

    #[test]
    fn crafted_tables_cannot_loop_or_panic_the_peeler() {
        let mut t = Iblt::with_cells(12);
        let [first, ..] = t.positions((42, 42));
        t.cells[first].toggle((42, 42), 1); // pure in one sub-table only: would peel forever
        assert_eq!(t.decode(), Err(IbltError::Undecodable));
        t.cells[0].count = i64::MIN;
        assert_eq!(t.decode(), Err(IbltError::Undecodable));
    }

    #[test]
    fn rejects_bad_encodings() {
        let good = table(Iblt::cells_for(5), (0..50).map(item)).to_bytes();
        for cut in 0..good.len() {
            assert!(Iblt::from_bytes(&good[..cut]).is_err(), "prefix {cut}");
        }
        assert!(Iblt::from_bytes(&[good.as_slice(), &[0]].concat()).is_err());
        assert_eq!(
            Iblt::from_bytes(&[1, 12]),
            Err(IbltError::UnsupportedVersion(1))
        );
        let huge = [&[FORMAT_VERSION][..], &[0xFF; 9], &[1]].concat(); // 2^64 - 1 cells
        let zero_full = [&[FORMAT_VERSION, 12, 1, 0][..], &[0; 24 + 11]].concat();
        let overlong = [&[FORMAT_VERSION, 0x8C, 0][..], &[0; 12]].concat();
        let cells_3m = [FORMAT_VERSION, 0x80, 0x80, 0xC0, 1, 0]; // 3 * 2^20 cells, 1 byte
        let bad: [&[u8]; 7] = [
            &[FORMAT_VERSION, 0],
            &[FORMAT_VERSION, 15], // not three powers of two
            &[FORMAT_VERSION, 0x80, 0x80, 0x80, 2],
            &cells_3m,
            &huge,
            &zero_full,
            &overlong,
        ];
        for b in bad {
            assert!(Iblt::from_bytes(b).is_err(), "{b:?} accepted");
        }
    }

    proptest! {
        #[test]
        fn bytes_round_trip(ids in vec(any::<u64>(), 0..300), n in 0..400usize) {
            let t = table(n, ids.iter().map(|i| item(*i)));
            prop_assert_eq!(Iblt::from_bytes(&t.to_bytes()), Ok(t.clone()));
            let d = t.subtract(&table(n, ids.iter().skip(7).map(|i| item(*i))));
            prop_assert_eq!(d.clone().and_then(|d| Iblt::from_bytes(&d.to_bytes())), d);
        }

        #[test]
        fn garbage_never_panics(mut bytes in vec(any::<u8>(), 0..400), flip: (usize, u8)) {
            if let Ok(t) = Iblt::from_bytes(&bytes) {
                prop_assert_eq!(t.to_bytes(), bytes.clone());
            }
            let mut good = table(30, bytes.iter().map(|&b| item(u64::from(b)))).to_bytes();
            let i = flip.0 % good.len();
            good[i] ^= flip.1.max(1);
            if let Ok(t) = Iblt::from_bytes(&good) {
                prop_assert_eq!(t.to_bytes(), good);
                let _ = t.decode();
            }
            bytes.insert(0, FORMAT_VERSION);
            let _ = Iblt::from_bytes(&bytes).map(|t| t.decode());
        }
    }
}
