//! What the clients did: every operation with its invocation, its completion and its outcome
//! (acknowledged, failed, or unknown), and every read with what it had to show.

use meridian::{Read, ReadValue};
use meridian_runtime::client_proto::Consistency;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What an operation did to which key (keys are unique per writer where the check needs it).
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Multi-value register write of `value` (its own key), without a read context.
    RegisterPut {
        /// The value.
        value: Vec<u8>,
    },
    /// Multi-value register write of `value` with the context of a read of the session that
    /// saw `old` (the key's value the session wrote last): it supersedes `old`.
    RegisterReplace {
        /// The value.
        value: Vec<u8>,
        /// The value the read before it saw, which it supersedes.
        old: Vec<u8>,
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

impl Action {
    /// Whether the write carries what the session wrote or read of its key (a region applies
    /// it only once it holds that).
    pub fn context_dependent(&self) -> bool {
        matches!(
            self,
            Action::RegisterReplace { .. } | Action::SetRemove { .. } | Action::Delete { .. }
        )
    }
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
    /// The client (named after its home region's replica; `strict` for the client of
    /// stronger consistency levels, `probe` for the harness's direct requests).
    pub client: String,
    /// The key.
    pub key: Vec<u8>,
    /// What it did.
    pub action: Action,
    /// The regions it asked to hold it before the acknowledgement.
    pub consistency: Consistency,
    /// Since the run started.
    pub invoked: Duration,
    /// Since the run started.
    pub completed: Duration,
    /// How it ended.
    pub outcome: Outcome,
    /// The region that acknowledged it (for an unknown outcome: the region that may hold it,
    /// when one is named).
    pub region: Option<String>,
    /// Acknowledged after an earlier attempt's answer was lost: another region may hold it
    /// under a second dot.
    pub retried: bool,
    /// Refused because no region asked held what the session wrote or read of the key
    /// (`NotYetVisible`, nothing written).
    pub not_yet_visible: bool,
    /// Sent to this region only (a direct request, not routed).
    pub asked: Option<String>,
    /// Bytes of key and value it wrote.
    pub bytes: usize,
}

impl OpRecord {
    /// An operation of `client` on `key`, to be completed by the caller.
    pub fn new(client: &str, key: &[u8], action: Action, consistency: Consistency) -> OpRecord {
        OpRecord {
            client: client.into(),
            key: key.to_vec(),
            action,
            consistency,
            invoked: Duration::ZERO,
            completed: Duration::ZERO,
            outcome: Outcome::Ok,
            region: None,
            retried: false,
            not_yet_visible: false,
            asked: None,
            bytes: 0,
        }
    }

    /// Acknowledged.
    pub fn acked(&self) -> bool {
        self.outcome == Outcome::Ok
    }

    /// Refused, nothing written.
    pub fn failed(&self) -> bool {
        matches!(self.outcome, Outcome::Fail(_))
    }
}

/// What a read had to show.
#[derive(Clone, Debug, PartialEq)]
pub enum Want {
    /// A register sibling.
    Register(Vec<u8>),
    /// A last-writer-wins value.
    Lww(Vec<u8>),
    /// A set element.
    Elem(Vec<u8>),
}

impl Want {
    /// Whether `read` shows it.
    pub fn in_read(&self, read: Option<&Read>) -> bool {
        let Some(read) = read else { return false };
        self.in_values(&read.values)
    }

    /// Whether `values` show it.
    pub fn in_values(&self, values: &[ReadValue]) -> bool {
        values.iter().any(|v| match (self, v) {
            (Want::Register(x), ReadValue::Register(s)) => s.values.iter().any(|v| v == x),
            (Want::Lww(x), ReadValue::Lww(l)) => l.value == *x,
            (Want::Elem(x), ReadValue::Set(elems)) => elems.iter().any(|e| e == x),
            _ => false,
        })
    }

    /// Whether `action` wrote it.
    pub fn written_by(&self, action: &Action) -> bool {
        match (self, action) {
            (Want::Register(x), Action::RegisterPut { value })
            | (Want::Register(x), Action::RegisterReplace { value, .. })
            | (Want::Lww(x), Action::LwwSet { value, .. }) => x == value,
            (Want::Elem(x), Action::SetAdd { elem }) => x == elem,
            _ => false,
        }
    }
}

/// Which guarantee a read checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadKind {
    /// A session read of the session's own acknowledged write (read-your-writes, across
    /// failover too).
    Session,
    /// `RoutedClient::read_majority` of another session's write acknowledged at `majority`,
    /// `regions(2)` or `all` before the read began: durable in a majority, so seen.
    Majority,
    /// A plain read, in whichever region serves it, of another session's write acknowledged
    /// at `all` before the read began: every region holds it.
    All,
}

