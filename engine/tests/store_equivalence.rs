//! The two implementations of the replication core's storage seam, `Engine` (RocksDB) and
//! `MemoryStore` (the in-memory reference model), held to the same observable behaviour.
//!
//! Each case builds three replicas per side (members 1, 2 and 3: engines over temporary
//! directories, and memory stores), runs one random sequence of actions on both sides, and
//! compares what each call returned, then, after every action, what every replica holds.
//!
//! The actions, and what of them is compared:
//! - local writes of every kind (`Op`: register puts with no context, a replica's applied
//!   vector, a record's context or a claim ahead of anything seen; LWW sets; counter adds,
//!   overflowing ones included; set adds and removes; map field updates nested up to three
//!   deep; map field removes; deletes; a delete inside a map update), alone or in batches, on
//!   a key space of five keys (so types conflict): the sequence number taken, or the kind of
//!   error (wrong type, overflow, invalid, a context ahead of what the replica saw);
//! - entries shipped through the seam (`read_entry`, then `apply_entry` for one entry or
//!   `apply_entries` for a run), in order, as duplicates and past gaps, one origin at a time or
//!   everything every replica lacks: the states read and the `ApplyOutcome`s;
//! - state transfer as the replicator runs it: both `summarize`s, the table difference peeled,
//!   `keys_for_hashes`, `read_records` and `merge_states` by groups of keys, `drop_covered`,
//!   `adopt`; or a stream of `read_range` chunks with `drop_absent` and `merge_states`: the
//!   snapshot, the records sent, the outcomes and counts (and, on each side, that the running
//!   summary is the table of the records as they stand);
//! - `export` / `apply_remote` by hand; `compact` with the pointwise minimum of the three
//!   applied vectors (the whole `Compaction`); `release_shipped`; `attach_replication`; clean
//!   restarts, crashes, crashes in another boot (the engine starts a new epoch at open);
//!   checkpoints and their restoration (a restored backup; when peers hold more of its origin
//!   it moves to a new epoch, as the replicator's handshake makes it); `start_new_epoch`;
//! - after each action, per replica: `origin_view`, `origin_id`, `member_id`, `applied`,
//!   `log_floor`, `record_count`, every key's `export`ed record, `read_range` over everything,
//!   `keys_for_hashes` of the key space, and `read_entry` of every entry of every origin up to
//!   one past the applied one.
//!
//! Made equal, or left out, by design (see `MemoryStore`'s documentation):
//! - Epochs: the engine draws them at random. Here its randomness is a seeded source, each
//!   memory store is created in the epoch its engine drew (`MemoryStore::new(member, epoch)`),
//!   and before each of its `start_new_epoch` (the action, or the engine's own at an open after
//!   a crash in another boot) it is told the engine's new epoch (`set_next_epoch`): origins
//!   are then equal, and compared exactly.
//! - LWW markers: the engine's come from its hybrid clock over the wall clock, the memory
//!   store's from a counter. The engine runs on a stopped wall clock (always 0), so both tick
//!   the same way and markers are equal, until a replica restarts: the engine's clock starts
//!   again from zero at open (it counts on the wall clock having moved on), the memory store's
//!   counter goes on. Records are therefore compared decoded with every LWW marker set to zero
//!   (a marker only picks which concurrent value a read shows; joins, contexts and dots do not
//!   depend on it, and on one side a dot always carries one marker, so equality of records
//!   within a side, hence every `changed` count, is unaffected); while no replica has
//!   restarted, their encoded bytes and the anti-entropy tables must be equal too. After a
//!   restart, a table difference that does not peel on one side makes both sides stream, and
//!   stream chunks cut by byte counts are compared by their totals (one record per chunk, or
//!   one chunk, still chunk by chunk).
//! - Compaction: when the stable vector is the one of its last pass in this run, the engine
//!   looks only at the tombstones marked since (an open forgets the last pass); the memory
//!   store always looks at all. What such a pass removed is compared (its pending count is the
//!   last full pass's plus what it found, which may count a tombstone written over since).
//!   Every other compaction is compared whole, `tombstones_pending` included.
//! - Faults (damaged bytes), storage failures, the configurable value size and context width,
//!   and the shipping caches have no counterpart in memory and are not exercised; the engines
//!   run with caches off, tiny or large, so that what they ship is compared from both caches
//!   and disk.

#![allow(clippy::unwrap_used)]

use meridian::limits::wire_bytes;
use meridian::{
    Batch, Config, Engine, Error, MemberId, Op, OriginId, RandomSource, Replication, VersionVector,
    WallClock,
};
use meridian_core::model::codec::decode_record;
use meridian_core::model::digest::{key_hash, state_hash};
use meridian_core::model::{ApplyError, Hlc, Record, Value};
use meridian_core::replication::iblt::Iblt;
use meridian_core::replication::{
    decode_record_states, ApplyOutcome, Compaction, DecodedEntry, MemoryStore, MemoryStoreError,
    OfferPlan, OriginView, RecordState, ReplicaStore,
};
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const REPLICAS: usize = 3;
const KEYS: usize = 5;
/// The key space: a handful of keys, so that writes meet.
fn key(i: usize) -> Vec<u8> {
    format!("k{}", i % KEYS).into_bytes()
}

// ---- the engine's inputs: a stopped clock and seeded randomness ------------------------------

struct StoppedClock;

