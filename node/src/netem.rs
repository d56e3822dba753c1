//! `meridian netem`: the link emulator between regions, for rehearsing outages in staging or
//! on one machine. `run --config netem.toml` starts the relays and the control interface;
//! `set`, `heal` and `show` change and read the links of a running emulator.

use anyhow::Context;
use meridian_netem::config::NetemConfig;
use meridian_netem::{
    control, parse_ms, parse_rate_kbit, parse_share, LinkReport, Netem, ShapeChange,
};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// The emulator's commands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Start the relays and the control interface described by a configuration, and run until
    /// interrupted. Prints where each node reaches each other node (the addresses its
    /// configuration must give for its peers).
    Run {
        /// The emulator's TOML configuration.
        #[arg(long)]
        config: PathBuf,
    },
    /// Change the links from one node to another on a running emulator (only the settings
    /// given change).
    Set(SetArgs),
    /// Restore every link (latencies and other settings kept).
    Heal {
        /// The control address of the emulator.
        #[arg(long)]
        control: SocketAddr,
    },
    /// Every directed link: its shape and what it did.
    Show {
        /// The control address of the emulator.
        #[arg(long)]
        control: SocketAddr,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Options of `netem set`.
#[derive(clap::Args, Debug)]
pub struct SetArgs {
    /// The control address of the emulator.
    #[arg(long)]
    control: SocketAddr,
    /// Sending node (`*`: every node).
    #[arg(long)]
    from: String,
    /// Receiving node (`*`: every node).
    #[arg(long)]
    to: String,
    /// The opposite direction too.
    #[arg(long)]
    both: bool,
    /// Start from a perfect link.
    #[arg(long)]
    reset: bool,
    /// One-way delay: 50ms, 1.5s.
    #[arg(long)]
    latency: Option<String>,
    /// Delay variation either way: 5ms.
    #[arg(long)]
    jitter: Option<String>,
    /// Share of datagrams dropped: 10% or 0.1.
    #[arg(long)]
    loss: Option<String>,
    /// Share of datagrams delivered twice.
    #[arg(long)]
    duplicate: Option<String>,
    /// Share of datagrams sent without the delay (overtaking earlier ones).
    #[arg(long)]
    reorder: Option<String>,
    /// Bandwidth cap: 10mbit, 512kbit (0: none).
    #[arg(long)]
    rate: Option<String>,
    /// Drop everything (a blackhole; with --both, a partition between the nodes).
    #[arg(long, conflicts_with = "up")]
    down: bool,
    /// Let traffic through again.
    #[arg(long)]
    up: bool,
}

impl SetArgs {
    fn change(&self) -> anyhow::Result<ShapeChange> {
        let opt = |v: &Option<String>, parse: fn(&str) -> Result<f64, _>| {
            v.as_deref().map(parse).transpose()
        };
        Ok(ShapeChange {
            reset: self.reset,
            latency_ms: opt(&self.latency, parse_ms)?,
            jitter_ms: opt(&self.jitter, parse_ms)?,
            loss: opt(&self.loss, parse_share)?,
            duplicate: opt(&self.duplicate, parse_share)?,
            reorder: opt(&self.reorder, parse_share)?,
            rate_kbit: self.rate.as_deref().map(parse_rate_kbit).transpose()?,
            down: match (self.down, self.up) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            },
        })
    }
}

/// Runs the command.
pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run { config } => serve(&config),
        Command::Set(args) => {
            let change = serde_json::to_string(&args.change()?)?;
            let target = format!(
                "/links?from={}&to={}&both={}",
                escape(&args.from),
                escape(&args.to),
                args.both
            );
            let answer = control::call(args.control, "POST", &target, &change)
                .map_err(anyhow::Error::msg)?;
            print_links(&serde_json::from_str::<Vec<LinkReport>>(&answer)?);
            Ok(())
        }
        Command::Heal { control: addr } => {
            let answer = control::call(addr, "POST", "/heal", "").map_err(anyhow::Error::msg)?;
            print_links(&serde_json::from_str::<Vec<LinkReport>>(&answer)?);
            Ok(())
        }
        Command::Show {
            control: addr,
            json,
        } => {
            let answer = control::call(addr, "GET", "/links", "").map_err(anyhow::Error::msg)?;
            if json {
                println!("{answer}");
            } else {
                print_links(&serde_json::from_str::<Vec<LinkReport>>(&answer)?);
            }
            Ok(())
        }
    }
}

/// `*` as `%2A`; names are otherwise plain (replica names are DNS labels).
fn escape(name: &str) -> String {
    name.replace('*', "%2A")
}

/// Starts the emulator and serves until Ctrl-C or SIGTERM.
fn serve(path: &std::path::Path) -> anyhow::Result<()> {
    let config = NetemConfig::load(path)?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(async move {
            let netem = if config.route.is_empty() {
                Netem::full_mesh(config.node.clone(), config.seed).await?
            } else {
                Netem::start(config.node.clone(), &config.route, config.seed).await?
            };
            for entry in &config.shape {
                netem
                    .change(&entry.from, &entry.to, entry.both, &entry.change)
                    .with_context(|| format!("shape {} -> {}", entry.from, entry.to))?;
            }
            let listener = tokio::net::TcpListener::bind(config.control)
                .await
                .with_context(|| format!("control address {}", config.control))?;
            println!("netem: control on http://{}", listener.local_addr()?);
            for (from, to, via) in netem.routes() {
                println!("netem: {from} reaches {to} at {via}");
            }
            let netem = Arc::new(netem);
            let control = tokio::spawn(control::serve(listener, netem.clone()));
            wait_for_stop().await;
            control.abort();
            println!("netem: stopped");
            Ok(())
        })
}

/// Ctrl-C or SIGTERM.
async fn wait_for_stop() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let term = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// Links as a table.
fn print_links(links: &[LinkReport]) {
    println!(
        "{:<10} {:<10} {:>9} {:>9} {:>6} {:>6} {:>7} {:>9} {:<5} {:>9} {:>9} {:>7} {:>7}",
        "from",
        "to",
        "latency",
        "jitter",
        "loss",
        "dup",
        "reorder",
        "rate",
        "state",
        "received",
        "delivered",
        "lost",
        "cut"
    );
    for l in links {
        let s = &l.shape;
        let rate = s.rate_kbit.map_or("-".to_string(), |k| format!("{k}kbit"));
        println!(
            "{:<10} {:<10} {:>7}ms {:>7}ms {:>5.1}% {:>5.1}% {:>6.1}% {:>9} {:<5} {:>9} {:>9} {:>7} {:>7}",
            l.from,
            l.to,
            s.latency_ms,
            s.jitter_ms,
            s.loss * 100.0,
            s.duplicate * 100.0,
            s.reorder * 100.0,
            rate,
            if s.down { "DOWN" } else { "up" },
            l.stats.received,
            l.stats.delivered,
            l.stats.lost,
            l.stats.blackholed
        );
    }
}
