//! Client mode through C: a routed client of a cluster (`meridian_client::routed`), learning
//! the regions from a cluster file's seeds, using the nearest healthy one and failing over,
//! with a session token that follows it across regions. Every call blocks the calling thread
//! until the cluster answers; calls on one client from several threads run at once.

use crate::args::{bytes, put_buffer, put_out, text};
use crate::buffer::MeridianBuffer;
use crate::engine::not_found;
use crate::handles::Registry;
use crate::status::{guard, Failure, MeridianStatus};
use crate::token::{maybe_token_out, token_of, MeridianToken};
use meridian::{Op, ReadValue};
use meridian_client::client_proto::Consistency;
use meridian_client::routed::{RoutedClient, RoutedError};
use meridian_config::cluster_file::ClusterFile;
use std::ffi::c_char;
use std::path::Path;

/// How many regions must hold a write before it is acknowledged (passed as an `int32_t`
/// and checked).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MeridianConsistency {
    /// The region that took it.
    MeridianConsistencyLocal = 0,
    /// More than half of the regions.
    MeridianConsistencyMajority = 1,
    /// Every region.
    MeridianConsistencyAll = 2,
    /// The number of regions given beside it.
    MeridianConsistencyRegions = 3,
}

/// A routed client of a cluster (opaque): safe to share between threads, whose calls on it run
/// concurrently (each request a stream of its own on a region's connection); each call sees
/// every write the client had acknowledged before it started.
pub struct MeridianClient {
    _private: [u8; 0],
}

/// A client and the runtime its calls run on. No lock is held around a call (the client's own
/// are short and never held while it waits for a region): calls from several threads proceed
/// at once.
struct ClientHandle {
    runtime: tokio::runtime::Runtime,
    client: RoutedClient,
    /// Reads gather a majority's writes (`meridian_client_read_majority`).
    majority_reads: std::sync::atomic::AtomicBool,
}

static CLIENTS: Registry<ClientHandle> = Registry::new("client");

