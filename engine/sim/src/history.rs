//! What the workload did and saw, and the checks run against it after the heal.
//!
//! Every write's read context is recorded, so the expected surviving siblings of a register are
//! exactly the writes no other write or delete saw: anything missing was lost, anything extra
//! was resurrected.

use meridian::{ReadValue, Replication};
pub use meridian_core::model::digest::Fnv;
use meridian_core::model::{codec, Dot, Hlc, Kind, MemberId, Value, VersionVector};
use std::collections::{BTreeMap, BTreeSet};

/// One register (or LWW) write or delete, with what its writer had seen.
#[derive(Clone, Debug)]
pub struct RegisterOp {
    /// The operation's dot.
    pub dot: Dot,
    /// The context it superseded.
    pub ctx: VersionVector,
    /// The value, `None` for a delete.
    pub value: Option<Vec<u8>>,
    /// The LWW marker of an LWW write.
    pub marker: Option<Hlc>,
}

/// Elements added to a set key, and elements removed from it.
pub type SetHistory = (BTreeSet<Vec<u8>>, BTreeSet<Vec<u8>>);

/// The recorded history of one seed.
#[derive(Debug, Default)]
pub struct History {
    /// Multi-value register operations per key.
    pub registers: BTreeMap<Vec<u8>, Vec<RegisterOp>>,
    /// LWW operations per key.
    pub lww: BTreeMap<Vec<u8>, Vec<RegisterOp>>,
    /// Sum of acknowledged increments per counter key.
    pub counters: BTreeMap<Vec<u8>, i64>,
    /// Elements added and elements removed per set key.
    pub sets: BTreeMap<Vec<u8>, SetHistory>,
    /// Sum of increments per counter field of the map key.
    pub map_fields: BTreeMap<Vec<u8>, i64>,
    /// Every acknowledged write's dot: a dot acknowledged twice is a sequence number reused.
    pub dots: BTreeSet<Dot>,
    /// The key each acknowledged write changed.
    pub keys_of: BTreeMap<Dot, Vec<u8>>,
    /// What each counter, map and set write added to the expectations above, by dot (to take
    /// back a write the durability contract allows to be lost).
    pub effects: BTreeMap<Dot, Effect>,
    /// Acknowledged writes lost as the durability contract allows (under `wal`, in a region
    /// that lost power or its disk before another region applied them).
    pub lost: BTreeSet<Dot>,
    /// Where and how each acknowledged write was made.
    pub written: BTreeMap<Dot, Written>,
    /// Writes a disk fault that may lose them took from some region (a power loss under
    /// `wal`, a wiped disk, a restored backup): the only writes a loss is excused for.
    pub dropped: BTreeSet<Dot>,
    /// Writes that set an expiry, by key: after one, the key's record may expire, be
    /// reclaimed and be collected, taking the memory of what it held with it.
    pub expiring: BTreeMap<Vec<u8>, BTreeSet<Dot>>,
}

/// Where and how one acknowledged write was made.
#[derive(Clone, Debug)]
pub struct Written {
    /// The region that acknowledged it.
    pub region: usize,
    /// The key's stored state just before it (for a torn log to undo it).
    pub before: Option<Vec<u8>>,
    /// The key's stored state just after it.
    pub after: Option<Vec<u8>>,
    /// For a set removal: the dots of the element's adds it removed (it leaves no dot of its
    /// own in the record: what reflects it is those dots seen and gone).
    pub removed: Vec<Dot>,
}

/// What one counter, map or set write contributed to the expectations.
#[derive(Clone, Debug)]
pub enum Effect {
    /// A counter increment.
    Counter {
        /// The key.
        key: Vec<u8>,
        /// The amount.
        delta: i64,
    },
    /// A map counter field increment.
    MapField {
        /// The field.
        field: Vec<u8>,
        /// The amount.
        delta: i64,
    },
    /// A set element added.
    SetAdd {
        /// The key.
        key: Vec<u8>,
        /// The element.
        elem: Vec<u8>,
    },
    /// A set element removed.
    SetRemove {
        /// The key.
        key: Vec<u8>,
        /// The element.
        elem: Vec<u8>,
    },
}

