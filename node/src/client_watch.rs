//! `meridian client watch PREFIX`: a change feed on the command line, one line per change,
//! resumed in the next region when the serving one fails (with `--cluster`).

use crate::client_cli::{show, Connection};
use anyhow::Context;
use meridian::CausalToken;
use meridian::FeedEvent;
use meridian_runtime::read_json::feed_event_json;
use std::io::Write;
use std::time::{Duration, Instant};

/// How often a named watch acknowledges while only heartbeats come.
const ACK_EVERY: Duration = Duration::from_secs(5);

/// Options of `client watch`.
#[derive(clap::Args, Debug)]
pub struct WatchArgs {
    /// Keys starting with this (empty: every key).
    prefix: String,
    /// Start after this token (hex, as printed with each change), from any region; default:
    /// after what the serving region has applied.
    #[arg(long)]
    from: Option<String>,
    /// Follow the region's named feed: resumed from where it was acknowledged, and
    /// acknowledged after each batch printed (its position holds the region's log).
    #[arg(long)]
    name: Option<String>,
    /// Stop after this many changes.
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    seconds: Option<u64>,
    /// One JSON object per line (also `client --json watch`).
    #[arg(long)]
    json: bool,
}

/// Parses a token printed in hex.
fn token_from_hex(hex: &str) -> anyhow::Result<CausalToken> {
    anyhow::ensure!(
        hex.is_ascii() && hex.len().is_multiple_of(2),
        "--from: an even number of hex digits"
    );
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .context("--from: not hex")?;
    CausalToken::from_bytes(&bytes).context("--from")
}

/// Prints `event` as a line.
fn print(out: &mut impl Write, event: &FeedEvent, json: bool) -> anyhow::Result<()> {
    if json {
        writeln!(out, "{}", feed_event_json(event))?;
        return Ok(());
    }
    let hex =
        |t: &CausalToken| -> String { t.to_bytes().iter().map(|b| format!("{b:02x}")).collect() };
    match event {
        FeedEvent::Change(c) => {
            let key = String::from_utf8_lossy(&c.key);
            if c.values.is_empty() {
                writeln!(out, "{key}\t(deleted)\t\t{}", hex(&c.token))?;
            }
            for v in &c.values {
                writeln!(out, "{key}\t{:?}\t{}\t{}", v.kind(), show(v), hex(&c.token))?;
            }
        }
        FeedEvent::Reset { token, missing } => writeln!(
            out,
            "(reset: writes of origin {} from {} are no longer in this region's log; scan the prefix again)\t\t\t{}",
            missing.replica,
            missing.counter,
            hex(token)
        )?,
    }
    Ok(())
}

/// Runs the watch until `--count` changes, `--seconds`, or a failure no region can serve.
pub(crate) async fn watch(client: &Connection, args: WatchArgs, json: bool) -> anyhow::Result<()> {
    let json = json || args.json;
    let from = args.from.as_deref().map(token_from_hex).transpose()?;
    let deadline = args
        .seconds
        .map(|s| Instant::now() + Duration::from_secs(s));
    let prefix = args.prefix.as_bytes();
    let mut seen = 0u64;
    let mut last_ack = Instant::now();
    let mut out = std::io::stdout().lock();
    let mut pinned_stream;
    let mut routed_stream;
    let mut source: Source<'_> = match client {
        Connection::Pinned(c) => {
            pinned_stream = c.watch(prefix, from, args.name.clone()).await?;
            Source::Pinned(c, &mut pinned_stream)
        }
        Connection::Routed(c) => {
            routed_stream = c.watch(prefix, from, args.name.clone());
            Source::Routed(c, &mut routed_stream)
        }
    };
    loop {
        let left = match deadline {
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) => left,
                None => return Ok(()),
            },
            None => Duration::from_secs(3600),
        };
        let Ok(next) = tokio::time::timeout(left, source.next()).await else {
            return Ok(());
        };
        let events = next?;
        for event in &events {
            print(&mut out, event, json)?;
            if matches!(event, FeedEvent::Change(_)) {
                seen += 1;
            }
            if args.count.is_some_and(|c| seen >= c) {
                out.flush()?;
                return Ok(());
            }
        }
        out.flush()?;
        // Acknowledged after what was printed, and at least every few seconds while only
        // heartbeats come (their position moves past writes outside the prefix: the log
        // need not keep those).
        if let Some(name) = &args.name {
            if !events.is_empty() || last_ack.elapsed() >= ACK_EVERY {
                source.ack(name).await?;
                last_ack = Instant::now();
            }
        }
    }
}

/// The stream being followed.
enum Source<'a> {
    Pinned(
        &'a meridian_runtime::client::Client,
        &'a mut meridian_runtime::feed::WatchStream,
    ),
    Routed(
        &'a meridian_runtime::routed::RoutedClient,
        &'a mut meridian_runtime::feed::RoutedWatch<&'a meridian_runtime::routed::RoutedClient>,
    ),
}

impl Source<'_> {
    async fn next(&mut self) -> anyhow::Result<Vec<FeedEvent>> {
        Ok(match self {
            Source::Pinned(_, s) => s.next().await?,
            Source::Routed(_, s) => s.next().await?,
        })
    }

    /// Acknowledges the position printed so far for the named feed `name`.
    async fn ack(&mut self, name: &str) -> anyhow::Result<()> {
        match self {
            Source::Pinned(c, s) => c.ack_feed(name, s.position()).await?,
            Source::Routed(c, s) => {
                if let Some(position) = s.position().cloned() {
                    c.ack_feed(name, &position).await?;
                }
            }
        }
        Ok(())
    }
}
