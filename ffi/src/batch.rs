//! Atomic batches through C: operations gathered in a batch handle, then committed under one
//! dot (all or nothing).

use crate::args::{bytes, put_out};
use crate::engine::{engine, MeridianEngine};
use crate::handles::Registry;
use crate::status::{guard, Failure, MeridianStatus};
use crate::token::{maybe_token_out, MeridianToken};
use meridian::{Batch, Op};
use std::sync::Mutex;

/// A batch of operations being gathered (opaque).
pub struct MeridianBatch {
    _private: [u8; 0],
}

/// The operations gathered, in the order they were added.
type Ops = Vec<(Vec<u8>, Op)>;

static BATCHES: Registry<Mutex<Ops>> = Registry::new("batch");

/// Adds `op` on `key` to the batch behind `handle`.
///
/// # Safety
/// `key` must point at `key_len` readable bytes.
unsafe fn add(
    handle: *mut MeridianBatch,
    key: *const u8,
    key_len: usize,
    op: Op,
) -> Result<(), Failure> {
    let key = unsafe { bytes(key, key_len, crate::args::KEY_LEN_MAX, "key") }?.to_vec();
    let batch = BATCHES.get(handle as usize)?;
    batch
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((key, op));
    Ok(())
}

/// An empty batch.
///
/// # Safety
/// `out` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn meridian_batch_new(out: *mut *mut MeridianBatch) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(out) };
    guard(move || {
        if out.is_null() {
            return Err(Failure::invalid("out: null out-pointer"));
        }
        let id = BATCHES.insert(Mutex::new(Vec::new()));
        unsafe { put_out(out, id as *mut MeridianBatch, "out") }
    })
}

/// Adds a last-writer-wins write to the batch.
///
/// # Safety
/// Pointers with a length must point at that many readable bytes.
#[no_mangle]
pub unsafe extern "C" fn meridian_batch_lww_set(
    batch: *mut MeridianBatch,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
) -> MeridianStatus {
    guard(move || {
        let value =
            unsafe { bytes(value, value_len, crate::args::VALUE_LEN_MAX, "value") }?.to_vec();
        unsafe { add(batch, key, key_len, Op::LwwSet { value }) }
    })
}

/// Adds a counter increment to the batch.
///
/// # Safety
/// `key` must point at `key_len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn meridian_batch_counter_add(
    batch: *mut MeridianBatch,
    key: *const u8,
    key_len: usize,
    delta: i64,
) -> MeridianStatus {
    guard(move || unsafe { add(batch, key, key_len, Op::CounterAdd { delta }) })
}

/// Adds a set insertion to the batch.
///
/// # Safety
/// Pointers with a length must point at that many readable bytes.
#[no_mangle]
pub unsafe extern "C" fn meridian_batch_set_add(
    batch: *mut MeridianBatch,
    key: *const u8,
    key_len: usize,
    elem: *const u8,
    elem_len: usize,
) -> MeridianStatus {
    guard(move || {
        let elems =
            vec![unsafe { bytes(elem, elem_len, crate::args::VALUE_LEN_MAX, "elem") }?.to_vec()];
        unsafe { add(batch, key, key_len, Op::SetAdd { elems }) }
    })
}

/// Adds a delete to the batch.
///
/// # Safety
/// `key` must point at `key_len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn meridian_batch_delete(
    batch: *mut MeridianBatch,
    key: *const u8,
    key_len: usize,
) -> MeridianStatus {
    guard(move || unsafe { add(batch, key, key_len, Op::Delete) })
}

