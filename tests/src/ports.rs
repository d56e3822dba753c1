//! Free loopback ports for nodes, picked below the kernel's ephemeral range as every local
//! cluster's are (`meridian_config::local_cluster`: the one layout `meridian local-cluster`
//! and this kit share).

use std::net::SocketAddr;

/// A loopback UDP address no socket holds now (for a node's QUIC endpoint).
pub fn free_udp() -> anyhow::Result<SocketAddr> {
    Ok(meridian_config::local_cluster::free_udp()?)
}

/// A loopback TCP address no socket holds now (for a node's metrics endpoint).
pub fn free_tcp() -> anyhow::Result<SocketAddr> {
    Ok(meridian_config::local_cluster::free_tcp()?)
}