/// How a read ended.
#[derive(Clone, Debug, PartialEq)]
pub enum ReadAnswer {
    /// Answered, showing what it had to.
    Saw,
    /// Answered without it.
    Missed,
    /// Every region that answered lacked what the session wrote or read (`NotYetVisible`).
    NotYetVisible,
    /// A region found the session's writes lost with a disk (`Uncoverable`).
    Uncoverable,
    /// No region answered.
    Unanswered(String),
}

/// One read that had to show something.
#[derive(Clone, Debug)]
pub struct ReadCheck {
    /// The client.
    pub client: String,
    /// The key read.
    pub key: Vec<u8>,
    /// What it had to show.
    pub want: Want,
    /// Which guarantee it checks.
    pub kind: ReadKind,
    /// Since the run started.
    pub invoked: Duration,
    /// Since the run started.
    pub completed: Duration,
    /// How it ended.
    pub answer: ReadAnswer,
    /// The region that served it.
    pub region: Option<String>,
}

/// A write acknowledged at `majority` or more, for reads of other sessions to look for.
#[derive(Clone, Debug)]
pub struct StrongWrite {
    /// The writer.
    pub client: String,
    /// The key.
    pub key: Vec<u8>,
    /// The last-writer-wins value written.
    pub value: Vec<u8>,
    /// Its consistency level.
    pub consistency: Consistency,
    /// When it was acknowledged.
    pub completed: Duration,
}

/// The history of one run, appended to by every client.
pub struct History {
    start: Instant,
    ops: Mutex<Vec<OpRecord>>,
    reads: Mutex<Vec<ReadCheck>>,
    strong: Mutex<Vec<StrongWrite>>,
}

impl History {
    /// An empty history starting now.
    pub fn new() -> History {
        History {
            start: Instant::now(),
            ops: Mutex::default(),
            reads: Mutex::default(),
            strong: Mutex::default(),
        }
    }

    /// Time since the run started.
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Records an operation.
    pub fn record(&self, op: OpRecord) {
        if let (true, Consistency::Majority | Consistency::All | Consistency::Regions(2..)) =
            (op.acked(), op.consistency)
        {
            if let Action::LwwSet { value, .. } = &op.action {
                self.strong
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(StrongWrite {
                        client: op.client.clone(),
                        key: op.key.clone(),
                        value: value.clone(),
                        consistency: op.consistency,
                        completed: op.completed,
                    });
            }
        }
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).push(op);
    }

    /// Records a read.
    pub fn record_read(&self, read: ReadCheck) {
        self.reads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(read);
    }

    /// Every operation so far.
    pub fn ops(&self) -> Vec<OpRecord> {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Every read so far.
    pub fn reads(&self) -> Vec<ReadCheck> {
        self.reads.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The last `n` writes acknowledged at `majority` or more by another client than
    /// `reader` and matching `keep`.
    pub fn strong_writes(
        &self,
        reader: &str,
        n: usize,
        keep: impl Fn(&StrongWrite) -> bool,
    ) -> Vec<StrongWrite> {
        let strong = self.strong.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<StrongWrite> = strong
            .iter()
            .rev()
            .filter(|w| w.client != reader && keep(w))
            .take(n)
            .cloned()
            .collect();
        out.reverse();
        out
    }
}

impl Default for History {
    fn default() -> Self {
        History::new()
    }
}
