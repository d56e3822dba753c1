//! The embedded engine through C: a local engine on a directory, or a node's engine that
//! replicates by itself (its configuration file names its identity, peers and certificates),
//! typed writes that return causal tokens, and typed reads.

use crate::args::{bytes, put_buffer, put_out, text};
use crate::buffer::MeridianBuffer;
use crate::handles::Registry;
use crate::status::{guard, Failure, MeridianStatus};
use crate::token::{maybe_token_out, token_of, MeridianToken};
use meridian::{CausalToken, Config, Engine, Op, VersionVector};
use meridian_config::node_config::NodeConfig;
use meridian_runtime::BackgroundRuntime;
use std::ffi::c_char;
use std::path::Path;
use std::time::Duration;

/// An embedded engine (opaque): safe to use from several threads at once.
pub struct MeridianEngine {
    _private: [u8; 0],
}

/// An engine, and the runtime that replicates it when it was opened from a node
/// configuration (stopped when the last user of the handle lets go of it).
pub(crate) struct EngineHandle {
    engine: Engine,
    _runtime: Option<BackgroundRuntime>,
}

static ENGINES: Registry<EngineHandle> = Registry::new("engine");

/// The engine behind a handle, held for one call: `meridian_engine_close` waits until every
/// call holding it has returned.
pub(crate) struct InUse(std::sync::Arc<EngineHandle>);

impl std::ops::Deref for InUse {
    type Target = Engine;
    fn deref(&self) -> &Engine {
        &self.0.engine
    }
}

/// The engine behind a handle, for the length of a call.
pub(crate) fn engine(handle: *const MeridianEngine) -> Result<InUse, Failure> {
    Ok(InUse(ENGINES.get(handle as usize)?))
}

/// Whether the engine handle `id` is still open (scans of a closed engine answer
/// `MERIDIAN_CLOSED`).
pub(crate) fn is_open(id: usize) -> bool {
    ENGINES.get(id).is_ok()
}

/// Longest `meridian_engine_close` waits for the calls in flight on its handle (a token wait
/// is bounded by its own timeout): then it answers `MERIDIAN_UNAVAILABLE`, the handle closed
/// to new calls, and the engine closes when the last call returns.
const CLOSE_WAIT: Duration = Duration::from_secs(60);

/// `bytes` for a value, element, field or operand of a call on the engine behind `handle`: a
/// length over its configured `value_bytes_max` is `MERIDIAN_TOO_LARGE` before a byte is read.
///
/// # Safety
/// As `bytes`.
pub(crate) unsafe fn value_arg<'a>(
    handle: *const MeridianEngine,
    ptr: *const u8,
    len: usize,
    what: &str,
) -> Result<&'a [u8], Failure> {
    let max = engine(handle).map_or(crate::args::VALUE_LEN_MAX, |e| e.config().value_bytes_max);
    unsafe { bytes(ptr, len, max, what) }
}

/// Applies `op` to the key `[key, key + key_len)` and hands out its token when `token_out`
/// is not null.
///
/// # Safety
/// As the write functions' pointers.
pub(crate) unsafe fn apply(
    handle: *const MeridianEngine,
    key: *const u8,
    key_len: usize,
    op: meridian::Op,
    token_out: *mut *mut MeridianToken,
) -> Result<(), Failure> {
    let e = engine(handle)?;
    let key = unsafe { bytes(key, key_len, crate::args::KEY_LEN_MAX, "key") }?;
    let token = e.apply(key, op)?;
    unsafe { maybe_token_out(token_out, token) }
}

/// Opens (or creates) a local engine on directory `dir`: no replication. Blocks while
/// RocksDB opens.
///
/// # Safety
/// `dir` must be a NUL-terminated string; `out` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn meridian_engine_open(
    dir: *const c_char,
    out: *mut *mut MeridianEngine,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(out) };
    guard(move || {
        let dir = unsafe { text(dir, "dir") }?;
        if out.is_null() {
            return Err(Failure::invalid("out: null out-pointer"));
        }
        let engine = Engine::open(Path::new(dir), Config::default())?;
        let id = ENGINES.insert(EngineHandle {
            engine,
            _runtime: None,
        });
        unsafe { put_out(out, id as *mut MeridianEngine, "out") }
    })
}

