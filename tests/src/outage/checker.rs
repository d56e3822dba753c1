//! The history checked against the converged state. Every operation is held to account:
//!
//! 1. **Nothing acknowledged lost**, by each type's semantics: a register keeps the value
//!    unless a context write that may have applied superseded it; an own last-writer-wins key
//!    keeps its value unless a delete that may have applied removed it; a set keeps an element
//!    unless a removal that may have applied removed it; a map keeps its field; a counter is
//!    at least its acknowledged increments.
//! 2. **Context-dependent writes cover what the session saw**, wherever they were served: a
//!    removal, a delete or a register write with a read context carries what the session wrote
//!    or read of the key, and a region applies it only once it holds that. So an acknowledged
//!    removal's element, delete's key or context write's superseded value is gone from the
//!    converged state. It is *unverifiable* only when the thing is still there and was applied
//!    twice after a lost answer (the second copy, under a dot the session never saw, may
//!    legitimately survive).
//! 3. **A failed write left nothing** (refused: nothing written): its register value, own
//!    last-writer-wins value, element or map field value is absent; a counter counts no failed
//!    increment, neither in its lower nor in its upper bound; a failed removal or delete
//!    removed nothing (rule 1).
//! 4. **Nothing from nowhere**: every key present, register sibling, last-writer-wins value,
//!    set element, map field value comes from a write that was acknowledged or whose outcome
//!    is unknown; a register holds no more siblings of a value than the writes of it (a
//!    retried one counts twice); a counter is at most the increments that may have applied.
//! 5. **Last-writer-wins order** (`engine/core/src/model/lww.rs`: the winner is the largest
//!    (HLC marker, replica); a write supersedes what its region holds, and a region's hybrid
//!    clock ticks past every marker it wrote or received). The converged state shows the
//!    marker of every surviving own last-writer-wins value and map field: samples of each
//!    region's clock. Checked: (a) the markers of writes one region acknowledged one after the
//!    other increase (between restarts, which may reset the clock); (b) the shared key's
//!    winner was not superseded at its region by a later write acknowledged there (no disk
//!    lost between); (c) every other write of the shared key, whose marker is above the
//!    markers its region had stamped before it, ranks below the winner; (d) the winner's
//!    writer is a replica of the region that acknowledged it.
//! 6. **Consistency levels**: a write asking for k regions is never acknowledged while fewer
//!    than k could hold it (regions down, frozen or cut off throughout it; a cut-off region
//!    holds only its own); and in a scenario with a cut-off region, a write asking for a
//!    majority or more was attempted at that region directly while it was cut off (refused or
//!    unknown, never acknowledged): the check cannot pass vacuously.
//! 7. **Reads**: a session read shows the session's own acknowledged write (unless that write
//!    became at risk, below); `majority` reads show other sessions' writes acknowledged at
//!    `majority`, `regions(2)` or `all` before they began; plain reads in any region show
//!    other sessions' writes acknowledged at `all` (the client API has no `regions(n)` or
//!    `all` read: `read_majority` is the strong read). A session read or context-dependent
//!    write answered `NotYetVisible` is a violation: the session's writes were acknowledged,
//!    so a region holding them answers; it is excused only when a region that may hold some of
//!    them alone (acknowledged there at most [`SHIP_WINDOW`] before it was impaired, or
//!    somewhere not known) was down, frozen, cut off or behind lossy links (which may cut it
//!    off) at some instant of it (or within [`HEAL_GRACE`] of its return). `Uncoverable` is
//!    excused only after a disk loss.
//!
//! What cannot be verified is reported and bounded ([`Bound`]): removals unverifiable
//! ([`UNVERIFIABLE_BOUND`]), writes at risk ([`AT_RISK_BOUND`]: `local` writes acknowledged by
//! a region just before it lost its disk, checked as unknown), reads no region answered
//! ([`UNANSWERED_BOUND`]; not counting session reads made while every region was down, nor
//! `majority` and `all` reads made while a region was impaired: those levels lean to
//! consistency). Excused reads are reported too.

use super::history::{Action, OpRecord, Outcome, ReadAnswer, ReadCheck, ReadKind, Want};
use meridian::{Hlc, OriginId, Read, ReadValue};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The converged state: every key with what it holds.
pub type State = BTreeMap<Vec<u8>, Read>;

/// How a region was impaired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Impairment {
    /// Killed or stopped, then started again (its clock may restart).
    Stopped,
    /// Frozen (SIGSTOP), then thawed.
    Frozen,
    /// Running and serving its clients, with no link to any other region.
    CutOff,
    /// Running, its links losing many datagrams: it may lose its links to the others for a
    /// while (they count a peer unreachable after 2 s of silence). Excuses what a cut-off
    /// excuses, but rules nothing out.
    Lossy,
}

impl Impairment {
    /// Whether the region surely could take no part in a write (rule 6).
    fn excludes_writes(self) -> bool {
        self != Impairment::Lossy
    }
}

/// A region impaired between two instants of the run.
#[derive(Clone, Debug)]
pub struct Window {
    /// The region's name.
    pub region: String,
    /// How.
    pub kind: Impairment,
    /// When the fault began (before it took effect: a region shutting down stops serving
    /// first).
    pub began: Duration,
    /// From when it surely was impaired (after the fault took effect).
    pub from: Duration,
    /// Until when it surely was (before the heal began).
    pub to: Duration,
    /// When it was back: started, thawed or healed, and what it held applied everywhere.
    pub back: Duration,
}

/// A region whose disk was wiped at `at`: its `local` writes acknowledged within `window`
/// before may be lost (they survive only if another region applied them first).
#[derive(Clone, Debug)]
pub struct DiskLoss {
    /// The region's name.
    pub region: String,
    /// When its disk went.
    pub at: Duration,
    /// How long before that an acknowledgement may precede the write's shipping.
    pub window: Duration,
}

/// What the scenario did to the cluster.
#[derive(Clone, Debug)]
pub struct Faults {
    /// The regions of the cluster.
    pub regions: Vec<String>,
    /// Regions impaired, and when.
    pub windows: Vec<Window>,
    /// A region that lost its disk.
    pub disk_loss: Option<DiskLoss>,
    /// A region retired for good, and from when the cluster is without it.
    pub retired: Option<(String, Duration)>,
}

impl Faults {
    /// No fault in a cluster of `regions`.
    pub fn none(regions: &[&str]) -> Faults {
        Faults {
            regions: regions.iter().map(|r| r.to_string()).collect(),
            windows: Vec::new(),
            disk_loss: None,
            retired: None,
        }
    }

    /// The cluster's size at `t`.
    fn size_at(&self, t: Duration) -> usize {
        match &self.retired {
            Some((_, at)) if *at <= t => self.regions.len() - 1,
            _ => self.regions.len(),
        }
    }

    /// Whether `region`'s clock or disk may have started over between `a` and `b`.
    fn restarted_between(&self, region: &str, a: Duration, b: Duration) -> bool {
        let stopped = self.windows.iter().any(|w| {
            w.region == region && w.kind == Impairment::Stopped && w.from < b && w.back > a
        });
        stopped || self.lost_disk_between(region, a, b)
    }

    /// Whether `region` lost its disk between `a` and `b`.
    fn lost_disk_between(&self, region: &str, a: Duration, b: Duration) -> bool {
        self.disk_loss
            .as_ref()
            .is_some_and(|d| d.region == region && d.at > a && d.at < b)
    }
}

/// How much of something unverifiable a scenario tolerates: `share` of a total, and at least
/// `at_least` (so that a short run's one or two do not fail it).
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    /// Share of the total.
    pub share: f64,
    /// Allowed whatever the total.
    pub at_least: usize,
}

impl Bound {
    /// How many of `total` it allows.
    pub fn allowed(&self, total: usize) -> usize {
        self.at_least
            .max((self.share * total as f64).floor() as usize)
    }
}

