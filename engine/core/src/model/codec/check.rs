//! Checking an encoded record without building it: the same verdict as `decode_record`, and
//! the `StateFacts` of the state, in one pass over the bytes with nothing allocated for the
//! usual record. A receiver checks every state a peer sends this way and stores a key new to
//! it as the bytes it arrived as.
//!
//! The walk reads postcard's wire format directly (varints, length-prefixed sequences and
//! bytes, enum tags) following `RecordRepr`; `engine/core/tests/model_laws.rs` holds it to
//! `decode_record`'s verdict on valid, damaged and random bytes, and the tests below on
//! varint edge cases.

use super::{after_values, check_ctx, dot_at, envelope_body, expiries, CodecError, MAX_DEPTH};
use crate::model::{Dot, Hlc, Kind, OriginId, StateFacts};
use smallvec::SmallVec;

/// Checks a record envelope as `decode_record` would (`Ok` exactly when it decodes) and
/// returns the facts of the state it holds.
pub fn check_record(bytes: &[u8]) -> Result<StateFacts, CodecError> {
    let mut r = Reader(envelope_body(bytes)?);
    let mut facts = StateFacts::default();
    let mut kinds: SmallVec<[Kind; 2]> = SmallVec::new();
    let mut bottom = true;
    for _ in 0..r.len()? {
        let (kind, value_bottom) = check_value(&mut r, &mut facts, 0)?;
        if kinds.contains(&kind) {
            return Err(malformed("a kind appears twice"));
        }
        kinds.push(kind);
        bottom &= value_bottom;
    }
    if let Some(section) = after_values(bytes[0], r.0)? {
        let e = expiries::read(section)?;
        crate::model::expiry::for_each_dot(&e, &mut |d| facts.note_dot(d));
    }
    facts.bottom = bottom;
    Ok(facts)
}

fn malformed(why: &str) -> CodecError {
    CodecError::Malformed(why.into())
}

/// The kinds in `ValueRepr`'s (and `Kind`'s) variant order.
const KINDS: [Kind; 5] = [
    Kind::Register,
    Kind::Lww,
    Kind::Counter,
    Kind::Set,
    Kind::Map,
];

/// Checks one `ValueRepr`; returns its kind and whether it is bottom. `depth` counts the maps
/// around it, as `Nested` does when decoding.
fn check_value(
    r: &mut Reader<'_>,
    facts: &mut StateFacts,
    depth: usize,
) -> Result<(Kind, bool), CodecError> {
    let kind = r.kind()?;
    let bottom = match kind {
        Kind::Register | Kind::Lww => {
            let ctx = r.ctx()?;
            let n = r.len()?;
            let mut dots = DotCheck::default();
            for _ in 0..n {
                let (idx, back) = (r.u32()?, r.u64()?);
                if kind == Kind::Lww {
                    facts.note_marker(Hlc(r.u64()?));
                }
                r.bytes()?;
                dots.add(dot_at(&ctx, idx, back)?, facts);
            }
            dots.distinct()?;
            n == 0
        }
        Kind::Counter => {
            let ctx = r.ctx()?;
            let n = r.len()?;
            let mut dots = DotCheck::default();
            for _ in 0..n {
                let (idx, back) = (r.u32()?, r.u64()?);
                r.u64()?; // increments
                r.u64()?; // decrements
                dots.add(dot_at(&ctx, idx, back)?, facts);
            }
            dots.distinct()?;
            let mut replicas: SmallVec<[OriginId; 4]> = SmallVec::new();
            for _ in 0..r.len()? {
                replicas.push(OriginId(r.u64()?));
                r.u64()?; // increments
                r.u64()?; // decrements
            }
            if !distinct(&mut replicas) {
                return Err(malformed("counter base repeats a replica"));
            }
            n == 0
        }
        Kind::Set => {
            let ctx = r.ctx()?;
            let n = r.len()?;
            let mut names: SmallVec<[&[u8]; 8]> = SmallVec::new();
            for _ in 0..n {
                names.push(r.bytes()?);
                let mut dots = DotCheck::default();
                for _ in 0..r.len()? {
                    let (idx, back) = (r.u32()?, r.u64()?);
                    dots.add(dot_at(&ctx, idx, back)?, facts);
                }
                if dots.0.is_empty() {
                    return Err(malformed("set element empty or repeated"));
                }
                dots.distinct()?;
            }
            if !distinct(&mut names) {
                return Err(malformed("set element empty or repeated"));
            }
            n == 0
        }
        Kind::Map => {
            let depth = depth + 1;
            if depth > MAX_DEPTH {
                return Err(malformed("maps nested too deeply"));
            }
            let mut keys: SmallVec<[(&[u8], Kind); 8]> = SmallVec::new();
            let mut bottom = true;
            for _ in 0..r.len()? {
                let name = r.bytes()?;
                let kind = r.kind()?;
                let (found, field_bottom) = check_value(r, facts, depth)?;
                if found != kind {
                    return Err(malformed("map field kind mismatch"));
                }
                keys.push((name, kind));
                bottom &= field_bottom;
            }
            if !distinct(&mut keys) {
                return Err(malformed("map field repeated"));
            }
            bottom
        }
    };
    Ok((kind, bottom))
}

/// The dots of one store, checked for repeats once all are read.
#[derive(Default)]
struct DotCheck(SmallVec<[Dot; 4]>);

impl DotCheck {
    fn add(&mut self, dot: Dot, facts: &mut StateFacts) {
        facts.note_dot(dot);
        self.0.push(dot);
    }

