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
}

const VALUE_BYTES: usize = 100;
const WRITERS: u64 = 4;
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

fn parallel(ops: u64, work: impl Fn(u64, u64) -> anyhow::Result<()> + Sync) -> anyhow::Result<f64> {
    rate(ops, || {
        std::thread::scope(|s| {
            let per = ops / WRITERS;
            let handles: Vec<_> = (0..WRITERS)
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
    let ops = args.ops.max(WRITERS);
    let tmp = tempfile::tempdir()?;
    let config = Config {
        durability,
        ..Config::default()
    };
    let mut wo = WriteOptions::default();
    wo.set_sync(sync);
    let json = args.json;
    header(json);

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
        &Metric::with_reference("local", "put_1w", measured, "ops/s", reference, ">= 0.6"),
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
        &Metric::with_reference("local", "get", measured, "ops/s", reference, ">= 0.8"),
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

    // put_4w
    let raw = raw_db(&tmp.path().join("raw-4w"))?;
    let reference = parallel(ops, |from, to| {
        (from..to).try_for_each(|i| raw.put_opt(key(i), value(i), &wo).map_err(Into::into))
    })?;
    let engine = Engine::open(tmp.path().join("engine-4w"), config.clone())?;
    let measured = parallel(ops, |from, to| {
        (from..to).try_for_each(|i| engine.put(&key(i), &value(i)).map(drop).map_err(Into::into))
    })?;
    emit(
        &Metric::with_reference("local", "put_4w", measured, "ops/s", reference, ">= 0.8"),
        json,
    )?;
    drop((raw, engine));

    // counter_add: reference is a raw read-modify-write of an 8-byte integer.
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
        &Metric::with_reference("local", "counter_add", measured, "ops/s", reference, "-"),
        json,
    )?;
    Ok(())
}

/// This suite's keys.
fn key(i: u64) -> [u8; 16] {
    prefixed_key(b"key-", i)
}
