//! `meridian route --cluster FILE --near LAT,LON`: the region that should serve a client at a
//! place and the fallbacks in order, as a live node sees the cluster (regions it has no link
//! to go last), or from the file alone (`--offline`: the seeds' locations).

use anyhow::Context;
use meridian_config::cluster_file::ClusterFile;
use meridian_core::routing::{Location, Reason};
use meridian_runtime::client::Client;
use meridian_runtime::client_proto::{RegionEntry, RouteAnswer};
use meridian_runtime::tls::replica_dns_name;
use std::path::PathBuf;
use std::time::Duration;

/// Longest wait for a seed's connection and answer.
const SEED_TIMEOUT: Duration = Duration::from_secs(3);

/// Options of `route`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The cluster file (cluster id, seeds, certificate directory).
    #[arg(long)]
    cluster: PathBuf,
    /// The client's place, LAT,LON in degrees (default: the file's `near`).
    #[arg(long)]
    near: Option<Location>,
    /// Answer from the file's seeds and their locations, without asking a node.
    #[arg(long)]
    offline: bool,
    /// JSON output: `region`, and `order` with each region's `reason` and `health`.
    #[arg(long)]
    json: bool,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    let file = ClusterFile::load(&args.cluster)?;
    let near = args.near.or(file.near);
    let answer = if args.offline {
        let entries: Vec<RegionEntry> = file
            .seeds
            .iter()
            .map(|s| RegionEntry {
                name: s.name.clone(),
                region: s.region.clone(),
                address: s.address,
                location: s.location,
                rtt_ms: None,
                reachable: true,
            })
            .collect();
        meridian_runtime::regions::route(&entries, near.as_ref())
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(ask_a_seed(&file, near))?
    };
    if args.json {
        println!("{}", serde_json::to_string(&answer)?);
    } else {
        print(&answer);
    }
    Ok(())
}

/// The route from the first seed that answers.
async fn ask_a_seed(file: &ClusterFile, near: Option<Location>) -> anyhow::Result<RouteAnswer> {
    let tls = file.tls();
    let mut why = Vec::new();
    for seed in &file.seeds {
        let name = replica_dns_name(&file.cluster, &seed.name, &seed.region);
        let asked = async {
            let client = Client::connect(seed.address, &name, &tls).await?;
            let answer = client.route(near).await;
            client.close().await;
            answer
        };
        match tokio::time::timeout(SEED_TIMEOUT, asked).await {
            Ok(Ok(answer)) => return Ok(answer),
            Ok(Err(e)) => why.push(format!("{} at {}: {e}", seed.name, seed.address)),
            Err(_) => why.push(format!(
                "{} at {}: no answer in time",
                seed.name, seed.address
            )),
        }
    }
    Err(anyhow::anyhow!(why.join("; "))).context("no seed answered (try --offline)")
}

fn print(answer: &RouteAnswer) {
    println!("region: {}", answer.region);
    for (n, r) in answer.order.iter().enumerate() {
        let reason = match &r.reason {
            Reason::RoundTrip { rtt_ms } => format!("round trip {rtt_ms:.1} ms"),
            Reason::Distance { km } => format!("{km:.0} km away"),
            Reason::Unknown => "no location".into(),
        };
        println!(
            "{:>3}. {:<16} {:<20} {:?}",
            n + 1,
            r.region,
            reason,
            r.health
        );
    }
}