impl History {
    /// Marks the acknowledged write `dot` as lost as the durability contract allows: its entry
    /// is gone with a disk, though its effect may have reached another region inside a state
    /// shipped earlier. The checks accept either outcome for it (and for what only it
    /// superseded).
    pub fn forget(&mut self, dot: Dot) {
        if self.lost.insert(dot) && std::env::var("MERIDIAN_SIM_DEBUG").is_ok() {
            eprintln!("forget {dot}: {:?}", self.effects.get(&dot));
        }
    }

    /// The deltas of `key`'s counter (or of the map field, with `field`) by acknowledged
    /// writes: (kept, lost).
    fn deltas(&self, matches: impl Fn(&Effect) -> Option<i64>) -> (i64, Vec<i64>) {
        let mut kept = 0;
        let mut lost = Vec::new();
        for (dot, effect) in &self.effects {
            if let Some(delta) = matches(effect) {
                if self.lost.contains(dot) {
                    lost.push(delta);
                } else {
                    kept += delta;
                }
            }
        }
        (kept, lost)
    }
}

/// Whether `got` is `kept` plus the deltas of some subset of `lost` (which of a lost tail's
/// increments escaped in a shipped state is not known).
fn sum_allowed(got: i64, kept: i64, lost: &[i64]) -> bool {
    if lost.len() > 16 {
        let low: i64 = lost.iter().filter(|d| **d < 0).sum();
        let high: i64 = lost.iter().filter(|d| **d > 0).sum();
        return (kept + low..=kept + high).contains(&got);
    }
    (0u32..1 << lost.len()).any(|mask| {
        let extra: i64 = lost
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, d)| d)
            .sum();
        kept + extra == got
    })
}

/// Violations found by the final checks.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Findings {
    /// Acknowledged writes missing although nothing superseded them.
    pub lost: u64,
    /// Superseded or deleted writes that came back.
    pub resurrected: u64,
    /// Other mismatches (counters, sets, LWW winners, decoding), described.
    pub other: Vec<String>,
}

/// Writes of `ops` that no other operation saw (`must`: superseded by nothing, and not lost
/// themselves) and those that may still show (`may`: superseded by nothing but lost writes).
fn survivors(ops: &[RegisterOp], lost: &BTreeSet<Dot>) -> (BTreeSet<Dot>, BTreeSet<Dot>) {
    let seen_by = |w: &RegisterOp, counted: &dyn Fn(&RegisterOp) -> bool| {
        ops.iter()
            .any(|x| x.dot != w.dot && counted(x) && x.ctx.contains(&w.dot))
    };
    let mut must = BTreeSet::new();
    let mut may = BTreeSet::new();
    for w in ops.iter().filter(|w| w.value.is_some()) {
        if !seen_by(w, &|x| !lost.contains(&x.dot)) {
            may.insert(w.dot);
            if !lost.contains(&w.dot) && !seen_by(w, &|_| true) {
                must.insert(w.dot);
            }
        }
    }
    (must, may)
}

fn stored_value(engine: &Replication, key: &[u8], kind: Kind) -> Result<Option<Value>, String> {
    let Some(bytes) = engine.export(key).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let record = codec::decode_record(&bytes)
        .map_err(|e| format!("corrupt record {}: {e}", String::from_utf8_lossy(key)))?;
    Ok(record.values.get(&kind).cloned())
}

