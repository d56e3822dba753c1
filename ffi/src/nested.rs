//! Any value, nested maps included: a write at a path of map fields (`meridian_map_apply`),
//! and a read of a whole key as JSON (`meridian_read_json`).

use crate::args::{bytes, put_buffer};
use crate::buffer::MeridianBuffer;
use crate::engine::{apply, context, engine, not_found, MeridianEngine};
use crate::status::{guard, Failure, MeridianStatus};
use crate::token::MeridianToken;
use meridian::{Op, VersionVector};
use meridian_client::read_json::values_json;

/// The operation at the end of a field path (passed as an `int32_t` and checked).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MeridianOpKind {
    /// Last-writer-wins value (`operand`).
    MeridianOpLwwSet = 0,
    /// Counter increment (`delta`).
    MeridianOpCounterAdd = 1,
    /// Set insertion (`operand`).
    MeridianOpSetAdd = 2,
    /// Set removal (`operand`).
    MeridianOpSetRemove = 3,
    /// Register write (`operand`, with `context` from a read, or none).
    MeridianOpRegisterPut = 4,
    /// Removal of the last field of the path.
    MeridianOpRemoveField = 5,
}

/// The operation kind an integer crossing the ABI names (checked: a value outside
/// `MeridianOpKind` is an invalid argument).
fn op_kind(kind: i32) -> Result<MeridianOpKind, Failure> {
    use MeridianOpKind as K;
    [
        K::MeridianOpLwwSet,
        K::MeridianOpCounterAdd,
        K::MeridianOpSetAdd,
        K::MeridianOpSetRemove,
        K::MeridianOpRegisterPut,
        K::MeridianOpRemoveField,
    ]
    .into_iter()
    .find(|k| *k as i32 == kind)
    .ok_or_else(|| Failure::invalid(format!("kind: {kind} is no MeridianOpKind (0 to 5)")))
}

/// The items of a packed list (`what` names it in messages): each preceded by its length as
/// 8 little-endian bytes, borrowed from `packed`.
pub(crate) fn unpack_fields<'a>(packed: &'a [u8], what: &str) -> Result<Vec<&'a [u8]>, Failure> {
    let mut out = Vec::new();
    let mut rest = packed;
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<8>()
            .ok_or_else(|| Failure::invalid(format!("{what}: a length needs 8 bytes")))?;
        let len = usize::try_from(u64::from_le_bytes(*len))
            .ok()
            .filter(|l| *l <= tail.len())
            .ok_or_else(|| Failure::invalid(format!("{what}: an item is longer than the rest")))?;
        out.push(&tail[..len]);
        rest = &tail[len..];
    }
    Ok(out)
}

/// The fields of a packed path: each preceded by its length as 8 little-endian bytes (none
/// when `packed` is empty).
fn fields(packed: &[u8]) -> Result<Vec<Vec<u8>>, Failure> {
    Ok(unpack_fields(packed, "path")?
        .into_iter()
        .map(<[u8]>::to_vec)
        .collect())
}

/// The operation `kind` (with `operand`, `delta`, or the read context `context` gives) at the
/// end of the packed field `path` (each field preceded by its length as 8 little-endian
/// bytes); an empty path is the key itself, where `MERIDIAN_OP_REMOVE_FIELD` has no field to
/// remove. `context` is called for a register write only.
pub(crate) fn path_op(
    path: &[u8],
    kind: i32,
    operand: Vec<u8>,
    delta: i64,
    context: impl FnOnce() -> Result<Option<VersionVector>, Failure>,
) -> Result<Op, Failure> {
    let mut path = fields(path)?;
    let op = match op_kind(kind)? {
        MeridianOpKind::MeridianOpLwwSet => Op::LwwSet { value: operand },
        MeridianOpKind::MeridianOpCounterAdd => Op::CounterAdd { delta },
        MeridianOpKind::MeridianOpSetAdd => Op::SetAdd {
            elems: vec![operand],
        },
        MeridianOpKind::MeridianOpSetRemove => Op::SetRemove {
            elems: vec![operand],
        },
        MeridianOpKind::MeridianOpRegisterPut => Op::Put {
            value: operand,
            context: context()?,
        },
        MeridianOpKind::MeridianOpRemoveField => {
            let field = path.pop().ok_or_else(|| {
                Failure::invalid("path: MERIDIAN_OP_REMOVE_FIELD needs at least one field")
            })?;
            Op::MapRemove { field }
        }
    };
    Ok(path.into_iter().rev().fold(op, |op, field| Op::MapUpdate {
        field,
        op: Box::new(op),
    }))
}

/// Applies an operation to the value at a path of map fields under `key` (maps are created
/// along the way): `path` holds the fields, each preceded by its length as 8 little-endian
/// bytes (the format reads hand out); `kind` says what to do at its end with `operand`,
/// `delta` or `context`. `token_out` may be null. Blocks for the local commit.
///
/// # Safety
/// Pointers with a length must point at that many readable bytes; `token_out`, when not
/// null, must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn meridian_map_apply(
    engine_handle: *const MeridianEngine,
    key: *const u8,
    key_len: usize,
    path: *const u8,
    path_len: usize,
    kind: i32,
    operand: *const u8,
    operand_len: usize,
    delta: i64,
    context_data: *const u8,
    context_len: usize,
    token_out: *mut *mut MeridianToken,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(token_out) };
    guard(move || {
        let path = unsafe { bytes(path, path_len, crate::args::VALUE_LEN_MAX, "path") }?;
        if path.is_empty() {
            return Err(Failure::invalid("path: at least one field"));
        }
        let operand =
            unsafe { crate::engine::value_arg(engine_handle, operand, operand_len, "operand") }?
                .to_vec();
        let op = path_op(path, kind, operand, delta, || unsafe {
            context(context_data, context_len)
        })?;
        unsafe { apply(engine_handle, key, key_len, op, token_out) }
    })
}

/// Everything `key` holds, of any type and nesting, as JSON into `out` (free it with
/// `meridian_buffer_free`): a list with one object per type the key holds, `{"register":
/// [values...]}`, `{"lww": value}`, `{"counter": n}`, `{"set": [elements...]}`, `{"map": {field:
/// [values like these...]}}`; bytes are strings when they are UTF-8, else `{"hex": "..."}`
/// (field names: `"0x..."`). `MERIDIAN_NOT_FOUND` when absent.
///
/// # Safety
/// `key` must point at `key_len` readable bytes; `out` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn meridian_read_json(
    engine_handle: *const MeridianEngine,
    key: *const u8,
    key_len: usize,
    out: *mut MeridianBuffer,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(out) };
    guard(move || {
        if out.is_null() {
            return Err(Failure::invalid("out: null out-pointer"));
        }
        let e = engine(engine_handle)?;
        let key = unsafe { bytes(key, key_len, crate::args::KEY_LEN_MAX, "key") }?;
        let read = e.read(key)?.ok_or_else(not_found)?;
        unsafe { put_json(out, &read) }
    })
}

/// Hands out what a read holds as JSON (the format of `meridian_read_json`).
///
/// # Safety
/// `out`, when not null, must be valid for a write.
pub(crate) unsafe fn put_json(
    out: *mut MeridianBuffer,
    read: &meridian::Read,
) -> Result<(), Failure> {
    let json = serde_json::to_vec(&values_json(&read.values))
        .map_err(|e| Failure::new(MeridianStatus::MeridianInternal, e.to_string()))?;
    unsafe { put_buffer(out, json, "out") }
}
