//! The random workload: every value type, deletes, concurrent writes to the same keys from
//! different regions, and sessions that carry causal tokens from region to region.

use super::history::{register_saw, Effect, History, RegisterOp, Written};
use super::rng::SimRng;
use meridian::Replication;
use meridian_core::model::{CausalToken, Dot, Op};

/// The map key of the workload.
pub const MAP_KEY: &[u8] = b"m0";
const REGISTER_KEYS: u64 = 6;
const LWW_KEYS: u64 = 4;
const COUNTER_KEYS: u64 = 3;
const SET_KEYS: u64 = 3;
/// Appended to every set element the workload adds (no randomness drawn for it).
const SET_ELEMENT_PAD: &[u8] =
    b"/an-element-of-a-set-padded-so-that-a-few-of-them-make-a-state-large-enough-to-be-patched-on-a-link";
const MAP_FIELDS: u64 = 3;
/// Keys written with times to live (`e0`..): last-writer-wins values that expire.
pub const EXPIRING_KEYS: u64 = 3;

/// A client session: the token of everything it wrote, and its last register write.
#[derive(Clone, Debug, Default)]
pub struct Session {
    /// Merged tokens of the session's writes.
    pub token: CausalToken,
    /// The last register write: key and dot.
    pub last_write: Option<(Vec<u8>, Dot)>,
}

/// What one step of the workload observed.
#[derive(Debug, Default)]
pub struct StepOutcome {
    /// A session read in a region that covered its token but missed its write.
    pub ryw_violation: Option<String>,
    /// The region did not yet cover the session's token (a `NotYetVisible` answer).
    pub not_yet_visible: bool,
    /// The region covered the token and the session's last write was looked for.
    pub ryw_checked: bool,
    /// The region refused writes (reopened, waiting for its peers); nothing was done.
    pub unavailable: bool,
    /// A write's forged read context was refused (nothing written), as it must be.
    pub context_refused: bool,
    /// Bytes mixed into the trace.
    pub trace: Vec<u8>,
}

impl StepOutcome {
    /// The outcome of a step a region could not serve.
    pub fn unavailable() -> StepOutcome {
        StepOutcome {
            unavailable: true,
            trace: b"unavailable".to_vec(),
            ..StepOutcome::default()
        }
    }
}

fn dot_of(engine: &Replication, token: &CausalToken) -> Dot {
    Dot::new(engine.origin_id(), token.get(engine.origin_id()))
}

/// A context or token as a hostile client forges one: real origins with counters far beyond
/// what anyone wrote, and a replica nobody knows.
fn forged_vector(rng: &mut SimRng, engine: &Replication) -> meridian::VersionVector {
    let mut forged = meridian::VersionVector::new();
    for (origin, seq) in engine.applied().iter() {
        if rng.below(2) == 0 {
            forged.add(Dot::new(origin, seq + 1 + rng.below(1 << 40)));
        }
    }
    forged.add(Dot::new(
        meridian::OriginId(0xF0E6_ED00 + rng.below(8)),
        1 + rng.below(1 << 20),
    ));
    forged
}

/// Where a step runs: the region's index.
#[derive(Clone, Copy, Debug)]
pub struct At {
    /// The region's index.
    pub region: usize,
    /// Whether keys may be written with times to live (every region reads expiries).
    pub expiry: bool,
}

