"""Meridian from Python: embedded engines (local, or replicating by themselves) and routed
clients of a cluster, over the C ABI (``libmeridian.so``) with ctypes: nothing to compile.

The library is found through ``MERIDIAN_LIB`` (a path), else next to the cargo target
directory (``$CARGO_TARGET_DIR/release``, ``~/.cache/meridian/target/release``), else by the
system loader. Keys and values are ``bytes`` (``str`` is encoded as UTF-8). Failures raise
subclasses of :class:`MeridianError`; a missing value is ``None``.

Ctrl-C interrupts a :class:`Client` call made from the main thread (see :class:`Client`: the
interrupted call goes on in the background, and a write's outcome is then unknown).
"""

from __future__ import annotations

import atexit
import ctypes
import os
import queue
import struct
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from ctypes import POINTER, byref, c_char_p, c_int, c_int32, c_int64, c_size_t, c_uint8, c_uint64, c_void_p
from typing import Callable, Generic, Iterable, Iterator, List, Optional, Tuple, TypeVar, Union, cast

__all__ = [
    "Engine", "Client", "Token", "Siblings", "Batch", "Feed", "FeedEvent", "MeridianError",
    "NotFoundError",
    "InvalidArgumentError",
    "WrongTypeError", "TooLargeError", "CorruptError", "UnavailableError", "StorageError",
    "ClosedError", "InternalError", "UnknownOutcomeError", "NoRegionError",
    "NotYetVisibleError", "RefusedError", "UncoverableError",
]

Bytes = Union[bytes, bytearray, memoryview, str]


class MeridianError(Exception):
    """A call into Meridian failed; ``status`` is the C ABI's code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class NotFoundError(MeridianError, KeyError):
    """The key holds nothing of that type (reads return ``None`` instead)."""


class InvalidArgumentError(MeridianError, ValueError):
    """A bad key, value, token or argument."""


class WrongTypeError(MeridianError, TypeError):
    """The key holds another type."""


class TooLargeError(MeridianError, ValueError):
    """A value, record or batch over the limits."""


class CorruptError(MeridianError):
    """Stored bytes that do not decode (that key only)."""


class UnavailableError(MeridianError):
    """Not writable now (a restart's recovery): retry, or write in another region."""


class StorageError(MeridianError):
    """The storage failed; the engine refuses writes until reopened."""


class ClosedError(MeridianError):
    """The handle was closed."""


class InternalError(MeridianError):
    """A bug in Meridian (a caught panic)."""


class UnknownOutcomeError(MeridianError):
    """The write may or may not have been applied; it was not retried where that could apply
    it twice."""


class NoRegionError(MeridianError):
    """No region could serve the request."""


class NotYetVisibleError(MeridianError):
    """No region has applied this session's writes yet (for a write: what the session wrote
    or read of its keys; nothing was written, retry later)."""


class RefusedError(MeridianError):
    """A region refused the request (role, rate limit)."""


class UncoverableError(MeridianError):
    """Some of the session's writes were lost with a region's disk before any other region
    held them: reads would wait for them forever. ``Client.forget_lost()`` goes on without
    them."""


_ERRORS = {
    1: NotFoundError, 2: InvalidArgumentError, 3: WrongTypeError, 4: TooLargeError,
    5: CorruptError, 6: UnavailableError, 7: StorageError, 8: ClosedError, 9: InternalError,
    10: UnknownOutcomeError, 11: NoRegionError, 12: NotYetVisibleError, 13: RefusedError,
    14: UncoverableError,
}

KIND_NAMES = {0: "register", 1: "lww", 2: "counter", 3: "set", 4: "map"}
CONSISTENCY = {"local": 0, "majority": 1, "all": 2}


class _Buffer(ctypes.Structure):
    _fields_ = [("data", POINTER(c_uint8)), ("len", c_size_t)]


def _find_library() -> str:
    """``MERIDIAN_LIB`` if set; else the library installed with the package (the wheel of
    ``make python-wheel``); else a build directory."""
    explicit = os.environ.get("MERIDIAN_LIB")
    if explicit:
        return explicit
    bundled = os.path.join(os.path.dirname(os.path.abspath(__file__)), "libmeridian.so")
    if os.path.exists(bundled):
        return bundled
    dirs = []
    if os.environ.get("CARGO_TARGET_DIR"):
        dirs.append(os.path.join(os.environ["CARGO_TARGET_DIR"], "release"))
    dirs.append(os.path.expanduser("~/.cache/meridian/target/release"))
    here = os.path.dirname(os.path.abspath(__file__))
    dirs.append(os.path.join(here, "..", "..", "..", "target", "release"))
    for d in dirs:
        path = os.path.join(d, "libmeridian.so")
        if os.path.exists(path):
            return path
    return "libmeridian.so"


#: The path of the ``libmeridian`` this package loaded.
LIBRARY = _find_library()
_lib = ctypes.CDLL(LIBRARY)
_lib.meridian_last_error.restype = c_char_p

_SIGNATURES = {
    "meridian_buffer_free": [POINTER(_Buffer)],
    "meridian_engine_open": [c_char_p, POINTER(c_void_p)],
    "meridian_engine_open_node": [c_char_p, POINTER(c_void_p)],
    "meridian_engine_close": [c_void_p],
    "meridian_register_put": [c_void_p, c_char_p, c_size_t, c_char_p, c_size_t, c_char_p, c_size_t, POINTER(c_void_p)],
    "meridian_register_get": [c_void_p, c_char_p, c_size_t, POINTER(_Buffer), POINTER(_Buffer)],
    "meridian_lww_set": [c_void_p, c_char_p, c_size_t, c_char_p, c_size_t, POINTER(c_void_p)],
    "meridian_lww_get": [c_void_p, c_char_p, c_size_t, POINTER(_Buffer)],
    "meridian_counter_add": [c_void_p, c_char_p, c_size_t, c_int64, POINTER(c_void_p)],
    "meridian_counter_get": [c_void_p, c_char_p, c_size_t, POINTER(c_int64)],
    "meridian_delete": [c_void_p, c_char_p, c_size_t, POINTER(c_void_p)],
    "meridian_set_add": [c_void_p, c_char_p, c_size_t, c_char_p, c_size_t, POINTER(c_void_p)],
    "meridian_set_remove": [c_void_p, c_char_p, c_size_t, c_char_p, c_size_t, POINTER(c_void_p)],
    "meridian_set_get": [c_void_p, c_char_p, c_size_t, POINTER(_Buffer)],
    "meridian_map_lww_set": [c_void_p, c_char_p, c_size_t, c_char_p, c_size_t, c_char_p, c_size_t, POINTER(c_void_p)],
    "meridian_map_counter_add": [c_void_p, c_char_p, c_size_t, c_char_p, c_size_t, c_int64, POINTER(c_void_p)],
    "meridian_map_remove": [c_void_p, c_char_p, c_size_t, c_char_p, c_size_t, POINTER(c_void_p)],
    "meridian_map_get_lww": [c_void_p, c_char_p, c_size_t, c_char_p, c_size_t, POINTER(_Buffer)],
    "meridian_map_get_counter": [c_void_p, c_char_p, c_size_t, c_char_p, c_size_t, POINTER(c_int64)],
    "meridian_batch_new": [POINTER(c_void_p)],
    "meridian_batch_lww_set": [c_void_p, c_char_p, c_size_t, c_char_p, c_size_t],
    "meridian_batch_counter_add": [c_void_p, c_char_p, c_size_t, c_int64],
    "meridian_batch_set_add": [c_void_p, c_char_p, c_size_t, c_char_p, c_size_t],
    "meridian_batch_delete": [c_void_p, c_char_p, c_size_t],
    "meridian_batch_commit": [c_void_p, c_void_p, POINTER(c_void_p)],
    "meridian_batch_free": [c_void_p],
    "meridian_scan_prefix": [c_void_p, c_char_p, c_size_t, c_size_t, POINTER(c_void_p)],
    "meridian_scan_range": [c_void_p, c_char_p, c_size_t, c_char_p, c_size_t, c_size_t, POINTER(c_void_p)],
    "meridian_scan_next": [c_void_p, POINTER(_Buffer), POINTER(c_int32)],
    "meridian_scan_free": [c_void_p],
    "meridian_token_new": [POINTER(c_void_p)],
    "meridian_token_from_bytes": [c_char_p, c_size_t, POINTER(c_void_p)],
    "meridian_token_bytes": [c_void_p, POINTER(_Buffer)],
    "meridian_token_merge": [c_void_p, c_void_p],
    "meridian_token_free": [c_void_p],
    "meridian_wait_covers": [c_void_p, c_void_p, c_uint64, POINTER(c_int32)],
    "meridian_client_open": [c_char_p, POINTER(c_void_p)],
    "meridian_client_lww_set": [c_void_p, c_char_p, c_size_t, c_char_p, c_size_t, c_int32, c_uint8, POINTER(c_void_p)],
    "meridian_client_counter_add": [c_void_p, c_char_p, c_size_t, c_int64, c_int32, c_uint8, POINTER(c_void_p)],
    "meridian_client_lww_get": [c_void_p, c_char_p, c_size_t, POINTER(_Buffer)],
    "meridian_client_counter_get": [c_void_p, c_char_p, c_size_t, POINTER(c_int64)],
    "meridian_client_token": [c_void_p, POINTER(c_void_p)],
    "meridian_client_merge_token": [c_void_p, c_void_p],
    "meridian_client_region": [c_void_p, POINTER(_Buffer)],
    "meridian_client_close": [c_void_p],
    "meridian_client_read_majority": [c_void_p, c_int32],
    "meridian_map_apply": [c_void_p, c_char_p, c_size_t, c_char_p, c_size_t, c_int32, c_char_p, c_size_t, c_int64, c_char_p, c_size_t, POINTER(c_void_p)],
    "meridian_read_json": [c_void_p, c_char_p, c_size_t, POINTER(_Buffer)],
    "meridian_lww_get_many": [c_void_p, c_char_p, c_size_t, POINTER(_Buffer)],
    "meridian_batch_add_packed": [c_void_p, c_char_p, c_size_t],
    "meridian_client_scan_prefix": [c_void_p, c_char_p, c_size_t, c_size_t, POINTER(c_void_p)],
    "meridian_client_register_put": [c_void_p, c_char_p, c_size_t, c_char_p, c_size_t, c_char_p, c_size_t, c_int32, c_uint8, POINTER(c_void_p)],
    "meridian_client_set_add": [c_void_p, c_char_p, c_size_t, c_char_p, c_size_t, c_int32, c_uint8, POINTER(c_void_p)],
    "meridian_client_map_counter_add": [c_void_p, c_char_p, c_size_t, c_char_p, c_size_t, c_int64, c_int32, c_uint8, POINTER(c_void_p)],
    "meridian_client_delete": [c_void_p, c_char_p, c_size_t, c_int32, c_uint8, POINTER(c_void_p)],
    "meridian_client_set_remove": [c_void_p, c_char_p, c_size_t, c_char_p, c_size_t, c_int32, c_uint8, POINTER(c_void_p)],
    "meridian_client_map_lww_set": [c_void_p, c_char_p, c_size_t, c_char_p, c_size_t, c_char_p, c_size_t, c_int32, c_uint8, POINTER(c_void_p)],
    "meridian_client_map_remove": [c_void_p, c_char_p, c_size_t, c_char_p, c_size_t, c_int32, c_uint8, POINTER(c_void_p)],
    "meridian_client_read_json": [c_void_p, c_char_p, c_size_t, POINTER(_Buffer)],
    "meridian_client_batch_commit": [c_void_p, c_void_p, c_int32, c_uint8, POINTER(c_void_p)],
    "meridian_client_retried_after_lost": [],
    "meridian_client_forget_lost": [c_void_p],
    "meridian_feed_open": [c_void_p, c_char_p, c_size_t, c_void_p, c_char_p, POINTER(c_void_p)],
    "meridian_client_watch": [c_void_p, c_char_p, c_size_t, c_void_p, c_char_p, POINTER(c_void_p)],
    "meridian_feed_next": [c_void_p, c_uint64, POINTER(_Buffer)],
    "meridian_feed_position": [c_void_p, POINTER(c_void_p)],
    "meridian_feed_ack": [c_void_p, c_void_p],
    "meridian_feed_free": [c_void_p],
    "meridian_expire": [c_void_p, c_char_p, c_size_t, c_uint64, POINTER(c_void_p)],
    "meridian_expire_at": [c_void_p, c_char_p, c_size_t, c_uint64, POINTER(c_void_p)],
    "meridian_persist": [c_void_p, c_char_p, c_size_t, POINTER(c_void_p)],
    "meridian_expires_at": [c_void_p, c_char_p, c_size_t, POINTER(c_uint64)],
    "meridian_batch_ttl": [c_void_p, c_char_p, c_size_t, c_uint64],
    "meridian_batch_expire_at": [c_void_p, c_char_p, c_size_t, c_uint64],
    "meridian_batch_persist": [c_void_p, c_char_p, c_size_t],
    "meridian_batch_apply": [c_void_p, c_char_p, c_size_t, c_char_p, c_size_t, c_int32, c_char_p, c_size_t, c_int64, c_char_p, c_size_t],
    "meridian_client_expire": [c_void_p, c_char_p, c_size_t, c_uint64, c_int32, c_uint8, POINTER(c_void_p)],
    "meridian_client_expire_at": [c_void_p, c_char_p, c_size_t, c_uint64, c_int32, c_uint8, POINTER(c_void_p)],
    "meridian_client_persist": [c_void_p, c_char_p, c_size_t, c_int32, c_uint8, POINTER(c_void_p)],
    "meridian_client_expires_at": [c_void_p, c_char_p, c_size_t, POINTER(c_uint64)],
}
for _name, _args in _SIGNATURES.items():
    _fn = getattr(_lib, _name)
    _fn.argtypes = _args
    _fn.restype = c_int
_lib.meridian_version.argtypes = []
_lib.meridian_version.restype = c_char_p
_lib.meridian_abi_version.argtypes = []
_lib.meridian_abi_version.restype = ctypes.c_uint32

#: The C ABI version this package was written against.
ABI_VERSION = 1
if _lib.meridian_abi_version() != ABI_VERSION:
    raise ImportError(
        f"libmeridian's ABI is version {_lib.meridian_abi_version()}; this package needs {ABI_VERSION}")


def version() -> str:
    """The version of the loaded ``libmeridian``."""
    return _lib.meridian_version().decode("ascii")


def _check(status: int) -> None:
    if status != 0:
        message = (_lib.meridian_last_error() or b"").decode("utf-8", "replace")
        raise _ERRORS.get(status, MeridianError)(status, message)


def _bytes(value: Bytes, what: str = "key") -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what} must be bytes or str, not {type(value).__name__}")


