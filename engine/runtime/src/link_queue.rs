//! The frames waiting to be written on one replication link, bounded in bytes. The replicator
//! bounds what it sends in bytes too (its in-flight window); a bound in frames would refuse a
//! window's worth of small frames (one entry each while writes stream) and every refused frame
//! costs a resend from the gap on.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Bytes of frames queued for one link before new ones are refused: a largest frame plus twice
/// the cap on in-flight windows, so the replicator's own bound is what holds it back (unless a
/// configured `inflight_bytes_max` exceeds the cap) and any frame fits.
pub(crate) use meridian::limits::LINK_QUEUE_BYTES;

/// The replicator's end of a link queue.
#[derive(Clone, Debug)]
pub(crate) struct LinkSender {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    max: usize,
}

/// The link writer's end.
#[derive(Debug)]
pub(crate) struct LinkReceiver {
    rx: mpsc::UnboundedReceiver<Vec<u8>>,
    queued: Arc<AtomicUsize>,
}

/// A queue holding at most `max` bytes of frames.
pub(crate) fn link_queue(max: usize) -> (LinkSender, LinkReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    (
        LinkSender {
            tx,
            queued: queued.clone(),
            max,
        },
        LinkReceiver { rx, queued },
    )
}

impl LinkSender {
    /// Queues `frame`, or hands it back when the queue is full or the writer is gone.
    pub(crate) fn try_send(&self, frame: Vec<u8>) -> Result<(), Vec<u8>> {
        let len = frame.len();
        if self.queued.fetch_add(len, Ordering::AcqRel) + len > self.max {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            return Err(frame);
        }
        self.tx.send(frame).map_err(|e| {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            e.0
        })
    }
}

impl LinkReceiver {
    /// The next frame; `None` once every sender is gone.
    pub(crate) async fn recv(&mut self) -> Option<Vec<u8>> {
        let frame = self.rx.recv().await?;
        self.queued.fetch_sub(frame.len(), Ordering::AcqRel);
        Some(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn holds_at_most_its_bytes_and_frees_them_as_frames_leave() {
        let (tx, mut rx) = link_queue(1000);
        for _ in 0..100 {
            assert!(
                tx.try_send(vec![0; 10]).is_ok(),
                "small frames fit by bytes"
            );
        }
        assert_eq!(tx.try_send(vec![1; 1]), Err(vec![1]), "full");
        assert_eq!(rx.recv().await.map(|f| f.len()), Some(10));
        assert!(
            tx.try_send(vec![0; 10]).is_ok(),
            "a frame left: room for one more"
        );
        assert!(tx.try_send(vec![0; 1]).is_err());
        drop(rx);
        let (tx, rx) = link_queue(1000);
        drop(rx);
        assert_eq!(tx.try_send(vec![2; 3]), Err(vec![2; 3]), "writer gone");
        assert_eq!(tx.queued.load(Ordering::Acquire), 0, "nothing counted");
    }
}
