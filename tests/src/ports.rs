//! Free loopback ports for nodes. A port is free when picked and bound by a node a moment
//! later; another socket could take it in between, which is why starts are retried. Ports are
//! picked below the kernel's ephemeral range (32768 and up on Linux): the sockets clients,
//! relays and scrapers open bind there, and one of them taking a stopped node's port would
//! keep it from restarting on it.

use std::net::SocketAddr;

/// Ports picked from here (below Linux's default ephemeral range).
const PICKED: std::ops::Range<u16> = 20_000..32_000;

/// Tries random ports of [`PICKED`] with `bind` (falling back to an ephemeral port).
fn pick<S>(
    bind: impl Fn(SocketAddr) -> std::io::Result<S>,
    addr: impl Fn(&S) -> std::io::Result<SocketAddr>,
) -> anyhow::Result<SocketAddr> {
    let mut rng = fastrand::Rng::new();
    for _ in 0..64 {
        let candidate = SocketAddr::from(([127, 0, 0, 1], rng.u16(PICKED)));
        if let Ok(socket) = bind(candidate) {
            return Ok(addr(&socket)?);
        }
    }
    let socket = bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    Ok(addr(&socket)?)
}

/// A loopback UDP address no socket holds now (for a node's QUIC endpoint).
pub fn free_udp() -> anyhow::Result<SocketAddr> {
    pick(std::net::UdpSocket::bind, std::net::UdpSocket::local_addr)
}

/// A loopback TCP address no socket holds now (for a node's metrics endpoint).
pub fn free_tcp() -> anyhow::Result<SocketAddr> {
    pick(
        std::net::TcpListener::bind,
        std::net::TcpListener::local_addr,
    )
}
