//! Each impairment measured through a relay on loopback: a datagram source, the relay, and a
//! sink that echoes or counts.

use meridian_netem::{Link, Relay, Shape};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

const WAIT: Duration = Duration::from_secs(10);

/// A relay from a fresh client socket to a fresh server socket, shaped `forward` and `back`.
struct Bench {
    client: UdpSocket,
    server: UdpSocket,
    relay: Relay,
    forward: Arc<Link>,
    back: Arc<Link>,
}

async fn bench(forward: Shape, back: Shape) -> anyhow::Result<Bench> {
    let server = UdpSocket::bind("127.0.0.1:0").await?;
    let client = UdpSocket::bind("127.0.0.1:0").await?;
    let (forward, back) = (Arc::new(Link::new(forward)), Arc::new(Link::new(back)));
    let relay = Relay::start(server.local_addr()?, forward.clone(), back.clone(), 42).await?;
    Ok(Bench {
        client,
        server,
        relay,
        forward,
        back,
    })
}

/// Sends `count` numbered datagrams of `size` bytes (at least 8), `gap` apart.
async fn send_numbered(b: &Bench, count: u64, size: usize, gap: Duration) -> anyhow::Result<()> {
    let mut buf = vec![0u8; size.max(8)];
    for i in 0..count {
        buf[..8].copy_from_slice(&i.to_be_bytes());
        b.client.send_to(&buf, b.relay.front()).await?;
        if !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
    }
    Ok(())
}

/// Sends as [`send_numbered`] while the server receives (its kernel buffer would overflow
/// otherwise), and returns what it received.
async fn exchange(
    b: &Bench,
    count: u64,
    size: usize,
    gap: Duration,
    quiet: Duration,
) -> anyhow::Result<Vec<(u64, Instant)>> {
    let (sent, got) = tokio::join!(
        send_numbered(b, count, size, gap),
        receive_numbered(&b.server, quiet)
    );
    sent?;
    Ok(got)
}

/// Numbers of the datagrams the server receives until `quiet` passes without one.
async fn receive_numbered(server: &UdpSocket, quiet: Duration) -> Vec<(u64, Instant)> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65_535];
    while let Ok(Ok(n)) = tokio::time::timeout(quiet, server.recv(&mut buf)).await {
        if n >= 8 {
            let mut number = [0u8; 8];
            number.copy_from_slice(&buf[..8]);
            got.push((u64::from_be_bytes(number), Instant::now()));
        }
    }
    got
}

#[tokio::test]
async fn a_50ms_link_measures_50ms_one_way() -> anyhow::Result<()> {
    let b = bench(Shape::delay(50.0), Shape::default()).await?;
    let mut delays = Vec::new();
    let mut buf = [0u8; 64];
    for _ in 0..15 {
        let sent = Instant::now();
        b.client.send_to(b"ping", b.relay.front()).await?;
        tokio::time::timeout(WAIT, b.server.recv_from(&mut buf)).await??;
        delays.push(sent.elapsed());
    }
    delays.sort();
    let median = delays[delays.len() / 2];
    println!("50 ms link: median one way {median:?}, min {:?}", delays[0]);
    assert!(delays[0] >= Duration::from_millis(50), "{delays:?}");
    // A loaded machine wakes timers late; it never wakes them early.
    assert!(median < Duration::from_millis(120), "median {median:?}");
    Ok(())
}

#[tokio::test]
async fn both_directions_add_up_to_the_round_trip() -> anyhow::Result<()> {
    let b = bench(Shape::delay(20.0), Shape::delay(30.0)).await?;
    let mut buf = [0u8; 64];
    let sent = Instant::now();
    b.client.send_to(b"ping", b.relay.front()).await?;
    let (_, relay_side) = tokio::time::timeout(WAIT, b.server.recv_from(&mut buf)).await??;
    b.server.send_to(b"pong", relay_side).await?;
    tokio::time::timeout(WAIT, b.client.recv(&mut buf)).await??;
    let rtt = sent.elapsed();
    println!("20 ms + 30 ms link: round trip {rtt:?}");
    assert!(rtt >= Duration::from_millis(50), "{rtt:?}");
    assert!(rtt < Duration::from_millis(250), "{rtt:?}");
    Ok(())
}

#[tokio::test]
async fn ten_percent_loss_loses_about_ten_percent() -> anyhow::Result<()> {
    let shape = Shape {
        loss: 0.1,
        ..Shape::default()
    };
    let b = bench(shape, Shape::default()).await?;
    let sent = 2_000;
    let got = exchange(
        &b,
        sent,
        64,
        Duration::from_micros(200),
        Duration::from_millis(500),
    )
    .await?;
    let lost = sent - got.len() as u64;
    let share = lost as f64 / sent as f64;
    println!("10% loss: {lost} of {sent} lost ({:.1}%)", share * 100.0);
    assert!((0.07..=0.13).contains(&share), "lost {share:.3}");
    let stats = b.forward.stats();
    assert_eq!(stats.lost, lost, "the link counts what it dropped");
    assert_eq!(stats.received, sent);
    Ok(())
}

