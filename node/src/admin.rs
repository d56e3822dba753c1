//! `meridian admin`: operations on a running cluster, with an admin client certificate
//! (`certs init --client NAME:admin`) named by a cluster file: `promote REGION` makes a region
//! the primary of an active-passive cluster; `mode active-passive|active-active` switches every
//! region; `isolate REGION` and `heal REGION` cut and restore a running region's replication
//! links (a game-day outage without stopping anything); `status [REGION]` shows each region's
//! links: state, round trip, lag and the last error; `backup REGION PATH` makes a running
//! region write a consistent copy of its data on its machine, and `restore` (offline, on the
//! region's machine) makes a data directory of such a copy.

use anyhow::Context;
use meridian_config::cluster_file::ClusterFile;
use meridian_runtime::client::Client;
use meridian_runtime::client_proto::{ClientRequest, ClientResponse, NodeStatus, RegionEntry};
use meridian_runtime::routed::RoutedClient;
use meridian_runtime::tls::replica_dns_name;
use std::path::PathBuf;
use std::time::Duration;

/// Longest wait for one region's answer.
const REGION_TIMEOUT: Duration = Duration::from_secs(5);

/// Options of `admin`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The cluster file (its client certificate must have the `admin` role); every command
    /// but `restore` needs it.
    #[arg(long)]
    cluster: Option<PathBuf>,
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
    /// Cut REGION's replication links without stopping it (game day): it still serves its
    /// clients and takes their writes (active-active), which reach the others after `heal`.
    /// A restart also heals it.
    Isolate {
        /// The region's name (or its replica's).
        region: String,
    },
    /// Restore the replication links of a region cut by `isolate`.
    Heal {
        /// The region's name (or its replica's).
        region: String,
    },
    /// A consistent copy of REGION's data, written online by its node to PATH on the node's
    /// machine (a directory that must not exist; hard links where it shares the data's file
    /// system). Bring it back with `restore`.
    Backup {
        /// The region's name (or its replica's).
        region: String,
        /// Where the node writes the copy.
        path: String,
    },
    /// Offline, on the region's machine with its node stopped: make DATA_DIR (which must not
    /// exist: move the old one away) a copy of BACKUP. The copy writes under a new epoch from
    /// its first start, so no number it may share with a live twin or with what its peers
    /// hold is ever used twice; what was written after the backup comes back from its peers.
    Restore {
        /// The backup directory (written by `backup`).
        #[arg(long)]
        from: PathBuf,
        /// The data directory to create (the node configuration's `data_dir`).
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Every region's replication links (or one region's): up or down, round trip, what each
    /// peer has not acknowledged yet, and the last error.
    Status {
        /// Only this region.
        region: Option<String>,
        /// One JSON object per region.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    if let Command::Restore { from, data_dir } = &args.command {
        meridian::Engine::restore_backup(from, data_dir)
            .with_context(|| format!("restoring {} into {}", from.display(), data_dir.display()))?;
        println!(
            "restored {} into {}: it writes under a new epoch at its first start",
            from.display(),
            data_dir.display()
        );
        return Ok(());
    }
    let cluster = args
        .cluster
        .context("--cluster FILE is needed (a cluster file with an admin certificate)")?;
    let file = ClusterFile::load(&cluster)?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let routed = RoutedClient::connect(file.routed_config()).await?;
            let regions = routed.regions();
            routed.close().await;
            let find = |region: &str| {
                regions
                    .iter()
                    .find(|r| r.region == region || r.name == region)
                    .cloned()
                    .with_context(|| format!("no region {region:?} in the cluster"))
            };
            match args.command {
                Command::Promote { region } => {
                    let entry = find(&region)?;
                    let answer = ask(&file, &entry, ClientRequest::Promote).await?;
                    println!("{}: {answer}", entry.region);
                    Ok(())
                }
                Command::Isolate { region } => {
                    let entry = find(&region)?;
                    let request = ClientRequest::Isolate { isolated: true };
                    println!("{}: {}", entry.region, ask(&file, &entry, request).await?);
                    Ok(())
                }
                Command::Heal { region } => {
                    let entry = find(&region)?;
                    let request = ClientRequest::Isolate { isolated: false };
                    println!("{}: {}", entry.region, ask(&file, &entry, request).await?);
                    Ok(())
                }
                Command::Backup { region, path } => {
                    let entry = find(&region)?;
                    let request = ClientRequest::Backup { path };
                    println!("{}: {}", entry.region, ask(&file, &entry, request).await?);
                    Ok(())
                }
                Command::Restore { .. } => Ok(()), // done above, offline
                Command::Status { region, json } => {
                    let chosen = match region {
                        Some(r) => vec![find(&r)?],
                        None => regions,
                    };
                    let mut unreachable = 0;
                    for entry in &chosen {
                        match ask_status(&file, entry).await {
                            Ok(status) if json => println!("{}", serde_json::to_string(&status)?),
                            Ok(status) => print_status(&status),
                            Err(e) => {
                                unreachable += 1;
                                if json {
                                    let error = serde_json::json!({"region": entry.region, "name": entry.name, "error": format!("{e:#}")});
                                    println!("{error}");
                                } else {
                                    println!("{} ({}): unreachable: {e:#}\n", entry.region, entry.name);
                                }
                            }
                        }
                    }
                    anyhow::ensure!(unreachable == 0, "{unreachable} regions did not answer");
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

/// One region's status.
async fn ask_status(file: &ClusterFile, entry: &RegionEntry) -> anyhow::Result<NodeStatus> {
    match send(file, entry, ClientRequest::Status).await? {
        ClientResponse::Status(status) => Ok(status),
        other => anyhow::bail!("unexpected answer {other:?}"),
    }
}

/// A region's links as a table.
fn print_status(s: &NodeStatus) {
    let isolated = if s.isolated {
        ", ISOLATED by an operator"
    } else {
        ""
    };
    println!(
        "{} ({}), {}{isolated}: {}; health {}",
        s.region, s.name, s.mode, s.origin_note, s.health
    );
    if s.writes_declared_lost + s.records_declared_lost > 0 {
        println!(
            "  declared lost: {} writes, {} keys' states (no reachable region held them)",
            s.writes_declared_lost, s.records_declared_lost
        );
    }
    println!(
        "  {:<12} {:<14} {:<5} {:>5} {:>8} {:>10} {:>9}  last error (earlier, if the link is up)",
        "peer", "region", "link", "proto", "rtt ms", "lag ops", "lag ms"
    );
    for p in &s.peers {
        let rtt = p.rtt_ms.map_or("-".to_string(), |r| r.to_string());
        // The replication protocol version the link negotiated (a node answering in client
        // protocol 5, the previous release, does not say).
        let protocol = p.protocol.map_or("-".to_string(), |v| v.to_string());
        println!(
            "  {:<12} {:<14} {:<5} {:>5} {:>8} {:>10} {:>9}  {}",
            p.name,
            p.region,
            if p.connected { "up" } else { "down" },
            protocol,
            rtt,
            p.lag_ops,
            p.lag_ms,
            p.last_error.as_deref().unwrap_or("-")
        );
    }
    println!();
}

/// Sends an admin request to one region and returns its answer.
async fn ask(
    file: &ClusterFile,
    entry: &RegionEntry,
    request: ClientRequest,
) -> anyhow::Result<String> {
    match send(file, entry, request).await? {
        ClientResponse::Done { message } => Ok(message),
        other => anyhow::bail!("unexpected answer {other:?}"),
    }
}

/// Sends one request to one region (a failure the server reports is an error).
async fn send(
    file: &ClusterFile,
    entry: &RegionEntry,
    request: ClientRequest,
) -> anyhow::Result<ClientResponse> {
    let name = replica_dns_name(&file.cluster, &entry.name, &entry.region);
    let asked = async {
        let client = Client::connect(entry.address, &name, &file.tls()).await?;
        let answer = client.request(&request).await;
        client.close().await;
        answer
    };
    match tokio::time::timeout(REGION_TIMEOUT, asked).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => anyhow::bail!("no answer in {REGION_TIMEOUT:?}"),
    }
}
