//! Scans through C: the keys of a prefix or a range, in order, as a cursor that yields each
//! key with the type of its value (read it with the typed getters), reading 256 rows at a
//! time: a scan of any size holds one page. Rows written after the cursor passed their place
//! are not seen; each key is seen at most once.

use crate::args::{bytes, put_buffer, put_out};
use crate::buffer::MeridianBuffer;
use crate::engine::{engine, MeridianEngine};
use crate::handles::Registry;
use crate::status::{guard, Failure, MeridianStatus};
use meridian::{Kind, Read};

/// The first key after every key starting with `prefix` (`None`: no end).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}
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

/// A scan in progress (opaque): a cursor that reads its rows a page at a time.
pub struct MeridianScan {
    _private: [u8; 0],
}

/// Rows a cursor reads from the engine at a time.
const PAGE_ROWS: usize = 256;

/// What a cursor reads: an engine handle (a scan of a closed engine hands out nothing more),
/// or a client handle (pages from the nearest region that answers).
#[derive(Clone, Copy)]
enum Source {
    Engine(usize),
    Client(usize),
}

/// A cursor over `[next, end)` (a client's: the keys of `prefix` after `next`): the rows of
/// the page read last not yet handed out, where the next page starts, how many rows it may
/// still hand out. Memory stays within a page whatever the scan's size.
struct Cursor {
    source: Source,
    page: VecDeque<(Vec<u8>, MeridianKind)>,
    next: Vec<u8>,
    end: Option<Vec<u8>>,
    prefix: Vec<u8>,
    started: bool,
    left: usize,
    done: bool,
}

impl Cursor {
    /// Reads the next page when the last one is handed out.
    fn fill(&mut self) -> Result<(), Failure> {
        if !self.page.is_empty() || self.done {
            return Ok(());
        }
        let want = PAGE_ROWS.min(self.left);
        if want == 0 {
            self.done = true;
            return Ok(());
        }
        let rows = match self.source {
            Source::Engine(id) => {
                let e = engine(id as *const MeridianEngine)?;
                let rows = e.scan_range(&self.next, self.end.as_deref(), want)?;
                self.done = rows.len() < want;
                rows
            }
            Source::Client(id) => {
                let after = self.started.then_some(self.next.as_slice());
                let (rows, more) = crate::client::scan_page(id, &self.prefix, after, want)?;
                self.done = !more || rows.is_empty();
                rows
            }
        };
        if let Some((last, _)) = rows.last() {
            self.next = last.clone();
            if matches!(self.source, Source::Engine(_)) {
                self.next.push(0);
            }
            self.started = true;
        }
        self.left = self.left.saturating_sub(rows.len());
        self.page = rows
            .into_iter()
            .map(|(k, r)| {
                let kind = kind_of(&r);
                (k, kind)
            })
            .collect();
        Ok(())
    }

    /// Whether its engine or client is still open.
    fn is_open(&self) -> bool {
        match self.source {
            Source::Engine(id) => crate::engine::is_open(id),
            Source::Client(id) => crate::client::is_open(id),
        }
    }
}

static SCANS: Registry<Mutex<Cursor>> = Registry::new("scan");

fn kind_of(read: &Read) -> MeridianKind {
    match read.values.first().map(|v| v.kind()) {
        Some(Kind::Lww) => MeridianKind::MeridianKindLww,
        Some(Kind::Counter) => MeridianKind::MeridianKindCounter,
        Some(Kind::Set) => MeridianKind::MeridianKindSet,
        Some(Kind::Map) => MeridianKind::MeridianKindMap,
        _ => MeridianKind::MeridianKindRegister,
    }
}

/// A cursor reading `source` from `start` (to `end`, or, for a client, the keys of
/// `prefix`), at most `limit` rows; its first page read now (so that a bad handle is refused
/// at once).
fn new_scan(
    source: Source,
    start: &[u8],
    end: Option<Vec<u8>>,
    prefix: &[u8],
    limit: usize,
) -> Result<*mut MeridianScan, Failure> {
    let mut cursor = Cursor {
        source,
        page: VecDeque::new(),
        next: start.to_vec(),
        end,
        prefix: prefix.to_vec(),
        started: false,
        left: limit,
        done: false,
    };
    cursor.fill()?;
    Ok(SCANS.insert(Mutex::new(cursor)) as *mut MeridianScan)
}

/// The keys starting with `prefix` (at most `limit`; `SIZE_MAX` for all), in order, as a
/// cursor. Blocks while it reads the first page (and `meridian_scan_next` for each next one).
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
        let prefix = unsafe { bytes(prefix, prefix_len, crate::args::KEY_LEN_MAX, "prefix") }?;
        let end = prefix_end(prefix);
        let source = Source::Engine(engine_handle as usize);
        let scan = new_scan(source, prefix, end, prefix, limit)?;
        unsafe { put_out(out, scan, "out") }
    })
}

/// The keys in `[start, end)` (`end_len` 0: to the last key), at most `limit`, in order, as
/// a cursor. Blocks while it reads the first page (and `meridian_scan_next` for each next
/// one).
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
        let start = unsafe { bytes(start, start_len, crate::args::KEY_LEN_MAX, "start") }?;
        let end = unsafe { bytes(end, end_len, crate::args::KEY_LEN_MAX, "end") }?;
        let end = (!end.is_empty()).then(|| end.to_vec());
        let source = Source::Engine(engine_handle as usize);
        let scan = new_scan(source, start, end, &[], limit)?;
        unsafe { put_out(out, scan, "out") }
    })
}

/// Client mode: the keys starting with `prefix` (at most `limit`; `SIZE_MAX` for all), in
/// order, as a cursor read from the nearest region that has applied the session's writes, 256
/// rows a page: each page reflects every write the client made or saw before it was read.
/// Across a failover the cursor goes on in the next region from the last key it handed out:
/// keys stay in order, each at most once. Blocks while it reads the first page (and
/// `meridian_scan_next` for each next one).
///
/// # Safety
/// `prefix` must point at `prefix_len` readable bytes; `out` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn meridian_client_scan_prefix(
    client: *const crate::client::MeridianClient,
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
        let prefix = unsafe { bytes(prefix, prefix_len, crate::args::KEY_LEN_MAX, "prefix") }?;
        let source = Source::Client(client as usize);
        let scan = new_scan(source, &[], None, prefix, limit)?;
        unsafe { put_out(out, scan, "out") }
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
        let cursor = SCANS.get(scan as usize)?;
        let mut cursor = cursor.lock().unwrap_or_else(|e| e.into_inner());
        if !cursor.is_open() {
            return Err(Failure::new(
                MeridianStatus::MeridianClosed,
                "the scan's engine or client is closed",
            ));
        }
        cursor.fill()?;
        let row = cursor.page.pop_front();
        drop(cursor);
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
