//! A UDP relay on loopback that holds every datagram for a fixed time in each direction: a
//! wide-area link's round trip between two processes of one machine, without `tc netem` (which
//! needs a kernel module and privileges). Several clients at once (up to 64), each relayed
//! through a socket of its own.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::Notify;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

/// Bytes one direction may hold; beyond it datagrams are dropped, as a full router queue does.
const QUEUE_BYTES_MAX: usize = 64 << 20;

/// Largest datagram relayed (UDP's payload limit).
const DATAGRAM_MAX: usize = 65_535;

/// Clients (source addresses) one relay serves; datagrams of more are dropped.
const CLIENTS_MAX: usize = 64;

/// A datagram with the client it comes from or goes to.
type Tagged = (SocketAddr, Vec<u8>);

/// The upstream-facing socket of each client, by the client's address.
type Sessions = Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>>;

/// A running relay; dropping it stops it.
pub struct DelayProxy {
    front: SocketAddr,
    _tasks: JoinSet<()>,
    sessions: Arc<Mutex<Vec<AbortHandle>>>,
    blocked: Blocked,
}

/// Clients whose datagrams are dropped both ways (a partition).
type Blocked = Arc<Mutex<Vec<SocketAddr>>>;

impl Drop for DelayProxy {
    fn drop(&mut self) {
        for task in self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}

impl DelayProxy {
    /// Relays between the clients sending to `front()` and `upstream`, each datagram held
    /// `one_way` before it is passed on. Each client gets a socket of its own towards the
    /// upstream, so the upstream sees one peer per client (as behind a NAT).
    pub async fn start(upstream: SocketAddr, one_way: Duration) -> std::io::Result<DelayProxy> {
        let front = Arc::new(loopback_socket()?);
        let sessions: Sessions = Arc::default();
        let blocked: Blocked = Arc::default();
        let session_tasks: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let to_upstream = Arc::new(Queue::default());
        let to_client = Arc::new(Queue::default());
        let mut tasks = JoinSet::new();
        let front_addr = front.local_addr()?;
        {
            let (front, queue) = (front.clone(), to_upstream.clone());
            let (sessions, session_tasks, replies) =
                (sessions.clone(), session_tasks.clone(), to_client.clone());
            let blocked = blocked.clone();
            tasks.spawn(async move {
                let mut buf = vec![0u8; DATAGRAM_MAX];
                while let Ok((n, from)) = front.recv_from(&mut buf).await {
                    if lock(&blocked).contains(&from) {
                        continue;
                    }
                    let known = lock(&sessions).contains_key(&from);
                    if !known {
                        let Some(back) = open_session(upstream, from, &sessions).await else {
                            continue;
                        };
                        let task =
                            tokio::spawn(relay_replies(back, from, replies.clone(), one_way));
                        lock(&session_tasks).push(task.abort_handle());
                    }
                    queue.push((from, buf[..n].to_vec()), one_way);
                }
            });
        }
        tasks.spawn(async move {
            while let Some((from, datagram)) = to_upstream.pop_due().await {
                let back = lock(&sessions).get(&from).cloned();
                if let Some(back) = back {
                    let _ = back.send(&datagram).await; // lost, as on a real link
                }
            }
        });
        {
            let blocked = blocked.clone();
            tasks.spawn(async move {
                while let Some((to, datagram)) = to_client.pop_due().await {
                    if !lock(&blocked).contains(&to) {
                        let _ = front.send_to(&datagram, to).await;
                    }
                }
            });
        }
        Ok(DelayProxy {
            front: front_addr,
            _tasks: tasks,
            sessions: session_tasks,
            blocked,
        })
    }

    /// Drops everything from and to `client` (`true`), or relays it again (`false`): a
    /// partition between that client and the upstream.
    pub fn set_blocked(&self, client: SocketAddr, blocked: bool) {
        let mut list = lock(&self.blocked);
        list.retain(|c| *c != client);
        if blocked {
            list.push(client);
        }
    }