def _i64(value: int, what: str = "delta") -> int:
    """``value`` as a signed 64-bit integer, refused rather than wrapped."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if not -(1 << 63) <= value < (1 << 63):
        raise OverflowError(f"{what} {value} does not fit in 64 bits")
    return value


def _path(path: "Union[str, os.PathLike]", what: str = "path") -> bytes:
    """A file system path as bytes, refused when it holds a NUL (C would cut it there)."""
    encoded = os.fsencode(path)
    if b"\0" in encoded:
        raise ValueError(f"{what} {path!r} holds a NUL byte")
    return encoded


#: The largest expiry the library takes, in milliseconds (``MERIDIAN_EXPIRY_MS_MAX``: 2^47,
#: about 4,459 years, as a time to live or since the Unix epoch).
_EXPIRY_MS_MAX = 1 << 47


def _expiry_ms(seconds: float, what: str = "ttl") -> int:
    """Seconds (a time to live, or a Unix time) as the whole milliseconds the library takes
    (rounded to the nearest), refused when not a number, negative, or over the library's
    limit (never wrapped)."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"{what} must be a number of seconds, not {type(seconds).__name__}")
    if seconds != seconds or seconds < 0:  # NaN, or before zero
        raise ValueError(f"{what} must be a non-negative number of seconds, not {seconds!r}")
    if seconds > _EXPIRY_MS_MAX / 1000:
        raise ValueError(f"{what} {seconds!r}: at most {_EXPIRY_MS_MAX // 1000} seconds")
    return min(round(seconds * 1000), _EXPIRY_MS_MAX)


def _fields(path: "Iterable[Bytes]") -> bytes:
    """A path of map fields as the library takes it: each preceded by its length as 8
    little-endian bytes."""
    return b"".join(len(f).to_bytes(8, "little") + f for f in (_bytes(p, "field") for p in path))


#: Operation kinds at the end of a path (``MeridianOpKind``).
_OP_LWW_SET, _OP_COUNTER_ADD, _OP_SET_ADD, _OP_SET_REMOVE, _OP_PUT, _OP_REMOVE = range(6)