/// Runs one random operation for `session` against `engine` (region `at`), recording it in
/// `history`; with `forge`, some operations carry forged contexts and tokens, as a hostile
/// client's.
pub fn step(
    rng: &mut SimRng,
    engine: &Replication,
    at: At,
    session: &mut Session,
    history: &mut History,
    op_id: u64,
    forge: bool,
) -> Result<StepOutcome, String> {
    let expiry = at.expiry;
    let mut out = StepOutcome::default();
    let stored = |key: &[u8]| engine.export(key).ok().flatten();
    let before;
    let mut removed_dots = Vec::new();
    if forge && rng.below(8) == 0 {
        // A forged token names writes nobody made: never covered, so never waited out.
        let forged = meridian::CausalToken(forged_vector(rng, engine));
        if engine.covers(&forged) {
            out.ryw_violation = Some(format!(
                "{} covers a forged token {}",
                engine.origin_id(),
                forged.0
            ));
        }
    }
    // Session guarantee first: a region covering the token must show the session's write.
    if let Some((key, dot)) = &session.last_write {
        if history.lost.contains(dot) {
            // Lost as the durability contract allows: nothing to read back.
        } else if engine.covers(&session.token) {
            out.ryw_checked = true;
            if !register_saw(engine, key, *dot, history)? {
                out.ryw_violation = Some(format!(
                    "{} covers the token but misses {dot} on {key:?}",
                    engine.origin_id()
                ));
            }
        } else {
            out.not_yet_visible = true;
        }
    }
    // (A damaged record's error starts "corrupt record": the caller counts it unavailable.)
    let e = |err: meridian::Error| err.to_string();
    let value = format!("v{op_id}").into_bytes();
    let mut written: Vec<u8> = MAP_KEY.to_vec();
    let token = match rng.below(100) {
        0..=29 => {
            let key = format!("r{}", rng.below(REGISTER_KEYS)).into_bytes();
            let mut ctx = engine
                .get(&key)
                .map_err(e)?
                .map(|s| s.context)
                .unwrap_or_default();
            if forge && rng.below(4) == 0 {
                ctx.join(&forged_vector(rng, engine));
            }
            let delete = rng.below(10) == 0;
            before = stored(&key);
            let token = if delete {
                let ctx = register_ctx(engine, &key)?;
                let t = engine.delete(&key).map_err(e)?;
                push(
                    history.registers.entry(key.clone()).or_default(),
                    dot_of(engine, &t),
                    ctx,
                    None,
                    None,
                );
                t
            } else {
                // A context beyond what this region has seen of the key (a forged one) is
                // refused, nothing written; one within it is what the write supersedes.
                let mut seen = engine.applied();
                seen.join(&register_ctx(engine, &key)?);
                if !seen.dominates(&ctx) {
                    return match engine.put_with(&key, &value, &ctx) {
                        Err(meridian::Error::ContextAhead { .. }) => {
                            out.context_refused = true;
                            out.trace.extend_from_slice(b"context refused");
                            Ok(out)
                        }
                        other => Err(format!(
                            "{} took a context beyond what it saw ({ctx} over {seen}): {other:?}",
                            engine.origin_id()
                        )),
                    };
                }
                let effective = ctx.clone();
                let t = engine.put_with(&key, &value, &ctx).map_err(e)?;
                let dot = dot_of(engine, &t);
                push(
                    history.registers.entry(key.clone()).or_default(),
                    dot,
                    effective,
                    Some(value.clone()),
                    None,
                );
                session.last_write = Some((key.clone(), dot));
                t
            };
            out.trace.extend_from_slice(&key);
            written = key;
            token
        }
        30..=44 => {
            let key = format!("l{}", rng.below(LWW_KEYS)).into_bytes();
            let ctx = engine
                .read(&key)
                .map_err(e)?
                .map(|r| r.token.0)
                .unwrap_or_default();
            before = stored(&key);
            let t = engine.lww_set(&key, &value).map_err(e)?;
            let marker = engine.get_lww(&key).map_err(e)?.map(|v| v.marker);
            written = key.clone();
            push(
                history.lww.entry(key).or_default(),
                dot_of(engine, &t),
                ctx,
                Some(value.clone()),
                marker,
            );
            t
        }
        45..=64 => {
            let key = format!("c{}", rng.below(COUNTER_KEYS)).into_bytes();
            let delta = rng.below(21) as i64 - 10;
            before = stored(&key);
            let t = engine.counter_add(&key, delta).map_err(e)?;
            written = key.clone();
            *history.counters.entry(key.clone()).or_default() += delta;
            history
                .effects
                .insert(dot_of(engine, &t), Effect::Counter { key, delta });
            t
        }
        65..=84 => {
            let key = format!("s{}", rng.below(SET_KEYS)).into_bytes();
            written = key.clone();
            let (added, removed) = history.sets.entry(key.clone()).or_default();
            let present = engine.get_set(&key).map_err(e)?.unwrap_or_default();
            before = stored(&key);
            if !present.is_empty() && rng.below(3) == 0 {
                let elem = present[rng.below(present.len() as u64) as usize].clone();
                removed.insert(elem.clone());
                removed_dots = set_dots(before.as_deref(), &elem);
                let t = engine.set_remove(&key, &[&elem]).map_err(e)?;
                let effect = Effect::SetRemove { key, elem };
                history.effects.insert(dot_of(engine, &t), effect);
                t
            } else {
                // Padded so that sets soon pass the size from which links send patches
                // (`link_states.rs`): the simulator's sets exercise version 7's linked states.
                let value = [&value[..], SET_ELEMENT_PAD].concat();
                added.insert(value.clone());
                let t = engine.set_add(&key, &[&value]).map_err(e)?;
                let effect = Effect::SetAdd { key, elem: value };
                history.effects.insert(dot_of(engine, &t), effect);
                t
            }
        }
        92..=99 => {
            // Expiring keys (only once every region reads expiries: an older protocol's region
            // would hold them without, and never converge with the others until upgraded).
            let key = format!("e{}", rng.below(EXPIRING_KEYS)).into_bytes();
            let ttl = std::time::Duration::from_millis(100 + rng.below(3_000));
            before = stored(&key);
            written = key.clone();
            let batch = meridian::Batch::new().lww_set(key.clone(), value.clone());
            let attempt = match rng.below(10) {
                0..=4 if expiry => Some(engine.write(batch.ttl(key.clone(), ttl))),
                8..=9 if expiry => Some(engine.expire(&key, ttl)),
                _ => None,
            };
            let (t, expires) = match attempt {
                Some(Ok(t)) => (t, true),
                // A region that has not yet seen every member linked at the newest version
                // since an upgrade refuses expiries (nothing written): a plain write instead.
                Some(Err(meridian::Error::InvalidOperation(why))) if why.contains("expiries") => {
                    out.trace.extend_from_slice(b"expiry refused");
                    (engine.lww_set(&key, &value).map_err(e)?, false)
                }
                Some(Err(err)) => return Err(e(err)),
                None => (engine.lww_set(&key, &value).map_err(e)?, false),
            };
            if expires {
                let dot = dot_of(engine, &t);
                history.expiring.entry(key).or_default().insert(dot);
            }
            t
        }
        _ => {
            let field = format!("f{}", rng.below(MAP_FIELDS)).into_bytes();
            let delta = rng.below(10) as i64 + 1;
            before = stored(MAP_KEY);
            let t = engine
                .map_update(MAP_KEY, &field, Op::CounterAdd { delta })
                .map_err(e)?;
            *history.map_fields.entry(field.clone()).or_default() += delta;
            history
                .effects
                .insert(dot_of(engine, &t), Effect::MapField { field, delta });
            t
        }
    };
    out.trace.extend_from_slice(&token.to_bytes());
    let dot = dot_of(engine, &token);
    let after = stored(&written);
    history.written.insert(
        dot,
        Written {
            region: at.region,
            before,
            after,
            removed: removed_dots,
        },
    );
    history.keys_of.insert(dot, written);
    if !history.dots.insert(dot) {
        return Err(format!(
            "{} acknowledged a second write as {dot}: a sequence number reused",
            engine.member_id()
        ));
    }
    session.token.merge(&token);
    Ok(out)
}

