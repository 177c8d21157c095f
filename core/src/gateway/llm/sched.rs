//! Connections coming and going, the queues, and routing tasks to connections.

use std::collections::{BTreeSet, VecDeque};
use std::time::Instant;

use super::{
    Conn, Credential, GoneBecause, LlmGateway, LlmGatewayEvent, LlmGatewayOutput, Stage, TaskError,
    TaskId, TaskUpdate, Timer, WsFrame,
};
use crate::gateway::ConnId;
use crate::time::saturating_add;
use crate::wire::llm::{CloseCode, ConnectParams, ServerFrame, Utf8Cutter};

impl LlmGateway {
    /// Registers an accepted node; replaces the connection with its identity, if any; gives it
    /// queued tasks.
    pub(super) fn accept(
        &mut self,
        now: Instant,
        conn: ConnId,
        params: ConnectParams,
        credential: Credential,
    ) {
        let identity = params.identity();
        let seq = self.next_seq;
        self.next_seq += 1;
        self.conns.insert(
            conn,
            Conn {
                identity: identity.clone(),
                max_concurrency: params.max_concurrency,
                seq,
                running: BTreeSet::new(),
                stopped: VecDeque::new(),
                last_seen: now,
            },
        );
        self.by_model
            .entry(params.model.clone())
            .or_default()
            .insert(conn);
        let replaced = self.by_identity.insert(identity.clone(), conn);
        self.timers.insert(
            Timer::Silence(conn),
            saturating_add(now, self.config.silence_limit()),
        );
        self.event(LlmGatewayEvent::NodeAccepted {
            conn,
            identity,
            max_concurrency: params.max_concurrency,
            credential,
        });
        if let Some(old) = replaced {
            // The new connection is registered first, so the old one's tasks may go to it.
            self.drop_conn(now, old, GoneBecause::Replaced { by: conn }, true);
        }
        self.pump(&params.model);
    }

    /// Forgets a connection (closing it with 4000 when `close`); each of its tasks is queued
    /// again if it may be, or failed.
    pub(super) fn drop_conn(
        &mut self,
        now: Instant,
        conn: ConnId,
        because: GoneBecause,
        close: bool,
    ) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        if self.by_identity.get(&c.identity) == Some(&conn) {
            self.by_identity.remove(&c.identity);
        }
        if let Some(set) = self.by_model.get_mut(&c.identity.model) {
            set.remove(&conn);
            if set.is_empty() {
                self.by_model.remove(&c.identity.model);
            }
        }
        self.timers.remove(&Timer::Silence(conn));
        if close {
            let code = CloseCode::Bye;
            self.emit(LlmGatewayOutput::Close {
                conn,
                code: code.code(),
                reason: code.reason().to_owned(),
            });
        }
        let mut requeued = Vec::new();
        let mut failed = Vec::new();
        for id in &c.running {
            let Some(task) = self.tasks.get_mut(id) else {
                continue;
            };
            let streamed = matches!(task.stage, Stage::Running { streamed: true, .. });
            if streamed || task.requeued {
                failed.push(TaskId(*id));
            } else {
                task.requeued = true;
                task.stage = Stage::Queued;
                requeued.push(TaskId(*id));
            }
        }
        self.event(LlmGatewayEvent::NodeGone {
            conn,
            identity: c.identity.clone(),
            because,
            requeued: requeued.clone(),
            failed: failed.clone(),
        });
        for task in failed {
            self.end_task(task.0, TaskUpdate::Failed(TaskError::NodeLost), false);
        }
        for task in requeued {
            self.enqueue(now, task.0);
        }
        self.pump(&c.identity.model);
    }

    /// Puts a queued task in its model's queue, in submission order, with a fresh wait.
    pub(super) fn enqueue(&mut self, now: Instant, id: u32) {
        let Some(task) = self.tasks.get(&id) else {
            return;
        };
        self.queues
            .entry(task.model.clone())
            .or_default()
            .insert((task.seq, id));
        self.timers.insert(
            Timer::Queue(id),
            saturating_add(now, self.config.queue_timeout),
        );
    }

    /// Sends queued tasks of `model`, oldest first, while a connection has a free slot.
    pub(super) fn pump(&mut self, model: &str) {
        loop {
            let Some(&(seq, id)) = self.queues.get(model).and_then(BTreeSet::first) else {
                return;
            };
            let Some(conn) = self.pick(model) else {
                return;
            };
            if let Some(queue) = self.queues.get_mut(model) {
                queue.remove(&(seq, id));
                if queue.is_empty() {
                    self.queues.remove(model);
                }
            }
            self.send_task(id, conn);
        }
    }

    /// The connection of `model` with a free slot and the lowest load (running /
    /// max_concurrency), then the most free slots, then the oldest.
    fn pick(&self, model: &str) -> Option<ConnId> {
        let conns = self.by_model.get(model)?;
        conns
            .iter()
            .filter_map(|conn| self.conns.get(conn).map(|c| (*conn, c)))
            .filter(|(_, c)| c.has_free_slot())
            .min_by(|(_, a), (_, b)| {
                let (ra, ma) = (a.running.len() as u128, u128::from(a.max_concurrency));
                let (rb, mb) = (b.running.len() as u128, u128::from(b.max_concurrency));
                (ra * mb)
                    .cmp(&(rb * ma))
                    .then_with(|| (mb - rb).cmp(&(ma - ra)))
                    .then_with(|| a.seq.cmp(&b.seq))
            })
            .map(|(conn, _)| conn)
    }

    fn send_task(&mut self, id: u32, conn: ConnId) {
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        task.stage = Stage::Running {
            conn,
            cutter: Utf8Cutter::new(),
            streamed: false,
        };
        c.running.insert(id);
        let frame = WsFrame::Text(task.frame.clone());
        self.timers.remove(&Timer::Queue(id));
        self.emit(LlmGatewayOutput::Send { conn, frame });
        self.event(LlmGatewayEvent::TaskDispatched {
            task: TaskId(id),
            conn,
        });
    }

    /// Ends a live task with its terminal `update`. A running task whose node has not sent its
    /// finished frame (`node_done`) gets a stop frame; its slot goes to the next queued task.
    pub(super) fn end_task(&mut self, id: u32, update: TaskUpdate, node_done: bool) {
        let Some(task) = self.tasks.remove(&id) else {
            return;
        };
        self.timers.remove(&Timer::Queue(id));
        self.timers.remove(&Timer::Finish(id));
        let mut freed = false;
        match task.stage {
            Stage::Queued => {
                if let Some(queue) = self.queues.get_mut(&task.model) {
                    queue.remove(&(task.seq, id));
                    if queue.is_empty() {
                        self.queues.remove(&task.model);
                    }
                }
            }
            Stage::Running { conn, .. } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    freed = c.running.remove(&id);
                    if freed && !node_done {
                        c.remember_stopped(id);
                        let frame = WsFrame::Text(ServerFrame::Stop { id }.encode());
                        self.emit(LlmGatewayOutput::Send { conn, frame });
                    }
                }
            }
        }
        self.emit(LlmGatewayOutput::Task {
            task: TaskId(id),
            update,
        });
        if freed {
            self.pump(&task.model);
        }
    }
}
