//! Result frames from nodes: text for the users, the finished frame, and what does not fit.

use super::{
    LlmGateway, LlmGatewayEvent, LlmGatewayOutput, NodeFrameError, Stage, TaskError, TaskId,
    TaskUpdate, WsFrame,
};
use crate::gateway::ConnId;
use crate::wire::llm::{ServerFrame, TASK_ID_LEN};

impl LlmGateway {
    /// A binary frame from an accepted connection: `[u32 BE id][bytes]`, the id alone meaning
    /// finished.
    pub(super) fn on_result(&mut self, conn: ConnId, bytes: &[u8]) {
        let Some((id, text)) = bytes.split_first_chunk::<TASK_ID_LEN>() else {
            self.event(LlmGatewayEvent::PeerMisbehaved {
                conn,
                error: NodeFrameError::TooShort { len: bytes.len() },
            });
            return;
        };
        let id = u32::from_be_bytes(*id);
        let ours = matches!(
            self.tasks.get(&id).map(|t| &t.stage),
            Some(Stage::Running { conn: c, .. }) if *c == conn
        );
        if !ours {
            self.foreign_result(conn, id, text.is_empty());
            return;
        }
        if text.is_empty() {
            self.on_finished(id);
        } else {
            self.on_data(conn, id, text);
        }
    }

    /// The node finished the task. A character left incomplete at the end fails it.
    fn on_finished(&mut self, id: u32) {
        let incomplete = matches!(
            self.tasks.get(&id).map(|t| &t.stage),
            Some(Stage::Running { cutter, .. }) if cutter.pending() > 0
        );
        let update = if incomplete {
            TaskUpdate::Failed(TaskError::InvalidUtf8)
        } else {
            TaskUpdate::Done
        };
        self.end_task(id, update, true);
    }

    /// More text of a running task: whole characters go to the user, an incomplete trailing
    /// character waits for the next frame, invalid bytes fail the task.
    fn on_data(&mut self, conn: ConnId, id: u32, bytes: &[u8]) {
        let Some(Stage::Running {
            cutter, streamed, ..
        }) = self.tasks.get_mut(&id).map(|t| &mut t.stage)
        else {
            return;
        };
        let before = cutter.replacements();
        let mut text = String::new();
        cutter.feed(bytes, &mut text);
        if cutter.replacements() != before {
            self.event(LlmGatewayEvent::PeerMisbehaved {
                conn,
                error: NodeFrameError::InvalidUtf8 { id },
            });
            self.end_task(id, TaskUpdate::Failed(TaskError::InvalidUtf8), false);
            return;
        }
        if !text.is_empty() {
            *streamed = true;
            self.emit(LlmGatewayOutput::Task {
                task: TaskId(id),
                update: TaskUpdate::Text(text),
            });
        }
    }

    /// A result for a task this connection does not run: a finished frame is ignored; data is
    /// answered with a stop, unless this connection was already told to stop that task.
    fn foreign_result(&mut self, conn: ConnId, id: u32, finished: bool) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let told = c.stopped.iter().any(|stopped| *stopped == id);
        if finished {
            if told {
                c.stopped.retain(|stopped| *stopped != id);
            }
            return;
        }
        if told {
            return;
        }
        c.remember_stopped(id);
        self.emit(LlmGatewayOutput::Send {
            conn,
            frame: WsFrame::Text(ServerFrame::Stop { id }.encode()),
        });
        self.event(LlmGatewayEvent::PeerMisbehaved {
            conn,
            error: NodeFrameError::UnknownTask { id },
        });
    }
}