/// Checks the converged state of `engine` against the history.
pub fn check(engine: &Replication, history: &History) -> Findings {
    let mut f = Findings::default();
    let debug = std::env::var("MERIDIAN_SIM_DEBUG").is_ok();
    for (key, ops) in &history.registers {
        let (must, may) = survivors(ops, &history.lost);
        let present: BTreeSet<Dot> = match stored_value(engine, key, Kind::Register) {
            Ok(Some(Value::Register(r))) => r.store.keys().copied().collect(),
            Ok(_) => BTreeSet::new(),
            Err(e) => {
                f.other.push(format!("register {key:?}: {e}"));
                continue;
            }
        };
        f.lost += must.difference(&present).count() as u64;
        f.resurrected += present.difference(&may).count() as u64;
        if debug && (!must.is_subset(&present) || !present.is_subset(&may)) {
            eprintln!(
                "register {key:?}: must {must:?} may {may:?} present {present:?} ops {ops:?}"
            );
        }
    }
    for (key, ops) in &history.lww {
        let (must, may) = survivors(ops, &history.lost);
        let rank = |w: &RegisterOp| (w.marker, w.dot.replica, w.dot.counter);
        let winner = ops
            .iter()
            .filter(|w| must.contains(&w.dot))
            .max_by_key(|w| rank(w));
        let got = engine.get_lww(key).ok().flatten().map(|v| v.value);
        // The strict winner, or a write that may still show and ranks above it.
        let allowed = match (&got, winner) {
            (None, None) => true,
            (Some(v), Some(w)) if w.value.as_ref() == Some(v) => true,
            (Some(v), w) => ops.iter().any(|o| {
                may.contains(&o.dot)
                    && o.value.as_ref() == Some(v)
                    && w.is_none_or(|w| rank(o) > rank(w))
            }),
            (None, Some(_)) => false,
        };
        if !allowed {
            if debug {
                eprintln!(
                    "lww {key:?}: expected {:?} got {got:?} ops {ops:?}",
                    winner.map(|w| &w.value)
                );
            }
            match (&got, winner) {
                (None, _) => f.lost += 1,
                (Some(_), None) => f.resurrected += 1,
                _ => f.other.push(format!(
                    "lww {key:?}: expected {:?}, read {got:?}",
                    winner.and_then(|w| w.value.clone())
                )),
            }
        }
    }
    for key in history.counters.keys() {
        let (kept, lost) = history.deltas(|e| match e {
            Effect::Counter { key: k, delta } if k == key => Some(*delta),
            _ => None,
        });
        let got = engine.get_counter(key).ok().flatten().unwrap_or(0);
        if !sum_allowed(got, kept, &lost) {
            f.other.push(format!(
                "counter {key:?}: expected {kept} (with {} lost deltas allowed), read {got}",
                lost.len()
            ));
        }
    }
    for key in history.sets.keys() {
        // Per element: its adds (dot, lost) and the set writes that took add dots (those
        // dots, lost): a removal takes the adds its region held, an add the element's earlier
        // adds its region held (its own dot supersedes them). An add retried in a second
        // region after a lost answer may have two dots.
        type Adds = Vec<(Dot, bool)>;
        type Removals<'a> = Vec<(&'a [Dot], bool)>;
        let mut elems: BTreeMap<&Vec<u8>, (Adds, Removals<'_>)> = BTreeMap::new();
        for (dot, effect) in &history.effects {
            let lost = history.lost.contains(dot);
            match effect {
                Effect::SetAdd { key: k, elem } if k == key => {
                    let took = history
                        .written
                        .get(dot)
                        .map_or(&[][..], |w| w.removed.as_slice());
                    let entry = elems.entry(elem).or_default();
                    entry.0.push((*dot, lost));
                    entry.1.push((took, lost));
                }
                Effect::SetRemove { key: k, elem } if k == key => {
                    let took = history
                        .written
                        .get(dot)
                        .map_or(&[][..], |w| w.removed.as_slice());
                    elems.entry(elem).or_default().1.push((took, lost))
                }
                _ => {}
            }
        }
        let got: BTreeSet<Vec<u8>> = engine
            .get_set(key)
            .ok()
            .flatten()
            .unwrap_or_default()
            .into_iter()
            .collect();
        for (elem, (adds, removals)) in &elems {
            let present = got.contains(*elem);
            let taken = |d: &Dot, counted: &dyn Fn(bool) -> bool| {
                removals
                    .iter()
                    .any(|(took, lost)| counted(*lost) && took.contains(d))
            };
            // Present for sure: an add that survived and that no set write took (kept or
            // lost). Absent for sure: every add (kept or lost) taken by a write that survived
            // (in the end, by removals), or never added.
            let must_be = adds.iter().any(|(d, lost)| !lost && !taken(d, &|_| true));
            let must_not = adds.iter().all(|(d, _)| taken(d, &|lost| !lost));
            if must_be && !present {
                f.lost += 1;
            }
            if must_not && present {
                f.resurrected += 1;
            }
            if debug && ((must_be && !present) || (must_not && present)) {
                for (dot, e) in &history.effects {
                    if let Effect::SetAdd { key: k, elem: x }
                    | Effect::SetRemove { key: k, elem: x } = e
                    {
                        if k == key && x == *elem {
                            eprintln!(
                                "  {dot} {e:?} region {:?} removed {:?}",
                                history.written.get(dot).map(|w| w.region),
                                history.written.get(dot).map(|w| &w.removed)
                            );
                        }
                    }
                }
                eprintln!(
                    "set {key:?} element {elem:?}: present {present}, adds {adds:?} removals {removals:?}"
                );
            }
        }
        for elem in &got {
            if !elems.contains_key(elem) {
                f.resurrected += 1;
            }
        }
    }
    if !history.map_fields.is_empty() {
        let map = engine
            .get_map(super::workload::MAP_KEY)
            .ok()
            .flatten()
            .unwrap_or_default();
        for field in history.map_fields.keys() {
            let (kept, lost) = history.deltas(|e| match e {
                Effect::MapField { field: x, delta } if x == field => Some(*delta),
                _ => None,
            });
            let got = match map.fields.get(field).map(Vec::as_slice) {
                Some([ReadValue::Counter(n)]) => *n,
                _ => 0,
            };
            if !sum_allowed(got, kept, &lost) {
                if debug {
                    for (dot, e) in &history.effects {
                        if let Effect::MapField { field: x, delta } = e {
                            if x == field {
                                eprintln!(
                                    "map field {field:?}: {dot} {delta:+} applied {} lost {}",
                                    engine.applied().contains(dot),
                                    history.lost.contains(dot)
                                );
                            }
                        }
                    }
                }
                f.other.push(format!(
                    "map field {field:?}: expected {kept} (with {} lost deltas allowed), read {got}",
                    lost.len()
                ));
            }
        }
    }
    f
}