/// Acknowledged removals, deletes and context writes left unverifiable: 5% of them (at least
/// 2). They come only from writes applied twice after a lost answer, which happen around a
/// fault's first instants.
pub const UNVERIFIABLE_BOUND: Bound = Bound {
    share: 0.05,
    at_least: 2,
};
/// Writes at risk: 5% of the acknowledged writes (at least 5). The window before a disk loss
/// is 200 ms of at least 8 s of load (2.5% of it, were every client served by the region that
/// loses its disk), with room for bursts.
pub const AT_RISK_BOUND: Bound = Bound {
    share: 0.05,
    at_least: 5,
};
/// Reads no region answered, but for session reads while every region was down and strong
/// reads while a region was impaired: 2% of the reads (at least 2). With a region down the
/// others answer a session read.
pub const UNANSWERED_BOUND: Bound = Bound {
    share: 0.02,
    at_least: 2,
};
/// After a region is back, how long a session whose writes it held may still find no region
/// holding them all (what was written around the heal still travelling).
pub const HEAL_GRACE: Duration = Duration::from_secs(2);
/// A write acknowledged this long before its region was impaired has reached the other
/// regions (round trips of at most 215 ms on the scenarios' links, replication continuous).
pub const SHIP_WINDOW: Duration = Duration::from_secs(2);

/// What the checker found.
#[derive(Clone, Debug, Default)]
pub struct Verdict {
    /// Writes acknowledged.
    pub acked: usize,
    /// Writes refused (nothing written).
    pub failed: usize,
    /// Writes whose outcome the client could not know.
    pub unknown: usize,
    /// Acknowledged writes missing from the converged state, described.
    pub lost: Vec<String>,
    /// Everything else that must not happen, described.
    pub violations: Vec<String>,
    /// What exceeded its bound, described.
    pub over_bound: Vec<String>,
    /// Reads made (of every kind).
    pub reads: usize,
    /// Reads no region answered (`majority` and `all` reads answered `NotYetVisible`
    /// included).
    pub reads_unanswered: usize,
    /// Of those, not bounded: session reads made while every region was down, `majority` and
    /// `all` reads made while a region was impaired (they lean to consistency: a partition
    /// may leave them unanswered).
    pub reads_unanswered_excused: usize,
    /// Session reads answered `NotYetVisible` or `Uncoverable`, or missing a write that
    /// became at risk, excused by a fault (rule 7).
    pub reads_excused: usize,
    /// `majority` and `all` reads made.
    pub strong_reads: usize,
    /// Acknowledged removals, deletes and context writes (rule 2).
    pub context_writes: usize,
    /// Of those, removals and deletes served by another region than the read before them.
    pub cross_region: usize,
    /// Of those, the ones whose target is present and was written twice after a lost
    /// answer (not decidable).
    pub unverifiable: usize,
    /// `local` writes acknowledged by a region just before it lost its disk (checked as
    /// writes that may or may not have applied).
    pub at_risk: usize,
    /// Writes asking for a majority or more attempted at a cut-off region while cut off.
    pub minority_attempts: usize,
    /// Last-writer-wins writes whose marker was compared with one their region stamped
    /// before (rule 5 (a) and (c)).
    pub markers_compared: usize,
}

impl Verdict {
    /// Nothing lost, nothing violated, nothing beyond its bound.
    pub fn clean(&self) -> bool {
        self.lost.is_empty() && self.violations.is_empty() && self.over_bound.is_empty()
    }
}

/// Checks `ops` and `reads` against `state`, knowing what `faults` did.
pub fn check(ops: &[OpRecord], reads: &[ReadCheck], state: &State, faults: &Faults) -> Verdict {
    let mut v = Verdict::default();
    let ops = mark_at_risk(ops, faults, &mut v);
    for op in &ops {
        match op.outcome {
            Outcome::Ok => v.acked += 1,
            Outcome::Fail(_) => v.failed += 1,
            Outcome::Unknown(_) => v.unknown += 1,
        }
    }
    let by_key = by_key(&ops);
    check_writes(&ops, state, &by_key, &mut v);
    check_provenance(state, &by_key, &mut v);
    check_counters(state, &by_key, &mut v);
    check_lww_order(&ops, state, faults, &mut v);
    check_levels(&ops, faults, &mut v);
    check_reads(&ops, reads, faults, &mut v);
    check_bounds(&mut v);
    v
}

/// `local` writes acknowledged by a region just before its disk was wiped become unknown.
fn mark_at_risk(ops: &[OpRecord], faults: &Faults, v: &mut Verdict) -> Vec<OpRecord> {
    let mut ops = ops.to_vec();
    if let Some(d) = &faults.disk_loss {
        for op in &mut ops {
            let just_before = op.completed <= d.at && op.completed + d.window >= d.at;
            let local = op.consistency.regions_needed(faults.regions.len()) == 1;
            if op.acked() && local && just_before && op.region.as_deref() == Some(&d.region) {
                op.outcome = Outcome::Unknown(format!(
                    "acknowledged by {} just before its disk was wiped",
                    d.region
                ));
                v.at_risk += 1;
            }
        }
    }
    ops
}

/// Operations by key.
fn by_key(ops: &[OpRecord]) -> BTreeMap<&[u8], Vec<&OpRecord>> {
    let mut by_key: BTreeMap<&[u8], Vec<&OpRecord>> = BTreeMap::new();
    for op in ops {
        by_key.entry(op.key.as_slice()).or_default().push(op);
    }
    by_key
}

/// What an operation wrote, as a read would show it.
fn written(action: &Action) -> Option<Want> {
    match action {
        Action::RegisterPut { value } | Action::RegisterReplace { value, .. } => {
            Some(Want::Register(value.clone()))
        }
        Action::LwwSet { value, .. } => Some(Want::Lww(value.clone())),
        Action::SetAdd { elem } => Some(Want::Elem(elem.clone())),
        _ => None,
    }
}

/// Rules 1 and 2: acknowledged writes present, acknowledged context-dependent writes
/// effective.
fn check_writes(
    ops: &[OpRecord],
    state: &State,
    by_key: &BTreeMap<&[u8], Vec<&OpRecord>>,
    v: &mut Verdict,
) {
    for op in ops.iter().filter(|o| o.acked()) {
        let read = state.get(&op.key);
        let values = read.map_or(&[][..], |r| r.values.as_slice());
        let key = text(&op.key);
        let same_key = by_key
            .get(op.key.as_slice())
            .map_or(&[][..], |o| o.as_slice());
        let may = |f: &dyn Fn(&OpRecord) -> bool| same_key.iter().any(|o| !o.failed() && f(o));
        // Applied twice after a lost answer: a copy under a dot the session never saw.
        let twice = |want: &Want| {
            same_key
                .iter()
                .any(|o| o.retried && written(&o.action).as_ref() == Some(want))
        };
        let deleted = may(&|o| matches!(o.action, Action::Delete { .. })) && is_absent(read);
        match &op.action {
            Action::RegisterPut { value } | Action::RegisterReplace { value, .. } => {
                let superseded = may(
                    &|o| matches!(&o.action, Action::RegisterReplace { old, .. } if old == value),
                );
                if !superseded && !deleted && !Want::Register(value.clone()).in_values(values) {
                    v.lost.push(format!("register {key} = {}", text(value)));
                }
                if let Action::RegisterReplace { old, .. } = &op.action {
                    v.context_writes += 1;
                    let want = Want::Register(old.clone());
                    if want.in_values(values) {
                        if twice(&want) {
                            v.unverifiable += 1;
                        } else {
                            v.violations.push(format!(
                                "register {key}: {} is still there after a context write superseded it",
                                text(old)
                            ));
                        }
                    }
                }
            }
            Action::LwwSet { shared: true, .. } | Action::CounterAdd => {}
            Action::LwwSet { value, .. } => {
                if !deleted && !Want::Lww(value.clone()).in_values(values) {
                    v.lost.push(format!("lww {key} = {}", text(value)));
                }
            }
            Action::SetAdd { elem } => {
                let removed =
                    may(&|o| matches!(&o.action, Action::SetRemove { elem: e, .. } if e == elem));
                if !removed && !deleted && !Want::Elem(elem.clone()).in_values(values) {
                    v.lost.push(format!("set {key} element {}", text(elem)));
                }
            }
            Action::MapSet { field, value } => {
                if !deleted && !map_field_is(values, field, value) {
                    v.lost
                        .push(format!("map {key} field {} = {}", text(field), text(value)));
                }
            }
            Action::SetRemove { elem, read_region } => {
                v.context_writes += 1;
                if read_region.as_deref() != op.region.as_deref() {
                    v.cross_region += 1;
                }
                let want = Want::Elem(elem.clone());
                if want.in_values(values) {
                    if twice(&want) {
                        v.unverifiable += 1;
                    } else {
                        v.violations.push(format!(
                            "set {key}: removed element {} is back (removal acknowledged by {})",
                            text(elem),
                            op.region.as_deref().unwrap_or("?")
                        ));
                    }
                }
            }
            Action::Delete { read_region } => {
                v.context_writes += 1;
                if read_region.as_deref() != op.region.as_deref() {
                    v.cross_region += 1;
                }
                if !is_absent(read) {
                    let retried = same_key
                        .iter()
                        .any(|o| o.retried && matches!(o.action, Action::LwwSet { .. }));
                    if retried {
                        v.unverifiable += 1;
                    } else {
                        v.violations.push(format!(
                            "deleted key {key} is back (delete acknowledged by {})",
                            op.region.as_deref().unwrap_or("?")
                        ));
                    }
                }
            }
        }
    }
}

