//! Expiry (time to live) through C, embedded mode: a key's value stops being read once the
//! hybrid logical clock passes the time its writer set, in every region alike (a region reads
//! it at most until that time plus the clocks' skew bound). A write without a TTL keeps the
//! key's pending expiry; `meridian_persist` removes it; a write after expiry starts afresh (no
//! element of the expired value comes back, a counter counts from zero). A write with a TTL
//! is a batch holding the write and `meridian_batch_ttl` on the same key (`crate::batch`);
//! client mode has the same calls (`crate::client`).

use crate::args::{bytes, put_out};
use crate::engine::{apply, engine, not_found, MeridianEngine};
use crate::status::{guard, Failure, MeridianStatus};
use crate::token::MeridianToken;
use meridian::{Expiry, Op};

/// Largest `ttl_ms` and `unix_ms` an expiry takes (2^47 ms, about 4,459 years); a larger one
/// is `MERIDIAN_INVALID_ARGUMENT` (the clock holds 48 bits of milliseconds: a time beyond it
/// would not be kept).
pub const MERIDIAN_EXPIRY_MS_MAX: u64 = 140_737_488_355_328;

/// `ms` (named `what` in messages), checked against `MERIDIAN_EXPIRY_MS_MAX`.
fn expiry_ms(ms: u64, what: &str) -> Result<u64, Failure> {
    if ms > MERIDIAN_EXPIRY_MS_MAX {
        return Err(Failure::invalid(format!(
            "{what}: {ms} ms, at most {MERIDIAN_EXPIRY_MS_MAX} (MERIDIAN_EXPIRY_MS_MAX)"
        )));
    }
    Ok(ms)
}

/// The operation giving a key a time to live of `ttl_ms` from its write's HLC time.
pub(crate) fn ttl_op(ttl_ms: u64) -> Result<Op, Failure> {
    Ok(Op::Expire {
        expiry: Expiry::After(expiry_ms(ttl_ms, "ttl_ms")?),
    })
}

/// The operation making a key expire at wall time `unix_ms` (milliseconds since the epoch).
pub(crate) fn at_op(unix_ms: u64) -> Result<Op, Failure> {
    Ok(Op::Expire {
        expiry: Expiry::At(expiry_ms(unix_ms, "unix_ms")?),
    })
}

/// The operation removing a key's pending expiries.
pub(crate) fn persist_op() -> Op {
    Op::Expire {
        expiry: Expiry::Never,
    }
}

/// Gives a key a time to live: what it holds now (and what later writes without a TTL add)
/// stops being read `ttl_ms` milliseconds after this write's HLC time, in every region (at
/// most `MERIDIAN_EXPIRY_MS_MAX`; 0 expires it at once). On an absent key it changes
/// nothing. `token_out` may be null. Blocks for the local commit.
///
/// # Safety
/// `key` must point at `key_len` readable bytes; `token_out`, when not null, must be valid
/// for a write.
#[no_mangle]
pub unsafe extern "C" fn meridian_expire(
    engine: *const MeridianEngine,
    key: *const u8,
    key_len: usize,
    ttl_ms: u64,
    token_out: *mut *mut MeridianToken,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(token_out) };
    guard(move || {
        let op = ttl_op(ttl_ms)?;
        unsafe { apply(engine, key, key_len, op, token_out) }
    })
}

/// Makes a key expire at wall time `unix_ms` (milliseconds since the Unix epoch, as each
/// region's clock reads it, within the skew bound; at most `MERIDIAN_EXPIRY_MS_MAX`); a time
/// already past expires it at once. As `meridian_expire` otherwise. Blocks for the local
/// commit.
///
/// # Safety
/// As `meridian_expire`.
#[no_mangle]
pub unsafe extern "C" fn meridian_expire_at(
    engine: *const MeridianEngine,
    key: *const u8,
    key_len: usize,
    unix_ms: u64,
    token_out: *mut *mut MeridianToken,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(token_out) };
    guard(move || {
        let op = at_op(unix_ms)?;
        unsafe { apply(engine, key, key_len, op, token_out) }
    })
}

/// Removes a key's pending expiries (those this replica sees): it is kept until deleted or
/// given a TTL again. Stamped before an expiry's time, it wins wherever it arrives (within the
/// skew bound). `token_out` may be null. Blocks for the local commit.
///
/// # Safety
/// As `meridian_expire`.
#[no_mangle]
pub unsafe extern "C" fn meridian_persist(
    engine: *const MeridianEngine,
    key: *const u8,
    key_len: usize,
    token_out: *mut *mut MeridianToken,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(token_out) };
    guard(move || unsafe { apply(engine, key, key_len, persist_op(), token_out) })
}

