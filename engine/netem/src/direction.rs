//! One direction of one relay: datagrams are admitted through the link's shape (dropped,
//! duplicated, queued behind the bandwidth cap, given their delay) and released when due.

use crate::link::{Count, Link};
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Bytes one direction may hold; beyond it datagrams are dropped, as a full router queue does
/// (room for a gigabit's bandwidth-delay product over a 500 ms round trip).
const HELD_BYTES_MAX: usize = 64 << 20;

/// What a held datagram costs beyond its payload (its slot, its address, the heap's share):
/// empty datagrams are not free.
const HELD_OVERHEAD_BYTES: usize = 128;

/// Longest delay a datagram is given (the shapes' own limit; a shape set without checks is
/// held to it rather than trusted).
const DELAY_MAX: Duration = Duration::from_secs(60);

/// Longest backlog behind a bandwidth cap before datagrams are dropped.
const BACKLOG_MAX: Duration = Duration::from_secs(1);

/// A datagram with the client it comes from or goes to.
pub(crate) type Tagged = (SocketAddr, Vec<u8>);

/// A datagram waiting for its time.
struct Held {
    due: Instant,
    seq: u64,
    datagram: Tagged,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    // Reversed: the heap's top is the earliest due.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

/// The queue and timing state of one direction.
struct Queue {
    held: BinaryHeap<Held>,
    bytes: usize,
    seq: u64,
    /// When the bandwidth cap's wire is free again.
    wire_free: Instant,
    /// Due time of the last datagram kept in order (jitter does not reorder).
    last_due: Instant,
    rng: fastrand::Rng,
}

/// One direction of a relay, fed by its receiving task and drained by its sending task.
pub(crate) struct Direction {
    link: Arc<Link>,
    queue: Mutex<Queue>,
    arrived: Notify,
}

impl Direction {
    pub(crate) fn new(link: Arc<Link>, seed: u64) -> Direction {
        let now = Instant::now();
        Direction {
            link,
            queue: Mutex::new(Queue {
                held: BinaryHeap::new(),
                bytes: 0,
                seq: 0,
                wire_free: now,
                last_due: now,
                rng: fastrand::Rng::with_seed(seed),
            }),
            arrived: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a datagram in: drops it, or holds it (and perhaps a copy) until it is due.
    pub(crate) fn admit(&self, datagram: Tagged) {
        let link = &self.link;
        link.count(Count::Received);
        let shape = link.shape();
        if shape.down {
            link.count(Count::Blackholed);
            return;
        }
        let mut q = self.lock();
        if shape.loss > 0.0 && q.rng.f64() < shape.loss {
            link.count(Count::Lost);
            return;
        }
        let copies = if shape.duplicate > 0.0 && q.rng.f64() < shape.duplicate {
            link.count(Count::Duplicated);
            2
        } else {
            1
        };
        let len = datagram.1.len();
        let cost = len + HELD_OVERHEAD_BYTES;
        let mut datagram = Some(datagram);
        for copy in 0..copies {
            if q.bytes + cost > HELD_BYTES_MAX {
                link.count(Count::Overflowed);
                continue;
            }
            let now = Instant::now();
            let mut sent = now;
            if let Some(kbit) = shape.rate_kbit {
                let start = q.wire_free.max(now);
                if start - now > BACKLOG_MAX {
                    link.count(Count::Overflowed);
                    continue;
                }
                // Bits over kilobits per second: milliseconds, as nanoseconds.
                let wire = Duration::from_nanos((len as u64 * 8 * 1_000_000) / kbit.max(1));
                sent = start + wire;
                q.wire_free = sent;
            }
            let due = if shape.reorder > 0.0 && q.rng.f64() < shape.reorder {
                link.count(Count::Reordered);
                sent
            } else {
                let jitter = if shape.jitter_ms > 0.0 {
                    (q.rng.f64() * 2.0 - 1.0) * shape.jitter_ms
                } else {
                    0.0
                };
                let delay_ms = (shape.latency_ms + jitter).max(0.0);
                let delay = Duration::try_from_secs_f64(delay_ms / 1000.0)
                    .unwrap_or(DELAY_MAX)
                    .min(DELAY_MAX);
                let due = (sent + delay).max(q.last_due);
                q.last_due = due;
                due
            };
            let seq = q.seq;
            q.seq += 1;
            q.bytes += cost;
            // The last copy takes the buffer.
            let copy = if copy + 1 == copies {
                datagram.take()
            } else {
                datagram.clone()
            };
            if let Some(datagram) = copy {
                q.held.push(Held { due, seq, datagram });
            }
        }
        drop(q);
        self.arrived.notify_one();
    }

    /// The next datagram once it is due; counts it delivered.
    pub(crate) async fn next_due(&self) -> Tagged {
        loop {
            let head = self.lock().held.peek().map(|h| h.due);
            match head {
                None => self.arrived.notified().await,
                Some(due) if due > Instant::now() => {
                    // A datagram sent ahead (reordered) may become the earliest meanwhile.
                    tokio::select! {
                        _ = tokio::time::sleep_until(due) => {}
                        _ = self.arrived.notified() => {}
                    }
                }
                Some(_) => {
                    let mut q = self.lock();
                    if let Some(held) = q.held.pop() {
                        q.bytes -= held.datagram.1.len() + HELD_OVERHEAD_BYTES;
                        drop(q);
                        self.link.count_delivered(held.datagram.1.len());
                        return held.datagram;
                    }
                }
            }
        }
    }
}
