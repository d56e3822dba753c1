//! `meridian-lab bench ffi`: the cost of the C ABI. The same single-threaded operations, 100-byte
//! values, through the C ABI's functions (`ffi_put`: LWW writes, `ffi_get`: LWW reads,
//! `ffi_batch_put`: batches of 100 LWW writes) against the Rust API in the same run (target
//! ratio ≥ 0.9; medians of three alternating rounds); then the same three from Python over
//! `libmeridian.so` against the C ABI's figures (reported, no target).
// Calls the C ABI's `unsafe extern "C"` functions, as a C program would.
#![allow(unsafe_code)]

use super::prefixed_key;
use super::report::{emit, header, Metric};
use meridian::{Batch, Config, Engine};
use meridian_c::batch::*;
use meridian_c::buffer::{meridian_buffer_free, MeridianBuffer};
use meridian_c::engine::*;
use meridian_c::status::MeridianStatus;
use std::ffi::CString;
use std::time::Instant;

/// Options of `bench ffi`.
#[derive(clap::Args)]
pub struct Args {
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Operations per measurement.
    #[arg(long, default_value_t = 100_000)]
    ops: u64,
}

const VALUE: [u8; 100] = [b'v'; 100];
const BATCH: u64 = 100;
/// Rounds of each measurement.
const ROUNDS: usize = 3;

/// The median of each of the three rates over rounds.
fn medians(rounds: &[[f64; 3]]) -> [f64; 3] {
    let mut out = [0.0; 3];
    for (i, slot) in out.iter_mut().enumerate() {
        let mut v: Vec<f64> = rounds.iter().map(|r| r[i]).collect();
        v.sort_by(f64::total_cmp);
        *slot = v[v.len() / 2];
    }
    out
}

fn key(i: u64) -> [u8; 16] {
    prefixed_key(b"ffi-", i)
}

fn rate(ops: u64, f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let started = Instant::now();
    f()?;
    Ok(ops as f64 / started.elapsed().as_secs_f64())
}

fn ok(status: MeridianStatus) -> anyhow::Result<()> {
    anyhow::ensure!(
        status == MeridianStatus::MeridianOk,
        "C ABI call failed: {status:?}"
    );
    Ok(())
}

/// The three rates through the Rust API.
fn rust_rates(n: u64, dir: &std::path::Path) -> anyhow::Result<[f64; 3]> {
    let e = Engine::open(dir, Config::default())?;
    let put = rate(n, || {
        for i in 0..n {
            e.lww_set(&key(i), &VALUE)?;
        }
        Ok(())
    })?;
    let get = rate(n, || {
        for i in 0..n {
            anyhow::ensure!(e.get_lww(&key(i))?.is_some());
        }
        Ok(())
    })?;
    let batch = rate(n, || {
        for from in (0..n).step_by(BATCH as usize) {
            let b = (from..(from + BATCH).min(n))
                .fold(Batch::new(), |b, i| b.lww_set(key(n + i), VALUE));
            e.write(b)?;
        }
        Ok(())
    })?;
    Ok([put, get, batch])
}

/// The three rates through the C ABI's functions.
fn c_rates(n: u64, dir: &std::path::Path) -> anyhow::Result<[f64; 3]> {
    let path = CString::new(dir.to_string_lossy().into_owned())?;
    let mut e = std::ptr::null_mut();
    ok(unsafe { meridian_engine_open(path.as_ptr(), &mut e) })?;
    let null = std::ptr::null_mut();
    let put = rate(n, || {
        for i in 0..n {
            let k = key(i);
            ok(unsafe { meridian_lww_set(e, k.as_ptr(), 16, VALUE.as_ptr(), 100, null) })?;
        }
        Ok(())
    })?;
    let get = rate(n, || {
        for i in 0..n {
            let k = key(i);
            let mut b = MeridianBuffer {
                data: std::ptr::null_mut(),
                len: 0,
            };
            ok(unsafe { meridian_lww_get(e, k.as_ptr(), 16, &mut b) })?;
            ok(unsafe { meridian_buffer_free(&mut b) })?;
        }
        Ok(())
    })?;
    let mut batch = std::ptr::null_mut();
    ok(unsafe { meridian_batch_new(&mut batch) })?;
    let batched = rate(n, || {
        for from in (0..n).step_by(BATCH as usize) {
            for i in from..(from + BATCH).min(n) {
                let k = key(n + i);
                ok(unsafe { meridian_batch_lww_set(batch, k.as_ptr(), 16, VALUE.as_ptr(), 100) })?;
            }
            ok(unsafe { meridian_batch_commit(e, batch, null) })?;
        }
        Ok(())
    })?;
    ok(meridian_batch_free(batch))?;
    ok(meridian_engine_close(e))?;
    Ok([put, get, batched])
}

