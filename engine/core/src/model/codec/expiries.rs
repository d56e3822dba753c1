//! The expiry section of a record envelope (format 2): written after the values only when the
//! record has expiries, so a record without them keeps format 1, which older builds read.

use super::{check_ctx, CodecError};
use crate::model::expiry::{Expiries, ExpiryEntry};
use crate::model::{Dot, Hlc, OriginId, VersionVector};

/// Version byte of an envelope with an expiry section.
pub const EXPIRY_FORMAT: u8 = 2;

type Ctx = Vec<(OriginId, u64)>;

/// One entry: its dot, its time and what it covers.
type EntryRepr = (OriginId, u64, u64, Ctx);

/// Whether the record's expiries need writing (a format 1 envelope holds none).
pub fn present(e: &Expiries) -> bool {
    !e.ctx.is_empty() || !e.store.is_empty()
}

/// Appends the section.
pub fn write(e: &Expiries, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let ctx: Ctx = e.ctx.iter().collect();
    let entries: Vec<EntryRepr> = e
        .store
        .iter()
        .map(|(d, x)| (d.replica, d.counter, x.at.0, x.covers.iter().collect()))
        .collect();
    postcard::to_io(&(ctx, entries), out)
        .map(|_| ())
        .map_err(|err| CodecError::Malformed(err.to_string()))
}

/// Reads the section, which must be all of `bytes`, in canonical form.
pub fn read(bytes: &[u8]) -> Result<Expiries, CodecError> {
    let malformed = |why: &str| CodecError::Malformed(format!("expiries: {why}"));
    let ((ctx, entries), rest): ((Ctx, Vec<EntryRepr>), _) =
        postcard::take_from_bytes(bytes).map_err(|e| malformed(&e.to_string()))?;
    if !rest.is_empty() {
        return Err(super::trailing(rest.len()));
    }
    check_ctx(&ctx)?;
    let mut out = Expiries {
        ctx: VersionVector::from_entries(ctx),
        ..Expiries::default()
    };
    let mut last: Option<Dot> = None;
    for (replica, counter, at, covers) in entries {
        check_ctx(&covers)?;
        let dot = Dot::new(replica, counter);
        if counter == 0 || !out.ctx.contains(&dot) || last.is_some_and(|l| l >= dot) {
            return Err(malformed("entry dot outside the context or out of order"));
        }
        last = Some(dot);
        let entry = ExpiryEntry {
            at: Hlc(at),
            covers: VersionVector::from_entries(covers),
        };
        out.store.insert(dot, entry);
    }
    if !present(&out) {
        return Err(malformed("an empty section is written as format 1"));
    }
    Ok(out)
}
