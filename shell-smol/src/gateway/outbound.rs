//! A socket's outbound queue, bounded in bytes rather than in messages.
//!
//! A burst of small messages is normal (a node that pipelines the parts of a large result gets one
//! Completion per part at once), while a peer that stops reading lets bytes pile up. So the queue
//! accepts messages until the bytes not yet taken by the socket's writer exceed the limit, and
//! always accepts one message when it is empty (a single message may be larger than the limit).
//! Full means a slow reader: the driver aborts that connection rather than wait on it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use smol::channel::{RecvError, TrySendError};

use super::driver::Outbound;

/// The default limit: a few of the largest legal messages (a 5 MiB record, section 2.5).
pub const DEFAULT_OUTBOUND_BYTES: usize = 16 * 1024 * 1024;

pub(crate) fn outbound_queue(limit: usize) -> (OutboundSender, OutboundReceiver) {
    let (tx, rx) = smol::channel::unbounded();
    let queued = Arc::new(AtomicUsize::new(0));
    (
        OutboundSender {
            tx,
            queued: queued.clone(),
            limit,
        },
        OutboundReceiver { rx, queued },
    )
}

fn size(message: &Outbound) -> usize {
    match message {
        Outbound::Frame(frame) => frame.as_bytes().len(),
        Outbound::Close(_, reason) => reason.len(),
    }
}

pub(crate) struct OutboundSender {
    tx: smol::channel::Sender<Outbound>,
    queued: Arc<AtomicUsize>,
    limit: usize,
}

impl OutboundSender {
    /// Queues `message`, or gives it back: `Full` when the queue holds more than the limit,
    /// `Closed` when the socket task has ended.
    pub fn try_send(&self, message: Outbound) -> Result<(), TrySendError<Outbound>> {
        let len = size(&message);
        let queued = self.queued.load(Ordering::Acquire);
        if queued > 0 && queued.saturating_add(len) > self.limit {
            return Err(TrySendError::Full(message));
        }
        self.queued.fetch_add(len, Ordering::AcqRel);
        self.tx.try_send(message).inspect_err(|_| {
            self.queued.fetch_sub(len, Ordering::AcqRel);
        })
    }
}

pub(crate) struct OutboundReceiver {
    rx: smol::channel::Receiver<Outbound>,
    queued: Arc<AtomicUsize>,
}

impl OutboundReceiver {
    /// The next message for the socket; its bytes leave the queue's count as it is taken.
    pub async fn recv(&self) -> Result<Outbound, RecvError> {
        let message = self.rx.recv().await?;
        self.queued.fetch_sub(size(&message), Ordering::AcqRel);
        Ok(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodelink_core::node::WsFrame;

    fn frame(len: usize) -> Outbound {
        Outbound::Frame(WsFrame::Binary(vec![0; len]))
    }

    #[test]
    fn many_small_messages_fit_and_bytes_bound_the_queue() {
        let (tx, rx) = outbound_queue(1000);
        for _ in 0..100 {
            tx.try_send(frame(10)).expect("100 x 10 bytes fit in 1000");
        }
        assert!(matches!(tx.try_send(frame(1)), Err(TrySendError::Full(_))));
        smol::block_on(async {
            rx.recv().await.expect("a message");
        });
        tx.try_send(frame(10))
            .expect("room again once the writer took one");
    }

    #[test]
    fn one_message_larger_than_the_limit_is_accepted_when_the_queue_is_empty() {
        let (tx, rx) = outbound_queue(100);
        tx.try_send(frame(5000))
            .expect("an empty queue takes any message");
        assert!(matches!(tx.try_send(frame(1)), Err(TrySendError::Full(_))));
        smol::block_on(async {
            rx.recv().await.expect("the big one");
        });
        tx.try_send(frame(1)).expect("empty again");
        drop(rx);
        assert!(matches!(
            tx.try_send(frame(1)),
            Err(TrySendError::Closed(_))
        ));
    }
}
