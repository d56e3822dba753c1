//! Scans through C: the keys of a prefix or a range, in order, as an iterator handle that
//! yields each key with the type of its value (read it with the typed getters).

use crate::args::{bytes, put_buffer, put_out};
use crate::buffer::MeridianBuffer;
use crate::engine::{engine, MeridianEngine};
use crate::handles::Registry;
use crate::status::{guard, Failure, MeridianStatus};
use meridian::{Kind, Read};
use std::collections::VecDeque;
use std::sync::Mutex;

/// The type of a key's value.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MeridianKind {
    /// Multi-value register (`meridian_register_get`).
    MeridianKindRegister = 0,
    /// Last-writer-wins value (`meridian_lww_get`).
    MeridianKindLww = 1,
    /// Counter (`meridian_counter_get`).
    MeridianKindCounter = 2,
    /// Set (`meridian_set_get`).
    MeridianKindSet = 3,
    /// Map (`meridian_map_get_lww`, `meridian_map_get_counter`).
    MeridianKindMap = 4,
}

/// The rows of a scan not yet taken (opaque).
pub struct MeridianScan {
    _private: [u8; 0],
}

/// The rows a scan has not handed out yet, and the engine handle it reads (a scan of a
/// closed engine hands out nothing more).
struct Rows {
    engine: usize,
    rows: Mutex<VecDeque<(Vec<u8>, MeridianKind)>>,
}

static SCANS: Registry<Rows> = Registry::new("scan");

fn kind_of(read: &Read) -> MeridianKind {
    match read.values.first().map(|v| v.kind()) {
        Some(Kind::Lww) => MeridianKind::MeridianKindLww,
        Some(Kind::Counter) => MeridianKind::MeridianKindCounter,
        Some(Kind::Set) => MeridianKind::MeridianKindSet,
        Some(Kind::Map) => MeridianKind::MeridianKindMap,
        _ => MeridianKind::MeridianKindRegister,
    }
}

fn new_scan(engine: usize, rows: Vec<(Vec<u8>, Read)>) -> *mut MeridianScan {
    let rows: VecDeque<_> = rows
        .into_iter()
        .map(|(k, r)| {
            let kind = kind_of(&r);
            (k, kind)
        })
        .collect();
    SCANS.insert(Rows {
        engine,
        rows: Mutex::new(rows),
    }) as *mut MeridianScan
}

/// The keys starting with `prefix` (at most `limit`), in order, as a scan handle. Blocks
/// while it reads them.
///
/// # Safety
/// `prefix` must point at `prefix_len` readable bytes; `out` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn meridian_scan_prefix(
    engine_handle: *const MeridianEngine,
    prefix: *const u8,
    prefix_len: usize,
    limit: usize,
    out: *mut *mut MeridianScan,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(out) };
    guard(move || {
        if out.is_null() {
            return Err(Failure::invalid("out: null out-pointer"));
        }
        let e = engine(engine_handle)?;
        let prefix = unsafe { bytes(prefix, prefix_len, crate::args::KEY_LEN_MAX, "prefix") }?;
        let rows = e.scan_prefix(prefix, limit)?;
        unsafe { put_out(out, new_scan(engine_handle as usize, rows), "out") }
    })
}

/// The keys in `[start, end)` (`end_len` 0: to the last key), at most `limit`, in order, as
/// a scan handle. Blocks while it reads them.
///
/// # Safety
/// Pointers with a length must point at that many readable bytes; `out` must be valid for a
/// write.
#[no_mangle]
pub unsafe extern "C" fn meridian_scan_range(
    engine_handle: *const MeridianEngine,
    start: *const u8,
    start_len: usize,
    end: *const u8,
    end_len: usize,
    limit: usize,
    out: *mut *mut MeridianScan,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(out) };
    guard(move || {
        if out.is_null() {
            return Err(Failure::invalid("out: null out-pointer"));
        }
        let e = engine(engine_handle)?;
        let start = unsafe { bytes(start, start_len, crate::args::KEY_LEN_MAX, "start") }?;
        let end = unsafe { bytes(end, end_len, crate::args::KEY_LEN_MAX, "end") }?;
        let rows = e.scan_range(start, (!end.is_empty()).then_some(end), limit)?;
        unsafe { put_out(out, new_scan(engine_handle as usize, rows), "out") }
    })
}

/// The next row: its key into `key_out` (free with `meridian_buffer_free`) and its type
/// into `kind_out`; `MERIDIAN_NOT_FOUND` when the scan is done.
///
/// # Safety
/// The out-pointers must be valid for writes.
#[no_mangle]
pub unsafe extern "C" fn meridian_scan_next(
    scan: *mut MeridianScan,
    key_out: *mut MeridianBuffer,
    kind_out: *mut MeridianKind,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(key_out) };
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(kind_out) };
    guard(move || {
        if key_out.is_null() || kind_out.is_null() {
            return Err(Failure::invalid("key_out, kind_out: null out-pointer"));
        }
        let rows = SCANS.get(scan as usize)?;
        if !crate::engine::is_open(rows.engine) {
            return Err(Failure::new(
                MeridianStatus::MeridianClosed,
                "the scan's engine is closed",
            ));
        }
        let row = rows
            .rows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front();
        let (key, kind) = row.ok_or_else(|| {
            Failure::new(
                MeridianStatus::MeridianNotFound,
                "the scan has no more rows",
            )
        })?;
        unsafe {
            put_out(kind_out, kind, "kind_out")?;
            put_buffer(key_out, key, "key_out")
        }
    })
}

/// Frees a scan (null is fine; a freed scan is refused with `MERIDIAN_CLOSED`).
#[no_mangle]
pub extern "C" fn meridian_scan_free(scan: *mut MeridianScan) -> MeridianStatus {
    guard(move || {
        if scan.is_null() {
            return Ok(());
        }
        SCANS
            .remove(scan as usize)
            .map(drop)
            .ok_or_else(|| Failure::new(MeridianStatus::MeridianClosed, "scan already freed"))
    })
}
