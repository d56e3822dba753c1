//! Load from one routed client per region: a mix of every data type, each operation recorded
//! in the history, acknowledged writes read back now and then through the session
//! (read-your-writes, also across failover); and one client of the stronger consistency levels
//! (`regions(2)` and `all` writes, `majority` reads and plain reads of other sessions' writes
//! acknowledged at `majority` or more).

use super::history::{Action, History, OpRecord, Outcome, ReadAnswer, ReadCheck, ReadKind, Want};
use meridian::{Read, ReadValue};
use meridian_core::model::Op;
use meridian_runtime::client_proto::Consistency;
use meridian_runtime::routed::{RoutedClient, RoutedConfig, RoutedError, Written};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Share of acknowledged own writes read back at once.
const READ_BACK_SHARE: f64 = 0.3;
/// The strong reads pick among this many of the latest strong writes.
const STRONG_RECENT: usize = 20;

/// Switches shared by the harness and a client.
#[derive(Clone, Default)]
pub struct Switches {
    /// Stop for good.
    pub stop: Arc<AtomicBool>,
    /// Issue nothing while set.
    pub paused: Arc<AtomicBool>,
    /// Set by the client while it is paused and has no operation in flight.
    pub idle: Arc<AtomicBool>,
}

/// One client's load: `rate` operations per second, through `config` (its `near` set to its
/// home region), until stopped.
pub async fn run_client(
    name: String,
    config: RoutedConfig,
    history: Arc<History>,
    switches: Switches,
    rate: f64,
    seed: u64,
) -> anyhow::Result<()> {
    let mut client = RoutedClient::connect(config).await?;
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut state = ClientState::default();
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.1));
    while !switches.stop.load(Ordering::SeqCst) {
        let started = tokio::time::Instant::now();
        if switches.paused.load(Ordering::SeqCst) {
            switches.idle.store(true, Ordering::SeqCst);
        } else {
            switches.idle.store(false, Ordering::SeqCst);
            one_op(&name, &mut client, &history, &mut rng, &mut state).await;
        }
        tokio::time::sleep_until(started + interval).await;
    }
    client.close().await;
    Ok(())
}

/// The client of the stronger levels, `rate` writes and `rate` reads per second: a writer
/// session (`name`) writing at `regions(2)` and `all`, and a reader session (`name-reader`),
/// running alongside (a write waiting for every region does not hold the reads up), reading
/// writes other sessions had acknowledged at `majority` or more before the read began, with
/// `read_majority` (a majority holds them) or, for `all`, a plain read (every region holds
/// them).
pub async fn run_strict(
    name: String,
    config: RoutedConfig,
    history: Arc<History>,
    switches: Switches,
    rate: f64,
    seed: u64,
) -> anyhow::Result<()> {
    let mut writer = RoutedClient::connect(config.clone()).await?;
    let mut reader = RoutedClient::connect(config).await?;
    let reader_name = format!("{name}-reader");
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.1));
    let writes = async {
        let mut n = 0u64;
        while !switches.stop.load(Ordering::SeqCst) {
            let started = tokio::time::Instant::now();
            n += 1;
            let (prefix, consistency) = if n.is_multiple_of(2) {
                ("r2", Consistency::Regions(2))
            } else {
                ("all", Consistency::All)
            };
            let key = format!("{prefix}/{name}/{n}").into_bytes();
            let value = format!("{name}-{n}").into_bytes();
            let action = Action::LwwSet {
                value: value.clone(),
                shared: false,
            };
            let op = Op::LwwSet { value };
            apply(&name, &mut writer, &history, &key, action, op, consistency).await;
            tokio::time::sleep_until(started + interval).await;
        }
    };
    let reads = async {
        let mut rng = fastrand::Rng::with_seed(seed);
        while !switches.stop.load(Ordering::SeqCst) {
            let started = tokio::time::Instant::now();
            let all_only = rng.bool();
            let recent = history.strong_writes(&reader_name, STRONG_RECENT, |w| {
                !all_only || w.consistency == Consistency::All
            });
            if let Some(w) = pick(&mut rng, &recent) {
                let kind = if all_only {
                    ReadKind::All
                } else {
                    ReadKind::Majority
                };
                let want = Want::Lww(w.value.clone());
                read_check(&reader_name, &mut reader, &history, &w.key, &want, kind).await;
            }
            tokio::time::sleep_until(started + interval).await;
        }
    };
    tokio::join!(writes, reads);
    writer.close().await;
    reader.close().await;
    Ok(())
}

