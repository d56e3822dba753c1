//! `Watch` streams: a change feed served on the request's stream, `Changes` frames as the
//! applied vector advances and a heartbeat when nothing changed, until the client closes it.
//!
//! The feed reads the log only when the previous frame was written: a client that reads slowly
//! holds back its own feed (QUIC's flow control), never the node's memory. The wait between
//! refills is the service's wake-up on the applied vector, without a thread.

use super::{error, from_engine, Role, Service, Waiting};
use meridian::{CausalToken, Feed, FeedEvent};
use meridian_client::client_proto::{
    encode_at, Answer, ClientRequest, ClientResponse, ErrorCode, WATCH_HEARTBEAT_MS,
};
use meridian_client::framing::write_frame;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Longest a watch waits for this region to apply its start position before refusing it:
/// below the client's `WATCH_SILENCE` (3 s), which would take the wait for a dead region.
const POSITION_WAIT: Duration = Duration::from_secs(2);

/// Bytes of events one `Changes` frame carries at most (a larger single event goes alone: a
/// record always fits a frame).
const WATCH_FRAME_BYTES: usize = 1 << 20;

impl Service {
    /// Serves the `Watch` request `bytes` on `send`, answering in `version`.
    pub(super) async fn watch(
        &self,
        who: &str,
        role: Role,
        version: u8,
        bytes: &[u8],
        send: &mut quinn::SendStream,
    ) {
        let answer = |response: ClientResponse| Answer {
            node_ms: self.engine.config().clock.now_ms(),
            response,
        };
        let opened = match self.admit_request(who, role, bytes) {
            Ok(ClientRequest::Watch { prefix, from, name }) => {
                // A position this region has not applied is waited for, shorter than the
                // silence after which the client leaves, then refused: the client moves to a
                // region that holds it (or says none does).
                if let Some(token) = &from {
                    let why = "this region has not yet applied the watch's position";
                    if let Err(refused) = self.wait_token(token, POSITION_WAIT, why).await {
                        if write_frame(send, encode_at(version, &answer(refused)))
                            .await
                            .is_ok()
                        {
                            let _ = send.finish();
                        }
                        return;
                    }
                }
                let engine = self.engine.clone();
                let open = move || match name {
                    Some(name) => engine.named_feed(&name, &prefix, from.as_ref()),
                    None => engine.feed(&prefix, from.as_ref()),
                };
                match tokio::task::spawn_blocking(open).await {
                    Ok(Ok(feed)) => Ok(feed),
                    Ok(Err(e)) => Err(from_engine(e)),
                    Err(e) => Err(error(ErrorCode::Unavailable, e.to_string())),
                }
            }
            Ok(_) => Err(error(ErrorCode::BadRequest, "not a watch")),
            Err(refused) => Err(*refused),
        };
        let mut feed = match opened {
            Ok(feed) => feed,
            Err(refused) => {
                if write_frame(send, encode_at(version, &answer(refused)))
                    .await
                    .is_ok()
                {
                    let _ = send.finish();
                }
                return;
            }
        };
        metrics::counter!("meridian_client_requests_total", "result" => "ok").increment(1);
        metrics::gauge!("meridian_client_watches").increment(1.0);
        let _watching = WatchCount;
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _counted = Waiting(&self.waiting);
        let heartbeat = Duration::from_millis(WATCH_HEARTBEAT_MS);
        let mut last_sent = tokio::time::Instant::now();
        loop {
            let notified = self.applied.notified();
            tokio::pin!(notified);
            // Registered before the refill: an advance after it wakes the wait.
            notified.as_mut().enable();
            let polled = tokio::task::spawn_blocking(move || {
                let events = feed.poll();
                (feed, events)
            })
            .await;
            let events = match polled {
                Ok((back, Ok(events))) => {
                    feed = back;
                    events
                }
                Ok((_, Err(e))) => {
                    let _ = write_frame(send, encode_at(version, &answer(from_engine(e)))).await;
                    let _ = send.finish();
                    return;
                }
                Err(_) => return,
            };
            if events.is_empty() {
                // Nothing under the prefix in what was read: read on at once while behind,
                // else wait for an advance. A frame still goes every heartbeat (with the
                // position), however long the reading or how often the vector advances.
                let due = last_sent + heartbeat;
                if !feed.caught_up() {
                    if tokio::time::Instant::now() < due {
                        continue;
                    }
                } else if tokio::time::timeout_at(due, notified).await.is_ok()
                    && tokio::time::Instant::now() < due
                {
                    continue;
                }
            }
            for (events, position) in frames(events, &feed) {
                let frame = encode_at(
                    version,
                    &answer(ClientResponse::Changes { events, position }),
                );
                if write_frame(send, frame).await.is_err() {
                    return; // the client went away
                }
                last_sent = tokio::time::Instant::now();
            }
        }
    }
}

/// `events` as the frames to send, each with the position after it: the feed's position
/// after the last, the last event's token before that. A heartbeat (no events) is one frame.
fn frames(events: Vec<FeedEvent>, feed: &Feed) -> Vec<(Vec<FeedEvent>, CausalToken)> {
    let mut out: Vec<(Vec<FeedEvent>, CausalToken)> = Vec::new();
    let mut current: Vec<FeedEvent> = Vec::new();
    let mut bytes = 0;
    for event in events {
        let size = event_bytes(&event);
        if !current.is_empty() && bytes + size > WATCH_FRAME_BYTES {
            let position = current
                .last()
                .map(|e| e.token().clone())
                .unwrap_or_default();
            out.push((std::mem::take(&mut current), position));
            bytes = 0;
        }
        bytes += size;
        current.push(event);
    }
    out.push((current, feed.position()));
    out
}

/// About what `event` takes in a frame.
fn event_bytes(event: &FeedEvent) -> usize {
    postcard::experimental::serialized_size(event).unwrap_or(usize::MAX / 2)
}

/// Counts an open watch in `meridian_client_watches` while it lives.
struct WatchCount;

impl Drop for WatchCount {
    fn drop(&mut self) {
        metrics::gauge!("meridian_client_watches").decrement(1.0);
    }
}
