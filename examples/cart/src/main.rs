//! A shopping cart in three regions (`make example-cart`): an OR-map of counters. Two regions
//! add items at once, a third removes one it has seen, every region ends with the same cart;
//! a session's writes follow it across a failover (its token). Three embedded engines in this
//! process, each replicating by itself over QUIC with mutual TLS on loopback, configured by
//! `meridian local-cluster` (the directory is the first argument).

use meridian::{Engine, Op, ReadValue};
use meridian_config::node_config::NodeConfig;
use meridian_runtime::BackgroundRuntime;
use std::path::Path;
use std::time::Duration;

const CART: &[u8] = b"cart:42";

fn open(dir: &Path, name: &str) -> anyhow::Result<(Engine, BackgroundRuntime)> {
    let config = NodeConfig::load(&dir.join(format!("{name}.toml")))?;
    let engine = Engine::open(&config.data_dir, config.engine_config())?;
    let runtime = BackgroundRuntime::start(engine.clone(), config.runtime())?;
    Ok((engine, runtime))
}

fn add(engine: &Engine, item: &str, n: i64) -> anyhow::Result<meridian::CausalToken> {
    let op = Op::CounterAdd { delta: n };
    Ok(engine.map_update(CART, item.as_bytes(), op)?)
}

fn show(region: &str, engine: &Engine) -> anyhow::Result<String> {
    let mut items = Vec::new();
    if let Some(map) = engine.get_map(CART)? {
        for (field, values) in &map.fields {
            for v in values {
                if let ReadValue::Counter(n) = v {
                    items.push(format!("{} x{n}", String::from_utf8_lossy(field)));
                }
            }
        }
    }
    let line = format!("{{{}}}", items.join(", "));
    println!("  {region:<13} {line}");
    Ok(line)
}

fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: cart DIR"))?;
    let dir = Path::new(&dir);
    let (us, _us_rt) = open(dir, "use1")?;
    let (eu, eu_rt) = open(dir, "euw1")?;
    let (ap, _ap_rt) = open(dir, "apn1")?;
    let wait = Duration::from_secs(20);

    println!("us-east and eu-west add items at the same time:");
    let t1 = add(&us, "apple", 2)?;
    let t2 = add(&eu, "apple", 1)?;
    let t3 = add(&eu, "pen", 1)?;
    let mut seen = t1.clone();
    seen.merge(&t2);
    seen.merge(&t3);
    anyhow::ensure!(
        ap.wait_covers(&seen, wait),
        "ap-northeast did not get the adds"
    );
    println!("ap-northeast, which has seen both, removes the pen:");
    let t4 = ap.map_remove(CART, b"pen")?;
    seen.merge(&t4);
    for e in [&us, &eu] {
        anyhow::ensure!(e.wait_covers(&seen, wait), "a region did not converge");
    }
    let carts = [
        show("us-east", &us)?,
        show("eu-west", &eu)?,
        show("ap-northeast", &ap)?,
    ];
    anyhow::ensure!(
        carts.iter().all(|c| c == "{apple x3}"),
        "the regions disagree"
    );

    println!("a session adds a book in eu-west (held by a second region, as a majority write");
    println!("would be); eu-west fails; the session reads on in ap-northeast with its token:");
    let session = add(&eu, "book", 1)?;
    anyhow::ensure!(
        us.wait_covers(&session, wait),
        "the write did not reach a second region"
    );
    eu_rt.shutdown();
    drop(eu);
    // The token makes the read wait until ap-northeast holds the session's writes.
    anyhow::ensure!(
        ap.wait_covers(&session, wait),
        "the session's write did not reach ap-northeast"
    );
    let cart = show("ap-northeast", &ap)?;
    anyhow::ensure!(cart.contains("book x1"), "the session lost its write");
    println!(
        "every region merged the same cart, and the session read its own write after the failover"
    );
    Ok(())
}