thread_local! {
    /// Whether this thread's last acknowledged client write came after a lost answer.
    static RETRIED_AFTER_LOST: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Keeps what `meridian_client_retried_after_lost` says of this thread's last write.
fn acknowledged(written: &meridian_client::routed::Written) {
    let _ = RETRIED_AFTER_LOST.try_with(|r| r.set(written.retried_after_lost));
}

/// Whether the calling thread's last acknowledged client write was taken after an earlier
/// attempt's answer was lost (1) or not (0). That attempt may have applied too: an idempotent
/// write then exists under two dots with the same effect, and a removal made in between in
/// the region that answered may not cover the other one.
#[no_mangle]
pub extern "C" fn meridian_client_retried_after_lost() -> i32 {
    RETRIED_AFTER_LOST
        .try_with(|r| i32::from(r.get()))
        .unwrap_or(0)
}

/// The consistency a level crossing the ABI asks for (an integer, checked: a value outside
/// `MeridianConsistency` is an invalid argument, never a jump through a bad discriminant).
fn consistency(level: i32, regions: u8) -> Result<Consistency, Failure> {
    const LOCAL: i32 = MeridianConsistency::MeridianConsistencyLocal as i32;
    const MAJORITY: i32 = MeridianConsistency::MeridianConsistencyMajority as i32;
    const ALL: i32 = MeridianConsistency::MeridianConsistencyAll as i32;
    const REGIONS: i32 = MeridianConsistency::MeridianConsistencyRegions as i32;
    Ok(match level {
        LOCAL => Consistency::Local,
        MAJORITY => Consistency::Majority,
        ALL => Consistency::All,
        REGIONS if regions > 0 => Consistency::Regions(regions),
        REGIONS => return Err(Failure::invalid("regions: at least 1")),
        other => {
            return Err(Failure::invalid(format!(
                "level: {other} is no MeridianConsistency (0 to 3)"
            )))
        }
    })
}

impl From<RoutedError> for Failure {
    fn from(e: RoutedError) -> Failure {
        let status = match &e {
            RoutedError::Unknown { .. } => MeridianStatus::MeridianUnknown,
            RoutedError::NoRegion(_) => MeridianStatus::MeridianNoRegion,
            RoutedError::NotYetVisible => MeridianStatus::MeridianNotYetVisible,
            RoutedError::Uncoverable { .. } => MeridianStatus::MeridianUncoverable,
            _ => MeridianStatus::MeridianRefused,
        };
        Failure::new(status, e.to_string())
    }
}

/// Reads `key` through the client: where the session's writes are, or (after
/// `meridian_client_read_majority`) with every write a majority of regions holds.
fn read(handle: *const MeridianClient, key: Vec<u8>) -> Result<Option<meridian::Read>, Failure> {
    let h = CLIENTS.get(handle as usize)?;
    let majority = h.majority_reads.load(std::sync::atomic::Ordering::Relaxed);
    with_client(handle, async move |c| {
        Ok(if majority {
            c.read_majority(&key).await?
        } else {
            c.read(&key).await?
        })
    })
}

/// The value of one type that `key` holds (`pick` says which), or `MERIDIAN_NOT_FOUND`.
fn read_value<T>(
    handle: *const MeridianClient,
    key: Vec<u8>,
    pick: impl Fn(ReadValue) -> Option<T>,
) -> Result<T, Failure> {
    read(handle, key)?
        .and_then(|r| r.values.into_iter().find_map(&pick))
        .ok_or_else(not_found)
}

/// Whether the client handle `id` is still open (its scans answer `MERIDIAN_CLOSED` once not).
pub(crate) fn is_open(id: usize) -> bool {
    CLIENTS.get(id).is_ok()
}

/// A key and what it holds, as a scan yields it.
type Row = (Vec<u8>, meridian::Read);

/// A page of the keys of `prefix` after `after` through the client behind handle `id`.
pub(crate) fn scan_page(
    id: usize,
    prefix: &[u8],
    after: Option<&[u8]>,
    limit: usize,
) -> Result<(Vec<Row>, bool), Failure> {
    let prefix = prefix.to_vec();
    let after = after.map(<[u8]>::to_vec);
    let limit = u32::try_from(limit).unwrap_or(u32::MAX);
    with_client(id as *const MeridianClient, async move |c| {
        Ok(c.scan_page(&prefix, after.as_deref(), limit).await?)
    })
}

/// Runs `call` on the client behind `handle`, on its runtime, blocking the calling thread
/// (other threads' calls on the same client run meanwhile).
fn with_client<T>(
    handle: *const MeridianClient,
    call: impl AsyncFnOnce(&RoutedClient) -> Result<T, Failure>,
) -> Result<T, Failure> {
    let h = CLIENTS.get(handle as usize)?;
    h.runtime.block_on(call(&h.client))
}

/// A client handle held by a watch (`crate::feed`): the client it reads through and the
/// runtime its calls run on, kept alive while the watch lives.
pub(crate) struct Held(std::sync::Arc<ClientHandle>);

impl Held {
    /// The client behind handle `id` (`MERIDIAN_CLOSED` once closed).
    pub(crate) fn of(id: usize) -> Result<Held, Failure> {
        Ok(Held(CLIENTS.get(id)?))
    }

    /// The runtime the client's calls run on.
    pub(crate) fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.0.runtime
    }

    /// Lets go of the client; when it was closed meanwhile and this was its last user, its
    /// connections are closed now (as `meridian_client_close` does).
    pub(crate) fn release(self) {
        if let Ok(h) = std::sync::Arc::try_unwrap(self.0) {
            h.runtime.block_on(h.client.close());
        }
    }
}

impl std::borrow::Borrow<RoutedClient> for Held {
    fn borrow(&self) -> &RoutedClient {
        &self.0.client
    }
}

/// Runs `call` on the client behind handle `id`, blocking the calling thread.
pub(crate) fn on_client<T>(
    id: usize,
    call: impl AsyncFnOnce(&RoutedClient) -> Result<T, Failure>,
) -> Result<T, Failure> {
    with_client(id as *const MeridianClient, call)
}

/// The client behind `handle`, for a call that does not wait for the cluster.
fn client_of(handle: *const MeridianClient) -> Result<std::sync::Arc<ClientHandle>, Failure> {
    CLIENTS.get(handle as usize)
}

/// Opens a client of the cluster a cluster file describes (seeds, certificates, the client's
/// place): it learns every region and times them. Blocks until a seed answers.
///
/// # Safety
/// `cluster_file` must be a NUL-terminated string; `out` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn meridian_client_open(
    cluster_file: *const c_char,
    out: *mut *mut MeridianClient,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(out) };
    guard(move || {
        let path = unsafe { text(cluster_file, "cluster_file") }?;
        if out.is_null() {
            return Err(Failure::invalid("out: null out-pointer"));
        }
        let file =
            ClusterFile::load(Path::new(path)).map_err(|e| Failure::invalid(e.to_string()))?;
        // One worker of its own: between calls it keeps the connections alive (pings, the
        // node's answers), so an idle client's next call does not find them dead.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("meridian-client")
            .enable_all()
            .build()
            .map_err(|e| Failure::new(MeridianStatus::MeridianInternal, e.to_string()))?;
        let client = runtime.block_on(RoutedClient::connect(file.routed_config()))?;
        let id = CLIENTS.insert(ClientHandle {
            runtime,
            client,
            majority_reads: false.into(),
        });
        unsafe { put_out(out, id as *mut MeridianClient, "out") }
    })
}

