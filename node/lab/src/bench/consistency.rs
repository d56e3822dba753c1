//! `meridian-lab bench consistency`: what each consistency level costs. Three regions in this
//! process over QUIC on loopback, the link to two of them through a relay adding `--rtt-ms`
//! of round trip (the client sits in the first region, next to it): the latency of writes at
//! `local`, `regions(2)`, `majority` and `all`, and of reads by session and by majority,
//! against the emulated round trip (`reference`), so the cost of each level reads as round
//! trips (`ratio`).

use super::report::{emit, header, Metric};
use hdrhistogram::Histogram;
use meridian::{Engine, Op};
use meridian_runtime::client::new_request_id;
use meridian_runtime::client_proto::Consistency;
use meridian_runtime::routed::RoutedClient;
use meridian_runtime::Runtime;
use meridian_tests::netem::Relay;
use meridian_tests::Cluster;
use std::time::{Duration, Instant};

/// Options of `bench consistency`.
#[derive(clap::Args)]
pub struct Args {
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Round trip between the client's region and the two others, and between those two.
    #[arg(long, default_value_t = 40)]
    rtt_ms: u64,
    /// Operations measured per level.
    #[arg(long, default_value_t = 100)]
    ops: u64,
}

const CLUSTER: &str = "bench";
/// The client's region first: it dials the others, through their relays.
const REGIONS: [(&str, &str); 3] = [("a", "us-east"), ("b", "eu-west"), ("c", "ap-northeast")];
const VALUE_BYTES: usize = 100;

/// Runs the suite.
pub fn run(args: Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(measure(&args))
}

async fn measure(args: &Args) -> anyhow::Result<()> {
    let mut cluster = Cluster::prepare(CLUSTER, &REGIONS, &["bench"])?;
    cluster.configure(|c| {
        c.limits.client_requests_per_second = 1_000_000;
        c.limits.client_burst = 1_000_000;
    });
    cluster.pick_ports()?;
    // Everything sent to b or c (by a, by each other, by the client) passes a relay holding
    // each datagram half the round trip each way; a is reached directly.
    let one_way = Duration::from_micros(args.rtt_ms * 500);
    let mut relays = Vec::new();
    for node in &mut cluster.nodes[1..] {
        let relay = Relay::delay(node.config.listen, one_way).await?;
        node.config.advertise = Some(relay.front());
        relays.push(relay);
    }
    cluster.wire_peers();
    let mut runtimes = Vec::new();
    for node in &cluster.nodes {
        let config = &node.config;
        let engine = Engine::open(&config.data_dir, config.engine_config())?;
        runtimes.push(Runtime::start(engine, config.runtime()).await?);
    }
    let linked = Instant::now();
    while !runtimes
        .iter()
        .all(|r| r.status().peers.iter().all(|p| p.connected))
    {
        anyhow::ensure!(
            linked.elapsed() < Duration::from_secs(30),
            "the regions did not link"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    header(args.json);
    super::report::setup(format!(
        "3 regions over relays, {} ms RTT, {} ops per level",
        args.rtt_ms, args.ops
    ));
    let rtt = args.rtt_ms as f64;
    let report = |name: &'static str, hist: &Histogram<u64>| -> anyhow::Result<()> {
        for (suffix, q) in [("p50", 0.5), ("p99", 0.99), ("max", 1.0)] {
            let ms = hist.value_at_quantile(q) as f64 / 1_000.0;
            let metric = Box::leak(format!("{name}_{suffix}_ms").into_boxed_str());
            emit(
                &Metric::with_reference("consistency", metric, ms, "ms", rtt, "-"),
                args.json,
            )?;
        }
        Ok(())
    };

    let mut client = cluster.client(0).await?;
    let value = vec![b'v'; VALUE_BYTES];
    let levels = [
        ("write_local", Consistency::Local),
        ("write_regions_2", Consistency::Regions(2)),
        ("write_majority", Consistency::Majority),
        ("write_all", Consistency::All),
    ];
    for (name, level) in levels {
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        for i in 0..args.ops {
            let key = format!("{name}:{i}");
            let op = Op::LwwSet {
                value: value.clone(),
            };
            let started = Instant::now();
            client
                .apply_with(key.as_bytes(), op, level, new_request_id())
                .await?;
            hist.record(started.elapsed().as_micros().max(1) as u64)?;
        }
        report(name, &hist)?;
    }

    // Reads from a client in a: by session (served by a, which holds the session's writes),
    // and by majority (the applied vectors of a and the nearer of b and c, then a).
    let mut config = cluster.cluster_file("bench", None).routed_config();
    config.seeds.truncate(1);
    let routed = RoutedClient::connect(config).await?;
    routed.set_token(client.token.clone());
    for (name, majority) in [("read_session", false), ("read_majority", true)] {
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        for i in 0..args.ops {
            let key = format!("write_all:{}", i % args.ops.max(1));
            let started = Instant::now();
            let read = if majority {
                routed.read_majority(key.as_bytes()).await?
            } else {
                routed.read(key.as_bytes()).await?
            };
            hist.record(started.elapsed().as_micros().max(1) as u64)?;
            anyhow::ensure!(read.is_some(), "{key} was not read back");
        }
        anyhow::ensure!(
            routed.last_region().as_deref() == Some("us-east"),
            "reads were not served by the client's region"
        );
        report(name, &hist)?;
    }
    routed.close().await;
    client.close().await;
    for r in runtimes {
        r.shutdown().await;
    }
    drop(relays);
    Ok(())
}