/// When the value under a key stops being read (milliseconds since the Unix epoch) into
/// `unix_ms_out`; `MERIDIAN_NOT_FOUND` when the key holds nothing (or has expired) or has no
/// expiry.
///
/// # Safety
/// `key` must point at `key_len` readable bytes; `unix_ms_out` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn meridian_expires_at(
    engine: *const MeridianEngine,
    key: *const u8,
    key_len: usize,
    unix_ms_out: *mut u64,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(unix_ms_out) };
    guard(move || {
        if unix_ms_out.is_null() {
            return Err(Failure::invalid("unix_ms_out: null out-pointer"));
        }
        let e = self::engine(engine)?;
        let key = unsafe { bytes(key, key_len, crate::args::KEY_LEN_MAX, "key") }?;
        let at = e.expires_at(key)?.ok_or_else(not_found)?;
        unsafe { put_out(unix_ms_out, unix_ms(at), "unix_ms_out") }
    })
}

/// A wall time in milliseconds since the Unix epoch (0 before it, saturating).
fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{meridian_engine_close, meridian_engine_open, meridian_lww_get};
    use crate::MeridianBuffer;
    use std::ffi::CString;

    fn now_ms() -> u64 {
        unix_ms(std::time::SystemTime::now())
    }

    #[test]
    fn expiry_bounds_and_out_pointers_are_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = CString::new(dir.path().to_str().expect("utf-8")).expect("path");
        let mut e = std::ptr::null_mut();
        // SAFETY: valid pointers throughout; the engine is closed at the end.
        unsafe {
            assert_eq!(
                meridian_engine_open(path.as_ptr(), &mut e),
                MeridianStatus::MeridianOk
            );
            let mut token = std::ptr::null_mut();
            assert_eq!(
                crate::engine::meridian_lww_set(e, b"k".as_ptr(), 1, b"v".as_ptr(), 1, &mut token),
                MeridianStatus::MeridianOk
            );
            assert_eq!(
                crate::token::meridian_token_free(token),
                MeridianStatus::MeridianOk
            );
            let mut at = 77;
            assert_eq!(
                meridian_expires_at(e, b"k".as_ptr(), 1, &mut at),
                MeridianStatus::MeridianNotFound
            );
            assert_eq!(at, 0, "cleared on entry");
            for bad in [MERIDIAN_EXPIRY_MS_MAX + 1, u64::MAX] {
                assert_eq!(
                    meridian_expire(e, b"k".as_ptr(), 1, bad, std::ptr::null_mut()),
                    MeridianStatus::MeridianInvalidArgument
                );
                assert_eq!(
                    meridian_expire_at(e, b"k".as_ptr(), 1, bad, std::ptr::null_mut()),
                    MeridianStatus::MeridianInvalidArgument
                );
            }
            assert_eq!(
                meridian_expires_at(e, b"k".as_ptr(), 1, &mut at),
                MeridianStatus::MeridianNotFound,
                "nothing was written"
            );
            let before = now_ms();
            assert_eq!(
                meridian_expire(e, b"k".as_ptr(), 1, 60_000, std::ptr::null_mut()),
                MeridianStatus::MeridianOk
            );
            assert_eq!(
                meridian_expires_at(e, b"k".as_ptr(), 1, &mut at),
                MeridianStatus::MeridianOk
            );
            assert!(
                at >= before + 60_000 && at <= now_ms() + 60_000 + 1_000,
                "{at}"
            );
            assert_eq!(
                meridian_expires_at(e, b"k".as_ptr(), 1, std::ptr::null_mut()),
                MeridianStatus::MeridianInvalidArgument
            );
            assert_eq!(
                meridian_expires_at(std::ptr::null(), b"k".as_ptr(), 1, &mut at),
                MeridianStatus::MeridianInvalidArgument
            );
            assert_eq!(
                meridian_expire(e, std::ptr::null(), 1, 10, std::ptr::null_mut()),
                MeridianStatus::MeridianInvalidArgument
            );
            // The latest time taken is kept as given.
            assert_eq!(
                meridian_expire_at(
                    e,
                    b"k".as_ptr(),
                    1,
                    MERIDIAN_EXPIRY_MS_MAX,
                    std::ptr::null_mut()
                ),
                MeridianStatus::MeridianOk
            );
            assert_eq!(
                meridian_expires_at(e, b"k".as_ptr(), 1, &mut at),
                MeridianStatus::MeridianOk
            );
            assert_eq!(at, MERIDIAN_EXPIRY_MS_MAX);
            assert_eq!(
                meridian_persist(e, b"k".as_ptr(), 1, std::ptr::null_mut()),
                MeridianStatus::MeridianOk
            );
            assert_eq!(
                meridian_expires_at(e, b"k".as_ptr(), 1, &mut at),
                MeridianStatus::MeridianNotFound
            );
            // A time already past expires the key at once.
            assert_eq!(
                meridian_expire_at(e, b"k".as_ptr(), 1, 1, std::ptr::null_mut()),
                MeridianStatus::MeridianOk
            );
            let mut value = MeridianBuffer {
                data: std::ptr::null_mut(),
                len: 0,
            };
            assert_eq!(
                meridian_lww_get(e, b"k".as_ptr(), 1, &mut value),
                MeridianStatus::MeridianNotFound
            );
            assert_eq!(meridian_engine_close(e), MeridianStatus::MeridianOk);
        }
    }
}
