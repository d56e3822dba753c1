//! Cache-aside in three regions (`make example-cache-aside`): a handler, `get_profile`, reads a
//! user's profile from Meridian; on a miss it reads the slow source of truth (50 ms a read,
//! counted) and writes the profile into Meridian with a one-hour TTL, value and TTL in one
//! atomic batch, so a region that has applied the write hits it. Every region keeps a small
//! in-process cache in front of Meridian; a change-feed consumer per region evicts an entry
//! when the feed hands out a change of its key. An update in the source goes with a deletion
//! of the cache key in the writer's region, which the feed carries to every region's consumer:
//! no region serves the old profile once its feed has handed out the deletion. A key with a
//! two-second TTL is a miss again, in every region, once the TTL has passed. Three embedded
//! engines replicating over QUIC on loopback, configured by `meridian local-cluster` (the
//! directory is the first argument). Exits non-zero when what it shows does not hold.

use meridian::{Batch, CausalToken, Engine, Feed, FeedEvent, ReadValue};
use meridian_config::node_config::NodeConfig;
use meridian_runtime::BackgroundRuntime;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// The prefix of the cache keys (`profile:<user>`) and of the feed the consumers follow.
const PROFILES: &[u8] = b"profile:";
/// How long Meridian keeps a cached profile.
const CACHE_TTL: Duration = Duration::from_secs(3600);
/// How long a region trusts its in-process entry at most, whatever Meridian's TTL says: a bound
/// on staleness should its feed consumer stall.
const LOCAL_MAX_AGE: Duration = Duration::from_secs(30);
/// What one read of the source of truth costs.
const SOURCE_DELAY: Duration = Duration::from_millis(50);
/// The longest wait for replication or a feed.
const WAIT: Duration = Duration::from_secs(10);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn key(user: &str) -> Vec<u8> {
    [PROFILES, user.as_bytes()].concat()
}

/// The source of truth (a database of record, say): slow, and its reads counted.
#[derive(Default)]
struct Source {
    profiles: Mutex<HashMap<String, String>>,
    reads: AtomicU64,
}

impl Source {
    fn load(&self, user: &str) -> anyhow::Result<String> {
        std::thread::sleep(SOURCE_DELAY);
        self.reads.fetch_add(1, Ordering::SeqCst);
        lock(&self.profiles)
            .get(user)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no user {user}"))
    }

    fn update(&self, user: &str, profile: &str) {
        lock(&self.profiles).insert(user.to_string(), profile.to_string());
    }

    fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }
}

/// Where a profile came from.
#[derive(Debug, PartialEq, Eq)]
enum Served {
    /// The region's in-process cache.
    Local,
    /// Meridian, in the region.
    Meridian,
    /// The source (a miss), then written into Meridian by the write `token` names.
    Source(CausalToken),
}

struct Reply {
    profile: String,
    served: Served,
    took: Duration,
}

impl Reply {
    fn fill(&self) -> anyhow::Result<&CausalToken> {
        match &self.served {
            Served::Source(token) => Ok(token),
            other => anyhow::bail!("expected a miss, got {other:?}"),
        }
    }
}

/// A profile in a region's in-process cache, and until when it is served.
struct Entry {
    profile: String,
    until: Instant,
}

/// A region's in-process cache, kept by its feed consumer.
#[derive(Default)]
struct Local {
    entries: HashMap<Vec<u8>, Entry>,
    /// Changes the feed handed out: a fill that raced with one is checked against Meridian
    /// again before it enters the cache (its value may be what the change replaced).
    generation: u64,
    /// Everything the consumer has handled (its feed's position when idle).
    handled: CausalToken,
    evictions: u64,
}

/// One region: its engine and replication, its in-process cache and the feed consumer
/// keeping it.
struct Region {
    name: &'static str,
    engine: Engine,
    local: Arc<Mutex<Local>>,
    stop: Arc<AtomicBool>,
    consumer: Option<JoinHandle<anyhow::Result<()>>>,
    runtime: Option<BackgroundRuntime>,
    /// Requests the handler served.
    requests: AtomicU64,
}

/// A last-writer-wins value among a key's values.
fn lww(values: &[ReadValue]) -> Option<&[u8]> {
    values.iter().find_map(|v| match v {
        ReadValue::Lww(l) => Some(l.value.as_slice()),
        _ => None,
    })
}

