//! `meridian-lab bench replication --collection-size N`: what the wire carries per add to a
//! large set and a large map between two regions over real QUIC (mutual TLS, loopback, one
//! process), counted as UDP payload by relays in front of both regions (both directions:
//! entries, acknowledgements, QUIC's own headers and acks), against the add's own encoded
//! size (key and operation): adds written back to back, and adds each applied in the other
//! region before the next is written (`lone`); at the newest replication protocol, and
//! pinned to version 6, which ships whole states.

use super::replication_bytes::{collection_add, collections_batch, COLLECTIONS};
use super::report::{emit, Metric};
use meridian::{Batch, Engine};
use meridian_runtime::Runtime;
use meridian_tests::netem::Shape;
use meridian_tests::Cluster;
use std::time::Duration;

/// Per collection (set, map): UDP bytes both ways during the adds (written back to back, or
/// with `lone` each applied in the other region before the next), and the adds' encoded size.
async fn adds(size: u64, ops: u64, version: u8, lone: bool) -> anyhow::Result<[(u64, u64); 2]> {
    let name = format!("collections-v{version}-{lone}");
    let mut cluster = Cluster::prepare(&name, &[("a", "us-east"), ("b", "eu-west")], &[])?;
    cluster.configure(|c| c.protocols.replication_max = Some(version));
    cluster.pick_ports()?;
    let (links, relays) = super::replication::relayed(&mut cluster, Shape::delay(0.0)).await?;
    let open = |i: usize| {
        let config = &cluster.nodes[i].config;
        Engine::open(&config.data_dir, config.engine_config())
    };
    let (a, b) = (open(0)?, open(1)?);
    let ra = Runtime::start(a.clone(), cluster.nodes[0].config.runtime()).await?;
    let rb = Runtime::start(b.clone(), cluster.nodes[1].config.runtime()).await?;
    let covered = |token: meridian::CausalToken| {
        let b = b.clone();
        tokio::task::spawn_blocking(move || b.wait_covers(&token, Duration::from_secs(60)))
    };
    for i in (0..size).step_by(1_000) {
        let token = a.write(collections_batch(i, (i + 1_000).min(size)))?;
        anyhow::ensure!(covered(token).await?, "the collections did not replicate");
    }
    let carried = || links.iter().map(|l| l.stats().delivered_bytes).sum::<u64>();
    let mut out = [(0, 0); 2];
    for (n, key) in COLLECTIONS.into_iter().enumerate() {
        // Whatever the build-up left in flight (acknowledgements) settles first.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = carried();
        for j in 0..ops {
            let op = collection_add(n, j);
            out[n].1 += (key.len() + postcard::to_allocvec(&op)?.len()) as u64;
            let token = a.write(Batch::new().op(key.to_vec(), op))?;
            if lone || j + 1 == ops {
                anyhow::ensure!(covered(token).await?, "an add did not replicate");
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        out[n].0 = carried() - before;
    }
    ra.shutdown().await;
    rb.shutdown().await;
    drop(relays);
    Ok(out)
}

/// Emits the bytes per add to each collection against the add's size (target: at most
/// twice), and against version 6's bytes for the same adds.
pub async fn measure(size: u64, ops: u64, json: bool) -> anyhow::Result<()> {
    super::report::setup(format!(
        "2 regions, QUIC + mutual TLS on loopback, UDP payload both ways; a set and a map of {size} elements, {ops} adds to each, one per write, back to back (lone: each applied in the other region before the next)"
    ));
    let newest = adds(
        size,
        ops,
        meridian_core::replication::PROTOCOL_VERSION,
        false,
    )
    .await?;
    let lone = adds(
        size,
        ops,
        meridian_core::replication::PROTOCOL_VERSION,
        true,
    )
    .await?;
    let whole = adds(
        size,
        ops,
        meridian_core::replication::SHARED_STATES_VERSION,
        false,
    )
    .await?;
    let per_op = |bytes: u64| bytes as f64 / ops.max(1) as f64;
    for (i, name) in ["set", "map"].into_iter().enumerate() {
        let metric = |suffix: &str, value: f64, reference: f64, target: &'static str| {
            let name: &'static str =
                Box::leak(format!("wire_{name}_add_{suffix}").into_boxed_str());
            Metric::with_reference("replication", name, value, "bytes", reference, target)
        };
        let (bytes, op_bytes) = newest[i];
        emit(
            &metric("bytes_per_op", per_op(bytes), per_op(op_bytes), "<= 2.0"),
            json,
        )?;
        emit(
            &metric(
                "lone_bytes_per_op",
                per_op(lone[i].0),
                per_op(op_bytes),
                "-",
            ),
            json,
        )?;
        emit(
            &metric("vs_v6", per_op(bytes), per_op(whole[i].0), "-"),
            json,
        )?;
    }
    Ok(())
}
