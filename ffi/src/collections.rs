//! Sets (add-wins) and maps (fields of any type, here last-writer-wins values and counters)
//! through C.

use crate::args::{bytes, put_buffer, put_out};
use crate::buffer::MeridianBuffer;
use crate::engine::{apply, engine, not_found, pack, MeridianEngine};
use crate::status::{guard, Failure, MeridianStatus};
use crate::token::MeridianToken;
use meridian::{Op, ReadValue};

/// Adds an element to a set. `token_out` may be null. Blocks for the local commit.
///
/// # Safety
/// Pointers with a length must point at that many readable bytes; `token_out`, when not
/// null, must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn meridian_set_add(
    engine: *const MeridianEngine,
    key: *const u8,
    key_len: usize,
    elem: *const u8,
    elem_len: usize,
    token_out: *mut *mut MeridianToken,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(token_out) };
    guard(move || {
        let elems =
            vec![unsafe { crate::engine::value_arg(engine, elem, elem_len, "elem") }?.to_vec()];
        unsafe { apply(engine, key, key_len, Op::SetAdd { elems }, token_out) }
    })
}

/// Removes an element from a set (as far as this replica has seen it added). `token_out`
/// may be null. Blocks for the local commit.
///
/// # Safety
/// As `meridian_set_add`.
#[no_mangle]
pub unsafe extern "C" fn meridian_set_remove(
    engine: *const MeridianEngine,
    key: *const u8,
    key_len: usize,
    elem: *const u8,
    elem_len: usize,
    token_out: *mut *mut MeridianToken,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(token_out) };
    guard(move || {
        let elems =
            vec![unsafe { crate::engine::value_arg(engine, elem, elem_len, "elem") }?.to_vec()];
        unsafe { apply(engine, key, key_len, Op::SetRemove { elems }, token_out) }
    })
}

/// The members of a set, in order, packed into `out` (each preceded by its length as 8
/// little-endian bytes; free with `meridian_buffer_free`); `MERIDIAN_NOT_FOUND` when the key
/// holds no set.
///
/// # Safety
/// `key` must point at `key_len` readable bytes; `out` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn meridian_set_get(
    engine: *const MeridianEngine,
    key: *const u8,
    key_len: usize,
    out: *mut MeridianBuffer,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(out) };
    guard(move || {
        let e = engine_checked(engine, out.is_null())?;
        let key = unsafe { bytes(key, key_len, crate::args::KEY_LEN_MAX, "key") }?;
        let members = e.get_set(key)?.ok_or_else(not_found)?;
        unsafe { put_buffer(out, pack(&members), "out") }
    })
}

/// Sets a map field to a last-writer-wins value. `token_out` may be null. Blocks for the
/// local commit.
///
/// # Safety
/// As `meridian_set_add`.
#[no_mangle]
pub unsafe extern "C" fn meridian_map_lww_set(
    engine: *const MeridianEngine,
    key: *const u8,
    key_len: usize,
    field: *const u8,
    field_len: usize,
    value: *const u8,
    value_len: usize,
    token_out: *mut *mut MeridianToken,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(token_out) };
    guard(move || {
        let field =
            unsafe { crate::engine::value_arg(engine, field, field_len, "field") }?.to_vec();
        let value =
            unsafe { crate::engine::value_arg(engine, value, value_len, "value") }?.to_vec();
        let op = Op::MapUpdate {
            field,
            op: Box::new(Op::LwwSet { value }),
        };
        unsafe { apply(engine, key, key_len, op, token_out) }
    })
}

/// Adds `delta` to a map field's counter. `token_out` may be null. Blocks for the local
/// commit.
///
/// # Safety
/// As `meridian_set_add`.
#[no_mangle]
pub unsafe extern "C" fn meridian_map_counter_add(
    engine: *const MeridianEngine,
    key: *const u8,
    key_len: usize,
    field: *const u8,
    field_len: usize,
    delta: i64,
    token_out: *mut *mut MeridianToken,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(token_out) };
    guard(move || {
        let field =
            unsafe { crate::engine::value_arg(engine, field, field_len, "field") }?.to_vec();
        let op = Op::MapUpdate {
            field,
            op: Box::new(Op::CounterAdd { delta }),
        };
        unsafe { apply(engine, key, key_len, op, token_out) }
    })
}

/// Removes a map field (every type under that name). `token_out` may be null. Blocks for
/// the local commit.
///
/// # Safety
/// As `meridian_set_add`.
#[no_mangle]
pub unsafe extern "C" fn meridian_map_remove(
    engine: *const MeridianEngine,
    key: *const u8,
    key_len: usize,
    field: *const u8,
    field_len: usize,
    token_out: *mut *mut MeridianToken,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(token_out) };
    guard(move || {
        let field =
            unsafe { crate::engine::value_arg(engine, field, field_len, "field") }?.to_vec();
        unsafe { apply(engine, key, key_len, Op::MapRemove { field }, token_out) }
    })
}

/// A map field's last-writer-wins value into `out` (free with `meridian_buffer_free`);
/// `MERIDIAN_NOT_FOUND` when the map or the field (as that type) is absent.
///
/// # Safety
/// Pointers with a length must point at that many readable bytes; `out` must be valid for a
/// write.
#[no_mangle]
pub unsafe extern "C" fn meridian_map_get_lww(
    engine: *const MeridianEngine,
    key: *const u8,
    key_len: usize,
    field: *const u8,
    field_len: usize,
    out: *mut MeridianBuffer,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(out) };
    guard(move || {
        let e = engine_checked(engine, out.is_null())?;
        let key = unsafe { bytes(key, key_len, crate::args::KEY_LEN_MAX, "key") }?;
        let field = unsafe { crate::engine::value_arg(engine, field, field_len, "field") }?;
        let map = e.get_map(key)?.ok_or_else(not_found)?;
        let value = map
            .fields
            .get(field)
            .and_then(|values| {
                values.iter().find_map(|v| match v {
                    ReadValue::Lww(l) => Some(l.value.clone()),
                    _ => None,
                })
            })
            .ok_or_else(not_found)?;
        unsafe { put_buffer(out, value, "out") }
    })
}

/// A map field's counter into `out`; `MERIDIAN_NOT_FOUND` when the map or the field (as a
/// counter) is absent.
///
/// # Safety
/// Pointers with a length must point at that many readable bytes; `out` must be valid for a
/// write.
#[no_mangle]
pub unsafe extern "C" fn meridian_map_get_counter(
    engine: *const MeridianEngine,
    key: *const u8,
    key_len: usize,
    field: *const u8,
    field_len: usize,
    out: *mut i64,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(out) };
    guard(move || {
        let e = engine_checked(engine, out.is_null())?;
        let key = unsafe { bytes(key, key_len, crate::args::KEY_LEN_MAX, "key") }?;
        let field = unsafe { crate::engine::value_arg(engine, field, field_len, "field") }?;
        let map = e.get_map(key)?.ok_or_else(not_found)?;
        let value = map
            .fields
            .get(field)
            .and_then(|values| {
                values.iter().find_map(|v| match v {
                    ReadValue::Counter(n) => Some(*n),
                    _ => None,
                })
            })
            .ok_or_else(not_found)?;
        unsafe { put_out(out, value, "out") }
    })
}

/// The engine, once the out-pointer is known not to be null.
fn engine_checked(
    handle: *const MeridianEngine,
    out_is_null: bool,
) -> Result<crate::engine::InUse, Failure> {
    if out_is_null {
        return Err(Failure::invalid("out: null out-pointer"));
    }
    engine(handle)
}
