//! Load from one routed client per region: a mix of every data type, each operation recorded
//! in the history, acknowledged writes read back now and then through the session
//! (read-your-writes, also across failover).

use super::history::{Action, History, OpRecord, Outcome, RywCheck};
use meridian::model::Op;
use meridian::{Read, ReadValue};
use meridian_runtime::client_proto::Consistency;
use meridian_runtime::routed::{RoutedClient, RoutedConfig, RoutedError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Share of acknowledged own writes read back at once.
const READ_BACK_SHARE: f64 = 0.3;

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

/// What a client remembers of its acknowledged writes.
#[derive(Default)]
struct ClientState {
    next: u64,
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
        0..=17 => (
            format!("reg/{name}/{n}"),
            Action::RegisterPut {
                value: value.clone(),
            },
            Op::Put {
                value: value.clone(),
                context: None,
            },
            false,
        ),
        18..=32 | 93..=99 => {
            let majority = roll >= 93;
            let prefix = if majority { "maj" } else { "lww" };
            (
                format!("{prefix}/{name}/{n}"),
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
            "shared".to_string(),
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
            format!("ctr/{name}"),
            Action::CounterAdd,
            Op::CounterAdd { delta: 1 },
            false,
        ),
        60..=71 => (
            format!("set/{name}"),
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
            let key = format!("set/{name}");
            let Some(read_region) =
                read_back(name, client, history, key.as_bytes(), &Seen::Elem(&elem)).await
            else {
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
                format!("map/{name}"),
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
            let Some(read_region) = read_back(name, client, history, &key, &Seen::Lww(&old)).await
            else {
                return;
            };
            (
                String::from_utf8_lossy(&key).into_owned(),
                Action::Delete {
                    read_region: Some(read_region),
                },
                Op::Delete,
                false,
            )
        }
    };
    let key = key.into_bytes();
    let bytes = key.len() + value.len();
    let consistency = if majority {
        Consistency::Majority
    } else {
        Consistency::Local
    };
    let invoked = history.now();
    let result = client.apply(&key, op, consistency).await;
    let completed = history.now();
    let (outcome, region, retried) = match result {
        Ok(written) => (
            Outcome::Ok,
            Some(written.region),
            written.retried_after_lost,
        ),
        Err(RoutedError::Unknown { region, message }) => (
            Outcome::Unknown(format!("{region}: {message}")),
            None,
            false,
        ),
        Err(e) => (Outcome::Fail(e.to_string()), None, false),
    };
    let acked = outcome == Outcome::Ok;
    let removal = matches!(action, Action::SetRemove { .. } | Action::Delete { .. });
    // A removal whose outcome is unknown may have applied: its target is not read back.
    if acked || (removal && matches!(outcome, Outcome::Unknown(_))) {
        remember(state, &key, &action);
    }
    history.record(OpRecord {
        client: name.into(),
        key: key.clone(),
        action: action.clone(),
        majority,
        invoked,
        completed,
        outcome,
        region,
        retried,
        bytes,
    });
    if acked && rng.f64() < READ_BACK_SHARE {
        match &action {
            Action::RegisterPut { value }
            | Action::LwwSet {
                value,
                shared: false,
            } => {
                let seen = if matches!(action, Action::RegisterPut { .. }) {
                    Seen::Register(value)
                } else {
                    Seen::Lww(value)
                };
                read_back(name, client, history, &key, &seen).await;
            }
            _ => {}
        }
    }
}

/// Updates what the client knows after an acknowledged write.
fn remember(state: &mut ClientState, key: &[u8], action: &Action) {
    match action {
        Action::LwwSet {
            value,
            shared: false,
        } if key.starts_with(b"lww/") => state.lww.push((key.to_vec(), value.clone())),
        Action::SetAdd { elem } => state.elems.push(elem.clone()),
        Action::SetRemove { elem, .. } => state.elems.retain(|e| e != elem),
        Action::Delete { .. } => state.lww.retain(|(k, _)| k != key),
        _ => {}
    }
}

fn pick<T: Clone>(rng: &mut fastrand::Rng, items: &[T]) -> Option<T> {
    (!items.is_empty()).then(|| items[rng.usize(..items.len())].clone())
}

/// What a read must show.
pub(crate) enum Seen<'a> {
    /// A register sibling.
    Register(&'a [u8]),
    /// A last-writer-wins value.
    Lww(&'a [u8]),
    /// A set element.
    Elem(&'a [u8]),
}

impl Seen<'_> {
    /// Whether `read` shows it.
    pub(crate) fn in_read(&self, read: Option<&Read>) -> bool {
        let Some(read) = read else { return false };
        read.values.iter().any(|v| match (self, v) {
            (Seen::Register(x), ReadValue::Register(s)) => s.values.iter().any(|v| v == x),
            (Seen::Lww(x), ReadValue::Lww(l)) => l.value == *x,
            (Seen::Elem(x), ReadValue::Set(elems)) => elems.iter().any(|e| e == x),
            _ => false,
        })
    }
}

/// Reads `key` through the session and records whether it shows `seen`; returns the region
/// that served it when it did.
async fn read_back(
    name: &str,
    client: &mut RoutedClient,
    history: &History,
    key: &[u8],
    seen: &Seen<'_>,
) -> Option<String> {
    let result = client.read(key).await;
    let region = client.last_region().map(str::to_string);
    let saw = match &result {
        Ok(read) => Some(seen.in_read(read.as_ref())),
        Err(_) => None,
    };
    history.record_read(RywCheck {
        client: name.into(),
        key: key.to_vec(),
        at: history.now(),
        saw,
        region: region.clone(),
    });
    if saw == Some(true) {
        region
    } else {
        None
    }
}
