//! What the workload did and saw, and the checks run against it after the heal.
//!
//! Every write's read context is recorded, so the expected surviving siblings of a register are
//! exactly the writes no other write or delete saw: anything missing was lost, anything extra
//! was resurrected.

pub use crate::model::digest::Fnv;
use crate::model::{codec, Dot, Hlc, Kind, ReplicaId, Value, VersionVector};
use crate::{Engine, ReadValue};
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

fn survivors(ops: &[RegisterOp]) -> BTreeSet<Dot> {
    ops.iter()
        .filter(|w| w.value.is_some())
        .filter(|w| !ops.iter().any(|x| x.dot != w.dot && x.ctx.contains(&w.dot)))
        .map(|w| w.dot)
        .collect()
}

fn stored_value(engine: &Engine, key: &[u8], kind: Kind) -> Result<Option<Value>, String> {
    let Some(bytes) = engine.export(key).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let record = codec::decode_record(&bytes).map_err(|e| e.to_string())?;
    Ok(record.values.get(&kind).cloned())
}

/// Checks the converged state of `engine` against the history.
pub fn check(engine: &Engine, history: &History) -> Findings {
    let mut f = Findings::default();
    for (key, ops) in &history.registers {
        let expected = survivors(ops);
        let present: BTreeSet<Dot> = match stored_value(engine, key, Kind::Register) {
            Ok(Some(Value::Register(r))) => r.store.keys().copied().collect(),
            Ok(_) => BTreeSet::new(),
            Err(e) => {
                f.other.push(format!("register {key:?}: {e}"));
                continue;
            }
        };
        f.lost += expected.difference(&present).count() as u64;
        f.resurrected += present.difference(&expected).count() as u64;
    }
    for (key, ops) in &history.lww {
        let expected = survivors(ops);
        let winner = ops
            .iter()
            .filter(|w| expected.contains(&w.dot))
            .max_by_key(|w| (w.marker, w.dot.replica, w.dot.counter))
            .and_then(|w| w.value.clone());
        let got = engine.get_lww(key).ok().flatten().map(|v| v.value);
        if got != winner {
            if got.is_none() {
                f.lost += 1;
            } else if winner.is_none() {
                f.resurrected += 1;
            } else {
                f.other
                    .push(format!("lww {key:?}: expected {winner:?}, read {got:?}"));
            }
        }
    }
    for (key, sum) in &history.counters {
        let got = engine.get_counter(key).ok().flatten().unwrap_or(0);
        if got != *sum {
            f.other
                .push(format!("counter {key:?}: expected {sum}, read {got}"));
        }
    }
    for (key, (added, removed)) in &history.sets {
        let expected: BTreeSet<Vec<u8>> = added.difference(removed).cloned().collect();
        let got: BTreeSet<Vec<u8>> = engine
            .get_set(key)
            .ok()
            .flatten()
            .unwrap_or_default()
            .into_iter()
            .collect();
        f.lost += expected.difference(&got).count() as u64;
        f.resurrected += got.difference(&expected).count() as u64;
    }
    if !history.map_fields.is_empty() {
        let map = engine
            .get_map(super::workload::MAP_KEY)
            .ok()
            .flatten()
            .unwrap_or_default();
        for (field, sum) in &history.map_fields {
            let got = match map.fields.get(field).map(Vec::as_slice) {
                Some([ReadValue::Counter(n)]) => *n,
                _ => 0,
            };
            if got != *sum {
                f.other
                    .push(format!("map field {field:?}: expected {sum}, read {got}"));
            }
        }
    }
    f
}

/// Whether the register of `key` at `engine` reflects `dot` (read-your-writes): its context
/// covers the dot, or the replica has applied a delete that saw the dot (whose tombstone may
/// since have been reclaimed, taking the dot's memory with it).
pub fn register_saw(
    engine: &Engine,
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
/// `stable` so that replicas that forgot stable removal memory at different times compare equal.
pub fn digest(engine: &Engine, stable: &VersionVector) -> Result<u64, String> {
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

/// The replica id the simulator gives region `i` in its `incarnation` (a region declared dead
/// comes back with an empty disk under a new id).
pub fn sim_replica(i: usize, incarnation: u64) -> ReplicaId {
    ReplicaId(0x5EED_0000_0000_0000 | (incarnation << 16) | (i as u64 + 1))
}

/// Log entries and tombstones a replica still holds.
pub fn unreclaimed(engine: &Engine) -> Result<(u64, u64), String> {
    let entries = engine.store().log_entries().count() as u64;
    let mut tombstones = 0;
    for item in engine.store().records_from(b"", None) {
        let (key, v) = item.map_err(|e| e.to_string())?;
        let rec = codec::decode_record(&v).map_err(|e| e.to_string())?;
        if rec.is_bottom() {
            tombstones += 1;
            if std::env::var("MERIDIAN_SIM_DEBUG").is_ok() {
                let pending = engine
                    .store()
                    .get_meta(&crate::store::keys::tombstone_key(&key))
                    .ok()
                    .flatten()
                    .is_some();
                eprintln!(
                    "{} tombstone {:?} ctx {} pending {pending} {:?}",
                    engine.replica_id(),
                    String::from_utf8_lossy(&key),
                    rec.context(),
                    rec
                );
            }
        }
    }
    Ok((entries, tombstones))
}
