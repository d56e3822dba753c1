//! The simulated network: per-link latency from real inter-region round trips, jitter (which
//! reorders), loss, duplication, and cuts (full, partial, one-way).

use super::rng::SimRng;
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

/// Regions the simulator can place replicas in, with round trips to each other.
pub const REGIONS: [&str; 7] = [
    "us-east",
    "eu-west",
    "ap-northeast",
    "eu-central",
    "us-west",
    "sa-east",
    "ap-south",
];

/// Where each of `REGIONS` is (latitude, longitude): routed clients order regions by it
/// until they have measured round trips.
pub const LOCATIONS: [(f64, f64); 7] = [
    (38.9, -77.0),
    (53.3, -6.3),
    (35.7, 139.7),
    (50.1, 8.7),
    (45.6, -121.2),
    (-23.5, -46.6),
    (19.1, 72.9),
];

/// Round-trip times in milliseconds between `REGIONS` (symmetric).
const RTT_MS: [[u64; 7]; 7] = [
    [0, 75, 165, 90, 65, 115, 190],
    [75, 0, 245, 13, 140, 185, 120],
    [165, 245, 0, 230, 105, 255, 130],
    [90, 13, 230, 0, 150, 200, 110],
    [65, 140, 105, 150, 0, 175, 220],
    [115, 185, 255, 200, 175, 0, 300],
    [190, 120, 130, 110, 220, 300, 0],
];

/// One frame on its way.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Message {
    /// Delivery time.
    pub at_ms: u64,
    /// Tie-break: send order.
    pub id: u64,
    /// Sending region index.
    pub from: usize,
    /// Receiving region index.
    pub to: usize,
    /// Frame bytes.
    pub bytes: Vec<u8>,
}

/// Fault rates in force.
#[derive(Clone, Copy, Debug, Default)]
pub struct LinkFaults {
    /// Probability a frame is lost.
    pub loss: f64,
    /// Probability a frame is delivered twice.
    pub duplicate: f64,
    /// Extra random delay, as a fraction of the one-way latency (reorders frames).
    pub jitter: f64,
}

/// Frames in flight and the links' condition.
#[derive(Debug, Default)]
pub struct Network {
    queue: BinaryHeap<Reverse<Message>>,
    next_id: u64,
    /// Directed links (from, to) that drop everything.
    pub cut: BTreeSet<(usize, usize)>,
    /// Fault rates.
    pub faults: LinkFaults,
    /// Bytes handed to the network.
    pub bytes_sent: u64,
    /// Frames delivered.
    pub delivered: u64,
}

impl Network {
    /// One-way latency between two regions.
    pub fn one_way_ms(from: usize, to: usize) -> u64 {
        (RTT_MS[from % 7][to % 7] / 2).max(1)
    }

    /// Queues a frame, applying loss, duplication and jitter.
    pub fn send(&mut self, rng: &mut SimRng, now_ms: u64, from: usize, to: usize, bytes: Vec<u8>) {
        self.bytes_sent += bytes.len() as u64;
        if self.cut.contains(&(from, to)) || rng.chance(self.faults.loss) {
            return;
        }
        let copies = if rng.chance(self.faults.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let base = Self::one_way_ms(from, to);
            let jitter = (base as f64 * self.faults.jitter) as u64;
            let at_ms = now_ms + base + rng.below(jitter + 1);
            self.next_id += 1;
            let msg = Message {
                at_ms,
                id: self.next_id,
                from,
                to,
                bytes: bytes.clone(),
            };
            self.queue.push(Reverse(msg));
        }
    }

    /// When the next frame arrives, if any.
    pub fn next_at(&self) -> Option<u64> {
        self.queue.peek().map(|Reverse(m)| m.at_ms)
    }

    /// The next frame due at or before `now_ms`; frames on a link cut since they were sent are
    /// lost.
    pub fn pop_due(&mut self, now_ms: u64) -> Option<Message> {
        while self
            .queue
            .peek()
            .is_some_and(|Reverse(m)| m.at_ms <= now_ms)
        {
            let Reverse(m) = self.queue.pop()?;
            if !self.cut.contains(&(m.from, m.to)) {
                self.delivered += 1;
                return Some(m);
            }
        }
        None
    }

    /// Queues `m` again for `at_ms` (its receiver is frozen until then).
    pub fn hold(&mut self, mut m: Message, at_ms: u64) {
        m.at_ms = at_ms;
        self.delivered = self.delivered.saturating_sub(1);
        self.queue.push(Reverse(m));
    }

    /// Drops every frame to or from `region` (it crashed).
    pub fn drop_region(&mut self, region: usize) {
        let kept: Vec<Reverse<Message>> = self
            .queue
            .drain()
            .filter(|Reverse(m)| m.from != region && m.to != region)
            .collect();
        self.queue.extend(kept);
    }
}
