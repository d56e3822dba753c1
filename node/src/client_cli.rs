//! The command-line client: typed operations and `status` against a running node.

use anyhow::Context;
use meridian::{CausalToken, Expiry, Op, Read, ReadValue};
use meridian_config::cluster_file::ClusterFile;
use meridian_core::routing::Location;
use meridian_runtime::client::{new_request_id, Client};
use meridian_runtime::client_proto::{Consistency, NodeStatus};
use meridian_runtime::routed::RoutedClient;
use meridian_runtime::TlsFiles;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Where and as whom to connect: the nearest healthy region of a cluster (`--cluster`), or
/// one pinned node (`--node`, `--server-name`, `--certs`).
#[derive(clap::Args, Debug)]
pub struct Target {
    /// A cluster file (cluster id, seeds, certificate directory): the client learns every
    /// region and uses the nearest healthy one, failing over when it does not answer.
    #[arg(long, conflicts_with_all = ["node", "server_name", "certs"])]
    pub cluster: Option<PathBuf>,
    /// Where this client is, as LAT,LON in degrees (orders regions by distance until round
    /// trips are measured; overrides the file's `near`).
    #[arg(long, requires = "cluster")]
    pub near: Option<Location>,
    /// A pinned node's QUIC address.
    #[arg(long, requires_all = ["server_name", "certs"])]
    pub node: Option<SocketAddr>,
    /// The pinned node's certificate name: `<replica>.<region>.<cluster>`.
    #[arg(long)]
    pub server_name: Option<String>,
    /// Directory holding `ca.pem` and `client-<as>.pem/.key` (`certs init` writes it as
    /// `<dir>/client-<as>`), with `--node`.
    #[arg(long)]
    pub certs: Option<PathBuf>,
    /// Client certificate name, with `--node`.
    #[arg(long = "as", default_value = "cli")]
    pub client: String,
    /// How many regions must hold a write before it is acknowledged: `local`, `majority`,
    /// `all` or a number.
    #[arg(long, default_value = "local")]
    pub consistency: Consistency,
    /// Read with every write a majority of regions holds (with `--cluster`; default: the
    /// nearest region that holds this session's writes).
    #[arg(long, requires = "cluster")]
    pub majority: bool,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
    /// Give the written key a time to live (`90`, `1500ms`, `30s`, `5m`, `1h`, `2d`): it
    /// stops being read that long after the write, in every region.
    #[arg(long, value_parser = parse_ttl)]
    pub ttl: Option<u64>,
}

/// A time to live in milliseconds: a number with an optional unit (`ms`, `s`, `m`, `h`, `d`;
/// seconds without one).
pub(crate) fn parse_ttl(s: &str) -> Result<u64, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?}: expected a number and a unit, as 30s"))?;
    let scale = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{s:?}: the unit is one of ms, s, m, h, d")),
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("{s:?} is too long"))
}

/// A client command.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Multi-value register write.
    Put { key: String, value: String },
    /// Read a key (all types).
    Get { key: String },
    /// Delete a key.
    Del { key: String },
    /// Last-writer-wins write.
    LwwSet { key: String, value: String },
    /// Counter increment.
    CounterAdd { key: String, delta: i64 },
    /// Set insertion.
    SetAdd { key: String, elems: Vec<String> },
    /// Set removal.
    SetRemove { key: String, elems: Vec<String> },
    /// Map field: last-writer-wins value.
    MapSet {
        key: String,
        field: String,
        value: String,
    },
    /// Map field: counter increment.
    MapAdd {
        key: String,
        field: String,
        delta: i64,
    },
    /// Map field removal.
    MapRemove { key: String, field: String },
    /// Give a key a time to live (what it holds stops being read after it, in every region).
    Expire {
        key: String,
        /// `90`, `1500ms`, `30s`, `5m`, `1h`, `2d`.
        #[arg(value_parser = parse_ttl)]
        ttl: u64,
    },
    /// Remove a key's pending expiry.
    Persist { key: String },
    /// When a key's value stops being read (Unix milliseconds and time left), if it expires.
    Ttl { key: String },
    /// Peers, lag and health of the node.
    Status,
    /// Follow the changes to keys under a prefix: one line per change (key, type, value and
    /// the token after it), until interrupted.
    Watch(crate::client_watch::WatchArgs),
    /// Forget a named change feed in every region reached: its position no longer holds
    /// their logs.
    FeedDrop {
        /// The feed's name.
        name: String,
    },
}

