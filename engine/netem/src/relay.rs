//! One relay: datagrams sent to its front address go to the upstream through the forward
//! link, the upstream's answers come back through the back link. Each client (source address)
//! gets a socket of its own towards the upstream, so the upstream sees one peer per client (as
//! behind a NAT).

use crate::direction::{Direction, Tagged};
use crate::link::Link;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::UdpSocket;
use tokio::task::{AbortHandle, JoinSet};

/// Largest datagram relayed (UDP's payload limit).
const DATAGRAM_MAX: usize = 65_535;

/// Clients (source addresses) one relay serves; datagrams of more are dropped (a relay sits
/// in front of one node, for the few nodes that dial it; sessions do not expire).
const CLIENTS_MAX: usize = 64;

/// Kernel buffer asked for on each side: the relay receives a sender's bursts on one task,
/// and a default buffer (about 200 KiB) drops what a burst holds beyond it, which a real
/// link's router would have queued.
const SOCKET_BUFFER_BYTES: usize = 8 << 20;

/// The upstream-facing socket of each client, by the client's address.
type Sessions = Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>>;

/// A running relay; dropping it stops it.
pub struct Relay {
    front: SocketAddr,
    _tasks: JoinSet<()>,
    session_tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        for task in lock(&self.session_tasks).drain(..) {
            task.abort();
        }
    }
}

impl Relay {
    /// A relay on an ephemeral loopback port towards `upstream`.
    pub async fn start(
        upstream: SocketAddr,
        forward: Arc<Link>,
        back: Arc<Link>,
        seed: u64,
    ) -> std::io::Result<Relay> {
        Relay::start_on(loopback(), upstream, forward, back, seed).await
    }

    /// A relay that only delays, by `one_way` each way, on an ephemeral loopback port.
    pub async fn delay(
        upstream: SocketAddr,
        one_way: std::time::Duration,
    ) -> std::io::Result<Relay> {
        let shape = crate::Shape::delay(one_way.as_secs_f64() * 1000.0);
        let link = || Arc::new(Link::new(shape));
        Relay::start(upstream, link(), link(), 0).await
    }

    /// A relay listening on `front` towards `upstream`: `forward` shapes what clients send,
    /// `back` what the upstream answers; `seed` drives loss, duplication, jitter and
    /// reordering.
    pub async fn start_on(
        front: SocketAddr,
        upstream: SocketAddr,
        forward: Arc<Link>,
        back: Arc<Link>,
        seed: u64,
    ) -> std::io::Result<Relay> {
        let socket = Arc::new(udp_socket(front)?);
        let front_addr = socket.local_addr()?;
        let sessions: Sessions = Arc::default();
        let session_tasks: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let to_upstream = Arc::new(Direction::new(forward, seed));
        let to_client = Arc::new(Direction::new(back, seed ^ 0x9e37_79b9_7f4a_7c15));
        let mut tasks = JoinSet::new();
        {
            let (socket, to_upstream, to_client) =
                (socket.clone(), to_upstream.clone(), to_client.clone());
            let (sessions, session_tasks) = (sessions.clone(), session_tasks.clone());
            tasks.spawn(async move {
                let mut buf = vec![0u8; DATAGRAM_MAX];
                loop {
                    let (n, from) = match socket.recv_from(&mut buf).await {
                        Ok(got) => got,
                        // An ICMP error for an earlier send to a client that went away.
                        Err(e) if transient(&e) => continue,
                        Err(e) => {
                            tracing::warn!(error = %e, "relay front socket failed");
                            break;
                        }
                    };
                    let known = lock(&sessions).contains_key(&from);
                    if !known {
                        let Some(back) = open_session(upstream, from, &sessions).await else {
                            continue;
                        };
                        let task = tokio::spawn(relay_replies(
                            back,
                            from,
                            to_client.clone(),
                            sessions.clone(),
                        ));
                        lock(&session_tasks).push(task.abort_handle());
                    }
                    to_upstream.admit((from, buf[..n].to_vec()));
                }
            });
        }
        tasks.spawn(async move {
            loop {
                let (from, datagram) = to_upstream.next_due().await;
                let back = lock(&sessions).get(&from).cloned();
                if let Some(back) = back {
                    let _ = back.send(&datagram).await; // lost, as on a real link
                }
            }
        });
        tasks.spawn(async move {
            loop {
                let (to, datagram): Tagged = to_client.next_due().await;
                let _ = socket.send_to(&datagram, to).await;
            }
        });
        Ok(Relay {
            front: front_addr,
            _tasks: tasks,
            session_tasks,
        })
    }

    /// The address clients send to.
    pub fn front(&self) -> SocketAddr {
        self.front
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Errors a UDP socket reports for an earlier datagram (an ICMP answer), not for itself.
fn transient(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
    )
}

/// A socket towards `upstream` for client `from`, registered; `None` when the relay serves as
/// many clients as it may, or no socket can be had.
async fn open_session(
    upstream: SocketAddr,
    from: SocketAddr,
    sessions: &Sessions,
) -> Option<Arc<UdpSocket>> {
    if lock(sessions).len() >= CLIENTS_MAX {
        return None;
    }
    let back = Arc::new(udp_socket(local_for(upstream)).ok()?);
    back.connect(upstream).await.ok()?;
    lock(sessions).insert(from, back.clone());
    Some(back)
}

/// Port 0 on an address that reaches `upstream`: loopback for a loopback upstream, else any.
fn local_for(upstream: SocketAddr) -> SocketAddr {
    use std::net::{Ipv4Addr, Ipv6Addr};
    match (upstream.is_ipv4(), upstream.ip().is_loopback()) {
        (true, true) => loopback(),
        (true, false) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        (false, true) => SocketAddr::from((Ipv6Addr::LOCALHOST, 0)),
        (false, false) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    }
}

/// Port 0 on 127.0.0.1.
fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Passes the upstream's answers for client `to` to the back direction; when its socket
/// fails, forgets the session (the client's next datagram opens another).
async fn relay_replies(
    back: Arc<UdpSocket>,
    to: SocketAddr,
    direction: Arc<Direction>,
    sessions: Sessions,
) {
    let mut buf = vec![0u8; DATAGRAM_MAX];
    loop {
        match back.recv(&mut buf).await {
            Ok(n) => direction.admit((to, buf[..n].to_vec())),
            // The upstream was not listening (an ICMP error on this connected socket): it may
            // be soon, as a restarted node is.
            Err(e) if transient(&e) => {}
            Err(e) => {
                tracing::warn!(client = %to, error = %e, "relay session failed");
                break;
            }
        }
    }
    let mut sessions = lock(&sessions);
    if sessions.get(&to).is_some_and(|s| Arc::ptr_eq(s, &back)) {
        sessions.remove(&to);
    }
}

/// A UDP socket bound to `addr` with large kernel buffers.
fn udp_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: the kernel caps them at net.core.rmem_max / wmem_max.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}