def _batch_apply(batch: int, key: bytes, kind: int, path: bytes = b"", operand: bytes = b"",
                 delta: int = 0, context: bytes = b"") -> int:
    """Adds operation ``kind`` at the end of the packed ``path`` of ``key`` (the key itself
    when empty) to a batch handle; the status."""
    return int(_lib.meridian_batch_apply(batch, key, len(key), path, len(path), kind, operand,
                                         len(operand), _i64(delta), context, len(context)))


def _ttl_batch(key: bytes, ttl_ms: int, add: Callable[[int], int]) -> _Owned:
    """A batch handle holding one write (``add(handle)`` adds it and returns the status) and a
    time to live on its key: the write with a TTL, applied atomically when committed."""
    h = c_void_p()
    _check(_lib.meridian_batch_new(byref(h)))
    handle = _handle(h)
    batch = _Owned(handle, _lib.meridian_batch_free)
    _check(add(handle))
    _check(_lib.meridian_batch_ttl(handle, key, len(key), ttl_ms))
    return batch


#: A length as the library packs it: 8 little-endian bytes.
_LEN = struct.Struct("<Q")
#: A counter increment as the library packs it.
_I64 = struct.Struct("<q")
#: A packed batch operation's kind and key length.
_KIND_LEN = struct.Struct("<BQ")


def _handle(out: c_void_p) -> int:
    """The handle a successful call wrote (never null after `MERIDIAN_OK`)."""
    if out.value is None:
        raise MeridianError(9, "the library handed out a null handle")
    return out.value


def _json_bytes(value: object) -> bytes:
    """Bytes as a JSON read carries them: a string when UTF-8, else ``{"hex": ...}``."""
    if isinstance(value, dict):
        return bytes.fromhex(value["hex"])
    return str(value).encode("utf-8")


def _prefix_end(prefix: bytes) -> bytes:
    """The first key after every key starting with ``prefix`` (empty: none)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return b""
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


def _take(buf: _Buffer) -> bytes:
    data = ctypes.string_at(buf.data, buf.len) if buf.len else b""
    _lib.meridian_buffer_free(byref(buf))
    return data


def _unpack(packed: bytes) -> List[bytes]:
    out, i = [], 0
    while i < len(packed):
        n = int.from_bytes(packed[i:i + 8], "little")
        out.append(packed[i + 8:i + 8 + n])
        i += 8 + n
    return out


# Every handle still open when the interpreter exits is closed first (while the library is
# still loaded), so that replication stops and memtables are flushed.
_open_handles: "weakref.WeakSet" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for handle in list(_open_handles):
        try:
            handle.close()
        except MeridianError:
            pass


_T = TypeVar("_T")

#: How long the main thread waits for a call on a worker before it lets Python run its
#: signal handlers (a signal caught by another thread is noticed by the main thread only
#: when it runs Python code).
_SLICE = 0.1

_MAIN_THREAD = threading.main_thread().ident


class _Call(Generic[_T]):
    """One call handed to a worker thread: the function (everything that touches the C call's
    arguments and out-parameters, which it holds until the call returns), then its value or
    exception. ``done`` is held until the call has ended."""

    __slots__ = ("fn", "done", "value", "error")

    def __init__(self, fn: Callable[[], _T]) -> None:
        self.fn: Optional[Callable[[], _T]] = fn
        self.done = threading.Lock()
        self.done.acquire()
        self.value: Optional[_T] = None
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        fn, self.fn = self.fn, None
        try:
            if fn is not None:
                self.value = fn()
        except BaseException as e:  # handed to the caller, whatever it is
            self.error = e


class _Workers:
    """Daemon threads that run the main thread's client calls, started when none is free (one
    is enough unless interrupted calls are still running). Daemon threads: the interpreter
    exits without waiting for an interrupted call (a ``ThreadPoolExecutor``'s threads are
    joined at exit, which would hold the exit until the call's timeout)."""

    def __init__(self) -> None:
        self.calls: "queue.SimpleQueue[_Call]" = queue.SimpleQueue()
        # One entry per worker that has finished its call and takes the next (a list: its
        # append and pop are atomic).
        self.free: List[None] = []

    def submit(self, call: "_Call") -> None:
        """Queues ``call`` for a free worker, or starts one (``RuntimeError`` when no thread
        can start: nothing was queued)."""
        try:
            self.free.pop()
        except IndexError:
            threading.Thread(target=self._work, name="meridian-client-call", daemon=True).start()
        self.calls.put(call)

    def _work(self) -> None:
        while True:
            call = self.calls.get()
            call.run()
            # Free again before the caller wakes, so that its next call finds this worker.
            self.free.append(None)
            call.done.release()
            # The last reference when the caller has gone (interrupted): the result is dropped
            # here, freeing what the call produced (a token's handle, a cursor).
            del call


_workers: Optional[_Workers] = None
_workers_lock = threading.Lock()


def _forget_workers() -> None:
    """In a forked child: the parent's workers are not there, and the thread that forked is
    the main thread now."""
    global _workers, _workers_lock, _MAIN_THREAD
    _workers, _workers_lock = None, threading.Lock()
    _MAIN_THREAD = threading.get_ident()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_workers)


def _run(fn: Callable[[], _T]) -> _T:
    """``fn()`` (a call into the library that may block on the cluster), interruptible by
    Ctrl-C. From the main thread (the only one Python runs signal handlers on) it runs on a
    worker thread while the main thread waits in slices of ``_SLICE``, so KeyboardInterrupt
    (or whatever a signal handler raises) comes within a slice. The interrupted call runs to
    its end on the worker and its result is dropped there: ``fn`` builds its result as objects
    that free what they hold (a :class:`Token`, ``bytes``, an :class:`_Owned` handle), never a
    bare handle or buffer. From any other thread ``fn`` runs on it, directly."""
    global _workers
    if threading.get_ident() != _MAIN_THREAD or sys.is_finalizing():
        return fn()
    call = _Call(fn)
    workers = _workers
    if workers is None:
        with _workers_lock:
            if _workers is None:
                _workers = _Workers()
            workers = _workers
    try:
        workers.submit(call)
    except RuntimeError:  # no thread can start (the interpreter is shutting down)
        return fn()
    while not call.done.acquire(timeout=_SLICE):
        pass
    error, call.error = call.error, None
    if error is not None:
        try:
            raise error
        finally:
            del error
    return cast(_T, call.value)


class _Owned:
    """A handle a call produced, freed with ``free`` when closed or dropped (an interrupted
    call's handle is freed when the worker drops its result)."""

    __slots__ = ("handle", "free")

    def __init__(self, handle: int, free: Callable[[int], int]) -> None:
        self.handle: Optional[int] = handle
        self.free = free

    def take(self) -> int:
        """The handle, which the caller frees from now on."""
        handle, self.handle = self.handle, None
        if handle is None:
            raise ClosedError(8, "the handle was taken")
        return handle

    def close(self) -> None:
        handle, self.handle = self.handle, None
        if handle and _lib is not None:
            self.free(handle)

    def __del__(self) -> None:
        self.close()


#: What a thread's last acknowledged client write said (the library keeps it per thread, and
#: the main thread's calls run on workers).
_client_thread = threading.local()


class Token:
    """A causal token: what a session wrote or read. Pass it to another region (or process,
    as :meth:`to_bytes`) to read your writes there."""

    def __init__(self, handle: int) -> None:
        self._handle: Optional[int] = handle

    @classmethod
    def empty(cls) -> "Token":
        """A token naming nothing."""
        h = c_void_p()
        _check(_lib.meridian_token_new(byref(h)))
        return cls(_handle(h))

    @classmethod
    def from_bytes(cls, data: bytes) -> "Token":
        """Parses bytes made by :meth:`to_bytes` (anywhere)."""
        data = _bytes(data, "data")
        h = c_void_p()
        _check(_lib.meridian_token_from_bytes(data, len(data), byref(h)))
        return cls(_handle(h))

    def to_bytes(self) -> bytes:
        """The token's bytes."""
        buf = _Buffer()
        _check(_lib.meridian_token_bytes(self._handle, byref(buf)))
        return _take(buf)

    def merge(self, other: "Token") -> None:
        """Adds everything ``other`` names."""
        _check(_lib.meridian_token_merge(self._handle, other._handle))

    def __del__(self) -> None:
        if self._handle and _lib is not None:
            _lib.meridian_token_free(self._handle)
            self._handle = None


def _token_out() -> c_void_p:
    return c_void_p()


def _token_arg(token: Optional[Token], what: str = "from_token") -> Optional[int]:
    """A token's handle for the library (``None``: a null pointer)."""
    if token is None:
        return None
    if not isinstance(token, Token):
        raise TypeError(f"{what} must be a Token, not {type(token).__name__}")
    return token._handle