/// Adds any operation to the batch, as `meridian_map_apply` describes it: `kind`
/// (`MeridianOpKind`) with `operand`, `delta` or `context` at the end of the packed field
/// `path`; with an empty `path` (`path_len` 0) the operation applies to the key itself (a
/// register write with its read context, a set removal...), where `MERIDIAN_OP_REMOVE_FIELD`
/// is refused.
///
/// # Safety
/// Pointers with a length must point at that many readable bytes.
#[no_mangle]
pub unsafe extern "C" fn meridian_batch_apply(
    batch: *mut MeridianBatch,
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
) -> MeridianStatus {
    guard(move || {
        let path = unsafe { bytes(path, path_len, crate::args::VALUE_LEN_MAX, "path") }?;
        let operand =
            unsafe { bytes(operand, operand_len, crate::args::VALUE_LEN_MAX, "operand") }?.to_vec();
        let op = crate::nested::path_op(path, kind, operand, delta, || unsafe {
            crate::engine::context(context_data, context_len)
        })?;
        unsafe { add(batch, key, key_len, op) }
    })
}

/// Adds a time to live to the batch: the key's value stops being read `ttl_ms` milliseconds
/// after the batch's HLC time (at most `MERIDIAN_EXPIRY_MS_MAX`), in every region. It covers
/// the batch's other writes to the key wherever it stands in the batch: a write with a TTL is
/// a batch holding both (as `meridian_expire` otherwise).
///
/// # Safety
/// `key` must point at `key_len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn meridian_batch_ttl(
    batch: *mut MeridianBatch,
    key: *const u8,
    key_len: usize,
    ttl_ms: u64,
) -> MeridianStatus {
    guard(move || {
        let op = crate::expiry::ttl_op(ttl_ms)?;
        unsafe { add(batch, key, key_len, op) }
    })
}

/// Adds an expiry at wall time `unix_ms` (milliseconds since the Unix epoch, at most
/// `MERIDIAN_EXPIRY_MS_MAX`) to the batch, covering its other writes to the key, as
/// `meridian_batch_ttl`.
///
/// # Safety
/// `key` must point at `key_len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn meridian_batch_expire_at(
    batch: *mut MeridianBatch,
    key: *const u8,
    key_len: usize,
    unix_ms: u64,
) -> MeridianStatus {
    guard(move || {
        let op = crate::expiry::at_op(unix_ms)?;
        unsafe { add(batch, key, key_len, op) }
    })
}

/// Adds the removal of the key's pending expiries to the batch (`meridian_persist`).
///
/// # Safety
/// `key` must point at `key_len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn meridian_batch_persist(
    batch: *mut MeridianBatch,
    key: *const u8,
    key_len: usize,
) -> MeridianStatus {
    guard(move || unsafe { add(batch, key, key_len, crate::expiry::persist_op()) })
}

/// Adds many operations to the batch in one call (where one call per operation would cost
/// more than the operation): `ops` holds them packed, each a kind byte (0: last-writer-wins
/// write, 1: counter increment, 2: set insertion, 3: delete), then its key (its length as 8
/// little-endian bytes, then the key), then its operand: the value or element likewise, the
/// increment as 8 little-endian bytes (two's complement), nothing for a delete. All are added
/// or, on any bad operation, none.
///
/// # Safety
/// `ops` must point at `ops_len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn meridian_batch_add_packed(
    batch: *mut MeridianBatch,
    ops: *const u8,
    ops_len: usize,
) -> MeridianStatus {
    guard(move || {
        let max = meridian::limits::CLIENT_FRAME_BYTES_MAX;
        let packed = unsafe { bytes(ops, ops_len, max, "ops") }?;
        let parsed = unpack_ops(packed)?;
        let handle = BATCHES.get(batch as usize)?;
        let mut b = handle.lock().unwrap_or_else(|e| e.into_inner());
        if b.len() + parsed.len() > meridian::limits::BATCH_OPS_MAX {
            return Err(Failure::new(
                crate::status::MeridianStatus::MeridianTooLarge,
                format!(
                    "a batch holds at most {} operations",
                    meridian::limits::BATCH_OPS_MAX
                ),
            ));
        }
        b.extend(parsed);
        Ok(())
    })
}

