//! Congestion control of replication and client links: quinn's Cubic, except that packets lost
//! before the peer ever answered are not taken as congestion.
//!
//! A replica dials a peer that is down (a region restarting) again and again; the first packets
//! of the attempt that finally connects were sent while nobody listened. Plain Cubic counts
//! their loss as congestion once the peer answers: the connection starts in congestion
//! avoidance with a window of a few packets, growing by about one packet per round trip. Over
//! 50 ms that held a catch-up to 11k records/s for seconds (`bench replication --rtt-ms 50`),
//! where slow start reaches the 1 MiB in-flight budget within a few round trips. A loss of
//! packets sent before the first acknowledgement says the peer was absent, not that the path
//! is congested; losses of packets sent after it count as usual.

use quinn::congestion::{Controller, ControllerFactory, ControllerMetrics, CubicConfig};
use quinn_proto::RttEstimator;
use std::any::Any;
use std::sync::Arc;
use std::time::Instant;

/// Builds `CubicAfterContact` controllers.
#[derive(Debug, Default)]
pub(crate) struct CubicAfterContactFactory {
    cubic: Arc<CubicConfig>,
}

impl ControllerFactory for CubicAfterContactFactory {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(CubicAfterContact {
            inner: self.cubic.clone().build(now, current_mtu),
            contact: None,
        })
    }
}

/// Cubic that ignores losses of packets sent before the first acknowledgement arrived.
pub(crate) struct CubicAfterContact {
    inner: Box<dyn Controller>,
    /// When the peer first acknowledged anything.
    contact: Option<Instant>,
}

impl Controller for CubicAfterContact {
    fn on_sent(&mut self, now: Instant, bytes: u64, last_packet_number: u64) {
        self.inner.on_sent(now, bytes, last_packet_number);
    }

    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &RttEstimator,
    ) {
        self.inner.on_ack(now, sent, bytes, app_limited, rtt);
    }

    fn on_end_acks(
        &mut self,
        now: Instant,
        in_flight: u64,
        app_limited: bool,
        largest_packet_num_acked: Option<u64>,
    ) {
        // quinn calls this after each acknowledgement it processes, before it looks for the
        // packets that acknowledgement shows lost.
        self.contact.get_or_insert(now);
        self.inner
            .on_end_acks(now, in_flight, app_limited, largest_packet_num_acked);
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        if self.contact.is_some_and(|contact| sent >= contact) {
            self.inner
                .on_congestion_event(now, sent, is_persistent_congestion, lost_bytes);
        }
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.inner.on_mtu_update(new_mtu);
    }

    fn window(&self) -> u64 {
        self.inner.window()
    }

    fn metrics(&self) -> ControllerMetrics {
        self.inner.metrics()
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(CubicAfterContact {
            inner: self.inner.clone_box(),
            contact: self.contact,
        })
    }

    fn initial_window(&self) -> u64 {
        self.inner.initial_window()
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn losses_count_only_for_packets_sent_after_the_first_acknowledgement() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut cc = Arc::new(CubicAfterContactFactory::default()).build(start, 1200);
        let initial = cc.window();
        assert_eq!(initial, cc.initial_window());

        // The peer was down: the first flight is lost, and noticed once it answers.
        cc.on_sent(at(0), 1200, 0);
        cc.on_congestion_event(at(900), at(0), true, 1200);
        assert_eq!(cc.window(), initial, "no answer yet: not congestion");
        cc.on_sent(at(1000), 1200, 1);
        cc.on_end_acks(at(1050), 0, false, Some(1));
        cc.on_congestion_event(at(1050), at(0), false, 1200);
        assert_eq!(cc.window(), initial, "sent before the peer answered");

        // After contact, a loss is congestion as usual.
        cc.on_sent(at(1100), 1200, 2);
        cc.on_congestion_event(at(1200), at(1100), false, 1200);
        assert!(cc.window() < initial, "window {} kept", cc.window());
    }
}
