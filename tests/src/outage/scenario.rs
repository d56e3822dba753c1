//! The scenarios and their runner.

use super::checker::{self, DiskLoss, Minority, State};
use super::history::{History, Outcome};
use super::report::Row;
use super::workload::{run_client, Switches};
use crate::Cluster;
use meridian::routing::Location;
use meridian_netem::{Netem, Shape, ShapeChange};
use meridian_runtime::client_proto::{ClientRequest, ClientResponse};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::block_in_place;

/// The regions: replica name, region, place.
const REGIONS: [(&str, &str, (f64, f64)); 3] = [
    ("use1", "us-east", (39.0, -77.5)),
    ("euw1", "eu-west", (53.3, -6.3)),
    ("apn1", "ap-northeast", (35.7, 139.7)),
];

/// Round trips between them, in milliseconds (Virginia–Dublin, Virginia–Tokyo, Dublin–Tokyo).
const RTT_MS: [(&str, &str, f64); 3] = [
    ("use1", "euw1", 75.0),
    ("use1", "apn1", 165.0),
    ("euw1", "apn1", 215.0),
];

/// Jitter on every link, either way.
const JITTER_MS: f64 = 2.0;

/// One outage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// eu-west SIGKILLed under load, restarted after the outage.
    Kill,
    /// eu-west frozen (SIGSTOP) and thawed (SIGCONT).
    Freeze,
    /// eu-west cut off from both others, every process running.
    Partition,
    /// us-east and ap-northeast cut from each other; both still reach eu-west.
    Partial,
    /// us-east's datagrams to eu-west dropped; eu-west's to us-east pass.
    OneWay,
    /// The us-east–eu-west link going down and up every 300 ms.
    Flapping,
    /// 30% loss on every link, both ways.
    Loss,
    /// Every region SIGKILLed at once and restarted.
    RestartAll,
    /// eu-west SIGKILLed, its data directory deleted, brought back empty.
    Wipe,
    /// ap-northeast retired for good: drained, stopped, removed from the others'
    /// configurations; the cluster carries on and reclaims its logs and tombstones.
    Retire,
    /// eu-west isolated and healed by an operator with `meridian admin isolate` / `heal`.
    AdminIsolate,
}

impl Scenario {
    /// Every scenario, in the order the suite runs them.
    pub const ALL: [Scenario; 11] = [
        Scenario::Kill,
        Scenario::Freeze,
        Scenario::Partition,
        Scenario::Partial,
        Scenario::OneWay,
        Scenario::Flapping,
        Scenario::Loss,
        Scenario::RestartAll,
        Scenario::Wipe,
        Scenario::Retire,
        Scenario::AdminIsolate,
    ];

