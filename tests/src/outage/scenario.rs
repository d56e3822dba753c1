//! The scenarios and their runner.

use super::checker::{self, DiskLoss, Faults, Impairment, State, Window};
use super::feed_consumer::{self, FeedView};
use super::history::{Action, History, OpRecord, Outcome};
use super::report::Row;
use super::workload::{run_client, run_strict, Switches};
use crate::Cluster;
use meridian_config::node_config::ProtocolsSection;
use meridian_core::model::Op;
use meridian_core::routing::Location;
use meridian_netem::{Netem, Shape, ShapeChange};
use meridian_runtime::client::{new_request_id, ClientFailure};
use meridian_runtime::client_proto::{ClientRequest, ClientResponse, Consistency, ErrorCode};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// eu-west frozen for 12 s whatever the form, under the clients' default timeouts (a
    /// 15 s request timeout: the clients leave it by its connection's 1 s liveness).
    Freeze12,
    /// Clocks off: us-east's node 2 s ahead, eu-west's 2 s behind (the clients' right), and
    /// eu-west frozen and thawed.
    ClockSkew,
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
    /// A rolling upgrade under load: every region starts as the previous release (a previous
    /// binary, or this one pinned to the previous release's protocol versions), then each in
    /// turn is stopped cleanly and started as this release; mixed versions keep replicating.
    RollingUpgrade,
}

impl Scenario {
    /// Every scenario, in the order the suite runs them.
    pub const ALL: [Scenario; 14] = [
        Scenario::Kill,
        Scenario::Freeze,
        Scenario::Freeze12,
        Scenario::ClockSkew,
        Scenario::Partition,
        Scenario::Partial,
        Scenario::OneWay,
        Scenario::Flapping,
        Scenario::Loss,
        Scenario::RestartAll,
        Scenario::Wipe,
        Scenario::Retire,
        Scenario::AdminIsolate,
        Scenario::RollingUpgrade,
    ];