/// Whether the stored record of `key` (`None`: none) reflects the write `dot` as I1 demands of
/// a replica whose applied vector `applied` covers it: its context holds the dot (present, or
/// removed by something it also reflects); or a removal applied here took it (a delete that
/// saw it, a set removal of its element), whose memory may have gone with a reclaimed
/// tombstone. A set removal leaves no dot of its own: it is reflected when the adds it removed
/// are gone from the store. A delete of a key holding nothing changes nothing.
pub fn reflects(
    record: Option<&meridian_core::model::Record>,
    key: &[u8],
    dot: Dot,
    history: &History,
    applied: &VersionVector,
) -> bool {
    let written = history.written.get(&dot);
    // A set removal (one that found nothing to take changes nothing).
    let set_removal = matches!(history.effects.get(&dot), Some(Effect::SetRemove { .. }));
    if let Some(w) = written.filter(|_| set_removal) {
        let still: BTreeSet<Dot> = match record.and_then(|r| r.values.get(&Kind::Set)) {
            Some(Value::Set(s)) => s.store.values().flat_map(|d| d.keys().copied()).collect(),
            _ => BTreeSet::new(),
        };
        return w.removed.iter().all(|d| !still.contains(d));
    }
    let removed_here = || {
        let deleted = history.registers.get(key).is_some_and(|ops| {
            ops.iter()
                .any(|d| d.value.is_none() && d.ctx.contains(&dot) && applied.contains(&d.dot))
        });
        // A set removal leaves no dot of its own: a replica that learned it by state (a peer
        // that applied it showed the element gone) reflects it without covering its dot.
        deleted
            || history.written.iter().any(|(by, w)| {
                w.removed.contains(&dot) && history.keys_of.get(by).is_some_and(|k| k == key)
            })
    };
    // A delete is reflected by its effect: nothing it saw is present any more (its own dot
    // may have gone with its reclaimed tombstone; a delete of a key holding nothing changes
    // nothing).
    let delete = history
        .registers
        .get(key)
        .and_then(|ops| ops.iter().find(|d| d.dot == dot && d.value.is_none()));
    if let Some(d) = delete {
        let present: Vec<Dot> = match record.and_then(|r| r.values.get(&Kind::Register)) {
            Some(Value::Register(r)) => r.store.keys().copied().collect(),
            _ => Vec::new(),
        };
        return record.is_some_and(|r| r.context().contains(&dot))
            || present.iter().all(|p| !d.ctx.contains(p));
    }
    if record.is_some_and(|r| r.context().contains(&dot)) {
        return true;
    }
    // An expiring key's record goes once its expired value is reclaimed and collected; a
    // write made after that starts a record that remembers nothing before it.
    let expired_here = history
        .expiring
        .get(key)
        .is_some_and(|dots| dots.iter().any(|d| applied.contains(d)));
    if expired_here {
        return true;
    }
    record.is_some_and(|r| r.context().contains(&dot)) || removed_here()
}

