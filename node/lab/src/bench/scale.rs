//! `meridian-lab bench scale`: state transfer at data-set scale, between two `meridian node`
//! processes on loopback, for each size (records of 100 bytes; the size in each metric's name):
//! - `bootstrap_<size>`: records per second an empty region ingests from a full one whose log
//!   is truncated (it streams the state), against raw RocksDB batched writes of the same
//!   records in this run (target ratio ≥ 0.3);
//! - `bootstrap_bytes_<size>`: bytes both nodes sent during it, against the bytes of the
//!   records (keys and stored states) that had to move (≤ 1.3);
//! - `antientropy_bytes_<size>`: 0.1% of the records changed while the second region was down
//!   and the first's log truncated past them: bytes sent to reconcile, against the bytes of the
//!   changed records (≤ 2.0);
//! - `antientropy_ms_<size>`: that round's time from the first region's start (the second is
//!   up and waiting) to the second's coverage of its writes (against the smallest size's, to
//!   show how it grows);
//! - `peak_rss_mib_<size>`: the receiving node's peak resident memory (≤ 1024).

use super::report::{emit, header, Metric};
use meridian::{Batch, Engine, Replication, VersionVector};
use meridian_core::replication::ReplicaStore;
use meridian_tests::{scrape, Cluster, NodeProcess};
use rocksdb::{WriteBatch, WriteOptions, DB};
use std::time::{Duration, Instant};

/// Options of `bench scale`.
#[derive(clap::Args)]
pub struct Args {
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Data-set sizes in records (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1_000_000u64, 10_000_000])]
    sizes: Vec<u64>,
    /// Longest wait for a transfer to finish, in seconds.
    #[arg(long, default_value_t = 1_800)]
    timeout_s: u64,
}

const CLUSTER: &str = "scale";
const VALUE_BYTES: usize = 100;
const BATCH: u64 = 1_000;

fn key(i: u64) -> [u8; 16] {
    super::prefixed_key(b"rec:", i)
}

