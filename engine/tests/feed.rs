//! The change feed on real engines: every change under a prefix after a position, with its
//! latest state; tokens that resume in another region; resets instead of silent gaps; named
//! feeds that hold the log back within their bound.

#![allow(clippy::unwrap_used)]

mod common;

use common::Net;
use meridian::{CausalToken, Config, Engine, FeedEvent, ReadValue, FEED_BATCH_ENTRIES};
use std::collections::BTreeMap;
use std::time::Duration;

/// Every event ready now, refill after refill, until the feed has caught up.
fn drain(feed: &mut meridian::Feed) -> Vec<FeedEvent> {
    let mut out = Vec::new();
    loop {
        let got = feed.poll().unwrap();
        if got.is_empty() && feed.caught_up() {
            return out;
        }
        out.extend(got);
    }
}

/// The changes among `events` as key -> register values (empty: deleted), the last per key.
fn latest(events: &[FeedEvent]) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for e in events {
        let FeedEvent::Change(c) = e else {
            panic!("unexpected {e:?}")
        };
        let values = c
            .values
            .iter()
            .flat_map(|v| match v {
                ReadValue::Register(s) => s.values.clone(),
                other => panic!("unexpected {other:?}"),
            })
            .map(|v| String::from_utf8(v).unwrap())
            .collect();
        out.insert(String::from_utf8(c.key.clone()).unwrap(), values);
    }
    out
}

#[test]
fn a_feed_hands_out_each_changed_key_under_its_prefix_with_its_latest_state() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), Config::default()).unwrap();
    e.put(b"a/early", b"before the feed").unwrap();
    let mut feed = e.feed(b"a/", None).unwrap();
    e.put(b"a/1", b"one").unwrap();
    e.put(b"b/1", b"elsewhere").unwrap();
    e.put(b"a/2", b"two").unwrap();
    e.put(b"a/1", b"one again").unwrap();
    e.delete(b"a/2").unwrap();
    let events = drain(&mut feed);
    let keys: Vec<&[u8]> = events
        .iter()
        .map(|e| match e {
            FeedEvent::Change(c) => c.key.as_slice(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    // Each key once, after its last write in the batch; nothing outside the prefix or before
    // the feed began.
    assert_eq!(keys, vec![&b"a/1"[..], b"a/2"]);
    let got = latest(&events);
    assert_eq!(got["a/1"], vec!["one again"]);
    assert!(got["a/2"].is_empty(), "a deletion has no values: {got:?}");
    assert_eq!(feed.position(), CausalToken(e.applied()));

    // A token resumes after its change: from a/1's, only a/2 (and what came later).
    let FeedEvent::Change(first) = &events[0] else {
        unreachable!()
    };
    e.put(b"a/3", b"three").unwrap();
    let mut resumed = e.feed(b"a/", Some(&first.token)).unwrap();
    let again = latest(&drain(&mut resumed));
    assert_eq!(
        again.keys().collect::<Vec<_>>(),
        vec!["a/2", "a/3"],
        "{again:?}"
    );
}

#[test]
fn a_waiting_feed_wakes_for_a_write_and_a_refill_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), Config::default()).unwrap();
    let mut feed = e.feed(b"", None).unwrap();
    assert_eq!(feed.next_timeout(Duration::from_millis(20)).unwrap(), None);
    let writer = {
        let e = e.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            e.put(b"k", b"v").unwrap();
        })
    };
    let event = feed.next_timeout(Duration::from_secs(10)).unwrap();
    writer.join().unwrap();
    assert!(
        matches!(&event, Some(FeedEvent::Change(c)) if c.key == b"k"),
        "{event:?}"
    );

    // A slow consumer costs one refill: the log is read as the feed is asked.
    for i in 0..(FEED_BATCH_ENTRIES + 500) {
        e.put(format!("k{i:05}").as_bytes(), b"v").unwrap();
    }
    let first = feed.poll().unwrap();
    assert_eq!(first.len(), FEED_BATCH_ENTRIES);
    let rest = drain(&mut feed);
    assert_eq!(rest.len(), 500);
}