def _feed_name(name: Optional[str]) -> Optional[bytes]:
    """A feed name as the library takes it (UTF-8, NUL-terminated; ``None``: unnamed)."""
    if name is None:
        return None
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, not {type(name).__name__}")
    encoded = name.encode("utf-8")
    if b"\0" in encoded:
        raise ValueError(f"name {name!r} holds a NUL character")
    return encoded


@dataclass(frozen=True)
class FeedEvent:
    """One event of a :class:`Feed`. A change: ``key`` and what it holds now, ``values``, as
    :meth:`Engine.read` says it (the latest version, not every version; empty, and ``deleted``,
    once deleted). A reset (``reset``): the writes of ``origin`` from number ``missing`` on
    could not be followed (the log no longer holds them): scan the prefix again. ``token`` is
    the position after the event: a feed opened from it (in any region or process) hands out
    what came after, and :meth:`Feed.ack` takes it."""

    key: bytes
    values: list
    deleted: bool
    token: Token
    reset: bool = False
    origin: Optional[str] = None
    missing: Optional[int] = None

    @classmethod
    def _from_json(cls, data: bytes) -> "FeedEvent":
        import json
        event = json.loads(data)
        token = Token.from_bytes(bytes.fromhex(event["token"]))
        if "reset" in event:
            reset = event["reset"]
            return cls(key=b"", values=[], deleted=False, token=token, reset=True,
                       origin=str(reset["origin"]), missing=int(reset["missing"]))
        values = list(event.get("values") or [])
        return cls(key=_json_bytes(event["key"]), values=values, deleted=not values, token=token)


class Feed:
    """The changes to the keys under a prefix after a position (:meth:`Engine.feed`,
    :meth:`Client.watch`), pulled one event at a time: :meth:`next` waits up to a timeout,
    iterating waits as long as it takes (both interruptible by Ctrl-C within about 0.1 s).
    Delivery is at least once: resuming from a position may hand out some events again. A
    context manager; :attr:`position` and :meth:`ack` (named feeds) say where to resume."""

    def __init__(self, owned: _Owned, owner: object, client_mode: bool) -> None:
        self._owned = owned
        # The engine or client stays open while its feed is referenced.
        self._owner = owner
        self._client_mode = client_mode
        _open_handles.add(self)

    def _h(self) -> int:
        handle = self._owned.handle
        if not handle:
            raise ClosedError(8, "the feed is closed")
        return handle

    def next(self, timeout: float = 1.0) -> Optional[FeedEvent]:
        """The next event, waiting up to ``timeout`` seconds (at most an hour at a time) for
        one; ``None`` when none came in time."""
        if timeout < 0:
            raise ValueError("timeout must not be negative")
        h = self._h()
        # In slices of at most 100 ms, so that Ctrl-C (delivered between library calls)
        # interrupts a long wait.
        deadline = time.monotonic() + timeout
        while True:
            left = max(0.0, deadline - time.monotonic())
            slice_ms = int(min(left, _SLICE) * 1000)
            buf = _Buffer()
            status = _lib.meridian_feed_next(h, slice_ms, byref(buf))
            if status == 0:
                return FeedEvent._from_json(_take(buf))
            if status != 1:
                _check(status)
            if left <= _SLICE:
                return None

    def __iter__(self) -> "Feed":
        return self

    def __next__(self) -> FeedEvent:
        """The next event, waiting as long as it takes (the iteration ends when the feed is
        closed)."""
        while True:
            if not self._owned.handle:
                raise StopIteration
            event = self.next(1.0)
            if event is not None:
                return event

    @property
    def position(self) -> Token:
        """The position after every event handed out so far (and none still to come): resume
        a feed from it, or :meth:`ack` it."""
        t = c_void_p()
        _check(_lib.meridian_feed_position(self._h(), byref(t)))
        return Token(_handle(t))

    def ack(self, token: Optional[Token] = None) -> None:
        """Acknowledges ``token`` (by default :attr:`position`) for a named feed: a feed opened
        later under its name without ``from_token`` resumes after it, and the log is kept
        from there. An unnamed feed holds no position: this does nothing."""
        t = self.position if token is None else token
        handle = _token_arg(t, "token")
        h = self._h()
        if not self._client_mode:
            _check(_lib.meridian_feed_ack(h, handle))
            return

        def call(t: Token = t) -> None:  # holds the token until the call ends
            _check(_lib.meridian_feed_ack(h, handle))

        _run(call)

    def close(self) -> None:
        """Frees the feed (a second close does nothing; a named feed's acknowledged position
        stays)."""
        self._owned.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # a finalizer never raises
            pass

    def __enter__(self) -> "Feed":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Siblings:
    """A register's values (several when writes were concurrent) and the context to write
    back (:meth:`Engine.put` supersedes exactly what this read saw)."""

    def __init__(self, values: List[bytes], context: bytes) -> None:
        self.values = values
        self.context = context

    def __repr__(self) -> str:
        return f"Siblings({self.values!r})"


class Batch:
    """Operations committed atomically by :meth:`Engine.commit` or :meth:`Client.commit` (all
    or nothing). They are packed here and handed to the library in one call at the commit, so
    a bad one (a key too long...) is reported by the commit. An expiry (:meth:`ttl`,
    :meth:`expire_at`, :meth:`persist`) covers the batch's other writes to its key wherever it
    stands in the batch: a write with a TTL is a batch holding both."""

    def __init__(self) -> None:
        h = c_void_p()
        _check(_lib.meridian_batch_new(byref(h)))
        self._handle: Optional[int] = _handle(h)
        self._packed = bytearray()
        # Expiries to hand over at the commit: (key, kind, milliseconds), kind 0 a time to
        # live, 1 a Unix time, 2 a persist.
        self._expiries: List[Tuple[bytes, int, int]] = []

    def _add(self, kind: int, key: Bytes, operand: bytes) -> "Batch":
        k = key if type(key) is bytes else _bytes(key)
        packed = self._packed
        packed += _KIND_LEN.pack(kind, len(k))
        packed += k
        packed += operand
        return self

    def lww_set(self, key: Bytes, value: Bytes) -> "Batch":
        """A last-writer-wins write."""
        k = key if type(key) is bytes else _bytes(key)
        v = value if type(value) is bytes else _bytes(value, "value")
        packed = self._packed
        packed += _KIND_LEN.pack(0, len(k))
        packed += k
        packed += _LEN.pack(len(v))
        packed += v
        return self

    def counter_add(self, key: Bytes, delta: int) -> "Batch":
        """A counter increment."""
        return self._add(1, key, _I64.pack(_i64(delta)))

    def set_add(self, key: Bytes, elem: Bytes) -> "Batch":
        """A set insertion."""
        e = _bytes(elem, "elem")
        return self._add(2, key, _LEN.pack(len(e)) + e)

    def delete(self, key: Bytes) -> "Batch":
        """A delete."""
        return self._add(3, key, b"")

    def ttl(self, key: Bytes, seconds: float) -> "Batch":
        """A time to live of ``seconds`` (to the millisecond) from the batch's commit for
        ``key``: its value, the batch's writes to it included, stops being read then
        (:meth:`Engine.expire`)."""
        self._expiries.append((_bytes(key), 0, _expiry_ms(seconds, "seconds")))
        return self

    def expire_at(self, key: Bytes, unix_seconds: float) -> "Batch":
        """An expiry at the Unix time ``unix_seconds`` for ``key`` (:meth:`Engine.expire_at`)."""
        self._expiries.append((_bytes(key), 1, _expiry_ms(unix_seconds, "unix_seconds")))
        return self

    def persist(self, key: Bytes) -> "Batch":
        """The removal of ``key``'s pending expiries (:meth:`Engine.persist`)."""
        self._expiries.append((_bytes(key), 2, 0))
        return self

    def _flush(self) -> int:
        """Hands the packed operations (then the expiries) to the library; the batch's
        handle."""
        if self._handle is None:
            raise ClosedError(8, "the batch is freed")
        if self._packed:
            packed = bytes(self._packed)
            self._packed = bytearray()
            _check(_lib.meridian_batch_add_packed(self._handle, packed, len(packed)))
        expiries, self._expiries = self._expiries, []
        for key, kind, ms in expiries:
            if kind == 0:
                _check(_lib.meridian_batch_ttl(self._handle, key, len(key), ms))
            elif kind == 1:
                _check(_lib.meridian_batch_expire_at(self._handle, key, len(key), ms))
            else:
                _check(_lib.meridian_batch_persist(self._handle, key, len(key)))
        return self._handle

    def __del__(self) -> None:
        if getattr(self, "_handle", None) and _lib is not None:
            _lib.meridian_batch_free(self._handle)
            self._handle = None


