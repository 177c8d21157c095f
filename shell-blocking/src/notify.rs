//! What helper threads (connects, HTTP requests, executors) hand back to the loop: a message on a
//! channel plus a `mio::Waker` kick, so the loop wakes at once instead of at its next timeout.

use std::sync::mpsc::Sender;
use std::sync::Arc;

use mio::Waker;
use nodelink_core::node::commands::{Outcome, Progress};
use nodelink_core::node::http::HttpResult;
use nodelink_core::node::{LinkId, RequestId};

pub(crate) enum Msg {
    /// The TCP connection of a WebSocket being opened (resolved and connected on a helper thread).
    Connected {
        link: LinkId,
        result: Result<std::net::TcpStream, String>,
    },
    Http {
        request: RequestId,
        result: HttpResult,
    },
    Progress {
        command_id: String,
        progress: Progress,
    },
    Text {
        command_id: String,
        text: String,
    },
    Finished {
        command_id: String,
        outcome: Outcome,
    },
}

/// A sender that wakes the loop. Sending to a loop that is gone is not an error: the answer is
/// simply no longer wanted.
#[derive(Clone)]
pub(crate) struct Notifier {
    tx: Sender<Msg>,
    waker: Arc<Waker>,
}

impl Notifier {
    pub(crate) fn new(tx: Sender<Msg>, waker: Arc<Waker>) -> Notifier {
        Notifier { tx, waker }
    }

    pub(crate) fn send(&self, msg: Msg) {
        if self.tx.send(msg).is_ok() {
            let _ = self.waker.wake();
        }
    }
}
