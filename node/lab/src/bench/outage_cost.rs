//! `meridian-lab bench outage-cost`: what one region down costs the others. Three `meridian node`
//! processes on loopback, routed clients near the first region writing registers and deleting
//! them (`--delete-share`), on `--keys` keys; each phase lasts `--minutes`:
//! - `up`: every region up (the reference);
//! - `down`: the third region killed for the phase (its peers keep its log and tombstones, up
//!   to the retention cap).
//!
//! Then the region restarts and `catch_up_ms` is the time until it covers what the others had
//! applied when it came back, the load running.
//!
//! Per phase: operations per second (and the slowest 30-second window), p99 and max latency
//! of a write, the live nodes' resident memory and data on disk at the phase's end. Ratios are
//! against the `up` phase of the same run (`down` throughput target ≥ 0.8; max target ≤ 250 ms).

use super::report::{emit, header, Metric};
use meridian::VersionVector;
use meridian_core::model::Op;
use meridian_core::routing::Location;
use meridian_runtime::client_proto::Consistency;
use meridian_runtime::routed::RoutedClient;
use meridian_tests::{Cluster, NodeProcess};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Options of `bench outage-cost`.
#[derive(clap::Args)]
pub struct Args {
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Length of each phase (all up; one region down), in minutes.
    #[arg(long, default_value_t = 5.0)]
    minutes: f64,
    /// Keys written and deleted.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Client tasks.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Share of operations that are deletes.
    #[arg(long, default_value_t = 0.3)]
    delete_share: f64,
}

/// Latencies are recorded in microseconds up to a minute.
const LATENCY_MAX_US: u64 = 60_000_000;
/// Throughput is also looked at in windows of this length.
const WINDOW: Duration = Duration::from_secs(30);
const VALUE_BYTES: usize = 100;

/// What one phase measured.
struct Phase {
    ops: u64,
    errors: u64,
    elapsed: Duration,
    latency: hdrhistogram::Histogram<u64>,
    /// Operations per window, in order.
    windows: Vec<u64>,
    /// Per live node: resident MiB and data-directory MiB at the end.
    rss_mib: f64,
    disk_mib: f64,
}

impl Phase {
    fn ops_per_s(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    fn slowest_window_per_s(&self) -> f64 {
        self.windows
            .iter()
            .min()
            .map_or(0.0, |w| *w as f64 / WINDOW.as_secs_f64())
    }
}

/// The load's running record: latencies and per-window counts, shared by the client tasks.
struct Recorder {
    latency: hdrhistogram::Histogram<u64>,
    errors: u64,
    started: Instant,
    windows: Vec<u64>,
    /// The first failure, described.
    first_error: Option<String>,
    /// The slowest operations: (milliseconds since the Unix epoch when it ended, latency).
    slow: Vec<(u128, Duration)>,
}

/// Operations slower than this are listed with the time they ended.
const SLOW: Duration = Duration::from_millis(100);
/// How many of them are kept.
const SLOW_KEPT: usize = 20;

impl Recorder {
    fn new() -> Recorder {
        Recorder {
            // Auto-resizing: records any latency (the bound only sets the first allocation).
            latency: {
                let mut h = hdrhistogram::Histogram::new(3)
                    .unwrap_or_else(|_| unreachable!("3 significant figures are valid"));
                h.auto(true);
                h
            },
            errors: 0,
            started: Instant::now(),
            windows: Vec::new(),
            first_error: None,
            slow: Vec::new(),
        }
    }