/// A value as one line of text.
pub(crate) fn show(v: &ReadValue) -> String {
    let t = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match v {
        ReadValue::Register(s) => s
            .values
            .iter()
            .map(|v| format!("{:?}", t(v)))
            .collect::<Vec<_>>()
            .join(" | "),
        ReadValue::Lww(l) => format!("{:?}", t(&l.value)),
        ReadValue::Counter(n) => n.to_string(),
        ReadValue::Set(s) => format!(
            "{{{}}}",
            s.iter().map(|e| t(e)).collect::<Vec<_>>().join(", ")
        ),
        ReadValue::Map(m) => format!(
            "{{{}}}",
            m.fields
                .iter()
                .map(|(k, vs)| format!(
                    "{}: {}",
                    t(k),
                    vs.iter().map(show).collect::<Vec<_>>().join(" | ")
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// One pinned node, or the routed cluster.
pub(crate) enum Connection {
    Pinned(Client),
    Routed(Box<RoutedClient>),
}

impl Connection {
    async fn open(target: &Target) -> anyhow::Result<Connection> {
        if let Some(path) = &target.cluster {
            let file = ClusterFile::load(path)?;
            let mut config = file.routed_config();
            if target.near.is_some() {
                config.near = target.near;
            }
            return Ok(Connection::Routed(Box::new(
                RoutedClient::connect(config).await?,
            )));
        }
        let (Some(node), Some(server_name), Some(certs)) =
            (target.node, &target.server_name, &target.certs)
        else {
            anyhow::bail!("give --cluster FILE, or --node, --server-name and --certs");
        };
        let tls = TlsFiles {
            ca: certs.join("ca.pem"),
            cert: certs.join(format!("client-{}.pem", target.client)),
            key: certs.join(format!("client-{}.key", target.client)),
        };
        let client = Client::connect(node, server_name, &tls)
            .await
            .with_context(|| format!("connecting to {node}"))?;
        Ok(Connection::Pinned(client))
    }

    /// Applies `op`, with an expiry `ttl_ms` after it in the same write when given; says
    /// where.
    async fn apply(
        &mut self,
        key: &[u8],
        op: Op,
        ttl_ms: Option<u64>,
        consistency: Consistency,
    ) -> anyhow::Result<(CausalToken, Option<String>)> {
        let Some(ms) = ttl_ms else {
            return match self {
                Connection::Pinned(c) => {
                    let token = c.apply_with(key, op, consistency, new_request_id()).await?;
                    Ok((token, None))
                }
                Connection::Routed(c) => {
                    let written = c.apply(key, op, consistency).await?;
                    Ok((written.token, Some(written.region)))
                }
            };
        };
        let expire = Op::Expire {
            expiry: Expiry::After(ms),
        };
        let ops = vec![(key.to_vec(), op), (key.to_vec(), expire)];
        match self {
            Connection::Pinned(c) => {
                let token = c.write_with(ops, consistency, new_request_id()).await?;
                Ok((token, None))
            }
            Connection::Routed(c) => {
                let written = c.write_batch(ops, consistency).await?;
                Ok((written.token, Some(written.region)))
            }
        }
    }

    async fn expires_at(&mut self, key: &[u8]) -> anyhow::Result<Option<u64>> {
        Ok(match self {
            Connection::Pinned(c) => c.expires_at(key).await?,
            Connection::Routed(c) => c.expires_at(key).await?,
        })
    }

    async fn read(&mut self, key: &[u8], majority: bool) -> anyhow::Result<Option<Read>> {
        Ok(match self {
            Connection::Pinned(c) => c.read(key, 0).await?,
            Connection::Routed(c) if majority => c.read_majority(key).await?,
            Connection::Routed(c) => c.read(key).await?,
        })
    }

    async fn status(&mut self) -> anyhow::Result<NodeStatus> {
        Ok(match self {
            Connection::Pinned(c) => c.status().await?,
            Connection::Routed(c) => c.status().await?.1,
        })
    }

    async fn close(self) {
        match self {
            Connection::Pinned(c) => c.close().await,
            Connection::Routed(c) => c.close().await,
        }
    }
}

/// Runs one command.
pub fn run(target: Target, command: Command) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut client = Connection::open(&target).await?;
        let (key, op) = match command {
            Command::Put { key, value } => (key, Op::Put { value: value.into_bytes(), context: None }),
            Command::Del { key } => (key, Op::Delete),
            Command::LwwSet { key, value } => (key, Op::LwwSet { value: value.into_bytes() }),
            Command::CounterAdd { key, delta } => (key, Op::CounterAdd { delta }),
            Command::SetAdd { key, elems } => (key, Op::SetAdd { elems: elems.into_iter().map(String::into_bytes).collect() }),
            Command::SetRemove { key, elems } => (key, Op::SetRemove { elems: elems.into_iter().map(String::into_bytes).collect() }),
            Command::MapSet { key, field, value } => {
                let op = Op::LwwSet { value: value.into_bytes() };
                (key, Op::MapUpdate { field: field.into_bytes(), op: Box::new(op) })
            }
            Command::MapAdd { key, field, delta } => {
                let op = Op::CounterAdd { delta };
                (key, Op::MapUpdate { field: field.into_bytes(), op: Box::new(op) })
            }
            Command::MapRemove { key, field } => (key, Op::MapRemove { field: field.into_bytes() }),
            Command::Expire { key, ttl } => (key, Op::Expire { expiry: Expiry::After(ttl) }),
            Command::Persist { key } => (key, Op::Expire { expiry: Expiry::Never }),
            Command::Ttl { key } => {
                let at = client.expires_at(key.as_bytes()).await?;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                if target.json {
                    let left = at.map(|a| a.saturating_sub(now));
                    println!("{}", serde_json::json!({ "key": key, "expires_at_ms": at, "left_ms": left }));
                } else {
                    match at {
                        Some(a) => println!("{key}\texpires at {a} (in {:.1} s)", a.saturating_sub(now) as f64 / 1000.0),
                        None => println!("{key}\tno expiry"),
                    }
                }
                client.close().await;
                return Ok(());
            }
            Command::Get { key } => {
                let read = client.read(key.as_bytes(), target.majority).await?;
                if target.json {
                    let json = read.map(|r| {
                        serde_json::json!({
                            "values": meridian_runtime::read_json::values_json(&r.values),
                            "token": r.token.to_bytes().iter().map(|b| format!("{b:02x}")).collect::<String>(),
                        })
                    });
                    println!("{}", serde_json::to_string(&json)?);
                } else {
                    match read {
                        Some(r) => r.values.iter().for_each(|v| println!("{key}\t{:?}\t{}", v.kind(), show(v))),
                        None => println!("{key}\t(absent)"),
                    }
                }
                client.close().await;
                return Ok(());
            }
            Command::FeedDrop { name } => {
                let regions = match &client {
                    Connection::Pinned(c) => c.drop_feed(&name).await.map(|()| 1)?,
                    Connection::Routed(c) => c.drop_feed(&name).await?,
                };
                println!("feed {name} forgotten in {regions} region(s)");
                client.close().await;
                return Ok(());
            }
            Command::Watch(args) => {
                let result = crate::client_watch::watch(&client, args, target.json).await;
                client.close().await;
                return result;
            }
            Command::Status => {
                let s = client.status().await?;
                if target.json {
                    println!("{}", serde_json::to_string(&s)?);
                } else {
                    println!("{} ({}) cluster {}  replica {:?}", s.name, s.region, s.cluster, s.replica.map(|r| r.to_string()));
                    println!("origin {:?} epoch {}: {}", s.origin.map(|r| r.to_string()), s.epoch, s.origin_note);
                    match (&s.primary, s.is_primary) {
                        (_, true) => println!("{}: this node holds the primary's lease", s.mode),
                        (Some(p), false) => println!("{}: primary {p}", s.mode),
                        (None, false) if s.mode == "active-passive" => println!("{}: no primary known", s.mode),
                        _ => println!("{}", s.mode),
                    }
                    if s.storage_faults > 0 {
                        println!("storage faults {} (last: {})", s.storage_faults, s.last_fault.as_deref().unwrap_or("-"));
                    }
                    println!("{:<12} {:<14} {:<10} {:>8} {:>10} {:>10}", "peer", "region", "link", "rtt ms", "lag ops", "lag ms");
                    for p in &s.peers {
                        let rtt = p.rtt_ms.map_or("-".into(), |r| r.to_string());
                        let link = if p.connected { "up" } else { "down" };
                        println!("{:<12} {:<14} {:<10} {:>8} {:>10} {:>10}", p.name, p.region, link, rtt, p.lag_ops, p.lag_ms);
                    }
                    for p in s.peers.iter().filter(|p| p.last_error.is_some()) {
                        println!("{}: last refused: {}", p.name, p.last_error.as_deref().unwrap_or_default());
                    }
                }
                client.close().await;
                return Ok(());
            }
        };
        let ttl = target.ttl.filter(|_| !op.is_expire());
        let (token, region) = client.apply(key.as_bytes(), op, ttl, target.consistency).await?;
        if target.json {
            println!("{}", serde_json::json!({ "token": token.to_bytes().iter().map(|b| format!("{b:02x}")).collect::<String>(), "region": region }));
        } else {
            match region {
                Some(r) => println!("ok ({r})"),
                None => println!("ok"),
            }
        }
        client.close().await;
        Ok(())
    })
}