/// Opens the engine a node configuration (`meridian node --config` TOML) describes and starts
/// replicating it with the configured peers over QUIC with mutual TLS, on threads of its own,
/// until `meridian_engine_close`. Blocks while RocksDB opens and the endpoint binds.
///
/// # Safety
/// `config_path` must be a NUL-terminated string; `out` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn meridian_engine_open_node(
    config_path: *const c_char,
    out: *mut *mut MeridianEngine,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(out) };
    guard(move || {
        let path = unsafe { text(config_path, "config_path") }?;
        if out.is_null() {
            return Err(Failure::invalid("out: null out-pointer"));
        }
        let config =
            NodeConfig::load(Path::new(path)).map_err(|e| Failure::invalid(e.to_string()))?;
        let engine = Engine::open(&config.data_dir, config.engine_config())?;
        let runtime = BackgroundRuntime::start(engine.clone(), config.runtime()).map_err(|e| {
            Failure::new(
                MeridianStatus::MeridianUnavailable,
                format!("replication: {e}"),
            )
        })?;
        let id = ENGINES.insert(EngineHandle {
            engine,
            _runtime: Some(runtime),
        });
        unsafe { put_out(out, id as *mut MeridianEngine, "out") }
    })
}

/// Closes an engine (null is fine): new calls on the handle are refused at once
/// (`MERIDIAN_CLOSED`), the calls in flight on other threads are waited for (up to 60 s:
/// then `MERIDIAN_UNAVAILABLE`, and the engine closes when the last returns), replication
/// stops, memtables are flushed; the directory can be opened again when it returns OK. Scans
/// and feeds of a closed engine answer `MERIDIAN_CLOSED`.
#[no_mangle]
pub extern "C" fn meridian_engine_close(engine: *mut MeridianEngine) -> MeridianStatus {
    guard(move || {
        if engine.is_null() {
            return Ok(());
        }
        let mut handle = ENGINES
            .remove(engine as usize)
            .ok_or_else(|| Failure::new(MeridianStatus::MeridianClosed, "engine already closed"))?;
        // Its feeds let go of the engine (a `meridian_feed_next` in flight returns within
        // 100 ms), so that the directory can be opened again once this returns.
        crate::feed::engine_closed(engine as usize);
        // New calls are refused now; the ones in flight hold the handle until they return.
        let started = std::time::Instant::now();
        let handle = loop {
            match std::sync::Arc::try_unwrap(handle) {
                Ok(handle) => break handle,
                Err(shared) if started.elapsed() < CLOSE_WAIT => {
                    handle = shared;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => {
                    return Err(Failure::new(
                        MeridianStatus::MeridianUnavailable,
                        format!("calls on this engine still run after {CLOSE_WAIT:?}: it closes when the last returns"),
                    ))
                }
            }
        };
        let EngineHandle { engine, _runtime } = handle;
        drop(_runtime);
        engine
            .flush()
            .map_err(|e| Failure::new(MeridianStatus::MeridianStorage, e.to_string()))?;
        Ok(())
    })
}

/// The write-back context of a register read (`MeridianBuffer` bytes from
/// `meridian_register_get`), or none.
pub(crate) unsafe fn context(
    data: *const u8,
    len: usize,
) -> Result<Option<VersionVector>, Failure> {
    if len == 0 {
        return Ok(None);
    }
    let raw = unsafe { bytes(data, len, crate::args::VALUE_LEN_MAX, "context") }?;
    let token =
        CausalToken::from_bytes(raw).map_err(|e| Failure::invalid(format!("context: {e}")))?;
    Ok(Some(token.0))
}

/// Multi-value register write. With a `context` (from `meridian_register_get`), it
/// supersedes exactly the siblings that read saw; without (`context_len` 0), every sibling
/// this replica holds. `token_out` (may be null) receives the write's token. Blocks for the
/// local commit.
///
/// # Safety
/// Pointers with a length must point at that many readable bytes; `token_out`, when not
/// null, must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn meridian_register_put(
    engine: *const MeridianEngine,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    context_data: *const u8,
    context_len: usize,
    token_out: *mut *mut MeridianToken,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(token_out) };
    guard(move || {
        let value =
            unsafe { crate::engine::value_arg(engine, value, value_len, "value") }?.to_vec();
        let context = unsafe { context(context_data, context_len) }?;
        unsafe { apply(engine, key, key_len, Op::Put { value, context }, token_out) }
    })
}