/// The feed consumer: evicts the entry of every key the feed hands out a change of, unless the
/// change holds the value cached (the region's own fill, or a repeat).
fn consume(mut feed: Feed, local: Arc<Mutex<Local>>, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    while !stop.load(Ordering::SeqCst) {
        let event = feed.next_timeout(Duration::from_millis(100))?;
        let mut local = lock(&local);
        let Some(event) = event else {
            // Caught up: every change up to the feed's position has been handled.
            local.handled = feed.position();
            continue;
        };
        local.generation += 1;
        match event {
            FeedEvent::Change(change) => {
                let same = match (local.entries.get(&change.key), lww(&change.values)) {
                    (Some(entry), Some(value)) => entry.profile.as_bytes() == value,
                    _ => false,
                };
                if !same && local.entries.remove(&change.key).is_some() {
                    local.evictions += 1;
                }
                local.handled.merge(&change.token);
            }
            // The feed could not follow every change: anything cached may be stale.
            FeedEvent::Reset { token, .. } => {
                local.evictions += local.entries.len() as u64;
                local.entries.clear();
                local.handled.merge(&token);
            }
        }
    }
    Ok(())
}

impl Region {
    /// Opens the replica configured in `DIR/<replica>.toml`, in region `name`.
    fn open(dir: &Path, replica: &str, name: &'static str) -> anyhow::Result<Region> {
        let config = NodeConfig::load(&dir.join(format!("{replica}.toml")))?;
        let engine = Engine::open(&config.data_dir, config.engine_config())?;
        let runtime = BackgroundRuntime::start(engine.clone(), config.runtime())?;
        let local = Arc::new(Mutex::new(Local::default()));
        let stop = Arc::new(AtomicBool::new(false));
        // Opened here, before any request: it hands out every change applied from now on.
        let feed = engine.feed(PROFILES, None)?;
        let consumer = {
            let (local, stop) = (Arc::clone(&local), Arc::clone(&stop));
            std::thread::Builder::new()
                .name(format!("feed-{name}"))
                .spawn(move || consume(feed, local, stop))?
        };
        Ok(Region {
            name,
            engine,
            local,
            stop,
            consumer: Some(consumer),
            runtime: Some(runtime),
            requests: AtomicU64::new(0),
        })
    }

    /// The handler: a profile, from the in-process cache, else Meridian, else the source
    /// (cached in Meridian for an hour).
    fn get_profile(&self, source: &Source, user: &str) -> anyhow::Result<Reply> {
        self.get_profile_ttl(source, user, CACHE_TTL)
    }

    fn get_profile_ttl(&self, source: &Source, user: &str, ttl: Duration) -> anyhow::Result<Reply> {
        let start = Instant::now();
        self.requests.fetch_add(1, Ordering::SeqCst);
        let key = key(user);
        let mut generation = {
            let mut local = lock(&self.local);
            match local.entries.get(&key) {
                Some(entry) if entry.until > start => {
                    return Ok(Reply {
                        profile: entry.profile.clone(),
                        served: Served::Local,
                        took: start.elapsed(),
                    });
                }
                Some(_) => {
                    local.entries.remove(&key);
                }
                None => {}
            }
            local.generation
        };
        let (profile, served, until) = match self.read_meridian(&key)? {
            Some((profile, until)) => (profile, Served::Meridian, until),
            None => {
                let profile = source.load(user)?;
                // The value and its TTL in one atomic write: no region reads it without expiry.
                let token = self.engine.write(
                    Batch::new()
                        .lww_set(key.clone(), profile.as_bytes())
                        .ttl(key.clone(), ttl),
                )?;
                // The TTL runs from the write's time, which is later than `start`.
                (profile, Served::Source(token), start + ttl)
            }
        };
        let took = start.elapsed();
        // Kept in process unless the feed handed out a change meanwhile: then Meridian, which
        // reflects that change, is read again first.
        let mut cached = Some((profile.clone(), until));
        for _ in 0..3 {
            let Some((value, until)) = cached else { break };
            let mut local = lock(&self.local);
            if local.generation == generation {
                let until = until.min(Instant::now() + LOCAL_MAX_AGE);
                let entry = Entry {
                    profile: value,
                    until,
                };
                local.entries.insert(key, entry);
                break;
            }
            generation = local.generation;
            drop(local);
            cached = self.read_meridian(&key)?;
        }
        Ok(Reply {
            profile,
            served,
            took,
        })
    }