    /// Its name on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Kill => "kill",
            Scenario::Freeze => "freeze",
            Scenario::Partition => "partition",
            Scenario::Partial => "partial",
            Scenario::OneWay => "one-way",
            Scenario::Flapping => "flapping",
            Scenario::Loss => "loss-30",
            Scenario::RestartAll => "restart-all",
            Scenario::Wipe => "wipe",
            Scenario::Retire => "retire",
            Scenario::AdminIsolate => "admin-isolate",
        }
    }

    /// The scenario named `name`.
    pub fn from_name(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// How long and how hard a scenario runs.
#[derive(Clone, Copy, Debug)]
pub struct Form {
    /// Load before the fault.
    pub warmup: Duration,
    /// How long the fault lasts.
    pub fault: Duration,
    /// Load after the heal.
    pub after: Duration,
    /// Operations per second per client.
    pub rate: f64,
    /// Longest wait for convergence after the heal.
    pub converge_within: Duration,
}

impl Form {
    /// The form `make test` runs (every scenario in a few minutes).
    pub fn fast() -> Form {
        Form {
            warmup: Duration::from_secs(2),
            fault: Duration::from_secs(5),
            after: Duration::from_secs(1),
            rate: 20.0,
            converge_within: Duration::from_secs(60),
        }
    }

    /// The form `make outage` runs.
    pub fn long() -> Form {
        Form {
            warmup: Duration::from_secs(5),
            fault: Duration::from_secs(30),
            after: Duration::from_secs(5),
            rate: 50.0,
            converge_within: Duration::from_secs(180),
        }
    }
}

/// Longest wait for a client's last operation once the load stops.
const CLIENT_STOP_WAIT: Duration = Duration::from_secs(20);
/// How long before a disk loss a `local` write's acknowledgement may precede its shipping
/// (it survives only if another region applied it: the durability contract of `local`).
const DISK_LOSS_WINDOW: Duration = Duration::from_millis(200);
/// Longest wait for one node's scan.
const SCAN_WAIT: Duration = Duration::from_secs(10);

/// Aborts the client tasks when the run ends, however it ends.
struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Longest wait for the cluster's links at the start.
const LINK_WAIT: Duration = Duration::from_secs(30);

/// Runs `scenario` with nodes run by `bin` (a `meridian` executable); `seed` drives the load
/// and the emulator. Errors are failures of the harness (a node that does not start); what
/// the cluster did wrong is in the row.
pub async fn run(scenario: Scenario, form: Form, bin: &Path, seed: u64) -> anyhow::Result<Row> {
    let replicas: Vec<(&str, &str)> = REGIONS.iter().map(|(n, r, _)| (*n, *r)).collect();
    let mut cluster = Cluster::prepare("outage", &replicas, &["t", "ops:admin"])?;
    cluster.run_with(bin);
    for node in &mut cluster.nodes {
        node.log_filter = "error".into();
    }
    cluster.configure(|c| {
        let place = REGIONS
            .iter()
            .find(|(n, _, _)| *n == c.name)
            .map(|(_, _, p)| *p);
        c.location = place.map(|(latitude, longitude)| Location {
            latitude,
            longitude,
        });
    });
    let netem = cluster.start_with_emulator(seed).await?;
    for (a, b, rtt) in RTT_MS {
        let shape = Shape {
            latency_ms: rtt / 2.0,
            jitter_ms: JITTER_MS,
            ..Shape::default()
        };
        netem.set(a, b, shape)?;
        netem.set(b, a, shape)?;
    }
    block_in_place(|| cluster.wait_linked(LINK_WAIT))?;

    let history = Arc::new(History::new());
    let mut clients = Vec::new();
    for (i, (name, _, (latitude, longitude))) in REGIONS.iter().enumerate() {
        let near = Location {
            latitude: *latitude,
            longitude: *longitude,
        };
        // The default client settings: what a user gets.
        let config = cluster.cluster_file("t", Some(near)).routed_config();
        let switches = Switches::default();
        let task = tokio::spawn(run_client(
            name.to_string(),
            config,
            history.clone(),
            switches.clone(),
            form.rate,
            seed.wrapping_mul(31).wrapping_add(i as u64),
        ));
        clients.push((task, switches));
    }
    let _stop_clients = AbortOnDrop(clients.iter().map(|(t, _)| t.abort_handle()).collect());

    tokio::time::sleep(form.warmup).await;
    let fault_at = history.now();
    let mut problems = Vec::new();
    let mut outage = Outage {
        cluster: &mut cluster,
        netem: &netem,
        form,
        retired: None,
        wiped: None,
        resumed: None,
    };
    let minority = outage
        .inflict(scenario, &clients, &history, &mut problems)
        .await?;
    let healed_at = history.now();
    let retired = outage.retired;
    let wiped = outage.wiped.clone();
    let resumed = outage.resumed;
    let live: Vec<usize> = (0..REGIONS.len()).filter(|i| Some(*i) != retired).collect();
    let (catch_up_ms, catchup_bytes) = catch_up(&cluster, &live, &netem, form).await;
    let load_stopped = history.now();
    for (_, switches) in &clients {
        switches.stop.store(true, Ordering::SeqCst);
    }
    for (task, _) in clients {
        match tokio::time::timeout(CLIENT_STOP_WAIT, task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => problems.push(format!("a client failed: {e:#}")),
            Ok(Err(e)) => problems.push(format!("a client panicked: {e}")),
            Err(_) => problems.push("a client did not stop".into()),
        }
    }
    let (state, converge_ms) = converge(&cluster, &live, load_stopped, &history, form).await;
    if converge_ms.is_none() {
        problems.push(format!(
            "the regions did not converge within {:?} of the load's end",
            form.converge_within
        ));
    }
    if let Some(gone) = retired {
        check_reclaimed(&cluster, &live, gone, &mut problems).await;
    }

    let ops = history.ops();
    let verdict = checker::check(
        &ops,
        &history.reads(),
        &state,
        minority.as_ref(),
        wiped.as_ref(),
    );
    let written = |from: Duration, to: Duration| -> u64 {
        ops.iter()
            .filter(|o| !matches!(o.outcome, Outcome::Fail(_)))
            .filter(|o| o.invoked >= from && o.invoked <= to)
            .map(|o| o.bytes as u64)
            .sum()
    };
    let receivers = live.len().saturating_sub(1) as u64;
    let mut moved_bytes = written(fault_at, healed_at) * receivers;
    if wiped.is_some() {
        moved_bytes += written(Duration::ZERO, fault_at);
    }
    let window = (
        fault_at.saturating_sub(Duration::from_secs(1)),
        load_stopped,
    );
    let failover_ms = longest_gap(&ops, window, resumed);
    problems.extend(verdict.lost.iter().take(5).cloned());
    problems.extend(verdict.violations.iter().take(5).cloned());
    Ok(Row {
        scenario: scenario.name().into(),
        acked: verdict.acked,
        lost: verdict.lost.len(),
        unknown: verdict.unknown,
        failed: verdict.failed,
        violations: verdict.violations.len() + usize::from(converge_ms.is_none()),
        reads: verdict.reads,
        failover_ms,
        catch_up_ms,
        converge_ms,
        catchup_bytes,
        moved_bytes,
        problems,
    })
}

/// What a scenario does to the cluster while the load runs.
struct Outage<'a> {
    cluster: &'a mut Cluster,
    netem: &'a Netem,
    form: Form,
    /// The region retired for good.
    retired: Option<usize>,
    /// A region that lost everything it held, and when.
    wiped: Option<DiskLoss>,
    /// A client the harness paused, and when it resumed.
    resumed: Option<(&'static str, Duration)>,
}

/// Node indexes in [`REGIONS`].
const USE1: usize = 0;
const EUW1: usize = 1;
const APN1: usize = 2;

impl Outage<'_> {
    /// Inflicts the fault, waits it out and heals; returns the region cut off from the
    /// majority, if the scenario has one.
    async fn inflict(
        &mut self,
        scenario: Scenario,
        clients: &[(tokio::task::JoinHandle<anyhow::Result<()>>, Switches)],
        history: &History,
        problems: &mut Vec<String>,
    ) -> anyhow::Result<Option<Minority>> {
        let fault = self.form.fault;
        let down = |a: &str, b: &str, both: bool, cut: bool| {
            self.netem
                .change(a, b, both, &ShapeChange::down(cut))
                .map(|_| ())
        };
        let name = |i: usize| REGIONS[i].0;
        let mut minority = None;
        match scenario {
            Scenario::Kill => {
                self.cluster.nodes[EUW1].kill();
                tokio::time::sleep(fault).await;
                block_in_place(|| self.cluster.nodes[EUW1].start())?;
            }
            Scenario::Freeze => {
                self.cluster.nodes[EUW1].pause()?;
                tokio::time::sleep(fault).await;
                self.cluster.nodes[EUW1].resume()?;
            }
            Scenario::Partition => {
                let from = history.now();
                self.netem.isolate(name(EUW1), true)?;
                tokio::time::sleep(fault).await;
                self.netem.isolate(name(EUW1), false)?;
                minority = Some(Minority {
                    region: REGIONS[EUW1].1.into(),
                    from,
                    to: history.now(),
                });
            }
            Scenario::Partial => {
                down(name(USE1), name(APN1), true, true)?;
                tokio::time::sleep(fault).await;
                down(name(USE1), name(APN1), true, false)?;
            }
            Scenario::OneWay => {
                down(name(USE1), name(EUW1), false, true)?;
                tokio::time::sleep(fault).await;
                down(name(USE1), name(EUW1), false, false)?;
            }
            Scenario::Flapping => {
                let until = Instant::now() + fault;
                let mut cut = true;
                while Instant::now() < until {
                    down(name(USE1), name(EUW1), true, cut)?;
                    cut = !cut;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                down(name(USE1), name(EUW1), true, false)?;
            }
            Scenario::Loss => {
                let lossy = ShapeChange {
                    loss: Some(0.3),
                    ..ShapeChange::default()
                };
                self.netem.change("*", "*", false, &lossy)?;
                tokio::time::sleep(fault).await;
                let clear = ShapeChange {
                    loss: Some(0.0),
                    ..ShapeChange::default()
                };
                self.netem.change("*", "*", false, &clear)?;
            }
            Scenario::RestartAll => {
                for node in &mut self.cluster.nodes {
                    node.kill();
                }
                tokio::time::sleep(fault / 2).await;
                block_in_place(|| self.cluster.start_each())?;
                tokio::time::sleep(fault / 2).await;
            }
            Scenario::Wipe => {
                self.cluster.nodes[EUW1].kill();
                let data = self.cluster.nodes[EUW1].config.data_dir.clone();
                std::fs::remove_dir_all(&data)?;
                self.wiped = Some(DiskLoss {
                    region: REGIONS[EUW1].1.into(),
                    at: history.now(),
                    window: DISK_LOSS_WINDOW,
                });
                tokio::time::sleep(fault).await;
                block_in_place(|| self.cluster.nodes[EUW1].start())?;
            }
            Scenario::Retire => {
                self.retire(APN1, &clients[APN1].1, history, problems)
                    .await?
            }
            Scenario::AdminIsolate => {
                let file = self.cluster.dir().join("ops-cluster.toml");
                self.cluster.cluster_file("ops", None).write(&file)?;
                let bin = self.cluster.nodes[USE1].bin.clone();
                let region = REGIONS[EUW1].1;
                admin(&bin, &file, &["isolate", region])?;
                // From the answer on: before it, the region still had its links.
                let from = history.now();
                let status = admin(&bin, &file, &["status", region])?;
                if !status.contains("ISOLATED") {
                    problems.push(format!(
                        "admin status does not show the isolation: {status}"
                    ));
                }
                tokio::time::sleep(fault).await;
                admin(&bin, &file, &["heal", region])?;
                minority = Some(Minority {
                    region: region.into(),
                    from,
                    to: history.now(),
                });
            }
        }
        Ok(minority)
    }

    /// Retires node `gone`: its client pauses, the node drains (its peers acknowledge all it
    /// holds) and stops for good, the others are restarted one by one without it, and its
    /// client carries on from the nearest remaining region.
    async fn retire(
        &mut self,
        gone: usize,
        switches: &Switches,
        history: &History,
        problems: &mut Vec<String>,
    ) -> anyhow::Result<()> {
        switches.paused.store(true, Ordering::SeqCst);
        let quiet = Instant::now() + CLIENT_STOP_WAIT;
        while !switches.idle.load(Ordering::SeqCst) && Instant::now() < quiet {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let held = block_in_place(|| self.cluster.nodes[gone].health())?.applied;
        let drained = Instant::now() + self.form.converge_within;
        loop {
            let mut behind = Vec::new();
            for (i, node) in self.cluster.nodes.iter().enumerate() {
                if i == gone {
                    continue;
                }
                let applied = block_in_place(|| node.health())?.applied;
                let has = |origin| {
                    applied
                        .iter()
                        .find(|(o, _)| *o == origin)
                        .map_or(0, |(_, s)| *s)
                };
                if held.iter().any(|(origin, seq)| has(*origin) < *seq) {
                    behind.push(node.name().to_string());
                }
            }
            if behind.is_empty() {
                break;
            }
            if Instant::now() > drained {
                problems.push(format!("the retiring region never drained to {behind:?}"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        block_in_place(|| self.cluster.nodes[gone].terminate())?;
        self.retired = Some(gone);
        let name = REGIONS[gone].0;
        for i in (0..self.cluster.nodes.len()).filter(|i| *i != gone) {
            let node = &mut self.cluster.nodes[i];
            node.config.peers.retain(|p| p.name != name);
            block_in_place(|| -> anyhow::Result<()> {
                node.terminate()?;
                node.start()?;
                Ok(())
            })?;
        }
        switches.paused.store(false, Ordering::SeqCst);
        self.resumed = Some((REGIONS[gone].0, history.now()));
        tokio::time::sleep(self.form.fault).await;
        Ok(())
    }
}

/// Runs `meridian admin --cluster FILE ARGS...` and returns what it printed.
fn admin(bin: &Path, file: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new(bin)
        .arg("admin")
        .arg("--cluster")
        .arg(file)
        .args(args)
        .env("RUST_LOG", "error")
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(
        out.status.success(),
        "admin {args:?} failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(text)
}

/// Runs the load on for `form.after` after the heal, and until every node of `live` has
/// applied every write any of them had applied at the heal (bounded by
/// `form.converge_within`). Returns how long that took and the bytes the links carried
/// meanwhile.
async fn catch_up(
    cluster: &Cluster,
    live: &[usize],
    netem: &Netem,
    form: Form,
) -> (Option<u64>, u64) {
    let started = Instant::now();
    let bytes_before = netem.delivered_bytes();
    let applied = |i: usize| block_in_place(|| cluster.nodes[i].health()).map(|s| s.applied);
    let mut target: std::collections::BTreeMap<_, u64> = Default::default();
    for i in live {
        for (origin, seq) in applied(*i).unwrap_or_default() {
            let at = target.entry(origin).or_default();
            *at = (*at).max(seq);
        }
    }
    let mut caught_up = None;
    loop {
        if caught_up.is_none() {
            let covered = live.iter().all(|i| {
                applied(*i).is_ok_and(|a| {
                    target
                        .iter()
                        .all(|(origin, seq)| a.iter().any(|(o, s)| o == origin && s >= seq))
                })
            });
            if covered {
                let bytes = netem.delivered_bytes().saturating_sub(bytes_before);
                caught_up = Some((started.elapsed().as_millis() as u64, bytes));
            }
        }
        let elapsed = started.elapsed();
        if elapsed >= form.after && (caught_up.is_some() || elapsed > form.converge_within) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    match caught_up {
        Some((ms, bytes)) => (Some(ms), bytes),
        None => (None, netem.delivered_bytes().saturating_sub(bytes_before)),
    }
}

/// Waits until the nodes `live` hold the same state; returns it and the time from
/// `since` (on the history's clock) until then, or the first node's state and `None`.
async fn converge(
    cluster: &Cluster,
    live: &[usize],
    since: Duration,
    history: &History,
    form: Form,
) -> (State, Option<u64>) {
    let deadline = Instant::now() + form.converge_within;
    let mut last = State::new();
    loop {
        let mut states = Vec::new();
        for i in live {
            match tokio::time::timeout(SCAN_WAIT, scan_all(cluster, *i)).await {
                Ok(Ok(state)) => states.push(state),
                _ => break,
            }
        }
        if states.len() == live.len() {
            let same = states.windows(2).all(|w| values_equal(&w[0], &w[1]));
            if let Some(first) = states.into_iter().next() {
                if same {
                    let ms = history.now().saturating_sub(since).as_millis() as u64;
                    return (first, Some(ms));
                }
                last = first;
            }
        }
        if Instant::now() > deadline {
            return (last, None);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Equal values key by key (tokens aside), deleted keys (no values) as absent.
fn values_equal(a: &State, b: &State) -> bool {
    let present = |s: &State| -> Vec<(Vec<u8>, Vec<meridian::ReadValue>)> {
        s.iter()
            .filter(|(_, r)| !r.values.is_empty())
            .map(|(k, r)| (k.clone(), r.values.clone()))
            .collect()
    };
    present(a) == present(b)
}

/// Every key node `i` holds.
async fn scan_all(cluster: &Cluster, i: usize) -> anyhow::Result<State> {
    let client = cluster.client(i).await?;
    let mut state = State::new();
    let mut after = None;
    loop {
        let request = ClientRequest::Scan {
            prefix: Vec::new(),
            limit: 1_000,
            after: after.clone(),
        };
        match client.request(&request).await? {
            ClientResponse::Rows { rows, more } => {
                after = rows.last().map(|(k, _)| k.clone());
                state.extend(rows);
                if !more || after.is_none() {
                    break;
                }
            }
            other => anyhow::bail!("unexpected answer {other:?}"),
        }
    }
    client.close().await;
    Ok(state)
}

/// The longest time one client went without an acknowledgement between `from` and `to` (for
/// a client the harness paused, from when it resumed).
fn longest_gap(
    ops: &[super::history::OpRecord],
    (from, to): (Duration, Duration),
    resumed: Option<(&str, Duration)>,
) -> u64 {
    let mut by_client: std::collections::BTreeMap<&str, Vec<Duration>> = Default::default();
    for op in ops.iter().filter(|o| o.outcome == Outcome::Ok) {
        by_client.entry(&op.client).or_default().push(op.completed);
    }
    by_client
        .iter_mut()
        .map(|(client, times)| {
            times.sort();
            let from = match resumed {
                Some((paused, at)) if paused == *client => at,
                _ => from,
            };
            let mut previous = from;
            let mut longest = Duration::ZERO;
            for t in times.iter().filter(|t| **t >= from && **t <= to) {
                longest = longest.max(*t - previous);
                previous = *t;
            }
            longest = longest.max(to.saturating_sub(previous));
            longest.as_millis() as u64
        })
        .max()
        .unwrap_or(0)
}

/// After a retirement: the remaining regions reclaim their logs and tombstones.
async fn check_reclaimed(
    cluster: &Cluster,
    live: &[usize],
    gone: usize,
    problems: &mut Vec<String>,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut waiting = Vec::new();
        for i in live {
            match block_in_place(|| cluster.nodes[*i].health()) {
                Ok(s) if s.tombstones_pending == 0 && s.log_entries_reclaimed > 0 => {}
                Ok(s) => waiting.push(format!(
                    "{}: {} tombstones pending, {} log entries reclaimed",
                    s.name, s.tombstones_pending, s.log_entries_reclaimed
                )),
                Err(e) => waiting.push(format!("{}: {e:#}", cluster.nodes[*i].name())),
            }
        }
        if waiting.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            problems.push(format!(
                "nothing reclaimed after {} retired: {}",
                REGIONS[gone].0,
                waiting.join("; ")
            ));
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
