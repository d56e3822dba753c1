//! Change feeds through C: every change to the keys under a prefix after a position, one event
//! at a time as JSON, from an embedded engine (`meridian_feed_open`) or through a routed client
//! (`meridian_client_watch`), behind one cursor type. The caller pulls (`meridian_feed_next`
//! waits up to a timeout for the next event): the library never calls into the caller's
//! threads.
//!
//! A position is a causal token: resuming from an event's token (or from
//! `meridian_feed_position`) hands out every change after it, in any region, some perhaps
//! again (delivery is at least once). Each event carries a key's current state when it was
//! read (the latest version, not every version), or a reset where a position could not be
//! followed without a gap.

use crate::args::{bytes, put_buffer};
use crate::buffer::MeridianBuffer;
use crate::client::{Held, MeridianClient};
use crate::engine::MeridianEngine;
use crate::handles::Registry;
use crate::status::{guard, Failure, MeridianStatus};
use crate::token::{maybe_token_out, token_of, MeridianToken};
use meridian::{CausalToken, FeedEvent};
use meridian_client::feed::RoutedWatch;
use meridian_client::read_json::feed_event_json;
use meridian_client::routed::RoutedError;
use std::collections::VecDeque;
use std::ffi::c_char;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest `meridian_feed_next` waits: a larger `timeout_ms` waits this long (an hour).
pub const MERIDIAN_FEED_WAIT_MAX_MS: u64 = 3_600_000;

/// Longest feed name, in bytes (without the NUL).
pub const MERIDIAN_FEED_NAME_MAX: usize = 256;

/// How long a wait runs between two looks at whether the feed, its engine or its client was
/// closed meanwhile (and between two chances for other threads to use the feed).
const SLICE: Duration = Duration::from_millis(100);

/// Longest `meridian_client_watch` waits for a region's first frame.
const OPEN_WAIT: Duration = Duration::from_secs(30);

/// A change feed (opaque): a cursor over the changes under a prefix, from an engine or
/// through a client. Safe to share between threads (each event goes to one caller).
pub struct MeridianFeed {
    _private: [u8; 0],
}

/// What a feed follows: an engine handle or a client handle.
#[derive(Clone, Copy)]
enum Source {
    Engine(usize),
    Client(usize),
}

impl Source {
    /// Whether its engine or client is still open.
    fn is_open(self) -> bool {
        match self {
            Source::Engine(id) => crate::engine::is_open(id),
            Source::Client(id) => crate::client::is_open(id),
        }
    }
}

/// One frame of a watch, or why none came.
type Frame = Result<Vec<FeedEvent>, RoutedError>;

/// A watch holding its client.
type Watch = RoutedWatch<Held>;

/// A frame being awaited: the watch comes back with it.
type Pending = Pin<Box<dyn Future<Output = (Watch, Frame)> + Send>>;

/// A client's watch: idle between frames, or awaiting one. A wait cut short by its timeout
/// keeps the frame's future (and with it whatever part of the frame was read) for the next
/// call: nothing read from the stream is dropped.
struct ClientFollow {
    held: Option<Held>,
    watch: Option<Watch>,
    pending: Option<Pending>,
}

impl ClientFollow {
    /// Waits up to `wait` for the watch's next frame; `None` when none came in time.
    fn frame(&mut self, wait: Duration) -> Result<Option<(Vec<FeedEvent>, CausalToken)>, Failure> {
        let closed = || {
            Failure::new(
                MeridianStatus::MeridianClosed,
                "the feed's client is closed",
            )
        };
        let mut pending = match (self.pending.take(), self.watch.take()) {
            (Some(pending), _) => pending,
            (None, Some(mut watch)) => Box::pin(async move {
                let frame = watch.next().await;
                (watch, frame)
            }),
            (None, None) => return Err(closed()),
        };
        let held = self.held.as_ref().ok_or_else(closed)?;
        // The timer is made inside the runtime (it needs its time driver).
        let waited = held
            .runtime()
            .block_on(async { tokio::time::timeout(wait, &mut pending).await });
        match waited {
            Err(_) => {
                self.pending = Some(pending);
                Ok(None)
            }
            Ok((watch, frame)) => {
                let position = watch.position().cloned();
                self.watch = Some(watch);
                let events = frame?;
                Ok(Some((events, position.unwrap_or_default())))
            }
        }
    }
}

