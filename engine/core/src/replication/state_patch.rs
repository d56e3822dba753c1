//! Byte patches from one encoding of a key's state to the next: what a link sends instead of
//! a state its receiver holds most of already (`link_states.rs`).
//!
//! A write changes a record in a few places (a set add: the element and its dot, and the
//! context's entry for the writer), and the canonical encoding keeps the rest byte for byte,
//! so a patch is a few copies from the old bytes and a few literal runs. Finding them: the
//! common prefix and suffix, then, in what lies between, a window of the new bytes looked up
//! in the old ones (`memchr::memmem`), widened to the whole run the two share, and the same
//! again on each side of it. Linear in the state per level, a few levels for a few changes;
//! a run it misses is sent literally (never wrong, only larger).
//!
//! Patches are taken between the states' link forms (`diff_states`, `apply_to_state`).
//!
//! A patch is an edit script: a sequence of edits, each three varints and some bytes
//! (`keep`, `drop`, `add` and `add` bytes): keep `keep` bytes of the old state, skip `drop`
//! of them, insert the `add` bytes; what follows the last edit is kept. An add to a large set
//! is two edits (the context's entry for the writer, the element with its dot), about the
//! element's size and a dozen bytes.

use crate::model::codec::{self, DotsAs};

/// The patch from one record state to the next, between their link forms
/// (`codec::link_form`: dots as counters, so what the write did not touch keeps its bytes);
/// `None` if either does not decode.
pub fn diff_states(base: &[u8], new: &[u8]) -> Option<Vec<u8>> {
    let base = codec::link_form(base, DotsAs::Counters).ok()?;
    let new = codec::link_form(new, DotsAs::Counters).ok()?;
    Some(diff(&base, &new))
}

/// The record state `diff_states(base, new)` came from, given `base`; `None` if it does not
/// apply (a different base, a malformed patch, past `max_len`).
pub fn apply_to_state(base: &[u8], patch: &[u8], max_len: usize) -> Option<Vec<u8>> {
    let base = codec::link_form(base, DotsAs::Counters).ok()?;
    let new = apply(&base, patch, max_len).ok()?;
    codec::link_form(&new, DotsAs::Distances).ok()
}

/// Bytes of the new state looked up in the old one at a time.
const WINDOW: usize = 16;
/// Levels of division before the rest of a range is sent literally.
const DEPTH_MAX: u32 = 24;

/// Why a patch does not apply.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The patch is cut short or an instruction is not one.
    #[error("malformed patch: {0}")]
    Malformed(&'static str),
    /// A copy reaches past the old state.
    #[error("a copy reaches past the {0}-byte base")]
    OutOfRange(usize),
    /// The result would be larger than allowed.
    #[error("the patched state would pass {0} bytes")]
    TooLarge(usize),
}

/// The patch that turns `base` into `new`.
pub fn diff(base: &[u8], new: &[u8]) -> Vec<u8> {
    let mut ops = Ops::default();
    ops.range(base, 0..base.len(), new, 0..new.len(), DEPTH_MAX);
    ops.finish(base.len(), new)
}

/// `base` with `patch` applied, refused past `max_len` bytes.
pub fn apply(base: &[u8], patch: &[u8], max_len: usize) -> Result<Vec<u8>, PatchError> {
    let mut out = Vec::with_capacity(base.len().min(max_len));
    let (mut at, mut cursor) = (0, 0usize);
    let grow = |out: &mut Vec<u8>, run: &[u8]| {
        if out.len().saturating_add(run.len()) > max_len {
            return Err(PatchError::TooLarge(max_len));
        }
        out.extend_from_slice(run);
        Ok(())
    };
    let count = |patch: &[u8], at: &mut usize| {
        usize::try_from(varint(patch, at)?)
            .map_err(|_| PatchError::Malformed("a count past memory"))
    };
    while at < patch.len() {
        let (keep, drop, add) = (
            count(patch, &mut at)?,
            count(patch, &mut at)?,
            count(patch, &mut at)?,
        );
        let kept = cursor
            .checked_add(keep)
            .and_then(|end| base.get(cursor..end))
            .ok_or(PatchError::OutOfRange(base.len()))?;
        grow(&mut out, kept)?;
        cursor = cursor
            .checked_add(keep)
            .and_then(|c| c.checked_add(drop))
            .filter(|c| *c <= base.len())
            .ok_or(PatchError::OutOfRange(base.len()))?;
        let added = at
            .checked_add(add)
            .and_then(|end| patch.get(at..end))
            .ok_or(PatchError::Malformed("an added run is cut short"))?;
        grow(&mut out, added)?;
        at += add;
    }
    grow(&mut out, &base[cursor..])?;
    Ok(out)
}