/// The three rates from Python over `libmeridian.so` (next to this executable), if Python
/// and the library are there.
fn python_rates(n: u64, dir: &std::path::Path) -> Option<[f64; 4]> {
    let exe = std::env::current_exe().ok()?;
    let lib = exe.parent()?.join("libmeridian.so");
    let package = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bindings/python");
    if !lib.exists() || !package.exists() {
        return None;
    }
    let script = format!(
        r#"
import json, time, meridian
n = {n}
v = b"v" * 100
k = lambda i: b"ffi-%012d" % i
e = meridian.Engine.open({dir:?})
t = time.perf_counter()
for i in range(n): e.lww_set(k(i), v)
put = n / (time.perf_counter() - t)
t = time.perf_counter()
for i in range(n): e.lww_get(k(i))
get = n / (time.perf_counter() - t)
t = time.perf_counter()
for f in range(0, n, 100): e.lww_get_many([k(i) for i in range(f, min(f + 100, n))])
get_many = n / (time.perf_counter() - t)
t = time.perf_counter()
for f in range(0, n, 100):
    b = meridian.Batch()
    for i in range(f, min(f + 100, n)): b.lww_set(k(n + i), v)
    e.commit(b)
batch = n / (time.perf_counter() - t)
e.close()
print(json.dumps([put, get, batch, get_many]))
"#,
        dir = dir.to_string_lossy()
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .env("PYTHONPATH", &package)
        .env("MERIDIAN_LIB", &lib)
        .output()
        .ok()?;
    let rates: Vec<f64> = serde_json::from_slice(&out.stdout).ok()?;
    Some([
        *rates.first()?,
        *rates.get(1)?,
        *rates.get(2)?,
        *rates.get(3)?,
    ])
}

/// Runs the suite.
pub fn run(args: Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let n = args.ops;
    // Rounds alternate between the two, each on fresh directories; medians are reported.
    let mut rust_rounds = Vec::new();
    let mut c_rounds = Vec::new();
    for round in 0..ROUNDS {
        rust_rounds.push(rust_rates(n, &dir.path().join(format!("rust-{round}")))?);
        c_rounds.push(c_rates(n, &dir.path().join(format!("c-{round}")))?);
    }
    let rust = medians(&rust_rounds);
    let c = medians(&c_rounds);
    header(args.json);
    super::report::setup(format!("{} ops per round, one thread", args.ops));
    let names = ["ffi_put", "ffi_get", "ffi_batch_put"];
    for i in 0..3 {
        emit(
            &Metric::with_reference("ffi", names[i], c[i], "ops/s", rust[i], ">= 0.9"),
            args.json,
        )?;
    }
    // Python against the C ABI: single calls (the call's overhead, about 1 µs in ctypes, is
    // near a read's whole cost), and batched calls (a batch of puts, 100 gets in one call:
    // `lww_get_many`) where that overhead is shared.
    let python = [
        ("python_put", 0, "-"),
        ("python_get", 1, "-"),
        ("python_batch_put", 2, ">= 0.6"),
        ("python_get_many", 1, ">= 0.6"),
    ];
    match python_rates(n / 10, &dir.path().join("python")) {
        Some(py) => {
            for (i, (name, reference, target)) in python.into_iter().enumerate() {
                emit(
                    &Metric::with_reference("ffi", name, py[i], "ops/s", c[reference], target),
                    args.json,
                )?;
            }
        }
        None => eprintln!("python3 or libmeridian.so not found: the Python figures are skipped"),
    }
    Ok(())
}