/// Whether the register of `key` at `engine` reflects `dot` (read-your-writes): its context
/// covers the dot, or the replica has applied a delete that saw the dot (whose tombstone may
/// since have been reclaimed, taking the dot's memory with it).
pub fn register_saw(
    engine: &Replication,
    key: &[u8],
    dot: Dot,
    history: &History,
) -> Result<bool, String> {
    if let Some(Value::Register(r)) = stored_value(engine, key, Kind::Register)? {
        if r.ctx.contains(&dot) {
            return Ok(true);
        }
    }
    let applied = engine.applied();
    Ok(history.registers.get(key).is_some_and(|ops| {
        ops.iter()
            .any(|d| d.value.is_none() && d.ctx.contains(&dot) && applied.contains(&d.dot))
    }))
}

/// A digest of every record a replica holds (tombstones included), each normalised with
/// `stable` (at convergence, the common applied vector): the memory of removed dots every
/// replica applied may differ without any join ever seeing it (one region reclaimed a tombstone
/// before a new write to its key, another kept the removal in the key's new record: found when
/// comparing whole contexts, seed 296), and is forgotten here; values, present dots and the
/// context above `stable` are compared exactly.
pub fn digest(engine: &Replication, stable: &VersionVector) -> Result<u64, String> {
    let mut h = Fnv::default();
    for item in engine.store().records_from(b"", None) {
        let (k, v) = item.map_err(|e| e.to_string())?;
        let mut record = codec::decode_record(&v).map_err(|e| e.to_string())?;
        record.normalize(stable);
        if record.values.is_empty() {
            continue;
        }
        let v = codec::encode_record(&record).map_err(|e| e.to_string())?;
        h.write(&(k.len() as u64).to_le_bytes());
        h.write(&k);
        h.write(&(v.len() as u64).to_le_bytes());
        h.write(&v);
    }
    Ok(h.0)
}

/// The member id the simulator gives region `i` in its `incarnation` (a region declared dead
/// comes back with an empty disk under a new id).
pub fn sim_replica(i: usize, incarnation: u64) -> MemberId {
    MemberId(0x5EED_0000_0000_0000 | (incarnation << 16) | (i as u64 + 1))
}

/// Log entries and tombstones a replica still holds.
/// Tombstones whose context names a write no region ever applied (its entry was lost with a
/// disk after its effect left in a shipped state) are not counted: stability never covers
/// them, a documented leak (`existing`: the pointwise maximum of every region's vector).
pub fn unreclaimed(engine: &Replication, existing: &VersionVector) -> Result<(u64, u64), String> {
    let entries = engine.store().log_entries().count() as u64;
    let mut tombstones = 0;
    for item in engine.store().records_from(b"", None) {
        let (key, v) = item.map_err(|e| e.to_string())?;
        let rec = codec::decode_record(&v).map_err(|e| e.to_string())?;
        if rec.is_bottom() && existing.dominates(&rec.context()) {
            tombstones += 1;
            if std::env::var("MERIDIAN_SIM_DEBUG").is_ok() {
                let pending = engine
                    .store()
                    .get_meta(&meridian::store::keys::tombstone_key(&key))
                    .ok()
                    .flatten()
                    .is_some();
                eprintln!(
                    "{} tombstone {:?} ctx {} pending {pending} {:?}",
                    engine.origin_id(),
                    String::from_utf8_lossy(&key),
                    rec.context(),
                    rec
                );
            }
        }
    }
    Ok((entries, tombstones))
}