#[test]
fn a_token_from_one_region_resumes_the_feed_in_another() {
    let mut net = Net::new(2);
    let mut feed = net.engine(0).feed(b"cart/", None).unwrap();
    for i in 0..10 {
        net.engine(0)
            .put(format!("cart/{i}").as_bytes(), b"a")
            .unwrap();
    }
    net.run(500);
    let events = drain(&mut feed);
    assert_eq!(events.len(), 10);
    // The consumer handled four changes, then its region went away.
    let token = events[3].token().clone();
    for i in 10..15 {
        net.engine(1)
            .put(format!("cart/{i}").as_bytes(), b"b")
            .unwrap();
    }
    net.run(500);
    let mut elsewhere = net.engine(1).feed(b"cart/", Some(&token)).unwrap();
    let got = latest(&drain(&mut elsewhere));
    let expected: Vec<String> = (4..15).map(|i| format!("cart/{i}")).collect();
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), {
        let mut e = expected.clone();
        e.sort();
        e
    });
    assert!(
        got.keys()
            .all(|k| !["cart/0", "cart/1", "cart/2", "cart/3"].contains(&k.as_str())),
        "resumed before its token: {got:?}"
    );
}

/// Writes `n` keys (`idx/0`...) in region 0; returns the sequence number of the first.
fn write_keys(net: &Net, n: usize) -> u64 {
    let origin = net.engine(0).origin_id();
    let first = net.engine(0).applied().get(origin) + 1;
    for i in 0..n {
        net.engine(0)
            .put(format!("idx/{i}").as_bytes(), b"v")
            .unwrap();
    }
    first
}

/// Whether region 0's log still holds its own write `seq`.
fn logged(net: &Net, seq: u64) -> bool {
    let e = net.engine(0);
    e.engine()
        .store()
        .get_log(e.origin_id(), seq)
        .unwrap()
        .is_some()
}

/// Lets time pass until compaction truncated region 0's log through its write `seq`.
fn run_until_truncated(net: &mut Net, seq: u64) {
    for _ in 0..40 {
        net.run(500);
        if !logged(net, seq) {
            return;
        }
    }
    panic!("compaction never truncated the log");
}

#[test]
fn a_feed_behind_a_truncated_log_is_reset_and_an_acknowledged_named_feed_is_not() {
    let mut net = Net::new(2);
    let e = net.engine(0).engine().clone();
    let mut unnamed = e.feed(b"idx/", None).unwrap();
    let mut named = e.named_feed("indexer", b"idx/", None).unwrap();
    // The named feed, acknowledged at the start, holds the log through compactions.
    let first = write_keys(&net, 50);
    net.run(8_000);
    assert!(
        logged(&net, first),
        "the log was truncated under a named feed's position"
    );
    let held = drain(&mut named);
    assert_eq!(latest(&held).len(), 50, "the named feed lost changes");
    assert_eq!(latest(&drain(&mut unnamed)).len(), 50);
    // Acknowledged: the log goes, and a feed still at the start is reset, not silently
    // skipped forward.
    named.ack(&named.position()).unwrap();
    run_until_truncated(&mut net, first);
    let mut late = e.feed(b"idx/", Some(&CausalToken::default())).unwrap();
    let events = drain(&mut late);
    assert!(
        matches!(events.first(), Some(FeedEvent::Reset { .. })),
        "{events:?}"
    );
    // After the reset the feed goes on: a later write is handed out.
    e.put(b"idx/after", b"v").unwrap();
    let after = latest(&drain(&mut late));
    assert!(after.contains_key("idx/after"), "{after:?}");
    // The named feed resumes where it was acknowledged when opened again.
    drop(named);
    let mut named = e.named_feed("indexer", b"idx/", None).unwrap();
    let resumed = latest(&drain(&mut named));
    assert_eq!(resumed.keys().collect::<Vec<_>>(), vec!["idx/after"]);
}

#[test]
fn a_named_feed_holds_the_log_only_within_its_bound() {
    let mut net = Net::new(2);
    net.stop(0);
    net.start_tuned(0, |c| c.feed_retention_entries = 10);
    let e = net.engine(0).engine().clone();
    let mut named = e.named_feed("slow", b"idx/", None).unwrap();
    let first = write_keys(&net, 50);
    run_until_truncated(&mut net, first);
    let events = drain(&mut named);
    assert!(
        matches!(events.first(), Some(FeedEvent::Reset { .. })),
        "{events:?}"
    );
}

#[test]
fn feed_names_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), Config::default()).unwrap();
    assert!(e.named_feed("", b"", None).is_err());
    assert!(e.named_feed(&"x".repeat(257), b"", None).is_err());
    assert_eq!(e.feed_position("never").unwrap(), None);
    e.ack_feed("f", &CausalToken(e.applied())).unwrap();
    assert!(e.feed_position("f").unwrap().is_some());
    e.drop_feed("f").unwrap();
    assert_eq!(e.feed_position("f").unwrap(), None);
    // A position naming more origins than any cluster has is refused, not copied into every
    // event.
    let wide = CausalToken(meridian::VersionVector::from_entries(
        (1..=5_000u64).map(|i| (meridian::OriginId(i), 1)),
    ));
    assert!(matches!(
        e.feed(b"", Some(&wide)),
        Err(meridian::Error::InvalidOperation(_))
    ));
}