/// What a client remembers of its acknowledged writes.
#[derive(Default)]
struct ClientState {
    next: u64,
    /// Own register keys acknowledged, with the value last written.
    regs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Own last-writer-wins keys acknowledged and not deleted, with their values.
    lww: Vec<(Vec<u8>, Vec<u8>)>,
    /// Set elements acknowledged and not removed.
    elems: Vec<Vec<u8>>,
}

/// Picks and runs one operation.
async fn one_op(
    name: &str,
    client: &mut RoutedClient,
    history: &History,
    rng: &mut fastrand::Rng,
    state: &mut ClientState,
) {
    state.next += 1;
    let n = state.next;
    let value = format!("{name}-{n}").into_bytes();
    let roll = rng.u32(0..100);
    let (key, action, op, majority) = match roll {
        0..=13 => (
            format!("reg/{name}/{n}").into_bytes(),
            Action::RegisterPut {
                value: value.clone(),
            },
            Op::Put {
                value: value.clone(),
                context: None,
            },
            false,
        ),
        14..=17 => {
            let Some((key, old)) = pick(rng, &state.regs) else {
                return;
            };
            let want = Want::Register(old.clone());
            let Some((_, read)) = read_back(name, client, history, &key, &want).await else {
                return;
            };
            let context = read.values.iter().find_map(|v| match v {
                ReadValue::Register(s) => Some(s.context.clone()),
                _ => None,
            });
            (
                key,
                Action::RegisterReplace {
                    value: value.clone(),
                    old,
                },
                Op::Put {
                    value: value.clone(),
                    context,
                },
                false,
            )
        }
        18..=32 | 93..=99 => {
            let majority = roll >= 93;
            let prefix = if majority { "maj" } else { "lww" };
            (
                format!("{prefix}/{name}/{n}").into_bytes(),
                Action::LwwSet {
                    value: value.clone(),
                    shared: false,
                },
                Op::LwwSet {
                    value: value.clone(),
                },
                majority,
            )
        }
        33..=39 => (
            b"shared".to_vec(),
            Action::LwwSet {
                value: value.clone(),
                shared: true,
            },
            Op::LwwSet {
                value: value.clone(),
            },
            false,
        ),
        40..=59 => (
            format!("ctr/{name}").into_bytes(),
            Action::CounterAdd,
            Op::CounterAdd { delta: 1 },
            false,
        ),
        60..=71 => (
            format!("set/{name}").into_bytes(),
            Action::SetAdd {
                elem: value.clone(),
            },
            Op::SetAdd {
                elems: vec![value.clone()],
            },
            false,
        ),
        72..=76 => {
            let Some(elem) = pick(rng, &state.elems) else {
                return;
            };
            let key = format!("set/{name}").into_bytes();
            let want = Want::Elem(elem.clone());
            let Some((read_region, _)) = read_back(name, client, history, &key, &want).await else {
                return;
            };
            (
                key,
                Action::SetRemove {
                    elem: elem.clone(),
                    read_region: Some(read_region),
                },
                Op::SetRemove { elems: vec![elem] },
                false,
            )
        }
        77..=86 => {
            let field = format!("f{n}").into_bytes();
            (
                format!("map/{name}").into_bytes(),
                Action::MapSet {
                    field: field.clone(),
                    value: value.clone(),
                },
                Op::MapUpdate {
                    field,
                    op: Box::new(Op::LwwSet {
                        value: value.clone(),
                    }),
                },
                false,
            )
        }
        _ => {
            let Some((key, old)) = pick(rng, &state.lww) else {
                return;
            };
            let want = Want::Lww(old);
            let Some((read_region, _)) = read_back(name, client, history, &key, &want).await else {
                return;
            };
            (
                key,
                Action::Delete {
                    read_region: Some(read_region),
                },
                Op::Delete,
                false,
            )
        }
    };
    let consistency = if majority {
        Consistency::Majority
    } else {
        Consistency::Local
    };
    let outcome = apply(name, client, history, &key, action.clone(), op, consistency).await;
    remember(state, &key, &action, &outcome);
    if outcome == Outcome::Ok && rng.f64() < READ_BACK_SHARE {
        let want = match &action {
            Action::RegisterPut { value } | Action::RegisterReplace { value, .. } => {
                Want::Register(value.clone())
            }
            Action::LwwSet {
                value,
                shared: false,
            } => Want::Lww(value.clone()),
            _ => return,
        };
        read_back(name, client, history, &key, &want).await;
    }
}