/// Applies `op` through the client.
unsafe fn client_apply(
    handle: *const MeridianClient,
    key: *const u8,
    key_len: usize,
    op: Op,
    level: Consistency,
    token_out: *mut *mut MeridianToken,
) -> Result<(), Failure> {
    let key = unsafe { bytes(key, key_len, crate::args::KEY_LEN_MAX, "key") }?.to_vec();
    let written = with_client(handle, async move |c| Ok(c.apply(&key, op, level).await?))?;
    acknowledged(&written);
    unsafe { maybe_token_out(token_out, written.token) }
}

/// A last-writer-wins write, acknowledged once durable in the regions `level` asks for
/// (`regions` counts them for `MERIDIAN_CONSISTENCY_REGIONS`). Retried in the next region if
/// the nearest does not answer. `token_out` may be null. Blocks.
///
/// # Safety
/// Pointers with a length must point at that many readable bytes; `token_out`, when not
/// null, must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn meridian_client_lww_set(
    client: *const MeridianClient,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    level: i32,
    regions: u8,
    token_out: *mut *mut MeridianToken,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(token_out) };
    guard(move || {
        let value =
            unsafe { bytes(value, value_len, crate::args::VALUE_LEN_MAX, "value") }?.to_vec();
        let level = consistency(level, regions)?;
        unsafe { client_apply(client, key, key_len, Op::LwwSet { value }, level, token_out) }
    })
}

/// A counter increment, as `meridian_client_lww_set`; but if the region that took it does
/// not answer, it is not retried elsewhere (that could count it twice): the call returns
/// `MERIDIAN_UNKNOWN`. Blocks.
///
/// # Safety
/// As `meridian_client_lww_set`.
#[no_mangle]
pub unsafe extern "C" fn meridian_client_counter_add(
    client: *const MeridianClient,
    key: *const u8,
    key_len: usize,
    delta: i64,
    level: i32,
    regions: u8,
    token_out: *mut *mut MeridianToken,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(token_out) };
    guard(move || {
        let level = consistency(level, regions)?;
        unsafe {
            client_apply(
                client,
                key,
                key_len,
                Op::CounterAdd { delta },
                level,
                token_out,
            )
        }
    })
}

/// Reads a key in the nearest region holding this session's writes; the value of a
/// last-writer-wins key into `out`. `MERIDIAN_NOT_FOUND` when absent (or of another type).
/// Blocks.
///
/// # Safety
/// `key` must point at `key_len` readable bytes; `out` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn meridian_client_lww_get(
    client: *const MeridianClient,
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
        let key = unsafe { bytes(key, key_len, crate::args::KEY_LEN_MAX, "key") }?.to_vec();
        let value = read_value(client, key, |v| match v {
            ReadValue::Lww(l) => Some(l.value),
            _ => None,
        })?;
        unsafe { put_buffer(out, value, "out") }
    })
}

/// Reads a counter as `meridian_client_lww_get` does. Blocks.
///
/// # Safety
/// `key` must point at `key_len` readable bytes; `out` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn meridian_client_counter_get(
    client: *const MeridianClient,
    key: *const u8,
    key_len: usize,
    out: *mut i64,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(out) };
    guard(move || {
        if out.is_null() {
            return Err(Failure::invalid("out: null out-pointer"));
        }
        let key = unsafe { bytes(key, key_len, crate::args::KEY_LEN_MAX, "key") }?.to_vec();
        let value = read_value(client, key, |v| match v {
            ReadValue::Counter(n) => Some(n),
            _ => None,
        })?;
        unsafe { put_out(out, value, "out") }
    })
}

