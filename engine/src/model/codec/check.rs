//! Checking an encoded record without building it: the same verdict as `decode_record`, and
//! the `StateFacts` of the state, with no map built and no value copied. A receiver checks
//! every state a peer sends this way and stores a key new to it as the bytes it arrived as.

use super::{check_ctx, dot_at, parse_envelope, CodecError, Field, ValueRepr};
use crate::model::{Dot, Hlc, Kind, ReplicaId, StateFacts};
use smallvec::SmallVec;

/// Checks a record envelope as `decode_record` would (`Ok` exactly when it decodes) and
/// returns the facts of the state it holds.
pub fn check_record(bytes: &[u8]) -> Result<StateFacts, CodecError> {
    let repr = parse_envelope(bytes)?;
    let mut facts = StateFacts::default();
    let mut kinds: SmallVec<[Kind; 2]> = SmallVec::new();
    let mut bottom = true;
    for value in &repr.values {
        let (kind, value_bottom) = check_value(value, &mut facts)?;
        if kinds.contains(&kind) {
            return Err(malformed("a kind appears twice"));
        }
        kinds.push(kind);
        bottom &= value_bottom;
    }
    facts.bottom = bottom;
    Ok(facts)
}

fn malformed(why: &str) -> CodecError {
    CodecError::Malformed(why.into())
}

/// Checks one value; returns its kind and whether it is bottom.
fn check_value(value: &ValueRepr<'_>, facts: &mut StateFacts) -> Result<(Kind, bool), CodecError> {
    Ok(match value {
        ValueRepr::Register { ctx, entries } => {
            check_ctx(ctx)?;
            let dots = entries.iter().map(|e| dot_at(ctx, e.idx, e.back));
            check_dots(dots, facts)?;
            (Kind::Register, entries.is_empty())
        }
        ValueRepr::Lww { ctx, entries } => {
            check_ctx(ctx)?;
            let dots = entries.iter().map(|e| dot_at(ctx, e.idx, e.back));
            check_dots(dots, facts)?;
            for e in entries {
                facts.note_marker(Hlc(e.marker));
            }
            (Kind::Lww, entries.is_empty())
        }
        ValueRepr::Counter { ctx, entries, base } => {
            check_ctx(ctx)?;
            let dots = entries
                .iter()
                .map(|(idx, back, ..)| dot_at(ctx, *idx, *back));
            check_dots(dots, facts)?;
            let mut replicas: SmallVec<[ReplicaId; 4]> = base.iter().map(|(r, ..)| *r).collect();
            if !distinct(&mut replicas) {
                return Err(malformed("counter base repeats a replica"));
            }
            (Kind::Counter, entries.is_empty())
        }
        ValueRepr::Set { ctx, elems } => {
            check_ctx(ctx)?;
            for e in elems {
                let dots = e.dots.iter().map(|(idx, back)| dot_at(ctx, *idx, *back));
                if check_dots(dots, facts)? == 0 {
                    return Err(malformed("set element empty or repeated"));
                }
            }
            let mut names: SmallVec<[&[u8]; 8]> = elems.iter().map(|e| &e.elem[..]).collect();
            if !distinct(&mut names) {
                return Err(malformed("set element empty or repeated"));
            }
            (Kind::Set, elems.is_empty())
        }
        ValueRepr::Map { fields } => {
            let mut bottom = true;
            for Field { kind, value, .. } in &fields.0 {
                let (found, field_bottom) = check_value(value, facts)?;
                if found != *kind {
                    return Err(malformed("map field kind mismatch"));
                }
                bottom &= field_bottom;
            }
            let mut keys: SmallVec<[(&[u8], Kind); 8]> =
                fields.0.iter().map(|f| (&f.name[..], f.kind)).collect();
            if !distinct(&mut keys) {
                return Err(malformed("map field repeated"));
            }
            (Kind::Map, bottom)
        }
    })
}

/// Checks that each dot resolves and none repeats, noting them in `facts`; returns how many.
fn check_dots(
    dots: impl Iterator<Item = Result<Dot, CodecError>>,
    facts: &mut StateFacts,
) -> Result<usize, CodecError> {
    let mut all: SmallVec<[Dot; 4]> = SmallVec::new();
    for dot in dots {
        let dot = dot?;
        facts.note_dot(dot);
        all.push(dot);
    }
    if !distinct(&mut all) {
        let dot = all.windows(2).find(|w| w[0] == w[1]).map(|w| w[0]);
        return Err(CodecError::Malformed(match dot {
            Some(dot) => format!("dot {dot} appears twice"),
            None => "a dot appears twice".into(),
        }));
    }
    Ok(all.len())
}

/// Whether the items are pairwise distinct (sorts them).
fn distinct<T: Ord>(items: &mut [T]) -> bool {
    items.sort_unstable();
    items.windows(2).all(|w| w[0] != w[1])
}
