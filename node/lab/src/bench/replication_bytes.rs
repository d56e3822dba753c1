//! `meridian-lab bench sim`: bytes the replication protocol moves, against the encoded size of the
//! records that had to move (measured in the same run). Engines are real (RocksDB in a temp
//! directory); links are in-memory and lossless, so the figures are the protocol's own.
//! Also (`--collection-size`) the bytes per add to a 10,000-element set and map, against the
//! add's own encoded size, at the newest protocol and at version 6 (whole states).

use super::report::{emit, header, Metric};
use meridian::{Batch, Config, Engine, MemberId, Op, Replication};
use meridian_core::replication::{
    LinkId, Output, ReplicaStore, ReplicationConfig, Replicator, PROTOCOL_VERSION,
    SHARED_STATES_VERSION,
};
use std::collections::BTreeSet;

/// Options of `bench sim`.
#[derive(clap::Args)]
pub struct Args {
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Records written during the outage in the catch-up measurement.
    #[arg(long, default_value_t = 10_000)]
    outage_writes: u64,
    /// Keys held by both replicas in the anti-entropy measurement.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Percentage of those keys that differ.
    #[arg(long, default_value_t = 1.0)]
    differ_percent: f64,
    /// Writes to a few hot keys (a counter, a set, registers) during the outage in the hot
    /// catch-up measurement.
    #[arg(long, default_value_t = 10_000)]
    hot_writes: u64,
    /// Elements of the set and fields of the map in the collections measurement (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    collection_size: u64,
    /// Adds to each collection in that measurement.
    #[arg(long, default_value_t = 200)]
    collection_ops: u64,
}

struct Node {
    engine: Replication,
    repl: Replicator,
}

/// In-memory links between nodes; counts the bytes carried on the links that are up.
struct Links {
    nodes: Vec<Node>,
    up: BTreeSet<(usize, usize)>,
    now_ms: u64,
    /// The protocol version links run at.
    version: u8,
}

impl Links {
    fn new(engines: Vec<Replication>) -> Links {
        let nodes = engines
            .into_iter()
            .map(|engine| {
                let config = ReplicationConfig {
                    relay_delay_ms: 1_000,
                    ..ReplicationConfig::default()
                };
                Node {
                    repl: Replicator::new(engine.member_id(), config),
                    engine,
                }
            })
            .collect();
        Links {
            nodes,
            up: BTreeSet::new(),
            now_ms: 1,
            version: PROTOCOL_VERSION,
        }
    }

    fn connect(&mut self, a: usize, b: usize) {
        self.up.insert((a, b));
        self.up.insert((b, a));
        let now = self.now_ms;
        let (ma, mb) = (
            self.nodes[a].engine.member_id(),
            self.nodes[b].engine.member_id(),
        );
        let n = &mut self.nodes[a];
        n.repl
            .connected_at(LinkId(b as u32), mb, self.version, &n.engine, now);
        let n = &mut self.nodes[b];
        n.repl
            .connected_at(LinkId(a as u32), ma, self.version, &n.engine, now);
    }

    fn disconnect(&mut self, a: usize, b: usize) {
        self.up.remove(&(a, b));
        self.up.remove(&(b, a));
        self.nodes[a].repl.disconnected(LinkId(b as u32));
        self.nodes[b].repl.disconnected(LinkId(a as u32));
    }