/// Makes later reads gather every write a majority of regions holds (`majority` 1) or read
/// where the session's writes are (0, the default).
#[no_mangle]
pub extern "C" fn meridian_client_read_majority(
    client: *const MeridianClient,
    majority: i32,
) -> MeridianStatus {
    guard(move || {
        let h = CLIENTS.get(client as usize)?;
        h.majority_reads
            .store(majority != 0, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    })
}

/// A multi-value register write (with a read's context, or none: `context_len` 0), as
/// `meridian_client_lww_set`. Blocks.
///
/// # Safety
/// As `meridian_client_lww_set`.
#[no_mangle]
pub unsafe extern "C" fn meridian_client_register_put(
    client: *const MeridianClient,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    context_data: *const u8,
    context_len: usize,
    level: i32,
    regions: u8,
    token_out: *mut *mut MeridianToken,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(token_out) };
    guard(move || {
        let value =
            unsafe { bytes(value, value_len, crate::args::VALUE_LEN_MAX, "value") }?.to_vec();
        let context = unsafe { crate::engine::context(context_data, context_len) }?;
        let level = consistency(level, regions)?;
        let op = Op::Put { value, context };
        unsafe { client_apply(client, key, key_len, op, level, token_out) }
    })
}

/// A set insertion, as `meridian_client_lww_set`. Blocks.
///
/// # Safety
/// As `meridian_client_lww_set`.
#[no_mangle]
pub unsafe extern "C" fn meridian_client_set_add(
    client: *const MeridianClient,
    key: *const u8,
    key_len: usize,
    elem: *const u8,
    elem_len: usize,
    level: i32,
    regions: u8,
    token_out: *mut *mut MeridianToken,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(token_out) };
    guard(move || {
        let elems =
            vec![unsafe { bytes(elem, elem_len, crate::args::VALUE_LEN_MAX, "elem") }?.to_vec()];
        let level = consistency(level, regions)?;
        unsafe { client_apply(client, key, key_len, Op::SetAdd { elems }, level, token_out) }
    })
}

/// A map field counter increment (not retried elsewhere after a lost answer:
/// `MERIDIAN_UNKNOWN`). Blocks.
///
/// # Safety
/// As `meridian_client_lww_set`.
#[no_mangle]
pub unsafe extern "C" fn meridian_client_map_counter_add(
    client: *const MeridianClient,
    key: *const u8,
    key_len: usize,
    field: *const u8,
    field_len: usize,
    delta: i64,
    level: i32,
    regions: u8,
    token_out: *mut *mut MeridianToken,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(token_out) };
    guard(move || {
        let field =
            unsafe { bytes(field, field_len, crate::args::VALUE_LEN_MAX, "field") }?.to_vec();
        let level = consistency(level, regions)?;
        let op = Op::MapUpdate {
            field,
            op: Box::new(Op::CounterAdd { delta }),
        };
        unsafe { client_apply(client, key, key_len, op, level, token_out) }
    })
}

/// A delete, as `meridian_client_lww_set`. Blocks.
///
/// # Safety
/// As `meridian_client_lww_set`.
#[no_mangle]
pub unsafe extern "C" fn meridian_client_delete(
    client: *const MeridianClient,
    key: *const u8,
    key_len: usize,
    level: i32,
    regions: u8,
    token_out: *mut *mut MeridianToken,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(token_out) };
    guard(move || {
        let level = consistency(level, regions)?;
        unsafe { client_apply(client, key, key_len, Op::Delete, level, token_out) }
    })
}

/// A set removal, as `meridian_client_lww_set`: it covers every add of the element this
/// session wrote or read, in whichever region takes it (a region that lacks them refuses it,
/// nothing written, and the next is asked: `MERIDIAN_NOT_YET_VISIBLE` when none can). Blocks.
///
/// # Safety
/// As `meridian_client_lww_set`.
#[no_mangle]
pub unsafe extern "C" fn meridian_client_set_remove(
    client: *const MeridianClient,
    key: *const u8,
    key_len: usize,
    elem: *const u8,
    elem_len: usize,
    level: i32,
    regions: u8,
    token_out: *mut *mut MeridianToken,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(token_out) };
    guard(move || {
        let elems =
            vec![unsafe { bytes(elem, elem_len, crate::args::VALUE_LEN_MAX, "elem") }?.to_vec()];
        let level = consistency(level, regions)?;
        unsafe {
            client_apply(
                client,
                key,
                key_len,
                Op::SetRemove { elems },
                level,
                token_out,
            )
        }
    })
}