    /// Its name on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Kill => "kill",
            Scenario::Freeze => "freeze",
            Scenario::Freeze12 => "freeze-12s",
            Scenario::ClockSkew => "clock-skew",
            Scenario::Partition => "partition",
            Scenario::Partial => "partial",
            Scenario::OneWay => "one-way",
            Scenario::Flapping => "flapping",
            Scenario::Loss => "loss-30",
            Scenario::RestartAll => "restart-all",
            Scenario::Wipe => "wipe",
            Scenario::Retire => "retire",
            Scenario::AdminIsolate => "admin-isolate",
            Scenario::RollingUpgrade => "rolling-upgrade",
        }
    }

    /// The longest a client may go without an acknowledged write: a frozen region is left
    /// within its connection's liveness (1 s) and two round trips.
    pub fn failover_bound(self) -> Option<Duration> {
        match self {
            Scenario::Freeze | Scenario::Freeze12 | Scenario::ClockSkew => {
                Some(FREEZE_FAILOVER_MAX)
            }
            _ => None,
        }
    }

    /// The nodes' clock offsets, by node index.
    fn clock_skews_ms(self) -> [i64; 3] {
        match self {
            Scenario::ClockSkew => [2_000, -2_000, 0],
            _ => [0; 3],
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
/// How long the change-feed consumer may take to reflect the converged state.
const FEED_CONVERGE_WAIT: Duration = Duration::from_secs(15);
/// How long before a disk loss a `local` write's acknowledgement may precede its shipping
/// (it survives only if another region applied it: the durability contract of `local`).
const DISK_LOSS_WINDOW: Duration = Duration::from_millis(200);
/// Longest wait for one node's scan.
const SCAN_WAIT: Duration = Duration::from_secs(10);
/// How long `freeze-12s` freezes its region.
const LONG_FREEZE: Duration = Duration::from_secs(12);
/// The longest failover a freeze may cause.
const FREEZE_FAILOVER_MAX: Duration = Duration::from_secs(2);
/// Between two direct writes to a cut-off region.
const PROBE_EVERY: Duration = Duration::from_millis(500);
/// Longest wait for a direct write's answer.
const PROBE_WAIT: Duration = Duration::from_secs(10);
/// A region back this close to the fault's end was healed with it.
const HEALED_WITH_THE_FAULT: Duration = Duration::from_secs(1);
/// The strong client's rate, as a share of a load client's.
const STRICT_SHARE: f64 = 0.25;

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
    run_upgrading(scenario, form, bin, None, seed).await
}

/// The protocol versions of the previous release (replication 4, client 5), which this build
/// still speaks: what `rolling-upgrade` pins its regions to when no previous binary is given.
const PREVIOUS_RELEASE_PROTOCOLS: ProtocolsSection = ProtocolsSection {
    replication_max: Some(4),
    client_max: Some(5),
};

/// `run`; `rolling-upgrade` starts its regions with `previous` (a previous release's
/// `meridian` executable) when given, else with `bin` pinned to the previous release's
/// protocol versions, and upgrades them to `bin` one at a time.
pub async fn run_upgrading(
    scenario: Scenario,
    form: Form,
    bin: &Path,
    previous: Option<&Path>,
    seed: u64,
) -> anyhow::Result<Row> {
    let replicas: Vec<(&str, &str)> = REGIONS.iter().map(|(n, r, _)| (*n, *r)).collect();
    let mut cluster = Cluster::prepare("outage", &replicas, &["t", "ops:admin"])?;
    let upgrading = scenario == Scenario::RollingUpgrade;
    match previous {
        Some(old) if upgrading => cluster.run_with(old),
        _ => cluster.run_with(bin),
    }
    if upgrading && previous.is_none() {
        cluster.configure(|c| c.protocols = PREVIOUS_RELEASE_PROTOCOLS);
    }
    for node in &mut cluster.nodes {
        node.log_filter = "error".into();
    }
    let skews = scenario.clock_skews_ms();
    cluster.configure(|c| {
        let i = REGIONS.iter().position(|(n, _, _)| *n == c.name);
        let place = i.map(|i| REGIONS[i].2);
        c.location = place.map(|(latitude, longitude)| Location {
            latitude,
            longitude,
        });
        c.clock_skew_ms = i.map_or(0, |i| skews[i]);
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
    // A client's settings near the region the faults hit most.
    let near_euw1 = || {
        let (_, _, (latitude, longitude)) = REGIONS[EUW1];
        let near = Location {
            latitude,
            longitude,
        };
        cluster.cluster_file("t", Some(near)).routed_config()
    };
    // The client of the stronger levels, near the region the faults hit most.
    let strict = {
        let switches = Switches::default();
        let task = tokio::spawn(run_strict(
            STRICT.into(),
            near_euw1(),
            history.clone(),
            switches.clone(),
            form.rate * STRICT_SHARE,
            seed.wrapping_mul(31).wrapping_add(REGIONS.len() as u64),
        ));
        (task, switches)
    };
    // A change-feed consumer near the region the faults hit most, from the start of the run.
    let feed_view = Arc::new(std::sync::Mutex::new(FeedView::default()));
    let feed_stop = Arc::new(AtomicBool::new(false));
    let feed = tokio::spawn(feed_consumer::run(
        near_euw1(),
        feed_view.clone(),
        feed_stop.clone(),
    ));
    let _stop_clients = AbortOnDrop(
        clients
            .iter()
            .chain(std::iter::once(&strict))
            .map(|(t, _)| t.abort_handle())
            .chain(std::iter::once(feed.abort_handle()))
            .collect(),
    );

    tokio::time::sleep(form.warmup).await;
    let fault_at = history.now();
    let mut problems = Vec::new();
    let mut outage = Outage {
        cluster: &mut cluster,
        netem: &netem,
        form,
        history: history.clone(),
        retired: None,
        resumed: None,
        faults: Faults::none(&REGIONS.map(|(_, r, _)| r)),
        probes: Vec::new(),
        upgrade_to: bin.to_owned(),
        notes: Vec::new(),
    };
    outage.inflict(scenario, &clients, &mut problems).await?;
    let healed_at = history.now();
    let retired = outage.retired;
    let resumed = outage.resumed;
    let mut faults = outage.faults;
    let probes = outage.probes;
    let notes = outage.notes;
    let live: Vec<usize> = (0..REGIONS.len()).filter(|i| Some(*i) != retired).collect();
    let (catch_up_ms, catchup_bytes) = catch_up(&cluster, &live, &netem, form).await;
    // A region impaired until the heal is back once what it held reached the others (links
    // cut for a few seconds resume only at their next retransmission).
    let caught_up = healed_at + Duration::from_millis(catch_up_ms.unwrap_or(0));
    for w in &mut faults.windows {
        if healed_at.saturating_sub(w.back) < HEALED_WITH_THE_FAULT {
            w.back = w.back.max(caught_up);
        }
    }
    let load_stopped = history.now();
    for (_, switches) in clients.iter().chain(std::iter::once(&strict)) {
        switches.stop.store(true, Ordering::SeqCst);
    }
    for (task, _) in clients.into_iter().chain(std::iter::once(strict)) {
        match tokio::time::timeout(CLIENT_STOP_WAIT, task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => problems.push(format!("a client failed: {e:#}")),
            Ok(Err(e)) => problems.push(format!("a client panicked: {e}")),
            Err(_) => problems.push("a client did not stop".into()),
        }
    }
    for task in probes {
        if tokio::time::timeout(CLIENT_STOP_WAIT, task).await.is_err() {
            problems.push("the direct writes to the cut-off region did not end".into());
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
    // The feed consumer's view must come to equal the converged state.
    let feed_wait = Instant::now();
    let (shown, differing) = loop {
        let (shown, differing) = {
            let view = feed_view.lock().unwrap_or_else(|p| p.into_inner());
            feed_consumer::differences(&view, &state, 5)
        };
        if differing == 0 || feed_wait.elapsed() > FEED_CONVERGE_WAIT {
            break (shown, differing);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    feed_stop.store(true, Ordering::SeqCst);
    match tokio::time::timeout(CLIENT_STOP_WAIT, feed).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => problems.push(format!("the change-feed consumer failed: {e:#}")),
        Ok(Err(e)) => problems.push(format!("the change-feed consumer panicked: {e}")),
        Err(_) => problems.push("the change-feed consumer did not stop".into()),
    }
    let mut notes = notes;
    {
        let view = feed_view.lock().unwrap_or_else(|p| p.into_inner());
        notes.push(format!(
            "change feed: {} changes, {} resets, served by {}",
            view.changes,
            view.resets,
            view.regions.join(" > ")
        ));
        if differing > 0 {
            problems.push(format!(
                "the change feed's view differs from the converged state in {differing} keys {FEED_CONVERGE_WAIT:?} after it (e.g. {shown:?}; {} resets, served by {})",
                view.resets,
                view.regions.join(" > ")
            ));
        }
    }

    let ops = history.ops();
    let verdict = checker::check(&ops, &history.reads(), &state, &faults);
    let written = |from: Duration, to: Duration| -> u64 {
        ops.iter()
            .filter(|o| !matches!(o.outcome, Outcome::Fail(_)))
            .filter(|o| o.invoked >= from && o.invoked <= to)
            .map(|o| o.bytes as u64)
            .sum()
    };
    let receivers = live.len().saturating_sub(1) as u64;
    let mut moved_bytes = written(fault_at, healed_at) * receivers;
    if faults.disk_loss.is_some() {
        moved_bytes += written(Duration::ZERO, fault_at);
    }
    let window = (
        fault_at.saturating_sub(Duration::from_secs(1)),
        load_stopped,
    );
    let failover_ms = longest_gap(&ops, window, resumed);
    let mut over_bound = verdict.over_bound.clone();
    if let Some(bound) = scenario.failover_bound() {
        if failover_ms > bound.as_millis() as u64 {
            over_bound.push(format!(
                "a client went {failover_ms} ms without an acknowledged write: more than {bound:?}"
            ));
        }
    }
    problems.extend(verdict.lost.iter().take(5).cloned());
    problems.extend(verdict.violations.iter().take(5).cloned());
    problems.extend(over_bound.iter().cloned());
    Ok(Row {
        scenario: scenario.name().into(),
        acked: verdict.acked,
        lost: verdict.lost.len(),
        unknown: verdict.unknown,
        failed: verdict.failed,
        violations: verdict.violations.len() + usize::from(converge_ms.is_none()),
        reads: verdict.reads,
        strong_reads: verdict.strong_reads,
        unanswered: verdict.reads_unanswered,
        excused: verdict.reads_excused,
        removals: verdict.context_writes,
        cross_region: verdict.cross_region,
        unverifiable: verdict.unverifiable,
        at_risk: verdict.at_risk,
        minority_attempts: verdict.minority_attempts,
        markers_compared: verdict.markers_compared,
        over_bound: over_bound.len(),
        failover_ms,
        catch_up_ms,
        converge_ms,
        catchup_bytes,
        moved_bytes,
        problems,
        notes,
    })
}

/// The client of the stronger consistency levels.
const STRICT: &str = "strict";

/// What a scenario does to the cluster while the load runs.
struct Outage<'a> {
    cluster: &'a mut Cluster,
    netem: &'a Netem,
    form: Form,
    history: Arc<History>,
    /// The region retired for good.
    retired: Option<usize>,
    /// A client the harness paused, and when it resumed.
    resumed: Option<(&'static str, Duration)>,
    /// What the checker must know of the faults.
    faults: Faults,
    /// Direct writes to a cut-off region still awaiting their answers.
    probes: Vec<tokio::task::JoinHandle<()>>,
    /// The executable a rolling upgrade moves the regions to.
    upgrade_to: std::path::PathBuf,
    /// What the scenario measured beside the row's columns.
    notes: Vec<String>,
}

/// Node indexes in [`REGIONS`].
const USE1: usize = 0;
const EUW1: usize = 1;
const APN1: usize = 2;

impl Outage<'_> {
    /// Notes that node `i` was impaired as `kind`: the fault began at `began`, took effect
    /// by `from`, lasted at least until `to`, and the node is back now.
    fn impaired(&mut self, i: usize, kind: Impairment, [began, from, to]: [Duration; 3]) {
        self.faults.windows.push(Window {
            region: REGIONS[i].1.into(),
            kind,
            began,
            from,
            to,
            back: self.history.now(),
        });
    }

    /// Freezes node `i` for `how_long`.
    async fn freeze(&mut self, i: usize, how_long: Duration) -> anyhow::Result<()> {
        let began = self.history.now();
        self.cluster.nodes[i].pause()?;
        let from = self.history.now();
        tokio::time::sleep(how_long).await;
        let to = self.history.now();
        self.cluster.nodes[i].resume()?;
        self.impaired(i, Impairment::Frozen, [began, from, to]);
        Ok(())
    }

    /// Inflicts the fault, waits it out and heals, noting what the checker must know.
    async fn inflict(
        &mut self,
        scenario: Scenario,
        clients: &[(tokio::task::JoinHandle<anyhow::Result<()>>, Switches)],
        problems: &mut Vec<String>,
    ) -> anyhow::Result<()> {
        let fault = self.form.fault;
        let down = |a: &str, b: &str, both: bool, cut: bool| {
            self.netem
                .change(a, b, both, &ShapeChange::down(cut))
                .map(|_| ())
        };
        let name = |i: usize| REGIONS[i].0;
        let now = || self.history.now();
        match scenario {
            Scenario::Kill => {
                let began = now();
                self.cluster.nodes[EUW1].kill();
                let from = now();
                tokio::time::sleep(fault).await;
                let to = now();
                block_in_place(|| self.cluster.nodes[EUW1].start())?;
                self.impaired(EUW1, Impairment::Stopped, [began, from, to]);
            }
            Scenario::Freeze | Scenario::ClockSkew => self.freeze(EUW1, fault).await?,
            Scenario::Freeze12 => self.freeze(EUW1, LONG_FREEZE).await?,
            Scenario::Partition => {
                let began = now();
                self.netem.isolate(name(EUW1), true)?;
                let from = now();
                let probes = self.probe(EUW1).await?;
                tokio::time::sleep(fault).await;
                let to = now();
                self.netem.isolate(name(EUW1), false)?;
                self.impaired(EUW1, Impairment::CutOff, [began, from, to]);
                self.probes.push(probes.halt());
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
                let began = now();
                self.netem.change("*", "*", false, &lossy)?;
                let from = now();
                tokio::time::sleep(fault).await;
                let to = now();
                let clear = ShapeChange {
                    loss: Some(0.0),
                    ..ShapeChange::default()
                };
                self.netem.change("*", "*", false, &clear)?;
                for i in 0..REGIONS.len() {
                    self.impaired(i, Impairment::Lossy, [began, from, to]);
                }
            }
            Scenario::RestartAll => {
                let began = now();
                for node in &mut self.cluster.nodes {
                    node.kill();
                }
                let from = now();
                tokio::time::sleep(fault / 2).await;
                let to = now();
                block_in_place(|| self.cluster.start_each())?;
                for i in 0..REGIONS.len() {
                    self.impaired(i, Impairment::Stopped, [began, from, to]);
                }
                tokio::time::sleep(fault / 2).await;
            }
            Scenario::Wipe => {
                let began = now();
                self.cluster.nodes[EUW1].kill();
                let data = self.cluster.nodes[EUW1].config.data_dir.clone();
                std::fs::remove_dir_all(&data)?;
                let from = now();
                self.faults.disk_loss = Some(DiskLoss {
                    region: REGIONS[EUW1].1.into(),
                    at: from,
                    window: DISK_LOSS_WINDOW,
                });
                tokio::time::sleep(fault).await;
                let to = now();
                block_in_place(|| self.cluster.nodes[EUW1].start())?;
                self.impaired(EUW1, Impairment::Stopped, [began, from, to]);
            }
            Scenario::Retire => self.retire(APN1, &clients[APN1].1, problems).await?,
            Scenario::RollingUpgrade => self.upgrade_each(problems).await?,
            Scenario::AdminIsolate => {
                let file = self.cluster.dir().join("ops-cluster.toml");
                self.cluster.cluster_file("ops", None).write(&file)?;
                let bin = self.cluster.nodes[USE1].bin.clone();
                let region = REGIONS[EUW1].1;
                let began = now();
                admin(&bin, &file, &["isolate", region])?;
                // From the answer on: before it, the region still had its links.
                let from = now();
                let probes = self.probe(EUW1).await?;
                let status = admin(&bin, &file, &["status", region])?;
                if !status.contains("ISOLATED") {
                    problems.push(format!(
                        "admin status does not show the isolation: {status}"
                    ));
                }
                tokio::time::sleep(fault).await;
                let to = now();
                admin(&bin, &file, &["heal", region])?;
                self.impaired(EUW1, Impairment::CutOff, [began, from, to]);
                self.probes.push(probes.halt());
            }
        }
        Ok(())
    }

    /// A rolling upgrade: each region in turn stopped cleanly (SIGTERM: drained and flushed)
    /// and started as this release, with a pause between two; notes how long each was out
    /// and checks the links' protocol versions before and after.
    async fn upgrade_each(&mut self, problems: &mut Vec<String>) -> anyhow::Result<()> {
        let versions = |cluster: &Cluster| -> Vec<Option<u8>> {
            cluster
                .nodes
                .iter()
                .filter_map(|n| n.health().ok())
                .flat_map(|s| s.peers.into_iter().map(|p| p.protocol))
                .collect()
        };
        let before = block_in_place(|| versions(self.cluster));
        // A previous release's status does not say (`None`); a pinned node's says 4.
        if before.iter().any(|v| v.is_some_and(|v| v != 4)) {
            problems.push(format!(
                "before the upgrade, links ran at {before:?}, not the previous release's 4"
            ));
        }
        for i in [APN1, USE1, EUW1] {
            let began = self.history.now();
            let stopped = Instant::now();
            block_in_place(|| self.cluster.nodes[i].terminate())?;
            let from = self.history.now();
            let node = &mut self.cluster.nodes[i];
            node.bin = self.upgrade_to.clone();
            node.config.protocols = ProtocolsSection::default();
            block_in_place(|| node.start())?;
            let to = self.history.now();
            block_in_place(|| self.cluster.wait_linked(LINK_WAIT))?;
            self.impaired(i, Impairment::Stopped, [began, from, to]);
            self.notes.push(format!(
                "{} upgraded: out {} ms, linked again after {} ms",
                REGIONS[i].1,
                (to - began).as_millis(),
                stopped.elapsed().as_millis()
            ));
            tokio::time::sleep(self.form.fault / 3).await;
        }
        let after = block_in_place(|| versions(self.cluster));
        let newest = meridian_core::replication::PROTOCOL_VERSION;
        if after.len() != REGIONS.len() * (REGIONS.len() - 1)
            || after.iter().any(|v| *v != Some(newest))
        {
            problems.push(format!(
                "after the upgrade, links ran at {after:?}, not {newest} everywhere"
            ));
        }
        Ok(())
    }

    /// Sends writes asking for a majority, two regions or all of them straight to node `i`
    /// (cut off: each must be refused or end unknown) every `PROBE_EVERY` until stopped,
    /// each recorded in the history (client `probe`, asked `i`'s region).
    async fn probe(&self, i: usize) -> anyhow::Result<Probes> {
        let client = self.cluster.client(i).await?;
        let region = REGIONS[i].1.to_string();
        let history = self.history.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let task = tokio::spawn(async move {
            let mut sent = tokio::task::JoinSet::new();
            let levels = [
                Consistency::Majority,
                Consistency::Regions(2),
                Consistency::All,
            ];
            let mut n = 0usize;
            while !stopping.load(Ordering::SeqCst) {
                n += 1;
                let (client, region, history) = (client.clone(), region.clone(), history.clone());
                let consistency = levels[n % levels.len()];
                sent.spawn(probe_once(client, region, history, n, consistency));
                tokio::time::sleep(PROBE_EVERY).await;
            }
            while sent.join_next().await.is_some() {}
            client.close().await;
        });
        Ok(Probes { stop, task })
    }

    /// Retires node `gone`: its client pauses, the node drains (its peers acknowledge all it
    /// holds) and stops for good, the others are restarted one by one without it, and its
    /// client carries on from the nearest remaining region.
    async fn retire(
        &mut self,
        gone: usize,
        switches: &Switches,
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
        self.faults.retired = Some((REGIONS[gone].1.into(), self.history.now()));
        let name = REGIONS[gone].0;
        for i in (0..self.cluster.nodes.len()).filter(|i| *i != gone) {
            let node = &mut self.cluster.nodes[i];
            node.config.peers.retain(|p| p.name != name);
            // Shutting down, it stops serving before it exits.
            let began = self.history.now();
            block_in_place(|| node.terminate())?;
            let from = self.history.now();
            let to = self.history.now();
            block_in_place(|| self.cluster.nodes[i].start())?;
            self.impaired(i, Impairment::Stopped, [began, from, to]);
        }
        switches.paused.store(false, Ordering::SeqCst);
        self.resumed = Some((REGIONS[gone].0, self.history.now()));
        tokio::time::sleep(self.form.fault).await;
        Ok(())
    }
}

/// Direct writes to a cut-off region, running.
struct Probes {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Probes {
    /// Sends no more; the task ends once the last answers came (each within `PROBE_WAIT`).
    fn halt(self) -> tokio::task::JoinHandle<()> {
        self.stop.store(true, Ordering::SeqCst);
        self.task
    }
}

/// One direct write of `probe/{n}` at `consistency` to `region`'s node, recorded.
async fn probe_once(
    client: meridian_runtime::client::Client,
    region: String,
    history: Arc<History>,
    n: usize,
    consistency: Consistency,
) {
    let key = format!("probe/{n}").into_bytes();
    let value = format!("probe-{n}").into_bytes();
    let mut record = OpRecord::new(
        "probe",
        &key,
        Action::LwwSet {
            value: value.clone(),
            shared: false,
        },
        consistency,
    );
    record.asked = Some(region.clone());
    record.bytes = key.len() + value.len();
    let request = ClientRequest::Apply {
        id: new_request_id(),
        key,
        op: Op::LwwSet { value },
        consistency,
        deadline_ms: None,
        after: None,
    };
    record.invoked = history.now();
    let answer = tokio::time::timeout(PROBE_WAIT, client.request(&request)).await;
    record.completed = history.now();
    record.outcome = match answer {
        Ok(Ok(ClientResponse::Written { .. })) => {
            record.region = Some(region.clone());
            Outcome::Ok
        }
        Ok(Ok(other)) => Outcome::Unknown(format!("unexpected answer {other:?}")),
        Ok(Err(ClientFailure::Server(e))) if e.code == ErrorCode::Unknown => {
            record.region = Some(region.clone());
            Outcome::Unknown(e.message)
        }
        // Refused by the node, or never sent: nothing written.
        Ok(Err(e @ (ClientFailure::Server(_) | ClientFailure::Connect(_)))) => {
            Outcome::Fail(e.to_string())
        }
        Ok(Err(e)) => {
            record.region = Some(region.clone());
            Outcome::Unknown(e.to_string())
        }
        Err(_) => {
            record.region = Some(region.clone());
            Outcome::Unknown("no answer in time".into())
        }
    };
    history.record(record);
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
            token: None,
            wait_ms: 0,
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

/// The longest time one load client went without an acknowledgement between `from` and `to`
/// (for a client the harness paused, from when it resumed; the client of the stronger levels
/// waits for several regions by design and is not counted).
fn longest_gap(
    ops: &[super::history::OpRecord],
    (from, to): (Duration, Duration),
    resumed: Option<(&str, Duration)>,
) -> u64 {
    let mut by_client: std::collections::BTreeMap<&str, Vec<Duration>> = Default::default();
    let load = |client: &str| REGIONS.iter().any(|(n, _, _)| *n == client);
    for op in ops
        .iter()
        .filter(|o| o.outcome == Outcome::Ok && load(&o.client))
    {
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