/// Applies `op` to `key` through `client` and records it; returns how it ended.
async fn apply(
    name: &str,
    client: &mut RoutedClient,
    history: &History,
    key: &[u8],
    action: Action,
    op: Op,
    consistency: Consistency,
) -> Outcome {
    let mut record = OpRecord::new(name, key, action, consistency);
    record.bytes = key.len()
        + match &record.action {
            Action::RegisterPut { value }
            | Action::RegisterReplace { value, .. }
            | Action::LwwSet { value, .. }
            | Action::MapSet { value, .. } => value.len(),
            Action::SetAdd { elem } | Action::SetRemove { elem, .. } => elem.len(),
            Action::CounterAdd | Action::Delete { .. } => 8,
        };
    record.invoked = history.now();
    let result = client.apply(key, op, consistency).await;
    record.completed = history.now();
    match result {
        Ok(Written {
            region,
            retried_after_lost,
            ..
        }) => {
            record.region = Some(region);
            record.retried = retried_after_lost;
        }
        Err(RoutedError::Unknown { region, message }) => {
            record.outcome = Outcome::Unknown(format!("{region}: {message}"));
            record.region = Some(region);
        }
        Err(e) => {
            record.not_yet_visible = matches!(e, RoutedError::NotYetVisible);
            if matches!(e, RoutedError::Uncoverable { .. }) {
                // Writes of the session lost with a disk: go on without them (checked as
                // writes at risk: they were acknowledged just before the loss).
                client.forget_last_lost();
            }
            record.outcome = Outcome::Fail(e.to_string());
        }
    }
    let outcome = record.outcome.clone();
    history.record(record);
    outcome
}

/// Updates what the client knows after a write.
fn remember(state: &mut ClientState, key: &[u8], action: &Action, outcome: &Outcome) {
    let acked = *outcome == Outcome::Ok;
    let unknown = matches!(outcome, Outcome::Unknown(_));
    match action {
        Action::RegisterPut { value } if acked => state.regs.push((key.to_vec(), value.clone())),
        Action::RegisterReplace { value, .. } if acked => {
            for (k, v) in &mut state.regs {
                if k == key {
                    *v = value.clone();
                }
            }
        }
        // What it holds is not known: not read back or replaced again.
        Action::RegisterReplace { .. } if unknown => state.regs.retain(|(k, _)| k != key),
        Action::LwwSet {
            value,
            shared: false,
        } if acked && key.starts_with(b"lww/") => state.lww.push((key.to_vec(), value.clone())),
        Action::SetAdd { elem } if acked => state.elems.push(elem.clone()),
        // A removal whose outcome is unknown may have applied: its target is not read back.
        Action::SetRemove { elem, .. } if acked || unknown => state.elems.retain(|e| e != elem),
        Action::Delete { .. } if acked || unknown => state.lww.retain(|(k, _)| k != key),
        _ => {}
    }
}

fn pick<T: Clone>(rng: &mut fastrand::Rng, items: &[T]) -> Option<T> {
    (!items.is_empty()).then(|| items[rng.usize(..items.len())].clone())
}

/// Reads `key` through the session and records whether it shows `want`; returns the region
/// that served it and what it read when it did.
async fn read_back(
    name: &str,
    client: &mut RoutedClient,
    history: &History,
    key: &[u8],
    want: &Want,
) -> Option<(String, Read)> {
    read_check(name, client, history, key, want, ReadKind::Session).await
}

/// Reads `key` as `kind` asks and records whether it shows `want`; returns the region that
/// served it and what it read when it did.
async fn read_check(
    name: &str,
    client: &mut RoutedClient,
    history: &History,
    key: &[u8],
    want: &Want,
    kind: ReadKind,
) -> Option<(String, Read)> {
    let invoked = history.now();
    let result = match kind {
        ReadKind::Majority => client.read_majority(key).await,
        ReadKind::Session | ReadKind::All => client.read(key).await,
    };
    let completed = history.now();
    let region = client.last_region();
    let (answer, read) = match result {
        Ok(read) if want.in_read(read.as_ref()) => (ReadAnswer::Saw, read),
        Ok(_) => (ReadAnswer::Missed, None),
        Err(RoutedError::NotYetVisible) => (ReadAnswer::NotYetVisible, None),
        Err(RoutedError::Uncoverable { .. }) => {
            client.forget_last_lost();
            (ReadAnswer::Uncoverable, None)
        }
        Err(e) => (ReadAnswer::Unanswered(e.to_string()), None),
    };
    let served = matches!(answer, ReadAnswer::Saw | ReadAnswer::Missed);
    history.record_read(ReadCheck {
        client: name.into(),
        key: key.to_vec(),
        want: want.clone(),
        kind,
        invoked,
        completed,
        answer,
        region: region.clone().filter(|_| served),
    });
    Some((region?, read?))
}