class Engine:
    """An embedded engine: :meth:`open` a local one, or :meth:`open_node` one that replicates
    by itself with the peers a node configuration names. A context manager; thread-safe."""

    def __init__(self, handle: int) -> None:
        self._handle: Optional[int] = handle
        _open_handles.add(self)

    @classmethod
    def open(cls, path: Union[str, os.PathLike]) -> "Engine":
        """Opens (or creates) a local engine on a directory."""
        h = c_void_p()
        _check(_lib.meridian_engine_open(_path(path), byref(h)))
        return cls(_handle(h))

    @classmethod
    def open_node(cls, config: Union[str, os.PathLike]) -> "Engine":
        """Opens the engine a node configuration (TOML) describes and replicates it."""
        h = c_void_p()
        _check(_lib.meridian_engine_open_node(_path(config, "config"), byref(h)))
        return cls(_handle(h))

    def close(self) -> None:
        """Stops replication and flushes (a second close does nothing)."""
        if self._handle:
            handle, self._handle = self._handle, None
            _check(_lib.meridian_engine_close(handle))

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # a finalizer never raises
            pass

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _h(self) -> int:
        if not self._handle:
            raise ClosedError(8, "the engine is closed")
        return self._handle

    def _write(self, fn: Callable[..., int], *args: object) -> Token:
        t = c_void_p()
        _check(fn(self._h(), *args, byref(t)))
        return Token(_handle(t))

    def _write_ttl(self, key: bytes, ttl: float, add: Callable[[int], int]) -> Token:
        """A write (``add(batch)`` adds it to a batch handle) with a time to live of ``ttl``
        seconds on its key, atomically: one batch holding both."""
        ms = _expiry_ms(ttl)
        h = self._h()
        batch = _ttl_batch(key, ms, add)
        t = c_void_p()
        _check(_lib.meridian_batch_commit(h, batch.handle, byref(t)))
        batch.close()
        return Token(_handle(t))

    def put(self, key: Bytes, value: Bytes, context: Optional[bytes] = None,
            ttl: Optional[float] = None) -> Token:
        """Multi-value register write; with ``context`` (from :meth:`get`) it supersedes
        exactly what that read saw. With a ``ttl`` (seconds), the key's value stops being read
        that long after this write (:meth:`expire`), atomically with it; without, the key's
        pending expiry, if any, covers this write too (as for every write)."""
        k, v, c = _bytes(key), _bytes(value, "value"), context or b""
        if ttl is not None:
            return self._write_ttl(k, ttl, lambda b: _batch_apply(b, k, _OP_PUT, operand=v, context=c))
        return self._write(_lib.meridian_register_put, k, len(k), v, len(v), c, len(c))

    def get(self, key: Bytes) -> Optional[Siblings]:
        """A register's siblings, or ``None``."""
        k = _bytes(key)
        values, context = _Buffer(), _Buffer()
        status = _lib.meridian_register_get(self._h(), k, len(k), byref(values), byref(context))
        if status == 1:
            return None
        _check(status)
        return Siblings(_unpack(_take(values)), _take(context))

    def lww_set(self, key: Bytes, value: Bytes, ttl: Optional[float] = None) -> Token:
        """Last-writer-wins write (with a ``ttl`` in seconds, as :meth:`put`)."""
        k, v = _bytes(key), _bytes(value, "value")
        if ttl is not None:
            return self._write_ttl(
                k, ttl, lambda b: _lib.meridian_batch_lww_set(b, k, len(k), v, len(v)))
        return self._write(_lib.meridian_lww_set, k, len(k), v, len(v))

    def lww_get(self, key: Bytes) -> Optional[bytes]:
        """A last-writer-wins value, or ``None``."""
        k = _bytes(key)
        buf = _Buffer()
        status = _lib.meridian_lww_get(self._h(), k, len(k), byref(buf))
        if status == 1:
            return None
        _check(status)
        return _take(buf)

    def lww_get_many(self, keys: "Iterable[Bytes]") -> List[Optional[bytes]]:
        """The last-writer-wins values of many keys, in order (``None`` where a key holds
        none), in one call into the library: where one call per key costs more than the read.
        At most 10,000 keys."""
        parts = []
        for key in keys:
            k = key if type(key) is bytes else _bytes(key)
            parts.append(_LEN.pack(len(k)))
            parts.append(k)
        packed = b"".join(parts)
        buf = _Buffer()
        _check(_lib.meridian_lww_get_many(self._h(), packed, len(packed), byref(buf)))
        data = _take(buf)
        out: List[Optional[bytes]] = []
        i, end = 0, len(data)
        while i < end:
            if data[i] == 0:
                out.append(None)
                i += 1
            else:
                (n,) = _LEN.unpack_from(data, i + 1)
                out.append(data[i + 9:i + 9 + n])
                i += 9 + n
        return out

    def counter_add(self, key: Bytes, delta: int, ttl: Optional[float] = None) -> Token:
        """Adds ``delta`` to a counter (with a ``ttl`` in seconds, as :meth:`put`: once it
        expires, the next increment counts from zero)."""
        k, d = _bytes(key), _i64(delta)
        if ttl is not None:
            return self._write_ttl(k, ttl, lambda b: _lib.meridian_batch_counter_add(b, k, len(k), d))
        return self._write(_lib.meridian_counter_add, k, len(k), d)

    def counter_get(self, key: Bytes) -> Optional[int]:
        """A counter's value, or ``None``."""
        k = _bytes(key)
        n = c_int64()
        status = _lib.meridian_counter_get(self._h(), k, len(k), byref(n))
        if status == 1:
            return None
        _check(status)
        return n.value

    def delete(self, key: Bytes) -> Token:
        """Deletes a key."""
        k = _bytes(key)
        return self._write(_lib.meridian_delete, k, len(k))

    def set_add(self, key: Bytes, elem: Bytes, ttl: Optional[float] = None) -> Token:
        """Adds an element to a set (with a ``ttl`` in seconds, as :meth:`put`)."""
        k, e = _bytes(key), _bytes(elem, "elem")
        if ttl is not None:
            return self._write_ttl(k, ttl, lambda b: _lib.meridian_batch_set_add(b, k, len(k), e, len(e)))
        return self._write(_lib.meridian_set_add, k, len(k), e, len(e))

    def set_remove(self, key: Bytes, elem: Bytes, ttl: Optional[float] = None) -> Token:
        """Removes an element from a set (with a ``ttl`` in seconds, as :meth:`put`)."""
        k, e = _bytes(key), _bytes(elem, "elem")
        if ttl is not None:
            return self._write_ttl(k, ttl, lambda b: _batch_apply(b, k, _OP_SET_REMOVE, operand=e))
        return self._write(_lib.meridian_set_remove, k, len(k), e, len(e))

    def set_get(self, key: Bytes) -> Optional[List[bytes]]:
        """A set's members in order, or ``None``."""
        k = _bytes(key)
        buf = _Buffer()
        status = _lib.meridian_set_get(self._h(), k, len(k), byref(buf))
        if status == 1:
            return None
        _check(status)
        return _unpack(_take(buf))

    def map_lww_set(self, key: Bytes, field: Bytes, value: Bytes,
                    ttl: Optional[float] = None) -> Token:
        """Sets a map field to a last-writer-wins value (with a ``ttl`` in seconds for the whole
        key, as :meth:`put`)."""
        k, f, v = _bytes(key), _bytes(field, "field"), _bytes(value, "value")
        if ttl is not None:
            return self._write_ttl(k, ttl, lambda b: _batch_apply(b, k, _OP_LWW_SET, _fields([f]), v))
        return self._write(_lib.meridian_map_lww_set, k, len(k), f, len(f), v, len(v))

    def map_counter_add(self, key: Bytes, field: Bytes, delta: int,
                        ttl: Optional[float] = None) -> Token:
        """Adds ``delta`` to a map field's counter (with a ``ttl`` in seconds for the whole key,
        as :meth:`put`)."""
        k, f, d = _bytes(key), _bytes(field, "field"), _i64(delta)
        if ttl is not None:
            return self._write_ttl(
                k, ttl, lambda b: _batch_apply(b, k, _OP_COUNTER_ADD, _fields([f]), delta=d))
        return self._write(_lib.meridian_map_counter_add, k, len(k), f, len(f), d)

    def map_remove(self, key: Bytes, field: Bytes, ttl: Optional[float] = None) -> Token:
        """Removes a map field (with a ``ttl`` in seconds for the whole key, as :meth:`put`)."""
        k, f = _bytes(key), _bytes(field, "field")
        if ttl is not None:
            return self._write_ttl(k, ttl, lambda b: _batch_apply(b, k, _OP_REMOVE, _fields([f])))
        return self._write(_lib.meridian_map_remove, k, len(k), f, len(f))

    def map_get_lww(self, key: Bytes, field: Bytes) -> Optional[bytes]:
        """A map field's last-writer-wins value, or ``None``."""
        k, f = _bytes(key), _bytes(field, "field")
        buf = _Buffer()
        status = _lib.meridian_map_get_lww(self._h(), k, len(k), f, len(f), byref(buf))
        if status == 1:
            return None
        _check(status)
        return _take(buf)

    def map_get_counter(self, key: Bytes, field: Bytes) -> Optional[int]:
        """A map field's counter, or ``None``."""
        k, f = _bytes(key), _bytes(field, "field")
        n = c_int64()
        status = _lib.meridian_map_get_counter(self._h(), k, len(k), f, len(f), byref(n))
        if status == 1:
            return None
        _check(status)
        return n.value

    _MAP_OPS = {"lww_set": 0, "counter_add": 1, "set_add": 2, "set_remove": 3, "put": 4, "remove": 5}

    def map_apply(self, key: Bytes, path: List[Bytes], op: str, operand: Bytes = b"",
                  delta: int = 0, context: Optional[bytes] = None,
                  ttl: Optional[float] = None) -> Token:
        """Applies ``op`` (``"lww_set"``, ``"counter_add"``, ``"set_add"``, ``"set_remove"``,
        ``"put"``, ``"remove"``) at a path of nested map fields under ``key`` (with a ``ttl`` in
        seconds for the whole key, as :meth:`put`)."""
        if op not in self._MAP_OPS:
            raise ValueError(f"op {op!r}: one of {sorted(self._MAP_OPS)}")
        k, o, c = _bytes(key), _bytes(operand, "operand"), context or b""
        packed, kind, d = _fields(path), self._MAP_OPS[op], _i64(delta)
        if ttl is not None:
            if not packed:  # in a batch, an empty path is the key itself
                raise InvalidArgumentError(2, "path: at least one field")
            return self._write_ttl(k, ttl, lambda b: _batch_apply(b, k, kind, packed, o, d, c))
        return self._write(_lib.meridian_map_apply, k, len(k), packed, len(packed), kind,
                           o, len(o), d, c, len(c))

    def expire(self, key: Bytes, ttl: float) -> Token:
        """Gives ``key`` a time to live of ``ttl`` seconds (to the millisecond) from this
        write: what it holds now, and what later writes without a ``ttl`` add, stops being read
        then, in every region alike (the time is the writer's hybrid logical clock, so every
        region agrees; a region reads the value at most until that time plus the clocks' skew
        bound). On an absent key it changes nothing."""
        k = _bytes(key)
        return self._write(_lib.meridian_expire, k, len(k), _expiry_ms(ttl))

    def expire_at(self, key: Bytes, unix_seconds: float) -> Token:
        """Makes ``key`` expire at the Unix time ``unix_seconds`` (a time already past expires
        it at once), as :meth:`expire`."""
        k = _bytes(key)
        return self._write(_lib.meridian_expire_at, k, len(k), _expiry_ms(unix_seconds, "unix_seconds"))

    def persist(self, key: Bytes) -> Token:
        """Removes ``key``'s pending expiry: it is kept until deleted (or given a ``ttl``
        again)."""
        k = _bytes(key)
        return self._write(_lib.meridian_persist, k, len(k))

    def expires_at(self, key: Bytes) -> Optional[float]:
        """When ``key``'s value stops being read (Unix seconds), or ``None`` when it holds
        nothing (or has expired) or has no expiry."""
        k = _bytes(key)
        at = c_uint64()
        status = _lib.meridian_expires_at(self._h(), k, len(k), byref(at))
        if status == 1:
            return None
        _check(status)
        return at.value / 1000

    def read(self, key: Bytes) -> Optional[list]:
        """Everything ``key`` holds, any type and nesting: a list with one dict per type
        (``{"counter": 3}``, ``{"map": {"field": [...]}}``...), or ``None``."""
        import json
        k = _bytes(key)
        buf = _Buffer()
        status = _lib.meridian_read_json(self._h(), k, len(k), byref(buf))
        if status == 1:
            return None
        _check(status)
        return json.loads(_take(buf))

    def commit(self, batch: Batch) -> Token:
        """Commits a batch atomically."""
        t = c_void_p()
        _check(_lib.meridian_batch_commit(self._h(), batch._flush(), byref(t)))
        return Token(_handle(t))

    def scan(self, prefix: Bytes = b"", limit: Optional[int] = None,
             page: int = 1000) -> Iterator[Tuple[bytes, str]]:
        """Keys starting with ``prefix``, in order, each with its value's type (``"lww"``,
        ``"counter"``, ``"register"``, ``"set"``, ``"map"``): every one (or the first ``limit``),
        read ``page`` keys at a time."""
        p = _bytes(prefix, "prefix")
        if limit is not None and limit < 0:
            raise ValueError("limit must not be negative")
        if page < 1:
            raise ValueError("page must be at least 1")
        end = _prefix_end(p)
        start, seen = p, 0
        while limit is None or seen < limit:
            want = page if limit is None else min(page, limit - seen)
            scan = c_void_p()
            _check(_lib.meridian_scan_range(self._h(), start, len(start), end, len(end), want,
                                            byref(scan)))
            got, last = 0, None
            try:
                while True:
                    key, kind = _Buffer(), c_int32()
                    status = _lib.meridian_scan_next(scan, byref(key), byref(kind))
                    if status == 1:
                        break
                    _check(status)
                    last = _take(key)
                    got += 1
                    yield last, KIND_NAMES.get(kind.value, "register")
            finally:
                _lib.meridian_scan_free(scan)
            seen += got
            if got < want or last is None:
                return
            start = last + b"\0"

    def wait_covers(self, token: Token, timeout: float) -> bool:
        """Waits up to ``timeout`` seconds until this replica has applied ``token``'s writes."""
        if timeout < 0:
            raise ValueError("timeout must not be negative")
        # In slices of at most 100 ms, so that Ctrl-C (delivered between library calls)
        # interrupts a long wait.
        deadline = time.monotonic() + timeout
        covered = c_int32()
        while True:
            left = max(0.0, deadline - time.monotonic())
            slice_ms = int(min(left, 0.1) * 1000)
            _check(_lib.meridian_wait_covers(self._h(), token._handle, slice_ms, byref(covered)))
            if covered.value == 1 or left <= 0.1:
                return covered.value == 1

    def feed(self, prefix: Bytes = b"", from_token: Optional[Token] = None,
             name: Optional[str] = None) -> Feed:
        """Follows the changes to the keys starting with ``prefix`` (every key when empty)
        after ``from_token`` (an event's token or a feed's position, from any region or
        process), else after every write this replica has applied now. With a ``name``
        (1 to 256 bytes of UTF-8) the feed is named: :meth:`Feed.ack` records its position
        here, which keeps the log from there on, and a feed of that name opened later without
        ``from_token`` resumes there."""
        p = _bytes(prefix, "prefix")
        n = _feed_name(name)
        out = c_void_p()
        _check(_lib.meridian_feed_open(self._h(), p, len(p), _token_arg(from_token), n, byref(out)))
        return Feed(_Owned(_handle(out), _lib.meridian_feed_free), self, client_mode=False)