    /// The profile Meridian holds here and until when it does, if it holds one.
    fn read_meridian(&self, key: &[u8]) -> anyhow::Result<Option<(String, Instant)>> {
        let Some(hit) = self.engine.get_lww(key)? else {
            return Ok(None);
        };
        let until = match self.engine.expires_at(key)? {
            Some(at) => Instant::now() + at.duration_since(SystemTime::now()).unwrap_or_default(),
            None => Instant::now() + LOCAL_MAX_AGE,
        };
        Ok(Some((String::from_utf8(hit.value)?, until)))
    }

    fn cached(&self, user: &str) -> bool {
        lock(&self.local).entries.contains_key(&key(user))
    }

    /// Waits until this region has applied `token` and its feed consumer has handled it.
    fn settle(&self, token: &CausalToken) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.engine.wait_covers(token, WAIT),
            "{} did not apply the write within {WAIT:?}",
            self.name
        );
        self.wait_handled(token)
    }

    /// Waits until the feed consumer has handled every change `token` names.
    fn wait_handled(&self, token: &CausalToken) -> anyhow::Result<()> {
        let deadline = Instant::now() + WAIT;
        while !token.is_covered_by(&lock(&self.local).handled.0) {
            anyhow::ensure!(
                Instant::now() < deadline,
                "{}'s feed did not hand out the change within {WAIT:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }

    /// Stops the feed consumer (reporting its failure, if any) and replication.
    fn close(mut self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(consumer) = self.consumer.take() {
            consumer
                .join()
                .map_err(|_| anyhow::anyhow!("{}'s feed consumer panicked", self.name))??;
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown();
        }
        Ok(())
    }
}

fn show(region: &Region, user: &str, reply: &Reply) {
    let how = match reply.served {
        Served::Local => "hit, in-process cache",
        Served::Meridian => "hit, Meridian",
        Served::Source(_) => "miss: source read, cached in Meridian",
    };
    println!(
        "  {:<13} {user:<6} {:>9.1?}  {how:<38} {}",
        region.name, reply.took, reply.profile
    );
}

fn expect(
    region: &Region,
    source: &Source,
    user: &str,
    served: &str,
    profile: &str,
    reads: u64,
    reply: anyhow::Result<Reply>,
) -> anyhow::Result<Reply> {
    let reply = reply?;
    show(region, user, &reply);
    let got = match reply.served {
        Served::Local => "local",
        Served::Meridian => "meridian",
        Served::Source(_) => "source",
    };
    anyhow::ensure!(
        got == served,
        "{}: {user} came from {got}, expected {served}",
        region.name
    );
    anyhow::ensure!(
        reply.profile == profile,
        "{}: {user} read {}, expected {profile}",
        region.name,
        reply.profile
    );
    anyhow::ensure!(
        source.reads() == reads,
        "{} source reads, expected {reads}",
        source.reads()
    );
    Ok(reply)
}

/// How long from now until `at`, in whole seconds (negative: past).
fn from_now(at: SystemTime) -> f64 {
    match at.duration_since(SystemTime::now()) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: cache-aside DIR"))?;
    let dir = Path::new(&dir);
    let us = Region::open(dir, "use1", "us-east")?;
    let eu = Region::open(dir, "euw1", "eu-west")?;
    let ap = Region::open(dir, "apn1", "ap-northeast")?;
    let source = Source::default();
    let alice = r#"{"name":"Alice","plan":"free"}"#;
    let alice_pro = r#"{"name":"Alice","plan":"pro"}"#;
    let bob = r#"{"name":"Bob","plan":"free"}"#;
    source.update("alice", alice);
    source.update("bob", bob);

    println!("get_profile reads the region's in-process cache, Meridian, then the source (50 ms),");
    println!("caching in Meridian for an hour; a feed consumer per region evicts changed entries:");
    let r = us.get_profile(&source, "alice");
    let miss = expect(&us, &source, "alice", "source", alice, 1, r)?;
    let fill = miss.fill()?.clone();
    let at = us
        .engine
        .expires_at(&key("alice"))?
        .ok_or_else(|| anyhow::anyhow!("the cached profile has no expiry"))?;
    let left = from_now(at);
    println!("  the cached profile expires in {left:.0} s (one hour)");
    anyhow::ensure!(
        (CACHE_TTL.as_secs_f64() - 60.0..=CACHE_TTL.as_secs_f64() + 1.0).contains(&left),
        "the cached profile expires in {left} s, not in about an hour"
    );

    let mut hits = Vec::new();
    for region in [&eu, &ap] {
        region.settle(&fill)?;
        let r = region.get_profile(&source, "alice");
        hits.push(expect(region, &source, "alice", "meridian", alice, 1, r)?.took);
        let there = region.engine.expires_at(&key("alice"))?;
        anyhow::ensure!(
            there == Some(at),
            "{} has the profile expire at {there:?}, us-east at {at:?}",
            region.name
        );
    }
    us.settle(&fill)?;
    let mut local_hits = Vec::new();
    for region in [&us, &eu, &ap] {
        let r = region.get_profile(&source, "alice");
        local_hits.push(expect(region, &source, "alice", "local", alice, 1, r)?.took);
    }
    let hit = hits.iter().max().copied().unwrap_or_default();
    let local_hit = local_hits.iter().max().copied().unwrap_or_default();
    println!(
        "  a miss took {:.1?}, a Meridian hit at most {hit:.1?}, an in-process hit at most {local_hit:.1?}",
        miss.took
    );
    anyhow::ensure!(
        hit < miss.took && local_hit < miss.took,
        "a hit was not faster than a miss"
    );

    println!(
        "alice goes pro: us-east updates the source and deletes the cache key; the feed evicts:"
    );
    source.update("alice", alice_pro);
    let deleted = Instant::now();
    let delete = us.engine.delete(&key("alice"))?;
    for region in [&us, &eu, &ap] {
        region.wait_handled(&delete)?;
        anyhow::ensure!(
            !region.cached("alice"),
            "{} still holds alice after its feed handed out the deletion",
            region.name
        );
    }
    println!(
        "  every region's in-process entry was evicted within {:.1?} of the deletion",
        deleted.elapsed()
    );
    let r = eu.get_profile(&source, "alice");
    let refill = expect(&eu, &source, "alice", "source", alice_pro, 2, r)?;
    let refill = refill.fill()?.clone();
    for region in [&us, &ap] {
        region.settle(&refill)?;
        let r = region.get_profile(&source, "alice");
        expect(region, &source, "alice", "meridian", alice_pro, 2, r)?;
    }

    println!("bob is cached with a 2 s TTL: a miss again, in every region, once it has passed:");
    let short = Duration::from_secs(2);
    let r = ap.get_profile_ttl(&source, "bob", short);
    let fill = expect(&ap, &source, "bob", "source", bob, 3, r)?;
    let fill = fill.fill()?.clone();
    let at = ap
        .engine
        .expires_at(&key("bob"))?
        .ok_or_else(|| anyhow::anyhow!("bob's cached profile has no expiry"))?;
    let left = from_now(at);
    anyhow::ensure!(
        (0.0..=short.as_secs_f64() + 1.0).contains(&left),
        "bob's cached profile expires in {left} s, not in about {short:?}"
    );
    us.settle(&fill)?;
    eu.settle(&fill)?;
    let r = us.get_profile(&source, "bob");
    expect(&us, &source, "bob", "meridian", bob, 3, r)?;
    let r = ap.get_profile(&source, "bob");
    expect(&ap, &source, "bob", "local", bob, 3, r)?;
    std::thread::sleep(Duration::from_secs_f64(from_now(at).max(0.0)) + Duration::from_millis(200));
    for region in [&us, &eu, &ap] {
        anyhow::ensure!(
            region.engine.get_lww(&key("bob"))?.is_none(),
            "{} still reads bob's profile after its TTL",
            region.name
        );
    }
    println!(
        "  {:.1} s later no region reads bob's key in Meridian:",
        left + 0.2
    );
    let r = us.get_profile_ttl(&source, "bob", short);
    expect(&us, &source, "bob", "source", bob, 4, r)?;

    let regions = [&us, &eu, &ap];
    let requests: u64 = regions
        .iter()
        .map(|r| r.requests.load(Ordering::SeqCst))
        .sum();
    let evictions: Vec<String> = regions
        .iter()
        .map(|r| format!("{} {}", r.name, lock(&r.local).evictions))
        .collect();
    println!(
        "{} source reads for {requests} requests; in-process entries the feed evicted: {}",
        source.reads(),
        evictions.join(", ")
    );
    for region in [us, eu, ap] {
        region.close()?;
    }
    Ok(())
}
