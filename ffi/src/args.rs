//! Arguments from C, checked: byte ranges, text, out-pointers.

use crate::status::Failure;
use std::ffi::{c_char, CStr};

/// Longest key, prefix or range bound accepted (`meridian::limits::KEY_BYTES_MAX`).
pub(crate) const KEY_LEN_MAX: usize = meridian::limits::KEY_BYTES_MAX;

/// Longest value, element, field, path or token accepted before anything is read (the largest
/// record a replica may be configured to take; an engine's own, smaller limit is checked
/// before the bytes are copied where the engine is known).
pub(crate) const VALUE_LEN_MAX: usize = meridian::limits::RECORD_BYTES_MAX;

/// The bytes `[ptr, ptr + len)`: `len` 0 gives an empty slice whatever `ptr` is; a null
/// `ptr` with a length is refused, and so is a length over `max` (`KEY_LEN_MAX` for keys:
/// an invalid argument; otherwise `MERIDIAN_TOO_LARGE`), before a byte is read.
///
/// # Safety
/// When `len > 0` and `ptr` is not null, `ptr` must point at `len` readable bytes that stay
/// valid and unchanged during the call.
pub(crate) unsafe fn bytes<'a>(
    ptr: *const u8,
    len: usize,
    max: usize,
    what: &str,
) -> Result<&'a [u8], Failure> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(Failure::invalid(format!(
            "{what}: null pointer with length {len}"
        )));
    }
    if len > max {
        let why = format!("{what}: {len} bytes, at most {max}");
        return Err(if max == KEY_LEN_MAX {
            Failure::invalid(why)
        } else {
            Failure::new(crate::status::MeridianStatus::MeridianTooLarge, why)
        });
    }
    // SAFETY: non-null, and the caller vouches for `len` readable bytes.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// A NUL-terminated UTF-8 string.
///
/// # Safety
/// `ptr`, when not null, must point at a NUL-terminated string valid during the call.
pub(crate) unsafe fn text<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, Failure> {
    if ptr.is_null() {
        return Err(Failure::invalid(format!("{what}: null pointer")));
    }
    // SAFETY: non-null and NUL-terminated, as the caller vouches.
    unsafe { CStr::from_ptr(ptr) }
        .to_str()
        .map_err(|_| Failure::invalid(format!("{what}: not UTF-8")))
}

/// Writes `value` through an out-pointer.
///
/// # Safety
/// `out`, when not null, must be valid for a write of `T`.
pub(crate) unsafe fn put_out<T>(out: *mut T, value: T, what: &str) -> Result<(), Failure> {
    if out.is_null() {
        return Err(Failure::invalid(format!("{what}: null out-pointer")));
    }
    // SAFETY: non-null and writable, as the caller vouches.
    unsafe { out.write(value) };
    Ok(())
}

/// Hands `bytes` out through `out` as a `MeridianBuffer` (checked before the bytes change
/// hands: nothing leaks when `out` is null).
///
/// # Safety
/// `out`, when not null, must be valid for a write.
pub(crate) unsafe fn put_buffer(
    out: *mut crate::buffer::MeridianBuffer,
    bytes: Vec<u8>,
    what: &str,
) -> Result<(), Failure> {
    if out.is_null() {
        return Err(Failure::invalid(format!("{what}: null out-pointer")));
    }
    // SAFETY: non-null and writable, as the caller vouches.
    unsafe { out.write(crate::buffer::MeridianBuffer::from_vec(bytes)) };
    Ok(())
}

/// What an out-parameter holds before a call fills it: null, zero, empty.
pub(crate) trait Cleared {
    /// The cleared value.
    fn cleared() -> Self;
}

impl<T> Cleared for *mut T {
    fn cleared() -> Self {
        std::ptr::null_mut()
    }
}

impl Cleared for i64 {
    fn cleared() -> Self {
        0
    }
}

impl Cleared for i32 {
    fn cleared() -> Self {
        0
    }
}

impl Cleared for u64 {
    fn cleared() -> Self {
        0
    }
}

impl Cleared for crate::buffer::MeridianBuffer {
    fn cleared() -> Self {
        crate::buffer::MeridianBuffer {
            data: std::ptr::null_mut(),
            len: 0,
        }
    }
}

impl Cleared for crate::scan::MeridianKind {
    fn cleared() -> Self {
        crate::scan::MeridianKind::MeridianKindRegister
    }
}

/// Clears an out-parameter on entry, so that whatever the call comes to, the caller's cleanup
/// never frees what it did not get (a null `out` is left to the call to refuse).
///
/// # Safety
/// `out`, when not null, must be valid for a write.
pub(crate) unsafe fn clear<T: Cleared>(out: *mut T) {
    if !out.is_null() {
        // SAFETY: non-null and writable, as the caller vouches.
        unsafe { out.write(T::cleared()) };
    }
}