/// Rules 3 and 4: every value present comes from a write that may have applied; a failed
/// write's value is absent.
fn check_provenance(state: &State, by_key: &BTreeMap<&[u8], Vec<&OpRecord>>, v: &mut Verdict) {
    for (key, read) in state {
        if read.values.is_empty() {
            continue;
        }
        let name = text(key);
        let Some(ops) = by_key.get(key.as_slice()) else {
            v.violations.push(format!(
                "key {name} holds {:?}, written by nothing",
                read.values
            ));
            continue;
        };
        let mut found = Vec::new();
        // Why it is there: a write that may have applied; else a failed one; else nothing.
        let mut unexplained = |what: String, wrote: &dyn Fn(&Action) -> bool| {
            if ops.iter().any(|o| !o.failed() && wrote(&o.action)) {
                return;
            }
            let why = if ops.iter().any(|o| wrote(&o.action)) {
                "written only by a failed write (nothing written)"
            } else {
                "written by nothing"
            };
            found.push(format!("{name}: {what} is present, {why}"));
        };
        let mut extra = Vec::new();
        for value in &read.values {
            match value {
                ReadValue::Register(s) => {
                    let mut counts: BTreeMap<&[u8], usize> = BTreeMap::new();
                    for sibling in &s.values {
                        *counts.entry(sibling).or_default() += 1;
                    }
                    for (sibling, n) in counts {
                        let want = Want::Register(sibling.to_vec());
                        unexplained(format!("register sibling {}", text(sibling)), &|a| {
                            want.written_by(a)
                        });
                        let writes: usize = ops
                            .iter()
                            .filter(|o| !o.failed() && want.written_by(&o.action))
                            .map(|o| 1 + usize::from(o.retried))
                            .sum();
                        if writes > 0 && n > writes {
                            extra.push(format!(
                                "{name}: {n} siblings of {} from {writes} writes of it",
                                text(sibling)
                            ));
                        }
                    }
                }
                ReadValue::Lww(l) => {
                    let want = Want::Lww(l.value.clone());
                    unexplained(format!("value {}", text(&l.value)), &|a| want.written_by(a));
                }
                ReadValue::Counter(_) => {
                    unexplained("a counter".into(), &|a| matches!(a, Action::CounterAdd));
                }
                ReadValue::Set(elems) => {
                    for e in elems {
                        let want = Want::Elem(e.clone());
                        unexplained(format!("element {}", text(e)), &|a| want.written_by(a));
                    }
                }
                ReadValue::Map(m) => {
                    for (field, values) in &m.fields {
                        for fv in values {
                            let ReadValue::Lww(l) = fv else {
                                extra.push(format!(
                                    "{name}: field {} holds {fv:?}, written by nothing",
                                    text(field)
                                ));
                                continue;
                            };
                            unexplained(
                                format!("field {} = {}", text(field), text(&l.value)),
                                &|a| {
                                    matches!(a, Action::MapSet { field: f, value }
                                        if f == field && *value == l.value)
                                },
                            );
                        }
                    }
                }
            }
        }
        v.violations.extend(found);
        v.violations.extend(extra);
    }
}

/// Counters between the acknowledged increments and those that may have applied (failed
/// ones in neither).
fn check_counters(state: &State, by_key: &BTreeMap<&[u8], Vec<&OpRecord>>, v: &mut Verdict) {
    for (key, ops) in by_key {
        let adds: Vec<&&OpRecord> = ops
            .iter()
            .filter(|o| o.action == Action::CounterAdd)
            .collect();
        if adds.is_empty() {
            continue;
        }
        let acked = adds.iter().filter(|o| o.acked()).count() as i64;
        let maybe = adds.iter().filter(|o| !o.failed()).count() as i64;
        let value = state
            .get(*key)
            .and_then(|r| {
                r.values.iter().find_map(|v| match v {
                    ReadValue::Counter(c) => Some(*c),
                    _ => None,
                })
            })
            .unwrap_or(0);
        let key = text(key);
        if value < acked {
            v.lost.push(format!(
                "counter {key} is {value}, below the {acked} acknowledged increments"
            ));
        }
        if value > maybe {
            v.violations.push(format!(
                "counter {key} is {value}, above the {maybe} increments that may have applied"
            ));
        }
    }
}

/// A marker the converged state shows for a write a region acknowledged.
#[derive(Clone, Debug)]
struct Sample {
    key: Vec<u8>,
    invoked: Duration,
    completed: Duration,
    marker: Hlc,
    writer: OriginId,
}