/// Reads a LEB128 varint at `*at`.
fn varint(bytes: &[u8], at: &mut usize) -> Result<u64, PatchError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes
            .get(*at)
            .ok_or(PatchError::Malformed("an instruction is cut short"))?;
        *at += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(PatchError::Malformed("a varint runs past 64 bits"))
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// A patch being built: copies of the old bytes and ranges of the new ones, in order.
#[derive(Default)]
struct Ops(Vec<Op>);

enum Op {
    Copy { from: usize, len: usize },
    Insert(std::ops::Range<usize>),
}

impl Ops {
    fn copy(&mut self, from: usize, len: usize) {
        if len == 0 {
            return;
        }
        match self.0.last_mut() {
            Some(Op::Copy { from: f, len: l }) if *f + *l == from => *l += len,
            _ => self.0.push(Op::Copy { from, len }),
        }
    }

    fn insert(&mut self, range: std::ops::Range<usize>) {
        if range.is_empty() {
            return;
        }
        match self.0.last_mut() {
            Some(Op::Insert(r)) if r.end == range.start => r.end = range.end,
            _ => self.0.push(Op::Insert(range)),
        }
    }

    /// The instructions turning `base[b]` into `new[n]`.
    fn range(
        &mut self,
        base: &[u8],
        b: std::ops::Range<usize>,
        new: &[u8],
        n: std::ops::Range<usize>,
        depth: u32,
    ) {
        let (bs, ns) = (&base[b.clone()], &new[n.clone()]);
        let prefix = bs.iter().zip(ns).take_while(|(x, y)| x == y).count();
        let suffix = bs[prefix..]
            .iter()
            .rev()
            .zip(ns[prefix..].iter().rev())
            .take_while(|(x, y)| x == y)
            .count();
        self.copy(b.start, prefix);
        let (bm, nm) = (
            b.start + prefix..b.end - suffix,
            n.start + prefix..n.end - suffix,
        );
        match anchor(base, bm.clone(), new, nm.clone(), depth) {
            Some((at_b, at_n, len)) => {
                self.range(base, bm.start..at_b, new, nm.start..at_n, depth - 1);
                self.copy(at_b, len);
                self.range(base, at_b + len..bm.end, new, at_n + len..nm.end, depth - 1);
            }
            None => self.insert(nm),
        }
        self.copy(b.end - suffix, suffix);
    }

    /// The edit script: between two kept runs, what of the old state is dropped and what of
    /// the new one added; a kept run shorter than an edit's own bytes is dropped and added
    /// again instead.
    fn finish(self, base_len: usize, new: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        // The edit being built: kept bytes, then dropped bytes, then added (a range of new).
        let (mut keep, mut drop, mut add) = (0usize, 0usize, 0..0);
        let (mut cursor, mut at) = (0usize, 0usize);
        let emit = |out: &mut Vec<u8>, keep: usize, drop: usize, add: &std::ops::Range<usize>| {
            put_varint(out, keep as u64);
            put_varint(out, drop as u64);
            put_varint(out, add.len() as u64);
            out.extend_from_slice(&new[add.clone()]);
        };
        for op in self.0 {
            match op {
                Op::Copy { from, len } => {
                    let changed = from > cursor || !add.is_empty();
                    if changed && len <= 3 {
                        // Cheaper added again than kept between two changes.
                        drop += from - cursor + len;
                        if add.is_empty() {
                            add = at..at;
                        }
                        add.end = at + len;
                    } else {
                        if changed {
                            emit(&mut out, keep, drop + from - cursor, &add);
                            (keep, drop, add) = (0, 0, 0..0);
                        }
                        keep += len;
                    }
                    cursor = from + len;
                    at += len;
                }
                Op::Insert(range) => {
                    debug_assert_eq!(range.start, at);
                    if add.is_empty() {
                        add = range.start..range.start;
                    }
                    add.end = range.end;
                    at = range.end;
                }
            }
        }
        if base_len > cursor || !add.is_empty() {
            emit(&mut out, keep, drop + base_len - cursor, &add);
        }
        out
    }
}