#[tokio::test]
async fn duplication_delivers_copies() -> anyhow::Result<()> {
    let shape = Shape {
        duplicate: 0.2,
        ..Shape::default()
    };
    let b = bench(shape, Shape::default()).await?;
    let got = exchange(
        &b,
        1_000,
        64,
        Duration::from_micros(200),
        Duration::from_millis(500),
    )
    .await?;
    let extra = got.len() as f64 / 1_000.0 - 1.0;
    println!("20% duplication: {} delivered for 1000 sent", got.len());
    assert!((0.15..=0.25).contains(&extra), "duplicated {extra:.3}");
    assert_eq!(b.forward.stats().duplicated as usize, got.len() - 1_000);
    Ok(())
}

#[tokio::test]
async fn reordering_sends_some_ahead_and_jitter_alone_does_not() -> anyhow::Result<()> {
    let out_of_order = |got: &[(u64, Instant)]| got.windows(2).filter(|w| w[1].0 < w[0].0).count();
    let jittery = Shape {
        latency_ms: 20.0,
        jitter_ms: 10.0,
        ..Shape::default()
    };
    let b = bench(jittery, Shape::default()).await?;
    let got = exchange(
        &b,
        300,
        64,
        Duration::from_millis(1),
        Duration::from_millis(500),
    )
    .await?;
    assert_eq!(got.len(), 300);
    assert_eq!(out_of_order(&got), 0, "jitter keeps the order");

    let reordering = Shape {
        reorder: 0.25,
        ..jittery
    };
    let b = bench(reordering, Shape::default()).await?;
    let got = exchange(
        &b,
        300,
        64,
        Duration::from_millis(1),
        Duration::from_millis(500),
    )
    .await?;
    assert_eq!(got.len(), 300, "reordering loses nothing");
    let reordered = b.forward.stats().reordered;
    println!(
        "25% reordering: {reordered} of 300 sent ahead, {} arrived after a later one",
        out_of_order(&got)
    );
    assert!((40..=110).contains(&reordered), "{reordered} sent ahead");
    assert!(
        out_of_order(&got) > 10,
        "{} out of order",
        out_of_order(&got)
    );
    Ok(())
}

#[tokio::test]
async fn a_bandwidth_cap_holds_throughput_to_it() -> anyhow::Result<()> {
    // 8 Mbit/s is 1,000 bytes per millisecond: 300 datagrams of 1,000 bytes take 300 ms.
    let capped = Shape {
        rate_kbit: Some(8_000),
        ..Shape::default()
    };
    let b = bench(capped, Shape::default()).await?;
    let started = Instant::now();
    let got = exchange(&b, 300, 1_000, Duration::ZERO, Duration::from_millis(500)).await?;
    assert_eq!(got.len(), 300, "a second of backlog holds them all");
    let span = got.last().map(|g| g.1 - started).unwrap_or_default();
    println!(
        "8 Mbit/s cap: 300,000 bytes in {span:?} ({:.2} Mbit/s)",
        2.4 / span.as_secs_f64()
    );
    assert!(span >= Duration::from_millis(290), "took {span:?}");
    Ok(())
}

#[tokio::test]
async fn a_one_way_cut_drops_one_direction_only() -> anyhow::Result<()> {
    let b = bench(Shape::default(), Shape::default()).await?;
    let mut buf = [0u8; 64];
    b.client.send_to(b"hello", b.relay.front()).await?;
    let (_, relay_side) = tokio::time::timeout(WAIT, b.server.recv_from(&mut buf)).await??;
    b.forward.set_shape(Shape {
        down: true,
        ..Shape::default()
    });
    b.client.send_to(b"cut", b.relay.front()).await?;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), b.server.recv(&mut buf))
            .await
            .is_err(),
        "nothing crosses the cut direction"
    );
    b.server.send_to(b"back", relay_side).await?;
    let n = tokio::time::timeout(WAIT, b.client.recv(&mut buf)).await??;
    assert_eq!(&buf[..n], b"back", "the other direction still passes");
    assert_eq!(b.forward.stats().blackholed, 1);
    assert_eq!(b.back.stats().delivered, 1);
    b.forward.set_shape(Shape::default());
    b.client.send_to(b"healed", b.relay.front()).await?;
    let n = tokio::time::timeout(WAIT, b.server.recv(&mut buf)).await??;
    assert_eq!(&buf[..n], b"healed");
    Ok(())
}

#[tokio::test]
async fn a_restarted_upstream_is_reached_again() -> anyhow::Result<()> {
    // Nothing listens at first: the first datagram bounces off the closed port.
    let port = UdpSocket::bind("127.0.0.1:0").await?.local_addr()?;
    let relay = Relay::delay(port, Duration::from_millis(1)).await?;
    let client = UdpSocket::bind("127.0.0.1:0").await?;
    client.send_to(b"early", relay.front()).await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let server = UdpSocket::bind(port).await?;
    client.send_to(b"ping", relay.front()).await?;
    let mut buf = [0u8; 16];
    let (n, relay_side) = tokio::time::timeout(WAIT, server.recv_from(&mut buf)).await??;
    assert_eq!(&buf[..n], b"ping");
    server.send_to(b"pong", relay_side).await?;
    let n = tokio::time::timeout(WAIT, client.recv(&mut buf)).await??;
    assert_eq!(&buf[..n], b"pong", "replies still come back");
    Ok(())
}
