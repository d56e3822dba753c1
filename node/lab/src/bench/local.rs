//! `meridian-lab bench local`: the engine's local write and read path against raw RocksDB doing the
//! same job with the same options and the same WAL setting, 100-byte values.

use super::prefixed_key;
use super::report::{emit, header, Metric};
use meridian::{Config, Durability, Engine};
use rocksdb::{WriteOptions, DB};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// Options of `bench local`.
#[derive(clap::Args)]
pub struct Args {
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Operations per measurement.
    #[arg(long, default_value_t = 200_000)]
    ops: u64,
    /// `wal` (default) or `sync` (fsync each write, group-committed).
    #[arg(long, default_value = "wal")]
    durability: String,
    /// Writer thread counts to measure puts of fresh keys with (`put_<n>w`), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    writers: Vec<u64>,
    /// Keys written before the overwrite measurements (`overwrite_1w`, `overwrite_4w`: random
    /// overwrites of existing keys, a working set larger than the engine's and RocksDB's
    /// caches); 0 skips them.
    #[arg(long, default_value_t = 1_000_000)]
    overwrite_keys: u64,
}

const VALUE_BYTES: usize = 100;
const COUNTER_KEYS: u64 = 1_000;

fn value(i: u64) -> [u8; VALUE_BYTES] {
    let mut v = [b'v'; VALUE_BYTES];
    v[..8].copy_from_slice(&i.to_le_bytes());
    v
}

/// A scrambled but repeatable order over `0..n`.
fn shuffled(n: u64, i: u64) -> u64 {
    (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 7) % n
}

fn rate(ops: u64, f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let start = Instant::now();
    f()?;
    Ok(ops as f64 / start.elapsed().as_secs_f64())
}

