//! A directed link: its shape, shared by every relay direction that carries its traffic, and
//! what it did.

use crate::shape::Shape;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// One direction of traffic between two nodes.
#[derive(Debug, Default)]
pub struct Link {
    shape: Mutex<Shape>,
    counters: Counters,
}

/// What a link did since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkStats {
    /// Datagrams that reached the link.
    pub received: u64,
    /// Datagrams passed on (duplicates included).
    pub delivered: u64,
    /// Bytes passed on.
    pub delivered_bytes: u64,
    /// Dropped by `loss`.
    pub lost: u64,
    /// Dropped because the link was down.
    pub blackholed: u64,
    /// Dropped because the link's queue was full (bandwidth cap backlog, or held bytes).
    pub overflowed: u64,
    /// Extra copies made by `duplicate`.
    pub duplicated: u64,
    /// Sent ahead of earlier datagrams by `reorder`.
    pub reordered: u64,
}

#[derive(Debug, Default)]
struct Counters {
    received: AtomicU64,
    delivered: AtomicU64,
    delivered_bytes: AtomicU64,
    lost: AtomicU64,
    blackholed: AtomicU64,
    overflowed: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
}

/// Which counter an event moves.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Count {
    Received,
    Lost,
    Blackholed,
    Overflowed,
    Duplicated,
    Reordered,
}

impl Link {
    /// A link with `shape` (check it with [`Shape::validate`]; delays beyond a minute are
    /// held to a minute).
    pub fn new(shape: Shape) -> Link {
        Link {
            shape: Mutex::new(shape),
            counters: Counters::default(),
        }
    }

    /// The current shape.
    pub fn shape(&self) -> Shape {
        *self.shape.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the shape (already validated); datagrams already in flight keep the delay
    /// they were given.
    pub fn set_shape(&self, shape: Shape) {
        *self.shape.lock().unwrap_or_else(|e| e.into_inner()) = shape;
    }

    /// What the link did.
    pub fn stats(&self) -> LinkStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LinkStats {
            received: get(&c.received),
            delivered: get(&c.delivered),
            delivered_bytes: get(&c.delivered_bytes),
            lost: get(&c.lost),
            blackholed: get(&c.blackholed),
            overflowed: get(&c.overflowed),
            duplicated: get(&c.duplicated),
            reordered: get(&c.reordered),
        }
    }

    pub(crate) fn count(&self, what: Count) {
        let c = &self.counters;
        let counter = match what {
            Count::Received => &c.received,
            Count::Lost => &c.lost,
            Count::Blackholed => &c.blackholed,
            Count::Overflowed => &c.overflowed,
            Count::Duplicated => &c.duplicated,
            Count::Reordered => &c.reordered,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_delivered(&self, bytes: usize) {
        self.counters.delivered.fetch_add(1, Ordering::Relaxed);
        self.counters
            .delivered_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }
}
