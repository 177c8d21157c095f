//! A task's streamed response body, and the guard that stops the task when its user goes away.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_lite::Stream;
use hyper::body::{Body, Frame, SizeHint};
use nodelink_core::gateway::llm::{TaskId, TaskUpdate};
use smol::channel::{Receiver, Sender};

use super::super::driver::ToDriver;
use super::LlmMessage;

/// Stops its task when dropped before [`StopGuard::disarm`]: the user went away (hyper dropped
/// the response body, or the handler future of a non-streamed request).
pub(crate) struct StopGuard {
    task: TaskId,
    to_driver: Option<Sender<ToDriver>>,
}

impl StopGuard {
    pub fn new(task: TaskId, to_driver: Sender<ToDriver>) -> StopGuard {
        StopGuard {
            task,
            to_driver: Some(to_driver),
        }
    }

    /// The task ended on its own: nothing to stop.
    pub fn disarm(&mut self) {
        self.to_driver = None;
    }
}

impl Drop for StopGuard {
    fn drop(&mut self) {
        let Some(to_driver) = self.to_driver.take() else {
            return;
        };
        let message = ToDriver::Llm(LlmMessage::Stop { task: self.task });
        if let Err(e) = to_driver.try_send(message) {
            if e.is_full() {
                // A busy driver: wait for room on smol's global executor (never block a drop).
                let message = e.into_inner();
                smol::spawn(async move {
                    let _ = to_driver.send(message).await;
                })
                .detach();
            }
        }
    }
}

/// How updates are written.
pub(crate) type Render = Box<dyn Fn(&TaskUpdate) -> Option<String> + Send + Sync>;

/// The response body of a streamed task: one chunk per update, the end after the terminal one.
pub(crate) struct TaskStream {
    head: Option<String>,
    updates: Pin<Box<Receiver<TaskUpdate>>>,
    render: Render,
    guard: StopGuard,
    ended: bool,
}

impl TaskStream {
    /// `head` is written first (OpenAI's role chunk).
    pub fn new(
        head: Option<String>,
        updates: Receiver<TaskUpdate>,
        render: Render,
        guard: StopGuard,
    ) -> TaskStream {
        TaskStream {
            head,
            updates: Box::pin(updates),
            render,
            guard,
            ended: false,
        }
    }
}

impl Body for TaskStream {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(head) = this.head.take() {
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(head)))));
        }
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            match this.updates.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    // The driver is gone (shutting down): end the body; nothing to stop.
                    this.guard.disarm();
                    this.ended = true;
                }
                Poll::Ready(Some(update)) => {
                    if update.is_terminal() {
                        this.guard.disarm();
                        this.ended = true;
                    }
                    if let Some(text) = (this.render)(&update) {
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(text)))));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.head.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