/// The operations of a packed list (`meridian_batch_add_packed`), every one checked.
fn unpack_ops(mut rest: &[u8]) -> Result<Ops, Failure> {
    fn take<'a>(rest: &mut &'a [u8], n: usize, what: &str) -> Result<&'a [u8], Failure> {
        if rest.len() < n {
            return Err(Failure::invalid(format!("ops: {what} cut short")));
        }
        let (head, tail) = rest.split_at(n);
        *rest = tail;
        Ok(head)
    }
    fn sized(rest: &mut &[u8], max: usize, what: &str) -> Result<Vec<u8>, Failure> {
        let len = u64::from_le_bytes(take(rest, 8, what)?.try_into().unwrap_or([0; 8]));
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > max {
            return Err(Failure::new(
                crate::status::MeridianStatus::MeridianTooLarge,
                format!("ops: a {what} of {len} bytes, at most {max}"),
            ));
        }
        Ok(take(rest, len, what)?.to_vec())
    }
    let mut out = Vec::new();
    while !rest.is_empty() {
        let kind = take(&mut rest, 1, "kind")?[0];
        let key = sized(&mut rest, crate::args::KEY_LEN_MAX, "key")?;
        let op = match kind {
            0 => Op::LwwSet {
                value: sized(&mut rest, crate::args::VALUE_LEN_MAX, "value")?,
            },
            1 => Op::CounterAdd {
                delta: i64::from_le_bytes(
                    take(&mut rest, 8, "delta")?.try_into().unwrap_or([0; 8]),
                ),
            },
            2 => Op::SetAdd {
                elems: vec![sized(&mut rest, crate::args::VALUE_LEN_MAX, "elem")?],
            },
            3 => Op::Delete,
            other => return Err(Failure::invalid(format!("ops: kind {other} (0 to 3)"))),
        };
        out.push((key, op));
    }
    Ok(out)
}

/// Commits the batch's operations atomically (the batch is empty afterwards, ready for
/// more; on failure nothing is written and the operations stay). `token_out` may be null.
/// Blocks for the local commit.
///
/// # Safety
/// `token_out`, when not null, must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn meridian_batch_commit(
    engine_handle: *const MeridianEngine,
    batch: *mut MeridianBatch,
    token_out: *mut *mut MeridianToken,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(token_out) };
    guard(move || {
        let e = engine(engine_handle)?;
        let batch = BATCHES.get(batch as usize)?;
        // Held through the commit: operations added meanwhile wait, and join the next one.
        let mut b = batch.lock().unwrap_or_else(|e| e.into_inner());
        let ops = b
            .iter()
            .cloned()
            .fold(Batch::new(), |batch, (k, op)| batch.op(k, op));
        let token = e.write(ops)?;
        b.clear();
        drop(b);
        unsafe { maybe_token_out(token_out, token) }
    })
}

/// Takes the operations of a batch handle out of it, for the client mode's commit (which
/// runs without the lock: operations added meanwhile stay in the batch for the next commit).
pub(crate) fn take_ops(handle: *mut MeridianBatch) -> Result<Ops, Failure> {
    let batch = BATCHES.get(handle as usize)?;
    let mut b = batch.lock().unwrap_or_else(|e| e.into_inner());
    Ok(std::mem::take(&mut *b))
}

/// Puts operations taken by `take_ops` back in front of those added since (their commit
/// failed). A batch freed meanwhile takes them with it.
pub(crate) fn put_back(handle: *mut MeridianBatch, mut ops: Ops) {
    if let Ok(batch) = BATCHES.get(handle as usize) {
        let mut b = batch.lock().unwrap_or_else(|e| e.into_inner());
        ops.append(&mut b);
        *b = ops;
    }
}

/// Frees a batch (null is fine; a freed batch is refused with `MERIDIAN_CLOSED`).
#[no_mangle]
pub extern "C" fn meridian_batch_free(batch: *mut MeridianBatch) -> MeridianStatus {
    guard(move || {
        if batch.is_null() {
            return Ok(());
        }
        BATCHES
            .remove(batch as usize)
            .map(drop)
            .ok_or_else(|| Failure::new(MeridianStatus::MeridianClosed, "batch already freed"))
    })
}