/// Last-writer-wins write. `token_out` may be null. Blocks for the local commit.
///
/// # Safety
/// As `meridian_register_put`.
#[no_mangle]
pub unsafe extern "C" fn meridian_lww_set(
    engine: *const MeridianEngine,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    token_out: *mut *mut MeridianToken,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(token_out) };
    guard(move || {
        let value =
            unsafe { crate::engine::value_arg(engine, value, value_len, "value") }?.to_vec();
        unsafe { apply(engine, key, key_len, Op::LwwSet { value }, token_out) }
    })
}

/// Adds `delta` to a counter (negative to subtract). `token_out` may be null. Blocks for
/// the local commit.
///
/// # Safety
/// As `meridian_register_put`.
#[no_mangle]
pub unsafe extern "C" fn meridian_counter_add(
    engine: *const MeridianEngine,
    key: *const u8,
    key_len: usize,
    delta: i64,
    token_out: *mut *mut MeridianToken,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(token_out) };
    guard(move || unsafe { apply(engine, key, key_len, Op::CounterAdd { delta }, token_out) })
}

/// Deletes a key (a causal tombstone of everything this replica sees). `token_out` may be
/// null. Blocks for the local commit.
///
/// # Safety
/// As `meridian_register_put`.
#[no_mangle]
pub unsafe extern "C" fn meridian_delete(
    engine: *const MeridianEngine,
    key: *const u8,
    key_len: usize,
    token_out: *mut *mut MeridianToken,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(token_out) };
    guard(move || unsafe { apply(engine, key, key_len, Op::Delete, token_out) })
}

/// The value of a last-writer-wins key into `out` (free it with `meridian_buffer_free`);
/// `MERIDIAN_NOT_FOUND` when the key holds none.
///
/// # Safety
/// `key` must point at `key_len` readable bytes; `out` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn meridian_lww_get(
    engine: *const MeridianEngine,
    key: *const u8,
    key_len: usize,
    out: *mut MeridianBuffer,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(out) };
    guard(move || {
        let e = self::engine(engine)?;
        let key = unsafe { bytes(key, key_len, crate::args::KEY_LEN_MAX, "key") }?;
        if out.is_null() {
            return Err(Failure::invalid("out: null out-pointer"));
        }
        let value = e.get_lww(key)?.ok_or_else(not_found)?;
        unsafe { put_buffer(out, value.value, "out") }
    })
}

/// Keys a `meridian_lww_get_many` call reads at most.
pub const MERIDIAN_GET_MANY_MAX: usize = 10_000;

/// Bytes of values a `meridian_lww_get_many` call hands out at most (`MERIDIAN_TOO_LARGE`
/// beyond: ask for fewer keys).
const GET_MANY_BYTES_MAX: usize = meridian::limits::CLIENT_FRAME_BYTES_MAX;

/// The last-writer-wins values of many keys in one call (where one call per key would cost
/// more than the read): `keys` holds them packed, each preceded by its length as 8
/// little-endian bytes (at most `MERIDIAN_GET_MANY_MAX`); `out` receives, per key in order, one
/// byte (1: a value follows, 0: the key holds none, or a value of another type) and, for a value, its length as 8
/// little-endian bytes and its bytes; at most 32 MiB of them (`MERIDIAN_TOO_LARGE` beyond).
/// Free `out` with `meridian_buffer_free`.
///
/// # Safety
/// `keys` must point at `keys_len` readable bytes; `out` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn meridian_lww_get_many(
    engine: *const MeridianEngine,
    keys: *const u8,
    keys_len: usize,
    out: *mut MeridianBuffer,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(out) };
    guard(move || {
        if out.is_null() {
            return Err(Failure::invalid("out: null out-pointer"));
        }
        let e = self::engine(engine)?;
        let max = MERIDIAN_GET_MANY_MAX * (crate::args::KEY_LEN_MAX + 8);
        let packed = unsafe { bytes(keys, keys_len, max, "keys") }?;
        let keys = crate::nested::unpack_fields(packed, "keys")?;
        if keys.len() > MERIDIAN_GET_MANY_MAX {
            return Err(Failure::new(
                MeridianStatus::MeridianTooLarge,
                format!("keys: {} keys, at most {MERIDIAN_GET_MANY_MAX}", keys.len()),
            ));
        }
        let mut values = Vec::with_capacity(keys.len() * 16);
        for key in keys {
            match e.get_lww(key) {
                Ok(Some(v)) => {
                    values.push(1);
                    values.extend_from_slice(&(v.value.len() as u64).to_le_bytes());
                    values.extend_from_slice(&v.value);
                    if values.len() > GET_MANY_BYTES_MAX {
                        return Err(Failure::new(
                            MeridianStatus::MeridianTooLarge,
                            format!("the values come to more than {GET_MANY_BYTES_MAX} bytes: ask for fewer keys"),
                        ));
                    }
                }
                Ok(None) | Err(meridian::Error::WrongType { .. }) => values.push(0),
                Err(e) => return Err(e.into()),
            }
        }
        unsafe { put_buffer(out, values, "out") }
    })
}