impl Drop for ClientFollow {
    fn drop(&mut self) {
        if let Some(held) = self.held.take() {
            {
                // The stream's timers and tasks belong to the client's runtime.
                let _inside = held.runtime().enter();
                self.pending = None;
                self.watch = None;
            }
            held.release();
        }
    }
}

/// What a cursor reads from.
enum Follow {
    Engine(Box<meridian::Feed>),
    Client(ClientFollow),
    /// Its engine or client closed: nothing more.
    Closed,
}

/// A feed's state: the events received and not handed out yet (one refill of the engine's
/// feed, or one frame of a watch), the position after everything received, and the position
/// after everything handed out.
struct Cursor {
    follow: Follow,
    queue: VecDeque<FeedEvent>,
    received: Option<CausalToken>,
    handed: Option<CausalToken>,
}

impl Cursor {
    /// Receives what comes within `wait` (nothing when events are queued already).
    fn fetch(&mut self, source: Source, wait: Duration) -> Result<(), Failure> {
        if !self.queue.is_empty() {
            return Ok(());
        }
        if !source.is_open() {
            self.close();
        }
        match &mut self.follow {
            Follow::Closed => return Err(closed()),
            Follow::Engine(feed) => {
                if let Some(event) = feed.next_timeout(wait)? {
                    self.queue.push_back(event);
                    // What the engine's feed read with it: its position then covers exactly
                    // what this cursor received.
                    self.queue.extend(feed.poll()?);
                }
                self.received = Some(meridian::Feed::position(feed));
            }
            Follow::Client(watch) => {
                if let Some((events, position)) = watch.frame(wait)? {
                    self.queue.extend(events);
                    let mut received = self.received.take().unwrap_or_default();
                    received.merge(&position);
                    self.received = Some(received);
                }
            }
        }
        if self.queue.is_empty() {
            self.handed.clone_from(&self.received);
        }
        Ok(())
    }

    /// The next event received, if any: the position handed out moves past it (to the
    /// position after everything received once nothing is queued; else to the event's token,
    /// so that it never covers an event still queued).
    fn pop(&mut self) -> Option<FeedEvent> {
        let event = self.queue.pop_front()?;
        let mut handed = self.handed.take().unwrap_or_default();
        match (&self.received, self.queue.is_empty()) {
            (Some(received), true) => handed.merge(received),
            _ => handed.merge(event.token()),
        }
        self.handed = Some(handed);
        Some(event)
    }

    /// Lets go of the engine or client: nothing more is handed out.
    fn close(&mut self) {
        self.queue.clear();
        self.follow = Follow::Closed;
    }
}

/// A live feed: what it follows and its name, fixed; its cursor.
struct FeedHandle {
    source: Source,
    name: Option<String>,
    cursor: Mutex<Cursor>,
}

impl FeedHandle {
    fn cursor(&self) -> std::sync::MutexGuard<'_, Cursor> {
        self.cursor.lock().unwrap_or_else(|e| e.into_inner())
    }
}

static FEEDS: Registry<FeedHandle> = Registry::new("feed");

fn closed() -> Failure {
    Failure::new(
        MeridianStatus::MeridianClosed,
        "the feed's engine or client is closed",
    )
}

/// Engine handle `id` closed: its feeds let go of the engine now (its directory can then be
/// opened again); they answer `MERIDIAN_CLOSED`.
pub(crate) fn engine_closed(id: usize) {
    for (_, feed) in FEEDS.all() {
        if matches!(feed.source, Source::Engine(e) if e == id) {
            feed.cursor().close();
        }
    }
}

/// Client handle `id` closed: its watches let go of the client now (so that the close can
/// close its connections); they answer `MERIDIAN_CLOSED`.
pub(crate) fn client_closed(id: usize) {
    for (_, feed) in FEEDS.all() {
        if matches!(feed.source, Source::Client(c) if c == id) {
            feed.cursor().close();
        }
    }
}