/// Runs `future` on this thread, parking while it is pending (a minimal executor: the feed
/// needs no particular async runtime).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park_timeout(Duration::from_secs(10));
    }
}

#[test]
fn an_awaited_feed_is_woken_by_a_write_on_another_thread() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), Config::default()).unwrap();
    let mut feed = e.feed(b"", None).unwrap();
    let writer = {
        let e = e.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            e.put(b"async", b"v").unwrap();
        })
    };
    let started = std::time::Instant::now();
    let event = block_on(feed.next_event()).unwrap();
    writer.join().unwrap();
    assert!(
        matches!(&event, FeedEvent::Change(c) if c.key == b"async"),
        "{event:?}"
    );
    // Woken by the write, not by the executor's fallback wake-up.
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_feed_reads_past_a_backlog_outside_its_prefix_without_waiting_for_a_write() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), Config::default()).unwrap();
    let mut feed = e.feed(b"wanted/", None).unwrap();
    for i in 0..(3 * FEED_BATCH_ENTRIES) {
        e.put(format!("other/{i}").as_bytes(), b"v").unwrap();
    }
    e.put(b"wanted/1", b"v").unwrap();
    // No write comes after: the feed must read past three refills of others by itself.
    let event = feed.next_timeout(Duration::from_millis(200)).unwrap();
    assert!(
        matches!(&event, Some(FeedEvent::Change(c)) if c.key == b"wanted/1"),
        "{event:?}"
    );
    assert_eq!(feed.position(), CausalToken(e.applied()));
}

#[test]
fn the_changes_of_one_batch_resume_from_any_of_them_without_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), Config::default()).unwrap();
    let mut feed = e.feed(b"", None).unwrap();
    e.write(
        meridian::Batch::new()
            .put("a", "1")
            .put("b", "2")
            .put("c", "3"),
    )
    .unwrap();
    let events = drain(&mut feed);
    assert_eq!(events.len(), 3);
    // Resumed from the first change's token, the batch's other keys come again.
    let mut resumed = e.feed(b"", Some(events[0].token())).unwrap();
    let again = latest(&drain(&mut resumed));
    assert!(
        again.contains_key("b") && again.contains_key("c"),
        "{again:?}"
    );
    // From the last one's, nothing.
    let mut done = e.feed(b"", Some(events[2].token())).unwrap();
    assert!(drain(&mut done).is_empty());
}

#[test]
fn a_refill_stops_near_its_byte_budget() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), Config::default()).unwrap();
    let mut feed = e.feed(b"", None).unwrap();
    let big = vec![b'x'; 1 << 20];
    for i in 0..10 {
        e.put(format!("big/{i}").as_bytes(), &big).unwrap();
    }
    let first = feed.poll().unwrap();
    assert!(
        (1..10).contains(&first.len()),
        "one refill handed out {} MiB-sized changes",
        first.len()
    );
    assert!(!feed.caught_up());
    let rest = drain(&mut feed);
    assert_eq!(first.len() + rest.len(), 10);
    // A wait as long as anyone may ask for does not overflow.
    e.put(b"big/after", b"v").unwrap();
    assert!(feed.next_timeout(Duration::MAX).unwrap().is_some());
}

#[test]
fn a_feed_from_a_position_this_region_has_not_applied_hands_out_nothing_until_it_has() {
    let mut net = Net::new(2);
    net.cut.insert((0, 1));
    net.cut.insert((1, 0));
    let token = net.engine(1).put(b"k", b"theirs").unwrap();
    net.engine(0).put(b"k", b"ours").unwrap();
    // A consumer handed region 1's write resumes in region 0, which has not applied it: the
    // key's state there is older than what it was handed.
    let mut feed = net.engine(0).feed(b"", Some(&token)).unwrap();
    assert!(drain(&mut feed).is_empty());
    net.cut.clear();
    net.run(1_000);
    let got = latest(&drain(&mut feed));
    let mut values = got["k"].clone();
    values.sort();
    assert_eq!(values, vec!["ours", "theirs"]);
}

#[test]
fn an_acknowledged_position_cannot_grow_past_its_width() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), Config::default()).unwrap();
    let wide = |from: u64| {
        CausalToken(meridian::VersionVector::from_entries(
            (from..from + 3_000).map(|i| (meridian::OriginId(i), 1)),
        ))
    };
    e.ack_feed("f", &wide(1)).unwrap();
    assert!(e.ack_feed("f", &wide(10_000)).is_err());
    // The stored position still reads.
    assert!(e.feed_position("f").unwrap().is_some());
}
