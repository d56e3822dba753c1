//! Writes continuously to an engine and prints one line per acknowledged write, until killed.
//!
//! Usage: `crash_writer DIR THREADS RUN [wal|sync [SYNC_EVERY_MS]]` (durability `wal` by
//! default; with `SYNC_EVERY_MS`, a thread syncs the WAL that often). Lines: `ready ORIGIN` once
//! open, then `put RUN-T-N SEQ` or `cnt SEQ`.

use anyhow::Context;
use meridian::{Config, Durability, Engine};
use std::io::Write;
use std::sync::{Arc, Mutex};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).context("usage: crash_writer DIR THREADS RUN")?;
    let threads: usize = args.get(2).context("THREADS")?.parse()?;
    let run: u64 = args.get(3).context("RUN")?.parse()?;
    let durability = match args.get(4).map(String::as_str) {
        None | Some("wal") => Durability::Wal,
        Some("sync") => Durability::Sync,
        Some(other) => anyhow::bail!("durability {other:?}: wal or sync"),
    };
    let config = Config {
        durability,
        ..Config::default()
    };
    let engine = Engine::open(dir, config)?;
    if let Some(every) = args.get(5) {
        let every = std::time::Duration::from_millis(every.parse()?);
        let engine = engine.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(every);
            if engine.store().sync_wal().is_err() {
                return;
            }
        });
    }
    let out = Arc::new(Mutex::new(std::io::stdout()));
    {
        let mut o = out.lock().map_err(|_| anyhow::anyhow!("stdout lock"))?;
        writeln!(o, "ready {}", engine.origin_id().0)?;
        o.flush()?;
    }
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let engine = engine.clone();
            let out = out.clone();
            std::thread::spawn(move || -> anyhow::Result<()> {
                for n in 0u64.. {
                    let line = if n % 10 == 9 {
                        let token = engine.counter_add(b"total", 1)?;
                        format!("cnt {}\n", token.get(engine.origin_id()))
                    } else {
                        let key = format!("{run}-{t}-{n}");
                        let token = engine.put(key.as_bytes(), format!("v-{key}").as_bytes())?;
                        format!("put {key} {}\n", token.get(engine.origin_id()))
                    };
                    let mut o = out.lock().map_err(|_| anyhow::anyhow!("stdout lock"))?;
                    o.write_all(line.as_bytes())?;
                    o.flush()?;
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
    }
    Ok(())
}