/// A feed name: null for none; else 1 to `MERIDIAN_FEED_NAME_MAX` bytes of UTF-8 before the
/// NUL (no byte past that bound is read).
///
/// # Safety
/// `name`, when not null, must point at a NUL-terminated string, or at least
/// `MERIDIAN_FEED_NAME_MAX + 1` readable bytes.
unsafe fn feed_name(name: *const c_char) -> Result<Option<String>, Failure> {
    if name.is_null() {
        return Ok(None);
    }
    let mut len = 0;
    // SAFETY: each byte read is at most the NUL or within the first MAX + 1 bytes.
    while len <= MERIDIAN_FEED_NAME_MAX && unsafe { *name.add(len) } != 0 {
        len += 1;
    }
    if len > MERIDIAN_FEED_NAME_MAX {
        return Err(Failure::invalid(format!(
            "name: longer than {MERIDIAN_FEED_NAME_MAX} bytes"
        )));
    }
    if len == 0 {
        return Err(Failure::invalid("name: empty (null for an unnamed feed)"));
    }
    // SAFETY: the `len` bytes before the NUL were just read.
    let raw = unsafe { std::slice::from_raw_parts(name.cast::<u8>(), len) };
    std::str::from_utf8(raw)
        .map(|s| Some(s.to_string()))
        .map_err(|_| Failure::invalid("name: not UTF-8"))
}

/// The optional `from` token: null for none.
fn from_token(from: *const MeridianToken) -> Result<Option<CausalToken>, Failure> {
    if from.is_null() {
        return Ok(None);
    }
    token_of(from).map(Some)
}

/// Registers `cursor` and hands its handle out through `out`; refused (and let go of) when its
/// engine or client closed meanwhile.
///
/// # Safety
/// `out` must be valid for a write (checked non-null by the caller).
unsafe fn register(
    source: Source,
    name: Option<String>,
    cursor: Cursor,
    out: *mut *mut MeridianFeed,
) -> Result<(), Failure> {
    let id = FEEDS.insert(FeedHandle {
        source,
        name,
        cursor: Mutex::new(cursor),
    });
    // A close that began before the insert did not see this feed: it is let go of here.
    if !source.is_open() {
        if let Some(feed) = FEEDS.remove(id) {
            feed.cursor().close();
        }
        return Err(closed());
    }
    unsafe { crate::args::put_out(out, id as *mut MeridianFeed, "out") }
}

/// Follows the changes to the keys starting with `prefix` (`prefix_len` 0: every key) in an
/// embedded engine, after `from` (a token of an earlier event or position, from any region or
/// process), or, when `from` is null, after every write this replica has applied now (a named
/// feed known here: after its acknowledged position). With a `name` (null for none; 1 to
/// `MERIDIAN_FEED_NAME_MAX` bytes of UTF-8), the feed is named: `meridian_feed_ack` records its
/// position in the engine, which keeps its log from there on (within the engine's retention
/// bound) and resumes a later feed of that name there. Free it with `meridian_feed_free`.
///
/// # Safety
/// `prefix` must point at `prefix_len` readable bytes; `name`, when not null, must be a
/// NUL-terminated string; `out` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn meridian_feed_open(
    engine: *const MeridianEngine,
    prefix: *const u8,
    prefix_len: usize,
    from: *const MeridianToken,
    name: *const c_char,
    out: *mut *mut MeridianFeed,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(out) };
    guard(move || {
        if out.is_null() {
            return Err(Failure::invalid("out: null out-pointer"));
        }
        let prefix = unsafe { bytes(prefix, prefix_len, crate::args::KEY_LEN_MAX, "prefix") }?;
        let name = unsafe { feed_name(name) }?;
        let from = from_token(from)?;
        // Held until the feed is registered: a close waits for it, then finds the feed.
        let e = crate::engine::engine(engine)?;
        let feed = match &name {
            Some(name) => e.named_feed(name, prefix, from.as_ref())?,
            None => e.feed(prefix, from.as_ref())?,
        };
        let position = feed.position();
        let cursor = Cursor {
            follow: Follow::Engine(Box::new(feed)),
            queue: VecDeque::new(),
            received: Some(position.clone()),
            handed: Some(position),
        };
        let done = unsafe { register(Source::Engine(engine as usize), name, cursor, out) };
        drop(e);
        done
    })
}