impl WallClock for StoppedClock {
    fn now_ms(&self) -> u64 {
        0
    }
}

struct SeededRandom(AtomicU64);

impl RandomSource for SeededRandom {
    fn next_u64(&self) -> u64 {
        // splitmix64
        let mut z = self
            .0
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::SeqCst)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

// ---- generated actions -----------------------------------------------------------------------

/// A read context for a register put, resolved on each side from that side's replicas.
#[derive(Clone, Debug)]
enum CtxGen {
    /// The applied vector of a replica.
    Applied(usize),
    /// The context of the key's record at a replica (a read, then a write).
    Record(usize),
    /// A replica's applied vector with every entry `n` ahead, and an origin nobody has: a claim
    /// the write must refuse.
    Ahead(usize, u64),
}

#[derive(Clone, Debug)]
enum OpGen {
    Put(u8, Option<CtxGen>),
    Lww(u8),
    Add(i64),
    SetAdd(Vec<u8>),
    SetRemove(Vec<u8>),
    MapUpdate(u8, Box<OpGen>),
    MapRemove(u8),
    Delete,
}

#[derive(Clone, Debug)]
enum Action {
    Write {
        at: usize,
        ops: Vec<(usize, OpGen)>,
    },
    Ship {
        from: usize,
        to: usize,
        origin: usize,
        offset: i64,
        count: usize,
    },
    /// Every entry each replica lacks, shipped from each other one in turn.
    Sync {
        first: usize,
    },
    Transfer {
        from: usize,
        to: usize,
        keys: bool,
        cells: usize,
        chunk: usize,
    },
    Remote {
        from: usize,
        to: usize,
        key: usize,
    },
    Compact {
        at: usize,
    },
    Attach {
        at: usize,
    },
    Restart {
        at: usize,
        crash: bool,
        new_boot: bool,
        reattach: bool,
    },
    NewEpoch {
        at: usize,
    },
    /// `release_shipped` up to what every other replica applied of its origin.
    Release {
        at: usize,
    },
    Checkpoint {
        at: usize,
    },
    Restore {
        at: usize,
    },
}

fn ctx_gen() -> impl Strategy<Value = Option<CtxGen>> {
    prop_oneof![
        4 => Just(None),
        1 => (0..REPLICAS).prop_map(|r| Some(CtxGen::Applied(r))),
        2 => (0..REPLICAS).prop_map(|r| Some(CtxGen::Record(r))),
        1 => (0..REPLICAS, 1u64..4).prop_map(|(r, n)| Some(CtxGen::Ahead(r, n))),
    ]
}

fn leaf_op() -> impl Strategy<Value = OpGen> {
    prop_oneof![
        (0u8..4, ctx_gen()).prop_map(|(v, c)| OpGen::Put(v, c)),
        (0u8..4).prop_map(OpGen::Lww),
        prop_oneof![10 => -3i64..4, 1 => Just(i64::MAX), 1 => Just(i64::MIN)].prop_map(OpGen::Add),
        prop::collection::vec(0u8..4, 1..3).prop_map(OpGen::SetAdd),
        prop::collection::vec(0u8..4, 1..3).prop_map(OpGen::SetRemove),
        (0u8..3).prop_map(OpGen::MapRemove),
    ]
}

fn op_gen() -> impl Strategy<Value = OpGen> {
    let nested = leaf_op().prop_recursive(2, 6, 1, |inner| {
        prop_oneof![
            2 => inner.clone(),
            3 => (0u8..3, inner).prop_map(|(f, op)| OpGen::MapUpdate(f, Box::new(op))),
        ]
    });
    prop_oneof![
        18 => leaf_op(),
        12 => (0u8..3, nested).prop_map(|(f, op)| OpGen::MapUpdate(f, Box::new(op))),
        6 => Just(OpGen::Delete),
        // Refused before a number is spent, by both.
        1 => (0u8..3).prop_map(|f| OpGen::MapUpdate(f, Box::new(OpGen::Delete))),
    ]
}

/// Another replica than `from` (`d` picks which).
fn other(from: usize, d: usize) -> usize {
    (from + 1 + d % (REPLICAS - 1)) % REPLICAS
}

fn action() -> impl Strategy<Value = Action> {
    let r = || 0..REPLICAS;
    prop_oneof![
        10 => (r(), prop::collection::vec((0..KEYS, op_gen()), 1..4))
            .prop_map(|(at, ops)| Action::Write { at, ops }),
        10 => (
            r(),
            0..REPLICAS - 1,
            0usize..8,
            prop_oneof![8 => Just(0i64), 1 => -2i64..0, 1 => 1i64..3],
            1usize..4,
        )
            .prop_map(|(from, d, origin, offset, count)| Action::Ship {
                from,
                to: other(from, d),
                origin,
                offset,
                count,
            }),
        2 => (
            r(),
            0..REPLICAS - 1,
            any::<bool>(),
            prop::sample::select(vec![12usize, 48, 768]),
            prop::sample::select(vec![1usize, 2, 3, 120, 400, usize::MAX]),
        )
            .prop_map(|(from, d, keys, cells, chunk)| Action::Transfer {
                from,
                to: other(from, d),
                keys,
                cells,
                chunk,
            }),
        1 => (r(), 0..REPLICAS - 1, 0..KEYS).prop_map(|(from, d, key)| Action::Remote {
            from,
            to: other(from, d),
            key,
        }),
        3 => r().prop_map(|at| Action::Compact { at }),
        1 => r().prop_map(|at| Action::Attach { at }),
        1 => (r(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
            |(at, crash, new_boot, reattach)| Action::Restart {
                at,
                crash,
                new_boot,
                reattach,
            }
        ),
        1 => r().prop_map(|at| Action::NewEpoch { at }),
        2 => r().prop_map(|first| Action::Sync { first }),
        2 => r().prop_map(|at| Action::Release { at }),
        2 => r().prop_map(|at| Action::Checkpoint { at }),
        2 => r().prop_map(|at| Action::Restore { at }),
    ]
}

// ---- the two sides behind one interface ------------------------------------------------------

/// What a side offers beyond `ReplicaStore`.
trait Side {
    type S: ReplicaStore<Error = Self::E>;
    type E: Debug;
    fn store(&self, i: usize) -> &Self::S;
    fn export(&self, i: usize, key: &[u8]) -> Option<Vec<u8>>;
    /// A local write: its sequence number, or the kind of error.
    fn write(&self, i: usize, ops: Vec<(Vec<u8>, Op)>) -> Result<u64, String>;
    fn apply_remote(&self, i: usize, key: &[u8], state: &[u8]) -> Result<bool, String>;
}

struct EngineReplica {
    /// The directory it runs on (the last checkpoint restored, or its first one).
    path: std::path::PathBuf,
    dirs: Vec<tempfile::TempDir>,
    member: u64,
    boot: u64,
    cache_bytes: usize,
    random: Arc<SeededRandom>,
    engine: Option<Replication>,
}

impl EngineReplica {
    fn config(&self) -> Config {
        Config {
            member_id: Some(MemberId(self.member)),
            clock: Arc::new(StoppedClock),
            random: self.random.clone(),
            boot_id: Some(format!("boot-{}", self.boot)),
            entry_cache_bytes: self.cache_bytes,
            ..Config::default()
        }
    }

    fn open(&mut self) {
        self.engine = Some(
            Engine::open(&self.path, self.config())
                .expect("open")
                .replication(),
        );
    }

    fn engine(&self) -> &Replication {
        self.engine.as_ref().unwrap()
    }
}

struct Engines(Vec<EngineReplica>);

fn engine_error(e: &Error) -> String {
    match e {
        Error::WrongType {
            existing,
            requested,
            ..
        } => format!("wrong type: {existing}, not {requested}"),
        Error::CounterOverflow { .. } => "counter overflow".into(),
        Error::InvalidOperation(why) => format!("invalid operation: {why}"),
        Error::InvalidKey(why) => format!("invalid key: {why}"),
        Error::RecordTooLarge { .. } | Error::BatchTooLarge { .. } => "too large".into(),
        Error::ContextAhead { .. } => "context ahead".into(),
        other => format!("other: {other}"),
    }
}

fn memory_error(e: &MemoryStoreError) -> String {
    match e {
        MemoryStoreError::Apply(ApplyError::WrongType {
            existing,
            requested,
        }) => format!("wrong type: {existing}, not {requested}"),
        MemoryStoreError::Apply(ApplyError::CounterOverflow) => "counter overflow".into(),
        MemoryStoreError::Apply(ApplyError::Invalid(why))
        | MemoryStoreError::InvalidOperation(why) => format!("invalid operation: {why}"),
        MemoryStoreError::InvalidKey(why) => format!("invalid key: {why}"),
        MemoryStoreError::RecordTooLarge { .. } => "too large".into(),
        MemoryStoreError::ContextAhead => "context ahead".into(),
        other => format!("other: {other}"),
    }
}

impl Side for Engines {
    type S = Replication;
    type E = Error;

    fn store(&self, i: usize) -> &Replication {
        self.0[i].engine()
    }

    fn export(&self, i: usize, key: &[u8]) -> Option<Vec<u8>> {
        self.store(i).export(key).unwrap()
    }

    fn write(&self, i: usize, ops: Vec<(Vec<u8>, Op)>) -> Result<u64, String> {
        let e = self.store(i);
        let origin = e.origin_id();
        let result = if let [(key, op)] = &ops[..] {
            e.apply(key, op.clone())
        } else {
            let batch = ops
                .into_iter()
                .fold(Batch::new(), |b, (key, op)| b.op(key, op));
            e.write(batch)
        };
        result
            .map(|token| token.get(origin))
            .map_err(|e| engine_error(&e))
    }

    fn apply_remote(&self, i: usize, key: &[u8], state: &[u8]) -> Result<bool, String> {
        self.store(i)
            .apply_remote(key, state)
            .map_err(|e| engine_error(&e))
    }
}

struct Memories(Vec<MemoryStore>);

impl Side for Memories {
    type S = MemoryStore;
    type E = MemoryStoreError;

    fn store(&self, i: usize) -> &MemoryStore {
        &self.0[i]
    }

    fn export(&self, i: usize, key: &[u8]) -> Option<Vec<u8>> {
        self.0[i].export(key)
    }

    fn write(&self, i: usize, ops: Vec<(Vec<u8>, Op)>) -> Result<u64, String> {
        let m = &self.0[i];
        let result = if let [(key, op)] = &ops[..] {
            m.apply(key, op.clone())
        } else {
            m.write(ops)
        };
        result.map_err(|e| memory_error(&e))
    }

    fn apply_remote(&self, i: usize, key: &[u8], state: &[u8]) -> Result<bool, String> {
        self.0[i]
            .apply_remote(key, state)
            .map_err(|e| memory_error(&e))
    }
}

// ---- what is compared ------------------------------------------------------------------------

/// A record as compared: decoded with its LWW markers zeroed, and its bytes while markers are
/// comparable (see the module documentation).
#[derive(Clone, Debug, PartialEq)]
struct Rec {
    record: Record,
    bytes: Option<Vec<u8>>,
}

/// Records by key, as compared.
type Recs = Vec<(Vec<u8>, Rec)>;

fn zero_markers(v: &mut Value) {
    match v {
        Value::Lww(reg) => reg.store.values_mut().for_each(|e| e.marker = Hlc(0)),
        Value::Map(map) => map.fields.values_mut().for_each(zero_markers),
        _ => {}
    }
}

fn rec(bytes: &[u8], exact: bool) -> Rec {
    let mut record = decode_record(bytes).expect("a stored record decodes");
    record.values.values_mut().for_each(zero_markers);
    Rec {
        record,
        bytes: exact.then(|| bytes.to_vec()),
    }
}

fn recs<K: AsRef<[u8]>, V: AsRef<[u8]>>(states: &[(K, V)], exact: bool) -> Recs {
    let mut out: Recs = states
        .iter()
        .map(|(k, v)| (k.as_ref().to_vec(), rec(v.as_ref(), exact)))
        .collect();
    // The engine lists an entry's cached states before those it read from disk.
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Everything observable of one replica through the seam.
#[derive(Debug, PartialEq)]
struct View {
    origin: OriginView,
    origin_id: OriginId,
    member_id: MemberId,
    applied: VersionVector,
    floors: VersionVector,
    record_count: u64,
    exports: Vec<Option<Rec>>,
    range: Recs,
    hashed_keys: Vec<Vec<u8>>,
    entries: Vec<(OriginId, u64, Option<Recs>)>,
}

fn view<X: Side>(x: &X, i: usize, exact: bool) -> View {
    let s = x.store(i);
    let applied = s.applied();
    let floors = s.log_floor();
    let mut entries = Vec::new();
    let origins: BTreeSet<OriginId> = applied
        .iter()
        .chain(floors.iter())
        .map(|(o, _)| o)
        .collect();
    for origin in origins {
        for seq in 1..=applied.get(origin).max(floors.get(origin)) + 1 {
            let entry = s.read_entry(origin, seq).unwrap();
            entries.push((origin, seq, entry.map(|e| recs(&e.states, exact))));
        }
    }
    let hashes: Vec<u64> = (0..KEYS).map(|k| key_hash(&key(k))).collect();
    let mut hashed_keys = s.keys_for_hashes(&hashes).unwrap();
    hashed_keys.sort();
    let range = s.read_range(b"", usize::MAX).unwrap();
    assert!(range.next.is_none() && range.states.left_out.is_empty());
    let range = range.states.records;
    View {
        origin: s.origin_view(),
        origin_id: s.origin_id(),
        member_id: s.member_id(),
        applied,
        floors,
        record_count: s.record_count().unwrap(),
        exports: (0..KEYS)
            .map(|k| x.export(i, &key(k)).map(|b| rec(&b, exact)))
            .collect(),
        range: recs(&range, exact),
        hashed_keys,
        entries,
    }
}

// ---- actions, run the same way on each side --------------------------------------------------

fn context<X: Side>(x: &X, key: &[u8], gen: &CtxGen) -> VersionVector {
    match gen {
        CtxGen::Applied(r) => x.store(*r).applied(),
        CtxGen::Record(r) => x
            .export(*r, key)
            .map(|b| decode_record(&b).unwrap().context())
            .unwrap_or_default(),
        CtxGen::Ahead(r, n) => {
            let applied = x.store(*r).applied();
            VersionVector::from_entries(
                applied
                    .iter()
                    .map(|(o, s)| (o, s + n))
                    .chain([(OriginId(0xdead_beef), *n)]),
            )
        }
    }
}

fn op<X: Side>(x: &X, key: &[u8], gen: &OpGen) -> Op {
    let elems = |e: &[u8]| e.iter().map(|b| vec![b'e', *b]).collect();
    match gen {
        OpGen::Put(v, ctx) => Op::Put {
            value: vec![b'v', *v],
            context: ctx.as_ref().map(|c| context(x, key, c)),
        },
        OpGen::Lww(v) => Op::LwwSet {
            value: vec![b'w', *v],
        },
        OpGen::Add(delta) => Op::CounterAdd { delta: *delta },
        OpGen::SetAdd(e) => Op::SetAdd { elems: elems(e) },
        OpGen::SetRemove(e) => Op::SetRemove { elems: elems(e) },
        OpGen::MapUpdate(f, inner) => Op::MapUpdate {
            field: vec![b'f', *f],
            op: Box::new(op(x, key, inner)),
        },
        OpGen::MapRemove(f) => Op::MapRemove {
            field: vec![b'f', *f],
        },
        OpGen::Delete => Op::Delete,
    }
}

fn write<X: Side>(x: &X, at: usize, ops: &[(usize, OpGen)]) -> Result<u64, String> {
    let ops = ops
        .iter()
        .map(|(k, gen)| (key(*k), op(x, &key(*k), gen)))
        .collect();
    x.write(at, ops)
}

/// What shipping did: the entries read (until the first missing one) and the outcomes.
#[derive(Debug, PartialEq)]
struct Shipped {
    read: Vec<Option<Recs>>,
    outcomes: Vec<ApplyOutcome>,
}

fn ship<S: ReplicaStore>(
    from: &S,
    to: &S,
    origin: OriginId,
    first: u64,
    count: usize,
    exact: bool,
) -> Shipped
where
    S::Error: Debug,
{
    let mut read = Vec::new();
    let mut entries: Vec<(u64, Vec<RecordState>)> = Vec::new();
    for seq in first..first + count as u64 {
        let entry = from.read_entry(origin, seq).unwrap();
        read.push(entry.as_ref().map(|e| recs(&e.states, exact)));
        let Some(entry) = entry else { break };
        assert!(
            entry.left_out.is_empty() && !entry.lost,
            "nothing is damaged here"
        );
        let states = entry
            .states
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        entries.push((seq, states));
    }
    let outcomes = match &entries[..] {
        [] => Vec::new(),
        [(seq, states)] => vec![to.apply_entry(origin, *seq, states).unwrap()],
        _ => {
            let decoded = entries
                .iter()
                .map(|(seq, states)| DecodedEntry {
                    seq: *seq,
                    records: decode_record_states(states, to.record_bytes_max(), &mut Vec::new())
                        .unwrap(),
                    wire_bytes: wire_bytes(states.iter().map(|(k, v)| (&k[..], &v[..]))),
                    left_out: Vec::new(),
                    lost: false,
                    request: None,
                })
                .collect();
            to.apply_entries(origin, decoded).unwrap()
        }
    };
    Shipped { read, outcomes }
}

/// The receiver's answer to an offer: the key hashes it wants and the keys only it holds, or
/// `None` when it streams (the difference does not peel).
type Plan = Option<(Vec<u64>, Vec<Vec<u8>>)>;

/// The offer and the answer to it (`AeOffer` and `on_offer`).
fn offer<S: ReplicaStore>(src: &S, dst: &S, cells: usize) -> (VersionVector, Vec<u8>, Plan)
where
    S::Error: Debug,
{
    let theirs = src.summarize(cells).unwrap();
    let mine = dst.summarize(theirs.table.cell_count()).unwrap();
    // Each running summary is the table of the records as they stand.
    for (store, summary) in [(src, &theirs), (dst, &mine)] {
        let records = store.read_range(b"", usize::MAX).unwrap().states.records;
        let mut table = Iblt::with_cells(summary.table.cell_count());
        for (k, v) in &records {
            table.insert((key_hash(k), state_hash(v)));
        }
        assert!(
            table == summary.table,
            "the summary is not that of the records"
        );
        assert_eq!(summary.records, records.len() as u64);
        assert_eq!(summary.applied, store.applied());
    }
    // The receiver's answer as the replicator decides it (`on_offer`); a larger table is not
    // tried here: a difference that does not peel streams.
    let plan = match OfferPlan::of(
        &theirs.table,
        theirs.records,
        &mine.table,
        mine.records,
        dst.summary_cells(),
    ) {
        OfferPlan::Want { hashes, ours } => {
            let mut ours_only = dst.keys_for_hashes(&ours).unwrap();
            ours_only.sort();
            Some((hashes, ours_only))
        }
        OfferPlan::Stream | OfferPlan::Retry { .. } => None,
    };
    let mut tables = theirs.table.to_bytes();
    tables.extend(mine.table.to_bytes());
    (theirs.applied, tables, plan)
}

/// What a transfer did, chunk by chunk: the records sent, what merging them and dropping the
/// absent ones changed.
#[derive(Debug, PartialEq)]
struct Transferred {
    sent: Vec<Recs>,
    merged: Vec<ApplyOutcome>,
    dropped: Vec<usize>,
}

impl Transferred {
    /// The totals, for chunks cut by byte counts that may differ.
    fn totals(&self) -> (Recs, usize, usize) {
        let sent = self.sent.iter().flatten().cloned().collect();
        let merged = self
            .merged
            .iter()
            .map(|o| match o {
                ApplyOutcome::Applied { changed } => *changed,
                other => panic!("merge_states: {other:?}"),
            })
            .sum();
        (sent, merged, self.dropped.iter().sum())
    }
}

/// The chunks of an `AeWant` answer (groups of `group` keys), then the keys only the receiver
/// holds lose what the snapshot covers, and the snapshot is adopted.
fn send_keys<S: ReplicaStore>(
    src: &S,
    dst: &S,
    snapshot: &VersionVector,
    want: &[u64],
    ours_only: &[Vec<u8>],
    group: usize,
    exact: bool,
) -> Transferred
where
    S::Error: Debug,
{
    let keys = src.keys_for_hashes(want).unwrap();
    let mut ours_only: BTreeSet<Vec<u8>> = ours_only.iter().cloned().collect();
    let mut out = Transferred {
        sent: Vec::new(),
        merged: Vec::new(),
        dropped: Vec::new(),
    };
    let none = BTreeSet::new();
    for chunk in keys.chunks(group.clamp(1, 16)) {
        let read = src.read_records(chunk).unwrap();
        assert!(read.left_out.is_empty(), "nothing is damaged here");
        let records = read.records;
        for (k, _) in &records {
            ours_only.remove(k);
        }
        out.merged
            .push(dst.merge_states(&records, snapshot, &none).unwrap());
        out.sent.push(recs(&records, exact));
    }
    if !ours_only.is_empty() {
        let keys: Vec<Vec<u8>> = ours_only.into_iter().collect();
        out.dropped.push(dst.drop_covered(&keys, snapshot).unwrap());
    }
    dst.adopt(snapshot, &Default::default()).unwrap();
    out
}

/// A streamed transfer: every record in key order, `bytes` at a time.
fn stream<S: ReplicaStore>(
    src: &S,
    dst: &S,
    snapshot: &VersionVector,
    bytes: usize,
    exact: bool,
) -> Transferred
where
    S::Error: Debug,
{
    let mut out = Transferred {
        sent: Vec::new(),
        merged: Vec::new(),
        dropped: Vec::new(),
    };
    let mut from = Vec::new();
    let none = BTreeSet::new();
    loop {
        let range = src.read_range(&from, bytes).unwrap();
        let (records, through) = (range.states.records, range.next);
        let present: BTreeSet<Vec<u8>> = records.iter().map(|(k, _)| k.clone()).collect();
        out.dropped.push(
            dst.drop_absent(&from, through.as_deref(), &present, snapshot, &none)
                .unwrap(),
        );
        out.merged
            .push(dst.merge_states(&records, snapshot, &none).unwrap());
        out.sent.push(recs(&records, exact));
        match through {
            Some(next) => from = next,
            None => break,
        }
    }
    dst.adopt(snapshot, &Default::default()).unwrap();
    out
}

/// The pointwise minimum of every replica's applied vector.
fn stable_of<X: Side>(x: &X) -> VersionVector {
    (1..REPLICAS).fold(x.store(0).applied(), |acc, i| {
        acc.meet(&x.store(i).applied())
    })
}

// ---- the world: both sides, and what the test knows of the engine ---------------------------

/// The engine's compaction memory (see the module documentation): the stable vector of its
/// last compaction in this run.
#[derive(Default)]
struct CompactionMemo {
    last: Option<VersionVector>,
}

struct World {
    engines: Engines,
    memories: Memories,
    /// No replica restarted: LWW markers are equal on both sides.
    exact: bool,
    memo: Vec<CompactionMemo>,
    /// Per replica, the last checkpoint taken: the engine's directory and the boot it ran in,
    /// the memory store.
    checkpoints: Vec<Option<(tempfile::TempDir, u64, MemoryStore)>>,
    /// What the last state transfer changed (merged, dropped), as both sides agreed.
    transferred: (usize, usize),
}

impl World {
    fn new(seed: u64, cache_bytes: usize, attached: [bool; REPLICAS]) -> World {
        let random = Arc::new(SeededRandom(AtomicU64::new(seed)));
        let mut engines = Vec::new();
        let mut memories = Vec::new();
        for (i, attach) in attached.into_iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let mut replica = EngineReplica {
                path: dir.path().to_path_buf(),
                dirs: vec![dir],
                member: i as u64 + 1,
                boot: 0,
                cache_bytes,
                random: random.clone(),
                engine: None,
            };
            replica.open();
            let view = replica.engine().origin_view();
            assert!(view.epoch != 0, "{view:?}");
            let memory = MemoryStore::new(MemberId(replica.member), view.epoch);
            if attach {
                replica.engine().attach().unwrap();
            }
            engines.push(replica);
            memories.push(memory);
        }
        World {
            engines: Engines(engines),
            memories: Memories(memories),
            exact: true,
            memo: (0..REPLICAS).map(|_| CompactionMemo::default()).collect(),
            checkpoints: (0..REPLICAS).map(|_| None).collect(),
            transferred: (0, 0),
        }
    }

    fn run(&mut self, action: &Action) {
        let (e, m) = (&self.engines, &self.memories);
        let exact = self.exact;
        match *action {
            Action::Write { at, ref ops } => {
                assert_eq!(write(e, at, ops), write(m, at, ops), "write");
            }
            Action::Ship {
                from,
                to,
                origin,
                offset,
                count,
            } => {
                let (fa, ta) = (e.store(from).applied(), e.store(to).applied());
                let mut origins: Vec<OriginId> = fa.iter().map(|(o, _)| o).collect();
                let behind: Vec<OriginId> = fa
                    .iter()
                    .filter(|(o, s)| *s > ta.get(*o))
                    .map(|(o, _)| o)
                    .collect();
                if offset == 0 && !behind.is_empty() {
                    origins = behind;
                }
                let Some(&origin) = origins.get(origin % origins.len().max(1)) else {
                    return;
                };
                let next = e.store(to).applied().get(origin) + 1;
                let first = next.saturating_add_signed(offset).max(1);
                assert_eq!(
                    ship(e.store(from), e.store(to), origin, first, count, exact),
                    ship(m.store(from), m.store(to), origin, first, count, exact),
                    "shipping {origin}:{first}.. from {from} to {to}"
                );
            }
            Action::Sync { first } => self.sync(first),
            Action::Transfer {
                from,
                to,
                keys,
                cells,
                chunk,
            } => self.transfer(from, to, keys, cells, chunk),
            Action::Remote { from, to, key: k } => {
                let key = key(k);
                if let Some(state) = e.export(from, &key) {
                    let ms = m.export(from, &key).unwrap();
                    assert_eq!(
                        e.apply_remote(to, &key, &state),
                        m.apply_remote(to, &key, &ms),
                        "apply_remote"
                    );
                }
            }
            Action::Compact { at } => {
                let stable = stable_of(e);
                assert_eq!(stable, stable_of(m));
                let memo = &mut self.memo[at];
                let incremental = memo.last.as_ref() == Some(&stable);
                let ec = e.store(at).compact(&stable).unwrap();
                let mc = m.store(at).compact(&stable).unwrap();
                if incremental {
                    // Stability stood still: the engine looked only at the tombstones marked
                    // since its last pass, and reports the pending count of that pass plus
                    // what it found.
                    assert_eq!(
                        (ec.log_entries_removed, ec.tombstones_removed),
                        (mc.log_entries_removed, mc.tombstones_removed),
                        "an incremental compaction at {at}: {ec:?}, memory {mc:?}"
                    );
                } else {
                    // Both looked at every marked tombstone (the engine at its markers).
                    let same = |c: Compaction| Compaction {
                        tombstones_examined: 0,
                        ..c
                    };
                    assert_eq!(same(ec), same(mc), "compact({stable}) at {at}");
                }
                memo.last = Some(stable);
            }
            Action::Attach { at } => {
                // The engine's shipping caches fill; nothing else changes.
                e.store(at).attach().unwrap();
            }
            Action::Restart {
                at,
                crash,
                new_boot,
                reattach,
            } => self.restart(at, crash, new_boot, reattach),
            Action::NewEpoch { at } => {
                let eo = ReplicaStore::start_new_epoch(e.store(at), "test").unwrap();
                m.0[at].set_next_epoch(e.store(at).origin_view().epoch);
                let mo = m.store(at).start_new_epoch("test").unwrap();
                assert_eq!(eo, mo, "start_new_epoch");
            }
            Action::Release { at } => {
                let origin = e.store(at).origin_id();
                let upto = (0..REPLICAS)
                    .filter(|j| *j != at)
                    .map(|j| e.store(j).applied().get(origin))
                    .min()
                    .unwrap_or(0);
                e.store(at).release_shipped(upto);
                m.store(at).release_shipped(upto);
            }
            Action::Checkpoint { at } => {
                let dir = tempfile::tempdir().unwrap();
                e.store(at).checkpoint(dir.path().join("cp")).unwrap();
                let boot = self.engines.0[at].boot;
                // Opened later as a copy put back by hand (`Engine::restore_backup` would mark it).
                self.checkpoints[at] = Some((dir, boot, m.0[at].copied()));
            }
            Action::Restore { at } => self.restore(at),
        }
    }

    /// The replica comes back from its last checkpoint (a restored backup), with less than it
    /// may have shipped since.
    fn restore(&mut self, at: usize) {
        let Some((dir, boot, memory)) = self.checkpoints[at].take() else {
            return;
        };
        let replica = &mut self.engines.0[at];
        drop(replica.engine.take());
        replica.path = dir.path().join("cp");
        replica.dirs.push(dir);
        replica.open();
        // A copy taken from a running replica reads as a run that did not end cleanly: in
        // another boot, the engine starts a new epoch at open.
        let (before, after) = (memory.origin_view(), replica.engine().origin_view());
        assert_eq!(
            after.epoch != before.epoch,
            boot != replica.boot,
            "{after:?}"
        );
        if after.epoch != before.epoch {
            memory.set_next_epoch(after.epoch);
            memory.start_new_epoch("lost tail").unwrap();
        }
        self.memories.0[at] = memory;
        self.exact = false;
        self.memo[at] = CompactionMemo::default();
        // Peers holding more of its origin than it does: it moves to a new epoch (what the
        // replicator's handshake does), so that no sequence number is given twice.
        let (e, m) = (&self.engines, &self.memories);
        let origin = e.store(at).origin_id();
        let own = e.store(at).applied().get(origin);
        if (0..REPLICAS).any(|j| e.store(j).applied().get(origin) > own) {
            let eo = ReplicaStore::start_new_epoch(e.store(at), "peers hold more").unwrap();
            m.0[at].set_next_epoch(e.store(at).origin_view().epoch);
            let mo = m.store(at).start_new_epoch("peers hold more").unwrap();
            assert_eq!(eo, mo, "start_new_epoch");
        }
    }

    fn sync(&mut self, first: usize) {
        for f in 0..REPLICAS {
            let from = (first + f) % REPLICAS;
            for d in 0..REPLICAS - 1 {
                let to = other(from, d);
                let (e, m) = (&self.engines, &self.memories);
                for (origin, last) in e.store(from).applied().iter() {
                    let next = e.store(to).applied().get(origin) + 1;
                    if next > last {
                        continue;
                    }
                    let count = (last - next + 1) as usize;
                    assert_eq!(
                        ship(e.store(from), e.store(to), origin, next, count, self.exact),
                        ship(m.store(from), m.store(to), origin, next, count, self.exact),
                        "shipping {origin}:{next}..={last} from {from} to {to}"
                    );
                }
            }
        }
    }

    fn transfer(&mut self, from: usize, to: usize, keys: bool, cells: usize, chunk: usize) {
        let (e, m) = (&self.engines, &self.memories);
        let exact = self.exact;
        let (es, mss) = (e.store(from), m.store(from));
        let (ed, md) = (e.store(to), m.store(to));
        let (e_snapshot, e_tables, e_plan) = offer(es, ed, cells);
        let (m_snapshot, m_tables, m_plan) = offer(mss, md, cells);
        assert_eq!(e_snapshot, m_snapshot, "snapshot");
        if exact {
            assert!(e_tables == m_tables, "anti-entropy tables differ");
            assert_eq!(e_plan, m_plan, "table differences");
        }
        // Decoded on both sides: the same keys (hashes of keys, not of states).
        let plans = match (e_plan, m_plan) {
            (Some(ep), Some(mp)) if keys => {
                assert_eq!(ep, mp, "table differences");
                Some(ep)
            }
            _ => None,
        };
        let streamed = plans.is_none();
        let (et, mt) = match plans {
            Some((want, ours_only)) => (
                send_keys(es, ed, &e_snapshot, &want, &ours_only, chunk, exact),
                send_keys(mss, md, &m_snapshot, &want, &ours_only, chunk, exact),
            ),
            None => (
                stream(es, ed, &e_snapshot, chunk, exact),
                stream(mss, md, &m_snapshot, chunk, exact),
            ),
        };
        // Chunks cut by byte counts are comparable one by one only while records are equal
        // byte for byte, or when the cut does not depend on sizes (a limit below any record's
        // size: one record per chunk; no limit: one chunk).
        if exact || !streamed || chunk < 12 || chunk == usize::MAX {
            assert_eq!(et, mt, "transfer from {from} to {to}");
        } else {
            assert_eq!(et.totals(), mt.totals(), "transfer from {from} to {to}");
        }
        let (_, merged, dropped) = et.totals();
        self.transferred = (merged, dropped);
    }

    fn restart(&mut self, at: usize, crash: bool, new_boot: bool, reattach: bool) {
        let replica = &mut self.engines.0[at];
        let before = replica.engine().origin_view();
        let engine = replica.engine.take().unwrap();
        if crash {
            engine.into_engine().close_as_crashed();
        } else {
            drop(engine);
        }
        if new_boot {
            replica.boot += 1;
        }
        replica.open();
        let after = replica.engine().origin_view();
        let memory = &self.memories.0[at];
        memory.restart();
        // A crash in another boot under `Durability::Wal`: the engine starts a new epoch.
        assert_eq!(after.epoch != before.epoch, crash && new_boot, "{after:?}");
        if after.epoch != before.epoch {
            memory.set_next_epoch(after.epoch);
            memory.start_new_epoch("lost tail").unwrap();
        }
        if reattach {
            replica.engine().attach().unwrap();
        }
        self.exact = false;
        self.memo[at] = CompactionMemo::default();
    }

    /// Compares both sides.
    fn check(&mut self, step: usize, action: &Action) {
        for i in 0..REPLICAS {
            let ev = view(&self.engines, i, self.exact);
            let mv = view(&self.memories, i, self.exact);
            if ev != mv {
                // Field by field, for a readable failure.
                macro_rules! same {
                    ($($f:ident),*) => {$(
                        assert_eq!(ev.$f, mv.$f, "replica {i}, {} after step {step}: {action:?}", stringify!($f));
                    )*};
                }
                same!(origin, origin_id, member_id, applied, floors, record_count);
                same!(exports, range, hashed_keys, entries);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn engine_and_memory_store_behave_alike(
        seed in any::<u64>(),
        cache_bytes in prop::sample::select(vec![0usize, 2048, 64 << 20]),
        attached in any::<[bool; REPLICAS]>(),
        actions in prop::collection::vec(action(), 1..40),
    ) {
        let mut world = World::new(seed, cache_bytes, attached);
        world.check(0, &Action::Sync { first: 0 });
        for (step, action) in actions.iter().enumerate() {
            world.run(action);
            world.check(step + 1, action);
        }
    }
}

/// A replica restored from a backup holds a key whose delete every other replica applied and
/// whose tombstone was reclaimed: a state transfer (both ways of running one) removes what the
/// sender's snapshot covers.
#[test]
fn a_restored_replica_learns_reclaimed_deletes_alike() {
    for keys in [true, false] {
        let mut world = World::new(7, 2048, [true; REPLICAS]);
        let put = |at, k| Action::Write {
            at,
            ops: vec![(k, OpGen::Put(1, None))],
        };
        let script = [
            put(0, 0),
            put(2, 1),
            Action::Sync { first: 0 },
            Action::Checkpoint { at: 2 },
            Action::Write {
                at: 0,
                ops: vec![(0, OpGen::Delete)],
            },
            Action::Sync { first: 0 },
            Action::Compact { at: 0 },
            Action::Compact { at: 1 },
            Action::Compact { at: 2 },
            Action::Restore { at: 2 },
            Action::Transfer {
                from: 0,
                to: 2,
                keys,
                cells: 768,
                chunk: usize::MAX,
            },
        ];
        for (step, action) in script.iter().enumerate() {
            world.run(action);
            world.check(step + 1, action);
        }
        assert_eq!(world.transferred, (0, 1), "keys: {keys}");
        let k0 = world.engines.export(2, &key(0)).unwrap();
        assert!(decode_record(&k0).unwrap().is_bottom());
    }
}