/// The value of a counter into `out`; `MERIDIAN_NOT_FOUND` when the key holds none.
///
/// # Safety
/// `key` must point at `key_len` readable bytes; `out` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn meridian_counter_get(
    engine: *const MeridianEngine,
    key: *const u8,
    key_len: usize,
    out: *mut i64,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(out) };
    guard(move || {
        let e = self::engine(engine)?;
        let key = unsafe { bytes(key, key_len, crate::args::KEY_LEN_MAX, "key") }?;
        let value = e.get_counter(key)?.ok_or_else(not_found)?;
        unsafe { put_out(out, value, "out") }
    })
}

/// The siblings of a register: `values_out` receives them concatenated, each preceded by its
/// length as 8 little-endian bytes; `context_out` the read's write-back context (pass it to
/// `meridian_register_put` to supersede exactly these siblings). Free both with
/// `meridian_buffer_free`. `MERIDIAN_NOT_FOUND` when the key holds no register value.
///
/// # Safety
/// `key` must point at `key_len` readable bytes; the out-pointers must be valid for writes.
#[no_mangle]
pub unsafe extern "C" fn meridian_register_get(
    engine: *const MeridianEngine,
    key: *const u8,
    key_len: usize,
    values_out: *mut MeridianBuffer,
    context_out: *mut MeridianBuffer,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(values_out) };
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(context_out) };
    guard(move || {
        let e = self::engine(engine)?;
        let key = unsafe { bytes(key, key_len, crate::args::KEY_LEN_MAX, "key") }?;
        if values_out.is_null() || context_out.is_null() {
            return Err(Failure::invalid(
                "values_out, context_out: null out-pointer",
            ));
        }
        let siblings = e.get(key)?.ok_or_else(not_found)?;
        let packed = pack(&siblings.values);
        let context = CausalToken(siblings.context).to_bytes();
        unsafe {
            put_out(values_out, MeridianBuffer::from_vec(packed), "values_out")?;
            put_out(
                context_out,
                MeridianBuffer::from_vec(context),
                "context_out",
            )
        }
    })
}

/// Waits up to `timeout_ms` until this replica has applied every write `token` names (a
/// session's writes made in another region); `covered_out` receives 1 if it has, 0 if the
/// wait ended first. Blocks.
///
/// # Safety
/// `covered_out` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn meridian_wait_covers(
    engine: *const MeridianEngine,
    token: *const MeridianToken,
    timeout_ms: u64,
    covered_out: *mut i32,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(covered_out) };
    guard(move || {
        let e = self::engine(engine)?;
        let t = token_of(token)?;
        if covered_out.is_null() {
            return Err(Failure::invalid("covered_out: null out-pointer"));
        }
        let covered = e.wait_covers(&t, Duration::from_millis(timeout_ms));
        unsafe { put_out(covered_out, i32::from(covered), "covered_out") }
    })
}

/// Values packed one after the other, each preceded by its length as 8 little-endian bytes.
pub(crate) fn pack(values: &[Vec<u8>]) -> Vec<u8> {
    let mut packed = Vec::with_capacity(values.iter().map(|v| v.len() + 8).sum());
    for v in values {
        packed.extend_from_slice(&(v.len() as u64).to_le_bytes());
        packed.extend_from_slice(v);
    }
    packed
}

/// `MERIDIAN_NOT_FOUND`.
pub(crate) fn not_found() -> Failure {
    Failure::new(
        MeridianStatus::MeridianNotFound,
        "the key holds no such value",
    )
}