/// A map field's last-writer-wins write, as `meridian_client_lww_set`. Blocks.
///
/// # Safety
/// As `meridian_client_lww_set`.
#[no_mangle]
pub unsafe extern "C" fn meridian_client_map_lww_set(
    client: *const MeridianClient,
    key: *const u8,
    key_len: usize,
    field: *const u8,
    field_len: usize,
    value: *const u8,
    value_len: usize,
    level: i32,
    regions: u8,
    token_out: *mut *mut MeridianToken,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(token_out) };
    guard(move || {
        let field =
            unsafe { bytes(field, field_len, crate::args::VALUE_LEN_MAX, "field") }?.to_vec();
        let value =
            unsafe { bytes(value, value_len, crate::args::VALUE_LEN_MAX, "value") }?.to_vec();
        let level = consistency(level, regions)?;
        let op = Op::MapUpdate {
            field,
            op: Box::new(Op::LwwSet { value }),
        };
        unsafe { client_apply(client, key, key_len, op, level, token_out) }
    })
}

/// A map field's removal, as `meridian_client_set_remove`. Blocks.
///
/// # Safety
/// As `meridian_client_lww_set`.
#[no_mangle]
pub unsafe extern "C" fn meridian_client_map_remove(
    client: *const MeridianClient,
    key: *const u8,
    key_len: usize,
    field: *const u8,
    field_len: usize,
    level: i32,
    regions: u8,
    token_out: *mut *mut MeridianToken,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(token_out) };
    guard(move || {
        let field =
            unsafe { bytes(field, field_len, crate::args::VALUE_LEN_MAX, "field") }?.to_vec();
        let level = consistency(level, regions)?;
        unsafe {
            client_apply(
                client,
                key,
                key_len,
                Op::MapRemove { field },
                level,
                token_out,
            )
        }
    })
}

/// Gives a key a time to live through the client, as `meridian_expire` (`ttl_ms` at most
/// `MERIDIAN_EXPIRY_MS_MAX`), acknowledged as `meridian_client_lww_set` (retried in the next
/// region if the nearest does not answer). A region older than client protocol 8 cannot take
/// it: `MERIDIAN_REFUSED`, nothing written. Blocks.
///
/// # Safety
/// `key` must point at `key_len` readable bytes; `token_out`, when not null, must be valid
/// for a write.
#[no_mangle]
pub unsafe extern "C" fn meridian_client_expire(
    client: *const MeridianClient,
    key: *const u8,
    key_len: usize,
    ttl_ms: u64,
    level: i32,
    regions: u8,
    token_out: *mut *mut MeridianToken,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(token_out) };
    guard(move || {
        let op = crate::expiry::ttl_op(ttl_ms)?;
        let level = consistency(level, regions)?;
        unsafe { client_apply(client, key, key_len, op, level, token_out) }
    })
}

/// Makes a key expire at wall time `unix_ms` through the client, as `meridian_expire_at` and
/// `meridian_client_expire`. Blocks.
///
/// # Safety
/// As `meridian_client_expire`.
#[no_mangle]
pub unsafe extern "C" fn meridian_client_expire_at(
    client: *const MeridianClient,
    key: *const u8,
    key_len: usize,
    unix_ms: u64,
    level: i32,
    regions: u8,
    token_out: *mut *mut MeridianToken,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(token_out) };
    guard(move || {
        let op = crate::expiry::at_op(unix_ms)?;
        let level = consistency(level, regions)?;
        unsafe { client_apply(client, key, key_len, op, level, token_out) }
    })
}

/// Removes a key's pending expiries through the client, as `meridian_persist` and
/// `meridian_client_expire`. Blocks.
///
/// # Safety
/// As `meridian_client_expire`.
#[no_mangle]
pub unsafe extern "C" fn meridian_client_persist(
    client: *const MeridianClient,
    key: *const u8,
    key_len: usize,
    level: i32,
    regions: u8,
    token_out: *mut *mut MeridianToken,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(token_out) };
    guard(move || {
        let level = consistency(level, regions)?;
        let op = crate::expiry::persist_op();
        unsafe { client_apply(client, key, key_len, op, level, token_out) }
    })
}

/// When the value under a key stops being read (milliseconds since the Unix epoch) into
/// `unix_ms_out`, as the nearest region that answers sees it (it does not wait for this
/// session's writes to arrive there); `MERIDIAN_NOT_FOUND` when the key holds nothing or has
/// no expiry. Blocks.
///
/// # Safety
/// `key` must point at `key_len` readable bytes; `unix_ms_out` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn meridian_client_expires_at(
    client: *const MeridianClient,
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
        let key = unsafe { bytes(key, key_len, crate::args::KEY_LEN_MAX, "key") }?.to_vec();
        let at = with_client(client, async move |c| Ok(c.expires_at(&key).await?))?
            .ok_or_else(not_found)?;
        unsafe { put_out(unix_ms_out, at, "unix_ms_out") }
    })
}