/// Client mode: follows the changes to the keys starting with `prefix` (`prefix_len` 0: every
/// key) through a routed client, from the nearest region that serves the watch, after `from`
/// (null: after every write that region has applied when the watch reaches it; a named feed
/// known there: after its acknowledged position). When that region fails or goes silent
/// (3 s without a frame; regions send one at least every second), the watch goes on in the
/// next from the last position received: events after it may come again. `name` (null for
/// none) names the feed in the region serving it, as `meridian_feed_open` does. The positions
/// received join the client's session token. Blocks until a region serves the watch and sends
/// its first frame (about a second; `MERIDIAN_NO_REGION` when none does within 30 s): events
/// written after this returns are seen. Free it with `meridian_feed_free`.
///
/// # Safety
/// As `meridian_feed_open`.
#[no_mangle]
pub unsafe extern "C" fn meridian_client_watch(
    client: *const MeridianClient,
    prefix: *const u8,
    prefix_len: usize,
    from: *const MeridianToken,
    name: *const c_char,
    out: *mut *mut MeridianFeed,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(out) };
    guard(move || {
        if out.is_null() {
            return Err(Failure::invalid("out: null out-pointer"));
        }
        let prefix = unsafe { bytes(prefix, prefix_len, crate::args::KEY_LEN_MAX, "prefix") }?;
        let name = unsafe { feed_name(name) }?;
        let from = from_token(from)?;
        let start = from.clone();
        let source = Source::Client(client as usize);
        let held = Held::of(client as usize)?;
        let watch = RoutedWatch::new(Held::of(client as usize)?, prefix, from, name.clone());
        let mut cursor = Cursor {
            follow: Follow::Client(ClientFollow {
                held: Some(held),
                watch: Some(watch),
                pending: None,
            }),
            queue: VecDeque::new(),
            received: None,
            handed: None,
        };
        // The first frame: the region has opened its feed, and says where it starts.
        let deadline = Instant::now() + OPEN_WAIT;
        while cursor.received.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Failure::new(
                    MeridianStatus::MeridianNoRegion,
                    format!("no region served the watch within {OPEN_WAIT:?}"),
                ));
            }
            cursor.fetch(source, left.min(SLICE))?;
        }
        if cursor.queue.is_empty() {
            cursor.handed.clone_from(&cursor.received);
        } else {
            // Before the first frame's events: where the watch started (unknown without
            // `from`: `meridian_feed_position` says so until an event is handed out).
            cursor.handed = start;
        }
        unsafe { register(source, name, cursor, out) }
    })
}

/// Waits up to `timeout_ms` milliseconds (at most `MERIDIAN_FEED_WAIT_MAX_MS`, an hour: a
/// larger value waits that long; 0 only looks) for the feed's next event and hands it out as
/// JSON into `event_json_out` (free it with `meridian_buffer_free`): a change,
/// `{"key": k, "values": [...], "token": "hex"}`, where `values` is what the key holds now in
/// the format of `meridian_read_json` (empty: deleted), or a reset, `{"reset": {"origin":
/// "...", "missing": n}, "token": "hex"}` (the writes of that origin from number `missing` on
/// could not be followed, their log being gone: scan the prefix again); keys and bytes are
/// strings when UTF-8, else `{"hex": "..."}`; `token` is the position after the event, as
/// `meridian_token_bytes` writes it, in hex (`meridian_token_from_bytes` takes it back).
/// `MERIDIAN_NOT_FOUND`, with an empty buffer, when no event came in time: not an error, call
/// again. `MERIDIAN_CLOSED` once the feed is freed or its engine or client closed (within
/// 100 ms for a wait in progress). Blocks; never calls back.
///
/// # Safety
/// `event_json_out` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn meridian_feed_next(
    feed: *mut MeridianFeed,
    timeout_ms: u64,
    event_json_out: *mut MeridianBuffer,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(event_json_out) };
    guard(move || {
        if event_json_out.is_null() {
            return Err(Failure::invalid("event_json_out: null out-pointer"));
        }
        let id = feed as usize;
        let handle = FEEDS.get(id)?;
        let wait = Duration::from_millis(timeout_ms.min(MERIDIAN_FEED_WAIT_MAX_MS));
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // A slice at a time, the lock let go in between: a free, a close, or another
            // thread's call on the feed gets in within a slice.
            if FEEDS.get(id).is_err() {
                return Err(Failure::new(
                    MeridianStatus::MeridianClosed,
                    "the feed was freed",
                ));
            }
            let event = {
                let mut cursor = handle.cursor();
                if !handle.source.is_open() {
                    cursor.close();
                    return Err(closed());
                }
                cursor.fetch(handle.source, left.min(SLICE))?;
                cursor.pop()
            };
            if let Some(event) = event {
                let json = serde_json::to_vec(&feed_event_json(&event))
                    .map_err(|e| Failure::new(MeridianStatus::MeridianInternal, e.to_string()))?;
                return unsafe { put_buffer(event_json_out, json, "event_json_out") };
            }
            if Instant::now() >= deadline {
                return Err(Failure::new(
                    MeridianStatus::MeridianNotFound,
                    "no event within the timeout (not an error: call again)",
                ));
            }
        }
    })
}

