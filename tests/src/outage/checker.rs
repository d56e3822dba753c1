//! The history checked against the converged state: no acknowledged write lost (by each
//! type's semantics), counters within what was acknowledged and what may have been applied,
//! nothing removed or deleted back, every read of one's own write seeing it, and no `majority`
//! write acknowledged by a region cut off from the majority.

use super::history::{Action, OpRecord, Outcome, RywCheck};
use super::workload::Seen;
use meridian::{Read, ReadValue};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The converged state: every key with what it holds.
pub type State = BTreeMap<Vec<u8>, Read>;

/// A region cut off from the others between two instants of the run.
#[derive(Clone, Debug)]
pub struct Minority {
    /// The region's name.
    pub region: String,
    /// When the cut began.
    pub from: Duration,
    /// When it healed.
    pub to: Duration,
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
    /// Reads of one's own writes: made, and unanswered.
    pub reads: usize,
    /// Reads no region answered.
    pub reads_unanswered: usize,
    /// Removals and deletes served by another region than the read before them, or of
    /// something written twice after a lost answer (what they covered is not known, so they
    /// are not checked).
    pub unverifiable: usize,
    /// `local` writes acknowledged by a region just before it lost its disk (checked as
    /// writes that may or may not have applied).
    pub at_risk: usize,
}

impl Verdict {
    /// Nothing lost and nothing violated.
    pub fn clean(&self) -> bool {
        self.lost.is_empty() && self.violations.is_empty()
    }
}

