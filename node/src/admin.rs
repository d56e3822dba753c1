//! `meridian admin`: operations on a running cluster, with an admin client certificate
//! (`certs init --client NAME:admin`) named by a cluster file: `promote REGION` makes a region
//! the primary of an active-passive cluster; `mode active-passive|active-active` switches every
//! region.

use anyhow::Context;
use meridian_runtime::client::Client;
use meridian_runtime::client_proto::{ClientRequest, ClientResponse, RegionEntry};
use meridian_runtime::cluster_file::ClusterFile;
use meridian_runtime::routed::RoutedClient;
use meridian_runtime::tls::replica_dns_name;
use std::path::PathBuf;
use std::time::Duration;

/// Longest wait for one region's answer.
const REGION_TIMEOUT: Duration = Duration::from_secs(5);

/// Options of `admin`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The cluster file (its client certificate must have the `admin` role).
    #[arg(long)]
    cluster: PathBuf,
    #[command(subcommand)]
    command: Command,
}

/// An admin command.
#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Make REGION the primary (active-passive): the current primary steps down and REGION
    /// takes the lease once a majority promises it (after the old primary's promises run
    /// out, if it does not answer).
    Promote {
        /// The region's name.
        region: String,
    },
    /// Switch every region to `active-passive` (one primary takes the writes) or
    /// `active-active` (every region does). Each node keeps the switch in its data directory:
    /// it outlives restarts and overrides `[active_passive] enabled`.
    Mode {
        /// `active-passive` or `active-active`.
        mode: String,
    },
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    let file = ClusterFile::load(&args.cluster)?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let routed = RoutedClient::connect(file.routed_config()).await?;
            let regions = routed.regions();
            routed.close().await;
            match args.command {
                Command::Promote { region } => {
                    let entry = regions
                        .iter()
                        .find(|r| r.region == region || r.name == region)
                        .with_context(|| format!("no region {region:?} in the cluster"))?;
                    let answer = ask(&file, entry, ClientRequest::Promote).await?;
                    println!("{}: {answer}", entry.region);
                    Ok(())
                }
                Command::Mode { mode } => {
                    let active_passive = match mode.as_str() {
                        "active-passive" => true,
                        "active-active" => false,
                        other => {
                            anyhow::bail!("{other:?}: expected active-passive or active-active")
                        }
                    };
                    let mut failed = 0;
                    for entry in &regions {
                        match ask(&file, entry, ClientRequest::SetMode { active_passive }).await {
                            Ok(answer) => println!("{}: {answer}", entry.region),
                            Err(e) => {
                                failed += 1;
                                println!("{}: {e:#}", entry.region);
                            }
                        }
                    }
                    anyhow::ensure!(
                        failed == 0,
                        "{failed} regions were not switched: run the command again once they are up"
                    );
                    Ok(())
                }
            }
        })
}

/// Sends an admin request to one region and returns its answer.
async fn ask(
    file: &ClusterFile,
    entry: &RegionEntry,
    request: ClientRequest,
) -> anyhow::Result<String> {
    let name = replica_dns_name(&file.cluster, &entry.name, &entry.region);
    let asked = async {
        let client = Client::connect(entry.address, &name, &file.tls()).await?;
        let answer = client.request(&request).await;
        client.close().await;
        answer
    };
    match tokio::time::timeout(REGION_TIMEOUT, asked).await {
        Ok(Ok(ClientResponse::Done { message })) => Ok(message),
        Ok(Ok(other)) => anyhow::bail!("unexpected answer {other:?}"),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => anyhow::bail!("no answer in {REGION_TIMEOUT:?}"),
    }
}