    fn record(&mut self, took: Duration, ok: bool) {
        if !ok {
            self.errors += 1;
            return;
        }
        if took >= SLOW {
            let at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            self.slow.push((at, took));
            self.slow.sort_by_key(|(_, t)| std::cmp::Reverse(*t));
            self.slow.truncate(SLOW_KEPT);
        }
        let _ = self
            .latency
            .record((took.as_micros() as u64).clamp(1, LATENCY_MAX_US));
        // (Clamped: a latency past a minute is a minute, for the table.)
        let window = (self.started.elapsed().as_secs_f64() / WINDOW.as_secs_f64()) as usize;
        if self.windows.len() <= window {
            self.windows.resize(window + 1, 0);
        }
        self.windows[window] += 1;
    }
}

/// Runs the suite.
pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.minutes > 0.0, "--minutes must be positive");
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.delete_share),
        "--delete-share is a share between 0 and 1"
    );
    let places = [
        ("use1", "us-east", Location::new(40.7, -74.0)),
        ("euw1", "eu-west", Location::new(53.3, -6.3)),
        ("apn1", "ap-northeast", Location::new(35.7, 139.7)),
    ];
    let replicas: Vec<(&str, &str)> = places.iter().map(|(n, r, _)| (*n, *r)).collect();
    let mut cluster = Cluster::prepare("outagecost", &replicas, &["load:write"])?;
    cluster.run_with(&meridian_tests::node_process::daemon()?);
    cluster.configure(|c| {
        c.location = places
            .iter()
            .find(|(n, _, _)| *n == c.name)
            .and_then(|(_, _, l)| *l);
        // The load is one client identity: no rate limit in the way of what is measured.
        c.limits.client_requests_per_second = 1_000_000;
        c.limits.client_burst = 100_000;
    });
    cluster.pick_ports()?;
    cluster.wire_peers();
    cluster.start_all()?;
    cluster.wait_linked(Duration::from_secs(30))?;
    let phase_len = Duration::from_secs_f64(args.minutes * 60.0);
    let near = places[0]
        .2
        .ok_or_else(|| anyhow::anyhow!("a place off the Earth"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let file = cluster.cluster_file("load", Some(near));
    let stop = Arc::new(AtomicBool::new(false));
    let recorder = Arc::new(Mutex::new(Recorder::new()));
    let tasks: Vec<_> = (0..args.clients)
        .map(|c| {
            let config = file.routed_config();
            let (stop, recorder) = (stop.clone(), recorder.clone());
            let (keys, delete_share) = (args.keys, args.delete_share);
            runtime.spawn(async move { load(c, config, keys, delete_share, stop, recorder).await })
        })
        .collect();

    let up = phase(&cluster, &recorder, phase_len, &[0, 1, 2])?;
    cluster.nodes[2].kill();
    let down = phase(&cluster, &recorder, phase_len, &[0, 1])?;
    let target = max_applied(&cluster.nodes[..2])?;
    let back = Instant::now();
    cluster.nodes[2].start()?;
    let catch_up = loop {
        if let Ok(status) = cluster.nodes[2].health() {
            if VersionVector::from_entries(status.applied).dominates(&target) {
                break back.elapsed();
            }
        }
        anyhow::ensure!(
            back.elapsed() < Duration::from_secs(3_600),
            "the region did not catch up within an hour"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        let _ = runtime.block_on(t);
    }

    header(args.json);
    super::report::setup(format!(
        "3 node processes, {} keys, {} clients, {} min",
        args.keys, args.clients, args.minutes
    ));
    let ms = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1_000.0;
    let m = |name: &'static str, value: f64, unit: &'static str| Metric {
        suite: "outage",
        metric: name,
        value,
        unit,
        reference: None,
        ratio: None,
        target: "-",
    };
    let rows = [
        Metric::with_reference(
            "outage",
            "ops_per_s_down",
            down.ops_per_s(),
            "ops/s",
            up.ops_per_s(),
            ">= 0.8",
        ),
        Metric::with_reference(
            "outage",
            "slowest_30s_down",
            down.slowest_window_per_s(),
            "ops/s",
            up.slowest_window_per_s(),
            ">= 0.8",
        ),
        Metric::with_reference(
            "outage",
            "p99_ms_down",
            ms(&down.latency, 0.99),
            "ms",
            ms(&up.latency, 0.99),
            "-",
        ),
        Metric::with_reference(
            "outage",
            "max_ms_down",
            ms(&down.latency, 1.0),
            "ms",
            ms(&up.latency, 1.0),
            "<= 250 ms",
        ),
        Metric::with_reference(
            "outage",
            "rss_mib_down",
            down.rss_mib,
            "MiB",
            up.rss_mib,
            "-",
        ),
        Metric::with_reference(
            "outage",
            "disk_mib_down",
            down.disk_mib,
            "MiB",
            up.disk_mib,
            "-",
        ),
        m("catch_up_ms", catch_up.as_millis() as f64, "ms"),
        m("errors", (up.errors + down.errors) as f64, "ops"),
    ];
    for row in &rows {
        emit(row, args.json)?;
    }
    Ok(())
}

/// Runs the load for `len`, then reads what the `live` nodes hold.
fn phase(
    cluster: &Cluster,
    recorder: &Mutex<Recorder>,
    len: Duration,
    live: &[usize],
) -> anyhow::Result<Phase> {
    *recorder.lock().unwrap_or_else(|e| e.into_inner()) = Recorder::new();
    std::thread::sleep(len);
    let taken = std::mem::replace(
        &mut *recorder.lock().unwrap_or_else(|e| e.into_inner()),
        Recorder::new(),
    );
    let elapsed = taken.started.elapsed();
    if let Some(e) = &taken.first_error {
        eprintln!("{} errors in the phase; the first: {e}", taken.errors);
    }
    for (at, took) in &taken.slow {
        eprintln!(
            "slow operation: {} ms, ended at {}.{:03} s (Unix time)",
            took.as_millis(),
            at / 1_000,
            at % 1_000
        );
    }
    let full_windows = (elapsed.as_secs_f64() / WINDOW.as_secs_f64()) as usize;
    let mut windows = taken.windows;
    windows.truncate(full_windows.max(1));
    let mut rss_mib = 0.0;
    let mut disk_mib = 0.0;
    for &i in live {
        rss_mib += rss_mib_of(&cluster.nodes[i])?;
        disk_mib += dir_bytes(&cluster.nodes[i].config.data_dir) as f64 / (1 << 20) as f64;
    }
    Ok(Phase {
        ops: taken.latency.len(),
        errors: taken.errors,
        elapsed,
        latency: taken.latency,
        windows,
        rss_mib,
        disk_mib,
    })
}

/// One client: writes and deletes random keys until told to stop.
async fn load(
    client: usize,
    config: meridian_runtime::routed::RoutedConfig,
    keys: u64,
    delete_share: f64,
    stop: Arc<AtomicBool>,
    recorder: Arc<Mutex<Recorder>>,
) -> anyhow::Result<()> {
    let routed = RoutedClient::connect(config).await?;
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (client as u64 + 1);
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let cut = (delete_share * 1_000.0) as u64;
    while !stop.load(Ordering::Relaxed) {
        let key = super::prefixed_key(b"out:", next() % keys);
        let op = if next() % 1_000 < cut {
            Op::Delete
        } else {
            Op::Put {
                value: vec![b'v'; VALUE_BYTES],
                context: None,
            }
        };
        let started = Instant::now();
        let result = routed.apply(&key, op, Consistency::Local).await;
        let mut r = recorder.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = &result {
            r.first_error.get_or_insert_with(|| e.to_string());
        }
        r.record(started.elapsed(), result.is_ok());
    }
    routed.close().await;
    Ok(())
}

/// The pointwise maximum of what `nodes` have applied.
fn max_applied(nodes: &[NodeProcess]) -> anyhow::Result<VersionVector> {
    let mut all = VersionVector::new();
    for n in nodes {
        all.join(&VersionVector::from_entries(n.health()?.applied));
    }
    Ok(all)
}

/// A node's resident memory now (VmRSS), in MiB.
fn rss_mib_of(node: &NodeProcess) -> anyhow::Result<f64> {
    let pid = node
        .pid()
        .ok_or_else(|| anyhow::anyhow!("{} is not running", node.name()))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/{pid}/status"))?;
    Ok(kib / 1024.0)
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