class Client:
    """A routed client of a cluster (nearest healthy region, failover, a session token that
    follows it), from the cluster file of ``meridian client --cluster``. A context manager;
    thread-safe: calls from several threads run at once, each seeing every write the client
    had acknowledged before it started.

    Ctrl-C interrupts a call made from the main thread (opening the client, a write, a read,
    a commit, a scan's page): the call runs on a worker thread while the main thread waits,
    so ``KeyboardInterrupt`` (or what another signal handler raises) comes within about
    0.1 s, not when the cluster answers (a region waiting for the session's writes, a
    failover, a request timeout of up to 15 s). An interrupted call is not cancelled: it runs
    to its end in the background and its result is dropped (what it produced, a token or a
    buffer, is freed). A write may still apply, as after a lost answer: its outcome is
    unknown (if it applied, the session's token names it); retry it only where applying it
    twice is harmless (not a counter increment). Calls from other threads (to which Python
    delivers no signals) run on the calling thread."""

    def __init__(self, cluster_file: Union[str, os.PathLike]) -> None:
        self._handle: Optional[int] = None
        path = _path(cluster_file, "cluster_file")

        def call() -> _Owned:
            h = c_void_p()
            _check(_lib.meridian_client_open(path, byref(h)))
            return _Owned(_handle(h), _lib.meridian_client_close)

        self._handle = _run(call).take()
        _open_handles.add(self)

    def close(self) -> None:
        """Closes the client's connections (a second close does nothing)."""
        if self._handle:
            handle, self._handle = self._handle, None
            _check(_lib.meridian_client_close(handle))

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # a finalizer never raises
            pass

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _h(self) -> int:
        if not self._handle:
            raise ClosedError(8, "the client is closed")
        return self._handle

    def _write(self, fn: Callable[..., int], *args: object) -> Token:
        """A write: ``fn(handle, *args, &token)``, interruptible (see the class)."""
        h = self._h()

        def call() -> Tuple[Token, bool]:
            t = c_void_p()
            _check(fn(h, *args, byref(t)))
            # The library keeps this per thread: read it on the thread that wrote.
            return Token(_handle(t)), _lib.meridian_client_retried_after_lost() == 1

        token, retried = _run(call)
        _client_thread.retried_after_lost = retried
        return token

    def _get(self, fn: Callable[..., int], *args: object) -> Optional[bytes]:
        """A read into a buffer: ``fn(handle, *args, &buffer)``; ``None`` when not found."""
        h = self._h()

        def call() -> Optional[bytes]:
            buf = _Buffer()
            status = fn(h, *args, byref(buf))
            if status == 1:
                return None
            _check(status)
            return _take(buf)

        return _run(call)

    @staticmethod
    def _level(consistency: Union[str, int]) -> Tuple[int, int]:
        if isinstance(consistency, bool):
            raise TypeError("consistency: a name or a number of regions, not a bool")
        if isinstance(consistency, int):
            if not 1 <= consistency <= 255:
                raise ValueError(f"consistency {consistency}: a number of regions from 1 to 255")
            return 3, consistency
        if consistency not in CONSISTENCY:
            raise ValueError(f"consistency {consistency!r}: local, majority, all or a number")
        return CONSISTENCY[consistency], 0

    def _write_ttl(self, key: bytes, ttl: float, add: Callable[[int], int],
                   consistency: Union[str, int]) -> Token:
        """A write (``add(batch)`` adds it to a batch handle) with a time to live of ``ttl``
        seconds on its key, atomically (one batch holding both), as :meth:`commit`."""
        ms = _expiry_ms(ttl)
        level, n = self._level(consistency)
        h = self._h()
        batch = _ttl_batch(key, ms, add)
        b = batch.handle

        def call(batch: _Owned = batch) -> Tuple[Token, bool]:  # holds it until the call ends
            t = c_void_p()
            _check(_lib.meridian_client_batch_commit(h, b, level, n, byref(t)))
            return Token(_handle(t)), _lib.meridian_client_retried_after_lost() == 1

        token, retried = _run(call)
        _client_thread.retried_after_lost = retried
        return token

    def lww_set(self, key: Bytes, value: Bytes, consistency: Union[str, int] = "local",
                ttl: Optional[float] = None) -> Token:
        """A last-writer-wins write, acknowledged when that many regions hold it. With a
        ``ttl`` (seconds), the key's value stops being read that long after this write
        (:meth:`expire`), atomically with it."""
        k, v = _bytes(key), _bytes(value, "value")
        if ttl is not None:
            return self._write_ttl(
                k, ttl, lambda b: _lib.meridian_batch_lww_set(b, k, len(k), v, len(v)), consistency)
        level, n = self._level(consistency)
        return self._write(_lib.meridian_client_lww_set, k, len(k), v, len(v), level, n)

    def counter_add(self, key: Bytes, delta: int, consistency: Union[str, int] = "local",
                    ttl: Optional[float] = None) -> Token:
        """A counter increment (never retried where it could count twice:
        :class:`UnknownOutcomeError` instead; with a ``ttl`` in seconds, as :meth:`lww_set`)."""
        k, d = _bytes(key), _i64(delta)
        if ttl is not None:
            return self._write_ttl(
                k, ttl, lambda b: _lib.meridian_batch_counter_add(b, k, len(k), d), consistency)
        level, n = self._level(consistency)
        return self._write(_lib.meridian_client_counter_add, k, len(k), d, level, n)

    def put(self, key: Bytes, value: Bytes, context: Optional[bytes] = None,
            consistency: Union[str, int] = "local", ttl: Optional[float] = None) -> Token:
        """A multi-value register write (with a read's ``context``, or none; with a ``ttl`` in
        seconds, as :meth:`lww_set`)."""
        k, v, c = _bytes(key), _bytes(value, "value"), context or b""
        if ttl is not None:
            return self._write_ttl(
                k, ttl, lambda b: _batch_apply(b, k, _OP_PUT, operand=v, context=c), consistency)
        level, n = self._level(consistency)
        return self._write(_lib.meridian_client_register_put, k, len(k), v, len(v), c, len(c),
                           level, n)

    def set_add(self, key: Bytes, elem: Bytes, consistency: Union[str, int] = "local",
                ttl: Optional[float] = None) -> Token:
        """A set insertion (with a ``ttl`` in seconds, as :meth:`lww_set`)."""
        k, e = _bytes(key), _bytes(elem, "elem")
        if ttl is not None:
            return self._write_ttl(
                k, ttl, lambda b: _lib.meridian_batch_set_add(b, k, len(k), e, len(e)), consistency)
        level, n = self._level(consistency)
        return self._write(_lib.meridian_client_set_add, k, len(k), e, len(e), level, n)

    def map_counter_add(self, key: Bytes, field: Bytes, delta: int,
                        consistency: Union[str, int] = "local",
                        ttl: Optional[float] = None) -> Token:
        """A map field counter increment (never retried where it could count twice; with a
        ``ttl`` in seconds for the whole key, as :meth:`lww_set`)."""
        k, f, d = _bytes(key), _bytes(field, "field"), _i64(delta)
        if ttl is not None:
            return self._write_ttl(
                k, ttl, lambda b: _batch_apply(b, k, _OP_COUNTER_ADD, _fields([f]), delta=d),
                consistency)
        level, n = self._level(consistency)
        return self._write(_lib.meridian_client_map_counter_add, k, len(k), f, len(f), d, level, n)

    def delete(self, key: Bytes, consistency: Union[str, int] = "local") -> Token:
        """A delete."""
        k = _bytes(key)
        level, n = self._level(consistency)
        return self._write(_lib.meridian_client_delete, k, len(k), level, n)

    def set_remove(self, key: Bytes, elem: Bytes, consistency: Union[str, int] = "local",
                   ttl: Optional[float] = None) -> Token:
        """A set removal: it covers every add of the element this session wrote or read, in
        whichever region takes it (``NotYetVisibleError`` while none that can is reachable;
        with a ``ttl`` in seconds, as :meth:`lww_set`)."""
        k, e = _bytes(key), _bytes(elem, "elem")
        if ttl is not None:
            return self._write_ttl(
                k, ttl, lambda b: _batch_apply(b, k, _OP_SET_REMOVE, operand=e), consistency)
        level, n = self._level(consistency)
        return self._write(_lib.meridian_client_set_remove, k, len(k), e, len(e), level, n)

    def map_lww_set(self, key: Bytes, field: Bytes, value: Bytes,
                    consistency: Union[str, int] = "local",
                    ttl: Optional[float] = None) -> Token:
        """A map field's last-writer-wins write (with a ``ttl`` in seconds for the whole key,
        as :meth:`lww_set`)."""
        k, f, v = _bytes(key), _bytes(field, "field"), _bytes(value, "value")
        if ttl is not None:
            return self._write_ttl(
                k, ttl, lambda b: _batch_apply(b, k, _OP_LWW_SET, _fields([f]), v), consistency)
        level, n = self._level(consistency)
        return self._write(_lib.meridian_client_map_lww_set, k, len(k), f, len(f), v, len(v),
                           level, n)

    def map_remove(self, key: Bytes, field: Bytes, consistency: Union[str, int] = "local",
                   ttl: Optional[float] = None) -> Token:
        """A map field's removal (covers what this session wrote or read of it; with a ``ttl``
        in seconds for the whole key, as :meth:`lww_set`)."""
        k, f = _bytes(key), _bytes(field, "field")
        if ttl is not None:
            return self._write_ttl(
                k, ttl, lambda b: _batch_apply(b, k, _OP_REMOVE, _fields([f])), consistency)
        level, n = self._level(consistency)
        return self._write(_lib.meridian_client_map_remove, k, len(k), f, len(f), level, n)

    def expire(self, key: Bytes, ttl: float, consistency: Union[str, int] = "local") -> Token:
        """Gives ``key`` a time to live of ``ttl`` seconds, as :meth:`Engine.expire` (a region
        of a release before client protocol 8 refuses it: :class:`RefusedError`)."""
        k, ms = _bytes(key), _expiry_ms(ttl)
        level, n = self._level(consistency)
        return self._write(_lib.meridian_client_expire, k, len(k), ms, level, n)

    def expire_at(self, key: Bytes, unix_seconds: float,
                  consistency: Union[str, int] = "local") -> Token:
        """Makes ``key`` expire at the Unix time ``unix_seconds``, as :meth:`Engine.expire_at`."""
        k, ms = _bytes(key), _expiry_ms(unix_seconds, "unix_seconds")
        level, n = self._level(consistency)
        return self._write(_lib.meridian_client_expire_at, k, len(k), ms, level, n)

    def persist(self, key: Bytes, consistency: Union[str, int] = "local") -> Token:
        """Removes ``key``'s pending expiry, as :meth:`Engine.persist`."""
        k = _bytes(key)
        level, n = self._level(consistency)
        return self._write(_lib.meridian_client_persist, k, len(k), level, n)

    def expires_at(self, key: Bytes) -> Optional[float]:
        """When ``key``'s value stops being read (Unix seconds), as the nearest region that
        answers sees it (it does not wait for this session's writes to reach it: write with
        ``consistency="all"`` to find them in any region); ``None`` when it holds nothing or
        has no expiry."""
        k = _bytes(key)
        h = self._h()

        def call() -> Optional[float]:
            at = c_uint64()
            status = _lib.meridian_client_expires_at(h, k, len(k), byref(at))
            if status == 1:
                return None
            _check(status)
            return at.value / 1000

        return _run(call)

    def commit(self, batch: Batch, consistency: Union[str, int] = "local") -> Token:
        """Commits a batch atomically through the client (its operations stay in the batch when
        the commit fails). An interrupted commit (see the class) may still apply, and if it
        fails its operations come back into the batch: commit a new batch rather than this one
        again."""
        level, n = self._level(consistency)
        h, b = self._h(), batch._flush()

        def call(batch: Batch = batch) -> Tuple[Token, bool]:  # holds it until the call ends
            t = c_void_p()
            _check(_lib.meridian_client_batch_commit(h, b, level, n, byref(t)))
            return Token(_handle(t)), _lib.meridian_client_retried_after_lost() == 1

        token, retried = _run(call)
        _client_thread.retried_after_lost = retried
        return token

    def read(self, key: Bytes) -> Optional[list]:
        """Everything ``key`` holds, as :meth:`Engine.read` says it, from the nearest region
        holding this session's writes; ``None`` when it holds nothing."""
        import json
        k = _bytes(key)
        data = self._get(_lib.meridian_client_read_json, k, len(k))
        return None if data is None else json.loads(data)

    def scan(self, prefix: Bytes = b"", limit: Optional[int] = None) -> Iterator[Tuple[bytes, str]]:
        """Keys starting with ``prefix``, in order, each with its value's type, read a page at a
        time from the nearest region that has applied this client's writes (each page reflects
        every write the client made or saw before it); after a failover the scan goes on in
        the next region from the last key it yielded (each key once, in order)."""
        p = _bytes(prefix, "prefix")
        if limit is not None and limit < 0:
            raise ValueError("limit must not be negative")
        want = (1 << 64) - 1 if limit is None else limit
        h = self._h()

        def open_scan() -> _Owned:
            scan = c_void_p()
            _check(_lib.meridian_client_scan_prefix(h, p, len(p), want, byref(scan)))
            return _Owned(_handle(scan), _lib.meridian_scan_free)

        cursor = _run(open_scan)
        # The cursor's handle, while ``cursor`` is referenced (freed with it). A row read on a
        # worker after the scan was left (interrupted) finds its cursor still live: a freed
        # handle only goes once the calls on it end.
        scan = cursor.handle

        def next_row() -> Optional[Tuple[bytes, str]]:
            key, kind = _Buffer(), c_int32()
            status = _lib.meridian_scan_next(scan, byref(key), byref(kind))
            if status == 1:
                return None
            _check(status)
            return _take(key), KIND_NAMES.get(kind.value, "register")

        try:
            while True:
                row = _run(next_row)
                if row is None:
                    return
                yield row
        finally:
            cursor.close()

    def set_get(self, key: Bytes) -> Optional[List[bytes]]:
        """A set's members, or ``None``."""
        for value in self.read(key) or []:
            if "set" in value:
                return [_json_bytes(e) for e in value["set"]]
        return None

    def map_get_lww(self, key: Bytes, field: Bytes) -> Optional[bytes]:
        """A map field's last-writer-wins value, or ``None``."""
        for value in self._map_field(key, field):
            if "lww" in value:
                return _json_bytes(value["lww"])
        return None

    def map_get_counter(self, key: Bytes, field: Bytes) -> Optional[int]:
        """A map field's counter, or ``None``."""
        for value in self._map_field(key, field):
            if "counter" in value:
                return int(value["counter"])
        return None

    def _map_field(self, key: Bytes, field: Bytes) -> list:
        f = _bytes(field, "field")
        try:
            name = f.decode("utf-8")
        except UnicodeDecodeError:
            name = "0x" + f.hex()
        for value in self.read(key) or []:
            if "map" in value:
                return value["map"].get(name, [])
        return []

    def read_majority(self, enabled: bool = True) -> None:
        """Makes later reads gather every write a majority of regions holds (or not)."""
        _check(_lib.meridian_client_read_majority(self._h(), 1 if enabled else 0))

    def lww_get(self, key: Bytes) -> Optional[bytes]:
        """A last-writer-wins value where this session's writes are, or ``None``."""
        k = _bytes(key)
        return self._get(_lib.meridian_client_lww_get, k, len(k))

    def counter_get(self, key: Bytes) -> Optional[int]:
        """A counter's value where this session's writes are, or ``None``."""
        k = _bytes(key)
        h = self._h()

        def call() -> Optional[int]:
            n = c_int64()
            status = _lib.meridian_client_counter_get(h, k, len(k), byref(n))
            if status == 1:
                return None
            _check(status)
            return n.value

        return _run(call)

    @property
    def token(self) -> Token:
        """The session's token."""
        t = c_void_p()
        _check(_lib.meridian_client_token(self._h(), byref(t)))
        return Token(_handle(t))

    def merge_token(self, token: Token) -> None:
        """Adds another session's writes to this one's."""
        _check(_lib.meridian_client_merge_token(self._h(), token._handle))

    def forget_lost(self) -> None:
        """Forgets the session's writes the last ``UncoverableError`` named (lost with a
        region's disk), so reads stop waiting for them; ``NotFoundError`` when no call reported
        any."""
        _check(_lib.meridian_client_forget_lost(self._h()))

    def watch(self, prefix: Bytes = b"", from_token: Optional[Token] = None,
              name: Optional[str] = None) -> Feed:
        """Follows the changes to the keys starting with ``prefix`` through the cluster, from
        the nearest region that serves the watch, after ``from_token`` (else after every write
        that region has applied), as :meth:`Engine.feed` (``name`` names the feed in the
        regions). When the region fails or goes silent, the watch goes on in the next from its
        last position (some events may come again). Returns once a region serves it (about a
        second): changes made afterwards are seen. Interruptible, as the other calls."""
        p = _bytes(prefix, "prefix")
        n = _feed_name(name)
        handle = _token_arg(from_token)
        h = self._h()

        def call(token: Optional[Token] = from_token) -> _Owned:  # holds it until the call ends
            out = c_void_p()
            _check(_lib.meridian_client_watch(h, p, len(p), handle, n, byref(out)))
            return _Owned(_handle(out), _lib.meridian_feed_free)

        return Feed(_run(call), self, client_mode=True)

    @property
    def retried_after_lost(self) -> bool:
        """Whether this thread's last acknowledged write (of any client) was taken after an
        earlier attempt's answer was lost: that attempt may have applied too (same effect, a
        second dot). An interrupted write counts for nothing here."""
        return bool(getattr(_client_thread, "retried_after_lost", False))

    @property
    def region(self) -> str:
        """The region that answered the last request."""
        buf = _Buffer()
        _check(_lib.meridian_client_region(self._h(), byref(buf)))
        return _take(buf).decode()
