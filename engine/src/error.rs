//! The engine's error type: one variant per thing a caller can act on.

use crate::model::{codec::CodecError, Kind, TokenError};

/// Errors from engine operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Empty key, or a key over `KEY_BYTES_MAX`.
    #[error("invalid key: {0}")]
    InvalidKey(&'static str),
    /// A value, element or field name over the configured maximum.
    #[error("value of {len} bytes exceeds the maximum of {max}")]
    ValueTooLarge {
        /// Size given.
        len: usize,
        /// Configured maximum.
        max: usize,
    },
    /// The record would exceed the configured maximum after this write.
    #[error(
        "record {} would grow to {len} bytes, over the maximum of {max}",
        show(key)
    )]
    RecordTooLarge {
        /// The key.
        key: Vec<u8>,
        /// Encoded size after the write.
        len: usize,
        /// Configured maximum.
        max: usize,
    },
    /// A batch whose log entry (its records with their keys) would exceed the configured
    /// maximum, or with more operations than `limits::BATCH_OPS_MAX`.
    #[error("batch of {len} bytes or operations exceeds the maximum of {max}")]
    BatchTooLarge {
        /// Bytes of its entry (or operations, when there are too many).
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A configuration that cannot work (limits that do not fit together, say).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The key (or map field) holds a value of another type.
    #[error("key {} holds a {existing}, not a {requested}", show(key))]
    WrongType {
        /// The key.
        key: Vec<u8>,
        /// The type present.
        existing: Kind,
        /// The type the operation needs.
        requested: Kind,
    },
    /// A counter would overflow 64 bits.
    #[error("counter {} would overflow", show(key))]
    CounterOverflow {
        /// The key.
        key: Vec<u8>,
    },
    /// An operation that is not valid as given.
    #[error("invalid operation: {0}")]
    InvalidOperation(&'static str),
    /// Stored bytes that do not decode; the rest of the database is unaffected.
    #[error("corrupt {what} {}: {detail}", show(key))]
    Corrupt {
        /// What was being read ("record", "log entry", "metadata").
        what: &'static str,
        /// Its key.
        key: Vec<u8>,
        /// What is wrong with it.
        detail: String,
    },
    /// Bytes written by a newer format than this build reads.
    #[error(
        "{what} {} has format version {found}; this build reads up to {supported}",
        show(key)
    )]
    FutureVersion {
        /// What was being read.
        what: &'static str,
        /// Its key.
        key: Vec<u8>,
        /// Version found.
        found: u8,
        /// Newest version supported.
        supported: u8,
    },
    /// A causal token or context from a caller that does not decode.
    #[error(transparent)]
    InvalidToken(#[from] TokenError),
    /// The storage engine failed (its message; RocksDB's own error type is not part of the
    /// API).
    #[error("storage: {0}")]
    Storage(StorageError),
    /// The data directory's file system has less free space than `Config::disk_free_min_bytes`:
    /// nothing was written; free space (or add it) and retry, or write in another region.
    #[error("disk nearly full: {available} bytes free, writes need {required}")]
    DiskFull {
        /// Bytes free for the engine's user.
        available: u64,
        /// The configured minimum.
        required: u64,
    },
    /// A write's read context names writes this replica has not applied (the read was made
    /// elsewhere, or the context was made up): nothing was written. Retry once they arrive
    /// here, or write in the region of the read.
    #[error("the read context of key {key:?} names writes this replica has not applied: nothing was written")]
    ContextAhead {
        /// The key whose context is ahead.
        key: Vec<u8>,
    },
    /// An earlier storage write failed; the engine refuses writes until reopened.
    #[error("engine is poisoned by an earlier storage failure; reopen it")]
    Poisoned,
    /// This process is fenced: a newer process of the same replica identity runs (a second
    /// process started with this directory's identity, or a restored copy), and the other
    /// members no longer replicate with this one. Nothing was written; write in another
    /// region. It ends when the process stops.
    #[error("this process is fenced, nothing was written: {reason}")]
    Fenced {
        /// What the other members said.
        reason: String,
    },
}

impl Error {
    pub(crate) fn from_codec(what: &'static str, key: &[u8], e: CodecError) -> Error {
        match e {
            CodecError::FutureVersion { found, supported } => Error::FutureVersion {
                what,
                key: key.to_vec(),
                found,
                supported,
            },
            other => Error::Corrupt {
                what,
                key: key.to_vec(),
                detail: other.to_string(),
            },
        }
    }

    /// Whether retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Storage(_) | Error::DiskFull { .. })
    }
}

pub(crate) use meridian_core::show_key as show;

/// Result alias for engine operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failure of the storage engine, described.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StorageError {
    message: String,
}

impl StorageError {
    /// What the storage engine said.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<rocksdb::Error> for Error {
    fn from(e: rocksdb::Error) -> Error {
        Error::Storage(StorageError {
            message: e.into_string(),
        })
    }
}