/// The feed's position into `out` (free it with `meridian_token_free`): after every event
/// handed out so far and nothing after (events received but not handed out yet are not
/// covered), including changes outside the prefix. Resume from it with `meridian_feed_open` or
/// `meridian_client_watch` (in any region or process), or acknowledge it with
/// `meridian_feed_ack`. Still answers after the feed's engine or client closed.
/// `MERIDIAN_NOT_FOUND` only for a watch opened without `from` whose first frame held events,
/// until the first of them is handed out (the region did not say where it started).
///
/// # Safety
/// `out` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn meridian_feed_position(
    feed: *mut MeridianFeed,
    out: *mut *mut MeridianToken,
) -> MeridianStatus {
    // SAFETY: null, or valid for a write, as the caller vouches.
    unsafe { crate::args::clear(out) };
    guard(move || {
        if out.is_null() {
            return Err(Failure::invalid("out: null out-pointer"));
        }
        let handle = FEEDS.get(feed as usize)?;
        let position = handle.cursor().handed.clone().ok_or_else(|| {
            Failure::new(
                MeridianStatus::MeridianNotFound,
                "no position yet: the watch's first events are not handed out",
            )
        })?;
        unsafe { maybe_token_out(out, position) }
    })
}

/// Acknowledges `token` (an event's, or `meridian_feed_position`'s) for a named feed: the
/// consumer handled every change up to it. Engine mode: recorded in the engine (durably),
/// whose log is kept from there on and where a feed opened later under the name (without
/// `from`) resumes. Client mode: recorded in every region that answers, so that the watch
/// resumes without a reset in whichever region serves it next (blocks until they answer;
/// fails only when none does). Positions only move forward. An unnamed feed holds no position: `MERIDIAN_OK`,
/// doing nothing.
#[no_mangle]
pub extern "C" fn meridian_feed_ack(
    feed: *mut MeridianFeed,
    token: *const MeridianToken,
) -> MeridianStatus {
    guard(move || {
        let handle = FEEDS.get(feed as usize)?;
        let token = token_of(token)?;
        if !handle.source.is_open() {
            return Err(closed());
        }
        let Some(name) = handle.name.clone() else {
            return Ok(());
        };
        match handle.source {
            Source::Engine(id) => {
                crate::engine::engine(id as *const MeridianEngine)?.ack_feed(&name, &token)?;
            }
            Source::Client(id) => {
                // In every region that answers (how many took it is not handed out).
                crate::client::on_client(id, async move |c| {
                    Ok(c.ack_feed(&name, &token).await.map(drop)?)
                })?;
            }
        }
        Ok(())
    })
}

/// Frees a feed (null is fine; a freed feed is refused with `MERIDIAN_CLOSED`); a
/// `meridian_feed_next` waiting on it on another thread returns `MERIDIAN_CLOSED` within
/// 100 ms. A named feed's acknowledged position stays in the engine or region.
#[no_mangle]
pub extern "C" fn meridian_feed_free(feed: *mut MeridianFeed) -> MeridianStatus {
    guard(move || {
        if feed.is_null() {
            return Ok(());
        }
        FEEDS
            .remove(feed as usize)
            .map(drop)
            .ok_or_else(|| Failure::new(MeridianStatus::MeridianClosed, "feed already freed"))
    })
}
