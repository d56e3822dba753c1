//! Crash safety: a child process writes continuously and reports every acknowledged write; it
//! is SIGKILLed at random moments (100 times by default, `MERIDIAN_CRASH_KILLS` to change).
//! After every reopen each acknowledged write is present and no sequence number is reused.

#![allow(clippy::unwrap_used)]

use meridian::{Config, Engine};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn acknowledged_writes_survive_sigkill_and_sequences_are_never_reused() {
    let kills: usize = std::env::var("MERIDIAN_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let seed = std::env::var("MERIDIAN_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("crash test seed {seed} (replay: MERIDIAN_CRASH_SEED={seed})");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = env!("CARGO_BIN_EXE_crash_writer");

    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    let mut seqs_seen: BTreeMap<u64, String> = BTreeMap::new();
    let mut counter_acks = 0u64;
    // Increments that may have committed unacknowledged: one per writer thread per kill.
    let mut counter_in_flight = 0u64;
    let mut max_seq_before_run = 0u64;
    let mut killed_mid_write = 0usize;

    for run in 0..kills {
        let threads = 1 + (rng.next() % 4) as usize;
        counter_in_flight += threads as u64;
        let mut child = Command::new(exe)
            .args([
                dir.path().to_str().expect("utf-8 path"),
                &threads.to_string(),
                &run.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn crash_writer");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let ready = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("writer did not start");
        assert!(ready.starts_with("ready"), "{ready}");
        let run_for = Duration::from_millis(5 + rng.next() % 120);
        let started = Instant::now();
        while started.elapsed() < run_for {
            std::thread::sleep(Duration::from_millis(1));
        }
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("wait");
        assert!(!status.success(), "writer exited on its own: {status}");
        reader.join().expect("reader thread");

        let mut run_acks = 0;
        for line in rx.try_iter() {
            let parts: Vec<&str> = line.split(' ').collect();
            let (seq, what) = match parts.as_slice() {
                ["put", key, seq] => {
                    let seq: u64 = seq.parse().expect("seq");
                    acked.insert(key.to_string(), seq);
                    (seq, key.to_string())
                }
                ["cnt", seq] => {
                    counter_acks += 1;
                    (seq.parse().expect("seq"), "total".to_string())
                }
                _ => panic!("unexpected line {line:?}"),
            };
            assert!(
                seq > max_seq_before_run,
                "run {run}: seq {seq} reused (earlier runs reached {max_seq_before_run})"
            );
            if let Some(prev) = seqs_seen.insert(seq, what.clone()) {
                panic!("seq {seq} given to both {prev} and {what}");
            }
            run_acks += 1;
        }
        if run_acks > 0 {
            killed_mid_write += 1;
        }

        let engine = Engine::open(dir.path(), Config::default()).expect("reopen after kill");
        let last = engine.replication().last_seq();
        let max_acked = seqs_seen.keys().next_back().copied().unwrap_or(0);
        assert!(
            last >= max_acked,
            "run {run}: reopened at seq {last}, below acknowledged {max_acked}"
        );
        for (key, _) in acked
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{run}-")))
        {
            let got = engine.get(key.as_bytes()).expect("read").map(|s| s.values);
            assert_eq!(
                got,
                Some(vec![format!("v-{key}").into_bytes()]),
                "run {run}: acknowledged {key} lost"
            );
        }
        let total = engine.get_counter(b"total").expect("counter").unwrap_or(0);
        assert!(
            total as u64 >= counter_acks,
            "run {run}: counter {total} < {counter_acks} acknowledged increments"
        );
        assert!(
            total as u64 <= counter_acks + counter_in_flight,
            "run {run}: counter {total} > {counter_acks} acknowledged increments and \
             {counter_in_flight} that may have been in flight at the kills"
        );
        max_seq_before_run = last;
    }

    let engine = Engine::open(dir.path(), Config::default()).expect("final reopen");
    for key in acked.keys() {
        assert!(
            engine.get(key.as_bytes()).expect("read").is_some(),
            "acknowledged {key} lost by the end"
        );
    }
    // The origin's log is contiguous: every sequence number up to the last one has an entry.
    let seqs = engine
        .store()
        .log_seqs(engine.origin_id(), 1, engine.replication().last_seq())
        .expect("log");
    let missing: Vec<u64> = (1..=engine.replication().last_seq())
        .filter(|s| seqs.binary_search(s).is_err())
        .take(10)
        .collect();
    assert!(
        missing.is_empty(),
        "holes in the replica's log at {missing:?} (last {})",
        engine.replication().last_seq()
    );
    eprintln!(
        "{kills} kills ({killed_mid_write} after acknowledged writes), {} acknowledged puts, {counter_acks} counter increments, last seq {}",
        acked.len(),
        engine.replication().last_seq()
    );
    assert!(
        killed_mid_write >= kills / 2,
        "too few runs acknowledged anything before the kill"
    );
}