/// Checks `ops` and `reads` against `state`; `minority`, if any, must have acknowledged no
/// majority write while cut off; `lost_disk`'s last acknowledgements may be missing.
pub fn check(
    ops: &[OpRecord],
    reads: &[RywCheck],
    state: &State,
    minority: Option<&Minority>,
    lost_disk: Option<&DiskLoss>,
) -> Verdict {
    let mut v = Verdict::default();
    let mut ops = ops.to_vec();
    if let Some(d) = lost_disk {
        for op in &mut ops {
            let just_before = op.completed <= d.at && op.completed + d.window >= d.at;
            if op.outcome == Outcome::Ok
                && !op.majority
                && just_before
                && op.region.as_deref() == Some(&d.region)
            {
                op.outcome = Outcome::Unknown(format!(
                    "acknowledged by {} just before its disk was wiped",
                    d.region
                ));
                v.at_risk += 1;
            }
        }
    }
    let ops = &ops[..];
    // Writes acknowledged after a lost answer: possibly applied twice, under two dots.
    let mut twice: BTreeSet<(Vec<u8>, Vec<u8>)> = BTreeSet::new();
    for op in ops.iter().filter(|o| o.retried) {
        match &op.action {
            Action::SetAdd { elem } => {
                twice.insert((op.key.clone(), elem.clone()));
            }
            Action::LwwSet { .. } | Action::RegisterPut { .. } => {
                twice.insert((op.key.clone(), Vec::new()));
            }
            _ => {}
        }
    }
    for op in ops {
        match op.outcome {
            Outcome::Ok => v.acked += 1,
            Outcome::Fail(_) => v.failed += 1,
            Outcome::Unknown(_) => v.unknown += 1,
        }
    }
    // Removals and deletes that may have happened: what they target may be gone.
    let mut maybe_removed: BTreeSet<(Vec<u8>, Vec<u8>)> = BTreeSet::new();
    let mut maybe_deleted: BTreeSet<Vec<u8>> = BTreeSet::new();
    for op in ops
        .iter()
        .filter(|o| !matches!(o.outcome, Outcome::Fail(_)))
    {
        match &op.action {
            Action::SetRemove { elem, .. } => {
                maybe_removed.insert((op.key.clone(), elem.clone()));
            }
            Action::Delete { .. } => {
                maybe_deleted.insert(op.key.clone());
            }
            _ => {}
        }
    }
    let mut counters: BTreeMap<Vec<u8>, (i64, i64)> = BTreeMap::new();
    let mut shared_values: BTreeSet<Vec<u8>> = BTreeSet::new();
    for op in ops {
        let acked = op.outcome == Outcome::Ok;
        let maybe = !matches!(op.outcome, Outcome::Fail(_));
        let read = state.get(&op.key);
        let key = String::from_utf8_lossy(&op.key);
        match &op.action {
            Action::CounterAdd => {
                let c = counters.entry(op.key.clone()).or_default();
                c.0 += i64::from(acked);
                c.1 += i64::from(maybe);
            }
            Action::LwwSet {
                value,
                shared: true,
            } => {
                if maybe {
                    shared_values.insert(value.clone());
                }
            }
            _ if !acked => {}
            Action::RegisterPut { value } => {
                if !Seen::Register(value).in_read(read) {
                    v.lost.push(format!("register {key} = {}", text(value)));
                }
            }
            Action::LwwSet { value, .. } => {
                let deleted = maybe_deleted.contains(&op.key) && is_absent(read);
                if !deleted && !Seen::Lww(value).in_read(read) {
                    v.lost.push(format!("lww {key} = {}", text(value)));
                }
            }
            Action::SetAdd { elem } => {
                let removed = maybe_removed.contains(&(op.key.clone(), elem.clone()));
                if !removed && !Seen::Elem(elem).in_read(read) {
                    v.lost.push(format!("set {key} element {}", text(elem)));
                }
            }
            Action::MapSet { field, value } => {
                if !map_field_is(read, field, value) {
                    v.lost
                        .push(format!("map {key} field {} = {}", text(field), text(value)));
                }
            }
            Action::SetRemove { elem, read_region } => {
                if read_region.as_deref() != op.region.as_deref()
                    || twice.contains(&(op.key.clone(), elem.clone()))
                {
                    v.unverifiable += 1;
                } else if Seen::Elem(elem).in_read(read) {
                    v.violations
                        .push(format!("set {key}: removed element {} is back", text(elem)));
                }
            }
            Action::Delete { read_region } => {
                if read_region.as_deref() != op.region.as_deref()
                    || twice.contains(&(op.key.clone(), Vec::new()))
                {
                    v.unverifiable += 1;
                } else if !is_absent(read) {
                    v.violations.push(format!("deleted key {key} is back"));
                }
            }
        }
        if let Some(m) = minority {
            let cut_off = op.invoked >= m.from && op.completed <= m.to;
            if op.majority && acked && cut_off && op.region.as_deref() == Some(&m.region) {
                v.violations.push(format!(
                    "majority write {key} acknowledged by {} while it was cut off",
                    m.region
                ));
            }
        }
    }
    for (key, (acked, maybe)) in counters {
        let read = state.get(&key);
        let value = read
            .and_then(|r| {
                r.values.iter().find_map(|v| match v {
                    ReadValue::Counter(c) => Some(*c),
                    _ => None,
                })
            })
            .unwrap_or(0);
        let key = String::from_utf8_lossy(&key);
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
    if !shared_values.is_empty() {
        let winner = state.get(b"shared".as_slice()).and_then(|r| {
            r.values.iter().find_map(|v| match v {
                ReadValue::Lww(l) => Some(l.value.clone()),
                _ => None,
            })
        });
        match winner {
            Some(w) if shared_values.contains(&w) => {}
            other => v.violations.push(format!(
                "shared key holds {:?}, which no write may have written",
                other.map(|w| text(&w))
            )),
        }
    }
    for read in reads {
        v.reads += 1;
        match read.saw {
            Some(true) => {}
            Some(false) => v.violations.push(format!(
                "{} did not read its own write to {} in {}",
                read.client,
                String::from_utf8_lossy(&read.key),
                read.region.as_deref().unwrap_or("?")
            )),
            None => v.reads_unanswered += 1,
        }
    }
    v
}

/// A deleted key: absent, or holding nothing.
fn is_absent(read: Option<&Read>) -> bool {
    read.is_none_or(|r| r.values.is_empty())
}

/// Whether map field `field` holds last-writer-wins value `value`.
fn map_field_is(read: Option<&Read>, field: &[u8], value: &[u8]) -> bool {
    let Some(read) = read else { return false };
    read.values.iter().any(|v| match v {
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
    use crate::outage::history::{Action, OpRecord, Outcome, RywCheck};
    use meridian::{CausalToken, Hlc, LwwValue, ReplicaId};

    fn op(key: &str, action: Action, outcome: Outcome, region: &str) -> OpRecord {
        OpRecord {
            client: "c".into(),
            key: key.as_bytes().to_vec(),
            action,
            majority: false,
            invoked: Duration::from_secs(1),
            completed: Duration::from_secs(2),
            outcome,
            region: Some(region.into()),
            retried: false,
            bytes: 10,
        }
    }

    fn holding(values: Vec<ReadValue>) -> Read {
        Read {
            values,
            token: CausalToken::default(),
        }
    }

    fn lww(v: &str) -> ReadValue {
        ReadValue::Lww(LwwValue {
            value: v.as_bytes().to_vec(),
            marker: Hlc(1),
            writer: ReplicaId(1),
        })
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

    #[test]
    fn an_acknowledged_write_missing_is_lost_and_an_unknown_one_is_not() {
        let ops = vec![
            op("a", set_lww("1"), Outcome::Ok, "r1"),
            op("b", set_lww("2"), Outcome::Unknown("timeout".into()), "r1"),
        ];
        let v = check(&ops, &[], &state(vec![("a", vec![lww("1")])]), None, None);
        assert!(v.clean(), "{v:?}");
        let v = check(&ops, &[], &State::new(), None, None);
        assert_eq!(v.lost.len(), 1, "{v:?}");
        assert_eq!((v.acked, v.unknown), (1, 1));
    }

    #[test]
    fn counters_stay_between_acknowledged_and_possible_increments() {
        let ops = vec![
            op("n", Action::CounterAdd, Outcome::Ok, "r1"),
            op("n", Action::CounterAdd, Outcome::Unknown("?".into()), "r1"),
            op("n", Action::CounterAdd, Outcome::Fail("no".into()), "r1"),
        ];
        for (value, clean) in [(0, false), (1, true), (2, true), (3, false)] {
            let s = state(vec![("n", vec![ReadValue::Counter(value)])]);
            assert_eq!(
                check(&ops, &[], &s, None, None).clean(),
                clean,
                "counter {value}"
            );
        }
    }

    #[test]
    fn a_removed_element_or_deleted_key_back_is_a_violation_when_the_removal_saw_it() {
        let elem = b"e1".to_vec();
        let remove = |read_region: &str| {
            op(
                "s",
                Action::SetRemove {
                    elem: elem.clone(),
                    read_region: Some(read_region.into()),
                },
                Outcome::Ok,
                "r1",
            )
        };
        let add = op(
            "s",
            Action::SetAdd { elem: elem.clone() },
            Outcome::Ok,
            "r1",
        );
        let back = state(vec![("s", vec![ReadValue::Set(vec![elem.clone()])])]);
        let v = check(&[add.clone(), remove("r1")], &[], &back, None, None);
        assert_eq!(v.violations.len(), 1, "{v:?}");
        let v = check(&[add.clone(), remove("r2")], &[], &back, None, None);
        assert!(v.clean() && v.unverifiable == 1, "{v:?}");
        let gone = state(vec![("s", vec![ReadValue::Set(vec![])])]);
        assert!(check(&[add, remove("r1")], &[], &gone, None, None).clean());

        let put = op("k", set_lww("1"), Outcome::Ok, "r1");
        let delete = op(
            "k",
            Action::Delete {
                read_region: Some("r1".into()),
            },
            Outcome::Ok,
            "r1",
        );
        let still = state(vec![("k", vec![lww("1")])]);
        assert_eq!(
            check(&[put.clone(), delete.clone()], &[], &still, None, None)
                .violations
                .len(),
            1
        );
        assert!(check(&[put, delete], &[], &State::new(), None, None).clean());
    }

    #[test]
    fn a_read_missing_ones_own_write_and_a_majority_ack_while_cut_off_are_violations() {
        let read = |saw| RywCheck {
            client: "c".into(),
            key: b"k".to_vec(),
            at: Duration::from_secs(1),
            saw,
            region: Some("r1".into()),
        };
        let v = check(
            &[],
            &[read(Some(true)), read(None)],
            &State::new(),
            None,
            None,
        );
        assert!(v.clean() && v.reads_unanswered == 1, "{v:?}");
        assert_eq!(
            check(&[], &[read(Some(false))], &State::new(), None, None)
                .violations
                .len(),
            1
        );

        let mut majority = op("m", set_lww("1"), Outcome::Ok, "eu-west");
        majority.majority = true;
        let s = state(vec![("m", vec![lww("1")])]);
        let cut = Minority {
            region: "eu-west".into(),
            from: Duration::from_millis(500),
            to: Duration::from_secs(3),
        };
        let v = check(std::slice::from_ref(&majority), &[], &s, Some(&cut), None);
        assert_eq!(v.violations.len(), 1, "{v:?}");
        majority.region = Some("us-east".into());
        assert!(check(&[majority], &[], &s, Some(&cut), None).clean());
    }

    #[test]
    fn writes_that_may_exist_twice_or_were_acknowledged_just_before_a_disk_loss_are_not_held_against_the_cluster(
    ) {
        let elem = b"e1".to_vec();
        let mut add = op(
            "s",
            Action::SetAdd { elem: elem.clone() },
            Outcome::Ok,
            "r1",
        );
        add.retried = true;
        let remove = op(
            "s",
            Action::SetRemove {
                elem: elem.clone(),
                read_region: Some("r1".into()),
            },
            Outcome::Ok,
            "r1",
        );
        let back = state(vec![("s", vec![ReadValue::Set(vec![elem])])]);
        let v = check(&[add, remove], &[], &back, None, None);
        assert!(v.clean() && v.unverifiable == 1, "{v:?}");

        let put = op("k", set_lww("1"), Outcome::Ok, "eu-west");
        let loss = |at_ms: u64| DiskLoss {
            region: "eu-west".into(),
            at: Duration::from_millis(at_ms),
            window: Duration::from_millis(200),
        };
        // Completed at 2 s: lost with a disk wiped at 2.1 s is forgiven, at 3 s it is not.
        let v = check(
            std::slice::from_ref(&put),
            &[],
            &State::new(),
            None,
            Some(&loss(2_100)),
        );
        assert!(v.clean() && v.at_risk == 1, "{v:?}");
        let v = check(&[put], &[], &State::new(), None, Some(&loss(3_000)));
        assert_eq!(v.lost.len(), 1, "{v:?}");
    }
}