    fn local_writes(&mut self, i: usize) -> anyhow::Result<()> {
        let n = &mut self.nodes[i];
        n.repl
            .local_write(&n.engine, self.now_ms)
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Delivers frames until no node has anything to send; returns bytes carried on links that
    /// touch `watch` (all links when `None`).
    fn settle(&mut self, watch: Option<usize>) -> anyhow::Result<u64> {
        let mut bytes = 0;
        loop {
            let mut frames = Vec::new();
            for (i, n) in self.nodes.iter_mut().enumerate() {
                while let Some(o) = n.repl.poll_output() {
                    match o {
                        Output::Send { link: peer, frame } => {
                            frames.push((i, peer.0 as usize, frame))
                        }
                        Output::Close { link: peer, reason } => {
                            anyhow::bail!("link {i}->{} closed: {reason}", peer.0)
                        }
                        Output::Fenced { reason } => anyhow::bail!("node {i} fenced: {reason}"),
                    }
                }
            }
            if frames.is_empty() {
                return Ok(bytes);
            }
            self.now_ms += 1;
            for (from, to, frame) in frames {
                if !self.up.contains(&(from, to)) {
                    continue;
                }
                if watch.is_none_or(|w| w == from || w == to) {
                    bytes += frame.len() as u64;
                }
                let n = &mut self.nodes[to];
                n.repl
                    .handle(LinkId(from as u32), &frame, &n.engine, self.now_ms)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
        }
    }
}

fn open(dir: &std::path::Path, name: &str, id: u64) -> anyhow::Result<Replication> {
    let config = Config {
        member_id: Some(MemberId(id)),
        ..Config::default()
    };
    Ok(Engine::open(dir.join(name), config)?.replication())
}

fn key(prefix: &str, i: u64) -> Vec<u8> {
    format!("{prefix}-{i:010}").into_bytes()
}

fn value(i: u64, round: u64) -> Vec<u8> {
    let mut v = vec![b'v'; 100];
    v[..8].copy_from_slice(&i.to_le_bytes());
    v[8..16].copy_from_slice(&round.to_le_bytes());
    v
}

/// Encoded size (key + record) of `keys` as stored by `engine`.
fn stored_bytes(engine: &Replication, keys: impl Iterator<Item = Vec<u8>>) -> anyhow::Result<u64> {
    let mut total = 0;
    for k in keys {
        let state = engine
            .export(&k)?
            .ok_or_else(|| anyhow::anyhow!("missing record"))?;
        total += (k.len() + state.len()) as u64;
    }
    Ok(total)
}

/// Regions a, b and c (directories named `prefix` and the letter, member ids `ids`) linked at
/// protocol `version` and settled, then c cut off from both.
fn c_cut_off(
    dir: &std::path::Path,
    prefix: &str,
    ids: [u64; 3],
    version: u8,
) -> anyhow::Result<Links> {
    let mut engines = Vec::new();
    for (name, id) in ["a", "b", "c"].into_iter().zip(ids) {
        engines.push(open(dir, &format!("{prefix}{name}"), id)?);
    }
    let mut links = Links::new(engines);
    links.version = version;
    links.connect(0, 1);
    links.connect(0, 2);
    links.connect(1, 2);
    links.settle(None)?;
    links.disconnect(0, 2);
    links.disconnect(1, 2);
    Ok(links)
}

/// Three regions; one is cut off while the other two take writes; it comes back and catches up
/// from the log. Bytes on its links against the encoded records written during the outage.
fn catchup(args: &Args, dir: &std::path::Path) -> anyhow::Result<Metric> {
    let mut links = c_cut_off(dir, "", [1, 2, 3], PROTOCOL_VERSION)?;
    let n = args.outage_writes;
    for i in 0..n {
        let writer = (i % 2) as usize;
        links.nodes[writer]
            .engine
            .put(&key("out", i), &value(i, 0))?;
        if i % 64 == 63 || i + 1 == n {
            links.local_writes(0)?;
            links.local_writes(1)?;
            links.settle(None)?;
        }
    }
    let reference = stored_bytes(&links.nodes[0].engine, (0..n).map(|i| key("out", i)))?;
    links.connect(0, 2);
    links.connect(1, 2);
    let moved = links.settle(Some(2))?;
    anyhow::ensure!(
        links.nodes[2].engine.applied() == links.nodes[0].engine.applied(),
        "region c did not catch up"
    );
    Ok(Metric::with_reference(
        "sim",
        "catchup_bytes_ratio",
        moved as f64,
        "bytes",
        reference as f64,
        "<= 1.5",
    ))
}

/// Bytes region c's links carry to catch up after `writes` writes to a few hot keys (a counter,
/// a 500-element set, eight registers) made by a and b while it was cut off, with links at
/// protocol `version`; and the encoded size of those keys' records (the state that changed).
fn hot_catchup(writes: u64, version: u8, dir: &std::path::Path) -> anyhow::Result<(u64, u64)> {
    let mut links = c_cut_off(dir, &format!("hot-v{version}-"), [21, 22, 23], version)?;
    let hot: Vec<Vec<u8>> = [b"counter".to_vec(), b"set".to_vec()]
        .into_iter()
        .chain((0..8).map(|r| format!("register-{r}").into_bytes()))
        .collect();
    for i in 0..writes {
        let e = &links.nodes[(i % 2) as usize].engine;
        match i % 4 {
            0 => e.counter_add(b"counter", 1).map(drop)?,
            1 | 2 => e.set_add(b"set", &[&(i % 500).to_le_bytes()]).map(drop)?,
            _ => e
                .put(&hot[2 + ((i / 4) % 8) as usize], &value(i, 0))
                .map(drop)?,
        }
        if i % 64 == 63 || i + 1 == writes {
            links.local_writes(0)?;
            links.local_writes(1)?;
            links.settle(None)?;
        }
    }
    let state = stored_bytes(&links.nodes[0].engine, hot.into_iter())?;
    links.connect(0, 2);
    links.connect(1, 2);
    let moved = links.settle(Some(2))?;
    anyhow::ensure!(
        links.nodes[2].engine.applied() == links.nodes[0].engine.applied(),
        "region c did not catch up at version {version}"
    );
    Ok((moved, state))
}

/// The keys of the collections measurement: a set, then a map.
pub(super) const COLLECTIONS: [&[u8]; 2] = [b"big-set", b"big-map"];

/// Elements `from..to` of the set and fields of the map of the collections measurement, as
/// one batch.
pub(super) fn collections_batch(from: u64, to: u64) -> Batch {
    (from..to).fold(Batch::new(), |batch, j| {
        batch
            .set_add(COLLECTIONS[0].to_vec(), format!("element-{j:08}"))
            .op(COLLECTIONS[1].to_vec(), field(format!("field-{j:08}"), j))
    })
}

/// The `j`-th add to collection `n` (0: an element of the set, 1: a field of the map).
pub(super) fn collection_add(n: usize, j: u64) -> Op {
    match n {
        0 => Op::SetAdd {
            elems: vec![format!("added-{j:08}").into_bytes()],
        },
        _ => field(format!("added-{j:08}"), j),
    }
}

/// A map field set to `i` (last writer wins).
fn field(name: String, i: u64) -> Op {
    Op::MapUpdate {
        field: name.into_bytes(),
        op: Box::new(Op::LwwSet {
            value: i.to_le_bytes().to_vec(),
        }),
    }
}

/// Two regions linked at protocol `version`; a set of `size` elements and a map of `size`
/// fields written at a and shipped to b; then `ops` adds to each, one per write: written back
/// to back and then shipped, or (`lone`) each shipped before the next is written. Per
/// collection: the bytes both ways of the link carried for the adds, and the adds' own
/// encoded size (key and operation).
fn collection_adds(
    size: u64,
    ops: u64,
    version: u8,
    lone: bool,
    dir: &std::path::Path,
) -> anyhow::Result<[(u64, u64); 2]> {
    let name = format!("coll-v{version}-{}", if lone { "lone" } else { "stream" });
    let engines = vec![
        open(dir, &format!("{name}-a"), 31)?,
        open(dir, &format!("{name}-b"), 32)?,
    ];
    let mut links = Links::new(engines);
    links.version = version;
    links.connect(0, 1);
    for i in (0..size).step_by(1_000) {
        let batch = collections_batch(i, (i + 1_000).min(size));
        links.nodes[0].engine.write(batch)?;
        links.local_writes(0)?;
        links.settle(None)?;
    }
    let mut out = [(0, 0); 2];
    for (n, key) in COLLECTIONS.into_iter().enumerate() {
        for j in 0..ops {
            let op = collection_add(n, j);
            out[n].1 += (key.len() + postcard::to_allocvec(&op)?.len()) as u64;
            links.nodes[0]
                .engine
                .write(Batch::new().op(key.to_vec(), op))?;
            if lone {
                links.local_writes(0)?;
                out[n].0 += links.settle(None)?;
            }
        }
        links.local_writes(0)?;
        out[n].0 += links.settle(None)?;
    }
    let (a, b) = (&links.nodes[0].engine, &links.nodes[1].engine);
    anyhow::ensure!(a.applied() == b.applied(), "b did not apply every add");
    for key in COLLECTIONS {
        anyhow::ensure!(a.export(key)? == b.export(key)?, "b's collection differs");
    }
    Ok(out)
}

/// Two regions share `keys` records; one misses updates to `differ_percent` of them while the
/// other truncates its log; state anti-entropy reconciles them.
fn antientropy(args: &Args, dir: &std::path::Path) -> anyhow::Result<Metric> {
    let engines = vec![open(dir, "ae-a", 11)?, open(dir, "ae-b", 12)?];
    let mut links = Links::new(engines);
    let keys = args.keys;
    let mut i = 0;
    while i < keys {
        let mut batch = Batch::new();
        for j in i..(i + 1_000).min(keys) {
            batch = batch.put(key("ae", j), value(j, 0));
        }
        links.nodes[0].engine.write(batch)?;
        i += 1_000;
    }
    links.connect(0, 1);
    links.settle(None)?;
    anyhow::ensure!(
        links.nodes[1].engine.applied() == links.nodes[0].engine.applied(),
        "b did not load"
    );
    links.disconnect(0, 1);
    let differ = ((keys as f64) * args.differ_percent / 100.0).round() as u64;
    let step = (keys / differ.max(1)).max(1);
    let changed: Vec<u64> = (0..differ).map(|d| d * step).collect();
    for &k in &changed {
        links.nodes[0].engine.put(&key("ae", k), &value(k, 1))?;
    }
    // Truncate a's log as if b had been declared dead: only state can bring b up to date.
    let a = &links.nodes[0].engine;
    let truncated = a.compact(&a.applied())?;
    anyhow::ensure!(truncated.log_entries_removed > 0, "nothing truncated");
    let reference = stored_bytes(a, changed.iter().map(|k| key("ae", *k)))?;
    links.connect(0, 1);
    let moved = links.settle(None)?;
    for &k in &changed {
        let got = links.nodes[1].engine.get(&key("ae", k))?.map(|s| s.values);
        anyhow::ensure!(
            got == Some(vec![value(k, 1)]),
            "b missed key {k} after anti-entropy"
        );
    }
    anyhow::ensure!(
        links.nodes[1].engine.applied() == links.nodes[0].engine.applied(),
        "b did not adopt a's vector"
    );
    Ok(Metric::with_reference(
        "sim",
        "antientropy_bytes_ratio",
        moved as f64,
        "bytes",
        reference as f64,
        "<= 2.0",
    ))
}

/// Runs the suite.
pub fn run(args: Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    header(args.json);
    super::report::setup(format!(
        "real engines, in-memory lossless links; {} outage writes, {} hot writes, {} keys ({}% differ)",
        args.outage_writes, args.hot_writes, args.keys, args.differ_percent
    ));
    emit(&catchup(&args, dir.path())?, args.json)?;
    let (shared, state) = hot_catchup(args.hot_writes, PROTOCOL_VERSION, dir.path())?;
    let (whole, _) = hot_catchup(args.hot_writes, SHARED_STATES_VERSION - 1, dir.path())?;
    emit(
        &Metric::with_reference(
            "sim",
            "catchup_hot_bytes_ratio",
            shared as f64,
            "bytes",
            state as f64,
            "<= 2.0",
        ),
        args.json,
    )?;
    emit(
        &Metric::with_reference(
            "sim",
            "catchup_hot_vs_v5",
            shared as f64,
            "bytes",
            whole as f64,
            "< 1",
        ),
        args.json,
    )?;
    emit(&antientropy(&args, dir.path())?, args.json)?;
    if args.collection_size > 0 {
        collections(
            args.collection_size,
            args.collection_ops,
            dir.path(),
            args.json,
        )?;
    }
    Ok(())
}

/// The bytes per add to a large set and map, against the add's encoded size, at the newest
/// protocol; and against what version 6 (whole states) carries for the same adds.
pub fn collections(size: u64, ops: u64, dir: &std::path::Path, json: bool) -> anyhow::Result<()> {
    super::report::setup(format!(
        "real engines, in-memory lossless link; a set and a map of {size} elements, {ops} adds to each, one per write, streamed (lone: each shipped before the next)"
    ));
    let streamed = collection_adds(size, ops, PROTOCOL_VERSION, false, dir)?;
    let lone = collection_adds(size, ops, PROTOCOL_VERSION, true, dir)?;
    let whole = collection_adds(size, ops, SHARED_STATES_VERSION, false, dir)?;
    for (i, name) in ["set", "map"].into_iter().enumerate() {
        let per_op = |(bytes, _): (u64, u64)| bytes as f64 / ops.max(1) as f64;
        let op_bytes = streamed[i].1 as f64 / ops.max(1) as f64;
        let metric = |suffix: &str, value: f64, reference: f64, target: &'static str| {
            let name: &'static str =
                Box::leak(format!("collection_{name}_add_{suffix}").into_boxed_str());
            Metric::with_reference("sim", name, value, "bytes", reference, target)
        };
        emit(
            &metric("bytes_per_op", per_op(streamed[i]), op_bytes, "<= 2.0"),
            json,
        )?;
        emit(
            &metric("lone_bytes_per_op", per_op(lone[i]), op_bytes, "-"),
            json,
        )?;
        emit(
            &metric("vs_v6", per_op(streamed[i]), per_op(whole[i]), "-"),
            json,
        )?;
    }
    Ok(())
}
