//! Fan-out from a change feed (`make example-fanout`): a consumer keeps a derived view, the
//! number of items per category, from the feed of `item:` keys. Delivery is at least once, so
//! the view is kept as a function of each key's latest value (a change handed out twice moves
//! nothing the second time); when the consumer's region fails, it resumes in another region
//! from the last token it handled and ends with the view a scan of the data gives. Three
//! embedded engines replicating over QUIC on loopback, configured by `meridian local-cluster`
//! (the directory is the first argument).

use meridian::{CausalToken, Engine, Feed, FeedEvent, ReadValue};
use meridian_config::node_config::NodeConfig;
use meridian_runtime::BackgroundRuntime;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

const ITEMS: &[u8] = b"item:";

fn open(dir: &Path, name: &str) -> anyhow::Result<(Engine, BackgroundRuntime)> {
    let config = NodeConfig::load(&dir.join(format!("{name}.toml")))?;
    let engine = Engine::open(&config.data_dir, config.engine_config())?;
    let runtime = BackgroundRuntime::start(engine.clone(), config.runtime())?;
    Ok((engine, runtime))
}

/// An item's category: its value (a last-writer-wins register).
fn category(values: &[ReadValue]) -> Option<String> {
    values.iter().find_map(|v| match v {
        ReadValue::Lww(l) => Some(String::from_utf8_lossy(&l.value).into_owned()),
        _ => None,
    })
}

/// Items per category, derived from the feed: idempotent, so repeated deliveries are harmless.
#[derive(Default)]
struct View {
    /// Each item's category as last handed out.
    items: BTreeMap<Vec<u8>, String>,
    /// Items per category.
    counts: BTreeMap<String, i64>,
    /// The token after the last change applied: where a consumer resumes.
    position: CausalToken,
    /// Changes handed out, and those that moved nothing (repeats).
    changes: u64,
    repeats: u64,
}

impl View {
    fn apply(&mut self, event: FeedEvent) -> anyhow::Result<()> {
        let change = match event {
            FeedEvent::Change(change) => change,
            FeedEvent::Reset { .. } => anyhow::bail!("the feed was reset: rebuild from a scan"),
        };
        self.changes += 1;
        let new = category(&change.values);
        let old = self.items.get(&change.key).cloned();
        if old == new {
            self.repeats += 1;
        } else {
            if let Some(old) = old {
                *self.counts.entry(old).or_default() -= 1;
            }
            match &new {
                Some(c) => {
                    *self.counts.entry(c.clone()).or_default() += 1;
                    self.items.insert(change.key.clone(), c.clone());
                }
                None => {
                    self.items.remove(&change.key);
                }
            }
            self.counts.retain(|_, n| *n != 0);
        }
        self.position = change.token;
        Ok(())
    }

    /// Takes every change the feed has now.
    fn catch_up(&mut self, feed: &mut Feed) -> anyhow::Result<()> {
        while let Some(event) = feed.next_timeout(Duration::from_millis(300))? {
            self.apply(event)?;
        }
        Ok(())
    }
}

/// The view computed from the data itself: what the feed's view must equal.
fn scanned(engine: &Engine) -> anyhow::Result<BTreeMap<String, i64>> {
    let mut counts = BTreeMap::new();
    for (_, read) in engine.scan_prefix(ITEMS, usize::MAX)? {
        if let Some(c) = category(&read.values) {
            *counts.entry(c).or_default() += 1;
        }
    }
    Ok(counts)
}

fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: fanout DIR"))?;
    let dir = Path::new(&dir);
    let (us, _us_rt) = open(dir, "use1")?;
    let (eu, eu_rt) = open(dir, "euw1")?;
    let (ap, _ap_rt) = open(dir, "apn1")?;
    let wait = Duration::from_secs(20);

    println!("a consumer in eu-west follows the feed of item: keys and counts items per category;");
    let mut view = View::default();
    let mut feed = eu.feed(ITEMS, Some(&CausalToken::default()))?;
    println!(
        "us-east and ap-northeast write items, one is moved to another category, one deleted:"
    );
    let mut seen = CausalToken::default();
    for (i, c) in ["books", "games", "books", "tools"].iter().enumerate() {
        seen.merge(&us.lww_set(format!("item:{i}").as_bytes(), c.as_bytes())?);
    }
    for (i, c) in ["games", "books"].iter().enumerate() {
        seen.merge(&ap.lww_set(format!("item:a{i}").as_bytes(), c.as_bytes())?);
    }
    anyhow::ensure!(
        ap.wait_covers(&seen, wait),
        "ap-northeast did not get the writes"
    );
    seen.merge(&ap.lww_set(b"item:1", b"tools")?);
    seen.merge(&ap.delete(b"item:3")?);
    anyhow::ensure!(
        eu.wait_covers(&seen, wait),
        "eu-west did not get the writes"
    );
    view.catch_up(&mut feed)?;
    println!("  eu-west's view   {:?}", view.counts);
    anyhow::ensure!(
        view.counts == scanned(&eu)?,
        "the view disagrees with the data"
    );

    println!("at-least-once: the consumer restarts from an older token; repeats change nothing:");
    let mut again = eu.feed(ITEMS, Some(&CausalToken::default()))?;
    let before = view.counts.clone();
    let (changes, repeats) = (view.changes, view.repeats);
    view.catch_up(&mut again)?;
    println!(
        "  {} changes handed out again, {} of them repeats",
        view.changes - changes,
        view.repeats - repeats
    );
    anyhow::ensure!(view.counts == before, "a repeated change moved the view");

    println!(
        "eu-west fails; the consumer resumes in us-east from its last token while writes go on:"
    );
    let position = view.position.clone();
    eu_rt.shutdown();
    drop(feed);
    drop(again);
    drop(eu);
    let mut feed = us.feed(ITEMS, Some(&position))?;
    seen.merge(&ap.lww_set(b"item:a2", b"games")?);
    seen.merge(&us.lww_set(b"item:4", b"books")?);
    anyhow::ensure!(
        us.wait_covers(&seen, wait),
        "us-east did not get the writes"
    );
    view.catch_up(&mut feed)?;
    println!("  us-east's view   {:?}", view.counts);
    anyhow::ensure!(
        view.counts == scanned(&us)?,
        "the view missed a change across the failover"
    );
    println!("the view kept from the feed equals the data in every region it was read from");
    Ok(())
}
