//! Two regions in one process: concurrent, conflicting writes of every value type, an exchange
//! of record states with `apply_remote`, and the converged values (siblings included).

use anyhow::Context;
use meridian::{Config, Engine, Op, ReadValue};

const KEYS: [&[u8]; 5] = [
    b"profile:bio",
    b"profile:theme",
    b"page:views",
    b"cart:items",
    b"user:42",
];

fn show(v: &ReadValue) -> String {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match v {
        ReadValue::Register(s) => {
            let vals: Vec<String> = s.values.iter().map(|v| format!("{:?}", text(v))).collect();
            if vals.len() > 1 {
                format!(
                    "register with {} siblings [{}]",
                    vals.len(),
                    vals.join(", ")
                )
            } else {
                format!("register {}", vals.join(""))
            }
        }
        ReadValue::Lww(l) => format!(
            "lww {:?} (marker {}, writer {})",
            text(&l.value),
            l.marker,
            l.writer
        ),
        ReadValue::Counter(n) => format!("counter {n}"),
        ReadValue::Set(s) => format!(
            "set {{{}}}",
            s.iter().map(|e| text(e)).collect::<Vec<_>>().join(", ")
        ),
        ReadValue::Map(m) => {
            let fields: Vec<String> = m
                .fields
                .iter()
                .map(|(k, vs)| {
                    format!(
                        "{}: {}",
                        text(k),
                        vs.iter().map(show).collect::<Vec<_>>().join(" | ")
                    )
                })
                .collect();
            format!("map {{ {} }}", fields.join("; "))
        }
    }
}

fn dump(name: &str, e: &Engine) -> anyhow::Result<()> {
    println!("  {name} (replica {}):", e.origin_id());
    for k in KEYS {
        let shown = match e.read(k)? {
            Some(r) => r.values.iter().map(show).collect::<Vec<_>>().join(" | "),
            None => "(absent)".into(),
        };
        println!("    {:<14} {shown}", String::from_utf8_lossy(k));
    }
    Ok(())
}

fn exchange(from: &Engine, to: &Engine) -> anyhow::Result<usize> {
    let mut changed = 0;
    for k in KEYS {
        if let Some(state) = from.replication().export(k)? {
            changed += usize::from(to.replication().apply_remote(k, &state)?);
        }
    }
    Ok(changed)
}

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let us = Engine::open(dir.path().join("us-east"), Config::default()).context("open us-east")?;
    let eu = Engine::open(dir.path().join("eu-west"), Config::default()).context("open eu-west")?;
    println!(
        "Step 1. Two regions, each its own RocksDB directory under {}",
        dir.path().display()
    );
    println!(
        "  us-east is replica {}, eu-west is replica {}",
        us.origin_id(),
        eu.origin_id()
    );

    println!("\nStep 2. A common starting point, written in us-east and copied to eu-west");
    us.put(b"profile:bio", b"Hello")?;
    us.set_add(b"cart:items", &[b"book", b"pen"])?;
    us.counter_add(b"page:views", 10)?;
    exchange(&us, &eu)?;
    dump("eu-west", &eu)?;

    println!("\nStep 3. The link is down; both regions take writes to the same keys");
    us.put(b"profile:bio", b"Hello from New York")?;
    eu.put(b"profile:bio", b"Bonjour de Paris")?;
    us.lww_set(b"profile:theme", b"dark")?;
    eu.lww_set(b"profile:theme", b"light")?;
    us.counter_add(b"page:views", 3)?;
    eu.counter_add(b"page:views", 5)?;
    us.set_remove(b"cart:items", &[b"pen"])?;
    eu.set_add(b"cart:items", &[b"pen", b"lamp"])?;
    us.map_update(
        b"user:42",
        b"name",
        Op::LwwSet {
            value: b"Ada".to_vec(),
        },
    )?;
    us.map_update(b"user:42", b"logins", Op::CounterAdd { delta: 1 })?;
    eu.map_update(b"user:42", b"logins", Op::CounterAdd { delta: 2 })?;
    eu.map_update(
        b"user:42",
        b"tags",
        Op::SetAdd {
            elems: vec![b"beta".to_vec()],
        },
    )?;
    dump("us-east", &us)?;
    dump("eu-west", &eu)?;

    println!("\nStep 4. The link heals: each region merges the other's record states");
    let to_eu = exchange(&us, &eu)?;
    let to_us = exchange(&eu, &us)?;
    println!("  records changed: {to_eu} in eu-west, {to_us} in us-east");
    dump("us-east", &us)?;
    dump("eu-west", &eu)?;
    for k in KEYS {
        anyhow::ensure!(
            us.replication().export(k)? == eu.replication().export(k)?,
            "regions diverge on {:?}",
            String::from_utf8_lossy(k)
        );
    }
    println!("  both regions hold byte-identical records: converged");

    println!("\nStep 5. Resolve the register conflict in eu-west with the context it read");
    let read = eu.get(b"profile:bio")?.context("bio present")?;
    eu.put_with(b"profile:bio", b"Hello / Bonjour", &read.context)?;
    exchange(&eu, &us)?;
    dump("us-east", &us)?;

    println!("\nStep 6. A delete in us-east is a causal tombstone; a concurrent add in eu-west survives it");
    us.delete(b"cart:items")?;
    eu.set_add(b"cart:items", &[b"gift"])?;
    exchange(&us, &eu)?;
    exchange(&eu, &us)?;
    dump("us-east", &us)?;
    println!("\nDone.");
    Ok(())
}