/// Rule 5: last-writer-wins order.
fn check_lww_order(ops: &[OpRecord], state: &State, faults: &Faults, v: &mut Verdict) {
    // The markers the converged state shows of writes to keys written once, by the region that
    // acknowledged the write.
    let mut samples: BTreeMap<&str, Vec<Sample>> = BTreeMap::new();
    for op in ops.iter().filter(|o| o.acked() && !o.retried) {
        let Some(region) = op.region.as_deref() else {
            continue;
        };
        let values = state.get(&op.key).map_or(&[][..], |r| r.values.as_slice());
        let shown = match &op.action {
            Action::LwwSet {
                value,
                shared: false,
            } => values.iter().find_map(|v| match v {
                ReadValue::Lww(l) if l.value == *value => Some((l.marker, l.writer)),
                _ => None,
            }),
            Action::MapSet { field, value } => values.iter().find_map(|v| match v {
                ReadValue::Map(m) => m.fields.get(field).and_then(|vals| {
                    vals.iter().find_map(|f| match f {
                        ReadValue::Lww(l) if l.value == *value => Some((l.marker, l.writer)),
                        _ => None,
                    })
                }),
                _ => None,
            }),
            _ => None,
        };
        if let Some((marker, writer)) = shown {
            samples.entry(region).or_default().push(Sample {
                key: op.key.clone(),
                invoked: op.invoked,
                completed: op.completed,
                marker,
                writer,
            });
        }
    }
    for list in samples.values_mut() {
        list.sort_by_key(|s| s.completed);
    }
    // The largest marker `region` showed for a write acknowledged before `t`, since its last
    // restart.
    let floor = |region: &str, t: Duration| -> Option<&Sample> {
        samples
            .get(region)?
            .iter()
            .take_while(|s| s.completed < t)
            .filter(|s| !faults.restarted_between(region, s.completed, t))
            .max_by_key(|s| s.marker)
    };
    // (a) A region's markers increase with the writes it acknowledges.
    for (region, list) in &samples {
        for s in list {
            if let Some(before) = floor(region, s.invoked) {
                v.markers_compared += 1;
                if before.marker >= s.marker {
                    v.violations.push(format!(
                        "{region}'s clock went back: {} has marker {:?}, {} acknowledged there before it {:?}",
                        text(&s.key),
                        s.marker,
                        text(&before.key),
                        before.marker
                    ));
                }
            }
        }
    }
    let shared: Vec<&OpRecord> = ops
        .iter()
        .filter(|o| matches!(o.action, Action::LwwSet { shared: true, .. }) && !o.failed())
        .collect();
    let winner = state.get(b"shared".as_slice()).and_then(|r| {
        r.values.iter().find_map(|v| match v {
            ReadValue::Lww(l) => Some(l.clone()),
            _ => None,
        })
    });
    let Some(winner) = winner else {
        if shared.iter().any(|o| o.acked()) {
            v.lost
                .push("the shared key holds nothing after acknowledged writes".into());
        }
        return;
    };
    let wrote_winner = |o: &&&OpRecord| matches!(&o.action, Action::LwwSet { value, .. } if *value == winner.value);
    let winning: Vec<&&OpRecord> = shared.iter().filter(wrote_winner).collect();
    // (b) and (d): the winning write, where it was acknowledged once.
    if let [w] = winning.as_slice() {
        if let (true, false, Some(region)) = (w.acked(), w.retried, w.region.as_deref()) {
            if let Some(later) = shared.iter().find(|o| {
                o.acked()
                    && o.region.as_deref() == Some(region)
                    && o.invoked > w.completed
                    && !faults.lost_disk_between(region, w.completed, o.invoked)
            }) {
                v.violations.push(format!(
                    "the shared key holds {}, superseded at {region} by {} acknowledged there after it",
                    text(&winner.value),
                    later_value(later)
                ));
            }
            let writers: BTreeSet<OriginId> = samples
                .get(region)
                .map(|l| l.iter().map(|s| s.writer).collect())
                .unwrap_or_default();
            if !writers.is_empty() && !writers.contains(&winner.writer) {
                v.violations.push(format!(
                    "the shared key's winner {} was acknowledged by {region} but names writer {:?} (that region's: {writers:?})",
                    text(&winner.value),
                    winner.writer
                ));
            }
        }
    }
    // (c) Every other write ranks below the winner.
    for o in shared.iter().filter(|o| o.acked() && !wrote_winner(o)) {
        let Some(region) = o.region.as_deref() else {
            continue;
        };
        if let Some(before) = floor(region, o.invoked) {
            v.markers_compared += 1;
            if before.marker >= winner.marker {
                v.violations.push(format!(
                    "the shared key holds {} (marker {:?}), but {} was written at {region} after {} (marker {:?}) and outranks it",
                    text(&winner.value),
                    winner.marker,
                    later_value(o),
                    text(&before.key),
                    before.marker
                ));
            }
        }
    }
}

fn later_value(op: &OpRecord) -> String {
    match &op.action {
        Action::LwwSet { value, .. } => text(value),
        other => format!("{other:?}"),
    }
}