/// `1m`, `10m`, `250k`: a size as metric names carry it.
fn label(n: u64) -> String {
    match n {
        n if n % 1_000_000 == 0 => format!("{}m", n / 1_000_000),
        n if n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

fn name(metric: &str, n: u64) -> &'static str {
    Box::leak(format!("{metric}_{}", label(n)).into_boxed_str())
}

/// Runs the suite.
pub fn run(args: Args) -> anyhow::Result<()> {
    let daemon = meridian_tests::node_process::daemon()?;
    header(args.json);
    super::report::setup(format!(
        "2 node processes, {VALUE_BYTES}-byte values, batches of {BATCH}, sizes {:?}",
        args.sizes
    ));
    let mut first_ae_ms = None;
    for &n in &args.sizes {
        measure(&args, &daemon, n, &mut first_ae_ms)?;
    }
    Ok(())
}

/// What `node` has applied, from its `/health`.
fn applied(node: &NodeProcess) -> anyhow::Result<VersionVector> {
    Ok(VersionVector::from_entries(node.health()?.applied))
}

/// Replication bytes `node` has sent since it started.
fn bytes_sent(node: &NodeProcess) -> anyhow::Result<f64> {
    Ok(scrape::metric(
        &node.metrics()?,
        "meridian_replication_bytes_sent_total",
    ))
}

/// Opens `a`'s directory in this process (to load it, or change it while its peer is away).
fn open_a(a: &NodeProcess) -> anyhow::Result<Replication> {
    Ok(Engine::open(&a.config.data_dir, a.config.engine_config())?.replication())
}

/// Truncates `a`'s log past everything it holds, as it would once every member applied it:
/// a peer that lacks anything gets state, not entries.
fn truncate(a: &Replication) -> anyhow::Result<()> {
    a.compact(&a.applied())?;
    Ok(())
}

/// Waits until `b` covers `target`; returns the time taken.
fn wait_covered(
    b: &NodeProcess,
    target: &VersionVector,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        if applied(b).is_ok_and(|v| v.dominates(target)) {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(started.elapsed() < timeout, "no coverage after {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn record_bytes(e: &Replication, keys: impl Iterator<Item = u64>) -> anyhow::Result<f64> {
    let mut total = 0usize;
    for i in keys {
        let k = key(i);
        if let Some(state) = e.export(&k)? {
            total += k.len() + state.len();
        }
    }
    Ok(total as f64)
}

/// One size, `n` records, between two node processes of `daemon`.
fn measure(
    args: &Args,
    daemon: &std::path::Path,
    n: u64,
    first_ae_ms: &mut Option<f64>,
) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(args.timeout_s);
    let value = [b'v'; VALUE_BYTES];
    let mut cluster = Cluster::prepare(CLUSTER, &[("a", "us-east"), ("b", "eu-west")], &[])?;
    cluster.run_with(daemon);
    for node in &mut cluster.nodes {
        node.log_filter = "error".into();
    }
    cluster.pick_ports()?;
    let dir = cluster.dir().to_owned();

    // Reference: raw RocksDB, the same records in batches of 1,000, same options, WAL on.
    let started = Instant::now();
    {
        let raw = DB::open(&meridian::store::rocksdb_options(), dir.join("raw"))?;
        for from in (0..n).step_by(BATCH as usize) {
            let mut batch = WriteBatch::default();
            for i in from..(from + BATCH).min(n) {
                batch.put(key(i), value);
            }
            raw.write_opt(batch, &WriteOptions::default())?;
        }
    }
    let reference = n as f64 / started.elapsed().as_secs_f64();
    std::fs::remove_dir_all(dir.join("raw"))?;

    // Region a: the data set, its log truncated.
    let moved_bytes = {
        let e = open_a(&cluster.nodes[0])?;
        e.attach()?;
        for from in (0..n).step_by(BATCH as usize) {
            let batch =
                (from..(from + BATCH).min(n)).fold(Batch::new(), |b, i| b.put(key(i), value));
            e.write(batch)?;
        }
        truncate(&e)?;
        // Summarised now, as a region that has been up has it (kept across clean restarts).
        e.record_count()?;
        (record_bytes(&e, 0..n)?, e.applied())
    };
    let (moved_bytes, target) = moved_bytes;

    // Bootstrap: b starts empty, then a, which dials it at once (started the other way round,
    // a's dialer would be backing off when b comes up, and the wait would be measured too).
    let [a, b] = &mut cluster.nodes[..] else {
        anyhow::bail!("two nodes expected");
    };
    b.start()?;
    a.start()?;
    let took = wait_covered(b, &target, timeout)?;
    let sent = bytes_sent(a)? + bytes_sent(b)?;
    let rss = b.peak_rss_mib()?;
    emit(
        &Metric::with_reference(
            "scale",
            name("bootstrap", n),
            n as f64 / took.as_secs_f64(),
            "records/s",
            reference,
            ">= 0.3",
        ),
        args.json,
    )?;
    emit(
        &Metric::with_reference(
            "scale",
            name("bootstrap_bytes", n),
            sent,
            "bytes",
            moved_bytes,
            "<= 1.3",
        ),
        args.json,
    )?;

    // Anti-entropy: 0.1% of the records change at a while b is down; a's log is truncated.
    b.terminate()?;
    a.terminate()?;
    let changed = (n / 1_000).max(1);
    let step = n / changed;
    let differing = {
        let e = open_a(a)?;
        let newer = [b'w'; VALUE_BYTES];
        // Single writes, as clients update records.
        for j in 0..changed {
            e.put(&key(j * step), &newer)?;
        }
        truncate(&e)?;
        (
            record_bytes(&e, (0..changed).map(|j| j * step))?,
            e.applied(),
        )
    };
    let (differing, target) = differing;
    b.start()?;
    a.start()?;
    let round = wait_covered(b, &target, timeout)?;
    let sent = bytes_sent(a)? + bytes_sent(b)?;
    let rss = rss.max(b.peak_rss_mib()?);
    emit(
        &Metric::with_reference(
            "scale",
            name("antientropy_bytes", n),
            sent,
            "bytes",
            differing,
            "<= 2.0",
        ),
        args.json,
    )?;
    let ms = round.as_secs_f64() * 1_000.0;
    let reference_ms = *first_ae_ms.get_or_insert(ms);
    emit(
        &Metric::with_reference(
            "scale",
            name("antientropy_ms", n),
            ms,
            "ms",
            reference_ms,
            "grows slower than the size",
        ),
        args.json,
    )?;
    emit(
        &Metric {
            suite: "scale",
            metric: name("peak_rss_mib", n),
            value: rss,
            unit: "MiB",
            reference: None,
            ratio: None,
            target: "<= 1024",
        },
        args.json,
    )?;
    b.terminate()?;
    a.terminate()?;
    Ok(())
}