    fn distinct(mut self) -> Result<(), CodecError> {
        if distinct(&mut self.0) {
            return Ok(());
        }
        let dot = self.0.windows(2).find(|w| w[0] == w[1]).map(|w| w[0]);
        Err(CodecError::Malformed(match dot {
            Some(dot) => format!("dot {dot} appears twice"),
            None => "a dot appears twice".into(),
        }))
    }
}

/// Whether the items are pairwise distinct (sorts them).
fn distinct<T: Ord>(items: &mut [T]) -> bool {
    items.sort_unstable();
    items.windows(2).all(|w| w[0] != w[1])
}

/// postcard's wire format, read as its deserializer reads it.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn eof() -> CodecError {
        malformed("the bytes end early")
    }

    /// A varint of at most `max_bytes` bytes whose last byte is at most `max_last`.
    fn varint(&mut self, max_bytes: usize, max_last: u8) -> Result<u64, CodecError> {
        let mut out = 0u64;
        for i in 0..max_bytes {
            let (&byte, rest) = self.0.split_first().ok_or_else(Self::eof)?;
            self.0 = rest;
            out |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                if i == max_bytes - 1 && byte > max_last {
                    break;
                }
                return Ok(out);
            }
        }
        Err(malformed("bad varint"))
    }

    fn u64(&mut self) -> Result<u64, CodecError> {
        self.varint(10, 0x01)
    }

    fn u32(&mut self) -> Result<u32, CodecError> {
        // Five bytes carry 35 bits; the last may use only the low four.
        self.varint(5, 0x0f).map(|v| v as u32)
    }

    /// A sequence length (a `usize` varint).
    fn len(&mut self) -> Result<u64, CodecError> {
        self.u64()
    }

    /// Length-prefixed bytes.
    fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let len = usize::try_from(self.len()?).map_err(|_| Self::eof())?;
        if len > self.0.len() {
            return Err(Self::eof());
        }
        let (bytes, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(bytes)
    }

    /// An enum tag naming a kind.
    fn kind(&mut self) -> Result<Kind, CodecError> {
        let tag = self.u32()?;
        KINDS
            .get(tag as usize)
            .copied()
            .ok_or_else(|| malformed("unknown kind"))
    }

    /// A context: (replica, counter) pairs, checked canonical.
    fn ctx(&mut self) -> Result<SmallVec<[(OriginId, u64); 4]>, CodecError> {
        let mut ctx = SmallVec::new();
        for _ in 0..self.len()? {
            ctx.push((OriginId(self.u64()?), self.u64()?));
        }
        check_ctx(&ctx)?;
        Ok(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::super::decode_record;
    use super::*;

    /// A register record written by hand: one context entry and one value, with the varints
    /// of the dot's index and of the context's counter given as raw bytes.
    fn register(idx: &[u8], counter: &[u8]) -> Vec<u8> {
        let mut b = vec![1, 1, 0, 1, 7];
        b.extend_from_slice(counter);
        b.extend_from_slice(&[1]);
        b.extend_from_slice(idx);
        b.extend_from_slice(&[0, 1, b'v']);
        b
    }

    #[test]
    fn varint_edges_get_the_decoders_verdict() {
        let ones = [0xff; 9];
        let cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (vec![0], vec![5]),
            (vec![0x80, 0], vec![5]), // overlong but in range
            (vec![0x80, 0x80, 0x80, 0x80, 0x00], vec![5]), // five bytes, last in range
            (vec![0x80, 0x80, 0x80, 0x80, 0x0f], vec![5]), // past the context: refused
            (vec![0x80, 0x80, 0x80, 0x80, 0x10], vec![5]), // five bytes, last too large
            (vec![0x80, 0x80, 0x80, 0x80, 0x80, 0x00], vec![5]), // six bytes
            (vec![0], [&ones[..], &[0x01]].concat()), // ten bytes, last allowed
            (vec![0], [&ones[..], &[0x02]].concat()), // ten bytes, last too large
            (vec![0], [&ones[..], &[0x80, 0x00]].concat()), // eleven bytes
            (vec![0], vec![0]),       // a zero counter
            (vec![0x80], vec![5]),    // the bytes end inside a varint
        ];
        for (idx, counter) in cases {
            let bytes = register(&idx, &counter);
            assert_eq!(
                check_record(&bytes).is_ok(),
                decode_record(&bytes).is_ok(),
                "{bytes:?}"
            );
        }
        assert!(check_record(&register(&[0], &[5])).is_ok());
        let mut long = register(&[0], &[5]);
        long.push(0);
        assert!(check_record(&long).is_err(), "trailing bytes");
        assert!(matches!(
            check_record(&[9, 0]),
            Err(CodecError::FutureVersion { found: 9, .. })
        ));
    }

    #[test]
    fn maps_nested_past_the_bound_are_refused_like_decoding() {
        // A map holding a map holding ... an empty register, `n` maps deep.
        fn nested(n: usize) -> Vec<u8> {
            let mut b = vec![1, 1];
            for _ in 0..n {
                b.extend_from_slice(&[4, 1, 1, b'f', 4]);
            }
            // The innermost field holds an empty register: its kind, tag, context, entries.
            b.truncate(b.len() - 1);
            b.extend_from_slice(&[0, 0, 0, 0]);
            b
        }
        for n in [1, MAX_DEPTH, MAX_DEPTH + 1] {
            let bytes = nested(n);
            assert_eq!(
                check_record(&bytes).is_ok(),
                decode_record(&bytes).is_ok(),
                "{n} deep"
            );
        }
        assert!(check_record(&nested(MAX_DEPTH)).is_ok());
        assert!(check_record(&nested(MAX_DEPTH + 1)).is_err());
    }
}
