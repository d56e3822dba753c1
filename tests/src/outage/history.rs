//! What the clients did: every operation with its invocation, its completion and its outcome
//! (acknowledged, failed, or unknown), and every read-your-writes check.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What an operation did to which key (keys are unique per writer where the check needs it).
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Multi-value register write of `value` (its own key).
    RegisterPut {
        /// The value.
        value: Vec<u8>,
    },
    /// Last-writer-wins write of `value` (its own key unless `shared`).
    LwwSet {
        /// The value.
        value: Vec<u8>,
        /// On the key every client writes.
        shared: bool,
    },
    /// Counter +1.
    CounterAdd,
    /// Set insertion of `elem`.
    SetAdd {
        /// The element.
        elem: Vec<u8>,
    },
    /// Set removal of `elem`, after a read in `read_region` saw it.
    SetRemove {
        /// The element.
        elem: Vec<u8>,
        /// Where the read before it was served.
        read_region: Option<String>,
    },
    /// Map field `field` set (last-writer-wins) to `value`.
    MapSet {
        /// The field.
        field: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Delete of a key, after a read in `read_region` saw it.
    Delete {
        /// Where the read before it was served.
        read_region: Option<String>,
    },
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Acknowledged.
    Ok,
    /// Refused: nothing written.
    Fail(String),
    /// May or may not have been applied.
    Unknown(String),
}

/// One operation.
#[derive(Clone, Debug)]
pub struct OpRecord {
    /// The client (named after its home region's replica).
    pub client: String,
    /// The key.
    pub key: Vec<u8>,
    /// What it did.
    pub action: Action,
    /// Whether it asked for a majority of regions.
    pub majority: bool,
    /// Since the run started.
    pub invoked: Duration,
    /// Since the run started.
    pub completed: Duration,
    /// How it ended.
    pub outcome: Outcome,
    /// The region that acknowledged it.
    pub region: Option<String>,
    /// Acknowledged after an earlier attempt's answer was lost: another region may hold it
    /// under a second dot.
    pub retried: bool,
    /// Bytes of key and value it wrote.
    pub bytes: usize,
}

/// A read of the client's own acknowledged write, right after it.
#[derive(Clone, Debug)]
pub struct RywCheck {
    /// The client.
    pub client: String,
    /// The key read.
    pub key: Vec<u8>,
    /// Since the run started.
    pub at: Duration,
    /// `Some(true)`: the write was seen; `Some(false)`: it was not (a violation); `None`: no
    /// region answered.
    pub saw: Option<bool>,
    /// The region that served the read.
    pub region: Option<String>,
}

/// The history of one run, appended to by every client.
pub struct History {
    start: Instant,
    ops: Mutex<Vec<OpRecord>>,
    reads: Mutex<Vec<RywCheck>>,
}

impl History {
    /// An empty history starting now.
    pub fn new() -> History {
        History {
            start: Instant::now(),
            ops: Mutex::default(),
            reads: Mutex::default(),
        }
    }

    /// Time since the run started.
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Records an operation.
    pub fn record(&self, op: OpRecord) {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).push(op);
    }

    /// Records a read-your-writes check.
    pub fn record_read(&self, read: RywCheck) {
        self.reads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(read);
    }

    /// Every operation so far.
    pub fn ops(&self) -> Vec<OpRecord> {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Every read check so far.
    pub fn reads(&self) -> Vec<RywCheck> {
        self.reads.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Default for History {
    fn default() -> Self {
        History::new()
    }
}
