//! Status codes, the thread-local error message, and the guard every entry point runs in:
//! arguments checked, panics caught, nothing unwinds into C.

use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, UnwindSafe};

/// What a call came to. `MERIDIAN_OK` is 0; every other value has a message in
/// `meridian_last_error()`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MeridianStatus {
    /// Done.
    MeridianOk = 0,
    /// The key holds nothing (of that type).
    MeridianNotFound = 1,
    /// A null pointer, a bad length, text that is not UTF-8, a bad key, setting or token.
    MeridianInvalidArgument = 2,
    /// The key holds another type.
    MeridianWrongType = 3,
    /// A value, record or batch over the limits.
    MeridianTooLarge = 4,
    /// Stored bytes that do not decode (that key only).
    MeridianCorrupt = 5,
    /// Not writable now (recovering after a restart): retry, or write in another region.
    MeridianUnavailable = 6,
    /// The storage failed; the engine refuses writes until reopened.
    MeridianStorage = 7,
    /// A handle that was closed (or never opened).
    MeridianClosed = 8,
    /// A bug in Meridian (a caught panic): the call did nothing it can vouch for.
    MeridianInternal = 9,
    /// Client mode: the write may or may not have been applied (it is never rolled back, and
    /// was not retried elsewhere where that could apply it twice).
    MeridianUnknown = 10,
    /// Client mode: no region could serve the request.
    MeridianNoRegion = 11,
    /// Client mode: no region has applied this session's writes (or, for a write, what the
    /// session wrote or read of its keys) yet: nothing was written. Engine mode: a write's read
    /// context names writes this replica has not applied.
    MeridianNotYetVisible = 12,
    /// Client mode: a region refused the request (its role, rate limits...).
    MeridianRefused = 13,
    /// Client mode: some of the session's writes were lost with a region's disk before any
    /// other region held them; reads would wait for them forever.
    /// `meridian_client_forget_lost` lets the session go on without them.
    MeridianUncoverable = 14,
}

/// A failed call: its status and message.
#[derive(Debug)]
pub(crate) struct Failure {
    pub status: MeridianStatus,
    pub message: String,
}

impl Failure {
    /// A failure with `status`.
    pub fn new(status: MeridianStatus, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
        }
    }

    /// A bad argument.
    pub fn invalid(message: impl Into<String>) -> Failure {
        Failure::new(MeridianStatus::MeridianInvalidArgument, message)
    }
}

impl From<meridian::Error> for Failure {
    fn from(e: meridian::Error) -> Failure {
        use meridian::Error as E;
        use MeridianStatus as S;
        let status = match &e {
            E::InvalidKey(_)
            | E::InvalidConfig(_)
            | E::InvalidOperation(_)
            | E::InvalidToken(_)
            | E::CounterOverflow { .. } => S::MeridianInvalidArgument,
            E::ValueTooLarge { .. } | E::RecordTooLarge { .. } | E::BatchTooLarge { .. } => {
                S::MeridianTooLarge
            }
            E::WrongType { .. } => S::MeridianWrongType,
            E::Corrupt { .. } | E::FutureVersion { .. } => S::MeridianCorrupt,
            E::Storage(_) | E::Poisoned => S::MeridianStorage,
            E::DiskFull { .. } | E::Fenced { .. } => S::MeridianUnavailable,
            E::ContextAhead { .. } => S::MeridianNotYetVisible,
            _ => S::MeridianInternal,
        };
        Failure::new(status, e.to_string())
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Sets this thread's message. During the thread's teardown (a call from a thread-exit
/// destructor, after the message's own storage is gone) nothing is kept: the status alone
/// says what happened, and nothing panics across the ABI.
fn set_last_error(message: &str) {
    let _ = LAST_ERROR.try_with(|e| {
        let mut last = e.borrow_mut();
        // A success after a success allocates nothing.
        if message.is_empty() && last.as_bytes().is_empty() {
            return;
        }
        *last = CString::new(message.replace('\0', " ")).unwrap_or_default();
    });
}

/// The message of the last call on this thread that did not return `MERIDIAN_OK` (empty after
/// a call that did, and during the thread's teardown). The text stays valid until the next
/// call into the library on this thread; never null; do not free it.
#[no_mangle]
pub extern "C" fn meridian_last_error() -> *const c_char {
    LAST_ERROR
        .try_with(|e| e.borrow().as_ptr())
        .unwrap_or(c"".as_ptr())
}

/// Set on a thread's first call and dropped with its thread-locals: a call that finds it gone
/// comes from the thread's teardown (a thread-exit destructor, an `atexit` handler on the main
/// thread), when neither this library's nor RocksDB's thread-locals may be touched.
struct ThreadAlive;

impl Drop for ThreadAlive {
    fn drop(&mut self) {}
}

thread_local! {
    static ALIVE: ThreadAlive = const { ThreadAlive };
}

/// Runs an entry point: its failure becomes a status and the thread's error message; a
/// panic becomes `MERIDIAN_INTERNAL` instead of unwinding into the caller. A call made during
/// the thread's teardown is refused with `MERIDIAN_UNAVAILABLE`, doing nothing (it has no
/// message: the message's own storage is gone).
pub(crate) fn guard(body: impl FnOnce() -> Result<(), Failure> + UnwindSafe) -> MeridianStatus {
    if ALIVE.try_with(|_| ()).is_err() {
        return MeridianStatus::MeridianUnavailable;
    }
    let outcome = catch_unwind(body).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(Failure::new(
            MeridianStatus::MeridianInternal,
            format!("internal error (a panic was caught): {what}"),
        ))
    });
    match outcome {
        Ok(()) => {
            set_last_error("");
            MeridianStatus::MeridianOk
        }
        Err(failure) => {
            set_last_error(&failure.message);
            failure.status
        }
    }
}
