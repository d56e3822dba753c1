//! Causal tokens: what a session wrote or read, carried to another region (read-your-writes
//! after a failover). Tokens from C are claims: a region waits for what it names, and a token
//! naming writes that never happened simply times out.

use crate::args::{bytes, put_buffer, put_out};
use crate::buffer::MeridianBuffer;
use crate::handles::Registry;
use crate::status::{guard, Failure, MeridianStatus};
use meridian::CausalToken;
use std::sync::Mutex;

/// A causal token (opaque).
pub struct MeridianToken {
    _private: [u8; 0],
}

/// Live tokens (mutable: `meridian_token_merge`).
pub(crate) static TOKENS: Registry<Mutex<CausalToken>> = Registry::new("token");

/// A handle for `token`.
pub(crate) fn new_token(token: CausalToken) -> *mut MeridianToken {
    TOKENS.insert(Mutex::new(token)) as *mut MeridianToken
}

/// The token behind a handle.
pub(crate) fn token_of(handle: *const MeridianToken) -> Result<CausalToken, Failure> {
    let token = TOKENS.get(handle as usize)?;
    let t = token.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(t)
}

/// Hands a new token handle out through `out` (checked first: no handle is made for a null
/// `out`).
///
/// # Safety
/// `out`, when not null, must be valid for a write.
unsafe fn put_token(out: *mut *mut MeridianToken, token: CausalToken) -> Result<(), Failure> {
    if out.is_null() {
        return Err(Failure::invalid("out: null out-pointer"));
    }
    unsafe { put_out(out, new_token(token), "out") }
}

/// Writes a new token handle through `out` when `out` is not null (an optional result).
///
/// # Safety
/// `out`, when not null, must be valid for a write.
pub(crate) unsafe fn maybe_token_out(
    out: *mut *mut MeridianToken,
    token: CausalToken,
) -> Result<(), Failure> {
    if out.is_null() {
        return Ok(());
    }
    // SAFETY: non-null and writable, as the caller vouches.
    unsafe { put_out(out, new_token(token), "token") }
}

/// An empty token (a session that has written and read nothing).
///
/// # Safety
/// `out` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn meridian_token_new(out: *mut *mut MeridianToken) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(out) };
    guard(move || unsafe { put_token(out, CausalToken::default()) })
}

/// Parses a token from bytes made by `meridian_token_bytes` (in any region or process).
///
/// # Safety
/// `data` must point at `len` readable bytes (or be anything when `len` is 0); `out` must be
/// valid for a write.
#[no_mangle]
pub unsafe extern "C" fn meridian_token_from_bytes(
    data: *const u8,
    len: usize,
    out: *mut *mut MeridianToken,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(out) };
    guard(move || {
        let raw = unsafe { bytes(data, len, crate::args::VALUE_LEN_MAX, "data") }?;
        let token = CausalToken::from_bytes(raw)
            .map_err(|e| Failure::invalid(format!("not a token: {e}")))?;
        unsafe { put_token(out, token) }
    })
}

/// The token's bytes, to store or send; free them with `meridian_buffer_free`.
///
/// # Safety
/// `out` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn meridian_token_bytes(
    token: *const MeridianToken,
    out: *mut MeridianBuffer,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(out) };
    guard(move || {
        let t = token_of(token)?;
        unsafe { put_buffer(out, t.to_bytes(), "out") }
    })
}

/// Adds everything `other` names to `token` (a session's token after another write or read).
#[no_mangle]
pub extern "C" fn meridian_token_merge(
    token: *mut MeridianToken,
    other: *const MeridianToken,
) -> MeridianStatus {
    guard(move || {
        let add = token_of(other)?;
        let target = TOKENS.get(token as usize)?;
        target.lock().unwrap_or_else(|e| e.into_inner()).merge(&add);
        Ok(())
    })
}

/// Frees a token handle (null is fine; a freed handle is refused with `MERIDIAN_CLOSED`).
#[no_mangle]
pub extern "C" fn meridian_token_free(token: *mut MeridianToken) -> MeridianStatus {
    guard(move || {
        if token.is_null() {
            return Ok(());
        }
        TOKENS
            .remove(token as usize)
            .map(drop)
            .ok_or_else(|| Failure::new(MeridianStatus::MeridianClosed, "token already freed"))
    })
}
