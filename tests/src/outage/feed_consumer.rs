//! A change-feed consumer beside the load: a routed watch of every key, kept as a view of each
//! key's latest values the way an application keeps a cache or an index (a reset rebuilds the
//! view from a scan, as `FeedEvent::Reset` asks). Once the regions have converged, the view
//! must equal their state: a change the feed skipped without a reset (a silent gap, across a
//! failover, a kill, a partition or a wiped disk) shows as a key that differs.

use super::checker::State;
use meridian::{FeedEvent, ReadValue};
use meridian_runtime::client::ClientFailure;
use meridian_runtime::client_proto::{ClientError, ErrorCode};
use meridian_runtime::routed::{RoutedClient, RoutedConfig, RoutedError};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the consumer holds.
#[derive(Debug, Default)]
pub struct FeedView {
    /// Each key's values as last handed out (empty: deleted).
    pub view: BTreeMap<Vec<u8>, Vec<ReadValue>>,
    /// Changes handed out.
    pub changes: u64,
    /// Resets (each followed by a scan).
    pub resets: u64,
    /// The regions that served the watch, in order (a region once per stretch).
    pub regions: Vec<String>,
}

/// Follows every key from the start of the run until `stop`, through `config`.
pub async fn run(
    config: RoutedConfig,
    view: Arc<Mutex<FeedView>>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let client = RoutedClient::connect(config).await?;
    let mut watch = client.watch(b"", Some(Default::default()), None);
    // A scan is due once the current watch has its position (after an uncoverable one).
    let mut rescan = false;
    let stopped = || async {
        while !stop.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    loop {
        // Not cut off mid-frame: the next frame is awaited whole, or the consumer stops.
        let next = tokio::select! {
            next = watch.next() => next,
            () = stopped() => break,
        };
        let events = match next {
            Ok(events) => events,
            // No region serves it now (out of reach, or none holds the position yet): again.
            Err(RoutedError::NoRegion(_))
            | Err(RoutedError::Refused {
                failure:
                    ClientFailure::Server(ClientError {
                        code: ErrorCode::NotYetVisible | ErrorCode::Unavailable,
                        ..
                    }),
                ..
            }) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            // No region will ever hold the position's writes (lost with a disk before they
            // shipped): as an application would, watch from now on and rebuild from a scan
            // once the new watch has its position.
            Err(RoutedError::Refused {
                failure:
                    ClientFailure::Server(ClientError {
                        code: ErrorCode::Uncoverable,
                        ..
                    }),
                ..
            }) => {
                view.lock().unwrap_or_else(|p| p.into_inner()).resets += 1;
                watch = client.watch(b"", None, None);
                rescan = true;
                continue;
            }
            Err(e) => anyhow::bail!("the watch was refused: {e}"),
        };
        let region = watch.region();
        let mut reset = std::mem::take(&mut rescan);
        {
            let mut v = view.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(region) = region {
                if v.regions.last() != Some(&region) {
                    v.regions.push(region);
                }
            }
            for event in events {
                match event {
                    FeedEvent::Change(c) => {
                        v.changes += 1;
                        v.view.insert(c.key, c.values);
                    }
                    FeedEvent::Reset { .. } => {
                        v.resets += 1;
                        reset = true;
                    }
                }
            }
        }
        if reset {
            let scanned = scan(&client).await?;
            let mut v = view.lock().unwrap_or_else(|p| p.into_inner());
            v.view = scanned;
        }
    }
    drop(watch);
    client.close().await;
    Ok(())
}

/// Every key the cluster holds, through `client` (the rebuild after a reset).
async fn scan(client: &RoutedClient) -> anyhow::Result<BTreeMap<Vec<u8>, Vec<ReadValue>>> {
    let mut out = BTreeMap::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let (rows, more) = client.scan_page(b"", after.as_deref(), 1_000).await?;
        after = rows.last().map(|(k, _)| k.clone());
        for (key, read) in rows {
            out.insert(key, read.values);
        }
        if !more || after.is_none() {
            return Ok(out);
        }
    }
}

/// The keys whose values in `view` differ from `state`'s (deleted keys as absent), at most
/// `max` of them, and how many there are.
pub fn differences(view: &FeedView, state: &State, max: usize) -> (Vec<String>, usize) {
    let present = |values: &Vec<ReadValue>| !values.is_empty();
    let mut keys: Vec<&Vec<u8>> = view
        .view
        .iter()
        .filter(|(_, v)| present(v))
        .map(|(k, _)| k)
        .chain(
            state
                .iter()
                .filter(|(_, r)| present(&r.values))
                .map(|(k, _)| k),
        )
        .collect();
    keys.sort();
    keys.dedup();
    let differ: Vec<&Vec<u8>> = keys
        .into_iter()
        .filter(|k| {
            // Without registers' contexts: one grows when a peer's state is joined, with no
            // write to the key (and so no change to hand out).
            let plain = |v: &Vec<ReadValue>| -> Vec<ReadValue> {
                v.iter().map(ReadValue::without_contexts).collect()
            };
            let seen = view.view.get(*k).filter(|v| present(v)).map(plain);
            let held = state
                .get(*k)
                .map(|r| &r.values)
                .filter(|v| present(v))
                .map(plain);
            seen != held
        })
        .collect();
    let shown = differ
        .iter()
        .take(max)
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    (shown, differ.len())
}