/// Rule 6: no write acknowledged by fewer regions than it asked for; the minority attempted.
fn check_levels(ops: &[OpRecord], faults: &Faults, v: &mut Verdict) {
    let throughout = |op: &OpRecord, w: &Window| {
        w.kind.excludes_writes() && w.from <= op.invoked && op.completed <= w.to
    };
    for op in ops {
        let size = faults.size_at(op.invoked);
        if size != faults.size_at(op.completed) {
            continue;
        }
        let needed = op.consistency.regions_needed(size);
        if needed < 2 {
            continue;
        }
        let impaired: BTreeSet<&str> = faults
            .windows
            .iter()
            .filter(|w| throughout(op, w))
            .map(|w| w.region.as_str())
            .collect();
        if !op.acked() {
            continue;
        }
        let Some(region) = op.region.as_deref() else {
            continue;
        };
        let key = text(&op.key);
        let available = if impaired.contains(region) {
            1
        } else {
            size.saturating_sub(impaired.len())
        };
        if available < needed {
            v.violations.push(format!(
                "{:?} write {key} acknowledged by {region} while only {available} regions could hold it ({} down, frozen or cut off throughout)",
                op.consistency,
                impaired.iter().copied().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    for w in faults
        .windows
        .iter()
        .filter(|w| w.kind == Impairment::CutOff)
    {
        let tried = ops
            .iter()
            .filter(|o| {
                o.asked.as_deref() == Some(&w.region)
                    && o.consistency.regions_needed(faults.size_at(o.invoked)) >= 2
                    && throughout(o, w)
            })
            .count();
        v.minority_attempts += tried;
        if tried == 0 {
            v.violations.push(format!(
                "no write asking for a majority was attempted at {} while it was cut off",
                w.region
            ));
        }
    }
}

/// Rule 7: reads, and context-dependent writes refused `NotYetVisible`.
fn check_reads(ops: &[OpRecord], reads: &[ReadCheck], faults: &Faults, v: &mut Verdict) {
    let overlaps = |a: Duration, b: Duration, w: &Window| a <= w.back + HEAL_GRACE && b >= w.began;
    // Whether `client` wrote something before `t` that `w`'s region may have held alone
    // during `w`: acknowledged (or possibly applied) there no earlier than `SHIP_WINDOW`
    // before `w` began, or somewhere not known.
    let held_by = |client: &str, t: Duration, w: &Window| {
        ops.iter().any(|o| {
            let known = o
                .region
                .as_deref()
                .filter(|r| !o.retried && faults.regions.iter().any(|n| n == r));
            o.client == client
                && o.invoked < t
                && !o.failed()
                && o.completed + SHIP_WINDOW >= w.began
                && known.is_none_or(|r| r == w.region)
        })
    };
    // Whether a region that may hold some of `client`'s writes alone was impaired around
    // `[a, b]`.
    let excused = |client: &str, a: Duration, b: Duration| {
        faults
            .windows
            .iter()
            .any(|w| overlaps(a, b, w) && held_by(client, a, w))
    };
    let lost_disk_before = |t: Duration| faults.disk_loss.as_ref().is_some_and(|d| d.at < t);
    // Whether every live region was down (stopped or frozen) at some instant of `[a, b]`.
    let all_down = |a: Duration, b: Duration| {
        let mut instants: Vec<Duration> = faults
            .windows
            .iter()
            .map(|w| w.from)
            .filter(|t| *t >= a && *t <= b)
            .collect();
        instants.push(a);
        instants.iter().any(|t| {
            let size = faults.size_at(*t);
            let down: BTreeSet<&str> = faults
                .windows
                .iter()
                .filter(|w| {
                    matches!(w.kind, Impairment::Stopped | Impairment::Frozen)
                        && w.from <= *t
                        && *t <= w.back
                })
                .map(|w| w.region.as_str())
                .collect();
            down.len() >= size
        })
    };
    for op in ops.iter().filter(|o| o.not_yet_visible) {
        if !excused(&op.client, op.invoked, op.completed) {
            v.violations.push(format!(
                "{} {:?} of {} refused NotYetVisible while every region holding the session's writes was up",
                op.client,
                op.action,
                text(&op.key)
            ));
        }
    }
    for read in reads {
        v.reads += 1;
        if read.kind != ReadKind::Session {
            v.strong_reads += 1;
        }
        let key = text(&read.key);
        let what = |w: &Want| match w {
            Want::Register(x) | Want::Lww(x) | Want::Elem(x) => text(x),
        };
        let mut unanswered = || {
            v.reads_unanswered += 1;
            let faulty = match read.kind {
                ReadKind::Session => all_down(read.invoked, read.completed),
                ReadKind::Majority | ReadKind::All => faults
                    .windows
                    .iter()
                    .any(|w| overlaps(read.invoked, read.completed, w)),
            };
            if faulty {
                v.reads_unanswered_excused += 1;
            }
        };
        match (&read.answer, read.kind) {
            (ReadAnswer::Saw, _) => {}
            (ReadAnswer::Unanswered(_), _)
            | (ReadAnswer::NotYetVisible | ReadAnswer::Uncoverable, ReadKind::Majority)
            | (ReadAnswer::NotYetVisible | ReadAnswer::Uncoverable, ReadKind::All) => unanswered(),
            (ReadAnswer::NotYetVisible, ReadKind::Session) => {
                if excused(&read.client, read.invoked, read.completed) {
                    v.reads_excused += 1;
                } else {
                    v.violations.push(format!(
                        "{} read {key} answered NotYetVisible while every region holding the session's writes was up",
                        read.client
                    ));
                }
            }
            (ReadAnswer::Uncoverable, ReadKind::Session) => {
                if lost_disk_before(read.completed) {
                    v.reads_excused += 1;
                } else {
                    v.violations.push(format!(
                        "{} read {key} answered Uncoverable though no disk was lost",
                        read.client
                    ));
                }
            }
            (ReadAnswer::Missed, ReadKind::Session) => {
                let write = ops.iter().rfind(|o| {
                    o.client == read.client
                        && o.key == read.key
                        && o.invoked < read.invoked
                        && read.want.written_by(&o.action)
                });
                match write {
                    Some(w) if !w.acked() => v.reads_excused += 1,
                    _ => v.violations.push(format!(
                        "{} did not read its own write {} to {key} in {}",
                        read.client,
                        what(&read.want),
                        read.region.as_deref().unwrap_or("?")
                    )),
                }
            }
            (ReadAnswer::Missed, kind) => {
                let write = ops.iter().find(|o| {
                    o.client != read.client && o.key == read.key && read.want.written_by(&o.action)
                });
                let Some(w) = write else {
                    v.violations.push(format!(
                        "{} read {key} looking for {}, which nothing wrote",
                        read.client,
                        what(&read.want)
                    ));
                    continue;
                };
                // A region that held it lost its disk since: a majority may no longer hold it.
                if faults
                    .disk_loss
                    .as_ref()
                    .is_some_and(|d| d.at > w.completed && d.at < read.invoked)
                {
                    v.reads_excused += 1;
                    continue;
                }
                if w.acked() && w.completed < read.invoked {
                    v.violations.push(format!(
                        "a {} read of {key} in {} missed {} acknowledged at {:?} {} ms before it began",
                        if kind == ReadKind::Majority { "majority" } else { "plain" },
                        read.region.as_deref().unwrap_or("?"),
                        what(&read.want),
                        w.consistency,
                        (read.invoked - w.completed).as_millis()
                    ));
                }
            }
        }
    }
}

/// What cannot be verified, against its bound.
fn check_bounds(v: &mut Verdict) {
    let mut over = |what: &str, n: usize, total: usize, bound: Bound| {
        if n > bound.allowed(total) {
            v.over_bound.push(format!(
                "{n} {what} of {total}: more than the {} allowed ({}% at least {})",
                bound.allowed(total),
                bound.share * 100.0,
                bound.at_least
            ));
        }
    };
    over(
        "removals, deletes and context writes unverifiable",
        v.unverifiable,
        v.context_writes,
        UNVERIFIABLE_BOUND,
    );
    over(
        "writes at risk",
        v.at_risk,
        v.acked + v.at_risk,
        AT_RISK_BOUND,
    );
    over(
        "reads unanswered while some region was up",
        v.reads_unanswered - v.reads_unanswered_excused,
        v.reads,
        UNANSWERED_BOUND,
    );
}

/// A deleted key: absent, or holding nothing.
fn is_absent(read: Option<&Read>) -> bool {
    read.is_none_or(|r| r.values.is_empty())
}

/// Whether map field `field` holds last-writer-wins value `value`.
fn map_field_is(values: &[ReadValue], field: &[u8], value: &[u8]) -> bool {
    values.iter().any(|v| match v {
        ReadValue::Map(m) => m.fields.get(field).is_some_and(|vals| {
            vals.iter()
                .any(|f| matches!(f, ReadValue::Lww(l) if l.value == value))
        }),
        _ => false,
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outage::history::{Action, OpRecord, Outcome, ReadAnswer, ReadCheck, ReadKind};
    use meridian::{CausalToken, Hlc, LwwValue, MapView, OriginId, Siblings};
    use meridian_runtime::client_proto::Consistency;

    const REGIONS: [&str; 3] = ["us-east", "eu-west", "ap-northeast"];

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// An operation of client `c` acknowledged by `region`, from 1 s to 2 s.
    fn op(key: &str, action: Action, outcome: Outcome, region: &str) -> OpRecord {
        let mut o = OpRecord::new("c", key.as_bytes(), action, Consistency::Local);
        o.invoked = secs(1.0);
        o.completed = secs(2.0);
        o.outcome = outcome;
        o.region = Some(region.into());
        o.bytes = 10;
        o
    }

    /// `o` from `a` to `b` seconds.
    fn at(mut o: OpRecord, a: f64, b: f64) -> OpRecord {
        o.invoked = secs(a);
        o.completed = secs(b);
        o
    }

    fn fail() -> Outcome {
        Outcome::Fail("refused".into())
    }

    fn unknown() -> Outcome {
        Outcome::Unknown("?".into())
    }

    fn holding(values: Vec<ReadValue>) -> Read {
        Read {
            values,
            token: CausalToken::default(),
        }
    }

    fn lww_at(v: &str, marker: u64, writer: u64) -> ReadValue {
        ReadValue::Lww(LwwValue {
            value: v.as_bytes().to_vec(),
            marker: Hlc(marker),
            writer: OriginId(writer),
        })
    }

    fn lww(v: &str) -> ReadValue {
        lww_at(v, 1, 1)
    }

    fn reg(values: &[&str]) -> ReadValue {
        ReadValue::Register(Siblings {
            values: values.iter().map(|v| v.as_bytes().to_vec()).collect(),
            dots: Vec::new(),
            context: Default::default(),
        })
    }

    fn set(elems: &[&str]) -> ReadValue {
        ReadValue::Set(elems.iter().map(|v| v.as_bytes().to_vec()).collect())
    }

    fn map(fields: &[(&str, &str)]) -> ReadValue {
        let mut m = MapView::default();
        for (f, v) in fields {
            m.fields.insert(f.as_bytes().to_vec(), vec![lww(v)]);
        }
        ReadValue::Map(m)
    }

    fn state(entries: Vec<(&str, Vec<ReadValue>)>) -> State {
        entries
            .into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), holding(v)))
            .collect()
    }

    fn set_lww(v: &str) -> Action {
        Action::LwwSet {
            value: v.as_bytes().to_vec(),
            shared: false,
        }
    }

    fn shared(v: &str) -> Action {
        Action::LwwSet {
            value: v.as_bytes().to_vec(),
            shared: true,
        }
    }

    fn put(v: &str) -> Action {
        Action::RegisterPut {
            value: v.as_bytes().to_vec(),
        }
    }

    fn add(e: &str) -> Action {
        Action::SetAdd {
            elem: e.as_bytes().to_vec(),
        }
    }

    fn remove(e: &str, read_region: &str) -> Action {
        Action::SetRemove {
            elem: e.as_bytes().to_vec(),
            read_region: Some(read_region.into()),
        }
    }

    fn no_faults() -> Faults {
        Faults::none(&REGIONS)
    }

    fn run(ops: &[OpRecord], reads: &[ReadCheck], s: &State) -> Verdict {
        check(ops, reads, s, &no_faults())
    }

    fn window(region: &str, kind: Impairment, from: f64, to: f64) -> Window {
        Window {
            region: region.into(),
            kind,
            began: secs(from),
            from: secs(from),
            to: secs(to),
            back: secs(to),
        }
    }

    fn faults(windows: Vec<Window>) -> Faults {
        Faults {
            windows,
            ..no_faults()
        }
    }

    fn read(client: &str, key: &str, want: Want, kind: ReadKind, answer: ReadAnswer) -> ReadCheck {
        ReadCheck {
            client: client.into(),
            key: key.as_bytes().to_vec(),
            want,
            kind,
            invoked: secs(3.0),
            completed: secs(3.5),
            answer,
            region: Some("us-east".into()),
        }
    }

    #[test]
    fn an_acknowledged_write_missing_is_lost_and_an_unknown_one_is_not() {
        let ops = vec![
            op("a", set_lww("1"), Outcome::Ok, "us-east"),
            op("b", set_lww("2"), unknown(), "us-east"),
        ];
        let v = run(&ops, &[], &state(vec![("a", vec![lww("1")])]));
        assert!(v.clean(), "{v:?}");
        let v = run(&ops, &[], &State::new());
        assert_eq!(v.lost.len(), 1, "{v:?}");
        assert_eq!((v.acked, v.unknown), (1, 1));
    }

    #[test]
    fn counters_count_failed_increments_in_neither_bound() {
        let ops = vec![
            op("n", Action::CounterAdd, Outcome::Ok, "us-east"),
            op("n", Action::CounterAdd, unknown(), "us-east"),
            op("n", Action::CounterAdd, fail(), "us-east"),
            op("n", Action::CounterAdd, fail(), "us-east"),
        ];
        for (value, clean) in [(0, false), (1, true), (2, true), (3, false), (4, false)] {
            let s = state(vec![("n", vec![ReadValue::Counter(value)])]);
            assert_eq!(run(&ops, &[], &s).clean(), clean, "counter {value}");
        }
    }

    #[test]
    fn a_removal_or_delete_served_by_another_region_than_its_read_is_checked() {
        let ops = vec![
            op("s", add("e1"), Outcome::Ok, "eu-west"),
            at(
                op("s", remove("e1", "eu-west"), Outcome::Ok, "us-east"),
                3.0,
                4.0,
            ),
        ];
        let back = state(vec![("s", vec![set(&["e1"])])]);
        let v = run(&ops, &[], &back);
        assert_eq!(v.violations.len(), 1, "{v:?}");
        assert_eq!(
            (v.unverifiable, v.cross_region, v.context_writes),
            (0, 1, 1)
        );
        assert!(run(&ops, &[], &state(vec![("s", vec![set(&[])])])).clean());

        let ops = vec![
            op("k", set_lww("1"), Outcome::Ok, "eu-west"),
            at(
                op(
                    "k",
                    Action::Delete {
                        read_region: Some("eu-west".into()),
                    },
                    Outcome::Ok,
                    "ap-northeast",
                ),
                3.0,
                4.0,
            ),
        ];
        let v = run(&ops, &[], &state(vec![("k", vec![lww("1")])]));
        assert_eq!(v.violations.len(), 1, "{v:?}");
        assert!(run(&ops, &[], &State::new()).clean());
    }

    #[test]
    fn only_a_target_present_and_applied_twice_is_unverifiable_and_that_is_bounded() {
        let mut twice = op("s", add("e1"), Outcome::Ok, "us-east");
        twice.retried = true;
        let ops = vec![
            twice.clone(),
            at(
                op("s", remove("e1", "us-east"), Outcome::Ok, "us-east"),
                3.0,
                4.0,
            ),
        ];
        let v = run(&ops, &[], &state(vec![("s", vec![set(&["e1"])])]));
        assert!(v.clean() && v.unverifiable == 1, "{v:?}");
        let v = run(&ops, &[], &state(vec![("s", vec![set(&[])])]));
        assert!(v.clean() && v.unverifiable == 0, "{v:?}");

        // Three of three unverifiable: beyond the bound (at least 2, 5%).
        let mut ops = Vec::new();
        for e in ["e1", "e2", "e3"] {
            let mut a = op("s", add(e), Outcome::Ok, "us-east");
            a.retried = true;
            ops.push(a);
            ops.push(at(
                op("s", remove(e, "us-east"), Outcome::Ok, "us-east"),
                3.0,
                4.0,
            ));
        }
        let v = run(
            &ops,
            &[],
            &state(vec![("s", vec![set(&["e1", "e2", "e3"])])]),
        );
        assert!(v.violations.is_empty() && v.unverifiable == 3, "{v:?}");
        assert_eq!(v.over_bound.len(), 1, "{v:?}");
    }

    #[test]
    fn a_context_write_supersedes_what_its_read_saw() {
        let replace = Action::RegisterReplace {
            value: b"2".to_vec(),
            old: b"1".to_vec(),
        };
        let ops = vec![
            op("r", put("1"), Outcome::Ok, "eu-west"),
            at(op("r", replace, Outcome::Ok, "us-east"), 3.0, 4.0),
        ];
        assert!(run(&ops, &[], &state(vec![("r", vec![reg(&["2"])])])).clean());
        let v = run(&ops, &[], &state(vec![("r", vec![reg(&["1", "2"])])]));
        assert_eq!(v.violations.len(), 1, "{v:?}");
        let v = run(&ops, &[], &state(vec![("r", vec![reg(&["1"])])]));
        assert_eq!((v.lost.len(), v.violations.len()), (1, 1), "{v:?}");
    }

    #[test]
    fn a_failed_write_leaves_nothing_and_a_failed_removal_removes_nothing() {
        let cases: Vec<(Action, Vec<ReadValue>)> = vec![
            (put("x"), vec![reg(&["x"])]),
            (set_lww("x"), vec![lww("x")]),
            (add("x"), vec![set(&["x"])]),
            (
                Action::MapSet {
                    field: b"f".to_vec(),
                    value: b"x".to_vec(),
                },
                vec![map(&[("f", "x")])],
            ),
            (shared("x"), vec![lww("x")]),
        ];
        for (action, present) in cases {
            let key = if matches!(action, Action::LwwSet { shared: true, .. }) {
                "shared"
            } else {
                "k"
            };
            let ops = vec![op(key, action.clone(), fail(), "us-east")];
            let v = run(&ops, &[], &state(vec![(key, present)]));
            assert_eq!(v.violations.len(), 1, "{action:?}: {v:?}");
            assert!(v.violations[0].contains("failed"), "{v:?}");
            assert!(run(&ops, &[], &State::new()).clean(), "{action:?}");
        }
        let ops = vec![
            op("s", add("e1"), Outcome::Ok, "us-east"),
            at(
                op("s", remove("e1", "us-east"), fail(), "us-east"),
                3.0,
                4.0,
            ),
        ];
        let v = run(&ops, &[], &state(vec![("s", vec![set(&[])])]));
        assert_eq!(v.lost.len(), 1, "{v:?}");
    }

    #[test]
    fn elements_siblings_fields_and_keys_from_nowhere_are_violations() {
        let ops = vec![
            op("s", add("e1"), Outcome::Ok, "us-east"),
            op("r", put("1"), Outcome::Ok, "us-east"),
            op(
                "m",
                Action::MapSet {
                    field: b"f".to_vec(),
                    value: b"1".to_vec(),
                },
                Outcome::Ok,
                "us-east",
            ),
        ];
        let good = || {
            vec![
                ("s", vec![set(&["e1"])]),
                ("r", vec![reg(&["1"])]),
                ("m", vec![map(&[("f", "1")])]),
            ]
        };
        assert!(run(&ops, &[], &state(good())).clean());
        let bad: Vec<(&str, Vec<ReadValue>)> = vec![
            ("s", vec![set(&["e1", "ghost"])]),
            ("r", vec![reg(&["1", "ghost"])]),
            ("r", vec![reg(&["1", "1"])]),
            ("m", vec![map(&[("f", "1"), ("g", "2")])]),
            ("nobody", vec![lww("1")]),
        ];
        for (key, values) in bad {
            let mut s = state(good());
            s.insert(key.as_bytes().to_vec(), holding(values.clone()));
            let v = run(&ops, &[], &s);
            assert_eq!(v.violations.len(), 1, "{key} {values:?}: {v:?}");
        }
        // Two siblings of a value written once, retried after a lost answer: two dots.
        let mut twice = ops.clone();
        twice[1].retried = true;
        let mut s = state(good());
        s.insert(b"r".to_vec(), holding(vec![reg(&["1", "1"])]));
        assert!(run(&twice, &[], &s).clean());
    }

    /// Own-key writes at us-east showing its clock: `a` (marker 100) then `b` (marker 200).
    fn clock_samples() -> Vec<OpRecord> {
        vec![
            at(op("a", set_lww("a"), Outcome::Ok, "us-east"), 1.0, 1.1),
            at(op("b", set_lww("b"), Outcome::Ok, "us-east"), 3.0, 3.1),
        ]
    }

    fn clock_state(b_marker: u64, winner: ReadValue) -> State {
        state(vec![
            ("a", vec![lww_at("a", 100, 1)]),
            ("b", vec![lww_at("b", b_marker, 1)]),
            ("shared", vec![winner]),
        ])
    }

    #[test]
    fn a_regions_markers_increase_with_the_writes_it_acknowledges() {
        let mut ops = clock_samples();
        ops.push(at(
            op("shared", shared("w"), Outcome::Ok, "us-east"),
            4.0,
            4.1,
        ));
        assert!(run(&ops, &[], &clock_state(200, lww_at("w", 300, 1))).clean());
        let v = run(&ops, &[], &clock_state(50, lww_at("w", 300, 1)));
        assert_eq!(v.violations.len(), 1, "{v:?}");
        assert!(v.violations[0].contains("clock went back"), "{v:?}");
        // Not across a restart, which may start the clock over.
        let restarted = Faults {
            windows: vec![window("us-east", Impairment::Stopped, 2.0, 2.5)],
            ..no_faults()
        };
        let v = check(&ops, &[], &clock_state(50, lww_at("w", 300, 1)), &restarted);
        assert!(v.clean(), "{v:?}");
    }

    #[test]
    fn the_shared_keys_winner_is_the_highest_ranked_write() {
        // `old` at eu-west, `new` at us-east after `b` (marker 200) there.
        let mut ops = clock_samples();
        ops.push(at(
            op("shared", shared("old"), Outcome::Ok, "eu-west"),
            0.5,
            0.6,
        ));
        ops.push(at(
            op("shared", shared("new"), Outcome::Ok, "us-east"),
            4.0,
            4.1,
        ));
        // `new`'s marker is above 200; `old` (eu-west's clock ahead) at 250 may win, at 150
        // it may not.
        assert!(run(&ops, &[], &clock_state(200, lww_at("old", 250, 2))).clean());
        let v = run(&ops, &[], &clock_state(200, lww_at("old", 150, 2)));
        assert_eq!(v.violations.len(), 1, "{v:?}");
        assert!(v.violations[0].contains("outranks"), "{v:?}");

        // Superseded where it was acknowledged: `first` then `second` at us-east.
        let ops = vec![
            at(
                op("shared", shared("first"), Outcome::Ok, "us-east"),
                1.0,
                1.1,
            ),
            at(
                op("shared", shared("second"), Outcome::Ok, "us-east"),
                2.0,
                2.1,
            ),
        ];
        let s = |v: &str| state(vec![("shared", vec![lww_at(v, 500, 1)])]);
        assert!(run(&ops, &[], &s("second")).clean());
        let v = run(&ops, &[], &s("first"));
        assert_eq!(v.violations.len(), 1, "{v:?}");
        assert!(v.violations[0].contains("superseded"), "{v:?}");
        // ... unless that region's disk went in between.
        let lost = Faults {
            disk_loss: Some(DiskLoss {
                region: "us-east".into(),
                at: secs(1.5),
                window: Duration::from_millis(200),
            }),
            ..no_faults()
        };
        assert!(check(&ops, &[], &s("first"), &lost).clean());

        // The winner names a writer of another region than the one that acknowledged it.
        let mut ops = clock_samples();
        ops.push(at(
            op("shared", shared("w"), Outcome::Ok, "us-east"),
            4.0,
            4.1,
        ));
        let v = run(&ops, &[], &clock_state(200, lww_at("w", 300, 7)));
        assert_eq!(v.violations.len(), 1, "{v:?}");
        assert!(v.violations[0].contains("writer"), "{v:?}");
    }

    #[test]
    fn no_write_is_acknowledged_by_fewer_regions_than_it_asked_for() {
        let strong = |consistency, region: &str| {
            let mut o = at(op("k", set_lww("1"), Outcome::Ok, region), 2.0, 3.0);
            o.consistency = consistency;
            o
        };
        let s = state(vec![("k", vec![lww("1")])]);
        let down = faults(vec![window("eu-west", Impairment::Stopped, 1.0, 5.0)]);
        let v = check(&[strong(Consistency::All, "us-east")], &[], &s, &down);
        assert_eq!(v.violations.len(), 1, "{v:?}");
        assert!(check(&[strong(Consistency::Majority, "us-east")], &[], &s, &down).clean());
        // Lossy links rule nothing out: the write may have made it everywhere.
        let lossy = faults(
            REGIONS
                .iter()
                .map(|r| window(r, Impairment::Lossy, 1.0, 5.0))
                .collect(),
        );
        assert!(check(&[strong(Consistency::All, "us-east")], &[], &s, &lossy).clean());

        let mut probe = at(op("p", set_lww("p"), fail(), "eu-west"), 2.0, 2.1);
        probe.consistency = Consistency::Majority;
        probe.asked = Some("eu-west".into());
        probe.region = None;
        let cut = faults(vec![window("eu-west", Impairment::CutOff, 1.0, 5.0)]);
        let v = check(
            &[strong(Consistency::Majority, "eu-west"), probe.clone()],
            &[],
            &s,
            &cut,
        );
        assert_eq!(v.violations.len(), 1, "{v:?}");
        let v = check(
            &[strong(Consistency::Majority, "us-east"), probe.clone()],
            &[],
            &s,
            &cut,
        );
        assert!(v.clean() && v.minority_attempts == 1, "{v:?}");
        // No attempt at the cut-off region: the check would pass vacuously.
        let v = check(&[strong(Consistency::Majority, "us-east")], &[], &s, &cut);
        assert_eq!(v.violations.len(), 1, "{v:?}");
        assert!(v.violations[0].contains("attempted"), "{v:?}");
        // An attempt acknowledged there is a violation.
        probe.outcome = Outcome::Ok;
        probe.region = Some("eu-west".into());
        let v = check(&[probe], &[], &state(vec![("p", vec![lww("p")])]), &cut);
        assert_eq!(v.violations.len(), 1, "{v:?}");
    }

    #[test]
    fn a_session_read_not_yet_visible_is_a_violation_unless_a_region_holding_its_writes_was_impaired(
    ) {
        // The session wrote at us-east only; eu-west was down.
        let ops = vec![op("k", set_lww("1"), Outcome::Ok, "us-east")];
        let s = state(vec![("k", vec![lww("1")])]);
        let nyv = read(
            "c",
            "k",
            Want::Lww(b"1".to_vec()),
            ReadKind::Session,
            ReadAnswer::NotYetVisible,
        );
        let v = run(&ops, std::slice::from_ref(&nyv), &s);
        assert_eq!(v.violations.len(), 1, "{v:?}");
        let eu_down = faults(vec![window("eu-west", Impairment::Stopped, 2.5, 10.0)]);
        let v = check(&ops, std::slice::from_ref(&nyv), &s, &eu_down);
        assert_eq!(v.violations.len(), 1, "{v:?}");
        // us-east held the session's write and was frozen during the read: excused.
        let us_frozen = faults(vec![window("us-east", Impairment::Frozen, 2.5, 10.0)]);
        let v = check(&ops, std::slice::from_ref(&nyv), &s, &us_frozen);
        assert!(v.clean() && v.reads_excused == 1, "{v:?}");
        // ... but not when the write was long shipped when it froze.
        let late = faults(vec![window("us-east", Impairment::Frozen, 3.2, 10.0)]);
        let old = vec![at(op("k", set_lww("1"), Outcome::Ok, "us-east"), 0.1, 0.2)];
        let v = check(&old, std::slice::from_ref(&nyv), &s, &late);
        assert_eq!(v.violations.len(), 1, "{v:?}");

        // Lossy links may cut a region off: they excuse it too.
        let lossy = faults(vec![window("us-east", Impairment::Lossy, 2.5, 10.0)]);
        let v = check(&ops, std::slice::from_ref(&nyv), &s, &lossy);
        assert!(v.clean() && v.reads_excused == 1, "{v:?}");

        // A removal refused NotYetVisible is held to the same rule.
        let mut refused = at(op("s", remove("e", "us-east"), fail(), "us-east"), 3.0, 3.5);
        refused.not_yet_visible = true;
        refused.region = None;
        let ops = vec![op("s", add("e"), Outcome::Ok, "us-east"), refused];
        let s = state(vec![("s", vec![set(&["e"])])]);
        assert_eq!(run(&ops, &[], &s).violations.len(), 1);
        assert!(check(&ops, &[], &s, &us_frozen).clean());
    }

    #[test]
    fn reads_must_show_what_their_level_promises() {
        let s = state(vec![("k", vec![lww("1")])]);
        let missed = |kind| read("r", "k", Want::Lww(b"1".to_vec()), kind, ReadAnswer::Missed);
        // One's own write.
        let own = vec![op("k", set_lww("1"), Outcome::Ok, "us-east")];
        let mut miss = missed(ReadKind::Session);
        miss.client = "c".into();
        assert_eq!(
            run(&own, std::slice::from_ref(&miss), &s).violations.len(),
            1
        );
        // A write at risk (its region's disk went) may be missed.
        let wiped = Faults {
            disk_loss: Some(DiskLoss {
                region: "us-east".into(),
                at: secs(2.1),
                window: Duration::from_millis(200),
            }),
            ..no_faults()
        };
        let v = check(&own, &[miss], &s, &wiped);
        assert!(v.clean() && v.at_risk == 1 && v.reads_excused == 1, "{v:?}");

        // Another session's majority (or all) write, acknowledged before the read began.
        for (consistency, kind) in [
            (Consistency::Majority, ReadKind::Majority),
            (Consistency::Regions(2), ReadKind::Majority),
            (Consistency::All, ReadKind::All),
        ] {
            let mut w = op("k", set_lww("1"), Outcome::Ok, "us-east");
            w.consistency = consistency;
            let v = run(std::slice::from_ref(&w), &[missed(kind)], &s);
            assert_eq!(v.violations.len(), 1, "{consistency:?}: {v:?}");
            let saw = read("r", "k", Want::Lww(b"1".to_vec()), kind, ReadAnswer::Saw);
            let v = run(std::slice::from_ref(&w), &[saw], &s);
            assert!(v.clean() && v.strong_reads == 1, "{v:?}");
            // Acknowledged only after the read began: it may miss it.
            let w = at(w, 3.2, 3.4);
            assert!(run(&[w], &[missed(kind)], &s).clean());
        }
    }

    #[test]
    fn unanswered_reads_are_bounded_outside_a_whole_cluster_outage() {
        let ops = vec![op("k", set_lww("1"), Outcome::Ok, "us-east")];
        let s = state(vec![("k", vec![lww("1")])]);
        let none = || {
            read(
                "c",
                "k",
                Want::Lww(b"1".to_vec()),
                ReadKind::Session,
                ReadAnswer::Unanswered("no region".into()),
            )
        };
        let reads = vec![none(), none(), none()];
        let v = run(&ops, &reads, &s);
        assert!(v.violations.is_empty() && v.reads_unanswered == 3, "{v:?}");
        assert_eq!(v.over_bound.len(), 1, "{v:?}");
        let all_down = faults(
            REGIONS
                .iter()
                .map(|r| window(r, Impairment::Stopped, 2.0, 5.0))
                .collect(),
        );
        let v = check(&ops, &reads, &s, &all_down);
        assert!(v.clean() && v.reads_unanswered_excused == 3, "{v:?}");
    }

    #[test]
    fn uncoverable_is_excused_only_after_a_disk_loss() {
        let ops = vec![op("k", set_lww("1"), Outcome::Ok, "eu-west")];
        let s = state(vec![("k", vec![lww("1")])]);
        let r = read(
            "c",
            "k",
            Want::Lww(b"1".to_vec()),
            ReadKind::Session,
            ReadAnswer::Uncoverable,
        );
        let v = run(&ops, std::slice::from_ref(&r), &s);
        assert_eq!(v.violations.len(), 1, "{v:?}");
        let wiped = Faults {
            disk_loss: Some(DiskLoss {
                region: "eu-west".into(),
                at: secs(2.5),
                window: Duration::from_millis(200),
            }),
            ..no_faults()
        };
        let v = check(&ops, &[r], &s, &wiped);
        assert!(v.clean() && v.reads_excused == 1, "{v:?}");
    }

    #[test]
    fn strong_reads_unanswered_are_bounded_only_outside_faults() {
        let mut w = op("k", set_lww("1"), Outcome::Ok, "us-east");
        w.consistency = Consistency::Majority;
        let s = state(vec![("k", vec![lww("1")])]);
        let nyv = || {
            read(
                "r",
                "k",
                Want::Lww(b"1".to_vec()),
                ReadKind::Majority,
                ReadAnswer::NotYetVisible,
            )
        };
        let reads = vec![nyv(), nyv(), nyv()];
        let v = run(std::slice::from_ref(&w), &reads, &s);
        assert!(v.violations.is_empty() && v.reads_unanswered == 3, "{v:?}");
        assert_eq!(v.over_bound.len(), 1, "{v:?}");
        // A region down around them: a level leaning to consistency may not answer.
        let down = faults(vec![window("eu-west", Impairment::Stopped, 2.0, 5.0)]);
        let v = check(&[w], &reads, &s, &down);
        assert!(v.clean() && v.reads_unanswered_excused == 3, "{v:?}");
    }

    #[test]
    fn writes_at_risk_are_checked_as_unknown_and_bounded() {
        let put = op("k", set_lww("1"), Outcome::Ok, "eu-west");
        let loss = |at_ms: u64| Faults {
            disk_loss: Some(DiskLoss {
                region: "eu-west".into(),
                at: Duration::from_millis(at_ms),
                window: Duration::from_millis(200),
            }),
            ..no_faults()
        };
        // Completed at 2 s: lost with a disk wiped at 2.1 s is forgiven, at 3 s it is not.
        let v = check(std::slice::from_ref(&put), &[], &State::new(), &loss(2_100));
        assert!(v.clean() && v.at_risk == 1, "{v:?}");
        let v = check(std::slice::from_ref(&put), &[], &State::new(), &loss(3_000));
        assert_eq!(v.lost.len(), 1, "{v:?}");
        let many: Vec<OpRecord> = (0..6)
            .map(|i| op(&format!("k{i}"), set_lww("1"), Outcome::Ok, "eu-west"))
            .collect();
        let v = check(&many, &[], &State::new(), &loss(2_100));
        assert!(v.lost.is_empty() && v.at_risk == 6, "{v:?}");
        assert_eq!(v.over_bound.len(), 1, "{v:?}");
    }
}