/// `work` over `0..ops` split among `writers` threads, as operations per second.
fn parallel(
    ops: u64,
    writers: u64,
    work: impl Fn(u64, u64) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<f64> {
    rate(ops, || {
        std::thread::scope(|s| {
            let per = ops / writers;
            let handles: Vec<_> = (0..writers)
                .map(|w| {
                    let work = &work;
                    s.spawn(move || work(w * per, (w + 1) * per))
                })
                .collect();
            for h in handles {
                h.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
            }
            Ok(())
        })
    })
}

fn raw_db(path: &Path) -> anyhow::Result<Arc<DB>> {
    Ok(Arc::new(DB::open(
        &meridian::store::rocksdb_options(),
        path,
    )?))
}

/// Runs the suite.
pub fn run(args: Args) -> anyhow::Result<()> {
    let durability = match args.durability.as_str() {
        "wal" => Durability::Wal,
        "sync" => Durability::Sync,
        other => anyhow::bail!("--durability must be wal or sync, not {other:?}"),
    };
    let sync = durability == Durability::Sync;
    anyhow::ensure!(
        args.writers.iter().all(|w| (1..=1_024).contains(w)),
        "--writers takes counts from 1 to 1024"
    );
    let ops = args
        .ops
        .max(args.writers.iter().copied().max().unwrap_or(1));
    let tmp = tempfile::tempdir()?;
    let config = Config {
        durability,
        ..Config::default()
    };
    let mut wo = WriteOptions::default();
    wo.set_sync(sync);
    let json = args.json;
    header(json);
    super::report::setup(format!(
        "{ops} ops, {VALUE_BYTES}-byte values, {}, 1 writer (put_<n>w: n)",
        args.durability
    ));

    // put_1w
    let raw = raw_db(&tmp.path().join("raw-1w"))?;
    let reference = rate(ops, || {
        (0..ops).try_for_each(|i| raw.put_opt(key(i), value(i), &wo).map_err(Into::into))
    })?;
    let engine = Engine::open(tmp.path().join("engine-1w"), config.clone())?;
    let measured = rate(ops, || {
        (0..ops).try_for_each(|i| engine.put(&key(i), &value(i)).map(drop).map_err(Into::into))
    })?;
    emit(
        &Metric::with_reference("local", "put_1w", measured, "ops/s", reference, ">= 0.8"),
        json,
    )?;

    // get: random reads of the keys just written.
    let reference = rate(ops, || {
        for i in 0..ops {
            let got = raw.get_pinned(key(shuffled(ops, i)))?;
            anyhow::ensure!(got.is_some(), "raw get missed");
        }
        Ok(())
    })?;
    let measured = rate(ops, || {
        for i in 0..ops {
            let got = engine.get(&key(shuffled(ops, i)))?;
            anyhow::ensure!(
                got.is_some_and(|s| s.values.len() == 1),
                "engine get missed"
            );
        }
        Ok(())
    })?;
    emit(
        &Metric::with_reference("local", "get", measured, "ops/s", reference, ">= 0.9"),
        json,
    )?;

    // meta_bytes_per_record: record bytes beyond the value after a single-replica write.
    let sample = ops.min(1_000);
    let mut meta = 0u64;
    for i in 0..sample {
        let stored = engine
            .replication()
            .export(&key(shuffled(ops, i)))?
            .ok_or_else(|| anyhow::anyhow!("missing record"))?;
        meta += (stored.len() - VALUE_BYTES) as u64;
    }
    emit(
        &Metric {
            suite: "local",
            metric: "meta_bytes_per_record",
            value: meta as f64 / sample as f64,
            unit: "bytes",
            reference: None,
            ratio: None,
            target: "<= 24",
        },
        json,
    )?;
    drop((raw, engine));

    // put_<n>w for each other writer count.
    for &n in args.writers.iter().filter(|n| **n != 1) {
        let raw = raw_db(&tmp.path().join(format!("raw-{n}w")))?;
        let reference = parallel(ops, n, |from, to| {
            (from..to).try_for_each(|i| raw.put_opt(key(i), value(i), &wo).map_err(Into::into))
        })?;
        let engine = Engine::open(tmp.path().join(format!("engine-{n}w")), config.clone())?;
        let measured = parallel(ops, n, |from, to| {
            (from..to)
                .try_for_each(|i| engine.put(&key(i), &value(i)).map(drop).map_err(Into::into))
        })?;
        // A name per count: the process is short-lived, the names few.
        let name: &'static str = Box::leak(format!("put_{n}w").into_boxed_str());
        emit(
            &Metric::with_reference("local", name, measured, "ops/s", reference, ">= 0.75"),
            json,
        )?;
        drop((raw, engine));
    }

    if args.overwrite_keys > 0 {
        overwrites(&args, &config, &wo, ops, tmp.path())?;
    }

    // counter_add: reference is a raw read-modify-write of an 8-byte integer.
    super::report::setup(format!(
        "{ops} increments of {COUNTER_KEYS} counters, {}, 1 writer",
        args.durability
    ));
    let raw = raw_db(&tmp.path().join("raw-counter"))?;
    let reference = rate(ops, || {
        for i in 0..ops {
            let k = key(i % COUNTER_KEYS);
            let current = raw
                .get_pinned(k)?
                .and_then(|b| <[u8; 8]>::try_from(&b[..]).ok())
                .map_or(0, i64::from_le_bytes);
            raw.put_opt(k, (current + 1).to_le_bytes(), &wo)?;
        }
        Ok(())
    })?;
    let engine = Engine::open(tmp.path().join("engine-counter"), config)?;
    let measured = rate(ops, || {
        (0..ops).try_for_each(|i| {
            engine
                .counter_add(&key(i % COUNTER_KEYS), 1)
                .map(drop)
                .map_err(Into::into)
        })
    })?;
    let total: i64 = (0..COUNTER_KEYS)
        .map(|k| engine.get_counter(&key(k)).ok().flatten().unwrap_or(0))
        .sum();
    anyhow::ensure!(
        total as u64 == ops,
        "counter total {total} != {ops} increments"
    );
    emit(
        &Metric::with_reference(
            "local",
            "counter_add",
            measured,
            "ops/s",
            reference,
            ">= 0.8",
        ),
        json,
    )?;
    Ok(())
}

/// `overwrite_1w` and `overwrite_4w`: `ops` overwrites of keys drawn at random from
/// `--overwrite-keys` written first, by the engine and by raw RocksDB (a working set larger than
/// both caches: an engine that reads a record before writing it pays a disk read here).
fn overwrites(
    args: &Args,
    config: &Config,
    wo: &WriteOptions,
    ops: u64,
    dir: &Path,
) -> anyhow::Result<()> {
    let keys = args.overwrite_keys;
    super::report::setup(format!(
        "{ops} overwrites of {keys} keys, {VALUE_BYTES}-byte values, {}, 1 or 4 writers",
        args.durability
    ));
    let raw = raw_db(&dir.join("raw-overwrite"))?;
    let engine = Engine::open(dir.join("engine-overwrite"), config.clone())?;
    // Loaded in batches (not measured).
    let mut start = 0;
    while start < keys {
        let end = (start + 10_000).min(keys);
        let mut raw_batch = rocksdb::WriteBatch::default();
        let mut batch = meridian::Batch::new();
        for i in start..end {
            raw_batch.put(key(i), value(i));
            batch = batch.put(key(i).to_vec(), value(i).to_vec());
        }
        raw.write(raw_batch)?;
        engine.write(batch)?;
        start = end;
    }
    engine.flush()?;
    raw.flush()?;
    for (name, writers) in [("overwrite_1w", 1), ("overwrite_4w", 4)] {
        let reference = parallel(ops, writers, |from, to| {
            (from..to).try_for_each(|i| {
                raw.put_opt(key(shuffled(keys, i)), value(i), wo)
                    .map_err(Into::into)
            })
        })?;
        let measured = parallel(ops, writers, |from, to| {
            (from..to).try_for_each(|i| {
                engine
                    .put(&key(shuffled(keys, i)), &value(i))
                    .map(drop)
                    .map_err(Into::into)
            })
        })?;
        emit(
            &Metric::with_reference("local", name, measured, "ops/s", reference, ">= 0.7"),
            args.json,
        )?;
    }
    Ok(())
}

/// This suite's keys.
fn key(i: u64) -> [u8; 16] {
    prefixed_key(b"key-", i)
}