/// A run `new[nm]` and `base[bm]` share, found from a window of the new bytes (tried at the
/// middle, then at a quarter and three quarters) and widened both ways: (where in base, where
/// in new, length).
fn anchor(
    base: &[u8],
    bm: std::ops::Range<usize>,
    new: &[u8],
    nm: std::ops::Range<usize>,
    depth: u32,
) -> Option<(usize, usize, usize)> {
    if depth == 0 || bm.len() < WINDOW || nm.len() < WINDOW {
        return None;
    }
    let span = nm.len() - WINDOW;
    for probe in [span / 2, span / 4, span - span / 4] {
        let at_n = nm.start + probe;
        let Some(found) = memchr::memmem::find(&base[bm.clone()], &new[at_n..at_n + WINDOW]) else {
            continue;
        };
        let (mut at_b, mut at_n, mut len) = (bm.start + found, at_n, WINDOW);
        while at_b > bm.start && at_n > nm.start && base[at_b - 1] == new[at_n - 1] {
            at_b -= 1;
            at_n -= 1;
            len += 1;
        }
        while at_b + len < bm.end && at_n + len < nm.end && base[at_b + len] == new[at_n + len] {
            len += 1;
        }
        return Some((at_b, at_n, len));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_change_in_two_places_of_a_large_state_costs_about_what_changed() {
        let base: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let mut new = base.clone();
        new[10] ^= 1;
        new.splice(300_000..300_000, b"a new element, twenty".iter().copied());
        let patch = diff(&base, &new);
        assert!(patch.len() < 60, "{} bytes", patch.len());
        assert_eq!(apply(&base, &patch, usize::MAX), Ok(new));
    }

    #[test]
    fn a_patch_that_does_not_fit_its_base_or_bound_is_refused() {
        let base = b"0123456789abcdefghijklmnopqrstuvwxyz".to_vec();
        let mut new = base.clone();
        new.extend_from_slice(b"!");
        let patch = diff(&base, &new);
        assert_eq!(apply(&base, &patch, usize::MAX), Ok(new.clone()));
        assert_eq!(
            apply(&base[..10], &patch, usize::MAX),
            Err(PatchError::OutOfRange(10))
        );
        assert_eq!(apply(&base, &patch, 20), Err(PatchError::TooLarge(20)));
        assert!(apply(&base, &patch[..patch.len() - 1], usize::MAX).is_err());
        assert!(apply(&base, &[0xff; 11], usize::MAX).is_err());
    }

    proptest! {
        #[test]
        fn a_patch_gives_back_the_new_state(
            base in proptest::collection::vec(0u8..4, 0..400),
            edits in proptest::collection::vec((0usize..400, 0usize..8, proptest::collection::vec(any::<u8>(), 0..12)), 0..6),
        ) {
            let mut new = base.clone();
            for (at, cut, insert) in edits {
                let at = at.min(new.len());
                let cut = cut.min(new.len() - at);
                new.splice(at..at + cut, insert);
            }
            let patch = diff(&base, &new);
            prop_assert_eq!(apply(&base, &patch, usize::MAX), Ok(new));
        }
    }
}