/// The dots of `elem`'s adds in a stored set record.
fn set_dots(stored: Option<&[u8]>, elem: &[u8]) -> Vec<Dot> {
    let Some(record) = stored.and_then(|b| meridian_core::model::codec::decode_record(b).ok())
    else {
        return Vec::new();
    };
    match record.values.get(&meridian_core::model::Kind::Set) {
        Some(meridian_core::model::Value::Set(s)) => s
            .store
            .get(elem)
            .map(|d| d.keys().copied().collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn register_ctx(engine: &Replication, key: &[u8]) -> Result<meridian::VersionVector, String> {
    let Some(bytes) = engine.export(key).map_err(|e| e.to_string())? else {
        return Ok(meridian::VersionVector::new());
    };
    let record = meridian_core::model::codec::decode_record(&bytes)
        .map_err(|e| format!("corrupt record {}: {e}", String::from_utf8_lossy(key)))?;
    Ok(record.context())
}

fn push(
    ops: &mut Vec<RegisterOp>,
    dot: Dot,
    ctx: meridian::VersionVector,
    value: Option<Vec<u8>>,
    marker: Option<meridian::Hlc>,
) {
    ops.push(RegisterOp {
        dot,
        ctx,
        value,
        marker,
    });
}

/// What a region's engine did with a routed client's write.
#[derive(Debug)]
pub enum Applied {
    /// Written under this token and dot.
    Written(CausalToken, Dot),
    /// A write tagged with the same request was held already: nothing written; its token.
    Earlier(CausalToken),
    /// The engine refused it, nothing written.
    Refused(meridian::Error),
}

/// Applies a routed client's write of `op` to `key` at `engine` (region `region`) once per
/// request `tag` (`Engine::write_once`, as the node does), recording it in `history` as
/// `step` records its own writes (every applied write must survive, answered or not). An
/// engine refusal is returned for the region to answer; `Err` is a simulator-level failure.
pub fn apply_routed(
    engine: &Replication,
    region: usize,
    tag: &meridian::RequestTag,
    key: &[u8],
    op: Op,
    history: &mut History,
) -> Result<Applied, String> {
    let before = engine.export(key).ok().flatten();
    let decoded = before
        .as_deref()
        .map(meridian_core::model::codec::decode_record);
    let ctx_before = match &decoded {
        None => Some(meridian::VersionVector::new()),
        Some(Ok(record)) => Some(record.context()),
        // A damaged record: the engine refuses the write (or repairs it first).
        Some(Err(_)) => None,
    };
    let lww_ctx = match &op {
        Op::LwwSet { .. } => match engine.read(key) {
            Ok(read) => read.map(|r| r.token.0).unwrap_or_default(),
            Err(e) => return Ok(Applied::Refused(e)),
        },
        _ => meridian::VersionVector::new(),
    };
    // What a set write takes of its elements: a removal, the adds it sees; an add, the
    // element's earlier adds it sees (superseded by its own dot).
    let removed = match &op {
        Op::SetRemove { elems } | Op::SetAdd { elems } => elems
            .iter()
            .flat_map(|e| set_dots(before.as_deref(), e))
            .collect(),
        _ => Vec::new(),
    };
    let batch = meridian::Batch::new().op(key.to_vec(), op.clone());
    let token = match engine.write_once(tag, batch) {
        Ok(meridian::Once::Applied(t)) => t,
        Ok(meridian::Once::Earlier(t)) => return Ok(Applied::Earlier(t)),
        Err(e) => return Ok(Applied::Refused(e)),
    };
    let dot = dot_of(engine, &token);
    let ctx_before = ctx_before.ok_or_else(|| {
        format!(
            "{} applied a write to {key:?} whose record did not decode",
            engine.origin_id()
        )
    })?;
    match op {
        Op::Put { value, context } => push(
            history.registers.entry(key.to_vec()).or_default(),
            dot,
            context.unwrap_or(ctx_before),
            Some(value),
            None,
        ),
        Op::Delete => push(
            history.registers.entry(key.to_vec()).or_default(),
            dot,
            ctx_before,
            None,
            None,
        ),
        Op::LwwSet { value } => {
            let marker = engine
                .get_lww(key)
                .map_err(|e| e.to_string())?
                .map(|v| v.marker);
            push(
                history.lww.entry(key.to_vec()).or_default(),
                dot,
                lww_ctx,
                Some(value),
                marker,
            )
        }
        Op::CounterAdd { delta } => {
            *history.counters.entry(key.to_vec()).or_default() += delta;
            history.effects.insert(
                dot,
                Effect::Counter {
                    key: key.to_vec(),
                    delta,
                },
            );
        }
        Op::SetAdd { elems } => {
            let (added, _) = history.sets.entry(key.to_vec()).or_default();
            for elem in elems {
                added.insert(elem.clone());
                history.effects.insert(
                    dot,
                    Effect::SetAdd {
                        key: key.to_vec(),
                        elem,
                    },
                );
            }
        }
        Op::SetRemove { elems } => {
            let (_, gone) = history.sets.entry(key.to_vec()).or_default();
            for elem in elems {
                gone.insert(elem.clone());
                history.effects.insert(
                    dot,
                    Effect::SetRemove {
                        key: key.to_vec(),
                        elem,
                    },
                );
            }
        }
        Op::MapUpdate { field, op } => match *op {
            Op::CounterAdd { delta } => {
                *history.map_fields.entry(field.clone()).or_default() += delta;
                history
                    .effects
                    .insert(dot, Effect::MapField { field, delta });
            }
            other => return Err(format!("the client layer sent a map update {other:?}")),
        },
        other => return Err(format!("the client layer sent {other:?}")),
    }
    history.written.insert(
        dot,
        Written {
            region,
            before,
            after: engine.export(key).ok().flatten(),
            removed,
        },
    );
    history.keys_of.insert(dot, key.to_vec());
    if !history.dots.insert(dot) {
        return Err(format!(
            "{} acknowledged a second write as {dot}: a sequence number reused",
            engine.member_id()
        ));
    }
    Ok(Applied::Written(token, dot))
}
