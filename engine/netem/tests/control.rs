//! The emulator between named nodes and its control interface.

use meridian_netem::{control, Netem, NodeAddr, ShapeChange};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;

/// Two nodes, `a` and `b` (their sockets), and an emulator between them.
async fn two_nodes() -> anyhow::Result<(UdpSocket, UdpSocket, Arc<Netem>)> {
    let a = UdpSocket::bind("127.0.0.1:0").await?;
    let b = UdpSocket::bind("127.0.0.1:0").await?;
    let node = |name: &str, s: &UdpSocket| -> std::io::Result<NodeAddr> {
        Ok(NodeAddr {
            name: name.into(),
            address: s.local_addr()?,
        })
    };
    let nodes = vec![node("a", &a)?, node("b", &b)?];
    let netem = Arc::new(Netem::full_mesh(nodes, 7).await?);
    Ok((a, b, netem))
}

/// The control interface of `netem` on a loopback port, and its task.
async fn serve(
    netem: &Arc<Netem>,
) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    Ok((addr, tokio::spawn(control::serve(listener, netem.clone()))))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_change_through_the_control_interface_while_traffic_flows() -> anyhow::Result<()> {
    let (a, b, netem) = two_nodes().await?;
    let via = netem
        .route("a", "b")
        .ok_or_else(|| anyhow::anyhow!("no route"))?;
    let (addr, server) = serve(&netem).await?;

    let mut buf = [0u8; 16];
    a.send_to(b"one", via).await?;
    tokio::time::timeout(Duration::from_secs(5), b.recv(&mut buf)).await??;

    // Cut a -> b over HTTP (blocking client on its own thread).
    let answer = tokio::task::spawn_blocking(move || {
        control::call(addr, "POST", "/links?from=a&to=b", r#"{"down": true}"#)
    })
    .await?
    .map_err(anyhow::Error::msg)?;
    assert!(answer.contains("\"down\":true"), "{answer}");
    assert!(netem.shape("a", "b")?.down && !netem.shape("b", "a")?.down);
    a.send_to(b"two", via).await?;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), b.recv(&mut buf))
            .await
            .is_err(),
        "cut"
    );

    let links = tokio::task::spawn_blocking(move || control::call(addr, "GET", "/links", ""))
        .await?
        .map_err(anyhow::Error::msg)?;
    let links: Vec<meridian_netem::LinkReport> = serde_json::from_str(&links)?;
    let ab = links
        .iter()
        .find(|l| l.from == "a" && l.to == "b")
        .ok_or_else(|| anyhow::anyhow!("no a->b"))?;
    assert_eq!((ab.stats.delivered, ab.stats.blackholed), (1, 1));

    // Bad requests are refused with a reason and change nothing.
    for (target, body) in [
        ("/links?from=a&to=zz", "{}"),
        ("/links?from=a&to=b", r#"{"loss": 2}"#),
        ("/links?from=a&to=b", r#"{"lossy": 1}"#),
        ("/links?from=a&to=a", "{}"),
        ("/links?to=b", "{}"),
    ] {
        let refused =
            tokio::task::spawn_blocking(move || control::call(addr, "POST", target, body)).await?;
        assert!(refused.is_err(), "{target} {body} accepted");
    }
    assert_eq!(netem.shape("a", "b")?.loss, 0.0);

    tokio::task::spawn_blocking(move || control::call(addr, "POST", "/heal", ""))
        .await?
        .map_err(anyhow::Error::msg)?;
    a.send_to(b"three", via).await?;
    let n = tokio::time::timeout(Duration::from_secs(5), b.recv(&mut buf)).await??;
    assert_eq!(&buf[..n], b"three");
    server.abort();
    Ok(())
}

#[tokio::test]
async fn isolating_a_node_cuts_every_link_it_has_and_nothing_else() -> anyhow::Result<()> {
    let mut nodes = Vec::new();
    let mut sockets = Vec::new();
    for name in ["a", "b", "c"] {
        let s = UdpSocket::bind("127.0.0.1:0").await?;
        nodes.push(NodeAddr {
            name: name.into(),
            address: s.local_addr()?,
        });
        sockets.push(s);
    }
    let netem = Netem::full_mesh(nodes, 1).await?;
    netem.set("a", "c", meridian_netem::Shape::delay(13.0))?;
    netem.isolate("a", true)?;
    for (from, to) in [("a", "b"), ("b", "a"), ("a", "c"), ("c", "a")] {
        assert!(netem.shape(from, to)?.down, "{from}->{to}");
    }
    assert!(!netem.shape("b", "c")?.down && !netem.shape("c", "b")?.down);
    assert_eq!(
        netem.shape("a", "c")?.latency_ms,
        13.0,
        "other settings kept"
    );
    netem.isolate("a", false)?;
    assert!(netem.report_all().iter().all(|l| !l.shape.down));
    assert!(netem
        .change("a", "nobody", false, &ShapeChange::down(true))
        .is_err());
    Ok(())
}

#[tokio::test]
async fn requests_the_interface_cannot_read_get_an_answer_saying_why() -> anyhow::Result<()> {
    let (_a, _b, netem) = two_nodes().await?;
    let (addr, server) = serve(&netem).await?;
    let raw = |request: Vec<u8>| {
        tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
            use std::io::{Read, Write};
            let mut sock = std::net::TcpStream::connect(addr)?;
            sock.set_read_timeout(Some(Duration::from_secs(10)))?;
            sock.write_all(&request)?;
            sock.shutdown(std::net::Shutdown::Write)?;
            let mut answer = String::new();
            sock.read_to_string(&mut answer)?;
            Ok(answer)
        })
    };
    let chunked = b"POST /links?from=a&to=b HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n4\r\n{}\r\n0\r\n\r\n";
    let answer = raw(chunked.to_vec()).await??;
    assert!(answer.starts_with("HTTP/1.1 411"), "{answer}");
    let mut huge = b"POST /links?from=a&to=b HTTP/1.1\r\nx: ".to_vec();
    huge.extend(std::iter::repeat_n(b'x', 100_000));
    let answer = raw(huge).await??;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let answer = raw(b"GET /nothing HTTP/1.1\r\n\r\n".to_vec()).await??;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(!netem.shape("a", "b")?.down, "nothing changed");
    server.abort();
    Ok(())
}