    /// The address clients send to.
    pub fn front(&self) -> SocketAddr {
        self.front
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
    let back = Arc::new(loopback_socket().ok()?);
    back.connect(upstream).await.ok()?;
    lock(sessions).insert(from, back.clone());
    Some(back)
}

/// Queues the upstream's replies to client `to`.
async fn relay_replies(back: Arc<UdpSocket>, to: SocketAddr, queue: Arc<Queue>, one_way: Duration) {
    let mut buf = vec![0u8; DATAGRAM_MAX];
    loop {
        match back.recv(&mut buf).await {
            Ok(n) => queue.push((to, buf[..n].to_vec()), one_way),
            // The upstream was not listening yet (an ICMP error on this connected socket): it
            // may be soon, as a restarted region is.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(_) => break,
        }
    }
}

/// Kernel buffer asked for on each side: the relay receives a sender's bursts on one task,
/// and a default buffer (about 200 KiB) drops what a burst holds beyond it, which a real
/// link's router would have queued.
const SOCKET_BUFFER_BYTES: usize = 8 << 20;

/// A UDP socket on an ephemeral loopback port with large kernel buffers.
fn loopback_socket() -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: the kernel caps them at net.core.rmem_max / wmem_max.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    socket.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

/// Datagrams of one direction in arrival order, each with the time it is due (the delay is
/// constant, so the order is also the order of due times).
#[derive(Default)]
struct Queue {
    held: Mutex<Held>,
    arrived: Notify,
}

/// What a queue holds.
#[derive(Default)]
struct Held {
    datagrams: VecDeque<(Instant, Tagged)>,
    bytes: usize,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, datagram: Tagged, delay: Duration) {
        let mut held = self.lock();
        if held.bytes + datagram.1.len() > QUEUE_BYTES_MAX {
            return;
        }
        held.bytes += datagram.1.len();
        held.datagrams.push_back((Instant::now() + delay, datagram));
        drop(held);
        self.arrived.notify_one();
    }

    /// The oldest datagram once it is due (never `None`: the loop ends with its task).
    async fn pop_due(&self) -> Option<Tagged> {
        loop {
            let head = self.lock().datagrams.front().map(|(due, _)| *due);
            match head {
                None => self.arrived.notified().await,
                Some(due) if due > Instant::now() => tokio::time::sleep_until(due).await,
                Some(_) => {
                    let mut held = self.lock();
                    if let Some((_, datagram)) = held.datagrams.pop_front() {
                        held.bytes -= datagram.1.len();
                        return Some(datagram);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn holds_each_direction_for_the_delay() -> anyhow::Result<()> {
        let server = UdpSocket::bind("127.0.0.1:0").await?;
        let client = UdpSocket::bind("127.0.0.1:0").await?;
        let delay = Duration::from_millis(40);
        let proxy = DelayProxy::start(server.local_addr()?, delay).await?;
        let sent = Instant::now();
        client.send_to(b"ping", proxy.front()).await?;
        let mut buf = [0u8; 16];
        let (n, relay) =
            tokio::time::timeout(Duration::from_secs(5), server.recv_from(&mut buf)).await??;
        assert_eq!(&buf[..n], b"ping");
        assert!(
            sent.elapsed() >= delay,
            "arrived after {:?}",
            sent.elapsed()
        );
        server.send_to(b"pong", relay).await?;
        let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf)).await??;
        assert_eq!(&buf[..n], b"pong");
        assert!(
            sent.elapsed() >= 2 * delay,
            "round trip {:?}",
            sent.elapsed()
        );
        Ok(())
    }

    #[tokio::test]
    async fn two_clients_each_get_their_own_replies() -> anyhow::Result<()> {
        let server = UdpSocket::bind("127.0.0.1:0").await?;
        let proxy = DelayProxy::start(server.local_addr()?, Duration::from_millis(1)).await?;
        let (a, b) = (
            UdpSocket::bind("127.0.0.1:0").await?,
            UdpSocket::bind("127.0.0.1:0").await?,
        );
        let mut buf = [0u8; 16];
        for (client, text) in [(&a, b"from-a"), (&b, b"from-b")] {
            client.send_to(text, proxy.front()).await?;
            let (n, relay) =
                tokio::time::timeout(Duration::from_secs(5), server.recv_from(&mut buf)).await??;
            assert_eq!(&buf[..n], text);
            // The answer goes back through that client's own socket.
            server.send_to(&buf[..n], relay).await?;
        }
        for (client, text) in [(&a, b"from-a"), (&b, b"from-b")] {
            let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf)).await??;
            assert_eq!(&buf[..n], text);
        }
        Ok(())
    }

    #[tokio::test]
    async fn keeps_relaying_after_the_upstream_was_down() -> anyhow::Result<()> {
        // An upstream address with nothing listening yet: the first datagram bounces.
        let port = UdpSocket::bind("127.0.0.1:0").await?.local_addr()?;
        let proxy = DelayProxy::start(port, Duration::from_millis(1)).await?;
        let client = UdpSocket::bind("127.0.0.1:0").await?;
        client.send_to(b"early", proxy.front()).await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let server = UdpSocket::bind(port).await?;
        client.send_to(b"ping", proxy.front()).await?;
        let mut buf = [0u8; 16];
        let (n, relay) =
            tokio::time::timeout(Duration::from_secs(5), server.recv_from(&mut buf)).await??;
        assert_eq!(&buf[..n], b"ping");
        server.send_to(b"pong", relay).await?;
        let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf)).await??;
        assert_eq!(&buf[..n], b"pong", "replies still come back");
        Ok(())
    }
}