/// Reads whatever `key` holds through the client, as JSON (the format of `meridian_read_json`:
/// a list of the values it holds, each tagged with its type), into `out`;
/// `MERIDIAN_NOT_FOUND` when it holds nothing. Blocks.
///
/// # Safety
/// `key` must point at `key_len` readable bytes; `out` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn meridian_client_read_json(
    client: *const MeridianClient,
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
        let key = unsafe { bytes(key, key_len, crate::args::KEY_LEN_MAX, "key") }?.to_vec();
        let read = read(client, key)?.ok_or_else(not_found)?;
        unsafe { crate::nested::put_json(out, &read) }
    })
}

/// Commits a batch's operations atomically through the client (the batch is empty
/// afterwards; on failure its operations stay). After a lost answer it is retried elsewhere
/// only if every operation is idempotent, else `MERIDIAN_UNKNOWN`. Blocks.
///
/// # Safety
/// `token_out`, when not null, must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn meridian_client_batch_commit(
    client: *const MeridianClient,
    batch: *mut crate::batch::MeridianBatch,
    level: i32,
    regions: u8,
    token_out: *mut *mut MeridianToken,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(token_out) };
    guard(move || {
        let level = consistency(level, regions)?;
        let ops = crate::batch::take_ops(batch)?;
        if ops.is_empty() {
            return Err(Failure::invalid("batch: no operations"));
        }
        let sent = ops.clone();
        match with_client(client, async move |c| {
            Ok(c.write_batch(sent, level).await?)
        }) {
            Ok(written) => {
                acknowledged(&written);
                unsafe { maybe_token_out(token_out, written.token) }
            }
            Err(failure) => {
                crate::batch::put_back(batch, ops);
                Err(failure)
            }
        }
    })
}

/// Forgets the session's writes that the last `MERIDIAN_UNCOVERABLE` named (lost with a
/// region's disk): later reads no longer wait for them. `MERIDIAN_NOT_FOUND` when no call
/// reported any.
#[no_mangle]
pub extern "C" fn meridian_client_forget_lost(client: *const MeridianClient) -> MeridianStatus {
    guard(move || {
        if client_of(client)?.client.forget_last_lost() {
            Ok(())
        } else {
            Err(not_found())
        }
    })
}

/// The session's token (everything this client wrote or read), to carry to another client.
///
/// # Safety
/// `out` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn meridian_client_token(
    client: *const MeridianClient,
    out: *mut *mut MeridianToken,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(out) };
    guard(move || {
        if out.is_null() {
            return Err(Failure::invalid("out: null out-pointer"));
        }
        let token = client_of(client)?.client.token();
        unsafe { maybe_token_out(out, token) }
    })
}

/// Adds `token`'s writes to the session (reads then wait for them wherever they go).
#[no_mangle]
pub extern "C" fn meridian_client_merge_token(
    client: *const MeridianClient,
    token: *const MeridianToken,
) -> MeridianStatus {
    guard(move || {
        let add = token_of(token)?;
        client_of(client)?.client.merge_token(&add);
        Ok(())
    })
}

/// The region that answered the client's last successful request, into `out` (empty before
/// any).
///
/// # Safety
/// `out` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn meridian_client_region(
    client: *const MeridianClient,
    out: *mut MeridianBuffer,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(out) };
    guard(move || {
        if out.is_null() {
            return Err(Failure::invalid("out: null out-pointer"));
        }
        let region = client_of(client)?.client.last_region().unwrap_or_default();
        unsafe { put_buffer(out, region.into_bytes(), "out") }
    })
}

/// Closes a client (null is fine; a closed client is refused with `MERIDIAN_CLOSED`, and so
/// are its watches from then on). Blocks until its connections close.
#[no_mangle]
pub extern "C" fn meridian_client_close(client: *mut MeridianClient) -> MeridianStatus {
    guard(move || {
        if client.is_null() {
            return Ok(());
        }
        let handle = CLIENTS
            .remove(client as usize)
            .ok_or_else(|| Failure::new(MeridianStatus::MeridianClosed, "client already closed"))?;
        // Its watches let go of it (a `meridian_feed_next` in flight returns within 100 ms).
        crate::feed::client_closed(client as usize);
        if let Ok(h) = std::sync::Arc::try_unwrap(handle) {
            h.runtime.block_on(h.client.close());
        }
        Ok(())
    })
}
