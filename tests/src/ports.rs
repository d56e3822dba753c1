//! Free loopback ports. A port is free when picked and bound by a node a moment later; another
//! socket's ephemeral port can land on it in between, which is why starts are retried.

use std::net::SocketAddr;

/// A loopback UDP address no socket holds now (for a node's QUIC endpoint).
pub fn free_udp() -> anyhow::Result<SocketAddr> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?)
}

/// A loopback TCP address no socket holds now (for a node's metrics endpoint).
pub fn free_tcp() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}
